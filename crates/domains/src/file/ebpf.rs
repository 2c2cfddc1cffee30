//! File domain, kernel mode, beside fanotify: eBPF programs on the open, unlink, rename and chmod syscall
//! tracepoints report what fanotify cannot tell — calls the kernel refused, open flags, rename flags, the mode a
//! chmod set.
//!
//! The BPF side is `src/bpf/file/syscalls.bpf.c` (wire format in `file.h`). `sys_enter_*` saves the arguments per
//! thread (an LRU hash keyed by pid_tgid); `sys_exit_*` reads the return value and filters **in the kernel**; only
//! then are the caller's path strings read and one record written into the ring buffer (batched wakeups). A
//! successful read-only open costs one map update and one lookup + delete, and emits nothing.
//!
//! # What is reported (the in-kernel filter)
//!
//! | call | reported when |
//! |---|---|
//! | any traced call failing | errno is EACCES, EPERM, EROFS or ETXTBSY (a refusal), or every errno with [`FailureFilter::All`] |
//! | open, openat, openat2, creat | it succeeded with `O_WRONLY`, `O_RDWR`, `O_CREAT` or `O_TRUNC` (every success with `all_successes`) |
//! | renameat2 | it succeeded with flags (`RENAME_NOREPLACE` 1, `RENAME_EXCHANGE` 2, `RENAME_WHITEOUT` 4) |
//! | chmod, fchmodat, fchmodat2 | it succeeded setting setuid, setgid or other-writable |
//! | unlink, unlinkat, plain renames | only when they fail (fanotify reports the success) |
//!
//! ENOENT and friends are not refusals: a shell searching `$PATH` or a loader probing library directories makes
//! dozens per command, so the default reports what a security analyst needs (access denied, read-only, busy text).
//!
//! Events: activity `open` (or `create` for a successful `O_CREAT|O_EXCL`), `delete`, `rename` (with `new_path`) and
//! `chmod`; `file.flags` is the open flags / rename flags / `AT_*` flags of the call, `file.mode` the create mode
//! (only with `O_CREAT`/`O_TMPFILE`) or the chmod mode, `file.error` the errno name of a failure. A failed call is
//! still `action: observed`: the kernel refused, not ringwatch.
//!
//! # What it cannot see or tell
//!
//! - io_uring opens/renames/unlinks, `open_by_handle_at`, truncate(2), fchmod(fd): not these syscalls.
//! - **Paths are what the caller passed**, made absolute in the kernel at the syscall's exit by walking the cwd (or
//!   the `dfd` directory's) dentries: symlinks are not resolved and `..` is kept (only `.` is removed here); a path
//!   in another mount namespace is relative to that namespace's root. When the walk fails the path stays relative.
//!   Because the walk happens while the caller is still in the syscall, there is no /proc race.
//! - Whether a rename replaced an existing target: neither tracepoint knows (no kprobes here); only the flags are.
//! - `create` only for `O_CREAT|O_EXCL`: a plain `O_CREAT` open of an existing file does not create it, and the
//!   tracepoint cannot tell which happened (fanotify's own `create` event can).
//! - The agent's own calls are not reported. Records are lost only when the ring buffer is full; that is counted
//!   (per-CPU `drops`) and reported as `lost_upstream`.

use std::mem::{MaybeUninit, offset_of, size_of};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, OpenObject};
use ringwatch_core::event::{FileInfo, Timestamp};
use ringwatch_core::guid::{BootInfo, process_guid, start_time_from_ticks, ticks_from_boot_ns};
use ringwatch_core::{Activity, Backend, Domain, Event, Mode, Probe, Source, SourceContext, SourceError, SourceKind};

use crate::kernel_ids::cstr;
use crate::libbpf_support::{
    RingMaps, Tracefs, attach_all, bpf_skeleton, clear_libbpf_warnings, leaked_object_slot, libbpf_error, load_error,
    missing_rodata, prepare_tracepoint_load, probe_by_loading, realtime_offset_ns, stream_ring, tracing_prerequisites,
    wall_time,
};
use crate::probe;

bpf_skeleton!("syscalls.skel.rs");

use skel::{OpenSyscallsSkel, SyscallsSkel, SyscallsSkelBuilder, types};

/// Backend name in logs, errors and loss counters.
pub const NAME: &str = "file/ebpf";

