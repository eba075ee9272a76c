/*
 * What changed, going back, and statistics:
 * cowmem_dirty_pages(), cowmem_reset() and cowmem_stats().
 *
 * A region's content is its own pages over its view (its layer at a
 * generation, then an overlay); its origin is a view too (or zeros). So
 * what differs from the origin is its own pages (written, or filled by
 * the server with a version, which are compared) plus, for a region whose
 * view moved away from its origin (a head that captured since, a region
 * made from zeros), the pages whose versions differ between the two views.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine.h"

#define READ_BATCH COWMEM__READ_MAX /* pages read at once */

struct page_list {
	size_t *pages;
	size_t count, capacity;
};

static int list_add(struct page_list *list, size_t page)
{
	if (list->count == list->capacity) {
		size_t capacity = list->capacity ? list->capacity * 2 : 256;
		size_t *grown = realloc(list->pages, capacity * sizeof *grown);
		if (!grown)
			return -ENOMEM;
		list->pages = grown;
		list->capacity = capacity;
	}
	list->pages[list->count++] = page;
	return 0;
}

static int compare_pages(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	return x < y ? -1 : x > y;
}

static void list_sort_unique(struct page_list *list)
{
	size_t kept = 0;

	if (list->count == 0)
		return; /* and list->pages may be NULL, which qsort may not get */
	qsort(list->pages, list->count, sizeof *list->pages, compare_pages);
	for (size_t i = 0; i < list->count; i++)
		if (kept == 0 || list->pages[kept - 1] != list->pages[i])
			list->pages[kept++] = list->pages[i];
	list->count = kept;
}

static int origin_read(const struct cowmem_region *r, size_t page, char *buf)
{
	if (r->origin == COWMEM__ORIGIN_ZERO) {
		memset(buf, 0, cowmem__engine.page_size);
		return 0;
	}
	return cowmem__read_view(r->origin_layer, r->origin_gen, r->origin_overlay, page, buf);
}

/* After cowmem_copy() from another family the two views share no
 * generations to compare: every page is compared, 8 bytes of pagemap and
 * two page reads each. */
static int compare_all(const struct cowmem_region *r, struct page_list *list)
{
	size_t ps = cowmem__engine.page_size;
	char *mine = malloc(COWMEM__READ_MAX * ps), *theirs = malloc(ps);
	int rc = mine && theirs ? 0 : -ENOMEM;

	for (size_t page = 0; rc == 0 && page < r->pages; page += COWMEM__READ_MAX) {
		size_t count = r->pages - page < COWMEM__READ_MAX ? r->pages - page : COWMEM__READ_MAX;
		if ((rc = cowmem__read_content(r, page, count, mine)) < 0)
			break;
		for (size_t k = 0; rc == 0 && k < count; k++)
			if ((rc = origin_read(r, page + k, theirs)) == 0 &&
			    memcmp(mine + k * ps, theirs, ps) != 0)
				rc = list_add(list, page + k);
	}
	free(mine);
	free(theirs);
	return rc;
}

/* ---- cowmem_dirty_pages -------------------------------------------------- */

static uint64_t view_gen(const struct cowmem_region *r)
{
	return r->mode == COWMEM__READER ? r->gen : cowmem__layer_current(r->layer);
}

/* Does r's view have another version of `page` than its origin? */
static bool view_differs(const struct cowmem_region *r, size_t page)
{
	cowmem__slot mine, theirs;
	bool in_mine = cowmem__overlay_find(r->overlay, page, &mine);
	bool in_theirs = r->origin == COWMEM__ORIGIN_VIEW &&
			 cowmem__overlay_find(r->origin_overlay, page, &theirs);

	if (in_mine || in_theirs)
		return !(in_mine && in_theirs && mine == theirs);
	uint64_t origin_gen = r->origin == COWMEM__ORIGIN_VIEW ? r->origin_gen : 0;
	return cowmem__layer_birth_at(r->layer, page, view_gen(r)) !=
	       cowmem__layer_birth_at(r->layer, page, origin_gen);
}

