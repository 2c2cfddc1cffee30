//! End to end through the real binary: the agent in each process mode sees execs, enforces kill rules, stops
//! cleanly, and survives garbage on its hook socket.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Agent, backend_available, copy_true, execs_with, hook_library, sh_status, temp_dir, token};

/// The hook library when the preload backend can run here; `None` (after saying why) otherwise.
fn preload_hook() -> Option<PathBuf> {
    if !backend_available("process", "preload") {
        return None;
    }
    let lib = hook_library();
    if lib.is_none() {
        eprintln!("SKIP: libringwatch_hook.so not built next to the binary");
    }
    lib
}

/// `sh_status` with the hook library injected and pointed at the agent's socket.
fn hooked_sh_status(cmd: &str, lib: &Path, agent: &Agent) -> i32 {
    let socket = agent.socket.display().to_string();
    sh_status(cmd, &[("LD_PRELOAD", lib.to_str().expect("utf8")), ("RINGWATCH_HOOK_SOCKET", socket.as_str())])
}

fn kill_policy(dir: &Path) -> String {
    let path = dir.join("policy.yaml");
    let blocked = dir.join("blocked");
    fs::write(
        &path,
        format!(
            "rules:\n  - id: no-blocked-exec\n    domain: process\n    match: {{ exe: \"{}/**\" }}\n    action: kill\n",
            blocked.display()
        ),
    )
    .expect("write policy");
    path.to_str().expect("utf8").to_owned()
}

#[test]
fn kernel_mode_reports_one_exec_with_argv_and_parent_and_detaches_on_sigterm() {
    if !backend_available("process", "ebpf") {
        return;
    }
    let dir = temp_dir("e2e-kernel");
    let agent = Agent::start(dir.path(), &["--mode", "all=off,process=kernel"]);
    let tok = token("echo");
    let status = sh_status(&format!("/bin/echo {tok} >/dev/null"), &[]);
    assert_eq!(status, 0);
    let events = agent.wait_for(Duration::from_secs(5), |e| !execs_with(std::slice::from_ref(e), &tok).is_empty());
    let execs = execs_with(&events, &tok);
    assert_eq!(execs.len(), 1, "exactly one exec event: {execs:?}");
    let e = execs[0];
    assert_eq!(e["backend"]["mode"], "kernel");
    assert_eq!(e["trusted"], true);
    assert_eq!(e["process"]["cmdline"], serde_json::json!(["/bin/echo", tok]));
    assert!(e["process"]["parent_guid"].is_string(), "parent guid filled: {e}");
    assert!(!e["process"]["ancestry"].as_array().expect("ancestry").is_empty());
    let (status, events) = agent.stop();
    assert!(status.success(), "agent exits 0 on SIGTERM: {status}");
    assert!(events.iter().any(|e| e["domain"] == "sensor" && e["activity"] == "stop"));
    let progs = std::process::Command::new("bpftool").args(["prog", "show"]).output().expect("bpftool runs");
    let progs = String::from_utf8_lossy(&progs.stdout);
    for name in ["handle_exec", "handle_fork", "handle_exit"] {
        assert!(!progs.contains(name), "{name} still loaded after stop:\n{progs}");
    }
}

#[test]
fn exec_from_blocked_dir_is_killed_in_kernel_mode() {
    if !backend_available("process", "ebpf") {
        return;
    }
    let dir = temp_dir("e2e-kill");
    let policy = kill_policy(dir.path());
    let blocked = copy_true(dir.path(), "blocked/true");
    let allowed = copy_true(dir.path(), "allowed/true");
    let agent = Agent::start(dir.path(), &["--mode", "all=off,process=kernel", "--policy", &policy]);
    assert_eq!(sh_status(&blocked.display().to_string(), &[]), 137, "SIGKILL at exec");
    assert_eq!(sh_status(&allowed.display().to_string(), &[]), 0, "other programs still run");
    let events = agent.wait_for(Duration::from_secs(5), |e| e["action"] == "killed");
    let killed: Vec<_> = events.iter().filter(|e| e["action"] == "killed").collect();
    assert_eq!(killed.len(), 1, "{killed:?}");
    assert_eq!(killed[0]["rule"], "no-blocked-exec");
    assert_eq!(killed[0]["process"]["exe"], blocked.display().to_string());
    agent.stop();
}

