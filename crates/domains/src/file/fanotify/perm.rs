//! The permission group: synchronous verdicts on opens and execs (`FAN_OPEN_PERM`, `FAN_OPEN_EXEC_PERM`), so a
//! `deny` rule reaches the caller as EPERM before it reads a byte, and execs can be checked by content (SHA-256).
//!
//! # Shape
//!
//! A second fanotify group beside the monitor's, of class `FAN_CLASS_CONTENT` and descriptor-based: the kernel
//! refuses FID reporting together with permission classes (EINVAL, measured here), so every event brings an open
//! descriptor of the file. Marks come from the policy's [`FilePermissionPlan`], as narrow as its rules allow:
//! an inode mark per exact path (re-placed when the path starts naming another inode, checked every
//! [`EXACT_RECHECK`]), and filesystem marks for directory prefixes (only the filesystems that can hold them),
//! globs and rules without a path (every filesystem the monitor would mark; new mounts are marked as they appear).
//! A filesystem mark with `FAN_OPEN_PERM` makes **every open on that filesystem** wait for a round trip to the
//! agent; `FAN_OPEN_EXEC_PERM` makes every exec (and the ELF interpreter's open) wait.
//!
//! One reader thread reads events, answers the agent's own pid at once, builds a `file` event (path from
//! `/proc/self/fd/N`, `process.pid` from the event, `exe`/uid from /proc when a rule needs them), asks the
//! [`Decider`], answers `FAN_ALLOW`/`FAN_DENY` and emits what was decided. When the decision depends on the file's
//! hash ([`Decider::content_check`]), the hash comes from the [`HashCache`] or from one of [`HASH_WORKERS`] worker
//! threads, so the reader never blocks on a big file.
//!
//! # Safety rules
//!
//! - **Bounded time.** A verdict that needs a hash has a deadline (the rule's `timeout_ms`, else the policy's
//!   `verdict_timeout_ms`, 500 ms by default). Past it the reader answers with the rule's `on_timeout` (default
//!   allow: fail open) and emits the file event as `alerted` (or `denied`) plus a `sensor`/`error` event saying it
//!   timed out; the worker notices and stops reading. Files larger than `max_hash_bytes`, a full hash queue, or a
//!   read error get the timeout verdict at once. Verdicts without a hash are computed inline (microseconds).
//! - **The agent itself** (its pid) is always allowed immediately: the agent opens files (its store, its output)
//!   and must never wait on itself. The reader and the hash workers never open a file on a marked filesystem
//!   (they read `/proc` and the event's own descriptor only), so they cannot deadlock on their own marks.
//! - **Nothing stays blocked.** On shutdown and on drop every pending verdict is answered `allow`, the queue is
//!   drained with `allow`, then the group descriptor is closed. If the agent dies (SIGKILL), the kernel closes the
//!   descriptor and allows every pending and queued event itself (fanotify's release handler); tested.
//! - **Verdicts are never rate limited, reports are.** A process that hits a deny rule in a loop gets every
//!   EPERM, but at most `max_events_per_pid` (the policy's `files.max_events_per_pid`, as for the monitor) `denied`
//!   / `alerted` events per second; the rest are counted ([`PermStats::rate_limited`]) and reported as one
//!   `sensor`/`drop` summary per process and window, so report count + summary counts = verdicts.
//! - **No silent fail-open on overflow.** The queue is unlimited (`FAN_UNLIMITED_QUEUE`): a permission event is
//!   only queued while its caller is blocked, so the queue is bounded by the number of blocked threads, and a
//!   bounded queue would make the kernel drop (allow) events on overflow. Reads are small (a few dozen events)
//!   because each event holds a descriptor and the kernel denies an event whose descriptor cannot be created.
//!
//! # What it cannot see or do
//!
//! - Only opens and execs can be refused; create, write, delete, rename and chmod are reported by the monitor.
//!   Open flags are not known (the descriptor is the agent's own), so "deny open for writing" is not expressible.
//! - Shared libraries are `open`ed and `mmap`ed by ld.so, not exec'd: exec checks (and `exec_trust`) see the
//!   program and its ELF interpreter, not its libraries; a script run as `sh script` is an open of the script.
//! - `process.exe` of an exec event is the image *before* the exec (the new image is `file.path`).
//! - A file replaced under an exact path (rename over it) is unprotected until the next recheck of its inode
//!   (at most [`EXACT_RECHECK`]); paths on filesystems the monitor does not mark (overlayfs, FUSE, remote, pseudo)
//!   are not covered.
//! - A stopped agent (SIGSTOP) holds every covered open until it continues or dies; nothing in the kernel times
//!   out a permission event.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use nix::errno::Errno;
use nix::fcntl::AT_FDCWD;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::fanotify::{EventFFlags, Fanotify, FanotifyResponse, InitFlags, MarkFlags, MaskFlags, Response};
use ringwatch_core::compiled::FilePermissionPlan;
use ringwatch_core::event::FileInfo;
use ringwatch_core::{
    Action, Activity, ContentCheck, Decider, Decision, Domain, Event, EventSender, SourceError, TimeoutVerdict,
};

