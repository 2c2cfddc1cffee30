//! The pipeline: sources -> bounded queue -> one consumer that enriches, applies policy stages and writes sinks.
//!
//! Sources never block on it: [`EventSender::send`] is a `try_send`, and a full queue increments that source's
//! drop counter instead of stalling a ring-buffer callback or a hook reply. Sources also report what they lost
//! before the queue (ring-buffer reserve failures, malformed records) through the same sender. Once a second the
//! consumer turns non-zero counter deltas into `sensor`/`drop` events, so nothing is lost silently.
//!
//! Every event gets its [`crate::event_id`] here, before any sink sees it. A sink that fails keeps the others
//! going: its failures are counted and reported as `sensor`/`error` events (at most one per sink per second) to
//! every sink, so a locked store still shows up in the JSON lines and on NATS.
//!
//! The consumer takes events in batches (up to [`BATCH_MAX`] per wake-up), which keeps per-event cost low and lets
//! sinks write one buffered chunk per batch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::event::{Activity, Event};
use crate::event_id::EventIds;
use crate::proc_table::ProcessTable;
use crate::sink::Sink;

/// Most events the consumer takes per wake-up.
pub const BATCH_MAX: usize = 1024;

/// How often drop counters are turned into sensor events.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// A step between enrichment and the sinks: policy evaluation, enforcement from user space, tagging.
pub trait Stage: Send {
    /// Looks at (and may change) one enriched event; `table` has the process context (parent exe, ...).
    fn apply(&mut self, ev: &mut Event, table: &ProcessTable);
}

/// Loss counters of one component (a source, or the pipeline itself).
#[derive(Debug, Default)]
pub struct LossCounters {
    /// Events dropped because the pipeline queue was full.
    pub queue_full: AtomicU64,
    /// Events the component lost before they reached it (e.g. BPF ring buffer full).
    pub lost_upstream: AtomicU64,
    /// Records that failed to decode (bad length, garbage from a hook).
    pub malformed: AtomicU64,
}

/// Counters shared by all senders, readable while the agent runs (metrics, tests, the final report).
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Events accepted into the queue.
    pub accepted: AtomicU64,
    /// Events written to the sinks.
    pub written: AtomicU64,
    /// Events waiting in the queue, sampled by the consumer at each batch.
    pub queue_depth: AtomicU64,
    components: Mutex<BTreeMap<String, Arc<LossCounters>>>,
    sink_errors: Mutex<BTreeMap<String, u64>>,
}

impl PipelineStats {
    /// The counters of `component`, created on first use.
    pub fn component(&self, component: &str) -> Arc<LossCounters> {
        let mut map = self.components.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(component.to_owned()).or_default().clone()
    }

    /// A snapshot: component -> (queue_full, lost_upstream, malformed).
    pub fn losses(&self) -> BTreeMap<String, (u64, u64, u64)> {
        let map = self.components.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|(k, c)| {
                let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
                (k.clone(), (load(&c.queue_full), load(&c.lost_upstream), load(&c.malformed)))
            })
            .collect()
    }

    /// A snapshot: sink name -> failed batch writes and flushes.
    pub fn sink_errors(&self) -> BTreeMap<String, u64> {
        self.sink_errors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn count_sink_error(&self, sink: &str) -> u64 {
        let mut map = self.sink_errors.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(sink.to_owned()).or_default();
        *n += 1;
        *n
    }
}

/// A source's handle into the pipeline. Cheap to clone; never blocks.
#[derive(Debug, Clone)]
pub struct EventSender {
    tx: Sender<Event>,
    stats: Arc<PipelineStats>,
    counters: Arc<LossCounters>,
}

