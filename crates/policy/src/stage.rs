//! [`PolicyStage`]: the pipeline step that applies the policy to every enriched event, and the user-space
//! enforcement path for kill rules.
//!
//! User-space enforcement is after the fact: by the time the event reaches the pipeline the new image has started
//! running, so the kill is reported with `enforcement_delay_us` (event time to kill), keeping the report honest.
//! Kill rules in the kernel's [`ExecKillList`](ringwatch_core::compiled::ExecKillList) are enforced at exec by
//! the kernel backend when it runs; its events arrive already `killed` and are left alone here.
//!
//! Before signalling, the stage checks that the pid still belongs to the process of the event (same start time
//! in /proc/PID/stat), so a pid reused since the event is never killed. A small window between that check and
//! the signal remains (closing it needs pidfds, which have no safe wrapper in our dependencies yet).

use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ringwatch_core::pipeline::Stage;
use ringwatch_core::proc_table::{ProcessTable, read_stat};
use ringwatch_core::{Action, Activity, Domain, Event, Timestamp};

use crate::policy::Policy;
use crate::rule::RuleAction;

/// Applies a [`Policy`] to events in the pipeline.
///
/// For each event that is still `observed` with no rule yet (a backend that enforced by itself, or a hook that
/// already asked the policy, has set them):
/// - an `observe` rule sets `rule`;
/// - an `alert` rule sets `action = alerted` and `rule`;
/// - a `kill`/`deny` rule on a process `exec` or `fork` event sends SIGKILL to the process right away and sets
///   `action = killed`, `rule` and `enforcement_delay_us`. If the process is already gone (or its pid now belongs
///   to another process, or the signal fails) nothing was enforced, and the event says so by being `alerted`
///   with the rule id and no `enforcement_delay_us`.
#[derive(Debug, Clone)]
pub struct PolicyStage {
    policy: Arc<Policy>,
}

impl PolicyStage {
    /// A stage applying `policy` (shared, e.g. with a hook verdict server).
    pub fn new(policy: Arc<Policy>) -> Self {
        PolicyStage { policy }
    }

    /// The policy applied.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// How often each rule matched, in rule order (see [`Policy::hits`]).
    pub fn hits(&self) -> Vec<(String, u64)> {
        self.policy.hits()
    }
}

impl Stage for PolicyStage {
    fn apply(&mut self, ev: &mut Event, table: &ProcessTable) {
        if self.policy.is_observe_only() || ev.action != Action::Observed || ev.rule.is_some() {
            return;
        }
        let parent_exe = table.get(ev.process.ppid).map(|p| p.exe.as_str());
        let Some(rule) = self.policy.evaluate(ev, parent_exe) else { return };
        ev.rule = Some(rule.id().to_owned());
        match rule.action() {
            RuleAction::Observe => {}
            RuleAction::Alert => ev.action = Action::Alerted,
            RuleAction::Kill | RuleAction::Deny => {
                let killable = ev.domain == Domain::Process && matches!(ev.activity, Activity::Exec | Activity::Fork);
                ev.action = Action::Alerted;
                if killable && kill_process(ev, rule.id()) {
                    ev.action = Action::Killed;
                    ev.enforcement_delay_us = Some(Timestamp::now().0.saturating_sub(ev.time.0) / 1_000);
                }
            }
        }
    }
}

/// Sends SIGKILL to the event's process if it is still the same process; true when the signal was delivered.
fn kill_process(ev: &Event, rule: &str) -> bool {
    let pid = ev.process.pid;
    if pid <= 1 || pid == std::process::id() {
        tracing::warn!(pid, rule, "kill rule matched init or the agent itself; not killing");
        return false;
    }
    let Ok(raw) = i32::try_from(pid) else { return false };
    if ev.process.start_ticks != 0 {
        let current = read_stat(pid);
        match current {
            Some(stat) if stat.start_ticks == ev.process.start_ticks => {}
            _ => return false, // gone, or the pid now names another process
        }
    }
    match kill(Pid::from_raw(raw), Signal::SIGKILL) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(e) => {
            tracing::warn!(pid, rule, error = %e, "could not kill process");
            false
        }
    }
}
