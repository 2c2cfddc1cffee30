//! The notification group: one fanotify group of class `FAN_CLASS_NOTIF` that reports file handles and names
//! instead of open descriptors, with a filesystem mark on every local filesystem.
//!
//! Init flags: `FAN_REPORT_DFID_NAME_TARGET` (parent directory handle + entry name + the object's own handle, also
//! for directory-entry events) so that one `FAN_RENAME` event carries both the old and the new location. A kernel
//! that refuses it (before 5.17) gets `FAN_REPORT_DFID_NAME | FAN_REPORT_FID` with `FAN_MOVED_FROM`/`FAN_MOVED_TO`,
//! which the reader pairs into one rename. FID reporting cannot be combined with `FAN_CLASS_CONTENT`, so permission
//! events need a second, descriptor-based group beside this one ([`super::perm`]); nothing here assumes it is alone.
//!
//! The queue is the kernel's default (16,384 events): `FAN_UNLIMITED_QUEUE` would let a storm pin unbounded kernel
//! memory. An overflow is reported by the kernel as one `FAN_Q_OVERFLOW` event and counted as a loss.
//!
//! Marks live as long as the group's descriptor: dropping [`NotifyGroup`] removes them all.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::AT_FDCWD;
use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};
use ringwatch_core::Activity;

/// File events every mark asks for (directory-entry and rename bits are added per [`RenameReporting`]).
pub const FILE_EVENTS: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_ATTRIB
    | libc::FAN_MODIFY
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_OPEN
    | libc::FAN_OPEN_EXEC;

/// The events that happen to a file itself (not to a directory's entries).
const INODE_EVENTS: u64 =
    libc::FAN_ATTRIB | libc::FAN_MODIFY | libc::FAN_CLOSE_WRITE | libc::FAN_OPEN | libc::FAN_OPEN_EXEC;

/// How renames are reported by this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameReporting {
    /// One `FAN_RENAME` event with the old and the new directory and name (Linux 5.17+).
    Rename,
    /// `FAN_MOVED_FROM` then `FAN_MOVED_TO`, paired by the reader (no cookie: by pid and adjacency).
    MovedPair,
}

impl RenameReporting {
    /// For `probe` and logs.
    pub fn describe(self) -> &'static str {
        match self {
            RenameReporting::Rename => "FAN_RENAME",
            RenameReporting::MovedPair => "MOVED_FROM/MOVED_TO pairs (no FAN_RENAME)",
        }
    }
}

/// The notification group.
#[derive(Debug)]
pub struct NotifyGroup {
    fan: Fanotify,
    /// How this kernel reports renames.
    pub renames: RenameReporting,
    /// The file-event bits the marks ask for ([`FILE_EVENTS`] unless [`NotifyGroup::monitor_only`] narrowed them).
    file_events: u64,
    /// Whether renames are asked for.
    watch_renames: bool,
}

impl NotifyGroup {
    /// Creates the group: `FAN_REPORT_DFID_NAME_TARGET` when the kernel accepts it, else `DFID_NAME | FID`.
    ///
    /// EPERM means the agent lacks CAP_SYS_ADMIN; EINVAL on both attempts means a kernel without FID reporting
    /// (before 5.9); ENOSYS a kernel without fanotify.
    pub fn open() -> Result<Self, Errno> {
        let base = libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
        let event_flags = EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE;
        match Fanotify::init(InitFlags::from_bits_retain(base | libc::FAN_REPORT_DFID_NAME_TARGET), event_flags) {
            Ok(fan) => Ok(NotifyGroup::with(fan, RenameReporting::Rename)),
            Err(Errno::EINVAL) => {
                let flags = base | libc::FAN_REPORT_DFID_NAME | libc::FAN_REPORT_FID;
                let fan = Fanotify::init(InitFlags::from_bits_retain(flags), event_flags)?;
                Ok(NotifyGroup::with(fan, RenameReporting::MovedPair))
            }
            Err(e) => Err(e),
        }
    }

