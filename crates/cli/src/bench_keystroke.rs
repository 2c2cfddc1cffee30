//! `ringwatch bench keystroke`: the keystroke benchmark of issue #6, every configuration in one run.
//!
//! Two workloads, each on a pty the bench owns (the same [`PtyChild`] the tests drive shells with):
//!
//! - **typing**: an interactive `bash --norc --noprofile -i` typed into at 100 characters per second for
//!   `--seconds` (default 60), one `echo typed-line-N` per line. Reported: lines typed, input events carrying the
//!   exact line, the recorder's CPU, drops. Target: every line captured, 0 drops.
//! - **cat**: `cat` of a 100 MB file to the pty, drained as fast as the pty allows (terminal *output*: it must not
//!   be captured, and must not slow down). Reported: wall time and its ratio to no sensor (median of `--rounds`,
//!   round-robin, and best of them: on a busy machine the best is the least disturbed run), the workload's own
//!   CPU (cat, the pty reader, the pty relay if any) and its ratio, input events seen on that pty during the cat
//!   (must be 0), recorder CPU. Target: <= 1.02x.
//!
//! Configurations: no sensor; the kernel backend (`ringwatch run --mode all=off,keystroke=ebpf` with a policy that
//! enables keystrokes); the pty recorder (`ringwatch session -- CMD` on the bench's pty, itself running CMD on its
//! own pty); the X11 backend (`ringwatch run --mode all=off,keystroke=x11` on a private Xvfb, typed into with
//! xdotool, see [`crate::bench_keystroke_x11`]; left out, saying why, when Xvfb/xterm/xdotool are missing). The
//! recorder's CPU is the agent's (kernel, X11) or the session process's (pty).
//!
//! Extension point: a backend that is not driven through a terminal (X11: xdotool typing into an xterm on Xvfb)
//! adds its own workload function next to [`typing`] and a row to [`CONFIGS`] whose [`Recorder`] names how it is
//! started; the table and JSON rows are shared.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ringwatch_domains::keystroke::pty::PtyChild;
use serde::Serialize;

use crate::bench::{BenchArgs, cpu_seconds, median, start_agent_with, stop_agent};
use crate::bench_keystroke_x11::{X11Session, XTERM_TITLE};

/// Typing speed of the typing workload.
const CHARS_PER_SECOND: u64 = 100;
/// Size of the file the cat workload writes to the terminal.
const CAT_BYTES: u64 = 100 * 1024 * 1024;
/// Output the pty drain keeps for prompt checks.
const TAIL_BYTES: usize = 4096;

/// How a configuration records keystrokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorder {
    /// Nothing: the baseline.
    None,
    /// `ringwatch run` with these `--mode` choices (and a policy enabling keystrokes).
    Agent(&'static str),
    /// `ringwatch session --out FILE -- CMD` wrapping the workload's command.
    Session,
    /// `ringwatch run --mode keystroke=x11` on the bench's X display; typing goes to an xterm there via xdotool.
    X11,
}

/// Every configuration, baseline first.
const CONFIGS: [(&str, Recorder); 4] = [
    ("no sensor", Recorder::None),
    ("kernel (ebpf)", Recorder::Agent("keystroke=ebpf")),
    ("user (pty recorder)", Recorder::Session),
    ("user (x11)", Recorder::X11),
];

/// One configuration's results.
#[derive(Debug, Serialize)]
struct Row {
    config: &'static str,
    cat_wall_s: f64,
    cat_ratio: f64,
    cat_best_ratio: f64,
    cat_workload_cpu_s: f64,
    cat_cpu_ratio: f64,
    cat_input_events: u64,
    cat_recorder_cpu_s: f64,
    typed_lines: u64,
    captured_lines: u64,
    typing_recorder_cpu_s: f64,
    typing_cpu_percent: f64,
    drops: u64,
}