// Mirrors of file.h / common.h / compat.h constants (#defines do not reach BTF).
const KIND_FILE_OP: u16 = 16;
const OP_OPENAT: u16 = 1;
const OP_OPENAT2: u16 = 2;
const OP_OPEN: u16 = 3;
const OP_CREAT: u16 = 4;
const OP_UNLINKAT: u16 = 5;
const OP_UNLINK: u16 = 6;
const OP_RENAMEAT2: u16 = 7;
const OP_RENAMEAT: u16 = 8;
const OP_RENAME: u16 = 9;
const OP_FCHMODAT: u16 = 10;
const OP_FCHMODAT2: u16 = 11;
const OP_CHMOD: u16 = 12;
const F_PATH_RELATIVE: u8 = 0x01;
const F_NEW_PATH_RELATIVE: u8 = 0x02;
const F_PATH_FAULT: u8 = 0x04;
const F_PATH_TRUNCATED: u8 = 0x08;
const O_CREAT: u64 = 0o100;
const O_EXCL: u64 = 0o200;
const O_TMPFILE: u64 = 0o20_000_000;

// SAFETY: rw_hdr is a #[repr(C)] struct of integers generated from BTF; every bit pattern is a valid value.
unsafe impl plain::Plain for types::rw_hdr {}
// SAFETY: file_event is #[repr(C)] of integers, an integer array, rw_hdr and rw_proc_id; every bit pattern is valid.
unsafe impl plain::Plain for types::file_event {}

// The same pins as the _Static_asserts in file.h/task.h/common.h: a layout change fails to compile on both sides.
const _: () = assert!(size_of::<types::rw_hdr>() == 16 && offset_of!(types::rw_hdr, kind) == 12);
const _: () = assert!(size_of::<types::rw_proc_id>() == 40 && offset_of!(types::rw_proc_id, comm) == 24);
const _: () = assert!(size_of::<types::file_event>() == 96 && offset_of!(types::file_event, id) == 16);
const _: () = assert!(offset_of!(types::file_event, ret) == 56 && offset_of!(types::file_event, flags) == 64);
const _: () = assert!(offset_of!(types::file_event, mode) == 72 && offset_of!(types::file_event, euid) == 80);
const _: () = assert!(offset_of!(types::file_event, op) == 84 && offset_of!(types::file_event, new_path_len) == 88);

/// Which failed calls the kernel reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailureFilter {
    /// Refusals only: EACCES, EPERM, EROFS, ETXTBSY (the default).
    #[default]
    Refusals,
    /// Every failure, ENOENT included (noisy: every `$PATH` search and library probe).
    All,
}

impl FailureFilter {
    /// The errno names reported, for `probe`.
    pub fn describe(self) -> &'static str {
        match self {
            FailureFilter::Refusals => "EACCES, EPERM, EROFS, ETXTBSY",
            FailureFilter::All => "every errno",
        }
    }
}

/// What the in-kernel filter lets through (rodata: fixed at load).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileEbpfConfig {
    /// Which failures are reported.
    pub failures: FailureFilter,
    /// Report every successful traced call too (read-only opens, plain renames, unlinks, every chmod). Off by
    /// default: it puts every open on the host into the ring buffer.
    pub all_successes: bool,
}

/// One traced syscall: tracepoint name and whether the backend refuses to run without it.
struct Syscall {
    name: &'static str,
    required: bool,
}

/// Every traced syscall, in `probe` order. The legacy entries (open, creat, unlink, rename, chmod) do not exist on
/// arm64, fchmodat2 only since 6.6, openat2 since 5.6: missing ones are not loaded.
const SYSCALLS: &[Syscall] = &[
    Syscall { name: "openat", required: true },
    Syscall { name: "openat2", required: false },
    Syscall { name: "open", required: false },
    Syscall { name: "creat", required: false },
    Syscall { name: "unlinkat", required: true },
    Syscall { name: "unlink", required: false },
    Syscall { name: "renameat2", required: true },
    Syscall { name: "renameat", required: false },
    Syscall { name: "rename", required: false },
    Syscall { name: "fchmodat", required: true },
    Syscall { name: "fchmodat2", required: false },
    Syscall { name: "chmod", required: false },
];

