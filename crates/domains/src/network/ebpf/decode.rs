//! Ring-buffer samples of the network monitor (`conn_event`, `dns_event` from `bpf/network/monitor.h`) into
//! contract events. Pure: no I/O and no shared state, so it runs inside the ring-buffer callback; the name cache
//! is applied afterwards by the poll loop.
//!
//! Orientation: the kernel reports the local end as `saddr:sport` and the remote end as `daddr:dport`. Events put
//! the initiator in `src` (OCSF's src_endpoint): outbound connections have `src` local, inbound (`accept`, the
//! `close` of an accepted socket) have `src` remote. DNS packets keep the packet's own source and destination.

use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ringwatch_core::event::{DnsInfo, NetworkInfo, Timestamp};
use ringwatch_core::guid::{process_guid, start_time_from_ticks, ticks_from_boot_ns};
use ringwatch_core::{Activity, Backend, Domain, Event, Mode, SourceKind};

use super::dns;
use super::skel::types;

// Mirrors of monitor.h constants (#defines do not reach BTF).
pub(super) const KIND_NET_CONN: u16 = 32;
pub(super) const KIND_NET_DNS: u16 = 33;
const NET_CONNECT: u8 = 1;
const NET_ACCEPT: u8 = 2;
const NET_LISTEN: u8 = 3;
const NET_CLOSE: u8 = 4;
const NET_SEND: u8 = 5;
const F_UNATTRIBUTED: u8 = 0x01;
const F_REFUSED: u8 = 0x02;
const F_INBOUND: u8 = 0x04;
const F_OUTBOUND: u8 = 0x08;
const F_NO_START: u8 = 0x10;
const DNS_EGRESS: u8 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// `RW_DNS_PAYLOAD_MAX`.
const DNS_PAYLOAD_MAX: usize = 512;

// SAFETY: rw_hdr is a #[repr(C)] struct of integers generated from BTF; every bit pattern is a valid value.
unsafe impl plain::Plain for types::rw_hdr {}
// SAFETY: conn_event is #[repr(C)] of integers, integer arrays, rw_hdr and rw_proc_id; every bit pattern is valid.
unsafe impl plain::Plain for types::conn_event {}
// SAFETY: dns_event is #[repr(C)] of integers, integer arrays, rw_hdr and rw_proc_id; every bit pattern is valid.
unsafe impl plain::Plain for types::dns_event {}

// The same pins as the _Static_asserts in monitor.h/task.h/common.h: a layout change fails to compile on both sides.
const _: () = assert!(size_of::<types::rw_hdr>() == 16 && offset_of!(types::rw_hdr, kind) == 12);
const _: () = assert!(size_of::<types::rw_proc_id>() == 40 && offset_of!(types::rw_proc_id, comm) == 24);
const _: () = assert!(size_of::<types::sock_owner>() == 72 && offset_of!(types::sock_owner, flags) == 68);
const _: () = assert!(size_of::<types::conn_event>() == 144 && offset_of!(types::conn_event, id) == 16);
const _: () = assert!(offset_of!(types::conn_event, saddr) == 88 && offset_of!(types::conn_event, uid) == 120);
const _: () = assert!(offset_of!(types::conn_event, sport) == 132 && offset_of!(types::conn_event, activity) == 139);
const _: () = assert!(offset_of!(types::conn_event, error) == 140);
const _: () = assert!(size_of::<types::dns_event>() == 632 && offset_of!(types::dns_event, saddr) == 64);
const _: () = assert!(offset_of!(types::dns_event, payload_len) == 114 && offset_of!(types::dns_event, payload) == 120);

/// Turns samples into events.
#[derive(Debug)]
pub(super) struct Decoder {
    /// CLOCK_REALTIME - CLOCK_BOOTTIME at start.
    pub(super) realtime_offset_ns: i128,
}

fn backend() -> Backend {
    Backend { mode: Mode::Kernel, source: SourceKind::Ebpf }
}

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// An address from the kernel's 16-byte field: IPv4 in the first 4 bytes.
fn ip(family: u16, bytes: &[u8; 16]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
        // A v4-mapped address on a dual-stack socket is shown as the IPv4 address it stands for.
        AF_INET6 => Some(Ipv6Addr::from(*bytes).to_canonical()),
        _ => None,
    }
}

fn protocol(p: u8) -> &'static str {
    match p {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        _ => "other",
    }
}

