// SPDX-License-Identifier: Apache-2.0
//
// Test helper for tests/file_ebpf.rs and crates/cli/tests/file_ebpf_e2e.rs: one process making exactly the file
// system calls a test asks for, through syscall(2) so the libc in use cannot change which syscall runs. Prints one
// line per call, "NAME RET" (RET = -errno on failure), for the test's log.
//
//   file_syscalls [-C DIR] [-s MS] OP ARGS...      chdir to DIR first; sleep MS milliseconds after the call (so a
//                                                  pipeline can still read /proc/PID)
//   OPs:
//     openat PATH FLAGS       openat(AT_FDCWD, PATH, FLAGS (octal), 0644)
//     openat2 PATH FLAGS      openat2(AT_FDCWD, PATH, {FLAGS (octal), mode 0600 with O_CREAT})
//     dirat DIR NAME FLAGS    open DIR, then openat(dirfd, NAME, FLAGS (octal), 0644)
//     renameat2 OLD NEW FLAGS renameat2(AT_FDCWD, OLD, AT_FDCWD, NEW, FLAGS (decimal))
//     unlinkat PATH FLAGS     unlinkat(AT_FDCWD, PATH, FLAGS (decimal; 512 = AT_REMOVEDIR))
//     fchmodat PATH MODE      fchmodat(AT_FDCWD, PATH, MODE (octal))
//     storm PATH N            N x (openat(PATH, O_RDONLY), close); prints "storm N NS"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long report(const char *name, long ret)
{
	printf("%s %ld\n", name, ret < 0 ? -(long)errno : ret);
	fflush(stdout);
	return ret;
}

static long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	int i = 1, sleep_ms = 0;
	const char *op;

	while (i + 1 < argc && argv[i][0] == '-') {
		if (strcmp(argv[i], "-C") == 0 && chdir(argv[i + 1]) != 0) {
			perror("chdir");
			return 2;
		} else if (strcmp(argv[i], "-s") == 0) {
			sleep_ms = atoi(argv[i + 1]);
		}
		i += 2;
	}
	if (i >= argc) {
		fprintf(stderr, "usage: file_syscalls [-C DIR] [-s MS] OP ARGS...\n");
		return 2;
	}
	op = argv[i];
	char **a = &argv[i + 1];
	int n = argc - i - 1;

	if (strcmp(op, "openat") == 0 && n == 2) {
		long fd = report(op, syscall(SYS_openat, AT_FDCWD, a[0], (int)strtol(a[1], NULL, 8), 0644));
		if (fd >= 0)
			close(fd);
	} else if (strcmp(op, "openat2") == 0 && n == 2) {
		struct open_how how = {0};

		how.flags = strtoul(a[1], NULL, 8);
		how.mode = (how.flags & O_CREAT) ? 0600 : 0;
		long fd = report(op, syscall(SYS_openat2, AT_FDCWD, a[0], &how, sizeof(how)));
		if (fd >= 0)
			close(fd);
	} else if (strcmp(op, "dirat") == 0 && n == 3) {
		int dir = open(a[0], O_RDONLY | O_DIRECTORY);
		long fd = report(op, syscall(SYS_openat, dir, a[1], (int)strtol(a[2], NULL, 8), 0644));
		if (fd >= 0)
			close(fd);
	} else if (strcmp(op, "renameat2") == 0 && n == 3) {
		report(op, syscall(SYS_renameat2, AT_FDCWD, a[0], AT_FDCWD, a[1], atoi(a[2])));
	} else if (strcmp(op, "unlinkat") == 0 && n == 2) {
		report(op, syscall(SYS_unlinkat, AT_FDCWD, a[0], atoi(a[1])));
	} else if (strcmp(op, "fchmodat") == 0 && n == 2) {
		report(op, syscall(SYS_fchmodat, AT_FDCWD, a[0], (int)strtol(a[1], NULL, 8)));
	} else if (strcmp(op, "storm") == 0 && n == 2) {
		long count = atol(a[1]), start = now_ns(), k;

		for (k = 0; k < count; k++) {
			long fd = syscall(SYS_openat, AT_FDCWD, a[0], O_RDONLY, 0);
			if (fd < 0) {
				perror("storm open");
				return 1;
			}
			close(fd);
		}
		printf("storm %ld %ld\n", count, now_ns() - start);
	} else {
		fprintf(stderr, "unknown op or wrong arguments: %s\n", op);
		return 2;
	}
	if (sleep_ms > 0)
		usleep(sleep_ms * 1000);
	return 0;
}
