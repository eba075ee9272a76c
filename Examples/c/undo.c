/*
 * undo.c - an undo history for a buffer, one copy-on-write snapshot per edit.
 *
 * The document lives in a CowMem region. Before each edit the editor clones
 * it: the clone copies no data, whatever the size, and afterwards only the
 * pages an edit touches are ever duplicated. Undo throws the current
 * document away and carries on with the last snapshot.
 *
 * Build and run:
 *     cc undo.c $(pkg-config --cflags --libs cowmem) -o undo && ./undo
 * Exits 0 if every undo step gave back exactly the text it should.
 */
#include <cowmem.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Large on purpose: a snapshot costs the same for 64 MiB as for 4 KiB. */
#define DOCUMENT_SIZE ((size_t)64 << 20)
#define HISTORY_DEPTH 8

struct editor {
	cowmem_region *document;
	cowmem_region *history[HISTORY_DEPTH]; /* oldest first */
	int depth;
};

static char *text(const struct editor *editor)
{
	return cowmem_data(editor->document);
}

/* Saves the document as it is now, so the next edit can be undone. */
static int checkpoint(struct editor *editor)
{
	cowmem_region *snapshot;

	if (editor->depth == HISTORY_DEPTH) {
		/* Forget the oldest step; the others keep their content. */
		if (cowmem_destroy(editor->history[0]) != 0)
			return -1;
		memmove(editor->history, editor->history + 1,
			(HISTORY_DEPTH - 1) * sizeof(editor->history[0]));
		editor->depth--;
	}
	snapshot = cowmem_clone(editor->document);
	if (!snapshot)
		return -1;
	editor->history[editor->depth++] = snapshot;
	return 0;
}

/* Every edit is a checkpoint followed by plain stores into the region. */
static int edit(struct editor *editor, size_t offset, const char *words)
{
	if (checkpoint(editor) != 0)
		return -1;
	memcpy(text(editor) + offset, words, strlen(words));
	return 0;
}

static int append(struct editor *editor, const char *words)
{
	size_t used = strlen(text(editor));

	/* Keep the terminating zero that the zero-filled region provides. */
	if (used + strlen(words) >= cowmem_size(editor->document)) {
		errno = ENOSPC;
		return -1;
	}
	return edit(editor, used, words);
}

static int overwrite(struct editor *editor, size_t offset, const char *words)
{
	if (offset + strlen(words) > strlen(text(editor))) {
		errno = EINVAL;
		return -1;
	}
	return edit(editor, offset, words);
}

/* Returns 0, or -1 with errno ENOENT if there is nothing to undo. */
static int undo(struct editor *editor)
{
	if (editor->depth == 0) {
		errno = ENOENT;
		return -1;
	}
	if (cowmem_destroy(editor->document) != 0)
		return -1;
	editor->document = editor->history[--editor->depth];
	return 0;
}

static void close_editor(struct editor *editor)
{
	while (editor->depth > 0)
		cowmem_destroy(editor->history[--editor->depth]);
	cowmem_destroy(editor->document);
}

static int expect(const struct editor *editor, const char *step, const char *want)
{
	printf("%-22s \"%s\"\n", step, text(editor));
	if (strcmp(text(editor), want) != 0) {
		fprintf(stderr, "undo: after %s: want \"%s\"\n", step, want);
		return -1;
	}
	return 0;
}

int main(void)
{
	struct editor editor = { 0 };
	int failed = 0;

	editor.document = cowmem_create(DOCUMENT_SIZE);
	if (!editor.document) {
		perror("undo: cowmem_create");
		return 1;
	}
	printf("document: %zu MiB at %p, pages of %zu bytes\n",
	       cowmem_size(editor.document) >> 20, cowmem_data(editor.document),
	       cowmem_page_size());

	if (append(&editor, "Hello, world. ") != 0 ||
	    append(&editor, "Copy on write.") != 0 ||
	    overwrite(&editor, 7, "pages") != 0) {
		perror("undo: edit");
		close_editor(&editor);
		return 1;
	}
	failed |= expect(&editor, "three edits:", "Hello, pages. Copy on write.");

	/* Each undo must give back exactly what the snapshot saw. */
	if (undo(&editor) != 0)
		goto err_undo;
	failed |= expect(&editor, "undo the overwrite:", "Hello, world. Copy on write.");
	if (undo(&editor) != 0)
		goto err_undo;
	failed |= expect(&editor, "undo the 2nd append:", "Hello, world. ");
	if (undo(&editor) != 0)
		goto err_undo;
	failed |= expect(&editor, "undo the 1st append:", "");

	if (undo(&editor) == 0 || errno != ENOENT) {
		fprintf(stderr, "undo: a fourth undo should find nothing to undo\n");
		failed = -1;
	}

	close_editor(&editor);
	return failed ? 1 : 0;

err_undo:
	perror("undo: undo");
	close_editor(&editor);
	return 1;
}
