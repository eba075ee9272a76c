/*
 * Snapshots on disk: cowmem_save() and cowmem_load(). The file format is
 * in snapshot_file.c.
 *
 * Saving reads the region without faulting anything in: its own pages
 * through /proc/self/mem, the rest as its view has them (the layer's pages
 * with pread, so holes allocate nothing; old versions from the store).
 * Loading makes a fresh reader of a new layer whose first version is the
 * file: a fault on a page not copied in yet copies it (resolve.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine.h"

#define SAVE_CHUNK COWMEM__READ_MAX /* pages read and written at once */

int cowmem__save(const struct cowmem_region *r, int fd)
{
	cowmem__lock_settled();
	bool valid = cowmem__region_usable(r);
	size_t pages = valid ? r->pages : 0, size = valid ? r->size : 0;
	pthread_mutex_unlock(&cowmem__engine.lock);
	if (!valid)
		return -EINVAL;
	int rc = cowmem__snapshot_begin(fd);
	if (rc < 0)
		return rc;
	off_t data_offset = (off_t)cowmem__engine.page_size;
	char *buf = malloc(SAVE_CHUNK * cowmem__engine.page_size);
	if (!buf)
		return -ENOMEM;
	for (size_t page = 0; page < pages && rc == 0; page += SAVE_CHUNK) {
		size_t count = pages - page < SAVE_CHUNK ? pages - page : SAVE_CHUNK;
		cowmem__lock_settled();
		rc = cowmem__region_usable(r) ? cowmem__read_content(r, page, count, buf) : -EINVAL;
		pthread_mutex_unlock(&cowmem__engine.lock);
		if (rc == 0)
			rc = cowmem__pwrite_nonzero_pages(
				fd, buf, count,
				data_offset + (off_t)(page * cowmem__engine.page_size));
	}
	free(buf);
	return rc < 0 ? rc : cowmem__snapshot_finish(fd, size, data_offset);
}

int cowmem__load(int fd, struct cowmem_region **result)
{
	uint64_t size, data_offset;
	struct cowmem__layer *layer = NULL;
	struct cowmem_region *r = NULL;
	int rc, source = -1;

	if ((rc = cowmem__snapshot_open(fd, &size, &data_offset)) < 0)
		return rc;
	/* Under the lock from the first descriptor on: fork() must not copy
	 * a descriptor the child's handler cannot see. */
	cowmem__lock_settled();
	if ((rc = cowmem__server_ensure_running()) < 0)
		goto out;
	if ((rc = cowmem__layer_new((size_t)size / cowmem__engine.page_size, &layer)) < 0)
		goto out;
	if ((source = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0) {
		rc = -errno;
		goto out;
	}
	if ((rc = cowmem__layer_set_source(layer, source, (off_t)data_offset)) < 0)
		goto out;
	source = -1; /* the layer's now */
	rc = cowmem__reader_new(layer, (size_t)size, 0, NULL, &r);
	/* Unregistered (no userfaultfd, or no /proc), no fault asks for a
	 * page: the file is read now. */
	if (rc == 0 && r->uffd_modes == 0 &&
	    (rc = cowmem__layer_load(layer, 0, r->pages)) < 0) {
		cowmem__region_drop_locked(r);
		munmap(r->data, r->size);
		free(r);
		r = NULL;
	}
out:
	if (source >= 0)
		close(source);
	if (layer)
		cowmem__layer_unref(layer); /* the reader holds its own reference */
	pthread_t server;
	bool join = rc < 0 && cowmem__region_count() == 0 &&
		    cowmem__server_stop_library_thread(&server);
	pthread_mutex_unlock(&cowmem__engine.lock);
	if (join)
		cowmem__server_join(server);
	*result = r;
	return rc;
}
