//! `ringwatch sandbox --mode user`: run a command with the LD_PRELOAD hook library rewriting what it writes under
//! the chosen directories into a shadow tree, so the real directories stay untouched, as far as the hook sees.
//!
//! How: no namespace and no mount. The shadow tree of each `--dir` is the same `STATE/NAME/<escaped dir>/upper` a
//! kernel-mode sandbox uses, in the same (overlayfs upper-layer) format, so `sandbox diff`, `list` and `discard`
//! work unchanged. CMD is spawned with `LD_PRELOAD=libringwatch_hook.so` (prepended to an existing one) and
//! `RINGWATCH_SANDBOX_SHADOW` (one `DIR<TAB>UPPER` line per directory, see crates/hook/src/sandbox.rs); the hook
//! copies a file up into the shadow before the first write, redirects reads to the shadow copy, and records deletes
//! as whiteouts. The process waits for CMD as in kernel mode (exit status, signal forwarding, the lock).
//!
//! What it does not contain (the hook never sees it, so it writes to the real directory): statically linked
//! programs, raw `syscall(2)`, io_uring, setuid programs, programs that drop `LD_PRELOAD` from their environment,
//! and libc calls the hook does not interpose (`setxattr`, ...). `stat`, `access`, `readlink` and `opendir`
//! see the sandbox's view, but directory listings are not merged: a directory that exists in both trees shows its
//! real entries.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use ringwatch_domains::preload;

use super::kernel;
use super::state::{self, Layer, SandboxDir};
use crate::{MissingCapability, UsageError};

/// The hook's spec variable (crates/hook/src/sandbox.rs `SPEC_ENV`).
pub const ENV_SHADOW: &str = "RINGWATCH_SANDBOX_SHADOW";
/// The hook's limits (crates/hook/src/sandbox.rs `MAX_DIRS`, `MAX_SPEC_PATH`).
const MAX_DIRS: usize = 8;
const MAX_SPEC_PATH: usize = 1023;
const MODE: &str = "user";

/// What one user-mode run needs, already parsed.
pub struct RunRequest<'a> {
    /// The sandbox's name.
    pub name: &'a str,
    /// `--dir` as given.
    pub dirs: &'a [PathBuf],
    /// Drop earlier changes first.
    pub fresh: bool,
    /// Where sandboxes live.
    pub state_root: &'a Path,
    /// CMD and its arguments (not empty).
    pub command: &'a [OsString],
}

/// Runs CMD with the hook and the sandbox spec; returns the exit status to exit with.
pub fn run(req: &RunRequest<'_>) -> Result<u8> {
    let given = kernel::resolve_dirs(req.dirs)?;
    check_spellable(&given)?;
    let lib = hook_library()?;
    super::require_root()?;
    let root = state::open_root(req.state_root)?;
    kernel::check_dirs(&given, &root)?;
    let sandbox = SandboxDir::new(&root, req.name);
    if given.is_empty() && !sandbox.exists() {
        bail!(UsageError(format!(
            "sandbox {} does not exist yet: give the directories to sandbox with --dir PATH",
            req.name
        )));
    }
    let signals = kernel::handle_signals()?;
    sandbox.create()?;
    let lock = sandbox.lock()?;
    let previous = if sandbox.exists() { Some(sandbox.manifest()?) } else { None };
    let prepared = kernel::prepare(&sandbox, previous.as_ref(), &given, req.fresh, MODE).and_then(|layers| {
        let dirs: Vec<PathBuf> = layers.iter().map(|l| l.dir.clone()).collect();
        check_spellable(&dirs)?;
        spec(&layers)
    });
    let spec = match prepared {
        Ok(spec) => spec,
        Err(err) => {
            if previous.is_none() {
                let _ = sandbox.remove();
            }
            return Err(err);
        }
    };
    let env = [("LD_PRELOAD", preload_value(&lib)), (ENV_SHADOW, spec)];
    tracing::debug!(sandbox = req.name, "user-mode sandbox ready; starting the command");
    let status = kernel::run_command(req.name, req.command, &env, signals);
    drop(lock);
    status
}

