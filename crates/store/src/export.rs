//! Export: stored events as JSON lines, byte for byte what the agent wrote, filtered by time and domain.
//!
//! The JSON is what `event_json` gives: the stored parts put back together, byte for byte what the agent wrote
//! (see [`crate::schema`]), so an export is the original evidence (every field, including those that have no
//! column) and can be replayed through `ringwatch rules test` or loaded elsewhere. Lines are streamed to the caller
//! in insert order.

use ringwatch_core::{Domain, Timestamp};
use rusqlite::params;

use crate::error::StoreError;
use crate::schema::{JOIN, JSON_EXPR};
use crate::store::Store;

/// Which events to export; `None` means no bound.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    /// Events at or after this time.
    pub since: Option<Timestamp>,
    /// Events before this time.
    pub until: Option<Timestamp>,
    /// Only this domain.
    pub domain: Option<Domain>,
}

impl Store {
    /// Streams the JSON of every event `filter` selects to `line` (one event per call, no newline), in insert
    /// order. Returns how many.
    pub fn export(
        &self,
        filter: &ExportFilter,
        line: &mut dyn FnMut(&str) -> std::io::Result<()>,
    ) -> Result<u64, StoreError> {
        let sqlite = |e| StoreError::from_sqlite(&self.path, "exporting", e);
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {JSON_EXPR} FROM {JOIN} \
                 WHERE e.time_ns >= ?1 AND e.time_ns < ?2 AND (?3 IS NULL OR k.domain = ?3) ORDER BY e.seq"
            ))
            .map_err(sqlite)?;
        let since = filter.since.map_or(0, |t| to_i64(t.0));
        let until = filter.until.map_or(i64::MAX, |t| to_i64(t.0));
        let mut rows = stmt.query(params![since, until, filter.domain.map(Domain::as_str)]).map_err(sqlite)?;
        let mut count = 0;
        while let Some(row) = rows.next().map_err(sqlite)? {
            let json = row.get_ref(0).and_then(|v| v.as_str().map_err(Into::into)).map_err(sqlite)?;
            line(json).map_err(StoreError::Output)?;
            count += 1;
        }
        Ok(count)
    }
}

fn to_i64(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}
