//! Core of ringwatch: the event contract every backend emits, and the machinery that carries events from the
//! backends to the sinks.
//!
//! `core` knows no kernel layouts and no wire formats: backends in `ringwatch-domains` turn BPF records,
//! netlink messages and hook messages into [`Event`]s, and everything downstream works on those.
//!
//! # Layout
//!
//! - [`compiled`]: policy compiled into the forms backends enforce themselves (kernel kill lists, ...).
//! - [`decide`]: the [`Decider`] trait policy implements, used by hooks (before the act) and the pipeline.
//! - [`event`]: the JSON event contract of DESIGN.md §4 (OCSF-aligned serde structs).
//! - [`event_id`]: unique event ids (instance prefix + sequence), the key for exactly-once storage.
//! - [`guid`]: stable, never-reused process ids from boot id + pid + start time.
//! - [`proc_table`]: the process table, seeded from /proc and kept current from events; it fills in
//!   parent guid, ancestry, user names and session data for every event.
//! - [`source`]: the [`Source`] trait every domain×mode backend implements, and probe results.
//! - [`shutdown`]: the one shutdown token handed to every source and thread.
//! - [`pipeline`]: bounded queue from sources to the consumer, batching, drop counters, sensor events.
//! - [`sink`]: where events go (JSON lines to stdout or a file); other crates add stores and forwarders.
#![forbid(unsafe_code)]

pub mod compiled;
pub mod decide;
pub mod event;
pub mod event_id;
pub mod guid;
pub mod pipeline;
pub mod proc_table;
pub mod shutdown;
pub mod sink;
pub mod source;

pub use decide::{ContentCheck, Decider, Decision, ObserveAll, TimeoutVerdict};
pub use event::{
    Action, Activity, Backend, DnsInfo, Domain, Event, FileInfo, HttpInfo, KeystrokeInfo, Mode, NetworkInfo, Process,
    SensorInfo, SourceKind, Timestamp, TlsInfo, WindowInfo,
};
pub use pipeline::{EventSender, Pipeline, PipelineStats};
pub use shutdown::Shutdown;
pub use source::{Probe, Source, SourceContext, SourceError};
