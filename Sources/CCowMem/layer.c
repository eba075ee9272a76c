/*
 * Layers: the pages of one family of regions (a created or loaded region and
 * all its clones) and the generations of their content.
 *
 * A layer is a range of the page file. It holds the current content of the
 * family's head (the region whose writes become the next snapshot) and
 * every reader maps it privately, so reading shares the page cache pages and
 * writing is the kernel's own copy-on-write. Each capture (a clone of the
 * head) replaces the pages the head wrote and starts a new generation; a
 * reader sees the layer as it was at its generation:
 *
 *   birth[p]      the generation of the layer's current page p;
 *   old versions  for page p, the versions a capture replaced, each visible
 *                 to the generations [birth, death), kept in the store only
 *                 while a generation in that span is held;
 *   deadlists     per generation d, the versions that capture d replaced
 *                 (ZFS's deadlists): releasing a generation looks only at
 *                 the deadlists after it, so it costs what it frees.
 *
 * A region at generation g reads page p from the layer if birth[p] <= g,
 * else the old version whose span holds g. Under engine.lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine.h"

/* An old version of one page, seen by the generations [birth, death).
 * Versions live in one pool per layer; those of a page form a chain, newest
 * first, from the `old` map. */
struct old_version {
	uint64_t birth, death;
	size_t page;
	cowmem__slot slot;
	uint32_t older; /* pool index + 1 of the next older version, 0: none */
};

/* The versions a capture replaced, as pool indices with their births,
 * sorted by birth when the capture ends: the versions a release frees are
 * the ones born after a given generation, a suffix, so a sweep costs what
 * it frees. */
struct dead_entry {
	uint64_t birth;
	uint32_t version;
};

struct deadlist {
	size_t count, capacity;
	struct dead_entry *entries;
};

struct held_generation {
	uint64_t gen;
	size_t refs;
};

struct cowmem__layer {
	off_t offset;            /* in the page file */
	size_t pages;
	char *shared;            /* MAP_SHARED of the range, never registered */
	uint64_t *birth;         /* per page */
	bool birth_populated;    /* prefaulted for writing, at the first capture */
	unsigned char *mapped;   /* per page: a reader may map the current page */
	size_t mappers;          /* live regions that set bits of mapped */
	uint64_t current;        /* the newest generation */
	struct page_map old;     /* page -> pool index + 1 of its newest old version */
	struct old_version *pool;
	size_t pool_count, pool_capacity;
	uint32_t *pool_free;     /* freed pool indices */
	size_t pool_free_count;
	unsigned char *data;     /* per page: the page file has it, then per
				    page: that is known (NULL until first asked) */
	/* The deadlists by generation, ascending (captures append them);
	 * a swept one leaves a NULL until the array is compacted. */
	struct dead_ref {
		uint64_t gen;
		uint64_t newest_birth; /* of its entries: a sweep that keeps
					  everything up to it skips the list */
		struct deadlist *list;
	} *dead;
	size_t dead_count, dead_live, dead_capacity;
	struct held_generation *held; /* ascending */
	size_t held_count, held_capacity;
	unsigned refs;
	struct deadlist *capture; /* during a capture: its deadlist */
	/* The last capture: pages replaced, old versions it found copied */
	size_t last_capture_pages, last_capture_early;
	uint64_t captures_begun; /* also under early_copy_lock */
	/* Old versions copied out before the capture that will replace
	 * them (early_copies.c); NULL until the first. */
	struct cowmem__early_copies *early;
	struct cowmem_region *head; /* whose content the layer holds, or NULL */
	/* A layer made by cowmem_load() reads its first version from the
	 * snapshot file page by page on first use: `source` (or -1) is the
	 * file, `source_offset` where page 0 starts, `loaded` a bitmap of
	 * the pages copied into the page file already. */
	int source;
	off_t source_offset;
	unsigned char *loaded;
};

static size_t layer_count; /* alive */

/* The pre-copier copies layer pages without the engine lock. A capture
 * changes them only once it has begun, which takes this lock: a copy
 * either ends before the capture begins or sees it begun and is not made. */
static pthread_mutex_t early_copy_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t page_size(void)
{
	return cowmem__engine.page_size;
}

