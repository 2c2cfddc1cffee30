//! The store against real SQLite files: round trips, exactly-once ids, retention, permissions, and the errors an
//! operator sees for a corrupt, locked, foreign or newer database.

mod common;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use ringwatch_core::sink::Sink;
use ringwatch_core::{Action, Activity, Domain, Event, Timestamp};
use ringwatch_store::{
    ExportFilter, GROUP_DELAY, RowVisitor, Store, StoreError, StoreOptions, StoreSink, Value, WRITER_BUSY_TIMEOUT,
};

use common::{alerted, bulk, connect, dns, file, keys, process, store_path};

/// Collects query results.
#[derive(Default)]
struct Collect {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

impl RowVisitor for Collect {
    fn columns(&mut self, names: &[String]) -> io::Result<()> {
        self.columns = names.to_vec();
        Ok(())
    }
    fn row(&mut self, values: &[Value]) -> io::Result<()> {
        self.rows.push(values.to_vec());
        Ok(())
    }
}

fn query(store: &Store, sql: &str) -> Collect {
    let mut out = Collect::default();
    store.query(sql, &mut out).unwrap_or_else(|e| panic!("{sql}: {e}"));
    out
}

fn count(store: &Store, sql: &str) -> i64 {
    match query(store, sql).rows[0][0] {
        Value::Integer(n) => n,
        ref other => panic!("{sql}: not a count: {other:?}"),
    }
}

fn sample_events() -> Vec<Event> {
    vec![
        process("e1", Activity::Exec, 10, "g10", Some("g1"), "/usr/bin/bash"),
        file("e2", "g10", 10, "/etc/passwd"),
        connect("e3", "g10", 10, "10.1.2.3", 443),
        dns("e4", "g10", "example.org"),
        keys("e5", "g10", "ls -la\r"),
        alerted(process("e6", Activity::Exec, 11, "g11", Some("g10"), "/tmp/x"), "no-tmp-exec", Action::Killed),
        Event::sensor(Activity::Drop, "pipeline", "events dropped", Some(3)),
    ]
}

#[test]
fn stored_json_deserializes_back_to_the_same_event_and_columns_are_typed() {
    let (_dir, path) = store_path();
    let mut store = Store::open(&path, &StoreOptions::default()).expect("open");
    let events = sample_events();
    assert_eq!(store.insert(&events).expect("insert"), events.len());
    let reader = Store::open_read_only(&path).expect("open read-only");
    let mut exported = Vec::new();
    reader
        .export(&ExportFilter::default(), &mut |line| {
            exported.push(serde_json::from_str::<Event>(line).map_err(io::Error::other)?);
            Ok(())
        })
        .expect("export");
    let sensor_id = &exported[6].id;
    assert!(!sensor_id.is_empty(), "an event without an id gets one");
    let mut expected = events.clone();
    expected[6].id = sensor_id.clone();
    assert_eq!(exported, expected);
    let row = query(&reader, "SELECT pid, exe, cmdline, dst_port, time FROM events WHERE id = 'e3'");
    assert_eq!(row.columns, ["pid", "exe", "cmdline", "dst_port", "time"]);
    assert_eq!(row.rows[0][0], Value::Integer(10));
    assert_eq!(row.rows[0][1], Value::Text("/usr/bin/curl".into()));
    assert_eq!(row.rows[0][2], Value::Text("/usr/bin/curl --flag arg-e3".into()));
    assert_eq!(row.rows[0][3], Value::Integer(443));
    assert_eq!(row.rows[0][4], Value::Text(events[2].time.to_rfc3339()));
}

#[test]
fn each_view_selects_its_domain() {
    let (_dir, path) = store_path();
    let mut store = Store::open(&path, &StoreOptions::default()).expect("open");
    store.insert(&sample_events()).expect("insert");
    for (view, expected) in
        [("processes", 2), ("files", 1), ("network", 1), ("dns", 1), ("keystrokes", 1), ("alerts", 1), ("sensor", 1)]
    {
        assert_eq!(count(&store, &format!("SELECT count(*) FROM {view}")), expected, "view {view}");
    }
    let alert = query(&store, "SELECT rule, action FROM alerts");
    assert_eq!(alert.rows[0], [Value::Text("no-tmp-exec".into()), Value::Text("killed".into())]);
    let plan = query(&store, "EXPLAIN QUERY PLAN SELECT * FROM alerts ORDER BY time_ns");
    let plan = format!("{:?}", plan.rows);
    assert!(plan.contains("events_alerts"), "the alerts view uses its partial index: {plan}");
}

#[test]
fn a_resent_event_is_stored_once_and_counted_as_duplicate() {
    let (_dir, path) = store_path();
    let mut store = Store::open(&path, &StoreOptions::default()).expect("open");
    let events = sample_events()[..5].to_vec();
    assert_eq!(store.insert(&events).expect("first"), 5);
    let mut again = events[2..].to_vec();
    again.push(file("new", "g10", 10, "/tmp/new"));
    assert_eq!(store.insert(&again).expect("second"), 1, "only the new id is inserted");
    let stats = store.stats();
    assert_eq!(stats.inserted.load(Ordering::Relaxed), 6);
    assert_eq!(stats.duplicates.load(Ordering::Relaxed), 3);
    assert_eq!(count(&store, "SELECT count(*) FROM events"), 6);
    assert_eq!(count(&store, "SELECT count(*) FROM event_json"), 6);
    assert!(stats.size_bytes.load(Ordering::Relaxed) > 0);
}

#[test]
fn retention_by_age_deletes_old_events_and_leaves_a_sensor_event() {
    let (_dir, path) = store_path();
    let old = Timestamp::from_system_time(SystemTime::now() - Duration::from_secs(7200));
    let fresh = Timestamp::now();
    {
        let mut store = Store::open(&path, &StoreOptions::default()).expect("open");
        store.insert(&bulk("old", 100, old, 10)).expect("old");
        store.insert(&bulk("fresh", 10, fresh, 10)).expect("fresh");
    }
    let opts = StoreOptions { max_age: Some(Duration::from_secs(3600)), ..Default::default() };
    let store = Store::open(&path, &opts).expect("reopen applies retention");
    assert_eq!(store.stats().retention_deleted.load(Ordering::Relaxed), 100);
    assert_eq!(count(&store, "SELECT count(*) FROM files"), 10);
    assert_eq!(count(&store, "SELECT count(*) FROM event_json"), 11, "10 fresh + the retention report");
    let report = query(&store, "SELECT component, count, message FROM sensor WHERE activity = 'drop'");
    assert_eq!(report.rows.len(), 1);
    assert_eq!(report.rows[0][0], Value::Text("store/retention".into()));
    assert_eq!(report.rows[0][1], Value::Integer(100));
    let Value::Text(message) = &report.rows[0][2] else { panic!("message") };
    assert!(message.contains("100") && message.contains("max age"), "{message}");
}

#[test]
fn keystrokes_have_their_own_shorter_retention() {
    let (_dir, path) = store_path();
    let old = Timestamp::from_system_time(SystemTime::now() - Duration::from_secs(7200));
    {
        let mut store = Store::open(&path, &StoreOptions::default()).expect("open");
        let mut old_keys = keys("k-old", "g-1", "typed two hours ago");
        old_keys.time = old;
        store.insert(&[old_keys, keys("k-new", "g-1", "typed now")]).expect("keys");
        store.insert(&bulk("old-file", 5, old, 10)).expect("files");
    }
    let opts = StoreOptions {
        max_age: Some(Duration::from_secs(30 * 86_400)),
        keystroke_max_age: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    let store = Store::open(&path, &opts).expect("reopen applies retention");
    assert_eq!(store.stats().retention_deleted.load(Ordering::Relaxed), 1);
    let texts = query(&store, "SELECT text FROM keystrokes");
    assert_eq!(texts.rows, vec![vec![Value::Text("typed now".into())]]);
    assert_eq!(count(&store, "SELECT count(*) FROM files"), 5, "other old events stay: their max age is 30 days");
    let report = query(&store, "SELECT message FROM sensor WHERE activity = 'drop'");
    let Value::Text(message) = &report.rows[0][0] else { panic!("message") };
    assert!(message.contains("1 keystroke events older than the keystroke max age 3600s"), "{message}");
}

#[test]
fn retention_by_size_brings_the_file_under_the_cap_oldest_first() {
    let (_dir, path) = store_path();
    let cap: u64 = 2 << 20;
    let mut sink = StoreSink::open(&path, &StoreOptions::default()).expect("open");
    let start = Timestamp::now();
    for batch in 0..20 {
        let events = bulk(&format!("b{batch}"), 1000, Timestamp(start.0 + batch * 1_000_000), 300);
        sink.write_batch(&events).expect("batch");
    }
    let before = sink.stats().size_bytes.load(Ordering::Relaxed);
    assert!(before > 3 * cap, "the test needs a store well over the cap: {before}");
    drop(sink);

    let opts = StoreOptions { max_bytes: Some(cap), ..Default::default() };
    let mut store = Store::open(&path, &opts).expect("reopen");
    let stats = store.stats();
    let after = stats.size_bytes.load(Ordering::Relaxed);
    let deleted = stats.retention_deleted.load(Ordering::Relaxed);
    assert!(after <= cap, "size {after} must be under the cap {cap} (was {before})");
    assert!(deleted > 10_000, "most events deleted: {deleted}");
    let left = count(&store, "SELECT count(*) FROM files");
    assert_eq!(left as u64 + deleted, 20_000);
    assert_eq!(count(&store, "SELECT count(*) FROM files WHERE id = 'b19-999'"), 1, "the newest event is kept");
    assert_eq!(count(&store, "SELECT count(*) FROM files WHERE id LIKE 'b0-%'"), 0, "the oldest go first");
    let newest_deleted = count(&store, "SELECT min(time_ns) FROM files") - 1;
    assert_eq!(count(&store, &format!("SELECT count(*) FROM files WHERE time_ns > {newest_deleted}")), left);
    assert_eq!(count(&store, "SELECT count(*) FROM sensor WHERE component = 'store/retention'"), 1);
    let report = store.apply_retention().expect("second pass");
    assert_eq!(report.total(), 0, "already under the cap");
}

#[test]
fn store_file_is_private_and_its_directory_too() {
    let (_dir, path) = store_path();
    let mut store = Store::open(&path, &StoreOptions::default()).expect("open");
    store.insert(&sample_events()).expect("insert");
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600, "events hold command lines and keystrokes");
    assert_eq!(mode(path.parent().expect("dir")), 0o700);
    let wal = path.with_extension("db-wal");
    assert_eq!(mode(&wal), 0o600, "SQLite copies the main file's mode to the WAL");
}

#[test]
fn a_file_that_is_not_a_database_is_reported_with_its_path_and_what_to_do() {
    let (_dir, path) = store_path();
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    std::fs::write(&path, vec![0x5a; 8192]).expect("garbage");
    let err = Store::open(&path, &StoreOptions::default()).err().expect("must fail");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()) && text.contains("move it away"), "{text}");
    assert!(Store::open_read_only(&path).is_err());
}

