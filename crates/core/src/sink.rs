//! Sinks: where enriched events go. This module has the JSON-lines sink (stdout or a file) and an in-memory sink
//! for tests; the store and the NATS forwarder live in their own crates and implement the same [`Sink`] trait.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::event::Event;

/// A destination for batches of events.
pub trait Sink: Send {
    /// Short name for logs (`jsonl:stdout`, `store`, `nats`).
    fn name(&self) -> &str;
    /// Writes one batch. Called from the pipeline's consumer thread only.
    fn write_batch(&mut self, events: &[Event]) -> io::Result<()>;
    /// Makes everything written so far durable/visible.
    fn flush(&mut self) -> io::Result<()>;
}

/// One JSON object per line, flushed after every batch so `tail -f` and pipes see events promptly.
pub struct JsonLinesSink {
    name: String,
    out: BufWriter<Box<dyn Write + Send>>,
    broken: bool,
}

impl JsonLinesSink {
    /// Writes to standard output.
    pub fn stdout() -> Self {
        Self::new("jsonl:stdout".into(), Box::new(io::stdout()))
    }

    /// Appends to `path`, creating it with mode 0600 (events can hold secrets such as command lines).
    pub fn file(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let f: File = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        Ok(Self::new(format!("jsonl:{}", path.display()), Box::new(f)))
    }

    fn new(name: String, w: Box<dyn Write + Send>) -> Self {
        JsonLinesSink { name, out: BufWriter::with_capacity(256 * 1024, w), broken: false }
    }
}

impl Sink for JsonLinesSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write_batch(&mut self, events: &[Event]) -> io::Result<()> {
        if self.broken {
            return Ok(());
        }
        let result = (|| {
            for ev in events {
                serde_json::to_writer(&mut self.out, ev)?;
                self.out.write_all(b"\n")?;
            }
            self.out.flush()
        })();
        if let Err(e) = &result
            && e.kind() == io::ErrorKind::BrokenPipe
        {
            // The reader went away (`ringwatch run | head`): stop writing here, keep the other sinks going.
            self.broken = true;
            return Ok(());
        }
        result
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.broken { Ok(()) } else { self.out.flush() }
    }
}

/// Keeps events in memory; for tests and in-process harnesses.
#[derive(Default, Clone)]
pub struct MemorySink {
    events: Arc<Mutex<Vec<Event>>>,
}

impl MemorySink {
    /// A handle to the collected events that stays valid after the sink is moved into the pipeline.
    pub fn events(&self) -> Arc<Mutex<Vec<Event>>> {
        self.events.clone()
    }
}

impl Sink for MemorySink {
    fn name(&self) -> &str {
        "memory"
    }

    fn write_batch(&mut self, events: &[Event]) -> io::Result<()> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(events);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
