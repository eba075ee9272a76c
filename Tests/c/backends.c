/*
 * backends.c - every backend and every optional-feature path, in every
 * environment this machine can make: content stays right, the backend in
 * use is the one expected, and a backend that cannot work says so.
 *
 * The differential test (build/tests/differential, next to this program),
 * then the change-tracking test (build/tests/tracking: dirty pages, reset,
 * save/load), run as child processes under each configuration:
 *   - COWMEM_BACKEND=auto, userfaultfd, userfaultfd-user and memfd;
 *   - COWMEM_DISABLE= each optional feature alone, and all of them;
 *   - as user nobody (root only: the child drops its groups, gid and uid
 *     before exec), auto and each userfaultfd backend forced;
 *   - under a seccomp filter that makes userfaultfd(2) fail with EPERM, as
 *     the default profile of container runtimes does, and the
 *     USERFAULTFD_IOC_NEW ioctl too (a container has no /dev/userfaultfd;
 *     root here has one): auto, and each userfaultfd backend forced;
 *   - under a filter that denies only userfaultfd(2), so that root reaches
 *     kernel-mode faults through /dev/userfaultfd.
 * Each child prints "backend=... features=..."; the backend must be the one
 * that a probe of the same environment predicts (kernel-mode userfaultfd
 * with shmem support: "userfaultfd"; otherwise "memfd"; "userfaultfd-user"
 * only by name), no disabled feature may be listed, and the child must
 * pass, or, for a forced backend that is not available, skip (77) with the
 * library's message.
 * Other children check calls in-process: an unknown COWMEM_BACKEND or
 * COWMEM_DISABLE value makes every call fail with EINVAL and a message on
 * stderr; a forced backend that seccomp forbids fails with EPERM and a
 * message; a forced userfaultfd-user on a kernel without
 * UFFD_USER_MODE_ONLY (before 5.11; COWMEM_DISABLE=user-mode makes one)
 * fails with ENOSYS, never the EINVAL of an unknown value;
 * cowmem_prefault() keeps every byte in each backend, and read(2) into
 * lent pages just prefaulted for writing succeeds.
 *
 * Each run is a case named after its environment; one that this machine
 * cannot make (not root, no seccomp filter for the architecture, ...) skips
 * and says why.
 * Options: --seed=N (COWMEM_TEST_SEED; passed to every differential run),
 * --ops=N (COWMEM_TEST_OPS, default 4000 per thread; two threads).
 */
#include "harness.h"

#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/mount.h>
#include <linux/userfaultfd.h>

#ifndef USERFAULTFD_IOC_NEW /* 6.1+: /dev/userfaultfd */
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef SECCOMP_RET_KILL_PROCESS /* 4.14+ */
#define SECCOMP_RET_KILL_PROCESS SECCOMP_RET_KILL
#endif

#if defined(__x86_64__)
#define FILTER_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define FILTER_ARCH AUDIT_ARCH_AARCH64
#endif

/* A child that hangs (a fault nobody serves) is killed and fails. */
#define CHILD_SECONDS 300
/* The child could not set up its environment (exec, uid, filter). */
#define CHILD_SETUP_FAILED 125

enum setup {
	AS_IS,           /* this process's user and privileges */
	AS_NOBODY,       /* groups, gid and uid of nobody */
	SECCOMP_ALL,     /* userfaultfd(2) and USERFAULTFD_IOC_NEW: EPERM */
	SECCOMP_SYSCALL, /* userfaultfd(2) only: EPERM */
	NO_PROC,         /* a mount namespace without /proc (root only) */
	SETUP_COUNT
};

static const char *const setup_names[SETUP_COUNT] = {
	"", "nobody: ", "seccomp: ", "seccomp, device open: ", "no /proc: ",
};

enum action {
	DIFFERENTIAL,       /* exec the differential test */
	UNKNOWN_VALUE,      /* every call fails with EINVAL and a message */
	FORCED_UNAVAILABLE, /* every call fails with EPERM or ENOSYS, a message */
	PREFAULT,           /* cowmem_prefault's contract */
};

struct run {
	enum setup setup;
	const char *backend; /* COWMEM_BACKEND, NULL: unset */
	const char *disable; /* COWMEM_DISABLE, NULL: unset */
	enum action action;

	/* Filled in by the run. */
	char label[128];
	char backend_seen[32];
	char features_seen[128];
	char result[160];
	bool failed;
};

#define ALL_FEATURES "minor,wp,poison,dontunmap,zero-pfn,pagemap-scan"

#define RUN(setup_, backend_, disable_, action_)                            \
	{ .setup = setup_, .backend = backend_, .disable = disable_,        \
	  .action = action_ }