/// The kernel file-syscall backend: loaded and attached by [`FileEbpf::start`], streaming from [`Source::run`].
pub struct FileEbpf {
    /// Two links per traced syscall; dropping them detaches. Declared before `skel` so they go first.
    links: Vec<Link>,
    /// The loaded object with its maps and programs.
    skel: SyscallsSkel<'static>,
    /// CLOCK_REALTIME - CLOCK_BOOTTIME at start, to turn BPF boot-time stamps into wall-clock time.
    realtime_offset_ns: i128,
    /// The syscalls attached, for logs.
    attached: Vec<&'static str>,
}

impl std::fmt::Debug for FileEbpf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileEbpf").field("links", &self.links.len()).field("attached", &self.attached).finish()
    }
}

impl FileEbpf {
    /// Whether this backend can run here: privilege, kernel BTF, the syscall tracepoints (which ones), and an
    /// actual open + load of the BPF object. Nothing is attached; the object is unloaded before returning.
    pub fn probe() -> Probe {
        Self::probe_with(FileEbpfConfig::default())
    }

    /// [`FileEbpf::probe`], describing the filter `config` sets.
    pub fn probe_with(config: FileEbpfConfig) -> Probe {
        let unavailable = |why: String| Probe::unavailable(Domain::File, Mode::Kernel, SourceKind::Ebpf, why);
        let mut note = "";
        let present = match tracing_prerequisites() {
            Err(why) => return unavailable(why),
            Ok(Tracefs::Mounted) => match present_syscalls() {
                Ok(p) => p,
                Err(why) => return unavailable(why),
            },
            Ok(Tracefs::Mountable) => {
                note = " (tracefs not mounted, start mounts it)";
                SYSCALLS.iter().map(|s| s.name).collect()
            }
        };
        probe_by_loading(Domain::File, describe(&present, config) + note, |storage| {
            open_and_load(storage, config, &present, None).map(drop)
        })
    }

    /// Opens the object, sets the agent's pid and the filter in rodata, loads it and attaches the enter and exit
    /// programs of every traced syscall the kernel has. Records are buffered in the kernel from here until
    /// [`Source::run`] reads them.
    pub fn start(config: FileEbpfConfig) -> Result<Self, SourceError> {
        Self::start_with_ring(config, None)
    }

    /// [`FileEbpf::start`] with the `events` ring resized to `ring_bytes` (a power-of-two multiple of the page size).
    fn start_with_ring(config: FileEbpfConfig, ring_bytes: Option<u32>) -> Result<Self, SourceError> {
        prepare_tracepoint_load(NAME)?;
        let present =
            present_syscalls().map_err(|what| SourceError::Unsupported { backend: NAME, what: what.clone() })?;
        BootInfo::get();
        let skel = open_and_load(leaked_object_slot(), config, &present, ring_bytes)?;
        let links = attach_all(NAME, present.iter().flat_map(|name| programs(&skel, name)))?;
        tracing::debug!(backend = NAME, syscalls = ?present, "attached");
        Ok(FileEbpf { links, skel, realtime_offset_ns: realtime_offset_ns(NAME)?, attached: present })
    }

    /// The syscalls whose tracepoints are attached.
    pub fn attached(&self) -> &[&'static str] {
        &self.attached
    }
}

/// `probe`'s detail line: what is attached and what passes the filter.
fn describe(present: &[&str], config: FileEbpfConfig) -> String {
    let successes = if config.all_successes {
        "every successful call".to_owned()
    } else {
        "opens with write/create/trunc flags, rename flags, setuid/setgid/o+w chmods".to_owned()
    };
    format!(
        "syscall tracepoints: {}; emits failures ({}) and {successes}",
        present.join(", "),
        config.failures.describe()
    )
}

/// The traced syscalls whose enter and exit tracepoints exist; an error names a missing required one.
fn present_syscalls() -> Result<Vec<&'static str>, String> {
    let mut present = Vec::new();
    for s in SYSCALLS {
        let exists = probe::tracepoint_exists("syscalls", &format!("sys_enter_{}", s.name))
            && probe::tracepoint_exists("syscalls", &format!("sys_exit_{}", s.name));
        if exists {
            present.push(s.name);
        } else if s.required {
            return Err(format!("tracepoint syscalls/sys_enter_{0} or sys_exit_{0} not found in tracefs", s.name));
        }
    }
    Ok(present)
}

