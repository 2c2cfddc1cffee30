//! The forwarder against a real nats-server (started here on a free loopback port): every event reaches the stream
//! once under its id, whether the server is there from the start, shows up late, or dies in the middle.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{events, read_stream, wait_until};
use ringwatch_core::pipeline::LossCounters;
use ringwatch_core::sink::Sink;
use ringwatch_forward::{ForwardOptions, ForwardSink, NatsOptions};

fn sink(url: &str, spool: &Path) -> ForwardSink {
    let opts = ForwardOptions {
        nats: NatsOptions { url: url.to_owned(), ..Default::default() },
        spool_dir: spool.to_owned(),
        spool_max_bytes: 1 << 30,
    };
    ForwardSink::start_with_segment_bytes(opts, Arc::new(LossCounters::default()), 1 << 20).expect("forwarder starts")
}

fn expected_ids(prefix: &str, n: u64) -> HashSet<String> {
    (0..n).map(|i| format!("{prefix}-{i:x}")).collect()
}

/// Asserts the stream holds exactly `expected` ids (copies allowed only when `allow_copies`).
fn assert_stream_has(url: &str, expected: &HashSet<String>, allow_copies: bool) {
    let contents = read_stream(url);
    let got: HashSet<String> = contents.copies.keys().cloned().collect();
    let missing: Vec<_> = expected.difference(&got).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} events missing from the stream, e.g. {missing:?}",
        expected.len() - got.len().min(expected.len())
    );
    let extra: Vec<_> = got.difference(expected).take(5).collect();
    assert!(extra.is_empty(), "unexpected ids {extra:?}");
    if !allow_copies {
        let copies = contents.copies.values().filter(|&&n| n > 1).count();
        assert_eq!(copies, 0, "every id stored once in the stream");
    }
}

#[test]
fn every_event_reaches_the_stream_once_under_its_id_and_subject() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(server) = common::start_server(dir.path(), None, &[]) else { return };
    let mut s = sink(&server.url(), &dir.path().join("spool"));
    let stats = s.stats();
    let n = 20_000;
    let all = events("web-1.prod", "e", 0..n);
    let start = Instant::now();
    for chunk in all.chunks(1024) {
        s.write_batch(chunk).expect("spooled");
    }
    assert!(
        wait_until(Duration::from_secs(30), || stats.published.load(Ordering::Relaxed) == n),
        "published {} of {n}",
        stats.published.load(Ordering::Relaxed)
    );
    eprintln!("{n} events acknowledged in {:?}", start.elapsed());
    s.flush().expect("flush");
    assert_eq!(stats.spool_bytes.load(Ordering::Relaxed), 0);
    assert!(stats.connected.load(Ordering::Relaxed));
    drop(s);
    assert_stream_has(&server.url(), &expected_ids("e", n), false);
    let contents = read_stream(&server.url());
    assert!(contents.subjects.iter().all(|s| s == "ringwatch.web-1_prod.process" || s == "ringwatch.web-1_prod.file"));
    assert_eq!(contents.order[..3], ["e-0", "e-1", "e-2"], "spool order is stream order");
    let segments = ringwatch_forward::spool::list_segments(&dir.path().join("spool")).expect("list");
    assert_eq!(segments.len(), 1, "acknowledged segments are deleted: {segments:?}");
}

#[test]
fn a_server_absent_at_start_gets_everything_once_it_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    if !common::nats_server_available() {
        return;
    }
    let port = common::free_port().expect("port");
    let url = format!("nats://127.0.0.1:{port}");
    let mut s = sink(&url, &dir.path().join("spool"));
    let stats = s.stats();
    let n = 5_000;
    for chunk in events("h", "late", 0..n).chunks(1024) {
        s.write_batch(chunk).expect("spooled while the server is down");
    }
    std::thread::sleep(Duration::from_millis(800));
    assert!(!stats.connected.load(Ordering::Relaxed));
    assert!(stats.errors.load(Ordering::Relaxed) > 0, "failed attempts are counted");
    assert!(stats.spool_bytes.load(Ordering::Relaxed) > 0);
    assert_eq!(stats.published.load(Ordering::Relaxed), 0);

    let server = common::start_server(dir.path(), Some(port), &[]).expect("server");
    assert!(
        wait_until(Duration::from_secs(20), || stats.published.load(Ordering::Relaxed) == n),
        "published {} of {n} after the server came up",
        stats.published.load(Ordering::Relaxed)
    );
    assert!(stats.connected.load(Ordering::Relaxed));
    drop(s);
    assert_stream_has(&server.url(), &expected_ids("late", n), false);
}

#[test]
fn a_server_killed_mid_stream_and_restarted_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut server) = common::start_server(dir.path(), None, &[]) else { return };
    let mut s = sink(&server.url(), &dir.path().join("spool"));
    let stats = s.stats();
    let n: u64 = 60_000;
    let all = events("h", "k", 0..n);
    let mut chunks = all.chunks(500);
    // A steady trickle; the server dies a third of the way through and comes back after longer than the publish
    // acknowledgement timeout, so publishes fail and are resent from the spool cursor.
    for (i, chunk) in chunks.by_ref().enumerate() {
        s.write_batch(chunk).expect("spooled");
        std::thread::sleep(Duration::from_millis(10));
        if i == 40 {
            server.kill();
            break;
        }
    }
    for chunk in chunks.by_ref().take(40) {
        s.write_batch(chunk).expect("spooled while the server is dead");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(!stats.connected.load(Ordering::Relaxed), "the disconnect is noticed");
    std::thread::sleep(ringwatch_forward::connect::REQUEST_TIMEOUT);
    server.restart().expect("nats-server restarts");
    for chunk in chunks {
        s.write_batch(chunk).expect("spooled");
    }
    assert!(
        wait_until(Duration::from_secs(40), || stats.spool_bytes.load(Ordering::Relaxed) == 0),
        "spool drained: {} bytes left, {} published",
        stats.spool_bytes.load(Ordering::Relaxed),
        stats.published.load(Ordering::Relaxed)
    );
    assert!(stats.published.load(Ordering::Relaxed) >= n, "resends count as published too");
    assert!(stats.errors.load(Ordering::Relaxed) > 0, "timed-out publishes are counted");
    drop(s);
    // Copies on the wire are fine (at-least-once); every id must be there.
    assert_stream_has(&server.url(), &expected_ids("k", n), true);
}

#[test]
fn events_left_by_a_previous_run_are_sent_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    if !common::nats_server_available() {
        return;
    }
    let port = common::free_port().expect("port");
    let url = format!("nats://127.0.0.1:{port}");
    let spool = dir.path().join("spool");
    {
        let mut s = sink(&url, &spool);
        s.write_batch(&events("h", "old", 0..100)).expect("spooled");
        s.flush().expect("flush gives up quickly while disconnected");
    }
    let server = common::start_server(dir.path(), Some(port), &[]).expect("server");
    let mut s = sink(&url, &spool);
    s.write_batch(&events("h", "new", 0..100)).expect("spooled");
    let stats = s.stats();
    assert!(wait_until(Duration::from_secs(20), || stats.spool_bytes.load(Ordering::Relaxed) == 0));
    drop(s);
    let contents = read_stream(&server.url());
    assert_eq!(contents.order.len(), 200);
    assert!(contents.order[..100].iter().all(|id| id.starts_with("old-")), "{:?}", &contents.order[..3]);
}
