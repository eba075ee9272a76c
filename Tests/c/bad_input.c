/*
 * bad_input.c - the inputs a buggy program passes that are not errors, and
 * a region destroyed while another thread is touching it. The errno of
 * every bad input (NULL, foreign, misaligned and destroyed handles, sizes
 * that cannot be mapped, prefault ranges outside a region) is a case of
 * errnos.c; here:
 *   - sizes: odd sizes are rounded up to whole pages (for clones too), the
 *     data is page-aligned and stable, fresh regions and their clones read
 *     zeros; 1 TiB works exactly or fails cleanly;
 *   - cowmem_destroy(NULL) is 0 and leaves errno alone; failed calls change
 *     no byte of live regions and leave no descriptor or mapping behind;
 *   - cowmem_prefault: any range inside, aligned or not, is 0 and changes
 *     no byte, for reading or writing, and writes stay copy-on-write;
 *   - the backend and features are named, the page size is the system's;
 *     cowmem_server_handle with nothing waiting returns 0; a claim after
 *     the library's server thread stopped either is EBUSY or serves;
 *   - a region destroyed while another thread reads it (its pages still
 *     being filled), writes it, or passes it to write(2): the other thread
 *     gets SIGSEGV (EFAULT from the system call) once the memory is gone,
 *     every byte it read before was right, and nothing hangs. Destroying
 *     the region that lends pages to the clone being read changes nothing
 *     for the reader.
 *
 * A handle that was destroyed must still not be passed to cowmem_data or
 * cowmem_size: those do not check (they make no call and take no lock), as
 * free(3)'d memory must not be read. Not tested here.
 *
 * Options: --seed=N (COWMEM_TEST_SEED), --rounds=N (default 60 per mode).
 */
#include "harness.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/syscall.h>

static size_t page;
static test_rng rng;
static uint64_t rounds = 60;

/* ---- Sizes, alignment, zero fill ------------------------------------------- */

static void sizes_round_up(void)
{
	size_t odd[] = { 1, 7, page - 1, page, page + 1, 3 * page - 5, 5 * page - 7, 65537 };
	for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
		cowmem_region *r = test_create_or_skip(odd[i]);
		size_t expected = (odd[i] + page - 1) / page * page;
		CHECK(cowmem_size(r) == expected, "cowmem_create(%zu): size %zu, expected %zu",
		      odd[i], cowmem_size(r), expected);
		CHECK(((uintptr_t)cowmem_data(r) & (page - 1)) == 0,
		      "cowmem_create(%zu): address %p not page-aligned", odd[i], cowmem_data(r));
		cowmem_region *clone = cowmem_clone(r);
		CHECK(clone != NULL, "cowmem_clone: %s", strerror(errno));
		CHECK(cowmem_size(clone) == expected, "the clone's size %zu, expected %zu",
		      cowmem_size(clone), expected);
		CHECK(cowmem_destroy(clone) == 0 && cowmem_destroy(r) == 0, "destroy: %s",
		      strerror(errno));
	}
}

/* Huge but mappable: either works exactly, or fails cleanly. */
static void huge_region(void)
{
	cowmem_destroy(test_create_or_skip(page));
	size_t huge = (size_t)1 << 40;
	errno = 0;
	cowmem_region *r = cowmem_create(huge);
	if (!r) {
		CHECK(errno == ENOMEM || errno == EOVERFLOW, "cowmem_create(1 TiB): %s",
		      errno_name(errno));
		printf("a 1 TiB region cannot be mapped here: %s\n", errno_name(errno));
		return;
	}
	CHECK(cowmem_size(r) == huge, "1 TiB region: size %zu", cowmem_size(r));
	unsigned char *data = cowmem_data(r);
	data[huge - 1] = 0x7f;
	data[0] = 0x01;
	CHECK(data[huge - 1] == 0x7f && data[huge / 2] == 0, "1 TiB region: bytes");
	cowmem_region *c = cowmem_clone(r);
	if (c) {
		unsigned char *clone = cowmem_data(c);
		CHECK(clone[huge - 1] == 0x7f && clone[0] == 0x01 && clone[huge / 3] == 0,
		      "clone of a 1 TiB region: bytes");
		CHECK(cowmem_destroy(c) == 0, "destroy: %s", strerror(errno));
	} else {
		CHECK(errno == ENOMEM, "clone of a 1 TiB region: %s", errno_name(errno));
	}
	CHECK(cowmem_destroy(r) == 0, "destroy: %s", strerror(errno));
}