/// The enter and exit programs of one traced syscall.
fn programs<'a>(skel: &'a SyscallsSkel<'_>, syscall: &str) -> [&'a libbpf_rs::ProgramMut<'a>; 2] {
    let p = &skel.progs;
    match syscall {
        "openat" => [&p.enter_openat, &p.exit_openat],
        "openat2" => [&p.enter_openat2, &p.exit_openat2],
        "open" => [&p.enter_open, &p.exit_open],
        "creat" => [&p.enter_creat, &p.exit_creat],
        "unlinkat" => [&p.enter_unlinkat, &p.exit_unlinkat],
        "unlink" => [&p.enter_unlink, &p.exit_unlink],
        "renameat2" => [&p.enter_renameat2, &p.exit_renameat2],
        "renameat" => [&p.enter_renameat, &p.exit_renameat],
        "rename" => [&p.enter_rename, &p.exit_rename],
        "fchmodat" => [&p.enter_fchmodat, &p.exit_fchmodat],
        "fchmodat2" => [&p.enter_fchmodat2, &p.exit_fchmodat2],
        _ => [&p.enter_chmod, &p.exit_chmod],
    }
}

/// Turns off autoload of the programs of syscalls this kernel lacks (their tracepoints cannot be attached).
fn skip_missing(open: &mut OpenSyscallsSkel<'_>, present: &[&str]) {
    let p = &mut open.progs;
    let all: [(&str, [&mut libbpf_rs::OpenProgramMut<'_>; 2]); 12] = [
        ("openat", [&mut p.enter_openat, &mut p.exit_openat]),
        ("openat2", [&mut p.enter_openat2, &mut p.exit_openat2]),
        ("open", [&mut p.enter_open, &mut p.exit_open]),
        ("creat", [&mut p.enter_creat, &mut p.exit_creat]),
        ("unlinkat", [&mut p.enter_unlinkat, &mut p.exit_unlinkat]),
        ("unlink", [&mut p.enter_unlink, &mut p.exit_unlink]),
        ("renameat2", [&mut p.enter_renameat2, &mut p.exit_renameat2]),
        ("renameat", [&mut p.enter_renameat, &mut p.exit_renameat]),
        ("rename", [&mut p.enter_rename, &mut p.exit_rename]),
        ("fchmodat", [&mut p.enter_fchmodat, &mut p.exit_fchmodat]),
        ("fchmodat2", [&mut p.enter_fchmodat2, &mut p.exit_fchmodat2]),
        ("chmod", [&mut p.enter_chmod, &mut p.exit_chmod]),
    ];
    for (name, progs) in all {
        if !present.contains(&name) {
            for prog in progs {
                prog.set_autoload(false);
            }
        }
    }
}

/// Opens the skeleton, writes the agent's tgid and the filter into rodata, and loads it (no attach).
fn open_and_load<'a>(
    storage: &'a mut MaybeUninit<OpenObject>,
    config: FileEbpfConfig,
    present: &[&str],
    ring_bytes: Option<u32>,
) -> Result<SyscallsSkel<'a>, SourceError> {
    clear_libbpf_warnings();
    let mut open = SyscallsSkelBuilder::default().open(storage).map_err(|e| libbpf_error(NAME, "open", &e))?;
    if let Some(bytes) = ring_bytes {
        open.maps.events.set_max_entries(bytes).map_err(|e| libbpf_error(NAME, "size events", &e))?;
    }
    skip_missing(&mut open, present);
    let Some(rodata) = open.maps.rodata_data.as_deref_mut() else {
        return Err(missing_rodata(NAME, "agent_tgid"));
    };
    rodata.agent_tgid = std::process::id();
    rodata.fail_all = u8::from(config.failures == FailureFilter::All);
    rodata.success_all = u8::from(config.all_successes);
    open.load().map_err(|e| load_error(NAME, &e))
}

impl Source for FileEbpf {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let span = tracing::info_span!("source", domain = "file", mode = "kernel", source = "ebpf");
        let _guard = span.enter();
        let FileEbpf { links, skel, realtime_offset_ns, .. } = *self;
        let decoder = Decoder { realtime_offset_ns };
        let mut links = Some(links);
        stream_ring(
            NAME,
            RingMaps { events: &skel.maps.events, drops: &skel.maps.drops },
            &ctx,
            |data| decoder.decode(data),
            || drop(links.take()),
            |batch, _| {
                for ev in batch {
                    ctx.events.send(ev);
                }
            },
        )?;
        drop(skel);
        tracing::debug!(backend = NAME, "detached");
        Ok(())
    }
}

