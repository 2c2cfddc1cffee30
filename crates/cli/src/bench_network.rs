//! `ringwatch bench network`: the network benchmark of issue #5, every configuration in one run.
//!
//! Two workloads, each a small C program compiled here with `cc` (so process start-up and an interpreter cost
//! nothing, and a preload hook could be injected into it) that times itself:
//!
//! - **connect storm**: N times (default 5,000) `connect` to a listener on 127.0.0.1, `accept` it, close both ends:
//!   every connection is a connect, an accept and two closes for the monitor;
//! - **bulk transfer**: one connection over 127.0.0.1 carrying `--bulk-mib` MiB (default 1,024) from a writer to a
//!   reading child process.
//!
//! Each workload runs with no sensor and with the agent in each [`NetConfig`], alternating for several rounds so
//! the noisy machine affects all alike; medians are compared with the no-sensor median of the same run. Reported:
//! wall time, ratio to no sensor (for bulk: throughput and throughput ratio), agent CPU seconds (from the start of
//! the workload until half a second after its end), network events the agent wrote for the workload's port
//! (connect storm: `connect` events, expected N), and drops (the agent's `sensor`/`drop` counts).
//!
//! Configurations are the [`NetConfig`] enum: add a variant (with its `--mode`, policy and workload environment)
//! to measure another one, e.g. the kernel monitor redirecting through the proxy, or user mode.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::bench::{BenchArgs, compile_c, cpu_seconds, kernel_release, median, start_agent_with, stop_agent};

/// Default connects per storm.
const DEFAULT_CONNECTS: u32 = 5_000;
/// Default bulk transfer size in MiB.
const DEFAULT_BULK_MIB: u64 = 1_024;

/// The workload program: `netload storm N` or `netload bulk MIB`; prints `PORT p` then `WALL seconds`.
const NETLOAD_C: &str = r#"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static int listener(struct sockaddr_in *a) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    socklen_t len = sizeof(*a);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(a, 0, sizeof(*a));
    a->sin_family = AF_INET; a->sin_addr.s_addr = htonl(INADDR_LOOPBACK); a->sin_port = 0;
    if (bind(l, (struct sockaddr *)a, sizeof(*a)) || listen(l, 4096) || getsockname(l, (struct sockaddr *)a, &len)) { perror("listen"); exit(1); }
    printf("PORT %d\n", ntohs(a->sin_port)); fflush(stdout);
    return l;
}
int main(int argc, char **argv) {
    if (argc != 3) return 2;
    struct sockaddr_in a;
    int l = listener(&a);
    long n = atol(argv[2]);
    if (!strcmp(argv[1], "storm")) {
        double t0 = now();
        for (long i = 0; i < n; i++) {
            int c = socket(AF_INET, SOCK_STREAM, 0);
            if (connect(c, (struct sockaddr *)&a, sizeof(a))) { perror("connect"); return 1; }
            int s = accept(l, NULL, NULL);
            if (s < 0) { perror("accept"); return 1; }
            close(c); close(s);
        }
        printf("WALL %.6f\n", now() - t0);
        return 0;
    }
    static char buf[1 << 18];
    long long total = (long long)n << 20;
    pid_t child = fork();
    if (child == 0) {
        int s = accept(l, NULL, NULL);
        long long got = 0; ssize_t r;
        while ((r = read(s, buf, sizeof(buf))) > 0) got += r;
        return got == total ? 0 : 3;
    }
    double t0 = now();
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&a, sizeof(a))) { perror("connect"); return 1; }
    memset(buf, 'b', sizeof(buf));
    for (long long sent = 0; sent < total;) {
        ssize_t w = write(c, buf, total - sent < (long long)sizeof(buf) ? (size_t)(total - sent) : sizeof(buf));
        if (w <= 0) { perror("write"); return 1; }
        sent += w;
    }
    close(c);
    int status;
    waitpid(child, &status, 0);
    printf("WALL %.6f\n", now() - t0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
"#;

/// One configuration the workloads run under. Add a variant to measure another (the redirect-through-proxy and
/// user-mode configurations belong here): its name, the agent's `--mode` and extra arguments (e.g. a `--policy`),
/// and the environment the workload runs with (e.g. `LD_PRELOAD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NetConfig {
    /// No agent: the baseline.
    NoSensor,
    /// `network=ebpf`: the kernel monitor alone (no policy, nothing enforced).
    KernelMonitor,
    /// `network=ebpf` with a policy redirecting the workload's TCP connections to 127.0.0.1 through the local proxy.
    KernelRedirect,
    /// `network=user`: the preload hook injected into the workload (`LD_PRELOAD`, monitor mode: one report per
    /// connect) and the sock_diag poller beside it.
    UserMode,
}

