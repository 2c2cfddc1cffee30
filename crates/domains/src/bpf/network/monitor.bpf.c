// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Network domain, kernel mode, monitor: TCP connect/accept/listen/close with
 * bytes and duration, UDP connect and sends, and the DNS packets of the
 * monitored cgroup, each attributed to a process.
 *
 * Hooks (no kprobes, fentry or LSM on the hosts ringwatch targets, DESIGN.md
 * section 2):
 * - tp_btf/inet_sock_set_state (4.16+): every TCP state change. Some changes
 *   run in softirq (ESTABLISHED on a SYN-ACK or final ACK, CLOSE after FIN),
 *   where the current task is not the socket's owner; so attribution comes
 *   from `sock_owner`, keyed by socket cookie and filled in process context.
 * - cgroup/sock_create, cgroup/sock_release (5.9+): socket() and the last
 *   close() of every inet socket in the cgroup, in the caller's context.
 * - cgroup/connect4/6, cgroup/sendmsg4/6 (4.17/4.18+): UDP connect(2) and
 *   unconnected UDP sends, in the caller's context, with the destination.
 * - cgroup_skb/egress, cgroup_skb/ingress (4.10+): the DNS packets (UDP or TCP
 *   port 53) of sockets in the cgroup; a bounded prefix goes to user space,
 *   which parses it.
 *
 * The programs are named mon_* (not handle_*) so they are told apart from the
 * enforcement object's connect4/sendmsg4 programs on the same cgroup.
 */
#include "common.h"
#include "task.h"
#include "monitor.h"
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The agent's own pid (tgid), set before load: its sockets (the proxy's too) are not reported. */
const volatile __u32 agent_tgid = 0;

/*
 * 1 when the programs are attached at the cgroup2 root: sockets that existed
 * before the agent started are adopted by the task that connects, listens or
 * closes them, and a child of an unknown listener is reported unattributed.
 * 0 (attached below the root): only sockets created in that cgroup count.
 */
const volatile __u8 report_unowned = 0;

/* A UDP socket's sends to one destination are reported again only after this long. */
const volatile __u64 udp_repeat_ns = 60ULL * 1000 * 1000 * 1000;

/* DNS server port (53). */
const volatile __u16 dns_port = 53;

/* Keep the wire structs in BTF so the skeleton generates Rust types for them. */
const struct conn_event *_conn_event __attribute__((unused));
const struct dns_event *_dns_event __attribute__((unused));
const struct sock_owner *_sock_owner __attribute__((unused));

/* Socket cookie -> owner. LRU: a socket whose release was missed cannot leak an entry forever. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sock_owner);
} sock_owner SEC(".maps");

/* Listening port -> the listener's owner, for its children (accepted sockets are created in softirq). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct listen_key);
	__type(value, struct sock_owner);
} listen_owner SEC(".maps");

/* (UDP socket, destination) -> when a send to it was last reported. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct udp_dst_key);
	__type(value, __u64);
} udp_dst_seen SEC(".maps");

static __always_inline __u32 current_tgid(void)
{
	return bpf_get_current_pid_tgid() >> 32;
}

/*
 * The calling task as a socket owner. bpf_get_current_task_btf() gives a BTF
 * pointer, so the fields are plain loads (no bpf_probe_read_kernel per field):
 * this runs at every socket() in the cgroup.
 */
static __always_inline void owner_from_current(struct sock_owner *o)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct task_struct *leader = task->group_leader;
	const struct cred *cred = task->cred;

	o->id.start_ns = leader->start_boottime;
	o->id.pid = task->tgid;
	o->id.tid = task->pid;
	o->id.ppid = task->real_parent->tgid;
	o->id._pad = 0;
	/* The process's name, not the acting thread's (resolvers and runtimes name their threads). */
	__builtin_memcpy(o->id.comm, leader->comm, sizeof(o->id.comm));
	o->uid = cred->uid.val;
	o->euid = cred->euid.val;
	o->gid = cred->gid.val;
	o->cgroup_id = bpf_get_current_cgroup_id();
	o->established_ns = 0;
	o->flags = 0;
	__builtin_memset(o->_pad, 0, sizeof(o->_pad));
}

