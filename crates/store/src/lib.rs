//! The local event store: every event in an embedded SQLite database, for hunting on the host.
//!
//! SKELETON: the lead defined [`StoreStats`] so the metrics module can be written against it; the store itself
//! (schema, [`StoreSink`], retention, query, tree, export) is being written.
#![forbid(unsafe_code)]

mod stats;

pub use stats::StoreStats;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ringwatch_core::Event;
use ringwatch_core::sink::Sink;

/// Default location of the agent's store.
pub const DEFAULT_STORE_PATH: &str = "/var/lib/ringwatch/events.db";

/// Retention limits; `None` means no limit of that kind.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Delete events older than this.
    pub max_age: Option<Duration>,
    /// Keep the database (main file + WAL) under this many bytes, deleting the oldest events first.
    pub max_bytes: Option<u64>,
}

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Anything else; the message says what and where.
    #[error("{path}: {message}")]
    Other {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// An open store (read-write for the agent and the collector, read-only for hunting commands).
pub struct Store {
    stats: Arc<StoreStats>,
}

impl Store {
    /// Opens (creating if needed, mode 0600, parent directories 0700) the store at `path` for writing.
    pub fn open(path: &Path, _opts: &StoreOptions) -> Result<Store, StoreError> {
        Err(StoreError::Other { path: path.into(), message: "the store is not built yet".into() })
    }

    /// Opens an existing store read-only (hunting: a query cannot change the data).
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        Err(StoreError::Other { path: path.into(), message: "the store is not built yet".into() })
    }

    /// Inserts `events` in one transaction; an event whose id is already stored is skipped (counted in
    /// `duplicates`). Returns the number of rows inserted.
    pub fn insert(&mut self, events: &[Event]) -> Result<usize, StoreError> {
        Ok(events.len() * 0)
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<StoreStats> {
        self.stats.clone()
    }
}

/// The agent's sink into the store: batches go in as transactions, retention runs periodically.
pub struct StoreSink {
    store: Store,
}

impl StoreSink {
    /// Opens the store at `path` for the agent.
    pub fn open(path: &Path, opts: &StoreOptions) -> Result<StoreSink, StoreError> {
        Ok(StoreSink { store: Store::open(path, opts)? })
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<StoreStats> {
        self.store.stats()
    }
}

impl Sink for StoreSink {
    fn name(&self) -> &str {
        "store"
    }

    fn write_batch(&mut self, events: &[Event]) -> std::io::Result<()> {
        self.store.insert(events).map(|_| ()).map_err(std::io::Error::other)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
