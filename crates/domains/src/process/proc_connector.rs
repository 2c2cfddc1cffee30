//! The process domain's user-mode backend over the netlink **proc connector** (`CONFIG_PROC_EVENTS`).
//!
//! # What it does
//!
//! The kernel multicasts a small `struct proc_event` to every socket subscribed to the `CN_IDX_PROC` connector
//! group whenever a task forks, execs or exits. This backend subscribes (`PROC_CN_MCAST_LISTEN`), parses each
//! datagram (`nlmsghdr` -> `cn_msg` -> `proc_event`) with a length check at every layer, and turns the records into
//! `process` events:
//!
//! - `fork` for a new process only (child pid == child tgid; thread creation is skipped), with the kernel's child
//!   tgid as `pid`, the parent's tgid as `ppid`, and the rest read from /proc;
//! - `exec` with exe, cmdline, cwd, uids, session, tty and start time (hence the guid) read from /proc right away;
//! - `exit` for a whole process only (pid == tgid), with `exit_code`/`exit_signal` decoded from the raw wait status
//!   the kernel sends; its guid and details come from the process table, not from here (no /proc read is tried,
//!   so an exit is never marked partial).
//!
//! Only datagrams from the kernel (netlink port 0) are accepted: any local process can unicast to our port, so a
//! datagram from elsewhere (or one cut short) is counted as malformed and dropped.
//!
//! # Why
//!
//! It is the process domain's fallback when eBPF cannot load. It needs no eBPF and injects nothing into monitored
//! processes; it works on any kernel built with the connector (nearly all distribution kernels) with CAP_NET_ADMIN
//! (before Linux 6.6) or with no privilege at all (6.6 and later). Static binaries, raw syscalls, `vfork` and
//! `env -u LD_PRELOAD` cannot hide from it, because the kernel itself reports every fork, exec and exit.
//!
//! # What it cannot see or trust
//!
//! - **No arguments, no path.** A `proc_event` holds pids, tgids, a timestamp and, for exits, the status — nothing
//!   else. Every detail (exe, cmdline, cwd, uids, session, tty, start time) is read from /proc *after* the fact.
//!   A short-lived process is often gone by then: the event is still emitted with the pids the kernel reported and
//!   `process.partial = true`. If the process exec'd again (or, for `fork`, already exec'd) before /proc was read,
//!   the details describe the *later* image; nothing in the message lets us notice that. A pid reused before we
//!   read /proc is detected (the /proc start time is later than the event) and its details are dropped (partial).
//! - **No enforcement.** The message arrives after the exec happened and the new image may already be running;
//!   the only possible reaction is a user-space kill afterwards. Denying an exec needs the kernel backend.
//! - **Losses.** Under a fork storm the socket's receive buffer (8 MiB asked) can overrun; `recv` then fails with
//!   ENOBUFS and the kernel does not say how many records it dropped. Each ENOBUFS is counted at once as 1 lost
//!   record (`lost_upstream`; the true number is unknown at that point). The rest is found from gaps in the
//!   kernel's per-CPU sequence numbers once that CPU sends again: a gap is exactly the number of records this socket
//!   lost, of every type (uid, comm, ... included), so the total is an upper bound on lost fork/exec/exit events.
//!   A gap is measurable only on a CPU from which a record arrived before the loss; records lost on a CPU that had
//!   sent nothing since the agent subscribed remain covered only by the 1-per-ENOBUFS count. Malformed records are
//!   counted too; nothing is dropped silently.
//! - Only processes in the initial pid and user namespace can subscribe (the kernel silently ignores others), and
//!   all pids are reported as the initial pid namespace sees them.
//! - A multi-threaded process whose leader calls `pthread_exit` reports its `exit` when the leader exits, possibly
//!   before the other threads finish.

use std::collections::HashMap;
use std::fs;
use std::io::IoSliceMut;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{MsgFlags, NetlinkAddr, SockaddrLike, sockopt};
use nix::time::{ClockId, clock_gettime};
use plain::Plain;
use ringwatch_core::event::{Backend, Domain, Mode, Process, SourceKind};
use ringwatch_core::guid::USER_HZ;
use ringwatch_core::proc_table::read_proc_process;
use ringwatch_core::{Activity, Event, EventSender, Probe, Source, SourceContext, SourceError, Timestamp};

/// Backend name used in logs, sensor events and loss counters.
const NAME: &str = "process/proc_connector";

/// `backend` of every event this source emits.
const BACKEND: Backend = Backend { mode: Mode::User, source: SourceKind::ProcConnector };

/// Receive buffer asked for with SO_RCVBUFFORCE (the kernel doubles it for bookkeeping). Each record costs well
/// under 1 KiB of buffer truesize, so this absorbs bursts of several thousand processes while the reader is busy
/// with /proc reads.
const RCVBUF_BYTES: usize = 8 << 20;

/// One datagram carries one record of 76 bytes today; the buffer leaves room for batched or future larger ones.
const RECV_BUF_BYTES: usize = 16 << 10;

/// Datagrams handled per wake-up before `shutdown` is checked again, so a storm cannot keep `run` from stopping.
const MAX_DATAGRAMS_PER_WAKE: usize = 4096;

/// How long `probe` waits for the kernel to acknowledge its subscription.
const PROBE_ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the monotonic -> wall-clock offset is re-measured (NTP steps, suspend).
const CLOCK_REFRESH: Duration = Duration::from_secs(1);

/// Most fork parents remembered (child tgid -> parent tgid) to give `exec`/`exit` a ppid when /proc is gone.
const MAX_REMEMBERED_PARENTS: usize = 1 << 16;

/// Most CPUs whose sequence numbers are tracked for loss detection.
const MAX_TRACKED_CPUS: usize = 4096;

/// Slack when comparing a /proc start time (10 ms ticks, rounded down) with an event time, for clock-offset error.
const START_TIME_SLACK_NS: u64 = 20_000_000;

// ---- Kernel wire format -------------------------------------------------------------------------------------
//
// Mirrors of the uapi structs (linux/netlink.h, linux/connector.h, linux/cn_proc.h). Each size and every offset
// used is pinned below, so a mistake cannot compile. Records arrive unaligned (the proc_event starts at offset 36
// of the datagram), so they are copied out with `plain::copy_from_bytes`, which checks the length.

/// `struct nlmsghdr`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

/// `struct cn_msg` (with its `struct cb_id id` flattened into `idx`/`val`); `len` bytes of data follow.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct CnMsg {
    idx: u32,
    val: u32,
    seq: u32,
    ack: u32,
    len: u16,
    flags: u16,
}

/// The fixed head of `struct proc_event`; the `event_data` union follows at offset 16.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct ProcEventHead {
    what: u32,
    cpu: u32,
    timestamp_ns: u64,
}

/// `event_data.ack`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct AckProcEvent {
    err: u32,
}

/// `event_data.fork`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct ForkProcEvent {
    parent_pid: i32,
    parent_tgid: i32,
    child_pid: i32,
    child_tgid: i32,
}

/// `event_data.exec`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct ExecProcEvent {
    process_pid: i32,
    process_tgid: i32,
}

/// `event_data.exit`. `parent_pid`/`parent_tgid` exist since Linux 4.19; older kernels send 16 bytes.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct ExitProcEvent {
    process_pid: i32,
    process_tgid: i32,
    exit_code: u32,
    exit_signal: u32,
    parent_pid: i32,
    parent_tgid: i32,
}

// SAFETY: each type is #[repr(C)], made only of integers (every bit pattern is valid) and has no padding (the
// asserts below pin sizes equal to the sum of the fields).
unsafe impl Plain for NlMsgHdr {}
// SAFETY: as above.
unsafe impl Plain for CnMsg {}
// SAFETY: as above.
unsafe impl Plain for ProcEventHead {}
// SAFETY: as above.
unsafe impl Plain for AckProcEvent {}
// SAFETY: as above.
unsafe impl Plain for ForkProcEvent {}
// SAFETY: as above.
unsafe impl Plain for ExecProcEvent {}
// SAFETY: as above.
unsafe impl Plain for ExitProcEvent {}

const NLMSG_HDRLEN: usize = 16;
const CN_MSG_LEN: usize = 20;
const PROC_EVENT_HEAD_LEN: usize = 16;
/// Length of the exit record before Linux 4.19 added the parent fields.
const EXIT_LEN_WITHOUT_PARENT: usize = 16;
/// `sizeof(struct proc_event)` on current kernels: head + the largest union member (`exit`, `comm`: 24 bytes).
const PROC_EVENT_LEN: usize = PROC_EVENT_HEAD_LEN + 24;