/// Runs the benchmark and prints a table (and JSON if asked).
pub fn run(args: &BenchArgs) -> Result<()> {
    let seconds = args.seconds.unwrap_or(60);
    let dir = std::env::temp_dir().join(format!("ringwatch-bench-keystroke-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let result = run_in(&dir, args, seconds);
    let _ = fs::remove_dir_all(&dir);
    result
}

fn run_in(dir: &Path, args: &BenchArgs, seconds: u64) -> Result<()> {
    // `ringwatch session` runs from a private copy: a rebuild replacing the binary mid-run must not break the bench.
    let exe = dir.join("ringwatch");
    fs::copy(std::env::current_exe()?, &exe).context("copying the ringwatch binary for `ringwatch session`")?;
    let policy = dir.join("keystrokes.yaml");
    fs::write(&policy, "keystrokes:\n  enabled: true\n")?;
    let big = dir.join("big.txt");
    write_big_file(&big)?;
    // The X11 row needs a private X display; without Xvfb/xterm/xdotool it is left out, saying why.
    let x11 = X11Session::start().map_err(|e| eprintln!("user (x11): not measured: {e:#}")).ok();
    let configs: Vec<(&str, Recorder)> =
        CONFIGS.iter().copied().filter(|(_, r)| *r != Recorder::X11 || x11.is_some()).collect();

    let mut cats: Vec<Vec<CatSample>> = vec![Vec::new(); configs.len()];
    for round in 0..args.rounds {
        for (i, (name, recorder)) in configs.iter().enumerate() {
            let s = cat(dir, &policy, *recorder, &big, round, x11.as_ref())
                .with_context(|| format!("cat, round {round}, {name}"))?;
            eprintln!(
                "cat    round {round} {name:<20} {:.3}s  workload cpu {:.3}s  recorder cpu {:.3}s  input events {}  drops {}",
                s.wall, s.workload_cpu, s.cpu, s.input_events, s.drops
            );
            cats[i].push(s);
        }
    }
    let mut typings = Vec::with_capacity(configs.len());
    for &(name, recorder) in &configs {
        let s = typing(dir, &policy, recorder, seconds, x11.as_ref()).with_context(|| format!("typing, {name}"))?;
        eprintln!(
            "typing {name:<20} {} lines typed, {} captured, cpu {:.3}s, drops {}",
            s.typed, s.captured, s.cpu, s.drops
        );
        typings.push(s);
    }

    let base = median(cats[0].iter().map(|s| s.wall).collect());
    let base_cpu = median(cats[0].iter().map(|s| s.workload_cpu).collect());
    let best = |c: &[CatSample]| c.iter().map(|s| s.wall).fold(f64::INFINITY, f64::min);
    let base_best = best(&cats[0]);
    let rows: Vec<Row> = configs
        .iter()
        .zip(cats.iter().zip(&typings))
        .map(|((name, _), (c, t))| {
            let wall = median(c.iter().map(|s| s.wall).collect());
            let workload_cpu = median(c.iter().map(|s| s.workload_cpu).collect());
            Row {
                config: name,
                cat_wall_s: wall,
                cat_ratio: wall / base,
                cat_best_ratio: best(c) / base_best,
                cat_workload_cpu_s: workload_cpu,
                cat_cpu_ratio: workload_cpu / base_cpu,
                cat_input_events: c.iter().map(|s| s.input_events).max().unwrap_or(0),
                cat_recorder_cpu_s: median(c.iter().map(|s| s.cpu).collect()),
                typed_lines: t.typed,
                captured_lines: t.captured,
                typing_recorder_cpu_s: t.cpu,
                typing_cpu_percent: 100.0 * t.cpu / t.wall.max(f64::EPSILON),
                drops: c.iter().map(|s| s.drops).max().unwrap_or(0) + t.drops,
            }
        })
        .collect();
    println!(
        "keystrokes: cat of {} MB to a pty (median of {} rounds) and typing at {CHARS_PER_SECOND} chars/s for {seconds} s, \
         kernel {}",
        CAT_BYTES / (1024 * 1024),
        args.rounds,
        fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
    );
    println!(
        "| configuration | cat wall s | cat ratio | cat ratio (best of N) | cat CPU s | cat CPU ratio | input events during cat | \
         recorder CPU s (cat) | lines typed | lines captured | recorder CPU s (typing) | CPU % (typing) | drops |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let captured = if r.config == "no sensor" { "-".to_owned() } else { r.captured_lines.to_string() };
        println!(
            "| {} | {:.3} | {:.3}x | {:.3}x | {:.3} | {:.3}x | {} | {:.3} | {} | {} | {:.3} | {:.2} | {} |",
            r.config,
            r.cat_wall_s,
            r.cat_ratio,
            r.cat_best_ratio,
            r.cat_workload_cpu_s,
            r.cat_cpu_ratio,
            r.cat_input_events,
            r.cat_recorder_cpu_s,
            r.typed_lines,
            captured,
            r.typing_recorder_cpu_s,
            r.typing_cpu_percent,
            r.drops
        );
    }
    if let Some(path) = &args.json {
        fs::write(path, serde_json::to_vec_pretty(&rows)?)?;
    }
    Ok(())
}

/// 100 MB of printable lines.
fn write_big_file(path: &Path) -> Result<()> {
    let line = b"the quick brown fox jumps over the lazy dog 0123456789 terminal output, not input\n";
    let mut f = std::io::BufWriter::new(fs::File::create(path)?);
    let mut written = 0u64;
    while written < CAT_BYTES {
        f.write_all(line)?;
        written += line.len() as u64;
    }
    f.flush()?;
    Ok(())
}

/// What one cat measured.
#[derive(Debug, Clone, Copy, Default)]
struct CatSample {
    wall: f64,
    /// CPU of the workload itself: cat, the pty reader and (pty recorder) the relay between them.
    workload_cpu: f64,
    cpu: f64,
    input_events: u64,
    drops: u64,
}

/// What the typing run measured.
#[derive(Debug, Clone, Copy, Default)]
struct TypingSample {
    wall: f64,
    cpu: f64,
    typed: u64,
    captured: u64,
    drops: u64,
}

/// A recorder running around one workload: the agent, or nothing (the session recorder is the pty's command).
struct Running {
    agent: Option<Child>,
    out: PathBuf,
}

impl Running {
    fn start(dir: &Path, policy: &Path, recorder: Recorder, label: &str, x11: Option<&X11Session>) -> Result<Running> {
        let out = dir.join(format!("events-{label}.jsonl"));
        let _ = fs::remove_file(&out);
        let agent = match recorder {
            Recorder::Agent(mode) => {
                let extra = ["--policy".into(), policy.as_os_str().to_owned()];
                Some(start_agent_with(mode, &out, &dir.join("hook.sock"), &extra, Stdio::null())?)
            }
            Recorder::X11 => {
                let session = x11.context("the x11 configuration needs the bench's X display")?;
                let mut extra = vec!["--policy".into(), policy.as_os_str().to_owned()];
                extra.extend(session.agent_args());
                Some(start_agent_with("keystroke=x11", &out, &dir.join("hook.sock"), &extra, Stdio::null())?)
            }
            Recorder::None | Recorder::Session => None,
        };
        Ok(Running { agent, out })
    }

    /// The command the workload runs on its pty: `argv` itself, or wrapped in `ringwatch session`.
    fn command(&self, recorder: Recorder, argv: &[&str]) -> Result<Command> {
        if recorder == Recorder::Session {
            let mut cmd = Command::new(self.out.with_file_name("ringwatch"));
            cmd.args(["session", "--out"]).arg(&self.out).arg("--").args(argv);
            Ok(cmd)
        } else {
            let mut cmd = Command::new(argv[0]);
            cmd.args(&argv[1..]);
            Ok(cmd)
        }
    }

    /// Stops the agent and counts events in the output: (input events matching `pred`, drops).
    fn finish(mut self, pred: impl Fn(&serde_json::Value) -> bool) -> Result<(u64, u64)> {
        if let Some(agent) = self.agent.as_mut() {
            stop_agent(agent)?;
        }
        let Ok(file) = fs::File::open(&self.out) else { return Ok((0, 0)) };
        let (mut matched, mut drops) = (0, 0);
        for line in BufReader::new(file).lines() {
            let v: serde_json::Value = serde_json::from_str(&line?)?;
            match v["activity"].as_str() {
                Some("input") if pred(&v) => matched += 1,
                Some("drop") => drops += v["sensor"]["count"].as_u64().unwrap_or(0),
                _ => {}
            }
        }
        Ok((matched, drops))
    }

    fn agent_cpu(&self) -> f64 {
        self.agent.as_ref().map(|a| cpu_seconds(a.id())).unwrap_or(0.0)
    }
}

/// The pty's output, drained on a thread as fast as it comes; counts bytes and keeps a tail for prompts.
struct Drain {
    bytes: Arc<AtomicU64>,
    tail: Arc<std::sync::Mutex<Vec<u8>>>,
    /// Returns the reader thread's own CPU seconds.
    thread: thread::JoinHandle<f64>,
}

impl Drain {
    fn start(pty: &PtyChild) -> Result<Drain> {
        let mut master = pty.master.try_clone()?;
        let bytes = Arc::new(AtomicU64::new(0));
        let tail = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (b, t) = (bytes.clone(), tail.clone());
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                b.fetch_add(n as u64, Ordering::Relaxed);
                // Only the last few KiB are kept (prompts and the last echoed line), cheaply.
                let mut tail = t.lock().unwrap_or_else(|e| e.into_inner());
                let keep = &buf[n.saturating_sub(TAIL_BYTES)..n];
                let excess = (tail.len() + keep.len()).saturating_sub(TAIL_BYTES).min(tail.len());
                tail.drain(..excess);
                tail.extend_from_slice(keep);
            }
            thread_cpu()
        });
        Ok(Drain { bytes, tail, thread })
    }

    fn wait_for(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if String::from_utf8_lossy(&self.tail.lock().unwrap_or_else(|e| e.into_inner())).contains(needle) {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(10));
        }
        bail!("the pty never showed {needle:?}")
    }
}

