//! The proc connector backend against the real kernel: runs workloads while the source streams into a pipeline,
//! then checks what came out. Runs as root (kernels before 6.6 demand CAP_NET_ADMIN; newer ones let any user
//! subscribe); when `probe()` says the backend cannot run here, each test prints why and returns.
//!
//! The tests take a shared lock so that one test's workload does not disturb another's numbers (the partial-detail
//! ratio depends on how busy the machine is).

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ringwatch_core::{Activity, Domain, Event, Mode, Source, SourceKind, Timestamp};
use ringwatch_domains::process::proc_connector::ProcessProcConnector;

use common::{Running, Stopped};

const NAME: &str = "process/proc_connector";

static SERIAL: Mutex<()> = Mutex::new(());

/// What one capture saw.
struct Capture {
    /// Process-domain events from this backend.
    events: Vec<Event>,
    /// Pipeline queue drops for this source.
    queue_full: u64,
    /// Records the source lost before reading them (socket overruns).
    lost_upstream: u64,
    /// Records that failed to decode.
    malformed: u64,
}

impl Capture {
    fn of(&self, activity: Activity, pid: u32) -> Vec<&Event> {
        self.events.iter().filter(|e| e.activity == activity && e.process.pid == pid).collect()
    }
}

/// Runs the source while `workload` runs; `None` (after printing why) when the backend cannot run here.
fn capture<T>(workload: impl FnOnce() -> T) -> Option<(Capture, T)> {
    let probe = ProcessProcConnector::probe();
    if !probe.available {
        eprintln!("skipping: proc connector unavailable here: {}", probe.detail);
        return None;
    }
    let source = ProcessProcConnector::start().expect("probe said available, so start works");
    assert_eq!(source.name(), NAME);
    let running = Running::start(source, 1 << 17);
    let result = workload();
    let Stopped { events, losses, source_stopped_in } = running.stop();
    assert!(source_stopped_in < Duration::from_secs(2), "run returns soon after shutdown");
    let (queue_full, lost_upstream, malformed) = losses.get(NAME).copied().unwrap_or_default();
    let events: Vec<Event> = events.into_iter().filter(|e| e.domain == Domain::Process).collect();
    for e in &events {
        assert_eq!(e.backend.mode, Mode::User);
        assert_eq!(e.backend.source, SourceKind::ProcConnector);
        assert!(e.trusted, "kernel-reported facts are trusted");
    }
    Some((Capture { events, queue_full, lost_upstream, malformed }, result))
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 * 100.0 / whole as f64 }
}

#[test]
fn probe_reports_available_as_root_or_says_why_not() {
    let probe = ProcessProcConnector::probe();
    assert_eq!((probe.domain, probe.mode, probe.source), (Domain::Process, Mode::User, SourceKind::ProcConnector));
    assert!(!probe.detail.is_empty(), "a probe always says what it uses or why not");
    if nix::unistd::geteuid().is_root() && !probe.available {
        eprintln!("root but unavailable (kernel without CONFIG_PROC_EVENTS?): {}", probe.detail);
    }
    eprintln!("probe: {probe}");
}

/// Run by `probe_as_an_unprivileged_user_agrees_with_start` as user `nobody`; prints one `RESULT` line.
#[test]
#[ignore = "helper: run as an unprivileged child by probe_as_an_unprivileged_user_agrees_with_start"]
fn unprivileged_child_probe_and_start() {
    let probe = ProcessProcConnector::probe();
    let start = ProcessProcConnector::start();
    let (start_ok, missing_cap, error) = match &start {
        Ok(_) => (true, false, String::new()),
        Err(e) => (false, e.is_missing_capability(), e.to_string()),
    };
    println!("RESULT\t{}\t{start_ok}\t{missing_cap}\t{}\t{error}", probe.available, probe.detail);
}

