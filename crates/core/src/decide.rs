//! Decisions: what policy says about one event. The policy crate implements [`Decider`]; backends that enforce
//! synchronously (the preload hook's verdict, later fanotify permission events) call it before the act happens,
//! and the pipeline's policy stage calls it right after for everything else.

use crate::event::{Action, Event};

/// The outcome for one event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// `Observed` (nothing matched or an observe rule), `Alerted`, or an enforcement action.
    pub action: Action,
    /// Id of the rule that decided, if any.
    pub rule: Option<String>,
}

/// Something that maps an event to a decision. Must be cheap (hook verdicts wait on it) and thread-safe.
pub trait Decider: Send + Sync {
    /// Decides on `ev`. `parent_exe` is the parent's executable when the caller knows it.
    fn decide(&self, ev: &Event, parent_exe: Option<&str>) -> Decision;
}

/// The default policy: observe everything, enforce nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObserveAll;

impl Decider for ObserveAll {
    fn decide(&self, _ev: &Event, _parent_exe: Option<&str>) -> Decision {
        Decision::default()
    }
}
