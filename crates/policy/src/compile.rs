//! The policy compiler: walks the YAML tree of [`crate::yaml`], checks every field, and turns each rule into a
//! [`Rule`] with precompiled matchers. Every problem is collected (with its line and field path) instead of
//! stopping at the first, so `ringwatch policy check` lists them all in one run.
//!
//! A rule with any problem is dropped, and the policy as a whole is rejected when any rule has a problem: a
//! half-loaded security policy is worse than a refused one.

use std::collections::HashMap;

use ringwatch_core::{Activity, Domain};

use crate::error::{Problem, ProblemKind};
use crate::pattern::{CmdlineSet, PathPattern, PathSet, build_glob};
use crate::rule::{Conditions, Enforcement, Rule, RuleAction};
use crate::users::UserDb;
use crate::yaml::{self, Key, Node, Pos, Value};

/// Fields of a rule.
const RULE_FIELDS: &str = "id, domain, description, match, action";
/// Fields of a process `match` block.
const MATCH_FIELDS: &str = "exe, cmdline, parent_exe, user, uid, activity, not";
/// Fields of a process `not` block.
const NOT_FIELDS: &str = "exe, cmdline, parent_exe, user, uid";
/// Rule id alphabet, for messages.
const ID_CHARS: &str = "letters, digits, `_`, `.` and `-`";
/// The hint given wherever a rule has no condition.
const MATCH_ALL_HINT: &str = "to match every process say so: `match: { exe: \"/**\" }`";

/// Compiles a policy text. `origin` names the file in problems.
pub(crate) fn compile(text: &str, origin: &str, users: &UserDb) -> Result<Vec<Rule>, Vec<Problem>> {
    let mut c = Compiler { origin, users, problems: Vec::new(), seen_ids: HashMap::new() };
    let doc = match yaml::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            c.report(e.pos, "", ProblemKind::Syntax, format!("YAML syntax error: {}", e.message));
            return Err(c.problems);
        }
    };
    let rules = c.document(&doc);
    if c.problems.is_empty() {
        Ok(rules)
    } else {
        c.problems.sort_by_key(|p| p.line);
        Err(c.problems)
    }
}

struct Compiler<'a> {
    origin: &'a str,
    users: &'a UserDb,
    problems: Vec<Problem>,
    /// id -> line of its first use.
    seen_ids: HashMap<String, u32>,
}

/// A parsed `match` (or `not`) block.
#[derive(Default)]
struct Block {
    conditions: Conditions,
    activities: Option<Vec<Activity>>,
    negated: Option<Conditions>,
    /// How many condition fields were written (valid or not); zero means "matches everything".
    condition_fields: usize,
}

