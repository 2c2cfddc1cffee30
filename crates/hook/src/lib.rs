//! `libringwatch_hook.so`: the LD_PRELOAD library of ringwatch's user-mode process and file backends.
//!
//! Loaded into a process with `LD_PRELOAD=/path/libringwatch_hook.so` (or system-wide through
//! `/etc/ld.so.preload`), it interposes libc's exec family: `execve`, `execv`, `execvp`, `execvpe`, `execl`,
//! `execlp`, `execle`, `fexecve`, `posix_spawn` and `posix_spawnp`. Before the real call it sends the agent an exec
//! request (see `ringwatch-hook-protocol`) over the unix `SOCK_SEQPACKET` socket named by `RINGWATCH_HOOK_SOCKET`
//! (default `/run/ringwatch/hook.sock`) and waits up to `RINGWATCH_HOOK_TIMEOUT_MS` (default 100 ms) for a
//! verdict. On deny the call fails with `EACCES` (posix_spawn* return it) and the program is never run; on allow,
//! timeout, no agent or any internal problem the real function runs as if the hook were not there.
//!
//! It also interposes the file functions `open`, `open64`, `openat`, `openat64` (and their `_FORTIFY_SOURCE`
//! forms `__open_2`, `__open64_2`, `__openat_2`, `__openat64_2`), `creat`, `creat64`, `fopen`, `fopen64`,
//! `unlink`, `unlinkat`, `rename`, `renameat`, `renameat2`, `truncate`, `truncate64`, `chmod`, `fchmod`,
//! `fchmodat`, `mkdir`, `mkdirat`, `rmdir`, `remove`, `link`, `linkat`, `symlink`, `symlinkat`, `chown`, `lchown`,
//! `fchownat`, `fchown`, `utime`, `utimes`, `utimensat`, `futimens`, `mknod` and `mknodat`. These talk to the
//! agent over one connection per process (see `session`): by default they report each call one-way after it
//! happened (one `send`); only when the agent says a policy rule could deny a file call do they ask before the call
//! and refuse with `EACCES` on deny.
//!
//! The network functions `connect`, `sendto`, `sendmsg`, `sendmmsg`, `accept`, `accept4`, `close`, `getaddrinfo`,
//! `gethostbyname` and `gethostbyname2` use the same session (see `net`): a connect is reported after the call (or,
//! when a rule may block or redirect it, asked about before: `ECONNREFUSED` on block, a connect to the local proxy
//! with a 28-byte `RWPX` header on redirect); a send with a destination once per socket and destination; a send
//! without one never; an accepted TCP connection is reported (never refused); the close of a TCP connection the
//! hook saw open is reported with its bytes and duration (`conn_table`); a lookup is reported after the resolver
//! returns, with its answers.
//!
//! # Rules this code keeps
//!
//! - It never changes the host program's behaviour except by an explicit deny: errno is saved and restored around
//!   the hook's own syscalls, an absent agent costs one failed `connect`, a slow one at most the timeout.
//! - No allocation, no locks, no Rust std beyond `core` and const thread-locals: the hook may run in a child
//!   between `fork`/`vfork` and `exec` of a threaded process, where `malloc` can deadlock. Buffers are on the
//!   stack (about 9 KiB), real functions are resolved with `dlsym(RTLD_NEXT)` by a load-time constructor; calls
//!   made before it ran (by the loader or other libraries' constructors) go straight to the real function.
//! - No panics: the crate denies indexing, unchecked arithmetic, `unwrap` and friends. A panic in an exported
//!   `extern "C"` function would abort the host program.
//! - A thread already inside the hook goes straight to the real function (recursion guard), and the hook's own
//!   I/O (`socket`, `connect`, `send`, `recv`, `poll`, `readlink`, `getcwd`, `faccessat`, `fstat`) uses functions
//!   it does not interpose; its own unix sockets pass straight through the hooked `connect` and `close` (they are
//!   never in the connection table).
//! - Sockets are CLOEXEC and `send` uses MSG_NOSIGNAL.
//! - `ringwatch_hook_bypass()` (exported) turns every hook into the plain real function for good; the agent
//!   calls it on itself so that a system-wide install never makes it report to, or wait for, itself.
//!
//! The `exec*p` variants search `PATH` themselves (allocation-free: one `faccessat` per directory tried) and send
//! the result as the resolved path; `fexecve` sends the target of `/proc/self/fd/N`. The caller's working
//! directory is sent too (one `getcwd`). Everything the hook sends is untrusted: the agent takes pid/uid/gid from
//! `SO_PEERCRED` and re-reads what it can from /proc.
//!
//! # What it cannot see
//!
//! An in-process hook is advisory; these bypass it entirely:
//! - statically linked programs (`gcc -static`, most Go binaries): no dynamic loader, no preload;
//! - raw `syscall(SYS_execve, ..)` / `syscall(SYS_openat, ..)`, inline `syscall` instructions, and `io_uring`
//!   (no exec op today; its open, unlink, rename and mkdir ops bypass the file hooks);
//! - network activity that is not one of the hooked calls: io_uring connects and sends, raw
//!   `syscall(SYS_connect/SYS_accept4/SYS_close, ..)`, closes through `close_range`/`dup2`/`fclose`, and resolvers that bypass `getaddrinfo`/`gethostbyname*` (a program's
//!   own DNS client is seen only as its first UDP send to port 53);
//! - file activity that is not one of the hooked calls: writes themselves (`write`, `pwrite`, and above all
//!   stores into a `MAP_SHARED` mapping: the open is seen, the writes are not), `freopen`, `setxattr` and
//!   friends, `fchmod`/`fchown`/`futimens` on a descriptor without a path, and libc-internal opens (`opendir`, `tmpfile`, locale
//!   and NSS files), which do not go through the exported symbols;
//! - a program started without the hook: `env -u LD_PRELOAD cmd`, a cleared environment, any exec whose new
//!   environment lacks `LD_PRELOAD`, unless the hook is installed system-wide in `/etc/ld.so.preload`. When the
//!   hooked parent does that exec, the hook flags it and the agent reports a `tamper` event, but what the unhooked
//!   image does next is invisible;
//! - setuid/setgid and file-capability programs: the loader ignores `LD_PRELOAD` in secure-execution mode;
//! - exec calls libc makes internally without going through its exported symbols (`system()` and `popen()` spawn
//!   `/bin/sh` with an internal `posix_spawn`; the shell's own exec of the command is seen);
//! - a process that unloads or patches the hook, or forges its messages: events from it are `trusted: false`.
//!
//! # Layout
//!
//! - `exec`: the shared exec check (build the request on the stack, PATH search).
//! - `file`, `file_hooks`: the file check (describe, verdict or report) and the exported file functions.
//! - `session`: the per-process connection for file calls (hello/config, reports, verdicts, fork handling).
//! - `paths`: absolute paths from the cwd or a dirfd, without allocating.
//! - `guard`: initialized/bypassed state and the per-thread recursion guard.
//! - `report`: the one-shot socket round trip with timeouts, errno save/restore.
//! - `net`, `net_hooks`: the network check (describe, verdict or report, redirect, once-per-destination table of
//!   sends, lookup reports) and the exported network functions.
//! - `conn_table`: the fixed table of TCP connections seen open (start time, socket cookie), for close reports.
//! - `sandbox`: `ringwatch sandbox --mode user`: redirects file calls under sandboxed directories into a shadow tree
//!   (`RINGWATCH_SANDBOX_SHADOW`), copy-up, whiteouts, opaque directories.
//! - `times_nodes_hooks`: the exported time-change (`utime*`, `futimens`) and `mknod*` functions.
//! - `sandbox_reads`: `stat`, `statx`, `access`, `readlink`, `opendir` and their variants, which in a sandbox look
//!   at its view of a path (and outside one go straight to libc).
//! - `env`: allocation-free environment lookups and the timeout setting.
//! - `real`: the real libc functions via `dlsym(RTLD_NEXT)`.
//! - `execl.c`: the three C-variadic exec functions, which stable Rust cannot define.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]
#![cfg_attr(test, allow(clippy::indexing_slicing, clippy::arithmetic_side_effects, clippy::unwrap_used, clippy::panic))]

