//! Events as rows: the `event_rows` columns, the `event_kinds` columns of the event's kind, the `process_contexts`
//! columns of its process, and the JSON cut into the parts the schema stores (see [`crate::schema`]).
//!
//! A [`RowBatch`] is made from a pipeline batch *before* it reaches the database thread: serializing the JSON,
//! formatting times and joining argv is a good part of the per-event cost, and doing it on the pipeline thread lets
//! it run in parallel with SQLite's work on the writer thread. The same goes for hashing the process object, which
//! lets the writer find the event's process context with one lookup (see [`crate::insert`]).
//!
//! Why one buffer per batch: every text value of every row is appended to one `String`, and a row is a run of
//! [`Cell`]s that point into it. That costs three allocations per batch instead of ~25 per event, the writer reads
//! the batch front to back (the memory another core wrote arrives in streams rather than one cache miss per
//! value), and a batch the writer is done with goes back to the sink to be filled again, so in steady state nothing
//! is allocated or freed at all.

use std::hash::Hasher;

use rusqlite::Statement;

use ringwatch_core::Event;
use ringwatch_core::event_id::EventIds;

use crate::json_parts::{self, JsonParts};
use crate::schema;

/// Cells of a row's `event_rows` part ([`schema::ROW_COLUMNS`]).
const ROW_CELLS: usize = schema::ROW_COLUMNS.len();
/// Cells of a row's `event_kinds` part ([`schema::KIND_COLUMNS`]).
pub const KIND_CELLS: usize = schema::KIND_COLUMNS.len();
/// Cells of a row's `process_contexts` part ([`schema::PROCESS_COLUMNS`]); the last is the process JSON.
const PROCESS_CELLS: usize = schema::PROCESS_COLUMNS.len();
/// Cells per row: the three parts, in this order.
const CELLS: usize = ROW_CELLS + KIND_CELLS + PROCESS_CELLS;

/// Position of `host` in [`schema::ROW_COLUMNS`].
const HOST_COLUMN: usize = 3;

/// One column value of a prepared row: text is a span of the batch's text buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    Null,
    Int(i64),
    Text { start: u32, end: u32 },
}

/// A column value, as bound to a statement parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound<'a> {
    /// NULL.
    Null,
    /// An integer.
    Int(i64),
    /// Text (UTF-8: it was a `&str` when it entered the batch; kept as bytes so that reading it back costs no
    /// check).
    Text(&'a [u8]),
}

impl rusqlite::ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Bound::Null => ValueRef::Null,
            Bound::Int(n) => ValueRef::Integer(n),
            Bound::Text(s) => ValueRef::Text(s),
        }))
    }
}

/// Events ready to insert: the rows of (usually) one pipeline batch.
#[derive(Debug, Default)]
pub struct RowBatch {
    /// Every text value of every row, back to back.
    text: String,
    /// [`CELLS`] cells per row.
    cells: Vec<Cell>,
    /// Per row, hashes of its kind and of its process JSON.
    hashes: Vec<(u64, u64)>,
    /// Serialization buffer, reused.
    scratch: Vec<u8>,
}

/// One row of a [`RowBatch`].
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    cells: &'a [Cell],
    text: &'a [u8],
    /// Hash of the kind columns, for the writer's lookup of the kinds it met.
    pub kind_hash: u64,
    /// Hash of [`Row::process_json`], for the writer's lookup of the contexts it stored.
    pub process_hash: u64,
}

