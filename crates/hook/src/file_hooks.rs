//! The exported file functions: each describes its call as a [`FileCall`] and runs the real libc function through
//! [`run`], which reports it or asks for a verdict first (see `file`).
//!
//! `open`, `open64`, `openat` and `openat64` are C-variadic: the mode is read only when the flags contain
//! `O_CREAT` or `O_TMPFILE`. Stable Rust cannot define a variadic function, so they are defined with the mode
//! as a plain third (fourth for openat) `c_uint` parameter. That is ABI-compatible with a variadic caller on the
//! two targets this is compiled for: on x86_64 (System V) and aarch64 Linux (AAPCS64) variadic integer
//! arguments travel in the same registers as named ones, in order, so the callee finds the mode where a named
//! third argument would be; `%al` (the vector-register count a variadic x86_64 caller sets) is simply unused.
//! When the caller passed no mode the register holds garbage, which is never read because the flags do not
//! create (the same rule libc's own `open` follows). The real functions are called through variadic function
//! pointer types, so the call into libc is an ordinary variadic call. On other architectures (where variadic
//! arguments may live elsewhere, e.g. on the stack on Apple's arm64) these four are not exported and those
//! calls are not seen.
//!
//! `fchmod` and `fchown` are covered through `/proc/self/fd/N` (read with `readlink`, no allocation); a descriptor
//! without a path (socket, pipe, memfd) is not reported. So is `fchownat(fd, "", .., AT_EMPTY_PATH)`.
//!
//! `link`, `linkat`, `symlink`, `symlinkat` report the name they create as the path and what it refers to as the
//! second path (see the protocol's `FileOp::links`); the agent also refuses a hard link whose source a rule
//! protects, since the new name would reach the same file past that rule. `chown`, `lchown`, `fchownat` and
//! `fchown` report an attribute change; the owner they set is not sent.
//!
//! A real function that `dlsym` cannot find (a libc without it) fails with `ENOSYS`, except the open family,
//! which falls back to the raw `openat` system call.

use core::ffi::{c_char, c_int, c_uint};

use ringwatch_hook_protocol::{FILE_FLAG_DIRECTORY, FileOp};

use crate::file::{CallResult, FileCall, fopen_flags, run};
use crate::real::{
    self, ChownFn, DirfdPathIntFn, FchmodFn, FchmodatFn, FchownFn, FchownatFn, FopenFn, LinkatFn, MkdiratFn, Open2Fn,
    PathFn, PathModeFn, RealFn, RenameFn, Renameat2Fn, RenameatFn, SymlinkatFn, TruncateFn, TwoPathFn, real_fn,
    sys_int,
};
use crate::report::set_errno;
use crate::sandbox::{self, OpenIntent, Remove, Route, Shadow};

/// The failure value of `R` with errno `ENOSYS`: the real function does not exist.
pub(crate) fn enosys<R: CallResult>() -> R {
    set_errno(libc::ENOSYS);
    R::denied()
}

/// Runs `call` on the caller's path, or, in a user-mode sandbox, on the shadow path the sandbox picks for it
/// (copying the file up first when `intent` writes); a path the sandbox cannot redirect fails with its errno.
///
/// # Safety
///
/// `path` is null or NUL-terminated.
pub(crate) unsafe fn routed<R: CallResult>(
    dirfd: c_int,
    path: *const c_char,
    intent: OpenIntent,
    call: impl FnOnce(*const c_char) -> R,
) -> R {
    if !sandbox::enabled() {
        return call(path);
    }
    let mut shadow = Shadow::new();
    // SAFETY: forwarded caller contract.
    match unsafe { sandbox::route(&mut shadow, dirfd, path, intent) } {
        Route::Original => call(path),
        Route::Shadow => call(shadow.ptr()),
        Route::Fail(errno) => {
            set_errno(errno);
            R::denied()
        }
    }
}

/// The raw `openat` system call, for a libc whose open functions dlsym cannot find.
///
/// # Safety
///
/// As for openat(2).
unsafe fn sys_openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: the caller's arguments are openat's; the kernel validates the pointer.
    sys_int(unsafe { libc::syscall(libc::SYS_openat, dirfd, path, flags, mode) })
}

