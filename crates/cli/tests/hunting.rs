//! Hunting end to end: a real agent stores what a shell script does, then `query`, `tree` and `export` find it;
//! bad SQL, a missing store and an unknown process give clear errors; a corrupt or locked store is reported while
//! the agent keeps streaming JSON lines.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{Agent, backend_available, execs_with, read_events, ringwatch, run, temp_dir, token};
use serde_json::Value;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

/// `ringwatch run` for `secs` with the process kernel backend and `--store db`; returns its output and events.
fn run_agent_briefly(dir: &Path, db: &Path, secs: &str) -> (Output, Vec<Value>) {
    let out = dir.join("events.jsonl");
    let output = ringwatch()
        .args(["run", "--mode", "all=off,process=kernel", "--duration", secs, "--out"])
        .arg(&out)
        .arg("--hook-socket")
        .arg(dir.join("hook.sock"))
        .arg("--store")
        .arg(db)
        .output()
        .expect("agent runs");
    (output, read_events(&out))
}

/// The sensor/error event that says the store is unusable.
fn store_error_event(events: &[Value]) -> Option<&Value> {
    events.iter().find(|e| {
        e["domain"] == "sensor"
            && e["activity"] == "error"
            && e["sensor"]["message"].as_str().is_some_and(|m| m.contains("store"))
    })
}

#[test]
fn a_stored_agent_run_is_found_by_query_tree_and_export() {
    if !backend_available("process", "ebpf") {
        return;
    }
    let dir = temp_dir("hunt");
    let db = dir.path().join("store/events.db");
    let db_arg = db.to_str().expect("utf8");
    let agent = Agent::start(dir.path(), &["--store", db_arg, "--mode", "all=off,process=kernel"]);
    let tok = token("hunt");
    let mut script = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("echo x > f; /bin/true; (sleep 0.1; /bin/echo {tok}) >/dev/null"))
        .current_dir(dir.path())
        .spawn()
        .expect("script runs");
    let script_pid = script.id();
    assert!(script.wait().expect("script exits").success());
    let seen = agent.wait_for(Duration::from_secs(5), |e| !execs_with(std::slice::from_ref(e), &tok).is_empty());
    assert_eq!(execs_with(&seen, &tok).len(), 1, "the agent saw the echo");
    let (status, streamed) = agent.stop();
    assert!(status.success(), "{status}");

    let sql = format!(
        "SELECT pid, exe, cmdline, user FROM processes WHERE activity = 'exec' AND exe LIKE '%/echo' \
         AND cmdline LIKE '%{tok}%'"
    );
    let out = run(&["query", "--store", db_arg, &sql]);
    assert!(out.status.success(), "query: {}", stderr(&out));
    let rows = json_lines(&stdout(&out));
    assert_eq!(rows.len(), 1, "piped output is one JSON object per row: {rows:?}");
    assert_eq!(rows[0]["exe"], "/usr/bin/echo");
    assert_eq!(rows[0]["cmdline"], format!("/bin/echo {tok}"));
    let echo_pid = rows[0]["pid"].as_u64().expect("pid is a number");

    let out = run(&["tree", "--store", db_arg, &script_pid.to_string()]);
    assert!(out.status.success(), "tree: {}", stderr(&out));
    let tree = stdout(&out);
    assert!(tree.contains(&format!("{script_pid} /bin/sh -c echo x > f;")), "the script is the root:\n{tree}");
    assert!(tree.contains("/bin/true"), "child /bin/true:\n{tree}");
    assert!(tree.contains("sleep 0.1"), "grandchild sleep:\n{tree}");
    assert!(tree.contains(&format!("{echo_pid} /bin/echo {tok}")), "the echo:\n{tree}");
    assert!(tree.contains("└─ ") || tree.contains("├─ "), "drawn as a tree:\n{tree}");

    let out = run(&["tree", "--store", db_arg, "--json", &script_pid.to_string()]);
    let tree: Value = serde_json::from_slice(&out.stdout).expect("tree --json is JSON");
    assert_eq!(tree["root"]["process"]["pid"], script_pid);
    assert!(!tree["ancestors"].as_array().expect("ancestors").is_empty(), "the test runner is the parent");

    let out = run(&["export", "--store", db_arg, "--format", "jsonl"]);
    assert!(out.status.success(), "export: {}", stderr(&out));
    let exported: BTreeSet<String> =
        json_lines(&stdout(&out)).iter().map(|e| e["id"].as_str().expect("id").to_owned()).collect();
    let written: BTreeSet<String> = streamed.iter().map(|e| e["id"].as_str().expect("id").to_owned()).collect();
    assert_eq!(exported, written, "the store holds exactly what the agent streamed");
    let out = run(&["export", "--store", db_arg, "--domain", "sensor", "--since", "1h"]);
    let sensor = json_lines(&stdout(&out));
    assert!(!sensor.is_empty() && sensor.iter().all(|e| e["domain"] == "sensor"), "{sensor:?}");
}

