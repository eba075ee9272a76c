/*
 * destroy_orders.c - trees of clones destroyed in every interesting order.
 *
 * Shapes: chains (depth 12 and 40), a fan of 16 clones of one region, a
 * bushy tree (3 children per node, 3 levels), and a fan of chains. Every
 * level is written: each clone changes some pages after it is made, and each
 * source changes pages after being cloned, so every region holds a mix of
 * its own pages, pages inherited from some ancestor, and pages nobody wrote.
 *
 * Orders: root first (creation order), leaves first (reverse creation
 * order), middle first (nodes nearest the middle depth first), and random
 * permutations from the printed seed, half of them with writes to random
 * survivors between destroys. No region is read before the first destroy, so
 * the survivors' inherited pages are still unfilled when their ancestors go.
 * After every destroy, every survivor is compared byte for byte with its
 * memcpy model.
 *
 * Options: --seed=N (COWMEM_TEST_SEED), --permutations=N (default 12).
 */
#include "harness.h"

#include <stdbool.h>

#define MAX_NODES 64

struct node {
	cowmem_region *region;
	unsigned char *model;
	int parent;
	int depth;
	bool alive;
};

struct tree {
	struct node nodes[MAX_NODES];
	int count;
	size_t size;
	int max_depth;
	const char *shape;
	const char *order;
	test_rng rng;
};

static size_t page;
static unsigned long long bytes_compared, destroys_checked, trees_built;

/* ---- Building ------------------------------------------------------------- */

/* Random bytes over [offset, offset+length) of node n, region and model. */
static void write_random(struct tree *t, int n, size_t offset, size_t length)
{
	struct node *node = &t->nodes[n];
	unsigned char *bytes = (unsigned char *)cowmem_data(node->region) + offset;
	test_rng_fill(&t->rng, bytes, length);
	memcpy(node->model + offset, bytes, length);
}

/* A few writes: one whole page, one across a page boundary, one small. */
static void scribble(struct tree *t, int n)
{
	size_t pages = t->size / page;
	size_t whole = (size_t)test_rng_below(&t->rng, pages);
	write_random(t, n, whole * page, page);
	size_t boundary = page * (1 + (size_t)test_rng_below(&t->rng, pages - 1));
	size_t back = 1 + (size_t)test_rng_below(&t->rng, page);
	size_t forward = 1 + (size_t)test_rng_below(&t->rng, page);
	write_random(t, n, boundary - back, back + forward);
	write_random(t, n, (size_t)test_rng_below(&t->rng, t->size - 8), 8);
}

static int add_root(struct tree *t)
{
	int n = t->count++;
	CHECK(n < MAX_NODES, "too many nodes");
	struct node *node = &t->nodes[n];
	node->region = cowmem_create(t->size);
	CHECK(node->region != NULL, "cowmem_create(%zu): %s", t->size,
	      strerror(errno));
	node->model = calloc(1, t->size);
	CHECK(node->model != NULL, "calloc");
	node->parent = -1;
	node->depth = 0;
	node->alive = true;
	/* Fill most pages; leave every fourth one never written (zero). */
	for (size_t p = 0; p < t->size / page; p++)
		if (p % 4 != 3)
			write_random(t, n, p * page, page);
	return n;
}

/* Clones node `parent`, then writes in the clone and in the parent. */
static int add_clone(struct tree *t, int parent)
{
	int n = t->count++;
	CHECK(n < MAX_NODES, "too many nodes");
	struct node *node = &t->nodes[n];
	node->region = cowmem_clone(t->nodes[parent].region);
	CHECK(node->region != NULL, "cowmem_clone of node %d (%s): %s", parent,
	      t->shape, strerror(errno));
	CHECK(cowmem_size(node->region) == t->size, "clone size %zu",
	      cowmem_size(node->region));
	node->model = malloc(t->size);
	CHECK(node->model != NULL, "malloc");
	memcpy(node->model, t->nodes[parent].model, t->size);
	node->parent = parent;
	node->depth = t->nodes[parent].depth + 1;
	node->alive = true;
	if (node->depth > t->max_depth)
		t->max_depth = node->depth;
	scribble(t, n);
	scribble(t, parent);
	return n;
}

static void tree_init(struct tree *t, const char *shape, size_t pages,
		      uint64_t seed)
{
	memset(t, 0, sizeof *t);
	t->shape = shape;
	t->size = pages * page;
	t->rng.state = seed;
	trees_built++;
}

static void build_chain(struct tree *t, int depth)
{
	int n = add_root(t);
	for (int level = 0; level < depth; level++)
		n = add_clone(t, n);
}

static void build_fan(struct tree *t, int width)
{
	int root = add_root(t);
	for (int i = 0; i < width; i++)
		add_clone(t, root);
	scribble(t, root);
}

static void build_bushy(struct tree *t, int n, int levels, int width)
{
	if (levels == 0)
		return;
	for (int i = 0; i < width; i++)
		build_bushy(t, add_clone(t, n), levels - 1, width);
}

static void build_fan_of_chains(struct tree *t, int width, int depth)
{
	int root = add_root(t);
	for (int i = 0; i < width; i++) {
		int n = root;
		for (int level = 0; level < depth; level++)
			n = add_clone(t, n);
	}
}

/* ---- Destroying ------------------------------------------------------------- */

