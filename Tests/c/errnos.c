/*
 * errnos.c - one named case per documented errno of the public functions.
 *
 * A case is named function/ERRNO/how: it makes one call fail in one
 * documented way and checks the result (-1, NULL or 0, as the function's
 * page says) and errno, and that the failed call changed nothing it can
 * see (the bytes of live regions, descriptors, mappings). A case that needs
 * the library started in a particular way sets COWMEM_BACKEND or
 * COWMEM_DISABLE in .environment (each case meets a library that has not
 * started: harness.h). A documented errno that only exhausting a resource
 * or injecting a failure produces is an entry with .covered_by, naming the
 * program that makes it (or saying it is not tested), so that -l lists
 * every documented errno of every function; Support/check-man compares
 * that list with the man pages' ERRORS sections.
 *
 * What is not an errno (cowmem_destroy(NULL) is 0, sizes round up, valid
 * prefault ranges) is in bad_input.c.
 */
#include "harness.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <sys/resource.h>

static size_t page;

/* Evaluates `failed` (the call and its failure test) with errno cleared,
 * and checks that it failed with `expected` (or `also`, where the page
 * treats the two alike; 0 for none). `what` says which call, for the
 * message. */
#define CHECK_FAILS_WITH_WHAT(failed, expected, also, what)                        \
	do {                                                                       \
		errno = 0;                                                         \
		bool failed_ = (failed);                                           \
		int error_ = errno;                                                \
		CHECK(failed_, "%s did not fail (errno %s)", (what),               \
		      errno_name(error_));                                         \
		CHECK(error_ == (expected) || ((also) && error_ == (also)),        \
		      "%s: errno %s, expected %s%s%s", (what), errno_name(error_), \
		      errno_name(expected), (also) ? " or " : "",                  \
		      (also) ? errno_name(also) : "");                             \
	} while (0)
