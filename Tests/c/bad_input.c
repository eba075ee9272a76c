/*
 * bad_input.c - every public C function with the inputs a buggy program
 * passes: NULL, zero, huge, misaligned, out-of-range, overflowing, handles
 * that were destroyed or never were; and a region destroyed while another
 * thread is touching it.
 *
 * What must happen:
 *   - a bad handle (NULL, destroyed, foreign, misaligned) given to
 *     cowmem_clone, cowmem_destroy or cowmem_prefault fails with EINVAL
 *     and changes nothing (handles are checked against the set of live
 *     ones, so nothing is dereferenced); cowmem_destroy(NULL) is 0;
 *     cowmem_data(NULL) is NULL and cowmem_size(NULL) is 0, both EINVAL;
 *   - sizes: 0 is EINVAL; sizes that cannot be mapped are ENOMEM or
 *     EOVERFLOW; others are rounded up to whole pages;
 *   - cowmem_prefault: a range outside the region (offset or length past
 *     the end, offset + length overflowing) is EINVAL; any range inside,
 *     aligned or not, is 0 and changes no byte, for reading or writing;
 *   - cowmem_server_handle with nothing waiting returns 0 (ENOTSUP without
 *     userfaultfd); cowmem_server_claim while the library's own server
 *     thread runs is EBUSY;
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
#include "test_util.h"
#include "process_util.h"

#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/syscall.h>

extern char **environ;

static size_t page;
static test_rng rng;

static void section(const char *name, int expect_failures_before)
{
	printf("%s %s\n", expect_failures == expect_failures_before ? "ok  " : "FAIL", name);
	fflush(stdout);
}

/* ---- Sizes ----------------------------------------------------------------- */

static void create_must_fail(size_t size, const char *what)
{
	int fds = proc_count_fds(), maps = proc_count_maps();
	errno = 0;
	cowmem_region *r = cowmem_create(size);
	int error = errno;
	EXPECT(r == NULL && (error == ENOMEM || error == EOVERFLOW),
	       "cowmem_create(%s = %zu): NULL with ENOMEM or EOVERFLOW, got %p, %s",
	       what, size, (void *)r, errno_name(error));
	if (r)
		cowmem_destroy(r);
	EXPECT(proc_count_fds() == fds && proc_count_maps() == maps,
	       "a failed cowmem_create(%s) left descriptors (%d -> %d) or "
	       "mappings (%d -> %d)", what, fds, proc_count_fds(), maps,
	       proc_count_maps());
}

