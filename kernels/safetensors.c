/* safetensors.c - safetensors checkpoints: validating mmap reader for files and sharded folders */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "half.h"

/* Tensor data is used in place, so the host must share the format's byte order. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian");

/* The reference implementation refuses headers above 100 MB; so do we, before jansson
 * is asked to build a tree from one. */
#define ST_MAX_HEADER (100ull << 20)
#define ST_INDEX_NAME "model.safetensors.index.json"
#define ST_SINGLE_NAME "model.safetensors"

typedef unsigned long long ull;

static const st_dtype_info dtypes[ST_DTYPE_COUNT] = {
	[ST_BOOL] = { "BOOL", 8, false },
	[ST_U8] = { "U8", 8, false },
	[ST_I8] = { "I8", 8, false },
	[ST_F8_E5M2] = { "F8_E5M2", 8, false },
	[ST_F8_E4M3] = { "F8_E4M3", 8, false },
	[ST_F8_E8M0] = { "F8_E8M0", 8, false },
	[ST_I16] = { "I16", 16, false },
	[ST_U16] = { "U16", 16, false },
	[ST_F16] = { "F16", 16, true },
	[ST_BF16] = { "BF16", 16, true },
	[ST_I32] = { "I32", 32, false },
	[ST_U32] = { "U32", 32, false },
	[ST_F32] = { "F32", 32, true },
	[ST_C64] = { "C64", 64, false },
	[ST_F64] = { "F64", 64, false },
	[ST_I64] = { "I64", 64, false },
	[ST_U64] = { "U64", 64, false },
	[ST_F4] = { "F4", 4, false },
	[ST_F6_E2M3] = { "F6_E2M3", 6, false },
	[ST_F6_E3M2] = { "F6_E3M2", 6, false },
};

const st_dtype_info *st_dtype(int id)
{
	if (id < 0 || id >= ST_DTYPE_COUNT)
		return NULL;
	return &dtypes[id];
}

int st_dtype_by_name(const char *name)
{
	for (int i = 0; i < ST_DTYPE_COUNT; i++)
		if (strcmp(dtypes[i].name, name) == 0)
			return i;
	return -1;
}

/* ---- one shard ---- */

/* A tensor entry as the header states it, before it joins the model. */
typedef struct entry {
	const char *name; /* borrowed from the JSON tree */
	int dtype;
	uint32_t ndim;
	uint64_t shape[ST_MAX_DIMS];
	uint64_t nelem, nbytes;
	uint64_t begin, end; /* data_offsets, relative to the data section */
} entry;

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* Offset of the first `"name"` in text (which starts at file offset base), so a message
 * can point near an entry (jansson keeps no positions); base itself when it is not there
 * verbatim (a name written with escapes). */
static ull find_key(const char *text, size_t len, ull base, const char *name)
{
	size_t n = strlen(name);
	char *needle = malloc(n + 3);
	const char *hit = NULL;

	if (needle) {
		needle[0] = '"';
		memcpy(needle + 1, name, n);
		needle[n + 1] = '"';
		hit = memmem(text, len, needle, n + 2);
		free(needle);
	}
	return hit ? base + (ull)(hit - text) : base;
}

/* File offset of name's entry in a shard's header. */
static ull key_offset(const st_shard *s, const char *name)
{
	return find_key((const char *)s->map + 8, s->header_len, 8, name);
}

/* Reads a JSON integer >= 0 into *out; returns 0, or -1 for a non-integer or negative. */
static int get_uint(const json_t *j, uint64_t *out)
{
	json_int_t v;

	if (!json_is_integer(j))
		return -1;
	v = json_integer_value(j);
	if (v < 0)
		return -1;
	*out = (uint64_t)v;
	return 0;
}

static const char *json_kind(const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return json_integer_value(j) < 0 ? "a negative integer" : "an integer";
	case JSON_REAL: return "a non-integer number";
	case JSON_TRUE:
	case JSON_FALSE: return "a boolean";
	default: return "null";
	}
}