/// The mode a real open gets: the caller's when the flags create, else 0 (the caller may not have passed one).
fn open_mode(flags: c_int, mode: c_uint) -> c_uint {
    if flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE { mode } else { 0 }
}

/// open/open64: `slot` is the real function.
///
/// # Safety
///
/// As for open(2).
unsafe fn open_path(op: FileOp, slot: &RealFn, path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    let mode = open_mode(flags, mode);
    let call = FileCall::open(op, libc::AT_FDCWD, path, flags, mode);
    let open = |path: *const c_char| match real_fn!(slot, real::OpenFn) {
        // SAFETY: the caller's arguments (the path possibly its shadow copy's), passed to the real function.
        Some(f) => unsafe { f(path, flags, mode) },
        None => {
            // SAFETY: as above, to the raw system call.
            unsafe { sys_openat(libc::AT_FDCWD, path, flags, mode) }
        }
    };
    // SAFETY: `path` is the caller's NUL-terminated string.
    let real = || unsafe { routed(libc::AT_FDCWD, path, OpenIntent::from_flags(flags), open) };
    // SAFETY: `path` is the caller's NUL-terminated string.
    unsafe { run(&call, real) }
}

/// openat/openat64.
///
/// # Safety
///
/// As for openat(2).
unsafe fn open_at(op: FileOp, slot: &RealFn, dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    let mode = open_mode(flags, mode);
    let call = FileCall::open(op, dirfd, path, flags, mode);
    // A shadow path is absolute, so `dirfd` does not matter for it.
    let open = |path: *const c_char| match real_fn!(slot, real::OpenatFn) {
        // SAFETY: the caller's arguments (the path possibly its shadow copy's), passed to the real function.
        Some(f) => unsafe { f(dirfd, path, flags, mode) },
        None => {
            // SAFETY: as above, to the raw system call.
            unsafe { sys_openat(dirfd, path, flags, mode) }
        }
    };
    // SAFETY: `path` is the caller's NUL-terminated string.
    let real = || unsafe { routed(dirfd, path, OpenIntent::from_flags(flags), open) };
    // SAFETY: `path` is the caller's NUL-terminated string.
    unsafe { run(&call, real) }
}

/// The four C-variadic open functions (x86_64 and aarch64 only; see the module doc).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod variadic {
    use core::ffi::{c_char, c_int, c_uint};

    use ringwatch_hook_protocol::FileOp;

    use super::{open_at, open_path};
    use crate::real;

    /// Hooked `open(2)`: `open(path, flags[, mode])`.
    ///
    /// # Safety
    ///
    /// As for libc's `open`; `mode` is read only when `flags` create.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
        // SAFETY: the caller's arguments.
        unsafe { open_path(FileOp::Open, &real::OPEN, path, flags, mode) }
    }

    /// Hooked `open64`.
    ///
    /// # Safety
    ///
    /// As for libc's `open64`.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
        // SAFETY: the caller's arguments.
        unsafe { open_path(FileOp::Open64, &real::OPEN64, path, flags, mode) }
    }

    /// Hooked `openat(2)`: `openat(dirfd, path, flags[, mode])`.
    ///
    /// # Safety
    ///
    /// As for libc's `openat`.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
        // SAFETY: the caller's arguments.
        unsafe { open_at(FileOp::Openat, &real::OPENAT, dirfd, path, flags, mode) }
    }

    /// Hooked `openat64`.
    ///
    /// # Safety
    ///
    /// As for libc's `openat64`.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn openat64(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
        // SAFETY: the caller's arguments.
        unsafe { open_at(FileOp::Openat64, &real::OPENAT64, dirfd, path, flags, mode) }
    }
}

