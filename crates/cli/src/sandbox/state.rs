//! On-disk state of a sandbox: where its layers live, its manifest, and the lock that keeps two runs apart.
//!
//! ```text
//! STATE_ROOT/                      default /var/lib/ringwatch/sandbox, 0700 root
//!   NAME/                          0700
//!     sandbox.json                 manifest: mode, the real directories (canonical), creation time
//!     lock                         flock(2)ed by a running sandbox and by discard; holds the runner's pid
//!     -tmp-project/                one per --dir (escaped path, see `escape_dir`), 0700
//!       upper/                     the overlay's upper layer: everything CMD wrote under /tmp/project
//!       work/                      overlayfs's scratch directory (must be on upper's filesystem)
//! ```
//!
//! The state lives outside every sandboxed directory (checked), so a sandbox cannot write into its own layers, and
//! it is root's alone (0700), because an upper layer holds whiteouts and trusted.* xattrs that steer the overlay.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::UsageError;

/// Where sandboxes keep their layers unless `--state-dir` says otherwise.
pub const DEFAULT_STATE_ROOT: &str = "/var/lib/ringwatch/sandbox";
/// The name used when `--name` is not given.
pub const DEFAULT_NAME: &str = "default";
const MANIFEST: &str = "sandbox.json";
const LOCK: &str = "lock";
/// Bumped when the layout changes incompatibly.
const MANIFEST_VERSION: u32 = 1;

/// What `sandbox.json` records.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Layout version ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// The sandbox's name (also its directory name).
    pub name: String,
    /// `kernel` (overlayfs); `user` once the shadow-directory hook lands.
    pub mode: String,
    /// The real directories, canonical, sorted.
    pub dirs: Vec<PathBuf>,
    /// When the sandbox was created (Unix seconds).
    pub created_unix: u64,
}

/// One sandboxed directory and where its layers are.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The real directory: the overlay's lower layer and its mount point.
    pub dir: PathBuf,
    /// Everything written under `dir` inside the sandbox.
    pub upper: PathBuf,
    /// overlayfs's work directory.
    pub work: PathBuf,
}

/// Checks a sandbox name: 1-64 of `[A-Za-z0-9._-]`, not starting with a dot (it names a directory).
pub fn validate_name(name: &str) -> Result<(), UsageError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 64 || name.starts_with('.') || !name.chars().all(ok_char) {
        return Err(UsageError(format!(
            "bad sandbox name {name:?}: use 1-64 letters, digits, '.', '_' or '-', not starting with '.'"
        )));
    }
    Ok(())
}

