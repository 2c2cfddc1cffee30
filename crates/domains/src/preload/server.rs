//! The agent end of the hook socket: bind, accept, read one request per connection, dispatch, reply.
//!
//! One thread serves every connection with `poll` (100 ms ticks, so shutdown is noticed), which keeps a slow or
//! silent client from holding up the others: a connection that sends nothing within [`REQUEST_DEADLINE`] is
//! closed, and at most [`MAX_PENDING`] wait at once (more are closed at accept; their hooks go ahead). Each
//! connection's peer is taken from `SO_PEERCRED`, which the kernel fills in at `connect`, so pid/uid/gid of an
//! event cannot be forged by the hooked process. Everything else in a request is untrusted: it is decoded with
//! full bounds checks, and a message that does not decode is counted as malformed and its connection closed.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr, accept4, bind, connect, getsockopt, listen, recv,
    send, socket, sockopt,
};
use ringwatch_core::{EventSender, Shutdown};
use ringwatch_hook_protocol::{
    Header, MAX_MESSAGE, Message, MessageKind, VERDICT_LEN, Verdict, decode, encode_verdict,
};

/// How often the serve loop looks at the shutdown token.
const TICK: Duration = Duration::from_millis(100);
/// A connection that has not sent its request after this long is closed (the hook gave up long before).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(1);
/// Most connections waiting for their request at once.
pub const MAX_PENDING: usize = 256;

/// The process at the other end of a hook connection, as the kernel recorded it at `connect` (SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Process id in the agent's pid namespace.
    pub pid: u32,
    /// Effective uid at connect time (SO_PEERCRED records the effective ids, not the real ones).
    pub uid: u32,
    /// Effective gid at connect time.
    pub gid: u32,
}

/// One domain's handling of one message kind. Called on the server thread, so it must be quick: the hooked
/// process is waiting for the verdict.
pub trait HookHandler: Send {
    /// Handles a decoded message from `peer`: decides, answers through `reply` (before emitting events, so the
    /// process waits no longer than needed, and so an event can say whether a deny reached the hook), then emits
    /// its events. A handler that does not reply leaves the server to answer allow.
    fn handle(&mut self, peer: Peer, header: &Header, msg: &Message<'_>, reply: &mut Reply<'_>, events: &EventSender);
}

/// The way back to the hook that sent a request.
#[derive(Debug)]
pub struct Reply<'a> {
    fd: BorrowedFd<'a>,
    seq: u32,
    sent: bool,
}

impl Reply<'_> {
    /// Sends `verdict` (once; later calls do nothing and return false). Returns true when the kernel took it,
    /// false when the hook is gone: it gave up waiting (timeout) and went ahead, so a deny did not happen. (A hook
    /// that timed out but has not closed its socket yet still counts as reached; that window is microseconds.)
    pub fn send(&mut self, verdict: Verdict) -> bool {
        if self.sent {
            return false;
        }
        self.sent = true;
        let mut buf = [0u8; VERDICT_LEN];
        let Ok(len) = encode_verdict(&mut buf, self.seq, verdict) else { return false };
        let Some(bytes) = buf.get(..len) else { return false };
        match send(self.fd.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT) {
            Ok(n) => n == len,
            Err(e) => {
                tracing::debug!(error = %e, "hook left before its verdict");
                false
            }
        }
    }
}

/// Why the server could not bind.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another agent answers on the socket: two agents must not share it.
    #[error("{path}: another ringwatch agent is already listening on this socket; stop it first")]
    AlreadyRunning {
        /// The socket path.
        path: PathBuf,
    },
    /// Something other than a socket is at the path; it is not removed.
    #[error("{path}: exists and is not a socket; refusing to replace it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The path does not fit a unix socket address (108 bytes).
    #[error("{path}: too long for a unix socket address")]
    PathTooLong {
        /// The path.
        path: PathBuf,
    },
    /// A system call failed.
    #[error("{step} {path}: {source}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl ServerError {
    fn io(step: &'static str, path: &Path, source: impl Into<io::Error>) -> Self {
        ServerError::Io { step, path: path.to_owned(), source: source.into() }
    }

    /// True when the error is a permission problem (the agent is not root, or /run is read-only for it).
    pub fn is_permission(&self) -> bool {
        matches!(self, ServerError::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied)
    }
}

/// The listening socket and the handlers by message kind.
pub struct PreloadServer {
    listener: OwnedFd,
    path: PathBuf,
    /// (dev, ino) of the socket file we bound, so we only ever remove our own.
    inode: (u64, u64),
    handlers: HashMap<u16, Box<dyn HookHandler>>,
}

