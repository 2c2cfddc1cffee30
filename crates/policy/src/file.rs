//! The file domain's policy parts besides rules: the top-level `files` section (monitor noise control and the
//! default verdict deadline) and the `exec_trust` gate (fapolicyd's trusted-only mode), and how file rules compile
//! into the fanotify permission group's [`FilePermissionPlan`].
//!
//! # Marks, narrowest first
//!
//! Only rules that need a synchronous verdict are planned: `deny` rules on `open`/`exec`, rules with a `sha256`
//! condition (the hash is computed only there) and `exec_trust`. For each of them and each of `open`/`exec`:
//!
//! - `path` made only of exact paths: an inode mark per file (only opens of those files wait for the agent);
//! - `path` with directory prefixes (and exact paths): filesystem marks on the filesystems that can hold them;
//! - a glob in `path`, or no `path` at all (`exe`, `user`, `sha256` only): filesystem marks everywhere.
//!
//! A filesystem mark with `FAN_OPEN_PERM` makes every open on that filesystem wait for a round trip to the agent
//! (fapolicyd measured 4x on an open storm, DESIGN.md §2); `FAN_OPEN_EXEC_PERM` only execs. `policy check` says
//! which a policy needs.

use std::time::Duration;

use ringwatch_core::compiled::{DEFAULT_VERDICT_TIMEOUT, FilePermissionPlan, PermissionMarks};
use ringwatch_core::{Activity, Domain, TimeoutVerdict};

use crate::pattern::{PathPattern, PathSet};
use crate::rule::{Rule, RuleAction};

/// The id events carry when the `exec_trust` gate decided.
pub const EXEC_TRUST_ID: &str = "exec_trust";

/// The `files` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSettings {
    /// `exclude`: paths whose monitor events are dropped, as globs (ringwatch syntax; a directory prefix `/d/`
    /// becomes `/d/**`). Permission verdicts still apply to them.
    pub exclude_globs: Vec<String>,
    /// `max_events_per_pid`: the monitor's per-process rate limit (events per second, 0 = none); `None` keeps the
    /// backend's default.
    pub max_events_per_pid: Option<u32>,
    /// `verdict_timeout_ms`: default deadline of a permission verdict (500 ms unless set).
    pub verdict_timeout: Duration,
    /// `events`: the activities the kernel monitor subscribes to (`None`: all of them). Fewer activities mean
    /// fewer events the kernel must build for every file operation; permission rules are not affected.
    pub events: Option<Vec<Activity>>,
}

impl Default for FileSettings {
    fn default() -> Self {
        FileSettings {
            exclude_globs: Vec::new(),
            max_events_per_pid: None,
            verdict_timeout: DEFAULT_VERDICT_TIMEOUT,
            events: None,
        }
    }
}

/// `exec_trust: { mode: trusted_only, ... }`: an exec whose binary is neither under `allow_paths` nor has a hash in
/// `allow_sha256` is denied. Checked before the rules, for `exec` only; an exec that passes goes on to the rules.
#[derive(Debug, Clone)]
pub struct ExecTrust {
    pub(crate) allow_paths: PathSet,
    pub(crate) allow_sha256: Vec<String>,
    pub(crate) on_timeout: TimeoutVerdict,
    pub(crate) timeout: Option<Duration>,
    pub(crate) line: u32,
}

/// What the gate says about one exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trust {
    /// Under an allowed path, or an allowed hash.
    Trusted,
    /// Neither: deny.
    Untrusted,
    /// Not under an allowed path, and the hash is needed but unknown.
    NeedsHash,
}

impl ExecTrust {
    /// The allowed paths.
    pub fn allow_paths(&self) -> &PathSet {
        &self.allow_paths
    }

    /// The allowed hashes (lowercase hex).
    pub fn allow_sha256(&self) -> &[String] {
        &self.allow_sha256
    }

    /// The verdict when the hash cannot be computed in time.
    pub fn on_timeout(&self) -> TimeoutVerdict {
        self.on_timeout
    }

    /// The line the section starts on.
    pub fn line(&self) -> u32 {
        self.line
    }

    /// Judges the executable at `path` whose hash is `sha256` (if known).
    pub(crate) fn judge(&self, path: &str, sha256: Option<&str>) -> Trust {
        if self.allow_paths.is_match(path) {
            return Trust::Trusted;
        }
        if self.allow_sha256.is_empty() {
            return Trust::Untrusted;
        }
        match sha256 {
            Some(h) if self.allow_sha256.iter().any(|a| a.eq_ignore_ascii_case(h)) => Trust::Trusted,
            Some(_) => Trust::Untrusted,
            None => Trust::NeedsHash,
        }
    }

    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

/// True when `rule` needs a synchronous verdict for `activity` (it is in the permission plan).
pub(crate) fn needs_verdict(rule: &Rule, activity: Activity) -> bool {
    rule.domain == Domain::File
        && matches!(activity, Activity::Open | Activity::Exec)
        && rule.activities.contains(&activity)
        && (rule.action == RuleAction::Deny || rule.uses_hash())
}

/// Compiles the file rules and the trust gate into the permission group's plan.
pub(crate) fn plan(rules: &[Rule], trust: Option<&ExecTrust>, settings: &FileSettings) -> FilePermissionPlan {
    let mut plan = FilePermissionPlan { timeout: settings.verdict_timeout, ..FilePermissionPlan::default() };
    for rule in rules {
        for (activity, marks) in [(Activity::Open, &mut plan.open), (Activity::Exec, &mut plan.exec)] {
            if !needs_verdict(rule, activity) {
                continue;
            }
            add_scope(marks, rule.when.path.as_ref());
            plan.needs_hash |= rule.uses_hash();
        }
    }
    if let Some(t) = trust {
        plan.exec.everywhere = true;
        plan.needs_hash |= !t.allow_sha256.is_empty();
    }
    // Which process facts the decider reads: any file rule's condition counts (an earlier alert rule is evaluated
    // too when it comes first).
    for rule in rules.iter().filter(|r| r.domain == Domain::File) {
        for c in std::iter::once(&rule.when).chain(rule.unless.as_ref()) {
            plan.needs_exe |= c.exe.is_some();
            plan.needs_uid |= c.users.is_some() || c.uids.is_some();
        }
    }
    for m in [&mut plan.open, &mut plan.exec] {
        if m.everywhere {
            m.exact_paths.clear();
            m.dir_prefixes.clear();
        }
        m.exact_paths.sort();
        m.exact_paths.dedup();
        m.dir_prefixes.sort();
        m.dir_prefixes.dedup();
    }
    plan
}

/// Adds what `path` covers to `marks`: exact paths as inode marks, prefixes as filesystem marks, globs (or no path)
/// as everywhere.
fn add_scope(marks: &mut PermissionMarks, path: Option<&PathSet>) {
    let Some(set) = path else {
        marks.everywhere = true;
        return;
    };
    for p in set.patterns() {
        match p {
            PathPattern::Exact(e) => marks.exact_paths.push(e.clone()),
            PathPattern::DirPrefix(d) => marks.dir_prefixes.push(d.clone()),
            PathPattern::Glob(_) => marks.everywhere = true,
        }
    }
}
