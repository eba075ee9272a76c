/*
 * hosted_server.c - a program that owns the fault-serving thread.
 *
 * The Swift overlay (and any host with its own event loop) calls
 * cowmem_server_claim() before creating a region and then calls
 * cowmem_server_handle() whenever the returned descriptor is readable. This
 * test does exactly that from a pthread of its own, then runs clones, clones
 * of clones, reads, writes, system calls on unfilled pages and two threads
 * faulting at once, comparing every byte with memcpy models. It also checks
 * that the host's thread really served faults (handle() reported some):
 * the walk's faults on pages lent to clones exist only where lending is
 * lazy (features minor and wp), so holes of a clone, which every
 * userfaultfd configuration fills on demand, are read as well.
 *
 * Runs only on the userfaultfd backends: the memfd backend has no fault
 * server to host. With the "userfaultfd-user" backend the
 * buffers of system calls are prefaulted first, as that backend asks.
 */
#include "harness.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define PAGES 64
#define LIVE 8
#define STEPS 400

static size_t page, size;
static int server_descriptor;
static int stop_pipe[2];
static atomic_long faults_handled;
/* The "userfaultfd-user" backend: buffers of system calls are prefaulted
 * first, as that backend's contract asks. */
static bool prefault_first;

static void prepare(cowmem_region *region, size_t offset, size_t length,
		    int for_write)
{
	if (prefault_first)
		CHECK(cowmem_prefault(region, offset, length, for_write) == 0,
		      "cowmem_prefault: %s", strerror(errno));
}

static void *serve(void *unused)
{
	(void)unused;
	struct pollfd watched[2] = {
		{ .fd = server_descriptor, .events = POLLIN },
		{ .fd = stop_pipe[0], .events = POLLIN },
	};
	for (;;) {
		int ready = poll(watched, 2, -1);
		if (ready < 0 && errno == EINTR)
			continue;
		CHECK(ready > 0, "poll: %s", strerror(errno));
		if (watched[1].revents)
			return NULL;
		if (watched[0].revents & POLLIN) {
			int handled = cowmem_server_handle();
			CHECK(handled >= 0, "cowmem_server_handle: %s", strerror(errno));
			atomic_fetch_add(&faults_handled, handled);
		}
		CHECK(!(watched[0].revents & (POLLERR | POLLNVAL)),
		      "the server descriptor reported an error (revents 0x%x)",
		      watched[0].revents);
	}
}

struct tracked {
	cowmem_region *region;
	unsigned char *model;
};

static void check_tracked(const struct tracked *t, const char *what)
{
	if (memcmp(cowmem_data(t->region), t->model, size) != 0)
		CHECK_BYTES(cowmem_data(t->region), t->model, size, what);
}

/* A random walk over up to LIVE regions, as in differential.c but short,
 * with a pipe round trip through unfilled pages in every step. */
static void *walk(void *argument)
{
	test_rng rng = { test_substream(test_seed, (uintptr_t)argument) };
	struct tracked live[LIVE];
	int count = 0;
	unsigned char *plain = malloc(size);
	int fds[2];
	CHECK(plain && pipe(fds) == 0, "setup: %s", strerror(errno));

	for (int step = 0; step < STEPS; step++) {
		int action = (int)test_rng_below(&rng, 4);
		if (count == 0 || (action == 0 && count < LIVE)) {
			struct tracked *t = &live[count++];
			t->region = cowmem_create(size);
			t->model = malloc(size);
			CHECK(t->region && t->model, "create: %s", strerror(errno));
			test_rng_fill(&rng, t->model, size);
			memcpy(cowmem_data(t->region), t->model, size);
		} else if (action == 1 && count < LIVE) {
			struct tracked *from = &live[test_rng_below(&rng, (uint64_t)count)];
			struct tracked *t = &live[count++];
			t->region = cowmem_clone(from->region);
			t->model = malloc(size);
			CHECK(t->region && t->model, "clone: %s", strerror(errno));
			memcpy(t->model, from->model, size);
		} else if (action == 2 && count > 1) {
			int victim = (int)test_rng_below(&rng, (uint64_t)count);
			CHECK(cowmem_destroy(live[victim].region) == 0, "destroy: %s",
			      strerror(errno));
			free(live[victim].model);
			live[victim] = live[--count];
		}
		/* Every step: a write, a read through write(2) and a write
		 * through read(2), on random spans of a random region. */
		struct tracked *t = &live[test_rng_below(&rng, (uint64_t)count)];
		unsigned char *data = cowmem_data(t->region);
		size_t offset = (size_t)test_rng_below(&rng, size - 3 * page);
		size_t length = 1 + (size_t)test_rng_below(&rng, 3 * page);
		test_rng_fill(&rng, t->model + offset, length);
		memcpy(data + offset, t->model + offset, length);

		t = &live[test_rng_below(&rng, (uint64_t)count)];
		data = cowmem_data(t->region);
		offset = (size_t)test_rng_below(&rng, size - 3 * page);
		prepare(t->region, offset, length, 0);
		CHECK(write(fds[1], data + offset, length) == (ssize_t)length,
		      "write(2) from region memory: %s", strerror(errno));
		CHECK(read(fds[0], plain, length) == (ssize_t)length, "pipe read");
		CHECK_BYTES(plain, t->model + offset, length,
			    "bytes write(2) took from the region");
		test_rng_fill(&rng, plain, length);
		CHECK(write(fds[1], plain, length) == (ssize_t)length, "pipe write");
		prepare(t->region, offset, length, 1);
		CHECK(read(fds[0], data + offset, length) == (ssize_t)length,
		      "read(2) into region memory: %s", strerror(errno));
		memcpy(t->model + offset, plain, length);

		if (step % 50 == 0)
			for (int i = 0; i < count; i++)
				check_tracked(&live[i], "periodic check");
	}
	for (int i = 0; i < count; i++)
		check_tracked(&live[i], "final check");
	while (count > 0) {
		CHECK(cowmem_destroy(live[--count].region) == 0, "destroy: %s",
		      strerror(errno));
		free(live[count].model);
		for (int i = 0; i < count; i++)
			check_tracked(&live[i], "survivor of the final destroys");
	}
	close(fds[0]);
	close(fds[1]);
	free(plain);
	return NULL;
}

