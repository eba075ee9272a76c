/*
 * dontunmap.c - a probe for `make test-kernels KERNEL_TESTS=dontunmap`:
 * does the kernel accept MREMAP_DONTUNMAP on a shared memfd mapping
 * (5.13+)? Exits 1 if it refuses.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif
int main(void) {
	size_t size = 1 << 20;
	int fd = memfd_create("probe", 0);
	ftruncate(fd, size);
	char *a = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	memset(a, 1, size);
	char *b = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	void *m = mremap(a, size, size, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, b);
	printf("dontunmap: MREMAP_DONTUNMAP on a shared memfd mapping: %s\n",
	       m == MAP_FAILED ? strerror(errno) : "works");
	return m == MAP_FAILED ? 1 : 0;
}
