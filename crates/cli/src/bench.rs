//! `ringwatch bench process`: the exec-storm benchmark of issue #3, every configuration in one run.
//!
//! An exec storm is `sh` forking and exec'ing `/bin/true` N times. It runs with no sensor, then with the agent in
//! each process backend (kernel eBPF, proc connector, preload hook), round-robin for several rounds so the noisy
//! machine affects all configurations alike; medians are compared with the no-sensor median of the same run.
//! Reported per configuration: wall time, ratio to no sensor, agent CPU seconds per 1,000 execs (CPU the agent
//! used between the start of the storm and half a second after its end), exec events seen for the storm, and drops
//! (the agent's own `sensor`/`drop` counts).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::require_root;

/// Options of `ringwatch bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    pub what: BenchKind,
    /// Seconds of typing (keystroke: 60).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Execs per storm (process).
    #[arg(long, default_value_t = 5000)]
    pub execs: u32,
    /// Events to ingest or forward (store: 1,000,000; forward: 200,000).
    #[arg(long)]
    pub events: Option<u64>,
    /// Rounds (each round runs every configuration once); medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Files per storm (file: 200,000 create/write/close/unlink cycles).
    #[arg(long)]
    pub files: Option<u64>,
    /// Directory the file storm runs in (file: default /var/tmp; e.g. /dev/shm for tmpfs).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// TCP connects per connect storm (network: 5,000).
    #[arg(long)]
    pub connects: Option<u32>,
    /// MiB carried by the bulk transfer (network: 1,024).
    #[arg(long)]
    pub bulk_mib: Option<u64>,
}

/// Benchmarks available.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum BenchKind {
    /// Exec storm: no sensor vs each process backend.
    Process,
    /// Store ingest rate and a hunt query over the stored events.
    Store,
    /// Forwarder throughput to a local nats-server (started by the bench).
    Forward,
    /// File storm: no sensor vs kernel monitor, permission rules and user mode; exec-storm hash-cache hit rate.
    File,
    /// Connect storm and bulk transfer over loopback: no sensor vs kernel monitor, redirect via the proxy, user mode.
    Network,
    /// Typing into a pty-driven shell and `cat` of 100 MB to a pty: no sensor vs the kernel backend and the pty
    /// recorder.
    Keystroke,
}

/// One configuration's medians.
#[derive(Debug, Serialize)]
struct Row {
    config: &'static str,
    wall_s: f64,
    ratio: f64,
    agent_cpu_s_per_1000_execs: f64,
    exec_events: u64,
    with_argv: u64,
    expected: u32,
    drops: u64,
}

/// A configuration: `None` is the no-sensor baseline, otherwise the `--mode` value for the agent.
const CONFIGS: [(&str, Option<&str>); 4] = [
    ("no sensor", None),
    ("kernel (ebpf)", Some("process=ebpf")),
    ("user (proc_connector)", Some("process=proc_connector")),
    ("user (preload)", Some("process=preload")),
];

