/*
 * What changed, and going back: cowmem_dirty_pages(), cowmem_reset() and
 * cowmem_stats().
 *
 * Nothing here tracks writes as they happen (that would put the fault
 * server on every first write). The page tables already know: a page a
 * private region wrote is an anonymous page in its mapping, which the
 * pagemap finds (PAGEMAP_SCAN walks only populated page tables). The few
 * private pages the library itself filled with an origin version (the
 * `filled` map) are compared with the origin before being listed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "v1_names.h"

struct page_list {
	size_t *pages;
	size_t count, capacity;
};

static int list_add(struct page_list *list, size_t page)
{
	if (list->count == list->capacity) {
		size_t capacity = list->capacity ? list->capacity * 2 : 256;
		void *grown = realloc(list->pages, capacity * sizeof *list->pages);
		if (!grown) {
			errno = ENOMEM;
			return -1;
		}
		list->pages = grown;
		list->capacity = capacity;
	}
	list->pages[list->count++] = page;
	return 0;
}

/* The pages of a layer's memfd that hold non-zero bytes: only its data
 * extents are read (a page read but never written is allocated, and zero). */
static int layer_nonzero_pages(const struct layer *layer, size_t pages, struct page_list *out)
{
	size_t page_size = cowmem__engine.page_size;
	char *buf = aligned_alloc(page_size, REGION_READ_MAX * page_size);
	off_t limit = (off_t)(pages * page_size), at = 0;
	int rc = 0;

	if (!buf) {
		errno = ENOMEM;
		return -1;
	}
	while (rc == 0 && at < limit) {
		off_t data = lseek(layer->fd, at, SEEK_DATA);
		if (data < 0 || data >= limit)
			break; /* ENXIO: nothing after `at` */
		off_t hole = lseek(layer->fd, data, SEEK_HOLE);
		if (hole < 0 || hole > limit)
			hole = limit;
		size_t first = (size_t)data / page_size, end = (size_t)(hole + (off_t)page_size - 1) / page_size;
		for (size_t page = first; rc == 0 && page < end; page += REGION_READ_MAX) {
			size_t count = end - page < REGION_READ_MAX ? end - page : REGION_READ_MAX;
			if (pread(layer->fd, buf, count * page_size, (off_t)(page * page_size)) !=
			    (ssize_t)(count * page_size)) {
				errno = errno ? errno : EIO;
				rc = -1;
				break;
			}
			for (size_t k = 0; k < count && rc == 0; k++)
				if (!cowmem__page_is_zero(buf + k * page_size))
					rc = list_add(out, page + k);
		}
		at = (off_t)(end * page_size);
	}
	free(buf);
	return rc;
}

/* The origin's content of one page (lock held, /proc needed). */
static int origin_read(const struct cowmem_region *r, size_t page, char *buf)
{
	switch (r->origin_kind) {
	case ORIGIN_ZERO:
		memset(buf, 0, cowmem__engine.page_size);
		return 0;
	case ORIGIN_BASE:
		return cowmem__v1_layer_read(r->base, page, 1, buf);
	case ORIGIN_REGION:
		break;
	}
	return cowmem__v1_region_read(r->origin, page, 1, buf);
}

struct dirty_context {
	struct page_list *list;
	char *theirs; /* one page: the origin's */
};

/* A run of r's own pages: listed, except filled ones still equal to the
 * origin (read, never written). */
static int dirty_run(struct cowmem_region *r, size_t first, size_t end, void *ctx)
{
	struct dirty_context *c = ctx;

	for (size_t page = first; page < end; page++) {
		if (cowmem__page_map_get(&r->filled, page)) {
			/* The origin first: reading it may use the bounce page. */
			if (origin_read(r, page, c->theirs) < 0 || cowmem__v1_read_lender_page(r,
											       page) < 0)
				return -1;
			if (memcmp(cowmem__engine.bounce, c->theirs, cowmem__engine.page_size) == 0)
				continue;
		}
		if (list_add(c->list, page) < 0)
			return -1;
	}
	return 0;
}