static void check_aligned_and_zero(cowmem_region *region, const char *what)
{
	unsigned char *data = cowmem_data(region);
	size_t size = cowmem_size(region);
	CHECK(data != NULL, "%s: data != NULL", what);
	CHECK((uintptr_t)data % page == 0, "%s: data %p page-aligned", what, (void *)data);
	CHECK(cowmem_data(region) == data, "%s: data stable across calls", what);
	for (size_t i = 0; i < size; i++)
		CHECK(data[i] == 0, "%s: byte %zu of %zu is 0, got 0x%02x", what, i, size,
		      data[i]);
}

static void alignment_and_zero_fill(void)
{
	const size_t sizes[] = { 1, page, 3 * page + 1, 64 * page, 1 << 20, 8 << 20 };
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		cowmem_region *region = test_create_or_skip(sizes[i]);
		/* The clone first: it must see zeros that the source never
		 * materialized. */
		cowmem_region *clone = cowmem_clone(region);
		CHECK(clone != NULL, "clone of create(%zu): %s", sizes[i], strerror(errno));
		cowmem_region *grandchild = cowmem_clone(clone);
		CHECK(grandchild != NULL, "clone of clone: %s", strerror(errno));
		check_aligned_and_zero(grandchild, "clone of clone of fresh region");
		cowmem_destroy(grandchild);
		check_aligned_and_zero(clone, "clone of fresh region");
		cowmem_destroy(clone);
		check_aligned_and_zero(region, "fresh region");
		cowmem_destroy(region);
	}
}

/* ---- NULL and failed calls ------------------------------------------------ */

static void destroy_null(void)
{
	errno = 0;
	CHECK(cowmem_destroy(NULL) == 0 && errno == 0,
	      "cowmem_destroy(NULL) before the library started: 0, errno untouched; errno %s",
	      errno_name(errno));
	cowmem_destroy(test_create_or_skip(page));
	errno = 0;
	CHECK(cowmem_destroy(NULL) == 0 && errno == 0,
	      "cowmem_destroy(NULL): 0, errno untouched; errno %s", errno_name(errno));
}

/* Every call that must fail, once each (errnos.c checks each errno). */
static void call_with_bad_arguments(void)
{
	const size_t bad_sizes[] = { 0, SIZE_MAX, SIZE_MAX - page + 2, (size_t)1 << 62 };
	for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++)
		CHECK(cowmem_create(bad_sizes[i]) == NULL, "create(%zu) to fail", bad_sizes[i]);
	CHECK(cowmem_clone(NULL) == NULL, "clone(NULL) to fail");
	CHECK(cowmem_data(NULL) == NULL, "data(NULL) to fail");
	CHECK(cowmem_size(NULL) == 0, "size(NULL) to fail");
	CHECK(cowmem_destroy(NULL) == 0, "destroy(NULL) == 0");
	CHECK(cowmem_prefault(NULL, 0, 1, 0) == -1, "prefault(NULL) to fail");
}

