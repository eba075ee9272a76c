/*
 * exhaustion.c - running out of descriptors, address space, mappings and
 * memory: calls fail cleanly (NULL or -1 with the documented errno), every
 * existing region keeps its content, the library works again once the
 * resource is back, and a page that cannot be provided ends the access
 * with SIGBUS (or the process with a message), never a hang or a wrong byte.
 *
 * Each case runs in a fresh process (this program run again with
 * --case=NAME) under a watchdog (alarm), so a hang fails the case:
 *
 *   descriptors     RLIMIT_NOFILE reached with regions alive: create fails
 *                   with EMFILE, clones, reads and destroys still work.
 *   first-use       the library's very first call meets RLIMIT_NOFILE: it
 *                   fails with EMFILE, and once descriptors are back the
 *                   library must work as in any process (same backend,
 *                   clones of written regions).
 *   address-space   RLIMIT_AS reached: create and clone of large regions
 *                   fail with ENOMEM (or EAGAIN for a thread), nothing
 *                   changes; skipped under AddressSanitizer, which needs
 *                   terabytes of address space for itself.
 *   map-count       vm.max_map_count reached (many small mappings with
 *                   alternating protections): create and clone fail with
 *                   ENOMEM, existing regions keep their bytes.
 *   unfillable-*    every UFFDIO_COPY, ZEROPAGE and CONTINUE fails with
 *                   ENOMEM (a seccomp filter makes them): the access gets
 *                   SIGBUS and the library says why on stderr (copy: a
 *                   written hole; zeropage: a read hole; continue: a base
 *                   page of a clone that waits for lent pages; lent: a lent
 *                   page). Without UFFDIO_POISON (a kernel before 6.6,
 *                   or COWMEM_DISABLE=poison) the process must stop with
 *                   SIGABRT and the message instead (RELIABILITY.md); each
 *                   runs as the environment is (unfillable-KIND) and with
 *                   poison masked (unfillable-KIND/no-poison). continue and lent need pages lent lazily
 *                   (features minor and wp) and skip, naming the missing
 *                   feature, where clones copy those pages when made.
 *   memcg           (in this process) a child in a memory cgroup of its
 *                   own (v2 memory.max or v1 memory.limit_in_bytes) writes
 *                   far more pages of a clone than the limit allows: it
 *                   must end by SIGKILL (OOM) or SIGBUS, never hang, never
 *                   read a wrong byte. Skipped where no cgroup can be made.
 *   memcg-oom-off   (in this process) the same in a cgroup v1 whose OOM
 *                   killer is disabled: the server's fill fails, and the
 *                   child must get SIGBUS (SIGABRT without poison), not hang
 *                   with the server asleep in the full cgroup. Skipped on
 *                   cgroup v2, which has no such switch.
 *
 * Options: --case=NAME runs one case in this process.
 */
#include <dirent.h>

#include "harness.h"
#include "engine.h" /* cowmem__precopier_following */

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <spawn.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

extern char **environ;


static size_t page;
static test_rng rng;

/* ---- Regions with models ------------------------------------------------ */

struct tracked {
	cowmem_region *region;
	unsigned char *model;
	size_t size;
	const char *name;
};

static void tracked_create(struct tracked *t, size_t size, const char *name)
{
	t->region = test_create_or_skip(size);
	t->size = size;
	t->model = calloc(1, size);
	CHECK(t->model != NULL, "calloc");
	t->name = name;
}

static void tracked_clone(struct tracked *to, const struct tracked *from,
			  const char *name)
{
	to->region = cowmem_clone(from->region);
	CHECK(to->region != NULL, "cowmem_clone(%s): %s", from->name, strerror(errno));
	to->size = from->size;
	to->model = malloc(from->size);
	CHECK(to->model != NULL, "malloc");
	memcpy(to->model, from->model, from->size);
	to->name = name;
}

static void tracked_write(struct tracked *t, size_t offset, size_t length)
{
	unsigned char *data = cowmem_data(t->region);
	test_rng_fill(&rng, data + offset, length);
	memcpy(t->model + offset, data + offset, length);
}

static void tracked_check(const struct tracked *t, const char *when)
{
	char what[160];
	snprintf(what, sizeof what, "%s %s", t->name, when);
	CHECK_BYTES(cowmem_data(t->region), t->model, t->size, what);
}

static void tracked_destroy(struct tracked *t)
{
	CHECK(cowmem_destroy(t->region) == 0, "cowmem_destroy(%s): %s", t->name,
	      strerror(errno));
	free(t->model);
	t->region = NULL;
}

/* A: 16 pages, three of four written; B: clone of A, then both write;
 * C: clone of A after that (A lends C its written pages). C is not read. */
static void make_family(struct tracked f[3])
{
	tracked_create(&f[0], 16 * page, "A");
	for (size_t p = 0; p < 16; p++)
		if (p % 4 != 3)
			tracked_write(&f[0], p * page, page);
	tracked_clone(&f[1], &f[0], "B (clone of A)");
	tracked_write(&f[1], 2 * page, page);
	tracked_write(&f[0], 5 * page, 100);
	tracked_clone(&f[2], &f[0], "C (clone of A, pages lent)");
}

static void check_family(struct tracked f[3], const char *when)
{
	for (int i = 0; i < 3; i++)
		tracked_check(&f[i], when);
}

/* ---- Descriptors -------------------------------------------------------- */

/* Counts this process's region descriptors through a directory descriptor
 * opened beforehand: with no descriptor left, opendir() would fail. */
static int count_memfds_through(int directory)
{
	char buffer[8192], target[PROC_TARGET_MAX];
	int found = 0;

	CHECK(lseek(directory, 0, SEEK_SET) == 0, "lseek: %s", strerror(errno));
	for (;;) {
		long n = syscall(SYS_getdents64, directory, buffer, sizeof buffer);
		CHECK(n >= 0, "getdents64: %s", strerror(errno));
		if (n == 0)
			break;
		for (long offset = 0; offset < n;) {
			struct { uint64_t ino; int64_t off; unsigned short reclen;
				 unsigned char type; char name[]; } *entry =
				(void *)(buffer + offset);
			ssize_t length = readlinkat(directory, entry->name, target,
						    sizeof target - 1);
			target[length > 0 ? length : 0] = '\0';
			if (strstr(target, "memfd:cowmem"))
				found++;
			offset += entry->reclen;
		}
	}
	return found;
}

