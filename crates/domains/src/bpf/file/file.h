/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The file domain's eBPF wire format: the record syscalls.bpf.c writes into
 * the `events` ring buffer, and the per-thread state it keeps between a
 * syscall's enter and exit. This is the only place they are defined; the
 * Rust side (file/ebpf.rs) decodes them through the skeleton's generated
 * types and pins the same sizes and offsets.
 *
 * Rules (STYLE.md): fixed-width types only, largest first, explicit _pad
 * fields that are always written, struct rw_hdr first.
 */
#ifndef RW_FILE_H
#define RW_FILE_H

#include "common.h"
#include "task.h" /* struct rw_proc_id */
#include "path.h" /* RW_PATH_MAX */

/* Which syscall a record is about (file_event.op, file_call.op). */
#define RW_FILE_OP_OPENAT 1
#define RW_FILE_OP_OPENAT2 2
#define RW_FILE_OP_OPEN 3
#define RW_FILE_OP_CREAT 4
#define RW_FILE_OP_UNLINKAT 5
#define RW_FILE_OP_UNLINK 6
#define RW_FILE_OP_RENAMEAT2 7
#define RW_FILE_OP_RENAMEAT 8
#define RW_FILE_OP_RENAME 9
#define RW_FILE_OP_FCHMODAT 10
#define RW_FILE_OP_FCHMODAT2 11
#define RW_FILE_OP_CHMOD 12

/* file_event hdr.flags */
#define RW_FILE_F_PATH_RELATIVE 0x01 /* path is relative: its directory could not be resolved */
#define RW_FILE_F_NEW_PATH_RELATIVE 0x02 /* the same for new_path */
#define RW_FILE_F_PATH_FAULT 0x04 /* a user path could not be read (bad pointer, page not present) */
#define RW_FILE_F_PATH_TRUNCATED 0x08 /* a user path filled RW_PATH_MAX bytes: cut */

/* One assembled path: directory (<= RW_PATH_MAX - 1), '/', user string (<= RW_PATH_MAX with its NUL). */
#define RW_FILE_SLOT (2 * RW_PATH_MAX)
#define RW_FILE_SLOT_MASK (RW_FILE_SLOT - 1)

/* Threads that may be inside a traced syscall at once; LRU so a lost exit cannot fill the map for good. */
#define RW_FILE_CALLS_MAX 8192

/*
 * One file syscall the kernel refused, or one that succeeded with what
 * fanotify cannot report (open flags, rename flags, a chmod mode), written at
 * the syscall's exit. The fixed part is followed in the same sample by
 * path_len bytes of path and new_path_len bytes of new_path (no NULs);
 * hdr.size = sizeof(struct file_event) + path_len + new_path_len.
 */
struct file_event {
	struct rw_hdr hdr;
	struct rw_proc_id id;
	__s64 ret; /* syscall return: fd / 0, or -errno */
	__u64 flags; /* open(2) flags (openat2: how.flags), rename flags, or the AT_* flags of unlinkat/fchmodat2 */
	__u32 mode; /* create mode of an open, new mode of a chmod, else 0 */
	__u32 uid; /* real uid at the syscall */
	__u32 euid; /* effective uid at the syscall: what the permission check used */
	__u16 op; /* RW_FILE_OP_* */
	__u16 path_len;
	__u16 new_path_len; /* renames only */
	__u16 _pad;
	__u32 _pad2;
};
_Static_assert(sizeof(struct file_event) == 96, "file_event layout changed: update the Rust asserts");
_Static_assert(__builtin_offsetof(struct file_event, ret) == 56, "file_event layout changed: update the Rust asserts");
_Static_assert(__builtin_offsetof(struct file_event, op) == 84, "file_event layout changed: update the Rust asserts");

/* What sys_enter_* saves for sys_exit_* of the same thread (map `calls`, keyed by pid_tgid). */
struct file_call {
	__u64 path; /* user pointer */
	__u64 new_path; /* user pointer, renames only */
	__u64 flags;
	__u32 mode;
	__s32 dfd; /* directory fd of a relative path, or AT_FDCWD */
	__s32 new_dfd;
	__u16 op;
	__u16 _pad;
};
_Static_assert(sizeof(struct file_call) == 40, "file_call layout changed");

#endif /* RW_FILE_H */
