/*
 * errors.c - every error path of the C API, each with the exact errno, and
 * the small promises around them: size rounding, page alignment, zero fill,
 * and that a failed call changes nothing (other regions keep their bytes,
 * no descriptor or mapping is left behind).
 *
 * Each case prints its own "ok" or "FAIL" line; the run fails if any did.
 * What must happen in a fresh process runs in a child (this program run
 * again with --child-...): claiming fault serving (which in this process
 * would leave its regions without a server), and starting the library with
 * a COWMEM_BACKEND or COWMEM_DISABLE value that names nothing.
 */
#include "test_util.h"
#include "process_util.h"

#include <dirent.h>
#include <stdbool.h>
#include <sys/wait.h>

static int cases_run, cases_failed;

/* Each case runs to its end; EXPECT (process_util.h) reports every broken
 * error path in it, and the case fails if any did. */
static void run_case(const char *name, void (*body)(void))
{
	int failures_before = expect_failures;
	body();
	int case_failed = expect_failures != failures_before;
	fflush(stdout);
	printf("%s %s\n", case_failed ? "FAIL" : "ok  ", name);
	fflush(stdout);
	cases_run++;
	cases_failed += case_failed;
}

static size_t page;

/* ---- Sizes the library must refuse ---------------------------------------- */

static void expect_create_fails(size_t size, int allowed, int also_allowed)
{
	errno = 0;
	cowmem_region *region = cowmem_create(size);
	int error = errno;
	EXPECT(region == NULL, "cowmem_create(%zu) to return NULL, got %p", size,
	       (void *)region);
	EXPECT(error == allowed || error == also_allowed,
	       "errno %s or %s, got %s", errno_name(allowed),
	       errno_name(also_allowed), errno_name(error));
	if (region)
		cowmem_destroy(region);
}

static void case_create_zero(void)
{
	expect_create_fails(0, EINVAL, EINVAL);
}

static void case_create_size_max(void)
{
	expect_create_fails(SIZE_MAX, ENOMEM, EOVERFLOW);
}

/* Rounding this up to a page overflows size_t; a naive round-up wraps to a
 * tiny size and "succeeds". */
static void case_create_rounding_overflow(void)
{
	expect_create_fails(SIZE_MAX - page + 2, ENOMEM, EOVERFLOW);
}

static void case_create_two_to_the_62(void)
{
	expect_create_fails((size_t)1 << 62, ENOMEM, EOVERFLOW);
}

/* ---- NULL regions ---------------------------------------------------------- */

static void case_clone_null(void)
{
	errno = 0;
	cowmem_region *clone = cowmem_clone(NULL);
	int error = errno;
	EXPECT(clone == NULL, "NULL, got %p", (void *)clone);
	EXPECT(error == EINVAL, "errno EINVAL, got %s", errno_name(error));
}

static void case_data_null(void)
{
	errno = 0;
	void *data = cowmem_data(NULL);
	int error = errno;
	EXPECT(data == NULL, "NULL, got %p", data);
	EXPECT(error == EINVAL, "errno EINVAL, got %s", errno_name(error));
}

static void case_size_null(void)
{
	errno = 0;
	size_t size = cowmem_size(NULL);
	int error = errno;
	EXPECT(size == 0, "0, got %zu", size);
	EXPECT(error == EINVAL, "errno EINVAL, got %s", errno_name(error));
}

static void case_destroy_null(void)
{
	errno = 0;
	int result = cowmem_destroy(NULL);
	EXPECT(result == 0, "0, got %d (errno %s)", result, errno_name(errno));
}

/* ---- Sizes, alignment, zero fill --------------------------------------------- */

static void case_page_size(void)
{
	size_t library_page = cowmem_page_size();
	EXPECT(library_page == page, "cowmem_page_size() == sysconf page size "
	       "%zu, got %zu", page, library_page);
}

static void expect_rounded_size(size_t requested, size_t expected)
{
	errno = 0;
	cowmem_region *region = cowmem_create(requested);
	EXPECT(region != NULL, "cowmem_create(%zu) to succeed, errno %s",
	       requested, errno_name(errno));
	if (!region)
		return;
	size_t size = cowmem_size(region);
	EXPECT(size == expected, "cowmem_size after create(%zu) == %zu, got %zu",
	       requested, expected, size);
	cowmem_region *clone = cowmem_clone(region);
	EXPECT(clone != NULL, "clone to succeed, errno %s", errno_name(errno));
	if (clone) {
		EXPECT(cowmem_size(clone) == expected,
		       "clone's size == %zu, got %zu", expected,
		       cowmem_size(clone));
		EXPECT(cowmem_destroy(clone) == 0, "destroy to return 0, errno %s",
		       errno_name(errno));
	}
	EXPECT(cowmem_destroy(region) == 0, "destroy to return 0, errno %s",
	       errno_name(errno));
}

