//! Asking the agent: one `SOCK_SEQPACKET` connection per request, one message each way, bounded in time.
//!
//! Every failure means "allow": no agent (`connect` fails at once with ENOENT or ECONNREFUSED: one failed
//! syscall), an agent whose accept queue is full (the socket is non-blocking, so `connect` fails at once with
//! EAGAIN instead of waiting), an agent that does not answer within the timeout (`poll` bounds the wait), a reply
//! that is not a valid verdict for this request. A present agent costs `socket`, `connect`, `send`, `poll`, `recv`
//! and `close`. The socket is CLOEXEC so it never leaks into the new image, and `send` uses MSG_NOSIGNAL so a
//! dead agent cannot kill the process with SIGPIPE.

use core::ffi::c_int;
use core::mem::size_of;
use core::sync::atomic::{AtomicU32, Ordering};

use ringwatch_hook_protocol::{DEFAULT_SOCKET_PATH, Message, SOCKET_ENV, VERDICT_LEN, Verdict, decode, decode_header};

use crate::env;

/// Request numbers: only need to differ between consecutive requests of one connection.
static SEQ: AtomicU32 = AtomicU32::new(1);

/// The next request number.
pub(crate) fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// What the hook does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Run the real call.
    Allow,
    /// Fail with this errno without running it.
    Deny(c_int),
}

/// A socket descriptor closed on drop.
pub(crate) struct Fd(pub(crate) c_int);

impl Fd {
    /// Gives up ownership: the descriptor stays open and is returned.
    pub(crate) fn into_raw(self) -> c_int {
        let fd = self.0;
        core::mem::forget(self);
        fd
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: `self.0` is a descriptor this module opened and nobody else closes.
        unsafe { libc::close(self.0) };
    }
}

/// A connection to the agent, made before the request is built so that an absent agent costs nothing more than
/// the failed `connect`.
pub(crate) struct Agent {
    pub(crate) fd: Fd,
    pub(crate) timeout_ms: u32,
}

impl Agent {
    /// Connects to the agent; `None` when there is none (or anything fails). Changes errno: the caller saves and
    /// restores it.
    pub(crate) fn connect() -> Option<Agent> {
        let addr = socket_address()?;
        let flags = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        // SAFETY: plain syscall wrapper with constant arguments.
        let fd = unsafe { libc::socket(libc::AF_UNIX, flags, 0) };
        if fd < 0 {
            return None;
        }
        let fd = Fd(fd);
        let addr_len = size_of::<libc::sockaddr_un>() as libc::socklen_t;
        // SAFETY: `addr` is a fully initialised sockaddr_un and `addr_len` its size.
        let rc = unsafe { libc::connect(fd.0, (&raw const addr).cast::<libc::sockaddr>(), addr_len) };
        (rc == 0).then(|| Agent { fd, timeout_ms: env::timeout_ms() })
    }

    /// Sends `msg` (request number `seq`) and waits for an answer with the same number, left in `reply`; its
    /// length, or `None` on any failure or timeout.
    pub(crate) fn exchange(&self, msg: &[u8], seq: u32, reply: &mut [u8]) -> Option<usize> {
        // SAFETY: `msg` is a valid readable buffer of `msg.len()` bytes for the duration of the call.
        let sent = unsafe { libc::send(self.fd.0, msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL) };
        if usize::try_from(sent).ok() != Some(msg.len()) {
            return None;
        }
        let n = recv_within(self.fd.0, reply, self.timeout_ms)?;
        match reply.get(..n).map(decode_header) {
            Some(Ok(header)) if header.seq == seq => Some(n),
            _ => None,
        }
    }

    /// Sends `msg` (request number `seq`) and returns the verdict; [`Outcome::Allow`] on any failure.
    pub(crate) fn ask(&self, msg: &[u8], seq: u32) -> Outcome {
        // The socket is fresh and a request is far below its send buffer, so a non-blocking send does not fail for
        // want of room; if it does, the agent is in trouble and the process goes ahead.
        // SAFETY: `msg` is a valid readable buffer of `msg.len()` bytes for the duration of the call.
        let sent = unsafe { libc::send(self.fd.0, msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL) };
        if usize::try_from(sent).ok() != Some(msg.len()) {
            return Outcome::Allow;
        }
        let mut reply = [0u8; VERDICT_LEN + 16];
        let Some(n) = recv_within(self.fd.0, &mut reply, self.timeout_ms) else { return Outcome::Allow };
        match reply.get(..n).map(decode) {
            Some(Ok((header, Message::Verdict(Verdict::Deny { errno })))) if header.seq == seq => {
                Outcome::Deny(if (1..4096).contains(&errno) { errno } else { libc::EACCES })
            }
            _ => Outcome::Allow,
        }
    }
}

/// The agent's address from `RINGWATCH_HOOK_SOCKET` or the default; `None` when the path does not fit.
fn socket_address() -> Option<libc::sockaddr_un> {
    // SAFETY: `current()` is the live environment; the value is copied out before anything can change it.
    let from_env = unsafe { env::lookup(env::current(), SOCKET_ENV.as_bytes()) };
    let path = match from_env {
        Some(v) if !v.is_empty() => v.to_bytes(),
        _ => DEFAULT_SOCKET_PATH.as_bytes(),
    };
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid (empty) value.
    let mut addr: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // Leave room for the terminating NUL.
    if path.len() >= addr.sun_path.len() {
        return None;
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(path) {
        *dst = *src as libc::c_char;
    }
    Some(addr)
}

/// Waits up to `timeout_ms` in total (signal interruptions included) for one message and receives it.
pub(crate) fn recv_within(fd: c_int, buf: &mut [u8], timeout_ms: u32) -> Option<usize> {
    let start = now_ms();
    loop {
        let spent = now_ms().saturating_sub(start);
        let left = u64::from(timeout_ms).checked_sub(spent).filter(|l| *l > 0)?;
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: `pfd` is one valid pollfd.
        let ready = unsafe { libc::poll(&raw mut pfd, 1, c_int::try_from(left).unwrap_or(c_int::MAX)) };
        if ready < 0 && errno() == libc::EINTR {
            continue;
        }
        if ready <= 0 {
            return None;
        }
        // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        return usize::try_from(n).ok().filter(|n| *n > 0);
    }
}

/// Monotonic milliseconds (clock_gettime is a vDSO call, no syscall).
pub(crate) fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let millis = u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000_000;
    secs.saturating_mul(1000).saturating_add(millis)
}

/// The calling thread's errno.
pub(crate) fn errno() -> c_int {
    // SAFETY: __errno_location always returns a valid pointer to the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's errno.
pub(crate) fn set_errno(value: c_int) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = value };
}

/// Restores errno to its value at creation when dropped, so the hook's own syscalls leave no trace in it.
pub(crate) struct SavedErrno(c_int);

impl SavedErrno {
    pub(crate) fn save() -> Self {
        SavedErrno(errno())
    }
}

impl Drop for SavedErrno {
    fn drop(&mut self) {
        set_errno(self.0);
    }
}
