//! [`ForwardSink`]: the agent's sink to NATS. `write_batch` appends to the spool (disk only, never the network);
//! the publisher thread sends and trims it.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ringwatch_core::Event;
use ringwatch_core::pipeline::LossCounters;
use ringwatch_core::sink::Sink;

use crate::connect::Connector;
use crate::publisher::Publisher;
use crate::spool::{self, DEFAULT_SEGMENT_BYTES, SpoolConfig, SpoolWriter};
use crate::{ForwardError, ForwardOptions, ForwardStats};

/// How long [`Sink::flush`] (agent shutdown) waits for JetStream to acknowledge what is spooled. What is left
/// stays in the spool and is sent first by the next run.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `flush` waits when the server is not even connected (it may be just reconnecting).
const DRAIN_TIMEOUT_DISCONNECTED: Duration = Duration::from_secs(1);

/// The agent's sink to NATS: appends to the spool; a background thread publishes and trims it.
pub struct ForwardSink {
    writer: SpoolWriter,
    publisher: Publisher,
    stats: Arc<ForwardStats>,
}

impl ForwardSink {
    /// Opens the spool and starts the publisher thread. `losses` receives spool-full drops so the pipeline reports
    /// them as sensor/drop events.
    ///
    /// Fails on bad options (unreadable credentials or certificates), an unusable spool directory, or a spool
    /// already locked by another agent. A server that cannot be reached is not an error: events are spooled and
    /// sent once it can be.
    pub fn start(opts: ForwardOptions, losses: Arc<LossCounters>) -> Result<ForwardSink, ForwardError> {
        Self::start_with_segment_bytes(opts, losses, DEFAULT_SEGMENT_BYTES)
    }

    /// [`ForwardSink::start`] with another spool segment size (tests use small ones to exercise rolling).
    pub fn start_with_segment_bytes(
        opts: ForwardOptions,
        losses: Arc<LossCounters>,
        segment_bytes: u64,
    ) -> Result<ForwardSink, ForwardError> {
        let connector = Connector::new(&opts.nats, "ringwatch-agent")?;
        let stats = Arc::new(ForwardStats::default());
        let cfg = SpoolConfig { max_bytes: opts.spool_max_bytes, segment_bytes };
        let (writer, reader) = spool::open(&opts.spool_dir, cfg, stats.clone(), losses)?;
        let publisher = Publisher::spawn(reader, connector, stats.clone())
            .map_err(|e| ForwardError::Config(format!("starting the publisher thread: {e}")))?;
        Ok(ForwardSink { writer, publisher, stats })
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<ForwardStats> {
        self.stats.clone()
    }

    /// Waits up to `timeout` until JetStream has acknowledged everything spooled; true when it has. Gives up
    /// after a second when not connected.
    pub fn wait_drained(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        loop {
            if self.stats.spool_bytes.load(Ordering::Relaxed) == 0 {
                return true;
            }
            let waited = start.elapsed();
            let connected = self.stats.connected.load(Ordering::Relaxed);
            if waited >= timeout || (!connected && waited >= DRAIN_TIMEOUT_DISCONNECTED.min(timeout)) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Sink for ForwardSink {
    fn name(&self) -> &str {
        "nats"
    }

    fn write_batch(&mut self, events: &[Event]) -> io::Result<()> {
        self.writer.append(events).map(|_| ())
    }

    /// Fsyncs the spool, then gives the publisher up to [`DRAIN_TIMEOUT`] to get everything acknowledged.
    fn flush(&mut self) -> io::Result<()> {
        self.writer.sync()?;
        if !self.wait_drained(DRAIN_TIMEOUT) {
            let left = self.stats.spool_bytes.load(Ordering::Relaxed);
            tracing::warn!(
                bytes = left,
                "NATS forwarder: not everything was acknowledged; the rest stays spooled for the next start"
            );
        }
        Ok(())
    }
}

impl Drop for ForwardSink {
    fn drop(&mut self) {
        if let Err(e) = self.writer.sync() {
            tracing::warn!(error = %e, "spool fsync at shutdown failed");
        }
        self.publisher.stop();
    }
}
