/*
 * Choosing the fault mechanism at run time, and saying which one is in use.
 *
 *   userfaultfd       kernel-mode faults: folds, zero pages, system
 *                     calls on unfilled pages are served.
 *   userfaultfd-user  UFFD_USER_MODE_ONLY (what an unprivileged process may
 *                     open when vm.unprivileged_userfaultfd=0): a system call
 *                     that meets an unfilled page fails with EFAULT unless
 *                     the pages were prefaulted (cowmem_prefault). Used only
 *                     when asked for by name.
 *   memfd             no userfaultfd at all (seccomp, old kernels): private
 *                     mappings of the layers; clones do not fold, so each
 *                     copies in its overlay (ARCHITECTURE.md).
 *
 * COWMEM_BACKEND=auto|userfaultfd|userfaultfd-user|memfd forces one;
 * COWMEM_DISABLE=name,... masks optional features so that every path can be
 * tested on one kernel. Unknown names are an error, never a silent default.
 * wp-unpopulated, wp-async and move are probed and may be masked, but the
 * engine does not need them, so cowmem_features() does not list them;
 * user-mode (UFFD_USER_MODE_ONLY, what userfaultfd-user needs) is not listed
 * either, since no other backend uses it: masking it makes a forced
 * userfaultfd-user fail as on a kernel before 5.11.
 * Every function here returns 0 (or a descriptor) or a negative errno.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#ifndef USERFAULTFD_IOC_NEW /* 6.1+: /dev/userfaultfd */
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

static const struct {
	const char *name;
	unsigned bit;
	uint64_t uffd_feature; /* 0: not a userfaultfd feature */
	bool used;             /* false: probed and reported, but not needed */
	uint64_t public_bit;   /* COWMEM_FEATURE_*: listed ones only */
} feature_table[] = {
	{ "minor", FEATURE_MINOR, UFFD_FEATURE_MINOR_SHMEM, true, COWMEM_FEATURE_MINOR },
	{ "wp", FEATURE_WP, UFFD_FEATURE_WP_HUGETLBFS_SHMEM, true, COWMEM_FEATURE_WP },
	{ "poison", FEATURE_POISON, UFFD_FEATURE_POISON, true, COWMEM_FEATURE_POISON },
	{ "wp-unpopulated", FEATURE_WP_UNPOPULATED, UFFD_FEATURE_WP_UNPOPULATED, false, 0 },
	{ "wp-async", FEATURE_WP_ASYNC, UFFD_FEATURE_WP_ASYNC, false, 0 },
	{ "move", FEATURE_MOVE, UFFD_FEATURE_MOVE, false, 0 },
	{ "dontunmap", FEATURE_DONTUNMAP, 0, true, COWMEM_FEATURE_DONTUNMAP },
	{ "zero-pfn", FEATURE_ZERO_PFN, 0, true, COWMEM_FEATURE_ZERO_PFN },
	{ "pagemap-scan", FEATURE_PAGEMAP_SCAN, 0, true, COWMEM_FEATURE_PAGEMAP_SCAN },
	{ "user-mode", FEATURE_USER_MODE, 0, false, 0 },
	{ "event-remap", FEATURE_EVENT_REMAP, UFFD_FEATURE_EVENT_REMAP, false, 0 },
	{ "noexec-seal", FEATURE_NOEXEC_SEAL, 0, false, 0 },
	{ "process-madvise", FEATURE_PROCESS_MADVISE, 0, false, 0 },
	{ "dev-userfaultfd", FEATURE_DEV_USERFAULTFD, 0, false, 0 },
	{ "keep-mappings", FEATURE_KEEP_MAPPINGS, 0, false, 0 },
	{ "background-fold", FEATURE_BACKGROUND_FOLD, 0, false, 0 },
	{ "early-copies", FEATURE_EARLY_COPIES, 0, false, 0 },
	{ "rebase", FEATURE_REBASE, 0, false, 0 },
};
/* The fallbacks above: in use unless masked. */
#define FALLBACK_FEATURES                                                   \
	(FEATURE_NOEXEC_SEAL | FEATURE_PROCESS_MADVISE | FEATURE_DEV_USERFAULTFD | \
	 FEATURE_KEEP_MAPPINGS | FEATURE_BACKGROUND_FOLD | FEATURE_EARLY_COPIES | FEATURE_REBASE)
