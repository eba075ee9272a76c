/*
 * The public entry points of cowmem.h that work on regions: each starts
 * the library on first use, calls the engine, and sets errno, here and
 * nowhere else, from the negative errno the engine returns. A call that
 * succeeds leaves errno as it found it, whatever the system calls on the
 * way set it to.
 */
#include <errno.h>

#include "engine.h"

/* The call's status: on failure -1, with errno the engine's answer (or
 * the library's start's); on success 0, with errno back to `saved`. */
static int finish(int rc, int saved)
{
	if (rc < 0) {
		errno = -rc;
		return -1;
	}
	errno = saved;
	return 0;
}

cowmem_region *cowmem_create(size_t size)
{
	struct cowmem_region *r = NULL;
	int saved = errno, rc = cowmem__engine_init();

	if (rc == 0)
		rc = cowmem__create(size, &r);
	finish(rc, saved);
	return r;
}

cowmem_region *cowmem_clone(cowmem_region *src)
{
	struct cowmem_region *clone = NULL;
	int saved = errno, rc = cowmem__engine_init();

	if (rc == 0)
		rc = cowmem__clone(src, &clone);
	finish(rc, saved);
	return clone;
}

void *cowmem_data(const cowmem_region *r)
{
	if (!r) {
		errno = EINVAL;
		return NULL;
	}
	return r->data;
}

size_t cowmem_size(const cowmem_region *r)
{
	if (!r) {
		errno = EINVAL;
		return 0;
	}
	return r->size;
}

int cowmem_destroy(cowmem_region *r)
{
	int saved = errno, rc = cowmem__destroy(r);

	return finish(rc, saved);
}

int cowmem_prefault(cowmem_region *r, size_t offset, size_t length, int for_write)
{
	int saved = errno, rc = cowmem__engine_init();

	if (rc == 0)
		rc = cowmem__prefault(r, offset, length, for_write != 0);
	return finish(rc, saved);
}

ssize_t cowmem_dirty_pages(const cowmem_region *r, size_t *pages, size_t cap)
{
	size_t count = 0;
	int saved = errno, rc = cowmem__engine_init();

	if (rc == 0)
		rc = cowmem__dirty_pages(r, pages, cap, &count);
	return finish(rc, saved) < 0 ? -1 : (ssize_t)count;
}

int cowmem_reset(cowmem_region *r)
{
	int saved = errno, rc = cowmem__engine_init();

	if (rc == 0)
		rc = cowmem__reset(r);
	return finish(rc, saved);
}

int cowmem_stats(const cowmem_region *r, struct cowmem_stats *stats)
{
	int saved = errno, rc = cowmem__engine_init();

	if (rc == 0)
		rc = cowmem__stats(r, stats);
	return finish(rc, saved);
}

int cowmem_copy(cowmem_region *dst, cowmem_region *src)
{
	int saved = errno, rc = cowmem__engine_init();

	if (rc == 0)
		rc = cowmem__copy(dst, src);
	return finish(rc, saved);
}

int cowmem_save(const cowmem_region *r, int fd)
{
	int saved = errno, rc = cowmem__engine_init();

	if (rc == 0)
		rc = cowmem__save(r, fd);
	return finish(rc, saved);
}

cowmem_region *cowmem_load(int fd)
{
	struct cowmem_region *r = NULL;
	int saved = errno, rc = cowmem__engine_init();

	if (rc == 0)
		rc = cowmem__load(fd, &r);
	finish(rc, saved);
	return r;
}