struct own_context {
	const struct cowmem_region *r;
	struct page_list *list;
	char *mine, *theirs; /* one page each */
};

/* r's own pages are written, except pages the server filled with a version
 * and nobody changed since: those are compared with the origin. */
static int own_run(size_t first, size_t end, void *ctx)
{
	struct own_context *c = ctx;
	int rc;

	for (size_t page = first; page < end; page++) {
		if (cowmem__page_map_get(&c->r->filled, page) || !cowmem__sees_page_tables()) {
			if ((rc = cowmem__read_own(c->r, page, c->mine)) < 0 ||
			    (rc = origin_read(c->r, page, c->theirs)) < 0)
				return rc;
			if (memcmp(c->mine, c->theirs, cowmem__engine.page_size) == 0)
				continue;
		}
		if ((rc = list_add(c->list, page)) < 0)
			return rc;
	}
	return 0;
}

/* Pages of the layer's range that hold anything but zeros. */
static int nonzero_layer_pages(const struct cowmem_region *r, bool only_first_version,
			       struct page_list *list)
{
	size_t page_size = cowmem__engine.page_size;
	off_t base = cowmem__layer_offset(r->layer), limit = base + (off_t)r->size, at = base;
	char *buf = malloc(READ_BATCH * page_size);
	int fd = cowmem__pagefile_fd(), rc = 0;

	if (!buf)
		return -ENOMEM;
	while (rc == 0 && at < limit) {
		off_t data = lseek(fd, at, SEEK_DATA);
		if (data < 0 || data >= limit)
			break; /* ENXIO: nothing more */
		off_t hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0 || hole > limit)
			hole = limit;
		size_t first = (size_t)(data - base) / page_size;
		size_t end = (size_t)(hole - base + (off_t)page_size - 1) / page_size;
		for (size_t page = first; rc == 0 && page < end; page += READ_BATCH) {
			size_t count = end - page < READ_BATCH ? end - page : READ_BATCH;
			if ((rc = cowmem__read_layer(r->layer, page, count, buf)) < 0)
				break;
			for (size_t k = 0; k < count && rc == 0; k++) {
				char *content = buf + k * page_size;
				if (only_first_version) {
					if (cowmem__layer_birth_at(r->layer, page + k,
								   view_gen(r)) != 0)
						continue;
					/* Replaced since: the view sees an old version. */
					if (cowmem__layer_birth_at(r->layer, page + k,
								   UINT64_MAX) != 0 &&
					    (rc = cowmem__read_view(r->layer, view_gen(r), NULL,
								    page + k,
								    content)) < 0)
						break;
				}
				if (!cowmem__page_is_zero(content))
					rc = list_add(list, page + k);
			}
		}
		at = base + (off_t)(end * page_size);
	}
	free(buf);
	return rc;
}

