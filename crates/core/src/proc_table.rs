//! The process table: what the agent knows about every live process, so that each event carries its parent guid,
//! ancestry, user name, session and cgroup even when the backend saw only a pid.
//!
//! It is seeded from /proc at start and kept current from process events (fork inserts, exec updates, exit marks
//! the entry, which is removed a few seconds later so late events of the same batch still find it). Backends that
//! see only a pid (hooks, proc connector) get the rest filled from here, or from a /proc read as a last resort.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::time::{Duration, Instant};

use crate::event::{Activity, Domain, Event, Process};
use crate::guid::{process_guid, start_time_from_ticks};

/// How long an exited process stays in the table for late events.
const EXITED_GRACE: Duration = Duration::from_secs(5);

/// Longest ancestry chain reported.
const MAX_ANCESTRY: usize = 64;

/// Live processes by pid.
#[derive(Debug, Default)]
pub struct ProcessTable {
    by_pid: HashMap<u32, Process>,
    exited: VecDeque<(Instant, u32, String)>,
    users: UserNames,
    read_proc_on_miss: bool,
}

impl ProcessTable {
    /// An empty table that never reads /proc (for tests and offline evaluation).
    pub fn empty() -> Self {
        ProcessTable::default()
    }

    /// A table seeded with every process in /proc; later misses are looked up in /proc too.
    pub fn from_proc() -> Self {
        let mut table = ProcessTable { read_proc_on_miss: true, ..Default::default() };
        if let Ok(dir) = fs::read_dir("/proc") {
            for entry in dir.flatten() {
                if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                    && let Some(p) = read_proc_process(pid)
                {
                    table.by_pid.insert(pid, p);
                }
            }
        }
        table
    }

    /// Number of processes known (live plus recently exited).
    pub fn len(&self) -> usize {
        self.by_pid.len()
    }

    /// True when no process is known.
    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }

    /// The entry for `pid`, if known.
    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.by_pid.get(&pid)
    }

    /// Updates the table from a process event (fork inserts, exec updates, exit marks for removal).
    pub fn observe(&mut self, ev: &Event) {
        if ev.domain != Domain::Process {
            return;
        }
        let p = &ev.process;
        match ev.activity {
            Activity::Fork => {
                let mut child = p.clone();
                if let Some(parent) = self.by_pid.get(&p.ppid) {
                    if child.exe.is_empty() {
                        child.exe = parent.exe.clone();
                    }
                    if child.cmdline.is_empty() {
                        child.cmdline = parent.cmdline.clone();
                    }
                    if child.cwd.is_none() {
                        child.cwd = parent.cwd.clone();
                    }
                }
                child.ancestry.clear();
                self.by_pid.insert(p.pid, child);
            }
            Activity::Exec => {
                let same_process = self.by_pid.get(&p.pid).is_some_and(|e| p.guid.is_empty() || e.guid == p.guid);
                if same_process {
                    if let Some(entry) = self.by_pid.get_mut(&p.pid) {
                        merge_exec(entry, p);
                    }
                } else if !p.guid.is_empty() {
                    let mut entry = p.clone();
                    entry.ancestry.clear();
                    self.by_pid.insert(p.pid, entry);
                }
            }
            Activity::Exit => {
                if let Some(entry) = self.by_pid.get(&p.pid) {
                    self.exited.push_back((Instant::now(), p.pid, entry.guid.clone()));
                }
            }
            _ => {}
        }
    }

    /// Fills in what the backend did not know: guid, parent guid, ancestry, user name, exe, session, cgroup.
    pub fn enrich(&mut self, ev: &mut Event) {
        let pid = ev.process.pid;
        // pid 0: a posix_spawn seen by the hook before the child exists; only the parent side can be filled.
        if pid != 0
            && !self.by_pid.contains_key(&pid)
            && self.read_proc_on_miss
            && let Some(p) = read_proc_process(pid)
        {
            self.by_pid.insert(pid, p);
        }
        let p = &mut ev.process;
        if let Some(known) = self.by_pid.get(&pid).filter(|_| pid != 0) {
            let same = p.guid.is_empty() || p.guid == known.guid;
            if same {
                // An exec replaced the image: what the table knows about exe/argv describes the old program.
                fill_missing(p, known, ev.activity != Activity::Exec || ev.domain != Domain::Process);
            }
        }
        if p.guid.is_empty() && p.start_ticks > 0 && pid != 0 {
            p.guid = process_guid(pid, p.start_ticks);
        }
        if p.start_time.0 == 0 && p.start_ticks > 0 {
            p.start_time = start_time_from_ticks(p.start_ticks);
        }
        if p.parent_guid.is_none()
            && let Some(parent) = self.by_pid.get(&p.ppid)
        {
            p.parent_guid = Some(parent.guid.clone());
        }
        if p.ancestry.is_empty() {
            p.ancestry = self.ancestry(p.ppid, p.parent_guid.as_deref());
        }
        if p.user.is_none() {
            p.user = self.users.name(p.uid);
        }
    }

    /// Guids of `ppid` and its ancestors, stopping where the chain is unknown or a pid was reused.
    fn ancestry<'a>(&'a self, mut ppid: u32, mut expect_guid: Option<&'a str>) -> Vec<String> {
        let mut chain = Vec::new();
        while ppid != 0 && chain.len() < MAX_ANCESTRY {
            let Some(entry) = self.by_pid.get(&ppid) else { break };
            if expect_guid.is_some_and(|g| g != entry.guid) {
                break;
            }
            chain.push(entry.guid.clone());
            if entry.ppid == ppid {
                break;
            }
            ppid = entry.ppid;
            expect_guid = entry.parent_guid.as_deref();
        }
        chain
    }

    /// Removes processes that exited more than a few seconds ago.
    pub fn reap(&mut self) {
        while let Some((at, pid, guid)) = self.exited.front() {
            if at.elapsed() < EXITED_GRACE {
                break;
            }
            if self.by_pid.get(pid).is_some_and(|e| &e.guid == guid) {
                self.by_pid.remove(pid);
            }
            self.exited.pop_front();
        }
    }
}

