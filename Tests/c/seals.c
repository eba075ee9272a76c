/*
 * seals.c - what the library's descriptors let anyone who holds them do.
 *
 * A descriptor leaks further than one expects (a /proc/<pid>/fd walk by a
 * helper, SCM_RIGHTS by mistake, a forgotten fork), so the library makes
 * each one as harmless as the kernel allows, and this test checks it:
 *   - every descriptor it opens is close-on-exec: the userfaultfd,
 *     /proc/self/pagemap, /proc/self/mem, every region memfd and the fault
 *     server's stop eventfd;
 *   - /proc/self/mem and /proc/self/pagemap are open read-only;
 *   - every region memfd is sealed against shrinking and growing (a
 *     truncation would turn region pages into SIGBUS), and, where the
 *     kernel has MFD_NOEXEC_SEAL (6.3+), is non-executable for good: no
 *     exec permission bit, F_SEAL_EXEC (chmod +x refused), so it cannot
 *     be run as a program (execveat: EACCES);
 *   - once frozen (the first clone of a region), a layer is write-sealed
 *     (F_SEAL_FUTURE_WRITE): write(2), pwrite(2), fallocate(2) and new
 *     shared writable mappings are refused, so what clones read as their
 *     base cannot change under them;
 *   - region memory is never mapped executable.
 * Engine v2 keeps every layer in one page file that grows and that its
 * clones write (a fold writes the head's pages into the layer): there the
 * file is sealed against shrinking only, and the write seals are not
 * checked (RELIABILITY.md says what that means).
 */
#include "test_util.h"
#include "process_util.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#ifndef F_SEAL_EXEC
#define F_SEAL_EXEC 0x0020
#endif
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif

static size_t page;

