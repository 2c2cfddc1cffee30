//! The sock_diag backend end to end, as root, in a private network namespace: the backend's netlink socket is
//! opened inside the namespace (so it polls that namespace's tables), real servers and clients (the C helper
//! `tests/data/net_client.c`, not hooked) make connections there, and the events are checked for tuple, pid and
//! bytes. The documented miss is asserted: a connection shorter than the poll interval is not reported, and is
//! counted as lost when its TIME_WAIT remnant shows up.

mod common;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::netns::NetNs;
use common::{Running, build_c_helpers, ok_or_skip, root_or_skip};
use ringwatch_core::{Activity, Event, Source};
use ringwatch_domains::network::sock_diag::{NetworkSockDiag, SockDiagConfig};

const NAME: &str = "network/sock_diag";

fn helper() -> Option<&'static PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let [bin] = build_c_helpers("network-sock-diag", [(&["-Wall", "-O1"], "net_client.c", "net_client")])?;
        Some(bin)
    })
    .as_ref()
}

/// The namespace, or `None` after printing why the test cannot run.
fn setup(tag: &str) -> Option<NetNs> {
    if !root_or_skip("network namespaces, /proc/*/fd of other processes") {
        return None;
    }
    if helper().is_none() {
        eprintln!("skipping: gcc could not build tests/data/net_client.c");
        return None;
    }
    ok_or_skip(NetNs::new(tag))
}

/// Starts the backend with its netlink socket inside `ns`.
fn start_in(
    ns: &NetNs,
    interval: Duration,
) -> (Running, std::sync::Arc<ringwatch_domains::network::sock_diag::SockDiagStats>) {
    let source = ns
        .spawn(move || NetworkSockDiag::start(SockDiagConfig { interval, ..SockDiagConfig::default() }))
        .join()
        .expect("start thread")
        .expect("sock_diag starts");
    assert_eq!(source.name(), NAME);
    let stats = source.stats();
    (Running::start(source, 1 << 14), stats)
}

fn server(ns: &NetNs, port: u16, ms: u32) -> Child {
    ns.net_client_server(helper().expect("checked"), port, ms)
}

fn client(ns: &NetNs, args: &[&str]) -> (u32, String) {
    let child = ns
        .command(helper().expect("checked"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let pid = child.id();
    let out = child.wait_with_output().expect("client output");
    (pid, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn port_of(e: &Event, dst: bool) -> Option<u16> {
    e.network.as_ref().and_then(|n| if dst { n.dst_port } else { n.src_port })
}

#[test]
fn a_long_lived_connection_is_seen_on_both_ends_with_pid_and_bytes() {
    let Some(ns) = setup("sdl") else { return };
    let (running, stats) = start_in(&ns, Duration::from_millis(100));
    std::thread::sleep(Duration::from_millis(250)); // the baseline poll
    let mut srv = server(&ns, 8091, 6000);
    let srv_pid = srv.id();
    // Connected for 1.5 s (15 polls), 100 kB sent.
    let (pid, out) = client(&ns, &["hold", "127.0.0.1", "8091", "1500", "100000"]);
    assert_eq!(out.trim(), "ok");
    let wait = |what: &str, pred: &dyn Fn(&Event) -> bool| {
        running.wait_for(Duration::from_secs(5), pred).unwrap_or_else(|| panic!("no event: {what}"))
    };
    let listen = wait("listen", &|e| e.activity == Activity::Listen && port_of(e, false) == Some(8091));
    assert_eq!(listen.process.pid, srv_pid, "the listener's owner");
    let conn = wait("connect", &|e| e.activity == Activity::Connect && port_of(e, true) == Some(8091));
    assert_eq!(conn.process.pid, pid, "the client's pid from its socket inode");
    assert!(conn.trusted, "socket facts come from the kernel");
    assert_eq!(conn.backend.source.as_str(), "sock_diag");
    let client_port = port_of(&conn, false).expect("client port");
    let accept = wait("accept", &|e| e.activity == Activity::Accept && port_of(e, false) == Some(client_port));
    assert_eq!((accept.process.pid, port_of(&accept, true)), (srv_pid, Some(8091)));
    assert_eq!(accept.network.as_ref().and_then(|n| n.direction.as_deref()), Some("inbound"));
    let closed = |dir: &'static str| {
        wait(dir, &|e| {
            e.activity == Activity::Close
                && port_of(e, true) == Some(8091)
                && port_of(e, false) == Some(client_port)
                && e.network.as_ref().and_then(|n| n.direction.as_deref()) == Some(dir)
        })
    };
    let out_close = closed("outbound");
    let net = out_close.network.as_ref().expect("network");
    assert_eq!(out_close.process.pid, pid);
    assert!(net.bytes_out.is_some_and(|b| b >= 100_000), "bytes the server acked: {net:?}");
    assert!(net.duration_us.is_some_and(|d| d >= 1_000_000), "{net:?}");
    let in_close = closed("inbound");
    let net = in_close.network.as_ref().expect("network");
    assert_eq!(in_close.process.pid, srv_pid);
    assert_eq!((net.bytes_in, net.bytes_out), (Some(100_000), Some(5)), "the server read it all and sent pong");
    assert!(stats.polls.load(Ordering::Relaxed) >= 10);
    let _ = srv.kill();
    let _ = srv.wait();
    running.stop();
}

#[test]
fn a_connection_shorter_than_the_poll_interval_is_missed_and_counted() {
    let Some(ns) = setup("sds") else { return };
    let (running, stats) = start_in(&ns, Duration::from_millis(1000));
    std::thread::sleep(Duration::from_millis(1200)); // the baseline poll is over
    let mut srv = server(&ns, 8092, 6000);
    // Connect and close at once: the client closes first, so its socket lingers in TIME_WAIT without an owner.
    let (pid, out) = client(&ns, &["storm", "127.0.0.1", "8092", "1"]);
    assert!(out.starts_with("ok"), "{out}");
    std::thread::sleep(Duration::from_millis(2500));
    let seen = running
        .wait_for(Duration::from_millis(50), |e| e.activity == Activity::Connect && port_of(e, true) == Some(8092));
    assert!(
        seen.is_none(),
        "KNOWN GAP: a connection shorter than the poll interval is not reported (pid {pid}); got {seen:?}"
    );
    assert!(stats.missed_short.load(Ordering::Relaxed) >= 1, "its TIME_WAIT remnant is counted as missed");
    let _ = srv.kill();
    let _ = srv.wait();
    let stopped = running.stop();
    let lost = stopped.losses.get(NAME).map_or(0, |l| l.1);
    assert!(lost >= 1, "reported as lost upstream: {:?}", stopped.losses);
}
