// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Keystroke domain, kernel mode: input read from terminals (pts, virtual
 * consoles, serial lines, /dev/tty), with echo-off input redacted here, in
 * the kernel, so a password never reaches user space.
 *
 * A terminal read is recognised at syscall entry from the descriptor alone:
 * current->files->fdt->fd[fd] is a character device whose major is a
 * terminal's (136..143 pts, 4 tty/ttyS, 5:0 /dev/tty, 5:1 console; never
 * 5:2 /dev/ptmx, whose reads are the *output* of the programs on the pty).
 * Its file->private_data is the struct tty_file_private tty_open() set, which
 * leads to the tty_struct and its termios. The user buffer is saved per
 * thread and read at syscall exit, when it holds what the read returned.
 *
 * Redaction (what the kernel's own tty audit does): input read while the
 * terminal is in canonical mode with ECHO clear is a password prompt
 * (read -s, sudo, passwd, ssh); only its length is sent. readline reads
 * every key with ICANON *and* ECHO clear and echoes by itself, so "ECHO
 * clear" alone would redact every shell command (DESIGN.md section 2).
 *
 * Output (writes to the terminal) is never looked at: a `cat` of a big file
 * costs one descriptor check per read of the file, nothing more.
 */
#include "common.h"
#include "task.h"
#include "tty.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The agent's own pid (tgid), set before load: its reads are not reported. */
const volatile __u32 agent_tgid = 0;
/* Only readers whose real uid / gid is in capture_uids / capture_gids (set before load). */
const volatile __u8 filter_uids = 0;
const volatile __u8 filter_gids = 0;
/* Drop the bytes of canonical-mode, echo-off reads (policy keystrokes.redact_echo_off, on by default). */
const volatile __u8 redact_echo_off = 1;

/* Keep the wire struct in BTF so the skeleton generates a Rust type for it. */
const struct tty_read_event *_tty_read_event __attribute__((unused));

/* Real uids whose input is captured, when filter_uids; the value is unused. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RW_TTY_FILTER_MAX);
	__type(key, __u32);
	__type(value, __u8);
} capture_uids SEC(".maps");

/* Real gids whose input is captured, when filter_gids; the value is unused. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RW_TTY_FILTER_MAX);
	__type(key, __u32);
	__type(value, __u8);
} capture_gids SEC(".maps");

/* A terminal read in progress: what sys_exit needs, saved at sys_enter. */
struct tty_read_start {
	__u64 buf; /* the user buffer (read) or the iovec array (readv) */
	__u64 tty; /* struct tty_struct * */
	__u32 major;
	__u32 minor;
	__u32 lflag; /* c_lflag when the read started */
	__u8 readv;
	__u8 active; /* 1 from a terminal read's entry to its exit */
	__u16 _pad;
};

/*
 * The thread's terminal read in progress. Task storage, not a hash keyed by
 * pid_tgid: every read on the host looks here at exit, and a task-storage
 * lookup is a pointer walk instead of a hash; the slot goes with the thread.
 */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tty_read_start);
} tty_read_buf SEC(".maps");

/* A record is built here (input bytes behind the fixed part), then copied into `events` with its real length. */
struct tty_read_scratch {
	struct tty_read_event ev;
	__u8 data[RW_TTY_DATA_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tty_read_scratch);
} tty_read_scratch SEC(".maps");

/* True when input read under this c_lflag must not leave the kernel. */
static __always_inline bool is_secret(__u32 lflag)
{
	return redact_echo_off && (lflag & RW_ICANON) && !(lflag & RW_ECHO);
}

/*
 * The open file behind descriptor `fd` of `task`, or NULL. BTF-typed loads
 * (no helper call) except for the fd array slot, which has a variable index.
 */
static __always_inline struct file *task_fd_file(struct task_struct *task, __s32 fd)
{
	struct fdtable *fdt = task->files->fdt;
	struct file **fds;
	struct file *f = NULL;

	if (!fdt || fd < 0 || (__u32)fd >= fdt->max_fds)
		return NULL;
	fds = fdt->fd;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]))
		return NULL;
	return bpf_core_cast(f, struct file);
}

/* True for a terminal device number an input read can come from (never the pty master). */
static __always_inline bool is_terminal_dev(__u32 major, __u32 minor)
{
	if (major >= RW_PTS_MAJOR_FIRST && major <= RW_PTS_MAJOR_LAST)
		return true;
	if (major == RW_TTY_MAJOR)
		return true;
	return major == RW_TTYAUX_MAJOR && minor < RW_PTMX_MINOR;
}

