/* gguf.c - GGUF files: type table, metadata, validating mmap reader, streaming writer */
#include "gguf.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "afile.h"

/* Values are moved between the file and memory with memcpy: GGUF is little-endian. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c assumes a little-endian host"
#endif

#define GGUF_DEFAULT_ALIGNMENT 32
/* ggml keeps a tensor name in a 64-byte field that includes the NUL. */
#define GGUF_MAX_NAME 63
/* The smallest possible metadata entry (empty key, type, one byte) and tensor info
 * (empty name, n_dims, one dimension, type, offset): bounds for the declared counts. */
#define GGUF_MIN_KV 13
#define GGUF_MIN_TENSOR_INFO 32

/* ---- ggml tensor types ---- */

/* Block sizes and bytes per block as ggml's type traits define them (the K and IQ
 * types use 256-element super-blocks). Ids 4, 5, 31-33 and 36-38 were removed from
 * ggml and stay NULL here, so files using them are refused. */
static const gguf_type_info type_table[GGUF_TYPE_COUNT] = {
	[GGUF_TYPE_F32] = { "F32", 1, 4, false },
	[GGUF_TYPE_F16] = { "F16", 1, 2, false },
	[GGUF_TYPE_Q4_0] = { "Q4_0", 32, 18, true },
	[GGUF_TYPE_Q4_1] = { "Q4_1", 32, 20, true },
	[GGUF_TYPE_Q5_0] = { "Q5_0", 32, 22, true },
	[GGUF_TYPE_Q5_1] = { "Q5_1", 32, 24, true },
	[GGUF_TYPE_Q8_0] = { "Q8_0", 32, 34, true },
	[GGUF_TYPE_Q8_1] = { "Q8_1", 32, 36, true },
	[GGUF_TYPE_Q2_K] = { "Q2_K", 256, 84, true },
	[GGUF_TYPE_Q3_K] = { "Q3_K", 256, 110, true },
	[GGUF_TYPE_Q4_K] = { "Q4_K", 256, 144, true },
	[GGUF_TYPE_Q5_K] = { "Q5_K", 256, 176, true },
	[GGUF_TYPE_Q6_K] = { "Q6_K", 256, 210, true },
	[GGUF_TYPE_Q8_K] = { "Q8_K", 256, 292, true },
	[GGUF_TYPE_IQ2_XXS] = { "IQ2_XXS", 256, 66, true },
	[GGUF_TYPE_IQ2_XS] = { "IQ2_XS", 256, 74, true },
	[GGUF_TYPE_IQ3_XXS] = { "IQ3_XXS", 256, 98, true },
	[GGUF_TYPE_IQ1_S] = { "IQ1_S", 256, 50, true },
	[GGUF_TYPE_IQ4_NL] = { "IQ4_NL", 32, 18, true },
	[GGUF_TYPE_IQ3_S] = { "IQ3_S", 256, 110, true },
	[GGUF_TYPE_IQ2_S] = { "IQ2_S", 256, 82, true },
	[GGUF_TYPE_IQ4_XS] = { "IQ4_XS", 256, 136, true },
	[GGUF_TYPE_I8] = { "I8", 1, 1, false },
	[GGUF_TYPE_I16] = { "I16", 1, 2, false },
	[GGUF_TYPE_I32] = { "I32", 1, 4, false },
	[GGUF_TYPE_I64] = { "I64", 1, 8, false },
	[GGUF_TYPE_F64] = { "F64", 1, 8, false },
	[GGUF_TYPE_IQ1_M] = { "IQ1_M", 256, 56, true },
	[GGUF_TYPE_BF16] = { "BF16", 1, 2, false },
	[GGUF_TYPE_TQ1_0] = { "TQ1_0", 256, 54, true },
	[GGUF_TYPE_TQ2_0] = { "TQ2_0", 256, 66, true },
	[GGUF_TYPE_MXFP4] = { "MXFP4", 32, 17, true },
};

const gguf_type_info *gguf_type(uint32_t id)
{
	if (id >= GGUF_TYPE_COUNT || !type_table[id].name)
		return NULL;
	return &type_table[id];
}

int gguf_type_by_name(const char *name)
{
	for (int i = 0; i < GGUF_TYPE_COUNT; i++)
		if (type_table[i].name && strcasecmp(type_table[i].name, name) == 0)
			return i;
	return -1;
}

uint64_t gguf_row_size(uint32_t type, uint64_t ne0)
{
	const gguf_type_info *t = gguf_type(type);
	uint64_t r;

	if (!t || ne0 % t->blck || __builtin_mul_overflow(ne0 / t->blck, (uint64_t)t->size, &r))
		return 0;
	return r;
}

/* Bytes of (elements / block) * bytes per block for a whole tensor; -1 when ne0 is not
 * a multiple of the block size or the product overflows. */
static int tensor_bytes(uint32_t type, const uint64_t *ne, uint32_t n_dims, uint64_t *out)
{
	uint64_t b = gguf_row_size(type, ne[0]);

	if (!b)
		return -1;
	for (uint32_t j = 1; j < n_dims; j++)
		if (__builtin_mul_overflow(b, ne[j], &b))
			return -1;
	*out = b;
	return 0;
}

/* x rounded up to a multiple of a (a power of two; x small enough not to wrap). */
static uint64_t pad_to(uint64_t x, uint64_t a)
{
	return (x + a - 1) & ~(a - 1);
}

uint64_t gguf_nelements(const gguf_tensor *t)
{
	uint64_t n = 1;

	for (uint32_t j = 0; j < t->n_dims && j < 4; j++)
		n *= t->ne[j];
	return n;
}

/* ---- metadata ---- */

static const char *value_type_name(uint32_t type)
{
	static const char *names[] = { "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
				       "string", "array", "u64", "i64", "f64" };

	return type <= GGUF_F64 ? names[type] : "unknown";
}

/* Bytes of one value of a fixed-size type, in the file and in memory; 0 for strings,
 * arrays and unknown ids. */
static size_t value_size(uint32_t type)
{
	switch (type) {
	case GGUF_U8: case GGUF_I8: case GGUF_BOOL:
		return 1;
	case GGUF_U16: case GGUF_I16:
		return 2;
	case GGUF_U32: case GGUF_I32: case GGUF_F32:
		return 4;
	case GGUF_U64: case GGUF_I64: case GGUF_F64:
		return 8;
	}
	return 0;
}

/* Bytes of one array element in memory (gguf_str for strings), 0 if atype is not allowed. */
static size_t elem_size(uint32_t atype)
{
	return atype == GGUF_STRING ? sizeof(gguf_str) : value_size(atype);
}

