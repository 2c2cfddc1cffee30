//! `ringwatch bench store`: how fast the store ingests and how fast a hunt runs over what it ingested.
//!
//! N synthetic events (default 1,000,000) shaped like a busy host's (process/file/network/DNS mix, realistic
//! executables, paths, command lines and full process context, so the JSON is as long as the agent's) go through
//! the agent's own [`StoreSink`] in pipeline-sized batches of 1,024 into a temporary store. The events are made
//! before the clock starts; the rate is wall time from the first `write_batch` to the end of the final `flush`:
//! everything committed and checkpointed (copied from the WAL into the database file, both synced), so the work
//! the store leaves to its checkpoint thread is timed too. The CPU time per event of each thread, the time until
//! the sink is closed and the database file's size once closed are shown beside it. Then three hunts run on a read-only connection, the way `ringwatch query` runs them: a substring
//! match on `exe`, one through a view, and one that must scan every row. Targets (issue #7): ingest >= 200,000
//! events/s, hunt <= 1 s.

use std::collections::BTreeMap;
use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ringwatch_core::event::{DnsInfo, FileInfo, NetworkInfo};
use ringwatch_core::event_id::EventIds;
use ringwatch_core::sink::Sink;
use ringwatch_core::{Activity, Backend, Domain, Event, Mode, Process, SourceKind, Timestamp};
use ringwatch_store::{RowVisitor, Store, StoreOptions, StoreSink, Value};
use serde::Serialize;

use crate::bench::BenchArgs;

/// Events when `--events` is not given.
const DEFAULT_EVENTS: u64 = 1_000_000;
/// The pipeline's batch size (`core::pipeline::BATCH_MAX`).
const BATCH: usize = ringwatch_core::pipeline::BATCH_MAX;
/// Target ingest rate.
const TARGET_EVENTS_PER_SEC: f64 = 200_000.0;
/// Target hunt time.
const TARGET_QUERY_SECS: f64 = 1.0;
/// Each hunt runs this many times; the median is reported.
const QUERY_RUNS: usize = 3;

/// The hunts timed, by name. `exe` and `cmdline` are process context columns (see `ringwatch_store::schema`): the
/// first two hunts scan the narrow `(ctx, time_ns, kind)` index of the event rows and look up each row's context,
/// as nothing narrows them down; the third goes through the `processes` view, its kinds and the kind index.
const HUNTS: [(&str, &str); 3] = [
    ("hunt: exe LIKE '%curl%'", "SELECT count(*) FROM events WHERE exe LIKE '%curl%'"),
    ("hunt: full scan, cmdline LIKE", "SELECT count(*) FROM events WHERE cmdline LIKE '%--token=3e7%'"),
    (
        "hunt: view processes, cmdline",
        "SELECT count(*) FROM processes WHERE activity = 'exec' AND cmdline LIKE '%token=%'",
    ),
];

/// What the bench measured (also written as JSON with `--json`).
#[derive(Debug, Serialize)]
struct StoreBench {
    events: u64,
    batch: usize,
    /// First batch to the end of the final `flush` (everything committed and checkpointed).
    ingest_seconds: f64,
    events_per_sec: f64,
    /// First batch to the sink closed (its threads joined, the WAL removed).
    closed_seconds: f64,
    /// The database file after the sink closed.
    db_bytes: u64,
    bytes_per_event: f64,
    /// Database file and WAL at the final `flush`.
    bytes_at_flush: u64,
    /// CPU time per event of each thread that worked during the ingest (by thread name), microseconds.
    cpu_us_per_event: BTreeMap<String, f64>,
    hunts: Vec<HuntResult>,
    pass: bool,
}

#[derive(Debug, Serialize)]
struct HuntResult {
    name: String,
    sql: String,
    seconds: f64,
    rows_matched: i64,
}

