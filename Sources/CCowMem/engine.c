/*
 * The region engine: layers, regions, pending page versions, and how each
 * fault is resolved. ARCHITECTURE.md explains the design; the comments here
 * say why the code is the way it is.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "v1_names.h"

#define HUGE_ALIGN ((size_t)2 << 20) /* page-table moves are cheapest at PMD alignment */
#define FILL_WINDOW 64              /* pages mapped per base fault (fault-around) */
#define PAGEMAP_BATCH 8192          /* pagemap entries read per pread */

static uint64_t pagemap_buffer[PAGEMAP_BATCH];

/* ---- fork() ------------------------------------------------------------- */

static void free_lent(size_t page, void *value, void *ctx)
{
	struct pending *p = value;
	(void)page;
	(void)ctx;
	free(p->waiters);
	free(p);
}

/* In the child (init.c's handler): every region of this engine becomes an
 * orphan, its memory inaccessible and its layer's descriptors closed. */
void cowmem__v1_fork_child(void)
{
	for (size_t i = 0; i < cowmem__engine.region_count; i++) {
		struct cowmem_region *r = cowmem__engine.regions[i];
		cowmem__page_map_each(&r->out, free_lent, NULL);
		cowmem__page_map_free(&r->out);
		cowmem__page_map_free(&r->in);
		r->orphan = true;
		/* Keep the address taken (and inaccessible) until the orphan
		 * is destroyed, so an old pointer faults instead of reading a
		 * region created later at the same place. */
		(void)mmap(r->data, r->size, PROT_NONE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
		cowmem__page_map_free(&r->filled);
		if (r->base->fd >= 0) {
			close(r->base->fd);
			r->base->fd = -1;
		}
		if (r->base->source >= 0) {
			close(r->base->source);
			r->base->source = -1;
		}
	}
	cowmem__engine.region_count = 0;
}

/* ---- Layers ------------------------------------------------------------- */

struct layer *cowmem__v1_layer_create(size_t size)
{
	struct layer *layer = calloc(1, sizeof *layer);

	if (!layer)
		return NULL;
	int fd = cowmem__memfd_for_pages();
	if (fd < 0)
		goto err_free;
	if (ftruncate(fd, (off_t)size) < 0) {
		if (errno == EFBIG || errno == EINVAL)
			errno = ENOMEM;
		goto err_close;
	}
	/* A region's size never changes; sealing keeps anyone holding the
	 * descriptor from truncating pages out from under a mapping (SIGBUS). */
	(void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
	layer->fd = fd;
	layer->size = size;
	layer->refs = 1;
	layer->source = -1;
	return layer;

err_close:
	close(fd);
err_free:
	free(layer);
	return NULL;
}

void cowmem__v1_layer_release(struct layer *layer)
{
	if (--layer->refs > 0)
		return;
	if (layer->fd >= 0)
		close(layer->fd);
	if (layer->source >= 0)
		close(layer->source);
	free(layer->loaded);
	free(layer);
}

/* Reserves address space for `size` bytes starting at a 2 MiB boundary and
 * returns that start; the caller maps over it with MAP_FIXED, then calls
 * trim_reservation(). Page tables move cheapest between PMD-aligned ranges. */
struct reservation {
	char *area, *start;
	size_t length;
};

static char *reserve_aligned(size_t size, struct reservation *res)
{
	res->length = size + HUGE_ALIGN;
	if (res->length < size) { /* no room to align */
		errno = ENOMEM;
		return MAP_FAILED;
	}
	res->area = mmap(NULL, res->length, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res->area == MAP_FAILED)
		return MAP_FAILED;
	res->start = (char *)(((uintptr_t)res->area + HUGE_ALIGN - 1) & ~(HUGE_ALIGN - 1));
	return res->start;
}

/* Unmaps the reservation around [start, start + size); with used == false,
 * the whole reservation. */
static void trim_reservation(const struct reservation *res, size_t size, bool used)
{
	char *end = res->area + res->length;

	if (!used) {
		munmap(res->area, res->length);
		return;
	}
	if (res->start > res->area)
		munmap(res->area, (size_t)(res->start - res->area));
	if (end > res->start + size)
		munmap(res->start + size, (size_t)(end - (res->start + size)));
}

/* A child process never inherits region memory: it could not be served
 * there (no server thread, and without UFFD_FEATURE_EVENT_FORK its faults
 * would silently read stale base pages), and it may not be meant to see it. */
static void keep_from_children(void *data, size_t size)
{
	(void)madvise(data, size, MADV_DONTFORK);
}

/* Maps `size` bytes of the layer at a 2 MiB-aligned address. */
static char *map_layer(struct layer *layer, size_t size, int share)
{
	struct reservation res;
	char *start = reserve_aligned(size, &res);

	if (start == MAP_FAILED)
		return mmap(NULL, size, PROT_READ | PROT_WRITE, share, layer->fd, 0);
	char *data = mmap(start, size, PROT_READ | PROT_WRITE, share | MAP_FIXED,
			  layer->fd, 0);
	int saved = errno;
	trim_reservation(&res, size, data != MAP_FAILED);
	errno = saved;
	if (data != MAP_FAILED)
		keep_from_children(data, size);
	return data;
}

/* ---- The region registry (sorted by address, for the fault server) ------ */

static size_t registry_position(const void *addr)
{
	size_t lo = 0, hi = cowmem__engine.region_count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if ((const char *)cowmem__engine.regions[mid]->data <= (const char *)addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo; /* first region starting above addr */
}

struct cowmem_region *cowmem__engine_find(const void *addr)
{
	size_t pos = registry_position(addr);

	if (pos == 0)
		return NULL;
	struct cowmem_region *r = cowmem__engine.regions[pos - 1];
	if ((const char *)addr < r->data + r->size)
		return r;
	return NULL;
}

/* Handles are checked against the set of live ones before they are used, so
 * a destroyed or foreign pointer is EINVAL rather than undefined behaviour. */
static bool is_live(const struct cowmem_region *r)
{
	return cowmem__page_map_get(&cowmem__engine.live, (size_t)(uintptr_t)r) == r;
}

bool cowmem__v1_region_usable(const struct cowmem_region *r)
{
	return r && is_live(r) && !r->orphan && !r->hidden;
}

int cowmem__v1_registry_insert(struct cowmem_region *r)
{
	if (cowmem__page_map_put(&cowmem__engine.live, (size_t)(uintptr_t)r, r) < 0)
		return -1;
	if (cowmem__engine.region_count == cowmem__engine.region_capacity) {
		size_t capacity = cowmem__engine.region_capacity ? cowmem__engine.region_capacity * 2 : 16;
		void *grown = realloc(cowmem__engine.regions,
				      capacity * sizeof *cowmem__engine.regions);
		if (!grown) {
			cowmem__page_map_remove(&cowmem__engine.live, (size_t)(uintptr_t)r);
			errno = ENOMEM;
			return -1;
		}
		cowmem__engine.regions = grown;
		cowmem__engine.region_capacity = capacity;
	}
	size_t pos = registry_position(r->data);
	memmove(&cowmem__engine.regions[pos + 1], &cowmem__engine.regions[pos],
		(cowmem__engine.region_count - pos) * sizeof *cowmem__engine.regions);
	cowmem__engine.regions[pos] = r;
	cowmem__engine.region_count++;
	return 0;
}

static void registry_remove(struct cowmem_region *r)
{
	cowmem__page_map_remove(&cowmem__engine.live, (size_t)(uintptr_t)r);
	if (r->orphan)
		return; /* not in the address registry */
	size_t pos = registry_position(r->data);

	/* pos - 1 is r: regions never overlap. */
	memmove(&cowmem__engine.regions[pos - 1], &cowmem__engine.regions[pos],
		(cowmem__engine.region_count - pos) * sizeof *cowmem__engine.regions);
	cowmem__engine.region_count--;
}

/* ---- Registration with userfaultfd -------------------------------------- */

int cowmem__v1_region_register(struct cowmem_region *r, uint64_t modes)
{
	if (cowmem__engine.uffd < 0 || (r->uffd_modes & modes) == modes)
		return 0;
	modes |= r->uffd_modes;
	if (cowmem__uffd_register(cowmem__engine.uffd, r->data, r->size, modes) < 0)
		return -1;
	r->uffd_modes = modes;
	return 0;
}

char *cowmem__v1_page_address(const struct cowmem_region *r, size_t page)
{
	return r->data + page * cowmem__engine.page_size;
}

/* A page that cannot be provided must fail loudly, never read wrong bytes and
 * never leave its thread waiting: the access gets SIGBUS (UFFDIO_POISON, 6.6+)
 * or, without it, the process stops here with the reason. The reason is
 * written without allocating: the page failed perhaps for want of memory. */
static void fail_page(struct cowmem_region *r, size_t page, int err)
{
	cowmem__say_cannot_provide(page, r->data, err);
	if ((cowmem__engine.features & FEATURE_POISON) &&
	    cowmem__uffd_poison(cowmem__engine.uffd, cowmem__v1_page_address(r, page),
				cowmem__engine.page_size) == 0)
		return;
	abort();
}

/* Reads a page the region holds (a lender's page, or any own page) into
 * engine.bounce through /proc/self/mem: a page that is not there makes the
 * read fail (EIO) instead of faulting into the server itself. */
int cowmem__v1_read_lender_page(const struct cowmem_region *owner, size_t page)
{
	off_t where = (off_t)(uintptr_t)cowmem__v1_page_address(owner, page);

	if (pread(cowmem__engine.self_mem, cowmem__engine.bounce, cowmem__engine.page_size,
		  where) !=
	    (ssize_t)cowmem__engine.page_size) {
		if (errno == 0)
			errno = EIO;
		return -1;
	}
	return 0;
}

/* ---- Pending page versions ---------------------------------------------- */

/* The library put a version of the origin into r's page: r has not written
 * it (cowmem_dirty_pages() compares it with the origin). Forgetting one only
 * makes cowmem_dirty_pages() list the page, so a full map is no error. */
static void note_filled(struct cowmem_region *r, size_t page)
{
	(void)cowmem__page_map_put(&r->filled, page, (void *)1);
}

static struct pending *pending_new(struct cowmem_region *owner, size_t page)
{
	struct pending *p = calloc(1, sizeof *p);

	if (!p)
		return NULL;
	p->owner = owner;
	p->page = page;
	if (cowmem__page_map_put(&owner->out, page, p) < 0) {
		free(p);
		return NULL;
	}
	return p;
}

/* Adds waiter to the pending's list only (the caller sees to its `in`). */
static int pending_list_waiter(struct pending *p, struct cowmem_region *waiter)
{
	if (p->count == p->capacity) {
		size_t capacity = p->capacity ? p->capacity * 2 : 2;
		void *grown = realloc(p->waiters, capacity * sizeof *p->waiters);
		if (!grown)
			return -1;
		p->waiters = grown;
		p->capacity = capacity;
	}
	p->waiters[p->count++] = waiter;
	return 0;
}

static int pending_add_waiter(struct pending *p, struct cowmem_region *waiter)
{
	if (cowmem__page_map_put(&waiter->in, p->page, p) < 0)
		return -1;
	if (pending_list_waiter(p, waiter) < 0) {
		cowmem__page_map_remove(&waiter->in, p->page);
		return -1;
	}
	return 0;
}

/* Takes `waiter` off the pending's list (its `in` map is the caller's). */
static void pending_forget(struct pending *p, const struct cowmem_region *waiter)
{
	for (size_t i = 0; i < p->count; i++) {
		if (p->waiters[i] == waiter) {
			p->waiters[i] = p->waiters[--p->count];
			break;
		}
	}
}

static void pending_drop_waiter(struct pending *p, struct cowmem_region *waiter)
{
	pending_forget(p, waiter);
	cowmem__page_map_remove(&waiter->in, p->page);
}

/* Nobody waits any more: the owner's page becomes an ordinary private page. */
static void pending_release(struct pending *p)
{
	cowmem__page_map_remove(&p->owner->out, p->page);
	(void)cowmem__uffd_writeprotect(cowmem__engine.uffd, cowmem__v1_page_address(p->owner,
										     p->page),
					cowmem__engine.page_size, false);
	free(p->waiters);
	free(p);
}

/*
 * The owner is about to change or lose its page: hand the version to one
 * waiter, which becomes the owner for the rest (one copy, not one per waiter).
 * On return the old owner no longer lends the page; the caller un-protects it.
 */
static void pending_hand_over(struct pending *p)
{
	struct cowmem_region *owner = p->owner;
	size_t page = p->page, done;
	bool others = p->count > 1;

	/* Prefer a region the application uses: it may read the version
	 * anyway, while a hidden origin only keeps it for cowmem_reset(). */
	for (size_t i = p->count; i-- > 0;) {
		if (!p->waiters[i]->hidden) {
			struct cowmem_region *chosen = p->waiters[i];
			p->waiters[i] = p->waiters[p->count - 1];
			p->waiters[p->count - 1] = chosen;
			break;
		}
	}
	struct cowmem_region *heir = p->waiters[p->count - 1];

	cowmem__page_map_remove(&owner->out, page);
	p->count--;
	cowmem__page_map_remove(&heir->in, page);
	if (cowmem__v1_read_lender_page(owner, page) < 0) {
		fail_page(heir, page, errno);
	} else if (others && cowmem__v1_region_register(heir, UFFDIO_REGISTER_MODE_WP) < 0) {
		fail_page(heir, page, errno);
	} else if (cowmem__uffd_copy(cowmem__engine.uffd, cowmem__v1_page_address(heir, page),
				     cowmem__engine.bounce,
				     cowmem__engine.page_size, others ? UFFDIO_COPY_MODE_WP : 0,
				     &done) < 0) {
		fail_page(heir, page, errno);
	}
	note_filled(heir, page);
	if (!others) {
		free(p->waiters);
		free(p);
		return;
	}
	p->owner = heir;
	if (cowmem__page_map_put(&heir->out, page, p) < 0) {
		fprintf(stderr, "cowmem: out of memory while lending page %zu\n", page);
		abort();
	}
}

/* ---- Fault resolution (the server calls these with the lock held) ------- */

/* Pages from `page` on that the window may cover: stops at the region's end
 * and at the first page that waits for a lent version. */
static size_t window_end(const struct cowmem_region *r, size_t page, size_t limit)
{
	size_t end = page + limit < r->pages ? page + limit : r->pages;
	size_t j = page + 1;

	while (j < end && !cowmem__page_map_get(&r->in, j))
		j++;
	return j;
}

static void fill_from_lender(struct cowmem_region *r, size_t page, struct pending *p)
{
	size_t done;

	pending_drop_waiter(p, r);
	if (cowmem__v1_read_lender_page(p->owner, page) < 0 ||
	    (cowmem__uffd_copy(cowmem__engine.uffd, cowmem__v1_page_address(r, page),
			       cowmem__engine.bounce,
			       cowmem__engine.page_size, 0, &done) < 0 && errno != EEXIST))
		fail_page(r, page, errno);
	note_filled(r, page);
	if (p->count == 0)
		pending_release(p);
}

void cowmem__v1_resolve_fill(struct cowmem_region *r, size_t page, bool minor, bool write)
{
	struct pending *p = cowmem__page_map_get(&r->in, page);
	char *addr = cowmem__v1_page_address(r, page);
	size_t done = 0, end;
	int rc;

	if (p) {
		fill_from_lender(r, page, p);
		return;
	}
	if (!minor && r->base->source >= 0) {
		/* A loaded layer: read the page (and, when reading goes in
		 * order, the next ones) from the snapshot file first. Where the
		 * file has data, the kernel maps the new page-cache page when
		 * the thread retries. */
		int loaded = cowmem__v1_layer_load(r->base, page, r->pages);
		if (loaded < 0) {
			fail_page(r, page, errno);
			return;
		}
		if (loaded > 0) {
			(void)cowmem__uffd_wake(cowmem__engine.uffd, addr,
						cowmem__engine.page_size);
			return;
		}
	}
	if (minor) {
		/* The base layer holds the page: map it (and its neighbours)
		 * read-only and shared; a write then takes the kernel's own
		 * copy-on-write fault. */
		end = window_end(r, page, FILL_WINDOW);
		rc = cowmem__uffd_continue(cowmem__engine.uffd, addr,
					   (end - page) * cowmem__engine.page_size, &done);
	} else if (write) {
		rc = cowmem__uffd_copy(cowmem__engine.uffd, addr, cowmem__zero_page,
				       cowmem__engine.page_size, 0, &done);
	} else {
		/* A hole in the base: map the shared zero page, but only over
		 * holes (ZEROPAGE does not look at the file). */
		off_t data = lseek(r->base->fd, (off_t)(page * cowmem__engine.page_size),
				   SEEK_DATA);
		size_t limit = FILL_WINDOW;
		if (data >= 0)
			limit = (size_t)data / cowmem__engine.page_size - page;
		if (limit > r->pages - page)
			limit = r->pages - page;
		/* A loaded layer's pages not read from its file yet are no holes. */
		limit = cowmem__v1_layer_loaded_run(r->base, page, limit);
		if (limit == 0) {
			/* An unregistered mapping filled this hole with zeros
			 * meanwhile: the kernel maps it on the retry. */
			(void)cowmem__uffd_wake(cowmem__engine.uffd, addr,
						cowmem__engine.page_size);
			return;
		}
		end = window_end(r, page, limit);
		rc = cowmem__uffd_zeropage(cowmem__engine.uffd, addr,
					   (end - page) * cowmem__engine.page_size, &done);
		/* ZEROPAGE refuses a uffd-wp pte marker as if the page were
		 * there; COPY overwrites a marker, so only a page really
		 * present is taken as resolved (no endless refault). */
		if (rc < 0 && done == 0 && errno == EEXIST)
			rc = cowmem__uffd_copy(cowmem__engine.uffd, addr, cowmem__zero_page,
					       cowmem__engine.page_size, 0, &done);
	}
	if (rc == 0 || done > 0)
		return;
	if (errno == EEXIST) { /* already resolved (another thread's fault) */
		(void)cowmem__uffd_wake(cowmem__engine.uffd, addr, cowmem__engine.page_size);
		return;
	}
	fail_page(r, page, errno);
}

void cowmem__v1_resolve_write_protect(struct cowmem_region *r, size_t page)
{
	struct pending *p = cowmem__page_map_get(&r->out, page);

	if (p)
		pending_hand_over(p);
	/* Un-protecting also wakes the writer. */
	if (cowmem__uffd_writeprotect(cowmem__engine.uffd, cowmem__v1_page_address(r, page),
				      cowmem__engine.page_size,
				      false) < 0)
		(void)cowmem__uffd_wake(cowmem__engine.uffd, cowmem__v1_page_address(r, page),
					cowmem__engine.page_size);
}

/* ---- Public API --------------------------------------------------------- */

struct cowmem_region *cowmem__v1_region_new(struct layer *base, size_t size, enum region_mode mode)
{
	struct cowmem_region *r = calloc(1, sizeof *r);

	if (!r)
		return NULL;
	r->data = map_layer(base, size,
			    mode == REGION_EXCLUSIVE ? MAP_SHARED : MAP_PRIVATE);
	if (r->data == MAP_FAILED) {
		free(r);
		return NULL;
	}
	r->size = size;
	r->pages = size / cowmem__engine.page_size;
	r->base = base;
	r->mode = mode;
	return r;
}

void cowmem__v1_region_free(struct cowmem_region *r)
{
	munmap(r->data, r->size);
	cowmem__page_map_free(&r->in);
	cowmem__page_map_free(&r->out);
	cowmem__page_map_free(&r->filled);
	free(r);
}

cowmem_region *cowmem_create(size_t size)
{
	if (size == 0) {
		errno = EINVAL;
		return NULL;
	}
	size_t page_size = cowmem__engine.page_size;
	if (size > (size_t)PTRDIFF_MAX - page_size) {
		errno = ENOMEM;
		return NULL;
	}
	size = (size + page_size - 1) & ~(page_size - 1);

	/* Under the lock from the memfd on: fork() (whose prepare handler
	 * takes it) must never copy a layer descriptor, or a shared mapping
	 * not yet MADV_DONTFORK, of a region the child's handler cannot see. */
	pthread_mutex_lock(&cowmem__engine.lock);
	struct layer *layer = cowmem__v1_layer_create(size);
	if (!layer) {
		int saved = errno;
		pthread_mutex_unlock(&cowmem__engine.lock);
		errno = saved;
		return NULL;
	}
	struct cowmem_region *r = cowmem__v1_region_new(layer, size, REGION_EXCLUSIVE);
	if (!r)
		goto err_release_layer;
	if (cowmem__v1_registry_insert(r) < 0)
		goto err_free_region;
	pthread_mutex_unlock(&cowmem__engine.lock);
	return r;

err_free_region:
	cowmem__v1_region_free(r);
err_release_layer:
	cowmem__v1_layer_release(layer);
	pthread_mutex_unlock(&cowmem__engine.lock);
	errno = ENOMEM;
	return NULL;
}

/*
 * The first clone freezes an exclusive region's layer: from now on the region
 * maps it privately, so its writes become copy-on-write and the layer stays
 * what both regions read. MREMAP_DONTUNMAP moves the populated page tables
 * away in microseconds (leaving the old VMA in place, so no access ever finds
 * the range unmapped); the janitor tears them down off this thread.
 */
static int freeze(struct cowmem_region *r)
{
	struct reservation res;
	void *moved = MAP_FAILED;

	if ((cowmem__engine.features & FEATURE_DONTUNMAP) &&
	    (moved = reserve_aligned(r->size, &res)) != MAP_FAILED) {
		moved = cowmem__sys_mremap(r->data, r->size, r->size,
					   MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, moved);
		trim_reservation(&res, r->size, moved != MAP_FAILED);
	}
	/* Without DONTUNMAP (kernels before 5.13 refuse it for shared
	 * mappings), MAP_FIXED below zaps the page tables itself. */
	char *data = mmap(r->data, r->size, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_FIXED, r->base->fd, 0);
	if (data == MAP_FAILED) {
		int saved = errno;
		if (moved != MAP_FAILED)
			cowmem__janitor_unmap(moved, r->size);
		errno = saved;
		return -1;
	}
	if (moved != MAP_FAILED)
		cowmem__janitor_unmap(moved, r->size);
	keep_from_children(data, r->size);
	/* The layer is frozen: let the kernel refuse any later write to it
	 * (write(2), new shared writable mappings). 5.1+; advisory before. */
	if (cowmem__engine.features & FEATURE_FUTURE_WRITE_SEAL)
		(void)fcntl(r->base->fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE);
	r->mode = REGION_PRIVATE;
	r->uffd_modes = 0;
	/* Unregistered, a hole read allocates a zero page in the layer: the
	 * content is still right, so a failed registration is not fatal. */
	(void)cowmem__v1_region_register(r, UFFDIO_REGISTER_MODE_MISSING);
	return 0;
}

/* Is this pagemap entry a page the region has written (its own version)? */
static bool is_delta(uint64_t entry)
{
	const uint64_t present = 1ull << 63, swapped = 1ull << 62,
		       file = 1ull << 61, exclusive = 1ull << 56;

	if (!(entry & (present | swapped)) || (entry & file))
		return false;
	if (entry & swapped)
		return true;
	uint64_t pfn = entry & ((1ull << 55) - 1);
	if (pfn != 0 && cowmem__engine.zero_pfn != 0)
		return pfn != cowmem__engine.zero_pfn;
	return (entry & exclusive) != 0; /* the zero page is never exclusive */
}

bool cowmem__v1_pagemap_entry_is_own(const struct cowmem_region *r, size_t page, uint64_t entry)
{
	/* A uffd-wp pte marker (the kernel leaves one where a protected shmem
	 * pte is zapped) reads as a swapped entry with the wp bit; it holds
	 * no page. A lent page that really was swapped out is in r->out. */
	if ((entry & (1ull << 62)) && (entry & (1ull << 57)) && !cowmem__page_map_get(&r->out,
										      page))
		return false;
	return is_delta(entry);
}

int cowmem__v1_read_pagemap(const struct cowmem_region *r, size_t page, size_t count,
			    uint64_t *entries)
{
	off_t offset = (off_t)((uintptr_t)cowmem__v1_page_address(r,
								  page) / cowmem__engine.page_size * sizeof(uint64_t));

	if (pread(cowmem__engine.pagemap, entries, count * sizeof(uint64_t), offset) !=
	    (ssize_t)(count * sizeof(uint64_t))) {
		if (errno == 0)
			errno = EIO;
		return -1;
	}
	return 0;
}

/*
 * r's content of [page, page + count), read without faulting anything in
 * (lock held, /proc needed): the base layer, then r's own pages over it
 * through /proc/self/mem, and the versions r waits for from their owners.
 */
int cowmem__v1_region_read(const struct cowmem_region *r, size_t page, size_t count, char *buf)
{
	uint64_t entries[REGION_READ_MAX];

	if (cowmem__v1_layer_read(r->base, page, count, buf) < 0)
		return -1;
	if (r->mode == REGION_EXCLUSIVE)
		return 0; /* the layer is its content */
	if (cowmem__v1_read_pagemap(r, page, count, entries) < 0)
		return -1;
	for (size_t k = 0; k < count;) {
		struct pending *p = cowmem__page_map_get(&r->in, page + k);
		if (p) {
			if (cowmem__v1_read_lender_page(p->owner, page + k) < 0)
				return -1;
			memcpy(buf + k * cowmem__engine.page_size, cowmem__engine.bounce,
			       cowmem__engine.page_size);
			k++;
			continue;
		}
		size_t run = 0;
		while (k + run < count && cowmem__v1_pagemap_entry_is_own(r, page + k + run,
									  entries[k + run]))
			run++;
		if (run == 0) {
			k++;
			continue;
		}
		off_t where = (off_t)(uintptr_t)cowmem__v1_page_address(r, page + k);
		if (pread(cowmem__engine.self_mem, buf + k * cowmem__engine.page_size,
			  run * cowmem__engine.page_size,
			  where) != (ssize_t)(run * cowmem__engine.page_size)) {
			if (errno == 0)
				errno = EIO;
			return -1;
		}
		k += run;
	}
	return 0;
}

/* The pagemap file, read entry by entry: works on every kernel, costs 8
 * bytes per page of the region. */
static int scan_pagemap_file(struct cowmem_region *src, run_fn *fn, void *ctx)
{
	size_t run_start = SIZE_MAX;

	for (size_t base = 0; base < src->pages; base += PAGEMAP_BATCH) {
		size_t n = src->pages - base < PAGEMAP_BATCH ? src->pages - base : PAGEMAP_BATCH;
		off_t offset = (off_t)((uintptr_t)cowmem__v1_page_address(src, base) /
				       cowmem__engine.page_size * sizeof(uint64_t));
		if (pread(cowmem__engine.pagemap, pagemap_buffer, n * sizeof(uint64_t), offset) !=
		    (ssize_t)(n * sizeof(uint64_t))) {
			if (errno == 0)
				errno = EIO;
			return -1;
		}
		for (size_t k = 0; k < n; k++) {
			bool delta = cowmem__v1_pagemap_entry_is_own(src, base + k,
								     pagemap_buffer[k]);
			if (delta && run_start == SIZE_MAX)
				run_start = base + k;
			if (!delta && run_start != SIZE_MAX) {
				if (fn(src, run_start, base + k, ctx) < 0)
					return -1;
				run_start = SIZE_MAX;
			}
		}
	}
	if (run_start != SIZE_MAX)
		return fn(src, run_start, src->pages, ctx);
	return 0;
}

/* PAGEMAP_SCAN (6.7+) walks the page tables in the kernel and returns only
 * the runs that match, skipping empty page tables: after a freeze the
 * source has page tables only where it has been touched since. */
static int scan_pagemap_ioctl(struct cowmem_region *src, run_fn *fn, void *ctx)
{
	struct page_region *vec = (struct page_region *)pagemap_buffer;
	const size_t vec_len = PAGEMAP_BATCH * sizeof(uint64_t) / sizeof(struct page_region);
	uintptr_t start = (uintptr_t)src->data, end = start + src->size;

	while (start < end) {
		struct pm_scan_arg arg = {
			.size = sizeof arg,
			.start = start,
			.end = end,
			.vec = (uintptr_t)vec,
			.vec_len = vec_len,
			/* not a file page, not the zero page, and there */
			.category_mask = PAGE_IS_FILE | PAGE_IS_PFNZERO,
			.category_inverted = PAGE_IS_FILE | PAGE_IS_PFNZERO,
			.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
			.return_mask = PAGE_IS_SWAPPED | PAGE_IS_WRITTEN,
		};
		int n = ioctl(cowmem__engine.pagemap, PAGEMAP_SCAN, &arg);
		if (n < 0)
			return -1;
		/* The walk may stop inside a run (walk_end) and report that run
		 * whole; the next call reports its rest again. Count each page
		 * in the call whose walk covered it. */
		uintptr_t walked = arg.walk_end > start && arg.walk_end < end ? arg.walk_end : end;
		for (int i = 0; i < n; i++) {
			uintptr_t run_start = vec[i].start > start ? vec[i].start : start;
			uintptr_t run_end = vec[i].end < walked ? vec[i].end : walked;
			if (run_start >= run_end)
				continue;
			size_t first = (run_start - (uintptr_t)src->data) / cowmem__engine.page_size;
			size_t last = (run_end - (uintptr_t)src->data) / cowmem__engine.page_size;
			bool marker_like = (vec[i].categories & PAGE_IS_SWAPPED) &&
					   !(vec[i].categories & PAGE_IS_WRITTEN);
			if (!marker_like) {
				if (fn(src, first, last, ctx) < 0)
					return -1;
				continue;
			}
			/* Swapped and write-protected: a lent page, or a pte
			 * marker holding nothing (see scan_pagemap_file). */
			for (size_t page = first; page < last; page++)
				if (cowmem__page_map_get(&src->out, page) &&
				    fn(src, page, page + 1, ctx) < 0)
					return -1;
		}
		if (arg.walk_end <= start)
			break;
		start = arg.walk_end;
	}
	return 0;
}

/* Calls fn for each run of pages [first, end) that src has written. */
int cowmem__v1_for_each_delta_run(struct cowmem_region *src, run_fn *fn, void *ctx)
{
	if (cowmem__engine.features & FEATURE_PAGEMAP_SCAN)
		return scan_pagemap_ioctl(src, fn, ctx);
	return scan_pagemap_file(src, fn, ctx);
}

/* Lazy clone: the clone waits for every page its source wrote; the source
 * lends them, write-protected, until the clone has its copy. */
int cowmem__v1_lend_run(struct cowmem_region *src, size_t first, size_t end, void *ctx)
{
	struct cowmem_region *clone = ctx;

	if (cowmem__v1_region_register(src, UFFDIO_REGISTER_MODE_WP) < 0)
		return -1;
	for (size_t page = first; page < end; page++) {
		struct pending *p = cowmem__page_map_get(&src->out, page);
		if (!p && !(p = pending_new(src, page)))
			return -1;
		if (pending_add_waiter(p, clone) < 0) {
			if (p->count == 0)
				pending_release(p);
			return -1;
		}
	}
	return cowmem__uffd_writeprotect(cowmem__engine.uffd, cowmem__v1_page_address(src, first),
					 (end - first) * cowmem__engine.page_size, true);
}

static void drop_wait(size_t page, void *value, void *ctx)
{
	struct pending *p = value;
	(void)page;

	/* The caller frees the whole `in` map afterwards: it must not change
	 * while page_map_each walks it. */
	pending_forget(p, ctx);
	if (p->count == 0)
		pending_release(p);
}

struct copy_context {
	struct cowmem_region *to;
	size_t listed;
	int error;
};

static void list_copied_wait(size_t page, void *value, void *ctx)
{
	struct copy_context *c = ctx;
	(void)page;
	if (c->error == 0 && pending_list_waiter(value, c->to) < 0)
		c->error = ENOMEM;
	else if (c->error == 0)
		c->listed++;
}

static void unlist_copied_wait(size_t page, void *value, void *ctx)
{
	struct copy_context *c = ctx;
	(void)page;
	if (c->listed > 0) {
		pending_forget(value, c->to);
		c->listed--;
	}
}

/*
 * `to`, which waits for nothing yet (a new region, or one whose waits were
 * just dropped), waits for every version `from` waits for. The map is
 * copied whole instead of rebuilt entry by entry, which is most of what a
 * clone of a drifting source, or its hidden origin, costs per page.
 * 0, or -1 with errno ENOMEM and `to` still waiting for nothing.
 */
int cowmem__v1_region_inherit_waits(struct cowmem_region *from, struct cowmem_region *to)
{
	struct copy_context c = { .to = to };

	if (cowmem__page_map_copy(&to->in, &from->in) < 0)
		return -1;
	cowmem__page_map_each(&to->in, list_copied_wait, &c);
	if (c.error == 0)
		return 0;
	/* Undo exactly the listings made, in the same order. */
	cowmem__page_map_each(&to->in, unlist_copied_wait, &c);
	cowmem__page_map_free(&to->in);
	errno = ENOMEM;
	return -1;
}


/* Stops waiting for anything (lock held). */
void cowmem__v1_region_drop_waits(struct cowmem_region *r)
{
	cowmem__page_map_each(&r->in, drop_wait, r);
	cowmem__page_map_free(&r->in);
}

/* Eager clone (no userfaultfd): copy the runs the source wrote. */
int cowmem__v1_collect_run(struct cowmem_region *src, size_t first, size_t end, void *ctx)
{
	(void)src;
	int rc = cowmem__run_list_add(ctx, first, end);
	if (rc < 0) {
		errno = -rc;
		return -1;
	}
	return 0;
}

/* Without pagemap nothing tells which pages the source wrote: compare each
 * page with the frozen layer they share (holes read as zeros through pread
 * without allocating) and copy the ones that differ. Outside the lock, as
 * reading the source may fault. */
void cowmem__v1_copy_differing_pages(struct cowmem_region *src, struct cowmem_region *clone)
{
	char *base_page = malloc(cowmem__engine.page_size);

	for (size_t page = 0; page < src->pages; page++) {
		const char *from = cowmem__v1_page_address(src, page);
		off_t offset = (off_t)(page * cowmem__engine.page_size);
		if (!base_page ||
		    pread(src->base->fd, base_page, cowmem__engine.page_size, offset) !=
			    (ssize_t)cowmem__engine.page_size ||
		    memcmp(base_page, from, cowmem__engine.page_size) != 0)
			memcpy(cowmem__v1_page_address(clone, page), from,
			       cowmem__engine.page_size);
	}
	free(base_page);
}

/* Takes a new region out of the engine again (lock held; the caller frees
 * it with cowmem__v1_region_free() outside the lock). */
static void region_unlink(struct cowmem_region *r, bool registered)
{
	cowmem__v1_region_drop_waits(r);
	if (registered)
		registry_remove(r);
	cowmem__v1_layer_release(r->base);
}

/*
 * A clone that starts with page versions its base does not have (its source
 * had written pages, or waited for some) gets a hidden origin: a second
 * region with the same content that nobody ever accesses. It waits for the
 * same versions (lazy lending) or holds its own copy of them (eager), so that
 * cowmem_reset() can go back to them after the source has moved on.
 */
static struct cowmem_region *origin_new(struct cowmem_region *clone)
{
	struct cowmem_region *o = cowmem__v1_region_new(clone->base, clone->size, REGION_PRIVATE);

	if (!o)
		return NULL;
	clone->base->refs++;
	o->hidden = true;
	o->origin_kind = ORIGIN_BASE;
	/* Registered so that a hand-over can copy a version into it. */
	/* Registered so that a hand-over can copy a version into it, and
	 * MINOR like any region that waits: even an access from outside (a
	 * debugger, process_vm_readv) must not map a base page there. */
	uint64_t modes = UFFDIO_REGISTER_MODE_MISSING;
	if (cowmem__v1_region_inherit_waits(clone, o) < 0)
		goto err;
	if (o->in.count > 0)
		modes |= UFFDIO_REGISTER_MODE_MINOR;
	if (cowmem__engine.uffd >= 0 && cowmem__v1_region_register(o, modes) < 0)
		goto err;
	if (cowmem__v1_registry_insert(o) < 0) {
		errno = ENOMEM;
		goto err;
	}
	return o;
err:;
	int saved = errno;
	region_unlink(o, false);
	cowmem__v1_region_free(o);
	errno = saved;
	return NULL;
}

static void note_filled_run(struct cowmem_region *r, size_t first, size_t end)
{
	for (size_t page = first; page < end; page++)
		(void)cowmem__page_map_put(&r->filled, page, (void *)1);
}

cowmem_region *cowmem_clone(cowmem_region *src)
{
	struct run_list eager = { 0 };
	struct cowmem_region *clone = NULL, *origin = NULL;
	bool compare_all = false;
	int err = 0;

	if (!src) {
		errno = EINVAL;
		return NULL;
	}
	pthread_mutex_lock(&cowmem__engine.lock);
	if (!cowmem__v1_region_usable(src)) {
		err = EINVAL;
		goto err_unlock;
	}
	bool had_delta = src->mode == REGION_PRIVATE;
	if (src->mode == REGION_EXCLUSIVE && freeze(src) < 0) {
		err = errno;
		goto err_unlock;
	}
	clone = cowmem__v1_region_new(src->base, src->size, REGION_PRIVATE);
	if (!clone) {
		err = errno;
		goto err_unlock;
	}
	src->base->refs++;

	if (had_delta && cowmem__engine.lazy) {
		cowmem__janitor_pause();
		int rc = cowmem__v1_region_inherit_waits(src, clone);
		if (rc == 0)
			rc = cowmem__v1_for_each_delta_run(src, cowmem__v1_lend_run, clone);
		cowmem__janitor_resume();
		if (rc < 0) {
			err = errno;
			goto err_unlink;
		}
	} else if (had_delta && cowmem__engine.pagemap < 0) {
		compare_all = true; /* no pagemap (no /proc): see below */
	} else if (had_delta && cowmem__v1_for_each_delta_run(src, cowmem__v1_collect_run,
							      &eager) < 0) {
		err = errno;
		goto err_unlink;
	}
	for (size_t i = 0; i < eager.count; i++)
		note_filled_run(clone, eager.runs[i][0], eager.runs[i][1]);
	clone->origin_kind = ORIGIN_BASE;
	if (clone->in.count > 0 || eager.count > 0 || compare_all) {
		if (!(origin = origin_new(clone))) {
			err = errno;
			goto err_unlink;
		}
		clone->origin_kind = ORIGIN_REGION;
		clone->origin = origin;
	}
	uint64_t modes = UFFDIO_REGISTER_MODE_MISSING;
	if (clone->in.count > 0)
		modes |= UFFDIO_REGISTER_MODE_MINOR;
	/* Unregistered, a hole read would allocate a zero page in the layer:
	 * harmless, unless the clone waits for versions or the layer is still
	 * being loaded from a file (a zero page there would hide the file). */
	if (cowmem__v1_region_register(clone, modes) < 0 &&
	    (clone->in.count > 0 || clone->base->source >= 0)) {
		err = errno;
		goto err_unlink;
	}
	if (cowmem__v1_registry_insert(clone) < 0) {
		err = ENOMEM;
		goto err_unlink;
	}
	pthread_mutex_unlock(&cowmem__engine.lock);

	/* Outside the lock: writing the clone may fault into the server. The
	 * origin copies the clone, not the source, so both start equal even
	 * if the source is written meanwhile. */
	for (size_t i = 0; i < eager.count; i++) {
		size_t first = eager.runs[i][0], length = (eager.runs[i][1] - first) * cowmem__engine.page_size;
		memcpy(cowmem__v1_page_address(clone, first), cowmem__v1_page_address(src, first),
		       length);
		memcpy(cowmem__v1_page_address(origin, first), cowmem__v1_page_address(clone,
										       first), length);
	}
	free(eager.runs);
	if (compare_all) {
		cowmem__v1_copy_differing_pages(src, clone);
		cowmem__v1_copy_differing_pages(clone, origin);
	}
	return clone;

err_unlink:
	if (origin) {
		region_unlink(origin, true);
		cowmem__v1_region_free(origin);
	}
	region_unlink(clone, false);
	cowmem__v1_region_free(clone);
err_unlock:
	pthread_mutex_unlock(&cowmem__engine.lock);
	free(eager.runs);
	errno = err;
	return NULL;
}

void *cowmem_data(const cowmem_region *r)
{
	if (!r) {
		errno = EINVAL;
		return NULL;
	}
	return r->data;
}

size_t cowmem_size(const cowmem_region *r)
{
	if (!r) {
		errno = EINVAL;
		return 0;
	}
	return r->size;
}

static void collect_pending(size_t page, void *value, void *ctx)
{
	struct pending ***cursor = ctx;
	(void)page;
	*(*cursor)++ = value;
}

/* Hands every version r lends to one of its waiters; with `unprotect`, r's
 * pages become ordinary writable pages again. `buffer` has room for
 * r->out.count entries (allocated beforehand, so that this cannot fail). */
void cowmem__v1_region_hand_over_all(struct cowmem_region *r, struct pending **buffer,
				     bool unprotect)
{
	struct pending **cursor = buffer;

	cowmem__page_map_each(&r->out, collect_pending, &cursor);
	for (struct pending **p = buffer; p < cursor; p++) {
		size_t page = (*p)->page;
		pending_hand_over(*p);
		if (unprotect)
			(void)cowmem__uffd_writeprotect(cowmem__engine.uffd,
							cowmem__v1_page_address(r, page),
							cowmem__engine.page_size, false);
	}
}

int cowmem_destroy(cowmem_region *r)
{
	if (!r)
		return 0;
	pthread_mutex_lock(&cowmem__engine.lock);
	if (!is_live(r) || r->hidden) {
		pthread_mutex_unlock(&cowmem__engine.lock);
		errno = EINVAL;
		return -1;
	}
	struct cowmem_region *origin = r->origin;
	/* The only allocation comes first: a failed destroy changes nothing. */
	size_t lent_count = r->out.count + (origin ? origin->out.count : 0);
	struct pending **lent = malloc((lent_count ? lent_count : 1) * sizeof *lent);
	if (!lent) {
		pthread_mutex_unlock(&cowmem__engine.lock);
		errno = ENOMEM;
		return -1;
	}
	/* Neither waits any more, so no version is handed to either; then
	 * every version they still lend goes to one of its other waiters
	 * (dropping waits only ever shrinks the `out` maps). */
	cowmem__v1_region_drop_waits(r);
	if (origin)
		cowmem__v1_region_drop_waits(origin);
	cowmem__v1_region_hand_over_all(r, lent, false);
	if (origin)
		cowmem__v1_region_hand_over_all(origin, lent, false);
	free(lent);
	region_unlink(r, true);
	if (origin)
		region_unlink(origin, true);
	pthread_mutex_unlock(&cowmem__engine.lock);
	cowmem__v1_region_free(r);
	if (origin)
		cowmem__v1_region_free(origin);
	return 0;
}

