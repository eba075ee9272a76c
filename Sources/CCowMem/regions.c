/*
 * Regions: creating, finding and destroying them, and their registration
 * with userfaultfd. Cloning is fold.c; serving their faults, resolve.c.
 *
 * The registry keeps every live region sorted by address, so that a fault
 * address finds its region, and a set of live handles, so that a destroyed
 * or foreign pointer is EINVAL instead of undefined behaviour. Everything
 * runs under engine.lock; nobody touches region memory while holding it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "engine.h"

static struct cowmem_region **regions; /* sorted by address */
static size_t region_count, region_capacity;
static struct page_map live;
static struct cowmem_region **fresh;   /* see cowmem__fresh_add */
static size_t fresh_count, fresh_capacity;

char *cowmem__page(const struct cowmem_region *r, size_t page)
{
	return r->data + page * cowmem__engine.page_size;
}

/* ---- Registry ----------------------------------------------------------- */

/* The registry is sorted by address, highest first: mmap hands out
 * addresses from the top down, so a new region usually goes at the end
 * and adding it moves nothing (sorted lowest first, every new region went
 * to the front and moved all the others: 10,000 regions, 80 KB a clone). */
static size_t registry_position(const void *addr)
{
	size_t lo = 0, hi = region_count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if ((const char *)regions[mid]->data > (const char *)addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo; /* first region starting at or below addr */
}

struct cowmem_region *cowmem__find(const void *addr)
{
	size_t pos = registry_position(addr);

	if (pos == region_count)
		return NULL;
	struct cowmem_region *r = regions[pos];
	return (const char *)addr < r->data + r->size ? r : NULL;
}

static bool is_live(const struct cowmem_region *r)
{
	return r && cowmem__page_map_get(&live, (size_t)(uintptr_t)r) == r;
}

static bool usable(const struct cowmem_region *r)
{
	return is_live(r) && !r->orphan;
}

static int registry_add(struct cowmem_region *r)
{
	if (cowmem__page_map_put(&live, (size_t)(uintptr_t)r, r) < 0)
		return -ENOMEM;
	if (region_count == region_capacity) {
		size_t capacity = region_capacity ? region_capacity * 2 : 16;
		void *grown = realloc(regions, capacity * sizeof *regions);
		if (!grown) {
			cowmem__page_map_remove(&live, (size_t)(uintptr_t)r);
			return -ENOMEM;
		}
		regions = grown;
		region_capacity = capacity;
	}
	size_t pos = registry_position(r->data);
	memmove(&regions[pos + 1], &regions[pos], (region_count - pos) * sizeof *regions);
	regions[pos] = r;
	region_count++;
	return 0;
}

static void registry_drop(struct cowmem_region *r)
{
	cowmem__page_map_remove(&live, (size_t)(uintptr_t)r);
	if (r->orphan)
		return;
	size_t pos = registry_position(r->data); /* pos is r: regions never overlap */
	memmove(&regions[pos], &regions[pos + 1], (region_count - pos - 1) * sizeof *regions);
	region_count--;
}

/* ---- userfaultfd registration ------------------------------------------ */

/* Without userfaultfd, or without /proc (scan.c), nothing is registered:
 * holes then read through the kernel, which allocates them in the layer. */
int cowmem__register(struct cowmem_region *r, uint64_t modes)
{
	if ((r->uffd_modes & modes) == modes || cowmem__engine.uffd < 0 ||
	    !cowmem__sees_page_tables())
		return 0;
	modes |= r->uffd_modes;
	int rc = cowmem__uffd_register(cowmem__engine.uffd, r->data, r->size, modes);
	if (rc < 0)
		return rc;
	r->uffd_modes = modes;
	return 0;
}

/* Registering adds modes; dropping one takes an unregister first. Threads
 * blocked in a fault of the range are woken by it and retry. */
int cowmem__register_exactly(struct cowmem_region *r, uint64_t modes)
{
	if (r->uffd_modes == modes)
		return 0;
	if ((r->uffd_modes & ~modes) != 0) {
		int rc = cowmem__uffd_unregister(cowmem__engine.uffd, r->data, r->size);
		if (rc < 0)
			return rc;
		r->uffd_modes = 0;
	}
	return cowmem__register(r, modes);
}

/* ---- Fresh readers ------------------------------------------------------
 * A reader at its layer's current generation reads exactly the layer, so
 * it needs no MINOR registration and keeps the kernel's fault-around and
 * copy-on-write at full speed. Before a capture changes the layer, every
 * fresh reader of it gets MINOR (fold.c), and the pages it mapped from the
 * layer are noted, so that replacing them unmaps them first.
 */
int cowmem__fresh_reserve(void)
{
	if (fresh_count == fresh_capacity) {
		size_t capacity = fresh_capacity ? fresh_capacity * 2 : 16;
		void *grown = realloc(fresh, capacity * sizeof *fresh);
		if (!grown)
			return -ENOMEM;
		fresh = grown;
		fresh_capacity = capacity;
	}
	return 0;
}

int cowmem__fresh_add(struct cowmem_region *r)
{
	int rc = cowmem__fresh_reserve();

	if (rc < 0)
		return rc;
	fresh[fresh_count++] = r;
	r->fresh = true;
	return 0;
}

void cowmem__fresh_remove(struct cowmem_region *r)
{
	if (!r->fresh)
		return;
	for (size_t i = 0; i < fresh_count; i++) {
		if (fresh[i] == r) {
			fresh[i] = fresh[--fresh_count];
			break;
		}
	}
	r->fresh = false;
}

void cowmem__region_note_mapped(struct cowmem_region *r, size_t page, size_t count)
{
	if (count == 0)
		return;
	if (!r->maps_layer) {
		r->maps_layer = true;
		cowmem__layer_mapper_add(r->layer);
	}
	cowmem__layer_note_mapped(r->layer, page, count);
}

void cowmem__region_forget_mapped(struct cowmem_region *r)
{
	if (r->maps_layer) {
		r->maps_layer = false;
		cowmem__layer_mapper_drop(r->layer);
	}
}

static int note_mapped_run(size_t first, size_t end, void *ctx)
{
	cowmem__region_note_mapped(ctx, first, end - first);
	return 0;
}

/* A fresh reader stops being one (and stays a reader): MINOR, then the
 * layer pages it mapped by itself are noted. Registered first: from then
 * on nothing maps a layer page there without the server, which notes it. */
int cowmem__fresh_leave(struct cowmem_region *r)
{
	if (!cowmem__folds) {
		/* Nothing changes a layer then; what the kernel may not map is
		 * the overlay's, which the callers write in (install below). */
		cowmem__fresh_remove(r);
		return 0;
	}
	int rc = cowmem__register(r, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR);

	if (rc < 0 || !r->fresh)
		return rc;
	if ((rc = cowmem__scan_file_pages(r->data, r->pages, note_mapped_run, r)) < 0)
		return rc;
	cowmem__fresh_remove(r);
	return 0;
}

int cowmem__fresh_register_all(struct cowmem__layer *layer)
{
	for (size_t i = 0; i < fresh_count;) {
		struct cowmem_region *r = fresh[i];
		if (r->layer != layer) {
			i++;
			continue;
		}
		int rc = cowmem__fresh_leave(r); /* takes r out of the list */
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* ---- Overlays written in (no folds) --------------------------------------
 * A reader with an overlay reads those pages from the store, but where
 * the layer has a page the kernel maps it without asking unless the
 * reader is registered MINOR, which needs folds' kernel. Then the reader
 * holds its overlay's versions as its own pages from the start: a copy per
 * page and clone, as in the first clone of fork() (the cost of a clone
 * without folds: ARCHITECTURE.md). They count as filled, not written.
 */

#define INSTALL_BATCH 64 /* pages written with one UFFDIO_COPY */

/* Pages [page, page + count) of r from buf: through the server's ioctl
 * where r is registered (a write would wait for the server, which needs
 * the lock held here), else by a write. A page present there (the layer's,
 * mapped by a read) is dropped first. */
static int install_run(struct cowmem_region *r, size_t page, size_t count, const char *buf)
{
	size_t page_size = cowmem__engine.page_size;
	char *to = cowmem__page(r, page);

	if (r->uffd_modes == 0) {
		memcpy(to, buf, count * page_size);
		return 0;
	}
	for (int attempt = 0;; attempt++) {
		size_t done = 0;
		int rc = cowmem__uffd_copy(cowmem__engine.uffd, to, buf, count * page_size, 0, &done);
		if (rc == 0)
			return 0;
		if (rc != -EEXIST || attempt > 0)
			return rc;
		if (madvise(to, count * page_size, MADV_DONTNEED) < 0)
			return -errno;
	}
}

int cowmem__install_overlay(struct cowmem_region *r)
{
	size_t page_size = cowmem__engine.page_size, n = cowmem__overlay_count(r->overlay);
	size_t first = 0, count = 0;
	char *buf = n > 0 ? malloc(INSTALL_BATCH * page_size) : NULL;
	int rc = 0;

	if (n > 0 && !buf)
		return -ENOMEM;
	for (size_t i = 0; i <= n && rc == 0; i++) {
		size_t page = SIZE_MAX;
		cowmem__slot slot = COWMEM__HOLE;
		if (i < n)
			cowmem__overlay_entry(r->overlay, i, &page, &slot);
		if (count > 0 && (page != first + count || count == INSTALL_BATCH)) {
			rc = install_run(r, first, count, buf);
			count = 0;
		}
		if (i == n || rc < 0)
			break;
		if (count == 0)
			first = page;
		char *to = buf + count++ * page_size;
		if (slot == COWMEM__HOLE)
			memset(to, 0, page_size);
		else
			memcpy(to, cowmem__store_page(slot), page_size);
		if (cowmem__page_map_put(&r->filled, page, (void *)1) < 0)
			rc = -ENOMEM;
	}
	free(buf);
	return rc;
}

/* ---- Create and destroy --------------------------------------------------- */

static int region_alloc(struct cowmem__layer *layer, size_t size, enum cowmem__mode mode,
		      struct cowmem_region **result)
{
	struct cowmem_region *r = calloc(1, sizeof *r);

	if (!r)
		return -ENOMEM;
	int rc = cowmem__pagefile_map(cowmem__layer_offset(layer), size,
				      mode == COWMEM__EXCLUSIVE ? MAP_SHARED : MAP_PRIVATE, &r->data);
	if (rc < 0) {
		free(r);
		return rc;
	}
	r->size = size;
	r->pages = size / cowmem__engine.page_size;
	r->layer = layer;
	r->mode = mode;
	*result = r;
	return 0;
}

/* A reader of `layer` with `overlay` that has no generation yet (lock
 * held): mapped and listed, unregistered, holding nothing. A clone whose
 * fold finishes after the clone returns is one until then; the caller
 * keeps every access to it waiting (the fence) until
 * cowmem__reader_attach() gives it the generation. */
int cowmem__reader_new_pending(struct cowmem__layer *layer, size_t size,
			       struct cowmem__overlay *overlay, struct cowmem_region **result)
{
	struct cowmem_region *r;
	int rc = region_alloc(layer, size, COWMEM__READER, &r);

	if (rc < 0)
		return rc;
	if ((rc = registry_add(r)) < 0) {
		munmap(r->data, r->size);
		free(r);
		return rc;
	}
	r->origin = COWMEM__ORIGIN_VIEW;
	cowmem__layer_ref(layer);
	cowmem__layer_ref(layer); /* as its origin's */
	r->origin_layer = layer;
	cowmem__overlay_ref(overlay);
	cowmem__overlay_ref(overlay);
	r->overlay = r->origin_overlay = overlay;
	*result = r;
	return 0;
}

/* A pending reader sees its layer at `gen`, which it holds twice (its
 * view and its origin), and is registered: MISSING only if that is the
 * layer as it is (a fresh reader). 0, or a negative errno and r pending. */
int cowmem__reader_attach(struct cowmem_region *r, uint64_t gen)
{
	struct cowmem__layer *layer = r->layer;
	bool current = gen == cowmem__layer_current(layer) && !r->overlay;
	uint64_t modes = UFFDIO_REGISTER_MODE_MISSING |
			 (current || !cowmem__folds ? 0 : UFFDIO_REGISTER_MODE_MINOR);
	int rc;

	if ((rc = cowmem__register(r, modes)) < 0)
		return rc;
	if (!cowmem__folds && (rc = cowmem__install_overlay(r)) < 0)
		return rc;
	if ((rc = cowmem__layer_hold(layer, gen)) < 0)
		return rc;
	if ((rc = cowmem__layer_hold(layer, gen)) < 0)
		goto err_drop;
	if (current && (rc = cowmem__fresh_add(r)) < 0)
		goto err_drop_both;
	r->gen = r->origin_gen = gen;
	return 0;

err_drop_both:
	cowmem__layer_drop(layer, gen);
err_drop:
	cowmem__layer_drop(layer, gen);
	return rc;
}

/* Undoes cowmem__reader_new_pending(). */
void cowmem__reader_free_pending(struct cowmem_region *r)
{
	registry_drop(r);
	cowmem__overlay_unref(r->overlay);
	cowmem__overlay_unref(r->origin_overlay);
	cowmem__layer_unref(r->layer);
	cowmem__layer_unref(r->origin_layer);
	munmap(r->data, r->size);
	free(r);
}

/* Makes a reader of `layer` at `gen` with `overlay` (lock held): mapped,
 * registered, its generation held twice (its view and its origin). */
int cowmem__reader_new(struct cowmem__layer *layer, size_t size, uint64_t gen,
		       struct cowmem__overlay *overlay, struct cowmem_region **result)
{
	struct cowmem_region *r;
	int rc = cowmem__reader_new_pending(layer, size, overlay, &r);

	if (rc < 0)
		return rc;
	if ((rc = cowmem__reader_attach(r, gen)) < 0) {
		cowmem__reader_free_pending(r);
		return rc;
	}
	*result = r;
	return 0;
}

int cowmem__create(size_t size, struct cowmem_region **result)
{
	struct cowmem__layer *layer = NULL;
	struct cowmem_region *r = NULL;
	size_t page_size = cowmem__engine.page_size;
	int rc;

	if (size == 0)
		return -EINVAL;
	if (size > (size_t)PTRDIFF_MAX - page_size)
		return -ENOMEM;
	size = (size + page_size - 1) & ~(page_size - 1);
	/* Under the lock from the first mapping on: fork() (whose prepare
	 * handler takes it) must not copy a mapping not yet MADV_DONTFORK. */
	pthread_mutex_lock(&cowmem__engine.lock);
	if ((rc = cowmem__layer_new(size / page_size, &layer)) < 0)
		goto out;
	if ((rc = region_alloc(layer, size, COWMEM__EXCLUSIVE, &r)) < 0)
		goto err_layer;
	if ((rc = registry_add(r)) < 0)
		goto err_region;
	r->origin = COWMEM__ORIGIN_ZERO;
	pthread_mutex_unlock(&cowmem__engine.lock);
	*result = r;
	return 0;

err_region:
	munmap(r->data, r->size);
	free(r);
err_layer:
	cowmem__layer_unref(layer);
out:
	pthread_mutex_unlock(&cowmem__engine.lock);
	return rc;
}

/* Lets go of everything r holds in its layer (lock held). */
void cowmem__region_release(struct cowmem_region *r)
{
	cowmem__fresh_remove(r);
	cowmem__region_forget_mapped(r);
	if (r->mode == COWMEM__READER)
		cowmem__layer_drop(r->layer, r->gen);
	if (r->origin == COWMEM__ORIGIN_VIEW) {
		cowmem__layer_drop(r->origin_layer, r->origin_gen);
		cowmem__layer_unref(r->origin_layer);
		r->origin_layer = NULL;
	}
	if (r->mode == COWMEM__HEAD)
		cowmem__layer_set_head(r->layer, NULL);
	cowmem__overlay_unref(r->overlay);
	cowmem__overlay_unref(r->origin_overlay);
	r->overlay = r->origin_overlay = NULL;
	cowmem__page_map_free(&r->filled);
	cowmem__layer_unref(r->layer);
	if (r->mapped_layer) {
		cowmem__layer_unref(r->mapped_layer);
		r->mapped_layer = NULL;
	}
}

/* Takes r out of the registry and lets go of what it holds (lock held);
 * the caller unmaps and frees it. -EINVAL: not a live region. */
int cowmem__region_drop_locked(struct cowmem_region *r)
{
	if (!is_live(r))
		return -EINVAL;
	registry_drop(r);
	if (!r->orphan)
		cowmem__region_release(r);
	return 0;
}

bool cowmem__region_usable(const struct cowmem_region *r)
{
	return usable(r);
}

size_t cowmem__region_count(void)
{
	return region_count;
}

/* ---- fork() ------------------------------------------------------------- */

/* In the child every handle is an orphan: its range stays reserved and
 * inaccessible until cowmem_destroy() frees it (an old pointer faults
 * instead of reading a region created later at the same place). Layers,
 * the store and the page file belong to the parent. */
void cowmem__regions_fork_child(void)
{
	for (size_t i = 0; i < region_count; i++) {
		struct cowmem_region *r = regions[i];
		(void)mmap(r->data, r->size, PROT_NONE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
		r->orphan = true;
		/* Their layers and overlays are forgotten, not freed: their
		 * memory was the parent's. */
		cowmem__page_map_free(&r->filled);
	}
	region_count = 0;
	fresh_count = 0;
	cowmem__layer_fork_child();
	cowmem__fence_fork_child();
	cowmem__store_fork_child();
	cowmem__pagefile_fork_child();
}