static void sizes(void)
{
	int before = expect_failures;

	errno = 0;
	EXPECT(cowmem_create(0) == NULL && errno == EINVAL,
	       "cowmem_create(0): NULL, EINVAL; errno %s", errno_name(errno));
	create_must_fail(SIZE_MAX, "SIZE_MAX");
	create_must_fail(SIZE_MAX - page + 2, "SIZE_MAX - page + 2 (rounding wraps)");
	create_must_fail((size_t)PTRDIFF_MAX, "PTRDIFF_MAX");
	create_must_fail((size_t)PTRDIFF_MAX + 1, "PTRDIFF_MAX + 1");
	create_must_fail((size_t)1 << 62, "2^62");
	create_must_fail((size_t)1 << 48, "2^48 (the whole user address space)");

	size_t odd[] = { 1, 7, page - 1, page, page + 1, 3 * page - 5, 65537 };
	for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
		cowmem_region *r = test_create_or_skip(odd[i]);
		size_t expected = (odd[i] + page - 1) / page * page;
		EXPECT(cowmem_size(r) == expected, "cowmem_create(%zu): size %zu, "
		       "expected %zu", odd[i], cowmem_size(r), expected);
		EXPECT(((uintptr_t)cowmem_data(r) & (page - 1)) == 0,
		       "cowmem_create(%zu): address %p not page-aligned", odd[i],
		       cowmem_data(r));
		EXPECT(cowmem_destroy(r) == 0, "destroy: %s", strerror(errno));
	}
	/* Huge but mappable: either works exactly, or fails cleanly. */
	size_t huge = (size_t)1 << 40;
	errno = 0;
	cowmem_region *r = cowmem_create(huge);
	if (r) {
		EXPECT(cowmem_size(r) == huge, "1 TiB region: size %zu", cowmem_size(r));
		unsigned char *data = cowmem_data(r);
		data[huge - 1] = 0x7f;
		data[0] = 0x01;
		EXPECT(data[huge - 1] == 0x7f && data[huge / 2] == 0, "1 TiB region: bytes");
		cowmem_region *c = cowmem_clone(r);
		if (c) {
			unsigned char *clone = cowmem_data(c);
			EXPECT(clone[huge - 1] == 0x7f && clone[0] == 0x01 &&
			       clone[huge / 3] == 0, "clone of a 1 TiB region: bytes");
			EXPECT(cowmem_destroy(c) == 0, "destroy: %s", strerror(errno));
		} else {
			EXPECT(errno == ENOMEM, "clone of a 1 TiB region: %s",
			       errno_name(errno));
		}
		EXPECT(cowmem_destroy(r) == 0, "destroy: %s", strerror(errno));
	} else {
		EXPECT(errno == ENOMEM || errno == EOVERFLOW,
		       "cowmem_create(1 TiB): %s", errno_name(errno));
	}
	section("sizes: 0, SIZE_MAX, wrapping, 2^62, 2^48, odd sizes, 1 TiB", before);
}

/* ---- Handles ---------------------------------------------------------------- */

static void bad_handle(cowmem_region *handle, const char *what)
{
	errno = 0;
	cowmem_region *c = cowmem_clone(handle);
	EXPECT(c == NULL && errno == EINVAL, "cowmem_clone(%s): NULL, EINVAL; got %p, %s",
	       what, (void *)c, errno_name(errno));
	errno = 0;
	int rc = cowmem_destroy(handle);
	EXPECT(rc == -1 && errno == EINVAL, "cowmem_destroy(%s): -1, EINVAL; got %d, %s",
	       what, rc, errno_name(errno));
	errno = 0;
	rc = cowmem_prefault(handle, 0, page, 0);
	EXPECT(rc == -1 && errno == EINVAL, "cowmem_prefault(%s): -1, EINVAL; got %d, %s",
	       what, rc, errno_name(errno));
	errno = 0;
	rc = cowmem_prefault(handle, 0, 0, 1);
	EXPECT(rc == -1 && errno == EINVAL,
	       "cowmem_prefault(%s, length 0): -1, EINVAL; got %d, %s", what, rc,
	       errno_name(errno));
}