static void failed_calls_change_nothing(void)
{
	const size_t size = 16 * page;
	test_rng local = { 12345 };
	unsigned char *model_source = malloc(size), *model_clone = malloc(size);
	CHECK(model_source && model_clone, "malloc");

	cowmem_region *source = test_create_or_skip(size);
	test_rng_fill(&local, model_source, size);
	memcpy(cowmem_data(source), model_source, size);
	cowmem_region *clone = cowmem_clone(source);
	CHECK(clone != NULL, "clone: %s", strerror(errno));
	memcpy(model_clone, model_source, size);
	/* Change a page in each so both hold private and shared pages. */
	memset((unsigned char *)cowmem_data(clone) + 3 * page, 0xc1, page);
	memset(model_clone + 3 * page, 0xc1, page);
	memset((unsigned char *)cowmem_data(source) + 5 * page, 0x5e, page);
	memset(model_source + 5 * page, 0x5e, page);

	/*
	 * The library's helper threads may come and go on their own (and with
	 * them a stack mapping), so a round whose counts moved is tried again:
	 * a leak shows in every round, a helper thread's exit in one.
	 */
	int descriptors_before = 0, descriptors_after = 0;
	int mappings_before = 0, mappings_after = 0;
	for (int attempt = 0; attempt < 20; attempt++) {
		descriptors_before = proc_count_fds();
		mappings_before = proc_count_maps();
		for (int round = 0; round < 3; round++)
			call_with_bad_arguments();
		descriptors_after = proc_count_fds();
		mappings_after = proc_count_maps();
		if (descriptors_after == descriptors_before && mappings_after == mappings_before)
			break;
		struct timespec pause = { 0, 20 * 1000 * 1000 };
		nanosleep(&pause, NULL);
	}
	CHECK(descriptors_after == descriptors_before,
	      "failed calls leave no descriptor: %d before, %d after", descriptors_before,
	      descriptors_after);
	CHECK(mappings_after == mappings_before,
	      "failed calls leave no mapping: %d before, %d after", mappings_before,
	      mappings_after);

	CHECK(cowmem_size(source) == size && cowmem_size(clone) == size, "sizes unchanged");
	CHECK_BYTES(cowmem_data(source), model_source, size, "the source");
	CHECK_BYTES(cowmem_data(clone), model_clone, size, "the clone");
	CHECK(cowmem_destroy(clone) == 0, "destroy clone: %s", strerror(errno));
	CHECK_BYTES(cowmem_data(source), model_source, size, "the source after the clone is gone");
	CHECK(cowmem_destroy(source) == 0, "destroy source: %s", strerror(errno));
	free(model_source);
	free(model_clone);
}

/* ---- cowmem_prefault inside the region ------------------------------------- */

static void prefault_must_work(cowmem_region *r, size_t offset, size_t length,
			       int for_write, const char *what)
{
	errno = 0;
	int rc = cowmem_prefault(r, offset, length, for_write);
	CHECK(rc == 0, "cowmem_prefault(%s, offset %zu, length %zu, for_write %d): "
	      "0; got %d, %s", what, offset, length, for_write, rc, errno_name(errno));
}

static void prefault_inside(void)
{
	const size_t size = 16 * page;
	cowmem_region *a = test_create_or_skip(size);
	unsigned char *model = malloc(size);
	CHECK(model != NULL, "malloc");
	memset(model, 0, size);
	/* Some pages written, some holes; a clone; A writes after it. */
	for (size_t p = 0; p < 16; p += 3)
		test_rng_fill(&rng, model + p * page, page);
	memcpy(cowmem_data(a), model, size);
	cowmem_region *b = cowmem_clone(a);
	CHECK(b != NULL, "cowmem_clone: %s", strerror(errno));
	unsigned char *a_model = malloc(size);
	CHECK(a_model != NULL, "malloc");
	memcpy(a_model, model, size);
	test_rng_fill(&rng, a_model + 3 * page, page);
	memcpy((char *)cowmem_data(a) + 3 * page, a_model + 3 * page, page);
	cowmem_region *c = cowmem_clone(a); /* waits for A's page 3 */
	CHECK(c != NULL, "cowmem_clone: %s", strerror(errno));

	cowmem_region *all[] = { a, b, c };
	const char *names[] = { "A", "B (clone)", "C (clone, pages lent)" };
	for (int i = 0; i < 3; i++) {
		cowmem_region *r = all[i];
		prefault_must_work(r, size, 0, 0, names[i]);
		prefault_must_work(r, 0, 0, 1, names[i]);
		prefault_must_work(r, 1, 1, 0, names[i]);                /* misaligned */
		prefault_must_work(r, page - 1, 2, 1, names[i]);         /* straddles */
		prefault_must_work(r, 0, page / 2, 0, names[i]);
		prefault_must_work(r, page - 1, 3 * page, 1, names[i]);
		prefault_must_work(r, 5 * page + 17, 3 * page, 0, names[i]);
		prefault_must_work(r, 2 * page + 1, page, 1, names[i]);
		prefault_must_work(r, 0, size, -1, names[i]);          /* any non-zero writes */
		prefault_must_work(r, size - 1, 1, 42, names[i]);
		prefault_must_work(r, 0, size, 0, names[i]);
		prefault_must_work(r, 0, size, 1, names[i]);
	}
	CHECK_BYTES(cowmem_data(a), a_model, size, "A after prefaults");
	CHECK_BYTES(cowmem_data(b), model, size, "B after prefaults");
	CHECK_BYTES(cowmem_data(c), a_model, size, "C after prefaults");
	/* Isolation after prefaulting for write: still copy-on-write. */
	memset(cowmem_data(b), 0xee, page);
	memset((char *)cowmem_data(c) + 3 * page, 0xdd, page);
	CHECK_BYTES(cowmem_data(a), a_model, size, "A after writes to its prefaulted clones");
	for (int i = 0; i < 3; i++)
		CHECK(cowmem_destroy(all[i]) == 0, "destroy: %s", strerror(errno));
	free(model);
	free(a_model);
}

