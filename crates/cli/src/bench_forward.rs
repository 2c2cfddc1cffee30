//! `ringwatch bench forward`. SKELETON, being written.

use anyhow::{Result, bail};

use crate::bench::BenchArgs;

/// Runs the forward benchmark.
pub fn run(_args: &BenchArgs) -> Result<()> {
    bail!("bench forward is not built yet")
}
