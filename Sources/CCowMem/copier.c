/*
 * The page copies of a fold, run by a helper thread while the fold goes on.
 *
 * A fold copies two 4 KiB pages per page the head wrote, at random places in
 * the layer: the copies wait on memory, not on the CPU. The fold hands them
 * over in blocks as it finds them, so a second CPU copies while the first
 * scans the page tables and keeps the books, and both copy what is left at
 * the end (1 GiB, 1% written, on this 2-CPU machine: 3.6 ms of copies on
 * one thread, 2.0 ms on two). The caller never waits for the helper to
 * start: the two take chunks of a block from the same counter, and the
 * caller waits only for chunks the helper has taken. The helper exits after
 * a second without work, or when the last region is gone. Without a second
 * CPU, a thread or memory for a block, the caller copies alone; the result
 * is the same.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"

#define BLOCK_JOBS 256 /* jobs handed over at once */
#define CHUNK 16       /* jobs a thread takes from a block at once */
#define IDLE_SECONDS 1

struct block {
	struct cowmem__page_job jobs[BLOCK_JOBS];
	size_t count;
	atomic_size_t next; /* the next chunk to take */
};

struct cowmem__copy_batch {
	struct block **blocks; /* handed over, in order; under copier_lock */
	size_t count, capacity;
	struct block *filling; /* the caller's, not handed over yet */
	bool ended;            /* under copier_lock: no more blocks come */
	void (*task)(void *);  /* run once before the copies, by either thread */
	void *task_arg;
	enum { TASK_WAITING, TASK_RUNNING, TASK_DONE } task_state; /* under copier_lock */
};

static pthread_mutex_t copier_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_posted = PTHREAD_COND_INITIALIZER;
static pthread_cond_t helper_done = PTHREAD_COND_INITIALIZER;

/* Under copier_lock. */
static struct cowmem__copy_batch *offered; /* a batch the helper may take */
static bool running, helping;
static bool quit; /* the last region is gone */

static void run_job(const struct cowmem__page_job *job)
{
	size_t page_size = cowmem__engine.page_size;

	/* A layer page the shared mapping does not map yet then faults once,
	 * for writing, instead of a read fault (fault-around, read-only) and
	 * then a write-protect fault with its TLB flush. */
	if (job->punch < 0)
		cowmem__touch_for_write(job->target);
	if (job->keep)
		memcpy(job->keep, job->target, page_size);
	if (job->punch >= 0) /* unmaps it from every reader; a new page follows */
		(void)fallocate(cowmem__pagefile_fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				job->punch, (off_t)page_size);
	memcpy(job->target, job->content, page_size);
}

static void work_through(struct block *b)
{
	for (;;) {
		size_t first = atomic_fetch_add_explicit(&b->next, CHUNK, memory_order_relaxed);
		if (first >= b->count)
			return;
		size_t end = first + CHUNK < b->count ? first + CHUNK : b->count;
		for (size_t i = first; i < end; i++)
			run_job(&b->jobs[i]);
	}
}

/* Runs the batch's task unless the other thread has taken it (lock held). */
static void take_task(struct cowmem__copy_batch *batch)
{
	if (batch->task_state != TASK_WAITING)
		return;
	batch->task_state = TASK_RUNNING;
	pthread_mutex_unlock(&copier_lock);
	batch->task(batch->task_arg);
	pthread_mutex_lock(&copier_lock);
	batch->task_state = TASK_DONE;
	pthread_cond_broadcast(&helper_done);
}

/* Runs the task, then copies the blocks of one batch as they come, until
 * it ends. */
static void help(struct cowmem__copy_batch *batch)
{
	size_t done = 0;

	take_task(batch);
	while (!batch->ended || done < batch->count) {
		if (done == batch->count) {
			pthread_cond_wait(&work_posted, &copier_lock);
			continue;
		}
		struct block *b = batch->blocks[done++];
		pthread_mutex_unlock(&copier_lock);
		work_through(b);
		pthread_mutex_lock(&copier_lock);
	}
}

static void *helper(void *unused)
{
	(void)unused;
	pthread_mutex_lock(&copier_lock);
	for (;;) {
		if (offered) {
			struct cowmem__copy_batch *batch = offered;
			offered = NULL; /* taken: its caller waits for this thread */
			helping = true;
			help(batch);
			helping = false;
			pthread_cond_broadcast(&helper_done);
			continue;
		}
		if (quit)
			break;
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += IDLE_SECONDS;
		if (pthread_cond_timedwait(&work_posted, &copier_lock, &until) == ETIMEDOUT &&
		    !offered)
			break;
	}
	running = false;
	pthread_mutex_unlock(&copier_lock);
	return NULL;
}

