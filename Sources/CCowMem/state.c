/*
 * The library's state, shared by every file: what the kernel offers and
 * was granted, the descriptors, the lock. init.c fills it in once.
 */
#include "internal.h"

struct engine cowmem__engine = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.uffd = -1,
	.self_mem = -1,
	.pagemap = -1,
};

const char *cowmem__zero_page; /* page_size zero bytes, the source of zero fills */

bool cowmem__folds; /* and its clones fold (engine.h) */