impl RowBatch {
    /// Empties the batch, keeping its buffers for the next one.
    pub fn clear(&mut self) {
        self.text.clear();
        self.cells.clear();
        self.hashes.clear();
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Appends `ev`; an event without an id gets one from `ids` (in the row and in the JSON).
    pub fn push(&mut self, ev: &Event, ids: &mut EventIds) -> serde_json::Result<()> {
        if ev.id.is_empty() {
            let mut with_id = ev.clone();
            ids.assign(&mut with_id.id);
            return self.push(&with_id, ids);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let result = serde_json::to_writer(&mut scratch, ev).and_then(|()| {
            let json = std::str::from_utf8(&scratch).map_err(serde::ser::Error::custom)?;
            self.push_parts(ev, json)
        });
        self.scratch = scratch;
        result
    }

    /// Appends the cells of `ev`, whose JSON is `json`; on error the batch is left as it was.
    fn push_parts(&mut self, ev: &Event, json: &str) -> serde_json::Result<()> {
        let parts = JsonParts::cut(json, ev)?;
        let (text_before, cells_before) = (self.text.len(), self.cells.len());
        let mut out = CellWriter { batch: self };
        let written = row_cells(ev, &parts, &mut out)
            .and_then(|()| kind_cells(ev, &mut out))
            .and_then(|()| process_cells(ev, parts.process, &mut out));
        if let Err(e) = written {
            self.text.truncate(text_before);
            self.cells.truncate(cells_before);
            return Err(e);
        }
        debug_assert_eq!(self.cells.len() - cells_before, CELLS);
        self.hashes.push((kind_hash(ev), hash(parts.process.as_bytes())));
        Ok(())
    }

    /// The rows, in order.
    pub fn rows(&self) -> impl DoubleEndedIterator<Item = Row<'_>> {
        self.cells.chunks_exact(CELLS).zip(&self.hashes).map(|(cells, &(kind_hash, process_hash))| Row {
            cells,
            text: self.text.as_bytes(),
            kind_hash,
            process_hash,
        })
    }

    /// The host name of the last row that has one.
    pub fn last_host(&self) -> Option<&str> {
        self.rows().rev().find_map(|row| match row.value(HOST_COLUMN) {
            Bound::Text(host) if !host.is_empty() => std::str::from_utf8(host).ok(),
            _ => None,
        })
    }
}

impl<'a> Row<'a> {
    fn value(&self, cell: usize) -> Bound<'a> {
        match self.cells[cell] {
            Cell::Null => Bound::Null,
            Cell::Int(n) => Bound::Int(n),
            Cell::Text { start, end } => Bound::Text(&self.text[start as usize..end as usize]),
        }
    }

    /// The values of the kind columns ([`schema::KIND_COLUMNS`]): the key of the event's kind.
    pub fn kind(&self) -> [Bound<'a>; KIND_CELLS] {
        std::array::from_fn(|i| self.value(ROW_CELLS + i))
    }

    /// The event's process object, as in its JSON: the key of its process context.
    pub fn process_json(&self) -> &'a [u8] {
        match self.value(CELLS - 1) {
            Bound::Text(json) => json,
            _ => b"",
        }
    }
}

/// The hash of an event's kind ([`schema::KIND_COLUMNS`]).
fn kind_hash(ev: &Event) -> u64 {
    let parts = [ev.domain.as_str(), ev.activity.as_str(), ev.backend.mode.as_str(), ev.backend.source.as_str()];
    parts.iter().fold(u64::from(ev.class_uid), |h, part| h.rotate_left(17) ^ hash(part.as_bytes()))
}

/// A `Hasher` for keys that already are hashes ([`Row::process_hash`], [`Row::kind_hash`]): passes the `u64`
/// through (the writer's lookups, see [`crate::insert`]).
#[derive(Default)]
pub struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used for `u64` keys; fold anything else in so the hasher stays correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A 64-bit hash: FxHash over 8-byte words with a final mix, several times faster than SipHash on a ~600-byte
/// process object. It needs no resistance to crafted collisions: the writer compares the keys of equal hashes,
/// so a collision costs one comparison and one more row.
fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let step = |h: u64, word: u64| (h.rotate_left(5) ^ word).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    let mut h = bytes.len() as u64;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = step(h, u64::from_le_bytes(word));
    }
    for &b in chunks.remainder() {
        h = step(h, u64::from(b));
    }
    h ^= h >> 29;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^ (h >> 32)
}

/// `INSERT OR IGNORE INTO event_rows (..., kind, ctx) VALUES (?1, ...)`: a row whose id is already stored is
/// skipped.
pub fn insert_row_sql() -> String {
    let placeholders: Vec<String> = (1..=ROW_CELLS + 2).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT OR IGNORE INTO event_rows ({}, kind, ctx) VALUES ({})",
        schema::ROW_COLUMNS.join(", "),
        placeholders.join(", ")
    )
}

/// Parameter of `kind` in [`insert_row_sql`].
pub const KIND_PARAMETER: usize = ROW_CELLS + 1;

/// `INSERT INTO process_contexts (...) VALUES (?1, ...)`.
pub fn insert_process_sql() -> String {
    let placeholders: Vec<String> = (1..=PROCESS_CELLS).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO process_contexts ({}) VALUES ({})",
        schema::PROCESS_COLUMNS.join(", "),
        placeholders.join(", ")
    )
}

/// Parameter of `ctx` in [`insert_row_sql`].
pub const CTX_PARAMETER: usize = ROW_CELLS + 2;

