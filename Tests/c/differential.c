/*
 * differential.c - a randomized differential test against a memcpy model.
 *
 * Each thread keeps its own set of live regions (at most 12; 1-64 pages,
 * now and then a larger one) and a malloc'd model of each, and applies the
 * same random operations to both: create, clone of a random live region (so
 * clones of clones form deep trees), small and page-crossing writes, memset
 * of whole pages, reads, write(2) of region memory into a pipe, read(2) from
 * a pipe into region memory, pread/read from and pwrite to a temp file,
 * cowmem_copy of one live region into another (sizes equal; or refused with
 * EINVAL and nothing changed when they differ), and destroy of random
 * regions in random order (parents while children live).
 * Every read is compared with the model, every live region is compared in
 * full now and then, and at the end before each of the final destroys.
 * All threads share the library's one fault server.
 *
 * The run prints the backend and features in effect (cowmem_backend(3),
 * cowmem_features(3)); COWMEM_BACKEND and COWMEM_DISABLE choose them, and
 * Tests/c/backends.c runs this program under each. With the
 * "userfaultfd-user" backend every buffer is prefaulted with
 * cowmem_prefault(3) right before its system call, as that backend's
 * contract asks; with any other backend nothing is prefaulted, so the
 * system calls meet unfilled pages and the library must serve them.
 * If a backend forced by COWMEM_BACKEND is not available here (EPERM), the
 * run is skipped (77); if the library refuses to start for another reason
 * (an unknown COWMEM_BACKEND or COWMEM_DISABLE value: EINVAL), it fails.
 *
 * Options (--name=N, or the environment variable):
 *   --seed=N     COWMEM_TEST_SEED     default: from the clock; always printed
 *   --ops=N      COWMEM_TEST_OPS      operations per thread
 *   --threads=N  COWMEM_TEST_THREADS  threads
 *   --trace=1    COWMEM_TEST_TRACE    print every operation to stderr
 * Two cases: one-thread (20000 operations, or --ops) and threads (4
 * threads, or --threads, doing 5000 each, or --ops). Thread t of a pass
 * with T threads draws from its own stream of the seed, so `-f threads
 * --threads=T --ops=N` with the same seed replays that pass operation for
 * operation.
 */
#include "harness.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/stat.h>

#define MAX_LIVE_REGIONS 12
#define MAX_SMALL_PAGES 64
#define MAX_LARGE_PAGES 1024
/* The most bytes moved by one system-call operation; the pipe is made at
 * least this large so a single write never blocks. */
#define MAX_TRANSFER (256 * 1024)
#define TEMP_FILE_SIZE (1024 * 1024)
#define FULL_COMPARE_EVERY 1000

enum operation {
	OP_CREATE,
	OP_CLONE,
	OP_DESTROY,
	OP_WRITE_SMALL,
	OP_WRITE_CROSSING,
	OP_MEMSET_PAGES,
	OP_READ,
	OP_PIPE_OUT,
	OP_PIPE_IN,
	OP_FILE_IN,
	OP_FILE_OUT,
	OP_COMPARE_REGION,
	OP_COPY,
	OP_COUNT
};

static const char *const operation_names[OP_COUNT] = {
	"create", "clone", "destroy", "write-small", "write-crossing",
	"memset-pages", "read", "pipe-out", "pipe-in", "file-in", "file-out",
	"compare-region", "copy",
};

/* Relative frequencies. */
static const unsigned operation_weights[OP_COUNT] = {
	[OP_CREATE] = 5, [OP_CLONE] = 10, [OP_DESTROY] = 9,
	[OP_WRITE_SMALL] = 15, [OP_WRITE_CROSSING] = 14,
	[OP_MEMSET_PAGES] = 6, [OP_READ] = 14, [OP_PIPE_OUT] = 6,
	[OP_PIPE_IN] = 6, [OP_FILE_IN] = 6, [OP_FILE_OUT] = 3,
	[OP_COMPARE_REGION] = 2, [OP_COPY] = 5,
};

struct live_region {
	cowmem_region *region;
	unsigned char *data;  /* cowmem_data(region) */
	unsigned char *model; /* what the region must hold */
	size_t size;
	unsigned id, parent_id, depth;
};

