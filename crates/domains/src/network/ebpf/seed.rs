//! Listeners that predate the agent: the kernel learns a listener's owner at `listen()`, so a server started
//! before the agent (sshd, a web server) would have every accepted connection reported unattributed. At start,
//! with the programs on the cgroup2 root, the monitor seeds `listen_owner` from /proc instead: the listening TCP
//! sockets of every network namespace (`/proc/PID/net/tcp{,6}` of one process per namespace, state `0A`), their
//! socket inodes mapped to the process holding them (`/proc/PID/fd`), and that process's identity
//! (`/proc/PID/stat`, `/proc/PID/status`).
//!
//! A one-off scan: a listener whose process cannot be read (it exited, a race) stays unknown, and a socket held by
//! several processes (pre-fork servers) is attributed to the first one found.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::mem::{offset_of, size_of};
use std::os::unix::fs::MetadataExt;

use ringwatch_core::guid::USER_HZ;
use ringwatch_core::proc_table::read_proc_process;

use super::skel::types;

// The same pins as monitor.h: the map key and value written from here.
const _: () = assert!(size_of::<types::listen_key>() == 8 && offset_of!(types::listen_key, port) == 4);
const _: () = assert!(size_of::<types::sock_owner>() == 72);

/// A listening socket found in /proc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Listener {
    /// Network namespace inode (what the kernel's `listen_key.netns` holds).
    pub(super) netns: u32,
    /// Local port.
    pub(super) port: u16,
    /// Socket inode.
    pub(super) inode: u64,
}

/// The listening sockets of a `/proc/net/tcp`-format table (state `0A`): (port, socket inode).
pub(super) fn parse_listeners(table: &str) -> Vec<(u16, u64)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(3) != Some(&"0A") {
                return None;
            }
            let port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            let inode = f.get(9)?.parse::<u64>().ok()?;
            (inode != 0).then_some((port, inode))
        })
        .collect()
}

fn pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten().filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok())).collect()
}

/// Every listening TCP socket of every network namespace a process is in.
fn listeners() -> Vec<Listener> {
    let mut seen_ns = HashSet::new();
    let mut out = Vec::new();
    for pid in pids() {
        let Ok(ns) = fs::metadata(format!("/proc/{pid}/ns/net")) else { continue };
        let netns = ns.ino() as u32;
        if !seen_ns.insert(netns) {
            continue;
        }
        for table in ["tcp", "tcp6"] {
            let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) else { continue };
            out.extend(parse_listeners(&text).into_iter().map(|(port, inode)| Listener { netns, port, inode }));
        }
    }
    out
}

/// Socket inode -> the first process found holding it, for the inodes in `wanted`.
fn holders(wanted: &HashSet<u64>) -> HashMap<u64, u32> {
    let mut found = HashMap::new();
    for pid in pids() {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else { continue };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            if wanted.contains(&inode) {
                found.entry(inode).or_insert(pid);
            }
        }
        if found.len() == wanted.len() {
            break;
        }
    }
    found
}

/// (`listen_owner` key, value) for every listener whose process could be read; the agent's own are skipped.
pub(super) fn listen_owners() -> Vec<(types::listen_key, types::sock_owner)> {
    let listeners = listeners();
    let wanted: HashSet<u64> = listeners.iter().map(|l| l.inode).collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let holders = holders(&wanted);
    let mut processes = HashMap::new();
    let mut out = Vec::new();
    for l in listeners {
        let Some(&pid) = holders.get(&l.inode) else { continue };
        if pid == std::process::id() {
            continue;
        }
        let Some(p) = processes.entry(pid).or_insert_with(|| read_proc_process(pid)).clone() else { continue };
        let mut comm = [0u8; 16];
        let name = p.comm.as_bytes();
        comm[..name.len().min(15)].copy_from_slice(&name[..name.len().min(15)]);
        let owner = types::sock_owner {
            id: types::rw_proc_id {
                start_ns: p.start_ticks * (1_000_000_000 / USER_HZ),
                pid,
                tid: pid,
                ppid: p.ppid,
                comm,
                ..Default::default()
            },
            uid: p.uid,
            euid: p.euid,
            gid: p.gid,
            ..Default::default()
        };
        out.push((types::listen_key { netns: l.netns, port: l.port, ..Default::default() }, owner));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_rows_are_picked_from_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:A2B4 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 12346 1 0000000000000000 20 4 30 10 -1
   2: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1
   3: garbage
";
        assert_eq!(parse_listeners(table), vec![(8080, 12345), (22, 777)]);
    }

    #[test]
    fn a_listener_of_this_host_is_found_with_its_process() {
        // Our own listener is skipped by listen_owners (the agent's), but listeners() and holders() find it.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let mine: Vec<Listener> = listeners().into_iter().filter(|x| x.port == port).collect();
        assert_eq!(mine.len(), 1, "{port} listed once");
        let holders = holders(&HashSet::from([mine[0].inode]));
        assert_eq!(holders.get(&mine[0].inode), Some(&std::process::id()));
    }
}
