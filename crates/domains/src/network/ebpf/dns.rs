//! DNS for the kernel network monitor: parsing the bounded packet prefix the kernel copies (UDP or TCP port 53)
//! with `simple-dns`, and the bounded IP -> name cache that lets a later `connect` carry `network.dst_name`.
//!
//! The kernel copies at most 512 payload bytes per packet, so a large answer (many records, DNSSEC) may be cut;
//! a cut packet that no longer parses is counted as malformed by the caller, not guessed at.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use simple_dns::rdata::RData;
use simple_dns::{Packet, PacketFlag};

/// What one DNS packet says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsMessage {
    /// True for an answer (the QR bit).
    pub is_response: bool,
    /// The first question's name, without the trailing dot.
    pub query: String,
    /// Answer records, as text: addresses for A/AAAA, the target name for CNAME.
    pub answers: Vec<String>,
    /// The A/AAAA addresses among the answers (what the name resolved to).
    pub addresses: Vec<IpAddr>,
}

/// Parses a DNS message. `tcp`: the payload starts with the 2-byte length prefix of DNS over TCP.
pub fn parse(payload: &[u8], tcp: bool) -> Option<DnsMessage> {
    let msg = if tcp { payload.get(2..)? } else { payload };
    let packet = Packet::parse(msg).ok()?;
    let query = packet.questions.first()?.qname.to_string();
    let mut answers = Vec::new();
    let mut addresses = Vec::new();
    for rr in &packet.answers {
        match &rr.rdata {
            RData::A(a) => {
                let ip = IpAddr::V4(Ipv4Addr::from(a.address));
                answers.push(ip.to_string());
                addresses.push(ip);
            }
            RData::AAAA(a) => {
                let ip = IpAddr::V6(Ipv6Addr::from(a.address));
                answers.push(ip.to_string());
                addresses.push(ip);
            }
            RData::CNAME(name) => answers.push(name.0.to_string()),
            _ => {}
        }
    }
    Some(DnsMessage {
        is_response: packet.has_flags(PacketFlag::RESPONSE),
        query: query.trim_end_matches('.').to_owned(),
        answers,
        addresses,
    })
}

/// Address -> the name it was last resolved from, holding at most `capacity` addresses; the address resolved
/// longest ago is forgotten first.
#[derive(Debug)]
pub struct NameCache {
    capacity: usize,
    /// address -> (name, generation of its latest insert)
    names: HashMap<IpAddr, (String, u64)>,
    /// Insert order; entries whose generation is stale were re-inserted later and are skipped on eviction.
    order: VecDeque<(IpAddr, u64)>,
    generation: u64,
}

impl NameCache {
    /// An empty cache for `capacity` addresses (at least one).
    pub fn new(capacity: usize) -> Self {
        NameCache { capacity: capacity.max(1), names: HashMap::new(), order: VecDeque::new(), generation: 0 }
    }

    /// Remembers that `ip` was an answer for `name`.
    pub fn insert(&mut self, ip: IpAddr, name: &str) {
        self.generation += 1;
        self.names.insert(ip, (name.to_owned(), self.generation));
        self.order.push_back((ip, self.generation));
        while self.names.len() > self.capacity {
            let Some((old, generation)) = self.order.pop_front() else { break };
            if self.names.get(&old).is_some_and(|(_, g)| *g == generation) {
                self.names.remove(&old);
            }
        }
        // Stale order entries (re-inserted addresses) are dropped once they outnumber the live ones.
        if self.order.len() > 2 * self.capacity {
            let names = &self.names;
            self.order.retain(|(ip, g)| names.get(ip).is_some_and(|(_, live)| live == g));
        }
    }

    /// The name `ip` was last resolved from.
    pub fn get(&self, ip: &IpAddr) -> Option<&str> {
        self.names.get(ip).map(|(n, _)| n.as_str())
    }

    /// How many addresses are known.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no address is known.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, AAAA, CNAME};
    use simple_dns::{CLASS, Name, QCLASS, QTYPE, Question, ResourceRecord, TYPE};

    fn answer_packet() -> Vec<u8> {
        let mut p = Packet::new_reply(7);
        p.questions.push(Question::new(
            Name::new_unchecked("www.ringwatch.test"),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked("www.ringwatch.test"),
            CLASS::IN,
            60,
            RData::CNAME(CNAME(Name::new_unchecked("web.ringwatch.test"))),
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked("web.ringwatch.test"),
            CLASS::IN,
            60,
            RData::A(A { address: u32::from(Ipv4Addr::new(10, 77, 0, 9)) }),
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked("web.ringwatch.test"),
            CLASS::IN,
            60,
            RData::AAAA(AAAA { address: u128::from(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 9)) }),
        ));
        p.build_bytes_vec().expect("valid packet")
    }

    #[test]
    fn answer_with_cname_a_and_aaaa_parses() {
        let bytes = answer_packet();
        let m = parse(&bytes, false).expect("parses");
        assert!(m.is_response);
        assert_eq!(m.query, "www.ringwatch.test");
        assert_eq!(m.answers, vec!["web.ringwatch.test", "10.77.0.9", "fd00::9"]);
        assert_eq!(m.addresses.len(), 2);
        // The same message over TCP carries a 2-byte length prefix.
        let mut tcp = (bytes.len() as u16).to_be_bytes().to_vec();
        tcp.extend_from_slice(&bytes);
        assert_eq!(parse(&tcp, true), Some(m));
    }

    #[test]
    fn query_has_no_answers() {
        let mut p = Packet::new_query(1);
        p.questions.push(Question::new(
            Name::new_unchecked("a.example"),
            QTYPE::TYPE(TYPE::AAAA),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        let m = parse(&p.build_bytes_vec().expect("valid"), false).expect("parses");
        assert!(!m.is_response);
        assert_eq!((m.query.as_str(), m.answers.len()), ("a.example", 0));
    }

    #[test]
    fn truncated_or_garbage_input_is_rejected_without_panic() {
        let bytes = answer_packet();
        for cut in 0..bytes.len() {
            // Every prefix either parses (records before the cut) or is rejected; none panics.
            let _ = parse(&bytes[..cut], false);
            let _ = parse(&bytes[..cut], true);
        }
        assert!(parse(&[], false).is_none());
        assert!(parse(&[0xff; 12], false).is_none());
        // Pseudo-random junk, deterministic.
        let mut x = 0x1234_5678u32;
        for len in 0..600 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = parse(&junk, len % 2 == 0);
        }
        // A header claiming a question with nothing after it.
        let mut hdr = [0u8; 12];
        hdr[5] = 1;
        assert!(parse(&hdr, false).is_none());
    }

    #[test]
    fn name_cache_is_bounded_and_keeps_the_latest_name() {
        let mut c = NameCache::new(2);
        let ip = |n| IpAddr::V4(Ipv4Addr::new(10, 0, 0, n));
        c.insert(ip(1), "one");
        c.insert(ip(2), "two");
        c.insert(ip(1), "uno");
        c.insert(ip(3), "three");
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&ip(1)), Some("uno"), "re-inserted address is the newest");
        assert_eq!(c.get(&ip(2)), None, "oldest evicted");
        assert_eq!(c.get(&ip(3)), Some("three"));
        for n in 0..200 {
            c.insert(ip(n), "x");
        }
        assert!(c.len() == 2 && c.order.len() <= 4 + 1);
    }
}