static void handles(void)
{
	int before = expect_failures;
	const size_t size = 8 * page;

	/* NULL, before and after the library has started. */
	errno = 0;
	EXPECT(cowmem_data(NULL) == NULL && errno == EINVAL, "cowmem_data(NULL)");
	errno = 0;
	EXPECT(cowmem_size(NULL) == 0 && errno == EINVAL, "cowmem_size(NULL)");
	errno = 0;
	EXPECT(cowmem_clone(NULL) == NULL && errno == EINVAL, "cowmem_clone(NULL): %s",
	       errno_name(errno));
	errno = 0;
	EXPECT(cowmem_destroy(NULL) == 0 && errno == 0,
	       "cowmem_destroy(NULL): 0, errno untouched; errno %s", errno_name(errno));
	errno = 0;
	EXPECT(cowmem_prefault(NULL, 0, 0, 0) == -1 && errno == EINVAL,
	       "cowmem_prefault(NULL): %s", errno_name(errno));

	cowmem_region *live = test_create_or_skip(size);
	unsigned char *model = malloc(size);
	CHECK(model != NULL, "malloc");
	test_rng_fill(&rng, model, size);
	memcpy(cowmem_data(live), model, size);
	cowmem_region *clone = cowmem_clone(live);
	CHECK(clone != NULL, "cowmem_clone: %s", strerror(errno));

	/* Pointers that never were handles. Nothing is dereferenced. */
	struct { char bytes[256]; } local;
	memset(&local, 0x5a, sizeof local);
	void *heap = malloc(256);
	CHECK(heap != NULL, "malloc");
	memset(heap, 0xa5, 256);
	bad_handle((cowmem_region *)&local, "the address of a local variable");
	bad_handle((cowmem_region *)heap, "a malloc'd block");
	bad_handle((cowmem_region *)(uintptr_t)1, "(cowmem_region *)1");
	bad_handle((cowmem_region *)(uintptr_t)-1, "(cowmem_region *)-1");
	bad_handle((cowmem_region *)((char *)live + 1), "a live handle + 1 (misaligned)");
	bad_handle((cowmem_region *)((char *)live + 8), "a live handle + 8");
	bad_handle((cowmem_region *)cowmem_data(live), "cowmem_data() instead of the handle");
	free(heap);

	/* Destroyed handles: destroy twice, clone and prefault a dead one. */
	cowmem_region *doomed = cowmem_clone(live);
	CHECK(doomed != NULL, "cowmem_clone: %s", strerror(errno));
	EXPECT(cowmem_destroy(doomed) == 0, "first destroy: %s", strerror(errno));
	bad_handle(doomed, "a destroyed clone");
	cowmem_region *doomed_source = test_create_or_skip(size);
	cowmem_region *orphaned_clone = cowmem_clone(doomed_source);
	CHECK(orphaned_clone != NULL, "cowmem_clone: %s", strerror(errno));
	EXPECT(cowmem_destroy(doomed_source) == 0, "destroy: %s", strerror(errno));
	bad_handle(doomed_source, "a destroyed source whose clone lives");
	EXPECT(cowmem_destroy(orphaned_clone) == 0, "destroy: %s", strerror(errno));
	bad_handle(orphaned_clone, "a destroyed clone of a destroyed source");

	/* None of that changed a byte of the live regions. */
	CHECK_BYTES(cowmem_data(live), model, size, "a live region after bad handles");
	CHECK_BYTES(cowmem_data(clone), model, size, "its clone after bad handles");
	EXPECT(cowmem_destroy(clone) == 0 && cowmem_destroy(live) == 0, "destroy");
	free(model);
	section("handles: NULL, foreign, misaligned and destroyed -> EINVAL", before);
}

/* ---- cowmem_prefault ------------------------------------------------------- */

static void prefault_must_fail(cowmem_region *r, size_t offset, size_t length,
			       const char *what)
{
	for (int for_write = 0; for_write < 2; for_write++) {
		errno = 0;
		int rc = cowmem_prefault(r, offset, length, for_write);
		EXPECT(rc == -1 && errno == EINVAL,
		       "cowmem_prefault(%s, offset %zu, length %zu, %s): -1, EINVAL; "
		       "got %d, %s", what, offset, length, for_write ? "write" : "read",
		       rc, errno_name(errno));
	}
}

static void prefault_must_work(cowmem_region *r, size_t offset, size_t length,
			       int for_write, const char *what)
{
	errno = 0;
	int rc = cowmem_prefault(r, offset, length, for_write);
	EXPECT(rc == 0, "cowmem_prefault(%s, offset %zu, length %zu, for_write %d): "
	       "0; got %d, %s", what, offset, length, for_write, rc, errno_name(errno));
}