static void case_size_rounding(void)
{
	expect_rounded_size(1, page);
	expect_rounded_size(page - 1, page);
	expect_rounded_size(page, page);
	expect_rounded_size(page + 1, 2 * page);
	expect_rounded_size(5 * page - 7, 5 * page);
}

static void expect_aligned_and_zero(cowmem_region *region, const char *what)
{
	unsigned char *data = cowmem_data(region);
	size_t size = cowmem_size(region);
	EXPECT(data != NULL, "%s: data != NULL", what);
	if (!data)
		return;
	EXPECT((uintptr_t)data % page == 0, "%s: data %p page-aligned", what,
	       (void *)data);
	EXPECT(cowmem_data(region) == data, "%s: data stable across calls", what);
	for (size_t i = 0; i < size; i++) {
		if (data[i] != 0) {
			EXPECT(data[i] == 0, "%s: byte %zu of %zu is 0, got 0x%02x",
			       what, i, size, data[i]);
			break;
		}
	}
}

static void case_alignment_and_zero_fill(void)
{
	static const size_t sizes[] = { 1, 4096, 3 * 4096 + 1, 64 * 4096,
					1 << 20, 8 << 20 };
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		cowmem_region *region = cowmem_create(sizes[i]);
		EXPECT(region != NULL, "create(%zu), errno %s", sizes[i],
		       errno_name(errno));
		if (!region)
			continue;
		/* The clone first: it must see zeros that the source never
		 * materialized. */
		cowmem_region *clone = cowmem_clone(region);
		EXPECT(clone != NULL, "clone of create(%zu), errno %s", sizes[i],
		       errno_name(errno));
		if (clone) {
			cowmem_region *grandchild = cowmem_clone(clone);
			EXPECT(grandchild != NULL, "clone of clone, errno %s",
			       errno_name(errno));
			if (grandchild) {
				expect_aligned_and_zero(grandchild,
							"clone of clone of fresh region");
				cowmem_destroy(grandchild);
			}
			expect_aligned_and_zero(clone, "clone of fresh region");
			cowmem_destroy(clone);
		}
		expect_aligned_and_zero(region, "fresh region");
		cowmem_destroy(region);
	}
}

/* ---- A failed call changes nothing ------------------------------------------ */

/* Every call that must fail, once each. */
static void call_with_bad_arguments(void)
{
	const size_t bad_sizes[] = { 0, SIZE_MAX, SIZE_MAX - page + 2,
				     (size_t)1 << 62 };
	for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
		cowmem_region *region = cowmem_create(bad_sizes[i]);
		EXPECT(region == NULL, "create(%zu) to fail", bad_sizes[i]);
		if (region)
			cowmem_destroy(region);
	}
	EXPECT(cowmem_clone(NULL) == NULL, "clone(NULL) to fail");
	EXPECT(cowmem_data(NULL) == NULL, "data(NULL) to fail");
	EXPECT(cowmem_size(NULL) == 0, "size(NULL) to fail");
	EXPECT(cowmem_destroy(NULL) == 0, "destroy(NULL) == 0");
	EXPECT(cowmem_prefault(NULL, 0, 1, 0) == -1, "prefault(NULL) to fail");
}

