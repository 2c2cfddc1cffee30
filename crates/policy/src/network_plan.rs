//! Where each network rule is enforced, and the [`NetworkPlan`] the kernel and the proxy get.
//!
//! # The kernel list
//!
//! The cgroup `sock_addr` programs evaluate [`NetworkPlan::rules`] in order at every connect and unconnected UDP
//! send, first match wins. A rule goes into that list when the kernel can evaluate all of it:
//!
//! - its conditions (in `match` and in `not`) are `dst`, `dst_port`, `protocol`, `user`/`uid`, `cgroup` and `exe`
//!   written as exact paths or directory prefixes; `parent_exe`, `host` and `exe` globs need user space;
//! - its activities are what the programs see: for `block`/`redirect`/`throttle`, `connect` and `send` (the
//!   default), or `connect` alone with `protocol: tcp` (TCP has no unconnected sends); for `observe`/`alert`, any
//!   activity list with `connect` or `send` (an exception that the kernel applies a little more widely only ever
//!   makes the kernel act less);
//! - for `block`/`redirect`/`throttle`: no earlier `observe`/`alert` rule that is *not* in the list may match the
//!   same traffic first (the same ordering safety as the process kill list): the kernel would act where the policy
//!   makes an exception. An earlier enforcing rule does not count (the kernel then still acts on traffic the
//!   policy wants acted on, if under the later rule's action and id). Overlap
//!   is judged conservatively from the conditions both rules have: disjoint networks, ports, protocols, uids,
//!   cgroups or executables prove two rules apart; anything else may overlap.
//!
//! `observe` and `alert` rules are in the list too, so the kernel honours exceptions in order.
//!
//! # The proxy's host rules
//!
//! A rule whose only condition is `host`, that applies to `connect`, with action `block`, `alert` or `observe`,
//! becomes a [`HostRule`]. The proxy checks host rules (in policy order) against the HTTP `Host` / TLS SNI of the
//! connections that a `redirect` rule sent to it, whatever the position of that redirect rule: redirection is how
//! traffic reaches the place where names are known. A host `block` rule therefore refuses nothing that is not
//! redirected; an earlier `observe`/`alert` rule that mixes `host` with other conditions (which the proxy cannot
//! check) keeps a later host `block` rule out of the proxy.
//!
//! Every other `block`/`redirect`/`throttle` rule is [`Enforcement::NetworkHookOrAlert`]: the preload hooks enforce
//! it in user mode, and otherwise its matches are reported `alerted`.

use ringwatch_core::compiled::{HostRule, NetAction, NetMatch, NetProtocol, NetRule, NetworkPlan};
use ringwatch_core::{Activity, Domain};

use crate::pattern::PathPattern;
use crate::rule::{Conditions, Enforcement, Rule, RuleAction};

/// Sets the enforcement of every network rule and builds the plan.
pub(crate) fn assign(rules: &mut [Rule]) -> NetworkPlan {
    let mut in_kernel = vec![false; rules.len()];
    let mut plan = NetworkPlan::default();
    for i in 0..rules.len() {
        if rules[i].domain != Domain::Network {
            continue;
        }
        let (earlier, rest) = rules.split_at_mut(i);
        let rule = &mut rest[0];
        // An exception in the kernel list never makes the kernel act, so only enforcing rules need the ordering
        // check.
        let kernel = kernel_blocker(rule).or_else(|| {
            if rule.action.is_enforcing() { shadowed_in_kernel(earlier, &in_kernel[..i], rule) } else { None }
        });
        let host_only = is_host_only(rule);
        rule.enforcement = match (rule.action, &kernel) {
            (RuleAction::Observe | RuleAction::Alert, _) => Enforcement::NotEnforcing,
            (_, None) => Enforcement::NetworkKernel,
            (RuleAction::Block, Some(_)) if host_only => match shadowed_in_proxy(earlier) {
                None => Enforcement::NetworkProxyHost,
                Some(reason) => Enforcement::NetworkHookOrAlert { reason },
            },
            (_, Some(reason)) => Enforcement::NetworkHookOrAlert { reason: reason.clone() },
        };
        if kernel.is_none() {
            in_kernel[i] = true;
            plan.rules.push(NetRule {
                id: rule.id.clone(),
                action: net_action(rule.action),
                matcher: net_match(&rule.when),
                not: rule.unless.as_ref().map(net_match),
            });
        }
        let proxied = match rule.action {
            RuleAction::Block => rule.enforcement == Enforcement::NetworkProxyHost,
            RuleAction::Observe | RuleAction::Alert => host_only,
            _ => false,
        };
        if proxied && let Some(hosts) = &rule.when.hosts {
            plan.host_rules.push(HostRule {
                id: rule.id.clone(),
                hosts: hosts.globs().to_vec(),
                action: net_action(rule.action),
            });
        }
    }
    plan
}

