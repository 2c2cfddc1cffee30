//! The exported network functions: `connect`, `sendto`, `sendmsg`, `sendmmsg`, `accept`, `accept4`, `listen`,
//! `close`, `getaddrinfo`, `gethostbyname` and `gethostbyname2`. Each hands its call to `net` (check, report, redirect)
//! and runs the real libc function.
//!
//! Not hooked (and so not seen): `send`/`write` (no destination: the connect was seen), `bind`,
//! `shutdown`, `close_range`/`closefrom`/`dup2` over a socket and `fclose` of an `fdopen`ed one (the close of a
//! connection through those is not reported), `getaddrinfo_a`, `gethostbyname_r` and `res_query`. A real
//! function `dlsym` cannot find falls back to the raw system call (connect, sendto, sendmsg, sendmmsg, accept,
//! accept4, close) or fails the way the resolver fails.

use core::ffi::{c_char, c_int, c_uint, c_void};

use ringwatch_hook_protocol::{DnsOp, NetOp};

use crate::conn_table;
use crate::net::{self, SendCheck, addrinfo_answers, hostent_answers, lookup_begin, lookup_report};
use crate::real::{
    self, Accept4Fn, AcceptFn, CloseFn, ConnectFn, GetaddrinfoFn, Gethostbyname2Fn, GethostbynameFn, ListenFn,
    SendmmsgFn, SendmsgFn, SendtoFn, real_fn, sys_int, sys_size,
};
use crate::report::set_errno;

/// The real connect, or the raw system call.
///
/// # Safety
///
/// As for connect(2).
unsafe fn real_connect(fd: c_int, addr: *const libc::sockaddr, len: libc::socklen_t) -> c_int {
    match real_fn!(real::CONNECT, ConnectFn) {
        // SAFETY: the caller's arguments, passed on.
        Some(f) => unsafe { f(fd, addr, len) },
        None => {
            // SAFETY: connect(2)'s arguments to the raw system call.
            sys_int(unsafe { libc::syscall(libc::SYS_connect, fd, addr, len) })
        }
    }
}

/// Hooked `connect(2)`: reported (or asked about, and refused with `ECONNREFUSED` or redirected to the local
/// proxy) for IPv4/IPv6 TCP and UDP sockets.
///
/// # Safety
///
/// As for libc's `connect`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const libc::sockaddr, len: libc::socklen_t) -> c_int {
    // SAFETY: the caller's arguments satisfy connect's contract; `real` passes them (or the proxy's) on.
    unsafe { net::connect(fd, addr, len, |a, l| real_connect(fd, a, l)) }
}

/// Hooked `sendto(2)`: a send with a destination is reported (or asked about) once per socket and destination;
/// one without (a connected socket) goes straight through.
///
/// # Safety
///
/// As for libc's `sendto`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: libc::size_t,
    flags: c_int,
    addr: *const libc::sockaddr,
    addr_len: libc::socklen_t,
) -> libc::ssize_t {
    let real = || match real_fn!(real::SENDTO, SendtoFn) {
        // SAFETY: the caller's arguments, passed on.
        Some(f) => unsafe { f(fd, buf, len, flags, addr, addr_len) },
        None => {
            // SAFETY: sendto(2)'s arguments to the raw system call.
            sys_size(unsafe { libc::syscall(libc::SYS_sendto, fd, buf, len, flags, addr, addr_len) })
        }
    };
    if addr.is_null() {
        return real();
    }
    // SAFETY: the caller's address satisfies sendto's contract.
    let check = unsafe { net::send_check(NetOp::Sendto, fd, addr, addr_len, flags, len) };
    net::send_with(check, fd, real)
}

/// Hooked `sendmsg(2)`: like `sendto`, for a message with `msg_name`.
///
/// # Safety
///
/// As for libc's `sendmsg`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> libc::ssize_t {
    let real = || match real_fn!(real::SENDMSG, SendmsgFn) {
        // SAFETY: the caller's arguments, passed on.
        Some(f) => unsafe { f(fd, msg, flags) },
        None => {
            // SAFETY: sendmsg(2)'s arguments to the raw system call.
            sys_size(unsafe { libc::syscall(libc::SYS_sendmsg, fd, msg, flags) })
        }
    };
    // SAFETY: sendmsg's contract: `msg` is null or a valid msghdr.
    let Some(m) = (unsafe { msg.as_ref() }) else { return real() };
    if m.msg_name.is_null() {
        return real();
    }
    // SAFETY: as above; msg_name points to msg_namelen bytes and msg_iov to msg_iovlen iovecs.
    let check = unsafe {
        net::send_check(NetOp::Sendmsg, fd, m.msg_name.cast_const().cast(), m.msg_namelen, flags, net::msg_bytes(msg))
    };
    net::send_with(check, fd, real)
}

/// The most messages one `sendmmsg` sends (the kernel's `UIO_MAXIOV`; it caps `vlen` the same way).
const SENDMMSG_MAX: c_uint = 1024;

