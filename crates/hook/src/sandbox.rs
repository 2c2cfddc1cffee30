//! User-mode file virtualization (`ringwatch sandbox --mode user`): path-taking calls under a sandboxed directory
//! are redirected into a shadow tree that uses the overlayfs upper-layer format, so `ringwatch sandbox diff` reads
//! it with the same code as a kernel-mode sandbox.
//!
//! # The spec
//!
//! `RINGWATCH_SANDBOX_SHADOW` holds one line per sandboxed directory, `DIR<TAB>UPPER`, lines separated by `\n`:
//! `DIR` is the real directory (absolute, canonical, no trailing `/`), `UPPER` its shadow tree
//! (`STATE/NAME/<escaped dir>/upper`, made by the CLI). At most [`MAX_DIRS`] lines, each path shorter than
//! [`MAX_SPEC_PATH`] bytes, no tab or newline inside a path (the CLI refuses such directories). It is read once, by
//! the library constructor, into a fixed-size static table; malformed lines are ignored. Unset or empty: the hooks
//! behave as without this module.
//!
//! # Mechanism (per call, no allocation: two 4 KiB path buffers at most, and one more 4 KiB buffer at a time for a
//! copy, a symlink's text or a followed path)
//!
//! The path is made absolute (cwd or dirfd, as for reports) and folded lexically (`.`, `..`, `//`), then matched
//! against the table. Outside every directory: the original call. Inside: `DIR/rel` maps to `UPPER/rel`, and the
//! shadow is walked component by component (`lstat` each prefix):
//! - a whiteout (char device 0:0, or an empty file with `trusted.overlay.whiteout` / `user.overlay.whiteout`) at the
//!   final component or above: the path does not exist (`ENOENT`);
//! - an opaque directory (`trusted.overlay.opaque=y` or `user.overlay.opaque=y`): the real tree below is hidden;
//! - the shadow stops existing at some level: the real file shows through.
//!
//! Reads (`open` read-only, `fopen "r"`) use the shadow copy when there is one, except a directory that also exists
//! in the real tree (not opaque): it is opened in the real tree, so a listing shows the real entries and NOT the
//! shadow's (no readdir merging). Writes (`open`/`fopen` for writing, `O_CREAT`, `O_TRUNC`, `creat`, `truncate`,
//! `chmod`/`fchmodat`, `chown`/`lchown`/`fchownat`) first copy up: the missing parent directories are made in the
//! shadow (real mode and owner), then the file (bytes unless truncating, mode, owner, times; written to an
//! `O_TMPFILE` and linked into place when complete; a symlink, for `lchown` and `AT_SYMLINK_NOFOLLOW`, as a
//! symlink with the same text), then the real function runs on the shadow path. Deletes (`unlink*`, `rmdir`,
//! `remove`) remove the shadow entry and leave a whiteout when a real entry exists (mknod 0:0 as root; otherwise an
//! empty file with `user.overlay.whiteout`); `rmdir` checks emptiness of the merged view. `mkdir` over a whiteout
//! makes an opaque directory. `rename*` inside one sandboxed directory copies the source up, renames in the shadow
//! and whites out the source; a real directory, or one side outside the sandboxed directory, gets `EXDEV` (as
//! overlayfs without `redirect_dir`; `mv` then copies and deletes, which the hooks virtualize). `symlink*` makes
//! the link in the shadow with its text unchanged (parents made as for writes; over a whiteout it replaces it).
//! `link*` inside one sandboxed directory copies the source up and links in the shadow; one side outside gets
//! `EXDEV` (`ln` fails; `cp` is the way in or out), except a source given as a descriptor whose file is in the
//! shadow already (`AT_EMPTY_PATH`, or `/proc/self/fd/N` with `AT_SYMLINK_FOLLOW`: naming an `O_TMPFILE` file).
//!
//! Symlinks in the shadow (made by a sandboxed `symlink`, or copied up) are followed by the hook, not the kernel:
//! the kernel would resolve a relative text against the shadow, which lacks every file not copied up. A
//! directory component that is such a link is always followed, a final one when the call follows (open without
//! `O_NOFOLLOW` or `O_CREAT|O_EXCL`, truncate, chmod, chown): its text is resolved against the sandboxed
//! directory (the merged view), the result mapped again (at most 40 links, then `ELOOP`). Where the real tree
//! shows through, the call goes to the real path the link led to; a link leading out of every sandboxed directory
//! leads to the outside path (as it would under overlayfs).
//!
//! Fail-closed: a call under a sandboxed directory that cannot be redirected (path too long, the shadow refuses a
//! copy-up) fails with that errno instead of touching the real directory. Everything else fails open as the rest of
//! the hook does. The hook's own file operations use raw system calls, so they never re-enter a hook.
//!
//! # What it does not see (writes land in the real directory)
//!
//! Static binaries, raw `syscall(2)`, io_uring, setuid programs, programs that clear `LD_PRELOAD`, descriptors
//! opened before the hook, and every libc entry point that is not hooked (`setxattr` and friends, `freopen`):
//! `fchmod`/`fchown`/`futimens` (or the `*at` forms with a descriptor) of a descriptor opened read-only on the real
//! file, `chdir` into a directory
//! that exists only in the shadow, and libc-internal opens. Looks through `stat`, `statx`, `access`, `readlink` and
//! `opendir` (and their variants) see the sandbox's view (`sandbox_reads`), but directory listings are not merged: a
//! directory that exists in both trees lists the real entries. Symlinks of the real tree are followed by the kernel in the real tree (a
//! read through one sees the real file even when the sandbox changed it). Paths are folded lexically, so a `..`
//! after a real symlink, or a path reaching the directory through a real symlink, is judged by its spelling.

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_long, c_uint};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::guard;
use crate::paths::absolute;
use crate::report::{SavedErrno, errno, set_errno};

/// The environment variable holding the spec.
pub(crate) const SPEC_ENV: &[u8] = b"RINGWATCH_SANDBOX_SHADOW";
/// Most sandboxed directories per process.
pub(crate) const MAX_DIRS: usize = 8;
/// Longest directory or shadow path in the spec, NUL excluded, plus one.
pub(crate) const MAX_SPEC_PATH: usize = 1024;
/// A path buffer: PATH_MAX including the NUL.
const BUF: usize = 4096;

const WHITEOUT_XATTRS: [&core::ffi::CStr; 2] = [c"trusted.overlay.whiteout", c"user.overlay.whiteout"];
const OPAQUE_XATTRS: [&core::ffi::CStr; 2] = [c"trusted.overlay.opaque", c"user.overlay.opaque"];

/// One sandboxed directory.
#[derive(Clone, Copy)]
struct Entry {
    dir: [u8; MAX_SPEC_PATH],
    dir_len: usize,
    upper: [u8; MAX_SPEC_PATH],
    upper_len: usize,
}

const EMPTY: Entry = Entry { dir: [0; MAX_SPEC_PATH], dir_len: 0, upper: [0; MAX_SPEC_PATH], upper_len: 0 };

struct Table(UnsafeCell<[Entry; MAX_DIRS]>);

// SAFETY: the table is written only by `init`, in the library constructor while the process is single-threaded and
// before COUNT is stored with Release; readers load COUNT with Acquire first and only read. It is never written again.
unsafe impl Sync for Table {}

static TABLE: Table = Table(UnsafeCell::new([EMPTY; MAX_DIRS]));
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Reads the spec from the environment (library constructor only).
pub(crate) fn init() {
    // SAFETY: the live process environment, read at once.
    let Some(value) = (unsafe { crate::env::lookup(crate::env::current(), SPEC_ENV) }) else { return };
    // SAFETY: the constructor runs single-threaded and before COUNT is published; nobody reads the table yet.
    let table = unsafe { &mut *TABLE.0.get() };
    let n = parse(value.to_bytes(), table);
    COUNT.store(n, Ordering::Release);
}

/// Fills `table` from the spec text; returns how many entries are valid.
fn parse(spec: &[u8], table: &mut [Entry; MAX_DIRS]) -> usize {
    let mut n = 0usize;
    for line in spec.split(|b| *b == b'\n') {
        let Some(tab) = line.iter().position(|b| *b == b'\t') else { continue };
        let (Some(mut dir), Some(upper)) = (line.get(..tab), line.get(tab.saturating_add(1)..)) else { continue };
        while dir.len() > 1 && dir.last() == Some(&b'/') {
            dir = dir.get(..dir.len().saturating_sub(1)).unwrap_or(dir);
        }
        let ok = |p: &[u8]| p.first() == Some(&b'/') && p.len() < MAX_SPEC_PATH && !p.contains(&b'\t');
        if !ok(dir) || !ok(upper) || dir == b"/" {
            continue;
        }
        let Some(e) = table.get_mut(n) else { break };
        *e = EMPTY;
        if let (Some(d), Some(u)) = (e.dir.get_mut(..dir.len()), e.upper.get_mut(..upper.len())) {
            d.copy_from_slice(dir);
            u.copy_from_slice(upper);
        }
        e.dir_len = dir.len();
        e.upper_len = upper.len();
        n = n.saturating_add(1);
    }
    n
}

