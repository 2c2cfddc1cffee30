//! ringwatch backends: each domain (process, file, network, keystroke) in kernel mode and user mode.
//!
//! Every backend implements [`ringwatch_core::Source`]: an associated `probe()` says whether it can run here, an
//! associated `start(..)` does every fallible set-up step, and `run` streams [`ringwatch_core::Event`]s into the
//! pipeline until shutdown. Kernel and user backends of one domain emit the same events; only `backend` and
//! `trusted` differ.
//!
//! # Layout
//!
//! - [`process`]: fork/exec/exit. `kernel` (eBPF tracepoints, kill at exec), `proc_connector` (netlink),
//!   `preload` (exec hooks in the LD_PRELOAD library).
//! - [`file`](mod@file): create/open/write/rename/delete/chmod/exec of files. `fanotify` (kernel mode:
//!   filesystem marks with file-handle reporting).
//! - [`network`]: connections, UDP sends and DNS; block, redirect to the local proxy, throttle.
//! - [`keystroke`]: terminal input (eBPF) and X11 input, with kernel-side redaction.
//! - [`preload`]: the agent side of the hook library's unix socket, shared by every domain's preload backend.
//! - [`probe`]: what this host supports (BTF, tracefs, bpffs, privileges), and the probe table for all backends.
//! - `bpf/`: the C eBPF programs, one skeleton per hook family, built by `build.rs`.

pub mod file;
mod kernel_ids;
pub mod keystroke;
mod libbpf_support;
pub mod network;
pub mod preload;
pub mod probe;
pub mod process;
