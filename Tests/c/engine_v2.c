/*
 * engine_v2.c - the loops the engine exists for, against memcpy models.
 *
 *   ring        change a few pages, clone, keep the last 8 clones, destroy
 *               the oldest; hundreds of iterations, every clone checked in
 *               full against its model now and then and at the end;
 *   newest      the same, but the newest clone becomes the working copy;
 *   chain       clones of clones, each writing one page, 300 deep; every
 *               level checked, then destroyed root first;
 *   old-reads   snapshots read, written and reset after the head moved on
 *               many generations (their pages come from the store);
 *   reclaim     the store holds only what live snapshots still see: after
 *               the ring it holds at most keep x pages-per-iteration
 *               versions, and nothing once every region is gone;
 *   threads     two threads run the ring at once on their own regions;
 *   rebase      without folds: clones of a working region, 8 kept; the
 *               region rebases, no clone writes in more than the threshold
 *               of overlay pages, and the region, its snapshots, its dirty
 *               pages, a save and load, a copy onto it and a reset all
 *               match their models (skips where clones fold);
 *   mapped-notes  pages a reader maps stay its own when they change, after
 *               another reader that mapped pages was destroyed;
 *   reading-head  a head that reads all of its region between clones keeps
 *               those pages mapped across each fold (pagemap shows them
 *               present), and every snapshot keeps its bytes.
 *   early-copies  the pre-copier copies old versions out between clones
 *               (driven to its end by the test), then the working copy
 *               writes more, snapshots are dropped, the working copy is
 *               sometimes reset or replaced by its newest clone: the folds
 *               keep the early copies, and every snapshot keeps its bytes.
 *
 * The cases about folds need them (a kernel with userfaultfd MINOR faults
 * on shmem and MREMAP_DONTUNMAP, /proc/self/pagemap and /proc/self/mem);
 * elsewhere they skip and say why. The memcpy loops run everywhere; the
 * tests run without folds too (make check-c-without-folds).
 * Options: --seed=N (COWMEM_TEST_SEED), --iterations=N
 * (COWMEM_TEST_ITERATIONS, default 240).
 */
#include "harness.h"

#include <pthread.h>
#include <stdbool.h>

#include "engine.h"

#define KEEP 8

static size_t page_size;
static uint64_t iterations = 240;

/* A region and the bytes it must hold. */
struct modelled {
	cowmem_region *region;
	unsigned char *model;
};

static void modelled_check(const struct modelled *m, size_t size, const char *what)
{
	CHECK_BYTES(cowmem_data(m->region), m->model, size, what);
}

static void modelled_free(struct modelled *m)
{
	if (!m->region)
		return;
	CHECK(cowmem_destroy(m->region) == 0, "destroy: %s", strerror(errno));
	free(m->model);
	m->region = NULL;
	m->model = NULL;
}

static struct modelled modelled_clone(const struct modelled *src, size_t size)
{
	struct modelled m = { cowmem_clone(src->region), malloc(size) };
	CHECK(m.region && m.model, "clone: %s", strerror(errno));
	memcpy(m.model, src->model, size);
	return m;
}

/* Writes a few random bytes into k random pages of m (and its model). */
static void change_pages(test_rng *rng, struct modelled *m, size_t pages, size_t k)
{
	unsigned char *data = cowmem_data(m->region);
	for (size_t i = 0; i < k; i++) {
		size_t page = test_rng_below(rng, pages);
		size_t offset = test_rng_below(rng, page_size - 8);
		test_rng_fill(rng, data + page * page_size + offset, 8);
		memcpy(m->model + page * page_size + offset, data + page * page_size + offset, 8);
	}
}

/* The change-a-little, snapshot, repeat loop; `newest` makes the newest
 * clone the working copy. Returns the most store slots in use at the end
 * of an iteration. */
