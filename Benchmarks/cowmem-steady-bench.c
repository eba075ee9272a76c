/*
 * cowmem-steady-bench.c - the loop CowMem exists for: change a little,
 * snapshot, repeat, for a long time.
 *
 * Each iteration writes one byte into each of k distinct random pages of the
 * working buffer (k = rate x pages; seeded, the same pages in every approach)
 * - "writes", timed - and then takes a snapshot - "snapshot", timed. The last
 * KEEP snapshots are kept; the one that falls out of that window is destroyed
 * inside the snapshot time. Approaches:
 *
 *   clone    W = a populated region; snapshot = cowmem_clone(W); W stays the
 *            working region
 *   newest   snapshot = S = cowmem_clone(W); W goes into the ring as the
 *            snapshot and S becomes the working region (the newest clone is
 *            the one edited)
 *   memcpy   a ring of KEEP warm buffers; snapshot = memcpy of the whole
 *            working buffer into the oldest
 *   changed  the same ring, but only the pages changed since that buffer was
 *            last written are copied: the union of the last KEEP iterations'
 *            page lists, deduplicated with a per-page stamp (what a program
 *            that tracks its own changes does)
 *   fork     snapshot = fork() of a child that only pause()s and so holds the
 *            snapshot through the kernel's copy-on-write; the oldest child is
 *            killed and reaped inside the snapshot time; the writes pay the
 *            kernel's copy-on-write faults in the parent
 *
 * Every approach runs in a child process of its own, one after another, so
 * one approach's memory, page tables or library threads never touch the
 * next; the child reports through a small shared mapping. The snapshots of
 * clone, newest, memcpy and changed are checked against a model at a few
 * iterations and at the end (a mismatch stops the program): the bytes written
 * encode the iteration, and the model keeps, per page, the iteration of its
 * last write plus an undo log of the last KEEP iterations.
 *
 * Memory, three deltas from just before an approach's setup to its end
 * (before teardown):
 *   system  AnonPages + Shmem of /proc/meminfo: system-wide, because fork
 *           children hold their pages in other processes and regions hold
 *           theirs in memfds; but every other process on the machine moves it;
 *   held    what the approach's own processes hold, which nothing else moves:
 *           Pss_Anon (smaps_rollup) of the approach's process and of its
 *           snapshot children (PSS divides a shared page among the processes
 *           mapping it, so the sum counts each page once), plus the allocated
 *           blocks of the memfds the process has open (the regions' storage,
 *           mapped or not); the ratios use this one;
 *   own     RssAnon + RssShmem of the approach's process alone (a shmem page
 *           mapped by two regions counts twice; children are not in it).
 *
 * Usage: cowmem-steady-bench [--sizes 256,1024] [--rates 1,10]
 *        [--iterations 300] [--keep 8] [--approaches clone,newest,...]
 *        [--seed N] [--max-seconds 600] [--csv FILE]
 * A benchmark, not a test: it bounds nothing, and exits 0 unless it cannot
 * run at all or a snapshot holds the wrong bytes.
 */
#define _GNU_SOURCE
#include <cowmem.h>

#include "bench_util.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_LIST 16
#define MAX_HOLDERS 1000 /* --keep's limit */

static size_t page_size;

/* ---- What one run of one approach is ------------------------------------ */

/* One size and rate: everything an approach's child needs to know. */
struct setting {
	unsigned size_mib;
	double rate; /* percent of the pages written per iteration */
	size_t size, pages, k;
	unsigned iterations, keep;
	uint64_t seed;
	double max_seconds;
};

enum stop { RAN_TO_THE_END, STOPPED_BY_TIME, STOPPED_BY_MEMORY };

/*
 * What an approach's child reports, in a MAP_SHARED mapping the parent made
 * before the fork: written as the run goes, so a child killed half way still
 * leaves the iterations it finished.
 */
struct outcome {
	unsigned done; /* iterations finished */
	int stop;      /* enum stop */
	double setup_s, loop_s;
	double system_mib, held_mib, own_mib; /* see struct memory */
	long long available_floor;  /* STOPPED_BY_MEMORY: the floor, bytes */
	unsigned checks;
	size_t compared;
	/* snapshot_s, writes_s, snapshot_cpu_s, snapshot_thread_cpu_s and
	 * snapshot_switches, each [iterations] */
	double samples[];
};

enum { SAMPLE_KINDS = 5 };

static size_t outcome_bytes(const struct setting *s)
{
	return sizeof(struct outcome) +
	       SAMPLE_KINDS * (size_t)s->iterations * sizeof(double);
}

static double *snapshot_s(struct outcome *o)
{
	return o->samples;
}

static double *writes_s(struct outcome *o, const struct setting *s)
{
	return o->samples + s->iterations;
}

/* CPU time of every thread of the process during the snapshot: the
 * library's helper threads included. */
static double *snapshot_cpu_s(struct outcome *o, const struct setting *s)
{
	return o->samples + 2 * (size_t)s->iterations;
}

/* CPU time of the thread that called the snapshot, during it: with the
 * wall time it tells waiting (for another CPU, a lock, another process)
 * from working. */
static double *snapshot_thread_cpu_s(struct outcome *o, const struct setting *s)
{
	return o->samples + 3 * (size_t)s->iterations;
}

/* Involuntary context switches of the calling thread during the snapshot:
 * how often something else took its CPU. */
static double *snapshot_switches(struct outcome *o, const struct setting *s)
{
	return o->samples + 4 * (size_t)s->iterations;
}

struct cpu_mark {
	double wall, process, thread;
	long involuntary;
};

