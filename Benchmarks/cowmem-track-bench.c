/*
 * cowmem-track-bench.c - what a region's changes cost to find, to undo and
 * to keep on disk, against what a program does without CowMem.
 *
 * One program, one run; every contender is measured in the same repetition,
 * side by side, and the tables report medians.
 *
 * Part 1, changes and roll back. A pristine image of S bytes (every page
 * holds data) is cloned into a working region; each repetition writes one
 * word to each of k random distinct pages of it (seeded), then times
 *   cowmem_dirty_pages   the list of changed pages, and
 *   cowmem_reset         back to the pristine image,
 * against a plain buffer with a plain pristine copy beside it, the same
 * writes, and
 *   memcmp per page      comparing the whole buffer with the copy, page by
 *                        page, to find the changed pages, and
 *   memcpy back          copying the whole pristine image back;
 * and, as the way to roll back with CowMem 0.1,
 *   destroy + re-clone   cowmem_destroy() the working region and clone the
 *                        pristine one again.
 * k in 16, 256, 4096, 65536 (at most the region's pages), S in 64 MiB, 1 GiB.
 *
 * Part 2, snapshots on disk, at 1 GiB (--save-mib). Two images: "sparse", a
 * new region with 1% of its pages written and the rest never touched, and
 * "dense", a clone of a populated image with 1% written. For each:
 *   cowmem_save         vs write(2) of the same bytes from a plain buffer;
 *   cowmem_load + first touch of 1% of the pages (the written ones for
 *                       sparse, random ones for dense), and + a read of
 *                       every page, vs read(2) of the whole raw file into a
 *                       warm buffer.
 * Files go to --dir (default $TMPDIR, else /tmp), are not fsync'ed and are
 * read back from the page cache: the I/O is the kernel's copying, not the
 * disk's.
 *
 * Usage: cowmem-track-bench [--sizes 64,1024] [--ks 16,256,4096,65536]
 *        [--reps 5] [--save-mib 1024] [--dir DIR] [--seed N] [--csv FILE]
 * A benchmark, not a test: it bounds nothing, and exits 0 unless it cannot
 * run at all. It checks the results it times and says so if one is wrong.
 */
#define _GNU_SOURCE
#include <cowmem.h>

#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define MAX_LIST 16

static size_t page_size;
static bool wrong; /* a timed result was not what it should be */

static void complain(const char *format, ...)
	__attribute__((format(printf, 1, 2)));
static void complain(const char *format, ...)
{
	va_list args;
	va_start(args, format);
	fprintf(stderr, "cowmem-track-bench: WRONG: ");
	vfprintf(stderr, format, args);
	va_end(args);
	fputc('\n', stderr);
	wrong = true;
}

static cowmem_region *must(cowmem_region *r, const char *what)
{
	if (!r)
		die("%s: %s", what, strerror(errno));
	return r;
}

/* ---- Samples and medians ------------------------------------------------- */

struct series {
	unsigned size_mib;
	const char *what;    /* cowmem_reset, memcpy-back, save-sparse, ... */
	long k;              /* pages written, or -1 */
	double samples[1000];
	int count;
};

static struct series *all;
static size_t series_count, series_capacity;

static struct series *find(unsigned size_mib, const char *what, long k, bool create)
{
	for (size_t i = 0; i < series_count; i++)
		if (all[i].size_mib == size_mib && all[i].k == k &&
		    !strcmp(all[i].what, what))
			return &all[i];
	if (!create)
		return NULL;
	if (series_count == series_capacity) {
		series_capacity = series_capacity ? 2 * series_capacity : 64;
		all = realloc(all, series_capacity * sizeof *all);
		if (!all)
			die("out of memory");
	}
	struct series *s = &all[series_count++];
	s->size_mib = size_mib, s->what = what, s->k = k, s->count = 0;
	return s;
}

static void record_value(unsigned size_mib, const char *what, long k, double value)
{
	struct series *s = find(size_mib, what, k, true);
	if (s->count < 1000)
		s->samples[s->count++] = value;
}

