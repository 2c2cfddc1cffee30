//! The preload network backend end to end, as root, in private network namespaces: the hook library injected with
//! LD_PRELOAD into the C helper `tests/data/net_client.c` (compiled at test time, dynamically and once with
//! `-static`), a `NetworkPreload` agent on a temporary socket, real servers (the same helper's `serve` mode)
//! inside the namespace, the real policy crate for block and redirect rules, and the real loopback proxy for
//! redirects.
//!
//! Known gaps are asserted, not hidden: a static binary and a raw `syscall(SYS_connect)` are not seen.

mod common;

use std::fs;
use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::netns::NetNs;
use common::{Running, build_c_helpers, hook_lib, ok_or_skip, root_and_hook_or_skip};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, send, socket};
use ringwatch_core::{Action, Activity, Decider, Event, ObserveAll};
use ringwatch_domains::network::preload::{NetVerdicts, NetworkPreload, NetworkPreloadConfig};
use ringwatch_domains::network::proxy::{Proxy, ProxyConfig};
use ringwatch_hook_protocol::{HEADER_LEN, MessageKind, NET_LEN};
use ringwatch_policy::Policy;

const NAME: &str = "network/preload";

fn skip() -> bool {
    if !root_and_hook_or_skip("network namespaces, other processes' /proc") {
        return true;
    }
    if helpers().is_none() {
        eprintln!("skipping: gcc could not build tests/data/net_client.c");
        return true;
    }
    false
}

/// The helper, dynamic and static.
struct Helpers {
    dynamic: PathBuf,
    fully_static: PathBuf,
    malloc_trap: PathBuf,
}

fn helpers() -> Option<&'static Helpers> {
    static BINS: OnceLock<Option<Helpers>> = OnceLock::new();
    BINS.get_or_init(|| {
        let [dynamic, fully_static, malloc_trap] = build_c_helpers(
            "network-preload",
            [
                (&["-Wall", "-O1"], "net_client.c", "net_client"),
                (&["-static", "-O1"], "net_client.c", "net_client_static"),
                (&["-shared", "-fPIC", "-Wall"], "malloc_trap.c", "malloc_trap.so"),
            ],
        )?;
        Some(Helpers { dynamic, fully_static, malloc_trap })
    })
    .as_ref()
}

/// A namespace for one test; `None` (after printing why) when it cannot be made.
fn netns(tag: &str) -> Option<NetNs> {
    ok_or_skip(NetNs::new(tag))
}

/// A running agent with the network handler.
struct Agent {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    running: Running,
}

impl Agent {
    fn start(decider: Arc<dyn Decider>, config: NetworkPreloadConfig) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("hook.sock");
        let source = NetworkPreload::start(&socket, decider, config).expect("bind");
        Agent { _dir: dir, socket, running: Running::start(source, 1 << 14) }
    }

    fn start_source(source: NetworkPreload, dir: tempfile::TempDir) -> Agent {
        let socket = source.socket_path().to_owned();
        Agent { _dir: dir, socket, running: Running::start(source, 1 << 14) }
    }

    /// Runs the helper (hooked unless `plain`) inside `ns`; (pid, stdout).
    fn run(&self, ns: &NetNs, bin: &Path, args: &[&str]) -> (u32, String) {
        let mut cmd = ns.command(bin);
        cmd.args(args)
            .env("LD_PRELOAD", hook_lib().expect("checked by skip()"))
            .env("RINGWATCH_HOOK_SOCKET", &self.socket)
            .env("RINGWATCH_HOOK_TIMEOUT_MS", "2000");
        run(&mut cmd)
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        self.running.wait_for(Duration::from_secs(5), pred).unwrap_or_else(|| panic!("no event: {what}"))
    }

    fn events(&self, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
        // Give late reports a moment, then look.
        thread::sleep(Duration::from_millis(300));
        let out = std::cell::RefCell::new(Vec::new());
        let _ = self.running.wait_for(Duration::from_millis(50), |e| {
            if pred(e) && !out.borrow().iter().any(|o: &Event| o.id == e.id) {
                out.borrow_mut().push(e.clone());
            }
            false
        });
        out.into_inner()
    }
}