/* The socket owner's identity into a record (conn_event or dns_event: both have id, cgroup_id, uid, euid, gid and
 * hdr); no owner known: zeros and RW_NET_F_UNATTRIBUTED. A macro because the two record types differ. */
#define set_owner(e, o)                                                                                                \
	do {                                                                                                           \
		if (o) {                                                                                               \
			(e)->id = (o)->id;                                                                             \
			(e)->cgroup_id = (o)->cgroup_id;                                                               \
			(e)->uid = (o)->uid;                                                                           \
			(e)->euid = (o)->euid;                                                                         \
			(e)->gid = (o)->gid;                                                                           \
		} else {                                                                                               \
			__builtin_memset(&(e)->id, 0, sizeof((e)->id));                                                \
			(e)->cgroup_id = 0;                                                                            \
			(e)->uid = 0;                                                                                  \
			(e)->euid = 0;                                                                                 \
			(e)->gid = 0;                                                                                  \
			(e)->hdr.flags |= RW_NET_F_UNATTRIBUTED;                                                       \
		}                                                                                                      \
	} while (0)

/* Header at `now`, process and zeroed counters of a conn_event; flags are added to hdr.flags. */
static __always_inline void conn_init(struct conn_event *e, const struct sock_owner *o, __u8 activity, __u8 flags,
				      __u64 now)
{
	e->hdr.ktime = now;
	e->hdr.size = sizeof(*e);
	e->hdr.kind = RW_KIND_NET_CONN;
	e->hdr.flags = flags;
	e->hdr._pad = 0;
	set_owner(e, o);
	e->bytes_out = 0;
	e->bytes_in = 0;
	e->duration_ns = 0;
	e->activity = activity;
	e->error = 0;
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
}

/*
 * Local and remote end of a TCP socket. `sk` and `tp` are BTF pointers (tp_btf
 * arguments): plain loads, no bpf_probe_read_kernel per field.
 */
static __always_inline void conn_tuple_sk(struct conn_event *e, const struct sock *sk, const struct tcp_sock *tp)
{
	__u16 family = sk->__sk_common.skc_family;

	e->family = family;
	e->protocol = RW_IPPROTO_TCP;
	/* inet_sport, not skc_num: the port is released (skc_num 0) before the change to CLOSE. */
	e->sport = bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport);
	e->dport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (family == RW_AF_INET6) {
		__builtin_memcpy(e->saddr, sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
		__builtin_memcpy(e->daddr, sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8, 16);
	} else {
		*(__u32 *)e->saddr = sk->__sk_common.skc_rcv_saddr;
		*(__u32 *)e->daddr = sk->__sk_common.skc_daddr;
	}
}

/*
 * Payload bytes of a socket reaching CLOSE from `oldstate`. tcp_sock's
 * bytes_acked and bytes_received count sequence space: the active opener's
 * SYN (acked in SYN_SENT; a listener's child starts past its SYN-ACK), our FIN
 * once acked, and the peer's FIN once received. Those are taken off.
 */
static __always_inline void close_bytes(struct conn_event *e, const struct sock *sk, const struct tcp_sock *tp,
					int oldstate, __u8 outbound)
{
	__u64 acked = tp->bytes_acked, received = tp->bytes_received;
	/* FIN_WAIT2 comes only after our FIN was acked; LAST_ACK and CLOSING end when it is. */
	int fin_sent = oldstate == TCP_FIN_WAIT2 || oldstate == TCP_LAST_ACK || oldstate == TCP_CLOSING;
	__u64 fin_acked = fin_sent && tp->snd_una == tp->write_seq;
	/* SOCK_DONE is set by tcp_fin() when the peer's FIN arrives (a RST does not set it). */
	__u64 fin_received = (sk->__sk_common.skc_flags >> SOCK_DONE) & 1;
	__u64 syn = outbound ? 1 : 0;

	e->bytes_out = acked >= syn + fin_acked ? acked - syn - fin_acked : 0;
	e->bytes_in = received >= fin_received ? received - fin_received : 0;
}

