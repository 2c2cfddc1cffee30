//! The kernel process backend against the real kernel: exec/fork/exit events with the contract's fields, no loss
//! under an exec storm, kill at exec, and a clean detach. Needs root with BPF; skips with a reason otherwise.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringwatch_core::compiled::ExecKillList;
use ringwatch_core::proc_table::read_proc_process;
use ringwatch_core::{Action, Activity, Domain, Event, Mode, Source, SourceKind};
use ringwatch_domains::process::kernel::ProcessKernel;

use common::{Losses, Running, Stopped, loaded_program_ids, still_loaded};

const COMPONENT: &str = "process/kernel";
const PROG_NAMES: [&str; 3] = ["handle_exec", "handle_fork", "handle_exit"];

/// One backend at a time: every test sees every process on the host, and the detach test counts programs.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the backend into an in-memory pipeline, or returns None (after saying why) when this host cannot run it.
fn start(kill: &ExecKillList) -> Option<Running> {
    let probe = ProcessKernel::probe();
    if !probe.available {
        eprintln!("skipping: process/kernel unavailable here: {}", probe.detail);
        return None;
    }
    let source = ProcessKernel::start(kill).expect("probe said available, start must succeed");
    assert_eq!(source.name(), COMPONENT);
    Some(Running::start(source, 1 << 17))
}

fn unique(tag: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos();
    format!("rw-{tag}-{}-{nanos}", std::process::id())
}

fn canonical(path: &str) -> String {
    fs::canonicalize(path).expect("path exists").to_string_lossy().into_owned()
}

fn of(events: &[Event], activity: Activity) -> impl Iterator<Item = &Event> {
    events.iter().filter(move |e| e.domain == Domain::Process && e.activity == activity)
}

fn assert_no_losses(losses: &Losses) {
    let ours = losses.get(COMPONENT).copied().unwrap_or_default();
    assert_eq!(ours, (0, 0, 0), "process/kernel lost events (queue_full, lost_upstream, malformed)");
}

#[test]
fn exec_of_echo_reports_argv_canonical_exe_and_parent_guid() {
    let _serial = serial();
    let Some(running) = start(&ExecKillList::default()) else { return };
    let token = unique("echo");
    let status = Command::new("/bin/echo").arg(&token).stdout(Stdio::null()).status().expect("spawn echo");
    assert!(status.success());
    let Stopped { events, losses, .. } = running.stop();
    assert_no_losses(&losses);

    let execs: Vec<&Event> = of(&events, Activity::Exec).filter(|e| e.process.cmdline.get(1) == Some(&token)).collect();
    assert_eq!(execs.len(), 1, "exactly one exec carrying the token: {execs:#?}");
    let ev = execs[0];
    assert_eq!((ev.backend.mode, ev.backend.source), (Mode::Kernel, SourceKind::Ebpf));
    assert!(ev.trusted);
    let p = &ev.process;
    assert_eq!(p.cmdline, vec!["/bin/echo".to_owned(), token.clone()]);
    assert_eq!(p.exe, canonical("/bin/echo"), "exe is the canonical path of the image");
    assert_eq!(p.comm, "echo");
    assert_eq!(p.ppid, std::process::id());
    let me = read_proc_process(std::process::id()).expect("own /proc entry");
    assert_eq!(p.parent_guid.as_deref(), Some(me.guid.as_str()), "parent guid equals the /proc-derived guid");
    assert!(p.guid.ends_with(&format!("-{}", p.pid)), "guid names the pid: {}", p.guid);
    assert!(p.start_ticks >= me.start_ticks);
    assert_eq!((p.uid, p.euid, p.gid), (me.uid, me.euid, me.gid));
    assert_eq!(p.session_id, me.session_id);
    assert_eq!(p.tty, me.tty);
    let cwd = std::env::current_dir().expect("cwd").canonicalize().expect("canonical cwd");
    assert_eq!(p.cwd.as_deref(), Some(cwd.to_string_lossy().as_ref()));
    assert!(!p.cmdline_truncated && !p.partial);
    assert_eq!(ev.action, Action::Observed);
    assert_eq!(p.cgroup, me.cgroup, "cgroup resolved from the kernel's cgroup id");
    let now = ringwatch_core::Timestamp::now().0;
    assert!(now.abs_diff(ev.time.0) < 60_000_000_000, "event time is wall clock: {:?}", ev.time);
}

