//! `ringwatch run --metrics ADDR` on a real agent: `/metrics` parses as Prometheus text and counts what happened
//! (execs, rule hits, store size); a bad address exits 2, an address in use exits 1 naming it.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Agent, backend_available, free_local_addr, http_get, run, temp_dir, token};
use prometheus_parse::{Scrape, Value};

/// Execs each test runs.
const EXECS: usize = 5;

/// A policy whose one rule alerts on every `/usr/bin/echo` exec.
fn echo_alert_policy(dir: &Path) -> String {
    let path = dir.join("policy.yaml");
    fs::write(
        &path,
        "rules:\n  - id: echo-alert\n    domain: process\n    match: { exe: /usr/bin/echo }\n    action: alert\n",
    )
    .expect("write policy");
    path.to_str().expect("utf8 path").to_owned()
}

/// Scrapes `addr` and parses the body; every non-comment line must be a sample the parser understood.
fn scrape(addr: &str) -> Scrape {
    let resp = http_get(addr, "/metrics");
    assert_eq!(resp.status, 200, "{}\n{}", resp.head, resp.body);
    assert!(resp.head.contains("Content-Type: text/plain; version=0.0.4"), "{}", resp.head);
    let parsed = Scrape::parse(resp.body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text");
    let sample_lines = resp.body.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count();
    assert_eq!(parsed.samples.len(), sample_lines, "every sample line parses:\n{}", resp.body);
    parsed
}

/// Sum of `metric` over the series whose labels include `labels`; `None` when no series matches.
fn sum(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let values: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            ref other => panic!("{metric} has an unexpected value {other:?}"),
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Scrapes until `done` holds (or 15 s pass) and returns the last scrape.
fn scrape_until(addr: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = scrape(addr);
        if done(&s) || Instant::now() >= deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_echos(tag: &str) {
    for _ in 0..EXECS {
        let status = Command::new("/bin/echo").arg(tag).stdout(std::process::Stdio::null()).status().expect("echo");
        assert!(status.success());
    }
}

const KERNEL_EXECS: [(&str, &str); 3] = [("domain", "process"), ("activity", "exec"), ("mode", "kernel")];

#[test]
fn a_kernel_agent_exports_exec_counts_rule_hits_and_queue_depth() {
    if !backend_available("process", "ebpf") {
        return;
    }
    let dir = temp_dir("metrics");
    let addr = free_local_addr();
    let policy = echo_alert_policy(dir.path());
    let agent =
        Agent::start(dir.path(), &["--mode", "all=off,process=kernel", "--metrics", &addr, "--policy", &policy]);
    run_echos(&token("metrics"));
    let execs = |s: &Scrape| sum(s, "ringwatch_events_total", &KERNEL_EXECS).unwrap_or(0.0);
    let hits = |s: &Scrape| sum(s, "ringwatch_policy_rule_hits_total", &[("rule", "echo-alert")]).unwrap_or(0.0);
    let s = scrape_until(&addr, |s| execs(s) >= EXECS as f64 && hits(s) >= EXECS as f64);
    assert!(execs(&s) >= EXECS as f64, "kernel exec events: {}", execs(&s));
    assert!(hits(&s) >= EXECS as f64, "echo-alert hits: {}", hits(&s));
    let alerted = [KERNEL_EXECS.as_slice(), &[("source", "ebpf"), ("action", "alerted")]].concat();
    assert!(sum(&s, "ringwatch_events_total", &alerted).unwrap_or(0.0) >= EXECS as f64, "alerted execs by label");
    assert!(sum(&s, "ringwatch_pipeline_queue_depth", &[]).is_some(), "queue depth is exported");
    assert!(sum(&s, "ringwatch_pipeline_written_total", &[]).unwrap_or(0.0) >= EXECS as f64);
    assert_eq!(sum(&s, "ringwatch_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));
    assert!(sum(&s, "ringwatch_drops_total", &[("reason", "queue_full")]).is_some(), "drops by reason");
    assert!(sum(&s, "ringwatch_store_size_bytes", &[]).is_none(), "no store, no store metrics");
    assert_eq!(http_get(&addr, "/").status, 404);
    assert_eq!(http_get(&addr, "/metrics/x").status, 404);
    let (status, _) = agent.stop();
    assert!(status.success(), "{status}");
}

#[test]
fn with_a_store_the_store_size_is_exported() {
    if !backend_available("process", "ebpf") {
        return;
    }
    let dir = temp_dir("metrics-store");
    let addr = free_local_addr();
    let store = dir.path().join("events.db");
    let store = store.to_str().expect("utf8 path");
    let agent = Agent::start(dir.path(), &["--mode", "all=off,process=kernel", "--metrics", &addr, "--store", store]);
    run_echos(&token("metrics-store"));
    let size = |s: &Scrape| sum(s, "ringwatch_store_size_bytes", &[]);
    let inserted = |s: &Scrape| sum(s, "ringwatch_store_inserted_total", &[]).unwrap_or(0.0);
    let s = scrape_until(&addr, |s| size(s).unwrap_or(0.0) > 0.0 && inserted(s) >= EXECS as f64);
    assert!(size(&s).is_some_and(|b| b > 0.0), "store size: {:?}", size(&s));
    assert!(inserted(&s) >= EXECS as f64, "inserted: {}", inserted(&s));
    drop(agent);
}

/// `ringwatch run` with `--metrics ADDR`, expected to fail before it streams.
fn run_with_metrics(dir: &Path, addr: &str) -> std::process::Output {
    let out = dir.join("events.jsonl");
    let socket = dir.join("hook.sock");
    run(&[
        "run",
        "--mode",
        "all=off,process=best",
        "--store",
        "off",
        "--out",
        out.to_str().expect("utf8"),
        "--hook-socket",
        socket.to_str().expect("utf8"),
        "--duration",
        "10",
        "--metrics",
        addr,
    ])
}

#[test]
fn a_metrics_address_that_is_not_host_and_port_exits_2() {
    let dir = temp_dir("metrics-bad");
    let out = run_with_metrics(dir.path(), "nonsense");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--metrics nonsense") && err.contains("HOST:PORT"), "{err}");
}

#[test]
fn a_metrics_address_in_use_exits_1_naming_it() {
    let dir = temp_dir("metrics-busy");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = run_with_metrics(dir.path(), &addr);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&addr) && err.contains("in use"), "{err}");
}
