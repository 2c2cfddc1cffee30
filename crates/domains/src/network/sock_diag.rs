//! Network domain, user mode without injection: polls the kernel's socket tables (netlink `sock_diag`,
//! `inet_diag` for TCP and UDP over IPv4 and IPv6) every [`SockDiagConfig::interval`] and reports what changed.
//!
//! Each poll dumps the four tables, keyed by the kernel's socket cookie (unique for a socket's life). A cookie not
//! seen before is a new socket: TCP `LISTEN` and bound unconnected UDP sockets -> `listen`; a TCP connection
//! whose local port is a listening port -> `accept` (inbound, `src` the peer), any other connection (TCP, or a
//! connected UDP socket) -> `connect` (outbound, `src` local). A cookie that is gone is a closed socket ->
//! `close`, with `bytes_out`/`bytes_in` from the last `tcp_info` seen (bytes acked by the peer / received; as of
//! the last poll, so up to one interval short) and a duration measured from the poll that first saw it.
//! Sockets present at start are the baseline: not reported as new, their close is.
//!
//! The owning process comes from the socket's inode: `/proc/<pid>/fd/*` links of the form `socket:[inode]`,
//! scanned into a cache and rescanned (at most once per poll) when a new socket's inode is unknown. A socket
//! whose process already exited, or that is held only by the kernel (`TIME_WAIT`), has no pid; its event says
//! `pid: 0` and is counted in [`SockDiagStats::unattributed`]. Events are facts from the kernel (`trusted` is
//! true); the process attribution is a best effort, since another process can share the socket.
//!
//! # What polling misses (asserted in the tests)
//!
//! - A connection opened and closed between two polls is never seen. When this host closed it first, its
//!   `TIME_WAIT` remnant (new cookie, no owner) shows up in the next poll: each such remnant is counted as one lost
//!   event ([`SockDiagStats::missed_short`], and the pipeline's `lost_upstream`); connections the peer closed
//!   first leave no remnant here and are not counted at all.
//! - Unconnected UDP sends (DNS queries, syslog) have no connection to list: only the bound socket appears.
//! - No DNS, no HTTP Host, no SNI, no blocking: this backend only watches.
//! - Byte counts are TCP only, and miss what moved after the last poll.
//! - Only the agent's network namespace: sockets of other namespaces are in other tables.
//! - At most [`SockDiagConfig::max_sockets`] sockets are tracked; beyond that new sockets are counted as lost.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{
    AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, TCP_ESTABLISHED, TCP_LISTEN, TCP_SYN_RECV, TCP_SYN_SENT, TCP_TIME_WAIT,
};
use netlink_packet_sock_diag::inet::nlas::Nla;
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr as NlAddr};
use ringwatch_core::event::NetworkInfo;
use ringwatch_core::proc_table::read_proc_process;
use ringwatch_core::{
    Activity, Backend, Domain, Event, Mode, Probe, Process, Source, SourceContext, SourceError, SourceKind,
};

const NAME: &str = "network/sock_diag";
const BACKEND: Backend = Backend { mode: Mode::User, source: SourceKind::SockDiag };
/// Receive buffer for one netlink read (a dump arrives in several).
const RECV_BUFFER: usize = 64 * 1024;
/// `tcp_info` offsets (linux/tcp.h, stable ABI): `tcpi_bytes_acked` and `tcpi_bytes_received`.
const TCPI_BYTES_ACKED: usize = 120;
const TCPI_BYTES_RECEIVED: usize = 128;

/// Start-up settings.
#[derive(Debug, Clone, Copy)]
pub struct SockDiagConfig {
    /// Time between two polls. Connections shorter than this are not seen.
    pub interval: Duration,
    /// Most sockets tracked at once.
    pub max_sockets: usize,
}

impl Default for SockDiagConfig {
    fn default() -> Self {
        SockDiagConfig { interval: Duration::from_millis(200), max_sockets: 65_536 }
    }
}