static size_t loop(test_rng *rng, size_t pages, size_t k, bool newest)
{
	size_t size = pages * page_size, most_used = 0;
	struct modelled work = { cowmem_create(size), malloc(size) };
	struct modelled ring[KEEP] = { { 0 } };

	CHECK(work.region && work.model, "create: %s", strerror(errno));
	test_rng_fill(rng, work.model, size);
	memcpy(cowmem_data(work.region), work.model, size);
	for (uint64_t i = 0; i < iterations; i++) {
		change_pages(rng, &work, pages, k);
		struct modelled snapshot = modelled_clone(&work, size);
		if (newest) {
			struct modelled old = work;
			work = snapshot;
			snapshot = old;
		}
		modelled_free(&ring[i % KEEP]);
		ring[i % KEEP] = snapshot;
		if (i % 16 == 15) {
			for (size_t j = 0; j < KEEP; j++)
				if (ring[j].region)
					modelled_check(&ring[j], size, "a kept snapshot");
			modelled_check(&work, size, "the working copy");
		}
		pthread_mutex_lock(&cowmem__engine.lock);
		size_t used = cowmem__store_used();
		pthread_mutex_unlock(&cowmem__engine.lock);
		if (used > most_used)
			most_used = used;
	}
	for (size_t j = 0; j < KEEP; j++) {
		modelled_check(&ring[j], size, "a kept snapshot at the end");
		modelled_free(&ring[j]);
	}
	modelled_check(&work, size, "the working copy at the end");
	modelled_free(&work);
	return most_used;
}

static void test_ring(test_rng *rng, bool newest)
{
	const size_t pages = 512, k = 12;
	size_t most = loop(rng, pages, k, newest);
	/* Each kept snapshot needs at most the versions the k writes of the
	 * iterations after it replaced: KEEP x k at most (plus the ones the
	 * working copy's own origin still sees, in the newest-clone loop). */
	size_t bound = (KEEP + 1) * k + (newest ? k : 0);
	/* Without folds the overlays hold every page changed since the layer
	 * froze, each version once, shared by the snapshots that see it. */
	if (!test_feature_in_use("folds"))
		bound += pages;
	CHECK(most <= bound, "%s: the store held %zu versions, more than %zu", newest ? "newest" : "ring",
	      most, bound);
	pthread_mutex_lock(&cowmem__engine.lock);
	size_t left = cowmem__store_used();
	pthread_mutex_unlock(&cowmem__engine.lock);
	CHECK(left == 0, "%zu store versions left once every region is gone", left);
	printf("%s: %" PRIu64 " iterations of %zu pages changed in %zu, store at most %zu "
	       "versions\n", newest ? "newest clone as working copy" : "ring of clones", iterations,
	       k, pages, most);
}

static void test_chain(test_rng *rng)
{
	enum { DEPTH = 300 };
	const size_t pages = 64, size = pages * page_size;
	struct modelled *level = calloc(DEPTH, sizeof *level);

	CHECK(level, "out of memory");
	level[0].region = cowmem_create(size);
	level[0].model = calloc(1, size);
	CHECK(level[0].region && level[0].model, "create: %s", strerror(errno));
	for (size_t d = 1; d < DEPTH; d++) {
		level[d] = modelled_clone(&level[d - 1], size);
		change_pages(rng, &level[d], pages, 1);
	}
	for (size_t d = 0; d < DEPTH; d++)
		modelled_check(&level[d], size, "a level of the chain");
	for (size_t d = 0; d < DEPTH; d++) {
		modelled_free(&level[d]);
		if (d % 50 == 0)
			for (size_t e = d + 1; e < DEPTH; e++)
				modelled_check(&level[e], size, "a level after the ones before it went");
	}
	free(level);
	printf("chain of %d clones of clones, each writing a page, destroyed root first\n",
	       DEPTH);
}

/* Old snapshots are read, written, reset and listed after the working
 * region moved on: their pages come from old versions. */
static void test_old_reads(test_rng *rng)
{
	const size_t pages = 128, size = pages * page_size;
	struct modelled work = { cowmem_create(size), malloc(size) };
	struct modelled old[4];

	CHECK(work.region && work.model, "create: %s", strerror(errno));
	test_rng_fill(rng, work.model, size);
	memcpy(cowmem_data(work.region), work.model, size);
	for (size_t i = 0; i < 4; i++) {
		old[i] = modelled_clone(&work, size);
		for (size_t j = 0; j < 20; j++) {
			change_pages(rng, &work, pages, 8);
			struct modelled t = modelled_clone(&work, size);
			modelled_free(&t);
		}
	}
	for (size_t i = 0; i < 4; i++) {
		modelled_check(&old[i], size, "an old snapshot");
		unsigned char *origin = malloc(size);
		CHECK(origin, "out of memory");
		memcpy(origin, old[i].model, size);
		change_pages(rng, &old[i], pages, 5);
		ssize_t n = cowmem_dirty_pages(old[i].region, NULL, 0);
		CHECK(n >= 1 && n <= 5, "an old snapshot that wrote 5 pages lists %zd", n);
		CHECK(cowmem_reset(old[i].region) == 0, "reset: %s", strerror(errno));
		memcpy(old[i].model, origin, size);
		modelled_check(&old[i], size, "an old snapshot after reset");
		free(origin);
	}
	modelled_check(&work, size, "the working region");
	ssize_t n = cowmem_dirty_pages(work.region, NULL, 0);
	CHECK(n > 0, "the working region lists no change: %zd", n);
	for (size_t i = 0; i < 4; i++)
		modelled_free(&old[i]);
	modelled_free(&work);
	printf("old snapshots read, written, listed and reset after 80 captures\n");
}

