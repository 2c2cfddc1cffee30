//! Process domain, user mode through the LD_PRELOAD hook: exec events from inside each hooked process, and
//! deny-at-exec (the hook fails the call with `EACCES` before the kernel runs anything).
//!
//! [`ProcessPreload`] attaches to the hook socket ([`crate::preload::SharedSocket`], shared with the file backend)
//! and handles exec requests: it
//! builds an `exec` event, asks the [`Decider`] before the exec happens, replies allow or deny, then emits the
//! event. Facts are taken from the most trustworthy place available:
//! - pid from `SO_PEERCRED` (kernel); a claimed pid that is not the peer's (in any of its pid namespaces) is
//!   reported as a `sensor`/`tamper` event and the peer's is used;
//! - real uid/gid, euid and ppid from `/proc/PID/status`, falling back to `SO_PEERCRED`'s effective ids;
//! - cwd from `/proc/PID/cwd`, fexecve's file from `/proc/PID/fd/N`, start time (guid) from `/proc/PID/stat`;
//! - path, argv and the PATH search result from the message (untrusted: the event has `trusted: false`);
//! - cgroup/container from `/proc/PID/cgroup` and the parent's guid, read before the reply while the process is
//!   certainly alive (a hooked process is often gone before the pipeline could read /proc).
//!
//! `exe` is the canonical path of the image, as the kernel backend reports it: the name the program passed, made
//! absolute (joined with cwd, or searched in PATH for a bare name), then symlink-resolved (`/bin/echo` is
//! `/usr/bin/echo` on a merged-/usr system). That resolution happens in the agent's mount namespace, so it is only
//! done when the process shares the agent's mount namespace and root; otherwise `exe` is the lexical absolute path.
//! The decider sees the canonical path first and, when the named path differs, that one too (deny if either
//! denies), so a rule written with a symlinked path still applies and a symlink cannot dodge a rule.
//!
//! The verdict is sent before the event is emitted. A deny that can no longer reach the hook (it timed out and let
//! the exec go ahead, because the decider was slow) is not reported as `denied`: the event says `alerted` and a
//! `sensor`/`error` event says the exec was not stopped.
//!
//! For `posix_spawn*` the hook asks before the child exists: such an event describes the child-to-be, so its
//! `pid` is 0 (unknown), `ppid` is the spawning process and `cwd`/ids are the spawner's (what the child inherits,
//! unless file actions or attributes change them).
//!
//! What it cannot see: everything the hook cannot (static binaries, raw syscalls, processes started without the
//! hook, setuid programs); see the `ringwatch-hook` crate. An exec that passes an environment without the caller's
//! `LD_PRELOAD` is reported as a `sensor`/`tamper` event, since the new image will run unhooked.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use ringwatch_core::guid::{process_guid, start_time_from_ticks};
use ringwatch_core::proc_table::{container_id_from_cgroup, read_stat, tty_name_from_nr};
use ringwatch_core::{
    Action, Activity, Backend, Decider, Decision, Domain, Event, EventSender, Mode, Probe, Process, Source,
    SourceContext, SourceError, SourceKind,
};
use ringwatch_hook_protocol::{ExecOp, ExecRequest, Header, Message, MessageKind, Verdict};

use crate::preload::{self, HookHandler, Peer, Reply, SharedSocket, read_link};

const NAME: &str = "process/preload";

/// PATH used to resolve a bare program name when the process's own cannot be read.
const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The kernel keeps this many bytes of a task name (TASK_COMM_LEN - 1).
const COMM_LEN: usize = 15;

/// The preload exec backend: the exec handler registered on the (shared) hook socket.
#[derive(Debug)]
pub struct ProcessPreload {
    socket: SharedSocket,
}

impl ProcessPreload {
    /// Available when the hook library is found (its path is the detail); processes still need it injected with
    /// `LD_PRELOAD` or `ringwatch hook install`.
    pub fn probe() -> Probe {
        preload::probe(Domain::Process)
    }

