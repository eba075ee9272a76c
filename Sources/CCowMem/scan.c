/*
 * Page table scans: which pages of a range are a mapping's own (anonymous:
 * written, or filled by the server) and which map the page cache.
 *
 * PAGEMAP_SCAN (6.7+) walks the page tables in the kernel, skips empty ones
 * and returns matching runs, so a scan costs the pages mapped, not the
 * size. Without it, /proc/self/pagemap is read, 8 bytes per page.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "engine.h"

#define SCAN_BATCH 4096 /* page_region entries / pagemap entries per call */

static const uint64_t PM_PRESENT = 1ull << 63, PM_SWAPPED = 1ull << 62, PM_FILE = 1ull << 61,
		      PM_EXCLUSIVE = 1ull << 56;

/* Is this pagemap entry an anonymous page (not the shared zero page)? */
static bool entry_is_own(uint64_t entry)
{
	if (!(entry & (PM_PRESENT | PM_SWAPPED)) || (entry & PM_FILE))
		return false;
	if (entry & PM_SWAPPED)
		/* No swap here; a swapped entry on shmem-backed VMAs can be a
		 * uffd-wp pte marker, which holds nothing. */
		return (entry & (1ull << 57)) == 0;
	uint64_t pfn = entry & ((1ull << 55) - 1);
	if (pfn != 0 && cowmem__engine.zero_pfn != 0)
		return pfn != cowmem__engine.zero_pfn;
	return (entry & PM_EXCLUSIVE) != 0; /* the zero page is never exclusive */
}

static bool entry_is_file(uint64_t entry)
{
	return (entry & PM_PRESENT) && (entry & PM_FILE);
}

/* With file_pages, own pages are reported and the pages mapping the page
 * cache counted there. */
static int scan_file(char *start, size_t pages, bool want_file, cowmem__run_fn *fn, void *ctx,
		     size_t *file_pages)
{
	static uint64_t entries[SCAN_BATCH]; /* under engine.lock */
	size_t run_start = SIZE_MAX;

	for (size_t base = 0; base < pages; base += SCAN_BATCH) {
		size_t n = pages - base < SCAN_BATCH ? pages - base : SCAN_BATCH;
		off_t offset = (off_t)((uintptr_t)start / cowmem__engine.page_size + base) *
			       (off_t)sizeof(uint64_t);
		if (pread(cowmem__engine.pagemap, entries, n * sizeof(uint64_t), offset) !=
		    (ssize_t)(n * sizeof(uint64_t)))
			return errno ? -errno : -EIO;
		for (size_t k = 0; k < n; k++) {
			if (file_pages && entry_is_file(entries[k]))
				++*file_pages;
			bool match = want_file ? entry_is_file(entries[k]) : entry_is_own(entries[k]);
			if (match && run_start == SIZE_MAX)
				run_start = base + k;
			if (!match && run_start != SIZE_MAX) {
				int rc = fn(run_start, base + k, ctx);
				if (rc < 0)
					return rc;
				run_start = SIZE_MAX;
			}
		}
	}
	return run_start != SIZE_MAX ? fn(run_start, pages, ctx) : 0;
}

static struct page_region shared_vec[SCAN_BATCH]; /* under engine.lock */