static double clock_seconds(clockid_t clock)
{
	struct timespec t;
	clock_gettime(clock, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

static struct cpu_mark cpu_mark_now(void)
{
	struct rusage usage;
	getrusage(RUSAGE_THREAD, &usage);
	return (struct cpu_mark){
		now_seconds(), clock_seconds(CLOCK_PROCESS_CPUTIME_ID),
		clock_seconds(CLOCK_THREAD_CPUTIME_ID), usage.ru_nivcsw,
	};
}

/* One approach's run, inside its child. `work` is where the next writes go;
 * `state` belongs to the approach. */
struct loop {
	const struct setting *set;
	const char *name;
	const uint32_t *schedule; /* iterations x k page numbers */
	unsigned char *work;
	void *state;
};

struct approach {
	const char *name;
	bool verified;       /* its snapshots are readable here and checked */
	bool copies_in_full; /* holds keep + 1 full buffers (memory check) */
	void (*setup)(struct loop *);
	void (*snapshot)(struct loop *, unsigned iteration);
	/* The data of the kept snapshot taken at `iteration`. */
	const unsigned char *(*kept)(const struct loop *, unsigned iteration);
	void (*teardown)(struct loop *);
	/* The processes besides this one that hold its memory (fork's
	 * children); NULL: none. Returns how many it stored. */
	int (*holders)(const struct loop *, pid_t *out, int cap);
};

static const uint32_t *pages_of(const struct loop *l, unsigned iteration)
{
	return l->schedule + (size_t)(iteration - 1) * l->set->k;
}

static unsigned slot_of(const struct loop *l, unsigned iteration)
{
	return iteration % l->set->keep;
}

/* The byte iteration i writes (0: the populated content). Never 0, so a
 * page that lost its data (reads as zeros) is caught; 251 is prime, so
 * neighbouring iterations always differ. */
static unsigned char byte_for(unsigned iteration)
{
	return (unsigned char)(1 + iteration % 251);
}

static void *checked_malloc(size_t bytes)
{
	void *p = malloc(bytes ? bytes : 1);
	if (!p)
		die("out of memory (%zu bytes)", bytes);
	return p;
}

/* ---- Memory -------------------------------------------------------------- */

/* Pss_Anon of a process; 0 if it is gone. */
static long long pss_anon(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
	long long bytes = proc_kib_field(path, "Pss_Anon");
	return bytes < 0 ? 0 : bytes;
}

struct memory {
	long long system; /* AnonPages + Shmem, the whole machine */
	long long held;   /* Pss_Anon of this process and `others`, + memfds */
	long long own;    /* RssAnon + RssShmem of this process */
};

static struct memory memory_now(const pid_t *others, int count)
{
	long long held = pss_anon(getpid()) + own_memfd_bytes();
	for (int i = 0; i < count; i++)
		held += pss_anon(others[i]);
	return (struct memory){
		proc_kib_field("/proc/meminfo", "AnonPages") +
			proc_kib_field("/proc/meminfo", "Shmem"),
		held,
		proc_kib_field("/proc/self/status", "RssAnon") +
			proc_kib_field("/proc/self/status", "RssShmem"),
	};
}

/* The figure once the approach's own memory stops moving (two readings 10 ms
 * apart within 256 KiB, at most 50 readings): the library frees some memory
 * on a thread of its own just after a call returns. The system figure is
 * read with it but cannot be waited for: other processes move it. */
static struct memory memory_settled(const pid_t *others, int count)
{
	struct memory last = memory_now(others, count);
	for (int i = 0; i < 50; i++) {
		nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
		struct memory m = memory_now(others, count);
		bool quiet = llabs(m.held - last.held) <= 256 * 1024;
		last = m;
		if (quiet)
			break;
	}
	return last;
}

static long long memory_available(void)
{
	return proc_kib_field("/proc/meminfo", "MemAvailable");
}

/* Below this much available memory an approach stops: better a short row
 * than the OOM killer choosing a victim on a shared machine. */
static long long memory_floor(void)
{
	long long total = proc_kib_field("/proc/meminfo", "MemTotal");
	long long least = (long long)(512 * MIB);
	return total / 20 > least ? total / 20 : least;
}

/* ---- The page schedule --------------------------------------------------- */

/*
 * Every iteration's k distinct random pages, chosen before anything is
 * measured and only read afterwards: in the fork approach every page the
 * parent writes is copied for its children, so choosing pages during the
 * loop would add copies that are not the workload's. Iteration i's pages are
 * a partial Fisher-Yates shuffle of the permutation iteration i - 1 left:
 * uniform, distinct, in random order, O(k) each.
 */
static uint32_t *make_schedule(const struct setting *s)
{
	uint32_t *order = checked_malloc(s->pages * sizeof *order);
	uint32_t *schedule = checked_malloc((size_t)s->iterations * s->k *
					    sizeof *schedule);
	for (size_t p = 0; p < s->pages; p++)
		order[p] = (uint32_t)p;
	uint64_t state = s->seed;
	for (unsigned i = 0; i < s->iterations; i++) {
		for (size_t n = 0; n < s->k; n++) {
			size_t j = n + (size_t)(splitmix(&state) % (s->pages - n));
			uint32_t t = order[n];
			order[n] = order[j];
			order[j] = t;
		}
		memcpy(schedule + (size_t)i * s->k, order, s->k * sizeof *order);
	}
	free(order);
	return schedule;
}

static void write_pages(unsigned char *work, const uint32_t *list, size_t k,
			unsigned char byte)
{
	for (size_t n = 0; n < k; n++)
		work[(size_t)list[n] * page_size] = byte;
}

/* ---- The model the snapshots are checked against --------------------------- */

/*
 * The content of the working buffer after iteration i is known from, per
 * page, the iteration of its last write (`last`). The snapshot of an older
 * iteration j is that with iterations j+1..i undone, so `before` logs, for
 * each of the last KEEP iterations, what `last` said of its pages before it
 * wrote them. A check rebuilds older models in `scratch`. All three are
 * allocated and touched before the memory baseline.
 */
struct model {
	uint32_t *last, *before, *scratch;
	uint64_t rng; /* samples pages; apart from the schedule's generator */
	unsigned checks;
	size_t compared;
};

static uint32_t *zeroed_words(size_t count)
{
	uint32_t *p = checked_malloc(count * sizeof *p);
	memset(p, 0, count * sizeof *p); /* touched now, not in the loop */
	return p;
}

static void model_init(struct model *m, const struct setting *s)
{
	*m = (struct model){
		.last = zeroed_words(s->pages),
		.before = zeroed_words((size_t)s->keep * s->k),
		.scratch = zeroed_words(s->pages),
		.rng = s->seed ^ 0x6368656b6d6f64ULL,
	};
}

static void model_free(struct model *m)
{
	free(m->last);
	free(m->before);
	free(m->scratch);
}

static void model_learn(struct model *m, const struct loop *l, unsigned iteration)
{
	const uint32_t *list = pages_of(l, iteration);
	uint32_t *before = m->before + (size_t)slot_of(l, iteration) * l->set->k;
	for (size_t n = 0; n < l->set->k; n++) {
		before[n] = m->last[list[n]];
		m->last[list[n]] = iteration;
	}
}

/* scratch: the model of iteration - 1, from that of iteration. */
static void model_undo(struct model *m, const struct loop *l, unsigned iteration)
{
	const uint32_t *list = pages_of(l, iteration);
	const uint32_t *before = m->before + (size_t)slot_of(l, iteration) * l->set->k;
	for (size_t n = 0; n < l->set->k; n++)
		m->scratch[list[n]] = before[n];
}

static void compare_page(struct model *m, const struct loop *l, const char *what,
			 unsigned iteration, const unsigned char *data,
			 size_t page, const uint32_t *expected)
{
	unsigned char want = byte_for(expected[page]);
	unsigned char got = data[page * page_size];
	m->compared++;
	if (got != want)
		die("%s, %s, %g%%: %s of iteration %u: page %zu holds %u, "
		    "expected %u (written at iteration %u)", l->name,
		    size_name(l->set->size_mib), l->set->rate, what, iteration,
		    page, got, want, expected[page]);
}

/*
 * A few pages of the content `data` had at `iteration`: pages that iteration
 * wrote, pages the next one wrote (a snapshot must not see them) and random
 * ones. Reading a page of a clone may map it, so the sample stays small.
 */
static void compare_sample(struct model *m, const struct loop *l, const char *what,
			   unsigned iteration, unsigned now,
			   const unsigned char *data, const uint32_t *expected)
{
	size_t n = l->set->k < 16 ? l->set->k : 16;
	const uint32_t *mine = pages_of(l, iteration);
	for (size_t i = 0; i < n; i++)
		compare_page(m, l, what, iteration, data, mine[i], expected);
	if (iteration < now) {
		const uint32_t *later = pages_of(l, iteration + 1);
		for (size_t i = 0; i < n; i++)
			compare_page(m, l, what, iteration, data, later[i], expected);
	}
	for (int i = 0; i < 32; i++)
		compare_page(m, l, what, iteration, data,
			     (size_t)(splitmix(&m->rng) % l->set->pages), expected);
}

/* The working buffer and every kept snapshot, newest first. */
static void verify(const struct approach *a, const struct loop *l,
		   struct model *m, unsigned now)
{
	const struct setting *s = l->set;
	compare_sample(m, l, "the working buffer", now, now, l->work, m->last);
	memcpy(m->scratch, m->last, s->pages * sizeof *m->last);
	unsigned oldest = now > s->keep ? now - s->keep + 1 : 1;
	for (unsigned j = now; j >= oldest; j--) {
		compare_sample(m, l, "the snapshot", j, now, a->kept(l, j),
			       m->scratch);
		model_undo(m, l, j);
	}
	m->checks++;
}

/* At the first iteration, when the ring first wraps, at 10 and 100; and at
 * the end, whatever the end is. */
static bool check_at(const struct setting *s, unsigned iteration)
{
	return iteration == 1 || iteration == 10 || iteration == 100 ||
	       iteration == s->keep + 1;
}

/* ---- clone: snapshot = cowmem_clone(W), W stays the working region --------- */

struct region_ring {
	cowmem_region *work;
	cowmem_region **ring; /* keep slots; slot i % keep holds iteration i */
};

static cowmem_region *populated_region(size_t size)
{
	cowmem_region *r = cowmem_create(size);
	if (!r)
		die("cowmem_create(%zu MiB): %s", size / MIB, strerror(errno));
	memset(cowmem_data(r), byte_for(0), size);
	return r;
}

static cowmem_region *clone_of(cowmem_region *source)
{
	cowmem_region *r = cowmem_clone(source);
	if (!r)
		die("cowmem_clone: %s", strerror(errno));
	return r;
}

static void destroy(cowmem_region *r)
{
	if (cowmem_destroy(r) < 0)
		die("cowmem_destroy: %s", strerror(errno));
}

static void region_ring_setup(struct loop *l)
{
	struct region_ring *s = checked_malloc(sizeof *s);
	s->work = populated_region(l->set->size);
	s->ring = calloc(l->set->keep, sizeof *s->ring);
	if (!s->ring)
		die("out of memory");
	l->work = cowmem_data(s->work);
	l->state = s;
}

/* The new snapshot first, then the one that fell out of the window: the
 * order a program keeping a history would use. */
static void clone_snapshot(struct loop *l, unsigned iteration)
{
	struct region_ring *s = l->state;
	cowmem_region *snapshot = clone_of(s->work);
	destroy(s->ring[slot_of(l, iteration)]);
	s->ring[slot_of(l, iteration)] = snapshot;
}

/* newest: W goes into the ring as the snapshot, its clone is written next. */
static void newest_snapshot(struct loop *l, unsigned iteration)
{
	struct region_ring *s = l->state;
	cowmem_region *next = clone_of(s->work);
	destroy(s->ring[slot_of(l, iteration)]);
	s->ring[slot_of(l, iteration)] = s->work;
	s->work = next;
	l->work = cowmem_data(next);
}

static const unsigned char *region_ring_kept(const struct loop *l, unsigned iteration)
{
	const struct region_ring *s = l->state;
	return cowmem_data(s->ring[slot_of(l, iteration)]);
}

static void region_ring_teardown(struct loop *l)
{
	struct region_ring *s = l->state;
	for (unsigned i = 0; i < l->set->keep; i++)
		destroy(s->ring[i]);
	destroy(s->work);
	free(s->ring);
	free(s);
}

/* ---- memcpy and changed: a ring of warm buffers ------------------------------ */

struct buffer_ring {
	unsigned char *work;
	unsigned char **ring;
	uint32_t *stamp; /* changed: per page, the iteration that last copied it */
};

/* Populated like the working buffer, so `changed` may copy only changes, and
 * warm, so neither approach pays first-touch faults in its copies. */
static unsigned char *populated_buffer(size_t size)
{
	unsigned char *p = map_anonymous(size);
	memset(p, byte_for(0), size);
	return p;
}

static void buffer_ring_setup(struct loop *l)
{
	struct buffer_ring *s = checked_malloc(sizeof *s);
	s->work = populated_buffer(l->set->size);
	s->ring = checked_malloc(l->set->keep * sizeof *s->ring);
	for (unsigned i = 0; i < l->set->keep; i++)
		s->ring[i] = populated_buffer(l->set->size);
	s->stamp = zeroed_words(l->set->pages);
	l->work = s->work;
	l->state = s;
}

static void memcpy_snapshot(struct loop *l, unsigned iteration)
{
	struct buffer_ring *s = l->state;
	memcpy(s->ring[slot_of(l, iteration)], s->work, l->set->size);
}

/*
 * The buffer being overwritten last held iteration - keep (or the populated
 * content), so it differs from the working buffer in exactly the pages
 * written by the last `keep` iterations: copy their union, each page once
 * (the stamp says whether this snapshot copied it already).
 */
static void changed_snapshot(struct loop *l, unsigned iteration)
{
	struct buffer_ring *s = l->state;
	unsigned char *target = s->ring[slot_of(l, iteration)];
	unsigned keep = l->set->keep;
	unsigned first = iteration > keep ? iteration - keep + 1 : 1;
	for (unsigned j = first; j <= iteration; j++) {
		const uint32_t *list = pages_of(l, j);
		for (size_t n = 0; n < l->set->k; n++) {
			uint32_t p = list[n];
			if (s->stamp[p] == iteration)
				continue;
			s->stamp[p] = iteration;
			memcpy(target + (size_t)p * page_size,
			       s->work + (size_t)p * page_size, page_size);
		}
	}
}

static const unsigned char *buffer_ring_kept(const struct loop *l, unsigned iteration)
{
	const struct buffer_ring *s = l->state;
	return s->ring[slot_of(l, iteration)];
}

static void buffer_ring_teardown(struct loop *l)
{
	struct buffer_ring *s = l->state;
	for (unsigned i = 0; i < l->set->keep; i++)
		munmap(s->ring[i], l->set->size);
	munmap(s->work, l->set->size);
	free(s->stamp);
	free(s->ring);
	free(s);
}

/* ---- fork: each snapshot is a child holding the pages -------------------------- */

struct children {
	unsigned char *work;
	pid_t *ring;
};

/* The snapshot's holder: does nothing, so it never writes a shared page.
 * It dies with its parent, even if the parent is killed. */
static void hold_snapshot(pid_t parent) __attribute__((noreturn));
static void hold_snapshot(pid_t parent)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(0);
	for (;;)
		pause();
}

static void fork_setup(struct loop *l)
{
	struct children *s = checked_malloc(sizeof *s);
	s->work = populated_buffer(l->set->size);
	s->ring = calloc(l->set->keep, sizeof *s->ring);
	if (!s->ring)
		die("out of memory");
	l->work = s->work;
	l->state = s;
}

static void end_child(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

static void fork_snapshot(struct loop *l, unsigned iteration)
{
	struct children *s = l->state;
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0)
		hold_snapshot(parent);
	/* Reaping waits for the child's address space to be torn down, which
	 * is the cost of dropping this snapshot. */
	end_child(s->ring[slot_of(l, iteration)]);
	s->ring[slot_of(l, iteration)] = pid;
}

static int fork_holders(const struct loop *l, pid_t *out, int cap)
{
	const struct children *s = l->state;
	int n = 0;
	for (unsigned i = 0; i < l->set->keep && n < cap; i++)
		if (s->ring[i] > 0)
			out[n++] = s->ring[i];
	return n;
}

static void fork_teardown(struct loop *l)
{
	struct children *s = l->state;
	for (unsigned i = 0; i < l->set->keep; i++)
		end_child(s->ring[i]);
	munmap(s->work, l->set->size);
	free(s->ring);
	free(s);
}

static const struct approach approaches[] = {
	{ "clone", true, false, region_ring_setup, clone_snapshot,
	  region_ring_kept, region_ring_teardown, NULL },
	{ "newest", true, false, region_ring_setup, newest_snapshot,
	  region_ring_kept, region_ring_teardown, NULL },
	{ "memcpy", true, true, buffer_ring_setup, memcpy_snapshot,
	  buffer_ring_kept, buffer_ring_teardown, NULL },
	{ "changed", true, true, buffer_ring_setup, changed_snapshot,
	  buffer_ring_kept, buffer_ring_teardown, NULL },
	{ "fork", false, false, fork_setup, fork_snapshot, NULL, fork_teardown,
	  fork_holders },
};
enum { APPROACHES = sizeof approaches / sizeof approaches[0] };

/* ---- One approach, in its child ---------------------------------------------------- */

static bool out_of_time(const struct setting *s, double start)
{
	return now_seconds() - start > s->max_seconds;
}

static void run_iterations(const struct approach *a, struct loop *l,
			   struct model *m, struct outcome *out, double start)
{
	const struct setting *s = l->set;
	long long lowest = memory_floor();
	for (unsigned i = 1; i <= s->iterations; i++) {
		double t0 = now_seconds();
		write_pages(l->work, pages_of(l, i), s->k, byte_for(i));
		struct cpu_mark before = cpu_mark_now();
		a->snapshot(l, i);
		struct cpu_mark after = cpu_mark_now();
		writes_s(out, s)[i - 1] = before.wall - t0;
		snapshot_s(out)[i - 1] = after.wall - before.wall;
		snapshot_cpu_s(out, s)[i - 1] = after.process - before.process;
		snapshot_thread_cpu_s(out, s)[i - 1] = after.thread - before.thread;
		snapshot_switches(out, s)[i - 1] = after.involuntary - before.involuntary;
		out->done = i;
		if (a->verified) {
			model_learn(m, l, i);
			if (check_at(s, i))
				verify(a, l, m, i);
			/* As it goes: a child killed later still says what
			 * it checked. */
			out->checks = m->checks;
			out->compared = m->compared;
		}
		if (i < s->iterations && out_of_time(s, start)) {
			out->stop = STOPPED_BY_TIME;
			return;
		}
		if (i < s->iterations && memory_available() < lowest) {
			out->stop = STOPPED_BY_MEMORY;
			out->available_floor = lowest;
			return;
		}
	}
}

/*
 * Setup, the loop, memory at the end (before anything is freed), a last
 * check, teardown. The schedule and the model exist before the baseline, so
 * the memory figure is the approach's alone.
 */
static void run_approach(const struct approach *a, const struct setting *s,
			 struct outcome *out)
{
	uint32_t *schedule = make_schedule(s);
	struct loop l = { .set = s, .name = a->name, .schedule = schedule };
	struct model m = { 0 };
	if (a->verified)
		model_init(&m, s);
	struct memory base = memory_settled(NULL, 0);
	double start = now_seconds();
	a->setup(&l);
	out->setup_s = now_seconds() - start;
	run_iterations(a, &l, &m, out, start);
	out->loop_s = now_seconds() - start - out->setup_s;
	pid_t holders[MAX_HOLDERS];
	int count = a->holders ? a->holders(&l, holders, MAX_HOLDERS) : 0;
	struct memory end = memory_settled(holders, count);
	out->system_mib = (double)(end.system - base.system) / (double)MIB;
	out->held_mib = (double)(end.held - base.held) / (double)MIB;
	out->own_mib = (double)(end.own - base.own) / (double)MIB;
	if (a->verified && !check_at(s, out->done))
		verify(a, &l, &m, out->done);
	out->checks = m.checks;
	out->compared = m.compared;
	a->teardown(&l);
	if (a->verified)
		model_free(&m);
	free(schedule);
}

/* ---- The parent: one child per approach ------------------------------------------ */

struct result {
	const struct approach *a;
	const char *skipped; /* why it did not run, or NULL */
	bool killed;         /* by the watchdog */
	double wall_s;
	double others_pct, steal_pct; /* of the machine's CPU time meanwhile */
	struct outcome *out; /* the parent's copy */
};

/* The machine's CPU time so far, from /proc/stat: everything, idle (with
 * iowait) and stolen by the hypervisor, in seconds. */
struct machine_time {
	double total, idle, steal;
};

static struct machine_time machine_time_now(void)
{
	unsigned long long v[8] = { 0 };
	FILE *f = fopen("/proc/stat", "r");
	if (f) {
		if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
			   &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) != 8)
			memset(v, 0, sizeof v);
		fclose(f);
	}
	double tick = 1.0 / (double)sysconf(_SC_CLK_TCK), total = 0;
	for (int i = 0; i < 8; i++)
		total += (double)v[i];
	return (struct machine_time){ total * tick, (double)(v[3] + v[4]) * tick,
				      (double)v[7] * tick };
}

