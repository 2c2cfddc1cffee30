//! `ringwatch sandbox diff`: what a sandboxed command changed, read from the overlay's upper layers.
//!
//! The upper layer of an overlay holds only what was written, in overlayfs's own encoding; each entry is compared
//! with the real directory (the lower layer) as it is now:
//!
//! | in upper                                        | lower at that path      | reported                         |
//! |-------------------------------------------------|-------------------------|----------------------------------|
//! | char device 0:0 (whiteout), or a file with      | exists                  | `deleted` (type of what was)     |
//! | `trusted.overlay.whiteout`                      | missing (or hidden)     | nothing (no visible change)      |
//! | directory with `trusted.overlay.opaque=y`       | exists                  | `replaced` (children: `created`) |
//! | directory                                       | missing (or hidden)     | `created`, children `created`    |
//! | directory                                       | directory               | `metadata` if mode/owner differ  |
//! | file, symlink, other                            | missing (or hidden)     | `created` (with size)            |
//! | file, symlink, other                            | another type            | `replaced`                       |
//! | file with `trusted.overlay.metacopy`            | same type               | `metadata` (metacopy)            |
//! | file                                            | file                    | `modified` if size or bytes differ, else `metadata` if mode, owner or mtime differ, else nothing (copied up unchanged) |
//! | symlink                                         | symlink                 | `modified` if the target differs |
//!
//! "Hidden" means below a created or replaced directory: the lower entries there are invisible in the sandbox.
//! The comparison is against the real directory now, so a change made to it outside the sandbox since then can
//! show up (for example a file deleted outside is `created` again). Entries are sorted by path bytes, parents
//! before children, so the output is stable. Reading `trusted.*` xattrs needs CAP_SYS_ADMIN (root).

use std::fmt::Write as _;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::state::Layer;

/// What happened to one path.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// New in the sandbox.
    Created,
    /// Contents changed (file bytes, symlink target).
    Modified,
    /// Only mode, owner or mtime changed.
    Metadata,
    /// Removed in the sandbox.
    Deleted,
    /// Removed and recreated as a new directory (opaque) or as another type of object.
    Replaced,
}

impl ChangeKind {
    fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Modified => "modified",
            ChangeKind::Metadata => "metadata",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Replaced => "replaced",
        }
    }
}

/// The type of a file system object.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ObjectType {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// FIFO, socket or device.
    Other,
}

impl ObjectType {
    fn of(meta: &Metadata) -> ObjectType {
        let t = meta.file_type();
        if t.is_file() {
            ObjectType::File
        } else if t.is_dir() {
            ObjectType::Dir
        } else if t.is_symlink() {
            ObjectType::Symlink
        } else {
            ObjectType::Other
        }
    }
}

/// One change, as printed (`--json` prints exactly these fields).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The sandbox.
    pub sandbox: String,
    /// The sandboxed (real) directory.
    pub dir: PathBuf,
    /// The absolute path as CMD saw it.
    pub path: PathBuf,
    /// The path relative to `dir` (`.` for the directory itself).
    pub rel: PathBuf,
    /// What happened.
    pub change: ChangeKind,
    /// What is there now (for `deleted`: what the sandbox deleted).
    #[serde(rename = "type")]
    pub object: ObjectType,
    /// Size in bytes of a created or modified regular file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// For `replaced`: the type of the real object at that path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub was: Option<ObjectType>,
    /// For `metadata`: which attributes differ (`mode`, `owner`, `mtime`, `metacopy`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<&'static str>,
}

/// The changes under one layer, sorted.
pub fn layer_changes(sandbox: &str, layer: &Layer) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    if !layer.upper.is_dir() {
        return Ok(out);
    }
    let mut walker = Walker { sandbox, layer, out: &mut out };
    walker.root().with_context(|| format!("reading the upper layer {}", layer.upper.display()))?;
    Ok(out)
}

struct Walker<'a> {
    sandbox: &'a str,
    layer: &'a Layer,
    out: &'a mut Vec<Change>,
}

