/*
 * The engine's objects and steps (ARCHITECTURE.md): private declarations,
 * beside the process-wide state of internal.h. Every symbol is prefixed
 * cowmem__. Functions return 0 or a negative errno; only the public entry
 * points (api.c, library.c) set errno.
 */
#ifndef COWMEM_ENGINE_H
#define COWMEM_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "internal.h"

struct cowmem__layer;
struct cowmem_region;
struct cowmem__overlay;

/* ---- store.c: immutable page versions in recycled anonymous memory ----- */

/* A slot holds one page version. COWMEM__HOLE stands for a page that reads
 * as zero and needs no memory. */
typedef uint32_t cowmem__slot;
#define COWMEM__HOLE ((cowmem__slot)UINT32_MAX)

int cowmem__store_alloc(cowmem__slot *slot);          /* refs = 1 */
void cowmem__store_ref(cowmem__slot slot);
void cowmem__store_unref(cowmem__slot slot);
void cowmem__store_prefetch(cowmem__slot slot); /* an unref to come */
char *cowmem__store_page(cowmem__slot slot);          /* stable address */
void cowmem__store_trim(void); /* gives back memory of free slots beyond a slack */
void cowmem__store_release(void); /* unmaps everything if no slot is used */
size_t cowmem__store_used(void);
void cowmem__store_fork_child(void);

/* ---- pagefile.c: one memfd holding every layer's pages ----------------- */

int cowmem__pagefile_fd(void);                 /* -1 until the first range */
int cowmem__pagefile_reserve(size_t size, off_t *offset);
void cowmem__pagefile_release(off_t offset, size_t size);
void cowmem__pagefile_fork_child(void);
/* Address space aligned so that page tables move whole between two places
 * of one size, and mappings of the page file there. */
int cowmem__reserve_aligned(size_t size, char **area, size_t *length, char **start);
int cowmem__pagefile_map(off_t offset, size_t size, int share, char **data);

/* ---- layer.c: a family's pages, their generations and old versions ------ */

/* What a region at generation `gen` reads at one page. */
enum cowmem__source {
	COWMEM__FROM_LAYER, /* the layer's current page (or its hole) */
	COWMEM__FROM_STORE, /* an old version: *slot (COWMEM__HOLE: zeros) */
};

int cowmem__layer_new(size_t pages, struct cowmem__layer **layer);
void cowmem__layer_ref(struct cowmem__layer *layer);
void cowmem__layer_fork_child(void);
void cowmem__layer_unref(struct cowmem__layer *layer);
/* The shared mapping takes over `from`'s page tables (a freeze). */
int cowmem__layer_adopt_tables(struct cowmem__layer *layer, char *from);
char *cowmem__layer_shared(const struct cowmem__layer *layer); /* unregistered map */
off_t cowmem__layer_offset(const struct cowmem__layer *layer);
uint64_t cowmem__layer_current(const struct cowmem__layer *layer);
enum cowmem__source cowmem__layer_lookup(const struct cowmem__layer *layer, size_t page,
					 uint64_t gen, cowmem__slot *slot);
/* The generation in which the version seen at `gen` was written (0: the
 * layer's first content). */
uint64_t cowmem__layer_birth_at(const struct cowmem__layer *layer, size_t page, uint64_t gen);
/* The pages whose current version is newer than `gen`, ascending: stores up
 * to cap, returns how many. Reads 8 bytes per page of the layer. */
size_t cowmem__layer_changed_since(const struct cowmem__layer *layer, uint64_t gen,
				   size_t *pages, size_t cap);
/* Pages from `page` on (at most `limit`) that a region at `gen` reads from
 * the layer's current pages. */
size_t cowmem__layer_current_run(const struct cowmem__layer *layer, size_t page,
				 size_t limit, uint64_t gen);
/* Generations in use: a region's view or origin holds one reference. */
int cowmem__layer_hold(struct cowmem__layer *layer, uint64_t gen);
void cowmem__layer_drop(struct cowmem__layer *layer, uint64_t gen);
/* A capture: the head's new content replaces the layer's pages. Between
 * begin and end, cowmem__layer_replace() keeps the old version of each page
 * for the generations that still see it and records the new one; *job says
 * what to copy, and must run (cowmem__copier_add) before the capture ends. */
int cowmem__layer_capture_begin(struct cowmem__layer *layer, size_t count);
/* Room for one more held generation: the next hold cannot fail. */
int cowmem__layer_reserve_hold(struct cowmem__layer *layer);
struct cowmem__page_job;
int cowmem__layer_replace(struct cowmem__layer *layer, size_t page, const char *content,
			  struct cowmem__page_job *job);
