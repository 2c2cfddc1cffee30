//! The network parts of the policy compiler: the `network:` settings section, the `{ throttle: RATE }` action
//! form and the values of `dst`, `dst_port`, `protocol`, `cgroup` and `host` conditions.

use ringwatch_core::compiled::NetProtocol;

use super::Compiler;
use crate::network::{self, HostSet, IpNet, NetworkSettings};
use crate::rule::RuleAction;
use crate::units::{RATE_UNIT_NAMES, parse_rate};
use crate::yaml::{Node, Value};

/// Fields of the `network` section.
const NETWORK_FIELDS: &str = "dns";

/// The actions of a network rule, for messages.
const NET_ACTIONS: &str = "observe, alert, block, redirect or { throttle: RATE }";

impl Compiler<'_> {
    /// The `network` section: `dns: true|false`.
    pub(super) fn network_settings(&mut self, node: &Node) -> NetworkSettings {
        let mut out = NetworkSettings::default();
        for (key, value) in self.section_entries(node, "network", NETWORK_FIELDS) {
            let f = format!("network.{}", key.name);
            match key.name.as_str() {
                "dns" => {
                    if let Some(on) = self.flag(value, &f) {
                        out.dns = on;
                    }
                }
                _ => self.unknown_field(key, &f, NETWORK_FIELDS),
            }
        }
        out
    }

    /// A network rule's action: `observe`, `alert`, `block`, `redirect` or `{ throttle: 1MiB/s }`.
    pub(super) fn net_action(&mut self, node: &Node, field: &str) -> Option<RuleAction> {
        match &node.value {
            Value::Str(s) => match s.as_str() {
                "observe" => Some(RuleAction::Observe),
                "alert" => Some(RuleAction::Alert),
                "block" => Some(RuleAction::Block),
                "redirect" => Some(RuleAction::Redirect),
                "throttle" => {
                    let message = "`throttle` needs a rate: write `action: { throttle: 1MiB/s }`";
                    self.invalid(node, field, message);
                    None
                }
                "kill" | "deny" => {
                    let message = format!(
                        "`{s}` does not apply to the network domain; use `block` (the connect or send fails with \
                         EPERM)"
                    );
                    self.invalid(node, field, message);
                    None
                }
                "allow" => {
                    let message =
                        "`allow` is not an action; use `observe` for an exception (the first matching rule wins)";
                    self.invalid(node, field, message);
                    None
                }
                other => {
                    self.invalid(node, field, format!("unknown action `{other}`; expected {NET_ACTIONS}"));
                    None
                }
            },
            Value::Map(entries) if entries.len() == 1 && entries[0].0.name == "throttle" => {
                let (key, value) = &entries[0];
                let f = format!("{field}.throttle");
                match &value.value {
                    Value::Str(text) => match parse_rate(text) {
                        Ok(bytes_per_sec) => Some(RuleAction::Throttle { bytes_per_sec }),
                        Err(e) => {
                            self.invalid(value, &f, e);
                            None
                        }
                    },
                    Value::Int(_) | Value::Float(_) => {
                        let message = format!("a rate needs a unit, e.g. `1MiB/s` (units: {RATE_UNIT_NAMES})");
                        self.invalid(value, &f, message);
                        None
                    }
                    other => {
                        let message = format!("expected a rate such as `1MiB/s`, found {}", other.kind());
                        self.report(key.pos, &f, crate::error::ProblemKind::InvalidValue, message);
                        None
                    }
                }
            }
            Value::Map(entries) if entries.len() == 1 => {
                let name = &entries[0].0.name;
                self.invalid(node, field, format!("unknown action `{name}`; expected {NET_ACTIONS}"));
                None
            }
            other => {
                self.invalid(node, field, format!("expected {NET_ACTIONS}, found {}", other.kind()));
                None
            }
        }
    }

    /// `dst`: IP addresses and CIDR networks, v4 or v6.
    pub(super) fn networks(&mut self, node: &Node, field: &str) -> Option<Vec<IpNet>> {
        let before = self.problems.len();
        let mut out = Vec::new();
        for (f, item, text) in self.strings(node, field, "an IP address or CIDR network")? {
            match IpNet::parse(text) {
                Ok(n) if !out.contains(&n) => out.push(n),
                Ok(_) => {}
                Err(e) => self.invalid(item, &f, e),
            }
        }
        (self.problems.len() == before).then_some(out)
    }

    /// `dst_port`: port numbers and `"a-b"` ranges.
    pub(super) fn ports(&mut self, node: &Node, field: &str) -> Option<Vec<(u16, u16)>> {
        let before = self.problems.len();
        let mut out = Vec::new();
        for (f, item) in self.items(node, field)? {
            let parsed = match &item.value {
                Value::Int(n) => {
                    u16::try_from(*n).map(|p| (p, p)).map_err(|_| format!("port {n} is out of range (0 to 65535)"))
                }
                Value::Str(s) => network::parse_port_range(s),
                other => Err(format!("expected a port or a range like \"8000-8999\", found {}", other.kind())),
            };
            match parsed {
                Ok(r) if !out.contains(&r) => out.push(r),
                Ok(_) => {}
                Err(e) => self.invalid(item, &f, e),
            }
        }
        (self.problems.len() == before).then_some(out)
    }

    /// `protocol`: `tcp` and/or `udp`.
    pub(super) fn protocols(&mut self, node: &Node, field: &str) -> Option<Vec<NetProtocol>> {
        let before = self.problems.len();
        let mut out = Vec::new();
        for (f, item, text) in self.strings(node, field, "tcp or udp")? {
            let p = match text.to_ascii_lowercase().as_str() {
                "tcp" => NetProtocol::Tcp,
                "udp" => NetProtocol::Udp,
                _ => {
                    self.invalid(item, &f, format!("unknown protocol `{text}`; expected tcp or udp"));
                    continue;
                }
            };
            if !out.contains(&p) {
                out.push(p);
            }
        }
        (self.problems.len() == before).then_some(out)
    }

    /// `cgroup`: cgroup v2 paths relative to the cgroup2 mount.
    pub(super) fn cgroups(&mut self, node: &Node, field: &str) -> Option<Vec<String>> {
        let before = self.problems.len();
        let mut out = Vec::new();
        for (f, item, text) in self.strings(node, field, "a cgroup path")? {
            match network::parse_cgroup(text) {
                Ok(c) if !out.contains(&c) => out.push(c),
                Ok(_) => {}
                Err(e) => self.invalid(item, &f, e),
            }
        }
        (self.problems.len() == before).then_some(out)
    }

    /// `host`: host-name globs.
    pub(super) fn hosts(&mut self, node: &Node, field: &str) -> Option<HostSet> {
        let before = self.problems.len();
        let mut globs = Vec::new();
        for (f, item, text) in self.strings(node, field, "a host name or glob")? {
            match HostSet::check(text) {
                Ok(g) if !globs.contains(&g) => globs.push(g),
                Ok(_) => {}
                Err(e) => self.invalid(item, &f, e),
            }
        }
        if self.problems.len() > before {
            return None;
        }
        HostSet::new(globs).map_err(|e| self.invalid(node, field, e)).ok()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use ringwatch_core::{Activity, Domain};

    use super::super::compile;
    use super::*;
    use crate::error::{Problem, ProblemKind};
    use crate::users::UserDb;

    fn users() -> UserDb {
        UserDb::from_passwd("root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n")
    }

    fn net_rule(m: &str, action: &str) -> String {
        format!("rules:\n  - id: net1\n    domain: network\n    match: {m}\n    action: {action}\n")
    }

    fn one(text: &str) -> Problem {
        let mut p = compile(text, "p.yaml", &users()).expect_err("rejected");
        assert_eq!(p.len(), 1, "{p:#?}");
        p.remove(0)
    }

    #[test]
    fn a_full_network_rule_compiles() {
        let text = "rules:
  - id: web
    domain: network
    match:
      dst: [10.0.0.0/8, \"fd00::/8\", 192.0.2.7]
      dst_port: [80, 443, \"8000-8999\"]
      protocol: tcp
      exe: [/usr/bin/curl, /opt/tools/]
      parent_exe: /usr/bin/bash
      user: alice
      uid: [1000]
      cgroup: /system.slice/web.service
      host: [\"*.example.com\", Example.org]
      activity: [connect, send, dns]
      not: { dst: 10.9.0.0/16, host: internal.example.com }
    action: { throttle: 1MiB/s }
";
        let c = compile(text, "p.yaml", &users()).expect("valid");
        let r = &c.rules[0];
        assert_eq!((r.domain, r.action), (Domain::Network, RuleAction::Throttle { bytes_per_sec: 1 << 20 }));
        assert_eq!(r.activities, vec![Activity::Connect, Activity::Send, Activity::Dns]);
        let w = &r.when;
        assert_eq!(
            w.dst().map(|d| d.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap_or_default(),
            ["10.0.0.0/8", "fd00::/8", "192.0.2.7/32"]
        );
        assert_eq!(w.dst_ports(), Some(&[(80, 80), (443, 443), (8000, 8999)][..]));
        assert_eq!(w.protocols(), Some(&[NetProtocol::Tcp][..]));
        assert_eq!(w.cgroups(), Some(&["/system.slice/web.service".to_owned()][..]));
        assert_eq!(w.hosts().map(|h| h.globs().to_vec()), Some(vec!["*.example.com".into(), "example.org".into()]));
        assert_eq!(w.users(), Some(&[1000][..]));
        let not = r.negated().expect("not");
        assert_eq!(not.dst().map(|d| d[0].addr()), Some("10.9.0.0".parse::<IpAddr>().expect("ip")));
    }

    #[test]
    fn network_defaults_and_every_action() {
        for (action, expected) in [
            ("observe", RuleAction::Observe),
            ("alert", RuleAction::Alert),
            ("block", RuleAction::Block),
            ("redirect", RuleAction::Redirect),
            ("{ throttle: 512KiB/s }", RuleAction::Throttle { bytes_per_sec: 512 * 1024 }),
            ("{ throttle: \"2 MB/s\" }", RuleAction::Throttle { bytes_per_sec: 2_000_000 }),
        ] {
            let c = compile(&net_rule("{ dst: 192.0.2.1 }", action), "p.yaml", &users()).expect("valid");
            assert_eq!(c.rules[0].action, expected, "{action}");
            assert_eq!(c.rules[0].activities, vec![Activity::Connect, Activity::Send]);
        }
    }

    #[test]
    fn network_errors_name_line_and_field() {
        let cases: &[(&str, &str, u32, &str, &str)] = &[
            ("{ dst: 10.0.0.0/33 }", "block", 4, "rules[0].match.dst", "prefix length `/33` is out of range"),
            ("{ dst: [10.0.0.1, 300.1.1.1] }", "block", 4, "rules[0].match.dst[1]", "not an IP address or CIDR"),
            ("{ dst: 10 }", "block", 4, "rules[0].match.dst", "expected an IP address or CIDR network, found a number"),
            ("{ dst_port: 70000 }", "block", 4, "rules[0].match.dst_port", "port 70000 is out of range"),
            ("{ dst_port: [80, \"90-80\"] }", "block", 4, "rules[0].match.dst_port[1]", "backwards"),
            ("{ dst_port: \"1-70000\" }", "block", 4, "rules[0].match.dst_port", "port 70000 is out of range"),
            ("{ protocol: icmp }", "block", 4, "rules[0].match.protocol", "unknown protocol `icmp`"),
            ("{ cgroup: system.slice }", "block", 4, "rules[0].match.cgroup", "not a cgroup path"),
            ("{ host: \"https://x.com/\" }", "block", 4, "rules[0].match.host", "not a host-name glob"),
            ("{ exe: curl }", "block", 4, "rules[0].match.exe", "relative path"),
            ("{ user: bob }", "block", 4, "rules[0].match.user", "unknown user `bob`"),
            (
                "{ dst: 10.0.0.1, activity: exec }",
                "block",
                4,
                "rules[0].match.activity",
                "does not apply to the network",
            ),
            ("{ dst: 10.0.0.1, activity: bounce }", "block", 4, "rules[0].match.activity", "unknown activity `bounce`"),
            ("{ dst: 10.0.0.1, cmdline: x }", "block", 4, "rules[0].match.cmdline", "does not apply to network rules"),
            ("{ dst: 10.0.0.1, path: /x }", "block", 4, "rules[0].match.path", "does not apply to network rules"),
            ("{ dst: 10.0.0.1, colour: red }", "block", 4, "rules[0].match.colour", "unknown field `colour`"),
            (
                "{ dst: 10.0.0.1, not: { dst: 10.0.0.2, activity: send } }",
                "block",
                4,
                "rules[0].match.not.activity",
                "inside `not`",
            ),
            ("{}", "block", 4, "rules[0].match", "to match all traffic say so"),
            ("{ dst: 10.0.0.1 }", "explode", 5, "rules[0].action", "unknown action `explode`; expected observe, alert"),
            ("{ dst: 10.0.0.1 }", "kill", 5, "rules[0].action", "use `block`"),
            ("{ dst: 10.0.0.1 }", "deny", 5, "rules[0].action", "use `block`"),
            ("{ dst: 10.0.0.1 }", "throttle", 5, "rules[0].action", "needs a rate"),
            ("{ dst: 10.0.0.1 }", "{ throttle: 0MiB/s }", 5, "rules[0].action.throttle", "is zero"),
            ("{ dst: 10.0.0.1 }", "{ throttle: fast }", 5, "rules[0].action.throttle", "unknown rate unit `fast`"),
            ("{ dst: 10.0.0.1 }", "{ throttle: 100 }", 5, "rules[0].action.throttle", "needs a unit"),
            ("{ dst: 10.0.0.1 }", "{ throttle: 1Mbit/s }", 5, "rules[0].action.throttle", "unknown rate unit"),
            ("{ dst: 10.0.0.1 }", "{ slow: 1MiB/s }", 5, "rules[0].action", "unknown action `slow`"),
        ];
        for (m, action, line, field, needle) in cases {
            let p = one(&net_rule(m, action));
            assert_eq!((p.line, p.field.as_str()), (*line, *field), "{m} / {action}: {p}");
            assert!(p.message.contains(needle), "{m} / {action}: {p}");
            assert!(p.to_string().starts_with(&format!("p.yaml:{line}: {field}: ")), "{p}");
        }
    }

    #[test]
    fn block_style_network_lists_point_at_the_bad_item() {
        let text = "rules:\n  - id: net1\n    domain: network\n    match:\n      dst_port:\n        - 443\n        - 65536\n    action: block\n";
        let p = one(text);
        assert_eq!((p.line, p.field.as_str(), p.kind), (7, "rules[0].match.dst_port[1]", ProblemKind::InvalidValue));
    }

    #[test]
    fn network_fields_stay_out_of_other_domains() {
        let p =
            one("rules:\n  - id: p\n    domain: process\n    match: { exe: /a, dst: 10.0.0.1 }\n    action: kill\n");
        assert_eq!((p.field.as_str(), p.kind), ("rules[0].match.dst", ProblemKind::UnknownField));
        let p = one("rules:\n  - id: p\n    domain: process\n    match: { exe: /a }\n    action: block\n");
        assert!(p.message.contains("does not apply to the process domain"), "{p}");
    }
}
