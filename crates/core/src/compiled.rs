//! Policy compiled into the forms backends enforce themselves ("enforcement is pushed down"). The policy crate
//! produces these; the domain backends consume them. Both sides only share these plain structs.

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
