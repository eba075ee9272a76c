/*
 * test_util.h - the few helpers the C tests share.
 *
 * Every test is a standalone program: exit 0 = pass, 1 = fail, 77 = skip.
 * A failed check prints file:line, what failed and, when the test is
 * randomized, the seed that replays it; then the process exits at once
 * (_exit, so no destructor runs while other threads still fault). Under
 * harness.h the process is one case's, and the failure ends that case.
 *
 * The oracle is always plain memcpy: tests keep ordinary malloc'd copies
 * (or a pattern function) and compare bytes.
 */
#ifndef COWMEM_TEST_UTIL_H
#define COWMEM_TEST_UTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cowmem.h>

#define TEST_EXIT_PASS 0
#define TEST_EXIT_FAIL 1
#define TEST_EXIT_SKIP 77

#define TEST_UNUSED __attribute__((unused))

/* Set by test_seed_init(); printed with every failure. */
static uint64_t test_seed TEST_UNUSED;
static int test_seed_known TEST_UNUSED;
/* Extra words printed with a failure, e.g. the options that replay it. */
static char test_replay_hint[256] TEST_UNUSED;
/* Set by harness.h in the process that runs one case: a failure or skip
 * there leaves its message in test_report (shared with the harness) for
 * the case's result line. Children a case forks fail as before. Just past
 * the message, a flag shared by every case: the backend line was printed. */
#define TEST_REPORT_SIZE (4096 - sizeof(int))
static char *test_report TEST_UNUSED;
static pid_t test_report_pid TEST_UNUSED;

static TEST_UNUSED int test_reporting(void)
{
	return test_report && getpid() == test_report_pid;
}

/* The first message of this case wins (two threads may fail at once). */
static TEST_UNUSED void test_report_vset(const char *format, va_list args)
{
	if (!test_reporting() || !__sync_bool_compare_and_swap(&test_report[0], 0, 1))
		return;
	vsnprintf(test_report + 1, TEST_REPORT_SIZE - 1, format, args);
}

static TEST_UNUSED void test_report_set(const char *format, ...)
	__attribute__((format(printf, 1, 2)));
static TEST_UNUSED void test_report_set(const char *format, ...)
{
	va_list args;
	va_start(args, format);
	test_report_vset(format, args);
	va_end(args);
}

static void test_fail_vat(const char *file, int line, const char *condition,
			  const char *format, va_list args)
	__attribute__((noreturn, format(printf, 4, 0), unused));
static void test_fail_vat(const char *file, int line, const char *condition,
			  const char *format, va_list args)
{
	fflush(stdout);
	if (test_reporting()) {
		/* The harness prints it as the case's result, with the seed. */
		char message[TEST_REPORT_SIZE];
		vsnprintf(message, sizeof message, format, args);
		test_report_set("%s:%d: %s%s%s%s%s%s%s", file, line, condition ? "(" : "",
				condition ? condition : "", condition ? ") " : "", message,
				test_replay_hint[0] ? " (replay options: " : "", test_replay_hint,
				test_replay_hint[0] ? ")" : "");
		fflush(stderr);
		_exit(TEST_EXIT_FAIL);
	}
	flockfile(stderr);
	fprintf(stderr, "%s:%d: FAIL: ", file, line);
	if (condition)
		fprintf(stderr, "(%s) ", condition);
	vfprintf(stderr, format, args);
	fputc('\n', stderr);
	if (test_seed_known)
		fprintf(stderr, "replay with: COWMEM_TEST_SEED=%" PRIu64 "%s%s\n",
			test_seed, test_replay_hint[0] ? " " : "", test_replay_hint);
	funlockfile(stderr);
	fflush(stderr);
	_exit(TEST_EXIT_FAIL);
}

static void test_fail_at(const char *file, int line, const char *condition,
			 const char *format, ...)
	__attribute__((noreturn, format(printf, 4, 5), unused));
static void test_fail_at(const char *file, int line, const char *condition,
			 const char *format, ...)
{
	va_list args;
	va_start(args, format);
	test_fail_vat(file, line, condition, format, args);
}

static void test_skip(const char *format, ...)
	__attribute__((noreturn, format(printf, 1, 2), unused));
static void test_skip(const char *format, ...)
{
	va_list args;

	fflush(stdout);
	if (test_reporting()) {
		va_start(args, format);
		test_report_vset(format, args);
		va_end(args);
		fflush(stderr);
		_exit(TEST_EXIT_SKIP);
	}
	printf("SKIP: ");
	va_start(args, format);
	vprintf(format, args);
	va_end(args);
	printf("\n");
	fflush(stdout);
	_exit(TEST_EXIT_SKIP);
}

/* FAIL("format", ...) and CHECK(condition, "format", ...): the message is
 * required, so every failure says what was expected. */
#define FAIL(...) test_fail_at(__FILE__, __LINE__, NULL, __VA_ARGS__)
#define CHECK(condition, ...)                                              \
	do {                                                               \
		if (!(condition))                                          \
			test_fail_at(__FILE__, __LINE__, #condition,       \
				     __VA_ARGS__);                         \
	} while (0)