// --- decoding -----------------------------------------------------------------------------------------------------

/// Turns ring-buffer samples into events. Pure: no I/O, so it runs inside the ring-buffer callback.
#[derive(Debug)]
struct Decoder {
    realtime_offset_ns: i128,
}

impl Decoder {
    fn decode(&self, data: &[u8]) -> Result<Event, &'static str> {
        let hdr_bytes = data.get(..size_of::<types::rw_hdr>()).ok_or("shorter than rw_hdr")?;
        let hdr: &types::rw_hdr = plain::from_bytes(hdr_bytes).map_err(|_| "misaligned rw_hdr")?;
        if hdr.size as usize != data.len() {
            return Err("rw_hdr.size differs from the sample length");
        }
        if hdr.kind != KIND_FILE_OP {
            return Err("unknown kind");
        }
        let fixed = data.get(..size_of::<types::file_event>()).ok_or("file_event too short")?;
        let e: &types::file_event = plain::from_bytes(fixed).map_err(|_| "misaligned file_event")?;
        let tail = &data[size_of::<types::file_event>()..];
        let (path_len, new_len) = (e.path_len as usize, e.new_path_len as usize);
        if path_len + new_len != tail.len() {
            return Err("file_event lengths do not add up to the sample");
        }
        let (path, new_path) = tail.split_at(path_len);
        let activity = activity(e.op, e.flags, e.ret).ok_or("unknown op")?;

        let mut ev = Event::new(Domain::File, activity, Backend { mode: Mode::Kernel, source: SourceKind::Ebpf });
        ev.time = self.time(e.hdr.ktime);
        let p = &mut ev.process;
        p.pid = e.id.pid;
        p.tid = e.id.tid;
        p.ppid = e.id.ppid;
        p.start_ticks = ticks_from_boot_ns(e.id.start_ns);
        p.guid = process_guid(e.id.pid, p.start_ticks);
        p.start_time = start_time_from_ticks(p.start_ticks);
        p.comm = cstr(&e.id.comm);
        p.uid = e.uid;
        p.euid = e.euid;

        let flags = e.hdr.flags;
        let is_open = matches!(e.op, OP_OPENAT | OP_OPENAT2 | OP_OPEN | OP_CREAT);
        let is_chmod = matches!(e.op, OP_FCHMODAT | OP_FCHMODAT2 | OP_CHMOD);
        // An open's mode argument means something only when it may create the file.
        let mode = (is_chmod || (is_open && e.flags & (O_CREAT | O_TMPFILE) != 0)).then_some(e.mode & 0o7777);
        let has_flags = !matches!(e.op, OP_UNLINK | OP_RENAMEAT | OP_RENAME | OP_FCHMODAT | OP_CHMOD);
        ev.file = Some(FileInfo {
            path: clean_path(path),
            new_path: (new_len > 0 || flags & F_NEW_PATH_RELATIVE != 0).then(|| clean_path(new_path)),
            // Open flags fit in 32 bits (openat2's are u64 only for future use).
            flags: has_flags.then_some((e.flags & 0xffff_ffff) as u32),
            mode,
            error: (e.ret < 0).then(|| errno_name(e.ret)),
            ..FileInfo::default()
        });
        // A path the kernel could not read or complete is reported as such, not silently.
        p.partial = flags & (F_PATH_RELATIVE | F_NEW_PATH_RELATIVE | F_PATH_FAULT | F_PATH_TRUNCATED) != 0;
        Ok(ev)
    }

    fn time(&self, ktime: u64) -> Timestamp {
        wall_time(ktime, self.realtime_offset_ns)
    }
}

/// The activity of a record: `create` only for a successful `O_CREAT|O_EXCL` (the one open that surely created).
fn activity(op: u16, flags: u64, ret: i64) -> Option<Activity> {
    Some(match op {
        OP_OPENAT | OP_OPENAT2 | OP_OPEN | OP_CREAT => {
            if ret >= 0 && flags & (O_CREAT | O_EXCL) == O_CREAT | O_EXCL {
                Activity::Create
            } else {
                Activity::Open
            }
        }
        OP_UNLINKAT | OP_UNLINK => Activity::Delete,
        OP_RENAMEAT2 | OP_RENAMEAT | OP_RENAME => Activity::Rename,
        OP_FCHMODAT | OP_FCHMODAT2 | OP_CHMOD => Activity::Chmod,
        _ => return None,
    })
}