static char *mem_dup(const char *p, uint64_t len)
{
	char *s = len < SIZE_MAX ? malloc(len + 1) : NULL;

	if (!s)
		return NULL;
	if (len)
		memcpy(s, p, len);
	s[len] = 0;
	return s;
}

static void value_free(gguf_value *v)
{
	if (v->type == GGUF_STRING) {
		free(v->s.ptr);
	} else if (v->type == GGUF_ARRAY) {
		if (v->atype == GGUF_STRING && v->arr)
			for (uint64_t i = 0; i < v->n; i++)
				free(((gguf_str *)v->arr)[i].ptr);
		free(v->arr);
	}
	memset(v, 0, sizeof *v);
}

/* Deep copy of src into dst; returns 0, or -1 for out of memory or a malformed value
 * (dst is then empty). Arrays always get a buffer, even when empty. */
static int value_copy(gguf_value *dst, const gguf_value *src)
{
	memset(dst, 0, sizeof *dst);
	if (src->type == GGUF_STRING) {
		if (src->s.len && !src->s.ptr)
			return -1;
		dst->s.ptr = mem_dup(src->s.ptr, src->s.len);
		if (!dst->s.ptr)
			return -1;
		dst->s.len = src->s.len;
		dst->type = GGUF_STRING;
		return 0;
	}
	if (src->type != GGUF_ARRAY) {
		if (!value_size(src->type))
			return -1;
		*dst = *src;
		return 0;
	}
	size_t es = elem_size(src->atype);

	if (!es || (src->n && !src->arr) || src->n > SIZE_MAX / es)
		return -1;
	dst->arr = calloc(src->n ? src->n : 1, es);
	if (!dst->arr)
		return -1;
	dst->type = GGUF_ARRAY;
	dst->atype = src->atype;
	if (src->atype != GGUF_STRING) {
		dst->n = src->n;
		if (src->n)
			memcpy(dst->arr, src->arr, src->n * es);
		return 0;
	}
	for (uint64_t i = 0; i < src->n; i++) {
		const gguf_str *s = &((const gguf_str *)src->arr)[i];
		gguf_str *d = &((gguf_str *)dst->arr)[i];

		dst->n = i; /* what value_free must release if this one fails */
		if (s->len && !s->ptr)
			break;
		d->ptr = mem_dup(s->ptr, s->len);
		if (!d->ptr)
			break;
		d->len = s->len;
		dst->n = i + 1;
	}
	if (dst->n != src->n) {
		value_free(dst);
		return -1;
	}
	return 0;
}

long gguf_meta_index(const gguf_meta *m, const char *key)
{
	for (size_t i = 0; i < m->n; i++)
		if (strcmp(m->kv[i].key, key) == 0)
			return (long)i;
	return -1;
}

const gguf_kv *gguf_meta_find(const gguf_meta *m, const char *key)
{
	long i = gguf_meta_index(m, key);

	return i < 0 ? NULL : &m->kv[i];
}

int gguf_meta_get_u64(const gguf_meta *m, const char *key, uint64_t *out)
{
	const gguf_kv *kv = gguf_meta_find(m, key);

	if (!kv)
		return -1;
	switch (kv->v.type) {
	case GGUF_U8: case GGUF_U16: case GGUF_U32: case GGUF_U64:
		*out = kv->v.u;
		return 0;
	case GGUF_I8: case GGUF_I16: case GGUF_I32: case GGUF_I64:
		if (kv->v.i < 0)
			return -1;
		*out = (uint64_t)kv->v.i;
		return 0;
	}
	return -1;
}

int gguf_meta_get_i64(const gguf_meta *m, const char *key, int64_t *out)
{
	const gguf_kv *kv = gguf_meta_find(m, key);

	if (!kv)
		return -1;
	switch (kv->v.type) {
	case GGUF_U8: case GGUF_U16: case GGUF_U32: case GGUF_U64:
		if (kv->v.u > INT64_MAX)
			return -1;
		*out = (int64_t)kv->v.u;
		return 0;
	case GGUF_I8: case GGUF_I16: case GGUF_I32: case GGUF_I64:
		*out = kv->v.i;
		return 0;
	}
	return -1;
}

int gguf_meta_get_f64(const gguf_meta *m, const char *key, double *out)
{
	const gguf_kv *kv = gguf_meta_find(m, key);

	if (!kv || (kv->v.type != GGUF_F32 && kv->v.type != GGUF_F64))
		return -1;
	*out = kv->v.f;
	return 0;
}

int gguf_meta_get_bool(const gguf_meta *m, const char *key, bool *out)
{
	const gguf_kv *kv = gguf_meta_find(m, key);

	if (!kv || kv->v.type != GGUF_BOOL)
		return -1;
	*out = kv->v.u != 0;
	return 0;
}

const char *gguf_meta_get_str(const gguf_meta *m, const char *key)
{
	const gguf_kv *kv = gguf_meta_find(m, key);

	return kv && kv->v.type == GGUF_STRING ? kv->v.s.ptr : NULL;
}

const gguf_value *gguf_meta_get_arr(const gguf_meta *m, const char *key, uint32_t atype)
{
	const gguf_kv *kv = gguf_meta_find(m, key);

	return kv && kv->v.type == GGUF_ARRAY && kv->v.atype == atype ? &kv->v : NULL;
}

/* Makes room for one more entry; returns 0 or -1. */
static int meta_reserve(gguf_meta *m)
{
	if (m->n < m->cap)
		return 0;
	size_t cap = m->cap ? m->cap * 2 : 16;
	gguf_kv *kv = realloc(m->kv, cap * sizeof *kv);

	if (!kv)
		return -1;
	m->kv = kv;
	m->cap = cap;
	return 0;
}

/* Stores the owned value *v under key (in place if the key exists, else appended);
 * on failure *v is freed. Returns 0 or -1. */
static int meta_put(gguf_meta *m, const char *key, gguf_value *v)
{
	long i = gguf_meta_index(m, key);
	char *k;

	if (i >= 0) {
		value_free(&m->kv[i].v);
		m->kv[i].v = *v;
		return 0;
	}
	k = strdup(key);
	if (!k || meta_reserve(m) < 0) {
		free(k);
		value_free(v);
		return -1;
	}
	m->kv[m->n].key = k;
	m->kv[m->n].v = *v;
	m->n++;
	return 0;
}

int gguf_meta_set_value(gguf_meta *m, const char *key, const gguf_value *v)
{
	gguf_value c;

	if (!key || value_copy(&c, v) < 0)
		return -1;
	return meta_put(m, key, &c);
}

