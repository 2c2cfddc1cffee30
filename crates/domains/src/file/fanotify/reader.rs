//! Turns parsed fanotify events into `file` events: path resolution, the activity mapping, write sessions,
//! exclusions and the per-pid rate limit, in that order.
//!
//! # Mapping
//!
//! | fanotify bit      | activity | notes                                                                        |
//! |-------------------|----------|------------------------------------------------------------------------------|
//! | `FAN_CREATE`      | create   | files and directories                                                        |
//! | `FAN_OPEN`        | open     | not for directories; not for the open that created the file (see below)     |
//! | `FAN_OPEN_EXEC`   | exec     | the kernel sets `FAN_OPEN` with it: one `exec`, no `open`                    |
//! | `FAN_ATTRIB`      | chmod    | mode, owner, times, xattrs; only when a parent and name are reported         |
//! | `FAN_MODIFY`      | write    | once per (pid, file) write session                                           |
//! | `FAN_CLOSE_WRITE` | write    | only when no `FAN_MODIFY` of the session was seen (shared-mmap writes)       |
//! | `FAN_DELETE`      | delete   | files and directories                                                        |
//! | `FAN_RENAME`      | rename   | `file.path` is the old path, `file.new_path` the new one                     |
//!
//! One kernel event can carry several bits: the kernel merges an event into an identical one still queued (same
//! pid, same object, same name), so `open(O_CREAT)` + `write` + `close` read late arrive as one
//! `CREATE|OPEN|MODIFY|CLOSE_WRITE`. Bits are handled in the order of the table, which is the order they happen
//! in. A merged event is reported at the position of the first one, and repeated writes or opens merged into it
//! are reported once.
//!
//! **Creating open.** `open(O_CREAT)` of a new file raises `FAN_CREATE` and `FAN_OPEN`; the open is part of the
//! create, so the next `FAN_OPEN` of the same file by the same pid right after its `FAN_CREATE` is not reported.
//!
//! **Write sessions.** A write session of (pid, file) starts at its first `FAN_MODIFY`, which emits `write`; later
//! `FAN_MODIFY`s are suppressed until `FAN_CLOSE_WRITE` ends the session. A `FAN_CLOSE_WRITE` with no session open
//! also emits `write`: a write through a shared mapping raises no `FAN_MODIFY`, and a file opened for writing and
//! closed unwritten looks the same (so it is reported too). Files are identified by their handle.
//!
//! **Link counts.** The kernel reports a link-count change (`unlink`, `link`, rename over a file) as `FAN_ATTRIB`
//! on the inode with no parent or name. These are not `chmod`s and are not reported.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Instant;

use ringwatch_core::event::{Backend, FileInfo, Mode, SourceKind};
use ringwatch_core::{Activity, Domain, Event, EventSender};

use super::fid::{Fid, Malformed, Parsed, RawEvent};
use super::noise::{Exclusions, RateLimiter};
use super::notify::RenameReporting;
use super::resolve::{DirPath, Resolver, UNRESOLVED_DIR, join};

/// `backend` of every event this source emits.
pub const BACKEND: Backend = Backend { mode: Mode::Kernel, source: SourceKind::Fanotify };

/// Most open write sessions and pending creates remembered; beyond it the table is cleared (a session lost this
/// way can give one extra `write`).
const MAX_TRACKED_FILES: usize = 1 << 16;

/// What one run saw, for the final log line and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReaderStats {
    /// Kernel events read (merged ones count once).
    pub records: u64,
    /// Events sent to the pipeline (accepted or counted as queue-full there).
    pub sent: u64,
    /// Events excluded by path.
    pub excluded: u64,
    /// Events over the per-pid rate limit (reported in `sensor`/`drop` summaries).
    pub rate_limited: u64,
    /// Events of the agent itself.
    pub own: u64,
    /// Link-count changes and other events without a parent directory.
    pub nameless: u64,
    /// Directory opens (not reported).
    pub dir_opens: u64,
    /// Queue overflows reported by the kernel.
    pub overflows: u64,
    /// Malformed records.
    pub malformed: u64,
    /// Events whose directory could not be resolved (path `?/NAME`).
    pub unresolved: u64,
}

/// A `FAN_MOVED_FROM` waiting for its `FAN_MOVED_TO` (kernels without `FAN_RENAME`).
#[derive(Debug, Clone)]
struct PendingMove {
    pid: u32,
    path: String,
    excluded: bool,
    inode: Option<u64>,
    dev: Option<u64>,
}