/// Runs `cmd` to completion (60 s limit); (pid, stdout).
fn run(cmd: &mut Command) -> (u32, String) {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn");
    let pid = child.id();
    let mut out = String::new();
    child.stdout.take().expect("piped").read_to_string(&mut out).expect("read stdout");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "helper hung");
        thread::sleep(Duration::from_millis(10));
    }
    (pid, out)
}

/// A `serve` helper inside `ns` on 127.0.0.1:`port` for `ms`, not hooked; returns once it listens.
fn server(ns: &NetNs, port: u16, ms: u32) -> Child {
    ns.net_client_server(&helpers().expect("checked by skip()").dynamic, port, ms)
}

fn dst_is(e: &Event, port: u16) -> bool {
    e.network.as_ref().is_some_and(|n| n.dst_port == Some(port))
}

fn policy(yaml: &str) -> Arc<dyn Decider> {
    Arc::new(Policy::from_str(yaml, "test.yaml").expect("valid policy"))
}

#[test]
fn hooked_connect_is_reported_with_destination_pid_and_untrusted() {
    if skip() {
        return;
    }
    let Some(ns) = netns("npc") else { return };
    let mut srv = server(&ns, 8081, 5000);
    let agent = Agent::start(Arc::new(ObserveAll), NetworkPreloadConfig::default());
    let bin = &helpers().expect("checked").dynamic;
    let (pid, out) = agent.run(&ns, bin, &["connect", "127.0.0.1", "8081"]);
    assert_eq!(out.trim(), "ok pong", "the hooked connect works");
    let ev = agent.wait_for("connect to 8081", |e| e.activity == Activity::Connect && dst_is(e, 8081));
    let net = ev.network.as_ref().expect("network facts");
    assert_eq!(ev.process.pid, pid, "pid from SO_PEERCRED");
    assert!(!ev.trusted, "hook facts are untrusted");
    assert_eq!((net.protocol.as_str(), net.dst_ip.as_deref()), ("tcp", Some("127.0.0.1")));
    assert_eq!(net.direction.as_deref(), Some("outbound"));
    assert!(net.src_port.is_some_and(|p| p != 0), "local port after the connect: {net:?}");
    assert_eq!(ev.backend.source.as_str(), "preload");
    assert_eq!(ev.action, Action::Observed);
    // A failed connect keeps its errno through the hook and is not reported (nothing happened).
    let (refused_pid, out) = agent.run(&ns, bin, &["connect", "127.0.0.1", "8099"]);
    assert_eq!(out.trim(), format!("err {}", libc::ECONNREFUSED));
    // An unconnected UDP socket sending 50 datagrams to one destination is reported once.
    let (_, out) = agent.run(&ns, bin, &["udp", "127.0.0.1", "5353", "50"]);
    assert_eq!(out.trim(), "ok");
    let sends = agent.events(|e| e.activity == Activity::Send && dst_is(e, 5353));
    assert_eq!(sends.len(), 1, "one report per socket and destination: {sends:?}");
    assert_eq!(sends[0].network.as_ref().and_then(|n| n.bytes_out), Some(32));
    assert!(agent.events(|e| e.process.pid == refused_pid).is_empty(), "a refused connect is not an event");
    let _ = srv.kill();
    let _ = srv.wait();
    let stopped = agent.running.stop();
    let losses = stopped.losses.get(NAME).copied().unwrap_or_default();
    assert_eq!(losses, (0, 0, 0), "nothing lost or malformed");
}

