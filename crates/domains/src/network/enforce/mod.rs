//! Network domain, kernel mode, management (issue #5): block, redirect to the local proxy, throttle.
//!
//! [`NetworkEnforcer::start`] compiles a [`NetworkPlan`] into the maps of `src/bpf/network/enforce.bpf.c`
//! (`rules.rs`), loads it and attaches, with BPF links (which coexist like `BPF_F_ALLOW_MULTI` with the monitor's
//! programs on the same cgroup), `connect4/6` and `sendmsg4/6` (rule evaluation: block with EPERM, rewrite to
//! the proxy, tag for throttling) and `sockops` (hands a redirected connection's original destination to the
//! proxy under the client's local port) on the configured cgroup; starts the shared [`proxy`](super::proxy::shared)
//! when a rule redirects and the HTB classes plus the tc classifier (`throttle.rs`) when one throttles.
//! [`NetworkEnforcer::run`] turns the kernel's records of enforced acts into `blocked` and `throttled` events
//! until shutdown, then detaches everything and removes the qdiscs it added. A redirect writes no record: the
//! proxy reports each redirected connection once (`connect` with action `redirected`, the client's pid and the
//! rule taken from the kernel's hand-over record, `original_dst`, Host/SNI), so it is never counted twice.
//!
//! # What it cannot do
//!
//! - Only sockets of processes in the cgroup subtree it is attached to; only connects and unconnected UDP sends
//!   (a connected UDP socket is judged at its connect). Raw and packet sockets are not seen.
//! - Rules are evaluated when a connection starts: a rule change does not affect established connections, and
//!   a connection that existed before start is never blocked, redirected or throttled.
//! - Redirect: TCP only; the client must be in the proxy's network namespace (see the proxy's docs).
//! - Throttle: egress only, a rule's rate is shared by its sockets (one HTB class per rule and interface).
//! - `exe` conditions compare inodes resolved at start: a binary replaced by a new file (package upgrade) no
//!   longer matches until the next start; a missing one is reported and never matches.
//! - More than 64 rules plus `not` blocks, UDP redirect, and missing cgroups are refused at start, naming the
//!   rule.

mod rules;
mod throttle;

use std::fs::File;
use std::mem::{MaybeUninit, offset_of, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::Arc;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, MapHandle, OpenObject};
use ringwatch_core::compiled::NetworkPlan;
use ringwatch_core::event::NetworkInfo;
#[cfg(test)]
use ringwatch_core::event::Timestamp;
use ringwatch_core::{
    Action, Activity, Backend, Domain, Event, Mode, Probe, Source, SourceContext, SourceError, SourceKind,
};

use self::rules::{CompiledRules, RULES_MAX};
use self::throttle::Throttle;
use super::proxy::{self, OriginalDst, OriginalDstLookup, PROXY_MARK, Proxy, ProxyConfig};
use crate::kernel_ids::{CgroupPaths, cstr};
use crate::libbpf_support::{
    RingMaps, bpf_skeleton, clear_libbpf_warnings, has_bpf_privilege, install_libbpf_logging, leaked_object_slot,
    libbpf_error, load_error, missing_rodata, probe_by_loading, realtime_offset_ns, stream_ring, wall_time,
};
use crate::probe;

bpf_skeleton!("enforce.skel.rs");

use skel::{EnforceSkel, EnforceSkelBuilder, types};

/// Backend name in logs, errors and loss counters.
const NAME: &str = "network/enforce";

// Mirrors of enforce.h constants (#defines do not reach BTF).
const KIND_NET_ENFORCE: u16 = 40;
const ACT_CONNECT: u8 = 1;
const ACT_SEND: u8 = 2;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

// SAFETY: rw_hdr is a #[repr(C)] struct of integers generated from BTF; every bit pattern is a valid value.
unsafe impl plain::Plain for types::rw_hdr {}
// SAFETY: net_enforce_event is #[repr(C)] of integers, integer arrays and rw_hdr; every bit pattern is valid.
unsafe impl plain::Plain for types::net_enforce_event {}
// SAFETY: net_orig_dst is #[repr(C)] of integers and integer arrays; every bit pattern is valid.
unsafe impl plain::Plain for types::net_orig_dst {}

