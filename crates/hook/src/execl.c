// SPDX-License-Identifier: Apache-2.0
//
// The three C-variadic exec functions (execl, execlp, execle). Stable Rust cannot define a C-variadic function,
// so these collect their arguments into an argv array on the stack, exactly as glibc's own execl does (a VLA
// sized by a first pass over the va_list), and hand it to the Rust side, which reports, waits for the verdict
// and calls the real execv/execvp/execve.
//
// These functions are hidden: a Rust cdylib exports only Rust-defined symbols, so lib.rs exports `execl`,
// `execlp` and `execle` as naked trampolines that tail-jump here with every register and stack slot untouched.
// No malloc, no locks: they may run in a child between vfork and exec.

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>

// Wire values of ExecOp (ringwatch-hook-protocol); lib.rs checks them against the enum.
#define RW_OP_EXECL 5
#define RW_OP_EXECLP 6
#define RW_OP_EXECLE 7

// Implemented in lib.rs: report `op`, then run the real execv (execl), execvp (execlp) or execve (execle).
extern int ringwatch_hook_exec_list(int op, const char *path, char *const argv[], char *const envp[]);

// Counts the arguments from `arg` to the terminating NULL (excluded); -1 when the count would not fit an int,
// which glibc reports as E2BIG too.
static long count_args(const char *arg, va_list ap)
{
	long argc = 0;
	if (arg == NULL)
		return 0;
	for (argc = 1; va_arg(ap, const char *) != NULL; argc++) {
		if (argc == INT_MAX)
			return -1;
	}
	return argc;
}

#define RW_COLLECT_ARGS(first)                                                                                         \
	va_list ap;                                                                                                    \
	va_start(ap, first);                                                                                           \
	long argc = count_args(first, ap);                                                                             \
	va_end(ap);                                                                                                    \
	if (argc < 0) {                                                                                                \
		errno = E2BIG;                                                                                         \
		return -1;                                                                                             \
	}                                                                                                              \
	const char *argv[argc + 1];                                                                                    \
	argv[0] = first;                                                                                               \
	va_start(ap, first);                                                                                           \
	for (long i = 1; i <= argc; i++)                                                                               \
		argv[i] = va_arg(ap, const char *);                                                                    \
	argv[argc] = NULL

__attribute__((visibility("hidden"))) int ringwatch_shim_execl(const char *path, const char *arg, ...)
{
	RW_COLLECT_ARGS(arg);
	va_end(ap);
	return ringwatch_hook_exec_list(RW_OP_EXECL, path, (char *const *)argv, NULL);
}

__attribute__((visibility("hidden"))) int ringwatch_shim_execlp(const char *file, const char *arg, ...)
{
	RW_COLLECT_ARGS(arg);
	va_end(ap);
	return ringwatch_hook_exec_list(RW_OP_EXECLP, file, (char *const *)argv, NULL);
}

__attribute__((visibility("hidden"))) int ringwatch_shim_execle(const char *path, const char *arg, ...)
{
	RW_COLLECT_ARGS(arg);
	// The environment follows the NULL that ends the arguments (the second pass read up to and including that
	// NULL; when `arg` itself was the NULL it read nothing), so the next va_arg is envp.
	char *const *envp = va_arg(ap, char *const *);
	va_end(ap);
	return ringwatch_hook_exec_list(RW_OP_EXECLE, path, (char *const *)argv, envp);
}
