// SPDX-License-Identifier: Apache-2.0
//
// Test helper for tests/file_preload.rs: one process doing exactly the file calls a test asks for. Built with gcc
// by the test, dynamically (so LD_PRELOAD applies) and once more with -static (so it does not).
//
//   file_ops all DIR        every hooked function once, in DIR (the cwd must be DIR): relative, dirfd-relative and
//                           absolute paths; prints "NAME ok" or "NAME fail ERRNO" per call. Files a call needs are
//                           made beforehand with raw system calls, which the hook does not see.
//   file_ops deny-all DIR   every hooked function on DIR/denied-* (made beforehand with raw system calls); each
//                           must fail; prints "NAME fail ERRNO" (or "NAME ok" if it was not refused)
//   file_ops basic DIR      create DIR/basic (write "a"), append "b", rename to DIR/basic.new, unlink it
//   file_ops raw DIR        the same through syscall(2) (openat, renameat2, unlinkat): invisible to the hook
//   file_ops uring DIR      create DIR/uring-file with an io_uring OPENAT, delete it with an io_uring UNLINKAT (raw
//                           io_uring system calls, no liburing); prints "uring ok" or "uring unsupported ERRNO"
//   file_ops mmap-write PATH  open PATH read-write, store "MMAP" through a MAP_SHARED mapping twice, close
//   file_ops storm DIR N    N x (open O_CREAT|O_TRUNC, write 1 byte, close, unlink) of DIR/sI; prints "storm N NS"
//   file_ops try PATH       open(PATH, O_RDONLY); prints "ok" or "failed errno=N"
//   file_ops looks DIR      stat/lstat/stat64/lstat64/fstatat/fstatat64/statx/access/faccessat/readlink/readlinkat/
//                           opendir of a file, symlink and directory it made in DIR (trap armed around each but opendir)
//
// With RW_TRAP=1 and malloc_trap.so preloaded, the allocator is armed around each hooked call of `all` and
// `deny-all` (not around fopen/fopen64 in `all`: the real fopen allocates its FILE; `deny-all` covers them, since
// a denied fopen never reaches libc).
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

// glibc's _FORTIFY_SOURCE entry points, declared here so they can be called directly.
extern int __open_2(const char *, int);
extern int __open64_2(const char *, int);
extern int __openat_2(int, const char *, int);
extern int __openat64_2(int, const char *, int);

static void (*trap_arm)(int);

static void trap(int on)
{
	if (trap_arm)
		trap_arm(on);
}

// Prints the outcome of one call (rc < 0: failed with errno).
static void said(const char *name, long rc, int err)
{
	if (rc < 0)
		printf("%s fail %d\n", name, err);
	else
		printf("%s ok\n", name);
}

#define CALL(name, expr)                                                                                               \
	do {                                                                                                           \
		trap(1);                                                                                               \
		long rc_ = (long)(expr);                                                                               \
		int err_ = errno;                                                                                      \
		trap(0);                                                                                               \
		said(name, rc_, err_);                                                                                 \
		if (rc_ >= 3 && strncmp(name, "open", 4) == 0)                                                         \
			close((int)rc_);                                                                               \
	} while (0)

// Same, for calls returning a FILE* (the trap stays off unless `armed`).
static void fcall(const char *name, FILE *f, int err)
{
	said(name, f ? 0 : -1, err);
	if (f)
		fclose(f);
}

// Helpers that the hook does not see: raw system calls.
static int raw_open(int dirfd, const char *p, int flags)
{
	return (int)syscall(SYS_openat, dirfd, p, flags | O_CLOEXEC, 0644);
}

static void mk(const char *p)
{
	int fd = raw_open(AT_FDCWD, p, O_CREAT | O_WRONLY);
	if (fd >= 0)
		close(fd);
}

static void mkd(const char *p)
{
	syscall(SYS_mkdirat, AT_FDCWD, p, 0755);
}

