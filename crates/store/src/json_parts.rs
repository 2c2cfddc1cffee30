//! An event's JSON cut into the parts the schema stores (see [`crate::schema`]): a head that the columns give back,
//! the process object (stored once per process state), the facts that follow it (of which the columns give back
//! the first fields of a file or connection), and an end that the columns give back. A part the columns would not
//! give back byte for byte is kept verbatim instead, so the `event_json` view always rebuilds exactly what the
//! agent wrote.
//!
//! The cut is found, not parsed: the JSON is serde_json's compact output of an [`Event`], whose fields come in a
//! fixed order. The parts the columns give back are matched against the event's own fields, and only text that
//! JSON writes as it is (no quote, backslash or control character) is matched; when the head does not match, the
//! process object is checked against a serialization of the process alone before it is trusted.

use ringwatch_core::{Domain, Event};

/// The key that introduces the process object in an event's JSON.
const PROCESS_KEY: &str = "\"process\":";

/// An event's JSON, cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonParts<'a> {
    /// Everything up to the process object, when the columns would not give it back (else `None`).
    pub head: Option<&'a str>,
    /// The `time` value as serialized, when the head was matched (it is the `time` column).
    pub time: Option<&'a str>,
    /// The process object.
    pub process: &'a str,
    /// The facts after the process object, when the columns would not give back their first fields (else `None`).
    pub facts: Option<&'a str>,
    /// The rest of the facts: after the fields the columns give back (or all of them, for events whose facts have
    /// no such fields), up to the end; empty when `facts` holds them.
    pub tail: &'a str,
    /// `None` when the end was matched; `Some("")` when `tail` runs to the end of the JSON.
    pub end: Option<&'a str>,
}

impl<'a> JsonParts<'a> {
    /// Cuts `json`, the JSON of `ev`.
    pub fn cut(json: &'a str, ev: &Event) -> serde_json::Result<JsonParts<'a>> {
        let unexpected = || serde::ser::Error::custom("an event's JSON without its process object where expected");
        // The first `"process":` is the key when the head matched (the keys before it are known), and in any
        // case not part of a string: inside a JSON string a quote is always escaped.
        let start = json.find(PROCESS_KEY).ok_or_else(unexpected)? + PROCESS_KEY.len();
        let end = start + value_len(&json[start..]).ok_or_else(unexpected)?;
        let (head, process, rest) = (&json[..start], &json[start..end], &json[end..]);
        let time = matched_head(head, ev);
        if time.is_none() && serde_json::to_string(&ev.process)? != process {
            return Err(unexpected());
        }
        let (facts, json_end) = match matched_end(rest, ev) {
            Some(facts) => (facts, None),
            None => (rest, Some("")),
        };
        let (facts, tail) = match ev.domain {
            Domain::File | Domain::Network => match matched_facts(facts, ev) {
                Some(tail) => (None, tail),
                None => (Some(facts), ""),
            },
            _ => (None, facts),
        };
        Ok(JsonParts { head: time.is_none().then_some(head), time, process, facts, tail, end: json_end })
    }
}

/// Length of the JSON object or array at the start of `json` (valid JSON, as serde_json writes it). Strings are
/// skipped with a search for their closing quote, as most of a process object is inside strings.
fn value_len(json: &str) -> Option<usize> {
    let bytes = json.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i = string_end(json, i + 1)?;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ if depth == 0 => return None,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Position just after the quote that closes the JSON string whose content starts at `from`: the first quote not
/// escaped, i.e. not after an odd run of backslashes.
fn string_end(json: &str, mut from: usize) -> Option<usize> {
    loop {
        let quote = from + json.get(from..)?.find('"')?;
        let backslashes = json.as_bytes()[from..quote].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 0 {
            return Some(quote + 1);
        }
        from = quote + 1;
    }
}

/// `s`, when JSON writes it as it is: serde_json escapes quotes, backslashes and control characters, and nothing
/// else.
fn plain(s: &str) -> Option<&str> {
    (!s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)).then_some(s)
}

/// Matches `head` against the head [`crate::schema::JSON_EXPR`] builds from the columns; returns the `time` value
/// when it matches.
fn matched_head<'h>(head: &'h str, ev: &Event) -> Option<&'h str> {
    let rest = head.strip_prefix("{\"id\":\"")?.strip_prefix(plain(&ev.id)?)?.strip_prefix("\",\"time\":\"")?;
    let (time, rest) = rest.split_once('"')?;
    let rest = rest.strip_prefix(",\"host\":\"")?.strip_prefix(plain(&ev.host)?)?;
    let rest = rest.strip_prefix("\",\"domain\":\"")?.strip_prefix(ev.domain.as_str())?;
    let rest = rest.strip_prefix("\",\"activity\":\"")?.strip_prefix(ev.activity.as_str())?;
    let rest = strip_decimal(rest.strip_prefix("\",\"class_uid\":")?, ev.class_uid)?;
    let rest = rest.strip_prefix(",\"backend\":{\"mode\":\"")?.strip_prefix(ev.backend.mode.as_str())?;
    let rest = rest.strip_prefix("\",\"source\":\"")?.strip_prefix(ev.backend.source.as_str())?;
    (rest == "\"},\"process\":").then_some(time)
}

