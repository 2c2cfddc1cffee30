//! Policy compiled into the forms backends enforce themselves ("enforcement is pushed down"). The policy crate
//! produces these; the domain backends consume them. Both sides only share these plain structs.
//!
//! - [`ExecKillList`]: exec rules the kernel process backend kills at exec.
//! - [`FilePermissionPlan`]: which opens and execs the fanotify permission group must hold for a verdict.

use std::time::Duration;

/// Exec rules the kernel process backend enforces in the kernel: SIGKILL at `sched_process_exec`, before the new
/// image runs user code. Only rules whose whole condition is an exact path or a directory prefix land here; every
/// other kill rule is enforced from user space right after the event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecKillList {
    /// Rule ids; the `u32` in `exact` and `dir_prefixes` indexes this list, so the kernel reports which rule hit.
    pub rule_ids: Vec<String>,
    /// Absolute executable paths killed on exec.
    pub exact: Vec<(String, u32)>,
    /// Directories (absolute, ending in `/`) whose executables, at any depth, are killed on exec.
    pub dir_prefixes: Vec<(String, u32)>,
}

impl ExecKillList {
    /// True when there is nothing to enforce in the kernel.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.dir_prefixes.is_empty()
    }
}

/// Where one permission-event type (open or exec) needs a verdict, marked as narrowly as the rules allow.
///
/// Marks cost in proportion to what they cover: an inode mark makes only opens of that file wait for the agent; a
/// filesystem mark (needed for directory prefixes, globs, and rules that name no path) makes every open on that
/// filesystem wait for a round trip to the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermissionMarks {
    /// Absolute paths: one inode mark each (re-placed when the path starts naming another inode).
    pub exact_paths: Vec<String>,
    /// Directories (absolute, ending in `/`): a filesystem mark on every filesystem that can hold files under them.
    pub dir_prefixes: Vec<String>,
    /// Every filesystem needs a mark (a glob, or a rule with no `path`, e.g. only `exe` or `user`).
    pub everywhere: bool,
}

impl PermissionMarks {
    /// True when nothing needs a verdict.
    pub fn is_empty(&self) -> bool {
        self.exact_paths.is_empty() && self.dir_prefixes.is_empty() && !self.everywhere
    }
}

/// File rules compiled for the fanotify permission group (`FAN_CLASS_CONTENT`, `FAN_OPEN_PERM`,
/// `FAN_OPEN_EXEC_PERM`): which opens and execs the kernel must hold until the agent answers, and what the answer
/// needs. Only rules that must be answered synchronously are in it: `deny` rules on `open`/`exec`, rules with a
/// `sha256` condition (the hash is only known there) and the `exec_trust` gate. Alert-only rules stay with the
/// monitor, which costs the acting process nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePermissionPlan {
    /// Opens that need a verdict (`FAN_OPEN_PERM`).
    pub open: PermissionMarks,
    /// Execs that need a verdict (`FAN_OPEN_EXEC_PERM`; also the ELF interpreter, which the kernel opens for exec).
    pub exec: PermissionMarks,
    /// Some verdict depends on a file's SHA-256 (a `sha256` condition, or `exec_trust` with `allow_sha256`).
    pub needs_hash: bool,
    /// Some rule looks at the acting process's executable (read from `/proc/PID/exe` per event).
    pub needs_exe: bool,
    /// Some rule looks at the acting process's uid (read from `/proc/PID/status` per event).
    pub needs_uid: bool,
    /// Default deadline for one verdict; a rule may set its own.
    pub timeout: Duration,
    /// Files larger than this are not hashed: their verdict is the timeout verdict at once.
    pub max_hash_bytes: u64,
}

/// Default deadline for one permission verdict.
pub const DEFAULT_VERDICT_TIMEOUT: Duration = Duration::from_millis(500);

/// Default largest file hashed for a verdict (1 GiB).
pub const DEFAULT_MAX_HASH_BYTES: u64 = 1 << 30;

impl Default for FilePermissionPlan {
    fn default() -> Self {
        FilePermissionPlan {
            open: PermissionMarks::default(),
            exec: PermissionMarks::default(),
            needs_hash: false,
            needs_exe: false,
            needs_uid: false,
            timeout: DEFAULT_VERDICT_TIMEOUT,
            max_hash_bytes: DEFAULT_MAX_HASH_BYTES,
        }
    }
}

impl FilePermissionPlan {
    /// True when no open or exec needs a verdict: no permission group is needed.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.exec.is_empty()
    }

    /// True when every open on every marked filesystem waits for a verdict (the expensive case).
    pub fn needs_every_open(&self) -> bool {
        self.open.everywhere
    }

    /// True when some exec waits for a verdict.
    pub fn exec_checks(&self) -> bool {
        !self.exec.is_empty()
    }
}
