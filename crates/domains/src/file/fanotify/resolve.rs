//! File handle → path, for the handles fanotify reports instead of paths.
//!
//! A directory handle is resolved by opening it with `open_by_handle_at(mount_fd, handle, O_PATH)` on one mount of
//! its filesystem and reading the link `/proc/self/fd/N`, which the kernel renders from the dentry at that moment;
//! the entry name from the event is then joined to it. Results are kept in a bounded cache (directory handle →
//! path), so a burst of events in one directory costs one resolution. The cache is corrected from the event
//! stream itself: a renamed or deleted directory drops its entry and every entry below it, and a queue overflow
//! (renames may have been missed) drops everything.
//!
//! The mount point is opened per resolution, not held open: an open descriptor would make `umount` of that
//! filesystem fail with EBUSY, and a sensor must not keep users from unmounting their disks. The opened mount is
//! checked (`st_dev`) to be the marked filesystem, so a mount stacked on the same directory later cannot make a
//! handle decode on the wrong filesystem.
//!
//! Paths are those at resolution time, a few milliseconds after the event at most: a directory renamed between the
//! event and its resolution shows its new name. A handle that no longer resolves (the directory is gone and was
//! never cached) gives `?/NAME`: see [`UNRESOLVED_DIR`].

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::fid::Fid;
use super::noise::Exclusions;

/// What stands in for a directory that could not be resolved: a path is then `?/NAME` (never a real absolute
/// path, which always starts with `/`), or `?` alone when even the name is unknown.
pub const UNRESOLVED_DIR: &str = "?";

/// `MAX_HANDLE_SZ` (linux/exportfs.h): the largest handle the kernel encodes.
const MAX_HANDLE_SZ: usize = 128;

/// The suffix `d_path` adds for an unlinked dentry.
const DELETED_SUFFIX: &str = " (deleted)";

/// A filesystem that carries a mark.
#[derive(Debug, Clone)]
pub struct MarkedFs {
    /// `statfs().f_fsid`: what fanotify reports in every FID record.
    pub fsid: [i32; 2],
    /// `st_dev` of its mount point (the `file.dev` of its events).
    pub dev: u64,
    /// Filesystem type (picks the handle layout for inode numbers).
    pub fstype: String,
    /// The mount used to resolve handles.
    pub mount_point: PathBuf,
    mount_cpath: CString,
    /// False when only a subtree is mounted (handles outside it resolve partially).
    pub whole: bool,
}

impl MarkedFs {
    /// Describes a marked filesystem; `None` if the mount point contains a NUL byte.
    pub fn new(fsid: [i32; 2], dev: u64, fstype: String, mount_point: PathBuf, whole: bool) -> Option<Self> {
        let mount_cpath = CString::new(mount_point.as_os_str().as_bytes()).ok()?;
        Some(MarkedFs { fsid, dev, fstype, mount_point, mount_cpath, whole })
    }
}

/// A cached directory.
#[derive(Debug, Clone)]
struct CachedDir {
    path: String,
    /// The directory is, or lies under, an excluded prefix: every event in it is excluded.
    excluded: bool,
}

/// Counters for the final log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct ResolveStats {
    /// Directory lookups answered from the cache.
    pub hits: u64,
    /// Directory lookups that needed `open_by_handle_at`.
    pub misses: u64,
    /// Lookups that failed (unknown filesystem, stale handle, shadowed mount).
    pub failures: u64,
}

/// Resolves directory handles to paths, with a bounded cache.
#[derive(Debug)]
pub struct Resolver {
    filesystems: Vec<MarkedFs>,
    cache: HashMap<Box<[u8]>, CachedDir>,
    capacity: usize,
    key: Vec<u8>,
    /// Counters.
    pub stats: ResolveStats,
}

/// What a directory lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirPath<'a> {
    /// The directory's path, and whether it is excluded as a whole.
    Known {
        /// Absolute path.
        path: &'a str,
        /// Under an excluded prefix.
        excluded: bool,
    },
    /// Not resolvable.
    Unknown,
}

