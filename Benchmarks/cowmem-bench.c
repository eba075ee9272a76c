/*
 * cowmem-bench.c - CowMem against the kernel's own ways to copy memory.
 *
 * One program, one machine, one run: every contender is measured in the same
 * repetition, side by side, and the tables report medians. Contenders:
 *
 *   memcpy-fresh    memcpy into a new anonymous mapping (page faults included)
 *   memcpy-warm     memcpy into a buffer that is already populated
 *   fork            fork(): the kernel's page-level copy-on-write across
 *                   processes; writes and reads are measured in the child,
 *                   which reports through a pipe
 *   memfd-private   a second, MAP_PRIVATE mapping of a populated memfd:
 *                   cheap, but no snapshot (later writes to the memfd show
 *                   through every page the mapping has not written)
 *   cowmem          cowmem_clone(): first clone of a populated region, clone
 *                   again after the source changed 1% of its pages, clone of
 *                   a clone
 *
 * Workloads, per region size and per thread count: making the copy; first
 * write to 0.1%, 1%, 10% of the pages at random (seeded) and to every page in
 * order, in the copy and (for cowmem) in the source after the clone; reading
 * every page of a fresh copy. A write or a read touches one 64-bit word per
 * page: what is measured is the fault, not memory bandwidth.
 *
 * Memory added is the delta of this process's RssAnon (/proc/self/status)
 * plus the memfd (shmem) storage it holds; the CSV also has the delta with
 * the system's Shmem (/proc/meminfo) instead, which other processes move.
 * For a fork child RssAnon cannot see the copies (RSS counts a page shared
 * with the parent in both processes), so there it is the number of the
 * buffer's pages the child maps exclusively (/proc/self/pagemap bit 56),
 * measured in the child.
 *
 * Usage: cowmem-bench [--sizes 64,256,1024] [--reps 5] [--threads 1,2,4]
 *                     [--seed N] [--csv FILE] [--no-warmup]
 * This is a benchmark, not a test: it bounds nothing and always exits 0
 * unless it cannot run at all.
 */
#define _GNU_SOURCE
#include <cowmem.h>

#include "bench_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_LIST 16

static size_t page_size;

/* ---- Errors and clocks ---------------------------------------------------- */

/* ---- Results ---------------------------------------------------------------- */

/* One measured quantity; every repetition adds a sample. */
struct series {
	unsigned size_mib;
	const char *subject;  /* memcpy-fresh, fork, cowmem-clone, ... */
	const char *workload; /* copy, write, read */
	const char *pattern;  /* 0.1%, 1%, 10%, all, or - */
	int threads;
	const char *metric;   /* ms, us_per_page, mem_mib */
	double *samples;
	size_t count, capacity;
};

static struct series *all_series;
static size_t series_count, series_capacity;

static struct series *series_find(unsigned size_mib, const char *subject,
				  const char *workload, const char *pattern,
				  int threads, const char *metric, bool create)
{
	for (size_t i = 0; i < series_count; i++) {
		struct series *s = &all_series[i];
		if (s->size_mib == size_mib && s->threads == threads &&
		    !strcmp(s->subject, subject) && !strcmp(s->workload, workload) &&
		    !strcmp(s->pattern, pattern) && !strcmp(s->metric, metric))
			return s;
	}
	if (!create)
		return NULL;
	if (series_count == series_capacity) {
		series_capacity = series_capacity ? 2 * series_capacity : 256;
		all_series = realloc(all_series, series_capacity * sizeof *all_series);
		if (!all_series)
			die("out of memory");
	}
	struct series *s = &all_series[series_count++];
	*s = (struct series){ size_mib, subject, workload, pattern, threads,
			      metric, NULL, 0, 0 };
	return s;
}

static bool recording; /* false during the warm-up */

static void record(unsigned size_mib, const char *subject, const char *workload,
		   const char *pattern, int threads, const char *metric,
		   double value)
{
	if (!recording)
		return;
	struct series *s = series_find(size_mib, subject, workload, pattern,
				       threads, metric, true);
	if (s->count == s->capacity) {
		s->capacity = s->capacity ? 2 * s->capacity : 8;
		s->samples = realloc(s->samples, s->capacity * sizeof *s->samples);
		if (!s->samples)
			die("out of memory");
	}
	s->samples[s->count++] = value;
}

static double series_median(const struct series *s)
{
	if (!s || s->count == 0)
		return NAN;
	double *sorted = malloc(s->count * sizeof *sorted);
	if (!sorted)
		die("out of memory");
	memcpy(sorted, s->samples, s->count * sizeof *sorted);
	qsort(sorted, s->count, sizeof *sorted, compare_doubles);
	size_t n = s->count;
	double m = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
	free(sorted);
	return m;
}

static double median(unsigned size_mib, const char *subject,
		     const char *workload, const char *pattern, int threads,
		     const char *metric)
{
	return series_median(series_find(size_mib, subject, workload, pattern,
					 threads, metric, false));
}

/* ---- Memory ------------------------------------------------------------------- */

/*
 * Memory added, two ways, both with this process's RssAnon (private
 * anonymous pages: clone copies, memcpy buffers) plus shared memory:
 *   own:    the memfd (shmem) storage this process holds open, as allocated
 *           blocks; other processes on the machine cannot disturb it;
 *   system: the system-wide Shmem of /proc/meminfo, the figure the design
 *           notes use; it moves whenever any process allocates shared memory.
 * On a quiet machine the two deltas agree; the tables show `own`, the CSV
 * has both.
 */
struct memory {
	long long own, system;
};

static struct memory memory_sample(void)
{
	long long anonymous = proc_kib_field("/proc/self/status", "RssAnon");
	return (struct memory){ anonymous + own_memfd_bytes(),
				anonymous + proc_kib_field("/proc/meminfo", "Shmem") };
}

/*
 * The figure once it has settled (two readings 5 ms apart within 64 KiB, at
 * most 40 readings): the library may free memory on a thread of its own just
 * after a call returns. Not part of any timing.
 */