static int all(const char *dir)
{
	char abs_path[4096];
	snprintf(abs_path, sizeof abs_path, "%s/o-abs", dir);
	int dirfd = raw_open(AT_FDCWD, ".", O_RDONLY | O_DIRECTORY);
	if (dirfd < 0)
		return 1;
	CALL("open", open("o-open", O_WRONLY | O_CREAT | O_TRUNC, 0640));
	mk("o-open64");
	CALL("open64", open64("o-open64", O_RDONLY));
	CALL("openat", openat(dirfd, "o-openat", O_RDWR | O_CREAT | O_EXCL, 0600));
	mk("o-openat64");
	CALL("openat64", openat64(dirfd, "o-openat64", O_WRONLY | O_APPEND));
	CALL("creat", creat("o-creat", 0644));
	mk("o-creat64");
	CALL("creat64", creat64("o-creat64", 0644));
	mk("o-open2");
	CALL("open_2", __open_2("o-open2", O_RDONLY));
	mk("o-open64_2");
	CALL("open64_2", __open64_2("o-open64_2", O_RDONLY));
	mk("o-openat2");
	CALL("openat_2", __openat_2(dirfd, "o-openat2", O_RDONLY));
	mk("o-openat64_2");
	CALL("openat64_2", __openat64_2(dirfd, "o-openat64_2", O_RDONLY));
	FILE *f = fopen("o-fopen", "w");
	fcall("fopen", f, errno);
	mk("o-fopen64");
	f = fopen64("o-fopen64", "r");
	fcall("fopen64", f, errno);
	mk("o-unlink");
	CALL("unlink", unlink("o-unlink"));
	mk("o-unlinkat");
	CALL("unlinkat", unlinkat(dirfd, "o-unlinkat", 0));
	mkd("o-unlinkat-dir");
	CALL("unlinkat-dir", unlinkat(dirfd, "o-unlinkat-dir", AT_REMOVEDIR));
	mk("o-rename");
	CALL("rename", rename("o-rename", "o-rename.new"));
	mk("o-renameat");
	CALL("renameat", renameat(dirfd, "o-renameat", AT_FDCWD, "o-renameat.new"));
	mk("o-renameat2");
	CALL("renameat2", renameat2(dirfd, "o-renameat2", dirfd, "o-renameat2.new", RENAME_NOREPLACE));
	mk("o-truncate");
	CALL("truncate", truncate("o-truncate", 10));
	mk("o-truncate64");
	CALL("truncate64", truncate64("o-truncate64", 10));
	mk("o-chmod");
	CALL("chmod", chmod("o-chmod", 0600));
	mk("o-fchmod");
	int fd = raw_open(AT_FDCWD, "o-fchmod", O_RDONLY);
	CALL("fchmod", fchmod(fd, 0604));
	close(fd);
	mk("o-fchmodat");
	CALL("fchmodat", fchmodat(dirfd, "o-fchmodat", 0640, 0));
	CALL("mkdir", mkdir("o-mkdir", 0750));
	CALL("mkdirat", mkdirat(dirfd, "o-mkdirat", 0700));
	mkd("o-rmdir");
	CALL("rmdir", rmdir("o-rmdir"));
	mk("o-remove");
	CALL("remove", remove("o-remove"));
	mkd("sub");
	CALL("open-dots", open("./sub/../o-dots", O_WRONLY | O_CREAT, 0600));
	CALL("open-tmpfile", open(".", O_TMPFILE | O_WRONLY, 0600));
	CALL("open-abs", open(abs_path, O_WRONLY | O_CREAT, 0600));
	int subfd = raw_open(AT_FDCWD, "sub", O_RDONLY | O_DIRECTORY);
	CALL("openat-sub", openat(subfd, "o-in-sub", O_WRONLY | O_CREAT, 0600));
	CALL("mkdirat-sub", mkdirat(subfd, "../o-up", 0700));
	close(subfd);
	CALL("open-missing", open("o-missing", O_RDONLY));
	close(dirfd);
	return 0;
}

static int deny_all(const char *dir)
{
	if (chdir(dir) != 0)
		return 1;
	static const char *names[] = {"denied-open",   "denied-creat",	"denied-fopen",
				      "denied-unlink", "denied-rename", "denied-truncate",
				      "denied-chmod",  "denied-fchmod", "denied-remove"};
	for (size_t i = 0; i < sizeof names / sizeof *names; i++)
		mk(names[i]);
	mkd("denied-dir");
	int dirfd = raw_open(AT_FDCWD, ".", O_RDONLY | O_DIRECTORY);
	int fd = raw_open(AT_FDCWD, "denied-fchmod", O_RDONLY);
	CALL("open", open("denied-open", O_RDONLY));
	CALL("open64", open64("denied-open", O_WRONLY | O_TRUNC));
	CALL("openat", openat(dirfd, "denied-open", O_RDONLY));
	CALL("openat64", openat64(dirfd, "denied-new", O_WRONLY | O_CREAT, 0600));
	CALL("open_2", __open_2("denied-open", O_RDONLY));
	CALL("openat_2", __openat_2(dirfd, "denied-open", O_RDONLY));
	CALL("creat", creat("denied-creat", 0600));
	CALL("creat64", creat64("denied-new2", 0600));
	trap(1);
	FILE *f = fopen("denied-fopen", "w");
	int err = errno;
	trap(0);
	fcall("fopen", f, err);
	trap(1);
	f = fopen64("denied-fopen", "r");
	err = errno;
	trap(0);
	fcall("fopen64", f, err);
	CALL("unlink", unlink("denied-unlink"));
	CALL("unlinkat", unlinkat(dirfd, "denied-unlink", 0));
	CALL("rename", rename("denied-rename", "moved"));
	CALL("renameat", renameat(dirfd, "denied-rename", dirfd, "moved"));
	CALL("renameat2", renameat2(dirfd, "denied-rename", dirfd, "moved", 0));
	CALL("rename-onto", rename("o-free", "denied-target"));
	CALL("truncate", truncate("denied-truncate", 0));
	CALL("truncate64", truncate64("denied-truncate", 0));
	CALL("chmod", chmod("denied-chmod", 0777));
	CALL("fchmod", fchmod(fd, 0777));
	CALL("fchmodat", fchmodat(dirfd, "denied-chmod", 0777, 0));
	CALL("mkdir", mkdir("denied-mkdir", 0755));
	CALL("mkdirat", mkdirat(dirfd, "denied-mkdir", 0755));
	CALL("rmdir", rmdir("denied-dir"));
	CALL("remove", remove("denied-remove"));
	CALL("allowed", open("o-allowed", O_WRONLY | O_CREAT, 0600));
	return 0;
}

