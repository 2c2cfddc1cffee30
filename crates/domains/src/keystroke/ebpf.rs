//! Keystroke domain, kernel mode: terminal input of every session on the host (ssh, console, `script`, tmux),
//! from eBPF programs on the `read`/`readv` syscall tracepoints, with echo-off input redacted in the kernel.
//!
//! The BPF side is `src/bpf/keystroke/tty.bpf.c` (wire format in `tty.h`): at `sys_enter_read(v)` it checks that the
//! descriptor is a terminal (pts, tty, /dev/tty, console; never the pty master, whose reads are program output),
//! filters by the policy's uids and gids, saves the buffer per thread, and at `sys_exit_read(v)` sends the bytes the
//! read returned, or, when the terminal was in canonical mode with ECHO off (a password prompt) and the policy
//! redacts, only their count. The secret never reaches user space.
//!
//! This module decodes the records, applies the policy's terminal globs, assembles each `(session, terminal)`'s
//! input into lines with [`crate::keystroke::assemble`] (Enter ends a line, partial input is flushed after the
//! policy's idle timeout), and sends one `keystroke`/`input` event per line, attributed to the process that read
//! it (pid, guid, user, session, tty) and, for ssh sessions, the client address from the session's environment.
//!
//! # What it cannot see
//!
//! - Input read without `read`/`readv` (io_uring); keys that never reach a terminal (graphical programs: the X11
//!   backend sees those).
//! - What a program does with the input: a line is what the terminal delivered, before the shell's own editing
//!   (history recall shows as `<UP>`, completion as `<TAB>`).
//! - Redacted input is known only by its length. A program that turns ECHO off but stays in raw mode (a TUI
//!   password field) is not redacted: the kernel cannot tell it from readline.
//! - `remote` is read from `/proc/PID/environ` of the reader or its session leader (`SSH_CONNECTION`,
//!   `SSH_CLIENT`); a session that unset them, or a process gone before its first line, has none.
//! - Records are lost only when the ring buffer is full; that is counted (per-CPU `drops`) and reported as
//!   `lost_upstream`. The agent's own reads are not reported.

use std::collections::HashMap;
use std::mem::{MaybeUninit, offset_of, size_of};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject};
use ringwatch_core::compiled::KeystrokePlan;
use ringwatch_core::event::Timestamp;
use ringwatch_core::guid::{BootInfo, process_guid, start_time_from_ticks, ticks_from_boot_ns};
use ringwatch_core::{
    Activity, Backend, Domain, Event, Mode, Probe, Process, Source, SourceContext, SourceError, SourceKind,
};

use crate::kernel_ids::{cstr, tty};
use crate::keystroke::assemble::{Line, Sessions};
use crate::libbpf_support::{
    RingMaps, attach_all, bpf_skeleton, clear_libbpf_warnings, leaked_object_slot, libbpf_error, load_error,
    missing_rodata, prepare_tracepoint_load, probe_by_loading, realtime_offset_ns, stream_ring, tracepoints_ready,
    wall_time,
};

bpf_skeleton!("tty.skel.rs");

use skel::{TtySkel, TtySkelBuilder, types};

/// Backend name in logs, errors and loss counters.
pub const NAME: &str = "keystroke/ebpf";

/// A session with no pending input is forgotten after this long without input (its ssh address is read again).
const FORGET_SESSION_AFTER: Duration = Duration::from_secs(600);

// Mirrors of tty.h constants (#defines do not reach BTF, so the skeleton cannot generate them).
const KIND_TTY_READ: u16 = 48;
const TTY_F_REDACTED: u8 = 0x01;
const TTY_F_LINE_END: u8 = 0x08;
/// `RW_TTY_DATA_MAX`: input bytes copied per read.
const TTY_DATA_MAX: usize = 4096;
/// `RW_TTY_FILTER_MAX`: entries of the uid / gid filter maps.
const FILTER_MAX: usize = 1024;