/* The child's last resort: an iteration that never returns (or a setup that
 * takes forever) would otherwise hang the whole run. The budget is checked
 * between iterations; this catches what it cannot. */
static unsigned watchdog_seconds(const struct setting *s)
{
	double seconds = 2 * s->max_seconds + 120;
	return seconds > 86400 ? 86400 : (unsigned)seconds;
}

static struct outcome *shared_outcome(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap of the result area: %s", strerror(errno));
	memset(p, 0, bytes); /* touched here, so it moves no memory figure */
	return p;
}

static const char *too_little_memory(const struct approach *a, const struct setting *s)
{
	static char reason[128];
	double buffers = a->copies_in_full ? s->keep + 1 : 2;
	long long need = (long long)(buffers * (double)s->size) + memory_floor();
	long long available = memory_available();
	if (available < 0 || available >= need)
		return NULL;
	snprintf(reason, sizeof reason, "skipped: needs about %lld MiB available, "
		 "the machine has %lld MiB", need / (long long)MIB,
		 available / (long long)MIB);
	return reason;
}

static void run_in_child(const struct approach *a, const struct setting *s,
			 struct result *r)
{
	*r = (struct result){ .a = a, .skipped = too_little_memory(a, s) };
	size_t bytes = outcome_bytes(s);
	r->out = checked_malloc(bytes);
	memset(r->out, 0, bytes);
	if (r->skipped)
		return;
	struct outcome *shared = shared_outcome(bytes);
	fflush(stdout);
	fflush(stderr);
	double t0 = now_seconds();
	struct machine_time m0 = machine_time_now();
	pid_t pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		alarm(watchdog_seconds(s));
		run_approach(a, s, shared);
		_exit(0);
	}
	int status;
	struct rusage usage;
	while (wait4(pid, &status, 0, &usage) < 0)
		if (errno != EINTR)
			die("wait4: %s", strerror(errno));
	r->wall_s = now_seconds() - t0;
	/* What else the machine did meanwhile: busy time that was not the
	 * child's (nor its reaped children's), and time the hypervisor gave
	 * to other machines. */
	struct machine_time m1 = machine_time_now();
	double total = m1.total - m0.total;
	double child = usage.ru_utime.tv_sec + usage.ru_utime.tv_usec * 1e-6 +
		       usage.ru_stime.tv_sec + usage.ru_stime.tv_usec * 1e-6;
	double busy = total - (m1.idle - m0.idle) - (m1.steal - m0.steal);
	r->others_pct = total > 0 ? fmax(0, busy - child) / total * 100 : NAN;
	r->steal_pct = total > 0 ? (m1.steal - m0.steal) / total * 100 : NAN;
	memcpy(r->out, shared, bytes);
	munmap(shared, bytes);
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
		r->killed = true;
	else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		die("%s at %s, %g%%: the child failed (%s %d)", a->name,
		    size_name(s->size_mib), s->rate,
		    WIFEXITED(status) ? "exit status" : "signal",
		    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

/* ---- Output ---------------------------------------------------------------------------- */

/* Mean of iterations from..to (1-based, inclusive); NaN unless all ran. */
static double mean_of(const double *v, unsigned done, unsigned from, unsigned to)
{
	if (from < 1 || from > to || to > done)
		return NAN;
	double sum = 0;
	for (unsigned i = from; i <= to; i++)
		sum += v[i - 1];
	return sum / (to - from + 1);
}

/* Median (which = 0.5) or maximum (1) of iterations from..to; NaN unless
 * all ran. */
static double quantile_of(const double *v, unsigned done, unsigned from,
			  unsigned to, double which)
{
	if (from < 1 || from > to || to > done)
		return NAN;
	size_t n = to - from + 1;
	double *sorted = checked_malloc(n * sizeof *sorted);
	memcpy(sorted, v + from - 1, n * sizeof *sorted);
	qsort(sorted, n, sizeof *sorted, compare_doubles);
	double q = which >= 1 ? sorted[n - 1] :
		   n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
	free(sorted);
	return q;
}

/* The windows the table compares: iterations 11-30, and the last 20%. */
struct windows {
	unsigned early_from, early_to, late_from, late_to;
};

static struct windows windows_of(const struct setting *s)
{
	unsigned n = s->iterations, tail = n / 5 ? n / 5 : 1;
	return (struct windows){ 11, n < 30 ? n : 30, n - tail + 1, n };
}

/* The iterations shown one by one: 1, 10, 100 and the last. */
static int shown_iterations(const struct setting *s, unsigned *out)
{
	static const unsigned marks[] = { 1, 10, 100 };
	int n = 0;
	for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++)
		if (marks[i] < s->iterations)
			out[n++] = marks[i];
	out[n++] = s->iterations;
	return n;
}

