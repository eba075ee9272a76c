/*
 * The fence: holds a head's accesses while a fold moves its page tables.
 *
 * From the move of the head's page tables until the layer holds its pages,
 * any access to the head must wait (ARCHITECTURE.md, invariant 4). The
 * library's own userfaultfd can hold them (MINOR), but the kernel then
 * moves a registered mapping's page tables one entry at a time, because
 * that descriptor has no UFFD_FEATURE_EVENT_REMAP: 1.1-1.2 ms for 1 GiB,
 * against 0.13 ms unregistered, when it moves whole 2 MiB tables.
 *
 * So during a fold the head is registered on a second descriptor, the
 * fence, which has the remap event. The kernel then moves whole tables and
 * reports the move, and mremap() returns once the event is read: a thread
 * of the fence's own reads and discards every message (0.06-0.12 ms for
 * the move and its event, median, with the thread told beforehand). An access meanwhile waits in the fence; lowering the
 * fence (unregistering) wakes it, and it retries against the new layer.
 * The thread never takes the engine lock, so a fold that holds it cannot
 * wait on itself. Where the fence cannot be had (no remap event, no thread,
 * COWMEM_DISABLE=event-remap) the fold registers MINOR on the library's own
 * descriptor instead, as before.
 */
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "engine.h"

struct cowmem__fence {
	int fd;      /* the fence's userfaultfd */
	int stop_fd; /* an eventfd: the drainer exits */
	int move_fd; /* an eventfd: a move comes, read until it is done */
	atomic_bool moving;
	pthread_t drainer;
};

static struct cowmem__fence *fence; /* under engine.lock */

static void *drain(void *arg)
{
	struct cowmem__fence *f = arg;
	struct pollfd fds[3] = { { f->fd, POLLIN, 0 }, { f->stop_fd, POLLIN, 0 },
				 { f->move_fd, POLLIN, 0 } };
	struct uffd_msg messages[16];
	uint64_t count;

	for (;;) {
		if (poll(fds, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (fds[1].revents)
			break;
		/* Remap events complete when read; faults wait for the
		 * unregister that lowers the fence. */
		while (read(f->fd, messages, sizeof messages) > 0)
			;
		/* A move is coming: read without sleeping until it is done,
		 * so that mremap() does not wait for this thread to wake. */
		if (fds[2].revents && read(f->move_fd, &count, sizeof count) > 0)
			while (atomic_load_explicit(&f->moving, memory_order_acquire))
				(void)!read(f->fd, messages, sizeof messages);
	}
	return NULL;
}

static void free_fence(struct cowmem__fence *f)
{
	if (f->fd >= 0)
		close(f->fd);
	if (f->stop_fd >= 0)
		close(f->stop_fd);
	if (f->move_fd >= 0)
		close(f->move_fd);
	free(f);
}

static int open_fence(void)
{
	if (!(cowmem__engine.features & FEATURE_EVENT_REMAP) ||
	    !(cowmem__engine.features & FEATURE_MINOR))
		return -ENOTSUP;
	struct cowmem__fence *f = malloc(sizeof *f);
	if (!f)
		return -ENOMEM;
	f->fd = cowmem__backend_open_another(UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_MISSING_SHMEM |
					     UFFD_FEATURE_MINOR_SHMEM);
	int rc = f->fd < 0 ? f->fd : 0;
	f->stop_fd = rc < 0 ? -1 : eventfd(0, EFD_CLOEXEC);
	f->move_fd = f->stop_fd < 0 ? -1 : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	atomic_init(&f->moving, false);
	if (rc == 0)
		rc = f->move_fd < 0 ? -errno : cowmem__engine_start_thread(drain, f, &f->drainer);
	if (rc < 0) {
		free_fence(f);
		return rc;
	}
	fence = f;
	return 0;
}

int cowmem__fence_raise(struct cowmem_region *head)
{
	int rc;

	if (!fence && (rc = open_fence()) < 0)
		return rc;
	/* A mapping has one descriptor: leave the library's first. Until the
	 * fence is up, accesses are the kernel's, on pages not moved yet. */
	if (head->uffd_modes &&
	    (rc = cowmem__uffd_unregister(cowmem__engine.uffd, head->data, head->size)) < 0)
		return rc;
	head->uffd_modes = 0;
	/* Refused: the caller registers the head with the library again. */
	return cowmem__uffd_register(fence->fd, head->data, head->size,
				     UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR);
}

void cowmem__fence_lower(struct cowmem_region *head)
{
	/* Unregistering wakes the accesses that waited; they retry against
	 * the layer. But it wakes them before it write-locks the mapping, and
	 * a fault that holds only the mapping's own lock (per-VMA locking)
	 * can still find the fence registered and start waiting in between:
	 * nothing would ever wake it, since the drainer only discards its
	 * message (seen here once in about 450 runs of threads.c's
	 * clone-while-written, a writer blocked for good). Once unregistering
	 * returns, every such fault is queued, and waking the range on the
	 * fence's descriptor reaches them; it needs no registration. The
	 * caller registers the head with the library again. */
	(void)cowmem__uffd_unregister(fence->fd, head->data, head->size);
	(void)cowmem__uffd_wake(fence->fd, head->data, head->size);
}

/* The head's page tables are about to move: the drainer stops sleeping
 * (the wake-up costs 0.1-0.3 ms here, and now it overlaps the fold's steps
 * before the move instead of holding up mremap(), which returns only once
 * the event is read), until cowmem__fence_moved(). */
void cowmem__fence_expect_move(void)
{
	uint64_t one = 1;

	atomic_store_explicit(&fence->moving, true, memory_order_release);
	(void)!write(fence->move_fd, &one, sizeof one);
}

void cowmem__fence_moved(void)
{
	atomic_store_explicit(&fence->moving, false, memory_order_release);
}

/* A range moved away from the head (a fold's staging) leaves the fence:
 * nothing waits there. */
void cowmem__fence_leave(char *addr, size_t len)
{
	(void)cowmem__uffd_unregister(fence->fd, addr, len);
}

struct cowmem__fence *cowmem__fence_close(void)
{
	struct cowmem__fence *f = fence;
	uint64_t one = 1;

	if (f)
		(void)!write(f->stop_fd, &one, sizeof one);
	fence = NULL;
	return f;
}

void cowmem__fence_join(struct cowmem__fence *f)
{
	if (!f)
		return;
	pthread_join(f->drainer, NULL);
	free_fence(f);
}

/* The descriptors name the parent; the thread stayed there. */
void cowmem__fence_fork_child(void)
{
	if (fence)
		free_fence(fence);
	fence = NULL;
}
