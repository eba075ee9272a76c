/*
 * Private declarations shared by the engine's files. Nothing here is part of
 * the public ABI: kernel structures and constants stay out of cowmem.h.
 */
#ifndef COWMEM_INTERNAL_H
#define COWMEM_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <linux/userfaultfd.h>

#include "cowmem.h"

/* ---- Kernel drift ------------------------------------------------------
 * The system headers may be older than the running kernel (6.1 headers on a
 * 6.18 kernel is a real combination). Define what newer kernels offer here;
 * UFFDIO_API tells at run time what the kernel actually grants. */
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM /* 5.19+: write-protect on shmem VMAs */
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED     /* 6.4+ */
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_POISON             /* 6.6+: UFFDIO_POISON */
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC           /* 6.7+ */
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_FEATURE_MOVE               /* 6.8+ */
#define UFFD_FEATURE_MOVE (1 << 16)
#endif
#ifndef UFFD_USER_MODE_ONLY             /* 5.11+ */
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
struct uffdio_poison {
	struct uffdio_range range;
#define UFFDIO_POISON_MODE_DONTWAKE ((__u64)1 << 0)
	__u64 mode;
	__s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif
#ifndef MREMAP_DONTUNMAP /* 5.7+ (anonymous), 5.13+ (shared and file mappings) */
#define MREMAP_DONTUNMAP 4
#endif
#ifndef PAGEMAP_SCAN /* 6.7+: <linux/fs.h> */
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
struct page_region {
	__u64 start;
	__u64 end;
	__u64 categories;
};
struct pm_scan_arg {
	__u64 size;
	__u64 flags;
	__u64 start;
	__u64 end;
	__u64 walk_end;
	__u64 vec;
	__u64 vec_len;
	__u64 max_pages;
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};
#endif
#ifndef MFD_NOEXEC_SEAL /* 6.3+ */
#define MFD_NOEXEC_SEAL 0x0008U
#endif

/* ---- One wrapper per raw system call (syscalls.c) ---------------------- */
int cowmem__sys_userfaultfd(int flags);
int cowmem__sys_memfd_create(const char *name, unsigned int flags);
int cowmem__memfd_for_pages(void); /* sealable, not executable where possible */
int cowmem__pidfd_for_madvise(void); /* -1: madvise(2) one range at a time */
void *cowmem__sys_mremap(void *old_address, size_t old_size, size_t new_size,
			 int flags, void *new_address);
struct iovec;
int cowmem__sys_pidfd_open(pid_t pid, unsigned int flags);
ssize_t cowmem__sys_process_madvise(int pidfd, const struct iovec *iov, size_t count, int advice,
				    unsigned int flags);
int cowmem__pread_all(int fd, void *buffer, size_t length, off_t offset); /* 0 or -errno */
int cowmem__pwrite_all(int fd, const void *buffer, size_t length, off_t offset); /* 0 or -errno */
/* The pages of `pages` that are not all zeros, each at its place from
 * `offset`; zero pages are skipped, so an empty file keeps holes there. */
int cowmem__pwrite_nonzero_pages(int fd, const char *pages, size_t count, off_t offset);

/* A write access to the byte at p that changes nothing: x86's lock cmpxchg
 * writes even when the comparison fails, so a page not mapped writable
 * faults once, for writing, and a concurrent store is never lost. On a
 * volatile object no compiler may drop or weaken it (clang lowers an
 * idempotent atomic add to a plain load). */
static inline void cowmem__touch_for_write(void *p)
{
	char expected = 0;
	(void)__atomic_compare_exchange_n((volatile char *)p, &expected, 0, false,
					  __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

/* "cowmem: cannot provide page P of region D: strerror(error)" on stderr,
 * with no allocation and no stdio (fail_message.c); errno is kept. */
void cowmem__say_cannot_provide(size_t page, const void *data, int error);
/* Once per serving thread, before it serves: what saying so needs (the
 * buffer, some stack) is in memory already, so that a full memory cgroup
 * cannot stop the message and, with it, the SIGBUS. */
void cowmem__prepare_to_fail(void);

/* userfaultfd ioctls: 0 on success, or a negative errno. *done (where present) gets
 * the number of bytes the kernel handled before an error. */
int cowmem__uffd_api(int uffd, uint64_t want, uint64_t *granted);
int cowmem__uffd_register(int uffd, void *addr, size_t len, uint64_t modes);
int cowmem__uffd_unregister(int uffd, void *addr, size_t len); /* wakes the range's waiters */
int cowmem__uffd_copy(int uffd, void *dst, const void *src, size_t len, uint64_t mode,
		      size_t *done);
int cowmem__uffd_zeropage(int uffd, void *dst, size_t len, size_t *done);
int cowmem__uffd_continue(int uffd, void *dst, size_t len, size_t *done);
int cowmem__uffd_wake(int uffd, void *addr, size_t len);
int cowmem__uffd_poison(int uffd, void *addr, size_t len);

/* ---- page_map.c: page index -> pointer, open addressing ---------------- */
struct page_map {
	size_t *keys;   /* page index + 1; 0 marks an empty slot */
	void **values;
	size_t capacity; /* a power of two, or 0 */
	size_t count;
};
void *cowmem__page_map_get(const struct page_map *m, size_t page);
void cowmem__page_map_prefetch(const struct page_map *m, size_t page); /* a get to come */
int cowmem__page_map_put(struct page_map *m, size_t page, void *value); /* 0 or -ENOMEM */
void *cowmem__page_map_remove(struct page_map *m, size_t page);
void cowmem__page_map_replace(struct page_map *m, size_t page, void *value); /* an existing key */
void cowmem__page_map_free(struct page_map *m);

enum backend {
	BACKEND_USERFAULTFD,      /* kernel-mode faults */
	BACKEND_USERFAULTFD_USER, /* UFFD_USER_MODE_ONLY */
	BACKEND_MEMFD,            /* no userfaultfd */
	BACKEND_COUNT
};

/* Optional features in effect (engine.features); COWMEM_DISABLE masks them. */
enum {
	FEATURE_MINOR = 1 << 0,          /* MINOR faults on shmem: folds */
	FEATURE_WP = 1 << 1,             /* write-protect on shmem VMAs: probed, reported */
	FEATURE_POISON = 1 << 2,         /* UFFDIO_POISON: SIGBUS for a lost page */
	FEATURE_WP_UNPOPULATED = 1 << 3, /* offered by the kernel; not needed */
	FEATURE_WP_ASYNC = 1 << 4,       /* offered by the kernel; not needed */
	FEATURE_MOVE = 1 << 5,           /* offered by the kernel; not needed */
	FEATURE_DONTUNMAP = 1 << 6,      /* MREMAP_DONTUNMAP: microsecond freeze */
	FEATURE_ZERO_PFN = 1 << 7,       /* pagemap PFNs tell the zero page apart */
	FEATURE_PAGEMAP_SCAN = 1 << 8,   /* PAGEMAP_SCAN: find written pages fast */
	FEATURE_USER_MODE = 1 << 9,      /* UFFD_USER_MODE_ONLY (5.11+); only masked */
	FEATURE_EVENT_REMAP = 1 << 10,   /* offered; the fold fence uses it */
	/* Fallbacks made forceable, never listed: on unless masked. */
	FEATURE_NOEXEC_SEAL = 1 << 11,     /* MFD_NOEXEC_SEAL (6.3+) */
	FEATURE_PROCESS_MADVISE = 1 << 12, /* process_madvise(2) batches (5.10+) */
	FEATURE_DEV_USERFAULTFD = 1 << 13, /* /dev/userfaultfd when the call is refused */
	FEATURE_KEEP_MAPPINGS = 1 << 14, /* a fold gives the head its page tables back */
	FEATURE_BACKGROUND_FOLD = 1 << 15, /* a clone returns before its fold's copies */
	FEATURE_EARLY_COPIES = 1 << 16, /* old versions copied out between clones */
	FEATURE_REBASE = 1 << 17, /* no folds: a large overlay becomes a new layer */
};

/* Global engine state; every field is guarded by `lock` unless noted. */
struct engine {
	pthread_mutex_t lock;
	size_t page_size;      /* constant after init */
	enum backend backend;  /* constant after init, like the next five */
	int uffd;              /* -1 with the memfd backend */
	uint64_t offered;      /* UFFD_FEATURE_* the kernel offers */
	uint64_t granted;      /* UFFD_FEATURE_* UFFDIO_API granted */
	unsigned features;     /* FEATURE_* in effect */
	int self_mem;          /* /proc/self/mem: reads that fail, never block */
	int pagemap;           /* /proc/self/pagemap */
	uint64_t zero_pfn;     /* PFN of the shared zero page, 0 if unknown */
	enum { SERVER_NONE, SERVER_LIBRARY, SERVER_HOSTED } server;
	int init_errno;
};
extern struct engine cowmem__engine;
extern const char *cowmem__zero_page; /* page_size zero bytes */

/* discard.c: dropping runs of pages in batches */

struct cowmem__discard;
/* Runs are page indices from base; NULL: out of memory. */
struct cowmem__discard *cowmem__discard_begin(char *base);
int cowmem__discard_run(size_t first, size_t end, void *ctx); /* a cowmem__run_fn */
int cowmem__discard_end(struct cowmem__discard *d);           /* flushes and frees */
void cowmem__discard_free(struct cowmem__discard *d);         /* frees only */

static inline bool cowmem__page_is_zero(const void *page)
{
	return memcmp(page, cowmem__zero_page, cowmem__engine.page_size) == 0;
}

int cowmem__engine_init(void); /* once; 0 or a negative errno */
void cowmem__backend_note_folds(bool folds); /* cowmem_features() says "engine-v2" (and "folds") */
const char *cowmem__backend_name(void);  /* what cowmem_backend() returns */
const char *cowmem__features_text(void); /* what cowmem_features() returns */
uint64_t cowmem__features_mask(void);    /* COWMEM_FEATURE_* in effect */
struct uffd_msg;
void cowmem__resolve(const struct uffd_msg *msg, uint64_t read_at_ns);
int cowmem__backend_select(void); /* backend.c, from cowmem__engine_init(): 0 or -errno */
int cowmem__backend_reopen(void); /* in a forked child: a userfaultfd of its own */
/* Another userfaultfd of the backend in use, with these features; a
 * negative errno if it cannot be had. */
int cowmem__backend_open_another(uint64_t features);

struct run_list {
	size_t (*runs)[2];
	size_t count, capacity;
};
/* Appends [first, end) (page_map.c): 0 or -ENOMEM. */
int cowmem__run_list_add(struct run_list *list, size_t first, size_t end);

/* The snapshot file format (snapshot_file.c): 0 or a negative errno. */
int cowmem__snapshot_open(int fd, uint64_t *size, uint64_t *data_offset);
int cowmem__snapshot_begin(int fd);
int cowmem__snapshot_finish(int fd, size_t size, off_t data_offset);

/* ---- server.c ----------------------------------------------------------- */
/* Asks the library's server thread to stop (lock held; region_count is 0);
 * returns the thread to join after unlocking, through *thread. */
bool cowmem__server_stop_library_thread(pthread_t *thread);
void cowmem__server_join(pthread_t thread);
void cowmem__server_fork_child(void); /* closes the inherited stop descriptor */
/* Starts a pthread with every signal blocked (signals belong to the
 * application's threads): joinable into *joinable, or detached if that is
 * NULL. 0 or a negative errno. */
int cowmem__engine_start_thread(void *(*fn)(void *), void *arg, pthread_t *joinable);
int cowmem__server_ensure_running(void); /* lock held; 0 or a negative errno */
int cowmem__server_handle_all(void);           /* reads and resolves queued faults */

/* ---- janitor.c: unmaps retired page tables off the caller's path -------- */
void cowmem__janitor_unmap(void *addr, size_t len);
void cowmem__janitor_unmap_sparse(void *addr, size_t len); /* few pages mapped: no steps */
/* Around many page-table changes in a row (write-protecting, zapping): the
 * janitor sleeps meanwhile, so their TLB flushes interrupt no other CPU. */
void cowmem__janitor_pause(void);
void cowmem__janitor_resume(void);
bool cowmem__janitor_busy(void); /* ranges left to tear down */
void cowmem__janitor_fork_prepare(void);
void cowmem__janitor_fork_parent(void);
void cowmem__janitor_fork_child(void); /* forgets work: retired ranges are not inherited */
/* copier.c: its helper thread is not inherited either. */
void cowmem__copier_fork_prepare(void);
void cowmem__copier_fork_parent(void);
void cowmem__copier_fork_child(void);

#endif /* COWMEM_INTERNAL_H */