use super::fid::{self, Parsed, RawEvent};
use super::hash::{self, CacheStats, DEFAULT_CACHE_ENTRIES, HashCache, HashKey};
use super::marks::{self, Candidate};
use super::noise::RateLimiter;
use super::reader::BACKEND;

/// Component name in logs and sensor events.
pub const COMPONENT: &str = "file/fanotify/permission";

/// Hash worker threads.
pub const HASH_WORKERS: usize = 2;

/// Hash jobs waiting for a worker; one more gets the timeout verdict at once.
const HASH_QUEUE: usize = 256;

/// One `read` takes at most this much: 170 permission events (24 bytes each), each with a new descriptor.
const READ_BUF_BYTES: usize = 4096;

/// Reads per wake-up before deadlines and marks are looked at again.
const MAX_READS_PER_WAKE: usize = 16;

/// Longest poll: how soon a stop request is noticed.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// How often the inodes behind exact paths are checked (a replaced file gets a new mark).
pub const EXACT_RECHECK: Duration = Duration::from_millis(250);

/// Events kept while no pipeline sender is connected yet (between `start` and `run`).
const BACKLOG: usize = 1024;

/// Counters of one permission group, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct PermStats {
    /// Permission events read.
    pub events: AtomicU64,
    /// Answered `FAN_ALLOW` (own pid, timeouts and shutdown included).
    pub allowed: AtomicU64,
    /// Answered `FAN_DENY`.
    pub denied: AtomicU64,
    /// Events of the agent itself (allowed at once).
    pub own: AtomicU64,
    /// Verdicts given by `on_timeout` (deadline passed, file too big, queue full, read error).
    pub timeouts: AtomicU64,
    /// Files hashed to the end.
    pub hashed: AtomicU64,
    /// Bytes hashed.
    pub hashed_bytes: AtomicU64,
    /// Malformed records (answered allow when they carried a descriptor).
    pub malformed: AtomicU64,
    /// Responses the kernel refused.
    pub response_errors: AtomicU64,
    /// Verdicts given but not reported: over the per-process rate limit (counted in `sensor`/`drop` summaries).
    pub rate_limited: AtomicU64,
    /// Hash cache hits and misses.
    pub cache: CacheStats,
}

/// A copy of [`PermStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // the fields of PermStats
pub struct PermCounters {
    pub events: u64,
    pub allowed: u64,
    pub denied: u64,
    pub own: u64,
    pub timeouts: u64,
    pub hashed: u64,
    pub hashed_bytes: u64,
    pub malformed: u64,
    pub response_errors: u64,
    pub rate_limited: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
}

