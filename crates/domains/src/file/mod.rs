//! The file domain: create, open, write, rename, delete, chmod and exec of files, with the acting process.
//!
//! - [`fanotify`]: kernel mode through fanotify filesystem marks with file-handle reporting (monitoring only;
//!   permission events for synchronous deny come in a second group beside it).
//! - [`preload`]: user mode through the LD_PRELOAD hook library (open, creat, fopen, unlink, rename, truncate,
//!   chmod, mkdir, rmdir families; in-process, untrusted; refuses with `EACCES` when a rule denies).
//! - [`ebpf`]: kernel mode beside fanotify: eBPF syscall tracepoints (open, unlink, rename, chmod families) for
//!   what fanotify cannot tell — refused calls with their errno, open flags, rename flags, chmod modes.

pub mod ebpf;
pub mod fanotify;
pub mod preload;
