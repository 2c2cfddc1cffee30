//! `ringwatch sandbox`: file virtualization. Run a command so that what it writes under chosen directories lands
//! in a per-sandbox layer instead of the real directories, then inspect (`diff`), list or discard those changes.
//!
//! # Layout
//! - [`kernel`]: `--mode kernel`, a private mount namespace with an overlayfs on each `--dir` (no bypass: every
//!   process, static binaries and raw syscalls included, sees the overlay).
//! - [`user`]: `--mode user`, the LD_PRELOAD hook rewrites written paths into a shadow tree in the same format
//!   (cooperative: static binaries, raw syscalls and unhooked calls write through).
//! - [`diff`]: reads the overlay upper layers (whiteouts, opaque directories, copies) into a sorted change list.
//! - [`state`]: the state directory (`/var/lib/ringwatch/sandbox/NAME/...`), its manifest and its lock.
//!
//! Both modes keep a layer per directory in `STATE/NAME/<escaped dir>/upper` (whiteouts, opaque directories,
//! copies), so `diff`, `list` and `discard` do not care which mode wrote it; the manifest records the mode and a
//! sandbox is only re-entered in its own mode. See docs/architecture.md ("Sandbox (file virtualization)").

mod diff;
mod kernel;
mod state;
mod user;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use crate::{MissingCapability, UsageError};

const AFTER_HELP: &str = "\
Examples:
  ringwatch sandbox --name build --dir ~/src/app -- make install-docs
                                                  writes under ~/src/app land in the sandbox, not in ~/src/app
  ringwatch sandbox diff --name build             what it created, modified, deleted or replaced there
  ringwatch sandbox --name build -- ls ~/src/app  re-enter: earlier changes are still there
  ringwatch sandbox --name build --fresh -- sh    start over from the real directory
  ringwatch sandbox list                          every sandbox, its directories and number of changes
  ringwatch sandbox discard --name build          drop the changes for good

How (kernel mode): CMD runs in a private mount namespace with an overlayfs on each --dir: the real directory is
the read-only lower layer, and every write goes to an upper layer in STATE/NAME/<dir>/upper (0700, root). Every
process is contained, static binaries and raw syscalls included; only the --dirs are virtualized, writes
elsewhere are real. CMD sees RINGWATCH_SANDBOX=NAME. Re-entering uses the recorded --dirs (a new --dir is added).
ringwatch exits with CMD's status (128+signal if it was killed, 127 if CMD was not found); SIGTERM and SIGHUP are
passed on to CMD.

How (user mode, --mode user): no namespace; CMD runs with LD_PRELOAD=libringwatch_hook.so, which copies a file into
the same upper directory before CMD's first write to it and sends its later reads and writes there (open, creat,
fopen, truncate, chmod, chown, mkdir, rename, link, symlink, unlink, rmdir; stat, access, readlink and opendir see
the sandbox's view). Cooperative only: static binaries, raw syscalls, setuid programs and calls the hook does not
interpose write to the real directory, and a listing of a directory that exists in both shows the real entries.

Exit codes: CMD's own, or 2 for bad input (no CMD, a --dir that is missing, nested, given twice or unusable, a
sandbox re-entered in the other mode), 3 when not root, without overlayfs (kernel mode), or without the hook
library (user mode).";

const DIFF_HELP: &str = "\
Changes (compared with the real directory as it is now):
  created   new in the sandbox (files with their size)
  modified  other bytes (files) or another target (symlinks)
  metadata  same bytes, other mode, owner or mtime
  deleted   removed in the sandbox (an overlay whiteout)
  replaced  removed and made again: a new directory (what the real one held is hidden) or another file type
  .         stands for the directory itself

Example:
  ringwatch sandbox diff --name build --json | jq -r 'select(.change == \"created\") | .path'";

/// Which virtualization backs the sandbox.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxMode {
    /// A private mount namespace with an overlayfs on each --dir (needs root; contains every process).
    Kernel,
    /// The LD_PRELOAD hook rewrites written paths into a shadow directory (cooperative: static binaries and raw
    /// syscalls write through).
    User,
}