struct statistics {
	unsigned long operations[OP_COUNT];
	unsigned long created, cloned, destroyed;
	unsigned long long bytes_compared, syscall_bytes;
	unsigned max_depth;
};

struct worker {
	unsigned index, thread_count;
	unsigned long operation_count;
	uint64_t seed;
	test_rng rng;
	bool trace;

	struct live_region live[MAX_LIVE_REGIONS];
	unsigned live_count;
	unsigned next_id;
	unsigned long step; /* the operation being run, for messages */
	enum operation current;

	int pipe_read, pipe_write;
	int file;
	unsigned char *file_model; /* what the temp file holds */
	unsigned char *scratch;

	struct statistics stats;
};

static size_t page;
/* The "userfaultfd-user" backend: system calls need prefaulted buffers. */
static bool prefault_for_system_calls;

/* ---- Failure reporting ------------------------------------------------------ */

static void describe_region(const struct worker *w, const struct live_region *r,
			    char *text, size_t capacity)
{
	snprintf(text, capacity, "thread %u step %lu (%s): region #%u (parent #%u, "
		 "depth %u, %zu pages)", w->index, w->step,
		 operation_names[w->current], r->id, r->parent_id, r->depth,
		 r->size / page);
}

/* Compares region bytes [offset, offset+length) with `expected`. */
static void compare(struct worker *w, const struct live_region *r, size_t offset,
		    const unsigned char *actual, const unsigned char *expected,
		    size_t length, const char *what)
{
	if (memcmp(actual, expected, length) != 0) {
		size_t at = 0;
		while (actual[at] == expected[at])
			at++;
		char where[256];
		describe_region(w, r, where, sizeof where);
		flockfile(stderr);
		fprintf(stderr, "MISMATCH (%s) %s, region offset %zu (page %zu + "
			"%zu): expected 0x%02x, actual 0x%02x\n  expected:", what,
			where, offset + at, (offset + at) / page,
			(offset + at) % page, expected[at], actual[at]);
		test_hex_window(stderr, expected, length, at);
		fprintf(stderr, "\n  actual:  ");
		test_hex_window(stderr, actual, length, at);
		fprintf(stderr, "\n");
		funlockfile(stderr);
		FAIL("region #%u differs from its model at offset %zu (seed stream "
		     "of thread %u: %" PRIu64 ")", r->id, offset + at, w->index,
		     w->seed);
	}
	w->stats.bytes_compared += length;
}

static void compare_model(struct worker *w, const struct live_region *r,
			  size_t offset, size_t length, const char *what)
{
	compare(w, r, offset, r->data + offset, r->model + offset, length, what);
}

static void check_syscall(struct worker *w, const struct live_region *r,
			  const char *call, ssize_t result, size_t wanted)
{
	if (result == (ssize_t)wanted)
		return;
	char where[256];
	describe_region(w, r, where, sizeof where);
	if (result < 0)
		FAIL("%s on region memory failed: %s (errno %d)%s; %s", call,
		     strerror(errno), errno,
		     errno == EFAULT ? (prefault_for_system_calls ?
					" - a prefaulted page was not there for "
					"the kernel" : " - an unfilled page was "
					"not served to the kernel") : "", where);
	FAIL("%s moved %zd bytes, expected %zu; %s", call, result, wanted, where);
}

/* Before a system call on region bytes [offset, offset + length): in the
 * "userfaultfd-user" backend fault them in from user mode, for writing when
 * the kernel will write into the region. Other backends serve the kernel's
 * own faults, so nothing is done there. */
static void prefault(struct worker *w, const struct live_region *r, size_t offset,
		     size_t length, bool for_write)
{
	if (!prefault_for_system_calls)
		return;
	if (cowmem_prefault(r->region, offset, length, for_write) != 0) {
		char where[256];
		describe_region(w, r, where, sizeof where);
		FAIL("cowmem_prefault(offset %zu, length %zu, for_write %d): %s; %s",
		     offset, length, for_write, strerror(errno), where);
	}
}

/* ---- Choosing ---------------------------------------------------------------- */

static struct live_region *random_live(struct worker *w)
{
	return &w->live[test_rng_below(&w->rng, w->live_count)];
}

