//! `ringwatch bench forward`: forwarder throughput to a local nats-server, and collector throughput into a store.
//!
//! The bench starts its own nats-server (JetStream, a temporary store directory, a free loopback port), waits
//! until the forwarder is connected, then pushes N synthetic events (default 200,000; a process/file/network mix
//! with full process context, so each JSON is as long as the agent's) through the agent's own [`ForwardSink`] in
//! pipeline-sized batches of 1,024. The clock runs from the first `write_batch` until JetStream has acknowledged
//! every event (target, issue #7: >= 50,000 events/s). Then `collect` drains the stream into a temporary store, timed
//! until every event is stored.

use std::fs;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ringwatch_core::event::{FileInfo, NetworkInfo};
use ringwatch_core::pipeline::{BATCH_MAX, LossCounters};
use ringwatch_core::sink::Sink;
use ringwatch_core::{Activity, Backend, Domain, Event, Mode, SourceKind, Timestamp};
use ringwatch_forward::collector::{self, CollectOptions};
use ringwatch_forward::local_server::LocalNatsServer;
use ringwatch_forward::spool::record;
use ringwatch_forward::subject::event_subject;
use ringwatch_forward::{ForwardOptions, ForwardSink, NatsOptions};
use ringwatch_store::{Store, StoreOptions};
use serde::Serialize;

use crate::bench::BenchArgs;

/// Events when `--events` is not given.
const DEFAULT_EVENTS: u64 = 200_000;
/// Target forwarding rate.
const TARGET_EVENTS_PER_SEC: f64 = 50_000.0;
/// Give up waiting for acknowledgements (or the collector) after this long.
const PHASE_TIMEOUT: Duration = Duration::from_secs(180);

/// What the bench measured (also written as JSON with `--json`).
#[derive(Debug, Serialize)]
struct ForwardBench {
    events: u64,
    batch: usize,
    /// Time spent in `write_batch` (the pipeline thread's cost: spool appends).
    spool_seconds: f64,
    /// First `write_batch` until every event was acknowledged by JetStream.
    forward_seconds: f64,
    forward_events_per_sec: f64,
    target_events_per_sec: f64,
    pass: bool,
    /// Average JSON + spool record size.
    spool_bytes_per_event: f64,
    publish_errors: u64,
    /// Collector: stream -> store, until every event was stored (None when the store could not be opened).
    collect_seconds: Option<f64>,
    collect_events_per_sec: Option<f64>,
    collect_note: Option<String>,
}

