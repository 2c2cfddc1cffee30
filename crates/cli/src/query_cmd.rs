//! `ringwatch query`: SQL over the local store. SKELETON, being written.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

/// Options of `ringwatch query`.
#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The store to read.
    #[arg(long, default_value = ringwatch_store::DEFAULT_STORE_PATH)]
    pub store: PathBuf,
    /// The SQL query.
    pub sql: String,
}

/// Runs a query.
pub fn run(_args: QueryArgs) -> Result<()> {
    bail!("query is not built yet")
}
