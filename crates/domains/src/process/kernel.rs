//! Process domain, kernel mode: eBPF programs on the scheduler's process tracepoints report every fork (new
//! processes, not threads), exec and exit (whole thread group), and SIGKILL an exec whose image matches an exact-path
//! or directory-prefix kill rule before the new image runs any user code.
//!
//! The BPF side is `src/bpf/process/sched.bpf.c` (wire format in `process.h`): records go into one ring buffer with
//! batched wakeups; this module decodes them with the skeleton's generated types, converts times and ids to the
//! contract (guids computed exactly like the /proc-based backends, so both agree) and sends [`Event`]s.
//!
//! # What it cannot see
//!
//! - Failed execs (ENOENT, EACCES, a bad ELF): `sched_process_exec` fires only once the new image is committed.
//! - "Exec" without execve: a process that maps a new image itself (userland exec, memfd loaders) stays the old
//!   process as far as every exec hook is concerned.
//! - Scripts: exe is the interpreter, the script is in argv. argv is cut at 4 KiB (`cmdline_truncated`).
//! - Paths are rebuilt by walking dentries without `bpf_d_path` (no fentry here): they are relative to the root of
//!   the process's mount namespace (a container shows its in-container path), chroots are not honoured, unlinked
//!   images carry no " (deleted)" suffix. When the walk fails, exe is the filename passed to execve, possibly
//!   relative, and the event is marked `partial`.
//! - Kill rules match the canonical path of the image as seen in the exec'ing process's mount namespace (a rule
//!   for `/tmp/` also matches `/tmp/x` inside a container). Rules are canonicalised at start, so `/bin/true` on a
//!   merged-/usr host also matches `/usr/bin/true`; paths longer than 256 bytes cannot be kill rules (the LPM trie
//!   key limit). A kill comes right after the exec is committed: the image was opened and mapped, but ran nothing.
//! - Events are lost only when the ring buffer is full; that is counted (per-CPU `drops`) and reported as
//!   `lost_upstream`, never silent. The agent's own exec/exit are not reported (forks of its children are).
//! - `cgroup` is resolved from the cgroup v2 id by scanning the cgroup2 mount (cached; rescanned at most once a
//!   second on a miss), so a process in a cgroup that is created and removed within that second gets none.

use std::mem::{MaybeUninit, offset_of, size_of};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject};
use ringwatch_core::compiled::ExecKillList;
use ringwatch_core::event::Timestamp;
use ringwatch_core::guid::{BootInfo, process_guid, start_time_from_ticks, ticks_from_boot_ns};
use ringwatch_core::proc_table::split_nul;
use ringwatch_core::{
    Action, Activity, Backend, Domain, Event, Mode, Probe, Process, Source, SourceContext, SourceError, SourceKind,
};

use crate::kernel_ids::{CgroupPaths, cstr, tty};
use crate::libbpf_support::{
    RingMaps, attach_all, bpf_skeleton, clear_libbpf_warnings, leaked_object_slot, libbpf_error, load_error,
    missing_rodata, prepare_tracepoint_load, probe_by_loading, realtime_offset_ns, stream_ring, tracepoints_ready,
    wall_time,
};

bpf_skeleton!("sched.skel.rs");

use skel::{SchedSkel, SchedSkelBuilder, types};

/// Backend name in logs, errors and loss counters.
const NAME: &str = "process/kernel";

// Mirrors of process.h / common.h constants (#defines do not reach BTF, so the skeleton cannot generate them).
const KIND_EXEC: u16 = 1;
const KIND_FORK: u16 = 2;
const KIND_EXIT: u16 = 3;
const EXEC_F_KILLED: u8 = 0x01;
const EXEC_F_ARGS_TRUNCATED: u8 = 0x02;
const EXEC_F_EXE_FROM_FILENAME: u8 = 0x04;
/// `RW_KILL_PATH_MAX`: kill-map keys hold at most this many path bytes.
const KILL_PATH_MAX: usize = 256;
/// `RW_KILL_RULES_MAX`: entries per kill map.
const KILL_RULES_MAX: usize = 4096;

