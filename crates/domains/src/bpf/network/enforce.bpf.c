// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Network domain, kernel mode, management: evaluates the NetworkPlan's rules
 * at every connect and unconnected UDP send of the processes in one cgroup
 * subtree, and acts before a packet leaves:
 *
 * - block: the syscall fails with EPERM;
 * - redirect (TCP): the destination is rewritten to the local proxy, the
 *   original one saved under the socket cookie and handed over, once the
 *   connection is established, under the client's local port, where the proxy
 *   finds it on accept;
 * - throttle: the socket cookie is tagged with the rule's HTB class; the tc
 *   egress classifier below sets skb->priority so HTB queues it in that class.
 *
 * cgroup sock_addr hooks (kernel 4.17+, sendmsg 4.18+) are the only place this
 * kernel lets BPF veto or rewrite a connect without kprobes or BPF LSM
 * (DESIGN.md section 2). They miss: sockets created in a cgroup outside the
 * attach point, raw/packet sockets, connected UDP sends (the connect was
 * judged), and connections that exist before attach.
 */
#include "common.h"
#include <bpf/bpf_endian.h>
#include "enforce.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The rules in policy order, and the slots each condition does not constrain. Set before load. */
const volatile __u32 rule_count = 0;
const volatile struct net_rule rules[RW_NET_RULES_MAX] = {};
const volatile __u64 dst_any = 0;
const volatile __u64 port_any = 0;
const volatile __u64 uid_any = 0;
const volatile __u64 cgroup_any = 0;
const volatile __u64 exe_any = 0;
const volatile __u64 tcp_slots = 0;
const volatile __u64 udp_slots = 0;
/* Bit n: some rule names a cgroup at level n (the cgroup2 root is level 0). */
const volatile __u32 cgroup_levels = 0;
/* Skip the maps nobody filled. */
const volatile __u8 use_dst = 0;
const volatile __u8 use_port = 0;
const volatile __u8 use_uid = 0;
const volatile __u8 use_exe = 0;
/* The proxy's kernel port (IPv4 loopback, network byte order; port in host order). */
const volatile __u32 proxy_ip4 = 0;
const volatile __u16 proxy_port = 0;
/* SO_MARK of the proxy's outbound sockets: never redirected again, never blocked. 0: none. */
const volatile __u32 proxy_mark = 0;

/* Keep the wire structs in BTF so the skeleton generates Rust types for them. */
const struct net_enforce_event *_net_enforce_event __attribute__((unused));
const struct net_orig_dst *_net_orig_dst __attribute__((unused));
const struct net_dst4_key *_net_dst4_key __attribute__((unused));
const struct net_dst6_key *_net_dst6_key __attribute__((unused));
const struct net_inode_key *_net_inode_key __attribute__((unused));

/* Destination networks -> slots whose dst condition covers them (user space ORs in every enclosing prefix). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, RW_NET_COND_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct net_dst4_key);
	__type(value, __u64);
} dst4_slots SEC(".maps");

/* IPv6 networks, and IPv4 networks again as ::ffff:a.b.c.d/96+n for IPv4-mapped destinations. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, RW_NET_COND_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct net_dst6_key);
	__type(value, __u64);
} dst6_slots SEC(".maps");

/* Destination port (host order) -> slots whose port ranges contain it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} port_slots SEC(".maps");

/* Real uid -> slots naming it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RW_NET_COND_MAX);
	__type(key, __u32);
	__type(value, __u64);
} uid_slots SEC(".maps");

/* cgroup id -> slots naming that cgroup (the process is in it or below). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RW_NET_COND_MAX);
	__type(key, __u64);
	__type(value, __u64);
} cgroup_slots SEC(".maps");

/* Executable inode -> slots naming that exact path (resolved at start). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RW_NET_COND_MAX);
	__type(key, struct net_inode_key);
	__type(value, __u64);
} exe_file_slots SEC(".maps");

/* Directory inode -> slots naming that directory as an executable prefix. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RW_NET_COND_MAX);
	__type(key, struct net_inode_key);
	__type(value, __u64);
} exe_dir_slots SEC(".maps");

/* Socket cookie -> original destination, from connect until the connection is established. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, RW_NET_SOCKETS_MAX);
	__type(key, __u64);
	__type(value, struct net_orig_dst);
} redirect_by_cookie SEC(".maps");

/* Client local port (host order) -> original destination, until the proxy accepts the connection. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, RW_NET_SOCKETS_MAX);
	__type(key, __u32);
	__type(value, struct net_orig_dst);
} redirect_by_port SEC(".maps");

/* Socket cookie -> HTB class minor of the throttle rule that matched it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, RW_NET_SOCKETS_MAX);
	__type(key, __u64);
	__type(value, __u32);
} throttle_by_cookie SEC(".maps");

static __always_inline __u64 lookup_slots(void *map, const void *key)
{
	__u64 *slots = bpf_map_lookup_elem(map, key);

	return slots ? *slots : 0;
}

/* Slots whose cgroup condition holds: the current cgroup or an ancestor is named. */
static __always_inline __u64 cgroup_match(void)
{
	__u64 slots = cgroup_any, id;
	__u32 level;

	for (level = 0; level < RW_NET_CGROUP_LEVELS; level++) {
		if (!(cgroup_levels & (1u << level)))
			continue;
		id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			break; /* deeper than the current cgroup */
		slots |= lookup_slots(&cgroup_slots, &id);
	}
	return slots;
}

