//! `ringwatch session [--out PATH] [--store PATH] [--policy FILE] -- CMD...`: the keystroke recorder for hosts
//! without eBPF (like tlog or script(1)). CMD runs on a pty ringwatch owns; the user's terminal is relayed to it in
//! raw mode, and what the user types is recorded as `keystroke`/`input` events (backend user/pty), with input typed
//! while the pty has echo off in canonical mode (password prompts) kept as a length only.
//!
//! Events go through the same pipeline as the agent's (process-table enrichment, the policy's DLP masking) into
//! JSON lines (`--out`) and/or the SQLite store (`--store`). The exit status is CMD's (128 + signal when a signal
//! ended it). Recording is announced on stderr before CMD starts.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::thread;

use anyhow::{Context, Result, bail};
use clap::Args;
use ringwatch_core::pipeline::Stage;
use ringwatch_core::proc_table::ProcessTable;
use ringwatch_core::sink::{JsonLinesSink, Sink};
use ringwatch_core::{Activity, Event, Pipeline};
use ringwatch_domains::keystroke::pty::{self, RecorderOptions};
use ringwatch_policy::{Policy, PolicyStage};
use ringwatch_store::{StoreOptions, StoreSink};

use crate::UsageError;

/// Queue between the recorder and the sinks; a person types far below this.
const QUEUE_CAPACITY: usize = 4096;

/// Options of `ringwatch session`.
#[derive(Args, Debug)]
pub struct SessionArgs {
    /// Append the events as JSON lines to this file (created 0600). Not `-`: stdout is the recorded terminal.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Also write the events to this SQLite store (default when --out is not given: the agent's store).
    #[arg(long, value_name = "PATH")]
    pub store: Option<PathBuf>,
    /// Policy whose `keystrokes` section sets redaction, the idle flush and DLP patterns (capture itself needs no
    /// `enabled: true` here: running `ringwatch session` is the opt-in).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Host name stamped on every event (default: this machine's host name).
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// The command to record, after `--` (e.g. `-- bash -l`).
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Records CMD's session; returns CMD's exit status for ringwatch's own.
pub fn run(args: SessionArgs) -> Result<u8> {
    if args.out.as_deref().is_some_and(|p| p.as_os_str() == "-") {
        bail!(UsageError("--out -: stdout is the recorded terminal; give a file".into()));
    }
    let policy = match &args.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::observe_only(),
    };
    let plan = policy.keystroke_plan();
    let opts = RecorderOptions { redact_echo_off: plan.redact_echo_off, idle_flush: plan.idle_flush };

    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(out) = &args.out {
        sinks.push(Box::new(JsonLinesSink::file(out).with_context(|| format!("opening --out {}", out.display()))?));
    }
    let store = match (&args.store, &args.out) {
        (Some(path), _) => Some(path.clone()),
        (None, None) => Some(PathBuf::from(ringwatch_store::DEFAULT_STORE_PATH)),
        (None, Some(_)) => None,
    };
    if let Some(path) = &store {
        let sink = StoreSink::open(path, &StoreOptions::default()).with_context(|| {
            format!("opening the store {} (give --out or --store to write elsewhere)", path.display())
        })?;
        sinks.push(Box::new(sink));
    }

    let pipeline = Pipeline::new(QUEUE_CAPACITY);
    let events = pipeline.sender(pty::NAME);
    let host = args
        .host
        .clone()
        .unwrap_or_else(|| hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default());
    let policy = Arc::new(policy);
    let consumer = thread::Builder::new().name("pipeline".into()).spawn(move || {
        let mut stages: Vec<Box<dyn Stage>> = vec![Box::new(PolicyStage::new(policy))];
        let mut table = ProcessTable::from_proc();
        pipeline.run(&host, &mut table, &mut stages, &mut sinks);
    })?;

    let notice = format!(
        "ringwatch session: recording keystrokes of `{}` (echo-off input {})",
        args.command.join(" "),
        if opts.redact_echo_off { "redacted" } else { "NOT redacted: policy redact_echo_off is false" }
    );
    eprintln!("{notice}\r");
    events.send(Event::sensor(Activity::Start, pty::NAME, notice, None));

    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    let result = pty::record_session(&mut cmd, &opts, &events);
    let status = match &result {
        Ok(status) => exit_code_of(status),
        Err(_) => 1,
    };
    events.send(Event::sensor(
        Activity::Stop,
        pty::NAME,
        format!("ringwatch session: `{}` ended with status {status}", args.command.join(" ")),
        None,
    ));
    drop(events);
    consumer.join().map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))?;
    result.with_context(|| format!("running `{}` on a pty", args.command[0]))?;
    Ok(status)
}

/// A shell's view of an exit status: the code, or 128 + the signal.
fn exit_code_of(status: &std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + (sig & 0x7f)).unwrap_or(1),
        (None, None) => 1,
    }
}