/* Records a time, in milliseconds. */
static void record(unsigned size_mib, const char *what, long k, double seconds)
{
	record_value(size_mib, what, k, seconds * 1e3);
}

static double median(unsigned size_mib, const char *what, long k)
{
	struct series *s = find(size_mib, what, k, false);
	if (!s || !s->count)
		return NAN;
	double sorted[1000];
	memcpy(sorted, s->samples, (size_t)s->count * sizeof *sorted);
	qsort(sorted, (size_t)s->count, sizeof *sorted, compare_doubles);
	int n = s->count;
	return n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

/* ---- Pages ---------------------------------------------------------------- */

/* The first k entries of list become k distinct random pages of `pages`. */
static void pick_pages(uint32_t *list, size_t pages, size_t k, uint64_t seed)
{
	for (size_t i = 0; i < pages; i++)
		list[i] = (uint32_t)i;
	for (size_t i = 0; i < k; i++) {
		size_t j = i + (size_t)(splitmix(&seed) % (pages - i));
		uint32_t t = list[i];
		list[i] = list[j];
		list[j] = t;
	}
}

static int compare_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

static volatile uint64_t *word(void *base, size_t page)
{
	return (volatile uint64_t *)((char *)base + page * page_size);
}

/* What page p of a pristine image holds in its first word (every other
 * word of the page holds the same value), and what a run writes there. */
static uint64_t pristine_word(size_t p) { return 0x5a5a000000000000ULL | p; }
static uint64_t run_word(size_t p) { return 0xc3c3000000000000ULL | p; }

static void fill_pristine(void *base, size_t size)
{
	for (size_t p = 0; p < size / page_size; p++) {
		uint64_t *w = (uint64_t *)((char *)base + p * page_size);
		for (size_t i = 0; i < page_size / 8; i++)
			w[i] = pristine_word(p);
	}
}

static void write_pages(void *base, const uint32_t *list, size_t k)
{
	for (size_t i = 0; i < k; i++)
		*word(base, list[i]) = run_word(list[i]);
}

/* ---- Part 1: dirty pages and reset ---------------------------------------- */

struct tracking {
	unsigned size_mib;
	size_t size, pages;
	cowmem_region *pristine, *world;
	unsigned char *plain_pristine, *plain; /* the baseline's two buffers */
	uint32_t *chosen;                      /* k random pages, then the rest */
	size_t *listed;                        /* cowmem_dirty_pages' output */
	uint32_t *found;                       /* the memcmp scan's output */
};

static void tracking_open(struct tracking *t, unsigned size_mib)
{
	t->size_mib = size_mib;
	t->size = (size_t)size_mib * MIB;
	t->pages = t->size / page_size;
	t->pristine = must(cowmem_create(t->size), "cowmem_create");
	fill_pristine(cowmem_data(t->pristine), t->size);
	t->world = must(cowmem_clone(t->pristine), "cowmem_clone");
	t->plain_pristine = map_anonymous(t->size);
	t->plain = map_anonymous(t->size);
	memcpy(t->plain_pristine, cowmem_data(t->pristine), t->size);
	memcpy(t->plain, t->plain_pristine, t->size);
	t->chosen = malloc(t->pages * sizeof *t->chosen);
	t->listed = malloc(t->pages * sizeof *t->listed);
	t->found = malloc(t->pages * sizeof *t->found);
	if (!t->chosen || !t->listed || !t->found)
		die("out of memory");
}

static void tracking_close(struct tracking *t)
{
	cowmem_destroy(t->world);
	cowmem_destroy(t->pristine);
	munmap(t->plain_pristine, t->size);
	munmap(t->plain, t->size);
	free(t->chosen);
	free(t->listed);
	free(t->found);
}

/* Writes k pages of the world, then times cowmem_dirty_pages and
 * cowmem_reset and checks them. With read_all, the run also reads every
 * page of the world (untimed) before they are timed: the page tables then
 * map the whole region, and the library's scan walks all of them. */
static void cowmem_run(struct tracking *t, size_t k, bool read_all)
{
	unsigned m = t->size_mib;
	double t0 = now_seconds();
	write_pages(cowmem_data(t->world), t->chosen, k);
	double t1 = now_seconds();
	if (read_all) {
		uint64_t sum = 0;
		for (size_t p = 0; p < t->pages; p++)
			sum += *word(cowmem_data(t->world), p);
		if (!sum)
			complain("the world reads as zeros");
		t1 = now_seconds();
	}
	ssize_t n = cowmem_dirty_pages(t->world, t->listed, t->pages);
	double t2 = now_seconds();
	if (cowmem_reset(t->world) != 0)
		die("cowmem_reset: %s", strerror(errno));
	double t3 = now_seconds();
	if (!read_all)
		record(m, "write", (long)k, t1 - t0);
	record(m, read_all ? "read-all:cowmem_dirty_pages" : "cowmem_dirty_pages",
	       (long)k, t2 - t1);
	record(m, read_all ? "read-all:cowmem_reset" : "cowmem_reset", (long)k, t3 - t2);
	if (n != (ssize_t)k)
		complain("%u MiB, k %zu: cowmem_dirty_pages returned %zd (%s)", m,
			 k, n, n < 0 ? strerror(errno) : "count");
	for (size_t i = 0; n == (ssize_t)k && i < k; i++)
		if (t->listed[i] != t->chosen[i]) {
			complain("%u MiB, k %zu: listed page %zu is %zu, want %u",
				 m, k, i, t->listed[i], t->chosen[i]);
			break;
		}
	for (size_t i = 0; i < k; i++)
		if (*word(cowmem_data(t->world), t->chosen[i]) != pristine_word(t->chosen[i])) {
			complain("%u MiB, k %zu: page %u not pristine after reset",
				 m, k, t->chosen[i]);
			break;
		}
}

/* One repetition at one k: the same pages written on both sides. */
static void tracking_run(struct tracking *t, size_t k, uint64_t seed)
{
	unsigned m = t->size_mib;
	double t0, t1, t2;
	pick_pages(t->chosen, t->pages, k, seed);
	qsort(t->chosen, k, sizeof *t->chosen, compare_u32); /* to check lists */

	cowmem_run(t, k, false);
	cowmem_run(t, k, true);

	/* CowMem 0.1's way back: throw the world away and clone again. */
	write_pages(cowmem_data(t->world), t->chosen, k);
	t0 = now_seconds();
	cowmem_destroy(t->world);
	t->world = must(cowmem_clone(t->pristine), "cowmem_clone");
	record(m, "destroy+reclone", (long)k, now_seconds() - t0);

	/* Without CowMem: compare every page with the copy, copy it all back. */
	write_pages(t->plain, t->chosen, k);
	t0 = now_seconds();
	size_t found = 0;
	for (size_t p = 0; p < t->pages; p++)
		if (memcmp(t->plain + p * page_size, t->plain_pristine + p * page_size,
			   page_size) != 0)
			t->found[found++] = (uint32_t)p;
	t1 = now_seconds();
	memcpy(t->plain, t->plain_pristine, t->size);
	t2 = now_seconds();
	record(m, "memcmp-scan", (long)k, t1 - t0);
	record(m, "memcpy-back", (long)k, t2 - t1);
	if (found != k || (k && t->found[k - 1] != t->chosen[k - 1]))
		complain("%u MiB, k %zu: the memcmp scan found %zu pages", m, k, found);
}

/* ---- Part 2: save and load ------------------------------------------------- */

enum { SAVE, WRITE2, LOAD, LOAD_TOUCH, LOAD_READ_ALL, READ2, FAULTS, BLOCKED, STEPS };
static const char *const images[2] = { "sparse", "dense" };
static const char *const steps[2][STEPS] = {
	{ "sparse:save", "sparse:write(2)", "sparse:load", "sparse:load+touch",
	  "sparse:load+read-all", "sparse:read(2)", "sparse:faults", "sparse:blocked" },
	{ "dense:save", "dense:write(2)", "dense:load", "dense:load+touch",
	  "dense:load+read-all", "dense:read(2)", "dense:faults", "dense:blocked" },
};

static int temp_file(const char *dir)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/cowmem-track-bench-XXXXXX", dir);
	int fd = mkstemp(path);
	if (fd < 0)
		die("mkstemp in %s: %s", dir, strerror(errno));
	unlink(path);
	return fd;
}