#[test]
fn a_database_locked_by_another_writer_fails_fast_with_a_locked_error() {
    let (_dir, path) = store_path();
    drop(Store::open(&path, &StoreOptions::default()).expect("create"));
    let holder = rusqlite::Connection::open(&path).expect("second connection");
    holder.execute_batch("BEGIN EXCLUSIVE;").expect("lock");
    let started = Instant::now();
    let err = Store::open(&path, &StoreOptions::default()).err().expect("must fail while locked");
    let waited = started.elapsed();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("locked by another process"), "{err}");
    assert!(waited >= WRITER_BUSY_TIMEOUT && waited < Duration::from_secs(3), "waited {waited:?}");
    // Hunting still works while a writer holds the lock (WAL readers do not block).
    let reader = Store::open_read_only(&path).expect("reader");
    assert_eq!(count(&reader, "SELECT count(*) FROM events"), 0);
    holder.execute_batch("ROLLBACK;").expect("unlock");
    Store::open(&path, &StoreOptions::default()).expect("opens once the lock is gone");
}

#[test]
fn a_lock_taken_mid_run_is_reported_and_the_held_events_are_stored_after_it() {
    let (_dir, path) = store_path();
    let mut sink = StoreSink::open(&path, &StoreOptions::default()).expect("open");
    let events = sample_events();
    sink.write_batch(&events[..2]).expect("unlocked batch");
    sink.flush().expect("committed");
    let holder = rusqlite::Connection::open(&path).expect("second connection");
    holder.execute_batch("BEGIN EXCLUSIVE;").expect("lock");
    let started = Instant::now();
    sink.write_batch(&events[2..4]).expect("queued: the pipeline never waits for SQLite");
    assert!(started.elapsed() < Duration::from_millis(200), "write_batch returned at once");
    std::thread::sleep(GROUP_DELAY + WRITER_BUSY_TIMEOUT + Duration::from_millis(500));
    let err = sink.write_batch(&events[4..5]).expect_err("the writer's failure surfaces on the next call");
    assert!(err.to_string().contains("locked by another process"), "{err}");
    assert!(err.to_string().contains("held, retrying"), "{err}");
    assert!(sink.stats().errors.load(Ordering::Relaxed) >= 1);
    holder.execute_batch("ROLLBACK;").expect("unlock");
    sink.flush().expect("the held events are committed once the lock is gone");
    let reader = Store::open_read_only(&path).expect("reader");
    assert_eq!(count(&reader, "SELECT count(*) FROM events"), 5, "nothing was lost to the lock");
}