int cowmem__layer_new(size_t pages, struct cowmem__layer **result)
{
	struct cowmem__layer *layer = calloc(1, sizeof *layer);
	size_t size = pages * page_size();
	int rc = -ENOMEM;

	if (!layer)
		return -ENOMEM;
	if ((rc = cowmem__pagefile_reserve(size, &layer->offset)) < 0)
		goto err_free;
	/* Aligned as the regions that map the layer: a freeze hands their
	 * page tables over whole (cowmem__layer_adopt_tables). */
	if ((rc = cowmem__pagefile_map(layer->offset, size, MAP_SHARED, &layer->shared)) < 0)
		goto err_release;
	/* calloc of this size maps fresh zero pages: untouched, they cost
	 * nothing until a capture writes a birth (populate_birth). */
	layer->birth = calloc(pages, sizeof *layer->birth);
	layer->mapped = calloc((pages + 7) / 8, 1);
	if (!layer->birth || !layer->mapped) {
		rc = -ENOMEM;
		goto err_unmap;
	}
	layer->pages = pages;
	layer->refs = 1;
	layer->source = -1;
	layer_count++;
	*result = layer;
	return 0;

err_unmap:
	free(layer->birth);
	free(layer->mapped);
	munmap(layer->shared, size);
err_release:
	cowmem__pagefile_release(layer->offset, size);
err_free:
	free(layer);
	return rc;
}

void cowmem__layer_ref(struct cowmem__layer *layer)
{
	layer->refs++;
}

static void free_deadlist(size_t gen, void *value, void *ctx)
{
	struct deadlist *list = value;
	(void)gen;
	(void)ctx;
	free(list->entries);
	free(list);
}

void cowmem__layer_unref(struct cowmem__layer *layer)
{
	if (--layer->refs > 0)
		return;
	size_t size = layer->pages * page_size();
	for (size_t i = 0; i < layer->pool_count; i++)
		if (layer->pool[i].death != 0) /* in use */
			cowmem__store_unref(layer->pool[i].slot);
	cowmem__early_free(layer->early);
	free(layer->pool);
	free(layer->pool_free);
	free(layer->data);
	cowmem__page_map_free(&layer->old);
	for (size_t i = 0; i < layer->dead_count; i++)
		if (layer->dead[i].list)
			free_deadlist(layer->dead[i].gen, layer->dead[i].list, NULL);
	free(layer->dead);
	munmap(layer->shared, size);
	cowmem__pagefile_release(layer->offset, size);
	free(layer->birth);
	free(layer->mapped);
	free(layer->held);
	free(layer->loaded);
	if (layer->source >= 0)
		close(layer->source);
	free(layer);
	if (--layer_count == 0)
		cowmem__store_release();
	else
		cowmem__store_trim();
}

/* The layer's shared mapping takes over the page tables of `from`, a
 * shared mapping of the whole layer at an address aligned alike (an
 * exclusive region being frozen), which keeps an empty mapping. The pages
 * the region had mapped are then mapped here: a capture's copies into the
 * layer and its has-data questions (mincore) do not fault or look pages up
 * in the page cache one by one, which made a first re-clone of 1% of a GiB
 * cost 2-3x a later one. The move replaces the old shared mapping
 * (normally empty) in one step: moving it aside first would leave a hole
 * at its address, which another thread's mmap() could take in between. */
int cowmem__layer_adopt_tables(struct cowmem__layer *layer, char *from)
{
	size_t size = layer->pages * page_size();

	if (cowmem__sys_mremap(from, size, size, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP,
			       layer->shared) == MAP_FAILED)
		return -errno;
	return 0;
}

char *cowmem__layer_shared(const struct cowmem__layer *layer)
{
	return layer->shared;
}

off_t cowmem__layer_offset(const struct cowmem__layer *layer)
{
	return layer->offset;
}

uint64_t cowmem__layer_current(const struct cowmem__layer *layer)
{
	return layer->current;
}

struct cowmem_region *cowmem__layer_head(const struct cowmem__layer *layer)
{
	return layer->head;
}

void cowmem__layer_set_head(struct cowmem__layer *layer, struct cowmem_region *head)
{
	layer->head = head;
}

/* ---- Reading ------------------------------------------------------------ */

static const struct old_version *find_version(const struct cowmem__layer *layer, size_t page,
					      uint64_t gen)
{
	uintptr_t next = (uintptr_t)cowmem__page_map_get(&layer->old, page);

	while (next) {
		const struct old_version *v = &layer->pool[next - 1];
		if (v->birth <= gen && gen < v->death)
			return v;
		next = v->older;
	}
	return NULL;
}

enum cowmem__source cowmem__layer_lookup(const struct cowmem__layer *layer, size_t page,
					 uint64_t gen, cowmem__slot *slot)
{
	if (layer->birth[page] <= gen)
		return COWMEM__FROM_LAYER;
	const struct old_version *v = find_version(layer, page, gen);
	/* Every version a held generation sees is kept (layer_drop frees
	 * only what no held generation sees); a missing one is a bug, and
	 * reads as a hole rather than another version's bytes. */
	*slot = v ? v->slot : COWMEM__HOLE;
	return COWMEM__FROM_STORE;
}

