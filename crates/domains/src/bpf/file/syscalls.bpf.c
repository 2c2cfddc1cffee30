// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * File domain, kernel mode, next to fanotify: the syscall tracepoints of
 * open, unlink, rename and chmod report what fanotify cannot tell — calls the
 * kernel refused (fanotify sees only what succeeded), open flags (O_TRUNC,
 * O_CREAT, write access), rename flags (RENAME_EXCHANGE, RENAME_NOREPLACE,
 * RENAME_WHITEOUT) and the mode a chmod set.
 *
 * sys_enter_* saves the arguments per thread in `calls`; sys_exit_* reads the
 * return value, decides, and only then reads the user paths (still valid:
 * the caller is blocked in the syscall) and writes one record. Everything a
 * workload does that is not reported costs one map update at enter and one
 * lookup + delete at exit; nothing reaches the ring buffer.
 *
 * Syscall tracepoints, not kprobes/fentry/LSM: stable ABI, and what works on
 * hosts without kprobes or BPF LSM (DESIGN.md section 2). What they cannot
 * see: io_uring (IORING_OP_OPENAT, _RENAMEAT, _UNLINKAT never pass the
 * syscall entry), name_to_handle_at/open_by_handle_at, truncate(2), and the
 * path the kernel actually resolved — paths are what the caller passed,
 * made absolute with the cwd or dfd's path at exit (symlinks not followed,
 * ".." kept). Whether a rename replaced an existing target is not known at
 * either tracepoint.
 */
#include "common.h"
#include "task.h"
#include "path.h"
#include "file.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The agent's own pid (tgid), set before load: its own file syscalls are not reported. */
const volatile __u32 agent_tgid = 0;
/* 1: report every failed call; 0: only EACCES, EPERM, EROFS, ETXTBSY (a refusal, not a typo). */
const volatile __u8 fail_all = 0;
/* 1: report every successful call too (read-only opens, plain renames, unlinks, every chmod). */
const volatile __u8 success_all = 0;

/* Keep the wire structs in BTF so the skeleton generates Rust types for them. */
const struct file_event *_file_event __attribute__((unused));

/* pid_tgid -> the arguments of the file syscall that thread is in. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, RW_FILE_CALLS_MAX);
	__type(key, __u64);
	__type(value, struct file_call);
} calls SEC(".maps");

/* A record is assembled here (too big for the stack, size known only at the end), then copied into `events`. */
struct file_scratch {
	struct file_event ev;
	__u8 data[2 * RW_FILE_SLOT]; /* path, then new_path, packed */
	__u8 slot[RW_FILE_SLOT]; /* new_path is assembled here, then moved behind path */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct file_scratch);
} file_scratch SEC(".maps");

/* --- enter: save the arguments ----------------------------------------------------------------------------- */

static __always_inline int save(__u16 op, __s32 dfd, __u64 path, __s32 new_dfd, __u64 new_path, __u64 flags, __u32 mode)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct file_call c = {};

	if ((__u32)(id >> 32) == agent_tgid)
		return 0;
	c.path = path;
	c.new_path = new_path;
	c.flags = flags;
	c.mode = mode;
	c.dfd = dfd;
	c.new_dfd = new_dfd;
	c.op = op;
	bpf_map_update_elem(&calls, &id, &c, BPF_ANY);
	return 0;
}

/*
 * syscalls/sys_enter_openat (every libc open() since glibc 2.26), openat2
 * (5.6+; flags and mode from the user's struct open_how, read here once),
 * open and creat (legacy entries, absent on arm64: not loaded when the
 * tracepoint is missing).
 */
SEC("tp/syscalls/sys_enter_openat")
int enter_openat(struct trace_event_raw_sys_enter *ctx)
{
	return save(RW_FILE_OP_OPENAT, ctx->args[0], ctx->args[1], 0, 0, (__u32)ctx->args[2], ctx->args[3]);
}