/* Both lists ascending; the result is their union, ascending. */
static int merge(struct page_list *a, const struct page_list *b)
{
	struct page_list out = { 0 };
	size_t i = 0, j = 0;

	while (i < a->count || j < b->count) {
		size_t next;
		if (j == b->count || (i < a->count && a->pages[i] < b->pages[j]))
			next = a->pages[i++];
		else if (i == a->count || b->pages[j] < a->pages[i])
			next = b->pages[j++];
		else
			next = (i++, b->pages[j++]);
		if (list_add(&out, next) < 0) {
			free(out.pages);
			return -1;
		}
	}
	free(a->pages);
	*a = out;
	return 0;
}

/* Lock held; needs pagemap unless r is exclusive. */
static int dirty_collect(struct cowmem_region *r, struct page_list *list)
{
	if (r->mode == REGION_EXCLUSIVE)
		return layer_nonzero_pages(r->base, r->pages, list);

	struct dirty_context c = { .list = list };
	int rc = -1;
	c.theirs = malloc(cowmem__engine.page_size);
	if (!c.theirs) {
		errno = ENOMEM;
		return -1;
	}
	if (cowmem__v1_for_each_delta_run(r, dirty_run, &c) < 0)
		goto out;
	if (r->origin_kind == ORIGIN_ZERO) {
		/* Frozen by a clone: what it wrote before is in its base. */
		struct page_list base = { 0 };
		if (layer_nonzero_pages(r->base, r->pages, &base) < 0 || merge(list, &base) < 0) {
			free(base.pages);
			goto out;
		}
		free(base.pages);
	}
	rc = 0;
out:
	free(c.theirs);
	return rc;
}

/* Without /proc: compare every page with the origin, outside the lock
 * (reading the region may fault into the server). */
static int dirty_compare_all(const struct cowmem_region *r, struct page_list *list)
{
	char *buf = malloc(cowmem__engine.page_size);

	if (!buf) {
		errno = ENOMEM;
		return -1;
	}
	for (size_t page = 0; page < r->pages; page++) {
		const char *mine = cowmem__v1_page_address(r, page), *theirs = buf;
		if (r->origin_kind == ORIGIN_REGION) {
			theirs = cowmem__v1_page_address(r->origin, page);
		} else if (r->origin_kind == ORIGIN_ZERO) {
			theirs = cowmem__zero_page;
		} else if (cowmem__v1_layer_read(r->base, page, 1, buf) < 0) {
			free(buf);
			return -1;
		}
		if (memcmp(mine, theirs, cowmem__engine.page_size) != 0 && list_add(list,
										    page) < 0) {
			free(buf);
			return -1;
		}
	}
	free(buf);
	return 0;
}

ssize_t cowmem_dirty_pages(const cowmem_region *r, size_t *pages, size_t cap)
{
	struct page_list list = { 0 };
	int entry_errno = errno, rc;

	if (!pages && cap > 0) {
		errno = EINVAL;
		return -1;
	}
	pthread_mutex_lock(&cowmem__engine.lock);
	if (!cowmem__v1_region_usable(r)) {
		pthread_mutex_unlock(&cowmem__engine.lock);
		errno = EINVAL;
		return -1;
	}
	/* The library only reads the region: the cast drops const for the
	 * shared scanning code. */
	struct cowmem_region *region = (struct cowmem_region *)r;
	/* Reading filled pages back needs /proc/self/mem as well. */
	bool compare_all = region->mode == REGION_PRIVATE &&
			   (cowmem__engine.pagemap < 0 || cowmem__engine.self_mem < 0);
	rc = compare_all ? 0 : dirty_collect(region, &list);
	pthread_mutex_unlock(&cowmem__engine.lock);
	if (compare_all)
		rc = dirty_compare_all(region, &list);
	if (rc < 0) {
		int saved = errno;
		free(list.pages);
		errno = saved;
		return -1;
	}
	size_t stored = list.count < cap ? list.count : cap;
	if (stored > 0)
		memcpy(pages, list.pages, stored * sizeof *pages);
	free(list.pages);
	errno = entry_errno; /* lseek(SEEK_DATA) ends with ENXIO */
	return (ssize_t)list.count;
}

