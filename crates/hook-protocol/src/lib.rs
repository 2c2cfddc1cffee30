//! Wire format between `libringwatch_hook.so` (the LD_PRELOAD hook inside monitored processes) and the agent.
//!
//! The hook runs inside arbitrary programs, possibly in a child between `fork`/`vfork` and `exec` of a threaded
//! process, where `malloc` may deadlock. So the encode side writes into a caller-provided fixed buffer, never
//! allocates and never panics: fields that do not fit are cut and flagged. The decode side runs in the agent on
//! bytes that any local process can send, so it treats them as untrusted: every length is checked against what
//! was received before a field is touched, and a garbage, short, oversized or lying message is an `Err`, never a
//! panic. Integers are little-endian, written and read byte by byte (no casts of the buffer, no alignment needs).
//!
//! Messages travel over a unix `SOCK_SEQPACKET` socket, so message boundaries are kept by the kernel and a message
//! is exactly one `recv`. An exec request uses a connection of its own (one request, one verdict). File calls use
//! one long-lived connection per process, a *session*, opened with a [`Hello`] that the agent answers with a
//! [`Config`]; on it flow one-way file reports and, when the agent asks for them, file requests each answered with
//! a verdict (see the `control` and `file` modules' docs for their layouts).
//!
//! # Layout
//!
//! Every message starts with a 16-byte [`Header`]:
//!
//! ```text
//! off size
//!   0    4  magic  "RWHK"
//!   4    2  version (1)
//!   6    2  kind   (MessageKind)
//!   8    4  len    total message length, header included
//!  12    4  seq    request number chosen by the hook; the reply echoes it
//! ```
//!
//! Message kinds are grouped by domain so other domains can add theirs without renumbering: `0x00xx` control
//! ([`MessageKind::VERDICT`], [`MessageKind::HELLO`], [`MessageKind::CONFIG`]), `0x01xx` process
//! ([`MessageKind::EXEC`]), `0x02xx` file ([`MessageKind::FILE_REQUEST`], [`MessageKind::FILE_REPORT`]), `0x03xx`
//! network ([`MessageKind::NET_REQUEST`], [`MessageKind::NET_REPORT`], [`MessageKind::NET_DNS`],
//! [`MessageKind::NET_VERDICT`]; see the `net` module's docs). A receiver that does not know a kind gets
//! [`Message::Unknown`] and answers allow.
//!
//! An exec request ([`ExecRequest`]) has a fixed 36-byte part followed by four byte strings:
//!
//! ```text
//! off size (from the end of the header)
//!   0    2  op      (ExecOp)
//!   2    2  flags   (EXEC_FLAG_*)
//!   4    4  pid     as the process claims it (the agent trusts SO_PEERCRED instead)
//!   8    4  tid
//!  12    4  ppid
//!  16    4  fd      fexecve's descriptor, -1 otherwise (i32)
//!  20    4  argc    number of arguments in the caller's argv, even when argv below is cut
//!  24    2  path_len      the path or file name as the caller gave it (no NUL)
//!  26    2  resolved_len  the path the hook resolved (PATH search, /proc/self/fd), 0 = not known
//!  28    2  cwd_len       the working directory, 0 = not known
//!  30    2  reserved, 0
//!  32    4  argv_len      bytes of argv
//!  36    .  path, resolved, cwd, argv (each argument followed by a NUL), back to back, nothing after
//! ```
//!
//! A verdict reply ([`Verdict`]) is 8 bytes after the header: `verdict u16` (1 allow, 2 deny), 2 reserved bytes,
//! and `errno i32` the hook sets on deny (0 means the default, `EACCES`).
#![no_std]
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unreachable
)]
#![cfg_attr(test, allow(clippy::indexing_slicing, clippy::arithmetic_side_effects, clippy::unwrap_used, clippy::panic))]

#[cfg(test)]
extern crate std;

/// Declares a `#[repr(u16)]` wire enum: the enum, `ALL` (every variant, in wire order), `from_u16` (the variant
/// with a wire value) and `name` (the string the variant stands for: libc's function name, or the event
/// contract's word).
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        #[allow(missing_docs)] // the names say it
        pub enum $name {
            $($(#[$vmeta])* $variant = $value,)+
        }

        impl $name {
            /// Every variant, in wire order.
            pub const ALL: [$name; [$($value),+].len()] = [$($name::$variant),+];

            /// The variant with wire value `v`.
            pub fn from_u16(v: u16) -> Option<$name> {
                $name::ALL.iter().copied().find(|x| *x as u16 == v)
            }

            /// The name it stands for (libc's function name, or the event contract's word).
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }
    };
}

mod control;
mod file;
mod net;

pub use control::{
    CONFIG_FILE_REPORT, CONFIG_FILE_VERDICT, CONFIG_LEN, CONFIG_NET_REPORT, CONFIG_NET_VERDICT, Config,
    HELLO_FEATURE_FILE, HELLO_FEATURE_NET, HELLO_LEN, Hello, encode_config, encode_hello,
};
pub use file::{
    FILE_FIXED_LEN, FILE_FLAG_CREATES, FILE_FLAG_DIRECTORY, FILE_FLAG_EXCLUSIVE, FILE_FLAG_EXISTED,
    FILE_FLAG_NEW_PATH_TRUNCATED, FILE_FLAG_NEW_PATH_UNRESOLVED, FILE_FLAG_PATH_TRUNCATED, FILE_FLAG_PATH_UNRESOLVED,
    FILE_FLAG_TMPFILE, FILE_FLAG_TRUNCATES, FILE_FLAG_WRITES, FILE_MAX_LEN, FileActivity, FileEncoder, FileFixed,
    FileMessage, FileOp, PathFill,
};
pub use net::{
    ANSWER_LEN, DNS_FIXED_LEN, DNS_FLAG_ANSWERS_TRUNCATED, DNS_FLAG_QUERY_TRUNCATED, DNS_MAX_LEN, DnsFixed, DnsMessage,
    DnsOp, MAX_ANSWERS, MAX_QUERY, NET_CLOSE_LEN, NET_CLOSE_TAIL_LEN, NET_FIXED_LEN, NET_FLAG_IN_PROGRESS,
    NET_FLAG_INBOUND, NET_LEN, NET_VERDICT_LEN, NetClose, NetFixed, NetMessage, NetOp, NetVerdict, PROTO_TCP,
    PROTO_UDP, PROXY_HEADER_LEN, PROXY_MAGIC, PROXY_VERSION, decode_proxy_header, encode_dns, encode_net_report,
    encode_net_request, encode_net_verdict, encode_proxy_header,
};