#[test]
fn child_fork_and_exit_code_and_signal_are_reported() {
    let _serial = serial();
    let Some(running) = start(&ExecKillList::default()) else { return };
    let exiter = Command::new("sh").args(["-c", "exit 7"]).spawn().expect("spawn sh");
    let exiter_pid = exiter.id();
    let status = exiter.wait_with_output().expect("wait sh").status;
    assert_eq!(status.code(), Some(7));

    let mut sleeper = Command::new("sleep").arg("30").spawn().expect("spawn sleep");
    let sleeper_pid = sleeper.id();
    // Wait until it runs `sleep` (not still our forked child) so the signal hits the exec'd image.
    let deadline = Instant::now() + Duration::from_secs(5);
    while read_proc_process(sleeper_pid).is_none_or(|p| p.comm != "sleep") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sleeper_pid as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("kill -TERM");
    assert_eq!(sleeper.wait().expect("wait sleep").signal(), Some(15));
    let Stopped { events, losses, .. } = running.stop();
    assert_no_losses(&losses);

    let fork = of(&events, Activity::Fork).find(|e| e.process.pid == exiter_pid).expect("fork event of sh");
    assert_eq!(fork.process.ppid, std::process::id());
    let me = read_proc_process(std::process::id()).expect("own /proc entry");
    assert_eq!(fork.process.parent_guid.as_deref(), Some(me.guid.as_str()));
    let exec = of(&events, Activity::Exec).find(|e| e.process.pid == exiter_pid).expect("exec event of sh");
    assert_eq!(fork.process.guid, exec.process.guid, "fork and exec agree on the process guid");
    let exit = of(&events, Activity::Exit).find(|e| e.process.pid == exiter_pid).expect("exit event of sh");
    assert_eq!((exit.process.exit_code, exit.process.exit_signal), (Some(7), None));
    assert_eq!(exit.process.guid, fork.process.guid);
    let exits = of(&events, Activity::Exit).filter(|e| e.process.pid == exiter_pid).count();
    assert_eq!(exits, 1, "one exit per process, not per thread");

    let exit = of(&events, Activity::Exit).find(|e| e.process.pid == sleeper_pid).expect("exit event of sleep");
    assert_eq!((exit.process.exit_code, exit.process.exit_signal), (None, Some(15)));
    assert_eq!(exit.process.comm, "sleep");
}

/// Not a test on its own: the body of the multi-threaded helper process `threads_are_not_processes` runs.
#[test]
fn helper_spawns_threads_when_asked() {
    if std::env::var_os("RW_THREADS_HELPER").is_none() {
        return;
    }
    let handles: Vec<_> =
        (0..8).map(|_| std::thread::spawn(|| std::thread::sleep(Duration::from_millis(20)))).collect();
    for h in handles {
        h.join().expect("thread");
    }
}

#[test]
fn threads_are_not_reported_as_processes() {
    let _serial = serial();
    let Some(running) = start(&ExecKillList::default()) else { return };
    // A separate process (this test binary running only the helper) that starts and ends 8+ threads.
    let exe = std::env::current_exe().expect("test binary path");
    let helper = Command::new(exe)
        .args(["--exact", "helper_spawns_threads_when_asked", "--test-threads", "2"])
        .env("RW_THREADS_HELPER", "1")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn helper");
    let pid = helper.id();
    assert!(helper.wait_with_output().expect("wait helper").status.success());
    let Stopped { events, losses, .. } = running.stop();
    assert_no_losses(&losses);

    let count = |a: Activity| of(&events, a).filter(|e| e.process.pid == pid).count();
    assert_eq!((count(Activity::Fork), count(Activity::Exec), count(Activity::Exit)), (1, 1, 1));
    let children = of(&events, Activity::Fork).filter(|e| e.process.ppid == pid).count();
    assert_eq!(children, 0, "threads of the helper reported as new processes");
}