/* ---- What the library says about itself ------------------------------------ */

static void backend_named(void)
{
	const char *backend = cowmem_backend(), *features = cowmem_features();
	if (!backend && (errno == EPERM || errno == ENOSYS))
		test_skip("the kernel mechanism is not available here (cowmem_backend: %s)",
			  strerror(errno));
	CHECK(backend != NULL, "a backend name: %s", errno_name(errno));
	CHECK(features != NULL, "a feature list: %s", errno_name(errno));
	CHECK(strcmp(backend, "userfaultfd") == 0 || strcmp(backend, "userfaultfd-user") == 0 ||
	      strcmp(backend, "memfd") == 0, "a known backend, got '%s'", backend);
	const char *forced = getenv("COWMEM_BACKEND");
	if (forced && *forced && strcmp(forced, "auto") != 0)
		CHECK(strcmp(backend, forced) == 0, "COWMEM_BACKEND=%s in effect, got %s",
		      forced, backend);
	printf("backend %s, features %s\n", backend, features);
}

static void page_size(void)
{
	CHECK(cowmem_page_size() == page && (page & (page - 1)) == 0,
	      "cowmem_page_size() %zu, sysconf %zu", cowmem_page_size(), page);
}

/* Nothing waits: handle returns 0 at once, before and while the library's
 * own server runs (a clone exists). */
static void server_handle_idle(void)
{
	for (int i = 0; i < 3; i++) {
		errno = 0;
		int n = cowmem_server_handle();
		CHECK(n == 0, "cowmem_server_handle() with nothing waiting: 0, got %d (%s)", n,
		      errno_name(errno));
	}
	cowmem_region *a = test_create_or_skip(4 * page);
	cowmem_region *b = cowmem_clone(a);
	CHECK(b != NULL, "cowmem_clone: %s", strerror(errno));
	errno = 0;
	int n = cowmem_server_handle();
	CHECK(n == 0, "cowmem_server_handle() while the library serves, nothing waiting: %d, %s",
	      n, errno_name(errno));
	memset(cowmem_data(a), 1, 4 * page);
	CHECK(((unsigned char *)cowmem_data(b))[page] == 0, "clone isolated");
	CHECK(cowmem_destroy(b) == 0 && cowmem_destroy(a) == 0, "destroy");
}

struct host {
	int fd;
	atomic_bool stop;
	atomic_ulong handled;
};

static void *host_loop(void *argument)
{
	struct host *h = argument;
	struct pollfd pfd = { .fd = h->fd, .events = POLLIN };
	while (!atomic_load(&h->stop)) {
		if (poll(&pfd, 1, 50) > 0) {
			int n = cowmem_server_handle();
			CHECK(n >= 0, "cowmem_server_handle: %s", strerror(errno));
			atomic_fetch_add(&h->handled, (unsigned long)n);
		}
	}
	return NULL;
}

