/*
 * alloc_failures.c - the library's own allocations fail on purpose.
 *
 * Linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc (see the
 * Makefile), so every allocation the library (and this file) makes goes
 * through the wrappers below; libc's internal ones do not. Each case makes
 * them fail and checks the promise around it:
 *   - a failed cowmem_destroy leaves the region valid with its bytes (it
 *     waits for lent versions: those waits must survive);
 *   - a failed cowmem_reset with nothing allocatable changes nothing, and
 *     one that fails part way leaves a region that the next successful
 *     reset brings back to its origin;
 *   - a failed cowmem_load leaves no thread behind;
 *   - cowmem_dirty_pages and cowmem_clone fail cleanly;
 *   - the fault servers' "cannot provide page" line needs no allocation
 *     and no stdio, and reads as it did when fprintf printed it.
 */
#include "harness.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>

#include "internal.h" /* cowmem__say_cannot_provide */

/* Allocations of the main thread fail while `failing` is set, after
 * `allowance` more have succeeded. Only the calling thread's: the fault
 * server's thread serves the test's own page faults and must not fail. */
static volatile int failing;
static volatile int allowance;
static pthread_t main_thread;

static int should_fail(void)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!failing || !pthread_equal(pthread_self(), main_thread))
		return 0;
	if (allowance > 0) {
		allowance--;
		return 0;
	}
	return 1;
}

void *__real_malloc(size_t size);
void *__real_calloc(size_t count, size_t size);
void *__real_realloc(void *pointer, size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t count, size_t size);
void *__wrap_realloc(void *pointer, size_t size);

