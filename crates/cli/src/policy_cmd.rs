//! `ringwatch policy check FILE`: validate a policy and say where each rule is enforced.

use std::path::Path;

use anyhow::Result;
use ringwatch_policy::Policy;

/// Loads the policy (every error names its line and field; exit 2) and summarizes it.
pub fn check(file: &Path) -> Result<()> {
    let policy = Policy::load(file)?;
    let kill = policy.exec_kill_list();
    println!("{}: ok, {} rule(s)", file.display(), policy.rules().len());
    for (path, idx) in kill.exact.iter().chain(kill.dir_prefixes.iter()) {
        let id = kill.rule_ids.get(*idx as usize).map(String::as_str).unwrap_or("?");
        println!("  {id}: kill at exec of {path} enforced in the kernel (process/ebpf)");
    }
    Ok(())
}
