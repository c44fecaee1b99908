/* test_gguf_malformed.c - hand-built GGUF images: v2/v3 parse, truncations and every corrupted header field */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gguf.h"

/* An image under construction. */
typedef struct img {
	uint8_t p[1024];
	size_t n;
} img;

static size_t raw(img *b, const void *p, size_t n)
{
	size_t at = b->n;

	memcpy(b->p + b->n, p, n);
	b->n += n;
	return at;
}

static size_t u32(img *b, uint32_t v)
{
	return raw(b, &v, 4);
}

static size_t u64(img *b, uint64_t v)
{
	return raw(b, &v, 8);
}

static size_t str(img *b, const char *s)
{
	size_t at = u64(b, strlen(s));

	raw(b, s, strlen(s));
	return at;
}

/* Where each field of the image sits, so a test can corrupt exactly one. */
typedef struct layout {
	size_t version, n_tensors, n_kv;
	size_t arch_val;                   /* length field of the "llama" string */
	size_t align_type, align_val;      /* general.alignment */
	size_t arr_key, arr_atype, arr_n;  /* "arr1": u32[3] */
	size_t toks_n, toks_s1;            /* "toks": string[2]; the second string's length */
	size_t flag_key, flag_val;         /* "arr2": bool */
	size_t t0_name, t0_ndims, t0_ne0, t0_ne1, t0_type, t0_off;
	size_t t1_name, t1_ndims, t1_ne0, t1_type, t1_off;
	size_t data;
} layout;

/* A valid file: 5 keys, a Q4_0 64x2 tensor (72 bytes, padded to 96) and an F32 [8]. */
static void build(img *b, layout *L, uint32_t version, const char *t0name)
{
	static const uint32_t a[] = { 1, 2, 3 };

	memset(b, 0, sizeof *b);
	raw(b, "GGUF", 4);
	L->version = u32(b, version);
	L->n_tensors = u64(b, 2);
	L->n_kv = u64(b, 5);
	str(b, "general.architecture");
	u32(b, GGUF_STRING);
	L->arch_val = str(b, "llama");
	str(b, "general.alignment");
	L->align_type = u32(b, GGUF_U32);
	L->align_val = u32(b, 32);
	L->arr_key = str(b, "arr1");
	u32(b, GGUF_ARRAY);
	L->arr_atype = u32(b, GGUF_U32);
	L->arr_n = u64(b, 3);
	raw(b, a, sizeof a);
	str(b, "toks");
	u32(b, GGUF_ARRAY);
	u32(b, GGUF_STRING);
	L->toks_n = u64(b, 2);
	str(b, "a");
	L->toks_s1 = str(b, "bc");
	L->flag_key = str(b, "arr2");
	u32(b, GGUF_BOOL);
	L->flag_val = raw(b, "\1", 1);
	L->t0_name = str(b, t0name);
	L->t0_ndims = u32(b, 2);
	L->t0_ne0 = u64(b, 64);
	L->t0_ne1 = u64(b, 2);
	L->t0_type = u32(b, GGUF_TYPE_Q4_0);
	L->t0_off = u64(b, 0);
	L->t1_name = str(b, "n");
	L->t1_ndims = u32(b, 1);
	L->t1_ne0 = u64(b, 8);
	L->t1_type = u32(b, GGUF_TYPE_F32);
	L->t1_off = u64(b, 96);
	b->n = (b->n + 31) / 32 * 32;
	L->data = b->n;
	for (int i = 0; i < 72; i++)
		b->p[b->n + i] = (uint8_t)(i + 1);
	b->n += 96;
	for (int i = 0; i < 8; i++) {
		float x = (float)i;

		raw(b, &x, 4);
	}
}

/* Parses an exact-size heap copy of p[0, n) (so a read past the end is an ASan report). */
static int parse_copy(const uint8_t *p, size_t n, err *e, gguf_file *f)
{
	uint8_t *copy = malloc(n ? n : 1);
	int r;

	memcpy(copy, p, n);
	r = gguf_parse(f, copy, n, "img.gguf", e);
	if (r == 0) {
		/* Touch everything a caller may read. */
		volatile uint8_t sink = 0;

		for (uint64_t i = 0; i < f->n_tensors; i++)
			for (uint64_t j = 0; j < f->tensors[i].nbytes; j++)
				sink ^= ((const uint8_t *)f->tensors[i].data)[j];
		(void)sink;
		gguf_close(f);
	}
	free(copy);
	return r;
}

