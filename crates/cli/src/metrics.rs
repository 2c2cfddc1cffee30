//! `--metrics ADDR`: Prometheus text exposition of the agent's counters. SKELETON, being written.

use std::sync::Arc;

use anyhow::{Result, bail};
use ringwatch_core::pipeline::PipelineStats;
use ringwatch_core::{Event, Shutdown};
use ringwatch_core::sink::Sink;
use ringwatch_forward::ForwardStats;
use ringwatch_policy::Policy;
use ringwatch_store::StoreStats;

/// What the metrics endpoint reads.
pub struct MetricsInputs {
    /// Queue, accepted/written and loss counters.
    pub pipeline: Arc<PipelineStats>,
    /// Rule hit counters.
    pub policy: Arc<Policy>,
    /// The store's counters, when a store is configured.
    pub store: Option<Arc<StoreStats>>,
    /// The forwarder's counters, when forwarding is configured.
    pub forward: Option<Arc<ForwardStats>>,
}

/// Counts events by domain/mode/activity/action as they pass; the pipeline writes it like any sink.
pub struct MetricsSink {}

impl Sink for MetricsSink {
    fn name(&self) -> &str {
        "metrics"
    }

    fn write_batch(&mut self, _events: &[Event]) -> std::io::Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Binds `addr` and serves `GET /metrics` on a thread until `shutdown`.
pub fn start(_addr: &str, _inputs: MetricsInputs, _shutdown: Shutdown) -> Result<MetricsSink> {
    bail!("metrics are not built yet")
}
