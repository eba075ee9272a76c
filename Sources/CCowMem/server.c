/*
 * The fault server: reads userfaultfd messages and resolves each one.
 * Either the library's own pthread runs the loop (C programs), or a host
 * claims it and calls cowmem_server_handle() from a thread of its own (the
 * Swift overlay). Either way the server never touches region memory through
 * registered addresses: a fault there would wait for the one thread that
 * could resolve it.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define MESSAGE_BATCH 64

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

int cowmem__server_handle_all(void)
{
	struct uffd_msg msgs[MESSAGE_BATCH];
	int handled = 0;

	for (;;) {
		ssize_t n = read(cowmem__engine.uffd, msgs, sizeof msgs);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return handled;
			return handled > 0 ? handled : -1;
		}
		size_t count = (size_t)n / sizeof msgs[0];
		/* Blocked time counts from the read: the kernel does not say
		 * when a fault was raised (QEMU's blocktime starts here too). */
		uint64_t read_at = now_ns();
		pthread_mutex_lock(&cowmem__engine.lock);
		for (size_t i = 0; i < count; i++)
			cowmem__resolve(&msgs[i], read_at);
		pthread_mutex_unlock(&cowmem__engine.lock);
		handled += (int)count;
	}
}

static pthread_t library_thread;
static int library_stop_fd = -1;

/* Serves until its stop descriptor becomes readable; it owns (and closes)
 * that descriptor, so a successor may start before it has exited. */
static void *library_server(void *arg)
{
	int stop_fd = (int)(intptr_t)arg;
	struct pollfd pfd[2] = {
		{ .fd = cowmem__engine.uffd, .events = POLLIN },
		{ .fd = stop_fd, .events = POLLIN },
	};

	cowmem__prepare_to_fail();
	for (;;) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno != EINTR)
				fprintf(stderr, "cowmem: fault server: poll: %s\n",
					strerror(errno));
			continue;
		}
		if (pfd[1].revents)
			break;
		if (cowmem__server_handle_all() < 0 && errno != EINTR)
			fprintf(stderr, "cowmem: fault server: read: %s\n", strerror(errno));
	}
	/* Consume the stop signal: the read pairs with the write of
	 * cowmem__server_stop_library_thread(), so the hand-off of stop_fd is visible
	 * (ThreadSanitizer reports the close as a race otherwise). */
	uint64_t stop;
	(void)!read(stop_fd, &stop, sizeof stop);
	close(stop_fd);
	return NULL;
}

/* Unless faults have a server already (the library's thread, or a hosted
 * one), or there is no userfaultfd to serve: the library's thread. */
int cowmem__server_ensure_running(void)
{
	if (cowmem__engine.uffd < 0 || cowmem__engine.server != SERVER_NONE)
		return 0;
	int stop_fd = eventfd(0, EFD_CLOEXEC);

	if (stop_fd < 0)
		return -errno;
	int rc = cowmem__engine_start_thread(library_server, (void *)(intptr_t)stop_fd,
					     &library_thread);
	if (rc < 0) {
		close(stop_fd);
		return rc;
	}
	library_stop_fd = stop_fd;
	cowmem__engine.server = SERVER_LIBRARY;
	return 0;
}

bool cowmem__server_stop_library_thread(pthread_t *thread)
{
	const uint64_t one = 1;

	if (cowmem__engine.server != SERVER_LIBRARY)
		return false;
	if (write(library_stop_fd, &one, sizeof one) != sizeof one)
		return false; /* an eventfd write of 1 cannot fail; keep serving */
	*thread = library_thread;
	library_stop_fd = -1;
	cowmem__engine.server = SERVER_NONE;
	return true;
}

/* In a forked child: the parent's server thread did not come along, and its
 * stop descriptor names nothing the child will ever use. */
void cowmem__server_fork_child(void)
{
	if (library_stop_fd >= 0)
		close(library_stop_fd);
	library_stop_fd = -1;
}

void cowmem__server_join(pthread_t thread)
{
	pthread_join(thread, NULL);
}