fn merge_exec(entry: &mut Process, p: &Process) {
    if !p.exe.is_empty() {
        entry.exe = p.exe.clone();
    }
    if !p.cmdline.is_empty() {
        entry.cmdline = p.cmdline.clone();
        entry.cmdline_truncated = p.cmdline_truncated;
    }
    if p.cwd.is_some() {
        entry.cwd = p.cwd.clone();
    }
    if !p.comm.is_empty() {
        entry.comm = p.comm.clone();
    }
    entry.uid = p.uid;
    entry.euid = p.euid;
    entry.gid = p.gid;
}

fn fill_missing(p: &mut Process, known: &Process, fill_image: bool) {
    if p.guid.is_empty() {
        p.guid = known.guid.clone();
        p.start_ticks = known.start_ticks;
        p.start_time = known.start_time;
    }
    if p.ppid == 0 {
        p.ppid = known.ppid;
    }
    if p.parent_guid.is_none() {
        p.parent_guid = known.parent_guid.clone();
    }
    if fill_image {
        if p.exe.is_empty() {
            p.exe = known.exe.clone();
        }
        if p.cmdline.is_empty() {
            p.cmdline = known.cmdline.clone();
            p.cmdline_truncated = known.cmdline_truncated;
        }
        if p.comm.is_empty() {
            p.comm = known.comm.clone();
        }
    }
    if p.cwd.is_none() {
        p.cwd = known.cwd.clone();
    }
    if p.session_id == 0 {
        p.session_id = known.session_id;
    }
    if p.tty.is_none() {
        p.tty = known.tty.clone();
    }
    if p.cgroup.is_none() {
        p.cgroup = known.cgroup.clone();
        p.container_id = known.container_id.clone();
    }
}

/// Reads everything /proc says about `pid`; `None` when the process is gone (or is a thread).
pub fn read_proc_process(pid: u32) -> Option<Process> {
    let base = format!("/proc/{pid}");
    // exe, cmdline and cwd go first: they are the first to vanish when the process exits (mm and fs are released
    // before the task is reaped), while stat and status stay readable until then.
    let exe = fs::read_link(format!("{base}/exe")).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let cmdline = fs::read(format!("{base}/cmdline")).map(|b| split_nul(&b)).unwrap_or_default();
    let cwd = fs::read_link(format!("{base}/cwd")).ok().map(|p| p.to_string_lossy().into_owned());
    let stat = read_stat(pid)?;
    let status = fs::read_to_string(format!("{base}/status")).ok()?;
    let ids = |key: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.split_whitespace().filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default()
    };
    let uids = ids("Uid:");
    let gids = ids("Gid:");
    let cgroup = fs::read_to_string(format!("{base}/cgroup"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("0::").map(str::to_owned)));
    let container_id = cgroup.as_deref().and_then(container_id_from_cgroup);
    Some(Process {
        guid: process_guid(pid, stat.start_ticks),
        pid,
        tid: pid,
        ppid: stat.ppid,
        parent_guid: None,
        exe,
        comm: stat.comm,
        cmdline,
        cmdline_truncated: false,
        cwd,
        uid: uids.first().copied().unwrap_or(0),
        user: None,
        gid: gids.first().copied().unwrap_or(0),
        euid: uids.get(1).copied().unwrap_or(0),
        session_id: stat.session,
        tty: tty_name_from_nr(stat.tty_nr),
        cgroup,
        container_id,
        start_time: start_time_from_ticks(stat.start_ticks),
        ancestry: Vec::new(),
        exit_code: None,
        exit_signal: None,
        partial: false,
        start_ticks: stat.start_ticks,
    })
}