#define CHECK_FAILS_WITH(failed, expected, also)                                   \
	CHECK_FAILS_WITH_WHAT(failed, expected, also, #failed)

/* ---- Fixtures ------------------------------------------------------------- */

static cowmem_region *some_region(void)
{
	static cowmem_region *r;
	if (!r)
		r = test_create_or_skip(4 * page);
	return r;
}

/* A live region with random bytes, its clone, and their model: the bytes
 * every bad call must leave alone. */
struct live {
	cowmem_region *region, *clone;
	unsigned char *model;
	size_t size;
};

static struct live live_regions(void)
{
	struct live l = { .size = 8 * page };
	l.region = test_create_or_skip(l.size);
	l.model = malloc(l.size);
	CHECK(l.model != NULL, "malloc");
	test_rng rng = { 4242 };
	test_rng_fill(&rng, l.model, l.size);
	memcpy(cowmem_data(l.region), l.model, l.size);
	l.clone = cowmem_clone(l.region);
	CHECK(l.clone != NULL, "cowmem_clone: %s", strerror(errno));
	return l;
}

static void live_unchanged(struct live *l)
{
	CHECK_BYTES(cowmem_data(l->region), l->model, l->size, "a live region after the bad calls");
	CHECK_BYTES(cowmem_data(l->clone), l->model, l->size, "its clone after the bad calls");
	CHECK(cowmem_destroy(l->clone) == 0 && cowmem_destroy(l->region) == 0, "destroy: %s",
	      strerror(errno));
	free(l->model);
}

/* Pointers that never were handles; nothing may be dereferenced. */
#define FOREIGN_COUNT 7
static void foreign_handles(struct live *l, cowmem_region *out[FOREIGN_COUNT],
			    const char *names[FOREIGN_COUNT])
{
	static struct {
		char bytes[256];
	} local;
	static char heap_block[256];
	memset(&local, 0x5a, sizeof local);
	memset(heap_block, 0xa5, sizeof heap_block);
	cowmem_region *handles[FOREIGN_COUNT] = {
		(cowmem_region *)&local,
		(cowmem_region *)heap_block,
		(cowmem_region *)(uintptr_t)1,
		(cowmem_region *)(uintptr_t)-1,
		(cowmem_region *)((char *)l->region + 1),
		(cowmem_region *)((char *)l->region + 8),
		(cowmem_region *)cowmem_data(l->region),
	};
	const char *labels[FOREIGN_COUNT] = {
		"a static variable's address", "a block of memory", "(cowmem_region *)1",
		"(cowmem_region *)-1", "a live handle + 1 (misaligned)", "a live handle + 8",
		"cowmem_data() instead of the handle",
	};
	memcpy(out, handles, sizeof handles);
	memcpy(names, labels, sizeof labels);
}

/* Handles that were live once: a destroyed clone, a destroyed source whose
 * clone lives, a destroyed clone of a destroyed source. */
#define DESTROYED_COUNT 3
static void destroyed_handles(struct live *l, cowmem_region *out[DESTROYED_COUNT])
{
	cowmem_region *doomed = cowmem_clone(l->region);
	CHECK(doomed != NULL, "cowmem_clone: %s", strerror(errno));
	CHECK(cowmem_destroy(doomed) == 0, "first destroy: %s", strerror(errno));
	cowmem_region *source = test_create_or_skip(l->size);
	cowmem_region *orphan = cowmem_clone(source);
	CHECK(orphan != NULL, "cowmem_clone: %s", strerror(errno));
	CHECK(cowmem_destroy(source) == 0, "destroy: %s", strerror(errno));
	out[0] = doomed;
	out[1] = source;
	out[2] = orphan; /* still live: the caller destroys it in turn */
}

enum handle_call { CALL_CLONE, CALL_DESTROY, CALL_PREFAULT };

static void call_must_fail(enum handle_call call, cowmem_region *handle, const char *what)
{
	switch (call) {
	case CALL_CLONE:
		CHECK_FAILS_WITH_WHAT(cowmem_clone(handle) == NULL, EINVAL, 0, what);
		break;
	case CALL_DESTROY:
		CHECK_FAILS_WITH_WHAT(cowmem_destroy(handle) == -1, EINVAL, 0, what);
		break;
	case CALL_PREFAULT:
		CHECK_FAILS_WITH_WHAT(cowmem_prefault(handle, 0, page, 0) == -1, EINVAL, 0, what);
		CHECK_FAILS_WITH_WHAT(cowmem_prefault(handle, 0, 0, 1) == -1, EINVAL, 0, what);
		break;
	}
}

static void not_a_handle(enum handle_call call)
{
	struct live l = live_regions();
	cowmem_region *handles[FOREIGN_COUNT];
	const char *names[FOREIGN_COUNT];
	foreign_handles(&l, handles, names);
	for (int i = 0; i < FOREIGN_COUNT; i++)
		call_must_fail(call, handles[i], names[i]);
	live_unchanged(&l);
}

static void destroyed(enum handle_call call)
{
	struct live l = live_regions();
	cowmem_region *handles[DESTROYED_COUNT];
	static const char *const names[DESTROYED_COUNT] = {
		"a destroyed clone", "a destroyed source whose clone lives",
		"a destroyed clone of a destroyed source",
	};
	destroyed_handles(&l, handles);
	call_must_fail(call, handles[0], names[0]);
	call_must_fail(call, handles[1], names[1]);
	CHECK(cowmem_destroy(handles[2]) == 0, "destroy the orphaned clone: %s", strerror(errno));
	call_must_fail(call, handles[2], names[2]);
	live_unchanged(&l);
}

/* ---- cowmem_create --------------------------------------------------------- */

static void create_zero(void)
{
	CHECK_FAILS_WITH(cowmem_create(0) == NULL, EINVAL, 0);
}

/* A size that cannot be mapped: NULL with ENOMEM (or EOVERFLOW: the page
 * says to treat them alike), and no descriptor or mapping left behind. */
static void create_must_fail(size_t size)
{
	cowmem_destroy(test_create_or_skip(page)); /* the library's own descriptors */
	int fds = proc_count_fds(), maps = proc_count_maps();
	CHECK_FAILS_WITH(cowmem_create(size) == NULL, ENOMEM, EOVERFLOW);
	CHECK(proc_count_fds() == fds && proc_count_maps() == maps,
	      "a failed cowmem_create(%zu) left descriptors (%d -> %d) or mappings (%d -> %d)",
	      size, fds, proc_count_fds(), maps, proc_count_maps());
}

static void create_size_max(void) { create_must_fail(SIZE_MAX); }
/* Rounding this up to a page wraps; a naive round-up "succeeds". */
static void create_rounding_wraps(void) { create_must_fail(SIZE_MAX - page + 2); }
static void create_ptrdiff_max(void) { create_must_fail((size_t)PTRDIFF_MAX); }
static void create_ptrdiff_max_1(void) { create_must_fail((size_t)PTRDIFF_MAX + 1); }
static void create_2_62(void) { create_must_fail((size_t)1 << 62); }
/* The whole user address space. */
static void create_2_48(void) { create_must_fail((size_t)1 << 48); }

/* With a COWMEM_BACKEND or COWMEM_DISABLE value that names nothing the
 * library refuses to start rather than pick a default. */
static void create_bad_environment(void)
{
	CHECK_FAILS_WITH(cowmem_create(page) == NULL, EINVAL, 0);
}

/* ---- cowmem_clone, cowmem_destroy, cowmem_prefault: bad handles ------------ */

static void clone_null(void) { CHECK_FAILS_WITH(cowmem_clone(NULL) == NULL, EINVAL, 0); }
static void clone_not_a_handle(void) { not_a_handle(CALL_CLONE); }
static void clone_destroyed(void) { destroyed(CALL_CLONE); }
static void destroy_not_a_handle(void) { not_a_handle(CALL_DESTROY); }
static void destroy_destroyed(void) { destroyed(CALL_DESTROY); }
static void prefault_null(void)
{
	CHECK_FAILS_WITH(cowmem_prefault(NULL, 0, 1, 0) == -1, EINVAL, 0);
	CHECK_FAILS_WITH(cowmem_prefault(NULL, 0, 0, 0) == -1, EINVAL, 0);
}
static void prefault_not_a_handle(void) { not_a_handle(CALL_PREFAULT); }
static void prefault_destroyed(void) { destroyed(CALL_PREFAULT); }

/* A region A with written pages and holes, its clone B, and a clone C of A
 * after A wrote again (C waits for a lent page): every range of `ranges`
 * (offset, length; the region has PREFAULT_PAGES pages) fails on each, for
 * reading and writing, and no byte changes. */
#define PREFAULT_PAGES 16
static void prefault_ranges(const size_t (*ranges)[2], size_t count)
{
	const size_t size = PREFAULT_PAGES * page;
	cowmem_region *a = test_create_or_skip(size);
	unsigned char *model = calloc(1, size), *a_model = malloc(size);
	CHECK(model && a_model, "malloc");
	test_rng rng = { 99 };
	for (size_t p = 0; p < PREFAULT_PAGES; p += 3)
		test_rng_fill(&rng, model + p * page, page);
	memcpy(cowmem_data(a), model, size);
	cowmem_region *b = cowmem_clone(a);
	CHECK(b != NULL, "cowmem_clone: %s", strerror(errno));
	memcpy(a_model, model, size);
	test_rng_fill(&rng, a_model + 3 * page, page);
	memcpy((char *)cowmem_data(a) + 3 * page, a_model + 3 * page, page);
	cowmem_region *c = cowmem_clone(a);
	CHECK(c != NULL, "cowmem_clone: %s", strerror(errno));

	cowmem_region *all[] = { a, b, c };
	for (int i = 0; i < 3; i++)
		for (size_t k = 0; k < count; k++)
			for (int for_write = 0; for_write < 2; for_write++) {
				char what[128];
				snprintf(what, sizeof what,
					 "cowmem_prefault(%c, offset %zu, length %zu, %d)",
					 'A' + i, ranges[k][0], ranges[k][1], for_write);
				CHECK_FAILS_WITH_WHAT(cowmem_prefault(all[i], ranges[k][0],
								      ranges[k][1],
								      for_write) == -1,
						      EINVAL, 0, what);
			}
	CHECK_BYTES(cowmem_data(a), a_model, size, "A after the failed prefaults");
	CHECK_BYTES(cowmem_data(b), model, size, "B after the failed prefaults");
	CHECK_BYTES(cowmem_data(c), a_model, size, "C after the failed prefaults");
	for (int i = 0; i < 3; i++)
		CHECK(cowmem_destroy(all[i]) == 0, "destroy: %s", strerror(errno));
	free(model);
	free(a_model);
}

static void prefault_outside(void)
{
	const size_t size = PREFAULT_PAGES * page;
	const size_t ranges[][2] = {
		{ size + 1, 0 }, { size + page, 1 }, { 0, size + 1 }, { page, size }, { size, 1 },
	};
	prefault_ranges(ranges, sizeof ranges / sizeof ranges[0]);
}

/* offset + length wraps around. */
static void prefault_overflows(void)
{
	const size_t size = PREFAULT_PAGES * page;
	const size_t ranges[][2] = {
		{ SIZE_MAX, 1 }, { SIZE_MAX, 2 }, { page, SIZE_MAX }, { SIZE_MAX - 10, 20 },
		{ size - 1, SIZE_MAX },
	};
	prefault_ranges(ranges, sizeof ranges / sizeof ranges[0]);
}

/* ---- cowmem_data, cowmem_size, the other region calls --------------------- */

static void data_null(void) { CHECK_FAILS_WITH(cowmem_data(NULL) == NULL, EINVAL, 0); }
static void size_null(void) { CHECK_FAILS_WITH(cowmem_size(NULL) == 0, EINVAL, 0); }
static void reset_null(void) { CHECK_FAILS_WITH(cowmem_reset(NULL) == -1, EINVAL, 0); }
/* A region that was live once; the calls that check handles refuse it. */
static cowmem_region *destroyed_region(void)
{
	cowmem_region *r = test_create_or_skip(4 * page);
	memset(cowmem_data(r), 0x21, page);
	CHECK(cowmem_destroy(r) == 0, "destroy: %s", strerror(errno));
	return r;
}
static void reset_destroyed(void)
{
	CHECK_FAILS_WITH(cowmem_reset(destroyed_region()) == -1, EINVAL, 0);
}
static void dirty_destroyed(void)
{
	size_t list[4];
	CHECK_FAILS_WITH(cowmem_dirty_pages(destroyed_region(), list, 4) == -1, EINVAL, 0);
}
static void stats_null(void)
{
	struct cowmem_stats s;
	CHECK_FAILS_WITH(cowmem_stats(NULL, &s) == -1, EINVAL, 0);
}
static void stats_null_out(void)
{
	CHECK_FAILS_WITH(cowmem_stats(some_region(), NULL) == -1, EINVAL, 0);
}
static void dirty_null(void)
{
	CHECK_FAILS_WITH(cowmem_dirty_pages(NULL, NULL, 0) == -1, EINVAL, 0);
}
static void dirty_pages_null_cap(void)
{
	CHECK_FAILS_WITH(cowmem_dirty_pages(some_region(), NULL, 4) == -1, EINVAL, 0);
}
static void copy_null(void)
{
	CHECK_FAILS_WITH(cowmem_copy(NULL, some_region()) == -1, EINVAL, 0);
	CHECK_FAILS_WITH(cowmem_copy(some_region(), NULL) == -1, EINVAL, 0);
}
static void copy_sizes(void)
{
	struct live l = live_regions();
	cowmem_region *other = test_create_or_skip(2 * l.size);
	CHECK_FAILS_WITH(cowmem_copy(l.region, other) == -1, EINVAL, 0);
	CHECK_FAILS_WITH(cowmem_copy(other, l.clone) == -1, EINVAL, 0);
	CHECK(cowmem_destroy(other) == 0, "destroy: %s", strerror(errno));
	live_unchanged(&l);
}
static void mask_null(void) { CHECK_FAILS_WITH(cowmem_feature_mask(NULL) == -1, EINVAL, 0); }

/* ---- cowmem_save, cowmem_load ---------------------------------------------- */

/* A regular file, already unlinked. */
static int temp_file(void)
{
	char path[] = "/tmp/cowmem-errnos-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0, "mkstemp: %s", strerror(errno));
	unlink(path);
	return fd;
}

static off_t file_size(int fd)
{
	struct stat st;
	CHECK(fstat(fd, &st) == 0, "fstat: %s", strerror(errno));
	return st.st_size;
}

static void save_null(void)
{
	int fd = temp_file();
	CHECK_FAILS_WITH(cowmem_save(NULL, fd) == -1, EINVAL, 0);
	CHECK(file_size(fd) == 0, "a failed save wrote %lld bytes", (long long)file_size(fd));
	close(fd);
}
static void save_append(void)
{
	int fd = temp_file();
	CHECK(fcntl(fd, F_SETFL, O_APPEND) == 0, "O_APPEND: %s", strerror(errno));
	CHECK_FAILS_WITH(cowmem_save(some_region(), fd) == -1, EINVAL, 0);
	CHECK(file_size(fd) == 0, "a failed save wrote %lld bytes", (long long)file_size(fd));
	close(fd);
}
static void save_pipe(void)
{
	int fds[2];
	CHECK(pipe(fds) == 0, "pipe: %s", strerror(errno));
	CHECK(fcntl(fds[0], F_SETFL, O_NONBLOCK) == 0, "O_NONBLOCK: %s", strerror(errno));
	CHECK_FAILS_WITH(cowmem_save(some_region(), fds[1]) == -1, ESPIPE, 0);
	char byte;
	CHECK(read(fds[0], &byte, 1) == -1 && errno == EAGAIN, "a failed save wrote to the pipe");
	close(fds[0]);
	close(fds[1]);
}
static void save_read_only(void)
{
	int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0, "open: %s", strerror(errno));
	CHECK_FAILS_WITH(cowmem_save(some_region(), fd) == -1, EBADF, 0);
	close(fd);
}
static void save_closed(void) { CHECK_FAILS_WITH(cowmem_save(some_region(), -1) == -1, EBADF, 0); }
/* RLIMIT_FSIZE below the snapshot's size: pwrite(2) and ftruncate(2) fail
 * with EFBIG (SIGXFSZ ignored, as a program that handles it would). */
