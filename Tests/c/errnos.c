/*
 * errnos.c - one named case per documented errno of the public functions,
 * from a table.
 *
 * Each case makes one call fail in one documented way and checks the
 * result (-1, NULL or 0, as the function's page says) and errno. A case
 * that needs the library started in a particular way (COWMEM_BACKEND,
 * COWMEM_DISABLE) runs in a fresh process of this program, because the
 * library starts once per process; a case that cannot run here skips and
 * says why. The errnos a function documents that no case here makes (the
 * ones only exhausting a resource produces, such as ENOMEM or EMFILE) are
 * listed by -l as covered elsewhere, with the test that covers them.
 *
 * Options: -l lists the cases and what each needs; -f PATTERN runs only
 * the cases whose name matches (fnmatch(3), e.g. -f 'cowmem_save*').
 */
#include "test_util.h"
#include "process_util.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>

static size_t page;

/* ---- The calls --------------------------------------------------------- */

/* The errno a failing call left, or 0 if the call did not fail as the
 * function reports failure. */
#define FAILED_WITH(failed) ((failed) ? errno : 0)

static cowmem_region *some_region(void)
{
	static cowmem_region *r;
	if (!r && !(r = cowmem_create(4 * page)))
		return NULL;
	return r;
}

static int create_zero(void) { errno = 0; return FAILED_WITH(!cowmem_create(0)); }
static int create_huge(void) { errno = 0; return FAILED_WITH(!cowmem_create(SIZE_MAX)); }
static int clone_null(void) { errno = 0; return FAILED_WITH(!cowmem_clone(NULL)); }
static int data_null(void) { errno = 0; return FAILED_WITH(!cowmem_data(NULL)); }
static int size_null(void) { errno = 0; return FAILED_WITH(cowmem_size(NULL) == 0); }
static int reset_null(void) { errno = 0; return FAILED_WITH(cowmem_reset(NULL) == -1); }
static int stats_null(void)
{
	struct cowmem_stats s;
	errno = 0;
	return FAILED_WITH(cowmem_stats(NULL, &s) == -1);
}
static int stats_null_out(void)
{
	errno = 0;
	return FAILED_WITH(cowmem_stats(some_region(), NULL) == -1);
}
static int dirty_null(void)
{
	errno = 0;
	return FAILED_WITH(cowmem_dirty_pages(NULL, NULL, 0) == -1);
}
static int dirty_pages_null_cap(void)
{
	errno = 0;
	return FAILED_WITH(cowmem_dirty_pages(some_region(), NULL, 4) == -1);
}
static int copy_null(void) { errno = 0; return FAILED_WITH(cowmem_copy(NULL, some_region()) == -1); }
static int copy_sizes(void)
{
	cowmem_region *other = cowmem_create(8 * page);
	CHECK(other, "cowmem_create: %s", strerror(errno));
	errno = 0;
	int e = FAILED_WITH(cowmem_copy(some_region(), other) == -1);
	cowmem_destroy(other);
	return e;
}
static int prefault_null(void) { errno = 0; return FAILED_WITH(cowmem_prefault(NULL, 0, 1, 0) == -1); }
static int prefault_outside(void)
{
	errno = 0;
	return FAILED_WITH(cowmem_prefault(some_region(), 4 * page, 1, 0) == -1);
}
static int mask_null(void) { errno = 0; return FAILED_WITH(cowmem_feature_mask(NULL) == -1); }

/* A regular file, already unlinked. */
static int temp_file(void)
{
	char path[] = "/tmp/cowmem-errnos-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0, "mkstemp: %s", strerror(errno));
	unlink(path);
	return fd;
}

