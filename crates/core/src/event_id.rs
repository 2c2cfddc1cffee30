//! Event ids: unique across hosts and agent restarts, cheap to make, stable once assigned.
//!
//! An id is `INSTANCE-SEQ`: `INSTANCE` is 16 hex digits of randomness read once per agent run from the kernel
//! (`/proc/sys/kernel/random/uuid`), `SEQ` counts events of that run in hex, prefixed by one hex digit giving its
//! length minus one (`00`, `01`, ..., `0f`, `110`, ..., `1ff`, `2100`, ...), so that ids of one run sort in the
//! order they were assigned while staying short. Sorted ids matter to the store: its unique index on `id` then
//! grows at one end per agent run instead of taking every insert at a random page. The pipeline assigns it before any sink
//! sees the event, so the JSON lines, the store and the NATS forwarder all carry the same id; the forwarder uses it
//! as the JetStream message id and the collector's store keeps one row per id, which is what makes at-least-once
//! delivery store every event exactly once.

use std::fmt::Write as _;
use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

/// Hands out event ids for one agent run.
#[derive(Debug)]
pub struct EventIds {
    instance: String,
    next: u64,
}

impl EventIds {
    /// A generator with a fresh random instance prefix.
    pub fn new() -> Self {
        Self::with_instance(random_instance())
    }

    /// A generator with a given prefix (tests, replay).
    pub fn with_instance(instance: impl Into<String>) -> Self {
        EventIds { instance: instance.into(), next: 0 }
    }

    /// The instance prefix of this run.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Writes the next id into `out`, replacing what it held (reuses its allocation).
    pub fn assign(&mut self, out: &mut String) {
        out.clear();
        let digits = (u64::BITS - self.next.leading_zeros()).div_ceil(4).max(1);
        let _ = write!(out, "{}-{:x}{:x}", self.instance, digits - 1, self.next);
        self.next += 1;
    }
}

impl Default for EventIds {
    fn default() -> Self {
        Self::new()
    }
}

/// 64 random bits as 16 hex digits, from the kernel's uuid generator; falls back to time and pid mixed, which is
/// still unique per run on one host.
fn random_instance() -> String {
    let from_kernel = fs::read_to_string("/proc/sys/kernel/random/uuid")
        .ok()
        .map(|u| u.trim().replace('-', ""))
        .filter(|hex| hex.len() >= 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if let Some(hex) = from_kernel {
        return hex[..16].to_owned();
    }
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or_default();
    format!("{:016x}", nanos ^ (u64::from(std::process::id()) << 40))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sequential_within_a_run_and_differ_between_runs() {
        let mut a = EventIds::new();
        let mut b = EventIds::new();
        assert_eq!(a.instance().len(), 16);
        assert_ne!(a.instance(), b.instance());
        let (mut x, mut y) = (String::new(), String::new());
        a.assign(&mut x);
        a.assign(&mut y);
        assert_eq!(x, format!("{}-00", a.instance()));
        assert_eq!(y, format!("{}-01", a.instance()));
        b.assign(&mut x);
        assert!(x.starts_with(b.instance()));
    }

    #[test]
    fn ids_of_a_run_sort_in_assignment_order() {
        let mut ids = EventIds::with_instance("i");
        let mut prev = String::new();
        let mut id = String::new();
        for seq in (0..70_000u64).chain([u64::MAX - 1]) {
            ids.next = seq;
            ids.assign(&mut id);
            assert!(id > prev, "{id} after {prev}");
            prev.clone_from(&id);
        }
        assert_eq!(prev, "i-ffffffffffffffffe");
        ids.next = 0x10;
        ids.assign(&mut id);
        assert_eq!(id, "i-110");
    }
}
