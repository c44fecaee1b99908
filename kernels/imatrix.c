/* imatrix.c - importance matrices: computing them (llama-imatrix's method), reading and
 * writing llama-imatrix's GGUF and legacy .dat files */
#include "imatrix.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "afile.h"
#include "eval.h"
#include "gguf.h"
#include "sha256.h"
#include "utf8.h"

static const char SUM2_SUFFIX[] = ".in_sum2", COUNTS_SUFFIX[] = ".counts", SUM_SUFFIX[] = ".in_sum",
		  STATS_SUFFIX[] = ".stats";
static const char SCHEMA_KEY[] = "imatrix.stats_schema";
const char imx_baseline_key[] = "qbake.imatrix.baseline.sha256";

const char *const imx_stats_schema[IMX_N_STATS] = {
	"sum_sq", "mean", "elements", "std_deviation", "skewness", "kurtosis",
	"gain", "h_norm", "l2_dist", "cossim", "pearson", "covariance",
};
enum { ST_SUM_SQ, ST_MEAN, ST_ELEMENTS, ST_STD, ST_SKEW, ST_KURT, ST_GAIN, ST_HNORM, ST_L2, ST_COS, ST_PEARSON, ST_COV };

const imx_entry *imx_find(const imx_file *f, const char *name)
{
	for (size_t i = 0; i < f->n; i++)
		if (strcmp(f->e[i].name, name) == 0)
			return &f->e[i];
	return NULL;
}

static void entry_free(imx_entry *x)
{
	free(x->name);
	free(x->sum2);
	free(x->counts);
	free(x->weights);
	free(x->sum);
	free(x->stats);
}

void imx_free(imx_file *f)
{
	for (size_t i = 0; i < f->n; i++)
		entry_free(&f->e[i]);
	free(f->e);
	for (size_t i = 0; i < f->n_datasets; i++)
		free(f->datasets[i]);
	free(f->datasets);
	memset(f, 0, sizeof *f);
}

/* Appends a zeroed entry; NULL when out of memory. */
static imx_entry *new_entry(imx_file *f)
{
	imx_entry *e = realloc(f->e, (f->n + 1) * sizeof *e);

	if (!e)
		return NULL;
	f->e = e;
	memset(&e[f->n], 0, sizeof e[0]);
	return &e[f->n++];
}

static int add_dataset(imx_file *f, const char *s, size_t len)
{
	char **d = realloc(f->datasets, (f->n_datasets + 1) * sizeof *d);

	if (!d)
		return -1;
	f->datasets = d;
	d[f->n_datasets] = strndup(s, len);
	if (!d[f->n_datasets])
		return -1;
	f->n_datasets++;
	return 0;
}

/* The weights llama-quantize derives: the mean square activation per column. A matrix
 * that never saw input gets 1 (GGUF); a legacy entry is divided by its call count. */
static int make_weights(imx_entry *x, int legacy)
{
	uint64_t ne0 = x->n / x->n_mat;

	x->weights = malloc(x->n * sizeof *x->weights);
	if (!x->weights)
		return -1;
	for (uint64_t j = 0; j < x->n_mat; j++) {
		float c = x->counts[legacy ? 0 : j];

		for (uint64_t i = j * ne0; i < (j + 1) * ne0; i++) {
			if (legacy)
				/* llama.cpp divides by the integer call count */
				x->weights[i] = c > 0 ? x->sum2[i] / (float)(int64_t)c : x->sum2[i];
			else
				x->weights[i] = c > 0.0f ? x->sum2[i] / c : 1.0f;
		}
	}
	return 0;
}

/* ---- GGUF ---- */

static float *copy_f32(const gguf_tensor *t)
{
	uint64_t n = gguf_nelements(t);
	float *p = malloc((n ? n : 1) * sizeof *p);

	if (p)
		memcpy(p, t->data, n * sizeof *p);
	return p;
}

/* The F32 tensor <base><suffix> with exactly n values, copied into *out; absent leaves *out
 * NULL. Returns 0, or -1 when it is there but malformed or memory runs out. */
static int load_optional(const gguf_file *g, const char *base, size_t len, const char *suffix, uint64_t n,
			 float **out, const char *path, err *e)
{
	char name[512];
	const gguf_tensor *t;

	*out = NULL;
	if (len + strlen(suffix) + 1 > sizeof name)
		return err_set(e, "%s: tensor name %.*s is too long", path, (int)len, base);
	memcpy(name, base, len);
	strcpy(name + len, suffix);
	if (!(t = gguf_find_tensor(g, name)))
		return 0;
	if (t->type != GGUF_TYPE_F32 || gguf_nelements(t) != n)
		return err_set(e, "%s: %s must be F32 with %llu values", path, name, (unsigned long long)n);
	if (!(*out = copy_f32(t)))
		return err_set(e, "%s: out of memory", path);
	return 0;
}