    /// Registers the exec handler, which asks `decider` before every exec, on the hook socket at `socket`
    /// (binding it unless another preload backend of this agent already did; see
    /// [`crate::preload::PreloadServer::bind`]).
    pub fn start(socket: &Path, decider: Arc<dyn Decider>) -> Result<Self, SourceError> {
        // A live agent on the socket (ServerError::AlreadyRunning) is a run-time failure, not a missing capability.
        let socket_share = preload::attach(NAME, socket, &[MessageKind::EXEC], Box::new(ExecHandler { decider }))?;
        tracing::info!(domain = "process", mode = "user", source = "preload", socket = %socket.display(), "listening");
        Ok(ProcessPreload { socket: socket_share })
    }

    /// The bound socket's path.
    pub fn socket_path(&self) -> &Path {
        self.socket.path()
    }
}

impl Source for ProcessPreload {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Serves hook requests until shutdown, then removes the socket file.
    fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let span = tracing::info_span!("source", domain = "process", mode = "user", source = "preload");
        let _enter = span.enter();
        preload::serve(NAME, self.socket, &ctx)
    }
}

/// Turns exec requests into events and verdicts.
struct ExecHandler {
    decider: Arc<dyn Decider>,
}

impl HookHandler for ExecHandler {
    fn handle(&mut self, peer: Peer, _header: &Header, msg: &Message<'_>, reply: &mut Reply<'_>, events: &EventSender) {
        let Message::Exec(req) = msg else { return };
        let facts = ProcFacts::read(peer.pid);
        let (mut ev, named) = exec_event(peer, &facts, req);
        // Read while the process waits for the verdict: once it has the reply it may exec and exit at once.
        add_context(&mut ev.process, peer.pid);
        let parent_exe = read_link(&format!("/proc/{}/exe", if req.op.spawns() { peer.pid } else { ev.process.ppid }));
        let decision = self.decide(&ev, &named, parent_exe.as_deref());
        ev.rule = decision.rule;
        match decision.action {
            Action::Denied | Action::Killed => {
                if reply.send(Verdict::Deny { errno: libc::EACCES }) {
                    ev.action = Action::Denied;
                } else {
                    // The hook gave up waiting and the exec went ahead: say so rather than claim a deny.
                    ev.action = Action::Alerted;
                    events.send(sensor_event(
                        Activity::Error,
                        peer,
                        format!(
                            "deny of {} for pid {} reached the hook after its timeout; the exec was not stopped",
                            ev.process.exe, peer.pid
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
        if !facts.claims_match(req.pid, peer.pid) {
            events.send(sensor_event(
                Activity::Tamper,
                peer,
                format!(
                    "hook message claims pid {} but the socket peer is pid {} ({}); the peer's pid is used",
                    req.pid,
                    peer.pid,
                    req.op.name()
                ),
            ));
        }
        if req.drops_preload() {
            events.send(sensor_event(
                Activity::Tamper,
                peer,
                format!(
                    "{} of {} with LD_PRELOAD removed from its environment: the new image runs unhooked",
                    req.op.name(),
                    ev.process.exe
                ),
            ));
        }
        events.send(ev);
    }
}

/// cgroup and container, and the parent's guid: read while the process waits for its verdict (hooked processes are
/// often gone before the pipeline could read /proc).
fn add_context(p: &mut Process, peer_pid: u32) {
    if let Ok(cgroups) = fs::read_to_string(format!("/proc/{peer_pid}/cgroup"))
        && let Some(path) = cgroups.lines().find_map(|l| l.strip_prefix("0::"))
    {
        p.container_id = container_id_from_cgroup(path);
        p.cgroup = Some(path.to_owned());
    }
    if p.parent_guid.is_none()
        && p.ppid != 0
        && let Some(st) = read_stat(p.ppid)
    {
        p.parent_guid = Some(process_guid(p.ppid, st.start_ticks));
    }
}

impl ExecHandler {
    /// Asks the decider about `ev` and, unless that already denies, again with the exe as the program named it
    /// when that differs from the canonical path.
    fn decide(&self, ev: &Event, named: &str, parent_exe: Option<&str>) -> Decision {
        let first = self.decider.decide(ev, parent_exe);
        if is_deny(&first) || named == ev.process.exe || named.is_empty() {
            return first;
        }
        let mut as_named = ev.clone();
        as_named.process.exe = named.to_owned();
        let second = self.decider.decide(&as_named, parent_exe);
        if is_deny(&second) { second } else { first }
    }
}

fn is_deny(d: &Decision) -> bool {
    matches!(d.action, Action::Denied | Action::Killed)
}

/// What /proc says about the peer; every field is optional because the process may be gone.
#[derive(Debug, Default)]
struct ProcFacts {
    ppid: Option<u32>,
    /// Real, effective uid.
    uids: Option<(u32, u32)>,
    /// Real gid.
    gid: Option<u32>,
    /// The pid in each pid namespace, outermost first (`NSpid:`).
    nspids: Vec<u32>,
    start_ticks: Option<u64>,
    /// Session id and controlling terminal (`tty_nr`), from /proc/PID/stat.
    session: Option<(u32, u32)>,
    cwd: Option<String>,
    /// True when the process has the agent's mount namespace and root, so paths mean the same for both.
    same_view: bool,
}

impl ProcFacts {
    fn read(pid: u32) -> Self {
        let mut facts = ProcFacts::default();
        if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) {
            for line in status.lines() {
                let Some((key, value)) = line.split_once(':') else { continue };
                let nums: Vec<u32> = value.split_whitespace().filter_map(|n| n.parse().ok()).collect();
                match key {
                    "PPid" => facts.ppid = nums.first().copied(),
                    "Uid" => facts.uids = nums.first().zip(nums.get(1)).map(|(r, e)| (*r, *e)),
                    "Gid" => facts.gid = nums.first().copied(),
                    "NSpid" => facts.nspids = nums,
                    _ => {}
                }
            }
        }
        if let Some(st) = read_stat(pid) {
            facts.start_ticks = Some(st.start_ticks);
            facts.session = Some((st.session, st.tty_nr));
        }
        facts.cwd = read_link(&format!("/proc/{pid}/cwd"));
        let mnt_ns = |pid: &str| read_link(&format!("/proc/{pid}/ns/mnt"));
        facts.same_view = read_link(&format!("/proc/{pid}/root")).as_deref() == Some("/")
            && mnt_ns(&pid.to_string()).is_some_and(|ns| Some(ns) == mnt_ns("self"));
        facts
    }

    /// True when `claimed` is the peer's pid, in the agent's pid namespace or in one of the peer's own.
    fn claims_match(&self, claimed: u32, peer_pid: u32) -> bool {
        claimed == peer_pid || self.nspids.contains(&claimed)
    }

    fn complete(&self) -> bool {
        self.ppid.is_some() && self.uids.is_some() && self.start_ticks.is_some() && self.cwd.is_some()
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Builds the exec event for `req` from `peer`; also returns the exe as the program named it (made absolute).
fn exec_event(peer: Peer, facts: &ProcFacts, req: &ExecRequest<'_>) -> (Event, String) {
    let mut ev = Event::new(Domain::Process, Activity::Exec, Backend { mode: Mode::User, source: SourceKind::Preload });
    let p = &mut ev.process;
    let (uid, euid) = facts.uids.unwrap_or((peer.uid, peer.uid));
    p.uid = uid;
    p.euid = euid;
    p.gid = facts.gid.unwrap_or(peer.gid);
    let own_guid = facts.start_ticks.map(|t| process_guid(peer.pid, t));
    if req.op.spawns() {
        // The child does not exist yet: describe it by its parent, the peer.
        p.pid = 0;
        p.ppid = peer.pid;
        p.parent_guid = own_guid;
    } else {
        p.pid = peer.pid;
        p.tid = if req.pid == peer.pid { req.tid } else { 0 };
        p.ppid = facts.ppid.unwrap_or(req.ppid);
        if let (Some(guid), Some(ticks)) = (own_guid, facts.start_ticks) {
            p.guid = guid;
            p.start_ticks = ticks;
            p.start_time = start_time_from_ticks(ticks);
        }
    }
    if let Some((session, tty_nr)) = facts.session {
        p.session_id = session;
        p.tty = tty_name_from_nr(tty_nr);
    }
    p.cwd = facts.cwd.clone().or_else(|| req.cwd.map(lossy));
    p.cmdline = req.args().map(lossy).collect();
    p.cmdline_truncated = req.argv_truncated();
    let named = exe_path(peer.pid, req, p.cwd.as_deref());
    p.exe = match fs::canonicalize(&named) {
        Ok(real) if facts.same_view && named.starts_with('/') => real.to_string_lossy().into_owned(),
        _ => named.clone(),
    };
    p.comm = comm_of(&p.exe);
    p.partial = !facts.complete();
    (ev, named)
}

/// The absolute path of the program being executed as the program named it, as well as it can be known.
fn exe_path(pid: u32, req: &ExecRequest<'_>, cwd: Option<&str>) -> String {
    if req.op == ExecOp::Fexecve {
        if let Some(target) = read_link(&format!("/proc/{pid}/fd/{}", req.fd)) {
            return target;
        }
        return req.resolved.map(lossy).unwrap_or_default();
    }
    let named = match req.resolved {
        Some(resolved) => lossy(resolved),
        None => lossy(req.path),
    };
    if named.is_empty() {
        return named;
    }
    if named.contains('/') {
        return absolute(&named, cwd);
    }
    // A bare name the hook did not resolve (it found nothing, or an older hook): search the process's PATH.
    let path_var = process_path_var(pid);
    search_path(&named, path_var.as_deref().unwrap_or(FALLBACK_PATH), cwd).unwrap_or(named)
}

/// `path` made absolute against `cwd`, with `.` and `..` folded lexically.
fn absolute(path: &str, cwd: Option<&str>) -> String {
    let joined = match cwd {
        Some(cwd) if !path.starts_with('/') => Path::new(cwd).join(path),
        _ => PathBuf::from(path),
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.to_string_lossy().into_owned()
}

/// `PATH` from /proc/PID/environ.
fn process_path_var(pid: u32) -> Option<String> {
    let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|b| *b == 0).find_map(|kv| kv.strip_prefix(b"PATH=")).map(lossy)
}

/// The first `dir/name` on `path_var` that is an executable regular file.
fn search_path(name: &str, path_var: &str, cwd: Option<&str>) -> Option<String> {
    path_var.split(':').find_map(|dir| {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = absolute(&format!("{dir}/{name}"), cwd);
        let md = fs::metadata(&candidate).ok()?;
        (md.is_file() && md.permissions().mode() & 0o111 != 0).then_some(candidate)
    })
}

/// The task name the kernel gives the new image: the file name, cut to 15 bytes.
fn comm_of(exe: &str) -> String {
    let name = Path::new(exe).file_name().map(OsStr::as_bytes).unwrap_or_default();
    lossy(name.get(..COMM_LEN).unwrap_or(name))
}

/// A `sensor` event of this backend about `peer`.
fn sensor_event(activity: Activity, peer: Peer, message: String) -> Event {
    preload::sensor_event(NAME, activity, peer, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_made_absolute_lexically() {
        assert_eq!(absolute("./bin/x", Some("/home/a")), "/home/a/bin/x");
        assert_eq!(absolute("../x", Some("/home/a")), "/home/x");
        assert_eq!(absolute("/usr/./bin//ls", Some("/nowhere")), "/usr/bin/ls");
        assert_eq!(absolute("x/y", None), "x/y");
    }

    #[test]
    fn bare_names_are_found_on_path() {
        assert_eq!(search_path("sh", "/nonexistent:/bin", None).as_deref(), Some("/bin/sh"));
        assert_eq!(search_path("no-such-ringwatch-prog", "/bin:/usr/bin", None), None);
    }

    #[test]
    fn comm_is_cut_like_the_kernel_does() {
        assert_eq!(comm_of("/usr/bin/echo"), "echo");
        assert_eq!(comm_of("/x/a-very-long-program-name"), "a-very-long-pro");
    }

    #[test]
    fn claimed_pid_matches_any_namespace_pid() {
        let facts = ProcFacts { nspids: vec![4242, 7], ..Default::default() };
        assert!(facts.claims_match(4242, 4242));
        assert!(facts.claims_match(7, 4242));
        assert!(!facts.claims_match(8, 4242));
    }
}
