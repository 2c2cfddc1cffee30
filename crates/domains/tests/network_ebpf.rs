//! The kernel network monitor against the real kernel: TCP connect/accept/listen/close with the right tuple, bytes
//! and process on both sides, UDP sends and connects, DNS queries and answers from a real dnsmasq naming a later
//! connect, and a clean detach. Every test runs its programs on a private cgroup and its traffic in private network
//! namespaces joined by a veth pair. Needs root with BPF; skips with a reason otherwise.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown as NetShutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ringwatch_core::compiled::{NetAction, NetMatch, NetRule, NetworkPlan};
use ringwatch_core::proc_table::ProcessTable;
use ringwatch_core::sink::{MemorySink, Sink};
use ringwatch_core::{
    Action, Activity, Domain, Event, Mode, Pipeline, PipelineStats, Shutdown, Source, SourceContext, SourceKind,
};
use ringwatch_domains::network::ebpf::{NetworkEbpf, NetworkEbpfConfig, PROGRAM_NAMES};

use common::netns::{NetNs, TestCgroup};
use common::{loaded_program_ids, still_loaded};

const COMPONENT: &str = "network/ebpf";
/// Tells this test binary, started as a child, to act as a network helper instead of running tests.
const HELPER_ENV: &str = "RW_NET_HELPER";

/// One backend at a time: the detach test counts programs.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The backend running into a pipeline whose process table reads /proc (so events carry exe and cmdline), with an
/// in-memory sink.
struct Monitor {
    shutdown: Shutdown,
    source: JoinHandle<Result<(), ringwatch_core::SourceError>>,
    consumer: JoinHandle<()>,
    events: Arc<Mutex<Vec<Event>>>,
    stats: Arc<PipelineStats>,
}

impl Monitor {
    /// Starts on `cgroup`, or returns None (after saying why) when this host cannot run the backend.
    fn start(cgroup: &Path) -> Option<Monitor> {
        Monitor::start_with(cgroup, NetworkPlan::default())
    }

    /// Starts on `cgroup` enforcing `plan`.
    fn start_with(cgroup: &Path, plan: NetworkPlan) -> Option<Monitor> {
        Monitor::start_config(NetworkEbpfConfig {
            cgroup: Some(cgroup.to_path_buf()),
            plan,
            ..NetworkEbpfConfig::default()
        })
    }

    /// Starts with `cfg`.
    fn start_config(cfg: NetworkEbpfConfig) -> Option<Monitor> {
        let probe = NetworkEbpf::probe();
        if !probe.available {
            eprintln!("skipping: network/ebpf unavailable here: {}", probe.detail);
            return None;
        }
        let source = NetworkEbpf::start(&cfg).expect("probe said available, start must succeed");
        assert_eq!(source.name(), COMPONENT);
        let pipeline = Pipeline::new(1 << 16);
        let stats = pipeline.stats();
        let shutdown = Shutdown::new();
        let ctx = SourceContext { events: pipeline.sender(COMPONENT), shutdown: shutdown.clone() };
        let memory = MemorySink::default();
        let events = memory.events();
        let consumer = thread::spawn(move || {
            let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(memory)];
            pipeline.run("test-host", &mut ProcessTable::from_proc(), &mut [], &mut sinks);
        });
        let source = thread::spawn(move || Box::new(source).run(ctx));
        Some(Monitor { shutdown, source, consumer, events, stats })
    }

    /// Waits until an event satisfies `pred` and returns a copy of it.
    fn wait_for(&self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(e) = self.events.lock().expect("sink lock").iter().find(|e| pred(e)) {
                return e.clone();
            }
            thread::sleep(Duration::from_millis(20));
        }
        let seen: Vec<String> = self.events.lock().expect("sink lock").iter().map(summary).collect();
        panic!("no {what} event within 10 s; seen:\n{}", seen.join("\n"));
    }

    /// Stops the source (it must not fail) and returns every event; no loss is allowed.
    fn stop(self) -> Vec<Event> {
        self.shutdown.trigger();
        self.source.join().expect("source thread did not panic").expect("source ran without error");
        self.consumer.join().expect("pipeline consumer did not panic");
        let losses = self.stats.losses().get(COMPONENT).copied().unwrap_or_default();
        assert_eq!(losses, (0, 0, 0), "network/ebpf lost events (queue_full, lost_upstream, malformed)");
        std::mem::take(&mut *self.events.lock().expect("sink lock"))
    }
}