/// Counters of what the poller saw and missed, for tests, benchmarks and metrics.
#[derive(Debug, Default)]
pub struct SockDiagStats {
    /// Polls done.
    pub polls: AtomicU64,
    /// Sockets that appeared already in `TIME_WAIT`: connections opened and closed between two polls.
    pub missed_short: AtomicU64,
    /// Events emitted without a pid (no process held the socket's inode when it was looked up).
    pub unattributed: AtomicU64,
    /// Netlink replies that did not parse.
    pub malformed: AtomicU64,
    /// New sockets not tracked because [`SockDiagConfig::max_sockets`] were tracked already.
    pub over_limit: AtomicU64,
}

/// The sock_diag backend.
#[derive(Debug)]
pub struct NetworkSockDiag {
    socket: Socket,
    cfg: SockDiagConfig,
    stats: Arc<SockDiagStats>,
}

impl NetworkSockDiag {
    /// Available when a sock_diag netlink socket can be opened and dump the TCP table.
    pub fn probe() -> Probe {
        match open().and_then(|s| dump(&s, AF_INET, IPPROTO_TCP, &mut vec![0; RECV_BUFFER]).map(|_| ())) {
            Ok(()) => Probe::ok(
                Domain::Network,
                Mode::User,
                SourceKind::SockDiag,
                "netlink sock_diag (polls TCP/UDP tables; misses connections shorter than the poll interval)",
            ),
            Err(e) => Probe::unavailable(Domain::Network, Mode::User, SourceKind::SockDiag, e),
        }
    }

    /// Opens the netlink socket in the calling thread's network namespace and checks that a dump works.
    pub fn start(cfg: SockDiagConfig) -> Result<Self, SourceError> {
        let failed = |step: &str, message: String| SourceError::Failed { backend: NAME, step: step.into(), message };
        let socket = open().map_err(|e| failed("open netlink sock_diag socket", e))?;
        dump(&socket, AF_INET, IPPROTO_TCP, &mut vec![0; RECV_BUFFER]).map_err(|e| failed("dump tcp sockets", e))?;
        tracing::info!(
            domain = "network",
            mode = "user",
            source = "sock_diag",
            interval_ms = cfg.interval.as_millis() as u64,
            "polling"
        );
        Ok(NetworkSockDiag { socket, cfg, stats: Arc::new(SockDiagStats::default()) })
    }

    /// The counters (shared: they keep counting while the source runs).
    pub fn stats(&self) -> Arc<SockDiagStats> {
        self.stats.clone()
    }
}

impl Source for NetworkSockDiag {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let span = tracing::info_span!("source", domain = "network", mode = "user", source = "sock_diag");
        let _enter = span.enter();
        let mut poller = Poller::new(self.cfg, self.stats.clone());
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut baseline = true;
        while !ctx.shutdown.is_triggered() {
            let started = Instant::now();
            match poll_all(&self.socket, &mut buf) {
                Ok((records, malformed)) => {
                    if malformed > 0 {
                        self.stats.malformed.fetch_add(malformed, Ordering::Relaxed);
                        for _ in 0..malformed {
                            ctx.events.count_malformed();
                        }
                    }
                    let update = poller.update(records, baseline);
                    baseline = false;
                    if update.lost > 0 {
                        ctx.events.count_lost_upstream(update.lost);
                    }
                    for ev in update.events {
                        ctx.events.send(ev);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "sock_diag dump failed; retrying next interval"),
            }
            self.stats.polls.fetch_add(1, Ordering::Relaxed);
            let left = self.cfg.interval.saturating_sub(started.elapsed());
            // Sleep in short steps so shutdown is noticed quickly.
            let until = Instant::now() + left;
            while !ctx.shutdown.is_triggered() && Instant::now() < until {
                std::thread::sleep(until.saturating_duration_since(Instant::now()).min(Duration::from_millis(50)));
            }
        }
        Ok(())
    }
}

fn open() -> Result<Socket, String> {
    let mut s = Socket::new(NETLINK_SOCK_DIAG).map_err(|e| format!("netlink socket: {e}"))?;
    s.bind_auto().map_err(|e| format!("netlink bind: {e}"))?;
    s.connect(&NlAddr::new(0, 0)).map_err(|e| format!("netlink connect: {e}"))?;
    // A dump is answered at once; this only bounds a kernel that never finishes one.
    let tv = libc::timeval { tv_sec: 1, tv_usec: 0 };
    // SAFETY: setsockopt reads one valid timeval from a live descriptor owned by `s`.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    Ok(s)
}

