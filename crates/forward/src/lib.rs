//! Fleet forwarding: events to NATS JetStream through an on-disk spool, and the central collector.
//!
//! An agent started with `--nats` adds a [`ForwardSink`]: each batch is appended to the spool on disk (the pipeline
//! never waits on the network), and a publisher thread sends spooled events to the `RINGWATCH` stream under
//! `ringwatch.<host>.<domain>`, with the event id as the JetStream message id, and trims the spool as JetStream
//! acknowledges them. `ringwatch collect` ([`collector`]) pulls from the stream with a durable consumer and stores
//! each batch, acknowledging only after the store committed it; the store keeps one row per event id, so
//! at-least-once delivery ends up stored exactly once. docs/fleet.md describes a whole fleet.
//!
//! # Layout
//!
//! - [`spool`]: segment files, record format, cursor, size cap, lock; durability policy.
//! - `publisher`: the background thread that pipelines publishes and moves the spool cursor.
//! - [`connect`]: client options (credentials, TLS), connecting with backoff, the stream's configuration.
//! - [`subject`]: stream name and subjects; a host name folded into one subject token.
//! - [`collector`]: the central consumer.
//! - [`local_server`]: a nats-server child on a free loopback port, for tests and the bench.
//! - `sink`: [`ForwardSink`], the agent's sink.
//! - [`ForwardStats`]: live counters for the metrics endpoint.
#![forbid(unsafe_code)]

pub mod collector;
pub mod connect;
pub mod local_server;
mod publisher;
mod sink;
pub mod spool;
mod stats;
pub mod subject;

pub use sink::{DRAIN_TIMEOUT, ForwardSink};
pub use stats::ForwardStats;

use std::path::PathBuf;

/// Default spool directory of the agent.
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/ringwatch/spool";

/// Connection options passed through to the NATS client.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// Server URL(s), comma-separated: `nats://host:4222` (user:password@ in the URL is honoured).
    pub url: String,
    /// A `.creds` file (JWT + nkey seed).
    pub creds: Option<PathBuf>,
    /// CA certificate (PEM) to verify the server; implies TLS.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub tls_key: Option<PathBuf>,
}

/// Options of the agent's forwarder.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// How to reach NATS.
    pub nats: NatsOptions,
    /// Where events wait until JetStream acknowledges them.
    pub spool_dir: PathBuf,
    /// Spool size cap in bytes; events beyond it are dropped and counted.
    pub spool_max_bytes: u64,
}

/// Why forwarding (or collecting) could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Bad options: a missing URL, an unreadable or wrong credentials/certificate file.
    #[error("{0}")]
    Config(String),
    /// Another agent holds the spool directory.
    #[error(
        "spool directory {} is in use by another ringwatch agent{}: give each agent its own --spool",
        dir.display(),
        if holder.is_empty() { String::new() } else { format!(" (pid {holder})") }
    )]
    SpoolLocked {
        /// The spool directory.
        dir: PathBuf,
        /// Pid written in the lock file by the holder, if readable.
        holder: String,
    },
    /// The spool directory or one of its files could not be used.
    #[error("spool {}: {message}", path.display())]
    Spool {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The collector's store failed; unacknowledged messages are redelivered to the next run.
    #[error("store: {0}")]
    Store(#[from] ringwatch_store::StoreError),
    /// Anything else; the message says what.
    #[error("{0}")]
    Other(String),
}