/// `__open_2`/`__open64_2`: the `_FORTIFY_SOURCE` form of a two-argument open (never creates: the real function
/// aborts the program when the flags contain O_CREAT, as without the hook).
///
/// # Safety
///
/// As for glibc's `__open_2`.
unsafe fn open_fortified(op: FileOp, slot: &RealFn, path: *const c_char, flags: c_int) -> c_int {
    let call = FileCall::open(op, libc::AT_FDCWD, path, flags, 0);
    let open = |path: *const c_char| match real_fn!(slot, Open2Fn) {
        // SAFETY: the caller's arguments (the path possibly its shadow copy's), passed to the real function.
        Some(f) => unsafe { f(path, flags) },
        None => enosys(),
    };
    // SAFETY: `path` is the caller's NUL-terminated string.
    let real = || unsafe { routed(libc::AT_FDCWD, path, OpenIntent::from_flags(flags), open) };
    // SAFETY: `path` is the caller's NUL-terminated string.
    unsafe { run(&call, real) }
}

/// Hooked `__open_2` (glibc, `_FORTIFY_SOURCE`).
///
/// # Safety
///
/// As for glibc's `__open_2`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __open_2(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { open_fortified(FileOp::Open2, &real::OPEN_2, path, flags) }
}

/// Hooked `__open64_2` (glibc, `_FORTIFY_SOURCE`).
///
/// # Safety
///
/// As for glibc's `__open64_2`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __open64_2(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { open_fortified(FileOp::Open64_2, &real::OPEN64_2, path, flags) }
}

/// `__openat_2`/`__openat64_2`.
///
/// # Safety
///
/// As for glibc's `__openat_2`.
unsafe fn openat_fortified(op: FileOp, slot: &RealFn, dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    let call = FileCall::open(op, dirfd, path, flags, 0);
    let open = |path: *const c_char| match real_fn!(slot, DirfdPathIntFn) {
        // SAFETY: the caller's arguments (the path possibly its shadow copy's), passed to the real function.
        Some(f) => unsafe { f(dirfd, path, flags) },
        None => enosys(),
    };
    // SAFETY: `path` is the caller's NUL-terminated string.
    let real = || unsafe { routed(dirfd, path, OpenIntent::from_flags(flags), open) };
    // SAFETY: `path` is the caller's NUL-terminated string.
    unsafe { run(&call, real) }
}

/// Hooked `__openat_2` (glibc, `_FORTIFY_SOURCE`).
///
/// # Safety
///
/// As for glibc's `__openat_2`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { openat_fortified(FileOp::Openat2, &real::OPENAT_2, dirfd, path, flags) }
}

/// Hooked `__openat64_2` (glibc, `_FORTIFY_SOURCE`).
///
/// # Safety
///
/// As for glibc's `__openat64_2`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { openat_fortified(FileOp::Openat64_2, &real::OPENAT64_2, dirfd, path, flags) }
}

/// creat/creat64: open with `O_CREAT | O_WRONLY | O_TRUNC`.
///
/// # Safety
///
/// As for creat(2).
unsafe fn creat_common(op: FileOp, slot: &RealFn, path: *const c_char, mode: libc::mode_t) -> c_int {
    let call = FileCall::open(op, libc::AT_FDCWD, path, libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC, mode);
    let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
    let open = |path: *const c_char| match real_fn!(slot, PathModeFn) {
        // SAFETY: the caller's arguments (the path possibly its shadow copy's), passed to the real function.
        Some(f) => unsafe { f(path, mode) },
        None => {
            // SAFETY: as above, to the raw system call.
            unsafe { sys_openat(libc::AT_FDCWD, path, flags, mode) }
        }
    };
    // SAFETY: `path` is the caller's NUL-terminated string.
    let real = || unsafe { routed(libc::AT_FDCWD, path, OpenIntent::from_flags(flags), open) };
    // SAFETY: `path` is the caller's NUL-terminated string.
    unsafe { run(&call, real) }
}

/// Hooked `creat(2)`.
///
/// # Safety
///
/// As for libc's `creat`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn creat(path: *const c_char, mode: libc::mode_t) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { creat_common(FileOp::Creat, &real::CREAT, path, mode) }
}

/// Hooked `creat64`.
///
/// # Safety
///
/// As for libc's `creat64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn creat64(path: *const c_char, mode: libc::mode_t) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { creat_common(FileOp::Creat64, &real::CREAT64, path, mode) }
}

