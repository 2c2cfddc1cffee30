//! The local proxy on its own, as the preload hook uses it (the kernel-port path is covered with the real kernel
//! in `network_enforce.rs`): the 28-byte header names the destination, the proxy relays both ways and reports the
//! HTTP Host / TLS SNI, the claimed pid and the byte counts; a host rule closes before the server sees a byte; a
//! server-speaks-first protocol is relayed after the peek timeout; bad headers, unknown kernel peers and loops are
//! refused; one process-wide proxy is shared. Loopback only, real sockets, no privilege needed.
//!
//! `proxy_added_latency_and_throughput` (ignored by default; run with `--release -- --ignored --nocapture`)
//! measures what the proxy costs.

use std::io::{Read, Write};
use std::net::{Shutdown as NetShutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ringwatch_core::compiled::{HostRule, NetAction};
use ringwatch_core::proc_table::ProcessTable;
use ringwatch_core::sink::{MemorySink, Sink};
use ringwatch_core::{Action, Activity, Event, Mode, Pipeline, SourceKind};
use ringwatch_domains::network::proxy::sniff::client_hello;
use ringwatch_domains::network::proxy::{self, HookHeader, Proxy, ProxyConfig};

/// A proxy with its events collected in memory.
struct Harness {
    proxy: Option<Proxy>,
    events: Arc<Mutex<Vec<Event>>>,
    consumer: Option<JoinHandle<()>>,
}

impl Harness {
    fn start(cfg: ProxyConfig, host_rules: &[HostRule]) -> Harness {
        let proxy = Proxy::start(&cfg).expect("proxy starts on loopback");
        proxy.set_host_rules(host_rules).expect("valid host rules");
        let pipeline = Pipeline::new(1 << 14);
        proxy.set_events(pipeline.sender("network/proxy"));
        let memory = MemorySink::default();
        let events = memory.events();
        let consumer = thread::spawn(move || {
            let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(memory)];
            pipeline.run("test-host", &mut ProcessTable::empty(), &mut [], &mut sinks);
        });
        Harness { proxy: Some(proxy), events, consumer: Some(consumer) }
    }

    fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().expect("running")
    }

    /// Connects to the hook port and sends the header for `dst` with `pid`.
    fn hook_connect(&self, dst: SocketAddr, pid: u32) -> TcpStream {
        let mut s = TcpStream::connect(self.proxy().hook_addr()).expect("connect to the hook port");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        s.write_all(&HookHeader { dst, pid }.encode()).expect("send header");
        s
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(e) = self.events.lock().expect("sink lock").iter().find(|e| pred(e)) {
                return e.clone();
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("no {what} event within 5 s: {:?}", self.events.lock().expect("sink lock"));
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        drop(self.proxy.take()); // drops the event sender: the pipeline ends
        if let Some(c) = self.consumer.take() {
            let _ = c.join();
        }
    }
}

/// A loopback server: `greeting` is written on accept (server speaks first) or, when empty, it answers an HTTP
/// request with `HTTP/1.0 200 OK` and closes. Counts accepted connections.
struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
}

impl Upstream {
    fn start(greeting: &'static [u8]) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    if !greeting.is_empty() {
                        let _ = s.write_all(greeting);
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 || s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        return;
                    }
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello");
                });
            }
        });
        Upstream { addr, accepted }
    }
}