use core::fmt;

/// The first four bytes of every message.
pub const MAGIC: [u8; 4] = *b"RWHK";
/// The protocol version this crate writes and reads.
pub const VERSION: u16 = 1;
/// Size of [`Header`] on the wire.
pub const HEADER_LEN: usize = 16;
/// Largest message either side sends or accepts. The hook's stack buffer is this big, so keep it modest.
pub const MAX_MESSAGE: usize = 16 * 1024;
/// Size of the fixed part of an exec request (after the header).
pub const EXEC_FIXED_LEN: usize = 36;
/// Size of a verdict message, header included.
pub const VERDICT_LEN: usize = HEADER_LEN + 8;
/// Longest path (as given, resolved, or cwd) carried; longer ones are cut and flagged. Linux's PATH_MAX.
pub const MAX_PATH: usize = 4096;

/// Where the agent listens unless [`SOCKET_ENV`] says otherwise.
pub const DEFAULT_SOCKET_PATH: &str = "/run/ringwatch/hook.sock";
/// Environment variable that overrides [`DEFAULT_SOCKET_PATH`] for the hook.
pub const SOCKET_ENV: &str = "RINGWATCH_HOOK_SOCKET";
/// Environment variable with the hook's send/receive timeout in milliseconds.
pub const TIMEOUT_ENV: &str = "RINGWATCH_HOOK_TIMEOUT_MS";
/// The hook's default send/receive timeout: how long a process waits for a verdict before going ahead.
pub const DEFAULT_TIMEOUT_MS: u32 = 100;
/// Largest timeout the hook accepts from [`TIMEOUT_ENV`].
pub const MAX_TIMEOUT_MS: u32 = 10_000;

/// Exec flag: `argv` was cut to fit the message; `argc` still counts every argument.
pub const EXEC_FLAG_ARGV_TRUNCATED: u16 = 1 << 0;
/// Exec flag: a path field (as given, resolved or cwd) was cut.
pub const EXEC_FLAG_PATH_TRUNCATED: u16 = 1 << 1;
/// Exec flag: the caller's environment has `LD_PRELOAD` but the environment passed to the new image does not, so
/// the new image will run without the hook (unless the hook is installed system-wide).
pub const EXEC_FLAG_DROPS_PRELOAD: u16 = 1 << 2;
/// Exec flag: the hook searched `PATH` for a bare name itself (exec*p, posix_spawnp); `resolved` is its result,
/// empty when nothing matched (the real call then fails the same way).
pub const EXEC_FLAG_RESOLVED_FROM_PATH: u16 = 1 << 3;
const EXEC_FLAGS_KNOWN: u16 =
    EXEC_FLAG_ARGV_TRUNCATED | EXEC_FLAG_PATH_TRUNCATED | EXEC_FLAG_DROPS_PRELOAD | EXEC_FLAG_RESOLVED_FROM_PATH;

/// The kind of a message. A `u16` newtype rather than an enum so that an unknown kind from a newer hook is
/// representable and can be answered instead of rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageKind(pub u16);

impl MessageKind {
    /// Agent -> hook: allow or deny ([`Verdict`]).
    pub const VERDICT: MessageKind = MessageKind(0x0001);
    /// Hook -> agent: first message of a long-lived session ([`Hello`]); answered with [`MessageKind::CONFIG`].
    pub const HELLO: MessageKind = MessageKind(0x0002);
    /// Agent -> hook: what the hook should send on its session ([`Config`]).
    pub const CONFIG: MessageKind = MessageKind(0x0003);
    /// Hook -> agent: a process is about to exec ([`ExecRequest`]).
    pub const EXEC: MessageKind = MessageKind(0x0101);
    /// Hook -> agent: a file call is about to happen; the hook waits for a verdict ([`FileMessage`]).
    pub const FILE_REQUEST: MessageKind = MessageKind(0x0201);
    /// Hook -> agent: a file call happened, with its result; one-way ([`FileMessage`]).
    pub const FILE_REPORT: MessageKind = MessageKind(0x0202);
    /// First kind reserved for the file domain (open, unlink, rename): `0x0200..=0x02ff`.
    pub const FILE_FIRST: MessageKind = MessageKind(0x0200);
    /// First kind reserved for the network domain (connect): `0x0300..=0x03ff`.
    pub const NETWORK_FIRST: MessageKind = MessageKind(0x0300);
    /// Hook -> agent: a connect/sendto/sendmsg is about to happen; the hook waits for a
    /// [`MessageKind::NET_VERDICT`] ([`NetMessage`]).
    pub const NET_REQUEST: MessageKind = MessageKind(0x0301);
    /// Hook -> agent: a connect/sendto/sendmsg happened, with its result; one-way ([`NetMessage`]).
    pub const NET_REPORT: MessageKind = MessageKind(0x0302);
    /// Hook -> agent: a name lookup returned; one-way ([`DnsMessage`]).
    pub const NET_DNS: MessageKind = MessageKind(0x0303);
    /// Agent -> hook: allow, deny or redirect a network request ([`NetVerdict`]).
    pub const NET_VERDICT: MessageKind = MessageKind(0x0304);
}

