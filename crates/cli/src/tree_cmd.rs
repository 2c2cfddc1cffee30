//! `ringwatch tree`: a process tree from the local store. SKELETON, being written.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

/// Options of `ringwatch tree`.
#[derive(Args, Debug)]
pub struct TreeArgs {
    /// The store to read.
    #[arg(long, default_value = ringwatch_store::DEFAULT_STORE_PATH)]
    pub store: PathBuf,
    /// A pid (its most recent process) or a process guid.
    pub process: String,
}

/// Prints a tree.
pub fn run(_args: TreeArgs) -> Result<()> {
    bail!("tree is not built yet")
}
