//! The fanotify file backend against the real kernel: child processes do file work in a temporary directory (on the
//! root ext4 and on a tmpfs the test mounts) while the source streams into a pipeline; the tests check exactly what
//! came out for that directory. Runs as root; when `probe()` says the backend cannot run here, each test prints why
//! and returns.
//!
//! Workloads run in child processes: the source drops the agent's own events, and here the test process is the
//! agent. The tests take a shared lock, because every group sees every file event on the machine.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use ringwatch_core::{Activity, Domain, Event, Mode, Source, SourceKind};
use ringwatch_domains::file::fanotify::{FileFanotify, FileFanotifyConfig, NAME};

static SERIAL: Mutex<()> = Mutex::new(());

/// The probe, once per test binary (it marks every filesystem to count them).
fn available() -> bool {
    static PROBE: OnceLock<(bool, String)> = OnceLock::new();
    let (ok, detail) = PROBE.get_or_init(|| {
        let p = FileFanotify::probe();
        (p.available, p.detail)
    });
    if !ok {
        eprintln!("skipping: file/fanotify unavailable here: {detail}");
    }
    *ok
}

/// The fanotify source running into an in-memory pipeline (the shared test harness).
struct Capture(common::Running);

/// What a stopped capture left.
struct Stopped {
    events: Vec<Event>,
    /// (queue_full, lost_upstream, malformed) of the source.
    losses: (u64, u64, u64),
}

impl Capture {
    fn start(cfg: &FileFanotifyConfig) -> Capture {
        let source = FileFanotify::start(cfg).expect("probe said available, so start works");
        assert_eq!(source.name(), NAME);
        Capture(common::Running::start(source, 1 << 18))
    }

    /// Waits until some event satisfies `pred` (true) or `timeout` passes (false).
    fn wait_for(&self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> bool {
        self.0.wait_for(timeout, pred).is_some()
    }

    fn stop(self) -> Stopped {
        let stopped = self.0.stop();
        assert!(stopped.source_stopped_in < Duration::from_secs(2), "run returns soon after shutdown");
        Stopped { events: stopped.events, losses: stopped.losses.get(NAME).copied().unwrap_or_default() }
    }
}

/// A temporary directory under /tmp (the root ext4 here), canonical.
fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("rw-fan-{tag}-")).tempdir_in("/tmp").expect("temp dir")
}

fn canonical(p: &Path) -> String {
    fs::canonicalize(p).expect("canonical path").display().to_string()
}

/// File events about paths under `prefix`: (activity, path, new_path, pid).
fn under(events: &[Event], prefix: &str) -> Vec<(Activity, String, Option<String>, u32)> {
    let inside = |p: &str| p.strip_prefix(prefix).is_some_and(|r| r.is_empty() || r.starts_with('/'));
    events
        .iter()
        .filter(|e| e.domain == Domain::File)
        .filter_map(|e| {
            let f = e.file.as_ref()?;
            (inside(&f.path) || f.new_path.as_deref().is_some_and(inside))
                .then(|| (e.activity, f.path.clone(), f.new_path.clone(), e.process.pid))
        })
        .collect()
}

fn run_child(cmd: &mut Command) -> u32 {
    let mut child = cmd.spawn().expect("spawn child");
    let pid = child.id();
    assert!(child.wait().expect("wait child").success(), "child {cmd:?} failed");
    pid
}

/// One process: create a (write "hi"), rename a -> b, delete b.
fn perl_create_write_rename_delete(dir: &Path) -> u32 {
    run_child(Command::new("perl").current_dir(dir).args([
        "-e",
        r#"open(F, ">", "a") or die; print F "hi\n"; close(F) or die; rename("a", "b") or die; unlink("b") or die;"#,
    ]))
}

