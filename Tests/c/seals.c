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
 *   - the page file is sealed against shrinking (a truncation would turn
 *     region pages into SIGBUS), and, where the
 *     kernel has MFD_NOEXEC_SEAL (6.3+), is non-executable for good: no
 *     exec permission bit, F_SEAL_EXEC (chmod +x refused), so it cannot
 *     be run as a program (execveat: EACCES);
 *   - region memory is never mapped executable.
 * Every layer lives in the one page file, which grows and which clones
 * write (a fold writes the head's pages into the layer): so it is not
 * sealed against growing or writing (RELIABILITY.md says what that means).
 */
#include "harness.h"

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
		CHECK(flags >= 0 && (flags & FD_CLOEXEC),
		       "fd %d -> %s is close-on-exec", fd, target);
		const char *proc = strstr(target, "/proc/");
		if (proc && (strstr(proc, "/pagemap") || strstr(proc, "/mem"))) {
			int mode = fcntl(fd, F_GETFL);
			CHECK(mode >= 0 && (mode & O_ACCMODE) == O_RDONLY,
			       "fd %d -> %s is open read-only (flags 0x%x)", fd, target, mode);
		}
		if (!strstr(target, "memfd:cowmem"))
			continue;
		memfds++;
		int seals = fcntl(fd, F_GET_SEALS);
		CHECK(seals >= 0 && (seals & F_SEAL_SHRINK),
		       "region memfd %d sealed against shrink (seals 0x%x)", fd, seals);
		CHECK(ftruncate(fd, 0) < 0 && errno == EPERM,
		       "ftruncate of region memfd %d refused (EPERM), got %s", fd,
		       strerror(errno));
		if (!noexec) {
			/* The fallback (an older kernel, or COWMEM_DISABLE=noexec-seal)
			 * really ran: no exec seal. */
			CHECK(!(seals & F_SEAL_EXEC) || !kernel_has_noexec_seal(),
			       "region memfd %d has F_SEAL_EXEC although noexec-seal is masked "
			       "(seals 0x%x)", fd, seals);
		}
		if (noexec) {
			struct stat st;
			CHECK(fstat(fd, &st) == 0 && !(st.st_mode & 0111),
			       "region memfd %d has no exec permission (mode %o)", fd,
			       (unsigned)st.st_mode & 0777);
			CHECK(seals & F_SEAL_EXEC, "region memfd %d has F_SEAL_EXEC "
			       "(seals 0x%x)", fd, seals);
			errno = 0;
			CHECK(fchmod(fd, 0755) < 0 && errno == EPERM,
			       "making region memfd %d executable refused (EPERM), got %s",
			       fd, strerror(errno));
			/* Not a program anyway; the point is the permission. */
			char *argv[] = { "x", NULL }, *envp[] = { NULL };
			errno = 0;
			long rc = syscall(SYS_execveat, fd, "", argv, envp, AT_EMPTY_PATH);
			CHECK(rc < 0 && errno == EACCES,
			       "execveat of region memfd %d refused (EACCES), got %s", fd,
			       strerror(errno));
		}
	}
	CHECK(library > 0, "some library descriptors were found");
	return memfds;
}

/* The memfd that a region's mapping (in /proc/self/maps)
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

/* A (8 pages of 0x5a), its clone B, and C, never cloned; what the
 * environment asks for. */
struct fixture {
	cowmem_region *a, *b, *c;
	const char *disabled;
	bool noexec;
};

static struct fixture make_regions(void)
{
	struct fixture f = { .a = test_create_or_skip(8 * page) };
	f.disabled = getenv("COWMEM_DISABLE");
	bool masked = f.disabled && test_feature_listed(f.disabled, "noexec-seal");
	f.noexec = kernel_has_noexec_seal() && !masked;
	printf("kernel MFD_NOEXEC_SEAL: %s%s\n", kernel_has_noexec_seal() ? "yes" : "no",
	       masked ? " (masked: COWMEM_DISABLE=noexec-seal)" : "");
	memset(cowmem_data(f.a), 0x5a, 8 * page);
	int fd_a = descriptor_of_mapping(cowmem_data(f.a));
	int seals = fcntl(fd_a, F_GET_SEALS);
	CHECK(!(seals & F_SEAL_FUTURE_WRITE), "a region never cloned is not "
	      "write-sealed yet (seals 0x%x)", seals);
	f.b = cowmem_clone(f.a);
	CHECK(f.b != NULL, "cowmem_clone: %s", strerror(errno));
	f.c = cowmem_create(4 * page);
	CHECK(f.c != NULL, "cowmem_create: %s", strerror(errno));
	return f;
}

static void destroy_regions(struct fixture *f)
{
	/* Nothing was changed by the refused writes. */
	for (size_t i = 0; i < 8 * page; i++)
		CHECK(((unsigned char *)cowmem_data(f->b))[i] == 0x5a, "clone byte %zu changed: %d",
		      i, ((unsigned char *)cowmem_data(f->b))[i]);
	CHECK(cowmem_destroy(f->c) == 0 && cowmem_destroy(f->b) == 0 &&
	      cowmem_destroy(f->a) == 0, "destroy: %s", strerror(errno));
}

static void descriptors(void)
{
	struct fixture f = make_regions();
	int memfds = check_descriptors(f.noexec);
	printf("checked %d region memfds and the library's other descriptors: close-on-exec, "
	       "/proc files read-only, memfds sealed%s\n", memfds,
	       f.noexec ? " and non-executable" : "");
	destroy_regions(&f);
}

/* Region memory is never executable. */
static void not_executable(void)
{
	struct fixture f = make_regions();
	cowmem_region *all[] = { f.a, f.b, f.c };
	for (int i = 0; i < 3; i++) {
		char perms[5];
		CHECK(proc_mapping_perms(cowmem_data(all[i]), perms), "region not mapped");
		CHECK(perms[2] != 'x', "region %d mapped %s: not executable", i, perms);
	}
	destroy_regions(&f);
}

static const struct test_case cases[] = {
	TEST_CASE("descriptors", descriptors),
	TEST_CASE("region-memory-not-executable", not_executable),
};

int main(int argc, char **argv)
{
	page = test_page_size();
	return test_main(argc, argv, cases, TEST_CASE_COUNT(cases));
}