int gguf_meta_set_scalar(gguf_meta *m, const char *key, uint32_t type, const gguf_value *v)
{
	gguf_value t = *v;

	if (type == GGUF_ARRAY)
		return -1;
	t.type = type;
	return gguf_meta_set_value(m, key, &t);
}

int gguf_meta_set_u32(gguf_meta *m, const char *key, uint32_t v)
{
	gguf_value t = { .type = GGUF_U32, .u = v };

	return gguf_meta_set_value(m, key, &t);
}

int gguf_meta_set_i32(gguf_meta *m, const char *key, int32_t v)
{
	gguf_value t = { .type = GGUF_I32, .i = v };

	return gguf_meta_set_value(m, key, &t);
}

int gguf_meta_set_u64(gguf_meta *m, const char *key, uint64_t v)
{
	gguf_value t = { .type = GGUF_U64, .u = v };

	return gguf_meta_set_value(m, key, &t);
}

int gguf_meta_set_f32(gguf_meta *m, const char *key, float v)
{
	gguf_value t = { .type = GGUF_F32, .f = v };

	return gguf_meta_set_value(m, key, &t);
}

int gguf_meta_set_bool(gguf_meta *m, const char *key, bool v)
{
	gguf_value t = { .type = GGUF_BOOL, .u = v };

	return gguf_meta_set_value(m, key, &t);
}

int gguf_meta_set_str(gguf_meta *m, const char *key, const char *s)
{
	gguf_value t = { .type = GGUF_STRING, .s = { strlen(s), (char *)s } };

	return gguf_meta_set_value(m, key, &t);
}

int gguf_meta_set_arr(gguf_meta *m, const char *key, uint32_t atype, const void *data, uint64_t n)
{
	gguf_value t = { .type = GGUF_ARRAY, .atype = atype, .n = n, .arr = (void *)data };

	return gguf_meta_set_value(m, key, &t);
}

int gguf_meta_remove(gguf_meta *m, const char *key)
{
	long i = gguf_meta_index(m, key);

	if (i < 0)
		return 0;
	free(m->kv[i].key);
	value_free(&m->kv[i].v);
	memmove(&m->kv[i], &m->kv[i + 1], (m->n - (size_t)i - 1) * sizeof *m->kv);
	m->n--;
	return 1;
}

int gguf_meta_copy(gguf_meta *dst, const gguf_meta *src)
{
	for (size_t i = 0; i < src->n; i++) {
		if (gguf_meta_set_value(dst, src->kv[i].key, &src->kv[i].v) < 0) {
			gguf_meta_free(dst);
			return -1;
		}
	}
	return 0;
}

void gguf_meta_free(gguf_meta *m)
{
	for (size_t i = 0; i < m->n; i++) {
		free(m->kv[i].key);
		value_free(&m->kv[i].v);
	}
	free(m->kv);
	memset(m, 0, sizeof *m);
}

/* ---- names: UTF-8 and duplicate checks shared by the reader and the writer ---- */

/* Index of the first byte of s that does not start a valid UTF-8 sequence (overlong
 * forms, surrogates and code points past U+10FFFF included), or n if all is valid. */
static uint64_t utf8_bad(const uint8_t *s, uint64_t n)
{
	uint64_t i = 0;

	while (i < n) {
		uint32_t b = s[i], cp, min, more;

		if (b < 0x80) {
			i++;
			continue;
		} else if ((b & 0xe0) == 0xc0) {
			more = 1, cp = b & 0x1f, min = 0x80;
		} else if ((b & 0xf0) == 0xe0) {
			more = 2, cp = b & 0x0f, min = 0x800;
		} else if ((b & 0xf8) == 0xf0) {
			more = 3, cp = b & 0x07, min = 0x10000;
		} else {
			return i;
		}
		if (more > n - i - 1)
			return i;
		for (uint32_t k = 1; k <= more; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return i;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return i;
		i += more + 1;
	}
	return n;
}

/* A hash set of NUL-terminated names (borrowed pointers) remembering the index each
 * was added with: finds duplicates among many keys or tensors in linear time. */
typedef struct nameset {
	const char **name;
	uint64_t *index;
	size_t cap, n;
} nameset;

static uint64_t name_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325u; /* FNV-1a */

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 0x100000001b3u;
	return h;
}

static void nameset_free(nameset *s)
{
	free(s->name);
	free(s->index);
	memset(s, 0, sizeof *s);
}

/* Adds name with index i. Returns 0; 1 with *first set when the name is already
 * present; -1 when out of memory. */
static int nameset_add(nameset *s, const char *name, uint64_t i, uint64_t *first)
{
	if (2 * (s->n + 1) > s->cap) {
		nameset old = *s;
		size_t cap = s->cap ? s->cap * 2 : 64;

		s->name = calloc(cap, sizeof *s->name);
		s->index = calloc(cap, sizeof *s->index);
		if (!s->name || !s->index) {
			free(s->name);
			free(s->index);
			*s = old;
			return -1;
		}
		s->cap = cap;
		s->n = 0;
		for (size_t k = 0; k < old.cap; k++)
			if (old.name[k])
				nameset_add(s, old.name[k], old.index[k], first);
		nameset_free(&old);
	}
	for (size_t h = name_hash(name) & (s->cap - 1);; h = (h + 1) & (s->cap - 1)) {
		if (!s->name[h]) {
			s->name[h] = name;
			s->index[h] = i;
			s->n++;
			return 0;
		}
		if (strcmp(s->name[h], name) == 0) {
			*first = s->index[h];
			return 1;
		}
	}
}

/* ---- reader ---- */

/* Position in the image being parsed, and where errors go. */
typedef struct cursor {
	const uint8_t *p;
	uint64_t size, pos;
	const char *name; /* file name for messages */
	err *e;
} cursor;

