//! System-wide injection: adding the hook library to (and removing it from) `/etc/ld.so.preload`, and finding it.
//!
//! The dynamic loader reads `/etc/ld.so.preload` at the start of every dynamically linked program, so an entry
//! there hooks processes whose environment lacks `LD_PRELOAD` too (it still cannot reach static or setuid
//! programs). A broken entry would print an error in every program on the host, so [`install`] only accepts an
//! absolute path to an existing ELF `.so` file that the loader actually loads (it runs `/bin/true` with it first),
//! and every edit is atomic: a temporary file in the same directory, fsync, rename, fsync of the directory. Edits
//! keep every other entry and comment byte for byte, and are idempotent.
//!
//! The file's format (glibc `rtld.c`): names separated by white space or `:`, `#` starts a comment to the end of
//! the line.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The library's file name.
pub const HOOK_LIBRARY_NAME: &str = "libringwatch_hook.so";

/// Environment variable naming the hook library explicitly (packaging, tests).
pub const HOOK_LIBRARY_ENV: &str = "RINGWATCH_HOOK_LIB";

/// Why an edit of the preload file failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The library path is unusable; the file was not touched.
    #[error("{path}: refusing to install: {why}")]
    BadLibrary {
        /// The library path given.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Reading or writing the preload file failed.
    #[error("{step} {path}: {source}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> InstallError + 'a {
    move |source| InstallError::Io { step, path: path.to_owned(), source }
}

/// Adds `lib` to `preload_file` (normally `/etc/ld.so.preload`), creating the file if needed. Returns true when
/// the file changed, false when `lib` was already listed.
pub fn install(lib: &Path, preload_file: &Path) -> Result<bool, InstallError> {
    check_library(lib)?;
    let entry = entry_text(lib)?;
    let old = read_existing(preload_file)?;
    let text = old.as_deref().unwrap_or_default();
    if lists(text, entry) {
        return Ok(false);
    }
    let mut new = String::with_capacity(text.len() + entry.len() + 2);
    new.push_str(text);
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(entry);
    new.push('\n');
    write_atomically(preload_file, new.as_bytes())?;
    Ok(true)
}

/// Removes every occurrence of `lib` from `preload_file`, keeping other entries and comments. Returns true when
/// the file changed. A file left with nothing but white space is removed. `lib` need not exist any more.
pub fn uninstall(lib: &Path, preload_file: &Path) -> Result<bool, InstallError> {
    let entry = entry_text(lib)?;
    let Some(text) = read_existing(preload_file)? else { return Ok(false) };
    let Some(new) = without(&text, entry) else { return Ok(false) };
    if new.trim().is_empty() {
        fs::remove_file(preload_file).map_err(io_err("remove", preload_file))?;
        sync_dir(preload_file)?;
    } else {
        write_atomically(preload_file, new.as_bytes())?;
    }
    Ok(true)
}

/// True when `preload_file` lists `lib` (false when it does not exist or cannot be read).
pub fn is_installed(lib: &Path, preload_file: &Path) -> bool {
    let (Ok(entry), Ok(Some(text))) = (entry_text(lib), read_existing(preload_file)) else { return false };
    lists(&text, entry)
}

/// Finds `libringwatch_hook.so`: `$RINGWATCH_HOOK_LIB` if it names a file, else next to the current executable
/// (`target/debug`, `target/release`), one level up (test binaries live in `target/*/deps`), or in
/// `../lib/ringwatch/` (an installed `bin/ringwatch`). The result is absolute and canonical.
pub fn hook_library_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(HOOK_LIBRARY_ENV).map(PathBuf::from)
        && p.is_file()
    {
        return fs::canonicalize(p).ok();
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let candidates = [
        dir.join(HOOK_LIBRARY_NAME),
        dir.join("..").join(HOOK_LIBRARY_NAME),
        dir.join("../lib/ringwatch").join(HOOK_LIBRARY_NAME),
    ];
    candidates.iter().find(|p| p.is_file()).and_then(|p| fs::canonicalize(p).ok())
}

