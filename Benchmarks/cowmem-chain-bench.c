/*
 * cowmem-chain-bench.c - clones of clones, deep.
 *
 * A chain: region 0 is created with every page written; region d + 1 is a
 * clone of region d, which then writes one byte into a page of its own
 * (page d mod pages, so every level writes a page its parent did not).
 * Build time is the whole chain's, clones and writes; then the chain is
 * destroyed root first (the order that leaves every level's versions
 * referenced longest). Each depth runs in a child process of its own, and
 * the deepest level is checked against what it must hold before the
 * destroy (a mismatch stops the program).
 *
 * Usage: cowmem-chain-bench [--pages 10000] [--depths 1000,10000]
 * A benchmark, not a test: it bounds nothing and exits 0 unless it cannot
 * run or a level holds the wrong bytes.
 */
#define _GNU_SOURCE
#include <cowmem.h>

#include "bench_util.h"

#include <sys/wait.h>

struct result {
	double build, destroy;
	long long memory_kib; /* RssAnon + own memfd blocks at the end of the build */
};

static struct result run_chain(size_t pages, size_t depth)
{
	size_t page = cowmem_page_size(), size = pages * page;
	cowmem_region **level = calloc(depth + 1, sizeof *level);
	struct result result = { 0, 0, 0 };

	if (!level)
		die("out of memory");
	double start = now_seconds();
	if (!(level[0] = cowmem_create(size)))
		die("cowmem_create: %s", strerror(errno));
	memset(cowmem_data(level[0]), 0x5a, size);
	for (size_t d = 1; d <= depth; d++) {
		if (!(level[d] = cowmem_clone(level[d - 1])))
			die("cowmem_clone at depth %zu: %s", d, strerror(errno));
		unsigned char *data = cowmem_data(level[d]);
		data[((d - 1) % pages) * page + (d - 1) / pages % page] = (unsigned char)d;
	}
	result.build = now_seconds() - start;
	result.memory_kib = proc_kib_field("/proc/self/status", "RssAnon") / 1024 +
			    own_memfd_bytes() / 1024;
	/* The deepest level holds every level's byte (the last to write each
	 * byte wins) and 0x5a elsewhere. */
	const unsigned char *last = cowmem_data(level[depth]);
	unsigned char *expected = malloc(size);
	if (!expected)
		die("out of memory");
	memset(expected, 0x5a, size);
	for (size_t d = 1; d <= depth; d++)
		expected[((d - 1) % pages) * page + (d - 1) / pages % page] = (unsigned char)d;
	if (memcmp(expected, last, size) != 0)
		die("depth %zu: the deepest level holds the wrong bytes", depth);
	free(expected);
	start = now_seconds();
	for (size_t d = 0; d <= depth; d++)
		if (cowmem_destroy(level[d]) < 0)
			die("cowmem_destroy at depth %zu: %s", d, strerror(errno));
	result.destroy = now_seconds() - start;
	free(level);
	return result;
}

int main(int argc, char **argv)
{
	size_t pages = 10000, depths[8] = { 1000, 10000 }, depth_count = 2;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--pages") == 0 && i + 1 < argc) {
			pages = strtoul(argv[++i], NULL, 10);
		} else if (strcmp(argv[i], "--depths") == 0 && i + 1 < argc) {
			depth_count = 0;
			for (char *save, *w = strtok_r(argv[++i], ",", &save); w && depth_count < 8;
			     w = strtok_r(NULL, ",", &save))
				depths[depth_count++] = strtoul(w, NULL, 10);
		} else {
			die("usage: cowmem-chain-bench [--pages N] [--depths D1,D2,...]");
		}
	}
	if (pages == 0 || depth_count == 0)
		die("nothing to measure");
	char load[128];
	load_average(load, sizeof load);
	printf("# CowMem: a chain of clones of clones, each writing one page\n\n");
	printf("- libcowmem %u.%u.%u, backend %s (features: %s)\n", cowmem_version() >> 16,
	       (cowmem_version() >> 8) & 0xff, cowmem_version() & 0xff, cowmem_backend(),
	       cowmem_features());
	printf("- region of %zu pages (%.1f MiB); load average at the start: %s\n\n", pages,
	       (double)pages * (double)cowmem_page_size() / (double)MIB, load);
	printf("| depth | build s | destroy (root first) s | destroy ÷ build | build ÷ first depth's | memory MiB (RssAnon + page file) |\n");
	printf("|---:|---:|---:|---:|---:|---:|\n");
	double first_build = 0;
	for (size_t i = 0; i < depth_count; i++) {
		struct result *shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE,
					     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (shared == MAP_FAILED)
			die("mmap: %s", strerror(errno));
		fflush(stdout);
		pid_t pid = fork();
		if (pid < 0)
			die("fork: %s", strerror(errno));
		if (pid == 0) {
			*shared = run_chain(pages, depths[i]);
			_exit(0);
		}
		int status;
		if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
			die("the run at depth %zu failed", depths[i]);
		if (i == 0)
			first_build = shared->build;
		printf("| %zu | %s | %s | %.2f× | %.1f× | %.0f |\n", depths[i], num(shared->build),
		       num(shared->destroy), shared->destroy / shared->build,
		       shared->build / first_build, (double)shared->memory_kib / 1024.0);
		munmap(shared, sizeof *shared);
	}
	return 0;
}