/// `cat BIG` on a fresh pty with `recorder` around it.
fn cat(
    dir: &Path,
    policy: &Path,
    recorder: Recorder,
    big: &Path,
    round: u32,
    x11: Option<&X11Session>,
) -> Result<CatSample> {
    let label = format!("cat-{round}-{recorder:?}").replace(['(', ')', '"', '='], "");
    let running = Running::start(dir, policy, recorder, &label, x11)?;
    let big_str = big.to_string_lossy().into_owned();
    let mut cmd = running.command(recorder, &["cat", &big_str])?;
    let cpu_before = running.agent_cpu();
    let children_before = children_cpu();
    let t0 = Instant::now();
    let mut pty = PtyChild::spawn(&mut cmd, None).context("starting cat on a pty")?;
    let recorder_pid = pty.child.id();
    let tty = pty.tty.clone();
    let drain = Drain::start(&pty)?;
    // The session recorder is the pty's command: sample its CPU just before it exits.
    let mut session_cpu = 0.0;
    let status = loop {
        if let Some(status) = pty.child.try_wait()? {
            break status;
        }
        if recorder == Recorder::Session {
            session_cpu = cpu_seconds(recorder_pid);
        }
        thread::sleep(Duration::from_millis(5));
    };
    drop(pty);
    let drain_cpu = drain.thread.join().unwrap_or(0.0);
    let wall = t0.elapsed().as_secs_f64();
    let workload_cpu = children_cpu() - children_before + drain_cpu;
    if !status.success() {
        bail!("cat on the pty failed: {status}");
    }
    if drain.bytes.load(Ordering::Relaxed) < CAT_BYTES {
        bail!("the pty delivered {} of {CAT_BYTES} bytes", drain.bytes.load(Ordering::Relaxed));
    }
    thread::sleep(Duration::from_millis(300));
    let cpu = if recorder == Recorder::Session { session_cpu } else { running.agent_cpu() - cpu_before };
    // The kernel backend sees every terminal on the host: count only input on the cat's own pty.
    let (input_events, drops) = running.finish(|v| {
        v["domain"] == "keystroke"
            && (!matches!(recorder, Recorder::Agent(_)) || v["keystroke"]["tty"].as_str() == Some(tty.as_str()))
    })?;
    Ok(CatSample { wall, workload_cpu, cpu, input_events, drops })
}