/// Runs the store benchmark.
pub fn run(args: &BenchArgs) -> Result<()> {
    let events = args.events.unwrap_or(DEFAULT_EVENTS);
    let dir = std::env::temp_dir().join(format!("ringwatch-bench-store-{}", std::process::id()));
    let result = bench_in(&dir, events);
    let _ = fs::remove_dir_all(&dir);
    let bench = result?;
    print_table(&bench);
    if let Some(path) = &args.json {
        fs::write(path, serde_json::to_vec_pretty(&bench)?).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn bench_in(dir: &Path, events: u64) -> Result<StoreBench> {
    let path: PathBuf = dir.join("events.db");
    // The bench waits for the writer instead of letting the agent's short wait refuse batches: every event counts.
    let mut sink = StoreSink::open(&path, &StoreOptions::default())?.with_full_queue_wait(Duration::from_secs(60));
    // Made up front so that only the store's work is timed (the pipeline hands the sink ready events too).
    let mut synthetic = Synthetic::new();
    let mut batches = Vec::new();
    let mut made = 0u64;
    while made < events {
        let n = (events - made).min(BATCH as u64) as usize;
        let mut batch = Vec::with_capacity(n);
        synthetic.fill(&mut batch, n);
        batches.push(batch);
        made += n as u64;
    }
    let progress = std::io::stderr().is_terminal();
    let cpu_before = thread_cpu();
    let started = Instant::now();
    for (i, batch) in batches.iter().enumerate() {
        sink.write_batch(batch).context("ingesting a batch")?;
        if progress && i % 100 == 99 {
            eprint!("\ringested {}/{events}", (i + 1) * BATCH);
        }
    }
    sink.flush().context("committing the last group")?;
    let ingest = started.elapsed();
    let cpu_us_per_event = cpu_per_event(&cpu_before, &thread_cpu(), events);
    let stored = sink.stats().inserted.load(std::sync::atomic::Ordering::Relaxed);
    let bytes_at_flush = sink.stats().size_bytes.load(std::sync::atomic::Ordering::Relaxed);
    drop(sink);
    let closed = started.elapsed();
    drop(batches);
    if progress {
        eprintln!();
    }
    anyhow::ensure!(stored == events, "only {stored} of {events} events were stored");
    let db_bytes = files_size(&path);
    let store = Store::open_read_only(&path)?;
    let hunts = HUNTS.iter().map(|(name, sql)| time_hunt(&store, name, sql)).collect::<Result<Vec<_>>>()?;
    let events_per_sec = events as f64 / ingest.as_secs_f64().max(1e-9);
    let pass = events_per_sec >= TARGET_EVENTS_PER_SEC && hunts.iter().all(|h| h.seconds <= TARGET_QUERY_SECS);
    Ok(StoreBench {
        events,
        batch: BATCH,
        ingest_seconds: ingest.as_secs_f64(),
        events_per_sec,
        closed_seconds: closed.as_secs_f64(),
        db_bytes,
        bytes_per_event: db_bytes as f64 / events.max(1) as f64,
        bytes_at_flush,
        cpu_us_per_event,
        hunts,
        pass,
    })
}

/// Bytes of the database file and, if it is still there, its WAL.
fn files_size(path: &Path) -> u64 {
    let len = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    len(path) + len(&path.with_extension("db-wal"))
}

/// CPU seconds (user + system) of each thread of this process, by thread name.
fn thread_cpu() -> BTreeMap<String, f64> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = fs::read_dir("/proc/self/task") else { return by_name };
    for task in tasks.flatten() {
        let Ok(stat) = fs::read_to_string(task.path().join("stat")) else { continue };
        // "tid (comm) state ppid ...": utime and stime are fields 14 and 15, the 12th and 13th after the comm.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
        *by_name.entry(stat[open + 1..close].to_owned()).or_insert(0.0) += (ticks(11) + ticks(12)) / CLOCK_TICKS;
    }
    by_name
}

/// Clock ticks per second of `/proc/*/stat` times (USER_HZ, 100 on Linux).
const CLOCK_TICKS: f64 = 100.0;

/// CPU microseconds per event each thread spent between two [`thread_cpu`] readings (threads that did not work
/// are left out).
fn cpu_per_event(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, events: u64) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(name, &t)| (name.clone(), (t - before.get(name).copied().unwrap_or(0.0)) * 1e6 / events.max(1) as f64))
        .filter(|(_, us)| *us > 0.0)
        .collect()
}