/// `lib` as text for the file: absolute, valid UTF-8, and free of the file's separators and comment marker.
fn entry_text(lib: &Path) -> Result<&str, InstallError> {
    let bad = |why: &str| InstallError::BadLibrary { path: lib.to_owned(), why: why.to_owned() };
    if !lib.is_absolute() {
        return Err(bad("not an absolute path"));
    }
    let text = lib.to_str().ok_or_else(|| bad("not valid UTF-8"))?;
    if text.chars().any(|c| c.is_whitespace() || c == ':' || c == '#') {
        return Err(bad("contains white space, ':' or '#', which the preload file cannot express"));
    }
    Ok(text)
}

/// Refuses anything but an existing ELF shared object named `*.so` / `*.so.N` that the loader can preload.
fn check_library(lib: &Path) -> Result<(), InstallError> {
    let bad = |why: String| InstallError::BadLibrary { path: lib.to_owned(), why };
    entry_text(lib)?;
    let name = lib.file_name().map(OsStr::as_bytes).unwrap_or_default();
    let is_so = name.ends_with(b".so") || name.windows(4).any(|w| w == b".so.");
    if !is_so {
        return Err(bad("not a shared object name (*.so)".into()));
    }
    let md = fs::metadata(lib).map_err(|e| bad(format!("cannot stat: {e}")))?;
    if !md.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let mut magic = [0u8; 4];
    fs::File::open(lib).and_then(|mut f| f.read_exact(&mut magic)).map_err(|e| bad(format!("cannot read: {e}")))?;
    if magic != *b"\x7fELF" {
        return Err(bad("not an ELF file".into()));
    }
    // The real test: does the loader take it? A failure would otherwise print in every program on the host.
    let true_bin = Path::new("/bin/true");
    if true_bin.exists() {
        let out = Command::new(true_bin)
            .env("LD_PRELOAD", lib)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| bad(format!("cannot run /bin/true to test-load it: {e}")))?;
        if !out.status.success() || !out.stderr.is_empty() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(bad(format!("the loader does not preload it: {}", stderr.trim())));
        }
    }
    Ok(())
}

