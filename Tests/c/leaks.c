/*
 * leaks.c - after a long random run, destroying every region gives back
 * every descriptor, mapping, thread and page of region storage.
 *
 * The library keeps three descriptors from first use to exit (the
 * userfaultfd, /proc/self/pagemap, /proc/self/mem; fewer without
 * userfaultfd); everything else it takes belongs to a region (its memfd and
 * mappings) or to a thread that exits when idle (the fault server, started
 * by the first clone and stopped with the last region; the janitor, which
 * unmaps retired page tables and exits when its queue is empty).
 *
 * So the baseline is taken after one create, clone, read and destroy, and
 * after the run (creates, clones, clones of clones, writes, reads and
 * destroys from several threads, seeded, every region checked against a
 * memcpy model) the counts of /proc/self/fd entries, /proc/self/maps lines
 * and /proc/self/task entries, and RssShmem, must come back exactly. The
 * library's threads exit asynchronously, so the counts are polled a bounded
 * number of times before they are judged.
 *
 * glibc keeps the stacks of exited threads in a cache and makes an arena
 * per thread, both of which would add mappings that are glibc's, not the
 * library's: the test runs itself again with GLIBC_TUNABLES setting
 * glibc.pthread.stack_cache_size=0 and glibc.malloc.arena_max=1, and while
 * polling it starts and joins one thread of its own, which makes glibc
 * unmap the stacks of threads that have exited. Under AddressSanitizer the
 * allocator maps memory as it pleases: the mapping count is then printed
 * but not judged; the same under valgrind (seen by its LD_PRELOAD).
 *
 * Options: --seed=N (COWMEM_TEST_SEED), --ops=N per thread (default 4000),
 * --threads=N (default 4).
 */
#include "harness.h"

#include <limits.h>
#include <malloc.h>

#include <pthread.h>
#include <stdatomic.h>

#define TUNABLES "glibc.pthread.stack_cache_size=0:glibc.malloc.arena_max=1"
#define SLOTS 12
#define MAX_PAGES 24
#define SHARED_PAGES 32

static size_t page;
static bool judge_maps = !(TEST_UNDER_ASAN || TEST_UNDER_TSAN);
static uint64_t seed, ops_per_thread = 4000;
static unsigned thread_count = 4;

/* ---- Figures ------------------------------------------------------------ */

struct figures {
	int fds, maps, tasks, region_fds, region_maps;
	long shmem_kib;
};

static long rss_shmem_kib(void)
{
	FILE *status = fopen("/proc/self/status", "re");
	char line[256];
	long kib = -1;

	if (!status)
		return -1;
	while (fgets(line, sizeof line, status))
		if (sscanf(line, "RssShmem: %ld kB", &kib) == 1)
			break;
	fclose(status);
	return kib;
}

static struct figures measure(void)
{
	struct figures f;
	f.fds = proc_count_fds();
	f.maps = proc_count_maps();
	f.tasks = proc_count_tasks();
	f.region_fds = proc_count_fds_naming(0, "memfd:cowmem");
	f.region_maps = proc_count_maps_naming(0, "memfd:cowmem");
	f.shmem_kib = rss_shmem_kib();
	return f;
}

static bool same(const struct figures *a, const struct figures *b)
{
	return a->fds == b->fds && (!judge_maps || a->maps == b->maps) &&
	       a->tasks == b->tasks && a->region_fds == b->region_fds &&
	       a->region_maps == b->region_maps && a->shmem_kib == b->shmem_kib;
}

static void print_figures(const char *when, const struct figures *f)
{
	printf("%-38s descriptors %4d  maps %5d  threads %3d  region memfds %3d  "
	       "region maps %4d  RssShmem %6ld kB\n", when, f->fds, f->maps, f->tasks,
	       f->region_fds, f->region_maps, f->shmem_kib);
	fflush(stdout);
}

static void *note_tid(void *tid)
{
	*(pid_t *)tid = gettid();
	return NULL;
}

/* Polls (bounded) until the figures equal `target`, letting exited threads
 * go: one thread started and joined per try makes glibc free the stacks of
 * detached threads that have ended. Returns the last figures. */
