/*
 * bench_util.h - what the benchmark programs share: failing, the clock,
 * buffers, medians, a seeded generator, number formatting, the load
 * average and reading memory figures from /proc. Header-only, like Tests/c/test_util.h; include after <cowmem.h>
 * with _GNU_SOURCE defined.
 */
#ifndef COWMEM_BENCH_UTIL_H
#define COWMEM_BENCH_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)

/* Stops the program: it cannot measure what it was asked to. Output so far
 * is flushed; _exit, because threads or forked children may still run. */
static void die(const char *format, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *format, ...)
{
	va_list args;
	fflush(stdout);
	va_start(args, format);
	fprintf(stderr, "%s: ", program_invocation_short_name);
	vfprintf(stderr, format, args);
	va_end(args);
	fputc('\n', stderr);
	_exit(2);
}

static double now_seconds(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static __attribute__((unused)) void *map_anonymous(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap of %zu MiB: %s", size / MIB, strerror(errno));
	return p;
}

static __attribute__((unused)) int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* splitmix64: small, and good enough to pick pages. */
static __attribute__((unused)) uint64_t splitmix(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* A number for a table: three significant digits or more; "-" for NaN.
 * Returns one of 32 rotating buffers, so a printf may use many. */
static const char *num(double v)
{
	static char ring[32][32];
	static int next;
	char *s = ring[next++ % 32];
	double a = fabs(v);
	if (isnan(v))
		return "-";
	if (a >= 100 || a == 0)
		snprintf(s, 32, "%.0f", v);
	else if (a >= 10)
		snprintf(s, 32, "%.1f", v);
	else if (a >= 1)
		snprintf(s, 32, "%.2f", v);
	else
		snprintf(s, 32, "%.3g", v);
	return s;
}

/* "64 MiB", "1 GiB"; rotating buffers, as num(). */
static __attribute__((unused)) const char *size_name(unsigned mib)
{
	static char ring[8][16];
	static int next;
	char *s = ring[next++ % 8];
	if (mib >= 1024 && mib % 1024 == 0)
		snprintf(s, 16, "%u GiB", mib / 1024);
	else
		snprintf(s, 16, "%u MiB", mib);
	return s;
}

/* The first line of a file, without its newline; "?" if unreadable. */
static void first_line_of(const char *path, char *out, size_t size)
{
	out[0] = 0;
	FILE *f = fopen(path, "r");
	if (f) {
		if (fgets(out, (int)size, f))
			out[strcspn(out, "\n")] = 0;
		fclose(f);
	}
	if (!out[0])
		snprintf(out, size, "?");
}

/* The 1, 5 and 15 minute load averages. */
static void load_average(char *out, size_t size)
{
	first_line_of("/proc/loadavg", out, size);
	char *p = out;
	for (int fields = 0; *p && fields < 3; p++)
		fields += *p == ' ';
	if (*p)
		p[-1] = 0;
}

/* The CPU's model name from /proc/cpuinfo, or "?". */
static __attribute__((unused)) void cpu_model(char *cpu, size_t size)
{
	char line[256];
	FILE *f = fopen("/proc/cpuinfo", "r");

	snprintf(cpu, size, "?");
	while (f && fgets(line, sizeof line, f)) {
		if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
			snprintf(cpu, size, "%s", strchr(line, ':') + 2);
			cpu[strcspn(cpu, "\n")] = 0;
			break;
		}
	}
	if (f)
		fclose(f);
}

/* ---- Memory ------------------------------------------------------------ */

/* "Key:  N kB" from a /proc file, in bytes; -1 if absent. */
static __attribute__((unused)) long long proc_kib_field(const char *path, const char *key)
{
	char line[256];
	size_t length = strlen(key);
	long long bytes = -1;
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (bytes < 0 && fgets(line, sizeof line, f))
		if (!strncmp(line, key, length) && line[length] == ':')
			bytes = 1024 * strtoll(line + length + 1, NULL, 10);
	fclose(f);
	return bytes;
}

/* Allocated bytes of every memfd this process has open, each counted once:
 * a region's pages live there whether or not a mapping shows them. */
static __attribute__((unused)) long long own_memfd_bytes(void)
{
	enum { MAX_FILES = 4096 };
	static ino_t seen[MAX_FILES];
	int files = 0;
	long long total = 0;
	DIR *dir = opendir("/proc/self/fd");
	if (!dir)
		return -1;
	for (struct dirent *e; (e = readdir(dir));) {
		char path[300], target[64];
		snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
		ssize_t length = readlink(path, target, sizeof target - 1);
		struct stat st;
		if (length < 7 || strncmp(target, "/memfd:", 7) || stat(path, &st) < 0)
			continue;
		bool counted = false;
		for (int i = 0; i < files && !counted; i++)
			counted = seen[i] == st.st_ino;
		if (counted)
			continue;
		if (files < MAX_FILES)
			seen[files++] = st.st_ino;
		total += (long long)st.st_blocks * 512;
	}
	closedir(dir);
	return total;
}

#endif /* COWMEM_BENCH_UTIL_H */
