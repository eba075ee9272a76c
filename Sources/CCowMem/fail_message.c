/*
 * The fault servers' "cannot provide page" line, written without allocating.
 *
 * A server says it when the kernel refused to fill a page, typically with
 * ENOMEM from a memory cgroup that is full. fprintf may allocate its buffer
 * and needs more stack than the server has touched; in a cgroup whose OOM
 * killer is disabled that charge sleeps forever, and so does the thread
 * that faulted, which was about to get its SIGBUS. So the line is put
 * together by hand in a static buffer and written to stderr with write(2).
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

/* The fixed words, two 20-digit numbers, "0x" and 16 digits, and the
 * longest description glibc has (about 50 characters). */
static char line[256];
/* Two servers that fail at once take turns with the buffer. */
static char line_busy;

struct line_end {
	char *at;
	char *end; /* one before the end: the newline always fits */
};

static void put_text(struct line_end *l, const char *text)
{
	while (*text && l->at < l->end)
		*l->at++ = *text++;
}

static void put_number(struct line_end *l, uintmax_t value, unsigned base)
{
	char digits[3 * sizeof value];
	size_t count = 0;

	do {
		digits[count++] = "0123456789abcdef"[value % base];
		value /= base;
	} while (value);
	while (count > 0 && l->at < l->end)
		*l->at++ = digits[--count];
}

/* strerror's text in the C locale, without its translation (which may
 * allocate): glibc 2.32+ has it as a constant table. */
static void put_error(struct line_end *l, int error)
{
	const char *description = NULL;

#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 32)
	description = strerrordesc_np(error);
#else
	description = strerror(error);
#endif
	if (description) {
		put_text(l, description);
		return;
	}
	put_text(l, "Unknown error ");
	if (error < 0) {
		put_text(l, "-");
		put_number(l, -(uintmax_t)error, 10);
	} else {
		put_number(l, (uintmax_t)error, 10);
	}
}

void cowmem__say_cannot_provide(size_t page, const void *data, int error)
{
	int saved = errno;

	while (__atomic_test_and_set(&line_busy, __ATOMIC_ACQUIRE))
		;
	/* As "cowmem: cannot provide page %zu of region %p: %s\n" printed. */
	struct line_end l = { line, line + sizeof line - 1 };
	put_text(&l, "cowmem: cannot provide page ");
	put_number(&l, page, 10);
	put_text(&l, " of region 0x");
	put_number(&l, (uintptr_t)data, 16);
	put_text(&l, ": ");
	put_error(&l, error);
	*l.at++ = '\n';
	for (const char *from = line; from < l.at;) {
		ssize_t n = write(STDERR_FILENO, from, (size_t)(l.at - from));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		from += n;
	}
	__atomic_clear(&line_busy, __ATOMIC_RELEASE);
	errno = saved;
}

#define STACK_RESERVE (32 * 1024) /* more than a fault's way to here needs */

/* Writes STACK_RESERVE bytes of stack below the caller and locks them. */
__attribute__((noinline)) static void touch_stack(void)
{
	volatile char reserve[STACK_RESERVE];

	for (size_t i = 0; i < sizeof reserve; i += 512)
		reserve[i] = 0;
	(void)mlock((const void *)reserve, sizeof reserve); /* RLIMIT_MEMLOCK may refuse */
}

void cowmem__prepare_to_fail(void)
{
	static _Thread_local bool prepared;

	if (prepared)
		return;
	prepared = true;
	while (__atomic_test_and_set(&line_busy, __ATOMIC_ACQUIRE))
		;
	memset(line, 0, sizeof line);
	__atomic_clear(&line_busy, __ATOMIC_RELEASE);
	(void)mlock(line, sizeof line);
	touch_stack();
}