impl NetConfig {
    /// Every configuration, baseline first.
    const ALL: [NetConfig; 4] =
        [NetConfig::NoSensor, NetConfig::KernelMonitor, NetConfig::KernelRedirect, NetConfig::UserMode];

    fn name(self) -> &'static str {
        match self {
            NetConfig::NoSensor => "no sensor",
            NetConfig::KernelMonitor => "kernel monitor (ebpf)",
            NetConfig::KernelRedirect => "kernel + redirect (proxy)",
            NetConfig::UserMode => "user mode (preload+sock_diag)",
        }
    }

    /// The agent's `--mode` (after `all=off,`), or `None` for no agent.
    fn mode(self) -> Option<&'static str> {
        match self {
            NetConfig::NoSensor => None,
            NetConfig::KernelMonitor | NetConfig::KernelRedirect => Some("network=ebpf"),
            NetConfig::UserMode => Some("network=user"),
        }
    }

    /// Extra `ringwatch run` arguments (a policy file written under `work`).
    fn agent_args(self, work: &Path) -> Result<Vec<OsString>> {
        match self {
            NetConfig::NoSensor | NetConfig::KernelMonitor | NetConfig::UserMode => Ok(Vec::new()),
            NetConfig::KernelRedirect => {
                let policy = work.join("redirect-policy.yaml");
                // Only the workload's own connections: everything else on the host keeps its direct path.
                let exe = work.join("netload");
                fs::write(
                    &policy,
                    format!(
                        "rules:\n  - id: bench-redirect\n    domain: network\n    match: {{ dst: 127.0.0.1/32, protocol: tcp, \
                         exe: {} }}\n    action: redirect\n",
                        exe.display()
                    ),
                )?;
                Ok(vec!["--policy".into(), policy.into_os_string()])
            }
        }
    }

    /// Environment of the workload process (the agent's hook socket is `socket`).
    fn workload_env(self, socket: &Path) -> Result<Vec<(OsString, OsString)>> {
        match self {
            NetConfig::UserMode => {
                let lib = ringwatch_domains::preload::hook_library_path()
                    .context("libringwatch_hook.so not found next to ringwatch (cargo build -p ringwatch-hook)")?;
                Ok(vec![
                    ("LD_PRELOAD".into(), lib.into_os_string()),
                    ("RINGWATCH_HOOK_SOCKET".into(), socket.as_os_str().to_owned()),
                ])
            }
            _ => Ok(Vec::new()),
        }
    }
}

/// Which workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Storm(u32),
    Bulk(u64),
}

impl Workload {
    fn args(self) -> [String; 2] {
        match self {
            Workload::Storm(n) => ["storm".into(), n.to_string()],
            Workload::Bulk(mib) => ["bulk".into(), mib.to_string()],
        }
    }
}

/// What one run of a workload measured.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    wall: f64,
    cpu: f64,
    /// connect events for the workload's port.
    connects: u64,
    /// close events for the workload's port.
    closes: u64,
    drops: u64,
}

/// One configuration's medians for one workload.
#[derive(Debug, Serialize)]
struct Row {
    workload: &'static str,
    config: &'static str,
    wall_s: f64,
    ratio: f64,
    /// Bulk only: MiB/s and its ratio to no sensor.
    throughput_mib_s: Option<f64>,
    throughput_ratio: Option<f64>,
    agent_cpu_s: f64,
    connect_events_min: u64,
    close_events_min: u64,
    drops_max: u64,
}

/// Runs the benchmark and prints a table (and JSON if asked).
pub fn run(args: &BenchArgs) -> Result<()> {
    let connects = args.connects.unwrap_or(DEFAULT_CONNECTS);
    let bulk_mib = args.bulk_mib.unwrap_or(DEFAULT_BULK_MIB);
    let work = std::env::temp_dir().join(format!("ringwatch-bench-net-{}", std::process::id()));
    fs::create_dir_all(&work)?;
    let result = run_in(args, &work, connects, bulk_mib);
    let _ = fs::remove_dir_all(&work);
    result
}