/* What the table compares, per approach. */
struct summary {
	double late_snapshot, late_writes, early_snapshot, memory;
};

static struct summary summarise(const struct result *r, const struct setting *s)
{
	struct windows w = windows_of(s);
	struct outcome *o = r->out;
	bool measured = !r->skipped && !r->killed;
	return (struct summary){
		mean_of(snapshot_s(o), o->done, w.late_from, w.late_to) * 1e3,
		mean_of(writes_s(o, s), o->done, w.late_from, w.late_to) * 1e3,
		mean_of(snapshot_s(o), o->done, w.early_from, w.early_to) * 1e3,
		measured ? o->held_mib : NAN,
	};
}

static const struct result *find_result(const struct result *results, int count,
					const char *name)
{
	for (int i = 0; i < count; i++)
		if (!strcmp(results[i].a->name, name))
			return &results[i];
	return NULL;
}

static const char *ratio(double a, double b)
{
	static char ring[16][32];
	static int next;
	char *s = ring[next++ % 16];
	double v = a / b;
	if (isnan(v) || isinf(v))
		return "-";
	snprintf(s, 32, "%s×", num(v));
	return s;
}

static const char *note_of(const struct result *r, const struct setting *s)
{
	static char note[256];
	const struct outcome *o = r->out;
	if (r->skipped)
		return r->skipped;
	if (r->killed)
		snprintf(note, sizeof note, "killed by the watchdog (%u s) after "
			 "iteration %u; no memory figure", watchdog_seconds(s), o->done);
	else if (o->stop == STOPPED_BY_TIME)
		snprintf(note, sizeof note, "stopped at iteration %u (%g s budget); "
			 "last snapshot %s ms", o->done, s->max_seconds,
			 num(snapshot_s(r->out)[o->done - 1] * 1e3));
	else if (o->stop == STOPPED_BY_MEMORY)
		snprintf(note, sizeof note, "stopped at iteration %u (MemAvailable "
			 "below %lld MiB); last snapshot %s ms", o->done,
			 o->available_floor / (long long)MIB,
			 num(snapshot_s(r->out)[o->done - 1] * 1e3));
	else
		note[0] = 0;
	return note;
}