static void case_errors_change_nothing(void)
{
	const size_t size = 16 * page;
	test_rng rng = { 12345 };
	unsigned char *model_source = malloc(size), *model_clone = malloc(size);
	CHECK(model_source && model_clone, "malloc");

	cowmem_region *source = cowmem_create(size);
	EXPECT(source != NULL, "create, errno %s", errno_name(errno));
	if (!source)
		goto out;
	test_rng_fill(&rng, model_source, size);
	memcpy(cowmem_data(source), model_source, size);
	cowmem_region *clone = cowmem_clone(source);
	EXPECT(clone != NULL, "clone, errno %s", errno_name(errno));
	if (!clone) {
		cowmem_destroy(source);
		goto out;
	}
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
		if (descriptors_after == descriptors_before &&
		    mappings_after == mappings_before)
			break;
		struct timespec pause = { 0, 20 * 1000 * 1000 };
		nanosleep(&pause, NULL);
	}
	EXPECT(descriptors_after == descriptors_before,
	       "failed calls leave no descriptor: %d before, %d after",
	       descriptors_before, descriptors_after);
	EXPECT(mappings_after == mappings_before,
	       "failed calls leave no mapping: %d before, %d after",
	       mappings_before, mappings_after);

	EXPECT(cowmem_size(source) == size && cowmem_size(clone) == size,
	       "sizes unchanged");
	EXPECT(memcmp(cowmem_data(source), model_source, size) == 0,
	       "source bytes unchanged");
	EXPECT(memcmp(cowmem_data(clone), model_clone, size) == 0,
	       "clone bytes unchanged");
	EXPECT(cowmem_destroy(clone) == 0, "destroy clone, errno %s",
	       errno_name(errno));
	EXPECT(memcmp(cowmem_data(source), model_source, size) == 0,
	       "source bytes unchanged after the clone is gone");
	EXPECT(cowmem_destroy(source) == 0, "destroy source, errno %s",
	       errno_name(errno));
out:
	free(model_source);
	free(model_clone);
}

/* ---- Children: fresh processes, for what must happen before anything else -- */

static bool uses_userfaultfd(const char *backend)
{
	return backend && strncmp(backend, "userfaultfd", 11) == 0;
}

/* Claiming fault serving before the library has done anything. With no
 * fault mechanism (the memfd backend) there is nothing to claim. */
static int child_claim(void)
{
	const char *backend = cowmem_backend();
	errno = 0;
	int descriptor = cowmem_server_claim();
	int error = errno;
	if (!uses_userfaultfd(backend)) {
		if (descriptor == -1 && error != 0 && error != EBUSY) {
			printf("    backend %s: claim -> -1, %s (nothing to serve)\n",
			       backend ? backend : "(none)", errno_name(error));
			return TEST_EXIT_PASS;
		}
		printf("    backend %s: expected -1 with an errno other than EBUSY, "
		       "got %d, errno %s\n", backend ? backend : "(none)", descriptor,
		       errno_name(error));
		return TEST_EXIT_FAIL;
	}
	if (descriptor < 0) {
		printf("    backend %s: first cowmem_server_claim() in a fresh "
		       "process returned -1, errno %s\n", backend, errno_name(error));
		return TEST_EXIT_FAIL;
	}
	int failed = 0;
	errno = 0;
	int second = cowmem_server_claim();
	error = errno;
	if (second != -1 || error != EBUSY) {
		printf("    second claim: expected -1 with EBUSY, got %d, errno %s\n",
		       second, errno_name(error));
		failed = 1;
	}
	errno = 0;
	int handled = cowmem_server_handle();
	if (handled != 0) {
		printf("    cowmem_server_handle() with nothing waiting: expected "
		       "0, got %d, errno %s\n", handled, errno_name(errno));
		failed = 1;
	}
	return failed ? TEST_EXIT_FAIL : TEST_EXIT_PASS;
}

/* Started with a COWMEM_BACKEND or COWMEM_DISABLE value that names nothing:
 * the library must refuse to start rather than pick a default. */
static int child_bad_environment(void)
{
	int failed = 0;
	errno = 0;
	const char *backend = cowmem_backend();
	int error = errno;
	if (backend != NULL || error != EINVAL) {
		printf("    cowmem_backend(): expected NULL with EINVAL, got %s, "
		       "errno %s\n", backend ? backend : "NULL", errno_name(error));
		failed = 1;
	}
	errno = 0;
	const char *features = cowmem_features();
	error = errno;
	if (features != NULL || error != EINVAL) {
		printf("    cowmem_features(): expected NULL with EINVAL, got %s, "
		       "errno %s\n", features ? features : "NULL", errno_name(error));
		failed = 1;
	}
	errno = 0;
	cowmem_region *region = cowmem_create(page);
	error = errno;
	if (region != NULL || error != EINVAL) {
		printf("    cowmem_create(page): expected NULL with EINVAL, got %p, "
		       "errno %s\n", (void *)region, errno_name(error));
		failed = 1;
	}
	return failed ? TEST_EXIT_FAIL : TEST_EXIT_PASS;
}

/* Runs this program again as `mode`, with `name`=`value` in its environment
 * (name NULL: the environment as it is); returns its exit code. */