/* Lowers RLIMIT_NOFILE a little above what is open and takes every
 * descriptor left. Returns how many were taken (into held). */
static int use_up_descriptors(int *held, int max, struct rlimit *saved)
{
	struct rlimit low;
	int n = 0;

	CHECK(getrlimit(RLIMIT_NOFILE, saved) == 0, "getrlimit: %s", strerror(errno));
	low = *saved;
	low.rlim_cur = (rlim_t)proc_count_fds() + 16;
	if (low.rlim_cur > saved->rlim_cur)
		low.rlim_cur = saved->rlim_cur;
	CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0, "setrlimit: %s", strerror(errno));
	while (n < max) {
		int fd = dup(0 <= fcntl(0, F_GETFD) ? 0 : 2);
		if (fd < 0) {
			CHECK(errno == EMFILE, "dup: %s", strerror(errno));
			break;
		}
		held[n++] = fd;
	}
	CHECK(n < max, "could not use up the descriptors");
	return n;
}

static void give_back_descriptors(int *held, int n, const struct rlimit *saved)
{
	while (n > 0)
		close(held[--n]);
	CHECK(setrlimit(RLIMIT_NOFILE, saved) == 0, "setrlimit: %s", strerror(errno));
}

static int case_descriptors(void)
{
	struct tracked f[3], extra;
	int held[1024];
	struct rlimit saved;

	make_family(f);
	int fd_directory = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK(fd_directory >= 0, "open /proc/self/fd: %s", strerror(errno));
	int memfds = count_memfds_through(fd_directory);
	CHECK(memfds > 0, "no region descriptor found before the test");
	int n = use_up_descriptors(held, 1024, &saved);

	/* Every region lives in the one page file, so a create needs no
	 * descriptor. */
	for (int i = 0; i < 5; i++) {
		errno = 0;
		cowmem_region *r = cowmem_create(page * (1 + (size_t)i));
		CHECK(r != NULL, "cowmem_create without free descriptors: %s",
		      errno_name(errno));
		memset(cowmem_data(r), 0x5a, page);
		CHECK(cowmem_destroy(r) == 0, "destroy: %s", strerror(errno));
	}
	CHECK(count_memfds_through(fd_directory) == memfds,
	      "failed creates left region descriptors behind: %d, before %d",
	      count_memfds_through(fd_directory), memfds);
	/* A clone needs no descriptor once the server runs: it may work; if
	 * it fails, it fails cleanly. */
	errno = 0;
	cowmem_region *c = cowmem_clone(f[1].region);
	if (c) {
		CHECK_BYTES(cowmem_data(c), f[1].model, f[1].size,
			    "a clone made without free descriptors");
		CHECK(cowmem_destroy(c) == 0, "destroy: %s", strerror(errno));
	} else {
		CHECK(errno == EMFILE || errno == ENFILE || errno == ENOMEM,
		      "cowmem_clone without descriptors: errno %s", errno_name(errno));
	}
	/* Faults are served (C waits for lent pages), destroys work. */
	check_family(f, "without free descriptors");
	tracked_write(&f[0], 5 * page, page); /* hand-over to C */
	check_family(f, "without free descriptors, after a hand-over");
	tracked_destroy(&f[1]);

	give_back_descriptors(held, n, &saved);
	close(fd_directory);
	tracked_create(&extra, 8 * page, "a region made once descriptors were back");
	tracked_write(&extra, page, 3 * page);
	tracked_clone(&f[1], &f[2], "B' (clone of C)");
	tracked_write(&f[1], 0, page);
	check_family(f, "once descriptors were back");
	tracked_check(&extra, "");
	tracked_destroy(&extra);
	for (int i = 0; i < 3; i++)
		tracked_destroy(&f[i]);
	printf("descriptors: %d taken; cowmem_create works (no descriptor per "
	       "region), nothing leaked, every region intact, library fine "
	       "afterwards\n", n);
	return 0;
}

/* The library's first call ever meets the limit; it must not stay crippled
 * (a different backend, or clones failing) once descriptors are back. */
static int case_first_use(void)
{
	const char *expected = getenv("COWMEM_TEST_EXPECT_BACKEND");
	const char *expected_features = getenv("COWMEM_TEST_EXPECT_FEATURES");
	struct tracked f[3];
	int held[1024];
	struct rlimit saved;

	int n = use_up_descriptors(held, 1024, &saved);
	errno = 0;
	cowmem_region *r = cowmem_create(page);
	int error = errno;
	give_back_descriptors(held, n, &saved);
	if (r == NULL && (error == EPERM || error == ENOSYS))
		test_skip("the library cannot start here: %s", strerror(error));
	CHECK(r == NULL && (error == EMFILE || error == ENFILE),
	      "first cowmem_create without descriptors: %p, errno %s (expected "
	      "NULL, EMFILE)", (void *)r, errno_name(error));

	const char *backend = cowmem_backend();
	const char *features = cowmem_features();
	printf("after a first call without descriptors: backend=%s features=%s\n",
	       backend ? backend : "(none)", features ? features : "(none)");
	CHECK(!expected || (backend && strcmp(backend, expected) == 0),
	      "backend is %s, a process that started normally gets %s: one failed call "
	      "crippled the library for the life of the process", backend ? backend : "(none)",
	      expected);
	CHECK(!expected_features || (features && strcmp(features, expected_features) == 0),
	      "features are '%s', a process that started normally gets '%s'",
	      features ? features : "(none)", expected_features);
	/* Every operation must work now, clones of written regions included. */
	make_family(f);
	tracked_write(&f[0], 0, page);
	struct tracked d;
	errno = 0;
	d.region = cowmem_clone(f[0].region);
	CHECK(d.region != NULL, "cloning a region written since its last clone fails with %s "
	      "once descriptors are back", errno_name(errno));
	d.size = f[0].size;
	d.model = malloc(d.size);
	CHECK(d.model != NULL, "malloc");
	memcpy(d.model, f[0].model, d.size);
	d.name = "D (clone of A)";
	check_family(f, "after a first call without descriptors");
	tracked_check(&d, "after a first call without descriptors");
	tracked_destroy(&d);
	for (int i = 0; i < 3; i++)
		tracked_destroy(&f[i]);
	printf("first-use: the first call fails with EMFILE, then the library "
	       "works as in any process\n");
	return 0;
}