wire_enum! {
    /// Which libc entry point the process called.
    pub enum ExecOp {
        Execve = 1 => "execve",
        Execv = 2 => "execv",
        Execvp = 3 => "execvp",
        Execvpe = 4 => "execvpe",
        Execl = 5 => "execl",
        Execlp = 6 => "execlp",
        Execle = 7 => "execle",
        Fexecve = 8 => "fexecve",
        PosixSpawn = 9 => "posix_spawn",
        PosixSpawnp = 10 => "posix_spawnp",
    }
}

impl ExecOp {
    /// True for the variants that search `PATH` for a bare file name.
    pub fn searches_path(self) -> bool {
        matches!(self, ExecOp::Execvp | ExecOp::Execvpe | ExecOp::Execlp | ExecOp::PosixSpawnp)
    }

    /// True for posix_spawn*: the exec happens in a child that does not exist yet when the hook asks.
    pub fn spawns(self) -> bool {
        matches!(self, ExecOp::PosixSpawn | ExecOp::PosixSpawnp)
    }
}

/// The common header of every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Protocol version of the sender.
    pub version: u16,
    /// What follows.
    pub kind: MessageKind,
    /// Total length, header included.
    pub len: u32,
    /// Request number; a reply carries its request's.
    pub seq: u32,
}

/// Why bytes are not a valid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the header or the kind's fixed part needs.
    Short {
        /// Bytes needed.
        need: usize,
        /// Bytes there.
        have: usize,
    },
    /// More than [`MAX_MESSAGE`] bytes.
    Oversized(usize),
    /// The magic bytes are wrong: not a ringwatch hook message.
    BadMagic,
    /// A version this decoder does not speak.
    UnsupportedVersion(u16),
    /// The header's length disagrees with the bytes received.
    LengthMismatch {
        /// What the header claims.
        claimed: u32,
        /// What was received.
        actual: usize,
    },
    /// A field's length runs past the message or the sum of fields disagrees with the total.
    FieldOverrun(&'static str),
    /// A field holds a value outside its domain (unknown op, unknown flag, NUL inside a path, ...).
    BadField(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short { need, have } => write!(f, "message too short: need {need} bytes, have {have}"),
            DecodeError::Oversized(n) => write!(f, "message of {n} bytes exceeds the {MAX_MESSAGE}-byte limit"),
            DecodeError::BadMagic => f.write_str("bad magic: not a ringwatch hook message"),
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            DecodeError::LengthMismatch { claimed, actual } => {
                write!(f, "header claims {claimed} bytes but {actual} were received")
            }
            DecodeError::FieldOverrun(field) => write!(f, "field {field} runs past the message"),
            DecodeError::BadField(field) => write!(f, "field {field} has an invalid value"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a message could not be encoded (the buffer is smaller than the fixed parts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferTooSmall;

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("buffer too small for the message's fixed part")
    }
}

impl core::error::Error for BufferTooSmall {}

/// A decoded exec request. Byte strings borrow from the received buffer; nothing is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecRequest<'a> {
    /// The libc function called.
    pub op: ExecOp,
    /// `EXEC_FLAG_*` bits.
    pub flags: u16,
    /// pid as the process claims it. Untrusted: the agent uses SO_PEERCRED.
    pub pid: u32,
    /// Calling thread as the process claims it.
    pub tid: u32,
    /// Parent pid as the process claims it.
    pub ppid: u32,
    /// fexecve's file descriptor; -1 for the other ops.
    pub fd: i32,
    /// Number of arguments the caller passed (argv may hold fewer when cut).
    pub argc: u32,
    /// The path or bare file name as given to the call.
    pub path: &'a [u8],
    /// The path the hook resolved, if any (PATH search for exec*p, `/proc/self/fd/N` for fexecve).
    pub resolved: Option<&'a [u8]>,
    /// The caller's working directory, if the hook sent it.
    pub cwd: Option<&'a [u8]>,
    /// Arguments, each followed by a NUL.
    pub argv: &'a [u8],
}

impl<'a> ExecRequest<'a> {
    /// True when argv was cut to fit.
    pub fn argv_truncated(&self) -> bool {
        self.flags & EXEC_FLAG_ARGV_TRUNCATED != 0
    }

    /// True when the new image gets an environment without the `LD_PRELOAD` the caller had.
    pub fn drops_preload(&self) -> bool {
        self.flags & EXEC_FLAG_DROPS_PRELOAD != 0
    }

    /// The arguments, `argv[0]` first.
    pub fn args(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let argv = self.argv.strip_suffix(&[0]).unwrap_or(self.argv);
        let empty = argv.is_empty();
        argv.split(|b| *b == 0).filter(move |_| !empty)
    }
}

/// The agent's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead with the real call.
    Allow,
    /// Refuse: the call fails with `errno` (0 = `EACCES`) without reaching the kernel.
    Deny {
        /// errno the hook reports; 0 means EACCES.
        errno: i32,
    },
}

