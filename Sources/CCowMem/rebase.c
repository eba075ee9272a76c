/*
 * Rebasing, for clones that cannot fold (ARCHITECTURE.md, "Without folds").
 *
 * There a clone writes its source's overlay into its own pages, so the
 * cost of a clone grows with the source's drift from its layer. Past a
 * threshold the branch rebases instead: the source's whole content goes
 * into a new layer of the page file with pwrite(2), which faults nothing
 * in the process, and the source's view becomes that layer, with no
 * overlay. Its clones map the new layer and have nothing to write in.
 *
 * The source keeps its mapping of the old layer (mapped_layer): replacing
 * the mapping would lose a write that another thread makes to the source
 * meanwhile, and without userfaultfd nothing can hold such writes. That is
 * still its content: every page where the two layers differ is one of its
 * overlay's, and each of those is one of its own pages (it wrote it, or it
 * had it written in when it was made), which the old layer cannot show
 * through. Its next branch compares each of its own pages with the new view.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* Rebasing costs a copy of the region; writing the overlay in costs its
 * pages, at every clone. With k pages added per clone, rebasing at n
 * overlay pages costs about n/2 + pages * k / n per clone, least at n near
 * the square root of 2 * pages * k (9,000 pages for 256 MiB at 1%). Below
 * REBASE_MIN_PAGES writing the overlay in is always cheap. */
#define REBASE_MIN_PAGES 64

bool cowmem__rebase_due(const struct cowmem_region *r, size_t added)
{
	double n = (double)cowmem__overlay_count(r->overlay);

	if (!(cowmem__engine.features & FEATURE_REBASE)) /* COWMEM_DISABLE=rebase */
		return false;
	return n >= REBASE_MIN_PAGES && n * n >= 2.0 * (double)r->pages * (double)(added ? added : 1);
}

/* Writes r's view (its layer at its generation, then its overlay) into the
 * empty layer `to`, leaving holes where the view reads zeros. */
static int write_view(const struct cowmem_region *r, const struct cowmem__layer *to)
{
	size_t ps = cowmem__engine.page_size, entries = cowmem__overlay_count(r->overlay), next = 0;
	char *buf = malloc(COWMEM__READ_MAX * ps);
	off_t base = cowmem__layer_offset(to);
	int rc = buf ? 0 : -ENOMEM;

	for (size_t page = 0; rc == 0 && page < r->pages; page += COWMEM__READ_MAX) {
		size_t count = r->pages - page < COWMEM__READ_MAX ? r->pages - page : COWMEM__READ_MAX;
		if ((rc = cowmem__read_layer(r->layer, page, count, buf)) < 0)
			break;
		for (; next < entries; next++) {
			size_t at;
			cowmem__slot slot;
			cowmem__overlay_entry(r->overlay, next, &at, &slot);
			if (at >= page + count)
				break;
			char *out = buf + (at - page) * ps;
			if (slot == COWMEM__HOLE)
				memset(out, 0, ps);
			else
				memcpy(out, cowmem__store_page(slot), ps);
		}
		rc = cowmem__pwrite_nonzero_pages(cowmem__pagefile_fd(), buf, count,
						  base + (off_t)(page * ps));
	}
	free(buf);
	return rc;
}

int cowmem__rebase(struct cowmem_region *r)
{
	struct cowmem__layer *layer;
	int rc;

	/* A loaded layer's pages still in its file: the old layer must hold
	 * each page the new one does, or a fault there could never be served
	 * from the mapping that r keeps. */
	if ((rc = cowmem__layer_load(r->layer, 0, r->pages)) < 0)
		return rc;
	if ((rc = cowmem__layer_new(r->pages, &layer)) < 0)
		return rc;
	uint64_t gen = cowmem__layer_current(layer);
	if ((rc = write_view(r, layer)) < 0 || (rc = cowmem__layer_hold(layer, gen)) < 0) {
		cowmem__layer_unref(layer);
		return rc;
	}
	cowmem__layer_drop(r->layer, r->gen);
	if (r->mapped_layer)
		cowmem__layer_unref(r->layer); /* a layer of a rebase before, not mapped */
	else
		r->mapped_layer = r->layer; /* its reference is the mapping's now */
	r->layer = layer;
	r->gen = gen;
	cowmem__overlay_unref(r->overlay);
	r->overlay = NULL;
	return 0;
}
