//! `ringwatch policy check FILE`: validate a policy and say where each rule is enforced.

use std::path::Path;

use anyhow::Result;
use ringwatch_policy::{Enforcement, Policy, RuleAction};

/// Loads the policy (every error names its line and field; exit 2) and prints, per rule, where it is enforced.
pub fn check(file: &Path) -> Result<()> {
    let policy = Policy::load(file)?;
    let kill = policy.exec_kill_list();
    println!("{}: ok, {} rule(s)", file.display(), policy.rules().len());
    for rule in policy.rules() {
        let id = rule.id();
        match rule.enforcement() {
            Enforcement::NotEnforcing => println!("  {id}: {}, nothing to enforce", rule.action()),
            Enforcement::KernelAtExec => {
                let idx = kill.rule_ids.iter().position(|r| r == id);
                let paths: Vec<&str> = kill
                    .exact
                    .iter()
                    .chain(kill.dir_prefixes.iter())
                    .filter(|(_, i)| Some(*i as usize) == idx)
                    .map(|(p, _)| p.as_str())
                    .collect();
                println!(
                    "  {id}: kill at exec of {} enforced in the kernel (process/ebpf), by the hook (preload), \
                     or right after the event (proc_connector)",
                    paths.join(", ")
                );
            }
            Enforcement::UserSpace { reason } => {
                println!("  {id}: enforced right after the event from user space, or by the hook (preload): {reason}")
            }
            Enforcement::FilePermission => println!(
                "  {id}: deny on {} refused before it happens (fanotify permission events: EPERM; preload: EACCES)",
                rule.activities().iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
            ),
            Enforcement::AlertOnly { reason } => println!("  {id}: alerted, not refused: {reason}"),
            Enforcement::NetworkKernel => println!(
                "  {id}: {} enforced in the kernel at connect/send (network/ebpf cgroup programs){}",
                rule.action(),
                if matches!(rule.action(), RuleAction::Throttle { .. }) {
                    "; the hook (preload) cannot throttle: alerted there"
                } else {
                    ", by the hook (preload) in user mode"
                }
            ),
            Enforcement::NetworkProxyHost => println!(
                "  {id}: block by host name in the proxy, on redirected connections only; elsewhere by the hook \
                 (preload) when it knows the name, else alerted"
            ),
            Enforcement::NetworkHookOrAlert { reason } if matches!(rule.action(), RuleAction::Throttle { .. }) => {
                println!("  {id}: {}: alerted, not enforced (no hook can throttle): {reason}", rule.action())
            }
            Enforcement::NetworkHookOrAlert { reason } => println!(
                "  {id}: {} by the hook (preload) only; with the kernel backend it is alerted, not enforced: {reason}",
                rule.action()
            ),
        }
    }
    if let Some(t) = policy.exec_trust() {
        println!(
            "  exec_trust: trusted_only; execs outside {} path pattern(s) without one of {} allowed hash(es) are denied",
            t.allow_paths().patterns().len(),
            t.allow_sha256().len()
        );
    }
    let plan = policy.file_permission_plan();
    if !plan.is_empty() {
        let describe = |m: &ringwatch_core::compiled::PermissionMarks| {
            if m.everywhere {
                "every filesystem (each one waits for a verdict)".to_owned()
            } else {
                format!("{} file(s) by inode, {} directory prefix(es)", m.exact_paths.len(), m.dir_prefixes.len())
            }
        };
        println!(
            "  file permission marks: open: {}; exec: {}; hashing: {}",
            if plan.open.is_empty() { "none".to_owned() } else { describe(&plan.open) },
            if plan.exec.is_empty() { "none".to_owned() } else { describe(&plan.exec) },
            if plan.needs_hash { "yes" } else { "no" }
        );
    }
    if let Some(events) = &policy.file_settings().events {
        let names: Vec<&str> = events.iter().map(|a| a.as_str()).collect();
        println!("  file monitor: watches {} only (files.events)", names.join(", "));
    }
    print_network_and_keystrokes(&policy);
    Ok(())
}

/// The network plan (what the kernel and the proxy enforce) and whether keystrokes are captured.
fn print_network_and_keystrokes(policy: &Policy) {
    let net = policy.network_plan();
    let network_rules = policy.rules().iter().filter(|r| r.domain() == ringwatch_core::Domain::Network).count();
    if network_rules > 0 {
        let kernel_enforced = policy.rules().iter().filter(|r| r.enforcement() == &Enforcement::NetworkKernel).count();
        let user_only =
            policy.rules().iter().filter(|r| matches!(r.enforcement(), Enforcement::NetworkHookOrAlert { .. })).count();
        println!(
            "  network: {network_rules} rule(s); {} in the kernel list ({kernel_enforced} enforcing), {} host rule(s) \
             for the proxy, {user_only} outside the kernel (hook or alert); proxy: {}, throttling: {}",
            net.rules.len(),
            net.host_rules.len(),
            if net.needs_proxy() { "yes" } else { "no" },
            if net.needs_throttle() { "yes" } else { "no" }
        );
        if net.host_rules.iter().any(|h| h.action == ringwatch_core::compiled::NetAction::Block) && !net.needs_proxy() {
            println!(
                "  note: host rules act only on connections a kernel `redirect` rule sends to the proxy, and no rule \
                 does"
            );
        }
    }
    if !policy.network_settings().dns {
        println!("  network: DNS capture off (network.dns: false): no dns events, no dst_name on connects");
    }
    let keys = policy.keystroke_plan();
    if !keys.enabled {
        println!("  keystrokes: capture off");
        return;
    }
    let scope = |what: &str, n: usize| if n == 0 { format!("every {what}") } else { format!("{n} {what}(s)") };
    println!(
        "  keystrokes: capture ON for {}, {}, {}; echo-off redaction {}; idle flush {:?}; {} DLP pattern(s); \
         retention {}",
        scope("user", keys.uids.len()),
        scope("group", keys.gids.len()),
        if keys.ttys.is_empty() { "every terminal".to_owned() } else { format!("terminals {}", keys.ttys.join(", ")) },
        if keys.redact_echo_off { "on" } else { "OFF" },
        keys.idle_flush,
        keys.alert_patterns.len(),
        keys.retention.map_or_else(|| "the store's default".to_owned(), |d| format!("{}s", d.as_secs()))
    );
}