static __always_inline __u64 inode_slots(void *map, struct dentry *dentry)
{
	struct net_inode_key key = {};

	key.ino = BPF_CORE_READ(dentry, d_inode, i_ino);
	key.dev = BPF_CORE_READ(dentry, d_sb, s_dev);
	return lookup_slots(map, &key);
}

static __always_inline struct mount *real_mount(struct vfsmount *vfsmnt)
{
	return (struct mount *)((void *)vfsmnt - bpf_core_field_offset(struct mount, mnt));
}

/*
 * Slots whose exe condition holds: the executable's inode is named exactly, or
 * a directory above it (crossing mounts up to the mount namespace's root) is
 * named as a prefix. Inodes, not path strings: no path walk into a buffer, and
 * a hard link or bind mount of a named file matches too.
 */
static __always_inline __u64 exe_match(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct dentry *dentry, *mnt_root;
	struct mount *mnt, *parent;
	struct file *exe;
	__u64 slots = exe_any;
	__u32 i;

	exe = BPF_CORE_READ(task, mm, exe_file);
	if (!exe)
		return slots; /* kernel thread */
	dentry = BPF_CORE_READ(exe, f_path.dentry);
	slots |= inode_slots(&exe_file_slots, dentry);
	mnt = real_mount(BPF_CORE_READ(exe, f_path.mnt));
	mnt_root = BPF_CORE_READ(mnt, mnt.mnt_root);
	for (i = 0; i < RW_NET_EXE_DEPTH; i++) {
		if (dentry == mnt_root) {
			parent = BPF_CORE_READ(mnt, mnt_parent);
			if (parent == mnt)
				break; /* the root of the mount namespace */
			/* The mountpoint dentry is hidden by this mount: its path was the mount root's, checked. */
			dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = parent;
			mnt_root = BPF_CORE_READ(mnt, mnt.mnt_root);
			continue;
		}
		dentry = BPF_CORE_READ(dentry, d_parent);
		slots |= inode_slots(&exe_dir_slots, dentry);
	}
	return slots;
}

static __always_inline void emit(void *ctx, const __u8 *addr, __u8 family, __u16 port, __u8 protocol, __u8 action,
				 __u8 activity, __u32 rule)
{
	struct net_enforce_event *ev = rw_reserve(sizeof(*ev));
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	if (!ev)
		return;
	rw_hdr_init(&ev->hdr, RW_KIND_NET_ENFORCE, sizeof(*ev));
	ev->cookie = bpf_get_socket_cookie(ctx);
	ev->cgroup_id = bpf_get_current_cgroup_id();
	__builtin_memcpy(ev->dst_addr, addr, 16);
	ev->pid = pid_tgid >> 32;
	ev->tid = (__u32)pid_tgid;
	ev->uid = (__u32)bpf_get_current_uid_gid();
	ev->rule = rule;
	ev->dst_port = port;
	ev->family = family;
	ev->protocol = protocol;
	ev->action = action;
	ev->activity = activity;
	ev->_pad[0] = 0;
	ev->_pad[1] = 0;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	rw_submit(ev);
}

