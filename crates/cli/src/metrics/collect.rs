//! Scrape-time collectors: each reads the counters one component already keeps and encodes them, so a scrape
//! shows the live values and nothing is counted a second time for metrics.
//!
//! One [`Collector`] per component keeps each small; the store's and the forwarder's are registered only when
//! those are configured, under `ringwatch_store_` and `ringwatch_forward_`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use ringwatch_core::pipeline::PipelineStats;
use ringwatch_forward::ForwardStats;
use ringwatch_policy::Policy;
use ringwatch_store::StoreStats;

use super::MetricsInputs;
use super::events::EventCounts;

/// `Content-Type` of what [`encode`] produces.
pub(super) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// A registry that reads `inputs` and `events` at each scrape.
pub(super) fn registry(inputs: MetricsInputs, events: EventCounts) -> Registry {
    let mut registry = Registry::with_prefix("ringwatch");
    registry.register_collector(Box::new(BuildInfo));
    registry.register_collector(Box::new(EventsCollector(events)));
    registry.register_collector(Box::new(PipelineCollector(inputs.pipeline)));
    registry.register_collector(Box::new(PolicyCollector(inputs.policy)));
    if let Some(store) = inputs.store {
        registry.sub_registry_with_prefix("store").register_collector(Box::new(StoreCollector(store)));
    }
    if let Some(forward) = inputs.forward {
        registry.sub_registry_with_prefix("forward").register_collector(Box::new(ForwardCollector(forward)));
    }
    registry
}

/// The whole exposition in the Prometheus text format (0.0.4).
pub(super) fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(16 * 1024);
    prometheus_text::encode(&mut out, registry)?;
    Ok(out)
}

#[derive(Debug)]
struct BuildInfo;

impl Collector for BuildInfo {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let info = Info::new([("version", env!("CARGO_PKG_VERSION"))]);
        info.encode(enc.encode_descriptor(
            "build",
            "The running ringwatch's version (always 1)",
            None,
            info.metric_type(),
        )?)
    }
}

#[derive(Debug)]
struct EventsCollector(EventCounts);

impl Collector for EventsCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let series = self.0.snapshot().into_iter().map(|(key, n)| (key.labels(), n));
        counter_family(
            &mut enc,
            "events",
            "Events written to the sinks, by domain, backend and the action taken",
            series,
        )
    }
}

#[derive(Debug)]
struct PipelineCollector(Arc<PipelineStats>);

impl Collector for PipelineCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let stats = &self.0;
        counter(&mut enc, "pipeline_accepted", "Events accepted into the pipeline queue", load(&stats.accepted))?;
        counter(&mut enc, "pipeline_written", "Events written to the sinks", load(&stats.written))?;
        let depth = load(&stats.queue_depth);
        gauge(
            &mut enc,
            "pipeline_queue_depth",
            "Events waiting in the pipeline queue, sampled at each batch",
            None,
            depth,
        )?;
        let losses = stats.losses();
        let drops = losses.iter().flat_map(|(component, &(queue_full, lost_upstream, malformed))| {
            [("queue_full", queue_full), ("lost_upstream", lost_upstream), ("malformed", malformed)]
                .map(|(reason, n)| ([("component", component.as_str()), ("reason", reason)], n))
        });
        counter_family(
            &mut enc,
            "drops",
            "Events lost, by component and reason: queue_full (the pipeline queue was full), lost_upstream (lost \
             before the agent read them, e.g. a full BPF ring buffer), malformed (records that failed to decode)",
            drops,
        )?;
        let sink_errors = stats.sink_errors();
        let errors = sink_errors.iter().map(|(sink, &n)| ([("sink", sink.as_str())], n));
        counter_family(&mut enc, "sink_errors", "Failed batch writes and flushes, by sink", errors)
    }
}

#[derive(Debug)]
struct PolicyCollector(Arc<Policy>);