fn read_all(mut s: TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn hook_port_relays_to_the_header_destination_and_reports_host_pid_and_bytes() {
    let h = Harness::start(ProxyConfig::default(), &[]);
    let up = Upstream::start(b"");
    let mut s = h.hook_connect(up.addr, 4242);
    let request = b"GET /x HTTP/1.1\r\nHost: Api.Example.test:8080\r\n\r\n";
    s.write_all(request).expect("request");
    let reply = read_all(s);
    assert!(reply.starts_with("HTTP/1.0 200 OK") && reply.ends_with("hello"), "{reply}");
    let close = h.wait_for("close", |e| e.activity == Activity::Close);
    assert_eq!(
        (close.action, close.backend.mode, close.backend.source),
        (Action::Redirected, Mode::User, SourceKind::Preload)
    );
    assert!(!close.trusted, "the header's facts come from the hooked process");
    assert_eq!(close.process.pid, 4242);
    let n = close.network.expect("network facts");
    assert_eq!(n.http.map(|x| x.host).as_deref(), Some("api.example.test"));
    assert_eq!(n.original_dst, Some(up.addr.to_string()));
    assert_eq!(n.dst_port, Some(h.proxy().hook_addr().port()));
    assert_eq!(n.bytes_out, Some(request.len() as u64), "the request, header excluded");
    assert_eq!(n.bytes_in, Some(43));
    assert!(n.duration_us.is_some());
    // The hook's backend reported this connect when it redirected it; the proxy adds no second one.
    let connects = h.events.lock().expect("sink lock").iter().filter(|e| e.activity == Activity::Connect).count();
    assert_eq!(connects, 0, "no connect event from the proxy for a hook-redirected connection");
}

#[test]
fn a_host_rule_closes_before_the_server_sees_a_byte() {
    let rules = [HostRule { id: "no-blocked".into(), hosts: vec!["blocked.test".into()], action: NetAction::Block }];
    let h = Harness::start(ProxyConfig::default(), &rules);
    let up = Upstream::start(b"");
    let mut s = h.hook_connect(up.addr, 7);
    s.write_all(&client_hello("Blocked.Test")).expect("client hello");
    assert_eq!(read_all(s), "", "closed without a reply");
    let ev = h.wait_for("blocked", |e| e.action == Action::Blocked);
    assert_eq!(ev.rule.as_deref(), Some("no-blocked"));
    assert_eq!(ev.network.and_then(|n| n.tls).map(|t| t.sni).as_deref(), Some("blocked.test"));
    assert_eq!(up.accepted.load(Ordering::SeqCst), 0, "the server never saw the connection");
    assert_eq!(h.proxy().stats().host_blocked.load(Ordering::Relaxed), 1);

    // Another name through the same rules is relayed (TLS bytes reach the server unchanged).
    let echo = Upstream::start(b"");
    let mut s = h.hook_connect(echo.addr, 8);
    s.write_all(&client_hello("fine.test")).expect("client hello");
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("then a request");
    assert!(read_all(s).contains("200 OK"));
    let ev = h.wait_for("relayed TLS", |e| e.process.pid == 8 && e.activity == Activity::Close);
    assert_eq!(ev.network.and_then(|n| n.tls).map(|t| t.sni).as_deref(), Some("fine.test"));
}

/// Connects through the hook port to a server that speaks first; returns how long its banner took.
fn banner_delay(h: &Harness, pid: u32) -> Duration {
    let up = Upstream::start(b"SSH-2.0-test\r\n");
    let mut s = h.hook_connect(up.addr, pid);
    let started = Instant::now();
    let mut banner = [0u8; 14];
    s.read_exact(&mut banner).expect("banner relayed");
    let delay = started.elapsed();
    assert_eq!(&banner, b"SSH-2.0-test\r\n");
    s.write_all(b"ping").expect("client speaks");
    let mut echo = [0u8; 4];
    s.read_exact(&mut echo).expect("echo");
    assert_eq!(&echo, b"ping");
    s.shutdown(NetShutdown::Write).expect("half close");
    let _ = read_all(s);
    delay
}

#[test]
fn a_server_that_speaks_first_waits_for_the_peek_only_when_host_rules_need_the_name() {
    // No host rules: the proxy connects upstream at once and stops peeking when the server speaks.
    let cfg = ProxyConfig { peek_timeout: Duration::from_secs(5), ..ProxyConfig::default() };
    let h = Harness::start(cfg, &[]);
    let delay = banner_delay(&h, 9);
    assert!(delay < Duration::from_secs(2), "the banner waited {delay:?} for a peek nobody needs");
    let ev = h.wait_for("close", |e| e.activity == Activity::Close);
    let n = ev.network.expect("network facts");
    assert!(n.http.is_none() && n.tls.is_none());
    assert_eq!((n.bytes_out, n.bytes_in), (Some(4), Some(18)));

    // With host rules the server is not contacted before the client's first bytes were judged: the banner comes
    // after the peek timeout.
    let rules = [HostRule { id: "h".into(), hosts: vec!["x.test".into()], action: NetAction::Block }];
    let cfg = ProxyConfig { peek_timeout: Duration::from_millis(300), ..ProxyConfig::default() };
    let h = Harness::start(cfg, &rules);
    let delay = banner_delay(&h, 10);
    assert!(delay >= Duration::from_millis(300) && delay < Duration::from_secs(3), "banner after {delay:?}");
}

#[test]
fn bad_headers_unknown_kernel_peers_and_loops_are_refused() {
    let h = Harness::start(ProxyConfig::default(), &[]);
    let up = Upstream::start(b"");
    // Garbage instead of a header.
    let mut s = TcpStream::connect(h.proxy().hook_addr()).expect("connect");
    s.write_all(&[0x42; 28]).expect("garbage");
    assert_eq!(read_all(s), "");
    // A connection on the kernel port that no BPF program redirected.
    let s = TcpStream::connect(h.proxy().kernel_addr()).expect("connect");
    assert_eq!(read_all(s), "");
    // A header naming the proxy itself.
    let mut s = h.hook_connect(h.proxy().hook_addr(), 1);
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("request");
    assert_eq!(read_all(s), "");
    let stats = h.proxy().stats();
    assert_eq!(stats.bad_header.load(Ordering::Relaxed), 1);
    assert_eq!(stats.unknown_peer.load(Ordering::Relaxed), 1);
    assert_eq!(stats.relayed.load(Ordering::Relaxed), 0);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 0);
}

