/* model.c - Llama-family decoder forward pass: dequantize a matrix, multiply with OpenBLAS */
#include "model.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

/* Largest f32 slice of one weight matrix dequantized at a time (floats): bounds the
 * scratch for huge output heads; every matrix of a small model fits whole. */
#define WBUDGET ((size_t)1 << 25)
/* Query rows per attention block: rows of a block share the causal key range. */
#define QBLOCK 64

typedef struct layer {
	const gguf_tensor *attn_norm, *wq, *wk, *wv, *wo, *bq, *bk, *bv;
	const gguf_tensor *ffn_norm, *gate, *up, *down;
} layer;

struct model {
	model_hparams hp;
	int n_threads;
	const gguf_tensor *tok_embd, *out_norm, *output; /* output is tok_embd when tied */
	layer *layers;
};

struct model_cache {
	int n_ctx, n_past;
	float *k, *v; /* [n_layer][n_ctx][n_head_kv * head_dim] */
};

/* ---- threads ---- */

typedef void (*range_fn)(void *ctx, int64_t lo, int64_t hi);

typedef struct job {
	range_fn fn;
	void *ctx;
	int64_t lo, hi;
} job;

static void *run_job(void *p)
{
	job *j = p;
	j->fn(j->ctx, j->lo, j->hi);
	return NULL;
}

/* Calls fn on n_threads contiguous slices of [0, n); each index is handled by exactly
 * one call whatever the thread count, so results do not depend on it. */
static void parallel(int n_threads, int64_t n, range_fn fn, void *ctx)
{
	job jobs[64];
	pthread_t tid[64];
	int started[64] = { 0 };
	int t = n_threads < 1 ? 1 : n_threads > 64 ? 64 : n_threads;
	if (t > n)
		t = (int)(n > 0 ? n : 1);
	for (int i = 0; i < t; i++)
		jobs[i] = (job){ fn, ctx, n * i / t, n * (i + 1) / t };
	for (int i = 1; i < t; i++)
		started[i] = pthread_create(&tid[i], NULL, run_job, &jobs[i]) == 0;
	run_job(&jobs[0]);
	for (int i = 1; i < t; i++) {
		if (started[i])
			pthread_join(tid[i], NULL);
		else
			run_job(&jobs[i]); /* could not start a thread: do its share here */
	}
}

/* ---- loading ---- */

static int get_int(const gguf_meta *m, const char *arch, const char *key, int def, bool need, int *out, err *e)
{
	char k[128];
	uint64_t u;
	snprintf(k, sizeof k, "%s.%s", arch, key);
	if (gguf_meta_get_u64(m, k, &u) == 0) {
		if (u == 0 || u > (1u << 30))
			return err_set(e, "%s is %llu", k, (unsigned long long)u);
		*out = (int)u;
		return 0;
	}
	if (need)
		return err_set(e, "missing %s", k);
	*out = def;
	return 0;
}

static int get_float(const gguf_meta *m, const char *arch, const char *key, float def, float *out)
{
	char k[128];
	double d;
	snprintf(k, sizeof k, "%s.%s", arch, key);
	*out = gguf_meta_get_f64(m, k, &d) == 0 ? (float)d : def;
	return 0;
}

/* The tensor name with shape [ne0, ne1] (ne1 = 0 for a vector), or NULL with e set;
 * optional tensors that are absent give NULL without an error. */
static const gguf_tensor *want(const gguf_file *f, const char *name, uint64_t ne0, uint64_t ne1, bool optional,
			       err *e)
{
	const gguf_tensor *t = gguf_find_tensor(f, name);
	if (!t) {
		if (!optional)
			err_set(e, "%s: tensor %s is missing", f->path, name);
		return NULL;
	}
	bool ok = ne1 ? t->n_dims == 2 && t->ne[0] == ne0 && t->ne[1] == ne1 : t->n_dims == 1 && t->ne[0] == ne0;
	if (!ok) {
		err_set(e, "%s: tensor %s has shape [%llu, %llu], expected [%llu, %llu]", f->path, name,
			(unsigned long long)t->ne[0], (unsigned long long)(t->n_dims > 1 ? t->ne[1] : 0),
			(unsigned long long)ne0, (unsigned long long)ne1);
		return NULL;
	}
	if (!quant_can_dequantize(t->type)) {
		const gguf_type_info *ti = gguf_type(t->type);
		err_set(e, "%s: tensor %s has type %s, which qbake cannot dequantize", f->path, name,
			ti && ti->name ? ti->name : "unknown");
		return NULL;
	}
	return t;
}

