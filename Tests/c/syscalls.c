/*
 * syscalls.c - region memory as the buffer of system calls, on pages that
 * are not filled yet.
 *
 * When the kernel itself touches an unfilled page of a clone (copying to or
 * from user memory inside read, write, send, ...), the library must serve it
 * like any other fault: the call moves the right bytes and never fails with
 * EFAULT or comes back short.
 *
 * Every case runs on a fresh buffer region of each kind, so its pages are
 * unfilled when the call touches them:
 *   - a fresh clone of a populated source,
 *   - a clone of a clone whose parent wrote some pages first,
 *   - a clone whose source was written after the clone (old bytes expected),
 *   - a fresh region (never written: zeros).
 * The ranges cross page boundaries and include a page nobody ever wrote.
 * Calls: write(2) to a pipe, read(2) from a pipe, pread(2) and pwrite(2)
 * on a file, send(2) and recv(2) on a socketpair, writev(2)/readv(2) with
 * vectors in two regions, and process_vm_readv/writev(2) on this process.
 * After each call the bytes moved and the whole region are compared with
 * plain memory.
 *
 * The backend in use is printed. With "userfaultfd-user" the kernel cannot
 * wait for the library inside a system call, and the contract is different
 * (cowmem_prefault(3)): each buffer is prefaulted right before its call,
 * and a first case checks that a call on an unfilled page, not prefaulted,
 * fails instead of moving wrong bytes. With every other backend nothing is
 * prefaulted and every call must be served. One case forces that backend
 * (where it can be had): a prefault right after a clone of the buffer's
 * family lasts until the call, though the clone's copies finish after it
 * returned.
 */
#include "harness.h"

#include <fcntl.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

#define PAGES 16
#define NEVER_WRITTEN_PAGE 7

static size_t page, size;
static uint64_t seed;
static cowmem_region *source;
static unsigned char *source_model;
static unsigned long calls_checked;
/* The "userfaultfd-user" backend: buffers are prefaulted before each call. */
static bool user_mode_backend;

/* ---- Buffers --------------------------------------------------------------------- */

enum kind { FRESH_CLONE, CLONE_OF_CLONE, CLONE_THEN_SOURCE_WRITES, FRESH_REGION,
	    KIND_COUNT };

static const char *const kind_names[KIND_COUNT] = {
	"a fresh clone",
	"a clone of a clone",
	"a clone whose source was written after it",
	"a fresh region",
};

struct buffer {
	enum kind kind;
	cowmem_region *region;
	cowmem_region *helper; /* the middle region of a clone of a clone */
	unsigned char *data;
	unsigned char model[PAGES * 65536];
};

static void make_buffer(struct buffer *b, enum kind kind, test_rng *rng)
{
	b->kind = kind;
	b->helper = NULL;
	switch (kind) {
	case FRESH_CLONE:
		b->region = cowmem_clone(source);
		memcpy(b->model, source_model, size);
		break;
	case CLONE_OF_CLONE: {
		b->helper = cowmem_clone(source);
		CHECK(b->helper != NULL, "cowmem_clone: %s", strerror(errno));
		memcpy(b->model, source_model, size);
		/* The middle region changes every other page (and half of the
		 * never-written one) before it is cloned. */
		unsigned char *middle = cowmem_data(b->helper);
		for (size_t p = 0; p < PAGES; p += 2) {
			test_rng_fill(rng, b->model + p * page, page);
			memcpy(middle + p * page, b->model + p * page, page);
		}
		test_rng_fill(rng, b->model + NEVER_WRITTEN_PAGE * page, page / 2);
		memcpy(middle + NEVER_WRITTEN_PAGE * page,
		       b->model + NEVER_WRITTEN_PAGE * page, page / 2);
		b->region = cowmem_clone(b->helper);
		break;
	}
	case CLONE_THEN_SOURCE_WRITES: {
		b->region = cowmem_clone(source);
		memcpy(b->model, source_model, size);
		/* The source changes under the clone; the clone keeps the old
		 * bytes. The source's model changes with it. */
		unsigned char *source_data = cowmem_data(source);
		for (size_t p = 1; p < PAGES; p += 3) {
			test_rng_fill(rng, source_model + p * page, page);
			memcpy(source_data + p * page, source_model + p * page, page);
		}
		break;
	}
	case FRESH_REGION:
		b->region = cowmem_create(size);
		memset(b->model, 0, size);
		break;
	case KIND_COUNT:
		break;
	}
	CHECK(b->region != NULL, "making %s: %s", kind_names[kind], strerror(errno));
	b->data = cowmem_data(b->region);
}