static struct run runs[] = {
	RUN(AS_IS, "auto", NULL, DIFFERENTIAL),
	RUN(AS_IS, "userfaultfd", NULL, DIFFERENTIAL),
	RUN(AS_IS, "userfaultfd-user", NULL, DIFFERENTIAL),
	RUN(AS_IS, "memfd", NULL, DIFFERENTIAL),
	RUN(AS_IS, NULL, "minor", DIFFERENTIAL),
	RUN(AS_IS, NULL, "wp", DIFFERENTIAL),
	RUN(AS_IS, NULL, "poison", DIFFERENTIAL),
	RUN(AS_IS, NULL, "dontunmap", DIFFERENTIAL),
	RUN(AS_IS, NULL, "zero-pfn", DIFFERENTIAL),
	RUN(AS_IS, NULL, "pagemap-scan", DIFFERENTIAL),
	RUN(AS_IS, NULL, ALL_FEATURES, DIFFERENTIAL),
	RUN(AS_IS, NULL, "wp-unpopulated,wp-async,move", DIFFERENTIAL),
	RUN(AS_IS, NULL, "event-remap", DIFFERENTIAL), /* clones fold without the fence */
	RUN(AS_IS, NULL, "keep-mappings", DIFFERENTIAL), /* folds hand staging to the janitor */
	RUN(AS_IS, NULL, "background-fold", DIFFERENTIAL), /* a clone returns after its fold */
	RUN(AS_IS, NULL, "early-copies", DIFFERENTIAL), /* only folds copy old versions */
	RUN(AS_IS, "memfd", "rebase", DIFFERENTIAL), /* no folds, no rebase */
	RUN(AS_IS, NULL, "noexec-seal,process-madvise", DIFFERENTIAL),
	RUN(AS_IS, "memfd", "noexec-seal,process-madvise", DIFFERENTIAL),
	RUN(AS_NOBODY, "auto", "dev-userfaultfd", DIFFERENTIAL),
	RUN(AS_IS, "userfaultfd-user", ALL_FEATURES, DIFFERENTIAL),
	RUN(AS_IS, "memfd", "dontunmap,zero-pfn,pagemap-scan", DIFFERENTIAL),
	RUN(AS_IS, "userfaultfd-user", "user-mode", DIFFERENTIAL),
	RUN(AS_NOBODY, "auto", NULL, DIFFERENTIAL),
	RUN(AS_NOBODY, "userfaultfd", NULL, DIFFERENTIAL),
	RUN(AS_NOBODY, "userfaultfd-user", NULL, DIFFERENTIAL),
	RUN(SECCOMP_ALL, "auto", NULL, DIFFERENTIAL),
	RUN(SECCOMP_ALL, "userfaultfd", NULL, DIFFERENTIAL),
	RUN(SECCOMP_ALL, "userfaultfd-user", NULL, DIFFERENTIAL),
	RUN(SECCOMP_SYSCALL, "auto", NULL, DIFFERENTIAL),
	RUN(NO_PROC, "auto", NULL, DIFFERENTIAL),
	RUN(NO_PROC, "memfd", NULL, DIFFERENTIAL),
	RUN(AS_IS, "bogus", NULL, UNKNOWN_VALUE),
	RUN(AS_IS, "", "bogus", UNKNOWN_VALUE),
	RUN(AS_IS, NULL, "minor,bogus", UNKNOWN_VALUE),
	RUN(SECCOMP_ALL, "userfaultfd", NULL, FORCED_UNAVAILABLE),
	RUN(SECCOMP_ALL, "userfaultfd-user", NULL, FORCED_UNAVAILABLE),
	RUN(AS_IS, "userfaultfd-user", NULL, FORCED_UNAVAILABLE),
	RUN(AS_IS, "userfaultfd-user", "user-mode", FORCED_UNAVAILABLE),
	RUN(AS_IS, "userfaultfd", NULL, PREFAULT),
	RUN(AS_IS, "userfaultfd-user", NULL, PREFAULT),
	RUN(AS_IS, "memfd", NULL, PREFAULT),
};
#define RUN_COUNT (sizeof runs / sizeof runs[0])

static char differential[PATH_MAX], tracking[PATH_MAX];
static uint64_t seed, operations = 4000;
static size_t page;

/* ---- Environments ------------------------------------------------------------- */

/* Why a setup cannot be made here; NULL if it can. */
static const char *setup_unavailable(enum setup setup)
{
	if (setup == AS_NOBODY && geteuid() != 0)
		return "not root, so cannot become nobody";
	if (setup == NO_PROC && geteuid() != 0)
		return "not root, so cannot unmount /proc in a namespace of its own";
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	if (setup == NO_PROC)
		return "the sanitizer runtime itself needs /proc";
#endif
#ifndef FILTER_ARCH
	if (setup == SECCOMP_ALL || setup == SECCOMP_SYSCALL)
		return "no seccomp filter written for this architecture";
#endif
	return NULL;
}

static void setup_failed(const char *format, ...)
	__attribute__((noreturn, format(printf, 1, 2)));
