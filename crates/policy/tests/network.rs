//! Network rules end to end inside the crate: the Decider on network events (every condition, activities, `not`,
//! first match), `may_deny`, and the pipeline stage never claiming an enforcement nobody did.

use std::sync::Arc;

use ringwatch_core::event::{DnsInfo, HttpInfo, NetworkInfo, TlsInfo};
use ringwatch_core::pipeline::Stage;
use ringwatch_core::proc_table::ProcessTable;
use ringwatch_core::{Action, Activity, Backend, Decider, Decision, Domain, Event, Mode, SourceKind};
use ringwatch_policy::{Enforcement, Policy, PolicyStage, UserDb};

const POLICY: &str = r#"
rules:
  - id: lab-ok
    domain: network
    match: { dst: 10.9.0.0/16, not: { uid: 1000 } }
    action: observe
  - id: no-metadata
    domain: network
    match: { dst: 169.254.169.254/32 }
    action: block
  - id: web-through-proxy
    domain: network
    match: { dst_port: [80, 443], user: alice, protocol: tcp }
    action: redirect
  - id: slow-backup
    domain: network
    match: { exe: /usr/bin/rsync }
    action: { throttle: 1MiB/s }
  - id: evil-names
    domain: network
    match: { host: "*.evil.example", activity: [connect, send, dns] }
    action: block
  - id: batch-smtp
    domain: network
    match: { cgroup: /batch.slice, dst_port: 25 }
    action: block
  - id: shells-listening
    domain: network
    match: { exe: "**/*sh", activity: listen }
    action: alert
  - id: v6-docs
    domain: network
    match: { dst: "2001:db8::/32", dst_port: "8000-8999" }
    action: alert
"#;

fn policy() -> Policy {
    let users = UserDb::from_passwd("root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n");
    Policy::from_str_with_users(POLICY, "net.yaml", &users).expect("valid policy")
}

fn net(activity: Activity, dst: &str, port: u16, protocol: &str) -> Event {
    let mut ev = Event::new(Domain::Network, activity, Backend { mode: Mode::Kernel, source: SourceKind::Ebpf });
    ev.process.pid = 4242;
    ev.process.uid = 0;
    ev.process.exe = "/usr/bin/curl".into();
    ev.network = Some(NetworkInfo {
        protocol: protocol.into(),
        dst_ip: Some(dst.into()),
        dst_port: Some(port),
        ..NetworkInfo::default()
    });
    ev
}

fn decided(p: &Policy, ev: &Event) -> (Action, Option<String>) {
    let Decision { action, rule } = p.decide(ev, None);
    (action, rule)
}

fn by(action: Action, id: &str) -> (Action, Option<String>) {
    (action, Some(id.to_owned()))
}

const OBSERVED: (Action, Option<String>) = (Action::Observed, None);

#[test]
fn destinations_ports_and_protocols_decide() {
    let p = policy();
    assert_eq!(decided(&p, &net(Activity::Connect, "169.254.169.254", 80, "tcp")), by(Action::Blocked, "no-metadata"));
    assert_eq!(
        decided(&p, &net(Activity::Connect, "::ffff:169.254.169.254", 80, "tcp")),
        by(Action::Blocked, "no-metadata"),
        "an IPv4-mapped address is the IPv4 address"
    );
    assert_eq!(decided(&p, &net(Activity::Send, "169.254.169.254", 53, "udp")), by(Action::Blocked, "no-metadata"));
    let mut alice = net(Activity::Connect, "192.0.2.10", 443, "tcp");
    alice.process.uid = 1000;
    assert_eq!(decided(&p, &alice), by(Action::Redirected, "web-through-proxy"));
    let mut alice_udp = net(Activity::Send, "192.0.2.10", 443, "udp");
    alice_udp.process.uid = 1000;
    assert_eq!(decided(&p, &alice_udp), OBSERVED, "protocol: tcp");
    assert_eq!(decided(&p, &net(Activity::Connect, "192.0.2.10", 443, "tcp")), OBSERVED, "root is not alice");
    assert_eq!(decided(&p, &net(Activity::Connect, "2001:db8::5", 8080, "tcp")), by(Action::Alerted, "v6-docs"));
    assert_eq!(decided(&p, &net(Activity::Connect, "2001:db8::5", 9000, "tcp")), OBSERVED);
    assert_eq!(decided(&p, &net(Activity::Connect, "2001:db9::5", 8080, "tcp")), OBSERVED);
}