fn expect_sequence(events: &[Event], dir: &str, pid: u32) {
    let got = under(events, dir);
    let a = format!("{dir}/a");
    let b = format!("{dir}/b");
    assert_eq!(
        got,
        vec![
            (Activity::Create, a.clone(), None, pid),
            (Activity::Write, a.clone(), None, pid),
            (Activity::Rename, a, Some(b.clone()), pid),
            (Activity::Delete, b, None, pid),
        ],
        "exactly create, write, rename, delete by the child"
    );
    for e in events.iter().filter(|e| e.domain == Domain::File) {
        assert_eq!((e.backend.mode, e.backend.source), (Mode::Kernel, SourceKind::Fanotify));
        assert!(e.trusted);
    }
}

/// Compiled `tests/data/file_helper.c`.
fn helper() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let [out] = common::build_c_helpers("file-fanotify", [(&["-O1", "-Wall"], "file_helper.c", "file_helper")])?;
        Some(out)
    })
    .as_deref()
}

/// A tmpfs mounted on `dir/mnt` for the life of the value.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path) -> Tmpfs {
        let path = dir.join("mnt");
        fs::create_dir(&path).expect("mkdir mnt");
        nix::mount::mount(Some("tmpfs"), &path, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=64m"))
            .expect("mount tmpfs");
        Tmpfs { path }
    }

    fn unmount(&mut self) -> nix::Result<()> {
        let r = nix::mount::umount(&self.path);
        if r.is_ok() {
            self.path = PathBuf::new();
        }
        r
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

#[test]
fn probe_says_what_it_uses_or_why_not() {
    let p = FileFanotify::probe();
    assert_eq!((p.domain, p.mode, p.source), (Domain::File, Mode::Kernel, SourceKind::Fanotify));
    eprintln!("probe: {p}");
    if p.available {
        assert!(p.detail.starts_with("fanotify FID+DFID_NAME, "), "{}", p.detail);
        assert!(p.detail.contains("filesystems marked"), "{}", p.detail);
        assert!(p.detail.contains("skipped: "), "{}", p.detail);
    } else {
        assert!(!p.detail.is_empty());
    }
}

#[test]
fn create_write_rename_delete_on_ext4_are_one_event_each_in_order() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !available() {
        return;
    }
    let dir = temp_dir("seq");
    let cap = Capture::start(&FileFanotifyConfig::default());
    let pid = perl_create_write_rename_delete(dir.path());
    let out = cap.stop();
    expect_sequence(&out.events, &canonical(dir.path()), pid);
    assert_eq!(out.losses.2, 0, "nothing malformed");
}

#[test]
fn files_events_narrows_the_marks_to_the_activities_asked_for() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !available() {
        return;
    }
    let dir = temp_dir("narrow");
    let cfg =
        FileFanotifyConfig { events: Some(vec![Activity::Create, Activity::Delete]), ..FileFanotifyConfig::default() };
    let cap = Capture::start(&cfg);
    let pid = perl_create_write_rename_delete(dir.path());
    // A file that stays, then its chmod and an open (by a child: the source ignores its own process).
    run_child(Command::new("sh").current_dir(dir.path()).args(["-c", "echo x > kept; chmod 600 kept; cat kept"]));
    let kept = dir.path().join("kept");
    let out = cap.stop();
    let d = canonical(dir.path());
    let kept = canonical(&kept);
    let got: Vec<_> = under(&out.events, &d).into_iter().map(|(a, p, n, _)| (a, p, n)).collect();
    assert_eq!(
        got,
        vec![
            (Activity::Create, format!("{d}/a"), None),
            (Activity::Delete, format!("{d}/b"), None),
            (Activity::Create, kept, None),
        ],
        "only creates and deletes: no write, rename, chmod or open (child pid {pid})"
    );
}

