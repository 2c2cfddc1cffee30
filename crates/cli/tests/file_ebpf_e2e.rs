//! End to end through the real binary: `ringwatch run --mode all=off,file=ebpf` reports an open the kernel refused
//! (EACCES) with the refused process's exe, and `probe` says which syscall tracepoints are in use.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Agent, backend_available, run, temp_dir, token};

#[test]
fn refused_open_is_reported_with_errno_and_the_process_exe() {
    if !backend_available("file", "ebpf") {
        return;
    }
    let dir = temp_dir("e2e-file-ebpf");
    let tok = token("secret");
    let secret = std::fs::canonicalize(dir.path()).expect("canonical dir").join(&tok);
    std::fs::write(&secret, "root only").expect("write secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod secret");
    let path = secret.to_str().expect("utf8").to_owned();
    let agent = Agent::start(dir.path(), &["--mode", "all=off,file=ebpf", "--duration", "60"]);
    // As nobody, the shell's own redirect is refused (on `read`, a regular builtin: a failed redirect on a special
    // builtin such as `:` would end the shell); it stays alive a moment so the pipeline reads its exe.
    let status = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "/bin/sh", "-c"])
        .arg(format!("read x < {path} 2>/dev/null; sleep 1; exit 3"))
        .env_remove("LD_LIBRARY_PATH")
        .status()
        .expect("setpriv runs");
    assert_eq!(status.code(), Some(3), "the shell ran on after the refused redirect");
    let events = agent.wait_for(Duration::from_secs(10), |e| e["domain"] == "file" && e["file"]["path"] == path);
    let refused: Vec<_> = events.iter().filter(|e| e["file"]["path"] == path).collect();
    assert_eq!(refused.len(), 1, "one event for the refused open: {refused:?}");
    let e = refused[0];
    assert_eq!(e["activity"], "open");
    assert_eq!(e["file"]["error"], "EACCES", "{e}");
    assert_eq!(e["file"]["flags"], 0, "O_RDONLY: {e}");
    assert_eq!(e["action"], "observed", "the kernel refused, not ringwatch");
    assert_eq!(e["backend"]["mode"], "kernel");
    assert_eq!(e["backend"]["source"], "ebpf");
    assert_eq!(e["process"]["uid"], 65534);
    let sh = std::fs::canonicalize("/bin/sh").expect("/bin/sh resolves");
    assert_eq!(e["process"]["exe"], sh.to_str().expect("utf8"), "the refused shell: {e}");
    let (status, events) = agent.stop();
    assert!(status.success(), "agent exits 0 on SIGTERM: {status}");
    let start = events.iter().find(|e| e["activity"] == "start").expect("start event");
    assert!(start["sensor"]["message"].as_str().is_some_and(|m| m.contains("file/ebpf")), "{start}");
    assert!(!start["sensor"]["message"].as_str().is_some_and(|m| m.contains("file/fanotify")), "{start}");
}

#[test]
fn probe_lists_the_syscall_tracepoints_in_use() {
    if !backend_available("file", "ebpf") {
        return;
    }
    let out = run(&["probe", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("\"file\"") && l.contains("\"ebpf\"")).expect("probe lists file/ebpf");
    assert!(line.contains("syscall tracepoints: openat, openat2"), "{line}");
    assert!(line.contains("EACCES, EPERM, EROFS, ETXTBSY"), "{line}");
}
