/*
 * The public functions about the library itself rather than a region:
 * which backend and features it runs with, its version and page size, and
 * a fault server hosted by the application (cowmem_server_claim(3)). Each
 * starts the library first.
 */
#include <errno.h>
#include <stdint.h>

#include "internal.h"

/* NULL or -1 for a library that could not start, errno saying why. */
static bool start_failed(void)
{
	int rc = cowmem__engine_init();

	if (rc < 0)
		errno = -rc;
	return rc < 0;
}

const char *cowmem_backend(void)
{
	if (start_failed())
		return NULL;
	return cowmem__backend_name();
}

const char *cowmem_features(void)
{
	if (start_failed())
		return NULL;
	return cowmem__features_text();
}

int cowmem_feature_mask(uint64_t *mask)
{
	if (mask)
		*mask = 0;
	if (start_failed())
		return -1;
	if (!mask) {
		errno = EINVAL;
		return -1;
	}
	*mask = cowmem__features_mask();
	return 0;
}

unsigned cowmem_version(void)
{
	return COWMEM_VERSION;
}

size_t cowmem_page_size(void)
{
	if (start_failed())
		return 4096;
	return cowmem__engine.page_size;
}

/* ---- A fault server the application hosts -------------------------------- */

int cowmem_server_claim(void)
{
	if (start_failed())
		return -1;
	pthread_mutex_lock(&cowmem__engine.lock);
	int result = -1;
	if (cowmem__engine.uffd < 0)
		errno = ENOTSUP; /* no userfaultfd: no faults to serve */
	else if (cowmem__engine.server != SERVER_NONE)
		errno = EBUSY;
	else {
		cowmem__engine.server = SERVER_HOSTED;
		result = cowmem__engine.uffd;
	}
	pthread_mutex_unlock(&cowmem__engine.lock);
	return result;
}

int cowmem_server_handle(void)
{
	if (start_failed())
		return -1;
	if (cowmem__engine.uffd < 0) {
		errno = ENOTSUP;
		return -1;
	}
	cowmem__prepare_to_fail(); /* the hosting thread: once */
	return cowmem__server_handle_all();
}
