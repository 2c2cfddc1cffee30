//! The read-side path functions in a user-mode sandbox: `stat`, `lstat`, `stat64`, `lstat64`, `fstatat`,
//! `fstatat64`, `statx`, `access`, `faccessat`, `readlink`, `readlinkat` and `opendir` look at the sandbox's view
//! of a path (its shadow copy when there is one, `ENOENT` for what the sandboxed command deleted, a directory that
//! exists only in the shadow), so that a program that writes a file and then checks it (`touch f; ls -l f`,
//! `mkdir d; cd d`, `cp` and `make` checking their outputs) sees its own work.
//!
//! They report nothing (looking is not file activity) and do nothing extra outside a sandbox: one atomic load, then
//! the real function. A real function `dlsym` cannot find falls back to the system call behind it (`opendir` to
//! `ENOSYS`). Paths are routed by [`crate::sandbox::route`] with a look-only intent: nothing is ever copied up by a
//! look. Directory listings are still not merged: a directory that exists in both trees is listed from the real one.

use core::ffi::{c_char, c_int, c_uint};

use crate::file_hooks::routed;
use crate::real::{
    self, AccessFn, FaccessatFn, Fstatat64Fn, FstatatFn, OpendirFn, ReadlinkFn, ReadlinkatFn, RealFn, Stat64Fn, StatFn,
    StatxFn, real_fn, sys_int, sys_size,
};
use crate::report::set_errno;
use crate::sandbox::{self, OpenIntent};

/// True when `path` names nothing to redirect: null or empty (`AT_EMPTY_PATH` calls act on the descriptor).
///
/// # Safety
///
/// `path` is null or NUL-terminated.
unsafe fn no_path(path: *const c_char) -> bool {
    // SAFETY: a non-null `path` is NUL-terminated, so its first byte is readable.
    path.is_null() || unsafe { *path } == 0
}

/// Runs `call` on the sandbox's view of `path` (relative to `dirfd`), or on `path` itself outside a sandbox.
///
/// # Safety
///
/// `path` is null or NUL-terminated.
unsafe fn look<R: crate::file::CallResult>(
    dirfd: c_int,
    path: *const c_char,
    follow: bool,
    call: impl FnOnce(c_int, *const c_char) -> R,
) -> R {
    // SAFETY: forwarded caller contract.
    if !sandbox::enabled() || unsafe { no_path(path) } {
        return call(dirfd, path);
    }
    // A redirected path is absolute, so the kernel ignores `dirfd` for it; an unredirected one keeps the caller's.
    // SAFETY: forwarded caller contract.
    unsafe {
        routed(
            dirfd,
            path,
            OpenIntent::look(follow),
            |p| if p == path { call(dirfd, p) } else { call(libc::AT_FDCWD, p) },
        )
    }
}

/// `stat`/`lstat` (`slot`) with the `newfstatat` fallback.
///
/// # Safety
///
/// As for stat(2).
unsafe fn stat_common(slot: &RealFn, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int {
    let call = |_: c_int, p: *const c_char| match real_fn!(slot, StatFn) {
        // SAFETY: the caller's buffer and the (possibly redirected) NUL-terminated path.
        Some(f) => unsafe { f(p, buf) },
        // SAFETY: newfstatat(2) with the caller's buffer (x86_64/aarch64: `struct stat` is the kernel's).
        None => sys_int(unsafe { libc::syscall(libc::SYS_newfstatat, libc::AT_FDCWD, p, buf, flags) }),
    };
    // SAFETY: forwarded caller contract.
    unsafe { look(libc::AT_FDCWD, path, flags & libc::AT_SYMLINK_NOFOLLOW == 0, call) }
}

/// Hooked `stat(2)`: the sandbox's view of the path.
///
/// # Safety
///
/// As for libc's `stat`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stat(path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: forwarded caller contract.
    unsafe { stat_common(&real::STAT, path, buf, 0) }
}