static int run_child(const char *mode, const char *name, const char *value)
{
	fflush(stdout);
	pid_t child = fork();
	CHECK(child >= 0, "fork: %s", strerror(errno));
	if (child == 0) {
		if (name)
			setenv(name, value, 1);
		execl("/proc/self/exe", "errors", mode, (char *)NULL);
		_exit(127);
	}
	int status;
	CHECK(waitpid(child, &status, 0) == child, "waitpid");
	EXPECT(WIFEXITED(status), "child exits normally (status 0x%x)", status);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void case_server_claim_in_fresh_process(void)
{
	int code = run_child("--child-claim", NULL, NULL);
	EXPECT(code == TEST_EXIT_PASS, "child exit 0, got %d", code);
}

static void case_unknown_backend(void)
{
	int code = run_child("--child-bad-environment", "COWMEM_BACKEND",
			     "no-such-backend");
	EXPECT(code == TEST_EXIT_PASS, "child exit 0, got %d", code);
}

static void case_unknown_disabled_feature(void)
{
	int code = run_child("--child-bad-environment", "COWMEM_DISABLE",
			     "minor,no-such-feature");
	EXPECT(code == TEST_EXIT_PASS, "child exit 0, got %d", code);
}

/* While the library's own thread serves a live clone, a host may not claim
 * serving. (With no region left, the library may stop its idle thread, and
 * a claim then is allowed; so the clone stays alive here.) */
static void case_server_claim_while_library_serves(void)
{
	const char *backend = cowmem_backend();
	cowmem_region *source = cowmem_create(4 * page);
	EXPECT(source != NULL, "create, errno %s", errno_name(errno));
	if (!source)
		return;
	memset(cowmem_data(source), 0x42, 4 * page);
	cowmem_region *clone = cowmem_clone(source);
	EXPECT(clone != NULL, "clone, errno %s", errno_name(errno));
	if (!clone) {
		cowmem_destroy(source);
		return;
	}
	/* A fault the library's server must resolve. */
	EXPECT(((volatile unsigned char *)cowmem_data(clone))[page] == 0x42,
	       "the clone reads its source's bytes");

	errno = 0;
	int descriptor = cowmem_server_claim();
	int error = errno;
	EXPECT(descriptor == -1, "claim while the library serves a live clone: "
	       "-1, got %d (backend %s)", descriptor, backend);
	if (uses_userfaultfd(backend))
		EXPECT(error == EBUSY, "errno EBUSY (backend %s), got %s", backend,
		       errno_name(error));
	else
		EXPECT(error != 0 && error != EBUSY, "an errno other than EBUSY "
		       "(backend %s: nothing to serve), got %s", backend,
		       errno_name(error));
	/* The library still serves: a fresh page of the clone reads right. */
	if (descriptor == -1)
		EXPECT(((volatile unsigned char *)cowmem_data(clone))[3 * page] ==
		       0x42, "the clone still reads its source's bytes");
	cowmem_destroy(clone);
	cowmem_destroy(source);
}

/* ---- Backend report and prefault ------------------------------------------------ */

static void case_backend_named(void)
{
	const char *backend = cowmem_backend();
	const char *features = cowmem_features();
	EXPECT(backend != NULL, "a backend name, errno %s", errno_name(errno));
	EXPECT(features != NULL, "a feature list, errno %s", errno_name(errno));
	if (!backend)
		return;
	EXPECT(strcmp(backend, "userfaultfd") == 0 ||
	       strcmp(backend, "userfaultfd-user") == 0 ||
	       strcmp(backend, "memfd") == 0, "a known backend, got '%s'", backend);
	const char *forced = getenv("COWMEM_BACKEND");
	if (forced && *forced && strcmp(forced, "auto") != 0)
		EXPECT(strcmp(backend, forced) == 0, "COWMEM_BACKEND=%s in effect, "
		       "got %s", forced, backend);
	printf("    backend %s, features %s\n", backend, features ? features : "?");
}

static void expect_prefault_fails(cowmem_region *region, size_t offset,
				  size_t length, const char *what)
{
	errno = 0;
	int result = cowmem_prefault(region, offset, length, 1);
	int error = errno;
	EXPECT(result == -1 && error == EINVAL, "%s: -1 with EINVAL, got %d, "
	       "errno %s", what, result, errno_name(error));
}

static void case_prefault(void)
{
	const size_t size = 8 * page;
	unsigned char *model = malloc(size);
	CHECK(model != NULL, "malloc");
	test_rng rng = { 777 };
	test_rng_fill(&rng, model, size);
	cowmem_region *source = cowmem_create(size);
	EXPECT(source != NULL, "create, errno %s", errno_name(errno));
	if (!source) {
		free(model);
		return;
	}
	memcpy(cowmem_data(source), model, size);
	cowmem_region *clone = cowmem_clone(source);
	EXPECT(clone != NULL, "clone, errno %s", errno_name(errno));
	if (clone) {
		expect_prefault_fails(NULL, 0, page, "prefault(NULL)");
		expect_prefault_fails(clone, size, 1, "offset at the end");
		expect_prefault_fails(clone, 0, size + 1, "one byte past the end");
		expect_prefault_fails(clone, page, SIZE_MAX, "length overflows");
		expect_prefault_fails(clone, SIZE_MAX, 2, "offset overflows");
		/* Valid ranges change nothing. */
		EXPECT(cowmem_prefault(clone, 0, page / 2, 0) == 0,
		       "prefault for reading, errno %s", errno_name(errno));
		EXPECT(cowmem_prefault(clone, page - 1, 3 * page, 1) == 0,
		       "prefault for writing across pages, errno %s",
		       errno_name(errno));
		EXPECT(cowmem_prefault(clone, 0, size, 1) == 0,
		       "prefault of the whole region, errno %s", errno_name(errno));
		EXPECT(memcmp(cowmem_data(clone), model, size) == 0,
		       "prefault changed no byte of the clone");
		memset(cowmem_data(clone), 0x11, page);
		EXPECT(memcmp(cowmem_data(source), model, size) == 0,
		       "a write after prefault stays in the clone");
		cowmem_destroy(clone);
	}
	cowmem_destroy(source);
	free(model);
}

int main(int argc, char **argv)
{
	page = test_page_size();
	if (argc > 1 && strcmp(argv[1], "--child-claim") == 0)
		return child_claim();
	if (argc > 1 && strcmp(argv[1], "--child-bad-environment") == 0)
		return child_bad_environment();

	setvbuf(stdout, NULL, _IOLBF, 0);
	/* Skip (not fail) only if the environment lacks the mechanism. */
	cowmem_destroy(test_create_or_skip(page));

	run_case("cowmem_backend() and cowmem_features() name what is in use",
		 case_backend_named);
	run_case("cowmem_page_size() is the system page size", case_page_size);
	run_case("cowmem_create(0) -> NULL, EINVAL", case_create_zero);
	run_case("cowmem_create(SIZE_MAX) -> NULL, ENOMEM or EOVERFLOW",
		 case_create_size_max);
	run_case("cowmem_create(SIZE_MAX - pagesize + 2) -> NULL, ENOMEM or "
		 "EOVERFLOW (round-up overflow)", case_create_rounding_overflow);
	run_case("cowmem_create(1 << 62) -> NULL, ENOMEM or EOVERFLOW",
		 case_create_two_to_the_62);
	run_case("cowmem_clone(NULL) -> NULL, EINVAL", case_clone_null);
	run_case("cowmem_data(NULL) -> NULL, EINVAL", case_data_null);
	run_case("cowmem_size(NULL) -> 0, EINVAL", case_size_null);
	run_case("cowmem_destroy(NULL) -> 0", case_destroy_null);
	run_case("cowmem_prefault: NULL or a range outside -> -1, EINVAL; valid "
		 "ranges change no byte", case_prefault);
	run_case("sizes round up to whole pages", case_size_rounding);
	run_case("data is page-aligned and fresh regions (and their clones) "
		 "are all zero", case_alignment_and_zero_fill);
	run_case("failed calls change nothing (bytes, descriptors, mappings)",
		 case_errors_change_nothing);
	run_case("unknown COWMEM_BACKEND -> library refuses to start, EINVAL",
		 case_unknown_backend);
	run_case("unknown COWMEM_DISABLE feature -> library refuses to start, "
		 "EINVAL", case_unknown_disabled_feature);
	run_case("server claim in a fresh process; second claim -> EBUSY; "
		 "handle with nothing waiting -> 0",
		 case_server_claim_in_fresh_process);
	run_case("server claim while the library serves a live clone -> -1 "
		 "(EBUSY with userfaultfd)", case_server_claim_while_library_serves);

	printf("errors: %d of %d cases ok\n", cases_run - cases_failed, cases_run);
	return cases_failed ? TEST_EXIT_FAIL : TEST_EXIT_PASS;
}
