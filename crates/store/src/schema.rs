//! The store's schema: one narrow `events` table for fast hunting, the full event JSON beside it, indexes for the
//! common hunts and one view per domain.
//!
//! Why two tables: a hunt such as `exe LIKE '%curl%'` scans every row, and SQLite reads whole records while it
//! scans. Keeping the ~1 KB JSON out of `events` keeps that scan to a few hundred bytes per row, which is what
//! makes it take well under a second over a million events. The JSON is still there, byte for byte what the agent
//! wrote, for `ringwatch export` and for `json_extract` on a field that has no column.
//!
//! The schema version lives in `PRAGMA user_version`; a store written by a newer ringwatch is refused rather than
//! misread. `PRAGMA application_id` marks the file as a ringwatch store so that `--store` pointed at some other
//! SQLite database is refused instead of getting our tables added to it.
//!
//! # Schema
//!
//! ```text
//! events          one row per event; seq INTEGER PRIMARY KEY (insert order), id TEXT UNIQUE (the event id)
//!   time_ns INTEGER (ns since the epoch, UTC), time TEXT (RFC 3339, as in the JSON), host, domain, activity,
//!   class_uid, mode, source, action ('observed' unless the policy acted), rule, trusted (0/1),
//!   pid, tid, ppid, guid, parent_guid, uid, user, euid, session_id, tty, container_id, start_time,
//!   exit_code, exit_signal, exe, path, new_path, protocol, src_ip, src_port, dst_ip, dst_port, direction,
//!   dns_query, redacted, component, count, cmdline (argv joined by spaces), cwd, text (keystrokes), message
//! event_json      seq INTEGER PRIMARY KEY (= events.seq), json TEXT: the event exactly as the agent wrote it
//!
//! indexes         events(time_ns), events(domain, activity, time_ns), events(guid), events(parent_guid),
//!                 events(pid), events(exe), events(path), events(dst_ip, dst_port),
//!                 events(time_ns) WHERE action <> 'observed' OR rule IS NOT NULL   (alerts)
//!                 (parent_guid, path and dst are partial, WHERE ... IS NOT NULL: most events have no path or
//!                 destination, and an index entry per NULL would cost every insert for nothing)
//!
//! views           processes   domain = 'process'
//!                 files       domain = 'file'
//!                 network     domain = 'network' AND activity <> 'dns'
//!                 dns         domain = 'network' AND activity = 'dns'
//!                 keystrokes  domain = 'keystroke'
//!                 alerts      action <> 'observed' OR rule IS NOT NULL (any domain)
//!                 sensor      domain = 'sensor' (start, stop, drops, errors, retention gaps)
//! ```
//!
//! Examples: `SELECT time, pid, cmdline FROM processes WHERE exe LIKE '%curl%'`;
//! `SELECT dst_ip, dst_port, count(*) FROM network GROUP BY 1, 2 ORDER BY 3 DESC`;
//! `SELECT json_extract(j.json, '$.process.cwd') FROM events e JOIN event_json j USING (seq) WHERE e.pid = 42`.

use rusqlite::Connection;

/// The version this build writes; bump it with a migration when the schema changes.
pub const SCHEMA_VERSION: i64 = 1;

/// Page size of a new store. 16 KiB rather than SQLite's 4 KiB: a third fewer page splits and WAL frames per
/// event at ingest, and faster full scans; measured with `ringwatch bench store`.
const PAGE_SIZE: i64 = 16384;

/// `PRAGMA application_id` of a ringwatch store ("RWTC").
pub const APPLICATION_ID: i64 = 0x5257_5443;

/// Column list of `events` in insert order (after `seq`). [`crate::row`] binds parameters in this order.
pub const EVENT_COLUMNS: &[&str] = &[
    "id",
    "time_ns",
    "time",
    "host",
    "domain",
    "activity",
    "class_uid",
    "mode",
    "source",
    "action",
    "rule",
    "trusted",
    "pid",
    "tid",
    "ppid",
    "guid",
    "parent_guid",
    "uid",
    "user",
    "euid",
    "session_id",
    "tty",
    "container_id",
    "start_time",
    "exit_code",
    "exit_signal",
    "exe",
    "path",
    "new_path",
    "protocol",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "direction",
    "dns_query",
    "redacted",
    "component",
    "count",
    "cmdline",
    "cwd",
    "text",
    "message",
];