static struct memory memory_settled(void)
{
	struct memory last = memory_sample();
	for (int i = 0, quiet = 0; i < 40 && quiet < 1; i++) {
		nanosleep(&(struct timespec){ 0, 5 * 1000 * 1000 }, NULL);
		struct memory m = memory_sample();
		quiet = llabs(m.own - last.own) <= 64 * 1024 ? quiet + 1 : 0;
		last = m;
	}
	return last;
}

static void record_memory(unsigned size_mib, const char *subject,
			  const char *workload, const char *pattern, int threads,
			  struct memory before, struct memory after)
{
	record(size_mib, subject, workload, pattern, threads, "mem_mib",
	       (double)(after.own - before.own) / (double)MIB);
	record(size_mib, subject, workload, pattern, threads, "mem_sys_mib",
	       (double)(after.system - before.system) / (double)MIB);
}

/* Pages of [base, base + size) that this process maps exclusively: for a
 * fork child, the pages it has copied. */
static long long exclusive_pages(const void *base, size_t size)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	enum { CHUNK = 8192 };
	static uint64_t entries[CHUNK];
	size_t first = (uintptr_t)base / page_size, pages = size / page_size;
	long long count = 0;
	for (size_t done = 0; done < pages;) {
		size_t want = pages - done < CHUNK ? pages - done : CHUNK;
		ssize_t got = pread(fd, entries, want * 8,
				    (off_t)((first + done) * 8));
		if (got <= 0) {
			count = -1;
			break;
		}
		for (size_t i = 0; i < (size_t)got / 8; i++)
			count += (entries[i] >> 63 & 1) && (entries[i] >> 56 & 1);
		done += (size_t)got / 8;
	}
	close(fd);
	return count;
}

/* ---- Touching pages, from one or several threads ------------------------------ */

struct touch {
	unsigned char *base;
	const uint32_t *list; /* page numbers, or NULL for first..first+count */
	size_t first, count;
	bool write;
	uint64_t value;
	pthread_barrier_t *start;
	double began, ended;
	uint64_t sum;
};

static void touch_pages(struct touch *t)
{
	unsigned char *base = t->base;
	uint64_t sum = 0;
	for (size_t i = t->first; i < t->first + t->count; i++) {
		size_t p = t->list ? t->list[i] : i;
		volatile uint64_t *word = (volatile uint64_t *)(base + p * page_size);
		if (t->write)
			*word = t->value;
		else
			sum += *word;
	}
	t->sum = sum;
}

static void *touch_thread(void *arg)
{
	struct touch *t = arg;
	pthread_barrier_wait(t->start);
	t->began = now_seconds();
	touch_pages(t);
	t->ended = now_seconds();
	return NULL;
}

static volatile uint64_t read_sink;

/*
 * Touches `count` pages (list[0..count) or 0..count) split into `threads`
 * contiguous slices, one a thread, all released at once. Returns seconds from
 * the first thread starting to the last finishing.
 */
static double touch(void *base, const uint32_t *list, size_t count, bool write,
		    uint64_t value, int threads)
{
	struct touch slice[MAX_LIST];
	pthread_t id[MAX_LIST];
	pthread_barrier_t start;
	for (int i = 0; i < threads; i++)
		slice[i] = (struct touch){ base, list, count * i / threads,
					   count * (i + 1) / threads -
						   count * i / threads,
					   write, value, &start, 0, 0, 0 };
	if (threads == 1) {
		double t0 = now_seconds();
		touch_pages(&slice[0]);
		double elapsed = now_seconds() - t0;
		read_sink += slice[0].sum;
		return elapsed;
	}
	pthread_barrier_init(&start, NULL, (unsigned)threads);
	for (int i = 0; i < threads; i++)
		if (pthread_create(&id[i], NULL, touch_thread, &slice[i]))
			die("pthread_create failed");
	double began = 1e300, ended = 0;
	for (int i = 0; i < threads; i++) {
		pthread_join(id[i], NULL);
		began = slice[i].began < began ? slice[i].began : began;
		ended = slice[i].ended > ended ? slice[i].ended : ended;
		read_sink += slice[i].sum;
	}
	pthread_barrier_destroy(&start);
	return ended - began;
}

/* ---- Workload definitions ------------------------------------------------------ */

struct pattern {
	const char *name;
	double fraction; /* of the pages; 1 = every page, in order */
};

static const struct pattern patterns[] = {
	{ "0.1%", 0.001 }, { "1%", 0.01 }, { "10%", 0.1 }, { "all", 1.0 },
};
enum { PATTERNS = sizeof patterns / sizeof patterns[0] };

/* Byte values: what a region holds, what a copy writes, what a source writes. */
#define FILL_BYTE 0x5a
#define FILL_WORD 0x5a5a5a5a5a5a5a5aULL
#define COPY_WORD 0xc0c0c0c0c0c0c0c1ULL
#define SOURCE_WORD 0x5050505050505051ULL

struct run {
	unsigned size_mib;
	size_t size, pages;
	uint32_t *shuffled; /* a seeded permutation of the page numbers */
	int thread_counts[MAX_LIST];
	int thread_lists;
	bool isolation_broken;
};

/* The pages a pattern writes: a prefix of the permutation, or all in order. */
static const uint32_t *pattern_pages(const struct run *r, const struct pattern *p,
				     size_t *count)
{
	if (p->fraction >= 1.0) {
		*count = r->pages;
		return NULL;
	}
	*count = (size_t)((double)r->pages * p->fraction);
	if (*count == 0)
		*count = 1;
	return r->shuffled;
}

static void shuffle_pages(struct run *r, uint64_t seed)
{
	uint64_t state = seed;
	for (size_t i = 0; i < r->pages; i++)
		r->shuffled[i] = (uint32_t)i;
	for (size_t i = r->pages - 1; i > 0; i--) {
		size_t j = (size_t)(splitmix(&state) % (i + 1));
		uint32_t t = r->shuffled[i];
		r->shuffled[i] = r->shuffled[j];
		r->shuffled[j] = t;
	}
}