static void check_buffer(const struct buffer *b, const char *call)
{
	char what[160];
	snprintf(what, sizeof what, "%s after %s", kind_names[b->kind], call);
	if (memcmp(b->data, b->model, size) != 0)
		CHECK_BYTES(b->data, b->model, size, what);
	if (memcmp(cowmem_data(source), source_model, size) != 0) {
		snprintf(what, sizeof what, "the source after %s on %s", call,
			 kind_names[b->kind]);
		CHECK_BYTES(cowmem_data(source), source_model, size, what);
	}
}

static void free_buffer(struct buffer *b)
{
	CHECK(cowmem_destroy(b->region) == 0, "destroy: %s", strerror(errno));
	if (b->helper)
		CHECK(cowmem_destroy(b->helper) == 0, "destroy: %s", strerror(errno));
}

/* ---- System calls on region memory ---------------------------------------------- */

/* Right before a call that makes the kernel touch [offset, offset + length)
 * of the buffer: only the "userfaultfd-user" backend needs it, and there it
 * is the documented contract. for_write: the kernel writes into the region. */
static void prefault(const struct buffer *b, size_t offset, size_t length,
		     bool for_write)
{
	if (!user_mode_backend)
		return;
	CHECK(cowmem_prefault(b->region, offset, length, for_write) == 0,
	      "cowmem_prefault(%zu, %zu, %d) on %s: %s", offset, length,
	      for_write, kind_names[b->kind], strerror(errno));
}

/* A system call on region memory moved `result` bytes of `wanted`. */
static void check_moved(const struct buffer *b, const char *call, ssize_t result,
			size_t wanted)
{
	if (result == (ssize_t)wanted) {
		calls_checked++;
		return;
	}
	int error = result < 0 ? errno : 0;
	const char *why = user_mode_backend ?
		" (the buffer was prefaulted: a page was not there for the kernel)" :
		" (an unfilled page was not served to the kernel)";
	if (result < 0)
		FAIL("%s on %s failed: %s%s", call, kind_names[b->kind],
		     strerror(error), error == EFAULT ? why : "");
	FAIL("%s on %s moved %zd of %zu bytes%s", call, kind_names[b->kind],
	     result, wanted, why);
}

/* ---- The calls ------------------------------------------------------------------- */

/* The ranges: one across populated pages, one across the never-written
 * page, one long run over most of the region. */
struct range {
	size_t offset, length;
};

static struct range ranges[3];

static void set_ranges(void)
{
	ranges[0] = (struct range){ 2 * page - 100, 2 * page + 200 };
	ranges[1] = (struct range){ (NEVER_WRITTEN_PAGE - 1) * page + 1, 2 * page + 7 };
	ranges[2] = (struct range){ page / 2, 12 * page };
}

static unsigned char plain[PAGES * 65536];

static void drain(int fd, unsigned char *into, size_t length)
{
	size_t done = 0;
	while (done < length) {
		ssize_t n = read(fd, into + done, length - done);
		CHECK(n > 0, "read into plain memory: %s", strerror(errno));
		done += (size_t)n;
	}
}

/* A pipe or a socketpair; what goes in one end comes out of the other. */
enum channel { PIPE, SOCKETPAIR };

static void open_channel(enum channel channel, int fds[2])
{
	if (channel == PIPE)
		CHECK(pipe(fds) == 0, "pipe: %s", strerror(errno));
	else
		CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0,
		      "socketpair: %s", strerror(errno));
}

/* write(2) on a pipe, send(2) on a socket. */
static ssize_t put(enum channel channel, int fd, const void *from, size_t length)
{
	return channel == PIPE ? write(fd, from, length) : send(fd, from, length, 0);
}