const _: () = assert!(
    size_of::<NlMsgHdr>() == NLMSG_HDRLEN
        && size_of::<libc::nlmsghdr>() == NLMSG_HDRLEN
        && offset_of!(NlMsgHdr, len) == offset_of!(libc::nlmsghdr, nlmsg_len)
        && offset_of!(NlMsgHdr, kind) == offset_of!(libc::nlmsghdr, nlmsg_type)
        && offset_of!(NlMsgHdr, flags) == offset_of!(libc::nlmsghdr, nlmsg_flags)
        && offset_of!(NlMsgHdr, seq) == offset_of!(libc::nlmsghdr, nlmsg_seq)
        && offset_of!(NlMsgHdr, pid) == offset_of!(libc::nlmsghdr, nlmsg_pid)
);
const _: () = assert!(
    size_of::<CnMsg>() == CN_MSG_LEN
        && offset_of!(CnMsg, idx) == 0
        && offset_of!(CnMsg, val) == 4
        && offset_of!(CnMsg, seq) == 8
        && offset_of!(CnMsg, ack) == 12
        && offset_of!(CnMsg, len) == 16
        && offset_of!(CnMsg, flags) == 18
);
const _: () = assert!(
    size_of::<ProcEventHead>() == PROC_EVENT_HEAD_LEN
        && offset_of!(ProcEventHead, what) == 0
        && offset_of!(ProcEventHead, cpu) == 4
        && offset_of!(ProcEventHead, timestamp_ns) == 8
);
const _: () = assert!(size_of::<AckProcEvent>() == 4);
const _: () = assert!(
    size_of::<ForkProcEvent>() == 16
        && offset_of!(ForkProcEvent, parent_pid) == 0
        && offset_of!(ForkProcEvent, parent_tgid) == 4
        && offset_of!(ForkProcEvent, child_pid) == 8
        && offset_of!(ForkProcEvent, child_tgid) == 12
);
const _: () = assert!(
    size_of::<ExecProcEvent>() == 8
        && offset_of!(ExecProcEvent, process_pid) == 0
        && offset_of!(ExecProcEvent, process_tgid) == 4
);
const _: () = assert!(
    size_of::<ExitProcEvent>() == 24
        && offset_of!(ExitProcEvent, process_pid) == 0
        && offset_of!(ExitProcEvent, process_tgid) == 4
        && offset_of!(ExitProcEvent, exit_code) == 8
        && offset_of!(ExitProcEvent, exit_signal) == 12
        && offset_of!(ExitProcEvent, parent_pid) == 16
        && offset_of!(ExitProcEvent, parent_tgid) == 20
        && PROC_EVENT_LEN == 40
);

const NLMSG_NOOP: u16 = libc::NLMSG_NOOP as u16;
const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;
const NLMSG_OVERRUN: u16 = libc::NLMSG_OVERRUN as u16;

const PROC_EVENT_NONE: u32 = libc::PROC_EVENT_NONE;
const PROC_EVENT_FORK: u32 = libc::PROC_EVENT_FORK;
const PROC_EVENT_EXEC: u32 = libc::PROC_EVENT_EXEC;
const PROC_EVENT_EXIT: u32 = libc::PROC_EVENT_EXIT;
/// Event types the kernel sends that this backend knows and does not turn into events.
const PROC_EVENTS_UNUSED: [u32; 6] = [
    libc::PROC_EVENT_UID,
    libc::PROC_EVENT_GID,
    libc::PROC_EVENT_SID,
    libc::PROC_EVENT_PTRACE,
    libc::PROC_EVENT_COMM,
    libc::PROC_EVENT_COREDUMP,
];

/// Reads a `T` from the start of `bytes` (any alignment); `None` when `bytes` is shorter than `T`.
fn read_record<T: Plain + Default>(bytes: &[u8]) -> Option<T> {
    let mut out = T::default();
    plain::copy_from_bytes(&mut out, bytes).ok()?;
    Some(out)
}

/// Rounds a netlink length up to the 4-byte alignment messages are packed at (`NLMSG_ALIGN`).
fn nlmsg_align(len: usize) -> usize {
    len.saturating_add(3) & !3
}

// ---- Parser ---------------------------------------------------------------------------------------------------

/// Why a record was discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Malformed {
    /// Fewer bytes left than an `nlmsghdr`, after the last whole message.
    TrailingBytes,
    /// `nlmsg_len` smaller than its own header.
    NlmsgLenTooSmall,
    /// `nlmsg_len` runs past the end of the datagram.
    NlmsgLenPastEnd,
    /// An `NLMSG_ERROR` too short for its error code.
    ErrorTooShort,
    /// A netlink message type the connector never sends.
    UnexpectedType(u16),
    /// Payload shorter than a `cn_msg`.
    CnMsgTooShort,
    /// `cn_msg.len` runs past the netlink message.
    CnLenPastEnd,
    /// A connector id other than the proc connector's.
    ForeignConnector,
    /// Data shorter than the `proc_event` head or than its event's record.
    ProcEventTooShort,
    /// A pid field that is negative.
    BadPid,
}

/// One decoded proc connector record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcRecord {
    /// `cn_msg.seq`: a per-CPU counter the kernel increments for every record it sends.
    seq: u32,
    /// `proc_event.cpu`: the CPU whose counter `seq` is.
    cpu: u32,
    /// `proc_event.timestamp_ns`: CLOCK_MONOTONIC (`ktime_get_ns`) when the kernel built the record.
    timestamp_ns: u64,
    kind: ProcKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcKind {
    /// Reply to a subscription request: `ack` is the request's `cn_msg.ack` + 1, `err` a positive errno or 0.
    Ack {
        ack: u32,
        err: u32,
    },
    Fork {
        parent_tgid: u32,
        child_pid: u32,
        child_tgid: u32,
    },
    Exec {
        pid: u32,
        tgid: u32,
    },
    /// `status` is the raw wait status (`task->exit_code`); `parent_tgid` is 0 when unknown.
    Exit {
        pid: u32,
        tgid: u32,
        status: u32,
        parent_tgid: u32,
    },
    /// A type the kernel documents that this backend does not report (uid, gid, sid, ptrace, comm, coredump).
    Unused(u32),
    /// A type this parser does not know: counted as malformed, so a new kernel's records do not vanish silently.
    Unknown(u32),
}

/// One item of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parsed {
    Proc(ProcRecord),
    /// `NLMSG_ERROR` with a non-zero code: the (positive) errno.
    NetlinkError(i32),
    /// `NLMSG_OVERRUN`: the kernel says data was lost.
    Overrun,
    /// `NLMSG_NOOP`, or `NLMSG_ERROR` with code 0 (an ack).
    Nothing,
    Malformed(Malformed),
}

fn pid(v: i32) -> Result<u32, Malformed> {
    u32::try_from(v).map_err(|_| Malformed::BadPid)
}

/// Splits one datagram into its netlink messages and decodes each; pushes one item per message into `out`.
///
/// A bad `nlmsg_len` ends the walk (nothing after it can be located); every other problem discards only the one
/// message it is in.
fn parse_datagram(buf: &[u8], out: &mut Vec<Parsed>) {
    let mut rest = buf;
    while !rest.is_empty() {
        let Some(hdr) = read_record::<NlMsgHdr>(rest) else {
            out.push(Parsed::Malformed(Malformed::TrailingBytes));
            return;
        };
        let len = hdr.len as usize;
        if len < NLMSG_HDRLEN {
            out.push(Parsed::Malformed(Malformed::NlmsgLenTooSmall));
            return;
        }
        let Some(payload) = rest.get(NLMSG_HDRLEN..len) else {
            out.push(Parsed::Malformed(Malformed::NlmsgLenPastEnd));
            return;
        };
        out.push(parse_nlmsg(hdr.kind, payload));
        // The last message may omit its alignment padding.
        rest = rest.get(nlmsg_align(len)..).unwrap_or_default();
    }
}

fn parse_nlmsg(kind: u16, payload: &[u8]) -> Parsed {
    match kind {
        NLMSG_NOOP => Parsed::Nothing,
        NLMSG_OVERRUN => Parsed::Overrun,
        NLMSG_ERROR => match payload.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
            Some(b) => {
                let code = i32::from_ne_bytes(b);
                if code == 0 { Parsed::Nothing } else { Parsed::NetlinkError(code.saturating_neg()) }
            }
            None => Parsed::Malformed(Malformed::ErrorTooShort),
        },
        // The connector sends every record as NLMSG_DONE (cn_netlink_send_mult).
        NLMSG_DONE => match parse_cn_msg(payload) {
            Ok(rec) => Parsed::Proc(rec),
            Err(m) => Parsed::Malformed(m),
        },
        other => Parsed::Malformed(Malformed::UnexpectedType(other)),
    }
}