static bool have_second_cpu(void)
{
	static int cpus; /* 0: not asked yet */

	if (cpus == 0) {
		long online = sysconf(_SC_NPROCESSORS_ONLN);
		cpus = online > 0 ? (int)online : 1;
	}
	return cpus > 1;
}

struct cowmem__copy_batch *cowmem__copier_begin(void (*task)(void *), void *arg)
{
	struct cowmem__copy_batch *batch = calloc(1, sizeof *batch);

	if (!batch) {
		if (task)
			task(arg);
		return NULL; /* every job runs as it is added */
	}
	batch->task = task;
	batch->task_arg = arg;
	batch->task_state = task ? TASK_WAITING : TASK_DONE;
	if (!have_second_cpu())
		return batch;
	pthread_mutex_lock(&copier_lock);
	quit = false;
	if (!running)
		running = cowmem__engine_start_thread(helper, NULL, NULL) == 0;
	if (running) {
		offered = batch;
		pthread_cond_broadcast(&work_posted);
	}
	pthread_mutex_unlock(&copier_lock);
	return batch;
}

static void hand_over(struct cowmem__copy_batch *batch)
{
	struct block *b = batch->filling;

	batch->filling = NULL;
	pthread_mutex_lock(&copier_lock);
	if (batch->count == batch->capacity) {
		size_t capacity = batch->capacity ? batch->capacity * 2 : 16;
		struct block **grown = realloc(batch->blocks, capacity * sizeof *grown);
		if (!grown) {
			pthread_mutex_unlock(&copier_lock);
			work_through(b); /* no room to hand it over: copy it now */
			free(b);
			return;
		}
		batch->blocks = grown;
		batch->capacity = capacity;
	}
	batch->blocks[batch->count++] = b;
	pthread_cond_broadcast(&work_posted);
	pthread_mutex_unlock(&copier_lock);
}

void cowmem__copier_add(struct cowmem__copy_batch *batch, const struct cowmem__page_job *job)
{
	if (batch && !batch->filling && (batch->filling = malloc(sizeof *batch->filling))) {
		batch->filling->count = 0;
		atomic_init(&batch->filling->next, 0);
	}
	if (!batch || !batch->filling) {
		run_job(job);
		return;
	}
	batch->filling->jobs[batch->filling->count++] = *job;
	if (batch->filling->count == BLOCK_JOBS)
		hand_over(batch);
}

void cowmem__copier_task_done(struct cowmem__copy_batch *batch)
{
	if (!batch)
		return; /* begin ran it */
	pthread_mutex_lock(&copier_lock);
	take_task(batch);
	while (batch->task_state != TASK_DONE)
		pthread_cond_wait(&helper_done, &copier_lock);
	pthread_mutex_unlock(&copier_lock);
}

void cowmem__copier_finish(struct cowmem__copy_batch *batch)
{
	if (!batch)
		return;
	cowmem__copier_task_done(batch);
	if (batch->filling)
		hand_over(batch);
	pthread_mutex_lock(&copier_lock);
	batch->ended = true;
	if (offered == batch)
		offered = NULL; /* not taken: it never will be */
	pthread_cond_broadcast(&work_posted);
	size_t count = batch->count;
	pthread_mutex_unlock(&copier_lock);
	for (size_t i = 0; i < count; i++)
		work_through(batch->blocks[i]);
	pthread_mutex_lock(&copier_lock);
	while (helping)
		pthread_cond_wait(&helper_done, &copier_lock);
	pthread_mutex_unlock(&copier_lock);
	for (size_t i = 0; i < count; i++)
		free(batch->blocks[i]);
	free(batch->blocks);
	free(batch);
}

void cowmem__copier_quit(void)
{
	pthread_mutex_lock(&copier_lock);
	quit = true;
	pthread_cond_broadcast(&work_posted);
	pthread_mutex_unlock(&copier_lock);
}

/* fork() happens under the engine lock, so no batch is under way; the child
 * has no helper thread. */
void cowmem__copier_fork_prepare(void)
{
	pthread_mutex_lock(&copier_lock);
}

void cowmem__copier_fork_parent(void)
{
	pthread_mutex_unlock(&copier_lock);
}

void cowmem__copier_fork_child(void)
{
	running = helping = quit = false;
	offered = NULL;
	pthread_cond_init(&work_posted, NULL);
	pthread_cond_init(&helper_done, NULL);
	pthread_mutex_unlock(&copier_lock);
}