/// `text` after the decimal digits of `n` (as SQLite and serde_json write it), when it starts with them.
fn strip_decimal(text: &str, n: u32) -> Option<&str> {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    text.as_bytes().starts_with(&digits[at..]).then(|| &text[digits.len() - at..])
}

/// Matches the end of `rest` (what follows the process object) against the end [`crate::schema::JSON_EXPR`]
/// builds from the columns, `,"action":..[,"rule":..],"trusted":..}`; returns what comes before it.
fn matched_end<'t>(rest: &'t str, ev: &Event) -> Option<&'t str> {
    let rest = rest.strip_suffix(if ev.trusted { ",\"trusted\":true}" } else { ",\"trusted\":false}" })?;
    let rest = match &ev.rule {
        Some(rule) => rest.strip_suffix('"')?.strip_suffix(plain(rule)?)?.strip_suffix(",\"rule\":\"")?,
        None => rest,
    };
    rest.strip_suffix('"')?.strip_suffix(ev.action.as_str())?.strip_suffix(",\"action\":\"")
}

/// Matches the start of `facts` (what follows the process object, up to the end) against the first fields of a
/// file or connection that [`crate::schema::JSON_EXPR`] builds from the columns; returns what comes after them.
fn matched_facts<'f>(facts: &'f str, ev: &Event) -> Option<&'f str> {
    let rest = match (ev.domain, &ev.file, &ev.network) {
        (Domain::File, Some(file), _) => {
            facts.strip_prefix(",\"file\":{\"path\":\"")?.strip_prefix(plain(&file.path)?)?.strip_prefix('"')?
        }
        (Domain::Network, _, Some(net)) => {
            let text = |rest: &'f str, key: &str, value: &Option<String>| match value {
                Some(v) => rest.strip_prefix(key)?.strip_prefix(plain(v)?)?.strip_prefix('"'),
                None => Some(rest),
            };
            let number = |rest: &'f str, key: &str, value: Option<u16>| match value {
                Some(n) => strip_decimal(rest.strip_prefix(key)?, u32::from(n)),
                None => Some(rest),
            };
            let rest = facts.strip_prefix(",\"network\":{\"protocol\":\"")?.strip_prefix(plain(&net.protocol)?)?;
            let rest = text(rest.strip_prefix('"')?, ",\"src_ip\":\"", &net.src_ip)?;
            let rest = number(rest, ",\"src_port\":", net.src_port)?;
            let rest = text(rest, ",\"dst_ip\":\"", &net.dst_ip)?;
            let rest = number(rest, ",\"dst_port\":", net.dst_port)?;
            text(rest, ",\"direction\":\"", &net.direction)?
        }
        _ => return None,
    };
    // The next field or the end of the object, not more of a value.
    rest.starts_with([',', '}']).then_some(rest)
}