static uint64_t word_at(const void *base, size_t page)
{
	return *(const volatile uint64_t *)((const unsigned char *)base +
					    page * page_size);
}

/* Spot-checks that the first pages written hold `expected`. */
static void check_words(struct run *r, const char *what, const void *base,
			const uint32_t *list, size_t count, uint64_t expected)
{
	for (size_t i = 0; i < count && i < 32; i++) {
		size_t p = list ? list[i] : i;
		if (word_at(base, p) != expected) {
			if (!r->isolation_broken)
				fprintf(stderr, "cowmem-bench: %s: page %zu holds "
					"0x%016" PRIx64 ", expected 0x%016" PRIx64
					"\n", what, p, word_at(base, p), expected);
			r->isolation_broken = true;
			return;
		}
	}
}

static void record_write(struct run *r, const char *subject,
			 const struct pattern *pattern, int threads,
			 double seconds, size_t count, struct memory before,
			 struct memory after)
{
	record(r->size_mib, subject, "write", pattern->name, threads,
	       "us_per_page", seconds * 1e6 / (double)count);
	record_memory(r->size_mib, subject, "write", pattern->name, threads,
		      before, after);
}

static void record_read(struct run *r, const char *subject, int threads,
			double seconds)
{
	record(r->size_mib, subject, "read", "all", threads, "ms", seconds * 1e3);
	record(r->size_mib, subject, "read", "all", threads, "us_per_page",
	       seconds * 1e6 / (double)r->pages);
}

/* ---- memcpy ---------------------------------------------------------------------- */

static void bench_memcpy(struct run *r, const void *source)
{
	struct memory m0 = memory_settled();
	double t0 = now_seconds();
	void *copy = map_anonymous(r->size);
	memcpy(copy, source, r->size);
	double fresh = now_seconds() - t0;
	struct memory m1 = memory_settled();
	t0 = now_seconds();
	memcpy(copy, source, r->size);
	double warm = now_seconds() - t0;
	struct memory m2 = memory_settled();
	read_sink += word_at(copy, r->pages - 1);
	munmap(copy, r->size);
	record(r->size_mib, "memcpy-fresh", "copy", "-", 1, "ms", fresh * 1e3);
	record_memory(r->size_mib, "memcpy-fresh", "copy", "-", 1, m0, m1);
	record(r->size_mib, "memcpy-warm", "copy", "-", 1, "ms", warm * 1e3);
	record_memory(r->size_mib, "memcpy-warm", "copy", "-", 1, m1, m2);
}

/* ---- fork -------------------------------------------------------------------------- */

struct child_report {
	double seconds;   /* the writes, or the reads */
	double mem_copy;  /* MiB the child maps exclusively right after fork */
	double mem_after; /* ... after the writes or reads */
	int failed;
};

/*
 * Forks; the child touches the pages (write: the given list, read: every
 * page) with `threads` threads and reports through a pipe. Returns the time
 * of the fork() call in the parent.
 */
static double fork_child_touch(struct run *r, unsigned char *buffer,
			       const uint32_t *list, size_t count, bool writes,
			       int threads, struct child_report *report)
{
	int pipe_fds[2];
	if (pipe(pipe_fds) < 0)
		die("pipe: %s", strerror(errno));
	fflush(stdout);
	fflush(stderr);
	double t0 = now_seconds();
	pid_t pid = fork();
	double forked = now_seconds() - t0;
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		close(pipe_fds[0]);
		struct child_report out = { 0 };
		long long before = exclusive_pages(buffer, r->size);
		out.seconds = touch(buffer, list, count, writes, COPY_WORD, threads);
		long long after = exclusive_pages(buffer, r->size);
		out.failed = before < 0 || after < 0;
		out.mem_copy = (double)before * (double)page_size / (double)MIB;
		out.mem_after = (double)after * (double)page_size / (double)MIB;
		ssize_t n = write(pipe_fds[1], &out, sizeof out);
		_exit(n == (ssize_t)sizeof out ? 0 : 1);
	}
	close(pipe_fds[1]);
	ssize_t n = read(pipe_fds[0], report, sizeof *report);
	close(pipe_fds[0]);
	int status;
	waitpid(pid, &status, 0);
	if (n != (ssize_t)sizeof *report || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0)
		die("fork child failed");
	if (report->failed)
		fprintf(stderr, "cowmem-bench: fork child could not read "
			"/proc/self/pagemap; its memory figures are wrong\n");
	return forked;
}

static void bench_fork(struct run *r, unsigned char *buffer, int threads)
{
	struct child_report report;
	for (int i = 0; i < PATTERNS; i++) {
		size_t count;
		const uint32_t *list = pattern_pages(r, &patterns[i], &count);
		double forked = fork_child_touch(r, buffer, list, count, true,
						 threads, &report);
		record(r->size_mib, "fork", "copy", "-", 1, "ms", forked * 1e3);
		record(r->size_mib, "fork", "copy", "-", 1, "mem_mib",
		       report.mem_copy);
		record(r->size_mib, "fork-child", "write", patterns[i].name,
		       threads, "us_per_page", report.seconds * 1e6 / (double)count);
		record(r->size_mib, "fork-child", "write", patterns[i].name,
		       threads, "mem_mib", report.mem_after - report.mem_copy);
	}
	fork_child_touch(r, buffer, NULL, r->pages, false, threads, &report);
	record_read(r, "fork-child", threads, report.seconds);
	record(r->size_mib, "fork-child", "read", "all", threads, "mem_mib",
	       report.mem_after - report.mem_copy);
}

/* ---- MAP_PRIVATE of a memfd ----------------------------------------------------------- */