#[test]
fn create_write_rename_delete_on_a_tmpfs_are_one_event_each_in_order() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !available() {
        return;
    }
    let dir = temp_dir("tmpfs");
    let mut tmpfs = Tmpfs::mount(dir.path());
    let cap = Capture::start(&FileFanotifyConfig::default());
    let pid = perl_create_write_rename_delete(&tmpfs.path);
    let out = cap.stop();
    expect_sequence(&out.events, &canonical(&tmpfs.path), pid);
    tmpfs.unmount().expect("umount after the source stopped");
}

#[test]
fn a_tmpfs_mounted_while_running_is_marked_and_can_be_unmounted() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !available() {
        return;
    }
    let dir = temp_dir("late");
    let cap = Capture::start(&FileFanotifyConfig::default());
    let mut tmpfs = Tmpfs::mount(dir.path());
    let mnt = canonical(&tmpfs.path);
    // The mount-table notification arrives within one poll; probe files until one is seen.
    let mut seen = false;
    for i in 0..30 {
        let name = format!("probe-{i}");
        run_child(Command::new("sh").current_dir(&tmpfs.path).args(["-c", &format!(": > {name}")]));
        let path = format!("{mnt}/{name}");
        if cap.wait_for(Duration::from_millis(100), |e| e.file.as_ref().is_some_and(|f| f.path == path)) {
            seen = true;
            break;
        }
    }
    // The source holds no descriptor on the filesystem: umount works while it runs.
    tmpfs.unmount().expect("umount while the source runs (no EBUSY)");
    let out = cap.stop();
    assert!(seen, "a create on the new tmpfs was reported: {:?}", under(&out.events, &mnt));
}

#[test]
fn a_write_through_a_shared_mapping_is_a_write_event() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !available() {
        return;
    }
    let Some(helper) = helper() else { return };
    let dir = temp_dir("mmap");
    let file = dir.path().join("mapped");
    fs::write(&file, "0123456789").expect("seed file");
    let cap = Capture::start(&FileFanotifyConfig::default());
    let pid = run_child(Command::new(helper).arg("mmap-write").arg(&file));
    let out = cap.stop();
    assert_eq!(fs::read(&file).expect("read back"), b"MMAP456789");
    let path = canonical(&file);
    let got = under(&out.events, &canonical(dir.path()));
    assert_eq!(
        got,
        vec![(Activity::Open, path.clone(), None, pid), (Activity::Write, path, None, pid)],
        "the open and one write (from FAN_CLOSE_WRITE: a mapping raises no FAN_MODIFY)"
    );
}

#[test]
fn chmod_exec_and_open_are_reported_with_inode_and_dev() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !available() {
        return;
    }
    let dir = temp_dir("cxo");
    let file = dir.path().join("data");
    fs::write(&file, "data").expect("seed file");
    let binary = dir.path().join("rw-true");
    fs::copy("/bin/true", &binary).expect("copy /bin/true");
    let cap = Capture::start(&FileFanotifyConfig::default());
    let chmod = run_child(Command::new("chmod").arg("600").arg(&file));
    let exec = run_child(&mut Command::new(&binary));
    let cat = run_child(Command::new("cat").arg(&file).stdout(std::process::Stdio::null()));
    let out = cap.stop();
    let (f, b) = (canonical(&file), canonical(&binary));
    let got = under(&out.events, &canonical(dir.path()));
    assert_eq!(
        got,
        vec![
            (Activity::Chmod, f.clone(), None, chmod),
            (Activity::Exec, b, None, exec),
            (Activity::Open, f.clone(), None, cat),
        ]
    );
    let meta = fs::metadata(&file).expect("stat");
    for e in out.events.iter().filter(|e| e.file.as_ref().is_some_and(|i| i.path == f)) {
        let info = e.file.as_ref().expect("file info");
        assert_eq!(info.inode, Some(meta.ino()), "inode decoded from the ext4 handle");
        assert_eq!(info.dev, Some(meta.dev()));
    }
}