#define FEATURE_COUNT (sizeof feature_table / sizeof feature_table[0])

static const char *const backend_names[] = {
	[BACKEND_USERFAULTFD] = "userfaultfd",
	[BACKEND_USERFAULTFD_USER] = "userfaultfd-user",
	[BACKEND_MEMFD] = "memfd",
};

static char features_text[256];
static uint64_t features_mask; /* the same, as COWMEM_FEATURE_* bits */

static int parse_disabled(const char *list, unsigned *disabled)
{
	char buffer[256];

	*disabled = 0;
	if (!list || !*list)
		return 0;
	if (strlen(list) >= sizeof buffer)
		goto unknown;
	strcpy(buffer, list);
	for (char *save, *word = strtok_r(buffer, ",", &save); word;
	     word = strtok_r(NULL, ",", &save)) {
		size_t i = 0;
		while (i < FEATURE_COUNT && strcmp(word, feature_table[i].name) != 0)
			i++;
		if (i == FEATURE_COUNT)
			goto unknown;
		*disabled |= feature_table[i].bit;
	}
	return 0;
unknown:
	fprintf(stderr, "cowmem: COWMEM_DISABLE=%s names an unknown feature (known: "
		"minor, wp, poison, wp-unpopulated, wp-async, move, dontunmap, zero-pfn, "
		"pagemap-scan, user-mode, event-remap, noexec-seal, process-madvise, "
		"dev-userfaultfd, keep-mappings, background-fold, early-copies, rebase)\n",
		list);
	return -EINVAL;
}

/* A descriptor with kernel-mode faults: the system call, else the device
 * (6.1+), which an administrator can open to a group without lowering
 * vm.unprivileged_userfaultfd for everyone. */
static int open_kernel_mode(unsigned disabled, bool *from_device)
{
	int fd = cowmem__sys_userfaultfd(O_CLOEXEC | O_NONBLOCK);

	*from_device = false;
	if (fd >= 0)
		return fd;
	if (errno != EPERM || (disabled & FEATURE_DEV_USERFAULTFD))
		return -errno;
	int device = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (device < 0)
		return -EPERM;
	fd = ioctl(device, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	close(device);
	if (fd < 0)
		return -EPERM;
	*from_device = true;
	return fd;
}

/* A descriptor with user-mode faults only. UFFD_USER_MODE_ONLY is 5.11+:
 * an older kernel refuses the unknown flag with EINVAL, which the library
 * keeps for values of its own variables that it does not know. The flags
 * are otherwise fixed and valid, so EINVAL here means the kernel lacks the
 * mode: ENOSYS, as for a kernel without userfaultfd(2). Masking user-mode
 * gives the same answer on any kernel, once the permission checks pass. */
static int open_user_mode(unsigned disabled)
{
	int fd = cowmem__sys_userfaultfd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);

	if (fd >= 0 && (disabled & FEATURE_USER_MODE)) {
		close(fd);
		return -ENOSYS;
	}
	if (fd < 0)
		return errno == EINVAL ? -ENOSYS : -errno;
	return fd;
}

static int open_mode(enum backend backend, unsigned disabled, bool *from_device)
{
	if (backend == BACKEND_USERFAULTFD)
		return open_kernel_mode(disabled, from_device);
	*from_device = false;
	return open_user_mode(disabled);
}

/* UFFDIO_API refuses features the kernel lacks and may be called only once
 * per descriptor: ask a throwaway descriptor first. */
static int open_userfaultfd(enum backend backend, unsigned disabled, bool *from_device)
{
	int probe = open_mode(backend, disabled, from_device);
	uint64_t wanted = UFFD_FEATURE_MISSING_SHMEM;

	if (probe < 0)
		return probe;
	int rc = cowmem__uffd_api(probe, 0, &cowmem__engine.offered);
	close(probe);
	if (rc < 0)
		return rc;
	/* Only what the engine uses: WP_ASYNC, for one, would change how the
	 * kernel resolves write-protect faults for everyone on the descriptor. */
	for (size_t i = 0; i < FEATURE_COUNT; i++)
		if (feature_table[i].used && !(disabled & feature_table[i].bit))
			wanted |= feature_table[i].uffd_feature;
	int uffd = open_mode(backend, disabled, from_device);
	uint64_t reported;
	if (uffd < 0)
		return uffd;
	/* On success the kernel reports everything it supports, not what
	 * was asked for: what is in effect is the request. */
	cowmem__engine.granted = wanted & cowmem__engine.offered;
	if (!(cowmem__engine.granted & UFFD_FEATURE_MISSING_SHMEM) ||
	    cowmem__uffd_api(uffd, cowmem__engine.granted, &reported) < 0) {
		close(uffd);
		return -ENOTSUP;
	}
	return uffd;
}