/// One socket as a dump described it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    cookie: u64,
    protocol: u8,
    state: u8,
    local: SocketAddr,
    remote: SocketAddr,
    inode: u32,
    bytes_out: Option<u64>,
    bytes_in: Option<u64>,
}

/// Dumps the four tables. Returns the records and how many replies did not parse.
fn poll_all(socket: &Socket, buf: &mut Vec<u8>) -> Result<(Vec<Record>, u64), String> {
    let mut all = Vec::new();
    let mut malformed = 0;
    for (family, protocol) in
        [(AF_INET, IPPROTO_TCP), (AF_INET6, IPPROTO_TCP), (AF_INET, IPPROTO_UDP), (AF_INET6, IPPROTO_UDP)]
    {
        let (records, bad) = dump(socket, family, protocol, buf)?;
        all.extend(records);
        malformed += bad;
    }
    Ok((all, malformed))
}

/// Dumps one table: every socket of `family`/`protocol` in every state, with `tcp_info` for TCP.
fn dump(socket: &Socket, family: u8, protocol: u8, buf: &mut Vec<u8>) -> Result<(Vec<Record>, u64), String> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let socket_id = if family == AF_INET { SocketId::new_v4() } else { SocketId::new_v6() };
    let request = InetRequest {
        family,
        protocol,
        extensions: if protocol == IPPROTO_TCP { ExtensionFlags::INFO } else { ExtensionFlags::empty() },
        states: StateFlags::all(),
        socket_id,
    };
    let mut packet = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
    packet.finalize();
    let mut out = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut out);
    socket.send(&out, 0).map_err(|e| format!("netlink send: {e}"))?;
    let mut records = Vec::new();
    let mut malformed = 0u64;
    loop {
        buf.clear();
        let n = socket.recv(buf, 0).map_err(|e| format!("netlink recv: {e}"))?;
        let mut offset = 0usize;
        while offset < n {
            let Some(bytes) = buf.get(offset..n) else { break };
            let msg = match NetlinkMessage::<SockDiagMessage>::deserialize(bytes) {
                Ok(m) => m,
                Err(e) => {
                    // The rest of this read cannot be framed; the next read starts a fresh datagram.
                    tracing::debug!(error = %e, "malformed sock_diag reply");
                    malformed += 1;
                    break;
                }
            };
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok((records, malformed)),
                NetlinkPayload::Error(e) => return Err(format!("netlink error: {e:?}")),
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    records.push(record(&r, protocol));
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset = offset.saturating_add((len + 3) & !3);
        }
    }
}

/// The facts of one response.
fn record(r: &InetResponse, protocol: u8) -> Record {
    let id = &r.header.socket_id;
    let (mut bytes_out, mut bytes_in) = (None, None);
    for nla in &r.nlas {
        if let Nla::TcpInfo(info) = nla {
            let u64_at = |at: usize| info.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes);
            bytes_out = u64_at(TCPI_BYTES_ACKED);
            bytes_in = u64_at(TCPI_BYTES_RECEIVED);
        }
    }
    Record {
        cookie: u64::from_ne_bytes(id.cookie),
        protocol,
        state: r.header.state,
        local: SocketAddr::new(id.source_address, id.source_port),
        remote: SocketAddr::new(id.destination_address, id.destination_port),
        inode: r.header.inode,
        bytes_out,
        bytes_in,
    }
}

/// What one poll produced.
#[derive(Default)]
struct Update {
    events: Vec<Event>,
    /// Connections known to be missed (or not tracked).
    lost: u64,
}

/// A socket being tracked.
struct Tracked {
    record: Record,
    first_seen: Instant,
    /// Pid and process, looked up when first seen.
    pid: u32,
    process: Option<Process>,
    /// The activity it was reported with (close keeps its orientation).
    activity: Activity,
}

/// The diff between polls, and the inode -> pid cache.
struct Poller {
    cfg: SockDiagConfig,
    stats: Arc<SockDiagStats>,
    tracked: HashMap<u64, Tracked>,
    /// Cookies of `TIME_WAIT` remnants already counted (pruned to those still present each poll).
    remnants: HashSet<u64>,
    owners: HashMap<u32, u32>,
}