static __always_inline void emit_tcp(const struct sock *sk, const struct sock_owner *o, __u8 activity, __u8 flags,
				     int oldstate, __u64 now)
{
	const struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
	struct conn_event *e;

	if (!tp)
		return;
	e = rw_reserve(sizeof(*e));
	if (!e)
		return;
	conn_init(e, o, activity, flags, now);
	conn_tuple_sk(e, sk, tp);
	if (activity == RW_NET_CLOSE) {
		close_bytes(e, sk, tp, oldstate, flags & RW_NET_F_OUTBOUND);
		if (o && o->established_ns)
			e->duration_ns = now - o->established_ns;
	} else if (flags & RW_NET_F_REFUSED) {
		/* Set by tcp_reset (ECONNREFUSED), tcp_write_err (ETIMEDOUT) or an ICMP error before tcp_done. */
		e->error = sk->sk_err;
	}
	rw_submit(e);
}

/*
 * The owner of a socket at a state change made by its process (connect,
 * listen, close/shutdown): refreshed to the calling task, which may differ
 * from the creator (fd passing, fork). A socket not created under the cgroup
 * is adopted only with report_unowned.
 */
static __always_inline struct sock_owner *owner_in_process_context(__u64 cookie)
{
	struct sock_owner *o = bpf_map_lookup_elem(&sock_owner, &cookie);
	struct sock_owner fresh;

	__u64 pid_tgid = bpf_get_current_pid_tgid();

	if ((pid_tgid >> 32) == agent_tgid)
		return NULL;
	if (!o && !report_unowned)
		return NULL;
	/* The usual case, connect() or listen() by the thread that created the socket: nothing to refresh. */
	if (o && o->id.tid == (__u32)pid_tgid && o->id.pid == (pid_tgid >> 32))
		return o;
	owner_from_current(&fresh);
	if (o) {
		fresh.established_ns = o->established_ns;
		fresh.flags = o->flags;
	} else {
		fresh.flags = RW_NET_F_NO_START;
	}
	bpf_map_update_elem(&sock_owner, &cookie, &fresh, BPF_ANY);
	return bpf_map_lookup_elem(&sock_owner, &cookie);
}

static __always_inline void listen_key_of(struct listen_key *k, const struct sock *sk)
{
	k->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	k->port = BPF_CORE_READ(sk, __sk_common.skc_num);
	k->_pad = 0;
}

/* A listener's child reached ESTABLISHED (softirq): owned by whoever listens on its port. */
static __always_inline void on_accepted(const struct sock *sk, __u64 cookie, int oldstate)
{
	struct listen_key k;
	struct sock_owner *listener, child;

	listen_key_of(&k, sk);
	listener = bpf_map_lookup_elem(&listen_owner, &k);
	if (!listener && !report_unowned)
		return;
	if (listener) {
		child = *listener;
	} else {
		__builtin_memset(&child, 0, sizeof(child));
		child.flags = RW_NET_F_UNATTRIBUTED;
	}
	child.established_ns = bpf_ktime_get_boot_ns();
	child.flags |= RW_NET_F_INBOUND;
	child.flags &= ~RW_NET_F_NO_START;
	bpf_map_update_elem(&sock_owner, &cookie, &child, BPF_ANY);
	emit_tcp(sk, listener, RW_NET_ACCEPT, RW_NET_F_INBOUND, oldstate, child.established_ns);
}

