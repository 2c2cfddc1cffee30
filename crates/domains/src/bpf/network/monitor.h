/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The network monitor's wire format: the records monitor.bpf.c writes into
 * the `events` ring buffer and the values of its attribution maps. This is
 * the only place they are defined; the Rust side (network/ebpf) decodes them
 * through the skeleton's generated types and pins the same sizes and offsets.
 *
 * Rules (STYLE.md): fixed-width types only, largest first, explicit _pad
 * fields that are always written, struct rw_hdr first.
 */
#ifndef RW_NET_MONITOR_H
#define RW_NET_MONITOR_H

#include "common.h"
#include "task.h" /* struct rw_proc_id */

/* Record kinds (network range 32..47 of common.h; 40..47 are left to the enforcement object). */
#define RW_KIND_NET_CONN 32 /* struct conn_event */
#define RW_KIND_NET_DNS 33 /* struct dns_event */

/* conn_event.activity */
#define RW_NET_CONNECT 1 /* TCP established outbound (or refused: RW_NET_F_REFUSED); UDP connect(2) */
#define RW_NET_ACCEPT 2 /* TCP established inbound (a listener's child) */
#define RW_NET_LISTEN 3
#define RW_NET_CLOSE 4 /* TCP: the socket reached CLOSE after being established */
#define RW_NET_SEND 5 /* UDP sendmsg with an explicit destination (first per socket and destination) */

/* hdr.flags */
#define RW_NET_F_UNATTRIBUTED 0x01 /* no process known: id/uid/gid/cgroup_id are 0 */
#define RW_NET_F_REFUSED 0x02 /* a TCP connect that ended before it was established */
#define RW_NET_F_INBOUND 0x04 /* the peer initiated (accept, and close of an accepted socket) */
#define RW_NET_F_OUTBOUND 0x08 /* this host initiated */
#define RW_NET_F_NO_START 0x10 /* close of a socket adopted after it was established: no duration */

/* dns_event.direction */
#define RW_DNS_EGRESS 1
#define RW_DNS_INGRESS 2

/* DNS bytes copied per packet (from the start of the UDP/TCP payload). */
#define RW_DNS_PAYLOAD_MAX 512

#define RW_AF_INET 2
#define RW_AF_INET6 10
#define RW_IPPROTO_TCP 6
#define RW_IPPROTO_UDP 17

/*
 * Who owns a socket: the process that created it (cgroup/sock_create), or
 * the one that last connected or listened with it (both run in the caller's
 * context). Value of `sock_owner` (key: socket cookie) and `listen_owner`.
 */
struct sock_owner {
	struct rw_proc_id id;
	__u64 cgroup_id;
	__u64 established_ns; /* bpf_ktime_get_boot_ns() at ESTABLISHED; 0 before or when unknown */
	__u32 uid;
	__u32 euid;
	__u32 gid;
	__u8 flags; /* RW_NET_F_INBOUND / RW_NET_F_OUTBOUND / RW_NET_F_UNATTRIBUTED / RW_NET_F_NO_START */
	__u8 _pad[3];
};
_Static_assert(sizeof(struct sock_owner) == 72, "sock_owner layout changed: update the Rust asserts");

/* `listen_owner` key: a listening port in one network namespace (children of the listener share its port). */
struct listen_key {
	__u32 netns; /* network namespace inode number */
	__u16 port; /* host byte order */
	__u16 _pad;
};

/* `udp_dst_seen` key: one UDP socket sending to one destination. */
struct udp_dst_key {
	__u64 cookie;
	__u8 daddr[16];
	__u16 dport;
	__u16 _pad[3];
};

/*
 * One connection fact. Addresses: IPv4 in the first 4 bytes (network order),
 * IPv6 all 16. Ports in host byte order. `saddr:sport` is the local end,
 * `daddr:dport` the remote end (user space orients them by direction).
 */
struct conn_event {
	struct rw_hdr hdr;
	struct rw_proc_id id;
	__u64 cgroup_id;
	__u64 bytes_out; /* close: tcp_sock.bytes_acked */
	__u64 bytes_in; /* close: tcp_sock.bytes_received */
	__u64 duration_ns; /* close: since ESTABLISHED */
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 uid;
	__u32 euid;
	__u32 gid;
	__u16 sport;
	__u16 dport;
	__u16 family; /* RW_AF_INET / RW_AF_INET6 */
	__u8 protocol; /* RW_IPPROTO_TCP / RW_IPPROTO_UDP */
	__u8 activity; /* RW_NET_* */
	__u32 error; /* RW_NET_F_REFUSED: the socket's sk_err (ECONNREFUSED, ETIMEDOUT...), 0 if none was set */
};
_Static_assert(sizeof(struct conn_event) == 144, "conn_event layout changed: update the Rust asserts");

/*
 * One DNS packet (UDP or TCP port 53, either direction) seen by cgroup_skb.
 * payload holds the first payload_len bytes of the UDP/TCP payload (for TCP
 * still with its 2-byte length prefix). Addresses as in conn_event, but
 * saddr/daddr are the packet's source and destination.
 */
struct dns_event {
	struct rw_hdr hdr;
	struct rw_proc_id id;
	__u64 cgroup_id;
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 uid;
	__u32 euid;
	__u32 gid;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u16 payload_len;
	__u8 protocol;
	__u8 direction; /* RW_DNS_EGRESS / RW_DNS_INGRESS */
	__u8 _pad[2];
	__u8 payload[RW_DNS_PAYLOAD_MAX];
};
_Static_assert(sizeof(struct dns_event) == 632, "dns_event layout changed: update the Rust asserts");

#endif /* RW_NET_MONITOR_H */