void *__wrap_malloc(size_t size)
{
	if (should_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_malloc(size);
}

void *__wrap_calloc(size_t count, size_t size)
{
	if (should_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_calloc(count, size);
}

void *__wrap_realloc(void *pointer, size_t size)
{
	if (should_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_realloc(pointer, size);
}

static size_t page;

static char byte_at(cowmem_region *r, size_t p)
{
	return ((volatile char *)cowmem_data(r))[p * page];
}

/* Volatile, so the store is not moved past the next change of `failing`. */
static void set_byte(cowmem_region *r, size_t p, char value)
{
	((volatile char *)cowmem_data(r))[p * page] = value;
}

/*
 * A family where r's page 0 is a version lent by its source (base 'A',
 * source wrote 'B' before the clone, then 'C' after it), and r lends its
 * own page 1 to a clone of its own.
 */
struct family {
	cowmem_region *source, *first, *r, *r_clone;
};

static void family_make(struct family *f)
{
	f->source = test_create_or_skip(4 * page);
	set_byte(f->source, 0, 'A');
	f->first = cowmem_clone(f->source); /* freezes: 'A' is in the base */
	CHECK(f->first, "clone: %s", strerror(errno));
	set_byte(f->source, 0, 'B');
	f->r = cowmem_clone(f->source); /* waits for 'B' (lazy) or copies it */
	CHECK(f->r, "clone: %s", strerror(errno));
	set_byte(f->source, 0, 'C');    /* hands 'B' over */
	set_byte(f->r, 1, 'x');
	f->r_clone = cowmem_clone(f->r); /* r lends page 1 */
	CHECK(f->r_clone, "clone: %s", strerror(errno));
}

static void family_free(struct family *f)
{
	CHECK(cowmem_destroy(f->r_clone) == 0 && cowmem_destroy(f->r) == 0 &&
	      cowmem_destroy(f->first) == 0 && cowmem_destroy(f->source) == 0,
	      "destroy: %s", strerror(errno));
}

static void test_destroy(void)
{
	struct family f;
	family_make(&f);
	failing = 1;
	int rc = cowmem_destroy(f.r);
	int error = errno;
	failing = 0;
	if (rc == 0) {
		/* Nothing to allocate on this path: fine, but then it is gone. */
		printf("cowmem_destroy needed no allocation here\n");
		CHECK(byte_at(f.r_clone, 0) == 'B' && byte_at(f.r_clone, 1) == 'x',
		      "the clone of a destroyed region");
		f.r = cowmem_clone(f.r_clone);
		CHECK(f.r, "clone: %s", strerror(errno));
	} else {
		CHECK(error == ENOMEM, "failed destroy: %s", strerror(error));
		CHECK(byte_at(f.r, 0) == 'B', "after a failed destroy page 0 reads '%c', not 'B'",
		      byte_at(f.r, 0));
		CHECK(byte_at(f.r, 1) == 'x' && byte_at(f.r_clone, 1) == 'x',
		      "after a failed destroy");
		printf("a failed cowmem_destroy (ENOMEM) leaves the region and its bytes\n");
	}
	family_free(&f);
}

static void test_reset(void)
{
	struct family f;
	family_make(&f);
	set_byte(f.r, 0, 'X'); /* current 'X', origin 'B', base 'A' */
	failing = 1;
	int rc = cowmem_reset(f.r);
	int error = errno;
	failing = 0;
	CHECK(rc == -1 && error == ENOMEM, "reset with no memory: %d, %s", rc, strerror(error));
	CHECK(byte_at(f.r, 0) == 'X' && byte_at(f.r, 1) == 'x',
	      "a reset that could allocate nothing changed the region: '%c' '%c'",
	      byte_at(f.r, 0), byte_at(f.r, 1));
	CHECK(byte_at(f.r_clone, 1) == 'x', "the clone of a region whose reset failed");
	CHECK(cowmem_reset(f.r) == 0, "reset: %s", strerror(errno));
	CHECK(byte_at(f.r, 0) == 'B' && byte_at(f.r, 1) == 0, "after reset: '%c' '%c'",
	      byte_at(f.r, 0), byte_at(f.r, 1));
	CHECK(byte_at(f.r_clone, 1) == 'x', "the clone of a reset region");
	printf("a failed cowmem_reset (ENOMEM) changes nothing; the next one works\n");

	/* Failing part way (the first allocations succeed): the region stays
	 * valid, and the next reset gives the origin. */
	for (int budget = 1; budget <= 12; budget++) {
		set_byte(f.r, 0, 'Y');
		set_byte(f.r, 2, 'y');
		allowance = budget;
		failing = 1;
		(void)cowmem_reset(f.r);
		failing = 0;
		allowance = 0;
		CHECK(cowmem_reset(f.r) == 0, "reset after a failed one: %s", strerror(errno));
		CHECK(byte_at(f.r, 0) == 'B' && byte_at(f.r, 2) == 0,
		      "after a failed and a good reset: '%c' '%c'", byte_at(f.r, 0),
		      byte_at(f.r, 2));
	}
	CHECK(byte_at(f.source, 0) == 'C' && byte_at(f.first, 0) == 'A',
	      "the rest of the family");
	family_free(&f);
}

static void test_load(void)
{
	cowmem_region *r = test_create_or_skip(16 * page);
	set_byte(r, 3, 'L');
	int file = memfd_create("cowmem-alloc-failures", MFD_CLOEXEC);
	CHECK(file >= 0, "memfd_create: %s", strerror(errno));
	CHECK(cowmem_save(r, file) == 0, "save: %s", strerror(errno));
	CHECK(cowmem_destroy(r) == 0, "destroy: %s", strerror(errno));
	int threads = proc_count_tasks();
	failing = 1;
	cowmem_region *loaded = cowmem_load(file);
	int error = errno;
	failing = 0;
	/* EAGAIN when the allocation that fails is pthread_create's for the
	 * fault-server thread the load starts (seen on Debian's 6.1 under
	 * emulation; whether glibc must allocate there depends on the thread
	 * stacks it has cached). */
	CHECK(!loaded && (error == ENOMEM || error == EAGAIN), "load with no memory: %p, %s",
	      (void *)loaded, strerror(error));
	/* The library's server thread exits when asked; give it a moment. */
	for (int i = 0; i < 200 && proc_count_tasks() > threads; i++)
		usleep(10000);
	CHECK(proc_count_tasks() <= threads, "a failed load left threads: %d, before %d",
	      proc_count_tasks(), threads);
	loaded = cowmem_load(file);
	CHECK(loaded && byte_at(loaded, 3) == 'L', "load: %s", strerror(errno));
	CHECK(cowmem_destroy(loaded) == 0, "destroy: %s", strerror(errno));
	close(file);
	printf("a failed cowmem_load (%s) leaves no thread; the next one works\n",
	       error == ENOMEM ? "ENOMEM" : "EAGAIN");
}

static void test_other_calls(void)
{
	struct family f;
	family_make(&f);
	size_t list[4];
	failing = 1;
	ssize_t n = cowmem_dirty_pages(f.r, list, 4);
	int dirty_error = errno;
	cowmem_region *c = cowmem_clone(f.r);
	int clone_error = errno;
	failing = 0;
	CHECK(n == -1 && dirty_error == ENOMEM, "dirty pages with no memory: %zd, %s", n,
	      strerror(dirty_error));
	CHECK(!c && clone_error == ENOMEM, "clone with no memory: %s", strerror(clone_error));
	CHECK(byte_at(f.r, 0) == 'B' && byte_at(f.r, 1) == 'x', "after failed calls");
	CHECK(cowmem_dirty_pages(f.r, list, 4) == 1 && list[0] == 1, "dirty pages afterwards");
	family_free(&f);
	printf("cowmem_dirty_pages and cowmem_clone fail with ENOMEM and change nothing\n");
}

/* The line a server prints for a page it cannot provide, said with every
 * allocation failing and stderr's FILE sent elsewhere: only what reaches
 * descriptor 2 directly counts. It must match the fprintf it replaced. */
static void test_fail_message(void)
{
	static const struct {
		size_t page;
		uintptr_t data;
		int error;
	} cases[] = {
		{ 0, 0x7f0012345000u, ENOMEM },
		{ 12345, 0x1000u, EFAULT },
		{ SIZE_MAX, UINTPTR_MAX, 0 },
		{ 7, 0xabcdefu, 4095 }, /* no description: "Unknown error 4095" */
		{ 8, 0x10u, -3 },
	};
	enum { CASES = sizeof cases / sizeof cases[0] };
	int fds[2];
	CHECK(pipe(fds) == 0, "pipe: %s", strerror(errno));
	FILE *elsewhere = fopen("/dev/null", "w");
	CHECK(elsewhere != NULL, "fopen /dev/null: %s", strerror(errno));
	fflush(stderr);
	int saved_stderr = dup(STDERR_FILENO);
	CHECK(saved_stderr >= 0 && dup2(fds[1], STDERR_FILENO) == STDERR_FILENO,
	      "dup: %s", strerror(errno));
	FILE *real_stderr = stderr;
	stderr = elsewhere;
	int errno_kept = 1;
	failing = 1;
	allowance = 0;
	for (int i = 0; i < CASES; i++) {
		errno = EXDEV;
		cowmem__say_cannot_provide(cases[i].page, (const void *)cases[i].data,
					   cases[i].error);
		errno_kept &= errno == EXDEV;
	}
	failing = 0;
	stderr = real_stderr;
	CHECK(dup2(saved_stderr, STDERR_FILENO) == STDERR_FILENO, "dup2: %s",
	      strerror(errno));
	close(saved_stderr);
	close(fds[1]);
	fclose(elsewhere);

	char expected[2048], got[2048];
	size_t expected_length = 0, got_length = 0;
	for (int i = 0; i < CASES; i++)
		expected_length += (size_t)snprintf(
			expected + expected_length, sizeof expected - expected_length,
			"cowmem: cannot provide page %zu of region %p: %s\n", cases[i].page,
			(void *)cases[i].data, strerror(cases[i].error));
	for (;;) {
		ssize_t n = read(fds[0], got + got_length, sizeof got - 1 - got_length);
		CHECK(n >= 0, "read: %s", strerror(errno));
		if (n == 0)
			break;
		got_length += (size_t)n;
	}
	close(fds[0]);
	got[got_length] = '\0';
	CHECK(got_length == expected_length && memcmp(got, expected, got_length) == 0,
	      "the cannot-provide lines on descriptor 2 were\n%s\nexpected\n%s", got,
	      expected);
	CHECK(errno_kept, "cowmem__say_cannot_provide changed errno");
	printf("the cannot-provide line needs no allocation nor stdio, as fprintf "
	       "printed it\n");
}

static const struct test_case cases[] = {
	TEST_CASE("destroy", test_destroy),
	TEST_CASE("reset", test_reset),
	TEST_CASE("load", test_load),
	TEST_CASE("dirty-pages-and-clone", test_other_calls),
	TEST_CASE("cannot-provide-message", test_fail_message),
};

int main(int argc, char **argv)
{
	main_thread = pthread_self(); /* a case's process keeps the thread that forked it */
	page = test_page_size();
	return test_main(argc, argv, cases, TEST_CASE_COUNT(cases));
}
