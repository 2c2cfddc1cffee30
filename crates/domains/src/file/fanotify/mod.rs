//! The file domain's kernel-mode monitor: fanotify filesystem marks with file-handle (FID) reporting.
//!
//! # What it does
//!
//! One notification group ([`notify`]) reports create, delete, rename, attribute change, modify, close-after-write,
//! open and open-for-exec on every local filesystem ([`marks`]: one `FAN_MARK_FILESYSTEM` mark per superblock,
//! found in `/proc/self/mountinfo`, re-scanned when the mount table changes). Events carry directory handles and
//! entry names instead of descriptors ([`fid`] parses them); [`resolve`] turns handles into paths with a bounded
//! cache; [`reader`] maps kernel bits to activities (with one `write` per write session), applies exclusions and
//! the per-pid rate limit ([`noise`]) and sends `file` events with `process.pid` set; the pipeline enriches the rest.
//!
//! The policy's `files.events` ([`FileFanotifyConfig::events`]) narrows the marks to some activities (e.g.
//! `[create, delete, rename]`): an event the marks do not ask for is one the kernel never builds, and building
//! events in the writer's context is most of what the monitor costs a file storm (see the README's file benchmark).
//!
//! Reporting handles instead of descriptors matters for cost and safety: the kernel opens no file per event, the
//! agent can never hold a watched file open, and no event needs a `close`.
//!
//! When the policy has file rules that need a verdict before the act (`deny` on open/exec, `sha256` checks,
//! `exec_trust`), a second, descriptor-based group of class `FAN_CLASS_CONTENT` runs beside it ([`perm`], with
//! [`hash`] for exec-time SHA-256 checks): see [`FileFanotify::start_with_permissions`]. It is started first and
//! answers from its own thread right away, so nothing the agent opens while it starts waits on it.
//!
//! # What it cannot see or tell
//!
//! - **Failed opens and open flags.** fanotify reports an open once it succeeded and says nothing of `O_TRUNC`,
//!   `O_APPEND` and the like; a denied or missing file leaves no event. The `file/ebpf` backend (syscall tracepoints,
//!   [`crate::file::ebpf`]) reports these beside this one.
//! - **What a rename replaced.** Renaming over an existing file reports the rename; the replaced file shows only as
//!   a link-count change without a name, which is not reported.
//! - **Exact repetitions.** The kernel merges an event into an identical one still queued (same pid, object,
//!   name): repeated opens or writes by one process that queue up before the agent reads them are one event.
//! - **Paths at event time.** Paths are resolved when the event is read (milliseconds later): a directory renamed in
//!   between shows its new name; a directory gone before it was ever resolved gives `?/NAME`.
//! - **Threads.** `process.pid` is the thread group; the thread is not reported.
//! - **Filesystems not marked** (pseudo, remote, FUSE, overlayfs, devtmpfs: see `probe`) and anything under
//!   `/proc` and `/sys`. A filesystem mounted while the agent runs is marked at the next mount-table change
//!   notification (well under a second later); events in that gap are missed.
//! - **Losses.** The kernel queue holds 16,384 events; when it overflows the kernel drops events and queues one
//!   overflow marker, counted as one lost event (the true number is unknown). Events over the per-pid rate limit are
//!   dropped and reported in one `sensor`/`drop` summary per pid per second with the exact count.

pub mod fid;
pub mod hash;
pub mod marks;
pub mod noise;
pub mod notify;
pub mod perm;
pub mod reader;
pub mod resolve;

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use ringwatch_core::compiled::FilePermissionPlan;
use ringwatch_core::{Activity, Decider, Domain, Mode, Probe, Source, SourceContext, SourceError, SourceKind};

use self::marks::{Candidate, Skipped};
use self::noise::{Exclusions, RateLimiter};
use self::notify::NotifyGroup;
use self::perm::{PermStats, PermissionGroup};
use self::reader::Reader;
use self::resolve::{MarkedFs, Resolver};

/// Backend name in logs, errors, loss counters and sensor events.
pub const NAME: &str = "file/fanotify";

/// Default per-pid rate limit (events per second).
pub const DEFAULT_MAX_EVENTS_PER_PID: u32 = 2_000;

/// Default number of directories the path cache holds.
pub const DEFAULT_DIR_CACHE_ENTRIES: usize = 8_192;

