/*
 * fuzz_ops.c - operation sequences against a memcpy model.
 *
 * Each input is a program: every op is one byte (what) and a few argument
 * bytes, over up to SLOTS regions of 1 to MAX_PAGES pages, each with a
 * model of its bytes, of its origin and of the pages it may list as dirty.
 * Region memory is used by plain stores and loads, read(2) into it and
 * write(2) from it (after cowmem_prefault, as the userfaultfd-user backend
 * requires). After every op that changes a region its bytes are compared
 * with the model; the dirty-pages contract (every page that differs from
 * the origin is listed, and only pages that may have changed), save + load
 * through a memfd, cowmem_copy (sizes equal or not), reset and bad handles
 * are checked too. A mismatch aborts, which libFuzzer reports with the
 * input that did it.
 *
 * Built with libFuzzer (make fuzz) or with replay.c as a plain program
 * that runs the inputs it is given (make fuzz-replay, part of make test).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <cowmem.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SLOTS 6
#define MAX_PAGES 16

struct slot {
	cowmem_region *r;
	size_t pages;
	unsigned char *model, *origin;
	bool maybe_dirty[MAX_PAGES];
};

static struct slot slots[SLOTS];
static size_t page;

#define FUZZ_CHECK(cond, ...)                                                \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "fuzz_ops.c:%d: %s: ", __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                         \
			fputc('\n', stderr);                                  \
			abort();                                              \
		}                                                             \
	} while (0)

struct input {
	const uint8_t *at, *end;
};

static unsigned take(struct input *in)
{
	return in->at < in->end ? *in->at++ : 0;
}

static void check_bytes(const struct slot *s, const char *after)
{
	const unsigned char *data = cowmem_data(s->r);
	for (size_t i = 0; i < s->pages * page; i++)
		FUZZ_CHECK(data[i] == s->model[i], "after %s: byte %zu is %d, the model %d", after,
			   i, data[i], s->model[i]);
}

static void check_dirty(const struct slot *s)
{
	size_t listed[MAX_PAGES];
	ssize_t n = cowmem_dirty_pages(s->r, listed, MAX_PAGES);
	bool in_list[MAX_PAGES] = { false };

	FUZZ_CHECK(n >= 0 && (size_t)n <= s->pages, "cowmem_dirty_pages: %zd (%s)", n,
		   strerror(errno));
	for (ssize_t i = 0; i < n; i++) {
		FUZZ_CHECK(listed[i] < s->pages && (i == 0 || listed[i] > listed[i - 1]),
			   "dirty page %zu out of range or order", listed[i]);
		in_list[listed[i]] = true;
		FUZZ_CHECK(s->maybe_dirty[listed[i]], "page %zu listed, never changed",
			   listed[i]);
	}
	for (size_t p = 0; p < s->pages; p++)
		if (memcmp(s->model + p * page, s->origin + p * page, page) != 0)
			FUZZ_CHECK(in_list[p], "page %zu differs from the origin, not listed", p);
}

static void forget(struct slot *s)
{
	free(s->model);
	free(s->origin);
	*s = (struct slot){ 0 };
}

static void drop(struct slot *s)
{
	if (!s->r)
		return;
	FUZZ_CHECK(cowmem_destroy(s->r) == 0, "cowmem_destroy: %s", strerror(errno));
	forget(s);
}

/* A new model for s of `pages` pages, equal to `content` (NULL: zeros). */
static void adopt(struct slot *s, cowmem_region *r, size_t pages, const unsigned char *content)
{
	s->r = r;
	s->pages = pages;
	s->model = calloc(pages, page);
	s->origin = calloc(pages, page);
	FUZZ_CHECK(s->model && s->origin, "out of memory");
	if (content) {
		memcpy(s->model, content, pages * page);
		memcpy(s->origin, content, pages * page);
	}
}

static void op_create(struct input *in)
{
	struct slot *s = &slots[take(in) % SLOTS];
	size_t pages = 1 + take(in) % MAX_PAGES;
	drop(s);
	cowmem_region *r = cowmem_create(pages * page);
	FUZZ_CHECK(r, "cowmem_create: %s", strerror(errno));
	adopt(s, r, pages, NULL);
	check_bytes(s, "create");
}

