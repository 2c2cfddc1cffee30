//! `ringwatch sandbox --mode kernel`: run a command with its writes under chosen directories diverted into an
//! overlayfs upper layer, so the real directories stay untouched.
//!
//! How: the `ringwatch sandbox` process itself calls `unshare(CLONE_NEWNS)`, marks `/` recursively as a slave (mounts
//! made inside never propagate back to the host; host mounts made later still show inside), mounts an overlay on
//! each `--dir` (lower = the real directory, upper/work = the sandbox's state), re-enters its working directory so a
//! relative path resolves through the overlay, then spawns CMD with a plain `std::process::Command` and waits. CMD
//! inherits the namespace; the host's mount table never changes, and the namespace (with its mounts) is freed when
//! the last process in it exits.
//!
//! Why not a re-executed helper child: `unshare(CLONE_NEWNS)` only moves the calling thread, and this process has
//! nothing else to do but wait, so it can move itself (it is single-threaded at that point). That needs no
//! `pre_exec` (unsafe, and restricted to async-signal-safe code), no hidden subcommand and no pipe to carry mount
//! errors back: a failed mount is an ordinary `Result` here, mapped to exit 2 or 3 with the kernel's own reason
//! (read from `/dev/kmsg`). The process stays as CMD's parent to pass its exit status on (128+signal when killed),
//! to forward SIGTERM/SIGHUP, and to hold the sandbox's lock for exactly as long as CMD runs.
//!
//! What it does not contain: writes outside the `--dir`s; files CMD had open before it started (inherited
//! descriptors); mounts below a `--dir` (overlayfs does not cross them: inside, the directory underneath shows and
//! writes to it land in the upper layer); processes CMD leaves running after it exits keep the namespace alive but
//! no longer hold the lock.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::statfs::{self, FsType};
use nix::sys::wait::{Id, WaitPidFlag};
use nix::unistd::Pid;
use signal_hook::iterator::Signals;

use super::state::{self, Layer, Manifest, SandboxDir};
use crate::{MissingCapability, UsageError};

/// Mount options every sandbox overlay gets besides its layers: no redirects or metacopy (so the upper layer only
/// ever holds plain copies, whiteouts and opaque directories, which `diff` understands), no index (re-entering
/// after the real directory was replaced must not fail with ESTALE).
const OVERLAY_FEATURES: &str = "redirect_dir=off,metacopy=off,index=off";
/// Longest mount data the kernel accepts (one page, including the NUL).
const MAX_MOUNT_DATA: usize = 4095;
/// Set in CMD's environment to the sandbox's name.
pub const ENV_SANDBOX: &str = "RINGWATCH_SANDBOX";

/// What one kernel-mode run needs, already parsed.
pub struct RunRequest<'a> {
    /// The sandbox's name.
    pub name: &'a str,
    /// `--dir` as given.
    pub dirs: &'a [PathBuf],
    /// Drop earlier changes first.
    pub fresh: bool,
    /// Where sandboxes live.
    pub state_root: &'a Path,
    /// CMD and its arguments (not empty).
    pub command: &'a [OsString],
}