/* Does this kernel have MFD_NOEXEC_SEAL? (Then the library must use it.) */
static bool kernel_has_noexec_seal(void)
{
	int fd = (int)syscall(SYS_memfd_create, "probe", MFD_CLOEXEC | MFD_NOEXEC_SEAL);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

static bool is_library_object(const char *target)
{
	const char *proc = strstr(target, "/proc/");
	return strstr(target, "memfd:cowmem") || strstr(target, "userfaultfd") ||
	       strstr(target, "eventfd") ||
	       (proc && (strstr(proc, "/pagemap") || strstr(proc, "/mem")));
}

static bool engine_v2;

static int check_descriptors(bool noexec)
{
	struct proc_fd fds[256];
	int n = proc_list_fds(0, fds, 256), memfds = 0, library = 0;

	CHECK(n >= 0 && n <= 256, "cannot list descriptors");
	for (int i = 0; i < n; i++) {
		const char *target = fds[i].target;
		int fd = fds[i].fd;
		if (!is_library_object(target))
			continue;
		library++;
		int flags = fcntl(fd, F_GETFD);
		EXPECT(flags >= 0 && (flags & FD_CLOEXEC),
		       "fd %d -> %s is close-on-exec", fd, target);
		const char *proc = strstr(target, "/proc/");
		if (proc && (strstr(proc, "/pagemap") || strstr(proc, "/mem"))) {
			int mode = fcntl(fd, F_GETFL);
			EXPECT(mode >= 0 && (mode & O_ACCMODE) == O_RDONLY,
			       "fd %d -> %s is open read-only (flags 0x%x)", fd, target, mode);
		}
		if (!strstr(target, "memfd:cowmem"))
			continue;
		memfds++;
		int seals = fcntl(fd, F_GET_SEALS);
		EXPECT(seals >= 0 && (seals & F_SEAL_SHRINK) && (engine_v2 || (seals & F_SEAL_GROW)),
		       "region memfd %d sealed against shrink%s (seals 0x%x)", fd,
		       engine_v2 ? "" : " and grow", seals);
		EXPECT(ftruncate(fd, 0) < 0 && errno == EPERM,
		       "ftruncate of region memfd %d refused (EPERM), got %s", fd,
		       strerror(errno));
		if (!noexec) {
			/* The fallback (an older kernel, or COWMEM_DISABLE=noexec-seal)
			 * really ran: no exec seal. */
			EXPECT(!(seals & F_SEAL_EXEC) || !kernel_has_noexec_seal(),
			       "region memfd %d has F_SEAL_EXEC although noexec-seal is masked "
			       "(seals 0x%x)", fd, seals);
		}
		if (noexec) {
			struct stat st;
			EXPECT(fstat(fd, &st) == 0 && !(st.st_mode & 0111),
			       "region memfd %d has no exec permission (mode %o)", fd,
			       (unsigned)st.st_mode & 0777);
			EXPECT(seals & F_SEAL_EXEC, "region memfd %d has F_SEAL_EXEC "
			       "(seals 0x%x)", fd, seals);
			errno = 0;
			EXPECT(fchmod(fd, 0755) < 0 && errno == EPERM,
			       "making region memfd %d executable refused (EPERM), got %s",
			       fd, strerror(errno));
			/* Not a program anyway; the point is the permission. */
			char *argv[] = { "x", NULL }, *envp[] = { NULL };
			errno = 0;
			long rc = syscall(SYS_execveat, fd, "", argv, envp, AT_EMPTY_PATH);
			EXPECT(rc < 0 && errno == EACCES,
			       "execveat of region memfd %d refused (EACCES), got %s", fd,
			       strerror(errno));
		}
	}
	EXPECT(library > 0, "some library descriptors were found");
	return memfds;
}

/* The frozen layer: the memfd that a clone's mapping (in /proc/self/maps)
 * names by inode. */
static int descriptor_of_mapping(const void *address)
{
	FILE *maps = fopen("/proc/self/maps", "re");
	char line[512];
	unsigned long inode = 0;

	CHECK(maps != NULL, "fopen /proc/self/maps");
	while (fgets(line, sizeof line, maps)) {
		unsigned long start, end;
		if (sscanf(line, "%lx-%lx %*s %*s %*s %lu", &start, &end, &inode) == 3 &&
		    (uintptr_t)address >= start && (uintptr_t)address < end)
			break;
		inode = 0;
	}
	fclose(maps);
	CHECK(inode != 0, "no file mapping at %p", address);

	struct proc_fd fds[256];
	int n = proc_list_fds(0, fds, 256);
	for (int i = 0; i < n && i < 256; i++) {
		struct stat st;
		if (strstr(fds[i].target, "memfd:cowmem") && fstat(fds[i].fd, &st) == 0 &&
		    st.st_ino == inode)
			return fds[i].fd;
	}
	FAIL("no region memfd with inode %lu", inode);
}

int main(void)
{
	page = test_page_size();
	cowmem_region *a = test_create_or_skip(8 * page);
	const char *disabled = getenv("COWMEM_DISABLE");
	bool masked = disabled && test_feature_listed(disabled, "noexec-seal");
	bool write_sealed = true;
	bool noexec = kernel_has_noexec_seal() && !masked;
	engine_v2 = strstr(cowmem_features(), "engine-v2") != NULL;
	printf("kernel MFD_NOEXEC_SEAL: %s%s\n", kernel_has_noexec_seal() ? "yes" : "no",
	       masked ? " (masked: COWMEM_DISABLE=noexec-seal)" : "");
	if (engine_v2)
		printf("engine v2: one page file, written by clones; write seals not checked\n");

	memset(cowmem_data(a), 0x5a, 8 * page);
	int fd_a = descriptor_of_mapping(cowmem_data(a));
	int seals = fcntl(fd_a, F_GET_SEALS);
	EXPECT(!(seals & F_SEAL_FUTURE_WRITE), "a region never cloned is not "
	       "write-sealed yet (seals 0x%x)", seals);

	cowmem_region *b = cowmem_clone(a);
	CHECK(b != NULL, "cowmem_clone: %s", strerror(errno));
	cowmem_region *c = cowmem_create(4 * page); /* exclusive, never cloned */
	CHECK(c != NULL, "cowmem_create: %s", strerror(errno));
	int memfds = check_descriptors(noexec);
	printf("checked %d region memfds and the library's other descriptors\n", memfds);

	/* The layer both A and B read is frozen: nobody may write it. */
	int frozen = descriptor_of_mapping(cowmem_data(b));
	if (engine_v2)
		goto after_write_seals;
	seals = fcntl(frozen, F_GET_SEALS);
	if (disabled && test_feature_listed(disabled, "future-write-seal")) {
		EXPECT(seals >= 0 && !(seals & F_SEAL_FUTURE_WRITE),
		       "future-write-seal masked, yet the frozen layer is write-sealed "
		       "(seals 0x%x)", seals);
		write_sealed = false;
		goto after_write_seals;
	}
	EXPECT(seals >= 0 && (seals & F_SEAL_FUTURE_WRITE),
	       "the frozen layer is write-sealed (seals 0x%x)", seals);
	unsigned char junk[64];
	memset(junk, 0xee, sizeof junk);
	errno = 0;
	EXPECT(pwrite(frozen, junk, sizeof junk, 0) < 0 && errno == EPERM,
	       "pwrite to the frozen layer refused (EPERM), got %s", strerror(errno));
	errno = 0;
	EXPECT(write(frozen, junk, sizeof junk) < 0 && errno == EPERM,
	       "write to the frozen layer refused (EPERM), got %s", strerror(errno));
	errno = 0;
	EXPECT(fallocate(frozen, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, page) < 0,
	       "punching a hole in the frozen layer refused, got success");
	void *w = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, frozen, 0);
	EXPECT(w == MAP_FAILED && errno == EPERM,
	       "a shared writable mapping of the frozen layer refused (EPERM), got %s",
	       w == MAP_FAILED ? strerror(errno) : "a mapping");
	if (w != MAP_FAILED)
		munmap(w, page);
	/* Reading it stays possible, and shows what the clones share. */
	void *r = mmap(NULL, page, PROT_READ, MAP_SHARED, frozen, 0);
	EXPECT(r != MAP_FAILED && ((unsigned char *)r)[0] == 0x5a,
	       "a read-only mapping of the frozen layer shows the base");
	if (r != MAP_FAILED)
		munmap(r, page);
after_write_seals:;

	/* Region memory is never executable. */
	cowmem_region *all[] = { a, b, c };
	for (int i = 0; i < 3; i++) {
		char perms[5];
		CHECK(proc_mapping_perms(cowmem_data(all[i]), perms), "region not mapped");
		EXPECT(perms[2] != 'x', "region %d mapped %s: not executable", i, perms);
	}
	/* Nothing was changed by the refused writes. */
	for (size_t i = 0; i < 8 * page; i++)
		if (((unsigned char *)cowmem_data(b))[i] != 0x5a) {
			EXPECT(false, "clone byte %zu changed: %d", i,
			       ((unsigned char *)cowmem_data(b))[i]);
			break;
		}
	CHECK(cowmem_destroy(c) == 0 && cowmem_destroy(b) == 0 && cowmem_destroy(a) == 0,
	      "destroy: %s", strerror(errno));
	if (expect_failures) {
		printf("seals: %d checks failed\n", expect_failures);
		return TEST_EXIT_FAIL;
	}
	printf("seals: descriptors close-on-exec, /proc files read-only, memfds "
	       "sealed%s, %s, no executable region\n",
	       noexec ? " and non-executable" : "",
	       engine_v2	  ? "write seals not checked (engine v2)"
	       : write_sealed ? "frozen layers write-sealed"
			      : "frozen layers not write-sealed (future-write-seal masked)");
	return TEST_EXIT_PASS;
}