/// One `read` takes up to this much: at ~90 bytes per event, close to 3,000 events per system call.
const READ_BUF_BYTES: usize = 256 << 10;

/// Reads per wake-up before the loop looks at shutdown, the mount table and the rate-limit windows again.
const MAX_READS_PER_WAKE: usize = 64;

/// Poll timeout: how soon shutdown is noticed.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// After the first event of a quiet spell wakes the loop, it waits this long before reading, so the events of a
/// burst queue up (and identical ones merge) instead of waking the agent one by one. A waiter in `poll` costs the
/// acting process a wake-up per event, which measured here as the biggest single cost of a file storm (tmpfs,
/// 50,000 create/write/close/unlink: 2.0x with immediate reads, 1.5x with this delay). At most 10 ms of latency;
/// the kernel queue (16,384 events) holds far more than 10 ms of any storm measured here.
const BATCH_DELAY: Duration = Duration::from_millis(10);

/// How often ignore marks that could not be placed yet (the file did not exist) are retried.
const IGNORE_RETRY: Duration = Duration::from_secs(1);

/// What the file monitor needs to start.
#[derive(Debug, Clone)]
pub struct FileFanotifyConfig {
    /// The agent's own files and directories (its output file, store directory, spool directory): ignored in the
    /// kernel where possible and always in user space, so the agent does not watch itself write. Relative paths
    /// are taken from the current directory.
    pub agent_paths: Vec<PathBuf>,
    /// Path globs whose events are dropped (ringwatch glob syntax; fed by the policy file).
    pub exclude_globs: Vec<String>,
    /// Most events per second per process; the rest are counted in `sensor`/`drop` summaries. 0: no limit.
    pub max_events_per_pid: u32,
    /// Directories the path cache holds.
    pub dir_cache_entries: usize,
    /// The activities to monitor (the policy's `files.events`); `None`: all of them.
    pub events: Option<Vec<Activity>>,
}

impl Default for FileFanotifyConfig {
    fn default() -> Self {
        FileFanotifyConfig {
            agent_paths: Vec::new(),
            exclude_globs: Vec::new(),
            max_events_per_pid: DEFAULT_MAX_EVENTS_PER_PID,
            dir_cache_entries: DEFAULT_DIR_CACHE_ENTRIES,
            events: None,
        }
    }
}

/// The kernel file monitor (`backend.source = "fanotify"`, kernel mode). See the module documentation.
#[derive(Debug)]
pub struct FileFanotify {
    group: NotifyGroup,
    resolver: Resolver,
    exclusions: Exclusions,
    max_events_per_pid: u32,
    /// Agent paths whose ignore mark is not placed yet (they did not exist at start).
    pending_ignores: Vec<PathBuf>,
    /// Superblocks (`major:minor`) tried already, marked or not, so a mount-table change retries nothing.
    seen_devs: HashSet<(u32, u32)>,
    /// `/proc/self/mountinfo`, opened before the first scan: the kernel flags it with POLLPRI when the mount table
    /// changes after the open, so no mount between the scan and `run` goes unnoticed.
    mountinfo: Option<File>,
    /// The permission group, when the policy needs verdicts ([`FileFanotify::start_with_permissions`]).
    permission: Option<PermissionGroup>,
}

/// The marks placed on a group, and what was skipped.
struct Marked {
    filesystems: Vec<MarkedFs>,
    skipped: Vec<Skipped>,
    seen_devs: HashSet<(u32, u32)>,
}