static void *ring_thread(void *arg)
{
	test_rng *rng = arg;
	(void)loop(rng, 256, 8, test_rng_below(rng, 2) == 0);
	return NULL;
}

static void test_threads(uint64_t seed)
{
	pthread_t ids[2];
	test_rng rngs[2];

	for (int t = 0; t < 2; t++) {
		rngs[t].state = test_substream(seed, 100 + (uint64_t)t);
		CHECK(pthread_create(&ids[t], NULL, ring_thread, &rngs[t]) == 0, "pthread_create");
	}
	for (int t = 0; t < 2; t++)
		pthread_join(ids[t], NULL);
	printf("two threads, each running the loop on its own regions\n");
}

/* The layer's notes of the pages readers map: a read of an old snapshot
 * maps a window of layer pages, and a page in it must be punched, not
 * overwritten, when it changes while that reader lives; the notes are
 * cleared only when no region that made them lives. Here two readers map
 * windows, one is destroyed, and pages in the survivor's window change:
 * it must keep the old bytes. Then the last one goes and a page changes
 * in place; a snapshot that did not map it still reads its old bytes. */
/* Writes a whole page of m (and its model) with a pattern tagged `tag`. */
static void modelled_write(struct modelled *m, size_t page, uint64_t tag)
{
	unsigned char *at = (unsigned char *)cowmem_data(m->region) + page * page_size;
	test_pattern_fill(at, page_size, tag, page * page_size);
	memcpy(m->model + page * page_size, at, page_size);
}

static void mapped_notes(void)
{
	const size_t pages = 1024, size = pages * page_size;
	struct modelled src = { cowmem_create(size), malloc(size) };
	CHECK(src.region && src.model, "create: %s", strerror(errno));
	test_pattern_fill(cowmem_data(src.region), size, 1, 0);
	memcpy(src.model, cowmem_data(src.region), size);
	struct modelled a = modelled_clone(&src, size);
	struct modelled b = modelled_clone(&src, size);
	/* A fold: a and b stop being fresh; their reads go to the server. */
	modelled_write(&src, 3, 2);
	struct modelled c = modelled_clone(&src, size);
	CHECK(((volatile unsigned char *)cowmem_data(a.region))[100 * page_size] ==
	      a.model[100 * page_size], "a's page 100");
	CHECK(((volatile unsigned char *)cowmem_data(b.region))[200 * page_size] ==
	      b.model[200 * page_size], "b's page 200");
	modelled_free(&a);
	/* b still maps the window after page 200 (and a's window is gone). */
	modelled_write(&src, 101, 3);
	modelled_write(&src, 201, 3);
	struct modelled d = modelled_clone(&src, size);
	modelled_check(&b, size, "a reader whose mapped page changed");
	modelled_check(&c, size, "the snapshot before the change");
	modelled_check(&d, size, "the snapshot after the change");
	modelled_free(&b);
	modelled_write(&src, 202, 4);
	struct modelled e = modelled_clone(&src, size);
	modelled_check(&c, size, "an old snapshot after the last mapper went");
	modelled_check(&d, size, "the previous snapshot after the last mapper went");
	modelled_check(&e, size, "the newest snapshot");
	modelled_check(&src, size, "the source");
	modelled_free(&c);
	modelled_free(&d);
	modelled_free(&e);
	modelled_free(&src);
	printf("a destroyed reader's notes go; a live reader's mapped pages are punched\n");
}

