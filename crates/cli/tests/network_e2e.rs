//! End to end through the real binary: `ringwatch run --mode network=kernel` (attached at the cgroup2 root, as in
//! production) reports a TCP connect, its accept and close with the acting process's exe, inside a private network
//! namespace (`unshare -n`) so the test touches no host interface.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Agent, backend_available, temp_dir};

/// A Python client and server on 127.0.0.1:`port` in a fresh network namespace; the process lingers a second so
/// the pipeline reads its exe from /proc while it still exists.
const PY: &str = r#"
import socket, sys, time
port = int(sys.argv[1])
srv = socket.socket(); srv.bind(("127.0.0.1", port)); srv.listen(1)
cli = socket.create_connection(("127.0.0.1", port))
conn, _ = srv.accept()
cli.sendall(b"x" * 1234); cli.shutdown(socket.SHUT_WR)
data = b""
while True:
    chunk = conn.recv(65536)
    if not chunk: break
    data += chunk
conn.close(); cli.close(); srv.close()
assert len(data) == 1234
time.sleep(1)
"#;

#[test]
fn kernel_network_mode_reports_connect_accept_and_close_with_the_process_exe() {
    if !backend_available("network", "ebpf") {
        return;
    }
    let Ok(python) = std::fs::canonicalize("/usr/bin/python3") else {
        eprintln!("skipping: /usr/bin/python3 not installed");
        return;
    };
    let dir = temp_dir("e2e-net");
    let agent = Agent::start(dir.path(), &["--mode", "all=off,network=kernel", "--duration", "60"]);
    // A port unlikely to be in use by anything else the host runs at this moment.
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let status = Command::new("unshare")
        .args(["-n", "sh", "-c", &format!("ip link set lo up && exec {} -c '{PY}' {port}", python.display())])
        .status()
        .expect("unshare runs");
    assert!(status.success(), "the python client/server ran");
    let ours = |e: &serde_json::Value| {
        e["domain"] == "network" && (e["network"]["dst_port"] == port || e["network"]["src_port"] == port)
    };
    let events = agent.wait_for(Duration::from_secs(10), |e| ours(e) && e["activity"] == "close");
    let (status, _) = agent.stop();
    assert!(status.success(), "agent exits 0 on SIGTERM: {status}");

    let of = |activity: &str| events.iter().filter(|e| ours(e) && e["activity"] == activity).collect::<Vec<_>>();
    let connects = of("connect");
    assert_eq!(connects.len(), 1, "one connect to port {port}: {events:#?}");
    let c = connects[0];
    assert_eq!(c["process"]["exe"], python.to_str().expect("utf8"), "{c}");
    assert_eq!(c["backend"]["mode"], "kernel");
    assert_eq!(c["backend"]["source"], "ebpf");
    assert_eq!(c["class_uid"], 4001);
    assert_eq!(c["network"]["protocol"], "tcp");
    assert_eq!(c["network"]["direction"], "outbound");
    assert_eq!(c["network"]["dst_ip"], "127.0.0.1");
    assert!(c["process"]["guid"].as_str().is_some_and(|g| !g.is_empty()), "{c}");
    assert_eq!(of("accept").len(), 1, "one accept");
    assert_eq!(of("listen").len(), 1, "one listen");
    let closes = of("close");
    let client_close = closes.iter().find(|e| e["network"]["direction"] == "outbound").expect("client close");
    assert_eq!(client_close["network"]["bytes_out"], 1234, "{client_close}");
}

/// A DNS exchange on 127.0.0.1:53 in a fresh network namespace: a Python stub server answers `probe.test A` with
/// 10.9.8.7, then the client connects to 127.0.0.1:`port` (a listener in the same namespace) so the test has a
/// connect to wait for.
const DNS_PY: &str = r#"
import socket, struct, sys, time
port = int(sys.argv[1])
srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); srv.bind(("127.0.0.1", 53))
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x05probe\x04test\x00" + struct.pack(">HH", 1, 1)
cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); cli.sendto(q, ("127.0.0.1", 53))
query, peer = srv.recvfrom(512)
answer = struct.pack(">HHHHHH", 0x1234, 0x8180, 1, 1, 0, 0) + query[12:]
answer += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton("10.9.8.7")
srv.sendto(answer, peer)
assert cli.recv(512)[:2] == b"\x12\x34"
tcp = socket.socket(); tcp.bind(("127.0.0.1", port)); tcp.listen(1)
c = socket.create_connection(("127.0.0.1", port)); a, _ = tcp.accept(); c.close(); a.close()
time.sleep(1)
"#;

/// Runs [`DNS_PY`] under an agent started with `policy` and returns the agent's events about it.
fn dns_exchange_under(policy: &str, label: &str) -> Option<Vec<serde_json::Value>> {
    let python = std::fs::canonicalize("/usr/bin/python3").ok()?;
    let dir = temp_dir(label);
    let policy_path = dir.path().join("policy.yaml");
    std::fs::write(&policy_path, policy).expect("write policy");
    let policy_arg = policy_path.to_str().expect("utf8");
    let agent =
        Agent::start(dir.path(), &["--mode", "all=off,network=kernel", "--duration", "60", "--policy", policy_arg]);
    let port = 20_000 + ((std::process::id() + 7) % 20_000) as u16;
    let status = Command::new("unshare")
        .args(["-n", "sh", "-c", &format!("ip link set lo up && exec {} -c '{DNS_PY}' {port}", python.display())])
        .status()
        .expect("unshare runs");
    assert!(status.success(), "the python DNS exchange ran");
    let connected = |e: &serde_json::Value| e["activity"] == "connect" && e["network"]["dst_port"] == port;
    let events = agent.wait_for(Duration::from_secs(10), connected);
    let (status, _) = agent.stop();
    assert!(status.success(), "agent exits 0 on SIGTERM: {status}");
    Some(events)
}

#[test]
fn policy_network_dns_false_turns_dns_capture_off_and_keeps_connections() {
    if !backend_available("network", "ebpf") {
        return;
    }
    let is_probe_query = |e: &serde_json::Value| e["activity"] == "dns" && e["network"]["dns"]["query"] == "probe.test";
    let Some(on) = dns_exchange_under("rules: []\n", "e2e-dns-on") else {
        eprintln!("skipping: /usr/bin/python3 not installed");
        return;
    };
    let answered =
        on.iter().find(|e| is_probe_query(e) && e["network"]["dns"]["answers"].to_string().contains("10.9.8.7"));
    assert!(answered.is_some(), "DNS capture is on by default: the answer is reported: {on:#?}");

    let off = dns_exchange_under("network:\n  dns: false\n", "e2e-dns-off").expect("python3 present");
    assert!(off.iter().any(|e| e["activity"] == "connect"), "connections are still reported");
    assert!(!off.iter().any(|e| e["activity"] == "dns"), "no DNS event with network.dns: false: {off:#?}");
}
