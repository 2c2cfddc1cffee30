//! The CLI contract: probe output, policy validation errors, exit codes for bad input and missing privilege.

mod common;

use common::{policy_check, policy_check_ok, run, temp_dir};
use serde_json::Value;

#[test]
fn probe_lists_all_eight_domain_mode_pairs_and_exits_0() {
    let out = run(&["probe", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let rows: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    for domain in ["process", "file", "network", "keystroke"] {
        for mode in ["kernel", "user"] {
            assert!(
                rows.iter().any(|r| r["domain"] == domain && r["mode"] == mode),
                "probe has no {domain}/{mode} row: {rows:?}"
            );
        }
    }
    assert!(rows.iter().all(|r| r["detail"].as_str().is_some_and(|d| !d.is_empty())), "every row says why");
    let table = run(&["probe"]);
    assert_eq!(table.status.code(), Some(0));
    // Every backend is built now (issue #5 finished the network ones): the table names each, e.g. sock_diag.
    assert!(String::from_utf8_lossy(&table.stdout).contains("sock_diag"));
}

#[test]
fn malformed_policy_exits_2_naming_the_line() {
    let dir = temp_dir("policy");
    let out = policy_check(
        dir.path(),
        "bad.yaml",
        "rules:\n  - id: a\n    domain: process\n    match: { exe: [/bin/x\n    action: kill\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:"), "error names the file and line: {err}");
}

#[test]
fn unknown_policy_field_exits_2_naming_field_and_line() {
    let dir = temp_dir("policy");
    let text = "rules:\n  - id: a\n    domain: process\n    match: { exe: /bin/x }\n    actoin: kill\n";
    let out = policy_check(dir.path(), "unknown.yaml", text);
    let path = dir.path().join("unknown.yaml");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":5:") && err.contains("actoin"), "names line 5 and the field: {err}");
    // `run` refuses the same policy before doing anything else.
    let out = run(&["run", "--policy", path.to_str().expect("utf8"), "--duration", "1"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn valid_policy_checks_ok_and_says_where_it_is_enforced() {
    let dir = temp_dir("policy");
    let text = policy_check_ok(
        dir.path(),
        "ok.yaml",
        "rules:\n  - id: no-tmp\n    domain: process\n    match: { exe: \"/tmp/**\" }\n    action: kill\n",
    );
    assert!(text.contains("no-tmp: kill at exec of /tmp/ enforced in the kernel"));
}

#[test]
fn bad_mode_and_duration_exit_2() {
    for args in [
        ["run", "--mode", "process=fast", "--duration", "1"],
        ["run", "--mode", "disk=kernel", "--duration", "1"],
        ["run", "--mode", "all=best", "--duration", "-1"],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn run_without_root_exits_3_with_a_clear_message() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: needs root to drop to an unprivileged user");
        return;
    }
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", env!("CARGO_BIN_EXE_ringwatch")])
        .args(["run", "--duration", "1"])
        .output()
        .expect("setpriv runs");
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs root"));
}

#[test]
fn the_example_policy_in_the_repo_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policy.yaml");
    let out = run(&["policy", "check", path]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no-tmp-exec: kill at exec of /tmp/, /dev/shm/"));
}
