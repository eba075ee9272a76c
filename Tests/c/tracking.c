/*
 * tracking.c - cowmem_dirty_pages, cowmem_reset, cowmem_save/cowmem_load and
 * cowmem_stats against a memcpy model.
 *
 * Targeted cases first (each region kind, clones of clones whose source
 * kept writing, laziness of a loaded region, errno left alone by a
 * successful call; the errnos of bad input are errnos.c's), then a randomized
 * differential run: each thread keeps up to 10 regions and, for each, a
 * model of its bytes, a model of its origin (what cowmem_reset() must give
 * back) and the set of pages written since. Operations: create, clone,
 * write, rewrite a page with its own bytes, read, reset, dirty pages (with
 * a random capacity), save + load, stats and destroy. cowmem_dirty_pages()
 * must list every page that differs from the origin and only pages written.
 *
 * Options (--name=N, or the environment variable):
 *   --seed=N     COWMEM_TEST_SEED     default: from the clock; always printed
 *   --ops=N      COWMEM_TEST_OPS      operations per thread
 *   --threads=N  COWMEM_TEST_THREADS  threads
 * The randomized run is two cases: one-thread, N operations (--ops,
 * default 6000), and threads, 4 threads doing N/4 each (with --threads=T,
 * T threads doing N each).
 */
#include "harness.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define MAX_LIVE 10
#define MAX_PAGES 48

static size_t page_size;

/* ---- Helpers ------------------------------------------------------------ */

static unsigned char *page_of(cowmem_region *r, size_t page)
{
	return (unsigned char *)cowmem_data(r) + page * page_size;
}

/* Checks the contract of cowmem_dirty_pages for region r: every page where
 * `now` differs from `origin` is listed, every listed page was written, the
 * list is ascending, and a smaller capacity gives a prefix of it. */
static void check_dirty(cowmem_region *r, const unsigned char *now, const unsigned char *origin,
			const bool *written, size_t pages, size_t cap, const char *what)
{
	size_t *list = calloc(pages + 1, sizeof *list);
	CHECK(list, "out of memory");
	ssize_t n = cowmem_dirty_pages(r, list, pages + 1);
	CHECK(n >= 0, "%s: cowmem_dirty_pages: %s", what, strerror(errno));
	CHECK((size_t)n <= pages, "%s: %zd dirty pages in a region of %zu", what, n, pages);
	bool *listed = calloc(pages, sizeof *listed);
	CHECK(listed, "out of memory");
	for (ssize_t i = 0; i < n; i++) {
		CHECK(list[i] < pages, "%s: page %zu out of range", what, list[i]);
		CHECK(i == 0 || list[i] > list[i - 1], "%s: list not ascending at %zd", what, i);
		CHECK(written[list[i]], "%s: page %zu listed but never written", what, list[i]);
		listed[list[i]] = true;
	}
	for (size_t p = 0; p < pages; p++) {
		bool differs = memcmp(now + p * page_size, origin + p * page_size, page_size) != 0;
		CHECK(!differs || listed[p], "%s: page %zu differs from the origin but is not listed",
		      what, p);
	}
	if (cap < (size_t)n) {
		size_t *prefix = calloc(cap + 1, sizeof *prefix);
		CHECK(prefix, "out of memory");
		prefix[cap] = (size_t)-1;
		ssize_t again = cowmem_dirty_pages(r, cap ? prefix : NULL, cap);
		CHECK(again == n, "%s: capacity %zu gave a total of %zd, not %zd", what, cap, again, n);
		CHECK(memcmp(prefix, list, cap * sizeof *list) == 0, "%s: capacity %zu: not a prefix",
		      what, cap);
		CHECK(prefix[cap] == (size_t)-1, "%s: wrote past the capacity %zu", what, cap);
		free(prefix);
	}
	free(listed);
	free(list);
}

static void check_stats(cowmem_region *r, const char *what)
{
	struct cowmem_stats s;
	CHECK(cowmem_stats(r, &s) == 0, "%s: cowmem_stats: %s", what, strerror(errno));
	ssize_t dirty = cowmem_dirty_pages(r, NULL, 0);
	CHECK(s.pages == cowmem_size(r) / page_size, "%s: stats.pages %zu", what, s.pages);
	CHECK(s.resident <= s.pages && s.shared <= s.resident,
	      "%s: resident %zu, shared %zu of %zu pages", what, s.resident, s.shared, s.pages);
	CHECK((ssize_t)s.written == dirty, "%s: stats.written %zu, dirty pages %zd", what,
	      s.written, dirty);
}