impl FileFanotify {
    /// Whether the monitor can run here: creates a group (saying which rename reporting the kernel has), marks
    /// every eligible filesystem, then closes it again. The detail says what it uses, e.g. `fanotify FID+DFID_NAME,
    /// FAN_RENAME, 3 filesystems marked (ext4 /, tmpfs /dev/shm, ...); skipped: cgroup, proc, ... (14)`.
    pub fn probe() -> Probe {
        let unavailable = |why: String| Probe::unavailable(Domain::File, Mode::Kernel, SourceKind::Fanotify, why);
        if !crate::probe::is_root() {
            return unavailable("needs root (CAP_SYS_ADMIN for fanotify filesystem marks)".into());
        }
        let group = match NotifyGroup::open() {
            Ok(g) => g,
            Err(e) => return unavailable(init_reason(e)),
        };
        let marked = match mark_all(&group, &HashSet::new()) {
            Ok(m) => m,
            Err(e) => return unavailable(format!("reading /proc/self/mountinfo: {e}")),
        };
        if marked.filesystems.is_empty() {
            return unavailable(format!("no filesystem could be marked; skipped: {}", skipped_detail(&marked.skipped)));
        }
        let shown: Vec<String> =
            marked.filesystems.iter().take(4).map(|f| format!("{} {}", f.fstype, f.mount_point.display())).collect();
        let more = if marked.filesystems.len() > shown.len() { ", ..." } else { "" };
        let permission = match PermissionGroup::probe() {
            Ok(what) => format!("permission events: {what}"),
            Err(why) => format!("permission events unavailable: {why}"),
        };
        Probe::ok(
            Domain::File,
            Mode::Kernel,
            SourceKind::Fanotify,
            format!(
                "fanotify FID+DFID_NAME, {}, {} filesystems marked ({}{more}); skipped: {}; {permission}",
                group.renames.describe(),
                marked.filesystems.len(),
                shown.join(", "),
                marks::skipped_summary(&marked.skipped)
            ),
        )
    }

    /// Whether permission events (synchronous deny, exec-time hash checks) work here; the error says why not.
    pub fn probe_permissions() -> Result<String, String> {
        if !crate::probe::is_root() {
            return Err("needs root (CAP_SYS_ADMIN for fanotify permission events)".into());
        }
        PermissionGroup::probe()
    }

    /// Like [`FileFanotify::start`], plus the permission group when `plan` is not empty: it is created and marked
    /// first and answers at once from its own thread (asking `decider`), so a failure of the monitor afterwards
    /// drops it again (everything pending allowed). A plan the kernel cannot serve is an error
    /// ([`SourceError::Unsupported`] when permission events are missing): a policy that says `deny` must not run
    /// silently unenforced; `best` mode then falls back to user mode.
    pub fn start_with_permissions(
        cfg: &FileFanotifyConfig,
        plan: &FilePermissionPlan,
        decider: std::sync::Arc<dyn Decider>,
    ) -> Result<Self, SourceError> {
        if plan.is_empty() {
            return FileFanotify::start(cfg);
        }
        if !crate::probe::is_root() {
            return Err(SourceError::MissingPrivilege {
                backend: NAME,
                what: "root (CAP_SYS_ADMIN) for fanotify permission events".into(),
            });
        }
        let permission = PermissionGroup::start(plan, decider, cfg.max_events_per_pid)?;
        let mut me = FileFanotify::start(cfg)?;
        me.permission = Some(permission);
        Ok(me)
    }

    /// The permission group's counters (verdicts, timeouts, hash cache hits), when it runs.
    pub fn permission_stats(&self) -> Option<std::sync::Arc<PermStats>> {
        self.permission.as_ref().map(PermissionGroup::stats)
    }

    /// Creates the group, marks every eligible filesystem, places ignore marks on the agent's own paths and compiles
    /// the exclusions. Events are queued in the kernel from here on, before `run` starts.
    ///
    /// Errors: [`SourceError::MissingPrivilege`] without root/CAP_SYS_ADMIN, [`SourceError::Unsupported`] on a kernel
    /// without FID reporting or when no filesystem can be marked, [`SourceError::Failed`] for an invalid glob.
    pub fn start(cfg: &FileFanotifyConfig) -> Result<Self, SourceError> {
        if !crate::probe::is_root() {
            return Err(SourceError::MissingPrivilege {
                backend: NAME,
                what: "root (CAP_SYS_ADMIN) for fanotify filesystem marks".into(),
            });
        }
        let agent_paths: Vec<PathBuf> = cfg.agent_paths.iter().map(|p| canonical_or_absolute(p)).collect();
        let prefixes: Vec<String> = agent_paths.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        let exclusions = Exclusions::new(&prefixes, &cfg.exclude_globs).map_err(|message| SourceError::Failed {
            backend: NAME,
            step: "compile exclusions".into(),
            message,
        })?;
        let mut group = NotifyGroup::open().map_err(init_error)?;
        if let Some(activities) = &cfg.events {
            group = group.monitor_only(activities);
        }
        let mountinfo = File::open("/proc/self/mountinfo").ok();
        let marked = mark_all(&group, &HashSet::new()).map_err(|e| SourceError::Failed {
            backend: NAME,
            step: "read /proc/self/mountinfo".into(),
            message: e.to_string(),
        })?;
        if marked.filesystems.is_empty() {
            return Err(SourceError::Unsupported {
                backend: NAME,
                what: format!("no filesystem could be marked; skipped: {}", skipped_detail(&marked.skipped)),
            });
        }
        log_marks(&marked);
        let mut pending_ignores = agent_paths;
        place_ignores(&group, &mut pending_ignores);
        let me = FileFanotify {
            resolver: Resolver::new(marked.filesystems, cfg.dir_cache_entries),
            group,
            exclusions,
            max_events_per_pid: cfg.max_events_per_pid,
            pending_ignores,
            seen_devs: marked.seen_devs,
            mountinfo,
            permission: None,
        };
        tracing::info!(
            backend = NAME,
            renames = me.group.renames.describe(),
            filesystems = me.resolver.filesystems().len(),
            rate_limit = me.max_events_per_pid,
            mask = format_args!("{:#x}", me.group.mask()),
            events = %cfg.events.as_ref().map_or_else(|| "all".to_owned(), |e| format!("{e:?}")),
            "started"
        );
        Ok(me)
    }
}