/// The kernel's form of a rule action.
fn net_action(action: RuleAction) -> NetAction {
    match action {
        RuleAction::Observe => NetAction::Observe,
        RuleAction::Alert => NetAction::Alert,
        RuleAction::Block | RuleAction::Kill | RuleAction::Deny => NetAction::Block,
        RuleAction::Redirect => NetAction::Redirect,
        RuleAction::Throttle { bytes_per_sec } => NetAction::Throttle { bytes_per_sec },
    }
}

/// The kernel's form of kernel-evaluable conditions.
fn net_match(c: &Conditions) -> NetMatch {
    let mut m = NetMatch {
        dst: c.dst.iter().flatten().map(|n| (n.addr(), n.prefix())).collect(),
        dst_ports: c.dst_ports.clone().unwrap_or_default(),
        protocol: match c.protocols.as_deref() {
            Some([p]) => Some(*p),
            _ => None,
        },
        uids: c.allowed_uids().unwrap_or_default(),
        cgroups: c.cgroups.clone().unwrap_or_default(),
        ..NetMatch::default()
    };
    for p in c.exe.iter().flat_map(|s| s.patterns()) {
        match p {
            PathPattern::Exact(e) => m.exe_exact.push(e.clone()),
            PathPattern::DirPrefix(d) => m.exe_prefixes.push(d.clone()),
            PathPattern::Glob(_) => {}
        }
    }
    m
}

/// True when the rule applies to some activity the kernel programs see.
fn applies_at_connect_or_send(rule: &Rule) -> bool {
    rule.activities.iter().any(|a| matches!(a, Activity::Connect | Activity::Send))
}

/// True for a rule whose only condition is `host`, without `not`, that applies to `connect`.
fn is_host_only(rule: &Rule) -> bool {
    let c = &rule.when;
    c.hosts.is_some()
        && rule.unless.is_none()
        && rule.activities.contains(&Activity::Connect)
        && Conditions { hosts: None, ..c.clone() }.is_empty()
}