#[test]
fn exec_from_blocked_dir_is_refused_by_the_preload_hook() {
    let Some(lib) = preload_hook() else { return };
    let dir = temp_dir("e2e-deny");
    let policy = kill_policy(dir.path());
    let blocked = copy_true(dir.path(), "blocked/true");
    let agent = Agent::start(dir.path(), &["--mode", "all=off,process=preload", "--policy", &policy]);
    assert_eq!(hooked_sh_status(&blocked.display().to_string(), &lib, &agent), 126, "EACCES from execve");
    assert_eq!(hooked_sh_status("/bin/true", &lib, &agent), 0, "allowed programs still run");
    let events = agent.wait_for(Duration::from_secs(5), |e| e["action"] == "denied");
    let denied: Vec<_> = events.iter().filter(|e| e["action"] == "denied").collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["rule"], "no-blocked-exec");
    assert_eq!(denied[0]["trusted"], false);
    agent.stop();
}

#[test]
fn proc_connector_mode_kills_from_user_space_and_reports_the_delay() {
    if !backend_available("process", "proc_connector") {
        return;
    }
    let dir = temp_dir("e2e-pc");
    let policy = kill_policy(dir.path());
    let blocked = dir.path().join("blocked/sleep");
    fs::create_dir_all(blocked.parent().expect("parent")).expect("mkdir");
    fs::copy("/bin/sleep", &blocked).expect("copy sleep");
    let agent = Agent::start(dir.path(), &["--mode", "all=off,process=proc_connector", "--policy", &policy]);
    // A program that lives long enough for an after-the-fact kill: the gap is what this mode cannot close.
    assert_eq!(sh_status(&format!("{} 10", blocked.display()), &[]), 137);
    let events = agent.wait_for(Duration::from_secs(5), |e| e["action"] == "killed");
    let killed = events.iter().find(|e| e["action"] == "killed").expect("a killed event");
    assert_eq!(killed["backend"]["source"], "proc_connector");
    assert!(killed["enforcement_delay_us"].as_u64().is_some(), "delay reported: {killed}");
    agent.stop();
}

#[test]
fn agent_keeps_running_when_a_hook_sends_garbage() {
    let Some(lib) = preload_hook() else { return };
    let dir = temp_dir("e2e-garbage");
    let agent = Agent::start(dir.path(), &["--mode", "all=off,process=preload"]);
    for garbage in [&b"\0\0\0\0"[..], &[0xff; 300][..], b"RWHK but not really"] {
        let sock = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        let addr = nix::sys::socket::UnixAddr::new(&agent.socket).expect("addr");
        nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&sock), &addr).expect("connect");
        let mut f = fs::File::from(sock);
        let _ = f.write_all(garbage);
    }
    let tok = token("after-garbage");
    assert_eq!(hooked_sh_status(&format!("/bin/echo {tok} >/dev/null"), &lib, &agent), 0);
    let events = agent.wait_for(Duration::from_secs(5), |e| !execs_with(std::slice::from_ref(e), &tok).is_empty());
    assert_eq!(execs_with(&events, &tok).len(), 1, "a valid request after garbage is still served");
    let (status, events) = agent.stop();
    assert!(status.success());
    let malformed: u64 = events
        .iter()
        .filter(|e| e["activity"] == "drop" && e["sensor"]["message"].as_str().is_some_and(|m| m.contains("malformed")))
        .filter_map(|e| e["sensor"]["count"].as_u64())
        .sum();
    assert!(malformed >= 3, "garbage is counted, not ignored: {malformed}");
}

#[test]
fn default_mode_picks_the_kernel_backend_and_stops_after_duration() {
    if !backend_available("process", "ebpf") {
        return;
    }
    let dir = temp_dir("e2e-default");
    let out = dir.path().join("events.jsonl");
    let status = common::ringwatch()
        .args(["run", "--duration", "1", "--out"])
        .arg(&out)
        .arg("--hook-socket")
        .arg(dir.path().join("hook.sock"))
        .status()
        .expect("agent runs");
    assert!(status.success(), "{status}");
    let events = common::read_events(&out);
    let start = events.iter().find(|e| e["activity"] == "start").expect("a start event");
    let message = start["sensor"]["message"].as_str().expect("message");
    assert!(message.contains("process/kernel"), "best = kernel here: {message}");
    assert!(!message.contains("process/proc_connector"), "no user fallback when the kernel started: {message}");
    assert!(events.iter().any(|e| e["activity"] == "stop"));
}