/* Pages of [data, data + pages) present in this process's page tables. */
static size_t present_pages(const void *data, size_t pages)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	uint64_t *entries = malloc(pages * sizeof *entries);
	CHECK(fd >= 0 && entries, "/proc/self/pagemap: %s", strerror(errno));
	off_t at = (off_t)((uintptr_t)data / page_size * sizeof *entries);
	CHECK(pread(fd, entries, pages * sizeof *entries, at) == (ssize_t)(pages * sizeof *entries),
	      "pagemap read: %s", strerror(errno));
	size_t present = 0;
	for (size_t p = 0; p < pages; p++)
		present += (entries[p] >> 63) & 1;
	close(fd);
	free(entries);
	return present;
}

static void reading_head(test_rng *rng)
{
	const size_t pages = 4096, size = pages * page_size, per_round = 16;
	/* COWMEM_DISABLE=keep-mappings takes the tables back from the head. */
	const char *disabled = getenv("COWMEM_DISABLE");
	bool keeps = !disabled || !strstr(disabled, "keep-mappings");
	struct modelled src = { cowmem_create(size), malloc(size) }, ring[KEEP] = { 0 };
	CHECK(src.region && src.model, "create: %s", strerror(errno));
	test_pattern_fill(cowmem_data(src.region), size, 7, 0);
	memcpy(src.model, cowmem_data(src.region), size);
	for (uint64_t round = 0; round < 40; round++) {
		/* Read every page, then write a few: the fold's staging maps
		 * far more layer pages than it holds own ones. */
		const volatile unsigned char *bytes = cowmem_data(src.region);
		unsigned sum = 0;
		for (size_t p = 0; p < pages; p++)
			sum += bytes[p * page_size];
		(void)sum;
		bool written[4096] = { false };
		size_t distinct = 0;
		for (size_t i = 0; i < per_round; i++) {
			size_t page = (size_t)test_rng_below(rng, pages);
			distinct += !written[page];
			written[page] = true;
			modelled_write(&src, page, 100 + round * per_round + i);
		}
		struct modelled *slot = &ring[round % KEEP];
		modelled_free(slot);
		*slot = modelled_clone(&src, size);
		/* The first clone freezes (the tables go to the layer); each
		 * later one folds and, keeping them, drops only the written
		 * pages from the head. The fold may still be under way on
		 * the library's thread: a call about the region waits for it. */
		struct cowmem_stats stats;
		CHECK(cowmem_stats(src.region, &stats) == 0, "stats: %s", strerror(errno));
		size_t present = present_pages(cowmem_data(src.region), pages);
		if (round > 0 && keeps)
			CHECK(present == pages - distinct, "round %" PRIu64 ": %zu of %zu pages "
			      "present in the head after the fold, expected %zu", round, present,
			      pages, pages - distinct);
		modelled_check(&src, size, "the head after a fold");
		for (size_t k = 0; k < KEEP; k++)
			if (ring[k].region)
				modelled_check(&ring[k], size, "a snapshot of a reading head");
	}
	for (size_t k = 0; k < KEEP; k++)
		modelled_free(&ring[k]);
	modelled_free(&src);
	printf("a head that reads everything between clones keeps its pages mapped%s\n",
	       keeps ? "" : " (not checked: COWMEM_DISABLE=keep-mappings)");
}

/* ---- A clone's fold finishes in the background ----------------------- */

struct checked_read {
	const struct modelled *snapshot;
	size_t size;
};

static void *check_snapshot(void *arg)
{
	const struct checked_read *c = arg;
	modelled_check(c->snapshot, c->size, "a new clone read while its fold may be pending");
	return NULL;
}

static bool fold_pending(void)
{
	pthread_mutex_lock(&cowmem__engine.lock);
	bool pending = cowmem__fold_pending();
	pthread_mutex_unlock(&cowmem__engine.lock);
	return pending;
}

/* A clone returns once the head's page tables moved; the folder finishes
 * the copies (folder.c). Everything that can happen before it has: the
 * new clone read on another thread while the head is written, an old
 * snapshot destroyed, the new clone or the head itself destroyed. Each
 * must see the bytes the model says. */