/* A random range inside the region, at most `most` bytes long. */
static void random_range(struct worker *w, const struct live_region *r,
			 size_t most, size_t *offset, size_t *length)
{
	*offset = (size_t)test_rng_below(&w->rng, r->size);
	size_t room = r->size - *offset;
	if (most > room)
		most = room;
	*length = 1 + (size_t)test_rng_below(&w->rng, most);
}

static enum operation choose_operation(struct worker *w)
{
	if (w->live_count == 0)
		return OP_CREATE;
	unsigned total = 0;
	for (int i = 0; i < OP_COUNT; i++)
		total += operation_weights[i];
	unsigned pick = (unsigned)test_rng_below(&w->rng, total);
	enum operation chosen = OP_CREATE;
	for (int i = 0; i < OP_COUNT; i++) {
		if (pick < operation_weights[i]) {
			chosen = (enum operation)i;
			break;
		}
		pick -= operation_weights[i];
	}
	if ((chosen == OP_CREATE || chosen == OP_CLONE) &&
	    w->live_count == MAX_LIVE_REGIONS)
		chosen = OP_DESTROY;
	return chosen;
}

static void trace(struct worker *w, const struct live_region *r, size_t offset,
		  size_t length, const char *extra)
{
	if (!w->trace)
		return;
	fprintf(stderr, "t%u #%lu %s region #%u offset %zu length %zu%s\n", w->index,
		w->step, operation_names[w->current], r ? r->id : 0, offset, length,
		extra ? extra : "");
}

/* ---- Operations -------------------------------------------------------------- */

static struct live_region *add_live(struct worker *w, cowmem_region *region,
				    unsigned parent_id, unsigned depth)
{
	struct live_region *r = &w->live[w->live_count++];
	r->region = region;
	r->data = cowmem_data(region);
	r->size = cowmem_size(region);
	r->id = ++w->next_id;
	r->parent_id = parent_id;
	r->depth = depth;
	r->model = malloc(r->size);
	CHECK(r->data != NULL, "cowmem_data of a live region");
	CHECK((uintptr_t)r->data % page == 0, "data %p page-aligned",
	      (void *)r->data);
	CHECK(r->model != NULL, "malloc %zu", r->size);
	if (depth > w->stats.max_depth)
		w->stats.max_depth = depth;
	return r;
}

static void do_create(struct worker *w)
{
	size_t pages = 1 + (size_t)test_rng_below(&w->rng, MAX_SMALL_PAGES);
	if (test_rng_below(&w->rng, 16) == 0)
		pages = MAX_SMALL_PAGES + (size_t)test_rng_below(
			&w->rng, MAX_LARGE_PAGES - MAX_SMALL_PAGES + 1);
	/* Ask for a size that is not always whole pages. */
	size_t requested = pages * page - (size_t)test_rng_below(&w->rng, page);
	cowmem_region *region = cowmem_create(requested);
	CHECK(region != NULL, "cowmem_create(%zu) on thread %u step %lu: %s",
	      requested, w->index, w->step, strerror(errno));
	CHECK(cowmem_size(region) == pages * page,
	      "create(%zu) has size %zu, expected %zu", requested,
	      cowmem_size(region), pages * page);
	struct live_region *r = add_live(w, region, 0, 0);
	memset(r->model, 0, r->size);
	w->stats.created++;
	trace(w, r, 0, r->size, NULL);
}

static void do_clone(struct worker *w)
{
	/* Favour the deepest region now and then, so trees grow deep. */
	struct live_region *source = random_live(w);
	if (test_rng_below(&w->rng, 3) == 0)
		for (unsigned i = 0; i < w->live_count; i++)
			if (w->live[i].depth > source->depth)
				source = &w->live[i];
	unsigned source_index = (unsigned)(source - w->live);
	cowmem_region *region = cowmem_clone(source->region);
	CHECK(region != NULL, "cowmem_clone of region #%u on thread %u step %lu: %s",
	      source->id, w->index, w->step, strerror(errno));
	source = &w->live[source_index];
	CHECK(cowmem_size(region) == source->size, "clone size %zu, source %zu",
	      cowmem_size(region), source->size);
	struct live_region *r = add_live(w, region, source->id, source->depth + 1);
	memcpy(r->model, source->model, r->size);
	w->stats.cloned++;
	char extra[64];
	snprintf(extra, sizeof extra, " (clone of #%u)", source->id);
	trace(w, r, 0, r->size, extra);
}