static void check_survivors(struct tree *t, int destroyed_so_far, int last)
{
	for (int i = 0; i < t->count; i++) {
		struct node *node = &t->nodes[i];
		if (!node->alive)
			continue;
		const unsigned char *data = cowmem_data(node->region);
		if (memcmp(data, node->model, t->size) != 0) {
			char what[200];
			snprintf(what, sizeof what, "%s tree, %s order: node %d "
				 "(depth %d, parent %d) after %d destroys, the "
				 "last of node %d (depth %d)", t->shape, t->order,
				 i, node->depth, node->parent, destroyed_so_far,
				 last, t->nodes[last].depth);
			CHECK_BYTES(data, node->model, t->size, what);
		}
		bytes_compared += t->size;
	}
	destroys_checked++;
}

static void destroy_in_order(struct tree *t, const size_t *order,
			     bool write_between)
{
	for (int k = 0; k < t->count; k++) {
		int n = (int)order[k];
		struct node *node = &t->nodes[n];
		CHECK(node->alive, "order names node %d twice", n);
		CHECK(cowmem_destroy(node->region) == 0,
		      "cowmem_destroy of node %d (%s, %s order): %s", n, t->shape,
		      t->order, strerror(errno));
		node->alive = false;
		free(node->model);
		check_survivors(t, k + 1, n);
		if (write_between && k + 1 < t->count) {
			/* Pick a survivor at random and change it. */
			int survivor;
			do
				survivor = (int)test_rng_below(&t->rng, t->count);
			while (!t->nodes[survivor].alive);
			scribble(t, survivor);
		}
	}
}

typedef void (*builder)(struct tree *t);

static void shape_chain12(struct tree *t) { build_chain(t, 12); }
static void shape_chain40(struct tree *t) { build_chain(t, 40); }
static void shape_fan16(struct tree *t) { build_fan(t, 16); }
static void shape_bushy(struct tree *t) { build_bushy(t, add_root(t), 3, 3); }
static void shape_fan_of_chains(struct tree *t) { build_fan_of_chains(t, 4, 5); }

static const struct {
	const char *name;
	builder build;
	size_t pages;
} shapes[] = {
	{ "chain of depth 12", shape_chain12, 32 },
	{ "chain of depth 40", shape_chain40, 8 },
	{ "fan of 16", shape_fan16, 32 },
	{ "bushy 3x3x3", shape_bushy, 16 },
	{ "fan of 4 chains of 5", shape_fan_of_chains, 16 },
};

static int distance_from_middle(const struct tree *t, int n)
{
	int d = 2 * t->nodes[n].depth - t->max_depth;
	return d < 0 ? -d : d;
}

/* Runs one shape in one order. `kind`: 0 root first, 1 leaves first,
 * 2 middle first, 3 random, 4 random with writes between destroys. */
static void run(int shape, int kind, uint64_t seed)
{
	static const char *const kinds[] = { "root-first", "leaves-first",
					     "middle-first", "random",
					     "random+writes" };
	struct tree *t = malloc(sizeof *t);
	CHECK(t != NULL, "malloc");
	tree_init(t, shapes[shape].name, shapes[shape].pages, seed);
	t->order = kinds[kind];
	shapes[shape].build(t);

	size_t order[MAX_NODES];
	for (int i = 0; i < t->count; i++)
		order[i] = (size_t)i;
	switch (kind) {
	case 0:
		break;
	case 1:
		for (int i = 0; i < t->count; i++)
			order[i] = (size_t)(t->count - 1 - i);
		break;
	case 2:
		/* Stable insertion sort by distance from the middle depth. */
		for (int i = 1; i < t->count; i++) {
			size_t held = order[i];
			int j = i;
			while (j > 0 && distance_from_middle(t, (int)order[j - 1]) >
					distance_from_middle(t, (int)held)) {
				order[j] = order[j - 1];
				j--;
			}
			order[j] = held;
		}
		break;
	default:
		test_rng_shuffle(&t->rng, order, (size_t)t->count);
		break;
	}
	destroy_in_order(t, order, kind == 4);
	free(t);
}

static uint64_t seed, permutations = 12;

/* Every order for one shape: the three fixed ones, then `permutations`
 * random ones (every other with writes between destroys). */
static void shape(int s)
{
	cowmem_destroy(test_create_or_skip(page));
	for (int kind = 0; kind < 3; kind++)
		run(s, kind, test_substream(seed, (uint64_t)(s * 16 + kind)));
	for (uint64_t p = 0; p < permutations; p++)
		run(s, 3 + (int)(p % 2), test_substream(seed, (uint64_t)s << 32 | (1000 + p)));
	printf("%s: root-first, leaves-first, middle-first, %" PRIu64 " random orders; "
	       "%llu trees, %llu destroys each followed by a full check of the survivors, "
	       "%llu bytes compared, 0 mismatches\n", shapes[s].name, permutations,
	       trees_built, destroys_checked, bytes_compared);
	CHECK(bytes_compared > 0, "something was compared");
}

static void chain12(void) { shape(0); }
static void chain40(void) { shape(1); }
static void fan16(void) { shape(2); }
static void bushy(void) { shape(3); }
static void fan_of_chains(void) { shape(4); }

static const struct test_case cases[] = {
	TEST_CASE("chain-of-12", chain12),
	TEST_CASE("chain-of-40", chain40),
	TEST_CASE("fan-of-16", fan16),
	TEST_CASE("bushy-3x3x3", bushy),
	TEST_CASE("fan-of-4-chains-of-5", fan_of_chains),
};

int main(int argc, char **argv)
{
	page = test_page_size();
	seed = test_seed_init(argc, argv);
	test_option(argc, argv, "permutations", "COWMEM_TEST_PERMUTATIONS", &permutations);
	return test_main(argc, argv, cases, TEST_CASE_COUNT(cases));
}