static void write_all(int fd, const void *buffer, size_t size)
{
	for (size_t done = 0; done < size;) {
		ssize_t n = write(fd, (const char *)buffer + done, size - done);
		if (n <= 0)
			die("write: %s", n < 0 ? strerror(errno) : "no progress");
		done += (size_t)n;
	}
}

static void read_all(int fd, void *buffer, size_t size)
{
	for (size_t done = 0; done < size;) {
		ssize_t n = read(fd, (char *)buffer + done, size - done);
		if (n <= 0)
			die("read: %s", n < 0 ? strerror(errno) : "short file");
		done += (size_t)n;
	}
}

/*
 * One repetition of save and load for one image. `image` is the region to
 * save, `plain` a plain buffer with the same bytes, `touch` the k pages the
 * program then needs.
 */
static void snapshot_run(unsigned m, int kind, cowmem_region *image,
			 unsigned char *plain, unsigned char *warm, size_t size,
			 const uint32_t *touch, size_t k, const char *dir)
{
	const char *const *what = steps[kind], *name = images[kind];

	/* Saving: cowmem_save against write(2) of the whole buffer. */
	int snapshot = temp_file(dir), raw = temp_file(dir);
	double t0 = now_seconds();
	if (cowmem_save(image, snapshot) != 0)
		die("cowmem_save: %s", strerror(errno));
	double t1 = now_seconds();
	write_all(raw, plain, size);
	double t2 = now_seconds();
	record(m, what[SAVE], (long)k, t1 - t0);
	record(m, what[WRITE2], (long)k, t2 - t1);

	/* Loading: the region, then its first touches, against read(2). */
	t0 = now_seconds();
	cowmem_region *loaded = must(cowmem_load(snapshot), "cowmem_load");
	t1 = now_seconds();
	uint64_t sum = 0;
	for (size_t i = 0; i < k; i++)
		sum += *word(cowmem_data(loaded), touch[i]);
	t2 = now_seconds();
	struct cowmem_stats stats;
	if (cowmem_stats(loaded, &stats) != 0)
		die("cowmem_stats: %s", strerror(errno));
	uint64_t want = 0;
	for (size_t i = 0; i < k; i++)
		want += *(uint64_t *)(plain + (size_t)touch[i] * page_size);
	if (sum != want)
		complain("%s: the loaded pages differ from the saved ones", name);
	cowmem_destroy(loaded);
	record(m, what[LOAD], (long)k, t1 - t0);
	record(m, what[LOAD_TOUCH], (long)k, t2 - t0);
	record_value(m, what[FAULTS], (long)k, (double)stats.faults);
	record_value(m, what[BLOCKED], (long)k, (double)stats.blocked_ns / 1e6);

	t0 = now_seconds();
	loaded = must(cowmem_load(snapshot), "cowmem_load");
	sum = 0;
	for (size_t p = 0; p < size / page_size; p++)
		sum += *word(cowmem_data(loaded), p);
	t1 = now_seconds();
	bool same = memcmp(cowmem_data(loaded), plain, size) == 0;
	cowmem_destroy(loaded);
	record(m, what[LOAD_READ_ALL], (long)k, t1 - t0);
	if (!same)
		complain("%s: a loaded region differs from the saved one", name);

	if (lseek(raw, 0, SEEK_SET) != 0)
		die("lseek: %s", strerror(errno));
	t0 = now_seconds();
	read_all(raw, warm, size);
	t1 = now_seconds();
	record(m, what[READ2], (long)k, t1 - t0);
	close(snapshot);
	close(raw);
}

