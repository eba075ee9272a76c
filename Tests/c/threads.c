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
 * Part 3, cloning a region while another thread writes it. That races as
 * memcpy would: every 8-byte word of the clone must hold a version the
 * writer had started by the end of the clone call and not yet overwritten
 * when the call began, nothing else; the clone must then stay exactly as it
 * was while the writer goes on, and the clone's own writes must never show
 * in the source.
 *
 * Part 4, the tree changing under faulting threads. Readers check every
 * page of a clone whose pages are still unfilled while another thread
 * destroys its parent (and grandparent), or clones it again and again and
 * checks those clones: faults must be served from wherever the pages live
 * at that moment.
 *
 * Each part is a case: one-clone-many-faulting, churn, clone-while-written,
 * tree-changes-under-readers.
 * Options: --seed=N (COWMEM_TEST_SEED), --threads=N (default 4),
 * --rounds=N (default 12).
 */
#include "harness.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
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
	/* Every eighth page is never written and must read as zero. The
	 * others are copied in page by page: a memcpy of the zeros too would
	 * write, and so allocate, the pages meant to stay holes. */
	for (size_t p = 0; p < SOURCE_PAGES; p++) {
		if (p % 8 == 5)
			continue;
		test_rng_fill(&rng, source_model + p * page, page);
		memcpy((unsigned char *)cowmem_data(source) + p * page,
		       source_model + p * page, page);
	}

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
	printf("%u threads faulting on one fresh clone, %u rounds of %d pages\n",
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
	printf("%u threads cloning, writing and destroying at once, %d "
	       "iterations each\n", thread_count, CHURN_ITERATIONS);
}

/* ---- Part 3: cloning a region while another thread writes it --------------- */

#define RACE_PAGES 256
#define RACE_CLONES 40
#define CLONE_TAG 0xc1c1c1c1ULL

static cowmem_region *raced;
static _Atomic unsigned started[RACE_PAGES], completed[RACE_PAGES];
static _Atomic unsigned long writes_done;
static atomic_bool stop_writing;

/* Version v of page p; version 0 is what the region held first. */
static uint64_t raced_word(unsigned version, size_t offset)
{
	return test_pattern_word(0x7ace0000ULL + version, offset);
}

static void *race_writer(void *argument)
{
	(void)argument;
	test_rng rng = { test_substream(seed, 0x3a1) };
	volatile uint64_t *words = cowmem_data(raced);
	while (!atomic_load(&stop_writing)) {
		size_t p = (size_t)test_rng_below(&rng, RACE_PAGES);
		unsigned version = atomic_load(&completed[p]) + 1;
		atomic_store(&started[p], version);
		size_t first = p * page / 8;
		for (size_t i = 0; i < page / 8; i++)
			words[first + i] = raced_word(version, (first + i) * 8);
		atomic_store(&completed[p], version);
		atomic_fetch_add(&writes_done, 1);
	}
	return NULL;
}

/* Every word of `data` holds a version of its page in [low[p], high[p]]. */
static void check_versions(const unsigned char *data, const unsigned *low,
			   const unsigned *high, const char *what, int clone)
{
	for (size_t p = 0; p < RACE_PAGES; p++) {
		for (size_t i = 0; i < page; i += 8) {
			size_t offset = p * page + i;
			uint64_t word;
			memcpy(&word, data + offset, 8);
			unsigned v = low[p];
			while (v <= high[p] && word != raced_word(v, offset))
				v++;
			if (v > high[p])
				FAIL("clone %d: %s: page %zu offset %zu holds "
				     "0x%016" PRIx64 ", which is no version of that "
				     "page between %u and %u", clone, what, p, i,
				     word, low[p], high[p]);
		}
	}
}

/* Copies memory that another thread may be writing, one whole 8-byte word
 * at a time. memcpy gives no such promise: glibc copies large blocks with
 * `rep movsb`, whose loads are single bytes architecturally, and here it
 * has been seen to return a word whose low five bytes came from one version
 * and the high three from the next. */
static void copy_words_racing(void *to, const void *from, size_t length)
{
	uint64_t *out = to;
	const uint64_t *in = from;
	for (size_t i = 0; i < length / 8; i++)
		out[i] = __atomic_load_n(&in[i], __ATOMIC_RELAXED);
}

static void wait_for_writes(unsigned long count)
{
	unsigned long target = atomic_load(&writes_done) + count;
	while (atomic_load(&writes_done) < target)
		sched_yield();
}

