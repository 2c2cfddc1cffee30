//! `ringwatch`: the command-line front end of the sensor.
//!
//! This crate only glues the others together: it parses arguments, picks and starts backends, wires the pipeline,
//! and maps every error to an exit code in one place ([`exit_code_for`]): 0 ok, 1 runtime error, 2 usage or bad
//! policy, 3 missing privilege or kernel feature (DESIGN.md §5).
#![forbid(unsafe_code)]

mod backends;
mod bench;
mod bench_file;
mod bench_forward;
mod bench_keystroke;
mod bench_keystroke_x11;
mod bench_network;
mod bench_store;
mod collect_cmd;
mod export_cmd;
mod hook_cmd;
mod metrics;
mod nats_args;
mod policy_cmd;
mod probe_cmd;
mod query_cmd;
mod run;
mod sandbox;
mod session_cmd;
mod tree_cmd;
mod units;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code: success.
const EXIT_OK: u8 = 0;
/// Exit code: runtime error.
const EXIT_RUNTIME: u8 = 1;
/// Exit code: usage error or bad policy.
const EXIT_USAGE: u8 = 2;
/// Exit code: missing privilege or kernel feature.
const EXIT_MISSING_CAPABILITY: u8 = 3;

const AFTER_HELP: &str = "\
Examples:
  ringwatch probe                                   what can run on this host, and why not
  ringwatch run --duration 10 | jq .                every process event for 10 s, best mode per domain
  ringwatch run --mode process=kernel --policy examples/policy.yaml --out /var/log/ringwatch.jsonl
  ringwatch policy check examples/policy.yaml       validate; errors name file:line: field
  env $(ringwatch hook env) bash                    a shell whose execs the user-mode hook reports
  ringwatch bench process                           exec storm: no sensor vs each backend
  ringwatch sandbox --dir ~/src -- make install     writes under ~/src land in a sandbox; `sandbox diff` lists them

Exit codes: 0 ok, 1 runtime error, 2 usage or bad policy, 3 missing privilege or kernel feature.";

/// ringwatch: a Linux endpoint security sensor. It watches processes (and, as they land, files, network and
/// keystrokes) from the kernel (eBPF, fanotify) or from user space (netlink, LD_PRELOAD hooks), enforces a policy,
/// and writes one JSON event per line.
#[derive(Parser, Debug)]
#[command(name = "ringwatch", version, propagate_version = true, max_term_width = 110, after_help = AFTER_HELP)]
struct Cli {
    /// More logging on stderr (-v: debug, -vv: trace, including libbpf's own messages).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show which backend of each domain can run on this host, and why not.
    Probe {
        /// One JSON object per backend instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the agent: stream events as JSON lines until Ctrl-C, SIGTERM or --duration.
    Run(run::RunArgs),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Inject the LD_PRELOAD hook library (user-mode backends) per process or system-wide.
    #[command(subcommand)]
    Hook(HookCommand),
    /// Hunt with SQL over the local event store.
    Query(query_cmd::QueryArgs),
    /// Show a process tree from the store, with each process's file, network, keystroke and alert events.
    Tree(tree_cmd::TreeArgs),
    /// Export events from the store as JSON lines.
    Export(export_cmd::ExportArgs),
    /// The fleet's central consumer: store every event forwarded to NATS JetStream exactly once.
    Collect(collect_cmd::CollectArgs),
    /// Measure the sensor's overhead against a no-sensor baseline in one run.
    Bench(bench::BenchArgs),
    /// Run a command with its writes under chosen directories kept in a sandbox (overlayfs); diff, list, discard.
    Sandbox(sandbox::SandboxArgs),
    /// Run a command on a pty ringwatch owns and record what is typed into it (user-mode keystrokes, like tlog);
    /// echo-off input (passwords) is kept as a length only. Exits with the command's status.
    Session(session_cmd::SessionArgs),
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Validate a policy file; every error names its line and field. Exit 0 if valid, 2 if not.
    Check {
        /// The policy YAML file.
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum HookCommand {
    /// Print the environment line that injects the hook into one command:
    /// `env $(ringwatch hook env) CMD`.
    Env,
    /// Add the hook to /etc/ld.so.preload (atomically) so every new dynamically linked process loads it.
    Install {
        /// The preload file to edit.
        #[arg(long, default_value = "/etc/ld.so.preload")]
        file: PathBuf,
    },
    /// Remove the hook from /etc/ld.so.preload, keeping any other entries.
    Uninstall {
        /// The preload file to edit.
        #[arg(long, default_value = "/etc/ld.so.preload")]
        file: PathBuf,
    },
}

/// Marks an error as a usage or input problem (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Marks an error as a missing privilege or host feature (exit 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MissingCapability(pub String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Probe { json } => probe_cmd::run(json),
        Command::Run(args) => run::run(args),
        Command::Policy(PolicyCommand::Check { file }) => policy_cmd::check(&file),
        Command::Hook(HookCommand::Env) => hook_cmd::env(),
        Command::Hook(HookCommand::Install { file }) => hook_cmd::install(&file),
        Command::Hook(HookCommand::Uninstall { file }) => hook_cmd::uninstall(&file),
        Command::Query(args) => query_cmd::run(args),
        Command::Tree(args) => tree_cmd::run(args),
        Command::Export(args) => export_cmd::run(args),
        Command::Collect(args) => collect_cmd::run(args),
        Command::Bench(args) => bench::run(args),
        // A sandboxed command's exit status is passed on as ringwatch's own; only errors go through exit_code_for.
        // Same for a recorded session: the command's exit status is ringwatch's.
        Command::Session(args) => match session_cmd::run(args) {
            Ok(status) => return ExitCode::from(status),
            Err(err) => Err(err),
        },
        Command::Sandbox(args) => match sandbox::run(args) {
            Ok(status) => return ExitCode::from(status),
            Err(err) => Err(err),
        },
    };
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(err) => {
            let code = exit_code_for(&err);
            if code != EXIT_OK {
                eprintln!("ringwatch: {err:#}");
            }
            ExitCode::from(code)
        }
    }
}

/// The one place that maps errors to exit codes.
fn exit_code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::BrokenPipe
        {
            return EXIT_OK;
        }
        if cause.is::<UsageError>() || cause.is::<ringwatch_policy::PolicyError>() {
            return EXIT_USAGE;
        }
        if cause.is::<MissingCapability>() {
            return EXIT_MISSING_CAPABILITY;
        }
        if let Some(e) = cause.downcast_ref::<ringwatch_core::SourceError>()
            && e.is_missing_capability()
        {
            return EXIT_MISSING_CAPABILITY;
        }
    }
    EXIT_RUNTIME
}

fn init_logging(verbose: u8) {
    // The NATS client logs every reconnect attempt at info; the forwarder reports those itself (metrics, errors).
    let default = match verbose {
        0 => "info,async_nats=warn",
        1 => "debug,async_nats=info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RINGWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

/// Fails with exit code 3 unless running as root.
fn require_root(what: &str) -> anyhow::Result<()> {
    if ringwatch_domains::probe::is_root() {
        Ok(())
    } else {
        Err(MissingCapability(format!(
            "{what} needs root (eBPF, netlink proc connector and the hook socket need CAP_SYS_ADMIN/CAP_BPF/CAP_NET_ADMIN); run it with sudo"
        ))
        .into())
    }
}