static int load_gguf_entry(imx_file *f, const gguf_file *g, const gguf_tensor *t, int with_stats, const char *path,
			   err *e)
{
	size_t len = strlen(t->name) - (sizeof SUM2_SUFFIX - 1);
	char cname[512];
	const gguf_tensor *c;
	imx_entry *x;

	if (len + sizeof COUNTS_SUFFIX > sizeof cname)
		return err_set(e, "%s: tensor name %s is too long", path, t->name);
	memcpy(cname, t->name, len);
	memcpy(cname + len, COUNTS_SUFFIX, sizeof COUNTS_SUFFIX);
	c = gguf_find_tensor(g, cname);
	if (!c)
		return err_set(e, "%s: %s has no matching %s", path, t->name, cname);
	if (t->type != GGUF_TYPE_F32 || c->type != GGUF_TYPE_F32)
		return err_set(e, "%s: %s and %s must be F32", path, t->name, cname);
	if (gguf_nelements(c) == 0 || gguf_nelements(t) % gguf_nelements(c) != 0)
		return err_set(e, "%s: %s has %llu values, not a multiple of the %llu counts", path, t->name,
			       (unsigned long long)gguf_nelements(t), (unsigned long long)gguf_nelements(c));
	x = new_entry(f);
	if (!x || !(x->name = strndup(t->name, len)))
		return err_set(e, "%s: out of memory", path);
	x->n = gguf_nelements(t);
	x->n_mat = gguf_nelements(c);
	x->sum2 = copy_f32(t);
	x->counts = copy_f32(c);
	if (!x->sum2 || !x->counts || make_weights(x, 0) != 0)
		return err_set(e, "%s: out of memory", path);
	if (load_optional(g, t->name, len, SUM_SUFFIX, x->n, &x->sum, path, e) != 0)
		return -1;
	return with_stats ? load_optional(g, t->name, len, STATS_SUFFIX, IMX_N_STATS, &x->stats, path, e) : 0;
}

/* True when the file's imatrix.stats_schema is exactly ours, so its <name>.stats mean what
 * imx_entry.stats says. */
static int schema_is_ours(const gguf_meta *m)
{
	const gguf_value *v = gguf_meta_get_arr(m, SCHEMA_KEY, GGUF_STRING);

	if (!v || v->n != IMX_N_STATS)
		return 0;
	for (int i = 0; i < IMX_N_STATS; i++)
		if (strcmp(((const gguf_str *)v->arr)[i].ptr, imx_stats_schema[i]) != 0)
			return 0;
	return 1;
}

static int load_gguf(imx_file *f, const char *path, err *e)
{
	gguf_file g = { 0 };
	const char *type;
	const gguf_value *ds;
	int64_t v;
	int rc = -1;

	if (gguf_open(&g, path, e) != 0)
		return -1;
	type = gguf_meta_get_str(&g.meta, "general.type");
	if (!type || strcmp(type, "imatrix") != 0) {
		err_set(e, "%s: not an importance matrix (general.type is %s, want imatrix)", path,
			type ? type : "missing");
		goto out;
	}
	if (gguf_meta_find(&g.meta, imx_baseline_key)) {
		const char *hex = gguf_meta_get_str(&g.meta, imx_baseline_key);

		if (!hex || strlen(hex) != 64 || sha256_unhex(hex, f->baseline_sha256) != 0) {
			err_set(e, "%s: %s is not a SHA-256 in hex", path, imx_baseline_key);
			goto out;
		}
		f->has_baseline = true;
	}
	f->chunk_count = gguf_meta_get_i64(&g.meta, "imatrix.chunk_count", &v) == 0 ? v : -1;
	f->chunk_size = gguf_meta_get_i64(&g.meta, "imatrix.chunk_size", &v) == 0 ? v : 0;
	ds = gguf_meta_get_arr(&g.meta, "imatrix.datasets", GGUF_STRING);
	for (uint64_t i = 0; ds && i < ds->n; i++) {
		const gguf_str *s = &((const gguf_str *)ds->arr)[i];

		if (add_dataset(f, s->ptr, (size_t)s->len) != 0) {
			err_set(e, "%s: out of memory", path);
			goto out;
		}
	}
	for (uint64_t i = 0; i < g.n_tensors; i++) {
		const char *name = g.tensors[i].name;
		size_t len = strlen(name);

		if (len > sizeof SUM2_SUFFIX - 1 && strcmp(name + len - (sizeof SUM2_SUFFIX - 1), SUM2_SUFFIX) == 0 &&
		    load_gguf_entry(f, &g, &g.tensors[i], schema_is_ours(&g.meta), path, e) != 0)
			goto out;
	}
	if (f->n == 0) {
		err_set(e, "%s: no <tensor>.in_sum2 entries", path);
		goto out;
	}
	rc = 0;
out:
	gguf_close(&g);
	return rc;
}

/* ---- legacy .dat ---- */

/* A bounds-checked reader over the file image. */
typedef struct cursor {
	const uint8_t *p;
	size_t size, off;
	const char *path;
} cursor;

static int get_i32(cursor *c, int32_t *v, const char *what, err *e)
{
	if (c->size - c->off < 4)
		return err_set(e, "%s: offset %zu: file ends inside %s", c->path, c->off, what);
	memcpy(v, c->p + c->off, 4);
	c->off += 4;
	return 0;
}