/// Binds one part of rows to a statement, skipping every parameter that already holds the value: consecutive
/// events share most of their columns (host, mode, action, NULLs of other domains), and a bind is a good part of
/// what an insert costs.
///
/// Bindings outlive an execution, so skipping is exact; it assumes the statement's parameters were all NULL when
/// the binder was made, which holds for a statement fresh from the cache (rusqlite clears them on return).
pub struct Binder<'a, const N: usize> {
    /// First cell of the part in a row.
    first: usize,
    bound: [Bound<'a>; N],
}

/// Binds the `event_rows` part of rows (all but `kind` and `ctx`).
pub type RowBinder<'a> = Binder<'a, ROW_CELLS>;
/// Binds the `process_contexts` part of rows.
pub type ProcessBinder<'a> = Binder<'a, PROCESS_CELLS>;

impl RowBinder<'_> {
    /// A binder for a fresh [`insert_row_sql`] statement.
    pub fn for_rows() -> Self {
        Binder { first: 0, bound: [Bound::Null; ROW_CELLS] }
    }
}

impl ProcessBinder<'_> {
    /// A binder for a fresh [`insert_process_sql`] statement.
    pub fn for_processes() -> Self {
        Binder { first: ROW_CELLS + KIND_CELLS, bound: [Bound::Null; PROCESS_CELLS] }
    }
}

impl<'a, const N: usize> Binder<'a, N> {
    /// Binds the part of `row` to `stmt`.
    pub fn bind(&mut self, stmt: &mut Statement<'_>, row: &Row<'a>) -> rusqlite::Result<()> {
        for (i, slot) in self.bound.iter_mut().enumerate() {
            let value = row.value(self.first + i);
            if *slot != value {
                stmt.raw_bind_parameter(i + 1, value)?;
                *slot = value;
            }
        }
        Ok(())
    }
}

/// Appends one row's cells (and their text) to a batch.
struct CellWriter<'b> {
    batch: &'b mut RowBatch,
}

impl CellWriter<'_> {
    fn push(&mut self, cell: Cell) {
        self.batch.cells.push(cell);
    }

    fn null(&mut self) {
        self.push(Cell::Null);
    }

    /// An integer column; values beyond i64 (a u64 count or time far in the future) saturate.
    fn int(&mut self, n: impl TryInto<i64>) {
        self.push(Cell::Int(n.try_into().unwrap_or(i64::MAX)));
    }

    fn opt_int<T: TryInto<i64>>(&mut self, n: Option<T>) {
        match n {
            Some(n) => self.int(n),
            None => self.null(),
        }
    }

    /// Text written by `write` into the batch's buffer.
    fn text_with(&mut self, write: impl FnOnce(&mut String)) -> serde_json::Result<()> {
        let start = offset(self.batch.text.len())?;
        write(&mut self.batch.text);
        let end = offset(self.batch.text.len())?;
        self.push(Cell::Text { start, end });
        Ok(())
    }

    fn text(&mut self, s: &str) -> serde_json::Result<()> {
        self.text_with(|buf| buf.push_str(s))
    }

    fn opt_text(&mut self, s: Option<&str>) -> serde_json::Result<()> {
        match s {
            Some(s) => self.text(s),
            None => {
                self.null();
                Ok(())
            }
        }
    }

    /// Text, or NULL when empty.
    fn nonempty_text(&mut self, s: &str) -> serde_json::Result<()> {
        self.opt_text((!s.is_empty()).then_some(s))
    }

    /// Words joined by single spaces (argv as a command line), or NULL when there are none.
    fn joined(&mut self, words: &[String]) -> serde_json::Result<()> {
        if words.is_empty() {
            self.null();
            return Ok(());
        }
        self.text_with(|buf| {
            for (i, word) in words.iter().enumerate() {
                if i > 0 {
                    buf.push(' ');
                }
                buf.push_str(word);
            }
        })
    }
}

/// A text offset in a batch; a batch beyond 4 GiB of text is refused (batches are a pipeline batch of events).
fn offset(n: usize) -> serde_json::Result<u32> {
    u32::try_from(n).map_err(|_| serde::ser::Error::custom("a batch of events beyond 4 GiB of text"))
}