void cowmem__layer_prefetch(const struct cowmem__layer *layer, size_t page); /* a replace to come */
uint64_t cowmem__layer_capture_end(struct cowmem__layer *layer); /* the new generation */
void cowmem__layer_capture_abort(struct cowmem__layer *layer); /* before any replace */
struct cowmem_region *cowmem__layer_head(const struct cowmem__layer *layer);
void cowmem__layer_set_head(struct cowmem__layer *layer, struct cowmem_region *head);
/* A reader may map the layer's current page: replacing it must unmap it
 * from every mapping first (a hole punch), not write it in place. */
void cowmem__layer_note_mapped(struct cowmem__layer *layer, size_t page, size_t count);
void cowmem__layer_mapper_add(struct cowmem__layer *layer);
void cowmem__layer_mapper_drop(struct cowmem__layer *layer);
bool cowmem__layer_has_data(const struct cowmem__layer *layer, size_t page);
/* How many pages from `page` on (at most `limit`) all hold data
 * (want_data) or are all holes in the page file. */
size_t cowmem__layer_data_run(const struct cowmem__layer *layer, size_t page, size_t limit,
			      bool want_data);

/* Loaded layers (cowmem_load): the layer's first version comes from a file,
 * which it keeps (fd); cowmem__layer_load() copies pages in on demand. */
int cowmem__layer_set_source(struct cowmem__layer *layer, int fd, off_t offset);
int cowmem__layer_load(struct cowmem__layer *layer, size_t page, size_t end);
size_t cowmem__layer_loaded_run(const struct cowmem__layer *layer, size_t page, size_t limit);
/* 1 if the page file holds the page already; else 0 with the file's page
 * read into buf; or a negative errno. */
int cowmem__layer_read_first_version(const struct cowmem__layer *layer, size_t page,
				     char *buf);

/* The next capture's old versions, copied before it (pre_copier.c): the
 * layer says which pages want one, and takes the copies if no capture
 * ended since `copied_at` (the generation then). */
int cowmem__layer_early_want(struct cowmem__layer *layer, size_t page, cowmem__slot *slot,
			     const char **from);
/* The copies themselves, without the lock: false (nothing copied) if a
 * capture began since `begun` (cowmem__layer_captures_begun). */
uint64_t cowmem__layer_captures_begun(const struct cowmem__layer *layer);
bool cowmem__layer_early_copy(const struct cowmem__layer *layer, uint64_t begun,
			      const cowmem__slot *slots, const char *const *from, size_t count);
void cowmem__layer_early_add(struct cowmem__layer *layer, uint64_t copied_at, const size_t *pages,
			     const cowmem__slot *slots, size_t count);
size_t cowmem__layer_early_count(const struct cowmem__layer *layer);
/* The last capture: the pages it replaced, and how many of their old
 * versions it found copied early. */
void cowmem__layer_last_capture(const struct cowmem__layer *layer, size_t *replaced,
				size_t *copied_early);

/* ---- early_copies.c: a layer's old versions copied before their capture - */

struct cowmem__early_copies;
int cowmem__early_new(struct cowmem__early_copies **result);
void cowmem__early_free(struct cowmem__early_copies *e);
size_t cowmem__early_count(const struct cowmem__early_copies *e);
bool cowmem__early_has(const struct cowmem__early_copies *e, size_t page);
void cowmem__early_prefetch(const struct cowmem__early_copies *e, size_t page);
/* Takes the slot's reference, also when it fails (-ENOMEM). */
int cowmem__early_add(struct cowmem__early_copies *e, size_t page, cowmem__slot slot,
		      uint64_t birth);
bool cowmem__early_take(struct cowmem__early_copies *e, size_t page, cowmem__slot *slot);
void cowmem__early_forget_born_after(struct cowmem__early_copies *e, uint64_t gen, bool all);
void cowmem__early_clear(struct cowmem__early_copies *e);

/* ---- overlay.c: page versions of a region beyond its layer's ----------- */

/* Immutable once shared; a capture makes a new one. */
int cowmem__overlay_with(const struct cowmem__overlay *base, const size_t *pages,
			 const cowmem__slot *slots, size_t count,
			 struct cowmem__overlay **result);
void cowmem__overlay_ref(struct cowmem__overlay *overlay);
void cowmem__overlay_unref(struct cowmem__overlay *overlay);
bool cowmem__overlay_find(const struct cowmem__overlay *overlay, size_t page,
			  cowmem__slot *slot);
