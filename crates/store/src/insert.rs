//! The insert path: prepared rows into `event_rows` and `process_contexts`, in one transaction.
//!
//! Per event: find its kind (`event_kinds`: domain, activity, class, backend; looked up once per transaction,
//! stored the first time it is met) and its process context among those this transaction stored (a new state is
//! stored first), then `INSERT OR IGNORE` its row on the event id. A resent event (the fleet collector sees
//! at-least-once delivery) is therefore stored once; a context stored only for such a duplicate is deleted again at
//! once, so it cannot linger unreferenced. The statements are prepared once and cached, and parameters bound only
//! where they change ([`crate::row::Binder`]).
//!
//! Why contexts are shared only within a transaction: a memory that outlived it could name a row that is gone
//! (rolled back, deleted by retention, or by another writer), and every such case would need to be tracked. A
//! group holds thousands of events, so storing a long-lived process's state once per group costs well under one
//! row per hundred events. It also keeps the `ctx` index inserts of a group's events near the index's end.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::LazyLock;

use rusqlite::{CachedStatement, Connection};

use crate::row::{self, PreHashed, ProcessBinder, Row, RowBatch, RowBinder};

/// The prepared inserts (built once: the column lists are long).
static INSERT_ROW_SQL: LazyLock<String> = LazyLock::new(row::insert_row_sql);
static INSERT_PROCESS_SQL: LazyLock<String> = LazyLock::new(row::insert_process_sql);
const INSERT_KIND_SQL: &str =
    "INSERT OR IGNORE INTO event_kinds (domain, activity, class_uid, mode, source) VALUES (?1, ?2, ?3, ?4, ?5)";
const FIND_KIND_SQL: &str =
    "SELECT kind FROM event_kinds WHERE domain = ?1 AND activity = ?2 AND class_uid = ?3 AND mode = ?4 AND source = ?5";

/// Inserts the rows of `batches` in one transaction; returns how many were new.
pub fn insert_rows(conn: &Connection, batches: &[RowBatch]) -> rusqlite::Result<usize> {
    let tx = conn.unchecked_transaction()?;
    let mut inserter = Inserter {
        conn: &tx,
        rows: tx.prepare_cached(&INSERT_ROW_SQL)?,
        processes: tx.prepare_cached(&INSERT_PROCESS_SQL)?,
        row_binder: RowBinder::for_rows(),
        process_binder: ProcessBinder::for_processes(),
        bound_ctx: None,
        bound_kind: None,
        contexts: HashMap::default(),
        kinds: HashMap::default(),
    };
    let mut inserted = 0;
    for row in batches.iter().flat_map(RowBatch::rows) {
        if inserter.insert(&row)? {
            inserted += 1;
        }
    }
    drop(inserter);
    tx.commit()?;
    Ok(inserted)
}

/// The statements of one transaction, what is bound to them, and the contexts it stored.
struct Inserter<'c, 'r> {
    conn: &'c Connection,
    rows: CachedStatement<'c>,
    processes: CachedStatement<'c>,
    row_binder: RowBinder<'r>,
    process_binder: ProcessBinder<'r>,
    bound_ctx: Option<i64>,
    bound_kind: Option<i64>,
    /// Kinds met by this transaction, by hash ([`Row::kind_hash`]), with a row that has it to compare.
    kinds: HashMap<u64, (i64, Row<'r>), BuildHasherDefault<PreHashed>>,
    /// Contexts stored by this transaction, by the hash of their process JSON ([`Row::process_hash`]): the row
    /// id and the JSON, compared byte for byte so that a collision costs one more row, never a wrong one.
    contexts: HashMap<u64, (i64, &'r [u8]), BuildHasherDefault<PreHashed>>,
}

impl<'r> Inserter<'_, 'r> {
    /// Inserts one event; false when its id was already stored.
    fn insert(&mut self, row: &Row<'r>) -> rusqlite::Result<bool> {
        let (ctx, new_context) = match self.known_context(row) {
            Some(ctx) => (ctx, false),
            None => (self.insert_context(row)?, true),
        };
        let kind = self.kind(row)?;
        self.row_binder.bind(&mut self.rows, row)?;
        if self.bound_kind != Some(kind) {
            self.rows.raw_bind_parameter(row::KIND_PARAMETER, kind)?;
            self.bound_kind = Some(kind);
        }
        if self.bound_ctx != Some(ctx) {
            self.rows.raw_bind_parameter(row::CTX_PARAMETER, ctx)?;
            self.bound_ctx = Some(ctx);
        }
        if self.rows.raw_execute()? > 0 {
            return Ok(true);
        }
        // Already stored: INSERT OR IGNORE skipped it. A context stored just for it would be referenced by nothing.
        if new_context {
            self.conn.prepare_cached("DELETE FROM process_contexts WHERE ctx = ?1")?.execute([ctx])?;
            self.contexts.remove(&row.process_hash);
        }
        Ok(false)
    }

    /// The stored context of `row`'s process, when this transaction stored it.
    fn known_context(&self, row: &Row<'r>) -> Option<i64> {
        let json = row.process_json();
        self.contexts.get(&row.process_hash).filter(|(_, stored)| *stored == json).map(|&(ctx, _)| ctx)
    }

    /// The `event_kinds` row of `row`'s kind, stored if it is new.
    fn kind(&mut self, row: &Row<'r>) -> rusqlite::Result<i64> {
        let values = row.kind();
        if let Some(&(kind, _)) = self.kinds.get(&row.kind_hash).filter(|(_, seen)| seen.kind() == values) {
            return Ok(kind);
        }
        let params = rusqlite::params_from_iter(values);
        self.conn.prepare_cached(INSERT_KIND_SQL)?.execute(params.clone())?;
        let kind = self.conn.prepare_cached(FIND_KIND_SQL)?.query_row(params, |r| r.get(0))?;
        self.kinds.insert(row.kind_hash, (kind, *row));
        Ok(kind)
    }

    /// Stores the process context of `row` and remembers it.
    fn insert_context(&mut self, row: &Row<'r>) -> rusqlite::Result<i64> {
        self.process_binder.bind(&mut self.processes, row)?;
        self.processes.raw_execute()?;
        let ctx = self.conn.last_insert_rowid();
        self.contexts.insert(row.process_hash, (ctx, row.process_json()));
        Ok(ctx)
    }
}