/* ---- Address space ------------------------------------------------------ */

static size_t vm_size(void)
{
	FILE *status = fopen("/proc/self/status", "re");
	char line[256];
	size_t kib = 0;

	CHECK(status != NULL, "fopen /proc/self/status: %s", strerror(errno));
	while (fgets(line, sizeof line, status))
		if (sscanf(line, "VmSize: %zu kB", &kib) == 1)
			break;
	fclose(status);
	CHECK(kib > 0, "no VmSize in /proc/self/status");
	return kib * 1024;
}

static int case_address_space(void)
{
	if (TEST_UNDER_ASAN)
		test_skip("AddressSanitizer reserves terabytes of address space: "
			  "RLIMIT_AS cannot be tested under it");
	struct tracked f[3], big;
	struct rlimit saved, low;
	const size_t big_size = (size_t)64 << 20;

	make_family(f);
	tracked_create(&big, big_size, "a 64 MiB region");
	for (size_t offset = 0; offset < big_size; offset += big_size / 16)
		tracked_write(&big, offset, page);
	/* The janitor thread exits when idle; start it now so its start does
	 * not need address space later. (Not required: it can do without.) */
	CHECK(getrlimit(RLIMIT_AS, &saved) == 0, "getrlimit: %s", strerror(errno));
	low = saved;
	low.rlim_cur = vm_size() + ((size_t)8 << 20);
	CHECK(setrlimit(RLIMIT_AS, &low) == 0, "setrlimit(RLIMIT_AS): %s", strerror(errno));

	for (int i = 0; i < 3; i++) {
		errno = 0;
		cowmem_region *r = cowmem_create((size_t)256 << 20);
		CHECK(r == NULL && errno == ENOMEM,
		      "cowmem_create(256 MiB) beyond RLIMIT_AS: %p, errno %s "
		      "(expected NULL, ENOMEM)", (void *)r, errno_name(errno));
		errno = 0;
		r = cowmem_clone(big.region);
		CHECK(r == NULL && (errno == ENOMEM || errno == EAGAIN),
		      "cowmem_clone(64 MiB) beyond RLIMIT_AS: %p, errno %s "
		      "(expected NULL, ENOMEM)", (void *)r, errno_name(errno));
	}
	tracked_check(&big, "after failed clones beyond RLIMIT_AS");
	tracked_write(&big, big_size / 2, 3 * page);
	check_family(f, "beyond RLIMIT_AS");
	tracked_write(&f[0], 5 * page, page); /* hand-over to C */
	check_family(f, "beyond RLIMIT_AS, after a hand-over");

	CHECK(setrlimit(RLIMIT_AS, &saved) == 0, "setrlimit: %s", strerror(errno));
	struct tracked big_clone;
	tracked_clone(&big_clone, &big, "a clone of the 64 MiB region");
	tracked_write(&big_clone, 0, page);
	tracked_check(&big, "once address space was back");
	tracked_check(&big_clone, "once address space was back");
	check_family(f, "once address space was back");
	tracked_destroy(&big_clone);
	tracked_destroy(&big);
	for (int i = 0; i < 3; i++)
		tracked_destroy(&f[i]);
	printf("address-space: create and clone beyond RLIMIT_AS -> ENOMEM, "
	       "every region intact, library fine afterwards\n");
	return 0;
}

/* ---- vm.max_map_count ----------------------------------------------- */

static int case_map_count(void)
{
	struct tracked f[3];
	FILE *sysctl = fopen("/proc/sys/vm/max_map_count", "re");
	long max_maps = 0;

	if (!sysctl || fscanf(sysctl, "%ld", &max_maps) != 1 || max_maps <= 0)
		test_skip("cannot read /proc/sys/vm/max_map_count");
	fclose(sysctl);
	if (max_maps > 1000000)
		test_skip("vm.max_map_count is %ld: too many mappings to fill", max_maps);

	make_family(f);
	/* Every page read once beforehand, once the last clone's fold is
	 * done (a call about the region waits for it), so that the reads at
	 * the limit fault nothing in: serving a fault allocates, and under
	 * AddressSanitizer an allocation that needs a new mapping there ends
	 * the process. */
	struct cowmem_stats stats;
	CHECK(cowmem_stats(f[0].region, &stats) == 0, "stats: %s", strerror(errno));
	check_family(f, "before the mappings ran out");
	/* For the same reason, until the pre-copier has stopped
	 * following A (it allocates as it walks; a few milliseconds after
	 * the last clone when nothing is written). Without AddressSanitizer
	 * an allocation failing there only stops it. */
	for (int waited = 0; waited < 2000; waited++) {
		pthread_mutex_lock(&cowmem__engine.lock);
		bool following = cowmem__precopier_following();
		pthread_mutex_unlock(&cowmem__engine.lock);
		if (!following)
			break;
		usleep(1000);
	}
	/* One PROT_NONE range, then every other page made readable: each
	 * mprotect splits off new mappings until the count is reached; then
	 * single pages mapped apart take whatever is left. */
	size_t pages = (size_t)max_maps + 64;
	char *area = mmap(NULL, pages * page, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	CHECK(area != MAP_FAILED, "mmap: %s", strerror(errno));
	size_t splits = 0;
	for (size_t p = 1; p < pages; p += 2, splits++)
		if (mprotect(area + p * page, page, PROT_READ) < 0) {
			CHECK(errno == ENOMEM, "mprotect: %s", strerror(errno));
			break;
		}
	void *singles[64];
	int single_count = 0;
	while (single_count < 64) {
		void *p = mmap(NULL, page, single_count % 2 ? PROT_READ : PROT_NONE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			break;
		singles[single_count++] = p;
	}
	int maps = proc_count_maps();

	for (int i = 0; i < 3; i++) {
		errno = 0;
		cowmem_region *r = cowmem_create(16 * page);
		CHECK(r == NULL && errno == ENOMEM,
		      "cowmem_create at vm.max_map_count (%d mappings): %p, errno %s "
		      "(expected NULL, ENOMEM)", maps, (void *)r, errno_name(errno));
		errno = 0;
		r = cowmem_clone(f[0].region);
		CHECK(r == NULL && (errno == ENOMEM || errno == EAGAIN),
		      "cowmem_clone at vm.max_map_count: %p, errno %s (expected NULL, "
		      "ENOMEM)", (void *)r, errno_name(errno));
	}
	check_family(f, "at vm.max_map_count");
	tracked_write(&f[0], 5 * page, page); /* hand-over to C */
	tracked_write(&f[1], 7 * page, page);
	check_family(f, "at vm.max_map_count, after writes");

	munmap(area, pages * page);
	while (single_count > 0)
		munmap(singles[--single_count], page);
	struct tracked d;
	tracked_clone(&d, &f[2], "D (clone of C, once mappings were back)");
	tracked_write(&d, 0, page);
	check_family(f, "once mappings were back");
	tracked_check(&d, "once mappings were back");
	tracked_destroy(&d);
	for (int i = 0; i < 3; i++)
		tracked_destroy(&f[i]);
	printf("map-count: %d mappings (vm.max_map_count=%ld): create and "
	       "clone -> ENOMEM, every region intact, library fine afterwards\n",
	       maps, max_maps);
	return 0;
}

/* ---- Pages that cannot be provided (injected ENOMEM) ------------------- */

/* Makes every UFFDIO_COPY, UFFDIO_ZEROPAGE and UFFDIO_CONTINUE of every
 * thread of this process fail with ENOMEM, as an out-of-memory kernel
 * would; UFFDIO_POISON, WAKE, WRITEPROTECT and all else still work. */
static void inject_fill_failures(void)
{
	size_t request = offsetof(struct seccomp_data, args[1]);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	request += 4; /* the request number is the low 32 bits */
#endif
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)request),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)UFFDIO_COPY, 3, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)UFFDIO_ZEROPAGE, 2, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)UFFDIO_CONTINUE, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOMEM),
	};
	struct sock_fprog program = {
		.len = sizeof filter / sizeof filter[0],
		.filter = filter,
	};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		test_skip("prctl(PR_SET_NO_NEW_PRIVS): %s", strerror(errno));
	/* TSYNC: the library's server thread, already running, too. */
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC,
		    &program) != 0)
		test_skip("seccomp filter: %s", strerror(errno));
}

