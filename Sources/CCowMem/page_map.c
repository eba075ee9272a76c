/*
 * A small open-addressing hash map from page index to pointer, with linear
 * probing and backward-shift deletion (no tombstones), for the sparse sets
 * the engine keeps by page or by pointer (the live region handles, the
 * pages the server filled with a version, a layer's early copies...).
 * Also the lists of page runs that scans collect (struct run_list).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static size_t slot_of(size_t page, size_t capacity)
{
	uint64_t h = (uint64_t)page * 0x9e3779b97f4a7c15ull;
	return (size_t)(h >> 17) & (capacity - 1);
}

void *cowmem__page_map_get(const struct page_map *m, size_t page)
{
	if (m->count == 0)
		return NULL;
	for (size_t i = slot_of(page, m->capacity);; i = (i + 1) & (m->capacity - 1)) {
		if (m->keys[i] == 0)
			return NULL;
		if (m->keys[i] == page + 1)
			return m->values[i];
	}
}

/* Where a lookup of page starts: a miss at a random page costs a cache
 * miss, which a caller that knows its next pages can start early. */
void cowmem__page_map_prefetch(const struct page_map *m, size_t page)
{
	if (m->count == 0)
		return;
	size_t i = slot_of(page, m->capacity);
	__builtin_prefetch(&m->keys[i], 1);
	__builtin_prefetch(&m->values[i], 1);
}

static int grow(struct page_map *m)
{
	size_t capacity = m->capacity ? m->capacity * 2 : 16;
	size_t *keys = calloc(capacity, sizeof *keys);
	void **values = calloc(capacity, sizeof *values);

	if (!keys || !values) {
		free(keys);
		free(values);
		return -ENOMEM;
	}
	for (size_t i = 0; i < m->capacity; i++) {
		if (m->keys[i] == 0)
			continue;
		size_t j = slot_of(m->keys[i] - 1, capacity);
		while (keys[j] != 0)
			j = (j + 1) & (capacity - 1);
		keys[j] = m->keys[i];
		values[j] = m->values[i];
	}
	free(m->keys);
	free(m->values);
	m->keys = keys;
	m->values = values;
	m->capacity = capacity;
	return 0;
}

int cowmem__page_map_put(struct page_map *m, size_t page, void *value)
{
	if ((m->count + 1) * 4 > m->capacity * 3 && grow(m) < 0)
		return -ENOMEM;
	size_t i = slot_of(page, m->capacity);
	while (m->keys[i] != 0 && m->keys[i] != page + 1)
		i = (i + 1) & (m->capacity - 1);
	if (m->keys[i] == 0)
		m->count++;
	m->keys[i] = page + 1;
	m->values[i] = value;
	return 0;
}

/* Changes the value of a key that is there; never allocates. */
void cowmem__page_map_replace(struct page_map *m, size_t page, void *value)
{
	if (m->capacity == 0)
		return;
	size_t i = slot_of(page, m->capacity);
	while (m->keys[i] != 0) {
		if (m->keys[i] == page + 1) {
			m->values[i] = value;
			return;
		}
		i = (i + 1) & (m->capacity - 1);
	}
}

void *cowmem__page_map_remove(struct page_map *m, size_t page)
{
	if (m->count == 0)
		return NULL;
	size_t mask = m->capacity - 1, i = slot_of(page, m->capacity);
	while (m->keys[i] != page + 1) {
		if (m->keys[i] == 0)
			return NULL;
		i = (i + 1) & mask;
	}
	void *value = m->values[i];
	/* Shift later members of the probe run back into the hole. */
	for (size_t j = (i + 1) & mask; m->keys[j] != 0; j = (j + 1) & mask) {
		size_t home = slot_of(m->keys[j] - 1, m->capacity);
		if (((j - home) & mask) >= ((j - i) & mask)) {
			m->keys[i] = m->keys[j];
			m->values[i] = m->values[j];
			i = j;
		}
	}
	m->keys[i] = 0;
	m->values[i] = NULL;
	m->count--;
	return value;
}

void cowmem__page_map_free(struct page_map *m)
{
	free(m->keys);
	free(m->values);
	*m = (struct page_map){ 0 };
}

/* ---- Runs of pages, in the order they are found ------------------------ */

int cowmem__run_list_add(struct run_list *list, size_t first, size_t end)
{
	if (list->count == list->capacity) {
		size_t capacity = list->capacity ? list->capacity * 2 : 256;
		size_t (*grown)[2] = realloc(list->runs, capacity * sizeof *grown);
		if (!grown)
			return -ENOMEM;
		list->runs = grown;
		list->capacity = capacity;
	}
	list->runs[list->count][0] = first;
	list->runs[list->count++][1] = end;
	return 0;
}
