//! The file check shared by every hooked file function: describe the call, then either ask for a verdict before
//! it or report it after it, on the process's session (see `session`).
//!
//! Order of work in [`run`], cheapest exit first:
//! 1. not initialized yet, bypassed, or already inside the hook on this thread: the real function, nothing else;
//! 2. no session (no agent, the agent wants no file calls, or another thread is connecting): the real function;
//! 3. verdict mode: build the request (path made absolute on the stack), ask, and on deny return the failure
//!    value with errno `EACCES` (or the agent's errno) without calling the real function;
//! 4. report mode: call the real function, keep its errno, build the report with the result, send it one-way,
//!    restore the errno.
//!
//! The reentry guard stays held across the real call, so one libc call is one event even if the libc calls
//! another hooked function underneath (glibc does not: its internal calls bypass the PLT).
//!
//! For `O_CREAT` opens without `O_EXCL` the hook checks first (`faccessat(F_OK)`) whether the file exists, so the
//! agent can tell `create` from `write`/`open`; that check and the call are not atomic (another process may create
//! the file in between), which at worst turns a `create` into a `write`.
//!
//! Stack use is about 8.3 KiB: one message buffer holding both paths at their full length.

use core::cell::Cell;
use core::ffi::{c_char, c_int};

use ringwatch_hook_protocol::{
    Config, FILE_FLAG_CREATES, FILE_FLAG_EXCLUSIVE, FILE_FLAG_EXISTED, FILE_FLAG_TMPFILE, FILE_FLAG_TRUNCATES,
    FILE_FLAG_WRITES, FILE_MAX_LEN, FileEncoder, FileFixed, FileOp, MAX_PATH, PathFill,
};

use crate::guard::{self, Reentry};
use crate::paths::{absolute, beside, fd_target};
use crate::report::{Outcome, SavedErrno, errno, next_seq, set_errno};
use crate::session::{self, Session};

/// One hooked file call's arguments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileCall {
    pub(crate) op: FileOp,
    /// Base of a relative `path`: a directory descriptor or `AT_FDCWD`.
    pub(crate) dirfd: c_int,
    /// The path as given (for the link family: the name created); null for fchmod/fchown, whose file is `fd`.
    pub(crate) path: *const c_char,
    /// fchmod's or fchown's descriptor, -1 otherwise.
    pub(crate) fd: c_int,
    /// Base of a relative `new_path` (rename family, hard links).
    pub(crate) new_dirfd: c_int,
    /// The rename target, the file a hard link names, or a symlink's text, as given; null for other calls.
    pub(crate) new_path: *const c_char,
    /// The call's own flags (open flags, `AT_*`, `RENAME_*`).
    pub(crate) call_flags: u32,
    /// Creation or new mode.
    pub(crate) mode: u32,
    /// `FILE_FLAG_*` known from the arguments.
    pub(crate) flags: u16,
}

impl FileCall {
    /// A call on `path` relative to `dirfd`.
    pub(crate) fn at(op: FileOp, dirfd: c_int, path: *const c_char) -> Self {
        FileCall {
            op,
            dirfd,
            path,
            fd: -1,
            new_dirfd: libc::AT_FDCWD,
            new_path: core::ptr::null(),
            call_flags: 0,
            mode: 0,
            flags: 0,
        }
    }

    /// A call on `path` relative to the working directory.
    pub(crate) fn path(op: FileOp, path: *const c_char) -> Self {
        Self::at(op, libc::AT_FDCWD, path)
    }

    /// An open-family call with open(2) `oflags`; `mode` only counts when the flags create.
    pub(crate) fn open(op: FileOp, dirfd: c_int, path: *const c_char, oflags: c_int, mode: u32) -> Self {
        let flags = open_semantics(oflags);
        let creates = flags & (FILE_FLAG_CREATES | FILE_FLAG_TMPFILE) != 0;
        FileCall { call_flags: oflags as u32, mode: if creates { mode } else { 0 }, flags, ..Self::at(op, dirfd, path) }
    }

    /// Sets the call's own flags.
    pub(crate) fn with_call_flags(mut self, flags: c_int) -> Self {
        self.call_flags = flags as u32;
        self
    }

    /// Sets the mode.
    pub(crate) fn with_mode(mut self, mode: libc::mode_t) -> Self {
        self.mode = mode;
        self
    }

    /// Adds `FILE_FLAG_*` bits.
    pub(crate) fn with_flags(mut self, flags: u16) -> Self {
        self.flags |= flags;
        self
    }

