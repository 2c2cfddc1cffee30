//! [`PolicyStage`]: the pipeline step that applies the policy to every enriched event, and the user-space
//! enforcement path for kill rules.
//!
//! User-space enforcement is after the fact: by the time the event reaches the pipeline the new image has started
//! running, so the kill is reported with `enforcement_delay_us` (event time to kill), keeping the report honest.
//! Kill rules in the kernel's [`ExecKillList`](ringwatch_core::compiled::ExecKillList) are enforced at exec by
//! the kernel backend when it runs; its events arrive already `killed` and are left alone here.
//!
//! **File events.** A file `deny` is enforced only synchronously, by the backend that holds the act: the fanotify
//! permission group (EPERM) or the preload hook (EACCES). Their events arrive already decided (`denied`, or
//! `alerted` for a timeout or a hash-based alert) and are left alone here, so nothing is decided twice. A monitor
//! event (fanotify notification, after the fact) that matches a `deny` rule means the act was *not* refused: the
//! open was not covered (a filesystem the permission group could not mark, the agent's own pid, a file replaced
//! before its inode mark followed), the verdict timed out with `on_timeout: allow`, no permission group runs
//! (`file=user`, or the monitor alone), or the activity cannot be refused at all (create, write, delete, rename,
//! chmod). Such an event becomes `alerted` with the rule id; a file event is never answered with a kill.
//! Rules with a `sha256` condition never match monitor events (they carry no hash), and the `exec_trust` gate
//! judges a monitor exec only when its path alone decides.
//!
//! **Network events.** `block`, `redirect` and `throttle` are enforced only by the backend that holds the
//! connect/send: the kernel's cgroup programs, the proxy (host rules) or the preload hooks. Their events arrive
//! with the action set (`blocked`, `redirected`, `throttled`) and are left alone here. A network event that is still
//! `observed` and matches such a rule was not acted on by anyone (a rule the kernel cannot evaluate, a host rule
//! on traffic that was not redirected, the `sock_diag` backend, or a monitor event of traffic the kernel let
//! through): it becomes `alerted` with the rule id, never `blocked`. The agent's own network events (the proxy
//! relaying redirected connections to their real destination) are not judged.
//!
//! **Keystroke events.** The `keystrokes.alert_patterns` DLP patterns run here, before any sink sees the event:
//! matches are masked and the event becomes `alerted` with the pattern id (see [`crate::keystroke`]).
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
///   with the rule id and no `enforcement_delay_us`;
/// - a `deny` rule (or the `exec_trust` gate) on a file event sets `action = alerted` and `rule`: the act already
///   happened (see the module documentation);
/// - a `block`/`redirect`/`throttle` rule on a network event sets `action = alerted` and `rule`: nobody acted on it;
/// - for a keystroke event (whatever its action), DLP patterns mask their matches in the text; the first matching
///   pattern marks a still-`observed` event `alerted` with its id.
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
        if ev.domain == Domain::Keystroke {
            self.policy.dlp().apply(ev);
            return;
        }
        if self.policy.is_observe_only() || ev.action != Action::Observed || ev.rule.is_some() {
            return;
        }
        if ev.domain == Domain::Network && ev.process.pid == std::process::id() {
            return; // the agent's own traffic: the proxy relaying redirected connections
        }
        let parent_exe = table.get(ev.process.ppid).map(|p| p.exe.as_str());
        let Some(verdict) = self.policy.judge(ev, parent_exe) else { return };
        ev.rule = Some(verdict.id.to_owned());
        match verdict.action {
            RuleAction::Observe => {}
            RuleAction::Alert => ev.action = Action::Alerted,
            RuleAction::Kill | RuleAction::Deny => {
                let killable = ev.domain == Domain::Process && matches!(ev.activity, Activity::Exec | Activity::Fork);
                ev.action = Action::Alerted;
                if killable && kill_process(ev, verdict.id) {
                    ev.action = Action::Killed;
                    ev.enforcement_delay_us = Some(Timestamp::now().0.saturating_sub(ev.time.0) / 1_000);
                }
            }
            // Never claim an enforcement nobody did: the backend that holds the connect sets these itself.
            RuleAction::Block | RuleAction::Redirect | RuleAction::Throttle { .. } => ev.action = Action::Alerted,
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