/// A decoded message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// An exec request.
    Exec(ExecRequest<'a>),
    /// A verdict.
    Verdict(Verdict),
    /// A hook opening a session.
    Hello(Hello),
    /// The agent's answer to a hello.
    Config(Config),
    /// A file request or report.
    File(FileMessage<'a>),
    /// A connect/send request or report.
    Net(NetMessage),
    /// A name lookup report.
    Dns(DnsMessage<'a>),
    /// The agent's answer to a network request.
    NetVerdict(NetVerdict),
    /// A kind this decoder does not know (from a newer hook); the header was valid.
    Unknown(MessageKind),
}

// ---------------------------------------------------------------------------------------------------------------
// Encoding: into a fixed buffer, no allocation, no panic.

/// A cursor over a fixed output buffer. Every write is bounds-checked and fails instead of panicking.
pub(crate) struct Out<'b> {
    pub(crate) buf: &'b mut [u8],
    pub(crate) pos: usize,
}

impl<'b> Out<'b> {
    pub(crate) fn put(&mut self, bytes: &[u8]) -> Result<(), BufferTooSmall> {
        let end = self.pos.checked_add(bytes.len()).ok_or(BufferTooSmall)?;
        let dst = self.buf.get_mut(self.pos..end).ok_or(BufferTooSmall)?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    pub(crate) fn room(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
}

pub(crate) fn put_at(buf: &mut [u8], at: usize, bytes: &[u8]) -> Result<(), BufferTooSmall> {
    let end = at.checked_add(bytes.len()).ok_or(BufferTooSmall)?;
    buf.get_mut(at..end).ok_or(BufferTooSmall)?.copy_from_slice(bytes);
    Ok(())
}

pub(crate) fn write_header(buf: &mut [u8], kind: MessageKind, len: usize, seq: u32) -> Result<(), BufferTooSmall> {
    let len = u32::try_from(len).map_err(|_| BufferTooSmall)?;
    put_at(buf, 0, &MAGIC)?;
    put_at(buf, 4, &VERSION.to_le_bytes())?;
    put_at(buf, 6, &kind.0.to_le_bytes())?;
    put_at(buf, 8, &len.to_le_bytes())?;
    put_at(buf, 12, &seq.to_le_bytes())
}

/// The fixed facts of an exec request, known before the variable fields are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecFixed {
    /// The libc function called.
    pub op: ExecOp,
    /// The caller's pid.
    pub pid: u32,
    /// The calling thread.
    pub tid: u32,
    /// The caller's parent.
    pub ppid: u32,
    /// fexecve's descriptor, -1 otherwise.
    pub fd: i32,
    /// Extra `EXEC_FLAG_*` bits (the encoder adds the truncation flags itself).
    pub flags: u16,
}

/// Writes an exec request into a fixed buffer, in wire order: [`ExecEncoder::new`] with the fixed part and the
/// path as given, then optionally [`ExecEncoder::resolved_with`] and [`ExecEncoder::cwd_with`] (which let the
/// caller produce those paths straight into the message, so it needs no second buffer), one
/// [`ExecEncoder::push_arg`] per argument, and [`ExecEncoder::finish`] for the length to send.
///
/// Nothing allocates and nothing panics; what does not fit is cut and flagged, so a request always goes out. A
/// path field filled out of order is left empty.
pub struct ExecEncoder<'b> {
    out: Out<'b>,
    seq: u32,
    flags: u16,
    argc: u32,
    /// Lengths of path, resolved, cwd.
    lens: [u16; 3],
    /// The next path field that may be written: 1 resolved, 2 cwd, 3 none (arguments started).
    next: usize,
    argv_start: usize,
}

/// Offset (after the header) of the length of path field `i` (0 path, 1 resolved, 2 cwd).
const PATH_LEN_OFFSETS: [usize; 3] = [24, 26, 28];

impl<'b> ExecEncoder<'b> {
    /// Starts a request in `buf`: writes the fixed part and `path` (the name as the caller passed it, cut to
    /// [`MAX_PATH`]). A [`MAX_MESSAGE`]-byte buffer holds any request; a smaller one cuts arguments sooner.
    pub fn new(buf: &'b mut [u8], seq: u32, fixed: ExecFixed, path: &[u8]) -> Result<Self, BufferTooSmall> {
        let start = HEADER_LEN.checked_add(EXEC_FIXED_LEN).ok_or(BufferTooSmall)?;
        if buf.len() < start {
            return Err(BufferTooSmall);
        }
        put_at(buf, HEADER_LEN, &(fixed.op as u16).to_le_bytes())?;
        put_at(buf, HEADER_LEN + 4, &fixed.pid.to_le_bytes())?;
        put_at(buf, HEADER_LEN + 8, &fixed.tid.to_le_bytes())?;
        put_at(buf, HEADER_LEN + 12, &fixed.ppid.to_le_bytes())?;
        put_at(buf, HEADER_LEN + 16, &fixed.fd.to_le_bytes())?;
        put_at(buf, HEADER_LEN + 30, &0u16.to_le_bytes())?;
        let mut enc = ExecEncoder {
            out: Out { buf, pos: start },
            seq,
            flags: fixed.flags & EXEC_FLAGS_KNOWN,
            argc: 0,
            lens: [0; 3],
            next: 0,
            argv_start: start,
        };
        enc.copy_field(0, path);
        Ok(enc)
    }

    /// Lets `f` write the resolved path into the message: it gets at most [`MAX_PATH`] bytes and returns how many
    /// it used (0 = not known). Bytes from the first NUL on are dropped.
    pub fn resolved_with(&mut self, f: impl FnOnce(&mut [u8]) -> usize) {
        self.fill(1, f);
    }

    /// Like [`ExecEncoder::resolved_with`], for the working directory.
    pub fn cwd_with(&mut self, f: impl FnOnce(&mut [u8]) -> usize) {
        self.fill(2, f);
    }

    /// Copies the resolved path in (cut and flagged when longer than [`MAX_PATH`] or the room left).
    pub fn resolved(&mut self, path: &[u8]) {
        self.copy_field(1, path);
    }

    /// Copies the working directory in (cut and flagged when longer than [`MAX_PATH`] or the room left).
    pub fn cwd(&mut self, cwd: &[u8]) {
        self.copy_field(2, cwd);
    }

    /// Flags the request as carrying a cut path (for a `*_with` producer that had to cut).
    pub fn mark_path_truncated(&mut self) {
        self.flags |= EXEC_FLAG_PATH_TRUNCATED;
    }

    fn copy_field(&mut self, field: usize, src: &[u8]) {
        if self.fill(field, |dst| copy_cut(src, dst)) < src.len() {
            self.mark_path_truncated();
        }
    }

    /// Writes path field `field` with `f`; returns the bytes kept.
    fn fill(&mut self, field: usize, f: impl FnOnce(&mut [u8]) -> usize) -> usize {
        if field < self.next {
            return 0;
        }
        self.next = field.saturating_add(1);
        let cap = MAX_PATH.min(self.out.room());
        let end = self.out.pos.saturating_add(cap);
        let Some(dst) = self.out.buf.get_mut(self.out.pos..end) else { return 0 };
        let used = f(dst);
        let used = match dst.get(..used.min(cap)) {
            Some(written) => written.iter().position(|b| *b == 0).unwrap_or(written.len()),
            None => 0,
        };
        let (Ok(len), Some(slot)) = (u16::try_from(used), self.lens.get_mut(field)) else { return 0 };
        *slot = len;
        self.out.pos = self.out.pos.saturating_add(used);
        self.argv_start = self.out.pos;
        used
    }

    /// Bytes left for arguments (each also needs one byte for its NUL).
    pub fn room(&self) -> usize {
        self.out.room()
    }

    /// Appends one argument (without its NUL; it must not contain NUL). Once one does not fit, its start is kept
    /// when there is room, the request is flagged truncated, and later arguments are only counted.
    pub fn push_arg(&mut self, arg: &[u8]) {
        self.next = 3;
        self.argc = self.argc.saturating_add(1);
        if self.flags & EXEC_FLAG_ARGV_TRUNCATED != 0 {
            return;
        }
        let room = self.out.room();
        let take = cut(arg, room.saturating_sub(1));
        if take.len() < arg.len() {
            self.flags |= EXEC_FLAG_ARGV_TRUNCATED;
            if take.is_empty() {
                return;
            }
        }
        // Both fit: `take` is at most room - 1 bytes.
        if self.out.put(take).and_then(|()| self.out.put(&[0])).is_err() {
            self.flags |= EXEC_FLAG_ARGV_TRUNCATED;
        }
    }

    /// Counts arguments the caller had but the encoder never saw (e.g. the hook stopped walking argv).
    pub fn add_uncounted_args(&mut self, n: u32) {
        self.argc = self.argc.saturating_add(n);
        if n > 0 {
            self.flags |= EXEC_FLAG_ARGV_TRUNCATED;
        }
    }

    /// Completes the header and fixed part; returns the message length to send.
    pub fn finish(self) -> Result<usize, BufferTooSmall> {
        let ExecEncoder { out, seq, flags, argc, lens, argv_start, .. } = self;
        let len = out.pos;
        let argv_len = u32::try_from(len.saturating_sub(argv_start)).map_err(|_| BufferTooSmall)?;
        let buf = out.buf;
        for (offset, field_len) in PATH_LEN_OFFSETS.iter().zip(lens) {
            put_at(buf, HEADER_LEN.saturating_add(*offset), &field_len.to_le_bytes())?;
        }
        put_at(buf, HEADER_LEN + 2, &flags.to_le_bytes())?;
        put_at(buf, HEADER_LEN + 20, &argc.to_le_bytes())?;
        put_at(buf, HEADER_LEN + 32, &argv_len.to_le_bytes())?;
        write_header(buf, MessageKind::EXEC, len, seq)?;
        Ok(len)
    }
}

/// Copies as much of `src` into `dst` as fits; returns the bytes copied.
pub(crate) fn copy_cut(src: &[u8], dst: &mut [u8]) -> usize {
    let src = cut(src, dst.len());
    if let Some(d) = dst.get_mut(..src.len()) {
        d.copy_from_slice(src);
    }
    src.len()
}

/// The longest prefix of `bytes` of at most `max` bytes.
pub(crate) fn cut(bytes: &[u8], max: usize) -> &[u8] {
    bytes.get(..max).unwrap_or(bytes)
}

/// Writes a verdict reply for request `seq` into `buf`; returns its length ([`VERDICT_LEN`]).
pub fn encode_verdict(buf: &mut [u8], seq: u32, verdict: Verdict) -> Result<usize, BufferTooSmall> {
    if buf.len() < VERDICT_LEN {
        return Err(BufferTooSmall);
    }
    let (code, errno): (u16, i32) = match verdict {
        Verdict::Allow => (1, 0),
        Verdict::Deny { errno } => (2, errno),
    };
    write_header(buf, MessageKind::VERDICT, VERDICT_LEN, seq)?;
    put_at(buf, HEADER_LEN, &code.to_le_bytes())?;
    put_at(buf, HEADER_LEN + 2, &0u16.to_le_bytes())?;
    put_at(buf, HEADER_LEN + 4, &errno.to_le_bytes())?;
    Ok(VERDICT_LEN)
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding: untrusted bytes, every access checked.

/// A cursor over received bytes; every read is bounds-checked.
pub(crate) struct In<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> In<'a> {
    /// A cursor over a message body that must hold at least its fixed part of `fixed` bytes.
    pub(crate) fn at_least(body: &'a [u8], fixed: usize) -> Result<In<'a>, DecodeError> {
        if body.len() < fixed {
            return Err(DecodeError::Short {
                need: HEADER_LEN.saturating_add(fixed),
                have: HEADER_LEN.saturating_add(body.len()),
            });
        }
        Ok(In { bytes: body, pos: 0 })
    }

    /// The next `u16` as flags, refused when a bit outside `known` is set.
    pub(crate) fn flags(&mut self, known: u16) -> Result<u16, DecodeError> {
        let flags = self.u16("flags")?;
        if flags & !known != 0 {
            return Err(DecodeError::BadField("flags"));
        }
        Ok(flags)
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::FieldOverrun(field))?;
        let s = self.bytes.get(self.pos..end).ok_or(DecodeError::FieldOverrun(field))?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, field)?;
        s.try_into().map_err(|_| DecodeError::FieldOverrun(field))
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_le_bytes)
    }

    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.array(field).map(i32::from_le_bytes)
    }
}

