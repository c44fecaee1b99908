/* test_model.c - forward pass: llama-perplexity's golden PPL, thread-count invariance, KV-cache decode */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "eval.h"
#include "gguf.h"
#include "model.h"
#include "tokenizer.h"

/* The F16 baseline's PPL and its error from quality.tsv (llama-perplexity, ctx 256, 64 chunks). */
static int golden_ppl(double *ppl, double *perr)
{
	char *path = check_shared_path("golden/pydoc-8m/quality.tsv");
	char *t = check_slurp(path, NULL);
	int ok = 0;
	if (t) {
		char *l = strstr(t, "\npydoc-8m-F16.gguf\t");
		ok = l && sscanf(l, "\npydoc-8m-F16.gguf\t%lf\t%lf", ppl, perr) == 2;
	}
	free(t);
	free(path);
	return ok;
}

static void perplexity(const model *m, const tok_vocab *v)
{
	char *path = check_shared_path("fixtures/corpora/eval.txt");
	size_t n = 0;
	char *text = check_slurp(path, &n);
	double want = 0, want_err = 0;
	eval_ppl r;
	err e = { 0 };

	CHECK(text, "cannot read %s", path);
	CHECK(golden_ppl(&want, &want_err), "no F16 line in quality.tsv");
	if (text && want > 0) {
		CHECK(eval_perplexity(m, v, text, n, 256, 64, NULL, NULL, &r, &e) == 0, "%s", e.msg);
		printf("PPL = %.4f +/- %.5f (llama-perplexity: %.4f +/- %.5f), %zu tokens scored\n", r.ppl, r.ppl_err,
		       want, want_err, r.count);
		CHECK(r.chunks == 64 && r.count == 64 * 127, "%d chunks, %zu scored", r.chunks, r.count);
		CHECK(fabs(r.ppl - want) / want < 0.005, "PPL %.4f, golden %.4f", r.ppl, want);
		CHECK(fabs(r.ppl_err - want_err) / want_err < 0.01, "error %.5f, golden %.5f", r.ppl_err, want_err);
		/* Too short a text is refused with the numbers. */
		err_clear(&e);
		CHECK(eval_perplexity(m, v, text, 1000, 256, 0, NULL, NULL, &r, &e) == -1 && strstr(e.msg, "fewer than"),
		      "short text: %s", e.msg);
		err_clear(&e);
		CHECK(eval_perplexity(m, v, text, n, 4096, 0, NULL, NULL, &r, &e) == -1 && strstr(e.msg, "training context"),
		      "ctx too large: %s", e.msg);
	}
	free(text);
	free(path);
}

/* Matmul callback: counts calls and checks shapes as the imatrix will see them. */
typedef struct seen {
	int calls, q_calls;
	double q_sum2; /* Σx² over the inputs of blk.0.attn_q */
} seen;

static void on_mm(void *ctx, const char *w, const float *x, int n_tokens, int n_in)
{
	seen *s = ctx;
	s->calls++;
	if (!strcmp(w, "blk.0.attn_q.weight")) {
		s->q_calls++;
		for (long i = 0; i < (long)n_tokens * n_in; i++)
			s->q_sum2 += (double)x[i] * x[i];
	}
}

static void threads_and_cache(const gguf_file *f, const tok_vocab *v)
{
	static const char prompt[] = "The :mod:`os` module provides a portable way of using operating system";
	tok_ids ids = { 0 };
	err e = { 0 };
	model *m1 = model_load(f, 1, &e), *m3 = model_load(f, 3, &e);
	CHECK(m1 && m3, "%s", e.msg);
	CHECK(tok_encode(v, prompt, strlen(prompt), true, false, &ids, &e) == 0, "%s", e.msg);
	if (!m1 || !m3 || ids.n < 8)
		goto out;
	int nv = model_params(m1)->n_vocab, T = (int)ids.n;
	float *a = malloc((size_t)T * nv * sizeof *a), *b = malloc((size_t)T * nv * sizeof *b);
	float *c = malloc((size_t)nv * sizeof *c);
	seen s = { 0 };
	model_batch b1 = { ids.ids, 1, T, 0, a, on_mm, &s }, b3 = { ids.ids, 1, T, 0, b, NULL, NULL };
	CHECK(model_eval(m1, &b1, &e) == 0 && model_eval(m3, &b3, &e) == 0, "%s", e.msg);
	/* Each output element is summed the same way whatever the thread count. */
	CHECK(memcmp(a, b, (size_t)T * nv * sizeof *a) == 0, "logits differ between 1 and 3 threads");
	/* 7 matrices per layer plus the output head, each seen once with the batch. */
	CHECK(s.calls == 7 * model_params(m1)->n_layer + 1 && s.q_calls == 1 && s.q_sum2 > 0, "%d callbacks", s.calls);

	/* Token by token through the KV cache gives the batch's logits, up to summation order. */
	model_cache *kv = model_cache_new(m1, 64, &e);
	CHECK(kv, "%s", e.msg);
	double worst = 0;
	for (int t = 0; kv && t < T; t++) {
		CHECK(model_decode(m1, kv, &ids.ids[t], 1, c, &e) == 0, "%s", e.msg);
		for (int j = 0; j < nv; j++) {
			double d = fabs(c[j] - a[(size_t)t * nv + j]);
			worst = d > worst ? d : worst;
		}
	}
	CHECK(kv && model_cache_len(kv) == T, "cache length");
	CHECK(worst < 1e-3, "incremental logits differ from the batch's by %g", worst);
	model_cache_free(kv);
	free(a);
	free(b);
	free(c);
out:
	tok_ids_free(&ids);
	model_free(m1);
	model_free(m3);
}

