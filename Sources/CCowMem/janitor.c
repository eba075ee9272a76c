/*
 * Tears down retired page tables off the caller's path. Freezing a populated
 * 1 GiB region moves its page tables aside in microseconds, but unmapping
 * them costs tens of milliseconds; a clone should not wait for that.
 */
#include <stdlib.h>
#include <sys/mman.h>

#include "internal.h"

#define UNMAP_CHUNK ((size_t)64 << 20) /* keep each mmap_lock hold short */

struct retired {
	char *addr;
	size_t len;
	struct retired *next;
};

static pthread_mutex_t janitor_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t janitor_wake = PTHREAD_COND_INITIALIZER;
static struct retired *queue;
static bool running;

static void *janitor(void *unused)
{
	(void)unused;
	pthread_mutex_lock(&janitor_lock);
	for (;;) {
		while (!queue)
			pthread_cond_wait(&janitor_wake, &janitor_lock);
		struct retired *job = queue;
		queue = job->next;
		pthread_mutex_unlock(&janitor_lock);
		for (size_t done = 0; done < job->len; done += UNMAP_CHUNK) {
			size_t len = job->len - done < UNMAP_CHUNK ? job->len - done : UNMAP_CHUNK;
			munmap(job->addr + done, len);
		}
		free(job);
		pthread_mutex_lock(&janitor_lock);
	}
	return NULL;
}

void janitor_unmap(void *addr, size_t len)
{
	struct retired *job = malloc(sizeof *job);

	pthread_mutex_lock(&janitor_lock);
	if (job && !running) {
		running = engine_start_thread(janitor) == 0;
	}
	if (!job || !running) {
		pthread_mutex_unlock(&janitor_lock);
		free(job);
		munmap(addr, len); /* no thread to spare: do it here */
		return;
	}
	*job = (struct retired){ addr, len, queue };
	queue = job;
	pthread_cond_signal(&janitor_wake);
	pthread_mutex_unlock(&janitor_lock);
}