static int temp_file(void)
{
	int fd = memfd_create("cowmem-tracking-test", MFD_CLOEXEC);
	CHECK(fd >= 0, "memfd_create: %s", strerror(errno));
	return fd;
}

/* Saves r, loads it back, and checks the loaded region against `expect`. */
static cowmem_region *save_and_load(cowmem_region *r, const unsigned char *expect, int *file)
{
	*file = temp_file();
	CHECK(cowmem_save(r, *file) == 0, "cowmem_save: %s", strerror(errno));
	cowmem_region *loaded = cowmem_load(*file);
	CHECK(loaded, "cowmem_load: %s", strerror(errno));
	CHECK(cowmem_size(loaded) == cowmem_size(r), "loaded size %zu, saved %zu",
	      cowmem_size(loaded), cowmem_size(r));
	CHECK_BYTES(cowmem_data(loaded), expect, cowmem_size(r), "loaded region");
	return loaded;
}

/* ---- Targeted cases ------------------------------------------------------ */

static void test_created_region(void)
{
	const size_t pages = 16, size = pages * page_size;
	cowmem_region *r = test_create_or_skip(size);
	unsigned char *zeros = calloc(1, size), *model = calloc(1, size);
	bool written[16] = { false };
	CHECK(zeros && model, "out of memory");

	check_dirty(r, zeros, zeros, written, pages, 0, "fresh region");
	/* Reading holes is no change. */
	for (size_t p = 0; p < pages; p++)
		(void)*(volatile unsigned char *)page_of(r, p);
	check_dirty(r, zeros, zeros, written, pages, 0, "fresh region, read");
	CHECK(cowmem_dirty_pages(r, NULL, 0) == 0, "pages only read are listed");
	for (size_t p = 3; p < pages; p += 4) {
		memset(page_of(r, p), (int)p, page_size);
		memset(model + p * page_size, (int)p, page_size);
		written[p] = true;
	}
	check_dirty(r, model, zeros, written, pages, 2, "created, written");
	CHECK(cowmem_dirty_pages(r, NULL, 0) == 4, "4 pages written, %zd listed",
	      cowmem_dirty_pages(r, NULL, 0));
	check_stats(r, "created, written");

	/* Reset while never cloned: back to zeros. */
	CHECK(cowmem_reset(r) == 0, "cowmem_reset: %s", strerror(errno));
	CHECK_BYTES(cowmem_data(r), zeros, size, "exclusive region after reset");
	CHECK(cowmem_dirty_pages(r, NULL, 0) == 0, "dirty pages after reset");

	/* Reset after a clone froze it: back to zeros, the clone keeps its
	 * content, and both go on working. */
	memset(page_of(r, 1), 0x11, page_size);
	memset(model, 0, size);
	memset(model + page_size, 0x11, page_size);
	cowmem_region *c = cowmem_clone(r);
	CHECK(c, "cowmem_clone: %s", strerror(errno));
	memset(page_of(r, 2), 0x22, page_size);
	memset(written, 0, sizeof written);
	written[1] = written[2] = true;
	unsigned char *now = malloc(size);
	CHECK(now, "out of memory");
	memcpy(now, model, size);
	memset(now + 2 * page_size, 0x22, page_size);
	check_dirty(r, now, zeros, written, pages, 1, "created, cloned, written");
	CHECK(cowmem_reset(r) == 0, "cowmem_reset after clone: %s", strerror(errno));
	CHECK_BYTES(cowmem_data(r), zeros, size, "frozen region after reset");
	CHECK_BYTES(cowmem_data(c), model, size, "clone after its source's reset");
	check_dirty(c, model, model, (bool[16]){ false }, pages, 0, "clone, untouched");
	memset(page_of(r, 5), 0x55, page_size);
	cowmem_region *c2 = cowmem_clone(r);
	CHECK(c2, "clone after reset: %s", strerror(errno));
	CHECK(page_of(c2, 5)[7] == 0x55 && page_of(c2, 1)[0] == 0, "clone of a reset region");
	CHECK(cowmem_destroy(c2) == 0 && cowmem_destroy(c) == 0 && cowmem_destroy(r) == 0,
	      "destroy: %s", strerror(errno));
	free(now);
	free(zeros);
	free(model);
	printf("created regions: dirty pages, reset never cloned and after a clone\n");
}

