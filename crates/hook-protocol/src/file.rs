//! File-domain messages (`0x02xx`): one hooked libc file call (open, unlink, rename, chmod, mkdir, link, symlink,
//! chown, ...).
//!
//! The same body travels as two kinds. [`MessageKind::FILE_REQUEST`] is sent *before* the call and waits for a
//! [`crate::Verdict`] (only when the agent said a policy rule could deny, see [`crate::CONFIG_FILE_VERDICT`]);
//! its `result` is `-1`. [`MessageKind::FILE_REPORT`] is sent one-way *after* the call with its outcome (`0`, or
//! the errno it failed with), and gets no answer.
//!
//! ```text
//! off size (from the end of the header)
//!   0    2  op          (FileOp: which libc function)
//!   2    2  activity    (FileActivity; must equal classify(op, flags), so both sides agree on the mapping)
//!   4    2  flags       (FILE_FLAG_*)
//!   6    2  reserved, 0
//!   8    4  pid         as the process claims it (the agent trusts SO_PEERCRED)
//!  12    4  tid
//!  16    4  uid         real uid at the call (claimed; lets the agent notice a setuid since the session began)
//!  20    4  euid
//!  24    4  call_flags  open(2) flags for the open family (fopen's mode string translated), AT_* flags of
//!                       unlinkat/fchmodat/linkat/fchownat (lchown: AT_SYMLINK_NOFOLLOW), RENAME_* flags of
//!                       renameat2, 0 otherwise
//!  28    4  mode        creation mode (open with O_CREAT/O_TMPFILE, creat, mkdir) or the new mode (chmod); 0 else
//!  32    4  result      i32: -1 in a request; 0 (success) or the call's errno in a report
//!  36    4  dropped     reports this process could not send since its last sent one (its socket was full)
//!  40    2  path_len
//!  42    2  new_path_len   non-zero exactly for the two-path calls ([`FileOp::has_new_path`])
//!  44    .  path, new_path: absolute (the hook joins a relative path with the cwd or the dirfd's target) unless
//!           FILE_FLAG_(NEW_)PATH_UNRESOLVED says the base could not be read and the path is as the caller gave it
//! ```
//!
//! Which path is which: the rename family sends the old name as `path` and the new one as `new_path`. The link
//! family ([`FileOp::links`]) sends the name it creates as `path` and what that name refers to as `new_path`: for
//! `link`/`linkat` the existing file (its path, joined like any path), for `symlink`/`symlinkat` the link's text
//! (a relative text joined with the directory of the new link, which is where the kernel resolves it from). The
//! owner a chown-family call sets is not carried (the event contract has no field for it).

use core::fmt;

use crate::{BufferTooSmall, DecodeError, HEADER_LEN, In, MAX_PATH, MessageKind, Out, copy_cut, put_at, write_header};

/// Size of the fixed part of a file message (after the header).
pub const FILE_FIXED_LEN: usize = 44;
/// A file message with two full paths fits in this many bytes.
pub const FILE_MAX_LEN: usize = HEADER_LEN + FILE_FIXED_LEN + 2 * MAX_PATH;

/// `path` was cut to fit.
pub const FILE_FLAG_PATH_TRUNCATED: u16 = 1 << 0;
/// `new_path` was cut to fit.
pub const FILE_FLAG_NEW_PATH_TRUNCATED: u16 = 1 << 1;
/// `path` is relative and its base (cwd or dirfd) could not be read: it is as the caller gave it.
pub const FILE_FLAG_PATH_UNRESOLVED: u16 = 1 << 2;
/// `new_path` is relative and its base could not be read.
pub const FILE_FLAG_NEW_PATH_UNRESOLVED: u16 = 1 << 3;
/// Open family with [`FILE_FLAG_CREATES`]: the path existed just before the call (checked by the hook).
pub const FILE_FLAG_EXISTED: u16 = 1 << 4;
/// Open family: creates the file if missing (`O_CREAT`, fopen "w"/"a", creat).
pub const FILE_FLAG_CREATES: u16 = 1 << 5;
/// Open family: fails if the file exists (`O_EXCL`, fopen "x").
pub const FILE_FLAG_EXCLUSIVE: u16 = 1 << 6;
/// Open family: truncates (`O_TRUNC`, fopen "w").
pub const FILE_FLAG_TRUNCATES: u16 = 1 << 7;
/// Open family: opened for writing (`O_WRONLY`/`O_RDWR`, fopen "w", "a", "+").
pub const FILE_FLAG_WRITES: u16 = 1 << 8;
/// Open family: `O_TMPFILE` (an unnamed file in the directory `path`).
pub const FILE_FLAG_TMPFILE: u16 = 1 << 9;
/// The call acts on a directory (mkdir, mkdirat, rmdir, unlinkat with `AT_REMOVEDIR`).
pub const FILE_FLAG_DIRECTORY: u16 = 1 << 10;

const OPEN_ONLY_FLAGS: u16 = FILE_FLAG_EXISTED
    | FILE_FLAG_CREATES
    | FILE_FLAG_EXCLUSIVE
    | FILE_FLAG_TRUNCATES
    | FILE_FLAG_WRITES
    | FILE_FLAG_TMPFILE;
