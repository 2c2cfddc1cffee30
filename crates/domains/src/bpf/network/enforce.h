/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Network enforcement (block, redirect to the local proxy, throttle): the
 * record of one enforced act, the map keys and values user space fills from
 * the NetworkPlan, and the limits. Shared by enforce.bpf.c and, through the
 * skeleton's generated types, network/enforce.rs.
 *
 * How rules are evaluated: every rule (and every rule's `not` block) is a
 * "slot", a bit in a 64-bit mask. Each condition map answers "which slots
 * does this value satisfy" (rules without that condition are in the
 * condition's *_any mask); ANDing the answers gives the slots whose every
 * condition holds, and the first rule (policy order) whose slot is set and
 * whose `not` slot is clear wins. Cost per connect: a handful of map lookups,
 * independent of the number of rules.
 */
#ifndef RW_NET_ENFORCE_H
#define RW_NET_ENFORCE_H

/* Record kind of struct net_enforce_event (network range 32..47 in common.h; 40.. is enforcement's). */
#define RW_KIND_NET_ENFORCE 40

/* Slots (rules + not-blocks) one mask holds. */
#define RW_NET_SLOTS 64
/* Rules evaluated in order; each takes one or two slots. */
#define RW_NET_RULES_MAX 64
/* Entries per condition map. */
#define RW_NET_COND_MAX 4096
/* cgroup levels checked for "in this cgroup or below". */
#define RW_NET_CGROUP_LEVELS 32
/* Directories walked up from the executable for prefix rules. */
#define RW_NET_EXE_DEPTH 32
/* Sockets tracked at once for redirect hand-over and throttling (LRU: the oldest are forgotten). */
#define RW_NET_SOCKETS_MAX 65536

/* NetAction, as rules[] stores it and events report it. */
#define RW_NET_OBSERVE 0
#define RW_NET_ALERT 1
#define RW_NET_BLOCK 2
#define RW_NET_REDIRECT 3
#define RW_NET_THROTTLE 4

/* Which hook acted (net_enforce_event.activity). */
#define RW_NET_ACT_CONNECT 1
#define RW_NET_ACT_SEND 2

/* rules[].not_slot when the rule has no `not` block. */
#define RW_NET_NO_SLOT 0xffffffff

/* include/uapi/linux/pkt_cls.h */
#define RW_TC_ACT_OK 0
/* include/uapi/linux/in.h, socket.h */
#define RW_IPPROTO_TCP 6
#define RW_IPPROTO_UDP 17
#define RW_AF_INET 2
#define RW_AF_INET6 10

/* One rule in policy order (rodata). */
struct net_rule {
	__u32 slot; /* bit of the rule's conditions */
	__u32 not_slot; /* bit of its `not` block, or RW_NET_NO_SLOT */
	__u32 action; /* RW_NET_* */
	__u32 class_minor; /* throttle: HTB class 1:<class_minor> */
};

/* LPM keys: prefix length in bits, then the address in network byte order. */
struct net_dst4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct net_dst6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* An inode: the executable itself (exact rules) or a directory above it (prefix rules). */
struct net_inode_key {
	__u64 ino;
	__u32 dev; /* kernel encoding: major << 20 | minor */
	__u32 _pad;
};

/*
 * Where a redirected connection was going. Saved by connect4/6 under the
 * socket cookie, moved by sockops under the client's local port once the
 * connection is established; the proxy takes it on accept.
 */
struct net_orig_dst {
	__u8 addr[16]; /* IPv4 in the first 4 bytes */
	__u32 rule; /* rule index */
	__u32 pid;
	__u16 port; /* host byte order */
	__u8 family; /* 4 or 6 */
	__u8 _pad[5];
};
_Static_assert(sizeof(struct net_orig_dst) == 32, "net_orig_dst layout changed: update the Rust asserts");

/* One enforced act (blocked, redirected, throttled). */
struct net_enforce_event {
	struct rw_hdr hdr; /* kind RW_KIND_NET_ENFORCE */
	__u64 cookie; /* socket cookie */
	__u64 cgroup_id;
	__u8 dst_addr[16]; /* the destination asked for; IPv4 in the first 4 bytes */
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__u32 rule; /* rule index */
	__u16 dst_port; /* host byte order */
	__u8 family; /* 4 or 6 */
	__u8 protocol; /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 action; /* RW_NET_* */
	__u8 activity; /* RW_NET_ACT_* */
	__u8 _pad[2];
	char comm[16];
};
_Static_assert(sizeof(struct net_enforce_event) == 88, "net_enforce_event layout changed: update the Rust asserts");

#endif /* RW_NET_ENFORCE_H */
