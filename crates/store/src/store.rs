//! [`Store`]: one connection to the database, the batched insert path, and retention passes.
//!
//! Every batch is one transaction (see `insert`): `INSERT OR IGNORE` on the event id, so a resent event (the fleet
//! collector sees at-least-once delivery) is stored once and counted in `duplicates`. After each commit the WAL is
//! handed to the checkpoint thread (see `checkpoint`). Retention runs at open and then at most every
//! [`RETENTION_INTERVAL`], after a batch, so it costs nothing per event; whatever it deletes is logged and stored as
//! a `sensor`/`drop` event.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use ringwatch_core::event_id::EventIds;
use ringwatch_core::{Activity, Event};

use crate::checkpoint::{Checkpointer, WAL_SOFT_LIMIT};
use crate::error::StoreError;
use crate::insert;
use crate::open::{self, size_on_disk};
use crate::retention::{self, RetentionReport};
use crate::row::RowBatch;
use crate::stats::StoreStats;

/// How often the writer checks the retention limits.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(10);

/// Events per [`RowBatch`] when [`Store::insert`] prepares them (a pipeline batch's size).
const PREPARE_CHUNK: usize = 1024;

/// Component name of the store's own sensor events.
const RETENTION_COMPONENT: &str = "store/retention";

/// Retention limits; `None` means no limit of that kind.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Delete events older than this.
    pub max_age: Option<Duration>,
    /// Keep the database (main file + WAL) under this many bytes, deleting the oldest events first.
    pub max_bytes: Option<u64>,
    /// Delete keystroke events older than this (the policy's `keystrokes.retention`; usually shorter than
    /// `max_age`, since keystrokes are the most sensitive data the sensor keeps).
    pub keystroke_max_age: Option<Duration>,
}

/// An open store (read-write for the agent and the collector, read-only for hunting commands).
pub struct Store {
    pub(crate) conn: Connection,
    pub(crate) path: PathBuf,
    opts: StoreOptions,
    writable: bool,
    stats: Arc<StoreStats>,
    /// Ids for events that arrive without one, and for the store's own sensor events.
    own_ids: EventIds,
    /// Host name of the latest stored event, stamped on the store's own events.
    host: String,
    last_retention: Instant,
    /// Checkpoints the WAL off this thread (writers only). Declared after `conn` so that it closes last: the last
    /// connection to close checkpoints what is left and removes the WAL.
    checkpointer: Option<Checkpointer>,
}

/// How big the WAL may grow before the writer restarts it: [`WAL_SOFT_LIMIT`], or less under a small size cap
/// (the WAL counts towards it).
fn wal_limit(opts: &StoreOptions) -> u64 {
    opts.max_bytes.map_or(WAL_SOFT_LIMIT, |max| (max / 8).clamp(1 << 20, WAL_SOFT_LIMIT))
}

impl Store {
    /// Opens (creating if needed, mode 0600, parent directories 0700) the store at `path` for writing, and applies
    /// the retention limits once.
    pub fn open(path: &Path, opts: &StoreOptions) -> Result<Store, StoreError> {
        let conn = open::open_writer(path)?;
        let mut store = Store::new(conn, path, opts.clone(), true);
        let sqlite = |what| move |e| StoreError::from_sqlite(path, what, e);
        let wal_limit = wal_limit(opts);
        store.checkpointer = Some(Checkpointer::start(path, wal_limit)?);
        // From now on the checkpointer checkpoints, not SQLite after each commit; and a WAL that starts over keeps
        // its file up to the limit rather than giving it back and growing it again (see `checkpoint`).
        store
            .conn
            .execute_batch(&format!("PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {wal_limit};"))
            .map_err(sqlite("setting pragmas"))?;
        store.apply_retention()?;
        store.update_size();
        Ok(store)
    }