static int populated_memfd(size_t size)
{
	int fd = memfd_create("cowmem-bench", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
		die("memfd of %zu MiB: %s", size / MIB, strerror(errno));
	void *shared = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (shared == MAP_FAILED)
		die("mmap of the memfd: %s", strerror(errno));
	memset(shared, FILL_BYTE, size);
	munmap(shared, size);
	return fd;
}

static void *map_private(int fd, size_t size, double *seconds)
{
	double t0 = now_seconds();
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	*seconds = now_seconds() - t0;
	if (p == MAP_FAILED)
		die("MAP_PRIVATE mmap of the memfd: %s", strerror(errno));
	return p;
}

static void bench_memfd_private(struct run *r, int fd, int threads)
{
	double mapped;
	for (int i = 0; i < PATTERNS; i++) {
		size_t count;
		const uint32_t *list = pattern_pages(r, &patterns[i], &count);
		struct memory m0 = memory_settled();
		void *view = map_private(fd, r->size, &mapped);
		struct memory m1 = memory_settled();
		double seconds = touch(view, list, count, true, COPY_WORD, threads);
		struct memory m2 = memory_settled();
		munmap(view, r->size);
		record(r->size_mib, "memfd-private", "copy", "-", 1, "ms",
		       mapped * 1e3);
		record_memory(r->size_mib, "memfd-private", "copy", "-", 1, m0, m1);
		record_write(r, "memfd-private", &patterns[i], threads, seconds,
			     count, m1, m2);
	}
	struct memory m0 = memory_settled();
	void *view = map_private(fd, r->size, &mapped);
	double seconds = touch(view, NULL, r->pages, false, 0, threads);
	struct memory m1 = memory_settled();
	munmap(view, r->size);
	record_read(r, "memfd-private", threads, seconds);
	record_memory(r->size_mib, "memfd-private", "read", "all", threads, m0, m1);
}

/* ---- CowMem ---------------------------------------------------------------------------- */

static cowmem_region *populated_region(size_t size)
{
	cowmem_region *region = cowmem_create(size);
	if (!region)
		die("cowmem_create(%zu MiB): %s", size / MIB, strerror(errno));
	memset(cowmem_data(region), FILL_BYTE, size);
	return region;
}

static cowmem_region *timed_clone(cowmem_region *source, double *seconds)
{
	double t0 = now_seconds();
	cowmem_region *clone = cowmem_clone(source);
	*seconds = now_seconds() - t0;
	if (!clone)
		die("cowmem_clone: %s", strerror(errno));
	return clone;
}

static void destroy(cowmem_region *region)
{
	if (cowmem_destroy(region) < 0)
		die("cowmem_destroy: %s", strerror(errno));
}

/* The first clone of a fresh, populated region, timed. */
static cowmem_region *first_clone(struct run *r, cowmem_region *source)
{
	struct memory m0 = memory_settled();
	double seconds;
	cowmem_region *clone = timed_clone(source, &seconds);
	struct memory m1 = memory_settled();
	record(r->size_mib, "cowmem-clone", "copy", "-", 1, "ms", seconds * 1e3);
	record_memory(r->size_mib, "cowmem-clone", "copy", "-", 1, m0, m1);
	return clone;
}

/* Writes a pattern into `target` (the clone or the source of `other`), then
 * spot-checks that `other` did not see it. */
static void cowmem_write(struct run *r, const char *subject, void *target,
			 const void *other, const uint32_t *list, size_t count,
			 const struct pattern *pattern, int threads)
{
	bool in_clone = strncmp(subject, "cowmem-source", 13) != 0;
	uint64_t old_word = in_clone ? FILL_WORD : word_at(other, list ? list[0] : 0);
	struct memory m0 = memory_settled();
	double seconds = touch(target, list, count, true,
			       in_clone ? COPY_WORD : SOURCE_WORD, threads);
	struct memory m1 = memory_settled();
	check_words(r, in_clone ? "source after writes to its clone" :
				  "clone after writes to its source",
		    other, list, count, old_word);
	record_write(r, subject, pattern, threads, seconds, count, m0, m1);
}

/*
 * A populated source serves several measurements (populating it costs far
 * more than any of them). Three sources per thread count:
 *
 * 1. Its first clone, read in full; a clone of that clone. Fresh clones of
 *    it, each written with 0.1%, 1%, 10% of the pages or every page, each
 *    destroyed after. Then the source itself, written while the first clone
 *    lives, on disjoint sets of 0.1%, 1% and 10% of the pages (so each is a
 *    first write).
 * 2. Its first clone; then the source written in full.
 * 3. Its first clone; the source writes 1% of its pages and is cloned again
 *    (the re-clone); then the source writes another 1%, after the re-clone.
 */
static void bench_cowmem(struct run *r, int threads)
{
	cowmem_region *source = populated_region(r->size);
	void *source_data = cowmem_data(source);
	cowmem_region *clone = first_clone(r, source);
	void *clone_data = cowmem_data(clone);

	struct memory m0 = memory_settled();
	double seconds = touch(clone_data, NULL, r->pages, false, 0, threads);
	struct memory m1 = memory_settled();
	check_words(r, "fresh clone", clone_data, NULL, r->pages, FILL_WORD);
	record_read(r, "cowmem-clone", threads, seconds);
	record_memory(r->size_mib, "cowmem-clone", "read", "all", threads, m0, m1);

	cowmem_region *grandchild = timed_clone(clone, &seconds);
	struct memory m2 = memory_settled();
	record(r->size_mib, "cowmem-clone-of-clone", "copy", "-", 1, "ms",
	       seconds * 1e3);
	record_memory(r->size_mib, "cowmem-clone-of-clone", "copy", "-", 1, m1, m2);
	destroy(grandchild);

	for (int i = 0; i < PATTERNS; i++) {
		size_t count;
		const uint32_t *list = pattern_pages(r, &patterns[i], &count);
		cowmem_region *fresh = timed_clone(source, &seconds);
		cowmem_write(r, "cowmem-clone", cowmem_data(fresh), source_data,
			     list, count, &patterns[i], threads);
		destroy(fresh);
	}

	size_t used = 0;
	for (int i = 0; i < PATTERNS - 1; i++) {
		size_t count;
		const uint32_t *list = pattern_pages(r, &patterns[i], &count) + used;
		used += count;
		cowmem_write(r, "cowmem-source", source_data, clone_data, list,
			     count, &patterns[i], threads);
	}
	destroy(clone);
	destroy(source);

	const struct pattern *every = &patterns[PATTERNS - 1];
	source = populated_region(r->size);
	clone = first_clone(r, source);
	cowmem_write(r, "cowmem-source", cowmem_data(source), cowmem_data(clone),
		     NULL, r->pages, every, threads);
	destroy(clone);
	destroy(source);

	const struct pattern *one = &patterns[1];
	size_t count;
	const uint32_t *list = pattern_pages(r, one, &count);
	source = populated_region(r->size);
	clone = first_clone(r, source);
	touch(cowmem_data(source), list, count, true, SOURCE_WORD, threads);
	struct memory m3 = memory_settled();
	double t0 = now_seconds();
	cowmem_region *again = timed_clone(source, &seconds);
	/* The clone may return before its fold's copies are done; the
	 * source's next access waits for them. */
	(void)*(volatile char *)cowmem_data(source);
	double ready = now_seconds() - t0;
	struct memory m4 = memory_settled();
	check_words(r, "re-clone", cowmem_data(again), list, count, SOURCE_WORD);
	check_words(r, "first clone after its source changed", cowmem_data(clone),
		    list, count, FILL_WORD);
	record(r->size_mib, "cowmem-reclone-1%", "copy", "-", 1, "ms",
	       seconds * 1e3);
	record(r->size_mib, "cowmem-reclone-1%-ready", "copy", "-", 1, "ms",
	       ready * 1e3);
	record_memory(r->size_mib, "cowmem-reclone-1%", "copy", "-", 1, m3, m4);
	cowmem_write(r, "cowmem-source-after-reclone", cowmem_data(source),
		     cowmem_data(again), list + count, count, one, threads);
	destroy(again);
	destroy(clone);
	destroy(source);
}

/* ---- One repetition at one size ------------------------------------------------------------ */

static void run_once(struct run *r, uint64_t seed)
{
	shuffle_pages(r, seed);
	double t0 = now_seconds();

	unsigned char *buffer = map_anonymous(r->size);
	memset(buffer, FILL_BYTE, r->size);
	bench_memcpy(r, buffer);
	for (int t = 0; t < r->thread_lists; t++)
		bench_fork(r, buffer, r->thread_counts[t]);
	munmap(buffer, r->size);
	double t1 = now_seconds();

	int fd = populated_memfd(r->size);
	for (int t = 0; t < r->thread_lists; t++)
		bench_memfd_private(r, fd, r->thread_counts[t]);
	close(fd);
	double t2 = now_seconds();

	for (int t = 0; t < r->thread_lists; t++)
		bench_cowmem(r, r->thread_counts[t]);
	double t3 = now_seconds();
	fprintf(stderr, "  (memcpy and fork %.1f s, MAP_PRIVATE %.1f s, cowmem "
		"%.1f s)\n", t1 - t0, t2 - t1, t3 - t2);
}

/* ---- Output ------------------------------------------------------------------------------- */

static const char *percent_of(double mib, unsigned size_mib)
{
	static char ring[16][32];
	static int next;
	char *s = ring[next++ % 16];
	if (isnan(mib))
		return "-";
	snprintf(s, 32, "%s MiB (%.2f%%)", num(mib), 100.0 * mib / size_mib);
	return s;
}

struct options {
	unsigned sizes[MAX_LIST];
	int size_count;
	int thread_counts[MAX_LIST];
	int thread_lists;
	int reps;
	uint64_t seed;
	const char *csv;
	bool warmup;
};

/* A table header with columns per region size: `each` has one %s for the
 * size; `last` and `last_rule` close the row. */
static void print_size_header(const struct options *o, const char *first,
			      const char *each, const char *each_rule,
			      const char *last, const char *last_rule)
{
	printf("| %s |", first);
	for (int s = 0; s < o->size_count; s++)
		printf(each, size_name(o->sizes[s]));
	printf("%s\n|---|", last);
	for (int s = 0; s < o->size_count; s++)
		printf("%s", each_rule);
	printf("%s\n", last_rule);
}

/* A table row: the subject in the results, the label printed. */
struct row {
	const char *subject, *label;
};

static void print_copy_table(const struct options *o)
{
	static const struct row rows[] = {
		{ "memcpy-fresh", "memcpy into a fresh mmap'd buffer" },
		{ "memcpy-warm", "memcpy into a warm buffer" },
		{ "fork", "fork() (call in the parent)" },
		{ "memfd-private", "MAP_PRIVATE memfd mmap (no snapshot isolation)" },
		{ "cowmem-clone", "cowmem_clone, first clone of a populated region" },
		{ "cowmem-reclone-1%", "cowmem_clone again, source changed 1%" },
		{ "cowmem-reclone-1%-ready", "the same, until the source's next read returns" },
		{ "cowmem-clone-of-clone", "cowmem_clone of a clone" },
		{ "swift-array", "Swift Array copy-on-write" },
	};
	printf("\n## Making the copy: median ms (memory added: MiB, %% of region)\n\n");
	print_size_header(o, "contender", " %s ms | memory |", "---:|---:|", "",
			  "");
	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		printf("| %s |", rows[i].label);
		for (int s = 0; s < o->size_count; s++) {
			unsigned mib = o->sizes[s];
			if (!strcmp(rows[i].subject, "swift-array")) {
				printf(" see Swift benchmark | |");
				continue;
			}
			printf(" %s | %s |",
			       num(median(mib, rows[i].subject, "copy", "-", 1, "ms")),
			       percent_of(median(mib, rows[i].subject, "copy", "-", 1,
						 "mem_mib"), mib));
		}
		printf("\n");
	}
}

