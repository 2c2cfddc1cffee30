//! The spool on its own (no server): append, read, acknowledge, cursor, segment deletion, torn records, the size
//! cap and the directory lock.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::events;
use ringwatch_core::pipeline::LossCounters;
use ringwatch_forward::spool::{self, Item, ItemKind, SpoolConfig, SpoolReader, SpoolWriter};
use ringwatch_forward::{ForwardError, ForwardOptions, ForwardSink, ForwardStats, NatsOptions};

struct Opened {
    writer: SpoolWriter,
    reader: SpoolReader,
    stats: Arc<ForwardStats>,
    losses: Arc<LossCounters>,
}

fn open(dir: &Path, max_bytes: u64, segment_bytes: u64) -> Opened {
    let stats = Arc::new(ForwardStats::default());
    let losses = Arc::new(LossCounters::default());
    let (writer, reader) =
        spool::open(dir, SpoolConfig { max_bytes, segment_bytes }, stats.clone(), losses.clone()).expect("spool opens");
    Opened { writer, reader, stats, losses }
}

/// Reads everything available: (records' ids, every item).
fn drain(reader: &mut SpoolReader) -> (Vec<String>, Vec<Item>) {
    let mut ids = Vec::new();
    let mut items = Vec::new();
    while let Some(item) = reader.next_item().expect("reads") {
        if let ItemKind::Record { id, .. } = &item.kind {
            ids.push(id.clone());
        }
        items.push(item);
    }
    (ids, items)
}

fn ids(prefix: &str, range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i:x}")).collect()
}

#[test]
fn records_come_back_in_order_and_acknowledged_segments_are_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool_dir = dir.path().join("spool");
    let mut s = open(&spool_dir, 1 << 30, 8 << 10);
    let evs = events("alpha", "a", 0..300);
    let out = s.writer.append(&evs).expect("append");
    assert_eq!((out.written, out.dropped), (300, 0));
    let segments = spool::list_segments(&spool_dir).expect("list");
    assert!(segments.len() > 5, "8 KiB segments roll: {segments:?}");
    let spooled = s.stats.spool_bytes.load(Ordering::Relaxed);
    let on_disk: u64 =
        segments.iter().map(|&n| fs::metadata(spool::segment_path(&spool_dir, n)).expect("meta").len()).sum();
    assert_eq!(spooled, on_disk, "spool_bytes counts exactly the unacknowledged bytes");

    let (got, items) = drain(&mut s.reader);
    assert_eq!(got, ids("a", 0..300));
    let ItemKind::Record { subject, payload, .. } = &items[0].kind else { panic!("first item is a record") };
    assert_eq!(subject, "ringwatch.alpha.process");
    let back: ringwatch_core::Event = serde_json::from_slice(payload).expect("payload is the event's JSON");
    assert_eq!(back, evs[0]);

    // Acknowledge half: the segments before the cursor are gone, the rest stay.
    for item in &items[..items.len() / 2] {
        s.reader.acknowledge(item.end, item.bytes).expect("ack");
    }
    let cursor = s.reader.cursor();
    let left = spool::list_segments(&spool_dir).expect("list");
    assert!(left.iter().all(|&n| n >= cursor.segment), "{left:?} vs cursor {cursor:?}");
    assert!(left.len() < segments.len());
    for item in &items[items.len() / 2..] {
        s.reader.acknowledge(item.end, item.bytes).expect("ack");
    }
    assert_eq!(s.stats.spool_bytes.load(Ordering::Relaxed), 0);
    assert_eq!(spool::list_segments(&spool_dir).expect("list"), vec![cursor_segment_after(&s.reader)]);
    s.reader.save_cursor(true).expect("save");
    drop(s);

    // Reopened: nothing to resend.
    let mut s = open(&spool_dir, 1 << 30, 8 << 10);
    assert_eq!(s.stats.spool_bytes.load(Ordering::Relaxed), 0);
    assert!(drain(&mut s.reader).0.is_empty());

    // Permissions: the directory and every file are private.
    let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&spool_dir), 0o700);
    for entry in fs::read_dir(&spool_dir).expect("readdir") {
        let p = entry.expect("entry").path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

fn cursor_segment_after(reader: &SpoolReader) -> u64 {
    reader.cursor().segment
}

#[test]
fn unacknowledged_records_are_read_again_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path(), 1 << 30, 4 << 10);
    s.writer.append(&events("h", "r", 0..50)).expect("append");
    let (_, items) = drain(&mut s.reader);
    let records: Vec<&Item> = items.iter().filter(|i| matches!(i.kind, ItemKind::Record { .. })).collect();
    let mut acked = 0;
    for item in &items {
        s.reader.acknowledge(item.end, item.bytes).expect("ack");
        if matches!(item.kind, ItemKind::Record { .. }) {
            acked += 1;
            if acked == 20 {
                break;
            }
        }
    }
    s.reader.save_cursor(false).expect("save");
    let unacked_before = s.stats.spool_bytes.load(Ordering::Relaxed);
    assert_eq!(unacked_before, records[20..].iter().map(|i| i.bytes).sum::<u64>());
    // A rewind (what the publisher does after a failure) reads from the cursor.
    s.reader.rewind();
    assert_eq!(drain(&mut s.reader).0, ids("r", 20..50));
    drop(s);

    let mut s = open(dir.path(), 1 << 30, 4 << 10);
    assert_eq!(s.stats.spool_bytes.load(Ordering::Relaxed), unacked_before);
    s.writer.append(&events("h", "new", 0..5)).expect("append");
    let mut expected = ids("r", 20..50);
    expected.extend(ids("new", 0..5));
    assert_eq!(drain(&mut s.reader).0, expected, "old events first, then new ones");
}