/* read(2) on a pipe, recv(2) on a socket (waiting for all of it). */
static ssize_t get(enum channel channel, int fd, void *into, size_t length)
{
	return channel == PIPE ? read(fd, into, length) :
				 recv(fd, into, length, MSG_WAITALL);
}

/* Region memory into the channel; plain memory out of it. */
static void region_out(struct buffer *b, struct range r, enum channel channel,
		       const char *call)
{
	int fds[2];
	open_channel(channel, fds);
	prefault(b, r.offset, r.length, false);
	check_moved(b, call, put(channel, fds[1], b->data + r.offset, r.length),
		    r.length);
	drain(fds[0], plain, r.length);
	CHECK_BYTES(plain, b->model + r.offset, r.length,
		    "bytes the call took from the region");
	close(fds[0]);
	close(fds[1]);
	check_buffer(b, call);
}

/* Plain memory into the channel; region memory out of it. */
static void region_in(struct buffer *b, struct range r, test_rng *rng,
		      enum channel channel, const char *call)
{
	int fds[2];
	open_channel(channel, fds);
	test_rng_fill(rng, plain, r.length);
	CHECK(put(channel, fds[1], plain, r.length) == (ssize_t)r.length,
	      "sending from plain memory: %s", strerror(errno));
	prefault(b, r.offset, r.length, true);
	check_moved(b, call, get(channel, fds[0], b->data + r.offset, r.length),
		    r.length);
	memcpy(b->model + r.offset, plain, r.length);
	close(fds[0]);
	close(fds[1]);
	check_buffer(b, call);
}

static void case_pipe_write(struct buffer *b, struct range r, test_rng *rng)
{
	(void)rng;
	region_out(b, r, PIPE, "write(2) to a pipe");
}

static void case_pipe_read(struct buffer *b, struct range r, test_rng *rng)
{
	region_in(b, r, rng, PIPE, "read(2) from a pipe");
}

static void case_send(struct buffer *b, struct range r, test_rng *rng)
{
	(void)rng;
	region_out(b, r, SOCKETPAIR, "send(2) on a socketpair");
}

static void case_recv(struct buffer *b, struct range r, test_rng *rng)
{
	region_in(b, r, rng, SOCKETPAIR, "recv(2) on a socketpair");
}

static int temp_file(void)
{
	const char *directory = getenv("TMPDIR");
	if (!directory || !*directory)
		directory = "/tmp";
	char path[4096];
	snprintf(path, sizeof path, "%s/cowmem-syscalls-XXXXXX", directory);
	int fd = mkstemp(path);
	CHECK(fd >= 0, "mkstemp(%s): %s", path, strerror(errno));
	unlink(path);
	return fd;
}

static void case_pread(struct buffer *b, struct range r, test_rng *rng)
{
	int fd = temp_file();
	test_rng_fill(rng, plain, r.length + 333);
	CHECK(pwrite(fd, plain, r.length + 333, 0) == (ssize_t)(r.length + 333),
	      "filling the file");
	prefault(b, r.offset, r.length, true);
	ssize_t n = pread(fd, b->data + r.offset, r.length, 333);
	check_moved(b, "pread(2) from a file", n, r.length);
	memcpy(b->model + r.offset, plain + 333, r.length);
	close(fd);
	check_buffer(b, "pread(2) from a file");
}

static void case_pwrite(struct buffer *b, struct range r, test_rng *rng)
{
	(void)rng;
	int fd = temp_file();
	prefault(b, r.offset, r.length, false);
	ssize_t n = pwrite(fd, b->data + r.offset, r.length, 4096 + 17);
	check_moved(b, "pwrite(2) to a file", n, r.length);
	CHECK(pread(fd, plain, r.length, 4096 + 17) == (ssize_t)r.length,
	      "reading the file back");
	CHECK_BYTES(plain, b->model + r.offset, r.length,
		    "bytes pwrite(2) took from the region");
	close(fd);
	check_buffer(b, "pwrite(2) to a file");
}

