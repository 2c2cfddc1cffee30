//! Retention: the store never grows without bound.
//!
//! Two limits, applied in this order: events older than `max_age` go; then, while the database (main file + WAL)
//! is larger than `max_bytes`, the oldest events go in chunks sized from the average row size, aiming a little
//! under the cap ([`SIZE_TARGET`]) so the next batch does not trigger another pass at once; the WAL is folded in
//! first, as it is not events. Deleting an event deletes its row and, when no other event uses it, its process
//! context (see [`crate::schema`]). Deleting rows only frees pages inside the file, so each pass ends with
//! `incremental_vacuum` (the store is created with `auto_vacuum = INCREMENTAL`) and `wal_checkpoint(TRUNCATE)`,
//! which together give the space back to the file system. The caller reports what was deleted: a gap in the
//! evidence must be visible to a hunter.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, params};

use ringwatch_core::Timestamp;

use crate::open::size_on_disk;
use crate::store::StoreOptions;

/// After a size pass the store should be at most this fraction of `max_bytes`.
const SIZE_TARGET: f64 = 0.9;

/// A size pass gives up after this many rounds (each re-measures); protects against a cap too small to reach.
const MAX_SIZE_ROUNDS: usize = 32;

/// What one retention pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionReport {
    /// Events deleted because they were older than `max_age`.
    pub by_age: u64,
    /// Keystroke events deleted because they were older than the keystroke max age.
    pub keystrokes_by_age: u64,
    /// Events deleted to bring the store under `max_bytes`.
    pub by_size: u64,
    /// Size on disk after the pass, bytes.
    pub size_after: u64,
}

impl RetentionReport {
    /// Everything deleted.
    pub fn total(&self) -> u64 {
        self.by_age + self.keystrokes_by_age + self.by_size
    }

    /// Why, in a sentence for logs and the sensor event.
    pub fn describe(&self, opts: &StoreOptions) -> String {
        let (max_age, max_bytes) = (opts.max_age, opts.max_bytes);
        let mut reasons = Vec::new();
        if self.by_age > 0 {
            let age = max_age.map_or_else(String::new, |a| format!(" {}s", a.as_secs()));
            reasons.push(format!("{} older than the max age{age}", self.by_age));
        }
        if self.keystrokes_by_age > 0 {
            let age = opts.keystroke_max_age.map_or_else(String::new, |a| format!(" {}s", a.as_secs()));
            reasons.push(format!("{} keystroke events older than the keystroke max age{age}", self.keystrokes_by_age));
        }
        if self.by_size > 0 {
            let cap = max_bytes.map_or_else(String::new, |b| format!(" of {b} bytes"));
            reasons.push(format!("{} oldest to stay under the size cap{cap}", self.by_size));
        }
        format!(
            "store retention deleted {} events ({}); store is now {} bytes",
            self.total(),
            reasons.join(", "),
            self.size_after
        )
    }
}

/// Deletes events older than `max_age` (by event time). Returns how many.
pub fn delete_older_than(conn: &Connection, max_age: Duration) -> rusqlite::Result<u64> {
    delete_up_to_time(conn, age_cutoff(max_age), false, None)
}

/// Deletes events of `domain` older than `max_age`: keystrokes have their own, usually shorter, retention.
pub fn delete_domain_older_than(conn: &Connection, domain: &str, max_age: Duration) -> rusqlite::Result<u64> {
    delete_up_to_time(conn, age_cutoff(max_age), false, Some(domain))
}

/// `time_ns` of the moment `max_age` ago.
fn age_cutoff(max_age: Duration) -> i64 {
    let cutoff = SystemTime::now().checked_sub(max_age).map_or(0, |t| Timestamp::from_system_time(t).0);
    i64::try_from(cutoff).unwrap_or(i64::MAX)
}

/// When the store is over `max_bytes`, deletes the oldest events until it is under [`SIZE_TARGET`] of it (or
/// empty). Returns how many.
pub fn shrink_to(conn: &Connection, path: &Path, max_bytes: u64) -> rusqlite::Result<u64> {
    if size_on_disk(path) <= max_bytes {
        return Ok(0);
    }
    // The WAL counts, but it is not events: fold it in first, so the rows to delete are reckoned from the data.
    give_back_space(conn)?;
    if size_on_disk(path) <= max_bytes {
        return Ok(0);
    }
    let target = (max_bytes as f64 * SIZE_TARGET) as u64;
    let mut deleted = 0;
    for _ in 0..MAX_SIZE_ROUNDS {
        let size = size_on_disk(path);
        if size <= target {
            break;
        }
        let rows: i64 = conn.query_row("SELECT count(*) FROM event_rows", [], |r| r.get(0))?;
        if rows == 0 {
            // Nothing left to delete; what remains is schema and free pages.
            give_back_space(conn)?;
            break;
        }
        let bytes_per_row = (size / rows as u64).max(1);
        let excess_rows = (size - target).div_ceil(bytes_per_row).max(1);
        let chunk = i64::try_from(excess_rows).unwrap_or(i64::MAX).min(rows);
        let newest_deleted: i64 =
            conn.query_row("SELECT time_ns FROM event_rows ORDER BY time_ns LIMIT 1 OFFSET ?1", [chunk - 1], |r| {
                r.get(0)
            })?;
        deleted += delete_up_to_time(conn, newest_deleted, true, None)?;
        give_back_space(conn)?;
    }
    Ok(deleted)
}

/// Deletes events with `time_ns < cutoff` (or `<=` when `inclusive`), of one `domain` or all, and the process
/// contexts only they used, in one transaction. Finding those contexts costs in proportion to what is deleted: the
/// candidates are the contexts of the deleted rows (noted first in a temporary table), and each goes when the
/// `ctx` index shows no row left.
fn delete_up_to_time(conn: &Connection, cutoff: i64, inclusive: bool, domain: Option<&str>) -> rusqlite::Result<u64> {
    let op = if inclusive { "<=" } else { "<" };
    // ?2 is NULL for every domain.
    let rows = format!(
        "event_rows WHERE time_ns {op} ?1 AND (?2 IS NULL OR kind IN (SELECT kind FROM event_kinds WHERE domain = ?2))"
    );
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS doomed_contexts (ctx INTEGER PRIMARY KEY); DELETE FROM doomed_contexts;",
    )?;
    tx.execute(&format!("INSERT OR IGNORE INTO doomed_contexts SELECT ctx FROM {rows}"), params![cutoff, domain])?;
    let n = tx.execute(&format!("DELETE FROM {rows}"), params![cutoff, domain])?;
    tx.execute_batch(
        "DELETE FROM process_contexts WHERE ctx IN (SELECT ctx FROM doomed_contexts) \
         AND NOT EXISTS (SELECT 1 FROM event_rows e WHERE e.ctx = process_contexts.ctx); \
         DELETE FROM doomed_contexts;",
    )?;
    tx.commit()?;
    Ok(n as u64)
}

/// Returns freed pages to the file system: vacuum the free list, then checkpoint and truncate the WAL.
pub fn give_back_space(conn: &Connection) -> rusqlite::Result<()> {
    // Stepped to the end: some SQLite builds free one page per step.
    let mut vacuum = conn.prepare("PRAGMA incremental_vacuum")?;
    let mut rows = vacuum.query([])?;
    while rows.next()?.is_some() {}
    // The pragma returns one row (busy, log, checkpointed); a busy checkpoint (a reader holds an old snapshot) is
    // not an error: the next pass truncates.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}
