/*
 * The folder: a clone returns once the head's page tables have moved, and
 * the fold's copies finish on a thread of their own.
 *
 * A fold's cost is its copies and the walk of the staging page tables
 * (2-6 ms for 1% of a GiB), and until they are done the head and the new
 * clone are not what they must be: the head is an empty mapping of a
 * layer that lacks its new pages, the clone a mapping of the same. Both
 * wait on the fence (fence.c), which holds every access to them, so the
 * clone can return as soon as the move is done (about 0.1 ms for a GiB)
 * and the folder finishes the fold: as fork() does, the snapshot returns
 * at once and its cost is paid while the program goes on, here on the
 * other CPU. A program that touches the head or the clone before the fold
 * is done waits for it; one that does other work, or touches other
 * regions, does not.
 *
 * At most one fold is pending, under the engine lock. Whoever takes the
 * lock to look at regions (cowmem__lock_settled(): every public operation
 * but create, and destroy unless it is the fold's head or clone) finishes
 * it first, so that nothing but the fault server, the folder and the
 * destroy of another reader ever sees a fold half done. A destroy there
 * only releases generations, which the fold's copies, when they come, find
 * released (an old version is kept only for a generation held then). For
 * a reader's fault the server needs no more than the layer as it was: the
 * fold has changed nothing yet. A fault of the head or the clone that it
 * read before they went on the fence only wakes the thread, which then
 * waits there (resolve.c). The folder thread finishes the pending fold
 * when nobody else does; it starts with the first clone and stops with
 * the last region.
 * COWMEM_DISABLE=background-fold folds on the calling thread, before the
 * clone returns.
 *
 * With no fold to finish, the thread copies out ahead of time the old
 * versions the next fold will keep (pre_copier.c), in steps that it
 * interrupts as soon as a clone posts a fold.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "engine.h"

struct cowmem__folder {
	pthread_t thread;
	bool quit;
};

/* Under engine.lock. */
static struct cowmem__folder *folder;
static struct cowmem__fold *pending_fold;
static struct cowmem_region *pending_clone;
static bool pending_took_over; /* the fold's head was a reader that took over */
static pthread_cond_t posted = PTHREAD_COND_INITIALIZER;
/* pending_fold != NULL, readable without the lock: a pre-copier step
 * looks while it copies. */
static atomic_bool fold_posted;

/* After a capture of head: the folder's thread copies out the old
 * versions of what it writes next, and of what the clone writes if head
 * took over for this capture (the loop where the newest clone becomes the
 * working copy: the clone will take over in turn). Not otherwise: a clone
 * that writes and is not cloned would hold copies for nothing. */
static void follow_head(const struct cowmem_region *head, bool took_over,
			const struct cowmem_region *clone)
{
	if (!folder)
		return;
	cowmem__precopier_follow(head, took_over ? clone : NULL);
	pthread_cond_broadcast(&posted);
}

static void settle_locked(void)
{
	struct cowmem__fold *fold = pending_fold;
	struct cowmem_region *clone = pending_clone;

	if (!fold)
		return;
	struct cowmem_region *head = cowmem__fold_head(fold);
	pending_fold = NULL;
	pending_clone = NULL;
	atomic_store_explicit(&fold_posted, false, memory_order_relaxed);
	cowmem__fold_finish(fold, clone); /* which lets the clone go on too */
	follow_head(head, pending_took_over, clone);
}

bool cowmem__fold_pending(void)
{
	return pending_fold != NULL;
}

void cowmem__lock_settled(void)
{
	pthread_mutex_lock(&cowmem__engine.lock);
	settle_locked();
}

void cowmem__lock_settled_for_destroy(const struct cowmem_region *r)
{
	pthread_mutex_lock(&cowmem__engine.lock);
	/* Dropping another reader of the layer only releases generations it
	 * held, which the fold's copies, when they come, see as released. */
	if (pending_fold && (r == pending_clone || r == cowmem__fold_head(pending_fold)))
		settle_locked();
}

static bool interrupted(void)
{
	return atomic_load_explicit(&fold_posted, memory_order_relaxed);
}