/* Vectors alternating between the buffer and a second fresh clone. */
static void case_vectors(struct buffer *b, struct range r, test_rng *rng)
{
	struct buffer *other = malloc(sizeof *other);
	CHECK(other != NULL, "malloc");
	make_buffer(other, FRESH_CLONE, rng);
	struct iovec vectors[4];
	size_t half = r.length / 2;
	vectors[0] = (struct iovec){ b->data + r.offset, half };
	vectors[1] = (struct iovec){ other->data + r.offset, half };
	vectors[2] = (struct iovec){ b->data + r.offset + half, r.length - half };
	vectors[3] = (struct iovec){ other->data + r.offset + half, r.length - half };
	size_t total = 2 * r.length;

	/* writev from both regions into a pipe. */
	int fds[2];
	CHECK(pipe(fds) == 0, "pipe");
	CHECK(fcntl(fds[1], F_SETPIPE_SZ, 1 << 20) >= (int)total, "F_SETPIPE_SZ");
	prefault(b, r.offset, r.length, false);
	prefault(other, r.offset, r.length, false);
	ssize_t n = writev(fds[1], vectors, 4);
	check_moved(b, "writev(2) from two regions", n, total);
	drain(fds[0], plain, total);
	CHECK_BYTES(plain, b->model + r.offset, half, "writev: first vector");
	CHECK_BYTES(plain + half, other->model + r.offset, half,
		    "writev: second vector");
	CHECK_BYTES(plain + 2 * half, b->model + r.offset + half, r.length - half,
		    "writev: third vector");
	CHECK_BYTES(plain + r.length + half, other->model + r.offset + half,
		    r.length - half, "writev: fourth vector");

	/* readv from the pipe into both regions. */
	test_rng_fill(rng, plain, total);
	CHECK(write(fds[1], plain, total) == (ssize_t)total, "pipe write");
	prefault(b, r.offset, r.length, true);
	prefault(other, r.offset, r.length, true);
	n = readv(fds[0], vectors, 4);
	check_moved(b, "readv(2) into two regions", n, total);
	memcpy(b->model + r.offset, plain, half);
	memcpy(other->model + r.offset, plain + half, half);
	memcpy(b->model + r.offset + half, plain + 2 * half, r.length - half);
	memcpy(other->model + r.offset + half, plain + r.length + half,
	       r.length - half);
	close(fds[0]);
	close(fds[1]);
	check_buffer(b, "readv(2)");
	check_buffer(other, "readv(2), the second region");
	free_buffer(other);
	free(other);
}

/* The kernel reaching region memory through another process's view of it
 * (here: this process), as debuggers and checkpointing tools do. */
static void case_process_vm(struct buffer *b, struct range r, test_rng *rng)
{
	struct iovec local = { plain, r.length };
	struct iovec remote = { b->data + r.offset, r.length };
	prefault(b, r.offset, r.length, false);
	ssize_t n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
	if (n < 0 && (errno == ENOSYS || errno == EPERM)) {
		printf("      (process_vm_readv unavailable: %s)\n", strerror(errno));
		return;
	}
	check_moved(b, "process_vm_readv(2) from the region", n, r.length);
	CHECK_BYTES(plain, b->model + r.offset, r.length,
		    "bytes process_vm_readv took from the region");
	check_buffer(b, "process_vm_readv(2)");

	/* Fresh unfilled pages for the write direction. */
	free_buffer(b);
	make_buffer(b, b->kind, rng);
	remote.iov_base = b->data + r.offset;
	test_rng_fill(rng, plain, r.length);
	prefault(b, r.offset, r.length, true);
	n = process_vm_writev(getpid(), &local, 1, &remote, 1, 0);
	check_moved(b, "process_vm_writev(2) into the region", n, r.length);
	memcpy(b->model + r.offset, plain, r.length);
	check_buffer(b, "process_vm_writev(2)");
}

/* One call on a page the library has not filled and nobody prefaulted. */
static void check_one_unprefaulted(const char *call, ssize_t result, size_t wanted)
{
	CHECK(result < (ssize_t)wanted && (result >= 0 || errno == EFAULT),
	      "%s on an unfilled page, not prefaulted, in the userfaultfd-user "
	      "backend: expected EFAULT or a short count, got %zd (%s)", call,
	      result, result < 0 ? strerror(errno) : "no error");
	printf("%s on an unfilled page, not prefaulted: %s\n", call,
	       result < 0 ? strerror(errno) : "short count");
}

