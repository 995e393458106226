/*
 * Makes its parent its tracer (PTRACE_TRACEME), says so, then executes its arguments: the
 * execve stops it for that tracer at once. Run by runner/tests/exe_attack.rs as a container's
 * pid 1 (its parent: the runner) and under --init (its parent: the reaper).
 */
#include <stdio.h>
#include <sys/ptrace.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	if (ptrace(PTRACE_TRACEME, 0, 0, 0) != 0) {
		perror("ptrace(PTRACE_TRACEME)");
		return 120;
	}
	printf("traced\n");
	fflush(stdout);
	execv(argv[1], argv + 1);
	perror("execv");
	return 127;
}
