//! `ringwatch collect`: the fleet's central consumer. SKELETON, being written.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

/// Options of `ringwatch collect`.
#[derive(Args, Debug)]
pub struct CollectArgs {
    /// NATS server URL.
    #[arg(long)]
    pub nats: String,
    /// The store events go into.
    #[arg(long)]
    pub store: PathBuf,
}

/// Runs the collector.
pub fn run(_args: CollectArgs) -> Result<()> {
    bail!("collect is not built yet")
}