/*
 * A clone of a clone whose source keeps writing: the versions the clone
 * started from are lent by its source, handed over when the source writes
 * them, and must still be there for cowmem_reset().
 */
static void test_clone_chain(void)
{
	const size_t pages = 32, size = pages * page_size;
	cowmem_region *a = test_create_or_skip(size);
	unsigned char *a_model = malloc(size), *c_origin = malloc(size), *c_model = malloc(size);
	bool written[32] = { false };
	CHECK(a_model && c_origin && c_model, "out of memory");

	for (size_t p = 0; p < pages; p++)
		memset(page_of(a, p), (int)(p + 1), page_size);
	cowmem_region *b = cowmem_clone(a); /* freezes a */
	CHECK(b, "clone: %s", strerror(errno));
	for (size_t p = 0; p < pages; p += 2)
		memset(page_of(a, p), 0xa0, page_size); /* a drifts from its base */
	memcpy(a_model, cowmem_data(a), size);
	cowmem_region *c = cowmem_clone(a); /* waits for a's 16 pages */
	CHECK(c, "clone: %s", strerror(errno));
	memcpy(c_origin, a_model, size);
	/* a overwrites what c waits for: c must still see the old bytes. */
	for (size_t p = 0; p < pages; p += 4)
		memset(page_of(a, p), 0xa1, page_size);
	/* c reads some lent pages, writes others. */
	for (size_t p = 0; p < pages; p += 3)
		(void)*(volatile unsigned char *)page_of(c, p);
	memcpy(c_model, c_origin, size);
	for (size_t p = 1; p < pages; p += 5) {
		memset(page_of(c, p), 0xc0, page_size);
		memset(c_model + p * page_size, 0xc0, page_size);
		written[p] = true;
	}
	/* Rewriting a lent page with its own bytes: may or may not be listed. */
	memcpy(page_of(c, 8), c_origin + 8 * page_size, page_size);
	written[8] = true;
	CHECK_BYTES(cowmem_data(c), c_model, size, "clone of a drifting source");
	check_dirty(c, c_model, c_origin, written, pages, 3, "clone of a drifting source");
	check_stats(c, "clone of a drifting source");

	/* A clone of c (c's origin is unchanged by it), then reset c. */
	cowmem_region *d = cowmem_clone(c);
	CHECK(d, "clone of clone: %s", strerror(errno));
	CHECK(cowmem_reset(c) == 0, "reset: %s", strerror(errno));
	CHECK_BYTES(cowmem_data(c), c_origin, size, "clone after reset");
	CHECK(cowmem_dirty_pages(c, NULL, 0) == 0, "dirty pages after reset: %zd",
	      cowmem_dirty_pages(c, NULL, 0));
	CHECK_BYTES(cowmem_data(d), c_model, size, "clone of clone after its source's reset");
	/* Again, after the source has moved on further and been destroyed. */
	for (size_t p = 0; p < pages; p++)
		memset(page_of(a, p), 0xa2, page_size);
	CHECK(cowmem_destroy(a) == 0, "destroy: %s", strerror(errno));
	memset(page_of(c, 0), 0xc1, page_size);
	memset(page_of(c, 31), 0xc1, page_size);
	CHECK(cowmem_reset(c) == 0, "second reset: %s", strerror(errno));
	CHECK_BYTES(cowmem_data(c), c_origin, size, "clone after a second reset");
	/* d's origin is c's content when d was made. */
	memset(page_of(d, 2), 0xd0, page_size);
	CHECK(cowmem_reset(d) == 0, "reset clone of clone: %s", strerror(errno));
	CHECK_BYTES(cowmem_data(d), c_model, size, "clone of clone after reset");
	CHECK(cowmem_destroy(c) == 0, "destroy: %s", strerror(errno));
	CHECK_BYTES(cowmem_data(d), c_model, size, "clone of clone after its source went");
	CHECK(cowmem_reset(d) == 0, "reset: %s", strerror(errno));
	CHECK_BYTES(cowmem_data(d), c_model, size, "reset after its source went");
	CHECK(cowmem_destroy(d) == 0 && cowmem_destroy(b) == 0, "destroy: %s", strerror(errno));
	free(a_model);
	free(c_origin);
	free(c_model);
	printf("clones of clones: dirty pages and reset after the source moved on\n");
}

