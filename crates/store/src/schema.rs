//! The store's schema: a narrow table of event rows for fast hunting, the process each event is about and the
//! kind of event stored once rather than once per event, an `events` view that joins them back into one flat row,
//! the full event JSON rebuilt byte for byte by the `event_json` view, indexes for the common hunts and one view per
//! domain.
//!
//! Why split an event three ways: the events of one process repeat the same process context (pid, guid, exe, argv,
//! user, ancestry, ...), which is half of every row and two thirds of every event's JSON, and four of the hunting
//! indexes (guid, parent_guid, pid, exe) are on it; and a handful of (domain, activity, class, backend) kinds
//! repeat in every row, whose text index was the costliest one to maintain. Storing each process state once in
//! `process_contexts` and each kind once in `event_kinds`, with `event_rows` holding integer references, makes an
//! insert touch ~7 B-trees instead of ~11, with cheaper keys, and write about a quarter of the bytes: that is what
//! lets the store ingest ~200,000 events/s (`ringwatch bench store`). Hunters do not see the split: `events` has the
//! columns of one flat table, and the planner answers `domain = ...` through the kind index and `exe LIKE ...` or
//! `pid = ...` through the context table.
//!
//! Why the JSON is rebuilt rather than stored: an event's JSON is a head of fields that all have columns
//! (`{"id":..,"time":..,"host":..,"domain":..,"activity":..,"class_uid":..,"backend":{..},"process":`), its process
//! object (stored once per state, `process_contexts.json`), the facts that follow it (file, network, keystroke or
//! sensor), whose first fields also have columns for files and connections (`,"file":{"path":..`), and an end
//! that has columns (`,"action":..,"rule":..,"trusted":..}`). Only the rest of the facts is stored per event
//! (`json_tail`); the writer stores a part verbatim (`json_head`, `json_facts`, `json_end`) only when rebuilding
//! it from the columns would not give back the same bytes (a host name that JSON escapes, an
//! `enforcement_delay_us`), so `event_json` is always byte for byte what the agent wrote, for `ringwatch export`
//! and for `json_extract` on any field.
//!
//! Why the event rows stay narrow: a hunt such as `path LIKE ...` scans a whole table, and SQLite reads whole
//! records while it scans; short, often-filtered columns come first and long text last.
//!
//! The schema version lives in `PRAGMA user_version`; a store written by a newer ringwatch is refused rather than
//! misread, and so is a store of the first layout (version 1, one wide table: a development format that was never
//! released). `PRAGMA application_id` marks the file as a ringwatch store so that `--store` pointed at some other
//! SQLite database is refused instead of getting our tables added to it.
//!
//! # Schema
//!
//! ```text
//! event_rows        one row per event; seq INTEGER PRIMARY KEY (insert order), id TEXT UNIQUE (the event id),
//!   time_ns INTEGER (ns since the epoch, UTC), time TEXT (RFC 3339, as in the JSON), host, kind (-> event_kinds),
//!   action ('observed' unless the policy acted), rule, trusted (0/1), ctx (-> process_contexts), path, new_path,
//!   protocol, src_ip, src_port, dst_ip, dst_port, direction, dns_query, redacted, component, count,
//!   text (keystrokes), message, json_head, json_facts (NULL unless needed), json_tail, json_end (NULL unless
//!   needed)
//! event_kinds       kind INTEGER PRIMARY KEY, domain, activity, class_uid, mode, source; UNIQUE over all five
//! process_contexts  one row per process state (and per write transaction, see `insert`): ctx INTEGER PRIMARY KEY,
//!   pid, tid, ppid, guid, parent_guid, uid, user, euid, session_id, tty, container_id, start_time, exit_code,
//!   exit_signal, exe, cmdline (argv joined by spaces), cwd, json (the event JSON's "process" object)
//!
//! indexes           event_rows(time_ns), event_rows(kind, time_ns), event_rows(ctx, kind),
//!                   event_rows(path), event_rows(dst_ip, dst_port),
//!                   event_rows(time_ns) WHERE action <> 'observed' OR rule IS NOT NULL   (alerts);
//!                   process_contexts(guid), (parent_guid), (pid), (exe)
//!                   (path, dst and parent_guid are partial, WHERE ... IS NOT NULL: most events have no path or
//!                   destination, and an index entry per NULL would cost every insert for nothing)
//!
//! views             events      event_rows with their kind and process context: one flat row per event (seq,
//!                               then EVENT_COLUMNS)
//!                   event_json  seq, json: the event exactly as the agent wrote it
//!                   processes   domain = 'process'
//!                   files       domain = 'file'
//!                   network     domain = 'network' AND activity <> 'dns'
//!                   dns         domain = 'network' AND activity = 'dns'
//!                   keystrokes  domain = 'keystroke'
//!                   alerts      action <> 'observed' OR rule IS NOT NULL (any domain)
//!                   sensor      domain = 'sensor' (start, stop, drops, errors, retention gaps)
//!                   (events and event_json refuse writes: INSTEAD OF triggers that raise an error)
//! ```
//!
//! Examples: `SELECT time, pid, cmdline FROM processes WHERE exe LIKE '%curl%'`;
//! `SELECT dst_ip, dst_port, count(*) FROM network GROUP BY 1, 2 ORDER BY 3 DESC`;
//! `SELECT json_extract(j.json, '$.process.cgroup') FROM events e JOIN event_json j USING (seq) WHERE e.pid = 42`.

