//! Kernel network enforcement against the real kernel: block (EPERM, allowed destinations still connect, a
//! `blocked` event names the rule), redirect through the proxy (plain HTTP from curl and TLS from
//! `openssl s_client` reach real servers, events carry original_dst, Host and SNI; three concurrent connections each
//! reach their own destination; a host rule refuses), throttle (a 20 MB upload within ±20 % of the rate,
//! unthrottled traffic not slowed), the process conditions (exact executable, directory prefix, `not`, uid,
//! cgroup subtree, first match wins), a clean detach (no program on the cgroup, no qdisc left), an
//! administrator's qdisc left alone, and a clear start error for a rule the kernel cannot evaluate.
//!
//! `kernel_redirect_added_latency_and_throughput` (ignored by default; run with `--release -- --ignored
//! --nocapture`) measures rule evaluation and the redirect path.
//!
//! Each test attaches to a private cgroup, runs its clients in it inside a private network namespace, and its
//! servers in a second namespace joined by a veth pair. Needs root with BPF; skips with a reason otherwise.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ringwatch_core::compiled::{HostRule, NetAction, NetMatch, NetProtocol, NetRule, NetworkPlan};
use ringwatch_core::{Action, Activity, Event, SourceError};
use ringwatch_domains::network::enforce::{EnforceConfig, NetworkEnforcer};
use ringwatch_domains::network::proxy::PROXY_MARK;

use common::netns::{NetNs, TestCgroup};
use common::{Running, ok_or_skip};

/// One enforcer at a time: the detach test looks for our programs by name, and redirect tests share the
/// process-wide proxy.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A Python client: `tcp HOST PORT` prints `ok <first bytes>` or `errno N`; `tcp6` the same over an IPv6 socket
/// to the IPv4-mapped address, `marked` from a socket with `SO_MARK` argv[4]; `udp HOST PORT` sends one datagram; `bulk HOST PORT BYTES` uploads and prints the
/// seconds until the server confirmed.
const CLIENT_PY: &str = r#"
import socket, sys, time
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if mode in ('tcp', 'tcp6', 'marked'):
        if mode == 'marked':
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, int(sys.argv[4]))
            s.settimeout(5)
            s.connect((host, port))
        elif mode == 'tcp6':
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(('::ffff:' + host, port))
        else:
            s = socket.create_connection((host, port), timeout=5)
        print('ok', s.recv(100).decode(errors='replace'))
    elif mode == 'udp':
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', (host, port))
        print('ok')
    elif mode == 'bulk':
        n = int(sys.argv[4])
        s = socket.create_connection((host, port), timeout=120)
        buf = b'\0' * 65536
        t0 = time.monotonic()
        left = n
        while left > 0:
            left -= s.send(buf[:min(left, len(buf))])
        s.shutdown(socket.SHUT_WR)
        s.recv(10)
        print('ok', time.monotonic() - t0)
except OSError as e:
    print('errno', e.errno)
"#;

/// Namespaces (servers, clients) and the clients' cgroup.
struct Net {
    server: NetNs,
    client: NetNs,
    cgroup: TestCgroup,
}

impl Net {
    fn new(tag: &str, subnet: u8) -> Option<Net> {
        for tool in ["python3", "curl", "openssl", "tc", "bpftool"] {
            if Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
                eprintln!("skipping: {tool} is not installed (scripts/install-deps.sh installs it)");
                return None;
            }
        }
        if !NetworkEnforcer::probe().available {
            eprintln!("skipping: network enforcement unavailable here: {}", NetworkEnforcer::probe().detail);
            return None;
        }
        let (server, client) = ok_or_skip(NetNs::veth_pair(tag, subnet))?;
        let cgroup = ok_or_skip(TestCgroup::new(tag))?;
        Some(Net { server, client, cgroup })
    }

    fn server_ip(&self) -> Ipv4Addr {
        self.server.addr().expect("veth address")
    }

    /// A command run in the clients' namespace and cgroup.
    fn client_cmd(&self, program: &str) -> Command {
        let mut cmd = self.client.command(program);
        self.cgroup.command_into(&mut cmd);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs the Python client; returns (pid, stdout line).
    fn py(&self, args: &[&str]) -> (u32, String) {
        let child = self
            .client_cmd("python3")
            .arg("-c")
            .arg(CLIENT_PY)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn python3");
        let pid = child.id();
        let out = child.wait_with_output().expect("python3 ran");
        (pid, String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Starts the enforcer from a thread inside the clients' namespace (so the proxy and the qdiscs live there).
    fn start(&self, plan: NetworkPlan) -> Result<NetworkEnforcer, SourceError> {
        let cfg = EnforceConfig::for_cgroup(self.cgroup.path());
        self.client.spawn(move || NetworkEnforcer::start(&plan, &cfg)).join().expect("start thread did not panic")
    }
}

/// The seconds a `bulk` upload took, from the client's `ok <secs>` line.
fn upload_secs(out: &str) -> f64 {
    out.strip_prefix("ok ").and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("upload: {out}"))
}

/// What a test server does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serve {
    /// Writes `port:<port>` at once (the server speaks first).
    Greet,
    /// Reads until EOF, then answers `done`.
    Drain,
    /// Reads a request head (up to an empty line), then answers `port:<port>` (the client speaks first).
    Http,
}

