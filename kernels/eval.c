/* eval.c - perplexity of a model on a text, the way llama-perplexity measures it */
#include "eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "afile.h"

/* Tokens evaluated per forward pass, in whole chunks: big enough that each weight is
 * dequantized once for many chunks, small enough that activations stay modest. */
#define BATCH_TOKENS 4096

double eval_logprob(const float *logits, int n_vocab, int32_t target)
{
	float mx = logits[0];
	for (int i = 1; i < n_vocab; i++)
		mx = logits[i] > mx ? logits[i] : mx;
	double sum = 0;
	for (int i = 0; i < n_vocab; i++)
		sum += expf(logits[i] - mx);
	return (double)(logits[target] - mx) - log(sum);
}

/* The chunk loop shared by perplexity and imatrix: every chunk evaluated, its second
 * half scored into out; on_matmul sees every multiplication. */
static int run_chunks(const model *m, const tok_vocab *v, const char *text, size_t len, int ctx, int max_chunks,
		      model_matmul_fn on_matmul, void *mctx, eval_progress_fn progress, void *pctx, eval_ppl *out,
		      err *e)
{
	const model_hparams *hp = model_params(m);
	tok_ids ids = { 0 };
	int32_t *batch = NULL;
	float *logits = NULL;
	int rc = -1;

	memset(out, 0, sizeof *out);
	if (ctx < 4)
		return err_set(e, "context %d is too small", ctx);
	if (ctx > hp->n_ctx_train)
		return err_set(e, "context %d is larger than the model's training context %d", ctx, hp->n_ctx_train);
	if (tok_n_vocab(v) != hp->n_vocab)
		return err_set(e, "tokenizer has %d tokens, the model %d", tok_n_vocab(v), hp->n_vocab);
	if (tok_encode(v, text, len, true, false, &ids, e))
		return -1;
	out->n_tokens = ids.n;
	if (ids.n < 2 * (size_t)ctx) {
		err_set(e, "text has %zu tokens, fewer than 2 x context (%d)", ids.n, 2 * ctx);
		goto done;
	}
	int n_chunks = (int)(ids.n / (size_t)ctx);
	if (max_chunks > 0 && max_chunks < n_chunks)
		n_chunks = max_chunks;
	int first = ctx / 2, scored = ctx - 1 - first;
	int per = BATCH_TOKENS / ctx > 0 ? BATCH_TOKENS / ctx : 1;
	batch = malloc((size_t)per * ctx * sizeof *batch);
	logits = malloc((size_t)per * (size_t)(ctx - first) * (size_t)hp->n_vocab * sizeof *logits);
	if (!batch || !logits) {
		err_set(e, "out of memory");
		goto done;
	}
	double nll = 0, nll2 = 0;
	size_t count = 0;
	for (int c0 = 0; c0 < n_chunks; c0 += per) {
		int ns = n_chunks - c0 < per ? n_chunks - c0 : per;
		for (int s = 0; s < ns; s++) {
			memcpy(batch + (size_t)s * ctx, ids.ids + (size_t)(c0 + s) * ctx, (size_t)ctx * sizeof *batch);
			if (tok_adds_bos(v))
				batch[(size_t)s * ctx] = tok_bos(v);
		}
		model_batch b = { batch, ns, ctx, first, logits, on_matmul, mctx };
		if (model_eval(m, &b, e))
			goto done;
		for (int s = 0; s < ns; s++) {
			const int32_t *tok = ids.ids + (size_t)(c0 + s) * ctx;
			for (int j = 0; j < scored; j++) {
				const float *l = logits + ((size_t)s * (ctx - first) + (size_t)j) * hp->n_vocab;
				double lp = eval_logprob(l, hp->n_vocab, tok[first + j + 1]);
				nll -= lp;
				nll2 += lp * lp;
				count++;
			}
			if (progress)
				progress(pctx, c0 + s, exp(nll / (double)count));
		}
	}
	out->chunks = n_chunks;
	out->count = count;
	out->nll = nll / (double)count;
	out->ppl = exp(out->nll);
	double var = nll2 / (double)count - out->nll * out->nll;
	out->ppl_err = var > 0 && count > 1 ? sqrt(var / (double)(count - 1)) * out->ppl : 0;
	rc = 0;
done:
	tok_ids_free(&ids);
	free(batch);
	free(logits);
	return rc;
}

