//! Which filesystems get a `FAN_MARK_FILESYSTEM` mark, from `/proc/self/mountinfo`.
//!
//! One mark per filesystem (superblock), not per mount: a filesystem mark sees every mount of it, bind mounts and
//! other mount namespaces included. Superblocks are told apart by the `major:minor` field of mountinfo, which is
//! the superblock's `s_dev`. Pseudo filesystems (proc, sysfs, cgroup, ...) are skipped by type, because they either
//! cannot report file handles or only produce noise; remote ones because fanotify only sees changes made through
//! this kernel; overlayfs because its handles are not decodable by the upper/lower filesystems (the layers below are
//! marked themselves). Every skip carries its reason for `probe` and the logs.
//!
//! For each marked filesystem one mount point is remembered for path resolution: preferably a mount of the
//! filesystem's root (mountinfo `root` field `/`), shortest path first, so every handle resolves to a full path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Filesystem types never marked, with the reason.
const SKIPPED_TYPES: &[(&str, &str)] = &[
    ("proc", "pseudo filesystem (excluded: /proc)"),
    ("sysfs", "pseudo filesystem (excluded: /sys)"),
    ("cgroup", "pseudo filesystem (cgroup)"),
    ("cgroup2", "pseudo filesystem (cgroup)"),
    ("bpf", "pseudo filesystem (bpffs)"),
    ("tracefs", "pseudo filesystem (tracing)"),
    ("debugfs", "pseudo filesystem (debugging)"),
    ("devpts", "terminals, not files (keystroke domain)"),
    ("mqueue", "pseudo filesystem (POSIX message queues)"),
    ("securityfs", "pseudo filesystem (LSM)"),
    ("pstore", "pseudo filesystem (crash logs)"),
    ("configfs", "pseudo filesystem (configfs)"),
    ("fusectl", "pseudo filesystem (FUSE control)"),
    ("nsfs", "pseudo filesystem (namespaces)"),
    ("autofs", "automounter placeholder"),
    ("binfmt_misc", "pseudo filesystem (binfmt)"),
    ("overlay", "overlayfs: its handles do not decode; the layers below are marked"),
    ("efivarfs", "pseudo filesystem (EFI variables)"),
    ("hugetlbfs", "huge-page memory, not files"),
    ("rpc_pipefs", "pseudo filesystem (NFS RPC)"),
    ("nfsd", "pseudo filesystem (NFS server)"),
    ("selinuxfs", "pseudo filesystem (LSM)"),
    ("devtmpfs", "device nodes: every write to /dev/null or a tty would be an event"),
];

/// Filesystem types whose data lives elsewhere: fanotify would see only this host's own accesses.
const REMOTE_TYPES: &[&str] = &["nfs", "nfs4", "cifs", "smb3", "ceph", "9p", "afs", "glusterfs", "lustre", "virtiofs"];

/// Mount points under these directories are not marked (they hold pseudo filesystems or runtime noise only).
pub const EXCLUDED_MOUNT_PREFIXES: &[&str] = &["/proc", "/sys"];

/// One line of mountinfo, the fields this module uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountLine {
    /// `major:minor` of the superblock, as `(major, minor)`.
    pub dev: (u32, u32),
    /// The path inside the filesystem this mount shows (`/` for a mount of the whole filesystem).
    pub root: String,
    /// Where it is mounted, unescaped.
    pub mount_point: PathBuf,
    /// Filesystem type (`ext4`, `tmpfs`, `fuse.sshfs`, ...).
    pub fstype: String,
}

/// Parses `/proc/self/mountinfo` text; lines that do not parse are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountLine> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountLine> {
    // id parent maj:min root mountpoint opts [optional...] - fstype source superopts
    let (left, right) = line.split_once(" - ")?;
    let mut f = left.split(' ');
    let _id = f.next()?;
    let _parent = f.next()?;
    let (maj, min) = f.next()?.split_once(':')?;
    let root = unescape(f.next()?);
    let mount_point = PathBuf::from(unescape(f.next()?));
    let fstype = right.split(' ').next()?.to_owned();
    Some(MountLine { dev: (maj.parse().ok()?, min.parse().ok()?), root, mount_point, fstype })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A filesystem chosen for a mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// `major:minor` of the superblock.
    pub dev: (u32, u32),
    /// Filesystem type.
    pub fstype: String,
    /// Its mounts, best first: `(mount point, whole)`, where `whole` is false when only a subtree of the filesystem
    /// is mounted there (handles outside it cannot be resolved to a path). The first one that is not covered by a
    /// later mount is used to mark it and to resolve its handles.
    pub mounts: Vec<(PathBuf, bool)>,
}

/// A filesystem not marked, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Filesystem type.
    pub fstype: String,
    /// One of its mount points.
    pub mount_point: PathBuf,
    /// Why it is not marked.
    pub reason: String,
}

/// Why a filesystem type is never marked, or `None` when it may be.
pub fn skip_reason(fstype: &str) -> Option<String> {
    if let Some((_, why)) = SKIPPED_TYPES.iter().find(|(t, _)| *t == fstype) {
        return Some((*why).to_owned());
    }
    if REMOTE_TYPES.contains(&fstype) {
        return Some("remote filesystem: fanotify sees only this host's accesses".to_owned());
    }
    if fstype == "fuse" || fstype.starts_with("fuse.") || fstype == "fuseblk" {
        return Some("FUSE: file handles are optional and remote changes are invisible".to_owned());
    }
    None
}

