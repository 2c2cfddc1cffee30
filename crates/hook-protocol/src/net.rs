//! Network-domain messages (`0x03xx`): a hooked `connect`/`sendto`/`sendmsg`/`sendmmsg`, an `accept`/`accept4`
//! and the `close` of a TCP socket the hook saw connect or accept ([`NetMessage`]), a hooked name
//! lookup (`getaddrinfo`, `gethostbyname`, `gethostbyname2`: [`DnsMessage`]), and the agent's answer to a network
//! request ([`NetVerdict`]), which besides allow/deny can say *redirect to the local proxy at this address*.
//!
//! Like the file messages, a connect/send travels as [`MessageKind::NET_REQUEST`] before the call (the hook waits
//! for a [`MessageKind::NET_VERDICT`]; only when the agent said a rule could block, see [`crate::CONFIG_NET_VERDICT`])
//! or as a one-way [`MessageKind::NET_REPORT`] after it, with the result. An accept and a close are never asked
//! about: they are always one-way reports (a request with those ops is refused by the decoder). A lookup is always
//! a one-way [`MessageKind::NET_DNS`] after the call with the answers the resolver returned.
//!
//! Accept, accept4 and close describe a connection rather than a call to a destination: `dst` is the remote end
//! and `src` the local end, whichever side opened it, and [`NET_FLAG_INBOUND`] says the process accepted it. A
//! close report is [`NET_CLOSE_LEN`] bytes: the 84 of every connect/send message plus a 24-byte tail with the
//! connection's counters ([`NetClose`]); every other op is exactly [`NET_LEN`] bytes, as before the tail existed,
//! so messages from older hooks still decode.
//!
//! ```text
//! NET_REQUEST / NET_REPORT (after the header)
//!   0  2  op        NetOp
//!   2  2  flags     NET_FLAG_*
//!   4  4  pid       as claimed (the agent trusts SO_PEERCRED)
//!   8  4  tid
//!  12  4  uid       real uid at the call, as claimed
//!  16  4  result    i32: -1 in a request; 0 or the call's errno in a report (EINPROGRESS counts as 0 + flag)
//!  20  4  dropped   reports this process could not send since its last sent one
//!  24  4  bytes     sendto/sendmsg/sendmmsg: bytes the caller asked to send; 0 for connect, accept, close
//!  28  1  family    4 or 6
//!  29  1  protocol  6 (TCP) or 17 (UDP), from the socket's type
//!  30  2  dst_port
//!  32 16  dst_addr  IPv4 in the first 4 bytes, the rest 0
//!  48  2  src_port  0 when not known (requests; a failed call)
//!  50  2  reserved  0
//!  52 16  src_addr
//!  -- close only (op 6), NET_REPORT only:
//!  68  8  bytes_out  payload bytes the peer acknowledged (u64)
//!  76  8  bytes_in   payload bytes received (u64)
//!  84  8  duration_us since the connect or accept the hook saw (u64)
//!
//! NET_DNS (after the header)
//!   0  2  op        DnsOp
//!   2  2  flags     DNS_FLAG_*
//!   4  4  pid
//!   8  4  tid
//!  12  4  uid
//!  16  4  result    i32: 0, or the resolver's error (EAI_* for getaddrinfo, h_errno for gethostbyname*)
//!  20  4  dropped
//!  24  2  query_len (at most MAX_QUERY)
//!  26  2  answer_count (at most MAX_ANSWERS)
//!  28  .  query (no NUL), then answer_count answers of 17 bytes: family u8 (4|6) + 16 address bytes
//!
//! NET_VERDICT (after the header)
//!   0  2  verdict   1 allow, 2 deny, 3 redirect
//!   2  2  reserved  0
//!   4  4  errno     deny: what the call fails with (0 = the op's default)
//!   8  1  family    redirect: 4 or 6; else 0
//!   9  1  reserved  0
//!  10  2  port      redirect: the proxy's hook port
//!  12 16  addr      redirect: the proxy's hook address
//! ```
//!
//! The redirect header the hook writes to the proxy first (not a message of this protocol; defined here so the
//! hook and the proxy share one definition): [`encode_proxy_header`], [`decode_proxy_header`].

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::{BufferTooSmall, DecodeError, HEADER_LEN, In, MessageKind, put_at, write_header};

/// Size of the fixed part of a connect/send message (after the header).
pub const NET_FIXED_LEN: usize = 68;
/// Size of a connect/send/accept message, header included (it has no variable part).
pub const NET_LEN: usize = HEADER_LEN + NET_FIXED_LEN;
/// Size of the counters tail of a close report.
pub const NET_CLOSE_TAIL_LEN: usize = 24;
/// Size of a close report, header included.
pub const NET_CLOSE_LEN: usize = NET_LEN + NET_CLOSE_TAIL_LEN;
/// Size of the fixed part of a DNS message.
pub const DNS_FIXED_LEN: usize = 28;
/// Longest query name carried (a DNS name is at most 253 characters); longer ones are cut and flagged.
pub const MAX_QUERY: usize = 255;
/// Most answers carried; more are dropped and flagged.
pub const MAX_ANSWERS: usize = 32;
/// Size of one answer on the wire.
pub const ANSWER_LEN: usize = 17;
/// A DNS message with a full query and every answer fits in this many bytes.
pub const DNS_MAX_LEN: usize = HEADER_LEN + DNS_FIXED_LEN + MAX_QUERY + MAX_ANSWERS * ANSWER_LEN;
/// Size of a network verdict, header included.
pub const NET_VERDICT_LEN: usize = HEADER_LEN + 28;

