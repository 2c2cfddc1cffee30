//! Compiles a [`NetworkPlan`]'s rules into what `enforce.bpf.c` reads: one bit ("slot") per rule and per `not`
//! block, and per condition a map from value to the slots that value satisfies (see `enforce.h`).
//!
//! Everything the kernel cannot evaluate is refused here, naming the rule: more than 64 slots, redirect of UDP,
//! a cgroup that does not exist or is deeper than 32 levels, a bad prefix length or port range, a zero rate.
//! Executable paths are resolved to inodes now; one that does not exist cannot match and is reported as a
//! warning (it may be installed later, and would then not be enforced until the next start).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

use ringwatch_core::compiled::{NetAction, NetMatch, NetProtocol, NetworkPlan};

/// Slots one mask holds (`RW_NET_SLOTS`).
pub const SLOTS: usize = 64;
/// Rules evaluated (`RW_NET_RULES_MAX`).
pub const RULES_MAX: usize = 64;
/// Entries per condition map (`RW_NET_COND_MAX`).
pub const COND_MAX: usize = 4096;
/// cgroup levels the kernel checks (`RW_NET_CGROUP_LEVELS`).
pub const CGROUP_LEVELS: usize = 32;
/// `rules[].not_slot` without a `not` block.
pub const NO_SLOT: u32 = u32::MAX;

/// `RW_NET_*` action codes.
pub const ACTION_OBSERVE: u32 = 0;
/// Alert.
pub const ACTION_ALERT: u32 = 1;
/// Block.
pub const ACTION_BLOCK: u32 = 2;
/// Redirect.
pub const ACTION_REDIRECT: u32 = 3;
/// Throttle.
pub const ACTION_THROTTLE: u32 = 4;

/// One rule as `rules[]` holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleEntry {
    pub slot: u32,
    pub not_slot: u32,
    pub action: u32,
    pub class_minor: u32,
}

/// An inode as the kernel names it: `s_dev` (major << 20 | minor) and inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeKey {
    pub dev: u32,
    pub ino: u64,
}

/// One throttle rule's HTB class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleClass {
    /// HTB class `1:<minor>`.
    pub minor: u32,
    /// Rate, bytes per second.
    pub bytes_per_sec: u64,
    /// The rule id.
    pub rule: String,
}

/// The plan in the kernel's form.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompiledRules {
    pub rules: Vec<RuleEntry>,
    pub rule_ids: Vec<String>,
    pub dst_any: u64,
    pub port_any: u64,
    pub uid_any: u64,
    pub cgroup_any: u64,
    pub exe_any: u64,
    pub tcp_slots: u64,
    pub udp_slots: u64,
    pub cgroup_levels: u32,
    pub uses_exe: bool,
    /// (network, prefix length, slots), every enclosing prefix's slots ORed in.
    pub dst4: Vec<([u8; 4], u8, u64)>,
    pub dst6: Vec<([u8; 16], u8, u64)>,
    pub ports: BTreeMap<u16, u64>,
    pub uids: BTreeMap<u32, u64>,
    pub cgroups: BTreeMap<u64, u64>,
    pub exe_files: BTreeMap<InodeKey, u64>,
    pub exe_dirs: BTreeMap<InodeKey, u64>,
    pub throttles: Vec<ThrottleClass>,
    /// Conditions that can never match on this host (missing executables), and TCP-only redirects.
    pub warnings: Vec<String>,
}

/// Why a plan cannot be enforced in the kernel: the rule and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// Rule id.
    pub rule: String,
    /// What the kernel cannot do with it.
    pub reason: String,
    /// True when the kernel programs cannot express it (vs a bad value in the rule).
    pub unsupported: bool,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rule {}: {}", self.rule, self.reason)
    }
}

