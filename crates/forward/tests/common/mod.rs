//! Shared helpers for the forwarder's integration tests: a real nats-server on a free loopback port, synthetic
//! events, and reading back what reached the stream.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ringwatch_core::{Activity, Backend, Domain, Event, Mode, SourceKind};

pub use ringwatch_forward::local_server::{LocalNatsServer as NatsServer, find_nats_server};

/// Starts a nats-server under `dir` on `port` (free port when `None`) with `extra` arguments; `None` after printing
/// a SKIP line when nats-server is not installed.
pub fn start_server(dir: &Path, port: Option<u16>, extra: &[&str]) -> Option<NatsServer> {
    if !nats_server_available() {
        return None;
    }
    let port = port.unwrap_or_else(|| free_port().expect("a free port"));
    Some(NatsServer::start_with(dir, port, extra).expect("nats-server starts"))
}

/// True when nats-server is installed; prints a SKIP line otherwise.
pub fn nats_server_available() -> bool {
    let found = find_nats_server().is_some();
    if !found {
        eprintln!("SKIP: nats-server is not installed (apt-get install nats-server)");
    }
    found
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Option<u16> {
    ringwatch_forward::local_server::free_port().ok()
}

/// `n` realistic process events of `host`, ids `PREFIX-0..n`.
pub fn events(host: &str, prefix: &str, range: std::ops::Range<u64>) -> Vec<Event> {
    range
        .map(|i| {
            let domain = if i % 10 == 9 { Domain::File } else { Domain::Process };
            let activity = if domain == Domain::File { Activity::Open } else { Activity::Exec };
            let mut ev = Event::new(domain, activity, Backend { mode: Mode::Kernel, source: SourceKind::Ebpf });
            ev.id = format!("{prefix}-{i:x}");
            ev.host = host.to_owned();
            ev.process.pid = 1000 + (i % 30000) as u32;
            ev.process.ppid = 1;
            ev.process.guid = format!("guid-{i}");
            ev.process.exe = "/usr/bin/true".into();
            ev.process.cmdline = vec!["true".into(), format!("--n={i}")];
            ev.process.ancestry = vec!["guid-parent".into(), "guid-init".into()];
            ev
        })
        .collect()
}

/// What the stream holds: message id -> how many copies, and the ids in stream order.
pub struct StreamContents {
    /// Copies per `Nats-Msg-Id`.
    pub copies: HashMap<String, usize>,
    /// Ids in stream order.
    pub order: Vec<String>,
    /// Subject of each message, in stream order.
    pub subjects: Vec<String>,
}

/// Reads every message of the `RINGWATCH` stream with a throwaway consumer.
pub fn read_stream(url: &str) -> StreamContents {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let client = async_nats::connect(url).await.expect("test client connects");
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream("RINGWATCH").await.expect("stream exists");
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .expect("consumer");
        let mut out = StreamContents { copies: HashMap::new(), order: Vec::new(), subjects: Vec::new() };
        loop {
            let mut batch = consumer
                .batch()
                .max_messages(10_000)
                .expires(Duration::from_millis(700))
                .messages()
                .await
                .expect("pull");
            let mut got = 0;
            while let Some(m) = batch.next().await {
                let m = m.expect("message");
                let id = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.as_str().to_owned())
                    .expect("every message has Nats-Msg-Id");
                *out.copies.entry(id.clone()).or_default() += 1;
                out.order.push(id);
                out.subjects.push(m.subject.to_string());
                got += 1;
            }
            if got == 0 {
                return out;
            }
        }
    })
}

/// Waits until `cond` holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}