static int dirty_collect(const struct cowmem_region *r, struct page_list *list)
{
	if (r->mode == COWMEM__EXCLUSIVE)
		return nonzero_layer_pages(r, false, list);
	if (r->origin == COWMEM__ORIGIN_VIEW && r->origin_layer != r->layer)
		return compare_all(r, list);

	struct own_context c = { r, list, malloc(cowmem__engine.page_size),
				  malloc(cowmem__engine.page_size) };
	int rc = -ENOMEM;
	if (!c.mine || !c.theirs)
		goto out;
	if ((rc = cowmem__scan_own(r->data, r->pages, own_run, &c)) < 0)
		goto out;
	bool moved = r->mode == COWMEM__HEAD || r->origin == COWMEM__ORIGIN_ZERO ||
		     r->gen != r->origin_gen || r->overlay != r->origin_overlay;
	if (moved) {
		/* Versions newer than the older of the two views, then the
		 * overlays' pages: those are where the views can differ. */
		uint64_t origin_gen = r->origin == COWMEM__ORIGIN_VIEW ? r->origin_gen : 0;
		uint64_t low = view_gen(r) < origin_gen ? view_gen(r) : origin_gen;
		size_t n = cowmem__layer_changed_since(r->layer, low, NULL, 0);
		size_t *changed = malloc((n ? n : 1) * sizeof *changed);
		if (!changed) {
			rc = -ENOMEM;
			goto out;
		}
		cowmem__layer_changed_since(r->layer, low, changed, n);
		for (size_t i = 0; i < n && rc == 0; i++)
			if (view_differs(r, changed[i]))
				rc = list_add(list, changed[i]);
		free(changed);
		const struct cowmem__overlay *overlays[2] = { r->overlay, r->origin_overlay };
		for (size_t o = 0; o < 2 && rc == 0; o++) {
			for (size_t i = 0; i < cowmem__overlay_count(overlays[o]) && rc == 0; i++) {
				size_t page;
				cowmem__slot slot;
				cowmem__overlay_entry(overlays[o], i, &page, &slot);
				if (view_differs(r, page))
					rc = list_add(list, page);
			}
		}
		/* What a created region wrote before its first clone is in
		 * the layer's first version. */
		if (rc == 0 && r->origin == COWMEM__ORIGIN_ZERO)
			rc = nonzero_layer_pages(r, true, list);
	}
out:
	free(c.mine);
	free(c.theirs);
	return rc;
}

int cowmem__dirty_pages(const struct cowmem_region *r, size_t *pages, size_t cap, size_t *count)
{
	struct page_list list = { 0 };
	int rc;

	if (!pages && cap > 0)
		return -EINVAL;
	cowmem__lock_settled();
	rc = cowmem__region_usable(r) ? dirty_collect(r, &list) : -EINVAL;
	pthread_mutex_unlock(&cowmem__engine.lock);
	if (rc < 0) {
		free(list.pages);
		return rc;
	}
	list_sort_unique(&list);
	size_t stored = list.count < cap ? list.count : cap;
	if (stored > 0)
		memcpy(pages, list.pages, stored * sizeof *pages);
	free(list.pages);
	*count = list.count;
	return 0;
}

/* ---- cowmem_reset ---------------------------------------------------------- */

/* Drops the region's own pages: it reads its layer there again. */
static int discard_own_pages(struct cowmem_region *r)
{
	struct cowmem__discard *d = cowmem__discard_begin(r->data);

	if (!d)
		return -ENOMEM;
	int rc = cowmem__scan_own(r->data, r->pages, cowmem__discard_run, d);
	int flushed = cowmem__discard_end(d);
	return rc < 0 ? rc : flushed;
}

/* Made from zeros: a new empty layer, mapped shared at the same address,
 * makes it what cowmem_create() returns again (its next clone is free). */
static int reset_to_zero(struct cowmem_region *r)
{
	struct cowmem__layer *layer;
	int rc = cowmem__layer_new(r->pages, &layer);

	if (rc < 0)
		return rc;
	char *data = mmap(r->data, r->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
			  cowmem__pagefile_fd(), cowmem__layer_offset(layer));
	if (data == MAP_FAILED) {
		rc = -errno;
		cowmem__layer_unref(layer);
		return rc;
	}
	(void)madvise(data, r->size, MADV_DONTFORK);
	cowmem__region_release(r);
	r->layer = layer;
	r->mode = COWMEM__EXCLUSIVE;
	r->origin = COWMEM__ORIGIN_ZERO;
	r->uffd_modes = 0; /* a new mapping is not registered */
	return 0;
}