static void do_destroy(struct worker *w)
{
	struct live_region *r = random_live(w);
	trace(w, r, 0, r->size, NULL);
	CHECK(cowmem_destroy(r->region) == 0, "cowmem_destroy of region #%u: %s",
	      r->id, strerror(errno));
	free(r->model);
	*r = w->live[--w->live_count];
	w->stats.destroyed++;
}

/* cowmem_copy into a random region from another: mostly one of the same
 * size (a relative, so the pages can be shared), now and then any, which
 * must be refused with EINVAL, changing nothing, when the sizes differ. */
static void do_copy(struct worker *w)
{
	struct live_region *dst = random_live(w), *src = random_live(w);
	if (test_rng_below(&w->rng, 4) != 0)
		for (unsigned i = 0, start = (unsigned)test_rng_below(&w->rng, w->live_count);
		     i < w->live_count; i++) {
			struct live_region *other = &w->live[(start + i) % w->live_count];
			if (other != dst && other->size == dst->size) {
				src = other;
				break;
			}
		}
	char extra[64];
	snprintf(extra, sizeof extra, " (from #%u)", src->id);
	trace(w, dst, 0, dst->size, extra);
	int rc = cowmem_copy(dst->region, src->region);
	if (dst->size != src->size) {
		CHECK(rc == -1 && errno == EINVAL,
		      "cowmem_copy of #%u (%zu bytes) into #%u (%zu bytes): %d, %s", src->id,
		      src->size, dst->id, dst->size, rc, strerror(errno));
		return;
	}
	CHECK(rc == 0, "cowmem_copy of #%u into #%u: %s", src->id, dst->id, strerror(errno));
	memcpy(dst->model, src->model, dst->size);
}

/* Random bytes, written with plain memcpy into the region and the model. */
static void write_random(struct worker *w, struct live_region *r, size_t offset,
			 size_t length)
{
	test_rng_fill(&w->rng, w->scratch, length);
	trace(w, r, offset, length, NULL);
	memcpy(r->data + offset, w->scratch, length);
	memcpy(r->model + offset, w->scratch, length);
}

static void do_write_small(struct worker *w)
{
	struct live_region *r = random_live(w);
	size_t offset, length;
	random_range(w, r, 16, &offset, &length);
	write_random(w, r, offset, length);
}

/* A memcpy that starts before a page boundary and ends after it. */
static void do_write_crossing(struct worker *w)
{
	struct live_region *r = random_live(w);
	size_t pages = r->size / page;
	if (pages < 2) {
		do_write_small(w);
		return;
	}
	size_t boundary = page * (1 + (size_t)test_rng_below(&w->rng, pages - 1));
	size_t back = 1 + (size_t)test_rng_below(&w->rng, 2 * page);
	if (back > boundary)
		back = boundary;
	size_t offset = boundary - back;
	size_t forward = 1 + (size_t)test_rng_below(&w->rng, 2 * page);
	if (forward > r->size - boundary)
		forward = r->size - boundary;
	write_random(w, r, offset, back + forward);
}

static void do_memset_pages(struct worker *w)
{
	struct live_region *r = random_live(w);
	size_t pages = r->size / page;
	size_t first = (size_t)test_rng_below(&w->rng, pages);
	size_t count = 1 + (size_t)test_rng_below(&w->rng, 4);
	if (count > pages - first)
		count = pages - first;
	int value = (int)test_rng_below(&w->rng, 256);
	trace(w, r, first * page, count * page, NULL);
	memset(r->data + first * page, value, count * page);
	memset(r->model + first * page, value, count * page);
}

static void do_read(struct worker *w)
{
	struct live_region *r = random_live(w);
	size_t offset, length;
	random_range(w, r, 4 * page, &offset, &length);
	trace(w, r, offset, length, NULL);
	compare_model(w, r, offset, length, "read");
}

/* A random region, a range of it for a system call, and a place in the
 * temp file of the same length. */