static void setup_failed(const char *format, ...)
{
	va_list args;
	va_start(args, format);
	vprintf(format, args);
	va_end(args);
	printf("\n");
	fflush(stdout);
	_exit(CHILD_SETUP_FAILED);
}

static void drop_to_nobody(void)
{
	const struct passwd *nobody = getpwnam("nobody");
	uid_t uid = nobody ? nobody->pw_uid : 65534;
	gid_t gid = nobody ? nobody->pw_gid : 65534;

	if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
		setup_failed("cannot become nobody (uid %u): %s", (unsigned)uid,
			     strerror(errno));
}

#ifdef FILTER_ARCH
/* The low 32 bits of system-call argument `n`. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ARGUMENT_LOW(n) (offsetof(struct seccomp_data, args) + 8 * (n))
#else
#define ARGUMENT_LOW(n) (offsetof(struct seccomp_data, args) + 8 * (n) + 4)
#endif

/*
 * A classic BPF filter: userfaultfd(2) fails with EPERM, as under the
 * default seccomp profile of Docker and Podman; with `device` true, so does
 * ioctl(USERFAULTFD_IOC_NEW), the one way from /dev/userfaultfd to a
 * descriptor. Everything else is allowed; a foreign system-call ABI is
 * refused outright, since its numbers mean other calls.
 */
static void install_filter(bool device)
{
	struct sock_filter filter[] = {
		/* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		/* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, FILTER_ARCH, 1, 0),
		/* 2 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		/* 3 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		/* 4 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_userfaultfd, 4, 0),
		/* 5 */ device ? (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K,
							      __NR_ioctl, 0, 2)
			       : (struct sock_filter)BPF_STMT(BPF_JMP | BPF_JA, 2),
		/* 6 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARGUMENT_LOW(1)),
		/* 7 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, USERFAULTFD_IOC_NEW, 1, 0),
		/* 8 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		/* 9 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
	};
	struct sock_fprog program = {
		.len = (unsigned short)(sizeof filter / sizeof filter[0]),
		.filter = filter,
	};

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0)
		setup_failed("cannot install the seccomp filter: %s", strerror(errno));
}
#endif

/* In the child: become the environment. */
static void enter_setup(enum setup setup)
{
	switch (setup) {
	case AS_NOBODY:
		drop_to_nobody();
		break;
	case NO_PROC:
		/* Containers and chroots without /proc exist: the library must
		 * then find written pages another way, and lend nothing. */
		if (unshare(CLONE_NEWNS) < 0 ||
		    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
		    umount2("/proc", MNT_DETACH) < 0)
			setup_failed("cannot hide /proc: %s", strerror(errno));
		break;
#ifdef FILTER_ARCH
	case SECCOMP_ALL:
	case SECCOMP_SYSCALL:
		install_filter(setup == SECCOMP_ALL);
		break;
#endif
	default:
		break;
	}
}

/* ---- What each environment offers, probed without the library ------------------ */

enum {
	PROBE_KERNEL_MODE = 1, /* kernel-mode userfaultfd with shmem faults */
	PROBE_DEVICE = 2,      /* ... opened through /dev/userfaultfd */
	PROBE_USER_MODE = 4,   /* UFFD_USER_MODE_ONLY with shmem faults */
	PROBE_REACHES = 8,     /* the differential binary is executable */
};

/* Closes fd; true if it is a userfaultfd that handles shmem faults. */
static bool handles_shmem(int fd)
{
	struct uffdio_api api = { .api = UFFD_API };

	if (fd < 0)
		return false;
	bool ok = ioctl(fd, UFFDIO_API, &api) == 0 &&
		  (api.features & UFFD_FEATURE_MISSING_SHMEM);
	close(fd);
	return ok;
}

static int probe_now(void)
{
	int found = 0;
	bool device = false;
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd < 0 && errno == EPERM) {
		int node = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
		if (node >= 0) {
			fd = ioctl(node, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
			device = fd >= 0;
			close(node);
		}
	}
	if (handles_shmem(fd))
		found |= PROBE_KERNEL_MODE | (device ? PROBE_DEVICE : 0);
	if (handles_shmem((int)syscall(SYS_userfaultfd,
				       O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY)))
		found |= PROBE_USER_MODE;
	if (access(differential, X_OK) == 0)
		found |= PROBE_REACHES;
	return found;
}

static int probes[SETUP_COUNT];

/* Probes each setup in a child of its own; -1 where it cannot be made. */
static void probe_setups(void)
{
	for (int setup = 0; setup < SETUP_COUNT; setup++) {
		probes[setup] = -1;
		if (setup_unavailable((enum setup)setup))
			continue;
		fflush(stdout);
		pid_t child = fork();
		CHECK(child >= 0, "fork: %s", strerror(errno));
		if (child == 0) {
			enter_setup((enum setup)setup);
			_exit(probe_now());
		}
		int status;
		CHECK(waitpid(child, &status, 0) == child, "waitpid: %s", strerror(errno));
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) != CHILD_SETUP_FAILED,
		      "probing setup '%s' failed (status 0x%x)", setup_names[setup],
		      status);
		probes[setup] = WEXITSTATUS(status);
	}
}

