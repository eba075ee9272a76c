/*
 * The page file: one memfd that holds the pages of every layer, each layer
 * at an offset range of its own. Regions map their layer's range, so no
 * region (and no layer) holds a file descriptor: the library keeps one, and
 * RLIMIT_NOFILE does not bound how many regions a program can have.
 *
 * Ranges are handed out by bumping an offset and never reused while the
 * file is open: an offset is only a number (2^62 bytes of them), a released
 * range is punched out and holds no memory, and bumping keeps two layers
 * from ever sharing a page cache page by mistake. The file is closed with
 * its last range and made anew for the next. Ranges start at 2 MiB boundaries, like the regions
 * that map them, so the kernel can move their page tables whole.
 *
 * Mappings of the page file (regions, and each layer's own shared mapping)
 * sit at addresses aligned for their size, so that page tables move whole
 * between any two of one size: cowmem__pagefile_map().
 *
 * Under engine.lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine.h"

#define RANGE_ALIGN ((off_t)2 << 20)
#define PAGEFILE_LIMIT ((off_t)1 << 62)

static int fd = -1;
static off_t next_offset;
static size_t ranges; /* reserved and not released */

int cowmem__pagefile_fd(void)
{
	return fd;
}

static int open_pagefile(void)
{
	int new_fd = cowmem__memfd_for_pages();

	if (new_fd < 0)
		return -errno;
	/* It only ever grows: whoever else holds the descriptor cannot
	 * truncate pages out from under a mapping (SIGBUS). Unlike the first
	 * engine's frozen layers it cannot be write-sealed: every clone of a
	 * head writes its pages into its layer. */
	(void)fcntl(new_fd, F_ADD_SEALS, F_SEAL_SHRINK);
	fd = new_fd;
	next_offset = 0;
	return 0;
}

int cowmem__pagefile_reserve(size_t size, off_t *offset)
{
	if (fd < 0) {
		int rc = open_pagefile();
		if (rc < 0)
			return rc;
	}
	off_t length = ((off_t)size + RANGE_ALIGN - 1) & ~(RANGE_ALIGN - 1);
	if (size > (size_t)PAGEFILE_LIMIT || length > PAGEFILE_LIMIT - next_offset)
		return -ENOMEM;
	/* Growing a memfd allocates nothing: the new range is a hole. */
	if (ftruncate(fd, next_offset + length) < 0)
		return errno == EFBIG || errno == EINVAL ? -ENOMEM : -errno;
	*offset = next_offset;
	next_offset += length;
	ranges++;
	return 0;
}

/* With the last range the descriptor goes too: a process that no longer
 * uses regions keeps only the library's few fixed descriptors. */
void cowmem__pagefile_release(off_t offset, size_t size)
{
	(void)fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, (off_t)size);
	if (--ranges == 0) {
		close(fd);
		fd = -1;
	}
}

/* The child must not keep the parent's pages: close the descriptor. */
void cowmem__pagefile_fork_child(void)
{
	if (fd >= 0)
		close(fd);
	fd = -1;
	ranges = 0;
}

/* ---- Mappings ----------------------------------------------------------- */

/*
 * mremap() moves page tables whole where both ranges are aligned alike: a
 * PMD entry (2 MiB of pages) at 2 MiB alignment, a PUD entry (1 GiB) at
 * 1 GiB alignment. Each entry moved is one TLB flush, and a flush needs an
 * interrupt to every other CPU the process ran on: moving 1 GiB by PMDs
 * took 0.2-7 ms here (512 flushes; slow whenever those interrupts were
 * needed), by one PUD 0.04-0.06 ms.
 */
#define PMD_ALIGN ((size_t)2 << 20)
#define PUD_ALIGN ((size_t)1 << 30)

static size_t alignment_for(size_t size)
{
	return size >= PUD_ALIGN ? PUD_ALIGN : PMD_ALIGN;
}

/* A place for `size` bytes at the boundary alignment_for() gives, *start,
 * reserved PROT_NONE inside [*area, *area + *length), which the caller
 * maps over or unmaps; -ENOMEM if there is no room. Two places for one
 * size are aligned alike, so page tables move whole between them. */
int cowmem__reserve_aligned(size_t size, char **area, size_t *length, char **start)
{
	size_t align = alignment_for(size);

	*length = size + align;
	if (*length < size)
		return -ENOMEM;
	*area = mmap(NULL, *length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (*area == MAP_FAILED) {
		/* The arguments are valid, so EINVAL can only mean no room:
		 * valgrind, for one, refuses a reservation larger than its
		 * address-space manager holds with EINVAL. */
		return errno == EINVAL ? -ENOMEM : -errno;
	}
	*start = (char *)(((uintptr_t)*area + align - 1) & ~(align - 1));
	return 0;
}

/* Maps `size` bytes of the page file from `offset` at an aligned address
 * (alignment_for()): reserve more, map over it, trim. MAP_NORESERVE: a
 * private mapping larger than RAM must not be refused by the commit
 * charge; pages are charged as they are written. */
int cowmem__pagefile_map(off_t offset, size_t size, int share, char **data)
{
	int flags = share | (share == MAP_PRIVATE ? MAP_NORESERVE : 0);
	size_t length;
	char *area, *start;
	int rc = cowmem__reserve_aligned(size, &area, &length, &start);

	if (rc < 0)
		return rc;
	char *mapped = mmap(start, size, PROT_READ | PROT_WRITE, flags | MAP_FIXED, fd, offset);
	if (mapped == MAP_FAILED) {
		int rc = -errno;
		munmap(area, length);
		return rc;
	}
	if (start > area)
		munmap(area, (size_t)(start - area));
	if (area + length > start + size)
		munmap(start + size, (size_t)(area + length - (start + size)));
	/* Children never inherit region memory: nobody would serve it there. */
	(void)madvise(mapped, size, MADV_DONTFORK);
	*data = mapped;
	return 0;
}
