//! End to end through the real binary: `ringwatch run --policy` with the user-mode file backend (and the process
//! backend on the same hook socket) refuses a file a `domain: file` deny rule protects with `EACCES`, lets every
//! other file through, and reports both as untrusted file events.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Agent, backend_available, hook_library, temp_dir, token};

/// The hook library when the preload backends can run here; `None` (after saying why) otherwise.
fn preload_hook() -> Option<PathBuf> {
    if !backend_available("file", "preload") {
        return None;
    }
    let lib = hook_library();
    if lib.is_none() {
        eprintln!("SKIP: libringwatch_hook.so not built next to the binary");
    }
    lib
}

#[test]
fn user_file_mode_denies_a_protected_file_by_policy_and_reports_the_rest() {
    let Some(lib) = preload_hook() else { return };
    let dir = temp_dir("e2e-file-preload");
    let work = fs::canonicalize(dir.path()).expect("canonical").join("work");
    fs::create_dir(&work).expect("mkdir");
    let secret = work.join("secret");
    fs::write(&secret, "top secret").expect("write");
    let policy = dir.path().join("policy.yaml");
    fs::write(
        &policy,
        format!(
            "rules:\n  - id: protect-secret\n    domain: file\n    \
             match: {{ path: {}, activity: open }}\n    action: deny\n",
            secret.display()
        ),
    )
    .expect("write policy");
    let agent = Agent::start(
        dir.path(),
        &["--mode", "all=off,process=preload,file=preload", "--policy", policy.to_str().expect("utf8")],
    );
    let tok = token("other");
    let out = Command::new("/bin/sh")
        .current_dir(&work)
        .args(["-c", &format!("cat secret; echo rc=$?; echo {tok} > other; cat other; echo x > secret; echo rc=$?")])
        .env("LD_PRELOAD", &lib)
        .env("RINGWATCH_HOOK_SOCKET", &agent.socket)
        .output()
        .expect("sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout, format!("rc=1\n{tok}\nrc=2\n"), "stderr: {stderr}");
    assert_eq!(stderr.matches("Permission denied").count(), 2, "{stderr}");
    assert_eq!(fs::read_to_string(&secret).expect("read"), "top secret", "the protected file was not touched");

    let other = work.join("other").to_str().expect("utf8").to_owned();
    let secret_path = secret.to_str().expect("utf8").to_owned();
    // The last call of the script: sh's truncating open of the protected file.
    let events = agent.wait_for(Duration::from_secs(10), |e| {
        e["domain"] == "file" && e["file"]["path"] == secret_path && e["activity"] == "write"
    });
    let file_events: Vec<_> = events.iter().filter(|e| e["domain"] == "file").collect();
    let denied: Vec<_> = file_events.iter().filter(|e| e["file"]["path"] == secret_path).collect();
    assert_eq!(denied.len(), 2, "cat's open and sh's truncating open: {file_events:#?}");
    for e in &denied {
        assert_eq!(e["action"], "denied", "{e}");
        assert_eq!(e["rule"], "protect-secret", "{e}");
        assert_eq!(e["trusted"], false);
        assert_eq!((e["backend"]["mode"].as_str(), e["backend"]["source"].as_str()), (Some("user"), Some("preload")));
    }
    assert_eq!(denied[0]["activity"], "open");
    assert_eq!(denied[1]["activity"], "write", "the truncating open keeps its own activity");
    let allowed: Vec<_> = file_events.iter().filter(|e| e["file"]["path"] == other).collect();
    let acts: Vec<_> = allowed.iter().map(|e| (e["activity"].as_str(), e["action"].as_str())).collect();
    assert_eq!(acts, vec![(Some("create"), Some("observed")), (Some("open"), Some("observed"))], "{allowed:#?}");
    // The process backend shares the socket: cat's execs are there too.
    assert!(
        events.iter().any(|e| e["domain"] == "process" && e["activity"] == "exec" && e["process"]["comm"] == "cat"),
        "exec events from process/preload"
    );
    let (status, events) = agent.stop();
    assert!(status.success(), "agent exits 0 on SIGTERM: {status}");
    let start = events.iter().find(|e| e["activity"] == "start").expect("start event");
    let msg = start["sensor"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("file/preload") && msg.contains("process/preload"), "{msg}");
    assert!(!dir.path().join("hook.sock").exists(), "the shared socket is removed on exit");
}