/// Hooked `sendmmsg(2)`: every message with a destination is checked like `sendmsg` (reported or asked about once
/// per socket and destination). The vector goes to the kernel in as few calls as the checks allow: a message
/// that must be reported is sent together with those before it, then reported, then the rest follow. A denied
/// message stops the batch there, as a failing message does in the kernel: the call returns how many were sent
/// before it, or fails with `EACCES` when it is the first.
///
/// # Safety
///
/// As for libc's `sendmmsg`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendmmsg(fd: c_int, msgvec: *mut libc::mmsghdr, vlen: c_uint, flags: c_int) -> c_int {
    let real = |vec: *mut libc::mmsghdr, n: c_uint| match real_fn!(real::SENDMMSG, SendmmsgFn) {
        // SAFETY: the caller's arguments, passed on (a sub-range of its vector).
        Some(f) => unsafe { f(fd, vec, n, flags) },
        None => {
            // SAFETY: sendmmsg(2)'s arguments to the raw system call.
            sys_int(unsafe { libc::syscall(libc::SYS_sendmmsg, fd, vec, n, flags) })
        }
    };
    if msgvec.is_null() || vlen == 0 {
        return real(msgvec, vlen);
    }
    let vlen = vlen.min(SENDMMSG_MAX);
    // SAFETY: sendmmsg's contract: `msgvec` points to `vlen` valid mmsghdrs (at least the capped number).
    let messages = unsafe { core::slice::from_raw_parts(msgvec.cast_const(), vlen as usize) };
    let mut batch = Batch { real: &real, vec: msgvec, sent: 0, next: 0, failed: false };
    for (i, m) in (0..vlen).zip(messages) {
        let h = &m.msg_hdr;
        // SAFETY: as above; msg_name points to msg_namelen bytes and msg_iov to msg_iovlen iovecs.
        let check = unsafe {
            net::send_check(
                NetOp::Sendmmsg,
                fd,
                h.msg_name.cast_const().cast(),
                h.msg_namelen,
                flags,
                net::msg_bytes(h),
            )
        };
        match check {
            SendCheck::Pass => {}
            SendCheck::Deny(e) => {
                // Send what came before the denied message, then stop.
                batch.send_until(i);
                if batch.sent == 0 && !batch.failed {
                    set_errno(e);
                }
                return batch.result();
            }
            check @ SendCheck::ReportAfter(..) => {
                // Send up to and including this message, then report it (or its failure).
                let all = batch.send_until(i.saturating_add(1));
                let failed = batch.failed;
                net::send_with(check, fd, || match (all, failed) {
                    (true, _) => 1,
                    (false, true) => -1,
                    (false, false) => {
                        // The kernel took fewer messages than asked (a full buffer): this one did not go.
                        set_errno(libc::EAGAIN);
                        -1
                    }
                });
                if !all {
                    return batch.result();
                }
            }
        }
    }
    batch.send_until(vlen);
    batch.result()
}

/// A caller's `sendmmsg` vector handed to the kernel in pieces.
struct Batch<'a, F: Fn(*mut libc::mmsghdr, c_uint) -> c_int> {
    real: &'a F,
    vec: *mut libc::mmsghdr,
    /// Messages the kernel took so far.
    sent: c_uint,
    /// The first message not handed to the kernel yet.
    next: c_uint,
    /// The last call failed (errno is its error).
    failed: bool,
}

impl<F: Fn(*mut libc::mmsghdr, c_uint) -> c_int> Batch<'_, F> {
    /// Hands messages `next..to` to the kernel; true when it took all of them.
    fn send_until(&mut self, to: c_uint) -> bool {
        let n = to.saturating_sub(self.next);
        if n == 0 {
            return true;
        }
        // SAFETY: `next < to <= vlen`: the pointer stays inside the caller's vector.
        let start = unsafe { self.vec.add(self.next as usize) };
        match c_uint::try_from((self.real)(start, n)) {
            Ok(k) => {
                self.sent = self.sent.saturating_add(k);
                self.next = self.next.saturating_add(k);
                k == n
            }
            Err(_) => {
                self.failed = true;
                false
            }
        }
    }

    /// What the call returns: the number sent, or -1 (errno set) when none was.
    fn result(&self) -> c_int {
        if self.sent == 0 { -1 } else { c_int::try_from(self.sent).unwrap_or(c_int::MAX) }
    }
}

/// Hooked `accept(2)`: a TCP connection over IPv4/IPv6 it returns is reported (never denied) and tracked for its
/// close.
///
/// # Safety
///
/// As for libc's `accept`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut libc::sockaddr, len: *mut libc::socklen_t) -> c_int {
    let new = match real_fn!(real::ACCEPT, AcceptFn) {
        // SAFETY: the caller's arguments, passed on.
        Some(f) => unsafe { f(fd, addr, len) },
        None => {
            // SAFETY: accept4(2) with no flags is accept(2); the raw system call exists on every architecture.
            sys_int(unsafe { libc::syscall(libc::SYS_accept4, fd, addr, len, 0) })
        }
    };
    net::accepted(NetOp::Accept, new);
    new
}