/// The valid entries, empty when no sandbox is set (or the hook is bypassed).
fn entries() -> &'static [Entry] {
    let n = COUNT.load(Ordering::Acquire);
    if n == 0 || guard::bypassed() {
        return &[];
    }
    // SAFETY: COUNT was published after the table was written (see `Table`); it is read-only from now on.
    let table = unsafe { &*TABLE.0.get() };
    table.get(..n).unwrap_or(&[])
}

/// True when this process has a sandbox spec.
pub(crate) fn enabled() -> bool {
    !entries().is_empty()
}

// ------------------------------------------------------------------------------------------------------------------
// Raw system calls: the hook's own file operations never go through an interposed symbol.

fn ret(rc: c_long) -> Result<c_int, c_int> {
    if rc < 0 { Err(errno()) } else { Ok(c_int::try_from(rc).unwrap_or(c_int::MAX)) }
}

/// # Safety
/// `path` is NUL-terminated.
unsafe fn sys_openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> Result<c_int, c_int> {
    // SAFETY: openat's arguments; the kernel validates the pointer.
    ret(unsafe { libc::syscall(libc::SYS_openat, dirfd, path, flags | libc::O_CLOEXEC, mode) })
}

fn close(fd: c_int) {
    // SAFETY: closing a descriptor this module opened.
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

/// A descriptor closed on drop.
struct OwnedFd(c_int);

impl Drop for OwnedFd {
    fn drop(&mut self) {
        close(self.0);
    }
}

/// # Safety
/// `path` is NUL-terminated.
unsafe fn stat_at(dirfd: c_int, path: *const c_char, flags: c_int) -> Result<libc::stat, c_int> {
    // SAFETY: all-zero is a valid `stat`.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `st` is writable; `path` is NUL-terminated.
    ret(unsafe { libc::syscall(libc::SYS_newfstatat, dirfd, path, &raw mut st, flags) }).map(|_| st)
}

/// # Safety
/// `path` is NUL-terminated.
unsafe fn lstat(path: *const c_char) -> Result<libc::stat, c_int> {
    // SAFETY: forwarded.
    unsafe { stat_at(libc::AT_FDCWD, path, libc::AT_SYMLINK_NOFOLLOW) }
}

/// # Safety
/// `path` is NUL-terminated.
unsafe fn mkdir_at(dirfd: c_int, path: *const c_char, mode: c_uint) -> Result<c_int, c_int> {
    // SAFETY: mkdirat's arguments.
    ret(unsafe { libc::syscall(libc::SYS_mkdirat, dirfd, path, mode) })
}

/// # Safety
/// `path` is NUL-terminated.
unsafe fn unlink_at(dirfd: c_int, path: *const c_char, flags: c_int) -> Result<c_int, c_int> {
    // SAFETY: unlinkat's arguments.
    ret(unsafe { libc::syscall(libc::SYS_unlinkat, dirfd, path, flags) })
}

/// # Safety
/// Both paths are NUL-terminated.
unsafe fn rename_at(old: *const c_char, new: *const c_char, flags: c_uint) -> Result<c_int, c_int> {
    // SAFETY: renameat2's arguments.
    ret(unsafe { libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, old, libc::AT_FDCWD, new, flags) })
}

/// # Safety
/// Both paths are NUL-terminated.
unsafe fn symlink_at(text: *const c_char, path: *const c_char) -> Result<c_int, c_int> {
    // SAFETY: symlinkat's arguments.
    ret(unsafe { libc::syscall(libc::SYS_symlinkat, text, libc::AT_FDCWD, path) })
}

/// # Safety
/// `old` is NUL-terminated (or empty with `AT_EMPTY_PATH`), `new` NUL-terminated.
unsafe fn link_at(olddirfd: c_int, old: *const c_char, new: *const c_char, flags: c_int) -> Result<c_int, c_int> {
    // SAFETY: linkat's arguments.
    ret(unsafe { libc::syscall(libc::SYS_linkat, olddirfd, old, libc::AT_FDCWD, new, flags) })
}

/// # Safety
/// `path` is NUL-terminated.
unsafe fn chown_path(path: *const c_char, uid: libc::uid_t, gid: libc::gid_t) {
    // SAFETY: fchownat's arguments; failure (not root) leaves the caller's ids, which is all we can do.
    unsafe { libc::syscall(libc::SYS_fchownat, libc::AT_FDCWD, path, uid, gid, libc::AT_SYMLINK_NOFOLLOW) };
}

/// # Safety
/// `path` is NUL-terminated.
unsafe fn has_xattr(path: *const c_char, names: &[&core::ffi::CStr], want_y: bool) -> bool {
    names.iter().any(|name| {
        let mut v = [0u8; 4];
        // SAFETY: `v` is writable for its length; both strings are NUL-terminated.
        let n = unsafe { libc::syscall(libc::SYS_lgetxattr, path, name.as_ptr(), v.as_mut_ptr(), v.len()) };
        n >= 0 && (!want_y || (n == 1 && v.first() == Some(&b'y')))
    })
}

/// # Safety
/// `path` is NUL-terminated.
unsafe fn set_xattr(path: *const c_char, names: &[&core::ffi::CStr], value: &[u8]) -> Result<(), c_int> {
    let mut last = libc::ENOTSUP;
    for name in names {
        // SAFETY: `value` is readable for its length; both strings are NUL-terminated.
        let rc =
            unsafe { libc::syscall(libc::SYS_lsetxattr, path, name.as_ptr(), value.as_ptr(), value.len(), 0 as c_int) };
        if rc == 0 {
            return Ok(());
        }
        last = errno();
    }
    Err(last)
}

fn file_type(st: &libc::stat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

/// # Safety
/// `path` is NUL-terminated and names the entry `st` describes.
unsafe fn is_whiteout(path: *const c_char, st: &libc::stat) -> bool {
    match file_type(st) {
        libc::S_IFCHR => st.st_rdev == 0,
        // SAFETY: forwarded.
        libc::S_IFREG => st.st_size == 0 && unsafe { has_xattr(path, &WHITEOUT_XATTRS, false) },
        _ => false,
    }
}

/// Makes a whiteout at `path`: a 0:0 char device, or (without CAP_MKNOD) an empty file with `user.overlay.whiteout`.
///
/// # Safety
/// `path` is NUL-terminated.
unsafe fn make_whiteout(path: *const c_char) -> Result<(), c_int> {
    // SAFETY: mknodat's arguments.
    let rc = unsafe { libc::syscall(libc::SYS_mknodat, libc::AT_FDCWD, path, libc::S_IFCHR, 0 as libc::dev_t) };
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: NUL-terminated path.
    let fd = unsafe { sys_openat(libc::AT_FDCWD, path, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600) }?;
    close(fd);
    // SAFETY: NUL-terminated path.
    unsafe { set_xattr(path, &WHITEOUT_XATTRS, b"y") }.inspect_err(|_| {
        // SAFETY: NUL-terminated path; the empty file would read as a created file, so it goes.
        let _ = unsafe { unlink_at(libc::AT_FDCWD, path, 0) };
    })
}

/// Calls `f` on each name in the directory `fd` (not `.` or `..`) until it returns `Ok(false)` or an error.
fn each_entry(fd: c_int, mut f: impl FnMut(*const c_char) -> Result<bool, c_int>) -> Result<(), c_int> {
    let mut buf = [0u64; 256];
    loop {
        // SAFETY: `buf` is writable for its size in bytes.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), size_of_val(&buf)) };
        let n = usize::try_from(ret(n)?).unwrap_or(0);
        if n == 0 {
            return Ok(());
        }
        // SAFETY: the kernel wrote `n` bytes of records into `buf`, which is at least that long.
        let bytes = unsafe { core::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
        let mut off = 0usize;
        while off < n {
            let reclen = bytes.get(off.saturating_add(16)..off.saturating_add(18)).map_or(0, |r| {
                usize::from(u16::from_ne_bytes([r.first().copied().unwrap_or(0), r.get(1).copied().unwrap_or(0)]))
            });
            let Some(name) = bytes.get(off.saturating_add(19)..off.saturating_add(reclen)) else {
                return Err(libc::EIO);
            };
            if reclen == 0 {
                return Err(libc::EIO);
            }
            let dot = name.first() == Some(&b'.')
                && (name.get(1) == Some(&0) || (name.get(1) == Some(&b'.') && name.get(2) == Some(&0)));
            if !dot && !f(name.as_ptr().cast())? {
                return Ok(());
            }
            off = off.saturating_add(reclen);
        }
    }
}

// ------------------------------------------------------------------------------------------------------------------
// Paths

/// A call's path mapped into a shadow tree: `UPPER/rel`, NUL-terminated.
pub(crate) struct Shadow {
    buf: [u8; BUF],
    len: usize,
    /// Where `rel` starts (the length of UPPER): `buf[rel]` is `/` or the NUL.
    rel: usize,
    /// Index of the table entry.
    entry: usize,
    /// A symlink in the shadow was followed: the caller's own path no longer names the file.
    followed: bool,
}

/// Where a path lies once mapped and symlinks in the shadow are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mapped {
    /// Not under a sandboxed directory (no symlink in a shadow was involved): the caller's path as is.
    No,
    /// Under a sandboxed directory: the shadow path.
    Inside,
    /// A symlink in a shadow led out of every sandboxed directory: the absolute path it led to.
    Outside,
}

/// Most symlinks in shadows followed for one path (the kernel's own limit).
const MAX_LINK_HOPS: usize = 40;

/// Where a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Not under a sandboxed directory: the original call.
    Original,
    /// The path in [`Shadow::ptr`]: the shadow path, or the path a symlink in the shadow led to.
    Shadow,
    /// Fail with this errno (nothing done).
    Fail(c_int),
}