impl CompiledRules {
    /// Compiles `plan`; cgroup paths are relative to `cgroup_root` (the cgroup2 mount).
    pub fn compile(plan: &NetworkPlan, cgroup_root: &Path) -> Result<CompiledRules, RuleError> {
        let mut c = CompiledRules::default();
        let mut next_slot = 0usize;
        let mut dst4: Vec<([u8; 4], u8, u64)> = Vec::new();
        let mut dst6: Vec<([u8; 16], u8, u64)> = Vec::new();
        if plan.rules.len() > RULES_MAX {
            let rule = plan.rules[RULES_MAX].id.clone();
            return Err(RuleError {
                rule,
                reason: format!(
                    "the kernel evaluates at most {RULES_MAX} network rules; this is rule {}",
                    RULES_MAX + 1
                ),
                unsupported: true,
            });
        }
        for rule in &plan.rules {
            let err = |reason: String, unsupported: bool| RuleError { rule: rule.id.clone(), reason, unsupported };
            let needed = 1 + usize::from(rule.not.is_some());
            if next_slot + needed > SLOTS {
                return Err(err(
                    format!(
                        "the kernel evaluates at most {SLOTS} conditions (rules plus `not` blocks); this one does not fit"
                    ),
                    true,
                ));
            }
            let (action, class_minor) = match rule.action {
                NetAction::Observe => (ACTION_OBSERVE, 0),
                NetAction::Alert => (ACTION_ALERT, 0),
                NetAction::Block => (ACTION_BLOCK, 0),
                NetAction::Redirect => {
                    if rule.matcher.protocol == Some(NetProtocol::Udp) {
                        return Err(err(
                            "redirect of UDP cannot be done: the proxy relays TCP connections only".into(),
                            true,
                        ));
                    }
                    if rule.matcher.protocol.is_none() {
                        c.warnings.push(format!("rule {}: redirect applies to TCP only; UDP is let through", rule.id));
                    }
                    (ACTION_REDIRECT, 0)
                }
                NetAction::Throttle { bytes_per_sec } => {
                    if bytes_per_sec == 0 {
                        return Err(err("throttle rate must be above 0".into(), false));
                    }
                    let minor = c.throttles.len() as u32 + 1;
                    c.throttles.push(ThrottleClass { minor, bytes_per_sec, rule: rule.id.clone() });
                    (ACTION_THROTTLE, minor)
                }
            };
            let slot = next_slot as u32;
            c.add_conditions(slot, &rule.matcher, cgroup_root, &mut dst4, &mut dst6).map_err(|r| err(r, false))?;
            next_slot += 1;
            let not_slot = match &rule.not {
                Some(not) => {
                    let s = next_slot as u32;
                    c.add_conditions(s, not, cgroup_root, &mut dst4, &mut dst6)
                        .map_err(|r| err(format!("not: {r}"), false))?;
                    next_slot += 1;
                    s
                }
                None => NO_SLOT,
            };
            c.rules.push(RuleEntry { slot, not_slot, action, class_minor });
            c.rule_ids.push(rule.id.clone());
        }
        c.dst4 = with_enclosing(dst4);
        c.dst6 = with_enclosing(dst6);
        let sizes = [
            ("destination networks", c.dst4.len().max(c.dst6.len())),
            ("uids", c.uids.len()),
            ("cgroups", c.cgroups.len()),
            ("executables", c.exe_files.len()),
            ("executable directories", c.exe_dirs.len()),
        ];
        for (what, n) in sizes {
            if n > COND_MAX {
                return Err(RuleError {
                    rule: "*".into(),
                    reason: format!("{n} {what} across all rules; the kernel maps hold {COND_MAX}"),
                    unsupported: true,
                });
            }
        }
        Ok(c)
    }