fn parse_cn_msg(payload: &[u8]) -> Result<ProcRecord, Malformed> {
    let cn: CnMsg = read_record(payload).ok_or(Malformed::CnMsgTooShort)?;
    let data = payload.get(CN_MSG_LEN..CN_MSG_LEN + usize::from(cn.len)).ok_or(Malformed::CnLenPastEnd)?;
    if cn.idx != libc::CN_IDX_PROC || cn.val != libc::CN_VAL_PROC {
        return Err(Malformed::ForeignConnector);
    }
    let head: ProcEventHead = read_record(data).ok_or(Malformed::ProcEventTooShort)?;
    let body = data.get(PROC_EVENT_HEAD_LEN..).unwrap_or_default();
    let kind = match head.what {
        PROC_EVENT_NONE => {
            let a: AckProcEvent = read_record(body).ok_or(Malformed::ProcEventTooShort)?;
            ProcKind::Ack { ack: cn.ack, err: a.err }
        }
        PROC_EVENT_FORK => {
            let f: ForkProcEvent = read_record(body).ok_or(Malformed::ProcEventTooShort)?;
            pid(f.parent_pid)?;
            ProcKind::Fork {
                parent_tgid: pid(f.parent_tgid)?,
                child_pid: pid(f.child_pid)?,
                child_tgid: pid(f.child_tgid)?,
            }
        }
        PROC_EVENT_EXEC => {
            let e: ExecProcEvent = read_record(body).ok_or(Malformed::ProcEventTooShort)?;
            ProcKind::Exec { pid: pid(e.process_pid)?, tgid: pid(e.process_tgid)? }
        }
        PROC_EVENT_EXIT => {
            if body.len() < EXIT_LEN_WITHOUT_PARENT {
                return Err(Malformed::ProcEventTooShort);
            }
            // Zero-extend an old kernel's 16-byte record: a parent of 0 means "unknown".
            let mut raw = [0u8; size_of::<ExitProcEvent>()];
            let n = body.len().min(raw.len());
            raw[..n].copy_from_slice(&body[..n]);
            let e: ExitProcEvent = read_record(&raw).ok_or(Malformed::ProcEventTooShort)?;
            pid(e.parent_pid)?;
            ProcKind::Exit {
                pid: pid(e.process_pid)?,
                tgid: pid(e.process_tgid)?,
                status: e.exit_code,
                parent_tgid: pid(e.parent_tgid)?,
            }
        }
        what if PROC_EVENTS_UNUSED.contains(&what) => ProcKind::Unused(what),
        what => ProcKind::Unknown(what),
    };
    Ok(ProcRecord { seq: cn.seq, cpu: head.cpu, timestamp_ns: head.timestamp_ns, kind })
}

/// A subscription request: `nlmsghdr` + `cn_msg` + the 4-byte `enum proc_cn_mcast_op` (all event types; this
/// form works on every kernel, unlike the 6.6+ `struct proc_input` filter form).
fn mcast_request(op: u32, ack: u32) -> Vec<u8> {
    let data_len: u16 = 4;
    let total = NLMSG_HDRLEN + CN_MSG_LEN + usize::from(data_len);
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_ne_bytes());
    out.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    out.extend_from_slice(&0u16.to_ne_bytes()); // flags
    out.extend_from_slice(&0u32.to_ne_bytes()); // seq
    out.extend_from_slice(&0u32.to_ne_bytes()); // pid
    out.extend_from_slice(&libc::CN_IDX_PROC.to_ne_bytes());
    out.extend_from_slice(&libc::CN_VAL_PROC.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // seq
    out.extend_from_slice(&ack.to_ne_bytes());
    out.extend_from_slice(&data_len.to_ne_bytes());
    out.extend_from_slice(&0u16.to_ne_bytes()); // flags
    out.extend_from_slice(&op.to_ne_bytes());
    out
}

// ---- Decoding helpers -----------------------------------------------------------------------------------------

/// Splits a raw wait status into (exit code, terminating signal): a normal exit has only a code (`$?`), a process
/// killed by a signal has only the signal (the core-dump bit 0x80 is dropped).
fn decode_wait_status(status: u32) -> (Option<i32>, Option<i32>) {
    let signal = status & 0x7f;
    if signal == 0 { (Some(((status >> 8) & 0xff) as i32), None) } else { (None, Some(signal as i32)) }
}

/// True when a /proc entry with `start_ticks` started after an event at `event_boot_ns` (CLOCK_BOOTTIME): the pid
/// was reused and the entry describes another process.
fn started_after(start_ticks: u64, event_boot_ns: u64) -> bool {
    let start_ns = start_ticks.saturating_mul(1_000_000_000 / USER_HZ);
    start_ns > event_boot_ns.saturating_add(START_TIME_SLACK_NS)
}

/// Offsets from CLOCK_MONOTONIC (the clock of `proc_event.timestamp_ns`) to wall clock and to CLOCK_BOOTTIME (the
/// clock of /proc start times).
#[derive(Debug, Clone, Copy)]
struct Clocks {
    realtime_minus_mono: i128,
    boottime_minus_mono: i128,
}