// SAFETY: rw_hdr is a #[repr(C)] struct of integers generated from BTF; every bit pattern is a valid value.
unsafe impl plain::Plain for types::rw_hdr {}
// SAFETY: tty_read_event is #[repr(C)] of integers, an integer array and rw_hdr/rw_proc_id; every bit pattern is
// valid.
unsafe impl plain::Plain for types::tty_read_event {}

// The same pins as the _Static_asserts in tty.h/common.h: a layout change fails to compile on both sides.
const _: () = assert!(size_of::<types::rw_hdr>() == 16 && offset_of!(types::rw_hdr, kind) == 12);
const _: () = assert!(size_of::<types::tty_read_event>() == 96 && offset_of!(types::tty_read_event, uid) == 56);
const _: () = assert!(offset_of!(types::tty_read_event, tty_major) == 72);
const _: () = assert!(offset_of!(types::tty_read_event, read_len) == 80);
const _: () = assert!(offset_of!(types::tty_read_event, data_len) == 88);

/// One line of what [`capture_notice`] says, for logs: what is captured and whether echo-off input is redacted.
pub fn capture_notice(plan: &KeystrokePlan) -> String {
    let list = |what: &str, v: &[String]| if v.is_empty() { format!("all {what}") } else { v.join(",") };
    let uids: Vec<String> = plan.uids.iter().map(u32::to_string).collect();
    let gids: Vec<String> = plan.gids.iter().map(u32::to_string).collect();
    format!(
        "KEYSTROKE CAPTURE IS ON: terminal input is recorded (uids: {}; gids: {}; terminals: {}); echo-off input \
         (passwords) is {}",
        list("users", &uids),
        list("groups", &gids),
        list("terminals", &plan.ttys),
        if plan.redact_echo_off { "redacted in the kernel" } else { "NOT redacted (policy redact_echo_off: false)" }
    )
}

/// The kernel keystroke backend: loaded and attached by [`KeystrokeEbpf::start`], streaming from [`Source::run`].
pub struct KeystrokeEbpf {
    /// One link per program; dropping them detaches. Declared before `skel` so they go first.
    links: Vec<Link>,
    /// The loaded object with its maps and programs.
    skel: TtySkel<'static>,
    /// Terminal globs from the policy (`None`: every terminal).
    ttys: Option<GlobSet>,
    /// Partial input is flushed after this long without a key.
    idle_flush: Duration,
    /// The start notice.
    notice: String,
    /// CLOCK_REALTIME - CLOCK_BOOTTIME at start.
    realtime_offset_ns: i128,
}

impl std::fmt::Debug for KeystrokeEbpf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystrokeEbpf").field("links", &self.links.len()).field("idle", &self.idle_flush).finish()
    }
}

impl KeystrokeEbpf {
    /// Whether this backend can run here: privilege, kernel BTF, the read/readv syscall tracepoints, and an actual
    /// open + load of the BPF object. Nothing is attached.
    pub fn probe() -> Probe {
        let unavailable = |why: String| Probe::unavailable(Domain::Keystroke, Mode::Kernel, SourceKind::Ebpf, why);
        let tracepoints = ["sys_enter_read", "sys_exit_read", "sys_enter_readv", "sys_exit_readv"];
        let tracefs_note = match tracepoints_ready("syscalls", &tracepoints) {
            Ok(note) => note,
            Err(why) => return unavailable(why),
        };
        probe_by_loading(
            Domain::Keystroke,
            format!(
                "eBPF tracepoints sys_enter/exit_read(v) on terminals, echo-off input redacted in the kernel; off \
                 unless the policy enables keystrokes{tracefs_note}"
            ),
            |storage| open_and_load(storage, &KeystrokePlan::default(), None).map(drop),
        )
    }

    /// Opens the object, writes the plan's filters into rodata and maps, loads and attaches. Refuses when the plan
    /// does not enable capture: keystrokes are recorded only on the policy's say-so.
    pub fn start(plan: &KeystrokePlan) -> Result<Self, SourceError> {
        Self::start_with_ring(plan, None)
    }

