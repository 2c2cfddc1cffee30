//! `ringwatch bench file`: the file-storm benchmark of issue #4, every configuration in one run.
//!
//! A file storm is a small C program (compiled here with `cc`, so process start-up and an interpreter cost nothing)
//! doing N cycles of `open(O_CREAT|O_WRONLY|O_TRUNC)` / `write` (64 bytes) / `close` / `unlink` of a fresh name in
//! a temporary directory (default under `/var/tmp`; `--dir` picks another, e.g. `/dev/shm` for tmpfs). The program
//! times its own loop. It runs with no sensor and with the agent in each configuration, round-robin for several
//! rounds so the noisy machine affects all alike; medians are compared with the no-sensor median of the same run.
//!
//! Configurations: `fanotify alone`, no agent but the monitor's own fanotify group (same flags, same filesystem
//! mark and mask) read and discarded by a thread of the bench: what the kernel mechanism costs the storm by itself,
//! the floor under every kernel configuration; the kernel monitor (fanotify) with its default per-pid rate limit
//! and with the limit off (a
//! policy `files: { max_events_per_pid: 0 }`, so it reports the whole storm); the monitor (no limit) plus the
//! permission group for an exact-path deny rule on a file outside the storm (inode mark: no storm open waits) and an
//! exec `sha256` rule; the same with a glob deny rule instead (`FAN_OPEN_PERM` on every filesystem: every open of
//! the storm waits for the agent); and user mode (the preload hook, the storm run under `LD_PRELOAD`).
//!
//! Reported per configuration: the storm's wall time, ratio to no sensor, agent CPU seconds (from the storm's start
//! until the agent is idle again, so a backlog the agent works off after the storm is included), file events whose
//! path is under the storm directory by activity, drops from `sensor`/`drop` events split into rate-limit drops
//! (of the storm's pid) and losses (pipeline queue full, kernel queue overflow), and *unaccounted* events: expected
//! events (kernel: create + write + delete per cycle; user: create + delete, the hook does not see write/close)
//! minus events seen minus counted drops. A kernel queue overflow is counted as one loss (the kernel does not say
//! how many), so it shows up as unaccounted.
//!
//! An exec storm (`--execs` x `/bin/true` from `sh`) runs with no sensor and with the exact-path + `sha256` policy;
//! the hash-cache hit rate comes from the permission group's `stopped` log line (`cache_hits`, `cache_misses`),
//! read from the agent's stderr.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::bench::{BenchArgs, compile_c, cpu_seconds, kernel_release, median, start_agent_with, stop_agent};

/// Default cycles per storm.
const DEFAULT_FILES: u64 = 200_000;

/// Default storm directory's parent: on disk (ext4 on most machines), unlike `/tmp` on some distributions.
const DEFAULT_DIR: &str = "/var/tmp";

/// The storm program.
const STORM_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc != 3) return 2;
    if (chdir(argv[1]) != 0) { perror("chdir"); return 1; }
    long n = atol(argv[2]);
    char name[32], data[64];
    memset(data, 'x', sizeof data);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        snprintf(name, sizeof name, "f%ld", i);
        int fd = open(name, O_CREAT | O_WRONLY | O_TRUNC, 0644);
        if (fd < 0) { perror("open"); return 1; }
        if (write(fd, data, sizeof data) != (ssize_t)sizeof data) { perror("write"); return 1; }
        if (close(fd) != 0) { perror("close"); return 1; }
        if (unlink(name) != 0) { perror("unlink"); return 1; }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.6f\n", (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9);
    return 0;
}
"#;

/// Which policy an agent configuration runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PolicyKind {
    /// No `--policy`: observe only, default rate limit.
    None,
    /// `files: { max_events_per_pid: 0 }`.
    Unlimited,
    /// Unlimited + exact-path open deny (a file outside the storm) + exec `sha256` deny.
    PermExact,
    /// Unlimited + glob open deny (every open on every filesystem waits) + exec `sha256` deny.
    PermGlob,
    /// Unlimited, `files.events: [create, delete, rename]`: the kernel builds no open/write/attribute events.
    Lean,
}