impl Poller {
    fn new(cfg: SockDiagConfig, stats: Arc<SockDiagStats>) -> Self {
        Poller { cfg, stats, tracked: HashMap::new(), remnants: HashSet::new(), owners: HashMap::new() }
    }

    /// Takes one poll's records: the events for new and closed sockets (nothing new for the baseline) and how many
    /// were lost.
    fn update(&mut self, records: Vec<Record>, baseline: bool) -> Update {
        let mut out = Update::default();
        let now = Instant::now();
        let listening: HashSet<(u8, u16)> =
            records.iter().filter(|r| is_listener(r)).map(|r| (r.protocol, r.local.port())).collect();
        let present: HashSet<u64> = records.iter().map(|r| r.cookie).collect();
        // Closed: tracked cookies that are gone.
        let gone: Vec<u64> = self.tracked.keys().filter(|c| !present.contains(c)).copied().collect();
        for cookie in gone {
            if let Some(t) = self.tracked.remove(&cookie) {
                out.events.push(self.close_event(&t, now));
            }
        }
        let unknown_inode = records
            .iter()
            .any(|r| r.inode != 0 && !self.tracked.contains_key(&r.cookie) && !self.owners.contains_key(&r.inode));
        if unknown_inode {
            self.owners = scan_owners();
        }
        for r in records {
            if let Some(t) = self.tracked.get_mut(&r.cookie) {
                // Keep the latest counters (and state) for the close event.
                t.record = r;
                continue;
            }
            if r.state == TCP_TIME_WAIT && r.protocol == IPPROTO_TCP {
                // Opened and closed between two polls (this host closed first): a missed connection, counted once.
                if self.remnants.insert(r.cookie) && !baseline {
                    self.stats.missed_short.fetch_add(1, Ordering::Relaxed);
                    out.lost += 1;
                }
                continue;
            }
            if r.protocol == IPPROTO_TCP
                && !matches!(r.state, TCP_ESTABLISHED | TCP_SYN_SENT | TCP_SYN_RECV | TCP_LISTEN)
            {
                // Closing states of a socket never seen open: too late to say which way it went; not tracked.
                continue;
            }
            if r.protocol == IPPROTO_UDP && r.local.port() == 0 {
                continue; // created, not yet bound or used
            }
            if self.tracked.len() >= self.cfg.max_sockets {
                self.stats.over_limit.fetch_add(1, Ordering::Relaxed);
                out.lost += 1;
                continue;
            }
            let activity = if is_listener(&r) {
                Activity::Listen
            } else if r.protocol == IPPROTO_TCP && listening.contains(&(r.protocol, r.local.port())) {
                Activity::Accept
            } else {
                Activity::Connect
            };
            let pid = self.owners.get(&r.inode).copied().unwrap_or(0);
            let process = (pid != 0).then(|| read_proc_process(pid)).flatten();
            let t = Tracked { record: r, first_seen: now, pid, process, activity };
            if !baseline {
                out.events.push(self.event(&t, activity, now));
            }
            self.tracked.insert(t.record.cookie, t);
        }
        self.remnants.retain(|c| present.contains(c));
        out
    }

    fn event(&self, t: &Tracked, activity: Activity, now: Instant) -> Event {
        let r = &t.record;
        let mut ev = Event::new(Domain::Network, activity, BACKEND);
        match &t.process {
            Some(p) => ev.process = p.clone(),
            None => {
                ev.process.pid = t.pid;
                ev.process.partial = true;
            }
        }
        if t.pid == 0 {
            self.stats.unattributed.fetch_add(1, Ordering::Relaxed);
        }
        let mut net = NetworkInfo {
            protocol: if r.protocol == IPPROTO_TCP { "tcp" } else { "udp" }.into(),
            ..NetworkInfo::default()
        };
        let shown = |a: IpAddr| (!a.is_unspecified()).then(|| a.to_string());
        match t.activity {
            Activity::Listen => {
                net.src_ip = Some(r.local.ip().to_string());
                net.src_port = Some(r.local.port());
            }
            Activity::Accept => {
                net.direction = Some("inbound".into());
                (net.src_ip, net.src_port) = (Some(r.remote.ip().to_string()), Some(r.remote.port()));
                (net.dst_ip, net.dst_port) = (Some(r.local.ip().to_string()), Some(r.local.port()));
            }
            _ => {
                net.direction = Some("outbound".into());
                (net.src_ip, net.src_port) = (shown(r.local.ip()), Some(r.local.port()));
                (net.dst_ip, net.dst_port) = (Some(r.remote.ip().to_string()), Some(r.remote.port()));
            }
        }
        if activity == Activity::Close {
            net.bytes_out = r.bytes_out;
            net.bytes_in = r.bytes_in;
            net.duration_us = Some(u64::try_from(now.duration_since(t.first_seen).as_micros()).unwrap_or(u64::MAX));
        }
        ev.network = Some(net);
        ev
    }

