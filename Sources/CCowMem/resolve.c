/*
 * Resolving faults: the fault server calls cowmem__resolve()
 * for each userfaultfd message, with engine.lock held. Everything it reads
 * is immutable while the lock is held: the layer's pages (only a capture,
 * under the lock, changes them) and store versions (never change).
 *
 *   head or never cloned   only holes reach the server (MISSING): the zero
 *                          page for a read, a zero-filled page for a write;
 *   reader, page from its layer   MINOR: map the layer's pages (a window of
 *                          them) read-only and shared; a write takes a
 *                          private copy at once;
 *   reader, older version  a copy of the store's version (or zeros).
 *
 * A message can be stale: a capture ran between the fault and its message
 * being read, or another thread's fault resolved the page. Every answer is
 * therefore decided from the state now, and "already there" means wake.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"

/* Pages mapped per fault, at most: a round trip through the server costs
 * 4-80 us here (most of it waking a thread on the other CPU), mapping a
 * page about 0.1 us; 256-page windows read a whole old snapshot at about
 * 0.5 us per page against 2 us with 64. */
#define FILL_WINDOW 256

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* A page that cannot be provided must fail loudly, never read wrong bytes
 * and never leave its thread waiting: SIGBUS (UFFDIO_POISON, 6.6+) or, if
 * that is refused, the process stops with the reason. */
void cowmem__fail_page(const struct cowmem_region *r, size_t page, int error)
{
	cowmem__say_cannot_provide(page, r->data, error);
	if ((cowmem__engine.features & FEATURE_POISON) &&
	    cowmem__uffd_poison(cowmem__engine.uffd, cowmem__page(r, page),
				cowmem__engine.page_size) == 0)
		return;
	abort();
}

static void wake(const struct cowmem_region *r, size_t page)
{
	(void)cowmem__uffd_wake(cowmem__engine.uffd, cowmem__page(r, page),
				cowmem__engine.page_size);
}

/* What a page reads as, for region r. */
struct source {
	bool from_store;    /* else the layer's current page (or its hole) */
	cowmem__slot slot;  /* from_store: COWMEM__HOLE reads as zeros */
};

static struct source source_of(const struct cowmem_region *r, size_t page)
{
	struct source s = { false, COWMEM__HOLE };

	if (r->mode != COWMEM__READER)
		return s;
	if (cowmem__overlay_find(r->overlay, page, &s.slot)) {
		s.from_store = true;
		return s;
	}
	s.from_store = cowmem__layer_lookup(r->layer, page, r->gen, &s.slot) ==
		       COWMEM__FROM_STORE;
	return s;
}

/* How many pages from `page` on read the layer's current page for r, all
 * with data (want_data) or all holes, up to FILL_WINDOW. */
static size_t layer_window(const struct cowmem_region *r, size_t page, bool want_data)
{
	size_t limit = cowmem__layer_data_run(r->layer, page, FILL_WINDOW, want_data);

	/* A loaded layer's pages not copied in yet are no holes. */
	limit = cowmem__layer_loaded_run(r->layer, page, limit);
	if (r->mode != COWMEM__READER)
		return limit;
	limit = cowmem__layer_current_run(r->layer, page, limit, r->gen);
	for (size_t n = 1; n < limit; n++) {
		cowmem__slot ignored;
		if (cowmem__overlay_find(r->overlay, page + n, &ignored))
			return n;
	}
	return limit;
}

/* The result of a fill ioctl: resolved, already resolved, or a failure. */
static void finish(const struct cowmem_region *r, size_t page, int rc, size_t done)
{
	if (rc == 0 || done > 0)
		return;
	if (rc == -EEXIST) { /* another thread's fault resolved it */
		wake(r, page);
		return;
	}
	cowmem__fail_page(r, page, -rc);
}

static void fill_zeros(struct cowmem_region *r, size_t page, bool write)
{
	char *addr = cowmem__page(r, page);
	size_t done = 0;
	int rc;

	if (write) {
		rc = cowmem__uffd_copy(cowmem__engine.uffd, addr, cowmem__zero_page,
				       cowmem__engine.page_size, 0, &done);
	} else {
		size_t n = r->mode == COWMEM__READER && source_of(r, page).from_store
				   ? 1 : layer_window(r, page, false);
		if (n == 0)
			n = 1;
		rc = cowmem__uffd_zeropage(cowmem__engine.uffd, addr, n * cowmem__engine.page_size,
					   &done);
	}
	finish(r, page, rc, done);
}