static void part_three(void)
{
	size_t raced_size = RACE_PAGES * page;
	raced = cowmem_create(raced_size);
	unsigned char *snapshot = malloc(raced_size);
	static unsigned low[RACE_PAGES], high[RACE_PAGES];
	CHECK(raced && snapshot, "create: %s", strerror(errno));
	uint64_t *words = cowmem_data(raced);
	for (size_t i = 0; i < raced_size / 8; i++)
		words[i] = raced_word(0, i * 8);

	pthread_t writer;
	CHECK(pthread_create(&writer, NULL, race_writer, NULL) == 0,
	      "pthread_create");
	for (int c = 0; c < RACE_CLONES; c++) {
		wait_for_writes(50);
		for (size_t p = 0; p < RACE_PAGES; p++)
			low[p] = atomic_load(&completed[p]);
		cowmem_region *clone = cowmem_clone(raced);
		for (size_t p = 0; p < RACE_PAGES; p++)
			high[p] = atomic_load(&started[p]);
		CHECK(clone != NULL, "cowmem_clone while written: %s",
		      strerror(errno));
		unsigned char *clone_data = cowmem_data(clone);

		/* Odd clones are read in full first, even ones only after
		 * the writer has gone on for a while. */
		if (c % 2)
			memcpy(snapshot, clone_data, raced_size);
		wait_for_writes(2 * RACE_PAGES);
		if (c % 2 == 0)
			memcpy(snapshot, clone_data, raced_size);
		check_versions(snapshot, low, high, "clone taken during writes", c);
		wait_for_writes(RACE_PAGES);
		if (memcmp(clone_data, snapshot, raced_size) != 0)
			CHECK_BYTES(clone_data, snapshot, raced_size,
				    "the clone while its source is written");

		/* The clone's own writes stay in the clone. */
		for (size_t p = 0; p < RACE_PAGES; p += 3)
			test_pattern_fill(clone_data + p * page, page, CLONE_TAG + c,
					  p * page);
		for (size_t p = 0; p < RACE_PAGES; p++)
			low[p] = atomic_load(&completed[p]);
		copy_words_racing(snapshot, cowmem_data(raced), raced_size);
		for (size_t p = 0; p < RACE_PAGES; p++)
			high[p] = atomic_load(&started[p]);
		check_versions(snapshot, low, high, "the source, after the clone "
			       "wrote", c);
		CHECK(cowmem_destroy(clone) == 0, "destroy: %s", strerror(errno));
	}
	atomic_store(&stop_writing, true);
	CHECK(pthread_join(writer, NULL) == 0, "pthread_join");

	/* Quiet now: the region holds exactly the last version of each page. */
	for (size_t p = 0; p < RACE_PAGES; p++)
		low[p] = high[p] = atomic_load(&completed[p]);
	check_versions(cowmem_data(raced), low, high, "the source at the end", -1);
	CHECK(cowmem_destroy(raced) == 0, "destroy: %s", strerror(errno));
	free(snapshot);
	printf("%d clones of a region taken while another thread wrote it "
	       "(%lu page writes)\n", RACE_CLONES, atomic_load(&writes_done));
}

/* ---- Part 4: the tree changing under faulting threads ----------------------- */

#define TREE_PAGES 512
#define TREE_ROUNDS 24

struct tree_round {
	cowmem_region *reader_target;   /* what the readers fault on */
	const unsigned char *model;     /* its content */
	unsigned number;
	_Atomic unsigned readers_started;
};

static struct tree_round tree;

static void *tree_reader(void *argument)
{
	unsigned me = (unsigned)(uintptr_t)argument;
	test_rng rng = { test_substream(seed, 0x7ee0000ULL + tree.number * 64 + me) };
	size_t tree_size = TREE_PAGES * page;
	const unsigned char *data = cowmem_data(tree.reader_target);
	size_t order[TREE_PAGES];
	for (size_t p = 0; p < TREE_PAGES; p++)
		order[p] = p;
	test_rng_shuffle(&rng, order, TREE_PAGES);
	atomic_fetch_add(&tree.readers_started, 1);
	for (size_t i = 0; i < TREE_PAGES; i++) {
		size_t offset = order[i] * page;
		if (memcmp(data + offset, tree.model + offset, page) != 0) {
			char what[128];
			snprintf(what, sizeof what, "tree round %u, reader %u, page "
				 "%zu", tree.number, me, order[i]);
			CHECK_BYTES(data + offset, tree.model + offset, page, what);
		}
	}
	if (memcmp(data, tree.model, tree_size) != 0)
		CHECK_BYTES(data, tree.model, tree_size, "tree reader, whole region");
	return NULL;
}

static void start_readers(pthread_t *readers, unsigned count)
{
	atomic_store(&tree.readers_started, 0);
	for (unsigned t = 0; t < count; t++)
		CHECK(pthread_create(&readers[t], NULL, tree_reader,
				     (void *)(uintptr_t)t) == 0, "pthread_create");
	/* Let at least one begin, so the change lands mid-read. */
	while (atomic_load(&tree.readers_started) == 0)
		sched_yield();
}

static void join_readers(pthread_t *readers, unsigned count)
{
	for (unsigned t = 0; t < count; t++)
		CHECK(pthread_join(readers[t], NULL) == 0, "pthread_join");
}