fn summary(e: &Event) -> String {
    let n = e.network.clone().unwrap_or_default();
    format!(
        "{} pid={} exe={} {} {:?}:{:?} -> {:?}:{:?} {:?} out={:?} in={:?} dns={:?} name={:?} error={:?}",
        e.activity,
        e.process.pid,
        e.process.exe,
        n.protocol,
        n.src_ip,
        n.src_port,
        n.dst_ip,
        n.dst_port,
        n.direction,
        n.bytes_out,
        n.bytes_in,
        n.dns,
        n.dst_name,
        n.error
    )
}

/// Namespaces, cgroup and monitor (on the test cgroup) for one test; `None` (after saying why) when the host cannot.
fn setup(tag: &str, subnet: u8) -> Option<(NetNs, NetNs, TestCgroup, Monitor)> {
    setup_on(tag, subnet, false)
}

/// As [`setup`], with the monitor on the cgroup2 root when `at_root` (owners taken at connect/listen, not socket).
fn setup_on(tag: &str, subnet: u8, at_root: bool) -> Option<(NetNs, NetNs, TestCgroup, Monitor)> {
    let (server, client) = match NetNs::veth_pair(tag, subnet) {
        Ok(pair) => pair,
        Err(why) => {
            eprintln!("skipping: {why}");
            return None;
        }
    };
    let cgroup = match TestCgroup::new(tag) {
        Ok(c) => c,
        Err(why) => {
            eprintln!("skipping: {why}");
            return None;
        }
    };
    let attach = if at_root { ringwatch_domains::probe::cgroup2_mount()? } else { cgroup.path().to_path_buf() };
    let monitor = Monitor::start(&attach)?;
    Some((server, client, cgroup, monitor))
}

// --- the helper process -------------------------------------------------------------------------------------------

/// A child running this binary's `net_helper` in `ns` and `cgroup`; `spec` is what it does (see `net_helper`).
fn helper(ns: &NetNs, cgroup: &TestCgroup, spec: &str) -> Child {
    let mut cmd = ns.command(std::env::current_exe().expect("test binary path"));
    cmd.args(["--exact", "net_helper", "--nocapture", "--test-threads=1", "--quiet"])
        .env(HELPER_ENV, spec)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    cgroup.command_into(&mut cmd);
    cmd.spawn().expect("spawn helper")
}

/// Lets a helper exit (it waits for stdin to close so /proc still shows it while its events are enriched).
fn finish(mut child: Child) -> bool {
    drop(child.stdin.take());
    child.wait().expect("helper exit").success()
}

/// Reads the helper's stdout until a line starts with `tag`; returns the rest of that line. Reads byte by byte:
/// a buffered reader would swallow the lines after it.
fn read_tagged(child: &mut Child, tag: &str) -> String {
    let out = child.stdout.as_mut().expect("piped stdout");
    loop {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while out.read(&mut byte).expect("read helper output") == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        assert!(!line.is_empty() || byte[0] == b'\n', "helper ended before printing {tag}");
        if let Some(rest) = String::from_utf8_lossy(&line).strip_prefix(tag) {
            return rest.trim().to_owned();
        }
    }
}