static int get_bytes(cursor *c, const uint8_t **p, size_t n, const char *what, err *e)
{
	if (c->size - c->off < n)
		return err_set(e, "%s: offset %zu: file ends inside %s (%zu bytes needed)", c->path, c->off, what, n);
	*p = c->p + c->off;
	c->off += n;
	return 0;
}

static int load_dat_entry(imx_file *f, cursor *c, err *e)
{
	int32_t len = 0, ncall = 0, nval = 0;
	const uint8_t *name = NULL, *vals = NULL;
	size_t at = c->off;
	imx_entry *x;

	if (get_i32(c, &len, "an entry name length", e) != 0)
		return -1;
	if (len <= 0 || len > 4096)
		return err_set(e, "%s: offset %zu: bad entry name length %d", c->path, at, (int)len);
	if (get_bytes(c, &name, (size_t)len, "an entry name", e) != 0 ||
	    get_i32(c, &ncall, "a call count", e) != 0 || get_i32(c, &nval, "a value count", e) != 0)
		return -1;
	if (nval <= 0)
		return err_set(e, "%s: offset %zu: entry %.*s has %d values", c->path, c->off - 4, (int)len,
			       (const char *)name, (int)nval);
	if (get_bytes(c, &vals, (size_t)nval * 4, "an entry's values", e) != 0)
		return -1;
	x = new_entry(f);
	if (!x)
		return err_set(e, "%s: out of memory", c->path);
	x->name = strndup((const char *)name, (size_t)len);
	x->n = (uint64_t)nval;
	x->n_mat = 1;
	x->sum2 = malloc((size_t)nval * sizeof *x->sum2);
	x->counts = malloc(sizeof *x->counts);
	if (!x->name || !x->sum2 || !x->counts)
		return err_set(e, "%s: out of memory", c->path);
	memcpy(x->sum2, vals, (size_t)nval * 4);
	x->counts[0] = (float)ncall;
	return make_weights(x, 1) != 0 ? err_set(e, "%s: out of memory", c->path) : 0;
}

static int load_dat(imx_file *f, const uint8_t *buf, size_t size, const char *path, err *e)
{
	cursor c = { buf, size, 0, path };
	int32_t n = 0, last_call = 0, dlen = 0;
	const uint8_t *ds = NULL;

	f->legacy = 1;
	f->chunk_count = -1;
	if (get_i32(&c, &n, "the entry count", e) != 0)
		return -1;
	if (n <= 0)
		return err_set(e, "%s: offset 0: bad entry count %d", path, (int)n);
	for (int32_t i = 0; i < n; i++)
		if (load_dat_entry(f, &c, e) != 0)
			return -1;
	/* optional trailer: the chunk count, then the dataset name */
	if (c.off == size)
		return 0;
	if (get_i32(&c, &last_call, "the chunk count", e) != 0)
		return -1;
	f->chunk_count = last_call;
	if (c.off == size)
		return 0;
	if (get_i32(&c, &dlen, "the dataset name length", e) != 0)
		return -1;
	if (dlen < 0 || get_bytes(&c, &ds, (size_t)dlen, "the dataset name", e) != 0)
		return dlen < 0 ? err_set(e, "%s: offset %zu: bad dataset name length", path, c.off - 4) : -1;
	if (add_dataset(f, (const char *)ds, (size_t)dlen) != 0)
		return err_set(e, "%s: out of memory", path);
	if (c.off != size)
		return err_set(e, "%s: offset %zu: %zu unexpected bytes after the dataset name", path, c.off,
			       size - c.off);
	return 0;
}

static uint8_t *slurp(const char *path, size_t *size, err *e)
{
	FILE *fp = fopen(path, "rb");
	uint8_t *buf = NULL;
	long n;

	if (!fp)
		return err_errno(e, "%s", path), NULL;
	if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) {
		err_errno(e, "%s", path);
		fclose(fp);
		return NULL;
	}
	buf = malloc(n ? (size_t)n : 1);
	if (!buf || fread(buf, 1, (size_t)n, fp) != (size_t)n) {
		if (buf)
			err_errno(e, "%s: read", path);
		else
			err_set(e, "%s: out of memory", path);
		free(buf);
		buf = NULL;
	}
	fclose(fp);
	*size = (size_t)n;
	return buf;
}

int imx_load(imx_file *f, const char *path, err *e)
{
	FILE *fp;
	char magic[4] = { 0 };
	uint8_t *buf;
	size_t size;
	int rc;

	memset(f, 0, sizeof *f);
	fp = fopen(path, "rb");
	if (!fp)
		return err_errno(e, "%s", path);
	size = fread(magic, 1, 4, fp);
	fclose(fp);
	if (size == 4 && memcmp(magic, "GGUF", 4) == 0)
		rc = load_gguf(f, path, e);
	else if (!(buf = slurp(path, &size, e)))
		rc = -1;
	else {
		rc = load_dat(f, buf, size, path, e);
		free(buf);
	}
	if (rc != 0)
		imx_free(f);
	return rc;
}

/* ---- statistics ---- */

/* Layer index i of a name holding "blk.<i>.", with *at and *len locating the digits; -1 when
 * there is none. */
