//! Keystroke policy through the real binary: `ringwatch policy check` names the line of every mistake in the
//! `keystrokes` section (bad regex, unknown user, ...) and exits 2, and says whether capture is on.

mod common;

use common::{assert_policy_check_errors, policy_check_ok, temp_dir};

#[test]
fn bad_keystroke_sections_exit_2_naming_the_line() {
    let dir = temp_dir("keys-policy-check");
    let cases = [
        (
            "bad-regex",
            "keystrokes:\n  enabled: true\n  alert_patterns:\n    - 'AKIA[0-9A-Z]{16}'\n    - 'card (\\d+'\n"
                .to_owned(),
            ":5: keystrokes.alert_patterns[1]: invalid regex `card (\\d+`",
        ),
        (
            "bad-regex-mapping",
            "keystrokes:\n  alert_patterns:\n    - id: aws\n      pattern: '[A-Z'\n".to_owned(),
            ":4: keystrokes.alert_patterns[0].pattern: invalid regex `[A-Z`",
        ),
        (
            "unknown-user",
            "keystrokes:\n  enabled: true\n  users: [root, no-such-user-rw-test]\n".to_owned(),
            ":3: keystrokes.users[1]: unknown user `no-such-user-rw-test` (not in /etc/passwd)",
        ),
        (
            "unknown-group",
            "keystrokes:\n  enabled: true\n  groups:\n    - no-such-group-rw-test\n".to_owned(),
            ":4: keystrokes.groups[0]: unknown group `no-such-group-rw-test` (not in /etc/group)",
        ),
        (
            "bad-flush",
            "keystrokes:\n  idle_flush: soon\n".to_owned(),
            ":2: keystrokes.idle_flush: `soon` is not a duration",
        ),
        ("bad-enabled", "keystrokes:\n  enabled: maybe\n".to_owned(), ":2: keystrokes.enabled: expected true or false"),
        (
            "unknown-field",
            "keystrokes:\n  enabled: true\n  record_passwords: true\n".to_owned(),
            ":3: keystrokes.record_passwords: unknown field",
        ),
    ];
    assert_policy_check_errors(dir.path(), cases);
}

#[test]
fn a_valid_keystroke_section_checks_ok_and_says_capture_is_on() {
    let dir = temp_dir("keys-policy-ok");
    let text = policy_check_ok(
        dir.path(),
        "keys.yaml",
        "keystrokes:\n  enabled: true\n  users: [root]\n  groups: [root]\n  ttys: [\"pts/*\", tty1]\n  idle_flush: 500ms\n  \
         retention: 7d\n  alert_patterns:\n    - '\\b4[0-9]{12}(?:[0-9]{3})?\\b'\n    - { id: aws-key, pattern: 'AKIA[0-9A-Z]{16}' }\n",
    );
    assert!(
        text.contains(
            "keystrokes: capture ON for 1 user(s), 1 group(s), terminals pts/*, tty1; echo-off redaction on; idle flush \
             500ms; 2 DLP pattern(s); retention 604800s"
        ),
        "{text}"
    );

    let text = policy_check_ok(dir.path(), "off.yaml", "keystrokes:\n  enabled: false\n  alert_patterns: ['x+']\n");
    assert!(text.contains("keystrokes: capture off"));
}