/* One kind of fill fails; `kind` is copy, zeropage, continue or lent. */
static int case_unfillable(const char *kind)
{
	struct tracked f[3];
	void *fault_at;

	make_family(f);
	const char *backend = test_backend();
	if (strcmp(backend, "memfd") == 0)
		test_skip("backend memfd: no page is filled on demand");
	const char *features = cowmem_features();
	bool poison = test_feature_in_use("poison");
	const char *missing = test_lazy_lending_missing();
	if (missing && (strcmp(kind, "continue") == 0 || strcmp(kind, "lent") == 0))
		test_skip("feature %s not in use (features: %s): a clone copies its "
			  "source's written pages when it is made, so none waits to "
			  "be filled", missing, features);
	if (test_feature_in_use("engine-v2")) {
		/* Engine v2 serves C from the server only once C is an older
		 * generation: A changes page 5 again and is cloned once more.
		 * Then C's page 8 is mapped from the layer (CONTINUE) and its
		 * page 5 copied from an old version (the "lent" case). */
		tracked_write(&f[0], 5 * page, 100);
		cowmem_region *again = cowmem_clone(f[0].region);
		CHECK(again && cowmem_destroy(again) == 0, "clone and destroy of A: %s",
		      strerror(errno));
	}
	probe_install();

	/* What the checks afterwards may read without the server: pages of A
	 * and B that are in their own page tables or in the base layer. */
	unsigned char *b = cowmem_data(f[1].region);
	unsigned char *c = cowmem_data(f[2].region);
	unsigned char *target;
	bool write;
	if (strcmp(kind, "copy") == 0) {
		target = b + 7 * page + 5; /* a hole of B, written */
		write = true;
	} else if (strcmp(kind, "zeropage") == 0) {
		target = b + 11 * page; /* a hole of B, read */
		write = false;
	} else if (strcmp(kind, "continue") == 0) {
		target = c + 8 * page; /* a base page of C, which waits */
		write = false;
	} else {
		target = c + 5 * page + 1; /* the page A lends C */
		write = false;
	}
	printf("backend=%s poison=%s: %s of %s\n", backend, poison ? "yes" : "no",
	       write ? "write" : "read", kind);
	fflush(stdout);
	/* Fill what the checks below compare, while fills still work: all
	 * of A, and B's pages that are not holes. */
	tracked_check(&f[0], "before fills fail");
	volatile unsigned char sink = 0;
	for (size_t p = 0; p < 16; p++)
		if (p % 4 != 3)
			sink += b[p * page];
	(void)sink;

	inject_fill_failures();
	int caught = probe_access(target, write, &fault_at);
	/* Without UFFDIO_POISON the library must have stopped the process
	 * (abort) before the access could complete. */
	CHECK(poison, "unfillable-%s: without poison the access returned (signal %d) instead "
	      "of the process stopping", kind, caught);
	CHECK(caught == SIGBUS, "an access to a page that cannot be provided: "
	      "expected SIGBUS, got %s", caught ? signal_name(caught) : "no fault");
	CHECK(fault_at == target || fault_at == (void *)((uintptr_t)target & ~(page - 1)),
	      "SIGBUS at %p, accessed %p", fault_at, (void *)target);
	/* The page stays lost: again SIGBUS, at once. */
	caught = probe_access(target, write, NULL);
	CHECK(caught == SIGBUS, "a second access to the lost page: %s",
	      caught ? signal_name(caught) : "no fault");
	/* Nothing else changed: A and B's filled pages keep their bytes. */
	tracked_check(&f[0], "after a page of another region was lost");
	for (size_t p = 0; p < 16; p++)
		if (p % 4 != 3)
			CHECK(memcmp(b + p * page, f[1].model + p * page, page) == 0,
			      "page %zu of B changed after a page was lost", p);
	for (int i = 0; i < 3; i++)
		tracked_destroy(&f[i]);
	printf("unfillable-%s: SIGBUS on access (twice), other regions "
	       "intact, destroy works\n", kind);
	return 0;
}

