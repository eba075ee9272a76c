/*
 * Overlays: page versions a region sees beyond its layer's generation. A
 * region that is cloned while it is not its layer's head (a branch: its
 * family's head has moved on, or writes too) keeps what it wrote in the
 * store, and the clone shares that overlay.
 *
 * An overlay is a sorted array of (page, slot), immutable once made and
 * shared by reference count; a capture makes a new one by merging. Cost is
 * the overlay's size per branch capture, which is fine for branches (the
 * common loops go through the head, layer.c); a persistent radix tree would
 * make it the pages changed.
 *
 * Under engine.lock.
 */
#include <errno.h>
#include <stdlib.h>

#include "engine.h"

struct cowmem__overlay {
	unsigned refs;
	size_t count;
	size_t *pages;
	cowmem__slot *slots;
};

/* base's entries with `pages`/`slots` (ascending) replacing or added. */
int cowmem__overlay_with(const struct cowmem__overlay *base, const size_t *pages,
			 const cowmem__slot *slots, size_t count,
			 struct cowmem__overlay **result)
{
	size_t base_count = base ? base->count : 0, total = base_count + count;
	struct cowmem__overlay *o = calloc(1, sizeof *o);

	if (!o)
		return -ENOMEM;
	o->pages = malloc((total ? total : 1) * sizeof *o->pages);
	o->slots = malloc((total ? total : 1) * sizeof *o->slots);
	if (!o->pages || !o->slots) {
		free(o->pages);
		free(o->slots);
		free(o);
		return -ENOMEM;
	}
	size_t i = 0, j = 0, n = 0;
	while (i < base_count || j < count) {
		if (j == count || (i < base_count && base->pages[i] < pages[j])) {
			o->pages[n] = base->pages[i];
			o->slots[n] = base->slots[i++];
		} else {
			if (i < base_count && base->pages[i] == pages[j])
				i++; /* replaced */
			o->pages[n] = pages[j];
			o->slots[n] = slots[j++];
		}
		cowmem__store_ref(o->slots[n]);
		n++;
	}
	o->count = n;
	o->refs = 1;
	*result = o;
	return 0;
}

void cowmem__overlay_ref(struct cowmem__overlay *overlay)
{
	if (overlay)
		overlay->refs++;
}

void cowmem__overlay_unref(struct cowmem__overlay *overlay)
{
	if (!overlay || --overlay->refs > 0)
		return;
	for (size_t i = 0; i < overlay->count; i++)
		cowmem__store_unref(overlay->slots[i]);
	free(overlay->pages);
	free(overlay->slots);
	free(overlay);
}

bool cowmem__overlay_find(const struct cowmem__overlay *overlay, size_t page,
			  cowmem__slot *slot)
{
	size_t lo = 0, hi = overlay ? overlay->count : 0;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (overlay->pages[mid] < page)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!overlay || lo == overlay->count || overlay->pages[lo] != page)
		return false;
	*slot = overlay->slots[lo];
	return true;
}

size_t cowmem__overlay_count(const struct cowmem__overlay *overlay)
{
	return overlay ? overlay->count : 0;
}

void cowmem__overlay_entry(const struct cowmem__overlay *overlay, size_t i, size_t *page,
			   cowmem__slot *slot)
{
	*page = overlay->pages[i];
	*slot = overlay->slots[i];
}
