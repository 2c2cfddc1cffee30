//! Noise control in user space: path exclusions and the per-process rate limit.
//!
//! Exclusions drop events about the agent's own files, `/proc`, `/sys` and configured globs. They are intentional
//! filtering, not loss, so they are counted for the log but not reported as drops. The kernel already ignores most
//! of the agent's own files through ignore marks (see `notify`); this check is the complete one (subdirectories,
//! files created after start, globs).
//!
//! The rate limiter lets at most `limit` events per second through for each pid, in fixed one-second windows that
//! start with the pid's first event. What is over the limit is counted per pid and handed out once the window ends
//! as one `(pid, count)` summary, so every event is either sent or counted in exactly one summary.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Paths excluded always, besides the configured ones.
pub const ALWAYS_EXCLUDED: &[&str] = &["/proc", "/sys"];

/// Compiled exclusions.
#[derive(Debug, Clone, Default)]
pub struct Exclusions {
    /// Absolute paths without a trailing slash: the path itself and everything under it is excluded.
    prefixes: Vec<String>,
    globs: Option<GlobSet>,
}

impl Exclusions {
    /// Compiles `prefixes` (files or directories) and `globs` (ringwatch glob syntax: `*` stays within a path
    /// component, `**` crosses them, `\` escapes). Fails with the first invalid glob.
    pub fn new(prefixes: &[String], globs: &[String]) -> Result<Self, String> {
        let mut all: Vec<String> = ALWAYS_EXCLUDED.iter().map(|s| (*s).to_owned()).collect();
        for p in prefixes {
            let trimmed = p.trim_end_matches('/');
            if !trimmed.is_empty() && !all.iter().any(|a| a == trimmed) {
                all.push(trimmed.to_owned());
            }
        }
        let globs = if globs.is_empty() {
            None
        } else {
            let mut b = GlobSetBuilder::new();
            for g in globs {
                let glob = GlobBuilder::new(g)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .map_err(|e| format!("invalid exclusion glob `{g}`: {}", e.kind()))?;
                b.add(glob);
            }
            Some(b.build().map_err(|e| format!("exclusion globs: {e}"))?)
        };
        Ok(Exclusions { prefixes: all, globs })
    }

    /// True when `path` is, or lies under, an excluded prefix (globs are not consulted: a directory-level answer,
    /// cached per directory by the resolver).
    pub fn under_prefix(&self, path: &str) -> bool {
        self.prefixes
            .iter()
            .any(|p| path.strip_prefix(p.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
    }

    /// True when `path` is excluded by a prefix or a glob.
    pub fn excludes(&self, path: &str) -> bool {
        self.under_prefix(path) || self.matches_glob(path)
    }

    /// True when a configured glob matches `path`.
    pub fn matches_glob(&self, path: &str) -> bool {
        self.globs.as_ref().is_some_and(|g| g.is_match(path))
    }

    /// True when any glob is configured.
    pub fn has_globs(&self) -> bool {
        self.globs.is_some()
    }
}

/// The length of one rate-limit window.
pub const WINDOW: Duration = Duration::from_secs(1);

/// Most pids tracked at once; beyond it, finished windows are swept early.
const MAX_TRACKED_PIDS: usize = 1 << 16;

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    passed: u32,
    dropped: u64,
}

/// Per-pid fixed-window rate limiter with exact drop accounting.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    windows: HashMap<u32, Window>,
    /// Finished windows with drops, not yet handed out: (pid, dropped).
    due: Vec<(u32, u64)>,
}

impl RateLimiter {
    /// At most `limit` events per pid per second; 0 means no limit.
    pub fn new(limit: u32) -> Self {
        RateLimiter { limit, windows: HashMap::new(), due: Vec::new() }
    }

    /// The configured limit (0: none).
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Whether one more event of `pid` at `now` may be sent; a refused one is counted for its pid's summary.
    pub fn allow(&mut self, pid: u32, now: Instant) -> bool {
        if self.limit == 0 {
            return true;
        }
        if self.windows.len() >= MAX_TRACKED_PIDS && !self.windows.contains_key(&pid) {
            self.sweep(now);
        }
        let w = self.windows.entry(pid).or_insert(Window { start: now, passed: 0, dropped: 0 });
        if now.duration_since(w.start) >= WINDOW {
            if w.dropped > 0 {
                self.due.push((pid, w.dropped));
            }
            *w = Window { start: now, passed: 0, dropped: 0 };
        }
        if w.passed < self.limit {
            w.passed += 1;
            true
        } else {
            w.dropped += 1;
            false
        }
    }

    /// Ends every window older than [`WINDOW`] at `now`: their drops become due, the pids are forgotten.
    pub fn sweep(&mut self, now: Instant) {
        let due = &mut self.due;
        self.windows.retain(|pid, w| {
            let open = now.duration_since(w.start) < WINDOW;
            if !open && w.dropped > 0 {
                due.push((*pid, w.dropped));
            }
            open
        });
    }