static void describe(bool from_device)
{
	size_t used = 0;

	features_text[0] = '\0';
	features_mask = 0;
	for (size_t i = 0; i < FEATURE_COUNT; i++) {
		if (!feature_table[i].used || !(cowmem__engine.features & feature_table[i].bit))
			continue;
		used += (size_t)snprintf(features_text + used, sizeof features_text - used,
					 "%s%s", used ? "," : "", feature_table[i].name);
		features_mask |= feature_table[i].public_bit;
	}
	if (from_device && used < sizeof features_text) {
		snprintf(features_text + used, sizeof features_text - used, "%sdevice",
			 used ? "," : "");
		features_mask |= COWMEM_FEATURE_DEVICE;
	}
}

/* PAGEMAP_SCAN is 6.7+: ask it about nothing and see whether it answers. */
static bool pagemap_scan_works(void)
{
	struct pm_scan_arg arg = { .size = sizeof arg };

	return cowmem__engine.pagemap >= 0 && ioctl(cowmem__engine.pagemap, PAGEMAP_SCAN,
						    &arg) == 0;
}

/* MREMAP_DONTUNMAP on a shared mapping of a memfd is 5.13+ (5.7 took it
 * for private anonymous memory only): try it on one page. A probe that
 * cannot run (no descriptor) claims it, and freeze() falls back if the
 * kernel refuses. */
static bool dontunmap_works(void)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	int fd = cowmem__sys_memfd_create("cowmem-probe", MFD_CLOEXEC);

	if (fd < 0)
		return true;
	bool works = true;
	char *shared = ftruncate(fd, (off_t)page) == 0
			       ? mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
			       : MAP_FAILED;
	char *target = mmap(NULL, page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (shared != MAP_FAILED && target != MAP_FAILED) {
		char *moved = cowmem__sys_mremap(shared, page, page,
						 MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, target);
		works = moved != MAP_FAILED;
		if (works)
			target = moved;
	}
	if (shared != MAP_FAILED)
		munmap(shared, page);
	if (target != MAP_FAILED)
		munmap(target, page);
	close(fd);
	return works;
}