static int case_unfillable_copy(void) { return case_unfillable("copy"); }
static int case_unfillable_zeropage(void) { return case_unfillable("zeropage"); }
static int case_unfillable_continue(void) { return case_unfillable("continue"); }
static int case_unfillable_lent(void) { return case_unfillable("lent"); }

/* ---- A memory cgroup --------------------------------------------------- */

struct memcg {
	char dir[1280];
	char limit_file[64];
	int version;
};

/* The directory of this process's cgroup in the hierarchy that has the
 * memory controller; false if there is none. */
static bool own_memory_cgroup(char *dir, size_t size, int *version)
{
	char line[1024], path[512] = "", mount_point[512] = "", root[512] = "";
	FILE *cgroups = fopen("/proc/self/cgroup", "re");
	bool v1 = false;

	if (!cgroups)
		return false;
	while (fgets(line, sizeof line, cgroups)) {
		line[strcspn(line, "\n")] = '\0';
		char *controllers = strchr(line, ':');
		char *p = controllers ? strchr(controllers + 1, ':') : NULL;
		if (!p)
			continue;
		/* "ID:CONTROLLERS:PATH": cut both colons, so that line is
		 * the hierarchy ID alone ("0" for cgroup v2). */
		*p = '\0';
		*controllers++ = '\0';
		if (strstr(controllers, "memory")) {
			snprintf(path, sizeof path, "%s", p + 1);
			v1 = true;
		} else if (!v1 && strcmp(line, "0") == 0 && controllers[0] == '\0') {
			snprintf(path, sizeof path, "%s", p + 1);
		}
	}
	fclose(cgroups);
	if (!path[0])
		return false;

	FILE *mounts = fopen("/proc/self/mountinfo", "re");
	if (!mounts)
		return false;
	while (fgets(line, sizeof line, mounts)) {
		char mroot[512], mpoint[512], fstype[64], super[512];
		char *dash = strstr(line, " - ");
		if (!dash || sscanf(line, "%*s %*s %*s %511s %511s", mroot, mpoint) != 2 ||
		    sscanf(dash + 3, "%63s %*s %511s", fstype, super) != 2)
			continue;
		if ((v1 && strcmp(fstype, "cgroup") == 0 && strstr(super, "memory")) ||
		    (!v1 && strcmp(fstype, "cgroup2") == 0)) {
			snprintf(mount_point, sizeof mount_point, "%s", mpoint);
			snprintf(root, sizeof root, "%s", mroot);
			break;
		}
	}
	fclose(mounts);
	if (!mount_point[0])
		return false;
	const char *relative = path;
	if (strcmp(root, "/") != 0 && strncmp(path, root, strlen(root)) == 0)
		relative = path + strlen(root);
	snprintf(dir, size, "%s%s", mount_point, relative);
	*version = v1 ? 1 : 2;
	return true;
}

static bool write_file(const char *dir, const char *name, const char *value)
{
	char path[1400];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	bool ok = write(fd, value, strlen(value)) == (ssize_t)strlen(value);
	close(fd);
	return ok;
}

/* Makes a memory cgroup below this process's own, limited to `limit`
 * bytes; on failure returns false with the reason in `why`. */
static bool memcg_create(struct memcg *cg, size_t limit, char *why, size_t why_size)
{
	char parent[1100], value[32];

	if (!own_memory_cgroup(parent, sizeof parent, &cg->version)) {
		snprintf(why, why_size, "no cgroup hierarchy with the memory controller");
		return false;
	}
	snprintf(cg->dir, sizeof cg->dir, "%s/cowmem-exhaustion-%d", parent, (int)getpid());
	if (mkdir(cg->dir, 0755) < 0) {
		snprintf(why, why_size, "cannot make a cgroup in %s: %s", parent,
			 strerror(errno));
		return false;
	}
	snprintf(cg->limit_file, sizeof cg->limit_file, "%s",
		 cg->version == 2 ? "memory.max" : "memory.limit_in_bytes");
	snprintf(value, sizeof value, "%zu", limit);
	if (!write_file(cg->dir, cg->limit_file, value)) {
		snprintf(why, why_size, "cannot set %s in a new cgroup of %s (cgroup v%d: "
			 "is the memory controller enabled for it?): %s",
			 cg->limit_file, parent, cg->version, strerror(errno));
		rmdir(cg->dir);
		return false;
	}
	if (cg->version == 2)
		(void)write_file(cg->dir, "memory.swap.max", "0");
	return true;
}

/* Removes the (now empty) cgroup, retrying while the kernel lets go of it. */
static void memcg_remove(struct memcg *cg)
{
	for (int tries = 0; tries < 200; tries++) {
		if (rmdir(cg->dir) == 0 || errno == ENOENT)
			return;
		usleep(10000);
	}
	printf("note: could not remove the cgroup %s: %s\n", cg->dir, strerror(errno));
}

/* In the child, in the cgroup: writes every page of a fresh clone far past
 * the limit. Exit 0: it all fit (a limit too generous); 1: a wrong byte;
 * killed by SIGKILL or SIGBUS: the expected ends. */
static int memcg_child(size_t clone_size)
{
	cowmem_region *a = cowmem_create(clone_size);
	if (!a) {
		printf("child: cowmem_create: %s\n", strerror(errno));
		return 2;
	}
	memset(cowmem_data(a), 0x33, page);
	cowmem_region *b = cowmem_clone(a);
	if (!b) {
		printf("child: cowmem_clone: %s\n", strerror(errno));
		return 2;
	}
	unsigned char *data = cowmem_data(b);
	for (size_t offset = 0; offset < clone_size; offset += page) {
		unsigned char expected = offset < page ? 0x33 : 0;
		CHECK(data[offset] == expected, "child: clone byte at %zu is %d, expected %d",
		      offset, data[offset], expected);
		data[offset] = (unsigned char)(offset / page);
	}
	return 0;
}