/// Where an event happened, resolved.
#[derive(Debug, Clone)]
struct Located {
    path: String,
    excluded: bool,
    inode: Option<u64>,
    dev: Option<u64>,
}

/// The per-event state machine between the parser and the pipeline.
#[derive(Debug)]
pub struct Reader<'a> {
    events: &'a EventSender,
    /// Handle → path.
    pub resolver: Resolver,
    exclusions: Exclusions,
    limiter: RateLimiter,
    renames: RenameReporting,
    own_pid: u32,
    /// Open write sessions: (pid, file handle hash).
    sessions: HashSet<(u32, u64)>,
    /// The last file each pid created, whose next open is the creating open.
    created: HashMap<u32, u64>,
    pending_move: Option<PendingMove>,
    activities: Vec<Activity>,
    /// Counters.
    pub stats: ReaderStats,
}

impl<'a> Reader<'a> {
    /// A reader sending into `events`.
    pub fn new(
        events: &'a EventSender,
        resolver: Resolver,
        exclusions: Exclusions,
        limiter: RateLimiter,
        renames: RenameReporting,
    ) -> Self {
        Reader {
            events,
            resolver,
            exclusions,
            limiter,
            renames,
            own_pid: std::process::id(),
            sessions: HashSet::new(),
            created: HashMap::new(),
            pending_move: None,
            activities: Vec::with_capacity(8),
            stats: ReaderStats::default(),
        }
    }

    /// Handles every event of one read buffer; descriptors that came with events are closed by `close_fd`.
    pub fn handle_buffer(&mut self, buf: &[u8], now: Instant, close_fd: &mut dyn FnMut(i32)) {
        for item in super::fid::events(buf) {
            match item {
                Parsed::Event(ev) => {
                    if ev.fd >= 0 {
                        close_fd(ev.fd);
                    }
                    self.handle_event(&ev, now);
                }
                Parsed::Malformed { why, fd } => {
                    if fd >= 0 {
                        close_fd(fd);
                    }
                    self.malformed(why);
                }
            }
        }
    }

    fn malformed(&mut self, why: Malformed) {
        tracing::trace!(?why, "malformed fanotify event");
        self.stats.malformed += 1;
        self.events.count_malformed();
    }

    /// Handles one well-formed event.
    pub fn handle_event(&mut self, ev: &RawEvent<'_>, now: Instant) {
        self.stats.records += 1;
        if ev.mask & libc::FAN_Q_OVERFLOW != 0 {
            self.overflow();
            return;
        }
        let pid = u32::try_from(ev.pid).unwrap_or(0);
        if ev.mask & libc::FAN_RENAME != 0 {
            self.rename(ev, pid, now);
        } else {
            self.entry_event(ev, pid, now);
        }
    }

    /// The kernel's queue overflowed: at least one event is lost, and any rename or close among them too, so the
    /// directory cache and the session tables can no longer be trusted.
    fn overflow(&mut self) {
        self.stats.overflows += 1;
        self.events.count_lost_upstream(1);
        self.resolver.clear();
        self.sessions.clear();
        self.created.clear();
        tracing::debug!("fanotify queue overflow");
    }

    /// Resolves the entry `dir` names (or the directory itself for `.`).
    fn locate(&mut self, dir: &Fid<'_>, file: Option<&Fid<'_>>) -> Located {
        let name = dir.name.unwrap_or(b".");
        let (path, excluded) = match self.resolver.dir_path(dir, &self.exclusions) {
            DirPath::Known { path, excluded } => (join(path, name), excluded),
            DirPath::Unknown => {
                self.stats.unresolved += 1;
                (join(UNRESOLVED_DIR, name), false)
            }
        };
        let excluded = excluded || self.exclusions.excludes(&path);
        let inode = file.and_then(|f| self.resolver.inode_of(f));
        let dev = self.resolver.filesystem(dir.fsid).map(|f| f.dev);
        Located { path, excluded, inode, dev }
    }