/// The `start_time` value in a process object, as serialized (the same text as `Timestamp::to_rfc3339`); no
/// other key can match, as inside a JSON string a quote is always escaped.
pub fn start_time_in(process: &str) -> Option<&str> {
    const KEY: &str = ",\"start_time\":\"";
    let rest = &process[process.find(KEY)? + KEY.len()..];
    rest.split_once('"').map(|(time, _)| time)
}

#[cfg(test)]
mod tests {
    use ringwatch_core::{Action, Activity, Backend, Domain, Mode, SourceKind};

    use super::*;

    fn event() -> Event {
        let mut ev =
            Event::new(Domain::Process, Activity::Exec, Backend { mode: Mode::Kernel, source: SourceKind::Ebpf });
        ev.id = "0123456789abcdef-1f".into();
        ev.host = "h1".into();
        ev.process.pid = 42;
        ev.process.exe = "/usr/bin/x".into();
        ev
    }

    fn rebuilt(json: &str, parts: &JsonParts<'_>, ev: &Event) -> String {
        let head = parts.head.map_or_else(
            || {
                format!(
                    "{{\"id\":\"{}\",\"time\":\"{}\",\"host\":\"{}\",\"domain\":\"{}\",\"activity\":\"{}\",\
                     \"class_uid\":{},\"backend\":{{\"mode\":\"{}\",\"source\":\"{}\"}},\"process\":",
                    ev.id,
                    parts.time.unwrap_or_default(),
                    ev.host,
                    ev.domain.as_str(),
                    ev.activity.as_str(),
                    ev.class_uid,
                    ev.backend.mode.as_str(),
                    ev.backend.source.as_str()
                )
            },
            str::to_owned,
        );
        let facts = parts.facts.map_or_else(
            || match (&ev.file, &ev.network) {
                (Some(f), _) if ev.domain == Domain::File => format!(",\"file\":{{\"path\":\"{}\"", f.path),
                (_, Some(n)) if ev.domain == Domain::Network => {
                    let text = |key: &str, v: &Option<String>| {
                        v.as_ref().map_or_else(String::new, |v| format!(",\"{key}\":\"{v}\""))
                    };
                    let num = |key: &str, v: Option<u16>| v.map_or_else(String::new, |v| format!(",\"{key}\":{v}"));
                    format!(
                        ",\"network\":{{\"protocol\":\"{}\"{}{}{}{}{}",
                        n.protocol,
                        text("src_ip", &n.src_ip),
                        num("src_port", n.src_port),
                        text("dst_ip", &n.dst_ip),
                        num("dst_port", n.dst_port),
                        text("direction", &n.direction)
                    )
                }
                _ => String::new(),
            },
            str::to_owned,
        );
        let end = parts.end.map_or_else(
            || {
                let rule = ev.rule.as_ref().map_or_else(String::new, |r| format!(",\"rule\":\"{r}\""));
                format!(",\"action\":\"{}\"{rule},\"trusted\":{}}}", ev.action.as_str(), ev.trusted)
            },
            str::to_owned,
        );
        assert!(json.contains(parts.process));
        format!("{head}{}{facts}{}{end}", parts.process, parts.tail)
    }

    #[test]
    fn a_plain_event_keeps_only_its_process_and_tail() {
        let ev = event();
        let json = serde_json::to_string(&ev).expect("json");
        let parts = JsonParts::cut(&json, &ev).expect("cut");
        assert_eq!(parts.head, None);
        assert_eq!(parts.time, Some(ev.time.to_rfc3339().as_str()));
        assert_eq!(parts.end, None);
        assert_eq!(parts.tail, "");
        assert_eq!(parts.process, serde_json::to_string(&ev.process).expect("process"));
        assert_eq!(rebuilt(&json, &parts, &ev), json);
    }

