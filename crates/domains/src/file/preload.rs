//! File domain, user mode through the LD_PRELOAD hook: file events from inside each hooked process, and deny
//! with `EACCES` before the call reaches the kernel.
//!
//! [`FilePreload`] registers a handler for `FILE_REQUEST` and `FILE_REPORT` on the hook socket
//! ([`crate::preload::SharedSocket`], shared with the process backend). A hooked process opens one session with a
//! hello; the answer tells it what to send:
//! - **monitor** (no policy rule could deny a file call, [`Decider::may_deny`] is false): a one-way report after
//!   each call, with the call's result. The hook pays one non-blocking `send` per call; the decision (alerts) is
//!   left to the pipeline's policy stage. Failed calls are not emitted (like the kernel backend, which only sees
//!   what happened); a report the hook could not send (socket full) is counted and reported as lost.
//! - **verdict** (a rule could deny): a request before each call, answered after [`Decider::decide`]; on deny the
//!   hook returns `EACCES` without calling libc. The event describes the attempt (it is emitted whether or not the
//!   call then succeeds) and says `denied` with the rule. A deny that reached the hook after its timeout is
//!   reported as `alerted` plus a `sensor`/`error` event, never as `denied`.
//!
//! Mapping (the protocol's `FileActivity::classify`, checked on decode): open with `O_CREAT` of a file that did not
//! exist, `O_CREAT|O_EXCL`, `O_TMPFILE`, and mkdir -> `create`; open for writing or truncating, truncate ->
//! `write`; other opens -> `open`; unlink, unlinkat, rmdir, remove -> `delete`; rename, renameat, renameat2 ->
//! `rename` with `file.new_path`; chmod, fchmod, fchmodat -> `chmod`; link, linkat, symlink, symlinkat ->
//! `create` of the new name (`file.path`) with what it refers to in `file.new_path` (the contract has no field
//! of its own for a link's target): the existing file for a hard link, the link's text for a symlink (a relative
//! text joined with the link's directory); chown, lchown, fchownat, fchown -> `chmod` (the contract's one
//! attribute-change activity; the new owner is not reported, the contract has no field for it). `file.flags` is
//! the call's own flags: open(2) flags for the open family (fopen's mode string translated), `AT_*` for
//! unlinkat/fchmodat/linkat/fchownat (`AT_SYMLINK_NOFOLLOW` for lchown), `RENAME_*` for renameat2, `O_DIRECTORY`
//! for mkdir/mkdirat/rmdir; `file.mode` is the creation mode (or chmod's new mode) when the call has one.
//!
//! Paths: the hook sends them absolute (joined with the cwd or the dirfd's target); here they are folded
//! lexically (`.`, `..`) and, when the process shares the agent's mount namespace and root, resolved the way the
//! kernel reports them: the final component followed for open/write/create/chmod of a file, not for delete,
//! rename, directory creation, links, lchown and `AT_SYMLINK_NOFOLLOW` (those act on the link itself; a hard
//! link's source is followed only with `AT_SYMLINK_FOLLOW`). The decider sees the resolved path and, if it
//! differs, the path as named too (deny if either denies), so a symlink cannot dodge a rule; an open-family call
//! classified `create` or `write` is also checked as `open`, as the kernel's permission check sees every open
//! whatever its flags (a rule on `open` of /etc/shadow stops `echo x > /etc/shadow` too). A path whose base
//! the hook could not read is reported as `?/NAME`, like the fanotify backend does.
//!
//! Links: policy path conditions match `file.path` or `file.new_path`, so a `create` rule matches a link whose new
//! name or target it covers. A hard link (link, linkat) is also refused when its source would be refused as
//! `open`, `write` or `chmod`: the new name reaches the same file, and later calls through it would be judged by
//! the new name (closing the hard-link bypass of path rules). A symlink needs no such check: opening through it
//! is judged by the resolved path.
//!
//! Process facts come from the kernel and /proc, never from the message: pid, uid, gid from `SO_PEERCRED`;
//! the rest (exe, cmdline, ppid, guid, ids, cgroup) read once per session, at its hello (the process is alive
//! then: it waits for the answer), and re-read when the process claims other uids (after a setuid). Every event
//! has `trusted: false`.
//!
//! What it cannot see (asserted in the tests): statically linked programs, raw `syscall(2)`, io_uring, writes
//! through a shared mapping (the open is seen, the stores are not), processes started without the hook, setuid
//! programs, and file calls the hook does not interpose (see the `ringwatch-hook` crate).