impl PermStats {
    /// The counters now.
    pub fn snapshot(&self) -> PermCounters {
        let l = hash::load;
        PermCounters {
            events: l(&self.events),
            allowed: l(&self.allowed),
            denied: l(&self.denied),
            own: l(&self.own),
            timeouts: l(&self.timeouts),
            hashed: l(&self.hashed),
            hashed_bytes: l(&self.hashed_bytes),
            malformed: l(&self.malformed),
            response_errors: l(&self.response_errors),
            rate_limited: l(&self.rate_limited),
            cache_hits: l(&self.cache.hits),
            cache_misses: l(&self.cache.misses),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Locks a mutex; a poisoned one (a panicked holder) is still usable: its data is a plain map or cache.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where events go: the pipeline once connected, a small backlog before; reports of each process are rate limited
/// like the monitor's (the verdicts never are), with one `sensor`/`drop` summary per process and window.
#[derive(Debug)]
struct Emitter {
    state: Mutex<EmitState>,
}

#[derive(Debug)]
struct EmitState {
    out: Outbox,
    limiter: RateLimiter,
}

/// The pipeline once connected; before, a bounded backlog and a count of what did not fit.
#[derive(Debug, Default)]
struct Outbox {
    sender: Option<EventSender>,
    backlog: Vec<Event>,
    lost: u64,
}

impl Emitter {
    /// At most `max_events_per_pid` reports per process and second (0: no limit).
    fn new(max_events_per_pid: u32) -> Emitter {
        let limiter = RateLimiter::new(max_events_per_pid);
        Emitter { state: Mutex::new(EmitState { out: Outbox::default(), limiter }) }
    }

    /// Whether a report about `pid` may go out now; a refused one is counted for that process's summary.
    fn admit(&self, pid: u32, now: Instant) -> bool {
        lock(&self.state).limiter.allow(pid, now)
    }

    fn send(&self, ev: Event) {
        lock(&self.state).out.push(ev);
    }

    /// Ends finished rate-limit windows (all of them when `all`) and sends their summaries.
    fn summarize(&self, now: Instant, all: bool) {
        let mut s = lock(&self.state);
        if all {
            s.limiter.finish();
        } else {
            s.limiter.sweep(now);
        }
        let EmitState { out, limiter } = &mut *s;
        // A full pipeline queue keeps the count due for the next call.
        limiter.send_due(|pid, dropped, limit| {
            let msg = format!(
                "rate limit: {dropped} permission reports of pid {pid} not sent (over {limit} events/s; every verdict \
                 was given)"
            );
            let mut ev = Event::sensor(Activity::Drop, COMPONENT, msg, Some(dropped));
            ev.process.pid = pid;
            out.push(ev)
        });
    }

    fn connect(&self, tx: EventSender) {
        let mut s = lock(&self.state);
        let s = &mut s.out;
        for ev in s.backlog.drain(..) {
            tx.send(ev);
        }
        if s.lost > 0 {
            tx.count_lost_upstream(s.lost);
            s.lost = 0;
        }
        s.sender = Some(tx);
    }
}

impl Outbox {
    /// False only when the connected pipeline's queue refused `ev` (the pipeline counts that loss).
    fn push(&mut self, ev: Event) -> bool {
        if let Some(tx) = &self.sender {
            return tx.send(ev);
        }
        if self.backlog.len() < BACKLOG {
            self.backlog.push(ev);
        } else {
            self.lost += 1;
        }
        true
    }
}

/// A verdict waiting for its hash.
struct Pending {
    fd: Arc<OwnedFd>,
    ev: Event,
    check: ContentCheck,
    deadline: Instant,
}

/// What the reader and the workers share.
struct Shared {
    fan: Fanotify,
    decider: Arc<dyn Decider>,
    stats: Arc<PermStats>,
    emitter: Emitter,
    pending: Mutex<HashMap<u64, Pending>>,
    cache: Mutex<HashCache>,
}

/// One hash to compute.
struct Job {
    id: u64,
    fd: Arc<OwnedFd>,
    key: HashKey,
}

/// The running permission group: its reader thread and hash workers. Dropping it answers everything pending with
/// allow and closes the group.
pub struct PermissionGroup {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    detail: String,
}

impl std::fmt::Debug for PermissionGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PermissionGroup").field("detail", &self.detail).finish_non_exhaustive()
    }
}

fn init_group() -> Result<Fanotify, Errno> {
    let flags = libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK | libc::FAN_UNLIMITED_QUEUE;
    let event_flags = (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32;
    Fanotify::init(InitFlags::from_bits_retain(flags), EventFFlags::from_bits_retain(event_flags))
}

/// Moves the group to a descriptor number above any other the agent is likely to hold.
///
/// Why (measured here, kernel 6.18): when a process dies, the kernel releases its descriptors highest number first
/// (the deferred `fput`s run last-in first-out), and releasing a fanotify or inotify group that has marks waits for
/// every task inside fsnotify (an SRCU grace period) — including a task blocked on one of *our* permission events.
/// If the monitor's group were released before this one, its release would wait for that task, which waits for
/// this group's release to allow it: a deadlock until the blocked task is killed. With the highest number, this
/// group is released first, its pending events are allowed, and the other releases complete.
fn move_high(fan: Fanotify) -> Fanotify {
    use nix::fcntl::{FcntlArg, fcntl};
    use nix::sys::resource::{Resource, getrlimit};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    let Ok(limit) = i32::try_from(soft) else { return fan };
    let min = limit.saturating_sub(64).max(3);
    match fcntl(&fan, FcntlArg::F_DUPFD_CLOEXEC(min)) {
        Ok(raw) => {
            // SAFETY: F_DUPFD_CLOEXEC just created this descriptor for us; nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: `fd` is a duplicate of a fanotify group descriptor, so it refers to that group.
            unsafe { Fanotify::from_owned_fd(fd) }
        }
        Err(e) => {
            tracing::warn!(component = COMPONENT, error = %e, "could not move the permission group to a high fd");
            fan
        }
    }
}

impl PermissionGroup {
    /// Whether permission events work here: creates a content-class group and places (then drops) an inode mark
    /// with both permission bits on `/` (the directory itself, for a few microseconds). `Ok` says what is used.
    pub fn probe() -> Result<String, String> {
        let fan = init_group().map_err(|e| format!("fanotify_init(FAN_CLASS_CONTENT): {}", e.desc()))?;
        let mask = MaskFlags::from_bits_retain(libc::FAN_OPEN_PERM | libc::FAN_OPEN_EXEC_PERM);
        match fan.mark(MarkFlags::FAN_MARK_ADD, mask, AT_FDCWD, Some(Path::new("/"))) {
            Ok(()) => Ok("FAN_OPEN_PERM + FAN_OPEN_EXEC_PERM (content class, descriptor events)".to_owned()),
            Err(Errno::EINVAL) => Err("kernel without permission events (CONFIG_FANOTIFY_ACCESS_PERMISSIONS)".into()),
            Err(e) => Err(format!("fanotify_mark(FAN_OPEN_PERM): {}", e.desc())),
        }
    }

    /// Creates the group, places the plan's marks and starts answering at once (the reader must run before
    /// anything else in the agent opens a file on a marked filesystem). Events are kept until
    /// [`PermissionGroup::connect`] gives them a pipeline.
    /// Reports (denies, alerts, timeouts) are limited to `max_events_per_pid` per process and second (0: none).
    pub fn start(
        plan: &FilePermissionPlan,
        decider: Arc<dyn Decider>,
        max_events_per_pid: u32,
    ) -> Result<Self, SourceError> {
        let fan = init_group().map_err(|e| match e {
            Errno::EPERM => SourceError::MissingPrivilege {
                backend: super::NAME,
                what: "CAP_SYS_ADMIN for fanotify permission events".into(),
            },
            Errno::EINVAL | Errno::ENOSYS => SourceError::Unsupported {
                backend: super::NAME,
                what: format!("fanotify permission events: {}", e.desc()),
            },
            e => SourceError::Failed {
                backend: super::NAME,
                step: "fanotify_init(FAN_CLASS_CONTENT)".into(),
                message: e.desc().into(),
            },
        })?;
        raise_fd_limit();
        let fan = move_high(fan);
        let shared = Arc::new(Shared {
            fan,
            decider,
            stats: Arc::new(PermStats::default()),
            emitter: Emitter::new(max_events_per_pid),
            pending: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashCache::new(DEFAULT_CACHE_ENTRIES)),
        });
        let mut marker = Marker::new(plan.clone());
        let mountinfo = File::open("/proc/self/mountinfo").ok();
        // Marks go on before the reader runs: an open that arrives in between waits a few microseconds.
        marker.mark_filesystems(&shared.fan).map_err(|e| SourceError::Failed {
            backend: super::NAME,
            step: "read /proc/self/mountinfo".into(),
            message: e.to_string(),
        })?;
        // Exact paths that do not exist yet are marked when they appear (checked every EXACT_RECHECK).
        marker.refresh_exact(&shared.fan);
        let detail = marker.describe();
        let stop = Arc::new(AtomicBool::new(false));
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded::<Job>(HASH_QUEUE);
        let mut workers = Vec::new();
        for i in 0..HASH_WORKERS {
            let shared = shared.clone();
            let rx = jobs_rx.clone();
            let w = std::thread::Builder::new()
                .name(format!("file-perm-hash{i}"))
                .spawn(move || hash_worker(&shared, &rx))
                .map_err(|e| SourceError::Failed {
                    backend: super::NAME,
                    step: "spawn hash worker".into(),
                    message: e.to_string(),
                })?;
            workers.push(w);
        }
        let reader = {
            let shared = shared.clone();
            let stop = stop.clone();
            let plan = plan.clone();
            std::thread::Builder::new()
                .name("file-perm".into())
                .spawn(move || {
                    let mut r = Reader {
                        shared,
                        plan,
                        marker,
                        mountinfo,
                        jobs: Some(jobs_tx),
                        workers,
                        next_id: 0,
                        own_pid: i32::try_from(std::process::id()).unwrap_or(-1),
                        last_exact_check: Instant::now(),
                    };
                    r.run(&stop);
                })
                .map_err(|e| SourceError::Failed {
                    backend: super::NAME,
                    step: "spawn reader".into(),
                    message: e.to_string(),
                })?
        };
        tracing::info!(component = COMPONENT, marks = %detail, timeout_ms = plan.timeout.as_millis() as u64, "started");
        Ok(PermissionGroup { shared, stop, reader: Some(reader), detail })
    }

    /// Starts delivering events to the pipeline (the backlog first).
    pub fn connect(&self, events: EventSender) {
        self.shared.emitter.connect(events);
    }

    /// The counters (shared; they keep counting).
    pub fn stats(&self) -> Arc<PermStats> {
        self.shared.stats.clone()
    }

    /// What is marked, for logs and `probe`.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// Stops the reader: every pending verdict and everything still queued is answered allow, then the group is
    /// closed. Also done on drop.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take()
            && r.join().is_err()
        {
            tracing::error!(component = COMPONENT, "the permission reader panicked; the group closes (kernel allows)");
        }
    }
}