/* ---- Randomness: splitmix64, small and good enough for test inputs ---- */

typedef struct {
	uint64_t state;
} test_rng;

static TEST_UNUSED uint64_t test_mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* A stream seed for part `stream` of a run, so that threads and passes
 * each get their own reproducible sequence from the one printed seed. */
static TEST_UNUSED uint64_t test_substream(uint64_t seed, uint64_t stream)
{
	return test_mix(seed ^ test_mix(stream + 0x51ed2701ULL));
}

static TEST_UNUSED uint64_t test_rng_next(test_rng *rng)
{
	rng->state += 0x9e3779b97f4a7c15ULL;
	return test_mix(rng->state);
}

/* Uniform enough in [0, bound); bound 0 gives 0. */
static TEST_UNUSED uint64_t test_rng_below(test_rng *rng, uint64_t bound)
{
	return bound ? test_rng_next(rng) % bound : 0;
}

static TEST_UNUSED void test_rng_fill(test_rng *rng, void *buffer, size_t length)
{
	unsigned char *bytes = buffer;

	while (length >= 8) {
		uint64_t word = test_rng_next(rng);
		memcpy(bytes, &word, 8);
		bytes += 8;
		length -= 8;
	}
	if (length) {
		uint64_t word = test_rng_next(rng);
		memcpy(bytes, &word, length);
	}
}

/* Fisher-Yates shuffle of an index array. */
static TEST_UNUSED void test_rng_shuffle(test_rng *rng, size_t *items, size_t count)
{
	for (size_t i = count; i > 1; i--) {
		size_t j = (size_t)test_rng_below(rng, i);
		size_t held = items[i - 1];
		items[i - 1] = items[j];
		items[j] = held;
	}
}

/* ---- Options: --name=N on the command line, else COWMEM_TEST_NAME ------ */

static TEST_UNUSED int test_option(int argc, char **argv, const char *name,
				   const char *environment_name, uint64_t *value)
{
	size_t name_length = strlen(name);
	const char *text = NULL;

	for (int i = 1; i < argc; i++) {
		const char *argument = argv[i];
		if (strncmp(argument, "--", 2) == 0)
			argument += 2;
		if (strncmp(argument, name, name_length) == 0 &&
		    argument[name_length] == '=')
			text = argument + name_length + 1;
	}
	if (!text && environment_name)
		text = getenv(environment_name);
	if (!text || !*text)
		return 0;

	char *end;
	errno = 0;
	unsigned long long parsed = strtoull(text, &end, 0);
	if (errno || *end) {
		fprintf(stderr, "bad value for %s: '%s'\n", name, text);
		exit(2);
	}
	*value = parsed;
	return 1;
}

/* The run's seed: --seed=N, else COWMEM_TEST_SEED, else from the clock
 * (only to vary runs; nothing is timed). Always printed as seed=N. */
static TEST_UNUSED uint64_t test_seed_init(int argc, char **argv)
{
	uint64_t seed;

	if (!test_option(argc, argv, "seed", "COWMEM_TEST_SEED", &seed)) {
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		seed = test_mix((uint64_t)now.tv_sec * 1000000000ULL +
				(uint64_t)now.tv_nsec) ^ (uint64_t)getpid();
		/* Keep it short enough to type. */
		seed %= 1000000000000ULL;
	}
	test_seed = seed;
	test_seed_known = 1;
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "-l") == 0)
			return seed; /* a list, not a run */
	printf("seed=%" PRIu64 "\n", seed);
	fflush(stdout);
	return seed;
}

/* ---- The library ------------------------------------------------------- */

static TEST_UNUSED size_t test_page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

/* The library's backend name ("userfaultfd", "userfaultfd-user", "memfd"),
 * or "?" if it would not say. */
static TEST_UNUSED const char *test_backend(void)
{
	const char *backend = cowmem_backend();
	return backend ? backend : "?";
}

/* Is `name` an item of the comma-separated list `features` (as
 * cowmem_features() returns it)? Whole items only: "wp" is not "wp-async". */
static TEST_UNUSED int test_feature_listed(const char *features, const char *name)
{
	size_t length = strlen(name);

	for (const char *item = features; item && *item;) {
		size_t item_length = strcspn(item, ",");
		if (item_length == length && strncmp(item, name, length) == 0)
			return 1;
		item += item_length + (item[item_length] == ',');
	}
	return 0;
}

/* Does the library use the optional feature `name` in this process? */
static TEST_UNUSED int test_feature_in_use(const char *name)
{
	return test_feature_listed(cowmem_features(), name);
}

/*
 * Pages are lent lazily (a clone waits for its source's written pages and
 * the fault server fills them on first touch) only with both "minor" and
 * "wp"; without them a clone copies those pages when it is made. Returns
 * NULL if lending is lazy, else the name of a missing feature, for a skip
 * message or a limit that depends on it.
 */