#[test]
fn five_thousand_execs_in_a_tight_loop_lose_nothing() {
    const N: usize = 5000;
    let _serial = serial();
    let Some(running) = start(&ExecKillList::default()) else { return };
    let started = Instant::now();
    let script = format!("i=0; while [ $i -lt {N} ]; do /bin/true; i=$((i+1)); done");
    let child = Command::new("sh").args(["-c", &script]).spawn().expect("spawn sh loop");
    let loop_pid = child.id();
    assert!(child.wait_with_output().expect("wait sh loop").status.success());
    let elapsed = started.elapsed();
    let Stopped { events, losses, .. } = running.stop();
    assert_no_losses(&losses);

    let true_exe = canonical("/bin/true");
    let execs = of(&events, Activity::Exec).filter(|e| e.process.ppid == loop_pid).collect::<Vec<_>>();
    let wrong: Vec<_> = execs.iter().filter(|e| e.process.exe != true_exe).take(3).collect();
    assert!(wrong.is_empty(), "execs under the loop with another exe: {wrong:#?}");
    assert_eq!(execs.len(), N, "one exec event per /bin/true");
    assert!(execs.iter().all(|e| e.process.cmdline == ["/bin/true"]));
    let forks = of(&events, Activity::Fork).filter(|e| e.process.ppid == loop_pid).count();
    assert_eq!(forks, N, "one fork event per child");
    let exits = of(&events, Activity::Exit).filter(|e| e.process.ppid == loop_pid).count();
    assert_eq!(exits, N, "one exit event per child");
    let guids: BTreeSet<&str> = execs.iter().map(|e| e.process.guid.as_str()).collect();
    assert_eq!(guids.len(), N, "every process has its own guid");
    eprintln!("{N} execs in {elapsed:?}; {} events collected, losses {losses:?}", events.len());
}

/// A temp dir with copies of system binaries at `<dir>/<sub>/<name>`.
fn copy_binary(dir: &Path, sub: &str, from: &str, name: &str) -> PathBuf {
    let d = dir.join(sub);
    fs::create_dir_all(&d).expect("mkdir");
    let to = d.join(name);
    fs::copy(from, &to).expect("copy binary");
    to
}

#[test]
fn exec_from_blocked_dir_is_killed_before_user_code() {
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().canonicalize().expect("canonical tempdir");
    let blocked_true = copy_binary(&root, "blocked", "/bin/true", "true");
    let blocked_touch = copy_binary(&root, "blocked/deeper", "/usr/bin/touch", "touch");
    let exact_true = copy_binary(&root, "exact", "/bin/true", "true");
    let allowed_true = copy_binary(&root, "allowed", "/bin/true", "true");
    let blocked_dir = format!("{}/", root.join("blocked").display());
    let kill = ExecKillList {
        rule_ids: vec!["block-dir".into(), "block-exact".into()],
        exact: vec![(exact_true.display().to_string(), 1)],
        dir_prefixes: vec![(blocked_dir, 0)],
    };
    let Some(running) = start(&kill) else { return };

    let status = Command::new(&blocked_true).status().expect("spawn blocked true");
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status:?}");
    let shell =
        Command::new("sh").args(["-c", &format!("{}; echo $?", blocked_true.display())]).output().expect("spawn sh");
    assert_eq!(String::from_utf8_lossy(&shell.stdout).trim(), "137", "shell status of a SIGKILLed command");
    // touch would create the marker with its first system calls: it must not exist.
    let marker = root.join("marker");
    let status = Command::new(&blocked_touch).arg(&marker).status().expect("spawn blocked touch");
    assert_eq!(status.signal(), Some(9));
    assert!(!marker.exists(), "the killed image ran user code");
    let status = Command::new(&exact_true).status().expect("spawn exact true");
    assert_eq!(status.signal(), Some(9), "exact-path rule kills: {status:?}");
    assert!(Command::new("/bin/true").status().expect("spawn /bin/true").success());
    assert!(Command::new(&allowed_true).status().expect("spawn allowed true").success());
    let Stopped { events, losses, .. } = running.stop();
    assert_no_losses(&losses);

    let exec_of = |path: &Path| -> Vec<&Event> {
        let path = path.display().to_string();
        of(&events, Activity::Exec).filter(|e| e.process.exe == path).collect()
    };
    let blocked = exec_of(&blocked_true);
    assert_eq!(blocked.len(), 2, "direct + via sh: {blocked:#?}");
    for ev in &blocked {
        assert_eq!(ev.action, Action::Killed);
        assert_eq!(ev.rule.as_deref(), Some("block-dir"));
        let exit = of(&events, Activity::Exit).find(|e| e.process.pid == ev.process.pid).expect("exit of killed");
        assert_eq!(exit.process.exit_signal, Some(9));
    }
    let touch = exec_of(&blocked_touch);
    assert_eq!(touch.len(), 1);
    assert_eq!((touch[0].action, touch[0].rule.as_deref()), (Action::Killed, Some("block-dir")));
    let exact = exec_of(&exact_true);
    assert_eq!(exact.len(), 1);
    assert_eq!((exact[0].action, exact[0].rule.as_deref()), (Action::Killed, Some("block-exact")));
    let allowed = exec_of(&allowed_true);
    assert_eq!(allowed.len(), 1);
    assert_eq!((allowed[0].action, allowed[0].rule.as_deref()), (Action::Observed, None));
    let system_true = canonical("/bin/true");
    let ours = of(&events, Activity::Exec)
        .filter(|e| e.process.exe == system_true && e.process.ppid == std::process::id())
        .collect::<Vec<_>>();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].action, Action::Observed);
}

