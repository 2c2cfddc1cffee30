//! The agent end of the hook socket: bind, accept, read requests and reports, dispatch, reply.
//!
//! Two kinds of connection arrive on the one socket. A *one-shot* connection (exec requests, and a file request
//! whose thread found the session busy) carries one request and gets one verdict; one that sends nothing within
//! [`REQUEST_DEADLINE`] is closed, and at most [`MAX_PENDING`] wait at once (more are closed at accept; their
//! hooks go ahead). A *session* (one per hooked process that makes file calls) starts with a `HELLO`, which the
//! server answers itself with a `CONFIG` (the OR of every registered handler's [`HookHandler::config`]; nothing
//! for the agent's own pid), then carries one-way reports and verdict requests until the process exits or execs.
//! At most [`MAX_SESSIONS`] are open at once; a hello beyond that is refused (counted as lost), and its process
//! goes on unmonitored until it retries.
//!
//! One thread serves every connection with `epoll` (100 ms ticks, so shutdown is noticed). It reads up to
//! [`BATCH`] messages from a connection per wake-up, so a process in a file storm cannot starve the others, and
//! after a wake-up that brought only one-way reports it pauses for [`COALESCE`] so that reports are read in
//! batches instead of waking the agent once each.
//! Each connection's peer is taken from `SO_PEERCRED`, which the kernel fills in at `connect`, so pid/uid/gid of
//! an event cannot be forged by the hooked process. Everything else is untrusted: it is decoded with full bounds
//! checks, and a message that does not decode is counted as malformed and its connection closed.
//!
//! Handlers are kept in a [`Routes`] table behind a mutex, shared with [`super::SharedSocket`] so that several
//! preload backends (process, file) register on one server; the serve loop locks it per message (uncontended).

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::socket::{
    AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr, accept4, bind, connect, getsockopt, listen, recv,
    send, socket, sockopt,
};
use ringwatch_core::{EventSender, Shutdown};
use ringwatch_hook_protocol::{
    CONFIG_LEN, Config, Header, MAX_MESSAGE, Message, MessageKind, VERDICT_LEN, Verdict, decode, encode_config,
    encode_verdict,
};

/// How often the serve loop looks at the shutdown token.
const TICK: Duration = Duration::from_millis(100);
/// A one-shot connection that has not sent its request after this long is closed (the hook gave up long before).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(1);
/// Most one-shot connections (or sessions before their hello) waiting for their first message at once.
pub const MAX_PENDING: usize = 256;
/// Most sessions open at once (each is one descriptor in the agent, whose soft limit `bind` raises).
pub const MAX_SESSIONS: usize = 8192;
/// Most messages read from one connection per wake-up.
pub const BATCH: usize = 256;
/// At shutdown, how long the server keeps reading what hooks already sent.
const DRAIN: Duration = Duration::from_millis(500);
/// The listener's epoll token; connections count up from 1.
const LISTENER: u64 = 0;
/// After a wake-up that brought only one-way reports, the loop pauses this long before waiting again, so that a
/// process in a file storm finds the agent not waiting and its next sends wake nobody (waking the agent was most
/// of a report's cost). Requests never cause the pause; one arriving during it waits at most this long. Short
/// enough that a hook's socket buffer (about 200 reports) does not fill during it even in a tmpfs storm.
pub const COALESCE: Duration = Duration::from_micros(500);
/// A round with at least this many reports skips the pause: the hooks are sending faster than the pause would
/// let the agent read, so it reads on at once instead (and, being busy, is not woken by their sends anyway).
pub const COALESCE_UNDER: usize = 64;

/// The process at the other end of a hook connection, as the kernel recorded it at `connect` (SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Process id in the agent's pid namespace.
    pub pid: u32,
    /// Effective uid at connect time (SO_PEERCRED records the effective ids, not the real ones).
    pub uid: u32,
    /// Effective gid at connect time.
    pub gid: u32,
    /// The session this message came on (unique for the server's life), 0 for a one-shot connection.
    pub session: u64,
}