/// Hooked `lstat(2)`: the sandbox's view of the path, a final symlink not followed.
///
/// # Safety
///
/// As for libc's `lstat`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lstat(path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: forwarded caller contract.
    unsafe { stat_common(&real::LSTAT, path, buf, libc::AT_SYMLINK_NOFOLLOW) }
}

/// `stat64`/`lstat64` (`slot`) with the `newfstatat` fallback.
///
/// # Safety
///
/// As for stat64.
unsafe fn stat64_common(slot: &RealFn, path: *const c_char, buf: *mut libc::stat64, flags: c_int) -> c_int {
    let call = |_: c_int, p: *const c_char| match real_fn!(slot, Stat64Fn) {
        // SAFETY: the caller's buffer and the (possibly redirected) NUL-terminated path.
        Some(f) => unsafe { f(p, buf) },
        // SAFETY: newfstatat(2); on 64-bit Linux `struct stat64` is `struct stat`.
        None => sys_int(unsafe { libc::syscall(libc::SYS_newfstatat, libc::AT_FDCWD, p, buf, flags) }),
    };
    // SAFETY: forwarded caller contract.
    unsafe { look(libc::AT_FDCWD, path, flags & libc::AT_SYMLINK_NOFOLLOW == 0, call) }
}

/// Hooked `stat64`.
///
/// # Safety
///
/// As for libc's `stat64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stat64(path: *const c_char, buf: *mut libc::stat64) -> c_int {
    // SAFETY: forwarded caller contract.
    unsafe { stat64_common(&real::STAT64, path, buf, 0) }
}

/// Hooked `lstat64`.
///
/// # Safety
///
/// As for libc's `lstat64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lstat64(path: *const c_char, buf: *mut libc::stat64) -> c_int {
    // SAFETY: forwarded caller contract.
    unsafe { stat64_common(&real::LSTAT64, path, buf, libc::AT_SYMLINK_NOFOLLOW) }
}

/// Hooked `fstatat(2)`.
///
/// # Safety
///
/// As for libc's `fstatat`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fstatat(dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int {
    let call = |d: c_int, p: *const c_char| match real_fn!(real::FSTATAT, FstatatFn) {
        // SAFETY: the caller's arguments, the path possibly redirected.
        Some(f) => unsafe { f(d, p, buf, flags) },
        // SAFETY: newfstatat(2) with the caller's arguments.
        None => sys_int(unsafe { libc::syscall(libc::SYS_newfstatat, d, p, buf, flags) }),
    };
    // SAFETY: forwarded caller contract.
    unsafe { look(dirfd, path, flags & libc::AT_SYMLINK_NOFOLLOW == 0, call) }
}

/// Hooked `fstatat64`.
///
/// # Safety
///
/// As for libc's `fstatat64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fstatat64(dirfd: c_int, path: *const c_char, buf: *mut libc::stat64, flags: c_int) -> c_int {
    let call = |d: c_int, p: *const c_char| match real_fn!(real::FSTATAT64, Fstatat64Fn) {
        // SAFETY: the caller's arguments, the path possibly redirected.
        Some(f) => unsafe { f(d, p, buf, flags) },
        // SAFETY: newfstatat(2); on 64-bit Linux `struct stat64` is `struct stat`.
        None => sys_int(unsafe { libc::syscall(libc::SYS_newfstatat, d, p, buf, flags) }),
    };
    // SAFETY: forwarded caller contract.
    unsafe { look(dirfd, path, flags & libc::AT_SYMLINK_NOFOLLOW == 0, call) }
}

/// Hooked `statx(2)` (what coreutils' `ls` and `stat` call).
///
/// # Safety
///
/// As for libc's `statx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn statx(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mask: c_uint,
    buf: *mut libc::statx,
) -> c_int {
    let call = |d: c_int, p: *const c_char| match real_fn!(real::STATX, StatxFn) {
        // SAFETY: the caller's arguments, the path possibly redirected.
        Some(f) => unsafe { f(d, p, flags, mask, buf) },
        // SAFETY: statx(2) with the caller's arguments.
        None => sys_int(unsafe { libc::syscall(libc::SYS_statx, d, p, flags, mask, buf) }),
    };
    // SAFETY: forwarded caller contract.
    unsafe { look(dirfd, path, flags & libc::AT_SYMLINK_NOFOLLOW == 0, call) }
}

