/*
 * cowmem.h - copy-on-write memory regions for Linux.
 *
 * A region is a page-aligned, fixed-size block of ordinary read/write memory
 * at a stable address. cowmem_clone() returns a new region with the same
 * content at once; only pages that later change are copied, and the source
 * and every clone stay isolated snapshots of each other.
 *
 * Every function is thread-safe. Functions that can fail return NULL or -1
 * and set errno; on failure nothing has changed.
 */
#ifndef COWMEM_H
#define COWMEM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define COWMEM_API __attribute__((visibility("default")))
#else
#define COWMEM_API
#endif

#define COWMEM_VERSION_MAJOR 0
#define COWMEM_VERSION_MINOR 3
#define COWMEM_VERSION_PATCH 0
/* The three in one number, as cowmem_version() returns it. */
#define COWMEM_VERSION                                                      \
	((COWMEM_VERSION_MAJOR << 16) | (COWMEM_VERSION_MINOR << 8) | COWMEM_VERSION_PATCH)

/** An opaque copy-on-write region. */
typedef struct cowmem_region cowmem_region;

/**
 * Creates a zero-filled region of at least `size` bytes (rounded up to the
 * page size). Returns NULL and sets errno on failure:
 * EINVAL (size is 0), ENOMEM or EOVERFLOW (size cannot be mapped),
 * EMFILE/ENFILE (no file descriptor left).
 * Errors: EINVAL, EMFILE, ENFILE, ENOMEM, EOVERFLOW, EPERM.
 */
COWMEM_API cowmem_region *cowmem_create(size_t size);

/**
 * Returns a new region whose content equals `src`'s at the moment of the
 * call. No page data is copied by the call; pages are shared until either
 * side writes them. Returns NULL and sets errno on failure:
 * EINVAL (src is NULL), ENOMEM, EMFILE.
 * Errors: EAGAIN, EINVAL, EMFILE, ENOMEM.
 */
COWMEM_API cowmem_region *cowmem_clone(cowmem_region *src);

/** The region's first byte: page-aligned, stable until cowmem_destroy().
 *  NULL (errno EINVAL) if r is NULL.
 * Errors: EINVAL.
 */
COWMEM_API void *cowmem_data(const cowmem_region *r);

/** The region's size in bytes, a multiple of the page size.
 *  0 (errno EINVAL) if r is NULL.
 * Errors: EINVAL.
 */
COWMEM_API size_t cowmem_size(const cowmem_region *r);

/**
 * Destroys `r` and unmaps its memory. Every other region keeps its content.
 * cowmem_destroy(NULL) does nothing and returns 0. Returns -1 and sets errno
 * if the region cannot be released (the region stays valid then).
 * Errors: EINVAL, ENOMEM.
 */
COWMEM_API int cowmem_destroy(cowmem_region *r);

/* ---- Changes, roll back, snapshots on disk, statistics ------------------
 *
 * A region's *origin* is its content when it was made: all zeros for
 * cowmem_create(), the source's content at the moment of the call for
 * cowmem_clone(), the file's content for cowmem_load(). cowmem_reset()
 * brings a region back to its origin. Cloning a region does not change the
 * region's own origin.
 */

/**
 * Lists the pages of `r` that may differ from its origin: every page whose
 * content differs is listed, and only pages written since the region was
 * made or last reset (a page written back to its original bytes may or may
 * not be). Stores up to `cap` page indices (offset / cowmem_page_size()) in
 * ascending order into `pages` and returns how many pages there are, which
 * may be more than `cap`. Cost grows with the pages the region has mapped
 * (written, or read since it was made), not with its size: a region that
 * only wrote k pages costs O(k); one that read every page, about 11 ms per
 * GiB here (the kernel walks its page tables). Without /proc every page is
 * compared. Returns -1 and sets errno: EINVAL (r not a live region, or
 * pages NULL with cap > 0), ENOMEM.
 * Errors: EINVAL, ENOMEM.
 */
COWMEM_API ssize_t cowmem_dirty_pages(const cowmem_region *r, size_t *pages, size_t cap);

/**
 * Discards every change made to `r`: its content becomes its origin again,
 * at a cost that grows with the pages changed (and, like
 * cowmem_dirty_pages(), the pages mapped), not with the region's size.
 * The address stays the same. Clones of `r` keep their content. No other
 * thread may access `r` during the call. Returns 0, or -1 and sets errno:
 * EINVAL (r not a live region), ENOMEM, EMFILE. What can fail is taken
 * before anything changes, so a failure normally changes nothing; only
 * running out of memory while waiting again for the origin's page versions,
 * or a failed mmap(2), can stop a reset half way: r stays valid, its content
 * is unspecified until a later cowmem_reset() succeeds.
 * Errors: EINVAL, EMFILE, ENOMEM.
 */
