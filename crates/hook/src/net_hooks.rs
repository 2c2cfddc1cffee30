//! The exported network functions: `connect`, `sendto`, `sendmsg`, `getaddrinfo`, `gethostbyname` and
//! `gethostbyname2`. Each hands its call to `net` (check, report, redirect) and runs the real libc function.
//!
//! Not hooked (and so not seen): `send`/`write` (no destination: the connect was seen), `sendmmsg`, `accept`,
//! `listen`, `bind`, `getaddrinfo_a`, `gethostbyname_r` and `res_query`. A real function `dlsym` cannot find
//! falls back to the raw system call (connect, sendto, sendmsg) or fails the way the resolver fails.

use core::ffi::{c_char, c_int, c_void};

use ringwatch_hook_protocol::{DnsOp, NetOp};

use crate::net::{self, addrinfo_answers, hostent_answers, lookup_begin, lookup_report};
use crate::real::{self, ConnectFn, GetaddrinfoFn, Gethostbyname2Fn, GethostbynameFn, SendmsgFn, SendtoFn, real_fn};

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
            let rc = unsafe { libc::syscall(libc::SYS_connect, fd, addr, len) };
            c_int::try_from(rc).unwrap_or(-1)
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
            let rc = unsafe { libc::syscall(libc::SYS_sendto, fd, buf, len, flags, addr, addr_len) };
            libc::ssize_t::try_from(rc).unwrap_or(-1)
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
            let rc = unsafe { libc::syscall(libc::SYS_sendmsg, fd, msg, flags) };
            libc::ssize_t::try_from(rc).unwrap_or(-1)
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