use std::collections::HashMap;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use ringwatch_core::event::FileInfo;
use ringwatch_core::{
    Action, Activity, Backend, Decider, Decision, Domain, Event, EventSender, Mode, Probe, Process, Source,
    SourceContext, SourceError, SourceKind,
};
use ringwatch_hook_protocol::{
    CONFIG_FILE_REPORT, CONFIG_FILE_VERDICT, FILE_FLAG_DIRECTORY, FILE_FLAG_NEW_PATH_UNRESOLVED,
    FILE_FLAG_PATH_UNRESOLVED, FileActivity, FileMessage, FileOp, Header, Message, MessageKind, Verdict,
};

pub use crate::preload::Verdicts;
use crate::preload::{self, HookHandler, Peer, Reply, SharedSocket, read_link};

const NAME: &str = "file/preload";
const BACKEND: Backend = Backend { mode: Mode::User, source: SourceKind::Preload };

/// Start-up settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct FilePreloadConfig {
    /// Monitor or verdict mode.
    pub verdicts: Verdicts,
}

/// The preload file backend: the file handler registered on the (shared) hook socket.
#[derive(Debug)]
pub struct FilePreload {
    socket: SharedSocket,
    verdicts: bool,
}

impl FilePreload {
    /// Available when the hook library is found; processes still need it injected.
    pub fn probe() -> Probe {
        preload::probe(Domain::File)
    }

    /// Registers the file handler on the hook socket at `socket` (binding it unless another preload backend of
    /// this agent already did), in verdict mode when `decider` may deny a file event.
    pub fn start(socket: &Path, decider: Arc<dyn Decider>) -> Result<Self, SourceError> {
        Self::start_with(socket, decider, FilePreloadConfig::default())
    }

    /// [`FilePreload::start`] with explicit settings.
    pub fn start_with(
        socket: &Path,
        decider: Arc<dyn Decider>,
        config: FilePreloadConfig,
    ) -> Result<Self, SourceError> {
        let verdicts = config.verdicts.asks(decider.as_ref(), Domain::File);
        let handler = FileHandler { decider, verdicts, sessions: HashMap::new() };
        let kinds = [MessageKind::FILE_REQUEST, MessageKind::FILE_REPORT];
        let socket_share = preload::attach(NAME, socket, &kinds, Box::new(handler))?;
        let hooks = if verdicts { "verdict" } else { "monitor" };
        tracing::info!(
            domain = "file",
            mode = "user",
            source = "preload",
            socket = %socket.display(),
            hooks,
            "listening"
        );
        Ok(FilePreload { socket: socket_share, verdicts })
    }

    /// The socket's path.
    pub fn socket_path(&self) -> &Path {
        self.socket.path()
    }

    /// True when hooked processes ask before each file call (a rule may deny), false when they only report.
    pub fn asks_for_verdicts(&self) -> bool {
        self.verdicts
    }
}

impl Source for FilePreload {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Serves hook messages (for every preload backend, unless another one already does) until shutdown.
    fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let span = tracing::info_span!("source", domain = "file", mode = "user", source = "preload");
        let _enter = span.enter();
        preload::serve(NAME, self.socket, &ctx)
    }
}

/// What is known about a session's process, read once.
struct SessionFacts {
    /// The process as /proc described it (cwd cleared: it may change), or what SO_PEERCRED says.
    process: Process,
    /// Its parent's executable, for `parent_exe` conditions.
    parent_exe: Option<String>,
    /// True when it shares the agent's mount namespace and root, so its paths can be resolved here.
    same_view: bool,
    /// The (uid, euid) its messages claimed last; a change triggers a re-read.
    claimed_ids: (u32, u32),
    /// A claimed pid that was not the peer's has been reported (once per session).
    tamper_reported: bool,
}

impl SessionFacts {
    fn read(peer: Peer) -> Self {
        let (process, parent_exe) = preload::peer_process(peer);
        let mnt_ns = |pid: &str| read_link(&format!("/proc/{pid}/ns/mnt"));
        let same_view = read_link(&format!("/proc/{}/root", peer.pid)).as_deref() == Some("/")
            && mnt_ns(&peer.pid.to_string()).is_some_and(|ns| Some(ns) == mnt_ns("self"));
        let claimed_ids = (process.uid, process.euid);
        SessionFacts { process, parent_exe, same_view, claimed_ids, tamper_reported: false }
    }