/// `EACCES` for -13; `E<n>` for a number nix does not know.
fn errno_name(ret: i64) -> String {
    let n = i32::try_from(-ret).unwrap_or(0);
    match nix::errno::Errno::from_raw(n) {
        nix::errno::Errno::UnknownErrno => format!("E{n}"),
        e => format!("{e:?}"),
    }
}

/// The path as bytes from the kernel, with `.` components and repeated slashes removed (lexically; `..` is kept,
/// since it may cross a symlink).
fn clean_path(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let absolute = s.starts_with('/');
    let parts: Vec<&str> = s.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => s.into_owned(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libbpf_support::has_bpf_privilege;

    /// A sample buffer with the 8-byte alignment the ring buffer guarantees.
    #[repr(C, align(8))]
    struct Sample([u8; 512]);

    fn put(buf: &mut Sample, off: usize, bytes: &[u8]) {
        buf.0[off..off + bytes.len()].copy_from_slice(bytes);
    }

    /// A file_event sample written field by field.
    fn sample(buf: &mut Sample, op: u16, ret: i64, flags: u64, mode: u32, path: &[u8], new_path: &[u8]) -> usize {
        let fixed = size_of::<types::file_event>();
        let len = fixed + path.len() + new_path.len();
        put(buf, 0, &5_000u64.to_ne_bytes());
        put(buf, 8, &(len as u32).to_ne_bytes());
        put(buf, 12, &KIND_FILE_OP.to_ne_bytes());
        put(buf, offset_of!(types::file_event, id.start_ns), &1_234_560_000_000u64.to_ne_bytes());
        put(buf, offset_of!(types::file_event, id.pid), &42u32.to_ne_bytes());
        put(buf, offset_of!(types::file_event, id.tid), &43u32.to_ne_bytes());
        put(buf, offset_of!(types::file_event, id.ppid), &7u32.to_ne_bytes());
        put(buf, offset_of!(types::file_event, id.comm), b"cat\0");
        put(buf, offset_of!(types::file_event, ret), &ret.to_ne_bytes());
        put(buf, offset_of!(types::file_event, flags), &flags.to_ne_bytes());
        put(buf, offset_of!(types::file_event, mode), &mode.to_ne_bytes());
        put(buf, offset_of!(types::file_event, uid), &65534u32.to_ne_bytes());
        put(buf, offset_of!(types::file_event, euid), &65534u32.to_ne_bytes());
        put(buf, offset_of!(types::file_event, op), &op.to_ne_bytes());
        put(buf, offset_of!(types::file_event, path_len), &(path.len() as u16).to_ne_bytes());
        put(buf, offset_of!(types::file_event, new_path_len), &(new_path.len() as u16).to_ne_bytes());
        put(buf, fixed, path);
        put(buf, fixed + path.len(), new_path);
        len
    }

    #[test]
    fn failed_open_decodes_with_errno_name_flags_and_identity() {
        let mut buf = Sample([0; 512]);
        let len = sample(&mut buf, OP_OPENAT, -13, 0o1101, 0o644, b"/etc/./shadow", b"");
        let ev = Decoder { realtime_offset_ns: 1_000 }.decode(&buf.0[..len]).expect("valid sample");
        assert_eq!((ev.domain, ev.activity), (Domain::File, Activity::Open));
        let f = ev.file.as_ref().expect("file facts");
        assert_eq!(f.path, "/etc/shadow");
        assert_eq!(f.new_path, None);
        assert_eq!(f.flags, Some(0o1101));
        assert_eq!(f.mode, Some(0o644));
        assert_eq!(f.error.as_deref(), Some("EACCES"));
        assert_eq!((ev.process.pid, ev.process.tid, ev.process.ppid), (42, 43, 7));
        assert_eq!(ev.process.guid, process_guid(42, 123_456));
        assert_eq!((ev.process.comm.as_str(), ev.process.euid), ("cat", 65534));
        assert_eq!(ev.time, Timestamp(6_000));
        assert_eq!(ev.action, ringwatch_core::Action::Observed);
        assert!(!ev.process.partial);
    }

    #[test]
    fn rename_exchange_and_chmod_and_create_decode() {
        let d = Decoder { realtime_offset_ns: 0 };
        let mut buf = Sample([0; 512]);
        let len = sample(&mut buf, OP_RENAMEAT2, 0, 2, 0, b"/tmp/a", b"/tmp//b");
        let ev = d.decode(&buf.0[..len]).expect("rename");
        let f = ev.file.expect("file");
        assert_eq!((ev.activity, f.path.as_str(), f.new_path.as_deref()), (Activity::Rename, "/tmp/a", Some("/tmp/b")));
        assert_eq!((f.flags, f.error), (Some(2), None));
        let len = sample(&mut buf, OP_CHMOD, 0, 0, 0o104_755, b"/tmp/x", b"");
        let ev = d.decode(&buf.0[..len]).expect("chmod");
        let f = ev.file.expect("file");
        assert_eq!((ev.activity, f.mode, f.flags), (Activity::Chmod, Some(0o4755), None));
        let len = sample(&mut buf, OP_OPENAT, 3, O_CREAT | O_EXCL | 1, 0o600, b"/tmp/n", b"");
        assert_eq!(d.decode(&buf.0[..len]).expect("create").activity, Activity::Create);
        let len = sample(&mut buf, OP_UNLINKAT, -1, 0x200, 0, b"/tmp/d", b"");
        let ev = d.decode(&buf.0[..len]).expect("unlink");
        assert_eq!((ev.activity, ev.file.expect("file").error.as_deref()), (Activity::Delete, Some("EPERM")));
    }

    #[test]
    fn bad_samples_are_rejected_not_panicked_on() {
        let d = Decoder { realtime_offset_ns: 0 };
        let mut buf = Sample([0; 512]);
        let len = sample(&mut buf, OP_OPENAT, -13, 0, 0, b"/x", b"");
        assert!(d.decode(&buf.0[..len]).is_ok());
        assert!(d.decode(&buf.0[..len - 1]).is_err(), "truncated");
        assert!(d.decode(&buf.0[..7]).is_err() && d.decode(&[]).is_err(), "shorter than a header");
        put(&mut buf, offset_of!(types::file_event, path_len), &200u16.to_ne_bytes());
        assert!(d.decode(&buf.0[..len]).is_err(), "lengths do not add up");
        let len = sample(&mut buf, 99, -13, 0, 0, b"/x", b"");
        assert!(d.decode(&buf.0[..len]).is_err(), "unknown op");
        let len = sample(&mut buf, OP_OPENAT, -13, 0, 0, b"/x", b"");
        put(&mut buf, 12, &3u16.to_ne_bytes());
        assert!(d.decode(&buf.0[..len]).is_err(), "a process kind");
        // A header that claims less than the fixed part.
        let len = 40;
        put(&mut buf, 8, &40u32.to_ne_bytes());
        put(&mut buf, 12, &KIND_FILE_OP.to_ne_bytes());
        assert!(d.decode(&buf.0[..len]).is_err());
    }

    #[test]
    fn errno_names_and_path_cleaning() {
        assert_eq!(errno_name(-13), "EACCES");
        assert_eq!(errno_name(-30), "EROFS");
        assert_eq!(errno_name(-9999), "E9999");
        assert_eq!(clean_path(b"/a/./b//c/."), "/a/b/c");
        assert_eq!(clean_path(b"/"), "/");
        assert_eq!(clean_path(b"/a/../b"), "/a/../b");
        assert_eq!(clean_path(b"./x"), "x");
    }

    #[test]
    fn probe_says_which_tracepoints_or_why_not() {
        let p = FileEbpf::probe();
        assert_eq!((p.domain, p.mode, p.source), (Domain::File, Mode::Kernel, SourceKind::Ebpf));
        if has_bpf_privilege() && probe::has_kernel_btf() {
            assert!(p.available, "privileged with BTF but unavailable: {}", p.detail);
            assert!(p.detail.contains("syscall tracepoints: openat"), "{}", p.detail);
            assert!(p.detail.contains("EACCES"), "{}", p.detail);
        } else {
            assert!(!p.available && !p.detail.is_empty());
        }
    }
}