    fn close_event(&self, t: &Tracked, now: Instant) -> Event {
        self.event(t, Activity::Close, now)
    }
}

fn is_listener(r: &Record) -> bool {
    (r.protocol == IPPROTO_TCP && r.state == TCP_LISTEN)
        || (r.protocol == IPPROTO_UDP && r.remote.port() == 0 && r.remote.ip().is_unspecified())
}

/// inode -> pid for every socket descriptor of every process (the first process found wins).
fn scan_owners() -> HashMap<u32, u32> {
    let mut owners = HashMap::new();
    let Ok(procs) = fs::read_dir("/proc") else { return owners };
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else { continue };
            let target = target.to_string_lossy();
            if let Some(inode) =
                target.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')).and_then(|s| s.parse().ok())
            {
                owners.entry(inode).or_insert(pid);
            }
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(cookie: u64, state: u8, local: &str, remote: &str) -> Record {
        Record {
            cookie,
            protocol: IPPROTO_TCP,
            state,
            local: local.parse().expect("test value"),
            remote: remote.parse().expect("test value"),
            inode: 0,
            bytes_out: Some(10),
            bytes_in: Some(20),
        }
    }

    #[test]
    fn diff_reports_listen_accept_connect_close_and_counts_time_wait() {
        let stats = Arc::new(SockDiagStats::default());
        let mut p = Poller::new(SockDiagConfig::default(), stats.clone());
        assert!(p.update(vec![rec(1, TCP_LISTEN, "0.0.0.0:80", "0.0.0.0:0")], true).events.is_empty());
        let first = p.update(
            vec![
                rec(1, TCP_LISTEN, "0.0.0.0:80", "0.0.0.0:0"),
                rec(2, TCP_ESTABLISHED, "10.0.0.1:80", "10.0.0.2:5000"),
                rec(3, TCP_ESTABLISHED, "10.0.0.1:40000", "10.0.0.3:443"),
                rec(4, TCP_TIME_WAIT, "10.0.0.1:40001", "10.0.0.3:443"),
            ],
            false,
        );
        assert_eq!(first.lost, 1, "the TIME_WAIT remnant is a missed connection");
        let second = p.update(
            vec![
                rec(1, TCP_LISTEN, "0.0.0.0:80", "0.0.0.0:0"),
                rec(4, TCP_TIME_WAIT, "10.0.0.1:40001", "10.0.0.3:443"),
            ],
            false,
        );
        assert_eq!(second.lost, 0, "a remnant is counted once, however many polls see it");
        assert_eq!(stats.missed_short.load(Ordering::Relaxed), 1);
        assert_eq!(p.tracked.len(), 1);
        let got: Vec<Event> = first.events.into_iter().chain(second.events).collect();
        let acts: Vec<Activity> = got.iter().map(|e| e.activity).collect();
        assert_eq!(acts, vec![Activity::Accept, Activity::Connect, Activity::Close, Activity::Close]);
        let accept = got[0].network.as_ref().expect("test value");
        assert_eq!(
            (accept.src_port, accept.dst_port, accept.direction.as_deref()),
            (Some(5000), Some(80), Some("inbound"))
        );
        let close = got
            .iter()
            .rfind(|e| e.activity == Activity::Close)
            .expect("test value")
            .network
            .as_ref()
            .expect("test value");
        assert_eq!((close.bytes_out, close.bytes_in), (Some(10), Some(20)));
    }
}