/// Connect flag: a non-blocking connect that returned `EINPROGRESS` (reported with result 0).
pub const NET_FLAG_IN_PROGRESS: u16 = 1 << 0;
/// Accept/close flag: the process accepted this connection (it did not open it).
pub const NET_FLAG_INBOUND: u16 = 1 << 1;
const NET_FLAGS_KNOWN: u16 = NET_FLAG_IN_PROGRESS | NET_FLAG_INBOUND;

/// DNS flag: the query name was cut to [`MAX_QUERY`].
pub const DNS_FLAG_QUERY_TRUNCATED: u16 = 1 << 0;
/// DNS flag: the resolver returned more than [`MAX_ANSWERS`] distinct addresses.
pub const DNS_FLAG_ANSWERS_TRUNCATED: u16 = 1 << 1;
const DNS_FLAGS_KNOWN: u16 = DNS_FLAG_QUERY_TRUNCATED | DNS_FLAG_ANSWERS_TRUNCATED;

/// The magic that starts the redirect header.
pub const PROXY_MAGIC: [u8; 4] = *b"RWPX";
/// The redirect header's version.
pub const PROXY_VERSION: u8 = 1;
/// Size of the redirect header.
pub const PROXY_HEADER_LEN: usize = 28;

wire_enum! {
    /// Which libc function made the connection or send (or accepted or closed it).
    pub enum NetOp {
        Connect = 1 => "connect",
        Sendto = 2 => "sendto",
        Sendmsg = 3 => "sendmsg",
        Accept = 4 => "accept",
        Accept4 = 5 => "accept4",
        Close = 6 => "close",
        Sendmmsg = 7 => "sendmmsg",
        /// A TCP socket started listening; `dst` is its local address.
        Listen = 8 => "listen",
    }
}

impl NetOp {
    /// True for the ops that describe a connection or a listener (accept, accept4, close, listen): always one-way
    /// reports, TCP only, `dst` the remote end (for listen: the listening address).
    pub fn is_connection(self) -> bool {
        matches!(self, NetOp::Accept | NetOp::Accept4 | NetOp::Close | NetOp::Listen)
    }
}

/// The counters a close report carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetClose {
    /// Payload bytes the peer acknowledged (`tcpi_bytes_acked` less the SYN and FIN it counts).
    pub bytes_out: u64,
    /// Payload bytes received (`tcpi_bytes_received` less the peer's FIN).
    pub bytes_in: u64,
    /// Microseconds since the connect or accept the hook saw.
    pub duration_us: u64,
}

wire_enum! {
    /// Which resolver function was called.
    pub enum DnsOp {
        Getaddrinfo = 1 => "getaddrinfo",
        Gethostbyname = 2 => "gethostbyname",
        Gethostbyname2 = 3 => "gethostbyname2",
    }
}

/// A transport protocol number as sent (IPPROTO_*).
pub const PROTO_TCP: u8 = 6;
/// UDP.
pub const PROTO_UDP: u8 = 17;

/// The fixed facts of a connect/send, as the hook knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetFixed {
    /// The libc function called.
    pub op: NetOp,
    /// `NET_FLAG_*`.
    pub flags: u16,
    /// The caller's pid.
    pub pid: u32,
    /// The calling thread.
    pub tid: u32,
    /// Real uid.
    pub uid: u32,
    /// Reports not sent before this one.
    pub dropped: u32,
    /// Bytes asked to send (sendto/sendmsg), 0 for connect.
    pub bytes: u32,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub protocol: u8,
    /// The destination.
    pub dst: SocketAddr,
    /// The local address, when known.
    pub src: Option<SocketAddr>,
    /// The counters of a close (op [`NetOp::Close`] only; ignored for other ops).
    pub close: Option<NetClose>,
}

/// A decoded connect/send message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetMessage {
    /// True for a request (the hook waits for a [`NetVerdict`]).
    pub wants_verdict: bool,
    /// The libc function called.
    pub op: NetOp,
    /// `NET_FLAG_*`.
    pub flags: u16,
    /// pid as claimed.
    pub pid: u32,
    /// Thread as claimed.
    pub tid: u32,
    /// Real uid as claimed.
    pub uid: u32,
    /// `None` in a request; `Some(0)` or `Some(errno)` in a report.
    pub result: Option<i32>,
    /// Reports not sent before this one.
    pub dropped: u32,
    /// Bytes asked to send.
    pub bytes: u32,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub protocol: u8,
    /// The destination.
    pub dst: SocketAddr,
    /// The local address when the hook knew it.
    pub src: Option<SocketAddr>,
    /// The counters of a close (`Some` exactly when `op` is [`NetOp::Close`]).
    pub close: Option<NetClose>,
}

/// The fixed facts of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsFixed {
    /// The resolver function called.
    pub op: DnsOp,
    /// The caller's pid.
    pub pid: u32,
    /// The calling thread.
    pub tid: u32,
    /// Real uid.
    pub uid: u32,
    /// Reports not sent before this one.
    pub dropped: u32,
    /// 0 or the resolver's error code.
    pub result: i32,
}

