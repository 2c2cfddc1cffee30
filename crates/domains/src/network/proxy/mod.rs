//! The local proxy that redirected connections reach, shared by kernel and user mode (issue #5): it learns each
//! connection's original destination, looks at the client's first bytes for the HTTP `Host` or the TLS SNI,
//! applies the host-name rules (a blocked name is closed before any byte reaches the server), connects to the
//! original destination and relays both ways, reporting one `connect` event (action `redirected`, or `blocked` /
//! `alerted` by a host rule) and one `close` event with the byte counts, the Host and the SNI per connection. For
//! a connection the preload hook redirected, whose connect its backend already reported, the proxy reports the
//! connect only when a host rule decided (so every redirected connection is one connect event in either mode).
//!
//! Two listeners on loopback:
//! - the **kernel port**, which the enforcer's `connect4/6` programs rewrite matching connects to; the original
//!   destination is looked up (and removed) by the client's local port in the enforcer's BPF map
//!   ([`OriginalDstLookup`]), where its `sockops` program put it when the connection was established;
//! - the **hook port**, which the preload hook connects to instead of the destination; the client first sends a
//!   [`HookHeader`] naming the destination (and its pid, untrusted), then its own bytes.
//!
//! One process-wide proxy ([`shared`]) serves both modes at once, so kernel mode alone, user mode alone and both
//! together use the same relay and the same host rules.
//!
//! # Why tokio
//!
//! A relay spends its life waiting on two sockets per connection; a thread (or two) per connection would cost
//! stack and scheduling for every idle keep-alive connection a browser or package manager holds. A small tokio
//! runtime (two worker threads, the machine has two cores) multiplexes thousands of connections, gives timeouts
//! for the peek and the upstream connect in one line each, and `copy_bidirectional_with_sizes` relays with fixed
//! 32 KiB buffers per direction (64 KiB measured no faster, 16 KiB 20 % slower), so memory is bounded by
//! `max_connections` (a semaphore; more connections wait in the listen backlog).
//!
//! # What it cannot do
//!
//! - TCP only: UDP has no connection to accept (redirect rules are TCP-only; the enforcer refuses UDP ones).
//! - It sees names only in the first bytes: plain HTTP/1.x `Host` and the TLS ClientHello SNI. HTTP/2 cleartext
//!   with prior knowledge, QUIC, ECH (encrypted ClientHello) and server-speaks-first protocols (SMTP, SSH) are
//!   relayed without a name. Without host rules the upstream connection is made at once and a server that
//!   speaks first ends the peek; with host rules the server is contacted only after the client's first bytes
//!   were judged, so a server-speaks-first connection waits `peek_timeout` first.
//! - The proxy's own outbound sockets carry [`PROXY_MARK`] (`SO_MARK`), which the enforcer never redirects or
//!   blocks again; a destination that is the proxy itself is refused (no loops).
//! - Kernel-redirected connections must be in the proxy's network namespace: a connect in another namespace is
//!   rewritten to *that* namespace's loopback, where no proxy listens (it fails with ECONNREFUSED).

mod hosts;
pub mod sniff;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use ringwatch_core::compiled::{HostRule, NetAction};
use ringwatch_core::event::{HttpInfo, NetworkInfo, TlsInfo};
use ringwatch_core::pipeline::EventSender;
use ringwatch_core::{Action, Activity, Backend, Domain, Event, Mode, SourceError, SourceKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;

pub use hosts::HostRules;
use sniff::{Sniffed, sniff};

/// Backend name in logs and errors.
const NAME: &str = "network/proxy";

/// `SO_MARK` of the proxy's outbound sockets; the enforcer's programs let such sockets through untouched.
pub const PROXY_MARK: u32 = 0x5257_0001;

/// Relay buffer per direction and connection.
const RELAY_BUFFER: usize = 32 * 1024;

/// How long the proxy waits for a hook client's header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the proxy waits for the original destination to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how the proxy listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Address both listeners bind (loopback: redirected connections stay on this host). Default `127.0.0.1`;
    /// kernel redirect needs an IPv4 address (IPv6 sockets reach it through the IPv4-mapped address).
    pub listen: IpAddr,
    /// Port for connections the kernel redirected (`connect4/6` rewrite); 0 picks a free one.
    pub kernel_port: u16,
    /// Port for connections the preload hook sends, each starting with a [`HookHeader`]; 0 picks a free one.
    pub hook_port: u16,
    /// How long to wait for the client's first bytes (HTTP request / TLS ClientHello) before relaying without
    /// them: a server-speaks-first protocol (SMTP, SSH) sends nothing until the server does.
    pub peek_timeout: Duration,
    /// Most client bytes held back to find the Host header or the SNI.
    pub peek_bytes: usize,
    /// Most connections relayed at once; more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            kernel_port: 0,
            hook_port: 0,
            peek_timeout: Duration::from_millis(300),
            // One full TLS record (16 KiB + 5 header bytes) holds any ClientHello that fits a record.
            peek_bytes: 17 * 1024,
            max_connections: 2048,
        }
    }
}