// create, append, rename, delete with libc (the static build makes the same calls invisibly).
static int basic(const char *dir)
{
	char a[4096], b[4096];
	snprintf(a, sizeof a, "%s/basic", dir);
	snprintf(b, sizeof b, "%s/basic.new", dir);
	int fd = open(a, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, "a", 1) != 1 || close(fd) != 0)
		return 1;
	fd = open(a, O_WRONLY | O_APPEND);
	if (fd < 0 || write(fd, "b", 1) != 1 || close(fd) != 0)
		return 1;
	if (rename(a, b) != 0 || unlink(b) != 0)
		return 1;
	puts("basic ok");
	return 0;
}

static int raw(const char *dir)
{
	char a[4096], b[4096];
	snprintf(a, sizeof a, "%s/raw", dir);
	snprintf(b, sizeof b, "%s/raw.new", dir);
	int fd = (int)syscall(SYS_openat, AT_FDCWD, a, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, "a", 1) != 1 || close(fd) != 0)
		return 1;
	if (syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, 0) != 0)
		return 1;
	if (syscall(SYS_fchmodat, AT_FDCWD, b, 0600) != 0 || syscall(SYS_unlinkat, AT_FDCWD, b, 0) != 0)
		return 1;
	puts("raw ok");
	return 0;
}

// A minimal io_uring: one SQE at a time, waited for with io_uring_enter(GETEVENTS).
struct ring {
	int fd;
	unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
};

static int ring_setup(struct ring *r)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof p);
	r->fd = (int)syscall(__NR_io_uring_setup, 4, &p);
	if (r->fd < 0)
		return -1;
	size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	char *sq = mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
	char *cq = mmap(NULL, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
	r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || r->sqes == MAP_FAILED)
		return -1;
	r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
	r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	r->sq_array = (unsigned *)(sq + p.sq_off.array);
	r->cq_head = (unsigned *)(cq + p.cq_off.head);
	r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
	r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
	r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
	return 0;
}

// Submits `sqe` and returns its completion result (-errno on failure).
static int ring_run(struct ring *r, const struct io_uring_sqe *sqe)
{
	unsigned tail = *r->sq_tail;
	unsigned idx = tail & *r->sq_mask;
	r->sqes[idx] = *sqe;
	r->sq_array[idx] = idx;
	__atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
	if (syscall(__NR_io_uring_enter, r->fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
		return -errno;
	unsigned head = __atomic_load_n(r->cq_head, __ATOMIC_ACQUIRE);
	if (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE))
		return -EAGAIN;
	int res = r->cqes[head & *r->cq_mask].res;
	__atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
	return res;
}

static int uring(const char *dir)
{
	char a[4096];
	snprintf(a, sizeof a, "%s/uring-file", dir);
	struct ring r;
	if (ring_setup(&r) != 0) {
		printf("uring unsupported %d\n", errno);
		return 0;
	}
	struct io_uring_sqe sqe;
	memset(&sqe, 0, sizeof sqe);
	sqe.opcode = IORING_OP_OPENAT;
	sqe.fd = AT_FDCWD;
	sqe.addr = (uint64_t)(uintptr_t)a;
	sqe.open_flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
	sqe.len = 0644;
	int fd = ring_run(&r, &sqe);
	if (fd < 0) {
		printf("uring unsupported %d\n", -fd);
		return 0;
	}
	if (write(fd, "u", 1) != 1 || close(fd) != 0)
		return 1;
	struct stat st;
	if (stat(a, &st) != 0)
		return 1;
	memset(&sqe, 0, sizeof sqe);
	sqe.opcode = IORING_OP_UNLINKAT;
	sqe.fd = AT_FDCWD;
	sqe.addr = (uint64_t)(uintptr_t)a;
	int rc = ring_run(&r, &sqe);
	if (rc != 0) {
		printf("uring unlink failed %d\n", -rc);
		return 1;
	}
	puts("uring ok");
	return 0;
}

static int mmap_write(const char *path)
{
	int fd = open(path, O_RDWR);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0 || st.st_size < 4)
		return 1;
	char *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return 1;
	for (int round = 0; round < 2; round++) {
		memcpy(p, round ? "MMAP" : "mmap", 4);
		if (msync(p, (size_t)st.st_size, MS_SYNC) != 0)
			return 1;
	}
	if (munmap(p, (size_t)st.st_size) != 0 || close(fd) != 0)
		return 1;
	puts("mmap ok");
	return 0;
}