static void background_fold(test_rng *rng)
{
	const size_t pages = 2048, size = pages * page_size;
	struct modelled work = { cowmem_create(size), malloc(size) };
	struct modelled ring[KEEP] = { { 0 } };
	unsigned pending = 0, rounds = 200;

	CHECK(work.region && work.model, "create: %s", strerror(errno));
	test_rng_fill(rng, work.model, size);
	memcpy(cowmem_data(work.region), work.model, size);
	for (unsigned i = 0; i < rounds; i++) {
		change_pages(rng, &work, pages, 1 + test_rng_below(rng, 64));
		/* Asked before anything else, while the folder may still be
		 * waking up. */
		struct modelled snapshot = { cowmem_clone(work.region), NULL };
		pending += fold_pending();
		CHECK(snapshot.region && (snapshot.model = malloc(size)), "clone: %s",
		      strerror(errno));
		memcpy(snapshot.model, work.model, size);
		struct checked_read read = { &snapshot, size };
		pthread_t reader;
		CHECK(pthread_create(&reader, NULL, check_snapshot, &read) == 0, "pthread_create");
		change_pages(rng, &work, pages, 1 + test_rng_below(rng, 8));
		modelled_free(&ring[i % KEEP]);
		pthread_join(reader, NULL);
		ring[i % KEEP] = snapshot;
	}
	for (size_t j = 0; j < KEEP; j++)
		modelled_check(&ring[j], size, "a kept snapshot");
	modelled_check(&work, size, "the working copy");
	/* Whether the folder is still at it when the clone returns is a race;
	 * it loses about half of them here, and wins every one under
	 * ThreadSanitizer, which slows this thread down more. */
	CHECK(pending > 0 || TEST_UNDER_TSAN,
	      "no clone of %u left its fold to the folder: the path was not tested", rounds);

	/* The new clone destroyed before its fold is done; then the head. */
	change_pages(rng, &work, pages, 32);
	struct modelled gone = modelled_clone(&work, size);
	modelled_free(&gone);
	modelled_check(&work, size, "the head after its clone was destroyed at once");
	change_pages(rng, &work, pages, 32);
	struct modelled kept = modelled_clone(&work, size);
	modelled_free(&work);
	modelled_check(&kept, size, "a clone whose head was destroyed at once");
	modelled_free(&kept);
	for (size_t j = 0; j < KEEP; j++)
		modelled_free(&ring[j]);
	printf("%u clones, %u of them returned with their fold pending: the new clone "
	       "read on another thread while the head was written, old snapshots destroyed\n",
	       rounds, pending);
}

/* A fault the server read just before a clone took the lock reaches it
 * once the fold is pending: the head is on the fence then, its mapping
 * empty, and the layer lacks what the head wrote. The server must only
 * wake the thread (which retries and waits for the fold); filling the
 * hole it faulted on, with a window of zero pages, would hide the head's
 * new pages. The clone is made here under the lock the test holds, so the
 * fold is pending for certain. */
static char *stale_target;

static void *touch_hole(void *arg)
{
	(void)arg;
	(void)*(volatile char *)stale_target;
	return NULL;
}

static void stale_fault(void)
{
	const size_t pages = 2048, size = pages * page_size, written = 100;
	cowmem_region *head = cowmem_create(size);
	CHECK(head, "create: %s", strerror(errno));
	char *data = cowmem_data(head);
	data[(pages - 1) * page_size] = 1;
	cowmem_region *first = cowmem_clone(head); /* freezes: head is the head */
	CHECK(first, "clone: %s", strerror(errno));
	for (size_t p = 1; p <= written; p++) /* holes of the layer, written by the head */
		memset(data + p * page_size, 0xab, page_size);
	stale_target = data; /* page 0: a hole */

	pthread_mutex_lock(&cowmem__engine.lock);
	pthread_t toucher;
	CHECK(pthread_create(&toucher, NULL, touch_hole, NULL) == 0, "pthread_create");
	usleep(100 * 1000); /* the server reads the fault and waits for the lock */
	int error = 0;
	struct cowmem_region *clone = cowmem__clone_locked((struct cowmem_region *)head, &error);
	bool pending = cowmem__fold_pending();
	pthread_mutex_unlock(&cowmem__engine.lock);
	CHECK(clone, "clone: %s", strerror(error));
	CHECK(pending, "the clone's fold was not left to the folder");
	pthread_join(toucher, NULL);

	unsigned char expected[4096];
	CHECK(page_size <= sizeof expected, "page size %zu", page_size);
	memset(expected, 0xab, page_size);
	const char *clone_data = cowmem_data((cowmem_region *)clone);
	for (size_t p = 1; p <= written; p++) {
		CHECK_BYTES(data + p * page_size, expected, page_size, "a page the head wrote");
		CHECK_BYTES(clone_data + p * page_size, expected, page_size,
			    "a page of the clone");
	}
	CHECK(data[0] == 0 && clone_data[0] == 0, "the hole reads nonzero");
	CHECK(cowmem_destroy((cowmem_region *)clone) == 0 && cowmem_destroy(first) == 0 &&
	      cowmem_destroy(head) == 0, "destroy: %s", strerror(errno));
	printf("a fault on a hole of the head, read before a clone and served with its "
	       "fold pending: the head's %zu new pages intact\n", written);
}

