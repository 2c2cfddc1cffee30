//! ringwatch policy: reads a policy file, reports every mistake in it with its line and field, and turns the rules
//! into what the sensor acts on: a [`Decider`](ringwatch_core::Decider) for events, the kernel's exec kill list,
//! and a pipeline stage that enforces the rest from user space.
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
//! The top level holds `rules`, a list evaluated in file order: the first matching rule decides. `keystrokes` and
//! `sigma` are reserved for later and rejected for now; any other field is an error. Each rule has:
//!
//! - `id` (required): unique, made of letters, digits, `_`, `.`, `-`.
//! - `domain` (required): `process`. `file`, `network` and `keystroke` are valid words but not supported yet.
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
//! A file without rules is valid: it only observes.
//!
//! # Enforcement
//!
//! Kill rules whose whole condition is exact paths or directory prefixes of `exe` go into the kernel's
//! [`ExecKillList`](ringwatch_core::compiled::ExecKillList) (SIGKILL at exec, before user code runs), unless an
//! earlier rule could match the same executables first. Every other kill rule is enforced by [`PolicyStage`]
//! right after the event; [`Rule::enforcement`] says which and why.
//!
//! # Layout
//!
//! - [`error`]: [`PolicyError`], a list of [`Problem`]s, each `FILE:LINE: field.path: reason`.
//! - `yaml`: the YAML text as a tree whose every node and key knows its line (serde-saphyr `Spanned`).
//! - `compile`: walks that tree, checks every field, collects all problems, builds [`Rule`]s.
//! - [`pattern`]: path patterns (exact, prefix, glob) and command-line regexes, compiled for matching.
//! - [`rule`]: [`Rule`], its conditions, action and [`Enforcement`].
//! - [`users`]: user name -> uid resolution ([`UserDb`]).
//! - `policy`: [`Policy`]: loading, the [`Decider`](ringwatch_core::Decider) impl, the kernel kill list, hit
//!   counters.
//! - `stage`: [`PolicyStage`], the pipeline stage, with the user-space kill.
#![forbid(unsafe_code)]

mod compile;
pub mod error;
pub mod pattern;
mod policy;
pub mod rule;
mod stage;
pub mod users;
mod yaml;

pub use error::{PolicyError, Problem, ProblemKind};
pub use pattern::{CmdlineSet, PathPattern, PathSet};
pub use policy::Policy;
pub use rule::{Conditions, Enforcement, Rule, RuleAction};
pub use stage::PolicyStage;
pub use users::UserDb;