static int parse_shape(const st_shard *s, const char *name, const json_t *j, entry *t, err *e)
{
	ull off = key_offset(s, name);
	size_t i;
	const json_t *d;

	if (!json_is_array(j))
		return err_set(e, "%s: offset %llu: tensor \"%s\": \"shape\" is %s, not an array",
			       s->path, off, name, j ? json_kind(j) : "missing");
	if (json_array_size(j) > ST_MAX_DIMS)
		return err_set(e, "%s: offset %llu: tensor \"%s\": %zu dimensions (at most %d)",
			       s->path, off, name, json_array_size(j), ST_MAX_DIMS);
	t->ndim = (uint32_t)json_array_size(j);
	t->nelem = 1;
	for (i = 0; i < ST_MAX_DIMS; i++)
		t->shape[i] = 1;
	json_array_foreach(j, i, d) {
		if (get_uint(d, &t->shape[i]) < 0)
			return err_set(e, "%s: offset %llu: tensor \"%s\": shape[%zu] is %s, not a "
				       "non-negative integer", s->path, off, name, i, json_kind(d));
		if (__builtin_mul_overflow(t->nelem, t->shape[i], &t->nelem))
			return err_set(e, "%s: offset %llu: tensor \"%s\": the shape's element count "
				       "overflows 64 bits", s->path, off, name);
	}
	return 0;
}

static int parse_entry(const st_shard *s, const char *name, const json_t *j, entry *t, err *e)
{
	uint64_t data_size = s->size - s->data_start, bits;
	const json_t *dt = json_object_get(j, "dtype");
	const json_t *offs = json_object_get(j, "data_offsets");
	ull off = key_offset(s, name);

	memset(t, 0, sizeof *t);
	t->name = name;
	if (!json_is_object(j))
		return err_set(e, "%s: offset %llu: tensor \"%s\": entry is %s, not an object",
			       s->path, off, name, json_kind(j));
	if (!json_is_string(dt))
		return err_set(e, "%s: offset %llu: tensor \"%s\": \"dtype\" is %s, not a string",
			       s->path, off, name, dt ? json_kind(dt) : "missing");
	t->dtype = st_dtype_by_name(json_string_value(dt));
	if (t->dtype < 0)
		return err_set(e, "%s: offset %llu: tensor \"%s\": unknown dtype \"%s\"",
			       s->path, off, name, json_string_value(dt));
	if (parse_shape(s, name, json_object_get(j, "shape"), t, e) < 0)
		return -1;
	if (!json_is_array(offs) || json_array_size(offs) != 2)
		return err_set(e, "%s: offset %llu: tensor \"%s\": \"data_offsets\" is %s, not an "
			       "array [begin, end]", s->path, off, name, offs ? json_kind(offs) : "missing");
	if (get_uint(json_array_get(offs, 0), &t->begin) < 0
	    || get_uint(json_array_get(offs, 1), &t->end) < 0)
		return err_set(e, "%s: offset %llu: tensor \"%s\": \"data_offsets\" must hold two "
			       "non-negative integers", s->path, off, name);
	if (t->begin > t->end)
		return err_set(e, "%s: offset %llu: tensor \"%s\": data_offsets [%llu, %llu] end "
			       "before they begin", s->path, off, name, (ull)t->begin, (ull)t->end);
	if (t->end > data_size)
		return err_set(e, "%s: offset %llu: tensor \"%s\": data_offsets [%llu, %llu] run past "
			       "the end of the data section (%llu bytes, file offset %llu to %llu)",
			       s->path, off, name, (ull)t->begin, (ull)t->end, (ull)data_size,
			       (ull)s->data_start, (ull)s->size);
	if (__builtin_mul_overflow(t->nelem, (uint64_t)dtypes[t->dtype].bits, &bits))
		return err_set(e, "%s: offset %llu: tensor \"%s\": the shape's byte size overflows "
			       "64 bits", s->path, off, name);
	if (bits % 8)
		return err_set(e, "%s: offset %llu: tensor \"%s\": %llu elements of %s do not fill "
			       "whole bytes", s->path, off, name, (ull)t->nelem, dtypes[t->dtype].name);
	t->nbytes = bits / 8;
	if (t->nbytes != t->end - t->begin)
		return err_set(e, "%s: offset %llu: tensor \"%s\": %llu elements of %s make %llu "
			       "bytes, but data_offsets [%llu, %llu] span %llu", s->path, off, name,
			       (ull)t->nelem, dtypes[t->dtype].name, (ull)t->nbytes, (ull)t->begin,
			       (ull)t->end, (ull)(t->end - t->begin));
	return 0;
}

