//! Network domain, kernel mode, monitor: TCP `connect` / `accept` / `listen` / `close` (with bytes and duration),
//! UDP `connect` and `send`, and `dns` queries and answers, each with the acting process; plus, when the policy
//! enforces (block, redirect, throttle), the [`NetworkEnforcer`] on its own thread.
//!
//! The BPF side is `src/bpf/network/monitor.bpf.c` (wire format in `monitor.h`):
//!
//! - `tp_btf/inet_sock_set_state` sees every TCP state change. Connects are reported once ESTABLISHED (or when a
//!   SYN_SENT socket closes: refused, unreachable, timed out), accepts when a listener's child is ESTABLISHED,
//!   `listen` at LISTEN, `close` when an established socket reaches CLOSE, with `bytes_out` = `tcp_sock.bytes_acked`,
//!   `bytes_in` = `tcp_sock.bytes_received` and the time since ESTABLISHED.
//! - cgroup `sock_create` / `sock_release`, `connect4/6`, `sendmsg4/6` and `cgroup_skb` ingress/egress, attached to
//!   [`NetworkEbpfConfig::cgroup`] (default: the cgroup2 root, i.e. every process).
//!
//! # Attribution
//!
//! Several TCP transitions run in softirq (ESTABLISHED on the SYN-ACK, the final CLOSE), where the current task is
//! whoever the CPU interrupted. So the owner is recorded in process context, keyed by socket cookie: at `socket()`
//! (`sock_create`), refreshed at `connect()` (CLOSE→SYN_SENT) and `listen()` (CLOSE→LISTEN), which run in the
//! caller. An accepted socket is created in softirq, so it is attributed to the process that listens on its port
//! (per network namespace). DNS packets are attributed through their socket's cookie the same way.
//!
//! # Cost
//!
//! About ten state changes per TCP connection run `mon_state`; the ones not reported leave on the first compare.
//! The `cgroup_skb` programs run for every packet and leave on the socket's ports unless one is 53 (only an
//! unconnected UDP socket needs the packet read). Records go out with batched wakeups. docs/network.md has the
//! measured costs (and why socket-local storage was not used: its allocation per socket costs more than the hash).
//!
//! # What it cannot see or tell
//!
//! - Sockets opened before the agent started: with the default root attach point, listeners are found in /proc at
//!   start ([`seed`]) so their accepts are attributed; other sockets are adopted by the task that next connects,
//!   listens or closes them (`close` then has no duration). An accept whose listener is still unknown (its process
//!   could not be read at start) is reported **unattributed** (no process, `process.partial`). Below the root,
//!   only sockets created inside the cgroup are reported.
//! - Several processes sharing a listening port (SO_REUSEPORT, pre-fork servers): `accept` names the one that
//!   listened last, not necessarily the one that called accept(2). A socket passed to another process keeps its
//!   creator until the receiver connects or listens with it.
//! - UDP: `send` only for sends that name a destination (sendto/sendmsg on an unconnected socket), once per socket
//!   and destination per `udp_repeat`; a connected UDP socket is one `connect`, its send(2)s are not counted. No
//!   UDP bytes, no UDP `close`. The source port of a UDP `connect` is 0 when the socket was not yet bound.
//! - A TCP connect that never got established is a `connect` with `network.error` (the socket's `sk_err`:
//!   `ECONNREFUSED`, `ETIMEDOUT`, `EHOSTUNREACH`...; `ECONNABORTED` when it was closed while connecting) and no
//!   byte counts, and no `close` follows.
//! - DNS: only the first 512 payload bytes of a packet, IPv4 and IPv6 without extension headers, port 53 only
//!   (DoT/DoH are just TLS connections); DNS over TCP only when the message starts a segment. A cut answer that
//!   no longer parses is counted as malformed. The IP→name cache keeps the last [`NetworkEbpfConfig::dns_names`]
//!   addresses; `dst_name` is the name the address was last resolved from by anyone on the host.
//!   With [`NetworkEbpfConfig::dns`] false the DNS programs are loaded but not attached: no `dns` events, no
//!   `dst_name`.
//! - `process.cgroup`, `exe` and `cmdline` are filled by the pipeline's process table, not by the kernel.
//! - The agent's own sockets (and its proxy's) are not reported. Records are lost only when the ring buffer is
//!   full; that is counted (per-CPU `drops`) and reported as `lost_upstream`.

