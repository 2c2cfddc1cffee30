/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Absolute path of a `struct path` (dentry + vfsmount), built like d_path():
 * walk d_parent up to the root of the mount, jump to the mountpoint in the
 * parent mount, and stop at the root of the mount namespace. Names are
 * prepended right to left into a per-CPU scratch buffer.
 *
 * No kprobes/fentry here means no bpf_d_path(); this walk is what is left. It
 * uses bpf_loop (kernel 5.17+) so the verifier checks one step, not
 * RW_PATH_DEPTH copies of it.
 *
 * What it cannot do: paths are relative to the root of the task's mount
 * namespace (a containerised process shows its in-container path, like
 * /proc/PID/exe read from inside the container); a chroot is not honoured;
 * unlinked files get no " (deleted)" suffix; pseudo filesystems (memfd,
 * anon inodes) yield "/<name>" instead of d_dname()'s "memfd:x"; the walk
 * reads without the rename seqlock, so a concurrent rename can give a torn
 * path (harmless for exec images, which are busy while mapped).
 */
#ifndef RW_PATH_H
#define RW_PATH_H

#include "common.h"

#define RW_PATH_MAX 4096 /* PATH_MAX */
#define RW_PATH_MASK (RW_PATH_MAX - 1)
#define RW_NAME_MAX 255 /* NAME_MAX */
#define RW_PATH_DEPTH 1024 /* components; PATH_MAX/2 is the most a real path has */

_Static_assert((RW_PATH_MAX & RW_PATH_MASK) == 0, "RW_PATH_MAX must be a power of two");

/* The name being prepended may start at RW_PATH_MASK and run NAME_MAX bytes past it. */
struct rw_path_scratch {
	char buf[RW_PATH_MAX + RW_NAME_MAX + 1];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rw_path_scratch);
} path_scratch SEC(".maps");

enum rw_path_status {
	RW_PATH_WALKING = 0,
	RW_PATH_DONE = 1,
	RW_PATH_TOO_LONG = 2,
	RW_PATH_FAULT = 3,
};

struct rw_path_walk {
	struct dentry *dentry;
	struct mount *mnt;
	struct dentry *mnt_root;
	__u32 off; /* the path so far is buf[off..RW_PATH_MAX) */
	__u32 status;
};

static __always_inline struct mount *rw_real_mount(struct vfsmount *vfsmnt)
{
	return (struct mount *)((void *)vfsmnt - bpf_core_field_offset(struct mount, mnt));
}

static __always_inline struct rw_path_scratch *rw_path_scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&path_scratch, &zero);
}

/* One bpf_loop step: prepend one name, or cross one mount boundary. 1 stops the loop. */
static long rw_path_step(__u32 index, void *ctx)
{
	struct rw_path_walk *w = ctx;
	struct dentry *dentry = w->dentry, *mnt_root = w->mnt_root, *parent;
	struct mount *mnt = w->mnt, *mnt_parent;
	struct rw_path_scratch *s;
	const unsigned char *name;
	__u32 len, off;

	/* Locals, not w->x, inside BPF_CORE_READ: the macro would try to CO-RE
	 * relocate the access to our own struct too. */
	parent = BPF_CORE_READ(dentry, d_parent);
	if (dentry == mnt_root || dentry == parent) {
		mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
		/* The namespace root mount is its own parent; a dentry that is its own
		 * parent without being a mount root is a filesystem root we cannot
		 * climb out of (pseudo filesystems, disconnected dentries). */
		if (dentry != mnt_root || !mnt_parent || mnt_parent == mnt) {
			w->status = RW_PATH_DONE;
			return 1;
		}
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = mnt_parent;
		w->mnt_root = BPF_CORE_READ(mnt_parent, mnt.mnt_root);
		return 0;
	}

	len = BPF_CORE_READ(dentry, d_name.len);
	name = BPF_CORE_READ(dentry, d_name.name);
	off = w->off;
	if (len > RW_NAME_MAX || len + 1 > off) {
		w->status = RW_PATH_TOO_LONG;
		return 1;
	}
	off -= len + 1;
	s = rw_path_scratch();
	if (!s) {
		w->status = RW_PATH_FAULT;
		return 1;
	}
	if (bpf_probe_read_kernel(&s->buf[(off + 1) & RW_PATH_MASK], len & RW_NAME_MAX, name)) {
		w->status = RW_PATH_FAULT;
		return 1;
	}
	s->buf[off & RW_PATH_MASK] = '/';
	w->off = off;
	w->dentry = parent;
	return 0;
}

/*
 * Resolves (dentry, vfsmnt) into the scratch buffer. Returns the length of
 * the path, which starts at *start in rw_path_scratch()->buf, or -1 when the
 * walk failed (fault, too long, too deep).
 */
static __always_inline long rw_path_resolve(struct dentry *dentry, struct vfsmount *vfsmnt, __u32 *start)
{
	struct rw_path_walk w = {};
	struct rw_path_scratch *s;

	if (!dentry || !vfsmnt)
		return -1;
	w.dentry = dentry;
	w.mnt = rw_real_mount(vfsmnt);
	w.mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);
	w.off = RW_PATH_MAX;
	w.status = RW_PATH_WALKING;
	bpf_loop(RW_PATH_DEPTH, rw_path_step, &w, 0);
	if (w.status != RW_PATH_DONE)
		return -1;
	if (w.off == RW_PATH_MAX) {
		/* The root itself. */
		s = rw_path_scratch();
		if (!s)
			return -1;
		w.off = RW_PATH_MAX - 1;
		s->buf[RW_PATH_MASK] = '/';
	}
	*start = w.off;
	return RW_PATH_MAX - w.off;
}

#endif /* RW_PATH_H */