/// Hooked `accept4(2)`: as `accept`.
///
/// # Safety
///
/// As for libc's `accept4`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
    flags: c_int,
) -> c_int {
    let new = match real_fn!(real::ACCEPT4, Accept4Fn) {
        // SAFETY: the caller's arguments, passed on.
        Some(f) => unsafe { f(fd, addr, len, flags) },
        None => {
            // SAFETY: accept4(2)'s arguments to the raw system call.
            sys_int(unsafe { libc::syscall(libc::SYS_accept4, fd, addr, len, flags) })
        }
    };
    net::accepted(NetOp::Accept4, new);
    new
}

/// Hooked `close(2)`: a connection the hook saw open is reported with its counters right before the real close;
/// any other descriptor costs one atomic load.
///
/// # Safety
///
/// As for libc's `close`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if let Some(opened) = conn_table::take(fd) {
        net::closing(fd, opened);
    }
    match real_fn!(real::CLOSE, CloseFn) {
        // SAFETY: the caller's argument, passed on.
        Some(f) => unsafe { f(fd) },
        None => {
            // SAFETY: close(2)'s argument to the raw system call.
            sys_int(unsafe { libc::syscall(libc::SYS_close, fd) })
        }
    }
}

/// Hooked `listen(2)`: a TCP socket that starts listening is reported with its local address.
///
/// # Safety
///
/// As for libc's `listen`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    let rc = match real_fn!(real::LISTEN, ListenFn) {
        // SAFETY: the caller's arguments, passed on.
        Some(f) => unsafe { f(fd, backlog) },
        None => {
            // SAFETY: listen(2)'s arguments to the raw system call.
            sys_int(unsafe { libc::syscall(libc::SYS_listen, fd, backlog) })
        }
    };
    if rc == 0 {
        net::listening(fd);
    }
    rc
}

/// Hooked `getaddrinfo(3)`: the real lookup, then a dns report with the name and the addresses it returned.
///
/// # Safety
///
/// As for libc's `getaddrinfo`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const libc::addrinfo,
    res: *mut *mut libc::addrinfo,
) -> c_int {
    let real = || match real_fn!(real::GETADDRINFO, GetaddrinfoFn) {
        // SAFETY: the caller's arguments, passed on.
        Some(f) => unsafe { f(node, service, hints, res) },
        None => libc::EAI_SYSTEM,
    };
    // SAFETY: getaddrinfo's contract: `hints` is null or valid.
    let numeric = unsafe { hints.as_ref() }.is_some_and(|h| h.ai_flags & libc::AI_NUMERICHOST != 0);
    // SAFETY: `node` is null or NUL-terminated.
    let Some(_inside) = (unsafe { lookup_begin(node, numeric) }) else { return real() };
    let rc = real();
    let list = if rc == 0 && !res.is_null() {
        // SAFETY: on success getaddrinfo stored a list in `*res`.
        unsafe { *res }
    } else {
        core::ptr::null_mut()
    };
    // SAFETY: `node` is NUL-terminated; `list` is null or the live result.
    unsafe { lookup_report(DnsOp::Getaddrinfo, node, rc, addrinfo_answers(list)) };
    rc
}

/// Hooked `gethostbyname(3)`.
///
/// # Safety
///
/// As for libc's `gethostbyname`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname(name: *const c_char) -> *mut libc::hostent {
    let real = || match real_fn!(real::GETHOSTBYNAME, GethostbynameFn) {
        // SAFETY: the caller's argument, passed on.
        Some(f) => unsafe { f(name) },
        None => core::ptr::null_mut(),
    };
    // SAFETY: `name` is null or NUL-terminated.
    let Some(_inside) = (unsafe { lookup_begin(name, false) }) else { return real() };
    let he = real();
    let result = if he.is_null() { net::h_errno() } else { 0 };
    // SAFETY: `name` is NUL-terminated; `he` is null or the resolver's live result.
    unsafe { lookup_report(DnsOp::Gethostbyname, name, result, hostent_answers(he)) };
    he
}

/// Hooked `gethostbyname2(3)`.
///
/// # Safety
///
/// As for libc's `gethostbyname2`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname2(name: *const c_char, af: c_int) -> *mut libc::hostent {
    let real = || match real_fn!(real::GETHOSTBYNAME2, Gethostbyname2Fn) {
        // SAFETY: the caller's arguments, passed on.
        Some(f) => unsafe { f(name, af) },
        None => core::ptr::null_mut(),
    };
    // SAFETY: `name` is null or NUL-terminated.
    let Some(_inside) = (unsafe { lookup_begin(name, false) }) else { return real() };
    let he = real();
    let result = if he.is_null() { net::h_errno() } else { 0 };
    // SAFETY: `name` is NUL-terminated; `he` is null or the resolver's live result.
    unsafe { lookup_report(DnsOp::Gethostbyname2, name, result, hostent_answers(he)) };
    he
}