static void prefault(void)
{
	int before = expect_failures;
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
		prefault_must_fail(r, size + 1, 0, names[i]);
		prefault_must_fail(r, size + page, 1, names[i]);
		prefault_must_fail(r, 0, size + 1, names[i]);
		prefault_must_fail(r, page, size, names[i]);
		prefault_must_fail(r, size, 1, names[i]);
		prefault_must_fail(r, SIZE_MAX, 1, names[i]);
		prefault_must_fail(r, page, SIZE_MAX, names[i]);
		prefault_must_fail(r, SIZE_MAX - 10, 20, names[i]);  /* wraps */
		prefault_must_fail(r, size - 1, SIZE_MAX, names[i]); /* wraps */
		prefault_must_work(r, size, 0, 0, names[i]);
		prefault_must_work(r, 0, 0, 1, names[i]);
		prefault_must_work(r, 1, 1, 0, names[i]);                /* misaligned */
		prefault_must_work(r, page - 1, 2, 1, names[i]);         /* straddles */
		prefault_must_work(r, 5 * page + 17, 3 * page, 0, names[i]);
		prefault_must_work(r, 2 * page + 1, page, 1, names[i]);
		prefault_must_work(r, 0, size, -1, names[i]);          /* any non-zero writes */
		prefault_must_work(r, size - 1, 1, 42, names[i]);
		prefault_must_work(r, 0, size, 0, names[i]);
	}
	CHECK_BYTES(cowmem_data(a), a_model, size, "A after prefaults");
	CHECK_BYTES(cowmem_data(b), model, size, "B after prefaults");
	CHECK_BYTES(cowmem_data(c), a_model, size, "C after prefaults");
	/* Isolation after prefaulting for write: still copy-on-write. */
	memset(cowmem_data(b), 0xee, page);
	memset((char *)cowmem_data(c) + 3 * page, 0xdd, page);
	CHECK_BYTES(cowmem_data(a), a_model, size, "A after writes to its prefaulted clones");
	for (int i = 0; i < 3; i++)
		EXPECT(cowmem_destroy(all[i]) == 0, "destroy: %s", strerror(errno));
	free(model);
	free(a_model);
	section("prefault: past the end, overflowing -> EINVAL; misaligned, empty, "
		"any for_write -> 0, no byte changed", before);
}

/* ---- The rest of the API ------------------------------------------------- */

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

/* In a fresh process (this program run again with --claim-after-library):
 * once the library's server thread has stopped (every region destroyed), a
 * claim either fails with EBUSY or succeeds; if it succeeds, the host's
 * thread must then serve every fault (nothing hangs). */
static int claim_after_library(void)
{
	int initial_tasks = proc_count_tasks();
	cowmem_region *a = cowmem_create(32 * page);
	if (!a)
		return 2;
	memset(cowmem_data(a), 0x42, 32 * page);
	cowmem_region *b = cowmem_clone(a);
	if (!b)
		return 2;
	if (cowmem_destroy(b) != 0 || cowmem_destroy(a) != 0)
		return 2;
	/* The library's thread exits with the last region; wait for that. */
	for (int tries = 0; tries < 500 && proc_count_tasks() > initial_tasks; tries++)
		usleep(2000);
	errno = 0;
	int fd = cowmem_server_claim();
	if (fd < 0) {
		printf("     claim after the library's server stopped: -1, %s\n",
		       errno_name(errno));
		return errno == EBUSY ? 0 : 1;
	}
	printf("     claim after the library's server stopped: a descriptor; "
	       "the host then serves\n");
	struct host h = { .fd = fd };
	pthread_t thread;
	if (pthread_create(&thread, NULL, host_loop, &h) != 0)
		return 2;
	a = cowmem_create(32 * page);
	memset(cowmem_data(a), 0x43, 32 * page);
	b = cowmem_clone(a);
	memset(cowmem_data(a), 0x44, page);
	cowmem_region *c = cowmem_clone(a);
	int bad = 0;
	for (size_t i = 0; i < 32 * page; i++) {
		bad |= ((unsigned char *)cowmem_data(b))[i] != 0x43;
		bad |= ((unsigned char *)cowmem_data(c))[i] != (i < page ? 0x44 : 0x43);
	}
	errno = 0;
	if (cowmem_server_claim() != -1 || errno != EBUSY) {
		printf("     a second claim did not fail with EBUSY\n");
		bad = 1;
	}
	cowmem_destroy(c);
	cowmem_destroy(b);
	cowmem_destroy(a);
	atomic_store(&h.stop, true);
	pthread_join(thread, NULL);
	return bad;
}