static void case_memcg_in_parent(void)
{
	const size_t limit = (size_t)64 << 20, clone_size = (size_t)512 << 20;
	struct memcg cg;
	char why[1600];
	int go[2];

	if (!memcg_create(&cg, limit, why, sizeof why)) {
		test_skip("%s", why);
	}
	CHECK(pipe2(go, O_CLOEXEC) == 0, "pipe2: %s", strerror(errno));
	fflush(stdout);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		char byte;
		struct rlimit no_core = { 0, 0 };
		setrlimit(RLIMIT_CORE, &no_core);
		alarm(120);
		close(go[1]);
		if (read(go[0], &byte, 1) != 1)
			_exit(3);
		fflush(stdout);
		_exit(memcg_child(clone_size));
	}
	close(go[0]);
	char pid_text[32];
	snprintf(pid_text, sizeof pid_text, "%d", (int)pid);
	bool moved = write_file(cg.dir, "cgroup.procs", pid_text);
	int saved = errno;
	if (!moved)
		kill(pid, SIGKILL);
	else
		CHECK(write(go[1], "g", 1) == 1, "write: %s", strerror(errno));
	close(go[1]);
	int status = wait_bounded(pid, 150);
	memcg_remove(&cg);
	if (!moved) {
		test_skip("cannot move a process into %s: %s", cg.dir, strerror(saved));
	}
	CHECK(status != -1, "the child in a %zu MiB cgroup hung (killed after 150 s)",
	      limit >> 20);
	printf("     a child writing %zu MiB of a clone in a %zu MiB cgroup (v%d): %s\n",
	       clone_size >> 20, limit >> 20, cg.version, describe_status(status));
	bool expected_end = WIFSIGNALED(status) &&
			    (WTERMSIG(status) == SIGKILL || WTERMSIG(status) == SIGBUS);
	CHECK(expected_end || (WIFEXITED(status) && WEXITSTATUS(status) == 2),
	      "the child must end by SIGKILL (OOM), SIGBUS or a clear error: %s",
	      describe_status(status));
	printf("memcg: out of memory ends the process, no hang, no wrong byte\n");
}

/* In the child: the clone's page tables first (one write per 2 MiB, before
 * it joins the cgroup, so that no allocation the kernel itself makes while
 * the child faults can meet the limit), then, told to go, every page. */
static int memcg_oom_off_child(size_t clone_size, int ready_fd, int go_fd)
{
	const size_t table = (size_t)2 << 20;
	const char *backend = cowmem_backend();
	if (!backend || strcmp(backend, "memfd") == 0)
		return TEST_EXIT_SKIP; /* no server: the kernel stops the writer */
	cowmem_region *a = cowmem_create(clone_size);
	cowmem_region *b = a ? cowmem_clone(a) : NULL;
	if (!b) {
		printf("child: %s: %s\n", a ? "cowmem_clone" : "cowmem_create", strerror(errno));
		return 2;
	}
	unsigned char *data = cowmem_data(b);
	for (size_t offset = 0; offset < clone_size; offset += table)
		data[offset] = 1;
	char byte = 'r';
	if (write(ready_fd, &byte, 1) != 1 || read(go_fd, &byte, 1) != 1)
		return 3;
	/* Writes only: a read would map the zero page, and the write after
	 * it would be the kernel's own copy-on-write, which sleeps in the
	 * full cgroup by the kernel's design, not the server's fill. */
	for (size_t offset = 0; offset < clone_size; offset += page)
		data[offset] = 2;
	return 0;
}

/* The threads of a stuck process and where the kernel has them sleeping. */
static void print_wait_channels(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
	DIR *tasks = opendir(path);
	struct dirent *entry;
	while (tasks && (entry = readdir(tasks)) != NULL) {
		if (entry->d_name[0] == '.')
			continue;
		char file[sizeof path + 300], channel[128] = "?";
		snprintf(file, sizeof file, "%s/%s/wchan", path, entry->d_name);
		FILE *f = fopen(file, "re");
		if (f) {
			if (!fgets(channel, sizeof channel, f))
				strcpy(channel, "?");
			fclose(f);
		}
		printf("     thread %s waits in %s\n", entry->d_name, channel);
	}
	if (tasks)
		closedir(tasks);
}

/* A full memory cgroup whose OOM killer is disabled (cgroup v1
 * memory.oom_control): the server's fill fails with ENOMEM and a task
 * that needs a page in a fault sleeps until memory comes back. Saying
 * "cannot provide page" must need none, or the server sleeps there and
 * the faulting thread never gets its SIGBUS (both waited forever before
 * the message was written without allocating). */
