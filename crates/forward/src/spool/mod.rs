//! The on-disk spool: events wait here until JetStream acknowledges them, so nothing is lost while the server is
//! down or slow, or while the agent restarts.
//!
//! # Layout of the spool directory (mode 0700, files 0600)
//!
//! ```text
//! lock                  flock(2)ed by the one agent using the directory; holds its pid
//! cursor                "ringwatch-spool-cursor v1 SEGMENT OFFSET": first byte JetStream has not acknowledged
//! 0000000000000007.seg  segments of records (see [`record`]), numbered in write order
//! ```
//!
//! The [`SpoolWriter`] (the pipeline thread, inside `ForwardSink::write_batch`) appends records to the newest
//! segment and starts a new one every [`SpoolConfig::segment_bytes`]. The [`SpoolReader`] (the publisher thread)
//! reads records up to what the writer has *committed* (written whole), hands them out, and moves the cursor over
//! the acknowledged prefix; a segment the cursor has left is deleted. The cursor is replaced atomically (write a
//! temporary file, rename it over), so it is always the old or the new one, never a mix.
//!
//! # Durability
//!
//! Every record is written to the file (the kernel's page cache) before `write_batch` returns, so an agent crash
//! or kill loses nothing that reached the sink. Against power loss: a segment is fsynced when it is closed, the
//! current one once a second by the publisher thread, so at most about the last second of events is lost; a
//! record torn by the power cut fails its checksum and is skipped and counted as malformed, not fatal. The cursor is
//! not fsynced on each move: after a power cut it may be older than the truth, which only resends events (the
//! message id makes JetStream and the collector drop the copies).
//!
//! # Size cap
//!
//! `spool_bytes` counts bytes written and not yet acknowledged. When a new record would take it past
//! [`SpoolConfig::max_bytes`], the record is dropped and counted (in `ForwardStats::spool_dropped` and in the
//! pipeline's loss counters, which turn it into a `sensor`/`drop` event): the newest events are the ones lost.

pub mod reader;
pub mod record;
pub mod writer;

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use nix::fcntl::{Flock, FlockArg};
use ringwatch_core::pipeline::LossCounters;

pub use reader::{Item, ItemKind, SpoolReader, SpoolSyncer};
pub use writer::{AppendOutcome, SpoolWriter};

use crate::{ForwardError, ForwardStats};

/// Default segment size: big enough that rolling (an fsync and a new file) is rare, small enough that a fully
/// acknowledged segment frees its disk space soon.
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;

const LOCK_FILE: &str = "lock";
const CURSOR_FILE: &str = "cursor";
const CURSOR_TMP: &str = "cursor.tmp";
const CURSOR_MAGIC: &str = "ringwatch-spool-cursor v1";
const SEGMENT_EXT: &str = ".seg";

/// A place in the spool: a segment number and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// Segment number (the file name, in hex).
    pub segment: u64,
    /// Byte offset inside the segment.
    pub offset: u64,
}

/// Spool settings.
#[derive(Debug, Clone, Copy)]
pub struct SpoolConfig {
    /// Cap on unacknowledged bytes; records beyond it are dropped and counted.
    pub max_bytes: u64,
    /// Size at which the writer closes a segment and starts the next.
    pub segment_bytes: u64,
}

/// What the writer and the reader share.
pub(crate) struct Shared {
    dir: PathBuf,
    /// End of the last whole record written (what the reader may read up to).
    committed: Mutex<Position>,
    stats: Arc<ForwardStats>,
    losses: Arc<LossCounters>,
    /// Wakes the publisher when the writer committed new records.
    pub(crate) new_data: tokio::sync::Notify,
    /// Held for the life of the writer and the reader: one agent per spool directory.
    _lock: Flock<File>,
}