/// Types `echo typed-line-N` lines at [`CHARS_PER_SECOND`] into an interactive bash for `seconds`.
fn typing(
    dir: &Path,
    policy: &Path,
    recorder: Recorder,
    seconds: u64,
    x11: Option<&X11Session>,
) -> Result<TypingSample> {
    if recorder == Recorder::X11 {
        return typing_x11(dir, policy, x11, seconds);
    }
    let label = format!("typing-{recorder:?}").replace(['(', ')', '"', '='], "");
    let running = Running::start(dir, policy, recorder, &label, None)?;
    let mut cmd = running.command(recorder, &["bash", "--norc", "--noprofile", "-i"])?;
    cmd.env("PS1", "ready$ ").env("HISTFILE", "/dev/null").env("TERM", "xterm");
    let mut pty = PtyChild::spawn(&mut cmd, None).context("starting bash on a pty")?;
    let tty = pty.tty.clone();
    let recorder_pid = pty.child.id();
    let drain = Drain::start(&pty)?;
    drain.wait_for("ready$ ", Duration::from_secs(20))?;
    let cpu_before = if recorder == Recorder::Session { cpu_seconds(recorder_pid) } else { running.agent_cpu() };
    let interval = Duration::from_nanos(1_000_000_000 / CHARS_PER_SECOND);
    let t0 = Instant::now();
    let mut next = t0;
    let mut typed = 0u64;
    let mut master = &pty.master;
    while t0.elapsed() < Duration::from_secs(seconds) {
        let line = format!("echo typed-line-{typed:05}\r");
        for b in line.as_bytes() {
            next += interval;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            master.write_all(&[*b])?;
        }
        typed += 1;
    }
    let wall = t0.elapsed().as_secs_f64();
    drain.wait_for(&format!("typed-line-{:05}\r\n", typed.saturating_sub(1)), Duration::from_secs(10))?;
    // Give the recorder its idle/poll interval to pass the last line on.
    thread::sleep(Duration::from_millis(500));
    let cpu_after = if recorder == Recorder::Session { cpu_seconds(recorder_pid) } else { running.agent_cpu() };
    master.write_all(b"exit\r")?;
    let _ = pty.child.wait();
    drop(pty);
    let _ = drain.thread.join();
    // Kernel: lines on the bench's pty. Session: the recorder names its own inner pty; it records nothing else.
    let (captured, drops) = running.finish(|v| {
        let k = &v["keystroke"];
        let text_ok = k["text"].as_str().is_some_and(|t| t.starts_with("echo typed-line-") && t.len() == 21);
        let tty_ok = recorder == Recorder::Session || k["tty"].as_str() == Some(tty.as_str());
        text_ok && tty_ok
    })?;
    Ok(TypingSample { wall, cpu: cpu_after - cpu_before, typed, captured, drops })
}