#[test]
fn a_redirected_connection_is_judged_by_its_original_destination() {
    let p = policy();
    let mut ev = net(Activity::Connect, "127.0.0.1", 15001, "tcp");
    ev.network.as_mut().expect("net").original_dst = Some("169.254.169.254:80".into());
    assert_eq!(decided(&p, &ev), by(Action::Blocked, "no-metadata"));
    let mut ev = net(Activity::Connect, "127.0.0.1", 15001, "tcp");
    ev.network.as_mut().expect("net").original_dst = Some("[2001:db8::1]:8443".into());
    assert_eq!(decided(&p, &ev), by(Action::Alerted, "v6-docs"));
}

#[test]
fn the_first_match_wins_and_not_excludes() {
    let p = policy();
    // lab-ok comes first and observes, except for uid 1000 (its `not`).
    let lab = net(Activity::Connect, "10.9.1.1", 25, "tcp");
    assert_eq!(decided(&p, &lab), by(Action::Observed, "lab-ok"));
    let mut lab_alice = net(Activity::Connect, "10.9.1.1", 80, "tcp");
    lab_alice.process.uid = 1000;
    assert_eq!(decided(&p, &lab_alice), by(Action::Redirected, "web-through-proxy"));
}

#[test]
fn exe_cgroup_and_activities_decide() {
    let p = policy();
    let mut rsync = net(Activity::Connect, "192.0.2.1", 873, "tcp");
    rsync.process.exe = "/usr/bin/rsync".into();
    assert_eq!(decided(&p, &rsync), (Action::Throttled, Some("slow-backup".into())));
    rsync.activity = Activity::Accept;
    assert_eq!(decided(&p, &rsync), OBSERVED, "rules apply to connect and send unless they say otherwise");

    let mut batch = net(Activity::Connect, "192.0.2.1", 25, "tcp");
    batch.process.cgroup = Some("/batch.slice/job-7.scope".into());
    assert_eq!(decided(&p, &batch), by(Action::Blocked, "batch-smtp"));
    batch.process.cgroup = Some("/batch.slicer".into());
    assert_eq!(decided(&p, &batch), OBSERVED);
    batch.process.cgroup = None;
    assert_eq!(decided(&p, &batch), OBSERVED, "an unknown cgroup matches no cgroup condition");

    let mut listen = net(Activity::Listen, "0.0.0.0", 4444, "tcp");
    listen.process.exe = "/usr/bin/bash".into();
    assert_eq!(decided(&p, &listen), by(Action::Alerted, "shells-listening"));
    listen.process.exe = "/usr/bin/python3".into();
    assert_eq!(decided(&p, &listen), OBSERVED);
}

#[test]
fn host_names_come_from_dns_http_tls_and_the_resolved_name() {
    let p = policy();
    let mut dns = net(Activity::Dns, "192.0.2.53", 53, "udp");
    dns.network.as_mut().expect("net").dns = Some(DnsInfo { query: "c2.EVIL.example.".into(), answers: vec![] });
    assert_eq!(decided(&p, &dns), by(Action::Blocked, "evil-names"));
    let with = |f: &dyn Fn(&mut NetworkInfo)| {
        let mut ev = net(Activity::Connect, "192.0.2.80", 8443, "tcp");
        f(ev.network.as_mut().expect("net"));
        decided(&p, &ev)
    };
    assert_eq!(with(&|n| n.http = Some(HttpInfo { host: "www.evil.example".into() })).0, Action::Blocked);
    assert_eq!(with(&|n| n.tls = Some(TlsInfo { sni: "api.evil.example".into() })).0, Action::Blocked);
    assert_eq!(with(&|n| n.dst_name = Some("x.evil.example".into())).0, Action::Blocked);
    assert_eq!(with(&|n| n.dst_name = Some("evil.example".into())), OBSERVED, "`*.` needs a subdomain");
    assert_eq!(with(&|_| {}), OBSERVED, "no name, no host match");
}

#[test]
fn network_events_do_not_match_other_domains_rules_and_vice_versa() {
    let p = Policy::from_str(
        "rules:\n  - id: p\n    domain: process\n    match: { exe: /usr/bin/curl }\n    action: kill\n",
        "p.yaml",
    )
    .expect("valid");
    assert_eq!(decided(&p, &net(Activity::Connect, "192.0.2.1", 80, "tcp")), OBSERVED);
    assert!(!p.may_deny(Domain::Network));
    let mut exec = net(Activity::Exec, "192.0.2.1", 80, "tcp");
    exec.domain = Domain::Process;
    assert_eq!(decided(&policy(), &exec), OBSERVED);
}