/* Cheap filters first (agent, uid, gid), then the descriptor check; saves the read's start when it is a terminal. */
static __always_inline int tty_read_enter(__s32 fd, __u64 buf, __u8 readv)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tty_read_start *start;
	struct tty_file_private *priv;
	struct task_struct *task;
	struct tty_struct *tty;
	struct inode *inode;
	struct file *file;
	__u32 dev;

	if ((__u32)(id >> 32) == agent_tgid)
		return 0;
	if (filter_uids || filter_gids) {
		__u64 ugid = bpf_get_current_uid_gid();
		__u32 uid = (__u32)ugid, gid = ugid >> 32;

		if (filter_uids && !bpf_map_lookup_elem(&capture_uids, &uid))
			return 0;
		if (filter_gids && !bpf_map_lookup_elem(&capture_gids, &gid))
			return 0;
	}
	task = bpf_get_current_task_btf();
	file = task_fd_file(task, fd);
	if (!file)
		return 0;
	inode = file->f_inode;
	if ((inode->i_mode & RW_S_IFMT) != RW_S_IFCHR)
		return 0;
	dev = inode->i_rdev;
	if (!is_terminal_dev(dev >> 20, dev & 0xfffff))
		return 0;
	priv = bpf_core_cast(file->private_data, struct tty_file_private);
	tty = priv->tty;
	if (!tty)
		return 0;
	start = bpf_task_storage_get(&tty_read_buf, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!start)
		return 0;
	/* The terminal itself (for /dev/tty: the controlling terminal it stands for), as tty_devnum() computes it. */
	start->major = tty->driver->major;
	start->minor = tty->driver->minor_start + tty->index;
	start->lflag = tty->termios.c_lflag;
	start->tty = (__u64)tty;
	start->buf = buf;
	start->readv = readv;
	start->active = 1;
	start->_pad = 0;
	return 0;
}

/* Sends the read's record: the bytes it returned, or only their count when the terminal had echo off. */
static __always_inline int tty_read_exit(long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 id = bpf_get_current_pid_tgid();
	struct tty_read_start *saved, start;
	struct tty_read_scratch *s;
	struct tty_read_event *ev;
	struct tty_struct *tty;
	__u64 buf, avail, n = 0;
	__u32 zero = 0;
	bool secret;

	/* No flag: the lookup never creates a slot, so threads that never read a terminal stay without one. */
	saved = bpf_task_storage_get(&tty_read_buf, task, 0, 0);
	if (!saved || !saved->active)
		return 0;
	start = *saved;
	saved->active = 0;
	if (ret <= 0)
		return 0;
	s = bpf_map_lookup_elem(&tty_read_scratch, &zero);
	if (!s)
		return 0;
	ev = &s->ev;
	rw_hdr_init(&ev->hdr, RW_KIND_TTY_READ, 0);
	rw_fill_proc_id(&ev->id, task, (__u32)id);
	rw_task_creds(task, &ev->uid, &ev->euid, &ev->gid);
	ev->session_id = rw_task_session_id(task);
	ev->tty_major = start.major;
	ev->tty_minor = start.minor;
	ev->read_len = ret;
	ev->lflag = start.lflag;
	ev->_pad = 0;
	ev->_pad2 = 0;

	buf = start.buf;
	avail = ret;
	if (start.readv) {
		struct iovec iov = {};

		ev->hdr.flags |= RW_TTY_F_READV;
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)start.buf))
			return 0;
		buf = (__u64)iov.iov_base;
		if (avail > iov.iov_len)
			avail = iov.iov_len;
	}

	/* Echo off at the start of the read, or switched off while it waited: either way a secret. */
	tty = bpf_core_cast((void *)start.tty, struct tty_struct);
	secret = is_secret(start.lflag) || is_secret(tty->termios.c_lflag);
	if (secret) {
		__u8 last = 0;

		/*
		 * Only the length leaves the kernel, plus whether the read ended
		 * the line (a canonical read stops right after the delimiter), so
		 * a password read one byte per read (bash's read -s) is still one
		 * line to user space.
		 */
		ev->hdr.flags |= RW_TTY_F_REDACTED;
		if (avail > 0 && bpf_probe_read_user(&last, 1, (void *)(buf + avail - 1)) == 0 && last == '\n')
			ev->hdr.flags |= RW_TTY_F_LINE_END;
	} else {
		n = avail;
		if (n > RW_TTY_DATA_MAX)
			n = RW_TTY_DATA_MAX;
		if (n < (__u64)ret)
			ev->hdr.flags |= RW_TTY_F_TRUNCATED;
		if (n > 0 && bpf_probe_read_user(s->data, n, (void *)buf))
			n = 0;
	}
	ev->data_len = n;
	ev->hdr.size = sizeof(*ev) + n;
	rw_output(s, sizeof(*ev) + n);
	return 0;
}

/*
 * syscalls/sys_enter_read + sys_exit_read (stable since 2.6.37): every
 * read(2) on the host passes here, so the entry does only cheap checks
 * before the descriptor lookup and saves nothing for non-terminals.
 *
 * Misses: terminal input read without read/readv (io_uring reads,
 * preadv2 is not used on terminals); keys that never reach a terminal
 * (graphical applications: the X11 backend); reads of a pty master, on
 * purpose (terminal emulators and sshd read program output there).
 */
SEC("tp/syscalls/sys_enter_read")
int handle_read_enter(struct trace_event_raw_sys_enter *ctx)
{
	return tty_read_enter((__s32)ctx->args[0], ctx->args[1], 0);
}

SEC("tp/syscalls/sys_exit_read")
int handle_read_exit(struct trace_event_raw_sys_exit *ctx)
{
	return tty_read_exit(ctx->ret);
}

/*
 * syscalls/sys_enter_readv + sys_exit_readv: the same for readv(2), which
 * few terminal programs use; only the first iovec's bytes are copied.
 */
SEC("tp/syscalls/sys_enter_readv")
int handle_readv_enter(struct trace_event_raw_sys_enter *ctx)
{
	return tty_read_enter((__s32)ctx->args[0], ctx->args[1], 1);
}

SEC("tp/syscalls/sys_exit_readv")
int handle_readv_exit(struct trace_event_raw_sys_exit *ctx)
{
	return tty_read_exit(ctx->ret);
}
