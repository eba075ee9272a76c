/*
 * memory.c - the memory promise, measured rather than assumed.
 *
 * Memory here is this process's RssAnon (/proc/self/status) plus shmem: a
 * region's pages live in private anonymous memory or in memfd (shmem)
 * storage, and both are counted. Shmem is the system's (/proc/meminfo) and,
 * where /proc/self/map_files is readable, also this process's own (the
 * allocated blocks of every shmem file it maps or holds open); limits are
 * judged on the process's own figure when there is one, because other
 * programs running at the same time move the system's. The test takes
 * deltas around each step on a 256 MiB region:
 *
 *   populate every page of the source       grows by about the region (a
 *                                            check that the measure sees it)
 *   clone it                                 < 2% of the region
 *   write 1% of the clone's pages            <= 10% (about 1%)
 *   read every page of the clone             <= 10% in all since the clone
 *   clone the clone                          < 2% of the region where pages
 *                                            are lent lazily; else 2% plus
 *                                            twice the clone's written
 *                                            pages (see below)
 *   read the clone's clone in full           <= 10%
 *   write 1% of the source's pages           <= 10%; the clone and its clone
 *                                            still see the old bytes
 *   destroy everything                       back within 10% of the start
 *
 * Content is a pattern function of (version, offset), so no 256 MiB model
 * is needed; the pages written are picked from the printed seed. Every
 * read checks every byte. The figures are printed as a table. Exits 77 if
 * the machine has too little memory for the run.
 */
#include "harness.h"
#include "internal.h" /* cowmem__janitor_busy */

#include <dirent.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/stat.h>

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

/* The shmem storage this process holds: every file on the kernel's
 * internal shmem mount (memfds, shared anonymous memory) that it maps or
 * has open, counted once per inode by its allocated blocks. -1 if
 * /proc/self/map_files cannot be read (it needs privileges). */
static dev_t shmem_device;

static long long own_shmem(void)
{
	static const char *const directories[] = { "/proc/self/map_files",
						   "/proc/self/fd" };
	static ino_t seen[8192];
	size_t seen_count = 0;
	long long total = 0;

	for (int d = 0; d < 2; d++) {
		DIR *directory = opendir(directories[d]);
		if (!directory)
			return -1;
		struct dirent *entry;
		while ((entry = readdir(directory)) != NULL) {
			if (entry->d_name[0] == '.')
				continue;
			char path[320];
			struct stat status;
			snprintf(path, sizeof path, "%s/%s", directories[d],
				 entry->d_name);
			if (stat(path, &status) != 0) {
				if (errno == EPERM || errno == EACCES) {
					closedir(directory);
					return -1;
				}
				continue;
			}
			if (status.st_dev != shmem_device || !S_ISREG(status.st_mode))
				continue;
			size_t i = 0;
			while (i < seen_count && seen[i] != status.st_ino)
				i++;
			if (i < seen_count)
				continue;
			CHECK(seen_count < sizeof seen / sizeof seen[0],
			      "too many shmem files to count");
			seen[seen_count++] = status.st_ino;
			total += (long long)status.st_blocks * 512;
		}
		closedir(directory);
	}
	return total;
}

/*
 * Memory is RssAnon plus shmem. Shmem is read two ways: the system's
 * (/proc/meminfo, as simple as it gets, but other programs running at the
 * same time move it) and this process's own (above). The limits are judged
 * on the process's own figure when it can be read, else on the system's.
 */
struct measure {
	long long anonymous, own_shmem, system_shmem;
};

static bool have_own_shmem;

static struct measure memory_once(void)
{
	struct measure m;
	m.anonymous = proc_value("/proc/self/status", "RssAnon");
	m.system_shmem = proc_value("/proc/meminfo", "Shmem");
	m.own_shmem = have_own_shmem ? own_shmem() : -1;
	CHECK(m.anonymous >= 0 && m.system_shmem >= 0,
	      "reading RssAnon from /proc/self/status and Shmem from /proc/meminfo");
	return m;
}

static long long judged(struct measure m)
{
	return m.anonymous + (have_own_shmem ? m.own_shmem : m.system_shmem);
}