#[test]
fn hooked_lookups_are_dns_events_and_name_the_later_connect() {
    if skip() {
        return;
    }
    let Some(ns) = netns("npd") else { return };
    let mut srv = server(&ns, 8082, 5000);
    let agent = Agent::start(Arc::new(ObserveAll), NetworkPreloadConfig::default());
    let bin = &helpers().expect("checked").dynamic;
    // `localhost` is in /etc/hosts: a real lookup through NSS that needs no DNS server.
    let (pid, out) = agent.run(&ns, bin, &["resolve", "localhost", "8082"]);
    assert!(out.contains("addr 127.0.0.1") && out.contains("ok pong"), "{out}");
    let ev = agent.wait_for("dns localhost", |e| e.activity == Activity::Dns);
    let dns = ev.network.as_ref().and_then(|n| n.dns.clone()).expect("dns facts");
    assert_eq!((dns.query.as_str(), ev.process.pid, ev.trusted), ("localhost", pid, false));
    assert!(dns.answers.iter().any(|a| a == "127.0.0.1"), "{dns:?}");
    let conn = agent.wait_for("connect after lookup", |e| e.activity == Activity::Connect && dst_is(e, 8082));
    assert_eq!(conn.network.as_ref().and_then(|n| n.dst_name.as_deref()), Some("localhost"));
    let (_, out) = agent.run(&ns, bin, &["hostbyname", "localhost"]);
    assert!(out.contains("addr 127.0.0.1"), "{out}");
    agent.wait_for("gethostbyname dns", |e| {
        e.activity == Activity::Dns
            && e.process.pid != pid
            && e.network.as_ref().and_then(|n| n.dns.as_ref()).is_some_and(|d| d.query == "localhost")
    });
    // A numeric name is not a lookup.
    agent.run(&ns, bin, &["resolve", "127.0.0.1", "8082"]);
    let numeric =
        agent.events(|e| e.network.as_ref().and_then(|n| n.dns.as_ref()).is_some_and(|d| d.query == "127.0.0.1"));
    assert!(numeric.is_empty(), "numeric names are not reported as lookups");
    let _ = srv.kill();
    let _ = srv.wait();
    agent.running.stop();
}

#[test]
fn block_rule_refuses_the_connect_and_the_send_and_other_destinations_still_work() {
    if skip() {
        return;
    }
    let Some(ns) = netns("npb") else { return };
    let mut allowed = server(&ns, 8084, 8000);
    let mut blocked_srv = server(&ns, 8083, 8000);
    let decider = policy(
        "rules:\n  - id: no-8083\n    domain: network\n    match: { dst_port: [8083, 5354] }\n    action: block\n",
    );
    assert!(decider.may_deny(ringwatch_core::Domain::Network));
    let agent = Agent::start(decider, NetworkPreloadConfig::default());
    let bin = &helpers().expect("checked").dynamic;
    let (_, out) = agent.run(&ns, bin, &["connect", "127.0.0.1", "8083"]);
    assert_eq!(out.trim(), format!("err {}", libc::ECONNREFUSED), "a blocked connect fails with ECONNREFUSED");
    let ev = agent.wait_for("blocked connect", |e| e.activity == Activity::Connect && dst_is(e, 8083));
    assert_eq!((ev.action, ev.rule.as_deref()), (Action::Blocked, Some("no-8083")));
    let (_, out) = agent.run(&ns, bin, &["connect", "127.0.0.1", "8084"]);
    assert_eq!(out.trim(), "ok pong", "another destination still works");
    let ev = agent.wait_for("allowed connect", |e| e.activity == Activity::Connect && dst_is(e, 8084));
    assert_eq!(ev.action, Action::Observed);
    let (_, out) = agent.run(&ns, bin, &["udp", "127.0.0.1", "5354", "3"]);
    assert_eq!(out.trim(), format!("err {}", libc::EACCES), "a blocked send fails with EACCES");
    let ev = agent.wait_for("blocked send", |e| e.activity == Activity::Send && dst_is(e, 5354));
    assert_eq!(ev.action, Action::Blocked);
    for s in [&mut allowed, &mut blocked_srv] {
        let _ = s.kill();
        let _ = s.wait();
    }
    agent.running.stop();
}

