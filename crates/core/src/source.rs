//! The [`Source`] trait that every domain×mode backend implements, and what `probe` reports about each.
//!
//! A backend's life: an associated `probe()` says whether it can run here and why not; an associated `start(..)`
//! does every fallible set-up step (open, load, attach, bind) synchronously, so a failure is reported before the
//! agent claims to be running and the domain can fall back; [`Source::run`] then runs on its own thread until the
//! shutdown token fires, drains, detaches and returns.

use std::fmt;

use serde::Serialize;

use crate::event::{Domain, Mode, SourceKind};
use crate::pipeline::EventSender;
use crate::shutdown::Shutdown;

/// What a started source gets to run with.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// Where to put events; never blocks, counts drops.
    pub events: EventSender,
    /// Fires when the agent stops.
    pub shutdown: Shutdown,
}

/// A started backend.
pub trait Source: Send {
    /// `domain/mode` name, e.g. `process/kernel`, used in logs and sensor events.
    fn name(&self) -> &'static str;

    /// Runs until `ctx.shutdown` fires, then drains, detaches everything it attached and returns.
    fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError>;
}

/// Why a backend could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The agent lacks a privilege (root, CAP_BPF, CAP_NET_ADMIN, ...). Exit code 3.
    #[error("{backend}: missing privilege: {what}")]
    MissingPrivilege {
        /// Backend name.
        backend: &'static str,
        /// Which privilege and for what.
        what: String,
    },
    /// The kernel or host lacks a feature the backend needs. Exit code 3.
    #[error("{backend}: unsupported here: {what}")]
    Unsupported {
        /// Backend name.
        backend: &'static str,
        /// Which feature and what was tried.
        what: String,
    },
    /// A set-up or run step failed.
    #[error("{backend}: {step}: {message}")]
    Failed {
        /// Backend name.
        backend: &'static str,
        /// The step that failed ("load", "attach handle_exec", "bind socket", ...).
        step: String,
        /// The underlying error.
        message: String,
    },
}

impl SourceError {
    /// True for errors that mean "this host cannot run it" (exit code 3) rather than a runtime failure.
    pub fn is_missing_capability(&self) -> bool {
        matches!(self, SourceError::MissingPrivilege { .. } | SourceError::Unsupported { .. })
    }
}

/// Whether one backend can run on this host, as `ringwatch probe` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// Domain.
    pub domain: Domain,
    /// Kernel or user.
    pub mode: Mode,
    /// Mechanism.
    pub source: SourceKind,
    /// True when `run` would start it.
    pub available: bool,
    /// What it uses when available, or why not.
    pub detail: String,
}

impl Probe {
    /// An available backend.
    pub fn ok(domain: Domain, mode: Mode, source: SourceKind, detail: impl Into<String>) -> Self {
        Probe { domain, mode, source, available: true, detail: detail.into() }
    }

    /// A backend that cannot run here, with the reason.
    pub fn unavailable(domain: Domain, mode: Mode, source: SourceKind, why: impl Into<String>) -> Self {
        Probe { domain, mode, source, available: false, detail: why.into() }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<10} {:<7} {:<15} {:<4} {}",
            self.domain.as_str(),
            self.mode.as_str(),
            self.source.as_str(),
            if self.available { "yes" } else { "no" },
            self.detail
        )
    }
}
