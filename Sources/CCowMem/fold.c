/*
 * Cloning: the three ways a region's content becomes shareable.
 *
 *   freeze   a region that was never cloned maps its layer shared; it
 *            becomes the layer's head, mapping it privately (O(1)).
 *   fold     the head's own pages (what it wrote since the last capture)
 *            replace the layer's pages, the old ones kept for the
 *            generations that still see them; the head's page tables are
 *            moved away whole, so it shares the new pages again and its
 *            next writes are the kernel's copy-on-write. Costs the pages
 *            written since the previous clone.
 *   branch   a reader that cannot become the head (the head wrote too, or
 *            the reader is at an old generation) copies its own pages into
 *            the store as an overlay that it and the clone share. Without
 *            folds a reader whose overlay grew large rebases after it
 *            (rebase.c).
 *
 * A reader at the current generation whose head wrote nothing since (the
 * "newest clone becomes the working copy" loop) takes over as head first,
 * so that loop folds too. ARCHITECTURE.md has the whole design.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "engine.h"

/* The fence's thread reads without sleeping while the head's page tables
 * move (fence.c) only where they move in 1 GiB entries, a TLB flush each.
 * Elsewhere they move 2 MiB at a time, and each flush interrupts every
 * other CPU that runs the process: a thread spinning there made a 256 MiB
 * move cost about 3 ms (128 interrupts, each a VM exit here; a probe) where
 * a sleeping one costs the wake-up, 0.1-0.3 ms. */
#define MOVED_WHOLE ((size_t)1 << 30)

/* Moves r's page tables to a staging range; r keeps its mapping, empty.
 * MREMAP_DONTUNMAP on file mappings is 5.13+. */
static int move_page_tables(struct cowmem_region *r, char **area, size_t *length, char **moved)
{
	char *staging;
	int rc = cowmem__reserve_aligned(r->size, area, length, &staging);

	if (rc < 0)
		return rc;
	*moved = cowmem__sys_mremap(r->data, r->size, r->size,
				    MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, staging);
	if (*moved == MAP_FAILED) {
		rc = -errno;
		munmap(*area, *length);
		return rc;
	}
	return 0;
}

_Noreturn void cowmem__fold_abort(const char *what, int rc)
{
	/* Past the point of no return the head's new pages exist only in the
	 * staging range: stopping here with the reason beats losing them. */
	fprintf(stderr, "cowmem: cannot finish a clone (%s): %s\n", what, strerror(-rc));
	abort();
}

/* ---- freeze --------------------------------------------------------------- */

static int freeze(struct cowmem_region *r)
{
	char *area = NULL, *moved = NULL;
	size_t length = 0;
	/* Without folds the layer never changes: the region reads it as it
	 * is from now on, a reader like its clones. */
	uint64_t gen = cowmem__layer_current(r->layer);
	int rc = cowmem__folds ? 0 : cowmem__layer_hold(r->layer, gen);

	if (rc < 0)
		return rc;

	/* The populated page tables move in microseconds, to the layer's
	 * shared mapping where the next capture's copies find them, or else
	 * aside for the janitor to tear down; without DONTUNMAP the MAP_FIXED
	 * below zaps them. A registered mapping would move entry by entry. */
	bool adopted = false;
	if (cowmem__engine.features & FEATURE_DONTUNMAP) {
		if (r->uffd_modes == 0 || cowmem__uffd_unregister(cowmem__engine.uffd, r->data,
								  r->size) == 0) {
			r->uffd_modes = 0;
			adopted = cowmem__layer_adopt_tables(r->layer, r->data) == 0;
		}
		if (!adopted && move_page_tables(r, &area, &length, &moved) < 0)
			area = NULL;
	}
	char *data = mmap(r->data, r->size, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, cowmem__pagefile_fd(),
			  cowmem__layer_offset(r->layer));
	if (area)
		cowmem__janitor_unmap(area, length);
	if (data == MAP_FAILED) {
		rc = -errno;
		if (!cowmem__folds)
			cowmem__layer_drop(r->layer, gen);
		return rc;
	}
	(void)madvise(data, r->size, MADV_DONTFORK);
	r->uffd_modes = 0;
	/* Holes read as the zero page through the server; unregistered they
	 * would allocate in the layer, still with the right bytes. */
	(void)cowmem__register(r, UFFDIO_REGISTER_MODE_MISSING);
	if (cowmem__folds) {
		r->mode = COWMEM__HEAD;
		cowmem__layer_set_head(r->layer, r);
	} else {
		r->mode = COWMEM__READER;
		r->gen = gen;
	}
	return 0;
}

