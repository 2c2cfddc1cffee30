//! The process's long-lived connection to the agent for file calls (a *session*), and what the agent wants on it.
//!
//! File calls are far more frequent than execs, so they do not pay for a connection each. The first hooked file
//! call of a process connects, sends a `HELLO` and waits (bounded by the hook timeout) for the agent's `CONFIG`:
//! - nothing about files (no file backend runs): the socket is closed and the process asks again in 10 s;
//! - one-way reports: every later call costs one non-blocking `send` after it ([`report`]);
//! - verdicts (a policy rule could deny a file call): every later call sends a request before it and waits for
//!   the answer ([`ask`]), on the session when no other thread is using it for a request, else on a connection
//!   of its own (as exec requests do), so replies never cross between threads.
//!
//! No agent (or no answer) costs one failed `connect` (or one timeout), then nothing until a retry 1 s later,
//! doubling up to 64 s while it stays away. A send that fails because the agent went away marks the session
//! dead; the next call reconnects (so an agent restarted with another policy is picked up).
//!
//! State lives in atomics, never behind a lock, and nothing allocates. The state word holds the pid that set it:
//! a child after `fork` (or `vfork`) sees its parent's pid there and opens its own session, since the peer
//! credentials the agent trusts were recorded for the parent at `connect`. The descriptor is CLOEXEC, moved to a
//! high number (at or above [`HIGH_FD`], when the limit allows) so it does not take the low numbers programs
//! expect, and it is checked before every use (`fstat`: same socket inode): a program that closed it and reused
//! the number for a file or socket of its own never receives our bytes. A replacement connection is put in place
//! with `dup3` onto the same number, so a thread still sending on the old one sends to a socket of ours.

use core::ffi::c_int;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};

use ringwatch_hook_protocol::{
    CONFIG_LEN, Config, HELLO_FEATURE_FILE, HELLO_FEATURE_NET, HELLO_LEN, Hello, Message, VERDICT_LEN, Verdict, decode,
    decode_header, encode_hello,
};

use crate::report::{Agent, Fd, Outcome, errno, next_seq, now_ms, recv_within};

const NONE: u32 = 0;
const CONNECTING: u32 = 1;
const READY: u32 = 2;
const ABSENT: u32 = 3;

/// First retry after the agent was absent or did not answer, in ms; doubles up to [`MAX_BACKOFF_MS`].
const FIRST_BACKOFF_MS: u32 = 1_000;
const MAX_BACKOFF_MS: u32 = 64_000;
/// An agent that does not want file calls is asked again after this long.
const UNWANTED_RETRY_MS: u32 = 10_000;
/// How long a report waits for room in a full socket buffer before it is dropped (and counted).
const SEND_ROOM_WAIT_MS: c_int = 10;
/// The session descriptor is moved at or above this number when the descriptor limit allows.
pub(crate) const HIGH_FD: c_int = 900;

/// `pid << 32 | state`.
static STATE: AtomicU64 = AtomicU64::new(0);
static FD: AtomicI32 = AtomicI32::new(-1);
/// `st_ino` and `st_dev` of the session socket.
static INODE: AtomicU64 = AtomicU64::new(0);
static DEV: AtomicU64 = AtomicU64::new(0);
static CONFIG: AtomicU32 = AtomicU32::new(0);
static TIMEOUT_MS: AtomicU32 = AtomicU32::new(100);
static RETRY_AT_MS: AtomicU64 = AtomicU64::new(0);
static BACKOFF_MS: AtomicU32 = AtomicU32::new(0);
/// Reports not sent since the last one that was; carried by the next report.
static DROPPED: AtomicU32 = AtomicU32::new(0);
/// A thread is waiting for a verdict on the session.
static BUSY: AtomicBool = AtomicBool::new(false);
/// Counts sessions installed in this process, so per-process caches of verdicts (the network hooks' table of
/// destinations seen) start over when the agent (and so possibly the policy) changes.
static GENERATION: AtomicU32 = AtomicU32::new(0);

/// The number of the current session (changes with every new connection to the agent).
pub(crate) fn generation() -> u32 {
    GENERATION.load(Ordering::Relaxed)
}

/// A usable session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Session {
    fd: c_int,
    config: Config,
    timeout_ms: u32,
}

impl Session {
    /// True when file calls wait for a verdict rather than being reported afterwards.
    pub(crate) fn verdicts(&self) -> bool {
        self.config.file_verdicts()
    }

    /// True when connects and sends wait for a verdict rather than being reported afterwards.
    pub(crate) fn net_verdicts(&self) -> bool {
        self.config.net_verdicts()
    }
}

fn word(pid: u32, state: u32) -> u64 {
    (u64::from(pid) << 32) | u64::from(state)
}