/// The hook library, or exit 3 saying where it was looked for.
fn hook_library() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(preload::HOOK_LIBRARY_ENV)
        && !Path::new(&p).is_file()
    {
        bail!(MissingCapability(format!(
            "{}={} is not a file: sandbox --mode user needs the hook library (libringwatch_hook.so)",
            preload::HOOK_LIBRARY_ENV,
            Path::new(&p).display()
        )));
    }
    preload::hook_library_path().ok_or_else(|| {
        MissingCapability(format!(
            "sandbox --mode user needs the hook library, and libringwatch_hook.so was not found next to the \
             ringwatch binary (or in ../lib/ringwatch); build it with `cargo build -p ringwatch-hook` or point {} \
             at it (or use --mode kernel)",
            preload::HOOK_LIBRARY_ENV
        ))
        .into()
    })
}

/// `LD_PRELOAD` for CMD: the hook first, then whatever was preloaded already.
fn preload_value(lib: &Path) -> OsString {
    let mut value = lib.as_os_str().to_owned();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        value.push(":");
        value.push(old);
    }
    value
}

/// Refuses what the hook's spec cannot carry: more than [`MAX_DIRS`] directories, a tab or newline in a path,
/// a path of [`MAX_SPEC_PATH`] bytes or more.
fn check_spellable(dirs: &[PathBuf]) -> Result<()> {
    let mut errors = Vec::new();
    if dirs.len() > MAX_DIRS {
        errors.push(format!("--mode user sandboxes at most {MAX_DIRS} directories ({} given)", dirs.len()));
    }
    for dir in dirs {
        let bytes = dir.as_os_str().as_bytes();
        if bytes.contains(&b'\t') || bytes.contains(&b'\n') {
            errors.push(format!("--dir {}: --mode user cannot sandbox a path with a tab or newline", dir.display()));
        } else if bytes.len() >= MAX_SPEC_PATH {
            errors
                .push(format!("--dir {}: longer than {MAX_SPEC_PATH} bytes, too long for --mode user", dir.display()));
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(UsageError(errors.join("\n")).into()) }
}

/// `RINGWATCH_SANDBOX_SHADOW`: `DIR<TAB>UPPER` per layer, lines joined by `\n`.
fn spec(layers: &[Layer]) -> Result<OsString> {
    let mut out = Vec::new();
    for layer in layers {
        let upper = layer.upper.as_os_str().as_bytes();
        if upper.contains(&b'\t') || upper.contains(&b'\n') || upper.len() >= MAX_SPEC_PATH {
            bail!(UsageError(format!(
                "the shadow directory {} has a tab or newline or is {MAX_SPEC_PATH} bytes or longer; use another \
                 --state-dir",
                layer.upper.display()
            )));
        }
        if !out.is_empty() {
            out.push(b'\n');
        }
        out.extend_from_slice(layer.dir.as_os_str().as_bytes());
        out.push(b'\t');
        out.extend_from_slice(upper);
    }
    Ok(OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_has_one_line_per_layer() {
        let layer = |d: &str, u: &str| Layer { dir: d.into(), upper: u.into(), work: PathBuf::new() };
        let s = spec(&[layer("/a", "/s/-a/upper"), layer("/b c", "/s/-b%20c/upper")]).expect("spec");
        assert_eq!(s, OsString::from("/a\t/s/-a/upper\n/b c\t/s/-b%20c/upper"));
        assert!(spec(&[layer("/a", "/s/x\ty/upper")]).is_err());
        assert!(check_spellable(&[PathBuf::from("/a\nb")]).is_err());
        assert!(check_spellable(&(0..9).map(|i| PathBuf::from(format!("/d{i}"))).collect::<Vec<_>>()).is_err());
        assert!(check_spellable(&[PathBuf::from("/ok")]).is_ok());
    }
}