impl Collector for PolicyCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let hits = self.0.hits();
        let series = hits.iter().map(|(rule, n)| ([("rule", rule.as_str())], *n));
        counter_family(&mut enc, "policy_rule_hits", "Events that matched each policy rule", series)
    }
}

#[derive(Debug)]
struct StoreCollector(Arc<StoreStats>);

impl Collector for StoreCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        gauge(
            &mut enc,
            "size",
            "Size of the event store on disk (database and WAL)",
            Some(&Unit::Bytes),
            load(&s.size_bytes),
        )?;
        counter(&mut enc, "inserted", "Events inserted into the store", load(&s.inserted))?;
        counter(&mut enc, "duplicates", "Events skipped because the store already had their id", load(&s.duplicates))?;
        counter(
            &mut enc,
            "retention_deleted",
            "Events deleted by retention (age or size cap)",
            load(&s.retention_deleted),
        )?;
        counter(&mut enc, "errors", "Failed store batch writes", load(&s.errors))
    }
}

#[derive(Debug)]
struct ForwardCollector(Arc<ForwardStats>);

impl Collector for ForwardCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let f = &self.0;
        gauge(
            &mut enc,
            "spool",
            "Bytes in the spool not yet acknowledged by JetStream",
            Some(&Unit::Bytes),
            load(&f.spool_bytes),
        )?;
        counter(&mut enc, "published", "Events JetStream acknowledged", load(&f.published))?;
        counter(&mut enc, "spool_dropped", "Events dropped because the spool was full", load(&f.spool_dropped))?;
        counter(&mut enc, "errors", "Publish and connection failures (the events stay in the spool)", load(&f.errors))?;
        let connected = u64::from(f.connected.load(Ordering::Relaxed));
        gauge(&mut enc, "connected", "1 while connected to the NATS server, else 0", None, connected)
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// One counter without labels; the encoder appends `_total`.
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(enc.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// One gauge without labels; a unit is appended to the name (`_bytes`).
fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, unit: Option<&Unit>, value: u64) -> fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(enc.encode_descriptor(name, help, unit, metric.metric_type())?)
}

