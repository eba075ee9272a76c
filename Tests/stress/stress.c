/*
 * stress.c - a bounded, seeded soak: many threads creating, cloning,
 * writing, reading, passing region memory to read(2) and write(2), and
 * destroying, all checked against plain memcpy models.
 *
 * Roles (thread i):
 *   0      snapshotter: now and then pauses the racers, clones the shared
 *          region S (and clones the clone), lets the racers go on, and
 *          checks that the snapshots keep exactly the bytes S had, while
 *          S changes under them; destroys old snapshots in random order;
 *          resets snapshots (whose origin versions S lends while the
 *          racers write S) and checks them against their origin, and that
 *          cowmem_dirty_pages lists every page that differs from it.
 *   1, 2   racers: write S at the same time, on the same pages; each owns
 *          every n-th 8-byte word of every page, so its model stays exact,
 *          and checks its words. After a clone, S lends its pages, so
 *          their writes race on write-protect faults of the same pages.
 *   3      faulter: clones a large populated region and reads every page of
 *          the fresh clone (every read a fault), sometimes a clone of the
 *          clone, then destroys them.
 *   4...   churners: their own regions: create, clone, clone of clones,
 *          random writes, write(2) from region memory into a pipe and
 *          read(2) from a pipe into region memory, checks and destroys.
 *
 * Every mismatch is counted (and the first few printed); the run prints
 * the operations, threads, duration, mismatches (must be 0) and the seed.
 * A watchdog (alarm) fails a run that hangs.
 *
 * Options: --seconds=N (STRESS_SECONDS, default 120), --threads=N (default
 * 6, at least 4), --seed=N (COWMEM_TEST_SEED).
 */
#include "test_util.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#define S_PAGES 16
#define RACERS 2
#define BIG_PAGES 2048
#define CHURN_SLOTS 8
#define CHURN_MAX_PAGES 32
#define SNAPSHOTS 6

static size_t page;
static uint64_t seed;
static double deadline;
static atomic_ulong mismatches, printed;
static atomic_ulong ops_by_role[5];
static const char *const role_names[] = { "snapshot", "race", "fault", "churn",
					  "syscall" };
enum { ROLE_SNAPSHOT, ROLE_RACE, ROLE_FAULT, ROLE_CHURN, ROLE_SYSCALL };