/*
 * The first rule whose conditions hold for this connect/send, as an index
 * into rules[], or -1. `addr` is 16 bytes (IPv4 in the first 4), `port` host
 * order.
 */
static __always_inline int first_match(const __u8 *addr, __u8 family, __u16 port, __u8 protocol)
{
	__u64 slots, bit, not_bit;
	__u32 i, key;

	slots = protocol == RW_IPPROTO_TCP ? tcp_slots : protocol == RW_IPPROTO_UDP ? udp_slots : 0;
	if (use_dst && slots) {
		if (family == 4) {
			struct net_dst4_key k = {.prefixlen = 32};

			__builtin_memcpy(k.addr, addr, 4);
			slots &= dst_any | lookup_slots(&dst4_slots, &k);
		} else {
			struct net_dst6_key k = {.prefixlen = 128};

			__builtin_memcpy(k.addr, addr, 16);
			slots &= dst_any | lookup_slots(&dst6_slots, &k);
		}
	}
	if (use_port && slots) {
		key = port;
		slots &= port_any | lookup_slots(&port_slots, &key);
	}
	if (use_uid && slots) {
		key = (__u32)bpf_get_current_uid_gid();
		slots &= uid_any | lookup_slots(&uid_slots, &key);
	}
	if (cgroup_levels && slots)
		slots &= cgroup_match();
	if (use_exe && slots)
		slots &= exe_match();
	if (!slots)
		return -1;
	for (i = 0; i < RW_NET_RULES_MAX; i++) {
		if (i >= rule_count)
			break;
		bit = 1ULL << (rules[i].slot & (RW_NET_SLOTS - 1));
		if (!(slots & bit))
			continue;
		if (rules[i].not_slot != RW_NET_NO_SLOT) {
			not_bit = 1ULL << (rules[i].not_slot & (RW_NET_SLOTS - 1));
			if (slots & not_bit)
				continue;
		}
		return i;
	}
	return -1;
}

/*
 * Shared by the four sock_addr hooks: 1 lets the call go on (possibly with a
 * rewritten destination), 0 fails it with EPERM.
 */
static __always_inline int enforce(struct bpf_sock_addr *ctx, const __u8 *addr, __u8 family, __u16 port, __u8 activity)
{
	__u8 protocol = ctx->protocol;
	__u32 action, class_minor;
	__u64 cookie;
	int rule;

	if (proxy_mark && ctx->sk->mark == proxy_mark)
		return 1;
	rule = first_match(addr, family, port, protocol);
	if (rule < 0 || rule >= RW_NET_RULES_MAX)
		return 1;
	action = rules[rule].action;
	if (action == RW_NET_BLOCK) {
		emit(ctx, addr, family, port, protocol, RW_NET_BLOCK, activity, rule);
		return 0;
	}
	if (action == RW_NET_REDIRECT) {
		struct net_orig_dst orig = {};

		/* UDP has no connection for the proxy to accept: user space refuses UDP-only redirect rules. */
		if (protocol != RW_IPPROTO_TCP || activity != RW_NET_ACT_CONNECT || !proxy_port)
			return 1;
		__builtin_memcpy(orig.addr, addr, 16);
		orig.rule = rule;
		orig.pid = bpf_get_current_pid_tgid() >> 32;
		orig.port = port;
		orig.family = family;
		cookie = bpf_get_socket_cookie(ctx);
		if (bpf_map_update_elem(&redirect_by_cookie, &cookie, &orig, BPF_ANY))
			return 1; /* cannot hand it over: let it through unredirected (counted as not redirected) */
		if (family == 4) {
			ctx->user_ip4 = proxy_ip4;
		} else {
			/* An IPv6 socket reaches the IPv4 proxy through the IPv4-mapped address. */
			ctx->user_ip6[0] = 0;
			ctx->user_ip6[1] = 0;
			ctx->user_ip6[2] = bpf_htonl(0xffff);
			ctx->user_ip6[3] = proxy_ip4;
		}
		ctx->user_port = bpf_htons(proxy_port);
		/* No record here: the proxy reports the connection once, with this pid and rule from orig. */
		return 1;
	}
	if (action == RW_NET_THROTTLE) {
		class_minor = rules[rule].class_minor;
		cookie = bpf_get_socket_cookie(ctx);
		/* A socket that sends to several destinations stays in its first class. */
		if (bpf_map_update_elem(&throttle_by_cookie, &cookie, &class_minor, BPF_NOEXIST) == 0)
			emit(ctx, addr, family, port, protocol, RW_NET_THROTTLE, activity, rule);
		return 1;
	}
	return 1; /* observe / alert: an exception to later rules; the monitor reports it */
}