mod conn_table;
mod env;
mod exec;
mod file;
mod file_hooks;
mod guard;
mod net;
mod net_hooks;
mod paths;
mod real;
mod report;
mod sandbox;
mod sandbox_reads;
mod session;
mod times_nodes_hooks;

use core::ffi::{c_char, c_int};

use ringwatch_hook_protocol::ExecOp;

use crate::exec::{ExecCall, check};
use crate::real::{ExecvFn, ExecveFn, FexecveFn, PosixSpawnFn, real_fn, sys_int};
use crate::report::{Outcome, set_errno};

/// Library constructor (run by the loader before `main`, while the process is single-threaded): resolves the
/// real functions and notes whether the process started with `LD_PRELOAD`.
extern "C" fn on_load() {
    real::resolve_all();
    exec::remember_startup_env();
    sandbox::init();
    guard::mark_initialized();
}

/// Turns every hook of this process into a plain call of the real function, for good. The agent calls it on
/// itself (found with `dlsym(RTLD_DEFAULT, ..)`, so only when this library is loaded into it) so that a
/// system-wide install never makes it report to, or wait for, itself. Not meant for other programs: a program
/// that wants to hide can do so anyway (see "What it cannot see").
#[unsafe(no_mangle)]
pub extern "C" fn ringwatch_hook_bypass() {
    guard::bypass();
}