/// A counter with one series per `(labels, value)`.
fn counter_family<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use prometheus_parse::{Scrape, Value};
    use ringwatch_core::{Action, Activity, Domain, Mode, SourceKind};

    use super::super::MetricsSink;
    use super::super::events::tests::event;
    use super::*;

    const POLICY: &str = "rules:\n  - id: echo-alert\n    domain: process\n    match: { exe: /usr/bin/echo }\n    \
                          action: alert\n  - id: never\n    domain: process\n    match: { exe: /nowhere }\n    \
                          action: alert\n";

    /// Every input set, with distinct values so that a mix-up shows.
    fn hand_built() -> (MetricsInputs, EventCounts) {
        let pipeline = Arc::new(PipelineStats::default());
        pipeline.accepted.store(10, Ordering::Relaxed);
        pipeline.written.store(9, Ordering::Relaxed);
        pipeline.queue_depth.store(7, Ordering::Relaxed);
        pipeline.component("process/kernel").lost_upstream.store(3, Ordering::Relaxed);
        let policy = Policy::from_str(POLICY, "test.yaml").expect("valid policy");
        let mut echo = event(Domain::Process, Activity::Exec, Mode::Kernel, SourceKind::Ebpf, Action::Observed);
        echo.process.exe = "/usr/bin/echo".into();
        for _ in 0..2 {
            policy.evaluate(&echo, None).expect("echo-alert matches");
        }
        let store = StoreStats::default();
        store.size_bytes.store(4096, Ordering::Relaxed);
        store.inserted.store(5, Ordering::Relaxed);
        store.retention_deleted.store(1, Ordering::Relaxed);
        let forward = ForwardStats::default();
        forward.spool_bytes.store(123, Ordering::Relaxed);
        forward.published.store(4, Ordering::Relaxed);
        forward.connected.store(true, Ordering::Relaxed);
        let mut sink = MetricsSink::default();
        let denied = event(Domain::Network, Activity::Connect, Mode::User, SourceKind::Preload, Action::Denied);
        ringwatch_core::sink::Sink::write_batch(&mut sink, &[echo.clone(), echo, denied]).expect("count");
        let inputs = MetricsInputs {
            pipeline,
            policy: Arc::new(policy),
            store: Some(Arc::new(store)),
            forward: Some(Arc::new(forward)),
        };
        (inputs, sink.counts())
    }

    fn parse(text: &str) -> Scrape {
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
        let sample_lines = text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count();
        assert_eq!(scrape.samples.len(), sample_lines, "every sample line parses:\n{text}");
        scrape
    }

    fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
        let found = scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {metric}{labels:?}"));
        match found.value {
            Value::Counter(v) | Value::Gauge(v) => v,
            ref other => panic!("{metric} is not a counter or gauge: {other:?}"),
        }
    }

    #[test]
    fn a_hand_built_input_set_encodes_to_parseable_text_with_every_value() {
        let (inputs, events) = hand_built();
        let text = encode(&registry(inputs, events)).expect("encodes");
        let scrape = parse(&text);
        let exec = [("domain", "process"), ("mode", "kernel"), ("source", "ebpf"), ("activity", "exec")];
        assert_eq!(value(&scrape, "ringwatch_events_total", &exec), 2.0);
        assert_eq!(value(&scrape, "ringwatch_events_total", &[("source", "preload"), ("action", "denied")]), 1.0);
        assert_eq!(value(&scrape, "ringwatch_pipeline_accepted_total", &[]), 10.0);
        assert_eq!(value(&scrape, "ringwatch_pipeline_written_total", &[]), 9.0);
        assert_eq!(value(&scrape, "ringwatch_pipeline_queue_depth", &[]), 7.0);
        let lost = [("component", "process/kernel"), ("reason", "lost_upstream")];
        assert_eq!(value(&scrape, "ringwatch_drops_total", &lost), 3.0);
        assert_eq!(value(&scrape, "ringwatch_drops_total", &[("reason", "queue_full")]), 0.0);
        assert_eq!(value(&scrape, "ringwatch_policy_rule_hits_total", &[("rule", "echo-alert")]), 2.0);
        assert_eq!(value(&scrape, "ringwatch_policy_rule_hits_total", &[("rule", "never")]), 0.0);
        assert_eq!(value(&scrape, "ringwatch_store_size_bytes", &[]), 4096.0);
        assert_eq!(value(&scrape, "ringwatch_store_inserted_total", &[]), 5.0);
        assert_eq!(value(&scrape, "ringwatch_store_duplicates_total", &[]), 0.0);
        assert_eq!(value(&scrape, "ringwatch_store_retention_deleted_total", &[]), 1.0);
        assert_eq!(value(&scrape, "ringwatch_store_errors_total", &[]), 0.0);
        assert_eq!(value(&scrape, "ringwatch_forward_spool_bytes", &[]), 123.0);
        assert_eq!(value(&scrape, "ringwatch_forward_published_total", &[]), 4.0);
        assert_eq!(value(&scrape, "ringwatch_forward_spool_dropped_total", &[]), 0.0);
        assert_eq!(value(&scrape, "ringwatch_forward_errors_total", &[]), 0.0);
        assert_eq!(value(&scrape, "ringwatch_forward_connected", &[]), 1.0);
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        assert_eq!(value(&scrape, "ringwatch_build_info", &version), 1.0);
        assert!(text.contains("# TYPE ringwatch_sink_errors_total counter"), "{text}");
    }

    #[test]
    fn without_store_or_forwarder_their_metrics_are_absent() {
        let (mut inputs, events) = hand_built();
        inputs.store = None;
        inputs.forward = None;
        let text = encode(&registry(inputs, events)).expect("encodes");
        parse(&text);
        assert!(!text.contains("ringwatch_store_") && !text.contains("ringwatch_forward_"), "{text}");
        assert!(text.contains("ringwatch_pipeline_queue_depth 7"), "{text}");
    }
}