/* Holes of a clone (pages neither side ever wrote) are filled by the
 * server on first touch with or without lazy lending: read some through
 * write(2), the rest directly, and check they hold zeros. */
static void read_holes(void)
{
	unsigned char *plain = malloc(2 * page);
	int fds[2];
	CHECK(plain && pipe(fds) == 0, "setup: %s", strerror(errno));
	cowmem_region *source = cowmem_create(size);
	CHECK(source != NULL, "create: %s", strerror(errno));
	memset(cowmem_data(source), 0x5a, page);
	cowmem_region *clone = cowmem_clone(source);
	CHECK(clone != NULL, "clone: %s", strerror(errno));
	unsigned char *data = cowmem_data(clone);

	prepare(clone, page, 2 * page, 0);
	CHECK(write(fds[1], data + page, 2 * page) == (ssize_t)(2 * page),
	      "write(2) from holes of a clone: %s", strerror(errno));
	CHECK(read(fds[0], plain, 2 * page) == (ssize_t)(2 * page), "pipe read");
	for (size_t i = 0; i < 2 * page; i++)
		CHECK(plain[i] == 0, "byte %zu of a hole, through write(2): %d",
		      page + i, plain[i]);
	for (size_t i = 0; i < size; i++)
		CHECK(data[i] == (i < page ? 0x5a : 0), "byte %zu of the clone: %d", i,
		      data[i]);
	CHECK(cowmem_destroy(clone) == 0 && cowmem_destroy(source) == 0,
	      "destroy: %s", strerror(errno));
	close(fds[0]);
	close(fds[1]);
	free(plain);
}

static void hosted(void)
{
	const char *backend = test_backend();
	prefault_first = test_syscalls_need_prefault();

	server_descriptor = cowmem_server_claim();
	if (server_descriptor < 0 && (errno == EPERM || errno == ENOSYS))
		test_skip("cowmem_server_claim: %s", strerror(errno));
	CHECK(server_descriptor >= 0, "cowmem_server_claim() before any region: %s",
	      strerror(errno));
	CHECK(pipe(stop_pipe) == 0, "pipe: %s", strerror(errno));
	pthread_t server;
	CHECK(pthread_create(&server, NULL, serve, NULL) == 0, "pthread_create");
	printf("backend %s; this program serves faults on its own thread\n",
	       backend);

	/* One thread, then two at once. */
	walk((void *)1);
	pthread_t walkers[2];
	for (uintptr_t i = 0; i < 2; i++)
		CHECK(pthread_create(&walkers[i], NULL, walk, (void *)(i + 2)) == 0,
		      "pthread_create");
	for (int i = 0; i < 2; i++)
		CHECK(pthread_join(walkers[i], NULL) == 0, "pthread_join");
	read_holes();

	CHECK(write(stop_pipe[1], "x", 1) == 1, "stopping the server thread");
	CHECK(pthread_join(server, NULL) == 0, "pthread_join");
	long handled = atomic_load(&faults_handled);
	printf("fault messages handled by this program's thread: %ld\n", handled);
	CHECK(handled > 0, "the host's thread served faults (holes of a clone "
	      "were read)");
}

static const struct test_case cases[] = {
	TEST_CASE("host-serves-faults", hosted, .backends = "userfaultfd,userfaultfd-user"),
};

int main(int argc, char **argv)
{
	page = test_page_size();
	size = PAGES * page;
	test_seed_init(argc, argv);
	return test_main(argc, argv, cases, TEST_CASE_COUNT(cases));
}