static void print_table_header(const struct setting *s)
{
	unsigned shown[4];
	int n = shown_iterations(s, shown);
	struct windows w = windows_of(s);
	printf("| approach |");
	for (int i = 0; i < n; i++)
		printf(" #%u ms |", shown[i]);
	printf(" mean %u–%u ms | mean %u–%u ms | late ÷ early | writes %u–%u ms |"
	       " system MiB | held MiB | own MiB | snapshot ÷ fork |"
	       " snapshot ÷ changed | writes ÷ fork | held ÷ fork | note |\n|---|",
	       w.early_from, w.early_to, w.late_from, w.late_to, w.late_from,
	       w.late_to);
	for (int i = 0; i < n + 11; i++)
		printf("---:|");
	printf("---|\n");
}

static void print_row(const struct result *r, const struct setting *s,
		      const struct summary *by_fork, const struct summary *by_changed)
{
	unsigned shown[4];
	int n = shown_iterations(s, shown);
	struct summary m = summarise(r, s);
	struct outcome *o = r->out;
	printf("| %s |", r->a->name);
	for (int i = 0; i < n; i++)
		printf(" %s |", num(shown[i] <= o->done ?
				    snapshot_s(o)[shown[i] - 1] * 1e3 : NAN));
	bool measured = !r->skipped && !r->killed;
	printf(" %s | %s | %s | %s | %s | %s | %s |", num(m.early_snapshot),
	       num(m.late_snapshot), ratio(m.late_snapshot, m.early_snapshot),
	       num(m.late_writes), num(measured ? o->system_mib : NAN),
	       num(m.memory), num(measured ? o->own_mib : NAN));
	printf(" %s | %s | %s | %s | %s |\n",
	       ratio(m.late_snapshot, by_fork->late_snapshot),
	       ratio(m.late_snapshot, by_changed->late_snapshot),
	       ratio(m.late_writes, by_fork->late_writes),
	       ratio(m.memory, by_fork->memory), note_of(r, s));
}

