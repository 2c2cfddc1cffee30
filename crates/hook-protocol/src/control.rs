//! Control messages (`0x00xx`) besides the verdict: the hook's [`Hello`] and the agent's [`Config`] answer.
//!
//! A hook that has file hooks opens one long-lived connection per process (a *session*) with a `HELLO`; the agent
//! answers `CONFIG`, saying which file calls it wants to hear about and how: not at all, one-way reports after
//! the call ([`CONFIG_FILE_REPORT`], cheap: one `send`), or a request before the call that waits for a verdict
//! ([`CONFIG_FILE_VERDICT`], only when a policy rule could deny a file call). The network hooks use the same
//! session with [`CONFIG_NET_REPORT`] / [`CONFIG_NET_VERDICT`]. Later messages on the session are
//! file reports and requests; the connection closes with the process (or at exec: it is CLOEXEC).
//!
//! ```text
//! HELLO  (after the header)            CONFIG (after the header)
//!   0  4  pid       as claimed           0  4  flags     CONFIG_*
//!   4  2  features  HELLO_FEATURE_*      4  4  reserved  0
//!   6  2  reserved  0
//! ```

use crate::{BufferTooSmall, DecodeError, HEADER_LEN, In, MessageKind, put_at, write_header};

/// Size of a hello message, header included.
pub const HELLO_LEN: usize = HEADER_LEN + 8;
/// Size of a config message, header included.
pub const CONFIG_LEN: usize = HEADER_LEN + 8;

/// Hello feature: the hook has the file-domain hooks.
pub const HELLO_FEATURE_FILE: u16 = 1 << 0;
/// Hello feature: the hook has the network-domain hooks (connect, sendto, sendmsg, name lookups).
pub const HELLO_FEATURE_NET: u16 = 1 << 1;
const HELLO_FEATURES_KNOWN: u16 = HELLO_FEATURE_FILE | HELLO_FEATURE_NET;

/// Config flag: send a one-way `FILE_REPORT` after every hooked file call (monitoring).
pub const CONFIG_FILE_REPORT: u32 = 1 << 0;
/// Config flag: send a `FILE_REQUEST` before every hooked file call and wait for the verdict (a policy rule may
/// deny). Takes precedence over [`CONFIG_FILE_REPORT`]: a call is never reported twice.
pub const CONFIG_FILE_VERDICT: u32 = 1 << 1;
/// Config flag: send a one-way `NET_REPORT` after each hooked connect (and first send to a new destination) and a
/// `NET_DNS` after each hooked lookup (network monitoring).
pub const CONFIG_NET_REPORT: u32 = 1 << 2;
/// Config flag: send a `NET_REQUEST` before each hooked connect (and first send to a new destination) and wait
/// for the `NET_VERDICT` (a rule may block or redirect); lookups are still reported one-way.
pub const CONFIG_NET_VERDICT: u32 = 1 << 3;
const CONFIG_FLAGS_KNOWN: u32 = CONFIG_FILE_REPORT | CONFIG_FILE_VERDICT | CONFIG_NET_REPORT | CONFIG_NET_VERDICT;

/// Hook -> agent, first message of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// pid as the process claims it (the agent uses SO_PEERCRED).
    pub pid: u32,
    /// `HELLO_FEATURE_*` bits.
    pub features: u16,
}

/// Agent -> hook, the answer to [`Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Config {
    /// `CONFIG_*` bits.
    pub flags: u32,
}

impl Config {
    /// True when the hook should send anything about file calls.
    pub fn wants_file(&self) -> bool {
        self.flags & (CONFIG_FILE_REPORT | CONFIG_FILE_VERDICT) != 0
    }

    /// True when file calls wait for a verdict.
    pub fn file_verdicts(&self) -> bool {
        self.flags & CONFIG_FILE_VERDICT != 0
    }

    /// True when the hook should send anything about network calls.
    pub fn wants_net(&self) -> bool {
        self.flags & (CONFIG_NET_REPORT | CONFIG_NET_VERDICT) != 0
    }

    /// True when connects and sends wait for a verdict.
    pub fn net_verdicts(&self) -> bool {
        self.flags & CONFIG_NET_VERDICT != 0
    }

    /// True when the hook should keep a session at all.
    pub fn wants_any(&self) -> bool {
        self.wants_file() || self.wants_net()
    }
}

/// Writes a hello into `buf`; returns its length ([`HELLO_LEN`]).
pub fn encode_hello(buf: &mut [u8], seq: u32, hello: Hello) -> Result<usize, BufferTooSmall> {
    if buf.len() < HELLO_LEN {
        return Err(BufferTooSmall);
    }
    write_header(buf, MessageKind::HELLO, HELLO_LEN, seq)?;
    put_at(buf, HEADER_LEN, &hello.pid.to_le_bytes())?;
    put_at(buf, HEADER_LEN + 4, &(hello.features & HELLO_FEATURES_KNOWN).to_le_bytes())?;
    put_at(buf, HEADER_LEN + 6, &0u16.to_le_bytes())?;
    Ok(HELLO_LEN)
}

