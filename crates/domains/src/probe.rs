//! Host facts every backend needs before it starts: privilege, BTF, tracefs, bpffs, the cgroup v2 mount.
//!
//! Backends call these in their own `probe()`; `ringwatch probe` prints the result. [`ensure_mounts`] mounts
//! tracefs and bpffs when a fresh machine has them unmounted (DESIGN.md §2), which libbpf needs to attach
//! tracepoints and to pin maps.

use std::path::{Path, PathBuf};

/// Where tracefs is expected.
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Where bpffs is expected.
pub const BPFFS: &str = "/sys/fs/bpf";
/// The kernel's own BTF, needed for CO-RE.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// True when the agent runs with effective uid 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True when the kernel exposes its BTF (CO-RE relocations need it).
pub fn has_kernel_btf() -> bool {
    Path::new(VMLINUX_BTF).exists()
}

/// The mount point of a filesystem type, from /proc/self/mountinfo.
pub fn mount_point_of(fstype: &str) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        // Fields: id parent maj:min root mountpoint opts [optional...] - fstype source superopts
        let (left, right) = line.split_once(" - ")?;
        let ty = right.split(' ').next()?;
        (ty == fstype).then(|| left.split(' ').nth(4).map(PathBuf::from)).flatten()
    })
}

/// The cgroup v2 mount (on this machine kind `/sys/fs/cgroup/unified`, never assume `/sys/fs/cgroup`).
pub fn cgroup2_mount() -> Option<PathBuf> {
    mount_point_of("cgroup2")
}

/// True when tracefs is mounted somewhere.
pub fn tracefs_mounted() -> bool {
    mount_point_of("tracefs").is_some()
}

/// Whether a tracepoint `group/name` exists (needs tracefs).
pub fn tracepoint_exists(group: &str, name: &str) -> bool {
    let Some(root) = mount_point_of("tracefs") else { return false };
    root.join("events").join(group).join(name).exists()
}

/// True when the kernel was built with kprobes (absent on this machine kind: DESIGN.md §2).
pub fn has_kprobes() -> bool {
    mount_point_of("tracefs").is_some_and(|root| root.join("kprobe_events").exists())
}

/// Mounts tracefs at [`TRACEFS`] and bpffs at [`BPFFS`] when they are not mounted anywhere. Returns what it did,
/// one line each, for the log. Errors are returned as text: a failed mount is reported by the backend that needs it.
pub fn ensure_mounts() -> Vec<String> {
    let mut done = Vec::new();
    for (fstype, target) in [("tracefs", TRACEFS), ("bpf", BPFFS)] {
        if mount_point_of(fstype).is_some() {
            continue;
        }
        let result = nix::mount::mount(
            Some(fstype),
            target,
            Some(fstype),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOEXEC,
            None::<&str>,
        );
        done.push(match result {
            Ok(()) => format!("mounted {fstype} at {target}"),
            Err(e) => format!("could not mount {fstype} at {target}: {e}"),
        });
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_is_found_in_mountinfo() {
        assert_eq!(mount_point_of("proc").as_deref(), Some(Path::new("/proc")));
        assert_eq!(mount_point_of("no-such-fs"), None);
    }
}
