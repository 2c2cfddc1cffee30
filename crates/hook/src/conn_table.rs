//! The TCP connections the network hooks saw open (a successful `connect`, `accept` or `accept4` while the agent
//! wanted network reports), so that their `close` can be reported with bytes and duration while every other
//! `close` of the process costs one atomic load.
//!
//! Fixed size, lock-free, never allocates: two static arrays of [`SLOTS`] atomics indexed by descriptor number.
//! `OPENED[fd]` holds the monotonic time of the connect/accept with the direction and the address family in its
//! two low bits (0: not tracked); `COOKIE[fd]` the socket's kernel cookie (`SO_COOKIE`; 0 when the kernel gives
//! none), which tells the socket that was opened from another one that later got the same number. Descriptors at
//! or above [`SLOTS`] are not tracked (their close is not reported). The arrays are 1 MiB of zero-filled `.bss`;
//! only the pages of descriptor numbers in use are ever touched.
//!
//! **Stale entries.** A tracked descriptor closed through a path the hook does not see (`close_range`,
//! `closefrom`, `dup2`/`dup3` over it, `fclose` of an `fdopen`ed socket, a raw `syscall(SYS_close)`) leaves its
//! entry behind. That is harmless: the next hooked close of that number finds the cookie (or, without one, the
//! protocol and family) no longer matching and clears the entry without a report; a new connect or accept on the
//! number overwrites it.

use core::ffi::c_int;
use core::sync::atomic::{AtomicU64, Ordering};

/// Descriptors below this number are tracked.
pub(crate) const SLOTS: usize = 65_536;

const INBOUND: u64 = 1;
const V6: u64 = 2;

static OPENED: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
static COOKIE: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

/// A tracked connection taken out of the table by its close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Opened {
    /// `CLOCK_MONOTONIC` nanoseconds at the connect or accept (to 4 ns).
    pub(crate) start_ns: u64,
    /// Accepted (true) or connected (false).
    pub(crate) inbound: bool,
    /// An `AF_INET6` socket.
    pub(crate) v6: bool,
    /// `SO_COOKIE` at the connect or accept; 0 when unknown.
    pub(crate) cookie: u64,
}

fn index(fd: c_int) -> Option<usize> {
    usize::try_from(fd).ok().filter(|i| *i < SLOTS)
}

/// `CLOCK_MONOTONIC` in nanoseconds (the vDSO: no system call).
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// The socket's kernel cookie, 0 when it has none (not a socket, a kernel before 4.12). Changes errno on failure.
pub(crate) fn socket_cookie(fd: c_int) -> u64 {
    let mut v: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: `v` and `len` describe a writable 8-byte option buffer.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, SO_COOKIE, (&raw mut v).cast(), &raw mut len) };
    if rc == 0 && usize::try_from(len).ok() == Some(size_of::<u64>()) { v } else { 0 }
}

/// `SO_COOKIE` (asm-generic value; the same on x86_64 and aarch64).
const SO_COOKIE: c_int = 57;

/// Remembers `fd` as a connection opened now. Changes errno (the cookie's `getsockopt`); the caller restores it.
pub(crate) fn track(fd: c_int, inbound: bool, v6: bool) {
    let Some(i) = index(fd) else { return };
    let (Some(opened), Some(cookie)) = (OPENED.get(i), COOKIE.get(i)) else { return };
    let bits = if inbound { INBOUND } else { 0 } | if v6 { V6 } else { 0 };
    // Never 0 (untracked): the monotonic clock is far past 4 ns once anything runs.
    let word = (now_ns() & !3).max(4) | bits;
    cookie.store(socket_cookie(fd), Ordering::Relaxed);
    opened.store(word, Ordering::Release);
}

/// Takes `fd` out of the table: `None` (one atomic load) when it was not tracked.
pub(crate) fn take(fd: c_int) -> Option<Opened> {
    let opened = OPENED.get(index(fd)?)?;
    if opened.load(Ordering::Relaxed) == 0 {
        return None;
    }
    // Two threads closing the same number at once: only one gets the entry.
    let word = opened.swap(0, Ordering::Acquire);
    if word == 0 {
        return None;
    }
    let cookie = COOKIE.get(index(fd)?).map_or(0, |c| c.load(Ordering::Relaxed));
    Some(Opened { start_ns: word & !3, inbound: word & INBOUND != 0, v6: word & V6 != 0, cookie })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_taken_once_and_out_of_range_numbers_are_ignored() {
        let before = now_ns();
        track(60_000, true, true);
        track(-1, false, false);
        track(SLOTS as c_int, false, false);
        let o = take(60_000).unwrap();
        assert!(o.inbound && o.v6 && o.start_ns >= before & !3);
        assert_eq!(o.cookie, 0, "descriptor 60000 is no socket in the test process");
        assert_eq!(take(60_000), None, "taken once");
        assert_eq!(take(-1), None);
        assert_eq!(take(SLOTS as c_int), None);
        assert_eq!(take(60_001), None);
    }

    #[test]
    fn a_socket_has_a_cookie() {
        // SAFETY: plain socket/close syscalls on a descriptor this test owns.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            assert_ne!(socket_cookie(fd), 0);
            libc::close(fd);
        }
    }
}
