//! What every eBPF backend needs around libbpf, in one place: the privilege check, libbpf's log routed into
//! `tracing` with the last warnings kept to explain a failed load, libbpf errors mapped to the [`SourceError`]
//! contract, the clock offset that turns BPF boot-time stamps into wall-clock time, the per-CPU drop counters
//! every ring-buffer program keeps, and the steps every skeleton-based backend repeats: declaring the generated
//! skeleton module ([`bpf_skeleton!`]), the `'static` object slot, the privilege/BTF/tracefs checks of a tracepoint
//! backend's probe and start, attaching its programs, and the ring-buffer poll loop ([`stream_ring`]).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::mem::MaybeUninit;
use std::path::Path;
use std::rc::Rc;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use libbpf_rs::{ErrorKind, Link, MapCore, MapFlags, OpenObject, PrintLevel, ProgramMut, RingBufferBuilder};
use ringwatch_core::event::Timestamp;
use ringwatch_core::{Domain, Mode, Probe, SourceContext, SourceError, SourceKind};

use crate::probe;

/// Declares `mod skel` holding the skeleton `build.rs` generated for `src/bpf/**/<name>.bpf.c`, exempt from the
/// workspace lints (generated code). `bpf_skeleton!("sched.skel.rs");`
macro_rules! bpf_skeleton {
    ($file:literal) => {
        // Generated code: not held to the workspace lints.
        #[allow(
            missing_docs,
            clippy::all,
            clippy::pedantic,
            clippy::unwrap_used,
            unused_qualifications,
            unsafe_op_in_unsafe_fn,
            non_camel_case_types
        )]
        mod skel {
            include!(concat!(env!("OUT_DIR"), "/", $file));
        }
    };
}
pub(crate) use bpf_skeleton;

/// A `'static` slot for a skeleton's object. The skeleton borrows its slot for its whole life and a backend moves
/// between threads, so the slot (one pointer) is leaked to get a `'static` borrow; the object itself is closed
/// when the skeleton drops.
pub(crate) fn leaked_object_slot() -> &'static mut MaybeUninit<OpenObject> {
    Box::leak(Box::new(MaybeUninit::uninit()))
}

/// The probe of a kernel backend of `domain` by an actual open + load of its BPF object (`load` opens and loads
/// into the slot it is given, attaches nothing, and drops the skeleton, unloading it): available with `detail`,
/// or unavailable saying why the load failed.
pub(crate) fn probe_by_loading(
    domain: Domain,
    detail: impl Into<String>,
    load: impl FnOnce(&mut MaybeUninit<OpenObject>) -> Result<(), SourceError>,
) -> Probe {
    install_libbpf_logging();
    let mut storage = MaybeUninit::uninit();
    match load(&mut storage) {
        Ok(()) => Probe::ok(domain, Mode::Kernel, SourceKind::Ebpf, detail),
        Err(e) => Probe::unavailable(domain, Mode::Kernel, SourceKind::Ebpf, e.to_string()),
    }
}

/// The error for an object without the `.rodata` section its loader writes `what` into.
pub(crate) fn missing_rodata(backend: &'static str, what: &str) -> SourceError {
    SourceError::Failed {
        backend,
        step: "set rodata".into(),
        message: format!("the object has no .rodata section ({what} missing)"),
    }
}

/// Where tracefs stands for a tracepoint backend's probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tracefs {
    /// Mounted: the probe can look its tracepoints up.
    Mounted,
    /// Not mounted, but its mount point exists: `start` mounts it ([`prepare_tracepoint_load`]).
    Mountable,
}

/// What every tracepoint backend's `probe` checks first: privilege, kernel BTF (CO-RE) and tracefs. `Err` says why
/// the backend cannot run.
pub(crate) fn tracing_prerequisites() -> Result<Tracefs, String> {
    if !has_bpf_privilege() {
        return Err("needs root with CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN)".into());
    }
    if !probe::has_kernel_btf() {
        return Err(format!("no kernel BTF at {} (CO-RE needs it)", probe::VMLINUX_BTF));
    }
    if probe::tracefs_mounted() {
        Ok(Tracefs::Mounted)
    } else if Path::new(probe::TRACEFS).is_dir() {
        Ok(Tracefs::Mountable)
    } else {
        Err(format!("tracefs unavailable ({} missing)", probe::TRACEFS))
    }
}

/// [`tracing_prerequisites`] plus the backend's own tracepoints `group/name` (when tracefs is mounted and they can
/// be looked up): `Ok` with a note for the probe's detail (empty, or that `start` will mount tracefs), `Err` with
/// why the backend cannot run.
pub(crate) fn tracepoints_ready(group: &str, names: &[&str]) -> Result<&'static str, String> {
    match tracing_prerequisites()? {
        Tracefs::Mounted => match names.iter().find(|tp| !probe::tracepoint_exists(group, tp)) {
            Some(tp) => Err(format!("tracepoint {group}/{tp} not found in tracefs")),
            None => Ok(""),
        },
        Tracefs::Mountable => Ok("; tracefs not mounted, start mounts it"),
    }
}

/// Attaches each program where its section says (tracepoints); the error names the program that failed.
pub(crate) fn attach_all<'p, 'obj: 'p>(
    backend: &'static str,
    progs: impl IntoIterator<Item = &'p ProgramMut<'obj>>,
) -> Result<Vec<Link>, SourceError> {
    progs
        .into_iter()
        .map(|prog| {
            prog.attach().map_err(|e| libbpf_error(backend, &format!("attach {}", prog.name().to_string_lossy()), &e))
        })
        .collect()
}

