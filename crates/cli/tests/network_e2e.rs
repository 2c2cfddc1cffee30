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
