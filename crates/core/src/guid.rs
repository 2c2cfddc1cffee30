//! Process guids: stable for a process's life and never reused, derived from boot id + start time + pid.
//!
//! Kernel and user backends must agree on the guid of the same process, so the inputs are ones both can read:
//! the boot id (`/proc/sys/kernel/random/boot_id`), the start time in clock ticks since boot (what
//! `/proc/PID/stat` field 22 shows; eBPF computes it from `task->start_boottime`) and the pid. A pid is only
//! reused after the pid space wraps, which cannot happen within one 10 ms tick, so the triple is unique per boot,
//! and the boot id makes it unique across boots and hosts.

use std::sync::OnceLock;

use crate::event::Timestamp;

/// Linux exposes process times to user space in USER_HZ ticks, which is 100 on every architecture it supports.
pub const USER_HZ: u64 = 100;

const NANOS_PER_TICK: u64 = 1_000_000_000 / USER_HZ;

/// Facts about the current boot: its id and its wall-clock start.
#[derive(Debug, Clone)]
pub struct BootInfo {
    /// The first 8 hex digits of the kernel's boot id.
    pub boot_id_prefix: String,
    /// Wall-clock time of boot, from `btime` in /proc/stat (second resolution).
    pub boot_time: Timestamp,
}

impl BootInfo {
    /// Reads the boot facts once per process and caches them.
    pub fn get() -> &'static BootInfo {
        static BOOT: OnceLock<BootInfo> = OnceLock::new();
        BOOT.get_or_init(|| {
            let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
            let boot_id_prefix: String = boot_id.trim().chars().filter(|c| *c != '-').take(8).collect();
            let btime_secs = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| {
                    s.lines().find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<u64>().ok()))
                })
                .unwrap_or(0);
            BootInfo {
                boot_id_prefix: if boot_id_prefix.is_empty() { "00000000".into() } else { boot_id_prefix },
                boot_time: Timestamp(btime_secs.saturating_mul(1_000_000_000)),
            }
        })
    }
}

/// The guid of process `pid` that started `start_ticks` clock ticks after boot.
pub fn process_guid(pid: u32, start_ticks: u64) -> String {
    format!("{}-{:x}-{}", BootInfo::get().boot_id_prefix, start_ticks, pid)
}

/// Converts a start time in nanoseconds since boot (`task->start_boottime`) to clock ticks, rounding down exactly
/// as the kernel's `nsec_to_clock_t` does for /proc.
pub fn ticks_from_boot_ns(ns: u64) -> u64 {
    ns / NANOS_PER_TICK
}

/// Wall-clock start time of a process from its start ticks.
pub fn start_time_from_ticks(start_ticks: u64) -> Timestamp {
    Timestamp(BootInfo::get().boot_time.0.saturating_add(start_ticks.saturating_mul(NANOS_PER_TICK)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_is_stable_and_distinguishes_pid_and_start() {
        assert_eq!(process_guid(42, 1000), process_guid(42, 1000));
        assert_ne!(process_guid(42, 1000), process_guid(42, 1001));
        assert_ne!(process_guid(42, 1000), process_guid(43, 1000));
    }

    #[test]
    fn boot_ns_round_down_to_ticks_like_proc() {
        assert_eq!(ticks_from_boot_ns(0), 0);
        assert_eq!(ticks_from_boot_ns(9_999_999), 0);
        assert_eq!(ticks_from_boot_ns(10_000_000), 1);
        assert_eq!(ticks_from_boot_ns(1_234_567_890_123), 123_456);
    }

    #[test]
    fn own_guid_matches_proc_stat() {
        let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
        let after_comm = &stat[stat.rfind(')').expect("comm is closed") + 2..];
        let start: u64 = after_comm.split(' ').nth(19).expect("field 22").parse().expect("number");
        let guid = process_guid(std::process::id(), start);
        assert!(guid.ends_with(&format!("-{}", std::process::id())));
    }
}