static void free_exited_stacks(void)
{
	pthread_t thread;
	pid_t tid = 0;
	if (pthread_create(&thread, NULL, note_tid, &tid) != 0)
		return;
	pthread_join(thread, NULL);
	/* Joined is not gone: the kernel lists an ended thread in
	 * /proc/self/task a little longer (a third of the counts on 6.1 under
	 * emulation). Counting it would be a thread the library left. */
	char path[64];
	snprintf(path, sizeof path, "/proc/self/task/%d", (int)tid);
	for (int tries = 0; tries < 2000 && access(path, F_OK) == 0; tries++)
		usleep(1000);
}

static struct figures settle(const struct figures *target, int *tries_used)
{
	int tries = 0;

	free_exited_stacks();
	struct figures now = measure();
	while (!same(&now, target) && tries < 400) {
		usleep(5000);
		free_exited_stacks();
		tries++;
		now = measure();
	}
	*tries_used = tries;
	return now;
}

/* Polls until only the threads there were before the library started are
 * left (a sanitizer may have one of its own), then lets glibc unmap the
 * stacks of the ones that exited. */
static void wait_for_tasks(int count)
{
	for (int tries = 0; tries < 400 && proc_count_tasks() != count; tries++)
		usleep(5000);
	free_exited_stacks();
}

/* ---- The random run ------------------------------------------------------ */

struct tracked {
	cowmem_region *region;
	unsigned char *model;
	size_t size;
};

static cowmem_region *shared;
static unsigned char shared_model[SHARED_PAGES * 8192];
static atomic_ulong total_ops, total_creates, total_clones, total_destroys,
	max_live;
static atomic_long live_regions;

static void note_live(long delta)
{
	long now = atomic_fetch_add(&live_regions, delta) + delta;
	unsigned long seen = atomic_load(&max_live);
	while ((unsigned long)now > seen &&
	       !atomic_compare_exchange_weak(&max_live, &seen, (unsigned long)now))
		;
}

static void check(const struct tracked *t, unsigned thread, const char *what)
{
	char text[96];
	snprintf(text, sizeof text, "thread %u: %s", thread, what);
	CHECK_BYTES(cowmem_data(t->region), t->model, t->size, text);
}

static void drop(struct tracked *t)
{
	CHECK(cowmem_destroy(t->region) == 0, "cowmem_destroy: %s", strerror(errno));
	free(t->model);
	t->region = NULL;
	atomic_fetch_add(&total_destroys, 1);
	note_live(-1);
}

static void *worker(void *argument)
{
	unsigned index = (unsigned)(uintptr_t)argument;
	test_rng rng = { .state = test_substream(seed, index) };
	struct tracked slots[SLOTS] = { { 0 } };

	for (uint64_t op = 0; op < ops_per_thread; op++) {
		struct tracked *t = &slots[test_rng_below(&rng, SLOTS)];
		struct tracked *other = &slots[test_rng_below(&rng, SLOTS)];
		unsigned kind = (unsigned)test_rng_below(&rng, 100);

		if (!t->region || kind < 8) {
			/* create (or replace) */
			if (t->region)
				drop(t);
			t->size = (1 + (size_t)test_rng_below(&rng, MAX_PAGES)) * page;
			t->region = cowmem_create(t->size);
			CHECK(t->region != NULL, "cowmem_create: %s", strerror(errno));
			t->model = calloc(1, t->size);
			CHECK(t->model != NULL, "calloc");
			atomic_fetch_add(&total_creates, 1);
			note_live(1);
		} else if (kind < 30 && other != t) {
			/* clone t into other: clones of clones arise */
			if (other->region)
				drop(other);
			const struct tracked *from = t;
			bool from_shared = test_rng_below(&rng, 8) == 0;
			other->region = cowmem_clone(from_shared ? shared : from->region);
			CHECK(other->region != NULL, "cowmem_clone: %s", strerror(errno));
			other->size = from_shared ? SHARED_PAGES * page : from->size;
			other->model = malloc(other->size);
			CHECK(other->model != NULL, "malloc");
			memcpy(other->model, from_shared ? shared_model : from->model,
			       other->size);
			atomic_fetch_add(&total_clones, 1);
			note_live(1);
		} else if (kind < 70) {
			/* write: a page, or a run across a page boundary */
			size_t offset = (size_t)test_rng_below(&rng, t->size);
			size_t length = 1 + (size_t)test_rng_below(&rng, page + page / 2);
			if (offset + length > t->size)
				length = t->size - offset;
			unsigned char *data = cowmem_data(t->region);
			test_rng_fill(&rng, data + offset, length);
			memcpy(t->model + offset, data + offset, length);
		} else if (kind < 90) {
			check(t, index, "a region in the random run");
		} else {
			drop(t);
		}
		atomic_fetch_add(&total_ops, 1);
	}
	for (int i = 0; i < SLOTS; i++)
		if (slots[i].region) {
			check(&slots[i], index, "a region at the end of the run");
			drop(&slots[i]);
		}
	return NULL;
}