static long layer_of(const char *name, size_t *at, size_t *len)
{
	for (const char *p = strstr(name, "blk."); p; p = strstr(p + 1, "blk.")) {
		const char *d = p + 4, *q = d;
		long v = 0;

		while (*q >= '0' && *q <= '9' && q - d < 9)
			v = v * 10 + (*q++ - '0');
		if (q > d && *q == '.') {
			*at = (size_t)(d - name);
			*len = (size_t)(q - d);
			return v;
		}
	}
	return -1;
}

/* The same matrix one layer down (blk.<i-1>), with the same size and in_sum; or NULL. */
static const imx_entry *previous_layer(const imx_file *f, const imx_entry *x)
{
	size_t at, len;
	long i = layer_of(x->name, &at, &len);
	char name[600];
	const imx_entry *p;

	if (i <= 0 || strlen(x->name) + 2 > sizeof name)
		return NULL;
	snprintf(name, sizeof name, "%.*s%ld%s", (int)at, x->name, i - 1, x->name + at + len);
	p = imx_find(f, name);
	return p && p->sum && p->n == x->n && p->n_mat == x->n_mat ? p : NULL;
}

/* Per-column mean activation (in_sum / count) and mean square (in_sum2 / count); a matrix
 * that saw nothing gives zeros. */
static void column_means(const imx_entry *x, double *mu, double *ms)
{
	uint64_t ne0 = x->n / x->n_mat;

	for (uint64_t i = 0; i < x->n; i++) {
		double c = x->counts[i / ne0];

		mu[i] = c > 0 ? (double)x->sum[i] / c : 0.0;
		ms[i] = c > 0 ? (double)x->sum2[i] / c : 0.0;
	}
}

/* The statistics of x alone: sum_sq, the moments of mu, h_norm. */
static void own_stats(const imx_entry *x, const double *mu, const double *ms, float *st)
{
	double n = (double)x->n, sum_sq = 0, mean = 0, m2 = 0, m3 = 0, m4 = 0, h = 0;

	for (uint64_t i = 0; i < x->n; i++) {
		sum_sq += ms[i];
		mean += mu[i];
	}
	mean /= n;
	for (uint64_t i = 0; i < x->n; i++) {
		double d = mu[i] - mean;

		m2 += d * d;
		m3 += d * d * d;
		m4 += d * d * d * d;
	}
	m2 /= n;
	m3 /= n;
	m4 /= n;
	for (uint64_t i = 0; sum_sq > 0 && i < x->n; i++) {
		double p = ms[i] / sum_sq;

		if (p > 0)
			h -= p * log2(p);
	}
	st[ST_SUM_SQ] = (float)sum_sq;
	st[ST_MEAN] = (float)mean;
	st[ST_ELEMENTS] = (float)n;
	st[ST_STD] = (float)sqrt(m2);
	/* A constant vector has no shape: 0 rather than 0/0 (the golden file has no such case). */
	st[ST_SKEW] = m2 > 0 ? (float)(m3 / pow(m2, 1.5)) : 0.0f;
	st[ST_KURT] = m2 > 0 ? (float)(m4 / (m2 * m2) - 3.0) : 0.0f;
	st[ST_HNORM] = x->n > 1 ? (float)(100.0 * h / log2(n)) : 0.0f;
}

/* The statistics comparing x with the previous layer's matrix p (mu and ms of each). */
static void layer_stats(const imx_entry *x, const double *mu, const double *ms, const double *pmu, const double *pms,
			float *st)
{
	double n = (double)x->n, s = 0, ps = 0, dot = 0, nn = 0, pn = 0, l2 = 0, m = 0, pm = 0;

	for (uint64_t i = 0; i < x->n; i++) {
		s += ms[i];
		ps += pms[i];
		dot += mu[i] * pmu[i];
		nn += mu[i] * mu[i];
		pn += pmu[i] * pmu[i];
		l2 += (mu[i] - pmu[i]) * (mu[i] - pmu[i]);
		m += mu[i];
		pm += pmu[i];
	}
	m /= n;
	pm /= n;
	double cov = 0, v = 0, pv = 0;
	for (uint64_t i = 0; i < x->n; i++) {
		cov += (mu[i] - m) * (pmu[i] - pm);
		v += (mu[i] - m) * (mu[i] - m);
		pv += (pmu[i] - pm) * (pmu[i] - pm);
	}
	st[ST_GAIN] = ps > 0 ? (float)sqrt(s / ps) : NAN;
	st[ST_L2] = (float)sqrt(l2);
	/* Both silent: the same (as llama-imatrix's --show-statistics says); one silent: unrelated. */
	double cs = nn > 0 && pn > 0 ? dot / sqrt(nn * pn) : nn == 0 && pn == 0 ? 1.0 : 0.0;
	st[ST_COS] = (float)(cs > 1 ? 1 : cs < -1 ? -1 : cs);
	st[ST_PEARSON] = v > 0 && pv > 0 ? (float)(cov / sqrt(v * pv)) : 0.0f;
	st[ST_COV] = (float)(cov / n);
}