/* ---- cowmem_reset ----------------------------------------------------- */

/* Dropping the runs of private pages, in batches (discard.c). */
static int discard_run(struct cowmem_region *r, size_t first, size_t end, void *ctx)
{
	(void)r; /* the discard knows r's base */
	int rc = cowmem__discard_run(first, end, ctx);
	if (rc < 0) {
		errno = -rc;
		return -1;
	}
	return 0;
}

/* Drops them all and frees d. */
static int discard_private_pages(struct cowmem_region *r, struct cowmem__discard *d)
{
	int rc = cowmem__v1_for_each_delta_run(r, discard_run, d) < 0 ? -errno : 0;
	int flushed = cowmem__discard_end(d);
	if (rc < 0 || flushed < 0) {
		errno = rc < 0 ? -rc : -flushed;
		return -1;
	}
	return 0;
}

/* A region made by cowmem_create() and frozen by a clone since: it becomes
 * what cowmem_create() returns again, a shared mapping of an empty memfd. */
static int reset_to_zero(struct cowmem_region *r, struct layer *layer)
{
	char *data = mmap(r->data, r->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
			  layer->fd, 0);
	if (data == MAP_FAILED)
		return -1;
	(void)madvise(data, r->size, MADV_DONTFORK);
	cowmem__v1_layer_release(r->base);
	r->base = layer;
	r->mode = REGION_EXCLUSIVE;
	r->uffd_modes = 0; /* a new mapping is not registered */
	return 0;
}

int cowmem_reset(cowmem_region *r)
{
	struct run_list eager = { 0 };
	struct pending **lent = NULL;
	struct cowmem__discard *discard = NULL;
	struct layer *zero_layer = NULL;
	bool copy_all = false, paused = false;
	int rc = -1;

	pthread_mutex_lock(&cowmem__engine.lock);
	if (!cowmem__v1_region_usable(r)) {
		errno = EINVAL;
		goto out;
	}
	if (r->mode == REGION_EXCLUSIVE) {
		/* Never cloned: its memfd is its content. Punching it out also
		 * unmaps the pages. */
		rc = fallocate(r->base->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
			       (off_t)r->size);
		goto out;
	}
	struct cowmem_region *origin = r->origin;
	/* What can fail comes first, before anything changes: the buffers, the
	 * new memfd, and registering MINOR (pages about to wait again must
	 * never be mapped from the base in between: invariant 2). */
	lent = malloc((r->out.count ? r->out.count : 1) * sizeof *lent);
	if (!lent) {
		errno = ENOMEM;
		goto out;
	}
	if (r->origin_kind == ORIGIN_ZERO) {
		if (!(zero_layer = cowmem__v1_layer_create(r->size)))
			goto out;
	} else if (cowmem__engine.pagemap >= 0 && !(discard = cowmem__discard_begin(r->data))) {
		errno = ENOMEM;
		goto out;
	}
	if (origin && cowmem__engine.lazy &&
	    cowmem__v1_region_register(r,
				       UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR) < 0)
		goto out;
	/* Versions r lends still matter to its clones (and maybe to its own
	 * origin): hand them over before r drops its pages. */
	cowmem__janitor_pause(); /* many page-table changes follow */
	paused = true;
	cowmem__v1_region_hand_over_all(r, lent, true);
	cowmem__v1_region_drop_waits(r);
	cowmem__page_map_free(&r->filled);
	if (r->origin_kind == ORIGIN_ZERO) {
		rc = reset_to_zero(r, zero_layer);
		if (rc == 0)
			zero_layer = NULL; /* r's base now */
		goto out;
	}
	/* Back to the base: drop every private page. */
	if (cowmem__engine.pagemap >= 0) {
		int dropped = discard_private_pages(r, discard);
		discard = NULL; /* freed */
		if (dropped < 0)
			goto out;
	} else if (madvise(r->data, r->size, MADV_DONTNEED) < 0) {
		goto out;
	}
	/* Then the versions of the origin, as a clone of it would get them. */
	if (origin && cowmem__engine.lazy) {
		if (cowmem__v1_region_inherit_waits(origin, r) < 0 ||
		    cowmem__v1_for_each_delta_run(origin, cowmem__v1_lend_run, r) < 0)
			goto out;
	} else if (origin && cowmem__engine.pagemap >= 0) {
		if (cowmem__v1_for_each_delta_run(origin, cowmem__v1_collect_run, &eager) < 0)
			goto out;
		for (size_t i = 0; i < eager.count; i++)
			for (size_t page = eager.runs[i][0]; page < eager.runs[i][1]; page++)
				(void)cowmem__page_map_put(&r->filled, page, (void *)1);
	} else if (origin) {
		copy_all = true;
	}
	rc = 0;
out:;
	int saved = errno;
	if (paused)
		cowmem__janitor_resume();
	if (zero_layer)
		cowmem__v1_layer_release(zero_layer);
	pthread_mutex_unlock(&cowmem__engine.lock);
	free(lent);
	cowmem__discard_free(discard);
	/* Outside the lock: writing r may fault into the server. */
	for (size_t i = 0; rc == 0 && i < eager.count; i++) {
		size_t first = eager.runs[i][0];
		memcpy(cowmem__v1_page_address(r, first), cowmem__v1_page_address(r->origin, first),
		       (eager.runs[i][1] - first) * cowmem__engine.page_size);
	}
	if (rc == 0 && copy_all)
		cowmem__v1_copy_differing_pages(r->origin, r);
	free(eager.runs);
	errno = saved;
	return rc;
}