size_t cowmem__overlay_count(const struct cowmem__overlay *overlay);
/* The i-th entry, in page order. */
void cowmem__overlay_entry(const struct cowmem__overlay *overlay, size_t i, size_t *page,
			   cowmem__slot *slot);

/* ---- scan.c: what a mapping has in its page tables ---------------------- */

/* Called for each run [first, end) of matching pages (indices from start);
 * a negative return stops the scan and is returned. */
typedef int cowmem__run_fn(size_t first, size_t end, void *ctx);
/* The mapping's own (anonymous) pages, the shared zero page excluded. */
int cowmem__scan_own(char *start, size_t pages, cowmem__run_fn *fn, void *ctx);
/* The same, adding the pages that map the page cache to *file_pages
 * (NULL: not counted, cowmem__scan_own). */
int cowmem__scan_own_counting(char *start, size_t pages, cowmem__run_fn *fn, void *ctx,
			      size_t *file_pages);
/* That without the engine lock, from any thread; PAGEMAP_SCAN only
 * (-ENOTSUP without it). */
int cowmem__scan_own_unlocked(char *start, size_t pages, cowmem__run_fn *fn, void *ctx,
			      size_t *file_pages);
/* Whether it has any such page (stops at the first). */
int cowmem__scan_has_own(char *start, size_t pages, bool *found);
/* Pages that map the page cache. */
int cowmem__scan_file_pages(char *start, size_t pages, cowmem__run_fn *fn, void *ctx);


/* ---- Regions (regions.c; fold.c and resolve.c work on them) ------------ */

enum cowmem__mode {
	COWMEM__EXCLUSIVE, /* MAP_SHARED of its layer: never cloned, writes land there */
	COWMEM__HEAD,      /* MAP_PRIVATE: its layer holds its content as of the
			      last capture, its own pages what it wrote since */
	COWMEM__READER,    /* MAP_PRIVATE: sees the layer at `gen`, then `overlay`,
			      then its own pages */
};

/* What cowmem_reset() returns a region to. */
enum cowmem__origin {
	COWMEM__ORIGIN_ZERO, /* cowmem_create(): zeros */
	COWMEM__ORIGIN_VIEW, /* the layer at origin_gen, then origin_overlay */
};

/* Shared by regions.c, fold.c, resolve.c and tracking.c: the region is the
 * object they all work on. */
struct cowmem_region {
	char *data;
	size_t size, pages;
	struct cowmem__layer *layer;
	enum cowmem__mode mode;
	uint64_t gen;                     /* READER: held */
	struct cowmem__overlay *overlay;  /* READER: NULL if none */
	enum cowmem__origin origin;
	struct cowmem__layer *origin_layer; /* ORIGIN_VIEW: referenced; the
					       region's layer unless cowmem_copy()
					       brought it another family's */
	uint64_t origin_gen;              /* ORIGIN_VIEW: held in origin_layer */
	struct cowmem__layer *mapped_layer; /* READER after a rebase (no folds):
					       the layer its mapping still maps,
					       referenced; NULL: `layer` */
	struct cowmem__overlay *origin_overlay;
	uint64_t uffd_modes;              /* UFFDIO_REGISTER_MODE_* in effect */
	bool fresh;                       /* a READER without MINOR (see fold.c) */
	bool copied;                      /* its view came from cowmem_copy(): it
					     may map layer pages its origin's
					     overlay replaces */
	bool orphan;                      /* inherited through fork() */
	bool maps_layer;                  /* has set bits of its layer's mapped
					     (counted in the layer's mappers) */
	struct page_map filled;           /* pages the server filled with a version */
	uint64_t faults, blocked_ns;
};

/* Clones fold (the kernel has userfaultfd with MINOR faults on shmem,
 * MREMAP_DONTUNMAP and /proc). Without, nothing can keep a reader from
 * mapping a layer page the kernel finds: a layer never changes once frozen,
 * no region is its head, and a clone gets its source's overlay written into
 * its pages at once (ARCHITECTURE.md, "Without folds"). */
extern bool cowmem__folds;
/* The page tables can be read (/proc/self/pagemap and /proc/self/mem).
 * Without, every page counts as a region's own and is compared, and no
 * region is registered, so that reading region memory never waits for the
 * server. */
bool cowmem__sees_page_tables(void);
/* Writes the versions of r's overlay into its pages (no fold): a reader
 * that cannot be served them on a fault holds them from the start. */
int cowmem__install_overlay(struct cowmem_region *r);
/* rebase.c (no folds): whether a reader whose branch added `added` pages
 * to its overlay should rebase, and the rebase itself: its content goes
 * into a new layer, its view becomes that layer with no overlay, and its
 * mapping stays (mapped_layer). On failure nothing changed. */
