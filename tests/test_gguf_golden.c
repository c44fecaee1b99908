/* test_gguf_golden.c - every golden GGUF from llama.cpp: read, check against tensors.tsv, write back byte-exact */
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gguf.h"
#include "sha256.h"

static char *paths[256];
static int n_paths;

static int collect(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	size_t n = strlen(path);

	(void)st;
	(void)ftw;
	if (flag == FTW_F && n > 5 && strcmp(path + n - 5, ".gguf") == 0 && n_paths < 256)
		paths[n_paths++] = strdup(path);
	return 0;
}

/* "256x4096" from a tensor's dimensions, as tensors.tsv writes shapes. */
static void shape_str(const gguf_tensor *t, char *out, size_t n)
{
	size_t k = 0;

	out[0] = 0;
	for (uint32_t j = 0; j < t->n_dims && k < n; j++)
		k += (size_t)snprintf(out + k, n - k, "%s%" PRIu64, j ? "x" : "", t->ne[j]);
}

/* Checks f's tensors against the rows of tsv whose first column is rel, in order. */
static int check_tsv(const gguf_file *f, const char *tsv, const char *rel)
{
	char *copy = strdup(tsv), *save = NULL;
	uint64_t k = 0;

	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *col[5], *s2 = NULL, hex[65], shape[128];
		int nc = 0;
		uint8_t d[32];

		for (char *c = strtok_r(line, "\t", &s2); c && nc < 5; c = strtok_r(NULL, "\t", &s2))
			col[nc++] = c;
		if (nc != 5 || strcmp(col[0], rel) != 0)
			continue;
		if (k >= f->n_tensors) {
			CHECK(0, "%s: tensors.tsv lists more tensors than the file has (%s)", rel, col[1]);
			break;
		}
		const gguf_tensor *t = &f->tensors[k++];

		shape_str(t, shape, sizeof shape);
		sha256_buf(t->data, t->nbytes, d);
		sha256_hex(d, hex);
		CHECK(strcmp(t->name, col[1]) == 0, "%s: tensor %" PRIu64 " is %s, tsv says %s", rel, k - 1, t->name, col[1]);
		CHECK(strcmp(gguf_type(t->type)->name, col[2]) == 0, "%s: %s type %s, tsv says %s", rel, t->name,
		      gguf_type(t->type)->name, col[2]);
		CHECK(strcmp(shape, col[3]) == 0, "%s: %s shape %s, tsv says %s", rel, t->name, shape, col[3]);
		CHECK(strcmp(hex, col[4]) == 0, "%s: %s data sha256 %s, tsv says %s", rel, t->name, hex, col[4]);
	}
	free(copy);
	CHECK(k == f->n_tensors, "%s: tensors.tsv has %" PRIu64 " rows, the file %" PRIu64 " tensors", rel, k,
	      f->n_tensors);
	return k > 0;
}

/* Writes f back through the streaming writer (in uneven chunks) and returns its digest. */
static int rewrite(const gguf_file *f, const char *out, uint8_t d[32])
{
	err e = { 0 };
	gguf_writer *w = gguf_writer_begin(out, 0, &f->meta, f->tensors, f->n_tensors, &e);

	CHECK(w != NULL, "%s", e.msg);
	if (!w)
		return -1;
	for (uint64_t i = 0; i < f->n_tensors; i++) {
		const uint8_t *p = f->tensors[i].data;
		uint64_t left = f->tensors[i].nbytes;

		while (left) {
			size_t k = left < 100003 ? (size_t)left : 100003;

			if (gguf_writer_write(w, p, k, &e) < 0) {
				CHECK(0, "%s", e.msg);
				gguf_writer_abort(w);
				return -1;
			}
			p += k;
			left -= k;
		}
	}
	CHECK(gguf_writer_finish(w, d, &e) == 0, "%s", e.msg);
	return e.set ? -1 : 0;
}

/* A real llama.cpp file cut at 256 evenly spaced lengths below span (the header and
 * the start of the data, so a 16 MB file is not copied 256 times): each refused with
 * an offset. */
static void truncations(const char *path, size_t span)
{
	size_t size;
	uint8_t *all = (uint8_t *)check_slurp(path, &size);
	int refused = 0;

	CHECK(all != NULL && span <= size, "cannot read %s", path);
	for (int k = 0; all && span <= size && k < 256; k++) {
		size_t n = span * (size_t)k / 256;
		uint8_t *cut = malloc(n ? n : 1); /* exact size: ASan sees any read past it */
		gguf_file f;
		err e = { 0 };

		memcpy(cut, all, n);
		if (gguf_parse(&f, cut, n, "cut.gguf", &e) < 0 && strncmp(e.msg, "cut.gguf: offset ", 17) == 0)
			refused++;
		else
			CHECK(0, "%s cut to %zu bytes: %s", path, n, e.set ? e.msg : "accepted");
		free(cut);
	}
	CHECK(refused == 256, "%s: %d of 256 truncations refused", path, refused);
	free(all);
}

int main(void)
{
	char *golden = check_shared_path("golden");
	char *tsv_path = check_shared_path("golden/pydoc-8m/tensors.tsv");
	char *sums_path = check_shared_path("golden/pydoc-8m/file-sha256.txt");
	char *tsv = check_slurp(tsv_path, NULL), *sums = check_slurp(sums_path, NULL);
	char out[600];
	int n_tsv = 0, n_sums = 0;

	CHECK(tsv && sums, "cannot read %s or %s", tsv_path, sums_path);
	nftw(golden, collect, 16, FTW_PHYS);
	CHECK(n_paths >= 9, "only %d golden GGUF files found under %s", n_paths, golden);
	for (int i = 0; i < n_paths && tsv && sums; i++) {
		const char *rel = strstr(paths[i], "/pydoc-8m/") ? strstr(paths[i], "/pydoc-8m/") + 10 : paths[i];
		uint8_t d_in[32], d_out[32];
		char hex[65], line[700];
		gguf_file f;
		err e = { 0 };

		if (gguf_open(&f, paths[i], &e) < 0) {
			CHECK(0, "%s", e.msg);
			continue;
		}
		CHECK(f.version == 3 && f.alignment == 32, "%s: version %u alignment %u", rel, f.version, f.alignment);
		n_tsv += check_tsv(&f, tsv, rel);
		CHECK(sha256_file(paths[i], d_in, &e) == 0, "%s", e.msg);
		snprintf(line, sizeof line, "%s  %s\n", sha256_hex(d_in, hex), rel);
		if (strstr(sums, line))
			n_sums++;
		snprintf(out, sizeof out, "%s/rewrite.gguf", check_tmpdir());
		if (rewrite(&f, out, d_out) == 0)
			CHECK(memcmp(d_in, d_out, 32) == 0, "%s: written back, the bytes differ (%s)", rel, out);
		printf("%s: %" PRIu64 " tensors, %zu keys\n", rel, f.n_tensors, f.meta.n);
		/* The whole of the small imatrix file; the others' header plus a little data. */
		truncations(paths[i], strstr(rel, "imatrix") ? f.size : f.data_offset + 1024);
		gguf_close(&f);
	}
	/* Every kept golden file is in both reference lists (F32 is listed but not kept). */
	CHECK(n_tsv == n_paths, "%d of %d files found in tensors.tsv", n_tsv, n_paths);
	CHECK(n_sums == n_paths, "%d of %d files match file-sha256.txt", n_sums, n_paths);
	for (int i = 0; i < n_paths; i++)
		free(paths[i]);
	free(golden);
	free(tsv_path);
	free(sums_path);
	free(tsv);
	free(sums);
	return check_done();
}