/// Runs the forward benchmark.
pub fn run(args: &BenchArgs) -> Result<()> {
    let events = args.events.unwrap_or(DEFAULT_EVENTS);
    if events == 0 {
        bail!(crate::UsageError("--events must be at least 1".into()));
    }
    let dir = std::env::temp_dir().join(format!("ringwatch-bench-forward-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let result = bench_in(&dir, events);
    let _ = fs::remove_dir_all(&dir);
    let bench = result?;
    print_table(&bench);
    if let Some(path) = &args.json {
        fs::write(path, serde_json::to_vec_pretty(&bench)?).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn bench_in(dir: &Path, n: u64) -> Result<ForwardBench> {
    let server = LocalNatsServer::start(dir).context("starting a local nats-server")?;
    let nats = NatsOptions { url: server.url(), ..Default::default() };
    let events = synthetic(n);

    let opts = ForwardOptions { nats: nats.clone(), spool_dir: dir.join("spool"), spool_max_bytes: 64 << 30 };
    let losses = Arc::new(LossCounters::default());
    let mut sink = ForwardSink::start(opts, losses.clone())?;
    let stats = sink.stats();
    wait_for("the forwarder to connect", || stats.connected.load(Ordering::Relaxed))?;

    eprintln!("forwarding {n} events to JetStream...");
    let started = Instant::now();
    let mut spool_time = Duration::ZERO;
    for chunk in events.chunks(BATCH_MAX) {
        let t = Instant::now();
        sink.write_batch(chunk).context("spooling a batch")?;
        spool_time += t.elapsed();
    }
    wait_for("JetStream to acknowledge every event", || stats.published.load(Ordering::Relaxed) >= n)?;
    let forward = started.elapsed();
    let dropped = losses.queue_full.load(Ordering::Relaxed);
    if dropped > 0 {
        bail!("{dropped} events were dropped by the spool cap; the bench is invalid");
    }
    let errors = stats.errors.load(Ordering::Relaxed);
    let record_bytes = average_record_bytes(&events[..events.len().min(1000)]);
    sink.flush()?;
    drop(sink);

    eprintln!("collecting {n} events into a store...");
    let (collect_seconds, collect_note) = match time_collect(&nats, &dir.join("collect.db"), n) {
        Ok(d) => (Some(d.as_secs_f64()), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let forward_events_per_sec = n as f64 / forward.as_secs_f64().max(1e-9);
    Ok(ForwardBench {
        events: n,
        batch: BATCH_MAX,
        spool_seconds: spool_time.as_secs_f64(),
        forward_seconds: forward.as_secs_f64(),
        forward_events_per_sec,
        target_events_per_sec: TARGET_EVENTS_PER_SEC,
        pass: forward_events_per_sec >= TARGET_EVENTS_PER_SEC,
        spool_bytes_per_event: record_bytes,
        publish_errors: errors,
        collect_seconds,
        collect_events_per_sec: collect_seconds.map(|s| n as f64 / s.max(1e-9)),
        collect_note,
    })
}

/// Average size of a spool record (header, subject, id, JSON) over `sample`.
fn average_record_bytes(sample: &[Event]) -> f64 {
    let mut buf = Vec::new();
    for e in sample {
        let json = serde_json::to_vec(e).unwrap_or_default();
        let subject = event_subject(&e.host, e.domain);
        let _ = record::encode(&mut buf, &subject, &e.id, &json);
    }
    buf.len() as f64 / sample.len().max(1) as f64
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    while !cond() {
        if Instant::now() > deadline {
            bail!("timed out after {} s waiting for {what}", PHASE_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Drains the stream into a fresh store; the time until `n` events were stored.
fn time_collect(nats: &NatsOptions, path: &Path, n: u64) -> Result<Duration> {
    let mut store = Store::open(path, &StoreOptions::default())?;
    let stop = Arc::new(AtomicBool::new(false));
    let timer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + PHASE_TIMEOUT;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            stop.store(true, Ordering::Relaxed);
        })
    };
    let opts = CollectOptions::new(nats.clone());
    let started = Instant::now();
    let mut done_at = None;
    let result = collector::run(&opts, &mut store, &stop, &mut |p| {
        if p.stored + p.duplicates >= n {
            done_at = Some(started.elapsed());
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    stop.store(true, Ordering::Relaxed);
    let _ = timer.join();
    let total = result?;
    done_at.with_context(|| format!("the collector stored only {} of {n} events in time", total.stored))
}

fn print_table(b: &ForwardBench) {
    let rate = |r: f64| format!("{:.0}", r);
    println!(
        "forward bench: {} synthetic events in batches of {}, local nats-server (JetStream, file storage)",
        b.events, b.batch
    );
    println!("| measure | seconds | events/s | target | result |");
    println!("|---|---|---|---|---|");
    println!(
        "| forward: write_batch -> JetStream ack | {:.3} | {} | >= {} | {} |",
        b.forward_seconds,
        rate(b.forward_events_per_sec),
        rate(b.target_events_per_sec),
        if b.pass { "PASS" } else { "FAIL" }
    );
    println!(
        "| spool append (pipeline thread's share) | {:.3} | {} | - | - |",
        b.spool_seconds,
        rate(b.events as f64 / b.spool_seconds.max(1e-9))
    );
    match (b.collect_seconds, b.collect_events_per_sec) {
        (Some(s), Some(r)) => println!("| collect: JetStream -> store | {s:.3} | {} | - | - |", rate(r)),
        _ => println!(
            "| collect: JetStream -> store | n/a | n/a | - | {} |",
            b.collect_note.as_deref().unwrap_or("failed")
        ),
    }
    println!("~{:.0} bytes per spooled event; {} publish errors (retried)", b.spool_bytes_per_event, b.publish_errors);
}

/// `n` events shaped like a busy host's: execs with command lines, file opens, connects, exits, all with full
/// process context.
fn synthetic(n: u64) -> Vec<Event> {
    const EXES: [&str; 6] = [
        "/usr/bin/bash",
        "/usr/bin/curl",
        "/usr/lib/postgresql/15/bin/postgres",
        "/usr/bin/python3",
        "/usr/sbin/sshd",
        "/usr/bin/git",
    ];
    let instance = format!("{:016x}", std::process::id() as u64 ^ 0x5eed_0000_0000);
    let now = Timestamp::now().0;
    (0..n)
        .map(|i| {
            let (domain, activity) = match i % 20 {
                0..=7 => (Domain::Process, Activity::Exec),
                8..=9 => (Domain::Process, Activity::Exit),
                10..=16 => (Domain::File, Activity::Open),
                _ => (Domain::Network, Activity::Connect),
            };
            let mut ev = Event::new(domain, activity, Backend { mode: Mode::Kernel, source: SourceKind::Ebpf });
            ev.id = format!("{instance}-{i:x}");
            ev.host = "bench-host-01".into();
            ev.time = Timestamp(now + i * 1000);
            let pid = 2000 + (i % 40_000) as u32;
            let exe = EXES[(i % EXES.len() as u64) as usize];
            let p = &mut ev.process;
            p.pid = pid;
            p.tid = pid;
            p.ppid = 1500;
            p.guid = format!("6f1c2a9e-{pid:08x}-{:012x}", i / 7);
            p.parent_guid = Some("6f1c2a9e-000005dc-00000000beef".into());
            p.exe = exe.into();
            p.comm = exe.rsplit('/').next().unwrap_or_default().chars().take(15).collect();
            p.cmdline =
                vec![exe.into(), "--config".into(), format!("/etc/app/{}.conf", i % 97), format!("--request-id={i}")];
            p.cwd = Some("/srv/app".into());
            p.uid = 1000;
            p.user = Some("deploy".into());
            p.gid = 1000;
            p.euid = 1000;
            p.session_id = 1400;
            p.tty = Some("pts/1".into());
            p.cgroup = Some("/system.slice/app.service".into());
            p.start_time = Timestamp(now);
            p.ancestry = vec!["6f1c2a9e-000005dc-00000000beef".into(), "6f1c2a9e-00000001-000000000001".into()];
            match domain {
                Domain::File => {
                    ev.file = Some(FileInfo {
                        path: format!("/srv/app/data/{}/{}.json", i % 13, i % 1009),
                        flags: Some(0o2),
                        mode: Some(0o644),
                        inode: Some(100_000 + i),
                        dev: Some(2049),
                        ..Default::default()
                    });
                }
                Domain::Network => {
                    ev.network = Some(NetworkInfo {
                        protocol: "tcp".into(),
                        src_ip: Some("10.1.2.3".into()),
                        src_port: Some(40_000 + (i % 20_000) as u16),
                        dst_ip: Some("93.184.216.34".into()),
                        dst_port: Some(443),
                        direction: Some("outbound".into()),
                        ..Default::default()
                    });
                }
                Domain::Process if activity == Activity::Exit => ev.process.exit_code = Some(0),
                _ => {}
            }
            ev
        })
        .collect()
}