/// The directory name for the layers of `dir`: every `/` becomes `-` (so a name always starts with `-` and
/// cannot collide with `lock` or `sandbox.json`); bytes other than `[A-Za-z0-9._~+=@]` become `%XX`, `-` included,
/// so the mapping is reversible and the result needs no escaping in overlayfs mount options.
pub fn escape_dir(dir: &Path) -> String {
    let mut out = String::new();
    for &b in dir.as_os_str().as_bytes() {
        match b {
            b'/' => out.push('-'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'~' | b'+' | b'=' | b'@' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The state root, created if missing (0700) and checked: a directory owned by root that nobody else can write,
/// since whoever can write there can plant layers into a root process's view.
pub fn open_root(root: &Path) -> Result<PathBuf> {
    if !root.exists() {
        if let Some(parent) = root.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        DirBuilder::new().mode(0o700).create(root).with_context(|| format!("creating {}", root.display()))?;
    }
    let root = root.canonicalize().with_context(|| format!("resolving {}", root.display()))?;
    let meta = fs::metadata(&root).with_context(|| format!("reading {}", root.display()))?;
    if !meta.is_dir() {
        bail!(UsageError(format!("state dir {} is not a directory", root.display())));
    }
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        bail!(
            "state dir {} must be owned by root and not group/world-writable (it is uid {}, mode {:o})",
            root.display(),
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    Ok(root)
}

/// One sandbox's directory under the state root.
#[derive(Debug, Clone)]
pub struct SandboxDir {
    /// The sandbox's name.
    pub name: String,
    /// `STATE_ROOT/NAME`.
    pub path: PathBuf,
}

/// A held exclusive lock on a sandbox; released on drop.
pub struct SandboxLock {
    _lock: Flock<File>,
}

impl SandboxDir {
    /// The sandbox `name` under `root` (not created).
    pub fn new(root: &Path, name: &str) -> SandboxDir {
        SandboxDir { name: name.to_owned(), path: root.join(name) }
    }

    /// True when the sandbox has a manifest.
    pub fn exists(&self) -> bool {
        self.path.join(MANIFEST).is_file()
    }

    /// Creates the sandbox directory (0700) if missing.
    pub fn create(&self) -> Result<()> {
        if !self.path.is_dir() {
            DirBuilder::new()
                .mode(0o700)
                .create(&self.path)
                .with_context(|| format!("creating {}", self.path.display()))?;
        }
        Ok(())
    }

    /// Reads the manifest.
    pub fn manifest(&self) -> Result<Manifest> {
        let path = self.path.join(MANIFEST);
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let manifest: Manifest = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if manifest.version != MANIFEST_VERSION {
            bail!("{}: layout version {} (this ringwatch knows {MANIFEST_VERSION})", path.display(), manifest.version);
        }
        Ok(manifest)
    }

    /// Writes the manifest atomically (temp file + rename).
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let path = self.path.join(MANIFEST);
        let tmp = self.path.join(format!("{MANIFEST}.tmp"));
        let mut text = serde_json::to_string_pretty(manifest)?;
        text.push('\n');
        fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(())
    }

    /// Takes the exclusive lock without waiting; fails saying which pid holds it.
    pub fn lock(&self) -> Result<SandboxLock> {
        let path = self.path.join(LOCK);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                // The pid is only informative (for the "in use" message); a failed write does not matter.
                let _ = lock.set_len(0);
                let _ = lock.seek(SeekFrom::Start(0));
                let _ = write!(lock, "{}", std::process::id());
                Ok(SandboxLock { _lock: lock })
            }
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                bail!(
                    "sandbox {} is in use by another ringwatch sandbox (pid {}); wait for it to finish",
                    self.name,
                    if pid.trim().is_empty() { "?" } else { pid.trim() }
                )
            }
            Err((_, errno)) => Err(errno).with_context(|| format!("locking {}", path.display())),
        }
    }

    /// True when a running sandbox holds the lock.
    pub fn in_use(&self) -> bool {
        let Ok(file) = File::open(self.path.join(LOCK)) else { return false };
        matches!(Flock::lock(file, FlockArg::LockSharedNonblock), Err((_, Errno::EWOULDBLOCK)))
    }

    /// The layers of `dirs`, in the same order.
    pub fn layers(&self, dirs: &[PathBuf]) -> Vec<Layer> {
        dirs.iter()
            .map(|dir| {
                let base = self.path.join(escape_dir(dir));
                Layer { dir: dir.clone(), upper: base.join("upper"), work: base.join("work") }
            })
            .collect()
    }

    /// Removes every layer (what `--fresh` drops); keeps the lock and the manifest.
    pub fn clear_layers(&self) -> Result<()> {
        let entries = fs::read_dir(&self.path).with_context(|| format!("listing {}", self.path.display()))?;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if name.as_bytes().starts_with(b"-") {
                fs::remove_dir_all(entry.path()).with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
        Ok(())
    }

    /// Creates the layer directories that are missing. A new upper directory takes the real directory's mode and
    /// owner: the overlay's root shows the upper root's attributes, and CMD must see the directory as it is.
    pub fn prepare_layers(&self, layers: &[Layer]) -> Result<()> {
        for layer in layers {
            let base = layer.upper.parent().unwrap_or(&self.path);
            let mut builder = DirBuilder::new();
            builder.mode(0o700);
            if !base.is_dir() {
                builder.create(base).with_context(|| format!("creating {}", base.display()))?;
            }
            if !layer.work.is_dir() {
                builder.create(&layer.work).with_context(|| format!("creating {}", layer.work.display()))?;
            }
            if !layer.upper.is_dir() {
                let real = fs::metadata(&layer.dir).with_context(|| format!("reading {}", layer.dir.display()))?;
                builder.create(&layer.upper).with_context(|| format!("creating {}", layer.upper.display()))?;
                nix::unistd::chown(
                    &layer.upper,
                    Some(nix::unistd::Uid::from_raw(real.uid())),
                    Some(nix::unistd::Gid::from_raw(real.gid())),
                )
                .with_context(|| format!("chown {}", layer.upper.display()))?;
                fs::set_permissions(&layer.upper, fs::Permissions::from_mode(real.mode() & 0o7777))
                    .with_context(|| format!("chmod {}", layer.upper.display()))?;
            }
        }
        Ok(())
    }

    /// Deletes the whole sandbox directory.
    pub fn remove(&self) -> Result<()> {
        fs::remove_dir_all(&self.path).with_context(|| format!("removing {}", self.path.display()))
    }
}

/// Every sandbox under `root`, sorted by name (directories without a manifest are skipped).
pub fn list(root: &Path) -> Result<Vec<SandboxDir>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", root.display())),
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        let dir = SandboxDir::new(root, &name);
        if validate_name(&name).is_ok() && dir.exists() {
            out.push(dir);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Seconds since the epoch (0 if the clock is before it).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_dirs_are_prefixed_reversible_and_need_no_mount_escaping() {
        assert_eq!(escape_dir(Path::new("/tmp/project")), "-tmp-project");
        assert_eq!(escape_dir(Path::new("/tmp/rw-x")), "-tmp-rw%2Dx");
        assert_eq!(escape_dir(Path::new("/a,b:c\\d e")), "-a%2Cb%3Ac%5Cd%20e");
        assert_eq!(escape_dir(Path::new("/lock")), "-lock");
        // Different paths never share a layer directory.
        assert_ne!(escape_dir(Path::new("/a/b")), escape_dir(Path::new("/a-b")));
    }

    #[test]
    fn names_are_checked() {
        for good in ["default", "T", "build-1.2_x"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