impl Clocks {
    fn measure() -> Option<Self> {
        let ns = |id: ClockId| -> Option<i128> {
            let t = clock_gettime(id).ok()?;
            Some(i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
        };
        let mono1 = ns(ClockId::CLOCK_MONOTONIC)?;
        let real = ns(ClockId::CLOCK_REALTIME)?;
        let boot = ns(ClockId::CLOCK_BOOTTIME)?;
        let mono2 = ns(ClockId::CLOCK_MONOTONIC)?;
        let mono = (mono1 + mono2) / 2;
        Some(Clocks { realtime_minus_mono: real - mono, boottime_minus_mono: boot - mono })
    }

    fn wall(&self, mono_ns: u64) -> Timestamp {
        let t = i128::from(mono_ns) + self.realtime_minus_mono;
        Timestamp(u64::try_from(t.max(0)).unwrap_or(u64::MAX))
    }

    fn boottime(&self, mono_ns: u64) -> u64 {
        let t = i128::from(mono_ns) + self.boottime_minus_mono;
        u64::try_from(t.max(0)).unwrap_or(u64::MAX)
    }
}

/// Detects lost records from gaps in the kernel's per-CPU sequence numbers. Every record the kernel sends while
/// anyone listens takes the next number of its CPU's counter, and this socket (subscribed to all types) is sent
/// every one, in order per CPU, so a gap is exactly the number of records this socket lost.
#[derive(Debug, Default)]
struct SeqTracker {
    last: HashMap<u32, u32>,
}

impl SeqTracker {
    /// Records `seq` from `cpu`; returns how many records from that CPU were skipped since the previous one.
    fn observe(&mut self, cpu: u32, seq: u32) -> u64 {
        // Older kernels (before every record went through one numbering send_msg()) sent acks with cpu = -1 and
        // the requester's seq, outside the per-CPU counters.
        if cpu == u32::MAX {
            return 0;
        }
        let Some(prev) = self.last.get(&cpu).copied() else {
            if self.last.len() < MAX_TRACKED_CPUS {
                self.last.insert(cpu, seq);
            }
            return 0;
        };
        let step = seq.wrapping_sub(prev);
        if step == 0 || step > u32::MAX / 2 {
            // A repeat or an older number: not a loss; keep the newest seen.
            return 0;
        }
        self.last.insert(cpu, seq);
        u64::from(step - 1)
    }
}

// ---- Socket -----------------------------------------------------------------------------------------------------

/// A failed set-up step: which one, and the errno.
#[derive(Debug, Clone, Copy)]
struct StepError {
    step: &'static str,
    errno: Errno,
}

impl StepError {
    fn into_source_error(self) -> SourceError {
        let what = format!("{}: {}", self.step, self.errno.desc());
        match self.errno {
            Errno::EPERM | Errno::EACCES => SourceError::MissingPrivilege {
                backend: NAME,
                what: format!("needs CAP_NET_ADMIN in the initial user namespace ({what})"),
            },
            Errno::EPROTONOSUPPORT | Errno::EAFNOSUPPORT => SourceError::Unsupported {
                backend: NAME,
                what: format!("kernel without the netlink connector (CONFIG_CONNECTOR) ({what})"),
            },
            _ => {
                SourceError::Failed { backend: NAME, step: self.step.to_owned(), message: self.errno.desc().to_owned() }
            }
        }
    }
}

/// One datagram as received.
#[derive(Debug, Clone, Copy)]
struct Datagram {
    len: usize,
    /// Longer than the buffer: the tail was cut off.
    truncated: bool,
    /// Sent by the kernel (netlink port id 0), not by a local process unicasting to our port.
    from_kernel: bool,
}

/// A NETLINK_CONNECTOR socket bound to the proc connector group.
///
/// The kernel keeps a global listener count that closing the socket does not decrement (and kernels before 6.6
/// decrement it on *every* `PROC_CN_MCAST_IGNORE`), so a subscription is ended exactly once: by
/// [`ConnectorSocket::unsubscribe`], or on drop if that was never called.
#[derive(Debug)]
struct ConnectorSocket {
    fd: OwnedFd,
    listening: bool,
}

impl ConnectorSocket {
    /// Creates the socket and joins the `CN_IDX_PROC` multicast group (no subscription yet).
    fn open() -> Result<Self, StepError> {
        // SAFETY: socket(2) takes only integers and returns a new descriptor or -1; nothing is borrowed.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_CONNECTOR,
            )
        };
        if raw < 0 {
            return Err(StepError { step: "create netlink connector socket", errno: Errno::last() });
        }
        // SAFETY: `raw` is a descriptor socket(2) just returned to us; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Port id 0 lets the kernel pick a unique one, so several sockets in one process (probe + run) coexist.
        nix::sys::socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, libc::CN_IDX_PROC))
            .map_err(|errno| StepError { step: "bind to the CN_IDX_PROC multicast group", errno })?;
        Ok(ConnectorSocket { fd, listening: false })
    }

    /// Asks for a large receive buffer; returns the size the kernel reports (twice the request, for overhead).
    fn enlarge_receive_buffer(&self, bytes: usize) -> Result<usize, StepError> {
        if let Err(errno) = nix::sys::socket::setsockopt(&self.fd, sockopt::RcvBufForce, &bytes) {
            tracing::debug!(error = %errno, "SO_RCVBUFFORCE refused; falling back to SO_RCVBUF (capped by rmem_max)");
            nix::sys::socket::setsockopt(&self.fd, sockopt::RcvBuf, &bytes)
                .map_err(|errno| StepError { step: "set receive buffer (SO_RCVBUF)", errno })?;
        }
        nix::sys::socket::getsockopt(&self.fd, sockopt::RcvBuf)
            .map_err(|errno| StepError { step: "read receive buffer size", errno })
    }

    /// Subscribes to all proc events; the kernel's ack (sent to listeners of all types) carries `ack` + 1.
    fn subscribe(&mut self, ack: u32) -> Result<(), StepError> {
        if !self.listening {
            self.send_op(libc::PROC_CN_MCAST_LISTEN, ack)?;
            self.listening = true;
        }
        Ok(())
    }

    /// Ends the subscription (once; later calls do nothing). The kernel stops queueing records for this socket.
    fn unsubscribe(&mut self) -> Result<(), StepError> {
        if !self.listening {
            return Ok(());
        }
        self.listening = false;
        self.send_op(libc::PROC_CN_MCAST_IGNORE, 0)
    }

    /// Sends `PROC_CN_MCAST_LISTEN` or `PROC_CN_MCAST_IGNORE` to the kernel.
    fn send_op(&self, op: u32, ack: u32) -> Result<(), StepError> {
        let step = if op == libc::PROC_CN_MCAST_LISTEN {
            "subscribe (PROC_CN_MCAST_LISTEN)"
        } else {
            "unsubscribe (PROC_CN_MCAST_IGNORE)"
        };
        let msg = mcast_request(op, ack);
        let sent = nix::sys::socket::sendto(self.fd.as_raw_fd(), &msg, &NetlinkAddr::new(0, 0), MsgFlags::empty())
            .map_err(|errno| StepError { step, errno })?;
        if sent != msg.len() {
            return Err(StepError { step, errno: Errno::EMSGSIZE });
        }
        Ok(())
    }

    /// Waits up to `timeout` for the socket to become readable; false on timeout or EINTR.
    fn wait_readable(&self, timeout: Duration) -> Result<bool, Errno> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, ms) {
            Ok(n) => Ok(n > 0),
            Err(Errno::EINTR) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Receives one datagram without blocking. `Err(EAGAIN)` when none is queued, `Err(ENOBUFS)` after an overrun.
    fn recv(&self, buf: &mut [u8]) -> Result<Datagram, Errno> {
        let cap = buf.len();
        let mut iov = [IoSliceMut::new(buf)];
        let msg = nix::sys::socket::recvmsg::<NetlinkAddr>(
            self.fd.as_raw_fd(),
            &mut iov,
            None,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
        )?;
        let from_kernel = msg.address.is_some_and(|a| a.family().is_some() && a.pid() == 0);
        // With MSG_TRUNC the kernel returns the datagram's real length even when it did not fit.
        let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC) || msg.bytes > cap;
        Ok(Datagram { len: msg.bytes.min(cap), truncated, from_kernel })
    }
}

impl Drop for ConnectorSocket {
    fn drop(&mut self) {
        if let Err(e) = self.unsubscribe() {
            tracing::warn!(error = %e.errno, "proc connector: unsubscribe on close failed");
        }
    }
}

/// Why the kernel would ignore our subscription, if it would: it only honours requests from the initial pid and
/// user namespaces, silently (no ack, no error).
fn namespace_problem() -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let nested_pid_ns =
        status.lines().find_map(|l| l.strip_prefix("NSpid:")).is_some_and(|v| v.split_whitespace().count() > 1);
    if nested_pid_ns {
        return Some(
            "the agent runs in a child pid namespace; the kernel ignores proc connector subscriptions from it".into(),
        );
    }
    let uid_map = fs::read_to_string("/proc/self/uid_map").ok()?;
    let initial_user_ns =
        uid_map.lines().count() == 1 && uid_map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
    if !initial_user_ns {
        return Some(
            "the agent runs in a child user namespace; the kernel ignores proc connector subscriptions from it".into(),
        );
    }
    None
}

/// A value to put in a request's `cn_msg.ack`, to recognise the kernel's reply among other listeners' acks.
fn ack_nonce() -> u32 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    std::process::id().wrapping_mul(2_654_435_761) ^ t.subsec_nanos()
}

// ---- The source -------------------------------------------------------------------------------------------------

/// The proc connector backend of the process domain (user mode, `backend.source = "proc_connector"`).
///
/// [`ProcessProcConnector::start`] subscribes; [`Source::run`] streams fork/exec/exit events until shutdown, then
/// unsubscribes (`PROC_CN_MCAST_IGNORE`), drains what was already queued and closes the socket. See the module
/// documentation for what it cannot see.
#[derive(Debug)]
pub struct ProcessProcConnector {
    socket: ConnectorSocket,
    /// Receive buffer size the kernel granted (bytes, as SO_RCVBUF reports it).
    rcvbuf: usize,
}

impl ProcessProcConnector {
    /// Whether the proc connector can run here: creates a socket, joins the group, subscribes and waits (up to 1 s)
    /// for the kernel's acknowledgement, then unsubscribes.
    ///
    /// Kernels before 6.6 refuse subscribers without CAP_NET_ADMIN (reported as "needs CAP_NET_ADMIN"); 6.6 and
    /// later accept any user. A kernel without `CONFIG_PROC_EVENTS` never acknowledges, and one without the
    /// connector refuses the socket; both are reported as unavailable with the reason.
    pub fn probe() -> Probe {
        let unavailable = |why: String| Probe::unavailable(Domain::Process, Mode::User, SourceKind::ProcConnector, why);
        if let Some(why) = namespace_problem() {
            return unavailable(why);
        }
        let mut socket = match ConnectorSocket::open() {
            Ok(s) => s,
            Err(e) => return unavailable(probe_reason(e)),
        };
        let nonce = ack_nonce();
        if let Err(e) = socket.subscribe(nonce) {
            return unavailable(probe_reason(e));
        }
        let acked = wait_for_ack(&socket, nonce.wrapping_add(1), PROBE_ACK_TIMEOUT);
        if let Err(e) = socket.unsubscribe() {
            tracing::debug!(error = %e.errno, "probe: unsubscribe failed");
        }
        match acked {
            Some(0) => Probe::ok(
                Domain::Process,
                Mode::User,
                SourceKind::ProcConnector,
                "netlink proc connector: fork/exec/exit from the kernel; details read from /proc afterwards \
                 (no argv in the message, short-lived processes may be partial, no enforcement)",
            ),
            Some(err) if err == libc::EPERM as u32 || err == libc::EACCES as u32 => {
                unavailable("the kernel refused the subscription: needs CAP_NET_ADMIN".into())
            }
            Some(err) => unavailable(format!(
                "the kernel refused the subscription: {}",
                Errno::from_raw(i32::try_from(err).unwrap_or(libc::EINVAL)).desc()
            )),
            None => unavailable(format!(
                "no acknowledgement from the proc connector within {} ms (kernel without CONFIG_PROC_EVENTS, or \
                 missing CAP_NET_ADMIN)",
                PROBE_ACK_TIMEOUT.as_millis()
            )),
        }
    }