/// Ids of loaded BPF programs carrying our program names.
fn our_program_ids() -> BTreeSet<u32> {
    loaded_program_ids(&PROG_NAMES)
}

#[test]
fn programs_are_detached_and_unloaded_after_shutdown_or_drop() {
    let _serial = serial();
    let before = our_program_ids();
    let Some(running) = start(&ExecKillList::default()) else { return };
    let loaded: BTreeSet<u32> = our_program_ids().difference(&before).copied().collect();
    assert_eq!(loaded.len(), PROG_NAMES.len(), "our three programs are loaded while running");
    let _ = running.stop();
    assert_eq!(still_loaded(&PROG_NAMES, &loaded), BTreeSet::new(), "programs left loaded after run returned");

    // Started but never run: dropping it detaches too.
    let before = our_program_ids();
    let source = ProcessKernel::start(&ExecKillList::default()).expect("start");
    let loaded: BTreeSet<u32> = our_program_ids().difference(&before).copied().collect();
    assert_eq!(loaded.len(), PROG_NAMES.len());
    drop(source);
    assert_eq!(still_loaded(&PROG_NAMES, &loaded), BTreeSet::new(), "programs left loaded after drop");
}

#[test]
fn kill_rule_longer_than_the_kernel_key_is_refused_at_start() {
    let _serial = serial();
    if !ProcessKernel::probe().available {
        eprintln!("skipping: process/kernel unavailable here");
        return;
    }
    let long = format!("/{}", "x".repeat(300));
    let kill = ExecKillList { rule_ids: vec!["long".into()], exact: vec![(long, 0)], dir_prefixes: vec![] };
    let err = ProcessKernel::start(&kill).expect_err("a 301-byte path cannot be a kernel key");
    assert!(err.to_string().contains("kill_exe_exact"), "error names the step: {err}");
}