#[used]
#[unsafe(link_section = ".init_array")]
static ON_LOAD: extern "C" fn() = on_load;

/// `-1` with errno set: how the exec functions fail.
fn fail(errno: c_int) -> c_int {
    set_errno(errno);
    -1
}

/// The real execve, or the raw syscall when dlsym found none (a libc without it cannot run this program anyway).
///
/// # Safety
///
/// The arguments satisfy execve's contract.
unsafe fn real_execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int {
    match real_fn!(real::EXECVE, ExecveFn) {
        // SAFETY: the caller's arguments are passed on unchanged to the real execve.
        Some(f) => unsafe { f(path, argv, envp) },
        None => {
            // SAFETY: the raw syscall takes the same arguments as the libc wrapper.
            sys_int(unsafe { libc::syscall(libc::SYS_execve, path, argv, envp) })
        }
    }
}

/// Hooked `execve(2)`.
///
/// # Safety
///
/// As for libc's `execve`: `path` is a NUL-terminated string, `argv` and `envp` NULL-terminated arrays of them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int {
    let call = ExecCall { op: ExecOp::Execve, path, argv, envp, fd: -1 };
    // SAFETY: the caller's arguments satisfy execve's contract, which is check's.
    match unsafe { check(&call) } {
        Outcome::Deny(errno) => fail(errno),
        // SAFETY: unchanged caller arguments.
        Outcome::Allow => unsafe { real_execve(path, argv, envp) },
    }
}

/// Hooked `execv(3)`.
///
/// # Safety
///
/// As for libc's `execv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    let call = ExecCall { op: ExecOp::Execv, path, argv, envp: core::ptr::null(), fd: -1 };
    // SAFETY: the caller's arguments satisfy execv's contract, which is check's.
    match unsafe { check(&call) } {
        Outcome::Deny(errno) => fail(errno),
        // SAFETY: unchanged caller arguments.
        Outcome::Allow => unsafe { real_execv(path, argv) },
    }
}