#[test]
fn bad_sql_is_a_bad_query_with_sqlites_words() {
    let (_dir, path) = store_path();
    drop(Store::open(&path, &StoreOptions::default()).expect("create"));
    let reader = Store::open_read_only(&path).expect("reader");
    for (sql, words) in [
        ("SELEC * FROM events", "syntax error"),
        ("SELECT nope FROM events", "no such column: nope"),
        ("SELECT * FROM no_table", "no such table: no_table"),
    ] {
        let err = reader.query(sql, &mut Collect::default()).expect_err("must fail");
        assert!(matches!(err, StoreError::BadQuery { .. }), "{sql}: {err:?}");
        assert!(err.to_string().contains(words), "{sql}: {err}");
    }
}

#[test]
fn a_read_only_store_refuses_every_write() {
    let (_dir, path) = store_path();
    let mut store = Store::open(&path, &StoreOptions::default()).expect("create");
    store.insert(&sample_events()).expect("insert");
    drop(store);
    let reader = Store::open_read_only(&path).expect("reader");
    for sql in ["DELETE FROM events", "DROP TABLE events", "INSERT INTO event_json VALUES (99, '{}')", "VACUUM"] {
        let err = reader.query(sql, &mut Collect::default()).expect_err("must fail");
        assert!(matches!(err, StoreError::BadQuery { .. }), "{sql}: {err:?}");
    }
    assert_eq!(count(&reader, "SELECT count(*) FROM events"), 7);
}