struct Config {
    name: &'static str,
    /// `--mode` for the agent (`None`: no agent).
    mode: Option<&'static str>,
    policy: PolicyKind,
    preload: bool,
    /// No agent, but the monitor's fanotify group with the same flags and marks, read and discarded: the cost
    /// of the kernel mechanism itself, the floor under "kernel monitor".
    bare_fanotify: bool,
}

impl Config {
    const fn agent(name: &'static str, mode: &'static str, policy: PolicyKind) -> Config {
        Config { name, mode: Some(mode), policy, preload: false, bare_fanotify: false }
    }
}

const CONFIGS: [Config; 8] = [
    Config { name: "no sensor", mode: None, policy: PolicyKind::None, preload: false, bare_fanotify: false },
    Config {
        name: "fanotify alone (same marks, no agent)",
        mode: None,
        policy: PolicyKind::None,
        preload: false,
        bare_fanotify: true,
    },
    Config::agent("kernel monitor (rate limit 2000/s)", "file=fanotify", PolicyKind::None),
    Config::agent("kernel monitor (no rate limit)", "file=fanotify", PolicyKind::Unlimited),
    Config::agent("kernel monitor, files.events [create, delete, rename]", "file=fanotify", PolicyKind::Lean),
    Config::agent("kernel + perm exact-path + sha256", "file=fanotify", PolicyKind::PermExact),
    Config::agent("kernel + perm glob (every open waits)", "file=fanotify", PolicyKind::PermGlob),
    Config {
        name: "user (preload)",
        mode: Some("file=preload"),
        policy: PolicyKind::None,
        preload: true,
        bare_fanotify: false,
    },
];

/// Writes dirty pages back and drops the dentry and inode caches, so every storm starts from the same state: each
/// storm leaves 200,000 negative dentries behind, and without this the same no-sensor storm took 3.7 s in the first
/// round and 5.0 s in the third (measured here). Best effort: a failure only leaves the caches as they are.
fn settle_caches() {
    nix::unistd::sync();
    if let Err(e) = fs::write("/proc/sys/vm/drop_caches", "2") {
        tracing::debug!(error = %e, "drop_caches not written");
    }
    std::thread::sleep(Duration::from_millis(200));
}

/// What one storm measured.
#[derive(Debug, Clone, Default)]
struct Sample {
    wall: f64,
    cpu: f64,
    /// File events under the storm directory, by activity.
    seen: BTreeMap<String, u64>,
    /// Rate-limit drops of the storm's pid.
    rate_limited: u64,
    /// Other counted drops: pipeline queue full, kernel queue overflow (one per overflow), hook reports lost.
    lost: u64,
    /// Expected minus seen minus counted drops (never negative).
    unaccounted: u64,
    /// Permission group's hash cache (hits, misses), from its `stopped` log line.
    cache: Option<(u64, u64)>,
}

/// One configuration's medians.
#[derive(Debug, Serialize)]
struct Row {
    config: &'static str,
    wall_s: f64,
    ratio: f64,
    agent_cpu_s: f64,
    /// Storm events seen (median over rounds), by activity.
    events: BTreeMap<String, u64>,
    expected_events: u64,
    rate_limit_drops: u64,
    lost: u64,
    /// Worst round.
    unaccounted_max: u64,
}

#[derive(Debug, Serialize)]
struct ExecRow {
    config: &'static str,
    execs: u32,
    wall_s: f64,
    ratio: f64,
    agent_cpu_s: f64,
    cache_hits: u64,
    cache_misses: u64,
    hit_rate: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    files: u64,
    dir: String,
    fs_type: String,
    rounds: u32,
    kernel: String,
    file_storm: Vec<Row>,
    exec_storm: Vec<ExecRow>,
}

/// Runs the benchmark and prints a table (and JSON if asked).
pub fn run(args: &BenchArgs) -> Result<()> {
    let files = args.files.or(args.events).unwrap_or(DEFAULT_FILES);
    let storm_parent = fs::canonicalize(args.dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DIR)))
        .context("the storm directory (--dir)")?;
    let work = std::env::temp_dir().join(format!("ringwatch-bench-file-{}", std::process::id()));
    fs::create_dir_all(&work)?;
    let storm_root = storm_parent.join(format!("ringwatch-bench-storm-{}", std::process::id()));
    fs::create_dir_all(&storm_root)?;
    let result = run_in(args, files, &work, &storm_root);
    let _ = fs::remove_dir_all(&storm_root);
    let _ = fs::remove_dir_all(&work);
    result
}