/// Runs a `SELECT count(*)` hunt [`QUERY_RUNS`] times; reports the median.
fn time_hunt(store: &Store, name: &str, sql: &str) -> Result<HuntResult> {
    let mut times = Vec::with_capacity(QUERY_RUNS);
    let mut matched = 0;
    for _ in 0..QUERY_RUNS {
        let mut count = CountResult::default();
        let started = Instant::now();
        store.query(sql, &mut count)?;
        times.push(started.elapsed().as_secs_f64());
        matched = count.0;
    }
    times.sort_by(f64::total_cmp);
    Ok(HuntResult {
        name: name.to_owned(),
        sql: sql.to_owned(),
        seconds: times[times.len() / 2],
        rows_matched: matched,
    })
}

/// Keeps the single integer a `count(*)` returns.
#[derive(Default)]
struct CountResult(i64);

impl RowVisitor for CountResult {
    fn columns(&mut self, _: &[String]) -> std::io::Result<()> {
        Ok(())
    }
    fn row(&mut self, values: &[Value]) -> std::io::Result<()> {
        if let Some(Value::Integer(n)) = values.first() {
            self.0 = *n;
        }
        Ok(())
    }
}

fn print_table(b: &StoreBench) {
    let verdict = |ok: bool| if ok { "pass" } else { "FAIL" };
    println!(
        "store bench: {} events in batches of {}, {:.1} MB on disk ({:.0} bytes/event)",
        b.events,
        b.batch,
        b.db_bytes as f64 / 1e6,
        b.bytes_per_event
    );
    println!("{:<34} {:>14} {:>16} {:>6}", "measure", "result", "target", "");
    println!(
        "{:<34} {:>10.0} ev/s {:>11} ev/s {:>6}",
        "ingest (StoreSink, batched)",
        b.events_per_sec,
        ">= 200000",
        verdict(b.events_per_sec >= TARGET_EVENTS_PER_SEC)
    );
    println!(
        "{:<34} {:.2} s to the final flush, {:.2} s to closed; {:.1} MB with the WAL at flush",
        "  time",
        b.ingest_seconds,
        b.closed_seconds,
        b.bytes_at_flush as f64 / 1e6
    );
    let cpu: Vec<String> = b.cpu_us_per_event.iter().map(|(name, us)| format!("{name} {us:.2}")).collect();
    println!("{:<34} {} (us/event)", "cpu by thread during ingest", cpu.join(", "));
    for h in &b.hunts {
        println!(
            "{:<34} {:>12.3} s {:>14} s {:>6}   ({} rows matched)",
            h.name,
            h.seconds,
            "<= 1.0",
            verdict(h.seconds <= TARGET_QUERY_SECS),
            h.rows_matched
        );
    }
}

/// Makes events that look like a busy host's, deterministically: a pool of live processes where a few hot ones
/// (shells, servers, builds) emit most events, processes that come and go (fork, exec, exit) with start times and
/// guids that grow like real ones, each process touching its own working set of files plus shared system files,
/// and connections to a pool of destinations. Uniformly random pids and paths would be easier to make but are not
/// what a host produces, and they would measure a different (index-thrashing) workload.
struct Synthetic {
    ids: EventIds,
    rng: u64,
    seq: u64,
    start: u64,
    /// Start time of the next new process, clock ticks since boot (grows like the kernel's).
    ticks: u64,
    next_pid: u32,
    live: Vec<Process>,
}