/*
 * The figure once it stops moving: the library may release memory on a
 * thread of its own a moment after a call returns. This waits for quiet
 * (three equal readings 10 ms apart, at most 200 readings); it bounds
 * nothing about the library's speed.
 */
static struct measure memory_now(void)
{
	/* First the janitor's work: under emulation (qemu TCG, 6.1) it can
	 * sleep longer than the quiet below while a fold's staging range
	 * still holds the pages written. At most 10 s. */
	for (int i = 0; i < 1000 && cowmem__janitor_busy(); i++) {
		struct timespec pause = { 0, 10 * 1000 * 1000 };
		nanosleep(&pause, NULL);
	}
	struct measure last = memory_once();
	int equal = 0;
	for (int i = 0; i < 200 && equal < 3; i++) {
		struct timespec pause = { 0, 10 * 1000 * 1000 };
		nanosleep(&pause, NULL);
		struct measure now = memory_once();
		long long difference = judged(now) - judged(last);
		if (difference < 0)
			difference = -difference;
		equal = difference <= 64 * 1024 ? equal + 1 : 0;
		last = now;
	}
	return last;
}

static bool any_over;

static double mib(long long bytes)
{
	return (double)bytes / (1 << 20);
}

/* Prints one row: growth from `before` to `after`, judged against `limit`
 * bytes (-1: printed only). Returns the judged growth. */
