//! Line assembly for keystroke input, shared by every keystroke backend (eBPF tty reads, the pty recorder, X11).
//!
//! Backends see input one read (or one key press) at a time; an analyst wants lines. A [`LineAssembler`] holds the
//! input of one session (one terminal, one X11 display) and turns it into [`Line`]s:
//!
//! - **Enter ends a line** (`\r` or `\n`; a `\n` right after a `\r` belongs to the same Enter). `^C` also ends the
//!   line, since a shell discards what was typed.
//! - **Backspace edits**: it removes the last printable character still in the line; with nothing left to remove it
//!   is written as `<BS>`. Every key is still counted in [`Line::keys`].
//! - **Control keys are rendered printable** as documented on `KeystrokeInfo::text`: `<TAB>`, `<ESC>`, `<BS>`,
//!   `^A`..`^Z`, `^@`, and cursor keys from terminal escape sequences as `<UP>`, `<DOWN>`, `<LEFT>`, `<RIGHT>`,
//!   `<HOME>`, `<END>`, `<DEL>`, `<INS>`, `<PGUP>`, `<PGDN>`, `<F1>`.. (other sequences as `<ESC>[...`). Terminal
//!   input is decoded as UTF-8; a byte that is not valid UTF-8 is written as `<xNN>`.
//! - **Idle flush**: partial input (no Enter yet) becomes a line of its own once nothing was typed for the idle
//!   timeout ([`LineAssembler::flush_idle`]); the backend calls it from its poll loop.
//! - **Redacted input** ([`LineAssembler::push_redacted`]) is never mixed with readable text: pending text is
//!   flushed first; redacted reads then add up (a program may read a password one byte per read) until one ends
//!   the line, and become one line with only their total length. Readable input after a redacted read ends the
//!   secret too.
//! - A line longer than [`MAX_LINE_CHARS`] is cut into several lines (pasted blobs stay bounded).
//!
//! [`Sessions`] keeps one assembler per key (e.g. `(session id, tty)`) with the backend's metadata beside it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::time::Duration;

use ringwatch_core::KeystrokeInfo;
use ringwatch_core::event::Timestamp;

/// Longest line kept before it is emitted in pieces (characters of rendered text).
pub const MAX_LINE_CHARS: usize = 4096;

/// Escape sequences longer than this are not cursor keys; they are written out as they came.
const MAX_ESCAPE_LEN: usize = 16;

/// One key, for backends that decode keys themselves (X11). Terminal backends use [`LineAssembler::push_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A printable character (as typed, after shift/layout).
    Char(char),
    /// Return / Enter: ends the line.
    Enter,
    /// BackSpace: removes the last character of the line.
    Backspace,
    /// Tab.
    Tab,
    /// Escape.
    Escape,
    /// Ctrl + a letter or one of `@[\]^_`, written `^C`; `Ctrl('c')` (or `'C'`) ends the line.
    Ctrl(char),
    /// Any other named key, written `<NAME>` (e.g. `Named("UP")` -> `<UP>`).
    Named(&'static str),
}

/// Why a line was emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnd {
    /// Enter (or `^C`).
    Enter,
    /// Nothing typed for the idle timeout.
    Idle,
    /// The line reached [`MAX_LINE_CHARS`].
    Overflow,
    /// The backend flushed it (session ended, agent stopping, redacted input followed).
    Flush,
    /// A redacted read: `text` is empty, `keys` is its length.
    Redacted,
}

/// One assembled line of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The rendered text, without the Enter; empty when redacted.
    pub text: String,
    /// Keys (terminal bytes, or key presses) the line stands for, Enter and backspaces included.
    pub keys: u32,
    /// True when the input was read with echo off and only its length is known.
    pub redacted: bool,
    /// When its first key arrived.
    pub started: Timestamp,
    /// Why it was emitted.
    pub end: LineEnd,
}

impl Line {
    /// The `keystroke` part of an event for this line; the backend adds `tty`, `window`, `remote`.
    pub fn to_keystroke_info(&self) -> KeystrokeInfo {
        KeystrokeInfo { text: self.text.clone(), keys: Some(self.keys), redacted: self.redacted, ..Default::default() }
    }
}

