//! The file domain: create, open, write, rename, delete, chmod and exec of files, with the acting process.
//!
//! - [`fanotify`]: kernel mode through fanotify filesystem marks with file-handle reporting (monitoring only;
//!   permission events for synchronous deny come in a second group beside it).
//! - User mode (preload hooks), permission events, the eBPF syscall tracepoints for what fanotify cannot tell, and
//!   `ringwatch sandbox` are later slices of issue #4.

pub mod fanotify;