/// A TCP server in the servers' namespace; waits `delay` after accept, then serves.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(ns: &NetNs, port: u16, delay: Duration, serve: Serve) -> Server {
        let ip = ns.addr().expect("veth address");
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let flag = stop.clone();
        let thread = ns.spawn(move || {
            use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
            use std::os::fd::AsFd;
            let listener = TcpListener::bind((ip, port)).expect("bind test server");
            ready_tx.send(()).expect("signal ready");
            while !flag.load(Ordering::Relaxed) {
                let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
                if !matches!(poll(&mut fds, PollTimeout::from(50u16)), Ok(n) if n > 0) {
                    continue;
                }
                let Ok((mut s, _)) = listener.accept() else { continue };
                thread::spawn(move || {
                    thread::sleep(delay);
                    let greeting = format!("port:{port}");
                    let mut buf = vec![0u8; 1 << 16];
                    match serve {
                        Serve::Greet => {
                            let _ = s.write_all(greeting.as_bytes());
                        }
                        Serve::Drain => {
                            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                            let _ = s.write_all(b"done");
                        }
                        Serve::Http => {
                            let mut head = Vec::new();
                            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                                match s.read(&mut buf) {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => head.extend_from_slice(&buf[..n]),
                                }
                            }
                            let _ = s.write_all(greeting.as_bytes());
                        }
                    }
                });
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("test server ready");
        Server { stop, thread: Some(thread) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A server program (python http.server, openssl s_server) in the servers' namespace, killed on drop.
struct Program(std::process::Child);

impl Program {
    fn start(mut cmd: Command, ns: &NetNs, ip: Ipv4Addr, port: u16) -> Program {
        let child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn server");
        let program = Program(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let up = ns.spawn(move || std::net::TcpStream::connect((ip, port)).is_ok()).join().unwrap_or(false);
            if up {
                return program;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("server on {ip}:{port} did not come up");
    }

    /// Kills it and returns what it wrote to stderr.
    fn stop(mut self) -> String {
        let _ = self.0.kill();
        let mut err = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = self.0.wait();
        err
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rule(id: &str, action: NetAction, matcher: NetMatch) -> NetRule {
    NetRule { id: id.into(), action, matcher, not: None }
}

fn to(ip: Ipv4Addr, ports: &[(u16, u16)]) -> NetMatch {
    NetMatch {
        dst: vec![(ip.into(), 32)],
        dst_ports: ports.to_vec(),
        protocol: Some(NetProtocol::Tcp),
        ..Default::default()
    }
}

fn wait(run: &Running, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
    match run.wait_for(Duration::from_secs(10), pred) {
        Some(e) => e,
        None => panic!("no {what} event within 10 s"),
    }
}

fn orig(e: &Event) -> Option<String> {
    e.network.as_ref().and_then(|n| n.original_dst.clone())
}

/// Names of loaded BPF programs (`bpftool prog show`), or None without bpftool.
fn loaded_programs() -> Option<String> {
    let out = Command::new("bpftool").args(["prog", "show"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("command runs");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn block_rule_fails_connect_and_send_with_eperm_and_allowed_destinations_still_connect() {
    let _serial = serial();
    let Some(net) = Net::new("eb", 61) else { return };
    let ip = net.server_ip();
    let _open = Server::start(&net.server, 8080, Duration::ZERO, Serve::Greet);
    let _closed = Server::start(&net.server, 8081, Duration::ZERO, Serve::Greet);
    let mut udp = to(ip, &[(9999, 9999)]);
    udp.protocol = Some(NetProtocol::Udp);
    let plan = NetworkPlan {
        rules: vec![rule("no-8081", NetAction::Block, to(ip, &[(8081, 8081)])), rule("no-udp", NetAction::Block, udp)],
        host_rules: vec![],
    };
    let enforcer = net.start(plan).expect("start enforcer");
    let run = Running::start(enforcer, 1 << 12);
    let ips = ip.to_string();

    let (_, allowed) = net.py(&["tcp", &ips, "8080"]);
    assert_eq!(allowed, "ok port:8080", "an allowed destination still connects");
    let (pid, blocked) = net.py(&["tcp", &ips, "8081"]);
    assert_eq!(blocked, "errno 1", "connect to a blocked destination fails with EPERM");
    let (pid6, blocked6) = net.py(&["tcp6", &ips, "8081"]);
    assert_eq!(blocked6, "errno 1", "an IPv6 socket to the IPv4-mapped address is blocked too");
    let mark = PROXY_MARK.to_string();
    let (_, marked) = net.py(&["marked", &ips, "8081", &mark]);
    assert_eq!(marked, "ok port:8081", "a socket with the proxy's mark is never blocked or redirected");
    let (upid, sent) = net.py(&["udp", &ips, "9999"]);
    assert_eq!(sent, "errno 1", "an unconnected UDP send to a blocked destination fails with EPERM");

    let ev = wait(&run, "blocked connect", |e| e.action == Action::Blocked && e.process.pid == pid);
    assert_eq!((ev.activity, ev.rule.as_deref()), (Activity::Connect, Some("no-8081")));
    let cgroup = format!("/{}", net.cgroup.path().file_name().expect("cgroup dir name").to_string_lossy());
    assert_eq!(ev.process.cgroup.as_deref(), Some(cgroup.as_str()), "the acting process's cgroup");
    let n = ev.network.expect("network facts");
    assert_eq!((n.dst_ip.as_deref(), n.dst_port, n.protocol.as_str()), (Some(ips.as_str()), Some(8081), "tcp"));
    let ev6 = wait(&run, "blocked IPv6 connect", |e| e.action == Action::Blocked && e.process.pid == pid6);
    assert_eq!(ev6.network.and_then(|n| n.dst_ip), Some(ips.clone()), "reported as the IPv4 address");
    let uev = wait(&run, "blocked send", |e| e.action == Action::Blocked && e.process.pid == upid);
    assert_eq!((uev.activity, uev.rule.as_deref()), (Activity::Send, Some("no-udp")));
    let stopped = run.stop();
    assert!(
        !stopped
            .events
            .iter()
            .any(|e| e.action == Action::Blocked && e.network.as_ref().and_then(|n| n.dst_port) == Some(8080))
    );
    assert_eq!(stopped.losses.values().map(|l| l.0 + l.1 + l.2).sum::<u64>(), 0, "no event lost");
}

#[test]
fn redirect_sends_http_and_tls_through_the_proxy_with_host_sni_and_original_destination() {
    let _serial = serial();
    let Some(net) = Net::new("er", 62) else { return };
    let ip = net.server_ip();
    let ips = ip.to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = common::self_signed_cert(dir.path(), "tls.example.test");
    let mut http = net.server.command("python3");
    http.args(["-m", "http.server", "8080", "--bind", &ips]).current_dir(dir.path());
    let http = Program::start(http, &net.server, ip, 8080);
    let mut tls = net.server.command("openssl");
    tls.args(["s_server", "-accept", &format!("{ips}:8443"), "-www"]).arg("-cert").arg(&cert).arg("-key").arg(&key);
    let _tls = Program::start(tls, &net.server, ip, 8443);

    let plan = NetworkPlan {
        rules: vec![rule("web", NetAction::Redirect, to(ip, &[(8080, 8080), (8443, 8443)]))],
        host_rules: vec![HostRule {
            id: "no-evil".into(),
            hosts: vec!["*.evil.test".into()],
            action: NetAction::Block,
        }],
    };
    let enforcer = net.start(plan).expect("start enforcer");
    let proxy_addr = enforcer.proxy().expect("a redirect rule starts the proxy").kernel_addr();
    let run = Running::start(enforcer, 1 << 12);
    thread::sleep(Duration::from_millis(200)); // run() hands the proxy its event sender first thing

    // Plain HTTP.
    let curl = net
        .client_cmd("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: Example.TEST:8080"])
        .arg(format!("http://{ips}:8080/cert.pem"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn curl");
    let curl_pid = curl.id();
    let out = curl.wait_with_output().expect("curl ran");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "the HTTP request reached the real server");
    let ev = wait(&run, "proxied HTTP connect", |e| {
        e.activity == Activity::Connect && e.network.as_ref().is_some_and(|n| n.http.is_some())
    });
    assert_eq!(ev.action, Action::Redirected);
    assert_eq!(ev.rule.as_deref(), Some("web"));
    assert_eq!(ev.process.pid, curl_pid, "the kernel map gives the client's pid");
    let n = ev.network.clone().expect("network facts");
    assert_eq!(n.http.map(|h| h.host).as_deref(), Some("example.test"));
    assert_eq!(n.original_dst, Some(format!("{ips}:8080")));
    assert_eq!((n.dst_ip, n.dst_port), (Some(proxy_addr.ip().to_string()), Some(proxy_addr.port())));
    let close = wait(&run, "proxied HTTP close", |e| e.activity == Activity::Close && e.process.pid == curl_pid);
    let cn = close.network.expect("network facts");
    assert!(cn.bytes_out.unwrap_or(0) > 50 && cn.bytes_in.unwrap_or(0) > 500, "bytes counted: {cn:?}");

    // TLS with SNI.
    let mut s_client = net
        .client_cmd("openssl")
        .args(["s_client", "-connect", &format!("{ips}:8443"), "-servername", "tls.example.test", "-quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn openssl s_client");
    s_client.stdin.take().expect("stdin").write_all(b"GET / HTTP/1.0\r\n\r\n").expect("send request");
    let out = s_client.wait_with_output().expect("s_client ran");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains("200 ok"), "the TLS request reached the real server: {page:.200}");
    let ev = wait(&run, "proxied TLS connect", |e| e.network.as_ref().is_some_and(|n| n.tls.is_some()));
    let n = ev.network.expect("network facts");
    assert_eq!(n.tls.map(|t| t.sni).as_deref(), Some("tls.example.test"));
    assert_eq!(n.original_dst, Some(format!("{ips}:8443")));

    // A host rule refuses before any byte reaches the server.
    let out = net
        .client_cmd("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: www.evil.test"])
        .arg(format!("http://{ips}:8080/never-served"))
        .output()
        .expect("curl ran");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "000", "the blocked host gets no response");
    let ev = wait(&run, "host block", |e| e.action == Action::Blocked);
    assert_eq!(ev.rule.as_deref(), Some("no-evil"));
    assert_eq!(ev.network.and_then(|n| n.http).map(|h| h.host).as_deref(), Some("www.evil.test"));
    let stopped = run.stop();
    let curl_redirects: Vec<_> = stopped
        .events
        .iter()
        .filter(|e| e.activity == Activity::Connect && e.action == Action::Redirected && e.process.pid == curl_pid)
        .collect();
    assert_eq!(curl_redirects.len(), 1, "one redirected connection, one event (the proxy's): {curl_redirects:#?}");
    let served = http.stop();
    assert!(served.contains("/cert.pem"), "the server logged the allowed request: {served}");
    assert!(!served.contains("never-served"), "the blocked request never reached the server: {served}");
}

#[test]
fn three_concurrent_redirected_connections_each_reach_their_own_destination() {
    let _serial = serial();
    let Some(net) = Net::new("ec", 63) else { return };
    let ip = net.server_ip();
    let ips = ip.to_string();
    // The servers answer only after 300 ms, so the three connections overlap in the proxy.
    let _servers: Vec<Server> =
        (9001..=9003).map(|p| Server::start(&net.server, p, Duration::from_millis(300), Serve::Greet)).collect();
    let plan =
        NetworkPlan { rules: vec![rule("all", NetAction::Redirect, to(ip, &[(9001, 9003)]))], host_rules: vec![] };
    let enforcer = net.start(plan).expect("start enforcer");
    let run = Running::start(enforcer, 1 << 12);
    thread::sleep(Duration::from_millis(200));
    let clients: Vec<_> = (9001..=9003)
        .map(|p| {
            let child = net
                .client_cmd("python3")
                .arg("-c")
                .arg(CLIENT_PY)
                .args(["tcp", &ips, &p.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn client");
            (p, child)
        })
        .collect();
    for (port, child) in clients {
        let pid = child.id();
        let out = child.wait_with_output().expect("client ran");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("ok port:{port}"));
        let ev = wait(&run, "proxied connect", |e| {
            e.activity == Activity::Connect
                && e.process.pid == pid
                && e.backend.source == ringwatch_core::SourceKind::Ebpf
                && e.network.as_ref().is_some_and(|n| n.src_port.is_some())
        });
        assert_eq!(orig(&ev), Some(format!("{ips}:{port}")));
    }
    run.stop();
}

#[test]
fn throttle_holds_a_20_mb_upload_within_20_percent_and_leaves_other_traffic_alone() {
    let _serial = serial();
    let Some(net) = Net::new("et", 64) else { return };
    let ip = net.server_ip();
    let ips = ip.to_string();
    let _slow = Server::start(&net.server, 9100, Duration::ZERO, Serve::Drain);
    let _fast = Server::start(&net.server, 9101, Duration::ZERO, Serve::Drain);
    let rate: u64 = 4 << 20;
    let plan = NetworkPlan {
        rules: vec![rule("slow-upload", NetAction::Throttle { bytes_per_sec: rate }, to(ip, &[(9100, 9100)]))],
        host_rules: vec![],
    };
    let enforcer = net.start(plan).expect("start enforcer");
    assert!(!enforcer.throttle_interfaces().is_empty());
    let run = Running::start(enforcer, 1 << 12);
    let bytes: u64 = 20_000_000;
    let (pid, out) = net.py(&["bulk", &ips, "9100", &bytes.to_string()]);
    let secs = upload_secs(&out);
    let measured = bytes as f64 / secs;
    let ratio = measured / rate as f64;
    eprintln!("throttled upload: {bytes} B in {secs:.2} s = {:.2} MiB/s, {ratio:.2}x the rate", measured / 1048576.0);
    assert!((0.8..=1.2).contains(&ratio), "throttled rate {measured:.0} B/s is not within 20 % of {rate}");
    let (_, out) = net.py(&["bulk", &ips, "9101", &bytes.to_string()]);
    let fast_secs = upload_secs(&out);
    eprintln!("unthrottled upload: {:.2} MiB/s", bytes as f64 / fast_secs / 1048576.0);
    assert!(fast_secs * 3.0 < secs, "unthrottled traffic is not slowed ({fast_secs:.2} s vs {secs:.2} s)");
    let ev = wait(&run, "throttled", |e| e.action == Action::Throttled && e.process.pid == pid);
    assert_eq!(ev.rule.as_deref(), Some("slow-upload"));
    run.stop();
    let qdiscs = run_ok(Command::new("tc").args(["-n", net.client.name(), "qdisc", "show"]));
    let qdiscs = String::from_utf8_lossy(&qdiscs.stdout);
    assert!(!qdiscs.contains("htb") && !qdiscs.contains("clsact"), "qdiscs left behind: {qdiscs}");
}

#[test]
fn stopping_detaches_every_program_and_removes_every_qdisc() {
    let _serial = serial();
    let Some(net) = Net::new("ed", 65) else { return };
    let ip = net.server_ip();
    let plan = NetworkPlan {
        rules: vec![
            rule("b", NetAction::Block, to(ip, &[(1, 1)])),
            rule("r", NetAction::Redirect, to(ip, &[(2, 2)])),
            rule("t", NetAction::Throttle { bytes_per_sec: 1 << 20 }, to(ip, &[(3, 3)])),
        ],
        host_rules: vec![],
    };
    let enforcer = net.start(plan).expect("start enforcer");
    let attached = run_ok(Command::new("bpftool").args(["cgroup", "show"]).arg(net.cgroup.path()));
    let attached = String::from_utf8_lossy(&attached.stdout).into_owned();
    for hook in ["inet4_connect", "inet6_connect", "udp4_sendmsg", "udp6_sendmsg", "sock_ops"] {
        assert!(attached.contains(hook), "{hook} attached: {attached}");
    }
    let qdiscs = run_ok(Command::new("tc").args(["-n", net.client.name(), "qdisc", "show"]));
    assert!(String::from_utf8_lossy(&qdiscs.stdout).contains("htb 1:"), "HTB set up");
    assert!(loaded_programs().is_some_and(|p| p.contains("handle_enf_")), "our programs are loaded");
    let run = Running::start(enforcer, 1 << 10);
    run.stop();
    let attached = run_ok(Command::new("bpftool").args(["cgroup", "show"]).arg(net.cgroup.path()));
    assert!(String::from_utf8_lossy(&attached.stdout).trim().is_empty(), "programs left on the cgroup");
    let qdiscs = run_ok(Command::new("tc").args(["-n", net.client.name(), "qdisc", "show"]));
    let qdiscs = String::from_utf8_lossy(&qdiscs.stdout);
    assert!(!qdiscs.contains("htb") && !qdiscs.contains("clsact"), "qdiscs left behind: {qdiscs}");
    // The kernel frees a program after an RCU grace period once its last reference is gone: allow a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Some(progs) = loaded_programs() {
        let ours: Vec<&str> = progs.lines().filter(|l| l.contains("handle_enf_")).collect();
        if ours.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "our programs are still loaded: {ours:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_rule_the_kernel_cannot_evaluate_is_refused_at_start_naming_it() {
    let _serial = serial();
    let Some(net) = Net::new("eu", 66) else { return };
    let udp = NetMatch { protocol: Some(NetProtocol::Udp), dst_ports: vec![(53, 53)], ..Default::default() };
    let plan = NetworkPlan { rules: vec![rule("dns-via-proxy", NetAction::Redirect, udp)], host_rules: vec![] };
    let err = net.start(plan).expect_err("UDP redirect cannot be done in the kernel");
    let msg = err.to_string();
    assert!(matches!(err, SourceError::Unsupported { .. }), "{msg}");
    assert!(msg.contains("dns-via-proxy") && msg.contains("UDP"), "{msg}");
    let attached = run_ok(Command::new("bpftool").args(["cgroup", "show"]).arg(net.cgroup.path()));
    assert!(String::from_utf8_lossy(&attached.stdout).trim().is_empty(), "nothing attached after a refused start");
}

#[test]
fn an_interface_with_a_configured_root_qdisc_is_never_replaced() {
    let _serial = serial();
    let Some(net) = Net::new("eq", 67) else { return };
    let dev = String::from_utf8_lossy(
        &run_ok(Command::new("ip").args(["-n", net.client.name(), "-o", "link", "show", "type", "veth"])).stdout,
    )
    .split(':')
    .nth(1)
    .map(|s| s.trim().split('@').next().unwrap_or("").to_owned())
    .expect("the client veth");
    net.client.ip(&["link", "set", &dev, "up"]).expect("veth up");
    run_ok(Command::new("tc").args([
        "-n",
        net.client.name(),
        "qdisc",
        "add",
        "dev",
        &dev,
        "root",
        "handle",
        "7:",
        "tbf",
        "rate",
        "1mbit",
        "burst",
        "32kb",
        "latency",
        "50ms",
    ]));
    let ip = net.server_ip();
    let plan = NetworkPlan {
        rules: vec![rule("t", NetAction::Throttle { bytes_per_sec: 1 << 20 }, to(ip, &[(3, 3)]))],
        host_rules: vec![],
    };
    let mut cfg = EnforceConfig::for_cgroup(net.cgroup.path());
    cfg.throttle_interfaces = vec![dev.clone()];
    let err =
        net.client.spawn(move || NetworkEnforcer::start(&plan, &cfg)).join().expect("no panic").expect_err("refused");
    assert!(err.to_string().contains("tbf 7:"), "{err}");
    let qdiscs = run_ok(Command::new("tc").args(["-n", net.client.name(), "qdisc", "show", "dev", &dev]));
    assert!(String::from_utf8_lossy(&qdiscs.stdout).contains("tbf 7:"), "the administrator's qdisc is untouched");
}

/// Times `n` short connections (connect, send a request head, read the answer, close) from one Python process in
/// the clients' cgroup; returns (p50, p99) in microseconds.
const LATENCY_PY: &str = r#"
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
times = []
for _ in range(n):
    t = time.perf_counter()
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(b'GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n')
    s.recv(100)
    s.close()
    times.append((time.perf_counter() - t) * 1e6)
times.sort()
print(int(times[n // 2]), int(times[n * 99 // 100]))
"#;

fn latency(net: &Net, port: u16, n: u32) -> (u64, u64) {
    let out = net
        .client_cmd("python3")
        .arg("-c")
        .arg(LATENCY_PY)
        .args([&net.server_ip().to_string(), &port.to_string(), &n.to_string()])
        .output()
        .expect("python3 ran");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|x| x.parse::<u64>().expect("microseconds"));
    (it.next().expect("p50"), it.next().expect("p99"))
}

/// Connect latency without the enforcer, with it attached but no rule matching (the cost of evaluation), and
/// through the kernel redirect and the proxy; then a 200 MB upload direct vs redirected.
#[test]
#[ignore = "benchmark: cargo test --release -p ringwatch-domains --test network_enforce -- --ignored --nocapture"]
fn kernel_redirect_added_latency_and_throughput() {
    let _serial = serial();
    let Some(net) = Net::new("eB", 68) else { return };
    let ip = net.server_ip();
    let ips = ip.to_string();
    let _plain = Server::start(&net.server, 9200, Duration::ZERO, Serve::Http);
    let _redirected = Server::start(&net.server, 9201, Duration::ZERO, Serve::Http);
    let _sink = Server::start(&net.server, 9202, Duration::ZERO, Serve::Drain);
    let _sink_redirected = Server::start(&net.server, 9203, Duration::ZERO, Serve::Drain);
    let n = 1000;
    let (b50, b99) = latency(&net, 9200, n);
    let mut rules: Vec<NetRule> = (0..20)
        .map(|i| rule(&format!("other-{i}"), NetAction::Block, to(Ipv4Addr::new(192, 0, 2, i), &[(1, 1000)])))
        .collect();
    rules.push(rule("web", NetAction::Redirect, to(ip, &[(9201, 9201), (9203, 9203)])));
    let enforcer = net.start(NetworkPlan { rules, host_rules: vec![] }).expect("start enforcer");
    let run = Running::start(enforcer, 1 << 16);
    thread::sleep(Duration::from_millis(200));
    let (e50, e99) = latency(&net, 9200, n);
    let (r50, r99) = latency(&net, 9201, n);
    let bytes = 200_000_000u64.to_string();
    let (_, direct) = net.py(&["bulk", &ips, "9202", &bytes]);
    let (_, redirected) = net.py(&["bulk", &ips, "9203", &bytes]);
    let mib = |s: f64| 200_000_000.0 / s / 1048576.0;
    println!("connect + request + answer, {n} connections, p50/p99 us:");
    println!("  no enforcer            {b50} / {b99}");
    println!("  21 rules, none matching {e50} / {e99}");
    println!("  kernel redirect + proxy {r50} / {r99}  (added p50 {} us)", r50.saturating_sub(e50));
    println!(
        "200 MB upload: direct {:.0} MiB/s, redirected {:.0} MiB/s",
        mib(upload_secs(&direct)),
        mib(upload_secs(&redirected))
    );
    let stopped = run.stop();
    let redirected_events = stopped.events.iter().filter(|e| e.action == Action::Redirected).count();
    println!("events: {} total, {redirected_events} redirected, losses {:?}", stopped.events.len(), stopped.losses);
}

/// The real path of a program on PATH (symlinks resolved), as the kernel sees the process's executable.
fn real_exe(program: &str) -> Option<std::path::PathBuf> {
    let out = Command::new("sh").args(["-c", &format!("command -v {program}")]).output().ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    std::fs::canonicalize(path).ok()
}

/// Connects with curl (exe `curl`) to `ip:port`; true when the connect was refused by the kernel (curl exit 7).
fn curl_refused(net: &Net, curl: &std::path::Path, ip: Ipv4Addr, port: u16) -> bool {
    let status = net
        .client_cmd(curl.to_str().expect("utf-8 path"))
        .args(["-s", "-o", "/dev/null", "--max-time", "5", &format!("http://{ip}:{port}/")])
        .status()
        .expect("curl ran");
    status.code() == Some(7)
}

#[test]
fn exe_exact_and_prefix_not_uid_and_cgroup_subtree_conditions_are_evaluated_in_the_kernel() {
    let _serial = serial();
    let Some(net) = Net::new("ep", 69) else { return };
    let (Some(curl), Some(python)) = (real_exe("curl"), real_exe("python3")) else {
        eprintln!("skipping: cannot resolve curl and python3");
        return;
    };
    let python = std::fs::canonicalize(
        String::from_utf8_lossy(
            &Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .expect("python3 runs")
                .stdout,
        )
        .trim(),
    )
    .unwrap_or(python);
    let ip = net.server_ip();
    let ips = ip.to_string();
    let _server = Server::start(&net.server, 8080, Duration::ZERO, Serve::Greet);
    // A copy of curl two directories below a private one, for the prefix rule.
    let dir = tempfile::tempdir().expect("temp dir");
    let deep = dir.path().join("tools/bin");
    std::fs::create_dir_all(&deep).expect("mkdir");
    let copied = deep.join("curl");
    std::fs::copy(&curl, &copied).expect("copy curl");
    let block = |id: &str, m: NetMatch, not: Option<NetMatch>| NetRule {
        id: id.into(),
        action: NetAction::Block,
        matcher: NetMatch { dst_ports: vec![(8080, 8080)], ..m },
        not,
    };
    let check = |plan: Vec<NetRule>, curl_blocked: bool, copy_blocked: bool, python_blocked: bool| {
        let enforcer = net.start(NetworkPlan { rules: plan.clone(), host_rules: vec![] }).expect("start enforcer");
        let run = Running::start(enforcer, 1 << 12);
        let what = plan.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(",");
        assert_eq!(curl_refused(&net, &curl, ip, 8080), curl_blocked, "{what}: system curl");
        assert_eq!(curl_refused(&net, &copied, ip, 8080), copy_blocked, "{what}: copied curl");
        let (_, out) = net.py(&["tcp", &ips, "8080"]);
        let expected_out = if python_blocked { "errno 1" } else { "ok port:8080" };
        assert_eq!(out, expected_out, "{what}: python3");
        let stopped = run.stop();
        let blocked = stopped.events.iter().filter(|e| e.action == Action::Blocked).count();
        let expected = [curl_blocked, copy_blocked, python_blocked].iter().filter(|b| **b).count();
        assert_eq!(blocked, expected, "{what}: one blocked event per refused connect");
    };
    let curl_s = curl.to_string_lossy().into_owned();
    let python_s = python.to_string_lossy().into_owned();
    // Exact executable: only that inode (the copy is another file).
    check(
        vec![block("exact", NetMatch { exe_exact: vec![curl_s.clone()], ..Default::default() }, None)],
        true,
        false,
        false,
    );
    // Directory prefix at any depth below it.
    let prefix = format!("{}/", dir.path().display());
    check(
        vec![block("prefix", NetMatch { exe_prefixes: vec![prefix], ..Default::default() }, None)],
        false,
        true,
        false,
    );
    // `not`: everything on the port except python.
    let not_python = NetMatch { exe_exact: vec![python_s], ..Default::default() };
    check(vec![block("not", NetMatch::default(), Some(not_python))], true, true, false);
    // uid: another uid matches nothing, ours everything.
    check(vec![block("uid-other", NetMatch { uids: vec![54321], ..Default::default() }, None)], false, false, false);
    check(vec![block("uid-root", NetMatch { uids: vec![0], ..Default::default() }, None)], true, true, true);
    // First match wins: an observe exception before the block lets python through.
    let exception = NetRule {
        id: "python-ok".into(),
        action: NetAction::Observe,
        matcher: NetMatch { exe_exact: vec![python.to_string_lossy().into_owned()], ..Default::default() },
        not: None,
    };
    check(vec![exception, block("rest", NetMatch::default(), None)], true, true, false);

    // cgroup: a process in a child of the named cgroup is in it too.
    let name = net.cgroup.path().file_name().expect("name").to_string_lossy().into_owned();
    /// Removes the child cgroup even when an assertion fails (its parent cannot be removed while it exists).
    struct SubCgroup(std::path::PathBuf);
    impl Drop for SubCgroup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let sub = SubCgroup(net.cgroup.path().join("sub"));
    std::fs::create_dir(&sub.0).expect("child cgroup");
    let sub_path = sub.0.clone();
    let plan = vec![block("cg", NetMatch { cgroups: vec![format!("/{name}")], ..Default::default() }, None)];
    let enforcer = net.start(NetworkPlan { rules: plan, host_rules: vec![] }).expect("start enforcer");
    let run = Running::start(enforcer, 1 << 10);
    let script = format!("echo $$ > {}/cgroup.procs && exec python3 -c \"$0\" tcp {ips} 8080", sub_path.display());
    let out = net.client_cmd("sh").args(["-c", &script]).arg(CLIENT_PY).output().expect("sh ran");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "errno 1", "blocked in a child cgroup");
    let ev = run.wait_for(Duration::from_secs(10), |e| e.rule.as_deref() == Some("cg")).expect("blocked event");
    assert_eq!(ev.process.cgroup, Some(format!("/{name}/sub")));
    run.stop();
    drop(sub);
}
