/*
 * joinrace.c - a probe for `make test-kernels KERNEL_TESTS=joinrace`: how
 * often /proc/self/task still lists a thread right after pthread_join has
 * returned for it (the kernel wakes the joiner before it removes the
 * thread). Tests/c/leaks.c counts threads that way. Exits 1 if it saw it.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
static void *nothing(void *a) { return a; }
static int tasks(void) {
	DIR *d = opendir("/proc/self/task"); struct dirent *e; int n = 0;
	while ((e = readdir(d))) if (e->d_name[0] != '.') n++;
	closedir(d); return n;
}
int main(void) {
	int extra = 0, extra_after_5ms = 0;
	for (int i = 0; i < 1000; i++) {
		pthread_t t; pthread_create(&t, NULL, nothing, NULL); pthread_join(t, NULL);
		if (tasks() != 1) { extra++; usleep(5000); if (tasks() != 1) extra_after_5ms++; }
	}
	printf("joinrace: %d of 1000 counts right after pthread_join saw the joined thread; %d still 5 ms later\n", extra, extra_after_5ms);
	return extra ? 1 : 0;
}
