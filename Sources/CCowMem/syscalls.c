/*
 * One tiny wrapper per raw system call or userfaultfd ioctl, so that every
 * kernel call the engine makes is easy to find, trace and fake. The
 * system calls return what the kernel does (a descriptor, or -1 and
 * errno, as libc's wrappers would); the ioctls return 0 or a negative
 * errno, as the rest of the library does.
 */
#include <errno.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

int cowmem__sys_userfaultfd(int flags)
{
	return (int)syscall(SYS_userfaultfd, flags);
}

int cowmem__sys_memfd_create(const char *name, unsigned int flags)
{
	return (int)syscall(SYS_memfd_create, name, flags);
}

/* The memfd region memory lives in: close-on-exec, sealable, and where the
 * kernel can (6.3+) not executable for good. COWMEM_DISABLE=noexec-seal
 * takes the way of older kernels. */
int cowmem__memfd_for_pages(void)
{
	const unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;

	if (cowmem__engine.features & FEATURE_NOEXEC_SEAL) {
		int fd = cowmem__sys_memfd_create("cowmem", flags | MFD_NOEXEC_SEAL);
		if (fd >= 0 || errno != EINVAL)
			return fd;
	}
	return cowmem__sys_memfd_create("cowmem", flags);
}

/* A pidfd of this process for process_madvise(2) batches, or -1 (then
 * madvise(2) one range at a time): before 5.10, or with
 * COWMEM_DISABLE=process-madvise. */
int cowmem__pidfd_for_madvise(void)
{
	if (!(cowmem__engine.features & FEATURE_PROCESS_MADVISE))
		return -1;
	return cowmem__sys_pidfd_open(getpid(), 0);
}

/* glibc's mremap() wrapper rejects MREMAP_DONTUNMAP on some versions; the raw
 * system call does not. */
void *cowmem__sys_mremap(void *old_address, size_t old_size, size_t new_size,
			 int flags, void *new_address)
{
	return (void *)syscall(SYS_mremap, old_address, old_size, new_size,
			       flags, new_address);
}

int cowmem__sys_pidfd_open(pid_t pid, unsigned int flags)
{
	return (int)syscall(SYS_pidfd_open, pid, flags);
}

/* 5.10+; MADV_DONTNEED on the caller's own process since 6.13. */
ssize_t cowmem__sys_process_madvise(int pidfd, const struct iovec *iov, size_t count, int advice,
				    unsigned int flags)
{
	return syscall(SYS_process_madvise, pidfd, iov, count, advice, flags);
}

/* Moves exactly `length` bytes at `offset`, reading into buffer or writing
 * from it: 0, or a negative errno (-EIO if the file ends first or takes
 * nothing: a file the library checked was cut short behind its back, and
 * the page must fail loudly rather than read as zeros). */
static int transfer_all(int fd, char *at, size_t length, off_t offset, bool writing)
{
	while (length > 0) {
		ssize_t n = writing ? pwrite(fd, at, length, offset) : pread(fd, at, length, offset);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		at += n;
		length -= (size_t)n;
		offset += n;
	}
	return 0;
}

int cowmem__pread_all(int fd, void *buffer, size_t length, off_t offset)
{
	return transfer_all(fd, buffer, length, offset, false);
}

int cowmem__pwrite_all(int fd, const void *buffer, size_t length, off_t offset)
{
	/* Only read from: pwrite() takes it as const. */
	return transfer_all(fd, (char *)buffer, length, offset, true);
}

int cowmem__pwrite_nonzero_pages(int fd, const char *pages, size_t count, off_t offset)
{
	size_t page_size = cowmem__engine.page_size;

	for (size_t k = 0; k < count;) {
		if (cowmem__page_is_zero(pages + k * page_size)) {
			k++;
			continue;
		}
		size_t run = 1;
		while (k + run < count && !cowmem__page_is_zero(pages + (k + run) * page_size))
			run++;
		int rc = cowmem__pwrite_all(fd, pages + k * page_size, run * page_size,
					    offset + (off_t)(k * page_size));
		if (rc < 0)
			return rc;
		k += run;
	}
	return 0;
}

int cowmem__uffd_api(int uffd, uint64_t want, uint64_t *granted)
{
	struct uffdio_api api = { .api = UFFD_API, .features = want };

	if (ioctl(uffd, UFFDIO_API, &api) < 0)
		return -errno;
	*granted = api.features;
	return 0;
}

int cowmem__uffd_register(int uffd, void *addr, size_t len, uint64_t modes)
{
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)addr, .len = len },
		.mode = modes,
	};
	return ioctl(uffd, UFFDIO_REGISTER, &reg) < 0 ? -errno : 0;
}

int cowmem__uffd_unregister(int uffd, void *addr, size_t len)
{
	struct uffdio_range range = { .start = (uintptr_t)addr, .len = len };
	return ioctl(uffd, UFFDIO_UNREGISTER, &range) < 0 ? -errno : 0;
}

/* The fill ioctls report progress in a field of their own; a partial fill
 * ends with an error (-EEXIST, -EFAULT, ...) and *done tells how far it
 * got. */
static int filled(int rc, int64_t progress, size_t *done)
{
	*done = progress > 0 ? (size_t)progress : 0;
	if (rc < 0)
		return errno ? -errno : -EIO;
	return progress < 0 ? (int)progress : 0;
}

int cowmem__uffd_copy(int uffd, void *dst, const void *src, size_t len, uint64_t mode,
		      size_t *done)
{
	struct uffdio_copy c = { .dst = (uintptr_t)dst, .src = (uintptr_t)src,
				 .len = len, .mode = mode };
	int rc = ioctl(uffd, UFFDIO_COPY, &c);
	return filled(rc, c.copy, done);
}

int cowmem__uffd_zeropage(int uffd, void *dst, size_t len, size_t *done)
{
	struct uffdio_zeropage z = { .range = { (uintptr_t)dst, len } };
	int rc = ioctl(uffd, UFFDIO_ZEROPAGE, &z);
	return filled(rc, z.zeropage, done);
}

int cowmem__uffd_continue(int uffd, void *dst, size_t len, size_t *done)
{
	struct uffdio_continue c = { .range = { (uintptr_t)dst, len } };
	int rc = ioctl(uffd, UFFDIO_CONTINUE, &c);
	return filled(rc, c.mapped, done);
}

int cowmem__uffd_wake(int uffd, void *addr, size_t len)
{
	struct uffdio_range r = { (uintptr_t)addr, len };
	return ioctl(uffd, UFFDIO_WAKE, &r) < 0 ? -errno : 0;
}

int cowmem__uffd_poison(int uffd, void *addr, size_t len)
{
	struct uffdio_poison p = { .range = { (uintptr_t)addr, len } };
	return ioctl(uffd, UFFDIO_POISON, &p) < 0 ? -errno : 0;
}
