/*
 * The pre-copier: between clones, the folder's thread copies out the old
 * versions that the next fold will keep.
 *
 * A fold copies two pages per page the head wrote since the previous
 * clone: the layer's old page out to the store, for the snapshots that
 * still see it, and the head's new page in. A program that writes right
 * after a clone waits for that (folder.c). But the layer's page does not
 * change between folds, so its copy can be made earlier, as soon as the
 * head has written the page, on the CPU the program leaves idle while it
 * writes: the fold then finds it made (early_copies.c) and copies one page
 * instead of two.
 *
 * After each clone of a head, the pre-copier follows that head, and the
 * new clone too if the head took over for this clone (the loop where the
 * newest clone becomes the working copy: the clone takes over at its own
 * clone, and its pages are the ones folded): it walks their page tables
 * (PAGEMAP_SCAN, WALK_PAGES at a time, without the engine lock: reading
 * page tables changes nothing), asks the layer which of the pages found
 * want an early copy, and makes them, COPY_BATCH at a time with the lock
 * released. Copies that a capture overtook are not made, or dropped (the
 * layer says when a capture began and ended).
 *
 * A pass that made GOOD_PASS copies or more is followed by the next at
 * once; one that made fewer rests first, as long as the pass took times
 * GOOD_PASS / (copies + 1), so that a head that writes a page now and then
 * does not keep a CPU walking its page tables (walking a GiB of them takes
 * about a millisecond). The pre-copier stops after QUIET_PASSES passes in
 * a row that made nothing, or when the copies made reach twice what the
 * previous fold replaced (the memory a speculative copy may take), until
 * the next clone. A pending fold stops it at once: the folder finishes the
 * fold first. COWMEM_DISABLE=early-copies turns it off.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"

#define WALK_PAGES 4096 /* 16 MiB of 4 KiB pages per unlocked walk */
#define COPY_BATCH 64    /* pages copied per release of the lock */
#define MIN_BUDGET 4096  /* early copies allowed after a small fold */
#define GOOD_PASS 64
#define MAX_REST_NS 50000000L
#define QUIET_PASSES 8

/* Under engine.lock. */
static struct {
	bool active;
	unsigned serial; /* of the follow(): a step that outlived it stops */
	/* The head and the clone, found again by address at each step:
	 * either may go meanwhile. */
	char *walked[2];
	struct cowmem__layer *layer; /* theirs; only compared, never used */
	unsigned target; /* the one being walked */
	size_t cursor;   /* its next page to walk */
	size_t budget;   /* early copies left until the next capture */
	size_t pass_made;     /* early copies made in this pass */
	long pass_started_ns; /* CLOCK_MONOTONIC */
	unsigned quiet_passes;
} follow;

void cowmem__precopier_follow(const struct cowmem_region *head,
			      const struct cowmem_region *clone)
{
	size_t replaced, copied_early;

	if (!(cowmem__engine.features & FEATURE_EARLY_COPIES) ||
	    !(cowmem__engine.features & FEATURE_PAGEMAP_SCAN) || head->mode != COWMEM__HEAD)
		return;
	cowmem__layer_last_capture(head->layer, &replaced, &copied_early);
	follow.active = true;
	follow.serial++;
	follow.walked[0] = head->data;
	follow.walked[1] = clone && clone->layer == head->layer ? clone->data : NULL;
	follow.layer = head->layer;
	follow.target = 0;
	follow.cursor = 0;
	follow.budget = 2 * replaced > MIN_BUDGET ? 2 * replaced : MIN_BUDGET;
	follow.pass_made = 0;
	follow.pass_started_ns = 0;
	follow.quiet_passes = 0;
}

void cowmem__precopier_stop(void)
{
	follow.active = false;
}

bool cowmem__precopier_following(void)
{
	return follow.active;
}

static int note_run(size_t first, size_t end, void *ctx)
{
	return cowmem__run_list_add(ctx, first, end);
}

struct batch {
	size_t pages[COPY_BATCH];
	cowmem__slot slots[COPY_BATCH];
	const char *from[COPY_BATCH];
	size_t count;
};

/* The early copies of the runs found (lock held; released while copying).
 * Returns how many it made, or a negative errno. */