static double snapshot_and_writes(const struct result *r, const struct setting *s,
				  const struct windows *w)
{
	struct outcome *o = r->out;
	return mean_of(snapshot_s(o), o->done, w->late_from, w->late_to) +
	       mean_of(writes_s(o, s), o->done, w->late_from, w->late_to);
}

static void print_after_table(const struct setting *s,
			      const struct result *results, int count)
{
	struct windows w = windows_of(s);
	printf("\nSnapshot median / maximum of iterations %u–%u, ms (a mean "
	       "hides whether the cost is steady or comes in spikes):",
	       w.late_from, w.late_to);
	for (int i = 0; i < count; i++) {
		struct outcome *o = results[i].out;
		printf("%s %s %s / %s", i ? ";" : "", results[i].a->name,
		       num(quantile_of(snapshot_s(o), o->done, w.late_from,
				       w.late_to, 0.5) * 1e3),
		       num(quantile_of(snapshot_s(o), o->done, w.late_from,
				       w.late_to, 1) * 1e3));
	}
	/* A clone that leaves its fold to the library's thread returns before
	 * the copies, and the writes that follow wait for them: only the sum
	 * compares the work. */
	const struct result *changed = NULL, *forked = NULL;
	for (int i = 0; i < count; i++) {
		if (strcmp(results[i].a->name, "changed") == 0 && !results[i].skipped)
			changed = &results[i];
		if (strcmp(results[i].a->name, "fork") == 0 && !results[i].skipped)
			forked = &results[i];
	}
	printf(".\nSnapshot + writes, mean of iterations %u–%u, ms, and ÷ changed, ÷ fork "
	       "(a clone returns before its fold's copies are done, and the writes after it "
	       "wait for them; fork()'s children leave theirs to the writes' copy-on-write "
	       "faults):", w.late_from, w.late_to);
	for (int i = 0; i < count; i++) {
		if (results[i].skipped)
			continue;
		double total = snapshot_and_writes(&results[i], s, &w);
		printf("%s %s %s", i ? ";" : "", results[i].a->name, num(total * 1e3));
		if (changed)
			printf(" (%s×", num(total / snapshot_and_writes(changed, s, &w)));
		if (forked)
			printf("%s%s×", changed ? ", " : " (",
			       num(total / snapshot_and_writes(forked, s, &w)));
		if (changed || forked)
			printf(")");
	}
	printf(".\nSnapshot CPU, median of iterations %u–%u, ms (the calling "
	       "thread / every thread of the process), and the calling thread's "
	       "involuntary context switches per snapshot (median / maximum): a "
	       "wall time far above the CPU time is time spent waiting for a "
	       "CPU or a lock:", w.late_from, w.late_to);
	for (int i = 0; i < count; i++) {
		struct outcome *o = results[i].out;
		printf("%s %s %s / %s, %s / %s", i ? ";" : "", results[i].a->name,
		       num(quantile_of(snapshot_thread_cpu_s(o, s), o->done,
				       w.late_from, w.late_to, 0.5) * 1e3),
		       num(quantile_of(snapshot_cpu_s(o, s), o->done, w.late_from,
				       w.late_to, 0.5) * 1e3),
		       num(quantile_of(snapshot_switches(o, s), o->done,
				       w.late_from, w.late_to, 0.5)),
		       num(quantile_of(snapshot_switches(o, s), o->done,
				       w.late_from, w.late_to, 1)));
	}
	printf(".\nThe machine's CPU time during each approach's run: other processes "
	       "/ stolen by the hypervisor (a noisy run shows here):");
	for (int i = 0; i < count; i++)
		if (!results[i].skipped)
			printf("%s %s %s%% / %s%%", i ? ";" : "", results[i].a->name,
			       num(results[i].others_pct), num(results[i].steal_pct));
	printf(".\nSetup + iterations, wall s:");
	for (int i = 0; i < count; i++) {
		const struct result *r = &results[i];
		if (r->killed)
			printf("%s %s killed after %s", i ? ";" : "", r->a->name,
			       num(r->wall_s));
		else if (!r->skipped)
			printf("%s %s %s + %s", i ? ";" : "", r->a->name,
			       num(r->out->setup_s), num(r->out->loop_s));
	}
	printf(".\nChecked against the model:");
	bool any = false;
	for (int i = 0; i < count; i++) {
		const struct result *r = &results[i];
		if (r->skipped || !r->a->verified)
			continue;
		printf("%s %s %u checks, %zu pages", any ? ";" : "", r->a->name,
		       r->out->checks, r->out->compared);
		any = true;
	}
	printf("%s\n", any ? "; every page compared matched." :
	       " nothing (fork's snapshots live in other processes).");
}

