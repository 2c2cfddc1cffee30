//! `ringwatch run`: the agent.
//!
//! Start-up order: root check -> policy -> mounts -> probe -> start every selected backend (a `best` domain whose
//! kernel backend fails falls back to user mode; an explicitly requested backend that fails is an error) ->
//! signal handlers -> source threads -> pipeline consumer. Shutdown (SIGINT, SIGTERM or `--duration`) flips one
//! flag: sources drain and detach, then the consumer drains the queue, writes a `sensor`/`stop` event with the
//! loss counters and flushes the sinks.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use ringwatch_core::pipeline::Stage;
use ringwatch_core::proc_table::ProcessTable;
use ringwatch_core::sink::{JsonLinesSink, Sink};
use ringwatch_core::{
    Activity, Decider, Domain, Event, EventSender, Mode, Pipeline, Probe, Shutdown, Source, SourceContext,
};
use ringwatch_forward::connect::Connector;
use ringwatch_forward::{ForwardOptions, ForwardSink};
use ringwatch_policy::{Policy, PolicyStage};
use ringwatch_store::{StoreOptions, StoreSink};

use crate::backends::{BackendSpec, ModeSpec, StartConfig, probe_for, select};
use crate::metrics::{self, MetricsInputs};
use crate::nats_args::NatsArgs;
use crate::units::{parse_age, parse_size};
use crate::{MissingCapability, require_root};

/// Default path of the hook socket.
pub const DEFAULT_HOOK_SOCKET: &str = "/run/ringwatch/hook.sock";

/// Queue between sources and the consumer. At ~300 bytes per event this bounds the queue to ~20 MB.
const QUEUE_CAPACITY: usize = 65_536;

/// Options of `ringwatch run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Policy YAML file (default: observe everything, enforce nothing). Checked first; a bad policy exits 2.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Backends per domain: DOMAIN=CHOICE[,...] with DOMAIN in process|file|network|keystroke|all and CHOICE in
    /// best|kernel|user|both|off or a source name (ebpf, proc_connector, preload, ...). `best` takes the kernel
    /// backend when it can run here and falls back to user mode.
    #[arg(long, default_value = "all=best")]
    pub mode: String,
    /// Where JSON lines go: `-` for stdout, or a file (appended, created 0600).
    #[arg(long, default_value = "-")]
    pub out: String,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS", value_parser = crate::units::positive_seconds)]
    pub duration: Option<Duration>,
    /// Unix socket the hook library reports to (the hook reads RINGWATCH_HOOK_SOCKET).
    #[arg(long, default_value = DEFAULT_HOOK_SOCKET)]
    pub hook_socket: PathBuf,
    /// Host name stamped on every event and used in NATS subjects (default: this machine's host name).
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// SQLite event store for hunting (`ringwatch query`, `tree`); `off` to keep none. Created 0600. If it cannot
    /// be opened the agent says why and keeps streaming to the other sinks.
    #[arg(long, value_name = "PATH|off", default_value = ringwatch_store::DEFAULT_STORE_PATH)]
    pub store: String,
    /// Delete stored events older than this (s, m, h, d).
    #[arg(long, value_name = "AGE", default_value = "30d")]
    pub store_max_age: String,
    /// Keep the store under this size, deleting the oldest events first (e.g. 512MiB, 2GB).
    #[arg(long, value_name = "SIZE", default_value = "1GiB")]
    pub store_max_size: String,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// With --nats: where events wait on disk until JetStream acknowledges them (nothing is lost while the server
    /// is down or slow).
    #[arg(long, value_name = "DIR", default_value = ringwatch_forward::DEFAULT_SPOOL_DIR)]
    pub spool: PathBuf,
    /// With --nats: spool size cap; events beyond it are dropped and reported as sensor/drop events.
    #[arg(long, value_name = "SIZE", default_value = "1GiB")]
    pub spool_max_size: String,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// The X display whose keys the X11 keystroke backend records (e.g. `:0`; default: $DISPLAY). Connecting as
    /// root to a user's display usually needs XAUTHORITY=/home/USER/.Xauthority.
    #[arg(long, value_name = "DISPLAY")]
    pub x11_display: Option<String>,
}

