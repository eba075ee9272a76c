/*
 * quickstart.c - the C example from the README, kept here so it is compiled
 * and run by `make test` (install-check builds it against the installed
 * library with pkg-config).
 *
 *     cc quickstart.c $(pkg-config --cflags --libs cowmem) -o quickstart
 */
#include <cowmem.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
	size_t size = (size_t)1 << 30;                 /* 1 GiB */
	cowmem_region *game = cowmem_create(size);
	if (!game) {
		perror("cowmem_create");
		return 1;
	}
	char *state = cowmem_data(game);
	memset(state, 'a', size);                      /* populate it */

	cowmem_region *save = cowmem_clone(game);      /* instant snapshot */
	if (!save) {
		perror("cowmem_clone");
		return 1;
	}
	state[42] = 'b';                               /* copies one page */

	const char *saved = cowmem_data(save);
	printf("live %c, snapshot %c, backend %s\n", state[42], saved[42],
	       cowmem_backend());
	int ok = state[42] == 'b' && saved[42] == 'a';
	cowmem_destroy(save);
	cowmem_destroy(game);
	return ok ? 0 : 1;
}
