//! Policy compiled into the forms backends enforce themselves ("enforcement is pushed down"). The policy crate
//! produces these; the domain backends consume them. Both sides only share these plain structs.
//!
//! - [`ExecKillList`]: exec rules the kernel process backend kills at exec.
//! - [`FilePermissionPlan`]: which opens and execs the fanotify permission group must hold for a verdict.
//! - [`NetworkPlan`]: network rules the cgroup sock_addr programs evaluate in the kernel, and host rules for the proxy.
//! - [`KeystrokePlan`]: whether, whose and how keystrokes are captured.

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

/// Network rules compiled for the kernel's cgroup `sock_addr` programs (connect4/6, sendmsg4/6), which evaluate
/// them in order at every connect and unconnected UDP send, first match wins, and act before the packet leaves:
/// `block` fails the call with EPERM, `redirect` rewrites the destination to the local proxy, `throttle` tags the
/// socket for its rule's rate limit. Only rules whose every condition the kernel can evaluate are here; the policy
/// crate reports the others (they alert from user space after the event instead).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPlan {
    /// Kernel-evaluable rules in policy order (observe/alert rules too: an earlier exception must win).
    pub rules: Vec<NetRule>,
    /// Host-name rules for the proxy: checked against the HTTP `Host` / TLS SNI of redirected connections, in
    /// policy order, first match wins (an `Observe`/`Alert` host rule before a `Block` one is an exception to it).
    /// They apply to every connection a `Redirect` rule sent to the proxy, whatever that rule's position.
    pub host_rules: Vec<HostRule>,
}

impl NetworkPlan {
    /// True when some rule redirects (the proxy must run).
    pub fn needs_proxy(&self) -> bool {
        self.rules.iter().any(|r| r.action == NetAction::Redirect)
    }

    /// True when some rule throttles.
    pub fn needs_throttle(&self) -> bool {
        self.rules.iter().any(|r| matches!(r.action, NetAction::Throttle { .. }))
    }

    /// True when some rule blocks, redirects or throttles (the kernel must evaluate rules at all).
    pub fn enforces(&self) -> bool {
        self.rules.iter().any(|r| !matches!(r.action, NetAction::Observe | NetAction::Alert))
    }
}

/// One network rule as the kernel evaluates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRule {
    /// The policy rule id (events carry it).
    pub id: String,
    /// What happens on a match.
    pub action: NetAction,
    /// Every non-empty condition must hold.
    pub matcher: NetMatch,
    /// The rule does not match when every non-empty condition of this block holds.
    pub not: Option<NetMatch>,
}

/// What a network rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetAction {
    /// Record the rule id, act on nothing (an exception to later rules).
    Observe,
    /// Let it through, report it as `alerted`.
    Alert,
    /// Refuse the connect/send with EPERM, report `blocked`.
    Block,
    /// Send the connection to the local proxy, which relays it and reports the original destination, HTTP Host
    /// and TLS SNI (`redirected`).
    Redirect,
    /// Limit the socket's egress to this many bytes per second (`throttled`).
    Throttle {
        /// The rate, bytes per second.
        bytes_per_sec: u64,
    },
}

/// Transport protocols a network rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// Conditions of a network rule, each a list meaning "any of"; an empty list is no condition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetMatch {
    /// Destination networks (address, prefix length); an IPv4 network also matches IPv4-mapped IPv6 addresses.
    pub dst: Vec<(std::net::IpAddr, u8)>,
    /// Destination port ranges, inclusive.
    pub dst_ports: Vec<(u16, u16)>,
    /// Transport protocol; `None` is any.
    pub protocol: Option<NetProtocol>,
    /// Real uids of the acting process (a policy's `user` and `uid`, intersected when both are given).
    pub uids: Vec<u32>,
    /// Exact executable paths of the acting process (canonical, absolute).
    pub exe_exact: Vec<String>,
    /// Directories (absolute, ending in `/`) whose executables, at any depth, match.
    pub exe_prefixes: Vec<String>,
    /// cgroup v2 paths relative to the cgroup2 mount (`/` is the root, `/ringwatch-test`); the acting process must
    /// be in that cgroup or below it.
    pub cgroups: Vec<String>,
}

/// A host-name rule the proxy applies to redirected connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    /// The policy rule id.
    pub id: String,
    /// Host-name globs (`*.example.com`, `example.com`), compared case-insensitively without a trailing dot. The
    /// globs are stored lowercase without a trailing dot; `*` matches any run of characters, dots included (so
    /// `*.example.com` matches `a.b.example.com` but not `example.com`), `?` one character, `[...]` a class
    /// (`ringwatch_policy::HostSet` implements exactly this).
    pub hosts: Vec<String>,
    /// `Block` closes the connection before any byte reaches the server; `Alert` and `Observe` relay it.
    pub action: NetAction,
}

/// Keystroke capture settings from the policy's `keystrokes` section. Capture is off unless `enabled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeystrokePlan {
    /// Nothing is captured unless this is true.
    pub enabled: bool,
    /// Real uids whose input is captured; empty is every user.
    pub uids: Vec<u32>,
    /// Primary gids of the reading process whose input is captured; empty is every group.
    pub gids: Vec<u32>,
    /// Terminal globs (`pts/*`, `tty1`); empty is every terminal. X11 input has no terminal and ignores this.
    pub ttys: Vec<String>,
    /// Redact input read with the terminal's ECHO off in canonical mode (password prompts), in the kernel. On by
    /// default; turning it off is a policy decision the agent announces at start.
    pub redact_echo_off: bool,
    /// Partial input (no Enter yet) is flushed as an event after this long without a key.
    pub idle_flush: Duration,
    /// DLP patterns: (rule id, regex). A match makes the event `alerted` with that rule and masks the matched text.
    pub alert_patterns: Vec<(String, String)>,
    /// How long keystroke events are kept in the store (separate from other events); `None`: the store's default.
    pub retention: Option<Duration>,
}

impl Default for KeystrokePlan {
    fn default() -> Self {
        KeystrokePlan {
            enabled: false,
            uids: Vec::new(),
            gids: Vec::new(),
            ttys: Vec::new(),
            redact_echo_off: true,
            idle_flush: Duration::from_secs(2),
            alert_patterns: Vec::new(),
            retention: None,
        }
    }
}
