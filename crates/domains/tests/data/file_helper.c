// SPDX-License-Identifier: Apache-2.0
// Test helper for the fanotify file backend: one process doing exactly the file operations a test asks for.
//
//   file_helper mmap-write PATH      open PATH read-write, write through a MAP_SHARED mapping, close
//                                    (no write(2): the kernel raises no FAN_MODIFY, only FAN_CLOSE_WRITE)
//   file_helper mknod-many DIR N     create N empty regular files DIR/f0..f(N-1) with mknod(2)
//                                    (one FAN_CREATE each, no open, so the expected event count is exact)
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int mmap_write(const char *path)
{
	int fd = open(path, O_RDWR);
	if (fd < 0) {
		perror("open");
		return 1;
	}
	struct stat st;
	if (fstat(fd, &st) != 0 || st.st_size < 4) {
		fprintf(stderr, "%s: needs at least 4 bytes\n", path);
		return 1;
	}
	char *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	memcpy(p, "MMAP", 4);
	if (msync(p, (size_t)st.st_size, MS_SYNC) != 0 || munmap(p, (size_t)st.st_size) != 0) {
		perror("msync/munmap");
		return 1;
	}
	return close(fd) == 0 ? 0 : 1;
}

static int mknod_many(const char *dir, long n)
{
	char path[4096];
	for (long i = 0; i < n; i++) {
		snprintf(path, sizeof path, "%s/f%ld", dir, i);
		if (mknod(path, S_IFREG | 0644, 0) != 0) {
			perror("mknod");
			return 1;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "mmap-write") == 0)
		return mmap_write(argv[2]);
	if (argc == 4 && strcmp(argv[1], "mknod-many") == 0)
		return mknod_many(argv[2], strtol(argv[3], NULL, 10));
	fprintf(stderr, "usage: %s mmap-write PATH | mknod-many DIR N\n", argv[0]);
	return 2;
}