static void save_too_big(void)
{
	int fd = temp_file();
	memset(cowmem_data(some_region()), 0x33, 4 * page);
	struct rlimit old, small;
	CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0, "getrlimit: %s", strerror(errno));
	small = (struct rlimit){ page, old.rlim_max };
	signal(SIGXFSZ, SIG_IGN);
	CHECK(setrlimit(RLIMIT_FSIZE, &small) == 0, "setrlimit: %s", strerror(errno));
	CHECK_FAILS_WITH(cowmem_save(some_region(), fd) == -1, EFBIG, 0);
	close(fd);
}
static void load_closed(void) { CHECK_FAILS_WITH(cowmem_load(-1) == NULL, EBADF, 0); }
static void load_junk(void)
{
	int fd = memfd_create("errnos", MFD_CLOEXEC);
	char junk[4096];
	memset(junk, 0x7e, sizeof junk);
	CHECK(fd >= 0 && write(fd, junk, sizeof junk) == (ssize_t)sizeof junk, "memfd");
	cowmem_destroy(test_create_or_skip(page)); /* the library's own descriptors */
	int fds = proc_count_fds();
	CHECK_FAILS_WITH(cowmem_load(fd) == NULL, EINVAL, 0);
	CHECK(proc_count_fds() == fds, "a failed load left a descriptor");
	close(fd);
}
static void load_empty(void)
{
	int fd = temp_file();
	CHECK_FAILS_WITH(cowmem_load(fd) == NULL, EINVAL, 0);
	close(fd);
}
/* A snapshot cut short after its first page. */
static void load_truncated(void)
{
	int fd = temp_file();
	memset(cowmem_data(some_region()), 0x44, 4 * page);
	CHECK(cowmem_save(some_region(), fd) == 0, "save: %s", strerror(errno));
	CHECK(ftruncate(fd, (off_t)page) == 0, "ftruncate: %s", strerror(errno));
	CHECK_FAILS_WITH(cowmem_load(fd) == NULL, EINVAL, 0);
	close(fd);
}
static void load_pipe(void)
{
	int fds[2];
	CHECK(pipe(fds) == 0, "pipe: %s", strerror(errno));
	CHECK_FAILS_WITH(cowmem_load(fds[0]) == NULL, ESPIPE, 0);
	close(fds[0]);
	close(fds[1]);
}