mod decode;
pub mod dns;
mod seed;

use std::fs::File;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject};
use ringwatch_core::compiled::NetworkPlan;
use ringwatch_core::guid::BootInfo;
use ringwatch_core::{Activity, Domain, Event, Mode, Probe, Source, SourceContext, SourceError, SourceKind};

use super::enforce::{EnforceConfig, NetworkEnforcer};
use crate::libbpf_support::{
    RingMaps, attach_all, bpf_skeleton, clear_libbpf_warnings, has_bpf_privilege, install_libbpf_logging,
    leaked_object_slot, libbpf_error, load_error, missing_rodata, probe_by_loading, realtime_offset_ns, stream_ring,
};
use crate::probe;
use decode::Decoder;
use dns::NameCache;

bpf_skeleton!("monitor.skel.rs");

use skel::{MonitorSkel, MonitorSkelBuilder};

/// Backend name in logs, errors and loss counters.
pub const NAME: &str = "network/ebpf";

/// Kernel program names (bpftool shows them; tests check they are gone after shutdown).
pub const PROGRAM_NAMES: [&str; 9] = [
    "mon_state",
    "mon_sk_new",
    "mon_sk_free",
    "mon_connect4",
    "mon_connect6",
    "mon_sendmsg4",
    "mon_sendmsg6",
    "mon_dns_out",
    "mon_dns_in",
];

/// What the monitor watches and what it enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkEbpfConfig {
    /// Rules enforced in the kernel; when [`NetworkPlan::enforces`], the [`NetworkEnforcer`] starts too.
    pub plan: NetworkPlan,
    /// cgroup v2 directory the cgroup programs attach to (processes in it and below are monitored; the TCP
    /// tracepoint reports only their sockets). `None`: the cgroup2 root, every process.
    pub cgroup: Option<PathBuf>,
    /// A UDP socket's sends to one destination are reported again after this long.
    pub udp_repeat: Duration,
    /// Addresses kept in the IP→name cache (for `network.dst_name`).
    pub dns_names: usize,
    /// Whether to attach the DNS cgroup_skb pair. Without it no `dns` events and no `dst_name` are reported, but
    /// every packet of the monitored cgroup skips the cgroup_skb hook (~0.7-1.2 µs per loopback connection, see
    /// docs/network.md "Cost").
    pub dns: bool,
}

impl Default for NetworkEbpfConfig {
    fn default() -> Self {
        NetworkEbpfConfig {
            plan: NetworkPlan::default(),
            cgroup: None,
            udp_repeat: Duration::from_secs(60),
            dns_names: 4096,
            dns: true,
        }
    }
}

/// The kernel network monitor: loaded and attached by [`NetworkEbpf::start`], streaming from [`Source::run`].
pub struct NetworkEbpf {
    /// One link per program; dropping them detaches. Declared before `skel` so a dropped, never-run backend
    /// detaches before the object is closed.
    links: Vec<Link>,
    skel: MonitorSkel<'static>,
    /// Started when the plan enforces; runs on its own thread inside [`Source::run`].
    enforcer: Option<NetworkEnforcer>,
    realtime_offset_ns: i128,
    dns_names: usize,
}

impl std::fmt::Debug for NetworkEbpf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkEbpf").field("links", &self.links.len()).field("enforcer", &self.enforcer).finish()
    }
}