    /// Opens the socket, joins the `CN_IDX_PROC` group, sets an 8 MiB receive buffer (SO_RCVBUFFORCE, falling back
    /// to SO_RCVBUF) and subscribes. Events are queued in the kernel from here on, before `run` starts.
    ///
    /// Errors name the failed step; EPERM is [`SourceError::MissingPrivilege`], a kernel without the connector or
    /// an agent outside the initial namespaces is [`SourceError::Unsupported`].
    pub fn start() -> Result<Self, SourceError> {
        if let Some(what) = namespace_problem() {
            return Err(SourceError::Unsupported { backend: NAME, what });
        }
        let mut socket = ConnectorSocket::open().map_err(StepError::into_source_error)?;
        let rcvbuf = socket.enlarge_receive_buffer(RCVBUF_BYTES).map_err(StepError::into_source_error)?;
        socket.subscribe(ack_nonce()).map_err(StepError::into_source_error)?;
        tracing::info!(domain = "process", mode = "user", source = "proc_connector", rcvbuf, "subscribed");
        Ok(ProcessProcConnector { socket, rcvbuf })
    }
}

fn probe_reason(e: StepError) -> String {
    match e.errno {
        Errno::EPERM | Errno::EACCES => format!("needs CAP_NET_ADMIN ({}: {})", e.step, e.errno.desc()),
        Errno::EPROTONOSUPPORT | Errno::EAFNOSUPPORT => {
            format!("kernel without the netlink connector ({}: {})", e.step, e.errno.desc())
        }
        _ => format!("{}: {}", e.step, e.errno.desc()),
    }
}

/// Reads datagrams until the kernel's ack with `ack` arrives (returns its errno, 0 for success) or `timeout`.
fn wait_for_ack(socket: &ConnectorSocket, ack: u32, timeout: Duration) -> Option<u32> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; RECV_BUF_BYTES];
    let mut items = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        match socket.wait_readable(left.min(Duration::from_millis(100))) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => return None,
        }
        loop {
            let d = match socket.recv(&mut buf) {
                Ok(d) => d,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR | Errno::ENOBUFS) => continue,
                Err(_) => return None,
            };
            if !d.from_kernel || d.truncated {
                continue;
            }
            items.clear();
            parse_datagram(&buf[..d.len], &mut items);
            for item in &items {
                if let Parsed::Proc(ProcRecord { kind: ProcKind::Ack { ack: a, err }, .. }) = item
                    && *a == ack
                {
                    return Some(*err);
                }
            }
        }
    }
}

impl Source for ProcessProcConnector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let span = tracing::info_span!("source", domain = "process", mode = "user", source = "proc_connector");
        let _entered = span.enter();
        let ProcessProcConnector { mut socket, rcvbuf } = *self;
        let mut reader = Reader::new(&ctx.events);
        let mut buf = vec![0u8; RECV_BUF_BYTES];
        let result = loop {
            if ctx.shutdown.is_triggered() {
                break Ok(());
            }
            reader.refresh_clocks();
            match socket.wait_readable(Duration::from_millis(100)) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(errno) => break Err(failed("poll", errno)),
            }
            if let Err(errno) = reader.drain(&socket, &mut buf, MAX_DATAGRAMS_PER_WAKE) {
                break Err(failed("recv", errno));
            }
        };
        // Unsubscribe first so the queue stops growing, then hand over what the kernel had already queued.
        if let Err(e) = socket.unsubscribe() {
            tracing::warn!(error = %e.errno, "unsubscribe failed; the kernel keeps counting a listener");
        }
        if result.is_ok()
            && let Err(errno) = reader.drain(&socket, &mut buf, usize::MAX)
        {
            tracing::warn!(error = %errno, "final drain failed");
        }
        tracing::info!(
            overruns = reader.overruns,
            rcvbuf,
            forks = reader.stats.forks,
            execs = reader.stats.execs,
            exits = reader.stats.exits,
            partial_forks = reader.stats.partial_forks,
            partial_execs = reader.stats.partial_execs,
            reused_pids = reader.stats.reused_pids,
            lost = reader.stats.lost,
            malformed = reader.stats.malformed,
            "stopped"
        );
        drop(socket);
        result
    }
}

fn failed(step: &str, errno: Errno) -> SourceError {
    SourceError::Failed { backend: NAME, step: step.to_owned(), message: errno.desc().to_owned() }
}

/// What one run saw, for the final log line.
#[derive(Debug, Default, Clone, Copy)]
struct RunStats {
    forks: u64,
    execs: u64,
    exits: u64,
    partial_forks: u64,
    partial_execs: u64,
    reused_pids: u64,
    lost: u64,
    malformed: u64,
}

/// Turns datagrams into events: loss accounting, /proc reads, pid bookkeeping.
struct Reader<'a> {
    events: &'a EventSender,
    own_pid: u32,
    clocks: Option<Clocks>,
    clocks_at: Instant,
    seqs: SeqTracker,
    /// child tgid -> parent tgid from fork records, for exec/exit when /proc is already gone.
    parents: HashMap<u32, u32>,
    /// Overruns (ENOBUFS) already counted as 1 lost record each and not yet absorbed by a sequence gap.
    provisional_losses: u64,
    /// Overruns (ENOBUFS) seen, for the final log line and tests.
    overruns: u64,
    items: Vec<Parsed>,
    stats: RunStats,
}

impl<'a> Reader<'a> {
    fn new(events: &'a EventSender) -> Self {
        Reader {
            events,
            own_pid: std::process::id(),
            clocks: Clocks::measure(),
            clocks_at: Instant::now(),
            seqs: SeqTracker::default(),
            parents: HashMap::new(),
            provisional_losses: 0,
            overruns: 0,
            items: Vec::new(),
            stats: RunStats::default(),
        }
    }

    fn refresh_clocks(&mut self) {
        if self.clocks_at.elapsed() >= CLOCK_REFRESH {
            if let Some(c) = Clocks::measure() {
                self.clocks = Some(c);
            }
            self.clocks_at = Instant::now();
        }
    }