/// Why the kernel cannot evaluate `rule` by itself (`None`: it can).
fn kernel_blocker(rule: &Rule) -> Option<String> {
    let enforcing = rule.action.is_enforcing();
    if !applies_at_connect_or_send(rule) {
        return Some(format!(
            "it applies to {}; the kernel programs act at connect and send only",
            names(&rule.activities)
        ));
    }
    if enforcing {
        if let Some(other) = rule.activities.iter().find(|a| !matches!(a, Activity::Connect | Activity::Send)) {
            return Some(format!("it applies to `{other}`; the kernel programs act at connect and send only"));
        }
        let tcp_only = rule.when.protocols.as_deref() == Some(&[NetProtocol::Tcp]);
        match rule.activities.as_slice() {
            [Activity::Connect] if !tcp_only => {
                return Some(
                    "`activity: connect` alone needs `protocol: tcp`: the kernel programs check UDP sends like \
                     connects (use the default, connect and send)"
                        .to_owned(),
                );
            }
            [Activity::Send] => {
                return Some(
                    "`activity: send` alone: the kernel programs check connects like sends (use the default, \
                     connect and send)"
                        .to_owned(),
                );
            }
            _ => {}
        }
    }
    for (c, place) in std::iter::once((&rule.when, "")).chain(rule.unless.as_ref().map(|n| (n, " in `not`"))) {
        if c.parent_exe.is_some() {
            return Some(format!(
                "it has a `parent_exe` condition{place}; the kernel matches the acting process's own exe, uid and \
                 cgroup"
            ));
        }
        if c.hosts.is_some() {
            return Some(format!(
                "it has a `host` condition{place}; host names are not known at connect time (the proxy sees them \
                 on redirected connections, the hooks after getaddrinfo)"
            ));
        }
        if let Some(glob) = c.exe.iter().flat_map(|s| s.patterns()).find(|p| !p.is_kernel_enforceable()) {
            return Some(format!(
                "`exe`{place} has the glob `{glob}`; the kernel matches exact paths and directory prefixes"
            ));
        }
        if c.allowed_uids().is_some_and(|u| u.is_empty()) {
            return Some(format!("`user` and `uid`{place} name no uid in common, so they never hold together"));
        }
    }
    None
}

/// The reason `rule` must stay out of the kernel list because an earlier exception the kernel does not know may
/// match the same traffic first.
fn shadowed_in_kernel(earlier: &[Rule], in_kernel: &[bool], rule: &Rule) -> Option<String> {
    earlier
        .iter()
        .zip(in_kernel)
        .filter(|(e, k)| {
            e.domain == Domain::Network && !**k && !e.action.is_enforcing() && applies_at_connect_or_send(e)
        })
        .find(|(e, _)| may_overlap(&e.when, &rule.when))
        .map(|(e, _)| {
            format!(
                "the earlier `{}` rule `{}` (line {}) may match the same traffic first, and the kernel cannot \
                 evaluate it",
                e.action, e.id, e.line
            )
        })
}

/// The reason a host-only `block` rule must stay out of the proxy: an earlier exception mixing `host` with
/// conditions the proxy cannot check.
fn shadowed_in_proxy(earlier: &[Rule]) -> Option<String> {
    earlier
        .iter()
        .find(|e| {
            e.domain == Domain::Network
                && !e.action.is_enforcing()
                && e.activities.contains(&Activity::Connect)
                && e.when.hosts.is_some()
                && !is_host_only(e)
        })
        .map(|e| {
            format!(
                "the earlier `{}` rule `{}` (line {}) combines `host` with conditions the proxy cannot check, and \
                 may match the same connections first",
                e.action, e.id, e.line
            )
        })
}

/// False only when no traffic can satisfy both `a` and `b`, judged from the conditions both have (conditions the
/// other side lacks, and `not` blocks, could always hold).
fn may_overlap(a: &Conditions, b: &Conditions) -> bool {
    if let (Some(x), Some(y)) = (&a.dst, &b.dst)
        && !x.iter().any(|n| y.iter().any(|m| n.overlaps(m)))
    {
        return false;
    }
    if let (Some(x), Some(y)) = (&a.dst_ports, &b.dst_ports)
        && !x.iter().any(|(lo, hi)| y.iter().any(|(lo2, hi2)| lo <= hi2 && lo2 <= hi))
    {
        return false;
    }
    if let (Some(x), Some(y)) = (&a.protocols, &b.protocols)
        && !x.iter().any(|p| y.contains(p))
    {
        return false;
    }
    if let (Some(x), Some(y)) = (a.allowed_uids(), b.allowed_uids())
        && !x.iter().any(|u| y.contains(u))
    {
        return false;
    }
    if let (Some(x), Some(y)) = (&a.cgroups, &b.cgroups)
        && !x.iter().any(|c| y.iter().any(|d| crate::network::cgroups_overlap(c, d)))
    {
        return false;
    }
    if let (Some(x), Some(y)) = (&a.exe, &b.exe) {
        let overlaps = y.patterns().iter().any(|p| match p {
            PathPattern::Exact(path) => x.is_match(path),
            PathPattern::DirPrefix(dir) => x.may_match_under(dir),
            PathPattern::Glob(_) => true,
        });
        if !overlaps {
            return false;
        }
    }
    true
}

