//! System-wide injection through /etc/ld.so.preload, tested only inside a private mount namespace with an overlay
//! on /etc, so a bug here can never break the host's own /etc/ld.so.preload.

mod common;

use std::fs;
use std::process::Command;
use std::time::Duration;

use common::{Agent, backend_available, execs_with, hook_library, temp_dir, token};

#[test]
fn installed_hook_reports_processes_without_ld_preload_in_their_environment() {
    if !backend_available("process", "preload") {
        return;
    }
    if hook_library().is_none() {
        eprintln!("SKIP: libringwatch_hook.so not built next to the binary");
        return;
    }
    let host_preload_before = fs::read("/etc/ld.so.preload").ok();
    let dir = temp_dir("hook-install");
    for d in ["upper", "work"] {
        fs::create_dir(dir.path().join(d)).expect("mkdir");
    }
    let agent = Agent::start(dir.path(), &["--mode", "all=off,process=preload"]);
    let tok = token("sysinstall");
    let rw = env!("CARGO_BIN_EXE_ringwatch");
    let script = format!(
        "set -e
         mount -t overlay overlay -o lowerdir=/etc,upperdir={d}/upper,workdir={d}/work /etc
         {rw} hook install
         {rw} hook install            # idempotent
         grep -c libringwatch_hook.so /etc/ld.so.preload
         env -u LD_PRELOAD sh -c '/bin/echo {tok} >/dev/null'
         {rw} hook uninstall
         ! grep -q libringwatch_hook.so /etc/ld.so.preload",
        d = dir.path().display(),
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("RINGWATCH_HOOK_SOCKET", &agent.socket)
        .env_remove("LD_PRELOAD")
        .output()
        .expect("unshare runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "namespace script failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("hook installed") && stdout.contains("hook already installed"), "{stdout}");
    assert!(stdout.lines().any(|l| l.trim() == "1"), "exactly one entry after two installs: {stdout}");
    assert!(stdout.contains("hook removed"), "{stdout}");
    let events = agent.wait_for(Duration::from_secs(5), |e| !execs_with(std::slice::from_ref(e), &tok).is_empty());
    let execs = execs_with(&events, &tok);
    assert_eq!(execs.len(), 1, "the system-wide hook reported the exec: {execs:?}");
    assert_eq!(execs[0]["backend"]["source"], "preload");
    assert_eq!(fs::read("/etc/ld.so.preload").ok(), host_preload_before, "the host's file is untouched");
    agent.stop();
}
