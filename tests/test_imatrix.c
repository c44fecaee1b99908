/* test_imatrix.c - golden imatrix.gguf and imatrix.dat read to the same weights; bad files refused */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "imatrix.h"

static void check_golden(void)
{
	char *gpath = check_shared_path("golden/pydoc-8m/imatrix.gguf");
	char *dpath = check_shared_path("golden/pydoc-8m/imatrix.dat");
	imx_file g, d;
	err e = { 0 };
	const imx_entry *x;

	CHECK(imx_load(&g, gpath, &e) == 0, "%s", e.msg);
	CHECK(imx_load(&d, dpath, &e) == 0, "%s", e.msg);
	CHECK(g.n == 56 && d.n == 56, "entries %zu / %zu", g.n, d.n);
	CHECK(!g.legacy && d.legacy, "formats told apart");
	CHECK(g.chunk_count == 64 && g.chunk_size == 256 && d.chunk_count == 64 && d.chunk_size == 0,
	      "chunks %lld/%lld, %lld/%lld", (long long)g.chunk_count, (long long)g.chunk_size,
	      (long long)d.chunk_count, (long long)d.chunk_size);
	CHECK(g.n_datasets == 1 && d.n_datasets == 1 && strcmp(g.datasets[0], "../../fixtures/corpora/calib.txt") == 0 &&
	      strcmp(d.datasets[0], g.datasets[0]) == 0, "datasets");
	/* hand value: blk.0.attn_k.weight column 0 is in_sum2 8674.915 over 64 chunks x 256 tokens */
	x = imx_find(&g, "blk.0.attn_k.weight");
	CHECK(x && x->n == 256 && x->n_mat == 1 && x->counts[0] == 16384.0f, "attn_k entry");
	if (x)
		CHECK(x->weights[0] == x->sum2[0] / 16384.0f && fabsf(x->weights[0] - 0.5294748f) < 1e-6f,
		      "weight %.7f", (double)x->weights[0]);
	CHECK(imx_find(&g, "token_embd.weight") == NULL && imx_find(&g, "output.weight") == NULL,
	      "no entries for embeddings/output");
	/* the .dat stores mean × ncall; divided back, the weights are the same floats */
	for (size_t i = 0; i < g.n; i++) {
		const imx_entry *y = imx_find(&d, g.e[i].name);

		CHECK(y && y->n == g.e[i].n, "%s in both", g.e[i].name);
		if (y && y->n == g.e[i].n)
			CHECK(memcmp(y->weights, g.e[i].weights, y->n * sizeof(float)) == 0, "%s: weights differ",
			      g.e[i].name);
	}
	imx_free(&g);
	imx_free(&d);
	free(gpath);
	free(dpath);
}

static void write_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");

	CHECK(f && fwrite(p, 1, n, f) == n, "write %s", path);
	if (f)
		fclose(f);
}

static void check_bad(void)
{
	char *dpath = check_shared_path("golden/pydoc-8m/imatrix.dat");
	char *model = check_shared_path("golden/pydoc-8m/pydoc-8m-F16.gguf");
	const char *tmp = check_tmpdir();
	char path[512];
	size_t n;
	char *buf = check_slurp(dpath, &n);
	imx_file f;
	err e = { 0 };

	CHECK(imx_load(&f, "/nonexistent/x.dat", &e) != 0 && strstr(e.msg, "/nonexistent/x.dat"), "%s", e.msg);
	err_clear(&e);
	CHECK(imx_load(&f, model, &e) != 0 && strstr(e.msg, "not an importance matrix"), "model refused: %s", e.msg);
	err_clear(&e);
	snprintf(path, sizeof path, "%s/trunc.dat", tmp);
	write_file(path, buf, 1000);
	CHECK(imx_load(&f, path, &e) != 0 && strstr(e.msg, "trunc.dat: offset") && strstr(e.msg, "ends inside"),
	      "truncated: %s", e.msg);
	err_clear(&e);
	write_file(path, buf, n - 10); /* cut inside the dataset name */
	CHECK(imx_load(&f, path, &e) != 0 && strstr(e.msg, "dataset name"), "truncated trailer: %s", e.msg);
	err_clear(&e);
	memset(buf + 4, 0xff, 4); /* first name length -1 */
	write_file(path, buf, n);
	CHECK(imx_load(&f, path, &e) != 0 && strstr(e.msg, "offset 4: bad entry name length"), "bad length: %s",
	      e.msg);
	free(buf);
	free(dpath);
	free(model);
}

int main(void)
{
	check_golden();
	check_bad();
	return check_done();
}
