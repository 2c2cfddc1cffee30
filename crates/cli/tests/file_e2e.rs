//! End to end through the real binary: `ringwatch run` with only the kernel file monitor reports a create with the
//! acting process's exe, and does not report its own output file.

mod common;

use std::time::Duration;

use common::{Agent, backend_available, temp_dir, token};

#[test]
fn kernel_file_mode_reports_a_create_with_the_process_exe_and_not_its_own_output() {
    if !backend_available("file", "fanotify") {
        return;
    }
    let dir = temp_dir("e2e-file");
    let agent = Agent::start(dir.path(), &["--mode", "all=off,file=kernel", "--duration", "60"]);
    let tok = token("file");
    let path = std::fs::canonicalize(dir.path()).expect("canonical dir").join(&tok);
    let path = path.to_str().expect("utf8").to_owned();
    // The shell stays alive a moment, so the pipeline reads its exe from /proc while it still exists.
    let status = std::process::Command::new("/bin/sh")
        .current_dir(dir.path())
        .args(["-c", &format!(": > {tok}; sleep 1")])
        .status()
        .expect("sh runs");
    assert!(status.success());
    let events = agent.wait_for(Duration::from_secs(10), |e| e["domain"] == "file" && e["file"]["path"] == path);
    let creates: Vec<_> = events.iter().filter(|e| e["file"]["path"] == path && e["activity"] == "create").collect();
    assert_eq!(creates.len(), 1, "one create event for {path}");
    let e = creates[0];
    let sh = std::fs::canonicalize("/bin/sh").expect("/bin/sh resolves");
    assert_eq!(e["process"]["exe"], sh.to_str().expect("utf8"), "the creating shell: {e}");
    assert_eq!(e["backend"]["mode"], "kernel");
    assert_eq!(e["backend"]["source"], "fanotify");
    assert_eq!(e["class_uid"], 1001);
    assert!(e["file"]["inode"].is_u64() && e["file"]["dev"].is_u64(), "inode and dev: {e}");
    let (status, events) = agent.stop();
    assert!(status.success(), "agent exits 0 on SIGTERM: {status}");
    let start = events.iter().find(|e| e["activity"] == "start").expect("start event");
    assert!(start["sensor"]["message"].as_str().is_some_and(|m| m.contains("file/fanotify")), "{start}");
    let out = agent_out(dir.path());
    assert!(
        !events.iter().any(|e| e["domain"] == "file" && e["file"]["path"] == out),
        "the agent's own output file is excluded"
    );
}

fn agent_out(dir: &std::path::Path) -> String {
    std::fs::canonicalize(dir.join("events.jsonl")).expect("out file").to_str().expect("utf8").to_owned()
}