SEC("tp/syscalls/sys_enter_openat2")
int enter_openat2(struct trace_event_raw_sys_enter *ctx)
{
	struct open_how how = {};

	bpf_probe_read_user(&how, sizeof(how), (void *)ctx->args[2]);
	return save(RW_FILE_OP_OPENAT2, ctx->args[0], ctx->args[1], 0, 0, how.flags, how.mode);
}

SEC("tp/syscalls/sys_enter_open")
int enter_open(struct trace_event_raw_sys_enter *ctx)
{
	return save(RW_FILE_OP_OPEN, RW_AT_FDCWD, ctx->args[0], 0, 0, (__u32)ctx->args[1], ctx->args[2]);
}

SEC("tp/syscalls/sys_enter_creat")
int enter_creat(struct trace_event_raw_sys_enter *ctx)
{
	return save(RW_FILE_OP_CREAT, RW_AT_FDCWD, ctx->args[0], 0, 0, RW_O_CREAT | RW_O_WRONLY | RW_O_TRUNC,
		    ctx->args[1]);
}

/* syscalls/sys_enter_unlinkat (flags: AT_REMOVEDIR makes it rmdir) and the legacy unlink. */
SEC("tp/syscalls/sys_enter_unlinkat")
int enter_unlinkat(struct trace_event_raw_sys_enter *ctx)
{
	return save(RW_FILE_OP_UNLINKAT, ctx->args[0], ctx->args[1], 0, 0, (__u32)ctx->args[2], 0);
}

SEC("tp/syscalls/sys_enter_unlink")
int enter_unlink(struct trace_event_raw_sys_enter *ctx)
{
	return save(RW_FILE_OP_UNLINK, RW_AT_FDCWD, ctx->args[0], 0, 0, 0, 0);
}

/* syscalls/sys_enter_renameat2 (3.15+, the only one with flags), renameat and the legacy rename. */
SEC("tp/syscalls/sys_enter_renameat2")
int enter_renameat2(struct trace_event_raw_sys_enter *ctx)
{
	return save(RW_FILE_OP_RENAMEAT2, ctx->args[0], ctx->args[1], ctx->args[2], ctx->args[3], (__u32)ctx->args[4],
		    0);
}

SEC("tp/syscalls/sys_enter_renameat")
int enter_renameat(struct trace_event_raw_sys_enter *ctx)
{
	return save(RW_FILE_OP_RENAMEAT, ctx->args[0], ctx->args[1], ctx->args[2], ctx->args[3], 0, 0);
}

SEC("tp/syscalls/sys_enter_rename")
int enter_rename(struct trace_event_raw_sys_enter *ctx)
{
	return save(RW_FILE_OP_RENAME, RW_AT_FDCWD, ctx->args[0], RW_AT_FDCWD, ctx->args[1], 0, 0);
}

/*
 * syscalls/sys_enter_fchmodat, fchmodat2 (6.6+, with AT_SYMLINK_NOFOLLOW /
 * AT_EMPTY_PATH) and the legacy chmod. fchmod(fd) is not traced: it names no
 * path, and fanotify reports its attribute change.
 */
SEC("tp/syscalls/sys_enter_fchmodat")
int enter_fchmodat(struct trace_event_raw_sys_enter *ctx)
{
	return save(RW_FILE_OP_FCHMODAT, ctx->args[0], ctx->args[1], 0, 0, 0, ctx->args[2]);
}

SEC("tp/syscalls/sys_enter_fchmodat2")
int enter_fchmodat2(struct trace_event_raw_sys_enter *ctx)
{
	return save(RW_FILE_OP_FCHMODAT2, ctx->args[0], ctx->args[1], 0, 0, (__u32)ctx->args[3], ctx->args[2]);
}

SEC("tp/syscalls/sys_enter_chmod")
int enter_chmod(struct trace_event_raw_sys_enter *ctx)
{
	return save(RW_FILE_OP_CHMOD, RW_AT_FDCWD, ctx->args[0], 0, 0, 0, ctx->args[1]);
}

