//! The store's writer thread: collects pipeline batches and commits them in groups (see [`crate::StoreSink`]).
//!
//! A group is committed when it is [`GROUP_DELAY`] old or has [`GROUP_EVENTS`] events, on `flush`, and when the
//! sink closes. A locked database keeps the group and retries after [`LOCKED_BACKOFF`], up to
//! [`MAX_HELD_EVENTS`]; past that the oldest batches are dropped and reported. Any other failure drops the group
//! and is reported. Between groups the thread also applies retention when it is due, so age limits hold on a quiet
//! host too.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::row::RowBatch;
use crate::sink::{GROUP_DELAY, GROUP_EVENTS, LOCKED_BACKOFF};
use crate::store::Store;

/// Most events held while the database is locked (about the size of a few seconds of a busy host).
const MAX_HELD_EVENTS: usize = 262_144;
/// Idle wake-up, for retention on a quiet host.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Failure messages for the sink to return on its next call.
pub type Failures = Arc<Mutex<Vec<String>>>;

/// What the sink sends.
pub enum Command {
    /// One pipeline batch, prepared.
    Batch(RowBatch),
    /// Commit everything now, copy it into the database file (checkpoint) and answer.
    Flush(Sender<()>),
}

/// Events waiting for a commit.
struct Group {
    batches: Vec<RowBatch>,
    /// Rows in `batches`.
    events: usize,
    since: Option<Instant>,
    retry_at: Option<Instant>,
    /// Where committed batches go back to the sink, to be filled again.
    spare: Sender<RowBatch>,
}

impl Group {
    fn push(&mut self, batch: RowBatch) {
        if batch.len() == 0 {
            let _ = self.spare.try_send(batch);
            return;
        }
        self.events += batch.len();
        self.batches.push(batch);
        self.since.get_or_insert_with(Instant::now);
    }

    /// Empties the group, handing its batches back to the sink (or dropping them when it has enough).
    fn clear(&mut self) {
        for batch in self.batches.drain(..) {
            let _ = self.spare.try_send(batch);
        }
        self.events = 0;
        self.since = None;
        self.retry_at = None;
    }

    fn is_empty(&self) -> bool {
        self.events == 0
    }

    fn due(&self) -> bool {
        let retry_ok = self.retry_at.is_none_or(|at| Instant::now() >= at);
        let full_or_old = self.events >= GROUP_EVENTS || self.since.is_some_and(|t| t.elapsed() >= GROUP_DELAY);
        !self.is_empty() && retry_ok && full_or_old
    }

    /// How long to wait for the next batch before something is due.
    fn wait(&self) -> Duration {
        let Some(since) = self.since else { return IDLE_TICK };
        let due = self.retry_at.unwrap_or(since + GROUP_DELAY).max(since + GROUP_DELAY);
        due.saturating_duration_since(Instant::now())
    }
}

/// The thread's body: runs until the sink closes the queue.
pub fn run(mut store: Store, rx: Receiver<Command>, spare: Sender<RowBatch>, failures: Failures) {
    let mut group = Group { batches: Vec::new(), events: 0, since: None, retry_at: None, spare };
    loop {
        match rx.recv_timeout(group.wait()) {
            Ok(Command::Batch(batch)) => group.push(batch),
            Ok(Command::Flush(done)) => {
                commit(&mut store, &mut group, &failures, true);
                if let Err(e) = store.checkpoint() {
                    report(&failures, e.to_string());
                }
                let _ = done.send(());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                commit(&mut store, &mut group, &failures, true);
                return;
            }
        }
        if group.due() {
            commit(&mut store, &mut group, &failures, false);
        } else if group.is_empty() {
            store.apply_retention_if_due();
        }
    }
}

/// Commits the group. `last_try` (flush, shutdown) drops it on any failure instead of holding it for a retry.
fn commit(store: &mut Store, group: &mut Group, failures: &Failures, last_try: bool) {
    if group.is_empty() {
        return;
    }
    match store.insert_rows(&group.batches) {
        Ok(_) => group.clear(),
        Err(e) if e.is_locked() && !last_try => {
            group.retry_at = Some(Instant::now() + LOCKED_BACKOFF);
            let dropped = drop_oldest_beyond(group, MAX_HELD_EVENTS);
            let mut msg = format!("{e}; {} events held, retrying in {LOCKED_BACKOFF:?}", group.events);
            if dropped > 0 {
                msg.push_str(&format!("; {dropped} oldest events dropped to bound memory"));
            }
            report(failures, msg);
        }
        Err(e) => {
            report(failures, format!("{e}; {} events not stored", group.events));
            group.clear();
        }
    }
}

/// Drops the oldest batches until at most `max` events are held; returns how many events were dropped.
fn drop_oldest_beyond(group: &mut Group, max: usize) -> usize {
    let mut dropped = 0;
    while group.events > max {
        let oldest = group.batches.remove(0);
        group.events -= oldest.len();
        dropped += oldest.len();
    }
    dropped
}

fn report(failures: &Failures, message: String) {
    tracing::warn!("{message}");
    let mut list = failures.lock().unwrap_or_else(|e| e.into_inner());
    if list.len() < 16 {
        list.push(message);
    }
}