    fn rename(&mut self, ev: &RawEvent<'_>, pid: u32, now: Instant) {
        let (Some(old_dir), Some(new_dir)) = (ev.old_dir, ev.new_dir) else {
            self.malformed(Malformed::BadInfoLen);
            return;
        };
        let old = self.locate(&old_dir, ev.file.as_ref());
        let new = self.locate(&new_dir, None);
        if ev.mask & libc::FAN_ONDIR != 0 {
            // Everything cached under the old name moved; anything under the new name was replaced.
            self.resolver.forget_tree(&old.path);
            self.resolver.forget_tree(&new.path);
        }
        if pid == self.own_pid {
            self.stats.own += 1;
            return;
        }
        if old.excluded && new.excluded {
            self.stats.excluded += 1;
            return;
        }
        self.emit(Activity::Rename, pid, old.path, Some(new.path), old.inode, old.dev, now);
    }

    fn entry_event(&mut self, ev: &RawEvent<'_>, pid: u32, now: Instant) {
        let Some(dir) = ev.dir else {
            // A link-count change (FAN_ATTRIB on the inode alone) or another event without a parent.
            self.stats.nameless += 1;
            return;
        };
        let ondir = ev.mask & libc::FAN_ONDIR != 0;
        let here = self.locate(&dir, ev.file.as_ref());
        if ondir && ev.mask & (libc::FAN_DELETE | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO) != 0 {
            self.resolver.forget_tree(&here.path);
        }
        if pid == self.own_pid {
            self.stats.own += 1;
            return;
        }
        let moves = ev.mask & (libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO);
        if moves == 0 {
            self.flush_pending_move_of(pid, now);
        }
        if here.excluded {
            if moves == 0 {
                self.stats.excluded += 1;
                return;
            }
        } else {
            let key = ev.file.as_ref().map(file_key);
            let mut acts = std::mem::take(&mut self.activities);
            acts.clear();
            self.activities_of(ev.mask, pid, key, &mut acts);
            for act in acts.iter().copied() {
                self.emit(act, pid, here.path.clone(), None, here.inode, here.dev, now);
            }
            self.activities = acts;
        }
        if moves != 0 {
            self.moved(moves, pid, here, now);
        }
    }

    /// The activities one event's bits stand for, applying the creating-open and write-session rules.
    fn activities_of(&mut self, mask: u64, pid: u32, key: Option<u64>, out: &mut Vec<Activity>) {
        if mask & libc::FAN_ONDIR != 0 {
            if mask & libc::FAN_CREATE != 0 {
                out.push(Activity::Create);
            }
            if mask & (libc::FAN_OPEN | libc::FAN_OPEN_EXEC) != 0 {
                self.stats.dir_opens += 1;
            }
            if mask & libc::FAN_ATTRIB != 0 {
                out.push(Activity::Chmod);
            }
            if mask & libc::FAN_DELETE != 0 {
                out.push(Activity::Delete);
            }
            return;
        }
        if mask & libc::FAN_CREATE != 0 {
            out.push(Activity::Create);
            if let Some(k) = key {
                bounded_insert(&mut self.created, pid, k);
            }
        }
        if mask & libc::FAN_OPEN_EXEC != 0 {
            out.push(Activity::Exec);
        } else if mask & libc::FAN_OPEN != 0 {
            let creating = key.is_some() && self.created.get(&pid).copied() == key;
            if creating {
                self.created.remove(&pid);
            } else {
                out.push(Activity::Open);
            }
        }
        if mask & libc::FAN_ATTRIB != 0 {
            out.push(Activity::Chmod);
        }
        let modify = mask & libc::FAN_MODIFY != 0;
        let close_write = mask & libc::FAN_CLOSE_WRITE != 0;
        match key {
            Some(k) => {
                if modify && self.start_session(pid, k) {
                    out.push(Activity::Write);
                }
                if close_write && !self.sessions.remove(&(pid, k)) {
                    out.push(Activity::Write);
                }
            }
            // Without the file's own handle sessions cannot be tracked: one write per event.
            None if modify || close_write => out.push(Activity::Write),
            None => {}
        }
        if mask & libc::FAN_DELETE != 0 {
            out.push(Activity::Delete);
        }
    }

    /// Starts a write session; false when one is already open.
    fn start_session(&mut self, pid: u32, key: u64) -> bool {
        if self.sessions.len() >= MAX_TRACKED_FILES {
            self.sessions.clear();
        }
        self.sessions.insert((pid, key))
    }

