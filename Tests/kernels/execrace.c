/*
 * execrace.c - a probe for `make test-kernels KERNEL_TESTS=execrace`: how
 * often a child's O_CLOEXEC descriptor is still open once /proc/PID/exe
 * names the new program (5.10 changes the link before it closes them).
 * Tests/c/fork.c waits for exec that way. Exits 1 if it saw it.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	char self[256], other[256], path[64], link[256];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1); self[n] = 0;
	int seen = 0, runs = 200;
	for (int i = 0; i < runs; i++) {
		pid_t pid = fork();
		if (pid == 0) { execlp("sleep", "sleep", "30", (char *)NULL); _exit(127); }
		snprintf(path, sizeof path, "/proc/%d/exe", pid);
		for (;;) {
			n = readlink(path, other, sizeof other - 1);
			if (n > 0) { other[n] = 0; if (strcmp(self, other)) break; }
		}
		snprintf(path, sizeof path, "/proc/%d/fd/%d", pid, fd);
		n = readlink(path, link, sizeof link - 1);
		if (n > 0) { link[n] = 0; if (strstr(link, "pagemap")) seen++; }
		kill(pid, SIGKILL); waitpid(pid, NULL, 0);
	}
	printf("execrace: after /proc/PID/exe changed, the O_CLOEXEC pagemap fd %d was still open in %d of %d runs\n", fd, seen, runs);
	return seen ? 1 : 0;
}