/* ---- The fault server and the library's start ------------------------------- */

/* While the library's own thread serves a live clone a host may not claim
 * serving (with no region left the library may stop its idle thread, and a
 * claim is then allowed: bad_input.c); the library still serves after. */
static void claim_while_library_serves(void)
{
	cowmem_region *source = test_create_or_skip(4 * page);
	memset(cowmem_data(source), 0x42, 4 * page);
	cowmem_region *clone = cowmem_clone(source);
	CHECK(clone != NULL, "cowmem_clone: %s", strerror(errno));
	CHECK(((volatile unsigned char *)cowmem_data(clone))[page] == 0x42,
	      "the clone reads its source's bytes");
	CHECK_FAILS_WITH(cowmem_server_claim() == -1, EBUSY, 0);
	CHECK(((volatile unsigned char *)cowmem_data(clone))[3 * page] == 0x42,
	      "the clone still reads its source's bytes after the refused claim");
	memset(cowmem_data(source), 1, 4 * page);
	CHECK(((unsigned char *)cowmem_data(clone))[2 * page] == 0x42, "the clone is isolated");
	CHECK(cowmem_destroy(clone) == 0 && cowmem_destroy(source) == 0, "destroy");
}

/* A first claim, before the library did anything, succeeds; a second one
 * is EBUSY. */