    /// `FAN_MOVED_FROM` / `FAN_MOVED_TO` on kernels without `FAN_RENAME`: a `MOVED_FROM` waits for the next
    /// `MOVED_TO` of the same pid, and the pair becomes one `rename`. An unpaired half is still reported as a
    /// `rename`, with the unknown side `?`.
    fn moved(&mut self, bits: u64, pid: u32, here: Located, now: Instant) {
        if bits & libc::FAN_MOVED_FROM != 0 {
            self.flush_pending_move(now);
            self.pending_move =
                Some(PendingMove { pid, path: here.path, excluded: here.excluded, inode: here.inode, dev: here.dev });
            return;
        }
        match self.pending_move.take() {
            Some(from) if from.pid == pid => {
                if !(from.excluded && here.excluded) {
                    self.emit(Activity::Rename, pid, from.path, Some(here.path), from.inode, from.dev, now);
                } else {
                    self.stats.excluded += 1;
                }
            }
            other => {
                self.pending_move = other;
                if !here.excluded {
                    self.emit(Activity::Rename, pid, UNRESOLVED_DIR.to_owned(), Some(here.path), None, here.dev, now);
                }
            }
        }
    }

    fn flush_pending_move_of(&mut self, pid: u32, now: Instant) {
        if self.pending_move.as_ref().is_some_and(|m| m.pid == pid) {
            self.flush_pending_move(now);
        }
    }

    /// Reports a `MOVED_FROM` whose `MOVED_TO` never came (moved somewhere not watched or ignored).
    pub fn flush_pending_move(&mut self, now: Instant) {
        if let Some(m) = self.pending_move.take()
            && !m.excluded
        {
            self.emit(Activity::Rename, m.pid, m.path, Some(UNRESOLVED_DIR.to_owned()), m.inode, m.dev, now);
        }
    }

    /// Sends one event, or counts it against the pid's rate limit.
    #[allow(clippy::too_many_arguments)] // the fields of one event
    fn emit(
        &mut self,
        activity: Activity,
        pid: u32,
        path: String,
        new_path: Option<String>,
        inode: Option<u64>,
        dev: Option<u64>,
        now: Instant,
    ) {
        if !self.limiter.allow(pid, now) {
            self.stats.rate_limited += 1;
            return;
        }
        let mut ev = Event::new(Domain::File, activity, BACKEND);
        ev.process.pid = pid;
        ev.file = Some(FileInfo { path, new_path, inode, dev, ..FileInfo::default() });
        self.stats.sent += 1;
        self.events.send(ev);
    }

    /// Ends finished rate-limit windows and sends one `sensor`/`drop` summary per pid that went over the limit.
    pub fn sweep(&mut self, now: Instant) {
        self.limiter.sweep(now);
        self.send_summaries();
    }

    /// At shutdown: reports a pending half rename and every open rate-limit window.
    pub fn finish(&mut self, now: Instant) {
        self.flush_pending_move(now);
        self.limiter.finish();
        self.send_summaries();
    }

    fn send_summaries(&mut self) {
        let events = self.events;
        // Queue full: the count stays due and is tried again at the next sweep, so no drop goes unreported.
        self.limiter.send_due(|pid, dropped, limit| {
            let msg = format!("rate limit: {dropped} file events of pid {pid} dropped (over {limit} events/s)");
            let mut ev = Event::sensor(Activity::Drop, super::NAME, msg, Some(dropped));
            // The process the drops are about, so the pipeline enriches it with that process's details.
            ev.process.pid = pid;
            events.send(ev)
        });
    }

    /// Which rename reporting this reader expects.
    pub fn renames(&self) -> RenameReporting {
        self.renames
    }
}

/// Bounded insert into a pid-keyed table.
fn bounded_insert(map: &mut HashMap<u32, u64>, pid: u32, key: u64) {
    if map.len() >= MAX_TRACKED_FILES && !map.contains_key(&pid) {
        map.clear();
    }
    map.insert(pid, key);
}