/* Is `name` an item of the comma-separated `list`? */
static bool listed(const char *list, const char *name, size_t name_length)
{
	for (const char *item = list; *item;) {
		size_t length = strcspn(item, ",");
		if (length == name_length && strncmp(item, name, length) == 0)
			return true;
		item += length;
		if (*item == ',')
			item++;
	}
	return false;
}

/* COWMEM_DISABLE lists user-mode: the kernel is taken to lack it. */
static bool user_mode_masked(const struct run *run)
{
	return run->disable && listed(run->disable, "user-mode", strlen("user-mode"));
}

/* The backend a run must end up with; NULL if it must be refused. */
static const char *expected_backend(const struct run *run)
{
	int probe = probes[run->setup];
	const char *forced = run->backend;

	if (!forced || !*forced || strcmp(forced, "auto") == 0)
		return probe & PROBE_KERNEL_MODE ? "userfaultfd" : "memfd";
	if (strcmp(forced, "userfaultfd") == 0)
		return probe & PROBE_KERNEL_MODE ? forced : NULL;
	if (strcmp(forced, "userfaultfd-user") == 0)
		return probe & PROBE_USER_MODE && !user_mode_masked(run) ? forced : NULL;
	return forced;
}

/* The errno of a forced backend that is not available: EPERM where the
 * process may not use userfaultfd(2) (seccomp), ENOSYS where the kernel
 * lacks user-mode-only faults (before 5.11, or masked). */
static int refusal_errno(const struct run *run)
{
	if (run->setup == AS_IS && strcmp(run->backend, "userfaultfd-user") == 0)
		return ENOSYS;
	return EPERM;
}

/* ---- Children ------------------------------------------------------------------- */

static void set_or_unset(const char *name, const char *value)
{
	if (value)
		setenv(name, value, 1);
	else
		unsetenv(name);
}

/* Every entry point that starts the library fails with `expected`. */
static void check_refused(int expected)
{
	errno = 0;
	CHECK(cowmem_create(page) == NULL && errno == expected,
	      "cowmem_create: errno %d (%s), expected %d", errno,
	      strerror(errno), expected);
	errno = 0;
	CHECK(cowmem_backend() == NULL && errno == expected,
	      "cowmem_backend: errno %d, expected %d", errno, expected);
	errno = 0;
	CHECK(cowmem_features() == NULL && errno == expected,
	      "cowmem_features: errno %d, expected %d", errno, expected);
	errno = 0;
	CHECK(cowmem_server_claim() == -1 && errno == expected,
	      "cowmem_server_claim: errno %d, expected %d", errno, expected);
	errno = 0;
	CHECK(cowmem_server_handle() == -1 && errno == expected,
	      "cowmem_server_handle: errno %d, expected %d", errno, expected);
	uint64_t mask = 1;
	errno = 0;
	CHECK(cowmem_feature_mask(&mask) == -1 && errno == expected && mask == 0,
	      "cowmem_feature_mask: errno %d, mask %#llx, expected %d and 0", errno,
	      (unsigned long long)mask, expected);
	printf("every call failed with %s\n", strerror(expected));
}

/* Prefaulting, for reading and for writing, changes no byte of a clone
 * that has holes, pages its source lends it and pages of its base, nor of
 * the region that lends them. (errnos.c checks its bad arguments.) */
static void check_prefault(void)
{
	enum { PAGES = 8 };
	size_t size = PAGES * page;
	unsigned char *model = calloc(1, size);
	CHECK(model != NULL, "calloc");
	const char *backend = cowmem_backend();
	CHECK(backend != NULL, "cowmem_backend: %s", strerror(errno));
	printf("backend=%s features=%s\n", backend, cowmem_features());

	/* Pages 0-3 written in the source, page 1 again in the middle
	 * region after the source was cloned; pages 4-7 are never written. */
	cowmem_region *source = cowmem_create(size);
	CHECK(source != NULL, "cowmem_create: %s", strerror(errno));
	for (size_t p = 0; p < 4; p++) {
		test_pattern_fill(model + p * page, page, 1, p * page);
		memcpy((unsigned char *)cowmem_data(source) + p * page,
		       model + p * page, page);
	}
	cowmem_region *middle = cowmem_clone(source);
	CHECK(middle != NULL, "cowmem_clone: %s", strerror(errno));
	test_pattern_fill(model + page, page, 2, page);
	memcpy((unsigned char *)cowmem_data(middle) + page, model + page, page);
	cowmem_region *clone = cowmem_clone(middle); /* waits for page 1 */
	CHECK(clone != NULL, "cowmem_clone: %s", strerror(errno));

	for (int for_write = 0; for_write <= 1; for_write++) {
		/* The lender first: for writing, it hands page 1 over. */
		CHECK(cowmem_prefault(middle, page / 2, page, for_write) == 0,
		      "cowmem_prefault(middle, ...): %s", strerror(errno));
		CHECK(memcmp(cowmem_data(middle), model, size) == 0,
		      "the lending region changed after cowmem_prefault");
		CHECK(cowmem_prefault(clone, 0, size, for_write) == 0,
		      "cowmem_prefault(clone, 0, size, %d): %s", for_write,
		      strerror(errno));
		CHECK(memcmp(cowmem_data(clone), model, size) == 0,
		      "the clone changed after cowmem_prefault(for_write %d)",
		      for_write);
	}
	CHECK(cowmem_destroy(clone) == 0 && cowmem_destroy(middle) == 0 &&
	      cowmem_destroy(source) == 0, "destroy: %s", strerror(errno));
	free(model);
	printf("cowmem_prefault kept every byte\n");
}

