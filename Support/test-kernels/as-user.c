/* as-user UID GID PROGRAM [ARG...]: drops every group, sets the group and
 * user ids, then runs PROGRAM. The initramfs of `make test-kernels` runs
 * the unprivileged cases with it (busybox-static has no setpriv). Built
 * static, so it needs nothing from the initramfs. */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: as-user UID GID PROGRAM [ARG...]\n");
		return 2;
	}
	uid_t uid = (uid_t)strtoul(argv[1], NULL, 10);
	gid_t gid = (gid_t)strtoul(argv[2], NULL, 10);
	if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
		fprintf(stderr, "as-user: cannot become %u:%u: %s\n", (unsigned)uid,
			(unsigned)gid, strerror(errno));
		return 126;
	}
	execv(argv[3], argv + 3);
	fprintf(stderr, "as-user: %s: %s\n", argv[3], strerror(errno));
	return 127;
}