/* Expects the image to be refused with "img.gguf: offset AT: ..." containing every word. */
static void expect_fail(const img *b, const char *what, long at, ...)
{
	gguf_file f;
	err e = { 0 };
	char off[64];
	va_list ap;

	if (parse_copy(b->p, b->n, &e, &f) == 0) {
		CHECK(0, "%s: accepted", what);
		return;
	}
	CHECK(strncmp(e.msg, "img.gguf: offset ", 17) == 0, "%s: message does not start with the offset: %s", what,
	      e.msg);
	snprintf(off, sizeof off, "offset %ld: ", at);
	CHECK(at < 0 || strstr(e.msg, off), "%s: expected %s in: %s", what, off, e.msg);
	va_start(ap, at);
	for (const char *w = va_arg(ap, const char *); w; w = va_arg(ap, const char *))
		CHECK(strstr(e.msg, w) != NULL, "%s: expected '%s' in: %s", what, w, e.msg);
	va_end(ap);
}

static void put32(img *b, size_t at, uint32_t v)
{
	memcpy(b->p + at, &v, 4);
}

static void put64(img *b, size_t at, uint64_t v)
{
	memcpy(b->p + at, &v, 8);
}

static void test_valid(void)
{
	img b;
	layout L;

	for (uint32_t version = 2; version <= 3; version++) {
		gguf_file f;
		err e = { 0 };
		uint64_t u;
		bool flag;
		const gguf_value *v;

		build(&b, &L, version, "w");
		if (gguf_parse(&f, b.p, b.n, "img.gguf", &e) < 0) {
			CHECK(0, "v%u: %s", version, e.msg);
			continue;
		}
		CHECK(f.version == version && f.alignment == 32 && f.meta.n == 5 && f.n_tensors == 2, "v%u header",
		      version);
		CHECK(f.data_offset == L.data && f.size == b.n, "data at %" PRIu64, f.data_offset);
		CHECK(gguf_meta_get_str(&f.meta, "general.architecture") &&
		      strcmp(gguf_meta_get_str(&f.meta, "general.architecture"), "llama") == 0, "arch");
		v = gguf_meta_get_arr(&f.meta, "arr1", GGUF_U32);
		CHECK(v && v->n == 3 && ((uint32_t *)v->arr)[2] == 3, "u32 array");
		v = gguf_meta_get_arr(&f.meta, "toks", GGUF_STRING);
		CHECK(v && v->n == 2 && strcmp(((gguf_str *)v->arr)[1].ptr, "bc") == 0, "string array");
		CHECK(gguf_meta_get_bool(&f.meta, "arr2", &flag) == 0 && flag, "bool");
		CHECK(gguf_meta_get_u64(&f.meta, "general.alignment", &u) == 0 && u == 32, "alignment");
		CHECK(strcmp(f.tensors[0].name, "w") == 0 && f.tensors[0].nbytes == 72 &&
		      f.tensors[0].data == b.p + L.data && ((const uint8_t *)f.tensors[0].data)[71] == 72, "tensor w");
		CHECK(f.tensors[1].nbytes == 32 && f.tensors[1].offset == 96 &&
		      ((const float *)f.tensors[1].data)[7] == 7.0f, "tensor n");
		CHECK(gguf_nelements(&f.tensors[0]) == 128 && f.mapped == 0, "elements");
		gguf_close(&f);
	}
	/* A name of exactly 63 bytes is the longest ggml takes. */
	build(&b, &L, 3, "012345678901234567890123456789012345678901234567890123456789012");
	{
		gguf_file f;
		err e = { 0 };

		CHECK(parse_copy(b.p, b.n, &e, &f) == 0, "63-byte name: %s", e.msg);
	}
	/* Extra bytes after the data section are allowed (ggml ignores them too). */
	build(&b, &L, 3, "w");
	b.n += 5;
	{
		gguf_file f;
		err e = { 0 };

		CHECK(parse_copy(b.p, b.n, &e, &f) == 0, "trailing bytes: %s", e.msg);
	}
}

/* Every prefix of the image is refused, with an offset, and nothing read past its end. */
static void test_truncated(const uint8_t *p, size_t size, const char *what)
{
	int refused = 0;

	for (int k = 0; k < 256; k++) {
		size_t n = (size_t)((uint64_t)size * (uint64_t)k / 256);
		gguf_file f;
		err e = { 0 };

		if (parse_copy(p, n, &e, &f) < 0 && strstr(e.msg, "offset ") && strstr(e.msg, "img.gguf: "))
			refused++;
		else
			CHECK(0, "%s cut at %zu of %zu: %s", what, n, size, e.set ? e.msg : "accepted");
	}
	CHECK(refused == 256, "%s: %d of 256 truncations refused", what, refused);
}