uint64_t cowmem__layer_birth_at(const struct cowmem__layer *layer, size_t page, uint64_t gen)
{
	if (layer->birth[page] <= gen)
		return layer->birth[page];
	const struct old_version *v = find_version(layer, page, gen);
	return v ? v->birth : 0;
}

size_t cowmem__layer_changed_since(const struct cowmem__layer *layer, uint64_t gen,
				   size_t *pages, size_t cap)
{
	size_t n = 0;

	for (size_t p = 0; p < layer->pages; p++) {
		if (layer->birth[p] > gen) {
			if (n < cap)
				pages[n] = p;
			n++;
		}
	}
	return n;
}

size_t cowmem__layer_current_run(const struct cowmem__layer *layer, size_t page,
				 size_t limit, uint64_t gen)
{
	size_t n = 0;

	while (n < limit && page + n < layer->pages && layer->birth[page + n] <= gen)
		n++;
	return n;
}

static void set_bit(unsigned char *bits, size_t page)
{
	bits[page / 8] |= (unsigned char)(1u << (page % 8));
}

/* Whether the page file holds a page of this layer, learnt once per page
 * and remembered; every write the library makes into the layer afterwards
 * (captures, loads) records it. The layer's exclusive region writes it
 * directly, but only before its first clone, and nothing asks before that.
 * mincore() on the shared mapping answers for the page cache, mapped or
 * not, up to LEARN_STEP pages per call (a fault's window); a page it calls
 * absent is a hole or a page swapped out, which lseek(SEEK_DATA) tells
 * apart, once per run of holes. Asking SEEK_HOLE alone costs up to the rest of the file per
 * question: 17 ms for a populated GiB. */
#define LEARN_STEP 256

static bool data_bits(struct cowmem__layer *l)
{
	if (!l->data)
		l->data = calloc((l->pages + 7) / 8, 2); /* data bits, then known bits */
	return l->data != NULL;
}

static bool test_bit(const unsigned char *bits, size_t page)
{
	return bits[page / 8] & (1u << (page % 8));
}

/* The first page at or after `page` that the page file holds (swapped out
 * or not), or the layer's end. */
static size_t next_data(const struct cowmem__layer *l, size_t page)
{
	off_t at = l->offset + (off_t)(page * page_size());
	off_t data = lseek(cowmem__pagefile_fd(), at, SEEK_DATA);

	if (data < 0)
		return errno == ENXIO ? l->pages : page; /* cannot tell: data */
	size_t found = (size_t)(data - l->offset) / page_size();
	return found < l->pages ? found : l->pages;
}

static void learn_data(struct cowmem__layer *l, size_t page, size_t end)
{
	unsigned char *known = l->data + (l->pages + 7) / 8;
	unsigned char resident[LEARN_STEP];
	size_t data_at = 0; /* next_data() of the last absent page asked */
	bool asked = false;

	while (page < end) {
		size_t count = end - page < LEARN_STEP ? end - page : LEARN_STEP;
		if (mincore(l->shared + page * page_size(), count * page_size(), resident) < 0)
			memset(resident, 1, count); /* cannot tell: data */
		for (size_t i = 0; i < count; i++, page++) {
			if (test_bit(known, page))
				continue; /* a write since has recorded it */
			set_bit(known, page);
			if (!(resident[i] & 1)) {
				if (!asked || data_at < page)
					data_at = next_data(l, page);
				asked = true;
				if (data_at > page)
					continue; /* a hole */
			}
			set_bit(l->data, page);
		}
	}
}

bool cowmem__layer_has_data(const struct cowmem__layer *layer, size_t page)
{
	struct cowmem__layer *l = (struct cowmem__layer *)layer; /* the bitmaps are a cache */

	if (!data_bits(l))
		return next_data(l, page) == page;
	/* One page: a capture asks about scattered pages, and learning a
	 * step of 256 around each cost 40 ms for 1% of a GiB the first time
	 * (each page cache lookup misses the cache), against 1 ms. */
	if (!test_bit(l->data + (l->pages + 7) / 8, page))
		learn_data(l, page, page + 1);
	return test_bit(l->data, page);
}

size_t cowmem__layer_data_run(const struct cowmem__layer *layer, size_t page, size_t limit,
			      bool want_data)
{
	struct cowmem__layer *l = (struct cowmem__layer *)layer;
	size_t end = page + limit < layer->pages ? page + limit : layer->pages;

	if (!data_bits(l)) /* out of memory: page by page */
		for (size_t p = page; p < end; p++)
			if (cowmem__layer_has_data(layer, p) != want_data)
				return p - page;
	const unsigned char *known = l->data + (l->pages + 7) / 8;
	for (size_t p = page; p < end; p++) {
		if (!test_bit(known, p))
			learn_data(l, p, end);
		if (test_bit(l->data, p) != want_data)
			return p - page;
	}
	return end - page;
}