/* ---- fold ---------------------------------------------------------------- */

struct fold_context {
	struct cowmem__layer *layer;
	char *staging;
	struct cowmem__copy_batch *copies;
	size_t offset; /* of the pages a scan reports */
	/* Every run folded, to drop from staging afterwards; NULL when
	 * staging goes to the janitor whole. */
	struct run_list *folded;
	bool folded_lost; /* out of memory for one: staging goes whole */
};

/* The walk of staging's page tables (about 1.4 ms for 1 GiB) comes in two
 * parts, the upper one on the copier's thread, when staging has at least
 * this many pages. Each part collects its runs, and the books come after,
 * so that they can ask for the pages to come ahead of time. */
#define SPLIT_SCAN_MIN_PAGES 4096

struct scan_part {
	char *start;
	size_t first, pages; /* the part: page indices of staging */
	struct run_list found;
	size_t file_pages; /* mapping the page cache, in the part */
	bool count_files;  /* only a fold that may keep mappings needs them */
	int rc;
};

static int note_run(size_t first, size_t end, void *ctx)
{
	struct scan_part *s = ctx;

	return cowmem__run_list_add(&s->found, s->first + first, s->first + end);
}

static void scan_part(void *arg)
{
	struct scan_part *s = arg;

	s->rc = cowmem__scan_own_unlocked(s->start + s->first * cowmem__engine.page_size, s->pages,
					  note_run, s, s->count_files ? &s->file_pages : NULL);
}

static int replace_run(size_t first, size_t end, void *ctx)
{
	struct fold_context *c = ctx;

	for (size_t page = c->offset + first; page < c->offset + end; page++) {
		struct cowmem__page_job job;
		int rc = cowmem__layer_replace(c->layer, page,
					       c->staging + page * cowmem__engine.page_size,
					       &job);
		if (rc < 0)
			cowmem__fold_abort("keeping an old page version", rc);
		cowmem__copier_add(c->copies, &job);
	}
	if (c->folded && cowmem__run_list_add(c->folded, c->offset + first, c->offset + end) < 0)
		c->folded_lost = true;
	return 0;
}

/* Dropping a run of own pages costs about 0.4 us here (a 1% fold, 2,621
 * runs: 1.1 ms), faulting a page in again about 0.1 us (a head reading all
 * of 1 GiB: 36 ms against 10 ms): the tables go back when they map more
 * than this many layer pages per run dropped. */
#define KEEP_MAPPINGS_RATIO 4

/* Once its pages are in the layer, staging holds the head's own pages,
 * copied now, and the layer pages the head had mapped: a head that reads
 * much of its region between clones would fault every one of them in
 * again (reading 1 GiB took 50-73 ms after each clone, against 8 ms with
 * the pages mapped). So the own pages are dropped from staging and the
 * page tables go back to the head, whole: it reads every page it had
 * mapped without a fault, and the layer's new pages, where its own were,
 * at its next access. The pages it had mapped are right as they are: a
 * fold replaces only pages the head wrote, which it mapped as its own,
 * never the layer's. Nonzero: staging is as it was, for the janitor. */
static int return_page_tables(struct cowmem_region *head, char *staging, bool fenced,
			      const struct run_list *folded)
{
	struct cowmem__discard *d = cowmem__discard_begin(staging);
	int rc = 0;

	if (!d)
		return -ENOMEM;
	for (size_t i = 0; rc == 0 && i < folded->count; i++)
		rc = cowmem__discard_run(folded->runs[i][0], folded->runs[i][1], d);
	int flushed = cowmem__discard_end(d);
	if (rc < 0 || flushed < 0)
		return rc < 0 ? rc : flushed;
	/* Registered on the fence, the move would wait for its remap event;
	 * nobody touches staging, so it can leave the fence first. */
	if (fenced)
		cowmem__fence_leave(staging, head->size);
	if (cowmem__sys_mremap(staging, head->size, head->size, MREMAP_MAYMOVE | MREMAP_FIXED,
			       head->data) == MAP_FAILED)
		return -errno;
	/* The head's mapping is staging's now: the library's registration
	 * went with the old one. */
	if (!fenced)
		head->uffd_modes = 0;
	return 0;
}

