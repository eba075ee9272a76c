/*
 * image_undo.c - an undo stack for a large RGBA image, one clone per edit.
 *
 * A 4096 x 4096 RGBA image (64 MiB) lives in a CowMem region. Each brush
 * stroke starts by cloning the image: the clone becomes the working image
 * and the old region goes on the undo stack, frozen. The working image's
 * origin is the state before the stroke, so cowmem_dirty_pages() on it says
 * exactly how many pages the stroke touched, cowmem_reset() cancels the
 * stroke in progress, and undo is destroying the working image and going on
 * with the top of the stack. cowmem_stats() shows what the whole history
 * costs in memory, against a full copy per step.
 *
 * Every step is checked against a plain malloc'd copy of the image that
 * gets the same strokes and is undone from saved rectangles. The memory
 * column is taken before the whole image is read: a version that reads a
 * page its parent wrote gets its own copy of it (the parent lends it), so
 * an editor that reads every page after every stroke pays more.
 *
 * Build and run:
 *     cc image_undo.c $(pkg-config --cflags --libs cowmem) -o image_undo
 *     ./image_undo
 * Exits 0 only if every undo, and every list of touched pages, checked out.
 */
#include <cowmem.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WIDTH 4096
#define HEIGHT 4096
#define STROKES 6
#define RADIUS 20

struct stroke {
	int x0, y0, x1, y1;
	uint32_t colour;
};

/* A rectangle of the checking copy, saved before a stroke so undo can put
 * it back. */
struct saved {
	int x, y, w, h;
	uint32_t *pixels;
};

static size_t page_size;
static size_t image_pages;

/* Paints a round brush along the stroke. Marks every page it writes in
 * `written` (if not NULL): the set W of the dirty pages contract. */
static void paint(uint32_t *image, const struct stroke *s, unsigned char *written)
{
	int steps = abs(s->x1 - s->x0) + abs(s->y1 - s->y0);
	for (int i = 0; i <= steps; i += RADIUS / 2) {
		int cx = s->x0 + (s->x1 - s->x0) * i / (steps ? steps : 1);
		int cy = s->y0 + (s->y1 - s->y0) * i / (steps ? steps : 1);
		for (int y = cy - RADIUS; y <= cy + RADIUS; y++)
			for (int x = cx - RADIUS; x <= cx + RADIUS; x++) {
				if (x < 0 || y < 0 || x >= WIDTH || y >= HEIGHT ||
				    (x - cx) * (x - cx) + (y - cy) * (y - cy) > RADIUS * RADIUS)
					continue;
				size_t at = (size_t)y * WIDTH + (size_t)x;
				image[at] = s->colour;
				if (written)
					written[at * 4 / page_size] = 1;
			}
	}
}

static struct saved save_box(const uint32_t *image, const struct stroke *s)
{
	struct saved b;
	b.x = (s->x0 < s->x1 ? s->x0 : s->x1) - RADIUS;
	b.y = (s->y0 < s->y1 ? s->y0 : s->y1) - RADIUS;
	b.x = b.x < 0 ? 0 : b.x;
	b.y = b.y < 0 ? 0 : b.y;
	int x1 = (s->x0 > s->x1 ? s->x0 : s->x1) + RADIUS + 1;
	int y1 = (s->y0 > s->y1 ? s->y0 : s->y1) + RADIUS + 1;
	b.w = (x1 > WIDTH ? WIDTH : x1) - b.x;
	b.h = (y1 > HEIGHT ? HEIGHT : y1) - b.y;
	b.pixels = malloc((size_t)b.w * (size_t)b.h * 4);
	for (int y = 0; b.pixels && y < b.h; y++)
		memcpy(b.pixels + (size_t)y * b.w,
		       image + (size_t)(b.y + y) * WIDTH + b.x, (size_t)b.w * 4);
	return b;
}

static void restore_box(uint32_t *image, struct saved *b)
{
	for (int y = 0; y < b->h; y++)
		memcpy(image + (size_t)(b->y + y) * WIDTH + b->x,
		       b->pixels + (size_t)y * b->w, (size_t)b->w * 4);
	free(b->pixels);
	b->pixels = NULL;
}

/* Checks D ⊆ listed ⊆ W for the stroke just painted: D are the pages where
 * `now` differs from `before` (only pages in W can differ). */
static int check_dirty(cowmem_region *doc, const uint32_t *before,
		       const unsigned char *written, size_t *list, ssize_t *count,
		       size_t *differ)
{
	const char *now = cowmem_data(doc);
	*count = cowmem_dirty_pages(doc, list, image_pages);
	if (*count < 0) {
		perror("image_undo: cowmem_dirty_pages");
		return -1;
	}
	unsigned char *listed = calloc(image_pages, 1);
	if (!listed)
		return -1;
	int bad = 0;
	*differ = 0;
	for (ssize_t i = 0; i < *count; i++) {
		bad |= i > 0 && list[i] <= list[i - 1];           /* ascending */
		bad |= list[i] >= image_pages || !written[list[i]]; /* ⊆ W */
		if (list[i] < image_pages)
			listed[list[i]] = 1;
	}
	for (size_t p = 0; p < image_pages; p++) {              /* D ⊆ list */
		if (!written[p] || !memcmp(now + p * page_size,
					   (const char *)before + p * page_size, page_size))
			continue;
		++*differ;
		bad |= !listed[p];
	}
	free(listed);
	if (bad)
		fprintf(stderr, "image_undo: the dirty pages break D ⊆ list ⊆ W\n");
	return bad ? -1 : 0;
}