static uint64_t seed;

/* Each case its own stream of the one seed. */
static bool never_interrupted(void)
{
	return false;
}

/* Runs the pre-copier on this thread until it has nothing left to do:
 * it follows w's family's head, and w if w may take over from it. */
static size_t drive_precopier(cowmem_region *w)
{
	struct cowmem_region *r = (struct cowmem_region *)w;

	cowmem__lock_settled();
	struct cowmem_region *head = cowmem__layer_head(r->layer);
	size_t steps = 0;
	if (head) {
		cowmem__precopier_follow(head, r != head ? r : NULL);
		while (cowmem__precopier_step(never_interrupted) >= 0)
			steps++;
	}
	size_t early = cowmem__layer_early_count(r->layer);
	pthread_mutex_unlock(&cowmem__engine.lock);
	(void)steps;
	return early;
}

static void early_copies(test_rng *rng)
{
	const size_t pages = 1024, k = 24, size = pages * page_size;
	struct modelled work = { cowmem_create(size), malloc(size) };
	struct modelled ring[KEEP] = { { 0 } };
	size_t made = 0, kept_early = 0, replaced_total = 0, resets = 0, takeovers = 0;
	/* The pre-copier walks page tables with PAGEMAP_SCAN (6.7+). */
	bool enabled = (cowmem__engine.features & FEATURE_EARLY_COPIES) &&
		       (cowmem__engine.features & FEATURE_PAGEMAP_SCAN);

	CHECK(work.region && work.model, "create: %s", strerror(errno));
	test_rng_fill(rng, work.model, size);
	memcpy(cowmem_data(work.region), work.model, size);
	for (uint64_t i = 0; i < iterations; i++) {
		change_pages(rng, &work, pages, k);
		if (i > 0)
			made += drive_precopier(work.region);
		/* Pages copied early written again, and pages written after. */
		change_pages(rng, &work, pages, k / 2);
		switch (test_rng_below(rng, 8)) {
		case 0: /* the newest snapshot goes: some early copies may too */
			modelled_free(&ring[(i + KEEP - 1) % KEEP]);
			break;
		case 1:
			for (size_t j = 0; j < KEEP; j++)
				modelled_free(&ring[j]);
			break;
		case 2: /* no page of its own left: its early copies unused */
			if (i % 3 == 0) {
				CHECK(cowmem_reset(work.region) == 0, "reset: %s", strerror(errno));
				memcpy(work.model, cowmem_data(work.region), size);
				CHECK_BYTES(cowmem_data(work.region), work.model, size, "after reset");
				resets++;
			}
			break;
		}
		struct modelled snapshot = modelled_clone(&work, size);
		if (test_rng_below(rng, 4) == 0) { /* the newest clone works on */
			struct modelled old = work;
			work = snapshot;
			snapshot = old;
			takeovers++;
		}
		struct cowmem_region *r = (struct cowmem_region *)work.region;
		size_t replaced, early;
		cowmem__lock_settled();
		cowmem__layer_last_capture(r->layer, &replaced, &early);
		pthread_mutex_unlock(&cowmem__engine.lock);
		kept_early += early;
		replaced_total += replaced;
		modelled_free(&ring[i % KEEP]);
		ring[i % KEEP] = snapshot;
		if (i % 8 == 7) {
			for (size_t j = 0; j < KEEP; j++)
				if (ring[j].region)
					modelled_check(&ring[j], size, "a kept snapshot");
			modelled_check(&work, size, "the working copy");
		}
	}
	for (size_t j = 0; j < KEEP; j++) {
		if (ring[j].region)
			modelled_check(&ring[j], size, "a kept snapshot at the end");
		modelled_free(&ring[j]);
	}
	modelled_check(&work, size, "the working copy at the end");
	modelled_free(&work);
	pthread_mutex_lock(&cowmem__engine.lock);
	size_t left = cowmem__store_used();
	pthread_mutex_unlock(&cowmem__engine.lock);
	CHECK(left == 0, "%zu store slots left once every region is gone", left);
	if (enabled) {
		CHECK(made > 0, "the pre-copier made no early copy in %" PRIu64 " iterations",
		      iterations);
		CHECK(kept_early > 0, "no fold kept an early copy (%zu made)", made);
		CHECK(kept_early <= replaced_total, "%zu early copies kept for %zu pages replaced",
		      kept_early, replaced_total);
	} else {
		CHECK(made == 0 && kept_early == 0,
		      "no pre-copier (early-copies or pagemap-scan off), yet %zu made and %zu kept",
		      made, kept_early);
	}
	printf("%" PRIu64 " iterations: %zu early copies there when the pre-copier stopped, "
	       "%zu kept by folds that replaced %zu pages; %zu resets, %zu take-overs%s\n",
	       iterations, made, kept_early, replaced_total, resets, takeovers,
	       enabled ? "" : " (no pre-copier: COWMEM_DISABLE=early-copies or no PAGEMAP_SCAN)");
}

