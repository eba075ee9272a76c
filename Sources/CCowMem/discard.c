/*
 * Discarding runs of pages (MADV_DONTNEED) in batches. The runs a scan
 * reports are usually single scattered pages, one system call each with
 * madvise(2); process_madvise(2) on our own process takes up to 1,024 of
 * them per call (about 3x faster here). Where the kernel refuses that
 * (before 6.13, a seccomp filter, COWMEM_DISABLE=process-madvise), the
 * runs go one by one.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "engine.h"

#define DISCARD_BATCH 1024 /* UIO_MAXIOV */

struct cowmem__discard {
	char *base; /* page 0 of the runs */
	int pidfd;
	size_t count;
	struct iovec iov[DISCARD_BATCH];
};

struct cowmem__discard *cowmem__discard_begin(char *base)
{
	struct cowmem__discard *d = malloc(sizeof *d);

	if (!d)
		return NULL;
	d->base = base;
	d->count = 0;
	d->pidfd = cowmem__pidfd_for_madvise();
	return d;
}

static int flush(struct cowmem__discard *d)
{
	size_t total = 0;

	for (size_t i = 0; i < d->count; i++)
		total += d->iov[i].iov_len;
	if (d->count > 1 && d->pidfd >= 0) {
		ssize_t done = cowmem__sys_process_madvise(d->pidfd, d->iov, d->count,
							   MADV_DONTNEED, 0);
		if (done >= 0 && (size_t)done == total) {
			d->count = 0;
			return 0;
		}
		close(d->pidfd); /* refused or stopped part way: one by one */
		d->pidfd = -1;
	}
	for (size_t i = 0; i < d->count; i++)
		if (madvise(d->iov[i].iov_base, d->iov[i].iov_len, MADV_DONTNEED) < 0)
			return -errno;
	d->count = 0;
	return 0;
}

/* A cowmem__run_fn: ctx is the discard. */
int cowmem__discard_run(size_t first, size_t end, void *ctx)
{
	struct cowmem__discard *d = ctx;
	int rc;

	if (d->count == DISCARD_BATCH && (rc = flush(d)) < 0)
		return rc;
	d->iov[d->count].iov_base = d->base + first * cowmem__engine.page_size;
	d->iov[d->count].iov_len = (end - first) * cowmem__engine.page_size;
	d->count++;
	return 0;
}

int cowmem__discard_end(struct cowmem__discard *d)
{
	int rc = flush(d);

	if (d->pidfd >= 0)
		close(d->pidfd);
	free(d);
	return rc;
}

/* Frees d without dropping what it holds (an operation that failed). */
void cowmem__discard_free(struct cowmem__discard *d)
{
	if (!d)
		return;
	int saved = errno;
	if (d->pidfd >= 0)
		close(d->pidfd);
	free(d);
	errno = saved;
}