static void print_table(const struct setting *s, const struct result *results,
			int count)
{
	struct summary none = { NAN, NAN, NAN, NAN };
	const struct result *f = find_result(results, count, "fork");
	const struct result *c = find_result(results, count, "changed");
	struct summary by_fork = f ? summarise(f, s) : none;
	struct summary by_changed = c ? summarise(c, s) : none;
	printf("\n## %s, %g%% of the pages per iteration (k = %zu of %zu pages)\n\n",
	       size_name(s->size_mib), s->rate, s->k, s->pages);
	print_table_header(s);
	for (int i = 0; i < count; i++)
		print_row(&results[i], s, &by_fork, &by_changed);
	print_after_table(s, results, count);
	fflush(stdout);
}

static void append_csv(FILE *csv, const struct setting *s, const struct result *r)
{
	if (!csv)
		return;
	struct outcome *o = r->out;
	for (unsigned i = 1; i <= o->done; i++)
		fprintf(csv, "%s,%u,%g,%u,%.9g,%.9g,%.9g,%.9g,%g\n", r->a->name,
			s->size_mib, s->rate, i, snapshot_s(o)[i - 1],
			writes_s(o, s)[i - 1], snapshot_cpu_s(o, s)[i - 1],
			snapshot_thread_cpu_s(o, s)[i - 1],
			snapshot_switches(o, s)[i - 1]);
	fflush(csv);
}

/* ---- Options ------------------------------------------------------------------------------ */

struct options {
	unsigned sizes[MAX_LIST];
	int size_count;
	double rates[MAX_LIST];
	int rate_count;
	const struct approach *approaches[APPROACHES];
	int approach_count;
	unsigned iterations, keep;
	uint64_t seed;
	double max_seconds;
	const char *csv;
};

static int parse_numbers(const char *text, const char *what, double low,
			 double high, bool whole, double *out)
{
	int n = 0;
	for (const char *p = text; *p;) {
		char *end;
		errno = 0;
		double v = strtod(p, &end);
		if (end == p || errno || !(v >= low && v <= high) || n == MAX_LIST ||
		    (whole && v != floor(v)) || (*end && *end != ','))
			die("bad %s \"%s\" (%s %g..%g, comma-separated)", what, text,
			    whole ? "whole numbers" : "numbers", low, high);
		out[n++] = v;
		p = *end ? end + 1 : end;
	}
	if (n == 0)
		die("empty %s list", what);
	return n;
}

static double parse_one(const char *text, const char *what, double low,
			double high, bool whole)
{
	double v[MAX_LIST];
	if (parse_numbers(text, what, low, high, whole, v) != 1)
		die("%s takes one number, not \"%s\"", what, text);
	return v[0];
}

static void parse_approaches(const char *text, struct options *o)
{
	o->approach_count = 0;
	char *copy = strdup(text), *save = NULL;
	if (!copy)
		die("out of memory");
	for (char *name = strtok_r(copy, ",", &save); name;
	     name = strtok_r(NULL, ",", &save)) {
		int found = -1;
		for (int i = 0; i < APPROACHES; i++)
			if (!strcmp(name, approaches[i].name))
				found = i;
		if (found < 0)
			die("unknown approach \"%s\" (clone, newest, memcpy, "
			    "changed, fork)", name);
		for (int i = 0; i < o->approach_count; i++)
			if (o->approaches[i] == &approaches[found])
				die("approach \"%s\" given twice", name);
		o->approaches[o->approach_count++] = &approaches[found];
	}
	free(copy);
	if (o->approach_count == 0)
		die("empty approach list");
}

static void usage(void)
{
	printf("usage: cowmem-steady-bench [--sizes MIB,...] [--rates PERCENT,...]\n"
	       "         [--iterations N] [--keep N] [--approaches NAME,...]\n"
	       "         [--seed N] [--max-seconds S] [--csv FILE]\n"
	       "  --sizes        region sizes in MiB (default 256,1024)\n"
	       "  --rates        percent of the pages written per iteration (default 1,10)\n"
	       "  --iterations   write + snapshot iterations (default 300)\n"
	       "  --keep         snapshots kept (default 8)\n"
	       "  --approaches   any of clone,newest,memcpy,changed,fork (default all)\n"
	       "  --seed         seed of the random page choice (default 1)\n"
	       "  --max-seconds  time budget per approach; it stops early after it (default 600)\n"
	       "  --csv          write every iteration's samples to FILE\n"
	       "The chart: Benchmarks/steady-chart.sh FILE.csv OUT.png\n");
}

static void parse_options(int argc, char **argv, struct options *o)
{
	double v[MAX_LIST];
	*o = (struct options){ .sizes = { 256, 1024 }, .size_count = 2,
			       .rates = { 1, 10 }, .rate_count = 2,
			       .iterations = 300, .keep = 8, .seed = 1,
			       .max_seconds = 600 };
	for (int i = 0; i < APPROACHES; i++)
		o->approaches[o->approach_count++] = &approaches[i];
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
			usage();
			exit(0);
		}
		const char *value = i + 1 < argc ? argv[++i] : NULL;
		if (!value)
			die("%s needs a value (see --help)", arg);
		if (!strcmp(arg, "--sizes")) {
			o->size_count = parse_numbers(value, "size list", 1, 1 << 20,
						      true, v);
			for (int k = 0; k < o->size_count; k++)
				o->sizes[k] = (unsigned)v[k];
		} else if (!strcmp(arg, "--rates")) {
			o->rate_count = parse_numbers(value, "rate list", 0.0001, 100,
						      false, o->rates);
		} else if (!strcmp(arg, "--iterations")) {
			o->iterations = (unsigned)parse_one(value, "--iterations", 1,
							    1e6, true);
		} else if (!strcmp(arg, "--keep")) {
			o->keep = (unsigned)parse_one(value, "--keep", 1, 1000, true);
		} else if (!strcmp(arg, "--approaches")) {
			parse_approaches(value, o);
		} else if (!strcmp(arg, "--seed")) {
			o->seed = strtoull(value, NULL, 10);
		} else if (!strcmp(arg, "--max-seconds")) {
			o->max_seconds = parse_one(value, "--max-seconds", 0.001,
						   1e6, false);
		} else if (!strcmp(arg, "--csv")) {
			o->csv = value;
		} else {
			die("unknown option %s (see --help)", arg);
		}
	}
}