static int fail_at(cursor *c, uint64_t off, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Records "name: offset N: message"; returns -1. */
static int fail_at(cursor *c, uint64_t off, const char *fmt, ...)
{
	char msg[800];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return err_set(c->e, "%s: offset %" PRIu64 ": %s", c->name, off, msg);
}

static uint64_t left(const cursor *c)
{
	return c->size - c->pos;
}

/* Reads a u32/u64 at the cursor; -1 (no message) when fewer bytes remain. */
static int rd_u32(cursor *c, uint32_t *v)
{
	if (left(c) < 4)
		return -1;
	memcpy(v, c->p + c->pos, 4);
	c->pos += 4;
	return 0;
}

static int rd_u64(cursor *c, uint64_t *v)
{
	if (left(c) < 8)
		return -1;
	memcpy(v, c->p + c->pos, 8);
	c->pos += 8;
	return 0;
}

static int rd_str(cursor *c, gguf_str *s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Reads a string (length + bytes) as a view into the image. fmt describes what is
 * read, for the message; it is only formatted on failure, as this runs per token. */
static int rd_str(cursor *c, gguf_str *s, const char *fmt, ...)
{
	uint64_t at = c->pos, len = 0;
	char what[300];
	va_list ap;

	if (rd_u64(c, &len) == 0 && len <= left(c)) {
		s->len = len;
		s->ptr = (char *)(c->p + c->pos);
		c->pos += len;
		return 0;
	}
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	if (c->pos == at)
		return fail_at(c, at, "file ends inside the length of %s", what);
	return fail_at(c, at, "%s is %" PRIu64 " bytes long, past the end of the file (%" PRIu64 " bytes left)",
		       what, len, left(c));
}

static int check_name(cursor *c, uint64_t at, const gguf_str *s, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Checks a key or tensor name found at offset at (its length field) is valid UTF-8
 * without NUL bytes; fmt names it, formatted only on failure. */
static int check_name(cursor *c, uint64_t at, const gguf_str *s, const char *fmt, ...)
{
	const char *nul = memchr(s->ptr, 0, s->len);
	uint64_t bad = nul ? (uint64_t)(nul - s->ptr) : utf8_bad((const uint8_t *)s->ptr, s->len);
	char what[300];
	va_list ap;

	if (bad == s->len)
		return 0;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	return fail_at(c, at + 8 + bad, "%s %s", what, nul ? "contains a NUL byte" : "is not valid UTF-8");
}

/* Reads one fixed-size value at the cursor into v (caller checked the bytes are there). */
static int rd_scalar(cursor *c, uint32_t type, gguf_value *v, const char *key)
{
	const uint8_t *q = c->p + c->pos;
	uint64_t at = c->pos;

	v->type = type;
	switch (type) {
	case GGUF_U8: { uint8_t x; memcpy(&x, q, 1); v->u = x; break; }
	case GGUF_I8: { int8_t x; memcpy(&x, q, 1); v->i = x; break; }
	case GGUF_U16: { uint16_t x; memcpy(&x, q, 2); v->u = x; break; }
	case GGUF_I16: { int16_t x; memcpy(&x, q, 2); v->i = x; break; }
	case GGUF_U32: { uint32_t x; memcpy(&x, q, 4); v->u = x; break; }
	case GGUF_I32: { int32_t x; memcpy(&x, q, 4); v->i = x; break; }
	case GGUF_U64: { uint64_t x; memcpy(&x, q, 8); v->u = x; break; }
	case GGUF_I64: { int64_t x; memcpy(&x, q, 8); v->i = x; break; }
	case GGUF_F32: { float x; memcpy(&x, q, 4); v->f = x; break; }
	case GGUF_F64: { double x; memcpy(&x, q, 8); v->f = x; break; }
	case GGUF_BOOL:
		if (q[0] > 1)
			return fail_at(c, at, "key '%.200s': bool value %u is not 0 or 1", key, q[0]);
		v->u = q[0];
		break;
	}
	c->pos += value_size(type);
	return 0;
}

/* Reads an array body (element type and count already read, count at offset nat). */
static int rd_array(cursor *c, gguf_value *v, uint64_t nat, const char *key)
{
	uint64_t min = v->atype == GGUF_STRING ? 8 : value_size(v->atype), n = v->n;

	/* Every element takes at least min bytes of the file: a count the rest of the file
	 * cannot hold is refused before anything is allocated for it. */
	if (n > left(c) / min)
		return fail_at(c, nat, "key '%.200s': array of %" PRIu64 " %s values cannot fit in the %" PRIu64
			       " bytes left", key, n, value_type_name(v->atype), left(c));
	v->arr = calloc(n ? n : 1, elem_size(v->atype));
	if (!v->arr)
		return fail_at(c, nat, "key '%.200s': out of memory for %" PRIu64 " array elements", key, n);
	if (v->atype != GGUF_STRING) {
		if (n)
			memcpy(v->arr, c->p + c->pos, n * min);
		if (v->atype == GGUF_BOOL)
			for (uint64_t i = 0; i < n; i++)
				if (((uint8_t *)v->arr)[i] > 1)
					return fail_at(c, c->pos + i, "key '%.200s': bool element %" PRIu64 " is %u, not 0 or 1",
						       key, i, ((uint8_t *)v->arr)[i]);
		c->pos += n * min;
		return 0;
	}
	/* n counts the strings owned so far, so value_free releases exactly those. */
	v->n = 0;
	for (uint64_t i = 0; i < n; i++) {
		gguf_str s;
		gguf_str *d = &((gguf_str *)v->arr)[i];

		if (rd_str(c, &s, "string %" PRIu64 " of key '%.200s'", i, key) < 0)
			return -1;
		d->ptr = mem_dup(s.ptr, s.len);
		if (!d->ptr)
			return fail_at(c, c->pos, "key '%.200s': out of memory", key);
		d->len = s.len;
		v->n = i + 1;
	}
	return 0;
}

/* Reads metadata entry i into m; *value_at receives the offset of its value. */
static int parse_kv(cursor *c, gguf_meta *m, uint64_t i, nameset *keys, uint64_t *value_at)
{
	uint64_t at = c->pos, tat, first;
	gguf_value v = { 0 };
	gguf_str k;
	uint32_t type;
	char *key;
	int r;

	if (rd_str(c, &k, "the key of metadata entry %" PRIu64, i) < 0)
		return -1;
	if (check_name(c, at, &k, "the key of metadata entry %" PRIu64, i) < 0)
		return -1;
	key = mem_dup(k.ptr, k.len);
	if (!key || meta_reserve(m) < 0) {
		free(key);
		return fail_at(c, at, "out of memory");
	}
	/* The key belongs to m from here, so every failure below is cleaned up by its owner. */
	m->kv[m->n].key = key;
	m->kv[m->n].v = v;
	m->n++;
	r = nameset_add(keys, key, i, &first);
	if (r < 0)
		return fail_at(c, at, "out of memory");
	if (r > 0)
		return fail_at(c, at, "duplicate metadata key '%.200s' (entries %" PRIu64 " and %" PRIu64 ")", key, first, i);
	tat = c->pos;
	if (rd_u32(c, &type) < 0)
		return fail_at(c, tat, "file ends inside the value type of key '%.200s'", key);
	*value_at = c->pos;
	if (type == GGUF_ARRAY) {
		uint64_t nat;

		v.type = GGUF_ARRAY;
		if (rd_u32(c, &v.atype) < 0)
			return fail_at(c, tat + 4, "file ends inside the array type of key '%.200s'", key);
		nat = c->pos;
		if (rd_u64(c, &v.n) < 0)
			return fail_at(c, nat, "file ends inside the array length of key '%.200s'", key);
		if (v.atype == GGUF_ARRAY)
			return fail_at(c, tat + 4, "key '%.200s': nested arrays are not supported", key);
		if (!elem_size(v.atype))
			return fail_at(c, tat + 4, "key '%.200s': unknown array element type %" PRIu32, key, v.atype);
		r = rd_array(c, &v, nat, key);
	} else if (type == GGUF_STRING) {
		gguf_str s;

		r = rd_str(c, &s, "the string value of key '%.200s'", key);
		if (r == 0) {
			v.type = GGUF_STRING;
			v.s.ptr = mem_dup(s.ptr, s.len);
			v.s.len = s.len;
			if (!v.s.ptr)
				r = fail_at(c, *value_at, "key '%.200s': out of memory", key);
		}
	} else if (!value_size(type)) {
		return fail_at(c, tat, "key '%.200s': unknown value type %" PRIu32, key, type);
	} else if (left(c) < value_size(type)) {
		return fail_at(c, c->pos, "file ends inside the %s value of key '%.200s'", value_type_name(type), key);
	} else {
		r = rd_scalar(c, type, &v, key);
	}
	m->kv[m->n - 1].v = v;
	return r;
}

/* Reads magic, version and the two counts. */
static int parse_header(cursor *c, gguf_file *f, uint64_t *n_tensors, uint64_t *n_kv)
{
	uint64_t rest;

	if (c->size < 4)
		return fail_at(c, 0, "file is %" PRIu64 " bytes, too short to be GGUF", c->size);
	if (memcmp(c->p, "GGUF", 4) != 0)
		return fail_at(c, 0, "bad magic %02x %02x %02x %02x: not a GGUF file (expected \"GGUF\")",
			       c->p[0], c->p[1], c->p[2], c->p[3]);
	c->pos = 4;
	if (rd_u32(c, &f->version) < 0)
		return fail_at(c, 4, "file ends inside the header (version)");
	if (f->version == 1)
		return fail_at(c, 4, "GGUF version 1 is no longer supported (versions 2 and 3 are): "
			       "re-convert the model with a current llama.cpp");
	if (f->version != 0 && (f->version & 0xffff) == 0)
		return fail_at(c, 4, "GGUF version %#" PRIx32 " looks byte-swapped: big-endian GGUF is not supported",
			       f->version);
	if (f->version != 2 && f->version != 3)
		return fail_at(c, 4, "GGUF version %" PRIu32 " is not supported (versions 2 and 3 are)", f->version);
	if (rd_u64(c, n_tensors) < 0)
		return fail_at(c, 8, "file ends inside the header (tensor count)");
	if (rd_u64(c, n_kv) < 0)
		return fail_at(c, 16, "file ends inside the header (metadata count)");
	rest = left(c);
	if (*n_tensors > rest / GGUF_MIN_TENSOR_INFO)
		return fail_at(c, 8, "tensor count %" PRIu64 " is impossible: only %" PRIu64 " bytes follow the header",
			       *n_tensors, rest);
	if (*n_kv > rest / GGUF_MIN_KV)
		return fail_at(c, 16, "metadata count %" PRIu64 " is impossible: only %" PRIu64 " bytes follow the header",
			       *n_kv, rest);
	if (*n_tensors * GGUF_MIN_TENSOR_INFO + *n_kv * GGUF_MIN_KV > rest)
		return fail_at(c, 8, "%" PRIu64 " tensors and %" PRIu64 " metadata entries cannot fit in the %" PRIu64
			       " bytes that follow the header", *n_tensors, *n_kv, rest);
	return 0;
}

/* Applies general.alignment (its value at offset at) to f. */
static int parse_alignment(cursor *c, gguf_file *f, uint64_t at)
{
	const gguf_kv *kv = gguf_meta_find(&f->meta, "general.alignment");

	f->alignment = GGUF_DEFAULT_ALIGNMENT;
	if (!kv)
		return 0;
	if (kv->v.type != GGUF_U32)
		return fail_at(c, at, "general.alignment has type %s, it must be u32", value_type_name(kv->v.type));
	if (kv->v.u == 0 || (kv->v.u & (kv->v.u - 1)) != 0)
		return fail_at(c, at, "general.alignment %" PRIu64 " is not a nonzero power of two", kv->v.u);
	f->alignment = (uint32_t)kv->v.u;
	return 0;
}

/* Reads tensor info i into f->tensors[i]; *offset_at receives the offset of its
 * data-offset field. */
static int parse_tensor_info(cursor *c, gguf_file *f, uint64_t i, nameset *names, uint64_t *offset_at)
{
	gguf_tensor *t = &f->tensors[i];
	const gguf_type_info *ti;
	uint64_t at = c->pos, dat, ne0at = 0, first, nel = 1;
	gguf_str s;
	int r;

	if (rd_str(c, &s, "the name of tensor %" PRIu64, i) < 0)
		return -1;
	if (s.len > GGUF_MAX_NAME)
		return fail_at(c, at, "tensor %" PRIu64 ": name is %" PRIu64 " bytes long, more than the %d ggml allows",
			       i, s.len, GGUF_MAX_NAME);
	if (check_name(c, at, &s, "the name of tensor %" PRIu64, i) < 0)
		return -1;
	t->name = mem_dup(s.ptr, s.len);
	if (!t->name)
		return fail_at(c, at, "out of memory");
	f->n_tensors = i + 1; /* t->name is now owned through f */
	r = nameset_add(names, t->name, i, &first);
	if (r < 0)
		return fail_at(c, at, "out of memory");
	if (r > 0)
		return fail_at(c, at, "duplicate tensor name '%s' (tensors %" PRIu64 " and %" PRIu64 ")", t->name, first, i);
	dat = c->pos;
	if (rd_u32(c, &t->n_dims) < 0)
		return fail_at(c, dat, "file ends inside tensor '%s' (n_dims)", t->name);
	if (t->n_dims < 1 || t->n_dims > 4)
		return fail_at(c, dat, "tensor '%s': n_dims %" PRIu32 " is not in 1..4", t->name, t->n_dims);
	for (uint32_t j = 0; j < 4; j++)
		t->ne[j] = 1;
	for (uint32_t j = 0; j < t->n_dims; j++) {
		uint64_t nat = c->pos;

		if (j == 0)
			ne0at = nat;
		if (rd_u64(c, &t->ne[j]) < 0)
			return fail_at(c, nat, "file ends inside tensor '%s' (dimension %" PRIu32 ")", t->name, j);
		if (t->ne[j] == 0)
			return fail_at(c, nat, "tensor '%s': dimension %" PRIu32 " is 0", t->name, j);
		/* ggml keeps element counts in int64_t. */
		if (t->ne[j] > INT64_MAX || __builtin_mul_overflow(nel, t->ne[j], &nel) || nel > INT64_MAX)
			return fail_at(c, nat, "tensor '%s': dimension %" PRIu32 " (%" PRIu64 ") overflows the element count",
				       t->name, j, t->ne[j]);
	}
	dat = c->pos;
	if (rd_u32(c, &t->type) < 0)
		return fail_at(c, dat, "file ends inside tensor '%s' (type)", t->name);
	ti = gguf_type(t->type);
	if (!ti)
		return fail_at(c, dat, "tensor '%s': unknown ggml type id %" PRIu32, t->name, t->type);
	if (t->ne[0] % ti->blck)
		return fail_at(c, ne0at, "tensor '%s': row of %" PRIu64 " elements is not a multiple of the %s block size %"
			       PRIu32, t->name, t->ne[0], ti->name, ti->blck);
	if (tensor_bytes(t->type, t->ne, t->n_dims, &t->nbytes) < 0)
		return fail_at(c, dat, "tensor '%s': size in bytes overflows", t->name);
	*offset_at = c->pos;
	if (rd_u64(c, &t->offset) < 0)
		return fail_at(c, *offset_at, "file ends inside tensor '%s' (data offset)", t->name);
	return 0;
}

/* Checks every tensor sits exactly where ggml's packed layout puts it (in order, each
 * starting at the previous one's end rounded up to the alignment) and inside the file;
 * sets the data pointers. offset_at[i] is where tensor i's offset field is. */
static int place_tensors(cursor *c, gguf_file *f, const uint64_t *offset_at)
{
	uint64_t expect = 0, a = f->alignment;

	for (uint64_t i = 0; i < f->n_tensors; i++) {
		gguf_tensor *t = &f->tensors[i];
		uint64_t room;

		if (t->offset != expect)
			return fail_at(c, offset_at[i], "tensor '%s': data offset %" PRIu64 ", expected %" PRIu64
				       " (tensors must be packed in order, each aligned to %" PRIu64 " bytes)",
				       t->name, t->offset, expect, a);
		room = f->data_offset <= c->size ? c->size - f->data_offset : 0;
		if (t->offset > room || t->nbytes > room - t->offset)
			return fail_at(c, offset_at[i], "tensor '%s': data [%" PRIu64 ", +%" PRIu64 ") at file offset %" PRIu64
				       " runs past the end of the file (%" PRIu64 " bytes)",
				       t->name, t->offset, t->nbytes, f->data_offset + t->offset, c->size);
		t->data = c->p + f->data_offset + t->offset;
		/* Fits: the end is inside the file, so adding the padding cannot overflow. */
		expect = t->offset + pad_to(t->nbytes, a);
	}
	return 0;
}

/* Validates the image f->map[0, f->size); on failure releases f and returns -1. */
static int parse(gguf_file *f, err *e)
{
	cursor c = { f->map, f->size, 0, f->path, e };
	uint64_t n_tensors = 0, n_kv = 0, align_at = 0, value_at = 0, *offset_at = NULL;
	nameset names = { 0 };

	if (parse_header(&c, f, &n_tensors, &n_kv) < 0)
		goto fail;
	for (uint64_t i = 0; i < n_kv; i++) {
		if (parse_kv(&c, &f->meta, i, &names, &value_at) < 0)
			goto fail;
		if (strcmp(f->meta.kv[i].key, "general.alignment") == 0)
			align_at = value_at;
	}
	nameset_free(&names);
	if (parse_alignment(&c, f, align_at) < 0)
		goto fail;
	/* The counts are bounded by the file size, so these allocations are too. */
	f->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *f->tensors);
	offset_at = calloc(n_tensors ? n_tensors : 1, sizeof *offset_at);
	if (!f->tensors || !offset_at) {
		fail_at(&c, c.pos, "out of memory for %" PRIu64 " tensors", n_tensors);
		goto fail;
	}
	for (uint64_t i = 0; i < n_tensors; i++)
		if (parse_tensor_info(&c, f, i, &names, &offset_at[i]) < 0)
			goto fail;
	f->data_offset = pad_to(c.pos, f->alignment);
	if (place_tensors(&c, f, offset_at) < 0)
		goto fail;
	nameset_free(&names);
	free(offset_at);
	return 0;
fail:
	nameset_free(&names);
	free(offset_at);
	gguf_close(f);
	return -1;
}

int gguf_parse(gguf_file *f, const void *buf, uint64_t size, const char *name, err *e)
{
	static const uint8_t empty[1];

	memset(f, 0, sizeof *f);
	f->map = size ? buf : empty;
	f->size = size;
	f->path = strdup(name);
	if (!f->path)
		return err_set(e, "%s: out of memory", name);
	return parse(f, e);
}

int gguf_open(gguf_file *f, const char *path, err *e)
{
	static const uint8_t empty[1];
	struct stat st;
	void *map;
	int fd;

	memset(f, 0, sizeof *f);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_errno(e, "%s: cannot open", path);
	if (fstat(fd, &st) < 0) {
		err_errno(e, "%s: cannot stat", path);
		close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return err_set(e, "%s: not a regular file", path);
	}
	f->path = strdup(path);
	if (!f->path) {
		close(fd);
		return err_set(e, "%s: out of memory", path);
	}
	f->size = (uint64_t)st.st_size;
	f->map = empty;
	if (f->size) {
		map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (map == MAP_FAILED) {
			err_errno(e, "%s: cannot map %" PRIu64 " bytes", path, f->size);
			close(fd);
			gguf_close(f);
			return -1;
		}
		f->map = map;
		f->mapped = 1;
	}
	close(fd);
	return parse(f, e);
}

void gguf_close(gguf_file *f)
{
	if (f->tensors)
		for (uint64_t i = 0; i < f->n_tensors; i++)
			free(f->tensors[i].name);
	free(f->tensors);
	gguf_meta_free(&f->meta);
	if (f->mapped)
		munmap((void *)f->map, f->size);
	free(f->path);
	memset(f, 0, sizeof *f);
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name)
{
	for (uint64_t i = 0; i < f->n_tensors; i++)
		if (strcmp(f->tensors[i].name, name) == 0)
			return &f->tensors[i];
	return NULL;
}

/* ---- writer ---- */

struct gguf_writer {
	afile out;
	uint32_t alignment;
	uint64_t n;       /* tensors */
	char **names;     /* owned copies, for messages */
	uint64_t *nbytes; /* data bytes of each tensor */
	uint64_t cur;     /* tensor whose data gguf_writer_write is receiving */
	uint64_t done;    /* bytes of tensor cur received so far */
};

/* A growing byte buffer for the header; oom is sticky so callers check once. */
typedef struct bytes {
	uint8_t *p;
	size_t n, cap;
	int oom;
} bytes;

static void put(bytes *b, const void *p, size_t n)
{
	if (b->oom || !n)
		return;
	if (n > b->cap - b->n) {
		size_t cap = b->cap ? b->cap : 4096;

		while (cap - b->n < n && cap < SIZE_MAX / 2)
			cap *= 2;
		uint8_t *q = cap - b->n >= n ? realloc(b->p, cap) : NULL;

		if (!q) {
			b->oom = 1;
			return;
		}
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

static void put_u32(bytes *b, uint32_t v)
{
	put(b, &v, 4);
}

static void put_u64(bytes *b, uint64_t v)
{
	put(b, &v, 8);
}

static void put_str(bytes *b, const char *p, uint64_t len)
{
	put_u64(b, len);
	put(b, p, len);
}

/* Appends one fixed-size value (scalar of the union, or array element at p). */
static void put_scalar(bytes *b, uint32_t type, const gguf_value *v)
{
	union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
		uint64_t u64; int64_t i64; float f32; double f64; } x;

	switch (type) {
	case GGUF_U8: x.u8 = (uint8_t)v->u; break;
	case GGUF_I8: x.i8 = (int8_t)v->i; break;
	case GGUF_U16: x.u16 = (uint16_t)v->u; break;
	case GGUF_I16: x.i16 = (int16_t)v->i; break;
	case GGUF_U32: x.u32 = (uint32_t)v->u; break;
	case GGUF_I32: x.i32 = (int32_t)v->i; break;
	case GGUF_U64: x.u64 = v->u; break;
	case GGUF_I64: x.i64 = v->i; break;
	case GGUF_F32: x.f32 = (float)v->f; break;
	case GGUF_F64: x.f64 = v->f; break;
	case GGUF_BOOL: x.u8 = v->u != 0; break;
	}
	put(b, &x, value_size(type));
}

/* Checks one entry can be written and read back; returns 0 or -1 with e set. */
static int check_kv(const char *path, const gguf_kv *kv, err *e)
{
	const gguf_value *v = &kv->v;

	if (!kv->key)
		return err_set(e, "%s: a metadata entry has no key", path);
	if (utf8_bad((const uint8_t *)kv->key, strlen(kv->key)) < strlen(kv->key))
		return err_set(e, "%s: metadata key '%.200s' is not valid UTF-8", path, kv->key);
	if (v->type == GGUF_STRING) {
		if (v->s.len && !v->s.ptr)
			return err_set(e, "%s: key '%.200s': string without bytes", path, kv->key);
	} else if (v->type == GGUF_ARRAY) {
		if (!elem_size(v->atype))
			return err_set(e, "%s: key '%.200s': bad array element type %" PRIu32, path, kv->key, v->atype);
		if (v->n && !v->arr)
			return err_set(e, "%s: key '%.200s': array without elements", path, kv->key);
		if (v->atype == GGUF_STRING)
			for (uint64_t i = 0; i < v->n; i++)
				if (((gguf_str *)v->arr)[i].len && !((gguf_str *)v->arr)[i].ptr)
					return err_set(e, "%s: key '%.200s': string %" PRIu64 " without bytes", path,
						       kv->key, i);
	} else if (!value_size(v->type)) {
		return err_set(e, "%s: key '%.200s': bad value type %" PRIu32, path, kv->key, v->type);
	}
	return 0;
}

static void put_kv(bytes *b, const char *key, const gguf_value *v)
{
	put_str(b, key, strlen(key));
	put_u32(b, v->type);
	if (v->type == GGUF_STRING) {
		put_str(b, v->s.ptr, v->s.len);
		return;
	}
	if (v->type != GGUF_ARRAY) {
		put_scalar(b, v->type, v);
		return;
	}
	put_u32(b, v->atype);
	put_u64(b, v->n);
	if (v->atype == GGUF_STRING) {
		for (uint64_t i = 0; i < v->n; i++)
			put_str(b, ((gguf_str *)v->arr)[i].ptr, ((gguf_str *)v->arr)[i].len);
	} else if (v->atype == GGUF_BOOL) {
		for (uint64_t i = 0; i < v->n; i++) {
			uint8_t x = ((uint8_t *)v->arr)[i] != 0;

			put(b, &x, 1);
		}
	} else if (v->n) {
		put(b, v->arr, v->n * value_size(v->atype));
	}
}

/* The alignment to write with: the argument, general.alignment, or 32. */
static int writer_alignment(const char *path, uint32_t want, const gguf_meta *meta, uint32_t *out, int *add_key,
			    err *e)
{
	const gguf_kv *kv = gguf_meta_find(meta, "general.alignment");

	*add_key = 0;
	if (kv && (kv->v.type != GGUF_U32 || kv->v.u == 0 || (kv->v.u & (kv->v.u - 1))))
		return err_set(e, "%s: general.alignment must be a u32 power of two", path);
	if (want && (want & (want - 1)))
		return err_set(e, "%s: alignment %" PRIu32 " is not a power of two", path, want);
	if (want && kv && kv->v.u != want)
		return err_set(e, "%s: alignment %" PRIu32 " asked for, but general.alignment says %" PRIu64, path, want,
			       kv->v.u);
	*out = want ? want : kv ? (uint32_t)kv->v.u : GGUF_DEFAULT_ALIGNMENT;
	/* Readers only know the alignment from the key: add it when it is not the default. */
	*add_key = !kv && *out != GGUF_DEFAULT_ALIGNMENT;
	return 0;
}

/* Validates tensor t (index i) and appends its info; returns 0 or -1. */
static int put_tensor_info(bytes *b, const char *path, const gguf_tensor *t, uint64_t i, uint64_t offset,
			   uint64_t *nbytes, err *e)
{
	const char *name = t->name;
	size_t len = name ? strlen(name) : 0;

	if (!name || len > GGUF_MAX_NAME || utf8_bad((const uint8_t *)name, len) < len)
		return err_set(e, "%s: tensor %" PRIu64 ": name missing, longer than %d bytes or not UTF-8", path, i,
			       GGUF_MAX_NAME);
	if (t->n_dims < 1 || t->n_dims > 4)
		return err_set(e, "%s: tensor '%s': n_dims %" PRIu32 " is not in 1..4", path, name, t->n_dims);
	for (uint32_t j = 0; j < t->n_dims; j++)
		if (t->ne[j] == 0 || t->ne[j] > INT64_MAX)
			return err_set(e, "%s: tensor '%s': dimension %" PRIu32 " is %" PRIu64, path, name, j, t->ne[j]);
	if (!gguf_type(t->type))
		return err_set(e, "%s: tensor '%s': unknown ggml type id %" PRIu32, path, name, t->type);
	if (tensor_bytes(t->type, t->ne, t->n_dims, nbytes) < 0)
		return err_set(e, "%s: tensor '%s': row of %" PRIu64 " elements is not a multiple of the %s block size,"
			       " or the size overflows", path, name, t->ne[0], gguf_type(t->type)->name);
	put_str(b, name, len);
	put_u32(b, t->n_dims);
	for (uint32_t j = 0; j < t->n_dims; j++)
		put_u64(b, t->ne[j]);
	put_u32(b, t->type);
	put_u64(b, offset);
	return 0;
}

static void writer_free(gguf_writer *w)
{
	if (w->names)
		for (uint64_t i = 0; i < w->n; i++)
			free(w->names[i]);
	free(w->names);
	free(w->nbytes);
	free(w);
}

/* Serialises the whole header (up to the start of the data section) into b. */
static int build_header(bytes *b, gguf_writer *w, const char *path, const gguf_meta *meta,
			const gguf_tensor *tensors, int add_alignment, err *e)
{
	nameset set = { 0 };
	uint64_t first, offset = 0;
	int r = 0;

	put(b, "GGUF", 4);
	put_u32(b, 3);
	put_u64(b, w->n);
	put_u64(b, meta->n + (add_alignment ? 1 : 0));
	for (size_t i = 0; i < meta->n && !r; i++) {
		if (check_kv(path, &meta->kv[i], e) < 0)
			r = -1;
		else if ((r = nameset_add(&set, meta->kv[i].key, i, &first)) != 0)
			r = r < 0 ? err_set(e, "%s: out of memory", path)
				  : err_set(e, "%s: duplicate metadata key '%.200s'", path, meta->kv[i].key);
		else
			put_kv(b, meta->kv[i].key, &meta->kv[i].v);
	}
	if (!r && add_alignment) {
		gguf_value v = { .type = GGUF_U32, .u = w->alignment };

		put_kv(b, "general.alignment", &v);
	}
	nameset_free(&set);
	for (uint64_t i = 0; i < w->n && !r; i++) {
		if (put_tensor_info(b, path, &tensors[i], i, offset, &w->nbytes[i], e) < 0) {
			r = -1;
			break;
		}
		w->names[i] = strdup(tensors[i].name);
		if (!w->names[i]) {
			r = err_set(e, "%s: out of memory", path);
			break;
		}
		if ((r = nameset_add(&set, w->names[i], i, &first)) != 0)
			r = r < 0 ? err_set(e, "%s: out of memory", path)
				  : err_set(e, "%s: duplicate tensor name '%s'", path, w->names[i]);
		/* A file offset must stay below 2^63 (off_t), so the sum cannot wrap either. */
		else if (offset > (uint64_t)INT64_MAX - w->alignment ||
			 w->nbytes[i] > (uint64_t)INT64_MAX - w->alignment - offset)
			r = err_set(e, "%s: tensor '%s': the data section would exceed 2^63 bytes", path, w->names[i]);
		offset += pad_to(w->nbytes[i], w->alignment);
	}
	nameset_free(&set);
	if (!r && b->oom)
		r = err_set(e, "%s: out of memory for the header", path);
	return r;
}

gguf_writer *gguf_writer_begin(const char *path, uint32_t alignment, const gguf_meta *meta,
			       const gguf_tensor *tensors, uint64_t n, err *e)
{
	gguf_writer *w = calloc(1, sizeof *w);
	bytes b = { 0 };
	int add_key;
	uint64_t pad;

	if (!w) {
		err_set(e, "%s: out of memory", path);
		return NULL;
	}
	w->n = n;
	w->names = calloc(n ? n : 1, sizeof *w->names);
	w->nbytes = calloc(n ? n : 1, sizeof *w->nbytes);
	w->out.fd = -1;
	if (!w->names || !w->nbytes) {
		err_set(e, "%s: out of memory", path);
		goto fail;
	}
	if (writer_alignment(path, alignment, meta, &w->alignment, &add_key, e) < 0 ||
	    build_header(&b, w, path, meta, tensors, add_key, e) < 0)
		goto fail;
	pad = pad_to(b.n, w->alignment) - b.n;
	if (afile_open(&w->out, path, 1, 0, e) < 0)
		goto fail;
	if (afile_write(&w->out, b.p, b.n, e) < 0 || afile_zeros(&w->out, pad, e) < 0) {
		afile_abort(&w->out);
		goto fail;
	}
	free(b.p);
	return w;
fail:
	free(b.p);
	writer_free(w);
	return NULL;
}

int gguf_writer_write(gguf_writer *w, const void *buf, size_t n, err *e)
{
	const uint8_t *p = buf;

	while (n) {
		uint64_t k;

		if (w->cur >= w->n)
			return err_set(e, "%s: %zu bytes of tensor data more than the %" PRIu64 " tensors hold", w->out.path,
				       n, w->n);
		k = w->nbytes[w->cur] - w->done;
		if (k > n)
			k = n;
		if (afile_write(&w->out, p, k, e) < 0)
			return -1;
		p += k;
		n -= k;
		w->done += k;
		if (w->done == w->nbytes[w->cur]) {
			uint64_t pad = pad_to(w->done, w->alignment) - w->done;

			if (afile_zeros(&w->out, pad, e) < 0)
				return -1;
			w->cur++;
			w->done = 0;
		}
	}
	return 0;
}

int gguf_writer_finish(gguf_writer *w, uint8_t sha256[32], err *e)
{
	uint8_t d[32];
	int r;

	if (w->cur < w->n) {
		err_set(e, "%s: tensor '%s' got %" PRIu64 " of its %" PRIu64 " bytes; nothing written", w->out.path,
			w->names[w->cur], w->done, w->nbytes[w->cur]);
		gguf_writer_abort(w);
		return -1;
	}
	r = afile_commit(&w->out, d, e);
	if (r == 0 && sha256)
		memcpy(sha256, d, 32);
	writer_free(w);
	return r;
}

void gguf_writer_abort(gguf_writer *w)
{
	if (!w)
		return;
	afile_abort(&w->out);
	writer_free(w);
}
