//! A YAML document as a tree of nodes that each remember their line and column.
//!
//! The policy compiler does not deserialize straight into rule structs: serde stops at the first error, and a
//! policy author wants every mistake of a file at once, each with its line (STYLE.md, "Errors"). So the text is
//! parsed once by `serde-saphyr` into this loosely typed tree, with every value and every mapping key wrapped in
//! `serde_saphyr::Spanned`, and [`crate::compile`] walks the tree, collecting problems as it goes.
//!
//! Only a YAML *syntax* error stops early: the parser cannot recover from it, so a file with broken syntax reports
//! that one problem (with its line and column) and nothing else.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, MessageFormatter, Spanned};

/// Where a node starts: 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub line: u32,
    pub column: u32,
}

impl From<&Location> for Pos {
    fn from(l: &Location) -> Self {
        let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Pos { line: clamp(l.line()), column: clamp(l.column()) }
    }
}

/// One YAML value with its position.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// A mapping key with its position.
#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub pos: Pos,
    pub name: String,
}

/// The loosely typed value of a [`Node`]; the compiler checks the types it expects.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

impl Value {
    /// How the value is called in "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "true/false",
            Value::Int(_) => "a number",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A syntax error from the YAML parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parses one YAML document. An empty document (or one holding only comments) is `Value::Null`.
pub(crate) fn parse(text: &str) -> Result<Node, SyntaxError> {
    match serde_saphyr::from_str::<Node>(text) {
        Ok(node) => Ok(node),
        Err(e) => {
            let pos = e.location().map(|l| Pos::from(&l)).unwrap_or_default();
            // The user formatter words messages for the author of the file, not for the program that parses it
            // ("duplicate mapping key `id` is not allowed here" rather than "set DuplicateKeyPolicy ...").
            let raw = serde_saphyr::UserMessageFormatter.format_message(e.without_snippet()).into_owned();
            let mut message: String = raw.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            if char_at(text, pos) == Some('*') {
                // `exe: **/nc*` reads as a YAML alias; the parser's message alone does not say so.
                message.push_str(" (a value starting with `*` is a YAML alias: quote it, e.g. \"**/nc*\")");
            }
            Err(SyntaxError { pos, message })
        }
    }
}

/// The character at a 1-based line/column position.
fn char_at(text: &str, pos: Pos) -> Option<char> {
    let line = text.lines().nth(usize::try_from(pos.line).ok()?.checked_sub(1)?)?;
    line.chars().nth(usize::try_from(pos.column).ok()?.checked_sub(1)?)
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<Value>::deserialize(d)?;
        Ok(Node { pos: Pos::from(&s.referenced), value: s.value })
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<Value>::deserialize(d)?;
        let name = match s.value {
            Value::Str(s) => s,
            Value::Int(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Null => "~".to_owned(),
            Value::Seq(_) | Value::Map(_) => "<complex key>".to_owned(),
        };
        Ok(Key { pos: Pos::from(&s.referenced), name })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        Ok(i128::try_from(v).map(Value::Int).unwrap_or(Value::Float(v as f64)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Str(String::from_utf8_lossy(v).into_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Key>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(n: &Node) -> &[(Key, Node)] {
        match &n.value {
            Value::Map(m) => m,
            other => panic!("expected a map, got {other:?}"),
        }
    }

    #[test]
    fn keys_and_values_carry_their_positions() {
        let doc = parse("rules:\n  - id: a\n    match: { exe: \"/tmp/**\", uid: [1, 2] }\n").expect("parses");
        let (k, rules) = &map(&doc)[0];
        assert_eq!((k.name.as_str(), k.pos.line, k.pos.column), ("rules", 1, 1));
        let Value::Seq(items) = &rules.value else { panic!("list") };
        let rule = map(&items[0]);
        assert_eq!((rule[1].0.name.as_str(), rule[1].0.pos), ("match", Pos { line: 3, column: 5 }));
        let m = map(&rule[1].1);
        assert_eq!(m[0].1.pos.line, 3);
        assert!(matches!(&m[0].1.value, Value::Str(s) if s == "/tmp/**"));
        assert!(matches!(&m[1].1.value, Value::Seq(v) if v.len() == 2));
    }

    #[test]
    fn empty_and_comment_only_documents_are_null() {
        assert!(matches!(parse("").expect("parses").value, Value::Null));
        assert!(matches!(parse("# nothing\n").expect("parses").value, Value::Null));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = parse("rules:\n  - id: a\n    match: [\n").expect_err("unclosed");
        assert!(e.pos.line >= 3, "{e:?}");
        let e = parse("rules:\n  - id: a\n    id: b\n").expect_err("duplicate key");
        assert_eq!(e.pos.line, 3);
        assert!(e.message.contains("duplicate"), "{e:?}");
    }

    #[test]
    fn an_unquoted_star_gets_a_hint() {
        let e = parse("exe: **/nc*\n").expect_err("alias");
        assert_eq!(e.pos, Pos { line: 1, column: 6 });
        assert!(e.message.contains("quote it"), "{e:?}");
    }
}
