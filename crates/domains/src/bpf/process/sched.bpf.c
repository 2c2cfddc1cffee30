// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Process domain, kernel mode: fork, exec and exit from the scheduler's
 * process tracepoints, and SIGKILL at exec for exact-path / directory-prefix
 * kill rules.
 *
 * Tracepoints, not kprobes/fentry/LSM: they are stable ABI, available on every
 * kernel ringwatch supports, and are what works on hosts without kprobes or
 * BPF LSM (DESIGN.md section 2). Consequence: there is no "before exec"
 * veto, only a kill right after the new image is committed and before it runs
 * a single user instruction.
 */
#include "common.h"
#include "task.h"
#include "path.h"
#include "process.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The agent's own pid (tgid), set before load: its own exec/exit is not reported. */
const volatile __u32 agent_tgid = 0;

/* Keep the wire structs in BTF so the skeleton generates Rust types for them. */
const struct exec_event *_exec_event __attribute__((unused));
const struct fork_event *_fork_event __attribute__((unused));
const struct exit_event *_exit_event __attribute__((unused));
const struct exe_path_key *_exe_path_key __attribute__((unused));
const struct exe_prefix_key *_exe_prefix_key __attribute__((unused));

/* Absolute exe path -> kill rule index; filled by user space before attach. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RW_KILL_RULES_MAX);
	__type(key, struct exe_path_key);
	__type(value, __u32);
} kill_exe_exact SEC(".maps");

/* Directory prefix ("/tmp/", ending in '/') -> kill rule index; longest prefix wins. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, RW_KILL_RULES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct exe_prefix_key);
	__type(value, __u32);
} kill_exe_prefix SEC(".maps");

/*
 * An exec record is built here (it is too big for the 512-byte stack and its
 * size is known only at the end), then copied into `events` with its real
 * length. `data` holds argv, exe and cwd back to back.
 */
struct exec_scratch {
	struct exec_event ev;
	__u8 data[RW_ARGS_MAX + RW_EXE_MAX + RW_CWD_MAX];
	struct exe_prefix_key key;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_scratch);
} exec_scratch SEC(".maps");

/* Parent, credentials, session, terminal and cgroup of `task`, for exec and fork records. */
static __always_inline void fill_proc_ctx(struct rw_proc_ctx *c, struct task_struct *task)
{
	c->parent_start_ns = rw_task_parent_start_ns(task);
	c->cgroup_id = rw_task_cgroup_id(task);
	rw_task_creds(task, &c->uid, &c->euid, &c->gid);
	c->session_id = rw_task_session_id(task);
	rw_task_tty(task, &c->tty_major, &c->tty_minor);
}

/*
 * Copies the path at scratch offset `start` (length `len`, from
 * rw_path_resolve) to dst. Returns the bytes copied, 0 on failure.
 */
static __always_inline __u32 copy_path(__u8 *dst, long len, __u32 start)
{
	struct rw_path_scratch *p = rw_path_scratch();

	if (!p || len <= 0 || len > RW_PATH_MAX)
		return 0;
	if (bpf_probe_read_kernel(dst, len, &p->buf[start & RW_PATH_MASK]))
		return 0;
	return len;
}

/* Looks the resolved exe path up in the kill maps; sends SIGKILL on a hit. */
static __always_inline void kill_if_listed(struct exec_scratch *s, long len, __u32 start)
{
	struct rw_path_scratch *p = rw_path_scratch();
	struct exe_prefix_key *key = &s->key;
	__u32 *rule;

	if (!p || len <= 0 || len > RW_KILL_PATH_MAX)
		return;
	__builtin_memset(key, 0, sizeof(*key));
	if (bpf_probe_read_kernel(key->path, len, &p->buf[start & RW_PATH_MASK]))
		return;
	rule = bpf_map_lookup_elem(&kill_exe_exact, key->path);
	if (!rule) {
		key->prefixlen = len * 8;
		rule = bpf_map_lookup_elem(&kill_exe_prefix, key);
	}
	if (!rule)
		return;
	/* Signals the whole thread group of current; delivered on the way back to
	 * user space, so the new image never runs. */
	bpf_send_signal(RW_SIGKILL);
	s->ev.hdr.flags |= RW_EXEC_F_KILLED;
	s->ev.kill_rule = *rule;
}

/*
 * sched/sched_process_exec (stable since 3.4): fires in exec_binprm() after
 * the new image is committed (new mm, creds, comm, exe_file) and before it
 * returns to user space, so argv is in the new mm and a SIGKILL sent here
 * kills before any user code runs. Classic tracepoint rather than tp_btf so
 * `filename` (the path as passed to execve) is at hand as a fallback.
 *
 * Misses: execs that fail before the point of no return (ENOENT, EACCES,
 * bad ELF) — nothing ran, but the attempt is not seen; an in-process
 * "exec" that maps a new image without execve (userland exec, memfd +
 * loader tricks) is invisible to every exec hook. Scripts show the
 * interpreter as exe and the script in argv.
 */