#[test]
fn bad_sql_exits_2_with_sqlites_message_and_a_hint() {
    let dir = temp_dir("hunt-badsql");
    let db = dir.path().join("events.db");
    drop(ringwatch_store::Store::open(&db, &ringwatch_store::StoreOptions::default()).expect("create store"));
    let db_arg = db.to_str().expect("utf8");
    let out = run(&["query", "--store", db_arg, "SELEC pid FROM events"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("near \"SELEC\": syntax error"), "SQLite's words: {err}");
    assert!(err.contains("sqlite_master"), "a hint to list tables: {err}");
    let out = run(&["query", "--store", db_arg, "DELETE FROM events"]);
    assert_eq!(out.status.code(), Some(2), "a write is refused: {}", stderr(&out));
    assert!(stderr(&out).contains("readonly"), "{}", stderr(&out));
    let out =
        run(&["query", "--store", db_arg, "--format", "table", "SELECT name FROM sqlite_master WHERE type = 'view'"]);
    assert!(out.status.success());
    for view in ["processes", "files", "network", "dns", "keystrokes", "alerts", "sensor"] {
        assert!(stdout(&out).contains(view), "view {view}:\n{}", stdout(&out));
    }
}

#[test]
fn a_missing_store_or_unknown_process_exits_1_saying_why() {
    let dir = temp_dir("hunt-missing");
    let missing = dir.path().join("nope.db");
    let out = run(&["query", "--store", missing.to_str().expect("utf8"), "SELECT 1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("no event store at") && err.contains("nope.db") && err.contains("--store"), "{err}");
    let db = dir.path().join("events.db");
    drop(ringwatch_store::Store::open(&db, &ringwatch_store::StoreOptions::default()).expect("create store"));
    let out = run(&["tree", "--store", db.to_str().expect("utf8"), "4242"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no events of pid 4242"), "{}", stderr(&out));
}

#[test]
fn a_corrupt_store_is_reported_and_the_agent_keeps_streaming() {
    if !backend_available("process", "ebpf") {
        return;
    }
    let dir = temp_dir("hunt-corrupt");
    let db = dir.path().join("events.db");
    std::fs::write(&db, vec![0x42; 16384]).expect("garbage");
    let (output, events) = run_agent_briefly(dir.path(), &db, "2");
    assert!(output.status.success(), "exits 0 at --duration: {}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains(&db.display().to_string()) && err.contains("move it away"), "clear error: {err}");
    assert!(events.iter().any(|e| e["activity"] == "start"), "events still stream");
    let report = store_error_event(&events).expect("a sensor error event about the store");
    assert!(report["sensor"]["message"].as_str().expect("message").contains("not a usable ringwatch store"));
}

#[test]
fn a_locked_store_is_reported_and_the_agent_keeps_streaming() {
    if !backend_available("process", "ebpf") {
        return;
    }
    let dir = temp_dir("hunt-locked");
    let db = dir.path().join("events.db");
    drop(ringwatch_store::Store::open(&db, &ringwatch_store::StoreOptions::default()).expect("create store"));
    let holder = rusqlite::Connection::open(&db).expect("connection");
    holder.execute_batch("BEGIN EXCLUSIVE;").expect("lock");
    let (output, events) = run_agent_briefly(dir.path(), &db, "3");
    assert!(output.status.success(), "exits 0 at --duration: {}", stderr(&output));
    assert!(stderr(&output).contains("locked by another process"), "clear error: {}", stderr(&output));
    assert!(events.iter().any(|e| e["activity"] == "start"), "events still stream");
    let report = store_error_event(&events).expect("a sensor error event about the store");
    assert!(report["sensor"]["message"].as_str().expect("message").contains("locked"));
    holder.execute_batch("ROLLBACK;").expect("unlock");
}