impl Walker<'_> {
    fn push(&mut self, rel: &Path, change: ChangeKind, upper: &Metadata, lower: Option<&Metadata>) {
        let object = ObjectType::of(upper);
        self.out.push(Change {
            sandbox: self.sandbox.to_owned(),
            dir: self.layer.dir.clone(),
            path: if rel.as_os_str().is_empty() { self.layer.dir.clone() } else { self.layer.dir.join(rel) },
            rel: if rel.as_os_str().is_empty() { PathBuf::from(".") } else { rel.to_owned() },
            change,
            object,
            size: (object == ObjectType::File && matches!(change, ChangeKind::Created | ChangeKind::Modified))
                .then_some(upper.len()),
            was: lower.filter(|_| change == ChangeKind::Replaced).map(ObjectType::of),
            fields: Vec::new(),
        });
    }

    /// The overlay's root: its attributes are the upper root's, so a chmod of the directory itself shows here.
    fn root(&mut self) -> io::Result<()> {
        let upper = fs::symlink_metadata(&self.layer.upper)?;
        if let Ok(lower) = fs::symlink_metadata(&self.layer.dir) {
            let fields = attribute_changes(&upper, &lower, false);
            if !fields.is_empty() {
                self.push(Path::new(""), ChangeKind::Metadata, &upper, Some(&lower));
                if let Some(last) = self.out.last_mut() {
                    last.fields = fields;
                }
            }
        }
        self.dir(Path::new(""), true)
    }

    /// Walks `upper/rel`; `lower_visible` is false below a created or replaced directory.
    fn dir(&mut self, rel: &Path, lower_visible: bool) -> io::Result<()> {
        let mut names: Vec<_> =
            fs::read_dir(self.layer.upper.join(rel))?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<_>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let rel = rel.join(&name);
            let upper_path = self.layer.upper.join(&rel);
            let upper = fs::symlink_metadata(&upper_path)?;
            let lower_path = self.layer.dir.join(&rel);
            let lower = if lower_visible { fs::symlink_metadata(&lower_path).ok() } else { None };
            if is_whiteout(&upper_path, &upper) {
                // A whiteout over nothing (the real entry is gone too, or hidden anyway) changes nothing visible.
                if let Some(l) = &lower {
                    self.out.push(Change {
                        sandbox: self.sandbox.to_owned(),
                        dir: self.layer.dir.clone(),
                        path: lower_path,
                        rel,
                        change: ChangeKind::Deleted,
                        object: ObjectType::of(l),
                        size: None,
                        was: None,
                        fields: Vec::new(),
                    });
                }
                continue;
            }
            if upper.is_dir() {
                let opaque = ["trusted.overlay.opaque", "user.overlay.opaque"]
                    .iter()
                    .any(|name| xattr(&upper_path, name).is_some_and(|v| v == b"y"));
                match &lower {
                    Some(l) if l.is_dir() && !opaque => {
                        let fields = attribute_changes(&upper, l, false);
                        if !fields.is_empty() {
                            self.push(&rel, ChangeKind::Metadata, &upper, Some(l));
                            if let Some(last) = self.out.last_mut() {
                                last.fields = fields;
                            }
                        }
                        self.dir(&rel, true)?;
                    }
                    Some(l) => {
                        self.push(&rel, ChangeKind::Replaced, &upper, Some(l));
                        self.dir(&rel, false)?;
                    }
                    None => {
                        self.push(&rel, ChangeKind::Created, &upper, None);
                        self.dir(&rel, false)?;
                    }
                }
                continue;
            }
            let Some(l) = lower else {
                self.push(&rel, ChangeKind::Created, &upper, None);
                continue;
            };
            if ObjectType::of(&upper) != ObjectType::of(&l) {
                self.push(&rel, ChangeKind::Replaced, &upper, Some(&l));
                continue;
            }
            if xattr(&upper_path, "trusted.overlay.metacopy").is_some() {
                self.push(&rel, ChangeKind::Metadata, &upper, Some(&l));
                if let Some(last) = self.out.last_mut() {
                    last.fields = vec!["metacopy"];
                }
                continue;
            }
            let modified = match ObjectType::of(&upper) {
                ObjectType::File => upper.len() != l.len() || !same_bytes(&upper_path, &lower_path)?,
                ObjectType::Symlink => fs::read_link(&upper_path)? != fs::read_link(&lower_path)?,
                ObjectType::Other => upper.rdev() != l.rdev(),
                ObjectType::Dir => false,
            };
            if modified {
                self.push(&rel, ChangeKind::Modified, &upper, Some(&l));
                continue;
            }
            let fields = attribute_changes(&upper, &l, upper.is_file());
            if !fields.is_empty() {
                self.push(&rel, ChangeKind::Metadata, &upper, Some(&l));
                if let Some(last) = self.out.last_mut() {
                    last.fields = fields;
                }
            }
        }
        Ok(())
    }
}