fn run_in(args: &BenchArgs, files: u64, work: &Path, storm_root: &Path) -> Result<()> {
    let prog = compile_c(work, "storm", STORM_C)?;
    let protected = work.join("protected");
    fs::write(&protected, "not for you\n")?;
    let policies = write_policies(work, &protected)?;
    let hook = ringwatch_domains::preload::hook_library_path();
    let fs_type = fs_type(storm_root);
    eprintln!("file storm: {files} cycles in {} ({fs_type}); agent output in {}", storm_root.display(), work.display());

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); CONFIGS.len()];
    let mut exec_samples: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
    for round in 0..args.rounds {
        for (i, c) in CONFIGS.iter().enumerate() {
            if c.preload && hook.is_none() {
                eprintln!(
                    "skipping {}: libringwatch_hook.so not found (build it: cargo build -p ringwatch-hook)",
                    c.name
                );
                continue;
            }
            let storm_dir = storm_root.join(format!("r{round}-c{i}"));
            fs::create_dir_all(&storm_dir)?;
            settle_caches();
            let s = file_storm(work, &prog, &storm_dir, round, i, c, &policies, hook.as_deref(), files)
                .with_context(|| format!("round {round}, {}", c.name))?;
            let _ = fs::remove_dir_all(&storm_dir);
            eprintln!(
                "round {round} {:<40} {:.3}s cpu {:.2}s seen {:?} rate-limited {} lost {} unaccounted {}",
                c.name, s.wall, s.cpu, s.seen, s.rate_limited, s.lost, s.unaccounted
            );
            samples[i].push(s);
        }
        for (j, with_agent) in [false, true].into_iter().enumerate() {
            let s = exec_storm(work, round, with_agent, &policies, args.execs)
                .with_context(|| format!("round {round}, exec storm"))?;
            eprintln!(
                "round {round} exec storm {:<29} {:.3}s cpu {:.2}s cache {:?}",
                exec_name(with_agent),
                s.wall,
                s.cpu,
                s.cache
            );
            exec_samples[j].push(s);
        }
    }

    let base = median(samples[0].iter().map(|s| s.wall).collect());
    let rows: Vec<Row> = CONFIGS
        .iter()
        .zip(&samples)
        .filter(|(_, s)| !s.is_empty())
        .map(|(c, s)| {
            let wall = median(s.iter().map(|x| x.wall).collect());
            let mut activities: Vec<&String> = s.iter().flat_map(|x| x.seen.keys()).collect();
            activities.sort();
            activities.dedup();
            let events = activities
                .into_iter()
                .map(|a| (a.clone(), median_u64(s.iter().map(|x| x.seen.get(a).copied().unwrap_or(0)).collect())))
                .collect();
            Row {
                config: c.name,
                wall_s: wall,
                ratio: wall / base,
                agent_cpu_s: median(s.iter().map(|x| x.cpu).collect()),
                events,
                expected_events: if c.mode.is_none() { 0 } else { expected(c, files) },
                rate_limit_drops: median_u64(s.iter().map(|x| x.rate_limited).collect()),
                lost: median_u64(s.iter().map(|x| x.lost).collect()),
                unaccounted_max: s.iter().map(|x| x.unaccounted).max().unwrap_or(0),
            }
        })
        .collect();
    let exec_base = median(exec_samples[0].iter().map(|s| s.wall).collect());
    let exec_rows: Vec<ExecRow> = [false, true]
        .into_iter()
        .zip(&exec_samples)
        .map(|(with_agent, s)| {
            let wall = median(s.iter().map(|x| x.wall).collect());
            let (hits, misses) = s.iter().filter_map(|x| x.cache).fold((0, 0), |(h, m), (h2, m2)| (h + h2, m + m2));
            ExecRow {
                config: exec_name(with_agent),
                execs: args.execs,
                wall_s: wall,
                ratio: wall / exec_base,
                agent_cpu_s: median(s.iter().map(|x| x.cpu).collect()),
                cache_hits: hits,
                cache_misses: misses,
                hit_rate: if hits + misses == 0 { f64::NAN } else { hits as f64 / (hits + misses) as f64 },
            }
        })
        .collect();
    let report = Report {
        files,
        dir: storm_root.parent().unwrap_or(storm_root).display().to_string(),
        fs_type,
        rounds: args.rounds,
        kernel: kernel_release(),
        file_storm: rows,
        exec_storm: exec_rows,
    };
    print_report(&report);
    if let Some(path) = &args.json {
        fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

fn exec_name(with_agent: bool) -> &'static str {
    if with_agent { "kernel + perm exact-path + sha256" } else { "no sensor" }
}