/// Runs the benchmark and prints a table (and JSON if asked).
pub fn run(args: BenchArgs) -> Result<()> {
    require_root("ringwatch bench")?;
    match args.what {
        BenchKind::Process => {}
        BenchKind::Store => return crate::bench_store::run(&args),
        BenchKind::Forward => return crate::bench_forward::run(&args),
        BenchKind::File => return crate::bench_file::run(&args),
        BenchKind::Network => return crate::bench_network::run(&args),
        BenchKind::Keystroke => return crate::bench_keystroke::run(&args),
    }
    let dir = std::env::temp_dir().join(format!("ringwatch-bench-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let hook = ringwatch_domains::preload::hook_library_path();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); CONFIGS.len()];
    for round in 0..args.rounds {
        for (i, (name, mode)) in CONFIGS.iter().enumerate() {
            if *name == "user (preload)" && hook.is_none() {
                continue;
            }
            let s = one_storm(&dir, round, *mode, hook.as_deref(), args.execs)
                .with_context(|| format!("round {round}, {name}"))?;
            eprintln!(
                "round {round} {name:<22} {:.3}s  cpu {:.3}s  events {} (with argv {})  drops {}",
                s.wall, s.cpu, s.events, s.with_argv, s.drops
            );
            samples[i].push(s);
        }
    }
    let base = median(samples[0].iter().map(|s| s.wall).collect());
    let rows: Vec<Row> = CONFIGS
        .iter()
        .zip(&samples)
        .filter(|(_, s)| !s.is_empty())
        .map(|((name, _), s)| {
            let wall = median(s.iter().map(|x| x.wall).collect());
            Row {
                config: name,
                wall_s: wall,
                ratio: wall / base,
                agent_cpu_s_per_1000_execs: median(s.iter().map(|x| x.cpu).collect()) * 1000.0 / f64::from(args.execs),
                exec_events: s.iter().map(|x| x.events).min().unwrap_or(0),
                with_argv: s.iter().map(|x| x.with_argv).min().unwrap_or(0),
                expected: args.execs,
                drops: s.iter().map(|x| x.drops).max().unwrap_or(0),
            }
        })
        .collect();
    println!(
        "exec storm: {} x fork+exec /bin/true, median of {} rounds, kernel {}",
        args.execs,
        args.rounds,
        kernel_release()
    );
    println!(
        "| configuration | wall s | ratio | agent CPU s / 1000 execs | exec events (min) | with exe+argv (min) | drops (max) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.3} | {:.3}x | {:.4} | {}/{} | {}/{} | {} |",
            r.config,
            r.wall_s,
            r.ratio,
            r.agent_cpu_s_per_1000_execs,
            r.exec_events,
            r.expected,
            r.with_argv,
            r.expected,
            r.drops
        );
    }
    if let Some(path) = &args.json {
        fs::write(path, serde_json::to_vec_pretty(&rows)?)?;
    }
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

/// What one storm measured.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    /// Wall seconds of the storm.
    wall: f64,
    /// Agent CPU seconds from the storm's start to half a second after its end.
    cpu: f64,
    /// Exec events whose parent is the storm shell.
    events: u64,
    /// Of those, the ones naming the program and its argv (the proc connector loses them for some processes).
    with_argv: u64,
    /// Events the agent reported dropped or lost.
    drops: u64,
}

/// One storm with the agent in `mode` (or none).
fn one_storm(dir: &Path, round: u32, mode: Option<&str>, hook: Option<&Path>, execs: u32) -> Result<Sample> {
    let out = dir.join(format!("events-{round}-{}.jsonl", mode.unwrap_or("none").replace('=', "-")));
    let socket = dir.join("hook.sock");
    let mut agent = match mode {
        Some(m) => Some(start_agent(m, &out, &socket)?),
        None => None,
    };
    let script = format!("i=0; while [ $i -lt {execs} ]; do /bin/true; i=$((i+1)); done");
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(script);
    if mode == Some("process=preload")
        && let Some(lib) = hook
    {
        cmd.env("LD_PRELOAD", lib).env("RINGWATCH_HOOK_SOCKET", &socket);
    }
    let cpu_before = agent.as_ref().map(|a| cpu_seconds(a.id())).unwrap_or(0.0);
    let t0 = Instant::now();
    let mut shell = cmd.spawn().context("starting the storm shell")?;
    let shell_pid = shell.id();
    let status = shell.wait()?;
    let wall = t0.elapsed().as_secs_f64();
    if !status.success() {
        bail!("storm shell failed: {status}");
    }
    let mut sample = Sample { wall, ..Sample::default() };
    if let Some(a) = agent.as_mut() {
        std::thread::sleep(Duration::from_millis(500));
        sample.cpu = cpu_seconds(a.id()) - cpu_before;
        stop_agent(a)?;
        count_storm_events(&out, shell_pid, &mut sample)?;
    }
    Ok(sample)
}

fn start_agent(mode: &str, out: &Path, socket: &Path) -> Result<Child> {
    start_agent_with(mode, out, socket, &[], Stdio::null())
}

/// Starts `ringwatch run --store off --mode all=off,MODE --out OUT --hook-socket SOCKET EXTRA...` with its log
/// going to `stderr`, and waits for its `start` event.
pub(crate) fn start_agent_with(
    mode: &str,
    out: &Path,
    socket: &Path,
    extra: &[std::ffi::OsString],
    stderr: Stdio,
) -> Result<Child> {
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .args(["run", "--store", "off", "--mode", &format!("all=off,{mode}"), "--out"])
        .arg(out)
        .arg("--hook-socket")
        .arg(socket)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context("starting the agent")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut child = child;
    while Instant::now() < deadline {
        if fs::read_to_string(out).is_ok_and(|s| s.contains("\"activity\":\"start\"")) {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            bail!("the agent (--mode {mode}) exited with {status} before reporting start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the agent (--mode {mode}) did not report start within 30 s")
}

pub(crate) fn stop_agent(agent: &mut Child) -> Result<()> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(agent.id())?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    let status = agent.wait()?;
    if !status.success() {
        bail!("the agent exited with {status}");
    }
    Ok(())
}

/// utime + stime of a live process, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let ticks = ringwatch_core::proc_table::read_stat(pid).map_or(0, |st| st.cpu_ticks);
    ticks as f64 / ringwatch_core::guid::USER_HZ as f64
}

/// Counts the storm's exec events (parent = the storm shell) and the drops in an agent's output.
fn count_storm_events(out: &Path, shell_pid: u32, sample: &mut Sample) -> Result<()> {
    for line in BufReader::new(fs::File::open(out)?).lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        let activity = v["activity"].as_str().unwrap_or("");
        if activity == "exec" && v["process"]["ppid"].as_u64() == Some(u64::from(shell_pid)) {
            sample.events += 1;
            let exe_ok = v["process"]["exe"].as_str().is_some_and(|e| e.ends_with("/true"));
            let argv_ok = v["process"]["cmdline"][0].as_str().is_some_and(|a| a.ends_with("/true"));
            sample.with_argv += u64::from(exe_ok && argv_ok);
        } else if activity == "drop" {
            sample.drops += v["sensor"]["count"].as_u64().unwrap_or(0);
        }
    }
    Ok(())
}

/// The running kernel's release, for a benchmark's header line (empty when unreadable).
pub(crate) fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned()
}

/// Writes `source` to `work/<name>.c` and compiles it with `cc -O2` into `work/<name>`: a benchmark's load program.
pub(crate) fn compile_c(work: &Path, name: &str, source: &str) -> Result<PathBuf> {
    let src = work.join(format!("{name}.c"));
    let prog = work.join(name);
    fs::write(&src, source)?;
    let out = Command::new("cc").args(["-O2", "-o"]).arg(&prog).arg(&src).output().context("running cc")?;
    if !out.status.success() {
        bail!("cc failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(prog)
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
