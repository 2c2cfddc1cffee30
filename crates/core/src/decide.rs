//! Decisions: what policy says about one event. The policy crate implements [`Decider`]; backends that enforce
//! synchronously (the preload hook's verdict, fanotify permission events) call it before the act happens, and the
//! pipeline's policy stage calls it right after for everything else.
//!
//! A permission backend may have to read the file before it can answer (a rule on the file's SHA-256): it asks
//! [`Decider::content_check`] first, hashes within the returned deadline, and answers with
//! [`ContentCheck::on_timeout`] when the deadline passes.

use std::time::Duration;

use crate::event::{Action, Domain, Event};

/// The outcome for one event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// `Observed` (nothing matched or an observe rule), `Alerted`, or an enforcement action.
    pub action: Action,
    /// Id of the rule that decided, if any.
    pub rule: Option<String>,
}

/// What a permission verdict is when it cannot be given in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TimeoutVerdict {
    /// Let the act happen and report it (`alerted`): fail open, the default.
    #[default]
    Allow,
    /// Refuse the act (`denied`): fail closed.
    Deny,
}

impl TimeoutVerdict {
    /// The word used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutVerdict::Allow => "allow",
            TimeoutVerdict::Deny => "deny",
        }
    }
}

/// The answer to "does deciding this event need the file's content hash?": the rule that needs it, how long the
/// backend may take, and what to answer when it takes longer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentCheck {
    /// The rule (or `exec_trust`) whose outcome depends on the hash.
    pub rule: String,
    /// The deadline for the verdict, counted from when the backend read the event.
    pub timeout: Duration,
    /// The verdict when the deadline passes (or the file is too big to hash).
    pub on_timeout: TimeoutVerdict,
}

/// Something that maps an event to a decision. Must be cheap (hook verdicts wait on it) and thread-safe.
pub trait Decider: Send + Sync {
    /// Decides on `ev`. `parent_exe` is the parent's executable when the caller knows it.
    fn decide(&self, ev: &Event, parent_exe: Option<&str>) -> Decision;

    /// For a file `open`/`exec` about to be decided (`ev.file.sha256` not known yet): `Some` when the decision
    /// depends on the file's SHA-256, i.e. the first rule that could decide has a `sha256` condition whose other
    /// conditions hold. The default says the hash never matters.
    fn content_check(&self, _ev: &Event) -> Option<ContentCheck> {
        None
    }

    /// False when [`Decider::decide`] can never return an enforcement action (deny, kill, block, ...) for an
    /// event of `domain`. A backend that would have to hold an act to ask first (the file hooks wait for a verdict
    /// before every call) asks only when this is true, and otherwise reports after the fact. The default, true, is
    /// always correct, only slower.
    fn may_deny(&self, _domain: Domain) -> bool {
        true
    }
}

/// The default policy: observe everything, enforce nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObserveAll;

impl Decider for ObserveAll {
    fn decide(&self, _ev: &Event, _parent_exe: Option<&str>) -> Decision {
        Decision::default()
    }

    fn may_deny(&self, _domain: Domain) -> bool {
        false
    }
}
