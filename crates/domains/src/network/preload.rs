//! Network domain, user mode through the LD_PRELOAD hook: connects, accepts, the close of those TCP connections
//! (with bytes and duration), first sends to a destination and name lookups from inside each hooked process;
//! block (the call fails) and redirect to the local proxy (proxychains-style) before the connection leaves the
//! process.
//!
//! [`NetworkPreload`] registers a handler for `NET_REQUEST`, `NET_REPORT` and `NET_DNS` on the hook socket
//! ([`crate::preload::SharedSocket`], shared with the process and file backends); the hook's session carries
//! them. The answer to the hook's hello tells it what to send:
//! - **monitor** (no rule can block or redirect: [`Decider::may_deny`] is false for the network domain): a
//!   one-way report after each connect and after the first send to each destination of an unconnected socket,
//!   with the result and the local address. Failed connects are not emitted (like the file hooks: only what
//!   happened); a report the hook could not send (its socket was full) is counted as lost.
//! - **verdict** (a rule may block or redirect): a request before each connect (and first send to a
//!   destination), answered after [`Decider::decide`]: `blocked` fails the connect with `ECONNREFUSED` and the
//!   send with `EACCES`; `redirected` (TCP connects, when the agent knows the proxy's hook address) makes the hook
//!   connect to the proxy instead and write the 28-byte `RWPX` header with the original destination and pid; with
//!   no proxy known, a redirect fails closed (blocked, plus a sensor error). `throttled` cannot be applied from a
//!   hook: the connection goes ahead and the event says `alerted` with the rule. A verdict that reached the hook
//!   after its timeout is reported as `alerted` plus a `sensor`/`error` event, never as `blocked`.
//!
//! Mapping: `connect` -> `connect` (`direction: outbound`); `sendto`/`sendmsg`/`sendmmsg` with a destination ->
//! `send` with `bytes_out` the size of that first send (or `connect` for TCP Fast Open); `accept`/`accept4` ->
//! `accept` (`direction: inbound`, `src` the peer, `dst` the local address; reported, never asked about: a policy
//! block applies to outbound connections); the close of a connection the hook saw open -> `close` with
//! `bytes_out`/`bytes_in` (payload bytes acknowledged by the peer / received, from `TCP_INFO`), `duration_us` and
//! the same orientation as the kernel monitor's close (`src` the peer for an accepted connection); a lookup ->
//! `dns` with `dns.query` and `dns.answers` (the addresses the resolver returned; protocol `dns`, since the
//! resolver may have answered from /etc/hosts without any packet). The answers of a session's lookups are remembered (up to
//! [`NAMES_PER_SESSION`]), so a later connect of that process to one of them carries `dst_name`.
//!
//! Process facts come from the kernel and /proc, never from the message: pid, uid, gid from `SO_PEERCRED`, the
//! rest read once per session at its hello. Every event has `trusted: false`.
//!
//! What it cannot see (asserted in the tests): statically linked programs, raw `syscall(SYS_connect, ..)`,
//! processes started without the hook, setuid programs, sends on a connected socket (by design: the connect was
//! seen), resolvers that do not go through the hooked libc functions (a program's own DNS client is seen only as
//! UDP sends to port 53), and the close of a connection through `close_range`, `dup2` over it, `fclose` of an
//! `fdopen`ed socket or a raw system call (no `close` event then; nothing wrong is reported either).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use ringwatch_core::event::{DnsInfo, NetworkInfo};
use ringwatch_core::{
    Action, Activity, Backend, Decider, Domain, Event, EventSender, Mode, Probe, Process, Source, SourceContext,
    SourceError, SourceKind,
};
use ringwatch_hook_protocol::{
    CONFIG_NET_REPORT, CONFIG_NET_VERDICT, DnsMessage, Header, Message, MessageKind, NET_FLAG_INBOUND, NetMessage,
    NetOp, NetVerdict, PROTO_TCP, encode_net_verdict,
};

use super::proxy::Proxy;
pub use crate::preload::Verdicts as NetVerdicts;
use crate::preload::{self, HookHandler, Peer, Reply, SharedSocket};

const NAME: &str = "network/preload";
const BACKEND: Backend = Backend { mode: Mode::User, source: SourceKind::Preload };
/// Most resolved names remembered per session for `dst_name`.
pub const NAMES_PER_SESSION: usize = 256;