/// Where the escape-sequence decoder is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    /// Saw ESC.
    Started,
    /// Saw ESC then `[` or `O`, collecting up to the final byte.
    Sequence(Vec<u8>),
}

/// The input of one session being assembled into lines. See the module docs for the rules.
#[derive(Debug, Default)]
pub struct LineAssembler {
    /// Rendered tokens of the current line: one character, or a control token such as `<TAB>`. Backspace pops only
    /// single-character tokens.
    tokens: Vec<Token>,
    /// Rendered length of `tokens`, in characters.
    chars: usize,
    /// Keys in the current line.
    keys: u32,
    /// Time of the first key of the current line.
    started: Option<Timestamp>,
    /// Time of the last key seen (for the idle flush).
    last: Timestamp,
    /// The previous byte was `\r` (so an immediately following `\n` is the same Enter).
    after_cr: bool,
    /// Incomplete UTF-8 character carried over from the previous read.
    utf8: Vec<u8>,
    /// Escape-sequence decoder state.
    escape: Escape,
    /// Keys of redacted reads not yet emitted (0: none pending). Never pending together with text.
    secret_keys: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    Control(String),
}

impl LineAssembler {
    /// An empty assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when no partial line is waiting.
    pub fn is_empty(&self) -> bool {
        self.keys == 0 && self.utf8.is_empty() && self.escape == Escape::None && self.secret_keys == 0
    }