/// fopen/fopen64: the mode string becomes open flags (and 0666, fopen's creation mode); a mode fopen refuses is
/// not reported (the real call fails with EINVAL).
///
/// # Safety
///
/// As for fopen(3).
unsafe fn fopen_common(op: FileOp, slot: &RealFn, path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    let open = |path: *const c_char| match real_fn!(slot, FopenFn) {
        // SAFETY: the caller's arguments (the path possibly its shadow copy's).
        Some(f) => unsafe { f(path, mode) },
        None => enosys(),
    };
    // SAFETY: `mode` is the caller's NUL-terminated string (or null).
    let Some(flags) = (unsafe { fopen_flags(mode) }) else { return open(path) };
    // SAFETY: `path` is the caller's NUL-terminated string.
    let real = || unsafe { routed(libc::AT_FDCWD, path, OpenIntent::from_flags(flags), open) };
    let call = FileCall::open(op, libc::AT_FDCWD, path, flags, 0o666);
    // SAFETY: `path` is the caller's NUL-terminated string.
    unsafe { run(&call, real) }
}

/// Hooked `fopen(3)`.
///
/// # Safety
///
/// As for libc's `fopen`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fopen(path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    // SAFETY: the caller's arguments.
    unsafe { fopen_common(FileOp::Fopen, &real::FOPEN, path, mode) }
}

/// Hooked `fopen64`.
///
/// # Safety
///
/// As for libc's `fopen64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fopen64(path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    // SAFETY: the caller's arguments.
    unsafe { fopen_common(FileOp::Fopen64, &real::FOPEN64, path, mode) }
}

/// A one-path call (unlink, rmdir, remove).
///
/// # Safety
///
/// `path` is null or NUL-terminated.
unsafe fn path_only(call: FileCall, slot: &RealFn, path: *const c_char, kind: Remove) -> c_int {
    let real = || {
        // SAFETY: `path` is the caller's NUL-terminated string.
        if let Some(rc) = unsafe { sandbox::remove(libc::AT_FDCWD, path, kind) } {
            return rc;
        }
        match real_fn!(slot, PathFn) {
            // SAFETY: unchanged caller arguments, passed to the real function.
            Some(f) => unsafe { f(path) },
            None => enosys(),
        }
    };
    // SAFETY: `path` is the caller's NUL-terminated string.
    unsafe { run(&call, real) }
}

/// Hooked `unlink(2)`.
///
/// # Safety
///
/// As for libc's `unlink`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn unlink(path: *const c_char) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { path_only(FileCall::path(FileOp::Unlink, path), &real::UNLINK, path, Remove::File) }
}

/// Hooked `rmdir(2)`.
///
/// # Safety
///
/// As for libc's `rmdir`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmdir(path: *const c_char) -> c_int {
    let call = FileCall::path(FileOp::Rmdir, path).with_flags(FILE_FLAG_DIRECTORY);
    // SAFETY: the caller's arguments.
    unsafe { path_only(call, &real::RMDIR, path, Remove::Dir) }
}

/// Hooked `remove(3)` (a file or an empty directory).
///
/// # Safety
///
/// As for libc's `remove`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn remove(path: *const c_char) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { path_only(FileCall::path(FileOp::Remove, path), &real::REMOVE, path, Remove::Any) }
}

/// Hooked `unlinkat(2)`; `AT_REMOVEDIR` marks a directory.
///
/// # Safety
///
/// As for libc's `unlinkat`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    let dir = if flags & libc::AT_REMOVEDIR != 0 { FILE_FLAG_DIRECTORY } else { 0 };
    let call = FileCall::at(FileOp::Unlinkat, dirfd, path).with_call_flags(flags).with_flags(dir);
    let kind = if flags & libc::AT_REMOVEDIR != 0 { Remove::Dir } else { Remove::File };
    let real = || {
        // SAFETY: `path` is the caller's NUL-terminated string.
        if let Some(rc) = unsafe { sandbox::remove(dirfd, path, kind) } {
            return rc;
        }
        match real_fn!(real::UNLINKAT, DirfdPathIntFn) {
            // SAFETY: unchanged caller arguments, passed to the real function.
            Some(f) => unsafe { f(dirfd, path, flags) },
            None => enosys(),
        }
    };
    // SAFETY: `path` is the caller's NUL-terminated string.
    unsafe { run(&call, real) }
}

