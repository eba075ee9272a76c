/*
 * The library's state and its initialisation, once, at the first call that
 * needs it: the page size, the descriptors the engine uses
 * (/proc/self/pagemap, /proc/self/mem, the userfaultfd the backend opens),
 * the zero page's PFN, whether clones fold, and the fork() handlers.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine.h"

/* ---- Initialisation ----------------------------------------------------- */

static uint64_t read_pagemap_entry(const void *addr)
{
	uint64_t entry = 0;
	off_t offset = (off_t)((uintptr_t)addr / cowmem__engine.page_size * sizeof entry);

	if (pread(cowmem__engine.pagemap, &entry, sizeof entry, offset) != sizeof entry)
		return 0;
	return entry;
}

/* The shared zero page's PFN lets a clone tell "never written, reads as
 * zero" from "written". Unprivileged readers of pagemap see PFN 0; then the
 * exclusive-mapping bit is used instead (entry_is_own() in scan.c). */
static uint64_t find_zero_pfn(void)
{
	volatile char *p = mmap(NULL, cowmem__engine.page_size, PROT_READ,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t pfn = 0;

	if (p == MAP_FAILED)
		return 0;
	(void)p[0];
	uint64_t entry = read_pagemap_entry((const void *)p);
	if (entry & (1ull << 63))
		pfn = entry & ((1ull << 55) - 1);
	munmap((void *)p, cowmem__engine.page_size);
	return pfn;
}

/* ---- fork() ------------------------------------------------------------- */

static void fork_prepare(void)
{
	cowmem__lock_settled(); /* no fold left to a thread the child lacks */
	cowmem__janitor_fork_prepare();
	cowmem__copier_fork_prepare();
}

static void fork_parent(void)
{
	cowmem__copier_fork_parent();
	cowmem__janitor_fork_parent();
	pthread_mutex_unlock(&cowmem__engine.lock);
}

/*
 * The child has none of the parent's threads and none of its region memory
 * (MADV_DONTFORK). Every inherited handle becomes an orphan: cowmem_destroy()
 * frees it, anything else is EINVAL, and touching its memory is SIGSEGV. The
 * descriptors that name the parent (/proc/self/..., the userfaultfd) are
 * replaced with the child's own, and layer memfds are closed so region
 * content stays with the parent.
 */
static void fork_child(void)
{
	cowmem__copier_fork_child();
	cowmem__janitor_fork_child();
	cowmem__regions_fork_child();
	cowmem__folder_fork_child();
	if (cowmem__engine.server == SERVER_LIBRARY)
		cowmem__server_fork_child();
	cowmem__engine.server = SERVER_NONE;
	if (cowmem__engine.pagemap >= 0) {
		close(cowmem__engine.pagemap);
		cowmem__engine.pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	}
	if (cowmem__engine.self_mem >= 0) {
		close(cowmem__engine.self_mem);
		cowmem__engine.self_mem = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
	}
	(void)cowmem__backend_reopen(); /* the memfd backend's ways if that fails */
	pthread_mutex_unlock(&cowmem__engine.lock);
}

/* ---- Folds --------------------------------------------------------------- */

/* A clone folds (ARCHITECTURE.md) only where every reader's faults can be
 * served: userfaultfd with MINOR faults on shmem, MREMAP_DONTUNMAP, and
 * /proc to read the page tables. */
static bool clones_can_fold(void)
{
	return cowmem__engine.uffd >= 0 && cowmem__sees_page_tables() &&
	       (cowmem__engine.features & FEATURE_MINOR) &&
	       (cowmem__engine.features & FEATURE_DONTUNMAP);
}

/* ---- Initialisation proper ---------------------------------------------- */

/* Out of descriptors or memory: a later call may succeed, so the first one
 * fails and keeps nothing, instead of settling for less for good. */
static bool transient(int rc)
{
	return rc == -EMFILE || rc == -ENFILE || rc == -ENOMEM;
}

static void init_undo(void)
{
	if (cowmem__engine.pagemap >= 0)
		close(cowmem__engine.pagemap);
	if (cowmem__engine.self_mem >= 0)
		close(cowmem__engine.self_mem);
	if (cowmem__engine.uffd >= 0)
		close(cowmem__engine.uffd);
	cowmem__engine.pagemap = cowmem__engine.self_mem = cowmem__engine.uffd = -1;
	free((void *)cowmem__zero_page);
	cowmem__zero_page = NULL;
	cowmem__engine.features = 0;
	cowmem__engine.offered = cowmem__engine.granted = 0;
	cowmem__engine.zero_pfn = 0;
}

/* 0; or a negative errno: for good (engine.init_errno set), or transient
 * (nothing kept, the next call tries again). */
static int init(void)
{
	int rc;
	long page_size = sysconf(_SC_PAGESIZE);

	cowmem__engine.page_size = page_size > 0 ? (size_t)page_size : 4096;
	cowmem__zero_page = aligned_alloc(cowmem__engine.page_size, cowmem__engine.page_size);
	if (!cowmem__zero_page) {
		rc = -ENOMEM;
		goto transient_failure;
	}
	memset((void *)cowmem__zero_page, 0, cowmem__engine.page_size);
	cowmem__engine.pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (cowmem__engine.pagemap < 0 && transient(-errno)) {
		rc = -errno;
		goto transient_failure;
	}
	cowmem__engine.self_mem = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
	if (cowmem__engine.self_mem < 0 && transient(-errno)) {
		rc = -errno;
		goto transient_failure;
	}
	if (cowmem__engine.pagemap >= 0)
		cowmem__engine.zero_pfn = find_zero_pfn();

	rc = cowmem__backend_select();
	if (rc < 0) {
		if (transient(rc))
			goto transient_failure;
		cowmem__engine.init_errno = -rc;
		return rc;
	}
	cowmem__folds = clones_can_fold();
	cowmem__backend_note_folds(cowmem__folds);
	pthread_atfork(fork_prepare, fork_parent, fork_child);
	return 0;

transient_failure:
	init_undo();
	return rc;
}

int cowmem__engine_init(void)
{
	static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
	static bool done;

	if (!__atomic_load_n(&done, __ATOMIC_ACQUIRE)) {
		pthread_mutex_lock(&init_lock);
		int rc = 0;
		if (!done) {
			rc = init();
			if (rc == 0 || cowmem__engine.init_errno)
				__atomic_store_n(&done, true, __ATOMIC_RELEASE);
		}
		pthread_mutex_unlock(&init_lock);
		if (rc < 0 && !cowmem__engine.init_errno)
			return rc;
	}
	return -cowmem__engine.init_errno;
}
