//! The values network rule conditions take, parsed and compiled for matching: destination networks ([`IpNet`]),
//! port ranges, cgroup paths and host-name globs ([`HostSet`]), plus what an event offers them (its destination, its
//! host names).
//!
//! An IPv4 network also matches IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`), as a dual-stack socket reports them.
//! A redirected connection is matched by the destination the process asked for (`network.original_dst`), not the
//! proxy's address.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use ringwatch_core::Event;
use ringwatch_core::compiled::NetProtocol;

/// The policy's `network:` section: settings of the network monitor (rules are in `rules:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkSettings {
    /// `dns` (default `true`): the kernel monitor parses DNS queries and answers (`dns` events, `dst_name` on later
    /// connects). `false` leaves its per-packet `cgroup_skb` programs unattached, which saves a few per cent of a
    /// short connection's cost (see docs/network.md) at the price of every DNS event.
    pub dns: bool,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        NetworkSettings { dns: true }
    }
}

/// An IP network: an address and a prefix length (the host bits are cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `10.0.0.0/8`, `fd00::/8`, or a bare address (a /32 or /128). Host bits after the prefix are cleared
    /// (`10.1.2.3/8` is `10.0.0.0/8`).
    pub fn parse(text: &str) -> Result<IpNet, String> {
        let t = text.trim();
        let (addr_text, prefix_text) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            format!("`{t}` is not an IP address or CIDR network (e.g. 10.0.0.0/8, fd00::/8, 192.0.2.1)")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{t}`: prefix length `/{p}` is out of range (0 to {max})")),
            },
        };
        Ok(IpNet { addr: mask(addr, prefix), prefix })
    }

    /// The network address (host bits clear).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The same network in IPv6 space (IPv4 as IPv4-mapped, `::ffff:0:0/96` + prefix).
    fn as_v6(&self) -> (u128, u8) {
        match self.addr {
            IpAddr::V4(a) => (u128::from(a.to_ipv6_mapped()), self.prefix + 96),
            IpAddr::V6(a) => (u128::from(a), self.prefix),
        }
    }

    /// True when `ip` is in the network (IPv4 networks also hold the IPv4-mapped IPv6 form of their addresses).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, prefix) = self.as_v6();
        let ip = match ip {
            IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
            IpAddr::V6(a) => u128::from(a),
        };
        high_bits(ip, prefix) == net
    }

    /// True when some address is in both networks (one contains the other).
    pub fn overlaps(&self, other: &IpNet) -> bool {
        let ((a, pa), (b, pb)) = (self.as_v6(), other.as_v6());
        let p = pa.min(pb);
        high_bits(a, p) == high_bits(b, p)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `ip` with only its first `prefix` bits (of 128).
fn high_bits(ip: u128, prefix: u8) -> u128 {
    if prefix == 0 { 0 } else { ip & (u128::MAX << (128 - u32::from(prefix.min(128)))) }
}

/// `addr` with the bits after `prefix` cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let masked = if prefix == 0 { 0 } else { bits & (u32::MAX << (32 - u32::from(prefix))) };
            IpAddr::V4(masked.into())
        }
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(high_bits(u128::from(a), prefix))),
    }
}

/// Parses a port condition item: a number (`443`) or an inclusive range (`"8000-8999"`).
pub(crate) fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let port = |s: &str| -> Result<u16, String> {
        let n: u64 = s.trim().parse().map_err(|_| format!("`{text}` is not a port or a range like 8000-8999"))?;
        u16::try_from(n).map_err(|_| format!("port {n} is out of range (0 to 65535)"))
    };
    match text.split_once('-') {
        Some((a, b)) => {
            let (lo, hi) = (port(a)?, port(b)?);
            if lo > hi {
                return Err(format!("port range `{text}` is backwards ({lo} > {hi}); write `{hi}-{lo}`"));
            }
            Ok((lo, hi))
        }
        None => port(text).map(|p| (p, p)),
    }
}

/// Checks a `cgroup` condition: an absolute cgroup v2 path relative to the cgroup2 mount (`/system.slice/x`),
/// normalized; a trailing `/` is dropped (except for `/` itself).
pub(crate) fn parse_cgroup(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!(
            "`{text}` is not a cgroup path: write it from the cgroup2 root, e.g. `/system.slice/{text}` (as in \
             /proc/PID/cgroup)"
        ));
    }
    if text.starts_with("/sys/fs/cgroup") {
        return Err(format!(
            "`{text}` looks like a path in the file system; write the cgroup's path relative to the cgroup2 mount \
             (`/system.slice/x.service`, as in /proc/PID/cgroup)"
        ));
    }
    let trimmed = if text.len() > 1 { text.trim_end_matches('/') } else { text };
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    if trimmed.len() > 1 && trimmed[1..].split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(format!("`{text}` is not a normalized cgroup path (no `.`, `..` or `//`)"));
    }
    if trimmed.contains(['*', '?', '[', '\0']) {
        return Err(format!("`{text}`: cgroup conditions are paths, not globs (a path matches its whole subtree)"));
    }
    Ok(trimmed.to_owned())
}

