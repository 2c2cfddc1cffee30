//! The shutdown token: one flag, set once by the signal handler or a `--duration` timer, read by every source.
//!
//! Sources poll it at least every 100 ms (their blocking calls use that timeout), drain what they have, detach
//! their kernel attachments and return. Cloning is cheap; all clones see the same flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A shared stop flag.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
}

impl Shutdown {
    /// A token that is not yet triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks everyone holding a clone to stop.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// True once [`Shutdown::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// The underlying flag, for APIs (signal-hook) that set an `AtomicBool` directly.
    pub fn flag(&self) -> &Arc<AtomicBool> {
        &self.flag
    }

    /// Sleeps up to `d`, waking early (within 50 ms) when shutdown is triggered. Returns true if triggered.
    pub fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while !self.is_triggered() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
        true
    }
}