/// The destination a redirected connection was going to, as the kernel (or the hook header) reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalDst {
    /// The address the client asked for.
    pub addr: SocketAddr,
    /// The client's pid, when known (kernel: trusted; hook header: reported by the client).
    pub pid: Option<u32>,
    /// The redirect rule that sent it here, when known.
    pub rule: Option<String>,
}

/// Where the proxy looks up the original destination of a connection accepted on the kernel port, by the
/// client's local port (the enforcer's BPF map). Implemented by the kernel enforcer.
pub trait OriginalDstLookup: Send + Sync {
    /// Removes and returns the entry of the client whose local port is `peer_port`.
    fn take(&self, peer_port: u16) -> Option<OriginalDst>;
}

/// The in-band header a preload-redirected client sends first on the hook port (28 bytes, no reply):
/// magic `RWPX` | version u8 = 1 | family u8 (4 or 6) | port u16 BE | address, 16 bytes (IPv4 in the first 4, rest
/// zero) | pid u32 BE (untrusted). The wire format has one definition, shared with the hook:
/// [`ringwatch_hook_protocol::encode_proxy_header`] / [`ringwatch_hook_protocol::decode_proxy_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookHeader {
    /// The destination the client asked for.
    pub dst: SocketAddr,
    /// The pid the client says it has.
    pub pid: u32,
}

impl HookHeader {
    /// Length on the wire.
    pub const LEN: usize = ringwatch_hook_protocol::PROXY_HEADER_LEN;

    /// The header's bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        ringwatch_hook_protocol::encode_proxy_header(&mut b, self.dst, self.pid)
            .expect("the buffer is exactly PROXY_HEADER_LEN bytes");
        b
    }

    /// Parses a header; `None` for a wrong magic, version or family.
    pub fn decode(b: &[u8; Self::LEN]) -> Option<HookHeader> {
        ringwatch_hook_protocol::decode_proxy_header(b).ok().map(|(dst, pid)| HookHeader { dst, pid })
    }
}

/// Counters of what the proxy did, for tests, benchmarks and metrics.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections accepted on either port.
    pub accepted: AtomicU64,
    /// Connections relayed to their original destination.
    pub relayed: AtomicU64,
    /// Connections closed by a host rule.
    pub host_blocked: AtomicU64,
    /// Kernel-port connections with no original destination in the map (not redirected by us, or evicted).
    pub unknown_peer: AtomicU64,
    /// Hook-port connections with a bad or missing header.
    pub bad_header: AtomicU64,
    /// Original destinations that could not be reached.
    pub upstream_failed: AtomicU64,
    /// Events produced while no pipeline was attached.
    pub events_unsent: AtomicU64,
}

/// What the backends using the proxy hand it after it started.
#[derive(Default)]
struct Settings {
    events: Option<EventSender>,
    host_rules: Arc<HostRules>,
    kernel_lookup: Option<Arc<dyn OriginalDstLookup>>,
}

/// State every connection task reads.
struct Shared {
    cfg: ProxyConfig,
    kernel_addr: SocketAddr,
    hook_addr: SocketAddr,
    settings: RwLock<Settings>,
    stats: ProxyStats,
    limit: Arc<Semaphore>,
}

/// A running proxy. Dropping it (the last [`shared`] handle) stops both listeners and every relay.
pub struct Proxy {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("kernel_addr", &self.shared.kernel_addr)
            .field("hook_addr", &self.shared.hook_addr)
            .finish()
    }
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Kernel,
    Hook,
}