static void release_head(struct cowmem_region *head, bool fenced)
{
	if (fenced) {
		cowmem__fence_moved(); /* if it has not been said yet */
		cowmem__fence_lower(head);
		/* A hole read before this allocates in the layer, with the
		 * right bytes (zeros). */
		(void)cowmem__register(head, UFFDIO_REGISTER_MODE_MISSING);
	} else {
		(void)cowmem__register_exactly(head, UFFDIO_REGISTER_MODE_MISSING);
	}
}

/* A fold from the move of the head's page tables on: the head's new pages
 * are in staging until cowmem__fold_finish() copies them into the layer. */
struct cowmem__fold {
	struct cowmem_region *head;
	char *area, *staging; /* the reservation, and staging in it */
	size_t length;
	bool fenced; /* the head waits on the fence, not on the server */
};

int cowmem__fold_begin(struct cowmem_region *head, struct cowmem__fold **result)
{
	struct cowmem__layer *layer = head->layer;
	struct cowmem__fold *f;
	int rc;

	*result = NULL;
	/* Nothing written since the last capture: the layer is the head's
	 * content already, and the clone shares the current generation. No
	 * new generation, so the fresh readers stay fresh (clones that were
	 * only read, or sources cloned again, keep kernel-speed faults). */
	bool wrote;
	if ((rc = cowmem__scan_has_own(head->data, head->pages, &wrote)) < 0)
		return rc;
	if (!wrote)
		return 0;
	if (!(f = malloc(sizeof *f)))
		return -ENOMEM;
	f->head = head;

	/* Until the layer holds the head's new pages, an access to the head
	 * must wait: the fence holds it (fence.c), or else MINOR on the
	 * library's descriptor sends it to the server, which waits for the
	 * lock. */
	f->fenced = cowmem__fence_raise(head) == 0;
	if (f->fenced && head->size % MOVED_WHOLE == 0)
		cowmem__fence_expect_move();
	if (!f->fenced && (rc = cowmem__register(head, UFFDIO_REGISTER_MODE_MISSING |
							   UFFDIO_REGISTER_MODE_MINOR)) < 0)
		goto err_head;
	/* Readers that saw the current generation must stop reading the
	 * layer directly before it changes. */
	if ((rc = cowmem__fresh_register_all(layer)) < 0)
		goto err_head;
	if ((rc = cowmem__layer_capture_begin(layer, 0)) < 0)
		goto err_head;
	cowmem__janitor_pause(); /* many page-table changes follow */
	rc = move_page_tables(head, &f->area, &f->length, &f->staging);
	if (f->fenced)
		cowmem__fence_moved();
	if (rc < 0) {
		cowmem__janitor_resume();
		cowmem__layer_capture_abort(layer);
		goto err_head;
	}
	*result = f;
	return 0;

err_head:
	release_head(head, f->fenced);
	free(f);
	return rc;
}

bool cowmem__fold_fenced(const struct cowmem__fold *f)
{
	return f->fenced;
}

struct cowmem_region *cowmem__fold_head(const struct cowmem__fold *f)
{
	return f->head;
}

/* The walk of a fold's staging range for the pages the head wrote. */
struct walk {
	struct scan_part lower, upper;
	struct cowmem__copy_batch *copies; /* whose helper walks the upper part */
};

/* Starts the walk: the upper half on the copier's thread, which then copies
 * as the books hand it blocks; the lower half on this one. Only the thread
 * that finishes the fold walks: started when the clone is made, the walk
 * holds the mmap lock against the clone's own mappings and a destroy's
 * unmap (a probe's clones took 0.5-0.8 ms instead of 0.2). Without
 * PAGEMAP_SCAN there is no lower part: the books read the pagemap file as
 * they go. */
