//! The publisher: a background thread with a current-thread tokio runtime that moves spooled events to JetStream.
//!
//! Loop: connect (retrying with backoff) -> make sure the stream exists -> rewind the spool reader to the cursor ->
//! pump. Pumping keeps up to [`WINDOW`] publishes in flight (each carries `Nats-Msg-Id` = the event id) and awaits
//! their acknowledgements in order; each acknowledgement moves the spool cursor over the contiguous acknowledged
//! prefix. Any failure (a publish or an acknowledgement that errors or times out, a disconnect, a missing stream)
//! counts in `errors`, drops what is in flight, backs off and starts again at the cursor: at-least-once, with
//! JetStream's duplicate window and the collector's store dropping the copies.
//!
//! The pipeline thread never waits on this thread: it only appends to the spool and pokes a `Notify`.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use tokio::sync::Notify;

use crate::ForwardStats;
use crate::connect::{Backoff, Connector, ensure_stream, jetstream};
use crate::spool::{ItemKind, Position, SpoolReader};

/// Publishes in flight before the oldest acknowledgement is awaited. Enough to hide the round trip to a local or
/// LAN server at tens of thousands of events per second; bounded so a resend after a failure stays small.
pub const WINDOW: usize = 4096;

/// How often the segment being written is fsynced, and the cursor saved when it moved.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Failures are logged at warn at most this often (each one is counted in `errors`).
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The stop request shared with the thread.
#[derive(Default)]
struct Control {
    stop: AtomicBool,
    wake: Notify,
}

impl Control {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Completes once a stop is requested.
    async fn stopped(&self) {
        loop {
            let notified = self.wake.notified();
            if self.stopping() {
                return;
            }
            notified.await;
        }
    }

    /// Runs `f` unless a stop is requested first (then `None`).
    async fn or_stop<F: Future>(&self, f: F) -> Option<F::Output> {
        tokio::select! {
            out = f => Some(out),
            () = self.stopped() => None,
        }
    }
}

/// Handle on the publisher thread.
pub(crate) struct Publisher {
    control: Arc<Control>,
    thread: Option<JoinHandle<()>>,
}

impl Publisher {
    /// Starts the thread.
    pub(crate) fn spawn(reader: SpoolReader, connector: Connector, stats: Arc<ForwardStats>) -> io::Result<Publisher> {
        let control = Arc::new(Control::default());
        let ctl = control.clone();
        let thread = std::thread::Builder::new().name("nats-publisher".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "NATS publisher: no async runtime; events stay spooled");
                    return;
                }
            };
            runtime.block_on(run(reader, connector, stats, ctl));
        })?;
        Ok(Publisher { control, thread: Some(thread) })
    }

    /// Asks the thread to stop (what is in flight and not acknowledged stays spooled) and waits for it.
    pub(crate) fn stop(&mut self) {
        self.control.stop.store(true, Ordering::SeqCst);
        self.control.wake.notify_waiters();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the NATS publisher thread panicked");
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Logs failures without flooding: the first after a success, then at most one per [`WARN_INTERVAL`].
#[derive(Default)]
struct FailureLog {
    last_warn: Option<Instant>,
    suppressed: u64,
}

impl FailureLog {
    fn failed(&mut self, what: &str, err: &dyn std::fmt::Display) {
        if self.last_warn.is_none_or(|t| t.elapsed() >= WARN_INTERVAL) {
            tracing::warn!(error = %err, suppressed = self.suppressed, "NATS forwarder: {what}; events stay spooled and are retried");
            self.last_warn = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
            tracing::debug!(error = %err, "NATS forwarder: {what}");
        }
    }

    fn recovered(&mut self) {
        if self.last_warn.take().is_some() {
            tracing::info!("NATS forwarder: publishing again");
        }
        self.suppressed = 0;
    }
}

async fn run(mut reader: SpoolReader, connector: Connector, stats: Arc<ForwardStats>, ctl: Arc<Control>) {
    let mut backoff = Backoff::default();
    let mut log = FailureLog::default();
    let mut client = None;
    let state_stats = stats.clone();
    let on_state: Arc<dyn Fn(bool) + Send + Sync> =
        Arc::new(move |up| state_stats.connected.store(up, Ordering::Relaxed));
    let mut last_save = Instant::now();
    // The once-a-second fsync runs as its own task, so it keeps its pace while a connection attempt or an
    // acknowledgement is being awaited.
    let syncer = reader.syncer();
    let sync_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(SYNC_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = syncer.sync() {
                tracing::warn!(error = %e, "spool fsync failed");
            }
        }
    });
    while !ctl.stopping() {
        let attempt = async {
            let c = match &client {
                Some(c) => c,
                None => client.insert(connector.connect(on_state.clone()).await.map_err(|e| ("connect", e.into()))?),
            };
            let js = jetstream(c.clone(), WINDOW * 2);
            ensure_stream(&js).await.map_err(|e| ("stream", e))?;
            Ok::<_, (&str, async_nats::Error)>(js)
        };
        let js = match ctl.or_stop(attempt).await {
            None => break,
            Some(Ok(js)) => js,
            Some(Err((what, e))) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                let what = if what == "connect" { "cannot connect" } else { "cannot create or find the stream" };
                log.failed(what, &e);
                if ctl.or_stop(tokio::time::sleep(backoff.next_delay())).await.is_none() {
                    break;
                }
                save_cursor(&mut reader, &mut last_save);
                continue;
            }
        };
        reader.rewind();
        match pump(&js, &mut reader, &stats, &ctl, &mut backoff, &mut log, &mut last_save).await {
            Ok(()) => break,
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                log.failed("publish failed", &e);
                if ctl.or_stop(tokio::time::sleep(backoff.next_delay())).await.is_none() {
                    break;
                }
            }
        }
    }
    sync_task.abort();
    if let Err(e) = reader.sync_writes().and_then(|()| reader.save_cursor(true)) {
        tracing::warn!(error = %e, "NATS forwarder: could not save the spool cursor; some events will be resent");
    }
    if let Some(c) = client {
        // Bounded: the stop must not hang on a dead connection.
        let _ = tokio::time::timeout(Duration::from_millis(500), c.drain()).await;
    }
}