static int load_hparams(model_hparams *hp, const gguf_meta *m, const char *path, err *e)
{
	const char *arch = gguf_meta_get_str(m, "general.architecture");
	if (!arch)
		return err_set(e, "%s: no general.architecture key", path);
	if (strcmp(arch, "llama") && strcmp(arch, "qwen2"))
		return err_set(e, "%s: architecture '%s' is not supported (supported: llama, qwen2)", path, arch);
	snprintf(hp->arch, sizeof hp->arch, "%s", arch);
	if (get_int(m, arch, "embedding_length", 0, true, &hp->n_embd, e) ||
	    get_int(m, arch, "block_count", 0, true, &hp->n_layer, e) ||
	    get_int(m, arch, "feed_forward_length", 0, true, &hp->n_ff, e) ||
	    get_int(m, arch, "attention.head_count", 0, true, &hp->n_head, e) ||
	    get_int(m, arch, "attention.head_count_kv", hp->n_head, false, &hp->n_head_kv, e) ||
	    get_int(m, arch, "attention.key_length", hp->n_embd / hp->n_head, false, &hp->head_dim, e) ||
	    get_int(m, arch, "context_length", 0, true, &hp->n_ctx_train, e))
		return err_prefix(e, "%s", path);
	if (get_int(m, arch, "rope.dimension_count", hp->head_dim, false, &hp->n_rot, e))
		return err_prefix(e, "%s", path);
	get_float(m, arch, "attention.layer_norm_rms_epsilon", 1e-5f, &hp->eps);
	get_float(m, arch, "rope.freq_base", 10000.0f, &hp->rope_base);
	if (hp->n_head % hp->n_head_kv || hp->n_rot > hp->head_dim || hp->n_rot % 2 || hp->head_dim > 2048)
		return err_set(e, "%s: inconsistent attention hyper-parameters (heads %d, kv heads %d, head dim %d, rope dims %d)",
			       path, hp->n_head, hp->n_head_kv, hp->head_dim, hp->n_rot);
	hp->rope_neox = !strcmp(arch, "qwen2");
	hp->qkv_bias = !strcmp(arch, "qwen2");
	return 0;
}

static int load_layer(model *md, const gguf_file *f, int il, err *e)
{
	const model_hparams *hp = &md->hp;
	layer *L = &md->layers[il];
	uint64_t d = (uint64_t)hp->n_embd, qd = (uint64_t)hp->n_head * hp->head_dim;
	uint64_t kvd = (uint64_t)hp->n_head_kv * hp->head_dim, ff = (uint64_t)hp->n_ff;
	char n[96];
#define T(field, suffix, ne0, ne1, opt)                                                    \
	do {                                                                               \
		snprintf(n, sizeof n, "blk.%d.%s", il, suffix);                            \
		L->field = want(f, n, ne0, ne1, opt, e);                                  \
		if (!L->field && (!(opt) || e->set))                                      \
			return -1;                                                         \
	} while (0)
	T(attn_norm, "attn_norm.weight", d, 0, false);
	T(wq, "attn_q.weight", d, qd, false);
	T(wk, "attn_k.weight", d, kvd, false);
	T(wv, "attn_v.weight", d, kvd, false);
	T(wo, "attn_output.weight", qd, d, false);
	T(bq, "attn_q.bias", qd, 0, !hp->qkv_bias);
	T(bk, "attn_k.bias", kvd, 0, !hp->qkv_bias);
	T(bv, "attn_v.bias", kvd, 0, !hp->qkv_bias);
	T(ffn_norm, "ffn_norm.weight", d, 0, false);
	T(gate, "ffn_gate.weight", d, ff, false);
	T(up, "ffn_up.weight", d, ff, false);
	T(down, "ffn_down.weight", ff, d, false);
#undef T
	return 0;
}