/// # Safety
///
/// As for libc's `execv`.
unsafe fn real_execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    match real_fn!(real::EXECV, ExecvFn) {
        // SAFETY: unchanged caller arguments.
        Some(f) => unsafe { f(path, argv) },
        // SAFETY: execv is execve with the current environment.
        None => unsafe { real_execve(path, argv, env::current()) },
    }
}

/// Hooked `execvp(3)`.
///
/// # Safety
///
/// As for libc's `execvp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    let call = ExecCall { op: ExecOp::Execvp, path: file, argv, envp: core::ptr::null(), fd: -1 };
    // SAFETY: the caller's arguments satisfy execvp's contract, which is check's.
    match unsafe { check(&call) } {
        Outcome::Deny(errno) => fail(errno),
        // SAFETY: unchanged caller arguments.
        Outcome::Allow => unsafe { real_execvp(file, argv) },
    }
}

/// # Safety
///
/// As for libc's `execvp`.
unsafe fn real_execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    match real_fn!(real::EXECVP, ExecvFn) {
        // SAFETY: unchanged caller arguments.
        Some(f) => unsafe { f(file, argv) },
        None => fail(libc::ENOSYS),
    }
}

/// Hooked `execvpe(3)` (GNU).
///
/// # Safety
///
/// As for libc's `execvpe`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int {
    let call = ExecCall { op: ExecOp::Execvpe, path: file, argv, envp, fd: -1 };
    // SAFETY: the caller's arguments satisfy execvpe's contract, which is check's.
    match unsafe { check(&call) } {
        Outcome::Deny(errno) => fail(errno),
        Outcome::Allow => match real_fn!(real::EXECVPE, ExecveFn) {
            // SAFETY: unchanged caller arguments.
            Some(f) => unsafe { f(file, argv, envp) },
            None => fail(libc::ENOSYS),
        },
    }
}

/// Hooked `fexecve(3)`.
///
/// # Safety
///
/// As for libc's `fexecve`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fexecve(fd: c_int, argv: *const *const c_char, envp: *const *const c_char) -> c_int {
    let call = ExecCall { op: ExecOp::Fexecve, path: core::ptr::null(), argv, envp, fd };
    // SAFETY: the caller's arguments satisfy fexecve's contract, which is check's (a null path is allowed).
    match unsafe { check(&call) } {
        Outcome::Deny(errno) => fail(errno),
        Outcome::Allow => match real_fn!(real::FEXECVE, FexecveFn) {
            // SAFETY: unchanged caller arguments.
            Some(f) => unsafe { f(fd, argv, envp) },
            None => fail(libc::ENOSYS),
        },
    }
}

/// Hooked `posix_spawn(3)`. On deny no child is created and `EACCES` is returned.
///
/// # Safety
///
/// As for libc's `posix_spawn`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut libc::pid_t,
    path: *const c_char,
    file_actions: *const libc::posix_spawn_file_actions_t,
    attrp: *const libc::posix_spawnattr_t,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let call = ExecCall { op: ExecOp::PosixSpawn, path, argv, envp, fd: -1 };
    // SAFETY: the caller's arguments satisfy posix_spawn's contract, which covers check's.
    match unsafe { check(&call) } {
        Outcome::Deny(errno) => errno,
        Outcome::Allow => match real_fn!(real::POSIX_SPAWN, PosixSpawnFn) {
            // SAFETY: unchanged caller arguments.
            Some(f) => unsafe { f(pid, path, file_actions, attrp, argv, envp) },
            None => libc::ENOSYS,
        },
    }
}

