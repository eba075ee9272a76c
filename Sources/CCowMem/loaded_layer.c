/*
 * The first engine's loaded layers: a layer made by cowmem_load() starts
 * empty, and its pages are read from the snapshot file into its memfd on
 * first use (snapshot.c makes it and reads it to save a region; engine.c
 * loads pages into it as faults need them and reads it; tracking.c reads
 * it). The layer's content never changes, only where it is kept.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

static bool is_loaded(const struct layer *layer, size_t page)
{
	return layer->loaded[page / 8] & (1u << (page % 8));
}

/* Exactly `length` bytes at `offset`, or -1 with errno. A file that ends
 * early is EIO: cowmem_load() checked the length, so it was truncated
 * behind the library's back, and the page must fail loudly (SIGBUS), as a
 * truncated file mapping does, rather than read as zeros. */
static int read_full(int fd, void *buf, size_t length, off_t offset)
{
	int rc = cowmem__pread_all(fd, buf, length, offset);

	if (rc < 0) {
		errno = -rc;
		return -1;
	}
	return 0;
}

int cowmem__v1_layer_read(const struct layer *layer, size_t page, size_t count, char *buf)
{
	size_t page_size = cowmem__engine.page_size;

	/* Holes of a memfd read as zeros without allocating anything. */
	if (read_full(layer->fd, buf, count * page_size, (off_t)(page * page_size)) < 0)
		return -1;
	if (layer->source < 0)
		return 0;
	for (size_t k = 0; k < count; k++) {
		if (is_loaded(layer, page + k))
			continue;
		off_t offset = layer->source_offset + (off_t)((page + k) * page_size);
		if (read_full(layer->source, buf + k * page_size, page_size, offset) < 0)
			return -1;
	}
	return 0;
}

/* Reads the pages of [page, end) that the layer has not read yet from the
 * file into its memfd (the non-zero ones: the others stay holes). */
static int load_window(struct layer *layer, size_t page, size_t end, char *buf)
{
	size_t page_size = cowmem__engine.page_size;

	if (read_full(layer->source, buf, (end - page) * page_size,
		      layer->source_offset + (off_t)(page * page_size)) < 0)
		return -1;
	for (size_t p = page; p < end; p++) {
		const char *data = buf + (p - page) * page_size;
		if (is_loaded(layer, p))
			continue;
		int rc = cowmem__page_is_zero(data)
				 ? 0
				 : cowmem__pwrite_all(layer->fd, data, page_size, (off_t)(p * page_size));
		if (rc < 0) {
			errno = -rc;
			return -1;
		}
		layer->loaded[p / 8] |= (unsigned char)(1u << (p % 8));
	}
	/* The file's cached copy stays: it is clean page cache, which the
	 * kernel reclaims when memory is needed, and dropping it page by page
	 * (POSIX_FADV_DONTNEED) made each fault several times slower. */
	return 0;
}

/*
 * Reads `page` from the file into the layer, unless it was read already;
 * when the page before it was read already (reading goes in order), also
 * the pages after it that were not, up to REGION_READ_MAX and `end`. A
 * scattered touch reads one page, so it costs one page of memory, while a
 * sequential reader takes one fault per REGION_READ_MAX pages.
 */
int cowmem__v1_layer_load(struct layer *layer, size_t page, size_t end)
{
	static char *buffer; /* REGION_READ_MAX pages; used under the lock */
	size_t page_size = cowmem__engine.page_size;

	if (!is_loaded(layer, page)) {
		if (!buffer && !(buffer = aligned_alloc(page_size, REGION_READ_MAX * page_size))) {
			errno = ENOMEM;
			return -1;
		}
		bool in_order = page > 0 && is_loaded(layer, page - 1);
		size_t stop = page + 1;
		while (in_order && stop < end && stop - page < REGION_READ_MAX &&
		       !is_loaded(layer, stop))
			stop++;
		if (load_window(layer, page, stop, buffer) < 0)
			return -1;
	}
	off_t at = (off_t)(page * page_size);
	return lseek(layer->fd, at, SEEK_DATA) == at;
}

size_t cowmem__v1_layer_loaded_run(const struct layer *layer, size_t page, size_t limit)
{
	size_t n = 0;

	if (layer->source < 0)
		return limit;
	while (n < limit && is_loaded(layer, page + n))
		n++;
	return n;
}

/* Without userfaultfd nothing can be loaded on demand: read every page with
 * data now (holes of the file are skipped). */
int cowmem__v1_layer_load_all(struct layer *layer, size_t pages)
{
	size_t page_size = cowmem__engine.page_size;
	off_t limit = layer->source_offset + (off_t)(pages * page_size);
	off_t at = layer->source_offset;

	while (at < limit) {
		off_t data = lseek(layer->source, at, SEEK_DATA);
		if (data < 0 || data >= limit)
			break; /* ENXIO: no data after `at` */
		off_t hole = lseek(layer->source, data, SEEK_HOLE);
		if (hole < 0 || hole > limit)
			hole = limit;
		size_t first = (size_t)(data - layer->source_offset) / page_size;
		size_t end = (size_t)(hole - layer->source_offset + (off_t)page_size - 1) / page_size;
		for (size_t p = first; p < end; p++)
			if (!is_loaded(layer, p) && cowmem__v1_layer_load(layer, p, end) < 0)
				return -1;
		at = (off_t)(layer->source_offset + (off_t)(end * page_size));
	}
	return 0;
}