const FILE_FLAGS_KNOWN: u16 = FILE_FLAG_PATH_TRUNCATED
    | FILE_FLAG_NEW_PATH_TRUNCATED
    | FILE_FLAG_PATH_UNRESOLVED
    | FILE_FLAG_NEW_PATH_UNRESOLVED
    | OPEN_ONLY_FLAGS
    | FILE_FLAG_DIRECTORY;

wire_enum! {
    /// Which libc function the process called.
    pub enum FileOp {
        Open = 1 => "open",
        Open64 = 2 => "open64",
        Openat = 3 => "openat",
        Openat64 = 4 => "openat64",
        Creat = 5 => "creat",
        Creat64 = 6 => "creat64",
        Fopen = 7 => "fopen",
        Fopen64 = 8 => "fopen64",
        Unlink = 9 => "unlink",
        Unlinkat = 10 => "unlinkat",
        Rename = 11 => "rename",
        Renameat = 12 => "renameat",
        Renameat2 = 13 => "renameat2",
        Truncate = 14 => "truncate",
        Truncate64 = 15 => "truncate64",
        Chmod = 16 => "chmod",
        Fchmod = 17 => "fchmod",
        Fchmodat = 18 => "fchmodat",
        Mkdir = 19 => "mkdir",
        Mkdirat = 20 => "mkdirat",
        Rmdir = 21 => "rmdir",
        Remove = 22 => "remove",
        /// `__open_2`: what `open` compiles to under `_FORTIFY_SOURCE` when the flags are not a constant.
        Open2 = 23 => "__open_2",
        /// `__open64_2`.
        Open64_2 = 24 => "__open64_2",
        /// `__openat_2`.
        Openat2 = 25 => "__openat_2",
        /// `__openat64_2`.
        Openat64_2 = 26 => "__openat64_2",
        Link = 27 => "link",
        Linkat = 28 => "linkat",
        Symlink = 29 => "symlink",
        Symlinkat = 30 => "symlinkat",
        Chown = 31 => "chown",
        Lchown = 32 => "lchown",
        Fchownat = 33 => "fchownat",
        Fchown = 34 => "fchown",
        Utime = 35 => "utime",
        Utimes = 36 => "utimes",
        Utimensat = 37 => "utimensat",
        Futimens = 38 => "futimens",
        Mknod = 39 => "mknod",
        Mknodat = 40 => "mknodat",
    }
}

impl FileOp {
    /// The open family: the call opens (and may create) a file and returns a descriptor or stream.
    pub fn opens(self) -> bool {
        matches!(
            self,
            FileOp::Open
                | FileOp::Open64
                | FileOp::Openat
                | FileOp::Openat64
                | FileOp::Creat
                | FileOp::Creat64
                | FileOp::Fopen
                | FileOp::Fopen64
                | FileOp::Open2
                | FileOp::Open64_2
                | FileOp::Openat2
                | FileOp::Openat64_2
        )
    }

    /// The rename family: `path` is the old name, `new_path` the new one.
    pub fn renames(self) -> bool {
        matches!(self, FileOp::Rename | FileOp::Renameat | FileOp::Renameat2)
    }

    /// The link family (hard and symbolic links): `path` is the name created, `new_path` what it refers to.
    pub fn links(self) -> bool {
        matches!(self, FileOp::Link | FileOp::Linkat | FileOp::Symlink | FileOp::Symlinkat)
    }

    /// The calls whose message carries `new_path` (required, non-empty): the rename and link families.
    pub fn has_new_path(self) -> bool {
        self.renames() || self.links()
    }

    /// Calls that may act on a directory and say so with [`FILE_FLAG_DIRECTORY`].
    fn may_be_directory(self) -> bool {
        matches!(self, FileOp::Mkdir | FileOp::Mkdirat | FileOp::Rmdir | FileOp::Unlinkat)
    }
}

wire_enum! {
    /// What a file call does, in the event contract's words.
    pub enum FileActivity {
        Open = 1 => "open",
        Create = 2 => "create",
        Write = 3 => "write",
        Delete = 4 => "delete",
        Rename = 5 => "rename",
        Chmod = 6 => "chmod",
    }
}