static void snapshot_bench(unsigned m, int reps, uint64_t seed, const char *dir)
{
	size_t size = (size_t)m * MIB, pages = size / page_size;
	size_t k = pages / 100;
	uint32_t *chosen = malloc(pages * sizeof *chosen);
	unsigned char *plain = map_anonymous(size), *warm = map_anonymous(size);
	if (!chosen)
		die("out of memory");
	memset(warm, 1, size);
	cowmem_region *populated = must(cowmem_create(size), "cowmem_create");
	fill_pristine(cowmem_data(populated), size);

	for (int rep = 0; rep < reps; rep++) {
		fprintf(stderr, "save/load %u MiB: repetition %d of %d\n", m, rep + 1, reps);
		pick_pages(chosen, pages, k, seed + (uint64_t)rep);

		/* sparse: a new region, 1% written, the rest never touched */
		cowmem_region *sparse = must(cowmem_create(size), "cowmem_create");
		memset(plain, 0, size);
		write_pages(cowmem_data(sparse), chosen, k);
		write_pages(plain, chosen, k);
		snapshot_run(m, 0, sparse, plain, warm, size, chosen, k, dir);
		cowmem_destroy(sparse);

		/* dense: every page holds data, 1% written since the clone; the
		 * program then touches another random 1%. */
		cowmem_region *dense = must(cowmem_clone(populated), "cowmem_clone");
		write_pages(cowmem_data(dense), chosen, k);
		memcpy(plain, cowmem_data(dense), size);
		pick_pages(chosen, pages, k, ~(seed + (uint64_t)rep));
		snapshot_run(m, 1, dense, plain, warm, size, chosen, k, dir);
		cowmem_destroy(dense);
	}
	cowmem_destroy(populated);
	munmap(plain, size);
	munmap(warm, size);
	free(chosen);
}