struct transfer {
	struct live_region *region;
	size_t offset, length, file_offset;
};

static struct transfer choose_transfer(struct worker *w)
{
	struct transfer t;
	t.region = random_live(w);
	random_range(w, t.region, MAX_TRANSFER, &t.offset, &t.length);
	t.file_offset = (size_t)test_rng_below(&w->rng,
					       TEMP_FILE_SIZE - t.length + 1);
	trace(w, t.region, t.offset, t.length, NULL);
	return t;
}

/* Reads exactly `length` bytes from the pipe into `buffer` (plain memory). */
static void drain_pipe(struct worker *w, unsigned char *buffer, size_t length)
{
	size_t done = 0;
	while (done < length) {
		ssize_t n = read(w->pipe_read, buffer + done, length - done);
		CHECK(n > 0, "read from pipe into plain memory: %zd, %s", n,
		      strerror(errno));
		done += (size_t)n;
	}
}

/* write(2) from region memory into the pipe; what comes out must be the
 * model's bytes. */
static void do_pipe_out(struct worker *w)
{
	struct transfer t = choose_transfer(w);
	struct live_region *r = t.region;
	prefault(w, r, t.offset, t.length, false);
	ssize_t n = write(w->pipe_write, r->data + t.offset, t.length);
	check_syscall(w, r, "write(2) to a pipe", n, t.length);
	drain_pipe(w, w->scratch, t.length);
	compare(w, r, t.offset, w->scratch, r->model + t.offset, t.length,
		"bytes that write(2) took from the region");
	w->stats.syscall_bytes += t.length;
}

/* read(2) from the pipe into region memory. */
static void do_pipe_in(struct worker *w)
{
	struct transfer t = choose_transfer(w);
	struct live_region *r = t.region;
	test_rng_fill(&w->rng, w->scratch, t.length);
	ssize_t n = write(w->pipe_write, w->scratch, t.length);
	CHECK(n == (ssize_t)t.length, "write to pipe from plain memory: %zd, %s",
	      n, strerror(errno));
	prefault(w, r, t.offset, t.length, true);
	n = read(w->pipe_read, r->data + t.offset, t.length);
	check_syscall(w, r, "read(2) from a pipe into the region", n, t.length);
	memcpy(r->model + t.offset, w->scratch, t.length);
	compare_model(w, r, t.offset, t.length, "after read(2) from a pipe");
	w->stats.syscall_bytes += t.length;
}

/* pread(2), or lseek + read(2), from the temp file into region memory. */
static void do_file_in(struct worker *w)
{
	struct transfer t = choose_transfer(w);
	struct live_region *r = t.region;
	ssize_t n;
	prefault(w, r, t.offset, t.length, true);
	if (test_rng_below(&w->rng, 2)) {
		n = pread(w->file, r->data + t.offset, t.length,
			  (off_t)t.file_offset);
		check_syscall(w, r, "pread(2) into the region", n, t.length);
	} else {
		CHECK(lseek(w->file, (off_t)t.file_offset, SEEK_SET) ==
		      (off_t)t.file_offset, "lseek: %s", strerror(errno));
		n = read(w->file, r->data + t.offset, t.length);
		check_syscall(w, r, "read(2) from a file into the region", n,
			      t.length);
	}
	memcpy(r->model + t.offset, w->file_model + t.file_offset, t.length);
	compare_model(w, r, t.offset, t.length, "after reading a file into it");
	w->stats.syscall_bytes += t.length;
}

/* pwrite(2) from region memory into the temp file, then read it back into
 * plain memory. */
static void do_file_out(struct worker *w)
{
	struct transfer t = choose_transfer(w);
	struct live_region *r = t.region;
	prefault(w, r, t.offset, t.length, false);
	ssize_t n = pwrite(w->file, r->data + t.offset, t.length,
			   (off_t)t.file_offset);
	check_syscall(w, r, "pwrite(2) from the region", n, t.length);
	memcpy(w->file_model + t.file_offset, r->model + t.offset, t.length);
	n = pread(w->file, w->scratch, t.length, (off_t)t.file_offset);
	CHECK(n == (ssize_t)t.length, "pread into plain memory: %zd, %s", n,
	      strerror(errno));
	compare(w, r, t.offset, w->scratch, r->model + t.offset, t.length,
		"bytes that pwrite(2) took from the region");
	w->stats.syscall_bytes += t.length;
}