/// One domain's handling of some message kinds. Called on the server thread, so it must be quick: the hooked
/// process may be waiting for the verdict, and every other hooked process waits behind it.
pub trait HookHandler: Send {
    /// Handles a decoded message from `peer`: decides, answers through `reply` (before emitting events, so the
    /// process waits no longer than needed, and so an event can say whether a deny reached the hook), then emits
    /// its events. A handler that does not reply to a message that wants one leaves the server to answer allow.
    fn handle(&mut self, peer: Peer, header: &Header, msg: &Message<'_>, reply: &mut Reply<'_>, events: &EventSender);

    /// `CONFIG_*` bits this handler wants in the answer to a hook's hello (what the hook should send).
    fn config(&self) -> u32 {
        0
    }

    /// A hook opened session `peer.session` (its hello, before the answer): the process is alive and waiting,
    /// the best moment to read what /proc says about it.
    fn session_opened(&mut self, _peer: Peer) {}

    /// Session `session` ended (its process exited or exec'd): forget what was kept for it.
    fn session_closed(&mut self, _session: u64) {}
}

/// Largest answer [`Reply::send_with`] can send.
pub const MAX_REPLY: usize = 64;
const _: () = assert!(VERDICT_LEN <= MAX_REPLY);

/// The way back to the hook that sent a message.
#[derive(Debug)]
pub struct Reply<'a> {
    fd: BorrowedFd<'a>,
    seq: u32,
    sent: bool,
    wanted: bool,
}

impl Reply<'_> {
    /// Sends `verdict` (once; later calls do nothing and return false). Returns true when the kernel took it,
    /// false when the hook is gone (it gave up waiting and went ahead, so a deny did not happen) or when the message
    /// was a one-way report, which gets no answer. (A hook that timed out but has not closed its socket yet still
    /// counts as reached; that window is microseconds.)
    pub fn send(&mut self, verdict: Verdict) -> bool {
        self.send_with(|buf, seq| encode_verdict(buf, seq, verdict))
    }

    /// Sends the answer `encode` writes (given a buffer of [`MAX_REPLY`] bytes and the request's number; it
    /// returns the length), for domains whose answer is not a plain [`Verdict`] (the network verdict carries the
    /// proxy's address). Once, like [`Reply::send`], with the same meaning of the result.
    pub fn send_with(
        &mut self,
        encode: impl FnOnce(&mut [u8], u32) -> Result<usize, ringwatch_hook_protocol::BufferTooSmall>,
    ) -> bool {
        if self.sent || !self.wanted {
            return false;
        }
        self.sent = true;
        let mut buf = [0u8; MAX_REPLY];
        let Ok(len) = encode(&mut buf, self.seq) else { return false };
        let Some(bytes) = buf.get(..len) else { return false };
        match send(self.fd.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT) {
            Ok(n) => n == len,
            Err(e) => {
                tracing::debug!(error = %e, "hook left before its verdict");
                false
            }
        }
    }

    /// True when the hook waits for a verdict on this message.
    pub fn is_wanted(&self) -> bool {
        self.wanted
    }
}

/// Why the server could not bind or serve.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another agent answers on the socket (or, within this agent, another backend already handles the same
    /// message kinds): two agents must not share it.
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

/// A registered handler: what it handles and where its events go.
struct Slot {
    handler: Box<dyn HookHandler>,
    kinds: Vec<u16>,
    /// The registering backend's own sender, once it runs; until then events go to the serving backend's.
    events: Option<EventSender>,
}

/// The handler table: message kind -> handler, shared by every backend registered on one server.
#[derive(Default)]
pub struct Routes {
    slots: Vec<Option<Slot>>,
    by_kind: HashMap<u16, usize>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes").field("kinds", &self.by_kind.keys().collect::<Vec<_>>()).finish()
    }
}

impl Routes {
    /// Adds `handler` for `kinds`; `Err(kind)` when one of them already has a handler (nothing is changed then).
    pub(crate) fn add(&mut self, kinds: &[MessageKind], handler: Box<dyn HookHandler>) -> Result<usize, MessageKind> {
        if let Some(taken) = kinds.iter().find(|k| self.by_kind.contains_key(&k.0)) {
            return Err(*taken);
        }
        let id = self.slots.len();
        for k in kinds {
            self.by_kind.insert(k.0, id);
        }
        self.slots.push(Some(Slot { handler, kinds: kinds.iter().map(|k| k.0).collect(), events: None }));
        Ok(id)
    }