static double now_seconds(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static bool time_left(void)
{
	return now_seconds() < deadline;
}

/* Compares; on a difference counts a mismatch, prints the first ones, and
 * returns false (the caller resynchronises its model). */
static bool same_bytes(const void *actual, const void *expected, size_t length,
		       const char *what)
{
	if (memcmp(actual, expected, length) == 0)
		return true;
	const unsigned char *a = actual, *e = expected;
	size_t at = 0;
	while (a[at] == e[at])
		at++;
	atomic_fetch_add(&mismatches, 1);
	if (atomic_fetch_add(&printed, 1) < 10) {
		flockfile(stderr);
		fprintf(stderr, "MISMATCH in %s at offset %zu (page %zu + %zu): expected "
			"0x%02x, actual 0x%02x (seed %" PRIu64 ")\n", what, at, at / page,
			at % page, e[at], a[at], seed);
		funlockfile(stderr);
	}
	return false;
}

/* ---- The shared region and its racers ------------------------------------ */

static cowmem_region *shared;
static unsigned char *shared_model; /* each racer writes only its own words */
static pthread_rwlock_t pause_lock;  /* racers: read; snapshotter: write */

static bool owns_word(unsigned racer, size_t offset)
{
	return (offset / 8) % RACERS == racer;
}

static void *racer(void *argument)
{
	unsigned racer_index = (unsigned)(uintptr_t)argument;
	test_rng rng = { .state = test_substream(seed, 100 + racer_index) };
	unsigned char *data = cowmem_data(shared);

	while (time_left()) {
		pthread_rwlock_rdlock(&pause_lock);
		/* A burst: one word per page, all pages, so the racers meet
		 * on every page. */
		for (int burst = 0; burst < 4; burst++)
			for (size_t p = 0; p < S_PAGES; p++) {
				size_t word = (size_t)test_rng_below(&rng, page / 8 / RACERS);
				size_t offset = p * page + (word * RACERS + racer_index) * 8;
				uint64_t value = test_rng_next(&rng);
				memcpy(data + offset, &value, 8);
				memcpy(shared_model + offset, &value, 8);
			}
		/* Check own words of one page. */
		size_t p = (size_t)test_rng_below(&rng, S_PAGES);
		for (size_t offset = p * page; offset < (p + 1) * page; offset += 8) {
			if (!owns_word(racer_index, offset))
				continue;
			if (!same_bytes(data + offset, shared_model + offset, 8,
					"a racer's own word of the shared region"))
				memcpy(shared_model + offset, data + offset, 8);
		}
		pthread_rwlock_unlock(&pause_lock);
		atomic_fetch_add(&ops_by_role[ROLE_RACE], 1);
	}
	return NULL;
}

struct snapshot {
	cowmem_region *region;
	unsigned char *model;
	unsigned char *origin; /* its bytes when it was made */
};

static void *snapshotter(void *unused)
{
	(void)unused;
	test_rng rng = { .state = test_substream(seed, 200) };
	struct snapshot snaps[SNAPSHOTS] = { { 0 } };
	const size_t size = S_PAGES * page;

	while (time_left()) {
		struct snapshot *s = &snaps[test_rng_below(&rng, SNAPSHOTS)];
		if (s->region) {
			if (!same_bytes(cowmem_data(s->region), s->model, size,
					"a snapshot of the shared region"))
				memcpy(s->model, cowmem_data(s->region), size);
			CHECK(cowmem_destroy(s->region) == 0, "destroy: %s", strerror(errno));
			free(s->model);
			free(s->origin);
			s->region = NULL;
		}
		s->model = malloc(size);
		s->origin = malloc(size);
		CHECK(s->model != NULL && s->origin != NULL, "malloc");
		/* Pause the racers: the clone then has exactly the model. */
		pthread_rwlock_wrlock(&pause_lock);
		unsigned pick = (unsigned)test_rng_below(&rng, 4);
		struct snapshot *from = &snaps[test_rng_below(&rng, SNAPSHOTS)];
		if (pick == 0 && from->region && from != s) {
			/* A clone of a snapshot (a clone of a clone). */
			pthread_rwlock_unlock(&pause_lock);
			s->region = cowmem_clone(from->region);
			CHECK(s->region != NULL, "cowmem_clone: %s", strerror(errno));
			memcpy(s->model, from->model, size);
		} else {
			s->region = cowmem_clone(shared);
			CHECK(s->region != NULL, "cowmem_clone: %s", strerror(errno));
			memcpy(s->model, shared_model, size);
			pthread_rwlock_unlock(&pause_lock);
		}
		memcpy(s->origin, s->model, size);
		/* The racers write S now; the snapshot must not change. Write
		 * some of the snapshot itself too. */
		if (test_rng_below(&rng, 2)) {
			size_t offset = (size_t)test_rng_below(&rng, size - 64);
			test_rng_fill(&rng, (unsigned char *)cowmem_data(s->region) + offset, 64);
			memcpy(s->model + offset,
			       (unsigned char *)cowmem_data(s->region) + offset, 64);
		}
		/* Roll another snapshot back while the racers write S, which
		 * may be lending it the versions it started from. */
		struct snapshot *back = &snaps[test_rng_below(&rng, SNAPSHOTS)];
		if (back->region && back != s && test_rng_below(&rng, 3) == 0) {
			size_t dirty[S_PAGES];
			ssize_t n = cowmem_dirty_pages(back->region, dirty, S_PAGES);
			CHECK(n >= 0 && n <= S_PAGES, "cowmem_dirty_pages: %zd, %s", n,
			      strerror(errno));
			for (size_t p = 0, i = 0; p < S_PAGES; p++) {
				bool listed = i < (size_t)n && dirty[i] == p;
				i += listed;
				if (!listed && memcmp(back->model + p * page, back->origin + p * page,
						      page) != 0) {
					atomic_fetch_add(&mismatches, 1);
					fprintf(stderr, "page %zu of a snapshot differs from its "
						"origin but is not listed (seed %" PRIu64 ")\n", p, seed);
				}
			}
			CHECK(cowmem_reset(back->region) == 0, "cowmem_reset: %s", strerror(errno));
			memcpy(back->model, back->origin, size);
		}
		for (int i = 0; i < SNAPSHOTS; i++)
			if (snaps[i].region &&
			    !same_bytes(cowmem_data(snaps[i].region), snaps[i].model, size,
					"a snapshot while the racers write the source"))
				memcpy(snaps[i].model, cowmem_data(snaps[i].region), size);
		atomic_fetch_add(&ops_by_role[ROLE_SNAPSHOT], 1);
	}
	for (int i = 0; i < SNAPSHOTS; i++)
		if (snaps[i].region) {
			same_bytes(cowmem_data(snaps[i].region), snaps[i].model, size,
				   "a snapshot at the end");
			CHECK(cowmem_destroy(snaps[i].region) == 0, "destroy: %s",
			      strerror(errno));
			free(snaps[i].model);
			free(snaps[i].origin);
		}
	return NULL;
}

/* ---- Fault-heavy reading of fresh clones ---------------------------------- */

static cowmem_region *big;
static unsigned char *big_model;

static void *faulter(void *unused)
{
	(void)unused;
	test_rng rng = { .state = test_substream(seed, 300) };

	while (time_left()) {
		cowmem_region *clone = cowmem_clone(big);
		CHECK(clone != NULL, "cowmem_clone: %s", strerror(errno));
		cowmem_region *read_from = clone, *second = NULL;
		if (test_rng_below(&rng, 3) == 0) {
			second = cowmem_clone(clone);
			CHECK(second != NULL, "cowmem_clone: %s", strerror(errno));
			read_from = second;
		}
		/* Read in a random direction, page by page. */
		const unsigned char *data = cowmem_data(read_from);
		bool backwards = test_rng_below(&rng, 2);
		for (size_t i = 0; i < BIG_PAGES; i++) {
			size_t p = backwards ? BIG_PAGES - 1 - i : i;
			if (!same_bytes(data + p * page, big_model + p * page, page,
					"a fresh clone read page by page"))
				break;
		}
		/* Writes to the clone must not reach the source. */
		memset(cowmem_data(clone), 0xc3, page);
		if (second)
			CHECK(cowmem_destroy(second) == 0, "destroy: %s", strerror(errno));
		CHECK(cowmem_destroy(clone) == 0, "destroy: %s", strerror(errno));
		if (!same_bytes(cowmem_data(big), big_model, page,
				"the big source's first page"))
			memcpy(big_model, cowmem_data(big), page);
		atomic_fetch_add(&ops_by_role[ROLE_FAULT], 1);
	}
	return NULL;
}

/* ---- Churners: own regions, system calls ---------------------------------- */

struct tracked {
	cowmem_region *region;
	unsigned char *model;
	size_t size;
};

static void tracked_drop(struct tracked *t)
{
	CHECK(cowmem_destroy(t->region) == 0, "destroy: %s", strerror(errno));
	free(t->model);
	t->region = NULL;
}

static void tracked_check(struct tracked *t, const char *what)
{
	if (!same_bytes(cowmem_data(t->region), t->model, t->size, what))
		memcpy(t->model, cowmem_data(t->region), t->size);
}

/* write(2) from region memory into a pipe, read back, compare; or read(2)
 * from a pipe into region memory. */
static void syscall_op(test_rng *rng, struct tracked *t, int pipe_fds[2],
		       unsigned char *buffer)
{
	size_t length = 1 + (size_t)test_rng_below(rng, 4 * page);
	if (length > t->size)
		length = t->size;
	size_t offset = (size_t)test_rng_below(rng, t->size - length + 1);
	unsigned char *data = cowmem_data(t->region);
	bool into_region = test_rng_below(rng, 2);

	if (test_syscalls_need_prefault())
		CHECK(cowmem_prefault(t->region, offset, length, into_region) == 0,
		      "cowmem_prefault: %s", strerror(errno));
	if (into_region) {
		test_rng_fill(rng, buffer, length);
		CHECK(write(pipe_fds[1], buffer, length) == (ssize_t)length,
		      "write to pipe: %s", strerror(errno));
		size_t got = 0;
		while (got < length) {
			ssize_t n = read(pipe_fds[0], data + offset + got, length - got);
			CHECK(n > 0, "read(2) into region memory: %s", strerror(errno));
			got += (size_t)n;
		}
		memcpy(t->model + offset, buffer, length);
	} else {
		ssize_t n = write(pipe_fds[1], data + offset, length);
		CHECK(n == (ssize_t)length, "write(2) from region memory: %zd, %s", n,
		      strerror(errno));
		size_t got = 0;
		while (got < length) {
			n = read(pipe_fds[0], buffer + got, length - got);
			CHECK(n > 0, "read from pipe: %s", strerror(errno));
			got += (size_t)n;
		}
		same_bytes(buffer, t->model + offset, length,
			   "bytes write(2) took from region memory");
	}
	atomic_fetch_add(&ops_by_role[ROLE_SYSCALL], 1);
}

static void *churner(void *argument)
{
	unsigned index = (unsigned)(uintptr_t)argument;
	test_rng rng = { .state = test_substream(seed, 400 + index) };
	struct tracked slots[CHURN_SLOTS] = { { 0 } };
	int pipe_fds[2];
	unsigned char *buffer = malloc(4 * page);

	CHECK(buffer != NULL, "malloc");
	CHECK(pipe2(pipe_fds, O_CLOEXEC) == 0, "pipe2: %s", strerror(errno));
	while (time_left()) {
		struct tracked *t = &slots[test_rng_below(&rng, CHURN_SLOTS)];
		struct tracked *o = &slots[test_rng_below(&rng, CHURN_SLOTS)];
		unsigned kind = (unsigned)test_rng_below(&rng, 100);

		if (!t->region || kind < 6) {
			if (t->region)
				tracked_drop(t);
			t->size = (1 + (size_t)test_rng_below(&rng, CHURN_MAX_PAGES)) * page;
			t->region = cowmem_create(t->size);
			CHECK(t->region != NULL, "cowmem_create: %s", strerror(errno));
			t->model = calloc(1, t->size);
			CHECK(t->model != NULL, "calloc");
		} else if (kind < 25 && o != t) {
			if (o->region)
				tracked_drop(o);
			o->region = cowmem_clone(t->region);
			CHECK(o->region != NULL, "cowmem_clone: %s", strerror(errno));
			o->size = t->size;
			o->model = malloc(o->size);
			CHECK(o->model != NULL, "malloc");
			memcpy(o->model, t->model, o->size);
		} else if (kind < 55) {
			size_t offset = (size_t)test_rng_below(&rng, t->size);
			size_t length = 1 + (size_t)test_rng_below(&rng, 2 * page);
			if (offset + length > t->size)
				length = t->size - offset;
			unsigned char *data = cowmem_data(t->region);
			test_rng_fill(&rng, data + offset, length);
			memcpy(t->model + offset, data + offset, length);
		} else if (kind < 75) {
			syscall_op(&rng, t, pipe_fds, buffer);
			atomic_fetch_add(&ops_by_role[ROLE_SYSCALL], 1);
			continue;
		} else if (kind < 95) {
			tracked_check(t, "a churner's region");
		} else {
			tracked_check(t, "a churner's region before destroy");
			tracked_drop(t);
		}
		atomic_fetch_add(&ops_by_role[ROLE_CHURN], 1);
	}
	for (int i = 0; i < CHURN_SLOTS; i++)
		if (slots[i].region) {
			tracked_check(&slots[i], "a churner's region at the end");
			tracked_drop(&slots[i]);
		}
	close(pipe_fds[0]);
	close(pipe_fds[1]);
	free(buffer);
	return NULL;
}

int main(int argc, char **argv)
{
	uint64_t seconds = 120, threads = 6;
	pthread_rwlockattr_t attr;

	page = test_page_size();
	seed = test_seed_init(argc, argv);
	test_option(argc, argv, "seconds", "STRESS_SECONDS", &seconds);
	test_option(argc, argv, "threads", "STRESS_THREADS", &threads);
	CHECK(threads >= 4 && threads <= 64, "--threads between 4 and 64");
	CHECK(seconds >= 1, "--seconds at least 1");
	/* The watchdog: a hang fails the run. */
	alarm((unsigned)seconds + 180);

	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&pause_lock, &attr);

	test_rng rng = { .state = test_substream(seed, 1) };
	shared = test_create_or_skip(S_PAGES * page);
	shared_model = calloc(1, S_PAGES * page);
	big = cowmem_create(BIG_PAGES * page);
	big_model = malloc(BIG_PAGES * page);
	CHECK(shared_model && big && big_model, "setup: %s", strerror(errno));
	test_rng_fill(&rng, big_model, BIG_PAGES * page);
	for (size_t p = 0; p < BIG_PAGES; p += 4)
		memset(big_model + p * page, 0, page); /* holes */
	memcpy(cowmem_data(big), big_model, BIG_PAGES * page);
	/* Freeze big, then write some pages: every clone of it gets lent pages. */
	cowmem_region *keep = cowmem_clone(big);
	CHECK(keep != NULL, "cowmem_clone: %s", strerror(errno));
	for (size_t p = 1; p < BIG_PAGES; p += 97) {
		test_rng_fill(&rng, big_model + p * page, page);
		memcpy((unsigned char *)cowmem_data(big) + p * page, big_model + p * page, page);
	}

	pthread_t workers[64];
	double start = now_seconds();
	deadline = start + (double)seconds;
	for (unsigned i = 0; i < threads; i++) {
		void *(*fn)(void *) = i == 0 ? snapshotter : i <= RACERS ? racer
				    : i == RACERS + 1 ? faulter : churner;
		void *arg = (void *)(uintptr_t)(i == 0 ? 0 : i <= RACERS ? i - 1 : i);
		CHECK(pthread_create(&workers[i], NULL, fn, arg) == 0, "pthread_create");
	}
	for (unsigned i = 0; i < threads; i++)
		pthread_join(workers[i], NULL);
	double duration = now_seconds() - start;

	/* Everything is quiet: S as a whole must equal its model now. */
	same_bytes(cowmem_data(shared), shared_model, S_PAGES * page,
		   "the shared region at the end");
	same_bytes(cowmem_data(big), big_model, BIG_PAGES * page, "the big source at the end");
	CHECK(cowmem_destroy(keep) == 0 && cowmem_destroy(big) == 0 &&
	      cowmem_destroy(shared) == 0, "destroy: %s", strerror(errno));

	unsigned long total = 0;
	for (int r = 0; r < 5; r++)
		total += atomic_load(&ops_by_role[r]);
	printf("stress: backend=%s threads=%" PRIu64 " (1 snapshot, %d racing, 1 "
	       "fault, %" PRIu64 " churn) duration=%.1fs\n", test_backend(), threads,
	       RACERS, threads - RACERS - 2, duration);
	printf("stress: operations=%lu (", total);
	for (int r = 0; r < 5; r++)
		printf("%s%s %lu", r ? ", " : "", role_names[r], atomic_load(&ops_by_role[r]));
	printf(")\n");
	printf("stress: mismatches=%lu seed=%" PRIu64 "\n", atomic_load(&mismatches), seed);
	fflush(stdout);
	return atomic_load(&mismatches) ? TEST_EXIT_FAIL : TEST_EXIT_PASS;
}
