// SPDX-License-Identifier: Apache-2.0
//
// Test helper: an allocator interposer that aborts when malloc/calloc/realloc/free is called while armed.
// exec_variants arms it right around the exec-family call, so the hook's path (between the program's call and the
// kernel) is proven allocation-free: the hook may run in a child after fork of a threaded process, where malloc
// can deadlock. glibc routes its own internal allocations through these symbols too.
#define _GNU_SOURCE
#include <stdlib.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);

static volatile int armed;

void rw_trap_arm(int on)
{
	armed = on;
}

static void trip(const char *what)
{
	static const char msg[] = "malloc_trap: allocation on the hook path: ";
	write(2, msg, sizeof msg - 1);
	while (*what)
		write(2, what++, 1);
	write(2, "\n", 1);
	abort();
}

void *malloc(size_t n)
{
	if (armed)
		trip("malloc");
	return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
	if (armed)
		trip("calloc");
	return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
	if (armed)
		trip("realloc");
	return __libc_realloc(p, n);
}

void free(void *p)
{
	if (armed && p)
		trip("free");
	__libc_free(p);
}