static long copy_found(struct cowmem__layer *layer, const struct run_list *found, size_t first,
		       bool (*interrupted)(void))
{
	uint64_t copied_at = cowmem__layer_current(layer);
	uint64_t begun = cowmem__layer_captures_begun(layer);
	struct batch b;
	long made = 0;

	for (size_t i = 0; i < found->count; i++) {
		size_t page = first + found->runs[i][0], end = first + found->runs[i][1];
		while (page < end) {
			b.count = 0;
			for (; page < end && b.count < COPY_BATCH && follow.budget > 0; page++) {
				int rc = cowmem__layer_early_want(layer, page, &b.slots[b.count],
								  &b.from[b.count]);
				if (rc < 0)
					return made > 0 ? made : rc;
				if (rc == 1) {
					b.pages[b.count++] = page;
					follow.budget--;
				}
			}
			if (b.count > 0) {
				pthread_mutex_unlock(&cowmem__engine.lock);
				bool copied = cowmem__layer_early_copy(layer, begun, b.slots, b.from,
								       b.count);
				pthread_mutex_lock(&cowmem__engine.lock);
				if (copied) {
					cowmem__layer_early_add(layer, copied_at, b.pages, b.slots,
								b.count);
					made += (long)b.count;
				} else {
					for (size_t k = 0; k < b.count; k++)
						cowmem__store_unref(b.slots[k]);
				}
			}
			if (follow.budget == 0 || interrupted() ||
			    cowmem__layer_captures_begun(layer) != begun)
				return made;
		}
	}
	return made;
}

/* The region being walked, if it still is what it was: the head, or a
 * reader that may take over (at the current generation, nothing beyond). */
static struct cowmem_region *walked_region(void)
{
	char *data = follow.walked[follow.target];
	struct cowmem_region *r = data ? cowmem__find(data) : NULL;

	if (!r || r->data != data || r->layer != follow.layer || follow.cursor >= r->pages)
		return NULL;
	if (r->mode == COWMEM__HEAD ||
	    (r->mode == COWMEM__READER && !r->overlay && r->gen == cowmem__layer_current(r->layer)))
		return r;
	return NULL;
}

static long monotonic_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000L + t.tv_nsec;
}

/* A pass is done: the rest before the next one (0: none), or -1 to stop. */
static long end_of_pass(void)
{
	size_t made = follow.pass_made;
	long took = monotonic_ns() - follow.pass_started_ns;

	follow.target = 0;
	follow.cursor = 0;
	follow.pass_made = 0;
	follow.pass_started_ns = 0;
	follow.quiet_passes = made > 0 ? 0 : follow.quiet_passes + 1;
	if (follow.quiet_passes == QUIET_PASSES) {
		follow.active = false;
		return -1;
	}
	if (made >= GOOD_PASS)
		return 0;
	long rest = took * GOOD_PASS / (long)(made + 1);
	return rest < MAX_REST_NS ? rest : MAX_REST_NS;
}

/* The next part of the pass: 0, or -1 when the pass is done. */
static int advance(size_t walked_pages, size_t pages)
{
	follow.cursor += walked_pages;
	if (follow.cursor < pages)
		return 0;
	follow.cursor = 0;
	return ++follow.target < 2 ? 0 : -1;
}

long cowmem__precopier_step(bool (*interrupted)(void))
{
	if (!follow.active || follow.budget == 0) {
		follow.active = false;
		return -1;
	}
	if (follow.pass_started_ns == 0)
		follow.pass_started_ns = monotonic_ns();
	struct cowmem_region *r = walked_region();
	if (!r) {
		follow.walked[follow.target] = NULL; /* gone: the other one only */
		if (!follow.walked[0] && !follow.walked[1]) {
			follow.active = false;
			return -1;
		}
		return advance(0, 0) == 0 ? 0 : end_of_pass();
	}
	struct cowmem__layer *layer = r->layer;
	char *start = r->data + follow.cursor * cowmem__engine.page_size;
	size_t first = follow.cursor, pages = r->pages;
	size_t count = pages - first < WALK_PAGES ? pages - first : WALK_PAGES;
	struct run_list found = { NULL, 0, 0 };
	unsigned serial = follow.serial;

	/* Held across the unlocked parts: its pages and shared mapping stay. */
	cowmem__layer_ref(layer);
	pthread_mutex_unlock(&cowmem__engine.lock);
	int rc = cowmem__scan_own_unlocked(start, count, note_run, &found, NULL);
	pthread_mutex_lock(&cowmem__engine.lock);
	long made = rc < 0 ? rc : copy_found(layer, &found, first, interrupted);
	free(found.runs);
	cowmem__layer_unref(layer);
	if (follow.serial != serial) /* another clone since: start afresh */
		return follow.active ? 0 : -1;
	if (made < 0 || !follow.active) {
		follow.active = false;
		return -1;
	}
	follow.pass_made += (size_t)made;
	return advance(count, pages) == 0 ? 0 : end_of_pass();
}

void cowmem__precopier_fork_child(void)
{
	follow.active = false;
}