#[test]
fn a_torn_record_at_the_end_is_skipped_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path(), 1 << 30, 1 << 20);
    s.writer.append(&events("h", "t", 0..10)).expect("append");
    drop(s);
    // A crash in the middle of a write: half of a record at the end of the last segment.
    let last = *spool::list_segments(dir.path()).expect("list").last().expect("a segment");
    let path = spool::segment_path(dir.path(), last);
    let whole = fs::read(&path).expect("read");
    let one_record = whole.len() / 10;
    let mut f = OpenOptions::new().append(true).open(&path).expect("open");
    f.write_all(&whole[..one_record / 2]).expect("append half a record");
    drop(f);

    let mut s = open(dir.path(), 1 << 30, 1 << 20);
    s.writer.append(&events("h", "after", 0..3)).expect("append");
    let (got, items) = drain(&mut s.reader);
    let mut expected = ids("t", 0..10);
    expected.extend(ids("after", 0..3));
    assert_eq!(got, expected);
    assert_eq!(s.losses.malformed.load(Ordering::Relaxed), 1, "the torn record is counted");
    for item in &items {
        s.reader.acknowledge(item.end, item.bytes).expect("ack");
    }
    assert_eq!(s.stats.spool_bytes.load(Ordering::Relaxed), 0, "the torn bytes are released too");
}

#[test]
fn a_damaged_record_skips_the_rest_of_its_segment_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path(), 1 << 30, 4 << 10);
    s.writer.append(&events("h", "d", 0..60)).expect("append");
    drop(s);
    let segments = spool::list_segments(dir.path()).expect("list");
    let first = spool::segment_path(dir.path(), segments[0]);
    let mut bytes = fs::read(&first).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&first, bytes).expect("write");

    let mut s = open(dir.path(), 1 << 30, 4 << 10);
    let got = drain(&mut s.reader).0;
    assert!(got.len() < 60 && got.len() > 30, "only part of the first segment is lost: {}", got.len());
    assert_eq!(got.last().map(String::as_str), Some("d-3b"), "later segments are read");
    assert_eq!(s.losses.malformed.load(Ordering::Relaxed), 1);
}

#[test]
fn the_size_cap_drops_new_events_and_counts_them_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path(), 20_000, 1 << 20);
    let out = s.writer.append(&events("h", "c", 0..200)).expect("append");
    assert!(out.written > 10 && out.dropped > 10, "{out:?}");
    assert_eq!(out.written + out.dropped, 200);
    assert!(s.stats.spool_bytes.load(Ordering::Relaxed) <= 20_000);
    assert_eq!(s.stats.spool_dropped.load(Ordering::Relaxed), out.dropped as u64);
    assert_eq!(s.losses.queue_full.load(Ordering::Relaxed), out.dropped as u64, "the pipeline reports them");
    // The oldest stay; the newest were dropped.
    let (got, items) = drain(&mut s.reader);
    assert_eq!(got, ids("c", 0..out.written as u64));
    // Room again once acknowledged.
    for item in &items {
        s.reader.acknowledge(item.end, item.bytes).expect("ack");
    }
    let again = s.writer.append(&events("h", "more", 0..10)).expect("append");
    assert_eq!((again.written, again.dropped), (10, 0));
}

#[test]
fn a_second_agent_on_the_same_spool_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool_dir = dir.path().join("shared-spool");
    let port = common::free_port().expect("port");
    let opts = ForwardOptions {
        nats: NatsOptions { url: format!("nats://127.0.0.1:{port}"), ..Default::default() },
        spool_dir: spool_dir.clone(),
        spool_max_bytes: 1 << 20,
    };
    let first = ForwardSink::start(opts.clone(), Arc::default()).expect("first agent starts");
    let err = ForwardSink::start(opts.clone(), Arc::default()).err().expect("second agent refused");
    assert!(matches!(err, ForwardError::SpoolLocked { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&spool_dir.display().to_string()) && msg.contains("in use"), "{msg}");
    assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
    drop(first);
    ForwardSink::start(opts, Arc::default()).expect("free again once the first agent is gone");
}