static const struct row write_rows[] = {
	{ "fork-child", "fork child" },
	{ "memfd-private", "MAP_PRIVATE memfd (no isolation)" },
	{ "cowmem-clone", "cowmem clone" },
	{ "cowmem-source", "cowmem source after clone" },
	{ "cowmem-source-after-reclone", "cowmem source after a re-clone (1% only)" },
};
#define WRITE_ROWS (sizeof write_rows / sizeof write_rows[0])

/* A table header: the given first columns, then one per write pattern. */
static void print_pattern_header(const char *columns, const char *rule)
{
	printf("%s", columns);
	for (int i = 0; i < PATTERNS; i++)
		printf(" %s |", patterns[i].name);
	printf("\n%s", rule);
	for (int i = 0; i < PATTERNS; i++)
		printf("---:|");
	printf("\n");
}

static void print_write_tables(const struct options *o)
{
	printf("\n## First write: median µs per page written (one word per page)\n");
	printf("\nRandom distinct pages (seeded) for 0.1%%, 1%%, 10%%; every page "
	       "in order for \"all\". Threads split the pages.\n");
	for (int s = 0; s < o->size_count; s++) {
		unsigned mib = o->sizes[s];
		printf("\n### %s\n\n", size_name(mib));
		print_pattern_header("| writer | threads |", "|---|---:|");
		for (int t = 0; t < o->thread_lists; t++) {
			int threads = o->thread_counts[t];
			for (size_t w = 0; w < WRITE_ROWS; w++) {
				printf("| %s | %d |", write_rows[w].label, threads);
				for (int i = 0; i < PATTERNS; i++)
					printf(" %s |", num(median(mib, write_rows[w].subject,
								   "write", patterns[i].name,
								   threads, "us_per_page")));
				printf("\n");
			}
			for (size_t w = 2; w < WRITE_ROWS; w++) {
				printf("| *%s ÷ fork child* | %d |", write_rows[w].label,
				       threads);
				for (int i = 0; i < PATTERNS; i++) {
					double fork_us = median(mib, "fork-child", "write",
								patterns[i].name, threads,
								"us_per_page");
					double ours = median(mib, write_rows[w].subject, "write",
							     patterns[i].name, threads,
							     "us_per_page");
					double ratio = ours / fork_us;
					printf(" %s%s |", num(ratio), isnan(ratio) ? "" : "×");
				}
				printf("\n");
			}
		}
	}
	printf("\n## Memory added by the writes: median MiB (%% of region), %d thread%s\n\n",
	       o->thread_counts[0], o->thread_counts[0] == 1 ? "" : "s");
	printf("Fork child: pages the child maps exclusively (pagemap). "
	       "Others: delta of RssAnon + this process's memfd storage. "
	       "\"cowmem source\" counts its own writes only, after the "
	       "clone's.\n\n");
	print_pattern_header("| size | writer |", "|---|---|");
	for (int s = 0; s < o->size_count; s++) {
		unsigned mib = o->sizes[s];
		for (size_t w = 0; w < WRITE_ROWS; w++) {
			printf("| %s | %s |", size_name(mib), write_rows[w].label);
			for (int i = 0; i < PATTERNS; i++)
				printf(" %s |", percent_of(median(mib, write_rows[w].subject,
								  "write", patterns[i].name,
								  o->thread_counts[0],
								  "mem_mib"), mib));
			printf("\n");
		}
	}
}