    /// Re-reads the ids when the process claims others than last time (it changed ids since the session began).
    fn refresh_ids(&mut self, peer: Peer, claimed: (u32, u32)) {
        if claimed == self.claimed_ids {
            return;
        }
        self.claimed_ids = claimed;
        if let Ok(status) = fs::read_to_string(format!("/proc/{}/status", peer.pid)) {
            let ids = |key: &str| -> Vec<u32> {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(|v| v.split_whitespace().filter_map(|n| n.parse().ok()).collect())
                    .unwrap_or_default()
            };
            let (uids, gids) = (ids("Uid:"), ids("Gid:"));
            if let (Some(uid), Some(euid), Some(gid)) = (uids.first(), uids.get(1), gids.first()) {
                self.process.uid = *uid;
                self.process.euid = *euid;
                self.process.gid = *gid;
                self.process.user = None;
            }
        }
    }
}

/// Turns file requests and reports into events and verdicts.
struct FileHandler {
    decider: Arc<dyn Decider>,
    verdicts: bool,
    /// Facts per session, dropped when the session ends.
    sessions: HashMap<u64, SessionFacts>,
}

impl HookHandler for FileHandler {
    fn handle(&mut self, peer: Peer, _header: &Header, msg: &Message<'_>, reply: &mut Reply<'_>, events: &EventSender) {
        let Message::File(m) = msg else { return };
        if m.dropped > 0 {
            events.count_lost_upstream(u64::from(m.dropped));
        }
        // A failed call changed nothing; a request's outcome is not known yet.
        if m.result.is_some_and(|r| r != 0) {
            return;
        }
        let mut fresh;
        let facts = if peer.session == 0 {
            fresh = SessionFacts::read(peer);
            &mut fresh
        } else {
            self.sessions.entry(peer.session).or_insert_with(|| SessionFacts::read(peer))
        };
        facts.refresh_ids(peer, (m.uid, m.euid));
        let tamper = m.pid != peer.pid && !facts.tamper_reported;
        if tamper {
            facts.tamper_reported = true;
        }
        let (mut ev, named) = file_event(peer, facts, m);
        let parent_exe = facts.parent_exe.clone();
        if m.wants_verdict {
            let decision = decide(self.decider.as_ref(), &ev, named.as_ref(), m.op, parent_exe.as_deref());
            ev.rule = decision.rule;
            match decision.action {
                Action::Denied | Action::Killed => {
                    if reply.send(Verdict::Deny { errno: libc::EACCES }) {
                        ev.action = Action::Denied;
                    } else {
                        ev.action = Action::Alerted;
                        let path = ev.file.as_ref().map(|f| f.path.clone()).unwrap_or_default();
                        events.send(sensor_event(
                            Activity::Error,
                            peer,
                            format!(
                                "deny of {} {path} for pid {} reached the hook after its timeout; \
                                 the call was not stopped",
                                m.op.name(),
                                peer.pid
                            ),
                        ));
                    }
                }
                Action::Alerted => {
                    reply.send(Verdict::Allow);
                    ev.action = Action::Alerted;
                }
                _ => {
                    reply.send(Verdict::Allow);
                }
            }
        }
        if tamper {
            events.send(sensor_event(
                Activity::Tamper,
                peer,
                format!(
                    "file hook message claims pid {} but the socket peer is pid {} ({}); the peer's pid is used",
                    m.pid,
                    peer.pid,
                    m.op.name()
                ),
            ));
        }
        events.send(ev);
    }

    fn config(&self) -> u32 {
        if self.verdicts { CONFIG_FILE_VERDICT } else { CONFIG_FILE_REPORT }
    }

    fn session_opened(&mut self, peer: Peer) {
        // The process waits for the answer to its hello, so /proc still describes it (a short-lived one may be gone
        // by the time its first report is read).
        self.sessions.insert(peer.session, SessionFacts::read(peer));
    }

    fn session_closed(&mut self, session: u64) {
        self.sessions.remove(&session);
    }
}