// SAFETY: rw_hdr is a #[repr(C)] struct of integers generated from BTF; every bit pattern is a valid value.
unsafe impl plain::Plain for types::rw_hdr {}
// SAFETY: exec_event is #[repr(C)] of integers, integer arrays and rw_hdr; every bit pattern is valid.
unsafe impl plain::Plain for types::exec_event {}
// SAFETY: fork_event is #[repr(C)] of integers, integer arrays and rw_hdr; every bit pattern is valid.
unsafe impl plain::Plain for types::fork_event {}
// SAFETY: exit_event is #[repr(C)] of integers, an integer array and rw_hdr; every bit pattern is valid.
unsafe impl plain::Plain for types::exit_event {}

// The same pins as the _Static_asserts in process.h/common.h: a layout change fails to compile on both sides.
const _: () = assert!(size_of::<types::rw_hdr>() == 16 && offset_of!(types::rw_hdr, size) == 8);
const _: () = assert!(offset_of!(types::rw_hdr, kind) == 12 && offset_of!(types::rw_hdr, flags) == 14);
const _: () = assert!(size_of::<types::rw_proc_id>() == 40 && offset_of!(types::rw_proc_id, pid) == 8);
const _: () = assert!(offset_of!(types::rw_proc_id, comm) == 24 && size_of::<types::rw_proc_ctx>() == 40);
const _: () = assert!(offset_of!(types::rw_proc_ctx, uid) == 16 && offset_of!(types::rw_proc_ctx, tty_minor) == 36);
const _: () = assert!(size_of::<types::exec_event>() == 112 && offset_of!(types::exec_event, id) == 16);
const _: () = assert!(offset_of!(types::exec_event, ctx) == 56 && offset_of!(types::exec_event, kill_rule) == 96);
const _: () = assert!(offset_of!(types::exec_event, args_len) == 100);
const _: () = assert!(size_of::<types::fork_event>() == 96 && offset_of!(types::fork_event, ctx) == 56);
const _: () = assert!(size_of::<types::exit_event>() == 64 && offset_of!(types::exit_event, status) == 56);
const _: () = assert!(size_of::<types::exe_path_key>() == KILL_PATH_MAX);
const _: () = assert!(size_of::<types::exe_prefix_key>() == 4 + KILL_PATH_MAX);
const _: () = assert!(offset_of!(types::exe_prefix_key, path) == 4);

/// The kernel process backend: loaded and attached by [`ProcessKernel::start`], streaming from [`Source::run`].
pub struct ProcessKernel {
    /// One link per program; dropping them detaches. Declared before `skel` so a dropped, never-run backend
    /// detaches before the object is closed.
    links: Vec<Link>,
    /// The loaded object with its maps and programs.
    skel: SchedSkel<'static>,
    /// Rule ids, indexed by the rule index the kernel reports for a kill.
    rule_ids: Vec<String>,
    /// CLOCK_REALTIME - CLOCK_BOOTTIME at start, to turn BPF boot-time stamps into wall-clock time.
    realtime_offset_ns: i128,
}

impl std::fmt::Debug for ProcessKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessKernel").field("links", &self.links.len()).field("rules", &self.rule_ids).finish()
    }
}

impl ProcessKernel {
    /// Whether this backend can run here: privilege, kernel BTF, the three sched tracepoints (tracefs), and an
    /// actual open + load of the BPF object (which proves ring buffer, bpf_loop and CO-RE support). Nothing is
    /// attached and the object is unloaded before returning.
    pub fn probe() -> Probe {
        let unavailable = |why: String| Probe::unavailable(Domain::Process, Mode::Kernel, SourceKind::Ebpf, why);
        let tracefs_note = match tracepoints_ready("sched", &["sched_process_exec", "sched_process_exit"]) {
            Ok(note) => note,
            Err(why) => return unavailable(why),
        };
        probe_by_loading(
            Domain::Process,
            format!("eBPF tracepoints sched_process_fork/exec/exit, ring buffer, kill at exec{tracefs_note}"),
            |storage| open_and_load(storage, None).map(drop),
        )
    }