/// Runs the agent until shutdown.
pub fn run(args: RunArgs) -> Result<()> {
    let modes = ModeSpec::parse(&args.mode)?;
    let mut store_opts = StoreOptions {
        max_age: Some(parse_age(&args.store_max_age)?),
        max_bytes: Some(parse_size(&args.store_max_size)?),
        keystroke_max_age: None,
    };
    let spool_max_bytes = parse_size(&args.spool_max_size)?;
    if let Some(addr) = &args.metrics {
        metrics::parse_addr(addr).with_context(|| format!("--metrics {addr}"))?;
    }
    if let Some(nats) = args.nats.options() {
        // Bad URLs and unreadable credential/certificate files are usage errors, found before anything starts.
        Connector::new(&nats, "ringwatch-agent").map_err(|e| crate::UsageError(e.to_string()))?;
    }
    let policy = match &args.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::observe_only(),
    };
    store_opts.keystroke_max_age = policy.keystroke_plan().retention;
    require_root("ringwatch run")?;
    for line in ringwatch_domains::probe::ensure_mounts() {
        tracing::info!("{line}");
    }

    let policy = Arc::new(policy);
    let decider: Arc<dyn Decider> = policy.clone();
    let cfg = StartConfig {
        exec_kill_list: policy.exec_kill_list(),
        decider,
        hook_socket: args.hook_socket.clone(),
        // The agent's own writes (--out file, the store's directory with its WAL, the spool) are not file activity.
        file: ringwatch_domains::file::fanotify::FileFanotifyConfig {
            agent_paths: [
                (args.out != "-").then(|| PathBuf::from(&args.out)),
                (args.store != "off").then(|| {
                    let parent = std::path::Path::new(&args.store).parent().unwrap_or(std::path::Path::new(""));
                    if parent.as_os_str().is_empty() { PathBuf::from(".") } else { parent.to_path_buf() }
                }),
                Some(args.spool.clone()),
            ]
            .into_iter()
            .flatten()
            .collect(),
            // The policy's `files:` section: exclusion globs and the per-process rate limit.
            exclude_globs: policy.file_settings().exclude_globs.clone(),
            // `files.events`: the activities the monitor subscribes to (all unless the policy narrows them).
            events: policy.file_settings().events.clone(),
            max_events_per_pid: policy
                .file_settings()
                .max_events_per_pid
                .unwrap_or(ringwatch_domains::file::fanotify::DEFAULT_MAX_EVENTS_PER_PID),
            ..Default::default()
        },
        file_permission: policy.file_permission_plan(),
        network: policy.network_plan(),
        network_dns: policy.network_settings().dns,
        keystroke: policy.keystroke_plan(),
        x11_display: args.x11_display.clone(),
    };
    let pipeline = Pipeline::new(QUEUE_CAPACITY);
    let agent_tx = pipeline.sender("agent");
    let probes = probe_for(&cfg);
    let mut sources = Vec::new();
    for domain in Domain::MONITORED {
        sources.extend(start_domain(domain, &modes, &probes, &cfg, &agent_tx)?);
    }
    if sources.is_empty() {
        bail!(MissingCapability("no backend could start here; see `ringwatch probe`".into()));
    }

    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    sinks.push(match args.out.as_str() {
        "-" => Box::new(JsonLinesSink::stdout()),
        path => Box::new(JsonLinesSink::file(path.as_ref()).with_context(|| format!("opening --out {path}"))?),
    });
    let store_stats = match args.store.as_str() {
        "off" => None,
        path => match StoreSink::open(path.as_ref(), &store_opts) {
            Ok(sink) => {
                let stats = sink.stats();
                sinks.push(Box::new(sink));
                Some(stats)
            }
            Err(e) => {
                // The store is for hunting later; the live streams matter more. Say why loudly and keep going.
                tracing::error!("event store disabled: {e}");
                agent_tx.send(Event::sensor(Activity::Error, "sink:store", format!("store disabled: {e}"), None));
                None
            }
        },
    };
    let forward_stats = match args.nats.options() {
        None => None,
        Some(nats) => {
            let opts = ForwardOptions { nats, spool_dir: args.spool.clone(), spool_max_bytes };
            let sink = ForwardSink::start(opts, pipeline.stats().component("sink:nats"))
                .with_context(|| format!("starting the NATS forwarder (spool {})", args.spool.display()))?;
            let stats = sink.stats();
            sinks.push(Box::new(sink));
            Some(stats)
        }
    };

    let shutdown = Shutdown::new();
    if let Some(addr) = &args.metrics {
        let inputs = MetricsInputs {
            pipeline: pipeline.stats(),
            policy: policy.clone(),
            store: store_stats,
            forward: forward_stats,
        };
        let sink = metrics::start(addr, inputs, shutdown.clone()).with_context(|| format!("--metrics {addr}"))?;
        sinks.push(Box::new(sink));
    }
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, shutdown.flag().clone()).context("installing signal handlers")?;
    }
    if let Some(secs) = args.duration {
        let s = shutdown.clone();
        thread::spawn(move || {
            s.sleep(secs);
            s.trigger();
        });
    }

    let names: Vec<&str> = sources.iter().map(|s| s.name()).collect();
    let start_msg = format!("ringwatch {} started: {}", env!("CARGO_PKG_VERSION"), names.join(", "));
    tracing::info!("{start_msg}");
    agent_tx.send(Event::sensor(Activity::Start, "agent", start_msg, None));

    let stats = pipeline.stats();
    let senders: Vec<_> = sources.iter().map(|s| pipeline.sender(s.name())).collect();
    let host = args
        .host
        .clone()
        .unwrap_or_else(|| hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default());
    let consumer = {
        let mut stages: Vec<Box<dyn Stage>> = vec![Box::new(PolicyStage::new(policy.clone()))];
        thread::Builder::new().name("pipeline".into()).spawn(move || {
            let mut table = ProcessTable::from_proc();
            pipeline.run(&host, &mut table, &mut stages, &mut sinks);
        })?
    };

    let mut handles = Vec::new();
    for (src, events) in sources.into_iter().zip(senders) {
        let ctx = SourceContext { events, shutdown: shutdown.clone() };
        let name = src.name();
        let h = thread::Builder::new().name(name.replace('/', "-")).spawn(move || (name, src.run(ctx)))?;
        handles.push(h);
    }

    let mut first_error = None;
    for h in handles {
        match h.join() {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(e))) => {
                tracing::error!(backend = name, error = %e, "source failed");
                agent_tx.send(Event::sensor(Activity::Error, name, e.to_string(), None));
                // A source that dies makes the agent stop: a sensor that silently lost a domain is worse.
                shutdown.trigger();
                first_error.get_or_insert(e);
            }
            Err(_) => {
                shutdown.trigger();
                tracing::error!("a source thread panicked");
            }
        }
    }
    let written = stats.written.load(std::sync::atomic::Ordering::Relaxed);
    let losses = stats.losses();
    let lost: u64 = losses.values().map(|(q, u, m)| q + u + m).sum();
    agent_tx.send(Event::sensor(
        Activity::Stop,
        "agent",
        format!("ringwatch stopped: {written} events written, {lost} lost or malformed ({losses:?})"),
        Some(lost),
    ));
    drop(agent_tx);
    consumer.join().map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))?;
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Starts the backends `--mode` selects for `domain`.
///
/// An explicit choice (`kernel`, `user`, `both`, a source name) must start completely, or the agent stops with the
/// reason (exit 3 when it is a missing privilege or feature). `best` starts the kernel backends that probe
/// available and, when none of them starts after all, the user backends instead; each failure becomes a
/// `sensor`/`error` event so the fallback is on record.
fn start_domain(
    domain: Domain,
    modes: &ModeSpec,
    probes: &[(BackendSpec, Probe)],
    cfg: &StartConfig,
    agent_tx: &EventSender,
) -> Result<Vec<Box<dyn Source>>> {
    let choice = modes.choice(domain);
    let picked = select(domain, choice, probes);
    if modes.is_explicit(domain) {
        if picked.is_empty() {
            bail!(MissingCapability(format!("--mode {domain}: no backend matches {choice:?}")));
        }
        return picked
            .iter()
            .map(|(spec, probe)| {
                if !probe.available {
                    bail!(MissingCapability(format!("{} cannot run here: {}", spec.label(), probe.detail)));
                }
                let src = spec.start(cfg).with_context(|| format!("starting {}", spec.label()))?;
                tracing::info!(backend = %spec.label(), "started");
                Ok(src)
            })
            .collect();
    }
    let start_or_report = |spec: &BackendSpec| match spec.start(cfg) {
        Ok(src) => {
            tracing::info!(backend = %spec.label(), "started");
            Some(src)
        }
        Err(e) => {
            tracing::warn!(backend = %spec.label(), error = %e, "could not start");
            agent_tx.send(Event::sensor(Activity::Error, &spec.label(), e.to_string(), None));
            None
        }
    };
    let started: Vec<_> = picked.iter().filter_map(|(spec, _)| start_or_report(spec)).collect();
    let kernel_was_picked = picked.iter().any(|(spec, _)| spec.mode == Mode::Kernel);
    if !started.is_empty() || !kernel_was_picked {
        return Ok(started);
    }
    tracing::warn!(%domain, "no kernel backend started; falling back to user mode");
    Ok(probes
        .iter()
        .filter(|(spec, probe)| spec.domain == domain && spec.mode == Mode::User && probe.available)
        .filter_map(|(spec, _)| start_or_report(spec))
        .collect())
}
