//! `ringwatch bench store`. SKELETON, being written.

use anyhow::{Result, bail};

use crate::bench::BenchArgs;

/// Runs the store benchmark.
pub fn run(_args: &BenchArgs) -> Result<()> {
    bail!("bench store is not built yet")
}