    /// Ends every window now (at shutdown): all drops become due.
    pub fn finish(&mut self) {
        for (pid, w) in self.windows.drain() {
            if w.dropped > 0 {
                self.due.push((pid, w.dropped));
            }
        }
    }

    /// Takes the summaries that are due: `(pid, dropped)`, one per pid and finished window.
    pub fn take_due(&mut self) -> Vec<(u32, u64)> {
        std::mem::take(&mut self.due)
    }

    /// Hands each due summary to `send` as `(pid, dropped, limit)`. The first one `send` cannot take (a full queue)
    /// and every one after it stay due for the next call, so no drop count goes unreported.
    pub fn send_due(&mut self, mut send: impl FnMut(u32, u64, u32) -> bool) {
        let mut due = std::mem::take(&mut self.due).into_iter();
        while let Some((pid, dropped)) = due.next() {
            if !send(pid, dropped, self.limit) {
                self.due.push((pid, dropped));
                self.due.extend(due);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_the_queue_refuses_stays_due_with_every_one_after_it() {
        let mut r = RateLimiter::new(1);
        let t0 = Instant::now();
        for pid in [1, 2, 3] {
            assert!(r.allow(pid, t0));
            assert!(!r.allow(pid, t0));
        }
        r.finish();
        let mut sent = Vec::new();
        r.send_due(|pid, dropped, limit| {
            assert_eq!(limit, 1);
            if sent.len() == 1 {
                return false;
            }
            sent.push((pid, dropped));
            true
        });
        assert_eq!(sent.len(), 1, "one taken, then the queue refused");
        let mut rest = r.take_due();
        rest.push(sent[0]);
        rest.sort_unstable();
        assert_eq!(rest, vec![(1, 1), (2, 1), (3, 1)], "nothing lost: the refused and the untried are still due");
    }

    #[test]
    fn prefixes_match_whole_components_and_always_cover_proc_and_sys() {
        let x = Exclusions::new(&["/var/lib/ringwatch/".into(), "/tmp/out.jsonl".into()], &[]).expect("valid");
        assert!(x.excludes("/var/lib/ringwatch"));
        assert!(x.excludes("/var/lib/ringwatch/events.db-wal"));
        assert!(!x.excludes("/var/lib/ringwatcher/x"));
        assert!(x.excludes("/tmp/out.jsonl"));
        assert!(!x.excludes("/tmp/out.jsonl2"));
        assert!(x.excludes("/proc/1/status") && x.excludes("/sys"));
        assert!(!x.excludes("/procfoo"));
        assert!(!x.has_globs());
    }

    #[test]
    fn globs_use_ringwatch_semantics_and_bad_ones_are_refused() {
        let x = Exclusions::new(&[], &["/home/*/.cache/**".into(), "**/*.swp".into()]).expect("valid");
        assert!(x.excludes("/home/alice/.cache/a/b"));
        assert!(!x.excludes("/home/alice/x/.cache/a"), "* stays within one component");
        assert!(x.excludes("/etc/.passwd.swp"));
        assert!(!x.under_prefix("/etc/.passwd.swp"));
        let err = Exclusions::new(&[], &["/a/{b".into()]).expect_err("unclosed brace");
        assert!(err.contains("/a/{b"), "{err}");
    }

    #[test]
    fn sent_plus_dropped_equals_offered_per_pid() {
        let mut r = RateLimiter::new(3);
        let t0 = Instant::now();
        let mut sent = 0;
        for i in 0..10 {
            sent += u64::from(r.allow(7, t0 + Duration::from_millis(i)));
        }
        assert_eq!(sent, 3);
        assert!(r.take_due().is_empty(), "the window is still open");
        // A new window starts with the next event after a second: the old drops become due.
        assert!(r.allow(7, t0 + Duration::from_millis(1500)));
        assert_eq!(r.take_due(), vec![(7, 7)]);
        for _ in 0..5 {
            r.allow(7, t0 + Duration::from_millis(1600));
        }
        r.sweep(t0 + Duration::from_millis(1600));
        assert!(r.take_due().is_empty());
        r.sweep(t0 + Duration::from_millis(2600));
        assert_eq!(r.take_due(), vec![(7, 3)]);
        r.allow(8, t0);
        r.allow(8, t0);
        r.allow(8, t0);
        r.allow(8, t0);
        r.finish();
        assert_eq!(r.take_due(), vec![(8, 1)]);
    }

    #[test]
    fn zero_means_unlimited() {
        let mut r = RateLimiter::new(0);
        let t0 = Instant::now();
        assert!((0..100_000).all(|_| r.allow(1, t0)));
        r.finish();
        assert!(r.take_due().is_empty());
    }
}