int imx_compute_stats(imx_file *f, err *e)
{
	uint64_t maxn = 1;
	double *buf;
	int rc = 0;

	for (size_t i = 0; i < f->n; i++)
		maxn = f->e[i].n > maxn ? f->e[i].n : maxn;
	buf = malloc(4 * maxn * sizeof *buf);
	if (!buf)
		return err_set(e, "out of memory for imatrix statistics");
	double *mu = buf, *ms = buf + maxn, *pmu = buf + 2 * maxn, *pms = buf + 3 * maxn;
	for (size_t i = 0; i < f->n && rc == 0; i++) {
		imx_entry *x = &f->e[i];
		const imx_entry *p;

		free(x->stats);
		x->stats = NULL;
		if (!x->sum || x->n == 0)
			continue;
		if (!(x->stats = malloc(IMX_N_STATS * sizeof *x->stats))) {
			rc = err_set(e, "out of memory for imatrix statistics");
			break;
		}
		column_means(x, mu, ms);
		own_stats(x, mu, ms, x->stats);
		x->stats[ST_GAIN] = x->stats[ST_L2] = x->stats[ST_COS] = x->stats[ST_PEARSON] = x->stats[ST_COV] = NAN;
		if ((p = previous_layer(f, x))) {
			column_means(p, pmu, pms);
			layer_stats(x, mu, ms, pmu, pms, x->stats);
		}
	}
	free(buf);
	return rc;
}

/* ---- computing ---- */

/* Tokens per forward pass, in whole chunks: each weight is dequantized once for many chunks. */
#define BATCH_TOKENS 4096
/* Most logits held at once (floats): keeps big vocabularies from asking for gigabytes. */
#define LOGITS_BUDGET ((size_t)1 << 26)
/* llama-imatrix's collector skips multiplications over fewer tokens than this. */
#define MIN_CTX 16

/* One matrix's running sums while computing; double, so 10^5 tokens lose nothing that
 * matters (llama-imatrix sums in float). */
typedef struct acc {
	char *name;
	int n_in;
	double *sum2, *sum;
	int64_t count;
} acc;

/* What the matmul callback fills. The callback cannot return an error, so it records one. */
typedef struct collector {
	acc *a;
	size_t n, cap;
	char fail[160];   /* set by the callback on the first problem; the rest is ignored */
} collector;

static acc *find_acc(collector *c, const char *w, int n_in)
{
	for (size_t i = 0; i < c->n; i++)
		if (strcmp(c->a[i].name, w) == 0)
			return &c->a[i];
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 64;
		acc *p = realloc(c->a, cap * sizeof *p);

		if (!p)
			return NULL;
		c->a = p;
		c->cap = cap;
	}
	acc *a = &c->a[c->n];
	memset(a, 0, sizeof *a);
	a->name = strdup(w);
	a->n_in = n_in;
	a->sum2 = calloc((size_t)n_in, sizeof *a->sum2);
	a->sum = calloc((size_t)n_in, sizeof *a->sum);
	c->n++; /* counted even when half made, so collector_free frees it */
	return a->name && a->sum2 && a->sum ? a : NULL;
}

static void collect(void *ctx, const char *w, const float *x, int n_tokens, int n_in)
{
	collector *c = ctx;
	acc *a;

	if (c->fail[0] || strncmp(w, "blk.", 4) != 0)
		return;
	if (!(a = find_acc(c, w, n_in))) {
		snprintf(c->fail, sizeof c->fail, "out of memory for the importance matrix");
		return;
	}
	if (a->n_in != n_in) {
		snprintf(c->fail, sizeof c->fail, "%.60s is multiplied with %d and with %d columns", w, a->n_in, n_in);
		return;
	}
	for (int t = 0; t < n_tokens; t++) {
		const float *r = x + (size_t)t * (size_t)n_in;

		for (int j = 0; j < n_in; j++) {
			a->sum2[j] += (double)r[j] * (double)r[j];
			a->sum[j] += (double)r[j];
		}
	}
	a->count += n_tokens;
}

static void collector_free(collector *c)
{
	for (size_t i = 0; i < c->n; i++) {
		free(c->a[i].name);
		free(c->a[i].sum2);
		free(c->a[i].sum);
	}
	free(c->a);
}

static int by_acc_name(const void *a, const void *b)
{
	return strcmp(((const acc *)a)->name, ((const acc *)b)->name);
}

/* Moves the sums into out's entries (float, as the file stores them), sorted by name as
 * llama-imatrix writes them. */
static int fill_entries(imx_file *out, collector *c, err *e)
{
	qsort(c->a, c->n, sizeof *c->a, by_acc_name);
	out->e = calloc(c->n, sizeof *out->e);
	if (!out->e)
		return err_set(e, "out of memory");
	for (size_t i = 0; i < c->n; i++) {
		const acc *a = &c->a[i];
		imx_entry *x = &out->e[out->n++];

		x->name = strdup(a->name);
		x->n = (uint64_t)a->n_in;
		x->n_mat = 1;
		x->sum2 = malloc((size_t)a->n_in * sizeof *x->sum2);
		x->sum = malloc((size_t)a->n_in * sizeof *x->sum);
		x->counts = malloc(sizeof *x->counts);
		if (!x->name || !x->sum2 || !x->sum || !x->counts)
			return err_set(e, "out of memory");
		for (int j = 0; j < a->n_in; j++) {
			x->sum2[j] = (float)a->sum2[j];
			x->sum[j] = (float)a->sum[j];
		}
		x->counts[0] = (float)a->count;
		if (make_weights(x, 0) != 0)
			return err_set(e, "out of memory");
	}
	return 0;
}