/// Asks the decider about `ev`, then about its variants until one denies: the paths as named when resolving changed
/// them; for an open-family call classified `create` or `write`, the same call as `open` (the kernel's
/// permission check sees every open whatever its flags, so a rule on `open` must stop `echo x > FILE` too); for a
/// hard link, its source as `open`, `write` and `chmod` (see the module doc). The first deny wins; without one,
/// the decision about `ev` itself.
fn decide(
    decider: &dyn Decider,
    ev: &Event,
    named: Option<&FileInfo>,
    op: FileOp,
    parent_exe: Option<&str>,
) -> Decision {
    let is_deny = |d: &Decision| matches!(d.action, Action::Denied | Action::Killed);
    let first = decider.decide(ev, parent_exe);
    if is_deny(&first) {
        return first;
    }
    let mut variants = Vec::new();
    if let Some(named) = named.filter(|n| Some(*n) != ev.file.as_ref()) {
        let mut v = ev.clone();
        v.file = Some(named.clone());
        variants.push(v);
    }
    if op.opens() && ev.activity != Activity::Open {
        for v in [variants.first().cloned(), Some(ev.clone())].into_iter().flatten() {
            let mut as_open = v;
            as_open.activity = Activity::Open;
            variants.push(as_open);
        }
    }
    if matches!(op, FileOp::Link | FileOp::Linkat) {
        let sources = [ev.file.as_ref(), named].into_iter().flatten().filter_map(|f| f.new_path.clone());
        let mut seen: Vec<String> = Vec::new();
        for source in sources {
            if seen.contains(&source) {
                continue;
            }
            for activity in [Activity::Open, Activity::Write, Activity::Chmod] {
                let mut v = ev.clone();
                v.activity = activity;
                v.file = Some(FileInfo { path: source.clone(), ..FileInfo::default() });
                variants.push(v);
            }
            seen.push(source);
        }
    }
    variants.iter().map(|v| decider.decide(v, parent_exe)).find(is_deny).unwrap_or(first)
}

/// The event for `m`; also the file facts with the paths as named (before symlink resolution) when they differ.
fn file_event(peer: Peer, facts: &SessionFacts, m: &FileMessage<'_>) -> (Event, Option<FileInfo>) {
    let mut ev = Event::new(Domain::File, activity(m.activity), BACKEND);
    ev.process = facts.process.clone();
    ev.process.pid = peer.pid;
    ev.process.tid = if m.pid == peer.pid { m.tid } else { 0 };
    let path = wire_path(m.path, m.has(FILE_FLAG_PATH_UNRESOLVED));
    let new_path = m.new_path.map(|p| wire_path(p, m.has(FILE_FLAG_NEW_PATH_UNRESOLVED)));
    let (flags, mode) = flags_and_mode(m);
    let named = FileInfo { path, new_path, flags, mode, ..FileInfo::default() };
    let resolved = if facts.same_view { resolve(m, &named) } else { named.clone() };
    let named = (resolved != named).then_some(named);
    ev.file = Some(resolved);
    (ev, named)
}

fn activity(a: FileActivity) -> Activity {
    match a {
        FileActivity::Open => Activity::Open,
        FileActivity::Create => Activity::Create,
        FileActivity::Write => Activity::Write,
        FileActivity::Delete => Activity::Delete,
        FileActivity::Rename => Activity::Rename,
        FileActivity::Chmod => Activity::Chmod,
    }
}

/// `file.flags` and `file.mode` for `m` (see the module doc).
fn flags_and_mode(m: &FileMessage<'_>) -> (Option<u32>, Option<u32>) {
    let flags = match m.op {
        _ if m.op.opens() => Some(m.call_flags),
        FileOp::Unlinkat
        | FileOp::Fchmodat
        | FileOp::Renameat2
        | FileOp::Linkat
        | FileOp::Lchown
        | FileOp::Fchownat
        | FileOp::Utimensat => Some(m.call_flags),
        FileOp::Mkdir | FileOp::Mkdirat | FileOp::Rmdir if m.has(FILE_FLAG_DIRECTORY) => Some(libc::O_DIRECTORY as u32),
        _ => None,
    };
    let has_mode = match m.op {
        _ if m.op.opens() => m.mode != 0 || m.call_flags & (libc::O_CREAT as u32) != 0,
        FileOp::Mkdir
        | FileOp::Mkdirat
        | FileOp::Chmod
        | FileOp::Fchmod
        | FileOp::Fchmodat
        | FileOp::Mknod
        | FileOp::Mknodat => true,
        _ => false,
    };
    (flags, has_mode.then_some(m.mode))
}

