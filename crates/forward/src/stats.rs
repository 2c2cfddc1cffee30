//! Counters of the forwarder, shared with the metrics endpoint while the agent runs.

use std::sync::atomic::{AtomicBool, AtomicU64};

/// Live counters of one forwarder. Field names are read by `crates/cli/src/metrics.rs`; keep them.
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Bytes waiting in the on-disk spool (written, not yet acknowledged by JetStream).
    pub spool_bytes: AtomicU64,
    /// Events JetStream acknowledged.
    pub published: AtomicU64,
    /// Events dropped because the spool reached its size cap (reported as sensor/drop events too).
    pub spool_dropped: AtomicU64,
    /// Publish or connection failures (each retried; the events stay in the spool).
    pub errors: AtomicU64,
    /// True while connected to the NATS server.
    pub connected: AtomicBool,
}