/// A decoded lookup. The query and answers borrow from the received buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsMessage<'a> {
    /// The resolver function called.
    pub op: DnsOp,
    /// `DNS_FLAG_*`.
    pub flags: u16,
    /// pid as claimed.
    pub pid: u32,
    /// Thread as claimed.
    pub tid: u32,
    /// Real uid as claimed.
    pub uid: u32,
    /// 0 or the resolver's error code.
    pub result: i32,
    /// Reports not sent before this one.
    pub dropped: u32,
    /// The name asked for.
    pub query: &'a [u8],
    answers: &'a [u8],
}

impl<'a> DnsMessage<'a> {
    /// The addresses the resolver returned, in its order.
    pub fn answers(&self) -> impl Iterator<Item = IpAddr> + 'a {
        self.answers.chunks_exact(ANSWER_LEN).filter_map(|a| {
            let (family, addr) = a.split_first()?;
            ip_from_wire(*family, addr)
        })
    }
}

/// The agent's answer to a network request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetVerdict {
    /// Go ahead.
    Allow,
    /// Fail the call with `errno` (0 = the op's default: `ECONNREFUSED` for connect, `EACCES` for sends).
    Deny {
        /// errno the hook sets.
        errno: i32,
    },
    /// Connect to the local proxy at `proxy` instead and write the redirect header first.
    Redirect {
        /// The proxy's address for hook-redirected connections.
        proxy: SocketAddr,
    },
}

fn family_of(addr: &SocketAddr) -> u8 {
    if addr.is_ipv4() { 4 } else { 6 }
}

