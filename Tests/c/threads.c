/*
 * threads.c - many threads faulting on the same regions at once, and many
 * threads creating, cloning and destroying at once.
 *
 * Part 1, one clone, many faulting threads. A populated source (some pages
 * never written, so they read as zero) is cloned; 4 threads then
 *   - all read the same unfilled pages at the same time, each in its own
 *     order, checking every byte;
 *   - each read-checks and writes its own random, disjoint set of pages
 *     (neighbouring pages belong to different threads, so one fill window is
 *     raced by several), whole pages, page-crossing runs and single bytes;
 *   - then all verify the whole clone and the (unchanged) source.
 * Each round uses a fresh clone; odd rounds use a clone of a clone whose
 * parent wrote some pages first, so faults resolve through two layers.
 *
 * Part 2, churn. Each thread repeatedly clones its own region, clones the
 * clone, writes all three, checks all three and destroys them in a random
 * order (sometimes replacing its region with a clone); meanwhile all threads
 * clone one shared region that nobody writes, change their clones and check
 * that the shared region never changes.
 *
 * Options: --seed=N (COWMEM_TEST_SEED), --threads=N (default 4),
 * --rounds=N (default 12).
 */
#include "test_util.h"

#include <pthread.h>
#include <stdbool.h>

#define SOURCE_PAGES 2048
#define SHARED_READ_PAGES 256
#define CHURN_PAGES 48
#define CHURN_ITERATIONS 150

static size_t page, size;
static unsigned thread_count = 4;
static uint64_t seed;
static pthread_barrier_t barrier;

/* ---- Part 1: one clone, many faulting threads -------------------------------- */

static cowmem_region *source;
static unsigned char *source_model;

struct round {
	unsigned number;
	cowmem_region *clone;          /* the region the threads fault on */
	unsigned char *clone_data;
	unsigned char *model;          /* what the clone must hold */
	unsigned char *owner;          /* page -> thread */
};

static struct round current;

static void check_range(const unsigned char *actual, const unsigned char *expected,
			size_t offset, size_t length, unsigned thread,
			const char *what)
{
	if (memcmp(actual + offset, expected + offset, length) != 0) {
		char text[160];
		snprintf(text, sizeof text, "round %u, thread %u: %s (bytes "
			 "%zu..%zu)", current.number, thread, what, offset,
			 offset + length);
		CHECK_BYTES(actual + offset, expected + offset, length, text);
	}
}

static void *fault_worker(void *argument)
{
	unsigned me = (unsigned)(uintptr_t)argument;
	test_rng rng = { test_substream(seed, (uint64_t)current.number << 16 | me) };
	unsigned char *data = current.clone_data;
	unsigned char *model = current.model;
	size_t pages = size / page;
	size_t order[SHARED_READ_PAGES];

	pthread_barrier_wait(&barrier);

	/* Everyone reads the same unfilled pages, each in its own order. */
	for (size_t i = 0; i < SHARED_READ_PAGES; i++)
		order[i] = i * (pages / SHARED_READ_PAGES) + (i % 2 ? 1 : 5);
	test_rng_shuffle(&rng, order, SHARED_READ_PAGES);
	for (size_t i = 0; i < SHARED_READ_PAGES; i++)
		check_range(data, model, order[i] * page, page, me,
			    "concurrent read of a shared unfilled page");

	pthread_barrier_wait(&barrier);

	/* Own pages: read-check some, write all kinds of ways. The model is
	 * only written on pages this thread owns. */
	for (size_t p = 0; p < pages; p++) {
		if (current.owner[p] != me)
			continue;
		size_t offset = p * page;
		switch (test_rng_below(&rng, 5)) {
		case 0: /* read only */
			check_range(data, model, offset, page, me, "read of own page");
			break;
		case 1: /* read, then write the whole page */
			check_range(data, model, offset, page, me, "read before write");
			test_rng_fill(&rng, model + offset, page);
			memcpy(data + offset, model + offset, page);
			break;
		case 2: /* write the whole page without reading */
			test_rng_fill(&rng, model + offset, page);
			memcpy(data + offset, model + offset, page);
			break;
		case 3: { /* one byte somewhere, then check the page */
			size_t at = offset + (size_t)test_rng_below(&rng, page);
			model[at] = (unsigned char)test_rng_next(&rng);
			data[at] = model[at];
			check_range(data, model, offset, page, me, "after a one-byte write");
			break;
		}
		case 4: { /* a run inside the page touching both ends */
			size_t at = (size_t)test_rng_below(&rng, page / 2);
			size_t length = page - at - (size_t)test_rng_below(&rng, page / 2);
			test_rng_fill(&rng, model + offset + at, length);
			memcpy(data + offset + at, model + offset + at, length);
			break;
		}
		}
	}

	pthread_barrier_wait(&barrier);

	/* Everyone verifies everything. */
	check_range(data, model, 0, size, me, "final check of the whole clone");
	check_range(cowmem_data(source), source_model, 0, size, me,
		    "source after its clone was written");
	return NULL;
}