#[test]
fn missing_foreign_and_newer_stores_are_refused_with_advice() {
    let (dir, path) = store_path();
    let err = Store::open_read_only(&path).err().expect("missing");
    assert!(matches!(err, StoreError::Missing { .. }) && err.to_string().contains("--store"), "{err}");

    let foreign = dir.path().join("other.db");
    rusqlite::Connection::open(&foreign).expect("other").execute_batch("CREATE TABLE t (x);").expect("table");
    let err = Store::open(&foreign, &StoreOptions::default()).err().expect("foreign");
    assert!(matches!(err, StoreError::Foreign { .. }), "{err:?}");

    drop(Store::open(&path, &StoreOptions::default()).expect("create"));
    rusqlite::Connection::open(&path).expect("conn").execute_batch("PRAGMA user_version = 99;").expect("bump");
    let err = Store::open(&path, &StoreOptions::default()).err().expect("newer");
    assert!(matches!(err, StoreError::NewerSchema { found: 99, .. }), "{err:?}");
    assert!(err.to_string().contains("upgrade"), "{err}");
}

#[test]
fn the_store_is_created_with_incremental_auto_vacuum_and_wal() {
    let (_dir, path) = store_path();
    drop(Store::open(&path, &StoreOptions::default()).expect("create"));
    let conn = rusqlite::Connection::open(&path).expect("conn");
    let auto: i64 = conn.pragma_query_value(None, "auto_vacuum", |r| r.get(0)).expect("auto_vacuum");
    let journal: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).expect("journal");
    assert_eq!(auto, 2, "INCREMENTAL");
    assert_eq!(journal, "wal");
}

