//! The central collector: pull every event from the `RINGWATCH` stream and store it exactly once.
//!
//! A durable pull consumer with explicit acks hands out batches; each batch is decoded, inserted into the
//! [`Store`] in one transaction, and acknowledged only after that commit. A crash between the commit and the acks
//! means JetStream redelivers the batch (after the consumer's ack wait), and the store, which keeps one row per
//! event id, skips the copies: at-least-once on the wire, exactly once in the store. Several collectors may share
//! one durable name; JetStream then splits the batches between them (work-queue style).
//!
//! The collector survives the server going away: every failure backs off and starts over from connecting.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use ringwatch_core::Event;
use ringwatch_store::Store;

use crate::connect::{Backoff, Connector, ensure_stream, jetstream};
use crate::subject::STREAM_SUBJECTS;
use crate::{ForwardError, NatsOptions};

/// Default durable consumer name.
pub const DEFAULT_DURABLE: &str = "ringwatch-collector";

/// How long JetStream waits for an acknowledgement before redelivering a message. Must exceed the time to store
/// one batch; short enough that a batch whose acknowledgements were lost (server restart) comes back soon.
pub const ACK_WAIT: Duration = Duration::from_secs(15);

/// How long one pull waits for messages; also how often the stop flag is checked while idle.
const PULL_EXPIRES: Duration = Duration::from_millis(500);

/// Options of the collector.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// How to reach NATS.
    pub nats: NatsOptions,
    /// Durable consumer name; collectors sharing it share the work.
    pub durable: String,
    /// Most messages per pull (one store transaction each).
    pub batch: usize,
    /// Subjects the consumer takes (default `ringwatch.>`, every host); set when the durable consumer is created.
    pub subject: String,
}

impl CollectOptions {
    /// Checks the options (files named in `nats`, consumer name, subject) without connecting; returns the
    /// connector [`run`] uses.
    pub fn check(&self) -> Result<Connector, ForwardError> {
        let connector = Connector::new(&self.nats, "ringwatch-collector")?;
        if self.durable.is_empty() || self.durable.contains(['.', '*', '>', ' ']) {
            return Err(ForwardError::Config(format!(
                "--durable {:?}: a consumer name cannot be empty or contain '.', '*', '>' or spaces",
                self.durable
            )));
        }
        if self.subject != STREAM_SUBJECTS && !self.subject.starts_with("ringwatch.") {
            return Err(ForwardError::Config(format!(
                "--subject {:?}: must be inside the stream's subjects ringwatch.>, e.g. ringwatch.web-1.> or ringwatch.*.network",
                self.subject
            )));
        }
        if self.batch == 0 {
            return Err(ForwardError::Config("--batch must be at least 1".into()));
        }
        Ok(connector)
    }

    /// Options with the default durable name and batch size.
    pub fn new(nats: NatsOptions) -> Self {
        CollectOptions { nats, durable: DEFAULT_DURABLE.to_owned(), batch: 2000, subject: STREAM_SUBJECTS.to_owned() }
    }
}

/// Counts so far, handed to the progress callback after each stored batch.
#[derive(Debug, Default, Clone)]
pub struct CollectProgress {
    /// Messages received.
    pub received: u64,
    /// Events inserted into the store.
    pub stored: u64,
    /// Events the store already had (redeliveries, resends past the duplicate window).
    pub duplicates: u64,
    /// Messages that were not a ringwatch event (terminated, not redelivered).
    pub malformed: u64,
    /// Connection, pull or acknowledgement failures (each retried).
    pub errors: u64,
}

/// Collects until `stop` is set or `progress` returns `Break`. Returns the final counts; fails on bad options or
/// when the store fails (the unacknowledged batch is redelivered to the next run).
pub fn run(
    opts: &CollectOptions,
    store: &mut Store,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&CollectProgress) -> ControlFlow<()>,
) -> Result<CollectProgress, ForwardError> {
    let connector = opts.check()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ForwardError::Other(format!("async runtime: {e}")))?;
    let mut counts = CollectProgress::default();
    runtime.block_on(collect(opts, &connector, store, stop, progress, &mut counts))?;
    Ok(counts)
}