static void run_fault_round(unsigned number)
{
	test_rng rng = { test_substream(seed, 0x70000 + number) };
	size_t pages = size / page;
	cowmem_region *parent = NULL;

	current.number = number;
	memcpy(current.model, source_model, size);
	if (number % 2 == 1) {
		/* Through two layers: a parent that wrote some pages first. */
		parent = cowmem_clone(source);
		CHECK(parent != NULL, "cowmem_clone: %s", strerror(errno));
		unsigned char *parent_data = cowmem_data(parent);
		for (size_t i = 0; i < pages / 8; i++) {
			size_t p = (size_t)test_rng_below(&rng, pages);
			test_rng_fill(&rng, current.model + p * page, page);
			memcpy(parent_data + p * page, current.model + p * page, page);
		}
		current.clone = cowmem_clone(parent);
	} else {
		current.clone = cowmem_clone(source);
	}
	CHECK(current.clone != NULL, "cowmem_clone: %s", strerror(errno));
	current.clone_data = cowmem_data(current.clone);
	for (size_t p = 0; p < pages; p++)
		current.owner[p] = (unsigned char)test_rng_below(&rng, thread_count);

	pthread_t threads[64];
	for (unsigned t = 0; t < thread_count; t++)
		CHECK(pthread_create(&threads[t], NULL, fault_worker,
				     (void *)(uintptr_t)t) == 0, "pthread_create");
	for (unsigned t = 0; t < thread_count; t++)
		CHECK(pthread_join(threads[t], NULL) == 0, "pthread_join");

	/* The parent destroyed first, while its clone lives on. */
	if (parent)
		CHECK(cowmem_destroy(parent) == 0, "destroy: %s", strerror(errno));
	check_range(current.clone_data, current.model, 0, size, 0,
		    "clone after its parent was destroyed");
	CHECK(cowmem_destroy(current.clone) == 0, "destroy: %s", strerror(errno));
}

static void part_one(unsigned rounds)
{
	size = SOURCE_PAGES * page;
	test_rng rng = { test_substream(seed, 0x5005ce) };
	source = cowmem_create(size);
	CHECK(source != NULL, "cowmem_create: %s", strerror(errno));
	source_model = calloc(1, size);
	current.model = malloc(size);
	current.owner = malloc(SOURCE_PAGES);
	CHECK(source_model && current.model && current.owner, "malloc");
	/* Every eighth page is never written and must read as zero. */
	for (size_t p = 0; p < SOURCE_PAGES; p++)
		if (p % 8 != 5)
			test_rng_fill(&rng, source_model + p * page, page);
	memcpy(cowmem_data(source), source_model, size);

	CHECK(pthread_barrier_init(&barrier, NULL, thread_count) == 0,
	      "pthread_barrier_init");
	for (unsigned r = 0; r < rounds; r++)
		run_fault_round(r);
	pthread_barrier_destroy(&barrier);

	check_range(cowmem_data(source), source_model, 0, size, 0,
		    "source at the end");
	CHECK(cowmem_destroy(source) == 0, "destroy: %s", strerror(errno));
	free(source_model);
	free(current.model);
	free(current.owner);
	printf("ok   %u threads faulting on one fresh clone, %u rounds of %d pages\n",
	       thread_count, rounds, SOURCE_PAGES);
	fflush(stdout);
}

/* ---- Part 2: churn ----------------------------------------------------------- */

static cowmem_region *shared_source;
static unsigned char *shared_model;
static size_t churn_size;

struct tracked {
	cowmem_region *region;
	unsigned char *model;
};

static void tracked_clone(struct tracked *to, const struct tracked *from)
{
	to->region = cowmem_clone(from->region);
	CHECK(to->region != NULL, "cowmem_clone: %s", strerror(errno));
	to->model = malloc(churn_size);
	CHECK(to->model != NULL, "malloc");
	memcpy(to->model, from->model, churn_size);
}

static void tracked_scribble(test_rng *rng, struct tracked *t)
{
	unsigned char *data = cowmem_data(t->region);
	for (int i = 0; i < 3; i++) {
		size_t offset = (size_t)test_rng_below(rng, churn_size - 2 * page);
		size_t length = 1 + (size_t)test_rng_below(rng, 2 * page);
		test_rng_fill(rng, t->model + offset, length);
		memcpy(data + offset, t->model + offset, length);
	}
}

