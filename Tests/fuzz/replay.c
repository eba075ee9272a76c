/*
 * replay.c - runs fuzz_ops.c on the inputs named (files, or directories of
 * them), without libFuzzer: the corpus as a regression test, with any
 * compiler.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	static uint8_t data[1 << 20];
	if (!f) {
		perror(path);
		return -1;
	}
	size_t size = fread(data, 1, sizeof data, f);
	fclose(f);
	LLVMFuzzerTestOneInput(data, size);
	return 0;
}

int main(int argc, char **argv)
{
	size_t inputs = 0;

	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) < 0) {
			perror(argv[i]);
			return 1;
		}
		if (!S_ISDIR(st.st_mode)) {
			if (replay_file(argv[i]) < 0)
				return 1;
			inputs++;
			continue;
		}
		DIR *dir = opendir(argv[i]);
		struct dirent *entry;
		while (dir && (entry = readdir(dir)) != NULL) {
			if (entry->d_name[0] == '.')
				continue;
			char path[4096];
			snprintf(path, sizeof path, "%s/%s", argv[i], entry->d_name);
			if (replay_file(path) < 0)
				return 1;
			inputs++;
		}
		if (dir)
			closedir(dir);
	}
	printf("replayed %zu inputs: every one matched the model\n", inputs);
	return inputs ? 0 : 1;
}