/// One log line per filesystem: marked, or why not.
fn log_marks(marked: &Marked) {
    for f in &marked.filesystems {
        tracing::info!(backend = NAME, fstype = %f.fstype, mount = %f.mount_point.display(), whole = f.whole, "marked");
    }
    for s in &marked.skipped {
        tracing::info!(
            backend = NAME, fstype = %s.fstype, mount = %s.mount_point.display(), reason = %s.reason, "not marked"
        );
    }
}

/// Tries the ignore marks still pending; keeps those whose path does not exist yet.
fn place_ignores(group: &NotifyGroup, pending: &mut Vec<PathBuf>) {
    pending.retain(|p| {
        let Ok(meta) = std::fs::metadata(p) else { return true };
        match group.ignore(p, meta.is_dir()) {
            Ok(()) => tracing::debug!(backend = NAME, path = %p.display(), "kernel ignores the agent's own path"),
            // A path on a filesystem without a mark (e.g. /dev/null on devtmpfs) needs none.
            Err(e) => tracing::debug!(backend = NAME, path = %p.display(), error = %e, "no ignore mark"),
        }
        false
    });
}

/// Marks filesystems mounted since the last scan, follows moved mounts and forgets unmounted filesystems.
fn rescan_mounts(group: &NotifyGroup, seen_devs: &mut HashSet<(u32, u32)>, resolver: &mut Resolver) {
    let marked = match mark_all(group, seen_devs) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(backend = NAME, error = %e, "re-reading the mount table failed");
            return;
        }
    };
    for f in marked.filesystems {
        tracing::info!(backend = NAME, fstype = %f.fstype, mount = %f.mount_point.display(), "marked new filesystem");
        resolver.add_filesystem(f);
    }
    for s in &marked.skipped {
        tracing::debug!(
            backend = NAME, fstype = %s.fstype, mount = %s.mount_point.display(), reason = %s.reason,
            "new filesystem not marked"
        );
    }
    seen_devs.extend(marked.seen_devs);
    let Ok((all, _)) = marks::current() else { return };
    // Where each mounted filesystem can be reached now (its resolution mount may have gone while others stay).
    let reachable: Vec<(u64, PathBuf, bool)> = all
        .iter()
        .filter_map(|c| {
            let (p, whole) = c.mounts.iter().find(|(p, _)| reaches(p, c))?;
            Some((std::fs::metadata(p).ok()?.dev(), p.clone(), *whole))
        })
        .collect();
    resolver.refresh_mounts(&reachable);
    let live: HashSet<(u32, u32)> = all.iter().map(|c| c.dev).collect();
    // A superblock unmounted and mounted again gets a new chance.
    seen_devs.retain(|d| live.contains(d));
}

/// The canonical form of an agent path (symlinks resolved, as the kernel reports paths); for a file that does not
/// exist yet, its canonical directory joined with its name.
fn canonical_or_absolute(p: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    match (abs.parent().and_then(|d| std::fs::canonicalize(d).ok()), abs.file_name()) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => abs,
    }
}