static void tracked_check(const struct tracked *t, unsigned thread,
			  unsigned iteration, const char *what)
{
	const unsigned char *data = cowmem_data(t->region);
	if (memcmp(data, t->model, churn_size) != 0) {
		char text[128];
		snprintf(text, sizeof text, "churn thread %u iteration %u: %s",
			 thread, iteration, what);
		CHECK_BYTES(data, t->model, churn_size, text);
	}
}

static void tracked_destroy(struct tracked *t)
{
	CHECK(cowmem_destroy(t->region) == 0, "destroy: %s", strerror(errno));
	free(t->model);
	t->region = NULL;
	t->model = NULL;
}

static void *churn_worker(void *argument)
{
	unsigned me = (unsigned)(uintptr_t)argument;
	test_rng rng = { test_substream(seed, 0xc4c4000 + me) };
	struct tracked own = { cowmem_create(churn_size), calloc(1, churn_size) };
	CHECK(own.region && own.model, "create: %s", strerror(errno));
	tracked_scribble(&rng, &own);
	struct tracked shared = { shared_source, shared_model };

	pthread_barrier_wait(&barrier);
	for (unsigned i = 0; i < CHURN_ITERATIONS; i++) {
		struct tracked set[4];
		set[0] = own;
		tracked_clone(&set[1], &set[0]);
		tracked_scribble(&rng, &set[1]);
		tracked_clone(&set[2], &set[1]);
		tracked_clone(&set[3], &shared);
		for (int k = 0; k < 4; k++)
			tracked_scribble(&rng, &set[k]);
		for (int k = 0; k < 4; k++)
			tracked_check(&set[k], me, i, k == 0 ? "own region" :
				      k == 1 ? "its clone" : k == 2 ?
				      "the clone's clone" : "clone of the shared region");
		tracked_check(&shared, me, i, "the shared region");

		/* Destroy set[1..3] in a random order; now and then the
		 * region itself goes instead of its clone, which takes over. */
		size_t order[3] = { 1, 2, 3 };
		test_rng_shuffle(&rng, order, 3);
		bool replace = test_rng_below(&rng, 4) == 0;
		for (int k = 0; k < 3; k++) {
			size_t victim = order[k];
			if (replace && victim == 1)
				victim = 0;
			tracked_destroy(&set[victim]);
			for (int j = 0; j < 4; j++)
				if (set[j].region)
					tracked_check(&set[j], me, i,
						      "a survivor of a destroy");
		}
		own = replace ? set[1] : set[0];
	}
	tracked_check(&own, me, CHURN_ITERATIONS, "own region at the end");
	tracked_destroy(&own);
	return NULL;
}

static void part_two(void)
{
	churn_size = CHURN_PAGES * page;
	test_rng rng = { test_substream(seed, 0x5a5ed) };
	shared_source = cowmem_create(churn_size);
	shared_model = malloc(churn_size);
	CHECK(shared_source && shared_model, "create: %s", strerror(errno));
	test_rng_fill(&rng, shared_model, churn_size);
	memcpy(cowmem_data(shared_source), shared_model, churn_size);

	CHECK(pthread_barrier_init(&barrier, NULL, thread_count) == 0,
	      "pthread_barrier_init");
	pthread_t threads[64];
	for (unsigned t = 0; t < thread_count; t++)
		CHECK(pthread_create(&threads[t], NULL, churn_worker,
				     (void *)(uintptr_t)t) == 0, "pthread_create");
	for (unsigned t = 0; t < thread_count; t++)
		CHECK(pthread_join(threads[t], NULL) == 0, "pthread_join");
	pthread_barrier_destroy(&barrier);

	CHECK(memcmp(cowmem_data(shared_source), shared_model, churn_size) == 0,
	      "the shared region is unchanged");
	CHECK(cowmem_destroy(shared_source) == 0, "destroy: %s", strerror(errno));
	free(shared_model);
	printf("ok   %u threads cloning, writing and destroying at once, %d "
	       "iterations each\n", thread_count, CHURN_ITERATIONS);
}

int main(int argc, char **argv)
{
	page = test_page_size();
	seed = test_seed_init(argc, argv);
	uint64_t threads = 4, rounds = 12;
	test_option(argc, argv, "threads", "COWMEM_TEST_THREADS", &threads);
	test_option(argc, argv, "rounds", "COWMEM_TEST_ROUNDS", &rounds);
	CHECK(threads >= 1 && threads <= 64, "--threads between 1 and 64");
	thread_count = (unsigned)threads;
	cowmem_destroy(test_create_or_skip(page));

	part_one((unsigned)rounds);
	part_two();
	printf("threads: no mismatch\n");
	return TEST_EXIT_PASS;
}