    /// Opens the object, sets the agent's pid in rodata, loads it, fills the kill maps from `kill`, and attaches
    /// the three programs. Events are buffered in the kernel from here until [`Source::run`] reads them.
    ///
    /// Errors name the failing step (and program); missing privilege and missing kernel features are
    /// [`SourceError::MissingPrivilege`] / [`SourceError::Unsupported`].
    pub fn start(kill: &ExecKillList) -> Result<Self, SourceError> {
        Self::start_with_ring(kill, None)
    }

    /// [`ProcessKernel::start`] with the `events` ring buffer resized to `ring_bytes` (a power-of-two multiple of
    /// the page size); the tests use a tiny ring to prove that overflow is counted.
    fn start_with_ring(kill: &ExecKillList, ring_bytes: Option<u32>) -> Result<Self, SourceError> {
        prepare_tracepoint_load(NAME)?;
        // Read the boot id and boot time now: the ring-buffer callback must not do file I/O.
        BootInfo::get();
        let kill_entries = KillEntries::compile(kill)?;
        let skel = open_and_load(leaked_object_slot(), ring_bytes)?;
        kill_entries.fill(&skel)?;
        let links = attach_all(NAME, [&skel.progs.handle_fork, &skel.progs.handle_exec, &skel.progs.handle_exit])?;
        tracing::debug!(
            backend = NAME,
            exact = kill_entries.exact.len(),
            prefixes = kill_entries.prefixes.len(),
            "attached"
        );
        Ok(ProcessKernel {
            skel,
            links,
            rule_ids: kill.rule_ids.clone(),
            realtime_offset_ns: realtime_offset_ns(NAME)?,
        })
    }
}

impl Source for ProcessKernel {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let span = tracing::info_span!("source", domain = "process", mode = "kernel", source = "ebpf");
        let _guard = span.enter();
        let ProcessKernel { links, skel, rule_ids, realtime_offset_ns } = *self;
        let decoder = Decoder { rule_ids, realtime_offset_ns };
        let mut cgroups = CgroupPaths::new();
        let mut links = Some(links);
        stream_ring(
            NAME,
            RingMaps { events: &skel.maps.events, drops: &skel.maps.drops },
            &ctx,
            |data| decoder.decode(data),
            || drop(links.take()),
            |batch, _| {
                // The cgroup id is named here, outside the callback: naming may scan the cgroup tree.
                for (mut ev, cgroup_id) in batch {
                    cgroups.annotate(&mut ev, cgroup_id);
                    ctx.events.send(ev);
                }
            },
        )?;
        drop(skel);
        tracing::debug!(backend = NAME, "detached");
        Ok(())
    }
}

/// Opens the skeleton, writes the agent's tgid into rodata and loads it (no attach).
fn open_and_load(storage: &mut MaybeUninit<OpenObject>, ring_bytes: Option<u32>) -> Result<SchedSkel<'_>, SourceError> {
    clear_libbpf_warnings();
    let mut open = SchedSkelBuilder::default().open(storage).map_err(|e| libbpf_error(NAME, "open", &e))?;
    if let Some(bytes) = ring_bytes {
        open.maps.events.set_max_entries(bytes).map_err(|e| libbpf_error(NAME, "size events", &e))?;
    }
    let Some(rodata) = open.maps.rodata_data.as_deref_mut() else {
        return Err(missing_rodata(NAME, "agent_tgid"));
    };
    rodata.agent_tgid = std::process::id();
    open.load().map_err(|e| load_error(NAME, &e))
}

// --- kill maps ----------------------------------------------------------------------------------------------------

/// Kill-map entries prepared from an [`ExecKillList`]: validated, canonicalised, encoded as map keys.
#[derive(Debug, Default)]
struct KillEntries {
    /// `kill_exe_exact` keys (zero-padded path) -> rule index.
    exact: Vec<(Vec<u8>, u32)>,
    /// `kill_exe_prefix` keys (prefixlen + path) -> rule index.
    prefixes: Vec<(Vec<u8>, u32)>,
}

