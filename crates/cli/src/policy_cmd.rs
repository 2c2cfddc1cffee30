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
        }
    }
    Ok(())
}