static void start_walk(const struct cowmem__fold *f, struct walk *w)
{
	size_t pages = f->head->pages;

	*w = (struct walk){ .copies = NULL };
	if (!(cowmem__engine.features & FEATURE_PAGEMAP_SCAN)) {
		w->copies = cowmem__copier_begin(NULL, NULL);
		return;
	}
	/* The split is 2 MiB aligned, where page tables are. */
	size_t lower = pages >= SPLIT_SCAN_MIN_PAGES ? pages / 2 & ~(size_t)511 : pages;
	bool count_files = cowmem__engine.features & FEATURE_KEEP_MAPPINGS;
	w->lower = (struct scan_part){ f->staging, 0, lower, { NULL, 0, 0 }, 0, count_files, 0 };
	w->upper = (struct scan_part){ f->staging, lower, pages - lower, { NULL, 0, 0 }, 0,
				       count_files, 0 };
	w->copies = cowmem__copier_begin(w->upper.pages ? scan_part : NULL, &w->upper);
	w->lower.rc = cowmem__scan_own_counting(f->staging, lower, note_run, &w->lower,
						count_files ? &w->lower.file_pages : NULL);
}

/* Runs ahead of the one whose books are kept, whose pages are asked for. */
#define PREFETCH_RUNS 8

/* The books for the runs one part of the walk found, or, where it ran out
 * of memory, for the runs of a walk now. */
static void replace_part(struct fold_context *c, struct scan_part *part, size_t *file_pages)
{
	const struct run_list *runs = &part->found;
	int rc = 0;

	if (part->rc < 0) {
		c->offset = part->first;
		part->file_pages = 0;
		rc = cowmem__scan_own_counting(c->staging + part->first * cowmem__engine.page_size,
					       part->pages, replace_run, c,
					       part->count_files ? &part->file_pages : NULL);
		c->offset = 0;
	}
	for (size_t i = 0; part->rc == 0 && i < runs->count && rc == 0; i++) {
		/* The books miss the cache at each page (a random 1% of the
		 * pages comes in runs of one): ask for those to come. */
		if (i + PREFETCH_RUNS < runs->count)
			cowmem__layer_prefetch(c->layer, runs->runs[i + PREFETCH_RUNS][0]);
		rc = replace_run(runs->runs[i][0], runs->runs[i][1], c);
	}
	free(part->found.runs);
	if (rc < 0)
		cowmem__fold_abort("finding the pages written", rc);
	*file_pages += part->file_pages;
}

/* The clone whose fold this is (pending: it waits on the fence too) may
 * go on once the layer holds the head's pages: it holds exactly the layer.
 * Only the registration can fail here: cowmem__clone_locked() reserved
 * the rest. */
static void release_clone(struct cowmem_region *clone)
{
	/* Until it is registered its accesses are the kernel's, with the
	 * right bytes (a hole read then allocates a page of zeros in the
	 * layer). */
	cowmem__fence_lower(clone);
	int rc = cowmem__reader_attach(clone, cowmem__layer_current(clone->layer));
	if (rc < 0)
		cowmem__fold_abort("registering the clone", rc);
}

void cowmem__fold_finish(struct cowmem__fold *f, struct cowmem_region *pending_clone)
{
	struct cowmem_region *head = f->head;
	struct cowmem__layer *layer = head->layer;
	char *staging = f->staging;
	bool keep_mappings = cowmem__engine.features & FEATURE_KEEP_MAPPINGS;
	size_t file_pages = 0; /* staging's pages that map the layer */
	struct run_list folded = { NULL, 0, 0 };
	struct walk w;

	start_walk(f, &w);
	struct fold_context c = { layer, staging, w.copies, 0, keep_mappings ? &folded : NULL,
				  false };
	if (w.lower.pages) {
		replace_part(&c, &w.lower, &file_pages);
		if (w.upper.pages) {
			cowmem__copier_task_done(c.copies);
			replace_part(&c, &w.upper, &file_pages);
		}
	} else {
		int rc = cowmem__scan_own_counting(staging, head->pages, replace_run, &c,
						   keep_mappings ? &file_pages : NULL);
		if (rc < 0)
			cowmem__fold_abort("finding the pages written", rc);
	}
	cowmem__copier_finish(c.copies);
	cowmem__layer_capture_end(layer);
	/* The clone first: in the loop where the newest clone becomes the
	 * working copy, it is the one written next, and what follows (the
	 * head's tables, then the janitor and the pre-copier) keeps both CPUs
	 * busy. */
	if (pending_clone)
		release_clone(pending_clone);
	cowmem__janitor_resume();
	bool returned = keep_mappings && !c.folded_lost &&
			file_pages > KEEP_MAPPINGS_RATIO * folded.count &&
			return_page_tables(head, staging, f->fenced, &folded) == 0;
	free(folded.runs);
	/* The head reads its layer again: faults are the kernel's. Dropping
	 * MINOR wakes the threads that waited meanwhile; what is left of
	 * staging goes after that, off the head's path. */
	release_head(head, f->fenced);
	if (returned) {
		/* What is left of the reservation, around staging's hole: the
		 * hole is free since the move, and another thread may have
		 * mapped something there already. */
		char *end = staging + head->size, *area_end = f->area + f->length;
		if (staging > f->area)
			munmap(f->area, (size_t)(staging - f->area));
		if (area_end > end)
			munmap(end, (size_t)(area_end - end));
	} else
		cowmem__janitor_unmap_sparse(f->area, f->length); /* what the head touched */
	free(f);
}

