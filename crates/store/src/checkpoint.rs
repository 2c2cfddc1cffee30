//! WAL checkpoints on their own thread, with the WAL kept bounded.
//!
//! Why: a checkpoint copies every page the last commits wrote from the WAL into the database file and syncs both
//! files (that is what `synchronous = NORMAL` syncs). Run by SQLite's auto-checkpoint, it ran on the writer after
//! every group commit, and the writer spent a quarter of its time there, much of it waiting for the disk. Here
//! the writer only wakes a [`Checkpointer`] after each commit; the checkpointer's own connection copies the pages
//! (a PASSIVE checkpoint, which never blocks the writer) while the writer inserts the next group.
//!
//! Why the WAL stays bounded: SQLite reuses the WAL from its start only when a write transaction begins after a
//! checkpoint has copied *all* of it. Under steady load the writer always begins before the checkpointer is done,
//! so left alone the WAL would grow without end (an earlier checkpoint thread let it reach 1.8 GB). So after each
//! commit the writer looks at the WAL file: past the limit ([`WAL_SOFT_LIMIT`], less under a small size cap), it
//! checkpoints the rest itself (usually just its own last group) and its next transaction starts the WAL over.
//! The writer's connection keeps `journal_size_limit` at the same limit, so a WAL that starts over is cut back to
//! it: the file is larger than the limit exactly when what it holds is. The WAL thus stays under the limit plus
//! one group whatever the thread manages; only a reader holding an old snapshot for long can keep it from being
//! reused, as with any checkpoint.
//!
//! At most one checkpoint runs at a time in this process: SQLite answers a second one BUSY at once, which would
//! make a retention pass's `wal_checkpoint(TRUNCATE)` silently do nothing. The writer therefore takes
//! [`State::exclusive`] around any checkpoint of its own.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use rusqlite::{Connection, OpenFlags};

use crate::error::StoreError;
use crate::open::WRITER_BUSY_TIMEOUT;

/// WAL size past which the writer checkpoints the rest itself so that the WAL starts over (a store with a small
/// size cap uses less, see [`crate::Store::open`]).
pub const WAL_SOFT_LIMIT: u64 = 512 << 20;

/// The checkpoint thread of one store.
pub struct Checkpointer {
    state: Arc<State>,
    /// The WAL file.
    wal: PathBuf,
    /// WAL size past which the writer copies the rest itself.
    wal_limit: u64,
    wake: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What the writer and the checkpoint thread share.
#[derive(Debug, Default)]
pub struct State {
    /// Held while a checkpoint runs.
    running: Mutex<()>,
}

impl State {
    /// Waits for a running checkpoint to end and keeps others from starting until the guard is dropped.
    pub fn exclusive(&self) -> MutexGuard<'_, ()> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Checkpointer {
    /// Opens a second connection to the store at `path` and starts the thread; the WAL is kept near `wal_limit`
    /// bytes, which must also be the writer's `journal_size_limit` (see the module documentation).
    pub fn start(path: &Path, wal_limit: u64) -> Result<Checkpointer, StoreError> {
        let sqlite = |what| move |e| StoreError::from_sqlite(path, what, e);
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(sqlite("opening the checkpoint connection"))?;
        conn.busy_timeout(WRITER_BUSY_TIMEOUT).map_err(sqlite("setting busy_timeout"))?;
        // This connection never writes, so it never checkpoints on its own; its checkpoints are the ones below.
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(sqlite("setting pragmas"))?;
        let state = Arc::new(State::default());
        // One pending wake-up is enough: a pass copies everything committed before it starts.
        let (wake, woken) = crossbeam_channel::bounded(1);
        let thread = {
            let (state, for_logs) = (state.clone(), path.to_path_buf());
            std::thread::Builder::new()
                .name("store-checkpoint".into())
                .spawn(move || run(&conn, &woken, &state, &for_logs))
                .map_err(|source| StoreError::Io {
                    path: path.into(),
                    what: "starting the checkpoint thread",
                    source,
                })?
        };
        Ok(Checkpointer { state, wal: wal_path(path), wal_limit, wake: Some(wake), thread: Some(thread) })
    }

    /// The state shared with the thread (for [`State::exclusive`]).
    pub fn state(&self) -> Arc<State> {
        self.state.clone()
    }

    /// Called by the writer after each commit, on its own connection: when the WAL has grown past the limit,
    /// checkpoints what the thread has not copied yet, so that the next transaction starts the WAL over; otherwise
    /// wakes the thread for the commit just made.
    pub fn after_commit(&self, conn: &Connection) -> rusqlite::Result<()> {
        let wal_bytes = fs::metadata(&self.wal).map_or(0, |m| m.len());
        if wal_bytes <= self.wal_limit {
            self.wake();
            return Ok(());
        }
        self.checkpoint_now(conn)
    }

    /// Checkpoints on the writer's connection now, once a running pass of the thread has ended.
    pub fn checkpoint_now(&self, conn: &Connection) -> rusqlite::Result<()> {
        let _running = self.state.exclusive();
        passive_checkpoint(conn)
    }

    /// Asks the thread for a pass.
    fn wake(&self) {
        if let Some(wake) = &self.wake
            && let Err(TrySendError::Disconnected(())) = wake.try_send(())
        {
            tracing::warn!("the store checkpoint thread has stopped");
        }
    }
}

impl Drop for Checkpointer {
    /// Stops the thread after its current pass (closing the last connection checkpoints what is left).
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the store checkpoint thread panicked");
        }
    }
}

/// The thread's body: one PASSIVE checkpoint per wake-up, until the writer goes away.
fn run(conn: &Connection, woken: &Receiver<()>, state: &State, path: &Path) {
    while woken.recv().is_ok() {
        let _running = state.exclusive();
        // Not fatal: the writer's own checkpoint still bounds the WAL, and the next pass retries.
        if let Err(e) = passive_checkpoint(conn) {
            tracing::warn!(path = %path.display(), error = %e, "store checkpoint failed");
        }
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: copies what no reader still needs, waiting for nobody. A checkpoint held up
/// by a reader reports it in its row rather than failing; the next one copies the rest.
fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

/// The WAL of the database at `path`.
fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that commits 64 KiB at a time, as fast as it can, with no checkpoint thread at all: only the
    /// writer's own checkpoints past the limit keep the WAL bounded.
    #[test]
    fn the_writer_alone_keeps_the_wal_near_its_limit() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("t.db");
        let limit: u64 = 1 << 20;
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {limit}; \
             CREATE TABLE t (x BLOB);"
        ))
        .expect("setup");
        let checkpointer =
            Checkpointer { state: Arc::default(), wal: wal_path(&path), wal_limit: limit, wake: None, thread: None };
        let wal_size = || fs::metadata(wal_path(&path)).map_or(0, |m| m.len());
        let mut largest = 0;
        for _ in 0..200 {
            conn.execute("INSERT INTO t VALUES (zeroblob(65536))", []).expect("commit");
            checkpointer.after_commit(&conn).expect("after commit");
            largest = largest.max(wal_size());
        }
        assert!(largest <= limit + (256 << 10), "the WAL reached {largest} bytes for a {limit}-byte limit");
        assert!(wal_size() > 0, "the WAL is reused, not given back");
    }
}