/* A file from the writer with a vocabulary-like string array and a few tensors. */
static uint8_t *writer_file(size_t *n)
{
	char path[512], tok[32];
	gguf_meta m = { 0 };
	gguf_str *toks = calloc(3000, sizeof *toks);
	gguf_tensor t[3] = {
		{ .name = "a", .type = GGUF_TYPE_Q8_0, .n_dims = 2, .ne = { 256, 16, 1, 1 } },
		{ .name = "b", .type = GGUF_TYPE_F32, .n_dims = 1, .ne = { 100, 1, 1, 1 } },
		{ .name = "c", .type = GGUF_TYPE_Q6_K, .n_dims = 2, .ne = { 256, 8, 1, 1 } },
	};
	static uint8_t zero[8192];
	err e = { 0 };
	gguf_writer *w;
	uint8_t *buf;

	for (int i = 0; i < 3000; i++) {
		toks[i].len = (uint64_t)snprintf(tok, sizeof tok, "tok%d", i);
		toks[i].ptr = strdup(tok);
	}
	gguf_meta_set_str(&m, "general.architecture", "llama");
	gguf_meta_set_arr(&m, "tokenizer.ggml.tokens", GGUF_STRING, toks, 3000);
	gguf_meta_set_u32(&m, "llama.block_count", 2);
	snprintf(path, sizeof path, "%s/w.gguf", check_tmpdir());
	w = gguf_writer_begin(path, 0, &m, t, 3, &e);
	CHECK(w && gguf_writer_write(w, zero, 16 * 272 + 400 + 8 * 210, &e) == 0 &&
	      gguf_writer_finish(w, NULL, &e) == 0, "%s", e.msg);
	for (int i = 0; i < 3000; i++)
		free(toks[i].ptr);
	free(toks);
	gguf_meta_free(&m);
	buf = (uint8_t *)check_slurp(path, n);
	CHECK(buf != NULL, "cannot read %s", path);
	return buf;
}

