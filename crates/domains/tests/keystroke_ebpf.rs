//! keystroke/ebpf against the real kernel: interactive bash shells driven through pty pairs the test opens, typed
//! into key by key like a person (readline reads one key per read), checked for exact lines, redaction of echo-off
//! input in the kernel, per-session separation, and silence on terminal output. Needs root; skips otherwise.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::Running;
use common::pty_driver::{PROMPT, PtyDriver};
use ringwatch_core::compiled::KeystrokePlan;
use ringwatch_core::{Activity, Domain, Event, Mode, SourceKind};
use ringwatch_domains::keystroke::ebpf::KeystrokeEbpf;
use ringwatch_domains::keystroke::pty::PtyChild;

/// An interactive bash with a clean rc on a pty the test owns, with extra environment (e.g. what sshd sets for a
/// session).
fn shell_with_env(env: &[(&str, &str)]) -> PtyDriver {
    let mut cmd = Command::new("bash");
    cmd.args(["--norc", "--noprofile", "-i"])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .envs(env.iter().copied());
    PtyDriver::start(&mut cmd)
}

/// [`shell_with_env`] with no extra environment.
fn shell() -> PtyDriver {
    shell_with_env(&[])
}

fn start_or_skip(plan: &KeystrokePlan) -> Option<Running> {
    let probe = KeystrokeEbpf::probe();
    if !probe.available {
        eprintln!("skipping: keystroke/ebpf unavailable here: {}", probe.detail);
        return None;
    }
    let source = KeystrokeEbpf::start(plan).expect("start keystroke/ebpf");
    Some(Running::start(source, 1 << 16))
}

fn enabled() -> KeystrokePlan {
    KeystrokePlan { enabled: true, idle_flush: Duration::from_millis(500), ..Default::default() }
}

fn inputs_on<'a>(events: &'a [Event], tty: &'a str) -> impl Iterator<Item = &'a Event> + 'a {
    events.iter().filter(move |e| {
        e.domain == Domain::Keystroke && e.keystroke.as_ref().and_then(|k| k.tty.as_deref()) == Some(tty)
    })
}

#[test]
fn typed_command_is_one_input_event_with_the_exact_text_and_the_reader() {
    let Some(running) = start_or_skip(&enabled()) else { return };
    let shell = shell();
    shell.type_keys("echo hello-ringwatch\r");
    shell.wait_output("hello-ringwatch", 2);
    let tty = shell.pty.tty.clone();
    let found = running.wait_for(Duration::from_secs(5), |e| {
        e.keystroke.as_ref().is_some_and(|k| k.text == "echo hello-ringwatch" && k.tty.as_deref() == Some(&tty))
    });
    let bash = shell.pid();
    shell.exit();
    let stopped = running.stop();
    let ev = found.expect("an input event with the typed line");
    assert_eq!((ev.domain, ev.activity), (Domain::Keystroke, Activity::Input));
    assert_eq!((ev.backend.mode, ev.backend.source), (Mode::Kernel, SourceKind::Ebpf));
    let k = ev.keystroke.as_ref().expect("keystroke facts");
    assert_eq!((k.keys, k.redacted), (Some(21), false));
    let p = &ev.process;
    assert_eq!(p.pid, bash, "the reading process is the shell");
    assert_eq!(p.uid, nix::unistd::getuid().as_raw());
    assert_eq!(p.session_id, bash, "bash leads its own session on the test's pty");
    assert_eq!(p.tty.as_deref(), Some(tty.as_str()));
    assert!(!p.guid.is_empty() && p.comm == "bash", "{p:?}");
    // The prompt, the echo and the command's output are terminal output: never input.
    let out =
        inputs_on(&stopped.events, &tty).map(|e| e.keystroke.as_ref().map(|k| k.text.clone())).collect::<Vec<_>>();
    assert!(out.iter().all(|t| !t.as_deref().unwrap_or("").contains("ready$")), "{out:?}");
    assert_eq!(stopped.losses.get("keystroke/ebpf").map(|l| l.1).unwrap_or(0), 0, "no drops");
}