static int scan_ioctl(char *start_addr, size_t pages, bool want_file, cowmem__run_fn *fn,
		      void *ctx, size_t max_pages, struct page_region *vec, size_t *file_pages)
{
	uintptr_t base = (uintptr_t)start_addr, start = base,
		  end = base + pages * cowmem__engine.page_size;

	while (start < end) {
		struct pm_scan_arg arg = {
			.size = sizeof arg,
			.start = start,
			.end = end,
			.vec = (uintptr_t)vec,
			.vec_len = SCAN_BATCH,
			.return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_FILE |
				       PAGE_IS_PFNZERO,
			.max_pages = max_pages,
		};
		if (file_pages) {
			/* Everything there; the runs come apart by kind. */
			arg.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
		} else if (want_file) {
			arg.category_mask = PAGE_IS_FILE | PAGE_IS_PRESENT;
		} else {
			/* not a page cache page, not the zero page, and there */
			arg.category_mask = PAGE_IS_FILE | PAGE_IS_PFNZERO;
			arg.category_inverted = PAGE_IS_FILE | PAGE_IS_PFNZERO;
			arg.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
		}
		int n = ioctl(cowmem__engine.pagemap, PAGEMAP_SCAN, &arg);
		if (n < 0)
			return -errno;
		/* A call that returns fewer runs than it had room for walked
		 * the whole range. One that filled the vector may have stopped
		 * inside its last run; 6.18 can also report a walk_end behind
		 * runs it already returned (it is set only when an internal
		 * chunk stops early), so go on from the later of the two. */
		bool complete = (size_t)n < SCAN_BATCH;
		uintptr_t next = arg.walk_end > start ? arg.walk_end : end;
		if (n > 0 && vec[n - 1].end > next)
			next = vec[n - 1].end;
		uintptr_t walked = complete || next > end ? end : next;
		for (int i = 0; i < n; i++) {
			uintptr_t run_start = vec[i].start > start ? vec[i].start : start;
			uintptr_t run_end = vec[i].end < walked ? vec[i].end : walked;
			if (run_start >= run_end)
				continue;
			/* A swapped entry without a page is a uffd-wp marker. */
			if (!want_file && !(vec[i].categories & PAGE_IS_PRESENT))
				continue;
			if (file_pages && (vec[i].categories & (PAGE_IS_FILE | PAGE_IS_PFNZERO))) {
				if (vec[i].categories & PAGE_IS_FILE)
					*file_pages += (run_end - run_start) / cowmem__engine.page_size;
				continue;
			}
			int rc = fn((run_start - base) / cowmem__engine.page_size,
				    (run_end - base) / cowmem__engine.page_size, ctx);
			if (rc < 0)
				return rc;
		}
		if (complete || walked <= start || (max_pages && n > 0))
			break;
		start = walked;
	}
	return 0;
}

bool cowmem__sees_page_tables(void)
{
	return cowmem__engine.pagemap >= 0 && cowmem__engine.self_mem >= 0;
}

/* Without /proc nothing tells own pages from the others: every page is a
 * candidate, and the callers compare it (its content is the region's
 * memory, which no registration makes wait for the server). */
static int scan_blind(size_t pages, cowmem__run_fn *fn, void *ctx)
{
	return pages > 0 ? fn(0, pages, ctx) : 0;
}

int cowmem__scan_own(char *start, size_t pages, cowmem__run_fn *fn, void *ctx)
{
	return cowmem__scan_own_counting(start, pages, fn, ctx, NULL);
}

int cowmem__scan_own_counting(char *start, size_t pages, cowmem__run_fn *fn, void *ctx,
			       size_t *file_pages)
{
	if (!cowmem__sees_page_tables())
		return scan_blind(pages, fn, ctx);
	if (cowmem__engine.features & FEATURE_PAGEMAP_SCAN)
		return scan_ioctl(start, pages, false, fn, ctx, 0, shared_vec, file_pages);
	return scan_file(start, pages, false, fn, ctx, file_pages);
}

int cowmem__scan_own_unlocked(char *start, size_t pages, cowmem__run_fn *fn, void *ctx,
			       size_t *file_pages)
{
	if (!(cowmem__engine.features & FEATURE_PAGEMAP_SCAN))
		return -ENOTSUP;
	struct page_region *vec = malloc(SCAN_BATCH * sizeof *vec);
	if (!vec)
		return -ENOMEM;
	int rc = scan_ioctl(start, pages, false, fn, ctx, 0, vec, file_pages);
	free(vec);
	return rc;
}

static int stop_at_first(size_t first, size_t end, void *ctx)
{
	(void)first;
	(void)end;
	*(bool *)ctx = true;
	return -ECANCELED; /* enough: stop the file walk */
}

/* Does the mapping have any page of its own? The kernel's walk stops at
 * the first one (max_pages), which matters: walking the page tables of a
 * region that wrote 1% of 1 GiB costs about a millisecond. */
int cowmem__scan_has_own(char *start, size_t pages, bool *found)
{
	*found = !cowmem__sees_page_tables() && pages > 0;
	if (!cowmem__sees_page_tables())
		return 0;
	int rc = cowmem__engine.features & FEATURE_PAGEMAP_SCAN
			 ? scan_ioctl(start, pages, false, stop_at_first, found, 1, shared_vec, NULL)
			 : scan_file(start, pages, false, stop_at_first, found, NULL);
	return rc == -ECANCELED ? 0 : rc;
}

int cowmem__scan_file_pages(char *start, size_t pages, cowmem__run_fn *fn, void *ctx)
{
	if (!cowmem__sees_page_tables())
		return 0; /* unknown: none reported */
	if (cowmem__engine.features & FEATURE_PAGEMAP_SCAN)
		return scan_ioctl(start, pages, true, fn, ctx, 0, shared_vec, NULL);
	return scan_file(start, pages, true, fn, ctx, NULL);
}
