//! `ringwatch policy check FILE`: validate a policy and say where each rule is enforced.

use std::path::Path;

use anyhow::Result;
use ringwatch_policy::{Enforcement, Policy};

/// Loads the policy (every error names its line and field; exit 2) and prints, per rule, where it is enforced.
pub fn check(file: &Path) -> Result<()> {
    let policy = Policy::load(file)?;
    let kill = policy.exec_kill_list();
    println!("{}: ok, {} rule(s)", file.display(), policy.rules().len());
    for rule in policy.rules() {
        let id = rule.id();
        match rule.enforcement() {
            Enforcement::NotEnforcing => {
                println!("  {id}: {}, nothing to enforce", format!("{:?}", rule.action()).to_lowercase())
            }
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
    Ok(())
}