#[test]
fn inode_numbers_on_tmpfs_match_stat() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !available() {
        return;
    }
    let dir = temp_dir("ino");
    let tmpfs = Tmpfs::mount(dir.path());
    let file = tmpfs.path.join("f");
    fs::write(&file, "x").expect("seed");
    let cap = Capture::start(&FileFanotifyConfig::default());
    run_child(Command::new("chmod").arg("600").arg(&file));
    let out = cap.stop();
    let meta = fs::metadata(&file).expect("stat");
    let path = canonical(&file);
    let e = out.events.iter().find(|e| e.file.as_ref().is_some_and(|i| i.path == path)).expect("chmod event");
    let info = e.file.as_ref().expect("file info");
    assert_eq!((info.inode, info.dev), (Some(meta.ino()), Some(meta.dev())));
}

#[test]
fn excluded_paths_produce_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !available() {
        return;
    }
    let dir = temp_dir("excl");
    let agent_dir = dir.path().join("agent");
    fs::create_dir(&agent_dir).expect("mkdir agent");
    let out_file = dir.path().join("out.jsonl");
    fs::write(&out_file, "").expect("out file");
    let cfg = FileFanotifyConfig {
        agent_paths: vec![agent_dir.clone(), out_file.clone()],
        exclude_globs: vec!["**/*.tmpx".into()],
        ..FileFanotifyConfig::default()
    };
    let cap = Capture::start(&cfg);
    let pid = run_child(Command::new("sh").current_dir(dir.path()).args([
        "-c",
        "mkdir agent/sub && echo a > agent/a && echo b > agent/sub/b && echo o >> out.jsonl && echo t > x.tmpx \
         && echo k > kept",
    ]));
    let out = cap.stop();
    let kept = format!("{}/kept", canonical(dir.path()));
    assert_eq!(
        under(&out.events, &canonical(dir.path())),
        vec![(Activity::Create, kept.clone(), None, pid), (Activity::Write, kept, None, pid)],
        "only the file outside the agent's paths and the glob"
    );
}

#[test]
fn over_the_rate_limit_events_and_dropped_counts_add_up_exactly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !available() {
        return;
    }
    let Some(helper) = helper() else { return };
    const FILES: u64 = 10_000;
    let dir = temp_dir("rate");
    let cfg = FileFanotifyConfig { max_events_per_pid: 1_000, ..FileFanotifyConfig::default() };
    let cap = Capture::start(&cfg);
    let pid = run_child(Command::new(helper).arg("mknod-many").arg(dir.path()).arg(FILES.to_string()));
    let out = cap.stop();
    let creates = under(&out.events, &canonical(dir.path()));
    assert!(creates.iter().all(|(a, _, _, p)| *a == Activity::Create && *p == pid));
    let mut summaries: BTreeMap<u32, u64> = BTreeMap::new();
    for e in out.events.iter().filter(|e| e.domain == Domain::Sensor && e.activity == Activity::Drop) {
        let s = e.sensor.as_ref().expect("sensor info");
        if s.message.starts_with("rate limit") {
            assert_eq!(s.component.as_deref(), Some(NAME));
            *summaries.entry(e.process.pid).or_default() += s.count.expect("a count");
        }
    }
    let dropped = summaries.get(&pid).copied().unwrap_or(0);
    eprintln!(
        "rate limit 1000/s: {} create events + {dropped} dropped for {FILES} files; losses {:?}",
        creates.len(),
        out.losses
    );
    assert_eq!(out.losses.1, 0, "no kernel queue overflow (the equation below only holds without one)");
    assert_eq!(out.losses.0, 0, "no pipeline queue drops");
    assert!(dropped > 0, "the limit was hit");
    // The child's own start-up (loader opens, exec) shares its first window with the creates.
    let child_events = out.events.iter().filter(|e| e.domain == Domain::File && e.process.pid == pid).count();
    assert!(child_events >= 1_000, "at least one full window passed: {child_events} events of the child");
    assert_eq!(creates.len() as u64 + dropped, FILES, "every create was either sent or counted as dropped");
}
