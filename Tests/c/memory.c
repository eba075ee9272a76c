/*
 * memory.c - the memory promise, measured rather than assumed.
 *
 * Memory here is this process's RssAnon (/proc/self/status) plus the
 * system's Shmem (/proc/meminfo): a region's pages live in private anonymous
 * memory or in memfd (shmem) storage, and both are counted. The test takes
 * deltas of that figure around each step on a 256 MiB region:
 *
 *   populate every page of the source       grows by about the region (a
 *                                            check that the measure sees it)
 *   clone it                                 < 2% of the region
 *   write 1% of the clone's pages            <= 10% (about 1%)
 *   read every page of the clone             <= 10% in all since the clone
 *   clone the clone and read it all          <= 10%
 *   write 1% of the source's pages           <= 10%; the clone and its clone
 *                                            still see the old bytes
 *   destroy everything                       back within 10% of the start
 *
 * Content is a pattern function of (version, offset), so no 256 MiB model
 * is needed; the pages written are picked from the printed seed. Every
 * read checks every byte. The figures are printed as a table. Exits 77 if
 * the machine has too little memory for the run.
 *
 * Shmem is system-wide: other programs that allocate shared memory during
 * the run disturb the figures, so run it alone.
 */
#include "test_util.h"

#include <stdbool.h>

#define REGION_SIZE ((size_t)256 << 20)
#define PERCENT_WRITTEN 1

/* Content versions (pattern tags). */
enum { ORIGINAL = 1, CLONE_WRITE = 2, SOURCE_WRITE = 3 };

static size_t page, pages;

/* ---- Measuring --------------------------------------------------------------- */

/* The "Key:  N kB" value of a /proc file, in bytes; -1 if absent. */
static long long proc_value(const char *file, const char *key)
{
	FILE *in = fopen(file, "r");
	if (!in)
		return -1;
	char line[256];
	size_t key_length = strlen(key);
	long long value = -1;
	while (fgets(line, sizeof line, in)) {
		if (strncmp(line, key, key_length) == 0 && line[key_length] == ':') {
			value = strtoll(line + key_length + 1, NULL, 10) * 1024;
			break;
		}
	}
	fclose(in);
	return value;
}

static long long memory_once(void)
{
	long long anonymous = proc_value("/proc/self/status", "RssAnon");
	long long shared = proc_value("/proc/meminfo", "Shmem");
	CHECK(anonymous >= 0 && shared >= 0,
	      "reading RssAnon from /proc/self/status and Shmem from /proc/meminfo");
	return anonymous + shared;
}

/*
 * The figure once it stops moving: the library may release memory on a
 * thread of its own a moment after a call returns. This waits for quiet
 * (three equal readings 10 ms apart, at most 200 readings); it bounds
 * nothing about the library's speed.
 */
static long long memory_now(void)
{
	long long last = memory_once();
	int equal = 0;
	for (int i = 0; i < 200 && equal < 3; i++) {
		struct timespec pause = { 0, 10 * 1000 * 1000 };
		nanosleep(&pause, NULL);
		long long now = memory_once();
		long long difference = now > last ? now - last : last - now;
		equal = difference <= 64 * 1024 ? equal + 1 : 0;
		last = now;
	}
	return last;
}

static bool any_over;

static void record(const char *step, long long delta, long long limit,
		   const char *against)
{
	printf("  %-44s %+9.2f MiB  %+7.2f%%", step, (double)delta / (1 << 20),
	       100.0 * (double)delta / (double)REGION_SIZE);
	if (limit >= 0) {
		bool over = delta > limit;
		any_over |= over;
		printf("  (limit %.1f%% %s) %s", 100.0 * (double)limit /
		       (double)REGION_SIZE, against, over ? "OVER" : "ok");
	}
	printf("\n");
	fflush(stdout);
}

static long long percent(double p)
{
	return (long long)((double)REGION_SIZE * p / 100.0);
}

/* ---- Content ------------------------------------------------------------------ */

static void write_page(unsigned char *data, size_t p, uint64_t version)
{
	test_pattern_fill(data + p * page, page, version, p * page);
}

/* Reads every byte of the region (summing them, so the reads cannot be
 * dropped) and checks each page against the version it must hold. */
static uint64_t read_and_check(const char *name, const unsigned char *data,
			       const unsigned char *versions)
{
	uint64_t sum = 0;
	for (size_t p = 0; p < pages; p++) {
		const unsigned char *bytes = data + p * page;
		size_t at = test_pattern_find_difference(bytes, page, versions[p],
							 p * page);
		if (at != page) {
			uint64_t actual;
			memcpy(&actual, bytes + at, 8);
			FAIL("%s: page %zu offset %zu holds 0x%016" PRIx64 ", "
			     "expected version %u: 0x%016" PRIx64, name, p, at,
			     actual, versions[p],
			     test_pattern_word(versions[p], p * page + at));
		}
		for (size_t i = 0; i < page; i += 8) {
			uint64_t word;
			memcpy(&word, bytes + i, 8);
			sum += word;
		}
	}
	return sum;
}

/* Chooses PERCENT_WRITTEN% of the pages at random (distinct). `order` is a
 * scratch array of `pages` entries. */
static size_t choose_pages(test_rng *rng, size_t *order, size_t *chosen)
{
	for (size_t p = 0; p < pages; p++)
		order[p] = p;
	test_rng_shuffle(rng, order, pages);
	size_t count = pages * PERCENT_WRITTEN / 100;
	memcpy(chosen, order, count * sizeof *chosen);
	return count;
}