/* ---- Output ------------------------------------------------------------------ */

struct options {
	long sizes[MAX_LIST], ks[MAX_LIST];
	int size_count, k_count, reps;
	long save_mib;
	uint64_t seed;
	const char *dir, *csv;
};

static void print_tracking(const struct options *o)
{
	printf("\n## Changed pages and roll back: median ms after writing k pages\n\n");
	printf("One word written to each of k random pages of a clone of a populated "
	       "image (the write column), then each contender on its own copy.\n\n");
	printf("| size | k | write k pages | cowmem_dirty_pages | memcmp every page "
	       "| ratio | cowmem_reset | memcpy back | ratio | destroy + re-clone |\n");
	printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (int s = 0; s < o->size_count; s++)
		for (int i = 0; i < o->k_count; i++) {
			unsigned m = (unsigned)o->sizes[s];
			long k = o->ks[i];
			double dirty = median(m, "cowmem_dirty_pages", k);
			if (isnan(dirty))
				continue;
			double scan = median(m, "memcmp-scan", k);
			double reset = median(m, "cowmem_reset", k);
			double back = median(m, "memcpy-back", k);
			printf("| %s | %ld | %s | %s | %s | %s× | %s | %s | %s× | %s |\n",
			       size_name(m), k, num(median(m, "write", k)), num(dirty),
			       num(scan), num(scan / dirty), num(reset), num(back),
			       num(back / reset), num(median(m, "destroy+reclone", k)));
		}
	printf("\nratio = the plain way's time ÷ CowMem's.\n\n");
	printf("### The same after the run also read every page of the world\n\n");
	printf("The library finds written pages by walking the region's populated page "
	       "tables, so pages a run only read cost a little too.\n\n");
	printf("| size | k | cowmem_dirty_pages | ratio to memcmp | cowmem_reset "
	       "| ratio to memcpy |\n|---|---:|---:|---:|---:|---:|\n");
	for (int s = 0; s < o->size_count; s++)
		for (int i = 0; i < o->k_count; i++) {
			unsigned m = (unsigned)o->sizes[s];
			long k = o->ks[i];
			double dirty = median(m, "read-all:cowmem_dirty_pages", k);
			double reset = median(m, "read-all:cowmem_reset", k);
			if (isnan(dirty))
				continue;
			printf("| %s | %ld | %s | %s× | %s | %s× |\n", size_name(m), k,
			       num(dirty), num(median(m, "memcmp-scan", k) / dirty),
			       num(reset), num(median(m, "memcpy-back", k) / reset));
		}
	printf("\n### How the CowMem times grow: with k, not with the size "
	       "(only written pages mapped)\n\n");
	printf("| k |");
	for (int s = 0; s < o->size_count; s++)
		printf(" dirty_pages %s | reset %s |", size_name((unsigned)o->sizes[s]),
		       size_name((unsigned)o->sizes[s]));
	printf("\n|---:|");
	for (int s = 0; s < o->size_count; s++)
		printf("---:|---:|");
	printf("\n");
	for (int i = 0; i < o->k_count; i++) {
		bool any = false;
		for (int s = 0; s < o->size_count; s++)
			any |= !isnan(median((unsigned)o->sizes[s], "cowmem_reset", o->ks[i]));
		if (!any)
			continue;
		printf("| %ld |", o->ks[i]);
		for (int s = 0; s < o->size_count; s++) {
			unsigned m = (unsigned)o->sizes[s];
			printf(" %s | %s |", num(median(m, "cowmem_dirty_pages", o->ks[i])),
			       num(median(m, "cowmem_reset", o->ks[i])));
		}
		printf("\n");
	}
}