impl Resolver {
    /// A resolver for `filesystems`, caching at most `capacity` directories.
    pub fn new(filesystems: Vec<MarkedFs>, capacity: usize) -> Self {
        Resolver {
            filesystems,
            cache: HashMap::with_capacity(capacity.min(4096)),
            capacity: capacity.max(1),
            key: Vec::with_capacity(16 + MAX_HANDLE_SZ),
            stats: ResolveStats::default(),
        }
    }

    /// The marked filesystems.
    pub fn filesystems(&self) -> &[MarkedFs] {
        &self.filesystems
    }

    /// Adds a filesystem marked after start (a new mount); replaces one with the same fsid.
    pub fn add_filesystem(&mut self, fs: MarkedFs) {
        self.filesystems.retain(|f| f.fsid != fs.fsid);
        self.filesystems.push(fs);
    }

    /// Follows the mount table: each filesystem resolves through the mount `reachable` lists for its `st_dev`
    /// (`(st_dev, mount point, whole)`); one no longer listed was unmounted and is forgotten with the cache.
    pub fn refresh_mounts(&mut self, reachable: &[(u64, PathBuf, bool)]) {
        let before = self.filesystems.len();
        self.filesystems.retain_mut(|f| {
            let Some((_, path, whole)) = reachable.iter().find(|(dev, _, _)| *dev == f.dev) else { return false };
            if *path != f.mount_point
                && let Some(moved) = MarkedFs::new(f.fsid, f.dev, f.fstype.clone(), path.clone(), *whole)
            {
                *f = moved;
            }
            true
        });
        if self.filesystems.len() != before {
            self.cache.clear();
        }
    }

    /// The marked filesystem with `fsid`.
    pub fn filesystem(&self, fsid: [i32; 2]) -> Option<&MarkedFs> {
        self.filesystems.iter().find(|f| f.fsid == fsid)
    }

    /// The path of the directory `dir` names (its handle; the name is not used), from the cache or the kernel.
    pub fn dir_path(&mut self, dir: &Fid<'_>, exclusions: &Exclusions) -> DirPath<'_> {
        dir.key_into(&mut self.key);
        if self.cache.contains_key(self.key.as_slice()) {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
            let Some(path) = self.resolve_uncached(dir) else {
                self.stats.failures += 1;
                return DirPath::Unknown;
            };
            if self.cache.len() >= self.capacity {
                self.evict_one();
            }
            let excluded = exclusions.under_prefix(&path);
            self.cache.insert(self.key.clone().into_boxed_slice(), CachedDir { path, excluded });
        }
        match self.cache.get(self.key.as_slice()) {
            Some(c) => DirPath::Known { path: &c.path, excluded: c.excluded },
            None => DirPath::Unknown,
        }
    }

    /// Resolves any handle (a file's own FID too) without caching it.
    pub fn resolve_uncached(&self, fid: &Fid<'_>) -> Option<String> {
        let fs = self.filesystem(fid.fsid)?;
        let mount = open_mount(fs).ok()?;
        let fd = open_by_handle(&mount, fid).ok()?;
        let link = nix::fcntl::readlink(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str()).ok()?;
        let mut path = String::from_utf8_lossy(link.as_bytes()).into_owned();
        if !path.starts_with('/') {
            return None;
        }
        if path.ends_with(DELETED_SUFFIX) {
            path.truncate(path.len() - DELETED_SUFFIX.len());
        }
        Some(path)
    }

    /// Puts `path` in the cache for directory `dir` (tests without a kernel to resolve against).
    #[cfg(test)]
    pub(crate) fn seed(&mut self, dir: &Fid<'_>, path: &str, exclusions: &Exclusions) {
        let mut key = Vec::new();
        dir.key_into(&mut key);
        let excluded = exclusions.under_prefix(path);
        self.cache.insert(key.into_boxed_slice(), CachedDir { path: path.to_owned(), excluded });
    }

    /// Drops `path` and everything cached below it (the directory was renamed or deleted).
    pub fn forget_tree(&mut self, path: &str) {
        self.cache
            .retain(|_, c| !(c.path.strip_prefix(path).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))));
    }

    /// Drops the whole cache (events may have been lost, so renames may have been missed).
    pub fn clear(&mut self) {
        self.cache.clear();
    }

    /// Number of cached directories.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    fn evict_one(&mut self) {
        // HashMap order is arbitrary: this is random replacement, which needs no bookkeeping per hit.
        if let Some(k) = self.cache.keys().next().cloned() {
            self.cache.remove(&k);
        }
    }

    /// The inode number inside `fid`'s handle, for filesystems whose handle layout is known.
    pub fn inode_of(&self, fid: &Fid<'_>) -> Option<u64> {
        let fs = self.filesystem(fid.fsid)?;
        inode_from_handle(&fs.fstype, fid.handle_type, fid.handle)
    }
}