/// The errno name of a connect that never got established: the socket's `sk_err` (`ECONNREFUSED` after a RST,
/// `ETIMEDOUT` after the SYN retries, `EHOSTUNREACH`/`ENETUNREACH` after an ICMP error); 0 means no error was set
/// because the socket was closed while connecting (by its process, or a local failure): `ECONNABORTED`.
fn connect_error(sk_err: u32) -> String {
    let n = i32::try_from(sk_err).unwrap_or(0);
    match nix::errno::Errno::from_raw(n) {
        _ if n == 0 => "ECONNABORTED".into(),
        nix::errno::Errno::UnknownErrno => format!("E{n}"),
        e => format!("{e:?}"),
    }
}

impl Decoder {
    /// One sample -> one event.
    pub(super) fn decode(&self, data: &[u8]) -> Result<Event, &'static str> {
        let hdr_bytes = data.get(..size_of::<types::rw_hdr>()).ok_or("shorter than rw_hdr")?;
        let hdr: &types::rw_hdr = plain::from_bytes(hdr_bytes).map_err(|_| "misaligned rw_hdr")?;
        if hdr.size as usize != data.len() {
            return Err("rw_hdr.size differs from the sample length");
        }
        match hdr.kind {
            KIND_NET_CONN => self.conn(plain::from_bytes(data).map_err(|_| "conn_event too short or misaligned")?),
            KIND_NET_DNS => self.dns(plain::from_bytes(data).map_err(|_| "dns_event too short or misaligned")?),
            _ => Err("unknown kind"),
        }
    }

    fn time(&self, ktime: u64) -> Timestamp {
        let ns = i128::from(ktime) + self.realtime_offset_ns;
        Timestamp(u64::try_from(ns.max(0)).unwrap_or(u64::MAX))
    }

    /// A network event stamped with the record's time, carrying its process unless the kernel had none.
    #[allow(clippy::too_many_arguments)] // the record's fields, named; a struct would only rename them
    fn event(
        &self,
        activity: Activity,
        hdr: &types::rw_hdr,
        id: &types::rw_proc_id,
        uid: u32,
        euid: u32,
        gid: u32,
    ) -> Event {
        let mut ev = Event::new(Domain::Network, activity, backend());
        ev.time = self.time(hdr.ktime);
        if hdr.flags & F_UNATTRIBUTED == 0 && id.pid != 0 {
            let p = &mut ev.process;
            p.pid = id.pid;
            p.tid = id.tid;
            p.ppid = id.ppid;
            p.start_ticks = ticks_from_boot_ns(id.start_ns);
            p.guid = process_guid(id.pid, p.start_ticks);
            p.start_time = start_time_from_ticks(p.start_ticks);
            p.comm = cstr(&id.comm);
            p.uid = uid;
            p.euid = euid;
            p.gid = gid;
        } else {
            ev.process.partial = true;
        }
        ev
    }

    fn conn(&self, e: &types::conn_event) -> Result<Event, &'static str> {
        let flags = e.hdr.flags;
        let activity = match e.activity {
            NET_CONNECT => Activity::Connect,
            NET_ACCEPT => Activity::Accept,
            NET_LISTEN => Activity::Listen,
            NET_CLOSE => Activity::Close,
            NET_SEND => Activity::Send,
            _ => return Err("unknown network activity"),
        };
        let local = ip(e.family, &e.saddr).ok_or("unknown address family")?;
        let remote = ip(e.family, &e.daddr).ok_or("unknown address family")?;
        let mut ev = self.event(activity, &e.hdr, &e.id, e.uid, e.euid, e.gid);
        let unspecified = |a: IpAddr| (!a.is_unspecified()).then(|| a.to_string());
        let mut net = NetworkInfo { protocol: protocol(e.protocol).to_owned(), ..NetworkInfo::default() };
        if activity == Activity::Listen {
            net.src_ip = Some(local.to_string());
            net.src_port = Some(e.sport);
        } else if flags & F_INBOUND != 0 {
            net.direction = Some("inbound".into());
            (net.src_ip, net.src_port) = (Some(remote.to_string()), Some(e.dport));
            (net.dst_ip, net.dst_port) = (Some(local.to_string()), Some(e.sport));
        } else {
            net.direction = (flags & F_OUTBOUND != 0).then(|| "outbound".into());
            // UDP: the source address is known only when the socket was bound or the sender chose it.
            (net.src_ip, net.src_port) = (unspecified(local), (e.sport != 0).then_some(e.sport));
            (net.dst_ip, net.dst_port) = (Some(remote.to_string()), Some(e.dport));
        }
        if activity == Activity::Close {
            net.bytes_out = Some(e.bytes_out);
            net.bytes_in = Some(e.bytes_in);
            net.duration_us = (flags & F_NO_START == 0).then_some(e.duration_ns / 1000);
        }
        if flags & F_REFUSED != 0 {
            // Never established (no `close` follows): why, from the socket's sk_err.
            net.error = Some(connect_error(e.error));
        }
        ev.network = Some(net);
        Ok(ev)
    }

    fn dns(&self, e: &types::dns_event) -> Result<Event, &'static str> {
        let len = usize::from(e.payload_len);
        if len > DNS_PAYLOAD_MAX {
            return Err("dns_event payload_len beyond the payload");
        }
        let message = dns::parse(&e.payload[..len], e.protocol == IPPROTO_TCP).ok_or("DNS payload does not parse")?;
        let mut ev = self.event(Activity::Dns, &e.hdr, &e.id, e.uid, e.euid, e.gid);
        let src = ip(e.family, &e.saddr).ok_or("unknown address family")?;
        let dst = ip(e.family, &e.daddr).ok_or("unknown address family")?;
        ev.network = Some(NetworkInfo {
            protocol: protocol(e.protocol).to_owned(),
            src_ip: Some(src.to_string()),
            src_port: Some(e.sport),
            dst_ip: Some(dst.to_string()),
            dst_port: Some(e.dport),
            direction: Some(if e.direction == DNS_EGRESS { "outbound" } else { "inbound" }.into()),
            dns: Some(DnsInfo { query: message.query, answers: message.answers }),
            ..NetworkInfo::default()
        });
        Ok(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sample buffers with the 8-byte alignment the ring buffer guarantees.
    #[repr(C, align(8))]
    struct Sample([u8; 640]);

    fn put(buf: &mut Sample, off: usize, bytes: &[u8]) {
        buf.0[off..off + bytes.len()].copy_from_slice(bytes);
    }

    fn conn_sample(activity: u8, flags: u8) -> Sample {
        let mut b = Sample([0; 640]);
        let n = size_of::<types::conn_event>();
        put(&mut b, 0, &5_000u64.to_ne_bytes());
        put(&mut b, 8, &(n as u32).to_ne_bytes());
        put(&mut b, 12, &KIND_NET_CONN.to_ne_bytes());
        b.0[14] = flags;
        put(&mut b, offset_of!(types::conn_event, id.start_ns), &1_000_000_000u64.to_ne_bytes());
        put(&mut b, offset_of!(types::conn_event, id.pid), &42u32.to_ne_bytes());
        put(&mut b, offset_of!(types::conn_event, id.tid), &43u32.to_ne_bytes());
        put(&mut b, offset_of!(types::conn_event, id.comm), b"curl\0");
        put(&mut b, offset_of!(types::conn_event, bytes_out), &100u64.to_ne_bytes());
        put(&mut b, offset_of!(types::conn_event, bytes_in), &2000u64.to_ne_bytes());
        put(&mut b, offset_of!(types::conn_event, duration_ns), &3_000_000u64.to_ne_bytes());
        put(&mut b, offset_of!(types::conn_event, saddr), &[10, 77, 0, 2]);
        put(&mut b, offset_of!(types::conn_event, daddr), &[10, 77, 0, 1]);
        put(&mut b, offset_of!(types::conn_event, uid), &1000u32.to_ne_bytes());
        put(&mut b, offset_of!(types::conn_event, sport), &40000u16.to_ne_bytes());
        put(&mut b, offset_of!(types::conn_event, dport), &80u16.to_ne_bytes());
        put(&mut b, offset_of!(types::conn_event, family), &AF_INET.to_ne_bytes());
        b.0[offset_of!(types::conn_event, protocol)] = IPPROTO_TCP;
        b.0[offset_of!(types::conn_event, activity)] = activity;
        b
    }

    fn decoder() -> Decoder {
        Decoder { realtime_offset_ns: 1_000 }
    }

    #[test]
    fn outbound_close_carries_bytes_duration_and_local_source() {
        let b = conn_sample(NET_CLOSE, F_OUTBOUND);
        let ev = decoder().decode(&b.0[..size_of::<types::conn_event>()]).expect("valid");
        assert_eq!((ev.domain, ev.activity, ev.time), (Domain::Network, Activity::Close, Timestamp(6_000)));
        let n = ev.network.expect("network facts");
        assert_eq!((n.src_ip.as_deref(), n.src_port), (Some("10.77.0.2"), Some(40000)));
        assert_eq!((n.dst_ip.as_deref(), n.dst_port), (Some("10.77.0.1"), Some(80)));
        assert_eq!((n.bytes_out, n.bytes_in, n.duration_us), (Some(100), Some(2000), Some(3000)));
        assert_eq!((n.protocol.as_str(), n.direction.as_deref()), ("tcp", Some("outbound")));
        assert_eq!((ev.process.pid, ev.process.tid, ev.process.uid), (42, 43, 1000));
        assert_eq!(ev.process.comm, "curl");
        assert_eq!(ev.process.guid, process_guid(42, 100));
    }

    #[test]
    fn accept_puts_the_remote_peer_in_src_and_unattributed_has_no_process() {
        let b = conn_sample(NET_ACCEPT, F_INBOUND | F_UNATTRIBUTED);
        let ev = decoder().decode(&b.0[..size_of::<types::conn_event>()]).expect("valid");
        let n = ev.network.expect("network facts");
        assert_eq!((n.src_ip.as_deref(), n.src_port), (Some("10.77.0.1"), Some(80)));
        assert_eq!((n.dst_ip.as_deref(), n.dst_port), (Some("10.77.0.2"), Some(40000)));
        assert_eq!(n.direction.as_deref(), Some("inbound"));
        assert_eq!((ev.process.pid, ev.process.partial, ev.process.guid.as_str()), (0, true, ""));
    }

    #[test]
    fn bad_samples_are_rejected_not_panicked_on() {
        let d = decoder();
        let n = size_of::<types::conn_event>();
        let b = conn_sample(NET_CONNECT, F_OUTBOUND);
        assert!(d.decode(&b.0[..n]).is_ok());
        assert!(d.decode(&b.0[..n - 1]).is_err(), "size mismatch");
        assert!(d.decode(&b.0[..8]).is_err() && d.decode(&[]).is_err());
        assert!(d.decode(&conn_sample(99, 0).0[..n]).is_err(), "unknown activity");
        let mut b = conn_sample(NET_CONNECT, 0);
        put(&mut b, offset_of!(types::conn_event, family), &77u16.to_ne_bytes());
        assert!(d.decode(&b.0[..n]).is_err(), "unknown family");
        let mut b = conn_sample(NET_CONNECT, 0);
        put(&mut b, 12, &KIND_NET_DNS.to_ne_bytes());
        assert!(d.decode(&b.0[..n]).is_err(), "a DNS kind on a conn-sized sample");
        // A DNS record whose payload does not parse, or claims more than it holds.
        let mut b = Sample([0; 640]);
        let m = size_of::<types::dns_event>();
        put(&mut b, 8, &(m as u32).to_ne_bytes());
        put(&mut b, 12, &KIND_NET_DNS.to_ne_bytes());
        put(&mut b, offset_of!(types::dns_event, family), &AF_INET.to_ne_bytes());
        put(&mut b, offset_of!(types::dns_event, payload_len), &12u16.to_ne_bytes());
        assert!(d.decode(&b.0[..m]).is_err());
        put(&mut b, offset_of!(types::dns_event, payload_len), &600u16.to_ne_bytes());
        assert!(d.decode(&b.0[..m]).is_err());
    }

    #[test]
    fn a_refused_connect_carries_the_errno_name_and_no_byte_counts() {
        let mut b = conn_sample(NET_CONNECT, F_OUTBOUND | F_REFUSED);
        put(&mut b, offset_of!(types::conn_event, error), &111u32.to_ne_bytes());
        let n = decoder().decode(&b.0[..size_of::<types::conn_event>()]).expect("valid").network.expect("network");
        assert_eq!((n.error.as_deref(), n.bytes_out, n.bytes_in), (Some("ECONNREFUSED"), None, None));
        assert_eq!(connect_error(110), "ETIMEDOUT");
        assert_eq!(connect_error(0), "ECONNABORTED");
        assert_eq!(connect_error(4000), "E4000");
        let ok = decoder().decode(&conn_sample(NET_CONNECT, F_OUTBOUND).0[..size_of::<types::conn_event>()]);
        assert_eq!(ok.expect("valid").network.expect("network").error, None, "an established connect has no error");
    }

    #[test]
    fn v4_mapped_addresses_are_shown_as_ipv4() {
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(ip(AF_INET6, &mapped), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(ip(AF_INET6, &Ipv6Addr::LOCALHOST.octets()), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }
}