    /// [`KeystrokeEbpf::start`] with the `events` ring buffer resized to `ring_bytes` (tests).
    fn start_with_ring(plan: &KeystrokePlan, ring_bytes: Option<u32>) -> Result<Self, SourceError> {
        if !plan.enabled {
            return Err(SourceError::Failed {
                backend: NAME,
                step: "check policy".into(),
                message: "keystroke capture is off (the policy's keystrokes.enabled is false)".into(),
            });
        }
        let ttys = compile_tty_globs(&plan.ttys)?;
        for (what, list) in [("uids", &plan.uids), ("gids", &plan.gids)] {
            if list.len() > FILTER_MAX {
                return Err(SourceError::Failed {
                    backend: NAME,
                    step: format!("fill capture_{what}"),
                    message: format!("{} {what}, the kernel filter holds {FILTER_MAX}", list.len()),
                });
            }
        }
        prepare_tracepoint_load(NAME)?;
        // Read the boot id and boot time now: the ring-buffer callback must not do file I/O.
        BootInfo::get();
        let skel = open_and_load(leaked_object_slot(), plan, ring_bytes)?;
        for (uid, map, name) in plan
            .uids
            .iter()
            .map(|u| (u, &skel.maps.capture_uids, "fill capture_uids"))
            .chain(plan.gids.iter().map(|g| (g, &skel.maps.capture_gids, "fill capture_gids")))
        {
            map.update(&uid.to_ne_bytes(), &[1u8], MapFlags::ANY).map_err(|e| libbpf_error(NAME, name, &e))?;
        }
        let links = attach_all(
            NAME,
            [
                &skel.progs.handle_read_enter,
                &skel.progs.handle_read_exit,
                &skel.progs.handle_readv_enter,
                &skel.progs.handle_readv_exit,
            ],
        )?;
        let notice = capture_notice(plan);
        tracing::warn!(backend = NAME, "{notice}");
        Ok(KeystrokeEbpf {
            links,
            skel,
            ttys,
            idle_flush: plan.idle_flush,
            notice,
            realtime_offset_ns: realtime_offset_ns(NAME)?,
        })
    }
}

/// The policy's terminal globs (`pts/*`, `tty1`) as one matcher; `None` when the list is empty (every terminal).
fn compile_tty_globs(globs: &[String]) -> Result<Option<GlobSet>, SourceError> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut set = GlobSetBuilder::new();
    for g in globs {
        let glob = Glob::new(g.trim_start_matches("/dev/")).map_err(|e| SourceError::Failed {
            backend: NAME,
            step: "compile terminal globs".into(),
            message: format!("{g}: {e}"),
        })?;
        set.add(glob);
    }
    set.build().map(Some).map_err(|e| SourceError::Failed {
        backend: NAME,
        step: "compile terminal globs".into(),
        message: e.to_string(),
    })
}

/// Opens the skeleton, writes the agent's tgid and the plan's switches into rodata and loads it (no attach).
fn open_and_load<'o>(
    storage: &'o mut MaybeUninit<OpenObject>,
    plan: &KeystrokePlan,
    ring_bytes: Option<u32>,
) -> Result<TtySkel<'o>, SourceError> {
    clear_libbpf_warnings();
    let mut open = TtySkelBuilder::default().open(storage).map_err(|e| libbpf_error(NAME, "open", &e))?;
    if let Some(bytes) = ring_bytes {
        open.maps.events.set_max_entries(bytes).map_err(|e| libbpf_error(NAME, "size events", &e))?;
    }
    let Some(rodata) = open.maps.rodata_data.as_deref_mut() else {
        return Err(missing_rodata(NAME, "agent_tgid"));
    };
    rodata.agent_tgid = std::process::id();
    rodata.filter_uids = u8::from(!plan.uids.is_empty());
    rodata.filter_gids = u8::from(!plan.gids.is_empty());
    rodata.redact_echo_off = u8::from(plan.redact_echo_off);
    open.load().map_err(|e| load_error(NAME, &e))
}