model *model_load(const gguf_file *f, int n_threads, err *e)
{
	model *md = calloc(1, sizeof *md);
	if (!md) {
		err_set(e, "out of memory");
		return NULL;
	}
	md->n_threads = n_threads < 1 ? 1 : n_threads;
	model_hparams *hp = &md->hp;
	if (load_hparams(hp, &f->meta, f->path, e))
		goto fail;
	const gguf_tensor *te = gguf_find_tensor(f, "token_embd.weight");
	if (!te || te->n_dims != 2) {
		err_set(e, "%s: tensor token_embd.weight is missing or not a matrix", f->path);
		goto fail;
	}
	hp->n_vocab = (int)te->ne[1];
	md->tok_embd = want(f, "token_embd.weight", (uint64_t)hp->n_embd, (uint64_t)hp->n_vocab, false, e);
	md->out_norm = want(f, "output_norm.weight", (uint64_t)hp->n_embd, 0, false, e);
	if (!md->tok_embd || !md->out_norm)
		goto fail;
	md->output = want(f, "output.weight", (uint64_t)hp->n_embd, (uint64_t)hp->n_vocab, true, e);
	if (e->set)
		goto fail;
	if (!md->output)
		md->output = md->tok_embd;
	md->layers = calloc((size_t)hp->n_layer, sizeof *md->layers);
	if (!md->layers) {
		err_set(e, "out of memory");
		goto fail;
	}
	for (int il = 0; il < hp->n_layer; il++)
		if (load_layer(md, f, il, e))
			goto fail;
	return md;
fail:
	model_free(md);
	return NULL;
}

void model_free(model *m)
{
	if (!m)
		return;
	free(m->layers);
	free(m);
}

const model_hparams *model_params(const model *m)
{
	return &m->hp;
}

/* ---- kernels ---- */

static void dequant_rows(const gguf_tensor *t, int64_t r0, int64_t r1, float *dst)
{
	uint64_t rs = gguf_row_size(t->type, t->ne[0]);
	const uint8_t *src = (const uint8_t *)t->data + (uint64_t)r0 * rs;
	for (int64_t r = r0; r < r1; r++, src += rs, dst += t->ne[0])
		quant_dequant_row(t->type, src, dst, (int64_t)t->ne[0]);
}

/* y[n][ldy] (columns c0..) = x[n][in] . W[rows][in]^T, for the rows of one slice. */
typedef struct mm {
	const gguf_tensor *w;
	const float *x;
	float *y;
	int n, ldy;
	int64_t r0;  /* first weight row of this pass */
	int64_t rows; /* weight rows in this pass */
	float *wbuf; /* dequantized rows r0.. of this pass */
} mm;

/* Dequantizes weight rows lo..hi of this pass. */
static void mm_dequant(void *p, int64_t lo, int64_t hi)
{
	const mm *a = p;
	dequant_rows(a->w, a->r0 + lo, a->r0 + hi, a->wbuf + lo * (int64_t)a->w->ne[0]);
}

/* Workspace of one forward pass. */
typedef struct ws {
	const model *m;
	float *wbuf;   /* dequantized weight slice */
	size_t wcap;   /* floats in wbuf */
	model_matmul_fn on_matmul;
	void *ctx;
} ws;

/* y = x . W^T (+ bias): each thread dequantizes its own rows of W and multiplies them. */
static int matmul(ws *s, const gguf_tensor *w, const gguf_tensor *bias, const float *x, int n, float *y, int ldy,
		  err *e)
{
	int64_t rows = (int64_t)w->ne[1], in = (int64_t)w->ne[0];
	int64_t step = (int64_t)(WBUDGET / (size_t)in);
	if (step < 1)
		step = 1;
	if (step > rows)
		step = rows;
	if ((size_t)(step * in) > s->wcap) {
		float *b = realloc(s->wbuf, (size_t)(step * in) * sizeof *b);
		if (!b)
			return err_set(e, "out of memory for %lld x %lld weights of %s", (long long)step, (long long)in,
				       w->name);
		s->wbuf = b;
		s->wcap = (size_t)(step * in);
	}
	if (s->on_matmul)
		s->on_matmul(s->ctx, w->name, x, n, (int)in);
	for (int64_t r0 = 0; r0 < rows; r0 += step) {
		int64_t r1 = r0 + step < rows ? r0 + step : rows;
		mm a = { w, x, y, n, ldy, r0, r1 - r0, s->wbuf };
		parallel(s->m->n_threads, r1 - r0, mm_dequant, &a);
		/* One GEMM for the whole slice, threaded by OpenBLAS: each output element is
		 * still one dot product over the same K order, whatever the thread count. */
		openblas_set_num_threads(s->m->n_threads);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, (int)(r1 - r0), (int)in, 1.0f, x, (int)in, s->wbuf,
			    (int)in, 0.0f, y + r0, ldy);
		openblas_set_num_threads(1);
	}
	if (bias) {
		float *b = s->wbuf; /* free again: the multiplication is done */
		dequant_rows(bias, 0, 1, b);
		for (int i = 0; i < n; i++)
			for (int64_t j = 0; j < rows; j++)
				y[(size_t)i * (size_t)ldy + (size_t)j] += b[j];
	}
	return 0;
}

