/*
 * Snapshots on disk: cowmem_save() writes a region to a file, cowmem_load()
 * maps one back lazily.
 *
 * A loaded region is an ordinary private region over a layer that starts
 * empty and is filled from the file: the first fault on a page that the
 * layer has not read yet reads it (and its neighbours) into the layer's
 * memfd (loaded_layer.c), and the kernel then maps that page-cache page like
 * any base page. The layer's content never changes, only where it is kept,
 * so clones of a loaded region share its pages exactly as they share any
 * frozen layer.
 *
 * The file format (little-endian):
 *
 *     offset 0            struct snapshot_header
 *     offset data_offset  the region's pages, in order; pages that read as
 *                         zero are holes (the file is sparse)
 *
 * data_offset is the page size, so the data can be read page by page with
 * aligned reads.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "v1_names.h"

#define SNAPSHOT_MAGIC "CowMemS1"
#define SNAPSHOT_VERSION 1
#define SAVE_CHUNK REGION_READ_MAX /* pages read and written at once */

struct snapshot_header {
	char magic[8];
	uint32_t version;
	uint32_t page_size;
	uint64_t size;        /* bytes */
	uint64_t data_offset; /* where page 0 starts */
	uint64_t reserved[4]; /* zero */
};

/* Reads and checks a snapshot's header: 0, or -1 with errno (EINVAL: not
 * a snapshot of this page size, or cut short). Shared with engine v2. */
int cowmem__snapshot_open(int fd, uint64_t *size_out, uint64_t *data_offset_out)
{
	struct snapshot_header header;
	struct stat st;

	ssize_t n = pread(fd, &header, sizeof header, 0);
	if (n < 0)
		return -1;
	size_t page_size = cowmem__engine.page_size;
	uint64_t size = le64toh(header.size), data_offset = le64toh(header.data_offset);
	if ((size_t)n != sizeof header || memcmp(header.magic, SNAPSHOT_MAGIC, 8) != 0 ||
	    le32toh(header.version) != SNAPSHOT_VERSION ||
	    le32toh(header.page_size) != page_size || size == 0 || size % page_size != 0 ||
	    size > (uint64_t)PTRDIFF_MAX - page_size || data_offset % page_size != 0 ||
	    data_offset < sizeof header || data_offset > (uint64_t)PTRDIFF_MAX - size) {
		errno = EINVAL;
		return -1;
	}
	if (fstat(fd, &st) < 0)
		return -1;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < data_offset + size) {
		errno = EINVAL;
		return -1;
	}
	*size_out = size;
	*data_offset_out = data_offset;
	return 0;
}