/// Decodes and validates the header of `bytes`, the whole received message.
pub fn decode_header(bytes: &[u8]) -> Result<Header, DecodeError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(DecodeError::Oversized(bytes.len()));
    }
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Short { need: HEADER_LEN, have: bytes.len() });
    }
    let mut r = In { bytes, pos: 0 };
    if r.array::<4>("magic")? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = r.u16("version")?;
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let kind = MessageKind(r.u16("kind")?);
    let len = r.u32("len")?;
    let seq = r.u32("seq")?;
    if usize::try_from(len).ok() != Some(bytes.len()) {
        return Err(DecodeError::LengthMismatch { claimed: len, actual: bytes.len() });
    }
    Ok(Header { version, kind, len, seq })
}

/// Decodes one whole received message.
pub fn decode(bytes: &[u8]) -> Result<(Header, Message<'_>), DecodeError> {
    let header = decode_header(bytes)?;
    let body = bytes.get(HEADER_LEN..).ok_or(DecodeError::Short { need: HEADER_LEN, have: bytes.len() })?;
    let msg = match header.kind {
        MessageKind::EXEC => Message::Exec(decode_exec(body)?),
        MessageKind::VERDICT => Message::Verdict(decode_verdict(body)?),
        MessageKind::HELLO => Message::Hello(control::decode_hello(body)?),
        MessageKind::CONFIG => Message::Config(control::decode_config(body)?),
        MessageKind::FILE_REQUEST => Message::File(file::decode_file(body, true)?),
        MessageKind::FILE_REPORT => Message::File(file::decode_file(body, false)?),
        MessageKind::NET_REQUEST => Message::Net(net::decode_net(body, true)?),
        MessageKind::NET_REPORT => Message::Net(net::decode_net(body, false)?),
        MessageKind::NET_DNS => Message::Dns(net::decode_dns(body)?),
        MessageKind::NET_VERDICT => Message::NetVerdict(net::decode_net_verdict(body)?),
        other => Message::Unknown(other),
    };
    Ok((header, msg))
}