/* y = x / rms(x) * g, row by row (the sum of squares in double, as ggml does). */
static void rmsnorm(const float *x, const float *g, float *y, int n, int d, float eps)
{
	for (int i = 0; i < n; i++) {
		const float *xi = x + (size_t)i * d;
		float *yi = y + (size_t)i * d;
		double ss = 0;
		for (int j = 0; j < d; j++)
			ss += (double)xi[j] * xi[j];
		float scale = 1.0f / sqrtf((float)(ss / d) + eps);
		for (int j = 0; j < d; j++)
			yi[j] = xi[j] * scale * g[j];
	}
}

/* Rotary embedding of rows x[n][n_heads * hd] at positions pos0 + (i % per_seq). */
static void rope(const model_hparams *hp, float *x, int n, int n_heads, int per_seq, int pos0)
{
	float theta_scale = powf(hp->rope_base, -2.0f / (float)hp->n_rot);
	int half = hp->n_rot / 2;
	float cs[1024][2];
	int ld = n_heads * hp->head_dim;
	for (int i = 0; i < n; i++) {
		float theta = (float)(pos0 + i % per_seq);
		for (int k = 0; k < half && k < 1024; k++) {
			cs[k][0] = cosf(theta);
			cs[k][1] = sinf(theta);
			theta *= theta_scale;
		}
		for (int h = 0; h < n_heads; h++) {
			float *v = x + (size_t)i * ld + (size_t)h * hp->head_dim;
			for (int k = 0; k < half; k++) {
				int a = hp->rope_neox ? k : 2 * k, b = hp->rope_neox ? k + half : 2 * k + 1;
				float x0 = v[a], x1 = v[b];
				v[a] = x0 * cs[k][0] - x1 * cs[k][1];
				v[b] = x0 * cs[k][1] + x1 * cs[k][0];
			}
		}
	}
}

/* Causal attention of one forward pass, split by (sequence, head). */
typedef struct attn {
	const model_hparams *hp;
	const float *q;   /* [n_seq * T][n_head * hd] */
	const float *k, *v; /* keys/values: [n_seq * T][kvd] fresh, or the cache of one sequence */
	float *out;       /* [n_seq * T][n_head * hd] */
	int T, n_past;    /* new tokens per sequence; positions already in the cache */
	bool cached;      /* k and v are a cache holding n_past + T positions */
	float *scores;    /* per thread: QBLOCK * (n_past + T) floats */
	int n_threads;
	int64_t n_tasks;
} attn;

static void attn_task(const attn *a, int64_t task, float *S)
{
	const model_hparams *hp = a->hp;
	int hd = hp->head_dim, qd = hp->n_head * hd, kvd = hp->n_head_kv * hd;
	int seq = (int)(task / hp->n_head), h = (int)(task % hp->n_head);
	int g = h / (hp->n_head / hp->n_head_kv);
	const float *Q = a->q + (size_t)seq * a->T * qd + (size_t)h * hd;
	const float *K = a->k + (a->cached ? 0 : (size_t)seq * a->T * kvd) + (size_t)g * hd;
	const float *V = a->v + (a->cached ? 0 : (size_t)seq * a->T * kvd) + (size_t)g * hd;
	float *O = a->out + (size_t)seq * a->T * qd + (size_t)h * hd;
	float scale = 1.0f / sqrtf((float)hd);

	for (int t0 = 0; t0 < a->T; t0 += QBLOCK) {
		int rows = a->T - t0 < QBLOCK ? a->T - t0 : QBLOCK;
		int L = a->n_past + t0 + rows; /* keys any row of this block may see */
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, L, hd, scale, Q + (size_t)t0 * qd, qd, K, kvd,
			    0.0f, S, L);
		for (int r = 0; r < rows; r++) {
			float *s = S + (size_t)r * L;
			int visible = a->n_past + t0 + r + 1;
			float mx = -INFINITY;
			for (int j = 0; j < visible; j++)
				mx = s[j] > mx ? s[j] : mx;
			double sum = 0;
			for (int j = 0; j < visible; j++) {
				s[j] = expf(s[j] - mx);
				sum += s[j];
			}
			float inv = (float)(1.0 / sum);
			for (int j = 0; j < visible; j++)
				s[j] *= inv;
			for (int j = visible; j < L; j++)
				s[j] = 0.0f;
		}
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, L, 1.0f, S, L, V, kvd, 0.0f,
			    O + (size_t)t0 * qd, qd);
	}
}