/// Hooked `posix_spawnp(3)`. On deny no child is created and `EACCES` is returned.
///
/// # Safety
///
/// As for libc's `posix_spawnp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut libc::pid_t,
    file: *const c_char,
    file_actions: *const libc::posix_spawn_file_actions_t,
    attrp: *const libc::posix_spawnattr_t,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let call = ExecCall { op: ExecOp::PosixSpawnp, path: file, argv, envp, fd: -1 };
    // SAFETY: the caller's arguments satisfy posix_spawnp's contract, which covers check's.
    match unsafe { check(&call) } {
        Outcome::Deny(errno) => errno,
        Outcome::Allow => match real_fn!(real::POSIX_SPAWNP, PosixSpawnFn) {
            // SAFETY: unchanged caller arguments.
            Some(f) => unsafe { f(pid, file, file_actions, attrp, argv, envp) },
            None => libc::ENOSYS,
        },
    }
}

// execl.c passes these op numbers; keep them in step with the protocol.
const _: () = assert!(ExecOp::Execl as u16 == 5 && ExecOp::Execlp as u16 == 6 && ExecOp::Execle as u16 == 7);

/// Called by the C shims of `execl`, `execlp` and `execle` (execl.c) with their arguments collected into `argv`:
/// checks, then runs the real `execv`, `execvp` or `execve`. Not part of the library's interface.
///
/// # Safety
///
/// `path` is a NUL-terminated string, `argv` (and `envp` for execle) NULL-terminated arrays of them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ringwatch_hook_exec_list(
    op: c_int,
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let op = match op {
        5 => ExecOp::Execl,
        6 => ExecOp::Execlp,
        7 => ExecOp::Execle,
        _ => return fail(libc::EINVAL),
    };
    let call = ExecCall { op, path, argv, envp: if op == ExecOp::Execle { envp } else { core::ptr::null() }, fd: -1 };
    // SAFETY: the caller's arguments satisfy the exec function's contract, which is check's.
    match unsafe { check(&call) } {
        Outcome::Deny(errno) => fail(errno),
        // SAFETY: unchanged caller arguments in each arm.
        Outcome::Allow => unsafe {
            match op {
                ExecOp::Execlp => real_execvp(path, argv),
                ExecOp::Execle => real_execve(path, argv, envp),
                _ => real_execv(path, argv),
            }
        },
    }
}

/// The exported C-variadic functions. A Rust cdylib exports only symbols defined in Rust, so each is a naked
/// function whose single instruction tail-jumps to the hidden C implementation in execl.c: registers, stack and
/// return address are untouched, so the C function sees exactly the caller's variadic call.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod variadic {
    use core::ffi::{c_char, c_int};

    unsafe extern "C" {
        fn ringwatch_shim_execl(path: *const c_char, arg: *const c_char, ...) -> c_int;
        fn ringwatch_shim_execlp(file: *const c_char, arg: *const c_char, ...) -> c_int;
        fn ringwatch_shim_execle(path: *const c_char, arg: *const c_char, ...) -> c_int;
    }

    #[cfg(target_arch = "x86_64")]
    macro_rules! tail_jump {
        ($target:ident) => {
            core::arch::naked_asm!("jmp {}", sym $target)
        };
    }

    #[cfg(target_arch = "aarch64")]
    macro_rules! tail_jump {
        ($target:ident) => {
            core::arch::naked_asm!("b {}", sym $target)
        };
    }

    /// Hooked `execl(3)`: `execl(path, arg0, ..., (char *)NULL)`.
    ///
    /// # Safety
    ///
    /// As for libc's `execl`.
    #[unsafe(naked)]
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn execl() -> c_int {
        tail_jump!(ringwatch_shim_execl)
    }

    /// Hooked `execlp(3)`: `execlp(file, arg0, ..., (char *)NULL)`.
    ///
    /// # Safety
    ///
    /// As for libc's `execlp`.
    #[unsafe(naked)]
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn execlp() -> c_int {
        tail_jump!(ringwatch_shim_execlp)
    }

    /// Hooked `execle(3)`: `execle(path, arg0, ..., (char *)NULL, envp)`.
    ///
    /// # Safety
    ///
    /// As for libc's `execle`.
    #[unsafe(naked)]
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn execle() -> c_int {
        tail_jump!(ringwatch_shim_execle)
    }
}
