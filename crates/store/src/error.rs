//! Why the store could not be used, in words an operator can act on.
//!
//! SQLite's own codes are mapped here, in one place, to the situations that need different advice: a file that is
//! not a database (move it away), a database another process holds locked (find that process), a store from a
//! newer ringwatch (upgrade), bad SQL from a hunter (fix the query). Every variant names the file.

use std::io;
use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No store at this path (read-only opens never create one).
    #[error(
        "no event store at {path}: run the agent with `ringwatch run --store {path}` to create one, or pass \
         --store PATH"
    )]
    Missing {
        /// The database file.
        path: PathBuf,
    },
    /// The file exists but is not a (healthy) SQLite database.
    #[error(
        "{path} is not a usable ringwatch store ({detail}); move it away (mv {path} {path}.bad) and a new store \
         is created at the next start"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// SQLite's words.
        detail: String,
    },
    /// Another process holds a lock on the database longer than we wait.
    #[error(
        "{path} is locked by another process (SQLite: {detail}); find it with `fuser {path}` or use another --store"
    )]
    Locked {
        /// The database file.
        path: PathBuf,
        /// SQLite's words.
        detail: String,
    },
    /// A SQLite database that is not a ringwatch store.
    #[error("{path} is a SQLite database but not a ringwatch store; refusing to add tables to it")]
    Foreign {
        /// The database file.
        path: PathBuf,
    },
    /// Written by a newer ringwatch whose schema this build does not know.
    #[error(
        "{path} has schema version {found}, newer than this ringwatch understands ({supported}); upgrade ringwatch"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Version in the file.
        found: i64,
        /// Newest version this build reads.
        supported: i64,
    },
    /// Written by an older ringwatch, in a layout this build does not read.
    #[error(
        "{path} has schema version {found}, an older layout this ringwatch does not read ({supported}); move it \
         away (mv {path} {path}.old) and a new store is created; the old one can still be exported with the \
         ringwatch that wrote it"
    )]
    OlderSchema {
        /// The database file.
        path: PathBuf,
        /// Version in the file.
        found: i64,
        /// The version this build reads.
        supported: i64,
    },
    /// The hunter's SQL was rejected by SQLite (syntax, unknown column, attempt to write, ...).
    #[error("{path}: bad query: {detail}")]
    BadQuery {
        /// The database file.
        path: PathBuf,
        /// SQLite's message.
        detail: String,
    },
    /// `ringwatch tree` was asked about a process the store has no event of.
    #[error(
        "{path} has no events of {what}; list stored processes with `ringwatch query \"SELECT time, pid, guid, cmdline FROM processes WHERE activity = 'exec' ORDER BY time_ns DESC LIMIT 20\"`"
    )]
    UnknownProcess {
        /// The database file.
        path: PathBuf,
        /// The pid or guid asked for.
        what: String,
    },
    /// Creating the directory or the file, or reading its size, failed.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Any other SQLite failure.
    #[error("{path}: {what}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A consumer of query or export rows failed (e.g. a closed pipe); kept as the I/O error it was.
    #[error("writing results: {0}")]
    Output(#[source] io::Error),
}

impl StoreError {
    /// Maps a SQLite error to the variant that gives the right advice; `what` says what was being done.
    pub(crate) fn from_sqlite(path: &Path, what: &'static str, err: rusqlite::Error) -> StoreError {
        let path = path.to_path_buf();
        let detail = sqlite_message(&err);
        match err.sqlite_error_code() {
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt { path, detail },
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Locked { path, detail },
            _ => StoreError::Sqlite { path, what, source: err },
        }
    }

    /// Like [`StoreError::from_sqlite`], for SQL a user wrote: anything SQLite rejects is a bad query, except a
    /// lock or a damaged file, which are not the query's fault.
    pub(crate) fn from_user_sql(path: &Path, err: rusqlite::Error) -> StoreError {
        match StoreError::from_sqlite(path, "query", err) {
            StoreError::Sqlite { path, source, .. } => StoreError::BadQuery { path, detail: sqlite_message(&source) },
            other => other,
        }
    }

    /// True when retrying later may succeed (another process holds the lock).
    pub fn is_locked(&self) -> bool {
        matches!(self, StoreError::Locked { .. })
    }
}

/// SQLite's own message (e.g. `near "SELEC": syntax error`) without rusqlite's wrapping.
fn sqlite_message(err: &rusqlite::Error) -> String {
    match err {
        rusqlite::Error::SqliteFailure(e, Some(msg)) => format!("{msg} ({:?})", e.code),
        rusqlite::Error::SqliteFailure(e, None) => e.to_string(),
        rusqlite::Error::SqlInputError { msg, sql, offset, .. } => format!("{msg} at offset {offset} of: {sql}"),
        other => other.to_string(),
    }
}
