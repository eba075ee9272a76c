/*
 * Engine v2's public operations that clone, copy and destroy regions: they
 * take the engine lock, and they start and stop the library's threads. The
 * fault server starts with the first operation that can make a fault it
 * must serve (a clone, a copy; cowmem_load() in snapshot2.c), and the
 * server, the fence, the folder and the copier's helper stop with the
 * last region. Each takes the lock settled: a fold that a clone left to
 * the folder is finished first (folder.c).
 * Here, above regions.c and fold.c, so that nothing the server calls into
 * calls the server.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "v2.h"

struct cowmem__region *cowmem__v2_clone(struct cowmem__region *src)
{
	int error = 0;

	if (!src) {
		errno = EINVAL;
		return NULL;
	}
	cowmem__lock_settled();
	struct cowmem__region *clone = NULL;
	if (!cowmem__v2_usable(src))
		error = EINVAL;
	else if (cowmem__server_ensure_running() < 0)
		error = errno;
	else {
		if (cowmem__v2_folds)
			cowmem__folder_ensure_running();
		clone = cowmem__clone_locked(src, &error);
	}
	pthread_mutex_unlock(&cowmem__engine.lock);
	if (!clone)
		errno = error;
	return clone;
}

int cowmem__v2_destroy(struct cowmem__region *r)
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
		errno = -rc;
		return -1;
	}
	/* The last region is gone: the library's threads have nothing to do. */
	if (cowmem__v2_region_count() == 0) {
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

int cowmem__v2_copy(struct cowmem__region *dst, struct cowmem__region *src)
{
	struct cowmem__overlay *overlay;
	uint64_t gen;
	int rc = 0;

	cowmem__lock_settled();
	if (!cowmem__v2_usable(dst) || !cowmem__v2_usable(src) || dst->size != src->size)
		rc = -EINVAL;
	else if (dst != src && cowmem__server_ensure_running() < 0)
		rc = -errno;
	else if (dst != src && (rc = cowmem__capture(src, &gen, &overlay)) == 0)
		rc = cowmem__set_view(dst, src->layer, gen, overlay);
	pthread_mutex_unlock(&cowmem__engine.lock);
	if (rc < 0) {
		errno = -rc;
		return -1;
	}
	return 0;
}