static void note_data(struct cowmem__layer *layer, size_t page)
{
	if (layer->data) {
		set_bit(layer->data, page);
		set_bit(layer->data + (layer->pages + 7) / 8, page);
	}
}

/* A region starts or stops being one whose mappings the mapped bits
 * describe. When the last one goes, no reader maps a layer page except
 * fresh ones, which note theirs when they stop being fresh: every bit is
 * stale, and a replaced page may be overwritten in place again instead of
 * punched (a reader's read maps a window of up to 256 pages, and each of
 * them would be punched when next replaced, long after that reader). */
void cowmem__layer_mapper_add(struct cowmem__layer *layer)
{
	layer->mappers++;
}

void cowmem__layer_mapper_drop(struct cowmem__layer *layer)
{
	if (--layer->mappers == 0)
		memset(layer->mapped, 0, (layer->pages + 7) / 8);
}

void cowmem__layer_note_mapped(struct cowmem__layer *layer, size_t page, size_t count)
{
	for (size_t p = page; p < page + count && p < layer->pages; p++)
		layer->mapped[p / 8] |= (unsigned char)(1u << (p % 8));
}

/* ---- Generations held ----------------------------------------------------- */

static size_t held_position(const struct cowmem__layer *layer, uint64_t gen)
{
	size_t lo = 0, hi = layer->held_count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (layer->held[mid].gen < gen)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo; /* first entry >= gen */
}

int cowmem__layer_reserve_hold(struct cowmem__layer *layer)
{
	if (layer->held_count == layer->held_capacity) {
		size_t capacity = layer->held_capacity ? layer->held_capacity * 2 : 8;
		struct held_generation *grown = realloc(layer->held, capacity * sizeof *grown);
		if (!grown)
			return -ENOMEM;
		layer->held = grown;
		layer->held_capacity = capacity;
	}
	return 0;
}

int cowmem__layer_hold(struct cowmem__layer *layer, uint64_t gen)
{
	size_t pos = held_position(layer, gen);
	int rc;

	if (pos < layer->held_count && layer->held[pos].gen == gen) {
		layer->held[pos].refs++;
		return 0;
	}
	if ((rc = cowmem__layer_reserve_hold(layer)) < 0)
		return rc;
	memmove(&layer->held[pos + 1], &layer->held[pos],
		(layer->held_count - pos) * sizeof *layer->held);
	layer->held[pos] = (struct held_generation){ gen, 1 };
	layer->held_count++;
	return 0;
}

static void version_forget(struct cowmem__layer *layer, uint32_t index)
{
	struct old_version *v = &layer->pool[index];
	uintptr_t head = (uintptr_t)cowmem__page_map_get(&layer->old, v->page);

	if (head == index + 1u) {
		if (v->older)
			cowmem__page_map_replace(&layer->old, v->page, (void *)(uintptr_t)v->older);
		else
			cowmem__page_map_remove(&layer->old, v->page);
	} else {
		for (uintptr_t at = head; at; at = layer->pool[at - 1].older) {
			if (layer->pool[at - 1].older == index + 1u) {
				layer->pool[at - 1].older = v->older;
				break;
			}
		}
	}
	cowmem__store_unref(v->slot);
	v->death = 0; /* free */
	/* Room for every index was made when it was handed out. */
	layer->pool_free[layer->pool_free_count++] = index;
}