impl Source for KeystrokeEbpf {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let span = tracing::info_span!("source", domain = "keystroke", mode = "kernel", source = "ebpf");
        let _guard = span.enter();
        let KeystrokeEbpf { links, skel, ttys, idle_flush, notice, realtime_offset_ns } = *self;
        ctx.events.send(Event::sensor(Activity::Start, NAME, notice, None));
        let decoder = Decoder { realtime_offset_ns };
        let mut assembler = Assembler::new(ttys);
        let mut links = Some(links);
        stream_ring(
            NAME,
            RingMaps { events: &skel.maps.events, drops: &skel.maps.drops },
            &ctx,
            |data| decoder.decode(data),
            || drop(links.take()),
            |batch, stopping| {
                // Assembly and the ssh-address lookup (a /proc read, once per session) run here, outside the callback.
                let mut emit = |ev| {
                    ctx.events.send(ev);
                };
                for read in batch {
                    assembler.push(read, &mut emit);
                }
                if stopping {
                    assembler.flush_all(&mut emit);
                } else {
                    assembler.flush_idle(Timestamp::now(), idle_flush, &mut emit);
                }
            },
        )?;
        drop(skel);
        tracing::debug!(backend = NAME, "detached");
        Ok(())
    }
}

// --- decoding -----------------------------------------------------------------------------------------------------

/// One terminal read as the kernel reported it.
#[derive(Debug, Clone, PartialEq)]
struct TtyRead {
    /// Wall-clock time of the read's return.
    at: Timestamp,
    /// The reader (pid, tid, ppid, guid, uid, gid, session, tty, comm).
    process: Process,
    /// Terminal device read from.
    tty_major: u32,
    tty_minor: u32,
    /// Bytes the read returned.
    read_len: u32,
    /// True when the bytes stayed in the kernel (echo off in canonical mode).
    redacted: bool,
    /// For a redacted read: its last byte was the line delimiter.
    line_end: bool,
    /// The bytes (empty when redacted; at most [`TTY_DATA_MAX`]).
    data: Vec<u8>,
}

/// Turns ring-buffer samples into [`TtyRead`]s. Pure: no I/O, so it can run inside the ring-buffer callback.
#[derive(Debug)]
struct Decoder {
    realtime_offset_ns: i128,
}

impl Decoder {
    fn decode(&self, data: &[u8]) -> Result<TtyRead, &'static str> {
        let fixed = data.get(..size_of::<types::tty_read_event>()).ok_or("shorter than tty_read_event")?;
        let ev: &types::tty_read_event = plain::from_bytes(fixed).map_err(|_| "misaligned tty_read_event")?;
        if ev.hdr.kind != KIND_TTY_READ {
            return Err("unknown kind");
        }
        if ev.hdr.size as usize != data.len() {
            return Err("rw_hdr.size differs from the sample length");
        }
        let tail = &data[size_of::<types::tty_read_event>()..];
        let redacted = ev.hdr.flags & TTY_F_REDACTED != 0;
        if tail.len() != usize::from(ev.data_len) || tail.len() > TTY_DATA_MAX || (redacted && !tail.is_empty()) {
            return Err("tty_read_event data_len does not match the sample");
        }
        let id = &ev.id;
        let mut p = Process {
            pid: id.pid,
            tid: id.tid,
            ppid: id.ppid,
            uid: ev.uid,
            euid: ev.euid,
            gid: ev.gid,
            session_id: ev.session_id,
            tty: tty(ev.tty_major, ev.tty_minor),
            comm: cstr(&id.comm),
            start_ticks: ticks_from_boot_ns(id.start_ns),
            ..Default::default()
        };
        p.guid = process_guid(p.pid, p.start_ticks);
        p.start_time = start_time_from_ticks(p.start_ticks);
        Ok(TtyRead {
            at: wall_time(ev.hdr.ktime, self.realtime_offset_ns),
            process: p,
            tty_major: ev.tty_major,
            tty_minor: ev.tty_minor,
            read_len: ev.read_len,
            redacted,
            line_end: ev.hdr.flags & TTY_F_LINE_END != 0,
            data: tail.to_vec(),
        })
    }
}