#[test]
fn may_deny_only_for_block_or_redirect() {
    let only = |action: &str| {
        Policy::from_str(
            &format!("rules:\n  - id: r\n    domain: network\n    match: {{ dst: 192.0.2.1 }}\n    action: {action}\n"),
            "p.yaml",
        )
        .expect("valid")
    };
    assert!(only("block").may_deny(Domain::Network));
    assert!(only("redirect").may_deny(Domain::Network));
    assert!(!only("{ throttle: 1MiB/s }").may_deny(Domain::Network));
    assert!(!only("alert").may_deny(Domain::Network));
    assert!(!only("block").may_deny(Domain::File));
    assert!(!only("block").may_deny(Domain::Process));
}

fn stage() -> PolicyStage {
    PolicyStage::new(Arc::new(policy()))
}

#[test]
fn the_stage_never_claims_an_enforcement_nobody_did() {
    let mut s = stage();
    let table = ProcessTable::empty();
    // A monitor event of a connect that got through although a block rule matches: alerted, not blocked.
    let mut ev = net(Activity::Connect, "169.254.169.254", 80, "tcp");
    s.apply(&mut ev, &table);
    assert_eq!((ev.action, ev.rule.as_deref()), (Action::Alerted, Some("no-metadata")));
    let mut ev = net(Activity::Connect, "192.0.2.1", 873, "tcp");
    ev.process.exe = "/usr/bin/rsync".into();
    s.apply(&mut ev, &table);
    assert_eq!((ev.action, ev.rule.as_deref()), (Action::Alerted, Some("slow-backup")));
    // An observe rule only names itself; nothing matched: nothing changes.
    let mut ev = net(Activity::Connect, "10.9.0.1", 80, "tcp");
    s.apply(&mut ev, &table);
    assert_eq!((ev.action, ev.rule.as_deref()), (Action::Observed, Some("lab-ok")));
    let mut ev = net(Activity::Connect, "192.0.2.1", 80, "tcp");
    s.apply(&mut ev, &table);
    assert_eq!((ev.action, ev.rule.as_deref()), (Action::Observed, None));
    // The agent's own connection (the proxy relaying to the real destination) is not judged.
    let mut ev = net(Activity::Connect, "169.254.169.254", 80, "tcp");
    ev.process.pid = std::process::id();
    s.apply(&mut ev, &table);
    assert_eq!((ev.action, ev.rule.as_deref()), (Action::Observed, None));
}

#[test]
fn the_stage_leaves_what_a_backend_enforced_alone() {
    let mut s = stage();
    let table = ProcessTable::empty();
    for (action, rule) in [
        (Action::Blocked, "no-metadata"),
        (Action::Redirected, "web-through-proxy"),
        (Action::Throttled, "slow-backup"),
    ] {
        let mut ev = net(Activity::Connect, "169.254.169.254", 80, "tcp");
        ev.action = action;
        ev.rule = Some(rule.into());
        s.apply(&mut ev, &table);
        assert_eq!((ev.action, ev.rule.as_deref()), (action, Some(rule)));
    }
    // A backend that set the action without a rule id keeps it too.
    let mut ev = net(Activity::Connect, "169.254.169.254", 80, "tcp");
    ev.action = Action::Blocked;
    s.apply(&mut ev, &table);
    assert_eq!((ev.action, ev.rule.as_deref()), (Action::Blocked, None));
}

#[test]
fn the_policy_says_where_each_rule_is_enforced() {
    let p = policy();
    let e: Vec<(&str, String)> = p
        .rules()
        .iter()
        .map(|r| {
            let kind = match r.enforcement() {
                Enforcement::NetworkKernel => "kernel",
                Enforcement::NetworkProxyHost => "proxy",
                Enforcement::NetworkHookOrAlert { .. } => "hook",
                Enforcement::NotEnforcing => "none",
                other => panic!("{other:?}"),
            };
            (r.id(), kind.to_owned())
        })
        .collect();
    let expected = [
        ("lab-ok", "none"),
        ("no-metadata", "kernel"),
        ("web-through-proxy", "kernel"),
        ("slow-backup", "kernel"),
        ("evil-names", "proxy"),
        ("batch-smtp", "kernel"),
        ("shells-listening", "none"),
        ("v6-docs", "none"),
    ];
    assert_eq!(e, expected.map(|(a, b)| (a, b.to_owned())));
    let plan = p.network_plan();
    let ids: Vec<&str> = plan.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["lab-ok", "no-metadata", "web-through-proxy", "slow-backup", "batch-smtp", "v6-docs"]);
    assert!(plan.rules[0].not.as_ref().is_some_and(|n| n.uids == [1000]));
    let hosts: Vec<(&str, &[String])> = plan.host_rules.iter().map(|h| (h.id.as_str(), h.hosts.as_slice())).collect();
    assert_eq!(hosts, [("evil-names", &["*.evil.example".to_owned()][..])]);
}