int main(int argc, char **argv)
{
	page = test_page_size();
	pages = REGION_SIZE / page;
	uint64_t seed = test_seed_init(argc, argv);
	test_rng rng = { seed };

	long long available = proc_value("/proc/meminfo", "MemAvailable");
	if (available >= 0 && available < (long long)(4 * REGION_SIZE))
		test_skip("needs %zu MiB of available memory, the machine has "
			  "%lld MiB", 4 * REGION_SIZE >> 20, available >> 20);
	if (proc_value("/proc/self/status", "RssAnon") < 0 ||
	    proc_value("/proc/meminfo", "Shmem") < 0)
		test_skip("RssAnon or Shmem not readable from /proc");

	/* Everything the test needs for itself is allocated and touched
	 * before the first measurement, so the deltas are the library's. */
	size_t *order = malloc(pages * sizeof *order);
	size_t *clone_pages = malloc(pages * sizeof *clone_pages);
	size_t *source_pages = malloc(pages * sizeof *source_pages);
	unsigned char *source_versions = malloc(pages);
	unsigned char *clone_versions = malloc(pages);
	CHECK(order && clone_pages && source_pages && source_versions &&
	      clone_versions, "malloc");
	memset(source_versions, ORIGINAL, pages);
	memset(clone_versions, ORIGINAL, pages);
	size_t clone_count = choose_pages(&rng, order, clone_pages);
	size_t source_count = choose_pages(&rng, order, source_pages);
	/* Warm the library up (fault server, helper threads) outside the
	 * measured steps. */
	cowmem_region *warm = test_create_or_skip(page);
	cowmem_region *warm_clone = cowmem_clone(warm);
	CHECK(warm_clone != NULL, "warm-up clone: %s", strerror(errno));
	((volatile char *)cowmem_data(warm_clone))[0] = 1;
	cowmem_destroy(warm_clone);
	cowmem_destroy(warm);

	printf("region %zu MiB = %zu pages; %zu pages (%d%%) written in the clone "
	       "and %zu in the source\n", REGION_SIZE >> 20, pages, clone_count,
	       PERCENT_WRITTEN, source_count);
	printf("  %-44s %13s  %8s\n", "step", "memory", "of region");

	long long start = memory_now();
	cowmem_region *source = cowmem_create(REGION_SIZE);
	if (!source && errno == ENOMEM)
		test_skip("cowmem_create(%zu MiB) failed with ENOMEM",
			  REGION_SIZE >> 20);
	CHECK(source != NULL, "cowmem_create(256 MiB): %s", strerror(errno));
	unsigned char *source_data = cowmem_data(source);
	for (size_t p = 0; p < pages; p++)
		write_page(source_data, p, ORIGINAL);
	long long populated = memory_now();
	record("populate every page of the source", populated - start, -1, "");
	CHECK(populated - start >= percent(90),
	      "populating %zu MiB grew memory by only %lld MiB: this measure does "
	      "not see where the region's pages live", REGION_SIZE >> 20,
	      (populated - start) >> 20);

	/* The clone. */
	cowmem_region *clone = cowmem_clone(source);
	CHECK(clone != NULL, "cowmem_clone: %s", strerror(errno));
	unsigned char *clone_data = cowmem_data(clone);
	long long cloned = memory_now();
	record("clone it", cloned - populated, percent(2), "of region");

	for (size_t i = 0; i < clone_count; i++) {
		write_page(clone_data, clone_pages[i], CLONE_WRITE);
		clone_versions[clone_pages[i]] = CLONE_WRITE;
	}
	long long clone_written = memory_now();
	record("write 1% of the clone's pages", clone_written - cloned, percent(10),
	       "of region");

	uint64_t sum = read_and_check("clone", clone_data, clone_versions);
	long long clone_read = memory_now();
	record("read every page of the clone", clone_read - clone_written, -1, "");
	record("  clone in all (clone, write 1%, read all)", clone_read - populated,
	       percent(10), "of region");

	/* A clone of the clone, read in full. */
	cowmem_region *grandchild = cowmem_clone(clone);
	CHECK(grandchild != NULL, "cowmem_clone of the clone: %s", strerror(errno));
	unsigned char *grandchild_data = cowmem_data(grandchild);
	long long grandchild_made = memory_now();
	record("clone the clone", grandchild_made - clone_read, percent(2),
	       "of region");
	sum += read_and_check("clone of the clone", grandchild_data, clone_versions);
	long long grandchild_read = memory_now();
	record("read every page of the clone's clone", grandchild_read -
	       grandchild_made, percent(10), "of region");

	/* Writes in the source after the clones: they must not show in them. */
	for (size_t i = 0; i < source_count; i++) {
		write_page(source_data, source_pages[i], SOURCE_WRITE);
		source_versions[source_pages[i]] = SOURCE_WRITE;
	}
	long long source_written = memory_now();
	record("write 1% of the source's pages", source_written - grandchild_read,
	       percent(10), "of region");
	sum += read_and_check("clone, after the source's writes", clone_data,
			      clone_versions);
	sum += read_and_check("clone of the clone, after the source's writes",
			      grandchild_data, clone_versions);
	sum += read_and_check("source", source_data, source_versions);
	long long all_read = memory_now();
	record("read all three in full", all_read - source_written, -1, "");
	record("  all since populating (2 clones, 2% written)", all_read - populated,
	       percent(10), "of region");

	CHECK(cowmem_destroy(grandchild) == 0, "destroy: %s", strerror(errno));
	CHECK(cowmem_destroy(source) == 0, "destroy: %s", strerror(errno));
	CHECK(cowmem_destroy(clone) == 0, "destroy: %s", strerror(errno));
	long long end = memory_now();
	record("destroy all three (against the start)", end - start, percent(10),
	       "of region");

	printf("checksum of everything read: 0x%016" PRIx64 "\n", sum);
	CHECK(!any_over, "a step used more memory than its limit (see the table)");
	printf("memory: every figure within its limit\n");
	return TEST_EXIT_PASS;
}