impl FileActivity {
    /// The one mapping from a call to an activity, used by the hook to fill the field and by the decoder to check
    /// it:
    ///
    /// - open family: `create` for `O_TMPFILE`, or for `O_CREAT` when the file did not exist before the call (or
    ///   `O_EXCL`, which fails otherwise); else `write` when opened for writing or truncating; else `open`;
    /// - truncate: `write`; unlink, unlinkat, rmdir, remove: `delete`; the rename family: `rename`;
    ///   chmod, fchmod, fchmodat, the owner changes chown, lchown, fchownat, fchown and the time changes utime,
    ///   utimes, utimensat, futimens: `chmod` (the contract's one attribute-change activity); mkdir, mkdirat,
    ///   link, linkat, symlink, symlinkat, mknod, mknodat: `create`.
    pub fn classify(op: FileOp, flags: u16) -> FileActivity {
        let has = |f: u16| flags & f != 0;
        if op.opens() {
            if has(FILE_FLAG_TMPFILE)
                || (has(FILE_FLAG_CREATES) && (!has(FILE_FLAG_EXISTED) || has(FILE_FLAG_EXCLUSIVE)))
            {
                return FileActivity::Create;
            }
            if has(FILE_FLAG_WRITES) || has(FILE_FLAG_TRUNCATES) {
                return FileActivity::Write;
            }
            return FileActivity::Open;
        }
        match op {
            FileOp::Truncate | FileOp::Truncate64 => FileActivity::Write,
            FileOp::Unlink | FileOp::Unlinkat | FileOp::Rmdir | FileOp::Remove => FileActivity::Delete,
            FileOp::Rename | FileOp::Renameat | FileOp::Renameat2 => FileActivity::Rename,
            FileOp::Chmod
            | FileOp::Fchmod
            | FileOp::Fchmodat
            | FileOp::Chown
            | FileOp::Lchown
            | FileOp::Fchownat
            | FileOp::Fchown
            | FileOp::Utime
            | FileOp::Utimes
            | FileOp::Utimensat
            | FileOp::Futimens => FileActivity::Chmod,
            // mkdir/mkdirat, mknod/mknodat and the link family; the open family returned above.
            _ => FileActivity::Create,
        }
    }
}

impl fmt::Display for FileActivity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoded file message. Paths borrow from the received buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMessage<'a> {
    /// True for [`MessageKind::FILE_REQUEST`] (the hook waits for a verdict before the call), false for a
    /// one-way [`MessageKind::FILE_REPORT`] sent after it.
    pub wants_verdict: bool,
    /// The libc function called.
    pub op: FileOp,
    /// What it does ([`FileActivity::classify`] of op and flags).
    pub activity: FileActivity,
    /// `FILE_FLAG_*` bits.
    pub flags: u16,
    /// pid as claimed.
    pub pid: u32,
    /// Calling thread as claimed.
    pub tid: u32,
    /// Real uid at the call, as claimed.
    pub uid: u32,
    /// Effective uid at the call, as claimed.
    pub euid: u32,
    /// The call's own flags (open flags, `AT_*`, `RENAME_*`), as passed.
    pub call_flags: u32,
    /// Creation or new mode; 0 when the call has none.
    pub mode: u32,
    /// `None` in a request; in a report `Some(0)` on success or `Some(errno)`.
    pub result: Option<i32>,
    /// Reports the process could not send before this one.
    pub dropped: u32,
    /// Absolute path (see [`FILE_FLAG_PATH_UNRESOLVED`]).
    pub path: &'a [u8],
    /// The rename target, or what a link refers to ([`FileOp::has_new_path`]); `None` for other calls.
    pub new_path: Option<&'a [u8]>,
}

impl FileMessage<'_> {
    /// True when `flag` is set.
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// The fixed facts of a file message, known before its paths are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileFixed {
    /// The libc function called.
    pub op: FileOp,
    /// `FILE_FLAG_*` bits the caller knows (the encoder adds the path flags itself).
    pub flags: u16,
    /// The caller's pid.
    pub pid: u32,
    /// The calling thread.
    pub tid: u32,
    /// Real uid.
    pub uid: u32,
    /// Effective uid.
    pub euid: u32,
    /// The call's own flags.
    pub call_flags: u32,
    /// Creation or new mode.
    pub mode: u32,
    /// Reports not sent before this one.
    pub dropped: u32,
}

/// What a path producer wrote into the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathFill {
    /// Bytes written (bytes from the first NUL on are dropped).
    pub len: usize,
    /// The path did not fit and was cut.
    pub truncated: bool,
    /// The base of a relative path was unknown: the path is as given.
    pub unresolved: bool,
}

/// Writes a file message into a fixed buffer: [`FileEncoder::request`] or [`FileEncoder::report`], then
/// [`FileEncoder::path_with`] and (rename and link families) [`FileEncoder::new_path_with`], then
/// [`FileEncoder::finish`].
/// Nothing allocates or panics; a path that does not fit is cut and flagged.
pub struct FileEncoder<'b> {
    out: Out<'b>,
    kind: MessageKind,
    seq: u32,
    fixed: FileFixed,
    result: i32,
    lens: [u16; 2],
    /// The next path field that may be written: 0 path, 1 new_path, 2 none.
    next: usize,
}

impl<'b> FileEncoder<'b> {
    /// Starts a request (before the call; waits for a verdict).
    pub fn request(buf: &'b mut [u8], seq: u32, fixed: FileFixed) -> Result<Self, BufferTooSmall> {
        Self::new(buf, MessageKind::FILE_REQUEST, seq, fixed, -1)
    }

    /// Starts a report (after the call): `errno` is 0 on success or the errno the call failed with.
    pub fn report(buf: &'b mut [u8], seq: u32, fixed: FileFixed, errno: i32) -> Result<Self, BufferTooSmall> {
        Self::new(buf, MessageKind::FILE_REPORT, seq, fixed, errno.clamp(0, 4095))
    }