fn addr_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            if let Some(dst) = b.get_mut(..4) {
                dst.copy_from_slice(&v4.octets());
            }
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn ip_from_wire(family: u8, bytes: &[u8]) -> Option<IpAddr> {
    match family {
        4 => {
            let b: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
            // The unused 12 bytes must be zero: one encoding per address.
            bytes.get(4..16)?.iter().all(|x| *x == 0).then_some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 => {
            let b: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// Writes a connect/send request (before the call) into `buf`; returns its length ([`NET_LEN`]).
pub fn encode_net_request(buf: &mut [u8], seq: u32, fixed: &NetFixed) -> Result<usize, BufferTooSmall> {
    encode_net(buf, MessageKind::NET_REQUEST, seq, fixed, -1)
}

/// Writes a connect/send/accept/close report (after the call; `errno` 0 on success) into `buf`; returns its
/// length: [`NET_CLOSE_LEN`] for a close (with `fixed.close`, zeros when `None`), else [`NET_LEN`].
pub fn encode_net_report(buf: &mut [u8], seq: u32, fixed: &NetFixed, errno: i32) -> Result<usize, BufferTooSmall> {
    encode_net(buf, MessageKind::NET_REPORT, seq, fixed, errno.clamp(0, 4095))
}

fn encode_net(buf: &mut [u8], kind: MessageKind, seq: u32, f: &NetFixed, result: i32) -> Result<usize, BufferTooSmall> {
    // Only a close report has the counters tail.
    let tail = kind == MessageKind::NET_REPORT && f.op == NetOp::Close;
    let len = if tail { NET_CLOSE_LEN } else { NET_LEN };
    if buf.len() < len {
        return Err(BufferTooSmall);
    }
    let h = HEADER_LEN;
    put_at(buf, h, &(f.op as u16).to_le_bytes())?;
    put_at(buf, h + 2, &(f.flags & NET_FLAGS_KNOWN).to_le_bytes())?;
    put_at(buf, h + 4, &f.pid.to_le_bytes())?;
    put_at(buf, h + 8, &f.tid.to_le_bytes())?;
    put_at(buf, h + 12, &f.uid.to_le_bytes())?;
    put_at(buf, h + 16, &result.to_le_bytes())?;
    put_at(buf, h + 20, &f.dropped.to_le_bytes())?;
    put_at(buf, h + 24, &f.bytes.to_le_bytes())?;
    put_at(buf, h + 28, &[family_of(&f.dst), f.protocol])?;
    put_at(buf, h + 30, &f.dst.port().to_le_bytes())?;
    put_at(buf, h + 32, &addr_bytes(f.dst.ip()))?;
    let (src_port, src_addr) = match f.src {
        // The source family follows the destination's (one socket); a mismatched one is dropped.
        Some(s) if s.is_ipv4() == f.dst.is_ipv4() => (s.port(), addr_bytes(s.ip())),
        _ => (0, [0u8; 16]),
    };
    put_at(buf, h + 48, &src_port.to_le_bytes())?;
    put_at(buf, h + 50, &0u16.to_le_bytes())?;
    put_at(buf, h + 52, &src_addr)?;
    if tail {
        let c = f.close.unwrap_or_default();
        const TAIL: usize = NET_LEN;
        put_at(buf, TAIL, &c.bytes_out.to_le_bytes())?;
        put_at(buf, const { TAIL + 8 }, &c.bytes_in.to_le_bytes())?;
        put_at(buf, const { TAIL + 16 }, &c.duration_us.to_le_bytes())?;
    }
    write_header(buf, kind, len, seq)?;
    Ok(len)
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

pub(crate) fn decode_net(body: &[u8], wants_verdict: bool) -> Result<NetMessage, DecodeError> {
    let (fixed, tail) = match body.len() {
        NET_FIXED_LEN => (body, None),
        n if n == NET_FIXED_LEN + NET_CLOSE_TAIL_LEN => {
            (body.get(..NET_FIXED_LEN).unwrap_or(&[]), body.get(NET_FIXED_LEN..))
        }
        _ => return Err(DecodeError::Short { need: NET_LEN, have: HEADER_LEN.saturating_add(body.len()) }),
    };
    let mut r = In { bytes: fixed, pos: 0 };
    let op = NetOp::from_u16(r.u16("op")?).ok_or(DecodeError::BadField("op"))?;
    if wants_verdict && op.is_connection() {
        // Accepts and closes are reported, never asked about.
        return Err(DecodeError::BadField("op"));
    }
    // The counters tail comes with a close report and nothing else.
    let close = match (op == NetOp::Close, tail) {
        (true, Some(t)) => Some(NetClose {
            bytes_out: u64_at(t, 0).ok_or(DecodeError::FieldOverrun("bytes_out"))?,
            bytes_in: u64_at(t, 8).ok_or(DecodeError::FieldOverrun("bytes_in"))?,
            duration_us: u64_at(t, 16).ok_or(DecodeError::FieldOverrun("duration_us"))?,
        }),
        (false, None) => None,
        (true, None) => return Err(DecodeError::Short { need: NET_CLOSE_LEN, have: NET_LEN }),
        (false, Some(_)) => return Err(DecodeError::FieldOverrun("trailing bytes")),
    };
    let flags = r.flags(NET_FLAGS_KNOWN)?;
    if op != NetOp::Connect && flags & NET_FLAG_IN_PROGRESS != 0 {
        return Err(DecodeError::BadField("flags"));
    }
    if !op.is_connection() && flags & NET_FLAG_INBOUND != 0 {
        return Err(DecodeError::BadField("flags"));
    }
    let pid = r.u32("pid")?;
    let tid = r.u32("tid")?;
    let uid = r.u32("uid")?;
    let result = match (wants_verdict, r.i32("result")?) {
        (true, -1) => None,
        (false, v @ 0..=4095) => Some(v),
        _ => return Err(DecodeError::BadField("result")),
    };
    let dropped = r.u32("dropped")?;
    let bytes = r.u32("bytes")?;
    let fam_proto = r.take(2, "family")?;
    let (family, protocol) = match fam_proto {
        [f, p] => (*f, *p),
        _ => return Err(DecodeError::FieldOverrun("family")),
    };
    let tcp_or_udp = protocol == PROTO_TCP || protocol == PROTO_UDP && !op.is_connection();
    if !tcp_or_udp {
        return Err(DecodeError::BadField("protocol"));
    }
    let dst_port = r.u16("dst_port")?;
    let dst_ip = ip_from_wire(family, r.take(16, "dst_addr")?).ok_or(DecodeError::BadField("dst_addr"))?;
    let src_port = r.u16("src_port")?;
    if r.u16("reserved")? != 0 {
        return Err(DecodeError::BadField("reserved"));
    }
    let src_raw = r.take(16, "src_addr")?;
    let src_ip = ip_from_wire(family, src_raw).ok_or(DecodeError::BadField("src_addr"))?;
    let src = (src_port != 0 || src_raw.iter().any(|b| *b != 0)).then_some(SocketAddr::new(src_ip, src_port));
    Ok(NetMessage {
        wants_verdict,
        op,
        flags,
        pid,
        tid,
        uid,
        result,
        dropped,
        bytes,
        protocol,
        dst: SocketAddr::new(dst_ip, dst_port),
        src,
        close,
    })
}

/// Writes a lookup report into `buf`: the query (cut to [`MAX_QUERY`]) and the distinct addresses of `answers`
/// (up to [`MAX_ANSWERS`]). Returns the length.
pub fn encode_dns(
    buf: &mut [u8],
    seq: u32,
    fixed: &DnsFixed,
    query: &[u8],
    answers: impl IntoIterator<Item = IpAddr>,
) -> Result<usize, BufferTooSmall> {
    let start = HEADER_LEN + DNS_FIXED_LEN;
    if buf.len() < start {
        return Err(BufferTooSmall);
    }
    let mut flags = 0u16;
    let query_end = query.iter().position(|b| *b == 0).unwrap_or(query.len());
    let mut q = query.get(..query_end).unwrap_or(&[]);
    let room = buf.len().saturating_sub(start).min(MAX_QUERY);
    if q.len() > room {
        q = q.get(..room).unwrap_or(&[]);
        flags |= DNS_FLAG_QUERY_TRUNCATED;
    }
    put_at(buf, start, q)?;
    let answers_at = start.saturating_add(q.len());
    let mut count = 0usize;
    for ip in answers {
        let entry_bytes = addr_bytes(ip);
        let family = if ip.is_ipv4() { 4u8 } else { 6u8 };
        let written = buf.get(answers_at..answers_at.saturating_add(count.saturating_mul(ANSWER_LEN))).unwrap_or(&[]);
        let duplicate = written
            .chunks_exact(ANSWER_LEN)
            .any(|a| a.first() == Some(&family) && a.get(1..) == Some(&entry_bytes[..]));
        if duplicate {
            continue;
        }
        let at = answers_at.saturating_add(count.saturating_mul(ANSWER_LEN));
        if count >= MAX_ANSWERS || at.saturating_add(ANSWER_LEN) > buf.len() {
            flags |= DNS_FLAG_ANSWERS_TRUNCATED;
            break;
        }
        put_at(buf, at, &[family])?;
        put_at(buf, at.saturating_add(1), &entry_bytes)?;
        count = count.saturating_add(1);
    }
    let len = answers_at.saturating_add(count.saturating_mul(ANSWER_LEN));
    let h = HEADER_LEN;
    put_at(buf, h, &(fixed.op as u16).to_le_bytes())?;
    put_at(buf, h + 2, &flags.to_le_bytes())?;
    put_at(buf, h + 4, &fixed.pid.to_le_bytes())?;
    put_at(buf, h + 8, &fixed.tid.to_le_bytes())?;
    put_at(buf, h + 12, &fixed.uid.to_le_bytes())?;
    put_at(buf, h + 16, &fixed.result.to_le_bytes())?;
    put_at(buf, h + 20, &fixed.dropped.to_le_bytes())?;
    put_at(buf, h + 24, &u16::try_from(q.len()).map_err(|_| BufferTooSmall)?.to_le_bytes())?;
    put_at(buf, h + 26, &u16::try_from(count).map_err(|_| BufferTooSmall)?.to_le_bytes())?;
    write_header(buf, MessageKind::NET_DNS, len, seq)?;
    Ok(len)
}

pub(crate) fn decode_dns(body: &[u8]) -> Result<DnsMessage<'_>, DecodeError> {
    let mut r = In::at_least(body, DNS_FIXED_LEN)?;
    let op = DnsOp::from_u16(r.u16("op")?).ok_or(DecodeError::BadField("op"))?;
    let flags = r.flags(DNS_FLAGS_KNOWN)?;
    let pid = r.u32("pid")?;
    let tid = r.u32("tid")?;
    let uid = r.u32("uid")?;
    let result = r.i32("result")?;
    let dropped = r.u32("dropped")?;
    let query_len = usize::from(r.u16("query_len")?);
    let count = usize::from(r.u16("answer_count")?);
    if query_len > MAX_QUERY {
        return Err(DecodeError::BadField("query_len"));
    }
    if count > MAX_ANSWERS {
        return Err(DecodeError::BadField("answer_count"));
    }
    let query = r.take(query_len, "query")?;
    let answers = r.take(count.saturating_mul(ANSWER_LEN), "answers")?;
    if r.pos != body.len() {
        return Err(DecodeError::FieldOverrun("trailing bytes"));
    }
    if query.is_empty() || query.contains(&0) {
        return Err(DecodeError::BadField("query"));
    }
    for a in answers.chunks_exact(ANSWER_LEN) {
        let (family, addr) = a.split_first().ok_or(DecodeError::BadField("answers"))?;
        ip_from_wire(*family, addr).ok_or(DecodeError::BadField("answers"))?;
    }
    Ok(DnsMessage { op, flags, pid, tid, uid, result, dropped, query, answers })
}

/// Writes a network verdict for request `seq`; returns its length ([`NET_VERDICT_LEN`]).
pub fn encode_net_verdict(buf: &mut [u8], seq: u32, verdict: NetVerdict) -> Result<usize, BufferTooSmall> {
    if buf.len() < NET_VERDICT_LEN {
        return Err(BufferTooSmall);
    }
    let (code, errno, proxy): (u16, i32, Option<SocketAddr>) = match verdict {
        NetVerdict::Allow => (1, 0, None),
        NetVerdict::Deny { errno } => (2, errno, None),
        NetVerdict::Redirect { proxy } => (3, 0, Some(proxy)),
    };
    let h = HEADER_LEN;
    put_at(buf, h, &code.to_le_bytes())?;
    put_at(buf, h + 2, &0u16.to_le_bytes())?;
    put_at(buf, h + 4, &errno.to_le_bytes())?;
    match proxy {
        Some(p) => {
            put_at(buf, h + 8, &[family_of(&p), 0])?;
            put_at(buf, h + 10, &p.port().to_le_bytes())?;
            put_at(buf, h + 12, &addr_bytes(p.ip()))?;
        }
        None => put_at(buf, h + 8, &[0u8; 20])?,
    }
    write_header(buf, MessageKind::NET_VERDICT, NET_VERDICT_LEN, seq)?;
    Ok(NET_VERDICT_LEN)
}

pub(crate) fn decode_net_verdict(body: &[u8]) -> Result<NetVerdict, DecodeError> {
    if body.len() != NET_VERDICT_LEN.saturating_sub(HEADER_LEN) {
        return Err(DecodeError::Short { need: NET_VERDICT_LEN, have: HEADER_LEN.saturating_add(body.len()) });
    }
    let mut r = In { bytes: body, pos: 0 };
    let code = r.u16("verdict")?;
    if r.u16("reserved")? != 0 {
        return Err(DecodeError::BadField("reserved"));
    }
    let errno = r.i32("errno")?;
    let fam = r.take(2, "family")?;
    let family = fam.first().copied().unwrap_or(0);
    let port = r.u16("port")?;
    let addr = r.take(16, "addr")?;
    match code {
        1 => Ok(NetVerdict::Allow),
        2 => Ok(NetVerdict::Deny { errno }),
        3 => {
            let ip = ip_from_wire(family, addr).ok_or(DecodeError::BadField("addr"))?;
            if port == 0 {
                return Err(DecodeError::BadField("port"));
            }
            Ok(NetVerdict::Redirect { proxy: SocketAddr::new(ip, port) })
        }
        _ => Err(DecodeError::BadField("verdict")),
    }
}

/// Writes the redirect header a hooked connect sends the proxy before any byte of the application:
/// `"RWPX" | version u8 = 1 | family u8 (4|6) | port u16 BE | addr 16 bytes (IPv4 in the first 4) | pid u32 BE`,
/// with the destination the application asked for and its pid. Returns [`PROXY_HEADER_LEN`].
pub fn encode_proxy_header(buf: &mut [u8], original_dst: SocketAddr, pid: u32) -> Result<usize, BufferTooSmall> {
    if buf.len() < PROXY_HEADER_LEN {
        return Err(BufferTooSmall);
    }
    put_at(buf, 0, &PROXY_MAGIC)?;
    put_at(buf, 4, &[PROXY_VERSION, family_of(&original_dst)])?;
    put_at(buf, 6, &original_dst.port().to_be_bytes())?;
    put_at(buf, 8, &addr_bytes(original_dst.ip()))?;
    put_at(buf, 24, &pid.to_be_bytes())?;
    Ok(PROXY_HEADER_LEN)
}

/// Reads a redirect header: (original destination, pid as the hooked process claims it). Untrusted like every
/// hook message: the pid is a claim, and a wrong magic, version or family is an error.
pub fn decode_proxy_header(bytes: &[u8]) -> Result<(SocketAddr, u32), DecodeError> {
    let b = bytes.get(..PROXY_HEADER_LEN).ok_or(DecodeError::Short { need: PROXY_HEADER_LEN, have: bytes.len() })?;
    if b.get(..4) != Some(&PROXY_MAGIC[..]) {
        return Err(DecodeError::BadMagic);
    }
    let version = b.get(4).copied().unwrap_or(0);
    if version != PROXY_VERSION {
        return Err(DecodeError::UnsupportedVersion(u16::from(version)));
    }
    let family = b.get(5).copied().unwrap_or(0);
    let port = u16::from_be_bytes(b.get(6..8).and_then(|p| p.try_into().ok()).ok_or(DecodeError::BadField("port"))?);
    let ip = ip_from_wire(family, b.get(8..24).unwrap_or(&[])).ok_or(DecodeError::BadField("addr"))?;
    let pid = u32::from_be_bytes(b.get(24..28).and_then(|p| p.try_into().ok()).ok_or(DecodeError::BadField("pid"))?);
    Ok((SocketAddr::new(ip, port), pid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;
    use crate::{Message, decode};
    use std::vec::Vec;

    fn fixed(op: NetOp, dst: &str) -> NetFixed {
        NetFixed {
            op,
            flags: 0,
            pid: 10,
            tid: 11,
            uid: 1000,
            dropped: 3,
            bytes: 0,
            protocol: PROTO_TCP,
            dst: dst.parse().unwrap(),
            src: None,
            close: None,
        }
    }

    fn net(bytes: &[u8]) -> NetMessage {
        match decode(bytes).unwrap().1 {
            Message::Net(m) => m,
            other => panic!("not a net message: {other:?}"),
        }
    }

    #[test]
    fn connect_request_and_report_round_trip() {
        let mut buf = [0u8; NET_LEN];
        let f = fixed(NetOp::Connect, "10.1.2.3:8080");
        let n = encode_net_request(&mut buf, 4, &f).unwrap();
        let m = net(&buf[..n]);
        assert!(m.wants_verdict);
        assert_eq!((m.op, m.result, m.dst, m.src, m.pid, m.uid), (NetOp::Connect, None, f.dst, None, 10, 1000));
        let f = NetFixed {
            src: Some("[::1]:5555".parse().unwrap()),
            dst: "[fe80::1]:443".parse().unwrap(),
            flags: NET_FLAG_IN_PROGRESS,
            ..f
        };
        let n = encode_net_report(&mut buf, 5, &f, 0).unwrap();
        let m = net(&buf[..n]);
        assert_eq!((m.result, m.dst, m.src, m.flags), (Some(0), f.dst, f.src, NET_FLAG_IN_PROGRESS));
        assert_eq!(decode(&buf[..n]).unwrap().0.kind, MessageKind::NET_REPORT);
    }

    #[test]
    fn a_source_of_the_other_family_is_dropped() {
        let mut buf = [0u8; NET_LEN];
        let f = NetFixed { src: Some("[::1]:1".parse().unwrap()), ..fixed(NetOp::Sendto, "1.2.3.4:53") };
        let n = encode_net_report(&mut buf, 1, &f, 0).unwrap();
        assert_eq!(net(&buf[..n]).src, None);
    }

    #[test]
    fn dns_round_trips_with_distinct_answers() {
        let mut buf = [0u8; DNS_MAX_LEN];
        let f = DnsFixed { op: DnsOp::Getaddrinfo, pid: 1, tid: 2, uid: 0, dropped: 0, result: 0 };
        let answers: Vec<IpAddr> =
            ["10.0.0.1", "10.0.0.1", "::1", "10.0.0.2"].iter().map(|s| s.parse().unwrap()).collect();
        let n = encode_dns(&mut buf, 3, &f, b"db.example\0junk", answers).unwrap();
        let Message::Dns(m) = decode(&buf[..n]).unwrap().1 else { panic!("not dns") };
        assert_eq!(m.query, b"db.example");
        let got: Vec<IpAddr> = m.answers().collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], "::1".parse::<IpAddr>().unwrap());
        assert_eq!(m.flags, 0);
    }

    #[test]
    fn dns_cuts_long_queries_and_many_answers() {
        let mut buf = [0u8; DNS_MAX_LEN];
        let f = DnsFixed { op: DnsOp::Gethostbyname, pid: 1, tid: 2, uid: 0, dropped: 0, result: 0 };
        let q = [b'a'; 400];
        let answers = (0..40u8).map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)));
        let n = encode_dns(&mut buf, 3, &f, &q, answers).unwrap();
        let Message::Dns(m) = decode(&buf[..n]).unwrap().1 else { panic!("not dns") };
        assert_eq!((m.query.len(), m.answers().count()), (MAX_QUERY, MAX_ANSWERS));
        assert_eq!(m.flags, DNS_FLAG_QUERY_TRUNCATED | DNS_FLAG_ANSWERS_TRUNCATED);
    }

    #[test]
    fn verdicts_round_trip_including_redirect() {
        let mut buf = [0u8; NET_VERDICT_LEN];
        for v in [
            NetVerdict::Allow,
            NetVerdict::Deny { errno: 111 },
            NetVerdict::Redirect { proxy: "127.0.0.1:4100".parse().unwrap() },
            NetVerdict::Redirect { proxy: "[::1]:4100".parse().unwrap() },
        ] {
            let n = encode_net_verdict(&mut buf, 8, v).unwrap();
            let (h, m) = decode(&buf[..n]).unwrap();
            assert_eq!((h.kind, h.seq, m), (MessageKind::NET_VERDICT, 8, Message::NetVerdict(v)));
        }
    }

    #[test]
    fn proxy_header_has_the_documented_layout() {
        let mut buf = [0u8; PROXY_HEADER_LEN];
        let dst: SocketAddr = "10.9.8.7:443".parse().unwrap();
        assert_eq!(encode_proxy_header(&mut buf, dst, 0x0102_0304).unwrap(), 28);
        assert_eq!(&buf[..4], b"RWPX");
        assert_eq!(&buf[4..8], &[1, 4, 0x01, 0xbb]);
        assert_eq!(&buf[8..12], &[10, 9, 8, 7]);
        assert!(buf[12..24].iter().all(|b| *b == 0));
        assert_eq!(&buf[24..], &[1, 2, 3, 4]);
        assert_eq!(decode_proxy_header(&buf).unwrap(), (dst, 0x0102_0304));
        let mut bad = buf;
        bad[5] = 5;
        assert!(decode_proxy_header(&bad).is_err());
        assert!(decode_proxy_header(&buf[..27]).is_err());
    }

    #[test]
    fn accept_and_sendmmsg_round_trip_at_the_old_length() {
        let mut buf = [0u8; NET_CLOSE_LEN];
        let f = NetFixed {
            flags: NET_FLAG_INBOUND,
            src: Some("127.0.0.1:8080".parse().unwrap()),
            ..fixed(NetOp::Accept4, "127.0.0.1:40000")
        };
        let n = encode_net_report(&mut buf, 1, &f, 0).unwrap();
        assert_eq!(n, NET_LEN, "only a close carries the tail");
        let m = net(&buf[..n]);
        assert_eq!((m.op, m.flags, m.dst, m.src, m.close), (NetOp::Accept4, NET_FLAG_INBOUND, f.dst, f.src, None));
        let f = NetFixed { protocol: PROTO_UDP, bytes: 32, ..fixed(NetOp::Sendmmsg, "10.0.0.1:53") };
        let n = encode_net_request(&mut buf, 2, &f).unwrap();
        let m = net(&buf[..n]);
        assert_eq!((m.op, m.wants_verdict, m.bytes), (NetOp::Sendmmsg, true, 32));
    }

    #[test]
    fn close_reports_carry_the_counters_tail() {
        let mut buf = [0u8; NET_CLOSE_LEN];
        let counters = NetClose { bytes_out: 5_000_000_000, bytes_in: 7, duration_us: 123_456 };
        let f = NetFixed {
            flags: NET_FLAG_INBOUND,
            src: Some("[::1]:80".parse().unwrap()),
            close: Some(counters),
            ..fixed(NetOp::Close, "[::1]:51000")
        };
        let n = encode_net_report(&mut buf, 9, &f, 0).unwrap();
        assert_eq!(n, NET_CLOSE_LEN);
        let m = net(&buf[..n]);
        assert_eq!((m.op, m.close, m.src, m.flags), (NetOp::Close, Some(counters), f.src, NET_FLAG_INBOUND));
        // A close without counters goes out with zeros; a close never goes out as a request (the decoder refuses).
        let n = encode_net_report(&mut buf, 9, &NetFixed { close: None, ..f }, 0).unwrap();
        assert_eq!(net(&buf[..n]).close, Some(NetClose::default()));
        let n = encode_net_request(&mut buf, 9, &f).unwrap();
        assert_eq!(n, NET_LEN);
        assert_eq!(decode(&buf[..n]).map(|_| ()), Err(DecodeError::BadField("op")));
    }

    #[test]
    fn connection_ops_lie_checks() {
        let mut buf = [0u8; NET_CLOSE_LEN];
        let close = NetFixed { close: Some(NetClose::default()), ..fixed(NetOp::Close, "1.2.3.4:1") };
        let n = encode_net_report(&mut buf, 1, &close, 0).unwrap();
        let good = buf[..n].to_vec();
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut m = good.clone();
            f(&mut m);
            decode(&m).map(|_| ())
        };
        let set_len = |m: &mut Vec<u8>| {
            let len = m.len() as u32;
            m[8..12].copy_from_slice(&len.to_le_bytes());
        };
        // A close cut to the old length (its tail missing), a connect with a tail, UDP accepts and closes, the
        // inbound flag on a connect: all refused.
        assert!(matches!(
            with(&|m| {
                m.truncate(NET_LEN);
                set_len(m)
            }),
            Err(DecodeError::Short { .. })
        ));
        assert_eq!(with(&|m| m[HEADER_LEN] = NetOp::Connect as u8), Err(DecodeError::FieldOverrun("trailing bytes")));
        assert_eq!(with(&|m| m[HEADER_LEN + 29] = PROTO_UDP), Err(DecodeError::BadField("protocol")));
        assert!(matches!(
            with(&|m| {
                m.push(0);
                set_len(m)
            }),
            Err(DecodeError::Short { .. })
        ));
        let n = encode_net_report(
            &mut buf,
            1,
            &NetFixed { flags: NET_FLAG_INBOUND, ..fixed(NetOp::Connect, "1.2.3.4:1") },
            0,
        )
        .unwrap();
        assert_eq!(decode(&buf[..n]).map(|_| ()), Err(DecodeError::BadField("flags")));
        let n =
            encode_net_report(&mut buf, 1, &NetFixed { protocol: PROTO_UDP, ..fixed(NetOp::Accept, "1.2.3.4:1") }, 0)
                .unwrap();
        assert_eq!(decode(&buf[..n]).map(|_| ()), Err(DecodeError::BadField("protocol")));
    }

    #[test]
    fn fuzz_mutated_and_cut_network_messages_never_panic() {
        let mut rng = Rng(0x5eed_1234_abcd_ef01);
        let mut goods = Vec::new();
        let mut buf = [0u8; NET_CLOSE_LEN];
        for op in NetOp::ALL {
            let f = NetFixed {
                flags: if op.is_connection() { NET_FLAG_INBOUND } else { 0 },
                src: Some("10.0.0.2:4000".parse().unwrap()),
                close: Some(NetClose { bytes_out: 1, bytes_in: 2, duration_us: 3 }),
                ..fixed(op, "10.0.0.1:80")
            };
            let n = encode_net_report(&mut buf, 1, &f, 0).unwrap();
            assert_eq!(net(&buf[..n]).op, op, "{op:?} round-trips");
            goods.push(buf[..n].to_vec());
        }
        let mut accepted = 0u32;
        for round in 0..40_000u32 {
            let good = &goods[(rng.next() as usize) % goods.len()];
            let mut m = if round % 2 == 0 {
                good[..(rng.next() as usize) % (good.len() + 1)].to_vec()
            } else {
                let mut v = good.clone();
                for _ in 0..1 + rng.next() % 3 {
                    let i = (rng.next() as usize) % v.len();
                    v[i] = rng.next() as u8;
                }
                v
            };
            if round % 7 == 0 && m.len() >= HEADER_LEN {
                // Keep the header's length honest so the body checks are reached.
                let len = m.len() as u32;
                m[8..12].copy_from_slice(&len.to_le_bytes());
            }
            if let Ok((h, Message::Net(msg))) = decode(&m) {
                accepted += 1;
                assert_eq!(h.len as usize, m.len());
                assert_eq!(msg.close.is_some(), msg.op == NetOp::Close);
                assert_eq!(m.len(), if msg.op == NetOp::Close { NET_CLOSE_LEN } else { NET_LEN });
                assert!(!msg.op.is_connection() || msg.protocol == PROTO_TCP && !msg.wants_verdict);
            }
        }
        assert!(accepted < 40_000, "garbage must mostly be rejected");
    }

    #[test]
    fn lies_are_errors() {
        let mut buf = [0u8; NET_LEN];
        let n = encode_net_report(&mut buf, 1, &fixed(NetOp::Connect, "1.2.3.4:1"), 0).unwrap();
        let good = buf[..n].to_vec();
        let bad = |at: usize, v: u8| {
            let mut m = good.clone();
            m[at] = v;
            decode(&m).map(|_| ())
        };
        assert_eq!(bad(HEADER_LEN, 9), Err(DecodeError::BadField("op")));
        assert_eq!(bad(HEADER_LEN + 2, 0x40), Err(DecodeError::BadField("flags")));
        assert_eq!(bad(HEADER_LEN + 29, 1), Err(DecodeError::BadField("protocol")));
        assert_eq!(bad(HEADER_LEN + 28, 5), Err(DecodeError::BadField("dst_addr")));
        assert_eq!(bad(HEADER_LEN + 40, 1), Err(DecodeError::BadField("dst_addr")), "v4 padding must be 0");
        assert_eq!(bad(HEADER_LEN + 19, 0x80), Err(DecodeError::BadField("result")));
        let mut buf = [0u8; DNS_MAX_LEN];
        let f = DnsFixed { op: DnsOp::Getaddrinfo, pid: 1, tid: 2, uid: 0, dropped: 0, result: 0 };
        let n = encode_dns(&mut buf, 3, &f, b"x", [IpAddr::V4(Ipv4Addr::LOCALHOST)]).unwrap();
        let mut m = buf[..n].to_vec();
        m[HEADER_LEN + DNS_FIXED_LEN + 1] = 7;
        assert_eq!(decode(&m).map(|_| ()), Err(DecodeError::BadField("answers")));
        assert!(encode_dns(&mut buf, 3, &f, b"", []).is_ok());
        let n = encode_dns(&mut buf, 3, &f, b"", []).unwrap();
        assert_eq!(decode(&buf[..n]).map(|_| ()), Err(DecodeError::BadField("query")));
    }
}