impl Shadow {
    pub(crate) const fn new() -> Self {
        Shadow { buf: [0; BUF], len: 0, rel: 0, entry: 0, followed: false }
    }

    /// Maps `path` (relative to `dirfd`) like [`Shadow::map`], then follows the symlinks that exist in the shadow
    /// (made by a sandboxed `symlink`, or copied up) as the kernel would, but in the merged view: a link's text is
    /// resolved against the sandboxed directory, not the shadow, and the result mapped again. A directory
    /// component is always followed, the final one when `follow_final`. Symlinks of the real tree are left to the
    /// kernel.
    ///
    /// # Safety
    /// `path` is null or NUL-terminated.
    unsafe fn map_resolved(&mut self, dirfd: c_int, path: *const c_char, follow_final: bool) -> Result<Mapped, c_int> {
        self.followed = false;
        // SAFETY: forwarded.
        if !unsafe { self.map(dirfd, path) }? {
            return Ok(Mapped::No);
        }
        for _ in 0..MAX_LINK_HOPS {
            let Some((start, end)) = self.first_link(follow_final)? else { return Ok(Mapped::Inside) };
            let mut next = [0u8; BUF];
            let len = self.follow(start, end, &mut next)?;
            self.followed = true;
            // SAFETY: `follow` NUL-terminated `next`.
            if !unsafe { self.map(libc::AT_FDCWD, next.as_ptr().cast()) }? {
                let dst = self.buf.get_mut(..=len).ok_or(libc::ENAMETOOLONG)?;
                dst.copy_from_slice(next.get(..=len).ok_or(libc::ENAMETOOLONG)?);
                self.len = len;
                return Ok(Mapped::Outside);
            }
        }
        Err(libc::ELOOP)
    }