#[test]
fn read_s_password_is_redacted_in_the_kernel_and_never_leaves_it() {
    let Some(running) = start_or_skip(&enabled()) else { return };
    let shell = shell();
    let tty = shell.pty.tty.clone();
    shell.type_keys("read -s -p 'pw: ' secret_var; echo got-${#secret_var}\r");
    shell.wait_output("pw: ", 1);
    // `read -s` switches the terminal to canonical mode with ECHO off, then reads one line.
    thread::sleep(Duration::from_millis(200));
    shell.type_keys("Sup3rS3cretPw\r");
    shell.wait_output("got-13", 1);
    let redacted = running.wait_for(Duration::from_secs(5), |e| {
        e.keystroke.as_ref().is_some_and(|k| k.redacted && k.tty.as_deref() == Some(&tty))
    });
    shell.exit();
    let stopped = running.stop();
    let ev = redacted.expect("a redacted input event");
    let k = ev.keystroke.as_ref().expect("keystroke facts");
    assert_eq!((k.text.as_str(), k.keys), ("", Some(14)), "length only: 13 characters and the Enter");
    let json: String = stopped.events.iter().map(|e| serde_json::to_string(e).expect("serialize")).collect();
    assert!(!json.contains("Sup3rS3cretPw") && !json.contains("S3cret"), "the password reached user space");
    // The command that asked for it is captured in clear.
    assert!(inputs_on(&stopped.events, &tty).any(|e| {
        e.keystroke.as_ref().is_some_and(|k| k.text == "read -s -p 'pw: ' secret_var; echo got-${#secret_var}")
    }));
}

#[test]
fn two_concurrent_sessions_are_captured_separately() {
    let Some(running) = start_or_skip(&enabled()) else { return };
    let one = shell();
    let two = shell();
    // Interleave keys of the two sessions so a shared buffer would mix them.
    let (a, b) = ("echo first-session-aaa\r", "echo second-session-bbb\r");
    for (ka, kb) in a.chars().zip(b.chars().chain(std::iter::repeat('\0'))) {
        one.type_keys(&ka.to_string());
        if kb != '\0' {
            two.type_keys(&kb.to_string());
        }
    }
    two.type_keys(&b[a.len()..]);
    one.wait_output("first-session-aaa", 2);
    two.wait_output("second-session-bbb", 2);
    let (tty1, tty2) = (one.pty.tty.clone(), two.pty.tty.clone());
    assert_ne!(tty1, tty2);
    let got = |tty: &str, text: &str| {
        let (tty, text) = (tty.to_owned(), text.to_owned());
        running.wait_for(Duration::from_secs(5), move |e| {
            e.keystroke.as_ref().is_some_and(|k| k.tty.as_deref() == Some(tty.as_str()) && k.text == text)
        })
    };
    let e1 = got(&tty1, "echo first-session-aaa").expect("session one's line on its own tty");
    let e2 = got(&tty2, "echo second-session-bbb").expect("session two's line on its own tty");
    assert_eq!((e1.process.pid, e2.process.pid), (one.pid(), two.pid()));
    assert_ne!(e1.process.session_id, e2.process.session_id);
    one.exit();
    two.exit();
    running.stop();
}

#[test]
fn big_output_to_the_terminal_is_not_input() {
    let Some(running) = start_or_skip(&enabled()) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("big.txt");
    let line = "0123456789abcdefghijklmnopqrstuvwxyz-output-not-input\n";
    std::fs::write(&big, line.repeat(200_000)).expect("write 10 MB");
    let shell = shell();
    let tty = shell.pty.tty.clone();
    shell.type_keys(&format!("cat {}; echo cat-done\r", big.display()));
    shell.wait_output("cat-done", 2);
    shell.exit();
    let stopped = running.stop();
    let texts: Vec<String> =
        inputs_on(&stopped.events, &tty).filter_map(|e| e.keystroke.as_ref().map(|k| k.text.clone())).collect();
    assert!(texts.iter().any(|t| t.starts_with("cat ")), "the typed command is captured: {texts:?}");
    assert!(texts.iter().all(|t| !t.contains("output-not-input")), "output captured as input: {texts:?}");
    assert!(texts.len() <= 3, "only the typed lines (cat, exit): {texts:?}");
}