static void test_corrupt(void)
{
	img b;
	layout L;

#define CASE(mutation, what, at, ...) \
	do { build(&b, &L, 3, "w"); mutation; expect_fail(&b, what, at, __VA_ARGS__, NULL); } while (0)

	CASE(b.n = 0, "empty file", 0, "too short");
	CASE(memcpy(b.p, "GGML", 4), "bad magic", 0, "magic");
	CASE(put32(&b, L.version, 1), "version 1", 4, "version 1", "no longer supported");
	CASE(put32(&b, L.version, 0), "version 0", 4, "version 0 is not supported");
	CASE(put32(&b, L.version, 4), "version 4", 4, "version 4");
	CASE(put32(&b, L.version, 0x03000000), "byte-swapped version", 4, "big-endian");
	CASE(put64(&b, L.n_tensors, UINT64_MAX), "huge tensor count", 8, "tensor count");
	CASE(put64(&b, L.n_tensors, 1ull << 40), "large tensor count", 8, "tensor count");
	CASE(put64(&b, L.n_kv, UINT64_MAX), "huge metadata count", 16, "metadata count");
	CASE(put64(&b, L.n_kv, 4), "one key too few", (long)L.flag_key + 12, "tensor 'arr2'", "n_dims 7");
	CASE(put64(&b, L.arch_val, UINT64_MAX), "huge string length", (long)L.arch_val, "general.architecture",
	     "past the end");
	CASE(put32(&b, L.align_type - 0, 13), "value type 13", (long)L.align_type, "unknown value type 13");
	CASE(put32(&b, L.align_type, GGUF_I32), "alignment of type i32", (long)L.align_val, "general.alignment",
	     "must be u32");
	CASE(put32(&b, L.align_val, 0), "alignment 0", (long)L.align_val, "power of two");
	CASE(put32(&b, L.align_val, 48), "alignment 48", (long)L.align_val, "power of two");
	CASE(put32(&b, L.arr_atype, GGUF_ARRAY), "nested array", (long)L.arr_atype, "nested array");
	CASE(put32(&b, L.arr_atype, 99), "bad element type", (long)L.arr_atype, "unknown array element type 99");
	CASE(put64(&b, L.arr_n, UINT64_MAX / 2), "huge array", (long)L.arr_n, "arr1", "cannot fit");
	/* Fewer elements than bytes left, but not 4 bytes each: the bound is per element. */
	CASE(put64(&b, L.arr_n, (b.n - L.arr_n - 8) / 2), "array just too long", (long)L.arr_n, "arr1",
	     "cannot fit");
	CASE(put64(&b, L.toks_n, 1ull << 60), "huge string array", (long)L.toks_n, "toks", "cannot fit");
	CASE(put64(&b, L.toks_s1, 1000), "string element past the end", (long)L.toks_s1, "string 1 of key 'toks'",
	     "past the end");
	CASE(b.p[L.arr_key + 8] = 0xff, "key not UTF-8", (long)L.arr_key + 8, "key of metadata entry 2", "UTF-8");
	CASE((b.p[L.arr_key + 8] = 0xc1, b.p[L.arr_key + 9] = 0x81), "overlong UTF-8", (long)L.arr_key + 8, "UTF-8");
	CASE((b.p[L.arr_key + 8] = 0xed, b.p[L.arr_key + 9] = 0xa0, b.p[L.arr_key + 10] = 0x80), "surrogate",
	     (long)L.arr_key + 8, "UTF-8");
	CASE(b.p[L.arr_key + 11] = 0, "NUL in key", (long)L.arr_key + 11, "entry 2", "NUL");
	CASE(b.p[L.flag_key + 11] = '1', "duplicate key", (long)L.flag_key, "duplicate metadata key 'arr1'");
	CASE(b.p[L.flag_val] = 2, "bool 2", (long)L.flag_val, "bool value 2");
	CASE(b.p[L.t0_name + 8] = 0xfe, "tensor name not UTF-8", (long)L.t0_name + 8, "name of tensor 0", "UTF-8");
	CASE(b.p[L.t1_name + 8] = 'w', "duplicate tensor", (long)L.t1_name, "duplicate tensor name 'w'");
	CASE(put32(&b, L.t0_ndims, 5), "n_dims 5", (long)L.t0_ndims, "n_dims 5");
	CASE(put32(&b, L.t0_ndims, 0), "n_dims 0", (long)L.t0_ndims, "n_dims 0");
	CASE(put64(&b, L.t0_ne1, 0), "zero dimension", (long)L.t0_ne1, "dimension 1 is 0");
	CASE(put64(&b, L.t0_ne1, 1ull << 63), "dimension past int64", (long)L.t0_ne1, "overflows");
	CASE(put64(&b, L.t0_ne1, 1ull << 60), "element count overflow", (long)L.t0_ne1, "overflows");
	CASE(put64(&b, L.t0_ne0, 48), "row not whole blocks", (long)L.t0_ne0, "48", "not a multiple", "Q4_0", "32");
	CASE(put32(&b, L.t0_type, 4), "removed type 4", (long)L.t0_type, "unknown ggml type id 4");
	CASE(put32(&b, L.t0_type, 40), "type 40", (long)L.t0_type, "unknown ggml type id 40");
	CASE(put32(&b, L.t0_type, 0xffffffff), "type -1", (long)L.t0_type, "unknown ggml type id");
	CASE(put64(&b, L.t0_off, 32), "first offset not 0", (long)L.t0_off, "offset 32, expected 0");
	CASE(put64(&b, L.t1_off, 72), "misaligned offset", (long)L.t1_off, "offset 72, expected 96", "aligned");
	CASE(put64(&b, L.t1_off, 0), "overlapping data", (long)L.t1_off, "offset 0, expected 96");
	CASE(put64(&b, L.t1_off, 128), "gap between tensors", (long)L.t1_off, "offset 128, expected 96");
	CASE(put64(&b, L.t1_ne0, 16), "data past EOF", (long)L.t1_off, "tensor 'n'", "past the end of the file");
	CASE(b.n -= 1, "last byte missing", (long)L.t1_off, "past the end of the file");
	CASE(put64(&b, L.t0_name, 64), "long tensor name", (long)L.t0_name, "64 bytes", "63");
#undef CASE
	/* A name one byte over ggml's limit, built properly. */
	build(&b, &L, 3, "0123456789012345678901234567890123456789012345678901234567890123");
	expect_fail(&b, "64-byte name", (long)L.t0_name, "64 bytes long", NULL);
}

/* gguf_open's own failures, before any byte is parsed. */
static void test_open(void)
{
	char path[512];
	gguf_file f;
	err e = { 0 };

	CHECK(gguf_open(&f, "/nonexistent/x.gguf", &e) < 0 && strstr(e.msg, "/nonexistent/x.gguf: cannot open"),
	      "%s", e.msg);
	err_clear(&e);
	CHECK(gguf_open(&f, check_tmpdir(), &e) < 0 && strstr(e.msg, "not a regular file"), "%s", e.msg);
	snprintf(path, sizeof path, "%s/empty.gguf", check_tmpdir());
	CHECK(check_system(": > '%s'", path) == 0, "cannot make %s", path);
	err_clear(&e);
	CHECK(gguf_open(&f, path, &e) < 0 && strstr(e.msg, "empty.gguf: offset 0: file is 0 bytes"), "%s", e.msg);
	gguf_close(&f); /* harmless after a failure */
}

int main(void)
{
	img b;
	layout L;
	uint8_t *w;
	size_t n;

	test_valid();
	test_open();
	test_corrupt();
	build(&b, &L, 3, "w");
	test_truncated(b.p, b.n, "hand-built image");
	w = writer_file(&n);
	if (w) {
		gguf_file f;
		err e = { 0 };

		CHECK(parse_copy(w, n, &e, &f) == 0, "writer file: %s", e.msg);
		test_truncated(w, n, "writer file");
		free(w);
	}
	return check_done();
}
