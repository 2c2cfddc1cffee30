//! The agent side of the LD_PRELOAD hook library (`libringwatch_hook.so`), shared by every domain's preload
//! backend.
//!
//! Hooked processes connect to a unix `SOCK_SEQPACKET` socket (default [`DEFAULT_SOCKET`]) and speak the
//! `ringwatch-hook-protocol` wire format: an exec request on a connection of its own, waiting briefly for a
//! verdict; file calls on one long-lived session per process, opened with a hello that the server answers with
//! what the hook should send (one-way reports, or requests that wait for a verdict). [`PreloadServer`] binds that
//! socket, takes each peer's identity from `SO_PEERCRED` (the kernel's word, not the message's), decodes with full
//! bounds checks, and dispatches by message kind to a [`HookHandler`]: the process domain registers one for exec
//! requests (`process::preload`), the file domain one for file requests and reports (`file::preload`).
//! [`SharedSocket`] lets both register on one server, since the hook knows one socket. `backend.rs` holds what
//! every domain's preload backend repeats around it ([`Verdicts`], attach/serve errors, a peer's process facts).
//!
//! [`install()`] and [`uninstall()`] edit `/etc/ld.so.preload` for system-wide injection; [`hook_library_path`] finds
//! the library next to the agent binary.
//!
//! Everything a hook sends is an in-process claim the process could forge; events built from it carry
//! `trusted: false`. What the hook cannot see is listed in the hook crate's documentation.

mod backend;
mod install;
mod server;
mod shared;

use std::path::Path;

pub use backend::Verdicts;
pub(crate) use backend::{attach, peer_process, read_link, sensor_event, serve};
pub use install::{
    HOOK_LIBRARY_ENV, HOOK_LIBRARY_NAME, InstallError, hook_library_path, install, is_installed, uninstall,
};
pub use ringwatch_hook_protocol::DEFAULT_SOCKET_PATH as DEFAULT_SOCKET;
pub use server::{
    BATCH, COALESCE, COALESCE_UNDER, HookHandler, MAX_PENDING, MAX_REPLY, MAX_SESSIONS, Peer, PreloadServer,
    REQUEST_DEADLINE, Reply, Routes, ServerError,
};
pub use shared::SharedSocket;

use ringwatch_core::{Domain, Mode, Probe, SourceKind};

/// Turns the hook off in the agent itself when it is loaded there (a system-wide install puts it into every
/// process, the agent included): the agent must never report its own file calls to itself, nor wait on itself
/// for a verdict. Looks the library's `ringwatch_hook_bypass` up with `dlsym(RTLD_DEFAULT, ..)`; without the
/// library loaded, nothing happens.
pub fn bypass_own_hook() {
    // SAFETY: RTLD_DEFAULT is a valid pseudo-handle and the name a NUL-terminated static string; dlsym is
    // thread-safe.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"ringwatch_hook_bypass".as_ptr()) };
    if sym.is_null() {
        return;
    }
    // SAFETY: the symbol is the hook library's `extern "C" fn ringwatch_hook_bypass()`, which takes nothing,
    // returns nothing and only stores an atomic flag.
    let bypass = unsafe { std::mem::transmute::<*mut libc::c_void, extern "C" fn()>(sym) };
    bypass();
    tracing::info!("the hook library is loaded into the agent itself; turned off here");
}

/// The probe of a preload backend of `domain`: available when the hook library is found (its path is the
/// detail); processes still need it injected with `LD_PRELOAD` or `ringwatch hook install`.
pub fn probe(domain: Domain) -> Probe {
    match hook_library_path() {
        Some(lib) => {
            let how = if is_installed(&lib, Path::new("/etc/ld.so.preload")) {
                "installed system-wide in /etc/ld.so.preload"
            } else {
                "inject with LD_PRELOAD or `ringwatch hook install`"
            };
            Probe::ok(domain, Mode::User, SourceKind::Preload, format!("{} ({how})", lib.display()))
        }
        None => Probe::unavailable(
            domain,
            Mode::User,
            SourceKind::Preload,
            "libringwatch_hook.so not found next to the executable (build it: cargo build -p ringwatch-hook)",
        ),
    }
}
