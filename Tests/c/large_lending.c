/*
 * large_lending.c - lending at scale: a large source that keeps writing and
 * is cloned again and again, like an undo history.
 *
 * Small random regions (differential.c) never make the kernel split a
 * pagemap walk, hold thousands of lent pages at once, or hand pages over in
 * bulk on destroy. Here a 256 MiB region is populated, cloned, changed at
 * 1% of its pages at random, cloned again, and so on for several
 * generations, with some generations read in full, some never read, and
 * destroys in an order that forces hand-overs. Every page of every live
 * region is checked against a memcpy model at the end of each generation.
 */
#include "harness.h"

#define REGION_MIB 256
#define GENERATIONS 6

struct snapshot {
	cowmem_region *region;
	unsigned char *model;
};

static void check_snapshot(const struct snapshot *s, size_t size, const char *what)
{
	CHECK_BYTES(cowmem_data(s->region), s->model, size, what);
}

static void generations(void)
{
	uint64_t seed = test_seed;
	size_t page = test_page_size();
	size_t size = (size_t)REGION_MIB << 20, pages = size / page;
	test_rng rng = { test_substream(seed, 1) };
	struct snapshot live = { test_create_or_skip(size), malloc(size) };
	struct snapshot history[GENERATIONS] = { 0 };

	CHECK(live.model != NULL, "malloc");
	unsigned char *data = cowmem_data(live.region);
	test_rng_fill(&rng, live.model, size);
	memcpy(data, live.model, size);

	for (int g = 0; g < GENERATIONS; g++) {
		history[g].region = cowmem_clone(live.region);
		CHECK(history[g].region != NULL, "clone %d: %s", g, strerror(errno));
		history[g].model = malloc(size);
		CHECK(history[g].model != NULL, "malloc");
		memcpy(history[g].model, live.model, size);

		/* Change 1% of the pages at random, a few bytes each. */
		for (size_t i = 0; i < pages / 100; i++) {
			size_t offset = test_rng_below(&rng, pages) * page +
					test_rng_below(&rng, page - 8);
			uint64_t value = test_rng_next(&rng);
			memcpy(data + offset, &value, sizeof value);
			memcpy(live.model + offset, &value, sizeof value);
		}
		/* Read every other generation in full; leave the rest to be
		 * handed pages when the source writes or is destroyed. */
		if (g % 2 == 0)
			check_snapshot(&history[g], size, "a snapshot read right after the writes");
		check_snapshot(&live, size, "the live region");
	}

	/* A clone of an old snapshot, then destroy the live region and every
	 * other snapshot, oldest first: lent pages must move to survivors. */
	struct snapshot grandchild = { cowmem_clone(history[1].region), history[1].model };
	CHECK(grandchild.region != NULL, "clone of a snapshot: %s", strerror(errno));
	CHECK(cowmem_destroy(live.region) == 0, "destroy live: %s", strerror(errno));
	for (int g = 0; g < GENERATIONS; g += 2) {
		CHECK(cowmem_destroy(history[g].region) == 0, "destroy %d", g);
		history[g].region = NULL;
	}
	for (int g = 1; g < GENERATIONS; g += 2)
		check_snapshot(&history[g], size, "a snapshot after its elders were destroyed");
	check_snapshot(&grandchild, size, "a clone of a snapshot");

	CHECK(cowmem_destroy(grandchild.region) == 0, "destroy grandchild");
	for (int g = 1; g < GENERATIONS; g += 2)
		CHECK(cowmem_destroy(history[g].region) == 0, "destroy %d", g);
	for (int g = 0; g < GENERATIONS; g++)
		free(history[g].model);
	free(live.model);
	printf("large_lending: %d generations of a %d MiB region, every page checked\n",
	       GENERATIONS, REGION_MIB);
}

static const struct test_case cases[] = {
	TEST_CASE("generations", generations),
};

int main(int argc, char **argv)
{
	test_seed_init(argc, argv);
	return test_main(argc, argv, cases, TEST_CASE_COUNT(cases));
}