impl Drop for PermissionGroup {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Raises the soft descriptor limit to the hard one (up to 65,536): every permission event in flight holds one.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(65_536);
        if soft < want {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
        }
    }
}

/// One exact path and the inode its mark is on.
#[derive(Debug)]
struct ExactMark {
    path: String,
    mask: u64,
    /// `(dev, ino)` marked last, if any.
    current: Option<(u64, u64)>,
}

/// Places and maintains the plan's marks.
#[derive(Debug)]
struct Marker {
    plan: FilePermissionPlan,
    exact: Vec<ExactMark>,
    seen_devs: HashSet<(u32, u32)>,
    /// What was marked, for the log: `fstype mount (OPEN_PERM|OPEN_EXEC_PERM)`.
    filesystems: Vec<String>,
}

impl Marker {
    fn new(plan: FilePermissionPlan) -> Self {
        let mut exact: Vec<ExactMark> = Vec::new();
        for (paths, bit) in
            [(&plan.open.exact_paths, libc::FAN_OPEN_PERM), (&plan.exec.exact_paths, libc::FAN_OPEN_EXEC_PERM)]
        {
            for p in paths {
                match exact.iter_mut().find(|e| &e.path == p) {
                    Some(e) => e.mask |= bit,
                    None => exact.push(ExactMark { path: p.clone(), mask: bit, current: None }),
                }
            }
        }
        Marker { plan, exact, seen_devs: HashSet::new(), filesystems: Vec::new() }
    }