/*
 * Every TCP state change, about ten per connection: the ones not reported
 * leave on the first compare, before any helper call. Process context:
 * CLOSE->SYN_SENT (connect), CLOSE->LISTEN (listen), ESTABLISHED->FIN_WAIT1
 * and CLOSE_WAIT->LAST_ACK (close/shutdown). Usually softirq:
 * SYN_SENT->ESTABLISHED, SYN_RECV->ESTABLISHED, *->CLOSE.
 */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(mon_state, const struct sock *sk, const int oldstate, const int newstate)
{
	__u64 cookie;
	struct sock_owner *o;

	/* Most transitions (SYN_RECV, FIN_WAIT2, CLOSE_WAIT, TIME_WAIT...) tell nothing new: leave before any lookup. */
	switch (newstate) {
	case TCP_SYN_SENT:
	case TCP_LISTEN:
	case TCP_ESTABLISHED:
	case TCP_CLOSE:
		break;
	case TCP_FIN_WAIT1:
	case TCP_LAST_ACK:
		if (report_unowned)
			break;
		return 0;
	default:
		return 0;
	}
	if (sk->sk_protocol != RW_IPPROTO_TCP)
		return 0;
	cookie = bpf_get_socket_cookie((void *)sk);

	switch (newstate) {
	case TCP_SYN_SENT:
		o = owner_in_process_context(cookie);
		if (o)
			o->flags = RW_NET_F_OUTBOUND;
		return 0;
	case TCP_LISTEN: {
		struct listen_key k;

		o = owner_in_process_context(cookie);
		if (!o)
			return 0;
		listen_key_of(&k, sk);
		bpf_map_update_elem(&listen_owner, &k, o, BPF_ANY);
		emit_tcp(sk, o, RW_NET_LISTEN, 0, oldstate, bpf_ktime_get_boot_ns());
		return 0;
	}
	case TCP_FIN_WAIT1:
	case TCP_LAST_ACK:
		/* Only adopts a socket that predates the agent; known owners stay as they are. */
		if (report_unowned && !bpf_map_lookup_elem(&sock_owner, &cookie))
			owner_in_process_context(cookie);
		return 0;
	case TCP_ESTABLISHED:
		if (oldstate == TCP_SYN_RECV) {
			on_accepted(sk, cookie, oldstate);
			return 0;
		}
		o = bpf_map_lookup_elem(&sock_owner, &cookie);
		if (!o)
			return 0;
		o->established_ns = bpf_ktime_get_boot_ns();
		o->flags = RW_NET_F_OUTBOUND;
		emit_tcp(sk, o, RW_NET_CONNECT, RW_NET_F_OUTBOUND, oldstate, o->established_ns);
		return 0;
	case TCP_CLOSE:
		o = bpf_map_lookup_elem(&sock_owner, &cookie);
		if (!o)
			return 0;
		if (oldstate == TCP_SYN_SENT)
			emit_tcp(sk, o, RW_NET_CONNECT, RW_NET_F_OUTBOUND | RW_NET_F_REFUSED, oldstate,
				 bpf_ktime_get_boot_ns());
		else if (oldstate != TCP_LISTEN && (o->established_ns || (o->flags & RW_NET_F_NO_START)))
			emit_tcp(sk, o, RW_NET_CLOSE,
				 o->flags & (RW_NET_F_INBOUND | RW_NET_F_OUTBOUND | RW_NET_F_NO_START), oldstate,
				 bpf_ktime_get_boot_ns());
		if (!sk->sk_socket) {
			/* Closed by its process already (mon_sk_free kept the entry for this moment): forget it. */
			bpf_map_delete_elem(&sock_owner, &cookie);
			return 0;
		}
		/* The socket may connect or listen again: the next process-context change re-reads the owner. */
		o->established_ns = 0;
		o->flags = 0;
		return 0;
	default:
		return 0;
	}
}

/* socket(2) of a TCP or UDP socket in the cgroup: the caller owns it. */
SEC("cgroup/sock_create")
int mon_sk_new(struct bpf_sock *ctx)
{
	struct sock_owner o;
	__u64 cookie;

	if (ctx->protocol != RW_IPPROTO_TCP && ctx->protocol != RW_IPPROTO_UDP)
		return 1;
	if (current_tgid() == agent_tgid)
		return 1;
	cookie = bpf_get_socket_cookie(ctx);
	owner_from_current(&o);
	bpf_map_update_elem(&sock_owner, &cookie, &o, BPF_ANY);
	return 1;
}

/*
 * The process closed the socket: forget its owner, except for a TCP socket
 * still closing (FIN_WAIT*, LAST_ACK...), whose close is reported when it
 * reaches CLOSE later, in softirq; mon_state forgets it then.
 */
SEC("cgroup/sock_release")
int mon_sk_free(struct bpf_sock *ctx)
{
	__u64 cookie;

	if (ctx->protocol == RW_IPPROTO_TCP && ctx->state != BPF_TCP_CLOSE)
		return 1;
	cookie = bpf_get_socket_cookie(ctx);
	bpf_map_delete_elem(&sock_owner, &cookie);
	return 1;
}