static int save_null(void)
{
	int fd = memfd_create("errnos", MFD_CLOEXEC);
	errno = 0;
	int e = FAILED_WITH(cowmem_save(NULL, fd) == -1);
	close(fd);
	return e;
}
static int save_append(void)
{
	int fd = temp_file();
	CHECK(fcntl(fd, F_SETFL, O_APPEND) == 0, "O_APPEND: %s", strerror(errno));
	errno = 0;
	int e = FAILED_WITH(cowmem_save(some_region(), fd) == -1);
	close(fd);
	return e;
}
static int save_pipe(void)
{
	int fds[2];
	CHECK(pipe(fds) == 0, "pipe: %s", strerror(errno));
	errno = 0;
	int e = FAILED_WITH(cowmem_save(some_region(), fds[1]) == -1);
	close(fds[0]);
	close(fds[1]);
	return e;
}
static int save_read_only(void)
{
	int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0, "open: %s", strerror(errno));
	errno = 0;
	int e = FAILED_WITH(cowmem_save(some_region(), fd) == -1);
	close(fd);
	return e;
}
/* RLIMIT_FSIZE below the snapshot's size: pwrite(2) and ftruncate(2) fail
 * with EFBIG (SIGXFSZ ignored, as a program that handles it would). */
static int save_too_big(void)
{
	int fd = temp_file();
	memset(cowmem_data(some_region()), 0x33, 4 * page);
	struct rlimit old, small;
	CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0, "getrlimit: %s", strerror(errno));
	small = (struct rlimit){ page, old.rlim_max };
	void (*previous)(int) = signal(SIGXFSZ, SIG_IGN);
	CHECK(setrlimit(RLIMIT_FSIZE, &small) == 0, "setrlimit: %s", strerror(errno));
	errno = 0;
	int e = FAILED_WITH(cowmem_save(some_region(), fd) == -1);
	CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0, "setrlimit: %s", strerror(errno));
	signal(SIGXFSZ, previous);
	close(fd);
	return e;
}
static int load_closed(void) { errno = 0; return FAILED_WITH(!cowmem_load(-1)); }
static int load_junk(void)
{
	int fd = memfd_create("errnos", MFD_CLOEXEC);
	char junk[4096];
	memset(junk, 0x7e, sizeof junk);
	CHECK(fd >= 0 && write(fd, junk, sizeof junk) == (ssize_t)sizeof junk, "memfd");
	errno = 0;
	int e = FAILED_WITH(!cowmem_load(fd));
	close(fd);
	return e;
}
static int load_pipe(void)
{
	int fds[2];
	CHECK(pipe(fds) == 0, "pipe: %s", strerror(errno));
	errno = 0;
	int e = FAILED_WITH(!cowmem_load(fds[0]));
	close(fds[0]);
	close(fds[1]);
	return e;
}
static int claim_after_server(void)
{
	cowmem_region *r = some_region(), *c = r ? cowmem_clone(r) : NULL;
	CHECK(c, "cowmem_clone: %s", strerror(errno)); /* starts the library's server */
	errno = 0;
	int e = FAILED_WITH(cowmem_server_claim() == -1);
	cowmem_destroy(c);
	return e;
}
static int claim(void) { errno = 0; return FAILED_WITH(cowmem_server_claim() == -1); }
static int handle(void) { errno = 0; return FAILED_WITH(cowmem_server_handle() == -1); }
static int backend(void) { errno = 0; return FAILED_WITH(!cowmem_backend()); }
static int features(void) { errno = 0; return FAILED_WITH(!cowmem_features()); }

/* ---- The table ----------------------------------------------------------- */

struct errno_case {
	const char *name;   /* function/ERRNO/how */
	int expected, also; /* errno, and another the page says to treat alike (or 0) */
	int (*run)(void);
	const char *env[2]; /* for a fresh process: NAME=value, or NULL */
	const char *needs;  /* the backend it needs, or NULL */
};