bool cowmem__rebase_due(const struct cowmem_region *r, size_t added);
int cowmem__rebase(struct cowmem_region *r);

int cowmem__register(struct cowmem_region *r, uint64_t modes); /* adds modes */
int cowmem__register_exactly(struct cowmem_region *r, uint64_t modes);
struct cowmem_region *cowmem__find(const void *addr);
char *cowmem__page(const struct cowmem_region *r, size_t page);
/* Readers at the layer's current generation that do not have MINOR yet. */
int cowmem__fresh_add(struct cowmem_region *r);
int cowmem__fresh_reserve(void); /* room for one more: the next add cannot fail */
void cowmem__fresh_remove(struct cowmem_region *r);
int cowmem__fresh_leave(struct cowmem_region *r);
/* Notes that r maps pages [page, page + count) of its layer. */
void cowmem__region_note_mapped(struct cowmem_region *r, size_t page, size_t count);
/* r no longer maps any page of its layer: they were all dropped, or r goes. */
void cowmem__region_forget_mapped(struct cowmem_region *r);
int cowmem__fresh_register_all(struct cowmem__layer *layer);
int cowmem__reader_new(struct cowmem__layer *layer, size_t size, uint64_t gen,
		       struct cowmem__overlay *overlay, struct cowmem_region **result);
int cowmem__reader_new_pending(struct cowmem__layer *layer, size_t size,
			       struct cowmem__overlay *overlay, struct cowmem_region **result);
int cowmem__reader_attach(struct cowmem_region *r, uint64_t gen);
void cowmem__reader_free_pending(struct cowmem_region *r);
void cowmem__region_release(struct cowmem_region *r);
int cowmem__region_drop_locked(struct cowmem_region *r);

/* The public operations (api.c calls them): 0 or a negative errno. */
int cowmem__create(size_t size, struct cowmem_region **result); /* regions.c */
/* lifetime.c */
int cowmem__clone(struct cowmem_region *src, struct cowmem_region **result);
int cowmem__destroy(struct cowmem_region *r);
int cowmem__copy(struct cowmem_region *dst, struct cowmem_region *src);
int cowmem__prefault(struct cowmem_region *r, size_t offset, size_t length, bool for_write);
bool cowmem__region_usable(const struct cowmem_region *r);
size_t cowmem__region_count(void);
void cowmem__regions_fork_child(void);

/* read.c: reading content without faulting anything in (lock held) */
#define COWMEM__READ_MAX 64 /* pages cowmem__read_content() reads at once */
int cowmem__read_content(const struct cowmem_region *r, size_t page, size_t count, char *buf);
int cowmem__read_layer(const struct cowmem__layer *layer, size_t page, size_t count, char *buf);
int cowmem__read_view(const struct cowmem__layer *layer, uint64_t gen,
		      const struct cowmem__overlay *overlay, size_t page, char *buf);
int cowmem__read_own(const struct cowmem_region *r, size_t page, char *buf);

/* tracking.c */
int cowmem__dirty_pages(const struct cowmem_region *r, size_t *pages, size_t cap, size_t *count);
int cowmem__reset(struct cowmem_region *r);
int cowmem__stats(const struct cowmem_region *r, struct cowmem_stats *stats);
/* snapshot.c */
int cowmem__save(const struct cowmem_region *r, int fd);
int cowmem__load(int fd, struct cowmem_region **result);

/* fold.c */
/* Makes src's content shareable and says where it is: its layer, at *gen,
 * with *overlay (not referenced). 0 or a negative errno. */
int cowmem__capture(struct cowmem_region *src, uint64_t *gen, struct cowmem__overlay **overlay);
/* The same in two steps. A fold may stop after moving the head's page
 * tables (*fold set; the head waits on the fence if cowmem__fold_fenced(),
 * else in the server): then nothing may change the layer, the head or the
 * store, or fill the head's mapping, until cowmem__fold_finish() (the
 * server only reads them for readers, and only wakes a region on the
 * fence: resolve.c). cowmem__capture_finish(), lock held, finishes and
 * frees *fold if there is one and says where src's content is. */
struct cowmem__fold;
int cowmem__capture_begin(struct cowmem_region *src, struct cowmem__fold **fold);
bool cowmem__fold_fenced(const struct cowmem__fold *fold);
/* Past the point where a clone can fail: says why on stderr and aborts. */
_Noreturn void cowmem__fold_abort(const char *what, int rc);
struct cowmem_region *cowmem__fold_head(const struct cowmem__fold *fold);
/* pending_clone (or NULL): the clone left waiting on the fence with the
 * head, released with it. */
