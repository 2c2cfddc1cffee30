//! What every eBPF backend needs around libbpf, in one place: the privilege check, libbpf's log routed into
//! `tracing` with the last warnings kept to explain a failed load, libbpf errors mapped to the [`SourceError`]
//! contract, the clock offset that turns BPF boot-time stamps into wall-clock time, and the per-CPU drop counters
//! every ring-buffer program keeps.

use std::collections::VecDeque;
use std::sync::{Mutex, Once};

use libbpf_rs::{ErrorKind, MapCore, MapFlags, PrintLevel};
use ringwatch_core::SourceError;

use crate::probe;

/// Whether the agent may load tracing BPF programs: CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN, in the effective set.
pub(crate) fn has_bpf_privilege() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return probe::is_root() };
    let Some(eff) =
        status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return probe::is_root();
    };
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// The error of a skeleton's `load()`: names the program libbpf reported as failing, when it did.
pub(crate) fn load_error(backend: &'static str, e: &libbpf_rs::Error) -> SourceError {
    let step = match failed_program() {
        Some(prog) => format!("load {prog}"),
        None => "load".to_owned(),
    };
    libbpf_error(backend, &step, e)
}

/// Forgets earlier warnings: only warnings from the coming attempt may explain its failure.
pub(crate) fn clear_libbpf_warnings() {
    LIBBPF_WARNINGS.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Maps a libbpf error to the contract: EPERM is a missing privilege (or, with privilege, a kernel policy that
/// refuses), EOPNOTSUPP/EINVAL-on-missing-feature is unsupported, the rest a failed step.
pub(crate) fn libbpf_error(backend: &'static str, step: &str, e: &libbpf_rs::Error) -> SourceError {
    let detail = recent_libbpf_warnings();
    let message = if detail.is_empty() { format!("{e:#}") } else { format!("{e:#} ({detail})") };
    match e.kind() {
        ErrorKind::PermissionDenied if !has_bpf_privilege() => {
            SourceError::MissingPrivilege { backend, what: format!("{step}: {message}") }
        }
        ErrorKind::PermissionDenied | ErrorKind::Unsupported => {
            SourceError::Unsupported { backend, what: format!("{step}: {message}") }
        }
        _ => SourceError::Failed { backend, step: step.to_owned(), message },
    }
}

/// CLOCK_REALTIME - CLOCK_BOOTTIME in ns, read back to back.
pub(crate) fn realtime_offset_ns(backend: &'static str) -> Result<i128, SourceError> {
    use nix::time::{ClockId, clock_gettime};
    let ns = |c: ClockId| {
        clock_gettime(c)
            .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
            .map_err(|e| SourceError::Failed { backend, step: "read clocks".into(), message: e.to_string() })
    };
    let real = ns(ClockId::CLOCK_REALTIME)?;
    let boot = ns(ClockId::CLOCK_BOOTTIME)?;
    Ok(real - boot)
}

// --- libbpf log routing -------------------------------------------------------------------------------------------

/// Last warning lines from libbpf, kept so a failed load can say which program and why.
static LIBBPF_WARNINGS: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
const LIBBPF_WARNINGS_KEPT: usize = 16;

/// Routes libbpf's output into `tracing` at debug (installed once per process).
pub(crate) fn install_libbpf_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        libbpf_rs::set_print(Some((PrintLevel::Debug, libbpf_print)));
    });
}

fn libbpf_print(level: PrintLevel, msg: String) {
    let msg = msg.trim_end();
    tracing::debug!(target: "libbpf", "{msg}");
    if level == PrintLevel::Warn {
        let mut kept = LIBBPF_WARNINGS.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == LIBBPF_WARNINGS_KEPT {
            kept.pop_front();
        }
        kept.push_back(msg.to_owned());
    }
}

/// The program named in libbpf's last "prog 'X': failed to load" warning.
fn failed_program() -> Option<String> {
    let kept = LIBBPF_WARNINGS.lock().unwrap_or_else(|e| e.into_inner());
    kept.iter().rev().find_map(|l| {
        let rest = &l[l.find("prog '")? + 6..];
        let name = &rest[..rest.find('\'')?];
        rest.contains("failed").then(|| name.to_owned())
    })
}

/// The last few libbpf warnings joined (and cleared), for an error message.
fn recent_libbpf_warnings() -> String {
    let mut kept = LIBBPF_WARNINGS.lock().unwrap_or_else(|e| e.into_inner());
    let lines: Vec<String> = kept.drain(..).filter(|l| l.starts_with("libbpf:")).collect();
    lines.iter().rev().take(3).rev().cloned().collect::<Vec<_>>().join("; ")
}

/// Running total of a per-CPU `u64` counter at key 0 of a BPF array (every backend's `drops` map: records the
/// ring buffer had no room for), read as the increase since the last read so it can be reported as a loss.
#[derive(Debug, Default)]
pub(crate) struct PerCpuCounter {
    reported: u64,
}

impl PerCpuCounter {
    /// The increase since the previous call; 0 when the map cannot be read (logged at debug for `backend`).
    pub(crate) fn delta(&mut self, map: &impl MapCore, backend: &str) -> u64 {
        let total = match map.lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY) {
            Ok(Some(per_cpu)) => per_cpu
                .iter()
                .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes))
                .sum::<u64>(),
            Ok(None) => 0,
            Err(e) => {
                tracing::debug!(backend, error = %e, "reading a per-CPU counter failed");
                return 0;
            }
        };
        let delta = total.saturating_sub(self.reported);
        self.reported = total;
        delta
    }
}
