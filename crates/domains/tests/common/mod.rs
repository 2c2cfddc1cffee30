//! Shared by the backend tests: a source running on its own thread, feeding a pipeline whose only sink keeps
//! every event in memory.

#![allow(dead_code)] // each test binary uses a different subset

pub mod netns;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ringwatch_core::proc_table::ProcessTable;
use ringwatch_core::sink::{MemorySink, Sink};
use ringwatch_core::{Event, Pipeline, PipelineStats, Shutdown, Source, SourceContext, SourceError};

/// Loss counters per component: (queue_full, lost_upstream, malformed).
pub type Losses = BTreeMap<String, (u64, u64, u64)>;

/// A started source and the pipeline consumer collecting its events.
pub struct Running {
    shutdown: Shutdown,
    source: JoinHandle<Result<(), SourceError>>,
    consumer: JoinHandle<()>,
    events: Arc<Mutex<Vec<Event>>>,
    stats: Arc<PipelineStats>,
}

/// What a stopped run left behind.
pub struct Stopped {
    /// Everything the pipeline wrote.
    pub events: Vec<Event>,
    pub losses: Losses,
    /// From the shutdown trigger until the source's `run` returned.
    pub source_stopped_in: Duration,
}

impl Running {
    /// Runs `source` on its own thread into a pipeline of `capacity` events; its component is the source's name.
    pub fn start(source: impl Source + 'static, capacity: usize) -> Running {
        let pipeline = Pipeline::new(capacity);
        let stats = pipeline.stats();
        let shutdown = Shutdown::new();
        let ctx = SourceContext { events: pipeline.sender(source.name()), shutdown: shutdown.clone() };
        let memory = MemorySink::default();
        let events = memory.events();
        let consumer = thread::spawn(move || {
            let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(memory)];
            pipeline.run("test-host", &mut ProcessTable::empty(), &mut [], &mut sinks);
        });
        let source = thread::spawn(move || Box::new(source).run(ctx));
        Running { shutdown, source, consumer, events, stats }
    }

    /// Waits until an event satisfies `pred` and returns a copy of it; `None` once `timeout` passed.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(e) = self.events.lock().expect("sink lock").iter().find(|e| pred(e)) {
                return Some(e.clone());
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The loss counters so far.
    pub fn losses(&self) -> Losses {
        self.stats.losses()
    }

    /// Triggers shutdown, waits for the source (it drains first) and the consumer; the source must not fail.
    pub fn stop(self) -> Stopped {
        self.shutdown.trigger();
        let triggered = Instant::now();
        self.source.join().expect("source thread did not panic").expect("source ran without error");
        let source_stopped_in = triggered.elapsed();
        self.consumer.join().expect("pipeline consumer did not panic");
        let events = std::mem::take(&mut *self.events.lock().expect("sink lock"));
        Stopped { events, losses: self.stats.losses(), source_stopped_in }
    }
}

/// The hook library, built once per test run.
pub fn hook_lib() -> Option<&'static Path> {
    static LIB: OnceLock<Option<PathBuf>> = OnceLock::new();
    LIB.get_or_init(|| {
        if let Some(p) = std::env::var_os(ringwatch_domains::preload::HOOK_LIBRARY_ENV).map(PathBuf::from) {
            return p.is_file().then_some(p);
        }
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        // Same profile as this test binary, so `cargo test --release` tests the release hook.
        let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "ringwatch-hook"]).current_dir(manifest);
        if profile == "release" {
            build.arg("--release");
        }
        if !build.status().ok()?.success() {
            return None;
        }
        // target/<profile>/deps/TEST-HASH -> target/<profile>/libringwatch_hook.so
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => PathBuf::from(dir).join(profile),
            None => std::env::current_exe().ok()?.parent()?.parent()?.to_path_buf(),
        };
        let lib = target.join(ringwatch_domains::preload::HOOK_LIBRARY_NAME);
        lib.is_file().then(|| fs::canonicalize(lib).ok()).flatten()
    })
    .as_deref()
}
