/*
 * The library's state and its initialisation, once, at the first call that
 * needs it: the page size, the descriptors every engine uses
 * (/proc/self/pagemap, /proc/self/mem, the userfaultfd the backend opens),
 * the zero page's PFN, the engine, and the fork() handlers.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "v2.h"

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
 * exclusive-mapping bit is used instead (is_delta() in engine.c). */
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
	cowmem__v1_fork_child();
	if (cowmem__v2) {
		cowmem__v2_fork_child();
		cowmem__folder_fork_child();
	}
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
	if (cowmem__backend_reopen() < 0)
		cowmem__engine.lazy = false;
	pthread_mutex_unlock(&cowmem__engine.lock);
}

/* ---- The engine --------------------------------------------------------- */

/* Which engine serves, chosen once after the backend: v2, whose clones
 * fold wherever the kernel has what that needs, unless COWMEM_ENGINE=v1
 * asks for the first engine. 0, or -1 with errno EINVAL for an unknown
 * COWMEM_ENGINE value. */
static int select_engine(void)
{
	const char *wanted = getenv("COWMEM_ENGINE");

	if (wanted && *wanted && strcmp(wanted, "v1") != 0 && strcmp(wanted, "v2") != 0 &&
	    strcmp(wanted, "auto") != 0) {
		fprintf(stderr, "cowmem: COWMEM_ENGINE=%s is not an engine (expected auto, v1 "
			"or v2)\n", wanted);
		errno = EINVAL;
		return -1;
	}
	if (wanted && strcmp(wanted, "v1") == 0)
		return 0;
	cowmem__v2_folds = cowmem__engine.uffd >= 0 && cowmem__engine.pagemap >= 0 &&
			   cowmem__engine.self_mem >= 0 &&
			   (cowmem__engine.features & FEATURE_MINOR) &&
			   (cowmem__engine.features & FEATURE_DONTUNMAP);
	cowmem__v2 = true;
	return 0;
}

/* ---- Initialisation proper ---------------------------------------------- */

/* Out of descriptors or memory: a later call may succeed, so the first one
 * fails and keeps nothing, instead of settling for less for good. */
static bool transient(int error)
{
	return error == EMFILE || error == ENFILE || error == ENOMEM;
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
	free(cowmem__engine.bounce);
	free((void *)cowmem__zero_page);
	cowmem__engine.bounce = NULL;
	cowmem__zero_page = NULL;
	cowmem__engine.features = 0;
	cowmem__engine.offered = cowmem__engine.granted = 0;
	cowmem__engine.zero_pfn = 0;
}

/* 0; or -1 with errno: for good (engine.init_errno set), or transient
 * (nothing kept, the next call tries again). */
static int init(void)
{
	long page_size = sysconf(_SC_PAGESIZE);

	cowmem__engine.page_size = page_size > 0 ? (size_t)page_size : 4096;
	cowmem__engine.bounce = aligned_alloc(cowmem__engine.page_size, cowmem__engine.page_size);
	cowmem__zero_page = aligned_alloc(cowmem__engine.page_size, cowmem__engine.page_size);
	if (!cowmem__engine.bounce || !cowmem__zero_page) {
		errno = ENOMEM;
		goto transient_failure;
	}
	memset((void *)cowmem__zero_page, 0, cowmem__engine.page_size);
	cowmem__engine.pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (cowmem__engine.pagemap < 0 && transient(errno))
		goto transient_failure;
	cowmem__engine.self_mem = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
	if (cowmem__engine.self_mem < 0 && transient(errno))
		goto transient_failure;
	if (cowmem__engine.pagemap >= 0)
		cowmem__engine.zero_pfn = find_zero_pfn();

	if (cowmem__backend_select() < 0) {
		if (transient(errno))
			goto transient_failure;
		cowmem__engine.init_errno = errno;
		return -1;
	}
	if (select_engine() < 0) {
		cowmem__engine.init_errno = errno;
		return -1;
	}
	if (cowmem__v2)
		cowmem__backend_note_engine_v2(cowmem__v2_folds);
	pthread_atfork(fork_prepare, fork_parent, fork_child);
	/* Lending a page version lazily needs MINOR faults (to stop the kernel
	 * mapping a stale base page), write-protection of the lender, a way to
	 * read the lender's page that fails instead of blocking, and pagemap. */
	cowmem__engine.lazy = cowmem__engine.uffd >= 0 && cowmem__engine.self_mem >= 0 &&
			      cowmem__engine.pagemap >= 0 &&
			      (cowmem__engine.features & FEATURE_MINOR) &&
			      (cowmem__engine.features & FEATURE_WP);
	return 0;

transient_failure:;
	int saved = errno;
	init_undo();
	errno = saved;
	return -1;
}

int cowmem__engine_init(void)
{
	static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
	static bool done;

	if (!__atomic_load_n(&done, __ATOMIC_ACQUIRE)) {
		pthread_mutex_lock(&init_lock);
		int saved = 0;
		if (!done) {
			if (init() == 0 || cowmem__engine.init_errno)
				__atomic_store_n(&done, true, __ATOMIC_RELEASE);
			else
				saved = errno;
		}
		pthread_mutex_unlock(&init_lock);
		if (saved) {
			errno = saved;
			return -1;
		}
	}
	if (cowmem__engine.init_errno) {
		errno = cowmem__engine.init_errno;
		return -1;
	}
	return 0;
}
