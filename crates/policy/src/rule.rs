//! A compiled rule: the conditions of its `match` block in matchable form, its action, and where it is enforced.
//!
//! Matching is ordered cheapest first (domain, activity, uid, paths, then the command-line regexes, which need
//! argv joined into one string: that string is built at most once per event, and only when some rule asks for it).
//!
//! A `sha256` condition can only be judged when the event carries the file's hash (`file.sha256`, computed by the
//! fanotify permission backend at open/exec). Without it, a rule that mentions `sha256` anywhere (in `match` or in
//! `not`) does not match: an unknown hash neither proves nor disproves anything, so it never fires a rule.

use std::fmt;
use std::time::Duration;

use ringwatch_core::compiled::NetProtocol;
use ringwatch_core::{Action, Activity, Domain, Event, TimeoutVerdict};

use crate::network::{self, HostSet, IpNet};
use crate::pattern::{CmdlineSet, PathSet};
use crate::units::format_rate;

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleAction {
    /// Record the rule id on the event; stop evaluating (an exception to later rules).
    Observe,
    /// Mark the event `alerted`.
    Alert,
    /// Kill the process (`killed`).
    Kill,
    /// For the process domain, the same as [`RuleAction::Kill`]; other domains will refuse the act instead.
    Deny,
    /// Network: refuse the connect/send (`blocked`).
    Block,
    /// Network: send the connection to the local proxy (`redirected`).
    Redirect,
    /// Network: limit the socket's egress to this rate (`throttled`).
    Throttle {
        /// Bytes per second.
        bytes_per_sec: u64,
    },
}

impl RuleAction {
    /// The word used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Observe => "observe",
            RuleAction::Alert => "alert",
            RuleAction::Kill => "kill",
            RuleAction::Deny => "deny",
            RuleAction::Block => "block",
            RuleAction::Redirect => "redirect",
            RuleAction::Throttle { .. } => "throttle",
        }
    }

    /// True for actions that act on something (kill, deny, block, redirect, throttle).
    pub fn is_enforcing(self) -> bool {
        !matches!(self, RuleAction::Observe | RuleAction::Alert)
    }

    /// The event action a match of a `domain` rule decides. For the process domain `deny` is `kill`: the
    /// backend that enforces maps it (the kernel kills at exec; the preload hook refuses the exec).
    pub fn event_action(self, domain: Domain) -> Action {
        match (self, domain) {
            (RuleAction::Observe, _) => Action::Observed,
            (RuleAction::Alert, _) => Action::Alerted,
            (RuleAction::Kill, _) | (RuleAction::Deny, Domain::Process) => Action::Killed,
            (RuleAction::Deny, _) => Action::Denied,
            (RuleAction::Block, _) => Action::Blocked,
            (RuleAction::Redirect, _) => Action::Redirected,
            (RuleAction::Throttle { .. }, _) => Action::Throttled,
        }
    }
}