static const struct errno_case cases[] = {
	{ "cowmem_create/EINVAL/size-0", EINVAL, 0, create_zero, { NULL }, NULL },
	{ "cowmem_create/EOVERFLOW/size-max", EOVERFLOW, ENOMEM, create_huge, { NULL }, NULL },
	{ "cowmem_create/EINVAL/unknown-backend", EINVAL, 0, create_zero,
	  { "COWMEM_BACKEND=no-such-backend" }, NULL },
	{ "cowmem_clone/EINVAL/null", EINVAL, 0, clone_null, { NULL }, NULL },
	{ "cowmem_data/EINVAL/null", EINVAL, 0, data_null, { NULL }, NULL },
	{ "cowmem_size/EINVAL/null", EINVAL, 0, size_null, { NULL }, NULL },
	{ "cowmem_dirty_pages/EINVAL/null", EINVAL, 0, dirty_null, { NULL }, NULL },
	{ "cowmem_dirty_pages/EINVAL/pages-null", EINVAL, 0, dirty_pages_null_cap, { NULL }, NULL },
	{ "cowmem_reset/EINVAL/null", EINVAL, 0, reset_null, { NULL }, NULL },
	{ "cowmem_save/EINVAL/null", EINVAL, 0, save_null, { NULL }, NULL },
	{ "cowmem_save/EINVAL/o-append", EINVAL, 0, save_append, { NULL }, NULL },
	{ "cowmem_save/ESPIPE/pipe", ESPIPE, 0, save_pipe, { NULL }, NULL },
	{ "cowmem_save/EBADF/read-only", EBADF, 0, save_read_only, { NULL }, NULL },
	{ "cowmem_save/EFBIG/file-size-limit", EFBIG, 0, save_too_big, { NULL }, NULL },
	{ "cowmem_load/EBADF/closed", EBADF, 0, load_closed, { NULL }, NULL },
	{ "cowmem_load/EINVAL/not-a-snapshot", EINVAL, 0, load_junk, { NULL }, NULL },
	{ "cowmem_load/ESPIPE/pipe", ESPIPE, 0, load_pipe, { NULL }, NULL },
	{ "cowmem_copy/EINVAL/null", EINVAL, 0, copy_null, { NULL }, NULL },
	{ "cowmem_copy/EINVAL/sizes-differ", EINVAL, 0, copy_sizes, { NULL }, NULL },
	{ "cowmem_stats/EINVAL/null", EINVAL, 0, stats_null, { NULL }, NULL },
	{ "cowmem_stats/EINVAL/stats-null", EINVAL, 0, stats_null_out, { NULL }, NULL },
	{ "cowmem_server_claim/EBUSY/library-serves", EBUSY, 0, claim_after_server, { "" },
	  "userfaultfd" },
	{ "cowmem_server_claim/ENOTSUP/memfd", ENOTSUP, 0, claim, { "COWMEM_BACKEND=memfd" }, NULL },
	{ "cowmem_server_claim/EINVAL/unknown-disable", EINVAL, 0, claim,
	  { "COWMEM_DISABLE=no-such-feature" }, NULL },
	{ "cowmem_server_handle/ENOTSUP/memfd", ENOTSUP, 0, handle, { "COWMEM_BACKEND=memfd" },
	  NULL },
	{ "cowmem_backend/EINVAL/unknown-backend", EINVAL, 0, backend,
	  { "COWMEM_BACKEND=no-such-backend" }, NULL },
	{ "cowmem_backend/ENOSYS/no-user-mode", ENOSYS, 0, backend,
	  { "COWMEM_BACKEND=userfaultfd-user", "COWMEM_DISABLE=user-mode" }, NULL },
	{ "cowmem_features/EINVAL/unknown-disable", EINVAL, 0, features,
	  { "COWMEM_DISABLE=no-such-feature" }, NULL },
	{ "cowmem_feature_mask/EINVAL/null", EINVAL, 0, mask_null, { NULL }, NULL },
	{ "cowmem_prefault/EINVAL/null", EINVAL, 0, prefault_null, { NULL }, NULL },
	{ "cowmem_prefault/EINVAL/outside", EINVAL, 0, prefault_outside, { NULL }, NULL },
};
#define CASE_COUNT (sizeof cases / sizeof cases[0])

/* Documented errnos no case above makes: where they are tested, or that
 * they are not. */