#[test]
fn export_filters_by_domain_and_time() {
    let (_dir, path) = store_path();
    let mut store = Store::open(&path, &StoreOptions::default()).expect("open");
    let mut events = sample_events();
    for (i, ev) in events.iter_mut().enumerate() {
        ev.time = Timestamp(1_000_000_000_000 + i as u64 * 1000);
    }
    store.insert(&events).expect("insert");
    let ids = |filter: ExportFilter| {
        let mut ids = Vec::new();
        store
            .export(&filter, &mut |line| {
                let v: serde_json::Value = serde_json::from_str(line).map_err(io::Error::other)?;
                ids.push(v["id"].as_str().unwrap_or_default().to_owned());
                Ok(())
            })
            .expect("export");
        ids
    };
    assert_eq!(ids(ExportFilter { domain: Some(Domain::Network), ..Default::default() }), ["e3", "e4"]);
    let window = ExportFilter {
        since: Some(Timestamp(1_000_000_001_000)),
        until: Some(Timestamp(1_000_000_003_000)),
        domain: None,
    };
    assert_eq!(ids(window), ["e2", "e3"]);
}

/// The store keeps an event in parts (its row, its kind, its process context) and rebuilds the JSON: every byte
/// must come back, including what the columns cannot give back (an escaped host, an enforcement delay, odd rules).
#[test]
fn export_gives_back_the_agents_json_byte_for_byte() {
    let (_dir, path) = store_path();
    let mut store = Store::open(&path, &StoreOptions::default()).expect("open");
    let mut events = sample_events();
    events[6].id = "sensor-1".into();
    let mut odd = file("odd", "g10", 10, "/tmp/a \"quoted\" path\n");
    odd.host = "host \"with\" quotes".into();
    odd.enforcement_delay_us = Some(250);
    events.push(odd);
    events.push(alerted(connect("rule-q", "g12", 12, "10.9.9.9", 22), "rule \"q\" \\ x", Action::Blocked));
    let mut renamed = file("renamed", "g10", 10, "/tmp/from");
    if let Some(f) = renamed.file.as_mut() {
        f.new_path = Some("/tmp/to".into());
    }
    events.push(renamed);
    let mut untrusted = keys("untrusted", "g13", "secret\u{7}\t");
    untrusted.trusted = false;
    events.push(untrusted);
    store.insert(&events).expect("insert");
    let mut exported = Vec::new();
    store
        .export(&ExportFilter::default(), &mut |line| {
            exported.push(line.to_owned());
            Ok(())
        })
        .expect("export");
    let expected: Vec<String> = events.iter().map(|ev| serde_json::to_string(ev).expect("json")).collect();
    assert_eq!(exported, expected);
    let via_view = query(&store, "SELECT json FROM event_json ORDER BY seq");
    let via_view: Vec<Value> = via_view.rows.into_iter().map(|mut r| r.remove(0)).collect();
    assert_eq!(via_view, expected.into_iter().map(Value::Text).collect::<Vec<_>>());
    let pid = "SELECT json_extract(j.json, '$.process.pid') FROM events e JOIN event_json j USING (seq) \
               WHERE e.id = 'rule-q'";
    assert_eq!(query(&store, pid).rows[0][0], Value::Integer(12));
}

/// `ev` with the same command line as every other event of its process (the helpers make one per event).
fn same_process(mut ev: Event) -> Event {
    ev.process.cmdline.truncate(1);
    ev
}

/// Events of one process state share one context row; the flat `events` view still shows each its own process.
#[test]
fn one_process_state_is_stored_once_per_batch() {
    let (_dir, path) = store_path();
    let mut store = Store::open(&path, &StoreOptions::default()).expect("open");
    let of = |id: &str, guid: &str, pid: u32, path: &str| same_process(file(id, guid, pid, path));
    let events = vec![of("a", "g1", 1, "/a"), of("b", "g1", 1, "/b"), of("c", "g2", 2, "/c"), of("d", "g1", 1, "/d")];
    store.insert(&events).expect("insert");
    assert_eq!(count(&store, "SELECT count(*) FROM process_contexts"), 2);
    assert_eq!(count(&store, "SELECT count(*) FROM event_kinds"), 1);
    let rows = query(&store, "SELECT id, pid, guid, path FROM events ORDER BY seq");
    let pids: Vec<&Value> = rows.rows.iter().map(|r| &r[1]).collect();
    assert_eq!(pids, [&Value::Integer(1), &Value::Integer(1), &Value::Integer(2), &Value::Integer(1)]);
    assert_eq!(count(&store, "SELECT count(*) FROM files WHERE guid = 'g1'"), 3);
}