    fn new(
        buf: &'b mut [u8],
        kind: MessageKind,
        seq: u32,
        fixed: FileFixed,
        result: i32,
    ) -> Result<Self, BufferTooSmall> {
        let start = HEADER_LEN.checked_add(FILE_FIXED_LEN).ok_or(BufferTooSmall)?;
        if buf.len() < start {
            return Err(BufferTooSmall);
        }
        Ok(FileEncoder { out: Out { buf, pos: start }, kind, seq, fixed, result, lens: [0; 2], next: 0 })
    }

    /// Lets `f` write the path straight into the message (at most [`MAX_PATH`] bytes).
    pub fn path_with(&mut self, f: impl FnOnce(&mut [u8]) -> PathFill) {
        self.fill(0, f);
    }

    /// Lets `f` write the rename target or link referent (only kept when [`FileOp::has_new_path`]).
    pub fn new_path_with(&mut self, f: impl FnOnce(&mut [u8]) -> PathFill) {
        if self.fixed.op.has_new_path() {
            self.fill(1, f);
        }
    }

    /// Copies `path` in.
    pub fn path(&mut self, path: &[u8]) {
        self.path_with(|dst| {
            let len = copy_cut(path, dst);
            PathFill { len, truncated: len < path.len(), unresolved: !path.starts_with(b"/") }
        });
    }

    /// Copies the rename target or link referent in.
    pub fn new_path(&mut self, path: &[u8]) {
        self.new_path_with(|dst| {
            let len = copy_cut(path, dst);
            PathFill { len, truncated: len < path.len(), unresolved: !path.starts_with(b"/") }
        });
    }

    fn fill(&mut self, field: usize, f: impl FnOnce(&mut [u8]) -> PathFill) {
        if field < self.next {
            return;
        }
        self.next = field.saturating_add(1);
        let cap = MAX_PATH.min(self.out.room());
        let end = self.out.pos.saturating_add(cap);
        let Some(dst) = self.out.buf.get_mut(self.out.pos..end) else { return };
        let fill = f(dst);
        let truncated = fill.truncated || fill.len > cap;
        let used = match dst.get(..fill.len.min(cap)) {
            Some(written) => written.iter().position(|b| *b == 0).unwrap_or(written.len()),
            None => 0,
        };
        let (Ok(len), Some(slot)) = (u16::try_from(used), self.lens.get_mut(field)) else { return };
        *slot = len;
        self.out.pos = self.out.pos.saturating_add(used);
        let (trunc_flag, unresolved_flag) = if field == 0 {
            (FILE_FLAG_PATH_TRUNCATED, FILE_FLAG_PATH_UNRESOLVED)
        } else {
            (FILE_FLAG_NEW_PATH_TRUNCATED, FILE_FLAG_NEW_PATH_UNRESOLVED)
        };
        if truncated {
            self.fixed.flags |= trunc_flag;
        }
        // What the decoder checks: an unresolved path is relative, a resolved one absolute.
        let relative = dst.first() != Some(&b'/');
        if used > 0 && (fill.unresolved || relative) {
            self.fixed.flags |= unresolved_flag;
        }
    }

    /// Bytes left.
    pub fn room(&self) -> usize {
        self.out.room()
    }

    /// Completes the header and fixed part; returns the message length.
    pub fn finish(self) -> Result<usize, BufferTooSmall> {
        let FileEncoder { out, kind, seq, fixed, result, lens, .. } = self;
        let len = out.pos;
        let buf = out.buf;
        let mut flags = fixed.flags & FILE_FLAGS_KNOWN;
        if !fixed.op.opens() {
            flags &= !OPEN_ONLY_FLAGS;
        }
        if !fixed.op.may_be_directory() {
            flags &= !FILE_FLAG_DIRECTORY;
        }
        let activity = FileActivity::classify(fixed.op, flags);
        let h = HEADER_LEN;
        put_at(buf, h, &(fixed.op as u16).to_le_bytes())?;
        put_at(buf, h + 2, &(activity as u16).to_le_bytes())?;
        put_at(buf, h + 4, &flags.to_le_bytes())?;
        put_at(buf, h + 6, &0u16.to_le_bytes())?;
        put_at(buf, h + 8, &fixed.pid.to_le_bytes())?;
        put_at(buf, h + 12, &fixed.tid.to_le_bytes())?;
        put_at(buf, h + 16, &fixed.uid.to_le_bytes())?;
        put_at(buf, h + 20, &fixed.euid.to_le_bytes())?;
        put_at(buf, h + 24, &fixed.call_flags.to_le_bytes())?;
        put_at(buf, h + 28, &fixed.mode.to_le_bytes())?;
        put_at(buf, h + 32, &result.to_le_bytes())?;
        put_at(buf, h + 36, &fixed.dropped.to_le_bytes())?;
        let [path_len, new_len] = lens;
        put_at(buf, h + 40, &path_len.to_le_bytes())?;
        put_at(buf, h + 42, &new_len.to_le_bytes())?;
        write_header(buf, kind, len, seq)?;
        Ok(len)
    }
}