/* A loaded region reads nothing until touched, and never writes its file. */
static void test_load_is_lazy(void)
{
	const size_t pages = 4096, size = pages * page_size; /* 16 MiB */
	cowmem_region *r = test_create_or_skip(size);
	unsigned char *model = calloc(1, size);
	CHECK(model, "out of memory");
	for (size_t p = 0; p < pages; p += 97) {
		memset(page_of(r, p), (int)(p % 251) + 1, page_size);
		memset(model + p * page_size, (int)(p % 251) + 1, page_size);
	}
	int file;
	cowmem_region *loaded = save_and_load(r, model, &file);
	CHECK(cowmem_destroy(loaded) == 0, "destroy: %s", strerror(errno));
	struct stat st;
	CHECK(fstat(file, &st) == 0, "fstat: %s", strerror(errno));
	CHECK((size_t)st.st_blocks * 512 < size / 4,
	      "a file of 43 written pages takes %lld bytes of %zu: not sparse",
	      (long long)st.st_blocks * 512, size);

	loaded = cowmem_load(file);
	CHECK(loaded, "cowmem_load: %s", strerror(errno));
	struct cowmem_stats s;
	CHECK(cowmem_stats(loaded, &s) == 0, "stats: %s", strerror(errno));
	/* Loading is lazy with userfaultfd and /proc; resident counts need
	 * /proc too (cowmem_load(3), cowmem_stats(3)). */
	bool lazy = strcmp(cowmem_backend(), "memfd") != 0 &&
		    access("/proc/self/pagemap", R_OK) == 0;
	CHECK(!lazy || s.resident == 0, "a loaded region has %zu pages resident before use",
	      s.resident);
	CHECK(s.written == 0, "a loaded region has %zu pages written", s.written);
	CHECK(page_of(loaded, 97)[10] == 98 && page_of(loaded, 98)[0] == 0, "loaded bytes");
	CHECK(cowmem_stats(loaded, &s) == 0, "stats: %s", strerror(errno));
	CHECK(!lazy || (s.resident > 0 && s.resident <= 128),
	      "after reading 2 pages, %zu pages resident", s.resident);
	CHECK(!lazy || s.faults > 0, "faults served: %llu", (unsigned long long)s.faults);
	/* Writes change the region, and its clones, never the file. */
	memset(page_of(loaded, 97), 0xee, page_size);
	cowmem_region *clone = cowmem_clone(loaded);
	CHECK(clone, "clone of a loaded region: %s", strerror(errno));
	memset(page_of(clone, 194), 0xef, page_size);
	CHECK(cowmem_dirty_pages(loaded, NULL, 0) == 1, "dirty pages of the loaded region");
	cowmem_region *again = cowmem_load(file);
	CHECK(again, "cowmem_load: %s", strerror(errno));
	CHECK_BYTES(cowmem_data(again), model, size, "file after writes to its region");
	CHECK(cowmem_reset(loaded) == 0, "reset: %s", strerror(errno));
	CHECK_BYTES(cowmem_data(loaded), model, size, "loaded region after reset");
	memcpy(model + 97 * page_size, page_of(clone, 97), page_size); /* 0xee */
	memset(model + 194 * page_size, 0xef, page_size);
	CHECK_BYTES(cowmem_data(clone), model, size, "clone of a loaded region");
	CHECK(cowmem_destroy(again) == 0 && cowmem_destroy(clone) == 0 &&
	      cowmem_destroy(loaded) == 0 && cowmem_destroy(r) == 0, "destroy: %s", strerror(errno));
	close(file);
	free(model);
	printf("cowmem_load: sparse file, lazy, file never written\n");
}

/* In a child: a snapshot file truncated under a loaded region. The pages
 * it lost must fail loudly when touched, never read as zeros. */
static int touch_truncated(void *arg)
{
	(void)arg;
	const size_t pages = 256, size = pages * page_size;
	cowmem_region *r = cowmem_create(size);
	CHECK(r, "create: %s", strerror(errno));
	memset(cowmem_data(r), 0x5a, size);
	int file = temp_file();
	CHECK(cowmem_save(r, file) == 0, "save: %s", strerror(errno));
	cowmem_region *loaded = cowmem_load(file);
	CHECK(loaded, "load: %s", strerror(errno));
	CHECK(page_of(loaded, 0)[0] == 0x5a, "first page of the loaded region");
	CHECK(ftruncate(file, (off_t)(2 * page_size)) == 0, "ftruncate: %s", strerror(errno));
	probe_install();
	int signal_number = probe_access(page_of(loaded, pages - 1), false, NULL);
	printf("touching a page the file lost: %s\n",
	       signal_number ? signal_name(signal_number) : "read without a fault");
	return signal_number == SIGBUS ? 0 : 1;
}