impl NetworkEbpf {
    /// Whether the monitor can run here: privilege, kernel BTF, a cgroup2 mount, the `sock/inet_sock_set_state`
    /// tracepoint, and an actual load of the BPF object (nothing attached; unloaded before returning).
    pub fn probe() -> Probe {
        let unavailable = |why: String| Probe::unavailable(Domain::Network, Mode::Kernel, SourceKind::Ebpf, why);
        if !has_bpf_privilege() {
            return unavailable("needs root with CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN (or CAP_SYS_ADMIN)".into());
        }
        if !probe::has_kernel_btf() {
            return unavailable(format!("no kernel BTF at {} (CO-RE and tp_btf need it)", probe::VMLINUX_BTF));
        }
        let Some(root) = probe::cgroup2_mount() else {
            return unavailable("no cgroup v2 mount (cgroup sock_addr and cgroup_skb programs need one)".into());
        };
        if probe::tracefs_mounted() && !probe::tracepoint_exists("sock", "inet_sock_set_state") {
            return unavailable("tracepoint sock/inet_sock_set_state not found in tracefs".into());
        }
        probe_by_loading(
            Domain::Network,
            format!(
                "eBPF tp_btf inet_sock_set_state, cgroup sock/connect/sendmsg and cgroup_skb DNS on {}",
                root.display()
            ),
            |storage| open_and_load(storage, &NetworkEbpfConfig::default(), true, None).map(drop),
        )
    }

    /// Loads the object, attaches the tracepoint and the cgroup programs to `cfg.cgroup`, and starts the
    /// enforcer when the plan enforces. Events are buffered in the kernel from here until [`Source::run`].
    pub fn start(cfg: &NetworkEbpfConfig) -> Result<Self, SourceError> {
        Self::start_with_ring(cfg, None)
    }

    fn start_with_ring(cfg: &NetworkEbpfConfig, ring_bytes: Option<u32>) -> Result<Self, SourceError> {
        install_libbpf_logging();
        if !probe::has_kernel_btf() {
            return Err(SourceError::Unsupported {
                backend: NAME,
                what: format!("no kernel BTF at {}", probe::VMLINUX_BTF),
            });
        }
        let root = probe::cgroup2_mount()
            .ok_or_else(|| SourceError::Unsupported { backend: NAME, what: "no cgroup v2 mount".into() })?;
        let cgroup = cfg.cgroup.clone().unwrap_or_else(|| root.clone());
        let at_root = same_dir(&cgroup, &root);
        let cgroup_dir = File::open(&cgroup).map_err(|e| SourceError::Failed {
            backend: NAME,
            step: "open cgroup".into(),
            message: format!("{}: {e}", cgroup.display()),
        })?;
        BootInfo::get();

        let skel = open_and_load(leaked_object_slot(), cfg, at_root, ring_bytes)?;
        if at_root {
            seed_listeners(&skel);
        }
        let mut links = Vec::with_capacity(PROGRAM_NAMES.len());
        let fd = cgroup_dir.as_raw_fd();
        let attach_cgroup = |prog: &libbpf_rs::ProgramMut<'_>| {
            prog.attach_cgroup(fd)
                .map_err(|e| libbpf_error(NAME, &format!("attach {}", prog.name().to_string_lossy()), &e))
        };
        let p = &skel.progs;
        // The owner map is filled by sock_create before the tracepoint looks at it.
        let dns_programs = [&p.mon_dns_out, &p.mon_dns_in];
        let dns_programs = if cfg.dns { dns_programs.as_slice() } else { &[] };
        for prog in [&p.mon_sk_new, &p.mon_sk_free, &p.mon_connect4, &p.mon_connect6, &p.mon_sendmsg4, &p.mon_sendmsg6]
            .into_iter()
            .chain(dns_programs.iter().copied())
        {
            links.push(attach_cgroup(prog)?);
        }
        links.extend(attach_all(NAME, [&p.mon_state])?);

        let enforcer = if cfg.plan.enforces() || cfg.plan.needs_proxy() {
            let enforce_cfg = EnforceConfig::for_cgroup(&cgroup);
            Some(NetworkEnforcer::start(&cfg.plan, &enforce_cfg)?)
        } else {
            None
        };
        tracing::debug!(backend = NAME, cgroup = %cgroup.display(), enforcing = enforcer.is_some(), "attached");
        Ok(NetworkEbpf {
            links,
            skel,
            enforcer,
            realtime_offset_ns: realtime_offset_ns(NAME)?,
            dns_names: cfg.dns_names,
        })
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.ino() == y.ino() && x.dev() == y.dev(),
        _ => false,
    }
}