int eval_perplexity(const model *m, const tok_vocab *v, const char *text, size_t len, int ctx, int max_chunks,
		    eval_progress_fn progress, void *pctx, eval_ppl *out, err *e)
{
	return run_chunks(m, v, text, len, ctx, max_chunks, NULL, NULL, progress, pctx, out, e);
}

int eval_generate(const model *m, const tok_vocab *v, const char *prompt, size_t len, int n_predict, tok_ids *out,
		  err *e)
{
	const model_hparams *hp = model_params(m);
	tok_ids in = { 0 };
	model_cache *kv = NULL;
	float *logits = malloc((size_t)hp->n_vocab * sizeof *logits);
	int rc = -1;

	if (!logits) {
		err_set(e, "out of memory");
		goto done;
	}
	if (tok_encode(v, prompt, len, true, true, &in, e))
		goto done;
	if (in.n == 0) {
		err_set(e, "empty prompt and no BOS token");
		goto done;
	}
	int n_ctx = (int)in.n + (n_predict > 0 ? n_predict : 0);
	if (n_ctx > hp->n_ctx_train) {
		err_set(e, "prompt (%zu tokens) + %d new tokens exceed the model's context %d", in.n, n_predict,
			hp->n_ctx_train);
		goto done;
	}
	if (!(kv = model_cache_new(m, n_ctx, e)) || model_decode(m, kv, in.ids, (int)in.n, logits, e))
		goto done;
	for (int i = 0; i < n_predict; i++) {
		int32_t best = 0;
		for (int32_t j = 1; j < hp->n_vocab; j++)
			if (logits[j] > logits[best])
				best = j;
		if (tok_ids_push(out, best)) {
			err_set(e, "out of memory");
			goto done;
		}
		if (tok_is_eog(v, best) || i + 1 == n_predict)
			break;
		if (model_decode(m, kv, &best, 1, logits, e))
			goto done;
	}
	rc = 0;
done:
	tok_ids_free(&in);
	model_cache_free(kv);
	free(logits);
	return rc;
}

/* ---- importance matrix ---- */

static void imx_add(void *ctx, const char *w, const float *x, int n_tokens, int n_in)
{
	eval_imx *im = ctx;
	eval_imx_entry *en = NULL;
	if (strncmp(w, "blk.", 4) || !im->cap) /* cap == 0: an earlier allocation failed */
		return;
	for (size_t i = 0; i < im->n; i++)
		if (!strcmp(im->e[i].name, w)) {
			en = &im->e[i];
			break;
		}
	if (!en) {
		if (im->n == im->cap) {
			eval_imx_entry *p = realloc(im->e, 2 * im->cap * sizeof *p);
			if (!p) {
				im->cap = 0;
				return;
			}
			im->e = p;
			im->cap *= 2;
		}
		en = &im->e[im->n];
		en->name = strdup(w);
		en->n_in = n_in;
		en->sum2 = calloc((size_t)n_in, sizeof *en->sum2);
		en->sum = calloc((size_t)n_in, sizeof *en->sum);
		en->count = 0;
		im->n++;
		if (!en->name || !en->sum2 || !en->sum) {
			im->cap = 0;
			return;
		}
	}
	if (en->n_in != n_in)
		return;
	for (int t = 0; t < n_tokens; t++) {
		const float *r = x + (size_t)t * n_in;
		for (int j = 0; j < n_in; j++) {
			en->sum2[j] += (double)r[j] * r[j];
			en->sum[j] += r[j];
		}
	}
	en->count += n_tokens;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const eval_imx_entry *)a)->name, ((const eval_imx_entry *)b)->name);
}

void eval_imx_free(eval_imx *im)
{
	for (size_t i = 0; i < im->n; i++) {
		free(im->e[i].name);
		free(im->e[i].sum2);
		free(im->e[i].sum);
	}
	free(im->e);
	memset(im, 0, sizeof *im);
}

