//! ringwatch policy: reads a policy file, reports every mistake in it with its line and field, and turns the rules
//! into what the sensor acts on: a [`Decider`](ringwatch_core::Decider) for events, the kernel's exec kill list,
//! the fanotify permission plan for file rules, the network plan for the kernel's cgroup programs and the proxy,
//! the keystroke capture plan, and a pipeline stage that enforces the rest from user space (and masks DLP matches
//! in keystrokes).
//!
//! ```yaml
//! rules:
//!   - id: no-tmp-exec
//!     domain: process
//!     match: { exe: "/tmp/**" }
//!     action: kill
//!   - id: curl-pipe-shell
//!     domain: process
//!     description: a download piped into a shell
//!     match: { cmdline: 'curl .*\| *(ba)?sh', not: { user: root } }
//!     action: alert
//! ```
//!
//! ```
//! use ringwatch_policy::{Enforcement, Policy};
//!
//! let text = "rules:\n  - id: no-tmp-exec\n    domain: process\n    match: { exe: \"/tmp/**\" }\n    action: kill\n";
//! let policy = Policy::from_str(text, "policy.yaml").expect("valid");
//! assert_eq!(policy.rules()[0].enforcement(), &Enforcement::KernelAtExec);
//! assert_eq!(policy.exec_kill_list().dir_prefixes, vec![("/tmp/".to_owned(), 0)]);
//!
//! let err = Policy::from_str("rules:\n  - id: x\n    domain: process\n    match: { exe: nc }\n    action: kill\n", "p.yaml")
//!     .expect_err("relative path");
//! assert!(err.to_string().starts_with("p.yaml:4: rules[0].match.exe: relative path `nc`"));
//! ```
//!
//! # Format
//!
//! The top level holds `rules`, a list evaluated in file order: the first matching rule decides. `files` and
//! `exec_trust` configure the file domain, `keystrokes` keystroke capture (below). `sigma` is reserved for later and
//! rejected for now; any other field is an error. Each rule has:
//!
//! - `id` (required): unique, made of letters, digits, `_`, `.`, `-` (`exec_trust` is reserved).
//! - `domain` (required): `process`, `file` or `network`. `keystroke` is a valid word, but keystroke rules are
//!   rejected: keystrokes are configured in the `keystrokes` section.
//! - `description` (optional).
//! - `match` (required, not empty): every condition given must hold; a list value means "any of".
//!   - `exe`, `parent_exe`: exact absolute path (`/usr/bin/nc`), directory prefix (`/tmp/` or `/tmp/**`, the
//!     same thing), or glob (`/home/*/bin/*`, `"**/nc*"`; `*` stays within a path component, `**` does not).
//!     Relative paths are an error.
//!   - `cmdline`: regex, searched (unanchored) in argv joined with spaces.
//!   - `user`: name, resolved to a uid when the policy is loaded (unknown names are an error); `uid`: number.
//!     Both compare with the real uid.
//!   - `activity`: `exec` (the default), `fork`, `exit`.
//!   - `not`: a block of the same conditions (without `activity` and `not`); the rule does not match when all
//!     of them hold.
//! - `action` (required): `observe` (record the rule id; an exception to later rules), `alert`, `kill`, or `deny`
//!   (the same as `kill` for processes).
//!
//! File rules (`domain: file`) take other conditions: `path` (the file; exact, prefix or glob as for `exe`; a
//! rename matches by its old or new path), `activity` (`open`, `create`, `write`, `delete`, `rename`, `chmod`,
//! `exec`; all of them by default, `exec` alone when the rule has `sha256`), `exe`, `user`, `uid`, `sha256` (64 hex
//! digits each; only known at open and exec, so no other activity may be combined with it) and `not` (without
//! `activity`). Exact paths and prefixes also match their canonical form (symlinks resolved). Actions: `observe`,
//! `alert`, `deny` (the act fails with EPERM; a file rule never kills). Two more fields apply to file rules only:
//! `on_timeout: allow|deny` (the verdict when a hash is not ready in time: allow and alert, the default, or deny)
//! and `timeout_ms` (this rule's deadline).
//!
//! ```yaml
//! files:
//!   exclude: ["/var/cache/**", "**/*.swp"]   # monitor events dropped (noise control; verdicts still apply)
//!   max_events_per_pid: 2000                # monitor rate limit per process and second (0: none)
//!   verdict_timeout_ms: 500                 # default deadline of a permission verdict
//! exec_trust:                               # fapolicyd's trusted-only mode, checked before the rules
//!   mode: trusted_only                      # or off
//!   allow_paths: ["/usr/**", "/opt/**"]
//!   allow_sha256: [e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855]
//!   on_timeout: deny
//! ```
//!
//! Network rules (`domain: network`, docs/network-policy.md) take these conditions, each a value or a list meaning
//! "any of": `dst` (IPv4/IPv6 address or CIDR network; an IPv4 network also matches IPv4-mapped IPv6 addresses),
//! `dst_port` (number, or `"8000-8999"`), `protocol` (`tcp`, `udp`), `exe`/`parent_exe` (as for processes),
//! `user`/`uid`, `cgroup` (cgroup v2 path from the cgroup2 root, `/system.slice/x.service`; the subtree matches),
//! `host` (host-name globs, case-insensitive, matched against the DNS query, HTTP `Host`, TLS SNI and the name the
//! destination was resolved from), `activity` (`connect`, `accept`, `listen`, `close`, `send`, `dns`; `connect`
//! and `send` by default) and `not` (without `activity`). A redirected connection is matched by the destination the
//! process asked for (`network.original_dst`). Actions: `observe`, `alert`, `block` (EPERM), `redirect` (to the
//! local proxy) and `{ throttle: 1MiB/s }` (units B/s, KB/s, KiB/s, MB/s, MiB/s, GB/s, GiB/s).
//!
//! ```yaml
//! rules:
//!   - id: no-metadata
//!     domain: network
//!     match: { dst: 169.254.169.254/32 }
//!     action: block
//!   - id: slow-backup
//!     domain: network
//!     match: { exe: /usr/bin/rsync, dst_port: "873" }
//!     action: { throttle: 1MiB/s }
//! keystrokes:                               # capture is off unless enabled (docs/keystroke-policy.md)
//!   enabled: true
//!   users: [alice]                          # names -> uids; `groups` (names -> gids) and `ttys` (globs) too
//!   redact_echo_off: true                   # the default: password prompts never leave the kernel
//!   idle_flush: 2s
//!   retention: 7d
//!   alert_patterns: ['\b4[0-9]{12}(?:[0-9]{3})?\b', { id: aws-key, pattern: 'AKIA[0-9A-Z]{16}' }]
//! ```
//!
//! A file without rules is valid: it only observes.
//!
//! # Enforcement
//!
//! Kill rules whose whole condition is exact paths or directory prefixes of `exe` go into the kernel's
//! [`ExecKillList`](ringwatch_core::compiled::ExecKillList) (SIGKILL at exec, before user code runs), unless an
//! earlier rule could match the same executables first. Every other kill rule is enforced by [`PolicyStage`]
//! right after the event; [`Rule::enforcement`] says which and why.
//!
//! File `deny` rules on `open`/`exec`, rules with `sha256` and `exec_trust` compile into the
//! [`FilePermissionPlan`](ringwatch_core::compiled::FilePermissionPlan) of the fanotify permission group, which
//! answers before the act ([`file`](mod@file) says how narrowly each rule is marked and what that costs). Other
//! file acts (create, write, delete, rename, chmod) can only be reported: their `deny` rules alert.
//!
//! Network `block`/`redirect`/`throttle` rules whose conditions and activities the kernel can evaluate go into the
//! [`NetworkPlan`](ringwatch_core::compiled::NetworkPlan) for the cgroup `sock_addr` programs (in policy order,
//! exceptions included), unless an earlier exception the kernel cannot evaluate may match the same traffic first.
//! Host-only `block` rules become host rules for the proxy, which only sees redirected connections. The rest are
//! enforced by the preload hooks in user mode and only alerted on otherwise; [`network_plan`] says which rule goes
//! where, and [`PolicyStage`] never marks a network event `blocked` itself.
//!
//! # Layout
//!
//! - [`error`]: [`PolicyError`], a list of [`Problem`]s, each `FILE:LINE: field.path: reason`.
//! - `yaml`: the YAML text as a tree whose every node and key knows its line (serde-saphyr `Spanned`).
//! - `compile`: walks that tree, checks every field, collects all problems, builds [`Rule`]s.
//! - [`pattern`]: path patterns (exact, prefix, glob) and command-line regexes, compiled for matching.
//! - [`rule`]: [`Rule`], its conditions, action and [`Enforcement`].
//! - [`users`]: user name -> uid and group name -> gid resolution ([`UserDb`]).
//! - [`file`](mod@file): the `files` and `exec_trust` sections and the file rules' permission plan.
//! - [`network`]: network condition values (networks, ports, cgroups, host globs) and what events offer them.
//! - [`network_plan`]: where each network rule is enforced, and the
//!   [`NetworkPlan`](ringwatch_core::compiled::NetworkPlan) for the kernel and the proxy.
//! - [`keystroke`]: the `keystrokes` section and its DLP patterns ([`Dlp`]).
//! - [`units`]: rates (`1MiB/s`) and durations (`500ms`, `7d`).
//! - `policy`: [`Policy`]: loading, the [`Decider`](ringwatch_core::Decider) impl (with hash-dependent
//!   `content_check`), the kernel kill list, the file permission plan, hit counters.
//! - `stage`: [`PolicyStage`], the pipeline stage, with the user-space kill, network alerts and keystroke DLP.
#![forbid(unsafe_code)]

mod compile;
pub mod error;
pub mod file;
pub mod keystroke;
pub mod network;
pub mod network_plan;
pub mod pattern;
mod policy;
pub mod rule;
mod stage;
pub mod units;
pub mod users;
mod yaml;

pub use error::{PolicyError, Problem, ProblemKind};
pub use file::{EXEC_TRUST_ID, ExecTrust, FileSettings};
pub use keystroke::Dlp;
pub use network::{HostSet, IpNet, NetworkSettings};
pub use pattern::{CmdlineSet, PathPattern, PathSet};
pub use policy::{Policy, Verdict};
pub use rule::{Conditions, Enforcement, Rule, RuleAction};
pub use stage::PolicyStage;
pub use users::UserDb;