/* The first deadlist of a generation after `gen`. */
static size_t dead_after(const struct cowmem__layer *layer, uint64_t gen)
{
	size_t lo = 0, hi = layer->dead_count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (layer->dead[mid].gen <= gen)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Versions ahead of the one being freed whose books are asked for. */
#define FORGET_AHEAD 8

/* Frees the versions of one deadlist that no held generation sees any
 * more: those born after `keep_through` (the newest held generation before
 * the one released; versions born at or before it are still seen by it). */
static void sweep_deadlist(struct cowmem__layer *layer, struct dead_ref *ref, bool keep_any,
			   uint64_t keep_through)
{
	struct deadlist *list = ref->list;

	while (list->count > 0 &&
	       (!keep_any || list->entries[list->count - 1].birth > keep_through)) {
		/* Each version's pool entry, old-version map slot and store
		 * reference are cache misses at random places (a destroy in
		 * the steady loop frees 2,621 of them): ask ahead, the pool
		 * entries further, since the other two are found in them. */
		size_t n = list->count;
		if (n > 2 * FORGET_AHEAD)
			__builtin_prefetch(&layer->pool[list->entries[n - 1 - 2 * FORGET_AHEAD].version]);
		if (n > FORGET_AHEAD) {
			const struct old_version *v =
				&layer->pool[list->entries[n - 1 - FORGET_AHEAD].version];
			cowmem__page_map_prefetch(&layer->old, v->page);
			cowmem__store_prefetch(v->slot);
		}
		version_forget(layer, list->entries[--list->count].version);
	}
	if (list->count > 0)
		ref->newest_birth = list->entries[list->count - 1].birth;
	if (list->count == 0) {
		free_deadlist(ref->gen, list, NULL);
		ref->list = NULL;
		layer->dead_live--;
	}
}

/* Drops the swept entries once they are half the array: amortized O(1). */
static void dead_compact(struct cowmem__layer *layer)
{
	size_t kept = 0;

	/* Releasing the newest generations sweeps the newest deadlists
	 * (undoing, most often): those go at once. */
	while (layer->dead_count > 0 && !layer->dead[layer->dead_count - 1].list)
		layer->dead_count--;
	if (layer->dead_live * 2 >= layer->dead_count)
		return;
	for (size_t i = 0; i < layer->dead_count; i++)
		if (layer->dead[i].list)
			layer->dead[kept++] = layer->dead[i];
	layer->dead_count = kept;
}

void cowmem__layer_drop(struct cowmem__layer *layer, uint64_t gen)
{
	size_t pos = held_position(layer, gen);

	if (pos == layer->held_count || layer->held[pos].gen != gen)
		return; /* not held: a bug, but nothing to free */
	if (--layer->held[pos].refs > 0)
		return;
	memmove(&layer->held[pos], &layer->held[pos + 1],
		(layer->held_count - pos - 1) * sizeof *layer->held);
	layer->held_count--;

	/* A version replaced at d and born at b is seen by [b, d). With gen
	 * gone, the versions that only gen saw died in (gen, next] (next: the
	 * next held generation; the head sees none) and were born after prev
	 * (the previous held generation). Only the deadlists in that span are
	 * looked at, found by binary search. */
	bool keep_any = pos > 0;
	uint64_t prev = keep_any ? layer->held[pos - 1].gen : 0;
	uint64_t through = pos < layer->held_count ? layer->held[pos].gen : layer->current;
	for (size_t i = dead_after(layer, gen); i < layer->dead_count &&
	     layer->dead[i].gen <= through;
	     i++)
		if (layer->dead[i].list && (!keep_any || layer->dead[i].newest_birth > prev))
			sweep_deadlist(layer, &layer->dead[i], keep_any, prev);
	dead_compact(layer);
	/* Early copies of pages born after the newest held generation: no
	 * snapshot will need them. */
	if (pos == layer->held_count && layer->early && cowmem__early_count(layer->early) > 0)
		cowmem__early_forget_born_after(layer->early, keep_any ? prev : 0, !keep_any);
	cowmem__store_trim();
}

/* ---- Captures --------------------------------------------------------- */

/* Reading a birth maps the zero page, and the write that follows replaces
 * it: a fault and a TLB flush that interrupts the copier's CPU, per 512
 * pages of the layer. Writable from the first capture on, at once. */
static void populate_birth(struct cowmem__layer *layer)
{
	uintptr_t first = ((uintptr_t)layer->birth + page_size() - 1) & ~(page_size() - 1);
	uintptr_t end = ((uintptr_t)(layer->birth + layer->pages)) & ~(page_size() - 1);

	if (end > first)
		(void)madvise((void *)first, end - first, MADV_POPULATE_WRITE); /* 5.14+ */
	layer->birth_populated = true;
}

int cowmem__layer_capture_begin(struct cowmem__layer *layer, size_t count)
{
	struct deadlist *list = calloc(1, sizeof *list);

	if (!layer->birth_populated)
		populate_birth(layer);
	if (!list)
		return -ENOMEM;
	list->capacity = count ? count : 64;
	list->entries = malloc(list->capacity * sizeof *list->entries);
	if (!list->entries) {
		free(list);
		return -ENOMEM;
	}
	pthread_mutex_lock(&early_copy_lock);
	layer->captures_begun++;
	pthread_mutex_unlock(&early_copy_lock);
	layer->capture = list;
	layer->last_capture_pages = 0;
	layer->last_capture_early = 0;
	return 0;
}

static int deadlist_append(struct deadlist *list, uint32_t index, uint64_t birth)
{
	if (list->count == list->capacity) {
		size_t capacity = list->capacity * 2;
		struct dead_entry *grown = realloc(list->entries, capacity * sizeof *grown);
		if (!grown)
			return -ENOMEM;
		list->entries = grown;
		list->capacity = capacity;
	}
	list->entries[list->count++] = (struct dead_entry){ birth, index };
	return 0;
}

static int by_birth(const void *a, const void *b)
{
	uint64_t x = ((const struct dead_entry *)a)->birth, y = ((const struct dead_entry *)b)->birth;
	return x < y ? -1 : x > y;
}

/* Sorts a capture's deadlist by birth. The births of one capture span the
 * generations alive, a few bytes' worth: a radix sort over those bytes
 * takes about a tenth of qsort()'s 0.1-0.3 ms for 2,621 entries. */
static void sort_by_birth(struct dead_entry *entries, size_t count)
{
	uint64_t low = UINT64_MAX, high = 0;

	for (size_t i = 0; i < count; i++) {
		low = entries[i].birth < low ? entries[i].birth : low;
		high = entries[i].birth > high ? entries[i].birth : high;
	}
	struct dead_entry *spare = count >= 64 ? malloc(count * sizeof *spare) : NULL;
	if (!spare) {
		qsort(entries, count, sizeof *entries, by_birth);
		return;
	}
	struct dead_entry *from = entries, *to = spare;
	for (unsigned shift = 0; shift < 64 && ((high - low) >> shift) != 0; shift += 8) {
		size_t start[257] = { 0 };
		for (size_t i = 0; i < count; i++)
			start[((from[i].birth - low) >> shift & 0xff) + 1]++;
		for (size_t d = 1; d < 257; d++)
			start[d] += start[d - 1];
		for (size_t i = 0; i < count; i++)
			to[start[(from[i].birth - low) >> shift & 0xff]++] = from[i];
		struct dead_entry *t = from;
		from = to;
		to = t;
	}
	if (from != entries)
		memcpy(entries, from, count * sizeof *entries);
	free(spare);
}

/* A pool index for a new version; the pool and its free list grow
 * together, so that freeing one never needs memory. */
static int pool_take(struct cowmem__layer *layer, uint32_t *index)
{
	if (layer->pool_free_count > 0) {
		*index = layer->pool_free[--layer->pool_free_count];
		return 0;
	}
	if (layer->pool_count == layer->pool_capacity) {
		size_t capacity = layer->pool_capacity ? layer->pool_capacity * 2 : 256;
		if (capacity > UINT32_MAX)
			return -ENOMEM;
		struct old_version *pool = realloc(layer->pool, capacity * sizeof *pool);
		if (!pool)
			return -ENOMEM;
		layer->pool = pool;
		uint32_t *free_list = realloc(layer->pool_free, capacity * sizeof *free_list);
		if (!free_list)
			return -ENOMEM;
		layer->pool_free = free_list;
		layer->pool_capacity = capacity;
	}
	*index = (uint32_t)layer->pool_count++;
	return 0;
}

/* A generation at or after birth is held: it still sees a page born then.
 * (Every held generation is at most the current one.) */
static bool seen_by_a_held_generation(const struct cowmem__layer *layer, uint64_t birth)
{
	return layer->held_count > 0 && layer->held[layer->held_count - 1].gen >= birth;
}

/* Keeps the layer's page as an old version for the generations that see
 * it: [birth, the capture's generation); *keep is where its content is to
 * be copied (NULL: nothing to copy). `early` is a slot holding that
 * content already (COWMEM__HOLE: none), whose reference this takes. */
static int keep_old_version(struct cowmem__layer *layer, size_t page, cowmem__slot early,
			    char **keep)
{
	uint64_t birth = layer->birth[page];
	cowmem__slot slot = COWMEM__HOLE;
	uint32_t index;
	int rc;

	*keep = NULL;
	if (!seen_by_a_held_generation(layer, birth)) {
		if (early != COWMEM__HOLE)
			cowmem__store_unref(early);
		return 0;
	}
	if ((rc = cowmem__layer_load(layer, page, page + 1)) < 0 || (rc = pool_take(layer, &index)) < 0)
		goto err_early;
	if ((rc = deadlist_append(layer->capture, index, birth)) < 0)
		goto err_index;
	if (early != COWMEM__HOLE) {
		slot = early; /* copied while the page was this version */
		early = COWMEM__HOLE;
		layer->last_capture_early++;
	} else if (cowmem__layer_has_data(layer, page)) {
		if ((rc = cowmem__store_alloc(&slot)) < 0) {
			layer->capture->count--;
			goto err_index;
		}
		*keep = cowmem__store_page(slot);
	}
	uintptr_t newest = (uintptr_t)cowmem__page_map_get(&layer->old, page);
	layer->pool[index] = (struct old_version){ birth, layer->current + 1, page, slot,
						   (uint32_t)newest };
	if (cowmem__page_map_put(&layer->old, page, (void *)(uintptr_t)(index + 1u)) < 0) {
		layer->pool[index].death = 0;
		cowmem__store_unref(slot);
		layer->capture->count--;
		rc = -ENOMEM;
		goto err_index;
	}
	return 0;
err_index:
	layer->pool_free[layer->pool_free_count++] = index;
err_early:
	if (early != COWMEM__HOLE)
		cowmem__store_unref(early);
	return rc;
}

/* The books of a replaced page read and write these at random pages, a
 * cache miss each: a capture that knows its next pages asks for them
 * early (cowmem__layer_replace). */
void cowmem__layer_prefetch(const struct cowmem__layer *layer, size_t page)
{
	__builtin_prefetch(&layer->birth[page], 1);
	__builtin_prefetch(&layer->mapped[page / 8], 1);
	if (layer->data) {
		__builtin_prefetch(&layer->data[page / 8], 1);
		__builtin_prefetch(&layer->data[(layer->pages + 7) / 8 + page / 8], 1);
	}
	cowmem__page_map_prefetch(&layer->old, page);
	if (layer->early)
		cowmem__early_prefetch(layer->early, page);
}

int cowmem__layer_replace(struct cowmem__layer *layer, size_t page, const char *content,
			  struct cowmem__page_job *job)
{
	cowmem__slot early = COWMEM__HOLE;

	if (layer->early && !cowmem__early_take(layer->early, page, &early))
		early = COWMEM__HOLE;
	int rc = keep_old_version(layer, page, early, &job->keep);

	if (rc < 0)
		return rc;
	layer->last_capture_pages++;
	/* A reader that maps the current page would see it change: take it
	 * out of every mapping first. A punch zaps only page cache entries;
	 * private copies in readers stay. Nobody maps it otherwise, and the
	 * page is overwritten where it is. */
	unsigned char bit = (unsigned char)(1u << (page % 8));
	job->punch = -1;
	if (layer->mapped[page / 8] & bit) {
		job->punch = layer->offset + (off_t)(page * page_size());
		layer->mapped[page / 8] &= (unsigned char)~bit;
	}
	job->target = layer->shared + page * page_size();
	job->content = content;
	note_data(layer, page);
	layer->birth[page] = layer->current + 1;
	return 0;
}

void cowmem__layer_capture_abort(struct cowmem__layer *layer)
{
	free_deadlist(0, layer->capture, NULL);
	layer->capture = NULL;
}

uint64_t cowmem__layer_capture_end(struct cowmem__layer *layer)
{
	struct deadlist *list = layer->capture;
	uint64_t gen = ++layer->current;

	layer->capture = NULL;
	/* Copied early for pages the head did not write after all (reset,
	 * or another mapping at its address when the pre-copier looked). */
	if (layer->early)
		cowmem__early_clear(layer->early);
	if (list->count > 1)
		sort_by_birth(list->entries, list->count);
	if (list->count > 0 && layer->dead_count == layer->dead_capacity) {
		size_t capacity = layer->dead_capacity ? layer->dead_capacity * 2 : 16;
		struct dead_ref *grown = realloc(layer->dead, capacity * sizeof *grown);
		if (grown) {
			layer->dead = grown;
			layer->dead_capacity = capacity;
		}
	}
	if (list->count == 0 || layer->dead_count == layer->dead_capacity) {
		/* Out of memory for the entry: the versions stay in the pool,
		 * freed with the layer (kept longer, never lost). */
		free_deadlist(gen, list, NULL);
		return gen;
	}
	layer->dead[layer->dead_count++] =
		(struct dead_ref){ gen, list->entries[list->count - 1].birth, list };
	layer->dead_live++;
	return gen;
}

/* ---- Early copies (pre_copier.c) ---------------------------------------- */

void cowmem__layer_last_capture(const struct cowmem__layer *layer, size_t *replaced,
				size_t *copied_early)
{
	*replaced = layer->last_capture_pages;
	*copied_early = layer->last_capture_early;
}

size_t cowmem__layer_early_count(const struct cowmem__layer *layer)
{
	return layer->early ? cowmem__early_count(layer->early) : 0;
}

uint64_t cowmem__layer_captures_begun(const struct cowmem__layer *layer)
{
	return layer->captures_begun;
}

/* Without the engine lock, the layer referenced: copies the pages of
 * cowmem__layer_early_want() unless a capture began since `begun`. */
bool cowmem__layer_early_copy(const struct cowmem__layer *layer, uint64_t begun,
			      const cowmem__slot *slots, const char *const *from, size_t count)
{
	pthread_mutex_lock(&early_copy_lock);
	bool copy = layer->captures_begun == begun;
	for (size_t i = 0; copy && i < count; i++)
		memcpy(cowmem__store_page(slots[i]), from[i], page_size());
	pthread_mutex_unlock(&early_copy_lock);
	return copy;
}

/* Whether the next capture, replacing page, would keep its old version
 * and copy it: then 1, with a slot for the copy and where to copy it from
 * (the layer's page, which stays as it is until a capture begins). */
int cowmem__layer_early_want(struct cowmem__layer *layer, size_t page, cowmem__slot *slot,
			     const char **from)
{
	int rc;

	if (!layer->early && (rc = cowmem__early_new(&layer->early)) < 0)
		return rc;
	if (cowmem__early_has(layer->early, page) ||
	    !seen_by_a_held_generation(layer, layer->birth[page]))
		return 0;
	if ((rc = cowmem__layer_load(layer, page, page + 1)) < 0)
		return rc;
	if (!cowmem__layer_has_data(layer, page))
		return 0; /* a hole: its old version needs no copy */
	if ((rc = cowmem__store_alloc(slot)) < 0)
		return rc;
	*from = layer->shared + page * page_size();
	return 1;
}

/* Records the copies made for cowmem__layer_early_want() while the layer
 * was at generation `copied_at` (cowmem__layer_early_copy); if a capture
 * ended since, the pages they copied may be old versions already, and they
 * are let go. Takes the slots' references. */
void cowmem__layer_early_add(struct cowmem__layer *layer, uint64_t copied_at, const size_t *pages,
			     const cowmem__slot *slots, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		if (layer->current != copied_at || cowmem__early_has(layer->early, pages[i]))
			cowmem__store_unref(slots[i]);
		else
			(void)cowmem__early_add(layer->early, pages[i], slots[i],
						layer->birth[pages[i]]);
	}
}