static __always_inline int enforce4(struct bpf_sock_addr *ctx, __u8 activity)
{
	__u8 addr[16] = {};
	__u32 ip = ctx->user_ip4;

	__builtin_memcpy(addr, &ip, 4);
	return enforce(ctx, addr, 4, bpf_ntohs(ctx->user_port), activity);
}

static __always_inline int enforce6(struct bpf_sock_addr *ctx, __u8 activity)
{
	__u32 ip[4];

	ip[0] = ctx->user_ip6[0];
	ip[1] = ctx->user_ip6[1];
	ip[2] = ctx->user_ip6[2];
	ip[3] = ctx->user_ip6[3];
	return enforce(ctx, (const __u8 *)ip, 6, bpf_ntohs(ctx->user_port), activity);
}

/* connect(2) on an IPv4 socket (TCP, and UDP "connect"), before the kernel routes it. */
SEC("cgroup/connect4")
int handle_enf_conn4(struct bpf_sock_addr *ctx)
{
	return enforce4(ctx, RW_NET_ACT_CONNECT);
}

/* connect(2) on an IPv6 socket, including IPv4-mapped destinations. */
SEC("cgroup/connect6")
int handle_enf_conn6(struct bpf_sock_addr *ctx)
{
	return enforce6(ctx, RW_NET_ACT_CONNECT);
}

/* sendto/sendmsg with an address on an unconnected UDP socket (kernel 4.18+); connected sends skip it. */
SEC("cgroup/sendmsg4")
int handle_enf_send4(struct bpf_sock_addr *ctx)
{
	return enforce4(ctx, RW_NET_ACT_SEND);
}

SEC("cgroup/sendmsg6")
int handle_enf_send6(struct bpf_sock_addr *ctx)
{
	return enforce6(ctx, RW_NET_ACT_SEND);
}

/*
 * An active TCP connection just got established (SYN-ACK received, before the
 * final ACK goes out, so before the proxy can accept it): move a redirected
 * socket's original destination from its cookie to its local port, the one
 * thing the proxy can see of its peer. Runs for every TCP socket in the
 * cgroup; costs one hash lookup for the others.
 */
SEC("sockops")
int handle_enf_sockops(struct bpf_sock_ops *skops)
{
	struct net_orig_dst *orig;
	__u32 local_port;
	__u64 cookie;

	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;
	cookie = bpf_get_socket_cookie(skops);
	orig = bpf_map_lookup_elem(&redirect_by_cookie, &cookie);
	if (!orig)
		return 1;
	local_port = skops->local_port;
	bpf_map_update_elem(&redirect_by_port, &local_port, orig, BPF_ANY);
	bpf_map_delete_elem(&redirect_by_cookie, &cookie);
	return 1;
}

/*
 * tc egress (clsact, direct action) on the throttled interfaces: a packet of
 * a throttled socket gets skb->priority = 1:<class>, which HTB (root handle
 * 1:) reads before any filter and queues in that class. Other packets keep
 * their priority and, with no HTB default class, bypass the rate limit.
 */
SEC("tc")
int handle_enf_egress(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u32 *class_minor;

	if (!cookie)
		return RW_TC_ACT_OK;
	class_minor = bpf_map_lookup_elem(&throttle_by_cookie, &cookie);
	if (class_minor)
		skb->priority = (1u << 16) | (*class_minor & 0xffff);
	return RW_TC_ACT_OK;
}