#[test]
fn uid_filter_in_the_kernel_skips_other_users() {
    // Capture only a uid nobody here uses: the root shell's input must not appear.
    let plan = KeystrokePlan { uids: vec![64_999], ..enabled() };
    let Some(running) = start_or_skip(&plan) else { return };
    let shell = shell();
    let tty = shell.pty.tty.clone();
    shell.type_keys("echo filtered-out\r");
    shell.wait_output("filtered-out", 2);
    shell.exit();
    let stopped = running.stop();
    assert_eq!(inputs_on(&stopped.events, &tty).count(), 0, "uid filter let input through");
}

#[test]
fn partial_input_is_flushed_after_the_idle_timeout() {
    let Some(running) = start_or_skip(&enabled()) else { return };
    let shell = shell();
    let tty = shell.pty.tty.clone();
    shell.type_keys("echo half-typed");
    let flushed = running.wait_for(Duration::from_secs(5), |e| {
        e.keystroke.as_ref().is_some_and(|k| k.tty.as_deref() == Some(tty.as_str()) && k.text == "echo half-typed")
    });
    // ^C discards the half-typed line; wait for the new prompt so `exit` is not typed into a shell still busy.
    shell.type_keys("\x03");
    shell.wait_output(PROMPT, 2);
    shell.exit();
    running.stop();
    assert!(flushed.is_some(), "partial line flushed after 500 ms idle");
}

#[test]
fn readv_on_a_terminal_is_captured_too() {
    let Some(running) = start_or_skip(&enabled()) else { return };
    if Command::new("python3").arg("-c").arg("pass").status().map(|s| !s.success()).unwrap_or(true) {
        eprintln!("skipping: python3 (for a readv(2) reader) is not installed");
        running.stop();
        return;
    }
    // A canonical-mode reader (the pty's default: ICANON and ECHO on) that uses readv(2) instead of read(2).
    let mut cmd = Command::new("python3");
    cmd.args(["-c", "import os; b = bytearray(64); n = os.readv(0, [b]); print('readv-got', n)"]);
    let mut pty = PtyChild::spawn(&mut cmd, None).expect("python3 on a pty");
    let tty = pty.tty.clone();
    thread::sleep(Duration::from_millis(300));
    (&pty.master).write_all(b"via-readv-line\r").expect("type a line");
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = (&pty.master).read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert!(pty.child.wait().expect("python3 exits").success());
    assert!(String::from_utf8_lossy(&out).contains("readv-got 15"), "{}", String::from_utf8_lossy(&out));
    let found = running.wait_for(Duration::from_secs(5), |e| {
        e.keystroke.as_ref().is_some_and(|k| k.tty.as_deref() == Some(tty.as_str()) && k.text == "via-readv-line")
    });
    running.stop();
    let ev = found.expect("the line read with readv");
    assert_eq!(ev.keystroke.and_then(|k| k.keys), Some(15));
}

#[test]
fn ssh_sessions_carry_the_client_address_from_the_session_environment() {
    let Some(running) = start_or_skip(&enabled()) else { return };
    // What sshd puts in a session's environment (no sshd here: the shell gets the same variable).
    let shell = shell_with_env(&[("SSH_CONNECTION", "192.0.2.7 50022 192.0.2.1 22")]);
    let tty = shell.pty.tty.clone();
    shell.type_keys("echo over-ssh\r");
    shell.wait_output("over-ssh", 2);
    let found = running.wait_for(Duration::from_secs(5), |e| {
        e.keystroke.as_ref().is_some_and(|k| k.tty.as_deref() == Some(tty.as_str()) && k.text == "echo over-ssh")
    });
    shell.exit();
    running.stop();
    let ev = found.expect("the typed line");
    assert_eq!(ev.keystroke.and_then(|k| k.remote).as_deref(), Some("192.0.2.7:50022"));
}