impl KillEntries {
    fn compile(kill: &ExecKillList) -> Result<Self, SourceError> {
        let bad = |step: &str, message: String| SourceError::Failed { backend: NAME, step: step.into(), message };
        let mut out = KillEntries::default();
        for (path, idx) in &kill.exact {
            check_rule(kill, path, *idx).map_err(|m| bad("fill kill_exe_exact", m))?;
            for variant in with_canonical(path, false) {
                let key = exact_key(&variant).map_err(|m| bad("fill kill_exe_exact", m))?;
                out.exact.push((key, *idx));
            }
        }
        for (dir, idx) in &kill.dir_prefixes {
            check_rule(kill, dir, *idx).map_err(|m| bad("fill kill_exe_prefix", m))?;
            for variant in with_canonical(dir, true) {
                let key = prefix_key(&variant).map_err(|m| bad("fill kill_exe_prefix", m))?;
                out.prefixes.push((key, *idx));
            }
        }
        for (entries, map) in [(&out.exact, "kill_exe_exact"), (&out.prefixes, "kill_exe_prefix")] {
            if entries.len() > KILL_RULES_MAX {
                return Err(bad(
                    &format!("fill {map}"),
                    format!("{} entries, the map holds {KILL_RULES_MAX}", entries.len()),
                ));
            }
        }
        Ok(out)
    }

    fn fill(&self, skel: &SchedSkel<'_>) -> Result<(), SourceError> {
        for (key, idx) in &self.exact {
            skel.maps
                .kill_exe_exact
                .update(key, &idx.to_ne_bytes(), MapFlags::ANY)
                .map_err(|e| libbpf_error(NAME, "fill kill_exe_exact", &e))?;
        }
        for (key, idx) in &self.prefixes {
            skel.maps
                .kill_exe_prefix
                .update(key, &idx.to_ne_bytes(), MapFlags::ANY)
                .map_err(|e| libbpf_error(NAME, "fill kill_exe_prefix", &e))?;
        }
        Ok(())
    }
}

fn check_rule(kill: &ExecKillList, path: &str, idx: u32) -> Result<(), String> {
    let Some(id) = kill.rule_ids.get(idx as usize) else {
        return Err(format!("{path}: rule index {idx} but only {} rule ids", kill.rule_ids.len()));
    };
    if !path.starts_with('/') {
        return Err(format!("rule {id}: {path} is not an absolute path"));
    }
    Ok(())
}

/// `path` as given, plus its canonical form when that exists and differs (the kernel reports canonical paths).
/// Directories get a trailing '/'.
fn with_canonical(path: &str, dir: bool) -> Vec<String> {
    let norm = |p: &str| if dir && !p.ends_with('/') { format!("{p}/") } else { p.to_owned() };
    let mut out = vec![norm(path)];
    if let Ok(canon) = std::fs::canonicalize(path) {
        let canon = norm(&canon.to_string_lossy());
        if !out.contains(&canon) {
            out.push(canon);
        }
    }
    out
}

fn exact_key(path: &str) -> Result<Vec<u8>, String> {
    let bytes = path.as_bytes();
    if bytes.len() > KILL_PATH_MAX {
        return Err(format!("{path}: longer than {KILL_PATH_MAX} bytes, the kernel kill map's key size"));
    }
    let mut key = vec![0u8; size_of::<types::exe_path_key>()];
    key[offset_of!(types::exe_path_key, path)..][..bytes.len()].copy_from_slice(bytes);
    Ok(key)
}