fn decode_exec(body: &[u8]) -> Result<ExecRequest<'_>, DecodeError> {
    let mut r = In::at_least(body, EXEC_FIXED_LEN)?;
    let op = ExecOp::from_u16(r.u16("op")?).ok_or(DecodeError::BadField("op"))?;
    let flags = r.flags(EXEC_FLAGS_KNOWN)?;
    let pid = r.u32("pid")?;
    let tid = r.u32("tid")?;
    let ppid = r.u32("ppid")?;
    let fd = r.i32("fd")?;
    let argc = r.u32("argc")?;
    let path_len = usize::from(r.u16("path_len")?);
    let resolved_len = usize::from(r.u16("resolved_len")?);
    let cwd_len = usize::from(r.u16("cwd_len")?);
    if r.u16("reserved")? != 0 {
        return Err(DecodeError::BadField("reserved"));
    }
    let argv_len = usize::try_from(r.u32("argv_len")?).map_err(|_| DecodeError::FieldOverrun("argv"))?;
    for (len, name) in [(path_len, "path"), (resolved_len, "resolved"), (cwd_len, "cwd")] {
        if len > MAX_PATH {
            return Err(DecodeError::BadField(name));
        }
    }
    let path = r.take(path_len, "path")?;
    let resolved = r.take(resolved_len, "resolved")?;
    let cwd = r.take(cwd_len, "cwd")?;
    let argv = r.take(argv_len, "argv")?;
    if r.pos != body.len() {
        return Err(DecodeError::FieldOverrun("trailing bytes"));
    }
    for (field, name) in [(path, "path"), (resolved, "resolved"), (cwd, "cwd")] {
        if field.contains(&0) {
            return Err(DecodeError::BadField(name));
        }
    }
    if !argv.is_empty() && argv.last() != Some(&0) {
        return Err(DecodeError::BadField("argv"));
    }
    let nul_count = argv.iter().filter(|b| **b == 0).count();
    if u32::try_from(nul_count).map_or(true, |n| n > argc) {
        return Err(DecodeError::BadField("argc"));
    }
    Ok(ExecRequest {
        op,
        flags,
        pid,
        tid,
        ppid,
        fd,
        argc,
        path,
        resolved: non_empty(resolved),
        cwd: non_empty(cwd),
        argv,
    })
}

pub(crate) fn non_empty(s: &[u8]) -> Option<&[u8]> {
    if s.is_empty() { None } else { Some(s) }
}