    /// Sets the second path: the rename target, or what a link refers to (for a symlink `dirfd` is unused: its
    /// text is relative to the link's own directory).
    pub(crate) fn with_new_path(mut self, dirfd: c_int, path: *const c_char) -> Self {
        self.new_dirfd = dirfd;
        self.new_path = path;
        self
    }
}

/// What open(2) flags say in protocol terms.
pub(crate) fn open_semantics(oflags: c_int) -> u16 {
    let mut f = 0;
    if oflags & libc::O_TMPFILE == libc::O_TMPFILE {
        f |= FILE_FLAG_TMPFILE;
    } else if oflags & libc::O_CREAT != 0 {
        f |= FILE_FLAG_CREATES;
        if oflags & libc::O_EXCL != 0 {
            f |= FILE_FLAG_EXCLUSIVE;
        }
    }
    if oflags & libc::O_TRUNC != 0 {
        f |= FILE_FLAG_TRUNCATES;
    }
    let access = oflags & libc::O_ACCMODE;
    if access == libc::O_WRONLY || access == libc::O_RDWR {
        f |= FILE_FLAG_WRITES;
    }
    f
}

/// The open(2) flags fopen derives from its mode string, as glibc parses it: `r`, `w` or `a` first, then up to six
/// modifiers (`+`, `x`, `e`; `m`, `c` and others ignored) until the end or a `,`. `None` for a mode fopen refuses.
///
/// # Safety
///
/// `mode` is null or a NUL-terminated string.
pub(crate) unsafe fn fopen_flags(mode: *const c_char) -> Option<c_int> {
    if mode.is_null() {
        return None;
    }
    // SAFETY: `mode` is NUL-terminated (caller's contract); strnlen reads at most 8 bytes and stops at the NUL.
    let len = unsafe { libc::strnlen(mode, 8) };
    // SAFETY: the first `len` bytes were just read by strnlen.
    let bytes = unsafe { core::slice::from_raw_parts(mode.cast::<u8>(), len) };
    let (first, rest) = bytes.split_first()?;
    let mut flags = match first {
        b'r' => libc::O_RDONLY,
        b'w' => libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        b'a' => libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
        _ => return None,
    };
    for c in rest.iter().take(6) {
        match c {
            b'+' => flags = (flags & !libc::O_ACCMODE) | libc::O_RDWR,
            b'x' => flags |= libc::O_EXCL,
            b'e' => flags |= libc::O_CLOEXEC,
            b',' => break,
            _ => {}
        }
    }
    Some(flags)
}

/// What a hooked function returns, so [`run`] can tell failure and make a denial.
pub(crate) trait CallResult: Copy {
    /// True when the call failed (errno says why).
    fn failed(self) -> bool;
    /// The value returned when the call is denied.
    fn denied() -> Self;
}

impl CallResult for c_int {
    fn failed(self) -> bool {
        self < 0
    }
    fn denied() -> Self {
        -1
    }
}

impl CallResult for libc::ssize_t {
    fn failed(self) -> bool {
        self < 0
    }
    fn denied() -> Self {
        -1
    }
}

impl CallResult for *mut libc::DIR {
    fn failed(self) -> bool {
        self.is_null()
    }
    fn denied() -> Self {
        core::ptr::null_mut()
    }
}

impl CallResult for *mut libc::FILE {
    fn failed(self) -> bool {
        self.is_null()
    }
    fn denied() -> Self {
        core::ptr::null_mut()
    }
}

/// Checks or reports `call` around `real`, the real libc function applied to the caller's arguments.
///
/// # Safety
///
/// `call.path` and `call.new_path` are null or NUL-terminated strings (the hooked function's own contract).
pub(crate) unsafe fn run<R: CallResult>(call: &FileCall, real: impl FnOnce() -> R) -> R {
    if !guard::active() {
        return real();
    }
    let Some(_inside) = Reentry::enter() else { return real() };
    let saved = SavedErrno::save();
    // SAFETY: a plain syscall wrapper.
    let pid = unsafe { libc::getpid() }.unsigned_abs();
    let Some(session) = session::current(pid, Config::wants_file) else {
        drop(saved);
        return real();
    };
    // SAFETY: forwarded caller contract.
    let Some(strings) = (unsafe { CallStrings::of(call) }) else {
        drop(saved);
        return real();
    };
    let mut flags = call.flags;
    // SAFETY: forwarded caller contract.
    if flags & FILE_FLAG_CREATES != 0 && flags & FILE_FLAG_EXCLUSIVE == 0 && unsafe { exists(call) } {
        flags |= FILE_FLAG_EXISTED;
    }
    let mut buf = [0u8; FILE_MAX_LEN];
    let fixed = FileFixed {
        op: call.op,
        flags,
        pid,
        tid: tid(pid),
        // SAFETY: plain syscall wrappers.
        uid: unsafe { libc::getuid() },
        // SAFETY: as above.
        euid: unsafe { libc::geteuid() },
        call_flags: call.call_flags,
        mode: call.mode,
        dropped: 0,
    };
    if session.verdicts() {
        let seq = next_seq();
        let outcome = match encode(call, &strings, FileEncoder::request(&mut buf, seq, fixed).ok()) {
            Some(len) => buf.get(..len).map_or(Outcome::Allow, |msg| session::ask(&session, msg, seq)),
            None => Outcome::Allow,
        };
        drop(saved);
        if let Outcome::Deny(e) = outcome {
            set_errno(e);
            return R::denied();
        }
        return real();
    }
    drop(saved);
    let ret = real();
    let err = errno();
    let result = if ret.failed() { err } else { 0 };
    report_after(&session, call, &strings, FileFixed { dropped: session::take_dropped(), ..fixed }, result, &mut buf);
    set_errno(err);
    ret
}

