//! Event counts by domain, mode, source, activity and action: [`MetricsSink`] counts them as batches pass, a
//! scrape reads a snapshot.
//!
//! The pipeline hands every batch to every sink, so this sink must cost next to nothing: the key is the tuple of
//! the event's enums (a few bytes to hash, no string per event), the map is locked once per batch, and a run of
//! equal keys (an exec storm) is one map update. Label strings are made only at scrape time.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use ringwatch_core::sink::Sink;
use ringwatch_core::{Action, Activity, Domain, Event, Mode, SourceKind};

/// The labels of one `ringwatch_events_total` series, as the enums themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct EventKey {
    domain: Domain,
    mode: Mode,
    source: SourceKind,
    activity: Activity,
    action: Action,
}

impl EventKey {
    fn of(ev: &Event) -> Self {
        EventKey {
            domain: ev.domain,
            mode: ev.backend.mode,
            source: ev.backend.source,
            activity: ev.activity,
            action: ev.action,
        }
    }

    /// The label pairs of this series.
    pub(super) fn labels(&self) -> [(&'static str, &'static str); 5] {
        [
            ("domain", self.domain.as_str()),
            ("mode", self.mode.as_str()),
            ("source", self.source.as_str()),
            ("activity", self.activity.as_str()),
            ("action", self.action.as_str()),
        ]
    }
}

/// Counts per series, shared by the sink (pipeline thread) and the scrape (metrics thread).
#[derive(Debug, Clone, Default)]
pub(super) struct EventCounts(Arc<Mutex<HashMap<EventKey, u64>>>);

impl EventCounts {
    fn lock(&self) -> MutexGuard<'_, HashMap<EventKey, u64>> {
        // Plain counters stay valid if a holder panicked; keep counting rather than lose the endpoint.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, events: &[Event]) {
        let mut map = self.lock();
        let mut run: Option<(EventKey, u64)> = None;
        for key in events.iter().map(EventKey::of) {
            match &mut run {
                Some((k, n)) if *k == key => *n += 1,
                _ => {
                    if let Some((k, n)) = run.replace((key, 1)) {
                        *map.entry(k).or_default() += n;
                    }
                }
            }
        }
        if let Some((k, n)) = run {
            *map.entry(k).or_default() += n;
        }
    }

    /// Every series with its count, sorted by labels so that scrapes list them in a stable order.
    pub(super) fn snapshot(&self) -> Vec<(EventKey, u64)> {
        let mut series: Vec<(EventKey, u64)> = self.lock().iter().map(|(k, n)| (*k, *n)).collect();
        series.sort_unstable_by_key(|(k, _)| k.labels());
        series
    }
}

/// Counts events by domain/mode/source/activity/action as they pass; the pipeline writes it like any sink.
#[derive(Debug, Default)]
pub struct MetricsSink {
    counts: EventCounts,
}

impl MetricsSink {
    /// A handle to the counts for the scrape side.
    pub(super) fn counts(&self) -> EventCounts {
        self.counts.clone()
    }
}

impl Sink for MetricsSink {
    fn name(&self) -> &str {
        "metrics"
    }

    fn write_batch(&mut self, events: &[Event]) -> io::Result<()> {
        self.counts.add(events);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use ringwatch_core::Backend;

    use super::*;

    /// An event of `domain`/`activity` from `mode`/`source` with `action`.
    pub(crate) fn event(domain: Domain, activity: Activity, mode: Mode, source: SourceKind, action: Action) -> Event {
        let mut ev = Event::new(domain, activity, Backend { mode, source });
        ev.action = action;
        ev
    }

    fn count(series: &[(EventKey, u64)], labels: [&str; 5]) -> Option<u64> {
        series.iter().find(|(k, _)| k.labels().map(|(_, v)| v) == labels).map(|(_, n)| *n)
    }

    #[test]
    fn the_sink_counts_events_by_their_labels_across_batches() {
        let exec = event(Domain::Process, Activity::Exec, Mode::Kernel, SourceKind::Ebpf, Action::Observed);
        let alert = event(Domain::Process, Activity::Exec, Mode::Kernel, SourceKind::Ebpf, Action::Alerted);
        let open = event(Domain::File, Activity::Open, Mode::User, SourceKind::Preload, Action::Observed);
        let mut sink = MetricsSink::default();
        let counts = sink.counts();
        sink.write_batch(&[exec.clone(), exec.clone(), alert.clone(), exec.clone(), open.clone()]).expect("write");
        sink.write_batch(&[open, exec]).expect("write");
        sink.write_batch(&[]).expect("empty batch");
        let series = counts.snapshot();
        assert_eq!(series.len(), 3, "{series:?}");
        assert_eq!(count(&series, ["process", "kernel", "ebpf", "exec", "observed"]), Some(4));
        assert_eq!(count(&series, ["process", "kernel", "ebpf", "exec", "alerted"]), Some(1));
        assert_eq!(count(&series, ["file", "user", "preload", "open", "observed"]), Some(2));
        let keys: Vec<_> = series.iter().map(|(k, _)| k.labels()).collect();
        assert!(keys.is_sorted(), "stable order: {keys:?}");
    }
}