static void print_snapshots(const struct options *o)
{
	unsigned m = (unsigned)o->save_mib;
	long k = (long)((size_t)m * MIB / page_size / 100);
	printf("\n## Snapshots on disk, %s, 1%% of the pages (%ld): median ms\n\n",
	       size_name(m), k);
	printf("sparse: a new region with 1%% of its pages written; dense: a clone of "
	       "a populated image with 1%% written. Files in the page cache, not "
	       "fsync'ed.\n\n");
	printf("| image | cowmem_save | write(2) of the buffer | ratio | cowmem_load "
	       "| load + touch 1%% | read(2) of the raw file | ratio | load + read "
	       "every page | faults served (touch 1%%) | threads blocked, ms |\n");
	printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (int i = 0; i < 2; i++) {
		double v[STEPS];
		for (int j = 0; j < STEPS; j++)
			v[j] = median(m, steps[i][j], k);
		if (isnan(v[SAVE]))
			continue;
		printf("| %s | %s | %s | %s× | %s | %s | %s | %s× | %s | %.0f | %s |\n",
		       images[i], num(v[SAVE]), num(v[WRITE2]), num(v[WRITE2] / v[SAVE]),
		       num(v[LOAD]), num(v[LOAD_TOUCH]), num(v[READ2]),
		       num(v[READ2] / v[LOAD_TOUCH]), num(v[LOAD_READ_ALL]), v[FAULTS],
		       num(v[BLOCKED]));
	}
	printf("\nratio = write(2) ÷ cowmem_save, and read(2) ÷ (cowmem_load + touching "
	       "1%%).\n");
}

static void write_csv(const char *path)
{
	FILE *f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "cowmem-track-bench: cannot write %s: %s\n", path,
			strerror(errno));
		return;
	}
	fprintf(f, "size_mib,operation,k,metric,sample,value\n");
	for (size_t i = 0; i < series_count; i++) {
		const struct series *s = &all[i];
		const char *metric = strstr(s->what, ":faults") ? "count" : "ms";
		for (int j = 0; j < s->count; j++)
			fprintf(f, "%u,%s,%ld,%s,%d,%.6g\n", s->size_mib, s->what, s->k,
				metric, j + 1, s->samples[j]);
		fprintf(f, "%u,%s,%ld,%s,median,%.6g\n", s->size_mib, s->what, s->k,
			metric, median(s->size_mib, s->what, s->k));
	}
	if (fclose(f) == 0)
		printf("\nraw numbers (every sample, and the medians): %s\n", path);
}