/// Not a test: the network helper, when started with `HELPER_ENV` set. Specs:
/// - `server ADDR:PORT REPLY`: listen, print `READY`, accept one client, read to EOF, send REPLY bytes, close.
/// - `client ADDR:PORT SEND`: connect, send SEND bytes, half-close, read to EOF, print `LOCAL ip:port`, `GOT n`.
/// - `udp ADDR:PORT`: one unconnected sendto, then connect + send on a second socket.
///
/// With every socket closed, it then waits for stdin to close before exiting.
#[test]
fn net_helper() {
    let Ok(spec) = std::env::var(HELPER_ENV) else { return };
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let addr: SocketAddr = parts[1].parse().expect("helper address");
    let count = |i: usize| parts.get(i).map(|n| n.parse::<usize>().expect("helper byte count")).unwrap_or(0);
    match parts[0] {
        "server" => {
            let listener = TcpListener::bind(addr).expect("bind");
            println!("READY");
            let (mut s, _) = listener.accept().expect("accept");
            let mut got = Vec::new();
            s.read_to_end(&mut got).expect("read request");
            s.write_all(&vec![b'r'; count(2)]).expect("write reply");
            drop((s, listener));
            println!("GOT {}", got.len());
        }
        "client" => {
            let mut s = match TcpStream::connect(addr) {
                Ok(s) => s,
                Err(e) => {
                    println!("FAILED {e}");
                    std::process::exit(1);
                }
            };
            s.write_all(&vec![b'q'; count(2)]).expect("write request");
            s.shutdown(NetShutdown::Write).expect("half-close");
            let mut got = Vec::new();
            s.read_to_end(&mut got).expect("read reply");
            println!("LOCAL {}", s.local_addr().expect("local addr"));
            drop(s);
            println!("GOT {}", got.len());
        }
        "udp" => {
            let unconnected = UdpSocket::bind("0.0.0.0:0").expect("bind udp");
            unconnected.send_to(b"ping", addr).expect("sendto");
            unconnected.send_to(b"ping again", addr).expect("sendto");
            let connected = UdpSocket::bind("0.0.0.0:0").expect("bind udp");
            connected.connect(addr).expect("udp connect");
            connected.send(b"hello").expect("send");
            println!("LOCAL {} {}", unconnected.local_addr().expect("addr"), connected.local_addr().expect("addr"));
        }
        other => panic!("unknown helper spec {other}"),
    }
    std::io::stdout().flush().expect("flush");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

fn self_exe() -> String {
    std::fs::canonicalize(std::env::current_exe().expect("test binary")).expect("canonical").to_string_lossy().into()
}

fn net(e: &Event) -> &ringwatch_core::event::NetworkInfo {
    e.network.as_ref().expect("network facts")
}

fn is(e: &Event, activity: Activity, pid: u32) -> bool {
    e.domain == Domain::Network && e.activity == activity && e.process.pid == pid
}

// --- tests --------------------------------------------------------------------------------------------------------

#[test]
fn tcp_connect_accept_listen_close_carry_tuple_bytes_and_process_on_both_sides() {
    tcp_round_trip("tcp", 11, false);
}

/// At the root no TCP socket() is hooked: the owner is stored at connect()/listen() and cloned into the accepted
/// child by the kernel; the same facts must come out.
#[test]
fn at_the_cgroup_root_tcp_events_carry_the_same_tuple_bytes_and_process() {
    tcp_round_trip("tcpr", 15, true);
}

fn tcp_round_trip(tag: &str, subnet: u8, at_root: bool) {
    let _serial = serial();
    let Some((server_ns, client_ns, cgroup, monitor)) = setup_on(tag, subnet, at_root) else { return };
    let server_ip = server_ns.addr().expect("veth address");
    let client_ip = client_ns.addr().expect("veth address");
    let (request, reply) = (70_000usize, 250_000usize);
    let mut server = helper(&server_ns, &cgroup, &format!("server {server_ip}:8080 {reply}"));
    read_tagged(&mut server, "READY");
    let mut client = helper(&client_ns, &cgroup, &format!("client {server_ip}:8080 {request}"));
    let local: SocketAddr = read_tagged(&mut client, "LOCAL").parse().expect("client local address");
    assert_eq!(read_tagged(&mut client, "GOT"), reply.to_string());
    assert_eq!(read_tagged(&mut server, "GOT"), request.to_string());
    let (spid, cpid) = (server.id(), client.id());

    let listen = monitor.wait_for("listen", |e| is(e, Activity::Listen, spid));
    let connect = monitor.wait_for("connect", |e| is(e, Activity::Connect, cpid));
    let accept = monitor.wait_for("accept", |e| is(e, Activity::Accept, spid));
    let client_close = monitor.wait_for("client close", |e| is(e, Activity::Close, cpid));
    let server_close = monitor.wait_for("server close", |e| is(e, Activity::Close, spid));
    let events = monitor.stop();
    assert!(finish(client) && finish(server));

    let exe = self_exe();
    for e in [&listen, &connect, &accept, &client_close, &server_close] {
        assert_eq!((e.backend.mode, e.backend.source), (Mode::Kernel, SourceKind::Ebpf));
        assert!(e.trusted && !e.process.partial, "{e:#?}");
        assert_eq!(e.process.exe, exe, "exe of both helpers, from the process table: {e:#?}");
        assert!(!e.process.guid.is_empty() && e.process.comm.starts_with("network_ebpf"), "{e:#?}");
        assert_eq!(net(e).protocol, "tcp");
    }
    let n = net(&listen);
    assert_eq!((n.src_ip.as_deref(), n.src_port), (Some(server_ip.to_string().as_str()), Some(8080)));

    // Both sides report the same tuple: the initiator (the client) is src.
    let (cip, sip) = (client_ip.to_string(), server_ip.to_string());
    for e in [&connect, &accept, &client_close, &server_close] {
        let n = net(e);
        assert_eq!((n.src_ip.as_deref(), n.src_port), (Some(cip.as_str()), Some(local.port())), "{}", summary(e));
        assert_eq!((n.dst_ip.as_deref(), n.dst_port), (Some(sip.as_str()), Some(8080)), "{}", summary(e));
    }
    assert_eq!(net(&connect).direction.as_deref(), Some("outbound"));
    assert_eq!(net(&accept).direction.as_deref(), Some("inbound"));
    assert_eq!(local.ip().to_string(), cip);

    // Bytes as each side sees them, and a duration.
    let (c, s) = (net(&client_close), net(&server_close));
    assert_eq!((c.bytes_out, c.bytes_in), (Some(request as u64), Some(reply as u64)), "{}", summary(&client_close));
    assert_eq!((s.bytes_out, s.bytes_in), (Some(reply as u64), Some(request as u64)), "{}", summary(&server_close));
    assert!(c.duration_us.is_some_and(|d| d > 0 && d < 10_000_000) && s.duration_us.is_some());

    // Exactly one of each: nothing is reported twice.
    for (activity, pid) in [(Activity::Connect, cpid), (Activity::Accept, spid), (Activity::Close, cpid)] {
        assert_eq!(events.iter().filter(|e| is(e, activity, pid)).count(), 1, "{activity} of {pid}");
    }
}

#[test]
fn ipv6_connection_over_loopback_is_reported_with_v6_addresses() {
    let _serial = serial();
    let ns = match NetNs::new("v6") {
        Ok(ns) => ns,
        Err(why) => return eprintln!("skipping: {why}"),
    };
    let Ok(cgroup) = TestCgroup::new("v6") else { return eprintln!("skipping: no test cgroup") };
    let Some(monitor) = Monitor::start(cgroup.path()) else { return };
    let mut server = helper(&ns, &cgroup, "server [::1]:8083 1000");
    read_tagged(&mut server, "READY");
    let mut client = helper(&ns, &cgroup, "client [::1]:8083 3000");
    let local: SocketAddr = read_tagged(&mut client, "LOCAL").parse().expect("client local address");
    let (spid, cpid) = (server.id(), client.id());
    let connect = monitor.wait_for("connect", |e| is(e, Activity::Connect, cpid));
    let accept = monitor.wait_for("accept", |e| is(e, Activity::Accept, spid));
    let close = monitor.wait_for("client close", |e| is(e, Activity::Close, cpid));
    monitor.stop();
    assert!(finish(client) && finish(server));
    for e in [&connect, &accept, &close] {
        let n = net(e);
        assert_eq!((n.src_ip.as_deref(), n.src_port), (Some("::1"), Some(local.port())), "{}", summary(e));
        assert_eq!((n.dst_ip.as_deref(), n.dst_port), (Some("::1"), Some(8083)), "{}", summary(e));
    }
    assert_eq!((net(&close).bytes_out, net(&close).bytes_in), (Some(3000), Some(1000)));
}

#[test]
fn at_the_cgroup_root_a_listener_started_before_the_agent_still_names_its_accepts() {
    let _serial = serial();
    let ns = match NetNs::new("seed") {
        Ok(ns) => ns,
        Err(why) => return eprintln!("skipping: {why}"),
    };
    let Ok(cgroup) = TestCgroup::new("seed") else { return eprintln!("skipping: no test cgroup") };
    let Some(root) = ringwatch_domains::probe::cgroup2_mount() else { return eprintln!("skipping: no cgroup2") };
    // The server listens before the monitor exists: the kernel never sees its listen().
    let mut server = helper(&ns, &cgroup, "server 127.0.0.1:8084 10");
    read_tagged(&mut server, "READY");
    let Some(monitor) = Monitor::start(&root) else { return };
    let mut client = helper(&ns, &cgroup, "client 127.0.0.1:8084 10");
    read_tagged(&mut client, "GOT");
    let (spid, cpid) = (server.id(), client.id());
    let accept = monitor.wait_for("accept", |e| {
        e.activity == Activity::Accept && e.network.as_ref().is_some_and(|n| n.dst_port == Some(8084))
    });
    monitor.wait_for("connect", |e| is(e, Activity::Connect, cpid));
    monitor.stop();
    assert!(finish(client) && finish(server));
    assert_eq!(accept.process.pid, spid, "seeded from /proc at start: {}", summary(&accept));
    assert_eq!(accept.process.exe, self_exe());
}

#[test]
fn refused_tcp_connect_is_reported_without_a_close() {
    let _serial = serial();
    let Some((server_ns, client_ns, cgroup, monitor)) = setup("ref", 12) else { return };
    let server_ip = server_ns.addr().expect("veth address");
    // Nothing listens on 8081: the server namespace answers the SYN with a RST.
    let client = helper(&client_ns, &cgroup, &format!("client {server_ip}:8081 10"));
    let pid = client.id();
    assert!(!finish(client), "connect to a closed port fails");
    let refused = monitor.wait_for("refused connect", |e| is(e, Activity::Connect, pid));
    let events = monitor.stop();
    let n = net(&refused);
    assert_eq!((n.dst_ip.as_deref(), n.dst_port), (Some(server_ip.to_string().as_str()), Some(8081)));
    assert_eq!(n.error.as_deref(), Some("ECONNREFUSED"), "the RST's error: {}", summary(&refused));
    assert_eq!((n.bytes_out, n.bytes_in), (None, None), "nothing transferred, no counts: {}", summary(&refused));
    assert!(!events.iter().any(|e| is(e, Activity::Close, pid)), "no close for a connection never established");
}

#[test]
fn connect_to_an_unreachable_host_names_the_socket_error() {
    let _serial = serial();
    let Some((_server_ns, client_ns, cgroup, monitor)) = setup("unr", 16) else { return };
    // No host answers ARP for .9: after the neighbour probes (about 3 s) the SYN_SENT socket gets EHOSTUNREACH.
    let client = helper(&client_ns, &cgroup, "client 10.77.16.9:8081 10");
    let pid = client.id();
    assert!(!finish(client), "connect to a missing host fails");
    let failed = monitor.wait_for("failed connect", |e| is(e, Activity::Connect, pid));
    let events = monitor.stop();
    assert_eq!(net(&failed).error.as_deref(), Some("EHOSTUNREACH"), "{}", summary(&failed));
    assert!(!events.iter().any(|e| is(e, Activity::Close, pid)), "no close for a connection never established");
}

#[test]
fn udp_sendto_is_a_send_once_per_destination_and_udp_connect_a_connect() {
    let _serial = serial();
    let Some((server_ns, client_ns, cgroup, monitor)) = setup("udp", 13) else { return };
    let server_ip = server_ns.addr().expect("veth address");
    let mut client = helper(&client_ns, &cgroup, &format!("udp {server_ip}:9999"));
    let locals = read_tagged(&mut client, "LOCAL");
    let unconnected_port: u16 =
        locals.split_whitespace().next().and_then(|a| a.parse::<SocketAddr>().ok()).expect("address").port();
    let pid = client.id();
    let send = monitor.wait_for("udp send", |e| is(e, Activity::Send, pid));
    let connect = monitor.wait_for("udp connect", |e| is(e, Activity::Connect, pid));
    let events = monitor.stop();
    assert!(finish(client));
    for e in [&send, &connect] {
        let n = net(e);
        assert_eq!(n.protocol, "udp");
        assert_eq!((n.dst_ip.as_deref(), n.dst_port), (Some(server_ip.to_string().as_str()), Some(9999)));
        assert_eq!(n.direction.as_deref(), Some("outbound"));
        assert_eq!(e.process.exe, self_exe());
    }
    assert_eq!(net(&send).src_port, Some(unconnected_port), "the sender's bound port");
    assert_eq!(
        events.iter().filter(|e| is(e, Activity::Send, pid)).count(),
        1,
        "two sendto, one destination: one event"
    );
}

/// A dnsmasq in `ns` answering `ringwatch.test` with `answer`; killed on drop.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(ns: &NetNs, listen: std::net::Ipv4Addr, answer: std::net::Ipv4Addr) -> Option<Dnsmasq> {
        let Ok(bin) = which("dnsmasq") else {
            eprintln!("skipping: dnsmasq not installed (scripts/install-deps.sh installs dnsmasq-base)");
            return None;
        };
        let child = ns
            .command(bin)
            .args([
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--user=root",
                "--pid-file=",
                &format!("--listen-address={listen}"),
                &format!("--address=/ringwatch.test/{answer}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dnsmasq");
        let dns = Dnsmasq(child);
        // Ready once it answers on TCP (dnsmasq serves TCP and UDP on the same port).
        let deadline = Instant::now() + Duration::from_secs(5);
        let ready = loop {
            let probe = ns.spawn(move || {
                TcpStream::connect_timeout(&SocketAddr::from((listen, 53)), Duration::from_millis(200)).is_ok()
            });
            if probe.join().unwrap_or(false) {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            thread::sleep(Duration::from_millis(50));
        };
        assert!(ready, "dnsmasq did not start listening");
        Some(dns)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn which(name: &str) -> Result<String, ()> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p.to_string_lossy().into_owned());
        }
    }
    Err(())
}