/// Types `echo typed-line-N` lines at [`CHARS_PER_SECOND`] with xdotool into the xterm on the bench's X display for
/// `seconds`; a line counts as captured when its event has the exact text and the xterm's window title.
fn typing_x11(dir: &Path, policy: &Path, x11: Option<&X11Session>, seconds: u64) -> Result<TypingSample> {
    let session = x11.context("the x11 configuration needs the bench's X display")?;
    let running = Running::start(dir, policy, Recorder::X11, "typing-X11", x11)?;
    let cpu_before = running.agent_cpu();
    let (typed, wall) = session.type_lines(CHARS_PER_SECOND, seconds)?;
    // Give the agent its poll interval to pass the last line on.
    thread::sleep(Duration::from_millis(500));
    let cpu_after = running.agent_cpu();
    let (captured, drops) = running.finish(|v| {
        let k = &v["keystroke"];
        let text_ok = k["text"].as_str().is_some_and(|t| t.starts_with("echo typed-line-") && t.len() == 21);
        text_ok && k["window"]["title"].as_str() == Some(XTERM_TITLE)
    })?;
    Ok(TypingSample { wall, cpu: cpu_after - cpu_before, typed, captured, drops })
}

/// CPU seconds (user + system) of the waited-for children of this process so far.
fn children_cpu() -> f64 {
    rusage_seconds(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
}

/// CPU seconds (user + system) of the calling thread.
fn thread_cpu() -> f64 {
    rusage_seconds(nix::sys::resource::UsageWho::RUSAGE_THREAD)
}

fn rusage_seconds(who: nix::sys::resource::UsageWho) -> f64 {
    use nix::sys::time::TimeValLike;
    nix::sys::resource::getrusage(who)
        .map(|u| (u.user_time().num_microseconds() + u.system_time().num_microseconds()) as f64 / 1e6)
        .unwrap_or(0.0)
}