fn prefix_key(dir: &str) -> Result<Vec<u8>, String> {
    let bytes = dir.as_bytes();
    if bytes.len() > KILL_PATH_MAX {
        return Err(format!("{dir}: longer than {KILL_PATH_MAX} bytes, the LPM trie key limit"));
    }
    let mut key = vec![0u8; size_of::<types::exe_prefix_key>()];
    let bits = u32::try_from(bytes.len() * 8).map_err(|_| format!("{dir}: prefix too long"))?;
    key[offset_of!(types::exe_prefix_key, prefixlen)..][..4].copy_from_slice(&bits.to_ne_bytes());
    key[offset_of!(types::exe_prefix_key, path)..][..bytes.len()].copy_from_slice(bytes);
    Ok(key)
}

// --- decoding -----------------------------------------------------------------------------------------------------

/// Turns ring-buffer samples into events. Pure: no I/O, so it can run inside the ring-buffer callback.
#[derive(Debug)]
struct Decoder {
    rule_ids: Vec<String>,
    realtime_offset_ns: i128,
}

fn backend() -> Backend {
    Backend { mode: Mode::Kernel, source: SourceKind::Ebpf }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Decoder {
    /// One sample -> the event and its cgroup v2 id (0 when the record has none).
    fn decode(&self, data: &[u8]) -> Result<(Event, u64), &'static str> {
        let hdr_bytes = data.get(..size_of::<types::rw_hdr>()).ok_or("shorter than rw_hdr")?;
        let hdr: &types::rw_hdr = plain::from_bytes(hdr_bytes).map_err(|_| "misaligned rw_hdr")?;
        if hdr.size as usize != data.len() {
            return Err("rw_hdr.size differs from the sample length");
        }
        match hdr.kind {
            KIND_EXEC => self.exec(data),
            KIND_FORK if data.len() == size_of::<types::fork_event>() => self.fork(data),
            KIND_EXIT if data.len() == size_of::<types::exit_event>() => self.exit(data),
            KIND_FORK | KIND_EXIT => Err("fixed-size record with the wrong size"),
            _ => Err("unknown kind"),
        }
    }

    /// A process event stamped with the record's time and carrying its identity (guid from pid + start time).
    fn process_event(&self, activity: Activity, hdr: &types::rw_hdr, id: &types::rw_proc_id) -> Event {
        let mut ev = Event::new(Domain::Process, activity, backend());
        ev.time = self.time(hdr.ktime);
        let p = &mut ev.process;
        p.pid = id.pid;
        p.tid = id.tid;
        p.ppid = id.ppid;
        p.start_ticks = ticks_from_boot_ns(id.start_ns);
        p.guid = process_guid(id.pid, p.start_ticks);
        p.start_time = start_time_from_ticks(p.start_ticks);
        p.comm = cstr(&id.comm);
        ev
    }

    fn time(&self, ktime: u64) -> Timestamp {
        wall_time(ktime, self.realtime_offset_ns)
    }

    fn exec(&self, data: &[u8]) -> Result<(Event, u64), &'static str> {
        let fixed = data.get(..size_of::<types::exec_event>()).ok_or("exec_event too short")?;
        let e: &types::exec_event = plain::from_bytes(fixed).map_err(|_| "misaligned exec_event")?;
        let tail = &data[size_of::<types::exec_event>()..];
        let (args_len, exe_len, cwd_len) = (e.args_len as usize, e.exe_len as usize, e.cwd_len as usize);
        if args_len + exe_len + cwd_len != tail.len() {
            return Err("exec_event lengths do not add up to the sample");
        }
        let (args, rest) = tail.split_at(args_len);
        let (exe, cwd) = rest.split_at(exe_len);
        let flags = e.hdr.flags;

        let mut ev = self.process_event(Activity::Exec, &e.hdr, &e.id);
        let p = &mut ev.process;
        apply_context(p, &e.id, &e.ctx);
        p.exe = lossy(exe);
        p.cmdline = split_nul(args);
        p.cmdline_truncated = flags & EXEC_F_ARGS_TRUNCATED != 0;
        p.cwd = (!cwd.is_empty()).then(|| lossy(cwd));
        p.partial = flags & EXEC_F_EXE_FROM_FILENAME != 0;
        if flags & EXEC_F_KILLED != 0 {
            ev.action = Action::Killed;
            ev.rule = self.rule_ids.get(e.kill_rule as usize).cloned();
        }
        Ok((ev, e.ctx.cgroup_id))
    }

    fn fork(&self, data: &[u8]) -> Result<(Event, u64), &'static str> {
        let e: &types::fork_event = plain::from_bytes(data).map_err(|_| "fork_event too short or misaligned")?;
        let mut ev = self.process_event(Activity::Fork, &e.hdr, &e.id);
        apply_context(&mut ev.process, &e.id, &e.ctx);
        Ok((ev, e.ctx.cgroup_id))
    }

    fn exit(&self, data: &[u8]) -> Result<(Event, u64), &'static str> {
        let e: &types::exit_event = plain::from_bytes(data).map_err(|_| "exit_event too short or misaligned")?;
        let mut ev = self.process_event(Activity::Exit, &e.hdr, &e.id);
        let p = &mut ev.process;
        // wait(2) status: low 7 bits = terminating signal (0 for a normal exit), bits 8..15 = exit code.
        let signal = (e.status & 0x7f) as i32;
        if signal == 0 {
            p.exit_code = Some(((e.status >> 8) & 0xff) as i32);
        } else {
            p.exit_signal = Some(signal);
        }
        Ok((ev, 0))
    }
}

