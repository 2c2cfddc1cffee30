//! The spool's writing side, used by the pipeline thread: encode events, apply the size cap, append whole records
//! to the newest segment, roll segments.
//!
//! A batch is encoded into one buffer and written with one `write(2)` per segment, so the pipeline thread pays one
//! syscall per batch. It never waits on the network; the only fsync it does is when a segment is closed (every
//! [`super::SpoolConfig::segment_bytes`]); the once-a-second fsync of the open segment runs on the publisher thread.

use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ringwatch_core::Event;

use super::{Position, Shared, SpoolConfig, create_segment, record};
use crate::subject::event_subject;

/// What [`SpoolWriter::append`] did with a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Events now in the spool.
    pub written: usize,
    /// Events dropped (size cap reached, or the write failed); already counted in the stats and loss counters.
    pub dropped: usize,
}

/// Appends events to the spool. One per spool; owned by the sink.
pub struct SpoolWriter {
    shared: Arc<Shared>,
    cfg: SpoolConfig,
    segment: u64,
    file: File,
    /// Bytes in the current segment.
    size: u64,
    /// Encoded records not yet written, and how many events they hold.
    buf: Vec<u8>,
    buffered_events: usize,
    json: Vec<u8>,
    /// The last host seen and its subject per domain, so the subject is not rebuilt for every event.
    subjects: SubjectCache,
}

impl SpoolWriter {
    pub(super) fn new(shared: Arc<Shared>, cfg: SpoolConfig, segment: u64, file: File) -> Self {
        SpoolWriter {
            shared,
            cfg,
            segment,
            file,
            size: 0,
            buf: Vec::with_capacity(1 << 20),
            buffered_events: 0,
            json: Vec::with_capacity(4096),
            subjects: SubjectCache::default(),
        }
    }

    /// Appends `events`. Events that do not fit under the cap are dropped and counted; on a write error the
    /// segment is cut back to its last whole record, the batch's unwritten events are counted as dropped, and the
    /// error is returned (the pipeline reports it as a `sensor`/`error` event).
    pub fn append(&mut self, events: &[Event]) -> io::Result<AppendOutcome> {
        let mut out = AppendOutcome::default();
        let stats = self.shared.stats.clone();
        let mut result = Ok(());
        for ev in events {
            self.json.clear();
            if let Err(e) = serde_json::to_writer(&mut self.json, ev) {
                tracing::warn!(id = %ev.id, error = %e, "event not serializable; dropped");
                out.dropped += 1;
                continue;
            }
            let subject = self.subjects.get(&ev.host, ev.domain);
            let mark = self.buf.len();
            if let Err(e) = record::encode(&mut self.buf, subject, &ev.id, &self.json) {
                tracing::warn!(id = %ev.id, "event not spooled: {e}");
                self.buf.truncate(mark);
                out.dropped += 1;
                continue;
            }
            let len = (self.buf.len() - mark) as u64;
            let unacked = stats.spool_bytes.load(Ordering::Relaxed) + mark as u64;
            if unacked + len > self.cfg.max_bytes {
                self.buf.truncate(mark);
                out.dropped += 1;
                continue;
            }
            if self.size + mark as u64 > 0 && self.size + mark as u64 + len > self.cfg.segment_bytes {
                // This record would overflow the segment: write what precedes it, then close the segment.
                self.buf.truncate(mark);
                let moved = self.write_buffer();
                let rolled = moved.and_then(|n| {
                    out.written += n;
                    self.roll()
                });
                if let Err(e) = rolled {
                    result = Err(e);
                    break;
                }
                // Re-encode into the now empty buffer (cheaper than keeping a copy of every record).
                let _ = record::encode(&mut self.buf, self.subjects.last(), &ev.id, &self.json);
            }
            self.buffered_events += 1;
        }
        if result.is_ok() {
            match self.write_buffer() {
                Ok(n) => out.written += n,
                Err(e) => result = Err(e),
            }
        }
        if result.is_err() {
            out.dropped += events.len() - out.written - out.dropped;
            self.buf.clear();
            self.buffered_events = 0;
        }
        if out.dropped > 0 {
            let n = out.dropped as u64;
            stats.spool_dropped.fetch_add(n, Ordering::Relaxed);
            self.shared.losses.queue_full.fetch_add(n, Ordering::Relaxed);
        }
        result.map(|()| out)
    }

    /// Writes the buffered records to the current segment and publishes the new end to the reader. Returns the
    /// number of events written. On failure the segment is truncated back to its last whole record.
    fn write_buffer(&mut self) -> io::Result<usize> {
        if self.buf.is_empty() {
            return Ok(0);
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            // A partial write (disk full) must not leave half a record for the reader.
            if let Err(t) = self.file.set_len(self.size) {
                tracing::error!(error = %t, "could not cut a partly written spool record; the reader will skip it");
            }
            return Err(e);
        }
        let n = self.buffered_events;
        let len = self.buf.len() as u64;
        self.size += len;
        // Count the bytes before the reader can see (and acknowledge) them, so the counter never goes below zero.
        self.shared.stats.spool_bytes.fetch_add(len, Ordering::Relaxed);
        self.shared.set_committed(Position { segment: self.segment, offset: self.size });
        self.buf.clear();
        self.buffered_events = 0;
        Ok(n)
    }

    /// Closes the current segment (fsync) and starts the next one.
    fn roll(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let next = self.segment + 1;
        self.file = create_segment(&self.shared.dir, next)?;
        self.segment = next;
        self.size = 0;
        self.shared.set_committed(Position { segment: next, offset: 0 });
        Ok(())
    }

    /// Fsyncs the current segment (also done once a second by the publisher, and at shutdown).
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Subject per domain for the most recent host (every event of one agent has the same host).
#[derive(Default)]
struct SubjectCache {
    host: Option<String>,
    by_domain: Vec<(ringwatch_core::Domain, String)>,
    last: usize,
}

impl SubjectCache {
    fn get(&mut self, host: &str, domain: ringwatch_core::Domain) -> &str {
        if self.host.as_deref() != Some(host) {
            self.host = Some(host.to_owned());
            self.by_domain.clear();
        }
        self.last = match self.by_domain.iter().position(|(d, _)| *d == domain) {
            Some(i) => i,
            None => {
                self.by_domain.push((domain, event_subject(host, domain)));
                self.by_domain.len() - 1
            }
        };
        &self.by_domain[self.last].1
    }

    fn last(&self) -> &str {
        self.by_domain.get(self.last).map_or("", |(_, s)| s.as_str())
    }
}