pub(crate) fn decode_file(body: &[u8], wants_verdict: bool) -> Result<FileMessage<'_>, DecodeError> {
    let mut r = In::at_least(body, FILE_FIXED_LEN)?;
    let op = FileOp::from_u16(r.u16("op")?).ok_or(DecodeError::BadField("op"))?;
    let activity = FileActivity::from_u16(r.u16("activity")?).ok_or(DecodeError::BadField("activity"))?;
    let flags = r.flags(FILE_FLAGS_KNOWN)?;
    if (!op.opens() && flags & OPEN_ONLY_FLAGS != 0) || (!op.may_be_directory() && flags & FILE_FLAG_DIRECTORY != 0) {
        return Err(DecodeError::BadField("flags"));
    }
    if activity != FileActivity::classify(op, flags) {
        return Err(DecodeError::BadField("activity"));
    }
    if r.u16("reserved")? != 0 {
        return Err(DecodeError::BadField("reserved"));
    }
    let pid = r.u32("pid")?;
    let tid = r.u32("tid")?;
    let uid = r.u32("uid")?;
    let euid = r.u32("euid")?;
    let call_flags = r.u32("call_flags")?;
    let mode = r.u32("mode")?;
    let result = r.i32("result")?;
    let result = match (wants_verdict, result) {
        (true, -1) => None,
        (false, 0..=4095) => Some(result),
        _ => return Err(DecodeError::BadField("result")),
    };
    let dropped = r.u32("dropped")?;
    let path_len = usize::from(r.u16("path_len")?);
    let new_len = usize::from(r.u16("new_path_len")?);
    if path_len > MAX_PATH {
        return Err(DecodeError::BadField("path"));
    }
    if new_len > MAX_PATH {
        return Err(DecodeError::BadField("new_path"));
    }
    let path = r.take(path_len, "path")?;
    let new_path = r.take(new_len, "new_path")?;
    if r.pos != body.len() {
        return Err(DecodeError::FieldOverrun("trailing bytes"));
    }
    check_path(path, flags & FILE_FLAG_PATH_UNRESOLVED != 0, "path")?;
    let new_path = if op.has_new_path() {
        check_path(new_path, flags & FILE_FLAG_NEW_PATH_UNRESOLVED != 0, "new_path")?;
        Some(new_path)
    } else if new_path.is_empty() && flags & (FILE_FLAG_NEW_PATH_TRUNCATED | FILE_FLAG_NEW_PATH_UNRESOLVED) == 0 {
        None
    } else {
        return Err(DecodeError::BadField("new_path"));
    };
    Ok(FileMessage {
        wants_verdict,
        op,
        activity,
        flags,
        pid,
        tid,
        uid,
        euid,
        call_flags,
        mode,
        result,
        dropped,
        path,
        new_path,
    })
}