/// Options of `ringwatch sandbox`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, after_help = AFTER_HELP)]
pub struct SandboxArgs {
    #[command(subcommand)]
    action: Option<SandboxAction>,
    #[command(flatten)]
    run: RunArgs,
}

/// Options shared by every sandbox subcommand: which sandbox, where sandboxes live.
#[derive(Args, Debug, Clone)]
struct Target {
    /// The sandbox's name (its changes persist under it between runs).
    #[arg(long, default_value = state::DEFAULT_NAME)]
    name: String,
    /// Where sandboxes keep their layers (root-only; must not overlap a --dir).
    #[arg(long, value_name = "DIR", default_value = state::DEFAULT_STATE_ROOT)]
    state_dir: PathBuf,
}

/// Options of `ringwatch sandbox [OPTIONS] -- CMD`.
#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    target: Target,
    /// kernel: overlayfs in a mount namespace (default). user: the LD_PRELOAD hook redirects writes into the same
    /// layer. Re-entering uses the recorded mode; giving the other one is an error.
    #[arg(long, value_enum)]
    mode: Option<SandboxMode>,
    /// A directory whose writes go to the sandbox (repeatable; directories must not be nested). Needed when the
    /// sandbox is new; when re-entering, the recorded ones are used and a new one is added.
    #[arg(long = "dir", value_name = "PATH")]
    dirs: Vec<PathBuf>,
    /// Drop the sandbox's earlier changes first (with --dir: also forget its earlier directories).
    #[arg(long)]
    fresh: bool,
    /// The command to run and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<OsString>,
}

