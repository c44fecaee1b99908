/* test_quantize_golden.c - every tier x {no imatrix, imatrix.gguf} and Q4_K_M from BF16: same bytes as llama-quantize */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gguf.h"
#include "imatrix.h"
#include "quantize.h"
#include "sha256.h"
#include "tiers.h"

static char *tsv, *filesums;

/* The hex digest listed for name in file-sha256.txt ("HASH  NAME" lines), or NULL. */
static const char *listed_file_sha(const char *name, char out[65])
{
	size_t n = strlen(name);

	for (const char *p = filesums; p && *p;) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);

		if (len == 66 + n && memcmp(p + 66, name, n) == 0) {
			memcpy(out, p, 64);
			out[64] = 0;
			return out;
		}
		p = eol ? eol + 1 : NULL;
	}
	return NULL;
}

/* The tensors.tsv row for file/tensor: type name and digest, or 0 when absent. */
static int listed_tensor(const char *file, const char *tensor, char type[32], char hash[65])
{
	char key[300];
	const char *p = tsv;
	size_t klen = (size_t)snprintf(key, sizeof key, "%s\t%s\t", file, tensor);

	while (p && *p) {
		if (strncmp(p, key, klen) == 0) {
			char shape[64];

			return sscanf(p + klen, "%31s %63s %64s", type, shape, hash) == 3;
		}
		p = strchr(p, '\n');
		p = p ? p + 1 : NULL;
	}
	return 0;
}

/* Values of one metadata entry are equal (same key, type and bytes). */
static int same_value(const gguf_value *a, const gguf_value *b)
{
	if (a->type != b->type)
		return 0;
	if (a->type == GGUF_STRING)
		return a->s.len == b->s.len && memcmp(a->s.ptr, b->s.ptr, a->s.len) == 0;
	if (a->type != GGUF_ARRAY)
		return a->u == b->u || (a->type == GGUF_F32 && a->f == b->f);
	if (a->atype != b->atype || a->n != b->n)
		return 0;
	if (a->atype == GGUF_STRING) {
		for (uint64_t i = 0; i < a->n; i++) {
			const gguf_str *x = &((const gguf_str *)a->arr)[i], *y = &((const gguf_str *)b->arr)[i];

			if (x->len != y->len || memcmp(x->ptr, y->ptr, x->len) != 0)
				return 0;
		}
		return 1;
	}
	return 1; /* numeric arrays: compared through the file digest */
}

/* Where llama-quantize's whole file is kept, every metadata key must match in order. */
static void compare_meta(const gguf_file *ours, const char *golden_rel)
{
	char *path = check_shared_path(golden_rel);
	gguf_file g = { 0 };
	err e = { 0 };

	if (gguf_open(&g, path, &e) == 0) {
		CHECK(ours->meta.n == g.meta.n, "%s: %zu keys, golden %zu", golden_rel, ours->meta.n, g.meta.n);
		for (size_t i = 0; i < ours->meta.n && i < g.meta.n; i++)
			CHECK(strcmp(ours->meta.kv[i].key, g.meta.kv[i].key) == 0 &&
			      same_value(&ours->meta.kv[i].v, &g.meta.kv[i].v),
			      "%s: key %zu: %s vs golden %s", golden_rel, i, ours->meta.kv[i].key, g.meta.kv[i].key);
		gguf_close(&g);
	}
	free(path);
}

/* Quantizes in to tier (with im when not NULL) and checks the result against golden
 * file `want` (relative to golden/pydoc-8m). */
