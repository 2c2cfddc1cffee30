//! The exec check shared by every hooked entry point: build the request on the stack, ask the agent, decide.
//!
//! Stack use is about 9 KiB ([`REQUEST_BUFFER`] plus small locals): the path search and the working directory are
//! written straight into the request buffer. Long argument lists are cut and flagged (argc is still exact).

use core::ffi::{CStr, c_char, c_int};
use core::sync::atomic::{AtomicBool, Ordering};

use ringwatch_hook_protocol::{EXEC_FLAG_DROPS_PRELOAD, EXEC_FLAG_RESOLVED_FROM_PATH, ExecEncoder, ExecFixed, ExecOp};

use crate::env;
use crate::guard::{self, Reentry};
use crate::paths::fd_target;
use crate::report::{Agent, Outcome, SavedErrno, next_seq};

/// Size of the on-stack request. Smaller than the protocol's maximum to keep the hook's stack use modest in
/// threads with small stacks; it holds a path and a few KiB of arguments.
const REQUEST_BUFFER: usize = 8 * 1024;

/// Most argv entries walked (to count argc); the kernel's own limit on a 2 MiB argument area is far below.
const MAX_ARGS_WALKED: usize = 1 << 20;

/// `PATH` when the variable is unset, as glibc's `confstr(_CS_PATH)`.
const DEFAULT_PATH: &[u8] = b"/bin:/usr/bin";

/// Whether the process started with a non-empty `LD_PRELOAD` (recorded by the library constructor).
static STARTED_WITH_PRELOAD: AtomicBool = AtomicBool::new(false);

/// Records whether `LD_PRELOAD` was set at start, so an exec after `unsetenv("LD_PRELOAD")` (what
/// `env -u LD_PRELOAD` does) can be flagged as dropping the hook.
pub(crate) fn remember_startup_env() {
    // SAFETY: the current environment is valid; the value is only tested.
    let set = unsafe { env::lookup(env::current(), PRELOAD_VAR) }.is_some_and(|v| !v.is_empty());
    STARTED_WITH_PRELOAD.store(set, Ordering::Relaxed);
}

const PRELOAD_VAR: &[u8] = b"LD_PRELOAD";

/// One hooked call's arguments.
pub(crate) struct ExecCall {
    pub(crate) op: ExecOp,
    /// Path or file name as given; null for fexecve.
    pub(crate) path: *const c_char,
    /// NULL-terminated argument vector, or null.
    pub(crate) argv: *const *const c_char,
    /// The environment the new image gets, or null when it is the current one (`environ`).
    pub(crate) envp: *const *const c_char,
    /// fexecve's descriptor, -1 otherwise.
    pub(crate) fd: c_int,
}

/// Reports `call` to the agent and returns its verdict. errno is left exactly as it was on entry.
///
/// # Safety
///
/// `path` is null or a NUL-terminated string; `argv` and `envp` are null or NULL-terminated arrays of
/// NUL-terminated strings (what the libc function being hooked requires of its caller anyway).
pub(crate) unsafe fn check(call: &ExecCall) -> Outcome {
    if guard::bypassed() {
        return Outcome::Allow;
    }
    let Some(_inside) = Reentry::enter() else { return Outcome::Allow };
    let _errno = SavedErrno::save();
    let Some(agent) = Agent::connect() else { return Outcome::Allow };
    let seq = next_seq();
    let mut buf = [0u8; REQUEST_BUFFER];
    // SAFETY: forwarded caller contract.
    let Some(len) = (unsafe { encode(call, seq, &mut buf) }) else { return Outcome::Allow };
    let Some(msg) = buf.get(..len) else { return Outcome::Allow };
    agent.ask(msg, seq)
}

