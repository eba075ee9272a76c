/*
 * probe.c - the runtime probe: cowmem_version() and cowmem_feature_mask().
 *
 * The version is the header's; every bit of the mask stands for exactly
 * the name cowmem_features() lists, also with each feature masked by
 * COWMEM_DISABLE (each case meets a library that has not started). Its
 * errnos (NULL, an unknown COWMEM_DISABLE name) are cases of errnos.c.
 */
#include "harness.h"

static const struct {
	const char *name;
	uint64_t bit;
} names[] = {
	{ "minor", COWMEM_FEATURE_MINOR },
	{ "wp", COWMEM_FEATURE_WP },
	{ "poison", COWMEM_FEATURE_POISON },
	{ "dontunmap", COWMEM_FEATURE_DONTUNMAP },
	{ "zero-pfn", COWMEM_FEATURE_ZERO_PFN },
	{ "pagemap-scan", COWMEM_FEATURE_PAGEMAP_SCAN },
	{ "device", COWMEM_FEATURE_DEVICE },
	{ "engine-v2", COWMEM_FEATURE_ENGINE_V2 },
	{ "folds", COWMEM_FEATURE_FOLDS },
};
#define NAME_COUNT (sizeof names / sizeof names[0])

/* The mask and the list agree, bit by bit; returns how many are set. */
static int check_mask_matches_list(void)
{
	uint64_t mask = ~(uint64_t)0, known = 0;
	const char *list = cowmem_features();

	CHECK(list, "cowmem_features: %s", strerror(errno));
	CHECK(cowmem_feature_mask(&mask) == 0, "cowmem_feature_mask: %s", strerror(errno));
	int set = 0;
	for (size_t i = 0; i < NAME_COUNT; i++) {
		bool listed = test_feature_listed(list, names[i].name);
		bool bit = (mask & names[i].bit) != 0;
		CHECK(listed == bit, "feature %s: listed in \"%s\": %d, bit in %#llx: %d",
		      names[i].name, list, listed, (unsigned long long)mask, bit);
		known |= names[i].bit;
		set += bit;
	}
	CHECK((mask & ~known) == 0, "unknown bits in %#llx", (unsigned long long)mask);
	return set;
}

static void version(void)
{
	CHECK(cowmem_version() == COWMEM_VERSION, "cowmem_version() %#x, header %#x",
	      cowmem_version(), COWMEM_VERSION);
	CHECK(COWMEM_VERSION == ((COWMEM_VERSION_MAJOR << 16) | (COWMEM_VERSION_MINOR << 8) |
				 COWMEM_VERSION_PATCH),
	      "COWMEM_VERSION does not pack the three numbers");
	printf("cowmem_version() is %u.%u.%u, the header's\n", cowmem_version() >> 16,
	       (cowmem_version() >> 8) & 0xff, cowmem_version() & 0xff);
}

static void mask_matches_list(void)
{
	int set = check_mask_matches_list();
	printf("cowmem_feature_mask() matches \"%s\" (%d bits)\n", cowmem_features(), set);
}

/* With the feature masked by COWMEM_DISABLE (on top of what the environment
 * masks already) its bit is clear, and the rest still matches the list. */
static void masked(const char *name)
{
	const char *inherited = getenv("COWMEM_DISABLE");
	char disable[256];
	snprintf(disable, sizeof disable, "%s%s%s", inherited ? inherited : "",
		 inherited && *inherited ? "," : "", name);
	setenv("COWMEM_DISABLE", disable, 1); /* before the library starts */
	uint64_t mask = ~(uint64_t)0;
	CHECK(cowmem_feature_mask(&mask) == 0, "cowmem_feature_mask with COWMEM_DISABLE=%s: %s",
	      disable, strerror(errno));
	check_mask_matches_list();
	for (size_t i = 0; i < NAME_COUNT; i++)
		if (strcmp(names[i].name, name) == 0)
			CHECK(!(mask & names[i].bit), "with COWMEM_DISABLE=%s its bit is still set",
			      disable);
}

/* Every name but device, engine-v2 and folds, which are not maskable by name. */
static void masked_minor(void) { masked("minor"); }
static void masked_wp(void) { masked("wp"); }
static void masked_poison(void) { masked("poison"); }
static void masked_dontunmap(void) { masked("dontunmap"); }
static void masked_zero_pfn(void) { masked("zero-pfn"); }
static void masked_pagemap_scan(void) { masked("pagemap-scan"); }

static const struct test_case cases[] = {
	TEST_CASE("version", version),
	TEST_CASE("mask-matches-list", mask_matches_list),
	TEST_CASE("masked-minor", masked_minor),
	TEST_CASE("masked-wp", masked_wp),
	TEST_CASE("masked-poison", masked_poison),
	TEST_CASE("masked-dontunmap", masked_dontunmap),
	TEST_CASE("masked-zero-pfn", masked_zero_pfn),
	TEST_CASE("masked-pagemap-scan", masked_pagemap_scan),
};

int main(int argc, char **argv)
{
	return test_main(argc, argv, cases, TEST_CASE_COUNT(cases));
}
