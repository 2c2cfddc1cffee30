// SPDX-License-Identifier: Apache-2.0
//
// Test helper for crates/cli/tests/sandbox.rs: a statically linked program (gcc -static) that creates argv[1] with
// the raw openat(2)/write(2) system calls. No dynamic loader runs in it, so no LD_PRELOAD hook can rewrite the path:
// the user-mode sandbox cannot contain it, the kernel-mode sandbox (overlayfs) must.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s PATH\n", argv[0]);
		return 2;
	}
	long fd = syscall(SYS_openat, AT_FDCWD, argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		perror("openat");
		return 1;
	}
	static const char text[] = "written by a static binary\n";
	if (syscall(SYS_write, fd, text, sizeof(text) - 1) != (long)(sizeof(text) - 1)) {
		perror("write");
		return 1;
	}
	return syscall(SYS_close, fd) == 0 ? 0 : 1;
}