/// Runs CMD in the sandbox; returns the exit status to exit with.
pub fn run(req: &RunRequest<'_>) -> Result<u8> {
    let given = resolve_dirs(req.dirs)?;
    super::require_root()?;
    overlay_available()?;
    let root = state::open_root(req.state_root)?;
    if statfs::statfs(&root).map(|s| s.filesystem_type()) == Ok(statfs::OVERLAYFS_SUPER_MAGIC) {
        bail!(MissingCapability(format!(
            "the state dir {} is on overlayfs, which cannot hold an overlay's upper layer; pass --state-dir on \
             another filesystem (ext4, xfs, btrfs, tmpfs)",
            root.display()
        )));
    }
    check_dirs(&given, &root)?;

    let sandbox = SandboxDir::new(&root, req.name);
    if given.is_empty() && !sandbox.exists() {
        bail!(UsageError(format!(
            "sandbox {} does not exist yet: give the directories to sandbox with --dir PATH",
            req.name
        )));
    }
    let signals = handle_signals()?;
    sandbox.create()?;
    let lock = sandbox.lock()?;
    let previous = if sandbox.exists() { Some(sandbox.manifest()?) } else { None };
    let prepared = prepare(&sandbox, previous.as_ref(), &given, req.fresh, MODE).and_then(|layers| {
        warn_about_submounts(&layers.iter().map(|l| l.dir.clone()).collect::<Vec<_>>());
        enter_namespace(&layers)
    });
    if let Err(err) = prepared {
        // A sandbox that this run created and that never ran is not left behind.
        if previous.is_none() {
            let _ = sandbox.remove();
        }
        return Err(err);
    }
    tracing::debug!(sandbox = req.name, "sandbox mounted; starting the command");
    let status = run_command(req.name, req.command, &[], signals);
    drop(lock);
    status
}

/// The manifest's name for this mode.
const MODE: &str = "kernel";

/// Settles the directories (recorded + given), applies `--fresh`, writes the manifest (with `mode`) and creates
/// the layers.
pub(super) fn prepare(
    sandbox: &SandboxDir,
    previous: Option<&Manifest>,
    given: &[PathBuf],
    fresh: bool,
    mode: &str,
) -> Result<Vec<Layer>> {
    let dirs = plan_dirs(previous, given, fresh, mode)?;
    if fresh {
        sandbox.clear_layers()?;
    }
    sandbox.write_manifest(&Manifest {
        version: 1,
        name: sandbox.name.clone(),
        mode: mode.to_owned(),
        created_unix: previous.filter(|_| !fresh).map_or_else(state::now_unix, |m| m.created_unix),
        dirs,
    })?;
    let layers = sandbox.layers(&sandbox.manifest()?.dirs);
    sandbox.prepare_layers(&layers)?;
    Ok(layers)
}

/// Canonical `--dir`s, every problem reported at once: missing, not a directory, not UTF-8 (the manifest is JSON),
/// `/`, given twice, nested in each other.
pub fn resolve_dirs(given: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut errors = Vec::new();
    let mut out: Vec<(PathBuf, &Path)> = Vec::new();
    for dir in given {
        let canonical = match dir.canonicalize() {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                errors.push(format!("--dir {}: no such directory", dir.display()));
                continue;
            }
            Err(e) => {
                errors.push(format!("--dir {}: {e}", dir.display()));
                continue;
            }
        };
        if !canonical.is_dir() {
            errors.push(format!("--dir {}: not a directory", dir.display()));
        } else if canonical.to_str().is_none() {
            errors.push(format!("--dir {}: the path is not valid UTF-8", dir.display()));
        } else if canonical == Path::new("/") {
            errors
                .push("--dir /: the whole file system cannot be sandboxed; name the directories CMD writes to".into());
        } else if let Some((_, first)) = out.iter().find(|(c, _)| *c == canonical) {
            errors.push(format!("--dir {} given twice (also as {})", canonical.display(), first.display()));
        } else {
            out.push((canonical, dir));
        }
    }
    for (i, (a, _)) in out.iter().enumerate() {
        for (b, _) in &out[i + 1..] {
            if a.starts_with(b) || b.starts_with(a) {
                let (outer, inner) = if a.starts_with(b) { (b, a) } else { (a, b) };
                errors.push(format!(
                    "--dir {} is inside --dir {}: sandbox only the outer one (it covers the inner)",
                    inner.display(),
                    outer.display()
                ));
            }
        }
    }
    if !errors.is_empty() {
        bail!(UsageError(errors.join("\n")));
    }
    let mut dirs: Vec<PathBuf> = out.into_iter().map(|(c, _)| c).collect();
    dirs.sort();
    Ok(dirs)
}

