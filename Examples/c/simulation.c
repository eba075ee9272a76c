/*
 * simulation.c - checkpoint and roll back a simulation without copying it.
 *
 * The world (agents plus a 4096 x 4096 grid, 64 MiB) is built once, in a
 * pristine region. Each worker clones it; a run simulates, asks
 * cowmem_dirty_pages() what it changed, and cowmem_reset() takes the world
 * back to pristine for the next run, at a cost that follows the pages the
 * run wrote, not the world's size: many workers, one pristine image.
 * Then a checkpoint goes to disk with cowmem_save(), the simulation goes on,
 * and cowmem_load() brings the checkpoint back (pages come from the file on
 * first touch); replaying from it gives the same world again.
 *
 * Every step is verified against plain memcpy copies of the world.
 *
 * Build and run:
 *     cc simulation.c $(pkg-config --cflags --libs cowmem) -o simulation
 *     ./simulation            (the checkpoint goes to $TMPDIR or /tmp)
 * Exits 0 only if every check passed.
 */
#include <cowmem.h>

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define GRID 4096
#define AGENTS 256
#define WORKERS 2
#define RUNS 4

struct agent {
	uint32_t x, y;
	uint64_t rng;
};

/* The whole state lives in the region, so a checkpoint is the region. */
struct world {
	uint64_t step;
	struct agent agents[AGENTS];
	/* the grid follows, page-aligned: uint32_t cells[GRID][GRID] */
};

static size_t page_size, world_size, grid_offset;
static unsigned char *written; /* pages written since the last check: W */

static uint32_t *cell(void *base, uint32_t x, uint32_t y)
{
	return (uint32_t *)((char *)base + grid_offset) + (size_t)y * GRID + x;
}

/* Notes that [p, p + length) was written (an agent may straddle pages). */
static void mark(void *base, const void *p, size_t length)
{
	size_t at = (size_t)((const char *)p - (const char *)base);
	written[at / page_size] = 1;
	written[(at + length - 1) / page_size] = 1;
}

/* Each agent walks along its row, now and then to the next row up or down,
 * and leaves a trace on the cells it visits. */
static void simulate(void *base, int steps)
{
	struct world *w = base;
	for (int s = 0; s < steps; s++) {
		for (int i = 0; i < AGENTS; i++) {
			struct agent *a = &w->agents[i];
			a->rng ^= a->rng << 13, a->rng ^= a->rng >> 7, a->rng ^= a->rng << 17;
			a->x = (a->x + (a->rng & 1 ? 1 : GRID - 1)) % GRID;
			if ((a->rng >> 1 & 15) == 0)
				a->y = (a->y + (a->rng & 32 ? 1 : GRID - 1)) % GRID;
			uint32_t *c = cell(base, a->x, a->y);
			*c += (uint32_t)i + 1;
			mark(base, c, sizeof *c);
			mark(base, a, sizeof *a);
		}
		w->step++;
		mark(base, &w->step, sizeof w->step);
	}
}

static double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

/* Checks the dirty pages of `r` against its origin `origin` (a plain copy):
 * ascending, only written pages, and every page that differs. Clears W. */
static int check_dirty(cowmem_region *r, const void *origin, size_t *listed,
		       size_t *differ)
{
	size_t pages = world_size / page_size;
	size_t *list = malloc(pages * sizeof *list);
	unsigned char *in = calloc(pages, 1);
	ssize_t n = list && in ? cowmem_dirty_pages(r, list, pages) : -1;
	int bad = n < 0;
	if (n < 0)
		perror("simulation: cowmem_dirty_pages");
	for (ssize_t i = 0; i < n; i++) {
		bad |= (i > 0 && list[i] <= list[i - 1]) || !written[list[i]];
		in[list[i]] = 1;
	}
	*differ = 0;
	for (size_t p = 0; p < pages; p++) {
		if (memcmp((char *)cowmem_data(r) + p * page_size,
			   (const char *)origin + p * page_size, page_size) == 0)
			continue;
		++*differ;
		bad |= !in[p];
	}
	*listed = n < 0 ? 0 : (size_t)n;
	memset(written, 0, pages);
	free(list);
	free(in);
	if (bad)
		fprintf(stderr, "simulation: dirty pages break D ⊆ list ⊆ W\n");
	return bad ? -1 : 0;
}

static int same(cowmem_region *r, const void *copy, const char *what)
{
	if (memcmp(cowmem_data(r), copy, world_size) == 0)
		return 0;
	fprintf(stderr, "simulation: %s differs from its copy\n", what);
	return -1;
}

