//! Issue #7's fleet acceptance test: two real agents with different host names forward to NATS JetStream through
//! their spools, one `ringwatch collect` stores what arrives, nats-server is SIGKILLed for 10 s in the middle of
//! an exec storm (>= 100,000 events in total) and restarted on the same port and store. Afterwards the collector's
//! store holds, for each host, exactly the ids that agent wrote to its --out file, each once.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Agent, NatsServer, backend_available, nats_server_available, ringwatch, temp_dir};
use ringwatch_store::{RowVisitor, Store, Value};

/// Execs in the storm: fork + exec + exit per exec in each of the two agents, ~6 events per exec in total.
const EXECS: [u32; 3] = [6000, 5000, 6000];
/// How long nats-server stays dead.
const OUTAGE: Duration = Duration::from_secs(10);

/// Collects every row of a query.
#[derive(Default)]
struct Rows(Vec<Vec<Value>>);

impl RowVisitor for Rows {
    fn columns(&mut self, _: &[String]) -> std::io::Result<()> {
        Ok(())
    }
    fn row(&mut self, values: &[Value]) -> std::io::Result<()> {
        self.0.push(values.to_vec());
        Ok(())
    }
}

fn query(store: &Path, sql: &str) -> Vec<Vec<Value>> {
    let store = Store::open_read_only(store).expect("collector store opens");
    let mut rows = Rows::default();
    store.query(sql, &mut rows).expect("query runs");
    rows.0
}

fn count(store: &Path, sql: &str) -> i64 {
    match query(store, sql).first().and_then(|r| r.first()) {
        Some(Value::Integer(n)) => *n,
        other => panic!("{sql}: not a count: {other:?}"),
    }
}

fn storm(execs: u32) -> Child {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("i=0; while [ $i -lt {execs} ]; do /bin/true; i=$((i+1)); done"))
        .stdout(Stdio::null())
        .spawn()
        .expect("storm starts")
}

fn start_agent(dir: &Path, host: &str, url: &str) -> Agent {
    let spool = dir.join("spool");
    let spool = spool.to_str().expect("utf-8 path");
    Agent::start(dir, &["--host", host, "--nats", url, "--spool", spool, "--mode", "all=off,process=kernel"])
}

#[test]
fn two_agents_and_a_collector_store_every_event_once_across_a_server_crash() {
    if !backend_available("process", "ebpf") || !nats_server_available() {
        return;
    }
    let started = Instant::now();
    let dir = temp_dir("fleet");
    let mut server = NatsServer::start(dir.path()).expect("nats-server starts");
    let url = server.url();
    let store = dir.path().join("collector.db");
    let collector_log = dir.path().join("collect.log");
    let mut collector = ringwatch()
        .args(["collect", "--nats", &url, "--store"])
        .arg(&store)
        .stderr(fs::File::create(&collector_log).expect("log file"))
        .spawn()
        .expect("collector starts");

    let (alpha_dir, beta_dir) = (dir.path().join("alpha"), dir.path().join("beta"));
    fs::create_dir_all(&alpha_dir).expect("mkdir");
    fs::create_dir_all(&beta_dir).expect("mkdir");
    let alpha = start_agent(&alpha_dir, "alpha", &url);
    let beta = start_agent(&beta_dir, "beta", &url);

    assert!(storm(EXECS[0]).wait().expect("storm").success());
    eprintln!("phase 1 done at {:?}; killing nats-server", started.elapsed());
    server.kill();
    let killed = Instant::now();
    assert!(storm(EXECS[1]).wait().expect("storm").success());
    std::thread::sleep(OUTAGE.saturating_sub(killed.elapsed()));
    eprintln!("restarting nats-server after {:?} down", killed.elapsed());
    server.restart().expect("nats-server restarts");
    assert!(storm(EXECS[2]).wait().expect("storm").success());
    eprintln!("storm done at {:?}; stopping the agents", started.elapsed());

    // SIGINT both at once so they drain their spools concurrently; `stop` then waits (its SIGTERM is harmless).
    for agent in [&alpha, &beta] {
        let pid = nix::unistd::Pid::from_raw(agent.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT agent");
    }
    let (status_a, events_a) = alpha.stop();
    let (status_b, events_b) = beta.stop();
    assert!(status_a.success() && status_b.success(), "agents exit cleanly: {status_a} {status_b}");
    let ids = |events: &[serde_json::Value], host: &str| -> BTreeSet<String> {
        events
            .iter()
            .inspect(|e| assert_eq!(e["host"], host))
            .map(|e| e["id"].as_str().expect("every event has an id").to_owned())
            .collect()
    };
    let (ids_a, ids_b) = (ids(&events_a, "alpha"), ids(&events_b, "beta"));
    assert_eq!(ids_a.len(), events_a.len(), "ids are unique in alpha's output");
    let total = (ids_a.len() + ids_b.len()) as i64;
    eprintln!("agents wrote {} + {} = {total} events by {:?}", ids_a.len(), ids_b.len(), started.elapsed());
    assert!(total >= 100_000, "the workload makes at least 100,000 events: {total}");

    // The collector catches up (duplicates from the crash are skipped by the store).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stored = 0;
    while Instant::now() < deadline {
        stored = count(&store, "SELECT count(*) FROM events WHERE host IN ('alpha', 'beta')");
        if stored >= total {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(collector.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("signal collector");
    let collector_status = collector.wait().expect("collector exits");
    let log = fs::read_to_string(&collector_log).unwrap_or_default();
    let tail: String = log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    eprintln!("collector log (tail):\n{tail}");
    assert!(collector_status.success(), "collector stops cleanly on SIGTERM: {collector_status}");
    assert_eq!(stored, total, "the collector stored every event by {:?}", started.elapsed());

    for (host, expected) in [("alpha", &ids_a), ("beta", &ids_b)] {
        let rows = query(&store, &format!("SELECT id FROM events WHERE host = '{host}'"));
        let got: BTreeSet<String> = rows
            .iter()
            .map(|r| match &r[0] {
                Value::Text(t) => t.clone(),
                other => panic!("id is text: {other:?}"),
            })
            .collect();
        let missing: Vec<_> = expected.difference(&got).take(5).collect();
        let extra: Vec<_> = got.difference(expected).take(5).collect();
        assert!(missing.is_empty() && extra.is_empty(), "{host}: missing {missing:?}, extra {extra:?}");
        assert_eq!(got.len(), expected.len());
    }
    assert_eq!(
        count(&store, "SELECT count(*) FROM events"),
        count(&store, "SELECT count(DISTINCT id) FROM events"),
        "each event stored once"
    );
    eprintln!("fleet test done in {:?}", started.elapsed());
}

#[test]
fn collect_without_nats_or_with_a_bad_ca_file_is_a_usage_error() {
    let dir = temp_dir("collect-usage");
    let store = dir.path().join("c.db");
    let out = ringwatch().args(["collect", "--store"]).arg(&store).output().expect("runs");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nats"));

    let ca = dir.path().join("missing-ca.pem");
    let out = ringwatch()
        .args(["collect", "--nats", "nats://127.0.0.1:1", "--nats-tls-ca"])
        .arg(&ca)
        .arg("--store")
        .arg(&store)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--nats-tls-ca") && stderr.contains("missing-ca.pem"), "{stderr}");
    assert!(!store.exists(), "nothing is created before the options are checked");
}