cowmem_region *cowmem_load(int fd)
{
	uint64_t size, data_offset;

	if (cowmem__snapshot_open(fd, &size, &data_offset) < 0)
		return NULL;
	size_t page_size = cowmem__engine.page_size;
	size_t pages = (size_t)size / page_size;

	/* Under the lock from the first descriptor on, as in cowmem_create():
	 * fork() must not copy a descriptor the child's handler cannot see. */
	pthread_mutex_lock(&cowmem__engine.lock);
	struct cowmem_region *r = NULL;
	struct layer *layer = NULL;
	int err = 0;
	if (cowmem__server_ensure_running() < 0) {
		err = errno;
		goto out;
	}
	if (!(layer = cowmem__v1_layer_create((size_t)size))) {
		err = errno;
		goto out;
	}
	layer->source_offset = (off_t)data_offset;
	layer->loaded = calloc((pages + 7) / 8, 1);
	if (!layer->loaded) {
		err = ENOMEM;
		goto out;
	}
	if ((layer->source = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0) {
		err = errno;
		goto out;
	}
	if (!(r = cowmem__v1_region_new(layer, (size_t)size, REGION_PRIVATE))) {
		err = errno;
		goto out;
	}
	r->origin_kind = ORIGIN_BASE;
	/* On demand needs the MISSING faults of every region over the layer,
	 * and pagemap (the eager comparisons of a clone without /proc read the
	 * layer's memfd, which must be complete then). */
	bool lazy = cowmem__engine.uffd >= 0 && cowmem__engine.pagemap >= 0 &&
		    cowmem__v1_region_register(r, UFFDIO_REGISTER_MODE_MISSING) == 0;
	if (!lazy) {
		if (cowmem__v1_layer_load_all(layer, pages) < 0) {
			err = errno;
			goto out;
		}
		close(layer->source);
		layer->source = -1;
		(void)cowmem__v1_region_register(r, UFFDIO_REGISTER_MODE_MISSING);
	}
	if (cowmem__v1_registry_insert(r) < 0) {
		err = ENOMEM;
		goto out;
	}
	pthread_mutex_unlock(&cowmem__engine.lock);
	return r;

out:
	if (r)
		cowmem__v1_region_free(r);
	if (layer)
		cowmem__v1_layer_release(layer);
	/* Started for this region alone: a failed call leaves no thread. */
	pthread_t server;
	bool join = cowmem__engine.region_count == 0 && cowmem__server_stop_library_thread(&server);
	pthread_mutex_unlock(&cowmem__engine.lock);
	if (join)
		cowmem__server_join(server);
	errno = err;
	return NULL;
}

/* Writes the non-zero pages of buf (pages [page, page + count)) to fd. */
int cowmem__snapshot_write_pages(int fd, const char *buf, size_t page, size_t count,
				 off_t data_offset)
{
	size_t page_size = cowmem__engine.page_size;

	for (size_t k = 0; k < count;) {
		if (cowmem__page_is_zero(buf + k * page_size)) {
			k++;
			continue;
		}
		size_t run = 1;
		while (k + run < count && !cowmem__page_is_zero(buf + (k + run) * page_size))
			run++;
		int rc = cowmem__pwrite_all(fd, buf + k * page_size, run * page_size,
					    data_offset + (off_t)((page + k) * page_size));
		if (rc < 0) {
			errno = -rc;
			return -1;
		}
		k += run;
	}
	return 0;
}

/* Checks that fd can take a snapshot and empties it: 0, or -1 with errno
 * (EBADF read-only, EINVAL O_APPEND, ESPIPE). */
int cowmem__snapshot_begin(int fd)
{
	int flags = fcntl(fd, F_GETFL);
	if (flags < 0)
		return -1;
	if ((flags & O_ACCMODE) == O_RDONLY) {
		errno = EBADF;
		return -1;
	}
	if (flags & O_APPEND) {
		errno = EINVAL;
		return -1;
	}
	if (lseek(fd, 0, SEEK_CUR) < 0)
		return -1; /* ESPIPE: a pipe or socket */
	/* Empty first, so that pages skipped as zero are holes, not an older
	 * snapshot's data. */
	return ftruncate(fd, 0);
}

int cowmem_save(const cowmem_region *r, int fd)
{
	pthread_mutex_lock(&cowmem__engine.lock);
	bool valid = cowmem__v1_region_usable(r);
	/* Read under the lock: another thread's destroy must not race them. */
	size_t pages = valid ? r->pages : 0, size = valid ? r->size : 0;
	pthread_mutex_unlock(&cowmem__engine.lock);
	if (!valid) {
		errno = EINVAL;
		return -1;
	}
	if (cowmem__snapshot_begin(fd) < 0)
		return -1;

	size_t page_size = cowmem__engine.page_size;
	off_t data_offset = (off_t)page_size;
	char *buf = aligned_alloc(page_size, SAVE_CHUNK * page_size);
	if (!buf) {
		errno = ENOMEM;
		return -1;
	}
	int rc = 0;
	for (size_t page = 0; page < pages && rc == 0; page += SAVE_CHUNK) {
		size_t count = pages - page < SAVE_CHUNK ? pages - page : SAVE_CHUNK;
		pthread_mutex_lock(&cowmem__engine.lock);
		bool direct = false;
		if (!cowmem__v1_region_usable(r)) {
			errno = EINVAL;
			rc = -1;
		} else if (r->mode == REGION_EXCLUSIVE) {
			rc = cowmem__v1_layer_read(r->base, page, count, buf);
		} else if (cowmem__engine.pagemap >= 0 && cowmem__engine.self_mem >= 0) {
			rc = cowmem__v1_region_read(r, page, count, buf);
		} else {
			direct = true;
		}
		pthread_mutex_unlock(&cowmem__engine.lock);
		/* Without /proc, read the region itself (outside the lock: it
		 * may fault; reading holes may allocate). */
		if (direct)
			memcpy(buf, cowmem__v1_page_address(r, page), count * page_size);
		if (rc == 0)
			rc = cowmem__snapshot_write_pages(fd, buf, page, count, data_offset);
	}
	free(buf);
	if (rc < 0)
		return -1;

	return cowmem__snapshot_finish(fd, size, data_offset);
}

/* The length first, the header last: a file cut short by a crash has no
 * valid header, so cowmem_load() refuses it. 0, or -1 with errno. */
int cowmem__snapshot_finish(int fd, size_t size, off_t data_offset)
{
	struct snapshot_header header = {
		.version = htole32(SNAPSHOT_VERSION),
		.page_size = htole32((uint32_t)cowmem__engine.page_size),
		.size = htole64(size),
		.data_offset = htole64((uint64_t)data_offset),
	};
	memcpy(header.magic, SNAPSHOT_MAGIC, 8);
	if (ftruncate(fd, data_offset + (off_t)size) < 0)
		return -1;
	int rc = cowmem__pwrite_all(fd, &header, sizeof header, 0);
	if (rc < 0) {
		errno = -rc;
		return -1;
	}
	return 0;
}