static void compare_all(struct worker *w, const char *what)
{
	for (unsigned i = 0; i < w->live_count; i++)
		compare_model(w, &w->live[i], 0, w->live[i].size, what);
}

/* ---- A worker's life ------------------------------------------------------------ */

static void worker_setup(struct worker *w)
{
	w->rng.state = w->seed;
	w->scratch = malloc(MAX_TRANSFER);
	w->file_model = malloc(TEMP_FILE_SIZE);
	CHECK(w->scratch && w->file_model, "malloc");

	int fds[2];
	CHECK(pipe(fds) == 0, "pipe: %s", strerror(errno));
	w->pipe_read = fds[0];
	w->pipe_write = fds[1];
	/* One transfer must fit in the pipe, or write(2) would block. */
	int capacity = fcntl(w->pipe_write, F_SETPIPE_SZ, 2 * MAX_TRANSFER);
	CHECK(capacity >= MAX_TRANSFER, "F_SETPIPE_SZ %d: %s", capacity,
	      strerror(errno));

	const char *directory = getenv("TMPDIR");
	if (!directory || !*directory)
		directory = "/tmp";
	char path[4096];
	snprintf(path, sizeof path, "%s/cowmem-differential-XXXXXX", directory);
	w->file = mkstemp(path);
	CHECK(w->file >= 0, "mkstemp(%s): %s", path, strerror(errno));
	unlink(path);
	test_rng file_rng = { test_substream(w->seed, 0xf11e) };
	test_rng_fill(&file_rng, w->file_model, TEMP_FILE_SIZE);
	CHECK(pwrite(w->file, w->file_model, TEMP_FILE_SIZE, 0) == TEMP_FILE_SIZE,
	      "filling the temp file: %s", strerror(errno));
}

static void worker_teardown(struct worker *w)
{
	/* Compare everything, then destroy in random order, comparing the
	 * survivors after each destroy. */
	w->current = OP_COMPARE_REGION;
	compare_all(w, "final compare");
	while (w->live_count) {
		w->current = OP_DESTROY;
		do_destroy(w);
		w->current = OP_COMPARE_REGION;
		compare_all(w, "survivors of the final destroys");
	}
	close(w->pipe_read);
	close(w->pipe_write);
	close(w->file);
	free(w->scratch);
	free(w->file_model);
}

static void *worker_run(void *argument)
{
	struct worker *w = argument;
	worker_setup(w);
	for (w->step = 1; w->step <= w->operation_count; w->step++) {
		w->current = choose_operation(w);
		w->stats.operations[w->current]++;
		switch (w->current) {
		case OP_CREATE: do_create(w); break;
		case OP_CLONE: do_clone(w); break;
		case OP_COPY: do_copy(w); break;
		case OP_DESTROY: do_destroy(w); break;
		case OP_WRITE_SMALL: do_write_small(w); break;
		case OP_WRITE_CROSSING: do_write_crossing(w); break;
		case OP_MEMSET_PAGES: do_memset_pages(w); break;
		case OP_READ: do_read(w); break;
		case OP_PIPE_OUT: do_pipe_out(w); break;
		case OP_PIPE_IN: do_pipe_in(w); break;
		case OP_FILE_IN: do_file_in(w); break;
		case OP_FILE_OUT: do_file_out(w); break;
		case OP_COMPARE_REGION: {
			struct live_region *r = random_live(w);
			trace(w, r, 0, r->size, NULL);
			compare_model(w, r, 0, r->size, "compare of one region");
			break;
		}
		case OP_COUNT: break;
		}
		if (w->step % FULL_COMPARE_EVERY == 0) {
			enum operation held = w->current;
			w->current = OP_COMPARE_REGION;
			compare_all(w, "periodic full compare");
			w->current = held;
		}
	}
	worker_teardown(w);
	return NULL;
}