/* The chunks to run, after checking the text and the sizes; -1 with e set. */
static int plan_chunks(const model_hparams *hp, const tok_vocab *v, const tok_ids *ids, const imx_params *p, err *e)
{
	if ((size_t)tok_n_vocab(v) != (size_t)hp->n_vocab)
		return err_set(e, "the tokenizer has %d tokens, the model's embedding %d", tok_n_vocab(v), hp->n_vocab);
	/* llama-imatrix refuses fewer than two chunks' worth, though one chunk would be enough. */
	if (ids->n < 2 * (size_t)p->ctx)
		return err_set(e, "the text has %zu tokens; at least 2 x ctx = %d are needed (as llama-imatrix asks)",
			       ids->n, 2 * p->ctx);
	size_t n = ids->n / (size_t)p->ctx;
	if (p->max_chunks > 0 && (size_t)p->max_chunks < n)
		n = (size_t)p->max_chunks;
	return n > (size_t)1 << 30 ? err_set(e, "too many chunks (%zu)", n) : (int)n;
}

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

/* Records everything but the entries in out. */
static int fill_header(imx_file *out, const imx_params *p, int n_chunks, err *e)
{
	out->chunk_count = n_chunks;
	out->chunk_size = p->ctx;
	if (p->baseline_sha256) {
		memcpy(out->baseline_sha256, p->baseline_sha256, 32);
		out->has_baseline = true;
	}
	for (size_t i = 0; i < p->n_datasets; i++) {
		const char *b = base_name(p->datasets[i]);

		if (add_dataset(out, b, strlen(b)) != 0)
			return err_set(e, "out of memory");
	}
	return 0;
}

/* Runs every chunk through m, in passes of several chunks, collecting into c and scoring the
 * second half of each chunk into r. */
static int run_chunks(const model *m, const tok_vocab *v, const tok_ids *ids, int n_chunks, const imx_params *p,
		      collector *c, imx_ppl *r, err *e)
{
	const model_hparams *hp = model_params(m);
	int ctx = p->ctx, first = ctx / 2, scored = ctx - 1 - first;
	size_t rows = (size_t)(ctx - first) * (size_t)hp->n_vocab;
	int per = BATCH_TOKENS / ctx;
	if ((size_t)per * rows > LOGITS_BUDGET)
		per = (int)(LOGITS_BUDGET / rows);
	per = per < 1 ? 1 : per > n_chunks ? n_chunks : per;
	int32_t *batch = malloc((size_t)per * (size_t)ctx * sizeof *batch);
	float *logits = malloc((size_t)per * rows * sizeof *logits);
	double nll = 0, nll2 = 0;
	int rc = -1;

	if (!batch || !logits) {
		err_set(e, "out of memory for %d chunks of %d tokens", per, ctx);
		goto out;
	}
	for (int c0 = 0; c0 < n_chunks; c0 += per) {
		int ns = n_chunks - c0 < per ? n_chunks - c0 : per;

		memcpy(batch, ids->ids + (size_t)c0 * (size_t)ctx, (size_t)ns * (size_t)ctx * sizeof *batch);
		for (int s = 0; s < ns && tok_adds_bos(v); s++)
			batch[(size_t)s * (size_t)ctx] = tok_bos(v);
		model_batch b = { batch, ns, ctx, first, logits, collect, c };
		if (model_eval(m, &b, e) != 0)
			goto out;
		if (c->fail[0]) {
			err_set(e, "%s", c->fail);
			goto out;
		}
		for (int s = 0; s < ns; s++) {
			/* targets are the text's own tokens: BOS only replaced the first input */
			const int32_t *tok = ids->ids + (size_t)(c0 + s) * (size_t)ctx;

			for (int j = 0; j < scored; j++) {
				double lp = eval_logprob(logits + (size_t)s * rows + (size_t)j * (size_t)hp->n_vocab,
							 hp->n_vocab, tok[first + j + 1]);
				nll -= lp;
				nll2 += lp * lp;
				r->count++;
			}
			if (p->progress)
				p->progress(p->pctx, c0 + s + 1, n_chunks, exp(nll / (double)r->count));
		}
	}
	r->chunks = n_chunks;
	double mean = nll / (double)r->count, var = nll2 / (double)r->count - mean * mean;
	r->ppl = exp(mean);
	r->ppl_err = var > 0 && r->count > 1 ? r->ppl * sqrt(var / (double)(r->count - 1)) : 0;
	rc = 0;
out:
	free(batch);
	free(logits);
	return rc;
}

