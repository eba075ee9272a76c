/*
 * Reading a region's content without faulting anything in, under the
 * engine lock: a fault there would need the server, which needs the lock.
 * A region's own pages are read through /proc/self/mem (a page that is not
 * there fails the read), the rest from where its view has them: the page
 * file (pread) or the store. Used by cowmem_dirty_pages() and
 * cowmem_save(), and by a branch, which compares pages with its view.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"

/* The layer's current pages [page, page + count): holes read as zeros. */
int cowmem__read_layer(const struct cowmem__layer *layer, size_t page, size_t count, char *buf)
{
	size_t ps = cowmem__engine.page_size;
	int rc = cowmem__pread_all(cowmem__pagefile_fd(), buf, count * ps,
				   cowmem__layer_offset(layer) + (off_t)(page * ps));

	/* A loaded layer's pages not copied in yet are read from its file,
	 * without copying them in (reading does not allocate). */
	for (size_t k = 0; rc >= 0 && k < count; k++)
		rc = cowmem__layer_read_first_version(layer, page + k, buf + k * ps);
	return rc < 0 ? rc : 0;
}

/* One page as a view (layer at gen, then overlay) has it. */
int cowmem__read_view(const struct cowmem__layer *layer, uint64_t gen,
		      const struct cowmem__overlay *overlay, size_t page, char *buf)
{
	cowmem__slot slot;

	if (!cowmem__overlay_find(overlay, page, &slot) &&
	    cowmem__layer_lookup(layer, page, gen, &slot) == COWMEM__FROM_LAYER)
		return cowmem__read_layer(layer, page, 1, buf);
	if (slot == COWMEM__HOLE)
		memset(buf, 0, cowmem__engine.page_size);
	else
		memcpy(buf, cowmem__store_page(slot), cowmem__engine.page_size);
	return 0;
}

/* A page r holds itself, through /proc/self/mem: a page that is not there
 * makes the read fail instead of faulting into the server. */
int cowmem__read_own(const struct cowmem_region *r, size_t page, char *buf)
{
	if (!cowmem__sees_page_tables()) {
		/* Unregistered then: a page not there faults in the kernel. */
		memcpy(buf, cowmem__page(r, page), cowmem__engine.page_size);
		return 0;
	}
	return cowmem__pread_all(cowmem__engine.self_mem, buf, cowmem__engine.page_size,
				 (off_t)(uintptr_t)cowmem__page(r, page));
}

static const uint64_t PM_PRESENT = 1ull << 63, PM_FILE = 1ull << 61;

/* r's content of [page, page + count) into buf, count at most
 * COWMEM__READ_MAX: its own pages, else what its view has. */
int cowmem__read_content(const struct cowmem_region *r, size_t page, size_t count, char *buf)
{
	uint64_t entries[COWMEM__READ_MAX];
	int rc;

	if (r->mode == COWMEM__EXCLUSIVE)
		return cowmem__read_layer(r->layer, page, count, buf);
	if (!cowmem__sees_page_tables()) {
		memcpy(buf, cowmem__page(r, page), count * cowmem__engine.page_size);
		return 0;
	}
	off_t at = (off_t)((uintptr_t)cowmem__page(r, page) / cowmem__engine.page_size *
			   sizeof(uint64_t));
	if (pread(cowmem__engine.pagemap, entries, count * sizeof *entries, at) !=
	    (ssize_t)(count * sizeof *entries))
		return errno ? -errno : -EIO;
	for (size_t k = 0; k < count; k++) {
		char *out = buf + k * cowmem__engine.page_size;
		uint64_t e = entries[k];
		bool own = (e & PM_PRESENT) && !(e & PM_FILE) &&
			   !(cowmem__engine.zero_pfn &&
			     (e & ((1ull << 55) - 1)) == cowmem__engine.zero_pfn);
		if (own)
			rc = cowmem__read_own(r, page + k, out);
		else if (r->mode == COWMEM__HEAD)
			rc = cowmem__read_layer(r->layer, page + k, 1, out);
		else
			rc = cowmem__read_view(r->layer, r->gen, r->overlay, page + k, out);
		if (rc < 0)
			return rc;
	}
	return 0;
}