/// A path from the wire as an event path: absolute ones folded lexically, unresolved ones as `?/NAME`.
fn wire_path(bytes: &[u8], unresolved: bool) -> String {
    let s = String::from_utf8_lossy(bytes);
    if unresolved {
        return format!("?/{s}");
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(s.as_ref()).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out.to_string_lossy().into_owned()
}

/// `named` with its paths resolved as the kernel would report them (see the module doc).
fn resolve(m: &FileMessage<'_>, named: &FileInfo) -> FileInfo {
    let nofollow = m.call_flags & (libc::AT_SYMLINK_NOFOLLOW as u32) != 0;
    let follows_final = match m.activity {
        FileActivity::Open | FileActivity::Write => true,
        FileActivity::Chmod => {
            !(matches!(m.op, FileOp::Lchown | FileOp::Fchownat | FileOp::Fchmodat | FileOp::Utimensat) && nofollow)
        }
        FileActivity::Create => m.op.opens(),
        FileActivity::Delete | FileActivity::Rename => false,
    };
    let new_follows_final = m.op == FileOp::Linkat && m.call_flags & (libc::AT_SYMLINK_FOLLOW as u32) != 0;
    let mut out = named.clone();
    out.path = resolve_path(&named.path, follows_final);
    out.new_path = named.new_path.as_deref().map(|p| resolve_path(p, new_follows_final));
    out
}

/// `path` with symlinks resolved: all of it when `follow_final` and it exists, else its parent (the final
/// component kept as named). Unchanged when nothing resolves.
fn resolve_path(path: &str, follow_final: bool) -> String {
    if !path.starts_with('/') {
        return path.to_owned();
    }
    if follow_final && let Ok(real) = fs::canonicalize(path) {
        return real.to_string_lossy().into_owned();
    }
    let p = Path::new(path);
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) => match fs::canonicalize(parent) {
            Ok(real) => real.join(name).to_string_lossy().into_owned(),
            Err(_) => path.to_owned(),
        },
        _ => path.to_owned(),
    }
}

