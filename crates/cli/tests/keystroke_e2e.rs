//! Keystrokes through the real binary: `ringwatch run` with a policy that enables keystrokes records what is typed
//! into a pty-driven bash (exact line, enriched user), announces it, keeps a `read -s` password out of the JSON
//! and the store, and alerts on a DLP pattern with the match masked everywhere; without such a policy no keystroke backend starts; `ringwatch session -- bash` records in user
//! mode and exits with the command's status. Needs root; skips when the kernel backend cannot run.

mod common;
#[path = "../../domains/tests/common/pty_driver.rs"]
mod pty_driver;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use common::{Agent, backend_available, read_events, ringwatch, temp_dir};
use pty_driver::PtyDriver;
use serde_json::Value;

const PASSWORD: &str = "Pa55-e2e-Secret-w0rd";
/// A test card number (the Visa test PAN) for the DLP pattern.
const CARD: &str = "4111111111111111";

/// An interactive bash with a clean rc on a pty the test owns.
fn bash() -> PtyDriver {
    let mut cmd = Command::new("bash");
    cmd.args(["--norc", "--noprofile", "-i"]);
    PtyDriver::start(&mut cmd)
}

/// Types a command, then a password at a `read -s` prompt.
fn type_command_and_password(shell: &PtyDriver, marker: &str) {
    shell.type_keys(&format!("echo {marker}\r"));
    shell.wait_output(marker, 2);
    shell.type_keys("read -s -p 'pw: ' pw; echo len-${#pw}\r");
    shell.wait_output("pw: ", 1);
    thread::sleep(Duration::from_millis(200));
    shell.type_keys(&format!("{PASSWORD}\r"));
    shell.wait_output(&format!("len-{}", PASSWORD.len()), 1);
}

fn inputs(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["domain"] == "keystroke" && e["activity"] == "input").collect()
}

