/*
 * probe.c - the runtime probe: cowmem_version() and cowmem_feature_mask().
 *
 * The version is the header's; every bit of the mask stands for exactly
 * the name cowmem_features() lists, also with each feature masked by
 * COWMEM_DISABLE (in fresh processes: the library starts once per
 * process); bad input fails with EINVAL and leaves the mask 0.
 */
#include "test_util.h"
#include "process_util.h"

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

/* This program again, fresh (the library starts once per process), with
 * COWMEM_DISABLE=disable and the argument; its exit status. */
static int run_fresh(const char *disable, const char *argument)
{
	fflush(stdout);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		setenv("COWMEM_DISABLE", disable, 1);
		execl("/proc/self/exe", "probe", argument, (char *)NULL);
		_exit(127);
	}
	int status = wait_bounded(pid, 60);
	CHECK(status != -1, "the child with COWMEM_DISABLE=%s hung", disable);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* --masked=NAME, in the fresh child: the name's bit is clear, and the rest
 * still matches the list. */
static int masked_child(const char *name)
{
	uint64_t mask = ~(uint64_t)0;
	if (cowmem_feature_mask(&mask) < 0)
		return 2;
	check_mask_matches_list();
	for (size_t i = 0; i < NAME_COUNT; i++)
		if (strcmp(names[i].name, name) == 0)
			return mask & names[i].bit ? 1 : 0;
	return 3;
}

/* --unknown, with a COWMEM_DISABLE name that does not exist. */
static int unknown_child(void)
{
	uint64_t mask = 1;
	if (!freopen("/dev/null", "w", stderr))
		return 2;
	int rc = cowmem_feature_mask(&mask);
	return rc == -1 && errno == EINVAL && mask == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strncmp(argv[1], "--masked=", 9) == 0)
		return masked_child(argv[1] + 9);
	if (argc == 2 && strcmp(argv[1], "--unknown") == 0)
		return unknown_child();
	test_seed_init(argc, argv);

	CHECK(cowmem_version() == COWMEM_VERSION, "cowmem_version() %#x, header %#x",
	      cowmem_version(), COWMEM_VERSION);
	CHECK(COWMEM_VERSION == ((COWMEM_VERSION_MAJOR << 16) | (COWMEM_VERSION_MINOR << 8) |
				 COWMEM_VERSION_PATCH),
	      "COWMEM_VERSION does not pack the three numbers");
	printf("ok   cowmem_version() is %u.%u.%u, the header's\n", cowmem_version() >> 16,
	       (cowmem_version() >> 8) & 0xff, cowmem_version() & 0xff);

	errno = 0;
	CHECK(cowmem_feature_mask(NULL) == -1 && errno == EINVAL,
	      "cowmem_feature_mask(NULL): expected -1/EINVAL, got errno %d", errno);
	int set = check_mask_matches_list();
	printf("ok   cowmem_feature_mask() matches \"%s\" (%d bits)\n", cowmem_features(), set);

	const char *inherited = getenv("COWMEM_DISABLE");
	for (size_t i = 0; i < NAME_COUNT; i++) {
		if (strcmp(names[i].name, "device") == 0 || strcmp(names[i].name, "engine-v2") == 0)
			continue; /* not maskable by name */
		char disable[256], argument[64];
		snprintf(disable, sizeof disable, "%s%s%s", inherited ? inherited : "",
			 inherited && *inherited ? "," : "", names[i].name);
		snprintf(argument, sizeof argument, "--masked=%s", names[i].name);
		int rc = run_fresh(disable, argument);
		CHECK(rc == 0, "with COWMEM_DISABLE=%s: %s", disable,
		      rc == 1 ? "its bit is still set" : "the child failed");
	}
	printf("ok   each COWMEM_DISABLE name clears its bit\n");

	CHECK(run_fresh("no-such-feature", "--unknown") == 0,
	      "an unknown COWMEM_DISABLE name: cowmem_feature_mask must fail with EINVAL "
	      "and a zero mask");
	printf("ok   an unknown COWMEM_DISABLE name: -1, EINVAL, mask 0\n");
	return TEST_EXIT_PASS;
}
