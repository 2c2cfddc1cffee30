//! Loading policy files from disk: the fixtures in tests/data/ and the errors a user sees for them.

use std::path::{Path, PathBuf};

use ringwatch_core::Domain;
use ringwatch_policy::{Enforcement, Policy, PolicyError, ProblemKind, RuleAction, UserDb};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

#[test]
fn the_design_process_rule_loads() {
    let policy = Policy::load(&data("design_process.yaml")).expect("valid policy");
    let [rule] = policy.rules() else { panic!("one rule: {:?}", policy.rules()) };
    assert_eq!(rule.id(), "no-tmp-exec");
    assert_eq!(rule.domain(), Domain::Process);
    assert_eq!(rule.action(), RuleAction::Kill);
    assert_eq!(rule.enforcement(), &Enforcement::KernelAtExec);
    let list = policy.exec_kill_list();
    assert_eq!(list.rule_ids, vec!["no-tmp-exec".to_owned()]);
    assert_eq!(list.dir_prefixes, vec![("/tmp/".to_owned(), 0)]);
    assert!(!policy.needs_user_space_enforcement());
    assert!(policy.origin().ends_with("design_process.yaml"));
}

#[test]
fn the_full_design_sketch_loads_except_sigma() {
    let path = data("design_sketch.yaml");
    let text = std::fs::read_to_string(&path).expect("fixture");
    let users = UserDb::from_passwd("root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n");
    let err = Policy::from_str_with_users(&text, "design_sketch.yaml", &users).expect_err("sigma is reserved");
    let got: Vec<(u32, &str, ProblemKind)> =
        err.problems().iter().map(|p| (p.line, p.field.as_str(), p.kind)).collect();
    assert_eq!(got, vec![(28, "sigma", ProblemKind::Unsupported)], "{err}");

    // Without the reserved `sigma` line the sketch is a working policy.
    let text = text.replace("sigma: [rules/linux/**/*.yml]\n", "");
    let policy = Policy::from_str_with_users(&text, "design_sketch.yaml", &users).expect("valid");
    let plan = policy.network_plan();
    let ids: Vec<&str> = plan.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["no-metadata", "web-through-proxy", "slow-backup"]);
    assert!(policy.rules()[2..].iter().all(|r| r.enforcement() == &Enforcement::NetworkKernel));
    let keys = policy.keystroke_plan();
    assert!(keys.enabled && keys.redact_echo_off);
    assert_eq!(keys.uids, vec![1000]);
    assert_eq!(keys.alert_patterns.len(), 1);
}

#[test]
fn a_file_with_many_mistakes_reports_them_all() {
    let path = data("many_errors.yaml");
    let err = Policy::load(&path).expect_err("invalid");
    let shown = err.to_string();
    let origin = path.display().to_string();
    let expected = [
        (5, "rules[0].match.exe", "relative path `nc`"),
        (9, "rules[1].match.cmdline", "invalid regex"),
        (13, "rules[2].match.exe", "invalid glob"),
        (18, "rules[3].action", "unknown action `explode`"),
        (20, "rules[4].domain", "unknown domain `printer`"),
        (25, "rules[5].match.activity[1]", "unknown activity `scribble`; expected open, create, write"),
        (27, "rules[6].id", "duplicate id `relative-exe`; first used at line 3"),
        (33, "rules[7].match.user", "unknown user `no-such-user-here`"),
        (37, "rules[8].match", "no condition"),
        (43, "rules[9].severity", "unknown field `severity`"),
        (46, "rules[10].match.dst_port", "unknown field `dst_port`"),
        (48, "colour", "unknown field `colour`"),
    ];
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{shown}");
    for (line, (n, field, reason)) in lines.iter().zip(expected) {
        let prefix = format!("{origin}:{n}: {field}: ");
        assert!(line.starts_with(&prefix), "expected `{prefix}...`, got `{line}`");
        assert!(line.contains(reason), "expected `{reason}` in `{line}`");
    }
}

#[test]
fn a_syntax_error_carries_file_and_line() {
    let path = data("syntax_error.yaml");
    let err = Policy::load(&path).expect_err("invalid");
    let [p] = err.problems() else { panic!("one problem: {err}") };
    assert_eq!((p.line, p.kind), (4, ProblemKind::Syntax), "{err}");
    assert!(err.to_string().starts_with(&format!("{}:4: YAML syntax error: ", path.display())), "{err}");
}

#[test]
fn an_unreadable_file_is_an_io_error() {
    let err = Policy::load(Path::new("/nonexistent/policy.yaml")).expect_err("missing");
    assert!(matches!(err, PolicyError::Io { .. }), "{err:?}");
    assert!(err.to_string().starts_with("/nonexistent/policy.yaml: cannot read policy"), "{err}");
}

#[test]
fn an_empty_file_only_observes() {
    let policy = Policy::load(&data("empty.yaml")).expect("valid");
    assert!(policy.is_observe_only());
    assert!(policy.exec_kill_list().is_empty());
}
