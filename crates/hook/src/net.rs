//! The network check shared by the hooked `connect`, `sendto`, `sendmsg` and `sendmmsg`, the reports of an
//! accepted connection and of the close of a connection the hook saw open, and the report of a name lookup.
//!
//! A connect (or a send with an explicit destination) is described on the stack, then, on the process's session
//! (see `session`), either asked about before the call (the agent said a rule could block or redirect) or
//! reported one-way after it, with the result and the local address. Only `AF_INET`/`AF_INET6` destinations of
//! TCP and UDP sockets are looked at; everything else (unix sockets, netlink, raw sockets) goes straight to the
//! real function after a family check that costs no system call.
//!
//! **Hot path.** A send without a destination (`send`, `write`, `sendto(.., NULL, 0)` and `sendmsg` with no
//! `msg_name`: every send on a connected socket, so every byte of a bulk transfer) is not looked at at all: its
//! destination is the connect's, which was seen. A send *with* a destination (unconnected UDP: DNS clients,
//! syslog, QUIC) is looked at once per (process, socket, destination): [`SEEN`] is a 256-slot direct-mapped table
//! of atomics keyed by a hash of pid, descriptor, destination and the session's generation, holding the verdict
//! (allow/deny). A hit costs a hash and one atomic load, no system call; a miss reports (or asks) and fills the
//! slot. So a process sending to 10,000 destinations from one socket is reported about 10,000 times, one
//! streaming to one destination once. What this misses, by design: a second socket that reuses the same
//! descriptor number for the same destination while the slot is still filled (the new socket's sends are not
//! reported again), and a slot evicted by a colliding destination is reported again (harmless). TCP `sendto` with
//! an address is ignored by the kernel on a connected socket, so it is only looked at with `MSG_FASTOPEN` (which
//! connects).
//!
//! **Deny.** A denied connect fails with `ECONNREFUSED` (what a closed port answers, so programs handle it) unless
//! the agent names another errno; a denied send fails with `EACCES`. The verdict of a send is cached like a
//! report, so later sends to the same destination fail without asking again.
//!
//! **Redirect** (TCP connect only; a redirect verdict for UDP is treated as allow): the socket is connected to the
//! proxy's hook address instead, made blocking for the moment it takes (loopback), and the 28-byte redirect header
//! (`"RWPX"`, see `ringwatch_hook_protocol::encode_proxy_header`) is written before the call returns 0, so the
//! application's first byte follows the header. An IPv4 proxy is reached from an IPv6 socket through its
//! IPv4-mapped address; an IPv4 socket cannot reach an IPv6 proxy and its connect fails with `ECONNREFUSED`, as
//! it does when the proxy is not there (fail closed: the rule wanted the traffic inspected).
//!
//! **Accept and close** (TCP over IPv4/IPv6 only). After a successful `accept`/`accept4` the new socket is
//! described (`getsockname`, `SO_PROTOCOL`, `getpeername`) and reported one-way, even when the agent asks for
//! verdicts: an accept is never denied (policy blocks outbound connections; an inbound one is already
//! established when `accept` returns). Each connection the hook saw open (a reported or allowed TCP connect, a
//! reported accept) is put in the fixed table of `conn_table`; its `close` is reported right before the real
//! close with the kernel's counters from `getsockopt(TCP_INFO)`: `tcpi_bytes_acked` (sent and acknowledged by the
//! peer) and `tcpi_bytes_received`, less the SYN and FIN sequence numbers they include (inferred from
//! `tcpi_state`, as the kernel monitor does from the socket), and the time since the connect or accept. Any
//! doubt about the socket (another cookie, not TCP, another family, no `TCP_INFO`) clears the entry without a
//! report; so does a socket that never got connected (no peer and no byte either way). The close of every other
//! descriptor is one atomic load and the real close. The errno the caller sees is always the real call's.
//!
//! **Lookups.** `getaddrinfo`, `gethostbyname` and `gethostbyname2` run the real resolver with the reentry guard
//! held (so the resolver's own sockets are not reported as connects), then send one `NET_DNS` report with the
//! name and up to 32 distinct addresses, walked straight from the resolver's result (no copy, no allocation).
//! Numeric names (`127.0.0.1`, `AI_NUMERICHOST`) are not lookups and are not reported.

use core::ffi::{c_char, c_int};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use core::sync::atomic::{AtomicU64, Ordering};

use ringwatch_hook_protocol::{
    Config, DNS_MAX_LEN, DnsFixed, DnsOp, Message, NET_CLOSE_LEN, NET_FLAG_IN_PROGRESS, NET_FLAG_INBOUND, NET_LEN,
    NET_VERDICT_LEN, NetClose, NetFixed, NetOp, NetVerdict, PROTO_TCP, PROTO_UDP, PROXY_HEADER_LEN, decode, encode_dns,
    encode_net_report, encode_net_request, encode_proxy_header,
};

