/*
 * process_util.h - what the reliability tests need to look at a process
 * from the outside and to run parts of a test in a child of their own.
 *
 *   - what a process holds: its descriptors (with what each one names),
 *     mappings and threads, read from /proc/<pid>;
 *   - whether touching an address faults (SIGSEGV/SIGBUS caught with a
 *     handler and siglongjmp, so one process can probe many addresses);
 *   - running a function in a forked child under a watchdog (alarm), so a
 *     hang fails the test instead of hanging the suite, and describing how
 *     the child ended.
 *
 * Also the small things several of those tests share: errno names, and
 * whether the program was built with a sanitizer.
 *
 * Include after test_util.h.
 */
#ifndef COWMEM_PROCESS_UTIL_H
#define COWMEM_PROCESS_UTIL_H

#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/types.h>
#include <sys/wait.h>

/* ---- Errno names ---------------------------------------------------------- */

static TEST_UNUSED const char *errno_name(int error)
{
	switch (error) {
	case 0: return "0";
	case EINVAL: return "EINVAL";
	case ENOMEM: return "ENOMEM";
	case EOVERFLOW: return "EOVERFLOW";
	case EFBIG: return "EFBIG";
	case ENOSYS: return "ENOSYS";
	case EMFILE: return "EMFILE";
	case ENFILE: return "ENFILE";
	case EAGAIN: return "EAGAIN";
	case EBADF: return "EBADF";
	case EBUSY: return "EBUSY";
	case ENOTSUP: return "ENOTSUP";
	case EFAULT: return "EFAULT";
	case EPERM: return "EPERM";
	case EACCES: return "EACCES";
	case ESPIPE: return "ESPIPE";
	case EIO: return "EIO";
	case ENOSPC: return "ENOSPC";
	case EDQUOT: return "EDQUOT";
	default: return strerror(error);
	}
}

/* ---- Sanitizers ------------------------------------------------------------ */

#if defined(__SANITIZE_ADDRESS__)
#define TEST_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_UNDER_ASAN 1
#endif
#endif
#ifndef TEST_UNDER_ASAN
#define TEST_UNDER_ASAN 0
#endif

#if defined(__SANITIZE_THREAD__)
#define TEST_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TEST_UNDER_TSAN 1
#endif
#endif
#ifndef TEST_UNDER_TSAN
#define TEST_UNDER_TSAN 0
#endif

/* ---- Descriptors, mappings, threads ------------------------------------- */

#define PROC_TARGET_MAX 256

struct proc_fd {
	int fd;
	char target[PROC_TARGET_MAX]; /* readlink of /proc/<pid>/fd/<fd> */
};

/* Lists the descriptors of `pid` (0: this process), up to `max`, without the
 * directory's own descriptor. Returns how many there are (possibly more
 * than `max`), or -1 if /proc/<pid>/fd cannot be read. */
static TEST_UNUSED int proc_list_fds(pid_t pid, struct proc_fd *list, int max)
{
	char path[64];
	int count = 0;

	if (pid == 0)
		snprintf(path, sizeof path, "/proc/self/fd");
	else
		snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	DIR *directory = opendir(path);
	if (!directory)
		return -1;
	int own = dirfd(directory);
	struct dirent *entry;
	while ((entry = readdir(directory)) != NULL) {
		if (entry->d_name[0] == '.')
			continue;
		int fd = atoi(entry->d_name);
		if (pid == 0 && fd == own)
			continue;
		if (list && count < max) {
			char link[sizeof path + sizeof entry->d_name + 1];
			snprintf(link, sizeof link, "%s/%s", path, entry->d_name);
			ssize_t n = readlink(link, list[count].target,
					     sizeof list[count].target - 1);
			list[count].target[n > 0 ? n : 0] = '\0';
			list[count].fd = fd;
		}
		count++;
	}
	closedir(directory);
	return count;
}

static TEST_UNUSED int proc_count_fds(void)
{
	return proc_list_fds(0, NULL, 0);
}

/* Descriptors of `pid` whose target contains `needle`; -1 if unreadable. */
static TEST_UNUSED int proc_count_fds_naming(pid_t pid, const char *needle)
{
	struct proc_fd list[512];
	int count = proc_list_fds(pid, list, 512), found = 0;

	if (count < 0)
		return -1;
	for (int i = 0; i < count && i < 512; i++)
		if (strstr(list[i].target, needle))
			found++;
	return found;
}

/* Lines of /proc/<pid>/maps (0: this process), or those containing `needle`
 * when it is not NULL; -1 if unreadable. */
static TEST_UNUSED int proc_count_maps_naming(pid_t pid, const char *needle)
{
	char path[64], line[512];

	if (pid == 0)
		snprintf(path, sizeof path, "/proc/self/maps");
	else
		snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
	FILE *maps = fopen(path, "re");
	if (!maps)
		return -1;
	int count = 0;
	while (fgets(line, sizeof line, maps))
		if (!needle || strstr(line, needle))
			count++;
	fclose(maps);
	return count;
}

static TEST_UNUSED int proc_count_maps(void)
{
	return proc_count_maps_naming(0, NULL);
}

static TEST_UNUSED int proc_count_tasks(void)
{
	DIR *directory = opendir("/proc/self/task");
	if (!directory)
		return -1;
	int count = 0;
	struct dirent *entry;
	while ((entry = readdir(directory)) != NULL)
		if (entry->d_name[0] != '.')
			count++;
	closedir(directory);
	return count;
}

