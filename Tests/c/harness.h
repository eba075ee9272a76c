/*
 * harness.h - every C test is a table of named cases.
 *
 *	static const struct test_case cases[] = {
 *		TEST_CASE("clone-reads-lent-pages", test_lent,
 *			  .features = COWMEM_FEATURE_MINOR | COWMEM_FEATURE_WP),
 *		TEST_CASE("server-claim", test_claim, .backends = "userfaultfd"),
 *		TEST_CASE("unknown-backend", test_unknown,
 *			  .environment = { "COWMEM_BACKEND=no-such-backend" }),
 *	};
 *	int main(int argc, char **argv)
 *	{
 *		... options, seed: nothing that starts the library ...
 *		return test_main(argc, argv, cases, TEST_CASE_COUNT(cases));
 *	}
 *
 * Each case runs in a process of its own, forked from main, which never
 * starts the library itself: so every case meets a library that has not
 * started yet (COWMEM_BACKEND and COWMEM_DISABLE in
 * .environment take effect), a CHECK or FAIL ends only its case (with
 * file:line and the message on the case's result line), and cases can
 * fork, exec and kill children as before. A case passes by returning,
 * fails by CHECK, FAIL or CHECK_BYTES, and skips by test_skip("reason").
 *
 * A case with .features or .backends starts the library first and skips
 * with a reason naming what is missing (the "feature X not in use" and
 * "backend X" wording make test-kernels accepts as a kernel reason); one
 * without starts nothing, so it can measure the library's first use.
 * .covered_by names another program that tests the case (for errnos.c's
 * table of documented errnos): -l lists it, a run does not.
 *
 * One line per case: "PASS name", "SKIP name: reason" or "FAIL name: ...",
 * then a summary. Exit 0 if every case that ran passed, 77 if all were
 * skipped, 1 if any failed (2 for a bad option or a pattern that matches
 * nothing). Options: -l lists the cases and what each needs; -f PATTERN
 * runs the cases whose name matches (fnmatch(3)); the program's own
 * --name=N options and COWMEM_TEST_* variables as before.
 *
 * After liburing's test runner (one result line, 77 for a skip) and the
 * kernel's uffd-unit-tests (a table of tests, each with the features it
 * needs and a skip naming the missing one).
 */
#ifndef COWMEM_HARNESS_H
#define COWMEM_HARNESS_H

#include "test_util.h"
#include "process_util.h"

#include <fnmatch.h>
#include <sys/mman.h>
#include <sys/prctl.h>

struct test_case {
	const char *name;
	void (*run)(void);
	uint64_t features;	    /* COWMEM_FEATURE_* bits the case needs */
	const char *backends;	    /* the backends it runs on, comma-separated; NULL: any */
	const char *environment[3]; /* NAME=value, set before the library starts */
	unsigned timeout;	    /* seconds; 0: TEST_CASE_TIMEOUT */
	const char *covered_by;	    /* not run here: where it is tested */
};

/* TEST_CASE(name, function, .field = value, ...) */
#define TEST_CASE(case_name, function, ...) \
	{ .name = (case_name), .run = (function), __VA_ARGS__ }
/* An entry that another program tests. */
#define TEST_COVERED(case_name, where) { .name = (case_name), .covered_by = (where) }
#define TEST_CASE_COUNT(cases) (sizeof(cases) / sizeof((cases)[0]))
/* A case that takes longer fails (its process is killed). */
#define TEST_CASE_TIMEOUT 600

/* The name of the case this process runs, NULL in main. */
static const char *test_case_name TEST_UNUSED;

static const struct {
	uint64_t bit;
	const char *name;
} test_feature_names[] = {
	{ COWMEM_FEATURE_MINOR, "minor" },
	{ COWMEM_FEATURE_WP, "wp" },
	{ COWMEM_FEATURE_POISON, "poison" },
	{ COWMEM_FEATURE_DONTUNMAP, "dontunmap" },
	{ COWMEM_FEATURE_ZERO_PFN, "zero-pfn" },
	{ COWMEM_FEATURE_PAGEMAP_SCAN, "pagemap-scan" },
	{ COWMEM_FEATURE_DEVICE, "device" },
	{ COWMEM_FEATURE_ENGINE_V2, "engine-v2" },
	{ COWMEM_FEATURE_FOLDS, "folds" },
};

/* The names of the bits of `mask`, comma-separated, into `text`. */
static TEST_UNUSED const char *test_feature_list(uint64_t mask, char *text, size_t size)
{
	size_t used = 0;
	text[0] = '\0';
	for (size_t i = 0; i < sizeof test_feature_names / sizeof test_feature_names[0]; i++)
		if ((mask & test_feature_names[i].bit) && used < size)
			used += (size_t)snprintf(text + used, size - used, "%s%s",
						 used ? "," : "", test_feature_names[i].name);
	return text;
}

/* Does the backend list `backends` name `backend`? */
static TEST_UNUSED bool test_backend_allowed(const char *backends, const char *backend)
{
	return !backends || test_feature_listed(backends, backend);
}

