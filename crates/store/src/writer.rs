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

use crate::row::EventRow;
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
    Batch(Vec<EventRow>),
    /// Commit everything now and answer.
    Flush(Sender<()>),
}

/// Events waiting for a commit.
struct Group {
    rows: Vec<EventRow>,
    since: Option<Instant>,
    retry_at: Option<Instant>,
}

impl Group {
    fn push(&mut self, batch: Vec<EventRow>) {
        self.rows.extend(batch);
        self.since.get_or_insert_with(Instant::now);
    }

    fn clear(&mut self) {
        self.rows.clear();
        self.since = None;
        self.retry_at = None;
    }

    fn due(&self) -> bool {
        let retry_ok = self.retry_at.is_none_or(|at| Instant::now() >= at);
        let full_or_old = self.rows.len() >= GROUP_EVENTS || self.since.is_some_and(|t| t.elapsed() >= GROUP_DELAY);
        !self.rows.is_empty() && retry_ok && full_or_old
    }

    /// How long to wait for the next batch before something is due.
    fn wait(&self) -> Duration {
        let Some(since) = self.since else { return IDLE_TICK };
        let due = self.retry_at.unwrap_or(since + GROUP_DELAY).max(since + GROUP_DELAY);
        due.saturating_duration_since(Instant::now())
    }
}

/// The thread's body: runs until the sink closes the queue.
pub fn run(mut store: Store, rx: Receiver<Command>, failures: Failures) {
    let mut group = Group { rows: Vec::with_capacity(GROUP_EVENTS), since: None, retry_at: None };
    loop {
        match rx.recv_timeout(group.wait()) {
            Ok(Command::Batch(batch)) => group.push(batch),
            Ok(Command::Flush(done)) => {
                commit(&mut store, &mut group, &failures, true);
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
        } else if group.rows.is_empty() {
            store.apply_retention_if_due();
        }
    }
}

/// Commits the group. `last_try` (flush, shutdown) drops it on any failure instead of holding it for a retry.
fn commit(store: &mut Store, group: &mut Group, failures: &Failures, last_try: bool) {
    if group.rows.is_empty() {
        return;
    }
    match store.insert_rows(&group.rows) {
        Ok(_) => group.clear(),
        Err(e) if e.is_locked() && !last_try => {
            group.retry_at = Some(Instant::now() + LOCKED_BACKOFF);
            let dropped = drop_oldest_beyond(group, MAX_HELD_EVENTS);
            let mut msg = format!("{e}; {} events held, retrying in {LOCKED_BACKOFF:?}", group.rows.len());
            if dropped > 0 {
                msg.push_str(&format!("; {dropped} oldest events dropped to bound memory"));
            }
            report(failures, msg);
        }
        Err(e) => {
            report(failures, format!("{e}; {} events not stored", group.rows.len()));
            group.clear();
        }
    }
}

fn drop_oldest_beyond(group: &mut Group, max: usize) -> usize {
    let excess = group.rows.len().saturating_sub(max);
    group.rows.drain(..excess);
    excess
}

fn report(failures: &Failures, message: String) {
    tracing::warn!("{message}");
    let mut list = failures.lock().unwrap_or_else(|e| e.into_inner());
    if list.len() < 16 {
        list.push(message);
    }
}
