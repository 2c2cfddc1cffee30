//! `ringwatch collect`: the fleet's central consumer. Pulls every event from the `RINGWATCH` JetStream stream with
//! a durable consumer and stores it, acknowledging each batch only after the store committed it, so each event is
//! stored exactly once (see `ringwatch_forward::collector` and docs/fleet.md).
//!
//! Runs until SIGINT/SIGTERM or `--duration`; survives the server going away. Progress goes to stderr.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use ringwatch_forward::collector::{self, CollectOptions, CollectProgress};
use ringwatch_store::{Store, StoreOptions};

use crate::UsageError;
use crate::nats_args::NatsArgs;
use crate::units::{parse_age, parse_size};

/// How often progress is logged.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// Options of `ringwatch collect`.
#[derive(Args, Debug)]
pub struct CollectArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The store events go into (created 0600 if missing).
    #[arg(long, value_name = "PATH")]
    pub store: PathBuf,
    /// Durable consumer name. Collectors sharing a name share the work; give each a different name to have each
    /// one store everything.
    #[arg(long, value_name = "NAME", default_value = collector::DEFAULT_DURABLE)]
    pub durable: String,
    /// Subjects to collect (`ringwatch.<host>.<domain>` with NATS wildcards), fixed when the durable consumer is
    /// created: e.g. `ringwatch.*.network` for one domain fleet-wide.
    #[arg(long, value_name = "SUBJECT", default_value = ringwatch_forward::subject::STREAM_SUBJECTS)]
    pub subject: String,
    /// Most events per pull (each pull is stored in one transaction).
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub batch: usize,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS", value_parser = crate::units::positive_seconds)]
    pub duration: Option<Duration>,
    /// Delete stored events older than this (s, m, h, d); default: keep everything.
    #[arg(long, value_name = "AGE")]
    pub store_max_age: Option<String>,
    /// Keep the store under this size, deleting the oldest events first (e.g. 50GiB); default: no cap.
    #[arg(long, value_name = "SIZE")]
    pub store_max_size: Option<String>,
}

/// Runs the collector.
pub fn run(args: CollectArgs) -> Result<()> {
    let Some(nats) = args.nats.options() else {
        return Err(UsageError("collect needs --nats URL (the NATS server to collect from)".into()).into());
    };
    let store_opts = StoreOptions {
        max_age: args.store_max_age.as_deref().map(parse_age).transpose()?,
        max_bytes: args.store_max_size.as_deref().map(parse_size).transpose()?,
        // Keystroke retention is the agent's policy; a central store keeps what it receives for --store-max-age.
        keystroke_max_age: None,
    };
    let opts = CollectOptions { nats, durable: args.durable.clone(), batch: args.batch, subject: args.subject.clone() };
    opts.check().map_err(|e| UsageError(e.to_string()))?;
    let mut store =
        Store::open(&args.store, &store_opts).with_context(|| format!("opening --store {}", args.store.display()))?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    if let Some(secs) = args.duration {
        let stop = stop.clone();
        thread::spawn(move || {
            thread::sleep(secs);
            stop.store(true, Ordering::SeqCst);
        });
    }

    tracing::info!(nats = %opts.nats.url, store = %args.store.display(), durable = %opts.durable, "collecting");
    let started = Instant::now();
    let mut last_log = Instant::now();
    let mut logged = CollectProgress::default();
    let mut log_progress = |p: &CollectProgress| {
        if last_log.elapsed() >= PROGRESS_INTERVAL {
            let rate = (p.received - logged.received) as f64 / last_log.elapsed().as_secs_f64();
            tracing::info!(
                stored = p.stored,
                duplicates = p.duplicates,
                malformed = p.malformed,
                errors = p.errors,
                "collect: {} events stored ({} duplicates skipped), {rate:.0} events/s",
                p.stored,
                p.duplicates
            );
            logged = p.clone();
            last_log = Instant::now();
        }
        ControlFlow::Continue(())
    };
    let total = collector::run(&opts, &mut store, &stop, &mut log_progress)?;
    tracing::info!(
        stored = total.stored,
        duplicates = total.duplicates,
        malformed = total.malformed,
        errors = total.errors,
        "collect stopped after {:.1} s: {} events stored, {} duplicates skipped",
        started.elapsed().as_secs_f64(),
        total.stored,
        total.duplicates
    );
    Ok(())
}
