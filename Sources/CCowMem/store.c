/*
 * The version store: page versions that no layer holds any more (an old
 * version a capture replaced, or a branch's own page), in anonymous memory
 * that is mapped once, never registered with userfaultfd and recycled.
 *
 * Slots come in chunks that never move, so a slot's address is stable and
 * the fault server can UFFDIO_COPY straight from it. Freed slots stay warm
 * for reuse (a fresh page costs a fault and an allocation, 2-8 us here;
 * a recycled one only the copy) until more than STORE_SLACK of them are
 * free beyond the slots in use; then the extra ones give their memory back
 * (MADV_DONTNEED), so memory follows the live versions, not the history.
 *
 * Everything here runs under engine.lock.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "engine.h"

#define CHUNK_SLOTS 512u     /* 2 MiB of 4 KiB pages per chunk */
#define STORE_SLACK 4096u    /* free warm slots kept beyond the used ones */

static char **chunks;        /* chunk base addresses */
static size_t chunk_count, chunk_capacity;
static uint32_t *refs;       /* per slot */
/* Free slots: `warm` still have their page, `cold` gave it back. */
static cowmem__slot *warm, *cold;
static size_t warm_count, cold_count, free_capacity;
static size_t used;

static size_t slot_capacity(void)
{
	return chunk_count * CHUNK_SLOTS;
}

char *cowmem__store_page(cowmem__slot slot)
{
	return chunks[slot / CHUNK_SLOTS] + (size_t)(slot % CHUNK_SLOTS) * cowmem__engine.page_size;
}

static int grow(void)
{
	size_t capacity = slot_capacity() + CHUNK_SLOTS;

	if (capacity >= COWMEM__HOLE)
		return -ENOMEM;
	if (chunk_count == chunk_capacity) {
		size_t n = chunk_capacity ? chunk_capacity * 2 : 16;
		char **grown = realloc(chunks, n * sizeof *chunks);
		if (!grown)
			return -ENOMEM;
		chunks = grown;
		chunk_capacity = n;
	}
	uint32_t *grown_refs = realloc(refs, capacity * sizeof *refs);
	if (!grown_refs)
		return -ENOMEM;
	refs = grown_refs;
	if (capacity > free_capacity) {
		cowmem__slot *w = realloc(warm, capacity * sizeof *warm);
		if (!w)
			return -ENOMEM;
		warm = w;
		cowmem__slot *c = realloc(cold, capacity * sizeof *cold);
		if (!c)
			return -ENOMEM;
		cold = c;
		free_capacity = capacity;
	}
	/* MAP_NORESERVE: the store can hold more than RAM plus swap would
	 * commit; its pages are charged as they are written. Not inherited by
	 * children, like region memory. */
	char *chunk = mmap(NULL, CHUNK_SLOTS * cowmem__engine.page_size, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (chunk == MAP_FAILED)
		return -errno;
	(void)madvise(chunk, CHUNK_SLOTS * cowmem__engine.page_size, MADV_DONTFORK);
	/* A chunk is made when a capture needs slots, and fills: one call
	 * that zeroes its pages costs less than a fault per slot in the
	 * copies (5.14+; without it, the faults). */
	(void)madvise(chunk, CHUNK_SLOTS * cowmem__engine.page_size, MADV_POPULATE_WRITE);
	chunks[chunk_count] = chunk;
	/* New slots are cold (never touched); hand them out lowest first. */
	for (uint32_t i = CHUNK_SLOTS; i-- > 0;)
		cold[cold_count++] = (cowmem__slot)(chunk_count * CHUNK_SLOTS + i);
	chunk_count++;
	return 0;
}

int cowmem__store_alloc(cowmem__slot *slot)
{
	if (warm_count == 0 && cold_count == 0) {
		int rc = grow();
		if (rc < 0)
			return rc;
	}
	*slot = warm_count ? warm[--warm_count] : cold[--cold_count];
	refs[*slot] = 1;
	used++;
	return 0;
}

void cowmem__store_ref(cowmem__slot slot)
{
	if (slot != COWMEM__HOLE)
		refs[slot]++;
}

void cowmem__store_unref(cowmem__slot slot)
{
	if (slot == COWMEM__HOLE || --refs[slot] > 0)
		return;
	warm[warm_count++] = slot;
	used--;
}

void cowmem__store_prefetch(cowmem__slot slot)
{
	if (slot != COWMEM__HOLE)
		__builtin_prefetch(&refs[slot], 1);
}

static void release_all(void)
{
	for (size_t i = 0; i < chunk_count; i++)
		munmap(chunks[i], CHUNK_SLOTS * cowmem__engine.page_size);
	free(chunks);
	free(refs);
	free(warm);
	free(cold);
	chunks = NULL;
	refs = NULL;
	warm = cold = NULL;
	chunk_count = chunk_capacity = warm_count = cold_count = free_capacity = 0;
}

/* With no layer left there is nothing to keep warm for: a process that
 * stops using regions gets its mappings back. */
void cowmem__store_release(void)
{
	if (used == 0)
		release_all();
}

void cowmem__store_trim(void)
{
	while (warm_count > used + STORE_SLACK) {
		cowmem__slot slot = warm[--warm_count];
		(void)madvise(cowmem__store_page(slot), cowmem__engine.page_size, MADV_DONTNEED);
		cold[cold_count++] = slot;
	}
}

size_t cowmem__store_used(void)
{
	return used;
}

/* The chunks were not inherited (MADV_DONTFORK): start empty. The arrays
 * are plain heap memory, which the child owns; free them. */
void cowmem__store_fork_child(void)
{
	chunk_count = 0; /* nothing to unmap: the chunks were not inherited */
	used = 0;
	release_all();
}