/// Unmounts (lazily) when dropped, so a failing assertion does not leave mounts behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn exe_and_cwd_paths_cross_mount_points() {
    use nix::mount::{MsFlags, mount};
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().canonicalize().expect("canonical tempdir");
    let mnt = root.join("mnt");
    let bound = root.join("bound");
    fs::create_dir_all(&mnt).expect("mkdir mnt");
    fs::create_dir_all(&bound).expect("mkdir bound");
    if let Err(e) = mount(Some("tmpfs"), &mnt, Some("tmpfs"), MsFlags::empty(), None::<&str>) {
        eprintln!("skipping: cannot mount tmpfs here: {e}");
        return;
    }
    let _mnt = Mounted(mnt.clone());
    let inner_true = copy_binary(&mnt, "sub", "/bin/true", "true");
    let sub = mnt.join("sub");
    mount(Some(&sub), &bound, None::<&str>, MsFlags::MS_BIND, None::<&str>).expect("bind mount");
    let _bound = Mounted(bound.clone());
    let Some(running) = start(&ExecKillList::default()) else { return };

    let in_tmpfs = Command::new("./true").current_dir(&sub).spawn().expect("spawn ./true in tmpfs");
    let in_tmpfs_pid = in_tmpfs.id();
    assert!(in_tmpfs.wait_with_output().expect("wait").status.success());
    let via_bind = Command::new(bound.join("true")).current_dir(&bound).spawn().expect("spawn via bind mount");
    let via_bind_pid = via_bind.id();
    assert!(via_bind.wait_with_output().expect("wait").status.success());
    let Stopped { events, losses, .. } = running.stop();
    assert_no_losses(&losses);

    let exec = |pid: u32| of(&events, Activity::Exec).find(|e| e.process.pid == pid).expect("exec event");
    let ev = exec(in_tmpfs_pid);
    assert_eq!(ev.process.exe, inner_true.display().to_string(), "walk crossed from tmpfs into the root fs");
    assert_eq!(ev.process.cwd.as_deref(), Some(sub.display().to_string().as_str()));
    assert_eq!(ev.process.cmdline, ["./true"]);
    let ev = exec(via_bind_pid);
    assert_eq!(ev.process.exe, bound.join("true").display().to_string(), "path through the bind mount");
    assert_eq!(ev.process.cwd.as_deref(), Some(bound.display().to_string().as_str()));
}

#[test]
fn long_argv_is_cut_and_marked_truncated() {
    let _serial = serial();
    let Some(running) = start(&ExecKillList::default()) else { return };
    let token = unique("long");
    let args: Vec<String> = (0..100).map(|i| format!("{token}-{i:03}-{}", "a".repeat(60))).collect();
    let child = Command::new("/bin/echo").args(&args).stdout(Stdio::null()).spawn().expect("spawn echo");
    let pid = child.id();
    assert!(child.wait_with_output().expect("wait echo").status.success());
    let Stopped { events, .. } = running.stop();

    let ev = of(&events, Activity::Exec).find(|e| e.process.pid == pid).expect("exec event");
    let p = &ev.process;
    assert!(
        p.cmdline_truncated,
        "argv of {} bytes is over the 4 KiB capture",
        args.iter().map(|a| a.len() + 1).sum::<usize>()
    );
    assert_eq!(p.cmdline[0], "/bin/echo");
    assert_eq!(p.cmdline[1], args[0]);
    let captured: usize = p.cmdline.iter().map(|a| a.len() + 1).sum();
    assert!((4000..=4097).contains(&captured), "captured {captured} bytes");
    assert!(args.iter().any(|a| a.starts_with(p.cmdline.last().expect("some args").as_str())));
}

#[test]
fn controlling_tty_and_session_come_from_the_kernel() {
    let _serial = serial();
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipping: script(1) is needed to get a pty");
        return;
    }
    let Some(running) = start(&ExecKillList::default()) else { return };
    let token = unique("tty");
    // script starts a shell as a session leader on a new pty; the shell forks echo, then prints its tty.
    let out = Command::new("script")
        .args(["-qc", &format!("/bin/echo {token}; tty"), "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("spawn script");
    assert!(out.status.success(), "script failed: {out:?}");
    let Stopped { events, .. } = running.stop();

    let stdout = String::from_utf8_lossy(&out.stdout);
    let tty = stdout.lines().find_map(|l| l.trim().strip_prefix("/dev/")).expect("tty printed").to_owned();
    let ev =
        of(&events, Activity::Exec).find(|e| e.process.cmdline.get(1) == Some(&token)).expect("exec event of echo");
    assert_eq!(ev.process.tty.as_deref(), Some(tty.as_str()), "tty from signal->tty");
    assert_eq!(ev.process.session_id, ev.process.ppid, "the shell that forked echo leads the session");
    assert_ne!(ev.process.session_id, read_proc_process(std::process::id()).expect("own /proc").session_id);
}