/// True when the process in cgroup `actual` is in `rule`'s cgroup or below it.
pub(crate) fn cgroup_within(actual: &str, rule: &str) -> bool {
    rule == "/" || actual == rule || actual.strip_prefix(rule).is_some_and(|rest| rest.starts_with('/'))
}

/// True when two cgroup conditions can hold for the same process (one is in the other's subtree).
pub(crate) fn cgroups_overlap(a: &str, b: &str) -> bool {
    cgroup_within(a, b) || cgroup_within(b, a)
}

/// A host name as compared: lowercase, without a trailing dot.
fn normalize_host(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Host-name globs of a `host` condition: `*.example.com` (any subdomain, at any depth, not `example.com`
/// itself), `example.com`, `api-?.example.com`; case-insensitive, a trailing dot ignored.
#[derive(Debug, Clone)]
pub struct HostSet {
    globs: Vec<String>,
    set: GlobSet,
}

impl HostSet {
    /// Checks one glob; returns it normalized.
    pub fn check(text: &str) -> Result<String, String> {
        let t = normalize_host(text.trim());
        if t.is_empty() {
            return Err("empty host name".to_owned());
        }
        if let Some(c) = t.chars().find(|c| !(c.is_ascii_alphanumeric() || "-_.*?[]!".contains(*c))) {
            return Err(format!(
                "`{text}` is not a host-name glob (`{c}` is not allowed; write names like `example.com` or \
                 `*.example.com`, without scheme, port or path)"
            ));
        }
        build_host_glob(&t)?;
        Ok(t)
    }

    /// Compiles globs (as [`HostSet::check`] returns them, or as a
    /// [`HostRule`](ringwatch_core::compiled::HostRule) holds them).
    pub fn new(globs: Vec<String>) -> Result<HostSet, String> {
        let mut b = GlobSetBuilder::new();
        for g in &globs {
            b.add(build_host_glob(g)?);
        }
        let set = b.build().map_err(|e| format!("invalid host glob set: {e}"))?;
        Ok(HostSet { globs, set })
    }

    /// The globs, normalized (lowercase, no trailing dot).
    pub fn globs(&self) -> &[String] {
        &self.globs
    }

    /// True when `name` matches some glob.
    pub fn is_match(&self, name: &str) -> bool {
        !name.is_empty() && self.set.is_match(normalize_host(name))
    }
}

fn build_host_glob(text: &str) -> Result<globset::Glob, String> {
    GlobBuilder::new(text)
        .case_insensitive(true)
        .literal_separator(false)
        .backslash_escape(false)
        .build()
        .map_err(|e| format!("invalid host glob `{text}`: {}", e.kind()))
}

/// The destination the process asked for: `network.original_dst` for a redirected connection, else
/// `network.dst_ip`/`dst_port`.
pub(crate) fn destination(ev: &Event) -> (Option<IpAddr>, Option<u16>) {
    let Some(net) = &ev.network else { return (None, None) };
    if let Some(orig) = &net.original_dst {
        if let Ok(sa) = orig.parse::<SocketAddr>() {
            return (Some(sa.ip()), Some(sa.port()));
        }
        if let Ok(ip) = orig.parse::<IpAddr>() {
            return (Some(ip), None);
        }
    }
    (net.dst_ip.as_deref().and_then(|s| s.parse().ok()), net.dst_port)
}

/// The event's transport protocol, when it is one a rule can name.
pub(crate) fn protocol(ev: &Event) -> Option<NetProtocol> {
    let p = ev.network.as_ref()?.protocol.as_str();
    if p.eq_ignore_ascii_case("tcp") {
        Some(NetProtocol::Tcp)
    } else if p.eq_ignore_ascii_case("udp") {
        Some(NetProtocol::Udp)
    } else {
        None
    }
}

/// The host names an event carries: the DNS query, the HTTP `Host`, the TLS SNI and the name the destination was
/// resolved from.
pub(crate) fn host_names(ev: &Event) -> impl Iterator<Item = &str> {
    let net = ev.network.as_ref();
    [
        net.and_then(|n| n.dns.as_ref()).map(|d| d.query.as_str()),
        net.and_then(|n| n.http.as_ref()).map(|h| h.host.as_str()),
        net.and_then(|n| n.tls.as_ref()).map(|t| t.sni.as_str()),
        net.and_then(|n| n.dst_name.as_deref()),
    ]
    .into_iter()
    .flatten()
    .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        IpNet::parse(s).expect("valid")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn networks_parse_and_clear_host_bits() {
        assert_eq!(net("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(net("192.0.2.1").to_string(), "192.0.2.1/32");
        assert_eq!(net("fd00::1/8").to_string(), "fd00::/8");
        assert_eq!(net("::1").prefix(), 128);
        assert_eq!(net("0.0.0.0/0").to_string(), "0.0.0.0/0");
        for bad in ["10.0.0.0/33", "10.0.0/8", "fd00::/129", "10.0.0.0/x", "host.example", "", "10.0.0.0/"] {
            assert!(IpNet::parse(bad).is_err(), "{bad}");
        }
        assert!(IpNet::parse("10.0.0.0/33").expect_err("range").contains("out of range (0 to 32)"));
    }

    #[test]
    fn membership_includes_ipv4_mapped_addresses() {
        let n = net("10.0.0.0/8");
        assert!(n.contains(ip("10.200.0.1")));
        assert!(n.contains(ip("::ffff:10.1.1.1")));
        assert!(!n.contains(ip("11.0.0.1")));
        assert!(!n.contains(ip("fd00::1")));
        assert!(net("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!net("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(net("::/0").contains(ip("2001:db8::1")));
        assert!(net("fd00::/8").contains(ip("fdab::1")));
        assert!(net("169.254.169.254/32").contains(ip("169.254.169.254")));
        assert!(!net("169.254.169.254/32").contains(ip("169.254.169.253")));
    }

    #[test]
    fn overlap_is_containment_either_way() {
        assert!(net("10.0.0.0/8").overlaps(&net("10.1.0.0/16")));
        assert!(net("10.1.0.0/16").overlaps(&net("10.0.0.0/8")));
        assert!(!net("10.0.0.0/8").overlaps(&net("192.168.0.0/16")));
        assert!(net("::/0").overlaps(&net("10.0.0.0/8")), "::/0 holds the IPv4-mapped space");
        assert!(!net("fd00::/8").overlaps(&net("10.0.0.0/8")));
    }

    #[test]
    fn ports_and_ranges() {
        assert_eq!(parse_port_range("443"), Ok((443, 443)));
        assert_eq!(parse_port_range("8000-8999"), Ok((8000, 8999)));
        assert!(parse_port_range("70000").expect_err("big").contains("port 70000 is out of range"));
        assert!(parse_port_range("9-1").expect_err("backwards").contains("backwards"));
        assert!(parse_port_range("1-70000").is_err());
        assert!(parse_port_range("http").expect_err("word").contains("not a port"));
    }

    #[test]
    fn cgroups_are_rooted_paths_matching_their_subtree() {
        assert_eq!(parse_cgroup("/system.slice/x.service/"), Ok("/system.slice/x.service".to_owned()));
        assert_eq!(parse_cgroup("/"), Ok("/".to_owned()));
        assert!(parse_cgroup("system.slice").is_err());
        assert!(parse_cgroup("/sys/fs/cgroup/unified/x").expect_err("fs path").contains("relative to the cgroup2"));
        assert!(parse_cgroup("/a//b").is_err());
        assert!(parse_cgroup("/a/*").is_err());
        assert!(cgroup_within("/system.slice/x.service", "/system.slice"));
        assert!(cgroup_within("/system.slice", "/system.slice"));
        assert!(!cgroup_within("/system.slicer", "/system.slice"));
        assert!(cgroup_within("/anything", "/"));
        assert!(cgroups_overlap("/a", "/a/b") && cgroups_overlap("/a/b", "/a") && !cgroups_overlap("/a", "/b"));
    }

    #[test]
    fn host_globs_are_case_insensitive_and_ignore_a_trailing_dot() {
        let checked: Vec<String> =
            ["*.Example.COM", "exact.org.", "api-?.test"].iter().map(|g| HostSet::check(g).expect("valid")).collect();
        assert_eq!(checked, vec!["*.example.com", "exact.org", "api-?.test"]);
        let s = HostSet::new(checked).expect("compiles");
        assert!(s.is_match("www.example.com"));
        assert!(s.is_match("a.b.EXAMPLE.com."));
        assert!(!s.is_match("example.com"));
        assert!(s.is_match("Exact.Org"));
        assert!(s.is_match("api-1.test") && !s.is_match("api-10.test"));
        assert!(!s.is_match(""));
        assert!(HostSet::check("https://x.com").is_err());
        assert!(HostSet::check("x.com:443").is_err());
        assert!(HostSet::check("").is_err());
        assert!(HostSet::check("[a.com").expect_err("glob").contains("invalid host glob"));
    }
}