impl Compiler<'_> {
    fn report(&mut self, pos: Pos, field: &str, kind: ProblemKind, message: impl Into<String>) {
        self.problems.push(Problem {
            origin: self.origin.to_owned(),
            line: pos.line,
            column: pos.column,
            field: field.to_owned(),
            kind,
            message: message.into(),
        });
    }

    fn invalid(&mut self, node: &Node, field: &str, message: impl Into<String>) {
        self.report(node.pos, field, ProblemKind::InvalidValue, message);
    }

    fn unknown_field(&mut self, key: &Key, field: &str, expected: &str) {
        let message = format!("unknown field `{}`; expected one of {expected}", key.name);
        self.report(key.pos, field, ProblemKind::UnknownField, message);
    }

    fn document(&mut self, doc: &Node) -> Vec<Rule> {
        let mut rules = Vec::new();
        match &doc.value {
            Value::Null => {}
            Value::Map(entries) => {
                for (key, value) in entries {
                    match key.name.as_str() {
                        "rules" => rules = self.rules(value),
                        "keystrokes" | "sigma" => {
                            let message = format!("the `{}` section is not supported yet", key.name);
                            self.report(key.pos, &key.name, ProblemKind::Unsupported, message);
                        }
                        _ => self.unknown_field(key, &key.name, "rules (keystrokes and sigma are reserved)"),
                    }
                }
            }
            other => {
                let message = format!("a policy is a mapping with a `rules` list, found {}", other.kind());
                self.invalid(doc, "", message);
            }
        }
        rules
    }

    fn rules(&mut self, node: &Node) -> Vec<Rule> {
        match &node.value {
            Value::Null => Vec::new(),
            Value::Seq(items) => items.iter().enumerate().filter_map(|(i, item)| self.rule(i, item)).collect(),
            other => {
                self.invalid(node, "rules", format!("expected a list of rules, found {}", other.kind()));
                Vec::new()
            }
        }
    }

    fn rule(&mut self, index: usize, node: &Node) -> Option<Rule> {
        let path = format!("rules[{index}]");
        let Value::Map(entries) = &node.value else {
            let message = format!("expected a rule (a mapping with {RULE_FIELDS}), found {}", node.value.kind());
            self.invalid(node, &path, message);
            return None;
        };
        let problems_before = self.problems.len();
        let mut fields: [Option<&Node>; 5] = [None; 5];
        for (key, value) in entries {
            let slot = match key.name.as_str() {
                "id" => 0,
                "domain" => 1,
                "description" => 2,
                "match" => 3,
                "action" => 4,
                _ => {
                    self.unknown_field(key, &format!("{path}.{}", key.name), RULE_FIELDS);
                    continue;
                }
            };
            fields[slot] = Some(value);
        }
        let [id_node, domain_node, description_node, match_node, action_node] = fields;

        let id = match id_node {
            Some(n) => self.id(n, &format!("{path}.id")),
            None => {
                let message = "missing; every rule needs a unique id";
                self.report(node.pos, &format!("{path}.id"), ProblemKind::MissingField, message);
                None
            }
        };
        let description = description_node.and_then(|n| match &n.value {
            Value::Str(s) => Some(s.clone()),
            Value::Null => None,
            other => {
                self.invalid(n, &format!("{path}.description"), format!("expected text, found {}", other.kind()));
                None
            }
        });
        let domain = match domain_node {
            Some(n) => self.domain(n, &format!("{path}.domain"))?,
            None => {
                let message = "missing; expected `process` (the only domain implemented so far)";
                self.report(node.pos, &format!("{path}.domain"), ProblemKind::MissingField, message);
                return None;
            }
        };

        let action = match action_node {
            Some(n) => self.action(n, &format!("{path}.action")),
            None => {
                let message = "missing; expected observe, alert, kill or deny";
                self.report(node.pos, &format!("{path}.action"), ProblemKind::MissingField, message);
                None
            }
        };
        let block = match match_node {
            Some(n) => self.match_block(n, &format!("{path}.match")),
            None => {
                let message = format!("missing; a rule must say what it matches ({MATCH_ALL_HINT})");
                self.report(node.pos, &format!("{path}.match"), ProblemKind::MissingField, message);
                None
            }
        };

        let activities = block.as_ref().and_then(|b| b.activities.clone()).unwrap_or_else(|| vec![Activity::Exec]);
        if let (Some(action), Some(n)) = (action, action_node)
            && action.is_enforcing()
            && activities.contains(&Activity::Exit)
        {
            let message =
                format!("`{action}` cannot apply to `exit` events (the process is already gone); use `alert`");
            self.invalid(n, &format!("{path}.action"), message);
        }

        if self.problems.len() > problems_before {
            return None;
        }
        let (id, action, block) = (id?, action?, block?);
        Some(Rule {
            id,
            description,
            domain,
            action,
            activities,
            when: block.conditions,
            unless: block.negated,
            line: node.pos.line,
            enforcement: Enforcement::NotEnforcing,
        })
    }

    fn id(&mut self, node: &Node, field: &str) -> Option<String> {
        let id = match &node.value {
            Value::Str(s) => s.clone(),
            Value::Int(n) if *n >= 0 => n.to_string(),
            other => {
                self.invalid(node, field, format!("expected a name made of {ID_CHARS}, found {}", other.kind()));
                return None;
            }
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
            self.invalid(node, field, format!("invalid id `{id}`; use only {ID_CHARS}"));
            return None;
        }
        if let Some(first) = self.seen_ids.get(&id) {
            let message = format!("duplicate id `{id}`; first used at line {first}");
            self.report(node.pos, field, ProblemKind::DuplicateId, message);
            return None;
        }
        self.seen_ids.insert(id.clone(), node.pos.line);
        Some(id)
    }

    /// The rule's domain when it is implemented; `None` (with a problem reported) otherwise.
    fn domain(&mut self, node: &Node, field: &str) -> Option<Domain> {
        let name = match &node.value {
            Value::Str(s) => s.as_str(),
            other => {
                self.invalid(node, field, format!("expected a domain name, found {}", other.kind()));
                return None;
            }
        };
        match name {
            "process" => Some(Domain::Process),
            "file" | "network" | "keystroke" => {
                let message = format!("domain `{name}` is not supported yet (only `process` is implemented)");
                self.report(node.pos, field, ProblemKind::Unsupported, message);
                None
            }
            _ => {
                self.invalid(
                    node,
                    field,
                    format!("unknown domain `{name}`; expected process, file, network or keystroke"),
                );
                None
            }
        }
    }

    fn action(&mut self, node: &Node, field: &str) -> Option<RuleAction> {
        let name = match &node.value {
            Value::Str(s) => s.as_str(),
            Value::Map(m) if m.len() == 1 => m[0].0.name.as_str(),
            other => {
                self.invalid(node, field, format!("expected observe, alert, kill or deny, found {}", other.kind()));
                return None;
            }
        };
        match name {
            "observe" => Some(RuleAction::Observe),
            "alert" => Some(RuleAction::Alert),
            "kill" => Some(RuleAction::Kill),
            "deny" => Some(RuleAction::Deny),
            "allow" => {
                let message = "`allow` is not an action; use `observe` for an exception (the first matching rule wins)";
                self.invalid(node, field, message);
                None
            }
            "block" | "redirect" | "throttle" => {
                let message = format!(
                    "action `{name}` does not apply to the process domain; expected observe, alert, kill or deny"
                );
                self.invalid(node, field, message);
                None
            }
            _ => {
                self.invalid(node, field, format!("unknown action `{name}`; expected observe, alert, kill or deny"));
                None
            }
        }
    }

    fn match_block(&mut self, node: &Node, field: &str) -> Option<Block> {
        let block = self.block(node, field, true)?;
        if block.condition_fields == 0 {
            self.invalid(node, field, format!("no condition; {MATCH_ALL_HINT}"));
            return None;
        }
        Some(block)
    }

    /// A `match` block (`top`) or a `not` block.
    fn block(&mut self, node: &Node, field: &str, top: bool) -> Option<Block> {
        let Value::Map(entries) = &node.value else {
            let message = format!("expected a mapping of conditions ({MATCH_FIELDS}), found {}", node.value.kind());
            self.invalid(node, field, message);
            return None;
        };
        let mut b = Block::default();
        for (key, value) in entries {
            let f = format!("{field}.{}", key.name);
            match key.name.as_str() {
                "exe" => b.conditions.exe = self.paths(value, &f),
                "parent_exe" => b.conditions.parent_exe = self.paths(value, &f),
                "cmdline" => b.conditions.cmdline = self.cmdlines(value, &f),
                "user" => b.conditions.users = self.users(value, &f),
                "uid" => b.conditions.uids = self.uids(value, &f),
                "activity" if top => {
                    b.activities = self.activities(value, &f);
                    continue;
                }
                "not" if top => {
                    if let Some(inner) = self.block(value, &f, false) {
                        if inner.condition_fields == 0 {
                            self.invalid(value, &f, "empty `not` block");
                        }
                        b.negated = Some(inner.conditions);
                    }
                }
                "activity" | "not" => {
                    let message = format!("`{}` cannot be used inside `not`", key.name);
                    self.report(key.pos, &f, ProblemKind::InvalidValue, message);
                    continue;
                }
                _ => {
                    self.unknown_field(key, &f, if top { MATCH_FIELDS } else { NOT_FIELDS });
                    continue;
                }
            }
            b.condition_fields += 1;
        }
        Some(b)
    }

    /// The scalar items of a "value or list of values" field, each with its own field path.
    fn items<'n>(&mut self, node: &'n Node, field: &str) -> Option<Vec<(String, &'n Node)>> {
        match &node.value {
            Value::Seq(items) if items.is_empty() => {
                self.invalid(node, field, "empty list; it would never match");
                None
            }
            Value::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (j, item) in items.iter().enumerate() {
                    let item_field = format!("{field}[{j}]");
                    if matches!(item.value, Value::Seq(_) | Value::Map(_) | Value::Null) {
                        self.invalid(
                            item,
                            &item_field,
                            format!("expected a single value, found {}", item.value.kind()),
                        );
                    } else {
                        out.push((item_field, item));
                    }
                }
                Some(out)
            }
            Value::Map(_) | Value::Null => {
                self.invalid(node, field, format!("expected a value or a list of values, found {}", node.value.kind()));
                None
            }
            _ => Some(vec![(field.to_owned(), node)]),
        }
    }

    /// The string items of a field; non-strings are reported.
    fn strings<'n>(&mut self, node: &'n Node, field: &str, what: &str) -> Option<Vec<(String, &'n Node, &'n str)>> {
        let mut out = Vec::new();
        for (f, item) in self.items(node, field)? {
            match &item.value {
                Value::Str(s) => out.push((f, item, s.as_str())),
                other => self.invalid(item, &f, format!("expected {what}, found {}", other.kind())),
            }
        }
        Some(out)
    }

    fn paths(&mut self, node: &Node, field: &str) -> Option<PathSet> {
        let before = self.problems.len();
        let mut patterns = Vec::new();
        for (f, item, text) in self.strings(node, field, "a path or glob")? {
            match PathPattern::parse(text) {
                Ok(p) => {
                    if let PathPattern::Glob(g) = &p
                        && let Err(e) = build_glob(g)
                    {
                        self.invalid(item, &f, e);
                        continue;
                    }
                    patterns.push(p);
                }
                Err(e) => self.invalid(item, &f, e),
            }
        }
        if self.problems.len() > before {
            return None;
        }
        PathSet::new(patterns).map_err(|e| self.invalid(node, field, e)).ok()
    }

    fn cmdlines(&mut self, node: &Node, field: &str) -> Option<CmdlineSet> {
        let before = self.problems.len();
        let mut patterns = Vec::new();
        for (f, item, text) in self.strings(node, field, "a regex")? {
            match CmdlineSet::check(text) {
                Ok(()) => patterns.push(text.to_owned()),
                Err(e) => self.invalid(item, &f, e),
            }
        }
        if self.problems.len() > before {
            return None;
        }
        CmdlineSet::new(&patterns).map_err(|e| self.invalid(node, field, e)).ok()
    }

    fn users(&mut self, node: &Node, field: &str) -> Option<Vec<u32>> {
        let mut uids = Vec::new();
        for (f, item) in self.items(node, field)? {
            match &item.value {
                Value::Str(name) => match self.users.uid(name) {
                    Some(uid) => uids.push(uid),
                    None => {
                        let message = format!("unknown user `{name}` (not in {})", self.users.source());
                        self.invalid(item, &f, message);
                    }
                },
                Value::Int(_) => self.invalid(item, &f, "expected a user name, found a number; use `uid:` for ids"),
                other => self.invalid(item, &f, format!("expected a user name, found {}", other.kind())),
            }
        }
        Some(uids)
    }

    fn uids(&mut self, node: &Node, field: &str) -> Option<Vec<u32>> {
        let mut uids = Vec::new();
        for (f, item) in self.items(node, field)? {
            match &item.value {
                Value::Int(n) => match u32::try_from(*n) {
                    Ok(uid) => uids.push(uid),
                    Err(_) => self.invalid(item, &f, format!("uid {n} is out of range (0 to 4294967295)")),
                },
                other => self.invalid(item, &f, format!("expected a numeric uid, found {}", other.kind())),
            }
        }
        Some(uids)
    }

    fn activities(&mut self, node: &Node, field: &str) -> Option<Vec<Activity>> {
        let mut out = Vec::new();
        for (f, item, name) in self.strings(node, field, "an activity")? {
            let activity = match name {
                "exec" => Activity::Exec,
                "fork" => Activity::Fork,
                "exit" => Activity::Exit,
                "open" | "create" | "write" | "delete" | "rename" | "chmod" | "connect" | "accept" | "listen"
                | "close" | "send" | "dns" | "input" => {
                    let message =
                        format!("activity `{name}` does not apply to the process domain; expected exec, fork or exit");
                    self.invalid(item, &f, message);
                    continue;
                }
                _ => {
                    self.invalid(item, &f, format!("unknown activity `{name}`; expected exec, fork or exit"));
                    continue;
                }
            };
            if !out.contains(&activity) {
                out.push(activity);
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> UserDb {
        UserDb::from_passwd("root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n")
    }

    fn problems(text: &str) -> Vec<Problem> {
        compile(text, "p.yaml", &users()).expect_err("policy should be rejected")
    }

    /// (line, field, kind) of each problem.
    fn summary(text: &str) -> Vec<(u32, String, ProblemKind)> {
        problems(text).into_iter().map(|p| (p.line, p.field, p.kind)).collect()
    }

    fn one(text: &str) -> Problem {
        let mut p = problems(text);
        assert_eq!(p.len(), 1, "{p:#?}");
        p.remove(0)
    }

    fn rule_with_match(m: &str) -> String {
        format!("rules:\n  - id: r\n    domain: process\n    match: {m}\n    action: kill\n")
    }

    #[test]
    fn a_full_process_rule_compiles() {
        let text = "rules:
  - id: no-tmp-exec
    domain: process
    description: nothing runs from /tmp
    match:
      exe: \"/tmp/**\"
      cmdline: 'curl .*\\| *sh'
      parent_exe: /usr/sbin/sshd
      user: alice
      uid: [1000, 1001]
      activity: [exec, fork]
      not: { exe: [/usr/bin/passwd] }
    action: deny
";
        let rules = compile(text, "p.yaml", &users()).expect("valid");
        let r = &rules[0];
        assert_eq!((r.id.as_str(), r.action, r.line), ("no-tmp-exec", RuleAction::Deny, 2));
        assert_eq!(r.description.as_deref(), Some("nothing runs from /tmp"));
        assert_eq!(r.activities, vec![Activity::Exec, Activity::Fork]);
        assert_eq!(r.when.users(), Some(&[1000][..]));
        assert_eq!(r.when.uids(), Some(&[1000, 1001][..]));
        assert_eq!(r.when.exe().map(|s| s.patterns().to_vec()), Some(vec![PathPattern::DirPrefix("/tmp/".into())]));
        assert!(r.unless.as_ref().and_then(|n| n.exe()).is_some());
    }

    #[test]
    fn empty_files_and_empty_rule_lists_observe_only() {
        for text in ["", "# nothing yet\n", "rules:\n", "rules: []\n"] {
            assert!(compile(text, "p.yaml", &users()).expect("valid").is_empty(), "{text:?}");
        }
    }

    #[test]
    fn malformed_yaml_names_its_line() {
        let p = one("rules:\n  - id: a\n    match: { exe: [/a\n    action: kill\n");
        assert_eq!(p.kind, ProblemKind::Syntax);
        assert!(p.line >= 3, "{p:?}");
        assert!(p.to_string().starts_with(&format!("p.yaml:{}: YAML syntax error: ", p.line)), "{p}");
        let p = one("rules:\n  - id: a\n    id: b\n");
        assert_eq!((p.line, p.kind), (3, ProblemKind::Syntax));
    }

    #[test]
    fn unknown_fields_are_named_at_every_level() {
        let p = one("rulez: []\n");
        assert_eq!((p.line, p.field.as_str(), p.kind), (1, "rulez", ProblemKind::UnknownField));
        assert!(p.message.contains("unknown field `rulez`"), "{p}");

        let p =
            one("rules:\n  - id: a\n    domain: process\n    colour: red\n    match: { exe: /a }\n    action: kill\n");
        assert_eq!((p.line, p.field.as_str(), p.kind), (4, "rules[0].colour", ProblemKind::UnknownField));

        let p = one(&rule_with_match("{ exe: /a, path: /etc/shadow }"));
        assert_eq!((p.line, p.field.as_str(), p.kind), (4, "rules[0].match.path", ProblemKind::UnknownField));

        let p = one(&rule_with_match("{ exe: /a, not: { exe: /b, bogus: 1 } }"));
        assert_eq!(p.field, "rules[0].match.not.bogus");
    }

    #[test]
    fn value_errors_name_line_and_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("{ cmdline: 'curl (' }", "rules[0].match.cmdline", "unclosed group"),
            ("{ exe: \"/usr/{a,b\" }", "rules[0].match.exe", "invalid glob"),
            ("{ exe: nc }", "rules[0].match.exe", "relative path `nc`"),
            ("{ exe: [/usr/bin/a, bin/b] }", "rules[0].match.exe[1]", "relative path `bin/b`"),
            ("{ parent_exe: sshd }", "rules[0].match.parent_exe", "relative path"),
            ("{ user: bob }", "rules[0].match.user", "unknown user `bob`"),
            ("{ user: 1000 }", "rules[0].match.user", "use `uid:`"),
            ("{ uid: -1 }", "rules[0].match.uid", "out of range"),
            ("{ uid: alice }", "rules[0].match.uid", "expected a numeric uid"),
            ("{ exe: [] }", "rules[0].match.exe", "empty list"),
            ("{ exe: { a: b } }", "rules[0].match.exe", "found a mapping"),
            ("{ exe: /a, activity: open }", "rules[0].match.activity", "does not apply to the process domain"),
            ("{ exe: /a, activity: jump }", "rules[0].match.activity", "unknown activity"),
            ("{ not: { exe: /a, activity: exec } }", "rules[0].match.not.activity", "cannot be used inside `not`"),
            ("{ exe: /a, not: {} }", "rules[0].match.not", "empty `not` block"),
            ("{}", "rules[0].match", "no condition"),
            ("{ activity: fork }", "rules[0].match", "no condition"),
            ("/tmp/x", "rules[0].match", "expected a mapping of conditions"),
        ];
        for (m, field, needle) in cases {
            let p = one(&rule_with_match(m));
            assert_eq!((p.line, p.field.as_str()), (4, *field), "{m}: {p}");
            assert!(p.message.contains(needle), "{m}: {p}");
        }
    }

    #[test]
    fn block_style_lists_point_at_the_bad_item() {
        let text = "rules:\n  - id: r\n    domain: process\n    match:\n      exe:\n        - /usr/bin/a\n        - b\n    action: kill\n";
        let p = one(text);
        assert_eq!((p.line, p.column, p.field.as_str()), (7, 11, "rules[0].match.exe[1]"));
    }

    #[test]
    fn actions_and_domains_are_checked() {
        let rule = |domain: &str, action: &str| {
            format!("rules:\n  - id: r\n    domain: {domain}\n    match: {{ exe: /a }}\n    action: {action}\n")
        };
        let p = one(&rule("process", "explode"));
        assert_eq!((p.line, p.field.as_str()), (5, "rules[0].action"));
        assert!(p.message.contains("unknown action `explode`"), "{p}");
        assert!(one(&rule("process", "block")).message.contains("does not apply to the process domain"));
        assert!(one(&rule("process", "{ throttle: 1MiB/s }")).message.contains("`throttle` does not apply"));
        assert!(one(&rule("process", "allow")).message.contains("use `observe`"));

        let p = one(&rule("file", "deny"));
        assert_eq!((p.line, p.field.as_str(), p.kind), (3, "rules[0].domain", ProblemKind::Unsupported));
        assert_eq!(p.message, "domain `file` is not supported yet (only `process` is implemented)");
        let p = one(&rule("printer", "kill"));
        assert_eq!((p.line, p.kind), (3, ProblemKind::InvalidValue));
        assert!(p.message.contains("unknown domain `printer`"), "{p}");
    }

    #[test]
    fn kill_on_exit_is_refused() {
        let p = one(&rule_with_match("{ exe: /a, activity: exit }"));
        assert_eq!((p.line, p.field.as_str()), (5, "rules[0].action"));
    }

    #[test]
    fn ids_are_required_unique_and_well_formed() {
        let text = "rules:
  - id: a
    domain: process
    match: { exe: /a }
    action: kill
  - id: a
    domain: process
    match: { exe: /b }
    action: kill
  - domain: process
    match: { exe: /c }
    action: kill
  - id: 'has space'
    domain: process
    match: { exe: /d }
    action: kill
";
        let s = summary(text);
        assert_eq!(
            s,
            vec![
                (6, "rules[1].id".to_owned(), ProblemKind::DuplicateId),
                (10, "rules[2].id".to_owned(), ProblemKind::MissingField),
                (13, "rules[3].id".to_owned(), ProblemKind::InvalidValue),
            ]
        );
        assert!(problems(text)[0].message.contains("first used at line 2"));
    }

    #[test]
    fn missing_fields_are_reported_at_the_rule() {
        let s = summary("rules:\n  - id: a\n    domain: process\n");
        assert_eq!(
            s,
            vec![
                (2, "rules[0].action".to_owned(), ProblemKind::MissingField),
                (2, "rules[0].match".to_owned(), ProblemKind::MissingField),
            ]
        );
        assert_eq!(summary("rules:\n  - id: a\n")[0].1, "rules[0].domain");
    }

    #[test]
    fn reserved_sections_are_not_silently_ignored() {
        let s = summary("keystrokes:\n  enabled: true\nsigma: [rules/**/*.yml]\nrules: []\n");
        assert_eq!(
            s,
            vec![
                (1, "keystrokes".to_owned(), ProblemKind::Unsupported),
                (3, "sigma".to_owned(), ProblemKind::Unsupported)
            ]
        );
    }

    #[test]
    fn wrong_shapes_at_the_top_are_reported() {
        assert_eq!(one("- a\n- b\n").field, "");
        assert_eq!(one("rules: yes please\n").field, "rules");
        assert_eq!(one("rules:\n  - just a string\n").field, "rules[0]");
    }

    #[test]
    fn every_problem_of_a_file_is_reported_in_file_order() {
        let text = "rules:
  - id: one
    domain: process
    match: { exe: nc, cmdline: '(' }
    action: kill
  - id: two
    domain: network
    match: { dst: 169.254.169.254/32 }
    action: block
  - id: three
    domain: process
    match: { uid: 1000 }
    action: explode
    extra: true
sigma: []
";
        let s = summary(text);
        let lines: Vec<u32> = s.iter().map(|p| p.0).collect();
        assert_eq!(lines, vec![4, 4, 7, 13, 14, 15], "{s:#?}");
        assert_eq!(s[0].1, "rules[0].match.exe");
        assert_eq!(s[1].1, "rules[0].match.cmdline");
    }
}
