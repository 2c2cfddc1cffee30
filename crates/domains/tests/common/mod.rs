//! Shared by the backend tests: a source running on its own thread, feeding a pipeline whose only sink keeps
//! every event in memory; the hook library and the C helpers of `tests/data/`, built once; the skip checks
//! every test starts with; network namespaces ([`netns`]) and pty-driven shells ([`pty_driver`]).

#![allow(dead_code)] // each test binary uses a different subset

pub mod netns;
pub mod pty_driver;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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

/// True when running as root; else prints "skipping: needs root (`why`)" and returns false.
pub fn root_or_skip(why: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipping: needs root ({why})");
    }
    root
}

/// True when running as root with the hook library built; else prints why the test is skipped and returns false.
pub fn root_and_hook_or_skip(why: &str) -> bool {
    if !root_or_skip(why) {
        return false;
    }
    if hook_lib().is_none() {
        eprintln!("skipping: libringwatch_hook.so could not be built or found");
        return false;
    }
    true
}

/// The value, or `None` after printing "skipping: <why>" (for set-up steps the host may not support).
pub fn ok_or_skip<T>(setup: Result<T, String>) -> Option<T> {
    setup.map_err(|why| eprintln!("skipping: {why}")).ok()
}

/// A self-signed certificate for `cn` (RSA 2048, one day) made by `openssl req` in `dir`: (cert.pem, key.pem).
/// Panics when openssl fails; callers check first that it is installed.
pub fn self_signed_cert(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", &format!("/CN={cn}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl req failed: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// Compiles C helpers of `tests/data/` with `cc` into `target/tmp/<dir>/`: each build is (flags, source file,
/// output name). The outputs' paths in the order given, or `None` (after printing the compiler's complaint) when
/// one fails. Call it once per test binary (from a `OnceLock`).
pub fn build_c_helpers<const N: usize>(dir: &str, builds: [(&[&str], &str, &str); N]) -> Option<[PathBuf; N]> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(dir);
    fs::create_dir_all(&out).ok()?;
    let mut built = Vec::with_capacity(N);
    for (flags, src, name) in builds {
        let output = out.join(name);
        let result =
            Command::new("cc").args(flags).arg("-o").arg(&output).arg(data.join(src)).stderr(Stdio::piped()).output();
        match result {
            Ok(o) if o.status.success() => built.push(output),
            Ok(o) => {
                eprintln!(
                    "skipping: cc could not build tests/data/{src}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                return None;
            }
            Err(e) => {
                eprintln!("skipping: cc could not run for tests/data/{src}: {e}");
                return None;
            }
        }
    }
    built.try_into().ok()
}

/// Ids of the loaded BPF programs named one of `names` (program names are cut to 15 bytes by the kernel).
pub fn loaded_program_ids(names: &[&str]) -> BTreeSet<u32> {
    libbpf_rs::query::ProgInfoIter::default()
        .filter(|p| names.iter().any(|n| p.name.to_bytes() == n.as_bytes()))
        .map(|p| p.id)
        .collect()
}

/// Waits (program release is asynchronous in the kernel) until none of `ids` is loaded under `names`; returns
/// those left after 5 s.
pub fn still_loaded(names: &[&str], ids: &BTreeSet<u32>) -> BTreeSet<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: BTreeSet<u32> = loaded_program_ids(names).intersection(ids).copied().collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