static TEST_UNUSED const char *test_lazy_lending_missing(void)
{
	if (!test_feature_in_use("minor"))
		return "minor";
	if (!test_feature_in_use("wp"))
		return "wp";
	/* Pages are served lazily only where clones fold. */
	if (!test_feature_in_use("folds"))
		return "folds";
	return NULL;
}

/*
 * Only with user-mode-only faults may a system call that meets an unfilled
 * page fail with EFAULT; the documented remedy there is cowmem_prefault()
 * on the buffer first, so the tests do exactly that on that backend.
 */
static TEST_UNUSED int test_syscalls_need_prefault(void)
{
	return strcmp(test_backend(), "userfaultfd-user") == 0;
}

/* Prints "backend=... features=..." once per process (make test-kernels
 * reads the first such line of a program's output). */
static TEST_UNUSED void test_print_backend(void)
{
	static int backend_printed;
	/* Under harness.h, once per program: the flag is shared by its cases. */
	int *printed = test_report ? (int *)(test_report + TEST_REPORT_SIZE) : &backend_printed;
	if (!*printed) {
		const char *features = cowmem_features();
		printf("backend=%s features=%s\n", test_backend(),
		       features ? features : "?");
		fflush(stdout);
		*printed = 1;
	}
}

/*
 * Creates a region or ends the test: a skip when the library reports that
 * the environment lacks its kernel mechanism (EPERM, ENOSYS), a failure for
 * anything else. The first success prints the backend in use.
 */
static TEST_UNUSED cowmem_region *test_create_or_skip(size_t size)
{
	cowmem_region *region = cowmem_create(size);

	if (!region) {
		int error = errno;
		if (error == EPERM || error == ENOSYS)
			test_skip("cowmem_create(%zu) failed with %s (%s): the "
				  "kernel mechanism is not available here",
				  size, error == EPERM ? "EPERM" : "ENOSYS",
				  strerror(error));
		FAIL("cowmem_create(%zu) returned NULL, errno %d (%s)", size,
		     error, strerror(error));
	}
	test_print_backend();
	return region;
}

/* ---- Comparing bytes ---------------------------------------------------- */

static TEST_UNUSED void test_hex_window(FILE *out, const unsigned char *bytes,
					size_t length, size_t from)
{
	for (size_t i = from; i < length && i < from + 16; i++)
		fprintf(out, " %02x", bytes[i]);
}

/*
 * Compares `length` bytes of `actual` (region memory) with `expected` (the
 * model). On the first difference prints `what`, the offset and 16 bytes of
 * each side from there, and fails. Returns the number of bytes compared.
 */
static TEST_UNUSED size_t test_check_bytes_at(const char *file, int line,
					      const void *actual,
					      const void *expected,
					      size_t length, const char *what)
{
	const unsigned char *a = actual, *e = expected;

	if (memcmp(a, e, length) == 0)
		return length;
	size_t offset = 0;
	while (a[offset] == e[offset])
		offset++;
	size_t page = test_page_size();
	flockfile(stderr);
	fprintf(stderr, "mismatch in %s at offset %zu (page %zu + %zu): "
		"expected 0x%02x, actual 0x%02x\n  expected:", what, offset,
		offset / page, offset % page, e[offset], a[offset]);
	test_hex_window(stderr, e, length, offset);
	fprintf(stderr, "\n  actual:  ");
	test_hex_window(stderr, a, length, offset);
	fprintf(stderr, "\n");
	funlockfile(stderr);
	test_fail_at(file, line, NULL, "bytes differ in %s at offset %zu", what,
		     offset);
}
#define CHECK_BYTES(actual, expected, length, what)                        \
	test_check_bytes_at(__FILE__, __LINE__, (actual), (expected),      \
			    (length), (what))

/* ---- Pattern content (for regions too large to keep a model of) -------- */

/* The 8-byte word at byte offset `offset` (a multiple of 8) of content
 * `tag`; different tags give unrelated content. */
static TEST_UNUSED uint64_t test_pattern_word(uint64_t tag, size_t offset)
{
	return test_mix(tag * 0x100000001b3ULL ^ (uint64_t)offset);
}

static TEST_UNUSED void test_pattern_fill(void *buffer, size_t length,
					  uint64_t tag, size_t base_offset)
{
	unsigned char *bytes = buffer;
	for (size_t i = 0; i + 8 <= length; i += 8) {
		uint64_t word = test_pattern_word(tag, base_offset + i);
		memcpy(bytes + i, &word, 8);
	}
}

/* Returns the offset of the first 8-byte word that differs from the
 * pattern, or `length` when all match. */
static TEST_UNUSED size_t test_pattern_find_difference(const void *buffer,
						       size_t length,
						       uint64_t tag,
						       size_t base_offset)
{
	const unsigned char *bytes = buffer;
	for (size_t i = 0; i + 8 <= length; i += 8) {
		uint64_t word;
		memcpy(&word, bytes + i, 8);
		if (word != test_pattern_word(tag, base_offset + i))
			return i;
	}
	return length;
}

#endif /* COWMEM_TEST_UTIL_H */