/// Start-up settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetworkPreloadConfig {
    /// Monitor or verdict mode.
    pub verdicts: NetVerdicts,
    /// Where redirected connections go: the loopback proxy's address for hook-redirected connections (they start
    /// with the `RWPX` header). `None`: no proxy runs, a redirect verdict blocks instead.
    pub proxy: Option<SocketAddr>,
}

/// The preload network backend: the network handler registered on the (shared) hook socket.
#[derive(Debug)]
pub struct NetworkPreload {
    socket: SharedSocket,
    verdicts: bool,
    /// The proxy redirected connections reach, kept running while this backend runs; its events go to this
    /// backend's pipeline sender.
    proxy: Option<Arc<Proxy>>,
}

impl NetworkPreload {
    /// Available when the hook library is found; processes still need it injected.
    pub fn probe() -> Probe {
        preload::probe(Domain::Network)
    }

    /// Registers the network handler on the hook socket at `socket` (binding it unless another preload backend of
    /// this agent already did).
    pub fn start(socket: &Path, decider: Arc<dyn Decider>, config: NetworkPreloadConfig) -> Result<Self, SourceError> {
        let verdicts = config.verdicts.asks(decider.as_ref(), Domain::Network);
        let handler = NetHandler { decider, verdicts, proxy: config.proxy, sessions: HashMap::new() };
        let kinds = [MessageKind::NET_REQUEST, MessageKind::NET_REPORT, MessageKind::NET_DNS];
        let share = preload::attach(NAME, socket, &kinds, Box::new(handler))?;
        let hooks = if verdicts { "verdict" } else { "monitor" };
        tracing::info!(
            domain = "network",
            mode = "user",
            source = "preload",
            socket = %socket.display(),
            hooks,
            proxy = ?config.proxy,
            "listening"
        );
        Ok(NetworkPreload { socket: share, verdicts, proxy: None })
    }

    /// Starts with the shared loopback proxy ([`super::proxy::shared`]) as the redirect target: its hook port is
    /// where redirect verdicts send connections, and its events (relay, Host, SNI, host-rule blocks) go to this
    /// backend's pipeline sender while it runs.
    pub fn start_with_proxy(
        socket: &Path,
        decider: Arc<dyn Decider>,
        verdicts: NetVerdicts,
        proxy: Arc<Proxy>,
    ) -> Result<Self, SourceError> {
        let config = NetworkPreloadConfig { verdicts, proxy: Some(proxy.hook_addr()) };
        let mut started = Self::start(socket, decider, config)?;
        started.proxy = Some(proxy);
        Ok(started)
    }

    /// The socket's path.
    pub fn socket_path(&self) -> &Path {
        self.socket.path()
    }

    /// True when hooked processes ask before each connect (a rule may block or redirect).
    pub fn asks_for_verdicts(&self) -> bool {
        self.verdicts
    }
}

impl Source for NetworkPreload {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Serves hook messages (for every preload backend, unless another one already does) until shutdown.
    fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let span = tracing::info_span!("source", domain = "network", mode = "user", source = "preload");
        let _enter = span.enter();
        if let Some(proxy) = &self.proxy {
            proxy.set_events(ctx.events.clone());
        }
        preload::serve(NAME, self.socket, &ctx)
    }
}

/// What is known about a session's process.
struct SessionFacts {
    process: Process,
    parent_exe: Option<String>,
    /// Address -> name, from this process's lookups.
    names: HashMap<IpAddr, String>,
    tamper_reported: bool,
}

impl SessionFacts {
    fn read(peer: Peer) -> Self {
        let (process, parent_exe) = preload::peer_process(peer);
        SessionFacts { process, parent_exe, names: HashMap::new(), tamper_reported: false }
    }
}

/// Turns network requests, reports and lookups into events and verdicts.
struct NetHandler {
    decider: Arc<dyn Decider>,
    verdicts: bool,
    proxy: Option<SocketAddr>,
    sessions: HashMap<u64, SessionFacts>,
}