// The same pins as the _Static_asserts in enforce.h / common.h.
const _: () = assert!(size_of::<types::rw_hdr>() == 16 && offset_of!(types::rw_hdr, kind) == 12);
const _: () =
    assert!(size_of::<types::net_enforce_event>() == 88 && offset_of!(types::net_enforce_event, cookie) == 16);
const _: () = assert!(offset_of!(types::net_enforce_event, dst_addr) == 32);
const _: () =
    assert!(offset_of!(types::net_enforce_event, pid) == 48 && offset_of!(types::net_enforce_event, rule) == 60);
const _: () = assert!(offset_of!(types::net_enforce_event, dst_port) == 64);
const _: () = assert!(offset_of!(types::net_enforce_event, activity) == 69);
const _: () = assert!(offset_of!(types::net_enforce_event, comm) == 72);
const _: () = assert!(size_of::<types::net_orig_dst>() == 32 && offset_of!(types::net_orig_dst, port) == 24);
const _: () = assert!(offset_of!(types::net_orig_dst, family) == 26 && offset_of!(types::net_orig_dst, pid) == 20);
const _: () = assert!(size_of::<types::net_inode_key>() == 16 && offset_of!(types::net_inode_key, dev) == 8);
const _: () = assert!(size_of::<types::net_dst4_key>() == 8 && size_of::<types::net_dst6_key>() == 20);
const _: () = assert!(size_of::<types::net_rule>() == 16);

/// Where the enforcer attaches and what it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnforceConfig {
    /// cgroup v2 directory the `sock_addr` and `sockops` programs attach to; processes in it and below are
    /// enforced. Default: the cgroup2 root (every process).
    pub cgroup: PathBuf,
    /// The proxy redirected connections reach (started only when a rule redirects; shared with user mode, so
    /// the first starter's settings win).
    pub proxy: ProxyConfig,
    /// Interfaces that get the throttle classifier and HTB classes; empty: every interface that is up (those
    /// whose root qdisc someone configured are skipped with a warning). They are looked up in the network
    /// namespace of the thread that calls [`NetworkEnforcer::start`].
    pub throttle_interfaces: Vec<String>,
}

impl EnforceConfig {
    /// Enforce on processes in `cgroup` (a cgroup v2 directory) and below, with default proxy settings.
    pub fn for_cgroup(cgroup: impl Into<PathBuf>) -> Self {
        EnforceConfig { cgroup: cgroup.into(), proxy: ProxyConfig::default(), throttle_interfaces: Vec::new() }
    }
}

impl Default for EnforceConfig {
    fn default() -> Self {
        EnforceConfig::for_cgroup(probe::cgroup2_mount().unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup")))
    }
}

/// The started enforcer: programs attached, maps filled, proxy and throttle classes set up. Dropping it without
/// [`NetworkEnforcer::run`] detaches and cleans up as well.
pub struct NetworkEnforcer {
    /// Removed first on drop: the classifier program must still exist while its filter is detached.
    throttle: Option<Throttle>,
    /// One link per program; dropping them detaches.
    links: Vec<Link>,
    proxy: Option<Arc<Proxy>>,
    skel: Option<EnforceSkel<'static>>,
    rule_ids: Vec<String>,
    warnings: Vec<String>,
    realtime_offset_ns: i128,
}

impl std::fmt::Debug for NetworkEnforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkEnforcer")
            .field("links", &self.links.len())
            .field("rules", &self.rule_ids)
            .field("proxy", &self.proxy)
            .field("throttle", &self.throttle)
            .finish()
    }
}

impl NetworkEnforcer {
    /// Whether enforcement can run here: privilege, a cgroup2 mount, and an actual load of the BPF object (which
    /// proves the program types and helpers). Nothing is attached.
    pub fn probe() -> Probe {
        let unavailable = |why: String| Probe::unavailable(Domain::Network, Mode::Kernel, SourceKind::Ebpf, why);
        if !has_bpf_privilege() {
            return unavailable("needs root with CAP_BPF + CAP_NET_ADMIN (or CAP_SYS_ADMIN)".into());
        }
        if probe::cgroup2_mount().is_none() {
            return unavailable("no cgroup v2 mount (cgroup sock_addr programs need one)".into());
        }
        probe_by_loading(
            Domain::Network,
            "cgroup connect4/6 + sendmsg4/6 (block, redirect), sockops, tc + HTB (throttle)",
            |storage| open_and_load(storage, &CompiledRules::default(), None).map(drop),
        )
    }