/* A UDP connect(2) or send: one record, with the caller as the process. */
static __always_inline void emit_udp(struct bpf_sock_addr *ctx, __u8 activity, __u16 family)
{
	struct sock_owner o;
	struct conn_event *e;
	struct bpf_sock *sk = ctx->sk;

	owner_from_current(&o);
	e = rw_reserve(sizeof(*e));
	if (!e)
		return;
	conn_init(e, &o, activity, RW_NET_F_OUTBOUND, bpf_ktime_get_boot_ns());
	e->family = family;
	e->protocol = RW_IPPROTO_UDP;
	e->dport = bpf_ntohs((__u16)ctx->user_port);
	e->sport = sk ? (__u16)sk->src_port : 0;
	if (family == RW_AF_INET6) {
		__u32 *d = (__u32 *)e->daddr, *s = (__u32 *)e->saddr;

		d[0] = ctx->user_ip6[0];
		d[1] = ctx->user_ip6[1];
		d[2] = ctx->user_ip6[2];
		d[3] = ctx->user_ip6[3];
		if (activity == RW_NET_SEND) {
			s[0] = ctx->msg_src_ip6[0];
			s[1] = ctx->msg_src_ip6[1];
			s[2] = ctx->msg_src_ip6[2];
			s[3] = ctx->msg_src_ip6[3];
		}
	} else {
		*(__u32 *)e->daddr = ctx->user_ip4;
		if (activity == RW_NET_SEND)
			*(__u32 *)e->saddr = ctx->msg_src_ip4;
		if (!*(__u32 *)e->saddr && sk)
			*(__u32 *)e->saddr = sk->src_ip4;
	}
	rw_submit(e);
}

/* True when this socket's sends to this destination were reported less than udp_repeat_ns ago. */
static __always_inline int udp_seen_recently(struct bpf_sock_addr *ctx, __u16 family)
{
	struct udp_dst_key k = {};
	__u64 now = bpf_ktime_get_boot_ns(), *last;
	__u32 *d = (__u32 *)k.daddr;

	k.cookie = bpf_get_socket_cookie(ctx);
	k.dport = (__u16)ctx->user_port;
	if (family == RW_AF_INET6) {
		d[0] = ctx->user_ip6[0];
		d[1] = ctx->user_ip6[1];
		d[2] = ctx->user_ip6[2];
		d[3] = ctx->user_ip6[3];
	} else {
		d[0] = ctx->user_ip4;
	}
	last = bpf_map_lookup_elem(&udp_dst_seen, &k);
	if (last && now - *last < udp_repeat_ns)
		return 1;
	bpf_map_update_elem(&udp_dst_seen, &k, &now, BPF_ANY);
	return 0;
}

static __always_inline void on_udp_addr(struct bpf_sock_addr *ctx, __u8 activity, __u16 family)
{
	if (ctx->protocol != RW_IPPROTO_UDP || current_tgid() == agent_tgid)
		return;
	if (activity == RW_NET_SEND && udp_seen_recently(ctx, family))
		return;
	emit_udp(ctx, activity, family);
}

/* connect(2) on a UDP socket (TCP connects are reported by mon_state once established or refused). */
SEC("cgroup/connect4")
int mon_connect4(struct bpf_sock_addr *ctx)
{
	on_udp_addr(ctx, RW_NET_CONNECT, RW_AF_INET);
	return 1;
}

SEC("cgroup/connect6")
int mon_connect6(struct bpf_sock_addr *ctx)
{
	on_udp_addr(ctx, RW_NET_CONNECT, RW_AF_INET6);
	return 1;
}

/* sendto/sendmsg with a destination on an unconnected UDP socket (send(2) on a connected one does not run it). */
SEC("cgroup/sendmsg4")
int mon_sendmsg4(struct bpf_sock_addr *ctx)
{
	on_udp_addr(ctx, RW_NET_SEND, RW_AF_INET);
	return 1;
}

SEC("cgroup/sendmsg6")
int mon_sendmsg6(struct bpf_sock_addr *ctx)
{
	on_udp_addr(ctx, RW_NET_SEND, RW_AF_INET6);
	return 1;
}