typedef struct attn_part {
	const attn *a;
	int64_t lo, hi;
	float *S;
} attn_part;

static void *attn_run(void *p)
{
	attn_part *ap = p;
	for (int64_t t = ap->lo; t < ap->hi; t++)
		attn_task(ap->a, t, ap->S);
	return NULL;
}

static void attention(const attn *a)
{
	attn_part parts[64];
	pthread_t tid[64];
	int ok[64] = { 0 };
	int t = a->n_threads > 64 ? 64 : a->n_threads;
	size_t per = (size_t)QBLOCK * (size_t)(a->n_past + a->T);
	if (t > a->n_tasks)
		t = (int)a->n_tasks;
	if (t < 1)
		t = 1;
	for (int i = 0; i < t; i++)
		parts[i] = (attn_part){ a, a->n_tasks * i / t, a->n_tasks * (i + 1) / t, a->scores + (size_t)i * per };
	for (int i = 1; i < t; i++)
		ok[i] = pthread_create(&tid[i], NULL, attn_run, &parts[i]) == 0;
	attn_run(&parts[0]);
	for (int i = 1; i < t; i++) {
		if (ok[i])
			pthread_join(tid[i], NULL);
		else
			attn_run(&parts[i]);
	}
}

static void add_into(float *x, const float *y, size_t n)
{
	for (size_t i = 0; i < n; i++)
		x[i] += y[i];
}

/* One forward pass: n_seq sequences of T tokens from empty states, or (cache != NULL,
 * n_seq == 1) T tokens appended to the cache. Logits for positions >= from of each
 * sequence go to logits when it is not NULL. */