/// The fields of /proc/PID/stat the table uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 2, without parentheses.
    pub comm: String,
    /// Field 4.
    pub ppid: u32,
    /// Field 6.
    pub session: u32,
    /// Field 7.
    pub tty_nr: u32,
    /// Fields 14 + 15: user plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Field 22, clock ticks since boot.
    pub start_ticks: u64,
}

/// Reads and parses /proc/`pid`/stat; `None` when the process is gone.
pub fn read_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses /proc/PID/stat. `comm` may contain spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat(s: &str) -> Option<ProcStat> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = s.get(close + 2..)?.split(' ').collect();
    // rest[0] is field 3 (state).
    Some(ProcStat {
        comm,
        ppid: rest.get(1)?.parse().ok()?,
        session: rest.get(3)?.parse().ok()?,
        tty_nr: rest.get(4)?.parse::<i64>().ok()? as u32,
        cpu_ticks: rest.get(11)?.parse::<u64>().ok()?.saturating_add(rest.get(12)?.parse().ok()?),
        start_ticks: rest.get(19)?.parse().ok()?,
    })
}

/// Splits a NUL-separated argv block into strings (lossy UTF-8), ignoring the trailing NUL.
pub fn split_nul(b: &[u8]) -> Vec<String> {
    let b = b.strip_suffix(&[0]).unwrap_or(b);
    if b.is_empty() {
        return Vec::new();
    }
    b.split(|c| *c == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// Terminal name from a device number encoded as in /proc/PID/stat's `tty_nr`.
pub fn tty_name_from_nr(tty_nr: u32) -> Option<String> {
    if tty_nr == 0 {
        return None;
    }
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    tty_name(major, minor)
}

/// Terminal name from a device's major and minor numbers (`pts/N`, `ttyN`, `ttySN`, `console`).
pub fn tty_name(major: u32, minor: u32) -> Option<String> {
    match major {
        136..=143 => Some(format!("pts/{}", (major - 136) * 256 + minor)),
        4 if minor < 64 => Some(format!("tty{minor}")),
        4 => Some(format!("ttyS{}", minor - 64)),
        5 if minor == 1 => Some("console".into()),
        5 if minor == 0 => Some("tty".into()),
        0 => None,
        _ => Some(format!("{major}:{minor}")),
    }
}

/// A container id (64 hex digits) named in a cgroup path, as docker, containerd and podman write them.
pub fn container_id_from_cgroup(path: &str) -> Option<String> {
    path.split(['/', '-', '.', ':'])
        .find(|seg| seg.len() == 64 && seg.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
}

/// The `(name, uid)` entries of text in passwd(5) format (`name:x:uid:gid:...`), in file order; comment, empty
/// and malformed lines are skipped. Callers that map either way keep the first entry, as getpwnam/getpwuid do.
pub fn passwd_entries(text: &str) -> impl Iterator<Item = (&str, u32)> {
    text.lines().filter_map(|line| {
        let mut fields = line.split(':');
        let (name, uid) = (fields.next()?, fields.nth(1)?);
        if name.is_empty() || name.starts_with('#') {
            return None;
        }
        Some((name, uid.parse().ok()?))
    })
}

/// uid -> user name, from /etc/passwd, re-read at most every 10 s when a uid is unknown.
#[derive(Debug, Default)]
struct UserNames {
    names: HashMap<u32, String>,
    loaded_at: Option<Instant>,
}

impl UserNames {
    fn name(&mut self, uid: u32) -> Option<String> {
        if !self.names.contains_key(&uid) && self.loaded_at.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            self.loaded_at = Some(Instant::now());
            if let Ok(passwd) = fs::read_to_string("/etc/passwd") {
                self.names.clear();
                for (name, uid) in passwd_entries(&passwd) {
                    self.names.entry(uid).or_insert_with(|| name.to_owned());
                }
            }
        }
        self.names.get(&uid).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Backend, Mode, SourceKind};

    #[test]
    fn stat_with_spaces_and_parens_in_comm_parses() {
        let s = "1234 (a) b (c) S 1 1234 1234 34816 1234 4194560 1 2 3 4 5 6 7 8 20 0 1 0 98765 1000 10 18446744073709551615";
        let st = parse_stat(s).expect("parses");
        assert_eq!(st.comm, "a) b (c");
        assert_eq!(st.ppid, 1);
        assert_eq!(st.session, 1234);
        assert_eq!(st.tty_nr, 34816);
        assert_eq!(st.start_ticks, 98765);
        assert_eq!(st.cpu_ticks, 11, "utime 5 + stime 6");
        assert_eq!(tty_name_from_nr(34816).as_deref(), Some("pts/0"));
    }

    #[test]
    fn tty_names() {
        assert_eq!(tty_name(136, 3).as_deref(), Some("pts/3"));
        assert_eq!(tty_name(137, 1).as_deref(), Some("pts/257"));
        assert_eq!(tty_name(4, 1).as_deref(), Some("tty1"));
        assert_eq!(tty_name(4, 64).as_deref(), Some("ttyS0"));
        assert_eq!(tty_name(0, 0), None);
    }

    #[test]
    fn container_id_is_found_in_docker_and_systemd_paths() {
        let id = "a".repeat(64);
        assert_eq!(container_id_from_cgroup(&format!("/docker/{id}")), Some(id.clone()));
        assert_eq!(container_id_from_cgroup(&format!("/system.slice/docker-{id}.scope")), Some(id));
        assert_eq!(container_id_from_cgroup("/user.slice"), None);
    }

    #[test]
    fn passwd_entries_skip_junk_and_keep_order() {
        let text = "root:x:0:0:root:/root:/bin/bash\n#c:x:1:1\nbad\nalice:x:1000:1000::/h:/bin/sh\nx:x:nan:0\n";
        assert_eq!(passwd_entries(text).collect::<Vec<_>>(), vec![("root", 0), ("alice", 1000)]);
    }

    #[test]
    fn nul_split() {
        assert_eq!(split_nul(b"/bin/echo\0hi\0"), vec!["/bin/echo", "hi"]);
        assert_eq!(split_nul(b""), Vec::<String>::new());
    }

    fn ev(activity: Activity, pid: u32, ppid: u32, start: u64) -> Event {
        let mut e = Event::new(Domain::Process, activity, Backend { mode: Mode::Kernel, source: SourceKind::Ebpf });
        e.process.pid = pid;
        e.process.ppid = ppid;
        e.process.start_ticks = start;
        e.process.guid = process_guid(pid, start);
        e
    }

    #[test]
    fn fork_exec_build_ancestry_and_parent_guid() {
        let mut t = ProcessTable::empty();
        for e in [ev(Activity::Fork, 10, 1, 5), ev(Activity::Fork, 11, 10, 6), ev(Activity::Fork, 12, 11, 7)] {
            t.observe(&e);
        }
        let mut exec = ev(Activity::Exec, 12, 11, 7);
        exec.process.exe = "/bin/true".into();
        t.observe(&exec);
        t.enrich(&mut exec);
        assert_eq!(exec.process.parent_guid.as_deref(), Some(process_guid(11, 6).as_str()));
        assert_eq!(exec.process.ancestry, vec![process_guid(11, 6), process_guid(10, 5)]);
        assert_eq!(t.get(12).map(|p| p.exe.as_str()), Some("/bin/true"));
    }

    #[test]
    fn a_partial_exec_does_not_inherit_the_old_image() {
        let mut t = ProcessTable::empty();
        let mut fork = ev(Activity::Fork, 10, 1, 5);
        fork.process.exe = "/usr/bin/dash".into();
        t.observe(&fork);
        let mut exec = ev(Activity::Exec, 10, 1, 5);
        exec.process.guid.clear();
        exec.process.partial = true;
        t.enrich(&mut exec);
        assert_eq!(exec.process.guid, process_guid(10, 5), "identity still comes from the table");
        assert!(exec.process.exe.is_empty(), "the pre-exec image must not be reported as the new one");
    }

    #[test]
    fn a_reused_pid_does_not_inherit_the_old_guid() {
        let mut t = ProcessTable::empty();
        t.observe(&ev(Activity::Fork, 10, 1, 5));
        let mut later = ev(Activity::Exec, 10, 1, 900);
        later.process.exe = "/bin/new".into();
        t.enrich(&mut later);
        assert_eq!(later.process.guid, process_guid(10, 900));
    }

    #[test]
    fn seeded_table_knows_this_process() {
        let t = ProcessTable::from_proc();
        let me = t.get(std::process::id()).expect("own process is in /proc");
        assert!(!me.exe.is_empty());
        assert!(!me.guid.is_empty());
    }
}
