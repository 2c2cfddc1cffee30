//! `ringwatch export`: events from the local store as JSON lines, exactly as the agent wrote them.
//!
//! The output is the stored JSON (not a rebuild from columns), so it can be replayed (`ringwatch rules test`),
//! diffed against the agent's `--out` file, or loaded into another tool. Filters: a time window (`--since`,
//! `--until`, each RFC 3339 or an age such as `2h`) and a domain.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Result;
use clap::{Args, ValueEnum};
use ringwatch_core::{Domain, Timestamp};
use ringwatch_store::{ExportFilter, Store};

use crate::UsageError;
use crate::units::parse_age;

const AFTER_HELP: &str = "\
Examples:
  ringwatch export --since 2h > last-two-hours.jsonl
  ringwatch export --since 2026-11-26T07:00:00Z --until 2026-11-26T08:00:00Z --domain network
  ringwatch export --domain process | ringwatch rules test rules/ /dev/stdin";

/// Output formats.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// One event per line, the agent's JSON.
    Jsonl,
}

/// Options of `ringwatch export`.
#[derive(Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct ExportArgs {
    /// The store to read.
    #[arg(long, default_value = ringwatch_store::DEFAULT_STORE_PATH)]
    pub store: PathBuf,
    /// Events at or after this time: RFC 3339 (2026-11-26T07:00:00Z) or an age (90s, 30m, 2h, 7d).
    #[arg(long, value_name = "TIME|AGE")]
    pub since: Option<String>,
    /// Events before this time: RFC 3339 or an age.
    #[arg(long, value_name = "TIME|AGE")]
    pub until: Option<String>,
    /// Only this domain: process, file, network, keystroke or sensor.
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: ExportFormat,
}

/// Exports events.
pub fn run(args: ExportArgs) -> Result<()> {
    let filter = ExportFilter {
        since: args.since.as_deref().map(|t| parse_time("--since", t)).transpose()?,
        until: args.until.as_deref().map(|t| parse_time("--until", t)).transpose()?,
        domain: args.domain.as_deref().map(parse_domain).transpose()?,
    };
    let store = Store::open_read_only(&args.store)?;
    let mut out = BufWriter::new(io::stdout().lock());
    store.export(&filter, &mut |json| {
        out.write_all(json.as_bytes())?;
        out.write_all(b"\n")
    })?;
    out.flush()?;
    Ok(())
}

/// RFC 3339, or an age counted back from now.
fn parse_time(flag: &str, text: &str) -> Result<Timestamp, UsageError> {
    if let Some(t) = Timestamp::parse_rfc3339(text) {
        return Ok(t);
    }
    let age = parse_age(text).map_err(|_| {
        UsageError(format!("{flag} {text:?}: expected an RFC 3339 time (2026-11-26T07:00:00Z) or an age (2h, 7d)"))
    })?;
    Ok(Timestamp::from_system_time(SystemTime::now().checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH)))
}

fn parse_domain(text: &str) -> Result<Domain, UsageError> {
    [Domain::Process, Domain::File, Domain::Network, Domain::Keystroke, Domain::Sensor]
        .into_iter()
        .find(|d| d.as_str() == text)
        .ok_or_else(|| UsageError(format!("--domain {text:?}: expected process, file, network, keystroke or sensor")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_ages() {
        let t = parse_time("--since", "2026-11-26T07:00:00Z").expect("rfc3339");
        assert_eq!(t.to_rfc3339(), "2026-11-26T07:00:00.000000000Z");
        let two_hours_ago = parse_time("--since", "2h").expect("age");
        let expected = Timestamp::now().0 - 7200 * 1_000_000_000;
        assert!(two_hours_ago.0.abs_diff(expected) < 5_000_000_000);
        assert!(parse_time("--since", "yesterday").is_err());
        assert_eq!(parse_domain("network").ok(), Some(Domain::Network));
        assert!(parse_domain("disk").is_err());
    }
}