/// Writes a config into `buf`; returns its length ([`CONFIG_LEN`]).
pub fn encode_config(buf: &mut [u8], seq: u32, config: Config) -> Result<usize, BufferTooSmall> {
    if buf.len() < CONFIG_LEN {
        return Err(BufferTooSmall);
    }
    write_header(buf, MessageKind::CONFIG, CONFIG_LEN, seq)?;
    put_at(buf, HEADER_LEN, &(config.flags & CONFIG_FLAGS_KNOWN).to_le_bytes())?;
    put_at(buf, HEADER_LEN + 4, &0u32.to_le_bytes())?;
    Ok(CONFIG_LEN)
}

fn exact_body(body: &[u8], total: usize) -> Result<(), DecodeError> {
    let want = total.saturating_sub(HEADER_LEN);
    if body.len() != want {
        return Err(DecodeError::Short { need: total, have: HEADER_LEN.saturating_add(body.len()) });
    }
    Ok(())
}

pub(crate) fn decode_hello(body: &[u8]) -> Result<Hello, DecodeError> {
    exact_body(body, HELLO_LEN)?;
    let mut r = In { bytes: body, pos: 0 };
    let pid = r.u32("pid")?;
    let features = r.u16("features")?;
    if features & !HELLO_FEATURES_KNOWN != 0 {
        return Err(DecodeError::BadField("features"));
    }
    if r.u16("reserved")? != 0 {
        return Err(DecodeError::BadField("reserved"));
    }
    Ok(Hello { pid, features })
}

pub(crate) fn decode_config(body: &[u8]) -> Result<Config, DecodeError> {
    exact_body(body, CONFIG_LEN)?;
    let mut r = In { bytes: body, pos: 0 };
    let flags = r.u32("flags")?;
    if flags & !CONFIG_FLAGS_KNOWN != 0 {
        return Err(DecodeError::BadField("flags"));
    }
    if r.u32("reserved")? != 0 {
        return Err(DecodeError::BadField("reserved"));
    }
    Ok(Config { flags })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Header, Message, VERSION, decode};

    #[test]
    fn hello_and_config_round_trip() {
        let mut buf = [0u8; 64];
        let n = encode_hello(&mut buf, 3, Hello { pid: 42, features: HELLO_FEATURE_FILE }).unwrap();
        assert_eq!(
            decode(&buf[..n]).unwrap(),
            (
                Header { version: VERSION, kind: MessageKind::HELLO, len: HELLO_LEN as u32, seq: 3 },
                Message::Hello(Hello { pid: 42, features: HELLO_FEATURE_FILE })
            )
        );
        for flags in [0, CONFIG_FILE_REPORT, CONFIG_FILE_VERDICT] {
            let n = encode_config(&mut buf, 4, Config { flags }).unwrap();
            let (h, msg) = decode(&buf[..n]).unwrap();
            assert_eq!((h.kind, h.seq, msg), (MessageKind::CONFIG, 4, Message::Config(Config { flags })));
        }
        assert!(Config { flags: CONFIG_FILE_VERDICT }.file_verdicts());
        assert!(!Config::default().wants_file());
    }

    #[test]
    fn unknown_bits_and_wrong_sizes_are_errors() {
        let mut buf = [0u8; 64];
        let n = encode_config(&mut buf, 1, Config { flags: CONFIG_FILE_REPORT }).unwrap();
        let mut bad = buf[..n].to_vec();
        bad[HEADER_LEN + 3] = 0x80;
        assert_eq!(decode(&bad), Err(DecodeError::BadField("flags")));
        let mut bad = buf[..n].to_vec();
        bad[HEADER_LEN + 5] = 1;
        assert_eq!(decode(&bad), Err(DecodeError::BadField("reserved")));
        let n = encode_hello(&mut buf, 1, Hello { pid: 1, features: 0 }).unwrap();
        let mut bad = buf[..n].to_vec();
        bad[HEADER_LEN + 4] = 0x40;
        assert_eq!(decode(&bad), Err(DecodeError::BadField("features")));
        let mut long = buf[..n].to_vec();
        long.push(0);
        long[8..12].copy_from_slice(&((n + 1) as u32).to_le_bytes());
        assert!(matches!(decode(&long), Err(DecodeError::Short { .. })));
        assert!(encode_hello(&mut [0u8; HELLO_LEN - 1], 1, Hello { pid: 1, features: 0 }).is_err());
        assert!(encode_config(&mut [0u8; CONFIG_LEN - 1], 1, Config::default()).is_err());
    }
}