/* The protection field ("rw-p", "---p") of the mapping of /proc/self/maps
 * that contains `address`, into `perms` (5 bytes); false if none does. */
static TEST_UNUSED bool proc_mapping_perms(const void *address, char perms[5])
{
	FILE *maps = fopen("/proc/self/maps", "re");
	char line[512];
	bool found = false;

	if (!maps)
		return false;
	while (!found && fgets(line, sizeof line, maps)) {
		unsigned long start, end;
		char p[5];
		if (sscanf(line, "%lx-%lx %4s", &start, &end, p) == 3 &&
		    (uintptr_t)address >= start && (uintptr_t)address < end) {
			memcpy(perms, p, 5);
			found = true;
		}
	}
	fclose(maps);
	return found;
}

/* ---- Does touching an address fault? ------------------------------------ */

static __thread sigjmp_buf probe_jump;
static __thread volatile sig_atomic_t probe_armed;
static __thread void *volatile probe_fault_address;

static void probe_handler(int signal_number, siginfo_t *info, void *context)
{
	(void)context;
	if (!probe_armed) {
		/* A fault nobody expected: die of it, as without a handler. */
		signal(signal_number, SIG_DFL);
		raise(signal_number);
		return;
	}
	probe_fault_address = info->si_addr;
	siglongjmp(probe_jump, signal_number);
}

/* Installs the handlers for SIGSEGV and SIGBUS (process-wide; the jump
 * buffer is per thread). */
static TEST_UNUSED void probe_install(void)
{
	struct sigaction action;

	memset(&action, 0, sizeof action);
	action.sa_sigaction = probe_handler;
	action.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&action.sa_mask);
	sigaction(SIGSEGV, &action, NULL);
	sigaction(SIGBUS, &action, NULL);
}

/*
 * Reads (write == false) or writes one byte at `address`. Returns 0 if the
 * access completed, else the signal it raised (SIGSEGV, SIGBUS); *fault_at
 * (if not NULL) gets the faulting address. A write stores the byte that is
 * already there, so a successful probe changes nothing. probe_install()
 * must have run.
 */
static TEST_UNUSED int probe_access(void *address, bool write, void **fault_at)
{
	volatile unsigned char *p = address;
	int caught;

	probe_fault_address = NULL;
	caught = sigsetjmp(probe_jump, 1);
	if (caught == 0) {
		probe_armed = 1;
		unsigned char byte = *p;
		if (write)
			*p = byte;
		probe_armed = 0;
	} else {
		probe_armed = 0;
	}
	if (fault_at)
		*fault_at = probe_fault_address;
	return caught;
}

/* ---- Running this program again ----------------------------------------- */

/* The path of this program, for running it again: what /proc/self/exe
 * names, not the link itself (under valgrind the link is the tool; its
 * readlink is the program). */
static TEST_UNUSED const char *self_path(void)
{
	static char path[4096];
	if (!path[0]) {
		ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
		if (n <= 0)
			snprintf(path, sizeof path, "/proc/self/exe");
		else
			path[n] = '\0';
	}
	return path;
}

/* ---- Children under a watchdog ---------------------------------------- */

static TEST_UNUSED const char *signal_name(int signal_number)
{
	switch (signal_number) {
	case SIGSEGV: return "SIGSEGV";
	case SIGBUS: return "SIGBUS";
	case SIGKILL: return "SIGKILL";
	case SIGABRT: return "SIGABRT";
	case SIGALRM: return "SIGALRM";
	case SIGTERM: return "SIGTERM";
	case SIGILL: return "SIGILL";
	case SIGFPE: return "SIGFPE";
	case SIGPIPE: return "SIGPIPE";
	case SIGSYS: return "SIGSYS";
	default: return "another signal";
	}
}

/* "exit 0", "killed by SIGBUS", ... into a per-thread buffer. */
static TEST_UNUSED const char *describe_status(int status)
{
	static __thread char text[80];

	if (WIFEXITED(status))
		snprintf(text, sizeof text, "exit %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(text, sizeof text, "killed by %s (%d)%s",
			 signal_name(WTERMSIG(status)), WTERMSIG(status),
			 WTERMSIG(status) == SIGALRM ? ", the watchdog: it hung" : "");
	else
		snprintf(text, sizeof text, "status 0x%x", status);
	return text;
}

/*
 * Runs fn(arg) in a forked child whose exit status is fn's return value,
 * with alarm(watchdog_seconds) armed in the child: a child that hangs dies
 * of SIGALRM, which the caller sees as a failure. Returns the wait status.
 */
static TEST_UNUSED int run_in_child(int (*fn)(void *), void *arg,
				    unsigned watchdog_seconds)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		alarm(watchdog_seconds);
		int rc = fn(arg);
		fflush(stdout);
		fflush(stderr);
		_exit(rc);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		CHECK(errno == EINTR, "waitpid: %s", strerror(errno));
	return status;
}

/* Waits for `pid` for at most `seconds`, polling; kills it (SIGKILL) and
 * returns -1 if it has not ended by then, else its wait status. */
static TEST_UNUSED int wait_bounded(pid_t pid, unsigned seconds)
{
	int status;
	for (unsigned tick = 0; tick < seconds * 100; tick++) {
		pid_t done = waitpid(pid, &status, WNOHANG);
		if (done == pid)
			return status;
		CHECK(done == 0 || errno == EINTR, "waitpid: %s", strerror(errno));
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	return -1;
}

#endif /* COWMEM_PROCESS_UTIL_H */