static int parse_meta(st_shard *s, const json_t *j, err *e)
{
	const char *k;
	const json_t *v;

	if (!json_is_object(j))
		return err_set(e, "%s: offset %llu: \"__metadata__\" is %s, not an object of strings",
			       s->path, key_offset(s, "__metadata__"), json_kind(j));
	s->meta = calloc(json_object_size(j) + 1, sizeof *s->meta);
	if (!s->meta)
		return err_set(e, "%s: out of memory", s->path);
	json_object_foreach((json_t *)j, k, v) {
		if (!json_is_string(v))
			return err_set(e, "%s: offset %llu: \"__metadata__\" value \"%s\" is %s, not a "
				       "string", s->path, key_offset(s, k), k, json_kind(v));
		s->meta[s->n_meta].key = strdup(k);
		s->meta[s->n_meta].value = strdup(json_string_value(v));
		s->n_meta++;
		if (!s->meta[s->n_meta - 1].key || !s->meta[s->n_meta - 1].value)
			return err_set(e, "%s: out of memory", s->path);
	}
	return 0;
}

static int by_begin(const void *a, const void *b)
{
	const entry *x = a, *y = b;

	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return 0;
}

static int entry_by_name(const void *a, const void *b)
{
	return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

/* The format forbids overlaps and holes (so a file cannot hide a second payload):
 * sorted by offset, the tensors must tile the data section exactly. */
static int check_layout(const st_shard *s, entry *t, size_t n, err *e)
{
	uint64_t data_size = s->size - s->data_start, at = 0;
	const entry *prev = NULL;

	qsort(t, n, sizeof *t, by_begin);
	for (size_t i = 0; i < n; i++) {
		if (t[i].begin < at)
			return err_set(e, "%s: offset %llu (data offset %llu): tensor \"%s\" [%llu, %llu] "
				       "overlaps tensor \"%s\" [%llu, %llu]", s->path,
				       (ull)(s->data_start + t[i].begin), (ull)t[i].begin, t[i].name,
				       (ull)t[i].begin, (ull)t[i].end, prev->name, (ull)prev->begin,
				       (ull)prev->end);
		if (t[i].begin > at)
			return err_set(e, "%s: offset %llu (data offset %llu): %llu bytes no tensor "
				       "covers, before tensor \"%s\"", s->path, (ull)(s->data_start + at),
				       (ull)at, (ull)(t[i].begin - at), t[i].name);
		at = t[i].end;
		prev = &t[i];
	}
	if (at != data_size)
		return err_set(e, "%s: offset %llu (data offset %llu): %llu bytes after the last "
			       "tensor that no tensor covers", s->path, (ull)(s->data_start + at),
			       (ull)at, (ull)(data_size - at));
	return 0;
}

/* Appends the shard's entries to the model, by name. */
static int add_tensors(st_model *m, uint32_t si, entry *t, size_t n, err *e)
{
	const st_shard *s = &m->shards[si];
	st_tensor *grown;

	qsort(t, n, sizeof *t, entry_by_name);
	grown = realloc(m->tensors, (m->n_tensors + n + 1) * sizeof *grown);
	if (!grown)
		return err_set(e, "%s: out of memory", s->path);
	m->tensors = grown;
	for (size_t i = 0; i < n; i++) {
		st_tensor *d = &m->tensors[m->n_tensors];

		memset(d, 0, sizeof *d);
		d->name = strdup(t[i].name);
		if (!d->name)
			return err_set(e, "%s: out of memory", s->path);
		m->n_tensors++;
		d->dtype = t[i].dtype;
		d->ndim = t[i].ndim;
		memcpy(d->shape, t[i].shape, sizeof d->shape);
		d->nelem = t[i].nelem;
		d->nbytes = t[i].nbytes;
		d->offset = s->data_start + t[i].begin;
		d->data = s->map + d->offset;
		d->shard = si;
		m->total_bytes += d->nbytes;
	}
	return 0;
}

static int parse_header(st_model *m, uint32_t si, json_t *root, err *e)
{
	st_shard *s = &m->shards[si];
	size_t n = 0;
	entry *t = calloc(json_object_size(root) + 1, sizeof *t);
	const char *k;
	json_t *v;
	int rc = -1;

	if (!t)
		return err_set(e, "%s: out of memory", s->path);
	json_object_foreach(root, k, v) {
		if (strcmp(k, "__metadata__") == 0) {
			if (parse_meta(s, v, e) < 0)
				goto out;
			continue;
		}
		if (parse_entry(s, k, v, &t[n], e) < 0)
			goto out;
		n++;
	}
	if (check_layout(s, t, n, e) < 0 || add_tensors(m, si, t, n, e) < 0)
		goto out;
	rc = 0;
out:
	free(t);
	return rc;
}

/* Validates shard si (already mapped) and adds its tensors to m. */
static int parse_shard(st_model *m, uint32_t si, err *e)
{
	st_shard *s = &m->shards[si];
	json_error_t je;
	json_t *root;
	int rc;

	if (s->size < 8)
		return err_set(e, "%s: offset 0: the file is %llu bytes, too short for the 8-byte "
			       "header length", s->path, (ull)s->size);
	s->header_len = le64(s->map);
	if (s->header_len > s->size - 8)
		return err_set(e, "%s: offset 0: header length %llu runs past the end of the file "
			       "(%llu bytes)", s->path, (ull)s->header_len, (ull)s->size);
	if (s->header_len > ST_MAX_HEADER)
		return err_set(e, "%s: offset 0: header length %llu is above the format's limit "
			       "of %llu", s->path, (ull)s->header_len, ST_MAX_HEADER);
	s->data_start = 8 + s->header_len;
	if (s->header_len < 2 || s->map[8] != '{')
		return err_set(e, "%s: offset 8: the header is not a JSON object (it must start "
			       "with '{')", s->path);
	root = json_loadb((const char *)s->map + 8, s->header_len, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return err_set(e, "%s: offset %llu: the header is not valid JSON: %s", s->path,
			       (ull)(8 + je.position), je.text);
	if (!json_is_object(root))
		rc = err_set(e, "%s: offset 8: the header is not a JSON object", s->path);
	else
		rc = parse_header(m, si, root, e);
	json_decref(root);
	return rc;
}

/* Maps path into s (read-only). An empty file gets no mapping; the parser rejects it. */
static int map_file(st_shard *s, const char *path, err *e)
{
	struct stat sb;
	int fd;
	void *p;

	s->path = strdup(path);
	if (!s->path)
		return err_set(e, "%s: out of memory", path);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_errno(e, "%s: cannot open", path);
	if (fstat(fd, &sb) < 0) {
		err_errno(e, "%s: cannot stat", path);
		close(fd);
		return -1;
	}
	if (!S_ISREG(sb.st_mode)) {
		close(fd);
		return err_set(e, "%s: not a regular file", path);
	}
	s->size = (uint64_t)sb.st_size;
	if (s->size > 0) {
		p = mmap(NULL, s->size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (p == MAP_FAILED) {
			err_errno(e, "%s: cannot map %llu bytes", path, (ull)s->size);
			close(fd);
			return -1;
		}
		s->map = p;
		s->mapped = 1;
	}
	close(fd);
	return 0;
}

static int by_name_cmp(const void *a, const void *b)
{
	return strcmp((*(st_tensor *const *)a)->name, (*(st_tensor *const *)b)->name);
}

/* Builds the name index; a name twice (only possible across shards) is an error. */
static int build_index(st_model *m, err *e)
{
	m->by_name = malloc((m->n_tensors + 1) * sizeof *m->by_name);
	if (!m->by_name)
		return err_set(e, "%s: out of memory", m->path);
	for (size_t i = 0; i < m->n_tensors; i++)
		m->by_name[i] = &m->tensors[i];
	qsort(m->by_name, m->n_tensors, sizeof *m->by_name, by_name_cmp);
	for (size_t i = 1; i < m->n_tensors; i++) {
		const st_tensor *a = m->by_name[i - 1], *b = m->by_name[i];

		if (strcmp(a->name, b->name) == 0) {
			if (a->shard > b->shard) {
				const st_tensor *x = a;
				a = b;
				b = x;
			}
			return err_set(e, "%s: offset %llu: tensor \"%s\" is also in %s (offset %llu): "
				       "duplicate tensor name across shards", m->shards[b->shard].path,
				       key_offset(&m->shards[b->shard], b->name), b->name,
				       m->shards[a->shard].path, key_offset(&m->shards[a->shard], a->name));
		}
	}
	return 0;
}

static int open_single(st_model *m, const char *path, err *e)
{
	m->shards = calloc(1, sizeof *m->shards);
	if (!m->shards)
		return err_set(e, "%s: out of memory", path);
	m->n_shards = 1;
	if (map_file(&m->shards[0], path, e) < 0 || parse_shard(m, 0, e) < 0)
		return -1;
	return build_index(m, e);
}

/* ---- sharded checkpoints ---- */

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A shard must be a plain file name in the index's folder: no paths leave it. */
static bool plain_name(const char *s)
{
	return s[0] && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* An index being read: its text, kept for the offsets in messages, and its parsed tree. */
typedef struct index_doc {
	st_shard file; /* the index file, mapped like a shard (path, map, size) */
	json_t *root;
	json_t *wm;    /* root's "weight_map" */
	char *dir;     /* the folder the shards are in */
} index_doc;

/* File offset of `"s"` in the index text (0 when it is not there verbatim). */
static ull index_offset(const index_doc *x, const char *s)
{
	return find_key((const char *)x->file.map, x->file.size, 0, s);
}

/* Collects the distinct shard names of weight_map, sorted, into *names (borrowed). */
static int shard_names(const index_doc *x, const char ***names, uint32_t *n, err *e)
{
	const char **v = calloc(json_object_size(x->wm) + 1, sizeof *v);
	const char *k;
	json_t *f;
	size_t cnt = 0, u = 0;

	if (!v)
		return err_set(e, "%s: out of memory", x->file.path);
	json_object_foreach(x->wm, k, f) {
		if (!json_is_string(f) || !plain_name(json_string_value(f))) {
			free(v);
			return err_set(e, "%s: offset %llu: weight_map[\"%s\"] is %s, not the file name "
				       "of a shard in the same folder", x->file.path, index_offset(x, k), k,
				       json_is_string(f) ? json_string_value(f) : json_kind(f));
		}
		v[cnt++] = json_string_value(f);
	}
	qsort(v, cnt, sizeof *v, str_cmp);
	for (size_t i = 0; i < cnt; i++)
		if (u == 0 || strcmp(v[u - 1], v[i]) != 0)
			v[u++] = v[i];
	if (u == 0) {
		free(v);
		return err_set(e, "%s: offset %llu: weight_map is empty", x->file.path,
			       index_offset(x, "weight_map"));
	}
	*names = v;
	*n = (uint32_t)u;
	return 0;
}

/* Every weight_map entry must be in the shard it names, and every tensor of every
 * shard must be listed: a stale index is the classic way to lose a tensor. */
static int check_weight_map(const st_model *m, const index_doc *x, err *e)
{
	const char *k;
	json_t *f;
	size_t dl = strlen(x->dir) + 1;

	json_object_foreach(x->wm, k, f) {
		const st_tensor *t = st_find(m, k);
		const char *want = json_string_value(f);

		if (!t)
			return err_set(e, "%s: offset %llu: weight_map names tensor \"%s\" in %s, but no "
				       "shard holds it", x->file.path, index_offset(x, k), k, want);
		if (strcmp(m->shards[t->shard].path + dl, want) != 0)
			return err_set(e, "%s: offset %llu: weight_map puts tensor \"%s\" in %s, but it "
				       "is in %s", x->file.path, index_offset(x, k), k, want,
				       m->shards[t->shard].path);
	}
	for (size_t i = 0; i < m->n_tensors; i++)
		if (!json_object_get(x->wm, m->tensors[i].name))
			return err_set(e, "%s: offset %llu: tensor \"%s\" is not in the weight_map of %s",
				       m->shards[m->tensors[i].shard].path,
				       key_offset(&m->shards[m->tensors[i].shard], m->tensors[i].name),
				       m->tensors[i].name, x->file.path);
	return 0;
}

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

static int open_shards(st_model *m, const index_doc *x, err *e)
{
	const char **names = NULL;
	uint32_t n = 0;
	int rc = -1;

	if (shard_names(x, &names, &n, e) < 0)
		return -1;
	m->shards = calloc(n, sizeof *m->shards);
	if (!m->shards) {
		err_set(e, "%s: out of memory", x->file.path);
		goto out;
	}
	for (uint32_t i = 0; i < n; i++) {
		size_t len = strlen(x->dir) + strlen(names[i]) + 2;
		char *p = malloc(len);
		int r;

		if (!p) {
			err_set(e, "%s: out of memory", x->file.path);
			goto out;
		}
		snprintf(p, len, "%s/%s", x->dir, names[i]);
		m->n_shards = i + 1;
		r = map_file(&m->shards[i], p, e);
		if (r < 0)
			err_prefix(e, "%s: offset %llu: shard %s", x->file.path,
				   index_offset(x, names[i]), names[i]);
		free(p);
		if (r < 0 || parse_shard(m, i, e) < 0)
			goto out;
	}
	rc = 0;
out:
	free(names);
	return rc;
}

/* Maps and parses the index file into x; returns 0 or -1. */
static int load_index(index_doc *x, const char *path, err *e)
{
	json_error_t je;

	if (map_file(&x->file, path, e) < 0)
		return -1;
	x->dir = dir_of(path);
	if (!x->dir)
		return err_set(e, "%s: out of memory", path);
	if (x->file.size == 0)
		return err_set(e, "%s: offset 0: empty file, not a JSON index", path);
	if (x->file.size > ST_MAX_HEADER)
		return err_set(e, "%s: %llu bytes, more than an index can be (%llu)", path,
			       (ull)x->file.size, ST_MAX_HEADER);
	x->root = json_loadb((const char *)x->file.map, x->file.size, JSON_REJECT_DUPLICATES, &je);
	if (!x->root)
		return err_set(e, "%s: offset %d: not a readable JSON index: %s", path, je.position,
			       je.text);
	x->wm = json_object_get(x->root, "weight_map");
	if (!json_is_object(x->wm))
		return err_set(e, "%s: no \"weight_map\" object: not a safetensors index", path);
	return 0;
}

static int open_index(st_model *m, const char *path, err *e)
{
	index_doc x = { 0 };
	int rc = -1;

	m->index_path = strdup(path);
	if (!m->index_path)
		return err_set(e, "%s: out of memory", path);
	if (load_index(&x, path, e) == 0 && open_shards(m, &x, e) == 0 && build_index(m, e) == 0
	    && check_weight_map(m, &x, e) == 0)
		rc = 0;
	if (x.file.mapped)
		munmap((void *)x.file.map, x.file.size);
	free(x.file.path);
	free(x.dir);
	json_decref(x.root);
	return rc;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && strcmp(s + a - b, suffix) == 0;
}

static bool exists(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0;
}

static int open_folder(st_model *m, const char *dir, err *e)
{
	size_t len = strlen(dir) + sizeof ST_INDEX_NAME + 2;
	char *p = malloc(len);
	int rc;

	if (!p)
		return err_set(e, "%s: out of memory", dir);
	snprintf(p, len, "%s/%s", dir, ST_INDEX_NAME);
	if (exists(p)) {
		rc = open_index(m, p, e);
	} else {
		snprintf(p, len, "%s/%s", dir, ST_SINGLE_NAME);
		if (exists(p))
			rc = open_single(m, p, e);
		else
			rc = err_set(e, "%s: no %s or %s in this folder", dir, ST_SINGLE_NAME,
				     ST_INDEX_NAME);
	}
	free(p);
	return rc;
}

int st_open(st_model *m, const char *path, err *e)
{
	struct stat sb;
	int rc;

	memset(m, 0, sizeof *m);
	m->path = strdup(path);
	if (!m->path)
		return err_set(e, "%s: out of memory", path);
	if (stat(path, &sb) < 0)
		rc = err_errno(e, "%s: cannot open", path);
	else if (S_ISDIR(sb.st_mode))
		rc = open_folder(m, path, e);
	else if (ends_with(path, ".json"))
		rc = open_index(m, path, e);
	else
		rc = open_single(m, path, e);
	if (rc < 0)
		st_close(m);
	return rc;
}

int st_parse(st_model *m, const void *buf, uint64_t size, const char *name, err *e)
{
	int rc = -1;

	memset(m, 0, sizeof *m);
	m->path = strdup(name);
	m->shards = calloc(1, sizeof *m->shards);
	if (!m->path || !m->shards) {
		err_set(e, "%s: out of memory", name);
		goto out;
	}
	m->n_shards = 1;
	m->shards[0].path = strdup(name);
	if (!m->shards[0].path) {
		err_set(e, "%s: out of memory", name);
		goto out;
	}
	m->shards[0].map = buf;
	m->shards[0].size = size;
	if (parse_shard(m, 0, e) < 0 || build_index(m, e) < 0)
		goto out;
	rc = 0;
out:
	if (rc < 0)
		st_close(m);
	return rc;
}

void st_close(st_model *m)
{
	for (uint32_t i = 0; i < m->n_shards; i++) {
		st_shard *s = &m->shards[i];

		if (s->mapped)
			munmap((void *)s->map, s->size);
		for (size_t j = 0; j < s->n_meta; j++) {
			free(s->meta[j].key);
			free(s->meta[j].value);
		}
		free(s->meta);
		free(s->path);
	}
	for (size_t i = 0; i < m->n_tensors; i++)
		free(m->tensors[i].name);
	free(m->shards);
	free(m->tensors);
	free(m->by_name);
	free(m->path);
	free(m->index_path);
	memset(m, 0, sizeof *m);
}

const st_tensor *st_find(const st_model *m, const char *name)
{
	size_t lo = 0, hi = m->n_tensors;

	if (!m->by_name)
		return NULL;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, m->by_name[mid]->name);

		if (c == 0)
			return m->by_name[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

const char *st_meta_get(const st_model *m, const char *key)
{
	if (m->n_shards == 0)
		return NULL;
	for (size_t i = 0; i < m->shards[0].n_meta; i++)
		if (strcmp(m->shards[0].meta[i].key, key) == 0)
			return m->shards[0].meta[i].value;
	return NULL;
}

/* ---- values ---- */

uint64_t st_row_len(const st_tensor *t)
{
	return t->ndim ? t->shape[t->ndim - 1] : 1;
}

uint64_t st_n_rows(const st_tensor *t)
{
	uint64_t r = st_row_len(t);

	return r ? t->nelem / r : 0;
}

/* Widens n 16-bit values at p (possibly unaligned) through an aligned bounce buffer. */
static void halves_to_f32(const uint8_t *p, uint64_t n, bool bf16, float *out)
{
	uint16_t tmp[1024];

	while (n > 0) {
		size_t k = n < 1024 ? (size_t)n : 1024;

		memcpy(tmp, p, k * 2);
		if (bf16)
			half_row_bf16_to_f32(tmp, out, k);
		else
			half_row_to_f32(tmp, out, k);
		p += k * 2;
		out += k;
		n -= k;
	}
}

int st_read_f32(const st_model *m, const st_tensor *t, uint64_t first, uint64_t n, float *out,
		err *e)
{
	const char *path = t->shard < m->n_shards ? m->shards[t->shard].path : m->path;
	const uint8_t *p = t->data;

	if (!dtypes[t->dtype].readable)
		return err_set(e, "%s: offset %llu: tensor \"%s\" has dtype %s, which qbake cannot "
			       "read (only F32, F16 and BF16)", path, (ull)t->offset, t->name,
			       dtypes[t->dtype].name);
	if (first > t->nelem || n > t->nelem - first)
		return err_set(e, "%s: tensor \"%s\": elements [%llu, +%llu) are outside its %llu",
			       path, t->name, (ull)first, (ull)n, (ull)t->nelem);
	switch (t->dtype) {
	case ST_F32:
		memcpy(out, p + first * 4, n * 4);
		break;
	case ST_F16:
		halves_to_f32(p + first * 2, n, false, out);
		break;
	default:
		halves_to_f32(p + first * 2, n, true, out);
		break;
	}
	return 0;
}

int st_read_rows_f32(const st_model *m, const st_tensor *t, uint64_t row, uint64_t nrows,
		     float *out, err *e)
{
	uint64_t rl = st_row_len(t), first, n;

	if (__builtin_mul_overflow(row, rl, &first) || __builtin_mul_overflow(nrows, rl, &n))
		return err_set(e, "%s: tensor \"%s\": rows [%llu, +%llu) are outside it", m->path,
			       t->name, (ull)row, (ull)nrows);
	return st_read_f32(m, t, first, n, out, e);
}