/// The process's session when the agent wants the calls `wants` selects (`Config::wants_file`,
/// `Config::wants_net`); `None` when there is no agent, it wants none of them, or another thread is connecting
/// right now (that call is counted as dropped). Changes errno.
pub(crate) fn current(pid: u32, wants: fn(&Config) -> bool) -> Option<Session> {
    let s = STATE.load(Ordering::Acquire);
    let (owner, state) = ((s >> 32) as u32, (s & 0xffff_ffff) as u32);
    if owner == pid {
        match state {
            READY => {
                let fd = FD.load(Ordering::Acquire);
                if is_ours(fd) {
                    let config = Config { flags: CONFIG.load(Ordering::Acquire) };
                    return wants(&config).then_some(Session {
                        fd,
                        config,
                        timeout_ms: TIMEOUT_MS.load(Ordering::Relaxed),
                    });
                }
                // The program closed or replaced our descriptor: start over.
            }
            ABSENT if now_ms() < RETRY_AT_MS.load(Ordering::Relaxed) => return None,
            CONNECTING => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            _ => {}
        }
    }
    if STATE.compare_exchange(s, word(pid, CONNECTING), Ordering::AcqRel, Ordering::Acquire).is_err() {
        // Another thread moved the state on; this call goes unreported rather than waiting.
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    if owner != pid {
        // A new process (after fork): no thread of ours is waiting on the session.
        BUSY.store(false, Ordering::Relaxed);
        DROPPED.store(0, Ordering::Relaxed);
    }
    connect(pid).filter(|s| wants(&s.config))
}

/// Connects, says hello, installs the session. Called by the one thread that set `CONNECTING`.
fn connect(pid: u32) -> Option<Session> {
    let Some(agent) = Agent::connect() else {
        give_up(pid);
        return None;
    };
    let timeout_ms = agent.timeout_ms;
    let Some(config) = hello(&agent, pid) else {
        give_up(pid);
        return None;
    };
    if !config.wants_any() {
        // Nothing to send: do not hold a connection open for nothing. Ask again later.
        RETRY_AT_MS.store(now_ms().saturating_add(u64::from(UNWANTED_RETRY_MS)), Ordering::Relaxed);
        STATE.store(word(pid, ABSENT), Ordering::Release);
        return None;
    }
    let fd = install(agent.fd);
    let Some((ino, dev)) = socket_identity(fd) else {
        // SAFETY: `fd` is the descriptor install() just gave us; nobody else knows it yet.
        unsafe { libc::close(fd) };
        give_up(pid);
        return None;
    };
    INODE.store(ino, Ordering::Relaxed);
    DEV.store(dev, Ordering::Relaxed);
    FD.store(fd, Ordering::Relaxed);
    CONFIG.store(config.flags, Ordering::Relaxed);
    TIMEOUT_MS.store(timeout_ms, Ordering::Relaxed);
    BACKOFF_MS.store(0, Ordering::Relaxed);
    GENERATION.fetch_add(1, Ordering::Relaxed);
    STATE.store(word(pid, READY), Ordering::Release);
    Some(Session { fd, config, timeout_ms })
}

/// Records a failed attempt: absent until the back-off elapses (doubling each time).
fn give_up(pid: u32) {
    let backoff = match BACKOFF_MS.load(Ordering::Relaxed) {
        0 => FIRST_BACKOFF_MS,
        b => b.saturating_mul(2).min(MAX_BACKOFF_MS),
    };
    BACKOFF_MS.store(backoff, Ordering::Relaxed);
    RETRY_AT_MS.store(now_ms().saturating_add(u64::from(backoff)), Ordering::Relaxed);
    STATE.store(word(pid, ABSENT), Ordering::Release);
}

/// Sends the hello and waits for the config.
fn hello(agent: &Agent, pid: u32) -> Option<Config> {
    let seq = next_seq();
    let mut buf = [0u8; HELLO_LEN];
    let n = encode_hello(&mut buf, seq, Hello { pid, features: HELLO_FEATURE_FILE | HELLO_FEATURE_NET }).ok()?;
    let msg = buf.get(..n)?;
    // SAFETY: `msg` is a valid readable buffer of `msg.len()` bytes.
    let sent = unsafe { libc::send(agent.fd.0, msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL) };
    if usize::try_from(sent).ok() != Some(msg.len()) {
        return None;
    }
    let mut reply = [0u8; CONFIG_LEN + 16];
    let n = recv_within(agent.fd.0, &mut reply, agent.timeout_ms)?;
    match decode(reply.get(..n)?) {
        Ok((header, Message::Config(config))) if header.seq == seq => Some(config),
        _ => None,
    }
}

/// Puts the new connection where it will live: onto the previous session's number when that is still one of our
/// sockets (a reconnect, or the copy a forked child inherited), else at or above [`HIGH_FD`]. Returns the number.
fn install(new: Fd) -> c_int {
    let old = FD.load(Ordering::Acquire);
    if old >= 0 && is_ours(old) {
        // SAFETY: `old` is our own session socket (checked just above) and `new.0` a socket we own; dup3 replaces
        // `old` atomically, so a concurrent sender sends on either the old or the new socket, both ours.
        if unsafe { libc::dup3(new.0, old, libc::O_CLOEXEC) } == old {
            drop(new);
            return old;
        }
    }
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own; it fails (EINVAL) when HIGH_FD is above the limit.
    let high = unsafe { libc::fcntl(new.0, libc::F_DUPFD_CLOEXEC, HIGH_FD) };
    if high >= 0 {
        drop(new);
        return high;
    }
    new.into_raw()
}

/// (st_ino, st_dev) of `fd` when it is a socket.
fn socket_identity(fd: c_int) -> Option<(u64, u64)> {
    // SAFETY: all-zero is a valid `stat`; fstat writes into it and fails cleanly on a bad descriptor.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &raw mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    Some((st.st_ino, st.st_dev))
}

/// True when `fd` is still the session socket we installed.
fn is_ours(fd: c_int) -> bool {
    fd >= 0 && socket_identity(fd).is_some_and(|id| id == (INODE.load(Ordering::Relaxed), DEV.load(Ordering::Relaxed)))
}

/// Marks the session dead after a failed send (the agent went away), so the next call reconnects.
fn broken(fd: c_int) {
    let s = STATE.load(Ordering::Acquire);
    if s & 0xffff_ffff == u64::from(READY) && FD.load(Ordering::Relaxed) == fd {
        let _ = STATE.compare_exchange(s, (s & !0xffff_ffff) | u64::from(NONE), Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// Reports not sent so far, reset to 0: the caller puts the number in its report and gives it back with
/// [`undo_take_dropped`] if that report cannot be sent either.
pub(crate) fn take_dropped() -> u32 {
    DROPPED.swap(0, Ordering::Relaxed)
}

/// Gives back what [`take_dropped`] took, plus one for the report that failed.
pub(crate) fn undo_take_dropped(taken: u32) {
    DROPPED.fetch_add(taken.saturating_add(1), Ordering::Relaxed);
}

/// Sends `msg` without waiting for an answer. A full socket buffer gets up to [`SEND_ROOM_WAIT_MS`] to drain
/// (the agent reads in batches); then the report is dropped. Returns false when it was not sent.
pub(crate) fn report(session: &Session, msg: &[u8]) -> bool {
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
    for attempt in 0..2 {
        // SAFETY: `msg` is a valid readable buffer of `msg.len()` bytes; `session.fd` was checked to be our socket.
        let sent = unsafe { libc::send(session.fd, msg.as_ptr().cast(), msg.len(), flags) };
        if usize::try_from(sent).ok() == Some(msg.len()) {
            return true;
        }
        match errno() {
            libc::EAGAIN if attempt == 0 => {
                let mut pfd = libc::pollfd { fd: session.fd, events: libc::POLLOUT, revents: 0 };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&raw mut pfd, 1, SEND_ROOM_WAIT_MS) };
            }
            libc::EAGAIN | libc::EINTR | libc::ENOBUFS => return false,
            _ => {
                broken(session.fd);
                return false;
            }
        }
    }
    false
}

/// Sends request `msg` (number `seq`) and waits for its verdict; allow on any failure or timeout.
pub(crate) fn ask(session: &Session, msg: &[u8], seq: u32) -> Outcome {
    let mut reply = [0u8; VERDICT_LEN + 16];
    let Some(n) = exchange(session, msg, seq, &mut reply) else { return Outcome::Allow };
    match reply.get(..n).map(decode) {
        Some(Ok((_, Message::Verdict(Verdict::Deny { errno })))) => {
            Outcome::Deny(if (1..4096).contains(&errno) { errno } else { libc::EACCES })
        }
        _ => Outcome::Allow,
    }
}

/// Sends request `msg` (number `seq`) and waits for the answer with the same number, which it leaves in `reply`;
/// returns its length, or `None` on any failure or timeout. On the session when no other thread waits there,
/// else on a one-shot connection of its own.
pub(crate) fn exchange(session: &Session, msg: &[u8], seq: u32, reply: &mut [u8]) -> Option<usize> {
    if BUSY.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        // Another thread waits for its own answer on the session: use a connection of our own.
        return Agent::connect()?.exchange(msg, seq, reply);
    }
    let answer = exchange_on_session(session, msg, seq, reply);
    BUSY.store(false, Ordering::Release);
    answer
}

fn exchange_on_session(session: &Session, msg: &[u8], seq: u32, reply: &mut [u8]) -> Option<usize> {
    if !report(session, msg) {
        return None;
    }
    let deadline = now_ms().saturating_add(u64::from(session.timeout_ms));
    loop {
        let left = deadline.saturating_sub(now_ms());
        if left == 0 {
            return None;
        }
        let n = recv_within(session.fd, reply, u32::try_from(left).unwrap_or(u32::MAX))?;
        match reply.get(..n).map(decode_header) {
            Some(Ok(header)) if header.seq == seq => return Some(n),
            // A late answer to an earlier request that timed out: skip it.
            _ => {}
        }
    }
}