    /// Feeds terminal input bytes (one read) that arrived at `at`; completed lines are appended to `out`.
    pub fn push_bytes(&mut self, bytes: &[u8], at: Timestamp, out: &mut Vec<Line>) {
        self.end_secret(out);
        for &b in bytes {
            self.touch(at);
            self.keys = self.keys.saturating_add(1);
            let cr_before = std::mem::take(&mut self.after_cr);
            if self.escape != Escape::None {
                self.escape_byte(b, out);
                continue;
            }
            if !self.utf8.is_empty() || b >= 0x80 {
                self.utf8_byte(b, out);
                continue;
            }
            match b {
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(LineEnd::Enter, out);
                }
                b'\n' if cr_before => {
                    // The `\n` of a `\r\n` pair: same Enter; its key belongs to no line.
                    self.keys = self.keys.saturating_sub(1);
                    if self.keys == 0 {
                        self.started = None;
                    }
                }
                b'\n' => self.end_line(LineEnd::Enter, out),
                0x1b => self.escape = Escape::Started,
                _ => self.apply(key_of_byte(b), out),
            }
        }
    }

    /// Feeds one decoded key (X11) pressed at `at`; a completed line is appended to `out`.
    pub fn push_key(&mut self, key: Key, at: Timestamp, out: &mut Vec<Line>) {
        self.end_secret(out);
        self.touch(at);
        self.keys = self.keys.saturating_add(1);
        self.after_cr = false;
        self.apply(key, out);
    }

    /// Records a redacted read of `keys` bytes at `at`; `line_end` says the read ended with the Enter (for a
    /// canonical-mode read: its last byte is the line delimiter). Pending text is emitted first (as
    /// [`LineEnd::Flush`]); redacted reads add up until one ends the line, then become one redacted line.
    pub fn push_redacted(&mut self, keys: u32, line_end: bool, at: Timestamp, out: &mut Vec<Line>) {
        if self.secret_keys == 0 {
            out.extend(self.flush());
            self.started = Some(at);
        }
        self.secret_keys = self.secret_keys.saturating_add(keys);
        self.last = at;
        if line_end {
            self.end_secret(out);
        }
    }

    /// Emits the pending redacted keys, if any, as one line.
    fn end_secret(&mut self, out: &mut Vec<Line>) {
        if self.secret_keys > 0 {
            let keys = std::mem::take(&mut self.secret_keys);
            let started = self.started.take().unwrap_or(self.last);
            out.push(Line { text: String::new(), keys, redacted: true, started, end: LineEnd::Redacted });
        }
    }

    /// Emits the partial line if its last key is at least `idle` before `now`.
    pub fn flush_idle(&mut self, now: Timestamp, idle: Duration) -> Option<Line> {
        let idle_ns = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
        if self.is_empty() || now.0.saturating_sub(self.last.0) < idle_ns {
            return None;
        }
        self.take_line(LineEnd::Idle)
    }

    /// Emits the partial line now (session over, agent stopping).
    pub fn flush(&mut self) -> Option<Line> {
        if self.is_empty() {
            return None;
        }
        self.take_line(LineEnd::Flush)
    }

    /// Time of the last key seen.
    pub fn last_input(&self) -> Timestamp {
        self.last
    }

    fn touch(&mut self, at: Timestamp) {
        self.started.get_or_insert(at);
        self.last = at;
    }

    fn apply(&mut self, key: Key, out: &mut Vec<Line>) {
        match key {
            Key::Enter => self.end_line(LineEnd::Enter, out),
            Key::Char(c) => self.push_token(Token::Char(c), out),
            Key::Backspace => match self.tokens.last() {
                Some(Token::Char(_)) => {
                    self.tokens.pop();
                    self.chars -= 1;
                }
                _ => self.push_token(Token::Control("<BS>".into()), out),
            },
            Key::Tab => self.push_token(Token::Control("<TAB>".into()), out),
            Key::Escape => self.push_token(Token::Control("<ESC>".into()), out),
            Key::Ctrl(c) => {
                let c = c.to_ascii_uppercase();
                self.push_token(Token::Control(format!("^{c}")), out);
                if c == 'C' {
                    self.end_line(LineEnd::Enter, out);
                }
            }
            Key::Named(name) => self.push_token(Token::Control(format!("<{name}>")), out),
        }
    }

    fn push_token(&mut self, token: Token, out: &mut Vec<Line>) {
        let len = match &token {
            Token::Char(_) => 1,
            Token::Control(s) => s.chars().count(),
        };
        self.tokens.push(token);
        self.chars += len;
        if self.chars >= MAX_LINE_CHARS {
            self.end_line(LineEnd::Overflow, out);
        }
    }

    fn utf8_byte(&mut self, b: u8, out: &mut Vec<Line>) {
        self.utf8.push(b);
        match std::str::from_utf8(&self.utf8) {
            Ok(s) => {
                let c = s.chars().next();
                self.utf8.clear();
                if let Some(c) = c {
                    self.push_token(Token::Char(c), out);
                }
            }
            Err(e) if e.error_len().is_none() && self.utf8.len() < 4 => {} // incomplete: wait for more
            Err(_) => {
                let bytes = std::mem::take(&mut self.utf8);
                for byte in bytes {
                    self.push_token(Token::Control(format!("<x{byte:02X}>")), out);
                }
            }
        }
    }

    fn escape_byte(&mut self, b: u8, out: &mut Vec<Line>) {
        match std::mem::take(&mut self.escape) {
            Escape::None => {}
            Escape::Started => match b {
                b'[' | b'O' => self.escape = Escape::Sequence(vec![b]),
                0x1b => {
                    self.push_token(Token::Control("<ESC>".into()), out);
                    self.escape = Escape::Started;
                }
                _ => {
                    // ESC + key (Alt+key, or a lone Escape followed by typing).
                    self.push_token(Token::Control("<ESC>".into()), out);
                    self.keys = self.keys.saturating_sub(1);
                    self.push_bytes_one(b, out);
                }
            },
            Escape::Sequence(mut seq) => {
                seq.push(b);
                let final_byte = seq.len() > 1 && (0x40..=0x7e).contains(&b);
                if final_byte {
                    let token = escape_token(&seq);
                    self.push_token(Token::Control(token), out);
                } else if seq.len() >= MAX_ESCAPE_LEN || b < 0x20 {
                    let token = format!("<ESC>{}", render_raw(&seq));
                    self.push_token(Token::Control(token), out);
                } else {
                    self.escape = Escape::Sequence(seq);
                }
            }
        }
    }

    /// Re-feeds one byte that ended an incomplete escape (its key was already counted).
    fn push_bytes_one(&mut self, b: u8, out: &mut Vec<Line>) {
        let at = self.last;
        self.push_bytes(&[b], at, out);
    }

    fn end_line(&mut self, end: LineEnd, out: &mut Vec<Line>) {
        if let Some(line) = self.take_line(end) {
            out.push(line);
        }
    }

    fn take_line(&mut self, end: LineEnd) -> Option<Line> {
        if self.secret_keys > 0 {
            let mut out = Vec::with_capacity(1);
            self.end_secret(&mut out);
            return out.pop();
        }
        // An escape or UTF-8 sequence cut off by a flush is written out as it came.
        match std::mem::take(&mut self.escape) {
            Escape::None => {}
            Escape::Started => self.tokens.push(Token::Control("<ESC>".into())),
            Escape::Sequence(seq) => self.tokens.push(Token::Control(format!("<ESC>{}", render_raw(&seq)))),
        }
        for byte in std::mem::take(&mut self.utf8) {
            self.tokens.push(Token::Control(format!("<x{byte:02X}>")));
        }
        let keys = std::mem::take(&mut self.keys);
        let started = self.started.take();
        let mut text = String::with_capacity(self.chars);
        for token in self.tokens.drain(..) {
            match token {
                Token::Char(c) => text.push(c),
                Token::Control(s) => text.push_str(&s),
            }
        }
        self.chars = 0;
        // A bare Enter on an empty line carries nothing worth an event.
        if keys == 0 || (text.is_empty() && end == LineEnd::Enter && keys <= 1) {
            return None;
        }
        Some(Line { text, keys, redacted: false, started: started.unwrap_or(self.last), end })
    }
}