/// Opens the mount point of `fs` and checks it is still that filesystem.
///
/// Not `O_PATH`: `open_by_handle_at` refuses an `O_PATH` mount descriptor with EBADF (verified on 6.18).
fn open_mount(fs: &MarkedFs) -> Result<OwnedFd, Errno> {
    let fd = nix::fcntl::open(
        fs.mount_cpath.as_c_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let st = nix::sys::stat::fstat(&fd)?;
    if st.st_dev != fs.dev {
        // Another filesystem is mounted on top now: its handles would decode on the wrong filesystem.
        return Err(Errno::EXDEV);
    }
    Ok(fd)
}

/// `struct file_handle` followed by room for the largest handle, aligned like the kernel's struct.
#[repr(C)]
struct HandleBuf {
    hdr: libc::file_handle,
    f_handle: [u8; MAX_HANDLE_SZ],
}

/// `open_by_handle_at(mount, handle, O_PATH | O_CLOEXEC)`.
fn open_by_handle(mount: &OwnedFd, fid: &Fid<'_>) -> Result<OwnedFd, Errno> {
    if fid.handle.len() > MAX_HANDLE_SZ {
        return Err(Errno::EOVERFLOW);
    }
    let mut buf = HandleBuf {
        hdr: libc::file_handle { handle_bytes: fid.handle.len() as u32, handle_type: fid.handle_type, f_handle: [] },
        f_handle: [0; MAX_HANDLE_SZ],
    };
    buf.f_handle[..fid.handle.len()].copy_from_slice(fid.handle);
    let ptr = (&raw mut buf).cast::<libc::file_handle>();
    // SAFETY: `ptr` points to a live, properly aligned `struct file_handle` whose `handle_bytes` (<= 128, checked
    // above) bytes of `f_handle` follow it inside the same allocation (`HandleBuf`, repr(C), field at offset 8);
    // `mount` is an open descriptor. The kernel only reads the handle.
    let fd = unsafe { libc::open_by_handle_at(mount.as_raw_fd(), ptr, libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: open_by_handle_at just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The inode number encoded in a handle, for the layouts known here (`None` for others: handles are opaque).
///
/// - ext2/3/4 and xfs with 32-bit inodes: `FILEID_INO32_GEN[_PARENT]` (1, 2): `u32 ino, u32 gen, ...`.
/// - xfs with 64-bit inodes: type `0x81`/`0x82`: `u64 ino, u32 gen, ...`.
/// - tmpfs (`shmem_encode_fh`): type 1: `u32 gen, u32 ino_lo, u32 ino_hi`.
/// - btrfs: `FILEID_BTRFS_*` (0x4d-0x4f): `u64 objectid, ...` (the objectid is `st_ino`).
pub fn inode_from_handle(fstype: &str, handle_type: i32, h: &[u8]) -> Option<u64> {
    let u32_at = |i: usize| h.get(i..i + 4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes);
    let u64_at = |i: usize| h.get(i..i + 8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes);
    match (fstype, handle_type) {
        ("ext2" | "ext3" | "ext4" | "xfs", 1 | 2) => u32_at(0).map(u64::from),
        ("xfs", 0x81 | 0x82) => u64_at(0),
        ("tmpfs", 1) => Some(u64::from(u32_at(4)?) | (u64::from(u32_at(8)?) << 32)),
        ("btrfs", 0x4d..=0x4f) => u64_at(0),
        _ => None,
    }
}

/// Joins a directory path and an entry name; `.` (the directory itself) gives the directory.
pub fn join(dir: &str, name: &[u8]) -> String {
    if name.is_empty() || name == b"." {
        return dir.to_owned();
    }
    let name = String::from_utf8_lossy(name);
    let mut out = String::with_capacity(dir.len() + 1 + name.len());
    out.push_str(dir);
    if !dir.ends_with('/') {
        out.push('/');
    }
    out.push_str(&name);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_handles_root_dot_and_non_utf8() {
        assert_eq!(join("/", b"etc"), "/etc");
        assert_eq!(join("/tmp", b"a"), "/tmp/a");
        assert_eq!(join("/tmp", b"."), "/tmp");
        assert_eq!(join(UNRESOLVED_DIR, b"a"), "?/a");
        assert_eq!(join("/tmp", b"\xffx"), "/tmp/\u{fffd}x");
    }

    #[test]
    fn inode_layouts() {
        let mut ext = Vec::new();
        ext.extend_from_slice(&1234u32.to_ne_bytes());
        ext.extend_from_slice(&99u32.to_ne_bytes());
        assert_eq!(inode_from_handle("ext4", 1, &ext), Some(1234));
        let mut shm = Vec::new();
        shm.extend_from_slice(&99u32.to_ne_bytes());
        shm.extend_from_slice(&5u32.to_ne_bytes());
        shm.extend_from_slice(&1u32.to_ne_bytes());
        assert_eq!(inode_from_handle("tmpfs", 1, &shm), Some((1 << 32) | 5));
        assert_eq!(inode_from_handle("tmpfs", 1, &shm[..8]), None, "cut short");
        assert_eq!(inode_from_handle("vfat", 1, &ext), None, "unknown layout");
    }

    #[test]
    fn cache_forgets_a_renamed_tree_and_stays_bounded() {
        let mut r = Resolver::new(Vec::new(), 2);
        let x = Exclusions::default();
        let fid = |h: &'static [u8]| Fid { fsid: [1, 2], handle_type: 1, handle: h, name: None };
        // Seed the cache by hand (no filesystem is marked in a unit test).
        for (h, p) in [(&b"aaaaaaaa"[..], "/d"), (&b"bbbbbbbb"[..], "/d/sub"), (&b"cccccccc"[..], "/dx")] {
            let mut key = Vec::new();
            fid(h).key_into(&mut key);
            if r.cache.len() >= r.capacity {
                r.evict_one();
            }
            r.cache.insert(key.into_boxed_slice(), CachedDir { path: p.into(), excluded: false });
        }
        assert_eq!(r.cached(), 2, "bounded");
        r.capacity = 8;
        for (h, p) in [(&b"aaaaaaaa"[..], "/d"), (&b"bbbbbbbb"[..], "/d/sub"), (&b"cccccccc"[..], "/dx")] {
            let mut key = Vec::new();
            fid(h).key_into(&mut key);
            r.cache.insert(key.into_boxed_slice(), CachedDir { path: p.into(), excluded: false });
        }
        r.forget_tree("/d");
        assert_eq!(r.cached(), 1);
        assert!(matches!(r.dir_path(&fid(b"cccccccc"), &x), DirPath::Known { path: "/dx", .. }));
        assert_eq!(r.dir_path(&fid(b"aaaaaaaa"), &x), DirPath::Unknown, "no filesystem to resolve it on");
        assert_eq!((r.stats.hits, r.stats.misses, r.stats.failures), (1, 1, 1));
    }
}