impl std::fmt::Debug for PreloadServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreloadServer").field("path", &self.path).field("kinds", &self.handlers.keys()).finish()
    }
}

/// A connection waiting for its request.
struct Pending {
    fd: OwnedFd,
    peer: Peer,
    since: Instant,
}

impl PreloadServer {
    /// Binds the hook socket at `path`: creates its directory (mode 0755) if missing, replaces a stale socket
    /// left by a dead agent, refuses when a live agent answers there, and makes the socket mode 0666 so
    /// unprivileged processes can report.
    pub fn bind(path: &Path) -> Result<Self, ServerError> {
        let addr = UnixAddr::new(path).map_err(|_| ServerError::PathTooLong { path: path.to_owned() })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| ServerError::io("create directory", dir, e))?;
            // The umask may have narrowed the mode; hooked processes of every user must reach the socket.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .map_err(|e| ServerError::io("chmod directory", dir, e))?;
        }
        remove_stale(path, &addr)?;
        let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
        let listener = socket(AddressFamily::Unix, SockType::SeqPacket, flags, None)
            .map_err(|e| ServerError::io("create socket for", path, e))?;
        bind(listener.as_raw_fd(), &addr).map_err(|e| match e {
            Errno::EADDRINUSE => ServerError::AlreadyRunning { path: path.to_owned() },
            e => ServerError::io("bind", path, e),
        })?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o666)).map_err(|e| ServerError::io("chmod", path, e))?;
        let backlog = Backlog::new(1024).unwrap_or(Backlog::MAXCONN);
        listen(&listener, backlog).map_err(|e| ServerError::io("listen on", path, e))?;
        let md = fs::symlink_metadata(path).map_err(|e| ServerError::io("stat", path, e))?;
        Ok(PreloadServer { listener, path: path.to_owned(), inode: (md.dev(), md.ino()), handlers: HashMap::new() })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Routes messages of `kind` to `handler` (replacing an earlier one). Kinds without a handler are answered
    /// with allow.
    pub fn register(&mut self, kind: MessageKind, handler: Box<dyn HookHandler>) {
        self.handlers.insert(kind.0, handler);
    }

    /// Serves until `shutdown` fires. Never returns early: errors on one connection close that connection.
    pub fn serve(&mut self, events: &EventSender, shutdown: &Shutdown) {
        let mut pending: Vec<Pending> = Vec::new();
        let mut buf = vec![0u8; MAX_MESSAGE + 1];
        while !shutdown.is_triggered() {
            let ready = {
                let mut fds = Vec::with_capacity(pending.len() + 1);
                fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
                fds.extend(pending.iter().map(|p| PollFd::new(p.fd.as_fd(), PollFlags::POLLIN)));
                let timeout = PollTimeout::try_from(TICK).unwrap_or(PollTimeout::MAX);
                match poll(&mut fds, timeout) {
                    Ok(_) => fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect::<Vec<_>>(),
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "poll on the hook socket failed");
                        std::thread::sleep(TICK);
                        continue;
                    }
                }
            };
            // Connections first (their indexes shift once new ones are pushed).
            let mut keep = Vec::with_capacity(pending.len());
            for (conn, is_ready) in pending.drain(..).zip(ready.iter().skip(1)) {
                if *is_ready && self.read_request(&conn, &mut buf, events) {
                    continue;
                }
                if conn.since.elapsed() < REQUEST_DEADLINE {
                    keep.push(conn);
                } else {
                    tracing::debug!(pid = conn.peer.pid, "hook connection sent nothing; closed");
                }
            }
            pending = keep;
            if ready.first().copied().unwrap_or(false) {
                self.accept_all(&mut pending, &mut buf, events);
            }
        }
    }

    /// Accepts every waiting connection. The hook sends its request right after connecting, so each is tried at
    /// once; only those whose request has not arrived yet wait in `pending`.
    fn accept_all(&mut self, pending: &mut Vec<Pending>, buf: &mut [u8], events: &EventSender) {
        loop {
            let fd = match accept4(self.listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK) {
                // SAFETY: accept4 returned a new descriptor that nothing else owns.
                Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(Errno::EAGAIN) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "accept on the hook socket failed");
                    return;
                }
            };
            if pending.len() >= MAX_PENDING {
                // Closing makes that hook go ahead at once instead of waiting for its timeout.
                tracing::debug!("too many hook connections waiting; one closed unanswered");
                continue;
            }
            let Ok(cred) = getsockopt(&fd, sockopt::PeerCredentials) else { continue };
            let peer = Peer { pid: cred.pid().unsigned_abs(), uid: cred.uid(), gid: cred.gid() };
            let conn = Pending { fd, peer, since: Instant::now() };
            if !self.read_request(&conn, buf, events) {
                pending.push(conn);
            }
        }
    }

    /// Reads, decodes, dispatches and answers one request. Returns false when the request has not arrived yet
    /// (keep waiting), true when the connection is finished (its owner drops it, which closes it).
    fn read_request(&mut self, conn: &Pending, buf: &mut [u8], events: &EventSender) -> bool {
        let n = match recv(conn.fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return true, // closed by the hook
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => return false,
            Err(e) => {
                tracing::debug!(pid = conn.peer.pid, error = %e, "reading a hook request failed");
                return true;
            }
        };
        let Some(bytes) = buf.get(..n) else { return true };
        let (header, msg) = match decode(bytes) {
            Ok(decoded) => decoded,
            Err(e) => {
                events.count_malformed();
                tracing::debug!(pid = conn.peer.pid, error = %e, len = n, "malformed hook message");
                return true;
            }
        };
        let mut reply = Reply { fd: conn.fd.as_fd(), seq: header.seq, sent: false };
        match self.handlers.get_mut(&header.kind.0) {
            Some(handler) => handler.handle(conn.peer, &header, &msg, &mut reply, events),
            None => tracing::trace!(kind = header.kind.0, "no handler for hook message kind; allowed"),
        }
        if !reply.sent {
            reply.send(Verdict::Allow);
        }
        true
    }
}