async fn collect(
    opts: &CollectOptions,
    connector: &Connector,
    store: &mut Store,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&CollectProgress) -> ControlFlow<()>,
    counts: &mut CollectProgress,
) -> Result<(), ForwardError> {
    let mut backoff = Backoff::default();
    let mut client = None;
    // The connection's comings and goings are logged by the connector; the collector has no gauge to update.
    let on_state: Arc<dyn Fn(bool) + Send + Sync> = Arc::new(|_| {});
    let mut last_warn: Option<std::time::Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let setup = async {
            let c = match &client {
                Some(c) => c,
                None => client.insert(connector.connect(on_state.clone()).await?),
            };
            let js = jetstream(c.clone(), 1024);
            let stream = ensure_stream(&js).await?;
            let consumer: PullConsumer = stream.get_or_create_consumer(&opts.durable, consumer_config(opts)).await?;
            Ok::<_, async_nats::Error>(consumer)
        };
        let failure = match setup.await {
            Ok(consumer) => {
                if last_warn.take().is_some() {
                    tracing::info!(durable = %opts.durable, "collecting again");
                }
                match pull_loop(opts, &consumer, store, stop, progress, counts, &mut backoff).await {
                    Ok(()) => break,
                    Err(PullError::Store(e)) => return Err(e.into()),
                    Err(PullError::Nats(e)) => e,
                }
            }
            Err(e) => e,
        };
        counts.errors += 1;
        if last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!(nats = %connector.servers(), error = %failure, "collector: NATS failed; retrying");
            last_warn = Some(std::time::Instant::now());
        }
        let delay = backoff.next_delay();
        let until = tokio::time::Instant::now() + delay;
        while tokio::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50).min(delay)).await;
        }
    }
    if let Some(c) = client {
        // Push out the last acknowledgements before leaving; bounded so a dead server cannot hang the exit.
        let _ = tokio::time::timeout(Duration::from_secs(2), c.flush()).await;
    }
    Ok(())
}

fn consumer_config(opts: &CollectOptions) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(opts.durable.clone()),
        description: Some("ringwatch collect: stores every event once".into()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        filter_subject: opts.subject.clone(),
        max_ack_pending: (opts.batch as i64 * 8).max(10_000),
        ..Default::default()
    }
}

enum PullError {
    Nats(async_nats::Error),
    Store(ringwatch_store::StoreError),
}

async fn pull_loop(
    opts: &CollectOptions,
    consumer: &PullConsumer,
    store: &mut Store,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&CollectProgress) -> ControlFlow<()>,
    counts: &mut CollectProgress,
    backoff: &mut Backoff,
) -> Result<(), PullError> {
    let mut messages: Vec<Message> = Vec::with_capacity(opts.batch);
    let mut events: Vec<Event> = Vec::with_capacity(opts.batch);
    let pull = || async {
        consumer
            .batch()
            .max_messages(opts.batch)
            .expires(PULL_EXPIRES)
            .messages()
            .await
            .map_err(|e| PullError::Nats(e.into()))
    };
    let mut next = pull().await?;
    while !stop.load(Ordering::Relaxed) {
        messages.clear();
        events.clear();
        let mut failed = None;
        while let Some(m) = next.next().await {
            match m {
                Ok(m) => messages.push(m),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            // What arrived before the failure is dropped unacknowledged: JetStream redelivers it after the ack
            // wait, and the store skips whatever it already has.
            return Err(PullError::Nats(e));
        }
        backoff.reset();
        // Ask for the next batch before storing this one, so the server streams it while the store works.
        next = pull().await?;
        if !messages.is_empty() {
            store_and_ack(&messages, &mut events, store, counts).await?;
            if progress(counts).is_break() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Decodes, stores in one transaction, then acknowledges. Messages that are not events are terminated so they
/// are not redelivered forever.
async fn store_and_ack(
    messages: &[Message],
    events: &mut Vec<Event>,
    store: &mut Store,
    counts: &mut CollectProgress,
) -> Result<(), PullError> {
    counts.received += messages.len() as u64;
    let mut bad = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match serde_json::from_slice::<Event>(&m.payload) {
            Ok(ev) => events.push(ev),
            Err(e) => {
                tracing::warn!(subject = %m.subject, error = %e, "collector: not a ringwatch event; dropped");
                bad.push(i);
            }
        }
    }
    let inserted = store.insert(events).map_err(PullError::Store)?;
    counts.stored += inserted as u64;
    counts.duplicates += (events.len() - inserted) as u64;
    counts.malformed += bad.len() as u64;
    let mut ack_failed = None;
    for (i, m) in messages.iter().enumerate() {
        let result = if bad.contains(&i) { m.ack_with(AckKind::Term).await } else { m.ack().await };
        if let Err(e) = result {
            ack_failed = Some(e);
        }
    }
    if let Some(e) = ack_failed {
        // Stored already; JetStream will redeliver and the store will skip them.
        counts.errors += 1;
        tracing::debug!(error = %e, "collector: acknowledgement failed; the batch will be redelivered and skipped");
    }
    Ok(())
}
