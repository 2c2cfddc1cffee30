//! Absolute paths without allocating: a relative path is joined, in the caller's buffer, with the working
//! directory (`getcwd` into the buffer) or with the target of a directory descriptor (`readlink` of
//! `/proc/self/fd/N`). Neither call is hooked, and glibc's `getcwd` with a caller buffer does not allocate.
//!
//! The result is lexical: `.` and `..` are kept as given (the agent folds them and resolves symlinks in its
//! own view of the file system). When the base cannot be read (a closed dirfd, a working directory longer than
//! the buffer or unreachable from the root) the path is kept as given and flagged unresolved; a path that does
//! not fit is cut and flagged truncated.

use core::ffi::c_int;

use ringwatch_hook_protocol::PathFill;

/// Writes the absolute form of `path` (as the caller gave it, relative to `dirfd`, which may be `AT_FDCWD`) into
/// `dst`. An empty `path` stands for `dirfd` itself (the `AT_EMPTY_PATH` convention).
pub(crate) fn absolute(dirfd: c_int, path: &[u8], dst: &mut [u8]) -> PathFill {
    if path.first() == Some(&b'/') {
        return as_given(path, dst, false);
    }
    let base = if dirfd == libc::AT_FDCWD { cwd(dst) } else { fd_target(dirfd, dst) };
    if base == 0 || dst.first() != Some(&b'/') {
        return as_given(path, dst, true);
    }
    if path.is_empty() {
        return PathFill { len: base, truncated: false, unresolved: false };
    }
    let mut pos = base;
    if dst.get(base.saturating_sub(1)) != Some(&b'/') {
        let Some(slot) = dst.get_mut(pos) else { return PathFill { len: pos, truncated: true, unresolved: false } };
        *slot = b'/';
        pos = pos.saturating_add(1);
    }
    let room = dst.len().saturating_sub(pos);
    let take = path.len().min(room);
    let end = pos.saturating_add(take);
    if let (Some(d), Some(s)) = (dst.get_mut(pos..end), path.get(..take)) {
        d.copy_from_slice(s);
    }
    PathFill { len: end, truncated: take < path.len(), unresolved: false }
}

/// Writes what a symlink's `text` names, as the kernel resolves it: an absolute text as is, a relative one
/// joined with the directory of the link `link` (relative to `dirfd`). When the link's base cannot be read the
/// text is kept as given and flagged unresolved; a link whose own path was cut makes the result truncated.
pub(crate) fn beside(dirfd: c_int, link: &[u8], text: &[u8], dst: &mut [u8]) -> PathFill {
    if text.first() == Some(&b'/') {
        return as_given(text, dst, false);
    }
    let fill = absolute(dirfd, link, dst);
    if fill.unresolved || fill.len == 0 {
        return as_given(text, dst, true);
    }
    // The link's directory: everything up to and including its last `/` (an absolute path has one).
    let dir_end =
        dst.get(..fill.len).and_then(|p| p.iter().rposition(|b| *b == b'/')).map_or(0, |i| i.saturating_add(1));
    let room = dst.len().saturating_sub(dir_end);
    let take = text.len().min(room);
    let end = dir_end.saturating_add(take);
    if let (Some(d), Some(s)) = (dst.get_mut(dir_end..end), text.get(..take)) {
        d.copy_from_slice(s);
    }
    PathFill { len: end, truncated: fill.truncated || take < text.len(), unresolved: false }
}

/// Copies `path` into `dst` unchanged.
fn as_given(path: &[u8], dst: &mut [u8], unresolved: bool) -> PathFill {
    let take = path.len().min(dst.len());
    if let (Some(d), Some(s)) = (dst.get_mut(..take), path.get(..take)) {
        d.copy_from_slice(s);
    }
    PathFill { len: take, truncated: take < path.len(), unresolved }
}

/// Writes the working directory into `dst`; returns its length, 0 when unknown or too long.
fn cwd(dst: &mut [u8]) -> usize {
    // SAFETY: `dst` is writable for `dst.len()` bytes; getcwd writes at most that, NUL included, or fails.
    let p = unsafe { libc::getcwd(dst.as_mut_ptr().cast(), dst.len()) };
    if p.is_null() {
        return 0;
    }
    dst.iter().position(|b| *b == 0).unwrap_or(0)
}

/// Writes the target of `/proc/self/fd/FD` into `dst`; returns its length, 0 when unknown.
pub(crate) fn fd_target(fd: c_int, dst: &mut [u8]) -> usize {
    let Ok(fd) = u32::try_from(fd) else { return 0 };
    let mut link = [0u8; 32];
    let prefix = b"/proc/self/fd/";
    let Some(head) = link.get_mut(..prefix.len()) else { return 0 };
    head.copy_from_slice(prefix);
    let Some(tail) = link.get_mut(prefix.len()..) else { return 0 };
    if write_decimal(tail, fd).is_none() {
        return 0;
    }
    // SAFETY: `link` was zeroed and write_decimal leaves a byte after the digits, so it is NUL-terminated; `dst` is
    // writable for `dst.len()` bytes and readlink writes at most that.
    let n = unsafe { libc::readlink(link.as_ptr().cast(), dst.as_mut_ptr().cast(), dst.len()) };
    // A target that fills the buffer may be cut; report it unknown rather than wrong.
    usize::try_from(n).ok().filter(|n| *n < dst.len()).unwrap_or(0)
}