/// Hooked `rename(2)`.
///
/// # Safety
///
/// As for libc's `rename`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rename(old: *const c_char, new: *const c_char) -> c_int {
    let call = FileCall::path(FileOp::Rename, old).with_new_path(libc::AT_FDCWD, new);
    let real = || {
        // SAFETY: `old` and `new` are the caller's NUL-terminated strings.
        if let Some(rc) = unsafe { sandbox::rename(libc::AT_FDCWD, old, libc::AT_FDCWD, new, 0) } {
            return rc;
        }
        match real_fn!(real::RENAME, RenameFn) {
            // SAFETY: unchanged caller arguments, passed to the real function.
            Some(f) => unsafe { f(old, new) },
            None => enosys(),
        }
    };
    // SAFETY: `old` and `new` are the caller's NUL-terminated strings.
    unsafe { run(&call, real) }
}

/// Hooked `renameat(2)`.
///
/// # Safety
///
/// As for libc's `renameat`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn renameat(olddirfd: c_int, old: *const c_char, newdirfd: c_int, new: *const c_char) -> c_int {
    let call = FileCall::at(FileOp::Renameat, olddirfd, old).with_new_path(newdirfd, new);
    let real = || {
        // SAFETY: `old` and `new` are the caller's NUL-terminated strings.
        if let Some(rc) = unsafe { sandbox::rename(olddirfd, old, newdirfd, new, 0) } {
            return rc;
        }
        match real_fn!(real::RENAMEAT, RenameatFn) {
            // SAFETY: unchanged caller arguments, passed to the real function.
            Some(f) => unsafe { f(olddirfd, old, newdirfd, new) },
            None => enosys(),
        }
    };
    // SAFETY: `old` and `new` are the caller's NUL-terminated strings.
    unsafe { run(&call, real) }
}

/// Hooked `renameat2(2)`; its `RENAME_*` flags are reported as the call flags.
///
/// # Safety
///
/// As for libc's `renameat2`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn renameat2(
    olddirfd: c_int,
    old: *const c_char,
    newdirfd: c_int,
    new: *const c_char,
    flags: c_uint,
) -> c_int {
    let call =
        FileCall::at(FileOp::Renameat2, olddirfd, old).with_new_path(newdirfd, new).with_call_flags(flags as c_int);
    let real = || {
        // SAFETY: `old` and `new` are the caller's NUL-terminated strings.
        if let Some(rc) = unsafe { sandbox::rename(olddirfd, old, newdirfd, new, flags) } {
            return rc;
        }
        match real_fn!(real::RENAMEAT2, Renameat2Fn) {
            // SAFETY: unchanged caller arguments, passed to the real function.
            Some(f) => unsafe { f(olddirfd, old, newdirfd, new, flags) },
            None => enosys(),
        }
    };
    // SAFETY: `old` and `new` are the caller's NUL-terminated strings.
    unsafe { run(&call, real) }
}

/// truncate/truncate64.
///
/// # Safety
///
/// As for truncate(2).
unsafe fn truncate_common(op: FileOp, slot: &RealFn, path: *const c_char, length: i64) -> c_int {
    let call = FileCall::path(op, path);
    let truncate = |path: *const c_char| match real_fn!(slot, TruncateFn) {
        // SAFETY: the caller's arguments (the path possibly its shadow copy's), passed to the real function.
        Some(f) => unsafe { f(path, length) },
        None => enosys(),
    };
    // SAFETY: `path` is the caller's NUL-terminated string.
    let real = || unsafe { routed(libc::AT_FDCWD, path, OpenIntent::MODIFY, truncate) };
    // SAFETY: `path` is the caller's NUL-terminated string.
    unsafe { run(&call, real) }
}

/// Hooked `truncate(2)`.
///
/// # Safety
///
/// As for libc's `truncate`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn truncate(path: *const c_char, length: i64) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { truncate_common(FileOp::Truncate, &real::TRUNCATE, path, length) }
}

/// Hooked `truncate64`.
///
/// # Safety
///
/// As for libc's `truncate64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn truncate64(path: *const c_char, length: i64) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { truncate_common(FileOp::Truncate64, &real::TRUNCATE64, path, length) }
}