#[derive(Subcommand, Debug)]
enum SandboxAction {
    /// List what the sandboxed commands changed in each directory: created, modified, deleted, replaced
    /// directories, metadata-only changes.
    #[command(after_help = DIFF_HELP)]
    Diff {
        #[command(flatten)]
        target: Target,
        /// One JSON object per change instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the sandboxes: mode, directories, number of changes, whether one is running.
    List {
        /// Where sandboxes keep their layers.
        #[arg(long, value_name = "DIR", default_value = state::DEFAULT_STATE_ROOT)]
        state_dir: PathBuf,
        /// One JSON object per sandbox instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a sandbox and every change it holds (the real directories are not touched).
    Discard {
        /// The sandbox to delete.
        #[arg(long)]
        name: String,
        /// Where sandboxes keep their layers.
        #[arg(long, value_name = "DIR", default_value = state::DEFAULT_STATE_ROOT)]
        state_dir: PathBuf,
    },
}

/// Runs `ringwatch sandbox ...`; returns the exit status (CMD's, when a command was run).
pub fn run(args: SandboxArgs) -> Result<u8> {
    match args.action {
        Some(SandboxAction::Diff { target, json }) => diff_cmd(&target, json).map(|()| 0),
        Some(SandboxAction::List { state_dir, json }) => list_cmd(&state_dir, json).map(|()| 0),
        Some(SandboxAction::Discard { name, state_dir }) => discard_cmd(&Target { name, state_dir }).map(|()| 0),
        None => run_cmd(&args.run),
    }
}

fn run_cmd(args: &RunArgs) -> Result<u8> {
    if args.command.is_empty() {
        bail!(UsageError(
            "sandbox needs a command after `--`: ringwatch sandbox --dir PATH -- CMD [ARGS...] (see --help)".into()
        ));
    }
    state::validate_name(&args.target.name)?;
    let mode = args.mode.or_else(|| recorded_mode(&args.target)).unwrap_or(SandboxMode::Kernel);
    if mode == SandboxMode::User {
        return user::run(&user::RunRequest {
            name: &args.target.name,
            dirs: &args.dirs,
            fresh: args.fresh,
            state_root: &args.target.state_dir,
            command: &args.command,
        });
    }
    kernel::run(&kernel::RunRequest {
        name: &args.target.name,
        dirs: &args.dirs,
        fresh: args.fresh,
        state_root: &args.target.state_dir,
        command: &args.command,
    })
}

/// The mode an existing sandbox was made in (`None` if there is none or its manifest cannot be read; the run then
/// reports that itself).
fn recorded_mode(target: &Target) -> Option<SandboxMode> {
    let manifest = state::SandboxDir::new(&target.state_dir, &target.name).manifest().ok()?;
    SandboxMode::from_str(&manifest.mode, true).ok()
}

/// Fails with exit 3 unless running as root.
fn require_root() -> Result<()> {
    if ringwatch_domains::probe::is_root() {
        return Ok(());
    }
    bail!(MissingCapability(
        "ringwatch sandbox needs root (mount namespaces and overlayfs need CAP_SYS_ADMIN; the layers hold trusted.* \
         xattrs); run it with sudo"
            .into()
    ))
}

/// The existing sandbox `target` names, or exit 2.
fn existing(target: &Target) -> Result<state::SandboxDir> {
    state::validate_name(&target.name)?;
    require_root()?;
    let sandbox = state::SandboxDir::new(&target.state_dir, &target.name);
    if !sandbox.exists() {
        bail!(UsageError(format!(
            "no sandbox named {} in {} (`ringwatch sandbox list` shows them)",
            target.name,
            target.state_dir.display()
        )));
    }
    Ok(sandbox)
}

fn diff_cmd(target: &Target, json: bool) -> Result<()> {
    let sandbox = existing(target)?;
    let manifest = sandbox.manifest()?;
    let mut out = std::io::stdout().lock();
    for layer in sandbox.layers(&manifest.dirs) {
        let changes = diff::layer_changes(&manifest.name, &layer)?;
        if json {
            for change in &changes {
                writeln!(out, "{}", serde_json::to_string(change)?)?;
            }
        } else {
            write!(out, "{}", diff::render_text(&layer.dir, &changes))?;
        }
    }
    Ok(())
}

/// One line of `sandbox list --json`.
#[derive(Serialize)]
struct ListEntry {
    name: String,
    mode: String,
    dirs: Vec<PathBuf>,
    changes: usize,
    running: bool,
    created_unix: u64,
    state: PathBuf,
}

fn list_cmd(root: &std::path::Path, json: bool) -> Result<()> {
    require_root()?;
    let mut entries = Vec::new();
    for sandbox in state::list(root)? {
        let manifest = sandbox.manifest()?;
        let mut changes = 0;
        for layer in sandbox.layers(&manifest.dirs) {
            changes += diff::layer_changes(&manifest.name, &layer)?.len();
        }
        entries.push(ListEntry {
            running: sandbox.in_use(),
            name: manifest.name,
            mode: manifest.mode,
            dirs: manifest.dirs,
            changes,
            created_unix: manifest.created_unix,
            state: sandbox.path,
        });
    }
    let mut out = std::io::stdout().lock();
    if json {
        for e in &entries {
            writeln!(out, "{}", serde_json::to_string(e)?)?;
        }
        return Ok(());
    }
    if entries.is_empty() {
        writeln!(out, "no sandboxes in {}", root.display())?;
        return Ok(());
    }
    let width = entries.iter().map(|e| e.name.len()).max().unwrap_or(4).max(4);
    writeln!(out, "{:<width$}  {:<6}  {:>7}  {:<7}  DIRS", "NAME", "MODE", "CHANGES", "STATE")?;
    for e in &entries {
        let dirs: Vec<String> = e.dirs.iter().map(|d| d.display().to_string()).collect();
        let state = if e.running { "running" } else { "idle" };
        writeln!(out, "{:<width$}  {:<6}  {:>7}  {state:<7}  {}", e.name, e.mode, e.changes, dirs.join(" "))?;
    }
    Ok(())
}

fn discard_cmd(target: &Target) -> Result<()> {
    let sandbox = existing(target)?;
    let lock = sandbox.lock()?;
    sandbox.remove()?;
    drop(lock);
    println!("sandbox {} discarded ({} removed)", target.name, sandbox.path.display());
    Ok(())
}