static void rest_of_api(void)
{
	int before = expect_failures;
	const char *backend = cowmem_backend(), *features = cowmem_features();
	bool uffd = backend && strncmp(backend, "userfaultfd", 11) == 0;

	EXPECT(backend && (strcmp(backend, "userfaultfd") == 0 ||
			   strcmp(backend, "userfaultfd-user") == 0 ||
			   strcmp(backend, "memfd") == 0),
	       "cowmem_backend(): a known name, got %s", backend ? backend : "NULL");
	EXPECT(features != NULL, "cowmem_features(): a string");
	EXPECT(cowmem_page_size() == page && (page & (page - 1)) == 0,
	       "cowmem_page_size() %zu, sysconf %zu", cowmem_page_size(), page);

	/* Nothing waits: handle returns 0 at once (or ENOTSUP, memfd). */
	for (int i = 0; i < 3; i++) {
		errno = 0;
		int n = cowmem_server_handle();
		if (uffd)
			EXPECT(n == 0, "cowmem_server_handle() with nothing waiting: 0, "
			       "got %d (%s)", n, errno_name(errno));
		else
			EXPECT(n == -1 && errno == ENOTSUP,
			       "cowmem_server_handle() without userfaultfd: -1, ENOTSUP; "
			       "got %d, %s", n, errno_name(errno));
	}
	/* While the library's own server runs (a clone exists): EBUSY. */
	cowmem_region *a = test_create_or_skip(4 * page);
	cowmem_region *b = cowmem_clone(a);
	CHECK(b != NULL, "cowmem_clone: %s", strerror(errno));
	errno = 0;
	int fd = cowmem_server_claim();
	if (uffd)
		EXPECT(fd == -1 && errno == EBUSY,
		       "cowmem_server_claim() while the library serves: -1, EBUSY; got "
		       "%d, %s", fd, errno_name(errno));
	else
		EXPECT(fd == -1 && errno == ENOTSUP,
		       "cowmem_server_claim() without userfaultfd: -1, ENOTSUP; got %d, %s",
		       fd, errno_name(errno));
	errno = 0;
	EXPECT(cowmem_server_handle() == (uffd ? 0 : -1),
	       "cowmem_server_handle() while the library serves, nothing waiting");
	memset(cowmem_data(a), 1, 4 * page);
	EXPECT(((unsigned char *)cowmem_data(b))[page] == 0, "clone isolated");
	EXPECT(cowmem_destroy(b) == 0 && cowmem_destroy(a) == 0, "destroy");

	if (uffd) {
		/* A fresh process, not a fork: the child of a threaded process
		 * may not start threads under every tool (ThreadSanitizer). */
		char *argv[] = { "bad_input", "--claim-after-library", NULL };
		pid_t pid;
		fflush(stdout);
		int rc = posix_spawn(&pid, self_path(), NULL, NULL, argv, environ);
		CHECK(rc == 0, "posix_spawn: %s", strerror(rc));
		int status = wait_bounded(pid, 60);
		EXPECT(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
		       "claim after the library's server stopped, in a fresh process: %s",
		       status == -1 ? "hung" : describe_status(status));
	}
	section("backend, features, page size, server_handle with nothing waiting, "
		"server_claim while the library serves -> EBUSY", before);
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

static void destroy_while_touched(unsigned rounds)
{
	int before = expect_failures;
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

	unsigned long segv[RACE_MODES] = { 0 }, efault[RACE_MODES] = { 0 },
		      clean[RACE_MODES] = { 0 }, touched[RACE_MODES] = { 0 },
		      early[RACE_MODES] = { 0 };
	for (unsigned round = 0; round < rounds * RACE_MODES; round++) {
		enum race_mode mode = (enum race_mode)(round % RACE_MODES);
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
			early[mode]++;
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
		if (!atomic_load(&r.finished)) {
			printf("FAIL destroy while %s: the other thread never ended "
			       "(round %u, destroyed after %lu pages)\n", race_names[mode],
			       round, after);
			fflush(stdout);
			_exit(TEST_EXIT_FAIL);
		}
		pthread_join(thread, NULL);
		touched[mode] += atomic_load(&r.pages_done);
		EXPECT(r.wrong_bytes == 0, "destroy while %s (round %u): %lu wrong "
		       "bytes read before the destroy", race_names[mode], round,
		       r.wrong_bytes);
		if (mode == RACE_LENDER) {
			EXPECT(r.signal_number == 0, "destroying the lender: the reader of "
			       "its clone got %s", signal_name(r.signal_number));
			CHECK_BYTES(r.data, lent_model, size, "a clone whose lender was "
				    "destroyed while it was read");
			CHECK(cowmem_destroy(victim) == 0, "destroy: %s", strerror(errno));
			clean[mode]++;
		} else if (mode == RACE_SYSCALL) {
			EXPECT(r.syscall_error == EFAULT, "pwrite from a destroyed region: "
			       "EFAULT, got %s", errno_name(r.syscall_error));
			efault[mode]++;
		} else {
			EXPECT(r.signal_number == SIGSEGV, "touching a destroyed region: "
			       "SIGSEGV, got %s", r.signal_number ?
			       signal_name(r.signal_number) : "nothing");
			EXPECT((unsigned char *)r.fault_at >= r.data &&
			       (unsigned char *)r.fault_at < r.data + size,
			       "SIGSEGV at %p, outside the destroyed region", r.fault_at);
			segv[mode]++;
		}
		if (lender)
			CHECK(cowmem_destroy(lender) == 0, "destroy: %s", strerror(errno));
	}
	CHECK_BYTES(cowmem_data(first), model, size, "a clone kept through the races");
	CHECK(cowmem_destroy(first) == 0 && cowmem_destroy(source) == 0, "destroy");
	close(sink);
	free(model);
	free(lent_model);
	printf("     %u rounds each (destroyed during the first pass, pages still "
	       "being filled: read %lu, write %lu, write(2) %lu, lender %lu)\n",
	       rounds, early[RACE_READ], early[RACE_WRITE], early[RACE_SYSCALL],
	       early[RACE_LENDER]);
	printf("     read -> SIGSEGV %lu (%lu pages read), write -> SIGSEGV %lu "
	       "(%lu pages), write(2) -> EFAULT %lu (%lu pages), lender destroyed "
	       "-> reader unaffected %lu\n", segv[RACE_READ], touched[RACE_READ],
	       segv[RACE_WRITE], touched[RACE_WRITE], efault[RACE_SYSCALL],
	       touched[RACE_SYSCALL], clean[RACE_LENDER]);
	section("destroy while another thread reads, writes or write(2)s the region: "
		"SIGSEGV/EFAULT, right bytes before, no hang", before);
}

int main(int argc, char **argv)
{
	uint64_t rounds = 60;

	page = test_page_size();
	if (argc == 2 && strcmp(argv[1], "--claim-after-library") == 0) {
		alarm(60);
		return claim_after_library();
	}
	rng.state = test_seed_init(argc, argv);
	test_option(argc, argv, "rounds", "COWMEM_TEST_ROUNDS", &rounds);
	alarm(300);
	cowmem_destroy(test_create_or_skip(page));

	sizes();
	handles();
	prefault();
	rest_of_api();
	destroy_while_touched((unsigned)rounds);

	if (expect_failures) {
		printf("bad_input: %d checks failed\n", expect_failures);
		return TEST_EXIT_FAIL;
	}
	printf("bad_input: all cases passed\n");
	return TEST_EXIT_PASS;
}