    fn describe(&self) -> String {
        let exact = self.exact.iter().filter(|e| e.current.is_some()).count();
        let fs = if self.filesystems.is_empty() { "none".to_owned() } else { self.filesystems.join(", ") };
        format!("{exact} inode mark(s) of {} exact path(s); filesystem marks: {fs}", self.exact.len())
    }

    /// The permission bits a filesystem mark on `c` needs (0: none).
    fn fs_mask(&self, c: &Candidate) -> u64 {
        let holds_any = |prefixes: &[String]| prefixes.iter().any(|d| holds(c, d));
        let mut mask = 0;
        if self.plan.open.everywhere || holds_any(&self.plan.open.dir_prefixes) {
            mask |= libc::FAN_OPEN_PERM;
        }
        if self.plan.exec.everywhere || holds_any(&self.plan.exec.dir_prefixes) {
            mask |= libc::FAN_OPEN_EXEC_PERM;
        }
        mask
    }

    /// Marks every eligible filesystem not seen before that the plan needs.
    fn mark_filesystems(&mut self, fan: &Fanotify) -> std::io::Result<()> {
        let (candidates, _skipped) = marks::current()?;
        let live: HashSet<(u32, u32)> = candidates.iter().map(|c| c.dev).collect();
        self.seen_devs.retain(|d| live.contains(d));
        for c in &candidates {
            if !self.seen_devs.insert(c.dev) {
                continue;
            }
            let mask = self.fs_mask(c);
            if mask == 0 {
                continue;
            }
            let Some((mount, _)) = c.mounts.iter().find(|(p, _)| super::reaches(p, c)) else { continue };
            let flags = MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_FILESYSTEM;
            match fan.mark(flags, MaskFlags::from_bits_retain(mask), AT_FDCWD, Some(mount.as_path())) {
                Ok(()) => {
                    let bits = match mask {
                        m if m == libc::FAN_OPEN_PERM => "OPEN_PERM",
                        m if m == libc::FAN_OPEN_EXEC_PERM => "OPEN_EXEC_PERM",
                        _ => "OPEN_PERM|OPEN_EXEC_PERM",
                    };
                    tracing::info!(component = COMPONENT, fstype = %c.fstype, mount = %mount.display(), bits, "marked");
                    self.filesystems.push(format!("{} {} ({bits})", c.fstype, mount.display()));
                }
                Err(e) => tracing::warn!(
                    component = COMPONENT, fstype = %c.fstype, mount = %mount.display(), error = %e,
                    "filesystem not covered by permission events"
                ),
            }
        }
        Ok(())
    }

    /// Marks the inode each exact path names now, when it changed (or was not marked yet).
    fn refresh_exact(&mut self, fan: &Fanotify) {
        for e in &mut self.exact {
            let Ok(meta) = std::fs::metadata(&e.path) else { continue };
            let now = (meta.dev(), meta.ino());
            if e.current == Some(now) {
                continue;
            }
            match fan.mark(
                MarkFlags::FAN_MARK_ADD,
                MaskFlags::from_bits_retain(e.mask),
                AT_FDCWD,
                Some(e.path.as_str()),
            ) {
                Ok(()) => {
                    if e.current.is_some() {
                        tracing::info!(component = COMPONENT, path = %e.path, "file replaced; new inode marked");
                    }
                    e.current = Some(now);
                }
                Err(err) => tracing::warn!(component = COMPONENT, path = %e.path, error = %err, "inode mark failed"),
            }
        }
    }
}

/// True when filesystem `c` can hold files under directory `dir` (ends in `/`): `dir` itself (or its nearest
/// existing ancestor) is on it, or one of its mounts is under `dir`. btrfs subvolumes report their own `st_dev`, so
/// a btrfs filesystem is assumed to hold everything (marking too much is safe, too little is not).
fn holds(c: &Candidate, dir: &str) -> bool {
    if c.fstype == "btrfs" {
        return true;
    }
    if c.mounts.iter().any(|(m, _)| format!("{}/", m.to_string_lossy().trim_end_matches('/')).starts_with(dir)) {
        return true;
    }
    let mut p = Path::new(dir);
    loop {
        if let Ok(meta) = std::fs::metadata(p) {
            return meta.dev() == libc::makedev(c.dev.0, c.dev.1);
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => return false,
        }
    }
}

