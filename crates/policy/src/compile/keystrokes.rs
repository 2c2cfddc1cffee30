//! The `keystrokes` section of the policy compiler: capture switch and scope (users, groups, terminals),
//! redaction, idle flush, retention and the DLP `alert_patterns` (see [`crate::keystroke`]).

use std::time::Duration;

use ringwatch_core::compiled::KeystrokePlan;

use super::Compiler;
use crate::error::ProblemKind;
use crate::keystroke::{DEFAULT_DLP_ID_PREFIX, Dlp, KeystrokeSettings};
use crate::pattern::CmdlineSet;
use crate::units::parse_duration;
use crate::yaml::{Node, Value};

/// Fields of the `keystrokes` section.
const KEYSTROKES_FIELDS: &str = "enabled, users, groups, ttys, redact_echo_off, idle_flush, alert_patterns, retention";
/// Longest `idle_flush`: partial input waits at most this long.
const MAX_IDLE_FLUSH: Duration = Duration::from_secs(3600);

impl Compiler<'_> {
    /// The `keystrokes` section.
    pub(super) fn keystrokes(&mut self, node: &Node) -> KeystrokeSettings {
        let mut plan = KeystrokePlan::default();
        let mut patterns = Vec::new();
        let entries = self.section_entries(node, "keystrokes", KEYSTROKES_FIELDS);
        if entries.is_empty() {
            return KeystrokeSettings::default();
        }
        for (key, value) in entries {
            let f = format!("keystrokes.{}", key.name);
            match key.name.as_str() {
                "enabled" => plan.enabled = self.flag(value, &f).unwrap_or(false),
                "redact_echo_off" => plan.redact_echo_off = self.flag(value, &f).unwrap_or(true),
                "users" => {
                    if self.not_empty(value, &f, "users") {
                        plan.uids = self.users(value, &f).unwrap_or_default();
                    }
                }
                "groups" => {
                    if self.not_empty(value, &f, "groups") {
                        plan.gids = self.groups(value, &f);
                    }
                }
                "ttys" => {
                    if self.not_empty(value, &f, "ttys") {
                        plan.ttys = self.ttys(value, &f);
                    }
                }
                "idle_flush" => {
                    if let Some(d) = self.duration(value, &f) {
                        if d > MAX_IDLE_FLUSH {
                            self.invalid(value, &f, "at most 1h: partial input would wait longer than that");
                        } else {
                            plan.idle_flush = d;
                        }
                    }
                }
                "retention" => plan.retention = self.duration(value, &f),
                "alert_patterns" => patterns = self.alert_patterns(value, &f),
                _ => self.unknown_field(key, &f, KEYSTROKES_FIELDS),
            }
        }
        let dlp = Dlp::new(&patterns).unwrap_or_else(|e| {
            self.invalid(node, "keystrokes.alert_patterns", e);
            Dlp::default()
        });
        plan.alert_patterns = patterns;
        KeystrokeSettings { plan, dlp }
    }

    /// `true` or `false`.
    pub(super) fn flag(&mut self, node: &Node, field: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            other => {
                self.invalid(node, field, format!("expected true or false, found {}", other.kind()));
                None
            }
        }
    }

    /// False (with a problem) for an explicit empty list, which would read as "everyone" although it says "no one".
    fn not_empty(&mut self, node: &Node, field: &str, what: &str) -> bool {
        if matches!(&node.value, Value::Seq(items) if items.is_empty()) {
            self.invalid(node, field, format!("empty list; leave `{what}` out to capture every one"));
            return false;
        }
        true
    }

    /// Group names resolved to gids.
    fn groups(&mut self, node: &Node, field: &str) -> Vec<u32> {
        let mut gids = Vec::new();
        for (f, item) in self.items(node, field).unwrap_or_default() {
            match &item.value {
                Value::Str(name) => match self.users.gid(name) {
                    Some(gid) if !gids.contains(&gid) => gids.push(gid),
                    Some(_) => {}
                    None => {
                        let message = format!("unknown group `{name}` (not in {})", self.users.group_source());
                        self.invalid(item, &f, message);
                    }
                },
                other => self.invalid(item, &f, format!("expected a group name, found {}", other.kind())),
            }
        }
        gids
    }

    /// Terminal globs as `/dev` names them without the prefix (`pts/*`, `tty1`).
    fn ttys(&mut self, node: &Node, field: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (f, item, text) in self.strings(node, field, "a terminal such as pts/* or tty1").unwrap_or_default() {
            if let Some(rest) = text.strip_prefix("/dev/") {
                let message = format!("write terminals without `/dev/`: `{rest}`");
                self.invalid(item, &f, message);
                continue;
            }
            if text.is_empty() || text.starts_with('/') {
                self.invalid(item, &f, format!("`{text}` is not a terminal name (e.g. pts/*, pts/3, tty1)"));
                continue;
            }
            match super::build_glob(text) {
                Ok(_) if !out.iter().any(|t| t == text) => out.push(text.to_owned()),
                Ok(_) => {}
                Err(e) => self.invalid(item, &f, e),
            }
        }
        out
    }

    /// A duration such as `2s`, `500ms` or `7d`.
    fn duration(&mut self, node: &Node, field: &str) -> Option<Duration> {
        match &node.value {
            Value::Str(s) => parse_duration(s).map_err(|e| self.invalid(node, field, e)).ok(),
            Value::Int(n) => {
                self.invalid(node, field, format!("`{n}` has no unit; write e.g. `{n}s`, `{n}ms` or `{n}d`"));
                None
            }
            other => {
                self.invalid(node, field, format!("expected a duration such as `2s`, found {}", other.kind()));
                None
            }
        }
    }

    /// `alert_patterns`: regexes, or `{ id, pattern }` mappings; ids default to `keystroke-dlp-N` (1-based).
    fn alert_patterns(&mut self, node: &Node, field: &str) -> Vec<(String, String)> {
        let Value::Seq(items) = &node.value else {
            let message =
                format!("expected a list of regexes or {{ id, pattern }} mappings, found {}", node.value.kind());
            self.invalid(node, field, message);
            return Vec::new();
        };
        let mut out = Vec::new();
        for (j, item) in items.iter().enumerate() {
            let f = format!("{field}[{j}]");
            let (id, pattern, pattern_node) = match &item.value {
                Value::Str(p) => {
                    let id = format!("{DEFAULT_DLP_ID_PREFIX}{}", j + 1);
                    (self.claim_id(item, &f, id), p.clone(), item)
                }
                Value::Map(entries) => {
                    let mut id = None;
                    let mut pattern = None;
                    for (key, value) in entries {
                        match key.name.as_str() {
                            "id" => id = Some(value),
                            "pattern" => pattern = Some(value),
                            _ => self.unknown_field(key, &format!("{f}.{}", key.name), "id, pattern"),
                        }
                    }
                    let id = match id {
                        Some(n) => self.id(n, &format!("{f}.id")),
                        None => {
                            let id = format!("{DEFAULT_DLP_ID_PREFIX}{}", j + 1);
                            self.claim_id(item, &f, id)
                        }
                    };
                    let Some(p) = pattern else {
                        let message = "missing; expected `pattern: REGEX`";
                        self.report(item.pos, &format!("{f}.pattern"), ProblemKind::MissingField, message);
                        continue;
                    };
                    let Value::Str(text) = &p.value else {
                        let message = format!("expected a regex, found {}", p.value.kind());
                        self.invalid(p, &format!("{f}.pattern"), message);
                        continue;
                    };
                    (id, text.clone(), p)
                }
                other => {
                    let message = format!("expected a regex or {{ id, pattern }}, found {}", other.kind());
                    self.invalid(item, &f, message);
                    continue;
                }
            };
            let pattern_field = if matches!(item.value, Value::Map(_)) { format!("{f}.pattern") } else { f.clone() };
            if let Err(e) = CmdlineSet::check(&pattern) {
                self.invalid(pattern_node, &pattern_field, e);
                continue;
            }
            if regex::Regex::new(&pattern).is_ok_and(|r| r.is_match("")) {
                let message = format!("`{pattern}` matches empty text, so it would alert on every keystroke event");
                self.invalid(pattern_node, &pattern_field, message);
                continue;
            }
            if let Some(id) = id {
                out.push((id, pattern));
            }
        }
        out
    }

    /// Registers a generated id, reporting a clash with a rule id.
    fn claim_id(&mut self, node: &Node, field: &str, id: String) -> Option<String> {
        if let Some(first) = self.seen_ids.get(&id) {
            let message =
                format!("the default id `{id}` of this pattern is already used at line {first}; give it an `id`");
            self.report(node.pos, field, ProblemKind::DuplicateId, message);
            return None;
        }
        self.seen_ids.insert(id.clone(), node.pos.line);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::compile;
    use super::*;
    use crate::error::Problem;
    use crate::users::UserDb;

    fn users() -> UserDb {
        UserDb::from_passwd("root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n")
            .with_groups("root:x:0:\ndev:x:1500:alice\n")
    }

    fn problems(text: &str) -> Vec<Problem> {
        compile(text, "k.yaml", &users()).expect_err("rejected")
    }

    #[test]
    fn a_full_section_compiles() {
        let text = "keystrokes:
  enabled: true
  users: [alice, root]
  groups: [dev]
  ttys: [\"pts/*\", tty1]
  redact_echo_off: false
  idle_flush: 500ms
  retention: 7d
  alert_patterns:
    - '\\b4[0-9]{12}(?:[0-9]{3})?\\b'
    - { id: aws-key, pattern: 'AKIA[0-9A-Z]{16}' }
    - 'password=\\S+'
";
        let k = compile(text, "k.yaml", &users()).expect("valid").keystrokes;
        let p = &k.plan;
        assert!(p.enabled && !p.redact_echo_off);
        assert_eq!((p.uids.as_slice(), p.gids.as_slice()), (&[1000, 0][..], &[1500][..]));
        assert_eq!(p.ttys, vec!["pts/*".to_owned(), "tty1".to_owned()]);
        assert_eq!(p.idle_flush, Duration::from_millis(500));
        assert_eq!(p.retention, Some(Duration::from_secs(7 * 86_400)));
        let ids: Vec<&str> = p.alert_patterns.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(ids, ["keystroke-dlp-1", "aws-key", "keystroke-dlp-3"]);
        assert_eq!(k.dlp.first_match("key AKIAABCDEFGHIJKLMNOP"), Some("aws-key"));
    }

    #[test]
    fn capture_is_off_unless_enabled_and_redaction_on_by_default() {
        for text in ["", "rules: []\n", "keystrokes:\n", "keystrokes:\n  users: [alice]\n"] {
            let p = compile(text, "k.yaml", &users()).expect("valid").keystrokes.plan;
            assert!(!p.enabled && p.redact_echo_off, "{text:?}");
            assert_eq!(p.idle_flush, Duration::from_secs(2));
        }
    }

    #[test]
    fn section_errors_name_line_and_field() {
        let text = "keystrokes:
  enabled: yes please
  users: [alice, mallory]
  groups: [nogroup-here]
  ttys: [/dev/pts/1, \"pts/[\"]
  idle_flush: 2
  retention: forever
  alert_patterns:
    - 'card (\\d+'
    - { id: dup, pattern: 'x+' }
    - { id: dup, pattern: 'y+' }
    - { pattern: '.*' }
    - { id: nopattern }
  colour: red
";
        let got: Vec<(u32, String)> = problems(text).into_iter().map(|p| (p.line, p.field)).collect();
        assert_eq!(
            got,
            vec![
                (2, "keystrokes.enabled".to_owned()),
                (3, "keystrokes.users[1]".to_owned()),
                (4, "keystrokes.groups[0]".to_owned()),
                (5, "keystrokes.ttys[0]".to_owned()),
                (5, "keystrokes.ttys[1]".to_owned()),
                (6, "keystrokes.idle_flush".to_owned()),
                (7, "keystrokes.retention".to_owned()),
                (9, "keystrokes.alert_patterns[0]".to_owned()),
                (11, "keystrokes.alert_patterns[2].id".to_owned()),
                (12, "keystrokes.alert_patterns[3].pattern".to_owned()),
                (13, "keystrokes.alert_patterns[4].pattern".to_owned()),
                (14, "keystrokes.colour".to_owned()),
            ]
        );
        let all = problems(text);
        let msg = |field: &str| all.iter().find(|p| p.field == field).map(|p| p.to_string()).unwrap_or_default();
        assert!(msg("keystrokes.users[1]").starts_with("k.yaml:3: keystrokes.users[1]: unknown user `mallory`"));
        assert!(msg("keystrokes.groups[0]").contains("unknown group `nogroup-here`"));
        assert!(msg("keystrokes.alert_patterns[0]").contains("invalid regex `card (\\d+`"));
        assert!(msg("keystrokes.alert_patterns[3].pattern").contains("matches empty text"));
        assert!(msg("keystrokes.idle_flush").contains("no unit"));
    }

    #[test]
    fn empty_scope_lists_and_id_clashes_are_refused() {
        let p = problems("keystrokes:\n  users: []\n");
        assert!(p[0].message.contains("leave `users` out"), "{p:?}");
        let p = problems(
            "rules:\n  - id: keystroke-dlp-1\n    domain: process\n    match: { exe: /a }\n    action: alert\nkeystrokes:\n  alert_patterns: ['x+']\n",
        );
        assert_eq!((p[0].line, p[0].field.as_str()), (7, "keystrokes.alert_patterns[0]"));
        assert!(p[0].message.contains("already used at line 2"), "{p:?}");
        let p = problems("keystrokes:\n  idle_flush: 2h\n");
        assert!(p[0].message.contains("at most 1h"), "{p:?}");
    }
}