impl EventSender {
    /// Queues one event. Returns false (and counts it) when the queue is full or the consumer is gone.
    pub fn send(&self, ev: Event) -> bool {
        match self.tx.try_send(ev) {
            Ok(()) => {
                self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Records `n` events lost before they reached the source (e.g. the kernel's ring buffer was full).
    pub fn count_lost_upstream(&self, n: u64) {
        self.counters.lost_upstream.fetch_add(n, Ordering::Relaxed);
    }

    /// Records one record that failed to decode.
    pub fn count_malformed(&self) {
        self.counters.malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// This sender's counters.
    pub fn counters(&self) -> &Arc<LossCounters> {
        &self.counters
    }
}

/// The bounded queue and its consumer.
#[derive(Debug)]
pub struct Pipeline {
    tx: Sender<Event>,
    rx: Receiver<Event>,
    stats: Arc<PipelineStats>,
    ids: EventIds,
}

impl Pipeline {
    /// A pipeline whose queue holds at most `capacity` events.
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        Pipeline { tx, rx, stats: Arc::default(), ids: EventIds::new() }
    }

    /// The prefix of every event id this pipeline assigns (unique per agent run).
    pub fn instance(&self) -> &str {
        self.ids.instance()
    }

    /// A sender for `component` (e.g. `process/kernel`); its losses are reported under that name.
    pub fn sender(&self, component: &str) -> EventSender {
        EventSender { tx: self.tx.clone(), stats: self.stats.clone(), counters: self.stats.component(component) }
    }

    /// The shared counters.
    pub fn stats(&self) -> Arc<PipelineStats> {
        self.stats.clone()
    }

    /// Consumes events until every sender is dropped and the queue is empty, then flushes the sinks.
    ///
    /// For each event: skip the agent's own activity, assign its id, update the process table, enrich, run the
    /// stages, write. `host` is stamped on every event.
    pub fn run(self, host: &str, table: &mut ProcessTable, stages: &mut [Box<dyn Stage>], sinks: &mut [Box<dyn Sink>]) {
        let Pipeline { tx, rx, stats, mut ids } = self;
        drop(tx);
        let own_pid = std::process::id();
        let mut reported: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        let mut sink_reports = SinkErrorReports::default();
        let mut last_report = Instant::now();
        let mut batch: Vec<Event> = Vec::with_capacity(BATCH_MAX);
        let mut disconnected = false;
        while !disconnected {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(ev) => batch.push(ev),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => disconnected = true,
            }
            while batch.len() < BATCH_MAX {
                match rx.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(_) => break,
                }
            }
            stats.queue_depth.store(rx.len() as u64, Ordering::Relaxed);
            if last_report.elapsed() >= DROP_REPORT_INTERVAL || disconnected {
                batch.extend(loss_reports(&stats, &mut reported));
                last_report = Instant::now();
            }
            batch.append(&mut sink_reports.pending);
            if batch.is_empty() {
                continue;
            }
            batch.retain(|ev| ev.process.pid != own_pid || ev.domain == crate::event::Domain::Sensor);
            for ev in batch.iter_mut() {
                ids.assign(&mut ev.id);
                ev.host.clear();
                ev.host.push_str(host);
                table.observe(ev);
                table.enrich(ev);
                for stage in stages.iter_mut() {
                    stage.apply(ev, table);
                }
            }
            for sink in sinks.iter_mut() {
                if let Err(e) = sink.write_batch(&batch) {
                    sink_reports.failed(&stats, sink.name(), "write", &e);
                }
            }
            stats.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
            table.reap();
            batch.clear();
        }
        for sink in sinks.iter_mut() {
            if let Err(e) = sink.flush() {
                sink_reports.failed(&stats, sink.name(), "flush", &e);
            }
        }
    }
}

/// Turns sink failures into `sensor`/`error` events, at most one per sink per [`DROP_REPORT_INTERVAL`].
#[derive(Default)]
struct SinkErrorReports {
    last: BTreeMap<String, (Instant, u64)>,
    pending: Vec<Event>,
}

impl SinkErrorReports {
    fn failed(&mut self, stats: &PipelineStats, sink: &str, op: &str, err: &std::io::Error) {
        let total = stats.count_sink_error(sink);
        let due = self.last.get(sink).is_none_or(|(at, _)| at.elapsed() >= DROP_REPORT_INTERVAL);
        if !due {
            return;
        }
        let since = total - self.last.get(sink).map_or(0, |(_, n)| *n);
        self.last.insert(sink.to_owned(), (Instant::now(), total));
        tracing::warn!(sink, error = %err, failures = total, "sink {op} failed; other sinks keep going");
        let msg = format!("sink {sink}: {op} failed: {err}");
        self.pending.push(Event::sensor(Activity::Error, &format!("sink:{sink}"), msg, Some(since)));
    }
}

/// Sensor `drop` events for every counter that grew since the last report.
fn loss_reports(stats: &PipelineStats, reported: &mut BTreeMap<String, (u64, u64, u64)>) -> Vec<Event> {
    let mut out = Vec::new();
    for (component, now) in stats.losses() {
        let before = reported.get(&component).copied().unwrap_or_default();
        // A sink's own buffer (the NATS spool) counts as its queue.
        let queue = if component.starts_with("sink:") {
            "events dropped: the sink's buffer is full (for NATS: the spool reached --spool-max-size)"
        } else {
            "events dropped: pipeline queue full"
        };
        let kinds = [
            (now.0 - before.0, queue),
            (now.1 - before.1, "events lost before the agent read them"),
            (now.2 - before.2, "malformed records discarded"),
        ];
        for (delta, what) in kinds {
            if delta > 0 {
                out.push(Event::sensor(Activity::Drop, &component, what, Some(delta)));
            }
        }
        reported.insert(component, now);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Backend, Domain, Mode, SourceKind};
    use crate::sink::MemorySink;

    fn exec_event(pid: u32) -> Event {
        let mut ev =
            Event::new(Domain::Process, Activity::Exec, Backend { mode: Mode::Kernel, source: SourceKind::Ebpf });
        ev.process.pid = pid;
        ev
    }

    #[test]
    fn full_queue_counts_drops_and_reports_them() {
        let pipeline = Pipeline::new(2);
        let sender = pipeline.sender("test/source");
        assert!(sender.send(exec_event(1)));
        assert!(sender.send(exec_event(2)));
        assert!(!sender.send(exec_event(3)));
        sender.count_malformed();
        drop(sender);
        let memory = MemorySink::default();
        let seen = memory.events();
        let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(memory)];
        pipeline.run("h", &mut ProcessTable::empty(), &mut [], &mut sinks);
        let seen = seen.lock().expect("not poisoned");
        assert_eq!(seen.iter().filter(|e| e.domain == Domain::Process).count(), 2);
        let drops: Vec<_> = seen.iter().filter(|e| e.activity == Activity::Drop).collect();
        assert_eq!(drops.len(), 2, "one report for queue-full, one for malformed: {drops:?}");
        assert!(drops.iter().all(|e| e.sensor.as_ref().and_then(|s| s.count) == Some(1)));
        assert!(seen.iter().all(|e| e.host == "h"));
        let ids: std::collections::BTreeSet<&str> = seen.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), seen.len(), "every event has its own id");
        assert!(!ids.contains(""));
    }

    struct FailingSink;

    impl Sink for FailingSink {
        fn name(&self) -> &str {
            "failing"
        }
        fn write_batch(&mut self, _: &[Event]) -> std::io::Result<()> {
            Err(std::io::Error::other("database is locked"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_sink_is_reported_to_the_others_which_keep_receiving() {
        let pipeline = Pipeline::new(8);
        let stats = pipeline.stats();
        let sender = pipeline.sender("s");
        sender.send(exec_event(1));
        let memory = MemorySink::default();
        let seen = memory.events();
        let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(FailingSink), Box::new(memory)];
        let consumer = std::thread::spawn(move || {
            pipeline.run("h", &mut ProcessTable::empty(), &mut [], &mut sinks);
        });
        std::thread::sleep(Duration::from_millis(300));
        sender.send(exec_event(2));
        drop(sender);
        consumer.join().expect("consumer");
        let seen = seen.lock().expect("not poisoned");
        assert_eq!(seen.iter().filter(|e| e.domain == Domain::Process).count(), 2);
        let errors: Vec<_> = seen.iter().filter(|e| e.activity == Activity::Error).collect();
        assert_eq!(errors.len(), 1, "one report within the interval: {errors:?}");
        let sensor = errors[0].sensor.as_ref().expect("sensor info");
        assert!(sensor.message.contains("database is locked"), "{}", sensor.message);
        assert_eq!(sensor.component.as_deref(), Some("sink:failing"));
        assert!(stats.sink_errors()["failing"] >= 2);
    }

    #[test]
    fn agent_own_events_are_not_reported() {
        let pipeline = Pipeline::new(8);
        let sender = pipeline.sender("s");
        sender.send(exec_event(std::process::id()));
        sender.send(exec_event(1));
        drop(sender);
        let memory = MemorySink::default();
        let seen = memory.events();
        let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(memory)];
        pipeline.run("h", &mut ProcessTable::empty(), &mut [], &mut sinks);
        let pids: Vec<u32> = seen.lock().expect("not poisoned").iter().map(|e| e.process.pid).collect();
        assert_eq!(pids, vec![1]);
    }
}