static struct setting setting_of(const struct options *o, unsigned mib, double rate)
{
	struct setting s = { .size_mib = mib, .rate = rate,
			     .size = (size_t)mib * MIB, .iterations = o->iterations,
			     .keep = o->keep, .seed = o->seed,
			     .max_seconds = o->max_seconds };
	s.pages = s.size / page_size;
	if (s.pages > UINT32_MAX)
		die("%u MiB is too large", mib);
	s.k = (size_t)llround((double)s.pages * rate / 100);
	s.k = s.k < 1 ? 1 : s.k > s.pages ? s.pages : s.k;
	return s;
}

/* ---- The machine ---------------------------------------------------------------------------- */

/* The backend as a child sees it: the library starts threads, and this
 * process forks every approach, so it must never start the library itself. */
static void probe_backend(char *out, size_t size)
{
	int fds[2];
	if (pipe(fds) < 0)
		die("pipe: %s", strerror(errno));
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		const char *backend = cowmem_backend(), *features = cowmem_features();
		dprintf(fds[1], "%s (features: %s)", backend ? backend : "?",
			features ? features : "?");
		_exit(0);
	}
	close(fds[1]);
	ssize_t n = read(fds[0], out, size - 1);
	out[n > 0 ? n : 0] = 0;
	close(fds[0]);
	waitpid(pid, NULL, 0);
	if (n <= 0)
		snprintf(out, size, "?");
}

static void print_machine(const struct options *o)
{
	struct utsname u;
	uname(&u);
	char cpu[256];
	cpu_model(cpu, sizeof cpu);
	char thp[256], uffd[64], load[128], backend[256];
	first_line_of("/sys/kernel/mm/transparent_hugepage/enabled", thp, sizeof thp);
	first_line_of("/proc/sys/vm/unprivileged_userfaultfd", uffd, sizeof uffd);
	load_average(load, sizeof load);
	probe_backend(backend, sizeof backend);
	printf("# CowMem steady state: write k pages, snapshot, keep %u, repeat\n\n",
	       o->keep);
	printf("- machine: %ld CPUs online, %lld MiB RAM, CPU: %s\n",
	       sysconf(_SC_NPROCESSORS_ONLN),
	       proc_kib_field("/proc/meminfo", "MemTotal") / (long long)MIB, cpu);
	printf("- kernel: %s %s %s; page size %zu; THP (anonymous): %s; "
	       "vm.unprivileged_userfaultfd=%s; uid %d\n", u.sysname, u.release,
	       u.machine, page_size, thp, uffd, (int)getuid());
	printf("- libcowmem %d.%d.%d, backend %s\n", COWMEM_VERSION_MAJOR,
	       COWMEM_VERSION_MINOR, COWMEM_VERSION_PATCH, backend);
	printf("- load average at the start: %s\n", load);
	printf("- %u iterations, %u snapshots kept, seed %" PRIu64 ", time budget "
	       "%g s per approach; approaches:", o->iterations, o->keep, o->seed,
	       o->max_seconds);
	for (int i = 0; i < o->approach_count; i++)
		printf("%s %s", i ? "," : "", o->approaches[i]->name);
	printf("\n- each iteration writes one byte into each of k distinct random "
	       "pages (\"writes\"), then takes a snapshot and drops the one that "
	       "fell out of the last %u (\"snapshot\"); #N = the snapshot of "
	       "iteration N; means are of the snapshot unless named writes\n",
	       o->keep);
	printf("- memory, as deltas from before the approach's setup to its last "
	       "iteration (MiB): system = AnonPages + Shmem of /proc/meminfo (the "
	       "whole machine: other processes move it too); held = Pss_Anon of "
	       "the approach's process and its snapshot children + the allocated "
	       "blocks of its memfds (what the approach holds; the ratio uses it); "
	       "own = RssAnon + RssShmem of the approach's process\n");
	printf("- ratios are against the fork and changed rows of the same "
	       "table; late = the mean of the last 20%% of the iterations, early = "
	       "of iterations 11–30\n");
	fflush(stdout);
}

/* ---- Main ------------------------------------------------------------------------------------- */

static FILE *open_csv(const char *path)
{
	if (!path)
		return NULL;
	FILE *f = fopen(path, "w");
	if (!f)
		die("cannot write %s: %s", path, strerror(errno));
	fprintf(f, "approach,size_mib,rate_pct,iteration,snapshot_s,writes_s,"
		   "snapshot_cpu_s,snapshot_thread_cpu_s,snapshot_switches\n");
	return f;
}

static void progress(const struct setting *s, const struct result *r)
{
	if (r->skipped)
		fprintf(stderr, "%s, %g%%, %s: %s\n", size_name(s->size_mib),
			s->rate, r->a->name, r->skipped);
	else
		fprintf(stderr, "%s, %g%%, %s: %u iterations in %.1f s%s\n",
			size_name(s->size_mib), s->rate, r->a->name, r->out->done,
			r->wall_s, r->killed ? " (killed by the watchdog)" :
			r->out->stop ? " (stopped early)" : "");
}

static void run_setting(const struct options *o, const struct setting *s, FILE *csv)
{
	struct result results[APPROACHES];
	for (int i = 0; i < o->approach_count; i++) {
		run_in_child(o->approaches[i], s, &results[i]);
		progress(s, &results[i]);
		append_csv(csv, s, &results[i]);
	}
	print_table(s, results, o->approach_count);
	for (int i = 0; i < o->approach_count; i++)
		free(results[i].out);
}

int main(int argc, char **argv)
{
	struct options o;
	page_size = (size_t)sysconf(_SC_PAGESIZE);
	parse_options(argc, argv, &o);
	struct memory m = memory_now(NULL, 0);
	if (m.system < 0 || m.own < 0 || m.held < 0 || memory_available() < 0 ||
	    proc_kib_field("/proc/self/smaps_rollup", "Pss_Anon") < 0)
		die("cannot read AnonPages, Shmem, MemAvailable (/proc/meminfo), "
		    "RssAnon, RssShmem (/proc/self/status) or Pss_Anon "
		    "(/proc/self/smaps_rollup)");
	print_machine(&o);
	FILE *csv = open_csv(o.csv);
	for (int i = 0; i < o.size_count; i++)
		for (int j = 0; j < o.rate_count; j++) {
			struct setting s = setting_of(&o, o.sizes[i], o.rates[j]);
			run_setting(&o, &s, csv);
		}
	char load[128];
	load_average(load, sizeof load);
	printf("\nload average at the end: %s\n", load);
	if (csv) {
		if (fclose(csv) != 0)
			die("writing %s failed", o.csv);
		printf("every iteration's samples: %s\n", o.csv);
	}
	return 0;
}