/* Greedy continuations of generate/prompts.txt equal llama-completion's (its files end
 * with the "\n\n" the tool prints after generating). */
static void generate(const char *file, const char *tag)
{
	char *path = check_shared_path(file), *pp = check_shared_path("golden/pydoc-8m/generate/prompts.txt");
	char *prompts = check_slurp(pp, NULL);
	gguf_file f = { 0 };
	err e = { 0 };
	tok_vocab *v = NULL;
	model *m = NULL;

	CHECK(prompts && gguf_open(&f, path, &e) == 0, "%s %s", pp, e.msg);
	if (!prompts || !f.map)
		goto out;
	v = tok_load(&f.meta, &e);
	m = v ? model_load(&f, 2, &e) : NULL;
	CHECK(m, "%s", e.msg);
	char *line = prompts;
	for (int i = 1; m && line && *line; i++) {
		char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		char rel[128], *gp, *want;
		snprintf(rel, sizeof rel, "golden/pydoc-8m/generate/%d-pydoc-8m-%s.txt", i, tag);
		gp = check_shared_path(rel);
		want = check_slurp(gp, NULL);
		tok_ids out = { 0 };
		CHECK(want && eval_generate(m, v, line, len, 32, &out, &e) == 0, "%s: %s", gp, e.msg);
		char text[4096];
		size_t n = 0;
		for (size_t j = 0; j < out.n; j++) {
			size_t pl;
			const char *p = tok_piece(v, out.ids[j], false, &pl);
			if (n + pl < sizeof text - 3) {
				memcpy(text + n, p, pl);
				n += pl;
			}
		}
		memcpy(text + n, "\n\n", 3);
		CHECK(out.n == 32 && want && strcmp(text, want) == 0, "%s: generated \"%s\"", gp, text);
		tok_ids_free(&out);
		free(want);
		free(gp);
		line = nl ? nl + 1 : NULL;
	}
out:
	model_free(m);
	tok_free(v);
	gguf_close(&f);
	free(prompts);
	free(pp);
	free(path);
}

static void bad_models(void)
{
	/* The imatrix GGUF is a valid file but no model. */
	char *path = check_shared_path("golden/pydoc-8m/imatrix.gguf");
	gguf_file f = { 0 };
	err e = { 0 };
	CHECK(gguf_open(&f, path, &e) == 0, "%s", e.msg);
	CHECK(!model_load(&f, 1, &e) && e.set, "imatrix.gguf accepted as a model");
	gguf_close(&f);
	free(path);
}

int main(void)
{
	char *path = check_shared_path("golden/pydoc-8m/pydoc-8m-F16.gguf");
	gguf_file f = { 0 };
	err e = { 0 };

	CHECK(gguf_open(&f, path, &e) == 0, "%s", e.msg);
	tok_vocab *v = tok_load(&f.meta, &e);
	model *m = v ? model_load(&f, 2, &e) : NULL;
	CHECK(v && m, "%s", e.msg);
	if (m) {
		const model_hparams *hp = model_params(m);
		CHECK(hp->n_layer == 8 && hp->n_embd == 256 && hp->n_head == 8 && hp->n_head_kv == 4 &&
		      hp->n_ff == 768 && hp->n_vocab == 4096 && !hp->rope_neox, "hyper-parameters");
		perplexity(m, v);
		threads_and_cache(&f, v);
	}
	generate("golden/pydoc-8m/pydoc-8m-F16.gguf", "F16");
	generate("golden/pydoc-8m/quant/pydoc-8m-Q4_K_M-imat.gguf", "Q4_K_M-imat");
	bad_models();
	model_free(m);
	tok_free(v);
	gguf_close(&f);
	free(path);
	return check_done();
}