/// A path-and-mode call (chmod, mkdir).
///
/// # Safety
///
/// `path` is null or NUL-terminated.
unsafe fn path_mode(call: FileCall, slot: &RealFn, path: *const c_char, mode: libc::mode_t) -> c_int {
    let is_mkdir = call.op == FileOp::Mkdir;
    let original = |path: *const c_char| match real_fn!(slot, PathModeFn) {
        // SAFETY: the caller's arguments (the path possibly its shadow copy's), passed to the real function.
        Some(f) => unsafe { f(path, mode) },
        None => enosys(),
    };
    let real = || {
        if is_mkdir {
            // SAFETY: `path` is the caller's NUL-terminated string.
            if let Some(rc) = unsafe { sandbox::mkdir(libc::AT_FDCWD, path, mode) } {
                return rc;
            }
            return original(path);
        }
        // SAFETY: `path` is the caller's NUL-terminated string.
        unsafe { routed(libc::AT_FDCWD, path, OpenIntent::MODIFY, original) }
    };
    // SAFETY: `path` is the caller's NUL-terminated string.
    unsafe { run(&call, real) }
}

/// Hooked `chmod(2)`.
///
/// # Safety
///
/// As for libc's `chmod`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chmod(path: *const c_char, mode: libc::mode_t) -> c_int {
    let call = FileCall::path(FileOp::Chmod, path).with_mode(mode);
    // SAFETY: the caller's arguments.
    unsafe { path_mode(call, &real::CHMOD, path, mode) }
}

/// Hooked `mkdir(2)`.
///
/// # Safety
///
/// As for libc's `mkdir`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mkdir(path: *const c_char, mode: libc::mode_t) -> c_int {
    let call = FileCall::path(FileOp::Mkdir, path).with_mode(mode).with_flags(FILE_FLAG_DIRECTORY);
    // SAFETY: the caller's arguments.
    unsafe { path_mode(call, &real::MKDIR, path, mode) }
}

/// Hooked `mkdirat(2)`.
///
/// # Safety
///
/// As for libc's `mkdirat`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mkdirat(dirfd: c_int, path: *const c_char, mode: libc::mode_t) -> c_int {
    let call = FileCall::at(FileOp::Mkdirat, dirfd, path).with_mode(mode).with_flags(FILE_FLAG_DIRECTORY);
    let real = || {
        // SAFETY: `path` is the caller's NUL-terminated string.
        if let Some(rc) = unsafe { sandbox::mkdir(dirfd, path, mode) } {
            return rc;
        }
        match real_fn!(real::MKDIRAT, MkdiratFn) {
            // SAFETY: unchanged caller arguments, passed to the real function.
            Some(f) => unsafe { f(dirfd, path, mode) },
            None => enosys(),
        }
    };
    // SAFETY: `path` is the caller's NUL-terminated string.
    unsafe { run(&call, real) }
}

/// Hooked `fchmod(2)`: the file is named by the descriptor's `/proc/self/fd` link.
///
/// # Safety
///
/// As for libc's `fchmod`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fchmod(fd: c_int, mode: libc::mode_t) -> c_int {
    let call = FileCall { fd, ..FileCall::path(FileOp::Fchmod, core::ptr::null()) }.with_mode(mode);
    let real = || match real_fn!(real::FCHMOD, FchmodFn) {
        // SAFETY: unchanged caller arguments, passed to the real function.
        Some(f) => unsafe { f(fd, mode) },
        None => enosys(),
    };
    // SAFETY: a null path with a descriptor is what run expects for fchmod.
    unsafe { run(&call, real) }
}

/// Hooked `fchmodat(2)`.
///
/// # Safety
///
/// As for libc's `fchmodat`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fchmodat(dirfd: c_int, path: *const c_char, mode: libc::mode_t, flags: c_int) -> c_int {
    let call = FileCall::at(FileOp::Fchmodat, dirfd, path).with_mode(mode).with_call_flags(flags);
    let original = |path: *const c_char| match real_fn!(real::FCHMODAT, FchmodatFn) {
        // SAFETY: the caller's arguments (the path possibly its shadow copy's), passed to the real function.
        Some(f) => unsafe { f(dirfd, path, mode, flags) },
        None => enosys(),
    };
    // SAFETY: `path` is the caller's NUL-terminated string.
    let real = || unsafe { routed(dirfd, path, OpenIntent::MODIFY, original) };
    // SAFETY: `path` is the caller's NUL-terminated string.
    unsafe { run(&call, real) }
}