/// The key a single ASCII byte (not `\r`, `\n`, ESC, or >= 0x80) stands for.
fn key_of_byte(b: u8) -> Key {
    match b {
        b'\t' => Key::Tab,
        0x08 | 0x7f => Key::Backspace,
        0x00 => Key::Ctrl('@'),
        0x01..=0x1a => Key::Ctrl(char::from(b'A' + b - 1)),
        0x1c..=0x1f => Key::Ctrl(char::from(b'\\' + b - 0x1c)),
        _ => Key::Char(char::from(b)),
    }
}

/// Names the common cursor and function keys; other sequences are written out (`<ESC>[1;5C`).
fn escape_token(seq: &[u8]) -> String {
    let name = match seq {
        b"[A" | b"OA" => "UP",
        b"[B" | b"OB" => "DOWN",
        b"[C" | b"OC" => "RIGHT",
        b"[D" | b"OD" => "LEFT",
        b"[H" | b"OH" | b"[1~" | b"[7~" => "HOME",
        b"[F" | b"OF" | b"[4~" | b"[8~" => "END",
        b"[2~" => "INS",
        b"[3~" => "DEL",
        b"[5~" => "PGUP",
        b"[6~" => "PGDN",
        b"OP" | b"[11~" => "F1",
        b"OQ" | b"[12~" => "F2",
        b"OR" | b"[13~" => "F3",
        b"OS" | b"[14~" => "F4",
        b"[200~" => "PASTE",
        b"[201~" => "/PASTE",
        _ => return format!("<ESC>{}", render_raw(seq)),
    };
    format!("<{name}>")
}

/// Printable rendering of escape-sequence bytes.
fn render_raw(seq: &[u8]) -> String {
    seq.iter()
        .map(|&b| if (0x20..0x7f).contains(&b) { char::from(b).to_string() } else { format!("<x{b:02X}>") })
        .collect()
}

/// One [`LineAssembler`] per session key, each with the backend's metadata (`M`: pid, tty, remote, ...) of the
/// latest input.
#[derive(Debug)]
pub struct Sessions<K, M> {
    by_key: HashMap<K, (LineAssembler, M)>,
}

impl<K: Hash + Eq + Clone, M> Default for Sessions<K, M> {
    fn default() -> Self {
        Sessions { by_key: HashMap::new() }
    }
}

impl<K: Hash + Eq + Clone, M> Sessions<K, M> {
    /// No sessions yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The assembler of `key` with its metadata, created with `meta()` on first use; the metadata is replaced by
    /// `meta()` too when it exists, so it always describes the latest input.
    pub fn entry(&mut self, key: K, meta: impl FnOnce() -> M) -> &mut (LineAssembler, M) {
        match self.by_key.entry(key) {
            Entry::Occupied(slot) => {
                let slot = slot.into_mut();
                slot.1 = meta();
                slot
            }
            Entry::Vacant(slot) => slot.insert((LineAssembler::new(), meta())),
        }
    }