/* In the case's process: skips unless the library gives what it needs. */
static TEST_UNUSED void test_case_requirements(const struct test_case *c)
{
	if (!c->features && !c->backends)
		return;
	uint64_t mask;
	if (cowmem_feature_mask(&mask) != 0) {
		int error = errno;
		if (error == EPERM || error == ENOSYS)
			test_skip("the kernel mechanism is not available here "
				  "(cowmem_feature_mask: %s)", strerror(error));
		FAIL("cowmem_feature_mask: %s", strerror(error));
	}
	test_print_backend();
	char missing[256], have[256];
	if (c->features & ~mask) {
		test_feature_list(c->features & ~mask, missing, sizeof missing);
		test_skip("feature %s not in use (in use: %s)", missing,
			  test_feature_list(mask, have, sizeof have));
	}
	if (!test_backend_allowed(c->backends, test_backend()))
		test_skip("runs on backend %s; backend %s in use", c->backends, test_backend());
}

static TEST_UNUSED void test_case_list(const struct test_case *c)
{
	char features[256];
	printf("%-50s", c->name);
	if (c->covered_by) {
		printf("  elsewhere: %s\n", c->covered_by);
		return;
	}
	const char *separator = "  needs ";
	if (c->features) {
		printf("%sfeature %s", separator,
		       test_feature_list(c->features, features, sizeof features));
		separator = "; ";
	}
	if (c->backends) {
		printf("%sbackend %s", separator, c->backends);
		separator = "; ";
	}
	for (size_t e = 0; e < 3 && c->environment[e]; e++) {
		printf("%s%s", separator, c->environment[e]);
		separator = " ";
	}
	printf("\n");
}

/* Runs one case in a child; returns TEST_EXIT_PASS, _SKIP or _FAIL after
 * printing its result line. */
static TEST_UNUSED int test_case_run(const struct test_case *c, char *report,
				     const char *program)
{
	memset(report, 0, TEST_REPORT_SIZE);
	fflush(stdout);
	fflush(stderr);
	pid_t parent = getpid(), pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		/* A program killed (a timeout, a watchdog's SIGALRM) takes its
		 * case with it, and with it the case's hold on its output. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(TEST_EXIT_FAIL);
		test_report = report;
		test_report_pid = getpid();
		test_case_name = c->name;
		for (size_t e = 0; e < 3 && c->environment[e]; e++)
			putenv((char *)c->environment[e]);
		test_case_requirements(c);
		c->run();
		fflush(stdout);
		fflush(stderr);
		/* exit, not _exit: LeakSanitizer looks at the case's memory. */
		exit(TEST_EXIT_PASS);
	}
	unsigned timeout = c->timeout ? c->timeout : TEST_CASE_TIMEOUT;
	int status = wait_bounded(pid, timeout);
	fflush(stdout);
	const char *message = report[0] ? report + 1 : "";
	if (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == TEST_EXIT_PASS) {
		printf("PASS %s\n", c->name);
		return TEST_EXIT_PASS;
	}
	if (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == TEST_EXIT_SKIP) {
		printf("SKIP %s: %s\n", c->name, *message ? message : "(no reason given)");
		return TEST_EXIT_SKIP;
	}
	if (status == -1)
		printf("FAIL %s: still running after %u s (killed)\n", c->name, timeout);
	else if (*message)
		printf("FAIL %s: %s\n", c->name, message);
	else
		printf("FAIL %s: %s\n", c->name, describe_status(status));
	if (test_seed_known)
		printf("     replay with: COWMEM_TEST_SEED=%" PRIu64 " %s%s%s -f '%s'\n",
		       test_seed, test_replay_hint, test_replay_hint[0] ? " " : "", program,
		       c->name);
	return TEST_EXIT_FAIL;
}

static TEST_UNUSED int test_main(int argc, char **argv, const struct test_case *cases,
				 size_t count)
{
	const char *pattern = NULL, *program = strrchr(argv[0], '/');
	program = program ? program + 1 : argv[0];
	bool list = false;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-l") == 0)
			list = true;
		else if (strcmp(argv[i], "-f") == 0 && i + 1 < argc)
			pattern = argv[++i];
		else if (strcmp(argv[i], "-f") == 0 || strncmp(argv[i], "--", 2) != 0) {
			fprintf(stderr, "usage: %s [-l] [-f PATTERN] [--option=N ...]\n", program);
			return 2;
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* The message, then test_print_backend()'s flag. */
	char *report = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(report != MAP_FAILED, "mmap: %s", strerror(errno));

	int passed = 0, failed = 0, skipped = 0, matched = 0, elsewhere = 0;
	for (size_t i = 0; i < count; i++) {
		const struct test_case *c = &cases[i];
		if (pattern && fnmatch(pattern, c->name, 0) != 0)
			continue;
		matched++;
		if (list) {
			test_case_list(c);
			continue;
		}
		if (c->covered_by) {
			elsewhere++;
			continue;
		}
		int rc = test_case_run(c, report, program);
		passed += rc == TEST_EXIT_PASS;
		skipped += rc == TEST_EXIT_SKIP;
		failed += rc == TEST_EXIT_FAIL;
	}
	munmap(report, 4096);
	if (!matched) {
		fprintf(stderr, "%s: no case matches '%s' (-l lists them)\n", program,
			pattern ? pattern : "");
		return 2;
	}
	if (list)
		return TEST_EXIT_PASS;
	printf("%s: %d passed, %d failed, %d skipped", program, passed, failed, skipped);
	if (elsewhere)
		printf(", %d covered by other programs (-l lists them)", elsewhere);
	printf("\n");
	return failed ? TEST_EXIT_FAIL : passed ? TEST_EXIT_PASS : TEST_EXIT_SKIP;
}

#endif /* COWMEM_HARNESS_H */
