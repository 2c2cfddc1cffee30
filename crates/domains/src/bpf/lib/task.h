/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Reading process facts out of a task_struct with CO-RE. Every helper takes
 * the task explicitly so the same code serves tp_btf (BTF-typed pointers) and
 * classic tracepoints (current task via bpf_get_current_task_btf()).
 *
 * "Process" facts (start time, pid) are read from the group leader: the guid
 * of a process is derived from the leader's start time, exactly what
 * /proc/PID/stat reports (field 22 is the leader's start_boottime in ticks).
 */
#ifndef RW_TASK_H
#define RW_TASK_H

#include "common.h"

/* ns since boot when the process (thread group) started; input of the guid. */
static __always_inline __u64 rw_task_start_ns(struct task_struct *task)
{
	return BPF_CORE_READ(task, group_leader, start_boottime);
}

/* Parent pid as /proc shows it: the thread group of real_parent. */
static __always_inline __u32 rw_task_ppid(struct task_struct *task)
{
	return BPF_CORE_READ(task, real_parent, tgid);
}

static __always_inline __u64 rw_task_parent_start_ns(struct task_struct *task)
{
	return BPF_CORE_READ(task, real_parent, group_leader, start_boottime);
}

/*
 * Session id: pid of the session leader as seen from the initial pid
 * namespace (numbers[0]), what /proc/PID/stat shows to a reader there.
 */
static __always_inline __u32 rw_task_session_id(struct task_struct *task)
{
	struct pid *sid = BPF_CORE_READ(task, signal, pids[PIDTYPE_SID]);

	if (!sid)
		return 0;
	return BPF_CORE_READ(sid, numbers[0].nr);
}

/*
 * Controlling terminal as (major, minor), computed like tty_devnum():
 * driver->major, driver->minor_start + index. Both 0 without a tty.
 */
static __always_inline void rw_task_tty(struct task_struct *task, __u32 *major, __u32 *minor)
{
	struct tty_struct *tty = BPF_CORE_READ(task, signal, tty);

	*major = 0;
	*minor = 0;
	if (!tty)
		return;
	*major = BPF_CORE_READ(tty, driver, major);
	*minor = BPF_CORE_READ(tty, driver, minor_start) + BPF_CORE_READ(tty, index);
}

/* Real uid, effective uid and real gid from the subjective creds /proc shows. */
static __always_inline void rw_task_creds(struct task_struct *task, __u32 *uid, __u32 *euid, __u32 *gid)
{
	const struct cred *cred = BPF_CORE_READ(task, cred);

	*uid = BPF_CORE_READ(cred, uid.val);
	*euid = BPF_CORE_READ(cred, euid.val);
	*gid = BPF_CORE_READ(cred, gid.val);
}

/* cgroup v2 id of a task (the kernfs node id user space sees as the inode of the cgroup dir). */
static __always_inline __u64 rw_task_cgroup_id(struct task_struct *task)
{
	return BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
}

/*
 * Who a record is about. Every process and file record carries it right after rw_hdr,
 * so user space builds the process identity (guid) with one decoder.
 */
struct rw_proc_id {
	__u64 start_ns; /* group leader's start_boottime; input of the guid */
	__u32 pid; /* tgid */
	__u32 tid; /* the acting thread */
	__u32 ppid; /* real_parent->tgid */
	__u32 _pad;
	__u8 comm[RW_TASK_COMM_LEN];
};
_Static_assert(sizeof(struct rw_proc_id) == 40, "rw_proc_id layout changed: update the Rust asserts");

/* Identity of `task` (its thread group) as every process record carries it; `tid` is the acting thread. */
static __always_inline void rw_fill_proc_id(struct rw_proc_id *id, struct task_struct *task, __u32 tid)
{
	id->start_ns = rw_task_start_ns(task);
	id->pid = BPF_CORE_READ(task, tgid);
	id->tid = tid;
	id->ppid = rw_task_ppid(task);
	id->_pad = 0;
	if (bpf_probe_read_kernel(id->comm, sizeof(id->comm), &task->comm))
		__builtin_memset(id->comm, 0, sizeof(id->comm));
}

#endif /* RW_TASK_H */