/// Marks every eligible filesystem not in `seen`.
fn mark_all(group: &NotifyGroup, seen: &HashSet<(u32, u32)>) -> std::io::Result<Marked> {
    let (candidates, mut skipped) = marks::current()?;
    let mut filesystems = Vec::new();
    let mut seen_devs = HashSet::new();
    for c in candidates.into_iter().filter(|c| !seen.contains(&c.dev)) {
        seen_devs.insert(c.dev);
        match mark_one(group, &c) {
            Ok(fs) => filesystems.push(fs),
            Err(reason) => {
                let mount_point = c.mounts.first().map(|(p, _)| p.clone()).unwrap_or_default();
                skipped.push(Skipped { fstype: c.fstype, mount_point, reason });
            }
        }
    }
    Ok(Marked { filesystems, skipped, seen_devs })
}

/// Marks one filesystem through the first of its mounts that is not covered by another mount, and describes it
/// for the resolver; the error is the reason it was skipped.
fn mark_one(group: &NotifyGroup, c: &Candidate) -> Result<MarkedFs, String> {
    let (mount_point, whole) = c
        .mounts
        .iter()
        .find(|(p, _)| reaches(p, c))
        .ok_or_else(|| "every mount of it is covered by another mount".to_owned())?;
    let st = nix::sys::statfs::statfs(mount_point).map_err(|e| format!("statfs: {}", e.desc()))?;
    let fsid = fsid_words(st.filesystem_id());
    let dev = std::fs::metadata(mount_point).map_err(|e| format!("stat: {e}"))?.dev();
    group.mark_filesystem(mount_point).map_err(|e| match e {
        Errno::ENODEV | Errno::EOPNOTSUPP => format!("no file handle support ({})", e.desc()),
        Errno::EXDEV => "fsid differs from its superblock's (e.g. a btrfs subvolume)".to_owned(),
        e => format!("fanotify_mark: {}", e.desc()),
    })?;
    MarkedFs::new(fsid, dev, c.fstype.clone(), mount_point.clone(), *whole)
        .ok_or_else(|| "mount point contains a NUL byte".to_owned())
}

/// True when `path` shows filesystem `c` (and not another mount stacked on it). btrfs reports a per-subvolume
/// `st_dev` that differs from the superblock's, so it is taken as is.
fn reaches(path: &Path, c: &Candidate) -> bool {
    let Ok(meta) = std::fs::metadata(path) else { return false };
    c.fstype == "btrfs" || meta.dev() == libc::makedev(c.dev.0, c.dev.1)
}

/// The two words of a `fsid_t` (the libc type keeps its field private).
fn fsid_words(fsid: libc::fsid_t) -> [i32; 2] {
    const _: () = assert!(size_of::<libc::fsid_t>() == size_of::<[i32; 2]>());
    // SAFETY: fsid_t is `struct { int __val[2]; }` (same size, pinned above); every bit pattern of two i32 is valid.
    unsafe { std::mem::transmute::<libc::fsid_t, [i32; 2]>(fsid) }
}