/// A 64-bit digest of a file's handle (fsid, type, bytes): the identity of a file for write sessions.
fn file_key(fid: &Fid<'_>) -> u64 {
    let mut h = DefaultHasher::new();
    fid.fsid.hash(&mut h);
    fid.handle_type.hash(&mut h);
    fid.handle.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::super::fid::tests::{event, fid_record};
    use super::*;
    use ringwatch_core::Pipeline;
    use ringwatch_core::proc_table::ProcessTable;
    use ringwatch_core::sink::{MemorySink, Sink};

    const FSID: [i32; 2] = [3, 4];
    const DIR: &[u8] = b"dirhandle";
    const PID: i32 = 4242;

    fn dfid(name: &str) -> Vec<u8> {
        fid_record(libc::FAN_EVENT_INFO_TYPE_DFID_NAME, FSID, DIR, Some(name))
    }

    fn fid(h: &[u8]) -> Vec<u8> {
        fid_record(libc::FAN_EVENT_INFO_TYPE_FID, FSID, h, None)
    }

    /// Runs `f` with a reader whose directory `DIR` resolves to `/w` (and `/w/x` is excluded), then returns what
    /// the pipeline wrote and the reader's counters.
    fn with_reader(limit: u32, f: impl FnOnce(&mut Reader<'_>)) -> (Vec<Event>, ReaderStats) {
        let pipeline = Pipeline::new(1 << 16);
        let sender = pipeline.sender(super::super::NAME);
        let exclusions = Exclusions::new(&["/w/x".into()], &["**/*.swp".into()]).expect("valid");
        let mut resolver = Resolver::new(Vec::new(), 16);
        resolver.seed(&Fid { fsid: FSID, handle_type: 1, handle: DIR, name: None }, "/w", &exclusions);
        let mut reader = Reader::new(&sender, resolver, exclusions, RateLimiter::new(limit), RenameReporting::Rename);
        f(&mut reader);
        let stats = reader.stats;
        drop(reader);
        drop(sender);
        let memory = MemorySink::default();
        let seen = memory.events();
        let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(memory)];
        pipeline.run("h", &mut ProcessTable::empty(), &mut [], &mut sinks);
        let events = std::mem::take(&mut *seen.lock().expect("sink lock"));
        (events, stats)
    }

    fn feed(reader: &mut Reader<'_>, buf: &[u8]) {
        reader.handle_buffer(buf, Instant::now(), &mut |_| panic!("FID groups pass no descriptors"));
    }

    fn file_events(events: &[Event]) -> Vec<(Activity, String, Option<String>)> {
        events
            .iter()
            .filter(|e| e.domain == Domain::File)
            .map(|e| {
                let f = e.file.as_ref().expect("file info");
                (e.activity, f.path.clone(), f.new_path.clone())
            })
            .collect()
    }

    fn acts(events: &[Event]) -> Vec<Activity> {
        file_events(events).into_iter().map(|(a, _, _)| a).collect()
    }

    #[test]
    fn a_merged_create_open_modify_close_is_one_create_and_one_write() {
        let mask = libc::FAN_CREATE | libc::FAN_OPEN | libc::FAN_MODIFY | libc::FAN_CLOSE_WRITE;
        let (events, _) = with_reader(0, |r| feed(r, &event(mask, PID, &[dfid("a"), fid(b"file-a")])));
        assert_eq!(
            file_events(&events),
            vec![(Activity::Create, "/w/a".into(), None), (Activity::Write, "/w/a".into(), None)]
        );
        assert!(events.iter().all(|e| e.process.pid == PID as u32 && e.backend == BACKEND));
    }

    #[test]
    fn separate_create_then_open_is_the_creating_open_but_a_later_open_is_reported() {
        let (events, _) = with_reader(0, |r| {
            feed(r, &event(libc::FAN_CREATE, PID, &[dfid("a"), fid(b"file-a")]));
            feed(r, &event(libc::FAN_OPEN, PID, &[dfid("a"), fid(b"file-a")]));
            feed(r, &event(libc::FAN_OPEN, PID, &[dfid("a"), fid(b"file-a")]));
            feed(r, &event(libc::FAN_OPEN, PID + 1, &[dfid("a"), fid(b"file-a")]));
        });
        assert_eq!(acts(&events), vec![Activity::Create, Activity::Open, Activity::Open]);
    }

    #[test]
    fn one_write_per_session_and_close_write_alone_is_a_write() {
        let (events, _) = with_reader(0, |r| {
            for _ in 0..5 {
                feed(r, &event(libc::FAN_MODIFY, PID, &[dfid("f"), fid(b"file-f")]));
            }
            feed(r, &event(libc::FAN_CLOSE_WRITE, PID, &[dfid("f"), fid(b"file-f")]));
            // A second session.
            feed(r, &event(libc::FAN_MODIFY, PID, &[dfid("f"), fid(b"file-f")]));
            feed(r, &event(libc::FAN_CLOSE_WRITE, PID, &[dfid("f"), fid(b"file-f")]));
            // mmap write: only the close.
            feed(r, &event(libc::FAN_CLOSE_WRITE, PID, &[dfid("m"), fid(b"file-m")]));
            // Another pid writing the same file has its own session.
            feed(r, &event(libc::FAN_MODIFY, PID + 1, &[dfid("f"), fid(b"file-f")]));
        });
        assert_eq!(acts(&events), vec![Activity::Write; 4]);
    }

    #[test]
    fn exec_replaces_its_open_and_dir_opens_are_dropped_but_dir_create_is_kept() {
        let (events, stats) = with_reader(0, |r| {
            feed(r, &event(libc::FAN_OPEN | libc::FAN_OPEN_EXEC, PID, &[dfid("bin"), fid(b"file-bin")]));
            feed(r, &event(libc::FAN_OPEN | libc::FAN_ONDIR, PID, &[dfid("."), fid(b"dir")]));
            feed(r, &event(libc::FAN_CREATE | libc::FAN_ONDIR, PID, &[dfid("sub"), fid(b"sub")]));
            feed(r, &event(libc::FAN_ATTRIB, PID, &[dfid("bin"), fid(b"file-bin")]));
        });
        assert_eq!(acts(&events), vec![Activity::Exec, Activity::Create, Activity::Chmod]);
        assert_eq!(stats.dir_opens, 1);
    }

    #[test]
    fn link_count_attrib_without_a_parent_is_not_a_chmod() {
        let (events, stats) = with_reader(0, |r| feed(r, &event(libc::FAN_ATTRIB, PID, &[fid(b"file-x")])));
        assert!(acts(&events).is_empty());
        assert_eq!(stats.nameless, 1);
    }

    #[test]
    fn rename_reports_old_and_new_paths_and_a_dir_rename_invalidates_the_cache() {
        let (events, _) = with_reader(0, |r| {
            let old = fid_record(libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, FSID, DIR, Some("a"));
            let new = fid_record(libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, FSID, DIR, Some("b"));
            feed(r, &event(libc::FAN_RENAME, PID, &[old, new, fid(b"file-a")]));
            assert_eq!(r.resolver.cached(), 1);
            let old = fid_record(libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, FSID, DIR, Some("d"));
            let new = fid_record(libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, FSID, DIR, Some("e"));
            feed(r, &event(libc::FAN_RENAME | libc::FAN_ONDIR, PID, &[old, new, fid(b"dir-d")]));
            assert_eq!(r.resolver.cached(), 1, "/w itself is not under /w/d");
            // Renaming the cached directory itself drops it.
            let old = fid_record(libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, FSID, DIR, Some("."));
            let new = fid_record(libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, FSID, DIR, Some("."));
            feed(r, &event(libc::FAN_RENAME | libc::FAN_ONDIR, PID, &[old, new, fid(b"dir-w")]));
            assert_eq!(r.resolver.cached(), 0);
        });
        assert_eq!(file_events(&events)[0], (Activity::Rename, "/w/a".into(), Some("/w/b".into())));
        assert_eq!(file_events(&events)[1], (Activity::Rename, "/w/d".into(), Some("/w/e".into())));
    }

    #[test]
    fn an_unresolvable_directory_gives_question_mark_name() {
        let (events, stats) = with_reader(0, |r| {
            let other = fid_record(libc::FAN_EVENT_INFO_TYPE_DFID_NAME, FSID, b"gone-dir", Some("lost"));
            feed(r, &event(libc::FAN_DELETE, PID, &[other, fid(b"file-lost")]));
        });
        assert_eq!(file_events(&events), vec![(Activity::Delete, "?/lost".into(), None)]);
        assert_eq!(stats.unresolved, 1);
    }

    #[test]
    fn exclusions_by_prefix_and_glob_and_the_agents_own_pid() {
        let (events, stats) = with_reader(0, |r| {
            let x = fid_record(libc::FAN_EVENT_INFO_TYPE_DFID_NAME, FSID, DIR, Some("x"));
            feed(r, &event(libc::FAN_CREATE, PID, &[x, fid(b"x")]));
            feed(r, &event(libc::FAN_CREATE, PID, &[dfid(".a.swp"), fid(b"swp")]));
            feed(r, &event(libc::FAN_CREATE, std::process::id() as i32, &[dfid("mine"), fid(b"mine")]));
            feed(r, &event(libc::FAN_CREATE, PID, &[dfid("kept"), fid(b"kept")]));
        });
        assert_eq!(file_events(&events), vec![(Activity::Create, "/w/kept".into(), None)]);
        assert_eq!((stats.excluded, stats.own), (2, 1));
    }

    #[test]
    fn over_the_rate_limit_events_are_counted_in_one_summary_per_pid() {
        let (events, stats) = with_reader(10, |r| {
            let now = Instant::now();
            for i in 0..25 {
                let name = format!("f{i}");
                r.handle_buffer(&event(libc::FAN_CREATE, PID, &[dfid(&name), fid(name.as_bytes())]), now, &mut |_| {});
            }
            r.finish(now);
        });
        let creates = acts(&events).len() as u64;
        let summaries: Vec<&Event> = events
            .iter()
            .filter(|e| {
                e.domain == Domain::Sensor && e.sensor.as_ref().is_some_and(|s| s.message.starts_with("rate limit"))
            })
            .collect();
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].process.pid, PID as u32);
        let dropped = summaries[0].sensor.as_ref().and_then(|s| s.count).expect("count");
        assert_eq!((creates, dropped), (10, 15));
        assert_eq!(stats.rate_limited, 15);
    }

    #[test]
    fn overflow_counts_a_loss_and_garbage_counts_malformed() {
        let pipeline = Pipeline::new(16);
        let sender = pipeline.sender("t");
        let mut reader = Reader::new(
            &sender,
            Resolver::new(Vec::new(), 4),
            Exclusions::default(),
            RateLimiter::new(0),
            RenameReporting::Rename,
        );
        let mut buf = event(libc::FAN_Q_OVERFLOW, -1, &[]);
        buf.extend_from_slice(&[1, 2, 3]);
        feed(&mut reader, &buf);
        feed(&mut reader, &[0xff; 100]);
        use std::sync::atomic::Ordering::Relaxed;
        assert_eq!(sender.counters().lost_upstream.load(Relaxed), 1);
        assert_eq!(sender.counters().malformed.load(Relaxed), 2);
        assert_eq!((reader.stats.overflows, reader.stats.malformed), (1, 2));
    }

    #[test]
    fn moved_from_and_moved_to_pair_into_one_rename_on_old_kernels() {
        let pipeline = Pipeline::new(64);
        let sender = pipeline.sender("t");
        let exclusions = Exclusions::default();
        let mut resolver = Resolver::new(Vec::new(), 4);
        resolver.seed(&Fid { fsid: FSID, handle_type: 1, handle: DIR, name: None }, "/w", &exclusions);
        let mut r = Reader::new(&sender, resolver, exclusions, RateLimiter::new(0), RenameReporting::MovedPair);
        let now = Instant::now();
        let ev = |mask, pid, name: &str| event(mask, pid, &[dfid(name), fid(b"moved")]);
        r.handle_buffer(&ev(libc::FAN_MOVED_FROM, PID, "a"), now, &mut |_| {});
        // Another process's event in between does not break the pair.
        r.handle_buffer(&ev(libc::FAN_OPEN, PID + 1, "z"), now, &mut |_| {});
        r.handle_buffer(&ev(libc::FAN_MOVED_TO, PID, "b"), now, &mut |_| {});
        // A MOVED_FROM whose MOVED_TO never comes is reported when the pid does something else.
        r.handle_buffer(&ev(libc::FAN_MOVED_FROM, PID, "c"), now, &mut |_| {});
        r.handle_buffer(&ev(libc::FAN_OPEN, PID, "d"), now, &mut |_| {});
        assert_eq!(r.renames(), RenameReporting::MovedPair);
        drop(r);
        drop(sender);
        let memory = MemorySink::default();
        let seen = memory.events();
        let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(memory)];
        pipeline.run("h", &mut ProcessTable::empty(), &mut [], &mut sinks);
        let events = seen.lock().expect("lock").clone();
        assert_eq!(
            file_events(&events),
            vec![
                (Activity::Open, "/w/z".into(), None),
                (Activity::Rename, "/w/a".into(), Some("/w/b".into())),
                (Activity::Rename, "/w/c".into(), Some("?".into())),
                (Activity::Open, "/w/d".into(), None),
            ]
        );
    }
}