/// Builds and sends the report; a report that cannot be sent is counted for the next one.
fn report_after(
    session: &Session,
    call: &FileCall,
    strings: &CallStrings<'_>,
    fixed: FileFixed,
    result: c_int,
    buf: &mut [u8],
) {
    let dropped = fixed.dropped;
    let len = encode(call, strings, FileEncoder::report(buf, 0, fixed, result).ok());
    let sent = match len {
        Some(len) => buf.get(..len).is_some_and(|msg| session::report(session, msg)),
        None => false,
    };
    if !sent {
        session::undo_take_dropped(dropped);
    }
}

/// The caller's strings, measured once.
struct CallStrings<'a> {
    path: &'a [u8],
    new_path: &'a [u8],
}

impl<'a> CallStrings<'a> {
    /// `None` when there is nothing to report: a null or empty path (the call fails on its own) and no fd, or a
    /// two-path call without its second path (except `linkat` with `AT_EMPTY_PATH`, which links the descriptor).
    ///
    /// # Safety
    ///
    /// As for [`run`].
    unsafe fn of(call: &FileCall) -> Option<Self> {
        // SAFETY: forwarded caller contract.
        let path = unsafe { bounded(call.path) };
        // SAFETY: forwarded caller contract.
        let new_path = unsafe { bounded(call.new_path) };
        if call.path.is_null() {
            return (call.fd >= 0).then_some(CallStrings { path, new_path });
        }
        let links_a_descriptor = call.op == FileOp::Linkat && call.call_flags & (libc::AT_EMPTY_PATH as u32) != 0;
        if path.is_empty() || (call.op.has_new_path() && new_path.is_empty() && !links_a_descriptor) {
            return None;
        }
        Some(CallStrings { path, new_path })
    }
}

/// The bytes of a C string, at most one past [`MAX_PATH`] (a longer one is cut and flagged by the encoder).
///
/// # Safety
///
/// `s` is null or NUL-terminated and stays valid for `'a`.
unsafe fn bounded<'a>(s: *const c_char) -> &'a [u8] {
    if s.is_null() {
        return &[];
    }
    // SAFETY: `s` is NUL-terminated; strnlen reads at most MAX_PATH + 1 bytes and stops at the NUL.
    let n = unsafe { libc::strnlen(s, MAX_PATH.saturating_add(1)) };
    // SAFETY: the first `n` bytes were just read by strnlen.
    unsafe { core::slice::from_raw_parts(s.cast::<u8>(), n) }
}

/// Writes the paths and finishes; the message length, or `None` when there is no usable path.
fn encode(call: &FileCall, strings: &CallStrings<'_>, enc: Option<FileEncoder<'_>>) -> Option<usize> {
    let mut enc = enc?;
    if call.path.is_null() {
        let mut ok = false;
        enc.path_with(|dst| {
            let len = fd_target(call.fd, dst);
            // Only a file with a path (not a socket, pipe or anonymous inode) is reported.
            ok = len > 0 && dst.first() == Some(&b'/');
            PathFill { len: if ok { len } else { 0 }, ..PathFill::default() }
        });
        if !ok {
            return None;
        }
    } else {
        enc.path_with(|dst| absolute(call.dirfd, strings.path, dst));
    }
    if call.op.has_new_path() {
        let mut written = 0;
        enc.new_path_with(|dst| {
            let fill = if matches!(call.op, FileOp::Symlink | FileOp::Symlinkat) {
                beside(call.dirfd, strings.path, strings.new_path, dst)
            } else {
                absolute(call.new_dirfd, strings.new_path, dst)
            };
            written = fill.len;
            fill
        });
        // A descriptor whose path cannot be read (linkat with AT_EMPTY_PATH): nothing valid to send.
        if written == 0 {
            return None;
        }
    }
    enc.finish().ok()
}