    fn add_conditions(
        &mut self,
        slot: u32,
        m: &NetMatch,
        cgroup_root: &Path,
        dst4: &mut Vec<([u8; 4], u8, u64)>,
        dst6: &mut Vec<([u8; 16], u8, u64)>,
    ) -> Result<(), String> {
        let bit = 1u64 << slot;
        match m.protocol {
            None => {
                self.tcp_slots |= bit;
                self.udp_slots |= bit;
            }
            Some(NetProtocol::Tcp) => self.tcp_slots |= bit,
            Some(NetProtocol::Udp) => self.udp_slots |= bit,
        }
        if m.dst.is_empty() {
            self.dst_any |= bit;
        }
        for &(ip, len) in &m.dst {
            match ip {
                IpAddr::V4(a) => {
                    if len > 32 {
                        return Err(format!("dst {a}/{len}: prefix longer than 32"));
                    }
                    let net = mask_v4(a, len);
                    dst4.push((net.octets(), len, bit));
                    // The same network as IPv4-mapped IPv6, for IPv6 sockets connecting to IPv4 addresses.
                    dst6.push((net.to_ipv6_mapped().octets(), 96 + len, bit));
                }
                IpAddr::V6(a) => {
                    if len > 128 {
                        return Err(format!("dst {a}/{len}: prefix longer than 128"));
                    }
                    dst6.push((mask_v6(a, len).octets(), len, bit));
                }
            }
        }
        if m.dst_ports.is_empty() {
            self.port_any |= bit;
        }
        for &(lo, hi) in &m.dst_ports {
            if lo > hi {
                return Err(format!("dst_port range {lo}-{hi} is empty"));
            }
            for p in lo..=hi {
                *self.ports.entry(p).or_default() |= bit;
            }
        }
        if m.uids.is_empty() {
            self.uid_any |= bit;
        }
        for &uid in &m.uids {
            *self.uids.entry(uid).or_default() |= bit;
        }
        if m.cgroups.is_empty() {
            self.cgroup_any |= bit;
        }
        for cg in &m.cgroups {
            let rel = Path::new(cg.trim_start_matches('/'));
            if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
                return Err(format!("cgroup {cg:?}: must be an absolute path without `..`"));
            }
            let level = rel.components().count();
            if level >= CGROUP_LEVELS {
                return Err(format!("cgroup {cg}: {level} levels deep; the kernel checks {CGROUP_LEVELS}"));
            }
            let dir = cgroup_root.join(rel);
            let meta = std::fs::metadata(&dir).map_err(|e| format!("cgroup {cg}: {}: {e}", dir.display()))?;
            *self.cgroups.entry(meta.ino()).or_default() |= bit;
            self.cgroup_levels |= 1 << level;
        }
        if m.exe_exact.is_empty() && m.exe_prefixes.is_empty() {
            self.exe_any |= bit;
        } else {
            self.uses_exe = true;
        }
        for (paths, dirs) in [(&m.exe_exact, false), (&m.exe_prefixes, true)] {
            for path in paths {
                match std::fs::metadata(path) {
                    Ok(meta) if meta.is_dir() == dirs => {
                        let key = inode_key(&meta);
                        let map = if dirs { &mut self.exe_dirs } else { &mut self.exe_files };
                        *map.entry(key).or_default() |= bit;
                    }
                    Ok(_) => {
                        let want = if dirs { "a directory" } else { "a file" };
                        return Err(format!("exe {path}: not {want}"));
                    }
                    Err(e) => self.warnings.push(format!("exe {path}: {e}; it cannot match until the next start")),
                }
            }
        }
        Ok(())
    }
}

/// The kernel's `s_dev` encoding (`MKDEV`: major << 20 | minor) of a file's device, and its inode.
pub fn inode_key(meta: &std::fs::Metadata) -> InodeKey {
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    InodeKey { dev: (major << 20) | (minor & 0xfffff), ino: meta.ino() }
}

fn mask_v4(a: Ipv4Addr, len: u8) -> Ipv4Addr {
    let bits = u32::from(a);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
    Ipv4Addr::from(bits & mask)
}

fn mask_v6(a: Ipv6Addr, len: u8) -> Ipv6Addr {
    let bits = u128::from(a);
    let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
    Ipv6Addr::from(bits & mask)
}