static test_rng case_rng(uint64_t stream)
{
	return (test_rng){ test_substream(seed, stream) };
}

static void ring(void)
{
	test_rng rng = case_rng(1);
	test_ring(&rng, false);
}

static void newest(void)
{
	test_rng rng = case_rng(2);
	test_ring(&rng, true);
}

static void chain(void)
{
	test_rng rng = case_rng(3);
	test_chain(&rng);
}

static void old_reads(void)
{
	test_rng rng = case_rng(4);
	test_old_reads(&rng);
}

static void threads(void)
{
	test_threads(seed);
}

static void reading_head_case(void)
{
	test_rng rng = case_rng(5);
	reading_head(&rng);
}

static void background_fold_case(void)
{
	const char *disabled = getenv("COWMEM_DISABLE");
	if (disabled && strstr(disabled, "background-fold")) {
		test_skip("COWMEM_DISABLE=background-fold: every fold finishes before its clone "
			  "returns");
		return;
	}
	test_rng rng = case_rng(6);
	background_fold(&rng);
}

static void stale_fault_case(void)
{
	const char *disabled = getenv("COWMEM_DISABLE");
	if (disabled && strstr(disabled, "background-fold"))
		test_skip("COWMEM_DISABLE=background-fold: no fold is ever pending");
	stale_fault();
}

static void early_copies_case(void)
{
	test_rng rng = case_rng(7);
	early_copies(&rng);
}

/* Without folds, a source whose overlay grew rebases (rebase.c): its
 * clones map a new layer and write nothing in. Clones of the working
 * region, kept 8 at a time: every clone's overlay stays under the
 * threshold, the source rebases, and the source, its snapshots, a copy
 * onto it, its dirty pages, a save and load and a reset all match the
 * memcpy model. */