/*
 * read(2) from a pipe into lent pages, right after cowmem_prefault(..., 1)
 * on them: the kernel's store must find each page writable and the bytes
 * must land. On "userfaultfd-user" the kernel cannot wait for the library
 * inside a system call, so a prefault that does not really write (an
 * idempotent atomic add, which clang lowers to a load) leaves the pages
 * write-protected or waiting, and read(2) fails with EFAULT.
 * The source is cloned once, so that its next writes are pages of its own,
 * rewritten, then cloned twice: it lends every page to both later clones.
 * Each read spans two pages; every region is compared after each.
 */
enum { LENT_PAGES = 6, LENT_REGIONS = 4 };

static void check_read_after_prefault(void)
{
	size_t size = LENT_PAGES * page;
	cowmem_region *regions[LENT_REGIONS];
	unsigned char *models[LENT_REGIONS], *bytes = malloc(page);
	CHECK(bytes != NULL, "malloc");
	for (int i = 0; i < LENT_REGIONS; i++) {
		models[i] = malloc(size);
		CHECK(models[i] != NULL, "malloc");
	}
	regions[0] = cowmem_create(size);
	CHECK(regions[0] != NULL, "cowmem_create: %s", strerror(errno));
	test_pattern_fill(models[0], size, 3, 0);
	memcpy(cowmem_data(regions[0]), models[0], size);
	regions[1] = cowmem_clone(regions[0]);
	CHECK(regions[1] != NULL, "cowmem_clone: %s", strerror(errno));
	memcpy(models[1], models[0], size);
	test_pattern_fill(models[0], size, 4, 0);
	memcpy(cowmem_data(regions[0]), models[0], size);
	for (int i = 2; i < LENT_REGIONS; i++) {
		regions[i] = cowmem_clone(regions[0]);
		CHECK(regions[i] != NULL, "cowmem_clone: %s", strerror(errno));
		memcpy(models[i], models[0], size);
	}

	static const char *const names[LENT_REGIONS] = {
		"the lending source", "the first clone", "a borrowing clone",
		"the other borrowing clone",
	};
	/* The lender, each borrower, then the lender again where one of the
	 * two borrowers has a page of its own by now. */
	static const struct {
		int region;
		size_t pages_and_half;
	} targets[] = { { 0, 0 }, { 2, 2 }, { 3, 4 }, { 0, 4 } };
	int fds[2];
	CHECK(pipe(fds) == 0, "pipe: %s", strerror(errno));
	for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
		int i = targets[t].region;
		size_t offset = targets[t].pages_and_half * page + page / 2;
		test_pattern_fill(bytes, page, 10 + t, offset);
		CHECK(cowmem_prefault(regions[i], offset, page, 1) == 0,
		      "cowmem_prefault(%s, %zu, %zu, 1): %s", names[i], offset,
		      page, strerror(errno));
		CHECK(write(fds[1], bytes, page) == (ssize_t)page,
		      "write to the pipe: %s", strerror(errno));
		errno = 0;
		ssize_t n = read(fds[0], (unsigned char *)cowmem_data(regions[i]) + offset,
				 page);
		CHECK(n == (ssize_t)page,
		      "read(2) into %s at offset %zu, just prefaulted for "
		      "writing: returned %zd (%s), expected %zu", names[i], offset,
		      n, n < 0 ? strerror(errno) : "short count", page);
		memcpy(models[i] + offset, bytes, page);
		for (int k = 0; k < LENT_REGIONS; k++)
			CHECK(memcmp(cowmem_data(regions[k]), models[k], size) == 0,
			      "after read(2) into %s at offset %zu, %s differs "
			      "from plain memory", names[i], offset, names[k]);
	}
	close(fds[0]);
	close(fds[1]);
	for (int i = LENT_REGIONS - 1; i >= 0; i--) {
		CHECK(cowmem_destroy(regions[i]) == 0, "destroy: %s",
		      strerror(errno));
		free(models[i]);
	}
	free(bytes);
	printf("read(2) into lent pages prefaulted for writing moved every byte\n");
}