impl fmt::Display for RuleAction {
    /// The policy word; a throttle with its rate (`throttle 1MiB/s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleAction::Throttle { bytes_per_sec } => write!(f, "throttle {}", format_rate(*bytes_per_sec)),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Where a rule's action is carried out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Enforcement {
    /// Nothing to enforce: an `observe` or `alert` rule.
    NotEnforcing,
    /// In the [`ExecKillList`](ringwatch_core::compiled::ExecKillList): the kernel process backend kills at
    /// exec, before the new image runs user code. When the process domain runs in user mode, the pipeline's
    /// [`PolicyStage`](crate::PolicyStage) enforces it instead, right after the event.
    KernelAtExec,
    /// Only the pipeline's [`PolicyStage`](crate::PolicyStage) can enforce it, right after the event (the process
    /// has already started running); the reason says why the kernel cannot.
    UserSpace {
        /// Why the rule is not kernel-enforceable, for `ringwatch policy check`.
        reason: String,
    },
    /// A file `deny` rule on `open` and/or `exec`: in the
    /// [`FilePermissionPlan`](ringwatch_core::compiled::FilePermissionPlan), so the fanotify permission group refuses
    /// the act with EPERM before it happens (the preload hook refuses with EACCES in user mode). Other activities of
    /// the same rule can only be reported (`alerted`).
    FilePermission,
    /// A file `deny` rule whose activities (create, write, delete, rename, chmod) no backend can refuse yet: matching
    /// events are reported as `alerted` with the rule id.
    AlertOnly {
        /// Why, for `ringwatch policy check`.
        reason: String,
    },
    /// A network `block`/`redirect`/`throttle` rule in the kernel's
    /// [`NetworkPlan`](ringwatch_core::compiled::NetworkPlan): the cgroup `sock_addr` programs act at connect and
    /// unconnected send, before a packet leaves. With the network domain in user mode, the preload hooks enforce
    /// `block` and `redirect` instead (they ask the [`Decider`](ringwatch_core::Decider) before connect and the
    /// first send to a destination); a hook cannot throttle, so there a throttle rule's matches are `alerted`.
    NetworkKernel,
    /// A network `block` rule whose only condition is `host`: a
    /// [`HostRule`](ringwatch_core::compiled::HostRule) the proxy applies to the HTTP `Host` / TLS SNI of
    /// connections that a `redirect` rule sent to it. Traffic that is not redirected is not refused by it: the
    /// preload hooks refuse it in user mode when they know the name (`network.dst_name`), and otherwise matching
    /// events are reported `alerted`.
    NetworkProxyHost,
    /// A network `block`/`redirect`/`throttle` rule the kernel cannot evaluate (the reason says why). In user mode
    /// the preload hooks enforce `block`/`redirect` synchronously through the
    /// [`Decider`](ringwatch_core::Decider) at connect and first send (not at name lookups, which they only
    /// report); with the kernel backend (or `sock_diag`), and for `throttle` everywhere, nothing acts on the
    /// traffic and matching events are reported `alerted` after the fact.
    NetworkHookOrAlert {
        /// Why the kernel cannot evaluate it, for `ringwatch policy check`.
        reason: String,
    },
}

/// One `match` (or `not`) block: every given condition must hold.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub(crate) exe: Option<PathSet>,
    pub(crate) cmdline: Option<CmdlineSet>,
    pub(crate) parent_exe: Option<PathSet>,
    pub(crate) users: Option<Vec<u32>>,
    pub(crate) uids: Option<Vec<u32>>,
    /// File rules: the file's path (`file.path`, or `file.new_path` of a rename).
    pub(crate) path: Option<PathSet>,
    /// File rules: SHA-256 digests, 64 lowercase hex digits each.
    pub(crate) sha256: Option<Vec<String>>,
    /// Network rules: destination networks (any of).
    pub(crate) dst: Option<Vec<IpNet>>,
    /// Network rules: destination port ranges, inclusive (any of).
    pub(crate) dst_ports: Option<Vec<(u16, u16)>>,
    /// Network rules: transport protocols (any of).
    pub(crate) protocols: Option<Vec<NetProtocol>>,
    /// Network rules: cgroup v2 paths relative to the cgroup2 mount; the process is in one of them or below.
    pub(crate) cgroups: Option<Vec<String>>,
    /// Network rules: host-name globs, matched against the DNS query, HTTP Host, TLS SNI and resolved name.
    pub(crate) hosts: Option<HostSet>,
}

impl Conditions {
    /// The `path` patterns (file rules), if the block has that condition.
    pub fn path(&self) -> Option<&PathSet> {
        self.path.as_ref()
    }

    /// The `sha256` digests (file rules, lowercase hex), if any.
    pub fn sha256(&self) -> Option<&[String]> {
        self.sha256.as_deref()
    }

    /// The `exe` patterns, if the block has that condition.
    pub fn exe(&self) -> Option<&PathSet> {
        self.exe.as_ref()
    }

    /// The `cmdline` regexes, if any.
    pub fn cmdline(&self) -> Option<&CmdlineSet> {
        self.cmdline.as_ref()
    }

    /// The `parent_exe` patterns, if any.
    pub fn parent_exe(&self) -> Option<&PathSet> {
        self.parent_exe.as_ref()
    }

    /// The uids that `user:` names resolved to, if the block has that condition.
    pub fn users(&self) -> Option<&[u32]> {
        self.users.as_deref()
    }

    /// The `uid:` values, if any.
    pub fn uids(&self) -> Option<&[u32]> {
        self.uids.as_deref()
    }

    /// Network rules: the destination networks, if any.
    pub fn dst(&self) -> Option<&[IpNet]> {
        self.dst.as_deref()
    }

    /// Network rules: the destination port ranges, if any.
    pub fn dst_ports(&self) -> Option<&[(u16, u16)]> {
        self.dst_ports.as_deref()
    }