static void print_read_table(const struct options *o)
{
	static const struct row rows[] = {
		{ "fork-child", "fork child (pages already mapped)" },
		{ "memfd-private", "MAP_PRIVATE memfd (no isolation)" },
		{ "cowmem-clone", "fresh cowmem clone" },
	};
	printf("\n## Reading every page of a fresh copy: median total ms, µs per page, memory added\n\n");
	printf("| size | reader | threads | total ms | µs/page | memory added |\n");
	printf("|---|---|---:|---:|---:|---:|\n");
	for (int s = 0; s < o->size_count; s++) {
		unsigned mib = o->sizes[s];
		for (int t = 0; t < o->thread_lists; t++) {
			int threads = o->thread_counts[t];
			for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
				printf("| %s | %s | %d | %s | %s | %s |\n", size_name(mib),
				       rows[i].label, threads,
				       num(median(mib, rows[i].subject, "read", "all",
						  threads, "ms")),
				       num(median(mib, rows[i].subject, "read", "all",
						  threads, "us_per_page")),
				       percent_of(median(mib, rows[i].subject, "read",
							 "all", threads, "mem_mib"),
						  mib));
			printf("| %s | *cowmem ÷ MAP_PRIVATE* | %d | %s× | | |\n",
			       size_name(mib), threads,
			       num(median(mib, "cowmem-clone", "read", "all", threads,
					  "ms") /
				   median(mib, "memfd-private", "read", "all", threads,
					  "ms")));
		}
	}
}

/* One row of the key-ratio table; `at_least` tells which side of the target
 * is good. */
static void print_check(const struct options *o, const char *label,
			double (*value)(unsigned), const char *unit,
			double target, bool at_least)
{
	printf("| %s |", label);
	for (int s = 0; s < o->size_count; s++) {
		double v = value(o->sizes[s]);
		bool ok = at_least ? v >= target : v <= target;
		printf(" %s%s %s |", num(v), unit,
		       isnan(v) || isnan(target) ? "" : ok ? "ok" : "**short**");
	}
	if (isnan(target))
		printf(" – |\n");
	else
		printf(" %s %s%s |\n", at_least ? "≥" : "≤", num(target), unit);
}

static int checked_threads = 1;