/// A resent event stores nothing, not even the process context stored for it before its id was found.
#[test]
fn a_duplicate_leaves_no_process_context_behind() {
    let (_dir, path) = store_path();
    let mut store = Store::open(&path, &StoreOptions::default()).expect("open");
    let events = vec![file("a", "g1", 1, "/a"), file("b", "g2", 2, "/b")];
    store.insert(&events).expect("first");
    assert_eq!(store.insert(&events).expect("again"), 0);
    assert_eq!(count(&store, "SELECT count(*) FROM process_contexts"), 2);
    assert_eq!(count(&store, "SELECT count(*) FROM process_contexts WHERE ctx NOT IN (SELECT ctx FROM event_rows)"), 0);
}

/// Retention deletes the process contexts no event uses any more, and only those.
#[test]
fn retention_deletes_process_contexts_with_their_last_event() {
    let (_dir, path) = store_path();
    let old = Timestamp::from_system_time(SystemTime::now() - Duration::from_secs(7200));
    {
        let mut store = Store::open(&path, &StoreOptions::default()).expect("open");
        let of = |id: &str, guid: &str, pid: u32, path: &str| same_process(file(id, guid, pid, path));
        let mut events = vec![of("old-only", "g-old", 1, "/x"), of("old-shared", "g-shared", 2, "/y")];
        for ev in &mut events {
            ev.time = old;
        }
        events.push(of("new-shared", "g-shared", 2, "/z"));
        store.insert(&events).expect("insert");
        assert_eq!(count(&store, "SELECT count(*) FROM process_contexts"), 2);
    }
    let opts = StoreOptions { max_age: Some(Duration::from_secs(3600)), ..Default::default() };
    let store = Store::open(&path, &opts).expect("reopen applies retention");
    assert_eq!(count(&store, "SELECT count(*) FROM process_contexts WHERE guid = 'g-old'"), 0);
    assert_eq!(count(&store, "SELECT count(*) FROM events WHERE guid = 'g-shared'"), 1, "still has its process");
    assert_eq!(count(&store, "SELECT count(*) FROM process_contexts WHERE ctx NOT IN (SELECT ctx FROM event_rows)"), 0);
    assert_eq!(count(&store, "SELECT count(*) FROM event_rows"), count(&store, "SELECT count(*) FROM events"));
}

/// Checkpoints run on their own thread, and the WAL still starts over: it never grows far past its limit (here an
/// eighth of the size cap) while the writer keeps committing.
#[test]
fn the_wal_stays_bounded_while_the_writer_keeps_committing() {
    let (_dir, path) = store_path();
    let cap: u64 = 64 << 20;
    let mut store = Store::open(&path, &StoreOptions { max_bytes: Some(cap), ..Default::default() }).expect("open");
    let wal = path.with_extension("db-wal");
    let start = Timestamp::now();
    let mut largest = 0;
    for batch in 0..40 {
        store.insert(&bulk(&format!("w{batch}"), 2000, Timestamp(start.0 + batch * 10_000), 300)).expect("insert");
        largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    }
    assert_eq!(count(&store, "SELECT count(*) FROM event_rows"), 80_000, "nothing deleted: under the cap");
    assert!(largest <= cap / 8 + (8 << 20), "the WAL reached {largest} bytes");
}

#[test]
fn a_store_of_the_first_layout_is_refused_with_advice() {
    let (_dir, path) = store_path();
    drop(Store::open(&path, &StoreOptions::default()).expect("create"));
    rusqlite::Connection::open(&path).expect("conn").execute_batch("PRAGMA user_version = 1;").expect("age");
    let err = Store::open(&path, &StoreOptions::default()).err().expect("older");
    assert!(matches!(err, StoreError::OlderSchema { found: 1, .. }), "{err:?}");
    assert!(err.to_string().contains("move it away"), "{err}");
    assert!(Store::open_read_only(&path).is_err());
}

/// `events` and `event_json` are views; a write to them is refused with the reason, not silently dropped.
#[test]
fn a_write_to_the_events_view_is_refused_with_the_reason() {
    let (_dir, path) = store_path();
    let mut store = Store::open(&path, &StoreOptions::default()).expect("open");
    store.insert(&sample_events()).expect("insert");
    let conn = rusqlite::Connection::open(&path).expect("writer connection");
    for sql in ["DELETE FROM events", "UPDATE events SET pid = 1", "DELETE FROM event_json"] {
        let err = conn.execute(sql, []).expect_err("must fail");
        assert!(err.to_string().contains("only the store writes"), "{sql}: {err}");
    }
    assert_eq!(count(&store, "SELECT count(*) FROM events"), 7);
}
