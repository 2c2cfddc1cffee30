//! One [`Event`] as one row: the typed `events` columns hunters filter on, and the JSON for `event_json`.
//!
//! An [`EventRow`] is made from an event *before* it reaches the database thread: serializing the JSON, formatting
//! times and joining argv is a good part of the per-event cost, and doing it on the pipeline thread lets it run in
//! parallel with SQLite's work on the writer thread.

use rusqlite::Statement;
use rusqlite::types::Value;

use ringwatch_core::Event;
use ringwatch_core::event_id::EventIds;

use crate::schema;

/// Position of `host` in [`schema::EVENT_COLUMNS`].
const HOST_COLUMN: usize = 3;

/// An event ready to insert.
#[derive(Debug, Clone)]
pub struct EventRow {
    columns: Vec<Value>,
    json: String,
}

impl EventRow {
    /// Prepares `ev`; an event without an id gets one from `ids` (in the row and in the JSON).
    pub fn new(ev: &Event, ids: &mut EventIds) -> serde_json::Result<EventRow> {
        if ev.id.is_empty() {
            let mut with_id = ev.clone();
            ids.assign(&mut with_id.id);
            return EventRow::new(&with_id, ids);
        }
        Ok(EventRow { columns: columns(ev), json: serde_json::to_string(ev)? })
    }

    /// The host name, when the event has one.
    pub fn host(&self) -> Option<&str> {
        match &self.columns[HOST_COLUMN] {
            Value::Text(h) if !h.is_empty() => Some(h),
            _ => None,
        }
    }

    /// The event's JSON, exactly as the JSON-lines sink writes it.
    pub fn json(&self) -> &str {
        &self.json
    }
}

/// `INSERT OR IGNORE INTO events (...) VALUES (?1, ...)`: a row whose id is already stored is skipped.
pub fn insert_sql() -> String {
    let placeholders: Vec<String> = (1..=schema::EVENT_COLUMNS.len()).map(|i| format!("?{i}")).collect();
    format!("INSERT OR IGNORE INTO events ({}) VALUES ({})", schema::EVENT_COLUMNS.join(", "), placeholders.join(", "))
}

/// Binds every column of `row` to `stmt` (prepared from [`insert_sql`]).
pub fn bind(stmt: &mut Statement<'_>, row: &EventRow) -> rusqlite::Result<()> {
    for (i, value) in row.columns.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, value)?;
    }
    Ok(())
}

/// The column values of `ev`, in [`schema::EVENT_COLUMNS`] order.
fn columns(ev: &Event) -> Vec<Value> {
    let p = &ev.process;
    let file = ev.file.as_ref();
    let net = ev.network.as_ref();
    let keys = ev.keystroke.as_ref();
    let sensor = ev.sensor.as_ref();
    let cmdline = (!p.cmdline.is_empty()).then(|| p.cmdline.join(" "));
    let columns = vec![
        text(&ev.id),
        int(ev.time.0),
        Value::Text(ev.time.to_rfc3339()),
        text(&ev.host),
        text(ev.domain.as_str()),
        text(ev.activity.as_str()),
        int(ev.class_uid),
        text(ev.backend.mode.as_str()),
        text(ev.backend.source.as_str()),
        text(ev.action.as_str()),
        opt_text(ev.rule.as_deref()),
        int(u8::from(ev.trusted)),
        int(p.pid),
        if p.tid == 0 { Value::Null } else { int(p.tid) },
        int(p.ppid),
        if p.guid.is_empty() { Value::Null } else { text(&p.guid) },
        opt_text(p.parent_guid.as_deref()),
        int(p.uid),
        opt_text(p.user.as_deref()),
        int(p.euid),
        int(p.session_id),
        opt_text(p.tty.as_deref()),
        opt_text(p.container_id.as_deref()),
        if p.start_time.0 == 0 { Value::Null } else { Value::Text(p.start_time.to_rfc3339()) },
        opt_int(p.exit_code),
        opt_int(p.exit_signal),
        if p.exe.is_empty() { Value::Null } else { text(&p.exe) },
        opt_text(file.map(|f| f.path.as_str())),
        opt_text(file.and_then(|f| f.new_path.as_deref())),
        opt_text(net.map(|n| n.protocol.as_str())),
        opt_text(net.and_then(|n| n.src_ip.as_deref())),
        opt_int(net.and_then(|n| n.src_port)),
        opt_text(net.and_then(|n| n.dst_ip.as_deref())),
        opt_int(net.and_then(|n| n.dst_port)),
        opt_text(net.and_then(|n| n.direction.as_deref())),
        opt_text(net.and_then(|n| n.dns.as_ref()).map(|d| d.query.as_str())),
        opt_int(keys.map(|k| u8::from(k.redacted))),
        opt_text(sensor.and_then(|s| s.component.as_deref())),
        opt_int(sensor.and_then(|s| s.count)),
        cmdline.map_or(Value::Null, Value::Text),
        opt_text(p.cwd.as_deref()),
        opt_text(keys.map(|k| k.text.as_str())),
        opt_text(sensor.map(|s| s.message.as_str())),
    ];
    debug_assert_eq!(columns.len(), schema::EVENT_COLUMNS.len());
    columns
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn opt_text(s: Option<&str>) -> Value {
    s.map_or(Value::Null, text)
}

/// An integer column; values beyond i64 (a u64 count or time far in the future) saturate.
fn int(n: impl TryInto<i64>) -> Value {
    Value::Integer(n.try_into().unwrap_or(i64::MAX))
}

fn opt_int<T: TryInto<i64>>(n: Option<T>) -> Value {
    n.map_or(Value::Null, int)
}