static double clone_speedup_memcpy(unsigned m)
{
	return median(m, "memcpy-fresh", "copy", "-", 1, "ms") /
	       median(m, "cowmem-clone", "copy", "-", 1, "ms");
}
static double clone_over_fork(unsigned m)
{
	return median(m, "cowmem-clone", "copy", "-", 1, "ms") /
	       median(m, "fork", "copy", "-", 1, "ms");
}
static double reclone_speedup_fork(unsigned m)
{
	return median(m, "fork", "copy", "-", 1, "ms") /
	       median(m, "cowmem-reclone-1%", "copy", "-", 1, "ms");
}
static double reclone_ready_speedup_fork(unsigned m)
{
	return median(m, "fork", "copy", "-", 1, "ms") /
	       median(m, "cowmem-reclone-1%-ready", "copy", "-", 1, "ms");
}
static double worst_write_ratio(unsigned m, const char *subject)
{
	double worst = NAN;
	for (int i = 0; i < PATTERNS; i++) {
		double ratio = median(m, subject, "write", patterns[i].name,
				      checked_threads, "us_per_page") /
			       median(m, "fork-child", "write", patterns[i].name,
				      checked_threads, "us_per_page");
		if (isnan(worst) || ratio > worst)
			worst = ratio;
	}
	return worst;
}
static double clone_write_ratio(unsigned m)
{
	return worst_write_ratio(m, "cowmem-clone");
}
static double source_write_ratio(unsigned m)
{
	return worst_write_ratio(m, "cowmem-source");
}
static double reclone_write_ratio(unsigned m)
{
	return worst_write_ratio(m, "cowmem-source-after-reclone");
}
static double read_ratio(unsigned m)
{
	return median(m, "cowmem-clone", "read", "all", checked_threads, "ms") /
	       median(m, "memfd-private", "read", "all", checked_threads, "ms");
}
static double read_memory(unsigned m)
{
	return 100.0 * median(m, "cowmem-clone", "read", "all", checked_threads,
			      "mem_mib") / m;
}
static double write_1pct_memory(unsigned m)
{
	return 100.0 * median(m, "cowmem-clone", "write", "1%", checked_threads,
			      "mem_mib") / m;
}

static void print_checks(const struct options *o)
{
	checked_threads = o->thread_counts[0];
	printf("\n## Key ratios against the targets (%d thread%s; medians)\n\n",
	       checked_threads, checked_threads == 1 ? "" : "s");
	print_size_header(o, "ratio", " %s |", "---:|", " target |", "---:|");
	print_check(o, "first clone: memcpy-fresh ÷ clone (× faster)",
		    clone_speedup_memcpy, "×", 50, true);
	print_check(o, "first clone ÷ fork", clone_over_fork, "×", 1.2, false);
	print_check(o, "re-clone after 1% change: fork ÷ re-clone (× faster)",
		    reclone_speedup_fork, "×", 10, true);
	print_check(o, "the same until the source's next read returns (no target)",
		    reclone_ready_speedup_fork, "×", NAN, true);
	print_check(o, "first write in clone ÷ fork child, worst pattern",
		    clone_write_ratio, "×", 2, false);
	print_check(o, "first write in source after clone ÷ fork child, worst pattern",
		    source_write_ratio, "×", 2, false);
	print_check(o, "first write in source after a re-clone ÷ fork child, 1%",
		    reclone_write_ratio, "×", 2, false);
	print_check(o, "read all of a fresh clone ÷ MAP_PRIVATE", read_ratio, "×",
		    3, false);
	print_check(o, "memory added by reading all of a fresh clone",
		    read_memory, "%", 2, false);
	print_check(o, "memory added by writing 1% of a clone's pages",
		    write_1pct_memory, "%", 1.5, false);
}

static void write_csv(const struct options *o)
{
	FILE *f = fopen(o->csv, "w");
	if (!f) {
		fprintf(stderr, "cowmem-bench: cannot write %s: %s\n", o->csv,
			strerror(errno));
		return;
	}
	fprintf(f, "size_mib,subject,workload,pattern,threads,metric,sample,value\n");
	for (size_t i = 0; i < series_count; i++) {
		const struct series *s = &all_series[i];
		for (size_t k = 0; k < s->count; k++)
			fprintf(f, "%u,%s,%s,%s,%d,%s,%zu,%.6g\n", s->size_mib,
				s->subject, s->workload, s->pattern, s->threads,
				s->metric, k + 1, s->samples[k]);
		fprintf(f, "%u,%s,%s,%s,%d,%s,median,%.6g\n", s->size_mib,
			s->subject, s->workload, s->pattern, s->threads, s->metric,
			series_median(s));
	}
	if (fclose(f) != 0)
		fprintf(stderr, "cowmem-bench: writing %s failed\n", o->csv);
	else
		printf("\nraw numbers (every sample, and the medians): %s\n", o->csv);
}

/* ---- The machine ----------------------------------------------------------------------------- */

static void print_machine(const struct options *o)
{
	struct utsname u;
	uname(&u);
	char cpu[256];
	cpu_model(cpu, sizeof cpu);
	char thp[256], uffd[64], load[128];
	first_line_of("/sys/kernel/mm/transparent_hugepage/enabled", thp, sizeof thp);
	first_line_of("/proc/sys/vm/unprivileged_userfaultfd", uffd, sizeof uffd);
	load_average(load, sizeof load);
	printf("# CowMem benchmark\n\n");
	printf("- machine: %ld CPUs online (nproc), %lld MiB RAM, CPU: %s\n",
	       sysconf(_SC_NPROCESSORS_ONLN),
	       proc_kib_field("/proc/meminfo", "MemTotal") / (long long)MIB, cpu);
	printf("- kernel: %s %s %s; page size %zu; THP (anonymous): %s; "
	       "vm.unprivileged_userfaultfd=%s; uid %d\n", u.sysname, u.release,
	       u.machine, page_size, thp, uffd, (int)getuid());
	printf("- load average at the start: %s (/proc/loadavg; above the CPU "
	       "count, other processes compete for the CPUs)\n", load);
	printf("- libcowmem %d.%d.%d; sizes:", COWMEM_VERSION_MAJOR,
	       COWMEM_VERSION_MINOR, COWMEM_VERSION_PATCH);
	for (int s = 0; s < o->size_count; s++)
		printf("%s %s", s ? "," : "", size_name(o->sizes[s]));
	printf("; threads:");
	for (int t = 0; t < o->thread_lists; t++)
		printf("%s %d", t ? "," : "", o->thread_counts[t]);
	printf("; %d repetitions%s; seed %" PRIu64 "\n", o->reps,
	       o->warmup ? " after a warm-up" : ", no warm-up", o->seed);
	printf("- every figure is the median of the repetitions (several "
	       "samples per repetition where a workload needs a fresh copy)\n");
	printf("- memory added = delta of RssAnon + the memfd (shmem) storage "
	       "this process holds; the CSV also has RssAnon + system Shmem "
	       "(mem_sys_mib), which other processes disturb\n");
	fflush(stdout);
}