/// The `event_rows` values of `ev`, in [`schema::ROW_COLUMNS`] order.
fn row_cells(ev: &Event, json: &JsonParts<'_>, out: &mut CellWriter<'_>) -> serde_json::Result<()> {
    let file = ev.file.as_ref();
    let net = ev.network.as_ref();
    let keys = ev.keystroke.as_ref();
    let sensor = ev.sensor.as_ref();
    out.text(&ev.id)?;
    out.int(ev.time.0);
    match json.time {
        Some(time) => out.text(time)?,
        None => out.text(&ev.time.to_rfc3339())?,
    }
    out.text(&ev.host)?;
    out.text(ev.action.as_str())?;
    out.opt_text(ev.rule.as_deref())?;
    out.int(u8::from(ev.trusted));
    out.opt_text(file.map(|f| f.path.as_str()))?;
    out.opt_text(file.and_then(|f| f.new_path.as_deref()))?;
    out.opt_text(net.map(|n| n.protocol.as_str()))?;
    out.opt_text(net.and_then(|n| n.src_ip.as_deref()))?;
    out.opt_int(net.and_then(|n| n.src_port));
    out.opt_text(net.and_then(|n| n.dst_ip.as_deref()))?;
    out.opt_int(net.and_then(|n| n.dst_port));
    out.opt_text(net.and_then(|n| n.direction.as_deref()))?;
    out.opt_text(net.and_then(|n| n.dns.as_ref()).map(|d| d.query.as_str()))?;
    out.opt_int(keys.map(|k| u8::from(k.redacted)));
    out.opt_text(sensor.and_then(|s| s.component.as_deref()))?;
    out.opt_int(sensor.and_then(|s| s.count));
    out.opt_text(keys.map(|k| k.text.as_str()))?;
    out.opt_text(sensor.map(|s| s.message.as_str()))?;
    out.opt_text(json.head)?;
    out.opt_text(json.facts)?;
    out.text(json.tail)?;
    out.opt_text(json.end)
}

/// The `event_kinds` values of `ev`, in [`schema::KIND_COLUMNS`] order.
fn kind_cells(ev: &Event, out: &mut CellWriter<'_>) -> serde_json::Result<()> {
    out.text(ev.domain.as_str())?;
    out.text(ev.activity.as_str())?;
    out.int(ev.class_uid);
    out.text(ev.backend.mode.as_str())?;
    out.text(ev.backend.source.as_str())
}

/// The `process_contexts` values of `ev`, in [`schema::PROCESS_COLUMNS`] order; the last is the process JSON.
fn process_cells(ev: &Event, process_json: &str, out: &mut CellWriter<'_>) -> serde_json::Result<()> {
    let p = &ev.process;
    out.int(p.pid);
    out.opt_int((p.tid != 0).then_some(p.tid));
    out.int(p.ppid);
    out.nonempty_text(&p.guid)?;
    out.opt_text(p.parent_guid.as_deref())?;
    out.int(p.uid);
    out.opt_text(p.user.as_deref())?;
    out.int(p.euid);
    out.int(p.session_id);
    out.opt_text(p.tty.as_deref())?;
    out.opt_text(p.container_id.as_deref())?;
    match json_parts::start_time_in(process_json) {
        _ if p.start_time.0 == 0 => out.null(),
        Some(time) => out.text(time)?,
        None => out.text(&p.start_time.to_rfc3339())?,
    }
    out.opt_int(p.exit_code);
    out.opt_int(p.exit_signal);
    out.nonempty_text(&p.exe)?;
    out.joined(&p.cmdline)?;
    out.opt_text(p.cwd.as_deref())?;
    out.text(process_json)
}

#[cfg(test)]
mod tests {
    use ringwatch_core::{Activity, Backend, Domain, Mode, SourceKind};

    use super::*;

    #[test]
    fn rows_give_back_their_values() {
        let mut ev =
            Event::new(Domain::Process, Activity::Exit, Backend { mode: Mode::Kernel, source: SourceKind::Ebpf });
        ev.id = "a".into();
        ev.process.pid = 1;
        ev.process.exit_code = Some(-3);
        ev.time = ringwatch_core::Timestamp(i64::MAX as u64);
        let mut batch = RowBatch::default();
        batch.push(&ev, &mut EventIds::with_instance("x")).expect("push");
        let rows: Vec<Row<'_>> = batch.rows().collect();
        assert_eq!(rows[0].value(0), Bound::Text(b"a"));
        assert_eq!(rows[0].value(1), Bound::Int(i64::MAX), "time_ns");
        let process = ROW_CELLS + KIND_CELLS;
        assert_eq!(rows[0].value(process), Bound::Int(1), "pid");
        assert_eq!(rows[0].value(process + 12), Bound::Int(-3), "exit_code");
        assert_eq!(rows[0].value(CELLS - 1), Bound::Text(rows[0].process_json()));
        batch.clear();
        assert_eq!((batch.len(), batch.rows().count()), (0, 0));
    }
}