/// `dig`'s path, or `None` after saying why the test skips.
fn dig_or_skip() -> Option<String> {
    let found = which("dig").ok();
    if found.is_none() {
        eprintln!("skipping: dig not installed (scripts/install-deps.sh installs bind9-dnsutils)");
    }
    found
}

/// An A query for `name` to `server` from `ns`, inside `cgroup` (over TCP when `tcp`); dig's short answer.
fn query(dig: &str, ns: &NetNs, cgroup: &TestCgroup, server: std::net::Ipv4Addr, name: &str, tcp: bool) -> String {
    let mut cmd = ns.command(dig);
    cmd.args([&format!("@{server}"), name, "A", "+short", "+tries=1", "+time=2"]);
    if tcp {
        cmd.arg("+tcp");
    }
    cgroup.command_into(&mut cmd);
    let out = cmd.output().expect("dig");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn dns_query_and_answer_are_reported_and_name_the_later_connect() {
    let _serial = serial();
    let Some((server_ns, client_ns, cgroup, monitor)) = setup("dns", 14) else { return };
    let server_ip = server_ns.addr().expect("veth address");
    let named = std::net::Ipv4Addr::new(10, 77, 14, 9);
    server_ns.ip(&["addr", "add", &format!("{named}/32"), "dev", "lo"]).expect("second server address");
    let Some(_dns) = Dnsmasq::start(&server_ns, server_ip, named) else { return };
    let Some(dig) = dig_or_skip() else { return };

    // Over UDP, then over TCP.
    assert_eq!(
        query(&dig, &client_ns, &cgroup, server_ip, "ringwatch.test", false),
        named.to_string(),
        "dnsmasq answers"
    );
    assert_eq!(query(&dig, &client_ns, &cgroup, server_ip, "tcp.ringwatch.test", true), named.to_string());

    // Then a connection to the answered address.
    let mut server = helper(&server_ns, &cgroup, &format!("server {named}:8082 10"));
    read_tagged(&mut server, "READY");
    let mut client = helper(&client_ns, &cgroup, &format!("client {named}:8082 10"));
    read_tagged(&mut client, "GOT");
    let cpid = client.id();

    let query = monitor.wait_for("dns query", |e| {
        e.activity == Activity::Dns
            && e.network.as_ref().is_some_and(|n| n.direction.as_deref() == Some("outbound") && n.protocol == "udp")
    });
    let answer = monitor.wait_for("dns answer", |e| {
        e.activity == Activity::Dns
            && e.network
                .as_ref()
                .is_some_and(|n| n.protocol == "udp" && n.dns.as_ref().is_some_and(|d| !d.answers.is_empty()))
    });
    let tcp_answer = monitor.wait_for("dns answer over tcp", |e| {
        e.activity == Activity::Dns
            && e.network
                .as_ref()
                .is_some_and(|n| n.protocol == "tcp" && n.dns.as_ref().is_some_and(|d| !d.answers.is_empty()))
    });
    let connect = monitor.wait_for("connect", |e| is(e, Activity::Connect, cpid));
    monitor.stop();
    assert!(finish(client) && finish(server));

    for e in [&query, &answer, &tcp_answer] {
        assert_eq!(e.class_uid, 4003, "OCSF DNS activity");
        // dig has exited by now, so the process table cannot add its exe; the kernel's comm and pid remain.
        assert_eq!(e.process.comm, "dig", "attributed to dig through its socket: {}", summary(e));
        assert!(e.process.pid != 0 && !e.process.partial);
    }
    let q = net(&query);
    assert_eq!(q.dns.as_ref().map(|d| d.query.as_str()), Some("ringwatch.test"));
    assert_eq!((q.dst_ip.as_deref(), q.dst_port), (Some(server_ip.to_string().as_str()), Some(53)));
    let a = net(&answer);
    assert_eq!(
        a.dns.as_ref().map(|d| (d.query.as_str(), d.answers.clone())),
        Some(("ringwatch.test", vec![named.to_string()]))
    );
    assert_eq!((a.src_port, a.direction.as_deref()), (Some(53), Some("inbound")));
    assert_eq!(net(&tcp_answer).dns.as_ref().map(|d| d.query.as_str()), Some("tcp.ringwatch.test"));
    assert_eq!(answer.process.pid, query.process.pid, "query and answer belong to the same dig");

    let c = net(&connect);
    assert_eq!(c.dst_ip.as_deref(), Some(named.to_string().as_str()));
    assert!(
        matches!(c.dst_name.as_deref(), Some("ringwatch.test" | "tcp.ringwatch.test")),
        "the connect is named by the earlier answer: {}",
        summary(&connect)
    );
}

#[test]
fn without_dns_no_dns_event_is_reported_but_connections_still_are() {
    let _serial = serial();
    let (server_ns, client_ns) = match NetNs::veth_pair("nodns", 17) {
        Ok(pair) => pair,
        Err(why) => return eprintln!("skipping: {why}"),
    };
    let cgroup = match TestCgroup::new("nodns") {
        Ok(c) => c,
        Err(why) => return eprintln!("skipping: {why}"),
    };
    let cfg =
        NetworkEbpfConfig { cgroup: Some(cgroup.path().to_path_buf()), dns: false, ..NetworkEbpfConfig::default() };
    let Some(monitor) = Monitor::start_config(cfg) else { return };
    let server_ip = server_ns.addr().expect("veth address");
    let Some(_dns) = Dnsmasq::start(&server_ns, server_ip, std::net::Ipv4Addr::new(10, 77, 17, 9)) else { return };
    let Some(dig) = dig_or_skip() else { return };
    assert_eq!(query(&dig, &client_ns, &cgroup, server_ip, "ringwatch.test", false), "10.77.17.9", "dnsmasq answers");

    // A connection after the query: once its connect is seen, an answer's event would have been read already.
    let mut server = helper(&server_ns, &cgroup, &format!("server {server_ip}:8083 10"));
    read_tagged(&mut server, "READY");
    let mut client = helper(&client_ns, &cgroup, &format!("client {server_ip}:8083 10"));
    read_tagged(&mut client, "GOT");
    monitor.wait_for("connect", |e| is(e, Activity::Connect, client.id()));
    let events = monitor.stop();
    assert!(finish(client) && finish(server));
    let dns: Vec<String> = events.iter().filter(|e| e.activity == Activity::Dns).map(summary).collect();
    assert!(dns.is_empty(), "dns: false reports no DNS: {dns:?}");
}

#[test]
fn a_block_rule_starts_the_enforcer_inside_the_monitor_and_its_events_flow_through() {
    let _serial = serial();
    let (server_ns, client_ns) = match NetNs::veth_pair("blk", 16) {
        Ok(pair) => pair,
        Err(why) => return eprintln!("skipping: {why}"),
    };
    let Ok(cgroup) = TestCgroup::new("blk") else { return eprintln!("skipping: no test cgroup") };
    let server_ip = server_ns.addr().expect("veth address");
    let plan = NetworkPlan {
        rules: vec![NetRule {
            id: "no-9090".into(),
            action: NetAction::Block,
            matcher: NetMatch {
                dst: vec![(std::net::IpAddr::V4(server_ip), 32)],
                dst_ports: vec![(9090, 9090)],
                ..NetMatch::default()
            },
            not: None,
        }],
        host_rules: Vec::new(),
    };
    let Some(monitor) = Monitor::start_with(cgroup.path(), plan) else { return };
    let mut server = helper(&server_ns, &cgroup, &format!("server {server_ip}:9091 10"));
    read_tagged(&mut server, "READY");
    // Blocked: the kernel refuses the connect with EPERM.
    let mut blocked = helper(&client_ns, &cgroup, &format!("client {server_ip}:9090 10"));
    let failure = read_tagged(&mut blocked, "FAILED");
    assert!(failure.contains("os error 1)"), "EPERM for the blocked port: {failure}");
    // Allowed: another port of the same host works and is monitored.
    let mut allowed = helper(&client_ns, &cgroup, &format!("client {server_ip}:9091 10"));
    read_tagged(&mut allowed, "GOT");
    let (bpid, apid) = (blocked.id(), allowed.id());
    let block = monitor.wait_for("blocked", |e| e.action == Action::Blocked && e.process.pid == bpid);
    monitor.wait_for("allowed connect", |e| is(e, Activity::Connect, apid));
    let events = monitor.stop();
    assert!(!finish(blocked) && finish(allowed) && finish(server));
    assert_eq!(block.rule.as_deref(), Some("no-9090"));
    assert_eq!(net(&block).dst_port, Some(9090));
    let reported: Vec<String> =
        events.iter().filter(|e| is(e, Activity::Connect, bpid) && e.action == Action::Observed).map(summary).collect();
    assert!(reported.is_empty(), "a blocked connect never reaches SYN_SENT: {reported:?}");
}

#[test]
fn programs_are_detached_and_unloaded_after_shutdown_or_drop() {
    let _serial = serial();
    let cgroup = match TestCgroup::new("detach") {
        Ok(c) => c,
        Err(why) => return eprintln!("skipping: {why}"),
    };
    let before = loaded_program_ids(&PROGRAM_NAMES);
    let Some(monitor) = Monitor::start(cgroup.path()) else { return };
    let loaded: BTreeSet<u32> = loaded_program_ids(&PROGRAM_NAMES).difference(&before).copied().collect();
    assert_eq!(loaded.len(), PROGRAM_NAMES.len(), "all our programs are loaded while running");
    monitor.stop();
    assert_eq!(still_loaded(&PROGRAM_NAMES, &loaded), BTreeSet::new(), "programs left loaded after run returned");

    // Started but never run: dropping it detaches too.
    let before = loaded_program_ids(&PROGRAM_NAMES);
    let cfg = NetworkEbpfConfig { cgroup: Some(cgroup.path().to_path_buf()), ..NetworkEbpfConfig::default() };
    let source = NetworkEbpf::start(&cfg).expect("start");
    let loaded: BTreeSet<u32> = loaded_program_ids(&PROGRAM_NAMES).difference(&before).copied().collect();
    assert_eq!(loaded.len(), PROGRAM_NAMES.len());
    drop(source);
    assert_eq!(still_loaded(&PROGRAM_NAMES, &loaded), BTreeSet::new(), "programs left loaded after drop");
}

#[test]
fn test_helpers_make_a_private_namespace_veth_and_cgroup() {
    let (a, b) = match NetNs::veth_pair("h", 1) {
        Ok(p) => p,
        Err(why) => return eprintln!("skipping: {why}"),
    };
    let cg = TestCgroup::new("helper").expect("cgroup");
    let addr_a = a.addr().expect("veth address");
    let server = a.spawn(move || {
        let l = TcpListener::bind((addr_a, 7001)).expect("bind in namespace a");
        let (mut s, _) = l.accept().expect("accept");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).expect("read");
        buf
    });
    thread::sleep(Duration::from_millis(100));
    let client = b.spawn(move || {
        let mut c = TcpStream::connect((addr_a, 7001)).expect("connect across the veth");
        c.write_all(b"hello").expect("write");
    });
    client.join().expect("client");
    assert_eq!(&server.join().expect("server"), b"hello");
    let mut cmd = b.command("sh");
    cmd.args(["-c", "cat /proc/self/cgroup; ip -o addr show | grep -c 10.77.1.2"]);
    cg.command_into(&mut cmd);
    let out = cmd.output().expect("run in namespace and cgroup");
    let text = String::from_utf8_lossy(&out.stdout);
    let dir = cg.path().file_name().and_then(|n| n.to_str()).expect("cgroup dir name");
    assert!(text.contains(dir), "child joined the test cgroup: {text}");
    assert_eq!(text.lines().last(), Some("1"), "child sees namespace b's address: {text}");
}
