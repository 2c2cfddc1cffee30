// SPDX-License-Identifier: Apache-2.0
//
// Test helper: a statically linked program (gcc -static) that runs /bin/echo argv[1]. No dynamic loader runs in
// it, so LD_PRELOAD cannot inject the hook: its exec is a known gap of the preload backend.
#include <stdio.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv)
{
	char *args[] = {"/bin/echo", argc > 1 ? argv[1] : "token", NULL};
	execve(args[0], args, environ);
	perror("execve");
	return 1;
}