static void op_clone(struct input *in)
{
	struct slot *from = &slots[take(in) % SLOTS], *to = &slots[take(in) % SLOTS];
	if (!from->r || from == to)
		return;
	cowmem_region *r = cowmem_clone(from->r);
	FUZZ_CHECK(r, "cowmem_clone: %s", strerror(errno));
	drop(to);
	adopt(to, r, from->pages, from->model);
	check_bytes(to, "clone");
	check_bytes(from, "clone (source)");
}

static void op_store(struct input *in)
{
	struct slot *s = &slots[take(in) % SLOTS];
	unsigned p = take(in), offset = take(in) << 4, value = take(in), count = 1 + take(in) % 64;
	if (!s->r)
		return;
	p %= s->pages;
	unsigned char *data = cowmem_data(s->r);
	for (unsigned i = 0; i < count; i++) {
		size_t at = p * page + (offset + i * 61) % page;
		data[at] = (unsigned char)(value + i);
		s->model[at] = (unsigned char)(value + i);
	}
	s->maybe_dirty[p] = true;
}

/* read(2) into the region across up to two pages, from a pipe. */
static void op_read_into(struct input *in)
{
	struct slot *s = &slots[take(in) % SLOTS];
	unsigned p = take(in), offset = take(in) << 4, length = 1 + (take(in) << 5), seed = take(in);
	if (!s->r)
		return;
	size_t start = (p % s->pages) * page + offset % page;
	size_t size = s->pages * page;
	if (length > size - start)
		length = (unsigned)(size - start);
	if (length > 4096)
		length = 4096;
	unsigned char bytes[4096];
	for (unsigned i = 0; i < length; i++)
		bytes[i] = (unsigned char)(seed * 31 + i);
	int fds[2];
	FUZZ_CHECK(pipe(fds) == 0, "pipe: %s", strerror(errno));
	FUZZ_CHECK(write(fds[1], bytes, length) == (ssize_t)length, "write to pipe");
	FUZZ_CHECK(cowmem_prefault(s->r, start, length, 1) == 0, "cowmem_prefault: %s",
		   strerror(errno));
	ssize_t n = read(fds[0], (char *)cowmem_data(s->r) + start, length);
	FUZZ_CHECK(n == (ssize_t)length, "read(2) into the region: %zd (%s)", n, strerror(errno));
	close(fds[0]);
	close(fds[1]);
	memcpy(s->model + start, bytes, length);
	for (size_t q = start / page; q <= (start + length - 1) / page; q++)
		s->maybe_dirty[q] = true;
	check_bytes(s, "read(2)");
}

/* write(2) from the region to a pipe: the bytes that come out. */
static void op_write_from(struct input *in)
{
	struct slot *s = &slots[take(in) % SLOTS];
	unsigned p = take(in), length = 1 + (take(in) << 5);
	if (!s->r)
		return;
	size_t start = (p % s->pages) * page, size = s->pages * page;
	if (length > size - start)
		length = (unsigned)(size - start);
	unsigned char bytes[8192];
	int fds[2];
	FUZZ_CHECK(pipe(fds) == 0, "pipe: %s", strerror(errno));
	FUZZ_CHECK(cowmem_prefault(s->r, start, length, 0) == 0, "cowmem_prefault: %s",
		   strerror(errno));
	ssize_t n = write(fds[1], (char *)cowmem_data(s->r) + start, length);
	FUZZ_CHECK(n == (ssize_t)length, "write(2) from the region: %zd (%s)", n,
		   strerror(errno));
	FUZZ_CHECK(read(fds[0], bytes, length) == (ssize_t)length, "read from pipe");
	close(fds[0]);
	close(fds[1]);
	FUZZ_CHECK(memcmp(bytes, s->model + start, length) == 0, "write(2) gave other bytes");
}

static void op_copy(struct input *in)
{
	struct slot *from = &slots[take(in) % SLOTS], *to = &slots[take(in) % SLOTS];
	if (!from->r || !to->r)
		return;
	int rc = cowmem_copy(to->r, from->r);
	if (from->pages != to->pages) {
		FUZZ_CHECK(rc == -1 && errno == EINVAL, "cowmem_copy of other sizes: %d", rc);
		check_bytes(to, "a refused copy");
		return;
	}
	FUZZ_CHECK(rc == 0, "cowmem_copy: %s", strerror(errno));
	if (from != to) {
		for (size_t p = 0; p < to->pages; p++)
			to->maybe_dirty[p] = true;
		memcpy(to->model, from->model, to->pages * page);
	}
	check_bytes(to, "copy");
	check_bytes(from, "copy (source)");
}