    /// Compiles `plan` into the BPF maps, loads and attaches the programs on `cfg.cgroup`, starts the proxy when
    /// a rule redirects and sets up throttling when one throttles. A rule the kernel cannot evaluate is refused
    /// with an error naming it; a plan that enforces nothing still attaches (observe/alert rules are cheap).
    pub fn start(plan: &NetworkPlan, cfg: &EnforceConfig) -> Result<NetworkEnforcer, SourceError> {
        install_libbpf_logging();
        if !has_bpf_privilege() {
            return Err(SourceError::MissingPrivilege {
                backend: NAME,
                what: "loading cgroup BPF programs needs CAP_BPF + CAP_NET_ADMIN (or CAP_SYS_ADMIN)".into(),
            });
        }
        let cgroup_root = probe::cgroup2_mount()
            .ok_or_else(|| SourceError::Unsupported { backend: NAME, what: "no cgroup v2 mount".into() })?;
        let compiled = CompiledRules::compile(plan, &cgroup_root).map_err(|e| {
            if e.unsupported {
                SourceError::Unsupported { backend: NAME, what: e.to_string() }
            } else {
                SourceError::Failed { backend: NAME, step: "compile rules".into(), message: e.to_string() }
            }
        })?;
        let cgroup = File::open(&cfg.cgroup).map_err(|e| SourceError::Failed {
            backend: NAME,
            step: format!("open cgroup {}", cfg.cgroup.display()),
            message: e.to_string(),
        })?;

        let proxy = if plan.needs_proxy() {
            let proxy = proxy::shared(&cfg.proxy)?;
            if !proxy.kernel_addr().is_ipv4() {
                return Err(SourceError::Unsupported {
                    backend: NAME,
                    what: format!(
                        "kernel redirect needs the proxy on an IPv4 address (IPv6 sockets reach it IPv4-mapped); it \
                         listens on {}",
                        proxy.kernel_addr()
                    ),
                });
            }
            proxy.set_host_rules(&plan.host_rules)?;
            Some(proxy)
        } else {
            None
        };

        let skel = open_and_load(leaked_object_slot(), &compiled, proxy.as_ref().map(|p| p.kernel_addr()))?;
        fill_maps(&skel, &compiled)?;

        let mut enforcer = NetworkEnforcer {
            throttle: None,
            links: Vec::with_capacity(5),
            proxy,
            skel: None,
            rule_ids: compiled.rule_ids.clone(),
            warnings: compiled.warnings.clone(),
            realtime_offset_ns: realtime_offset_ns(NAME)?,
        };
        let progs = [
            &skel.progs.handle_enf_sockops,
            &skel.progs.handle_enf_conn4,
            &skel.progs.handle_enf_conn6,
            &skel.progs.handle_enf_send4,
            &skel.progs.handle_enf_send6,
        ];
        for prog in progs {
            let name = prog.name().to_string_lossy().into_owned();
            let link = prog
                .attach_cgroup(cgroup.as_raw_fd())
                .map_err(|e| libbpf_error(NAME, &format!("attach {name} to {}", cfg.cgroup.display()), &e))?;
            enforcer.links.push(link);
        }
        if !compiled.throttles.is_empty() {
            let (throttle, warnings) =
                Throttle::setup(&cfg.throttle_interfaces, &compiled.throttles, skel.progs.handle_enf_egress.as_fd())?;
            enforcer.warnings.extend(warnings);
            enforcer.throttle = Some(throttle);
        }
        if let Some(proxy) = &enforcer.proxy {
            let map = MapHandle::try_from(&skel.maps.redirect_by_port)
                .map_err(|e| libbpf_error(NAME, "share redirect_by_port with the proxy", &e))?;
            proxy.set_kernel_lookup(Some(Arc::new(PortLookup { map, rule_ids: compiled.rule_ids.clone() })));
        }
        for w in &enforcer.warnings {
            tracing::warn!(backend = NAME, "{w}");
        }
        tracing::info!(
            backend = NAME,
            cgroup = %cfg.cgroup.display(),
            maps = ?rules::summary(&compiled),
            throttle = ?enforcer.throttle.as_ref().map(|t| t.interfaces()),
            proxy = ?enforcer.proxy.as_ref().map(|p| p.kernel_addr()),
            "attached"
        );
        enforcer.skel = Some(skel);
        Ok(enforcer)
    }