use rusqlite::Connection;

/// The version this build writes; bump it with a migration when the schema changes.
pub const SCHEMA_VERSION: i64 = 2;

/// Page size of a new store. 16 KiB rather than SQLite's 4 KiB: a third fewer page splits and WAL frames per
/// event at ingest, and faster full scans; measured with `ringwatch bench store`.
const PAGE_SIZE: i64 = 16384;

/// `PRAGMA application_id` of a ringwatch store ("RWTC").
pub const APPLICATION_ID: i64 = 0x5257_5443;

/// Columns of the `events` view, in order (after `seq`).
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

/// Columns of `event_rows` that [`crate::row`] fills, in insert order (after them come `kind` and `ctx`, bound by
/// the writer).
pub const ROW_COLUMNS: &[&str] = &[
    "id",
    "time_ns",
    "time",
    "host",
    "action",
    "rule",
    "trusted",
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
    "text",
    "message",
    "json_head",
    "json_facts",
    "json_tail",
    "json_end",
];

/// Columns of `event_kinds`, in insert order.
pub const KIND_COLUMNS: &[&str] = &["domain", "activity", "class_uid", "mode", "source"];

/// Columns of `process_contexts` that [`crate::row`] fills, in insert order.
pub const PROCESS_COLUMNS: &[&str] = &[
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
    "cmdline",
    "cwd",
    "json",
];

/// Tables and indexes. Short, often-filtered columns come first and long text last: SQLite decodes a record from
/// the front, so a scan that filters on `path` never touches `json_tail`. `events_ctx` has `kind` so that a hunt on
/// a process column (`exe LIKE ...`) can scan it instead of the table.
const TABLES: &str = "
CREATE TABLE event_rows (
    seq          INTEGER PRIMARY KEY,
    id           TEXT UNIQUE,
    time_ns      INTEGER NOT NULL,
    time         TEXT NOT NULL,
    host         TEXT NOT NULL,
    kind         INTEGER NOT NULL,
    action       TEXT NOT NULL,
    rule         TEXT,
    trusted      INTEGER,
    ctx          INTEGER NOT NULL,
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
    text         TEXT,
    message      TEXT,
    json_head    TEXT,
    json_facts   TEXT,
    json_tail    TEXT NOT NULL,
    json_end     TEXT
);
CREATE TABLE event_kinds (
    kind         INTEGER PRIMARY KEY,
    domain       TEXT NOT NULL,
    activity     TEXT NOT NULL,
    class_uid    INTEGER NOT NULL,
    mode         TEXT NOT NULL,
    source       TEXT NOT NULL,
    UNIQUE (domain, activity, class_uid, mode, source)
);
CREATE TABLE process_contexts (
    ctx          INTEGER PRIMARY KEY,
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
    cmdline      TEXT,
    cwd          TEXT,
    json         TEXT NOT NULL
);
CREATE INDEX events_time ON event_rows(time_ns);
CREATE INDEX events_kind ON event_rows(kind, time_ns);
CREATE INDEX events_ctx ON event_rows(ctx, kind);
CREATE INDEX events_path ON event_rows(path) WHERE path IS NOT NULL;
CREATE INDEX events_dst ON event_rows(dst_ip, dst_port) WHERE dst_ip IS NOT NULL;
CREATE INDEX events_alerts ON event_rows(time_ns) WHERE action <> 'observed' OR rule IS NOT NULL;
CREATE INDEX process_guid ON process_contexts(guid);
CREATE INDEX process_parent_guid ON process_contexts(parent_guid) WHERE parent_guid IS NOT NULL;
CREATE INDEX process_pid ON process_contexts(pid);
CREATE INDEX process_exe ON process_contexts(exe);
";