/// Saves the cursor if it moved, at most once per [`SYNC_INTERVAL`] (a lost save only means resending).
fn save_cursor(reader: &mut SpoolReader, last_save: &mut Instant) {
    if last_save.elapsed() < SYNC_INTERVAL {
        return;
    }
    *last_save = Instant::now();
    if let Err(e) = reader.save_cursor(false) {
        tracing::warn!(error = %e, "spool cursor save failed");
    }
}

/// One publish in flight: where the cursor goes once it is acknowledged, and the acknowledgement to await.
struct InFlight {
    end: Position,
    bytes: u64,
    ack: Option<PublishAckFuture>,
}

/// Publishes until stopped (`Ok`) or until something fails (`Err`; the caller backs off and rewinds).
async fn pump(
    js: &async_nats::jetstream::Context,
    reader: &mut SpoolReader,
    stats: &ForwardStats,
    ctl: &Control,
    backoff: &mut Backoff,
    log: &mut FailureLog,
    last_save: &mut Instant,
) -> Result<(), async_nats::Error> {
    let mut inflight: VecDeque<InFlight> = VecDeque::with_capacity(WINDOW);
    loop {
        if ctl.stopping() {
            return Ok(());
        }
        save_cursor(reader, last_save);
        while inflight.len() < WINDOW {
            let Some(item) = reader.next_item()? else { break };
            let ack = match item.kind {
                ItemKind::Record { subject, id, payload } => {
                    let msg = PublishMessage::build().payload(payload).message_id(id);
                    Some(js.send_publish(subject, msg).await?)
                }
                ItemKind::Skip => None,
            };
            inflight.push_back(InFlight { end: item.end, bytes: item.bytes, ack });
        }
        let Some(oldest) = inflight.pop_front() else {
            reader.save_cursor(false)?;
            let idle = async {
                tokio::select! {
                    () = reader.new_data().notified() => {}
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            };
            if ctl.or_stop(idle).await.is_none() {
                return Ok(());
            }
            continue;
        };
        if let Some(ack) = oldest.ack {
            match ctl.or_stop(ack.into_future()).await {
                None => return Ok(()),
                Some(result) => {
                    result?;
                }
            }
            stats.published.fetch_add(1, Ordering::Relaxed);
            backoff.reset();
            log.recovered();
        }
        reader.acknowledge(oldest.end, oldest.bytes)?;
    }
}
