//! The policy compiler: walks the YAML tree of [`crate::yaml`], checks every field, and turns each rule into a
//! [`Rule`] with precompiled matchers, plus the top-level `files`, `exec_trust` and `keystrokes` sections. Every
//! problem is collected (with its line and field path) instead of stopping at the first, so `ringwatch policy check`
//! lists them all in one run. The network conditions and actions are read by `net`, the `keystrokes` section by
//! `keystrokes` (both extend the same [`Compiler`]).
//!
//! A rule with any problem is dropped, and the policy as a whole is rejected when any rule has a problem: a
//! half-loaded security policy is worse than a refused one.

use std::collections::HashMap;
use std::time::Duration;

use ringwatch_core::{Activity, Domain, TimeoutVerdict};

use crate::error::{Problem, ProblemKind};
use crate::file::{EXEC_TRUST_ID, ExecTrust, FileSettings};
use crate::keystroke::KeystrokeSettings;
use crate::network::NetworkSettings;
use crate::pattern::{CmdlineSet, PathPattern, PathSet, build_glob};
use crate::rule::{Conditions, Enforcement, Rule, RuleAction};
use crate::users::UserDb;
use crate::yaml::{self, Key, Node, Pos, Value};

mod keystrokes;
mod net;

/// Fields of a rule.
const RULE_FIELDS: &str = "id, domain, description, match, action, on_timeout, timeout_ms";
/// Fields of a process `match` block.
const MATCH_FIELDS: &str = "exe, cmdline, parent_exe, user, uid, activity, not";
/// Fields of a process `not` block.
const NOT_FIELDS: &str = "exe, cmdline, parent_exe, user, uid";
/// Fields of a file `match` block.
const FILE_MATCH_FIELDS: &str = "path, activity, exe, user, uid, sha256, not";
/// Fields of a file `not` block.
const FILE_NOT_FIELDS: &str = "path, exe, user, uid, sha256";
/// Fields of a network `match` block.
const NET_MATCH_FIELDS: &str = "dst, dst_port, protocol, exe, parent_exe, user, uid, cgroup, host, activity, not";
/// Fields of a network `not` block.
const NET_NOT_FIELDS: &str = "dst, dst_port, protocol, exe, parent_exe, user, uid, cgroup, host";
/// Top-level fields.
const TOP_FIELDS: &str = "rules, files, exec_trust, keystrokes, network (sigma is reserved)";
/// Fields of the `files` section.
const FILES_FIELDS: &str = "exclude, max_events_per_pid, verdict_timeout_ms, events";
/// Fields of the `exec_trust` section.
const EXEC_TRUST_FIELDS: &str = "mode, allow_paths, allow_sha256, on_timeout, timeout_ms";
/// The file activities, in the contract's order.
const FILE_ACTIVITIES: [Activity; 7] = [
    Activity::Open,
    Activity::Create,
    Activity::Write,
    Activity::Delete,
    Activity::Rename,
    Activity::Chmod,
    Activity::Exec,
];
/// Rule id alphabet, for messages.
const ID_CHARS: &str = "letters, digits, `_`, `.` and `-`";
/// The hint given wherever a process rule has no condition.
const MATCH_ALL_HINT: &str = "to match every process say so: `match: { exe: \"/**\" }`";
/// The hint given wherever a file rule has no condition.
const FILE_MATCH_ALL_HINT: &str = "to match every file say so: `match: { path: \"/**\" }`";
/// The hint given wherever a network rule has no condition.
const NET_MATCH_ALL_HINT: &str = "to match all traffic say so: `match: { dst: [0.0.0.0/0, \"::/0\"] }`";
/// Largest `timeout_ms` / `verdict_timeout_ms`: a process waits this long at most for one open.
const MAX_TIMEOUT_MS: i128 = 60_000;

/// What a policy file compiles to.
#[derive(Debug, Default)]
pub(crate) struct Compiled {
    pub rules: Vec<Rule>,
    pub files: FileSettings,
    pub exec_trust: Option<ExecTrust>,
    pub keystrokes: KeystrokeSettings,
    pub network: NetworkSettings,
}

