/*
 * The snapshot file format, which cowmem_save() writes and cowmem_load()
 * reads (snapshot.c). Little-endian:
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
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define SNAPSHOT_MAGIC "CowMemS1"
#define SNAPSHOT_VERSION 1

struct snapshot_header {
	char magic[8];
	uint32_t version;
	uint32_t page_size;
	uint64_t size;        /* bytes */
	uint64_t data_offset; /* where page 0 starts */
	uint64_t reserved[4]; /* zero */
};

/* Reads and checks a snapshot's header: 0, or -EINVAL (not a snapshot of
 * this page size, or cut short) or another negative errno. */
int cowmem__snapshot_open(int fd, uint64_t *size_out, uint64_t *data_offset_out)
{
	struct snapshot_header header;
	struct stat st;

	ssize_t n = pread(fd, &header, sizeof header, 0);
	if (n < 0)
		return -errno;
	size_t page_size = cowmem__engine.page_size;
	uint64_t size = le64toh(header.size), data_offset = le64toh(header.data_offset);
	if ((size_t)n != sizeof header || memcmp(header.magic, SNAPSHOT_MAGIC, 8) != 0 ||
	    le32toh(header.version) != SNAPSHOT_VERSION ||
	    le32toh(header.page_size) != page_size || size == 0 || size % page_size != 0 ||
	    size > (uint64_t)PTRDIFF_MAX - page_size || data_offset % page_size != 0 ||
	    data_offset < sizeof header || data_offset > (uint64_t)PTRDIFF_MAX - size)
		return -EINVAL;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < data_offset + size)
		return -EINVAL;
	*size_out = size;
	*data_offset_out = data_offset;
	return 0;
}

/* Checks that fd can take a snapshot and empties it: 0, or -EBADF
 * (read-only), -EINVAL (O_APPEND), -ESPIPE. */
int cowmem__snapshot_begin(int fd)
{
	int flags = fcntl(fd, F_GETFL);
	if (flags < 0)
		return -errno;
	if ((flags & O_ACCMODE) == O_RDONLY)
		return -EBADF;
	if (flags & O_APPEND)
		return -EINVAL;
	if (lseek(fd, 0, SEEK_CUR) < 0)
		return -errno; /* ESPIPE: a pipe or socket */
	/* Empty first, so that pages skipped as zero are holes, not an older
	 * snapshot's data. */
	return ftruncate(fd, 0) < 0 ? -errno : 0;
}

/* The length first, the header last: a file cut short by a crash has no
 * valid header, so cowmem_load() refuses it. */
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
		return -errno;
	return cowmem__pwrite_all(fd, &header, sizeof header, 0);
}