/// Merges duplicate prefixes and ORs into each prefix the slots of every shorter prefix that contains it: the
/// kernel's LPM lookup returns only the longest match, which must then answer for all of them.
fn with_enclosing<const N: usize>(entries: Vec<([u8; N], u8, u64)>) -> Vec<([u8; N], u8, u64)> {
    let mut merged: BTreeMap<(u8, [u8; N]), u64> = BTreeMap::new();
    for (net, len, slots) in entries {
        *merged.entry((len, net)).or_default() |= slots;
    }
    let all: Vec<((u8, [u8; N]), u64)> = merged.iter().map(|(k, v)| (*k, *v)).collect();
    let mut out = Vec::with_capacity(all.len());
    for &((len, net), _) in &all {
        let mut slots = 0;
        for &((olen, onet), oslots) in &all {
            if olen <= len && prefix_eq(&net, &onet, olen) {
                slots |= oslots;
            }
        }
        out.push((net, len, slots));
    }
    out
}

/// True when `a` and `b` agree on their first `bits` bits.
fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (full, rest) = (usize::from(bits / 8), bits % 8);
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || (a[full] ^ b[full]) & (0xffu8 << (8 - rest)) == 0
}

/// Counts of each map, for the start log line.
pub fn summary(c: &CompiledRules) -> HashMap<&'static str, usize> {
    HashMap::from([
        ("rules", c.rules.len()),
        ("dst4", c.dst4.len()),
        ("dst6", c.dst6.len()),
        ("ports", c.ports.len()),
        ("uids", c.uids.len()),
        ("cgroups", c.cgroups.len()),
        ("exe_files", c.exe_files.len()),
        ("exe_dirs", c.exe_dirs.len()),
    ])
}

#[cfg(test)]
mod tests {
    use ringwatch_core::compiled::NetRule;

    use super::*;

    fn rule(id: &str, action: NetAction, matcher: NetMatch) -> NetRule {
        NetRule { id: id.into(), action, matcher, not: None }
    }

    fn root() -> std::path::PathBuf {
        std::env::temp_dir()
    }

    #[test]
    fn enclosing_prefixes_answer_for_the_longest_match() {
        let plan = NetworkPlan {
            rules: vec![
                rule(
                    "wide",
                    NetAction::Block,
                    NetMatch { dst: vec![("10.0.0.0".parse().expect("valid address"), 8)], ..Default::default() },
                ),
                rule(
                    "narrow",
                    NetAction::Alert,
                    NetMatch { dst: vec![("10.1.2.77".parse().expect("valid address"), 24)], ..Default::default() },
                ),
                rule(
                    "other",
                    NetAction::Alert,
                    NetMatch { dst: vec![("192.168.0.0".parse().expect("valid address"), 16)], ..Default::default() },
                ),
            ],
            host_rules: vec![],
        };
        let c = CompiledRules::compile(&plan, &root()).expect("compiles");
        let find = |net: [u8; 4], len| c.dst4.iter().find(|e| e.0 == net && e.1 == len).map(|e| e.2);
        assert_eq!(find([10, 0, 0, 0], 8), Some(0b001));
        assert_eq!(find([10, 1, 2, 0], 24), Some(0b011), "host bits masked, /8 ORed in");
        assert_eq!(find([192, 168, 0, 0], 16), Some(0b100));
        // IPv4 networks also land in the IPv6 trie as IPv4-mapped.
        let mapped = Ipv4Addr::new(10, 1, 2, 0).to_ipv6_mapped().octets();
        assert!(c.dst6.iter().any(|e| e.0 == mapped && e.1 == 120 && e.2 == 0b011));
        assert_eq!(c.dst_any, 0, "every rule has a dst condition");
        assert_eq!(c.port_any, 0b111);
        assert_eq!((c.tcp_slots, c.udp_slots), (0b111, 0b111));
    }