/// The event's JSON from its row `e`, its kind `k` and its process context `p`: the head, the process object, the
/// facts that follow it and the end. [`crate::row`] stores `json_head`, `json_facts` and `json_end` exactly when
/// the expressions below would not give back the bytes the agent wrote (see `json_parts`).
pub const JSON_EXPR: &str = concat!(
    // {"id":..,"time":..,"host":..,"domain":..,"activity":..,"class_uid":..,"backend":{..},"process":
    "coalesce(e.json_head, '{\"id\":\"' || e.id || '\",\"time\":\"' || e.time || '\",\"host\":\"' || e.host || \
     '\",\"domain\":\"' || k.domain || '\",\"activity\":\"' || k.activity || '\",\"class_uid\":' || k.class_uid || \
     ',\"backend\":{\"mode\":\"' || k.mode || '\",\"source\":\"' || k.source || '\"},\"process\":')",
    " || p.json || ",
    // ,"file":{"path":..  or  ,"network":{"protocol":..,"src_ip":..,"src_port":..,"dst_ip":..,"dst_port":..,
    // "direction":..  (the fields an event has), then the rest as stored
    "CASE WHEN e.json_facts IS NOT NULL THEN e.json_facts \
     WHEN k.domain = 'file' THEN ',\"file\":{\"path\":\"' || e.path || '\"' || e.json_tail \
     WHEN k.domain = 'network' THEN ',\"network\":{\"protocol\":\"' || e.protocol || '\"' || \
     coalesce(',\"src_ip\":\"' || e.src_ip || '\"', '') || coalesce(',\"src_port\":' || e.src_port, '') || \
     coalesce(',\"dst_ip\":\"' || e.dst_ip || '\"', '') || coalesce(',\"dst_port\":' || e.dst_port, '') || \
     coalesce(',\"direction\":\"' || e.direction || '\"', '') || e.json_tail \
     ELSE e.json_tail END",
    " || ",
    // ,"action":..[,"rule":..],"trusted":..}
    "coalesce(e.json_end, ',\"action\":\"' || e.action || '\"' || coalesce(',\"rule\":\"' || e.rule || '\"', '') || \
     ',\"trusted\":' || iif(e.trusted, 'true', 'false') || '}')",
);

/// Event rows `e` with their kinds `k` and process contexts `p`. Every row has both, so the outer joins give the
/// same rows as inner ones; they are outer for the planner: the event rows drive a query (through the time, path
/// or destination index) unless it filters on a kind or process column (`domain = ...`, `pid = ...`), which turns
/// that join into an inner one the planner may start from.
pub const JOIN: &str =
    "event_rows e LEFT JOIN event_kinds k ON k.kind = e.kind LEFT JOIN process_contexts p ON p.ctx = e.ctx";

/// One view per domain. A domain or activity condition is answered through `event_kinds` and the kind index; the
/// alerts view repeats the partial index's condition exactly so the planner can use it.
const DOMAIN_VIEWS: &str = "
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

/// The `events` and `event_json` views, then the domain views.
fn views() -> String {
    let columns: Vec<String> = EVENT_COLUMNS
        .iter()
        .map(|c| match c {
            _ if PROCESS_COLUMNS.contains(c) => format!("p.{c}"),
            _ if KIND_COLUMNS.contains(c) => format!("k.{c}"),
            _ => format!("e.{c}"),
        })
        .collect();
    format!(
        "CREATE VIEW events AS\n    SELECT e.seq, {}\n    FROM {JOIN};\n\
         CREATE VIEW event_json AS\n    SELECT e.seq, {JSON_EXPR} AS json\n    FROM {JOIN};\n{}{}",
        columns.join(", "),
        write_guards(),
        DOMAIN_VIEWS.trim_start()
    )
}

/// `events` and `event_json` were tables in the first layout; triggers keep a write to them a write, refused as
/// such: by a read-only connection (every hunting command) as a write to a read-only database, by a writer with
/// the reason.
fn write_guards() -> String {
    let mut guards = String::new();
    for view in ["events", "event_json"] {
        for op in ["INSERT", "UPDATE", "DELETE"] {
            guards.push_str(&format!(
                "CREATE TRIGGER {view}_{} INSTEAD OF {op} ON {view} BEGIN\n    SELECT RAISE(ABORT, \
                 '{view} is a view of event_rows, event_kinds and process_contexts, which only the store writes');\n\
                 END;\n",
                op.to_lowercase()
            ));
        }
    }
    guards
}

/// The schema as documentation: tables, indexes and views, as created (for the README and `--help`).
pub fn describe() -> String {
    format!("{}\n{}", TABLES.trim(), views().trim())
}

/// What [`check_version`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaState {
    /// An empty database: the schema must be created.
    Empty,
    /// A ringwatch store this build can use.
    Current,
    /// A ringwatch store of an older layout this build does not read, with its version.
    Older(i64),
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
        (true, v, _) if v < SCHEMA_VERSION => SchemaState::Older(v),
        (true, _, _) => SchemaState::Current,
    })
}

/// Creates tables, indexes and views in one transaction, and stamps the version. `auto_vacuum` must be set before
/// the first table exists, so it is set here too: retention then shrinks the file with `incremental_vacuum`.
pub fn create(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE;\n{TABLES}\n{}\nPRAGMA application_id = {APPLICATION_ID};\n\
         PRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;",
        views()
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
        let stmt = conn.prepare("SELECT * FROM event_rows").expect("select");
        let names: Vec<&str> = stmt.column_names();
        let mut all: Vec<&str> = names.iter().chain(KIND_COLUMNS).chain(PROCESS_COLUMNS).copied().collect();
        all.sort_unstable();
        let stored = ["seq", "kind", "ctx", "json_head", "json_facts", "json_tail", "json_end", "json"];
        let mut expected: Vec<&str> = stored.iter().chain(EVENT_COLUMNS).copied().collect();
        expected.sort_unstable();
        assert_eq!(all, expected, "every view column is stored in one of the tables");
        drop(stmt);
        assert_eq!(check_version(&conn).expect("version"), SchemaState::Current);
    }
}