static void one(const gguf_file *in, const char *tier, const imx_file *im, const char *want, int threads)
{
	quantize_params qp = { .tier = tier_by_name(tier), .opt = { .output_type = -1, .token_embd_type = -1 },
			       .imatrix = im, .imatrix_path = im ? "some/dir/imatrix.gguf" : NULL,
			       .threads = threads };
	quantize_plan p;
	char out[512], hex[65], lhex[65], type[32], hash[65];
	uint8_t d[32];
	gguf_file o = { 0 };
	err e = { 0 };

	snprintf(out, sizeof out, "%s/out-%s%s.gguf", check_tmpdir(), tier, im ? "-imat" : "");
	CHECK(quantize_plan_make(&p, in, &qp, &e) == 0, "%s: plan: %s", want, e.msg);
	if (e.set)
		return;
	CHECK(quantize_run(&p, in, out, threads, NULL, NULL, &e) == 0, "%s: run: %s", want, e.msg);
	quantize_plan_free(&p);
	if (e.set)
		return;
	CHECK(sha256_file(out, d, &e) == 0, "%s", e.msg);
	sha256_hex(d, hex);
	CHECK(listed_file_sha(want, lhex) && strcmp(hex, lhex) == 0, "%s: whole file differs from llama-quantize's",
	      want);
	CHECK(gguf_open(&o, out, &e) == 0, "%s", e.msg);
	for (uint64_t i = 0; i < o.n_tensors; i++) {
		const gguf_tensor *t = &o.tensors[i];

		sha256_buf(t->data, t->nbytes, d);
		sha256_hex(d, hex);
		CHECK(listed_tensor(want, t->name, type, hash), "%s: no golden row for %s", want, t->name);
		CHECK(strcmp(type, gguf_type(t->type)->name) == 0, "%s: %s is %s, golden %s", want, t->name,
		      gguf_type(t->type)->name, type);
		CHECK(strcmp(hex, hash) == 0, "%s: %s (%s) bytes differ", want, t->name, type);
	}
	/* the order: the tsv lists each file's tensors in file order */
	if (o.n_tensors) {
		char key[300];
		const char *first;

		snprintf(key, sizeof key, "%s\t%s\t", want, o.tensors[0].name);
		first = strstr(tsv, key);
		for (uint64_t i = 0; first && i < o.n_tensors; i++) {
			size_t klen = (size_t)snprintf(key, sizeof key, "%s\t%s\t", want, o.tensors[i].name);

			CHECK(strncmp(first, key, klen) == 0, "%s: tensor %llu (%s) out of order", want,
			      (unsigned long long)i, o.tensors[i].name);
			first = strchr(first, '\n');
			first = first ? first + 1 : NULL;
		}
		CHECK(first != NULL, "%s: order", want);
	}
	if (strcmp(want, "quant/pydoc-8m-Q4_K_M-imat.gguf") == 0 || strcmp(want, "quant/pydoc-8m-Q8_0.gguf") == 0 ||
	    strcmp(want, "quant/pydoc-8m-IQ4_XS-imat.gguf") == 0 || strcmp(want, "quant/pydoc-8m-Q6_K-imat.gguf") == 0 ||
	    strcmp(want, "quant/pydoc-8m-Q2_K-imat.gguf") == 0 || strcmp(want, "quant/pydoc-8m-Q4_0.gguf") == 0) {
		char rel[256];

		snprintf(rel, sizeof rel, "golden/pydoc-8m/%s", want);
		compare_meta(&o, rel);
	}
	gguf_close(&o);
	remove(out);
}

int main(void)
{
	char *p16 = check_shared_path("golden/pydoc-8m/pydoc-8m-F16.gguf");
	char *pb16 = check_shared_path("golden/pydoc-8m/pydoc-8m-BF16.gguf");
	char *pim = check_shared_path("golden/pydoc-8m/imatrix.gguf");
	char *ptsv = check_shared_path("golden/pydoc-8m/tensors.tsv");
	char *psums = check_shared_path("golden/pydoc-8m/file-sha256.txt");
	gguf_file f16 = { 0 }, bf16 = { 0 };
	imx_file im;
	err e = { 0 };
	size_t nt;
	const tier_info *tl = tier_list(&nt);
	int ran = 0;

	tsv = check_slurp(ptsv, NULL);
	filesums = check_slurp(psums, NULL);
	CHECK(tsv && filesums, "golden listings");
	CHECK(gguf_open(&f16, p16, &e) == 0 && gguf_open(&bf16, pb16, &e) == 0, "%s", e.msg);
	CHECK(imx_load(&im, pim, &e) == 0, "%s", e.msg);
	if (check_failures)
		return check_done();
	for (size_t i = 0; i < nt; i++) {
		char want[128];

		if (!gguf_type(tl[i].default_type)->quantized)
			continue; /* F16/BF16: no llama-quantize output in the golden set */
		snprintf(want, sizeof want, "quant/pydoc-8m-%s.gguf", tl[i].name);
		one(&f16, tl[i].name, NULL, want, 2);
		snprintf(want, sizeof want, "quant/pydoc-8m-%s-imat.gguf", tl[i].name);
		/* one case on a single thread: the bytes may not depend on the thread count */
		one(&f16, tl[i].name, &im, want, strcmp(tl[i].name, "IQ4_XS") == 0 ? 1 : 2);
		ran += 2;
	}
	one(&bf16, "Q4_K_M", &im, "quant/pydoc-8m-Q4_K_M-imat-from-bf16.gguf", 2);
	CHECK(ran == 32, "every quantized tier ran (%d)", ran);
	imx_free(&im);
	gguf_close(&f16);
	gguf_close(&bf16);
	free(tsv);
	free(filesums);
	free(p16);
	free(pb16);
	free(pim);
	free(ptsv);
	free(psums);
	return check_done();
}