/// Hooked `access(2)`.
///
/// # Safety
///
/// As for libc's `access`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn access(path: *const c_char, mode: c_int) -> c_int {
    let call = |_: c_int, p: *const c_char| match real_fn!(real::ACCESS, AccessFn) {
        // SAFETY: the caller's mode and the (possibly redirected) NUL-terminated path.
        Some(f) => unsafe { f(p, mode) },
        // SAFETY: faccessat(2) with the caller's arguments.
        None => sys_int(unsafe { libc::syscall(libc::SYS_faccessat, libc::AT_FDCWD, p, mode) }),
    };
    // SAFETY: forwarded caller contract.
    unsafe { look(libc::AT_FDCWD, path, true, call) }
}

/// Hooked `faccessat(2)`.
///
/// # Safety
///
/// As for libc's `faccessat`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn faccessat(dirfd: c_int, path: *const c_char, mode: c_int, flags: c_int) -> c_int {
    let call = |d: c_int, p: *const c_char| match real_fn!(real::FACCESSAT, FaccessatFn) {
        // SAFETY: the caller's arguments, the path possibly redirected.
        Some(f) => unsafe { f(d, p, mode, flags) },
        // SAFETY: faccessat2(2) with the caller's arguments (faccessat(2) has no flags).
        None => sys_int(unsafe { libc::syscall(libc::SYS_faccessat2, d, p, mode, flags) }),
    };
    // SAFETY: forwarded caller contract.
    unsafe { look(dirfd, path, flags & libc::AT_SYMLINK_NOFOLLOW == 0, call) }
}

/// Hooked `readlink(2)`: the sandbox's symlink (one the sandboxed command made) when there is one.
///
/// # Safety
///
/// As for libc's `readlink`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readlink(path: *const c_char, buf: *mut c_char, size: libc::size_t) -> libc::ssize_t {
    let call = |_: c_int, p: *const c_char| match real_fn!(real::READLINK, ReadlinkFn) {
        // SAFETY: the caller's buffer and the (possibly redirected) NUL-terminated path.
        Some(f) => unsafe { f(p, buf, size) },
        // SAFETY: readlinkat(2) with the caller's arguments.
        None => sys_size(unsafe { libc::syscall(libc::SYS_readlinkat, libc::AT_FDCWD, p, buf, size) }),
    };
    // SAFETY: forwarded caller contract.
    unsafe { look(libc::AT_FDCWD, path, false, call) }
}

/// Hooked `readlinkat(2)`.
///
/// # Safety
///
/// As for libc's `readlinkat`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readlinkat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_char,
    size: libc::size_t,
) -> libc::ssize_t {
    let call = |d: c_int, p: *const c_char| match real_fn!(real::READLINKAT, ReadlinkatFn) {
        // SAFETY: the caller's arguments, the path possibly redirected.
        Some(f) => unsafe { f(d, p, buf, size) },
        // SAFETY: readlinkat(2) with the caller's arguments.
        None => sys_size(unsafe { libc::syscall(libc::SYS_readlinkat, d, p, buf, size) }),
    };
    // SAFETY: forwarded caller contract.
    unsafe { look(dirfd, path, false, call) }
}

/// Hooked `opendir(3)`: a directory that exists only in the sandbox can be listed (a directory in both trees is
/// listed from the real one: no merging).
///
/// # Safety
///
/// As for libc's `opendir`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn opendir(path: *const c_char) -> *mut libc::DIR {
    let call = |_: c_int, p: *const c_char| match real_fn!(real::OPENDIR, OpendirFn) {
        // SAFETY: the (possibly redirected) NUL-terminated path.
        Some(f) => unsafe { f(p) },
        None => {
            set_errno(libc::ENOSYS);
            core::ptr::null_mut()
        }
    };
    // SAFETY: forwarded caller contract.
    unsafe { look(libc::AT_FDCWD, path, true, call) }
}
