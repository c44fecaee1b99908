/* test_model_qwen2.c - the qwen2 path (NeoX RoPE, q/k/v biases) checked against the llama path:
 * the fixture rewritten as a qwen2 GGUF (q/k rows back in the HF rotate-half order, zero biases)
 * must give the same logits */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gguf.h"
#include "model.h"
#include "tokenizer.h"

/* Writes f as a qwen2 model to path: llama.* keys renamed, attn_q/attn_k rows un-permuted
 * (GGUF llama stores each head's rows interleaved for normal RoPE; qwen2 keeps HF's halves
 * for NeoX RoPE), and zero F32 biases for q, k and v. */
static int write_qwen2(const gguf_file *f, const char *path, int n_head, int n_head_kv, int hd)
{
	gguf_meta m = { 0 };
	gguf_tensor *t = calloc(f->n_tensors + 64, sizeof *t);
	char (*names)[64] = calloc(64, sizeof *names);
	err e = { 0 };
	size_t nt = 0, nb = 0;
	int rc = -1;

	for (size_t i = 0; i < f->meta.n; i++) {
		const gguf_kv *kv = &f->meta.kv[i];
		char key[256];
		if (!strcmp(kv->key, "general.architecture")) {
			gguf_meta_set_str(&m, kv->key, "qwen2");
			continue;
		}
		snprintf(key, sizeof key, "%s%s", strncmp(kv->key, "llama.", 6) ? "" : "qwen2.",
			 strncmp(kv->key, "llama.", 6) ? kv->key : kv->key + 6);
		gguf_meta_set_value(&m, key, &kv->v);
	}
	for (uint64_t i = 0; i < f->n_tensors; i++) {
		t[nt++] = f->tensors[i];
		const char *n = f->tensors[i].name;
		const char *q = strstr(n, ".attn_q.weight"), *k = strstr(n, ".attn_k.weight"), *v = strstr(n, ".attn_v.weight");
		if (q || k || v) {
			gguf_tensor *b = &t[nt++];
			memset(b, 0, sizeof *b);
			snprintf(names[nb], sizeof names[nb], "%.*s.bias", (int)((q ? q : k ? k : v) + 7 - n), n);
			b->name = names[nb++];
			b->type = GGUF_TYPE_F32;
			b->n_dims = 1;
			b->ne[0] = f->tensors[i].ne[1];
			b->ne[1] = b->ne[2] = b->ne[3] = 1;
		}
	}
	gguf_writer *w = gguf_writer_begin(path, 0, &m, t, nt, &e);
	CHECK(w, "%s", e.msg);
	if (!w)
		goto out;
	for (size_t i = 0; i < nt; i++) {
		const gguf_tensor *x = &t[i];
		if (!x->data) { /* a bias */
			float *z = calloc(x->ne[0], sizeof *z);
			int bad = gguf_writer_write(w, z, x->ne[0] * sizeof *z, &e);
			free(z);
			if (bad)
				goto fail;
			continue;
		}
		bool q = strstr(x->name, ".attn_q.weight"), k = strstr(x->name, ".attn_k.weight");
		if (!q && !k) {
			if (gguf_writer_write(w, x->data, x->nbytes, &e))
				goto fail;
			continue;
		}
		size_t row = x->nbytes / x->ne[1];
		uint8_t *out = malloc(x->nbytes);
		int heads = q ? n_head : n_head_kv;
		for (int h = 0; h < heads; h++)
			for (int j = 0; j < 2; j++)
				for (int r = 0; r < hd / 2; r++) /* HF row j*hd/2 + r was GGUF row 2r + j */
					memcpy(out + ((size_t)h * hd + (size_t)j * hd / 2 + r) * row,
					       (const uint8_t *)x->data + ((size_t)h * hd + 2 * (size_t)r + j) * row, row);
		int bad = gguf_writer_write(w, out, x->nbytes, &e);
		free(out);
		if (bad)
			goto fail;
	}
	rc = gguf_writer_finish(w, NULL, &e);
	CHECK(rc == 0, "%s", e.msg);
	goto out;
fail:
	CHECK(0, "%s", e.msg);
	gguf_writer_abort(w);
out:
	gguf_meta_free(&m);
	free(t);
	free(names);
	return rc;
}

int main(void)
{
	char *path = check_shared_path("golden/pydoc-8m/pydoc-8m-F16.gguf"), qpath[4096];
	gguf_file f = { 0 }, g = { 0 };
	err e = { 0 };
	static const char text[] = "A list comprehension consists of brackets containing an expression";

	snprintf(qpath, sizeof qpath, "%s/qwen2.gguf", check_tmpdir());
	CHECK(gguf_open(&f, path, &e) == 0, "%s", e.msg);
	tok_vocab *v = tok_load(&f.meta, &e);
	model *a = model_load(&f, 2, &e);
	CHECK(v && a, "%s", e.msg);
	if (!a)
		return check_done();
	const model_hparams *hp = model_params(a);
	CHECK(write_qwen2(&f, qpath, hp->n_head, hp->n_head_kv, hp->head_dim) == 0, "write");
	CHECK(gguf_open(&g, qpath, &e) == 0, "%s", e.msg);
	model *b = g.map ? model_load(&g, 2, &e) : NULL;
	CHECK(b, "%s", e.msg);
	if (b) {
		CHECK(model_params(b)->rope_neox && model_params(b)->qkv_bias && !strcmp(model_params(b)->arch, "qwen2"),
		      "qwen2 hyper-parameters");
		tok_ids ids = { 0 };
		tok_encode(v, text, strlen(text), true, false, &ids, &e);
		int nv = hp->n_vocab, T = (int)ids.n;
		float *la = malloc((size_t)T * nv * sizeof *la), *lb = malloc((size_t)T * nv * sizeof *lb);
		model_batch ba = { ids.ids, 1, T, 0, la, NULL, NULL }, bb = { ids.ids, 1, T, 0, lb, NULL, NULL };
		CHECK(model_eval(a, &ba, &e) == 0 && model_eval(b, &bb, &e) == 0, "%s", e.msg);
		double worst = 0, mag = 0;
		for (size_t i = 0; i < (size_t)T * nv; i++) {
			worst = fmax(worst, fabs(la[i] - lb[i]));
			mag = fmax(mag, fabs(la[i]));
		}
		printf("qwen2 vs llama path: largest logit difference %g (largest logit %g)\n", worst, mag);
		CHECK(worst < 1e-3 * mag, "logits differ by %g", worst);
		free(la);
		free(lb);
		tok_ids_free(&ids);
	}
	model_free(b);
	model_free(a);
	tok_free(v);
	gguf_close(&g);
	gguf_close(&f);
	free(path);
	return check_done();
}