static void case_memcg_oom_off(void)
{
	const size_t limit = (size_t)64 << 20, clone_size = (size_t)512 << 20;
	struct memcg cg;
	char why[1600];
	int ready[2], go[2];

	if (TEST_UNDER_ASAN) {
		/* Its SIGBUS handler reports in the full cgroup and dies of
		 * that (SIGSEGV): the library's way to the signal is not what
		 * would be tested. */
		test_skip("AddressSanitizer handles SIGBUS itself, and needs memory to do so");
	}
	if (!memcg_create(&cg, limit, why, sizeof why)) {
		test_skip("%s", why);
	}
	if (cg.version != 1 || !write_file(cg.dir, "memory.oom_control", "1")) {
		memcg_remove(&cg);
		test_skip("%s", cg.version != 1 ? "only cgroup v1 can disable a cgroup's OOM killer"
						: "cannot write memory.oom_control");
	}
	int messages[2];
	CHECK(pipe2(ready, O_CLOEXEC) == 0 && pipe2(go, O_CLOEXEC) == 0 &&
		      pipe2(messages, O_CLOEXEC | O_NONBLOCK) == 0,
	      "pipe2: %s", strerror(errno));
	fflush(stdout);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		struct rlimit no_core = { 0, 0 };
		setrlimit(RLIMIT_CORE, &no_core);
		close(ready[0]);
		close(go[1]);
		dup2(messages[1], STDERR_FILENO);
		_exit(memcg_oom_off_child(clone_size, ready[1], go[0]));
	}
	close(ready[1]);
	close(go[0]);
	close(messages[1]);
	char byte, pid_text[32];
	bool set_up = read(ready[0], &byte, 1) == 1;
	snprintf(pid_text, sizeof pid_text, "%d", (int)pid);
	bool moved = set_up && write_file(cg.dir, "cgroup.procs", pid_text);
	int saved = errno;
	if (moved)
		CHECK(write(go[1], "g", 1) == 1, "write: %s", strerror(errno));
	close(go[1]);
	close(ready[0]);
	int status = -1;
	for (unsigned tick = 0; moved && tick < 6000 && status == -1; tick++) {
		if (waitpid(pid, &status, WNOHANG) != pid)
			status = -1;
		else
			break;
		usleep(10000);
	}
	if (moved && status == -1) {
		printf("     the child is stuck after 60 s:\n");
		print_wait_channels(pid);
		/* Memory back: whatever waited for it goes on. */
		(void)write_file(cg.dir, cg.limit_file, "17179869184");
		status = wait_bounded(pid, 30);
		printf("     after raising the limit: %s\n",
		       status == -1 ? "still stuck" : describe_status(status));
		status = -1;
	}
	if (!moved) {
		if (set_up)
			kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	memcg_remove(&cg);
	if (!moved && !set_up && WIFEXITED(status) && WEXITSTATUS(status) == TEST_EXIT_SKIP) {
		test_skip("the memfd backend has no fault server; there the kernel's own "
			  "copy-on-write waits in the full cgroup");
	}
	if (!moved && set_up) {
		test_skip("cannot move a process into the cgroup: %s", strerror(saved));
	}
	CHECK(moved, "memcg-oom-off: the child could not set up: %s", describe_status(status));
	CHECK(status != -1, "memcg-oom-off: a fill the cgroup refused hung instead of SIGBUS");
	printf("     a child writing %zu MiB of a clone in a %zu MiB cgroup, OOM killer off: %s\n",
	       clone_size >> 20, limit >> 20, describe_status(status));
	bool poison = test_feature_in_use("poison");
	int expected = poison ? SIGBUS : SIGABRT;
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == expected,
	      "memcg-oom-off: the child must end by %s: %s", poison ? "SIGBUS" : "SIGABRT",
	      describe_status(status));
	char said[4096];
	ssize_t n = read(messages[0], said, sizeof said - 1);
	said[n > 0 ? n : 0] = '\0';
	close(messages[0]);
	/* The message goes to a pipe, whose new buffer page the full cgroup
	 * refuses too (write(2) fails with ENOMEM): it is said when it can be,
	 * the signal always comes. */
	printf("     the message %s\n", strstr(said, "cowmem: cannot provide page")
					      ? "reached stderr"
					      : "did not reach stderr (the full cgroup refused it)");
	printf("memcg-oom-off: a refused fill ends in %s, no hang\n",
	       poison ? "SIGBUS" : "SIGABRT");
}

/* ---- Running the cases -------------------------------------------------- */

static const struct {
	const char *name;
	int (*run)(void);
	unsigned watchdog;
} spawned[] = {
	{ "descriptors", case_descriptors, 60 },
	{ "first-use", case_first_use, 60 },
	{ "address-space", case_address_space, 60 },
	{ "map-count", case_map_count, 120 },
	{ "unfillable-copy", case_unfillable_copy, 60 },
	{ "unfillable-zeropage", case_unfillable_zeropage, 60 },
	{ "unfillable-continue", case_unfillable_continue, 60 },
	{ "unfillable-lent", case_unfillable_lent, 60 },
};
#define SPAWNED_COUNT (sizeof spawned / sizeof spawned[0])

/* Runs `--case=name` in a new process, with `extra` (NAME=value strings,
 * NULL-terminated) in its environment, each replacing a variable of the
 * same name (getenv would find the first); returns its wait status, its
 * output (stdout and stderr) in `out`. */
static int run_case_process(const char *name, const char *const *extra, char *out,
			    size_t out_size)
{
	char argument[96];
	int pipe_fds[2];
	pid_t pid;

	snprintf(argument, sizeof argument, "--case=%s", name);
	char *argv[] = { "exhaustion", argument, NULL };
	size_t count = 0;
	while (environ[count])
		count++;
	char **env = calloc(count + 8, sizeof *env);
	CHECK(env != NULL, "calloc");
	memcpy(env, environ, count * sizeof *env);
	for (int i = 0; extra && extra[i] && i < 4; i++) {
		size_t name_length = strcspn(extra[i], "=") + 1, at = 0;
		while (at < count && strncmp(env[at], extra[i], name_length) != 0)
			at++;
		env[at] = (char *)extra[i];
		if (at == count)
			count++;
	}
	char seed_text[64];
	snprintf(seed_text, sizeof seed_text, "COWMEM_TEST_SEED=%" PRIu64,
		 test_substream(test_seed, (uint64_t)(uintptr_t)name[0] * 131 + strlen(name)));
	env[count++] = seed_text;

	CHECK(pipe2(pipe_fds, O_CLOEXEC) == 0, "pipe2: %s", strerror(errno));
	posix_spawn_file_actions_t actions;
	posix_spawn_file_actions_init(&actions);
	posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
	posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
	fflush(stdout);
	int rc = posix_spawn(&pid, self_path(), &actions, NULL, argv, env);
	posix_spawn_file_actions_destroy(&actions);
	free(env);
	CHECK(rc == 0, "posix_spawn: %s", strerror(rc));
	close(pipe_fds[1]);

	/* Read until EOF; the child's own watchdog bounds this, and a poll
	 * timeout bounds it again should the child's alarm not fire. */
	size_t used = 0;
	for (;;) {
		struct pollfd pfd = { .fd = pipe_fds[0], .events = POLLIN };
		int ready = poll(&pfd, 1, 200 * 1000);
		if (ready == 0) {
			kill(pid, SIGKILL);
			break;
		}
		if (ready < 0 && errno == EINTR)
			continue;
		char buffer[4096];
		ssize_t n = read(pipe_fds[0], buffer, sizeof buffer);
		if (n <= 0)
			break;
		size_t take = (size_t)n < out_size - 1 - used ? (size_t)n : out_size - 1 - used;
		memcpy(out + used, buffer, take);
		used += take;
	}
	out[used] = '\0';
	close(pipe_fds[0]);
	int status = wait_bounded(pid, 30);
	return status;
}

