/*
 * The operations that clone, copy, destroy and prefault regions: they
 * take the engine lock, and they start and stop the library's threads. The
 * fault server starts with the first operation that can make a fault it
 * must serve (a clone, a copy; cowmem_load() in snapshot.c), and the
 * server, the fence, the folder and the copier's helper stop with the
 * last region. Each takes the lock settled: a fold that a clone left to
 * the folder is finished first (folder.c).
 * Here, above regions.c and fold.c, so that nothing the server calls into
 * calls the server.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "engine.h"

int cowmem__clone(struct cowmem_region *src, struct cowmem_region **result)
{
	int rc = 0;

	if (!src)
		return -EINVAL;
	cowmem__lock_settled();
	struct cowmem_region *clone = NULL;
	if (!cowmem__region_usable(src))
		rc = -EINVAL;
	else if ((rc = cowmem__server_ensure_running()) == 0) {
		if (cowmem__folds)
			cowmem__folder_ensure_running();
		int error = 0;
		if (!(clone = cowmem__clone_locked(src, &error)))
			rc = -error;
	}
	pthread_mutex_unlock(&cowmem__engine.lock);
	*result = clone;
	return rc;
}

int cowmem__destroy(struct cowmem_region *r)
{
	struct cowmem__folder *folder = NULL;
	struct cowmem__fence *fence = NULL;
	pthread_t server;
	bool join = false;

	if (!r)
		return 0;
	cowmem__lock_settled_for_destroy(r);
	int rc = cowmem__region_drop_locked(r);
	if (rc < 0) {
		pthread_mutex_unlock(&cowmem__engine.lock);
		return rc;
	}
	/* The last region is gone: the library's threads have nothing to do. */
	if (cowmem__region_count() == 0) {
		join = cowmem__server_stop_library_thread(&server);
		fence = cowmem__fence_close();
		folder = cowmem__folder_close();
		cowmem__copier_quit();
	}
	pthread_mutex_unlock(&cowmem__engine.lock);
	munmap(r->data, r->size); /* an orphan's: its PROT_NONE reservation */
	free(r);
	if (join)
		cowmem__server_join(server);
	cowmem__fence_join(fence);
	cowmem__folder_join(folder);
	return 0;
}

int cowmem__copy(struct cowmem_region *dst, struct cowmem_region *src)
{
	struct cowmem__overlay *overlay;
	uint64_t gen;
	int rc = 0;

	cowmem__lock_settled();
	if (!cowmem__region_usable(dst) || !cowmem__region_usable(src) || dst->size != src->size)
		rc = -EINVAL;
	else if (dst != src && (rc = cowmem__server_ensure_running()) < 0)
		;
	else if (dst != src && (rc = cowmem__capture(src, &gen, &overlay)) == 0)
		rc = cowmem__set_view(dst, src->layer, gen, overlay);
	pthread_mutex_unlock(&cowmem__engine.lock);
	return rc;
}

/* Faults the pages of [offset, offset + length) of the region at data in
 * from user mode, for reading or for writing (cowmem__touch_for_write). */
static void touch_pages(char *data, size_t offset, size_t length, bool for_write)
{
	size_t first = offset / cowmem__engine.page_size;
	size_t end = (offset + length + cowmem__engine.page_size - 1) / cowmem__engine.page_size;

	for (size_t page = first; page < end; page++) {
		char *p = data + page * cowmem__engine.page_size;
		if (for_write)
			cowmem__touch_for_write(p);
		else
			(void)*(volatile char *)p;
	}
}

int cowmem__prefault(struct cowmem_region *r, size_t offset, size_t length, bool for_write)
{
	/* Settled: a clone's fold still under way would take layer pages
	 * from the family's readers after the touches below, and a system
	 * call on the userfaultfd-user backend would then meet them unmapped
	 * (EFAULT, a short transfer). */
	cowmem__lock_settled();
	bool live = cowmem__region_usable(r);
	size_t size = live ? r->size : 0;
	char *data = live ? r->data : NULL;
	pthread_mutex_unlock(&cowmem__engine.lock);
	if (!live || offset > size || length > size - offset)
		return -EINVAL;
	if (length > 0)
		touch_pages(data, offset, length, for_write);
	return 0;
}