static const struct {
	const char *errnos, *where;
} elsewhere[] = {
	{ "ENOMEM (the functions that allocate or map)", "alloc_failures.c, exhaustion.c" },
	{ "EMFILE (cowmem_create, cowmem_load, first use)", "exhaustion.c descriptors, first-use" },
	{ "EPERM, ENOSYS, ENOTSUP at start (forced backends)", "backends.c" },
	{ "EINVAL (cowmem_destroy of a region that is not live)", "bad_input.c" },
	{ "ENFILE (the system's file table full)", "not tested" },
	{ "EAGAIN (cowmem_clone: the server thread cannot start)", "not tested" },
	{ "EIO, EDQUOT, ENOSPC (cowmem_save, cowmem_load: the file's)", "not tested" },
};

/* ---- Running ------------------------------------------------------------- */

static bool fresh(const struct errno_case *c)
{
	return c->env[0] != NULL;
}

/* Runs case i in this process; exit status: pass, fail or skip. */
static int run_here(const struct errno_case *c)
{
	if (c->needs && strcmp(test_backend(), c->needs) != 0) {
		printf("SKIP %s: needs the %s backend (this process has %s)\n", c->name, c->needs,
		       test_backend());
		return TEST_EXIT_SKIP;
	}
	int got = c->run();
	if (got == c->expected || (c->also && got == c->also)) {
		printf("ok   %s\n", c->name);
		return TEST_EXIT_PASS;
	}
	printf("FAIL %s: %s\n", c->name,
	       got == 0 ? "the call did not fail" : strerror(got));
	return TEST_EXIT_FAIL;
}

static int run_fresh(size_t i)
{
	char argument[32];
	snprintf(argument, sizeof argument, "--case-index=%zu", i);
	fflush(stdout);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		for (size_t e = 0; e < 2 && cases[i].env[e]; e++)
			if (*cases[i].env[e])
				putenv((char *)cases[i].env[e]);
		if (!freopen("/dev/null", "w", stderr)) /* the library's start-up message */
			_exit(TEST_EXIT_FAIL);
		execl("/proc/self/exe", "errnos", argument, (char *)NULL);
		_exit(127);
	}
	int status = wait_bounded(pid, 60);
	CHECK(status != -1, "%s hung", cases[i].name);
	return WIFEXITED(status) ? WEXITSTATUS(status) : TEST_EXIT_FAIL;
}

static void list(void)
{
	for (size_t i = 0; i < CASE_COUNT; i++) {
		const struct errno_case *c = &cases[i];
		printf("%-46s", c->name);
		if (c->needs)
			printf("  needs the %s backend;", c->needs);
		if (fresh(c)) {
			printf("  in a fresh process");
			for (size_t e = 0; e < 2 && c->env[e]; e++)
				if (*c->env[e])
					printf(" %s", c->env[e]);
		}
		printf("\n");
	}
	printf("\ndocumented errnos tested elsewhere:\n");
	for (size_t i = 0; i < sizeof elsewhere / sizeof elsewhere[0]; i++)
		printf("  %-62s %s\n", elsewhere[i].errnos, elsewhere[i].where);
}

int main(int argc, char **argv)
{
	const char *pattern = NULL;

	page = test_page_size();
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-l") == 0) {
			list();
			return TEST_EXIT_PASS;
		}
		if (strcmp(argv[i], "-f") == 0 && i + 1 < argc)
			pattern = argv[++i];
		else if (strncmp(argv[i], "--case-index=", 13) == 0)
			return run_here(&cases[strtoul(argv[i] + 13, NULL, 10)]);
	}
	int passed = 0, failed = 0, skipped = 0;
	for (size_t i = 0; i < CASE_COUNT; i++) {
		if (pattern && fnmatch(pattern, cases[i].name, 0) != 0)
			continue;
		int rc = fresh(&cases[i]) ? run_fresh(i) : run_here(&cases[i]);
		passed += rc == TEST_EXIT_PASS;
		skipped += rc == TEST_EXIT_SKIP;
		failed += rc != TEST_EXIT_PASS && rc != TEST_EXIT_SKIP;
	}
	printf("errnos: %d passed, %d failed, %d skipped\n", passed, failed, skipped);
	return failed ? TEST_EXIT_FAIL : passed ? TEST_EXIT_PASS : TEST_EXIT_SKIP;
}