static void test_truncated_file(void)
{
	if (strcmp(cowmem_backend(), "memfd") == 0 || access("/proc/self/pagemap", R_OK) != 0) {
		printf("--    truncated snapshot file: not checked, this configuration loads "
		       "every page at cowmem_load()\n");
		return;
	}
	bool poison = strstr(cowmem_features(), "poison") != NULL;
	int status = run_in_child(touch_truncated, NULL, 60);
	if (poison)
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "a page the snapshot file lost: %s, expected SIGBUS", describe_status(status));
	else
		CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
		      "a page the snapshot file lost, without UFFDIO_POISON: %s, expected SIGABRT",
		      describe_status(status));
	printf("truncated snapshot file: the lost page fails loudly\n");
}

/* A successful cowmem_dirty_pages leaves errno alone (errnos.c has a case
 * for each errno it documents). */
static void test_errno_kept(void)
{
	cowmem_region *r = test_create_or_skip(page_size);
	size_t list[4];

	errno = EDOM;
	CHECK(cowmem_dirty_pages(r, list, 4) == 0 && errno == EDOM,
	      "a successful cowmem_dirty_pages changed errno to %s", strerror(errno));
	CHECK(cowmem_destroy(r) == 0, "destroy: %s", strerror(errno));
}

/* ---- The randomized run ----------------------------------------------------- */

struct slot {
	cowmem_region *region;
	size_t pages;
	unsigned char *model, *origin;
	bool *written;
};

struct worker {
	test_rng rng;
	unsigned long ops;
	struct slot slots[MAX_LIVE];
	int live;
};

static void slot_free(struct slot *s)
{
	CHECK(cowmem_destroy(s->region) == 0, "destroy: %s", strerror(errno));
	free(s->model);
	free(s->origin);
	free(s->written);
	memset(s, 0, sizeof *s);
}

static struct slot *slot_new(struct worker *w, cowmem_region *r, const unsigned char *content)
{
	struct slot *s = &w->slots[w->live++];
	s->region = r;
	s->pages = cowmem_size(r) / page_size;
	size_t size = cowmem_size(r);
	s->model = malloc(size);
	s->origin = malloc(size);
	s->written = calloc(s->pages, sizeof *s->written);
	CHECK(s->model && s->origin && s->written, "out of memory");
	if (content)
		memcpy(s->model, content, size);
	else
		memset(s->model, 0, size);
	memcpy(s->origin, s->model, size);
	return s;
}