    #[test]
    fn what_the_columns_would_not_give_back_is_kept_verbatim() {
        let mut ev = event();
        ev.host = "a \"quoted\" host".into();
        ev.rule = Some("no-tmp-exec".into());
        ev.action = Action::Killed;
        ev.enforcement_delay_us = Some(12);
        let json = serde_json::to_string(&ev).expect("json");
        let parts = JsonParts::cut(&json, &ev).expect("cut");
        assert!(parts.head.is_some(), "an escaped host is not rebuilt");
        assert_eq!(parts.end, Some(""), "enforcement_delay_us has no column");
        assert_eq!(rebuilt(&json, &parts, &ev), json);

        ev.enforcement_delay_us = None;
        ev.trusted = false;
        let json = serde_json::to_string(&ev).expect("json");
        let parts = JsonParts::cut(&json, &ev).expect("cut");
        assert_eq!(parts.end, None, "action, rule and trusted are columns");
        assert_eq!(rebuilt(&json, &parts, &ev), json);
    }

    #[test]
    fn the_first_fields_of_a_file_or_connection_are_rebuilt_unless_escaped() {
        let mut ev = event();
        ev.domain = Domain::Network;
        ev.network = Some(ringwatch_core::event::NetworkInfo {
            protocol: "tcp".into(),
            src_port: Some(40000),
            dst_ip: Some("10.0.0.1".into()),
            dst_port: Some(443),
            bytes_out: Some(7),
            ..Default::default()
        });
        let json = serde_json::to_string(&ev).expect("json");
        let parts = JsonParts::cut(&json, &ev).expect("cut");
        assert_eq!((parts.facts, parts.tail), (None, ",\"bytes_out\":7}"));
        assert_eq!(rebuilt(&json, &parts, &ev), json);

        ev.domain = Domain::File;
        ev.network = None;
        ev.file = Some(ringwatch_core::event::FileInfo { path: "/tmp/\"x\"".into(), ..Default::default() });
        let json = serde_json::to_string(&ev).expect("json");
        let parts = JsonParts::cut(&json, &ev).expect("cut");
        assert!(parts.facts.is_some() && parts.tail.is_empty(), "an escaped path is kept verbatim");
        assert_eq!(rebuilt(&json, &parts, &ev), json);
        ev.file = Some(ringwatch_core::event::FileInfo {
            path: "/etc/passwd".into(),
            mode: Some(0o644),
            ..Default::default()
        });
        let json = serde_json::to_string(&ev).expect("json");
        let parts = JsonParts::cut(&json, &ev).expect("cut");
        assert_eq!((parts.facts, parts.tail), (None, ",\"mode\":420}"));
        assert_eq!(rebuilt(&json, &parts, &ev), json);
    }

    #[test]
    fn a_process_string_that_looks_like_json_does_not_move_the_cut() {
        let mut ev = event();
        ev.process.cmdline = vec!["sh".into(), "-c".into(), "echo '\"process\":{\"pid\":1}}]'".into()];
        ev.process.start_time = ringwatch_core::Timestamp(1_700_000_000_000_000_001);
        let json = serde_json::to_string(&ev).expect("json");
        let parts = JsonParts::cut(&json, &ev).expect("cut");
        assert_eq!(parts.process, serde_json::to_string(&ev.process).expect("process"));
        assert_eq!(start_time_in(parts.process), Some(ev.process.start_time.to_rfc3339().as_str()));
        assert_eq!(rebuilt(&json, &parts, &ev), json);
    }

    #[test]
    fn strings_end_at_the_first_unescaped_quote() {
        assert_eq!(value_len(r#"{"a":"x\"}y","b":[1,{"c":"\\"}]}tail"#), Some(32));
        assert_eq!(value_len(r#"["\\\"]",2]x"#), Some(11));
        assert_eq!(value_len(r#"{"open":"#), None);
        assert_eq!(value_len("1,"), None);
    }

    #[test]
    fn decimals_match_exactly() {
        assert_eq!(strip_decimal("1007,x", 1007), Some(",x"));
        assert_eq!(strip_decimal("0,x", 0), Some(",x"));
        assert_eq!(strip_decimal("10070,x", 1007).map(|r| r.starts_with(',')), Some(false));
        assert_eq!(strip_decimal("17,x", 1007), None);
    }
}