int eval_imatrix(const model *m, const tok_vocab *v, const char *text, size_t len, int ctx, int max_chunks,
		 eval_progress_fn progress, void *pctx, eval_imx *out, err *e)
{
	memset(out, 0, sizeof *out);
	out->cap = 64;
	out->e = calloc(out->cap, sizeof *out->e);
	if (!out->e)
		return err_set(e, "out of memory");
	if (run_chunks(m, v, text, len, ctx, max_chunks, imx_add, out, progress, pctx, &out->ppl, e)) {
		eval_imx_free(out);
		return -1;
	}
	if (!out->cap) {
		eval_imx_free(out);
		return err_set(e, "out of memory for the importance matrix");
	}
	if (out->n == 0) {
		eval_imx_free(out);
		return err_set(e, "the model has no blk.* matrix multiplications");
	}
	qsort(out->e, out->n, sizeof *out->e, by_name);
	out->chunks = out->ppl.chunks;
	out->chunk_size = ctx;
	return 0;
}

int eval_imx_save_gguf(const eval_imx *im, const char *path, const char *const *datasets, size_t n_datasets,
		       const char *const *extra, size_t n_extra, err *e)
{
	gguf_meta meta = { 0 };
	gguf_tensor *t = calloc(3 * im->n, sizeof *t);
	gguf_str *ds = calloc(n_datasets + 1, sizeof *ds);
	char **names = calloc(3 * im->n, sizeof *names);
	float *buf = NULL;
	gguf_writer *w = NULL;
	int rc = -1, maxn = 1;

	if (!t || !ds || !names) {
		err_set(e, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n_datasets; i++)
		ds[i] = (gguf_str){ strlen(datasets[i]), (char *)datasets[i] };
	if (gguf_meta_set_str(&meta, "general.type", "imatrix") ||
	    gguf_meta_set_arr(&meta, "imatrix.datasets", GGUF_STRING, ds, n_datasets) ||
	    gguf_meta_set_u32(&meta, "imatrix.chunk_count", (uint32_t)im->chunks) ||
	    gguf_meta_set_u32(&meta, "imatrix.chunk_size", (uint32_t)im->chunk_size)) {
		err_set(e, "out of memory");
		goto out;
	}
	for (size_t i = 0; i + 1 < 2 * n_extra; i += 2)
		if (gguf_meta_set_str(&meta, extra[i], extra[i + 1])) {
			err_set(e, "out of memory");
			goto out;
		}
	static const char *const suffix[3] = { "in_sum2", "counts", "in_sum" };
	for (size_t i = 0; i < im->n; i++) {
		maxn = im->e[i].n_in > maxn ? im->e[i].n_in : maxn;
		for (int k = 0; k < 3; k++) {
			gguf_tensor *x = &t[3 * i + k];
			size_t nl = strlen(im->e[i].name) + 16;
			names[3 * i + k] = malloc(nl);
			if (!names[3 * i + k]) {
				err_set(e, "out of memory");
				goto out;
			}
			snprintf(names[3 * i + k], nl, "%s.%s", im->e[i].name, suffix[k]);
			x->name = names[3 * i + k];
			x->type = GGUF_TYPE_F32;
			x->n_dims = 1;
			x->ne[0] = k == 1 ? 1 : (uint64_t)im->e[i].n_in;
			x->ne[1] = x->ne[2] = x->ne[3] = 1;
		}
	}
	buf = malloc((size_t)maxn * sizeof *buf);
	if (!buf) {
		err_set(e, "out of memory");
		goto out;
	}
	if (!(w = gguf_writer_begin(path, 0, &meta, t, 3 * im->n, e)))
		goto out;
	for (size_t i = 0; i < im->n; i++) {
		const eval_imx_entry *en = &im->e[i];
		for (int j = 0; j < en->n_in; j++)
			buf[j] = (float)en->sum2[j];
		if (gguf_writer_write(w, buf, (size_t)en->n_in * sizeof *buf, e))
			goto out;
		buf[0] = (float)en->count;
		if (gguf_writer_write(w, buf, sizeof *buf, e))
			goto out;
		for (int j = 0; j < en->n_in; j++)
			buf[j] = (float)en->sum[j];
		if (gguf_writer_write(w, buf, (size_t)en->n_in * sizeof *buf, e))
			goto out;
	}
	rc = gguf_writer_finish(w, NULL, e);
	w = NULL;
out:
	if (w)
		gguf_writer_abort(w);
	gguf_meta_free(&meta);
	for (size_t i = 0; names && i < 3 * im->n; i++)
		free(names[i]);
	free(names);
	free(t);
	free(ds);
	free(buf);
	return rc;
}

int eval_imx_save_dat(const eval_imx *im, const char *path, const char *dataset, err *e)
{
	afile f;
	float *buf = NULL;
	int open = 0;
	if (afile_open(&f, path, 0, 0, e))
		return -1;
	open = 1;
	int32_t n = (int32_t)im->n;
	if (afile_write(&f, &n, 4, e))
		goto fail;
	for (size_t i = 0; i < im->n; i++) {
		const eval_imx_entry *en = &im->e[i];
		int32_t hdr[3] = { (int32_t)strlen(en->name), im->chunks, en->n_in };
		float *b = realloc(buf, (size_t)en->n_in * sizeof *b);
		if (!b) {
			err_set(e, "out of memory");
			goto fail;
		}
		buf = b;
		/* llama-imatrix stores the mean square scaled by its call count. */
		for (int j = 0; j < en->n_in; j++)
			buf[j] = en->count ? (float)(en->sum2[j] / (double)en->count * im->chunks) : 0.0f;
		if (afile_write(&f, &hdr[0], 4, e) || afile_write(&f, en->name, (size_t)hdr[0], e) ||
		    afile_write(&f, &hdr[1], 8, e) || afile_write(&f, buf, (size_t)en->n_in * sizeof *buf, e))
			goto fail;
	}
	int32_t tail[2] = { im->chunks, (int32_t)strlen(dataset) };
	if (afile_write(&f, tail, 8, e) || afile_write(&f, dataset, strlen(dataset), e))
		goto fail;
	free(buf);
	return afile_commit(&f, NULL, e);
fail:
	if (open)
		afile_abort(&f);
	free(buf);
	return -1;
}

/* ---- comparison with a baseline ---- */

const double eval_kld_pcts[11] = { 100, 99.9, 99, 95, 90, 50, 10, 5, 1, 0.1, 0 };
const double eval_dp_pcts[13] = { 100, 99.9, 99, 95, 90, 75, 50, 25, 10, 5, 1, 0.1, 0 };

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* The p-th percentile (0..100) of sorted v[0..n). */
static double pct(const double *v, size_t n, double p)
{
	size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
	return v[i < n ? i : n - 1];
}

/* Log-sum-exp of logits and their argmax. */
static double lse(const float *l, int n, int *arg)
{
	int a = 0;
	for (int i = 1; i < n; i++)
		if (l[i] > l[a])
			a = i;
	double sum = 0;
	for (int i = 0; i < n; i++)
		sum += expf(l[i] - l[a]);
	*arg = a;
	return (double)l[a] + log(sum);
}

/* ---- saved baseline log-probabilities ---- */

/* File layout (little-endian): "QBLP", u32 version 1, u32 n_vocab, u32 ctx, u32 chunks,
 * u32 scored positions per chunk; then per scored position, in order: f32 lo, f32 nll,
 * u16 q[n_vocab] with log p(i) = lo * (1 - q[i] / 65535). Sixteen bits per entry keep
 * each log-probability within |lo| / 131070 (a few 1e-4 nats), which moves the mean KLD
 * by well under 1 %; nll is the exact negative log-likelihood of the target. */
enum { BASE_VERSION = 1 };

typedef struct base_file {
	const char *path;
	FILE *f;
	int n_vocab, ctx, chunks, scored;
	uint16_t *q; /* one row */
} base_file;

/* Appends one position: the row's log-softmax, quantized; buf holds 8 + 2 nv bytes. */
static int base_write_row(afile *f, const float *l, int nv, int32_t target, uint8_t *buf, err *e)
{
	int arg;
	double z = lse(l, nv, &arg), lo = 0;
	float hdr[2];

	for (int i = 0; i < nv; i++)
		lo = l[i] - z < lo ? l[i] - z : lo;
	hdr[0] = (float)lo;
	hdr[1] = (float)(z - l[target]);
	memcpy(buf, hdr, sizeof hdr);
	for (int i = 0; i < nv; i++) {
		uint16_t q = lo < 0 ? (uint16_t)lrint(65535.0 * (1.0 - (l[i] - z) / lo)) : 65535;

		memcpy(buf + 8 + 2 * (size_t)i, &q, 2);
	}
	return afile_write(f, buf, 8 + 2 * (size_t)nv, e);
}

/* Reads n positions into the logits rows of lb (stride rows per sequence of `scored`). */
static int base_read(base_file *b, float *lb, size_t n, int stride, int scored, err *e)
{
	for (size_t k = 0; k < n; k++) {
		float hdr[2], *row = lb + ((k / (size_t)scored) * (size_t)stride + k % (size_t)scored) * (size_t)b->n_vocab;

		if (fread(hdr, sizeof hdr, 1, b->f) != 1 || fread(b->q, 2, (size_t)b->n_vocab, b->f) != (size_t)b->n_vocab)
			return err_set(e, "%s: truncated at position %zu", b->path, k);
		for (int i = 0; i < b->n_vocab; i++)
			row[i] = hdr[0] * (float)(1.0 - b->q[i] / 65535.0);
	}
	return 0;
}

int eval_base_save(const model *m, const tok_vocab *v, const char *text, size_t len, int ctx, int max_chunks,
		   const char *path, eval_ppl *out, err *e)
{
	const model_hparams *hp = model_params(m);
	int nv = hp->n_vocab, first = ctx / 2, scored = ctx - 1 - first, n_chunks;
	tok_ids ids = { 0 };
	float *lb = NULL;
	uint8_t *row = NULL;
	double nll = 0, nll2 = 0;
	size_t count = 0;
	uint32_t hdr[6];
	afile af;
	int rc = -1, open = 0;

	memset(out, 0, sizeof *out);
	if (ctx < 4 || ctx > hp->n_ctx_train)
		return err_set(e, "context %d is outside 4..%d (the model's training context)", ctx, hp->n_ctx_train);
	if (tok_encode(v, text, len, true, false, &ids, e))
		return -1;
	out->n_tokens = ids.n;
	if (ids.n < 2 * (size_t)ctx) {
		err_set(e, "text has %zu tokens, fewer than 2 x context (%d)", ids.n, 2 * ctx);
		goto done;
	}
	n_chunks = (int)(ids.n / (size_t)ctx);
	if (max_chunks > 0 && max_chunks < n_chunks)
		n_chunks = max_chunks;
	lb = malloc((size_t)(ctx - first) * (size_t)nv * sizeof *lb);
	row = malloc(8 + 2 * (size_t)nv);
	if (!lb || !row) {
		err_set(e, "out of memory");
		goto done;
	}
	if (afile_open(&af, path, 0, 0, e) < 0)
		goto done;
	open = 1;
	memcpy(hdr, "QBLP", 4);
	hdr[1] = BASE_VERSION;
	hdr[2] = (uint32_t)nv;
	hdr[3] = (uint32_t)ctx;
	hdr[4] = (uint32_t)n_chunks;
	hdr[5] = (uint32_t)scored;
	if (afile_write(&af, hdr, sizeof hdr, e) < 0)
		goto done;
	for (int c = 0; c < n_chunks; c++) {
		int32_t *chunk = ids.ids + (size_t)c * ctx, saved = chunk[0];
		model_batch b = { chunk, 1, ctx, first, lb, NULL, NULL };
		int failed;

		if (tok_adds_bos(v))
			chunk[0] = tok_bos(v);
		failed = model_eval(m, &b, e);
		chunk[0] = saved;
		if (failed)
			goto done;
		for (int j = 0; j < scored; j++) {
			const float *l = lb + (size_t)j * nv;
			int32_t t = chunk[first + j + 1];
			int arg;
			double x = lse(l, nv, &arg) - l[t];

			nll += x;
			nll2 += x * x;
			count++;
			if (base_write_row(&af, l, nv, t, row, e) < 0)
				goto done;
		}
	}
	open = 0;
	if (afile_commit(&af, NULL, e) < 0)
		goto done;
	out->chunks = n_chunks;
	out->count = count;
	out->nll = nll / (double)count;
	out->ppl = exp(out->nll);
	{
		double var = nll2 / (double)count - out->nll * out->nll;

		out->ppl_err = var > 0 ? sqrt(var / (double)(count - 1)) * out->ppl : 0;
	}
	rc = 0;
done:
	if (open)
		afile_abort(&af);
	tok_ids_free(&ids);
	free(lb);
	free(row);
	return rc;
}

/* eval_compare's work; the baseline's logits come from base, or from the saved file src. */
static int compare(const model *base, base_file *src, const model *m, const tok_vocab *v, const char *text, size_t len,
		   int ctx, int max_chunks, eval_progress_fn progress, void *pctx, eval_cmp *out, err *e)
{
	const model_hparams *hp = model_params(m), *hb = base ? model_params(base) : hp;
	tok_ids ids = { 0 };
	int32_t *batch = NULL;
	float *lq = NULL, *lb = NULL;
	double *kl = NULL, *dps = NULL;
	int rc = -1;

	memset(out, 0, sizeof *out);
	if (hb->n_vocab != hp->n_vocab || tok_n_vocab(v) != hp->n_vocab || (src && src->n_vocab != hp->n_vocab))
		return err_set(e, "the baseline has %d tokens, the model %d", src ? src->n_vocab : hb->n_vocab,
			       hp->n_vocab);
	if (ctx < 4)
		return err_set(e, "context %d is too small", ctx);
	if (ctx > hp->n_ctx_train || ctx > hb->n_ctx_train)
		return err_set(e, "context %d is larger than the model's training context %d", ctx,
			       hp->n_ctx_train < hb->n_ctx_train ? hp->n_ctx_train : hb->n_ctx_train);
	if (tok_encode(v, text, len, true, false, &ids, e))
		return -1;
	out->base.n_tokens = out->test.n_tokens = ids.n;
	if (ids.n < 2 * (size_t)ctx) {
		err_set(e, "text has %zu tokens, fewer than 2 x context (%d)", ids.n, 2 * ctx);
		goto done;
	}
	int n_chunks = (int)(ids.n / (size_t)ctx);
	if (max_chunks > 0 && max_chunks < n_chunks)
		n_chunks = max_chunks;
	if (src && (src->ctx != ctx || src->chunks != n_chunks)) {
		err_set(e, "%s: saved for %d chunks of %d tokens, not %d of %d", src->path, src->chunks, src->ctx,
			n_chunks, ctx);
		goto done;
	}
	int first = ctx / 2, scored = ctx - 1 - first, nv = hp->n_vocab;
	int per = BATCH_TOKENS / ctx > 0 ? BATCH_TOKENS / ctx : 1;
	size_t total = (size_t)n_chunks * (size_t)scored;
	batch = malloc((size_t)per * ctx * sizeof *batch);
	lq = malloc((size_t)per * (size_t)(ctx - first) * (size_t)nv * sizeof *lq);
	lb = malloc((size_t)per * (size_t)(ctx - first) * (size_t)nv * sizeof *lb);
	kl = malloc(total * sizeof *kl);
	dps = malloc(total * sizeof *dps);
	if (!batch || !lq || !lb || !kl || !dps) {
		err_set(e, "out of memory");
		goto done;
	}
	double nq = 0, nq2 = 0, nb = 0, nb2 = 0, dl = 0, dl2 = 0, k1 = 0, k2 = 0, d1 = 0, d2 = 0, d4 = 0;
	size_t n = 0, same = 0;
	for (int c0 = 0; c0 < n_chunks; c0 += per) {
		int ns = n_chunks - c0 < per ? n_chunks - c0 : per;
		for (int s = 0; s < ns; s++) {
			memcpy(batch + (size_t)s * ctx, ids.ids + (size_t)(c0 + s) * ctx, (size_t)ctx * sizeof *batch);
			if (tok_adds_bos(v))
				batch[(size_t)s * ctx] = tok_bos(v);
		}
		model_batch bb = { batch, ns, ctx, first, lb, NULL, NULL }, bq = { batch, ns, ctx, first, lq, NULL, NULL };
		if ((src ? base_read(src, lb, (size_t)ns * (size_t)scored, ctx - first, scored, e)
			 : model_eval(base, &bb, e)) ||
		    model_eval(m, &bq, e))
			goto done;
		for (int s = 0; s < ns; s++) {
			const int32_t *tok = ids.ids + (size_t)(c0 + s) * ctx;
			for (int j = 0; j < scored; j++) {
				size_t row = ((size_t)s * (ctx - first) + (size_t)j) * nv;
				const float *pb = lb + row, *pq = lq + row;
				int ab, aq;
				double zb = lse(pb, nv, &ab), zq = lse(pq, nv, &aq), kld = 0;
				for (int i = 0; i < nv; i++) {
					double lpb = pb[i] - zb;
					kld += exp(lpb) * (lpb - (pq[i] - zq));
				}
				int32_t t = tok[first + j + 1];
				double lpb = pb[t] - zb, lpq = pq[t] - zq, dp = exp(lpq) - exp(lpb);
				nb -= lpb;
				nb2 += lpb * lpb;
				nq -= lpq;
				nq2 += lpq * lpq;
				dl += lpb - lpq;
				dl2 += (lpb - lpq) * (lpb - lpq);
				k1 += kld;
				k2 += kld * kld;
				d1 += dp;
				d2 += dp * dp;
				d4 += dp * dp * dp * dp;
				same += ab == aq;
				kl[n] = kld;
				dps[n] = dp;
				n++;
			}
			if (progress)
				progress(pctx, c0 + s, exp(nq / (double)n));
		}
	}
	double N = (double)n;
	out->count = n;
	out->base.chunks = out->test.chunks = n_chunks;
	out->base.count = out->test.count = n;
	out->base.nll = nb / N;
	out->test.nll = nq / N;
	out->base.ppl = exp(out->base.nll);
	out->test.ppl = exp(out->test.nll);
	double vb = nb2 / N - out->base.nll * out->base.nll, vq = nq2 / N - out->test.nll * out->test.nll;
	out->base.ppl_err = vb > 0 ? sqrt(vb / (N - 1)) * out->base.ppl : 0;
	out->test.ppl_err = vq > 0 ? sqrt(vq / (N - 1)) * out->test.ppl : 0;
	out->ln_ratio = dl / N;
	double vl = dl2 / N - out->ln_ratio * out->ln_ratio;
	out->ln_ratio_err = vl > 0 ? sqrt(vl / (N - 1)) : 0;
	out->kld = k1 / N;
	double vk = k2 / N - out->kld * out->kld;
	out->kld_err = vk > 0 ? sqrt(vk / (N - 1)) : 0;
	out->dp = d1 / N;
	double vd = d2 / N - out->dp * out->dp;
	out->dp_err = vd > 0 ? sqrt(vd / (N - 1)) : 0;
	out->dp_rms = sqrt(d2 / N);
	double v2 = d4 / N - (d2 / N) * (d2 / N);
	out->dp_rms_err = out->dp_rms > 0 && v2 > 0 ? sqrt(v2 / (N - 1)) / (2 * out->dp_rms) : 0;
	out->same_top = (double)same / N;
	out->same_top_err = sqrt(out->same_top * (1 - out->same_top) / (N - 1));
	qsort(kl, n, sizeof *kl, cmp_double);
	qsort(dps, n, sizeof *dps, cmp_double);
	for (int i = 0; i < 11; i++)
		out->kld_pct[i] = pct(kl, n, eval_kld_pcts[i]);
	for (int i = 0; i < 13; i++)
		out->dp_pct[i] = pct(dps, n, eval_dp_pcts[i]);
	rc = 0;
done:
	tok_ids_free(&ids);
	free(batch);
	free(lq);
	free(lb);
	free(kl);
	free(dps);
	return rc;
}

int eval_compare(const model *base, const model *m, const tok_vocab *v, const char *text, size_t len, int ctx,
		 int max_chunks, eval_progress_fn progress, void *pctx, eval_cmp *out, err *e)
{
	return compare(base, NULL, m, v, text, len, ctx, max_chunks, progress, pctx, out, e);
}

int eval_compare_saved(const model *m, const tok_vocab *v, const char *text, size_t len, int ctx, int max_chunks,
		       const char *base_path, eval_progress_fn progress, void *pctx, eval_cmp *out, err *e)
{
	base_file b = { .path = base_path };
	char magic[4];
	uint32_t h[5];
	int rc = -1;

	if (!(b.f = fopen(base_path, "rb")))
		return err_errno(e, "%s: cannot open", base_path);
	if (fread(magic, 4, 1, b.f) != 1 || memcmp(magic, "QBLP", 4) != 0 || fread(h, 4, 5, b.f) != 5 ||
	    h[0] != BASE_VERSION || h[1] == 0 || h[1] > (1u << 24)) {
		err_set(e, "%s: offset 0: not a qbake baseline log-probability file (version %d)", base_path,
			BASE_VERSION);
		goto done;
	}
	b.n_vocab = (int)h[1];
	b.ctx = (int)h[2];
	b.chunks = (int)h[3];
	b.scored = (int)h[4];
	if (!(b.q = malloc((size_t)b.n_vocab * sizeof *b.q))) {
		err_set(e, "out of memory");
		goto done;
	}
	rc = compare(NULL, &b, m, v, text, len, ctx, max_chunks, progress, pctx, out, e);
done:
	free(b.q);
	fclose(b.f);
	return rc;
}
