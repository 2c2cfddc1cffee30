//! The agent side of the LD_PRELOAD hook library (`libringwatch_hook.so`), shared by every domain's preload
//! backend.
//!
//! Hooked processes connect to a unix `SOCK_SEQPACKET` socket (default [`DEFAULT_SOCKET`]), send one request in
//! the `ringwatch-hook-protocol` wire format, and wait briefly for a verdict. [`PreloadServer`] binds that socket,
//! takes each peer's identity from `SO_PEERCRED` (the kernel's word, not the message's), decodes with full bounds
//! checks, and dispatches by message kind to a [`HookHandler`]: the process domain registers one for exec
//! requests (`process::preload`); file and network handlers can register their kinds on the same server later.
//!
//! [`install`] and [`uninstall`] edit `/etc/ld.so.preload` for system-wide injection; [`hook_library_path`] finds
//! the library next to the agent binary.
//!
//! Everything a hook sends is an in-process claim the process could forge; events built from it carry
//! `trusted: false`. What the hook cannot see is listed in the hook crate's documentation.

mod install;
mod server;

pub use install::{
    HOOK_LIBRARY_ENV, HOOK_LIBRARY_NAME, InstallError, hook_library_path, install, is_installed, uninstall,
};
pub use ringwatch_hook_protocol::DEFAULT_SOCKET_PATH as DEFAULT_SOCKET;
pub use server::{HookHandler, MAX_PENDING, Peer, PreloadServer, REQUEST_DEADLINE, Reply, ServerError};