/// The reader thread's state.
struct Reader {
    shared: Arc<Shared>,
    plan: FilePermissionPlan,
    marker: Marker,
    mountinfo: Option<File>,
    jobs: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    next_id: u64,
    own_pid: i32,
    last_exact_check: Instant,
}

impl Reader {
    fn run(&mut self, stop: &AtomicBool) {
        let mut buf = vec![0u8; READ_BUF_BYTES];
        while !stop.load(Ordering::Relaxed) {
            let (readable, mounts_changed) = self.wait();
            if readable {
                for _ in 0..MAX_READS_PER_WAKE {
                    match nix::unistd::read(self.shared.fan.as_fd(), &mut buf) {
                        Ok(0) | Err(Errno::EAGAIN) => break,
                        Ok(n) => self.handle_buffer(&buf[..n]),
                        Err(Errno::EINTR) => continue,
                        Err(e) => {
                            tracing::error!(component = COMPONENT, error = %e, "read failed");
                            std::thread::sleep(Duration::from_millis(10));
                            break;
                        }
                    }
                }
            }
            self.expire(Instant::now());
            self.shared.emitter.summarize(Instant::now(), false);
            if mounts_changed && let Err(e) = self.marker.mark_filesystems(&self.shared.fan) {
                tracing::warn!(component = COMPONENT, error = %e, "re-reading the mount table failed");
            }
            if !self.marker.exact.is_empty() && self.last_exact_check.elapsed() >= EXACT_RECHECK {
                self.marker.refresh_exact(&self.shared.fan);
                self.last_exact_check = Instant::now();
            }
        }
        self.finish(&mut buf);
    }