    /// Network rules: the protocols, if any.
    pub fn protocols(&self) -> Option<&[NetProtocol]> {
        self.protocols.as_deref()
    }

    /// Network rules: the cgroup paths, if any.
    pub fn cgroups(&self) -> Option<&[String]> {
        self.cgroups.as_deref()
    }

    /// Network rules: the host-name globs, if any.
    pub fn hosts(&self) -> Option<&HostSet> {
        self.hosts.as_ref()
    }

    /// True when no condition is given.
    pub fn is_empty(&self) -> bool {
        self.exe.is_none()
            && self.cmdline.is_none()
            && self.parent_exe.is_none()
            && self.users.is_none()
            && self.uids.is_none()
            && self.path.is_none()
            && self.sha256.is_none()
            && self.dst.is_none()
            && self.dst_ports.is_none()
            && self.protocols.is_none()
            && self.cgroups.is_none()
            && self.hosts.is_none()
    }

    /// The uids the block allows (`user` and `uid` both hold when both are given); `None` when it names none.
    pub(crate) fn allowed_uids(&self) -> Option<Vec<u32>> {
        match (&self.users, &self.uids) {
            (None, None) => None,
            (Some(a), None) | (None, Some(a)) => Some(a.clone()),
            (Some(a), Some(b)) => Some(a.iter().copied().filter(|u| b.contains(u)).collect()),
        }
    }

    /// Names of the conditions other than `exe` that are present (for "why not in the kernel" reasons).
    pub(crate) fn non_exe_conditions(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.cmdline.is_some() {
            v.push("cmdline");
        }
        if self.parent_exe.is_some() {
            v.push("parent_exe");
        }
        if self.users.is_some() {
            v.push("user");
        }
        if self.uids.is_some() {
            v.push("uid");
        }
        if self.path.is_some() {
            v.push("path");
        }
        if self.sha256.is_some() {
            v.push("sha256");
        }
        v
    }

    /// Every condition holds; `sha256` is skipped when `ignore_hash` (for "could this rule match once the hash is
    /// known?").
    fn matches(&self, cx: &mut MatchContext<'_>, ignore_hash: bool) -> bool {
        let uid = cx.ev.process.uid;
        if self.uids.as_ref().is_some_and(|u| !u.contains(&uid))
            || self.users.as_ref().is_some_and(|u| !u.contains(&uid))
        {
            return false;
        }
        if self.exe.as_ref().is_some_and(|s| !s.is_match(&cx.ev.process.exe)) {
            return false;
        }
        if let Some(s) = &self.parent_exe
            && !cx.parent_exe.is_some_and(|p| s.is_match(p))
        {
            return false;
        }
        if let Some(s) = &self.path {
            let Some(f) = &cx.ev.file else { return false };
            if !s.is_match(&f.path) && !f.new_path.as_deref().is_some_and(|p| s.is_match(p)) {
                return false;
            }
        }
        if !ignore_hash && let Some(digests) = &self.sha256 {
            let hash = cx.ev.file.as_ref().and_then(|f| f.sha256.as_deref());
            if !hash.is_some_and(|h| digests.iter().any(|d| d.eq_ignore_ascii_case(h))) {
                return false;
            }
        }
        if !self.matches_network(cx.ev) {
            return false;
        }
        if let Some(s) = &self.cmdline
            && !s.is_match(cx.joined_cmdline())
        {
            return false;
        }
        true
    }

    /// The network conditions (destination, port, protocol, cgroup, host) hold; true when there are none.
    fn matches_network(&self, ev: &Event) -> bool {
        if self.dst.is_some() || self.dst_ports.is_some() {
            let (ip, port) = network::destination(ev);
            if let Some(nets) = &self.dst
                && !ip.is_some_and(|ip| nets.iter().any(|n| n.contains(ip)))
            {
                return false;
            }
            if let Some(ranges) = &self.dst_ports
                && !port.is_some_and(|p| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&p)))
            {
                return false;
            }
        }
        if let Some(protocols) = &self.protocols
            && !network::protocol(ev).is_some_and(|p| protocols.contains(&p))
        {
            return false;
        }
        if let Some(cgroups) = &self.cgroups {
            let Some(cg) = ev.process.cgroup.as_deref() else { return false };
            if !cgroups.iter().any(|c| network::cgroup_within(cg, c)) {
                return false;
            }
        }
        if let Some(hosts) = &self.hosts
            && !network::host_names(ev).any(|h| hosts.is_match(h))
        {
            return false;
        }
        true
    }
}