/// Opens the skeleton, writes the agent's tgid and the filter into rodata, and loads it (no attach).
fn open_and_load<'a>(
    storage: &'a mut MaybeUninit<OpenObject>,
    cfg: &NetworkEbpfConfig,
    at_root: bool,
    ring_bytes: Option<u32>,
) -> Result<MonitorSkel<'a>, SourceError> {
    clear_libbpf_warnings();
    let mut open = MonitorSkelBuilder::default().open(storage).map_err(|e| libbpf_error(NAME, "open", &e))?;
    if let Some(bytes) = ring_bytes {
        open.maps.events.set_max_entries(bytes).map_err(|e| libbpf_error(NAME, "size events", &e))?;
    }
    let Some(rodata) = open.maps.rodata_data.as_deref_mut() else {
        return Err(missing_rodata(NAME, "agent_tgid"));
    };
    rodata.agent_tgid = std::process::id();
    rodata.report_unowned = u8::from(at_root);
    rodata.udp_repeat_ns = u64::try_from(cfg.udp_repeat.as_nanos()).unwrap_or(u64::MAX);
    open.load().map_err(|e| load_error(NAME, &e))
}

impl Source for NetworkEbpf {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let span = tracing::info_span!("source", domain = "network", mode = "kernel", source = "ebpf");
        let _guard = span.enter();
        let NetworkEbpf { links, skel, enforcer, realtime_offset_ns, dns_names } = *self;
        let enforcer_thread = match enforcer {
            Some(enforcer) => {
                let enforce_ctx = ctx.clone();
                let thread = std::thread::Builder::new()
                    .name("network-enforce".into())
                    .spawn(move || enforcer.run(enforce_ctx))
                    .map_err(|e| SourceError::Failed {
                        backend: NAME,
                        step: "spawn enforcer thread".into(),
                        message: e.to_string(),
                    })?;
                Some(thread)
            }
            None => None,
        };
        let monitored = monitor_loop(links, &skel, &ctx, Decoder { realtime_offset_ns }, dns_names);
        if monitored.is_err() {
            // The enforcer stops with the agent; make sure it does not outlive a failed monitor.
            ctx.shutdown.trigger();
        }
        let enforced = match enforcer_thread {
            Some(t) => t.join().unwrap_or_else(|_| {
                Err(SourceError::Failed { backend: NAME, step: "enforcer thread".into(), message: "panicked".into() })
            }),
            None => Ok(()),
        };
        drop(skel);
        tracing::debug!(backend = NAME, "detached");
        monitored.and(enforced)
    }
}

/// Polls the ring buffer until shutdown; detaches, drains and returns.
fn monitor_loop(
    links: Vec<Link>,
    skel: &MonitorSkel<'static>,
    ctx: &SourceContext,
    decoder: Decoder,
    dns_names: usize,
) -> Result<(), SourceError> {
    let mut names = NameCache::new(dns_names);
    let mut links = Some(links);
    stream_ring(
        NAME,
        RingMaps { events: &skel.maps.events, drops: &skel.maps.drops },
        ctx,
        |data| decoder.decode(data),
        || drop(links.take()),
        |batch, _stopping| {
            // The name cache is filled and read here, outside the ring-buffer callback.
            for mut ev in batch {
                annotate_names(&mut names, &mut ev);
                ctx.events.send(ev);
            }
        },
    )
}

/// DNS answers feed the IP→name cache; connection events get `dst_name` from it.
fn annotate_names(names: &mut NameCache, ev: &mut Event) {
    let Some(net) = ev.network.as_mut() else { return };
    if ev.activity == Activity::Dns {
        if let Some(dns) = &net.dns {
            for ip in dns.answers.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                names.insert(ip, &dns.query);
            }
        }
        return;
    }
    let remote = if net.direction.as_deref() == Some("inbound") { &net.src_ip } else { &net.dst_ip };
    if let Some(name) = remote.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()).and_then(|ip| names.get(&ip)) {
        net.dst_name = Some(name.to_owned());
    }
}