static void claim_twice(void)
{
	int descriptor = cowmem_server_claim();
	CHECK(descriptor >= 0, "the first cowmem_server_claim() in a fresh process: %s",
	      strerror(errno));
	CHECK_FAILS_WITH(cowmem_server_claim() == -1, EBUSY, 0);
}

static void claim(void) { CHECK_FAILS_WITH(cowmem_server_claim() == -1, ENOTSUP, 0); }
static void claim_bad_environment(void)
{
	CHECK_FAILS_WITH(cowmem_server_claim() == -1, EINVAL, 0);
}
static void handle(void) { CHECK_FAILS_WITH(cowmem_server_handle() == -1, ENOTSUP, 0); }
static void backend_fails(int expected)
{
	CHECK_FAILS_WITH(cowmem_backend() == NULL, expected, 0);
}
static void backend_einval(void) { backend_fails(EINVAL); }
static void backend_enosys(void) { backend_fails(ENOSYS); }
static void features_einval(void) { CHECK_FAILS_WITH(cowmem_features() == NULL, EINVAL, 0); }
static void mask_einval(void)
{
	uint64_t mask = ~(uint64_t)0;
	CHECK_FAILS_WITH(cowmem_feature_mask(&mask) == -1, EINVAL, 0);
	CHECK(mask == 0, "*mask is 0 when the library cannot start, got 0x%" PRIx64, mask);
}

