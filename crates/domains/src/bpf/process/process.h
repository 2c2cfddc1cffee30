/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The process domain's wire format: the records sched.bpf.c writes into the
 * `events` ring buffer and the keys of the kill maps user space fills. This
 * is the only place they are defined; the Rust side decodes them through the
 * skeleton's generated types and pins the same sizes and offsets.
 *
 * Rules (STYLE.md): fixed-width types only, largest first, explicit _pad
 * fields that are always written, struct rw_hdr first.
 */
#ifndef RW_PROCESS_H
#define RW_PROCESS_H

#include "common.h"
#include "task.h" /* struct rw_proc_id */

/* argv bytes captured at exec (NUL-separated, as in /proc/PID/cmdline). */
#define RW_ARGS_MAX 4096
/* Longest exe/cwd path captured; longer paths fail the walk (exe then falls back to the filename). */
#define RW_EXE_MAX 4096
#define RW_CWD_MAX 4096
/* Kill-map keys: an LPM trie key holds at most 256 data bytes (LPM_DATA_SIZE_MAX). */
#define RW_KILL_PATH_MAX 256
#define RW_KILL_RULES_MAX 4096

/* exec_event hdr.flags */
#define RW_EXEC_F_KILLED 0x01 /* SIGKILL sent at exec; kill_rule says which rule */
#define RW_EXEC_F_ARGS_TRUNCATED 0x02 /* argv was longer than RW_ARGS_MAX */
#define RW_EXEC_F_EXE_FROM_FILENAME 0x04 /* path walk failed: exe is the execve filename, maybe relative */
#define RW_EXEC_F_NO_CWD 0x08 /* cwd path walk failed: cwd_len is 0 */

/* The context exec and fork records add: parent identity, credentials, session, terminal, cgroup. */
struct rw_proc_ctx {
	__u64 parent_start_ns; /* real parent's group leader's start_boottime */
	__u64 cgroup_id; /* cgroup v2 id */
	__u32 uid;
	__u32 euid;
	__u32 gid;
	__u32 session_id;
	__u32 tty_major;
	__u32 tty_minor;
};
_Static_assert(sizeof(struct rw_proc_ctx) == 40, "rw_proc_ctx layout changed: update the Rust asserts");

/*
 * One exec, written at sched_process_exec. The fixed part is followed in the
 * same sample by args_len bytes of argv, exe_len bytes of the executable's
 * path and cwd_len bytes of the working directory (no NUL terminators);
 * hdr.size = sizeof(struct exec_event) + args_len + exe_len + cwd_len.
 * id.tid is the thread that called execve (old_pid).
 */
struct exec_event {
	struct rw_hdr hdr;
	struct rw_proc_id id;
	struct rw_proc_ctx ctx;
	__u32 kill_rule; /* rule index when RW_EXEC_F_KILLED, else 0 */
	__u16 args_len;
	__u16 exe_len;
	__u16 cwd_len;
	__u16 _pad;
	__u32 _pad2;
};
_Static_assert(sizeof(struct exec_event) == 112, "exec_event layout changed: update the Rust asserts");
_Static_assert(__builtin_offsetof(struct exec_event, kill_rule) == 96,
	       "exec_event layout changed: update the Rust asserts");

/* A new process (not a thread), written at sched_process_fork; id.tid == id.pid. */
struct fork_event {
	struct rw_hdr hdr;
	struct rw_proc_id id;
	struct rw_proc_ctx ctx;
};
_Static_assert(sizeof(struct fork_event) == 96, "fork_event layout changed: update the Rust asserts");

/* A whole thread group exited, written at sched_process_exit of its last thread (id.tid). */
struct exit_event {
	struct rw_hdr hdr;
	struct rw_proc_id id;
	__u32 status; /* wait(2) status: exit code << 8, or the terminating signal (| 0x80 on core dump) */
	__u32 _pad;
};
_Static_assert(sizeof(struct exit_event) == 64, "exit_event layout changed: update the Rust asserts");

/* kill_exe_exact key: absolute exe path, zero-padded. */
struct exe_path_key {
	__u8 path[RW_KILL_PATH_MAX];
};
_Static_assert(sizeof(struct exe_path_key) == 256, "exe_path_key layout changed: update the Rust asserts");

/* kill_exe_prefix key (LPM trie): prefixlen in bits, then the path bytes. */
struct exe_prefix_key {
	__u32 prefixlen;
	__u8 path[RW_KILL_PATH_MAX];
};
_Static_assert(sizeof(struct exe_prefix_key) == 260, "exe_prefix_key layout changed: update the Rust asserts");

#endif /* RW_PROCESS_H */