/// What exec and fork records add to the identity: the parent's guid, credentials, session and tty.
fn apply_context(p: &mut Process, id: &types::rw_proc_id, c: &types::rw_proc_ctx) {
    if id.ppid != 0 {
        p.parent_guid = Some(process_guid(id.ppid, ticks_from_boot_ns(c.parent_start_ns)));
    }
    p.uid = c.uid;
    p.euid = c.euid;
    p.gid = c.gid;
    p.session_id = c.session_id;
    p.tty = tty(c.tty_major, c.tty_minor);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libbpf_support::{drain_stopped, has_bpf_privilege};

    /// A sample buffer with the 8-byte alignment the ring buffer guarantees.
    #[repr(C, align(8))]
    struct Sample([u8; 512]);

    fn decoder() -> Decoder {
        Decoder { rule_ids: vec!["no-tmp".into(), "deny-x".into()], realtime_offset_ns: 1_000 }
    }

    fn exec_sample(buf: &mut Sample, args: &[u8], exe: &[u8], cwd: &[u8], flags: u8) -> usize {
        let len = size_of::<types::exec_event>() + args.len() + exe.len() + cwd.len();
        let ev = types::exec_event {
            hdr: types::rw_hdr { ktime: 5_000, size: len as u32, kind: KIND_EXEC, flags, _pad: 0 },
            id: types::rw_proc_id {
                start_ns: 1_234_560_000_000,
                pid: 42,
                tid: 43,
                ppid: 7,
                comm: *b"echo\0\0\0\0\0\0\0\0\0\0\0\0",
                ..Default::default()
            },
            ctx: types::rw_proc_ctx {
                parent_start_ns: 20_000_000,
                uid: 1000,
                euid: 0,
                session_id: 7,
                tty_major: 136,
                tty_minor: 3,
                ..Default::default()
            },
            kill_rule: 1,
            args_len: args.len() as u16,
            exe_len: exe.len() as u16,
            cwd_len: cwd.len() as u16,
            ..Default::default()
        };
        let fixed = plain_bytes(&ev);
        buf.0[..fixed.len()].copy_from_slice(&fixed);
        let mut at = fixed.len();
        for part in [args, exe, cwd] {
            buf.0[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        len
    }

    /// Field-by-field encoding (no unsafe byte view of a struct with possible padding).
    fn plain_bytes(ev: &types::exec_event) -> Vec<u8> {
        let mut b = vec![0u8; size_of::<types::exec_event>()];
        let mut put = |off: usize, bytes: &[u8]| b[off..off + bytes.len()].copy_from_slice(bytes);
        put(0, &ev.hdr.ktime.to_ne_bytes());
        put(8, &ev.hdr.size.to_ne_bytes());
        put(12, &ev.hdr.kind.to_ne_bytes());
        put(14, &[ev.hdr.flags]);
        put(offset_of!(types::exec_event, id.start_ns), &ev.id.start_ns.to_ne_bytes());
        put(offset_of!(types::exec_event, id.pid), &ev.id.pid.to_ne_bytes());
        put(offset_of!(types::exec_event, id.tid), &ev.id.tid.to_ne_bytes());
        put(offset_of!(types::exec_event, id.ppid), &ev.id.ppid.to_ne_bytes());
        put(offset_of!(types::exec_event, id.comm), &ev.id.comm);
        put(offset_of!(types::exec_event, ctx.parent_start_ns), &ev.ctx.parent_start_ns.to_ne_bytes());
        put(offset_of!(types::exec_event, ctx.uid), &ev.ctx.uid.to_ne_bytes());
        put(offset_of!(types::exec_event, ctx.session_id), &ev.ctx.session_id.to_ne_bytes());
        put(offset_of!(types::exec_event, ctx.tty_major), &ev.ctx.tty_major.to_ne_bytes());
        put(offset_of!(types::exec_event, ctx.tty_minor), &ev.ctx.tty_minor.to_ne_bytes());
        put(offset_of!(types::exec_event, kill_rule), &ev.kill_rule.to_ne_bytes());
        put(offset_of!(types::exec_event, args_len), &ev.args_len.to_ne_bytes());
        put(offset_of!(types::exec_event, exe_len), &ev.exe_len.to_ne_bytes());
        put(offset_of!(types::exec_event, cwd_len), &ev.cwd_len.to_ne_bytes());
        b
    }

    #[test]
    fn exec_sample_decodes_into_the_contract() {
        let mut buf = Sample([0; 512]);
        let len = exec_sample(&mut buf, b"/bin/echo\0hi there\0", b"/usr/bin/echo", b"/root", EXEC_F_KILLED);
        let (ev, _) = decoder().decode(&buf.0[..len]).expect("valid sample");
        assert_eq!(ev.activity, Activity::Exec);
        assert_eq!(ev.backend, backend());
        let p = &ev.process;
        assert_eq!((p.pid, p.tid, p.ppid), (42, 43, 7));
        assert_eq!(p.cmdline, vec!["/bin/echo", "hi there"]);
        assert_eq!(p.exe, "/usr/bin/echo");
        assert_eq!(p.cwd.as_deref(), Some("/root"));
        assert_eq!(p.comm, "echo");
        assert_eq!(p.start_ticks, 123_456);
        assert_eq!(p.guid, process_guid(42, 123_456));
        assert_eq!(p.parent_guid, Some(process_guid(7, 2)));
        assert_eq!(p.tty.as_deref(), Some("pts/3"));
        assert_eq!(ev.time, Timestamp(6_000));
        assert_eq!(ev.action, Action::Killed);
        assert_eq!(ev.rule.as_deref(), Some("deny-x"));
        assert!(!p.cmdline_truncated && !p.partial);
    }

    #[test]
    fn bad_samples_are_rejected_not_panicked_on() {
        let d = decoder();
        let mut buf = Sample([0; 512]);
        let len = exec_sample(&mut buf, b"a\0", b"/x", b"", 0);
        assert!(d.decode(&buf.0[..len]).is_ok());
        // Truncated sample: size no longer matches.
        assert!(d.decode(&buf.0[..len - 1]).is_err());
        // Too short for a header, and empty.
        assert!(d.decode(&buf.0[..7]).is_err());
        assert!(d.decode(&[]).is_err());
        // Declared lengths that do not add up.
        buf.0[offset_of!(types::exec_event, args_len)] = 200;
        assert!(d.decode(&buf.0[..len]).is_err());
        // Unknown kind.
        let mut buf = Sample([0; 512]);
        let len = exec_sample(&mut buf, b"", b"", b"", 0);
        buf.0[12] = 99;
        assert!(d.decode(&buf.0[..len]).is_err());
        // A fork header on an exec-sized sample.
        buf.0[12] = KIND_FORK as u8;
        assert!(d.decode(&buf.0[..len]).is_err());
    }

    #[test]
    fn exit_status_splits_into_code_or_signal() {
        let d = decoder();
        let mut buf = Sample([0; 512]);
        let n = size_of::<types::exit_event>();
        buf.0[8..12].copy_from_slice(&(n as u32).to_ne_bytes());
        buf.0[12..14].copy_from_slice(&KIND_EXIT.to_ne_bytes());
        let status_at = offset_of!(types::exit_event, status);
        buf.0[status_at..status_at + 4].copy_from_slice(&(7u32 << 8).to_ne_bytes());
        let (ev, _) = d.decode(&buf.0[..n]).expect("valid exit");
        assert_eq!((ev.process.exit_code, ev.process.exit_signal), (Some(7), None));
        buf.0[status_at..status_at + 4].copy_from_slice(&15u32.to_ne_bytes());
        let (ev, _) = d.decode(&buf.0[..n]).expect("valid exit");
        assert_eq!((ev.process.exit_code, ev.process.exit_signal), (None, Some(15)));
    }

    #[test]
    fn kill_keys_are_padded_and_prefixes_end_in_slash() {
        let key = exact_key("/bin/true").expect("short path");
        assert_eq!(key.len(), 256);
        assert_eq!(&key[..9], b"/bin/true");
        assert!(key[9..].iter().all(|b| *b == 0));
        assert!(exact_key(&"/x".repeat(200)).is_err());
        let key = prefix_key("/tmp/").expect("short dir");
        assert_eq!(u32::from_ne_bytes(key[..4].try_into().expect("4 bytes")), 40);
        assert_eq!(&key[4..9], b"/tmp/");
        assert_eq!(with_canonical("/no/such/dir", true), vec!["/no/such/dir/".to_owned()]);
    }

    #[test]
    fn kill_list_with_bad_index_or_relative_path_is_refused() {
        let list = ExecKillList { rule_ids: vec!["r".into()], exact: vec![("/x".into(), 1)], dir_prefixes: vec![] };
        assert!(KillEntries::compile(&list).is_err());
        let list = ExecKillList { rule_ids: vec!["r".into()], exact: vec![("x".into(), 0)], dir_prefixes: vec![] };
        assert!(KillEntries::compile(&list).is_err());
        let list = ExecKillList { rule_ids: vec!["r".into()], exact: vec![], dir_prefixes: vec![("/opt/x".into(), 0)] };
        let entries = KillEntries::compile(&list).expect("valid list");
        assert_eq!(entries.prefixes.len(), 1);
    }

    #[test]
    fn ring_buffer_overflow_is_counted_as_lost_upstream() {
        if !ProcessKernel::probe().available {
            eprintln!("skipping: process/kernel unavailable here");
            return;
        }
        // 16 KiB holds a few dozen records; nobody reads it until the workload is done.
        let source = ProcessKernel::start_with_ring(&ExecKillList::default(), Some(16 * 1024)).expect("start");
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done"])
            .status()
            .expect("spawn sh");
        assert!(status.success());
        let ((queue_full, lost, malformed), written) = drain_stopped(source, NAME);
        assert_eq!((queue_full, malformed), (0, 0));
        // 300 processes make 900 records; at most a few dozen fit.
        assert!(lost >= 600, "overflow counted as lost_upstream: {lost}");
        assert!(written > 0 && written < 300, "what fitted was delivered: {written}");
    }

    #[test]
    fn probe_reports_why_when_unprivileged_or_says_what_it_uses() {
        let p = ProcessKernel::probe();
        assert_eq!((p.domain, p.mode, p.source), (Domain::Process, Mode::Kernel, SourceKind::Ebpf));
        if has_bpf_privilege() && crate::probe::has_kernel_btf() {
            assert!(p.available, "privileged with BTF but unavailable: {}", p.detail);
        } else {
            assert!(!p.available && !p.detail.is_empty());
        }
    }
}