    /// Waits for events, a mount-table change, or the next deadline (at most [`POLL_TIMEOUT`]).
    fn wait(&self) -> (bool, bool) {
        let next_deadline = lock(&self.shared.pending).values().map(|p| p.deadline).min();
        let timeout = next_deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .map_or(POLL_TIMEOUT, |d| d.min(POLL_TIMEOUT));
        // Round up so a deadline a few microseconds away is not a busy loop of zero-timeout polls.
        let ms = u16::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
        let mut fds = vec![PollFd::new(self.shared.fan.as_fd(), PollFlags::POLLIN)];
        if let Some(m) = &self.mountinfo {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLPRI));
        }
        match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => {
                let ready = |i: usize| fds.get(i).and_then(|f| f.revents()).unwrap_or(PollFlags::empty());
                (ready(0).contains(PollFlags::POLLIN), ready(1).intersects(PollFlags::POLLPRI | PollFlags::POLLERR))
            }
            _ => (false, false),
        }
    }

    fn handle_buffer(&mut self, buf: &[u8]) {
        for parsed in fid::events(buf) {
            match parsed {
                Parsed::Event(raw) => self.handle(&raw),
                Parsed::Malformed { why, fd } => {
                    bump(&self.shared.stats.malformed);
                    tracing::warn!(component = COMPONENT, ?why, "malformed permission event");
                    if let Some(fd) = take_fd(fd) {
                        // Unknown content: fail open rather than hold a caller forever.
                        respond(&self.shared, &fd, false);
                    }
                }
            }
        }
    }

    fn handle(&mut self, raw: &RawEvent<'_>) {
        let Some(fd) = take_fd(raw.fd) else {
            // FAN_Q_OVERFLOW cannot happen with an unlimited queue; anything else without a descriptor needs no answer.
            return;
        };
        let stats = &self.shared.stats;
        bump(&stats.events);
        if raw.pid == self.own_pid {
            bump(&stats.own);
            respond(&self.shared, &fd, false);
            return;
        }
        let activity = if raw.mask & libc::FAN_OPEN_EXEC_PERM != 0 { Activity::Exec } else { Activity::Open };
        let key = HashKey::of(fd.as_fd()).ok();
        let mut ev = Event::new(Domain::File, activity, BACKEND);
        ev.process.pid = u32::try_from(raw.pid).unwrap_or(0);
        ev.file = Some(FileInfo {
            path: fd_path(&fd),
            inode: key.map(|k| k.ino),
            dev: key.map(|k| k.dev),
            ..FileInfo::default()
        });
        if self.plan.needs_exe
            && let Ok(exe) = std::fs::read_link(format!("/proc/{}/exe", raw.pid))
        {
            ev.process.exe = exe.to_string_lossy().into_owned();
        }
        if self.plan.needs_uid {
            read_ids(raw.pid, &mut ev);
        }
        let Some(check) = self.shared.decider.content_check(&ev) else {
            let decision = self.shared.decider.decide(&ev, None);
            conclude(&self.shared, &fd, ev, &decision);
            return;
        };
        let Some(key) = key else {
            conclude_late(&self.shared, &fd, ev, &check, "fstat of the file failed");
            return;
        };
        if key.size > self.plan.max_hash_bytes {
            let why = format!("{} bytes is over the {}-byte hash limit", key.size, self.plan.max_hash_bytes);
            conclude_late(&self.shared, &fd, ev, &check, &why);
            return;
        }
        let cached = lock(&self.shared.cache).get(&key);
        if let Some(digest) = cached {
            bump(&stats.cache.hits);
            if let Some(f) = &mut ev.file {
                f.sha256 = Some(digest);
            }
            let decision = self.shared.decider.decide(&ev, None);
            conclude(&self.shared, &fd, ev, &decision);
            return;
        }
        bump(&stats.cache.misses);
        let id = self.next_id;
        self.next_id += 1;
        let fd = Arc::new(fd);
        let deadline = Instant::now() + check.timeout;
        lock(&self.shared.pending).insert(id, Pending { fd: fd.clone(), ev, check, deadline });
        let sent = match &self.jobs {
            Some(tx) => tx.try_send(Job { id, fd: fd.clone(), key }),
            None => Err(TrySendError::Disconnected(Job { id, fd: fd.clone(), key })),
        };
        if sent.is_err()
            && let Some(p) = lock(&self.shared.pending).remove(&id)
        {
            conclude_late(&self.shared, &p.fd, p.ev, &p.check, "the hash queue is full");
        }
    }

    /// Answers every verdict whose deadline passed with its `on_timeout`.
    fn expire(&mut self, now: Instant) {
        let expired: Vec<Pending> = {
            let mut pending = lock(&self.shared.pending);
            let ids: Vec<u64> = pending.iter().filter(|(_, p)| p.deadline <= now).map(|(id, _)| *id).collect();
            ids.iter().filter_map(|id| pending.remove(id)).collect()
        };
        for p in expired {
            let why = format!("no hash within {} ms", p.check.timeout.as_millis());
            conclude_late(&self.shared, &p.fd, p.ev, &p.check, &why);
        }
    }

    /// At stop: pending verdicts and whatever is still queued are allowed, the workers end, the group closes when
    /// the last holder of [`Shared`] drops it.
    fn finish(&mut self, buf: &mut [u8]) {
        let pending: Vec<Pending> = lock(&self.shared.pending).drain().map(|(_, p)| p).collect();
        for p in &pending {
            respond(&self.shared, &p.fd, false);
        }
        let mut queued = 0u64;
        loop {
            match nix::unistd::read(self.shared.fan.as_fd(), buf) {
                Ok(n) if n > 0 => {
                    for parsed in fid::events(&buf[..n]) {
                        let fd = match parsed {
                            Parsed::Event(raw) => raw.fd,
                            Parsed::Malformed { fd, .. } => fd,
                        };
                        if let Some(fd) = take_fd(fd) {
                            respond(&self.shared, &fd, false);
                            queued += 1;
                        }
                    }
                }
                Err(Errno::EINTR) => {}
                _ => break,
            }
        }
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.shared.emitter.summarize(Instant::now(), true);
        let s = self.shared.stats.snapshot();
        tracing::info!(
            component = COMPONENT,
            pending_allowed = pending.len(),
            queued_allowed = queued,
            events = s.events,
            allowed = s.allowed,
            denied = s.denied,
            own = s.own,
            timeouts = s.timeouts,
            rate_limited = s.rate_limited,
            cache_hits = s.cache_hits,
            cache_misses = s.cache_misses,
            "stopped"
        );
    }
}

/// Takes ownership of a descriptor the kernel passed with an event (`None` for `FAN_NOFD`).
fn take_fd(fd: i32) -> Option<OwnedFd> {
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel installed this descriptor in our table for this event and hands it over to us; nothing
    // else in the process knows its number, so this is its only owner.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The path of the file open on `fd`, as the kernel names it now (`?` when it cannot be read: never a real path,
/// so no path rule matches it). A deleted file reads as `PATH (deleted)`.
fn fd_path(fd: &OwnedFd) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_or_else(|_| "?".to_owned(), |p| p.to_string_lossy().into_owned())
}

/// Real and effective uid and the real gid from `/proc/PID/status` (left 0 when unreadable).
fn read_ids(pid: i32, ev: &mut Event) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return };
    for line in text.lines() {
        let fields = |prefix: &str| {
            line.strip_prefix(prefix).map(|rest| rest.split_whitespace().filter_map(|v| v.parse::<u32>().ok()))
        };
        if let Some(mut ids) = fields("Uid:") {
            ev.process.uid = ids.next().unwrap_or(0);
            ev.process.euid = ids.next().unwrap_or(0);
        } else if let Some(mut ids) = fields("Gid:") {
            ev.process.gid = ids.next().unwrap_or(0);
            break;
        }
    }
}