static struct figures peak;

static void sample_peak(void)
{
	struct figures now = measure();
	if (now.fds > peak.fds) peak.fds = now.fds;
	if (now.maps > peak.maps) peak.maps = now.maps;
	if (now.tasks > peak.tasks) peak.tasks = now.tasks;
	if (now.region_fds > peak.region_fds) peak.region_fds = now.region_fds;
	if (now.region_maps > peak.region_maps) peak.region_maps = now.region_maps;
	if (now.shmem_kib > peak.shmem_kib) peak.shmem_kib = now.shmem_kib;
}

static void list_differences(const struct figures *before, const struct figures *after)
{
	if (after->fds != before->fds) {
		struct proc_fd fds[256];
		int n = proc_list_fds(0, fds, 256);
		printf("descriptors now:\n");
		for (int i = 0; i < n && i < 256; i++)
			printf("    fd %d -> %s\n", fds[i].fd, fds[i].target);
	}
	if (after->maps != before->maps) {
		printf("mappings now:\n");
		FILE *maps = fopen("/proc/self/maps", "re");
		char line[512];
		while (maps && fgets(line, sizeof line, maps))
			printf("    %s", line);
		if (maps)
			fclose(maps);
	}
}

static void run(void)
{
	/* First use: the persistent descriptors open, the threads start and
	 * stop once. A thread started first lets a sanitizer start its own
	 * background thread before anything is counted. */
	free_exited_stacks();
	struct figures fresh = measure();
	cowmem_region *warm = test_create_or_skip(4 * page);
	memset(cowmem_data(warm), 1, 4 * page);
	cowmem_region *warm_clone = cowmem_clone(warm);
	CHECK(warm_clone != NULL, "cowmem_clone: %s", strerror(errno));
	CHECK(((unsigned char *)cowmem_data(warm_clone))[page] == 1, "clone content");
	CHECK(cowmem_destroy(warm_clone) == 0 && cowmem_destroy(warm) == 0, "destroy");
	wait_for_tasks(fresh.tasks);
	struct figures before = measure();
	int tries;
	print_figures("before first use:", &fresh);
	print_figures("baseline (after a first create+clone):", &before);
	const char *backend = test_backend();
	int persistent = before.fds - fresh.fds;
	int expected_persistent = strcmp(backend, "memfd") == 0 ? 2 : 3;
	printf("persistent library descriptors: %d (expected %d for backend %s)\n",
	       persistent, expected_persistent, backend);
	CHECK(persistent == expected_persistent,
	      "the library keeps %d descriptors after its regions are gone, "
	      "expected %d", persistent, expected_persistent);
	CHECK(before.tasks == fresh.tasks, "%d threads after the first regions were "
	      "destroyed, %d before the library started: the library's threads did "
	      "not exit", before.tasks, fresh.tasks);
	CHECK(before.region_fds == 0 && before.region_maps == 0,
	      "region storage left after destroying the first regions");

	/* The run. */
	shared = cowmem_create(SHARED_PAGES * page);
	CHECK(shared != NULL, "cowmem_create: %s", strerror(errno));
	test_rng rng = { .state = test_substream(seed, 1000) };
	test_rng_fill(&rng, shared_model, SHARED_PAGES * page);
	for (size_t p = 2; p < SHARED_PAGES; p += 5)
		memset(shared_model + p * page, 0, page);
	memcpy(cowmem_data(shared), shared_model, SHARED_PAGES * page);
	note_live(1);

	pthread_t threads[64];
	peak = before;
	for (unsigned i = 0; i < thread_count; i++)
		CHECK(pthread_create(&threads[i], NULL, worker, (void *)(uintptr_t)i) == 0,
		      "pthread_create");
	/* Sample the peak while they run (every few hundred operations). */
	unsigned long total = ops_per_thread * thread_count;
	while (atomic_load(&total_ops) < total) {
		sample_peak();
		usleep(20000);
	}
	for (unsigned i = 0; i < thread_count; i++)
		pthread_join(threads[i], NULL);
	CHECK_BYTES(cowmem_data(shared), shared_model, SHARED_PAGES * page,
		    "the shared source after the run");
	CHECK(cowmem_destroy(shared) == 0, "destroy: %s", strerror(errno));
	note_live(-1);
	CHECK(atomic_load(&live_regions) == 0, "regions left: %ld",
	      atomic_load(&live_regions));
	print_figures("peak during the run (sampled):", &peak);

	struct figures after = settle(&before, &tries);
	print_figures("after destroying everything:", &after);
	printf("run: %u threads, %lu operations (%lu creates, %lu clones, %lu "
	       "destroys, at most %lu regions alive), settled after %d polls\n",
	       thread_count, atomic_load(&total_ops), atomic_load(&total_creates),
	       atomic_load(&total_clones), atomic_load(&total_destroys),
	       atomic_load(&max_live), tries);
	if (!judge_maps)
		printf("note: under a sanitizer or valgrind: the mapping count is not "
		       "judged\n");
	if (!same(&before, &after)) {
		list_differences(&before, &after);
		FAIL("the run leaked: descriptors %d -> %d, maps %d -> %d, threads %d -> "
		     "%d, region memfds %d -> %d, region maps %d -> %d, RssShmem %ld -> "
		     "%ld kB", before.fds, after.fds, before.maps, after.maps,
		     before.tasks, after.tasks, before.region_fds, after.region_fds,
		     before.region_maps, after.region_maps, before.shmem_kib,
		     after.shmem_kib);
	}
	CHECK(peak.region_fds > 0 && peak.tasks > before.tasks,
	      "the run did not seem to use regions and threads (peak memfds %d, "
	      "threads %d)", peak.region_fds, peak.tasks);
	printf("every descriptor, mapping, thread and shmem page came back\n");
}