#[test]
fn redirect_rule_sends_the_connection_through_the_proxy() {
    if skip() {
        return;
    }
    let Some(ns) = netns("npr") else { return };
    let mut srv = server(&ns, 8085, 8000);
    // The proxy runs in the namespace (its listeners and its upstream connections).
    let proxy = ns.spawn(|| Proxy::start(&ProxyConfig::default())).join().expect("proxy thread");
    let proxy = match proxy {
        Ok(p) => Arc::new(p),
        Err(e) => panic!("proxy: {e}"),
    };
    let decider = policy(
        "rules:\n  - id: via-proxy\n    domain: network\n    match: { dst_port: [8085] }\n    action: redirect\n",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let source =
        NetworkPreload::start_with_proxy(&dir.path().join("hook.sock"), decider, NetVerdicts::Auto, proxy.clone())
            .expect("bind");
    let agent = Agent::start_source(source, dir);
    let bin = &helpers().expect("checked").dynamic;
    let (pid, out) = agent.run(&ns, bin, &["http", "127.0.0.1", "8085", "app.example.test"]);
    assert_eq!(out.trim(), "ok pong", "the request reached the real server through the proxy");
    let ev = agent.wait_for("redirected connect", |e| {
        e.activity == Activity::Connect && e.action == Action::Redirected && e.backend.source.as_str() == "preload"
    });
    let net = ev.network.as_ref().expect("network facts");
    assert_eq!(net.original_dst.as_deref(), Some("127.0.0.1:8085"));
    assert_eq!(net.dst_port, Some(proxy.hook_addr().port()), "dst names the proxy");
    assert_eq!((ev.rule.as_deref(), ev.process.pid), (Some("via-proxy"), pid));
    // The proxy's own event carries the Host it saw.
    let host = agent.wait_for("proxy event with Host", |e| {
        e.network.as_ref().and_then(|n| n.http.as_ref()).is_some_and(|h| h.host == "app.example.test")
    });
    assert_eq!(host.network.as_ref().and_then(|n| n.original_dst.as_deref()), Some("127.0.0.1:8085"));
    assert!(proxy.stats().relayed.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    let _ = srv.kill();
    let _ = srv.wait();
    // The proxy holds a sender of the pipeline: stop it first, or the pipeline never sees its last sender go.
    drop(proxy);
    agent.running.stop();
}

#[test]
fn redirect_header_reaches_a_listener_before_the_application_bytes() {
    if skip() {
        return;
    }
    let Some(ns) = netns("nph") else { return };
    // A tiny listener in the namespace standing in for the proxy: records the first bytes it gets.
    let (tx, rx) = std::sync::mpsc::channel();
    let listener =
        ns.spawn(|| std::net::TcpListener::bind("127.0.0.1:0").expect("bind")).join().expect("listener thread");
    let proxy_addr: SocketAddr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        if let Ok((mut c, _)) = listener.accept() {
            let mut got = vec![0u8; 28 + 5];
            let _ = c.read_exact(&mut got);
            let _ = std::io::Write::write_all(&mut c, b"pong\n");
            let _ = tx.send(got);
        }
    });
    let decider =
        policy("rules:\n  - id: r\n    domain: network\n    match: { dst_port: [9999] }\n    action: redirect\n");
    let agent = Agent::start(decider, NetworkPreloadConfig { verdicts: NetVerdicts::Auto, proxy: Some(proxy_addr) });
    let bin = &helpers().expect("checked").dynamic;
    let (pid, out) = agent.run(&ns, bin, &["connect", "10.9.8.7", "9999"]);
    assert_eq!(out.trim(), "ok pong");
    let got = rx.recv_timeout(Duration::from_secs(5)).expect("listener got bytes");
    assert_eq!(&got[..4], b"RWPX");
    assert_eq!(&got[4..8], &[1, 4, (9999u16 >> 8) as u8, (9999u16 & 0xff) as u8]);
    assert_eq!(&got[8..12], &[10, 9, 8, 7]);
    assert!(got[12..24].iter().all(|b| *b == 0));
    assert_eq!(u32::from_be_bytes(got[24..28].try_into().expect("4 bytes")), pid);
    assert_eq!(&got[28..], b"ping\n", "the application's bytes follow the header");
    agent.running.stop();
}