/* ---- Main ------------------------------------------------------------------------------------- */

static int parse_list(const char *text, const char *what, long low, long high,
		      long *out)
{
	int n = 0;
	const char *p = text;
	while (*p) {
		char *end;
		errno = 0;
		long v = strtol(p, &end, 10);
		if (end == p || errno || v < low || v > high || n == MAX_LIST ||
		    (*end && *end != ','))
			die("bad %s list \"%s\" (numbers %ld..%ld, comma-separated)",
			    what, text, low, high);
		out[n++] = v;
		p = *end ? end + 1 : end;
	}
	if (n == 0)
		die("empty %s list", what);
	return n;
}

static void usage(void)
{
	printf("usage: cowmem-bench [--sizes MIB,...] [--reps N] [--threads N,...]\n"
	       "                    [--seed N] [--csv FILE] [--no-warmup]\n"
	       "  --sizes    region sizes in MiB (default 64,256,1024; e.g. 64,256,1024,4096)\n"
	       "  --reps     repetitions; tables show medians (default 5)\n"
	       "  --threads  thread counts for the write and read workloads (default 1,2,4)\n"
	       "  --seed     seed of the random page choice (default 1)\n"
	       "  --csv      write every sample and the medians to FILE\n"
	       "  --no-warmup  skip the untimed warm-up repetition\n");
}

static void parse_options(int argc, char **argv, struct options *o)
{
	long values[MAX_LIST];
	*o = (struct options){ .sizes = { 64, 256, 1024 }, .size_count = 3,
			       .thread_counts = { 1, 2, 4 }, .thread_lists = 3,
			       .reps = 5, .seed = 1, .warmup = true };
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		const char *value = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
			usage();
			exit(0);
		} else if (!strcmp(arg, "--no-warmup")) {
			o->warmup = false;
			continue;
		}
		if (!value)
			die("%s needs a value (see --help)", arg);
		i++;
		if (!strcmp(arg, "--sizes")) {
			o->size_count = parse_list(value, "size", 1, 1 << 20, values);
			for (int k = 0; k < o->size_count; k++)
				o->sizes[k] = (unsigned)values[k];
		} else if (!strcmp(arg, "--threads")) {
			o->thread_lists = parse_list(value, "thread", 1, MAX_LIST, values);
			for (int k = 0; k < o->thread_lists; k++)
				o->thread_counts[k] = (int)values[k];
		} else if (!strcmp(arg, "--reps")) {
			parse_list(value, "repetition", 1, 1000, values);
			o->reps = (int)values[0];
		} else if (!strcmp(arg, "--seed")) {
			o->seed = strtoull(value, NULL, 10);
		} else if (!strcmp(arg, "--csv")) {
			o->csv = value;
		} else {
			die("unknown option %s (see --help)", arg);
		}
	}
}

static void prepare_run(struct run *r, const struct options *o, unsigned mib)
{
	*r = (struct run){ .size_mib = mib, .size = (size_t)mib * MIB };
	r->pages = r->size / page_size;
	if (r->pages > UINT32_MAX)
		die("%u MiB is too large", mib);
	r->shuffled = malloc(r->pages * sizeof *r->shuffled);
	if (!r->shuffled)
		die("out of memory");
	memcpy(r->thread_counts, o->thread_counts, sizeof r->thread_counts);
	r->thread_lists = o->thread_lists;
}

int main(int argc, char **argv)
{
	struct options o;
	page_size = (size_t)sysconf(_SC_PAGESIZE);
	parse_options(argc, argv, &o);
	print_machine(&o);
	if (memory_sample().own < 0)
		die("cannot read RssAnon from /proc/self/status or Shmem from "
		    "/proc/meminfo");

	if (o.warmup) {
		/* One untimed repetition at the smallest size: starts the
		 * library's threads and warms the allocator and caches. */
		struct run warm;
		unsigned smallest = o.sizes[0];
		for (int s = 1; s < o.size_count; s++)
			smallest = o.sizes[s] < smallest ? o.sizes[s] : smallest;
		prepare_run(&warm, &o, smallest < 64 ? smallest : 64);
		fprintf(stderr, "warm-up at %s", size_name(warm.size_mib));
		run_once(&warm, o.seed);
		free(warm.shuffled);
	}

	recording = true;
	bool isolation_broken = false;
	for (int s = 0; s < o.size_count; s++) {
		struct run r;
		prepare_run(&r, &o, o.sizes[s]);
		/* At most three copies of a region are alive at once. */
		long long available = proc_kib_field("/proc/meminfo", "MemAvailable");
		if (available >= 0 && (double)available < 3.5 * (double)r.size) {
			printf("\n**%s skipped**: needs about %zu MiB available, "
			       "the machine has %lld MiB\n", size_name(r.size_mib),
			       (size_t)(3.5 * (double)r.size_mib), available / (long long)MIB);
			free(r.shuffled);
			continue;
		}
		for (int rep = 0; rep < o.reps; rep++) {
			fprintf(stderr, "%s: repetition %d of %d",
				size_name(r.size_mib), rep + 1, o.reps);
			run_once(&r, o.seed + (uint64_t)rep);
		}
		isolation_broken |= r.isolation_broken;
		free(r.shuffled);
	}
	recording = false;

	print_copy_table(&o);
	print_write_tables(&o);
	print_read_table(&o);
	print_checks(&o);
	if (isolation_broken)
		printf("\n**Warning**: a clone or a source did not hold the bytes "
		       "it should (see stderr); the figures above measure a broken "
		       "library.\n");
	char load[128];
	load_average(load, sizeof load);
	printf("\nload average at the end: %s\n", load);
	if (o.csv)
		write_csv(&o);
	return 0;
}