    /// The proxy redirected connections reach, when a rule redirects.
    pub fn proxy(&self) -> Option<&Arc<Proxy>> {
        self.proxy.as_ref()
    }

    /// Interfaces throttling was set up on.
    pub fn throttle_interfaces(&self) -> Vec<String> {
        self.throttle.as_ref().map(|t| t.interfaces().into_iter().map(str::to_owned).collect()).unwrap_or_default()
    }

    /// Emits an event per enforced act until `ctx.shutdown` (and the proxy's events, when it runs), then detaches
    /// everything it attached and removes the qdiscs it added.
    pub fn run(mut self, ctx: SourceContext) -> Result<(), SourceError> {
        let span = tracing::info_span!("source", domain = "network", mode = "kernel", source = "ebpf_enforce");
        let _guard = span.enter();
        for w in std::mem::take(&mut self.warnings) {
            ctx.events.send(Event::sensor(Activity::Error, NAME, w, None));
        }
        if let Some(proxy) = &self.proxy {
            proxy.set_events(ctx.events.clone());
        }
        let Some(skel) = self.skel.take() else { return Ok(()) };
        let decoder = Decoder { rule_ids: self.rule_ids.clone(), realtime_offset_ns: self.realtime_offset_ns };
        let mut cgroups = CgroupPaths::new();
        stream_ring(
            NAME,
            RingMaps { events: &skel.maps.events, drops: &skel.maps.drops },
            &ctx,
            |data| decoder.decode(data),
            || self.detach(),
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

    /// Removes the qdiscs, detaches the programs and unhooks the proxy's kernel lookup (the proxy itself stops
    /// when its last user drops it).
    fn detach(&mut self) {
        drop(self.throttle.take());
        self.links.clear();
        if let Some(proxy) = self.proxy.take() {
            proxy.set_kernel_lookup(None);
        }
    }
}

impl Drop for NetworkEnforcer {
    fn drop(&mut self) {
        self.detach();
    }
}

impl Source for NetworkEnforcer {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        NetworkEnforcer::run(*self, ctx)
    }
}

/// Opens the skeleton, writes the compiled rules and the proxy's address into rodata and loads it.
fn open_and_load<'obj>(
    storage: &'obj mut MaybeUninit<OpenObject>,
    c: &CompiledRules,
    proxy: Option<SocketAddr>,
) -> Result<EnforceSkel<'obj>, SourceError> {
    clear_libbpf_warnings();
    let mut open = EnforceSkelBuilder::default().open(storage).map_err(|e| libbpf_error(NAME, "open", &e))?;
    let Some(ro) = open.maps.rodata_data.as_deref_mut() else {
        return Err(missing_rodata(NAME, "rules"));
    };
    debug_assert!(c.rules.len() <= RULES_MAX, "CompiledRules::compile bounds the rule count");
    ro.rule_count = c.rules.len().min(RULES_MAX) as u32;
    for (slot, r) in ro.rules.iter_mut().zip(&c.rules) {
        *slot = types::net_rule { slot: r.slot, not_slot: r.not_slot, action: r.action, class_minor: r.class_minor };
    }
    ro.dst_any = c.dst_any;
    ro.port_any = c.port_any;
    ro.uid_any = c.uid_any;
    ro.cgroup_any = c.cgroup_any;
    ro.exe_any = c.exe_any;
    ro.tcp_slots = c.tcp_slots;
    ro.udp_slots = c.udp_slots;
    ro.cgroup_levels = c.cgroup_levels;
    ro.use_dst = u8::from(!c.dst4.is_empty() || !c.dst6.is_empty());
    ro.use_port = u8::from(!c.ports.is_empty());
    ro.use_uid = u8::from(!c.uids.is_empty());
    ro.use_exe = u8::from(c.uses_exe);
    if let Some(SocketAddr::V4(p)) = proxy {
        ro.proxy_ip4 = u32::from_ne_bytes(p.ip().octets());
        ro.proxy_port = p.port();
    }
    ro.proxy_mark = PROXY_MARK;
    open.load().map_err(|e| load_error(NAME, &e))
}