/// Hooked `link(2)`: reported as the creation of `new`, referring to `old`.
///
/// # Safety
///
/// As for libc's `link`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn link(old: *const c_char, new: *const c_char) -> c_int {
    let call = FileCall::path(FileOp::Link, new).with_new_path(libc::AT_FDCWD, old);
    let real = || {
        // SAFETY: `old` and `new` are the caller's NUL-terminated strings.
        if let Some(rc) = unsafe { sandbox::link(libc::AT_FDCWD, old, libc::AT_FDCWD, new, 0) } {
            return rc;
        }
        match real_fn!(real::LINK, TwoPathFn) {
            // SAFETY: unchanged caller arguments, passed to the real function.
            Some(f) => unsafe { f(old, new) },
            None => enosys(),
        }
    };
    // SAFETY: `old` and `new` are the caller's NUL-terminated strings.
    unsafe { run(&call, real) }
}

/// Hooked `linkat(2)`; its `AT_*` flags are reported as the call flags.
///
/// # Safety
///
/// As for libc's `linkat`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn linkat(
    olddirfd: c_int,
    old: *const c_char,
    newdirfd: c_int,
    new: *const c_char,
    flags: c_int,
) -> c_int {
    let call = FileCall::at(FileOp::Linkat, newdirfd, new).with_new_path(olddirfd, old).with_call_flags(flags);
    let real = || {
        // SAFETY: `old` and `new` are the caller's NUL-terminated strings.
        if let Some(rc) = unsafe { sandbox::link(olddirfd, old, newdirfd, new, flags) } {
            return rc;
        }
        match real_fn!(real::LINKAT, LinkatFn) {
            // SAFETY: unchanged caller arguments, passed to the real function.
            Some(f) => unsafe { f(olddirfd, old, newdirfd, new, flags) },
            None => enosys(),
        }
    };
    // SAFETY: `old` and `new` are the caller's NUL-terminated strings.
    unsafe { run(&call, real) }
}

/// Hooked `symlink(2)`: reported as the creation of `path`, referring to `text` (joined with the link's directory
/// when relative).
///
/// # Safety
///
/// As for libc's `symlink`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn symlink(text: *const c_char, path: *const c_char) -> c_int {
    let call = FileCall::path(FileOp::Symlink, path).with_new_path(libc::AT_FDCWD, text);
    let real = || {
        // SAFETY: `text` and `path` are the caller's NUL-terminated strings.
        if let Some(rc) = unsafe { sandbox::symlink(text, libc::AT_FDCWD, path) } {
            return rc;
        }
        match real_fn!(real::SYMLINK, TwoPathFn) {
            // SAFETY: unchanged caller arguments, passed to the real function.
            Some(f) => unsafe { f(text, path) },
            None => enosys(),
        }
    };
    // SAFETY: `text` and `path` are the caller's NUL-terminated strings.
    unsafe { run(&call, real) }
}

/// Hooked `symlinkat(2)`.
///
/// # Safety
///
/// As for libc's `symlinkat`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn symlinkat(text: *const c_char, dirfd: c_int, path: *const c_char) -> c_int {
    let call = FileCall::at(FileOp::Symlinkat, dirfd, path).with_new_path(dirfd, text);
    let real = || {
        // SAFETY: `text` and `path` are the caller's NUL-terminated strings.
        if let Some(rc) = unsafe { sandbox::symlink(text, dirfd, path) } {
            return rc;
        }
        match real_fn!(real::SYMLINKAT, SymlinkatFn) {
            // SAFETY: unchanged caller arguments, passed to the real function.
            Some(f) => unsafe { f(text, dirfd, path) },
            None => enosys(),
        }
    };
    // SAFETY: `text` and `path` are the caller's NUL-terminated strings.
    unsafe { run(&call, real) }
}