static long long record(const char *step, struct measure before,
			struct measure after, long long limit)
{
	long long delta = judged(after) - judged(before);
	long long system = after.anonymous + after.system_shmem -
			   before.anonymous - before.system_shmem;
	printf("  %-44s %+9.2f MiB %+8.2f%%  %+9.2f MiB", step, mib(delta),
	       100.0 * (double)delta / (double)REGION_SIZE, mib(system));
	if (limit >= 0) {
		bool over = delta > limit;
		any_over |= over;
		printf("   %5.1f%%  %s", 100.0 * (double)limit / (double)REGION_SIZE,
		       over ? "OVER" : "ok");
	}
	printf("\n");
	fflush(stdout);
	return delta;
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

static void deltas(void)
{
	page = test_page_size();
	pages = REGION_SIZE / page;
	uint64_t seed = test_seed;
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

	/* Which device the kernel's internal shmem files live on. */
	int probe = memfd_create("cowmem-memory-test-probe", MFD_CLOEXEC);
	struct stat probe_status;
	CHECK(probe >= 0 && fstat(probe, &probe_status) == 0, "memfd_create: %s",
	      strerror(errno));
	shmem_device = probe_status.st_dev;
	close(probe);
	have_own_shmem = own_shmem() >= 0;

	printf("backend %s; region %zu MiB = %zu pages; %zu pages (%d%%) written "
	       "in the clone and %zu in the source\n", cowmem_backend(),
	       REGION_SIZE >> 20, pages, clone_count, PERCENT_WRITTEN, source_count);
	printf("memory = RssAnon + %s; the last column but one adds the system's "
	       "Shmem instead\n", have_own_shmem ? "this process's shmem files" :
	       "the system's Shmem (this process's shmem files are not readable)");
	printf("  %-44s %13s %9s  %13s   %s\n", "step", "memory", "of region",
	       "system Shmem", "limit");

	struct measure start = memory_now();
	cowmem_region *source = cowmem_create(REGION_SIZE);
	if (!source && errno == ENOMEM)
		test_skip("cowmem_create(%zu MiB) failed with ENOMEM",
			  REGION_SIZE >> 20);
	CHECK(source != NULL, "cowmem_create(256 MiB): %s", strerror(errno));
	unsigned char *source_data = cowmem_data(source);
	for (size_t p = 0; p < pages; p++)
		write_page(source_data, p, ORIGINAL);
	struct measure populated = memory_now();
	long long population = record("populate every page of the source", start,
				      populated, -1);
	CHECK(population >= percent(90),
	      "populating %zu MiB grew memory by only %lld MiB: this measure does "
	      "not see where the region's pages live", REGION_SIZE >> 20,
	      population >> 20);

	/* The clone. */
	cowmem_region *clone = cowmem_clone(source);
	CHECK(clone != NULL, "cowmem_clone: %s", strerror(errno));
	unsigned char *clone_data = cowmem_data(clone);
	struct measure cloned = memory_now();
	record("clone it", populated, cloned, percent(2));

	for (size_t i = 0; i < clone_count; i++) {
		write_page(clone_data, clone_pages[i], CLONE_WRITE);
		clone_versions[clone_pages[i]] = CLONE_WRITE;
	}
	struct measure clone_written = memory_now();
	record("write 1% of the clone's pages", cloned, clone_written, percent(10));

	uint64_t sum = read_and_check("clone", clone_data, clone_versions);
	struct measure clone_read = memory_now();
	record("read every page of the clone", clone_written, clone_read, -1);
	record("  clone in all (clone, write 1%, read all)", populated, clone_read,
	       percent(10));

	/* A clone of the clone, read in full. */
	cowmem_region *grandchild = cowmem_clone(clone);
	CHECK(grandchild != NULL, "cowmem_clone of the clone: %s", strerror(errno));
	unsigned char *grandchild_data = cowmem_data(grandchild);
	/* The clone may return before its fold's copies are done (folder.c),
	 * and a walk of the page tables without PAGEMAP_SCAN (6.1) can go
	 * 30 ms without moving the figure under emulation: a call about the
	 * region waits for the fold, so the figure is the clone's, done. */
	struct cowmem_stats stats;
	CHECK(cowmem_stats(grandchild, &stats) == 0, "stats: %s", strerror(errno));
	struct measure grandchild_made = memory_now();
	/* Where clones fold, the clone's written pages go into the layer its
	 * clone reads: nothing is copied. Without folds, cowmem_clone() copies
	 * each of them twice when it is made, into the store as the new
	 * clone's overlay and into the new clone's own memory
	 * (cowmem__install_overlay() in regions.c): that is the price of the
	 * path, 2% here for 1% written, on top of the same 2% allowance for
	 * page tables and bookkeeping. */
	const char *missing = test_lazy_lending_missing();
	long long eager_copies = missing ? 2 * (long long)(clone_count * page) : 0;
	if (missing)
		printf("  (feature %s not in use: cloning the clone copies its %zu "
		       "written pages twice)\n", missing, clone_count);
	record("clone the clone", clone_read, grandchild_made,
	       percent(2) + eager_copies);
	sum += read_and_check("clone of the clone", grandchild_data, clone_versions);
	struct measure grandchild_read = memory_now();
	record("read every page of the clone's clone", grandchild_made,
	       grandchild_read, percent(10));

	/* Writes in the source after the clones: they must not show in them. */
	for (size_t i = 0; i < source_count; i++) {
		write_page(source_data, source_pages[i], SOURCE_WRITE);
		source_versions[source_pages[i]] = SOURCE_WRITE;
	}
	struct measure source_written = memory_now();
	record("write 1% of the source's pages", grandchild_read, source_written,
	       percent(10));
	sum += read_and_check("clone, after the source's writes", clone_data,
			      clone_versions);
	sum += read_and_check("clone of the clone, after the source's writes",
			      grandchild_data, clone_versions);
	sum += read_and_check("source", source_data, source_versions);
	struct measure all_read = memory_now();
	record("read all three in full", source_written, all_read, -1);
	record("  all since populating (2 clones, 2% written)", populated, all_read,
	       percent(10));

	CHECK(cowmem_destroy(grandchild) == 0, "destroy: %s", strerror(errno));
	CHECK(cowmem_destroy(source) == 0, "destroy: %s", strerror(errno));
	CHECK(cowmem_destroy(clone) == 0, "destroy: %s", strerror(errno));
	struct measure end = memory_now();
	record("destroy all three (against the start)", start, end, percent(10));

	printf("checksum of everything read: 0x%016" PRIx64 "\n", sum);
	CHECK(!any_over, "a step used more memory than its limit (see the table)");
	printf("memory: every figure within its limit\n");
	free(order);
	free(clone_pages);
	free(source_pages);
	free(source_versions);
	free(clone_versions);
}

static const struct test_case cases[] = {
	TEST_CASE("deltas", deltas),
};

int main(int argc, char **argv)
{
	test_seed_init(argc, argv);
	return test_main(argc, argv, cases, TEST_CASE_COUNT(cases));
}