static void run_configured(const struct run *run)
{
	char seed_option[64], ops_option[64];

	set_or_unset("COWMEM_BACKEND", run->backend);
	set_or_unset("COWMEM_DISABLE", run->disable);
	alarm(CHILD_SECONDS); /* kept across execve */
	enter_setup(run->setup);
	switch (run->action) {
	case DIFFERENTIAL: {
		snprintf(seed_option, sizeof seed_option, "--seed=%" PRIu64, seed);
		snprintf(ops_option, sizeof ops_option, "--ops=%" PRIu64, operations);
		/* The differential test first; if it passes, the tracking test
		 * replaces this process, so the run's status is the first
		 * failure (or skip) of the two. */
		pid_t first = fork();
		if (first < 0)
			setup_failed("fork: %s", strerror(errno));
		if (first == 0) {
			execl(differential, differential, "-f", "threads", seed_option,
			      ops_option, "--threads=2", (char *)NULL);
			setup_failed("exec %s: %s", differential, strerror(errno));
		}
		int status;
		while (waitpid(first, &status, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(status) || WEXITSTATUS(status) != TEST_EXIT_PASS) {
			if (WIFSIGNALED(status))
				raise(WTERMSIG(status));
			_exit(WIFEXITED(status) ? WEXITSTATUS(status) : TEST_EXIT_FAIL);
		}
		snprintf(ops_option, sizeof ops_option, "--ops=%" PRIu64, operations / 4);
		execl(tracking, tracking, seed_option, ops_option, "--threads=2", (char *)NULL);
		setup_failed("exec %s: %s", tracking, strerror(errno));
	}
	case UNKNOWN_VALUE:
		check_refused(EINVAL);
		break;
	case FORCED_UNAVAILABLE:
		check_refused(refusal_errno(run));
		break;
	case PREFAULT:
		check_prefault();
		check_read_after_prefault();
		break;
	}
	fflush(stdout);
	_exit(TEST_EXIT_PASS);
}

/* Runs the child with stdout and stderr into one pipe; returns its wait
 * status and, in *output, everything it printed (to free). */
static int run_child(const struct run *run, char **output)
{
	int fds[2];
	CHECK(pipe2(fds, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
	fflush(stdout);
	fflush(stderr);
	pid_t child = fork();
	CHECK(child >= 0, "fork: %s", strerror(errno));
	if (child == 0) {
		dup2(fds[1], STDOUT_FILENO);
		dup2(fds[1], STDERR_FILENO);
		run_configured(run);
	}
	close(fds[1]);

	size_t length = 0, capacity = 4096;
	char *text = malloc(capacity);
	CHECK(text != NULL, "malloc");
	for (;;) {
		if (capacity - length < 1024) {
			capacity *= 2;
			text = realloc(text, capacity);
			CHECK(text != NULL, "realloc");
		}
		ssize_t n = read(fds[0], text + length, capacity - length - 1);
		if (n < 0 && errno == EINTR)
			continue;
		CHECK(n >= 0, "reading the child's output: %s", strerror(errno));
		if (n == 0)
			break;
		length += (size_t)n;
	}
	text[length] = '\0';
	close(fds[0]);
	int status;
	CHECK(waitpid(child, &status, 0) == child, "waitpid: %s", strerror(errno));
	*output = text;
	return status;
}

/* ---- Verdicts ------------------------------------------------------------------- */

static void describe_wait(int status, char *text, size_t capacity)
{
	if (WIFEXITED(status))
		snprintf(text, capacity, "exit status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(text, capacity, "killed by signal %d (%s)%s", WTERMSIG(status),
			 strsignal(WTERMSIG(status)),
			 WTERMSIG(status) == SIGALRM ? ": timed out" : "");
	else
		snprintf(text, capacity, "wait status 0x%x", status);
}

/* The first "backend=X features=Y" line of the output, into the run. */
static bool parse_backend_line(struct run *run, const char *output)
{
	for (const char *line = output; line && *line;) {
		if (strncmp(line, "backend=", 8) == 0) {
			char backend[32] = "", features[128] = "";
			if (sscanf(line, "backend=%31s features=%127[^\n]", backend,
				   features) >= 1) {
				snprintf(run->backend_seen, sizeof run->backend_seen,
					 "%s", backend);
				snprintf(run->features_seen, sizeof run->features_seen,
					 "%s", features);
				return true;
			}
		}
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	return false;
}

static void verdict(struct run *run, bool passed, const char *format, ...)
	__attribute__((format(printf, 3, 4)));
static void verdict(struct run *run, bool passed, const char *format, ...)
{
	va_list args;
	va_start(args, format);
	vsnprintf(run->result, sizeof run->result, format, args);
	va_end(args);
	run->failed = !passed;
}

/* What the backend and features say, against what this run expects. */
static bool check_backend(struct run *run, const char *expected)
{
	const char *features = run->features_seen;

	if (strcmp(run->backend_seen, expected) != 0) {
		verdict(run, false, "FAIL: backend %s, expected %s", run->backend_seen,
			expected);
		return false;
	}
	if (run->disable) {
		for (const char *name = run->disable; *name;) {
			size_t length = strcspn(name, ",");
			if (listed(features, name, length)) {
				verdict(run, false, "FAIL: disabled feature %.*s still "
					"listed", (int)length, name);
				return false;
			}
			name += length + (name[length] == ',');
		}
	}
	if (strcmp(expected, "memfd") == 0 &&
	    (listed(features, "minor", 5) || listed(features, "wp", 2) ||
	     listed(features, "poison", 6) || listed(features, "device", 6))) {
		verdict(run, false, "FAIL: memfd backend lists a userfaultfd feature");
		return false;
	}
	bool device = (probes[run->setup] & PROBE_DEVICE) != 0;
	if (strcmp(expected, "userfaultfd") == 0 && listed(features, "device", 6) != device) {
		verdict(run, false, "FAIL: features %s 'device', but the probe %s it",
			device ? "lack" : "list", device ? "needed" : "did not need");
		return false;
	}
	return true;
}

/* The program's summary line (harness.h) says that no case failed or
 * was skipped. */
static bool ran_clean(const char *output, const char *program)
{
	char start[64];
	snprintf(start, sizeof start, "%s: ", program);
	for (const char *line = strstr(output, start); line; line = strstr(line + 1, start)) {
		unsigned passed, failed, skipped;
		if ((line == output || line[-1] == '\n') &&
		    sscanf(line + strlen(start), "%u passed, %u failed, %u skipped", &passed,
			   &failed, &skipped) == 3)
			return passed > 0 && failed == 0 && skipped == 0;
	}
	return false;
}

static void judge_differential(struct run *run, int status, const char *output)
{
	const char *expected = expected_backend(run);
	char how[96];
	bool have_line = parse_backend_line(run, output);

	describe_wait(status, how, sizeof how);
	if (!expected) {
		/* Forced, and not available: the library says so, the test skips. */
		const char *message = strstr(output, "is not available here: ");
		if (WIFEXITED(status) && WEXITSTATUS(status) == TEST_EXIT_SKIP &&
		    !have_line && message) {
			const char *reason = message + strlen("is not available here: ");
			verdict(run, true, "skip, as expected: %.*s",
				(int)strcspn(reason, "\n"), reason);
		} else {
			verdict(run, false, "FAIL: %s; expected a skip with the "
				"library's message (backend not available here)", how);
		}
		return;
	}
	if (!have_line) {
		verdict(run, false, "FAIL: %s, no backend line", how);
		return;
	}
	if (!check_backend(run, expected))
		return;
	if (WIFEXITED(status) && WEXITSTATUS(status) == TEST_EXIT_PASS &&
	    ran_clean(output, "differential") && ran_clean(output, "tracking"))
		verdict(run, true, "pass");
	else
		verdict(run, false, "FAIL: differential %s", how);
}

static void judge_in_process(struct run *run, int status, const char *output)
{
	char how[96];

	describe_wait(status, how, sizeof how);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != TEST_EXIT_PASS) {
		verdict(run, false, "FAIL: %s", how);
		return;
	}
	if (run->action == PREFAULT) {
		const char *expected = expected_backend(run);
		if (!parse_backend_line(run, output) || !expected ||
		    !check_backend(run, expected)) {
			if (!run->failed)
				verdict(run, false, "FAIL: backend not as expected");
			return;
		}
		verdict(run, true, "pass: prefault kept every byte, read(2) into it");
		return;
	}
	/* The library must have said what is wrong, naming the variable. */
	char message[160];
	if (run->action == UNKNOWN_VALUE && run->disable)
		snprintf(message, sizeof message, "cowmem: COWMEM_DISABLE=%s ",
			 run->disable);
	else if (run->action == UNKNOWN_VALUE)
		snprintf(message, sizeof message, "cowmem: COWMEM_BACKEND=%s ",
			 run->backend);
	else
		snprintf(message, sizeof message, "cowmem: COWMEM_BACKEND=%s is not "
			 "available here", run->backend);
	snprintf(run->backend_seen, sizeof run->backend_seen, "(refused)");
	if (!strstr(output, message)) {
		verdict(run, false, "FAIL: no '%s...' message on stderr", message);
		return;
	}
	int refusal = run->action == UNKNOWN_VALUE ? EINVAL : refusal_errno(run);
	verdict(run, true, "%s from every call, message printed",
		refusal == EINVAL ? "EINVAL" : refusal == ENOSYS ? "ENOSYS" : "EPERM");
}

static void make_label(struct run *run)
{
	int used = snprintf(run->label, sizeof run->label, "%s", setup_names[run->setup]);
	if (run->backend)
		used += snprintf(run->label + used, sizeof run->label - (size_t)used,
				 "COWMEM_BACKEND=%s%s", *run->backend ? run->backend : "''",
				 run->disable ? " " : "");
	if (run->disable)
		used += snprintf(run->label + used, sizeof run->label - (size_t)used,
				 "COWMEM_DISABLE=%s", run->disable);
	if (run->action == PREFAULT)
		snprintf(run->label + used, sizeof run->label - (size_t)used,
			 " (cowmem_prefault)");
	if (run->action == UNKNOWN_VALUE || run->action == FORCED_UNAVAILABLE)
		snprintf(run->label + used, sizeof run->label - (size_t)used, " (refused)");
}

static void print_output(const char *output)
{
	for (const char *line = output; *line;) {
		size_t length = strcspn(line, "\n");
		printf("      | %.*s\n", (int)length, line);
		line += length + (line[length] == '\n');
	}
}

/* Why a run cannot be made here; NULL if it can. */
static const char *run_unavailable(const struct run *run)
{
	const char *why = setup_unavailable(run->setup);

	if (why)
		return why;
	if (run->action == DIFFERENTIAL && !(probes[run->setup] & PROBE_REACHES))
		return "this user cannot execute the differential test";
	if (run->action == PREFAULT && !expected_backend(run))
		return "that backend is not available here";
	if (run->action == FORCED_UNAVAILABLE && expected_backend(run))
		return "that backend is available here";
	return NULL;
}

/* The case: the run whose label is its name. */
static void run_case(void)
{
	struct run *run = NULL;
	for (size_t i = 0; i < RUN_COUNT; i++)
		if (runs[i].label == test_case_name)
			run = &runs[i];
	CHECK(run != NULL, "no run for case %s", test_case_name);
	const char *why = run_unavailable(run);
	if (why)
		test_skip("%s", why);
	char *output;
	int status = run_child(run, &output);
	if (run->action == DIFFERENTIAL)
		judge_differential(run, status, output);
	else
		judge_in_process(run, status, output);
	printf("seen: backend=%s features=%s -> %s\n", run->backend_seen[0] ? run->backend_seen : "-",
	       run->features_seen[0] ? run->features_seen : "-", run->result);
	if (run->failed)
		print_output(output);
	free(output);
	CHECK(!run->failed, "%s", run->result);
}

int main(int argc, char **argv)
{
	page = test_page_size();
	seed = test_seed_init(argc, argv);
	test_option(argc, argv, "ops", "COWMEM_TEST_OPS", &operations);

	ssize_t length = readlink("/proc/self/exe", differential, sizeof differential - 32);
	CHECK(length > 0, "readlink /proc/self/exe: %s", strerror(errno));
	differential[length] = '\0';
	char *slash = strrchr(differential, '/');
	CHECK(slash != NULL, "no directory in %s", differential);
	strcpy(slash + 1, "differential");
	CHECK(access(differential, X_OK) == 0, "%s: %s (build it with make tests)",
	      differential, strerror(errno));
	memcpy(tracking, differential, sizeof tracking);
	strcpy(strrchr(tracking, '/') + 1, "tracking");
	CHECK(access(tracking, X_OK) == 0, "%s: %s (build it with make tests)", tracking,
	      strerror(errno));

	probe_setups();
	printf("probed: vm.unprivileged_userfaultfd=");
	FILE *sysctl = fopen("/proc/sys/vm/unprivileged_userfaultfd", "r");
	int value = -1;
	if (sysctl) {
		if (fscanf(sysctl, "%d", &value) != 1)
			value = -1;
		fclose(sysctl);
	}
	printf("%d\n", value);
	for (int setup = 0; setup < SETUP_COUNT; setup++) {
		const char *why = setup_unavailable((enum setup)setup);
		int probe = probes[setup];
		printf("  %-24s ", *setup_names[setup] ? setup_names[setup] : "as is:");
		if (why)
			printf("not tested: %s\n", why);
		else
			printf("kernel-mode userfaultfd %s, user-mode-only %s%s\n",
			       probe & PROBE_KERNEL_MODE ?
				       (probe & PROBE_DEVICE ? "yes (/dev/userfaultfd)" : "yes") : "no",
			       probe & PROBE_USER_MODE ? "yes" : "no",
			       probe & PROBE_REACHES ? "" : "; cannot execute the differential test");
	}
	printf("differential runs: --seed=%" PRIu64 " --ops=%" PRIu64 " --threads=2\n\n",
	       seed, operations);

	static struct test_case cases[RUN_COUNT];
	for (size_t i = 0; i < RUN_COUNT; i++) {
		make_label(&runs[i]);
		cases[i] = (struct test_case){ .name = runs[i].label, .run = run_case,
					       .timeout = CHILD_SECONDS + 30 };
	}
	return test_main(argc, argv, cases, RUN_COUNT);
}