fn decode_verdict(body: &[u8]) -> Result<Verdict, DecodeError> {
    let want = VERDICT_LEN.saturating_sub(HEADER_LEN);
    if body.len() != want {
        return Err(DecodeError::Short { need: VERDICT_LEN, have: HEADER_LEN.saturating_add(body.len()) });
    }
    let mut r = In { bytes: body, pos: 0 };
    let code = r.u16("verdict")?;
    let _reserved = r.u16("reserved")?;
    let errno = r.i32("errno")?;
    match code {
        1 => Ok(Verdict::Allow),
        2 => Ok(Verdict::Deny { errno }),
        _ => Err(DecodeError::BadField("verdict")),
    }
}

/// Deterministic pseudo-random numbers for the decoders' fuzz tests.
#[cfg(test)]
mod test_rng {
    /// xorshift64*: deterministic pseudo-random bytes without a dependency.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;
    use std::vec::Vec;

    fn fixed(op: ExecOp) -> ExecFixed {
        ExecFixed { op, pid: 100, tid: 101, ppid: 1, fd: -1, flags: 0 }
    }

    fn encode(op: ExecOp, path: &[u8], resolved: &[u8], cwd: &[u8], args: &[&[u8]], buf: &mut [u8]) -> usize {
        let mut enc = ExecEncoder::new(buf, 7, fixed(op), path).unwrap();
        enc.resolved(resolved);
        enc.cwd(cwd);
        for a in args {
            enc.push_arg(a);
        }
        enc.finish().unwrap()
    }

    #[test]
    fn exec_request_round_trips() {
        let mut buf = [0u8; MAX_MESSAGE];
        let n = encode(ExecOp::Execvp, b"echo", b"/bin/echo", b"/home/a", &[b"echo", b"hi there", b""], &mut buf);
        let (h, msg) = decode(&buf[..n]).unwrap();
        assert_eq!(h, Header { version: VERSION, kind: MessageKind::EXEC, len: n as u32, seq: 7 });
        let Message::Exec(req) = msg else { panic!("not exec: {msg:?}") };
        assert_eq!(req.op, ExecOp::Execvp);
        assert_eq!((req.pid, req.tid, req.ppid, req.fd, req.argc), (100, 101, 1, -1, 3));
        assert_eq!(req.path, b"echo");
        assert_eq!(req.resolved, Some(&b"/bin/echo"[..]));
        assert_eq!(req.cwd, Some(&b"/home/a"[..]));
        assert!(!req.argv_truncated());
        let args: Vec<&[u8]> = req.args().collect();
        assert_eq!(args, [&b"echo"[..], b"hi there", b""]);
    }

    #[test]
    fn empty_argv_and_unknown_paths_decode_as_none() {
        let mut buf = [0u8; MAX_MESSAGE];
        let n = encode(ExecOp::Fexecve, b"", b"", b"", &[], &mut buf);
        let (_, Message::Exec(req)) = decode(&buf[..n]).unwrap() else { panic!("not exec") };
        assert_eq!(req.args().count(), 0);
        assert_eq!((req.resolved, req.cwd, req.argc), (None, None, 0));
    }

    #[test]
    fn long_argv_is_cut_flagged_and_counted() {
        let mut buf = [0u8; MAX_MESSAGE];
        let big = [b'x'; 3000];
        let args: Vec<&[u8]> = (0..10).map(|_| &big[..]).collect();
        let n = encode(ExecOp::Execve, b"/bin/x", b"", b"/", &args, &mut buf);
        assert!(n <= MAX_MESSAGE);
        let (_, Message::Exec(req)) = decode(&buf[..n]).unwrap() else { panic!("not exec") };
        assert!(req.argv_truncated());
        assert_eq!(req.argc, 10);
        let got: Vec<&[u8]> = req.args().collect();
        assert!(got.len() < 10 && got.len() >= 5, "{} args kept", got.len());
        assert!(got[..got.len() - 1].iter().all(|a| a.len() == 3000));
    }

    #[test]
    fn long_paths_are_cut_to_max_path() {
        let mut buf = [0u8; MAX_MESSAGE];
        let long = [b'p'; MAX_PATH + 10];
        let n = encode(ExecOp::Execve, &long, &long, &long, &[b"a"], &mut buf);
        let (_, Message::Exec(req)) = decode(&buf[..n]).unwrap() else { panic!("not exec") };
        assert_eq!(req.path.len(), MAX_PATH);
        assert_ne!(req.flags & EXEC_FLAG_PATH_TRUNCATED, 0);
        assert_eq!(req.args().count(), 1);
    }

    #[test]
    fn tiny_buffers_fail_without_panicking() {
        for size in 0..HEADER_LEN + EXEC_FIXED_LEN {
            let mut buf = std::vec![0u8; size];
            assert!(ExecEncoder::new(&mut buf, 1, fixed(ExecOp::Execve), b"/x").is_err());
            assert!(size >= VERDICT_LEN || encode_verdict(&mut buf, 1, Verdict::Allow).is_err());
        }
        // Exactly the fixed part: paths and args are cut, the request still goes out.
        let mut buf = [0u8; HEADER_LEN + EXEC_FIXED_LEN];
        let mut enc = ExecEncoder::new(&mut buf, 1, fixed(ExecOp::Execve), b"/bin/echo").unwrap();
        enc.cwd(b"/");
        enc.push_arg(b"echo");
        let n = enc.finish().unwrap();
        let (_, Message::Exec(req)) = decode(&buf[..n]).unwrap() else { panic!("not exec") };
        assert!(req.argv_truncated());
        assert_ne!(req.flags & EXEC_FLAG_PATH_TRUNCATED, 0);
    }