/// True when `call.path` exists right now (following a final symlink, as open does).
///
/// # Safety
///
/// As for [`run`].
unsafe fn exists(call: &FileCall) -> bool {
    // SAFETY: `path` is NUL-terminated (caller's contract); faccessat only reads it.
    !call.path.is_null() && unsafe { libc::faccessat(call.dirfd, call.path, libc::F_OK, 0) } == 0
}

thread_local! {
    /// (pid, tid) of this thread, so the tid costs one syscall per thread; the pid check catches a fork child,
    /// whose thread has a new tid but a copy of this cell.
    static TID: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
}

/// The calling thread's id (one syscall per thread, cached).
pub(crate) fn tid(pid: u32) -> u32 {
    let fresh = || {
        // SAFETY: a plain syscall wrapper.
        unsafe { libc::gettid() }.unsigned_abs()
    };
    TID.try_with(|cell| {
        let (p, t) = cell.get();
        if p == pid && t != 0 {
            t
        } else {
            let t = fresh();
            cell.set((pid, t));
            t
        }
    })
    .unwrap_or_else(|_| fresh())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_flags_map_to_protocol_semantics() {
        assert_eq!(open_semantics(libc::O_RDONLY), 0);
        assert_eq!(
            open_semantics(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC),
            FILE_FLAG_WRITES | FILE_FLAG_CREATES | FILE_FLAG_TRUNCATES
        );
        assert_eq!(
            open_semantics(libc::O_RDWR | libc::O_CREAT | libc::O_EXCL),
            FILE_FLAG_WRITES | FILE_FLAG_CREATES | FILE_FLAG_EXCLUSIVE
        );
        assert_eq!(open_semantics(libc::O_RDWR | libc::O_TMPFILE), FILE_FLAG_WRITES | FILE_FLAG_TMPFILE);
        assert_eq!(open_semantics(libc::O_RDONLY | libc::O_DIRECTORY), 0, "O_DIRECTORY alone is not O_TMPFILE");
        assert_eq!(open_semantics(libc::O_EXCL), 0, "O_EXCL without O_CREAT means nothing here");
    }

    #[test]
    fn fopen_modes_parse_like_glibc() {
        // SAFETY: static NUL-terminated strings.
        let f = |m: &core::ffi::CStr| unsafe { fopen_flags(m.as_ptr()) };
        assert_eq!(f(c"r"), Some(libc::O_RDONLY));
        assert_eq!(f(c"rb+"), Some(libc::O_RDWR));
        assert_eq!(f(c"w"), Some(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC));
        assert_eq!(f(c"w+x"), Some(libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL));
        assert_eq!(f(c"ae"), Some(libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC));
        assert_eq!(f(c"r,ccs=UTF-8+"), Some(libc::O_RDONLY));
        assert_eq!(f(c"q"), None);
        assert_eq!(f(c""), None);
        // SAFETY: a null mode is allowed.
        assert_eq!(unsafe { fopen_flags(core::ptr::null()) }, None);
    }

    #[test]
    fn calls_without_a_usable_path_are_not_described() {
        let described = |call: FileCall| {
            // SAFETY: the tests' paths are static NUL-terminated strings or null.
            unsafe { CallStrings::of(&call) }.is_some()
        };
        assert!(!described(FileCall::path(FileOp::Unlink, c"".as_ptr())));
        assert!(!described(FileCall::path(FileOp::Unlink, core::ptr::null())));
        assert!(!described(FileCall::path(FileOp::Rename, c"/a".as_ptr())), "a rename needs both paths");
        assert!(described(FileCall { fd: 0, ..FileCall::path(FileOp::Fchmod, core::ptr::null()) }));
        assert!(described(FileCall { fd: 0, ..FileCall::path(FileOp::Fchown, core::ptr::null()) }));
        let link = |op: FileOp, to: &core::ffi::CStr| FileCall::path(op, c"/l".as_ptr()).with_new_path(3, to.as_ptr());
        assert!(!described(link(FileOp::Link, c"")), "a link needs what it refers to");
        assert!(!described(link(FileOp::Symlink, c"")));
        assert!(described(link(FileOp::Symlink, c"rel/target")));
        assert!(!described(link(FileOp::Linkat, c"")));
        assert!(
            described(link(FileOp::Linkat, c"").with_call_flags(libc::AT_EMPTY_PATH)),
            "linkat(fd, \"\", .., AT_EMPTY_PATH) names the descriptor's file"
        );
    }
}