/// Which of mode, owner and (for files: a directory's mtime moves with every entry) mtime differ.
fn attribute_changes(upper: &Metadata, lower: &Metadata, with_mtime: bool) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if upper.mode() & 0o7777 != lower.mode() & 0o7777 {
        fields.push("mode");
    }
    if (upper.uid(), upper.gid()) != (lower.uid(), lower.gid()) {
        fields.push("owner");
    }
    if with_mtime && (upper.mtime(), upper.mtime_nsec()) != (lower.mtime(), lower.mtime_nsec()) {
        fields.push("mtime");
    }
    fields
}

/// An overlay whiteout: a 0:0 character device, or (overlayfs 6.7+, "xwhiteout") a regular file marked with
/// `trusted.overlay.whiteout`, or `user.overlay.whiteout` (what the user-mode hook writes where mknod is refused).
fn is_whiteout(path: &Path, meta: &Metadata) -> bool {
    let t = meta.file_type();
    (t.is_char_device() && meta.rdev() == 0)
        || (t.is_file()
            && meta.len() == 0
            && (xattr(path, "trusted.overlay.whiteout").is_some() || xattr(path, "user.overlay.whiteout").is_some()))
}

/// The value of an xattr of `path` itself (not following a symlink); `None` when absent or unreadable.
fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(path, name, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// True when both files hold the same bytes (sizes already compared equal).
fn same_bytes(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Renders one directory's changes as text: a header, then one aligned line per change.
pub fn render_text(dir: &Path, changes: &[Change]) -> String {
    let mut out = String::new();
    if changes.is_empty() {
        let _ = writeln!(out, "{}: no changes", dir.display());
        return out;
    }
    let plural = if changes.len() == 1 { "" } else { "s" };
    let _ = writeln!(out, "{}: {} change{plural}", dir.display(), changes.len());
    let shown: Vec<String> = changes
        .iter()
        .map(|c| {
            let slash = if c.object == ObjectType::Dir && c.rel != Path::new(".") { "/" } else { "" };
            format!("{}{slash}", c.rel.display())
        })
        .collect();
    let width = shown.iter().map(|s| s.chars().count()).max().unwrap_or(0);
    for (c, path) in changes.iter().zip(&shown) {
        let detail = match c.change {
            ChangeKind::Created | ChangeKind::Modified => match (c.object, c.size) {
                (ObjectType::File, Some(size)) => format!("{size} bytes"),
                (ObjectType::Dir, _) => "directory".to_owned(),
                (ObjectType::Symlink, _) => "symlink".to_owned(),
                _ => "special file".to_owned(),
            },
            ChangeKind::Metadata => c.fields.join(", "),
            ChangeKind::Deleted => match c.object {
                ObjectType::Dir => "directory (and everything in it)".to_owned(),
                _ => String::new(),
            },
            ChangeKind::Replaced => match (c.was, c.object) {
                (_, ObjectType::Dir) => "new directory; what the real one held is hidden".to_owned(),
                (Some(was), now) => format!("was {}, now {}", type_word(was), type_word(now)),
                (None, now) => format!("now {}", type_word(now)),
            },
        };
        let line = format!("  {:<9} {path:<width$}  {detail}", c.change.as_str());
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

fn type_word(t: ObjectType) -> &'static str {
    match t {
        ObjectType::File => "a file",
        ObjectType::Dir => "a directory",
        ObjectType::Symlink => "a symlink",
        ObjectType::Other => "a special file",
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use nix::sys::stat::{Mode, SFlag, mknod};

    use super::*;

    fn layer(tmp: &Path) -> Layer {
        let l = Layer { dir: tmp.join("lower"), upper: tmp.join("upper"), work: tmp.join("work") };
        fs::create_dir_all(&l.dir).expect("mkdir lower");
        fs::create_dir_all(&l.upper).expect("mkdir upper");
        l
    }

    fn summary(changes: &[Change]) -> Vec<String> {
        changes.iter().map(|c| format!("{} {}", c.change.as_str(), c.rel.display())).collect()
    }

    #[test]
    fn upper_entries_are_classified_against_the_lower_layer() {
        let tmp = tempfile::tempdir().expect("tmp");
        let l = layer(tmp.path());
        fs::write(l.dir.join("same"), "x").expect("write");
        fs::write(l.dir.join("changed"), "old").expect("write");
        fs::write(l.dir.join("longer"), "a").expect("write");
        symlink("t1", l.dir.join("link")).expect("symlink");
        fs::create_dir(l.dir.join("keep")).expect("mkdir");
        fs::write(l.dir.join("keep/inner"), "1").expect("write");

        // A copy-up with nothing changed (same bytes, same mtime): not a change.
        fs::copy(l.dir.join("same"), l.upper.join("same")).expect("copy");
        let lower_meta = fs::metadata(l.dir.join("same")).expect("meta");
        let mtime = nix::sys::time::TimeSpec::new(lower_meta.mtime(), lower_meta.mtime_nsec());
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &l.upper.join("same"),
            &mtime,
            &mtime,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .expect("utimensat");
        fs::write(l.upper.join("changed"), "new").expect("write");
        fs::write(l.upper.join("longer"), "abc").expect("write");
        symlink("t2", l.upper.join("link")).expect("symlink");
        fs::create_dir(l.upper.join("keep")).expect("mkdir");
        fs::write(l.upper.join("keep/added"), "22").expect("write");
        fs::create_dir(l.upper.join("fresh")).expect("mkdir");
        fs::write(l.upper.join("fresh/f"), "1").expect("write");

        let changes = layer_changes("t", &l).expect("diff");
        assert_eq!(
            summary(&changes),
            [
                "modified changed",
                "created fresh",
                "created fresh/f",
                "created keep/added",
                "modified link",
                "modified longer",
            ]
        );
        let longer = changes.iter().find(|c| c.rel == Path::new("longer")).expect("longer");
        assert_eq!(longer.size, Some(3));
        assert_eq!(longer.path, l.dir.join("longer"));
    }

    #[test]
    fn whiteouts_opaque_dirs_and_chmods_are_reported_as_such() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: whiteouts and trusted.* xattrs need root");
            return;
        }
        let tmp = tempfile::tempdir().expect("tmp");
        let l = layer(tmp.path());
        fs::write(l.dir.join("gone"), "x").expect("write");
        fs::create_dir(l.dir.join("sub")).expect("mkdir");
        fs::write(l.dir.join("sub/old"), "x").expect("write");
        fs::write(l.dir.join("mode"), "m").expect("write");

        mknod(&l.upper.join("gone"), SFlag::S_IFCHR, Mode::empty(), 0).expect("whiteout");
        fs::create_dir(l.upper.join("sub")).expect("mkdir");
        rustix::fs::lsetxattr(l.upper.join("sub"), "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty())
            .expect("set opaque");
        fs::write(l.upper.join("sub/new"), "yy").expect("write");
        fs::copy(l.dir.join("mode"), l.upper.join("mode")).expect("copy");
        let perms = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        fs::set_permissions(l.upper.join("mode"), perms).expect("chmod");

        let changes = layer_changes("t", &l).expect("diff");
        assert_eq!(summary(&changes), ["deleted gone", "metadata mode", "replaced sub", "created sub/new"]);
        assert!(changes[1].fields.contains(&"mode"), "{:?}", changes[1]);
        let text = render_text(&l.dir, &changes);
        assert!(text.contains("4 changes"), "{text}");
        assert!(text.contains("replaced  sub/"), "{text}");
        assert!(text.contains("created   sub/new  2 bytes"), "{text}");
        let json = serde_json::to_value(&changes[2]).expect("json");
        assert_eq!(json["change"], "replaced");
        assert_eq!(json["type"], "dir");
        assert_eq!(json["was"], "dir");
    }
}