/// Kernels before 6.6 demand CAP_NET_ADMIN to subscribe; newer ones let any user listen. Whichever this kernel
/// does, probe and start must agree, and a refusal must name the missing privilege.
#[test]
fn probe_as_an_unprivileged_user_agrees_with_start() {
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root to run a child as nobody");
        return;
    }
    let exe = std::env::current_exe().expect("own test binary");
    let out = Command::new(exe)
        .args(["--exact", "unprivileged_child_probe_and_start", "--ignored", "--nocapture", "--test-threads=1"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run the helper as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().find_map(|l| l.split_once("RESULT\t").map(|(_, r)| r)) else {
        eprintln!("skipping: the helper could not run as nobody: {stdout} {}", String::from_utf8_lossy(&out.stderr));
        return;
    };
    let f: Vec<&str> = line.split('\t').collect();
    let (available, start_ok, missing_cap) = (f[0] == "true", f[1] == "true", f[2] == "true");
    eprintln!("as nobody: probe available={available} ({}); start ok={start_ok} {}", f[3], f[4]);
    assert_eq!(available, start_ok, "probe and start agree");
    if !available {
        assert!(f[3].contains("CAP_NET_ADMIN") || f[3].contains("namespace"), "says why: {}", f[3]);
        assert!(missing_cap, "start reports a missing capability: {}", f[4]);
    }
}

#[test]
fn exec_of_short_lived_echo_is_seen_and_details_are_correct_or_marked_partial() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const RUNS: usize = 200;
    let tag = format!("rw-pc-{}", std::process::id());
    let Some((cap, children)) = capture(|| {
        (0..RUNS)
            .map(|i| {
                let token = format!("{tag}-{i}");
                let mut child =
                    Command::new("/bin/echo").arg(&token).stdout(Stdio::null()).spawn().expect("spawn /bin/echo");
                let pid = child.id();
                assert!(child.wait().expect("wait echo").success());
                (pid, token)
            })
            .collect::<Vec<_>>()
    }) else {
        return;
    };
    let mut partial = 0;
    for (pid, token) in &children {
        let execs = cap.of(Activity::Exec, *pid);
        assert_eq!(execs.len(), 1, "the proc connector saw exactly one exec of echo pid {pid}");
        let p = &execs[0].process;
        if p.partial {
            partial += 1;
            continue;
        }
        assert!(p.exe.ends_with("/echo"), "exe of pid {pid}: {}", p.exe);
        assert_eq!(p.cmdline, vec!["/bin/echo".to_owned(), token.clone()], "cmdline of pid {pid}");
        assert_eq!(p.ppid, std::process::id());
        assert!(!p.guid.is_empty() && p.start_ticks > 0, "guid from /proc start time");
        assert!(p.cwd.is_some());
    }
    eprintln!(
        "echo: {} of {} execs seen; details missing (partial) for {partial} ({:.1} %); lost {}, queue full {}, \
         malformed {}",
        children.len(),
        RUNS,
        ratio(partial, RUNS),
        cap.lost_upstream,
        cap.queue_full,
        cap.malformed
    );
    assert_eq!(cap.malformed, 0);
}

#[test]
fn sh_exit_7_reports_fork_with_parent_and_exit_code_7() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((cap, (pid, before, after))) = capture(|| {
        let before = Timestamp::now();
        let mut child = Command::new("/bin/sh").args(["-c", "exit 7"]).spawn().expect("spawn sh");
        let pid = child.id();
        assert_eq!(child.wait().expect("wait sh").code(), Some(7));
        (pid, before, Timestamp::now())
    }) else {
        return;
    };
    let forks = cap.of(Activity::Fork, pid);
    assert_eq!(forks.len(), 1, "one fork event for pid {pid}");
    assert_eq!(forks[0].process.ppid, std::process::id(), "parent is the test process");
    let exits = cap.of(Activity::Exit, pid);
    assert_eq!(exits.len(), 1, "one exit event for pid {pid}");
    assert_eq!(exits[0].process.exit_code, Some(7));
    assert_eq!(exits[0].process.exit_signal, None);
    assert_eq!(exits[0].process.ppid, std::process::id());
    // The kernel's CLOCK_MONOTONIC stamps, converted to wall clock, fall inside the workload's wall-clock window.
    let slack = 5_000_000;
    for e in [forks[0], exits[0]] {
        assert!(
            e.time.0 + slack >= before.0 && e.time.0 <= after.0 + slack,
            "{} at {} outside [{}, {}]",
            e.activity,
            e.time.to_rfc3339(),
            before.to_rfc3339(),
            after.to_rfc3339()
        );
    }
    assert!(forks[0].time <= exits[0].time);
}

