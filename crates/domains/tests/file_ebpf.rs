//! The eBPF file-syscall backend against the real kernel: refused calls with their errno, open and rename flags,
//! relative paths made absolute, the in-kernel filter (nothing for read-only opens, missing paths or the agent
//! itself) and its cost under an open storm. Needs root with BPF; skips with a reason otherwise.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use ringwatch_core::{Action, Activity, Domain, Event, Mode, Source, SourceKind};
use ringwatch_domains::file::ebpf::{FailureFilter, FileEbpf, FileEbpfConfig};

use common::{Running, Stopped, build_c_helpers};

const COMPONENT: &str = "file/ebpf";
/// The nobody user and group: an unprivileged child that the kernel refuses root-only files.
const NOBODY: &str = "65534";
const O_WRONLY: u32 = 0o1;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const RENAME_EXCHANGE: u32 = 2;

/// One backend at a time: every test sees the whole host, and the storm measures time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the backend into an in-memory pipeline, or returns None (after saying why) when this host cannot run it.
fn start(config: FileEbpfConfig) -> Option<Running> {
    let probe = FileEbpf::probe_with(config);
    if !probe.available {
        eprintln!("skipping: file/ebpf unavailable here: {}", probe.detail);
        return None;
    }
    let source = FileEbpf::start(config).expect("probe said available, start must succeed");
    assert_eq!(source.name(), COMPONENT);
    Some(Running::start(source, 1 << 16))
}

/// Compiled `tests/data/file_syscalls.c`, in a directory every user may enter (the helper also runs as nobody).
fn helper() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let [out] = build_c_helpers("file-ebpf", [(&["-O2", "-Wall"], "file_syscalls.c", "file_syscalls")])?;
        // The target dir may sit under a 0700 home: make the path traversable for nobody, or skip.
        for dir in out.ancestors().skip(1) {
            if let Ok(meta) = fs::metadata(dir)
                && meta.permissions().mode() & 0o001 == 0
            {
                let _ = fs::set_permissions(dir, fs::Permissions::from_mode(meta.permissions().mode() | 0o001));
            }
        }
        Some(out)
    })
    .as_deref()
}

/// A temp dir (mode 0755) owned by root.
fn temp_dir(tag: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix(&format!("rw-ebpf-{tag}-")).tempdir().expect("temp dir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
    dir
}

/// Runs the helper (as nobody when `nobody`) and returns its pid and its output line.
fn run_helper(nobody: bool, args: &[&str]) -> (u32, String) {
    let bin = helper().expect("helper compiled");
    let mut cmd = if nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    // Cargo's LD_LIBRARY_PATH points into /root: as nobody, the loader's search there is itself refused (EACCES,
    // correctly reported). Tests want only the helper's own call.
    cmd.env_remove("LD_LIBRARY_PATH");
    let child = cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn helper");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait helper");
    assert!(out.status.success(), "helper {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    (pid, String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn canonical(p: &Path) -> String {
    fs::canonicalize(p).expect("path exists").to_string_lossy().into_owned()
}

fn of_pid(events: &[Event], pid: u32) -> Vec<&Event> {
    events.iter().filter(|e| e.domain == Domain::File && e.process.pid == pid).collect()
}

fn assert_no_losses(stopped: &Stopped) {
    let ours = stopped.losses.get(COMPONENT).copied().unwrap_or_default();
    assert_eq!(ours, (0, 0, 0), "file/ebpf lost events (queue_full, lost_upstream, malformed)");
}

fn nobody_available() -> bool {
    if helper().is_none() {
        return false;
    }
    let ok = Command::new("setpriv")
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipping: setpriv cannot switch to uid {NOBODY}");
    }
    ok
}

