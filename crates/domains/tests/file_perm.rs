//! The fanotify permission group against the real kernel: synchronous deny (EPERM before a byte is read), exec-time
//! SHA-256 checks with the hash cache, `exec_trust` (trusted-only), verdict deadlines, and what happens when the
//! agent dies. Runs as root; when permission events are unavailable each test prints why and returns.
//!
//! The test process is the agent (its own opens are always allowed), so every act under test runs in a child
//! process. Tests take a shared lock: each permission group sees the whole machine, and a trusted-only or hash rule
//! of one test would judge the execs of another. Rules are scoped to each test's temporary directory wherever the
//! feature allows, so other processes on the machine are not refused anything.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self};
use std::time::{Duration, Instant};

use ringwatch_core::{Action, Activity, Decider, Domain, Event, Source};
use ringwatch_domains::file::fanotify::perm::{PermCounters, PermStats};
use ringwatch_domains::file::fanotify::{FileFanotify, FileFanotifyConfig, NAME};
use ringwatch_policy::Policy;
use sha2::{Digest, Sha256};

static SERIAL: Mutex<()> = Mutex::new(());

/// Set in the child that plays the agent in the SIGKILL test: the policy file it runs.
const CHILD_POLICY_ENV: &str = "RW_FILE_PERM_CHILD_POLICY";

/// What the agent child prints once its permission group answers.
const READY: &str = "rw-permission-agent-ready";

/// Kills and reaps a child process when dropped (a failing test leaves no agent behind).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether permission events work here (probed once); prints why not.
fn available() -> bool {
    static PROBE: OnceLock<Result<String, String>> = OnceLock::new();
    match PROBE.get_or_init(FileFanotify::probe_permissions) {
        Ok(_) => true,
        Err(why) => {
            eprintln!("skipping: fanotify permission events unavailable here: {why}");
            false
        }
    }
}

/// The file source with its permission group, running into an in-memory pipeline (the shared test harness).
struct Agent {
    running: common::Running,
    /// `None` when the policy needs no verdicts (the monitor alone runs).
    stats: Option<Arc<PermStats>>,
}

impl Agent {
    fn start(policy_text: &str) -> Agent {
        Agent::start_with(policy_text, &FileFanotifyConfig::default())
    }

    fn start_with(policy_text: &str, cfg: &FileFanotifyConfig) -> Agent {
        let policy = Arc::new(Policy::from_str(policy_text, "test.yaml").unwrap_or_else(|e| panic!("{e}")));
        let plan = policy.file_permission_plan();
        let decider: Arc<dyn Decider> = policy;
        let source = FileFanotify::start_with_permissions(cfg, &plan, decider)
            .expect("permission events are available, so start works");
        let stats = source.permission_stats();
        assert_eq!(stats.is_some(), !plan.is_empty(), "a permission group runs exactly when the plan needs one");
        assert_eq!(source.name(), NAME);
        Agent { running: common::Running::start(source, 1 << 16), stats }
    }

    fn counters(&self) -> PermCounters {
        self.stats.as_ref().map(|s| s.snapshot()).unwrap_or_default()
    }

    /// Waits until an event satisfies `pred`; returns it.
    fn wait_for(&self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        self.running.wait_for(timeout, pred)
    }

    fn stop(self) -> Vec<Event> {
        let stopped = self.running.stop();
        assert!(stopped.source_stopped_in < Duration::from_secs(3), "the source stops promptly");
        stopped.events
    }
}

fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("rw-perm-{tag}-")).tempdir_in("/tmp").expect("temp dir")
}

fn canonical(p: &Path) -> String {
    fs::canonicalize(p).expect("canonical").to_str().expect("utf8").to_owned()
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).expect("write file");
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program} runs: {e}"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `cat PATH` was refused with EPERM (strerror: "Operation not permitted").
fn assert_eperm(o: &Output, what: &str) {
    assert!(!o.status.success(), "{what}: cat must fail");
    assert!(stderr(o).contains("Operation not permitted"), "{what}: EPERM expected, got {:?}", stderr(o));
}