int imx_compute(imx_file *out, const model *m, const tok_vocab *v, const char *text, size_t len,
		const imx_params *p, imx_ppl *ppl, err *e)
{
	const model_hparams *hp = model_params(m);
	tok_ids ids = { 0 };
	collector c = { 0 };
	imx_ppl r = { 0 };
	int n_chunks, rc = -1;

	memset(out, 0, sizeof *out);
	if (ppl)
		memset(ppl, 0, sizeof *ppl);
	if (p->ctx < MIN_CTX)
		return err_set(e, "ctx %d is below %d (llama-imatrix ignores multiplications over fewer tokens)",
			       p->ctx, MIN_CTX);
	if (p->ctx > hp->n_ctx_train)
		return err_set(e, "ctx %d is larger than the model's context (%s.context_length = %d)", p->ctx, hp->arch,
			       hp->n_ctx_train);
	size_t bad = utf8_check(text, len);
	if (bad < len)
		return err_set(e, "offset %zu: not UTF-8 text (byte 0x%02x)", bad, (unsigned char)text[bad]);
	if (tok_encode(v, text, len, true, false, &ids, e) != 0)
		return -1;
	r.n_tokens = ids.n;
	if ((n_chunks = plan_chunks(hp, v, &ids, p, e)) < 0 || run_chunks(m, v, &ids, n_chunks, p, &c, &r, e) != 0)
		goto out;
	if (c.n == 0) {
		err_set(e, "the model has no blk.* matrix multiplications");
		goto out;
	}
	if (fill_header(out, p, n_chunks, e) != 0 || fill_entries(out, &c, e) != 0 || imx_compute_stats(out, e) != 0)
		goto out;
	rc = 0;
out:
	if (ppl)
		*ppl = r;
	if (rc != 0)
		imx_free(out);
	tok_ids_free(&ids);
	collector_free(&c);
	return rc;
}

/* ---- writing ---- */

/* Tensor info for name+suffix, a 2-D [ne0, ne1] F32 array written with as many dimensions as
 * ggml would (trailing 1s dropped). */
static int tensor_info(gguf_tensor *t, const char *name, const char *suffix, uint64_t ne0, uint64_t ne1)
{
	size_t n = strlen(name) + strlen(suffix) + 1;

	if (!(t->name = malloc(n)))
		return -1;
	snprintf(t->name, n, "%s%s", name, suffix);
	t->type = GGUF_TYPE_F32;
	t->n_dims = ne1 > 1 ? 2 : 1;
	t->ne[0] = ne0;
	t->ne[1] = ne1;
	t->ne[2] = t->ne[3] = 1;
	return 0;
}

static int gguf_header(const imx_file *f, gguf_meta *meta, err *e)
{
	gguf_str ds[64], schema[IMX_N_STATS];
	size_t nd = f->n_datasets < 64 ? f->n_datasets : 64;
	int rc = 0, any_stats = 0;
	char hex[65];

	for (size_t i = 0; i < nd; i++)
		ds[i] = (gguf_str){ strlen(f->datasets[i]), f->datasets[i] };
	for (int i = 0; i < IMX_N_STATS; i++)
		schema[i] = (gguf_str){ strlen(imx_stats_schema[i]), (char *)imx_stats_schema[i] };
	for (size_t i = 0; i < f->n; i++)
		any_stats |= f->e[i].stats != NULL;
	if (f->n_datasets > nd)
		return err_set(e, "%zu datasets: at most 64 can be recorded", f->n_datasets);
	rc |= gguf_meta_set_str(meta, "general.type", "imatrix");
	rc |= gguf_meta_set_arr(meta, "imatrix.datasets", GGUF_STRING, ds, nd);
	rc |= gguf_meta_set_u32(meta, "imatrix.chunk_count", f->chunk_count > 0 ? (uint32_t)f->chunk_count : 0);
	rc |= gguf_meta_set_u32(meta, "imatrix.chunk_size", f->chunk_size > 0 ? (uint32_t)f->chunk_size : 0);
	if (any_stats)
		rc |= gguf_meta_set_arr(meta, SCHEMA_KEY, GGUF_STRING, schema, IMX_N_STATS);
	if (f->has_baseline)
		rc |= gguf_meta_set_str(meta, imx_baseline_key, sha256_hex(f->baseline_sha256, hex));
	return rc ? err_set(e, "out of memory") : 0;
}

static int save_gguf(const imx_file *f, const char *path, err *e)
{
	gguf_meta meta = { 0 };
	gguf_tensor *t = calloc(4 * f->n + 1, sizeof *t);
	gguf_writer *w = NULL;
	size_t nt = 0;
	int rc = -1;

	if (!t) {
		err_set(e, "%s: out of memory", path);
		goto out;
	}
	if (gguf_header(f, &meta, e) != 0) {
		err_prefix(e, "%s", path);
		goto out;
	}
	for (size_t i = 0; i < f->n; i++) {
		const imx_entry *x = &f->e[i];
		uint64_t ne0 = x->n / x->n_mat;

		if (tensor_info(&t[nt++], x->name, SUM2_SUFFIX, ne0, x->n_mat) ||
		    tensor_info(&t[nt++], x->name, COUNTS_SUFFIX, 1, x->n_mat) ||
		    (x->sum && tensor_info(&t[nt++], x->name, SUM_SUFFIX, ne0, x->n_mat)) ||
		    (x->stats && tensor_info(&t[nt++], x->name, STATS_SUFFIX, IMX_N_STATS, 1))) {
			err_set(e, "%s: out of memory", path);
			goto out;
		}
	}
	if (!(w = gguf_writer_begin(path, 0, &meta, t, nt, e)))
		goto out;
	for (size_t i = 0; i < f->n; i++) {
		const imx_entry *x = &f->e[i];

		if (gguf_writer_write(w, x->sum2, x->n * sizeof(float), e) ||
		    gguf_writer_write(w, x->counts, x->n_mat * sizeof(float), e) ||
		    (x->sum && gguf_writer_write(w, x->sum, x->n * sizeof(float), e)) ||
		    (x->stats && gguf_writer_write(w, x->stats, IMX_N_STATS * sizeof(float), e)))
			goto out;
	}
	rc = gguf_writer_finish(w, NULL, e);
	w = NULL;
out:
	if (w)
		gguf_writer_abort(w);
	for (size_t i = 0; t && i < nt; i++)
		free(t[i].name);
	free(t);
	gguf_meta_free(&meta);
	return rc;
}