#[test]
fn static_binary_and_raw_syscall_connects_are_not_seen() {
    if skip() {
        return;
    }
    let Some(ns) = netns("npm") else { return };
    let mut srv = server(&ns, 8086, 8000);
    let agent = Agent::start(Arc::new(ObserveAll), NetworkPreloadConfig::default());
    let h = helpers().expect("checked");
    let (static_pid, out) = agent.run(&ns, &h.fully_static, &["connect", "127.0.0.1", "8086"]);
    assert_eq!(out.trim(), "ok pong");
    let (raw_pid, out) = agent.run(&ns, &h.dynamic, &["rawconnect", "127.0.0.1", "8086"]);
    assert_eq!(out.trim(), "ok pong");
    // Control: the same connect through libc is seen, so the two misses are the hook's, not the harness's.
    let (pid, _) = agent.run(&ns, &h.dynamic, &["connect", "127.0.0.1", "8086"]);
    agent.wait_for("control connect", |e| e.activity == Activity::Connect && e.process.pid == pid);
    let missed = agent.events(|e| e.process.pid == static_pid || e.process.pid == raw_pid);
    assert!(missed.is_empty(), "KNOWN GAP: static binaries and raw syscalls bypass the hook; got {missed:?}");
    let _ = srv.kill();
    let _ = srv.wait();
    agent.running.stop();
}

#[test]
fn bad_input_on_the_agent_socket_is_counted_as_malformed() {
    if skip() {
        return;
    }
    let agent = Agent::start(Arc::new(ObserveAll), NetworkPreloadConfig::default());
    let addr = UnixAddr::new(&agent.socket).expect("socket address");
    // A network report with a valid header and a lying body (unknown protocol 99), then noise.
    let mut lying = vec![0u8; NET_LEN];
    lying[..4].copy_from_slice(b"RWHK");
    lying[4..6].copy_from_slice(&1u16.to_le_bytes());
    lying[6..8].copy_from_slice(&MessageKind::NET_REPORT.0.to_le_bytes());
    lying[8..12].copy_from_slice(&(NET_LEN as u32).to_le_bytes());
    lying[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&1u16.to_le_bytes());
    lying[HEADER_LEN + 28] = 4;
    lying[HEADER_LEN + 29] = 99;
    let mut dns_lie = vec![0u8; HEADER_LEN + 28];
    dns_lie[..4].copy_from_slice(b"RWHK");
    dns_lie[4..6].copy_from_slice(&1u16.to_le_bytes());
    dns_lie[6..8].copy_from_slice(&MessageKind::NET_DNS.0.to_le_bytes());
    dns_lie[8..12].copy_from_slice(&((HEADER_LEN + 28) as u32).to_le_bytes());
    dns_lie[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&1u16.to_le_bytes());
    dns_lie[HEADER_LEN + 26] = 200; // answer_count far past the message
    for bytes in [lying, dns_lie, b"garbage that is not a message".to_vec()] {
        let s = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).expect("socket");
        connect(s.as_raw_fd(), &addr).expect("connect to agent");
        send(s.as_raw_fd(), &bytes, MsgFlags::empty()).expect("send");
        thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while agent.running.losses().get(NAME).map_or(0, |l| l.2) < 3 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let stopped = agent.running.stop();
    assert_eq!(stopped.losses.get(NAME).map(|l| l.2), Some(3), "each bad message counted as malformed");
    assert!(stopped.events.iter().all(|e| e.network.is_none()), "no event from bad input");
}

