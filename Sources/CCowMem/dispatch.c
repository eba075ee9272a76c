/*
 * The public functions that differ between the engines, while the first
 * engine still runs where engine v2 cannot: v2 wherever the kernel has what
 * it needs (userfaultfd with MINOR faults on shmem, MREMAP_DONTUNMAP and
 * /proc/self/pagemap), the first engine elsewhere (no userfaultfd: the memfd
 * backend) and when COWMEM_ENGINE=v1 asks for it. A handle belongs to the
 * engine that made it; the choice is made once, at the library's first use.
 * Delete this file with the first engine.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "v2.h"

cowmem_region *cowmem__v1_create(size_t size);
cowmem_region *cowmem__v1_clone(cowmem_region *src);
void *cowmem__v1_data(const cowmem_region *r);
size_t cowmem__v1_size(const cowmem_region *r);
int cowmem__v1_destroy(cowmem_region *r);
ssize_t cowmem__v1_dirty_pages(const cowmem_region *r, size_t *pages, size_t cap);
int cowmem__v1_reset(cowmem_region *r);
int cowmem__v1_stats(const cowmem_region *r, struct cowmem_stats *stats);
int cowmem__v1_save(const cowmem_region *r, int fd);
cowmem_region *cowmem__v1_load(int fd);

cowmem_region *cowmem_create(size_t size)
{
	if (cowmem__engine_init() < 0)
		return NULL;
	if (cowmem__v2)
		return (cowmem_region *)cowmem__v2_create(size);
	return cowmem__v1_create(size);
}

static int v1_destroy(cowmem_region *r)
{
	pthread_t server;

	if (cowmem__v1_destroy(r) < 0)
		return -1;
	pthread_mutex_lock(&cowmem__engine.lock);
	bool join = cowmem__engine.region_count == 0 && cowmem__server_stop_library_thread(&server);
	pthread_mutex_unlock(&cowmem__engine.lock);
	if (join)
		cowmem__server_join(server);
	return 0;
}

/* The first engine's regions need the fault server from their first clone
 * (or load, snapshot.c) on, since clones wait for versions in it, until
 * the last region is gone. engine.c never starts or stops it: the server
 * calls into the engine, and calls go one way. A source that is live
 * keeps the region count above zero, so no destroy stops the server
 * between the start here and the clone; the check after it covers a
 * program that destroys the source meanwhile. */
static cowmem_region *v1_clone(cowmem_region *src)
{
	pthread_mutex_lock(&cowmem__engine.lock);
	int rc = src && cowmem__v1_region_usable(src) ? cowmem__server_ensure_running() : 0;
	pthread_mutex_unlock(&cowmem__engine.lock);
	cowmem_region *clone = rc < 0 ? NULL : cowmem__v1_clone(src);
	if (!clone)
		return NULL;
	pthread_mutex_lock(&cowmem__engine.lock);
	rc = cowmem__server_ensure_running();
	pthread_mutex_unlock(&cowmem__engine.lock);
	if (rc < 0) {
		int error = errno;
		(void)v1_destroy(clone);
		errno = error;
		return NULL;
	}
	return clone;
}

cowmem_region *cowmem_clone(cowmem_region *src)
{
	if (cowmem__engine_init() < 0)
		return NULL;
	if (cowmem__v2)
		return (cowmem_region *)cowmem__v2_clone((struct cowmem__region *)src);
	return v1_clone(src);
}

void *cowmem_data(const cowmem_region *r)
{
	if (r && cowmem__v2)
		return ((const struct cowmem__region *)r)->data;
	return cowmem__v1_data(r);
}

size_t cowmem_size(const cowmem_region *r)
{
	if (r && cowmem__v2)
		return ((const struct cowmem__region *)r)->size;
	return cowmem__v1_size(r);
}

int cowmem_destroy(cowmem_region *r)
{
	if (cowmem__v2)
		return cowmem__v2_destroy((struct cowmem__region *)r);
	return v1_destroy(r);
}

/* Faults the pages of [offset, offset + length) of the region at data in
 * from user mode, for reading or for writing (cowmem__touch_for_write). */
static void touch_pages(char *data, size_t offset, size_t length, int for_write)
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

int cowmem_prefault(cowmem_region *r, size_t offset, size_t length, int for_write)
{
	if (cowmem__engine_init() < 0)
		return -1;
	/* Settled: a clone's fold still under way would take layer pages
	 * from the family's readers after the touches below, and a system
	 * call on the userfaultfd-user backend would then meet them unmapped
	 * (EFAULT, a short transfer). */
	cowmem__lock_settled();
	bool live = cowmem__v2 ? cowmem__v2_usable((struct cowmem__region *)r)
			       : cowmem__v1_region_usable(r);
	size_t size = live ? cowmem_size(r) : 0;
	char *data = live ? cowmem_data(r) : NULL;
	pthread_mutex_unlock(&cowmem__engine.lock);
	if (!live || offset > size || length > size - offset) {
		errno = EINVAL;
		return -1;
	}
	if (length > 0)
		touch_pages(data, offset, length, for_write);
	return 0;
}

ssize_t cowmem_dirty_pages(const cowmem_region *r, size_t *pages, size_t cap)
{
	if (cowmem__engine_init() < 0)
		return -1;
	if (cowmem__v2)
		return cowmem__v2_dirty_pages((const struct cowmem__region *)r, pages, cap);
	return cowmem__v1_dirty_pages(r, pages, cap);
}

int cowmem_reset(cowmem_region *r)
{
	if (cowmem__engine_init() < 0)
		return -1;
	if (cowmem__v2)
		return cowmem__v2_reset((struct cowmem__region *)r);
	return cowmem__v1_reset(r);
}

int cowmem_stats(const cowmem_region *r, struct cowmem_stats *stats)
{
	if (cowmem__engine_init() < 0)
		return -1;
	if (cowmem__v2)
		return cowmem__v2_stats((const struct cowmem__region *)r, stats);
	return cowmem__v1_stats(r, stats);
}

int cowmem_save(const cowmem_region *r, int fd)
{
	if (cowmem__engine_init() < 0)
		return -1;
	if (cowmem__v2)
		return cowmem__v2_save((const struct cowmem__region *)r, fd);
	return cowmem__v1_save(r, fd);
}

/* The first engine has nothing to share a copy's pages through: copy the
 * bytes (outside the lock: touching region memory may need the server). */
static int v1_copy(cowmem_region *dst, cowmem_region *src)
{
	pthread_mutex_lock(&cowmem__engine.lock);
	bool valid = cowmem__v1_region_usable(dst) && cowmem__v1_region_usable(src) &&
		     cowmem__v1_size(dst) == cowmem__v1_size(src);
	pthread_mutex_unlock(&cowmem__engine.lock);
	if (!valid) {
		errno = EINVAL;
		return -1;
	}
	if (dst != src)
		memmove(cowmem__v1_data(dst), cowmem__v1_data(src), cowmem__v1_size(src));
	return 0;
}

int cowmem_copy(cowmem_region *dst, cowmem_region *src)
{
	if (cowmem__engine_init() < 0)
		return -1;
	if (cowmem__v2)
		return cowmem__v2_copy((struct cowmem__region *)dst, (struct cowmem__region *)src);
	return v1_copy(dst, src);
}

cowmem_region *cowmem_load(int fd)
{
	if (cowmem__engine_init() < 0)
		return NULL;
	if (cowmem__v2)
		return (cowmem_region *)cowmem__v2_load(fd);
	return cowmem__v1_load(fd);
}