    /// Removes handler `id` and its kinds.
    pub(crate) fn remove(&mut self, id: usize) {
        if let Some(slot) = self.slots.get_mut(id).and_then(Option::take) {
            for k in slot.kinds {
                self.by_kind.remove(&k);
            }
        }
    }

    /// Sends handler `id`'s events to `events` from now on.
    pub(crate) fn set_events(&mut self, id: usize, events: EventSender) {
        if let Some(Some(slot)) = self.slots.get_mut(id) {
            slot.events = Some(events);
        }
    }

    /// The answer to a hello: every handler's wishes.
    fn config(&self) -> u32 {
        self.slots.iter().flatten().fold(0, |acc, s| acc | s.handler.config())
    }

    /// Hands `msg` to the handler of its kind; false when there is none.
    fn dispatch(
        &mut self,
        peer: Peer,
        header: &Header,
        msg: &Message<'_>,
        reply: &mut Reply<'_>,
        fallback: &EventSender,
    ) -> bool {
        let Some(id) = self.by_kind.get(&header.kind.0).copied() else { return false };
        let Some(Some(slot)) = self.slots.get_mut(id) else { return false };
        let events = slot.events.as_ref().unwrap_or(fallback);
        slot.handler.handle(peer, header, msg, reply, events);
        true
    }

    fn session_opened(&mut self, peer: Peer) {
        for slot in self.slots.iter_mut().flatten() {
            slot.handler.session_opened(peer);
        }
    }

    fn session_closed(&mut self, session: u64) {
        for slot in self.slots.iter_mut().flatten() {
            slot.handler.session_closed(session);
        }
    }
}

/// Locks the routes, surviving a handler that panicked while holding them (the table itself stays consistent:
/// it is only changed by `add`/`remove`, which do not call out).
pub(crate) fn lock(routes: &Mutex<Routes>) -> MutexGuard<'_, Routes> {
    routes.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The listening socket and the handlers by message kind.
pub struct PreloadServer {
    listener: OwnedFd,
    path: PathBuf,
    /// (dev, ino) of the socket file we bound, so we only ever remove our own.
    inode: (u64, u64),
    routes: Arc<Mutex<Routes>>,
}

impl std::fmt::Debug for PreloadServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreloadServer").field("path", &self.path).field("routes", &*lock(&self.routes)).finish()
    }
}

/// An accepted connection.
struct Conn {
    fd: OwnedFd,
    peer: Peer,
    since: Instant,
    /// Said hello: long-lived, no deadline.
    session: bool,
}

/// What the serve loop keeps between wake-ups.
struct ServeState {
    epoll: Epoll,
    conns: HashMap<u64, Conn>,
    /// One-shot connections (and sessions before their hello) in accept order, for the deadline sweep.
    waiting: VecDeque<(Instant, u64)>,
    next_token: u64,
    sessions: usize,
    buf: Vec<u8>,
    own_pid: u32,
    /// One-way reports and messages that wanted an answer, handled since the last wait.
    reports: usize,
    answered: usize,
}