use crate::conn_table::{self, Opened};
use crate::file::tid;
use crate::guard::{self, Reentry};
use crate::report::{SavedErrno, errno, next_seq, set_errno};
use crate::session::{self, Session};

/// What to do with a connect or send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetOutcome {
    /// Run the real call.
    Allow,
    /// Fail with this errno.
    Deny(c_int),
    /// Connect to the proxy instead (connect only).
    Redirect(SocketAddr),
}

/// Slots of the per-process table of (socket, destination) pairs already seen by a send.
const SEEN_SLOTS: usize = 256;
/// Verdict bits kept in a slot's low two bits.
const SEEN_ALLOW: u64 = 1;
const SEEN_DENY: u64 = 2;
/// Slots hold `key & !3 | verdict`, 0 = empty.
static SEEN: [AtomicU64; SEEN_SLOTS] = [const { AtomicU64::new(0) }; SEEN_SLOTS];

/// The destination of `addr` when it is an IPv4 or IPv6 socket address of sufficient length. No system call.
///
/// # Safety
///
/// `addr` is null or points to at least `len` readable bytes (the caller's own contract with libc).
pub(crate) unsafe fn inet_destination(addr: *const libc::sockaddr, len: libc::socklen_t) -> Option<SocketAddr> {
    if addr.is_null() {
        return None;
    }
    let len = usize::try_from(len).ok()?;
    if len < size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: at least the family field is readable (checked above); read unaligned, as user buffers may be.
    let family = unsafe { core::ptr::read_unaligned(addr.cast::<libc::sa_family_t>()) };
    match c_int::from(family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: `len` covers a whole sockaddr_in.
            let sin = unsafe { core::ptr::read_unaligned(addr.cast::<libc::sockaddr_in>()) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: `len` covers a whole sockaddr_in6.
            let sin6 = unsafe { core::ptr::read_unaligned(addr.cast::<libc::sockaddr_in6>()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(sin6.sin6_port), 0, sin6.sin6_scope_id)))
        }
        _ => None,
    }
}

/// `addr` as a sockaddr for a socket of `family` (an IPv4 address becomes IPv4-mapped for an IPv6 socket);
/// `None` when it cannot be expressed (IPv6 address, IPv4 socket).
fn to_sockaddr(addr: SocketAddr, family: c_int) -> Option<(libc::sockaddr_storage, libc::socklen_t)> {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { core::mem::zeroed() };
    let v6 = match (addr, family) {
        (SocketAddr::V4(v4), libc::AF_INET) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned for it.
            unsafe { core::ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin) };
            return Some((storage, size_of::<libc::sockaddr_in>() as libc::socklen_t));
        }
        (SocketAddr::V4(v4), libc::AF_INET6) => SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0),
        (SocketAddr::V6(v6), libc::AF_INET6) => v6,
        _ => return None,
    };
    let sin6 = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: v6.port().to_be(),
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
        sin6_scope_id: v6.scope_id(),
    };
    // SAFETY: sockaddr_storage is larger than sockaddr_in6 and suitably aligned for it.
    unsafe { core::ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6) };
    Some((storage, size_of::<libc::sockaddr_in6>() as libc::socklen_t))
}

/// An integer socket option, or `None`.
fn sockopt_int(fd: c_int, name: c_int) -> Option<c_int> {
    let mut v: c_int = 0;
    let mut len = size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writing an int option.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, name, (&raw mut v).cast(), &raw mut len) };
    (rc == 0).then_some(v)
}

/// [`PROTO_TCP`] or [`PROTO_UDP`] for the socket, `None` for anything else (raw, SCTP, not a socket).
fn socket_protocol(fd: c_int) -> Option<u8> {
    match sockopt_int(fd, libc::SO_PROTOCOL)? {
        libc::IPPROTO_TCP => Some(PROTO_TCP),
        libc::IPPROTO_UDP => Some(PROTO_UDP),
        _ => None,
    }
}

/// The socket's local address after a connect or send.
fn local_address(fd: c_int) -> Option<SocketAddr> {
    socket_name(fd, libc::getsockname)
}

/// The socket's peer, when it has one.
fn peer_address(fd: c_int) -> Option<SocketAddr> {
    socket_name(fd, libc::getpeername)
}