void cowmem__fold_finish(struct cowmem__fold *fold, struct cowmem_region *pending_clone);
void cowmem__capture_finish(const struct cowmem_region *src, struct cowmem__fold *fold,
			    uint64_t *gen, struct cowmem__overlay **overlay);
/* Makes r (which no other thread accesses) a reader of `layer` at `gen`
 * with `overlay`, dropping every page it has. 0 or a negative errno. */
int cowmem__set_view(struct cowmem_region *r, struct cowmem__layer *layer, uint64_t gen,
		     struct cowmem__overlay *overlay);

/* folder.c: a clone's fold finishes after the clone returns. */
/* A clone of src (lock held and settled); NULL with *error an errno. */
struct cowmem_region *cowmem__clone_locked(struct cowmem_region *src, int *error);
/* Takes the engine lock with no fold pending: every public operation that
 * looks at regions takes it so. */
void cowmem__lock_settled(void);
/* The same for destroying r: a fold that is not r's (neither its head nor
 * its clone) may stay pending. */
void cowmem__lock_settled_for_destroy(const struct cowmem_region *r);
bool cowmem__fold_pending(void); /* lock held; for the tests */
struct cowmem__folder;
void cowmem__folder_ensure_running(void); /* lock held; without it, folds finish at once */
/* With the last region gone (lock held): the folder to join after unlocking. */
struct cowmem__folder *cowmem__folder_close(void);
void cowmem__folder_join(struct cowmem__folder *folder);
void cowmem__folder_fork_child(void);

/* pre_copier.c: between clones, the folder's thread copies out the old
 * versions the next fold of a head keeps (lock held in each). */
/* After a capture of head that made clone (NULL: none). */
void cowmem__precopier_follow(const struct cowmem_region *head,
			      const struct cowmem_region *clone);
/* One step: 0 to go on at once, > 0 nanoseconds to rest first, < 0
 * nothing to do until the next follow. Releases the lock meanwhile, and
 * stops early when interrupted() says so. */
long cowmem__precopier_step(bool (*interrupted)(void));
void cowmem__precopier_stop(void);
bool cowmem__precopier_following(void); /* for the tests */
void cowmem__precopier_fork_child(void);

/* resolve.c: one userfaultfd message (lock held). */
void cowmem__resolve(const struct uffd_msg *msg, uint64_t read_at_ns);
void cowmem__fail_page(const struct cowmem_region *r, size_t page, int error);

/* ---- copier.c: a fold's page copies, shared with a helper thread ----- */

/* One page of a capture, in order: keep the old content (keep != NULL),
 * punch the page from every mapping (punch >= 0, its page file offset),
 * write the new content. */
struct cowmem__page_job {
	char *keep;
	off_t punch;
	char *target;
	const char *content;
};
/* A capture's jobs, independent of each other (distinct pages and slots),
 * run on a second CPU while they are added; finish runs the rest and
 * returns when all are done. A NULL batch (no memory) runs each job as it
 * is added. The task (if not NULL) runs once, first, on whichever thread
 * gets to it: the helper, or the caller in task_done or finish at the
 * latest (begin, if it returns NULL). */
struct cowmem__copy_batch;
struct cowmem__copy_batch *cowmem__copier_begin(void (*task)(void *), void *arg);
void cowmem__copier_task_done(struct cowmem__copy_batch *batch);
void cowmem__copier_add(struct cowmem__copy_batch *batch, const struct cowmem__page_job *job);
void cowmem__copier_finish(struct cowmem__copy_batch *batch);
void cowmem__copier_quit(void); /* the last region is gone: the helper exits */

/* ---- fence.c: holds a head's accesses while a fold moves its tables ---- */

/* Registers the head on the fence instead of the library's descriptor
 * (MISSING and MINOR): accesses wait, and its page tables move whole. A
 * negative errno: no fence here, and the head is as it was. */
int cowmem__fence_raise(struct cowmem_region *head);
/* Back on the library's descriptor (MISSING); the waiting accesses retry. */
void cowmem__fence_lower(struct cowmem_region *head);
void cowmem__fence_leave(char *addr, size_t len);
void cowmem__fence_expect_move(void);
void cowmem__fence_moved(void);
/* With the last region gone (lock held): the fence to join after unlocking. */
struct cowmem__fence *cowmem__fence_close(void);
void cowmem__fence_join(struct cowmem__fence *fence);
void cowmem__fence_fork_child(void);

#endif /* COWMEM_ENGINE_H */