/// Compiles a policy text. `origin` names the file in problems.
pub(crate) fn compile(text: &str, origin: &str, users: &UserDb) -> Result<Compiled, Vec<Problem>> {
    let mut c = Compiler { origin, users, problems: Vec::new(), seen_ids: HashMap::new() };
    let doc = match yaml::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            c.report(e.pos, "", ProblemKind::Syntax, format!("YAML syntax error: {}", e.message));
            return Err(c.problems);
        }
    };
    let compiled = c.document(&doc);
    if c.problems.is_empty() {
        Ok(compiled)
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
    /// The `activity` node, for problems about the activities.
    activity_node: Option<Node>,
    negated: Option<Conditions>,
    /// How many condition fields were written (valid or not); zero means "matches everything".
    condition_fields: usize,
    /// A `sha256` field was written (valid or not), in `match` or in `not`.
    mentions_sha256: bool,
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

    /// The entries of a settings section (`files:`, `network:`, `keystrokes:`): none when it is empty, and none
    /// (with a problem naming `section` and its `fields`) when it is not a mapping.
    pub(super) fn section_entries<'n>(&mut self, node: &'n Node, section: &str, fields: &str) -> &'n [(Key, Node)] {
        match &node.value {
            Value::Null => &[],
            Value::Map(m) => m,
            other => {
                let message = format!("expected a mapping ({fields}), found {}", other.kind());
                self.invalid(node, section, message);
                &[]
            }
        }
    }

    fn unknown_field(&mut self, key: &Key, field: &str, expected: &str) {
        let message = format!("unknown field `{}`; expected one of {expected}", key.name);
        self.report(key.pos, field, ProblemKind::UnknownField, message);
    }

    fn document(&mut self, doc: &Node) -> Compiled {
        let mut out = Compiled::default();
        match &doc.value {
            Value::Null => {}
            Value::Map(entries) => {
                // `exec_trust` reserves its id before the rules are read, wherever it is in the file.
                if entries.iter().any(|(k, _)| k.name == "exec_trust") {
                    self.seen_ids.insert(EXEC_TRUST_ID.to_owned(), 0);
                }
                for (key, value) in entries {
                    match key.name.as_str() {
                        "rules" => out.rules = self.rules(value),
                        "files" => out.files = self.files(value),
                        "exec_trust" => out.exec_trust = self.exec_trust(value),
                        "keystrokes" => out.keystrokes = self.keystrokes(value),
                        "network" => out.network = self.network_settings(value),
                        "sigma" => {
                            let message = format!("the `{}` section is not supported yet", key.name);
                            self.report(key.pos, &key.name, ProblemKind::Unsupported, message);
                        }
                        _ => self.unknown_field(key, &key.name, TOP_FIELDS),
                    }
                }
            }
            other => {
                let message = format!("a policy is a mapping with a `rules` list, found {}", other.kind());
                self.invalid(doc, "", message);
            }
        }
        out
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
        let mut fields: [Option<&Node>; 7] = [None; 7];
        for (key, value) in entries {
            let slot = match key.name.as_str() {
                "id" => 0,
                "domain" => 1,
                "description" => 2,
                "match" => 3,
                "action" => 4,
                "on_timeout" => 5,
                "timeout_ms" => 6,
                _ => {
                    self.unknown_field(key, &format!("{path}.{}", key.name), RULE_FIELDS);
                    continue;
                }
            };
            fields[slot] = Some(value);
        }
        let [id_node, domain_node, description_node, match_node, action_node, on_timeout_node, timeout_node] = fields;

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
                let message = "missing; expected `process`, `file` or `network`";
                self.report(node.pos, &format!("{path}.domain"), ProblemKind::MissingField, message);
                return None;
            }
        };

        let action = match action_node {
            Some(n) => self.action(n, &format!("{path}.action"), domain),
            None => {
                let message = format!("missing; expected {}", expected_actions(domain));
                self.report(node.pos, &format!("{path}.action"), ProblemKind::MissingField, message);
                None
            }
        };
        let block = match match_node {
            Some(n) => self.match_block(n, &format!("{path}.match"), domain),
            None => {
                let hint = match_all_hint(domain);
                let message = format!("missing; a rule must say what it matches ({hint})");
                self.report(node.pos, &format!("{path}.match"), ProblemKind::MissingField, message);
                None
            }
        };

        let default_activities = match domain {
            // Hashes are computed at exec (and at open only when a rule asks for it explicitly).
            Domain::File if block.as_ref().is_some_and(|b| b.mentions_sha256) => vec![Activity::Exec],
            Domain::File => FILE_ACTIVITIES.to_vec(),
            Domain::Network => vec![Activity::Connect, Activity::Send],
            _ => vec![Activity::Exec],
        };
        let activities = block.as_ref().and_then(|b| b.activities.clone()).unwrap_or(default_activities);
        if let (Some(action), Some(n)) = (action, action_node)
            && action.is_enforcing()
            && activities.contains(&Activity::Exit)
        {
            let message =
                format!("`{action}` cannot apply to `exit` events (the process is already gone); use `alert`");
            self.invalid(n, &format!("{path}.action"), message);
        }
        if let Some(b) = &block
            && b.mentions_sha256
            && let Some(a) = activities.iter().find(|a| !matches!(a, Activity::Open | Activity::Exec))
        {
            let at = b.activity_node.as_ref().or(match_node).unwrap_or(node);
            let message = format!(
                "activity `{a}` cannot have a `sha256` condition: a file's hash is only computed at open and exec \
                 (permission events); use `activity: [exec]` or `[open, exec]`"
            );
            self.invalid(at, &format!("{path}.match.activity"), message);
        }

        let on_timeout = match on_timeout_node {
            Some(n) if domain == Domain::File => self.on_timeout(n, &format!("{path}.on_timeout")),
            Some(n) => {
                self.file_only(n, &format!("{path}.on_timeout"));
                None
            }
            None => Some(TimeoutVerdict::Allow),
        };
        let timeout = match timeout_node {
            Some(n) if domain == Domain::File => self.timeout_ms(n, &format!("{path}.timeout_ms")).map(Some),
            Some(n) => {
                self.file_only(n, &format!("{path}.timeout_ms"));
                None
            }
            None => Some(None),
        };

        if self.problems.len() > problems_before {
            return None;
        }
        let (id, action, block, on_timeout, timeout) = (id?, action?, block?, on_timeout?, timeout?);
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
            on_timeout,
            timeout,
        })
    }

    fn file_only(&mut self, node: &Node, field: &str) {
        self.invalid(node, field, "applies to `file` rules only (permission verdicts)");
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
            let message = if *first == 0 {
                format!("the id `{id}` is reserved for the `exec_trust` section")
            } else {
                format!("duplicate id `{id}`; first used at line {first}")
            };
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
            "file" => Some(Domain::File),
            "network" => Some(Domain::Network),
            "keystroke" => {
                let message = "domain `keystroke` rules are not supported; keystroke capture and DLP alerts are \
                               configured in the top-level `keystrokes:` section (enabled, users, groups, ttys, \
                               alert_patterns)";
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

    fn action(&mut self, node: &Node, field: &str, domain: Domain) -> Option<RuleAction> {
        if domain == Domain::Network {
            return self.net_action(node, field);
        }
        let expected = expected_actions(domain);
        let name = match &node.value {
            Value::Str(s) => s.as_str(),
            Value::Map(m) if m.len() == 1 => m[0].0.name.as_str(),
            other => {
                self.invalid(node, field, format!("expected {expected}, found {}", other.kind()));
                return None;
            }
        };
        match name {
            "observe" => Some(RuleAction::Observe),
            "alert" => Some(RuleAction::Alert),
            "kill" if domain == Domain::File => {
                let message = "`kill` does not apply to the file domain; use `deny` (the open or exec fails with \
                               EPERM, the process lives on)";
                self.invalid(node, field, message);
                None
            }
            "kill" => Some(RuleAction::Kill),
            "deny" => Some(RuleAction::Deny),
            "allow" => {
                let message = "`allow` is not an action; use `observe` for an exception (the first matching rule wins)";
                self.invalid(node, field, message);
                None
            }
            "block" | "redirect" | "throttle" => {
                let message = format!("action `{name}` does not apply to the {domain} domain; expected {expected}");
                self.invalid(node, field, message);
                None
            }
            _ => {
                self.invalid(node, field, format!("unknown action `{name}`; expected {expected}"));
                None
            }
        }
    }

    fn on_timeout(&mut self, node: &Node, field: &str) -> Option<TimeoutVerdict> {
        match &node.value {
            Value::Str(s) if s == "allow" => Some(TimeoutVerdict::Allow),
            Value::Str(s) if s == "deny" => Some(TimeoutVerdict::Deny),
            Value::Str(s) => {
                let message = format!(
                    "unknown value `{s}`; expected allow (fail open: allow and alert, the default) or deny (fail \
                     closed)"
                );
                self.invalid(node, field, message);
                None
            }
            other => {
                self.invalid(node, field, format!("expected allow or deny, found {}", other.kind()));
                None
            }
        }
    }

    /// A verdict deadline in milliseconds, 1 to [`MAX_TIMEOUT_MS`].
    fn timeout_ms(&mut self, node: &Node, field: &str) -> Option<Duration> {
        match &node.value {
            Value::Int(n) if (1..=MAX_TIMEOUT_MS).contains(n) => {
                Some(Duration::from_millis(u64::try_from(*n).unwrap_or(1)))
            }
            Value::Int(n) => {
                let message = format!("{n} ms is out of range (1 to {MAX_TIMEOUT_MS}): a process waits this long");
                self.invalid(node, field, message);
                None
            }
            other => {
                self.invalid(node, field, format!("expected milliseconds (a number), found {}", other.kind()));
                None
            }
        }
    }

    fn match_block(&mut self, node: &Node, field: &str, domain: Domain) -> Option<Block> {
        let block = self.block(node, field, true, domain)?;
        if block.condition_fields == 0 {
            let hint = match_all_hint(domain);
            self.invalid(node, field, format!("no condition; {hint}"));
            return None;
        }
        Some(block)
    }

    /// A `match` block (`top`) or a `not` block of a `domain` rule.
    fn block(&mut self, node: &Node, field: &str, top: bool, domain: Domain) -> Option<Block> {
        let file = domain == Domain::File;
        let net = domain == Domain::Network;
        let expected = match (domain, top) {
            (Domain::File, true) => FILE_MATCH_FIELDS,
            (Domain::File, false) => FILE_NOT_FIELDS,
            (Domain::Network, true) => NET_MATCH_FIELDS,
            (Domain::Network, false) => NET_NOT_FIELDS,
            (_, true) => MATCH_FIELDS,
            (_, false) => NOT_FIELDS,
        };
        let Value::Map(entries) = &node.value else {
            let message = format!("expected a mapping of conditions ({expected}), found {}", node.value.kind());
            self.invalid(node, field, message);
            return None;
        };
        let mut b = Block::default();
        for (key, value) in entries {
            let f = format!("{field}.{}", key.name);
            match key.name.as_str() {
                "exe" => b.conditions.exe = self.paths(value, &f),
                "parent_exe" | "cmdline" if file => {
                    let message = format!(
                        "`{}` does not apply to the file domain (a permission verdict cannot wait for it); use {}",
                        key.name,
                        if top { FILE_MATCH_FIELDS } else { FILE_NOT_FIELDS }
                    );
                    self.report(key.pos, &f, ProblemKind::InvalidValue, message);
                    continue;
                }
                "path" | "sha256" | "cmdline" if net => {
                    let message = format!("`{}` does not apply to network rules; expected one of {expected}", key.name);
                    self.report(key.pos, &f, ProblemKind::UnknownField, message);
                    continue;
                }
                "path" | "sha256" if !file => {
                    let message = format!("`{}` applies to `file` rules; expected one of {expected}", key.name);
                    self.report(key.pos, &f, ProblemKind::UnknownField, message);
                    continue;
                }
                "dst" if net => b.conditions.dst = self.networks(value, &f),
                "dst_port" if net => b.conditions.dst_ports = self.ports(value, &f),
                "protocol" if net => b.conditions.protocols = self.protocols(value, &f),
                "cgroup" if net => b.conditions.cgroups = self.cgroups(value, &f),
                "host" if net => b.conditions.hosts = self.hosts(value, &f),
                "parent_exe" => b.conditions.parent_exe = self.paths(value, &f),
                "cmdline" => b.conditions.cmdline = self.cmdlines(value, &f),
                "path" => b.conditions.path = self.paths(value, &f),
                "sha256" => {
                    b.mentions_sha256 = true;
                    b.conditions.sha256 = self.digests(value, &f);
                }
                "user" => b.conditions.users = self.users(value, &f),
                "uid" => b.conditions.uids = self.uids(value, &f),
                "activity" if top => {
                    b.activities = self.activities(value, &f, domain);
                    b.activity_node = Some(value.clone());
                    continue;
                }
                "not" if top => {
                    if let Some(inner) = self.block(value, &f, false, domain) {
                        if inner.condition_fields == 0 {
                            self.invalid(value, &f, "empty `not` block");
                        }
                        b.mentions_sha256 |= inner.mentions_sha256;
                        b.negated = Some(inner.conditions);
                    }
                }
                "activity" | "not" => {
                    let message = format!("`{}` cannot be used inside `not`", key.name);
                    self.report(key.pos, &f, ProblemKind::InvalidValue, message);
                    continue;
                }
                _ => {
                    self.unknown_field(key, &f, expected);
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

    /// Parsed path patterns of a field (each checked, globs compiled once to report their errors).
    fn patterns(&mut self, node: &Node, field: &str) -> Option<Vec<PathPattern>> {
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
        (self.problems.len() == before).then_some(patterns)
    }

    fn paths(&mut self, node: &Node, field: &str) -> Option<PathSet> {
        let patterns = self.patterns(node, field)?;
        PathSet::new(patterns).map_err(|e| self.invalid(node, field, e)).ok()
    }

    /// SHA-256 digests: 64 hex digits each, kept lowercase.
    fn digests(&mut self, node: &Node, field: &str) -> Option<Vec<String>> {
        let before = self.problems.len();
        let mut out = Vec::new();
        for (f, item) in self.items(node, field)? {
            let text = match &item.value {
                Value::Str(s) => s.clone(),
                // An all-digit hash may be read as a (huge) number by YAML.
                Value::Int(n) => n.to_string(),
                Value::Float(_) => {
                    self.invalid(item, &f, "expected 64 hex digits, found a number; quote the hash");
                    continue;
                }
                other => {
                    self.invalid(item, &f, format!("expected a SHA-256 (64 hex digits), found {}", other.kind()));
                    continue;
                }
            };
            if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                let shown: String = text.chars().take(80).collect();
                let message = format!(
                    "`{shown}` is not a SHA-256: expected 64 hex digits, found {} characters{}",
                    text.chars().count(),
                    if text.bytes().all(|b| b.is_ascii_hexdigit()) { "" } else { " with non-hex ones" }
                );
                self.invalid(item, &f, message);
                continue;
            }
            let lower = text.to_ascii_lowercase();
            if !out.contains(&lower) {
                out.push(lower);
            }
        }
        (self.problems.len() == before).then_some(out)
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

    fn activities(&mut self, node: &Node, field: &str, domain: Domain) -> Option<Vec<Activity>> {
        let expected = match domain {
            Domain::File => "open, create, write, delete, rename, chmod or exec",
            Domain::Network => "connect, accept, listen, close, send or dns",
            _ => "exec, fork or exit",
        };
        let mut out = Vec::new();
        for (f, item, name) in self.strings(node, field, "an activity")? {
            let activity = match (domain, name) {
                (Domain::Process, "exec") => Activity::Exec,
                (Domain::Process, "fork") => Activity::Fork,
                (Domain::Process, "exit") => Activity::Exit,
                (Domain::File, "open") => Activity::Open,
                (Domain::File, "create") => Activity::Create,
                (Domain::File, "write") => Activity::Write,
                (Domain::File, "delete") => Activity::Delete,
                (Domain::File, "rename") => Activity::Rename,
                (Domain::File, "chmod") => Activity::Chmod,
                (Domain::File, "exec") => Activity::Exec,
                (Domain::Network, "connect") => Activity::Connect,
                (Domain::Network, "accept") => Activity::Accept,
                (Domain::Network, "listen") => Activity::Listen,
                (Domain::Network, "close") => Activity::Close,
                (Domain::Network, "send") => Activity::Send,
                (Domain::Network, "dns") => Activity::Dns,
                (
                    _,
                    "exec" | "fork" | "exit" | "open" | "create" | "write" | "delete" | "rename" | "chmod" | "connect"
                    | "accept" | "listen" | "close" | "send" | "dns" | "input",
                ) => {
                    let message =
                        format!("activity `{name}` does not apply to the {domain} domain; expected {expected}");
                    self.invalid(item, &f, message);
                    continue;
                }
                _ => {
                    self.invalid(item, &f, format!("unknown activity `{name}`; expected {expected}"));
                    continue;
                }
            };
            if !out.contains(&activity) {
                out.push(activity);
            }
        }
        Some(out)
    }

    /// The `files` section: monitor noise control and the default verdict deadline.
    fn files(&mut self, node: &Node) -> FileSettings {
        let mut out = FileSettings::default();
        for (key, value) in self.section_entries(node, "files", FILES_FIELDS) {
            let f = format!("files.{}", key.name);
            match key.name.as_str() {
                "exclude" => {
                    if let Some(patterns) = self.patterns(value, &f) {
                        out.exclude_globs = patterns.iter().map(PathPattern::to_glob).collect();
                    }
                }
                "max_events_per_pid" => match &value.value {
                    Value::Int(n) => match u32::try_from(*n) {
                        Ok(n) => out.max_events_per_pid = Some(n),
                        Err(_) => {
                            self.invalid(value, &f, format!("{n} is out of range (0 = no limit, up to 4294967295)"))
                        }
                    },
                    other => self.invalid(
                        value,
                        &f,
                        format!("expected events per second (a number), found {}", other.kind()),
                    ),
                },
                "verdict_timeout_ms" => {
                    if let Some(t) = self.timeout_ms(value, &f) {
                        out.verdict_timeout = t;
                    }
                }
                "events" if matches!(&value.value, Value::Seq(items) if items.is_empty()) => self.invalid(
                    value,
                    &f,
                    "an empty list would monitor nothing; leave the file monitor off with --mode file=off instead",
                ),
                "events" => {
                    if let Some(list) = self.activities(value, &f, Domain::File) {
                        out.events = Some(list);
                    }
                }
                _ => self.unknown_field(key, &f, FILES_FIELDS),
            }
        }
        out
    }

    /// The `exec_trust` section (fapolicyd's trusted-only mode).
    fn exec_trust(&mut self, node: &Node) -> Option<ExecTrust> {
        let Value::Map(entries) = &node.value else {
            let message = format!("expected a mapping ({EXEC_TRUST_FIELDS}), found {}", node.value.kind());
            self.invalid(node, "exec_trust", message);
            return None;
        };
        let before = self.problems.len();
        let mut mode = None;
        let mut allow_paths = None;
        let mut allow_sha256 = Vec::new();
        let mut on_timeout = TimeoutVerdict::Allow;
        let mut timeout = None;
        for (key, value) in entries {
            let f = format!("exec_trust.{}", key.name);
            match key.name.as_str() {
                "mode" => match &value.value {
                    Value::Str(s) if s == "trusted_only" => mode = Some(true),
                    // YAML 1.1 reads a bare `off` as false.
                    Value::Str(s) if s == "off" => mode = Some(false),
                    Value::Bool(false) => mode = Some(false),
                    Value::Str(s) => {
                        self.invalid(value, &f, format!("unknown mode `{s}`; expected trusted_only or off"))
                    }
                    other => self.invalid(value, &f, format!("expected trusted_only or off, found {}", other.kind())),
                },
                "allow_paths" => allow_paths = self.paths(value, &f),
                "allow_sha256" => allow_sha256 = self.digests(value, &f).unwrap_or_default(),
                "on_timeout" => on_timeout = self.on_timeout(value, &f).unwrap_or_default(),
                "timeout_ms" => timeout = self.timeout_ms(value, &f),
                _ => self.unknown_field(key, &f, EXEC_TRUST_FIELDS),
            }
        }
        let Some(enabled) = mode else {
            if self.problems.len() == before {
                let message = "missing; expected `mode: trusted_only` (or `off`)";
                self.report(node.pos, "exec_trust.mode", ProblemKind::MissingField, message);
            }
            return None;
        };
        if self.problems.len() > before || !enabled {
            return None;
        }
        if allow_paths.is_none() && allow_sha256.is_empty() {
            let message = "trusted_only with neither `allow_paths` nor `allow_sha256` would refuse every exec";
            self.invalid(node, "exec_trust", message);
            return None;
        }
        let allow_paths = match allow_paths {
            Some(p) => p,
            None => PathSet::new(Vec::new()).ok()?,
        };
        Some(ExecTrust { allow_paths, allow_sha256, on_timeout, timeout, line: node.pos.line })
    }
}

/// The actions of a domain, for messages.
fn expected_actions(domain: Domain) -> &'static str {
    match domain {
        Domain::File => "observe, alert or deny",
        Domain::Network => "observe, alert, block, redirect or { throttle: RATE }",
        _ => "observe, alert, kill or deny",
    }
}

/// How to say "every event" in a domain's `match`.
fn match_all_hint(domain: Domain) -> &'static str {
    match domain {
        Domain::File => FILE_MATCH_ALL_HINT,
        Domain::Network => NET_MATCH_ALL_HINT,
        _ => MATCH_ALL_HINT,
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
        let rules = compile(text, "p.yaml", &users()).expect("valid").rules;
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
            assert!(compile(text, "p.yaml", &users()).expect("valid").rules.is_empty(), "{text:?}");
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

        let p = one(&rule("keystroke", "alert"));
        assert_eq!((p.line, p.field.as_str(), p.kind), (3, "rules[0].domain", ProblemKind::Unsupported));
        assert!(p.message.contains("configured in the top-level `keystrokes:` section"), "{p}");
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
        assert_eq!(s, vec![(3, "sigma".to_owned(), ProblemKind::Unsupported)]);
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
        assert_eq!(lines, vec![4, 4, 13, 14, 15], "{s:#?}");
        assert_eq!(s[0].1, "rules[0].match.exe");
        assert_eq!(s[1].1, "rules[0].match.cmdline");
    }

    fn file_rule(m: &str, action: &str, extra: &str) -> String {
        format!("rules:\n  - id: f\n    domain: file\n    match: {m}\n    action: {action}\n{extra}")
    }

    #[test]
    fn a_full_file_rule_compiles() {
        let text = "rules:
  - id: protect-shadow
    domain: file
    match:
      path: [/etc/shadow, \"/srv/secret/**\", \"/home/*/.ssh/id_*\"]
      activity: [open, exec]
      exe: /usr/bin/cat
      user: alice
      uid: 0
      sha256: [\"E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855\"]
      not: { exe: [/usr/bin/passwd], path: /etc/shadow- }
    action: deny
    on_timeout: deny
    timeout_ms: 50
";
        let c = compile(text, "p.yaml", &users()).expect("valid");
        let r = &c.rules[0];
        assert_eq!(
            (r.domain, r.action, r.on_timeout, r.timeout),
            (Domain::File, RuleAction::Deny, TimeoutVerdict::Deny, Some(Duration::from_millis(50)))
        );
        assert_eq!(r.activities, vec![Activity::Open, Activity::Exec]);
        assert_eq!(r.when.path().map(|p| p.patterns().len()), Some(3));
        assert_eq!(
            r.when.sha256().map(<[String]>::to_vec),
            Some(vec!["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_owned()])
        );
        assert!(r.uses_hash());
    }

    #[test]
    fn file_activities_default_to_all_or_to_exec_with_a_hash() {
        let c = compile(&file_rule("{ path: /etc/shadow }", "alert", ""), "p.yaml", &users()).expect("valid");
        assert_eq!(c.rules[0].activities, FILE_ACTIVITIES.to_vec());
        let h = format!("{{ sha256: {} }}", "a".repeat(64));
        let c = compile(&file_rule(&h, "deny", ""), "p.yaml", &users()).expect("valid");
        assert_eq!(c.rules[0].activities, vec![Activity::Exec]);
    }

    #[test]
    fn file_rule_errors_name_line_and_field() {
        let hash = "b".repeat(64);
        let cases: Vec<(String, &str, u32, &str, &str)> = vec![
            (
                "{ path: /etc/shadow, activity: scribble }".into(),
                "deny",
                4,
                "rules[0].match.activity",
                "unknown activity `scribble`; expected open, create, write, delete, rename, chmod or exec",
            ),
            (
                "{ path: /etc/shadow, activity: fork }".into(),
                "deny",
                4,
                "rules[0].match.activity",
                "does not apply to the file domain",
            ),
            ("{ path: \"/etc/{a,b\" }".into(), "deny", 4, "rules[0].match.path", "invalid glob"),
            ("{ path: etc/shadow }".into(), "deny", 4, "rules[0].match.path", "relative path"),
            (
                "{ sha256: abc }".into(),
                "deny",
                4,
                "rules[0].match.sha256",
                "not a SHA-256: expected 64 hex digits, found 3",
            ),
            (
                format!("{{ sha256: [{hash}, {}] }}", "z".repeat(64)),
                "deny",
                4,
                "rules[0].match.sha256[1]",
                "with non-hex ones",
            ),
            (
                format!("{{ sha256: {hash}, activity: write }}"),
                "deny",
                4,
                "rules[0].match.activity",
                "only computed at open and exec",
            ),
            (
                "{ path: /etc/shadow, cmdline: x }".into(),
                "deny",
                4,
                "rules[0].match.cmdline",
                "does not apply to the file domain",
            ),
            ("{ path: /etc/shadow, dst: 1.2.3.4 }".into(), "deny", 4, "rules[0].match.dst", "unknown field `dst`"),
            ("{}".into(), "deny", 4, "rules[0].match", "`match: { path: \"/**\" }`"),
            ("{ path: /etc/shadow }".into(), "kill", 5, "rules[0].action", "use `deny`"),
        ];
        for (m, action, line, field, needle) in cases {
            let p = one(&file_rule(&m, action, ""));
            assert_eq!((p.line, p.field.as_str()), (line, field), "{m}: {p}");
            assert!(p.message.contains(needle), "{m}: {p}");
        }
        let p = one(&file_rule("{ path: /etc/shadow }", "deny", "    on_timeout: alow\n"));
        assert_eq!((p.line, p.field.as_str()), (6, "rules[0].on_timeout"));
        assert!(p.message.contains("unknown value `alow`; expected allow"), "{p}");
        let p = one(&file_rule("{ path: /etc/shadow }", "deny", "    timeout_ms: 0\n"));
        assert_eq!((p.line, p.field.as_str()), (6, "rules[0].timeout_ms"));
        let p = one(&rule_with_match("{ exe: /a, path: /b }"));
        assert_eq!((p.field.as_str(), p.kind), ("rules[0].match.path", ProblemKind::UnknownField));
        let p = one(
            "rules:\n  - id: p\n    domain: process\n    match: { exe: /a }\n    action: kill\n    on_timeout: deny\n",
        );
        assert_eq!((p.line, p.field.as_str()), (6, "rules[0].on_timeout"));
        assert!(p.message.contains("`file` rules only"), "{p}");
    }

    #[test]
    fn files_events_narrow_the_monitor_and_bad_lists_name_the_line() {
        assert_eq!(compile("rules: []\n", "p.yaml", &users()).expect("valid").files.events, None, "all by default");
        let c = compile("files:\n  events: [create, delete, rename]\n", "p.yaml", &users()).expect("valid");
        assert_eq!(c.files.events, Some(vec![Activity::Create, Activity::Delete, Activity::Rename]));
        let s = summary("files:\n  events: [create, ping]\n");
        assert_eq!(s, vec![(2, "files.events[1]".to_owned(), ProblemKind::InvalidValue)]);
        let p = one("files:\n  events: []\n");
        assert_eq!((p.line, p.field.as_str()), (2, "files.events"));
        assert!(p.message.contains("--mode file=off"), "{p}");
        let p = one("files:\n  events: [connect]\n");
        assert_eq!(p.field, "files.events[0]");
    }

    #[test]
    fn files_and_exec_trust_sections_compile() {
        let text = format!(
            "files:
  exclude: [\"/var/cache/\", \"**/*.swp\", /tmp/x]
  max_events_per_pid: 500
  verdict_timeout_ms: 250
exec_trust:
  mode: trusted_only
  allow_paths: [\"/usr/**\", \"/opt/*/bin/*\"]
  allow_sha256: [{}]
  on_timeout: deny
  timeout_ms: 100
",
            "c".repeat(64)
        );
        let c = compile(&text, "p.yaml", &users()).expect("valid");
        assert_eq!(c.files.exclude_globs, vec!["/var/cache/**".to_owned(), "**/*.swp".to_owned(), "/tmp/x".to_owned()]);
        assert_eq!(c.files.max_events_per_pid, Some(500));
        assert_eq!(c.files.verdict_timeout, Duration::from_millis(250));
        let t = c.exec_trust.expect("trusted_only");
        assert_eq!((t.line, t.on_timeout, t.allow_sha256.len()), (6, TimeoutVerdict::Deny, 1));
        let off = compile("exec_trust: { mode: off }\n", "p.yaml", &users()).expect("valid");
        assert!(off.exec_trust.is_none());
    }

    #[test]
    fn network_section_switches_dns_capture_and_names_bad_values() {
        assert!(compile("rules: []\n", "p.yaml", &users()).expect("valid").network.dns, "DNS capture is on by default");
        let off = compile("network:\n  dns: false\n", "p.yaml", &users()).expect("valid");
        assert!(!off.network.dns);
        let s = summary("network:\n  dns: maybe\n  colour: red\n");
        assert_eq!(
            s,
            vec![
                (2, "network.dns".to_owned(), ProblemKind::InvalidValue),
                (3, "network.colour".to_owned(), ProblemKind::UnknownField),
            ]
        );
        assert_eq!(one("network: [dns]\n").field, "network");
    }

    #[test]
    fn files_and_exec_trust_errors_name_line_and_field() {
        let s = summary(
            "files:\n  exclude: [\"/a/{b\"]\n  max_events_per_pid: -1\n  colour: red\nexec_trust:\n  mode: paranoid\n",
        );
        assert_eq!(
            s,
            vec![
                (2, "files.exclude[0]".to_owned(), ProblemKind::InvalidValue),
                (3, "files.max_events_per_pid".to_owned(), ProblemKind::InvalidValue),
                (4, "files.colour".to_owned(), ProblemKind::UnknownField),
                (6, "exec_trust.mode".to_owned(), ProblemKind::InvalidValue),
            ]
        );
        let p = one("exec_trust:\n  mode: trusted_only\n");
        assert_eq!((p.line, p.field.as_str()), (2, "exec_trust"));
        assert!(p.message.contains("would refuse every exec"), "{p}");
        let p = one("exec_trust:\n  allow_paths: [/usr/]\n");
        assert_eq!((p.field.as_str(), p.kind), ("exec_trust.mode", ProblemKind::MissingField));
        let p = one("exec_trust:\n  mode: trusted_only\n  allow_sha256: [nope]\n");
        assert_eq!((p.line, p.field.as_str()), (3, "exec_trust.allow_sha256[0]"));
        let p = one("exec_trust:\n  mode: trusted_only\n  allow_paths: [/usr/]\n  on_timeout: maybe\n");
        assert_eq!((p.line, p.field.as_str()), (4, "exec_trust.on_timeout"));
        let p = one(
            "exec_trust: { mode: trusted_only, allow_paths: [/usr/] }\nrules:\n  - id: exec_trust\n    domain: file\n    match: { path: /a }\n    action: alert\n",
        );
        assert_eq!((p.line, p.kind), (3, ProblemKind::DuplicateId));
        assert!(p.message.contains("reserved"), "{p}");
    }
}