int cowmem__backend_select(void)
{
	const char *wanted = getenv("COWMEM_BACKEND");
	unsigned disabled;
	bool from_device = false;
	int forced = -1;

	int rc = parse_disabled(getenv("COWMEM_DISABLE"), &disabled);
	if (rc < 0)
		return rc;
	if (wanted && *wanted && strcmp(wanted, "auto") != 0) {
		for (int b = 0; b < BACKEND_COUNT; b++)
			if (strcmp(wanted, backend_names[b]) == 0)
				forced = b;
		if (forced < 0) {
			fprintf(stderr, "cowmem: COWMEM_BACKEND=%s is not a backend "
				"(expected auto, userfaultfd, userfaultfd-user or memfd)\n",
				wanted);
			return -EINVAL;
		}
	}

	cowmem__engine.uffd = -1;
	cowmem__engine.backend = BACKEND_MEMFD;
	if (forced == BACKEND_USERFAULTFD || forced == BACKEND_USERFAULTFD_USER) {
		int uffd = open_userfaultfd(forced, disabled, &from_device);
		if (uffd < 0) {
			fprintf(stderr, "cowmem: COWMEM_BACKEND=%s is not available here: %s\n",
				wanted, strerror(-uffd));
			return uffd;
		}
		cowmem__engine.uffd = uffd;
		cowmem__engine.backend = forced;
	} else if (forced < 0) {
		/* Auto never picks user-mode-only faults: ordinary read(2)
		 * into region memory would fail with EFAULT. */
		int uffd = open_userfaultfd(BACKEND_USERFAULTFD, disabled, &from_device);
		if (uffd >= 0) {
			cowmem__engine.uffd = uffd;
			cowmem__engine.backend = BACKEND_USERFAULTFD;
		} else if (uffd == -EMFILE || uffd == -ENFILE || uffd == -ENOMEM) {
			return uffd; /* may work later: do not settle for memfd */
		}
	}

	for (size_t i = 0; i < FEATURE_COUNT; i++) {
		uint64_t f = feature_table[i].uffd_feature;
		if (f && (cowmem__engine.granted & f) && cowmem__engine.uffd >= 0)
			cowmem__engine.features |= feature_table[i].bit;
		else if (f && (cowmem__engine.offered & f) && !feature_table[i].used &&
			 !(disabled & feature_table[i].bit))
			cowmem__engine.features |= feature_table[i].bit; /* offered, unused */
	}
	if (!(disabled & FEATURE_DONTUNMAP) && dontunmap_works())
		cowmem__engine.features |= FEATURE_DONTUNMAP;
	cowmem__engine.features |= FALLBACK_FEATURES & ~disabled;
	/* Folds also need /proc/self/mem (to read a region's page without
	 * faulting) and pagemap (to find written pages): without /proc, MINOR
	 * and WP are of no use. */
	if (cowmem__engine.self_mem < 0 || cowmem__engine.pagemap < 0)
		cowmem__engine.features &= ~(unsigned)(FEATURE_MINOR | FEATURE_WP);
	if (!(disabled & FEATURE_PAGEMAP_SCAN) && pagemap_scan_works())
		cowmem__engine.features |= FEATURE_PAGEMAP_SCAN;
	if (!(disabled & FEATURE_ZERO_PFN) && cowmem__engine.zero_pfn != 0)
		cowmem__engine.features |= FEATURE_ZERO_PFN;
	else
		cowmem__engine.zero_pfn = 0;
	describe(from_device);
	return 0;
}

int cowmem__backend_open_another(uint64_t features)
{
	bool from_device;
	uint64_t reported;

	if (cowmem__engine.uffd < 0)
		return -ENOTSUP;
	int uffd = open_mode(cowmem__engine.backend, 0, &from_device); /* was available */
	if (uffd < 0)
		return uffd;
	int rc = cowmem__uffd_api(uffd, features, &reported);
	if (rc < 0) {
		close(uffd);
		return rc;
	}
	return uffd;
}

/* In a forked child the inherited descriptor still names the parent's
 * userfaultfd context: open one of the child's own, same mode, same
 * features. On failure the child carries on with the memfd backend. */
int cowmem__backend_reopen(void)
{
	bool from_device;
	uint64_t reported;

	if (cowmem__engine.uffd < 0)
		return 0;
	close(cowmem__engine.uffd);
	int uffd = open_mode(cowmem__engine.backend, 0, &from_device); /* was available */
	int rc = uffd < 0 ? uffd : cowmem__uffd_api(uffd, cowmem__engine.granted, &reported);
	if (rc == 0) {
		cowmem__engine.uffd = uffd;
		return 0;
	}
	if (uffd >= 0)
		close(uffd);
	cowmem__engine.uffd = -1;
	cowmem__engine.backend = BACKEND_MEMFD;
	cowmem__engine.features &= ~(unsigned)(FEATURE_MINOR | FEATURE_WP | FEATURE_POISON);
	return rc;
}

/* "engine-v2" is always listed (the only engine; programs written for
 * the time it was one of two test it); "folds" where clones fold. */
void cowmem__backend_note_folds(bool folds)
{
	size_t used = strlen(features_text);
	snprintf(features_text + used, sizeof features_text - used, "%sengine-v2%s",
		 used ? "," : "", folds ? ",folds" : "");
	features_mask |= COWMEM_FEATURE_ENGINE_V2 | (folds ? COWMEM_FEATURE_FOLDS : 0);
}

const char *cowmem__backend_name(void)
{
	return backend_names[cowmem__engine.backend];
}

const char *cowmem__features_text(void)
{
	return features_text;
}

uint64_t cowmem__features_mask(void)
{
	return features_mask;
}
