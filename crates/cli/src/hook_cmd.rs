//! `ringwatch hook env|install|uninstall`: inject the LD_PRELOAD hook library per process or system-wide.
//!
//! The hook reports to the agent's socket and asks it for a verdict; without a running agent (`ringwatch run` with
//! a user-mode process backend) hooked programs run unchanged.

use std::path::Path;

use anyhow::{Context, Result};
use ringwatch_domains::preload;

use crate::{MissingCapability, require_root};

fn library() -> Result<std::path::PathBuf> {
    preload::hook_library_path().ok_or_else(|| {
        MissingCapability(
            "libringwatch_hook.so not found next to the ringwatch binary; build it with `cargo build -p ringwatch-hook` (make does)"
                .into(),
        )
        .into()
    })
}

/// Prints `LD_PRELOAD=/abs/path/libringwatch_hook.so` for `env $(ringwatch hook env) CMD`.
pub fn env() -> Result<()> {
    println!("LD_PRELOAD={}", library()?.display());
    Ok(())
}

/// Adds the library to the preload file.
pub fn install(file: &Path) -> Result<()> {
    require_root("ringwatch hook install")?;
    let lib = library()?;
    let changed = preload::install(&lib, file).with_context(|| format!("editing {}", file.display()))?;
    println!("{}: {}", file.display(), if changed { "hook installed" } else { "hook already installed" });
    Ok(())
}

/// Removes the library from the preload file.
pub fn uninstall(file: &Path) -> Result<()> {
    require_root("ringwatch hook uninstall")?;
    let lib = library()?;
    let changed = preload::uninstall(&lib, file).with_context(|| format!("editing {}", file.display()))?;
    println!("{}: {}", file.display(), if changed { "hook removed" } else { "hook was not installed" });
    Ok(())
}