#[test]
fn child_killed_by_sigterm_reports_exit_signal_15() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((cap, pid)) = capture(|| {
        let mut child = Command::new("/bin/sleep").arg("30").spawn().expect("spawn sleep");
        let pid = child.id();
        thread::sleep(Duration::from_millis(200));
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("send SIGTERM");
        let status = child.wait().expect("wait sleep");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(15));
        pid
    }) else {
        return;
    };
    let execs = cap.of(Activity::Exec, pid);
    assert_eq!(execs.len(), 1);
    assert!(!execs[0].process.partial, "a process alive for 200 ms has its details read");
    assert!(execs[0].process.exe.ends_with("/sleep"), "exe: {}", execs[0].process.exe);
    let exits = cap.of(Activity::Exit, pid);
    assert_eq!(exits.len(), 1, "one exit event for pid {pid}");
    assert_eq!(exits[0].process.exit_signal, Some(15));
    assert_eq!(exits[0].process.exit_code, None, "a killed process has no exit code");
}

#[test]
fn storm_of_5000_short_execs_is_seen_or_the_loss_is_counted() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const RUNS: usize = 5000;
    let script = format!("i=0; while [ \"$i\" -lt {RUNS} ]; do /bin/true; i=$((i+1)); done");
    let started = Instant::now();
    let Some((cap, shell)) = capture(|| {
        let mut child = Command::new("/bin/sh").args(["-c", &script]).spawn().expect("spawn sh");
        let pid = child.id();
        assert!(child.wait().expect("wait sh").success());
        pid
    }) else {
        return;
    };
    let elapsed = started.elapsed();
    let mut exec_pids: HashMap<u32, bool> = HashMap::new();
    let mut fork_pids = HashSet::new();
    let mut exit_pids = HashSet::new();
    let mut stale_exe = 0;
    for e in &cap.events {
        if e.process.ppid != shell {
            continue;
        }
        match e.activity {
            Activity::Exec => {
                assert!(e.process.partial || e.process.exe.ends_with("/true"), "shell child exe: {}", e.process.exe);
                exec_pids.insert(e.process.pid, e.process.partial);
                if e.process.partial && !e.process.exe.is_empty() && !e.process.exe.ends_with("/true") {
                    // The process table filled a partial exec with its pre-exec (fork-time) image.
                    stale_exe += 1;
                }
            }
            Activity::Fork => {
                fork_pids.insert(e.process.pid);
            }
            Activity::Exit if e.process.exit_code == Some(0) => {
                exit_pids.insert(e.process.pid);
            }
            _ => {}
        }
    }
    let seen = exec_pids.len();
    let partial = exec_pids.values().filter(|p| **p).count();
    let lost = cap.lost_upstream + cap.queue_full;
    eprintln!(
        "storm: {RUNS} execs of /bin/true in {:.1} s; exec events seen {seen} ({:.2} %), forks {}, exits {}; \
         partial details {partial} ({:.1} % of seen; {stale_exe} of them given the pre-exec exe by the process \
         table); lost upstream {}, queue full {}, malformed {}",
        elapsed.as_secs_f64(),
        ratio(seen, RUNS),
        fork_pids.len(),
        exit_pids.len(),
        ratio(partial, seen),
        cap.lost_upstream,
        cap.queue_full,
        cap.malformed
    );
    assert!(seen <= RUNS, "no exec is invented");
    assert!(
        seen * 100 >= RUNS * 99 || seen as u64 + lost >= RUNS as u64,
        "{seen} of {RUNS} execs seen and only {lost} counted as lost: events vanished silently"
    );
    assert_eq!(cap.malformed, 0);
}
