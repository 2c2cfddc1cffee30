//! The exported time-change and device-node functions: `utime`, `utimes`, `utimensat`, `futimens` (reported as
//! `chmod`, the contract's attribute-change activity: setting a file's times back is how an intruder hides a change,
//! "timestomping") and `mknod`, `mknodat` (`create`, with the mode). Like the other file hooks they report, or ask
//! first and refuse with `EACCES` when a rule may deny, and in a user-mode sandbox act on the shadow copy (a time
//! change copies the file up first; a node is made in the shadow).
//!
//! A call on a descriptor (`futimens`, `utimensat` with a null path) names the file by its `/proc/self/fd` link, as
//! `fchmod` does, and in a sandbox acts on whatever the descriptor is open on.

use core::ffi::{c_char, c_int};

use ringwatch_hook_protocol::FileOp;

use crate::file::{FileCall, run};
use crate::file_hooks::{enosys, routed};
use crate::real::{self, FutimensFn, MknodFn, MknodatFn, UtimeFn, UtimensatFn, UtimesFn, real_fn};
use crate::sandbox::OpenIntent;

/// Hooked `utime(2)`.
///
/// # Safety
///
/// As for libc's `utime`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn utime(path: *const c_char, times: *const libc::utimbuf) -> c_int {
    let call = FileCall::path(FileOp::Utime, path);
    let original = |p: *const c_char| match real_fn!(real::UTIME, UtimeFn) {
        // SAFETY: the caller's arguments (the path possibly its shadow copy's), passed to the real function.
        Some(f) => unsafe { f(p, times) },
        None => enosys(),
    };
    // SAFETY: `path` is the caller's NUL-terminated string.
    let real = || unsafe { routed(libc::AT_FDCWD, path, OpenIntent::MODIFY, original) };
    // SAFETY: as above.
    unsafe { run(&call, real) }
}

/// Hooked `utimes(2)`.
///
/// # Safety
///
/// As for libc's `utimes`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn utimes(path: *const c_char, times: *const libc::timeval) -> c_int {
    let call = FileCall::path(FileOp::Utimes, path);
    let original = |p: *const c_char| match real_fn!(real::UTIMES, UtimesFn) {
        // SAFETY: the caller's arguments (the path possibly its shadow copy's), passed to the real function.
        Some(f) => unsafe { f(p, times) },
        None => enosys(),
    };
    // SAFETY: `path` is the caller's NUL-terminated string.
    let real = || unsafe { routed(libc::AT_FDCWD, path, OpenIntent::MODIFY, original) };
    // SAFETY: as above.
    unsafe { run(&call, real) }
}

/// Hooked `utimensat(2)`: with a null path it is `futimens` on `dirfd`.
///
/// # Safety
///
/// As for libc's `utimensat`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn utimensat(
    dirfd: c_int,
    path: *const c_char,
    times: *const libc::timespec,
    flags: c_int,
) -> c_int {
    let original = |d: c_int, p: *const c_char| match real_fn!(real::UTIMENSAT, UtimensatFn) {
        // SAFETY: the caller's arguments (the path possibly its shadow copy's), passed to the real function.
        Some(f) => unsafe { f(d, p, times, flags) },
        None => enosys(),
    };
    if path.is_null() {
        let call =
            FileCall { fd: dirfd, ..FileCall::path(FileOp::Utimensat, core::ptr::null()) }.with_call_flags(flags);
        // SAFETY: a null path with a descriptor is what run expects for a call on a descriptor.
        return unsafe { run(&call, || original(dirfd, path)) };
    }
    let call = FileCall::at(FileOp::Utimensat, dirfd, path).with_call_flags(flags);
    let intent = if flags & libc::AT_SYMLINK_NOFOLLOW != 0 { OpenIntent::MODIFY_LINK } else { OpenIntent::MODIFY };
    // A redirected path is absolute, so the kernel ignores `dirfd` for it.
    // SAFETY: `path` is the caller's NUL-terminated string.
    let real = || unsafe { routed(dirfd, path, intent, |p| original(dirfd, p)) };
    // SAFETY: as above.
    unsafe { run(&call, real) }
}

/// Hooked `futimens(3)`: the file is named by the descriptor's `/proc/self/fd` link.
///
/// # Safety
///
/// As for libc's `futimens`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn futimens(fd: c_int, times: *const libc::timespec) -> c_int {
    let call = FileCall { fd, ..FileCall::path(FileOp::Futimens, core::ptr::null()) };
    let real = || match real_fn!(real::FUTIMENS, FutimensFn) {
        // SAFETY: unchanged caller arguments, passed to the real function.
        Some(f) => unsafe { f(fd, times) },
        None => enosys(),
    };
    // SAFETY: a null path with a descriptor is what run expects for a call on a descriptor.
    unsafe { run(&call, real) }
}

/// A new name, the way mknod makes one: in a sandbox, in the shadow (fails if the name exists, as mknod does).
fn node_intent() -> OpenIntent {
    OpenIntent::from_flags(libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY)
}

/// Hooked `mknod(2)`: a `create` with the mode (file type and permissions).
///
/// # Safety
///
/// As for libc's `mknod`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mknod(path: *const c_char, mode: libc::mode_t, dev: libc::dev_t) -> c_int {
    let call = FileCall::path(FileOp::Mknod, path).with_mode(mode);
    let original = |p: *const c_char| match real_fn!(real::MKNOD, MknodFn) {
        // SAFETY: the caller's arguments (the path possibly its shadow copy's), passed to the real function.
        Some(f) => unsafe { f(p, mode, dev) },
        None => enosys(),
    };
    // SAFETY: `path` is the caller's NUL-terminated string.
    let real = || unsafe { routed(libc::AT_FDCWD, path, node_intent(), original) };
    // SAFETY: as above.
    unsafe { run(&call, real) }
}

/// Hooked `mknodat(2)`.
///
/// # Safety
///
/// As for libc's `mknodat`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mknodat(dirfd: c_int, path: *const c_char, mode: libc::mode_t, dev: libc::dev_t) -> c_int {
    let call = FileCall::at(FileOp::Mknodat, dirfd, path).with_mode(mode);
    let original = |p: *const c_char| match real_fn!(real::MKNODAT, MknodatFn) {
        // SAFETY: the caller's arguments (the path possibly its shadow copy's), passed to the real function.
        Some(f) => unsafe { f(dirfd, p, mode, dev) },
        None => enosys(),
    };
    // SAFETY: `path` is the caller's NUL-terminated string.
    let real = || unsafe { routed(dirfd, path, node_intent(), original) };
    // SAFETY: as above.
    unsafe { run(&call, real) }
}