impl PreloadServer {
    /// Binds the hook socket at `path`: creates its directory (mode 0755) if missing, replaces a stale socket
    /// left by a dead agent, refuses when a live agent answers there, and makes the socket mode 0666 so
    /// unprivileged processes can report. Also turns off the hook in the agent itself, should it be loaded there
    /// (system-wide install), and raises the soft descriptor limit for sessions (to the hard limit, at most 65,536).
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
        super::bypass_own_hook();
        raise_fd_limit();
        Ok(PreloadServer {
            listener,
            path: path.to_owned(),
            inode: (md.dev(), md.ino()),
            routes: Arc::new(Mutex::new(Routes::default())),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Routes messages of `kind` to `handler` (replacing an earlier one). Kinds without a handler are answered
    /// with allow when the hook waits for a verdict.
    pub fn register(&mut self, kind: MessageKind, handler: Box<dyn HookHandler>) {
        let mut routes = lock(&self.routes);
        if let Some(old) = routes.by_kind.get(&kind.0).copied() {
            routes.remove(old);
        }
        // Cannot fail: the kind was just freed.
        let _ = routes.add(&[kind], handler);
    }

    /// The handler table, for backends that share this server.
    pub(crate) fn routes(&self) -> &Arc<Mutex<Routes>> {
        &self.routes
    }

    /// Serves until `shutdown` fires; `events` takes the malformed counts and the events of handlers that have
    /// no sender of their own. Errors on one connection close that connection; only a failure to set up the
    /// poll set ends it early.
    pub fn serve(&mut self, events: &EventSender, shutdown: &Shutdown) -> Result<(), ServerError> {
        let epoll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| ServerError::io("epoll for", &self.path, e))?;
        epoll
            .add(self.listener.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))
            .map_err(|e| ServerError::io("epoll add", &self.path, e))?;
        let mut st = ServeState {
            epoll,
            conns: HashMap::new(),
            waiting: VecDeque::new(),
            next_token: LISTENER + 1,
            sessions: 0,
            buf: vec![0u8; MAX_MESSAGE + 1],
            own_pid: std::process::id(),
            reports: 0,
            answered: 0,
        };
        let mut ready = vec![EpollEvent::empty(); 256];
        let timeout = PollTimeout::try_from(TICK).unwrap_or(PollTimeout::MAX);
        while !shutdown.is_triggered() {
            let n = match st.epoll.wait(&mut ready, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "epoll_wait on the hook socket failed");
                    std::thread::sleep(TICK);
                    continue;
                }
            };
            for ev in ready.iter().take(n) {
                match ev.data() {
                    LISTENER => self.accept_all(&mut st, events),
                    token => {
                        self.service(&mut st, token, events);
                    }
                }
            }
            st.sweep();
            if st.reports > 0 && st.reports < COALESCE_UNDER && st.answered == 0 {
                std::thread::sleep(COALESCE);
            }
            st.reports = 0;
            st.answered = 0;
        }
        // Reports already sent are in the sockets' queues: read them (the processes may be gone, their reports are
        // not), then end the sessions so per-session state is dropped.
        // Bounded: a process still in a storm must not hold up the shutdown.
        let drain_until = Instant::now() + DRAIN;
        self.accept_all(&mut st, events);
        let tokens: Vec<u64> = st.conns.keys().copied().collect();
        for token in tokens {
            while st.conns.contains_key(&token)
                && Instant::now() < drain_until
                && self.service(&mut st, token, events) == BATCH
            {}
            self.close(&mut st, token);
        }
        Ok(())
    }

    /// Accepts every waiting connection and reads what each has already sent.
    fn accept_all(&mut self, st: &mut ServeState, events: &EventSender) {
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
            if st.conns.len().saturating_sub(st.sessions) >= MAX_PENDING {
                // Closing makes that hook go ahead at once instead of waiting for its timeout.
                tracing::debug!("too many hook connections waiting; one closed unanswered");
                continue;
            }
            let Ok(cred) = getsockopt(&fd, sockopt::PeerCredentials) else { continue };
            let token = st.next_token;
            st.next_token = st.next_token.wrapping_add(1).max(LISTENER + 1);
            if let Err(e) = st.epoll.add(fd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token)) {
                tracing::warn!(error = %e, "epoll add for a hook connection failed; closed");
                continue;
            }
            let peer = Peer { pid: cred.pid().unsigned_abs(), uid: cred.uid(), gid: cred.gid(), session: 0 };
            let now = Instant::now();
            st.conns.insert(token, Conn { fd, peer, since: now, session: false });
            st.waiting.push_back((now, token));
            self.service(st, token, events);
        }
    }

    /// Reads up to [`BATCH`] messages from connection `token` and handles them; closes it when it is done (a
    /// one-shot answered, the peer gone, a malformed message). Returns how many messages were read.
    fn service(&mut self, st: &mut ServeState, token: u64, events: &EventSender) -> usize {
        let mut read = 0;
        while read < BATCH {
            let Some(conn) = st.conns.get(&token) else { break };
            let n = match recv(conn.fd.as_raw_fd(), &mut st.buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => {
                    self.close(st, token);
                    break;
                }
                Ok(n) => n,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::debug!(pid = conn.peer.pid, error = %e, "reading from a hook failed");
                    self.close(st, token);
                    break;
                }
            };
            read += 1;
            if let Next::Close = self.handle_one(st, token, n, events) {
                self.close(st, token);
                break;
            }
        }
        read
    }

    /// Decodes and handles one received message of `n` bytes.
    fn handle_one(&mut self, st: &mut ServeState, token: u64, n: usize, events: &EventSender) -> Next {
        let Some(conn) = st.conns.get_mut(&token) else { return Next::Close };
        let Some(bytes) = st.buf.get(..n) else { return Next::Close };
        let (header, msg) = match decode(bytes) {
            Ok(decoded) => decoded,
            Err(e) => {
                events.count_malformed();
                tracing::debug!(pid = conn.peer.pid, error = %e, len = n, "malformed hook message");
                return Next::Close;
            }
        };
        let wanted = match msg {
            Message::Hello(_) => {
                if conn.session {
                    // A second hello on a session: answer again, harmless.
                } else if st.sessions >= MAX_SESSIONS {
                    events.count_lost_upstream(1);
                    tracing::warn!(pid = conn.peer.pid, max = MAX_SESSIONS, "too many hook sessions; one refused");
                    return Next::Close;
                } else {
                    conn.session = true;
                    conn.peer.session = token;
                    st.sessions += 1;
                }
                st.answered += 1;
                let config = if conn.peer.pid == st.own_pid {
                    0
                } else {
                    let mut routes = lock(&self.routes);
                    routes.session_opened(conn.peer);
                    routes.config()
                };
                send_config(conn.fd.as_fd(), header.seq, config);
                return Next::More;
            }
            Message::Exec(_) => true,
            Message::File(f) => f.wants_verdict,
            Message::Net(n) => n.wants_verdict,
            Message::Dns(_) => false,
            // A kind from a newer hook: a one-shot connection waits for an answer, a session's may be a report.
            Message::Unknown(_) => !conn.session,
            Message::Verdict(_) | Message::Config(_) | Message::NetVerdict(_) => {
                events.count_malformed();
                tracing::debug!(pid = conn.peer.pid, kind = header.kind.0, "agent-to-hook message from a hook");
                return Next::Close;
            }
        };
        if wanted {
            st.answered += 1;
        } else {
            st.reports += 1;
        }
        let (peer, session) = (conn.peer, conn.session);
        let mut reply = Reply { fd: conn.fd.as_fd(), seq: header.seq, sent: false, wanted };
        if !lock(&self.routes).dispatch(peer, &header, &msg, &mut reply, events) {
            tracing::trace!(kind = header.kind.0, "no handler for hook message kind; allowed");
        }
        if reply.wanted && !reply.sent {
            reply.send(Verdict::Allow);
        }
        if session { Next::More } else { Next::Close }
    }

    /// Closes connection `token`; a session's end is told to the handlers.
    fn close(&mut self, st: &mut ServeState, token: u64) {
        let Some(conn) = st.conns.remove(&token) else { return };
        let _ = st.epoll.delete(conn.fd.as_fd());
        if conn.session {
            st.sessions = st.sessions.saturating_sub(1);
            lock(&self.routes).session_closed(token);
        }
    }
}

