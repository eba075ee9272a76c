/*
 * Tears down retired page tables off the caller's path. Freezing a populated
 * 1 GiB region moves its page tables aside in microseconds, but unmapping
 * them costs tens of milliseconds; a clone should not wait for that.
 */
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>
#include <sys/mman.h>

#include "internal.h"

#define ZAP_CHUNK ((size_t)4 << 20)     /* populated ranges */
#define SPARSE_CHUNK ((size_t)64 << 20) /* ranges with few pages mapped */
#define JANITOR_NICE 10

struct retired {
	char *addr;
	size_t len;
	size_t step; /* zap in steps of this size first */
	struct retired *next;
};

static pthread_mutex_t janitor_lock = PTHREAD_MUTEX_INITIALIZER;
/*
 * While the janitor zaps on another CPU, every TLB flush of the process (one
 * per write-protect ioctl of a clone) must interrupt that CPU: a re-clone
 * right after a first clone of 1 GiB took 26 ms instead of 4 ms. So clone
 * and reset pause it: it finishes the step it is in (the caller never waits
 * for it: it runs at a lower priority) and then sleeps until resumed, and a
 * sleeping CPU is not interrupted.
 */
static unsigned pauses;             /* under janitor_lock */
static pthread_cond_t resumed = PTHREAD_COND_INITIALIZER;

void cowmem__janitor_pause(void)
{
	pthread_mutex_lock(&janitor_lock);
	pauses++;
	pthread_mutex_unlock(&janitor_lock);
}

void cowmem__janitor_resume(void)
{
	pthread_mutex_lock(&janitor_lock);
	if (--pauses == 0)
		pthread_cond_broadcast(&resumed);
	pthread_mutex_unlock(&janitor_lock);
}

static void wait_while_paused(void)
{
	pthread_mutex_lock(&janitor_lock);
	while (pauses > 0)
		pthread_cond_wait(&resumed, &janitor_lock);
	pthread_mutex_unlock(&janitor_lock);
}
static struct retired *queue;
static bool running;

/* Works until the queue is empty, then exits: no thread lingers once the
 * regions are gone. */
static void *janitor(void *unused)
{
	(void)unused;
	/* Tearing down page tables is never urgent: let the application's
	 * threads (faulting on the pages just cloned) have the CPU first. Each
	 * step holds the mmap lock only for reading and only briefly, so a
	 * low priority cannot hold up an mmap for long. */
	(void)setpriority(PRIO_PROCESS, (id_t)gettid(), JANITOR_NICE);
	pthread_mutex_lock(&janitor_lock);
	while (queue) {
		struct retired *job = queue;
		queue = job->next;
		pthread_mutex_unlock(&janitor_lock);
		/* MADV_DONTNEED zaps under the mmap lock held for reading, in
		 * small steps, so faults and mmap calls elsewhere wait at most
		 * one step; the final munmap then has nothing left to zap. */
		for (size_t done = 0; done < job->len; done += job->step) {
			size_t len = job->len - done < job->step ? job->len - done : job->step;
			wait_while_paused();
			madvise(job->addr + done, len, MADV_DONTNEED);
		}
		munmap(job->addr, job->len);
		free(job);
		pthread_mutex_lock(&janitor_lock);
	}
	running = false;
	pthread_mutex_unlock(&janitor_lock);
	return NULL;
}

/* Whether retired ranges are still being torn down (for the tests that
 * measure memory). */
bool cowmem__janitor_busy(void)
{
	pthread_mutex_lock(&janitor_lock);
	bool busy = running;
	pthread_mutex_unlock(&janitor_lock);
	return busy;
}

static void retire(void *addr, size_t len, size_t step);

void cowmem__janitor_unmap(void *addr, size_t len)
{
	retire(addr, len, ZAP_CHUNK);
}

/* For ranges with few pages mapped (a fold's staging range): larger steps,
 * because each step's TLB flush interrupts the other CPU, where the
 * application writes. One munmap of 1 GiB with 1% of it written held up
 * every mmap and munmap of the process for about a millisecond (the
 * destroy of the oldest snapshot right after a clone); a 64 MiB step holds
 * them up for about 0.1 ms. */
void cowmem__janitor_unmap_sparse(void *addr, size_t len)
{
	retire(addr, len, SPARSE_CHUNK);
}

static void retire(void *addr, size_t len, size_t step)
{
	struct retired *job = malloc(sizeof *job);

	pthread_mutex_lock(&janitor_lock);
	if (job && !running)
		running = cowmem__engine_start_thread(janitor, NULL, NULL) == 0;
	if (!job || !running) {
		pthread_mutex_unlock(&janitor_lock);
		free(job);
		munmap(addr, len); /* no thread to spare: do it here */
		return;
	}
	*job = (struct retired){ addr, len, step, queue };
	queue = job;
	pthread_mutex_unlock(&janitor_lock);
}

void cowmem__janitor_fork_prepare(void)
{
	pthread_mutex_lock(&janitor_lock);
}

void cowmem__janitor_fork_parent(void)
{
	pthread_mutex_unlock(&janitor_lock);
}

/* Retired ranges were not inherited (MADV_DONTFORK moves with the VMA), and
 * neither was the thread. */
void cowmem__janitor_fork_child(void)
{
	while (queue) {
		struct retired *job = queue;
		queue = job->next;
		free(job);
	}
	running = false;
	/* Only the forking thread exists here: nobody pauses the janitor. */
	pauses = 0;
	pthread_cond_init(&resumed, NULL);
	pthread_mutex_unlock(&janitor_lock);
}