static void op_reset(struct input *in)
{
	struct slot *s = &slots[take(in) % SLOTS];
	if (!s->r)
		return;
	FUZZ_CHECK(cowmem_reset(s->r) == 0, "cowmem_reset: %s", strerror(errno));
	memcpy(s->model, s->origin, s->pages * page);
	memset(s->maybe_dirty, 0, sizeof s->maybe_dirty);
	check_bytes(s, "reset");
}

static void op_dirty(struct input *in)
{
	struct slot *s = &slots[take(in) % SLOTS];
	if (s->r)
		check_dirty(s);
}

/* Save to a memfd and load it into another slot. */
static void op_save_load(struct input *in)
{
	struct slot *from = &slots[take(in) % SLOTS], *to = &slots[take(in) % SLOTS];
	if (!from->r || from == to)
		return;
	int fd = memfd_create("fuzz-snapshot", MFD_CLOEXEC);
	FUZZ_CHECK(fd >= 0, "memfd_create: %s", strerror(errno));
	FUZZ_CHECK(cowmem_save(from->r, fd) == 0, "cowmem_save: %s", strerror(errno));
	cowmem_region *r = cowmem_load(fd);
	FUZZ_CHECK(r, "cowmem_load: %s", strerror(errno));
	close(fd);
	FUZZ_CHECK(cowmem_size(r) == from->pages * page, "loaded size %zu", cowmem_size(r));
	drop(to);
	adopt(to, r, from->pages, from->model);
	check_bytes(to, "load");
}

static void op_destroy(struct input *in)
{
	drop(&slots[take(in) % SLOTS]);
}

/* Handles that are no regions: EINVAL, nothing else happens. */
static void op_bad_handles(struct input *in)
{
	(void)in;
	errno = 0;
	FUZZ_CHECK(!cowmem_clone(NULL) && errno == EINVAL, "cowmem_clone(NULL)");
	FUZZ_CHECK(cowmem_destroy(NULL) == 0, "cowmem_destroy(NULL)");
	FUZZ_CHECK(cowmem_reset(NULL) == -1 && errno == EINVAL, "cowmem_reset(NULL)");
	FUZZ_CHECK(cowmem_dirty_pages(NULL, NULL, 0) == -1 && errno == EINVAL,
		   "cowmem_dirty_pages(NULL)");
	FUZZ_CHECK(cowmem_copy(NULL, NULL) == -1 && errno == EINVAL, "cowmem_copy(NULL)");
	FUZZ_CHECK(cowmem_save(NULL, 0) == -1 && errno == EINVAL, "cowmem_save(NULL)");
	FUZZ_CHECK(!cowmem_data(NULL) && errno == EINVAL, "cowmem_data(NULL)");
	FUZZ_CHECK(cowmem_size(NULL) == 0, "cowmem_size(NULL)");
	FUZZ_CHECK(cowmem_create(0) == NULL && errno == EINVAL, "cowmem_create(0)");
	struct cowmem_stats stats;
	FUZZ_CHECK(cowmem_stats(NULL, &stats) == -1 && errno == EINVAL, "cowmem_stats(NULL)");
	for (size_t i = 0; i < SLOTS; i++)
		if (slots[i].r)
			check_bytes(&slots[i], "bad handles");
}

static void (*const ops[])(struct input *) = {
	op_create, op_clone,  op_store, op_store,   op_read_into, op_write_from, op_copy,
	op_reset,  op_dirty,  op_clone, op_save_load, op_destroy, op_bad_handles,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, data + size };

	if (!page)
		page = cowmem_page_size();
	while (in.at < in.end)
		ops[take(&in) % (sizeof ops / sizeof ops[0])](&in);
	for (size_t i = 0; i < SLOTS; i++) {
		if (slots[i].r) {
			check_bytes(&slots[i], "the end");
			check_dirty(&slots[i]);
		}
		drop(&slots[i]);
	}
	return 0;
}