static void rebase_case(void)
{
	if (test_feature_in_use("folds"))
		test_skip("clones fold here, and nothing rebases (ARCHITECTURE.md, "
			  "\"Without folds\")");
	const char *disabled = getenv("COWMEM_DISABLE");
	if (disabled && test_feature_listed(disabled, "rebase"))
		test_skip("COWMEM_DISABLE=rebase");
	const size_t pages = 512, k = 12, size = pages * page_size;
	const size_t bound = 111; /* n * n < 2 * pages * k: rebase_due() */
	test_rng rng = case_rng(8);
	struct modelled work = { cowmem_create(size), malloc(size) };
	struct modelled ring[KEEP] = { { 0 } };
	size_t rebased = 0, most = 0;

	CHECK(work.region && work.model, "create: %s", strerror(errno));
	test_rng_fill(&rng, work.model, size);
	memcpy(cowmem_data(work.region), work.model, size);
	for (size_t i = 0; i < 120; i++) {
		change_pages(&rng, &work, pages, k);
		modelled_free(&ring[i % KEEP]);
		ring[i % KEEP] = modelled_clone(&work, size);
		pthread_mutex_lock(&cowmem__engine.lock);
		size_t n = cowmem__overlay_count(ring[i % KEEP].region->overlay);
		bool moved = work.region->mapped_layer != NULL;
		pthread_mutex_unlock(&cowmem__engine.lock);
		CHECK(n <= bound, "clone %zu has %zu overlay pages to write in, more than %zu", i, n,
		      bound);
		most = n > most ? n : most;
		rebased += moved && n == 0;
		if (i % 16 == 15) {
			for (size_t j = 0; j < KEEP; j++)
				modelled_check(&ring[j], size, "a kept snapshot");
			modelled_check(&work, size, "the working region");
		}
	}
	CHECK(rebased > 0, "the working region never rebased in 120 clones");

	/* A snapshot that writes lists exactly those pages. */
	struct modelled *last = &ring[119 % KEEP];
	for (size_t p = 0; p < 3; p++)
		modelled_write(last, 100 + 7 * p, 0xab00 + p);
	ssize_t listed = cowmem_dirty_pages(last->region, NULL, 0);
	CHECK(listed == 3, "a snapshot that wrote 3 pages lists %zd", listed);
	/* Every page of the working region differs from its origin (zeros). */
	listed = cowmem_dirty_pages(work.region, NULL, 0);
	CHECK(listed == (ssize_t)pages, "the working region lists %zd of %zu pages", listed, pages);

	/* Saved and loaded, it reads the same. */
	int fd = memfd_create("cowmem-rebase-test", MFD_CLOEXEC);
	CHECK(fd >= 0, "memfd_create: %s", strerror(errno));
	CHECK(cowmem_save(work.region, fd) == 0, "save: %s", strerror(errno));
	struct modelled loaded = { cowmem_load(fd), malloc(size) };
	CHECK(loaded.region && loaded.model, "load: %s", strerror(errno));
	memcpy(loaded.model, work.model, size);
	modelled_check(&loaded, size, "the rebased region, saved and loaded");
	modelled_free(&loaded);
	close(fd);

	/* Copied onto from its oldest snapshot, then written, then reset. */
	struct modelled *oldest = &ring[120 % KEEP];
	CHECK(cowmem_copy(work.region, oldest->region) == 0, "copy: %s", strerror(errno));
	memcpy(work.model, oldest->model, size);
	modelled_check(&work, size, "the working region after a copy from a snapshot");
	change_pages(&rng, &work, pages, k);
	struct modelled after = modelled_clone(&work, size);
	modelled_check(&after, size, "a clone after the copy");
	for (size_t j = 0; j < KEEP; j++)
		modelled_check(&ring[j], size, "a kept snapshot after the copy");
	CHECK(cowmem_reset(work.region) == 0, "reset: %s", strerror(errno));
	memset(work.model, 0, size);
	modelled_check(&work, size, "the working region after reset");
	modelled_check(&after, size, "the clone after its source's reset");
	modelled_free(&after);
	for (size_t j = 0; j < KEEP; j++)
		modelled_free(&ring[j]);
	modelled_free(&work);
	printf("120 clones of %zu pages, %zu changed each: rebased %zu times, at most %zu "
	       "overlay pages written into a clone\n", pages, k, rebased, most);
}

static const struct test_case cases[] = {
	TEST_CASE("ring", ring),
	TEST_CASE("newest", newest),
	TEST_CASE("chain", chain),
	TEST_CASE("old-reads", old_reads),
	TEST_CASE("threads", threads),
	TEST_CASE("rebase", rebase_case),
	TEST_CASE("mapped-notes", mapped_notes, .features = COWMEM_FEATURE_FOLDS),
	TEST_CASE("reading-head", reading_head_case, .features = COWMEM_FEATURE_FOLDS),
	TEST_CASE("background-fold", background_fold_case, .features = COWMEM_FEATURE_FOLDS),
	TEST_CASE("stale-fault", stale_fault_case, .features = COWMEM_FEATURE_FOLDS),
	TEST_CASE("early-copies", early_copies_case, .features = COWMEM_FEATURE_FOLDS),
};

int main(int argc, char **argv)
{
	seed = test_seed_init(argc, argv);
	test_option(argc, argv, "iterations", "COWMEM_TEST_ITERATIONS", &iterations);
	page_size = test_page_size();
	return test_main(argc, argv, cases, TEST_CASE_COUNT(cases));
}