fn skipped_detail(skipped: &[Skipped]) -> String {
    skipped
        .iter()
        .map(|s| format!("{} {}: {}", s.fstype, s.mount_point.display(), s.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

fn init_reason(e: Errno) -> String {
    match e {
        Errno::EPERM => "fanotify_init: needs CAP_SYS_ADMIN".into(),
        Errno::EINVAL => "fanotify_init: kernel without FID reporting (FAN_REPORT_DFID_NAME needs Linux 5.9)".into(),
        Errno::ENOSYS => "kernel without fanotify (CONFIG_FANOTIFY)".into(),
        e => format!("fanotify_init: {}", e.desc()),
    }
}

fn init_error(e: Errno) -> SourceError {
    match e {
        Errno::EPERM => SourceError::MissingPrivilege { backend: NAME, what: init_reason(e) },
        Errno::EINVAL | Errno::ENOSYS => SourceError::Unsupported { backend: NAME, what: init_reason(e) },
        e => SourceError::Failed { backend: NAME, step: "fanotify_init".into(), message: e.desc().into() },
    }
}

fn failed(step: &str, e: Errno) -> SourceError {
    SourceError::Failed { backend: NAME, step: step.to_owned(), message: e.desc().to_owned() }
}

/// Closes a descriptor the kernel passed with an event (FID groups pass none; this is defensive).
fn close_event_fd(fd: i32) {
    // SAFETY: the kernel created this descriptor for us with the event; nothing else knows or owns it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

impl Source for FileFanotify {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let span = tracing::info_span!("source", domain = "file", mode = "kernel", source = "fanotify");
        let _entered = span.enter();
        let FileFanotify {
            group,
            resolver,
            exclusions,
            max_events_per_pid,
            mut pending_ignores,
            mut seen_devs,
            mountinfo,
            permission,
        } = *self;
        if let Some(p) = &permission {
            p.connect(ctx.events.clone());
        }
        let limiter = RateLimiter::new(max_events_per_pid);
        let mut reader = Reader::new(&ctx.events, resolver, exclusions, limiter, group.renames);
        let mut buf = vec![0u8; READ_BUF_BYTES];
        let mut last_ignore_try = Instant::now();
        let result = loop {
            if ctx.shutdown.is_triggered() {
                break Ok(());
            }
            let (readable, mounts_changed) = match wait(&group, mountinfo.as_ref()) {
                Ok(r) => r,
                Err(e) => break Err(failed("poll", e)),
            };
            if mounts_changed {
                rescan_mounts(&group, &mut seen_devs, &mut reader.resolver);
            }
            if readable {
                std::thread::sleep(BATCH_DELAY);
                if let Err(e) = drain(&group, &mut reader, &mut buf, MAX_READS_PER_WAKE) {
                    break Err(failed("read", e));
                }
            } else {
                reader.flush_pending_move(Instant::now());
            }
            reader.sweep(Instant::now());
            if !pending_ignores.is_empty() && last_ignore_try.elapsed() >= IGNORE_RETRY {
                place_ignores(&group, &mut pending_ignores);
                last_ignore_try = Instant::now();
            }
        };
        // What the kernel queued before shutdown is still reported; then every open window is summarised.
        if result.is_ok()
            && let Err(e) = drain(&group, &mut reader, &mut buf, MAX_READS_PER_WAKE)
        {
            tracing::warn!(backend = NAME, error = %e, "final drain failed");
        }
        // Verdicts stop before the monitor's last words: everything pending is allowed, the group closes.
        if let Some(p) = permission {
            p.stop();
        }
        reader.finish(Instant::now());
        let s = reader.stats;
        let r = reader.resolver.stats;
        tracing::info!(
            records = s.records,
            sent = s.sent,
            excluded = s.excluded,
            rate_limited = s.rate_limited,
            own = s.own,
            nameless = s.nameless,
            dir_opens = s.dir_opens,
            overflows = s.overflows,
            malformed = s.malformed,
            unresolved = s.unresolved,
            cache_hits = r.hits,
            cache_misses = r.misses,
            resolve_failures = r.failures,
            "stopped"
        );
        result
    }
}

/// Waits up to [`POLL_TIMEOUT`] for events or a mount-table change: (events readable, mounts changed).
fn wait(group: &NotifyGroup, mountinfo: Option<&File>) -> Result<(bool, bool), Errno> {
    let timeout = PollTimeout::try_from(POLL_TIMEOUT).unwrap_or(PollTimeout::NONE);
    let mut fds = vec![PollFd::new(group.as_fd(), PollFlags::POLLIN)];
    if let Some(m) = mountinfo {
        fds.push(PollFd::new(m.as_fd(), PollFlags::POLLPRI));
    }
    match nix::poll::poll(&mut fds, timeout) {
        Ok(0) | Err(Errno::EINTR) => Ok((false, false)),
        Ok(_) => {
            let ready = |i: usize| fds.get(i).and_then(|f| f.revents()).unwrap_or(PollFlags::empty());
            let readable = ready(0).contains(PollFlags::POLLIN);
            let mounts = ready(1).intersects(PollFlags::POLLPRI | PollFlags::POLLERR);
            Ok((readable, mounts))
        }
        Err(e) => Err(e),
    }
}

/// Reads and handles up to `max_reads` buffers of events; stops early when the queue is empty.
fn drain(group: &NotifyGroup, reader: &mut Reader<'_>, buf: &mut [u8], max_reads: usize) -> Result<(), Errno> {
    let mut close = |fd: i32| close_event_fd(fd);
    for _ in 0..max_reads {
        let n = match group.read(buf) {
            Ok(0) | Err(Errno::EAGAIN) => return Ok(()),
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        };
        reader.handle_buffer(&buf[..n], Instant::now(), &mut close);
    }
    Ok(())
}