    /// Reads and handles up to `max` queued datagrams. Errors other than "queue empty", "overrun" and EINTR end it.
    fn drain(&mut self, socket: &ConnectorSocket, buf: &mut [u8], max: usize) -> Result<(), Errno> {
        for _ in 0..max {
            let d = match socket.recv(buf) {
                Ok(d) => d,
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(Errno::ENOBUFS) => {
                    self.overrun();
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !d.from_kernel || d.truncated {
                // A local process unicasting to our port can forge records; a cut datagram cannot be trusted.
                self.malformed();
                continue;
            }
            self.handle_datagram(&buf[..d.len]);
        }
        Ok(())
    }

    fn handle_datagram(&mut self, datagram: &[u8]) {
        let mut items = std::mem::take(&mut self.items);
        items.clear();
        parse_datagram(datagram, &mut items);
        for item in &items {
            match *item {
                Parsed::Proc(rec) => self.handle_record(rec),
                Parsed::Malformed(why) => {
                    tracing::trace!(?why, "malformed proc connector record");
                    self.malformed();
                }
                Parsed::Overrun => self.lost(1),
                Parsed::NetlinkError(errno) => tracing::debug!(errno, "netlink error from the connector"),
                Parsed::Nothing => {}
            }
        }
        self.items = items;
    }

    fn malformed(&mut self) {
        self.stats.malformed += 1;
        self.events.count_malformed();
    }

    /// The receive buffer overran (ENOBUFS) and the kernel does not say by how much: count one lost record now, so
    /// the loss is reported within a second; sequence gaps found later add the rest.
    fn overrun(&mut self) {
        self.overruns += 1;
        self.provisional_losses += 1;
        self.lost(1);
        tracing::debug!("receive buffer overrun (ENOBUFS)");
    }

    fn lost(&mut self, n: u64) {
        self.stats.lost += n;
        self.events.count_lost_upstream(n);
    }

    fn handle_record(&mut self, rec: ProcRecord) {
        let gap = self.seqs.observe(rec.cpu, rec.seq);
        if gap > 0 {
            // Part of this gap may already be counted, provisionally, when its overrun was reported.
            let counted = gap.min(self.provisional_losses);
            self.provisional_losses -= counted;
            self.lost(gap - counted);
        }
        let ev = match rec.kind {
            ProcKind::Fork { parent_tgid, child_pid, child_tgid } => {
                self.fork_event(rec.timestamp_ns, parent_tgid, child_pid, child_tgid)
            }
            ProcKind::Exec { pid, tgid } => self.exec_event(rec.timestamp_ns, pid, tgid),
            ProcKind::Exit { pid, tgid, status, parent_tgid } => {
                self.exit_event(rec.timestamp_ns, pid, tgid, status, parent_tgid)
            }
            ProcKind::Ack { ack, err } => {
                if err != 0 {
                    tracing::debug!(ack, err, "the proc connector refused a subscription request");
                }
                None
            }
            ProcKind::Unused(_) => None,
            ProcKind::Unknown(what) => {
                tracing::trace!(what, "unknown proc event type");
                self.malformed();
                None
            }
        };
        if let Some(ev) = ev {
            self.events.send(ev);
        }
    }

    fn event(&self, activity: Activity, timestamp_ns: u64) -> Event {
        let mut ev = Event::new(Domain::Process, activity, BACKEND);
        if let Some(c) = &self.clocks {
            ev.time = c.wall(timestamp_ns);
        }
        ev
    }

    /// What /proc says about `pid` now, checked against the event time. `partial` is true when the process was
    /// gone, exited while being read (no exe, cmdline or cwd), or the pid belongs to a process started after the
    /// event. A process whose argv is really empty is reported partial too.
    fn read_details(&mut self, pid: u32, timestamp_ns: u64) -> (Process, bool) {
        match read_proc_process(pid) {
            Some(p) => {
                let reused = self.clocks.is_some_and(|c| started_after(p.start_ticks, c.boottime(timestamp_ns)));
                if reused {
                    self.stats.reused_pids += 1;
                    (Process::default(), true)
                } else {
                    // The process can exit between the reads: its exe and cmdline go with its memory, its cwd a
                    // little later. Any of them missing means the details are incomplete.
                    let partial = p.exe.is_empty() || p.cmdline.is_empty() || p.cwd.is_none();
                    (p, partial)
                }
            }
            None => (Process::default(), true),
        }
    }

    fn remember_parent(&mut self, child: u32, parent: u32) {
        if self.parents.len() < MAX_REMEMBERED_PARENTS || self.parents.contains_key(&child) {
            self.parents.insert(child, parent);
        }
    }

    fn fork_event(&mut self, ts: u64, parent_tgid: u32, child_pid: u32, child_tgid: u32) -> Option<Event> {
        if child_pid != child_tgid || child_tgid == self.own_pid {
            return None; // a new thread, not a new process
        }
        self.remember_parent(child_tgid, parent_tgid);
        let mut ev = self.event(Activity::Fork, ts);
        let (mut p, partial) = self.read_details(child_tgid, ts);
        p.pid = child_tgid;
        p.tid = child_pid;
        p.ppid = parent_tgid;
        p.partial = partial;
        ev.process = p;
        self.stats.forks += 1;
        self.stats.partial_forks += u64::from(partial);
        Some(ev)
    }

    fn exec_event(&mut self, ts: u64, pid: u32, tgid: u32) -> Option<Event> {
        if tgid == self.own_pid {
            return None;
        }
        let mut ev = self.event(Activity::Exec, ts);
        let (mut p, partial) = self.read_details(tgid, ts);
        if p.ppid == 0 {
            p.ppid = self.parents.get(&tgid).copied().unwrap_or(0);
        }
        p.pid = tgid;
        p.tid = pid;
        p.partial = partial;
        ev.process = p;
        self.stats.execs += 1;
        self.stats.partial_execs += u64::from(partial);
        Some(ev)
    }

    fn exit_event(&mut self, ts: u64, pid: u32, tgid: u32, status: u32, parent_tgid: u32) -> Option<Event> {
        if pid != tgid {
            return None; // a thread exiting, not the process
        }
        let remembered = self.parents.remove(&tgid);
        if tgid == self.own_pid {
            return None;
        }
        let mut ev = self.event(Activity::Exit, ts);
        let (exit_code, exit_signal) = decode_wait_status(status);
        ev.process.pid = tgid;
        ev.process.tid = pid;
        ev.process.ppid = if parent_tgid != 0 { parent_tgid } else { remembered.unwrap_or(0) };
        ev.process.exit_code = exit_code;
        ev.process.exit_signal = exit_signal;
        self.stats.exits += 1;
        Some(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringwatch_core::Pipeline;

    fn nlmsg(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        out.extend_from_slice(&7u32.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn cn_msg(idx: u32, seq: u32, ack: u32, declared_len: u16, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in [idx, libc::CN_VAL_PROC, seq, ack] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        out.extend_from_slice(&declared_len.to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        out.extend_from_slice(data);
        out
    }

    /// A full 40-byte `proc_event` as the kernel sends it.
    fn proc_event(what: u32, cpu: u32, ts: u64, fields: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&what.to_ne_bytes());
        out.extend_from_slice(&cpu.to_ne_bytes());
        out.extend_from_slice(&ts.to_ne_bytes());
        for f in fields {
            out.extend_from_slice(&f.to_ne_bytes());
        }
        out.resize(PROC_EVENT_LEN, 0);
        out
    }

    fn record(seq: u32, what: u32, fields: &[u32]) -> Vec<u8> {
        let ev = proc_event(what, 1, 1_000, fields);
        nlmsg(NLMSG_DONE, &cn_msg(libc::CN_IDX_PROC, seq, 0, ev.len() as u16, &ev))
    }

    fn parse(buf: &[u8]) -> Vec<Parsed> {
        let mut out = Vec::new();
        parse_datagram(buf, &mut out);
        out
    }

    fn kinds(buf: &[u8]) -> Vec<ProcKind> {
        parse(buf)
            .into_iter()
            .map(|p| match p {
                Parsed::Proc(r) => r.kind,
                other => panic!("expected a record, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn fork_exec_exit_records_decode() {
        let fork = record(1, PROC_EVENT_FORK, &[100, 100, 101, 101]);
        let parsed = parse(&fork);
        assert_eq!(
            parsed,
            vec![Parsed::Proc(ProcRecord {
                seq: 1,
                cpu: 1,
                timestamp_ns: 1_000,
                kind: ProcKind::Fork { parent_tgid: 100, child_pid: 101, child_tgid: 101 }
            })]
        );
        assert_eq!(kinds(&record(2, PROC_EVENT_EXEC, &[101, 101])), vec![ProcKind::Exec { pid: 101, tgid: 101 }]);
        assert_eq!(
            kinds(&record(3, PROC_EVENT_EXIT, &[101, 101, 7 << 8, 17, 100, 100])),
            vec![ProcKind::Exit { pid: 101, tgid: 101, status: 7 << 8, parent_tgid: 100 }]
        );
    }

    #[test]
    fn several_messages_in_one_datagram_are_all_decoded() {
        let mut dgram = record(1, PROC_EVENT_FORK, &[1, 1, 2, 2]);
        dgram.extend(record(2, PROC_EVENT_EXEC, &[2, 2]));
        dgram.extend(nlmsg(NLMSG_NOOP, &[]));
        dgram.extend(record(3, PROC_EVENT_EXIT, &[2, 2, 0, 17, 1, 1]));
        let parsed = parse(&dgram);
        assert_eq!(parsed.len(), 4);
        assert!(matches!(parsed[0], Parsed::Proc(ProcRecord { kind: ProcKind::Fork { .. }, .. })));
        assert!(matches!(parsed[1], Parsed::Proc(ProcRecord { kind: ProcKind::Exec { .. }, .. })));
        assert_eq!(parsed[2], Parsed::Nothing);
        assert!(matches!(parsed[3], Parsed::Proc(ProcRecord { kind: ProcKind::Exit { .. }, .. })));
    }

    #[test]
    fn unaligned_message_lengths_are_padded_to_four_bytes() {
        // An NLMSG_NOOP with 1 payload byte (len 17) is followed by 3 padding bytes, then the next message.
        let mut dgram = nlmsg(NLMSG_NOOP, &[0xaa]);
        dgram.extend_from_slice(&[0, 0, 0]);
        dgram.extend(record(1, PROC_EVENT_EXEC, &[5, 5]));
        assert_eq!(parse(&dgram)[1], parse(&record(1, PROC_EVENT_EXEC, &[5, 5]))[0]);
    }

    #[test]
    fn truncated_buffers_are_malformed_never_a_panic() {
        let full = record(1, PROC_EVENT_EXIT, &[9, 9, 0, 17, 1, 1]);
        for cut in 1..full.len() {
            let parsed = parse(&full[..cut]);
            assert_eq!(parsed.len(), 1, "cut at {cut}: {parsed:?}");
            assert!(matches!(parsed[0], Parsed::Malformed(_)), "cut at {cut}: {parsed:?}");
        }
        assert_eq!(parse(&[]), vec![]);
    }

    #[test]
    fn lying_lengths_are_malformed() {
        let good = record(1, PROC_EVENT_EXEC, &[5, 5]);
        // nlmsg_len larger than the datagram.
        let mut long = good.clone();
        long[..4].copy_from_slice(&(good.len() as u32 + 4).to_ne_bytes());
        assert_eq!(parse(&long), vec![Parsed::Malformed(Malformed::NlmsgLenPastEnd)]);
        // nlmsg_len smaller than the header: the walk stops instead of looping.
        let mut tiny = good.clone();
        tiny[..4].copy_from_slice(&4u32.to_ne_bytes());
        assert_eq!(parse(&tiny), vec![Parsed::Malformed(Malformed::NlmsgLenTooSmall)]);
        // cn_msg.len larger than the netlink payload.
        let ev = proc_event(PROC_EVENT_EXEC, 0, 0, &[5, 5]);
        let lying_cn = nlmsg(NLMSG_DONE, &cn_msg(libc::CN_IDX_PROC, 1, 0, 400, &ev));
        assert_eq!(parse(&lying_cn), vec![Parsed::Malformed(Malformed::CnLenPastEnd)]);
        // cn_msg.len too small for the record it announces.
        let short_cn = nlmsg(NLMSG_DONE, &cn_msg(libc::CN_IDX_PROC, 1, 0, 20, &ev));
        assert_eq!(parse(&short_cn), vec![Parsed::Malformed(Malformed::ProcEventTooShort)]);
        // A fork that fits the head but not its 16-byte body.
        let fork = proc_event(PROC_EVENT_FORK, 0, 0, &[1, 1, 2, 2]);
        let short_fork = nlmsg(NLMSG_DONE, &cn_msg(libc::CN_IDX_PROC, 1, 0, 28, &fork));
        assert_eq!(parse(&short_fork), vec![Parsed::Malformed(Malformed::ProcEventTooShort)]);
    }

    #[test]
    fn a_bad_message_does_not_hide_the_next_one() {
        let ev = proc_event(PROC_EVENT_EXEC, 0, 0, &[5, 5]);
        let mut dgram = nlmsg(NLMSG_DONE, &cn_msg(libc::CN_IDX_PROC, 1, 0, 20, &ev));
        dgram.extend(record(2, PROC_EVENT_EXEC, &[6, 6]));
        let parsed = parse(&dgram);
        assert_eq!(parsed[0], Parsed::Malformed(Malformed::ProcEventTooShort));
        assert!(matches!(parsed[1], Parsed::Proc(ProcRecord { kind: ProcKind::Exec { pid: 6, tgid: 6 }, .. })));
    }

    #[test]
    fn unknown_and_unused_event_types_are_told_apart() {
        assert_eq!(kinds(&record(1, 0x0800_0000, &[1, 1])), vec![ProcKind::Unknown(0x0800_0000)]);
        assert_eq!(kinds(&record(1, libc::PROC_EVENT_COMM, &[1, 1])), vec![ProcKind::Unused(libc::PROC_EVENT_COMM)]);
    }

    #[test]
    fn foreign_connector_ids_and_negative_pids_are_malformed() {
        let ev = proc_event(PROC_EVENT_EXEC, 0, 0, &[5, 5]);
        let foreign = nlmsg(NLMSG_DONE, &cn_msg(libc::CN_IDX_CIFS, 1, 0, ev.len() as u16, &ev));
        assert_eq!(parse(&foreign), vec![Parsed::Malformed(Malformed::ForeignConnector)]);
        let negative = record(1, PROC_EVENT_EXEC, &[u32::MAX, u32::MAX]);
        assert_eq!(parse(&negative), vec![Parsed::Malformed(Malformed::BadPid)]);
    }

    #[test]
    fn netlink_control_messages() {
        assert_eq!(parse(&nlmsg(NLMSG_ERROR, &0i32.to_ne_bytes())), vec![Parsed::Nothing]);
        assert_eq!(parse(&nlmsg(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes())), vec![Parsed::NetlinkError(libc::EPERM)]);
        assert_eq!(parse(&nlmsg(NLMSG_ERROR, &[1, 2])), vec![Parsed::Malformed(Malformed::ErrorTooShort)]);
        assert_eq!(parse(&nlmsg(NLMSG_OVERRUN, &[])), vec![Parsed::Overrun]);
        assert_eq!(parse(&nlmsg(0x20, &[])), vec![Parsed::Malformed(Malformed::UnexpectedType(0x20))]);
    }

    #[test]
    fn old_kernels_sixteen_byte_exit_has_no_parent() {
        let mut ev = proc_event(PROC_EVENT_EXIT, 0, 0, &[9, 9, 15, 17]);
        ev.truncate(PROC_EVENT_HEAD_LEN + EXIT_LEN_WITHOUT_PARENT);
        let dgram = nlmsg(NLMSG_DONE, &cn_msg(libc::CN_IDX_PROC, 1, 0, ev.len() as u16, &ev));
        assert_eq!(kinds(&dgram), vec![ProcKind::Exit { pid: 9, tgid: 9, status: 15, parent_tgid: 0 }]);
    }

    #[test]
    fn ack_carries_the_request_ack_plus_one() {
        let ev = proc_event(PROC_EVENT_NONE, 0, 0, &[libc::EPERM as u32]);
        let dgram = nlmsg(NLMSG_DONE, &cn_msg(libc::CN_IDX_PROC, 0, 43, ev.len() as u16, &ev));
        assert_eq!(kinds(&dgram), vec![ProcKind::Ack { ack: 43, err: libc::EPERM as u32 }]);
    }

    #[test]
    fn subscription_request_is_what_the_kernel_expects() {
        let req = mcast_request(libc::PROC_CN_MCAST_LISTEN, 42);
        assert_eq!(req.len(), 40);
        let hdr: NlMsgHdr = read_record(&req).expect("header");
        assert_eq!((hdr.len, hdr.kind), (40, NLMSG_DONE));
        let cn: CnMsg = read_record(&req[NLMSG_HDRLEN..]).expect("cn_msg");
        assert_eq!((cn.idx, cn.val, cn.ack, cn.len), (libc::CN_IDX_PROC, libc::CN_VAL_PROC, 42, 4));
        assert_eq!(req[36..], libc::PROC_CN_MCAST_LISTEN.to_ne_bytes());
    }

    #[test]
    fn wait_status_decodes_to_code_or_signal() {
        assert_eq!(decode_wait_status(0), (Some(0), None));
        assert_eq!(decode_wait_status(7 << 8), (Some(7), None));
        assert_eq!(decode_wait_status(libc::SIGTERM as u32), (None, Some(15)));
        assert_eq!(decode_wait_status(libc::SIGSEGV as u32 | 0x80), (None, Some(11)));
    }

    #[test]
    fn sequence_gaps_count_lost_records_per_cpu() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(0, 10), 0);
        assert_eq!(t.observe(1, 500), 0);
        assert_eq!(t.observe(0, 11), 0);
        assert_eq!(t.observe(0, 15), 3);
        assert_eq!(t.observe(1, 501), 0);
        assert_eq!(t.observe(0, 14), 0, "an older number is not a loss");
        assert_eq!(t.observe(0, 16), 0);
        assert_eq!(t.observe(2, u32::MAX), 0);
        assert_eq!(t.observe(2, 1), 1, "wraps around");
        assert_eq!(t.observe(u32::MAX, 7), 0, "old kernels' acks are outside the counters");
    }

    #[test]
    fn a_pid_started_after_the_event_is_a_reused_pid() {
        let event_boot_ns = 5_000_000_000; // 5 s after boot = 500 ticks
        assert!(!started_after(500, event_boot_ns));
        assert!(!started_after(501, event_boot_ns), "within the slack");
        assert!(started_after(510, event_boot_ns));
    }

    #[test]
    fn clocks_convert_monotonic_to_wall_time() {
        let c = Clocks::measure().expect("clock_gettime works");
        let mono = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("monotonic");
        let mono_ns = mono.tv_sec() as u64 * 1_000_000_000 + mono.tv_nsec() as u64;
        let wall = c.wall(mono_ns).0 as i128;
        let now = Timestamp::now().0 as i128;
        assert!((wall - now).abs() < 50_000_000, "wall {wall} vs now {now}");
    }

    #[test]
    fn reader_counts_malformed_gaps_and_emits_events() {
        let pipeline = Pipeline::new(64);
        let sender = pipeline.sender(NAME);
        let mut reader = Reader::new(&sender);
        reader.handle_datagram(&record(1, PROC_EVENT_EXEC, &[u32::MAX, 1]));
        // pid 0x7fff_fff0 does not exist: the exec is emitted with partial details.
        reader.handle_datagram(&record(2, PROC_EVENT_FORK, &[1, 1, 0x7fff_fff0, 0x7fff_fff0]));
        reader.handle_datagram(&record(3, PROC_EVENT_EXEC, &[0x7fff_fff0, 0x7fff_fff0]));
        // An overrun counts 1 at once; the gap found next (seq 4 and 5 missing) adds only the second record.
        reader.overrun();
        reader.handle_datagram(&record(6, PROC_EVENT_EXIT, &[0x7fff_fff0, 0x7fff_fff0, 7 << 8, 17, 1, 1]));
        // A thread's fork and exit are not process events.
        reader.handle_datagram(&record(7, PROC_EVENT_FORK, &[1, 1, 0x7fff_fff1, 0x7fff_fff0]));
        reader.handle_datagram(&record(8, PROC_EVENT_EXIT, &[0x7fff_fff1, 0x7fff_fff0, 0, 17, 1, 1]));
        // An overrun no gap explains stays counted as 1.
        reader.overrun();
        let counters = sender.counters();
        use std::sync::atomic::Ordering::Relaxed;
        assert_eq!(counters.malformed.load(Relaxed), 1);
        assert_eq!(counters.lost_upstream.load(Relaxed), 2 + 1, "seq 4 and 5 missing, plus one unexplained overrun");
        assert_eq!(reader.overruns, 2);
        assert_eq!(pipeline.stats().accepted.load(Relaxed), 3);
        assert_eq!((reader.stats.forks, reader.stats.execs, reader.stats.exits), (1, 1, 1));
        assert_eq!((reader.stats.partial_forks, reader.stats.partial_execs), (1, 1));
    }

    #[test]
    fn missing_privilege_and_missing_kernel_support_are_told_apart() {
        let eperm = StepError { step: "bind to the CN_IDX_PROC multicast group", errno: Errno::EPERM };
        assert!(probe_reason(eperm).contains("needs CAP_NET_ADMIN"));
        assert!(matches!(eperm.into_source_error(), SourceError::MissingPrivilege { backend: NAME, .. }));
        let nosupport = StepError { step: "create netlink connector socket", errno: Errno::EPROTONOSUPPORT };
        assert!(probe_reason(nosupport).contains("without the netlink connector"));
        assert!(matches!(nosupport.into_source_error(), SourceError::Unsupported { .. }));
        let other = StepError { step: "subscribe (PROC_CN_MCAST_LISTEN)", errno: Errno::ENOMEM };
        match other.into_source_error() {
            SourceError::Failed { step, .. } => assert_eq!(step, "subscribe (PROC_CN_MCAST_LISTEN)"),
            e => panic!("unexpected {e:?}"),
        }
    }

    /// Online CPU ids from /sys (`0-1,4`).
    fn online_cpus() -> Vec<u32> {
        let s = fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
        s.trim()
            .split(',')
            .filter_map(|r| match r.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?..=b.parse().ok()?).collect::<Vec<u32>>()),
                None => Some(vec![r.parse().ok()?]),
            })
            .flatten()
            .collect()
    }

    /// Runs `/bin/true` pinned to each online CPU, draining after each, so that every CPU sends records.
    fn one_record_batch_per_cpu(reader: &mut Reader<'_>, socket: &ConnectorSocket, buf: &mut [u8]) {
        for cpu in online_cpus() {
            let status = std::process::Command::new("taskset")
                .args(["-c", &cpu.to_string(), "/bin/true"])
                .status()
                .expect("run taskset");
            assert!(status.success());
            reader.drain(socket, buf, usize::MAX).expect("drain");
        }
    }

    /// Real kernel: a receive buffer far too small for a burst overruns; the records the socket lost must show up
    /// as `lost_upstream`: one per ENOBUFS at once, the rest from the per-CPU sequence gaps once later records
    /// arrive. A gap is measurable only on a CPU from which a record arrived before the loss; a running agent has
    /// such a baseline for every busy CPU moments after it starts, and this test makes one first.
    #[test]
    fn an_overrun_socket_counts_what_it_lost_from_sequence_gaps() {
        use std::sync::atomic::Ordering::Relaxed;
        let Ok(mut socket) = ConnectorSocket::open() else {
            eprintln!("skipping: cannot open a proc connector socket here");
            return;
        };
        socket.enlarge_receive_buffer(1 << 20).expect("receive buffer");
        socket.subscribe(0).expect("subscribe");
        let pipeline = Pipeline::new(1 << 14);
        let sender = pipeline.sender(NAME);
        let stats = pipeline.stats();
        let mut buf = vec![0u8; RECV_BUF_BYTES];
        let mut reader = Reader::new(&sender);
        let cpus = online_cpus();
        for _ in 0..5 {
            one_record_batch_per_cpu(&mut reader, &socket, &mut buf);
            if cpus.iter().all(|c| reader.seqs.last.contains_key(c)) {
                break;
            }
        }
        assert!(cpus.iter().all(|c| reader.seqs.last.contains_key(c)), "a baseline for every CPU");
        let lost_before = sender.counters().lost_upstream.load(Relaxed);
        let overruns_before = reader.overruns;

        // The kernel rounds this up to its minimum: a few KiB, a handful of records.
        nix::sys::socket::setsockopt(&socket.fd, sockopt::RcvBuf, &0).expect("shrink the receive buffer");
        const RUNS: usize = 300;
        let mut children = std::collections::HashSet::new();
        for _ in 0..RUNS {
            let mut c = std::process::Command::new("/bin/true").spawn().expect("spawn /bin/true");
            children.insert(c.id());
            c.wait().expect("wait /bin/true");
        }
        socket.enlarge_receive_buffer(1 << 20).expect("receive buffer");
        reader.drain(&socket, &mut buf, usize::MAX).expect("drain after the burst");
        let overruns = reader.overruns - overruns_before;
        let lost_at_once = sender.counters().lost_upstream.load(Relaxed) - lost_before;
        // Records from every CPU again reveal each CPU's gap.
        one_record_batch_per_cpu(&mut reader, &socket, &mut buf);
        socket.unsubscribe().expect("unsubscribe");
        let lost = sender.counters().lost_upstream.load(Relaxed) - lost_before;
        drop(reader);
        drop(sender);
        let memory = ringwatch_core::sink::MemorySink::default();
        let seen = memory.events();
        let mut sinks: Vec<Box<dyn ringwatch_core::sink::Sink>> = vec![Box::new(memory)];
        pipeline.run("h", &mut ringwatch_core::proc_table::ProcessTable::empty(), &mut [], &mut sinks);
        let records_seen = seen
            .lock()
            .expect("sink lock")
            .iter()
            .filter(|e| e.domain == Domain::Process && children.contains(&e.process.pid))
            .count() as u64;
        let expected = 3 * RUNS as u64; // fork, exec, exit each
        eprintln!(
            "overrun: {overruns} ENOBUFS ({lost_at_once} lost counted at once), {records_seen} of {expected} records \
             of the burst seen, {lost} counted lost in all, queue full {}",
            stats.losses().get(NAME).map(|l| l.0).unwrap_or(0)
        );
        assert!(overruns > 0, "a minimal receive buffer overruns under {RUNS} processes");
        assert!(lost_at_once >= overruns, "each overrun is counted when it is reported");
        assert!(records_seen + lost >= expected, "every record of the burst is either seen or counted as lost");
    }

    #[test]
    fn reader_fills_exec_ppid_from_the_fork_and_decodes_exit() {
        let pipeline = Pipeline::new(64);
        let sender = pipeline.sender(NAME);
        let mut reader = Reader::new(&sender);
        let child = 0x7fff_fff2;
        let fork = reader.fork_event(1, 4242, child, child).expect("a process fork");
        assert_eq!((fork.process.pid, fork.process.ppid, fork.process.partial), (child, 4242, true));
        let exec = reader.exec_event(2, child, child).expect("exec");
        assert_eq!((exec.process.pid, exec.process.ppid, exec.process.partial), (child, 4242, true));
        let exit = reader.exit_event(3, child, child, libc::SIGTERM as u32, 0).expect("exit");
        assert_eq!(exit.process.ppid, 4242, "parent remembered from the fork");
        assert_eq!((exit.process.exit_code, exit.process.exit_signal), (None, Some(15)));
        assert!(reader.exec_event(4, 1, std::process::id()).is_none(), "the agent's own exec is skipped");
        assert!(exit.trusted);
        assert_eq!(exit.backend, BACKEND);
    }
}