    #[test]
    fn not_blocks_take_their_own_slot_and_ports_expand() {
        let mut r = rule(
            "web",
            NetAction::Redirect,
            NetMatch {
                dst_ports: vec![(80, 80), (8000, 8002)],
                protocol: Some(NetProtocol::Tcp),
                ..Default::default()
            },
        );
        r.not = Some(NetMatch { uids: vec![0], ..Default::default() });
        let plan = NetworkPlan {
            rules: vec![r, rule("t", NetAction::Throttle { bytes_per_sec: 1 << 20 }, NetMatch::default())],
            host_rules: vec![],
        };
        let c = CompiledRules::compile(&plan, &root()).expect("compiles");
        assert_eq!(c.rules[0], RuleEntry { slot: 0, not_slot: 1, action: ACTION_REDIRECT, class_minor: 0 });
        assert_eq!(c.rules[1], RuleEntry { slot: 2, not_slot: NO_SLOT, action: ACTION_THROTTLE, class_minor: 1 });
        assert_eq!(c.ports.len(), 4);
        assert_eq!(c.ports[&8001], 0b001);
        assert_eq!(c.uids[&0], 0b010);
        assert_eq!(c.uid_any, 0b101);
        assert_eq!(c.tcp_slots, 0b111);
        assert_eq!(c.udp_slots, 0b110, "the redirect rule is TCP-only, its not block any protocol");
        assert_eq!(c.throttles, vec![ThrottleClass { minor: 1, bytes_per_sec: 1 << 20, rule: "t".into() }]);
    }

    #[test]
    fn what_the_kernel_cannot_do_is_refused_naming_the_rule() {
        let udp =
            rule("dns-proxy", NetAction::Redirect, NetMatch { protocol: Some(NetProtocol::Udp), ..Default::default() });
        let e =
            CompiledRules::compile(&NetworkPlan { rules: vec![udp], host_rules: vec![] }, &root()).expect_err("udp");
        assert_eq!(e.rule, "dns-proxy");
        assert!(e.unsupported && e.reason.contains("UDP"), "{e}");

        let many: Vec<NetRule> =
            (0..65).map(|i| rule(&format!("r{i}"), NetAction::Block, NetMatch::default())).collect();
        let e =
            CompiledRules::compile(&NetworkPlan { rules: many, host_rules: vec![] }, &root()).expect_err("too many");
        assert_eq!(e.rule, "r64");

        let cg = rule(
            "cg",
            NetAction::Block,
            NetMatch { cgroups: vec!["/no-such-cgroup-xyz".into()], ..Default::default() },
        );
        let e =
            CompiledRules::compile(&NetworkPlan { rules: vec![cg], host_rules: vec![] }, &root()).expect_err("cgroup");
        assert!(e.reason.contains("no-such-cgroup-xyz"), "{e}");

        let bad = rule("ports", NetAction::Block, NetMatch { dst_ports: vec![(90, 80)], ..Default::default() });
        assert!(CompiledRules::compile(&NetworkPlan { rules: vec![bad], host_rules: vec![] }, &root()).is_err());
    }

    #[test]
    fn executables_resolve_to_inodes_and_missing_ones_warn() {
        let m = NetMatch {
            exe_exact: vec!["/bin/sh".into(), "/no/such/exe".into()],
            exe_prefixes: vec!["/usr/".into()],
            ..Default::default()
        };
        let c = CompiledRules::compile(
            &NetworkPlan { rules: vec![rule("x", NetAction::Block, m)], host_rules: vec![] },
            &root(),
        )
        .expect("compiles");
        assert!(c.uses_exe);
        assert_eq!(c.exe_files.len(), 1);
        assert_eq!(c.exe_dirs.len(), 1);
        assert_eq!(c.exe_any, 0);
        assert!(c.warnings.iter().any(|w| w.contains("/no/such/exe")));
        let meta = std::fs::metadata("/bin/sh").expect("stat /bin/sh");
        assert!(c.exe_files.contains_key(&inode_key(&meta)));
    }
}