    /// The assembler of `key`, if any.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut (LineAssembler, M)> {
        self.by_key.get_mut(key)
    }

    /// Emits every partial line idle for `idle`, and forgets sessions idle for `forget_after` with nothing pending.
    pub fn flush_idle(&mut self, now: Timestamp, idle: Duration, forget_after: Duration) -> Vec<(K, Line, &M)> {
        let forget_ns = u64::try_from(forget_after.as_nanos()).unwrap_or(u64::MAX);
        self.by_key.retain(|_, (asm, _)| !asm.is_empty() || now.0.saturating_sub(asm.last_input().0) < forget_ns);
        let mut out = Vec::new();
        for (key, (asm, meta)) in &mut self.by_key {
            if let Some(line) = asm.flush_idle(now, idle) {
                out.push((key.clone(), line, &*meta));
            }
        }
        out
    }

    /// Emits every partial line (agent stopping).
    pub fn flush_all(&mut self) -> Vec<(K, Line, &M)> {
        let mut out = Vec::new();
        for (key, (asm, meta)) in &mut self.by_key {
            if let Some(line) = asm.flush() {
                out.push((key.clone(), line, &*meta));
            }
        }
        out
    }

    /// How many sessions are tracked.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[&[u8]]) -> Vec<Line> {
        let mut asm = LineAssembler::new();
        let mut out = Vec::new();
        for (i, chunk) in input.iter().enumerate() {
            asm.push_bytes(chunk, Timestamp(i as u64 + 1), &mut out);
        }
        out.extend(asm.flush());
        out
    }

    fn texts(input: &[&[u8]]) -> Vec<String> {
        lines(input).into_iter().map(|l| l.text).collect()
    }

    #[test]
    fn enter_ends_a_line_byte_by_byte_or_canonical() {
        let per_key: Vec<&[u8]> = b"echo hi\r".chunks(1).collect();
        let out = lines(&per_key);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].text, "echo hi");
        assert_eq!((out[0].keys, out[0].end, out[0].started), (8, LineEnd::Enter, Timestamp(1)));
        assert_eq!(texts(&[b"ls -l\n", b"pwd\r\n"]), vec!["ls -l", "pwd"]);
        assert_eq!(lines(&[b"pwd\r\n"])[0].keys, 4);
    }

    #[test]
    fn backspace_edits_and_shows_when_nothing_is_left() {
        assert_eq!(texts(&[b"ecko", b"\x7f\x7f", b"ho x\x08\r"]), vec!["echo "]);
        let out = lines(&[b"a\x7f\x7f\r"]);
        assert_eq!((out[0].text.as_str(), out[0].keys), ("<BS>", 4));
    }

    #[test]
    fn control_keys_are_rendered_printable() {
        assert_eq!(texts(&[b"ls\t\x01x\x04\r"]), vec!["ls<TAB>^Ax^D"]);
        assert_eq!(texts(&[b"sleep 9\x03", b"y\r"]), vec!["sleep 9^C", "y"]);
        assert_eq!(texts(&[b"\x1b[A\x1b", b"[D", b"\x1bOH\x1b[3~\r"]), vec!["<UP><LEFT><HOME><DEL>"]);
        assert_eq!(texts(&[b"\x1bb", b"\x1b[1;5C\r"]), vec!["<ESC>b<ESC>[1;5C"]);
        // A lone ESC then typing, then an ESC left dangling at a flush.
        assert_eq!(texts(&[b"\x1b", b":wq\r", b"\x1b"]), vec!["<ESC>:wq", "<ESC>"]);
    }

    #[test]
    fn utf8_is_decoded_across_reads_and_bad_bytes_are_escaped() {
        let e_acute = "é".as_bytes();
        assert_eq!(texts(&[&e_acute[..1], &e_acute[1..], b"\r"]), vec!["é"]);
        assert_eq!(texts(&[b"\xff\r"]), vec!["<xFF>"]);
    }

    #[test]
    fn idle_partial_input_is_flushed_after_the_timeout_only() {
        let mut asm = LineAssembler::new();
        let mut out = Vec::new();
        asm.push_bytes(b"vim /etc/pas", Timestamp(1_000_000_000), &mut out);
        assert!(out.is_empty());
        let idle = Duration::from_secs(2);
        assert_eq!(asm.flush_idle(Timestamp(2_500_000_000), idle), None);
        let line = asm.flush_idle(Timestamp(3_000_000_000), idle).expect("idle for 2 s");
        assert_eq!((line.text.as_str(), line.end, line.keys), ("vim /etc/pas", LineEnd::Idle, 12));
        assert!(asm.is_empty());
        assert_eq!(asm.flush_idle(Timestamp(9_000_000_000), idle), None);
    }

    #[test]
    fn redacted_input_never_joins_readable_text() {
        let mut asm = LineAssembler::new();
        let mut out = Vec::new();
        asm.push_bytes(b"sud", Timestamp(1), &mut out);
        // A password read one byte per read (bash's `read -s`): one line, ended by the read holding the Enter.
        for _ in 0..8 {
            asm.push_redacted(1, false, Timestamp(2), &mut out);
        }
        asm.push_redacted(1, true, Timestamp(3), &mut out);
        asm.push_bytes(b"ok\r", Timestamp(3), &mut out);
        // Redacted input cut off by readable input, and one left pending at a flush.
        asm.push_redacted(4, false, Timestamp(4), &mut out);
        asm.push_bytes(b"x\r", Timestamp(5), &mut out);
        asm.push_redacted(2, false, Timestamp(6), &mut out);
        out.extend(asm.flush());
        let got: Vec<_> = out.iter().map(|l| (l.text.as_str(), l.keys, l.redacted, l.end)).collect();
        assert_eq!(
            got,
            vec![
                ("sud", 3, false, LineEnd::Flush),
                ("", 9, true, LineEnd::Redacted),
                ("ok", 3, false, LineEnd::Enter),
                ("", 4, true, LineEnd::Redacted),
                ("x", 2, false, LineEnd::Enter),
                ("", 2, true, LineEnd::Redacted),
            ]
        );
        assert_eq!(out[1].started, Timestamp(2));
        assert!(asm.is_empty());
        let info = out[1].to_keystroke_info();
        assert!(info.redacted && info.text.is_empty() && info.keys == Some(9));
    }

    #[test]
    fn bare_enter_makes_no_line_and_long_input_is_cut() {
        assert!(lines(&[b"\r", b"\n", b"\r\n"]).is_empty());
        let long = vec![b'x'; MAX_LINE_CHARS + 10];
        let out = lines(&[&long, b"\r"]);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].text.len(), out[0].end), (MAX_LINE_CHARS, LineEnd::Overflow));
        assert_eq!(out[1].text.len(), 10);
    }

    #[test]
    fn decoded_keys_from_x11_follow_the_same_rules() {
        let mut asm = LineAssembler::new();
        let mut out = Vec::new();
        for key in [Key::Char('l'), Key::Char('x'), Key::Backspace, Key::Char('s'), Key::Tab, Key::Named("UP")] {
            asm.push_key(key, Timestamp(5), &mut out);
        }
        asm.push_key(Key::Enter, Timestamp(6), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].text.as_str(), out[0].keys), ("ls<TAB><UP>", 7));
    }

    #[test]
    fn sessions_are_assembled_separately_and_forgotten_when_idle() {
        let mut sessions: Sessions<u32, &str> = Sessions::new();
        let mut out = Vec::new();
        sessions.entry(1, || "pts/1").0.push_bytes(b"one", Timestamp(1), &mut out);
        sessions.entry(2, || "pts/2").0.push_bytes(b"two\r", Timestamp(1), &mut out);
        assert_eq!(out.len(), 1);
        let flushed = sessions.flush_idle(Timestamp(10_000_000_000), Duration::from_secs(2), Duration::from_secs(5));
        assert_eq!(flushed.len(), 1);
        assert_eq!((flushed[0].0, flushed[0].1.text.as_str(), *flushed[0].2), (1, "one", "pts/1"));
        // Both idle longer than `forget_after` with nothing pending: forgotten on the next pass.
        assert!(
            sessions.flush_idle(Timestamp(10_000_000_001), Duration::from_secs(2), Duration::from_secs(5)).is_empty()
        );
        assert!(sessions.is_empty());
    }
}