/// Problems only known with the host's file systems: a `--dir` that holds or lies in the state dir, or that is on a
/// pseudo file system overlayfs cannot use as a lower layer.
pub(super) fn check_dirs(dirs: &[PathBuf], root: &Path) -> Result<()> {
    let mut errors = Vec::new();
    for dir in dirs {
        if root.starts_with(dir) || dir.starts_with(root) {
            errors.push(format!(
                "--dir {}: overlaps the sandbox state dir {} (an overlay's layers must lie outside it); choose \
                 another --dir or --state-dir",
                dir.display(),
                root.display()
            ));
            continue;
        }
        match statfs::statfs(dir) {
            Ok(s) => {
                if let Some(fs) = unusable_lower(s.filesystem_type()) {
                    errors.push(format!(
                        "--dir {}: it is on {fs}, which overlayfs cannot use as a lower layer",
                        dir.display()
                    ));
                }
            }
            Err(e) => errors.push(format!("--dir {}: statfs: {}", dir.display(), e.desc())),
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(UsageError(errors.join("\n")).into()) }
}

/// The pseudo file systems whose directories overlayfs refuses (or that make no sense) as a lower layer.
fn unusable_lower(fs: FsType) -> Option<&'static str> {
    [
        (statfs::PROC_SUPER_MAGIC, "procfs"),
        (statfs::SYSFS_MAGIC, "sysfs"),
        (statfs::CGROUP_SUPER_MAGIC, "cgroupfs"),
        (statfs::CGROUP2_SUPER_MAGIC, "cgroup2"),
        (statfs::DEVPTS_SUPER_MAGIC, "devpts"),
        (statfs::DEBUGFS_MAGIC, "debugfs"),
        (statfs::TRACEFS_MAGIC, "tracefs"),
        (statfs::SECURITYFS_MAGIC, "securityfs"),
        (statfs::BPF_FS_MAGIC, "bpffs"),
        (statfs::SELINUX_MAGIC, "selinuxfs"),
        (statfs::SMACK_MAGIC, "smackfs"),
    ]
    .into_iter()
    .find(|(magic, _)| *magic == fs)
    .map(|(_, name)| name)
}

/// The directories of this run: the recorded ones plus the new ones (`--fresh` with `--dir`: only the new ones).
fn plan_dirs(previous: Option<&Manifest>, given: &[PathBuf], fresh: bool, mode: &str) -> Result<Vec<PathBuf>> {
    let Some(previous) = previous else { return Ok(given.to_vec()) };
    if previous.mode != mode {
        bail!(UsageError(format!(
            "sandbox {} was made in {} mode and cannot be entered in {mode} mode (its layer holds what {} mode \
             wrote); re-enter it with --mode {}, discard it, or pick another --name",
            previous.name, previous.mode, previous.mode, previous.mode
        )));
    }
    if fresh && !given.is_empty() {
        return Ok(given.to_vec());
    }
    let mut errors = Vec::new();
    for dir in &previous.dirs {
        if !dir.is_dir() {
            errors.push(format!(
                "sandbox {}: its directory {} no longer exists; recreate it, or start over with --fresh --dir",
                previous.name,
                dir.display()
            ));
        }
    }
    let mut dirs = previous.dirs.clone();
    for new in given {
        if dirs.contains(new) {
            continue;
        }
        if let Some(old) = dirs.iter().find(|old| old.starts_with(new) || new.starts_with(old)) {
            errors.push(format!(
                "--dir {} and the sandbox's --dir {} are nested; re-enter without it, or use --fresh",
                new.display(),
                old.display()
            ));
        } else {
            dirs.push(new.clone());
        }
    }
    if !errors.is_empty() {
        bail!(UsageError(errors.join("\n")));
    }
    dirs.sort();
    Ok(dirs)
}

