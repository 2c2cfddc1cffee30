//! `ringwatch probe`: which backend of each domain can run here, and why not.

use anyhow::Result;

use crate::backends::probe_all;

/// Prints the probe table (or JSON lines). Always exits 0: "cannot run here" is an answer, not an error.
pub fn run(json: bool) -> Result<()> {
    for line in ringwatch_domains::probe::ensure_mounts() {
        tracing::info!("{line}");
    }
    let probes = probe_all();
    if json {
        for (_, p) in &probes {
            println!("{}", serde_json::to_string(p)?);
        }
        return Ok(());
    }
    println!("{:<10} {:<7} {:<15} {:<4} DETAIL", "DOMAIN", "MODE", "SOURCE", "OK");
    for (_, p) in &probes {
        println!("{p}");
    }
    Ok(())
}
