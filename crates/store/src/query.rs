//! Hunting: any SQL a hunter writes, run on a read-only connection and streamed row by row to a [`RowVisitor`].
//!
//! Rows are handed over as they are stepped, never collected, so `SELECT * FROM events` over millions of rows
//! runs in constant memory when the output is a pipe. SQLite's own message for a bad query (syntax error, unknown
//! column, attempt to write) is kept in [`StoreError::BadQuery`] so the CLI can show it as it is.

use std::fmt;
use std::io;

use rusqlite::types::ValueRef;

use crate::error::StoreError;
use crate::store::Store;

/// One cell of a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer.
    Integer(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(String),
    /// A blob.
    Blob(Vec<u8>),
}

impl Value {
    fn from_ref(v: ValueRef<'_>) -> Value {
        match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }

    /// The value as JSON: numbers stay numbers, a blob becomes a hex string.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Integer(i) => (*i).into(),
            Value::Real(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into),
            Value::Text(t) => t.clone().into(),
            Value::Blob(b) => hex(b).into(),
        }
    }
}

impl fmt::Display for Value {
    /// As a table cell: NULL is empty, a blob is `x'..'`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Integer(i) => write!(f, "{i}"),
            Value::Real(r) => write!(f, "{r}"),
            Value::Text(t) => f.write_str(t),
            Value::Blob(b) => write!(f, "x'{}'", hex(b)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Receives a query's result: the column names once, then each row as it is read.
pub trait RowVisitor {
    /// The result's column names, before the first row.
    fn columns(&mut self, names: &[String]) -> io::Result<()>;
    /// One row, in column order.
    fn row(&mut self, values: &[Value]) -> io::Result<()>;
}

impl Store {
    /// Runs one SQL statement and streams its rows to `visitor`. Returns the number of rows.
    ///
    /// On a store opened with [`Store::open_read_only`] the connection is `query_only`: a statement that would
    /// write fails with SQLite's "attempt to write a readonly database".
    pub fn query(&self, sql: &str, visitor: &mut dyn RowVisitor) -> Result<u64, StoreError> {
        let bad = |e| StoreError::from_user_sql(&self.path, e);
        let mut stmt = self.conn.prepare(sql).map_err(bad)?;
        let names: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
        visitor.columns(&names).map_err(StoreError::Output)?;
        let mut rows = stmt.query([]).map_err(bad)?;
        let mut values = Vec::with_capacity(names.len());
        let mut count = 0;
        while let Some(row) = rows.next().map_err(bad)? {
            values.clear();
            for i in 0..names.len() {
                values.push(Value::from_ref(row.get_ref(i).map_err(bad)?));
            }
            visitor.row(&values).map_err(StoreError::Output)?;
            count += 1;
        }
        Ok(count)
    }
}