/// `a`, `b` and `c` as a sentence fragment of backquoted activity names.
fn names(activities: &[Activity]) -> String {
    activities.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use ringwatch_core::compiled::NetMatch;

    use super::*;
    use crate::policy::Policy;
    use crate::users::UserDb;

    fn policy(rules: &[(&str, &str, &str)]) -> Policy {
        let mut text = String::from("rules:\n");
        for (id, m, action) in rules {
            text.push_str(&format!("  - id: {id}\n    domain: network\n    match: {m}\n    action: {action}\n"));
        }
        let users = UserDb::from_passwd("root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n");
        Policy::from_str_with_users(&text, "n.yaml", &users).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn reason(p: &Policy, i: usize) -> String {
        match p.rules()[i].enforcement() {
            Enforcement::NetworkHookOrAlert { reason } => reason.clone(),
            other => panic!("rule {i}: expected hook-or-alert, got {other:?}"),
        }
    }

    #[test]
    fn the_design_sketch_rules_all_reach_the_kernel() {
        let p = policy(&[
            ("no-metadata", "{ dst: 169.254.169.254/32 }", "block"),
            ("web-through-proxy", "{ dst_port: [80, 443], user: alice }", "redirect"),
            ("slow-backup", "{ exe: /usr/bin/rsync }", "{ throttle: 1MiB/s }"),
        ]);
        assert!(p.rules().iter().all(|r| r.enforcement() == &Enforcement::NetworkKernel));
        let plan = p.network_plan();
        assert_eq!(plan.rules.len(), 3);
        assert!(plan.host_rules.is_empty());
        assert!(plan.needs_proxy() && plan.needs_throttle() && plan.enforces());
        assert_eq!(
            plan.rules[0],
            NetRule {
                id: "no-metadata".into(),
                action: NetAction::Block,
                matcher: NetMatch { dst: vec![(ip("169.254.169.254"), 32)], ..NetMatch::default() },
                not: None,
            }
        );
        assert_eq!(plan.rules[1].action, NetAction::Redirect);
        assert_eq!(plan.rules[1].matcher.dst_ports, vec![(80, 80), (443, 443)]);
        assert_eq!(plan.rules[1].matcher.uids, vec![1000]);
        assert_eq!(plan.rules[2].action, NetAction::Throttle { bytes_per_sec: 1 << 20 });
        assert_eq!(plan.rules[2].matcher.exe_exact, vec!["/usr/bin/rsync".to_owned()]);
    }

    #[test]
    fn every_kernel_condition_is_carried_over() {
        let p = policy(&[(
            "all",
            "{ dst: [10.0.0.0/8, \"fd00::/8\"], dst_port: \"1000-2000\", protocol: udp, uid: [0, 1000], user: alice, \
             cgroup: /system.slice/x.service, exe: [/usr/bin/nc, /opt/], not: { dst: 10.1.0.0/16, protocol: udp } }",
            "block",
        )]);
        let r = &p.network_plan().rules[0];
        assert_eq!(
            r.matcher,
            NetMatch {
                dst: vec![(ip("10.0.0.0"), 8), (ip("fd00::"), 8)],
                dst_ports: vec![(1000, 2000)],
                protocol: Some(NetProtocol::Udp),
                uids: vec![1000],
                exe_exact: vec!["/usr/bin/nc".into()],
                exe_prefixes: vec!["/opt/".into()],
                cgroups: vec!["/system.slice/x.service".into()],
            }
        );
        assert_eq!(
            r.not,
            Some(NetMatch { dst: vec![(ip("10.1.0.0"), 16)], protocol: Some(NetProtocol::Udp), ..NetMatch::default() })
        );
        let both = policy(&[("both", "{ dst: 10.0.0.1, protocol: [tcp, udp] }", "block")]);
        assert_eq!(both.network_plan().rules[0].matcher.protocol, None, "both protocols: any");
    }

    #[test]
    fn what_the_kernel_cannot_evaluate_stays_out_with_a_reason() {
        let p = policy(&[
            ("glob", "{ exe: \"**/curl\", dst_port: 443 }", "block"),
            ("parent", "{ parent_exe: /usr/bin/bash, dst_port: 25 }", "block"),
            ("host-and-port", "{ host: \"*.evil.example\", dst_port: 443 }", "block"),
            ("accept", "{ dst_port: 22, activity: accept }", "block"),
            ("connect-any", "{ dst_port: 53, activity: connect }", "block"),
            ("send-only", "{ dst_port: 53, activity: send }", "block"),
            ("not-host", "{ dst_port: 8080, not: { host: ok.example } }", "redirect"),
            ("no-common-uid", "{ dst_port: 9, user: alice, uid: 0 }", "block"),
            ("host-redirect", "{ host: \"*.example\" }", "redirect"),
            ("connect-tcp", "{ dst_port: 53, activity: connect, protocol: tcp }", "block"),
        ]);
        assert!(reason(&p, 0).contains("`exe` has the glob `**/curl`"), "{}", reason(&p, 0));
        assert!(reason(&p, 1).contains("`parent_exe`"));
        assert!(reason(&p, 2).contains("`host` condition"));
        assert!(reason(&p, 3).contains("applies to `accept`"), "{}", reason(&p, 3));
        assert!(reason(&p, 4).contains("needs `protocol: tcp`"));
        assert!(reason(&p, 5).contains("`activity: send` alone"));
        assert!(reason(&p, 6).contains("`host` condition in `not`"));
        assert!(reason(&p, 7).contains("no uid in common"));
        assert!(reason(&p, 8).contains("`host` condition"));
        assert_eq!(p.rules()[9].enforcement(), &Enforcement::NetworkKernel);
        let ids: Vec<String> = p.network_plan().rules.into_iter().map(|r| r.id).collect();
        assert_eq!(ids, vec!["connect-tcp".to_owned()]);
    }

    #[test]
    fn host_only_rules_go_to_the_proxy_in_order() {
        let p = policy(&[
            ("docs-ok", "{ host: docs.evil.example }", "observe"),
            ("evil", "{ host: [\"*.evil.example\", Evil.Example] }", "block"),
            ("watch", "{ host: \"*.watch.example\" }", "alert"),
            ("web", "{ dst_port: [80, 443] }", "redirect"),
        ]);
        assert_eq!(p.rules()[1].enforcement(), &Enforcement::NetworkProxyHost);
        assert_eq!(p.rules()[0].enforcement(), &Enforcement::NotEnforcing);
        let plan = p.network_plan();
        let host: Vec<(&str, NetAction)> = plan.host_rules.iter().map(|h| (h.id.as_str(), h.action)).collect();
        assert_eq!(host, [("docs-ok", NetAction::Observe), ("evil", NetAction::Block), ("watch", NetAction::Alert)]);
        assert_eq!(plan.host_rules[1].hosts, vec!["*.evil.example".to_owned(), "evil.example".to_owned()]);
        // A host exception is an exception to later kernel rules too: the kernel cannot tell the name.
        let Enforcement::NetworkHookOrAlert { reason } = p.rules()[3].enforcement() else { panic!("shadowed") };
        assert!(reason.contains("`docs-ok` (line 2)"), "{reason}");
        assert!(plan.rules.is_empty());
    }

    #[test]
    fn a_mixed_host_exception_keeps_a_host_block_out_of_the_proxy() {
        let p = policy(&[
            ("alice-ok", "{ host: \"*.evil.example\", user: alice }", "observe"),
            ("evil", "{ host: \"*.evil.example\" }", "block"),
        ]);
        let Enforcement::NetworkHookOrAlert { reason } = p.rules()[1].enforcement() else { panic!("not proxied") };
        assert!(reason.contains("`alice-ok` (line 2)"), "{reason}");
        assert!(p.network_plan().host_rules.is_empty());
    }

    #[test]
    fn an_earlier_exception_the_kernel_cannot_see_keeps_overlapping_rules_out() {
        let p = policy(&[
            ("curl-ok", "{ exe: \"**/curl\", dst_port: 443 }", "observe"),
            ("kernel-ok", "{ dst: 10.0.0.0/8 }", "observe"),
            ("https", "{ dst_port: 443 }", "block"),
            ("http", "{ dst_port: 80 }", "block"),
            ("alice-udp", "{ protocol: udp, dst_port: 443 }", "block"),
        ]);
        let Enforcement::NetworkHookOrAlert { reason } = p.rules()[2].enforcement() else { panic!("shadowed") };
        assert!(reason.contains("`observe` rule `curl-ok` (line 2)"), "{reason}");
        assert_eq!(p.rules()[3].enforcement(), &Enforcement::NetworkKernel, "another port cannot overlap");
        assert!(matches!(p.rules()[4].enforcement(), Enforcement::NetworkHookOrAlert { .. }));
        let ids: Vec<String> = p.network_plan().rules.into_iter().map(|r| r.id).collect();
        assert_eq!(ids, vec!["kernel-ok".to_owned(), "http".to_owned()], "kernel exceptions stay, in order");

        // Each condition both rules have can prove them apart.
        for (exception, rule) in [
            ("{ exe: \"**/curl\", dst: 10.0.0.0/8 }", "{ dst: 192.168.0.0/16 }"),
            ("{ exe: \"**/curl\", protocol: udp }", "{ dst: 10.0.0.1, protocol: tcp }"),
            ("{ exe: \"**/curl\", uid: 0 }", "{ dst: 10.0.0.1, user: alice }"),
            ("{ exe: \"**/curl\", cgroup: /a }", "{ dst: 10.0.0.1, cgroup: /b }"),
            ("{ exe: \"/home/*/bin/*\" }", "{ exe: /usr/bin/nc }"),
            ("{ parent_exe: /bin/sh, activity: accept }", "{ dst: 10.0.0.1 }"),
        ] {
            let p = policy(&[("e", exception, "alert"), ("r", rule, "block")]);
            assert_eq!(p.rules()[1].enforcement(), &Enforcement::NetworkKernel, "{exception} vs {rule}");
        }
        for (exception, rule) in [
            ("{ exe: \"**/curl\" }", "{ dst: 10.0.0.1 }"),
            ("{ exe: \"**/curl\", cgroup: /a }", "{ dst: 10.0.0.1, cgroup: /a/b }"),
            ("{ exe: \"/usr/*/nc\" }", "{ exe: /usr/bin/ }"),
            ("{ exe: \"**/curl\", dst: \"::/0\" }", "{ dst: 10.0.0.1 }"),
        ] {
            let p = policy(&[("e", exception, "alert"), ("r", rule, "block")]);
            assert!(
                matches!(p.rules()[1].enforcement(), Enforcement::NetworkHookOrAlert { .. }),
                "{exception} vs {rule}"
            );
        }
    }

    #[test]
    fn an_earlier_enforcing_rule_does_not_shadow() {
        let p = policy(&[("glob-block", "{ exe: \"**/nc\" }", "block"), ("web", "{ dst_port: 80 }", "redirect")]);
        assert!(matches!(p.rules()[0].enforcement(), Enforcement::NetworkHookOrAlert { .. }));
        assert_eq!(p.rules()[1].enforcement(), &Enforcement::NetworkKernel);
    }
}