static void *finish_folds(void *arg)
{
	struct cowmem__folder *self = arg;

	pthread_mutex_lock(&cowmem__engine.lock);
	while (!self->quit) {
		if (pending_fold) {
			settle_locked();
			continue;
		}
		long rest = cowmem__precopier_step(interrupted);
		if (rest == 0 || pending_fold || self->quit)
			continue;
		if (rest < 0) {
			pthread_cond_wait(&posted, &cowmem__engine.lock);
			continue;
		}
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += rest / 1000000000L;
		until.tv_nsec += rest % 1000000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		(void)pthread_cond_timedwait(&posted, &cowmem__engine.lock, &until);
	}
	pthread_mutex_unlock(&cowmem__engine.lock);
	return NULL;
}

/* Started with the fault server, at the first clone, rather than at the
 * first fold that needs it: a fold may come when threads cannot be had
 * (out of memory or mappings), and then folds on the caller's thread. */
void cowmem__folder_ensure_running(void)
{
	if (folder || !(cowmem__engine.features & FEATURE_BACKGROUND_FOLD))
		return;
	struct cowmem__folder *f = calloc(1, sizeof *f);
	if (!f)
		return;
	if (cowmem__engine_start_thread(finish_folds, f, &f->thread) < 0) {
		free(f);
		return;
	}
	folder = f;
}

/* Lock held and settled. */
struct cowmem_region *cowmem__clone_locked(struct cowmem_region *src, int *error)
{
	struct cowmem_region *clone = NULL;
	struct cowmem__overlay *overlay;
	struct cowmem__fold *fold;
	uint64_t gen;
	bool freezes = src->mode == COWMEM__EXCLUSIVE, was_reader = src->mode == COWMEM__READER;
	int rc = cowmem__capture_begin(src, &fold);

	if (rc < 0) {
		*error = -rc;
		return NULL;
	}
	/* The clone is made now and waits on the fence with the head; the
	 * folder finishes the fold. */
	if (fold && cowmem__fold_fenced(fold) && folder &&
	    cowmem__layer_reserve_hold(src->layer) == 0 && cowmem__fresh_reserve() == 0 &&
	    cowmem__reader_new_pending(src->layer, src->size, NULL, &clone) == 0) {
		if (cowmem__fence_raise(clone) == 0) {
			pending_fold = fold;
			pending_clone = clone;
			pending_took_over = was_reader;
			atomic_store_explicit(&fold_posted, true, memory_order_relaxed);
			pthread_cond_broadcast(&posted); /* a closed folder may wait too */
			return clone;
		}
		cowmem__reader_free_pending(clone);
		clone = NULL;
	}
	cowmem__capture_finish(src, fold, &gen, &overlay);
	if ((rc = cowmem__reader_new(src->layer, src->size, gen, overlay, &clone)) < 0) {
		*error = -rc;
		return NULL;
	}
	/* Else nothing was written since the last capture, or nothing folds. */
	if ((fold || freezes) && cowmem__folds)
		follow_head(src, was_reader && src->mode == COWMEM__HEAD, clone);
	return clone;
}

/* With the last region gone (lock held): the folder to join after unlocking. */
struct cowmem__folder *cowmem__folder_close(void)
{
	struct cowmem__folder *f = folder;

	if (f) {
		f->quit = true;
		pthread_cond_broadcast(&posted);
	}
	folder = NULL;
	cowmem__precopier_stop();
	return f;
}

void cowmem__folder_join(struct cowmem__folder *f)
{
	if (!f)
		return;
	pthread_join(f->thread, NULL);
	free(f);
}

/* fork() settled first (its prepare handler takes the lock settled); the
 * thread stayed in the parent. Its wait on `posted` did too, and glibc's
 * broadcast waits for such waiters to leave: the child starts afresh. */
void cowmem__folder_fork_child(void)
{
	free(folder);
	folder = NULL;
	pthread_cond_init(&posted, NULL);
	atomic_store_explicit(&fold_posted, false, memory_order_relaxed);
	cowmem__precopier_fork_child();
}