impl Drop for PreloadServer {
    /// Removes the socket file, unless another agent has replaced it since.
    fn drop(&mut self) {
        if let Ok(md) = fs::symlink_metadata(&self.path)
            && (md.dev(), md.ino()) == self.inode
            && let Err(e) = fs::remove_file(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the hook socket");
        }
    }
}

/// Removes a socket left at `path` by an agent that is gone; fails when one still answers or when the path is
/// something else.
fn remove_stale(path: &Path, addr: &UnixAddr) -> Result<(), ServerError> {
    let md = match fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ServerError::io("stat", path, e)),
    };
    if !md.file_type().is_socket() {
        return Err(ServerError::NotASocket { path: path.to_owned() });
    }
    let probe =
        socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
            .map_err(|e| ServerError::io("create socket for", path, e))?;
    match connect(probe.as_raw_fd(), addr) {
        // Someone accepts (or queues) connections there: a live agent. EAGAIN is a live agent with a full queue.
        Ok(()) | Err(Errno::EAGAIN) => Err(ServerError::AlreadyRunning { path: path.to_owned() }),
        Err(Errno::ECONNREFUSED | Errno::ENOENT) => {
            tracing::info!(path = %path.display(), "removing stale hook socket");
            fs::remove_file(path).map_err(|e| ServerError::io("remove stale socket", path, e))
        }
        Err(e) => Err(ServerError::io("probe existing socket", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::socketpair;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).expect("socketpair")
    }

    #[test]
    fn reply_sends_one_verdict_with_the_request_seq() {
        let (agent, hook) = pair();
        let mut reply = Reply { fd: agent.as_fd(), seq: 77, sent: false };
        assert!(reply.send(Verdict::Deny { errno: 0 }));
        assert!(!reply.send(Verdict::Allow), "only the first verdict goes out");
        let mut buf = [0u8; 64];
        let n = recv(hook.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).expect("one message");
        let (header, msg) = decode(&buf[..n]).expect("valid verdict");
        assert_eq!((header.seq, msg), (77, Message::Verdict(Verdict::Deny { errno: 0 })));
        assert_eq!(recv(hook.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT), Err(Errno::EAGAIN));
    }

    #[test]
    fn reply_to_a_hook_that_left_reports_failure() {
        let (agent, hook) = pair();
        drop(hook);
        let mut reply = Reply { fd: agent.as_fd(), seq: 1, sent: false };
        assert!(!reply.send(Verdict::Deny { errno: 0 }));
    }

    #[test]
    fn bind_refuses_paths_that_do_not_fit_a_socket_address() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(200)));
        assert!(matches!(PreloadServer::bind(&long), Err(ServerError::PathTooLong { .. })));
    }
}