static int reset_locked(struct cowmem_region *r)
{
	int rc;

	if (r->mode == COWMEM__EXCLUSIVE) {
		/* Never cloned: the layer is its content; punching it also
		 * unmaps the pages. */
		if (fallocate(cowmem__pagefile_fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      cowmem__layer_offset(r->layer), (off_t)r->size) < 0)
			return -errno;
		return 0;
	}
	if (r->origin == COWMEM__ORIGIN_ZERO)
		return reset_to_zero(r);
	if (r->origin_layer != r->layer) { /* cowmem_copy() brought another family's */
		if ((rc = cowmem__set_view(r, r->origin_layer, r->origin_gen,
					   r->origin_overlay)) < 0)
			return rc;
		r->copied = false; /* remapped: it sees exactly its origin */
		return 0;
	}
	struct cowmem__layer *layer = r->layer;
	/* A reader that still sees its origin's generation keeps the layer
	 * pages it mapped: its overlay only ever grew from its origin's (a
	 * branch adds its own pages), and what the overlay adds is its own
	 * copies, dropped below. Not after a copy brought another view. */
	bool keeps_view = r->mode == COWMEM__READER && r->gen == r->origin_gen && !r->copied;
	if (r->mode == COWMEM__HEAD && r->origin_gen == cowmem__layer_current(layer) &&
	    !r->origin_overlay) {
		/* Nothing captured since the origin: the layer is the origin. */
		if ((rc = discard_own_pages(r)) < 0)
			return rc;
		cowmem__page_map_free(&r->filled);
		return 0;
	}
	/* Back to an older view: MINOR first, so that no access in between
	 * maps a layer page the origin does not have. */
	if ((rc = cowmem__fresh_leave(r)) < 0)
		return rc;
	if (!keeps_view && (rc = cowmem__layer_hold(layer, r->origin_gen)) < 0)
		return rc;
	if (keeps_view)
		rc = discard_own_pages(r);
	else if (madvise(r->data, r->size, MADV_DONTNEED) < 0)
		rc = -errno;
	if (rc < 0) {
		if (!keeps_view)
			cowmem__layer_drop(layer, r->origin_gen);
		return rc;
	}
	if (r->mode == COWMEM__HEAD)
		cowmem__layer_set_head(layer, NULL);
	else if (!keeps_view)
		cowmem__layer_drop(layer, r->gen);
	r->mode = COWMEM__READER;
	r->gen = r->origin_gen;
	r->copied = false;
	cowmem__overlay_ref(r->origin_overlay);
	cowmem__overlay_unref(r->overlay);
	r->overlay = r->origin_overlay;
	cowmem__page_map_free(&r->filled);
	/* Without folds its own pages held the origin's overlay too. */
	return cowmem__folds ? 0 : cowmem__install_overlay(r);
}

int cowmem__reset(struct cowmem_region *r)
{
	cowmem__lock_settled();
	int rc = cowmem__region_usable(r) ? reset_locked(r) : -EINVAL;
	pthread_mutex_unlock(&cowmem__engine.lock);
	return rc;
}

/* ---- cowmem_stats ---------------------------------------------------------- */

struct count_context {
	size_t resident, shared;
	bool file_is_shared;
};

static int count_own(size_t first, size_t end, void *ctx)
{
	((struct count_context *)ctx)->resident += end - first;
	return 0;
}

static int count_file(size_t first, size_t end, void *ctx)
{
	struct count_context *c = ctx;
	c->resident += end - first;
	if (c->file_is_shared)
		c->shared += end - first;
	return 0;
}

int cowmem__stats(const struct cowmem_region *r, struct cowmem_stats *stats)
{
	size_t written;

	if (!stats)
		return -EINVAL;
	int rc = cowmem__dirty_pages(r, NULL, 0, &written);
	if (rc < 0)
		return rc;
	struct cowmem_stats s = { .written = written };
	struct count_context c = { 0, 0, false };
	cowmem__lock_settled();
	if (!cowmem__region_usable(r)) {
		rc = -EINVAL;
	} else {
		s.pages = r->pages;
		s.faults = r->faults;
		s.blocked_ns = r->blocked_ns;
		c.file_is_shared = r->mode != COWMEM__EXCLUSIVE;
		if ((rc = cowmem__scan_own(r->data, r->pages, count_own, &c)) == 0)
			rc = cowmem__scan_file_pages(r->data, r->pages, count_file, &c);
		s.resident = c.resident;
		s.shared = c.shared;
	}
	pthread_mutex_unlock(&cowmem__engine.lock);
	if (rc == 0)
		*stats = s;
	return rc;
}
