/*
 * host_server.c - serve CowMem's page faults from a thread the program owns.
 *
 * By default the library starts a fault-server thread of its own. A program
 * that manages its threads itself claims that job with cowmem_server_claim()
 * before creating any region, then calls cowmem_server_handle() whenever the
 * returned descriptor is readable. Here a pthread does that, and a pipe tells
 * it when to stop (poll waits without a timeout: it never spins).
 *
 * Build and run:
 *     cc host_server.c $(pkg-config --cflags --libs cowmem) -o host_server
 *     ./host_server
 * Exits 0 if every snapshot kept the content the source had when it was made.
 */
#include <cowmem.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define REGION_SIZE ((size_t)16 << 20)
#define GENERATIONS 3

struct server {
	int fault_fd;      /* from cowmem_server_claim(); the library's */
	int stop_fds[2];   /* a byte written to [1] stops the thread */
	atomic_long handled;
	pthread_t thread;
};

/*
 * The only thread that can resolve faults: it must never touch region
 * memory itself, or it would wait for itself.
 */
static void *serve_faults(void *arg)
{
	struct server *server = arg;
	struct pollfd fds[2] = {
		{ .fd = server->fault_fd, .events = POLLIN },
		{ .fd = server->stop_fds[0], .events = POLLIN },
	};

	for (;;) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("host_server: poll");
			return NULL;
		}
		if (fds[0].revents & POLLIN) {
			int handled = cowmem_server_handle();
			if (handled < 0) {
				perror("host_server: cowmem_server_handle");
				return NULL;
			}
			atomic_fetch_add(&server->handled, handled);
		}
		if (fds[1].revents & POLLIN)
			return NULL;
	}
}

/* Returns 1 if a server thread runs, 0 if none is needed, -1 on error. */
static int start_server(struct server *server)
{
	server->fault_fd = cowmem_server_claim();
	if (server->fault_fd < 0) {
		if (errno == ENOTSUP) {
			/* No userfaultfd here: regions work without faults. */
			printf("no page faults to serve: the library uses its fallback\n");
			return 0;
		}
		perror("host_server: cowmem_server_claim");
		return -1;
	}
	if (pipe(server->stop_fds) < 0) {
		perror("host_server: pipe");
		return -1;
	}
	int rc = pthread_create(&server->thread, NULL, serve_faults, server);
	if (rc != 0) {
		fprintf(stderr, "host_server: pthread_create: %s\n", strerror(rc));
		goto err_close_pipe;
	}
	return 1;

err_close_pipe:
	close(server->stop_fds[0]);
	close(server->stop_fds[1]);
	return -1;
}

/* Call only once no region is left: faults would wait forever after this. */
static void stop_server(struct server *server)
{
	if (write(server->stop_fds[1], "", 1) != 1)
		perror("host_server: write");
	pthread_join(server->thread, NULL);
	close(server->stop_fds[0]);
	close(server->stop_fds[1]);
}

/* The byte at `offset` in generation `generation` of the data. */
static unsigned char pattern(size_t offset, int generation)
{
	return (unsigned char)(offset * 7 + offset / 4096 + (size_t)generation * 31);
}

static int check(const cowmem_region *snapshot, int generation)
{
	const unsigned char *seen = cowmem_data(snapshot);

	for (size_t i = 0; i < cowmem_size(snapshot); i++) {
		if (seen[i] != pattern(i, generation)) {
			fprintf(stderr, "host_server: snapshot %d, byte %zu is %#x, want %#x\n",
				generation, i, seen[i], pattern(i, generation));
			return -1;
		}
	}
	return 0;
}

int main(void)
{
	struct server server = { .handled = 0 };
	cowmem_region *history[GENERATIONS] = { 0 };
	int serving = start_server(&server);
	int failed = 0;

	if (serving < 0)
		return 1;

	cowmem_region *source = cowmem_create(REGION_SIZE);
	if (!source) {
		perror("host_server: cowmem_create");
		failed = 1;
		goto out;
	}
	unsigned char *bytes = cowmem_data(source);

	/* Rewrite every page, then snapshot it: a history of generations. The
	 * pages a later snapshot shares with the source's private copies are
	 * handed over through page faults, which our thread serves. */
	for (int generation = 0; generation < GENERATIONS; generation++) {
		for (size_t i = 0; i < cowmem_size(source); i++)
			bytes[i] = pattern(i, generation);
		history[generation] = cowmem_clone(source);
		if (!history[generation]) {
			perror("host_server: cowmem_clone");
			failed = 1;
			goto out_destroy;
		}
	}
	memset(bytes, 0xff, cowmem_size(source));

	for (int generation = 0; generation < GENERATIONS; generation++)
		if (check(history[generation], generation) != 0)
			failed = 1;
	printf("%d snapshots of %zu MiB %s; fault messages this program served: %ld\n",
	       GENERATIONS, cowmem_size(source) >> 20, failed ? "CHANGED" : "intact",
	       atomic_load(&server.handled));

out_destroy:
	for (int generation = 0; generation < GENERATIONS; generation++)
		if (cowmem_destroy(history[generation]) != 0)
			failed = 1;
	if (cowmem_destroy(source) != 0)
		failed = 1;
out:
	/* Only now: a fault after this would wait for a server that is gone. */
	if (serving)
		stop_server(&server);
	return failed;
}