/// Writes the condition maps.
fn fill_maps(skel: &EnforceSkel<'_>, c: &CompiledRules) -> Result<(), SourceError> {
    let put = |map: &libbpf_rs::MapMut<'_>, name: &str, key: &[u8], slots: u64| {
        map.update(key, &slots.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| libbpf_error(NAME, &format!("fill {name}"), &e))
    };
    let m = &skel.maps;
    for (net, len, slots) in &c.dst4 {
        let mut key = u32::from(*len).to_ne_bytes().to_vec();
        key.extend_from_slice(net);
        put(&m.dst4_slots, "dst4_slots", &key, *slots)?;
    }
    for (net, len, slots) in &c.dst6 {
        let mut key = u32::from(*len).to_ne_bytes().to_vec();
        key.extend_from_slice(net);
        put(&m.dst6_slots, "dst6_slots", &key, *slots)?;
    }
    for (port, slots) in &c.ports {
        put(&m.port_slots, "port_slots", &u32::from(*port).to_ne_bytes(), *slots)?;
    }
    for (uid, slots) in &c.uids {
        put(&m.uid_slots, "uid_slots", &uid.to_ne_bytes(), *slots)?;
    }
    for (id, slots) in &c.cgroups {
        put(&m.cgroup_slots, "cgroup_slots", &id.to_ne_bytes(), *slots)?;
    }
    for (map, name, entries) in
        [(&m.exe_file_slots, "exe_file_slots", &c.exe_files), (&m.exe_dir_slots, "exe_dir_slots", &c.exe_dirs)]
    {
        for (inode, slots) in entries {
            let mut key = inode.ino.to_ne_bytes().to_vec();
            key.extend_from_slice(&inode.dev.to_ne_bytes());
            key.extend_from_slice(&0u32.to_ne_bytes());
            put(map, name, &key, *slots)?;
        }
    }
    Ok(())
}

/// The proxy's view of `redirect_by_port`.
struct PortLookup {
    map: MapHandle,
    rule_ids: Vec<String>,
}

impl OriginalDstLookup for PortLookup {
    fn take(&self, peer_port: u16) -> Option<OriginalDst> {
        let bytes = self.map.lookup_and_delete(&u32::from(peer_port).to_ne_bytes()).ok().flatten()?;
        let mut orig = types::net_orig_dst::default();
        plain::copy_from_bytes(&mut orig, &bytes).ok()?;
        Some(OriginalDst {
            addr: SocketAddr::new(ip_of(orig.family, &orig.addr)?, orig.port),
            pid: Some(orig.pid),
            rule: self.rule_ids.get(orig.rule as usize).cloned(),
        })
    }
}

fn ip_of(family: u8, addr: &[u8; 16]) -> Option<IpAddr> {
    match family {
        4 => Some(IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))),
        6 => {
            let v6 = Ipv6Addr::from(*addr);
            // An IPv6 socket connecting to an IPv4 address: report the IPv4 address.
            Some(v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)))
        }
        _ => None,
    }
}

/// Turns ring-buffer samples into events.
struct Decoder {
    rule_ids: Vec<String>,
    realtime_offset_ns: i128,
}