/// Writes the verdict for `fd`.
fn respond(shared: &Shared, fd: &OwnedFd, deny: bool) {
    let response = if deny { Response::FAN_DENY } else { Response::FAN_ALLOW };
    match shared.fan.write_response(FanotifyResponse::new(fd.as_fd(), response)) {
        Ok(()) => bump(if deny { &shared.stats.denied } else { &shared.stats.allowed }),
        Err(e) => {
            bump(&shared.stats.response_errors);
            tracing::debug!(component = COMPONENT, error = %e, "verdict not accepted");
        }
    }
}

/// Answers with `decision` and emits what the pipeline needs: every deny, and alerts that needed the hash (the
/// monitor's own event for the same open lacks it, so the pipeline could not raise that alert itself). Allowed
/// opens and execs are left to the monitor, which reports them after the fact.
fn conclude(shared: &Shared, fd: &OwnedFd, mut ev: Event, decision: &Decision) {
    let deny = matches!(decision.action, Action::Denied | Action::Killed);
    respond(shared, fd, deny);
    let hashed = ev.file.as_ref().is_some_and(|f| f.sha256.is_some());
    if deny || (decision.action == Action::Alerted && hashed) {
        if !admitted(shared, ev.process.pid) {
            return;
        }
        ev.action = if deny { Action::Denied } else { Action::Alerted };
        ev.rule = decision.rule.clone();
        describe_process(&mut ev);
        shared.emitter.send(ev);
    }
}

/// Whether a report about `pid` may be sent now (the per-process rate limit); counts the ones that may not.
fn admitted(shared: &Shared, pid: u32) -> bool {
    let ok = shared.emitter.admit(pid, Instant::now());
    if !ok {
        bump(&shared.stats.rate_limited);
    }
    ok
}

/// Reads what identifies the acting process while it still exists (it waits in `open`/`execve` until the verdict
/// was written, and a refused `cat` is gone microseconds later): exe, ids, parent, start time (the guid's input),
/// comm. Done only for events that are emitted, which are rare; the pipeline enriches the rest.
fn describe_process(ev: &mut Event) {
    let pid = ev.process.pid;
    if ev.process.exe.is_empty()
        && let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe"))
    {
        ev.process.exe = exe.to_string_lossy().into_owned();
    }
    if let Ok(raw) = i32::try_from(pid) {
        read_ids(raw, ev);
    }
    if let Some(st) = ringwatch_core::proc_table::read_stat(pid) {
        ev.process.ppid = st.ppid;
        ev.process.start_ticks = st.start_ticks;
        ev.process.comm = st.comm;
    }
}

/// Answers with the check's `on_timeout` and reports it: the file event (`alerted` when allowed, `denied`) and a
/// `sensor`/`error` event saying why.
fn conclude_late(shared: &Shared, fd: &OwnedFd, mut ev: Event, check: &ContentCheck, why: &str) {
    let deny = check.on_timeout == TimeoutVerdict::Deny;
    respond(shared, fd, deny);
    bump(&shared.stats.timeouts);
    if !admitted(shared, ev.process.pid) {
        return;
    }
    let path = ev.file.as_ref().map(|f| f.path.clone()).unwrap_or_default();
    let message = format!(
        "{} verdict for {} of {path} by pid {} timed out ({why}); {} per `on_timeout: {}` of `{}`",
        if deny { "deny" } else { "allow" },
        ev.activity,
        ev.process.pid,
        if deny { "denied" } else { "allowed" },
        check.on_timeout.as_str(),
        check.rule
    );
    ev.action = if deny { Action::Denied } else { Action::Alerted };
    ev.rule = Some(check.rule.clone());
    describe_process(&mut ev);
    let mut sensor = Event::sensor(Activity::Error, COMPONENT, message, Some(1));
    sensor.file = ev.file.clone();
    shared.emitter.send(ev);
    shared.emitter.send(sensor);
}

/// A hash worker: computes hashes until the job queue closes.
fn hash_worker(shared: &Shared, jobs: &Receiver<Job>) {
    for job in jobs {
        let wanted = || lock(&shared.pending).contains_key(&job.id);
        let result = hash::sha256_fd(job.fd.as_fd(), job.key.size, &wanted);
        match result {
            Ok(Some(digest)) => {
                bump(&shared.stats.hashed);
                shared.stats.hashed_bytes.fetch_add(job.key.size, Ordering::Relaxed);
                // Cached even when the verdict already timed out: the next exec of the file is then a hit.
                lock(&shared.cache).insert(job.key, digest.clone());
                let Some(mut p) = lock(&shared.pending).remove(&job.id) else { continue };
                if let Some(f) = &mut p.ev.file {
                    f.sha256 = Some(digest);
                }
                let decision = shared.decider.decide(&p.ev, None);
                conclude(shared, &p.fd, p.ev, &decision);
            }
            Ok(None) => {} // the reader answered it (deadline) already
            Err(e) => {
                if let Some(p) = lock(&shared.pending).remove(&job.id) {
                    conclude_late(shared, &p.fd, p.ev, &p.check, &format!("reading the file failed: {e}"));
                }
            }
        }
    }
}