fn backend() -> Backend {
    Backend { mode: Mode::Kernel, source: SourceKind::Ebpf }
}

// --- assembly -----------------------------------------------------------------------------------------------------

/// `(session id, tty major, tty minor)`: whose input one line is.
type SessionKey = (u32, u32, u32);

/// What a line's event says about who typed it: the latest reader on that terminal and the session's ssh client.
#[derive(Debug, Clone)]
struct LineOwner {
    process: Process,
}

/// Terminal reads -> line events: terminal filter, per-session assembly, ssh address lookup (cached per session).
struct Assembler {
    ttys: Option<GlobSet>,
    sessions: Sessions<SessionKey, LineOwner>,
    /// Session id -> ssh client `ip:port` (None: looked up, not an ssh session).
    remotes: HashMap<u32, Option<String>>,
    lines: Vec<Line>,
}

impl Assembler {
    fn new(ttys: Option<GlobSet>) -> Self {
        Assembler { ttys, sessions: Sessions::new(), remotes: HashMap::new(), lines: Vec::new() }
    }

    fn push(&mut self, read: TtyRead, emit: &mut dyn FnMut(Event)) {
        if let (Some(globs), Some(tty)) = (&self.ttys, &read.process.tty)
            && !globs.is_match(tty)
        {
            return;
        }
        let key = (read.process.session_id, read.tty_major, read.tty_minor);
        let owner = LineOwner { process: read.process };
        let (asm, owner) = self.sessions.entry(key, || owner);
        let owner = owner.clone();
        let mut lines = std::mem::take(&mut self.lines);
        if read.redacted {
            asm.push_redacted(read.read_len, read.line_end, read.at, &mut lines);
        } else {
            asm.push_bytes(&read.data, read.at, &mut lines);
        }
        for line in lines.drain(..) {
            emit(self.event(&owner, &line));
        }
        self.lines = lines;
    }

    fn flush_idle(&mut self, now: Timestamp, idle: Duration, emit: &mut dyn FnMut(Event)) {
        let flushed: Vec<(Line, LineOwner)> = self
            .sessions
            .flush_idle(now, idle, FORGET_SESSION_AFTER)
            .into_iter()
            .map(|(_, line, owner)| (line, owner.clone()))
            .collect();
        for (line, owner) in flushed {
            emit(self.event(&owner, &line));
        }
        if self.sessions.is_empty() {
            self.remotes.clear();
        }
    }

    fn flush_all(&mut self, emit: &mut dyn FnMut(Event)) {
        let flushed: Vec<(Line, LineOwner)> =
            self.sessions.flush_all().into_iter().map(|(_, line, owner)| (line, owner.clone())).collect();
        for (line, owner) in flushed {
            emit(self.event(&owner, &line));
        }
    }

    fn event(&mut self, owner: &LineOwner, line: &Line) -> Event {
        let p = &owner.process;
        let remote = self
            .remotes
            .entry(p.session_id)
            .or_insert_with(|| ssh_client_of(p.pid).or_else(|| ssh_client_of(p.session_id)))
            .clone();
        let mut ev = Event::new(Domain::Keystroke, Activity::Input, backend());
        ev.time = line.started;
        ev.process = p.clone();
        let mut info = line.to_keystroke_info();
        info.tty = p.tty.clone();
        info.remote = remote;
        ev.keystroke = Some(info);
        ev
    }
}