/* ---- cowmem_stats ----------------------------------------------------- */

static int count_resident(const struct cowmem_region *r, size_t *resident, size_t *shared)
{
	enum { BATCH = 4096 };
	uint64_t *entries = malloc(BATCH * sizeof *entries);
	const uint64_t present = 1ull << 63, file = 1ull << 61;

	if (!entries) {
		errno = ENOMEM;
		return -1;
	}
	for (size_t base = 0; base < r->pages; base += BATCH) {
		size_t n = r->pages - base < BATCH ? r->pages - base : BATCH;
		if (cowmem__v1_read_pagemap(r, base, n, entries) < 0) {
			free(entries);
			return -1;
		}
		for (size_t k = 0; k < n; k++) {
			if ((entries[k] & present) && (entries[k] & file)) {
				++*resident; /* a layer's page-cache page */
				if (r->mode == REGION_PRIVATE)
					++*shared;
			} else if (cowmem__v1_pagemap_entry_is_own(r, base + k, entries[k])) {
				++*resident;
			}
		}
	}
	free(entries);
	return 0;
}

int cowmem_stats(const cowmem_region *r, struct cowmem_stats *stats)
{
	if (!stats) {
		errno = EINVAL;
		return -1;
	}
	ssize_t written = cowmem_dirty_pages(r, NULL, 0);
	if (written < 0)
		return -1;
	struct cowmem_stats s = { .written = (size_t)written };
	int rc = 0;
	pthread_mutex_lock(&cowmem__engine.lock);
	if (!cowmem__v1_region_usable(r)) {
		errno = EINVAL;
		rc = -1;
	} else {
		s.pages = r->pages;
		s.faults = r->faults;
		s.blocked_ns = r->blocked_ns;
		if (cowmem__engine.pagemap >= 0)
			rc = count_resident(r, &s.resident, &s.shared);
	}
	pthread_mutex_unlock(&cowmem__engine.lock);
	if (rc == 0)
		*stats = s;
	return rc;
}