/* ---- Taking over as head -------------------------------------------------- */


/* A fresh reader (the layer's current generation, nothing beyond it) may
 * take over from a head that has written nothing since the last capture:
 * both hold exactly the layer, so they trade roles, and the old head keeps
 * reading it as a fresh reader. */
static bool take_over(struct cowmem_region *reader)
{
	struct cowmem__layer *layer = reader->layer;
	struct cowmem_region *head = cowmem__layer_head(layer);

	if (!reader->fresh)
		return false;
	if (head) {
		bool wrote;
		if (cowmem__scan_has_own(head->data, head->pages, &wrote) < 0 || wrote)
			return false;
		uint64_t gen = cowmem__layer_current(layer);
		if (cowmem__layer_hold(layer, gen) < 0)
			return false;
		if (cowmem__fresh_add(head) < 0) {
			cowmem__layer_drop(layer, gen);
			return false;
		}
		head->mode = COWMEM__READER;
		head->gen = gen;
	}
	cowmem__fresh_remove(reader);
	cowmem__layer_drop(layer, reader->gen);
	reader->mode = COWMEM__HEAD;
	cowmem__layer_set_head(layer, reader);
	return true;
}

/* ---- branch --------------------------------------------------------------- */

struct branch_context {
	struct cowmem_region *r;
	char *view_page; /* one page */
	char *view;      /* COWMEM__READ_MAX pages, where every own page is compared */
	size_t *pages;
	cowmem__slot *slots;
	size_t count, capacity;
};

/* Every own page of r is compared with its view: without /proc nothing
 * tells own pages from the layer's, and after a rebase r holds its old
 * drift as own pages (rebase.c). */
static bool compares_every_page(const struct cowmem_region *r)
{
	return !cowmem__sees_page_tables() || r->mapped_layer;
}

static int grow(struct branch_context *c)
{
	if (c->count < c->capacity)
		return 0;
	size_t capacity = c->capacity ? c->capacity * 2 : 64;
	size_t *p = realloc(c->pages, capacity * sizeof *p);
	if (!p)
		return -ENOMEM;
	c->pages = p;
	cowmem__slot *s = realloc(c->slots, capacity * sizeof *s);
	if (!s)
		return -ENOMEM;
	c->slots = s;
	c->capacity = capacity;
	return 0;
}

/* Where every own page is compared (no /proc, or after a rebase, whose
 * region holds its old drift as own pages), and only a page that differs
 * is copied. Without folds the view is the layer as it is, then the
 * overlay. A layer a rebase wrote is compared through its shared mapping,
 * where nothing is copied, and its holes with zeros (reading a hole there
 * would allocate a page in it); any other (a loaded layer's pages may
 * still be in their file) is read 64 pages at a time. */