/* Once the library's server thread has stopped (every region destroyed),
 * a claim either fails with EBUSY or succeeds; if it succeeds, the host's
 * thread must then serve every fault (nothing hangs). The case's process
 * is fresh and has no other thread (a child of a threaded process may not
 * start threads under every tool: ThreadSanitizer). */
static void claim_after_library(void)
{
	int initial_tasks = proc_count_tasks();
	cowmem_region *a = test_create_or_skip(32 * page);
	memset(cowmem_data(a), 0x42, 32 * page);
	cowmem_region *b = cowmem_clone(a);
	CHECK(b != NULL, "cowmem_clone: %s", strerror(errno));
	CHECK(cowmem_destroy(b) == 0 && cowmem_destroy(a) == 0, "destroy: %s", strerror(errno));
	/* The library's thread exits with the last region; wait for that. */
	for (int tries = 0; tries < 500 && proc_count_tasks() > initial_tasks; tries++)
		usleep(2000);
	errno = 0;
	int fd = cowmem_server_claim();
	if (fd < 0) {
		printf("claim after the library's server stopped: -1, %s\n", errno_name(errno));
		CHECK(errno == EBUSY, "a refused claim: EBUSY, got %s", errno_name(errno));
		return;
	}
	printf("claim after the library's server stopped: a descriptor; the host then serves\n");
	struct host h = { .fd = fd };
	pthread_t thread;
	CHECK(pthread_create(&thread, NULL, host_loop, &h) == 0, "pthread_create");
	a = test_create_or_skip(32 * page);
	memset(cowmem_data(a), 0x43, 32 * page);
	b = cowmem_clone(a);
	CHECK(b != NULL, "cowmem_clone: %s", strerror(errno));
	memset(cowmem_data(a), 0x44, page);
	cowmem_region *c = cowmem_clone(a);
	CHECK(c != NULL, "cowmem_clone: %s", strerror(errno));
	for (size_t i = 0; i < 32 * page; i++) {
		CHECK(((unsigned char *)cowmem_data(b))[i] == 0x43, "byte %zu of B", i);
		CHECK(((unsigned char *)cowmem_data(c))[i] == (i < page ? 0x44 : 0x43),
		      "byte %zu of C", i);
	}
	errno = 0;
	CHECK(cowmem_server_claim() == -1 && errno == EBUSY,
	      "a second claim: -1, EBUSY; errno %s", errno_name(errno));
	CHECK(cowmem_destroy(c) == 0 && cowmem_destroy(b) == 0 && cowmem_destroy(a) == 0,
	      "destroy: %s", strerror(errno));
	atomic_store(&h.stop, true);
	pthread_join(thread, NULL);
}

/* ---- Destroy while another thread touches the region -------------------- */

#define RACE_PAGES 64

enum race_mode { RACE_READ, RACE_WRITE, RACE_SYSCALL, RACE_LENDER, RACE_MODES };
static const char *const race_names[] = { "read", "write", "write(2) from it",
					  "destroy the lender" };

struct race {
	enum race_mode mode;
	unsigned char *data;       /* the region the toucher uses */
	const unsigned char *model;
	atomic_ulong pages_done;   /* pages touched so far (all passes) */
	atomic_bool destroyed;     /* main has destroyed the region */
	atomic_bool finished;
	int signal_number;         /* what ended the toucher, 0 if nothing */
	void *fault_at;
	int syscall_error;
	unsigned long wrong_bytes;
	int sink_fd;
};