static int parse_list(const char *text, const char *what, long low, long high,
		      long *out)
{
	int n = 0;
	for (const char *p = text; *p;) {
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
	if (!n)
		die("empty %s list", what);
	return n;
}

static void parse_options(int argc, char **argv, struct options *o)
{
	*o = (struct options){ .sizes = { 64, 1024 }, .size_count = 2,
			       .ks = { 16, 256, 4096, 65536 }, .k_count = 4,
			       .reps = 5, .save_mib = 1024, .seed = 1,
			       .dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp" };
	long v[MAX_LIST];
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
			printf("usage: cowmem-track-bench [--sizes MIB,...] [--ks K,...] "
			       "[--reps N]\n          [--save-mib MIB] [--dir DIR] "
			       "[--seed N] [--csv FILE]\n"
			       "  --sizes     region sizes in MiB (default 64,1024)\n"
			       "  --ks        pages written per run (default "
			       "16,256,4096,65536; capped by the size)\n"
			       "  --reps      repetitions; tables show medians (default 5)\n"
			       "  --save-mib  size for save and load, 0 to skip (default 1024)\n"
			       "  --dir       where the snapshot files go (default "
			       "$TMPDIR, else /tmp)\n"
			       "  --seed      seed of the random pages (default 1)\n"
			       "  --csv       write every sample and the medians to FILE\n");
			exit(0);
		}
		if (!value)
			die("%s needs a value (see --help)", arg);
		i++;
		if (!strcmp(arg, "--sizes"))
			o->size_count = parse_list(value, "size", 1, 1 << 20, o->sizes);
		else if (!strcmp(arg, "--ks"))
			o->k_count = parse_list(value, "k", 1, 1L << 30, o->ks);
		else if (!strcmp(arg, "--reps"))
			parse_list(value, "repetition", 1, 1000, v), o->reps = (int)v[0];
		else if (!strcmp(arg, "--save-mib"))
			parse_list(value, "size", 0, 1 << 20, v), o->save_mib = v[0];
		else if (!strcmp(arg, "--dir"))
			o->dir = value;
		else if (!strcmp(arg, "--seed"))
			o->seed = strtoull(value, NULL, 10);
		else if (!strcmp(arg, "--csv"))
			o->csv = value;
		else
			die("unknown option %s (see --help)", arg);
	}
}

int main(int argc, char **argv)
{
	struct options o;
	page_size = (size_t)sysconf(_SC_PAGESIZE);
	parse_options(argc, argv, &o);

	struct utsname u;
	uname(&u);
	char load[128];
	load_average(load, sizeof load);
	const char *backend = cowmem_backend(), *features = cowmem_features();
	printf("# CowMem benchmark: changed pages, reset, save and load\n\n");
	printf("- machine: %ld CPUs online; kernel %s %s; page size %zu\n",
	       sysconf(_SC_NPROCESSORS_ONLN), u.sysname, u.release, page_size);
	printf("- libcowmem %d.%d.%d, backend %s, features %s\n", COWMEM_VERSION_MAJOR,
	       COWMEM_VERSION_MINOR, COWMEM_VERSION_PATCH, backend ? backend : "?",
	       features && *features ? features : "-");
	printf("- load average at the start: %s (/proc/loadavg)\n", load);
	printf("- %d repetitions, seed %" PRIu64 "; every figure is a median\n",
	       o.reps, o.seed);
	fflush(stdout);

	/* Warm-up: starts the library's threads, untimed. */
	struct tracking warm;
	tracking_open(&warm, 16);
	tracking_run(&warm, 16, o.seed);
	tracking_close(&warm);
	series_count = 0;

	for (int s = 0; s < o.size_count; s++) {
		struct tracking t;
		tracking_open(&t, (unsigned)o.sizes[s]);
		for (int rep = 0; rep < o.reps; rep++) {
			fprintf(stderr, "%s: repetition %d of %d\n",
				size_name(t.size_mib), rep + 1, o.reps);
			for (int i = 0; i < o.k_count; i++)
				if ((size_t)o.ks[i] <= t.pages)
					tracking_run(&t, (size_t)o.ks[i],
						     o.seed + (uint64_t)rep * 131 + (uint64_t)i);
		}
		tracking_close(&t);
	}
	if (o.save_mib > 0)
		snapshot_bench((unsigned)o.save_mib, o.reps, o.seed, o.dir);

	print_tracking(&o);
	if (o.save_mib > 0)
		print_snapshots(&o);
	if (wrong)
		printf("\n**Warning**: some results were wrong (see stderr); the "
		       "figures above measure a broken library.\n");
	load_average(load, sizeof load);
	printf("\nload average at the end: %s\n", load);
	if (o.csv)
		write_csv(o.csv);
	return 0;
}
