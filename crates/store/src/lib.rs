//! The local event store: every event in an embedded SQLite database, for hunting on the host.
//!
//! The agent writes through [`StoreSink`] (one transaction per pipeline batch, retention by age and size), the
//! fleet collector through [`Store::insert`] (exactly once per event id), and the hunting commands read through
//! [`Store::open_read_only`]: [`Store::query`] for any SQL, [`Store::process_tree`], [`Store::export`].
//!
//! # Layout
//!
//! - [`schema`]: tables, indexes and per-domain views, the version check; [`schema::describe`] prints them.
//! - `open`: file creation (0600 before SQLite touches it), pragmas for writers and readers.
//! - `store`: [`Store`], the connection, batches and retention passes.
//! - `row`: events as prepared rows (columns, kind, process context), made on the pipeline thread;
//!   `json_parts`: an event's JSON cut into the parts the schema stores.
//! - `insert`: one transaction per group of rows, each process state stored once per transaction.
//! - `retention`: deleting by age and by size, and giving the space back to the file system.
//! - `sink`: [`StoreSink`], the pipeline sink; `writer`: its thread, which group-commits and retries a locked
//!   database.
//! - `checkpoint`: WAL checkpoints on a thread of their own, with the WAL kept bounded.
//! - `query`: streaming any SQL to a [`RowVisitor`].
//! - `tree`: [`ProcessTree`]s by guid links.
//! - `export`: the stored JSON, filtered ([`ExportFilter`]).
//! - `stats`: [`StoreStats`], the counters the metrics endpoint reads.
//! - `error`: [`StoreError`], SQLite failures mapped to advice.
#![forbid(unsafe_code)]

mod checkpoint;
mod error;
mod export;
mod insert;
mod json_parts;
mod open;
mod query;
mod retention;
mod row;
pub mod schema;
mod sink;
mod stats;
mod store;
mod tree;
mod writer;

pub use error::StoreError;
pub use export::ExportFilter;
pub use open::WRITER_BUSY_TIMEOUT;
pub use query::{RowVisitor, Value};
pub use retention::RetentionReport;
pub use sink::{GROUP_DELAY, GROUP_EVENTS, LOCKED_BACKOFF, StoreSink};
pub use stats::StoreStats;
pub use store::{RETENTION_INTERVAL, Store, StoreOptions};
pub use tree::{ProcessInfo, ProcessRef, ProcessTree, TreeEvent, TreeNode, TreeOptions};

/// Default location of the agent's store.
pub const DEFAULT_STORE_PATH: &str = "/var/lib/ringwatch/events.db";