/// Writes `n` in decimal at the start of `dst`, leaving at least one byte after it; returns the digit count.
pub(crate) fn write_decimal(dst: &mut [u8], mut n: u32) -> Option<usize> {
    let mut tmp = [0u8; 10];
    let mut len = 0usize;
    loop {
        *tmp.get_mut(len)? = b'0'.wrapping_add((n % 10) as u8);
        len = len.checked_add(1)?;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if dst.len() <= len {
        return None;
    }
    for (d, s) in dst.iter_mut().zip(tmp.get(..len)?.iter().rev()) {
        *d = *s;
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn abs(dirfd: c_int, path: &[u8], size: usize) -> (Vec<u8>, PathFill) {
        let mut dst = vec![0u8; size];
        let fill = absolute(dirfd, path, &mut dst);
        dst.truncate(fill.len);
        (dst, fill)
    }

    #[test]
    fn decimal_never_overflows() {
        let mut d = [0u8; 4];
        assert_eq!(write_decimal(&mut d, 123), Some(3));
        assert_eq!(&d[..3], b"123");
        assert_eq!(write_decimal(&mut d, 1234), None);
        assert_eq!(write_decimal(&mut d, 0), Some(1));
    }

    #[test]
    fn relative_paths_join_the_cwd_or_the_dirfd() {
        let cwd = std::env::current_dir().unwrap();
        let (p, fill) = abs(libc::AT_FDCWD, b"a/b", 4096);
        assert_eq!(p, format!("{}/a/b", cwd.display()).into_bytes());
        assert!(!fill.truncated && !fill.unresolved);
        let (p, _) = abs(libc::AT_FDCWD, b"/etc/passwd", 4096);
        assert_eq!(p, b"/etc/passwd");
        let dir = std::fs::File::open("/usr").unwrap();
        let (p, _) = abs(dir.as_raw_fd(), b"lib", 4096);
        assert_eq!(p, b"/usr/lib");
        let (p, _) = abs(dir.as_raw_fd(), b"", 4096);
        assert_eq!(p, b"/usr");
        let root = std::fs::File::open("/").unwrap();
        let (p, _) = abs(root.as_raw_fd(), b"etc", 4096);
        assert_eq!(p, b"/etc", "no double slash after the root");
    }

    #[test]
    fn symlink_texts_are_joined_with_the_links_directory() {
        let cwd = std::env::current_dir().unwrap();
        let dir = std::fs::File::open("/usr").unwrap();
        let beside_of = |dirfd: c_int, link: &[u8], text: &[u8], size: usize| {
            let mut dst = vec![0u8; size];
            let fill = beside(dirfd, link, text, &mut dst);
            dst.truncate(fill.len);
            (String::from_utf8(dst).unwrap(), fill.truncated, fill.unresolved)
        };
        assert_eq!(beside_of(libc::AT_FDCWD, b"/tmp/l", b"/etc/passwd", 4096), ("/etc/passwd".into(), false, false));
        assert_eq!(beside_of(libc::AT_FDCWD, b"/tmp/sub/l", b"../x", 4096), ("/tmp/sub/../x".into(), false, false));
        assert_eq!(beside_of(libc::AT_FDCWD, b"l", b"x", 4096), (format!("{}/x", cwd.display()), false, false));
        assert_eq!(beside_of(dir.as_raw_fd(), b"lib/l", b"t", 4096), ("/usr/lib/t".into(), false, false));
        assert_eq!(beside_of(987_654, b"l", b"t", 4096), ("t".into(), false, true), "unknown base: as given");
        assert_eq!(beside_of(libc::AT_FDCWD, b"/a/l", b"target", 6), ("/a/tar".into(), true, false));
    }

    #[test]
    fn unknown_bases_and_small_buffers_are_flagged() {
        let (p, fill) = abs(987_654, b"x/y", 4096);
        assert_eq!((p.as_slice(), fill.unresolved), (&b"x/y"[..], true));
        let (p, fill) = abs(-5, b"x", 4096);
        assert_eq!((p.as_slice(), fill.unresolved), (&b"x"[..], true));
        let dir = std::fs::File::open("/usr").unwrap();
        let (p, fill) = abs(dir.as_raw_fd(), b"libexec", 8);
        assert_eq!((p.as_slice(), fill.truncated), (&b"/usr/lib"[..], true));
        let (p, fill) = abs(libc::AT_FDCWD, b"/abcdef", 4);
        assert_eq!((p.as_slice(), fill.truncated), (&b"/abc"[..], true));
        // The cwd does not fit at all: the path as given, unresolved.
        let (p, fill) = abs(libc::AT_FDCWD, b"rel", 3);
        assert_eq!((p.as_slice(), fill.unresolved), (&b"rel"[..], true));
    }
}