    /// The first component of the shadow path that is a symlink to follow, as (index of its leading `/`, its end),
    /// or `None` when the shadow has none (it ends, or holds a file or whiteout, first).
    fn first_link(&mut self, follow_final: bool) -> Result<Option<(usize, usize)>, c_int> {
        let mut prev = self.rel;
        while let Some(end) = next_end(&self.buf, prev, self.len) {
            let st = self.cut(end, |p, _| {
                // SAFETY: `cut` hands over a NUL-terminated path.
                unsafe { lstat(p) }
            });
            match st {
                Ok(st) if file_type(&st) == libc::S_IFDIR => prev = end,
                Ok(st) if file_type(&st) == libc::S_IFLNK && (end < self.len || follow_final) => {
                    return Ok(Some((prev, end)));
                }
                Ok(_) | Err(libc::ENOENT | libc::ENOTDIR) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Writes into `out` (NUL-terminated) the merged-view path that the shadow symlink ending at `end` leads to:
    /// its text (joined with the sandboxed directory's counterpart of the link's parent when relative) followed by
    /// the rest of the path. Returns the length.
    fn follow(&mut self, start: usize, end: usize, out: &mut [u8; BUF]) -> Result<usize, c_int> {
        let room = BUF.saturating_sub(1);
        let n = self.cut(end, |p, _| {
            // SAFETY: `cut` hands over a NUL-terminated path; `out` is writable for `room` bytes.
            ret(unsafe { libc::syscall(libc::SYS_readlinkat, libc::AT_FDCWD, p, out.as_mut_ptr(), room) })
        })?;
        let n = usize::try_from(n).unwrap_or(room);
        if n == 0 {
            return Err(libc::ENOENT);
        }
        let rest = self.buf.get(end..self.len).unwrap_or(&[]);
        let mut len = n;
        if out.first() != Some(&b'/') {
            let e = self.entry().ok_or(libc::EIO)?;
            let dir = e.dir.get(..e.dir_len).unwrap_or(&[]);
            let parent = self.buf.get(self.rel..start).unwrap_or(&[]);
            let prefix = dir.len().saturating_add(parent.len()).saturating_add(1);
            if prefix.saturating_add(n) >= room {
                return Err(libc::ENAMETOOLONG);
            }
            out.copy_within(..n, prefix);
            let (head, _) = out.split_at_mut(prefix);
            let (d, tail) = head.split_at_mut(dir.len());
            d.copy_from_slice(dir);
            let (p, slash) = tail.split_at_mut(parent.len());
            p.copy_from_slice(parent);
            if let Some(b) = slash.first_mut() {
                *b = b'/';
            }
            len = prefix.saturating_add(n);
        }
        let total = len.saturating_add(rest.len());
        if total >= room {
            return Err(libc::ENAMETOOLONG);
        }
        out.get_mut(len..total).ok_or(libc::ENAMETOOLONG)?.copy_from_slice(rest);
        *out.get_mut(total).ok_or(libc::ENAMETOOLONG)? = 0;
        Ok(total)
    }

    /// Turns the shadow path into its counterpart in the real directory (where the real tree shows through after
    /// a symlink in the shadow was followed).
    fn switch_to_real_view(&mut self) -> Result<(), c_int> {
        let e = self.entry().ok_or(libc::EIO)?;
        let rel_len = self.len.saturating_sub(self.rel);
        let total = e.dir_len.saturating_add(rel_len);
        if total >= BUF.saturating_sub(1) {
            return Err(libc::ENAMETOOLONG);
        }
        self.buf.copy_within(self.rel..self.len, e.dir_len);
        self.buf.get_mut(..e.dir_len).ok_or(libc::EIO)?.copy_from_slice(e.dir.get(..e.dir_len).ok_or(libc::EIO)?);
        *self.buf.get_mut(total).ok_or(libc::EIO)? = 0;
        self.len = total;
        self.rel = e.dir_len;
        Ok(())
    }

    /// The shadow path as a C string.
    pub(crate) fn ptr(&self) -> *const c_char {
        self.buf.as_ptr().cast()
    }

    fn entry(&self) -> Option<&'static Entry> {
        entries().get(self.entry)
    }

    /// Maps `path` (relative to `dirfd`): `Ok(true)` when it lies under a sandboxed directory.
    ///
    /// # Safety
    /// `path` is null or NUL-terminated.
    unsafe fn map(&mut self, dirfd: c_int, path: *const c_char) -> Result<bool, c_int> {
        let table = entries();
        if table.is_empty() || path.is_null() {
            return Ok(false);
        }
        // SAFETY: NUL-terminated (caller's contract); strnlen stops at BUF.
        let n = unsafe { libc::strnlen(path, BUF) };
        // SAFETY: the first `n` bytes were just read.
        let given = unsafe { core::slice::from_raw_parts(path.cast::<u8>(), n) };
        if given.is_empty() {
            return Ok(false);
        }
        let room = BUF.saturating_sub(1);
        let fill = absolute(dirfd, given, self.buf.get_mut(..room).unwrap_or(&mut []));
        if fill.unresolved {
            return Ok(false);
        }
        let len = normalize(self.buf.get_mut(..fill.len).unwrap_or(&mut []));
        let abs = self.buf.get(..len).unwrap_or(&[]);
        let Some((i, e)) = table.iter().enumerate().find(|(_, e)| {
            let dir = e.dir.get(..e.dir_len).unwrap_or(&[]);
            abs.starts_with(dir) && matches!(abs.get(e.dir_len), None | Some(b'/'))
        }) else {
            return Ok(false);
        };
        if fill.truncated {
            return Err(libc::ENAMETOOLONG);
        }
        let rel_len = len.saturating_sub(e.dir_len);
        let total = e.upper_len.saturating_add(rel_len);
        if total >= room {
            return Err(libc::ENAMETOOLONG);
        }
        self.buf.copy_within(e.dir_len..len, e.upper_len);
        if let (Some(d), Some(s)) = (self.buf.get_mut(..e.upper_len), e.upper.get(..e.upper_len)) {
            d.copy_from_slice(s);
        }
        if let Some(b) = self.buf.get_mut(total) {
            *b = 0;
        }
        self.len = total;
        self.rel = e.upper_len;
        self.entry = i;
        Ok(true)
    }

    /// True when a link source names a descriptor (`AT_EMPTY_PATH` with an empty path, or `/proc/self/fd/N` with
    /// `AT_SYMLINK_FOLLOW`) whose file lies in the shadow tree of table entry `entry`. Uses this buffer.
    ///
    /// # Safety
    /// `path` is null or NUL-terminated.
    unsafe fn descriptor_in_shadow(&mut self, dirfd: c_int, path: *const c_char, flags: c_int, entry: usize) -> bool {
        let Some(e) = entries().get(entry) else { return false };
        if path.is_null() {
            return false;
        }
        // SAFETY: NUL-terminated (caller's contract); strnlen stops at BUF.
        let n = unsafe { libc::strnlen(path, BUF) };
        // SAFETY: the first `n` bytes were just read.
        let given = unsafe { core::slice::from_raw_parts(path.cast::<u8>(), n) };
        let room = BUF.saturating_sub(1);
        let len = if given.is_empty() && flags & libc::AT_EMPTY_PATH != 0 {
            crate::paths::fd_target(dirfd, self.buf.get_mut(..room).unwrap_or(&mut []))
        } else if given.starts_with(b"/proc/self/fd/") && flags & libc::AT_SYMLINK_FOLLOW != 0 {
            // SAFETY: `path` is NUL-terminated; the buffer is writable for `room` bytes.
            let n = unsafe { libc::syscall(libc::SYS_readlinkat, libc::AT_FDCWD, path, self.buf.as_mut_ptr(), room) };
            usize::try_from(n).unwrap_or(0)
        } else {
            0
        };
        let upper = e.upper.get(..e.upper_len).unwrap_or(&[]);
        let target = self.buf.get(..len.min(room)).unwrap_or(&[]);
        len < room && target.starts_with(upper) && target.get(e.upper_len) == Some(&b'/')
    }

    /// Runs `f` with the path cut at `end` (a component boundary).
    fn cut<T>(&mut self, end: usize, f: impl FnOnce(*const c_char, *const c_char) -> T) -> T {
        let saved = self.buf.get(end).copied().unwrap_or(0);
        if let Some(b) = self.buf.get_mut(end) {
            *b = 0;
        }
        let real_rel = self.real_rel();
        let out = f(self.ptr(), real_rel);
        if let Some(b) = self.buf.get_mut(end) {
            *b = saved;
        }
        out
    }

    /// `rel` without its leading `/`, for `*at` calls on the real directory (`.` for the directory itself).
    fn real_rel(&self) -> *const c_char {
        if self.buf.get(self.rel) == Some(&b'/') {
            self.buf.as_ptr().wrapping_add(self.rel.saturating_add(1)).cast()
        } else {
            c".".as_ptr()
        }
    }

    /// The real directory, opened `O_PATH`.
    fn real_dir(&self) -> Result<OwnedFd, c_int> {
        let e = self.entry().ok_or(libc::EIO)?;
        // SAFETY: `dir` holds `dir_len` bytes followed by zeros (the table is zero-filled), so it is NUL-terminated.
        let fd = unsafe { sys_openat(libc::AT_FDCWD, e.dir.as_ptr().cast(), libc::O_PATH | libc::O_DIRECTORY, 0) }?;
        Ok(OwnedFd(fd))
    }

    /// Walks the shadow from UPPER down to the full path.
    fn walk(&mut self) -> Result<Walk, c_int> {
        let mut opaque = false;
        let mut prev = self.rel;
        while let Some(end) = next_end(&self.buf, prev, self.len) {
            let last = end == self.len;
            let st = self.cut(end, |p, _| {
                // SAFETY: `cut` hands over a NUL-terminated path.
                unsafe { lstat(p) }
            });
            match st {
                Ok(st) => {
                    let whiteout = self.cut(end, |p, _| {
                        // SAFETY: `cut` hands over a NUL-terminated path, the one `st` describes.
                        unsafe { is_whiteout(p, &st) }
                    });
                    if whiteout {
                        let state = if last { State::Whiteout } else { State::Hidden };
                        return Ok(Walk { state, at: prev, opaque, self_opaque: false });
                    }
                    if file_type(&st) != libc::S_IFDIR {
                        // The final entry, or a file where a directory is expected: the shadow answers.
                        return Ok(Walk { state: State::Exists(st), at: end, opaque, self_opaque: false });
                    }
                    let is_opaque = self.cut(end, |p, _| {
                        // SAFETY: `cut` hands over a NUL-terminated path.
                        unsafe { has_xattr(p, &OPAQUE_XATTRS, true) }
                    });
                    if last {
                        return Ok(Walk { state: State::Exists(st), at: end, opaque, self_opaque: is_opaque });
                    }
                    opaque |= is_opaque;
                }
                Err(libc::ENOENT) => return Ok(Walk { state: State::Missing, at: prev, opaque, self_opaque: false }),
                Err(e) => return Err(e),
            }
            prev = end;
        }
        // The path is UPPER itself.
        // SAFETY: the full path is NUL-terminated.
        let st = unsafe { lstat(self.ptr()) }?;
        Ok(Walk { state: State::Exists(st), at: self.len, opaque, self_opaque: false })
    }

    /// Makes the missing shadow directories from the component ending at `from` up to the parent of the final
    /// component, each with its real counterpart's mode and owner.
    fn copy_up_parents(&mut self, real: &OwnedFd, from: usize) -> Result<(), c_int> {
        let mut end = from;
        while end < self.len {
            self.cut(end, |shadow, rel| {
                // SAFETY: `cut` hands over NUL-terminated paths (the shadow prefix and its real-relative part).
                let st = unsafe { stat_at(real.0, rel, 0) }?;
                if file_type(&st) != libc::S_IFDIR {
                    return Err(libc::ENOTDIR);
                }
                // SAFETY: NUL-terminated.
                match unsafe { mkdir_at(libc::AT_FDCWD, shadow, st.st_mode & 0o7777) } {
                    Ok(_) => {
                        // SAFETY: NUL-terminated; mode again because the umask applied.
                        unsafe {
                            chown_path(shadow, st.st_uid, st.st_gid);
                            libc::syscall(libc::SYS_fchmodat, libc::AT_FDCWD, shadow, st.st_mode & 0o7777, 0 as c_int);
                        }
                        Ok(())
                    }
                    Err(libc::EEXIST) => Ok(()),
                    Err(e) => Err(e),
                }
            })?;
            match next_end(&self.buf, end, self.len) {
                Some(next) => end = next,
                None => break,
            }
        }
        Ok(())
    }

    /// Copies the real file (or directory: an empty one with its mode; or symlink: one with the same text) at the
    /// full path into the shadow.
    fn copy_up_final(&mut self, real: &OwnedFd, st: &libc::stat, with_data: bool) -> Result<(), c_int> {
        let rel = self.real_rel();
        match file_type(st) {
            libc::S_IFLNK => {
                let mut text = [0u8; BUF];
                // SAFETY: `text` is writable for BUF - 1 bytes, so the zeroed last byte stays a NUL terminator.
                let n = ret(unsafe {
                    libc::syscall(libc::SYS_readlinkat, real.0, rel, text.as_mut_ptr(), BUF.saturating_sub(1))
                })?;
                if usize::try_from(n).unwrap_or(BUF) >= BUF.saturating_sub(1) {
                    return Err(libc::ENAMETOOLONG);
                }
                // SAFETY: both NUL-terminated.
                match unsafe { symlink_at(text.as_ptr().cast(), self.ptr()) } {
                    Ok(_) | Err(libc::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                // SAFETY: NUL-terminated; ownership is best effort (it needs root), chown_path does not follow.
                unsafe { chown_path(self.ptr(), st.st_uid, st.st_gid) };
                Ok(())
            }
            libc::S_IFDIR => {
                // SAFETY: NUL-terminated.
                match unsafe { mkdir_at(libc::AT_FDCWD, self.ptr(), st.st_mode & 0o7777) } {
                    Ok(_) | Err(libc::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                // SAFETY: NUL-terminated.
                unsafe {
                    chown_path(self.ptr(), st.st_uid, st.st_gid);
                    libc::syscall(libc::SYS_fchmodat, libc::AT_FDCWD, self.ptr(), st.st_mode & 0o7777, 0 as c_int);
                }
                Ok(())
            }
            libc::S_IFREG => {
                // SAFETY: NUL-terminated.
                let src = OwnedFd(unsafe { sys_openat(real.0, rel, libc::O_RDONLY, 0) }?);
                self.copy_file(&src, st, with_data)
            }
            _ => Err(libc::EXDEV),
        }
    }

    /// Copies `src` (bytes unless `with_data` is false, then mode, owner and times) to the full path: into an
    /// unnamed `O_TMPFILE` in the parent, linked into place only once complete (a concurrent copy-up that linked
    /// first wins). Without `O_TMPFILE` support the file is written in place (`O_EXCL`).
    fn copy_file(&mut self, src: &OwnedFd, st: &libc::stat, with_data: bool) -> Result<(), c_int> {
        let len = self.len;
        let parent = self.buf.get(..len).and_then(|p| p.iter().rposition(|b| *b == b'/')).ok_or(libc::EINVAL)?;
        let tmp = self.cut(parent, |p, _| {
            // SAFETY: `cut` hands over a NUL-terminated path.
            unsafe { sys_openat(libc::AT_FDCWD, p, libc::O_TMPFILE | libc::O_WRONLY, 0o600) }
        });
        let (dst, linked) = match tmp {
            Ok(fd) => (OwnedFd(fd), false),
            Err(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL) => {
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
                // SAFETY: NUL-terminated.
                match unsafe { sys_openat(libc::AT_FDCWD, self.ptr(), flags, 0o600) } {
                    Ok(fd) => (OwnedFd(fd), true),
                    Err(libc::EEXIST) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        if with_data {
            copy_bytes(src.0, dst.0)?;
        }
        // SAFETY: plain syscalls on our descriptor; ownership is best effort (it needs root).
        unsafe {
            libc::syscall(libc::SYS_fchown, dst.0, st.st_uid, st.st_gid);
            ret(libc::syscall(libc::SYS_fchmod, dst.0, st.st_mode & 0o7777))?;
            if with_data {
                let times = [
                    libc::timespec { tv_sec: st.st_atime, tv_nsec: st.st_atime_nsec },
                    libc::timespec { tv_sec: st.st_mtime, tv_nsec: st.st_mtime_nsec },
                ];
                libc::syscall(libc::SYS_utimensat, dst.0, core::ptr::null::<c_char>(), times.as_ptr(), 0 as c_int);
            }
        }
        if linked {
            return Ok(());
        }
        let mut link = [0u8; 32];
        let prefix = b"/proc/self/fd/";
        link.get_mut(..prefix.len()).ok_or(libc::EINVAL)?.copy_from_slice(prefix);
        crate::paths::write_decimal(link.get_mut(prefix.len()..).ok_or(libc::EINVAL)?, dst.0.unsigned_abs())
            .ok_or(libc::EINVAL)?;
        // SAFETY: `link` is NUL-terminated (zeroed, digits leave a byte), the path too.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_linkat,
                libc::AT_FDCWD,
                link.as_ptr(),
                libc::AT_FDCWD,
                self.ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        match ret(rc) {
            Ok(_) | Err(libc::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Stat of the real counterpart of the full path (`None` when missing).
    fn real_stat(&self, real: &OwnedFd, follow: bool) -> Result<Option<libc::stat>, c_int> {
        let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
        // SAFETY: NUL-terminated.
        match unsafe { stat_at(real.0, self.real_rel(), flags) } {
            Ok(st) => Ok(Some(st)),
            Err(libc::ENOENT) | Err(libc::ENOTDIR) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The end of the component after index `from` (which is `rel` or a previous end), or `None` at the end.
fn next_end(buf: &[u8], from: usize, len: usize) -> Option<usize> {
    if from >= len {
        return None;
    }
    let start = from.saturating_add(1);
    let rest = buf.get(start..len)?;
    Some(rest.iter().position(|b| *b == b'/').map_or(len, |p| start.saturating_add(p)))
}

/// What the shadow says about a path.
#[derive(Clone, Copy)]
enum State {
    /// The full path exists in the shadow (not a whiteout).
    Exists(libc::stat),
    /// The final component is whited out.
    Whiteout,
    /// A parent is whited out: nothing exists here.
    Hidden,
    /// The shadow lacks the component after `at`; the real tree shows through unless `opaque`.
    Missing,
}

struct Walk {
    state: State,
    /// For `Missing`: the end of the last component that exists in the shadow (`rel` when none).
    at: usize,
    /// An opaque directory lies above the final component: the real tree there is hidden.
    opaque: bool,
    /// The final component is an opaque directory: its real counterpart's entries are hidden.
    self_opaque: bool,
}

/// Folds `.`, `..` and repeated `/` of an absolute path in place; returns the new length.
fn normalize(p: &mut [u8]) -> usize {
    let n = p.len();
    let mut out = 0usize; // bytes written; p[..out] is the folded prefix, always starting with '/'
    let mut i = 0usize;
    while i < n {
        while p.get(i) == Some(&b'/') {
            i = i.saturating_add(1);
        }
        if i >= n {
            break;
        }
        let start = i;
        while i < n && p.get(i) != Some(&b'/') {
            i = i.saturating_add(1);
        }
        let comp_len = i.saturating_sub(start);
        let is = |s: &[u8]| p.get(start..i) == Some(s);
        if is(b".") {
            continue;
        }
        if is(b"..") {
            // Back to the previous '/'.
            while out > 0 {
                out = out.saturating_sub(1);
                if p.get(out) == Some(&b'/') {
                    break;
                }
            }
            continue;
        }
        if let Some(b) = p.get_mut(out) {
            *b = b'/';
        }
        out = out.saturating_add(1);
        p.copy_within(start..i, out);
        out = out.saturating_add(comp_len);
    }
    if out == 0 {
        if let Some(b) = p.get_mut(0) {
            *b = b'/';
        }
        out = 1;
    }
    out
}

/// Copies all of `src` into `dst`: `copy_file_range`, else a read/write loop through a stack buffer.
fn copy_bytes(src: c_int, dst: c_int) -> Result<(), c_int> {
    loop {
        // SAFETY: null offsets use the descriptors' positions.
        let n = unsafe {
            libc::syscall(
                libc::SYS_copy_file_range,
                src,
                core::ptr::null_mut::<i64>(),
                dst,
                core::ptr::null_mut::<i64>(),
                1usize << 30,
                0 as c_uint,
            )
        };
        match ret(n) {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(libc::EINTR) => continue,
            Err(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP | libc::EPERM) => break,
            Err(e) => return Err(e),
        }
    }
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = match ret(unsafe { libc::syscall(libc::SYS_read, src, buf.as_mut_ptr(), buf.len()) }) {
            Ok(0) => return Ok(()),
            Ok(n) => usize::try_from(n).unwrap_or(0),
            Err(libc::EINTR) => continue,
            Err(e) => return Err(e),
        };
        let mut done = 0usize;
        while done < n {
            let chunk = buf.get(done..n).unwrap_or(&[]);
            // SAFETY: `chunk` is readable for its length.
            match ret(unsafe { libc::syscall(libc::SYS_write, dst, chunk.as_ptr(), chunk.len()) }) {
                Ok(w) => done = done.saturating_add(usize::try_from(w).unwrap_or(0).max(1)),
                Err(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------------------------
// Operations

/// How an open-like call uses its path.
#[derive(Clone, Copy)]
pub(crate) struct OpenIntent {
    write: bool,
    create: bool,
    truncate: bool,
    /// The call acts on a final symlink itself (lchown, `AT_SYMLINK_NOFOLLOW`), not on what it points to.
    nofollow: bool,
}

impl OpenIntent {
    /// From open(2) flags.
    pub(crate) fn from_flags(flags: c_int) -> Self {
        let acc = flags & libc::O_ACCMODE;
        let tmpfile = flags & libc::O_TMPFILE == libc::O_TMPFILE;
        OpenIntent {
            write: acc == libc::O_WRONLY
                || acc == libc::O_RDWR
                || flags & (libc::O_CREAT | libc::O_TRUNC) != 0
                || tmpfile,
            create: flags & libc::O_CREAT != 0 && !tmpfile,
            truncate: flags & libc::O_TRUNC != 0,
            // O_NOFOLLOW, and O_CREAT|O_EXCL (which fails on any existing name), do not follow a final symlink.
            nofollow: flags & libc::O_NOFOLLOW != 0
                || flags & (libc::O_CREAT | libc::O_EXCL) == (libc::O_CREAT | libc::O_EXCL),
        }
    }

    /// A change to an existing file's bytes or attributes (truncate, chmod, chown).
    pub(crate) const MODIFY: OpenIntent = OpenIntent { write: true, create: false, truncate: false, nofollow: false };

    /// A change to the attributes of the final component itself, a symlink included (lchown, `fchownat` with
    /// `AT_SYMLINK_NOFOLLOW`): a real symlink is copied up as a symlink.
    pub(crate) const MODIFY_LINK: OpenIntent = OpenIntent { nofollow: true, ..OpenIntent::MODIFY };

    /// A look at a path that changes nothing (stat, access, opendir), following a final symlink or not.
    pub(crate) const fn look(follow: bool) -> OpenIntent {
        OpenIntent { write: false, create: false, truncate: false, nofollow: !follow }
    }
}

/// Decides where an open-like call on `path` goes, copying up first when it writes.
///
/// # Safety
/// `path` is null or NUL-terminated.
pub(crate) unsafe fn route(sh: &mut Shadow, dirfd: c_int, path: *const c_char, intent: OpenIntent) -> Route {
    let _saved = SavedErrno::save();
    // SAFETY: forwarded.
    let routed = match unsafe { sh.map_resolved(dirfd, path, !intent.nofollow) } {
        Ok(Mapped::No) => return Route::Original,
        Ok(Mapped::Outside) => return Route::Shadow,
        Err(e) => return Route::Fail(e),
        Ok(Mapped::Inside) => {
            if intent.write {
                route_write(sh, intent)
            } else {
                route_read(sh)
            }
        }
    };
    match routed {
        // The caller's path went through a symlink in the shadow: the real file is the one it led to.
        Ok(Route::Original) if sh.followed => sh.switch_to_real_view().map_or_else(Route::Fail, |()| Route::Shadow),
        Ok(r) => r,
        Err(e) => Route::Fail(e),
    }
}

fn route_read(sh: &mut Shadow) -> Result<Route, c_int> {
    let walk = sh.walk()?;
    match walk.state {
        State::Whiteout | State::Hidden => Err(libc::ENOENT),
        State::Missing if walk.opaque => Ok(Route::Shadow),
        State::Missing => Ok(Route::Original),
        State::Exists(st) => {
            // A directory that also exists in the real tree is read there: listings show the real entries.
            if file_type(&st) == libc::S_IFDIR && !walk.opaque && !walk.self_opaque {
                let real = sh.real_dir()?;
                if sh.real_stat(&real, true)?.is_some_and(|r| file_type(&r) == libc::S_IFDIR) {
                    return Ok(Route::Original);
                }
            }
            Ok(Route::Shadow)
        }
    }
}

fn route_write(sh: &mut Shadow, intent: OpenIntent) -> Result<Route, c_int> {
    let walk = sh.walk()?;
    match walk.state {
        State::Hidden => Err(libc::ENOENT),
        State::Exists(_) => Ok(Route::Shadow),
        State::Whiteout if intent.create => {
            // SAFETY: NUL-terminated.
            unsafe { unlink_at(libc::AT_FDCWD, sh.ptr(), 0) }?;
            Ok(Route::Shadow)
        }
        State::Whiteout => Err(libc::ENOENT),
        // Below an opaque directory only the shadow counts; the call's own errors are right.
        State::Missing if walk.opaque => Ok(Route::Shadow),
        State::Missing => {
            let real = sh.real_dir()?;
            let real_st = sh.real_stat(&real, !intent.nofollow)?;
            if real_st.is_none() && !intent.create {
                return Err(libc::ENOENT);
            }
            let copyable = |t| matches!(t, libc::S_IFREG | libc::S_IFDIR) || (intent.nofollow && t == libc::S_IFLNK);
            if let Some(st) = &real_st
                && !copyable(file_type(st))
            {
                // A fifo, socket or device: writing it changes no file; the real one is used.
                return Ok(Route::Original);
            }
            let first_missing = next_end(&sh.buf, walk.at, sh.len).unwrap_or(sh.len);
            sh.copy_up_parents(&real, first_missing)?;
            if let Some(st) = real_st {
                sh.copy_up_final(&real, &st, !intent.truncate)?;
            }
            Ok(Route::Shadow)
        }
    }
}

/// Result of a call the sandbox performs itself: `None` when the path is not sandboxed (run the original).
pub(crate) type Done = Option<Result<(), c_int>>;

/// Turns a [`Done`] result into the C return value and errno; `None` stays `None`.
pub(crate) fn finish(done: Done, saved: c_int) -> Option<c_int> {
    done.map(|r| match r {
        Ok(()) => {
            set_errno(saved);
            0
        }
        Err(e) => {
            set_errno(e);
            -1
        }
    })
}

/// What kind of removal.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Remove {
    /// unlink: not a directory.
    File,
    /// rmdir: an empty directory.
    Dir,
    /// remove(3): either.
    Any,
}

/// unlink/unlinkat/rmdir/remove under a sandboxed directory.
///
/// # Safety
/// `path` is null or NUL-terminated.
pub(crate) unsafe fn remove(dirfd: c_int, path: *const c_char, kind: Remove) -> Option<c_int> {
    if !enabled() {
        return None;
    }
    let saved = errno();
    let mut sh = Shadow::new();
    // SAFETY: forwarded.
    let done = match unsafe { sh.map_resolved(dirfd, path, false) } {
        Ok(Mapped::No) => None,
        Err(e) => Some(Err(e)),
        Ok(Mapped::Outside) => Some(remove_outside(&sh, kind)),
        Ok(Mapped::Inside) => Some(remove_mapped(&mut sh, kind)),
    };
    finish(done, saved)
}

/// A remove whose path a symlink in the shadow led out of the sandboxed directories: done there.
fn remove_outside(sh: &Shadow, kind: Remove) -> Result<(), c_int> {
    let unlink = |flags: c_int| {
        // SAFETY: the path is NUL-terminated.
        unsafe { unlink_at(libc::AT_FDCWD, sh.ptr(), flags) }
    };
    let rc = match kind {
        Remove::File => unlink(0),
        Remove::Dir => unlink(libc::AT_REMOVEDIR),
        Remove::Any => match unlink(0) {
            Err(libc::EISDIR) => unlink(libc::AT_REMOVEDIR),
            other => other,
        },
    };
    rc.map(|_| ())
}

fn remove_mapped(sh: &mut Shadow, kind: Remove) -> Result<(), c_int> {
    if sh.len == sh.rel {
        return Err(libc::EBUSY);
    }
    let walk = sh.walk()?;
    let real = sh.real_dir()?;
    let real_st = if walk.opaque { None } else { sh.real_stat(&real, false)? };
    let check = |st: &libc::stat| -> Result<bool, c_int> {
        let dir = file_type(st) == libc::S_IFDIR;
        match (kind, dir) {
            (Remove::File, true) => Err(libc::EISDIR),
            (Remove::Dir, false) => Err(libc::ENOTDIR),
            _ => Ok(dir),
        }
    };
    match walk.state {
        State::Whiteout | State::Hidden => Err(libc::ENOENT),
        State::Missing if walk.opaque => Err(libc::ENOENT),
        State::Missing => {
            let st = real_st.ok_or(libc::ENOENT)?;
            if check(&st)? {
                // SAFETY: NUL-terminated.
                let fd = OwnedFd(unsafe { sys_openat(real.0, sh.real_rel(), libc::O_RDONLY | libc::O_DIRECTORY, 0) }?);
                each_entry(fd.0, |_| Err(libc::ENOTEMPTY))?;
            }
            let first_missing = next_end(&sh.buf, walk.at, sh.len).unwrap_or(sh.len);
            sh.copy_up_parents(&real, first_missing)?;
            // SAFETY: NUL-terminated.
            unsafe { make_whiteout(sh.ptr()) }
        }
        State::Exists(st) => {
            if check(&st)? {
                let with_real = !walk.self_opaque && real_st.is_some_and(|r| file_type(&r) == libc::S_IFDIR);
                empty_merged_dir(sh, &real, with_real)?;
                // SAFETY: NUL-terminated.
                unsafe { unlink_at(libc::AT_FDCWD, sh.ptr(), libc::AT_REMOVEDIR) }?;
            } else {
                // SAFETY: NUL-terminated.
                unsafe { unlink_at(libc::AT_FDCWD, sh.ptr(), 0) }?;
            }
            if real_st.is_some() {
                // SAFETY: NUL-terminated.
                unsafe { make_whiteout(sh.ptr()) }?;
            }
            Ok(())
        }
    }
}

/// For rmdir of a shadow directory: fails with ENOTEMPTY unless the merged view is empty (the shadow holds only
/// whiteouts, and each real entry is whited out), then removes the whiteouts so the directory can go.
fn empty_merged_dir(sh: &Shadow, real: &OwnedFd, with_real: bool) -> Result<(), c_int> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY;
    // SAFETY: NUL-terminated.
    let dir = OwnedFd(unsafe { sys_openat(libc::AT_FDCWD, sh.ptr(), flags, 0) }?);
    let only_whiteouts = |name| {
        // SAFETY: `each_entry` hands over NUL-terminated entry names; `dir` is the shadow directory.
        if unsafe { whiteout_at(dir.0, name) } { Ok(true) } else { Err(libc::ENOTEMPTY) }
    };
    each_entry(dir.0, only_whiteouts)?;
    if with_real {
        // SAFETY: NUL-terminated.
        let rdir = OwnedFd(unsafe { sys_openat(real.0, sh.real_rel(), flags, 0) }?);
        // Every real entry must be whited out in the shadow directory.
        each_entry(rdir.0, only_whiteouts)?;
    }
    for _ in 0..64 {
        // SAFETY: rewinds our own directory descriptor (the checks above read it to the end).
        unsafe { libc::syscall(libc::SYS_lseek, dir.0, 0 as libc::off_t, libc::SEEK_SET) };
        let mut removed = false;
        each_entry(dir.0, |name| {
            // SAFETY: an entry name of `dir`.
            unsafe { unlink_at(dir.0, name, 0) }?;
            removed = true;
            Ok(true)
        })?;
        if !removed {
            return Ok(());
        }
    }
    Err(libc::ENOTEMPTY)
}

/// True when `name` in `dirfd` is a whiteout.
///
/// # Safety
/// `name` is NUL-terminated.
unsafe fn whiteout_at(dirfd: c_int, name: *const c_char) -> bool {
    // SAFETY: forwarded.
    let Ok(st) = (unsafe { stat_at(dirfd, name, libc::AT_SYMLINK_NOFOLLOW) }) else { return false };
    match file_type(&st) {
        libc::S_IFCHR => st.st_rdev == 0,
        libc::S_IFREG if st.st_size == 0 => {
            let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK;
            // SAFETY: NUL-terminated.
            let Ok(fd) = (unsafe { sys_openat(dirfd, name, flags, 0) }) else { return false };
            let fd = OwnedFd(fd);
            WHITEOUT_XATTRS.iter().any(|x| {
                let mut v = [0u8; 4];
                // SAFETY: `v` is writable for its length.
                unsafe { libc::syscall(libc::SYS_fgetxattr, fd.0, x.as_ptr(), v.as_mut_ptr(), v.len()) >= 0 }
            })
        }
        _ => false,
    }
}

/// mkdir/mkdirat under a sandboxed directory.
///
/// # Safety
/// `path` is null or NUL-terminated.
pub(crate) unsafe fn mkdir(dirfd: c_int, path: *const c_char, mode: libc::mode_t) -> Option<c_int> {
    if !enabled() {
        return None;
    }
    let saved = errno();
    let mut sh = Shadow::new();
    // SAFETY: forwarded.
    let done = match unsafe { sh.map_resolved(dirfd, path, false) } {
        Ok(Mapped::No) => None,
        Err(e) => Some(Err(e)),
        Ok(Mapped::Outside) => Some(
            // SAFETY: NUL-terminated.
            unsafe { mkdir_at(libc::AT_FDCWD, sh.ptr(), mode) }.map(|_| ()),
        ),
        Ok(Mapped::Inside) => Some(mkdir_mapped(&mut sh, mode)),
    };
    finish(done, saved)
}

fn mkdir_mapped(sh: &mut Shadow, mode: libc::mode_t) -> Result<(), c_int> {
    let over_whiteout = prepare_new(sh)?;
    // SAFETY: NUL-terminated.
    unsafe { mkdir_at(libc::AT_FDCWD, sh.ptr(), mode) }?;
    if over_whiteout {
        // The real directory of that name must stay hidden: an opaque directory, as overlayfs makes it.
        // SAFETY: NUL-terminated.
        unsafe { set_xattr(sh.ptr(), &OPAQUE_XATTRS, b"y") }?;
    }
    Ok(())
}

/// Readies the shadow for a new entry at the full path (mkdir, symlink, link): fails with `EEXIST` when the
/// merged view already has one, `ENOENT` under a deleted directory; removes a whiteout there (returns true then),
/// and makes the missing parent directories.
fn prepare_new(sh: &mut Shadow) -> Result<bool, c_int> {
    let walk = sh.walk()?;
    match walk.state {
        State::Hidden => Err(libc::ENOENT),
        State::Exists(_) => Err(libc::EEXIST),
        State::Missing if walk.opaque => Ok(false),
        State::Whiteout => {
            // SAFETY: NUL-terminated.
            unsafe { unlink_at(libc::AT_FDCWD, sh.ptr(), 0) }?;
            Ok(true)
        }
        State::Missing => {
            let real = sh.real_dir()?;
            if sh.real_stat(&real, false)?.is_some() {
                return Err(libc::EEXIST);
            }
            let first_missing = next_end(&sh.buf, walk.at, sh.len).unwrap_or(sh.len);
            sh.copy_up_parents(&real, first_missing)?;
            Ok(false)
        }
    }
}

/// symlink/symlinkat whose new link is under a sandboxed directory: the link is made in the shadow, its text
/// unchanged (a relative text resolves the same there, as the shadow mirrors the directory's layout).
///
/// # Safety
/// `text` and `path` are null or NUL-terminated.
pub(crate) unsafe fn symlink(text: *const c_char, dirfd: c_int, path: *const c_char) -> Option<c_int> {
    if !enabled() || text.is_null() {
        return None;
    }
    let saved = errno();
    let mut sh = Shadow::new();
    // SAFETY: forwarded.
    let done = match unsafe { sh.map_resolved(dirfd, path, false) } {
        Ok(Mapped::No) => None,
        Err(e) => Some(Err(e)),
        Ok(Mapped::Outside) => Some(
            // SAFETY: both NUL-terminated.
            unsafe { symlink_at(text, sh.ptr()) }.map(|_| ()),
        ),
        Ok(Mapped::Inside) => Some(prepare_new(&mut sh).and_then(|_| {
            // SAFETY: both NUL-terminated.
            unsafe { symlink_at(text, sh.ptr()) }.map(|_| ())
        })),
    };
    finish(done, saved)
}

/// link/linkat with at least one path under a sandboxed directory: both in the same one links in the shadow (the
/// source copied up first); one side outside, or two different sandboxed directories, fail with `EXDEV` (as
/// between file systems). A source given as a descriptor (`AT_EMPTY_PATH`, or `/proc/self/fd/N` with
/// `AT_SYMLINK_FOLLOW`: how an `O_TMPFILE` file gets its name) is linked when its file lies in the same shadow.
///
/// # Safety
/// Both paths are null or NUL-terminated.
pub(crate) unsafe fn link(
    olddirfd: c_int,
    old: *const c_char,
    newdirfd: c_int,
    new: *const c_char,
    flags: c_int,
) -> Option<c_int> {
    if !enabled() {
        return None;
    }
    let saved = errno();
    let mut src = Shadow::new();
    let mut dst = Shadow::new();
    let follow = flags & libc::AT_SYMLINK_FOLLOW != 0;
    // SAFETY: forwarded.
    let (a, b) = unsafe { (src.map_resolved(olddirfd, old, follow), dst.map_resolved(newdirfd, new, false)) };
    let done = match (a, b) {
        (Ok(Mapped::No), Ok(Mapped::No)) => None,
        (Err(e), _) | (_, Err(e)) => Some(Err(e)),
        (Ok(Mapped::Inside), Ok(Mapped::Inside)) if src.entry == dst.entry => {
            Some(link_mapped(&mut src, &mut dst, follow))
        }
        // SAFETY: forwarded.
        (Ok(Mapped::No), Ok(Mapped::Inside))
            if unsafe { src.descriptor_in_shadow(olddirfd, old, flags, dst.entry) } =>
        {
            Some(prepare_new(&mut dst).and_then(|_| {
                // SAFETY: the caller's source (a descriptor's name) and the NUL-terminated shadow path.
                unsafe { link_at(olddirfd, old, dst.ptr(), flags) }.map(|_| ())
            }))
        }
        _ => Some(Err(libc::EXDEV)),
    };
    finish(done, saved)
}

fn link_mapped(src: &mut Shadow, dst: &mut Shadow, follow: bool) -> Result<(), c_int> {
    let real = src.real_dir()?;
    let sw = src.walk()?;
    let check = |st: &libc::stat| match file_type(st) {
        libc::S_IFDIR => Err(libc::EPERM),
        // Following a symlink could lead out of the shadow: as between file systems.
        libc::S_IFLNK if follow => Err(libc::EXDEV),
        _ => Ok(()),
    };
    match sw.state {
        State::Whiteout | State::Hidden => return Err(libc::ENOENT),
        State::Missing if sw.opaque => return Err(libc::ENOENT),
        State::Missing => {
            let st = src.real_stat(&real, false)?.ok_or(libc::ENOENT)?;
            check(&st)?;
            if !matches!(file_type(&st), libc::S_IFREG | libc::S_IFLNK) {
                // A fifo, socket or device cannot be copied up.
                return Err(libc::EXDEV);
            }
            let first_missing = next_end(&src.buf, sw.at, src.len).unwrap_or(src.len);
            src.copy_up_parents(&real, first_missing)?;
            src.copy_up_final(&real, &st, true)?;
        }
        State::Exists(st) => check(&st)?,
    }
    prepare_new(dst)?;
    // SAFETY: both NUL-terminated.
    unsafe { link_at(libc::AT_FDCWD, src.ptr(), dst.ptr(), 0) }.map(|_| ())
}

/// rename/renameat/renameat2 with at least one path under a sandboxed directory.
///
/// # Safety
/// Both paths are null or NUL-terminated.
pub(crate) unsafe fn rename(
    olddirfd: c_int,
    old: *const c_char,
    newdirfd: c_int,
    new: *const c_char,
    flags: c_uint,
) -> Option<c_int> {
    if !enabled() {
        return None;
    }
    let saved = errno();
    let mut src = Shadow::new();
    let mut dst = Shadow::new();
    // SAFETY: forwarded.
    let (a, b) = unsafe { (src.map_resolved(olddirfd, old, false), dst.map_resolved(newdirfd, new, false)) };
    let done = match (a, b) {
        (Ok(Mapped::No), Ok(Mapped::No)) => None,
        (Err(e), _) | (_, Err(e)) => Some(Err(e)),
        (Ok(Mapped::Inside), Ok(Mapped::Inside)) if src.entry == dst.entry => {
            Some(rename_mapped(&mut src, &mut dst, flags))
        }
        // One side outside, or two different sandboxed directories: as between file systems.
        _ => Some(Err(libc::EXDEV)),
    };
    finish(done, saved)
}

fn rename_mapped(src: &mut Shadow, dst: &mut Shadow, flags: c_uint) -> Result<(), c_int> {
    if flags & !libc::RENAME_NOREPLACE != 0 || src.len == src.rel || dst.len == dst.rel {
        return Err(libc::EXDEV);
    }
    let real = src.real_dir()?;
    let sw = src.walk()?;
    let src_real = if sw.opaque { None } else { src.real_stat(&real, false)? };
    match sw.state {
        State::Whiteout | State::Hidden => return Err(libc::ENOENT),
        State::Missing if sw.opaque => return Err(libc::ENOENT),
        State::Missing => {
            let st = src_real.ok_or(libc::ENOENT)?;
            if file_type(&st) != libc::S_IFREG {
                // A real directory (or symlink, special file) would have to be copied whole: EXDEV, so the caller
                // copies and deletes instead, as with overlayfs without redirect_dir.
                return Err(libc::EXDEV);
            }
            let first_missing = next_end(&src.buf, sw.at, src.len).unwrap_or(src.len);
            src.copy_up_parents(&real, first_missing)?;
            src.copy_up_final(&real, &st, true)?;
        }
        State::Exists(st) => {
            if file_type(&st) == libc::S_IFDIR && src_real.is_some() {
                return Err(libc::EXDEV);
            }
        }
    }
    let dw = dst.walk()?;
    let dst_real = if dw.opaque { None } else { dst.real_stat(&real, false)? };
    let noreplace = flags & libc::RENAME_NOREPLACE != 0;
    match dw.state {
        State::Hidden => return Err(libc::ENOENT),
        State::Exists(st) => {
            if noreplace {
                return Err(libc::EEXIST);
            }
            if file_type(&st) == libc::S_IFDIR && dst_real.is_some() {
                return Err(libc::EXDEV);
            }
        }
        State::Whiteout => {
            // SAFETY: NUL-terminated.
            unsafe { unlink_at(libc::AT_FDCWD, dst.ptr(), 0) }?;
        }
        State::Missing if dw.opaque => {}
        State::Missing => {
            if let Some(st) = dst_real {
                if noreplace {
                    return Err(libc::EEXIST);
                }
                if file_type(&st) == libc::S_IFDIR {
                    return Err(libc::EXDEV);
                }
            }
            let first_missing = next_end(&dst.buf, dw.at, dst.len).unwrap_or(dst.len);
            dst.copy_up_parents(&real, first_missing)?;
        }
    }
    // SAFETY: both NUL-terminated.
    unsafe { rename_at(src.ptr(), dst.ptr(), flags & libc::RENAME_NOREPLACE) }?;
    let replaced_whiteout = matches!(dw.state, State::Whiteout);
    if replaced_whiteout && dst_real.is_some_and(|st| file_type(&st) == libc::S_IFDIR) {
        // A directory moved over a deleted real directory must hide what the real one held.
        // SAFETY: NUL-terminated.
        let _ = unsafe { set_xattr(dst.ptr(), &OPAQUE_XATTRS, b"y") };
    }
    if src_real.is_some() {
        // SAFETY: NUL-terminated.
        unsafe { make_whiteout(src.ptr()) }?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        let mut v = s.as_bytes().to_vec();
        let n = normalize(&mut v);
        String::from_utf8(v[..n].to_vec()).unwrap()
    }

    #[test]
    fn paths_fold_lexically() {
        assert_eq!(norm("/a/b/../c"), "/a/c");
        assert_eq!(norm("/a//b/./c/"), "/a/b/c");
        assert_eq!(norm("/../.."), "/");
        assert_eq!(norm("/"), "/");
        assert_eq!(norm("/a/b/.."), "/a");
        assert_eq!(norm("/a/..b"), "/a/..b");
    }

    #[test]
    fn spec_lines_are_parsed_and_bad_ones_skipped() {
        let mut t = [EMPTY; MAX_DIRS];
        let n = parse(b"/tmp/d/\t/s/-tmp-d/upper\nrel\t/x\n/\t/y\n/e\t/s/e/upper\nno-tab", &mut t);
        assert_eq!(n, 2);
        assert_eq!(&t[0].dir[..t[0].dir_len], b"/tmp/d");
        assert_eq!(&t[0].upper[..t[0].upper_len], b"/s/-tmp-d/upper");
        assert_eq!(&t[1].dir[..t[1].dir_len], b"/e");
        let many = "/a\t/b\n".repeat(MAX_DIRS + 3);
        assert_eq!(parse(many.as_bytes(), &mut t), MAX_DIRS);
    }

    #[test]
    fn component_ends_are_found() {
        let buf = b"/u/a/bc/d";
        assert_eq!(next_end(buf, 2, buf.len()), Some(4));
        assert_eq!(next_end(buf, 4, buf.len()), Some(7));
        assert_eq!(next_end(buf, 7, buf.len()), Some(9));
        assert_eq!(next_end(buf, 9, buf.len()), None);
    }
}
