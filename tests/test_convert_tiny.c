/* test_convert_tiny.c - the bundled examples/pydoc-tiny converts (no ../shared needed): data equal to the
 * checkpoint's, q/k rows in GGUF order, and the same bytes from two differently named folders */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "convert.h"
#include "gguf.h"
#include "half.h"
#include "safetensors.h"
#include "sha256.h"

/* Source row of GGUF row r for a q/k weight of heads of hd rows: GGUF interleaves the two halves
 * HF keeps apart (row 2i+t of a head comes from row t*hd/2+i). */
static uint64_t src_row(uint64_t r, uint64_t hd)
{
	uint64_t h = r / hd, j = r % hd;

	return h * hd + (j % 2) * (hd / 2) + j / 2;
}

int main(void)
{
	const char *src = getenv("QBAKE_SOURCE");
	const char *tmp = check_tmpdir();
	char dir[4096], a[4096], b[4096], out[4096];
	convert_opts o = { CONVERT_F32, NULL, NULL, NULL };
	st_model m = { 0 };
	gguf_file g;
	err e = { 0 };
	uint8_t d1[32], d2[32];

	if (!src)
		src = "..";
	snprintf(dir, sizeof dir, "%s/examples/pydoc-tiny", src);
	snprintf(a, sizeof a, "%s/first-folder", tmp);
	snprintf(b, sizeof b, "%s/Some-Other-7B-Name", tmp);
	CHECK(check_system("cp -r '%s' '%s' && cp -r '%s' '%s'", dir, a, dir, b) == 0, "copy %s", dir);
	snprintf(out, sizeof out, "%s/a.gguf", tmp);
	CHECK(convert_run(a, out, &o, NULL, &e) == 0, "%s", e.msg);
	snprintf(out, sizeof out, "%s/b.gguf", tmp);
	CHECK(convert_run(b, out, &o, NULL, &e) == 0, "%s", e.msg);
	snprintf(a, sizeof a, "%s/a.gguf", tmp);
	CHECK(sha256_file(a, d1, &e) == 0 && sha256_file(out, d2, &e) == 0 && !memcmp(d1, d2, 32),
	      "the folder's name changed the output");

	CHECK(st_open(&m, dir, &e) == 0, "%s", e.msg);
	CHECK(gguf_open(&g, out, &e) == 0, "%s", e.msg);
	if (m.n_tensors && g.n_tensors) {
		const char *name = gguf_meta_get_str(&g.meta, "general.name");
		const gguf_value *tok = gguf_meta_get_arr(&g.meta, "tokenizer.ggml.tokens", GGUF_STRING);
		uint64_t hd = 64; /* config.json head_dim */

		CHECK(g.n_tensors == m.n_tensors && g.n_tensors == 21, "%llu tensors", (unsigned long long)g.n_tensors);
		CHECK(name && !strcmp(name, "Model"), "general.name %s", name ? name : "(none)");
		CHECK(tok && tok->n == 1024, "1024 tokens");
		for (uint64_t i = 0; i < g.n_tensors; i++) {
			const gguf_tensor *t = &g.tensors[i];
			const st_tensor *s = &m.tensors[i]; /* same order: by name */
			bool qk = strstr(t->name, "attn_q.") || strstr(t->name, "attn_k.");
			uint64_t cols = t->ne[0], rows = t->n_dims > 1 ? t->ne[1] : 1, bad = 0;
			const uint16_t *bf = s->data;
			const float *f = t->data;

			CHECK(t->type == GGUF_TYPE_F32, "%s is F32 in an f32 conversion", t->name);
			CHECK(s->dtype == ST_BF16 && s->nelem == rows * cols, "%s source", s->name);
			if (t->type != GGUF_TYPE_F32 || s->dtype != ST_BF16 || s->nelem != rows * cols)
				continue;
			for (uint64_t r = 0; r < rows; r++)
				for (uint64_t c = 0; c < cols; c++) {
					uint64_t sr = qk ? src_row(r, hd) : r;
					uint16_t h;

					memcpy(&h, (const uint8_t *)bf + 2 * (sr * cols + c), 2);
					bad += f[r * cols + c] != half_bf16_to_f32(h);
				}
			CHECK(bad == 0, "%s: %llu values differ from %s", t->name, (unsigned long long)bad, s->name);
		}
		gguf_close(&g);
	}
	st_close(&m);
	return check_done();
}