static int compare_own_run(struct branch_context *c, size_t first, size_t end)
{
	size_t ps = cowmem__engine.page_size;
	const struct cowmem__layer *layer = c->r->layer;
	const char *shared = c->r->mapped_layer ? cowmem__layer_shared(layer) : NULL;
	int rc = 0;

	for (size_t page = first; rc == 0 && page < end; page += COWMEM__READ_MAX) {
		size_t count = end - page < COWMEM__READ_MAX ? end - page : COWMEM__READ_MAX;
		size_t data_end = 0, hole_end = 0; /* runs found in this part, from k */
		if (!shared && (rc = cowmem__read_layer(layer, page, count, c->view)) < 0)
			break;
		for (size_t k = 0; rc == 0 && k < count; k++) {
			const char *view = c->view + k * ps;
			if (shared) {
				if (k >= data_end && k >= hole_end) {
					size_t n = cowmem__layer_data_run(layer, page + k, count - k, true);
					data_end = k + n;
					hole_end = n ? 0 : k + cowmem__layer_data_run(layer, page + k,
										      count - k, false);
				}
				view = k < data_end ? shared + (page + k) * ps : cowmem__zero_page;
			}
			char *mine = cowmem__page(c->r, page + k);
			cowmem__slot slot;
			if (cowmem__overlay_find(c->r->overlay, page + k, &slot))
				view = slot == COWMEM__HOLE ? cowmem__zero_page
							    : cowmem__store_page(slot);
			if (memcmp(mine, view, ps) == 0 || (rc = grow(c)) < 0 ||
			    (rc = cowmem__store_alloc(&slot)) < 0)
				continue;
			/* A thread writing it meanwhile races as memcpy would. */
			memcpy(cowmem__store_page(slot), mine, ps);
			c->pages[c->count] = page + k;
			c->slots[c->count++] = slot;
		}
	}
	return rc;
}

static int copy_own_run(size_t first, size_t end, void *ctx)
{
	struct branch_context *c = ctx;

	if (c->view && compares_every_page(c->r))
		return compare_own_run(c, first, end);
	for (size_t page = first; page < end; page++) {
		cowmem__slot slot;
		int rc = grow(c);
		if (rc < 0 || (rc = cowmem__store_alloc(&slot)) < 0)
			return rc;
		/* The region's own page is present: reading it cannot fault.
		 * A thread writing it meanwhile races as memcpy would. */
		char *copy = cowmem__store_page(slot);
		memcpy(copy, cowmem__page(c->r, page), cowmem__engine.page_size);
		/* A page filled with the version the region sees, and not
		 * written since, is no change of its own; nor is a page written
		 * back to its overlay's version (without folds, one the previous
		 * branch kept already). Without /proc every page is compared
		 * (compare_own_run, or here if it had no memory for its view). */
		cowmem__slot ignored;
		if (cowmem__page_map_get(&c->r->filled, page) ||
		    cowmem__overlay_find(c->r->overlay, page, &ignored) ||
		    compares_every_page(c->r)) {
			rc = cowmem__read_view(c->r->layer, c->r->gen, c->r->overlay, page,
					       c->view_page);
			if (rc < 0 || memcmp(copy, c->view_page, cowmem__engine.page_size) == 0) {
				cowmem__store_unref(slot);
				if (rc < 0)
					return rc;
				continue;
			}
		}
		c->pages[c->count] = page;
		c->slots[c->count++] = slot;
	}
	return 0;
}

/* The reader's own pages go to the store; it and its clone see them as an
 * overlay from now on. */
static int branch(struct cowmem_region *r)
{
	struct branch_context c = { .r = r, .view_page = malloc(cowmem__engine.page_size) };
	if (!cowmem__folds && compares_every_page(r))
		c.view = malloc(COWMEM__READ_MAX * cowmem__engine.page_size);
	struct cowmem__overlay *overlay = NULL;
	int rc = c.view_page ? cowmem__scan_own(r->data, r->pages, copy_own_run, &c) : -ENOMEM;

	if (rc == 0 && c.count > 0)
		rc = cowmem__overlay_with(r->overlay, c.pages, c.slots, c.count, &overlay);
	for (size_t i = 0; i < c.count; i++)
		cowmem__store_unref(c.slots[i]); /* the overlay holds them now */
	free(c.pages);
	free(c.slots);
	free(c.view_page);
	free(c.view);
	if (rc < 0 || c.count == 0)
		return rc;
	/* With an overlay the kernel may no longer map layer pages by itself. */
	if ((rc = cowmem__fresh_leave(r)) < 0) {
		cowmem__overlay_unref(overlay);
		return rc;
	}
	cowmem__overlay_unref(r->overlay);
	r->overlay = overlay;
	/* Failing leaves the branch as it is: correct, only dearer. */
	if (!cowmem__folds && cowmem__rebase_due(r, c.count))
		(void)cowmem__rebase(r);
	return 0;
}