/// A `sensor` event of this backend about `peer`.
fn sensor_event(activity: Activity, peer: Peer, message: String) -> Event {
    preload::sensor_event(NAME, activity, peer, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringwatch_hook_protocol::{FILE_FLAG_CREATES, FILE_FLAG_WRITES};

    fn msg(op: FileOp, flags: u16, call_flags: u32, mode: u32) -> FileMessage<'static> {
        FileMessage {
            wants_verdict: false,
            op,
            activity: FileActivity::classify(op, flags),
            flags,
            pid: 1,
            tid: 1,
            uid: 0,
            euid: 0,
            call_flags,
            mode,
            result: Some(0),
            dropped: 0,
            path: b"/tmp/x",
            new_path: None,
        }
    }

    #[test]
    fn wire_paths_fold_dots_and_mark_unresolved_ones() {
        assert_eq!(wire_path(b"/a/./b/../c", false), "/a/c");
        assert_eq!(wire_path(b"/../..//x", false), "/x");
        assert_eq!(wire_path(b"/", false), "/");
        assert_eq!(wire_path(b"rel/name", true), "?/rel/name");
    }

    #[test]
    fn flags_and_modes_follow_the_documented_mapping() {
        let create = (libc::O_WRONLY | libc::O_CREAT) as u32;
        assert_eq!(
            flags_and_mode(&msg(FileOp::Openat, FILE_FLAG_CREATES | FILE_FLAG_WRITES, create, 0o600)),
            (Some(create), Some(0o600))
        );
        assert_eq!(flags_and_mode(&msg(FileOp::Open, 0, 0, 0)), (Some(0), None), "O_RDONLY is a flag value");
        assert_eq!(flags_and_mode(&msg(FileOp::Unlink, 0, 0, 0)), (None, None));
        assert_eq!(
            flags_and_mode(&msg(FileOp::Mkdir, FILE_FLAG_DIRECTORY, 0, 0o755)),
            (Some(libc::O_DIRECTORY as u32), Some(0o755))
        );
        assert_eq!(flags_and_mode(&msg(FileOp::Chmod, 0, 0, 0o4755)), (None, Some(0o4755)));
        assert_eq!(flags_and_mode(&msg(FileOp::Renameat2, 0, 1, 0)), (Some(1), None));
        let follow = libc::AT_SYMLINK_FOLLOW as u32;
        assert_eq!(flags_and_mode(&msg(FileOp::Linkat, 0, follow, 0)), (Some(follow), None));
        assert_eq!(flags_and_mode(&msg(FileOp::Link, 0, 0, 0)), (None, None));
        assert_eq!(flags_and_mode(&msg(FileOp::Symlinkat, 0, 0, 0)), (None, None));
        assert_eq!(flags_and_mode(&msg(FileOp::Chown, 0, 0, 0)), (None, None), "no mode: the owner is not a mode");
        let nofollow = libc::AT_SYMLINK_NOFOLLOW as u32;
        assert_eq!(flags_and_mode(&msg(FileOp::Lchown, 0, nofollow, 0)), (Some(nofollow), None));
        assert_eq!(flags_and_mode(&msg(FileOp::Fchown, 0, 0, 0)), (None, None));
    }

    /// Denies one activity on one exact path.
    struct DenyOne(Activity, &'static str);

    impl Decider for DenyOne {
        fn decide(&self, ev: &Event, _parent_exe: Option<&str>) -> Decision {
            match &ev.file {
                Some(f) if ev.activity == self.0 && f.path == self.1 => {
                    Decision { action: Action::Denied, rule: Some("r".into()) }
                }
                _ => Decision::default(),
            }
        }
    }

    #[test]
    fn a_hard_link_is_decided_on_its_source_too_a_symlink_is_not() {
        let mut ev = Event::new(Domain::File, Activity::Create, BACKEND);
        ev.file = Some(FileInfo { path: "/tmp/x".into(), new_path: Some("/etc/shadow".into()), ..FileInfo::default() });
        let denied = |d: &dyn Decider, op| decide(d, &ev, None, op, None).action == Action::Denied;
        for activity in [Activity::Open, Activity::Write, Activity::Chmod] {
            let rule = DenyOne(activity, "/etc/shadow");
            assert!(denied(&rule, FileOp::Link) && denied(&rule, FileOp::Linkat), "{activity:?}");
            assert!(!denied(&rule, FileOp::Symlink) && !denied(&rule, FileOp::Symlinkat), "{activity:?}");
        }
        assert!(!denied(&DenyOne(Activity::Delete, "/etc/shadow"), FileOp::Link), "a link does not delete");
        assert!(denied(&DenyOne(Activity::Create, "/tmp/x"), FileOp::Symlink), "the new name is a create");
        // The source as named counts too (it may differ from the resolved one).
        let named = FileInfo { path: "/tmp/x".into(), new_path: Some("/alias/shadow".into()), ..FileInfo::default() };
        let d = decide(&DenyOne(Activity::Open, "/alias/shadow"), &ev, Some(&named), FileOp::Link, None);
        assert_eq!(d.action, Action::Denied);
    }

    #[test]
    fn resolution_follows_the_final_link_only_where_the_kernel_does() {
        let dir = std::env::temp_dir().join(format!("rw-file-preload-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("real")).expect("mkdir");
        fs::write(dir.join("real/target"), "x").expect("write");
        std::os::unix::fs::symlink(dir.join("real"), dir.join("alias")).expect("symlink dir");
        std::os::unix::fs::symlink(dir.join("real/target"), dir.join("real/link")).expect("symlink file");
        let real = fs::canonicalize(dir.join("real")).expect("exists");
        let alias_link = format!("{}/alias/link", dir.display());
        assert_eq!(resolve_path(&alias_link, true), format!("{}/target", real.display()));
        assert_eq!(resolve_path(&alias_link, false), format!("{}/link", real.display()));
        assert_eq!(resolve_path(&format!("{}/alias/new", dir.display()), true), format!("{}/new", real.display()));
        assert_eq!(resolve_path("/nonexistent-rw/x", true), "/nonexistent-rw/x");
        assert_eq!(resolve_path("?/x", true), "?/x");
        let _ = fs::remove_dir_all(&dir);
    }
}