/// `getsockname` or `getpeername` of `fd` as an IPv4/IPv6 address.
fn socket_name(
    fd: c_int,
    call: unsafe extern "C" fn(c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> c_int,
) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { core::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` describe a writable buffer of `len` bytes.
    let rc = unsafe { call(fd, (&raw mut storage).cast(), &raw mut len) };
    if rc != 0 {
        return None;
    }
    // SAFETY: the call wrote `len` bytes (at most the storage's size) into `storage`.
    unsafe { inet_destination((&raw const storage).cast(), len) }
}

fn this_pid() -> u32 {
    // SAFETY: a plain syscall wrapper.
    unsafe { libc::getpid() }.unsigned_abs()
}

fn this_uid() -> u32 {
    // SAFETY: a plain syscall wrapper.
    unsafe { libc::getuid() }
}

/// FNV-1a over the pair's identity: which process, socket, destination, and which agent session generation.
fn seen_key(pid: u32, fd: c_int, dst: &SocketAddr) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&pid.to_le_bytes());
    eat(&fd.to_le_bytes());
    eat(&session::generation().to_le_bytes());
    match dst.ip() {
        IpAddr::V4(v4) => eat(&v4.octets()),
        IpAddr::V6(v6) => eat(&v6.octets()),
    }
    eat(&dst.port().to_le_bytes());
    // Never 0 (the empty slot) once the verdict bits are added.
    h & !3
}

fn seen_slot(key: u64) -> Option<&'static AtomicU64> {
    SEEN.get(usize::try_from(key >> 2).unwrap_or(0) % SEEN_SLOTS)
}

/// The cached verdict of a (socket, destination) pair, if it was seen.
fn seen_verdict(key: u64) -> Option<u64> {
    let v = seen_slot(key)?.load(Ordering::Relaxed);
    (v != 0 && v & !3 == key).then_some(v & 3)
}

fn remember(key: u64, verdict: u64) {
    if let Some(slot) = seen_slot(key) {
        slot.store(key | verdict, Ordering::Relaxed);
    }
}

/// Asks the agent about `fixed`; allow on any failure.
fn ask(session: &Session, fixed: &NetFixed) -> NetOutcome {
    let seq = next_seq();
    let mut buf = [0u8; NET_LEN];
    let Some(msg) = encode_net_request(&mut buf, seq, fixed).ok().and_then(|n| buf.get(..n)) else {
        return NetOutcome::Allow;
    };
    let mut reply = [0u8; NET_VERDICT_LEN + 16];
    let Some(n) = session::exchange(session, msg, seq, &mut reply) else { return NetOutcome::Allow };
    let default_errno = if fixed.op == NetOp::Connect { libc::ECONNREFUSED } else { libc::EACCES };
    match reply.get(..n).map(decode) {
        Some(Ok((_, Message::NetVerdict(NetVerdict::Deny { errno })))) => {
            NetOutcome::Deny(if (1..4096).contains(&errno) { errno } else { default_errno })
        }
        Some(Ok((_, Message::NetVerdict(NetVerdict::Redirect { proxy })))) => NetOutcome::Redirect(proxy),
        _ => NetOutcome::Allow,
    }
}

/// Sends a one-way report of `fixed` with `result` (0 or errno); a report that cannot be sent is counted.
fn report_after(session: &Session, fixed: &NetFixed, result: c_int) {
    let dropped = session::take_dropped();
    let fixed = NetFixed { dropped, ..*fixed };
    let mut buf = [0u8; NET_CLOSE_LEN];
    let sent = match encode_net_report(&mut buf, 0, &fixed, result) {
        Ok(n) => buf.get(..n).is_some_and(|msg| session::report(session, msg)),
        Err(_) => false,
    };
    if !sent {
        session::undo_take_dropped(dropped);
    }
}

/// What is known of this thread's `op` before the call runs (flags, source address and the outcome come after).
fn call_facts(op: NetOp, pid: u32, bytes: u32, protocol: u8, dst: SocketAddr) -> NetFixed {
    NetFixed {
        op,
        flags: 0,
        pid,
        tid: tid(pid),
        uid: this_uid(),
        dropped: 0,
        bytes,
        protocol,
        dst,
        src: None,
        close: None,
    }
}

/// The connect check around `real` (the real connect applied to an address).
///
/// # Safety
///
/// `addr`/`len` satisfy connect(2)'s contract.
pub(crate) unsafe fn connect(
    fd: c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
    real: impl Fn(*const libc::sockaddr, libc::socklen_t) -> c_int,
) -> c_int {
    if !guard::active() {
        return real(addr, len);
    }
    // SAFETY: forwarded caller contract.
    let Some(dst) = (unsafe { inet_destination(addr, len) }) else { return real(addr, len) };
    let Some(_inside) = Reentry::enter() else { return real(addr, len) };
    let saved = SavedErrno::save();
    let pid = this_pid();
    let (Some(session), Some(protocol)) = (session::current(pid, Config::wants_net), socket_protocol(fd)) else {
        drop(saved);
        return real(addr, len);
    };
    let fixed = call_facts(NetOp::Connect, pid, 0, protocol, dst);
    if session.net_verdicts() {
        let outcome = ask(&session, &fixed);
        drop(saved);
        return match outcome {
            NetOutcome::Allow => {
                let ret = real(addr, len);
                let err = errno();
                if protocol == PROTO_TCP && (ret == 0 || err == libc::EINPROGRESS) {
                    conn_table::track(fd, false, dst.is_ipv6());
                }
                set_errno(err);
                ret
            }
            NetOutcome::Deny(e) => {
                set_errno(e);
                -1
            }
            // The close of a redirected connection is not reported: its peer is the proxy, which reports the relay.
            NetOutcome::Redirect(proxy) if protocol == PROTO_TCP => redirect(fd, proxy, dst, pid, &real),
            NetOutcome::Redirect(_) => real(addr, len),
        };
    }
    drop(saved);
    let ret = real(addr, len);
    let err = errno();
    let (result, flags) = match (ret, err) {
        (0, _) => (0, 0),
        (_, libc::EINPROGRESS) => (0, NET_FLAG_IN_PROGRESS),
        _ => (err, 0),
    };
    let src = if result == 0 { local_address(fd) } else { None };
    if result == 0 && protocol == PROTO_TCP {
        conn_table::track(fd, false, dst.is_ipv6());
    }
    report_after(&session, &NetFixed { flags, src, ..fixed }, result);
    set_errno(err);
    ret
}

/// Reports the connection `fd` that `op` (accept or accept4) just returned, when it is TCP over IPv4/IPv6, and
/// tracks it for its close. Leaves errno as it found it.
pub(crate) fn accepted(op: NetOp, fd: c_int) {
    if fd < 0 || !guard::active() {
        return;
    }
    let Some(_inside) = Reentry::enter() else { return };
    let saved = SavedErrno::save();
    accepted_inner(op, fd);
    drop(saved);
}

fn accepted_inner(op: NetOp, fd: c_int) {
    // A unix or other non-IP socket stops at the first call; with no agent (or none that wants network calls),
    // nothing more is asked of the kernel.
    let Some(local) = local_address(fd) else { return };
    let pid = this_pid();
    let Some(session) = session::current(pid, Config::wants_net) else { return };
    if socket_protocol(fd) != Some(PROTO_TCP) {
        return;
    }
    // The peer may already have reset the connection: nothing to report then.
    let Some(remote) = peer_address(fd) else { return };
    conn_table::track(fd, true, local.is_ipv6());
    let fixed = NetFixed { flags: NET_FLAG_INBOUND, src: Some(local), ..call_facts(op, pid, 0, PROTO_TCP, remote) };
    report_after(&session, &fixed, 0);
}

/// Reports that TCP socket `fd` listens (after a successful `listen`), with its local address.
pub(crate) fn listening(fd: c_int) {
    if !guard::active() {
        return;
    }
    let Some(_inside) = Reentry::enter() else { return };
    let saved = SavedErrno::save();
    if let Some(local) = local_address(fd) {
        let pid = this_pid();
        if let Some(session) = session::current(pid, Config::wants_net)
            && socket_protocol(fd) == Some(PROTO_TCP)
        {
            report_after(&session, &call_facts(NetOp::Listen, pid, 0, PROTO_TCP, local), 0);
        }
    }
    drop(saved);
}

/// Reports the close of `fd`, a connection the table had (`opened`), right before the real close. Leaves errno as
/// it found it.
pub(crate) fn closing(fd: c_int, opened: Opened) {
    if !guard::active() {
        return;
    }
    let Some(_inside) = Reentry::enter() else { return };
    let saved = SavedErrno::save();
    closing_inner(fd, opened);
    drop(saved);
}

// Linux TCP states (include/net/tcp_states.h), as tcpi_state reports them.
const TCP_FIN_WAIT2: u8 = 5;
const TCP_CLOSE: u8 = 7;
const TCP_CLOSE_WAIT: u8 = 8;
const TCP_LAST_ACK: u8 = 9;
const TCP_CLOSING: u8 = 11;

/// What `getsockopt(TCP_INFO)` says about a connection: (tcpi_state, tcpi_bytes_acked, tcpi_bytes_received).
fn tcp_info(fd: c_int) -> Option<(u8, u64, u64)> {
    /// `struct tcp_info` up to and past `tcpi_bytes_received` (offsets 120 and 128; the kernel fills what it has).
    #[repr(C, align(8))]
    struct Info([u8; 256]);
    let mut info = Info([0; 256]);
    let mut len = size_of::<Info>() as libc::socklen_t;
    // SAFETY: `info` and `len` describe a writable buffer of `len` bytes.
    let rc = unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &raw mut len) };
    if rc != 0 || usize::try_from(len).map_or(true, |l| l < 136) {
        return None;
    }
    let u64_at = |at: usize| info.0.get(at..at.checked_add(8)?)?.try_into().ok().map(u64::from_ne_bytes);
    Some((*info.0.first()?, u64_at(120)?, u64_at(128)?))
}

/// Payload bytes (out, in) from the sequence-space counters: the active opener's SYN is acked once established;
/// our FIN is acked in FIN_WAIT2; the peer's FIN was received in CLOSE_WAIT, LAST_ACK and CLOSING. A socket in
/// CLOSE was either reset (`reset`: it had a pending error) or went through both FINs.
fn payload_bytes(state: u8, acked: u64, received: u64, inbound: bool, reset: bool) -> (u64, u64) {
    let syn = u64::from(!inbound && acked > 0);
    let (our_fin, peer_fin) = match state {
        TCP_FIN_WAIT2 => (1, 0),
        TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING => (0, 1),
        TCP_CLOSE if !reset => (1, 1),
        _ => (0, 0),
    };
    (acked.saturating_sub(syn).saturating_sub(our_fin), received.saturating_sub(peer_fin))
}

fn closing_inner(fd: c_int, opened: Opened) {
    // Still the socket that was opened? The cookie says so; without one, at least TCP of the same family.
    let same = if opened.cookie != 0 {
        conn_table::socket_cookie(fd) == opened.cookie
    } else {
        socket_protocol(fd) == Some(PROTO_TCP)
    };
    if !same {
        return;
    }
    let Some(local) = local_address(fd).filter(|l| l.is_ipv6() == opened.v6) else { return };
    let Some((state, acked, received)) = tcp_info(fd) else { return };
    let remote = match peer_address(fd) {
        Some(r) => r,
        // Never connected (refused, or closed while connecting): there was no connection to close.
        None if acked == 0 && received == 0 => return,
        // Reset: the kernel forgot the peer.
        None if opened.v6 => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        None => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
    };
    let reset = state == TCP_CLOSE && sockopt_int(fd, libc::SO_ERROR).is_some_and(|e| e != 0);
    let (bytes_out, bytes_in) = payload_bytes(state, acked, received, opened.inbound, reset);
    let duration_us = conn_table::now_ns().saturating_sub(opened.start_ns) / 1000;
    let pid = this_pid();
    let Some(session) = session::current(pid, Config::wants_net) else { return };
    let fixed = NetFixed {
        flags: if opened.inbound { NET_FLAG_INBOUND } else { 0 },
        src: Some(local),
        close: Some(NetClose { bytes_out, bytes_in, duration_us }),
        ..call_facts(NetOp::Close, pid, 0, PROTO_TCP, remote)
    };
    report_after(&session, &fixed, 0);
}

/// Connects `fd` to the proxy and writes the redirect header; 0, or -1 with errno (`ECONNREFUSED` when the proxy
/// cannot be reached from this socket).
fn redirect(
    fd: c_int,
    proxy: SocketAddr,
    original: SocketAddr,
    pid: u32,
    real: &impl Fn(*const libc::sockaddr, libc::socklen_t) -> c_int,
) -> c_int {
    let Some(family) = sockopt_int(fd, libc::SO_DOMAIN) else { return fail(libc::ECONNREFUSED) };
    let Some((target, target_len)) = to_sockaddr(proxy, family) else { return fail(libc::ECONNREFUSED) };
    let mut header = [0u8; PROXY_HEADER_LEN];
    let Ok(header_len) = encode_proxy_header(&mut header, original, pid) else { return fail(libc::ECONNREFUSED) };
    // SAFETY: F_GETFL on the caller's descriptor.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    let nonblocking = fl >= 0 && fl & libc::O_NONBLOCK != 0;
    if nonblocking {
        // SAFETY: F_SETFL with the descriptor's own flags minus O_NONBLOCK; restored below.
        unsafe { libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) };
    }
    let rc = real((&raw const target).cast(), target_len);
    let mut outcome = if rc == 0 { 0 } else { errno() };
    let mut sent = 0usize;
    while outcome == 0 && sent < header_len {
        let rest = header.get(sent..header_len).unwrap_or(&[]);
        // SAFETY: `rest` is a valid readable buffer of `rest.len()` bytes.
        let n = unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL) };
        match usize::try_from(n) {
            Ok(n) if n > 0 => sent = sent.saturating_add(n),
            _ if errno() == libc::EINTR => {}
            _ => outcome = libc::ECONNREFUSED,
        }
    }
    if nonblocking {
        // SAFETY: restores the flags read above.
        unsafe { libc::fcntl(fd, libc::F_SETFL, fl) };
    }
    if outcome == 0 { 0 } else { fail(outcome) }
}

fn fail(e: c_int) -> c_int {
    set_errno(e);
    -1
}

/// The check of a send with an explicit destination (`sendto` with an address, `sendmsg` with `msg_name`):
/// at most one report or request per (process, socket, destination). `Deny(errno)` means fail the send.
///
/// # Safety
///
/// `addr`/`len` are null or satisfy sendto(2)'s contract.
pub(crate) unsafe fn send_check(
    op: NetOp,
    fd: c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
    flags: c_int,
    bytes: usize,
) -> SendCheck {
    if !guard::active() {
        return SendCheck::Pass;
    }
    // SAFETY: forwarded caller contract.
    let Some(dst) = (unsafe { inet_destination(addr, len) }) else { return SendCheck::Pass };
    let pid = this_pid();
    let key = seen_key(pid, fd, &dst);
    match seen_verdict(key) {
        Some(SEEN_DENY) => return SendCheck::Deny(libc::EACCES),
        Some(_) => return SendCheck::Pass,
        None => {}
    }
    let Some(_inside) = Reentry::enter() else { return SendCheck::Pass };
    let saved = SavedErrno::save();
    let protocol = socket_protocol(fd);
    let fast_open = flags & libc::MSG_FASTOPEN != 0;
    let Some(protocol) = protocol.filter(|p| *p == PROTO_UDP || fast_open) else {
        // Not UDP: the kernel ignores the address on a connected TCP socket; nothing to look at again.
        remember(key, SEEN_ALLOW);
        drop(saved);
        return SendCheck::Pass;
    };
    let Some(session) = session::current(pid, Config::wants_net) else {
        drop(saved);
        return SendCheck::Pass;
    };
    // Connecting the session may have started a new generation: key the verdict to the session it came from.
    let key = seen_key(pid, fd, &dst);
    let fixed = call_facts(op, pid, u32::try_from(bytes).unwrap_or(u32::MAX), protocol, dst);
    if session.net_verdicts() {
        let outcome = ask(&session, &fixed);
        drop(saved);
        return match outcome {
            NetOutcome::Deny(e) => {
                remember(key, SEEN_DENY);
                SendCheck::Deny(e)
            }
            // A redirect is for TCP connects; a send goes where it was addressed.
            NetOutcome::Allow | NetOutcome::Redirect(_) => {
                remember(key, SEEN_ALLOW);
                SendCheck::Pass
            }
        };
    }
    drop(saved);
    SendCheck::ReportAfter(session, fixed, key)
}

/// What a send does next.
pub(crate) enum SendCheck {
    /// Just send.
    Pass,
    /// Fail with this errno.
    Deny(c_int),
    /// Send, then report it (first send to this destination in monitor mode).
    ReportAfter(Session, NetFixed, u64),
}

/// Runs `real` (a send) as `check` says; reports it afterwards when asked to.
pub(crate) fn send_with(check: SendCheck, fd: c_int, real: impl FnOnce() -> libc::ssize_t) -> libc::ssize_t {
    match check {
        SendCheck::Pass => real(),
        SendCheck::Deny(e) => {
            set_errno(e);
            -1
        }
        SendCheck::ReportAfter(session, fixed, key) => {
            let ret = real();
            let err = errno();
            let Some(_inside) = Reentry::enter() else { return ret };
            let result = if ret >= 0 { 0 } else { err };
            if result == 0 {
                remember(key, SEEN_ALLOW);
            }
            let src = if result == 0 { local_address(fd) } else { None };
            report_after(&session, &NetFixed { src, ..fixed }, result);
            set_errno(err);
            ret
        }
    }
}

/// Total bytes of a `msghdr`'s iovecs (at most 1024 of them are counted, like the kernel's UIO_MAXIOV).
///
/// # Safety
///
/// `msg` is null or a valid msghdr whose iovec array is readable (sendmsg's contract).
pub(crate) unsafe fn msg_bytes(msg: *const libc::msghdr) -> usize {
    if msg.is_null() {
        return 0;
    }
    // SAFETY: caller's contract.
    let m = unsafe { &*msg };
    if m.msg_iov.is_null() {
        return 0;
    }
    let n = m.msg_iovlen.min(1024);
    // SAFETY: sendmsg's contract: msg_iov points to msg_iovlen iovecs.
    let iov = unsafe { core::slice::from_raw_parts(m.msg_iov, n) };
    iov.iter().fold(0usize, |acc, v| acc.saturating_add(v.iov_len))
}

/// True when `name` is an IPv4 or IPv6 literal (not a lookup).
///
/// # Safety
///
/// `name` is a NUL-terminated string.
unsafe fn is_numeric(name: *const c_char) -> bool {
    // SAFETY: `name` is NUL-terminated; strnlen reads at most 64 bytes (longer than any address literal).
    let n = unsafe { libc::strnlen(name, 64) };
    // SAFETY: the first `n` bytes were just read by strnlen.
    let bytes = unsafe { core::slice::from_raw_parts(name.cast::<u8>(), n) };
    core::str::from_utf8(bytes).is_ok_and(|s| s.parse::<IpAddr>().is_ok())
}

/// A lookup about to be run: `None` when it is not one to report (not active, no name, a numeric name).
///
/// # Safety
///
/// `name` is null or NUL-terminated.
pub(crate) unsafe fn lookup_begin(name: *const c_char, numeric_only: bool) -> Option<Reentry> {
    if !guard::active() || name.is_null() || numeric_only {
        return None;
    }
    // SAFETY: forwarded caller contract.
    if unsafe { is_numeric(name) } {
        return None;
    }
    Reentry::enter()
}

/// Reports a finished lookup of `name` with result `result` and `answers`.
///
/// # Safety
///
/// `name` is NUL-terminated.
pub(crate) unsafe fn lookup_report(
    op: DnsOp,
    name: *const c_char,
    result: c_int,
    answers: impl IntoIterator<Item = IpAddr>,
) {
    let saved = SavedErrno::save();
    let pid = this_pid();
    let Some(session) = session::current(pid, Config::wants_net) else {
        drop(saved);
        return;
    };
    // SAFETY: `name` is NUL-terminated; strnlen reads at most 256 bytes and stops at the NUL.
    let n = unsafe { libc::strnlen(name, 256) };
    // SAFETY: the first `n` bytes were just read by strnlen.
    let query = unsafe { core::slice::from_raw_parts(name.cast::<u8>(), n) };
    let dropped = session::take_dropped();
    let fixed = DnsFixed { op, pid, tid: tid(pid), uid: this_uid(), dropped, result };
    let mut buf = [0u8; DNS_MAX_LEN];
    let sent = match encode_dns(&mut buf, 0, &fixed, query, answers) {
        Ok(len) => buf.get(..len).is_some_and(|msg| session::report(&session, msg)),
        Err(_) => false,
    };
    if !sent {
        session::undo_take_dropped(dropped);
    }
    drop(saved);
}

/// The addresses of a `getaddrinfo` result list (at most 256 entries walked).
///
/// # Safety
///
/// `res` is null or a list returned by getaddrinfo and not yet freed.
pub(crate) unsafe fn addrinfo_answers(res: *const libc::addrinfo) -> impl Iterator<Item = IpAddr> {
    let mut next = res;
    let mut walked = 0u32;
    core::iter::from_fn(move || {
        while !next.is_null() && walked < 256 {
            walked = walked.saturating_add(1);
            // SAFETY: a node of the caller's live list.
            let ai = unsafe { &*next };
            next = ai.ai_next;
            // SAFETY: ai_addr points to ai_addrlen bytes (getaddrinfo's contract).
            if let Some(sa) = unsafe { inet_destination(ai.ai_addr, ai.ai_addrlen) } {
                return Some(sa.ip());
            }
        }
        None
    })
}

/// The addresses of a `hostent` (at most 256 walked).
///
/// # Safety
///
/// `he` is null or a hostent returned by gethostbyname* and not yet overwritten.
pub(crate) unsafe fn hostent_answers(he: *const libc::hostent) -> impl Iterator<Item = IpAddr> {
    // SAFETY: caller's contract.
    let (family, length, mut list) = match unsafe { he.as_ref() } {
        Some(h) => (h.h_addrtype, h.h_length, h.h_addr_list.cast_const()),
        None => (0, 0, core::ptr::null()),
    };
    let mut walked = 0u32;
    core::iter::from_fn(move || {
        if list.is_null() || walked >= 256 {
            return None;
        }
        // SAFETY: h_addr_list is a NULL-terminated array of pointers to h_length-byte addresses.
        let entry = unsafe { *list };
        if entry.is_null() {
            return None;
        }
        walked = walked.saturating_add(1);
        // SAFETY: advancing within the NULL-terminated array (the current element was not the terminator).
        list = unsafe { list.add(1) };
        match (family, length) {
            (libc::AF_INET, 4) => {
                // SAFETY: the entry holds 4 bytes.
                let b = unsafe { core::ptr::read_unaligned(entry.cast::<[u8; 4]>()) };
                Some(IpAddr::V4(Ipv4Addr::from(b)))
            }
            (libc::AF_INET6, 16) => {
                // SAFETY: the entry holds 16 bytes.
                let b = unsafe { core::ptr::read_unaligned(entry.cast::<[u8; 16]>()) };
                Some(IpAddr::V6(Ipv6Addr::from(b)))
            }
            _ => None,
        }
    })
}

/// The calling thread's `h_errno` (gethostbyname's error).
pub(crate) fn h_errno() -> c_int {
    unsafe extern "C" {
        fn __h_errno_location() -> *mut c_int;
    }
    // SAFETY: glibc's __h_errno_location returns a valid pointer to the calling thread's h_errno.
    unsafe { *__h_errno_location() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_parse_and_round_trip() {
        for (s, fam) in [("10.1.2.3:80", libc::AF_INET), ("[2001:db8::1]:443", libc::AF_INET6)] {
            let a: SocketAddr = s.parse().unwrap();
            let (st, len) = to_sockaddr(a, fam).unwrap();
            // SAFETY: `st` holds `len` valid bytes.
            assert_eq!(unsafe { inet_destination((&raw const st).cast(), len) }, Some(a));
            // SAFETY: as above, but one byte short.
            assert_eq!(unsafe { inet_destination((&raw const st).cast(), len - 1) }, None);
        }
        let v4: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let (st, len) = to_sockaddr(v4, libc::AF_INET6).unwrap();
        // SAFETY: `st` holds `len` valid bytes.
        let mapped = unsafe { inet_destination((&raw const st).cast(), len) }.unwrap();
        assert_eq!(mapped.ip(), IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()));
        assert!(to_sockaddr("[::1]:1".parse().unwrap(), libc::AF_INET).is_none());
        // SAFETY: a null address is allowed.
        assert_eq!(unsafe { inet_destination(core::ptr::null(), 16) }, None);
    }

    #[test]
    fn the_seen_table_remembers_verdicts_per_pair() {
        let a: SocketAddr = "10.0.0.1:53".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:53".parse().unwrap();
        let (ka, kb) = (seen_key(1, 3, &a), seen_key(1, 3, &b));
        assert_ne!(ka, kb);
        assert_ne!(ka, seen_key(1, 4, &a), "another socket is another pair");
        assert_ne!(ka, seen_key(2, 3, &a), "another process is another pair");
        remember(ka, SEEN_DENY);
        assert_eq!(seen_verdict(ka), Some(SEEN_DENY));
        if (ka >> 2) % SEEN_SLOTS as u64 != (kb >> 2) % SEEN_SLOTS as u64 {
            assert_eq!(seen_verdict(kb), None);
        }
    }

    #[test]
    fn payload_bytes_take_the_syn_and_fins_off() {
        // Connected, data both ways, closed while established: our SYN was acked.
        assert_eq!(payload_bytes(1, 101, 7, false, false), (100, 7));
        // Accepted: the counters start past the handshake.
        assert_eq!(payload_bytes(1, 100, 7, true, false), (100, 7));
        // The peer closed first (CLOSE_WAIT): its FIN was counted as received.
        assert_eq!(payload_bytes(TCP_CLOSE_WAIT, 7, 101, true, false), (7, 100));
        // shutdown(SHUT_WR) and our FIN acked (FIN_WAIT2); then both FINs (CLOSE) or a reset.
        assert_eq!(payload_bytes(TCP_FIN_WAIT2, 102, 7, false, false), (100, 7));
        assert_eq!(payload_bytes(TCP_CLOSE, 102, 8, false, false), (100, 7));
        assert_eq!(payload_bytes(TCP_CLOSE, 101, 7, false, true), (100, 7));
        // Never established: nothing, never an underflow.
        assert_eq!(payload_bytes(2, 0, 0, false, false), (0, 0));
        assert_eq!(payload_bytes(TCP_CLOSE, 0, 0, false, false), (0, 0));
    }

    #[test]
    fn numeric_names_are_not_lookups() {
        // SAFETY: static NUL-terminated strings.
        unsafe {
            assert!(is_numeric(c"127.0.0.1".as_ptr()));
            assert!(is_numeric(c"::1".as_ptr()));
            assert!(!is_numeric(c"localhost".as_ptr()));
        }
    }
}