/// Builds the request in `buf`; returns its length.
///
/// # Safety
///
/// As for [`check`].
unsafe fn encode(call: &ExecCall, seq: u32, buf: &mut [u8]) -> Option<usize> {
    let path: &[u8] = if call.path.is_null() {
        &[]
    } else {
        // SAFETY: non-null `path` is NUL-terminated (caller's contract).
        unsafe { CStr::from_ptr(call.path) }.to_bytes()
    };
    let mut flags = 0;
    let new_env = if call.envp.is_null() { env::current() } else { call.envp };
    // SAFETY: `envp` contract forwarded; the current environment is valid.
    if unsafe { drops_preload(new_env) } {
        flags |= EXEC_FLAG_DROPS_PRELOAD;
    }
    let search = call.op.searches_path() && !path.is_empty() && !path.contains(&b'/');
    if search {
        flags |= EXEC_FLAG_RESOLVED_FROM_PATH;
    }
    // SAFETY: plain syscall wrappers without arguments.
    let (pid, tid, ppid) = unsafe { (libc::getpid(), libc::gettid(), libc::getppid()) };
    let fixed = ExecFixed {
        op: call.op,
        pid: pid.unsigned_abs(),
        tid: tid.unsigned_abs(),
        ppid: ppid.unsigned_abs(),
        fd: call.fd,
        flags,
    };
    let mut enc = ExecEncoder::new(buf, seq, fixed, path).ok()?;
    if search {
        enc.resolved_with(|dst| search_path(path, dst));
    } else if call.op == ExecOp::Fexecve {
        enc.resolved_with(|dst| fd_target(call.fd, dst));
    }
    enc.cwd_with(|dst| {
        // SAFETY: `dst` is a writable buffer of `dst.len()` bytes; getcwd writes at most that, NUL included.
        let p = unsafe { libc::getcwd(dst.as_mut_ptr().cast(), dst.len()) };
        if p.is_null() { 0 } else { dst.iter().position(|b| *b == 0).unwrap_or(0) }
    });
    if !call.argv.is_null() {
        for i in 0..MAX_ARGS_WALKED {
            // SAFETY: argv is NULL-terminated (caller's contract) and we stop at the NULL.
            let arg = unsafe { *call.argv.add(i) };
            if arg.is_null() {
                break;
            }
            // Read at most one byte more than fits, so a huge argument costs no full scan.
            let bound = enc.room().saturating_add(1);
            // SAFETY: `arg` is NUL-terminated; strnlen reads at most `bound` bytes and stops at the NUL.
            let n = unsafe { libc::strnlen(arg, bound) };
            // SAFETY: the first `n` bytes of `arg` were just read by strnlen and precede its NUL.
            let bytes = unsafe { core::slice::from_raw_parts(arg.cast::<u8>(), n) };
            enc.push_arg(bytes);
        }
    }
    enc.finish().ok()
}

/// True when the process had a non-empty `LD_PRELOAD` (at start or now) and the new image's environment `envp`
/// has none (or an empty one).
///
/// # Safety
///
/// `envp` is null or a NULL-terminated array of NUL-terminated strings.
unsafe fn drops_preload(envp: *const *const c_char) -> bool {
    let had = STARTED_WITH_PRELOAD.load(Ordering::Relaxed)
        // SAFETY: the current environment is valid.
        || unsafe { env::lookup(env::current(), PRELOAD_VAR) }.is_some_and(|v| !v.is_empty());
    // SAFETY: `envp` per the caller's contract.
    had && unsafe { env::lookup(envp, PRELOAD_VAR) }.is_none_or(|v| v.is_empty())
}

/// Searches `PATH` for `file` as execvp does: the first `dir/file` that is an executable regular file. Writes it
/// into `dst` and returns its length, or 0 when nothing matched (then the real call fails the same way). An empty
/// `PATH` element means the working directory and is written `./file`. Costs one `faccessat` per directory tried
/// and one `stat` for the hit.
fn search_path(file: &[u8], dst: &mut [u8]) -> usize {
    // SAFETY: the current environment is valid; the value is used before returning.
    let path_var = unsafe { env::lookup(env::current(), b"PATH") };
    let dirs = path_var.map_or(DEFAULT_PATH, CStr::to_bytes);
    for dir in dirs.split(|b| *b == b':') {
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let Some(len) = join(dst, dir, file) else { continue };
        // SAFETY: `join` wrote a NUL-terminated string into `dst`.
        if unsafe { is_executable_file(dst.as_ptr().cast()) } {
            return len;
        }
    }
    0
}

/// Writes `dir/file\0` into `dst`; returns the length without the NUL, or `None` when it does not fit.
fn join(dst: &mut [u8], dir: &[u8], file: &[u8]) -> Option<usize> {
    let len = dir.len().checked_add(1)?.checked_add(file.len())?;
    let out = dst.get_mut(..len.checked_add(1)?)?;
    let (d, rest) = out.split_at_mut_checked(dir.len())?;
    d.copy_from_slice(dir);
    let (slash, rest) = rest.split_first_mut()?;
    *slash = b'/';
    let (f, nul) = rest.split_at_mut_checked(file.len())?;
    f.copy_from_slice(file);
    *nul.first_mut()? = 0;
    Some(len)
}

/// True when `path` names a regular file the effective ids may execute.
///
/// # Safety
///
/// `path` is NUL-terminated.
unsafe fn is_executable_file(path: *const c_char) -> bool {
    // SAFETY: `path` is NUL-terminated (caller's contract); faccessat only reads it.
    if unsafe { libc::faccessat(libc::AT_FDCWD, path, libc::X_OK, libc::AT_EACCESS) } != 0 {
        return false;
    }
    // SAFETY: all-zero is a valid `stat`; stat writes into it and reads the NUL-terminated path.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::stat(path, &raw mut st) };
    rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_never_overflows() {
        let mut dst = [0xffu8; 12];
        assert_eq!(join(&mut dst, b"/bin", b"echo"), Some(9));
        assert_eq!(&dst[..10], b"/bin/echo\0");
        assert_eq!(join(&mut dst, b"/usr/bin", b"echo"), None);
    }

    #[test]
    fn path_search_finds_sh() {
        let mut dst = [0u8; 256];
        let n = search_path(b"sh", &mut dst);
        assert!(n > 0);
        assert!(dst[..n].ends_with(b"/sh"));
        assert_eq!(search_path(b"no-such-program-ringwatch", &mut dst), 0);
    }
}