/// The ssh client (`ip:port`) from `SSH_CONNECTION` or `SSH_CLIENT` in `/proc/PID/environ`.
fn ssh_client_of(pid: u32) -> Option<String> {
    if pid == 0 {
        return None;
    }
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    ssh_client_from_environ(&environ)
}

/// `SSH_CONNECTION=client_ip client_port server_ip server_port` (or `SSH_CLIENT=client_ip client_port server_port`)
/// -> `client_ip:client_port` (IPv6 in brackets).
fn ssh_client_from_environ(environ: &[u8]) -> Option<String> {
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    ["SSH_CONNECTION=", "SSH_CLIENT="].iter().find_map(|name| {
        let value = vars.iter().find_map(|v| v.strip_prefix(name.as_bytes()))?;
        let value = std::str::from_utf8(value).ok()?;
        let mut parts = value.split_whitespace();
        let ip: std::net::IpAddr = parts.next()?.parse().ok()?;
        let port: u16 = parts.next()?.parse().ok()?;
        Some(std::net::SocketAddr::new(ip, port).to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libbpf_support::has_bpf_privilege;

    /// A sample buffer with the 8-byte alignment the ring buffer guarantees.
    #[repr(C, align(8))]
    struct Sample([u8; 256]);

    fn sample(buf: &mut Sample, flags: u8, read_len: u32, data: &[u8]) -> usize {
        let n = size_of::<types::tty_read_event>();
        let len = n + data.len();
        let mut put = |off: usize, bytes: &[u8]| buf.0[off..off + bytes.len()].copy_from_slice(bytes);
        put(0, &5_000u64.to_ne_bytes());
        put(8, &(len as u32).to_ne_bytes());
        put(12, &KIND_TTY_READ.to_ne_bytes());
        put(14, &[flags]);
        put(offset_of!(types::tty_read_event, id.start_ns), &1_234_560_000_000u64.to_ne_bytes());
        put(offset_of!(types::tty_read_event, id.pid), &42u32.to_ne_bytes());
        put(offset_of!(types::tty_read_event, id.tid), &42u32.to_ne_bytes());
        put(offset_of!(types::tty_read_event, id.comm), b"bash\0");
        put(offset_of!(types::tty_read_event, uid), &1000u32.to_ne_bytes());
        put(offset_of!(types::tty_read_event, session_id), &40u32.to_ne_bytes());
        put(offset_of!(types::tty_read_event, tty_major), &136u32.to_ne_bytes());
        put(offset_of!(types::tty_read_event, tty_minor), &3u32.to_ne_bytes());
        put(offset_of!(types::tty_read_event, read_len), &read_len.to_ne_bytes());
        put(offset_of!(types::tty_read_event, data_len), &(data.len() as u16).to_ne_bytes());
        put(n, data);
        len
    }

    #[test]
    fn reads_decode_and_assemble_into_a_line_event() {
        let d = Decoder { realtime_offset_ns: 1_000 };
        let mut asm = Assembler::new(None);
        let mut events = Vec::new();
        for b in b"id\r" {
            let mut buf = Sample([0; 256]);
            let len = sample(&mut buf, 0, 1, &[*b]);
            let read = d.decode(&buf.0[..len]).expect("valid sample");
            assert_eq!(read.at, Timestamp(6_000));
            asm.push(read, &mut |ev| events.push(ev));
        }
        assert_eq!(events.len(), 1);
        let ev = &events[0];
        assert_eq!((ev.domain, ev.activity, ev.backend), (Domain::Keystroke, Activity::Input, backend()));
        let k = ev.keystroke.as_ref().expect("keystroke info");
        assert_eq!((k.text.as_str(), k.keys, k.redacted, k.tty.as_deref()), ("id", Some(3), false, Some("pts/3")));
        let p = &ev.process;
        assert_eq!((p.pid, p.uid, p.session_id, p.comm.as_str()), (42, 1000, 40, "bash"));
        assert_eq!(p.guid, process_guid(42, 123_456));
    }

    #[test]
    fn redacted_reads_carry_only_their_length() {
        let d = Decoder { realtime_offset_ns: 0 };
        let mut buf = Sample([0; 256]);
        let len = sample(&mut buf, TTY_F_REDACTED | TTY_F_LINE_END, 9, b"");
        let mut asm = Assembler::new(None);
        let mut events = Vec::new();
        asm.push(d.decode(&buf.0[..len]).expect("valid"), &mut |ev| events.push(ev));
        let k = events[0].keystroke.as_ref().expect("keystroke info");
        assert_eq!((k.text.as_str(), k.keys, k.redacted), ("", Some(9), true));
        // A "redacted" record that carries bytes anyway is malformed, not passed on.
        let len = sample(&mut buf, TTY_F_REDACTED, 3, b"abc");
        assert!(d.decode(&buf.0[..len]).is_err());
    }

    #[test]
    fn bad_samples_are_rejected_and_tty_globs_filter() {
        let d = Decoder { realtime_offset_ns: 0 };
        let mut buf = Sample([0; 256]);
        let len = sample(&mut buf, 0, 2, b"ab");
        assert!(d.decode(&buf.0[..len]).is_ok());
        assert!(d.decode(&buf.0[..len - 1]).is_err());
        assert!(d.decode(&buf.0[..10]).is_err());
        buf.0[12] = 1;
        assert!(d.decode(&buf.0[..len]).is_err());

        let globs = compile_tty_globs(&["tty[1-6]".into(), "/dev/pts/9".into()]).expect("valid globs");
        let mut asm = Assembler::new(globs);
        let mut events = Vec::new();
        let len = sample(&mut buf, 0, 3, b"ls\r");
        buf.0[12..14].copy_from_slice(&KIND_TTY_READ.to_ne_bytes());
        asm.push(d.decode(&buf.0[..len]).expect("valid"), &mut |ev| events.push(ev));
        assert!(events.is_empty(), "pts/3 is not in the globs");
        assert!(compile_tty_globs(&["pts/[".into()]).is_err());
    }

    #[test]
    fn ssh_client_comes_from_ssh_connection_or_ssh_client() {
        let env = b"HOME=/root\0SSH_CONNECTION=192.0.2.7 50022 192.0.2.1 22\0SSH_CLIENT=10.0.0.1 1 22\0";
        assert_eq!(ssh_client_from_environ(env).as_deref(), Some("192.0.2.7:50022"));
        assert_eq!(
            ssh_client_from_environ(b"SSH_CLIENT=2001:db8::1 40000 22\0").as_deref(),
            Some("[2001:db8::1]:40000")
        );
        assert_eq!(ssh_client_from_environ(b"PATH=/bin\0"), None);
    }

    #[test]
    fn notice_says_what_is_captured_and_whether_redacted() {
        let plan = KeystrokePlan { enabled: true, uids: vec![1000], ..Default::default() };
        let n = capture_notice(&plan);
        assert!(n.contains("uids: 1000") && n.contains("all groups") && n.contains("redacted in the kernel"), "{n}");
        let n = capture_notice(&KeystrokePlan { redact_echo_off: false, ..plan });
        assert!(n.contains("NOT redacted"), "{n}");
    }

    #[test]
    fn start_refuses_when_capture_is_off() {
        let err = KeystrokeEbpf::start(&KeystrokePlan::default()).expect_err("capture is off by default");
        assert!(err.to_string().contains("keystroke capture is off"), "{err}");
    }

    #[test]
    fn probe_reports_why_when_unprivileged_or_says_what_it_uses() {
        let p = KeystrokeEbpf::probe();
        assert_eq!((p.domain, p.mode, p.source), (Domain::Keystroke, Mode::Kernel, SourceKind::Ebpf));
        if has_bpf_privilege() && crate::probe::has_kernel_btf() {
            assert!(p.available, "privileged with BTF but unavailable: {}", p.detail);
        } else {
            assert!(!p.available && !p.detail.is_empty());
        }
    }
}