static int forward(const model *m, model_cache *cache, const int32_t *tokens, int n_seq, int T, int from,
		   float *logits, model_matmul_fn on_matmul, void *ctx, err *e)
{
	const model_hparams *hp = &m->hp;
	int d = hp->n_embd, hd = hp->head_dim, qd = hp->n_head * hd, kvd = hp->n_head_kv * hd, ff = hp->n_ff;
	int n_past = cache ? cache->n_past : 0;
	size_t N = (size_t)n_seq * (size_t)T;
	int rc = -1;
	ws s = { m, NULL, 0, on_matmul, ctx };
	float *x = NULL, *cur = NULL, *q = NULL, *k = NULL, *v = NULL, *att = NULL, *g = NULL, *u = NULL,
	      *nrm = NULL, *scores = NULL;
	int nt = m->n_threads > 64 ? 64 : m->n_threads;

	for (size_t i = 0; i < N; i++)
		if (tokens[i] < 0 || tokens[i] >= hp->n_vocab)
			return err_set(e, "token id %d at %zu is outside the vocabulary (%d)", tokens[i], i, hp->n_vocab);
	x = malloc(N * d * sizeof *x);
	cur = malloc(N * d * sizeof *cur);
	q = malloc(N * qd * sizeof *q);
	k = malloc(N * kvd * sizeof *k);
	v = malloc(N * kvd * sizeof *v);
	att = malloc(N * qd * sizeof *att);
	g = malloc(N * ff * sizeof *g);
	u = malloc(N * ff * sizeof *u);
	nrm = malloc((size_t)d * sizeof *nrm);
	scores = malloc((size_t)nt * QBLOCK * (size_t)(n_past + T) * sizeof *scores);
	if (!x || !cur || !q || !k || !v || !att || !g || !u || !nrm || !scores) {
		err_set(e, "out of memory for a batch of %zu tokens", N);
		goto out;
	}
	openblas_set_num_threads(1); /* the parallelism is ours: one GEMM slice per thread */

	for (size_t i = 0; i < N; i++)
		dequant_rows(m->tok_embd, tokens[i], tokens[i] + 1, x + i * d);

	for (int il = 0; il < hp->n_layer; il++) {
		const layer *L = &m->layers[il];
		dequant_rows(L->attn_norm, 0, 1, nrm);
		rmsnorm(x, nrm, cur, (int)N, d, hp->eps);
		if (matmul(&s, L->wq, L->bq, cur, (int)N, q, qd, e) || matmul(&s, L->wk, L->bk, cur, (int)N, k, kvd, e) ||
		    matmul(&s, L->wv, L->bv, cur, (int)N, v, kvd, e))
			goto out;
		rope(hp, q, (int)N, hp->n_head, T, n_past);
		rope(hp, k, (int)N, hp->n_head_kv, T, n_past);
		attn a = { hp, q, k, v, att, T, n_past, false, scores, nt, (int64_t)n_seq * hp->n_head };
		if (cache) {
			size_t base = (size_t)il * cache->n_ctx * kvd;
			memcpy(cache->k + base + (size_t)n_past * kvd, k, (size_t)T * kvd * sizeof *k);
			memcpy(cache->v + base + (size_t)n_past * kvd, v, (size_t)T * kvd * sizeof *v);
			a.k = cache->k + base;
			a.v = cache->v + base;
			a.cached = true;
		}
		attention(&a);
		if (matmul(&s, L->wo, NULL, att, (int)N, cur, d, e))
			goto out;
		add_into(x, cur, N * d);

		dequant_rows(L->ffn_norm, 0, 1, nrm);
		rmsnorm(x, nrm, cur, (int)N, d, hp->eps);
		if (matmul(&s, L->gate, NULL, cur, (int)N, g, ff, e) || matmul(&s, L->up, NULL, cur, (int)N, u, ff, e))
			goto out;
		for (size_t i = 0; i < N * ff; i++)
			g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
		if (matmul(&s, L->down, NULL, g, (int)N, cur, d, e))
			goto out;
		add_into(x, cur, N * d);
	}

	if (logits) {
		/* Only the rows whose logits are wanted go through the norm and the head. */
		size_t M = 0;
		for (int sq = 0; sq < n_seq; sq++)
			for (int t = from; t < T; t++, M++)
				memcpy(cur + M * d, x + ((size_t)sq * T + t) * d, (size_t)d * sizeof *x);
		dequant_rows(m->out_norm, 0, 1, nrm);
		rmsnorm(cur, nrm, cur, (int)M, d, hp->eps);
		if (matmul(&s, m->output, NULL, cur, (int)M, logits, hp->n_vocab, e))
			goto out;
	}
	if (cache)
		cache->n_past += T;
	rc = 0;
out:
	free(x);
	free(cur);
	free(q);
	free(k);
	free(v);
	free(att);
	free(g);
	free(u);
	free(nrm);
	free(scores);
	free(s.wbuf);
	return rc;
}

int model_eval(const model *m, const model_batch *b, err *e)
{
	if (b->n_seq < 1 || b->n_tok < 1 || b->logits_from < 0 || b->logits_from > b->n_tok)
		return err_set(e, "bad batch: %d sequences of %d tokens, logits from %d", b->n_seq, b->n_tok,
			       b->logits_from);
	return forward(m, NULL, b->tokens, b->n_seq, b->n_tok, b->logits_from, b->logits, b->on_matmul, b->ctx, e);
}

model_cache *model_cache_new(const model *m, int n_ctx, err *e)
{
	model_cache *c = calloc(1, sizeof *c);
	size_t n = (size_t)m->hp.n_layer * (size_t)n_ctx * (size_t)(m->hp.n_head_kv * m->hp.head_dim);
	if (c) {
		c->n_ctx = n_ctx;
		c->k = malloc(n * sizeof *c->k);
		c->v = malloc(n * sizeof *c->v);
	}
	if (!c || !c->k || !c->v || n_ctx < 1) {
		err_set(e, "cannot allocate a cache of %d positions", n_ctx);
		model_cache_free(c);
		return NULL;
	}
	return c;
}

void model_cache_free(model_cache *c)
{
	if (!c)
		return;
	free(c->k);
	free(c->v);
	free(c);
}

int model_cache_len(const model_cache *c)
{
	return c->n_past;
}

int model_decode(const model *m, model_cache *c, const int32_t *tokens, int n, float *logits, err *e)
{
	if (n < 1 || c->n_past + n > c->n_ctx)
		return err_set(e, "context full: %d positions used, %d more do not fit in %d", c->n_past, n, c->n_ctx);
	return forward(m, c, tokens, 1, n, n - 1, logits, NULL, NULL, e);
}