static int put_i32(afile *a, int64_t v, const char *what, const char *path, err *e)
{
	int32_t x = (int32_t)v;

	if (v < INT32_MIN || v > INT32_MAX)
		return err_set(e, "%s: %s %lld does not fit the .dat format", path, what, (long long)v);
	return afile_write(a, &x, 4, e);
}

/* One legacy entry: what llama-imatrix stores is the mean square scaled by the call count
 * (ceil(max count / chunk size)), computed in float as it does; a matrix that saw nothing
 * stores 1 × ncall. Entries read from a .dat file go back as they were. */
static int save_dat_entry(const imx_file *f, const imx_entry *x, afile *a, float *buf, const char *path, err *e)
{
	float maxc = 0;
	int64_t ncall;

	for (uint64_t j = 0; j < x->n_mat; j++)
		maxc = x->counts[j] > maxc ? x->counts[j] : maxc;
	if (f->legacy) {
		ncall = (int64_t)x->counts[0];
		memcpy(buf, x->sum2, x->n * sizeof *buf);
	} else {
		int64_t cs = f->chunk_size > 0 ? f->chunk_size : 1;
		uint64_t ne0 = x->n / x->n_mat;

		ncall = ((int64_t)maxc + cs - 1) / cs;
		for (uint64_t i = 0; i < x->n; i++) {
			float c = x->counts[i / ne0], v = x->sum2[i];

			if (c == 0.0f)
				v = c = 1.0f;
			buf[i] = v / c * (float)ncall;
		}
	}
	size_t len = strlen(x->name);
	return put_i32(a, (int64_t)len, "name length", path, e) || afile_write(a, x->name, len, e) ||
	       put_i32(a, ncall, "call count", path, e) || put_i32(a, (int64_t)x->n, "value count", path, e) ||
	       afile_write(a, buf, x->n * sizeof *buf, e) ? -1 : 0;
}

static int save_dat(const imx_file *f, const char *path, err *e)
{
	afile a;
	uint64_t maxn = 1;
	size_t kept = 0;
	float *buf;

	for (size_t i = 0; i < f->n; i++) {
		maxn = f->e[i].n > maxn ? f->e[i].n : maxn;
		for (uint64_t j = 0; j < f->e[i].n_mat; j++)
			if (f->e[i].counts[j] > 0) {
				kept++; /* llama-imatrix leaves out entries that saw nothing */
				break;
			}
	}
	if (!(buf = malloc(maxn * sizeof *buf)))
		return err_set(e, "%s: out of memory", path);
	if (afile_open(&a, path, 0, 0, e) != 0) {
		free(buf);
		return -1;
	}
	int rc = put_i32(&a, (int64_t)kept, "entry count", path, e);
	for (size_t i = 0; i < f->n && rc == 0; i++) {
		const imx_entry *x = &f->e[i];
		int seen = 0;

		for (uint64_t j = 0; j < x->n_mat; j++)
			seen |= x->counts[j] > 0;
		if (seen)
			rc = save_dat_entry(f, x, &a, buf, path, e);
	}
	const char *ds = f->n_datasets ? f->datasets[f->n_datasets - 1] : "";
	if (rc == 0)
		rc = put_i32(&a, f->chunk_count > 0 ? f->chunk_count : 0, "chunk count", path, e) ||
			     put_i32(&a, (int64_t)strlen(ds), "dataset name length", path, e) ||
			     afile_write(&a, ds, strlen(ds), e) ? -1 : 0;
	free(buf);
	if (rc != 0) {
		afile_abort(&a);
		return -1;
	}
	return afile_commit(&a, NULL, e);
}

int imx_save(const imx_file *f, const char *path, imx_format fmt, err *e)
{
	for (size_t i = 0; i < f->n; i++)
		if (f->e[i].n_mat == 0 || f->e[i].n % f->e[i].n_mat != 0)
			return err_set(e, "%s: entry %s: %llu values are not %llu equal matrices", path, f->e[i].name,
				       (unsigned long long)f->e[i].n, (unsigned long long)f->e[i].n_mat);
	if (fmt == IMX_DAT)
		return save_dat(f, path, e);
	return save_gguf(f, path, e);
}