impl Proxy {
    /// Binds both listeners (in the calling thread's network namespace) and starts relaying.
    pub fn start(cfg: &ProxyConfig) -> Result<Proxy, SourceError> {
        let failed = |step: &str, e: std::io::Error| SourceError::Failed {
            backend: NAME,
            step: step.to_owned(),
            message: e.to_string(),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rw-proxy")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| failed("start runtime", e))?;
        let entered = runtime.enter();
        let kernel =
            listen(SocketAddr::new(cfg.listen, cfg.kernel_port)).map_err(|e| failed("listen on kernel port", e))?;
        let hook = listen(SocketAddr::new(cfg.listen, cfg.hook_port)).map_err(|e| failed("listen on hook port", e))?;
        let kernel_addr = kernel.local_addr().map_err(|e| failed("kernel port address", e))?;
        let hook_addr = hook.local_addr().map_err(|e| failed("hook port address", e))?;
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            kernel_addr,
            hook_addr,
            settings: RwLock::new(Settings::default()),
            stats: ProxyStats::default(),
            limit: Arc::new(Semaphore::new(cfg.max_connections.max(1))),
        });
        runtime.spawn(accept_loop(kernel, Port::Kernel, shared.clone()));
        runtime.spawn(accept_loop(hook, Port::Hook, shared.clone()));
        drop(entered);
        tracing::info!(backend = NAME, %kernel_addr, %hook_addr, "proxy listening");
        Ok(Proxy { shared, runtime: Some(runtime) })
    }

    /// Where kernel-redirected connections arrive.
    pub fn kernel_addr(&self) -> SocketAddr {
        self.shared.kernel_addr
    }

    /// Where preload-redirected connections arrive (each starting with a [`HookHeader`]).
    pub fn hook_addr(&self) -> SocketAddr {
        self.shared.hook_addr
    }

    /// What the proxy did so far.
    pub fn stats(&self) -> &ProxyStats {
        &self.shared.stats
    }

    /// Where the proxy's events go from now on (the last caller wins; before any, they are counted and dropped).
    pub fn set_events(&self, events: EventSender) {
        self.settings().events = Some(events);
    }

    /// The host-name rules applied to every new connection from now on; an invalid glob is refused.
    pub fn set_host_rules(&self, rules: &[HostRule]) -> Result<(), SourceError> {
        let compiled = HostRules::compile(rules).map_err(|message| SourceError::Failed {
            backend: NAME,
            step: "compile host rules".into(),
            message,
        })?;
        self.settings().host_rules = Arc::new(compiled);
        Ok(())
    }

    /// How connections on the kernel port find their original destination (`None`: they are closed at once).
    pub fn set_kernel_lookup(&self, lookup: Option<Arc<dyn OriginalDstLookup>>) {
        self.settings().kernel_lookup = lookup;
    }

    fn settings(&self) -> std::sync::RwLockWriteGuard<'_, Settings> {
        self.shared.settings.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Closes both listeners and every relayed connection; does not wait for them.
            rt.shutdown_background();
        }
    }
}

/// Listen backlog: a connect storm is accepted by two workers; a short queue would drop SYNs and stall clients.
const BACKLOG: u32 = 4096;

/// A listening socket on `addr` (in the calling thread's network namespace); needs a runtime context.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The process-wide proxy: started by the first caller with its `cfg`, shared by every later caller (kernel and
/// user mode use one proxy; later callers' `cfg` is ignored), stopped when the last handle drops.
pub fn shared(cfg: &ProxyConfig) -> Result<Arc<Proxy>, SourceError> {
    static SHARED: Mutex<Weak<Proxy>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(running) = slot.upgrade() {
        return Ok(running);
    }
    let proxy = Arc::new(Proxy::start(cfg)?);
    *slot = Arc::downgrade(&proxy);
    Ok(proxy)
}

async fn accept_loop(listener: TcpListener, port: Port, shared: Arc<Shared>) {
    loop {
        let Ok(permit) = shared.limit.clone().acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(backend = NAME, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            handle(stream, peer, port, &shared).await;
        });
    }
}