fn under_excluded_prefix(p: &Path) -> bool {
    EXCLUDED_MOUNT_PREFIXES.iter().any(|x| p.starts_with(x))
}

/// Splits mounts into one candidate per superblock and the skipped rest (one entry per skipped superblock).
pub fn plan(mounts: &[MountLine]) -> (Vec<Candidate>, Vec<Skipped>) {
    let mut by_dev: BTreeMap<(u32, u32), Vec<&MountLine>> = BTreeMap::new();
    for m in mounts {
        by_dev.entry(m.dev).or_default().push(m);
    }
    let mut candidates = Vec::new();
    let mut skipped = Vec::new();
    for (dev, lines) in by_dev {
        let first = lines[0];
        if let Some(reason) = skip_reason(&first.fstype) {
            skipped.push(Skipped { fstype: first.fstype.clone(), mount_point: first.mount_point.clone(), reason });
            continue;
        }
        let mut visible: Vec<&MountLine> =
            lines.iter().copied().filter(|m| !under_excluded_prefix(&m.mount_point)).collect();
        if visible.is_empty() {
            let reason = format!("mounted only under {}", EXCLUDED_MOUNT_PREFIXES.join(" or "));
            skipped.push(Skipped { fstype: first.fstype.clone(), mount_point: first.mount_point.clone(), reason });
            continue;
        }
        visible.sort_by_key(|m| (m.root != "/", m.mount_point.as_os_str().len()));
        candidates.push(Candidate {
            dev,
            fstype: first.fstype.clone(),
            mounts: visible.iter().map(|m| (m.mount_point.clone(), m.root == "/")).collect(),
        });
    }
    (candidates, skipped)
}

/// Reads and plans the current mount table.
pub fn current() -> std::io::Result<(Vec<Candidate>, Vec<Skipped>)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(plan(&parse_mountinfo(&text)))
}

/// A short summary of skipped filesystems for `probe`: `proc, sysfs, cgroup2, ... (12)`.
pub fn skipped_summary(skipped: &[Skipped]) -> String {
    let mut types: Vec<&str> = skipped.iter().map(|s| s.fstype.as_str()).collect();
    types.sort_unstable();
    types.dedup();
    format!("{} ({})", types.join(", "), skipped.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334492k
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 27 254:0 /srv/data /mnt/data\\040disk rw shared:3 - ext4 /dev/vda rw
51 27 0:40 /sub /mnt/part rw - tmpfs tmpfs rw
52 27 0:41 / /mnt/remote rw - nfs4 srv:/x rw
53 27 0:42 / /mnt/ovl rw - overlay overlay rw,lowerdir=/a
";

    #[test]
    fn mountinfo_lines_parse_with_escapes_and_optional_fields() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 11);
        let data = &m[7];
        assert_eq!(data.dev, (254, 0));
        assert_eq!(data.root, "/srv/data");
        assert_eq!(data.mount_point, PathBuf::from("/mnt/data disk"));
        assert_eq!(data.fstype, "ext4");
        assert!(parse_mountinfo("garbage\n1 2 x / / - ext4").is_empty());
    }

    #[test]
    fn one_candidate_per_superblock_preferring_its_root_mount() {
        let (c, s) = plan(&parse_mountinfo(SAMPLE));
        let names: Vec<(String, &str, bool)> =
            c.iter().map(|c| (c.mounts[0].0.display().to_string(), c.fstype.as_str(), c.mounts[0].1)).collect();
        assert_eq!(
            names,
            vec![
                ("/dev/shm".to_owned(), "tmpfs", true),
                ("/mnt/part".to_owned(), "tmpfs", false),
                ("/".to_owned(), "ext4", true),
            ]
        );
        let reasons: Vec<(&str, &str)> = s.iter().map(|s| (s.fstype.as_str(), s.reason.as_str())).collect();
        assert!(reasons.iter().any(|(t, r)| *t == "proc" && r.contains("pseudo")));
        assert!(reasons.iter().any(|(t, r)| *t == "tmpfs" && r.contains("mounted only under")), "{reasons:?}");
        assert!(reasons.iter().any(|(t, r)| *t == "nfs4" && r.contains("remote")));
        assert!(reasons.iter().any(|(t, r)| *t == "overlay" && r.contains("overlayfs")));
        assert!(reasons.iter().any(|(t, r)| *t == "devtmpfs" && r.contains("/dev/null")));
        assert_eq!(skipped_summary(&s), "cgroup2, devtmpfs, nfs4, overlay, proc, sysfs, tmpfs (7)");
        let root = c.iter().find(|c| c.fstype == "ext4").expect("ext4");
        assert_eq!(root.mounts, vec![(PathBuf::from("/"), true), (PathBuf::from("/mnt/data disk"), false)]);
    }

    #[test]
    fn fuse_and_remote_types_are_skipped() {
        assert!(skip_reason("fuse.sshfs").is_some());
        assert!(skip_reason("cifs").is_some());
        assert!(skip_reason("ext4").is_none());
        assert!(skip_reason("xfs").is_none());
        assert!(skip_reason("btrfs").is_none());
        assert!(skip_reason("tmpfs").is_none());
    }
}