/* Its process meets a library that has not started: the first use is
 * measured too. */
static const struct test_case cases[] = {
	TEST_CASE("nothing-left-behind", run),
};

int main(int argc, char **argv)
{
	uint64_t threads_option = thread_count;

	/* Run again with glibc's caches off (see the top of the file). */
	const char *tunables = getenv("GLIBC_TUNABLES");
	if (!tunables || !strstr(tunables, "glibc.pthread.stack_cache_size=0") ||
	    !strstr(tunables, "glibc.malloc.arena_max=1")) {
		char value[512];
		snprintf(value, sizeof value, "%s%s%s", tunables ? tunables : "",
			 tunables && *tunables ? ":" : "", TUNABLES);
		setenv("GLIBC_TUNABLES", value, 1);
		execv(self_path(), argv);
		fprintf(stderr, "note: cannot run again with GLIBC_TUNABLES (%s); "
			"going on without\n", strerror(errno));
	}

	const char *preload = getenv("LD_PRELOAD");
	if (preload && strstr(preload, "vgpreload"))
		judge_maps = false;
	page = test_page_size();
	seed = test_seed_init(argc, argv);
	test_option(argc, argv, "ops", "COWMEM_TEST_OPS", &ops_per_thread);
	test_option(argc, argv, "threads", "COWMEM_TEST_THREADS", &threads_option);
	thread_count = (unsigned)threads_option;
	CHECK(thread_count >= 1 && thread_count <= 64, "--threads between 1 and 64");
	CHECK(page <= 8192, "page size %zu is larger than this test's model", page);
	/*
	 * The heap the case's process grows after the fork would be a mapping
	 * of its own: the kernel does not merge it with the part inherited
	 * from this process (another anon_vma), and the count would move. So
	 * the heap grows here, before the fork, by more than the run needs,
	 * and never shrinks.
	 */
	mallopt(M_TOP_PAD, 256 << 20);
	mallopt(M_TRIM_THRESHOLD, INT_MAX);
	/* volatile: a compiler may drop a malloc whose block is never used. */
	void *volatile blocks[4];
	for (int i = 0; i < 4; i++)
		blocks[i] = malloc(100 << 10); /* below the mmap threshold: from the heap */
	for (int i = 0; i < 4; i++)
		free(blocks[i]);

	return test_main(argc, argv, cases, TEST_CASE_COUNT(cases));
}