/// `sh -c PATH`: the exit status (126 when the exec is refused).
fn sh_exec(path: &Path) -> (i32, String) {
    let o = Command::new("/bin/sh").arg("-c").arg(path).output().expect("sh runs");
    (o.status.code().unwrap_or(-1), stderr(&o))
}

/// A copy of /usr/bin/true at `path` whose last byte is xor-ed with `salt` (the section headers at the end of an
/// ELF file do not matter for running it): a runnable binary with a hash no other file on the machine has.
fn salted_true(path: &Path, salt: u8) -> String {
    let mut bytes = fs::read("/usr/bin/true").expect("read /usr/bin/true");
    if let Some(last) = bytes.last_mut() {
        *last ^= salt;
    }
    fs::write(path, &bytes).expect("write binary");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
    hex_sha256(&bytes)
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn deny_open_policy(id: &str, path_yaml: &str, extra_match: &str) -> String {
    format!(
        "rules:\n  - id: {id}\n    domain: file\n    match: {{ path: {path_yaml}, activity: open{extra_match} }}\n    \
         action: deny\n"
    )
}

#[test]
fn an_exact_path_rule_refuses_the_open_with_eperm_and_only_that_file_waits() {
    let _g = serial();
    if !available() {
        return;
    }
    let dir = temp_dir("exact");
    let protected = dir.path().join("secret");
    let sibling = dir.path().join("public");
    write(&protected, "top secret\n");
    write(&sibling, "hello\n");
    let protected_s = canonical(&protected);
    let agent = Agent::start(&deny_open_policy("protect-secret", &format!("\"{protected_s}\""), ""));
    let before = agent.counters();

    let o = run("cat", &[&protected_s]);
    assert_eperm(&o, "cat of the protected file");
    assert!(o.stdout.is_empty(), "not a byte was read");
    let o = run("cat", &[sibling.to_str().expect("utf8")]);
    assert!(o.status.success(), "the sibling opens normally: {}", stderr(&o));
    assert_eq!(o.stdout, b"hello\n");

    let ev = agent
        .wait_for(Duration::from_secs(5), |e| {
            e.action == Action::Denied && e.file.as_ref().is_some_and(|f| f.path == protected_s)
        })
        .expect("a denied event");
    assert_eq!((ev.domain, ev.activity, ev.rule.as_deref()), (Domain::File, Activity::Open, Some("protect-secret")));
    assert_eq!((ev.backend.mode.as_str(), ev.backend.source.as_str()), ("kernel", "fanotify"));
    assert!(ev.process.pid != 0 && ev.process.pid != std::process::id());
    let after = agent.counters();
    // An inode mark: only opens of that file wait; the sibling and the rest of the machine do not.
    assert_eq!(after.denied - before.denied, 1, "{after:?}");
    assert!(after.events - before.events <= 2, "only the protected file raises permission events: {after:?}");
    let events = agent.stop();
    assert!(
        !events
            .iter()
            .any(|e| e.file.as_ref().is_some_and(|f| f.path == canonical(&sibling)) && e.action != Action::Observed)
    );
}

#[test]
fn a_deny_loop_gets_every_verdict_but_its_reports_are_rate_limited_with_an_exact_summary() {
    let _g = serial();
    if !available() {
        return;
    }
    let dir = temp_dir("ratelimit");
    let protected = dir.path().join("secret");
    write(&protected, "top secret\n");
    let protected_s = canonical(&protected);
    let cfg = FileFanotifyConfig { max_events_per_pid: 50, ..FileFanotifyConfig::default() };
    let agent = Agent::start_with(&deny_open_policy("protect-secret", &format!("\"{protected_s}\""), ""), &cfg);
    let before = agent.counters();

    // One process opens the protected file 2,000 times; every open must be refused.
    const OPENS: u64 = 2_000;
    let script = format!(
        "import sys\nrefused = 0\nfor _ in range({OPENS}):\n    try:\n        open(sys.argv[1]).close()\n    \
         except PermissionError:\n        refused += 1\nprint(refused)\n"
    );
    let o = Command::new("python3").arg("-c").arg(&script).arg(&protected_s).output();
    let Ok(o) = o else {
        eprintln!("skipping: python3 not installed");
        return;
    };
    assert!(o.status.success(), "python ran: {}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), OPENS.to_string(), "every open was refused");
    let after = agent.counters();
    assert_eq!(after.denied - before.denied, OPENS, "every verdict was given: {after:?}");
    assert!(after.rate_limited - before.rate_limited > 0, "the loop went over 50/s: {after:?}");
    let events = agent.stop();
    let reported = events
        .iter()
        .filter(|e| e.action == Action::Denied && e.file.as_ref().is_some_and(|f| f.path == protected_s))
        .count() as u64;
    let summarized: u64 = events
        .iter()
        .filter(|e| e.domain == Domain::Sensor && e.activity == Activity::Drop)
        .filter(|e| e.sensor.as_ref().is_some_and(|s| s.message.contains("permission reports")))
        .filter_map(|e| e.sensor.as_ref().and_then(|s| s.count))
        .sum();
    assert!(reported <= 50 * 10, "reports are limited to 50/s per process: {reported}");
    assert_eq!(reported + summarized, OPENS, "reported {reported} + summarized {summarized} = every verdict");
}

#[test]
fn a_prefix_rule_refuses_everything_below_its_directory() {
    let _g = serial();
    if !available() {
        return;
    }
    let dir = temp_dir("prefix");
    let inner = dir.path().join("vault/deep");
    fs::create_dir_all(&inner).expect("mkdir");
    let deep = inner.join("key");
    let outside = dir.path().join("notes");
    write(&deep, "k\n");
    write(&outside, "n\n");
    let vault = canonical(&dir.path().join("vault"));
    let agent = Agent::start(&deny_open_policy("vault", &format!("\"{vault}/**\""), ""));
    assert_eperm(&run("cat", &[deep.to_str().expect("utf8")]), "a file two levels below the prefix");
    assert!(run("cat", &[outside.to_str().expect("utf8")]).status.success(), "a file outside opens");
    // Created after the rule was loaded: still covered (filesystem mark, decided by path).
    let later = dir.path().join("vault/later");
    write(&later, "l\n");
    assert_eperm(&run("cat", &[later.to_str().expect("utf8")]), "a file created after start");
    assert!(agent.wait_for(Duration::from_secs(5), |e| e.rule.as_deref() == Some("vault")).is_some());
    agent.stop();
}

#[test]
fn a_not_exe_exception_lets_one_program_through() {
    let _g = serial();
    if !available() {
        return;
    }
    let dir = temp_dir("exe");
    let protected = dir.path().join("shadow");
    write(&protected, "root:*:1:0:99999:7:::\n");
    let p = canonical(&protected);
    let head = fs::canonicalize("/usr/bin/head").expect("head");
    let agent = Agent::start(&deny_open_policy(
        "shadow-only-head",
        &format!("\"{p}\""),
        &format!(", not: {{ exe: [\"{}\"] }}", head.display()),
    ));
    assert_eperm(&run("cat", &[&p]), "cat is not the excepted program");
    let o = run("head", &["-n1", &p]);
    assert!(o.status.success(), "head is excepted: {}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("root:"));
    let ev = agent.wait_for(Duration::from_secs(5), |e| e.action == Action::Denied).expect("denied event");
    assert!(ev.process.exe.ends_with("/cat"), "the decision saw the opener's exe: {}", ev.process.exe);
    agent.stop();
}

#[test]
fn an_exec_whose_hash_is_denied_fails_a_one_byte_copy_runs_and_repeats_hit_the_cache() {
    let _g = serial();
    if !available() {
        return;
    }
    let dir = temp_dir("hash");
    let bad = dir.path().join("bad-true");
    let good = dir.path().join("good-true");
    let bad_hash = salted_true(&bad, 0x01);
    let good_hash = salted_true(&good, 0x02);
    assert_ne!(bad_hash, good_hash);
    // A hash rule applies wherever the file is: no path condition.
    let policy = format!(
        "rules:\n  - id: known-bad\n    domain: file\n    match: {{ sha256: [{bad_hash}] }}\n    action: deny\n"
    );
    let agent = Agent::start(&policy);
    let before = agent.counters();

    let (status, err) = sh_exec(&bad);
    assert_eq!(status, 126, "the exec is refused: {err}");
    assert!(err.contains("Operation not permitted") || err.contains("Permission denied"), "{err}");
    let (status, err) = sh_exec(&good);
    assert_eq!(status, 0, "one byte changed: runs ({err})");
    let moved = dir.path().join("renamed-copy");
    fs::copy(&bad, &moved).expect("copy");
    assert_eq!(sh_exec(&moved).0, 126, "a copy under another name is refused too");

    let ev = agent
        .wait_for(Duration::from_secs(5), |e| e.action == Action::Denied && e.activity == Activity::Exec)
        .expect("a denied exec event");
    let f = ev.file.as_ref().expect("file facts");
    assert_eq!((f.path.as_str(), f.sha256.as_deref()), (canonical(&bad).as_str(), Some(bad_hash.as_str())));
    assert_eq!(ev.rule.as_deref(), Some("known-bad"));

    // The same binary again: no hash (cache keyed by dev, inode, mtime, ctime, size).
    let mid = agent.counters();
    assert_eq!(sh_exec(&bad).0, 126);
    assert_eq!(sh_exec(&good).0, 0);
    let after = agent.counters();
    assert!(after.cache_hits >= mid.cache_hits + 2, "repeated execs are cache hits: {mid:?} -> {after:?}");
    assert_eq!(after.hashed, mid.hashed, "nothing hashed again: {mid:?} -> {after:?}");
    assert!(mid.cache_misses > before.cache_misses, "the first exec of each was a miss");
    // A write changes mtime/ctime: the next exec is hashed again (and now runs).
    let mut bytes = fs::read(&bad).expect("read");
    if let Some(last) = bytes.last_mut() {
        *last ^= 0x04;
    }
    fs::OpenOptions::new().write(true).open(&bad).and_then(|mut f| f.write_all(&bytes)).expect("rewrite in place");
    assert_eq!(sh_exec(&bad).0, 0, "new content, new hash: allowed");
    agent.stop();
}

#[test]
fn trusted_only_refuses_a_copied_binary_in_tmp_and_runs_usr_bin_true() {
    let _g = serial();
    if !available() {
        return;
    }
    let dir = temp_dir("trust");
    let copy = dir.path().join("true");
    let allowed_copy = dir.path().join("blessed");
    salted_true(&copy, 0x08);
    let blessed = salted_true(&allowed_copy, 0x10);
    // Everything but /tmp is trusted, so nothing else on this machine is refused while the test runs.
    let mut allow: Vec<String> = fs::read_dir("/")
        .expect("read /")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name() != "tmp")
        .map(|e| format!("\"/{}/**\"", e.file_name().to_string_lossy()))
        .collect();
    allow.sort();
    let policy = format!(
        "exec_trust:\n  mode: trusted_only\n  allow_paths: [{}]\n  allow_sha256: [{blessed}]\n",
        allow.join(", ")
    );
    let agent = Agent::start(&policy);
    let (status, err) = sh_exec(&copy);
    assert_eq!(status, 126, "an untrusted copy in /tmp is refused: {err}");
    assert_eq!(sh_exec(Path::new("/usr/bin/true")).0, 0, "/usr/bin/true is under an allowed path");
    assert_eq!(sh_exec(&allowed_copy).0, 0, "a binary in /tmp with an allowed hash runs");
    let ev = agent
        .wait_for(Duration::from_secs(5), |e| e.rule.as_deref() == Some("exec_trust"))
        .expect("a denied exec_trust event");
    assert_eq!((ev.action, ev.activity), (Action::Denied, Activity::Exec));
    assert_eq!(ev.file.as_ref().map(|f| f.path.clone()), Some(canonical(&copy)));
    agent.stop();
}

/// A runnable binary of about `mib` MiB (zeros appended to a copy of /usr/bin/true).
fn big_true(path: &Path, mib: usize) {
    let mut bytes = fs::read("/usr/bin/true").expect("read");
    bytes.resize(bytes.len() + (mib << 20), 0);
    fs::write(path, &bytes).expect("write");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn a_hash_that_misses_its_deadline_gets_the_rules_on_timeout_verdict() {
    let _g = serial();
    if !available() {
        return;
    }
    let dir = temp_dir("timeout");
    let big = dir.path().join("big-true");
    big_true(&big, 256);
    let scope = canonical(dir.path());
    let unrelated = "ab".repeat(32);
    for (on_timeout, status, action) in [("allow", 0, Action::Alerted), ("deny", 126, Action::Denied)] {
        let policy = format!(
            "rules:\n  - id: slow-{on_timeout}\n    domain: file\n    match: {{ path: \"{scope}/**\", sha256: \
             [{unrelated}] }}\n    action: deny\n    on_timeout: {on_timeout}\n    timeout_ms: 2\n"
        );
        let agent = Agent::start(&policy);
        let t = Instant::now();
        let (got, err) = sh_exec(&big);
        let took = t.elapsed();
        assert_eq!(got, status, "on_timeout: {on_timeout}: {err}");
        assert!(took < Duration::from_secs(2), "answered at the deadline, not after hashing 256 MiB: {took:?}");
        let rule = format!("slow-{on_timeout}");
        let ev = agent
            .wait_for(Duration::from_secs(5), |e| e.domain == Domain::File && e.rule.as_deref() == Some(&rule))
            .expect("the file event of the late verdict");
        assert_eq!(ev.action, action);
        let sensor = agent
            .wait_for(Duration::from_secs(5), |e| {
                e.domain == Domain::Sensor && e.sensor.as_ref().is_some_and(|s| s.message.contains("timed out"))
            })
            .expect("a sensor event saying it timed out");
        assert!(sensor.sensor.as_ref().is_some_and(|s| s.message.contains(&rule)), "{sensor:?}");
        assert!(agent.counters().timeouts >= 1);
        agent.stop();
    }
}

/// Not a test on its own: the agent process of the SIGKILL test (runs only with [`CHILD_POLICY_ENV`] set).
#[test]
fn permission_agent_child_process() {
    let Ok(policy) = std::env::var(CHILD_POLICY_ENV) else { return };
    let text = fs::read_to_string(&policy).expect("policy file");
    let agent = Agent::start(&text);
    println!("{READY}");
    std::io::stdout().flush().expect("flush");
    loop {
        thread::sleep(Duration::from_secs(1));
        let _ = agent.counters();
    }
}

#[test]
fn the_agent_killed_with_sigkill_leaves_nothing_blocked() {
    let _g = serial();
    if !available() {
        return;
    }
    let dir = temp_dir("sigkill");
    let protected = dir.path().join("guarded");
    write(&protected, "g\n");
    let p = canonical(&protected);
    // An inode mark only: while the agent is stopped, nothing but this file waits.
    let policy_file = dir.path().join("policy.yaml");
    write(&policy_file, &deny_open_policy("guard", &format!("\"{p}\""), ""));
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "permission_agent_child_process", "--nocapture", "--test-threads=1"])
            .env(CHILD_POLICY_ENV, &policy_file)
            .stdout(Stdio::piped())
            .spawn()
            .expect("agent child starts"),
    );
    let stdout = child.0.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints `test NAME ... ` before the test runs, on the same line.
            if line.contains(READY) {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30)).expect("the agent child is ready");
    let agent_pid = nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).expect("pid"));
    assert_eperm(&run("cat", &[&p]), "the child agent enforces the rule");

    // Freeze the agent, start an open that now waits for a verdict, then kill the agent.
    nix::sys::signal::kill(agent_pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    let mut blocked = Command::new("cat").arg(&p).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("cat");
    thread::sleep(Duration::from_millis(300));
    assert!(blocked.try_wait().expect("try_wait").is_none(), "the open waits for the stopped agent");
    let killed_at = Instant::now();
    nix::sys::signal::kill(agent_pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
    let status = loop {
        if let Some(s) = blocked.try_wait().expect("try_wait") {
            break s;
        }
        assert!(killed_at.elapsed() < Duration::from_secs(1), "the blocked open is released within 1 s");
        thread::sleep(Duration::from_millis(5));
    };
    let released_in = killed_at.elapsed();
    assert!(status.success(), "the kernel allowed the pending open when the group closed");
    child.0.wait().expect("reap the agent");
    let o = run("cat", &[&p]);
    assert!(o.status.success() && o.stdout == b"g\n", "the next open succeeds: {}", stderr(&o));
    eprintln!("blocked open released {released_in:?} after SIGKILL");
}

/// Exec and open storms with and without the permission group; prints ratios. Run with `--ignored --nocapture`.
#[test]
#[ignore = "benchmark; run by hand: cargo test -p ringwatch-domains --test file_perm -- --ignored --nocapture"]
fn bench_exec_and_open_storms() {
    let _g = serial();
    if !available() {
        return;
    }
    let dir = temp_dir("bench");
    let target = dir.path().join("storm-file");
    write(&target, "x");
    let other = dir.path().join("protected");
    write(&other, "p");
    let execs = 5_000;
    let exec_storm = || {
        let t = Instant::now();
        for _ in 0..execs {
            let s = Command::new("/bin/true").status().expect("true");
            assert!(s.success());
        }
        t.elapsed()
    };
    let opens = 200_000;
    let open_storm = || {
        let t = Instant::now();
        let script = format!("for (1..{opens}) {{ open(my $f, '<', $ARGV[0]) or die; close $f }}");
        let o = Command::new("perl").args(["-e", &script, target.to_str().expect("utf8")]).output().expect("perl");
        assert!(o.status.success(), "{}", stderr(&o));
        t.elapsed()
    };
    let median = |f: &dyn Fn() -> Duration| {
        let mut v: Vec<Duration> = (0..3).map(|_| f()).collect();
        v.sort();
        v[1]
    };
    let base_exec = median(&exec_storm);
    let hash_policy = format!(
        "rules:\n  - id: bench-hash\n    domain: file\n    match: {{ sha256: [{}] }}\n    action: deny\n",
        "cd".repeat(32)
    );
    let agent = Agent::start(&hash_policy);
    let before = agent.counters();
    let with_hash = median(&exec_storm);
    let after = agent.counters();
    agent.stop();
    let hits = after.cache_hits - before.cache_hits;
    let misses = after.cache_misses - before.cache_misses;
    eprintln!(
        "exec storm ({execs} x /bin/true): no sensor {base_exec:?}, exec hash rule {with_hash:?} = {:.2}x; hash cache \
         {hits} hits / {misses} misses ({:.2}% hit rate)",
        with_hash.as_secs_f64() / base_exec.as_secs_f64(),
        100.0 * hits as f64 / (hits + misses).max(1) as f64
    );

    let base_open = median(&open_storm);
    let agent = Agent::start("rules: []\n");
    let monitor_only = median(&open_storm);
    agent.stop();
    let agent = Agent::start(&deny_open_policy("bench-exact", &format!("\"{}\"", canonical(&other)), ""));
    let with_exact = median(&open_storm);
    agent.stop();
    let agent = Agent::start(&deny_open_policy("bench-glob", "\"/nonexistent-*/x\"", ""));
    let with_glob = median(&open_storm);
    let c = agent.counters();
    agent.stop();
    eprintln!(
        "open storm ({opens} opens): no sensor {base_open:?}; monitor only {monitor_only:?} = {:.2}x; exact-path deny \
         (inode mark) {with_exact:?} = {:.2}x; glob deny (FAN_OPEN_PERM on every filesystem) {with_glob:?} = {:.2}x \
         ({} permission events)",
        monitor_only.as_secs_f64() / base_open.as_secs_f64(),
        with_exact.as_secs_f64() / base_open.as_secs_f64(),
        with_glob.as_secs_f64() / base_open.as_secs_f64(),
        c.events
    );
}