/*
 * DNS capture. cgroup_skb data starts at the IP header in both directions.
 * IPv6 extension headers and non-first IPv4 fragments are not followed.
 */
static __always_inline void dns_capture(struct __sk_buff *skb, __u8 direction)
{
	__u8 first, proto;
	__u32 l4, off, len;
	__u16 ports[2], family;
	__u8 saddr[16] = {}, daddr[16] = {};
	struct sock_owner *o;
	struct dns_event *e;
	__u64 cookie;
	struct bpf_sock *sk;
	/* remote_port holds the port in network order in its upper 16 bits. */
	__u16 remote_port = bpf_ntohs(skb->remote_port >> 16);

	/*
	 * This runs for every packet of the cgroup, so the usual case leaves on
	 * the socket's ports, without touching the packet or calling a helper: a
	 * connected socket (TCP, connected UDP) has both, a TCP listener its own
	 * (its handshake packets pass here with it). Only an unconnected UDP
	 * socket (sendto) needs the packet's ports.
	 */
	if (skb->local_port != dns_port && remote_port != dns_port) {
		if (remote_port)
			return;
		sk = skb->sk;
		if (!sk || sk->state == BPF_TCP_LISTEN)
			return;
	}
	if (bpf_skb_load_bytes(skb, 0, &first, 1))
		return;
	if ((first >> 4) == 4) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return;
		if (ip.frag_off & bpf_htons(0x1fff))
			return;
		proto = ip.protocol;
		l4 = (first & 0x0f) * 4;
		family = RW_AF_INET;
		*(__u32 *)saddr = ip.saddr;
		*(__u32 *)daddr = ip.daddr;
	} else if ((first >> 4) == 6) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return;
		proto = ip6.nexthdr;
		l4 = sizeof(ip6);
		family = RW_AF_INET6;
		__builtin_memcpy(saddr, &ip6.saddr, 16);
		__builtin_memcpy(daddr, &ip6.daddr, 16);
	} else {
		return;
	}
	if (proto != RW_IPPROTO_UDP && proto != RW_IPPROTO_TCP)
		return;
	if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)))
		return;
	if (bpf_ntohs(ports[0]) != dns_port && bpf_ntohs(ports[1]) != dns_port)
		return;
	if (proto == RW_IPPROTO_UDP) {
		off = l4 + 8;
	} else {
		__u8 doff;

		if (bpf_skb_load_bytes(skb, l4 + 12, &doff, 1))
			return;
		off = l4 + (doff >> 4) * 4;
	}
	if (skb->len <= off)
		return; /* no payload: a TCP handshake or ACK */
	len = skb->len - off;
	if (len > RW_DNS_PAYLOAD_MAX)
		len = RW_DNS_PAYLOAD_MAX;

	e = rw_reserve(sizeof(*e));
	if (!e)
		return;
	rw_hdr_init(&e->hdr, RW_KIND_NET_DNS, sizeof(*e));
	cookie = bpf_get_socket_cookie(skb);
	o = bpf_map_lookup_elem(&sock_owner, &cookie);
	set_owner(e, o);
	__builtin_memcpy(e->saddr, saddr, 16);
	__builtin_memcpy(e->daddr, daddr, 16);
	e->sport = bpf_ntohs(ports[0]);
	e->dport = bpf_ntohs(ports[1]);
	e->family = family;
	e->protocol = proto;
	e->direction = direction;
	__builtin_memset(e->_pad, 0, sizeof(e->_pad));
	e->payload_len = 0;
	if (len >= 1 && len <= RW_DNS_PAYLOAD_MAX && !bpf_skb_load_bytes(skb, off, e->payload, len))
		e->payload_len = len;
	rw_submit(e);
}

SEC("cgroup_skb/egress")
int mon_dns_out(struct __sk_buff *skb)
{
	dns_capture(skb, RW_DNS_EGRESS);
	return 1;
}

SEC("cgroup_skb/ingress")
int mon_dns_in(struct __sk_buff *skb)
{
	dns_capture(skb, RW_DNS_INGRESS);
	return 1;
}