impl HookHandler for NetHandler {
    fn handle(&mut self, peer: Peer, _header: &Header, msg: &Message<'_>, reply: &mut Reply<'_>, events: &EventSender) {
        let mut fresh;
        let facts = if peer.session == 0 {
            fresh = SessionFacts::read(peer);
            &mut fresh
        } else {
            self.sessions.entry(peer.session).or_insert_with(|| SessionFacts::read(peer))
        };
        let (claimed_pid, dropped) = match msg {
            Message::Net(m) => (m.pid, m.dropped),
            Message::Dns(d) => (d.pid, d.dropped),
            _ => return,
        };
        if dropped > 0 {
            events.count_lost_upstream(u64::from(dropped));
        }
        if claimed_pid != peer.pid && !facts.tamper_reported {
            facts.tamper_reported = true;
            events.send(sensor_event(
                Activity::Tamper,
                peer,
                format!(
                    "network hook message claims pid {claimed_pid} but the socket peer is pid {}; the peer's pid is \
                     used",
                    peer.pid
                ),
            ));
        }
        match msg {
            Message::Dns(d) => {
                let ev = dns_event(peer, facts, d);
                events.send(ev);
            }
            Message::Net(m) => {
                // A failed call changed nothing; a request's outcome is not known yet.
                if m.result.is_some_and(|r| r != 0) {
                    return;
                }
                let mut ev = net_event(peer, facts, m);
                if m.wants_verdict {
                    decide(self.decider.as_ref(), self.proxy, peer, facts, m, &mut ev, reply, events);
                }
                events.send(ev);
            }
            _ => {}
        }
    }

    fn config(&self) -> u32 {
        if self.verdicts { CONFIG_NET_VERDICT } else { CONFIG_NET_REPORT }
    }

    fn session_opened(&mut self, peer: Peer) {
        self.sessions.insert(peer.session, SessionFacts::read(peer));
    }

    fn session_closed(&mut self, session: u64) {
        self.sessions.remove(&session);
    }
}

/// Decides a request, answers the hook, and sets the event's action and rule.
#[allow(clippy::too_many_arguments)] // the handler's context, passed apart because `facts` borrows the handler
fn decide(
    decider: &dyn Decider,
    proxy: Option<SocketAddr>,
    peer: Peer,
    facts: &SessionFacts,
    m: &NetMessage,
    ev: &mut Event,
    reply: &mut Reply<'_>,
    events: &EventSender,
) {
    let decision = decider.decide(ev, facts.parent_exe.as_deref());
    ev.rule = decision.rule.clone();
    let rule = decision.rule.as_deref().unwrap_or("?");
    let redirect_to = match decision.action {
        Action::Redirected if m.protocol == PROTO_TCP && m.op == NetOp::Connect => match proxy {
            Some(proxy) => Some(proxy),
            None => {
                events.send(sensor_event(
                    Activity::Error,
                    peer,
                    format!(
                        "rule {rule} redirects {} for pid {} but no proxy runs; the connect was refused instead",
                        m.dst, peer.pid
                    ),
                ));
                None
            }
        },
        _ => None,
    };
    let (verdict, action) = match decision.action {
        Action::Redirected if redirect_to.is_some() => {
            let proxy = redirect_to.unwrap_or(m.dst);
            (NetVerdict::Redirect { proxy }, Action::Redirected)
        }
        // A redirect of something the proxy cannot carry (UDP, a send) lets it through.
        Action::Redirected if m.protocol != PROTO_TCP || m.op != NetOp::Connect => (NetVerdict::Allow, Action::Alerted),
        Action::Redirected | Action::Blocked | Action::Denied | Action::Killed => {
            (NetVerdict::Deny { errno: 0 }, Action::Blocked)
        }
        // A hook cannot limit a rate: the connection goes ahead, the event says which rule matched.
        Action::Throttled | Action::Alerted => (NetVerdict::Allow, Action::Alerted),
        Action::Observed => (NetVerdict::Allow, Action::Observed),
    };
    let reached = reply.send_with(|buf, seq| encode_net_verdict(buf, seq, verdict));
    match verdict {
        NetVerdict::Allow => ev.action = action,
        _ if reached => {
            ev.action = action;
            if let NetVerdict::Redirect { proxy } = verdict
                && let Some(net) = ev.network.as_mut()
            {
                net.original_dst = Some(m.dst.to_string());
                net.dst_ip = Some(proxy.ip().to_string());
                net.dst_port = Some(proxy.port());
            }
        }
        _ => {
            ev.action = Action::Alerted;
            events.send(sensor_event(
                Activity::Error,
                peer,
                format!(
                    "{} of {} {} for pid {} reached the hook after its timeout; the call was not stopped",
                    action.as_str(),
                    m.op.name(),
                    m.dst,
                    peer.pid
                ),
            ));
        }
    }
}