static void *toucher(void *argument)
{
	struct race *r = argument;

	if (r->mode == RACE_SYSCALL) {
		/* pwrite copies from the region into the sink: the kernel
		 * faults the pages in; once they are gone, EFAULT. */
		for (;;) {
			for (size_t p = 0; p < RACE_PAGES; p++) {
				ssize_t n = pwrite(r->sink_fd, r->data + p * page, page, 0);
				if (n < 0) {
					r->syscall_error = errno;
					goto out;
				}
				atomic_fetch_add(&r->pages_done, 1);
			}
		}
	}
	int caught = sigsetjmp(probe_jump, 1);
	if (caught) {
		probe_armed = 0;
		r->signal_number = caught;
		r->fault_at = probe_fault_address;
		goto out;
	}
	probe_armed = 1;
	for (unsigned pass = 0;; pass++) {
		for (size_t p = 0; p < RACE_PAGES; p++) {
			volatile unsigned char *bytes = r->data + p * page;
			if (r->mode == RACE_WRITE) {
				bytes[pass % page] = (unsigned char)pass;
			} else {
				/* Compare word by word: a fault may come in the
				 * middle; what was read before must be right. */
				for (size_t i = 0; i < page; i += 512)
					if (bytes[i] != r->model[p * page + i])
						r->wrong_bytes++;
			}
			atomic_fetch_add(&r->pages_done, 1);
		}
		if (r->mode == RACE_LENDER && atomic_load(&r->destroyed) && pass > 0)
			break; /* read the whole clone again after the destroy */
		if (r->mode == RACE_LENDER && pass > 1000)
			break;
	}
	probe_armed = 0;
out:
	atomic_store(&r->finished, true);
	return NULL;
}

static void destroy_while_touched(enum race_mode mode)
{
	const size_t size = RACE_PAGES * page;
	unsigned char *model = malloc(size), *lent_model = malloc(size);
	CHECK(model && lent_model, "malloc");
	int sink = (int)syscall(SYS_memfd_create, "bad-input-sink", 1u /* CLOEXEC */);
	CHECK(sink >= 0, "memfd_create: %s", strerror(errno));
	probe_install();

	cowmem_region *source = test_create_or_skip(size);
	test_rng_fill(&rng, model, size);
	for (size_t p = 3; p < RACE_PAGES; p += 7)
		memset(model + p * page, 0, page); /* holes */
	memcpy(cowmem_data(source), model, size);
	cowmem_region *first = cowmem_clone(source); /* freezes the source */
	CHECK(first != NULL, "cowmem_clone: %s", strerror(errno));

	unsigned long ended = 0, touched = 0, early = 0;
	/* The rounds of this mode, numbered as when the modes took turns. */
	for (unsigned round = mode; round < rounds * RACE_MODES; round += RACE_MODES) {
		struct race r = { .mode = mode, .model = model, .sink_fd = sink };
		cowmem_region *lender = NULL, *victim;

		/* Odd rounds: the source writes first, so the clone waits for
		 * lent pages; the lender mode always has a lender. */
		if (round % 2 || mode == RACE_LENDER) {
			lender = cowmem_clone(source);
			CHECK(lender != NULL, "cowmem_clone: %s", strerror(errno));
			memcpy(lent_model, model, size);
			for (size_t p = 1; p < RACE_PAGES; p += 5)
				test_rng_fill(&rng, lent_model + p * page, page);
			for (size_t p = 1; p < RACE_PAGES; p += 5)
				memcpy((char *)cowmem_data(lender) + p * page,
				       lent_model + p * page, page);
			victim = cowmem_clone(lender);
			r.model = lent_model;
		} else {
			victim = cowmem_clone(source);
		}
		CHECK(victim != NULL, "cowmem_clone: %s", strerror(errno));
		r.data = cowmem_data(victim);

		pthread_t thread;
		CHECK(pthread_create(&thread, NULL, toucher, &r) == 0, "pthread_create");
		/* Destroy after a random number of pages of the first pass (0:
		 * at once, maybe before the first touch), while pages are still
		 * being filled. */
		unsigned long after = (unsigned long)test_rng_below(&rng, RACE_PAGES);
		while (atomic_load(&r.pages_done) < after && !atomic_load(&r.finished))
			;
		if (atomic_load(&r.pages_done) < RACE_PAGES)
			early++;
		if (mode == RACE_LENDER) {
			CHECK(cowmem_destroy(lender) == 0, "destroy lender: %s", strerror(errno));
			lender = NULL;
		} else {
			CHECK(cowmem_destroy(victim) == 0, "destroy: %s", strerror(errno));
		}
		atomic_store(&r.destroyed, true);

		/* The toucher must end (fault) soon; a hang fails the test. */
		for (int tries = 0; !atomic_load(&r.finished) && tries < 2000; tries++)
			usleep(5000);
		if (!atomic_load(&r.finished))
			FAIL("destroy while %s: the other thread never ended (round %u, "
			     "destroyed after %lu pages)", race_names[mode], round, after);
		pthread_join(thread, NULL);
		touched += atomic_load(&r.pages_done);
		CHECK(r.wrong_bytes == 0, "destroy while %s (round %u): %lu wrong "
		       "bytes read before the destroy", race_names[mode], round,
		       r.wrong_bytes);
		if (mode == RACE_LENDER) {
			CHECK(r.signal_number == 0, "destroying the lender: the reader of "
			       "its clone got %s", signal_name(r.signal_number));
			CHECK_BYTES(r.data, lent_model, size, "a clone whose lender was "
				    "destroyed while it was read");
			CHECK(cowmem_destroy(victim) == 0, "destroy: %s", strerror(errno));
			ended++;
		} else if (mode == RACE_SYSCALL) {
			CHECK(r.syscall_error == EFAULT, "pwrite from a destroyed region: "
			       "EFAULT, got %s", errno_name(r.syscall_error));
			ended++;
		} else {
			CHECK(r.signal_number == SIGSEGV, "touching a destroyed region: "
			       "SIGSEGV, got %s", r.signal_number ?
			       signal_name(r.signal_number) : "nothing");
			CHECK((unsigned char *)r.fault_at >= r.data &&
			       (unsigned char *)r.fault_at < r.data + size,
			       "SIGSEGV at %p, outside the destroyed region", r.fault_at);
			ended++;
		}
		if (lender)
			CHECK(cowmem_destroy(lender) == 0, "destroy: %s", strerror(errno));
	}
	CHECK_BYTES(cowmem_data(first), model, size, "a clone kept through the races");
	CHECK(cowmem_destroy(first) == 0 && cowmem_destroy(source) == 0, "destroy");
	close(sink);
	free(model);
	free(lent_model);
	printf("%" PRIu64 " rounds, %lu destroyed during the first pass (pages still being filled); "
	       "%lu pages touched; %s %lu times\n", rounds, early, touched,
	       mode == RACE_LENDER ? "the reader unaffected" :
	       mode == RACE_SYSCALL ? "EFAULT" : "SIGSEGV in the region", ended);
	CHECK(ended == rounds, "%lu of %" PRIu64 " rounds ended as they must", ended, rounds);
}