/// A path is non-empty, has no NUL, and is absolute exactly when it was resolved.
fn check_path(path: &[u8], unresolved: bool, name: &'static str) -> Result<(), DecodeError> {
    if path.is_empty() || path.contains(&0) || path.starts_with(b"/") == unresolved {
        return Err(DecodeError::BadField(name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;
    use crate::{MAX_MESSAGE, Message, decode};
    use std::vec::Vec;

    fn fixed(op: FileOp, flags: u16) -> FileFixed {
        FileFixed { op, flags, pid: 10, tid: 11, uid: 1000, euid: 0, call_flags: 0o1101, mode: 0o644, dropped: 2 }
    }

    fn report(op: FileOp, flags: u16, path: &[u8], new_path: &[u8], buf: &mut [u8]) -> usize {
        let mut enc = FileEncoder::report(buf, 9, fixed(op, flags), 0).unwrap();
        enc.path(path);
        enc.new_path(new_path);
        enc.finish().unwrap()
    }

    fn file_msg(bytes: &[u8]) -> FileMessage<'_> {
        match decode(bytes).unwrap().1 {
            Message::File(m) => m,
            other => panic!("not a file message: {other:?}"),
        }
    }

    #[test]
    fn report_and_request_round_trip() {
        let mut buf = [0u8; FILE_MAX_LEN];
        let n = report(FileOp::Renameat2, 0, b"/tmp/a", b"/tmp/b", &mut buf);
        let (h, _) = decode(&buf[..n]).unwrap();
        assert_eq!((h.kind, h.seq, h.len as usize), (MessageKind::FILE_REPORT, 9, n));
        let m = file_msg(&buf[..n]);
        assert!(!m.wants_verdict);
        assert_eq!((m.op, m.activity, m.result, m.dropped), (FileOp::Renameat2, FileActivity::Rename, Some(0), 2));
        assert_eq!((m.pid, m.tid, m.uid, m.euid, m.call_flags, m.mode), (10, 11, 1000, 0, 0o1101, 0o644));
        assert_eq!((m.path, m.new_path), (&b"/tmp/a"[..], Some(&b"/tmp/b"[..])));

        let mut enc = FileEncoder::request(&mut buf, 5, fixed(FileOp::Openat, FILE_FLAG_WRITES)).unwrap();
        enc.path(b"/etc/shadow");
        enc.new_path(b"/ignored"); // not a rename: not written
        let n = enc.finish().unwrap();
        let m = file_msg(&buf[..n]);
        assert!(m.wants_verdict);
        assert_eq!((m.activity, m.result, m.new_path), (FileActivity::Write, None, None));
        assert_eq!(decode(&buf[..n]).unwrap().0.kind, MessageKind::FILE_REQUEST);
    }

    #[test]
    fn link_family_carries_both_paths_and_chown_none() {
        let mut buf = [0u8; FILE_MAX_LEN];
        for op in [FileOp::Link, FileOp::Linkat, FileOp::Symlink, FileOp::Symlinkat] {
            let n = report(op, 0, b"/tmp/new-link", b"/etc/target", &mut buf);
            let m = file_msg(&buf[..n]);
            assert_eq!((m.op, m.activity), (op, FileActivity::Create));
            assert_eq!((m.path, m.new_path), (&b"/tmp/new-link"[..], Some(&b"/etc/target"[..])));
            // A link without its referent is not a valid message.
            let mut enc = FileEncoder::request(&mut buf, 3, fixed(op, 0)).unwrap();
            enc.path(b"/tmp/new-link");
            let n = enc.finish().unwrap();
            assert_eq!(decode(&buf[..n]), Err(DecodeError::BadField("new_path")));
        }
        for op in [FileOp::Chown, FileOp::Lchown, FileOp::Fchownat, FileOp::Fchown] {
            let mut enc = FileEncoder::request(&mut buf, 4, fixed(op, 0)).unwrap();
            enc.path(b"/srv/f");
            enc.new_path(b"/ignored"); // not a two-path call: not written
            let n = enc.finish().unwrap();
            let m = file_msg(&buf[..n]);
            assert_eq!((m.op, m.activity, m.new_path, m.result), (op, FileActivity::Chmod, None, None));
        }
    }

    #[test]
    fn report_errno_is_carried_and_clamped() {
        let mut buf = [0u8; 256];
        let mut enc = FileEncoder::report(&mut buf, 1, fixed(FileOp::Unlink, 0), 2).unwrap();
        enc.path(b"/x");
        let n = enc.finish().unwrap();
        assert_eq!(file_msg(&buf[..n]).result, Some(2));
        let mut enc = FileEncoder::report(&mut buf, 1, fixed(FileOp::Unlink, 0), -7).unwrap();
        enc.path(b"/x");
        let n = enc.finish().unwrap();
        assert_eq!(file_msg(&buf[..n]).result, Some(0));
    }

    #[test]
    fn classification_follows_the_documented_mapping() {
        use FileActivity as A;
        let c = FileActivity::classify;
        assert_eq!(c(FileOp::Open, 0), A::Open);
        assert_eq!(c(FileOp::Open, FILE_FLAG_WRITES), A::Write);
        assert_eq!(c(FileOp::Open, FILE_FLAG_TRUNCATES), A::Write);
        assert_eq!(c(FileOp::Openat, FILE_FLAG_CREATES | FILE_FLAG_WRITES), A::Create);
        assert_eq!(c(FileOp::Openat, FILE_FLAG_CREATES | FILE_FLAG_WRITES | FILE_FLAG_EXISTED), A::Write);
        assert_eq!(c(FileOp::Openat, FILE_FLAG_CREATES | FILE_FLAG_EXISTED), A::Open);
        assert_eq!(c(FileOp::Open, FILE_FLAG_CREATES | FILE_FLAG_EXCLUSIVE | FILE_FLAG_EXISTED), A::Create);
        assert_eq!(c(FileOp::Open, FILE_FLAG_TMPFILE | FILE_FLAG_WRITES), A::Create);
        assert_eq!(c(FileOp::Fopen, FILE_FLAG_CREATES | FILE_FLAG_WRITES | FILE_FLAG_TRUNCATES), A::Create);
        assert_eq!(c(FileOp::Truncate64, 0), A::Write);
        for op in [FileOp::Unlink, FileOp::Unlinkat, FileOp::Rmdir, FileOp::Remove] {
            assert_eq!(c(op, 0), A::Delete);
        }
        for op in [FileOp::Rename, FileOp::Renameat, FileOp::Renameat2] {
            assert_eq!(c(op, 0), A::Rename);
        }
        for op in [FileOp::Chmod, FileOp::Fchmod, FileOp::Fchmodat] {
            assert_eq!(c(op, 0), A::Chmod);
        }
        for op in [FileOp::Chown, FileOp::Lchown, FileOp::Fchownat, FileOp::Fchown] {
            assert_eq!(c(op, 0), A::Chmod, "an owner change is the contract's attribute change");
            assert!(!op.has_new_path());
        }
        assert_eq!(c(FileOp::Mkdir, FILE_FLAG_DIRECTORY), A::Create);
        assert_eq!(c(FileOp::Mkdirat, 0), A::Create);
        for op in [FileOp::Link, FileOp::Linkat, FileOp::Symlink, FileOp::Symlinkat] {
            assert_eq!(c(op, 0), A::Create);
            assert!(op.links() && op.has_new_path() && !op.renames());
        }
        for op in [FileOp::Utime, FileOp::Utimes, FileOp::Utimensat, FileOp::Futimens] {
            assert_eq!(c(op, 0), A::Chmod, "a time change is the contract's attribute change");
            assert!(!op.has_new_path());
        }
        for op in [FileOp::Mknod, FileOp::Mknodat] {
            assert_eq!(c(op, 0), A::Create);
        }
        // The new numbers follow the old ones; none is reused.
        assert_eq!((FileOp::Link as u16, FileOp::Fchown as u16), (27, 34));
        assert_eq!((FileOp::Utime as u16, FileOp::Mknodat as u16), (35, 40));
        assert_eq!(FileOp::ALL.len(), 40);
        for op in FileOp::ALL {
            assert_eq!(FileOp::from_u16(op as u16), Some(op));
            assert!(!op.name().is_empty());
        }
    }

    #[test]
    fn encoder_drops_flags_that_do_not_fit_the_op() {
        let mut buf = [0u8; 256];
        let n = report(FileOp::Unlink, FILE_FLAG_CREATES | FILE_FLAG_DIRECTORY | 0x8000, b"/x", b"", &mut buf);
        assert_eq!(file_msg(&buf[..n]).flags, 0);
        let n = report(FileOp::Rmdir, FILE_FLAG_DIRECTORY, b"/d", b"", &mut buf);
        assert!(file_msg(&buf[..n]).has(FILE_FLAG_DIRECTORY));
    }

    #[test]
    fn relative_and_long_paths_are_flagged() {
        let mut buf = [0u8; FILE_MAX_LEN];
        let n = report(FileOp::Rename, 0, b"rel/a", b"/abs/b", &mut buf);
        let m = file_msg(&buf[..n]);
        assert!(m.has(FILE_FLAG_PATH_UNRESOLVED) && !m.has(FILE_FLAG_NEW_PATH_UNRESOLVED));
        let mut long = std::vec![b'p'; MAX_PATH + 10];
        long[0] = b'/';
        let n = report(FileOp::Rename, 0, &long, &long, &mut buf);
        let m = file_msg(&buf[..n]);
        assert_eq!((m.path.len(), m.new_path.map(<[u8]>::len)), (MAX_PATH, Some(MAX_PATH)));
        assert!(m.has(FILE_FLAG_PATH_TRUNCATED) && m.has(FILE_FLAG_NEW_PATH_TRUNCATED));
        // A small buffer cuts the second path to what is left.
        let mut small = [0u8; HEADER_LEN + FILE_FIXED_LEN + 8];
        let mut enc = FileEncoder::report(&mut small, 1, fixed(FileOp::Rename, 0), 0).unwrap();
        enc.path(b"/abc");
        enc.new_path(b"/defgh");
        let n = enc.finish().unwrap();
        let m = file_msg(&small[..n]);
        assert_eq!(m.new_path, Some(&b"/def"[..]));
        assert!(m.has(FILE_FLAG_NEW_PATH_TRUNCATED));
    }

    #[test]
    fn producer_nuls_and_lies_are_clamped() {
        let mut buf = [0u8; 512];
        let mut enc = FileEncoder::report(&mut buf, 1, fixed(FileOp::Chmod, 0), 0).unwrap();
        enc.path_with(|dst| {
            dst[..8].copy_from_slice(b"/a/b\0xyz");
            PathFill { len: 8, ..PathFill::default() }
        });
        let n = enc.finish().unwrap();
        assert_eq!(file_msg(&buf[..n]).path, b"/a/b");
        let mut enc = FileEncoder::report(&mut buf, 1, fixed(FileOp::Chmod, 0), 0).unwrap();
        enc.path_with(|dst| {
            dst.fill(b'/');
            PathFill { len: usize::MAX, ..PathFill::default() }
        });
        let n = enc.finish().unwrap();
        let m = file_msg(&buf[..n]);
        assert!(m.has(FILE_FLAG_PATH_TRUNCATED));
        assert_eq!(m.path.len(), 512 - HEADER_LEN - FILE_FIXED_LEN);
    }

    #[test]
    fn tiny_buffers_fail_without_panicking() {
        for size in 0..HEADER_LEN + FILE_FIXED_LEN {
            let mut buf = std::vec![0u8; size];
            assert!(FileEncoder::report(&mut buf, 1, fixed(FileOp::Open, 0), 0).is_err());
        }
        let mut buf = [0u8; HEADER_LEN + FILE_FIXED_LEN];
        let mut enc = FileEncoder::report(&mut buf, 1, fixed(FileOp::Open, 0), 0).unwrap();
        enc.path(b"/x");
        let n = enc.finish().unwrap();
        // No room for any path: encoded, but not a valid message (a path is required).
        assert_eq!(decode(&buf[..n]), Err(DecodeError::BadField("path")));
    }

    #[test]
    fn lies_and_garbage_are_errors() {
        let mut buf = [0u8; 512];
        let n = report(FileOp::Renameat, 0, b"/a", b"/b", &mut buf);
        let good = buf[..n].to_vec();
        let h = HEADER_LEN;
        let mutate = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut m = good.clone();
            f(&mut m);
            decode(&m).map(|_| ())
        };
        assert_eq!(mutate(&|m| m[h] = 99), Err(DecodeError::BadField("op")));
        assert_eq!(mutate(&|m| m[h + 2] = 1), Err(DecodeError::BadField("activity")));
        assert_eq!(mutate(&|m| m[h + 2] = 77), Err(DecodeError::BadField("activity")));
        assert_eq!(mutate(&|m| m[h + 5] = 0x80), Err(DecodeError::BadField("flags")));
        assert_eq!(mutate(&|m| m[h + 4] = FILE_FLAG_CREATES as u8), Err(DecodeError::BadField("flags")));
        assert_eq!(mutate(&|m| m[h + 6] = 1), Err(DecodeError::BadField("reserved")));
        assert_eq!(
            mutate(&|m| m[h + 32..h + 36].copy_from_slice(&(-1i32).to_le_bytes())),
            Err(DecodeError::BadField("result"))
        );
        assert_eq!(
            mutate(&|m| m[h + 32..h + 36].copy_from_slice(&5000i32.to_le_bytes())),
            Err(DecodeError::BadField("result"))
        );
        // A report re-labelled as a request: its result is not -1.
        assert_eq!(mutate(&|m| m[6] = 0x01), Err(DecodeError::BadField("result")));
        assert!(matches!(mutate(&|m| m[h + 40] = 200), Err(DecodeError::FieldOverrun(_))));
        assert_eq!(mutate(&|m| m[h + FILE_FIXED_LEN] = b'x'), Err(DecodeError::BadField("path")));
        assert_eq!(mutate(&|m| m[h + FILE_FIXED_LEN + 1] = 0), Err(DecodeError::BadField("path")));
        assert_eq!(mutate(&|m| m[n - 1] = 0), Err(DecodeError::BadField("new_path")));
        // Path lengths shuffled between the fields: new_path becomes empty, which a rename cannot have.
        assert_eq!(
            mutate(&|m| {
                m[h + 40] = 4;
                m[h + 42] = 0;
            }),
            Err(DecodeError::BadField("new_path"))
        );
        // A non-rename op with a new_path.
        assert_eq!(
            mutate(&|m| {
                m[h] = FileOp::Chmod as u8;
                m[h + 2] = FileActivity::Chmod as u8;
            }),
            Err(DecodeError::BadField("new_path"))
        );
        assert!(matches!(decode(&good[..n - 1]), Err(DecodeError::LengthMismatch { .. })));
        let mut short = good[..h + 10].to_vec();
        short[8..12].copy_from_slice(&((h + 10) as u32).to_le_bytes());
        assert!(matches!(decode(&short), Err(DecodeError::Short { .. })));
    }

    #[test]
    fn fuzz_random_truncated_and_mutated_file_messages_never_panic() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let mut buf = [0u8; FILE_MAX_LEN];
        let n = report(FileOp::Renameat2, 0, b"/tmp/dir/old-name", b"/tmp/dir/new-name", &mut buf);
        let good = buf[..n].to_vec();
        let mut accepted = 0u32;
        for round in 0..50_000u32 {
            let m: Vec<u8> = match round % 4 {
                0 | 1 => {
                    let len = (rng.next() % 300) as usize;
                    let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    if round % 4 == 1 && len >= HEADER_LEN {
                        v[..4].copy_from_slice(&crate::MAGIC);
                        v[4..6].copy_from_slice(&crate::VERSION.to_le_bytes());
                        let kind = if rng.next().is_multiple_of(2) {
                            MessageKind::FILE_REPORT
                        } else {
                            MessageKind::FILE_REQUEST
                        };
                        v[6..8].copy_from_slice(&kind.0.to_le_bytes());
                        v[8..12].copy_from_slice(&(len as u32).to_le_bytes());
                    }
                    v
                }
                2 => good[..(rng.next() as usize) % good.len()].to_vec(),
                _ => {
                    let mut v = good.clone();
                    for _ in 0..1 + rng.next() % 4 {
                        let i = (rng.next() as usize) % v.len();
                        v[i] = rng.next() as u8;
                    }
                    v
                }
            };
            assert!(m.len() <= MAX_MESSAGE);
            if let Ok((h, Message::File(f))) = decode(&m) {
                accepted += 1;
                assert_eq!(h.len as usize, m.len());
                assert_eq!(f.activity, FileActivity::classify(f.op, f.flags));
                assert!(!f.path.is_empty() && f.path.len() <= MAX_PATH);
                assert_eq!(f.new_path.is_some(), f.op.has_new_path());
            }
        }
        assert!(accepted < 50_000, "garbage must mostly be rejected");
    }
}