#[test]
fn refused_open_and_unlink_are_reported_with_errno_and_missing_paths_are_not() {
    let _serial = serial();
    if !nobody_available() {
        return;
    }
    let dir = temp_dir("refused");
    let secret = dir.path().join("secret");
    fs::write(&secret, "root only").expect("write secret");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod secret");
    let missing = dir.path().join("no-such-file");
    let Some(running) = start(FileEbpfConfig::default()) else { return };

    let (denied_pid, out) = run_helper(true, &["openat", secret.to_str().expect("utf-8"), "0"]);
    assert_eq!(out, "openat -13", "nobody is refused the 0600 root file");
    let (missing_pid, out) = run_helper(true, &["openat", missing.to_str().expect("utf-8"), "0"]);
    assert_eq!(out, "openat -2");
    let (unlink_pid, out) = run_helper(true, &["unlinkat", secret.to_str().expect("utf-8"), "0"]);
    assert_eq!(out, "unlinkat -13", "nobody may not write the root-owned directory");
    let stopped = running.stop();
    assert_no_losses(&stopped);

    let denied = of_pid(&stopped.events, denied_pid);
    assert_eq!(denied.len(), 1, "exactly one event for the refused open: {denied:#?}");
    let ev = denied[0];
    assert_eq!((ev.activity, ev.action), (Activity::Open, Action::Observed));
    assert_eq!((ev.backend.mode, ev.backend.source), (Mode::Kernel, SourceKind::Ebpf));
    assert!(ev.trusted);
    let f = ev.file.as_ref().expect("file facts");
    assert_eq!(f.path, canonical(&secret));
    assert_eq!(f.error.as_deref(), Some("EACCES"));
    assert_eq!(f.flags, Some(0), "O_RDONLY");
    assert_eq!((ev.process.uid, ev.process.euid), (65534, 65534));
    assert_eq!(ev.process.comm, "file_syscalls");
    assert!(!ev.process.guid.is_empty() && !ev.process.partial);

    assert!(of_pid(&stopped.events, missing_pid).is_empty(), "ENOENT is not a refusal: filtered in the kernel");

    let unlink = of_pid(&stopped.events, unlink_pid);
    assert_eq!(unlink.len(), 1, "one event for the refused unlink: {unlink:#?}");
    let f = unlink[0].file.as_ref().expect("file facts");
    assert_eq!((unlink[0].activity, f.error.as_deref()), (Activity::Delete, Some("EACCES")));
    assert_eq!(f.path, canonical(&secret));
}

#[test]
fn every_failure_is_reported_when_configured() {
    let _serial = serial();
    if helper().is_none() {
        return;
    }
    let dir = temp_dir("all");
    let sub = dir.path().join("sub");
    fs::create_dir(&sub).expect("mkdir");
    let missing = dir.path().join("no-such-file");
    let config = FileEbpfConfig { failures: FailureFilter::All, all_successes: false };
    let Some(running) = start(config) else { return };
    let (missing_pid, out) = run_helper(false, &["openat", missing.to_str().expect("utf-8"), "0"]);
    assert_eq!(out, "openat -2");
    let (isdir_pid, out) = run_helper(false, &["unlinkat", sub.to_str().expect("utf-8"), "0"]);
    assert_eq!(out, "unlinkat -21", "unlink of a directory is EISDIR");
    let stopped = running.stop();
    assert_no_losses(&stopped);

    let ev = of_pid(&stopped.events, missing_pid);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(ev[0].file.as_ref().and_then(|f| f.error.as_deref()), Some("ENOENT"));
    let ev = of_pid(&stopped.events, isdir_pid);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    let f = ev[0].file.as_ref().expect("file facts");
    assert_eq!(
        (ev[0].activity, f.error.as_deref(), f.path.as_str()),
        (Activity::Delete, Some("EISDIR"), &*canonical(&sub))
    );
}

