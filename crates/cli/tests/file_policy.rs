//! File policy end to end through the real binary: `ringwatch run --policy P --mode all=off,file=kernel` refuses a
//! protected file's open with EPERM (kernel permission events) and reports it; the agent killed with SIGKILL leaves
//! nothing blocked; `ringwatch policy check` names the line of every bad file rule and exits 2.

mod common;

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Agent, assert_policy_check_errors, backend_available, policy_check_ok, run, temp_dir};

/// True when the file kernel backend can run and its probe reports permission events.
fn permission_events_available() -> bool {
    if !backend_available("file", "fanotify") {
        return false;
    }
    let out = run(&["probe", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("\"file\"") && l.contains("\"fanotify\"")).unwrap_or_default();
    if line.contains("permission events unavailable") {
        eprintln!("SKIP: fanotify permission events unavailable here: {line}");
        return false;
    }
    assert!(line.contains("permission events: FAN_OPEN_PERM"), "probe says whether permission events work: {line}");
    true
}

fn cat(path: &str) -> std::process::Output {
    Command::new("cat").arg(path).output().expect("cat runs")
}

#[test]
fn a_file_deny_rule_refuses_the_open_with_eperm_and_reports_it() {
    if !permission_events_available() {
        return;
    }
    let dir = temp_dir("file-policy");
    let root = fs::canonicalize(dir.path()).expect("canonical");
    let protected = root.join("secret.txt");
    let other = root.join("other.txt");
    fs::write(&protected, "s\n").expect("write");
    fs::write(&other, "o\n").expect("write");
    let protected_s = protected.to_str().expect("utf8").to_owned();
    let policy = root.join("policy.yaml");
    fs::write(
        &policy,
        format!(
            "files:\n  exclude: [\"/var/cache/**\"]\n  max_events_per_pid: 5000\nrules:\n  - id: protect-secret\n    \
             domain: file\n    match: {{ path: \"{protected_s}\", activity: open }}\n    action: deny\n"
        ),
    )
    .expect("write policy");
    let agent = Agent::start(
        dir.path(),
        &["--policy", policy.to_str().expect("utf8"), "--mode", "all=off,file=kernel", "--duration", "60"],
    );
    let o = cat(&protected_s);
    assert!(!o.status.success() && o.stdout.is_empty(), "refused before a byte is read");
    assert!(String::from_utf8_lossy(&o.stderr).contains("Operation not permitted"), "EPERM: {o:?}");
    let o = cat(other.to_str().expect("utf8"));
    assert_eq!(o.stdout, b"o\n", "another file in the same directory opens");
    let events = agent.wait_for(Duration::from_secs(10), |e| e["action"] == "denied");
    let denied = events.iter().find(|e| e["action"] == "denied").expect("a denied event");
    assert_eq!(denied["domain"], "file");
    assert_eq!(denied["activity"], "open");
    assert_eq!(denied["rule"], "protect-secret");
    assert_eq!(denied["file"]["path"], protected_s.as_str());
    assert_eq!(denied["backend"]["source"], "fanotify");
    assert!(denied["process"]["exe"].as_str().is_some_and(|e| e.ends_with("/cat")), "enriched: {denied}");
    let (status, _) = agent.stop();
    assert!(status.success(), "clean stop: {status}");
    assert_eq!(cat(&protected_s).stdout, b"s\n", "after a clean stop the file opens again");
}

#[test]
fn the_agent_killed_with_sigkill_leaves_the_protected_file_openable_within_a_second() {
    if !permission_events_available() {
        return;
    }
    let dir = temp_dir("file-sigkill");
    let root = fs::canonicalize(dir.path()).expect("canonical");
    let protected = root.join("guarded");
    fs::write(&protected, "g\n").expect("write");
    let p = protected.to_str().expect("utf8").to_owned();
    let policy = root.join("policy.yaml");
    fs::write(
        &policy,
        format!("rules:\n  - id: guard\n    domain: file\n    match: {{ path: \"{p}\", activity: open }}\n    action: deny\n"),
    )
    .expect("write policy");
    let agent = Agent::start(
        dir.path(),
        &["--policy", policy.to_str().expect("utf8"), "--mode", "all=off,file=kernel", "--duration", "60"],
    );
    assert!(!cat(&p).status.success(), "the rule is enforced");
    let pid = nix::unistd::Pid::from_raw(agent.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
    let killed = Instant::now();
    loop {
        if cat(&p).stdout == b"g\n" {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(1), "the open succeeds within 1 s of the SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("open succeeded {:?} after SIGKILL", killed.elapsed());
    drop(agent);
}

#[test]
fn bad_file_policies_exit_2_naming_the_line() {
    let dir = temp_dir("file-policy-check");
    let hash = "ab".repeat(32);
    let cases = [
        ("unknown-activity", "rules:\n  - id: a\n    domain: file\n    match:\n      path: /etc/shadow\n      activity: [open, scribble]\n    action: deny\n".to_owned(), ":6: rules[0].match.activity[1]: unknown activity `scribble`"),
        ("bad-glob", "rules:\n  - id: a\n    domain: file\n    match: { path: \"/etc/{a,b\" }\n    action: deny\n".to_owned(), ":4: rules[0].match.path: invalid glob"),
        ("bad-hash", format!("rules:\n  - id: a\n    domain: file\n    match:\n      sha256:\n        - {hash}\n        - 12ab\n    action: deny\n"), ":7: rules[0].match.sha256[1]: `12ab` is not a SHA-256"),
        ("on-timeout", "rules:\n  - id: a\n    domain: file\n    match: { path: /etc/shadow }\n    action: deny\n    on_timeout: alow\n".to_owned(), ":6: rules[0].on_timeout: unknown value `alow`"),
        ("kill", "rules:\n  - id: a\n    domain: file\n    match: { path: /etc/shadow }\n    action: kill\n".to_owned(), ":5: rules[0].action: `kill` does not apply to the file domain"),
        ("trust", "exec_trust:\n  mode: trusted_only\n  allow_paths: [\"/usr/**\", bin]\n".to_owned(), ":3: exec_trust.allow_paths[1]: relative path"),
        ("keystroke", "rules:\n  - id: a\n    domain: keystroke\n    match: { exe: /a }\n    action: alert\n".to_owned(), ":3: rules[0].domain: domain `keystroke` rules are not supported"),
        ("events-unknown", "files:\n  events: [create, scribble]\n".to_owned(), ":2: files.events[1]: unknown activity `scribble`"),
        ("events-empty", "files:\n  events: []\n".to_owned(), ":2: files.events: an empty list would monitor nothing"),
    ];
    assert_policy_check_errors(dir.path(), cases);
}

#[test]
fn a_valid_file_policy_checks_ok_and_says_how_it_is_enforced() {
    let dir = temp_dir("file-policy-ok");
    let text = policy_check_ok(
        dir.path(),
        "ok.yaml",
        "rules:\n  - id: shadow\n    domain: file\n    match: { path: /etc/shadow, activity: open }\n    action: deny\n  \
         - id: etc-writes\n    domain: file\n    match: { path: /etc/, activity: write }\n    action: deny\n\
         exec_trust: { mode: trusted_only, allow_paths: [\"/usr/**\"] }\n",
    );
    assert!(text.contains("shadow: deny on open refused before it happens"), "{text}");
    assert!(text.contains("etc-writes: alerted, not refused"), "{text}");
    assert!(text.contains("exec_trust: trusted_only"), "{text}");
    assert!(text.contains("open: 1 file(s) by inode") && text.contains("exec: every filesystem"), "{text}");
    assert!(!text.contains("file monitor: watches"), "all activities by default: {text}");
    let text = policy_check_ok(dir.path(), "lean.yaml", "files:\n  events: [create, delete, rename]\n");
    assert!(text.contains("file monitor: watches create, delete, rename only (files.events)"), "{text}");
}