/// Tables and indexes. Short, often-filtered columns come first and long text last: SQLite decodes a record from
/// the front, so a scan that filters on `exe` never touches `cmdline`.
const TABLES: &str = "
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY,
    id           TEXT UNIQUE,
    time_ns      INTEGER NOT NULL,
    time         TEXT NOT NULL,
    host         TEXT,
    domain       TEXT NOT NULL,
    activity     TEXT NOT NULL,
    class_uid    INTEGER,
    mode         TEXT,
    source       TEXT,
    action       TEXT NOT NULL,
    rule         TEXT,
    trusted      INTEGER,
    pid          INTEGER,
    tid          INTEGER,
    ppid         INTEGER,
    guid         TEXT,
    parent_guid  TEXT,
    uid          INTEGER,
    user         TEXT,
    euid         INTEGER,
    session_id   INTEGER,
    tty          TEXT,
    container_id TEXT,
    start_time   TEXT,
    exit_code    INTEGER,
    exit_signal  INTEGER,
    exe          TEXT,
    path         TEXT,
    new_path     TEXT,
    protocol     TEXT,
    src_ip       TEXT,
    src_port     INTEGER,
    dst_ip       TEXT,
    dst_port     INTEGER,
    direction    TEXT,
    dns_query    TEXT,
    redacted     INTEGER,
    component    TEXT,
    count        INTEGER,
    cmdline      TEXT,
    cwd          TEXT,
    text         TEXT,
    message      TEXT
);
CREATE TABLE event_json (
    seq  INTEGER PRIMARY KEY,
    json TEXT NOT NULL
);
CREATE INDEX events_time ON events(time_ns);
CREATE INDEX events_domain_activity ON events(domain, activity, time_ns);
CREATE INDEX events_guid ON events(guid);
CREATE INDEX events_parent_guid ON events(parent_guid) WHERE parent_guid IS NOT NULL;
CREATE INDEX events_pid ON events(pid);
CREATE INDEX events_exe ON events(exe);
CREATE INDEX events_path ON events(path) WHERE path IS NOT NULL;
CREATE INDEX events_dst ON events(dst_ip, dst_port) WHERE dst_ip IS NOT NULL;
CREATE INDEX events_alerts ON events(time_ns) WHERE action <> 'observed' OR rule IS NOT NULL;
";

/// One view per domain. Their WHERE clauses repeat the index conditions exactly so the planner can use them.
const VIEWS: &str = "
CREATE VIEW processes AS
    SELECT seq, id, time, time_ns, host, activity, pid, ppid, guid, parent_guid, exe, cmdline, cwd, user, uid, euid,
           session_id, tty, container_id, start_time, exit_code, exit_signal, action, rule, mode, source, trusted
    FROM events WHERE domain = 'process';
CREATE VIEW files AS
    SELECT seq, id, time, time_ns, host, activity, path, new_path, pid, guid, exe, cmdline, user, uid,
           action, rule, mode, source, trusted
    FROM events WHERE domain = 'file';
CREATE VIEW network AS
    SELECT seq, id, time, time_ns, host, activity, protocol, src_ip, src_port, dst_ip, dst_port, direction,
           pid, guid, exe, cmdline, user, uid, action, rule, mode, source, trusted
    FROM events WHERE domain = 'network' AND activity <> 'dns';
CREATE VIEW dns AS
    SELECT seq, id, time, time_ns, host, dns_query, protocol, dst_ip, dst_port, pid, guid, exe, user, uid,
           action, rule, mode, source, trusted
    FROM events WHERE domain = 'network' AND activity = 'dns';
CREATE VIEW keystrokes AS
    SELECT seq, id, time, time_ns, host, text, redacted, tty, pid, guid, exe, user, uid, session_id,
           action, rule, mode, source, trusted
    FROM events WHERE domain = 'keystroke';
CREATE VIEW alerts AS
    SELECT seq, id, time, time_ns, host, domain, activity, action, rule, pid, guid, exe, cmdline, user, path,
           dst_ip, dst_port, dns_query, mode, source, trusted
    FROM events WHERE action <> 'observed' OR rule IS NOT NULL;
CREATE VIEW sensor AS
    SELECT seq, id, time, time_ns, host, activity, component, count, message
    FROM events WHERE domain = 'sensor';
";

/// The schema as documentation: tables, indexes and views, as created (for the README and `--help`).
pub fn describe() -> String {
    format!("{}\n{}", TABLES.trim(), VIEWS.trim())
}

/// What [`check_version`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaState {
    /// An empty database: the schema must be created.
    Empty,
    /// A ringwatch store this build can use.
    Current,
    /// A ringwatch store written by a newer ringwatch, with its version.
    Newer(i64),
    /// Some other SQLite database that already has tables.
    Foreign,
}

/// Reads `application_id`, `user_version` and whether any table exists.
pub fn check_version(conn: &Connection) -> rusqlite::Result<SchemaState> {
    let app: i64 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    Ok(match (app == APPLICATION_ID, version, tables) {
        (_, _, 0) => SchemaState::Empty,
        (false, _, _) => SchemaState::Foreign,
        (true, v, _) if v > SCHEMA_VERSION => SchemaState::Newer(v),
        (true, _, _) => SchemaState::Current,
    })
}

/// Creates tables, indexes and views in one transaction, and stamps the version. `auto_vacuum` must be set before
/// the first table exists, so it is set here too: retention then shrinks the file with `incremental_vacuum`.
pub fn create(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE;\n{TABLES}\n{VIEWS}\nPRAGMA application_id = {APPLICATION_ID};\n\
         PRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_column_list_matches_the_table() {
        let conn = Connection::open_in_memory().expect("memory db");
        create(&conn).expect("schema");
        let stmt = conn.prepare("SELECT * FROM events").expect("select");
        let names: Vec<&str> = stmt.column_names();
        assert_eq!(names[0], "seq");
        assert_eq!(&names[1..], EVENT_COLUMNS);
        drop(stmt);
        assert_eq!(check_version(&conn).expect("version"), SchemaState::Current);
    }
}