static void part_four(void)
{
	size_t tree_size = TREE_PAGES * page;
	unsigned readers = thread_count > 1 ? thread_count - 1 : 1;
	pthread_t threads[64];
	unsigned char *root_model = malloc(tree_size);
	unsigned char *middle_model = malloc(tree_size);
	unsigned char *leaf_model = malloc(tree_size);
	CHECK(root_model && middle_model && leaf_model, "malloc");

	for (unsigned r = 0; r < TREE_ROUNDS; r++) {
		test_rng rng = { test_substream(seed, 0x7ee5eedULL + r) };
		tree.number = r;

		/* root -> middle -> leaf, each written after its clone was
		 * taken, so every level holds pages the others must not see. */
		cowmem_region *root = cowmem_create(tree_size);
		CHECK(root != NULL, "create: %s", strerror(errno));
		test_rng_fill(&rng, root_model, tree_size);
		memcpy(cowmem_data(root), root_model, tree_size);
		cowmem_region *middle = cowmem_clone(root);
		CHECK(middle != NULL, "clone: %s", strerror(errno));
		memcpy(middle_model, root_model, tree_size);
		for (size_t p = 0; p < TREE_PAGES; p += 5) {
			test_rng_fill(&rng, middle_model + p * page, page);
			memcpy((unsigned char *)cowmem_data(middle) + p * page,
			       middle_model + p * page, page);
		}
		cowmem_region *leaf = cowmem_clone(middle);
		CHECK(leaf != NULL, "clone: %s", strerror(errno));
		memcpy(leaf_model, middle_model, tree_size);
		/* The ancestors change after the leaf was taken. */
		for (size_t p = 1; p < TREE_PAGES; p += 7)
			memset((unsigned char *)cowmem_data(root) + p * page, 0xa5, page);
		for (size_t p = 2; p < TREE_PAGES; p += 7)
			memset((unsigned char *)cowmem_data(middle) + p * page, 0x5a, page);

		tree.reader_target = leaf;
		tree.model = leaf_model;
		start_readers(threads, readers);
		if (r % 3 == 2) {
			/* Clone the leaf again and again while it is read. */
			for (int c = 0; c < 4; c++) {
				cowmem_region *again = cowmem_clone(leaf);
				CHECK(again != NULL, "clone while read: %s",
				      strerror(errno));
				if (memcmp(cowmem_data(again), leaf_model, tree_size))
					CHECK_BYTES(cowmem_data(again), leaf_model,
						    tree_size, "a clone taken while "
						    "its source was being read");
				CHECK(cowmem_destroy(again) == 0, "destroy: %s",
				      strerror(errno));
			}
			CHECK(cowmem_destroy(root) == 0, "destroy: %s", strerror(errno));
			CHECK(cowmem_destroy(middle) == 0, "destroy: %s",
			      strerror(errno));
		} else if (r % 3 == 1) {
			/* Middle first, then root, while the leaf is read. */
			CHECK(cowmem_destroy(middle) == 0, "destroy: %s",
			      strerror(errno));
			CHECK(cowmem_destroy(root) == 0, "destroy: %s", strerror(errno));
		} else {
			CHECK(cowmem_destroy(root) == 0, "destroy: %s", strerror(errno));
			CHECK(cowmem_destroy(middle) == 0, "destroy: %s",
			      strerror(errno));
		}
		join_readers(threads, readers);
		if (memcmp(cowmem_data(leaf), leaf_model, tree_size) != 0)
			CHECK_BYTES(cowmem_data(leaf), leaf_model, tree_size,
				    "the leaf after its ancestors were destroyed");
		CHECK(cowmem_destroy(leaf) == 0, "destroy: %s", strerror(errno));
	}
	free(root_model);
	free(middle_model);
	free(leaf_model);
	printf("%u readers faulting on a clone while its ancestors were "
	       "destroyed or it was cloned, %d rounds\n", readers, TREE_ROUNDS);
}

static uint64_t rounds = 12;

static void one_clone_many_faulting(void)
{
	cowmem_destroy(test_create_or_skip(page));
	part_one((unsigned)rounds);
}

static void churn(void)
{
	cowmem_destroy(test_create_or_skip(page));
	part_two();
}

static void clone_while_written(void)
{
	cowmem_destroy(test_create_or_skip(page));
	part_three();
}

static void tree_changes_under_readers(void)
{
	cowmem_destroy(test_create_or_skip(page));
	part_four();
}

static const struct test_case cases[] = {
	TEST_CASE("one-clone-many-faulting", one_clone_many_faulting),
	TEST_CASE("churn", churn),
	TEST_CASE("clone-while-written", clone_while_written),
	TEST_CASE("tree-changes-under-readers", tree_changes_under_readers),
};

int main(int argc, char **argv)
{
	page = test_page_size();
	seed = test_seed_init(argc, argv);
	uint64_t threads = 4;
	test_option(argc, argv, "threads", "COWMEM_TEST_THREADS", &threads);
	test_option(argc, argv, "rounds", "COWMEM_TEST_ROUNDS", &rounds);
	CHECK(threads >= 1 && threads <= 64, "--threads between 1 and 64");
	thread_count = (unsigned)threads;
	return test_main(argc, argv, cases, TEST_CASE_COUNT(cases));
}