/* --- exit: decide, then build the record ------------------------------------------------------------------- */

static __always_inline bool is_open(__u16 op)
{
	return op == RW_FILE_OP_OPENAT || op == RW_FILE_OP_OPENAT2 || op == RW_FILE_OP_OPEN || op == RW_FILE_OP_CREAT;
}

static __always_inline bool is_rename(__u16 op)
{
	return op == RW_FILE_OP_RENAMEAT2 || op == RW_FILE_OP_RENAMEAT || op == RW_FILE_OP_RENAME;
}

static __always_inline bool is_chmod(__u16 op)
{
	return op == RW_FILE_OP_FCHMODAT || op == RW_FILE_OP_FCHMODAT2 || op == RW_FILE_OP_CHMOD;
}

/* The in-kernel filter: only what fanotify cannot tell, and only refusals among the failures by default. */
static __always_inline bool wanted(const struct file_call *c, long ret)
{
	if (ret < 0) {
		if (fail_all)
			return true;
		return ret == -RW_EACCES || ret == -RW_EPERM || ret == -RW_EROFS || ret == -RW_ETXTBSY;
	}
	if (success_all)
		return true;
	if (is_open(c->op))
		return c->flags & (RW_O_WRONLY | RW_O_RDWR | RW_O_CREAT | RW_O_TRUNC);
	if (is_rename(c->op))
		return c->flags != 0;
	if (is_chmod(c->op))
		return c->mode & (RW_S_ISUID | RW_S_ISGID | RW_S_IWOTH);
	return false; /* a successful unlink: fanotify reports the delete */
}

/* The open file behind descriptor `fd` of `task`, or NULL. */
static __always_inline struct file *task_fd_file(struct task_struct *task, __s32 fd)
{
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *f = NULL;

	if (!fdt || fd < 0 || (__u32)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]))
		return NULL;
	return f;
}

/*
 * Assembles the path the caller passed into dst (RW_FILE_SLOT bytes): an
 * absolute path as is; a relative one behind the directory it is relative
 * to (cwd for AT_FDCWD, else dfd's open directory), walked with path.h now,
 * while the caller is still in the syscall. An empty path (AT_EMPTY_PATH) is
 * the dfd's own path. Returns the length, without NUL.
 */
static __always_inline __u32 read_path(__u8 *dst, __u64 upath, __s32 dfd, struct task_struct *task, __u8 *flags,
				       __u8 relative_flag)
{
	struct rw_path_scratch *p;
	struct dentry *dentry;
	struct vfsmount *mnt;
	struct file *f;
	__u32 off = 0, start = 0;
	char first = 0;
	long n;

	if (!upath || bpf_probe_read_user(&first, 1, (void *)upath)) {
		*flags |= RW_FILE_F_PATH_FAULT;
		return 0;
	}
	if (first != '/') {
		if (dfd == RW_AT_FDCWD) {
			dentry = BPF_CORE_READ(task, fs, pwd.dentry);
			mnt = BPF_CORE_READ(task, fs, pwd.mnt);
		} else {
			f = task_fd_file(task, dfd);
			dentry = f ? BPF_CORE_READ(f, f_path.dentry) : NULL;
			mnt = f ? BPF_CORE_READ(f, f_path.mnt) : NULL;
		}
		n = rw_path_resolve(dentry, mnt, &start);
		p = rw_path_scratch();
		if (p && n > 0 && n < RW_PATH_MAX &&
		    bpf_probe_read_kernel(dst, n, &p->buf[start & RW_PATH_MASK]) == 0) {
			off = n;
			if (first == 0)
				return off; /* AT_EMPTY_PATH: the fd itself */
			if (off > 1) /* the root is "/" already */
				dst[off++ & RW_FILE_SLOT_MASK] = '/';
		} else {
			*flags |= relative_flag;
		}
	}
	if (off > RW_PATH_MAX)
		return 0;
	n = bpf_probe_read_user_str(&dst[off], RW_PATH_MAX, (void *)upath);
	if (n <= 0) {
		*flags |= RW_FILE_F_PATH_FAULT;
		return off;
	}
	if (n == RW_PATH_MAX)
		*flags |= RW_FILE_F_PATH_TRUNCATED;
	return off + n - 1; /* without the NUL */
}