COWMEM_API int cowmem_reset(cowmem_region *r);

/**
 * Writes `r`'s content as a CowMem snapshot to `fd`, from offset 0, and sets
 * the file's length. `fd` must be a regular file (or memfd) open for writing,
 * without O_APPEND. Pages that read as zero become holes, so a mostly empty
 * region makes a sparse file. Reading `r` for this allocates nothing in `r`.
 * Another thread writing `r` meanwhile gets a mix of old and new pages: save
 * a clone for a consistent snapshot. Returns 0, or -1 and sets errno:
 * EINVAL (r not a live region, or fd opened with O_APPEND), ESPIPE (fd not
 * seekable), and the errors of pwrite(2), ftruncate(2).
 * Errors: EBADF, EDQUOT, EFBIG, EINVAL, EIO, ENOSPC, ESPIPE.
 */
COWMEM_API int cowmem_save(const cowmem_region *r, int fd);

/**
 * Opens a snapshot written by cowmem_save() as a new region. Pages are read
 * from the file on first access (with the "memfd" backend, at once); writes
 * to the region or its clones never reach the file. The library keeps its
 * own duplicate of `fd`; the file must not change while the region or any
 * clone of it exists. Returns NULL and sets errno: EINVAL (not a CowMem
 * snapshot, or made with another page size), EBADF, ESPIPE (a pipe or
 * socket), ENOMEM, EMFILE, EIO, EAGAIN (the library's fault-server thread
 * could not be started).
 * Errors: EAGAIN, EBADF, EINVAL, EIO, EMFILE, ENOMEM, ESPIPE.
 */
COWMEM_API cowmem_region *cowmem_load(int fd);

/**
 * The copy-on-write memcpy: makes `dst`'s content equal to `src`'s at the
 * moment of the call, at `dst`'s address, and the two stay isolated
 * snapshots of each other afterwards, as a clone and its source do. Where
 * clones fold (cowmem_features() lists "folds") the cost grows with the
 * pages either region changed, not with the size; elsewhere `dst` also
 * copies in the pages `src` changed since their storage froze. `dst`'s origin does not change, so cowmem_reset() of `dst`
 * still goes back to it (and resetting is copying from the origin).
 * cowmem_copy(r, r) does nothing. No other thread may access `dst` during
 * the call; `src` may be written meanwhile as for cowmem_clone(). Returns 0,
 * or -1 and sets errno: EINVAL (a NULL or destroyed region, or the sizes
 * differ; nothing changes), ENOMEM, EAGAIN (the library's fault-server
 * thread could not be started; nothing changes).
 * Errors: EAGAIN, EINVAL, ENOMEM.
 */
COWMEM_API int cowmem_copy(cowmem_region *dst, cowmem_region *src);

/** Statistics of one region (cowmem_stats()). */
struct cowmem_stats {
	size_t pages;        /* size in pages */
	size_t resident;     /* pages mapped now, the shared zero page excluded */
	size_t shared;       /* of those, pages read from a layer it shares with
				its ancestors and clones (no memory of its own) */
	size_t written;      /* pages that may differ from the origin, as
				cowmem_dirty_pages() counts them */
	uint64_t faults;     /* faults the fault server resolved for it */
	uint64_t blocked_ns; /* time those faults kept threads waiting, from
				the server reading the fault to waking the
				thread (QEMU's "blocktime") */
	uint64_t reserved[4];
};

/**
 * Fills `*stats` for `r`. `resident` and `shared` are 0 without /proc.
 * Returns 0, or -1 and sets errno: EINVAL (r not a live region or stats
 * NULL), ENOMEM.
 * Errors: EINVAL, ENOMEM.
 */
COWMEM_API int cowmem_stats(const cowmem_region *r, struct cowmem_stats *stats);

/* ---- Hosting the fault server ------------------------------------------
 *
 * Pages of clones are filled on demand by a fault server. By default the
 * library starts one pthread of its own the first time it needs it. A host
 * that wants to own that thread (the Swift overlay does) calls
 * cowmem_server_claim() before creating any region, then calls
 * cowmem_server_handle() from its own thread whenever the returned file
 * descriptor is readable (poll(2) for POLLIN), for as long as the process
 * uses regions.
 */