/// True when the event carries the file's content hash.
fn has_hash(ev: &Event) -> bool {
    ev.file.as_ref().is_some_and(|f| f.sha256.is_some())
}

/// What matching one event needs, with argv joined lazily and at most once for all rules.
pub(crate) struct MatchContext<'a> {
    ev: &'a Event,
    parent_exe: Option<&'a str>,
    joined: Option<String>,
}

impl<'a> MatchContext<'a> {
    pub(crate) fn new(ev: &'a Event, parent_exe: Option<&'a str>) -> Self {
        MatchContext { ev, parent_exe: parent_exe.filter(|p| !p.is_empty()), joined: None }
    }

    fn joined_cmdline(&mut self) -> &str {
        self.joined.get_or_insert_with(|| self.ev.process.cmdline.join(" "))
    }
}

/// One compiled policy rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) id: String,
    pub(crate) description: Option<String>,
    pub(crate) domain: Domain,
    pub(crate) action: RuleAction,
    pub(crate) activities: Vec<Activity>,
    pub(crate) when: Conditions,
    pub(crate) unless: Option<Conditions>,
    pub(crate) line: u32,
    pub(crate) enforcement: Enforcement,
    /// File rules: the verdict when a permission check of this rule cannot finish in time.
    pub(crate) on_timeout: TimeoutVerdict,
    /// File rules: this rule's verdict deadline, when it sets its own (`timeout_ms`).
    pub(crate) timeout: Option<Duration>,
}

impl Rule {
    /// The rule's id, unique in its policy.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The optional description.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The domain whose events the rule looks at.
    pub fn domain(&self) -> Domain {
        self.domain
    }

    /// What the rule does on a match.
    pub fn action(&self) -> RuleAction {
        self.action
    }

    /// The activities the rule applies to (`[exec]` unless the file says otherwise).
    pub fn activities(&self) -> &[Activity] {
        &self.activities
    }

    /// The `match` conditions (all must hold).
    pub fn conditions(&self) -> &Conditions {
        &self.when
    }

    /// The `not` block: when all of its conditions hold, the rule does not match.
    pub fn negated(&self) -> Option<&Conditions> {
        self.unless.as_ref()
    }

    /// The line of the policy file the rule starts on.
    pub fn line(&self) -> u32 {
        self.line
    }

    /// Where the rule's action is enforced.
    pub fn enforcement(&self) -> &Enforcement {
        &self.enforcement
    }

    /// File rules: the verdict when a permission check cannot finish in time (`on_timeout`, default allow).
    pub fn on_timeout(&self) -> TimeoutVerdict {
        self.on_timeout
    }

    /// File rules: the rule's own verdict deadline (`timeout_ms`), if it sets one.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// True when a `sha256` condition appears in `match` or `not`.
    pub fn uses_hash(&self) -> bool {
        self.when.sha256.is_some() || self.unless.as_ref().is_some_and(|n| n.sha256.is_some())
    }

    /// True when the rule matches `ev`; `parent_exe` is the parent's executable, when known.
    pub fn matches(&self, ev: &Event, parent_exe: Option<&str>) -> bool {
        self.matches_in(&mut MatchContext::new(ev, parent_exe))
    }

    pub(crate) fn matches_in(&self, cx: &mut MatchContext<'_>) -> bool {
        cx.ev.domain == self.domain
            && self.activities.contains(&cx.ev.activity)
            && (!self.uses_hash() || has_hash(cx.ev))
            && self.when.matches(cx, false)
            && !self.unless.as_ref().is_some_and(|n| n.matches(cx, false))
    }

    /// For a rule that [`uses_hash`](Rule::uses_hash) and an event without a hash: true when the rule could match
    /// once the hash is known (every condition but `sha256` holds, and a `not` block without `sha256` does not).
    pub(crate) fn may_match_with_hash(&self, cx: &mut MatchContext<'_>) -> bool {
        cx.ev.domain == self.domain
            && self.activities.contains(&cx.ev.activity)
            && self.when.matches(cx, true)
            && !self.unless.as_ref().is_some_and(|n| n.sha256.is_none() && n.matches(cx, false))
    }

    /// True when the rule can apply to exec events.
    pub(crate) fn applies_to_exec(&self) -> bool {
        self.domain == Domain::Process && self.activities.contains(&Activity::Exec)
    }
}