static void destroy_while_read(void) { destroy_while_touched(RACE_READ); }
static void destroy_while_written(void) { destroy_while_touched(RACE_WRITE); }
static void destroy_while_in_write(void) { destroy_while_touched(RACE_SYSCALL); }
static void destroy_lender_while_read(void) { destroy_while_touched(RACE_LENDER); }

#define UFFD_BACKENDS "userfaultfd,userfaultfd-user"

static const struct test_case cases[] = {
	TEST_CASE("sizes-round-up", sizes_round_up),
	TEST_CASE("one-tib-region", huge_region),
	TEST_CASE("aligned-and-zero-filled", alignment_and_zero_fill),
	TEST_CASE("destroy-null", destroy_null),
	TEST_CASE("failed-calls-change-nothing", failed_calls_change_nothing),
	TEST_CASE("prefault-inside", prefault_inside),
	TEST_CASE("backend-named", backend_named),
	TEST_CASE("page-size", page_size),
	TEST_CASE("server-handle-idle", server_handle_idle, .backends = UFFD_BACKENDS),
	TEST_CASE("server-claim-after-library", claim_after_library, .backends = UFFD_BACKENDS,
		  .timeout = 60),
	TEST_CASE("destroy-while-read", destroy_while_read),
	TEST_CASE("destroy-while-written", destroy_while_written),
	TEST_CASE("destroy-while-in-write(2)", destroy_while_in_write),
	TEST_CASE("destroy-lender-while-read", destroy_lender_while_read),
};

int main(int argc, char **argv)
{
	page = test_page_size();
	rng.state = test_seed_init(argc, argv);
	test_option(argc, argv, "rounds", "COWMEM_TEST_ROUNDS", &rounds);
	return test_main(argc, argv, cases, TEST_CASE_COUNT(cases));
}
