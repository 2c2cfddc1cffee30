//! `ringwatch query`: SQL over the local store, for hunting.
//!
//! The store is opened read-only (`query_only`), so a query cannot change the evidence. Rows are streamed: as JSON
//! lines (one object per row, column -> value, columns in SELECT order) when stdout is a pipe, or as an aligned
//! table on a terminal (column widths from the first rows; long cells are cut on screen, never in JSON). A query
//! SQLite rejects exits 2 with SQLite's own message; a missing store exits 1 saying where it looked.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use ringwatch_store::{RowVisitor, Store, StoreError, Value};

use crate::UsageError;

const AFTER_HELP: &str = "\
Tables and views (see `ringwatch query \"SELECT name, type FROM sqlite_master\"` and `PRAGMA table_info(events)`):
  events      one row per event: time, time_ns, host, domain, activity, action, rule, pid, ppid, guid,
              parent_guid, exe, cmdline, user, uid, path, new_path, protocol, src_ip, src_port, dst_ip, dst_port,
              dns_query, text (keystrokes), component, message, count, id, seq, ...
  event_json  seq -> the full event JSON (json_extract() any field; join on seq)
  views       processes, files, network, dns, keystrokes, alerts (policy acted or a rule matched), sensor

Hunts:
  ringwatch query \"SELECT time, pid, user, cmdline FROM processes WHERE activity = 'exec' AND exe LIKE '%curl%'\"
  ringwatch query \"SELECT dst_ip, dst_port, count(*) AS n FROM network GROUP BY 1, 2 ORDER BY n DESC LIMIT 20\"
  ringwatch query \"SELECT time, exe, path FROM files WHERE path LIKE '/etc/%' AND activity IN ('write', 'delete')\"
  ringwatch query \"SELECT * FROM alerts ORDER BY time_ns DESC LIMIT 50\"
  ringwatch query \"SELECT time, component, count, message FROM sensor WHERE activity IN ('drop', 'error')\"
  ringwatch query \"SELECT json_extract(j.json, '$.process.cwd') AS cwd, e.cmdline FROM processes e
                   JOIN event_json j USING (seq) WHERE e.pid = 4242\"
  ringwatch query --format jsonl \"SELECT * FROM dns\" | jq -r .dns_query | sort | uniq -c | sort -rn

Then: `ringwatch tree PID` for a process's family and what each member did.";

/// How rows are printed.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryFormat {
    /// An aligned table (the default on a terminal).
    Table,
    /// One JSON object per row (the default when piped).
    Jsonl,
}

/// Options of `ringwatch query`.
#[derive(Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct QueryArgs {
    /// The store to read.
    #[arg(long, default_value = ringwatch_store::DEFAULT_STORE_PATH)]
    pub store: PathBuf,
    /// Output format (default: table on a terminal, JSON lines otherwise).
    #[arg(long, value_enum)]
    pub format: Option<QueryFormat>,
    /// One SQL statement (SQLite dialect); the store is read-only.
    pub sql: String,
}

/// Rows buffered to size the table's columns before the first line is printed.
const TABLE_SAMPLE_ROWS: usize = 1000;
/// Widest table cell on screen; longer values end in `…` (use `--format jsonl` for the whole value).
const TABLE_CELL_MAX: usize = 80;

/// Runs a query.
pub fn run(args: QueryArgs) -> Result<()> {
    let store = Store::open_read_only(&args.store)?;
    let stdout = io::stdout();
    let is_tty = stdout.is_terminal();
    let out = BufWriter::new(stdout.lock());
    let format = args.format.unwrap_or(if is_tty { QueryFormat::Table } else { QueryFormat::Jsonl });
    let result = match format {
        QueryFormat::Jsonl => {
            let mut v = JsonLines { out, columns: Vec::new() };
            store.query(&args.sql, &mut v).and_then(|_| v.out.flush().map_err(StoreError::Output))
        }
        QueryFormat::Table => {
            let mut v = Table::new(out);
            let result = store.query(&args.sql, &mut v);
            result.and_then(|rows| v.finish(rows).map_err(StoreError::Output))
        }
    };
    result.map_err(|e| match e {
        StoreError::BadQuery { .. } => UsageError(format!(
            "{e}\nhint: list the tables and views with: ringwatch query \"SELECT name, type FROM sqlite_master\"; \
             see `ringwatch query --help` for example hunts"
        ))
        .into(),
        other => other.into(),
    })
}

/// One JSON object per row, keys in column order.
struct JsonLines<W: Write> {
    out: W,
    /// Column names as JSON strings; a repeated name gets a `_2`, `_3`... suffix so no key is lost.
    columns: Vec<String>,
}