/* Pages the document and its history hold of their own, in MiB. */
static double own_mib(cowmem_region *doc, cowmem_region **stack, int depth)
{
	struct cowmem_stats s;
	size_t own = 0;
	for (int i = -1; i < depth; i++) {
		if (cowmem_stats(i < 0 ? doc : stack[i], &s) != 0)
			return -1;
		own += s.resident - s.shared;
	}
	return (double)(own * page_size) / (1 << 20);
}

int main(void)
{
	static const struct stroke strokes[STROKES] = {
		{ 100, 100, 3900, 150, 0xff0000ffu },  /* a long horizontal line */
		{ 2000, 200, 2050, 3900, 0xff00ff00u }, /* a long vertical one */
		{ 500, 500, 700, 700, 0xffff0000u },    /* short diagonal */
		{ 3000, 3000, 3010, 3005, 0xffffffffu }, /* a dot */
		{ 0, 4095, 4095, 0, 0xff808080u },       /* corner to corner */
		{ 1000, 2000, 1400, 2000, 0xff00ffffu },
	};
	size_t size = (size_t)WIDTH * HEIGHT * 4;
	cowmem_region *stack[STROKES + 1]; /* + the cancelled stroke's */
	struct saved boxes[STROKES];
	int depth = 0, failed = 0;

	page_size = cowmem_page_size();
	image_pages = size / page_size;
	cowmem_region *doc = cowmem_create(size);
	uint32_t *check = malloc(size), *before = malloc(size);
	size_t *list = malloc(image_pages * sizeof *list);
	unsigned char *written = malloc(image_pages);
	if (!doc || !check || !before || !list || !written) {
		perror("image_undo: setup");
		return 1;
	}
	/* A gradient background, in both the image and the checking copy. */
	uint32_t *px = cowmem_data(doc);
	for (size_t y = 0; y < HEIGHT; y++)
		for (size_t x = 0; x < WIDTH; x++)
			px[y * WIDTH + x] = 0xff000000u | (uint32_t)(y / 16) << 8 | (uint32_t)(x / 16);
	memcpy(check, px, size);
	printf("image %dx%d RGBA, %zu MiB, %zu pages of %zu bytes\n", WIDTH, HEIGHT,
	       size >> 20, image_pages, page_size);
	printf("%-7s %14s %14s %26s\n", "stroke", "dirty pages", "pages changed",
	       "memory of all versions");

	for (int i = 0; i < STROKES; i++) {
		/* Checkpoint: the clone is the working image, the old one is kept. */
		cowmem_region *next = cowmem_clone(doc);
		if (!next) {
			perror("image_undo: cowmem_clone");
			return 1;
		}
		stack[depth++] = doc;
		doc = next;
		memcpy(before, check, size);
		boxes[i] = save_box(check, &strokes[i]);
		if (!boxes[i].pixels)
			return 1;
		memset(written, 0, image_pages);
		paint(cowmem_data(doc), &strokes[i], written);
		paint(check, &strokes[i], NULL);

		ssize_t dirty;
		size_t changed = 0;
		failed |= check_dirty(doc, before, written, list, &dirty, &changed);
		printf("%-7d %14zd %14zu %9.1f MiB (copies: %4zu MiB)\n", i + 1, dirty,
		       changed, own_mib(doc, stack, depth) + (double)(size >> 20),
		       (size_t)(depth + 1) * (size >> 20));
	}

	if (memcmp(cowmem_data(doc), check, size) != 0) {
		fprintf(stderr, "image_undo: the image differs after the strokes\n");
		failed = 1;
	}

	/* A stroke started and cancelled: reset goes back to the origin, the
	 * state before the stroke, and the history is untouched. */
	cowmem_region *next = cowmem_clone(doc);
	if (!next)
		return 1;
	stack[depth++] = doc;
	doc = next;
	struct stroke cancelled = { 0, 0, 4095, 4095, 0xff123456u };
	paint(cowmem_data(doc), &cancelled, NULL);
	if (cowmem_reset(doc) != 0) {
		perror("image_undo: cowmem_reset");
		return 1;
	}
	ssize_t left = cowmem_dirty_pages(doc, NULL, 0);
	int same = memcmp(cowmem_data(doc), check, size) == 0;
	printf("cancelled stroke: reset, %zd dirty pages left, image %s\n", left,
	       same ? "as before" : "WRONG");
	failed |= left != 0 || !same;
	cowmem_destroy(doc);
	doc = stack[--depth];

	/* Undo every stroke, newest first, checking each step. */
	for (int i = STROKES - 1; i >= 0; i--) {
		if (cowmem_destroy(doc) != 0) {
			perror("image_undo: cowmem_destroy");
			return 1;
		}
		doc = stack[--depth];
		restore_box(check, &boxes[i]);
		int ok = memcmp(cowmem_data(doc), check, size) == 0;
		printf("undo stroke %d: %s\n", i + 1, ok ? "matches" : "DIFFERS");
		failed |= !ok;
	}
	cowmem_destroy(doc);
	free(check);
	free(before);
	free(list);
	free(written);
	printf("%s\n", failed ? "FAILED" : "every undo verified");
	return failed ? 1 : 0;
}
