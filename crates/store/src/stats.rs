//! Counters of the store, shared with the metrics endpoint while the agent runs.

use std::sync::atomic::AtomicU64;

/// Live counters of one store. Field names are read by `crates/cli/src/metrics.rs`; keep them.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Size of the database on disk (main file + WAL), bytes, sampled after each batch.
    pub size_bytes: AtomicU64,
    /// Rows inserted.
    pub inserted: AtomicU64,
    /// Events skipped because a row with the same id was already stored.
    pub duplicates: AtomicU64,
    /// Rows deleted by retention (age or size cap).
    pub retention_deleted: AtomicU64,
    /// Failed batch writes.
    pub errors: AtomicU64,
}