static void run_pass(uint64_t seed, unsigned thread_count,
		     unsigned long operations_per_thread, bool trace_on)
{
	struct worker *workers = calloc(thread_count, sizeof *workers);
	pthread_t *threads = calloc(thread_count, sizeof *threads);
	CHECK(workers && threads, "calloc");

	snprintf(test_replay_hint, sizeof test_replay_hint,
		 "--threads=%u --ops=%lu", thread_count,
		 operations_per_thread);
	printf("pass: %u thread%s x %lu operations\n", thread_count,
	       thread_count == 1 ? "" : "s", operations_per_thread);
	fflush(stdout);

	for (unsigned i = 0; i < thread_count; i++) {
		workers[i].index = i;
		workers[i].thread_count = thread_count;
		workers[i].operation_count = operations_per_thread;
		workers[i].seed = test_substream(seed, (uint64_t)thread_count << 32 | i);
		workers[i].trace = trace_on;
	}
	if (thread_count == 1) {
		worker_run(&workers[0]);
	} else {
		for (unsigned i = 0; i < thread_count; i++)
			CHECK(pthread_create(&threads[i], NULL, worker_run,
					     &workers[i]) == 0, "pthread_create");
		for (unsigned i = 0; i < thread_count; i++)
			CHECK(pthread_join(threads[i], NULL) == 0, "pthread_join");
	}

	struct statistics total = { 0 };
	for (unsigned i = 0; i < thread_count; i++) {
		struct statistics *s = &workers[i].stats;
		for (int k = 0; k < OP_COUNT; k++)
			total.operations[k] += s->operations[k];
		total.created += s->created;
		total.cloned += s->cloned;
		total.destroyed += s->destroyed;
		total.bytes_compared += s->bytes_compared;
		total.syscall_bytes += s->syscall_bytes;
		if (s->max_depth > total.max_depth)
			total.max_depth = s->max_depth;
	}
	unsigned long all = 0;
	for (int k = 0; k < OP_COUNT; k++)
		all += total.operations[k];
	printf("  operations %lu, threads %u\n", all, thread_count);
	printf("  regions created %lu, cloned %lu, destroyed %lu, deepest clone "
	       "chain %u\n", total.created, total.cloned, total.destroyed,
	       total.max_depth);
	printf("  bytes compared %llu, bytes through system calls %llu, "
	       "mismatches 0\n", total.bytes_compared, total.syscall_bytes);
	printf("  by operation:");
	for (int k = 0; k < OP_COUNT; k++)
		printf(" %s %lu", operation_names[k], total.operations[k]);
	printf("\n");
	fflush(stdout);

	CHECK(total.created + total.cloned == total.destroyed,
	      "every region was destroyed (%lu created, %lu cloned, %lu destroyed)",
	      total.created, total.cloned, total.destroyed);
	CHECK(total.bytes_compared > 0 && total.cloned > 0,
	      "the pass compared bytes and cloned regions");
	free(workers);
	free(threads);
}

static uint64_t operations, threads, trace_on;
static bool have_operations, have_threads;

/* Prints the backend line, or skips where a forced backend is not
 * available here. */
static void start(void)
{
	cowmem_destroy(test_create_or_skip(page));
	prefault_for_system_calls = test_syscalls_need_prefault();
}

static void one_thread(void)
{
	start();
	run_pass(test_seed, 1, have_operations ? (unsigned long)operations : 20000, trace_on);
}

static void several_threads(void)
{
	start();
	unsigned count = have_threads ? (unsigned)threads : 4;
	CHECK(count >= 1 && count <= 256, "--threads between 1 and 256");
	run_pass(test_seed, count, have_operations ? (unsigned long)operations : 5000, trace_on);
}

static const struct test_case cases[] = {
	TEST_CASE("one-thread", one_thread),
	TEST_CASE("threads", several_threads),
};

int main(int argc, char **argv)
{
	page = test_page_size();
	test_seed_init(argc, argv);
	have_operations = test_option(argc, argv, "ops", "COWMEM_TEST_OPS", &operations);
	have_threads = test_option(argc, argv, "threads", "COWMEM_TEST_THREADS", &threads);
	test_option(argc, argv, "trace", "COWMEM_TEST_TRACE", &trace_on);
	return test_main(argc, argv, cases, TEST_CASE_COUNT(cases));
}
