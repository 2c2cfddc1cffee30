//! The spool's reading side, used by the publisher thread: hand out records in order, take acknowledgements in
//! the same order, move and save the cursor, delete segments the cursor has left.
//!
//! Reading and acknowledging are separate positions: the publisher reads ahead (many publishes in flight) while
//! the cursor only moves over the contiguous acknowledged prefix. After a failure the publisher calls
//! [`SpoolReader::rewind`] and everything after the cursor is read, and sent, again (at-least-once).
//!
//! A record that cannot be decoded (torn by a power cut, or damaged) is not fatal: in a closed segment the rest of
//! that segment is skipped, since a length prefix cannot be trusted after a bad record; the skip is counted in the
//! pipeline's `malformed` counter (so it becomes a `sensor`/`drop` event) and logged.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::record::{self, Decoded};
use super::{Position, Shared, segment_path, write_cursor};

/// How much the reader reads from a segment at a time.
const READ_CHUNK: usize = 1 << 20;

/// One step through the spool: a record to publish, or bytes to pass over. Acknowledge it (in order) once done.
#[derive(Debug, Clone)]
pub struct Item {
    /// Where the cursor goes when this item is acknowledged.
    pub end: Position,
    /// Spool bytes this item releases when acknowledged.
    pub bytes: u64,
    /// What it is.
    pub kind: ItemKind,
}

/// What an [`Item`] holds.
#[derive(Debug, Clone)]
pub enum ItemKind {
    /// An event to publish.
    Record {
        /// NATS subject.
        subject: String,
        /// Event id, sent as `Nats-Msg-Id`.
        id: String,
        /// The event as JSON.
        payload: Bytes,
    },
    /// The end of a closed segment, or bytes that could not be decoded; nothing to publish.
    Skip,
}

/// Fsyncs the segment being written; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct SpoolSyncer {
    shared: Arc<Shared>,
}