int main(void)
{
	int failed = 0;
	page_size = cowmem_page_size();
	grid_offset = (sizeof(struct world) + page_size - 1) / page_size * page_size;
	world_size = grid_offset + (size_t)GRID * GRID * sizeof(uint32_t);
	written = calloc(world_size / page_size, 1);
	char *pristine_copy = malloc(world_size), *checkpoint_copy = malloc(world_size);
	char *continued_copy = malloc(world_size);
	cowmem_region *pristine = cowmem_create(world_size);
	if (!written || !pristine_copy || !checkpoint_copy || !continued_copy || !pristine) {
		perror("simulation: setup");
		return 1;
	}

	/* The pristine world: terrain on the top quarter, agents spread out. */
	struct world *w = cowmem_data(pristine);
	for (uint32_t y = 0; y < GRID / 4; y++)
		for (uint32_t x = 0; x < GRID; x++)
			*cell(w, x, y) = (x ^ y) & 0xff;
	for (int i = 0; i < AGENTS; i++)
		w->agents[i] = (struct agent){ (uint32_t)i * 997 % GRID,
					       (uint32_t)i * 16, 0x9e3779b97f4a7c15u * (i + 1) };
	memcpy(pristine_copy, w, world_size);
	memcpy(continued_copy, pristine_copy, world_size); /* warm, for timing */
	printf("world: %zu MiB, %zu pages; %d agents\n", world_size >> 20,
	       world_size / page_size, AGENTS);

	/* Many workers, one pristine image: run, inspect, reset, run again. */
	cowmem_region *worker[WORKERS];
	for (int k = 0; k < WORKERS; k++)
		if (!(worker[k] = cowmem_clone(pristine))) {
			perror("simulation: cowmem_clone");
			return 1;
		}
	for (int run = 0; run < RUNS; run++) {
		for (int k = 0; k < WORKERS; k++) {
			struct world *ww = cowmem_data(worker[k]);
			for (int i = 0; i < AGENTS; i++) { /* this run's variation */
				ww->agents[i].rng += (uint64_t)(run * WORKERS + k + 1) << 32;
				mark(ww, &ww->agents[i], sizeof ww->agents[i]);
			}
			simulate(ww, 50 * (run + 1));
			size_t listed, differ;
			failed |= check_dirty(worker[k], pristine_copy, &listed, &differ);
			double t0 = now_us();
			if (cowmem_reset(worker[k]) != 0) {
				perror("simulation: cowmem_reset");
				return 1;
			}
			double t1 = now_us();
			memcpy(continued_copy, pristine_copy, world_size); /* the baseline */
			double t2 = now_us();
			ssize_t left = cowmem_dirty_pages(worker[k], NULL, 0);
			failed |= left != 0 || same(worker[k], pristine_copy, "a reset world");
			printf("run %d worker %d: %4" PRIu64 " steps, %5zu dirty pages "
			       "(%5zu changed); reset %7.0f us, memcpy of the world %7.0f us\n",
			       run + 1, k + 1, (uint64_t)50 * (run + 1), listed, differ,
			       t1 - t0, t2 - t1);
		}
	}
	failed |= same(pristine, pristine_copy, "the pristine world");

	/* A checkpoint on disk: save, go on, load it back, replay. */
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char path[4096];
	snprintf(path, sizeof path, "%s/simulation-XXXXXX", dir);
	int fd = mkstemp(path);
	if (fd < 0) {
		perror("simulation: mkstemp");
		return 1;
	}
	unlink(path);
	cowmem_region *live = worker[0];
	simulate(cowmem_data(live), 300);
	memcpy(checkpoint_copy, cowmem_data(live), world_size);
	if (cowmem_save(live, fd) != 0) {
		perror("simulation: cowmem_save");
		return 1;
	}
	struct stat st;
	fstat(fd, &st);
	printf("checkpoint at step %" PRIu64 ": file of %lld MiB, %lld MiB on disk\n",
	       ((struct world *)cowmem_data(live))->step, (long long)st.st_size >> 20,
	       (long long)st.st_blocks * 512 >> 20);
	simulate(cowmem_data(live), 300);
	memcpy(continued_copy, cowmem_data(live), world_size);

	cowmem_region *restored = cowmem_load(fd);
	close(fd); /* the library keeps its own descriptor */
	if (!restored) {
		perror("simulation: cowmem_load");
		return 1;
	}
	struct cowmem_stats s;
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1)
			failed |= same(restored, checkpoint_copy, "the loaded checkpoint");
		if (cowmem_stats(restored, &s) != 0) {
			perror("simulation: cowmem_stats");
			return 1;
		}
		printf("%-24s %6zu pages resident, %6" PRIu64 " faults served, "
		       "%.1f ms blocked\n", pass ? "loaded, read in full:" : "loaded:",
		       s.resident, s.faults, (double)s.blocked_ns / 1e6);
	}
	memset(written, 0, world_size / page_size);
	simulate(cowmem_data(restored), 300);
	failed |= same(restored, continued_copy, "the replay from the checkpoint");
	size_t listed, differ;
	failed |= check_dirty(restored, checkpoint_copy, &listed, &differ);
	printf("replayed 300 steps from the file: same world; %zu dirty pages, "
	       "%zu changed\n", listed, differ);
	failed |= cowmem_reset(restored) != 0 ||
		  same(restored, checkpoint_copy, "a reset loaded world");
	printf("reset of the loaded world: back to the checkpoint\n");

	cowmem_destroy(restored);
	for (int k = 0; k < WORKERS; k++)
		cowmem_destroy(worker[k]);
	cowmem_destroy(pristine);
	free(pristine_copy);
	free(checkpoint_copy);
	free(continued_copy);
	free(written);
	printf("%s\n", failed ? "FAILED" : "every run, reset and restore verified");
	return failed ? 1 : 0;
}