    /// Opens an existing store read-only (hunting: a query cannot change the data).
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let conn = open::open_reader(path)?;
        Ok(Store::new(conn, path, StoreOptions::default(), false))
    }

    fn new(conn: Connection, path: &Path, opts: StoreOptions, writable: bool) -> Store {
        Store {
            conn,
            path: path.to_path_buf(),
            opts,
            writable,
            stats: Arc::default(),
            own_ids: EventIds::new(),
            host: String::new(),
            last_retention: Instant::now(),
            checkpointer: None,
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Inserts `events` in one transaction; an event whose id is already stored is skipped (counted in
    /// `duplicates`). An event without an id gets one. Returns the number of rows inserted.
    ///
    /// Retention runs after the batch when [`RETENTION_INTERVAL`] has passed; its failure is logged and counted
    /// in `errors` but does not fail the insert, whose rows are committed.
    pub fn insert(&mut self, events: &[Event]) -> Result<usize, StoreError> {
        let rows = self.prepare_rows(events)?;
        self.insert_rows(&rows)
    }

    /// Turns events into rows (the sink does this on the pipeline thread, see [`RowBatch`]).
    fn prepare_rows(&mut self, events: &[Event]) -> Result<Vec<RowBatch>, StoreError> {
        events
            .chunks(PREPARE_CHUNK)
            .map(|chunk| {
                let mut batch = RowBatch::default();
                chunk.iter().try_for_each(|ev| batch.push(ev, &mut self.own_ids)).map(|()| batch)
            })
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::Io { path: self.path.clone(), what: "serializing an event", source: e.into() })
    }

    /// Inserts prepared rows in one transaction; counts inserted and duplicate rows, applies retention when due.
    pub(crate) fn insert_rows(&mut self, batches: &[RowBatch]) -> Result<usize, StoreError> {
        let result = self.insert_batch(batches);
        match &result {
            Ok(inserted) => {
                let duplicates = batches.iter().map(RowBatch::len).sum::<usize>() - inserted;
                self.stats.inserted.fetch_add(*inserted as u64, Ordering::Relaxed);
                self.stats.duplicates.fetch_add(duplicates as u64, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        if result.is_ok() {
            self.checkpoint_after_commit();
            self.apply_retention_if_due();
        }
        self.update_size();
        result
    }

    /// Hands the commit just made to the checkpointer (see [`Checkpointer::after_commit`]). A failure is logged
    /// and counted in `errors`: the rows are committed, and the next commit retries.
    fn checkpoint_after_commit(&mut self) {
        let Some(checkpointer) = &self.checkpointer else { return };
        if let Err(e) = checkpointer.after_commit(&self.conn) {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(path = %self.path.display(), error = %e, "store checkpoint failed; retrying later");
        }
    }

    /// Copies everything committed from the WAL into the database file now, syncing both (a PASSIVE checkpoint:
    /// what a reader still uses stays for the next one). The sink's `flush` ends with it.
    pub(crate) fn checkpoint(&mut self) -> Result<(), StoreError> {
        let Some(checkpointer) = &self.checkpointer else { return Ok(()) };
        checkpointer.checkpoint_now(&self.conn).map_err(|e| StoreError::from_sqlite(&self.path, "checkpointing", e))
    }

    /// Runs a retention pass when [`RETENTION_INTERVAL`] has passed since the last one. A failure is logged and
    /// counted in `errors`; the next pass retries.
    pub(crate) fn apply_retention_if_due(&mut self) {
        if !self.writable || self.last_retention.elapsed() < RETENTION_INTERVAL {
            return;
        }
        if let Err(e) = self.apply_retention() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(path = %self.path.display(), error = %e, "store retention failed; retrying later");
        }
        self.update_size();
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<StoreStats> {
        self.stats.clone()
    }

    /// Applies the age and size limits now. What was deleted is counted in `retention_deleted`, logged, and
    /// stored as a `sensor`/`drop` event (component `store/retention`) so a hunter sees the gap.
    pub fn apply_retention(&mut self) -> Result<RetentionReport, StoreError> {
        self.last_retention = Instant::now();
        // Retention checkpoints (TRUNCATE) to give space back, which must not meet the thread's checkpoint.
        let checkpoints = self.checkpointer.as_ref().map(Checkpointer::state);
        let _running = checkpoints.as_ref().map(|state| state.exclusive());
        let mut report = RetentionReport::default();
        let sqlite = |e| StoreError::from_sqlite(&self.path, "applying retention", e);
        if let Some(age) = self.opts.max_age {
            report.by_age = retention::delete_older_than(&self.conn, age).map_err(sqlite)?;
            if report.by_age > 0 {
                retention::give_back_space(&self.conn).map_err(sqlite)?;
            }
        }
        if let Some(age) = self.opts.keystroke_max_age {
            report.keystrokes_by_age =
                retention::delete_domain_older_than(&self.conn, "keystroke", age).map_err(sqlite)?;
            if report.keystrokes_by_age > 0 {
                retention::give_back_space(&self.conn).map_err(sqlite)?;
            }
        }
        if let Some(max) = self.opts.max_bytes {
            report.by_size = retention::shrink_to(&self.conn, &self.path, max).map_err(sqlite)?;
        }
        report.size_after = size_on_disk(&self.path);
        if report.total() > 0 {
            self.report_retention(&report)?;
        }
        Ok(report)
    }

    fn report_retention(&mut self, report: &RetentionReport) -> Result<(), StoreError> {
        self.stats.retention_deleted.fetch_add(report.total(), Ordering::Relaxed);
        let message = report.describe(&self.opts);
        tracing::info!(path = %self.path.display(), deleted = report.total(), "{message}");
        let mut ev = Event::sensor(Activity::Drop, RETENTION_COMPONENT, message, Some(report.total()));
        ev.host.clone_from(&self.host);
        let rows = self.prepare_rows(std::slice::from_ref(&ev))?;
        self.insert_batch(&rows)?;
        self.stats.inserted.fetch_add(1, Ordering::Relaxed);
        // The report's own commit went to the WAL; fold it in so the size reported is the size on disk.
        retention::give_back_space(&self.conn)
            .map_err(|e| StoreError::from_sqlite(&self.path, "applying retention", e))?;
        Ok(())
    }

    fn update_size(&self) {
        self.stats.size_bytes.store(size_on_disk(&self.path), Ordering::Relaxed);
    }

    /// One transaction for all the batches; returns rows inserted.
    fn insert_batch(&mut self, batches: &[RowBatch]) -> Result<usize, StoreError> {
        let inserted = insert::insert_rows(&self.conn, batches)
            .map_err(|e| StoreError::from_sqlite(&self.path, "inserting events", e))?;
        if let Some(host) = batches.iter().rev().find_map(RowBatch::last_host)
            && self.host != host
        {
            host.clone_into(&mut self.host);
        }
        Ok(inserted)
    }
}
