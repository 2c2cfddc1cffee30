//! [`StoreSink`]: the agent's pipeline sink into the store, with a writer thread that group-commits.
//!
//! Why a thread and group commit: each SQLite commit writes every page it dirtied to the WAL, and with the indexes
//! hunting needs, a commit of a few events dirties as many index pages as a commit of thousands. Committing each
//! pipeline batch made the store write ~5x its data and cap ingest far below the event rates a busy host reaches.
//! So the sink hands batches to a writer thread that commits at most every [`GROUP_DELAY`] (or
//! [`GROUP_EVENTS`] events, whichever comes first), in one transaction. Hunters see events at most that much later.
//!
//! The thread also keeps SQLite's latency off the pipeline: a database locked by another process makes the writer
//! wait and retry (every [`LOCKED_BACKOFF`]) while the pipeline keeps streaming to the other sinks. The queue to
//! the writer is bounded; when it is full the sink waits at most `full_queue_wait` and then refuses the batch.
//! Failures the writer meets are returned by the next `write_batch` or `flush`, so the pipeline reports them as
//! `sensor`/`error` events like any sink failure.
//!
//! `write_batch` prepares the rows ([`RowBatch`]: JSON, columns, hashes) on the pipeline thread, so that the writer
//! thread does SQLite's work only; the writer hands committed batches back to be filled again.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, Sender};

use ringwatch_core::Event;
use ringwatch_core::event_id::EventIds;
use ringwatch_core::sink::Sink;

use crate::error::StoreError;
use crate::row::RowBatch;
use crate::stats::StoreStats;
use crate::store::{Store, StoreOptions};
use crate::writer::{self, Command, Failures};

/// Longest a group of events waits for its commit.
pub const GROUP_DELAY: Duration = Duration::from_millis(250);
/// A group is committed as soon as it has this many events.
pub const GROUP_EVENTS: usize = 32_768;
/// How long the writer waits before retrying a locked database.
pub const LOCKED_BACKOFF: Duration = Duration::from_secs(2);
/// Pipeline batches that may wait for the writer.
const QUEUE_BATCHES: usize = 64;
/// Prepared batches kept for reuse once committed (about 1.5 MB each); the rest are freed.
const SPARE_BATCHES: usize = 8;
/// Default wait for room in a full queue before a batch is refused: short, so a slow disk cannot stall the
/// pipeline, long enough to absorb a commit.
const DEFAULT_FULL_QUEUE_WAIT: Duration = Duration::from_millis(50);
/// Longest `flush` waits for the writer to commit.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// The agent's sink into the store.
pub struct StoreSink {
    path: PathBuf,
    stats: Arc<StoreStats>,
    to_writer: Option<Sender<Command>>,
    writer: Option<JoinHandle<()>>,
    failures: Failures,
    full_queue_wait: Duration,
    /// Ids for events that arrive without one (the pipeline assigns ids; direct users may not).
    ids: EventIds,
    /// Batches the writer is done with, to be filled again (see [`RowBatch`]).
    spare: Receiver<RowBatch>,
}

impl StoreSink {
    /// Opens the store at `path` for the agent (see [`Store::open`]) and starts its writer thread.
    pub fn open(path: &Path, opts: &StoreOptions) -> Result<StoreSink, StoreError> {
        let store = Store::open(path, opts)?;
        let stats = store.stats();
        let failures: Failures = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_BATCHES);
        let (spare_tx, spare) = crossbeam_channel::bounded(SPARE_BATCHES);
        let writer = {
            let failures = failures.clone();
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || writer::run(store, rx, spare_tx, failures))
                .map_err(|source| StoreError::Io { path: path.into(), what: "starting the writer thread", source })?
        };
        Ok(StoreSink {
            path: path.into(),
            stats,
            to_writer: Some(tx),
            writer: Some(writer),
            failures,
            full_queue_wait: DEFAULT_FULL_QUEUE_WAIT,
            ids: EventIds::new(),
            spare,
        })
    }

    /// How long `write_batch` waits for room when the writer is behind before refusing the batch. The agent keeps
    /// the short default; a benchmark that must not drop waits longer.
    pub fn with_full_queue_wait(mut self, wait: Duration) -> StoreSink {
        self.full_queue_wait = wait;
        self
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<StoreStats> {
        self.stats.clone()
    }

    /// Failures the writer met since the last call, as one error.
    fn take_failures(&self) -> io::Result<()> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.is_empty() {
            return Ok(());
        }
        let message = failures.join("; ");
        failures.clear();
        Err(io::Error::other(message))
    }

    fn refuse(&self, events: usize, why: &str) -> io::Error {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        io::Error::other(format!("{}: {events} events not stored: {why}", self.path.display()))
    }
}

impl Sink for StoreSink {
    fn name(&self) -> &str {
        "store"
    }

    fn write_batch(&mut self, events: &[Event]) -> io::Result<()> {
        let Some(tx) = self.to_writer.clone() else {
            return Err(self.refuse(events.len(), "the store writer has stopped"));
        };
        let mut rows = self.spare.try_recv().unwrap_or_default();
        rows.clear();
        for ev in events {
            rows.push(ev, &mut self.ids)?;
        }
        match tx.send_timeout(Command::Batch(rows), self.full_queue_wait) {
            Ok(()) => self.take_failures(),
            Err(SendTimeoutError::Timeout(_)) => {
                let waiting = self.take_failures().err().map_or_else(String::new, |e| format!(" ({e})"));
                Err(self.refuse(events.len(), &format!("the store writer is behind{waiting}")))
            }
            Err(SendTimeoutError::Disconnected(_)) => Err(self.refuse(events.len(), "the store writer has stopped")),
        }
    }

    /// Waits until everything written so far is committed (or failed) and checkpointed into the database file,
    /// then reports any failure. The pipeline flushes once, when it stops.
    fn flush(&mut self) -> io::Result<()> {
        if let Some(tx) = &self.to_writer {
            let (done_tx, done_rx) = crossbeam_channel::bounded(1);
            if tx.send(Command::Flush(done_tx)).is_ok() && done_rx.recv_timeout(FLUSH_TIMEOUT).is_err() {
                return Err(io::Error::other(format!(
                    "{}: the store writer did not commit within {FLUSH_TIMEOUT:?}",
                    self.path.display()
                )));
            }
        }
        self.take_failures()
    }
}

impl Drop for StoreSink {
    /// Closes the queue; the writer commits what it holds and exits.
    fn drop(&mut self) {
        drop(self.to_writer.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "the store writer thread panicked");
        }
    }
}