/// One connection, from accept to close.
async fn handle(mut client: TcpStream, peer: SocketAddr, port: Port, shared: &Shared) {
    let _ = client.set_nodelay(true);
    let started = Instant::now();
    let (orig, source) = match port {
        Port::Kernel => match kernel_original_dst(peer.port(), shared).await {
            Some(orig) => (orig, SourceKind::Ebpf),
            None => {
                shared.stats.unknown_peer.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(backend = NAME, %peer, "kernel-port connection without an original destination");
                return;
            }
        },
        Port::Hook => {
            let mut header = [0u8; HookHeader::LEN];
            let read = tokio::time::timeout(HEADER_TIMEOUT, client.read_exact(&mut header)).await;
            match read.ok().and_then(Result::ok).and_then(|_| HookHeader::decode(&header)) {
                Some(h) => (OriginalDst { addr: h.dst, pid: Some(h.pid), rule: None }, SourceKind::Preload),
                None => {
                    shared.stats.bad_header.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    };
    if orig.addr == shared.kernel_addr || orig.addr == shared.hook_addr {
        return; // a connection to the proxy itself: no loops
    }
    let (events, host_rules) = {
        let s = shared.settings.read().unwrap_or_else(|e| e.into_inner());
        (s.events.clone(), s.host_rules.clone())
    };
    let mut conn = ConnEvent { orig, peer, local: shared.kernel_addr, source, events, shared };
    if port == Port::Hook {
        conn.local = shared.hook_addr;
    }

    // Without host rules nothing waits for the name: connect upstream at once, so a server that speaks first is
    // not held up by the peek. With host rules the server is not contacted before the name is judged.
    let mut early = None;
    if host_rules.is_empty() {
        match connect_upstream(conn.orig.addr, port == Port::Kernel).await {
            Ok(s) => early = Some(s),
            Err(e) => return upstream_failed(shared, conn.orig.addr, &e),
        }
    }

    // Peek: read (and hold back) the client's first bytes until a name shows, the protocol is neither HTTP nor
    // TLS, the buffer is full, the server (when already connected) speaks first, or the client stays silent for
    // peek_timeout.
    let mut first = Vec::with_capacity(4096);
    let mut sniffed = Sniffed::NeedMore;
    let deadline = tokio::time::Instant::now() + shared.cfg.peek_timeout;
    let mut client_closed = false;
    while sniffed == Sniffed::NeedMore && first.len() < shared.cfg.peek_bytes {
        let mut chunk = [0u8; 4096];
        let want = chunk.len().min(shared.cfg.peek_bytes - first.len());
        tokio::select! {
            read = tokio::time::timeout_at(deadline, client.read(&mut chunk[..want])) => match read {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    client_closed = true;
                    break;
                }
                Ok(Ok(n)) => {
                    first.extend_from_slice(&chunk[..n]);
                    sniffed = sniff(&first);
                }
                Err(_) => break, // a silent client: relay what we have
            },
            _ = server_readable(early.as_ref()) => break, // the server speaks first
        }
    }
    let (http, tls) = match &sniffed {
        Sniffed::Http(host) => (host.clone().map(|host| HttpInfo { host }), None),
        Sniffed::Tls(sni) => (None, sni.clone().map(|sni| TlsInfo { sni })),
        Sniffed::NeedMore | Sniffed::Other => (None, None),
    };
    let name = http.as_ref().map(|h| h.host.clone()).or_else(|| tls.as_ref().map(|t| t.sni.clone()));
    let decision = name.as_deref().and_then(|n| host_rules.decide(n).map(|(id, a)| (id.to_owned(), a)));
    let host_decided = decision.is_some();
    let (action, rule) = match decision {
        Some((id, NetAction::Block)) => (Action::Blocked, Some(id)),
        Some((id, NetAction::Alert)) => (Action::Alerted, Some(id)),
        Some((id, _)) => (Action::Redirected, Some(id)),
        None => (Action::Redirected, conn.orig.rule.clone()),
    };
    // One connect event per redirected connection. A kernel redirect wrote none, so the proxy reports it; a hook
    // redirect was reported by the hook's backend (rule, pid from the socket peer), so the proxy adds its connect
    // only when a host rule changed the outcome. Host/SNI are also on the close event below.
    if port == Port::Kernel || host_decided {
        conn.emit(Activity::Connect, action, rule.clone(), &http, &tls, None);
    }
    if action == Action::Blocked {
        shared.stats.host_blocked.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(backend = NAME, host = ?name, "closed by host rule");
        return; // nothing reached the server; dropping closes the client
    }

    let mut server = match early {
        Some(s) => s,
        None => match connect_upstream(conn.orig.addr, port == Port::Kernel).await {
            Ok(s) => s,
            Err(e) => return upstream_failed(shared, conn.orig.addr, &e),
        },
    };
    shared.stats.relayed.fetch_add(1, Ordering::Relaxed);
    let mut bytes_out = first.len() as u64;
    let mut bytes_in = 0u64;
    if server.write_all(&first).await.is_ok() {
        if client_closed {
            // The client is done sending: pass its EOF on and relay the answer.
            let _ = server.shutdown().await;
            bytes_in = tokio::io::copy(&mut server, &mut client).await.unwrap_or(0);
        } else if let Ok((out, inb)) =
            tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, RELAY_BUFFER, RELAY_BUFFER).await
        {
            bytes_out += out;
            bytes_in = inb;
        }
    }
    let close = CloseFacts { bytes_out, bytes_in, duration: started.elapsed() };
    conn.emit(Activity::Close, Action::Redirected, rule, &http, &tls, Some(close));
}

/// Waits until `server` has data (or EOF) to read; never, without a server.
async fn server_readable(server: Option<&TcpStream>) {
    match server {
        Some(s) => {
            let _ = s.readable().await;
        }
        None => std::future::pending().await,
    }
}

fn upstream_failed(shared: &Shared, dst: SocketAddr, e: &std::io::Error) {
    shared.stats.upstream_failed.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(backend = NAME, %dst, error = %e, "original destination unreachable");
}

/// The kernel map entry for `peer_port`. The enforcer's `sockops` program writes it before the client's final
/// handshake ACK, so it is there before accept returns; a few short retries cover a busy CPU anyway.
async fn kernel_original_dst(peer_port: u16, shared: &Shared) -> Option<OriginalDst> {
    let lookup = shared.settings.read().unwrap_or_else(|e| e.into_inner()).kernel_lookup.clone()?;
    for _ in 0..3 {
        if let Some(orig) = lookup.take(peer_port) {
            return Some(orig);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// Connects to the original destination from a socket marked [`PROXY_MARK`], so the enforcer lets it through.
/// Marking needs CAP_NET_ADMIN: an unprivileged agent (user mode only, no kernel redirect to loop through) relays
/// unmarked, but a kernel-redirected connection is never relayed from an unmarked socket, which the kernel would
/// redirect back here.
async fn connect_upstream(addr: SocketAddr, must_mark: bool) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Err(e) = nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Mark, &PROXY_MARK) {
        if must_mark {
            return Err(std::io::Error::other(format!("cannot mark the upstream socket (would loop): {e}")));
        }
        tracing::debug!(backend = NAME, error = %e, "cannot mark proxy socket");
    }
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Facts of a finished relay.
struct CloseFacts {
    bytes_out: u64,
    bytes_in: u64,
    duration: Duration,
}

/// What every event of one connection shares.
struct ConnEvent<'a> {
    orig: OriginalDst,
    peer: SocketAddr,
    local: SocketAddr,
    source: SourceKind,
    events: Option<EventSender>,
    shared: &'a Shared,
}

impl ConnEvent<'_> {
    fn emit(
        &self,
        activity: Activity,
        action: Action,
        rule: Option<String>,
        http: &Option<HttpInfo>,
        tls: &Option<TlsInfo>,
        close: Option<CloseFacts>,
    ) {
        let Some(events) = &self.events else {
            self.shared.stats.events_unsent.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mode = if self.source == SourceKind::Preload { Mode::User } else { Mode::Kernel };
        let mut ev = Event::new(Domain::Network, activity, Backend { mode, source: self.source });
        ev.process.pid = self.orig.pid.unwrap_or(0);
        ev.action = action;
        ev.rule = rule;
        ev.network = Some(NetworkInfo {
            protocol: "tcp".into(),
            src_ip: Some(self.peer.ip().to_string()),
            src_port: Some(self.peer.port()),
            dst_ip: Some(self.local.ip().to_string()),
            dst_port: Some(self.local.port()),
            direction: Some("outbound".into()),
            bytes_out: close.as_ref().map(|c| c.bytes_out),
            bytes_in: close.as_ref().map(|c| c.bytes_in),
            original_dst: Some(self.orig.addr.to_string()),
            http: http.clone(),
            tls: tls.clone(),
            duration_us: close.as_ref().map(|c| u64::try_from(c.duration.as_micros()).unwrap_or(u64::MAX)),
            ..NetworkInfo::default()
        });
        events.send(ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_header_round_trips_for_both_families() {
        for dst in ["10.1.2.3:443".parse().expect("v4"), "[2001:db8::1]:80".parse().expect("v6")] {
            let h = HookHeader { dst, pid: 4242 };
            let b = h.encode();
            assert_eq!(&b[..4], b"RWPX");
            assert_eq!(HookHeader::decode(&b), Some(h));
        }
        let mut b = HookHeader { dst: "1.2.3.4:5".parse().expect("v4"), pid: 1 }.encode();
        assert_eq!(&b[8..12], &[1, 2, 3, 4]);
        assert!(b[12..24].iter().all(|x| *x == 0));
        assert_eq!(&b[6..8], &5u16.to_be_bytes());
        b[5] = 5;
        assert_eq!(HookHeader::decode(&b), None);
    }
}
