//! The process domain: fork, exec and exit with full context, and kill/deny at exec.
//!
//! - [`kernel`]: eBPF on `sched_process_fork/exec/exit`; kills in the kernel at exec for exact/prefix rules.
//! - [`proc_connector`]: netlink proc connector (user mode, no injection); details read from /proc afterwards.
//! - [`preload`]: exec hooks in the LD_PRELOAD library (user mode, in-process, untrusted; refuses with EACCES).

pub mod kernel;
pub mod preload;
pub mod proc_connector;
