/*
 * Early copies: old versions of a layer's pages, copied out before the fold
 * that will replace them.
 *
 * Between two clones the layer's page p does not change, and if the head
 * wrote p since the last capture, the next fold replaces p and keeps its
 * old content for the generations that still see it. The pre-copier
 * (pre_copier.c) copies that content into a store slot ahead of time, on a
 * CPU the program leaves idle, and records it here; the fold then takes
 * the slot instead of copying the page itself (layer.c). An entry is valid
 * as long as the layer's page is the one it copied: until the next capture
 * ends, which uses or frees every entry.
 *
 * A set per layer, under engine.lock: entries in an array, found through a
 * page map (page -> entry index + 1).
 */
#include <errno.h>
#include <stdlib.h>

#include "engine.h"

struct early_copy {
	size_t page;
	cowmem__slot slot;
	uint64_t birth; /* of the layer's page it copied */
};

struct cowmem__early_copies {
	struct page_map index;
	struct early_copy *entries;
	size_t count, capacity;
};

int cowmem__early_new(struct cowmem__early_copies **result)
{
	*result = calloc(1, sizeof **result);
	return *result ? 0 : -ENOMEM;
}

size_t cowmem__early_count(const struct cowmem__early_copies *e)
{
	return e->count;
}

bool cowmem__early_has(const struct cowmem__early_copies *e, size_t page)
{
	return cowmem__page_map_get(&e->index, page) != NULL;
}

void cowmem__early_prefetch(const struct cowmem__early_copies *e, size_t page)
{
	cowmem__page_map_prefetch(&e->index, page);
}

/* Takes ownership of the slot's reference, also on failure (-ENOMEM). */
int cowmem__early_add(struct cowmem__early_copies *e, size_t page, cowmem__slot slot,
		      uint64_t birth)
{
	if (e->count == e->capacity) {
		size_t capacity = e->capacity ? e->capacity * 2 : 256;
		struct early_copy *grown = realloc(e->entries, capacity * sizeof *grown);
		if (!grown)
			goto err;
		e->entries = grown;
		e->capacity = capacity;
	}
	if (cowmem__page_map_put(&e->index, page, (void *)(uintptr_t)(e->count + 1)) < 0)
		goto err;
	e->entries[e->count++] = (struct early_copy){ page, slot, birth };
	return 0;
err:
	cowmem__store_unref(slot);
	return -ENOMEM;
}

/* Removes entry i, moving the last one into its place. */
static void remove_entry(struct cowmem__early_copies *e, size_t i)
{
	(void)cowmem__page_map_remove(&e->index, e->entries[i].page);
	if (i + 1 < e->count) {
		e->entries[i] = e->entries[e->count - 1];
		cowmem__page_map_replace(&e->index, e->entries[i].page, (void *)(uintptr_t)(i + 1));
	}
	e->count--;
}

/* The slot copied for page, now the caller's (its reference): false if
 * there is none. */
bool cowmem__early_take(struct cowmem__early_copies *e, size_t page, cowmem__slot *slot)
{
	uintptr_t i = (uintptr_t)cowmem__page_map_get(&e->index, page);

	if (i == 0)
		return false;
	*slot = e->entries[i - 1].slot;
	remove_entry(e, i - 1);
	return true;
}

/* Frees the entries whose page was born after `gen` (all of them if
 * `all`): no held generation sees their content any more. */
void cowmem__early_forget_born_after(struct cowmem__early_copies *e, uint64_t gen, bool all)
{
	for (size_t i = e->count; i-- > 0;) {
		if (!all && e->entries[i].birth <= gen)
			continue;
		cowmem__store_unref(e->entries[i].slot);
		remove_entry(e, i);
	}
}

void cowmem__early_clear(struct cowmem__early_copies *e)
{
	for (size_t i = 0; i < e->count; i++)
		cowmem__store_unref(e->entries[i].slot);
	e->count = 0;
	cowmem__page_map_free(&e->index);
}

void cowmem__early_free(struct cowmem__early_copies *e)
{
	if (!e)
		return;
	cowmem__early_clear(e);
	free(e->entries);
	free(e);
}