/* ---- Layers loaded from a snapshot file -------------------------------- */

int cowmem__layer_set_source(struct cowmem__layer *layer, int fd, off_t offset)
{
	if (!(layer->loaded = calloc((layer->pages + 7) / 8, 1)))
		return -ENOMEM;
	layer->source = fd;
	layer->source_offset = offset;
	return 0;
}

static bool is_loaded(const struct cowmem__layer *layer, size_t page)
{
	return !layer->loaded || (layer->loaded[page / 8] & (1u << (page % 8)));
}

size_t cowmem__layer_loaded_run(const struct cowmem__layer *layer, size_t page, size_t limit)
{
	size_t n = 0;

	while (n < limit && page + n < layer->pages && is_loaded(layer, page + n))
		n++;
	return n;
}

/* Copies the pages of [page, end) not loaded yet from the file into the
 * page file; when the page before `page` was loaded already (reading goes
 * in order), also up to LOAD_AHEAD pages after it. A scattered touch reads
 * one page (one page of memory), a sequential reader one fault per window. */
#define LOAD_AHEAD 64

int cowmem__layer_load(struct cowmem__layer *layer, size_t page, size_t end)
{
	static char *buffer; /* LOAD_AHEAD pages, used under the lock */
	size_t ps = page_size();

	if (!layer->loaded)
		return 0;
	if (!buffer && !(buffer = malloc(LOAD_AHEAD * ps)))
		return -ENOMEM;
	if (page > 0 && is_loaded(layer, page - 1) && end < page + LOAD_AHEAD)
		end = page + LOAD_AHEAD < layer->pages ? page + LOAD_AHEAD : layer->pages;
	for (size_t p = page; p < end;) {
		if (is_loaded(layer, p)) {
			p++;
			continue;
		}
		size_t n = 1;
		while (p + n < end && n < LOAD_AHEAD && !is_loaded(layer, p + n))
			n++;
		int rc = cowmem__pread_all(layer->source, buffer, n * ps,
				   layer->source_offset + (off_t)(p * ps));
		if (rc < 0)
			return rc;
		for (size_t k = 0; k < n; k++) {
			const char *data = buffer + k * ps;
			if (!cowmem__page_is_zero(data)) {
				if (pwrite(cowmem__pagefile_fd(), data, ps,
					   layer->offset + (off_t)((p + k) * ps)) != (ssize_t)ps)
					return errno ? -errno : -EIO;
				note_data(layer, p + k);
			}
			layer->loaded[(p + k) / 8] |= (unsigned char)(1u << ((p + k) % 8));
		}
		p += n;
	}
	return 0;
}

int cowmem__layer_read_first_version(const struct cowmem__layer *layer, size_t page,
				     char *buf)
{
	if (is_loaded(layer, page))
		return 1; /* the page file has it */
	return cowmem__pread_all(layer->source, buf, page_size(),
			 layer->source_offset + (off_t)(page * page_size()));
}

/* In a forked child the parent's layers are forgotten, not freed. */
void cowmem__layer_fork_child(void)
{
	layer_count = 0;
	/* The pre-copier's thread may have held it: it stayed in the parent. */
	pthread_mutex_init(&early_copy_lock, NULL);
}
