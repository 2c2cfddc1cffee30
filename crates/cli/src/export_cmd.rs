//! `ringwatch export`: events from the local store as JSON lines. SKELETON, being written.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

/// Options of `ringwatch export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The store to read.
    #[arg(long, default_value = ringwatch_store::DEFAULT_STORE_PATH)]
    pub store: PathBuf,
}

/// Exports events.
pub fn run(_args: ExportArgs) -> Result<()> {
    bail!("export is not built yet")
}
