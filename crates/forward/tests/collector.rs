//! The collector against a real nats-server: every event stored once, copies and junk handled, and what was
//! acknowledged is not delivered again to the next run of the same durable consumer.

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{events, wait_until};
use ringwatch_core::pipeline::LossCounters;
use ringwatch_core::sink::Sink;
use ringwatch_forward::collector::{self, CollectOptions, CollectProgress};
use ringwatch_forward::{ForwardOptions, ForwardSink, NatsOptions};
use ringwatch_store::{RowVisitor, Store, StoreOptions, Value};

struct Count(i64);

impl RowVisitor for Count {
    fn columns(&mut self, _: &[String]) -> std::io::Result<()> {
        Ok(())
    }
    fn row(&mut self, values: &[Value]) -> std::io::Result<()> {
        if let Value::Integer(n) = values[0] {
            self.0 = n;
        }
        Ok(())
    }
}

/// Runs the collector until `done` says so or `timeout` passes.
fn collect(
    opts: &CollectOptions,
    store: &mut Store,
    timeout: Duration,
    done: impl Fn(&CollectProgress) -> bool,
) -> CollectProgress {
    let stop = Arc::new(AtomicBool::new(false));
    let timer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + timeout;
            while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::Relaxed);
        })
    };
    let result = collector::run(opts, store, &stop, &mut |p| {
        if done(p) { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    });
    stop.store(true, Ordering::Relaxed);
    timer.join().expect("timer");
    result.expect("collector runs")
}

#[test]
fn the_collector_stores_each_event_once_and_does_not_see_acknowledged_ones_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(server) = common::start_server(dir.path(), None, &[]) else { return };
    let store_path = dir.path().join("collector.db");
    let mut store = match Store::open(&store_path, &StoreOptions::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SKIP: the store cannot open yet: {e}");
            return;
        }
    };
    let opts = ForwardOptions {
        nats: NatsOptions { url: server.url(), ..Default::default() },
        spool_dir: dir.path().join("spool"),
        spool_max_bytes: 1 << 30,
    };
    let mut sink = ForwardSink::start(opts, Arc::new(LossCounters::default())).expect("forwarder");
    let n = 3000;
    let all = events("h", "c", 0..n);
    sink.write_batch(&all).expect("spooled");
    let stats = sink.stats();
    assert!(wait_until(Duration::from_secs(20), || stats.published.load(Ordering::Relaxed) == n));
    drop(sink);

    // A copy of one event under another message id (what a resend after the duplicate window looks like), and a
    // message that is not an event at all.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let copy = serde_json::to_vec(&all[5]).expect("json");
        let msg = async_nats::jetstream::message::PublishMessage::build().payload(copy.into()).message_id("resent-c-5");
        js.send_publish("ringwatch.h.process", msg).await.expect("publish").await.expect("ack");
        js.publish("ringwatch.h.process", "not an event".into()).await.expect("publish").await.expect("ack");
    });

    let nats = NatsOptions { url: server.url(), ..Default::default() };
    let opts = CollectOptions::new(nats);
    let total = n + 2;
    let first = collect(&opts, &mut store, Duration::from_secs(30), |p| p.received >= total);
    assert_eq!((first.received, first.stored, first.duplicates, first.malformed), (total, n, 1, 1), "{first:?}");
    let mut count = Count(0);
    store.query("SELECT count(DISTINCT id) FROM events", &mut count).expect("query");
    assert_eq!(count.0, n as i64);

    // Same durable name again: everything was acknowledged after the commit, so nothing comes back.
    let second = collect(&opts, &mut store, Duration::from_secs(2), |_| false);
    assert_eq!(second.received, 0, "acknowledged messages are not redelivered: {second:?}");

    // Another durable name with a subject filter gets its own copy of the matching events only.
    let mut files_store = Store::open(&dir.path().join("files.db"), &StoreOptions::default()).expect("store");
    let files = CollectOptions { durable: "files-only".into(), subject: "ringwatch.*.file".into(), ..opts.clone() };
    let got = collect(&files, &mut files_store, Duration::from_secs(30), |p| p.received >= n / 10);
    assert_eq!((got.received, got.stored), (n / 10, n / 10), "every 10th event is a file event: {got:?}");

    // A bad durable name is refused before connecting.
    let bad = CollectOptions { durable: "a.b".into(), ..opts.clone() };
    let err = bad.check().expect_err("rejected");
    assert!(err.to_string().contains("--durable"), "{err}");
}