#[test]
fn write_trunc_open_is_reported_and_read_only_open_is_not() {
    let _serial = serial();
    if helper().is_none() {
        return;
    }
    let dir = temp_dir("flags");
    let file = dir.path().join("data");
    fs::write(&file, "x").expect("write");
    let path = file.to_str().expect("utf-8");
    let Some(running) = start(FileEbpfConfig::default()) else { return };
    let (trunc_pid, out) = run_helper(false, &["openat", path, &format!("{:o}", O_WRONLY | O_TRUNC)]);
    assert_eq!(out, "openat 3");
    let (read_pid, out) = run_helper(false, &["openat", path, "0"]);
    assert_eq!(out, "openat 3");
    let (creat2_pid, out) =
        run_helper(false, &["openat2", &format!("{path}.new"), &format!("{:o}", O_WRONLY | O_CREAT | 0o200)]);
    assert_eq!(out, "openat2 3");
    let stopped = running.stop();
    assert_no_losses(&stopped);

    let trunc = of_pid(&stopped.events, trunc_pid);
    // The exec of the helper (the loader opens libraries read-only) must not show up either: exactly one event.
    assert_eq!(trunc.len(), 1, "{trunc:#?}");
    let f = trunc[0].file.as_ref().expect("file facts");
    assert_eq!((trunc[0].activity, f.path.as_str()), (Activity::Open, &*canonical(&file)));
    let flags = f.flags.expect("open flags");
    assert_eq!(flags & (O_WRONLY | O_TRUNC), O_WRONLY | O_TRUNC, "flags {flags:o}");
    assert_eq!((f.error.as_deref(), f.mode), (None, None), "success; no O_CREAT, so no mode");
    assert!(of_pid(&stopped.events, read_pid).is_empty(), "a read-only open emits nothing");

    let created = of_pid(&stopped.events, creat2_pid);
    assert_eq!(created.len(), 1, "openat2 O_CREAT|O_EXCL: {created:#?}");
    let f = created[0].file.as_ref().expect("file facts");
    assert_eq!((created[0].activity, f.mode), (Activity::Create, Some(0o600)));
    assert_eq!(f.path, format!("{}.new", canonical(&file)));
}

#[test]
fn rename_exchange_carries_its_flag_and_a_setuid_chmod_its_mode() {
    let _serial = serial();
    if helper().is_none() {
        return;
    }
    let dir = temp_dir("rename");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    fs::write(&a, "a").expect("write a");
    fs::write(&b, "b").expect("write b");
    let Some(running) = start(FileEbpfConfig::default()) else { return };
    let (xchg_pid, out) = run_helper(
        false,
        &["renameat2", a.to_str().expect("utf-8"), b.to_str().expect("utf-8"), &RENAME_EXCHANGE.to_string()],
    );
    assert_eq!(out, "renameat2 0");
    let c = dir.path().join("c");
    let (plain_pid, out) =
        run_helper(false, &["renameat2", a.to_str().expect("utf-8"), c.to_str().expect("utf-8"), "0"]);
    assert_eq!(out, "renameat2 0");
    let (chmod_pid, out) = run_helper(false, &["fchmodat", b.to_str().expect("utf-8"), "4755"]);
    assert_eq!(out, "fchmodat 0");
    let stopped = running.stop();
    assert_no_losses(&stopped);

    let (a, b) = (canonical(dir.path()) + "/a", canonical(dir.path()) + "/b");
    let xchg = of_pid(&stopped.events, xchg_pid);
    assert_eq!(xchg.len(), 1, "{xchg:#?}");
    let f = xchg[0].file.as_ref().expect("file facts");
    assert_eq!(xchg[0].activity, Activity::Rename);
    assert_eq!((f.path.as_str(), f.new_path.as_deref()), (a.as_str(), Some(b.as_str())));
    assert_eq!(f.flags, Some(RENAME_EXCHANGE));
    assert!(of_pid(&stopped.events, plain_pid).is_empty(), "a plain rename is fanotify's to report");

    let chmod = of_pid(&stopped.events, chmod_pid);
    assert_eq!(chmod.len(), 1, "{chmod:#?}");
    let f = chmod[0].file.as_ref().expect("file facts");
    assert_eq!((chmod[0].activity, f.mode, f.error.as_deref()), (Activity::Chmod, Some(0o4755), None));
}

