//! What every domain's preload backend repeats around the shared hook socket: the verdict-mode setting, attaching
//! and serving with errors in the [`SourceError`] contract, the process facts of a hook peer read once per
//! session, and `sensor` events about a peer.

use std::path::Path;

use ringwatch_core::guid::process_guid;
use ringwatch_core::proc_table::{read_proc_process, read_stat};
use ringwatch_core::{Activity, Decider, Domain, Event, Process, SourceContext, SourceError};
use ringwatch_hook_protocol::MessageKind;

use super::{HookHandler, Peer, ServerError, SharedSocket};

/// Whether hooked processes ask the agent before each call of a domain, or only report after the fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verdicts {
    /// Ask when the decider may deny (block, redirect) an event of the domain ([`Decider::may_deny`]), else only
    /// report.
    #[default]
    Auto,
    /// Always ask (every call waits for a verdict).
    Always,
    /// Never ask: report after the fact, deny nothing.
    Never,
}

impl Verdicts {
    /// True when hooks should ask before each call of `domain` under `decider`.
    pub fn asks(self, decider: &dyn Decider, domain: Domain) -> bool {
        match self {
            Verdicts::Auto => decider.may_deny(domain),
            Verdicts::Always => true,
            Verdicts::Never => false,
        }
    }
}

/// [`SharedSocket::attach`] for backend `backend`: a socket it may not bind is a missing privilege, anything else
/// (a live agent on the socket included) a failed start.
pub(crate) fn attach(
    backend: &'static str,
    socket: &Path,
    kinds: &[MessageKind],
    handler: Box<dyn HookHandler>,
) -> Result<SharedSocket, SourceError> {
    SharedSocket::attach(socket, kinds, handler).map_err(|e: ServerError| match e {
        e if e.is_permission() => SourceError::MissingPrivilege { backend, what: e.to_string() },
        e => SourceError::Failed { backend, step: "bind hook socket".into(), message: e.to_string() },
    })
}

/// [`SharedSocket::serve`] for backend `backend`, until `ctx.shutdown`.
pub(crate) fn serve(backend: &'static str, socket: SharedSocket, ctx: &SourceContext) -> Result<(), SourceError> {
    socket.serve(ctx).map_err(|e| SourceError::Failed {
        backend,
        step: "serve hook socket".into(),
        message: e.to_string(),
    })
}

/// The target of a symlink (a `/proc` link) as a string, `None` when it cannot be read.
pub(crate) fn read_link(path: &str) -> Option<String> {
    std::fs::read_link(path).ok().map(|p| p.to_string_lossy().into_owned())
}

/// A hook peer's process as `/proc` describes it (cwd cleared: it may change during a session), with its parent's
/// guid, or, when `/proc` cannot be read, what `SO_PEERCRED` says (marked partial); and its parent's executable.
pub(crate) fn peer_process(peer: Peer) -> (Process, Option<String>) {
    let mut process = read_proc_process(peer.pid).unwrap_or_else(|| Process {
        pid: peer.pid,
        uid: peer.uid,
        euid: peer.uid,
        gid: peer.gid,
        partial: true,
        ..Process::default()
    });
    process.cwd = None;
    if process.ppid != 0
        && let Some(st) = read_stat(process.ppid)
    {
        process.parent_guid = Some(process_guid(process.ppid, st.start_ticks));
    }
    let parent_exe = (process.ppid != 0).then(|| read_link(&format!("/proc/{}/exe", process.ppid))).flatten();
    (process, parent_exe)
}

/// A `sensor` event of `backend` about `peer` (its pid and ids are kernel-verified; the pipeline fills in the rest).
pub(crate) fn sensor_event(backend: &'static str, activity: Activity, peer: Peer, message: String) -> Event {
    let mut ev = Event::sensor(activity, backend, message, None);
    ev.process.pid = peer.pid;
    ev.process.uid = peer.uid;
    ev.process.euid = peer.uid;
    ev.process.gid = peer.gid;
    ev
}