fn protocol_name(p: u8) -> &'static str {
    if p == PROTO_TCP { "tcp" } else { "udp" }
}

/// The event for a connect, send, accept or close.
fn net_event(peer: Peer, facts: &SessionFacts, m: &NetMessage) -> Event {
    let activity = match (m.op, m.protocol) {
        (NetOp::Accept | NetOp::Accept4, _) => Activity::Accept,
        (NetOp::Listen, _) => Activity::Listen,
        (NetOp::Close, _) => Activity::Close,
        (NetOp::Connect, _) => Activity::Connect,
        // sendto with MSG_FASTOPEN on TCP connects.
        (_, PROTO_TCP) => Activity::Connect,
        _ => Activity::Send,
    };
    let mut ev = Event::new(Domain::Network, activity, BACKEND);
    ev.process = facts.process.clone();
    ev.process.pid = peer.pid;
    ev.process.tid = if m.pid == peer.pid { m.tid } else { 0 };
    // The initiator goes in `src`, as the kernel monitor does: the peer of an accepted connection.
    let inbound = activity == Activity::Accept || m.flags & NET_FLAG_INBOUND != 0;
    // A reset connection's close no longer knows its peer (sent as the unspecified address, port 0).
    let remote = Some(m.dst).filter(|d| d.port() != 0 || !d.ip().is_unspecified());
    let (src, dst) = match activity {
        // A listener has one address, its own, in `src` (as the kernel monitor reports it), and no direction.
        Activity::Listen => (remote, None),
        _ if inbound => (remote, m.src),
        _ => (m.src, remote),
    };
    let close = m.close.filter(|_| activity == Activity::Close);
    ev.network = Some(NetworkInfo {
        protocol: protocol_name(m.protocol).into(),
        src_ip: src.map(|s| s.ip().to_string()),
        src_port: src.map(|s| s.port()),
        dst_ip: dst.map(|d| d.ip().to_string()),
        dst_port: dst.map(|d| d.port()),
        direction: (activity != Activity::Listen).then(|| if inbound { "inbound" } else { "outbound" }.into()),
        bytes_out: match activity {
            Activity::Send => Some(u64::from(m.bytes)),
            _ => close.map(|c| c.bytes_out),
        },
        bytes_in: close.map(|c| c.bytes_in),
        duration_us: close.map(|c| c.duration_us),
        dst_name: if inbound || activity == Activity::Listen {
            None
        } else {
            remote.and_then(|r| facts.names.get(&canonical(r.ip())).cloned())
        },
        ..NetworkInfo::default()
    });
    ev
}

/// The event for a lookup; remembers its answers for later connects of the session.
fn dns_event(peer: Peer, facts: &mut SessionFacts, d: &DnsMessage<'_>) -> Event {
    let query = String::from_utf8_lossy(d.query).into_owned();
    let answers: Vec<IpAddr> = d.answers().collect();
    for ip in &answers {
        if facts.names.len() >= NAMES_PER_SESSION {
            facts.names.clear();
        }
        facts.names.insert(canonical(*ip), query.clone());
    }
    let mut ev = Event::new(Domain::Network, Activity::Dns, BACKEND);
    ev.process = facts.process.clone();
    ev.process.pid = peer.pid;
    ev.process.tid = if d.pid == peer.pid { d.tid } else { 0 };
    ev.network = Some(NetworkInfo {
        protocol: "dns".into(),
        direction: Some("outbound".into()),
        dns: Some(DnsInfo { query, answers: answers.iter().map(ToString::to_string).collect() }),
        ..NetworkInfo::default()
    });
    ev
}