/*
 * "userfaultfd-user" only: a clone of a never-written region is all holes,
 * which the library fills on a fault. A system call that meets one, not
 * prefaulted, must fail (EFAULT, or a short count) and change no byte: the
 * documented behaviour that cowmem_prefault() exists for.
 */
static void check_unprefaulted_calls_fail(void)
{
	test_rng rng = { test_substream(seed, 0xefa17) };
	cowmem_region *empty = cowmem_create(size);
	CHECK(empty != NULL, "cowmem_create: %s", strerror(errno));
	cowmem_region *holes = cowmem_clone(empty);
	CHECK(holes != NULL, "cowmem_clone: %s", strerror(errno));
	unsigned char *data = cowmem_data(holes);
	static unsigned char zeros[PAGES * 65536];
	int fds[2];

	CHECK(pipe(fds) == 0, "pipe: %s", strerror(errno));
	check_one_unprefaulted("write(2)", write(fds[1], data, page), page);
	test_rng_fill(&rng, plain, page);
	CHECK(write(fds[1], plain, page) == (ssize_t)page, "pipe write: %s",
	      strerror(errno));
	ssize_t n = read(fds[0], data + 2 * page, page);
	check_one_unprefaulted("read(2)", n, page);
	/* Whatever the call stored before it stopped is content now. */
	if (n > 0)
		memcpy(zeros + 2 * page, plain, (size_t)n);
	CHECK_BYTES(data, zeros, size, "a clone of an empty region after "
		    "system calls that met its holes");
	close(fds[0]);
	close(fds[1]);
	CHECK(cowmem_destroy(holes) == 0 && cowmem_destroy(empty) == 0,
	      "destroy: %s", strerror(errno));
	fflush(stdout);
}

/* The source: PAGES pages of random bytes but one, never written. */
static void make_source(void)
{
	source = test_create_or_skip(size); /* prints the backend */
	user_mode_backend = test_syscalls_need_prefault();
	source_model = calloc(1, size);
	CHECK(source_model != NULL, "calloc");
	test_rng rng = { seed };
	/* Page by page, so that the never-written page stays a hole in the
	 * source's storage: a memcpy of its zeros would allocate it. */
	for (size_t p = 0; p < PAGES; p++) {
		if (p == NEVER_WRITTEN_PAGE)
			continue;
		test_rng_fill(&rng, source_model + p * page, page);
		memcpy((unsigned char *)cowmem_data(source) + p * page, source_model + p * page,
		       page);
	}
}

typedef void (*case_body)(struct buffer *b, struct range r, test_rng *rng);

/* The call of `body` on every kind of buffer and every range. */
static void run_calls(case_body body)
{
	static struct buffer b;
	make_source();
	for (int kind = 0; kind < KIND_COUNT; kind++) {
		for (int range = 0; range < 3; range++) {
			test_rng rng = { test_substream(seed, calls_checked) };
			make_buffer(&b, (enum kind)kind, &rng);
			body(&b, ranges[range], &rng);
			free_buffer(&b);
		}
	}
	CHECK(cowmem_destroy(source) == 0, "destroy: %s", strerror(errno));
	free(source_model);
	printf("%lu calls on region memory moved the right bytes\n", calls_checked);
}

static void unprefaulted(void)
{
	make_source();
	check_unprefaulted_calls_fail();
}

/* A clone whose fold finishes after it returns (the folder's thread) takes
 * the pages it changes out of every region of the family that maps them:
 * here B's mapping of page 3, which C replaces. A prefault of B right after
 * that clone must wait for the fold, or the fold's punch lands after the
 * prefault and before the system call, which then meets an unmapped page
 * (on userfaultfd-user: EFAULT, a short transfer). The pause between the
 * prefault and the call, which the contract allows, gives the fold every
 * chance to land there. */
