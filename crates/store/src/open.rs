//! Opening the database file: permissions first, then SQLite, then the pragmas each kind of user needs.
//!
//! Events hold command lines and keystrokes, so the file is created mode 0600 (and its directory 0700) by us
//! *before* SQLite opens it; SQLite would otherwise create it with the umask's mode. The WAL and shared-memory
//! files SQLite creates next to it copy the main file's permissions.
//!
//! Writers (the agent, the collector) wait at most [`WRITER_BUSY_TIMEOUT`] for a lock: a sensor that stalls on a
//! database someone has open in an editor loses live events, so a lock becomes an error the agent reports and
//! moves past. Readers (hunting commands) open read-only with `query_only`, so no query can change the evidence.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::StoreError;
use crate::schema::{self, SchemaState};

/// How long a writer waits for another connection's lock before giving up.
pub const WRITER_BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a reader waits (a checkpoint or a retention pass may hold the lock briefly).
const READER_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Memory-mapped reads make full scans (hunts with `LIKE '%x%'`) markedly faster than read(2) per page.
const READER_MMAP_SIZE: i64 = 1 << 30;

/// Page cache of a writer, in KiB (negative `cache_size`): big enough to hold the hot index pages.
const WRITER_CACHE_KIB: i64 = 64 << 10;

/// Opens (creating if needed) the store for writing and brings its schema up to date.
pub fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    create_private_file(path)?;
    let sqlite = |what| move |e| StoreError::from_sqlite(path, what, e);
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(sqlite("opening"))?;
    conn.busy_timeout(WRITER_BUSY_TIMEOUT).map_err(sqlite("setting busy_timeout"))?;
    match schema::check_version(&conn).map_err(sqlite("reading the schema version"))? {
        SchemaState::Empty => {
            // auto_vacuum before WAL and before the first table: both are fixed once the file has content.
            schema::create(&conn).map_err(sqlite("creating the schema"))?;
        }
        SchemaState::Current => {}
        SchemaState::Newer(found) => {
            return Err(StoreError::NewerSchema { path: path.into(), found, supported: schema::SCHEMA_VERSION });
        }
        SchemaState::Older(found) => {
            return Err(StoreError::OlderSchema { path: path.into(), found, supported: schema::SCHEMA_VERSION });
        }
        SchemaState::Foreign => return Err(StoreError::Foreign { path: path.into() }),
    }
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(sqlite("enabling WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), mode, "the store could not switch to WAL mode");
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL; \
         PRAGMA cache_size = -{WRITER_CACHE_KIB}; PRAGMA temp_store = MEMORY;"
    ))
    .map_err(sqlite("setting pragmas"))?;
    // Take and release the write lock now, so a database held by another writer is reported at start
    // (where the agent can say so and carry on without a store) rather than as a stall on the first batch.
    conn.execute_batch("BEGIN IMMEDIATE; COMMIT;").map_err(sqlite("taking the write lock"))?;
    Ok(conn)
}

/// Opens an existing store read-only for hunting.
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    if !path.exists() {
        return Err(StoreError::Missing { path: path.into() });
    }
    let sqlite = |what| move |e| StoreError::from_sqlite(path, what, e);
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(sqlite("opening read-only"))?;
    conn.busy_timeout(READER_BUSY_TIMEOUT).map_err(sqlite("setting busy_timeout"))?;
    conn.execute_batch(&format!("PRAGMA query_only = ON; PRAGMA mmap_size = {READER_MMAP_SIZE};"))
        .map_err(sqlite("setting pragmas"))?;
    match schema::check_version(&conn).map_err(sqlite("reading the schema version"))? {
        SchemaState::Current => Ok(conn),
        SchemaState::Newer(found) => {
            Err(StoreError::NewerSchema { path: path.into(), found, supported: schema::SCHEMA_VERSION })
        }
        SchemaState::Older(found) => {
            Err(StoreError::OlderSchema { path: path.into(), found, supported: schema::SCHEMA_VERSION })
        }
        SchemaState::Empty => Err(StoreError::Missing { path: path.into() }),
        SchemaState::Foreign => Err(StoreError::Foreign { path: path.into() }),
    }
}

/// Creates the parent directory (0700) and the file (0600) if they do not exist. An existing file keeps its
/// mode: tightening it silently could break a deliberate setup, and it was ours to create in the first place.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let io_err = |what| move |source| StoreError::Io { path: path.into(), what, source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err("creating the directory"))?;
    }
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("creating the file")(e)),
    }
}

/// Bytes on disk: the main file plus its WAL (the WAL can hold a lot between checkpoints).
pub fn size_on_disk(path: &Path) -> u64 {
    let len = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    len(path) + len(Path::new(&wal))
}