/// Live processes at any time.
const LIVE_PROCESSES: usize = 256;
/// The first HOT_PROCESSES of the pool emit most events.
const HOT_PROCESSES: usize = 16;
/// Distinct shared files (libraries, configs, logs); most opens hit the first [`HOT_FILES`] of them.
const SHARED_FILES: u64 = 20_000;
/// Shared files most opens go to (ld.so.cache, libc, /etc/passwd, /proc/self/...).
const HOT_FILES: u64 = 256;
/// Distinct network destinations.
const DESTINATIONS: u64 = 1_000;

const EXES: [&str; 16] = [
    "/usr/bin/bash",
    "/usr/bin/curl",
    "/usr/bin/python3.11",
    "/usr/sbin/sshd",
    "/usr/bin/git",
    "/usr/bin/ls",
    "/usr/bin/cat",
    "/usr/bin/grep",
    "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
    "/usr/sbin/nginx",
    "/usr/bin/node",
    "/usr/bin/make",
    "/usr/bin/gcc-12",
    "/usr/bin/ssh",
    "/usr/bin/wget",
    "/opt/app/bin/worker",
];

const DIRS: [&str; 8] = [
    "/etc",
    "/home/alice/src/project",
    "/tmp",
    "/var/log",
    "/usr/lib/x86_64-linux-gnu",
    "/proc/self",
    "/srv/www",
    "/root",
];

const USERS: [&str; 4] = ["root", "alice", "bob", "www-data"];

impl Synthetic {
    fn new() -> Self {
        let mut s = Synthetic {
            ids: EventIds::new(),
            rng: 0x9e37_79b9_7f4a_7c15,
            seq: 0,
            start: Timestamp::now().0,
            ticks: 5_000_000,
            next_pid: 2000,
            live: Vec::with_capacity(LIVE_PROCESSES),
        };
        for _ in 0..LIVE_PROCESSES {
            let parent = s.live.first().map(|p| (p.pid, p.guid.clone()));
            let p = s.new_process(parent);
            s.live.push(p);
        }
        s
    }

