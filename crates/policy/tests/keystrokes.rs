//! The `keystrokes` section through the public API: the plan the backends get, and DLP applied by the pipeline
//! stage (masking, alerting, redacted input untouched).

use std::sync::Arc;
use std::time::Duration;

use ringwatch_core::event::KeystrokeInfo;
use ringwatch_core::pipeline::Stage;
use ringwatch_core::proc_table::ProcessTable;
use ringwatch_core::{Action, Activity, Backend, Domain, Event, Mode, SourceKind};
use ringwatch_policy::{Policy, PolicyStage};

const POLICY: &str = r#"
keystrokes:
  enabled: true
  users: [root]
  ttys: ["pts/*"]
  idle_flush: 750ms
  retention: 30d
  alert_patterns:
    - '\b4[0-9]{12}(?:[0-9]{3})?\b'
    - { id: aws-key, pattern: 'AKIA[0-9A-Z]{16}' }
"#;

fn input(text: &str, redacted: bool) -> Event {
    let mut ev =
        Event::new(Domain::Keystroke, Activity::Input, Backend { mode: Mode::Kernel, source: SourceKind::Ebpf });
    ev.keystroke = Some(KeystrokeInfo {
        text: text.to_owned(),
        keys: Some(u32::try_from(text.len()).unwrap_or(u32::MAX)),
        redacted,
        tty: Some("pts/3".into()),
        ..KeystrokeInfo::default()
    });
    ev
}

fn text(ev: &Event) -> &str {
    ev.keystroke.as_ref().map(|k| k.text.as_str()).unwrap_or_default()
}

#[test]
fn the_plan_carries_the_section() {
    let p = Policy::from_str(POLICY, "k.yaml").expect("valid");
    let plan = p.keystroke_plan();
    assert!(plan.enabled && plan.redact_echo_off);
    assert_eq!(plan.uids, vec![0]);
    assert_eq!(plan.ttys, vec!["pts/*".to_owned()]);
    assert_eq!(plan.idle_flush, Duration::from_millis(750));
    assert_eq!(plan.retention, Some(Duration::from_secs(30 * 86_400)));
    assert_eq!(plan.alert_patterns[0].0, "keystroke-dlp-1");
    assert_eq!(plan.alert_patterns[1], ("aws-key".to_owned(), "AKIA[0-9A-Z]{16}".to_owned()));
    assert!(!Policy::observe_only().keystroke_plan().enabled, "off unless the policy enables it");
}

#[test]
fn the_stage_masks_matches_and_alerts_with_the_pattern_id() {
    let mut stage = PolicyStage::new(Arc::new(Policy::from_str(POLICY, "k.yaml").expect("valid")));
    let table = ProcessTable::empty();
    let mut ev = input("echo 4111111111111111 AKIAABCDEFGHIJKLMNOP", false);
    stage.apply(&mut ev, &table);
    assert_eq!((ev.action, ev.rule.as_deref()), (Action::Alerted, Some("keystroke-dlp-1")));
    assert_eq!(text(&ev), format!("echo {} {}", "*".repeat(16), "*".repeat(20)));
    assert!(!serde_json::to_string(&ev).expect("json").contains("4111111111111111"), "the secret is not stored");

    let mut ev = input("aws configure AKIAABCDEFGHIJKLMNOP", false);
    stage.apply(&mut ev, &table);
    assert_eq!((ev.action, ev.rule.as_deref()), (Action::Alerted, Some("aws-key")));

    let mut ev = input("ls -la", false);
    stage.apply(&mut ev, &table);
    assert_eq!((ev.action, ev.rule.as_deref(), text(&ev)), (Action::Observed, None, "ls -la"));

    let mut ev = input("", true);
    stage.apply(&mut ev, &table);
    assert_eq!((ev.action, ev.rule.as_deref()), (Action::Observed, None), "redacted input is never touched");
}

#[test]
fn without_patterns_keystroke_events_pass_unchanged() {
    let mut stage = PolicyStage::new(Arc::new(Policy::observe_only()));
    let mut ev = input("4111111111111111", false);
    stage.apply(&mut ev, &ProcessTable::empty());
    assert_eq!((ev.action, text(&ev)), (Action::Observed, "4111111111111111"));
}