/// Events a configuration should report for `files` cycles.
fn expected(c: &Config, files: u64) -> u64 {
    // The hook sees no write (no write/close hooks); the lean monitor asks for none.
    if c.preload || c.policy == PolicyKind::Lean { 2 * files } else { 3 * files }
}

fn print_report(r: &Report) {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!(
        "file storm: {} x create/write(64 B)/close/unlink in {} ({}), median of {} rounds, kernel {}, {cpus} CPUs",
        r.files, r.dir, r.fs_type, r.rounds, r.kernel
    );
    println!(
        "| configuration | wall s | ratio | agent CPU s | storm events seen (create/write/delete) | rate-limit drops | lost | unaccounted (max) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in &r.file_storm {
        let get = |a: &str| row.events.get(a).copied().unwrap_or(0);
        let other: u64 = row
            .events
            .iter()
            .filter(|(a, _)| !["create", "write", "delete"].contains(&a.as_str()))
            .map(|(_, n)| n)
            .sum();
        let seen = if row.expected_events == 0 {
            "-".to_owned()
        } else {
            let extra = if other > 0 { format!(" (+{other} other)") } else { String::new() };
            format!("{}/{}/{} of {}{extra}", get("create"), get("write"), get("delete"), row.expected_events)
        };
        let dash = |n: u64| if row.expected_events == 0 { "-".to_owned() } else { n.to_string() };
        println!(
            "| {} | {:.3} | {:.2}x | {} | {} | {} | {} | {} |",
            row.config,
            row.wall_s,
            row.ratio,
            if row.expected_events == 0 { "-".to_owned() } else { format!("{:.2}", row.agent_cpu_s) },
            seen,
            dash(row.rate_limit_drops),
            dash(row.lost),
            dash(row.unaccounted_max),
        );
    }
    println!();
    println!("exec storm: {} x fork+exec /bin/true, sha256 deny rule (exec permission events on every filesystem)", {
        r.exec_storm.first().map_or(0, |e| e.execs)
    });
    println!("| configuration | wall s | ratio | agent CPU s | hash cache hits / lookups | hit rate |");
    println!("|---|---|---|---|---|---|");
    for e in &r.exec_storm {
        if e.config == "no sensor" {
            println!("| {} | {:.3} | {:.2}x | - | - | - |", e.config, e.wall_s, e.ratio);
        } else {
            println!(
                "| {} | {:.3} | {:.2}x | {:.2} | {}/{} | {:.2}% |",
                e.config,
                e.wall_s,
                e.ratio,
                e.agent_cpu_s,
                e.cache_hits,
                e.cache_hits + e.cache_misses,
                e.hit_rate * 100.0
            );
        }
    }
}

fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// The policy files, by kind (`None` has none).
struct Policies {
    unlimited: PathBuf,
    lean: PathBuf,
    perm_exact: PathBuf,
    perm_glob: PathBuf,
}

impl Policies {
    fn args(&self, kind: PolicyKind) -> Vec<OsString> {
        let path = match kind {
            PolicyKind::None => return Vec::new(),
            PolicyKind::Unlimited => &self.unlimited,
            PolicyKind::Lean => &self.lean,
            PolicyKind::PermExact => &self.perm_exact,
            PolicyKind::PermGlob => &self.perm_glob,
        };
        vec!["--policy".into(), path.into()]
    }
}