    fn next(&mut self) -> u64 {
        // xorshift64*: fast, deterministic, good enough to vary names.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }

    fn fill(&mut self, batch: &mut Vec<Event>, n: usize) {
        batch.clear();
        for _ in 0..n {
            let ev = self.event();
            batch.push(ev);
        }
    }

    /// A pool slot: 80 % of events come from the hot processes.
    fn slot(&mut self) -> usize {
        let r = self.next();
        if r % 100 < 80 {
            (r >> 8) as usize % HOT_PROCESSES
        } else {
            HOT_PROCESSES + (r >> 8) as usize % (LIVE_PROCESSES - HOT_PROCESSES)
        }
    }

    fn event(&mut self) -> Event {
        let roll = self.next() % 100;
        let slot = self.slot();
        let (domain, activity, source) = match roll {
            0..40 => (
                Domain::File,
                [Activity::Open, Activity::Create, Activity::Write][(roll % 3) as usize],
                SourceKind::Fanotify,
            ),
            40..70 => (
                Domain::Process,
                [Activity::Fork, Activity::Exec, Activity::Exit][(roll % 3) as usize],
                SourceKind::Ebpf,
            ),
            70..95 => (Domain::Network, Activity::Connect, SourceKind::Ebpf),
            _ => (Domain::Network, Activity::Dns, SourceKind::Ebpf),
        };
        let mut ev = Event::new(domain, activity, Backend { mode: Mode::Kernel, source });
        self.ids.assign(&mut ev.id);
        ev.time = Timestamp(self.start + self.seq * 1000);
        self.seq += 1;
        ev.host = "bench-host".into();
        ev.process = self.process_for(slot, activity);
        match domain {
            Domain::File => ev.file = Some(self.file(slot)),
            Domain::Network => ev.network = Some(self.network(activity == Activity::Dns)),
            _ => {}
        }
        ev
    }

    /// The process an event is about; a fork replaces a cold slot with a new child of the slot's process, an exit
    /// reports the slot's process and replaces it with a fresh one.
    fn process_for(&mut self, slot: usize, activity: Activity) -> Process {
        match activity {
            Activity::Fork => {
                let parent = Some((self.live[slot].pid, self.live[slot].guid.clone()));
                let child = self.new_process(parent);
                let cold = HOT_PROCESSES + self.next() as usize % (LIVE_PROCESSES - HOT_PROCESSES);
                self.live[cold] = child.clone();
                child
            }
            Activity::Exit if slot >= HOT_PROCESSES => {
                let mut gone = self.live[slot].clone();
                gone.exit_code = Some(0);
                let parent = Some((gone.ppid, gone.parent_guid.clone().unwrap_or_default()));
                self.live[slot] = self.new_process(parent);
                gone
            }
            _ => self.live[slot].clone(),
        }
    }

    fn new_process(&mut self, parent: Option<(u32, String)>) -> Process {
        let pid = self.next_pid;
        self.next_pid = if self.next_pid >= 4_000_000 { 2000 } else { self.next_pid + 1 };
        self.ticks += 1 + self.next() % 3;
        let exe = self.pick(&EXES).to_owned();
        let user = self.pick(&USERS);
        let token = self.next() % 1000;
        let (ppid, parent_guid) = parent.unwrap_or((1, "5f3a9c1e-1-1".into()));
        Process {
            guid: format!("5f3a9c1e-{:x}-{pid}", self.ticks),
            pid,
            tid: pid,
            ppid,
            ancestry: vec![parent_guid.clone(), "5f3a9c1e-1-1".into()],
            parent_guid: Some(parent_guid),
            cmdline: vec![
                exe.clone(),
                "--config".into(),
                format!("/etc/app/{token}.conf"),
                format!("--token={token:x}"),
                "--verbose".into(),
            ],
            exe,
            comm: "worker".into(),
            cwd: Some(format!("/home/{user}")),
            uid: 1000,
            user: Some(user.to_owned()),
            gid: 1000,
            euid: 1000,
            session_id: ppid,
            tty: Some("pts/1".into()),
            cgroup: Some("/user.slice/user-1000.slice/session-3.scope".into()),
            start_time: Timestamp(self.start - 3_600_000_000_000 + self.ticks * 10_000_000),
            ..Process::default()
        }
    }

    /// Half the time a file of the process's own working set, otherwise a shared one (90 % of those hot).
    fn file(&mut self, slot: usize) -> FileInfo {
        let r = self.next();
        let path = if r.is_multiple_of(2) {
            format!(
                "/home/{}/work-{}/file-{}.dat",
                self.live[slot].user.as_deref().unwrap_or("x"),
                self.live[slot].pid,
                (r >> 8) % 100
            )
        } else {
            let dir = DIRS[(r >> 8) as usize % DIRS.len()];
            let n = if (r >> 12) % 10 < 9 { (r >> 16) % HOT_FILES } else { (r >> 16) % SHARED_FILES };
            format!("{dir}/shared-{n}.so")
        };
        FileInfo {
            path,
            flags: Some(0o100),
            mode: Some(0o644),
            inode: Some(r % 100_000),
            dev: Some(2049),
            ..FileInfo::default()
        }
    }

    fn network(&mut self, dns: bool) -> NetworkInfo {
        let r = self.next();
        let d = r % DESTINATIONS;
        let port = [443u16, 80, 22, 8080][(d % 4) as usize];
        NetworkInfo {
            protocol: if dns { "udp" } else { "tcp" }.into(),
            src_ip: Some("192.168.1.10".into()),
            src_port: Some(32768 + (r >> 20) as u16 % 20000),
            dst_ip: Some(if dns { "127.0.0.53".into() } else { format!("10.{}.{}.{}", d % 7, d % 256, (d * 7) % 256) }),
            dst_port: Some(if dns { 53 } else { port }),
            direction: Some("outbound".into()),
            dns: dns.then(|| DnsInfo { query: format!("host{}.example.com", d), answers: Vec::new() }),
            ..NetworkInfo::default()
        }
    }
}