/* ---- clone ---------------------------------------------------------------- */

int cowmem__capture_begin(struct cowmem_region *src, struct cowmem__fold **fold)
{
	*fold = NULL;
	switch (src->mode) {
	case COWMEM__EXCLUSIVE:
		return freeze(src);
	case COWMEM__HEAD:
		return cowmem__fold_begin(src, fold);
	case COWMEM__READER:
		if (cowmem__folds && take_over(src))
			return cowmem__fold_begin(src, fold);
		return branch(src);
	}
	return -EINVAL;
}

void cowmem__capture_finish(const struct cowmem_region *src, struct cowmem__fold *fold,
			    uint64_t *gen, struct cowmem__overlay **overlay)
{
	if (fold)
		cowmem__fold_finish(fold, NULL);
	*gen = src->mode == COWMEM__READER ? src->gen : cowmem__layer_current(src->layer);
	*overlay = src->mode == COWMEM__READER ? src->overlay : NULL;
}

int cowmem__capture(struct cowmem_region *src, uint64_t *gen, struct cowmem__overlay **overlay)
{
	struct cowmem__fold *fold;
	int rc = cowmem__capture_begin(src, &fold);

	if (rc == 0)
		cowmem__capture_finish(src, fold, gen, overlay);
	return rc;
}

/* ---- copy ---------------------------------------------------------------- */

int cowmem__set_view(struct cowmem_region *r, struct cowmem__layer *layer, uint64_t gen,
		     struct cowmem__overlay *overlay)
{
	int rc = cowmem__layer_hold(layer, gen);

	if (rc < 0)
		return rc;
	if (layer != r->layer || r->mapped_layer) {
		/* Another family (or, after a rebase, another layer than the
		 * one mapped): map its layer over the same address, which
		 * drops every page the region had at once. */
		char *data = mmap(r->data, r->size, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, cowmem__pagefile_fd(),
				  cowmem__layer_offset(layer));
		if (data == MAP_FAILED) {
			rc = -errno;
			cowmem__layer_drop(layer, gen);
			return rc;
		}
		(void)madvise(data, r->size, MADV_DONTFORK);
		r->uffd_modes = 0; /* a new mapping is not registered */
		if (r->mapped_layer) {
			cowmem__layer_unref(r->mapped_layer);
			r->mapped_layer = NULL;
		}
		if (!cowmem__folds)
			(void)cowmem__register(r, UFFDIO_REGISTER_MODE_MISSING);
	} else if ((rc = cowmem__fresh_leave(r)) < 0 ||
		   (madvise(r->data, r->size, MADV_DONTNEED) < 0 && (rc = -errno))) {
		cowmem__layer_drop(layer, gen);
		return rc;
	}
	/* Let go of the old view: none of its pages is mapped any more. */
	cowmem__fresh_remove(r);
	cowmem__region_forget_mapped(r);
	if (r->mode == COWMEM__HEAD)
		cowmem__layer_set_head(r->layer, NULL);
	else if (r->mode == COWMEM__READER)
		cowmem__layer_drop(r->layer, r->gen);
	if (layer != r->layer) {
		cowmem__layer_ref(layer);
		cowmem__layer_unref(r->layer);
		r->layer = layer;
	}
	cowmem__overlay_ref(overlay);
	cowmem__overlay_unref(r->overlay);
	r->overlay = overlay;
	r->mode = COWMEM__READER;
	r->gen = gen;
	r->copied = true;
	cowmem__page_map_free(&r->filled);
	/* A fresh reader again if it sees the current generation as it is;
	 * registration failing only leaves it slower (MINOR, or none). */
	if (!cowmem__folds) {
		/* Registered MISSING already, or not at all (regions.c). */
		if ((rc = cowmem__install_overlay(r)) < 0)
			cowmem__fold_abort("writing a copied region's pages", rc);
	} else if (gen == cowmem__layer_current(layer) && !overlay) {
		if (cowmem__register_exactly(r, UFFDIO_REGISTER_MODE_MISSING) == 0)
			(void)cowmem__fresh_add(r);
	} else {
		rc = cowmem__register(r, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR);
		if (rc < 0)
			cowmem__fold_abort("registering a copied region", rc);
	}
	return 0;
}