/**
 * Claims fault serving for the caller. Returns a file descriptor to poll for
 * POLLIN, or -1 with errno EBUSY (the library's own server thread, or another
 * host, already serves faults) or another errno if the fault mechanism could
 * not be set up. The descriptor belongs to the library: do not close it.
 * Errors: EBUSY, EINVAL, ENOMEM, ENOTSUP, EPERM.
 */
COWMEM_API int cowmem_server_claim(void);

/**
 * Resolves every fault that is waiting, without blocking. Returns the
 * number of fault messages handled (0 if none), or -1 and sets errno.
 * Only the claiming host calls it.
 * Errors: ENOMEM, ENOTSUP.
 */
COWMEM_API int cowmem_server_handle(void);

/* ---- Backends --------------------------------------------------------- */

/**
 * The fault mechanism in use: "userfaultfd" (kernel-mode faults),
 * "userfaultfd-user" (user-mode-only faults; asked for by name only) or
 * "memfd" (no userfaultfd: clones copy the pages their source wrote).
 * COWMEM_BACKEND=auto|userfaultfd|userfaultfd-user|memfd forces one.
 * Returns NULL and sets errno if the library could not start (for example
 * an unknown COWMEM_BACKEND value: EINVAL).
 * Errors: EINVAL, ENOMEM, ENOSYS, ENOTSUP, EPERM.
 */
COWMEM_API const char *cowmem_backend(void);

/**
 * The optional features in effect, comma-separated (for example
 * "minor,wp,poison,dontunmap,zero-pfn,engine-v2,folds"; "engine-v2" is
 * always listed (the one engine), "folds" that a clone costs the pages
 * written since the previous clone of its source, not since its first);
 * COWMEM_DISABLE=name,... masks them. NULL and errno as for cowmem_backend().
 * Errors: EINVAL, ENOMEM, ENOSYS, ENOTSUP, EPERM.
 */
COWMEM_API const char *cowmem_features(void);

/* The bits of cowmem_feature_mask(): one per name cowmem_features() lists. */
#define COWMEM_FEATURE_MINOR (UINT64_C(1) << 0)        /* "minor" */
#define COWMEM_FEATURE_WP (UINT64_C(1) << 1)           /* "wp" */
#define COWMEM_FEATURE_POISON (UINT64_C(1) << 2)       /* "poison" */
#define COWMEM_FEATURE_DONTUNMAP (UINT64_C(1) << 3)    /* "dontunmap" */
#define COWMEM_FEATURE_ZERO_PFN (UINT64_C(1) << 4)     /* "zero-pfn" */
#define COWMEM_FEATURE_PAGEMAP_SCAN (UINT64_C(1) << 5) /* "pagemap-scan" */
#define COWMEM_FEATURE_DEVICE (UINT64_C(1) << 6)       /* "device" */
#define COWMEM_FEATURE_ENGINE_V2 (UINT64_C(1) << 7)    /* "engine-v2" */
#define COWMEM_FEATURE_FOLDS (UINT64_C(1) << 8)        /* "folds" */

/**
 * The features of cowmem_features() as COWMEM_FEATURE_* bits, into *mask,
 * so that a program tests a bit instead of comparing names. Returns 0, or
 * -1 and sets errno if the library could not start (*mask is then 0) or
 * mask is NULL.
 * Errors: EINVAL, ENOMEM, ENOSYS, ENOTSUP, EPERM.
 */
COWMEM_API int cowmem_feature_mask(uint64_t *mask);

/**
 * The version of the library as built, in the form of COWMEM_VERSION: a
 * program compares it with the header it was compiled with.
 * Errors: none (it cannot fail).
 */
COWMEM_API unsigned cowmem_version(void);

/**
 * Faults in the pages of [offset, offset + length) from user mode, for
 * reading (for_write == 0) or writing, without changing their content.
 * Only the "userfaultfd-user" backend needs it: there, a system call that
 * meets an unfilled page fails with EFAULT instead of being served, so
 * prefault a buffer before passing it to read(2), write(2) and the like.
 * Returns 0, or -1 with errno EINVAL (NULL region or range outside it).
 * Errors: EINVAL.
 */
COWMEM_API int cowmem_prefault(cowmem_region *r, size_t offset, size_t length,
			       int for_write);

/**
 * The page size the library works in, in bytes.
 * Errors: none (it cannot fail).
 */
COWMEM_API size_t cowmem_page_size(void);

#ifdef __cplusplus
}
#endif

#endif /* COWMEM_H */