/// The file's content, `None` when it does not exist.
fn read_existing(path: &Path) -> Result<Option<String>, InstallError> {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| InstallError::Io {
            step: "read",
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidData, "not UTF-8; refusing to edit"),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// Splits a line into the part the loader reads and its comment (from `#`, if any).
fn split_comment(line: &str) -> (&str, &str) {
    line.find('#').map_or((line, ""), |i| line.split_at(i))
}

fn entries(code: &str) -> impl Iterator<Item = &str> {
    code.split(|c: char| c.is_whitespace() || c == ':').filter(|t| !t.is_empty())
}

/// True when some line lists `entry` outside a comment.
fn lists(text: &str, entry: &str) -> bool {
    text.lines().any(|line| entries(split_comment(line).0).any(|t| t == entry))
}

/// `text` without `entry`; `None` when it was not listed. Untouched lines stay byte for byte; a line that held
/// only `entry` disappears; other entries (and a comment) on a changed line are kept, separated by spaces.
fn without(text: &str, entry: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    for line in text.split_inclusive('\n') {
        let (body, newline) = line.strip_suffix('\n').map_or((line, ""), |b| (b, "\n"));
        let (code, comment) = split_comment(body);
        if !entries(code).any(|t| t == entry) {
            out.push_str(line);
            continue;
        }
        changed = true;
        let kept: Vec<&str> = entries(code).filter(|t| *t != entry).collect();
        if kept.is_empty() && comment.is_empty() {
            continue;
        }
        out.push_str(&kept.join(" "));
        if !comment.is_empty() {
            if !kept.is_empty() {
                out.push(' ');
            }
            out.push_str(comment);
        }
        out.push_str(newline);
    }
    changed.then_some(out)
}

/// Replaces `path` with `content` atomically: temp file in the same directory, fsync, rename, fsync directory.
/// The old file's permissions are kept (0644 for a new file).
fn write_atomically(path: &Path, content: &[u8]) -> Result<(), InstallError> {
    let dir = parent_dir(path);
    let name = path.file_name().map(OsStr::to_string_lossy).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.ringwatch-{}.tmp", std::process::id()));
    let mode = fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644);
    // A leftover from a crashed run of this same pid would make create_new fail.
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.write_all(content).map_err(io_err("write", &tmp))?;
        f.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_err("chmod", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename over", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(path)
}

fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

fn sync_dir(path: &Path) -> Result<(), InstallError> {
    let dir = parent_dir(path);
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real shared object the loader accepts: the libc this test runs with.
    fn some_real_so() -> PathBuf {
        let maps = fs::read_to_string("/proc/self/maps").expect("maps readable");
        let path = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains("/libc.so"))
            .expect("libc is mapped");
        fs::canonicalize(path).expect("libc path exists")
    }

    #[test]
    fn install_appends_once_and_uninstall_restores_the_original_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ld.so.preload");
        let original = "# site preload list\n/opt/a/liba.so /opt/b/libb.so:/opt/c/libc.so  # trailing\n/opt/d/libd.so";
        fs::write(&file, original).expect("write");
        let lib = some_real_so();
        assert!(install(&lib, &file).expect("install"));
        assert!(!install(&lib, &file).expect("second install is a no-op"));
        let text = fs::read_to_string(&file).expect("read");
        assert_eq!(text, format!("{original}\n{}\n", lib.display()));
        assert!(is_installed(&lib, &file));
        assert!(uninstall(&lib, &file).expect("uninstall"));
        assert!(!uninstall(&lib, &file).expect("second uninstall is a no-op"));
        assert_eq!(fs::read_to_string(&file).expect("read"), format!("{original}\n"));
        assert!(!is_installed(&lib, &file));
        let leftovers: Vec<_> = fs::read_dir(dir.path()).expect("ls").flatten().map(|e| e.file_name()).collect();
        assert_eq!(leftovers.len(), 1, "no temp files left: {leftovers:?}");
    }

    #[test]
    fn uninstall_keeps_neighbours_on_the_same_line_and_comments() {
        let text = "/x/a.so /x/hook.so:/x/b.so # keep me\n/x/hook.so\n# /x/hook.so in a comment\n";
        let out = without(text, "/x/hook.so").expect("listed");
        assert_eq!(out, "/x/a.so /x/b.so # keep me\n# /x/hook.so in a comment\n");
        assert_eq!(without("/x/other.so\n", "/x/hook.so"), None);
        assert!(!lists("# /x/hook.so\n", "/x/hook.so"));
    }

    #[test]
    fn installing_into_a_missing_file_creates_it_and_removing_the_last_entry_deletes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ld.so.preload");
        let lib = some_real_so();
        assert!(install(&lib, &file).expect("install"));
        assert_eq!(fs::metadata(&file).expect("exists").permissions().mode() & 0o777, 0o644);
        assert!(uninstall(&lib, &file).expect("uninstall"));
        assert!(!file.exists());
    }

    #[test]
    fn bad_library_paths_are_refused_and_the_file_is_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ld.so.preload");
        fs::write(&file, "/keep.so\n").expect("write");
        let not_elf = dir.path().join("libfake.so");
        fs::write(&not_elf, b"not an elf").expect("write");
        let elf_but_broken = dir.path().join("libbroken.so");
        fs::write(&elf_but_broken, b"\x7fELF garbage").expect("write");
        let not_so = dir.path().join("libx.txt");
        fs::write(&not_so, b"\x7fELF").expect("write");
        for lib in [
            PathBuf::from("relative/libx.so"),
            dir.path().join("missing.so"),
            not_elf,
            elf_but_broken,
            not_so,
            dir.path().to_path_buf(),
            PathBuf::from("/with space/lib.so"),
        ] {
            let err = install(&lib, &file).expect_err(&format!("{} must be refused", lib.display()));
            assert!(matches!(err, InstallError::BadLibrary { .. }), "{err}");
        }
        assert_eq!(fs::read_to_string(&file).expect("read"), "/keep.so\n");
    }
}