#[test]
fn relative_paths_are_made_absolute_from_cwd_and_dirfd() {
    let _serial = serial();
    if helper().is_none() {
        return;
    }
    let dir = temp_dir("relative");
    let sub = dir.path().join("sub");
    fs::create_dir(&sub).expect("mkdir");
    let dir_s = dir.path().to_str().expect("utf-8");
    let flags = format!("{:o}", O_WRONLY | O_CREAT | O_TRUNC);
    let Some(running) = start(FileEbpfConfig::default()) else { return };
    let (cwd_pid, out) = run_helper(false, &["-C", dir_s, "openat", "./sub/../rel-file", &flags]);
    assert_eq!(out, "openat 3");
    let (dirfd_pid, out) = run_helper(false, &["dirat", sub.to_str().expect("utf-8"), "in-sub", &flags]);
    assert_eq!(out, "dirat 4");
    let stopped = running.stop();
    assert_no_losses(&stopped);

    let ev = of_pid(&stopped.events, cwd_pid);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    // `.` is dropped, `..` kept (it could cross a symlink): the path the caller named, anchored at its cwd.
    assert_eq!(ev[0].file.as_ref().map(|f| f.path.clone()), Some(format!("{}/sub/../rel-file", canonical(dir.path()))));
    let ev = of_pid(&stopped.events, dirfd_pid);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(ev[0].file.as_ref().map(|f| f.path.clone()), Some(format!("{}/in-sub", canonical(&sub))));
    assert!(!ev[0].process.partial);
}

#[test]
fn the_agents_own_calls_never_appear() {
    let _serial = serial();
    let dir = temp_dir("own");
    let Some(running) = start(FileEbpfConfig { failures: FailureFilter::All, all_successes: true }) else { return };
    // Writes, truncations, a setuid chmod, an exchange-free rename and a failed open, all by this (the agent's)
    // process, from another thread than the source's.
    let file = dir.path().join("own");
    fs::write(&file, "x").expect("write");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o4755)).expect("chmod");
    fs::rename(&file, dir.path().join("own2")).expect("rename");
    assert!(fs::File::open(dir.path().join("missing")).is_err());
    let stopped = running.stop();
    let me = std::process::id();
    let own: Vec<&Event> = of_pid(&stopped.events, me);
    assert!(own.is_empty(), "the agent's own calls are skipped in the kernel: {own:#?}");
}

/// The in-kernel filter under load: 100,000 successful read-only opens make no record, and their cost with the
/// sensor attached is compared to the same storm without it (3 alternating runs; medians printed).
#[test]
fn read_only_open_storm_emits_nothing_and_its_overhead_is_reported() {
    const OPENS: &str = "100000";
    let _serial = serial();
    if helper().is_none() || !FileEbpf::probe().available {
        eprintln!("skipping: helper or file/ebpf unavailable");
        return;
    }
    let dir = temp_dir("storm");
    let file = dir.path().join("target");
    fs::write(&file, "x").expect("write");
    let path = file.to_str().expect("utf-8");
    let storm = || -> (u32, f64) {
        let t = Instant::now();
        let (pid, out) = run_helper(false, &["storm", path, OPENS]);
        assert!(out.starts_with("storm 100000 "), "{out}");
        (pid, t.elapsed().as_secs_f64())
    };
    storm(); // warm caches
    let (mut base, mut with) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        base.push(storm().1);
        let running = start(FileEbpfConfig::default()).expect("probe said available");
        let (pid, secs) = storm();
        with.push(secs);
        let stopped = running.stop();
        assert_no_losses(&stopped);
        let events = of_pid(&stopped.events, pid);
        assert!(events.is_empty(), "read-only opens are filtered in the kernel: {} events", events.len());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (b, w) = (median(&mut base), median(&mut with));
    eprintln!(
        "open storm ({OPENS} read-only opens): no sensor {b:.3}s, file/ebpf {w:.3}s, ratio {:.2}x (runs: {base:?} vs \
         {with:?})",
        w / b
    );
}
