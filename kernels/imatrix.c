/* imatrix.c - importance matrices: reading llama-imatrix's GGUF and legacy .dat files */
#include "imatrix.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

static const char SUM2_SUFFIX[] = ".in_sum2", COUNTS_SUFFIX[] = ".counts";

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

static int load_gguf_entry(imx_file *f, const gguf_file *g, const gguf_tensor *t, const char *path, err *e)
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
	return 0;
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
		    load_gguf_entry(f, &g, &g.tensors[i], path, e) != 0)
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