static void worker_run(struct worker *w)
{
	for (unsigned long op = 0; op < w->ops; op++) {
		if (w->live == 0) {
			size_t pages = 1 + test_rng_below(&w->rng, MAX_PAGES);
			cowmem_region *r = cowmem_create(pages * page_size);
			CHECK(r, "create: %s", strerror(errno));
			slot_new(w, r, NULL);
		}
		struct slot *s = &w->slots[test_rng_below(&w->rng, (uint64_t)w->live)];
		size_t size = s->pages * page_size;
		size_t page = test_rng_below(&w->rng, s->pages);
		unsigned choice = (unsigned)test_rng_below(&w->rng, 100);

		if (choice < 8 && w->live < MAX_LIVE) {
			size_t pages = 1 + test_rng_below(&w->rng, MAX_PAGES);
			cowmem_region *r = cowmem_create(pages * page_size);
			CHECK(r, "create: %s", strerror(errno));
			slot_new(w, r, NULL);
		} else if (choice < 20 && w->live < MAX_LIVE) {
			cowmem_region *r = cowmem_clone(s->region);
			CHECK(r, "clone: %s", strerror(errno));
			slot_new(w, r, s->model);
		} else if (choice < 50) {
			size_t offset = test_rng_below(&w->rng, page_size);
			size_t length = 1 + test_rng_below(&w->rng, page_size - offset);
			unsigned char *at = page_of(s->region, page) + offset;
			test_rng_fill(&w->rng, at, length);
			memcpy(s->model + page * page_size + offset, at, length);
			s->written[page] = true;
		} else if (choice < 55) {
			/* Write a page with the bytes it already has. */
			memcpy(page_of(s->region, page), s->model + page * page_size, page_size);
			s->written[page] = true;
		} else if (choice < 68) {
			size_t offset = test_rng_below(&w->rng, page_size);
			CHECK(page_of(s->region, page)[offset] == s->model[page * page_size + offset],
			      "read page %zu byte %zu", page, offset);
		} else if (choice < 75) {
			CHECK(cowmem_reset(s->region) == 0, "reset: %s", strerror(errno));
			memcpy(s->model, s->origin, size);
			memset(s->written, 0, s->pages * sizeof *s->written);
			CHECK_BYTES(cowmem_data(s->region), s->model, size, "after reset");
		} else if (choice < 87) {
			size_t cap = test_rng_below(&w->rng, s->pages + 1);
			check_dirty(s->region, s->model, s->origin, s->written, s->pages, cap,
				    "randomized");
		} else if (choice < 90 && w->live < MAX_LIVE) {
			int file;
			cowmem_region *loaded = save_and_load(s->region, s->model, &file);
			close(file); /* the region keeps its own descriptor */
			slot_new(w, loaded, s->model);
		} else if (choice < 93) {
			check_stats(s->region, "randomized");
		} else if (choice < 95 && w->live > 1) {
			/* cowmem_copy from another region of the same size, if
			 * any; the origin stays, and any page may now differ
			 * from it. */
			struct slot *src = &w->slots[test_rng_below(&w->rng, (uint64_t)w->live)];
			if (src != s && src->pages == s->pages) {
				CHECK(cowmem_copy(s->region, src->region) == 0, "copy: %s",
				      strerror(errno));
				memcpy(s->model, src->model, size);
				for (size_t p = 0; p < s->pages; p++)
					s->written[p] = true;
				CHECK_BYTES(cowmem_data(s->region), s->model, size, "after copy");
			}
		} else {
			CHECK_BYTES(cowmem_data(s->region), s->model, size, "before destroy");
			slot_free(s);
			*s = w->slots[--w->live];
			memset(&w->slots[w->live], 0, sizeof w->slots[w->live]);
		}
	}
	while (w->live > 0) {
		struct slot *s = &w->slots[w->live - 1];
		CHECK_BYTES(cowmem_data(s->region), s->model, s->pages * page_size, "at the end");
		slot_free(s);
		w->live--;
	}
}

static void *worker_main(void *arg)
{
	worker_run(arg);
	return NULL;
}

static void run_pass(uint64_t seed, unsigned threads, unsigned long ops)
{
	struct worker *workers = calloc(threads, sizeof *workers);
	pthread_t *ids = calloc(threads, sizeof *ids);
	CHECK(workers && ids, "out of memory");
	for (unsigned t = 0; t < threads; t++) {
		workers[t].rng.state = test_substream(seed, threads * 1000u + t);
		workers[t].ops = ops;
		CHECK(pthread_create(&ids[t], NULL, worker_main, &workers[t]) == 0, "pthread_create");
	}
	for (unsigned t = 0; t < threads; t++)
		pthread_join(ids[t], NULL);
	printf("randomized: %u thread(s) x %lu operations\n", threads, ops);
	free(workers);
	free(ids);
}

static uint64_t ops = 6000, threads = 4;
static bool have_threads;

static void one_thread(void)
{
	cowmem_destroy(test_create_or_skip(page_size));
	run_pass(test_seed, 1, ops);
}

/* --threads=T: T threads of --ops each; else 4 sharing them. */
static void several_threads(void)
{
	cowmem_destroy(test_create_or_skip(page_size));
	run_pass(test_seed, threads ? (unsigned)threads : 1, have_threads ? ops : ops / 4);
}

static const struct test_case cases[] = {
	TEST_CASE("created-region", test_created_region),
	TEST_CASE("clone-chain", test_clone_chain),
	TEST_CASE("load-is-lazy", test_load_is_lazy),
	TEST_CASE("truncated-file", test_truncated_file),
	TEST_CASE("errno-kept-on-success", test_errno_kept),
	TEST_CASE("one-thread", one_thread),
	TEST_CASE("threads", several_threads),
};

int main(int argc, char **argv)
{
	test_seed_init(argc, argv);
	test_option(argc, argv, "ops", "COWMEM_TEST_OPS", &ops);
	have_threads = test_option(argc, argv, "threads", "COWMEM_TEST_THREADS", &threads);
	page_size = test_page_size();
	return test_main(argc, argv, cases, TEST_CASE_COUNT(cases));
}
