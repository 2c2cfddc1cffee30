/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Kernel constants that are #defines (so absent from the BTF-generated
 * vmlinux.h), and CO-RE flavors for layouts that differ between kernels.
 * Values are stable ABI or have not changed since the kernels ringwatch
 * supports (5.17+, for bpf_loop).
 */
#ifndef RW_COMPAT_H
#define RW_COMPAT_H

#define RW_SIGKILL 9

/* include/linux/sched/signal.h: signal_struct::flags bit set once the whole group is exiting. */
#define RW_SIGNAL_GROUP_EXIT 0x00000004

#define RW_TASK_COMM_LEN 16

/* include/uapi/linux/sched.h */
#define RW_CLONE_THREAD 0x00010000

/*
 * sched_process_exit before kernel 6.16 used the shared
 * trace_event_raw_sched_process_template record, without `group_dead`; the
 * exit hook tests bpf_core_field_exists() on this flavor and falls back to
 * signal->live when the field is absent.
 */
struct trace_event_raw_sched_process_exit___rw {
	bool group_dead;
} __attribute__((preserve_access_index));

/* include/uapi/asm-generic/fcntl.h (x86_64, arm64 and most others share these octal values). */
#define RW_O_WRONLY 00000001
#define RW_O_RDWR 00000002
#define RW_O_CREAT 00000100
#define RW_O_TRUNC 00001000

/* include/uapi/linux/fcntl.h */
#define RW_AT_FDCWD -100

/* include/uapi/linux/stat.h: the mode bits a chmod is reported for. */
#define RW_S_ISUID 04000
#define RW_S_ISGID 02000
#define RW_S_IWOTH 00002

/* include/uapi/asm-generic/errno-base.h */
#define RW_EPERM 1
#define RW_EACCES 13
#define RW_ETXTBSY 26
#define RW_EROFS 30

#endif /* RW_COMPAT_H */