#[test]
fn one_process_wide_proxy_serves_every_caller_until_the_last_drops() {
    let a = proxy::shared(&ProxyConfig::default()).expect("first caller starts it");
    let b = proxy::shared(&ProxyConfig { peek_bytes: 1, ..ProxyConfig::default() }).expect("second caller shares");
    assert!(Arc::ptr_eq(&a, &b));
    let hook = a.hook_addr();
    drop(a);
    assert!(TcpStream::connect(hook).is_ok(), "still running while one handle is alive");
    drop(b);
    thread::sleep(Duration::from_millis(100));
    assert!(TcpStream::connect(hook).is_err(), "stopped with the last handle");
}

/// Added latency (p50/p99 over 1,000 short request/response connections) and bulk throughput through the hook
/// port, against the same server reached directly.
#[test]
#[ignore = "benchmark: cargo test --release -p ringwatch-domains --test network_proxy -- --ignored --nocapture"]
fn proxy_added_latency_and_throughput() {
    let h = Harness::start(ProxyConfig::default(), &[]);
    let up = Upstream::start(b"");
    let request = b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n";
    let run = |proxied: bool| {
        let mut times = Vec::with_capacity(1000);
        for _ in 0..1000 {
            let t = Instant::now();
            let mut s = if proxied { h.hook_connect(up.addr, 1) } else { TcpStream::connect(up.addr).expect("direct") };
            s.write_all(request).expect("request");
            let reply = read_all(s);
            assert!(reply.ends_with("hello"));
            times.push(t.elapsed());
        }
        times.sort();
        (times[499], times[989])
    };
    let (d50, d99) = run(false);
    let (p50, p99) = run(true);
    println!("direct   p50 {d50:?} p99 {d99:?}");
    println!("proxied  p50 {p50:?} p99 {p99:?}");
    println!("added    p50 {:?} p99 {:?}", p50.saturating_sub(d50), p99.saturating_sub(d99));

    // Bulk: 1 GiB client -> server through the proxy and directly.
    let sink = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let sink_addr = sink.local_addr().expect("address");
    thread::spawn(move || {
        for s in sink.incoming().flatten() {
            thread::spawn(move || {
                let mut s = s;
                let mut buf = vec![0u8; 1 << 16];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                let _ = s.write_all(b"k");
            });
        }
    });
    let total: u64 = 1 << 30;
    let bulk = |proxied: bool| {
        let mut s = if proxied { h.hook_connect(sink_addr, 1) } else { TcpStream::connect(sink_addr).expect("direct") };
        let buf = vec![0u8; 1 << 16];
        let t = Instant::now();
        let mut left = total;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            s.write_all(&buf[..n]).expect("write");
            left -= n as u64;
        }
        s.shutdown(NetShutdown::Write).expect("half close");
        let _ = read_all(s);
        total as f64 / t.elapsed().as_secs_f64() / (1 << 20) as f64
    };
    let direct = bulk(false);
    let proxied = bulk(true);
    println!("bulk 1 GiB: direct {direct:.0} MiB/s, proxied {proxied:.0} MiB/s ({:.2}x)", proxied / direct);
}