static void fill_copy(struct cowmem_region *r, size_t page, const char *from, bool write)
{
	size_t done = 0;
	int rc = cowmem__uffd_copy(cowmem__engine.uffd, cowmem__page(r, page), from,
				   cowmem__engine.page_size, 0, &done);

	finish(r, page, rc, done);
	/* Filled with a version, not written (yet): cowmem_dirty_pages()
	 * compares it. A full map only makes it list the page. */
	if (!write && (rc == 0 || done > 0))
		(void)cowmem__page_map_put(&r->filled, page, (void *)1);
}

static void map_layer_pages(struct cowmem_region *r, size_t page)
{
	size_t n = layer_window(r, page, true), done = 0;

	if (n == 0)
		n = 1;
	int rc = cowmem__uffd_continue(cowmem__engine.uffd, cowmem__page(r, page),
				       n * cowmem__engine.page_size, &done);
	size_t mapped = done / cowmem__engine.page_size;
	if (rc == 0)
		mapped = n;
	/* Replacing these pages must unmap them from r first. */
	cowmem__region_note_mapped(r, page, mapped);
	finish(r, page, rc, done);
}

static void resolve_page(struct cowmem_region *r, size_t page, bool minor, bool write)
{
	struct source s = source_of(r, page);

	if (s.from_store) {
		if (s.slot == COWMEM__HOLE)
			fill_zeros(r, page, write);
		else
			fill_copy(r, page, cowmem__store_page(s.slot), write);
		return;
	}
	int rc = cowmem__layer_load(r->layer, page, page + 1);
	if (rc < 0) {
		cowmem__fail_page(r, page, -rc);
		return;
	}
	if (!cowmem__layer_has_data(r->layer, page)) {
		fill_zeros(r, page, write);
		return;
	}
	const char *layer_page = cowmem__layer_shared(r->layer) + page * cowmem__engine.page_size;
	if (r->mode == COWMEM__READER && write) {
		fill_copy(r, page, layer_page, true); /* one fault instead of two */
	} else if (r->uffd_modes & UFFDIO_REGISTER_MODE_MINOR) {
		map_layer_pages(r, page);
	} else {
		/* The layer has the page now and nothing else may hide it:
		 * the kernel maps it when the thread retries. */
		(void)minor;
		wake(r, page);
	}
}

void cowmem__resolve(const struct uffd_msg *msg, uint64_t read_at_ns)
{
	if (msg->event != UFFD_EVENT_PAGEFAULT)
		return; /* no other events are enabled */
	uint64_t flags = msg->arg.pagefault.flags;
	char *addr = (char *)(uintptr_t)msg->arg.pagefault.address;
	struct cowmem_region *r = cowmem__find(addr);

	if (!r) {
		/* Destroyed while a page of it was being touched: let the
		 * thread retry and meet the unmapped range. */
		uintptr_t page = (uintptr_t)addr & ~(uintptr_t)(cowmem__engine.page_size - 1);
		(void)cowmem__uffd_wake(cowmem__engine.uffd, (void *)page,
					cowmem__engine.page_size);
		return;
	}
	size_t page = (size_t)(addr - r->data) / cowmem__engine.page_size;
	if (r->uffd_modes == 0) {
		/* Read before r left the library's descriptor: the head of a
		 * fold, or a clone whose fold is pending, both on the fence.
		 * r's mapping is empty and the layer lacks the pages the fold
		 * has yet to copy, so filling it would hide what r wrote (the
		 * kernel fills a range registered with any descriptor). The
		 * thread retries and waits on the fence. */
		wake(r, page);
		return;
	}
	if (flags & UFFD_PAGEFAULT_FLAG_WP)
		wake(r, page); /* the engine never write-protects */
	else
		resolve_page(r, page, flags & UFFD_PAGEFAULT_FLAG_MINOR,
			     flags & UFFD_PAGEFAULT_FLAG_WRITE);
	r->faults++;
	r->blocked_ns += now_ns() - read_at_ns;
}