impl Shared {
    fn committed(&self) -> Position {
        *self.committed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_committed(&self, pos: Position) {
        *self.committed.lock().unwrap_or_else(|e| e.into_inner()) = pos;
        self.new_data.notify_one();
    }
}

/// Opens (creating it 0700 if needed) and locks the spool in `dir`, and returns its writer and reader.
///
/// Records left by a previous run are kept and read first; the writer always starts a fresh segment, so a torn
/// record at the end of the previous run's last segment is never appended after.
pub fn open(
    dir: &Path,
    cfg: SpoolConfig,
    stats: Arc<ForwardStats>,
    losses: Arc<LossCounters>,
) -> Result<(SpoolWriter, SpoolReader), ForwardError> {
    let io_err = |what: &str, path: &Path, e: io::Error| ForwardError::Spool {
        path: path.to_owned(),
        message: format!("{what}: {e}"),
    };
    DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| io_err("creating", dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| io_err("chmod 0700", dir, e))?;
    let lock = lock_dir(dir)?;

    let mut cursor = read_cursor(dir);
    let segments = list_segments(dir).map_err(|e| io_err("listing", dir, e))?;
    for &seg in segments.iter().filter(|&&s| s < cursor.segment) {
        // Acknowledged before the last run ended; its deletion did not happen or did not reach the disk.
        let path = segment_path(dir, seg);
        fs::remove_file(&path).map_err(|e| io_err("deleting an acknowledged segment", &path, e))?;
    }
    let live: Vec<u64> = segments.into_iter().filter(|&s| s >= cursor.segment).collect();
    let mut unacked = 0u64;
    for &seg in &live {
        let path = segment_path(dir, seg);
        let len = fs::metadata(&path).map_err(|e| io_err("reading", &path, e))?.len();
        unacked += if seg == cursor.segment { len.saturating_sub(cursor.offset) } else { len };
    }
    match live.first() {
        Some(&first) if first > cursor.segment => cursor = Position { segment: first, offset: 0 },
        _ => {}
    }
    let write_seg = live.last().copied().unwrap_or(0).max(cursor.segment) + 1;
    if live.is_empty() {
        cursor = Position { segment: write_seg, offset: 0 };
    }
    stats.spool_bytes.store(unacked, Ordering::Relaxed);

    let file = create_segment(dir, write_seg).map_err(|e| io_err("creating a segment", dir, e))?;
    let shared = Arc::new(Shared {
        dir: dir.to_owned(),
        committed: Mutex::new(Position { segment: write_seg, offset: 0 }),
        stats,
        losses,
        new_data: tokio::sync::Notify::new(),
        _lock: lock,
    });
    if !live.is_empty() {
        tracing::info!(spool = %dir.display(), bytes = unacked, segments = live.len(),
            "spool holds unacknowledged events from a previous run; they are sent first");
    }
    let writer = SpoolWriter::new(shared.clone(), cfg, write_seg, file);
    let reader = SpoolReader::new(shared, cursor);
    Ok((writer, reader))
}

fn lock_dir(dir: &Path) -> Result<Flock<File>, ForwardError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| ForwardError::Spool { path: path.clone(), message: format!("opening the lock file: {e}") })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            // The pid is only a hint for the error message of a second agent; failing to write it is harmless.
            let _ = lock.set_len(0).and_then(|()| writeln!(&mut *lock, "{}", std::process::id()));
            Ok(lock)
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let holder = fs::read_to_string(&path).unwrap_or_default().trim().to_owned();
            Err(ForwardError::SpoolLocked { dir: dir.to_owned(), holder })
        }
        Err((_, errno)) => Err(ForwardError::Spool { path, message: format!("flock: {errno}") }),
    }
}

/// Segment numbers present in `dir`, ascending.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut segs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_EXT)) else { continue };
        if let Ok(n) = u64::from_str_radix(hex, 16) {
            segs.push(n);
        }
    }
    segs.sort_unstable();
    Ok(segs)
}

/// The file of segment `seg`.
pub fn segment_path(dir: &Path, seg: u64) -> PathBuf {
    dir.join(format!("{seg:016x}{SEGMENT_EXT}"))
}

fn create_segment(dir: &Path, seg: u64) -> io::Result<File> {
    let file = OpenOptions::new().append(true).create_new(true).mode(0o600).open(segment_path(dir, seg))?;
    sync_dir(dir)?;
    Ok(file)
}

/// Makes a created, renamed or deleted name in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The saved cursor; a missing or unreadable one means "from the oldest segment" (resending is safe, skipping is
/// not).
pub fn read_cursor(dir: &Path) -> Position {
    let text = fs::read_to_string(dir.join(CURSOR_FILE)).unwrap_or_default();
    let parsed = text.trim().strip_prefix(CURSOR_MAGIC).and_then(|rest| {
        let mut it = rest.split_whitespace().map(str::parse::<u64>);
        match (it.next(), it.next(), it.next()) {
            (Some(Ok(segment)), Some(Ok(offset)), None) => Some(Position { segment, offset }),
            _ => None,
        }
    });
    if parsed.is_none() && !text.is_empty() {
        tracing::warn!(spool = %dir.display(), "spool cursor unreadable; resending from the oldest segment");
    }
    parsed.unwrap_or_default()
}

/// Replaces the cursor file atomically; `durable` also fsyncs it and the directory.
fn write_cursor(dir: &Path, pos: Position, durable: bool) -> io::Result<()> {
    let tmp = dir.join(CURSOR_TMP);
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    writeln!(f, "{CURSOR_MAGIC} {} {}", pos.segment, pos.offset)?;
    if durable {
        f.sync_data()?;
    }
    fs::rename(&tmp, dir.join(CURSOR_FILE))?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}
