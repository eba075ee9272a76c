/*
 * errors.c - every error path of the C API, each with the exact errno, and
 * the small promises around them: size rounding, page alignment, zero fill,
 * and that a failed call changes nothing (other regions keep their bytes,
 * no descriptor or mapping is left behind).
 *
 * Each case prints its own "ok" or "FAIL" line; the run fails if any did.
 * The fault-server hosting calls are checked in a fresh child process (this
 * program run again with --claim-child), because claiming fault serving in
 * this process would leave its regions without a server.
 */
#include "test_util.h"

#include <dirent.h>
#include <stdbool.h>
#include <sys/wait.h>

static int case_failed;
static int cases_run, cases_failed;

/* Like CHECK, but records the failure and lets the case go on, so one run
 * shows every broken error path. */
#define EXPECT(condition, ...)                                             \
	do {                                                               \
		if (!(condition)) {                                        \
			printf("    %s:%d: expected %s: ", __FILE__,       \
			       __LINE__, #condition);                      \
			printf(__VA_ARGS__);                               \
			printf("\n");                                      \
			case_failed = 1;                                   \
		}                                                          \
	} while (0)

static void run_case(const char *name, void (*body)(void))
{
	case_failed = 0;
	body();
	fflush(stdout);
	printf("%s %s\n", case_failed ? "FAIL" : "ok  ", name);
	fflush(stdout);
	cases_run++;
	cases_failed += case_failed;
}

static const char *errno_name(int error)
{
	switch (error) {
	case 0: return "0";
	case EINVAL: return "EINVAL";
	case ENOMEM: return "ENOMEM";
	case EOVERFLOW: return "EOVERFLOW";
	case EFBIG: return "EFBIG";
	case EBUSY: return "EBUSY";
	case EPERM: return "EPERM";
	case ENOSYS: return "ENOSYS";
	case EMFILE: return "EMFILE";
	default: return strerror(error);
	}
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

static int count_open_descriptors(void)
{
	DIR *directory = opendir("/proc/self/fd");
	if (!directory)
		return -1;
	int count = 0;
	struct dirent *entry;
	while ((entry = readdir(directory)) != NULL)
		if (entry->d_name[0] != '.')
			count++;
	closedir(directory);
	return count - 1; /* the directory's own descriptor */
}

static int count_mappings(void)
{
	FILE *maps = fopen("/proc/self/maps", "r");
	if (!maps)
		return -1;
	int count = 0, c;
	while ((c = fgetc(maps)) != EOF)
		if (c == '\n')
			count++;
	fclose(maps);
	return count;
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

	int descriptors_before = count_open_descriptors();
	int mappings_before = count_mappings();

	for (int round = 0; round < 3; round++) {
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
	}

	int descriptors_after = count_open_descriptors();
	int mappings_after = count_mappings();
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

/* ---- Fault-server hosting (in a fresh process) ------------------------------- */

/* The child: nothing of the library has run yet in this process. */
static int claim_child(void)
{
	errno = 0;
	int descriptor = cowmem_server_claim();
	int error = errno;
	if (descriptor < 0) {
		/* Only a missing kernel mechanism excuses a failed first claim;
		 * EBUSY would mean someone already serves in a fresh process. */
		if (error == EPERM || error == ENOSYS) {
			printf("    first claim failed with %s: no fault mechanism "
			       "here\n", errno_name(error));
			return TEST_EXIT_SKIP;
		}
		printf("    first cowmem_server_claim() in a fresh process "
		       "returned -1, errno %s\n", errno_name(error));
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

static void case_server_claim_in_fresh_process(void)
{
	fflush(stdout);
	pid_t child = fork();
	CHECK(child >= 0, "fork: %s", strerror(errno));
	if (child == 0) {
		execl("/proc/self/exe", "errors", "--claim-child", (char *)NULL);
		_exit(127);
	}
	int status;
	CHECK(waitpid(child, &status, 0) == child, "waitpid");
	EXPECT(WIFEXITED(status), "child exits normally (status 0x%x)", status);
	if (!WIFEXITED(status))
		return;
	int code = WEXITSTATUS(status);
	if (code == TEST_EXIT_SKIP)
		printf("    (skipped: no fault mechanism)\n");
	else
		EXPECT(code == TEST_EXIT_PASS, "child exit 0, got %d", code);
}

static int count_threads(void)
{
	FILE *status = fopen("/proc/self/status", "r");
	if (!status)
		return -1;
	char line[256];
	int threads = -1;
	while (fgets(line, sizeof line, status))
		if (sscanf(line, "Threads: %d", &threads) == 1)
			break;
	fclose(status);
	return threads;
}

/* This process has used clones; if the library started its own server
 * thread for them, a host may no longer claim serving. */
static void case_server_claim_while_library_serves(void)
{
	int threads = count_threads();
	if (threads <= 1) {
		printf("    (library runs no server thread here; not applicable)\n");
		return;
	}
	errno = 0;
	int descriptor = cowmem_server_claim();
	int error = errno;
	EXPECT(descriptor == -1 && error == EBUSY,
	       "claim while the library's own thread serves (%d threads): -1 "
	       "with EBUSY, got %d, errno %s", threads, descriptor,
	       errno_name(error));
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "--claim-child") == 0)
		return claim_child();

	page = test_page_size();
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* Skip (not fail) only if the environment lacks the mechanism. */
	cowmem_destroy(test_create_or_skip(page));

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
	run_case("sizes round up to whole pages", case_size_rounding);
	run_case("data is page-aligned and fresh regions (and their clones) "
		 "are all zero", case_alignment_and_zero_fill);
	run_case("failed calls change nothing (bytes, descriptors, mappings)",
		 case_errors_change_nothing);
	run_case("server claim in a fresh process; second claim -> EBUSY; "
		 "handle with nothing waiting -> 0",
		 case_server_claim_in_fresh_process);
	run_case("server claim while the library serves -> EBUSY",
		 case_server_claim_while_library_serves);

	printf("errors: %d of %d cases ok\n", cases_run - cases_failed, cases_run);
	return cases_failed ? TEST_EXIT_FAIL : TEST_EXIT_PASS;
}