static void print_indented(const char *text)
{
	const char *line = text;
	while (*line) {
		const char *end = strchr(line, '\n');
		size_t length = end ? (size_t)(end - line) : strlen(line);
		printf("      | %.*s\n", (int)length, line);
		line += length + (end ? 1 : 0);
	}
}

/* What a process that starts normally gets, for first-use to compare
 * with; learnt in a child so that this process stays fresh. */
static void expected_start(char *backend, char *features, size_t size)
{
	int p[2];
	CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe2: %s", strerror(errno));
	fflush(stdout);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		const char *b = cowmem_backend(), *f = cowmem_features();
		dprintf(p[1], "%s\n%s\n", b ? b : "", f ? f : "");
		_exit(0);
	}
	close(p[1]);
	char text[512] = "";
	ssize_t n = read(p[0], text, sizeof text - 1);
	text[n > 0 ? n : 0] = '\0';
	close(p[0]);
	waitpid(pid, NULL, 0);
	char *newline = strchr(text, '\n');
	CHECK(newline != NULL, "the child did not say its backend");
	*newline = '\0';
	newline[1 + strcspn(newline + 1, "\n")] = '\0';
	snprintf(backend, size, "COWMEM_TEST_EXPECT_BACKEND=%s", text);
	snprintf(features, size, "COWMEM_TEST_EXPECT_FEATURES=%s", newline + 1);
}

/*
 * Runs the spawned case `name` (with COWMEM_DISABLE=poison added to what
 * is masked already, if `without_poison`) in a process of its own and
 * judges how it ended. An unfillable case must end in SIGBUS inside the
 * case where poison is in use, else with SIGABRT after the library's
 * message.
 */
static void spawn_case(const char *name, bool without_poison)
{
	static char output[1 << 16];
	static char disable[512], expect_backend[600], expect_features[600];
	const char *extra[3] = { NULL, NULL, NULL };
	bool unfillable = strncmp(name, "unfillable-", 11) == 0;
	bool poison = false;

	if (unfillable || strcmp(name, "first-use") == 0) {
		expected_start(expect_backend, expect_features, sizeof expect_backend);
		poison = test_feature_listed(strchr(expect_features, '=') + 1, "poison");
	}
	if (strcmp(name, "first-use") == 0) {
		extra[0] = expect_backend;
		extra[1] = expect_features;
	}
	if (without_poison) {
		const char *disabled = getenv("COWMEM_DISABLE");
		snprintf(disable, sizeof disable, "COWMEM_DISABLE=%s%spoison",
			 disabled ? disabled : "", disabled && *disabled ? "," : "");
		extra[0] = disable;
		poison = false;
	}
	int status = run_case_process(name, extra, output, sizeof output);
	print_indented(output);
	CHECK(status != -1, "hung");
	if (WIFEXITED(status) && WEXITSTATUS(status) == TEST_EXIT_SKIP) {
		const char *reason = strstr(output, "SKIP: ");
		test_skip("%.*s", reason ? (int)strcspn(reason + 6, "\n") : 9,
			  reason ? reason + 6 : "see above");
	}
	if (unfillable && !poison) {
		/* Without poison: the process stops, with the reason. */
		CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
		      "without poison the process must stop with SIGABRT: %s",
		      describe_status(status));
		CHECK(strstr(output, "cowmem: cannot provide page"),
		      "no 'cowmem: cannot provide page' message on stderr");
		return;
	}
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s", describe_status(status));
	CHECK(!unfillable || strstr(output, "cowmem: cannot provide page"),
	      "no 'cowmem: cannot provide page' message on stderr");
}

static void descriptors(void) { spawn_case("descriptors", false); }
static void first_use(void) { spawn_case("first-use", false); }
static void address_space(void) { spawn_case("address-space", false); }
static void map_count(void) { spawn_case("map-count", false); }
static void unfillable_copy(void) { spawn_case("unfillable-copy", false); }
static void unfillable_zeropage(void) { spawn_case("unfillable-zeropage", false); }
static void unfillable_continue(void) { spawn_case("unfillable-continue", false); }
static void unfillable_lent(void) { spawn_case("unfillable-lent", false); }
static void unfillable_copy_abort(void) { spawn_case("unfillable-copy", true); }
static void unfillable_zeropage_abort(void) { spawn_case("unfillable-zeropage", true); }
static void unfillable_continue_abort(void) { spawn_case("unfillable-continue", true); }
static void unfillable_lent_abort(void) { spawn_case("unfillable-lent", true); }

static const struct test_case cases[] = {
	TEST_CASE("descriptors", descriptors),
	TEST_CASE("first-use", first_use),
	TEST_CASE("address-space", address_space),
	TEST_CASE("map-count", map_count),
	TEST_CASE("unfillable-copy", unfillable_copy),
	TEST_CASE("unfillable-zeropage", unfillable_zeropage),
	TEST_CASE("unfillable-continue", unfillable_continue),
	TEST_CASE("unfillable-lent", unfillable_lent),
	TEST_CASE("unfillable-copy/no-poison", unfillable_copy_abort),
	TEST_CASE("unfillable-zeropage/no-poison", unfillable_zeropage_abort),
	TEST_CASE("unfillable-continue/no-poison", unfillable_continue_abort),
	TEST_CASE("unfillable-lent/no-poison", unfillable_lent_abort),
	TEST_CASE("memcg", case_memcg_in_parent),
	TEST_CASE("memcg-oom-off", case_memcg_oom_off),
};

int main(int argc, char **argv)
{
	page = test_page_size();
	for (int i = 1; i < argc; i++)
		if (strncmp(argv[i], "--case=", 7) == 0) {
			/* One spawned case, in this fresh process. */
			const char *only = argv[i] + 7;
			rng.state = test_seed_init(argc, argv);
			for (size_t c = 0; c < SPAWNED_COUNT; c++)
				if (strcmp(spawned[c].name, only) == 0) {
					struct rlimit no_core = { 0, 0 };
					setrlimit(RLIMIT_CORE, &no_core);
					alarm(spawned[c].watchdog);
					int rc = spawned[c].run();
					fflush(stdout);
					return rc;
				}
			fprintf(stderr, "unknown case '%s'\n", only);
			return 2;
		}
	test_seed_init(argc, argv);
	return test_main(argc, argv, cases, TEST_CASE_COUNT(cases));
}