fn write_policies(work: &Path, protected: &Path) -> Result<Policies> {
    // A digest no binary here has: every exec is hashed (or taken from the cache) and allowed.
    let sha = "0".repeat(63) + "1";
    let limits = "files:\n  max_events_per_pid: 0\n";
    let sha_rule =
        format!("  - id: bench-bad-binary\n    domain: file\n    match: {{ sha256: [\"{sha}\"] }}\n    action: deny\n");
    let exact = format!(
        "rules:\n  - id: bench-protected\n    domain: file\n    match: {{ path: {}, activity: open }}\n    action: deny\n{sha_rule}{limits}",
        protected.display()
    );
    let glob = format!(
        "rules:\n  - id: bench-glob\n    domain: file\n    match: {{ path: \"**/*.ringwatch-bench-deny\", activity: open }}\n    action: deny\n{sha_rule}{limits}"
    );
    let p = Policies {
        unlimited: work.join("unlimited.yaml"),
        lean: work.join("lean.yaml"),
        perm_exact: work.join("perm-exact.yaml"),
        perm_glob: work.join("perm-glob.yaml"),
    };
    fs::write(&p.unlimited, limits)?;
    fs::write(&p.lean, format!("{limits}  events: [create, delete, rename]\n"))?;
    fs::write(&p.perm_exact, exact)?;
    fs::write(&p.perm_glob, glob)?;
    Ok(p)
}

#[allow(clippy::too_many_arguments)] // one storm's setting
fn file_storm(
    work: &Path,
    prog: &Path,
    storm_dir: &Path,
    round: u32,
    index: usize,
    c: &Config,
    policies: &Policies,
    hook: Option<&Path>,
    files: u64,
) -> Result<Sample> {
    let out = work.join(format!("events-{round}-{index}.jsonl"));
    let log = work.join(format!("agent-{round}-{index}.log"));
    let socket = work.join("hook.sock");
    let mut agent = match c.mode {
        Some(m) => {
            Some(start_agent_with(m, &out, &socket, &policies.args(c.policy), Stdio::from(fs::File::create(&log)?))?)
        }
        None => None,
    };
    let mut cmd = Command::new(prog);
    cmd.arg(storm_dir).arg(files.to_string()).stdout(Stdio::piped());
    if c.preload
        && let Some(lib) = hook
    {
        cmd.env("LD_PRELOAD", lib).env("RINGWATCH_HOOK_SOCKET", &socket);
    }
    let bare = c.bare_fanotify.then(|| BareFanotify::start(storm_dir)).transpose()?;
    let cpu_before = agent.as_ref().map_or(0.0, |a| cpu_seconds(a.id()));
    let child = cmd.spawn().context("starting the storm")?;
    let storm_pid = child.id();
    let output = child.wait_with_output()?;
    if let Some(bare) = bare {
        bare.stop();
    }
    if !output.status.success() {
        bail!("storm failed: {}", output.status);
    }
    let wall: f64 = String::from_utf8_lossy(&output.stdout).trim().parse().context("the storm's own timing")?;
    let mut sample = Sample { wall, ..Sample::default() };
    if let Some(a) = agent.as_mut() {
        sample.cpu = wait_idle(a.id()) - cpu_before;
        stop_agent(a)?;
        count_file_events(&out, storm_dir, storm_pid, &mut sample)?;
        sample.unaccounted =
            expected(c, files).saturating_sub(sample.seen.values().sum::<u64>() + sample.rate_limited + sample.lost);
        let _ = fs::remove_file(&out);
    }
    Ok(sample)
}