impl Decoder {
    /// The event and the acting process's cgroup id.
    fn decode(&self, data: &[u8]) -> Result<(Event, u64), &'static str> {
        let hdr: &types::rw_hdr = plain::from_bytes(data).map_err(|_| "shorter than a header")?;
        if hdr.kind != KIND_NET_ENFORCE {
            return Err("unknown kind");
        }
        if hdr.size as usize != data.len() || data.len() != size_of::<types::net_enforce_event>() {
            return Err("size mismatch");
        }
        let rec: &types::net_enforce_event = plain::from_bytes(data).map_err(|_| "misaligned or short")?;
        let activity = match rec.activity {
            ACT_CONNECT => Activity::Connect,
            ACT_SEND => Activity::Send,
            _ => return Err("unknown activity"),
        };
        let action = match rec.action as u32 {
            rules::ACTION_BLOCK => Action::Blocked,
            rules::ACTION_THROTTLE => Action::Throttled,
            _ => return Err("unknown action"),
        };
        let rule = self.rule_ids.get(rec.rule as usize).ok_or("rule index out of range")?;
        let dst_ip = ip_of(rec.family, &rec.dst_addr).ok_or("unknown family")?;
        let protocol = match rec.protocol {
            IPPROTO_TCP => "tcp",
            IPPROTO_UDP => "udp",
            _ => "other",
        };
        let mut ev = Event::new(Domain::Network, activity, Backend { mode: Mode::Kernel, source: SourceKind::Ebpf });
        ev.time = wall_time(rec.hdr.ktime, self.realtime_offset_ns);
        ev.action = action;
        ev.rule = Some(rule.clone());
        ev.process.pid = rec.pid;
        ev.process.tid = rec.tid;
        ev.process.uid = rec.uid;
        ev.process.comm = cstr(&rec.comm.map(|b| b as u8));
        ev.network = Some(NetworkInfo {
            protocol: protocol.into(),
            dst_ip: Some(dst_ip.to_string()),
            dst_port: Some(rec.dst_port),
            direction: Some("outbound".into()),
            ..NetworkInfo::default()
        });
        Ok((ev, rec.cgroup_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample buffer with the 8-byte alignment the ring buffer guarantees.
    #[repr(C, align(8))]
    struct Sample([u8; 88]);

    fn sample(action: u8, activity: u8, family: u8, addr: &[u8], port: u16, rule: u32) -> Sample {
        let mut b = Sample([0; 88]);
        let mut put = |off: usize, bytes: &[u8]| b.0[off..off + bytes.len()].copy_from_slice(bytes);
        put(0, &1_000u64.to_ne_bytes());
        put(8, &88u32.to_ne_bytes());
        put(12, &KIND_NET_ENFORCE.to_ne_bytes());
        put(offset_of!(types::net_enforce_event, dst_addr), addr);
        put(offset_of!(types::net_enforce_event, pid), &77u32.to_ne_bytes());
        put(offset_of!(types::net_enforce_event, uid), &1000u32.to_ne_bytes());
        put(offset_of!(types::net_enforce_event, rule), &rule.to_ne_bytes());
        put(offset_of!(types::net_enforce_event, dst_port), &port.to_ne_bytes());
        put(offset_of!(types::net_enforce_event, family), &[family, IPPROTO_TCP, action, activity]);
        put(offset_of!(types::net_enforce_event, comm), b"curl\0");
        b
    }

    fn decoder() -> Decoder {
        Decoder { rule_ids: vec!["no-meta".into(), "web".into()], realtime_offset_ns: 5 }
    }

    #[test]
    fn blocked_connect_decodes_with_rule_and_tuple() {
        let s = sample(rules::ACTION_BLOCK as u8, ACT_CONNECT, 4, &[169, 254, 169, 254], 80, 0);
        let (ev, _) = decoder().decode(&s.0).expect("valid");
        assert_eq!((ev.activity, ev.action), (Activity::Connect, Action::Blocked));
        assert_eq!(ev.rule.as_deref(), Some("no-meta"));
        assert_eq!((ev.process.pid, ev.process.uid, ev.process.comm.as_str()), (77, 1000, "curl"));
        let n = ev.network.expect("network facts");
        assert_eq!((n.dst_ip.as_deref(), n.dst_port, n.original_dst), (Some("169.254.169.254"), Some(80), None));
        assert_eq!(ev.time, Timestamp(1_005));
    }

    #[test]
    fn bad_samples_are_rejected() {
        let d = decoder();
        let s = sample(rules::ACTION_BLOCK as u8, ACT_CONNECT, 4, &[1, 2, 3, 4], 1, 0);
        assert!(d.decode(&s.0[..80]).is_err());
        assert!(d.decode(&[]).is_err());
        let s = sample(rules::ACTION_BLOCK as u8, ACT_CONNECT, 4, &[1, 2, 3, 4], 1, 9);
        assert!(d.decode(&s.0).is_err(), "rule index out of range");
        let s = sample(rules::ACTION_BLOCK as u8, 9, 4, &[1, 2, 3, 4], 1, 0);
        assert!(d.decode(&s.0).is_err(), "unknown activity");
        let s = sample(rules::ACTION_OBSERVE as u8, ACT_CONNECT, 4, &[1, 2, 3, 4], 1, 0);
        assert!(d.decode(&s.0).is_err(), "observe is never reported by the kernel");
        let s = sample(rules::ACTION_REDIRECT as u8, ACT_CONNECT, 4, &[1, 2, 3, 4], 1, 0);
        assert!(d.decode(&s.0).is_err(), "a redirect is reported by the proxy, not by the kernel");
    }
}