/// Fills `listen_owner` with the listeners that predate the agent (see [`seed`]); a failure only costs attribution.
fn seed_listeners(skel: &MonitorSkel<'_>) {
    let owners = seed::listen_owners();
    let mut failed = 0usize;
    for (key, owner) in &owners {
        // SAFETY: listen_key and sock_owner are #[repr(C)] integer structs generated from BTF (Plain); viewing
        // them as bytes reads initialised memory only.
        let (k, v) = unsafe { (plain::as_bytes(key), plain::as_bytes(owner)) };
        if skel.maps.listen_owner.update(k, v, MapFlags::NO_EXIST).is_err() {
            failed += 1;
        }
    }
    tracing::debug!(backend = NAME, listeners = owners.len(), failed, "seeded pre-existing listeners");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libbpf_support::drain_stopped;

    #[test]
    fn probe_reports_why_when_unprivileged_or_says_what_it_uses() {
        let p = NetworkEbpf::probe();
        assert_eq!((p.domain, p.mode, p.source), (Domain::Network, Mode::Kernel, SourceKind::Ebpf));
        if has_bpf_privilege() && probe::has_kernel_btf() && probe::cgroup2_mount().is_some() {
            assert!(p.available, "privileged with BTF and cgroup2 but unavailable: {}", p.detail);
        } else {
            assert!(!p.available && !p.detail.is_empty());
        }
    }

    #[test]
    fn ring_buffer_overflow_is_counted_as_lost_upstream() {
        if !NetworkEbpf::probe().available || !Path::new("/bin/bash").exists() {
            eprintln!("skipping: network/ebpf or bash unavailable here");
            return;
        }
        // 16 KiB holds about a hundred records; nobody reads it until the workload is done.
        let source = NetworkEbpf::start_with_ring(&NetworkEbpfConfig::default(), Some(16 * 1024)).expect("start");
        // bash connects a fresh UDP socket for every /dev/udp redirection: one UDP `connect` record each.
        let status = std::process::Command::new("/bin/bash")
            .args(["-c", "for i in $(seq 1000); do echo x 2>/dev/null > /dev/udp/127.0.0.1/9; done"])
            .status()
            .expect("spawn bash");
        assert!(status.success());
        let ((queue_full, lost, malformed), written) = drain_stopped(source, NAME);
        assert_eq!((queue_full, malformed), (0, 0));
        assert!(lost >= 800, "overflow counted as lost_upstream: {lost}");
        assert!(written > 0 && written < 200, "what fitted was delivered: {written}");
    }

    #[test]
    fn dns_answers_name_later_connections_in_either_direction() {
        use ringwatch_core::event::{DnsInfo, NetworkInfo};
        use ringwatch_core::{Backend, Event};
        let backend = Backend { mode: Mode::Kernel, source: SourceKind::Ebpf };
        let mut names = NameCache::new(8);
        let mut dns = Event::new(Domain::Network, Activity::Dns, backend);
        dns.network = Some(NetworkInfo {
            dns: Some(DnsInfo {
                query: "ringwatch.test".into(),
                answers: vec!["alias.test".into(), "10.77.0.9".into()],
            }),
            ..NetworkInfo::default()
        });
        annotate_names(&mut names, &mut dns);
        let mut connect = Event::new(Domain::Network, Activity::Connect, backend);
        connect.network = Some(NetworkInfo {
            dst_ip: Some("10.77.0.9".into()),
            direction: Some("outbound".into()),
            ..NetworkInfo::default()
        });
        annotate_names(&mut names, &mut connect);
        assert_eq!(connect.network.and_then(|n| n.dst_name).as_deref(), Some("ringwatch.test"));
        let mut other = Event::new(Domain::Network, Activity::Connect, backend);
        other.network = Some(NetworkInfo { dst_ip: Some("10.77.0.10".into()), ..NetworkInfo::default() });
        annotate_names(&mut names, &mut other);
        assert_eq!(other.network.and_then(|n| n.dst_name), None);
    }
}