SEC("tp/sched/sched_process_exec")
int handle_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, zero = 0;
	struct exec_scratch *s;
	struct exec_event *ev;
	struct mm_struct *mm;
	struct file *exe_file;
	__u64 arg_start, arg_end, size;
	__u32 args_len = 0, exe_len = 0, cwd_len = 0, pos, start = 0;
	long n;

	if (tgid == agent_tgid)
		return 0;
	s = bpf_map_lookup_elem(&exec_scratch, &zero);
	if (!s)
		return 0;
	ev = &s->ev;
	rw_hdr_init(&ev->hdr, RW_KIND_EXEC, 0);
	rw_fill_proc_id(&ev->id, task, BPF_CORE_READ(ctx, old_pid));
	fill_proc_ctx(&ev->ctx, task);
	ev->kill_rule = 0;
	ev->_pad = 0;
	ev->_pad2 = 0;

	/* argv: the new image's arg pages, NUL-separated. */
	mm = BPF_CORE_READ(task, mm);
	arg_start = BPF_CORE_READ(mm, arg_start);
	arg_end = BPF_CORE_READ(mm, arg_end);
	if (arg_end > arg_start) {
		size = arg_end - arg_start;
		if (size > RW_ARGS_MAX) {
			size = RW_ARGS_MAX;
			ev->hdr.flags |= RW_EXEC_F_ARGS_TRUNCATED;
		}
		if (bpf_probe_read_user(s->data, size, (void *)arg_start) == 0)
			args_len = size;
	}

	/* exe: the mapped image's canonical path; the execve filename if the walk fails. */
	pos = args_len;
	if (pos > RW_ARGS_MAX)
		return 0;
	exe_file = BPF_CORE_READ(mm, exe_file);
	n = rw_path_resolve(BPF_CORE_READ(exe_file, f_path.dentry), BPF_CORE_READ(exe_file, f_path.mnt), &start);
	if (n > 0 && n <= RW_EXE_MAX) {
		exe_len = copy_path(&s->data[pos], n, start);
		kill_if_listed(s, n, start);
	}
	if (exe_len == 0) {
		__u32 loc = BPF_CORE_READ(ctx, __data_loc_filename) & 0xFFFF;

		n = bpf_probe_read_kernel_str(&s->data[pos], RW_EXE_MAX, (void *)ctx + loc);
		if (n > 1)
			exe_len = n - 1; /* without the NUL */
		ev->hdr.flags |= RW_EXEC_F_EXE_FROM_FILENAME;
	}

	/* cwd, with the same walk. */
	pos = args_len + exe_len;
	if (pos > RW_ARGS_MAX + RW_EXE_MAX)
		return 0;
	n = rw_path_resolve(BPF_CORE_READ(task, fs, pwd.dentry), BPF_CORE_READ(task, fs, pwd.mnt), &start);
	if (n > 0 && n <= RW_CWD_MAX)
		cwd_len = copy_path(&s->data[pos], n, start);
	if (cwd_len == 0)
		ev->hdr.flags |= RW_EXEC_F_NO_CWD;

	ev->args_len = args_len;
	ev->exe_len = exe_len;
	ev->cwd_len = cwd_len;
	size = sizeof(*ev) + args_len + exe_len + cwd_len;
	if (size > sizeof(*ev) + sizeof(s->data))
		return 0;
	ev->hdr.size = size;
	rw_output(ev, size);
	return 0;
}

/*
 * tp_btf/sched_process_fork (BTF-typed raw tracepoint, 5.5+): fires in
 * kernel_clone() once the child is fully set up, with both task_structs,
 * so the child's start time, creds and parent are read directly. Only new
 * thread groups are reported; a thread (CLONE_THREAD) is not a process.
 *
 * Misses: nothing that creates a process avoids kernel_clone (fork, vfork,
 * clone, clone3, posix_spawn all go through it). The child's creds are the
 * parent's at this point; a later setuid() shows up only at the next exec.
 */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(handle_fork, struct task_struct *parent, struct task_struct *child)
{
	struct fork_event *ev;
	__u32 pid = BPF_CORE_READ(child, tgid);
	__u32 tid = BPF_CORE_READ(child, pid);

	if (pid != tid || pid == agent_tgid)
		return 0;
	ev = rw_reserve(sizeof(*ev));
	if (!ev)
		return 0;
	rw_hdr_init(&ev->hdr, RW_KIND_FORK, sizeof(*ev));
	rw_fill_proc_id(&ev->id, child, tid);
	fill_proc_ctx(&ev->ctx, child);
	rw_submit(ev);
	return 0;
}

/*
 * sched/sched_process_exit (stable since 2.6.x): fires in do_exit() for every
 * exiting thread, after the exit code is stored. Only the last thread of a
 * group is reported (group_dead, a tracepoint field since 6.16; before that
 * signal->live reaching 0, which do_exit decrements just before).
 *
 * Misses: nothing that ends a process avoids do_exit. The status is the one
 * wait(2) will see: group_exit_code once the group is exiting, else the
 * thread's own exit_code.
 */
SEC("tp/sched/sched_process_exit")
int handle_exit(void *ctx)
{
	struct trace_event_raw_sched_process_exit___rw *args = ctx;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	struct exit_event *ev;
	__u32 status;

	if (tgid == agent_tgid)
		return 0;
	if (bpf_core_field_exists(args->group_dead)) {
		if (!args->group_dead)
			return 0;
	} else if (BPF_CORE_READ(task, signal, live.counter) != 0) {
		return 0;
	}

	if (BPF_CORE_READ(task, signal, flags) & RW_SIGNAL_GROUP_EXIT)
		status = BPF_CORE_READ(task, signal, group_exit_code);
	else
		status = BPF_CORE_READ(task, exit_code);

	ev = rw_reserve(sizeof(*ev));
	if (!ev)
		return 0;
	rw_hdr_init(&ev->hdr, RW_KIND_EXIT, sizeof(*ev));
	rw_fill_proc_id(&ev->id, task, (__u32)id);
	ev->status = status;
	ev->_pad = 0;
	rw_submit(ev);
	return 0;
}