/// An IPv4-mapped IPv6 address as the IPv4 address (a v6 socket connecting to a name resolved to v4).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A `sensor` event of this backend about `peer`.
fn sensor_event(activity: Activity, peer: Peer, message: String) -> Event {
    preload::sensor_event(NAME, activity, peer, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> SessionFacts {
        SessionFacts { process: Process::default(), parent_exe: None, names: HashMap::new(), tamper_reported: false }
    }

    fn peer() -> Peer {
        Peer { pid: 7, uid: 0, gid: 0, session: 1 }
    }

    #[test]
    fn a_connect_after_a_lookup_carries_the_name() {
        let mut f = facts();
        let mut buf = [0u8; ringwatch_hook_protocol::DNS_MAX_LEN];
        let fixed = ringwatch_hook_protocol::DnsFixed {
            op: ringwatch_hook_protocol::DnsOp::Getaddrinfo,
            pid: 7,
            tid: 7,
            uid: 0,
            dropped: 0,
            result: 0,
        };
        let ip: IpAddr = "10.0.0.9".parse().expect("test value");
        let n = ringwatch_hook_protocol::encode_dns(&mut buf, 1, &fixed, b"db.test", [ip]).expect("test value");
        let Ok((_, Message::Dns(d))) = ringwatch_hook_protocol::decode(&buf[..n]) else { panic!("dns") };
        let ev = dns_event(peer(), &mut f, &d);
        assert_eq!(
            ev.network.as_ref().expect("test value").dns.as_ref().expect("test value").answers,
            vec!["10.0.0.9".to_string()]
        );
        let m = NetMessage {
            wants_verdict: false,
            op: NetOp::Connect,
            flags: 0,
            pid: 7,
            tid: 7,
            uid: 0,
            result: Some(0),
            dropped: 0,
            bytes: 0,
            protocol: PROTO_TCP,
            dst: SocketAddr::new(IpAddr::V6("::ffff:10.0.0.9".parse().expect("test value")), 80),
            src: None,
            close: None,
        };
        let ev = net_event(peer(), &f, &m);
        assert_eq!(ev.activity, Activity::Connect);
        assert!(!ev.trusted);
        assert_eq!(ev.network.expect("test value").dst_name.as_deref(), Some("db.test"));
    }

    fn connection(op: NetOp, flags: u16, remote: &str, close: Option<ringwatch_hook_protocol::NetClose>) -> NetMessage {
        NetMessage {
            wants_verdict: false,
            op,
            flags,
            pid: 7,
            tid: 8,
            uid: 0,
            result: Some(0),
            dropped: 0,
            bytes: 0,
            protocol: PROTO_TCP,
            dst: remote.parse().expect("test value"),
            src: Some("127.0.0.1:8080".parse().expect("test value")),
            close,
        }
    }

    #[test]
    fn accepts_and_closes_are_oriented_like_the_kernel_monitor() {
        let f = facts();
        let ev = net_event(peer(), &f, &connection(NetOp::Accept4, NET_FLAG_INBOUND, "127.0.0.1:40000", None));
        let net = ev.network.expect("test value");
        assert_eq!(ev.activity, Activity::Accept);
        assert_eq!((net.src_port, net.dst_port, net.direction.as_deref()), (Some(40000), Some(8080), Some("inbound")));
        assert_eq!((net.bytes_out, net.bytes_in, net.duration_us), (None, None, None));
        let counters = ringwatch_hook_protocol::NetClose { bytes_out: 5, bytes_in: 6, duration_us: 7 };
        let ev = net_event(peer(), &f, &connection(NetOp::Close, 0, "10.0.0.1:443", Some(counters)));
        let net = ev.network.expect("test value");
        assert_eq!(ev.activity, Activity::Close);
        assert_eq!((net.src_port, net.dst_ip.as_deref(), net.dst_port), (Some(8080), Some("10.0.0.1"), Some(443)));
        assert_eq!((net.bytes_out, net.bytes_in, net.duration_us), (Some(5), Some(6), Some(7)));
        assert_eq!(net.direction.as_deref(), Some("outbound"));
        // A reset connection's close: the peer is unknown, not 0.0.0.0:0.
        let ev = net_event(peer(), &f, &connection(NetOp::Close, NET_FLAG_INBOUND, "0.0.0.0:0", Some(counters)));
        let net = ev.network.expect("test value");
        assert_eq!((net.src_ip, net.src_port, net.dst_port), (None, None, Some(8080)));
    }
}