    fn with(fan: Fanotify, renames: RenameReporting) -> NotifyGroup {
        NotifyGroup { fan, renames, file_events: FILE_EVENTS, watch_renames: true }
    }

    /// Narrows the marks (placed after this call) to the kernel events behind `activities`: `create`, `delete`,
    /// `rename`, `write` (`FAN_MODIFY` and `FAN_CLOSE_WRITE`), `chmod` (`FAN_ATTRIB`), `open`, `exec`
    /// (`FAN_OPEN_EXEC`). Every event not asked for is one the kernel never builds, which is where a file storm's
    /// cost is (see the README's file benchmark).
    pub fn monitor_only(mut self, activities: &[Activity]) -> NotifyGroup {
        let bits = |a: &Activity| match a {
            Activity::Create => libc::FAN_CREATE,
            Activity::Delete => libc::FAN_DELETE,
            Activity::Write => libc::FAN_MODIFY | libc::FAN_CLOSE_WRITE,
            Activity::Chmod => libc::FAN_ATTRIB,
            Activity::Open => libc::FAN_OPEN,
            Activity::Exec => libc::FAN_OPEN_EXEC,
            _ => 0,
        };
        self.file_events = activities.iter().map(bits).fold(0, |m, b| m | b);
        self.watch_renames = activities.contains(&Activity::Rename);
        self
    }

    /// The mask of every filesystem mark: file events, renames, and `FAN_ONDIR` (directories are reported for
    /// create, delete, rename and attribute changes; their opens are dropped by the reader).
    pub fn mask(&self) -> u64 {
        let renames = match (self.watch_renames, self.renames) {
            (false, _) => 0,
            (true, RenameReporting::Rename) => libc::FAN_RENAME,
            (true, RenameReporting::MovedPair) => libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO,
        };
        self.file_events | renames | libc::FAN_ONDIR
    }

    /// Adds a `FAN_MARK_FILESYSTEM` mark on the filesystem `path` is on.
    pub fn mark_filesystem(&self, path: &Path) -> Result<(), Errno> {
        let flags = MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_FILESYSTEM;
        self.fan.mark(flags, MaskFlags::from_bits_retain(self.mask()), AT_FDCWD, Some(path))
    }

    /// Adds an ignore mark on `path` (a file, or a directory and its direct children), surviving modification,
    /// so the kernel does not even queue events about it. Uses `FAN_MARK_IGNORE` (Linux 6.0+, which also covers a
    /// directory's children and subdirectories) and falls back to the older `FAN_MARK_IGNORED_MASK`.
    pub fn ignore(&self, path: &Path, is_dir: bool) -> Result<(), Errno> {
        // Directory-entry events, FAN_ONDIR and FAN_EVENT_ON_CHILD only exist on a directory (ENOTDIR on a file).
        let mask = if is_dir { self.mask() | libc::FAN_EVENT_ON_CHILD } else { self.mask() & INODE_EVENTS };
        let new_api = MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_IGNORE_SURV;
        match self.fan.mark(new_api, MaskFlags::from_bits_retain(mask), AT_FDCWD, Some(path)) {
            Err(Errno::EINVAL) => {
                let old_api = MarkFlags::FAN_MARK_ADD
                    | MarkFlags::FAN_MARK_IGNORED_MASK
                    | MarkFlags::FAN_MARK_IGNORED_SURV_MODIFY;
                let old_mask = mask & !(libc::FAN_ONDIR | libc::FAN_EVENT_ON_CHILD);
                self.fan.mark(old_api, MaskFlags::from_bits_retain(old_mask), AT_FDCWD, Some(path))
            }
            other => other,
        }
    }

    /// Reads queued events into `buf` without blocking: `Err(EAGAIN)` when there are none.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        nix::unistd::read(self.fan.as_fd(), buf)
    }
}

impl AsFd for NotifyGroup {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fan.as_fd()
    }
}