/* ---- The table ----------------------------------------------------------- */

#define UNKNOWN_BACKEND "COWMEM_BACKEND=no-such-backend"
#define UNKNOWN_DISABLE "COWMEM_DISABLE=minor,no-such-feature"
#define UFFD_BACKENDS "userfaultfd,userfaultfd-user"
#define ALLOC "alloc_failures.c (the library's allocations fail)"
#define NOT_ALLOC "not tested (an allocation failing in it)"
#define START_ERRORS "backends.c (forced backends where the kernel or seccomp refuses)"
#define NO_SHMEM_UFFD "not tested (a kernel whose userfaultfd lacks shmem support)"

static const struct test_case cases[] = {
	TEST_CASE("cowmem_create/EINVAL/size-0", create_zero),
	TEST_CASE("cowmem_create/EINVAL/unknown-backend", create_bad_environment,
	  .environment = { UNKNOWN_BACKEND }),
	TEST_CASE("cowmem_create/EINVAL/unknown-disable", create_bad_environment,
	  .environment = { UNKNOWN_DISABLE }),
	TEST_COVERED("cowmem_create/EMFILE", "exhaustion.c descriptors, first-use"),
	TEST_COVERED("cowmem_create/ENFILE", "not tested (the system's file table full)"),
	TEST_CASE("cowmem_create/ENOMEM/2^48", create_2_48),
	TEST_CASE("cowmem_create/ENOMEM/2^62", create_2_62),
	TEST_CASE("cowmem_create/ENOMEM/ptrdiff-max", create_ptrdiff_max),
	TEST_CASE("cowmem_create/ENOMEM/ptrdiff-max+1", create_ptrdiff_max_1),
	TEST_CASE("cowmem_create/ENOMEM/size-max", create_size_max),
	TEST_CASE("cowmem_create/ENOMEM/rounding-wraps", create_rounding_wraps),
	/* The page says to treat the two alike, and the cases above accept
	 * either; this library and kernel give ENOMEM for each. */
	TEST_COVERED("cowmem_create/EOVERFLOW",
		     "not made here: every size above gives ENOMEM (they accept EOVERFLOW)"),
	TEST_COVERED("cowmem_create/EPERM", START_ERRORS),

	TEST_COVERED("cowmem_clone/EAGAIN", "not made on purpose (exhaustion.c address-space accepts it)"),
	TEST_CASE("cowmem_clone/EINVAL/null", clone_null),
	TEST_CASE("cowmem_clone/EINVAL/not-a-handle", clone_not_a_handle),
	TEST_CASE("cowmem_clone/EINVAL/destroyed", clone_destroyed),
	TEST_COVERED("cowmem_clone/EMFILE", "exhaustion.c descriptors"),
	TEST_COVERED("cowmem_clone/ENOMEM", ALLOC ", exhaustion.c address-space, map-count"),

	TEST_CASE("cowmem_data/EINVAL/null", data_null),
	TEST_CASE("cowmem_size/EINVAL/null", size_null),

	TEST_CASE("cowmem_destroy/EINVAL/not-a-handle", destroy_not_a_handle),
	TEST_CASE("cowmem_destroy/EINVAL/destroyed", destroy_destroyed),
	TEST_COVERED("cowmem_destroy/ENOMEM", ALLOC),

	TEST_CASE("cowmem_dirty_pages/EINVAL/null", dirty_null),
	TEST_CASE("cowmem_dirty_pages/EINVAL/pages-null", dirty_pages_null_cap),
	TEST_CASE("cowmem_dirty_pages/EINVAL/destroyed", dirty_destroyed),
	TEST_COVERED("cowmem_dirty_pages/ENOMEM", ALLOC),

	TEST_CASE("cowmem_reset/EINVAL/null", reset_null),
	TEST_CASE("cowmem_reset/EINVAL/destroyed", reset_destroyed),
	TEST_COVERED("cowmem_reset/EMFILE", "not tested (a reset that needs a new memfd)"),
	TEST_COVERED("cowmem_reset/ENOMEM", ALLOC),

	TEST_CASE("cowmem_save/EBADF/read-only", save_read_only),
	TEST_CASE("cowmem_save/EBADF/closed", save_closed),
	TEST_COVERED("cowmem_save/EDQUOT", "not tested (the file system's)"),
	TEST_CASE("cowmem_save/EFBIG/file-size-limit", save_too_big),
	TEST_CASE("cowmem_save/EINVAL/null", save_null),
	TEST_CASE("cowmem_save/EINVAL/o-append", save_append),
	TEST_COVERED("cowmem_save/EIO", "not tested (the file system's)"),
	TEST_COVERED("cowmem_save/ENOSPC", "not tested (the file system's)"),
	TEST_CASE("cowmem_save/ESPIPE/pipe", save_pipe),

	TEST_COVERED("cowmem_load/EAGAIN", ALLOC),
	TEST_CASE("cowmem_load/EBADF/closed", load_closed),
	TEST_CASE("cowmem_load/EINVAL/not-a-snapshot", load_junk),
	TEST_CASE("cowmem_load/EINVAL/empty-file", load_empty),
	TEST_CASE("cowmem_load/EINVAL/cut-short", load_truncated),
	TEST_COVERED("cowmem_load/EIO", "not tested (the file system's)"),
	TEST_COVERED("cowmem_load/EMFILE", "exhaustion.c descriptors"),
	TEST_COVERED("cowmem_load/ENOMEM", ALLOC),
	TEST_CASE("cowmem_load/ESPIPE/pipe", load_pipe),

	TEST_COVERED("cowmem_copy/EAGAIN", "not made on purpose (as cowmem_clone/EAGAIN)"),
	TEST_CASE("cowmem_copy/EINVAL/null", copy_null),
	TEST_CASE("cowmem_copy/EINVAL/sizes-differ", copy_sizes),
	TEST_COVERED("cowmem_copy/ENOMEM", NOT_ALLOC),

	TEST_CASE("cowmem_stats/EINVAL/null", stats_null),
	TEST_CASE("cowmem_stats/EINVAL/stats-null", stats_null_out),
	TEST_COVERED("cowmem_stats/ENOMEM", NOT_ALLOC),

	TEST_CASE("cowmem_server_claim/EBUSY/library-serves", claim_while_library_serves,
	  .backends = UFFD_BACKENDS),
	TEST_CASE("cowmem_server_claim/EBUSY/second-claim", claim_twice, .backends = UFFD_BACKENDS),
	TEST_CASE("cowmem_server_claim/EINVAL/unknown-disable", claim_bad_environment,
	  .environment = { UNKNOWN_DISABLE }),
	TEST_COVERED("cowmem_server_claim/ENOMEM", NOT_ALLOC),
	TEST_CASE("cowmem_server_claim/ENOTSUP/memfd", claim, .environment = { "COWMEM_BACKEND=memfd" }),
	TEST_COVERED("cowmem_server_claim/EPERM", START_ERRORS),

	TEST_COVERED("cowmem_server_handle/ENOMEM", NOT_ALLOC),
	TEST_CASE("cowmem_server_handle/ENOTSUP/memfd", handle,
	  .environment = { "COWMEM_BACKEND=memfd" }),

	TEST_CASE("cowmem_backend/EINVAL/unknown-backend", backend_einval,
	  .environment = { UNKNOWN_BACKEND }),
	TEST_CASE("cowmem_backend/EINVAL/unknown-disable", backend_einval,
	  .environment = { UNKNOWN_DISABLE }),
	TEST_COVERED("cowmem_backend/ENOMEM", NOT_ALLOC),
	TEST_CASE("cowmem_backend/ENOSYS/no-user-mode", backend_enosys,
	  .environment = { "COWMEM_BACKEND=userfaultfd-user", "COWMEM_DISABLE=user-mode" }),
	TEST_COVERED("cowmem_backend/ENOTSUP", NO_SHMEM_UFFD),
	TEST_COVERED("cowmem_backend/EPERM", START_ERRORS),

	TEST_CASE("cowmem_features/EINVAL/unknown-backend", features_einval,
	  .environment = { UNKNOWN_BACKEND }),
	TEST_CASE("cowmem_features/EINVAL/unknown-disable", features_einval,
	  .environment = { UNKNOWN_DISABLE }),
	TEST_COVERED("cowmem_features/ENOMEM", NOT_ALLOC),
	TEST_COVERED("cowmem_features/ENOSYS", START_ERRORS),
	TEST_COVERED("cowmem_features/ENOTSUP", NO_SHMEM_UFFD),
	TEST_COVERED("cowmem_features/EPERM", START_ERRORS),

	TEST_CASE("cowmem_feature_mask/EINVAL/null", mask_null),
	TEST_CASE("cowmem_feature_mask/EINVAL/unknown-backend", mask_einval,
	  .environment = { UNKNOWN_BACKEND }),
	TEST_CASE("cowmem_feature_mask/EINVAL/unknown-disable", mask_einval,
	  .environment = { "COWMEM_DISABLE=no-such-feature" }),
	TEST_COVERED("cowmem_feature_mask/ENOMEM", NOT_ALLOC),
	TEST_COVERED("cowmem_feature_mask/ENOSYS", START_ERRORS),
	TEST_COVERED("cowmem_feature_mask/ENOTSUP", NO_SHMEM_UFFD),
	TEST_COVERED("cowmem_feature_mask/EPERM", START_ERRORS),

	TEST_CASE("cowmem_prefault/EINVAL/null", prefault_null),
	TEST_CASE("cowmem_prefault/EINVAL/outside", prefault_outside),
	TEST_CASE("cowmem_prefault/EINVAL/overflows", prefault_overflows),
	TEST_CASE("cowmem_prefault/EINVAL/not-a-handle", prefault_not_a_handle),
	TEST_CASE("cowmem_prefault/EINVAL/destroyed", prefault_destroyed),
};

int main(int argc, char **argv)
{
	page = test_page_size();
	return test_main(argc, argv, cases, TEST_CASE_COUNT(cases));
}