    #[test]
    fn fields_filled_in_place_stop_at_nul_and_keep_order() {
        let mut buf = [0u8; 256];
        let mut enc = ExecEncoder::new(&mut buf, 3, fixed(ExecOp::Execvp), b"ls").unwrap();
        enc.resolved_with(|dst| {
            dst[..12].copy_from_slice(b"/bin/ls\0junk");
            12
        });
        enc.cwd_with(|dst| {
            dst.fill(b'c');
            dst.len() + 100 // a lying producer is clamped
        });
        enc.resolved(b"/too/late"); // out of order: ignored
        enc.push_arg(b"ls");
        let n = enc.finish().unwrap();
        let (_, Message::Exec(req)) = decode(&buf[..n]).unwrap() else { panic!("not exec") };
        assert_eq!(req.resolved, Some(&b"/bin/ls"[..]));
        assert_eq!(req.cwd.map(<[u8]>::len), Some(256 - HEADER_LEN - EXEC_FIXED_LEN - 2 - 7));
        assert_eq!(req.args().count(), 0, "no room left for argv[0]");
        assert!(req.argv_truncated());
    }

    #[test]
    fn verdicts_round_trip() {
        let mut buf = [0u8; VERDICT_LEN];
        for v in [Verdict::Allow, Verdict::Deny { errno: 0 }, Verdict::Deny { errno: 1 }] {
            let n = encode_verdict(&mut buf, 99, v).unwrap();
            assert_eq!(
                decode(&buf[..n]).unwrap(),
                (
                    Header { version: VERSION, kind: MessageKind::VERDICT, len: VERDICT_LEN as u32, seq: 99 },
                    Message::Verdict(v)
                )
            );
        }
    }

    #[test]
    fn lies_and_garbage_are_errors() {
        let mut buf = [0u8; MAX_MESSAGE];
        let n = encode(ExecOp::Execve, b"/bin/echo", b"", b"/", &[b"echo", b"a"], &mut buf);
        let good = buf[..n].to_vec();
        let mutate = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut m = good.clone();
            f(&mut m);
            decode(&m).map(|_| ())
        };
        assert_eq!(mutate(&|m| m[0] = b'X'), Err(DecodeError::BadMagic));
        assert_eq!(mutate(&|m| m[4] = 9), Err(DecodeError::UnsupportedVersion(9)));
        assert!(matches!(mutate(&|m| m[8] = m[8].wrapping_add(1)), Err(DecodeError::LengthMismatch { .. })));
        assert!(matches!(mutate(&|m| m.push(0)), Err(DecodeError::LengthMismatch { .. })));
        // Claimed path length past the end, with the header length fixed up to match the bytes.
        assert!(matches!(mutate(&|m| m[HEADER_LEN + 24] = 0xff), Err(DecodeError::FieldOverrun(_))));
        assert_eq!(mutate(&|m| m[HEADER_LEN] = 77), Err(DecodeError::BadField("op")));
        assert_eq!(mutate(&|m| m[HEADER_LEN + 3] = 0x80), Err(DecodeError::BadField("flags")));
        assert_eq!(mutate(&|m| m[HEADER_LEN + 20] = 1), Err(DecodeError::BadField("argc")));
        assert_eq!(mutate(&|m| m[n - 1] = b'z'), Err(DecodeError::BadField("argv")));
        assert_eq!(mutate(&|m| m[HEADER_LEN + EXEC_FIXED_LEN] = 0), Err(DecodeError::BadField("path")));
        assert!(matches!(decode(&good[..n - 1]), Err(DecodeError::LengthMismatch { .. })));
        assert!(matches!(decode(&[0u8; MAX_MESSAGE + 1]), Err(DecodeError::Oversized(_))));
        assert!(matches!(decode(&[]), Err(DecodeError::Short { .. })));
    }

    #[test]
    fn unknown_kinds_are_reported_not_rejected() {
        let mut buf = [0u8; HEADER_LEN + 4];
        write_header(&mut buf, MessageKind(0x02ff), HEADER_LEN + 4, 5).unwrap();
        assert_eq!(decode(&buf).unwrap().1, Message::Unknown(MessageKind(0x02ff)));
    }

    #[test]
    fn fuzz_random_truncated_and_mutated_bytes_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut buf = [0u8; MAX_MESSAGE];
        let n = encode(ExecOp::PosixSpawnp, b"ls", b"/usr/bin/ls", b"/tmp", &[b"ls", b"-l", b"/"], &mut buf);
        let good = buf[..n].to_vec();
        let mut accepted = 0;
        for round in 0..50_000u32 {
            let mut m = match round % 4 {
                // pure noise of random length, sometimes with a valid magic/version to get past the first checks
                0 | 1 => {
                    let len = (rng.next() % 600) as usize;
                    let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    if round % 4 == 1 && len >= HEADER_LEN {
                        v[..4].copy_from_slice(&MAGIC);
                        v[4..6].copy_from_slice(&VERSION.to_le_bytes());
                        v[6..8].copy_from_slice(&MessageKind::EXEC.0.to_le_bytes());
                        v[8..12].copy_from_slice(&(len as u32).to_le_bytes());
                    }
                    v
                }
                // a valid message cut short
                2 => good[..(rng.next() as usize) % good.len()].to_vec(),
                // a valid message with a few bytes flipped
                _ => {
                    let mut v = good.clone();
                    for _ in 0..1 + rng.next() % 4 {
                        let i = (rng.next() as usize) % v.len();
                        v[i] = rng.next() as u8;
                    }
                    v
                }
            };
            if let Ok((h, msg)) = decode(&m) {
                accepted += 1;
                assert_eq!(h.len as usize, m.len());
                if let Message::Exec(req) = msg {
                    assert!(req.args().count() <= req.argc as usize);
                }
            }
            m.clear();
        }
        assert!(accepted < 50_000, "garbage must mostly be rejected");
    }
}