/// The file monitor's fanotify group (same init flags, same filesystem mark and mask) on a thread that reads the
/// events the way the monitor does (a wake-up, a short batching delay, reads until empty) and throws them away.
struct BareFanotify {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl BareFanotify {
    fn start(dir: &Path) -> Result<BareFanotify> {
        use ringwatch_domains::file::fanotify::notify::NotifyGroup;
        let group = NotifyGroup::open().context("fanotify_init")?;
        group.mark_filesystem(dir).context("fanotify_mark")?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 << 10];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
                while matches!(group.read(&mut buf), Ok(n) if n > 0) {}
            }
        });
        Ok(BareFanotify { stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

fn exec_storm(work: &Path, round: u32, with_agent: bool, policies: &Policies, execs: u32) -> Result<Sample> {
    let out = work.join(format!("exec-events-{round}.jsonl"));
    let log = work.join(format!("exec-agent-{round}.log"));
    let socket = work.join("hook.sock");
    let mut agent = if with_agent {
        let args = policies.args(PolicyKind::PermExact);
        Some(start_agent_with("file=fanotify", &out, &socket, &args, Stdio::from(fs::File::create(&log)?))?)
    } else {
        None
    };
    let script = format!("i=0; while [ $i -lt {execs} ]; do /bin/true; i=$((i+1)); done");
    let cpu_before = agent.as_ref().map_or(0.0, |a| cpu_seconds(a.id()));
    let t0 = Instant::now();
    let status = Command::new("/bin/sh").arg("-c").arg(script).status().context("starting the exec storm")?;
    let wall = t0.elapsed().as_secs_f64();
    if !status.success() {
        bail!("exec storm failed: {status}");
    }
    let mut sample = Sample { wall, ..Sample::default() };
    if let Some(a) = agent.as_mut() {
        sample.cpu = wait_idle(a.id()) - cpu_before;
        stop_agent(a)?;
        sample.cache = cache_counters(&log)?;
        if sample.cache.is_none() {
            bail!("no cache_hits/cache_misses in the permission group's log ({})", log.display());
        }
        let _ = fs::remove_file(&out);
    }
    Ok(sample)
}

/// Waits until the agent has worked off what the storm left (its CPU time stops growing: at most one clock tick in
/// 300 ms, at most 60 s) and returns its CPU seconds then.
fn wait_idle(pid: u32) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = cpu_seconds(pid);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = cpu_seconds(pid);
        if now - last <= 0.011 || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// Counts file events under `storm_dir` by activity, and the drops.
fn count_file_events(out: &Path, storm_dir: &Path, storm_pid: u32, sample: &mut Sample) -> Result<()> {
    let prefix = format!("{}/", storm_dir.display());
    for line in BufReader::new(fs::File::open(out)?).lines() {
        let line = line?;
        // Cheap filter first: a storm writes hundreds of thousands of lines.
        if !line.contains(&prefix) && !line.contains("\"drop\"") {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)?;
        let activity = v["activity"].as_str().unwrap_or("");
        if activity == "drop" {
            let n = v["sensor"]["count"].as_u64().unwrap_or(0);
            let rate = v["sensor"]["message"].as_str().is_some_and(|m| m.starts_with("rate limit"));
            if rate {
                if v["process"]["pid"].as_u64() == Some(u64::from(storm_pid)) {
                    sample.rate_limited += n;
                }
            } else {
                sample.lost += n;
            }
        } else if v["domain"].as_str() == Some("file")
            && v["file"]["path"].as_str().is_some_and(|p| p.starts_with(&prefix))
        {
            *sample.seen.entry(activity.to_owned()).or_default() += 1;
        }
    }
    Ok(())
}

/// `(cache_hits, cache_misses)` from the permission group's `stopped` log line.
fn cache_counters(log: &Path) -> Result<Option<(u64, u64)>> {
    let text = fs::read_to_string(log)?;
    let plain = strip_ansi(&text);
    let Some(line) = plain.lines().find(|l| l.contains("file/fanotify/permission") && l.contains("stopped")) else {
        return Ok(None);
    };
    let field = |name: &str| {
        line.split_whitespace().find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('='))?.parse().ok())
    };
    Ok(field("cache_hits").zip(field("cache_misses")))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The filesystem type of `dir`, by its magic number.
fn fs_type(dir: &Path) -> String {
    let Ok(st) = nix::sys::statfs::statfs(dir) else { return "?".into() };
    #[allow(clippy::unnecessary_cast)] // the type of f_type differs between targets
    let magic = st.filesystem_type().0 as i64;
    match magic {
        0xEF53 => "ext4".into(),
        0x0102_1994 => "tmpfs".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlayfs".into(),
        m => format!("fs magic {m:#x}"),
    }
}