#[test]
fn connect_and_send_hook_paths_never_allocate() {
    if skip() {
        return;
    }
    let Some(ns) = netns("npa") else { return };
    let mut srv = server(&ns, 8087, 8000);
    let h = helpers().expect("checked");
    let preload = format!("{}:{}", h.malloc_trap.display(), hook_lib().expect("checked").display());
    let monitor = Agent::start(Arc::new(ObserveAll), NetworkPreloadConfig::default());
    let verdict =
        Agent::start(Arc::new(ObserveAll), NetworkPreloadConfig { verdicts: NetVerdicts::Always, proxy: None });
    let block = Agent::start(
        policy("rules:\n  - id: b\n    domain: network\n    match: { dst_port: [8088, 5356] }\n    action: block\n"),
        NetworkPreloadConfig::default(),
    );
    let absent = monitor._dir.path().join("absent.sock");
    let armed = |socket: &Path, args: &[&str]| {
        let mut cmd = ns.command(&h.dynamic);
        cmd.args(args).env("LD_PRELOAD", &preload).env("RINGWATCH_HOOK_SOCKET", socket).env("RW_TRAP", "1");
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
        let mut out = String::new();
        let mut err = String::new();
        child.stdout.take().expect("piped").read_to_string(&mut out).expect("stdout");
        child.stderr.take().expect("piped").read_to_string(&mut err).expect("stderr");
        let status = child.wait().expect("wait");
        assert!(!err.contains("malloc_trap"), "allocation on the hook path: {err}");
        assert!(status.code().is_some(), "killed by a signal ({status:?}): {err}");
        out
    };
    // The whole path: session connect + hello, the report (monitor), request + verdict (verdict), and nothing but
    // the failed connect (absent agent).
    for socket in [&monitor.socket, &verdict.socket, &absent] {
        assert_eq!(armed(socket, &["connect", "127.0.0.1", "8087"]).trim(), "ok pong");
        assert_eq!(armed(socket, &["udp", "127.0.0.1", "5355", "3"]).trim(), "ok");
    }
    assert_eq!(armed(&block.socket, &["connect", "127.0.0.1", "8088"]).trim(), format!("err {}", libc::ECONNREFUSED));
    assert_eq!(armed(&block.socket, &["udp", "127.0.0.1", "5356", "3"]).trim(), format!("err {}", libc::EACCES));
    monitor.wait_for("armed connect reported", |e| e.activity == Activity::Connect && dst_is(e, 8087));
    verdict.wait_for("armed connect asked about", |e| e.activity == Activity::Connect && dst_is(e, 8087));
    let _ = srv.kill();
    let _ = srv.wait();
    for a in [monitor, verdict, block] {
        a.running.stop();
    }
}

#[test]
fn hooked_lookup_answered_by_a_local_dns_server_is_a_dns_event() {
    if skip() {
        return;
    }
    if !Path::new("/usr/sbin/dnsmasq").exists() || !Path::new("/usr/bin/unshare").exists() {
        eprintln!("skipping: needs dnsmasq (dnsmasq-base) and unshare (util-linux)");
        return;
    }
    let Some(ns) = netns("npn") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    // A DNS server inside the namespace that knows one name; the helper's resolver is pointed at it through a
    // private mount namespace (so the host's /etc/resolv.conf is untouched).
    let mut dnsmasq = ns
        .command("/usr/sbin/dnsmasq")
        .args([
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--port=53",
            "--address=/db.rw-test.internal/10.77.5.5",
            "--user=root",
        ])
        .arg(format!("--pid-file={}", dir.path().join("dnsmasq.pid").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dnsmasq");
    thread::sleep(Duration::from_millis(300));
    let resolv = dir.path().join("resolv.conf");
    fs::write(&resolv, "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n").expect("resolv.conf");
    let agent = Agent::start(Arc::new(ObserveAll), NetworkPreloadConfig::default());
    let bin = &helpers().expect("checked").dynamic;
    let script = format!(
        "mount --bind {} /etc/resolv.conf && exec {} hostbyname db.rw-test.internal",
        resolv.display(),
        bin.display()
    );
    let mut cmd = ns.command("/usr/bin/unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("LD_PRELOAD", hook_lib().expect("checked"))
        .env("RINGWATCH_HOOK_SOCKET", &agent.socket);
    let (pid, out) = run(&mut cmd);
    assert_eq!(out.trim(), "addr 10.77.5.5", "dnsmasq answered the lookup");
    let ev = agent.wait_for("dns event", |e| {
        e.activity == Activity::Dns
            && e.network.as_ref().and_then(|n| n.dns.as_ref()).is_some_and(|d| d.query == "db.rw-test.internal")
    });
    let dns = ev.network.as_ref().and_then(|n| n.dns.clone()).expect("dns");
    assert_eq!(dns.answers, vec!["10.77.5.5".to_string()]);
    assert_eq!((ev.process.pid, ev.trusted), (pid, false), "unshare and sh exec'd into the helper: same pid");
    let _ = dnsmasq.kill();
    let _ = dnsmasq.wait();
    agent.running.stop();
}
