//! One hook socket for every preload backend of the agent.
//!
//! The hook library knows one socket (`RINGWATCH_HOOK_SOCKET`), so the process backend (exec requests) and the
//! file backend (file sessions) must be served by one [`PreloadServer`]. Each backend calls
//! [`SharedSocket::attach`] with its socket path, the message kinds it handles and its handler, from its own
//! `start()`: the first attach for a path binds the server, later ones add their handlers to it (a kind that
//! already has a handler is refused with [`ServerError::AlreadyRunning`]: that is a second agent, or the same
//! backend started twice). The backends' sources then run on their own threads; whichever runs first serves
//! the socket for all of them, using each backend's own event sender for its handler's events, while the others
//! wait. When the serving source stops (its shutdown fired) it hands the server back, and a backend still running
//! takes over. When the last backend's [`SharedSocket`] is dropped, the server is dropped and the socket file
//! removed.
//!
//! This keeps backends independent (each can run alone, and `--mode` chooses any combination) with no central
//! list of preload backends anywhere.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::time::Duration;

use ringwatch_core::SourceContext;
use ringwatch_hook_protocol::MessageKind;

use super::server::{HookHandler, PreloadServer, Routes, ServerError, lock};

/// How often a waiting backend looks at its shutdown token.
const WAIT_TICK: Duration = Duration::from_millis(100);

/// One bound socket and the backends attached to it.
struct Hub {
    path: PathBuf,
    routes: Arc<Mutex<Routes>>,
    /// The server, while nobody serves it.
    server: Mutex<Option<PreloadServer>>,
    handed_back: Condvar,
}

/// Every live hub of this process, by socket path.
static HUBS: Mutex<Vec<Weak<Hub>>> = Mutex::new(Vec::new());

/// One backend's share of the hook socket.
pub struct SharedSocket {
    hub: Arc<Hub>,
    id: usize,
}

impl std::fmt::Debug for SharedSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSocket").field("path", &self.hub.path).field("handler", &self.id).finish()
    }
}

impl SharedSocket {
    /// Registers `handler` for `kinds` on the server of `path`, binding it first if no backend of this agent has
    /// (see [`PreloadServer::bind`] for what binding checks).
    pub fn attach(
        path: &Path,
        kinds: &[MessageKind],
        handler: Box<dyn HookHandler>,
    ) -> Result<SharedSocket, ServerError> {
        let mut hubs = HUBS.lock().unwrap_or_else(PoisonError::into_inner);
        hubs.retain(|h| h.strong_count() > 0);
        let existing = hubs.iter().filter_map(Weak::upgrade).find(|h| h.path == path);
        let hub = match existing {
            Some(hub) => hub,
            None => {
                let server = PreloadServer::bind(path)?;
                let hub = Arc::new(Hub {
                    path: path.to_owned(),
                    routes: server.routes().clone(),
                    server: Mutex::new(Some(server)),
                    handed_back: Condvar::new(),
                });
                hubs.push(Arc::downgrade(&hub));
                hub
            }
        };
        let id = lock(&hub.routes).add(kinds, handler).map_err(|kind| {
            tracing::warn!(path = %path.display(), kind = kind.0, "hook message kind already has a handler");
            ServerError::AlreadyRunning { path: path.to_owned() }
        })?;
        Ok(SharedSocket { hub, id })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.hub.path
    }

    /// Runs until `ctx.shutdown` fires: serves the socket for every attached backend when nobody else does,
    /// else waits (and takes over if the serving backend stops first). This backend's events go to
    /// `ctx.events`.
    pub fn serve(self, ctx: &SourceContext) -> Result<(), ServerError> {
        lock(&self.hub.routes).set_events(self.id, ctx.events.clone());
        let mut slot = self.hub.server.lock().unwrap_or_else(PoisonError::into_inner);
        while !ctx.shutdown.is_triggered() {
            if let Some(mut server) = slot.take() {
                drop(slot);
                let result = server.serve(&ctx.events, &ctx.shutdown);
                *self.hub.server.lock().unwrap_or_else(PoisonError::into_inner) = Some(server);
                self.hub.handed_back.notify_all();
                return result;
            }
            slot = self.hub.handed_back.wait_timeout(slot, WAIT_TICK).unwrap_or_else(PoisonError::into_inner).0;
        }
        Ok(())
    }
}

impl Drop for SharedSocket {
    /// Removes this backend's handler; the last one to go drops the server, which removes the socket file.
    fn drop(&mut self) {
        lock(&self.hub.routes).remove(self.id);
    }
}
