// SPDX-License-Identifier: Apache-2.0
//
// Test helper for tests/process_preload.rs: calls one exec-family function, chosen by argv[1], to run
// /bin/echo with argv[2] as its argument. Built with gcc by the test (dynamically, so LD_PRELOAD applies).
//
//   exec_variants OP TOKEN     OP: execve execv execvp execvpe execl execlp execle fexecve posix_spawn posix_spawnp
//   exec_variants enoent       execve of a missing file must fail with errno ENOENT; prints "errno ok"
//   exec_variants try PATH     execve(PATH); on failure prints "failed errno=N (name)" and exits 126
//
// With RW_TRAP=1 and malloc_trap.so preloaded, the allocator is armed around the exec-family call.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

// malloc_trap's switch, looked up at start (dlsym may allocate) when RW_TRAP is set; a no-op otherwise.
static void (*trap_arm)(int);

static void trap(int on)
{
	if (trap_arm)
		trap_arm(on);
}

static int spawn_and_wait(int use_path, char *tok)
{
	char *argv[] = {use_path ? "echo" : "/bin/echo", tok, NULL};
	pid_t pid;
	trap(1);
	int rc = use_path ? posix_spawnp(&pid, "echo", NULL, NULL, argv, environ)
			  : posix_spawn(&pid, "/bin/echo", NULL, NULL, argv, environ);
	trap(0);
	if (rc != 0) {
		printf("spawn failed rc=%d (%s)\n", rc, strerror(rc));
		return 126;
	}
	int status;
	if (waitpid(pid, &status, 0) < 0)
		return 125;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 124;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	const char *op = argv[1];
	char *tok = argc > 2 ? argv[2] : "token";
	char *echo_argv[] = {"/bin/echo", tok, NULL};
	char *echo_argv_bare[] = {"echo", tok, NULL};
	if (getenv("RW_TRAP"))
		trap_arm = (void (*)(int))dlsym(RTLD_DEFAULT, "rw_trap_arm");
	if (getenv("RW_TRAP") && !trap_arm) {
		printf("malloc_trap not loaded\n");
		return 3;
	}
	fflush(stdout);
	if (!strcmp(op, "enoent")) {
		char *args[] = {"/nonexistent/ringwatch-missing", NULL};
		errno = 0;
		trap(1);
		int rc = execve(args[0], args, environ);
		trap(0);
		if (rc == -1 && errno == ENOENT) {
			printf("errno ok\n");
			return 0;
		}
		printf("errno wrong: rc=%d errno=%d (%s)\n", rc, errno, strerror(errno));
		return 1;
	}
	if (!strcmp(op, "try") && argc > 2) {
		char *args[] = {argv[2], NULL};
		trap(1);
		execve(argv[2], args, environ);
		int e = errno;
		trap(0);
		printf("failed errno=%d (%s)\n", e, e == EACCES ? "EACCES" : strerror(e));
		return 126;
	}
	if (!strcmp(op, "fexecve")) {
		int fd = open("/bin/echo", O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return 3;
		trap(1);
		fexecve(fd, echo_argv, environ);
	} else if (!strcmp(op, "posix_spawn"))
		return spawn_and_wait(0, tok);
	else if (!strcmp(op, "posix_spawnp"))
		return spawn_and_wait(1, tok);
	else
		trap(1);
	if (!strcmp(op, "execve"))
		execve("/bin/echo", echo_argv, environ);
	else if (!strcmp(op, "execv"))
		execv("/bin/echo", echo_argv);
	else if (!strcmp(op, "execvp"))
		execvp("echo", echo_argv_bare);
	else if (!strcmp(op, "execvpe"))
		execvpe("echo", echo_argv_bare, environ);
	else if (!strcmp(op, "execl"))
		execl("/bin/echo", "/bin/echo", tok, (char *)NULL);
	else if (!strcmp(op, "execlp"))
		execlp("echo", "echo", tok, (char *)NULL);
	else if (!strcmp(op, "execle"))
		execle("/bin/echo", "/bin/echo", tok, (char *)NULL, environ);
	else if (strcmp(op, "fexecve")) {
		trap(0);
		return 2;
	}
	int e = errno;
	trap(0);
	printf("%s failed: %s\n", op, strerror(e));
	return 1;
}
