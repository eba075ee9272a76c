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

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define COWMEM_API __attribute__((visibility("default")))
#else
#define COWMEM_API
#endif

#define COWMEM_VERSION_MAJOR 0
#define COWMEM_VERSION_MINOR 1
#define COWMEM_VERSION_PATCH 0

/** An opaque copy-on-write region. */
typedef struct cowmem_region cowmem_region;

/**
 * Creates a zero-filled region of at least `size` bytes (rounded up to the
 * page size). Returns NULL and sets errno on failure:
 * EINVAL (size is 0), ENOMEM or EOVERFLOW (size cannot be mapped),
 * EMFILE/ENFILE (no file descriptor left).
 */
COWMEM_API cowmem_region *cowmem_create(size_t size);

/**
 * Returns a new region whose content equals `src`'s at the moment of the
 * call. No page data is copied by the call; pages are shared until either
 * side writes them. Returns NULL and sets errno on failure:
 * EINVAL (src is NULL), ENOMEM, EMFILE.
 */
COWMEM_API cowmem_region *cowmem_clone(cowmem_region *src);

/** The region's first byte: page-aligned, stable until cowmem_destroy().
 *  NULL (errno EINVAL) if r is NULL. */
COWMEM_API void *cowmem_data(const cowmem_region *r);

/** The region's size in bytes, a multiple of the page size.
 *  0 (errno EINVAL) if r is NULL. */
COWMEM_API size_t cowmem_size(const cowmem_region *r);

/**
 * Destroys `r` and unmaps its memory. Every other region keeps its content.
 * cowmem_destroy(NULL) does nothing and returns 0. Returns -1 and sets errno
 * if the region cannot be released (the region stays valid then).
 */
COWMEM_API int cowmem_destroy(cowmem_region *r);

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
 */
COWMEM_API int cowmem_server_claim(void);

/**
 * Resolves every fault that is waiting, without blocking. Returns the
 * number of fault messages handled (0 if none), or -1 and sets errno.
 * Only the claiming host calls it.
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
 */
COWMEM_API const char *cowmem_backend(void);

/**
 * The optional features in effect, comma-separated (for example
 * "minor,wp,poison,dontunmap,zero-pfn"); COWMEM_DISABLE=name,... masks
 * them. NULL and errno as for cowmem_backend().
 */
COWMEM_API const char *cowmem_features(void);

/**
 * Faults in the pages of [offset, offset + length) from user mode, for
 * reading (for_write == 0) or writing, without changing their content.
 * Only the "userfaultfd-user" backend needs it: there, a system call that
 * meets an unfilled page fails with EFAULT instead of being served, so
 * prefault a buffer before passing it to read(2), write(2) and the like.
 * Returns 0, or -1 with errno EINVAL (NULL region or range outside it).
 */
COWMEM_API int cowmem_prefault(cowmem_region *r, size_t offset, size_t length,
			       int for_write);

/** The page size the library works in, in bytes. */
COWMEM_API size_t cowmem_page_size(void);

#ifdef __cplusplus
}
#endif

#endif /* COWMEM_H */