impl<W: Write> RowVisitor for JsonLines<W> {
    fn columns(&mut self, names: &[String]) -> io::Result<()> {
        let mut seen = std::collections::HashMap::<&str, usize>::new();
        self.columns = names
            .iter()
            .map(|n| {
                let count = seen.entry(n).or_default();
                *count += 1;
                let key = if *count == 1 { n.clone() } else { format!("{n}_{count}") };
                serde_json::Value::String(key).to_string()
            })
            .collect();
        Ok(())
    }

    fn row(&mut self, values: &[Value]) -> io::Result<()> {
        self.out.write_all(b"{")?;
        for (i, (key, value)) in self.columns.iter().zip(values).enumerate() {
            if i > 0 {
                self.out.write_all(b",")?;
            }
            write!(self.out, "{key}:{}", value.to_json())?;
        }
        self.out.write_all(b"}\n")
    }
}

/// An aligned table: widths from the first [`TABLE_SAMPLE_ROWS`] rows, later rows streamed with those widths.
struct Table<W: Write> {
    out: W,
    header: Vec<String>,
    sample: Vec<Vec<String>>,
    widths: Option<Vec<usize>>,
}

impl<W: Write> Table<W> {
    fn new(out: W) -> Self {
        Table { out, header: Vec::new(), sample: Vec::new(), widths: None }
    }

    fn print_header_and_sample(&mut self) -> io::Result<()> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.sample {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let header = std::mem::take(&mut self.header);
        print_line(&mut self.out, &widths, &header)?;
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        print_line(&mut self.out, &widths, &rule)?;
        for row in std::mem::take(&mut self.sample) {
            print_line(&mut self.out, &widths, &row)?;
        }
        self.widths = Some(widths);
        Ok(())
    }

    fn finish(&mut self, rows: u64) -> io::Result<()> {
        if self.widths.is_none() {
            self.print_header_and_sample()?;
        }
        writeln!(self.out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
        self.out.flush()
    }
}

impl<W: Write> RowVisitor for Table<W> {
    fn columns(&mut self, names: &[String]) -> io::Result<()> {
        self.header = names.to_vec();
        Ok(())
    }

    fn row(&mut self, values: &[Value]) -> io::Result<()> {
        let cells: Vec<String> = values.iter().map(|v| cell(&v.to_string())).collect();
        match &self.widths {
            Some(widths) => print_line(&mut self.out, widths, &cells),
            None => {
                self.sample.push(cells);
                if self.sample.len() >= TABLE_SAMPLE_ROWS {
                    self.print_header_and_sample()?;
                }
                Ok(())
            }
        }
    }
}

/// A value as one screen cell: control characters shown escaped, cut at [`TABLE_CELL_MAX`].
fn cell(text: &str) -> String {
    let mut out: String = text
        .chars()
        .flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] })
        .collect();
    if out.chars().count() > TABLE_CELL_MAX {
        out = out.chars().take(TABLE_CELL_MAX - 1).collect();
        out.push('…');
    }
    out
}

fn print_line(out: &mut impl Write, widths: &[usize], cells: &[String]) -> io::Result<()> {
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        line.push_str(cell);
        if i + 1 < cells.len() {
            line.extend(std::iter::repeat_n(' ', width.saturating_sub(cell.chars().count())));
        }
    }
    writeln!(out, "{line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_keep_column_order_types_and_repeated_names() {
        let mut v = JsonLines { out: Vec::new(), columns: Vec::new() };
        v.columns(&["pid".into(), "exe".into(), "pid".into(), "gone".into()]).expect("columns");
        v.row(&[Value::Integer(7), Value::Text("/bin/\"sh\"".into()), Value::Integer(8), Value::Null]).expect("row");
        let line = String::from_utf8(v.out).expect("utf8");
        assert_eq!(line, "{\"pid\":7,\"exe\":\"/bin/\\\"sh\\\"\",\"pid_2\":8,\"gone\":null}\n");
    }

    #[test]
    fn table_aligns_columns_and_counts_rows() {
        let mut t = Table::new(Vec::new());
        t.columns(&["pid".into(), "exe".into()]).expect("columns");
        t.row(&[Value::Integer(1), Value::Text("/sbin/init".into())]).expect("row");
        t.row(&[Value::Integer(4242), Value::Null]).expect("row");
        t.finish(2).expect("finish");
        let text = String::from_utf8(t.out).expect("utf8");
        assert_eq!(text, "pid   exe\n----  ----------\n1     /sbin/init\n4242  \n(2 rows)\n");
    }
}