/// chown/lchown: `slot` is the real function; `intent` says whether a final symlink is followed.
///
/// # Safety
///
/// As for chown(2).
unsafe fn chown_common(
    call: FileCall,
    slot: &RealFn,
    intent: OpenIntent,
    path: *const c_char,
    owner: libc::uid_t,
    group: libc::gid_t,
) -> c_int {
    let original = |path: *const c_char| match real_fn!(slot, ChownFn) {
        // SAFETY: the caller's arguments (the path possibly its shadow copy's), passed to the real function.
        Some(f) => unsafe { f(path, owner, group) },
        None => enosys(),
    };
    // SAFETY: `path` is the caller's NUL-terminated string.
    let real = || unsafe { routed(libc::AT_FDCWD, path, intent, original) };
    // SAFETY: `path` is the caller's NUL-terminated string.
    unsafe { run(&call, real) }
}

/// Hooked `chown(2)`.
///
/// # Safety
///
/// As for libc's `chown`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chown(path: *const c_char, owner: libc::uid_t, group: libc::gid_t) -> c_int {
    let call = FileCall::path(FileOp::Chown, path);
    // SAFETY: the caller's arguments.
    unsafe { chown_common(call, &real::CHOWN, OpenIntent::MODIFY, path, owner, group) }
}

/// Hooked `lchown(2)`: reported with `AT_SYMLINK_NOFOLLOW` as its call flags (it is `fchownat` with that flag).
///
/// # Safety
///
/// As for libc's `lchown`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lchown(path: *const c_char, owner: libc::uid_t, group: libc::gid_t) -> c_int {
    let call = FileCall::path(FileOp::Lchown, path).with_call_flags(libc::AT_SYMLINK_NOFOLLOW);
    // SAFETY: the caller's arguments.
    unsafe { chown_common(call, &real::LCHOWN, OpenIntent::MODIFY_LINK, path, owner, group) }
}

/// Hooked `fchownat(2)`; with `AT_EMPTY_PATH` and an empty path the file is the descriptor's, as for fchown.
///
/// # Safety
///
/// As for libc's `fchownat`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fchownat(
    dirfd: c_int,
    path: *const c_char,
    owner: libc::uid_t,
    group: libc::gid_t,
    flags: c_int,
) -> c_int {
    // SAFETY: `path` is null or the caller's NUL-terminated string; only its first byte is read.
    let empty = !path.is_null() && unsafe { *path } == 0;
    let call = if empty && flags & libc::AT_EMPTY_PATH != 0 {
        FileCall { fd: dirfd, ..FileCall::path(FileOp::Fchownat, core::ptr::null()) }
    } else {
        FileCall::at(FileOp::Fchownat, dirfd, path)
    }
    .with_call_flags(flags);
    let intent = if flags & libc::AT_SYMLINK_NOFOLLOW != 0 { OpenIntent::MODIFY_LINK } else { OpenIntent::MODIFY };
    let original = |path: *const c_char| match real_fn!(real::FCHOWNAT, FchownatFn) {
        // SAFETY: the caller's arguments (the path possibly its shadow copy's), passed to the real function.
        Some(f) => unsafe { f(dirfd, path, owner, group, flags) },
        None => enosys(),
    };
    // SAFETY: `path` is the caller's NUL-terminated string.
    let real = || unsafe { routed(dirfd, path, intent, original) };
    // SAFETY: the call's path is the caller's NUL-terminated string, or null with a descriptor.
    unsafe { run(&call, real) }
}

/// Hooked `fchown(2)`: the file is named by the descriptor's `/proc/self/fd` link.
///
/// # Safety
///
/// As for libc's `fchown`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fchown(fd: c_int, owner: libc::uid_t, group: libc::gid_t) -> c_int {
    let call = FileCall { fd, ..FileCall::path(FileOp::Fchown, core::ptr::null()) };
    let real = || match real_fn!(real::FCHOWN, FchownFn) {
        // SAFETY: unchanged caller arguments, passed to the real function.
        Some(f) => unsafe { f(fd, owner, group) },
        None => enosys(),
    };
    // SAFETY: a null path with a descriptor is what run expects for fchown.
    unsafe { run(&call, real) }
}