/// Fails with exit 3 unless the kernel has overlayfs: listed in /proc/filesystems, or a loadable module (the first
/// mount loads it).
fn overlay_available() -> Result<()> {
    let listed = std::fs::read_to_string("/proc/filesystems")
        .map(|t| t.lines().any(|l| l.split_whitespace().last() == Some("overlay")))
        .unwrap_or(false);
    if listed {
        return Ok(());
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let module = Path::new("/lib/modules").join(release.trim()).join("kernel/fs/overlayfs");
    if module.is_dir() {
        return Ok(());
    }
    bail!(MissingCapability(
        "overlayfs is not available: `overlay` is not in /proc/filesystems and there is no overlay module to load \
         (CONFIG_OVERLAY_FS); kernel-mode sandboxes need it"
            .into()
    ))
}

/// Warns about mount points below a sandboxed directory: overlayfs does not cross them.
fn warn_about_submounts(dirs: &[PathBuf]) {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    for line in text.lines() {
        let Some(point) = line.split(' ').nth(4).map(unescape_mountinfo) else { continue };
        if let Some(dir) = dirs.iter().find(|d| point.starts_with(d) && point != **d) {
            tracing::warn!(
                "{} is a mount point inside --dir {}: the sandbox does not see what is mounted there (it shows the \
                 directory underneath; writes to it still land in the sandbox)",
                point.display(),
                dir.display()
            );
        }
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(v) = field.get(i + 1..i + 4).and_then(|s| u8::from_str_radix(s, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(<OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// The `mount(2)` data for one layer. Paths are escaped for overlayfs's option parser (`\` before `,`, `:`, `\`).
fn overlay_options(layer: &Layer) -> Result<Vec<u8>> {
    fn push_path(out: &mut Vec<u8>, key: &str, path: &Path) {
        out.extend_from_slice(key.as_bytes());
        for &b in path.as_os_str().as_bytes() {
            if matches!(b, b',' | b':' | b'\\') {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b',');
    }
    let mut data = Vec::new();
    push_path(&mut data, "lowerdir=", &layer.dir);
    push_path(&mut data, "upperdir=", &layer.upper);
    push_path(&mut data, "workdir=", &layer.work);
    data.extend_from_slice(OVERLAY_FEATURES.as_bytes());
    if data.len() > MAX_MOUNT_DATA {
        bail!(UsageError(format!(
            "--dir {}: the overlay's mount options would be {} bytes, over the kernel's limit of {MAX_MOUNT_DATA}; \
             use a shorter --dir or --state-dir",
            layer.dir.display(),
            data.len()
        )));
    }
    Ok(data)
}

/// Moves this process into a new mount namespace and mounts the overlays there.
fn enter_namespace(layers: &[Layer]) -> Result<()> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(|e| match e {
        Errno::EPERM => MissingCapability(
            "unshare(CLONE_NEWNS) was refused (EPERM): a sandbox needs CAP_SYS_ADMIN (seccomp or a container may \
             forbid it)"
                .into(),
        )
        .into(),
        e => anyhow::Error::new(e).context("unshare(CLONE_NEWNS)"),
    })?;
    nix::mount::mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)
        .context("making / a recursive slave in the sandbox's mount namespace")?;
    for layer in layers {
        let data = overlay_options(layer)?;
        let mut kernel_log = KernelLog::open();
        if let Err(errno) =
            nix::mount::mount(Some("ringwatch-sandbox"), &layer.dir, Some("overlay"), MsFlags::empty(), Some(&data[..]))
        {
            let said = kernel_log.overlay_lines();
            let reason = if said.is_empty() { format!("{errno}") } else { format!("{errno}; {}", said.join("; ")) };
            let dir = layer.dir.display();
            bail!(match errno {
                Errno::EPERM | Errno::EACCES => anyhow::Error::new(MissingCapability(format!(
                    "mounting an overlay on {dir} was refused ({reason}): a sandbox needs CAP_SYS_ADMIN"
                ))),
                Errno::ENODEV => MissingCapability(format!("overlayfs is not available ({reason})")).into(),
                _ if said.iter().any(|l| l.contains("upper") || l.contains("workdir")) => {
                    MissingCapability(format!(
                        "the kernel refused {} as an overlay upper layer ({reason}); pass --state-dir on a local \
                         filesystem such as ext4, xfs, btrfs or tmpfs",
                        layer.upper.display()
                    ))
                    .into()
                }
                _ => UsageError(format!(
                    "--dir {dir}: the kernel refused it as an overlay lower layer ({reason}); overlayfs stacks at \
                     most two levels, so a directory already inside an overlay (a container's root, a sandbox in a \
                     sandbox) may not work"
                ))
                .into(),
            });
        }
    }
    // A working directory inside a --dir still points at the real directory; resolving it again goes through the
    // overlay, so relative paths written by CMD are contained too.
    if let Ok(cwd) = std::env::current_dir() {
        let _ = std::env::set_current_dir(cwd);
    }
    Ok(())
}

/// New overlayfs lines in the kernel log (`/dev/kmsg`), which is where overlayfs explains an EINVAL.
struct KernelLog(Option<File>);

impl KernelLog {
    /// Positioned at the end of the log; `None` (and no explanation later) if it cannot be read.
    fn open() -> KernelLog {
        let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg").and_then(|mut f| {
            f.seek(SeekFrom::End(0))?;
            Ok(f)
        });
        KernelLog(file.ok())
    }

    /// Records written since `open` whose text starts with `overlayfs:` (one record per read).
    fn overlay_lines(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let Some(file) = self.0.as_mut() else { return lines };
        let mut buf = vec![0u8; 8192];
        for _ in 0..64 {
            let n = match file.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let record = String::from_utf8_lossy(&buf[..n]);
            let text = record.split_once(';').map_or("", |(_, t)| t).lines().next().unwrap_or("").trim();
            if let Some(rest) = text.strip_prefix("overlayfs:") {
                lines.push(format!("kernel: overlayfs: {}", rest.trim()));
            }
        }
        lines
    }
}

/// What the signal forwarder knows about CMD.
#[derive(Default)]
struct Forward {
    /// CMD's pid once spawned.
    child: Option<Pid>,
    /// Set (before reaping) once CMD has exited: its pid may be reused after that, so nothing is sent to it.
    exited: bool,
    /// A SIGTERM/SIGHUP that came before CMD was spawned.
    pending: Option<Signal>,
}

/// The signals a running sandbox handles, registered before its lock is taken: one that arrives while the
/// sandbox is being set up is queued and passed to CMD as soon as it runs (no thread is started before `unshare`).
pub(super) fn handle_signals() -> Result<Signals> {
    Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGQUIT,
    ])
    .context("installing signal handlers")
}

/// Spawns CMD, forwards SIGTERM and SIGHUP to it, and returns its exit status (128+signal if it was killed).
///
/// SIGINT and SIGQUIT only keep this process alive: from a terminal they reach CMD directly (same process group);
/// forwarding them too would deliver them twice. Handlers (not SIG_IGN) are used so that CMD, after exec, starts
/// with default dispositions.
pub(super) fn run_command(
    name: &str,
    command: &[OsString],
    env: &[(&str, OsString)],
    mut signals: Signals,
) -> Result<u8> {
    let forward = Arc::new(Mutex::new(Forward::default()));
    let shared = Arc::clone(&forward);
    std::thread::Builder::new()
        .name("sandbox-signals".into())
        .spawn(move || {
            for raw in signals.forever() {
                let Ok(sig) = Signal::try_from(raw) else { continue };
                if !matches!(sig, Signal::SIGTERM | Signal::SIGHUP) {
                    continue;
                }
                let mut f = shared.lock().unwrap_or_else(|p| p.into_inner());
                match f.child {
                    Some(pid) if !f.exited => {
                        let _ = nix::sys::signal::kill(pid, sig);
                    }
                    Some(_) => {}
                    None => f.pending = Some(sig),
                }
            }
        })
        .context("starting the signal forwarder")?;

    let (program, args) = command.split_first().context("no command")?;
    let spawned = std::process::Command::new(program)
        .args(args)
        .env(ENV_SANDBOX, name)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            eprintln!("ringwatch: sandbox: cannot run {}: {e}", Path::new(program).display());
            return Ok(if e.kind() == ErrorKind::NotFound { 127 } else { 126 });
        }
    };
    let pid = Pid::from_raw(i32::try_from(child.id()).context("child pid out of range")?);
    {
        let mut f = forward.lock().unwrap_or_else(|p| p.into_inner());
        f.child = Some(pid);
        if let Some(sig) = f.pending.take() {
            let _ = nix::sys::signal::kill(pid, sig);
        }
    }
    // Wait without reaping, mark it exited, then reap: the forwarder never signals a recycled pid.
    loop {
        match nix::sys::wait::waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).context("waiting for the command"),
        }
    }
    forward.lock().unwrap_or_else(|p| p.into_inner()).exited = true;
    let status = child.wait().context("reaping the command")?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(255),
        (None, None) => 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_problems_are_all_reported_at_once() {
        let tmp = tempfile::tempdir().expect("tmp");
        let a = tmp.path().join("a");
        std::fs::create_dir_all(a.join("inner")).expect("mkdir");
        std::fs::write(tmp.path().join("file"), "x").expect("write");
        let err = resolve_dirs(&[
            a.clone(),
            tmp.path().join("missing"),
            tmp.path().join("file"),
            a.join("."),
            a.join("inner"),
            PathBuf::from("/"),
        ])
        .expect_err("bad dirs");
        assert!(err.is::<UsageError>());
        let text = err.to_string();
        for needle in
            ["missing: no such directory", "file: not a directory", "given twice", "is inside --dir", "--dir /:"]
        {
            assert!(text.contains(needle), "{needle} not in {text}");
        }
    }

    #[test]
    fn options_escape_separators_in_paths() {
        let layer = Layer {
            dir: PathBuf::from("/tmp/a,b:c\\d"),
            upper: PathBuf::from("/s/-tmp-a/upper"),
            work: PathBuf::from("/s/-tmp-a/work"),
        };
        let data = overlay_options(&layer).expect("options");
        assert_eq!(
            String::from_utf8_lossy(&data),
            "lowerdir=/tmp/a\\,b\\:c\\\\d,upperdir=/s/-tmp-a/upper,workdir=/s/-tmp-a/work,redirect_dir=off,metacopy=off,index=off"
        );
    }

    #[test]
    fn recorded_dirs_are_kept_and_new_ones_added_unless_fresh() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir_all(a.join("x")).expect("mkdir");
        std::fs::create_dir_all(&b).expect("mkdir");
        let m =
            Manifest { version: 1, name: "t".into(), mode: "kernel".into(), dirs: vec![a.clone()], created_unix: 0 };
        assert_eq!(plan_dirs(Some(&m), &[], false, "kernel").expect("plan"), vec![a.clone()]);
        assert_eq!(
            plan_dirs(Some(&m), std::slice::from_ref(&b), false, "kernel").expect("plan"),
            vec![a.clone(), b.clone()]
        );
        assert_eq!(plan_dirs(Some(&m), std::slice::from_ref(&b), true, "kernel").expect("plan"), vec![b.clone()]);
        assert!(plan_dirs(Some(&m), &[a.join("x")], false, "kernel").is_err(), "nested in a recorded dir");
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo("/mnt/a\\040b"), PathBuf::from("/mnt/a b"));
        assert_eq!(unescape_mountinfo("/plain"), PathBuf::from("/plain"));
    }
}