static void prefault_after_family_clone(void)
{
	const size_t changed = 3, rounds = 50;
	unsigned char *expected = malloc(size), *got = malloc(page);
	CHECK(expected && got, "malloc");
	int fds[2];
	CHECK(pipe(fds) == 0, "pipe: %s", strerror(errno));
	for (size_t round = 0; round < rounds; round++) {
		cowmem_region *a = test_create_or_skip(size);
		memset(cowmem_data(a), (int)(0x40 + round), size);
		memset(expected, (int)(0x40 + round), size);
		cowmem_region *b = cowmem_clone(a);
		CHECK(b != NULL, "cowmem_clone: %s", strerror(errno));
		cowmem_region *c = cowmem_clone(b); /* b takes over as head */
		CHECK(c != NULL, "cowmem_clone: %s", strerror(errno));
		unsigned char *bd = cowmem_data(b), *cd = cowmem_data(c);
		CHECK(cowmem_prefault(b, 0, size, 0) == 0, "cowmem_prefault: %s",
		      strerror(errno));
		(void)*(volatile unsigned char *)&bd[changed * page]; /* b maps the layer's page */
		cd[changed * page] ^= 0xff;
		/* c takes over as head and folds its page into the layer. */
		cowmem_region *d = cowmem_clone(c);
		CHECK(d != NULL, "cowmem_clone: %s", strerror(errno));
		CHECK(cowmem_prefault(b, changed * page, page, 0) == 0, "cowmem_prefault: %s",
		      strerror(errno));
		struct timespec pause = { 0, 2 * 1000 * 1000 };
		nanosleep(&pause, NULL);
		ssize_t n = write(fds[1], bd + changed * page, page);
		CHECK(n == (ssize_t)page,
		      "round %zu: write(2) from a page prefaulted after a clone of its family moved "
		      "%zd bytes of %zu (%s)", round, n, page, n < 0 ? strerror(errno) : "short");
		CHECK(read(fds[0], got, page) == (ssize_t)page, "read from pipe: %s", strerror(errno));
		CHECK_BYTES(got, expected + changed * page, page, "the bytes write(2) took from b");
		CHECK_BYTES(cd + changed * page + 1, expected + changed * page + 1, page - 1,
			    "the rest of c's changed page");
		CHECK(cowmem_destroy(d) == 0 && cowmem_destroy(c) == 0 && cowmem_destroy(b) == 0 &&
			      cowmem_destroy(a) == 0,
		      "destroy: %s", strerror(errno));
	}
	close(fds[0]);
	close(fds[1]);
	free(expected);
	free(got);
	printf("%zu rounds: a prefault after a clone of the family lasted until the call\n",
	       rounds);
}

static void pipe_write(void) { run_calls(case_pipe_write); }
static void pipe_read(void) { run_calls(case_pipe_read); }
static void file_pread(void) { run_calls(case_pread); }
static void file_pwrite(void) { run_calls(case_pwrite); }
static void socket_send(void) { run_calls(case_send); }
static void socket_recv(void) { run_calls(case_recv); }
static void vectors(void) { run_calls(case_vectors); }
static void process_vm(void) { run_calls(case_process_vm); }

static const struct test_case cases[] = {
	/* The documented behaviour that cowmem_prefault() exists for. */
	TEST_CASE("unprefaulted-calls-fail", unprefaulted, .backends = "userfaultfd-user"),
	TEST_CASE("prefault-after-a-clone-of-the-family", prefault_after_family_clone,
		  .environment = { "COWMEM_BACKEND=userfaultfd-user" }),
	TEST_CASE("write-from-unfilled-into-pipe", pipe_write),
	TEST_CASE("read-from-pipe-into-unfilled", pipe_read),
	TEST_CASE("pread-from-file-into-unfilled", file_pread),
	TEST_CASE("pwrite-from-unfilled-into-file", file_pwrite),
	TEST_CASE("send-from-unfilled", socket_send),
	TEST_CASE("recv-into-unfilled", socket_recv),
	TEST_CASE("writev-readv-across-regions", vectors),
	TEST_CASE("process-vm-readv-writev", process_vm),
};

int main(int argc, char **argv)
{
	page = test_page_size();
	size = PAGES * page;
	CHECK(page <= 65536, "page size %zu fits the buffers", page);
	seed = test_seed_init(argc, argv);
	set_ranges();
	return test_main(argc, argv, cases, TEST_CASE_COUNT(cases));
}