fn run_in(args: &BenchArgs, work: &Path, connects: u32, bulk_mib: u64) -> Result<()> {
    let prog = compile_c(work, "netload", NETLOAD_C)?;
    let mut rows = Vec::new();
    for (label, workload) in [("connect storm", Workload::Storm(connects)), ("bulk transfer", Workload::Bulk(bulk_mib))]
    {
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); NetConfig::ALL.len()];
        for round in 0..args.rounds {
            for (i, config) in NetConfig::ALL.iter().enumerate() {
                let s = one_run(work, &prog, round, *config, workload)
                    .with_context(|| format!("{label}, round {round}, {}", config.name()))?;
                eprintln!(
                    "{label} round {round} {:<24} {:.3}s  cpu {:.3}s  connects {}  closes {}  drops {}",
                    config.name(),
                    s.wall,
                    s.cpu,
                    s.connects,
                    s.closes,
                    s.drops
                );
                samples[i].push(s);
            }
        }
        let base = median(samples[0].iter().map(|s| s.wall).collect());
        for (config, s) in NetConfig::ALL.iter().zip(&samples) {
            let wall = median(s.iter().map(|x| x.wall).collect());
            let throughput = match workload {
                Workload::Bulk(mib) => Some(mib as f64 / wall),
                Workload::Storm(_) => None,
            };
            rows.push(Row {
                workload: label,
                config: config.name(),
                wall_s: wall,
                ratio: wall / base,
                throughput_mib_s: throughput,
                throughput_ratio: throughput.map(|_| base / wall),
                agent_cpu_s: median(s.iter().map(|x| x.cpu).collect()),
                connect_events_min: s.iter().map(|x| x.connects).min().unwrap_or(0),
                close_events_min: s.iter().map(|x| x.closes).min().unwrap_or(0),
                drops_max: s.iter().map(|x| x.drops).max().unwrap_or(0),
            });
        }
    }
    println!(
        "network: connect storm {connects} x connect+accept+close on 127.0.0.1, bulk {bulk_mib} MiB over 127.0.0.1; \
         median of {} rounds, kernel {}",
        args.rounds,
        kernel_release()
    );
    println!(
        "| workload | configuration | wall s | ratio | MiB/s (ratio) | agent CPU s | connect events | close events | drops |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let throughput = match (r.throughput_mib_s, r.throughput_ratio) {
            (Some(t), Some(x)) => format!("{t:.0} ({x:.3}x)"),
            _ => "-".into(),
        };
        println!(
            "| {} | {} | {:.3} | {:.3}x | {} | {:.3} | {} | {} | {} |",
            r.workload,
            r.config,
            r.wall_s,
            r.ratio,
            throughput,
            r.agent_cpu_s,
            r.connect_events_min,
            r.close_events_min,
            r.drops_max
        );
    }
    if let Some(path) = &args.json {
        fs::write(path, serde_json::to_vec_pretty(&rows)?)?;
    }
    Ok(())
}

/// One workload run under `config`.
fn one_run(work: &Path, prog: &Path, round: u32, config: NetConfig, workload: Workload) -> Result<Sample> {
    let out = work.join(format!("events-{round}-{:?}-{}.jsonl", config, workload.args()[0]));
    let socket = work.join("hook.sock");
    let mut agent = match config.mode() {
        Some(mode) => Some(start_agent_with(mode, &out, &socket, &config.agent_args(work)?, Stdio::null())?),
        None => None,
    };
    let cpu_before = agent.as_ref().map(|a| cpu_seconds(a.id())).unwrap_or(0.0);
    let output = Command::new(prog)
        .args(workload.args())
        .envs(config.workload_env(&socket)?)
        .stderr(Stdio::inherit())
        .output()
        .context("running the workload")?;
    if !output.status.success() {
        if let Some(a) = agent.as_mut() {
            let _ = stop_agent(a);
        }
        bail!("workload failed: {}", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).map(str::to_owned);
    let wall: f64 = field("WALL ").context("workload printed no WALL")?.parse()?;
    let port: u64 = field("PORT ").context("workload printed no PORT")?.parse()?;
    let mut sample = Sample { wall, ..Sample::default() };
    if let Some(a) = agent.as_mut() {
        std::thread::sleep(Duration::from_millis(500));
        sample.cpu = cpu_seconds(a.id()) - cpu_before;
        stop_agent(a)?;
        count_events(&out, port, &mut sample)?;
    }
    Ok(sample)
}

/// Counts the workload's connect/close events (its listener's port) and the drops in an agent's output.
fn count_events(out: &Path, port: u64, sample: &mut Sample) -> Result<()> {
    for line in BufReader::new(fs::File::open(out)?).lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        let activity = v["activity"].as_str().unwrap_or("");
        // A redirected connection names the proxy in dst_port and the workload's listener in original_dst.
        let original_port = v["network"]["original_dst"].as_str().and_then(|d| d.rsplit(':').next()?.parse().ok());
        let ours = v["domain"] == "network"
            && (v["network"]["dst_port"].as_u64() == Some(port) || original_port == Some(port));
        match activity {
            "connect" if ours => sample.connects += 1,
            "close" if ours => sample.closes += 1,
            "drop" => sample.drops += v["sensor"]["count"].as_u64().unwrap_or(0),
            _ => {}
        }
    }
    Ok(())
}