/// What a tracepoint backend's `start` checks and prepares before loading: libbpf's log routed, kernel BTF present
/// (CO-RE), tracefs mounted (mounted here when it is not).
pub(crate) fn prepare_tracepoint_load(backend: &'static str) -> Result<(), SourceError> {
    install_libbpf_logging();
    if !probe::has_kernel_btf() {
        return Err(SourceError::Unsupported { backend, what: format!("no kernel BTF at {}", probe::VMLINUX_BTF) });
    }
    if !probe::tracefs_mounted() {
        for line in probe::ensure_mounts() {
            tracing::info!(backend, "{line}");
        }
    }
    Ok(())
}

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

/// A BPF boot-time stamp (`bpf_ktime_get_boot_ns`) as wall-clock time, given [`realtime_offset_ns`].
pub(crate) fn wall_time(ktime: u64, realtime_offset_ns: i128) -> Timestamp {
    let ns = i128::from(ktime) + realtime_offset_ns;
    Timestamp(u64::try_from(ns.max(0)).unwrap_or(u64::MAX))
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
    pub(crate) fn delta(&mut self, map: &dyn MapCore, backend: &str) -> u64 {
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
        self.reported = self.reported.max(total);
        delta
    }
}

// --- ring-buffer poll loop ----------------------------------------------------------------------------------------

/// Ring-buffer poll timeout: how late a batch below the wakeup threshold is read, and how soon shutdown is noticed.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// How often the per-CPU `drops` counters are summed and reported.
const DROPS_INTERVAL: Duration = Duration::from_secs(1);

/// The maps of one loaded object that [`stream_ring`] reads: the `events` ring buffer and the per-CPU `drops`
/// counter the BPF side bumps when the ring is full.
pub(crate) struct RingMaps<'a> {
    pub(crate) events: &'a dyn MapCore,
    pub(crate) drops: &'a dyn MapCore,
}

/// Polls `maps.events` until `ctx.shutdown`: every sample goes through `decode` inside the ring-buffer callback
/// (memory only: no I/O, no blocking; a sample it rejects is counted as malformed), then the decoded batch goes to
/// `deliver` in the poll loop (which may do I/O, e.g. name cgroups) with whether this is the last round. Drops are
/// counted as `lost_upstream` every second and at the end. On shutdown it calls `detach` first, then drains, so
/// nothing produced before the detach is lost.
pub(crate) fn stream_ring<T>(
    backend: &'static str,
    maps: RingMaps<'_>,
    ctx: &SourceContext,
    mut decode: impl FnMut(&[u8]) -> Result<T, &'static str>,
    mut detach: impl FnMut(),
    mut deliver: impl FnMut(std::vec::Drain<'_, T>, bool),
) -> Result<(), SourceError> {
    const BATCH: usize = 1024;
    let pending = Rc::new(RefCell::new(Vec::<T>::with_capacity(BATCH)));
    let mut builder = RingBufferBuilder::new();
    {
        let pending = pending.clone();
        let sender = ctx.events.clone();
        builder
            .add(maps.events, move |data: &[u8]| {
                match decode(data) {
                    Ok(record) => pending.borrow_mut().push(record),
                    Err(e) => {
                        tracing::trace!(backend, error = e, len = data.len(), "malformed sample");
                        sender.count_malformed();
                    }
                }
                0
            })
            .map_err(|e| libbpf_error(backend, "ring buffer add events", &e))?;
    }
    let ring = builder.build().map_err(|e| libbpf_error(backend, "ring buffer build", &e))?;
    let mut drops = PerCpuCounter::default();
    let mut last_drops = Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let stopping = ctx.shutdown.is_triggered();
        if stopping {
            // Detach first, then drain: nothing produced before the detach is lost.
            detach();
        } else if let Err(e) = ring.poll(POLL_TIMEOUT)
            && e.kind() != ErrorKind::Interrupted
        {
            return Err(libbpf_error(backend, "ring buffer poll", &e));
        }
        // With BPF_RB_NO_WAKEUP below the threshold, poll may time out with data waiting: always consume.
        if let Err(e) = ring.consume()
            && e.kind() != ErrorKind::Interrupted
        {
            return Err(libbpf_error(backend, "ring buffer consume", &e));
        }
        // Swap buffers so both keep their capacity across polls.
        std::mem::swap(&mut batch, &mut *pending.borrow_mut());
        deliver(batch.drain(..), stopping);
        if stopping || last_drops.elapsed() >= DROPS_INTERVAL {
            last_drops = Instant::now();
            let lost = drops.delta(maps.drops, backend);
            if lost > 0 {
                ctx.events.count_lost_upstream(lost);
            }
        }
        if stopping {
            return Ok(());
        }
    }
}

/// Test support for the ring-overflow tests: runs `source` (named `backend`) once with shutdown already requested,
/// so it drains what its ring holds and stops, and returns its loss counters `(queue_full, lost_upstream,
/// malformed)` and how many events reached the sink.
#[cfg(test)]
pub(crate) fn drain_stopped(
    source: impl ringwatch_core::Source + 'static,
    backend: &'static str,
) -> ((u64, u64, u64), u64) {
    use ringwatch_core::sink::{MemorySink, Sink};
    use ringwatch_core::{Pipeline, Shutdown};
    let pipeline = Pipeline::new(1 << 16);
    let stats = pipeline.stats();
    let shutdown = Shutdown::new();
    shutdown.trigger();
    let ctx = SourceContext { events: pipeline.sender(backend), shutdown };
    Box::new(source).run(ctx).expect("run");
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(MemorySink::default())];
    pipeline.run("h", &mut ringwatch_core::proc_table::ProcessTable::empty(), &mut [], &mut sinks);
    let losses = stats.losses().get(backend).copied().unwrap_or_default();
    (losses, stats.written.load(std::sync::atomic::Ordering::Relaxed))
}
