//! Names for the identifiers kernel backends report: cgroup v2 ids (the cgroup directory's inode number) become
//! paths as `/proc/PID/cgroup` shows them, tty device numbers become `pts/N` / `ttyN`, and NUL-padded C strings
//! (`comm`) become strings. Shared by every eBPF backend, which all record the raw values in the kernel and name
//! them here.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringwatch_core::Event;
use ringwatch_core::proc_table::{container_id_from_cgroup, tty_name};

use crate::probe;

/// Least time between two scans of the cgroup2 tree for an unknown cgroup id.
const CGROUP_RESCAN: Duration = Duration::from_secs(1);

/// The terminal of a `(major, minor)` device number, `None` for 0 (no controlling terminal).
pub(crate) fn tty(major: u32, minor: u32) -> Option<String> {
    if major == 0 { None } else { tty_name(major, minor) }
}

/// The string in a NUL-padded C char array (up to the first NUL, lossy UTF-8).
pub(crate) fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// cgroup v2 id -> path (as /proc/PID/cgroup's `0::` line shows it), from the inode numbers of the cgroup2 tree.
/// An unknown id triggers a rescan at most every [`CGROUP_RESCAN`].
#[derive(Debug)]
pub(crate) struct CgroupPaths {
    root: Option<PathBuf>,
    by_id: HashMap<u64, String>,
    last_scan: Option<Instant>,
}

impl CgroupPaths {
    pub(crate) fn new() -> Self {
        CgroupPaths { root: probe::cgroup2_mount(), by_id: HashMap::new(), last_scan: None }
    }

    /// The path of cgroup `id`, `None` when it is not (or no longer) in the tree.
    pub(crate) fn resolve(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.by_id.get(&id) {
            return Some(p.clone());
        }
        if self.last_scan.is_some_and(|t| t.elapsed() < CGROUP_RESCAN) {
            return None;
        }
        self.last_scan = Some(Instant::now());
        let root = self.root.clone()?;
        self.by_id.clear();
        scan_cgroups(&root, &root, &mut self.by_id);
        self.by_id.get(&id).cloned()
    }

    /// Sets the event's process cgroup and container id from cgroup `id` (nothing for 0: the record had none).
    pub(crate) fn annotate(&mut self, ev: &mut Event, id: u64) {
        if id != 0 {
            ev.process.cgroup = self.resolve(id);
            ev.process.container_id = ev.process.cgroup.as_deref().and_then(container_id_from_cgroup);
        }
    }
}

fn scan_cgroups(root: &Path, dir: &Path, out: &mut HashMap<u64, String>) {
    let Ok(meta) = std::fs::symlink_metadata(dir) else { return };
    let rel = dir.strip_prefix(root).map(|r| format!("/{}", r.to_string_lossy())).unwrap_or_else(|_| "/".into());
    out.insert(meta.ino(), rel);
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            scan_cgroups(root, &entry.path(), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_cgroup_and_ttys_have_names() {
        let Some(root) = probe::cgroup2_mount() else {
            eprintln!("skipping: no cgroup2 mount");
            return;
        };
        let id = std::fs::metadata(&root).expect("cgroup2 root").ino();
        assert_eq!(CgroupPaths::new().resolve(id).as_deref(), Some("/"));
        assert_eq!(tty(136, 3).as_deref(), Some("pts/3"));
        assert_eq!(tty(0, 0), None);
    }
}
