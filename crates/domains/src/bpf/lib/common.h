/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Shared by every ringwatch BPF object: the record header that starts every
 * event, the record kinds, the `events` ring buffer, the per-CPU `drops`
 * counter and the batched-wakeup output helpers.
 *
 * Each .bpf.c is its own object (one skeleton per hook family), so the maps
 * defined here exist once per object; user space reads `events` and sums
 * `drops` of each skeleton separately.
 */
#ifndef RW_COMMON_H
#define RW_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "compat.h"

/*
 * Record kinds. Ranges are reserved per domain so a new kind never collides:
 *   1..15 process, 16..31 file, 32..47 network, 48..63 keystroke.
 * 0 is never valid (a zeroed sample is malformed).
 */
#define RW_KIND_EXEC 1
#define RW_KIND_FORK 2
#define RW_KIND_EXIT 3
#define RW_KIND_FILE_OP 16 /* file/file.h struct file_event */

/*
 * First member of every event. User space dispatches on `kind` and checks
 * `size` (bytes of the whole sample, header included) against the sample
 * length before it reads anything else.
 */
struct rw_hdr {
	__u64 ktime; /* bpf_ktime_get_boot_ns(): CLOCK_BOOTTIME, ns */
	__u32 size; /* bytes in the whole sample */
	__u16 kind; /* RW_KIND_* */
	__u8 flags; /* per-kind flag bits (e.g. RW_EXEC_F_*) */
	__u8 _pad; /* always 0 */
};
_Static_assert(sizeof(struct rw_hdr) == 16, "rw_hdr layout changed: update the Rust asserts");

/* Ring buffer size; 8 MiB holds tens of thousands of typical process records. */
#ifndef RW_EVENTS_BYTES
#define RW_EVENTS_BYTES (8 * 1024 * 1024)
#endif

/*
 * Wake user space only once this much data waits; below it, records are
 * written with BPF_RB_NO_WAKEUP and user space picks them up on its 100 ms
 * poll timeout. One wakeup per batch instead of one per record is what keeps
 * per-event cost low (DESIGN.md section 2).
 */
#ifndef RW_WAKEUP_BYTES
#define RW_WAKEUP_BYTES (128 * 1024)
#endif

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, RW_EVENTS_BYTES);
} events SEC(".maps");

/* Records lost because `events` was full: one counter per CPU, summed by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

static __always_inline void rw_count_drop(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&drops, &zero);

	if (n)
		*n += 1; /* per-CPU slot: no other writer, no atomic needed */
}

/* BPF_RB_FORCE_WAKEUP once a batch is waiting, BPF_RB_NO_WAKEUP before. */
static __always_inline __u64 rw_wakeup_flags(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= RW_WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP
										: BPF_RB_NO_WAKEUP;
}

/* Reserves a fixed-size record; counts a drop when the ring is full. */
static __always_inline void *rw_reserve(__u64 size)
{
	void *rec = bpf_ringbuf_reserve(&events, size, 0);

	if (!rec)
		rw_count_drop();
	return rec;
}

static __always_inline void rw_submit(void *rec)
{
	bpf_ringbuf_submit(rec, rw_wakeup_flags());
}

/* Copies a variable-size record built in scratch memory; counts a drop on failure. */
static __always_inline long rw_output(void *data, __u64 size)
{
	long err = bpf_ringbuf_output(&events, data, size, rw_wakeup_flags());

	if (err)
		rw_count_drop();
	return err;
}

static __always_inline void rw_hdr_init(struct rw_hdr *hdr, __u16 kind, __u32 size)
{
	hdr->ktime = bpf_ktime_get_boot_ns();
	hdr->size = size;
	hdr->kind = kind;
	hdr->flags = 0;
	hdr->_pad = 0;
}

#endif /* RW_COMMON_H */
