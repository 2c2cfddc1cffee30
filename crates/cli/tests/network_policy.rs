//! Network policy through the real binary: `ringwatch policy check` names the file, line and field of every bad
//! network rule and exits 2, and summarizes a good policy: which rules the kernel enforces, which go to the proxy,
//! which only the hooks can enforce.

mod common;

use common::{assert_policy_check_errors, policy_check_ok, temp_dir};

fn rule(m: &str, action: &str) -> String {
    format!("rules:\n  - id: net-rule\n    domain: network\n    match: {m}\n    action: {action}\n")
}

#[test]
fn bad_network_policies_exit_2_naming_the_line() {
    let dir = temp_dir("net-policy-check");
    let cases = [
        ("bad-cidr", rule("{ dst: 10.0.0.0/33 }", "block"), ":4: rules[0].match.dst: `10.0.0.0/33`: prefix length"),
        ("bad-address", rule("{ dst: [10.0.0.1, 10.0.0.300] }", "block"), ":4: rules[0].match.dst[1]: `10.0.0.300` is not an IP address"),
        (
            "port-70000",
            "rules:\n  - id: p\n    domain: network\n    match:\n      dst_port:\n        - 443\n        - 70000\n    action: block\n".to_owned(),
            ":7: rules[0].match.dst_port[1]: port 70000 is out of range (0 to 65535)",
        ),
        ("backwards-range", rule("{ dst_port: \"9000-8000\" }", "block"), ":4: rules[0].match.dst_port: port range `9000-8000` is backwards"),
        ("unknown-action", rule("{ dst: 192.0.2.1 }", "drop"), ":5: rules[0].action: unknown action `drop`; expected observe, alert, block, redirect or { throttle: RATE }"),
        ("bad-rate", rule("{ dst: 192.0.2.1 }", "{ throttle: 1Mbps }"), ":5: rules[0].action.throttle: unknown rate unit `Mbps`"),
        ("zero-rate", rule("{ dst: 192.0.2.1 }", "{ throttle: 0KiB/s }"), ":5: rules[0].action.throttle: rate `0KiB/s` is zero"),
        ("unknown-field", rule("{ dst: 192.0.2.1, interface: eth0 }", "block"), ":4: rules[0].match.interface: unknown field `interface`"),
        ("unknown-activity", rule("{ dst: 192.0.2.1, activity: [connect, ping] }", "block"), ":4: rules[0].match.activity[1]: unknown activity `ping`"),
        ("bad-cgroup", rule("{ cgroup: system.slice }", "block"), ":4: rules[0].match.cgroup: `system.slice` is not a cgroup path"),
        ("dns-not-a-flag", "network:\n  dns: sometimes\n".to_owned(), ":2: network.dns: expected true or false"),
        ("network-unknown-setting", "network:\n  dns: true\n  pcap: yes\n".to_owned(), ":3: network.pcap: unknown field `pcap`; expected one of dns"),
        ("keystroke-rule", "rules:\n  - id: k\n    domain: keystroke\n    match: { exe: /a }\n    action: alert\n".to_owned(), ":3: rules[0].domain: domain `keystroke` rules are not supported"),
    ];
    assert_policy_check_errors(dir.path(), cases);
}

#[test]
fn a_valid_network_policy_checks_ok_and_says_where_each_rule_is_enforced() {
    let dir = temp_dir("net-policy-ok");
    let text = policy_check_ok(
        dir.path(),
        "net.yaml",
        r#"rules:
  - id: no-metadata
    domain: network
    match: { dst: 169.254.169.254/32 }
    action: block
  - id: web-through-proxy
    domain: network
    match: { dst_port: [80, 443], uid: 1000, protocol: tcp }
    action: redirect
  - id: slow-backup
    domain: network
    match: { exe: /usr/bin/rsync }
    action: { throttle: 1MiB/s }
  - id: evil-names
    domain: network
    match: { host: "*.evil.example" }
    action: block
  - id: curl-smtp
    domain: network
    match: { exe: "**/curl", dst_port: 25 }
    action: block
  - id: lab
    domain: network
    match: { dst: "fd00::/8" }
    action: alert
"#,
    );
    assert!(text.contains("ok, 6 rule(s)"), "{text}");
    assert!(text.contains("no-metadata: block enforced in the kernel at connect/send"), "{text}");
    assert!(text.contains("web-through-proxy: redirect enforced in the kernel"), "{text}");
    assert!(text.contains("by the hook (preload) in user mode"), "{text}");
    assert!(text.contains("slow-backup: throttle 1MiB/s enforced in the kernel"), "{text}");
    assert!(text.contains("the hook (preload) cannot throttle"), "{text}");
    assert!(text.contains("evil-names: block by host name in the proxy, on redirected connections only"), "{text}");
    assert!(
        text.contains("curl-smtp: block by the hook (preload) only") && text.contains("the glob `**/curl`"),
        "{text}"
    );
    assert!(text.contains("lab: alert, nothing to enforce"), "{text}");
    assert!(
        text.contains("network: 6 rule(s); 4 in the kernel list (3 enforcing), 1 host rule(s) for the proxy, 1 outside the kernel (hook or alert); proxy: yes, throttling: yes"),
        "{text}"
    );
    assert!(text.contains("keystrokes: capture off"), "{text}");
    assert!(!text.contains("note: host rules"), "{text}");
    assert!(!text.contains("DNS capture off"), "{text}");
    let text = policy_check_ok(dir.path(), "no-dns.yaml", "network:\n  dns: false\n");
    assert!(text.contains("network: DNS capture off (network.dns: false)"), "{text}");

    // Host rules without any redirect: the summary says they cannot act.
    let text = policy_check_ok(
        dir.path(),
        "hosts-only.yaml",
        "rules:
  - id: evil
    domain: network
    match: { host: evil.example }
    action: block
",
    );
    assert!(text.contains("note: host rules act only on connections a kernel `redirect` rule sends"), "{text}");
}