static __always_inline void emit(const struct file_call *c, long ret, __u64 id)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file_scratch *s;
	struct file_event *ev;
	__u32 zero = 0, path_len, new_len = 0, uid, euid, gid;
	__u64 size;

	s = bpf_map_lookup_elem(&file_scratch, &zero);
	if (!s)
		return;
	ev = &s->ev;
	rw_hdr_init(&ev->hdr, RW_KIND_FILE_OP, 0);
	rw_fill_proc_id(&ev->id, task, (__u32)id);
	rw_task_creds(task, &uid, &euid, &gid);
	ev->ret = ret;
	ev->flags = c->flags;
	ev->mode = c->mode;
	ev->uid = uid;
	ev->euid = euid;
	ev->op = c->op;
	ev->_pad = 0;
	ev->_pad2 = 0;

	path_len = read_path(s->data, c->path, c->dfd, task, &ev->hdr.flags, RW_FILE_F_PATH_RELATIVE);
	if (path_len > RW_FILE_SLOT - 1)
		return;
	if (c->new_path) {
		new_len =
		    read_path(s->slot, c->new_path, c->new_dfd, task, &ev->hdr.flags, RW_FILE_F_NEW_PATH_RELATIVE);
		if (new_len > RW_FILE_SLOT - 1)
			return;
		if (new_len && bpf_probe_read_kernel(&s->data[path_len], new_len, s->slot))
			new_len = 0;
	}
	ev->path_len = path_len;
	ev->new_path_len = new_len;
	size = sizeof(*ev) + path_len + new_len;
	if (size > sizeof(*ev) + sizeof(s->data))
		return;
	ev->hdr.size = size;
	rw_output(ev, size);
}

/* Every sys_exit_* program: the saved call of this thread, its return value, the filter, maybe a record. */
static __always_inline int on_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct file_call *saved, c;
	long ret = ctx->ret;

	saved = bpf_map_lookup_elem(&calls, &id);
	if (!saved)
		return 0;
	c = *saved;
	bpf_map_delete_elem(&calls, &id);
	if (wanted(&c, ret))
		emit(&c, ret, id);
	return 0;
}

/*
 * The matching syscalls/sys_exit_* tracepoints: the return value is final
 * here (fd, 0 or -errno) and the caller's path buffers are still mapped.
 */
SEC("tp/syscalls/sys_exit_openat")
int exit_openat(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx);
}

SEC("tp/syscalls/sys_exit_openat2")
int exit_openat2(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx);
}

SEC("tp/syscalls/sys_exit_open")
int exit_open(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx);
}

SEC("tp/syscalls/sys_exit_creat")
int exit_creat(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx);
}

SEC("tp/syscalls/sys_exit_unlinkat")
int exit_unlinkat(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx);
}

SEC("tp/syscalls/sys_exit_unlink")
int exit_unlink(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx);
}

SEC("tp/syscalls/sys_exit_renameat2")
int exit_renameat2(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx);
}

SEC("tp/syscalls/sys_exit_renameat")
int exit_renameat(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx);
}

SEC("tp/syscalls/sys_exit_rename")
int exit_rename(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx);
}

SEC("tp/syscalls/sys_exit_fchmodat")
int exit_fchmodat(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx);
}

SEC("tp/syscalls/sys_exit_fchmodat2")
int exit_fchmodat2(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx);
}

SEC("tp/syscalls/sys_exit_chmod")
int exit_chmod(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx);
}