static int storm(const char *dir, long n)
{
	char path[4096];
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < n; i++) {
		snprintf(path, sizeof path, "%s/s%ld", dir, i);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0 || write(fd, "x", 1) != 1 || close(fd) != 0 || unlink(path) != 0) {
			perror(path);
			return 1;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long long ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
	printf("storm %ld %lld\n", n, ns);
	return 0;
}

// The read-side calls a user-mode sandbox redirects, on a file, a symlink and a directory this process made (in a
// sandbox they exist only in its shadow). The trap is armed around each, except opendir (libc allocates the DIR).
static int looks(const char *dir)
{
	struct stat st;
	struct stat64 st64;
	struct statx stx;
	char buf[256];
	if (chdir(dir) != 0)
		return 1;
	int fd = open("l-file", O_CREAT | O_WRONLY | O_TRUNC, 0644);
	if (fd < 0 || write(fd, "look", 4) != 4 || close(fd) != 0 || symlink("l-file", "l-link") != 0 ||
	    mkdir("l-dir", 0755) != 0)
		return 1;
	CALL("stat", stat("l-file", &st));
	CALL("lstat", lstat("l-link", &st));
	CALL("stat64", stat64("l-link", &st64));
	CALL("lstat64", lstat64("l-dir", &st64));
	CALL("fstatat", fstatat(AT_FDCWD, "l-link", &st, AT_SYMLINK_NOFOLLOW));
	CALL("fstatat64", fstatat64(AT_FDCWD, "l-file", &st64, 0));
	CALL("statx", statx(AT_FDCWD, "l-file", 0, STATX_SIZE, &stx));
	printf("size %lld\n", (long long)stx.stx_size);
	CALL("access", access("l-file", W_OK));
	CALL("faccessat", faccessat(AT_FDCWD, "l-dir", X_OK, 0));
	CALL("readlink", readlink("l-link", buf, sizeof buf));
	CALL("readlinkat", readlinkat(AT_FDCWD, "l-link", buf, sizeof buf));
	CALL("stat-missing", stat("l-none", &st));
	DIR *d = opendir("l-dir");
	said("opendir", d ? 0 : -1, errno);
	if (d)
		closedir(d);
	return 0;
}

int main(int argc, char **argv)
{
	if (getenv("RW_TRAP"))
		trap_arm = (void (*)(int))dlsym(RTLD_DEFAULT, "rw_trap_arm");
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 3 && strcmp(argv[1], "all") == 0)
		return chdir(argv[2]) == 0 ? all(argv[2]) : 1;
	if (argc == 3 && strcmp(argv[1], "looks") == 0)
		return looks(argv[2]);
	if (argc == 3 && strcmp(argv[1], "deny-all") == 0)
		return deny_all(argv[2]);
	if (argc == 3 && strcmp(argv[1], "basic") == 0)
		return basic(argv[2]);
	if (argc == 3 && strcmp(argv[1], "raw") == 0)
		return raw(argv[2]);
	if (argc == 3 && strcmp(argv[1], "uring") == 0)
		return uring(argv[2]);
	if (argc == 3 && strcmp(argv[1], "mmap-write") == 0)
		return mmap_write(argv[2]);
	if (argc == 4 && strcmp(argv[1], "storm") == 0)
		return storm(argv[2], strtol(argv[3], NULL, 10));
	if (argc == 3 && strcmp(argv[1], "try") == 0) {
		int fd = open(argv[2], O_RDONLY);
		if (fd < 0)
			printf("failed errno=%d\n", errno);
		else
			puts("ok");
		return 0;
	}
	fprintf(stderr, "usage: see the comment at the top of file_ops.c\n");
	return 2;
}