impl SpoolSyncer {
    /// Fsyncs the segment the writer is appending to (what is already closed was fsynced when it was closed).
    pub fn sync(&self) -> io::Result<()> {
        let seg = self.shared.committed().segment;
        match File::open(segment_path(&self.shared.dir, seg)) {
            Ok(f) => f.sync_data(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Reads the spool for the publisher. One per spool.
pub struct SpoolReader {
    shared: Arc<Shared>,
    /// First byte not yet acknowledged.
    cursor: Position,
    /// What the cursor file says.
    saved: Option<Position>,
    /// Next byte to read.
    read: Position,
    file: Option<(u64, File)>,
    /// Bytes of the open segment starting at file offset `buf_pos`.
    buf: Vec<u8>,
    buf_pos: u64,
}

impl SpoolReader {
    pub(super) fn new(shared: Arc<Shared>, cursor: Position) -> Self {
        SpoolReader { shared, cursor, saved: None, read: cursor, file: None, buf: Vec::new(), buf_pos: 0 }
    }

    /// The acknowledged position.
    pub fn cursor(&self) -> Position {
        self.cursor
    }

    /// The next item after the read position, or `None` when everything committed so far has been read.
    pub fn next_item(&mut self) -> io::Result<Option<Item>> {
        loop {
            let committed = self.shared.committed();
            if self.read.segment > committed.segment {
                return Ok(None);
            }
            let sealed = self.read.segment < committed.segment;
            if !sealed && self.read.offset >= committed.offset {
                return Ok(None);
            }
            if self.file.as_ref().is_none_or(|(seg, _)| *seg != self.read.segment) {
                match File::open(segment_path(&self.shared.dir, self.read.segment)) {
                    Ok(f) => {
                        self.file = Some((self.read.segment, f));
                        self.buf.clear();
                        self.buf_pos = self.read.offset;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound && sealed => return Ok(Some(self.end_segment(0))),
                    Err(e) => return Err(e),
                }
            }
            let start = (self.read.offset - self.buf_pos) as usize;
            match record::decode(&self.buf[start..]) {
                Decoded::Record(rec, len) => {
                    let kind = ItemKind::Record {
                        subject: rec.subject.to_owned(),
                        id: rec.id.to_owned(),
                        payload: Bytes::copy_from_slice(rec.json),
                    };
                    self.read.offset += len as u64;
                    return Ok(Some(Item { end: self.read, bytes: len as u64, kind }));
                }
                Decoded::Incomplete { need } => {
                    let limit = if sealed { None } else { Some(committed.offset) };
                    if self.fill(need, limit)? > 0 {
                        continue;
                    }
                    if !sealed {
                        // The writer commits whole records only, so this is a segment cut short under us.
                        return Ok(None);
                    }
                    let left = (self.buf_pos + self.buf.len() as u64).saturating_sub(self.read.offset);
                    if left > 0 {
                        self.count_bad(left, "torn record at the end of a segment");
                    }
                    return Ok(Some(self.end_segment(left)));
                }
                Decoded::Corrupt(why) => {
                    if sealed {
                        let len = self.file.as_ref().map_or(Ok(0), |(_, f)| f.metadata().map(|m| m.len()))?;
                        let left = len.saturating_sub(self.read.offset);
                        self.count_bad(left, why);
                        return Ok(Some(self.end_segment(left)));
                    }
                    // In the segment being written: pass over what is committed, the writer goes on after it.
                    let left = committed.offset - self.read.offset;
                    self.count_bad(left, why);
                    self.read.offset = committed.offset;
                    self.buf.clear();
                    self.buf_pos = self.read.offset;
                    return Ok(Some(Item { end: self.read, bytes: left, kind: ItemKind::Skip }));
                }
            }
        }
    }

    fn count_bad(&self, bytes: u64, why: &str) {
        tracing::warn!(spool = %self.shared.dir.display(), segment = self.read.segment, offset = self.read.offset,
            bytes, "spool: skipping undecodable bytes ({why})");
        self.shared.losses.malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves the read position to the start of the next segment.
    fn end_segment(&mut self, bytes: u64) -> Item {
        self.read = Position { segment: self.read.segment + 1, offset: 0 };
        self.file = None;
        self.buf.clear();
        self.buf_pos = 0;
        Item { end: self.read, bytes, kind: ItemKind::Skip }
    }

    /// Reads at least `need` bytes from the read position into the buffer when available (and up to a chunk
    /// more), not past `limit`. Returns the number of bytes read (0 at the end).
    fn fill(&mut self, need: usize, limit: Option<u64>) -> io::Result<usize> {
        let consumed = (self.read.offset - self.buf_pos) as usize;
        if consumed > 0 {
            self.buf.drain(..consumed);
            self.buf_pos = self.read.offset;
        }
        let Some((_, file)) = &self.file else { return Ok(0) };
        let at = self.buf_pos + self.buf.len() as u64;
        let mut want = need.saturating_sub(self.buf.len()).max(READ_CHUNK) as u64;
        if let Some(limit) = limit {
            want = want.min(limit.saturating_sub(at));
        }
        if want == 0 {
            return Ok(0);
        }
        let old = self.buf.len();
        self.buf.resize(old + want as usize, 0);
        let mut got = 0;
        while got < want as usize {
            match file.read_at(&mut self.buf[old + got..], at + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        }
        self.buf.truncate(old + got);
        Ok(got)
    }

    /// Starts reading again at the cursor (after a failure: everything not acknowledged is sent again).
    pub fn rewind(&mut self) {
        self.read = self.cursor;
        self.file = None;
        self.buf.clear();
        self.buf_pos = self.read.offset;
    }

    /// Records that the oldest item handed out and not yet acknowledged is done (pass its `end` and `bytes`): the
    /// cursor moves past it, its bytes leave `spool_bytes`, and segments the cursor has left are deleted.
    pub fn acknowledge(&mut self, end: Position, bytes: u64) -> io::Result<()> {
        let old = self.cursor;
        debug_assert!(end >= old, "acknowledgements arrive in order");
        self.cursor = end;
        let _ = self
            .shared
            .stats
            .spool_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(bytes)));
        for seg in old.segment..self.cursor.segment {
            match std::fs::remove_file(segment_path(&self.shared.dir, seg)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Saves the cursor if it moved; `durable` also fsyncs it (at shutdown).
    pub fn save_cursor(&mut self, durable: bool) -> io::Result<()> {
        if self.saved == Some(self.cursor) && !durable {
            return Ok(());
        }
        write_cursor(&self.shared.dir, self.cursor, durable)?;
        self.saved = Some(self.cursor);
        Ok(())
    }

    /// Fsyncs the segment being written (the once-a-second part of the durability policy).
    pub fn sync_writes(&self) -> io::Result<()> {
        self.syncer().sync()
    }

    /// A handle that fsyncs the segment being written, for a timer independent of the reader.
    pub fn syncer(&self) -> SpoolSyncer {
        SpoolSyncer { shared: self.shared.clone() }
    }

    /// Wakes when the writer commits new records (or the publisher is told to stop).
    pub(crate) fn new_data(&self) -> &tokio::sync::Notify {
        &self.shared.new_data
    }
}