/// Every file of a SQLite store (main, WAL, shared memory) as bytes.
fn store_bytes(store: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = store.as_os_str().to_owned();
        p.push(suffix);
        all.extend(fs::read(&p).unwrap_or_default());
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn run_with_keystrokes_enabled_records_lines_announces_itself_and_keeps_passwords_out_of_json_and_store() {
    if !backend_available("keystroke", "ebpf") {
        return;
    }
    let dir = temp_dir("keys-e2e");
    let policy = dir.path().join("keys.yaml");
    fs::write(
        &policy,
        "keystrokes:\n  enabled: true\n  idle_flush: 1s\n  alert_patterns:\n    - { id: card-number, pattern: '4[0-9]{15}' }\n",
    )
    .expect("write policy");
    let store = dir.path().join("events.db");
    let stderr_path = dir.path().join("agent.stderr");
    let agent = Agent::start_with_stderr(
        dir.path(),
        &[
            "--mode",
            "all=off,keystroke=kernel",
            "--policy",
            policy.to_str().expect("utf8"),
            "--store",
            store.to_str().expect("utf8"),
        ],
        &stderr_path,
    );
    let out = agent.out.clone();
    let shell = bash();
    let tty = shell.pty.tty.clone();
    let bash_pid = shell.pty.child.id();
    type_command_and_password(&shell, "hello-ringwatch");
    agent.wait_for(Duration::from_secs(5), |e| e["keystroke"]["redacted"] == true && e["keystroke"]["tty"] == tty);
    // DLP: a card number typed on the command line.
    shell.type_keys(&format!("echo pay {CARD}\r"));
    shell.wait_output(&format!("pay {CARD}"), 2);
    agent.wait_for(Duration::from_secs(5), |e| e["rule"] == "card-number" && e["keystroke"]["tty"] == tty);
    shell.type_keys("exit\r");
    let (status, events) = agent.stop();
    assert!(status.success(), "agent exit: {status}");

    let mine: Vec<&Value> = inputs(&events).into_iter().filter(|e| e["keystroke"]["tty"] == tty).collect();
    let line = mine
        .iter()
        .find(|e| e["keystroke"]["text"] == "echo hello-ringwatch")
        .unwrap_or_else(|| panic!("no input event with the typed line: {mine:?}"));
    assert_eq!(line["backend"]["mode"], "kernel");
    assert_eq!(line["process"]["pid"], bash_pid);
    assert_eq!(line["process"]["user"], "root", "the pipeline enriched the user name");
    assert_eq!(line["process"]["tty"], tty);
    assert!(line["process"]["guid"].as_str().is_some_and(|g| !g.is_empty()));
    let secret = mine.iter().find(|e| e["keystroke"]["redacted"] == true).expect("a redacted event");
    assert_eq!(secret["keystroke"]["keys"], PASSWORD.len() + 1);
    assert_eq!(secret["keystroke"]["text"], "");

    // Announced: a sensor/start event and a stderr line saying what is captured and that passwords are redacted.
    let notice = events
        .iter()
        .find(|e| e["domain"] == "sensor" && e["sensor"]["component"] == "keystroke/ebpf")
        .expect("a keystroke sensor/start event");
    assert!(notice["sensor"]["message"].as_str().is_some_and(|m| m.contains("KEYSTROKE CAPTURE IS ON")));
    let stderr = fs::read_to_string(&stderr_path).expect("agent stderr");
    assert!(stderr.contains("KEYSTROKE CAPTURE IS ON") && stderr.contains("redacted in the kernel"), "{stderr}");

    // The DLP line is alerted with the number masked before any sink saw it.
    let dlp = mine.iter().find(|e| e["rule"] == "card-number").expect("the DLP line");
    assert_eq!(dlp["action"], "alerted");
    assert_eq!(dlp["keystroke"]["text"], format!("echo pay {}", "*".repeat(CARD.len())));

    // The password and the card number are nowhere: not in the JSON lines, not in any file of the store.
    let json = fs::read(&out).expect("out file");
    assert!(!contains(&json, PASSWORD), "password in the JSON");
    assert!(!contains(&json, CARD), "card number in the JSON");
    let db = store_bytes(&store);
    assert!(!db.is_empty(), "the store was written");
    assert!(contains(&db, "hello-ringwatch"), "the store holds the typed line (so the search below means something)");
    assert!(!contains(&db, PASSWORD), "password in the store");
    assert!(!contains(&db, CARD), "card number in the store");
}

#[test]
fn keystroke_capture_is_off_without_a_policy_that_enables_it() {
    if !backend_available("keystroke", "ebpf") {
        return;
    }
    let dir = temp_dir("keys-off");
    // Default mode for keystrokes (best), another domain on so the agent has something to run.
    let agent = Agent::start(dir.path(), &["--mode", "file=off,network=off,process=proc_connector"]);
    let shell = bash();
    shell.type_keys("echo not-recorded\r");
    shell.wait_output("not-recorded", 2);
    thread::sleep(Duration::from_millis(500));
    shell.type_keys("exit\r");
    let (status, events) = agent.stop();
    assert!(status.success());
    assert!(inputs(&events).is_empty(), "keystrokes recorded without a policy: {:?}", inputs(&events));
    let start = events.iter().find(|e| e["domain"] == "sensor" && e["activity"] == "start").expect("start event");
    assert!(!start["sensor"]["message"].as_str().unwrap_or("").contains("keystroke"), "{start}");

    // Asking for the kernel backend explicitly without the policy: refused with exit 3 and the reason.
    let out = ringwatch()
        .args(["run", "--store", "off", "--mode", "all=off,keystroke=kernel", "--duration", "1"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("keystroke capture is off"));
}

#[test]
fn session_records_a_pty_session_in_user_mode_and_exits_with_its_status() {
    let dir = temp_dir("keys-session");
    let out = dir.path().join("session.jsonl");
    let store = dir.path().join("session.db");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringwatch"));
    cmd.args(["session", "--out"])
        .arg(&out)
        .arg("--store")
        .arg(&store)
        .args(["--", "bash", "--norc", "--noprofile", "-i"])
        .stdin(Stdio::null());
    let mut session = PtyDriver::start(&mut cmd);
    type_command_and_password(&session, "via-session");
    session.type_keys("exit 7\r");
    let status = session.pty.child.wait().expect("session exits");
    assert_eq!(status.code(), Some(7), "ringwatch session exits with the command's status");
    // Drain what the pty still holds, then look.
    thread::sleep(Duration::from_millis(200));
    session.output.lock().expect("output lock").clear();

    let events = read_events(&out);
    let typed = inputs(&events);
    let line = typed
        .iter()
        .find(|e| e["keystroke"]["text"] == "echo via-session")
        .unwrap_or_else(|| panic!("no input event with the typed line: {typed:?}"));
    assert_eq!((line["backend"]["mode"].as_str(), line["backend"]["source"].as_str()), (Some("user"), Some("pty")));
    assert!(line["keystroke"]["tty"].as_str().is_some_and(|t| t.starts_with("pts/")));
    assert!(line["process"]["pid"].as_u64().is_some_and(|p| p > 0));
    let secret = typed.iter().find(|e| e["keystroke"]["redacted"] == true).expect("a redacted event");
    assert_eq!(secret["keystroke"]["keys"], PASSWORD.len() + 1);
    assert!(typed.iter().any(|e| e["keystroke"]["text"] == "exit 7"));
    assert!(!contains(&fs::read(&out).expect("out"), PASSWORD), "password in the JSON");
    let db = store_bytes(&store);
    assert!(contains(&db, "via-session"), "the store holds the typed line");
    assert!(!contains(&db, PASSWORD), "password in the store");
}