/// What to do with a connection after one message.
enum Next {
    More,
    Close,
}

impl ServeState {
    /// Closes one-shot connections (and sessions that never said hello) older than [`REQUEST_DEADLINE`].
    fn sweep(&mut self) {
        while let Some((since, token)) = self.waiting.front().copied() {
            let alive = self.conns.get(&token).is_some_and(|c| !c.session && c.since == since);
            if alive && since.elapsed() < REQUEST_DEADLINE {
                return;
            }
            self.waiting.pop_front();
            if alive && let Some(conn) = self.conns.remove(&token) {
                tracing::debug!(pid = conn.peer.pid, "hook connection sent nothing; closed");
                let _ = self.epoll.delete(conn.fd.as_fd());
            }
        }
    }
}

/// Answers a hello.
fn send_config(fd: BorrowedFd<'_>, seq: u32, flags: u32) {
    let mut buf = [0u8; CONFIG_LEN];
    let Ok(len) = encode_config(&mut buf, seq, Config { flags }) else { return };
    let Some(bytes) = buf.get(..len) else { return };
    if let Err(e) = send(fd.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT) {
        tracing::debug!(error = %e, "hook left before its config");
    }
}

/// Raises the soft descriptor limit to the hard one (at most 65,536), since every hooked process with a session
/// holds one descriptor in the agent. A process-wide setting, done once when the server binds.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        return;
    }
    let want = lim.rlim_max.min(1 << 16);
    if lim.rlim_cur >= want {
        return;
    }
    let new = libc::rlimit { rlim_cur: want, rlim_max: lim.rlim_max };
    // SAFETY: setrlimit reads one valid rlimit; raising the soft limit up to the hard one needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const new) } == 0 {
        tracing::debug!(from = lim.rlim_cur, to = want, "raised the descriptor limit for hook sessions");
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
        let mut reply = Reply { fd: agent.as_fd(), seq: 77, sent: false, wanted: true };
        assert!(reply.send(Verdict::Deny { errno: 0 }));
        assert!(!reply.send(Verdict::Allow), "only the first verdict goes out");
        let mut buf = [0u8; 64];
        let n = recv(hook.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).expect("one message");
        let (header, msg) = decode(&buf[..n]).expect("valid verdict");
        assert_eq!((header.seq, msg), (77, Message::Verdict(Verdict::Deny { errno: 0 })));
        assert_eq!(recv(hook.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT), Err(Errno::EAGAIN));
    }

    #[test]
    fn reports_get_no_reply() {
        let (agent, hook) = pair();
        let mut reply = Reply { fd: agent.as_fd(), seq: 1, sent: false, wanted: false };
        assert!(!reply.send(Verdict::Deny { errno: 0 }));
        let mut buf = [0u8; 64];
        assert_eq!(recv(hook.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT), Err(Errno::EAGAIN));
    }

    #[test]
    fn reply_to_a_hook_that_left_reports_failure() {
        let (agent, hook) = pair();
        drop(hook);
        let mut reply = Reply { fd: agent.as_fd(), seq: 1, sent: false, wanted: true };
        assert!(!reply.send(Verdict::Deny { errno: 0 }));
    }

    #[test]
    fn bind_refuses_paths_that_do_not_fit_a_socket_address() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(200)));
        assert!(matches!(PreloadServer::bind(&long), Err(ServerError::PathTooLong { .. })));
    }

    struct Counting(u32);
    impl HookHandler for Counting {
        fn handle(&mut self, _: Peer, _: &Header, _: &Message<'_>, _: &mut Reply<'_>, _: &EventSender) {}
        fn config(&self) -> u32 {
            self.0
        }
    }

    #[test]
    fn routes_refuse_a_taken_kind_and_merge_configs() {
        let mut routes = Routes::default();
        let a = routes.add(&[MessageKind::EXEC], Box::new(Counting(0))).expect("free");
        let b =
            routes.add(&[MessageKind::FILE_REQUEST, MessageKind::FILE_REPORT], Box::new(Counting(1))).expect("free");
        assert_eq!(
            routes.add(&[MessageKind::FILE_REPORT], Box::new(Counting(2))).err(),
            Some(MessageKind::FILE_REPORT)
        );
        assert_eq!(routes.config(), 1);
        routes.remove(b);
        assert_eq!(routes.config(), 0);
        assert!(routes.add(&[MessageKind::FILE_REPORT], Box::new(Counting(2))).is_ok(), "freed by remove");
        routes.remove(a);
        assert!(!routes.by_kind.contains_key(&MessageKind::EXEC.0));
    }
}
