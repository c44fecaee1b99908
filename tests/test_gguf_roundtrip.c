/* test_gguf_roundtrip.c - type table, metadata API, and write-then-read of every value and array type */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "gguf.h"

static void test_type_table(void)
{
	/* Block sizes and bytes per block from ggml's block structs (hand-counted). */
	static const struct { uint32_t id; const char *name; uint32_t blck, size; bool q; } want[] = {
		{ GGUF_TYPE_F32, "F32", 1, 4, false }, { GGUF_TYPE_F16, "F16", 1, 2, false },
		{ GGUF_TYPE_BF16, "BF16", 1, 2, false }, { GGUF_TYPE_Q4_0, "Q4_0", 32, 18, true },
		{ GGUF_TYPE_Q4_1, "Q4_1", 32, 20, true }, { GGUF_TYPE_Q5_0, "Q5_0", 32, 22, true },
		{ GGUF_TYPE_Q5_1, "Q5_1", 32, 24, true }, { GGUF_TYPE_Q8_0, "Q8_0", 32, 34, true },
		{ GGUF_TYPE_Q8_1, "Q8_1", 32, 36, true }, { GGUF_TYPE_Q2_K, "Q2_K", 256, 84, true },
		{ GGUF_TYPE_Q3_K, "Q3_K", 256, 110, true }, { GGUF_TYPE_Q4_K, "Q4_K", 256, 144, true },
		{ GGUF_TYPE_Q5_K, "Q5_K", 256, 176, true }, { GGUF_TYPE_Q6_K, "Q6_K", 256, 210, true },
		{ GGUF_TYPE_Q8_K, "Q8_K", 256, 292, true }, { GGUF_TYPE_IQ2_XXS, "IQ2_XXS", 256, 66, true },
		{ GGUF_TYPE_IQ2_XS, "IQ2_XS", 256, 74, true }, { GGUF_TYPE_IQ3_XXS, "IQ3_XXS", 256, 98, true },
		{ GGUF_TYPE_IQ1_S, "IQ1_S", 256, 50, true }, { GGUF_TYPE_IQ4_NL, "IQ4_NL", 32, 18, true },
		{ GGUF_TYPE_IQ3_S, "IQ3_S", 256, 110, true }, { GGUF_TYPE_IQ2_S, "IQ2_S", 256, 82, true },
		{ GGUF_TYPE_IQ4_XS, "IQ4_XS", 256, 136, true }, { GGUF_TYPE_I8, "I8", 1, 1, false },
		{ GGUF_TYPE_I16, "I16", 1, 2, false }, { GGUF_TYPE_I32, "I32", 1, 4, false },
		{ GGUF_TYPE_I64, "I64", 1, 8, false }, { GGUF_TYPE_F64, "F64", 1, 8, false },
		{ GGUF_TYPE_IQ1_M, "IQ1_M", 256, 56, true }, { GGUF_TYPE_TQ1_0, "TQ1_0", 256, 54, true },
		{ GGUF_TYPE_TQ2_0, "TQ2_0", 256, 66, true }, { GGUF_TYPE_MXFP4, "MXFP4", 32, 17, true },
	};
	static const uint32_t removed[] = { 4, 5, 31, 32, 33, 36, 37, 38, 40, 1000, UINT32_MAX };
	int n = 0;

	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		const gguf_type_info *t = gguf_type(want[i].id);

		CHECK(t && strcmp(t->name, want[i].name) == 0 && t->blck == want[i].blck && t->size == want[i].size &&
		      t->quantized == want[i].q, "type %u (%s)", want[i].id, want[i].name);
		CHECK(gguf_type_by_name(want[i].name) == (int)want[i].id, "by name %s", want[i].name);
	}
	for (uint32_t id = 0; id < GGUF_TYPE_COUNT; id++)
		n += gguf_type(id) != NULL;
	CHECK(n == (int)(sizeof want / sizeof want[0]), "%d types in the table", n);
	for (size_t i = 0; i < sizeof removed / sizeof removed[0]; i++)
		CHECK(gguf_type(removed[i]) == NULL, "removed id %u", removed[i]);
	CHECK(gguf_type_by_name("q4_k") == GGUF_TYPE_Q4_K && gguf_type_by_name("iq4_xs") == GGUF_TYPE_IQ4_XS,
	      "names are case-insensitive");
	CHECK(gguf_type_by_name("Q4_2") == -1 && gguf_type_by_name("") == -1, "unknown names");
	CHECK(gguf_row_size(GGUF_TYPE_Q4_K, 512) == 288, "Q4_K row of 512");
	CHECK(gguf_row_size(GGUF_TYPE_Q8_0, 4096) == 4352, "Q8_0 row of 4096");
	CHECK(gguf_row_size(GGUF_TYPE_F16, 3) == 6, "F16 row of 3");
	CHECK(gguf_row_size(GGUF_TYPE_Q4_K, 100) == 0, "Q4_K row of 100 is not whole blocks");
	CHECK(gguf_row_size(4, 32) == 0, "removed type");
	CHECK(gguf_row_size(GGUF_TYPE_F64, UINT64_MAX / 4) == 0, "overflowing row size");
}

static void test_meta_api(void)
{
	gguf_meta m = { 0 }, c = { 0 };
	uint64_t u;
	int64_t i;
	double f;
	bool b;
	const char *strs[] = { "x", "yz" };
	gguf_str arr[2] = { { 1, (char *)strs[0] }, { 2, (char *)strs[1] } };

	CHECK(gguf_meta_set_u32(&m, "a", 7) == 0 && gguf_meta_set_i32(&m, "b", -5) == 0, "set");
	CHECK(gguf_meta_set_str(&m, "c", "hello") == 0 && gguf_meta_set_u64(&m, "d", UINT64_MAX) == 0, "set");
	CHECK(gguf_meta_set_arr(&m, "e", GGUF_STRING, arr, 2) == 0, "set string array");
	/* A set on an existing key replaces it in place, whatever the new type. */
	CHECK(gguf_meta_set_f32(&m, "a", 0.5f) == 0 && gguf_meta_index(&m, "a") == 0 && m.n == 5, "replace in place");
	CHECK(gguf_meta_get_f64(&m, "a", &f) == 0 && f == 0.5, "f32 read as f64");
	CHECK(gguf_meta_get_u64(&m, "a", &u) < 0, "a float is not an integer");
	CHECK(gguf_meta_get_u64(&m, "b", &u) < 0, "negative is not u64");
	CHECK(gguf_meta_get_i64(&m, "b", &i) == 0 && i == -5, "i32 as i64");
	CHECK(gguf_meta_get_i64(&m, "d", &i) < 0, "u64 max does not fit i64");
	CHECK(gguf_meta_get_u64(&m, "d", &u) == 0 && u == UINT64_MAX, "u64");
	CHECK(gguf_meta_get_str(&m, "c") && strcmp(gguf_meta_get_str(&m, "c"), "hello") == 0, "str");
	CHECK(gguf_meta_get_str(&m, "a") == NULL && gguf_meta_get_str(&m, "zz") == NULL, "str of other type/missing");
	CHECK(gguf_meta_get_bool(&m, "a", &b) < 0, "not a bool");
	CHECK(gguf_meta_get_arr(&m, "e", GGUF_STRING) != NULL && gguf_meta_get_arr(&m, "e", GGUF_U8) == NULL,
	      "typed array");
	/* Setters copy: changing the source afterwards changes nothing. */
	arr[0].ptr = (char *)"q";
	CHECK(((gguf_str *)gguf_meta_get_arr(&m, "e", GGUF_STRING)->arr)[0].ptr[0] == 'x', "array copied");
	CHECK(gguf_meta_copy(&c, &m) == 0 && c.n == m.n, "copy");
	CHECK(gguf_meta_remove(&m, "b") == 1 && gguf_meta_remove(&m, "b") == 0 && m.n == 4, "remove");
	CHECK(gguf_meta_index(&m, "c") == 1, "order kept after remove");
	CHECK(gguf_meta_get_i64(&c, "b", &i) == 0 && i == -5, "copy is independent");
	CHECK(gguf_meta_set_bool(&c, "f", true) == 0 && gguf_meta_get_bool(&c, "f", &b) == 0 && b, "bool");
	{
		gguf_value v = { .type = GGUF_ARRAY, .atype = GGUF_ARRAY, .n = 0 };

		CHECK(gguf_meta_set_value(&c, "nested", &v) < 0, "nested array refused");
		CHECK(gguf_meta_set_scalar(&c, "x", GGUF_ARRAY, &v) < 0, "array is not a scalar");
		v.type = 13;
		CHECK(gguf_meta_set_value(&c, "bad", &v) < 0, "unknown type refused");
	}
	gguf_meta_free(&m);
	gguf_meta_free(&c);
	CHECK(m.n == 0 && m.kv == NULL, "freed");
}

/* Metadata holding every scalar type, every array type, empty arrays and odd strings. */
static void make_meta(gguf_meta *m)
{
	static const uint8_t a_u8[] = { 0, 1, 255 };
	static const int8_t a_i8[] = { -128, 0, 127 };
	static const uint16_t a_u16[] = { 0, 65535 };
	static const int16_t a_i16[] = { -32768, 32767 };
	static const uint32_t a_u32[] = { 0, 1, UINT32_MAX };
	static const int32_t a_i32[] = { INT32_MIN, -1, INT32_MAX };
	static const float a_f32[] = { 1.5f, -0.0f, 3.4e38f, 1e-45f };
	static const uint8_t a_bool[] = { 1, 0, 1 };
	static const uint64_t a_u64[] = { UINT64_MAX, 0 };
	static const int64_t a_i64[] = { INT64_MIN, INT64_MAX };
	static const double a_f64[] = { 3.141592653589793, -1e300 };
	/* String values are bytes: non-UTF-8 and embedded NULs survive (keys are checked, values not). */
	gguf_str a_str[] = { { 0, "" }, { 6, "h\xc3\xa9llo" }, { 3, "a\0b" }, { 2, "\xff\xfe" } };
	gguf_value v;

	v = (gguf_value){ .u = 255 };
	gguf_meta_set_scalar(m, "s.u8", GGUF_U8, &v);
	v = (gguf_value){ .i = -128 };
	gguf_meta_set_scalar(m, "s.i8", GGUF_I8, &v);
	v = (gguf_value){ .u = 65535 };
	gguf_meta_set_scalar(m, "s.u16", GGUF_U16, &v);
	v = (gguf_value){ .i = -32768 };
	gguf_meta_set_scalar(m, "s.i16", GGUF_I16, &v);
	gguf_meta_set_u32(m, "s.u32", UINT32_MAX);
	gguf_meta_set_i32(m, "s.i32", INT32_MIN);
	gguf_meta_set_f32(m, "s.f32", -2.75f);
	gguf_meta_set_bool(m, "s.bool.t", true);
	gguf_meta_set_bool(m, "s.bool.f", false);
	gguf_meta_set_str(m, "s.string", "caf\xc3\xa9 \xe2\x82\xac");
	gguf_meta_set_str(m, "s.empty", "");
	gguf_meta_set_u64(m, "s.u64", UINT64_MAX);
	v = (gguf_value){ .i = INT64_MIN };
	gguf_meta_set_scalar(m, "s.i64", GGUF_I64, &v);
	v = (gguf_value){ .f = 2.718281828459045 };
	gguf_meta_set_scalar(m, "s.f64", GGUF_F64, &v);
	gguf_meta_set_arr(m, "a.u8", GGUF_U8, a_u8, 3);
	gguf_meta_set_arr(m, "a.i8", GGUF_I8, a_i8, 3);
	gguf_meta_set_arr(m, "a.u16", GGUF_U16, a_u16, 2);
	gguf_meta_set_arr(m, "a.i16", GGUF_I16, a_i16, 2);
	gguf_meta_set_arr(m, "a.u32", GGUF_U32, a_u32, 3);
	gguf_meta_set_arr(m, "a.i32", GGUF_I32, a_i32, 3);
	gguf_meta_set_arr(m, "a.f32", GGUF_F32, a_f32, 4);
	gguf_meta_set_arr(m, "a.bool", GGUF_BOOL, a_bool, 3);
	gguf_meta_set_arr(m, "a.string", GGUF_STRING, a_str, 4);
	gguf_meta_set_arr(m, "a.u64", GGUF_U64, a_u64, 2);
	gguf_meta_set_arr(m, "a.i64", GGUF_I64, a_i64, 2);
	gguf_meta_set_arr(m, "a.f64", GGUF_F64, a_f64, 2);
	gguf_meta_set_arr(m, "a.empty.u32", GGUF_U32, NULL, 0);
	gguf_meta_set_arr(m, "a.empty.string", GGUF_STRING, NULL, 0);
	gguf_meta_set_str(m, "k\xc3\xa9y.utf8", "unicode key");
}

/* Values equal bit for bit (type, element type, count, contents). */
static int same_value(const gguf_value *a, const gguf_value *b)
{
	if (a->type != b->type)
		return 0;
	if (a->type == GGUF_STRING)
		return a->s.len == b->s.len && memcmp(a->s.ptr, b->s.ptr, a->s.len) == 0 && a->s.ptr[a->s.len] == 0;
	if (a->type != GGUF_ARRAY) {
		if (a->type == GGUF_F32 || a->type == GGUF_F64)
			return memcmp(&a->f, &b->f, sizeof a->f) == 0;
		return a->type == GGUF_I8 || a->type == GGUF_I16 || a->type == GGUF_I32 || a->type == GGUF_I64
			       ? a->i == b->i : a->u == b->u;
	}
	if (a->atype != b->atype || a->n != b->n || !b->arr)
		return 0;
	if (a->atype == GGUF_STRING) {
		for (uint64_t i = 0; i < a->n; i++) {
			const gguf_str *x = &((gguf_str *)a->arr)[i], *y = &((gguf_str *)b->arr)[i];

			if (x->len != y->len || memcmp(x->ptr, y->ptr, x->len) != 0 || y->ptr[y->len] != 0)
				return 0;
		}
		return 1;
	}
	static const size_t sz[] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };

	return a->n == 0 || memcmp(a->arr, b->arr, a->n * sz[a->atype]) == 0;
}

/* Tensors of several types and ranks; data is a byte pattern seeded by the index. */
static const gguf_tensor tensors[] = {
	{ .name = "t.f32", .type = GGUF_TYPE_F32, .n_dims = 1, .ne = { 3, 1, 1, 1 } },
	{ .name = "t.f16", .type = GGUF_TYPE_F16, .n_dims = 2, .ne = { 4, 2, 1, 1 } },
	{ .name = "t.q4_0", .type = GGUF_TYPE_Q4_0, .n_dims = 2, .ne = { 64, 3, 1, 1 } },
	{ .name = "t.q4_k.3d", .type = GGUF_TYPE_Q4_K, .n_dims = 3, .ne = { 256, 1, 2, 1 } },
	{ .name = "t.i8.4d", .type = GGUF_TYPE_I8, .n_dims = 4, .ne = { 5, 1, 1, 2 } },
	/* n_dims is kept as given, trailing 1s included (gguf-py writes shapes that way). */
	{ .name = "t.bf16.trailing1", .type = GGUF_TYPE_BF16, .n_dims = 2, .ne = { 7, 1, 1, 1 } },
};
#define N_TENSORS (sizeof tensors / sizeof tensors[0])
static const uint64_t tensor_bytes[N_TENSORS] = { 12, 16, 108, 288, 10, 14 };

static uint8_t pattern(size_t t, uint64_t i)
{
	return (uint8_t)(t * 31 + i * 7 + 1);
}

/* Writes meta + tensors to path with the alignment argument; data fed one byte then the rest. */
static int write_file(const char *path, uint32_t alignment, const gguf_meta *m, err *e)
{
	gguf_writer *w = gguf_writer_begin(path, alignment, m, tensors, N_TENSORS, e);

	if (!w)
		return -1;
	for (size_t t = 0; t < N_TENSORS; t++) {
		uint8_t buf[512];

		for (uint64_t i = 0; i < tensor_bytes[t]; i++)
			buf[i] = pattern(t, i);
		if (gguf_writer_write(w, buf, 1, e) < 0 || gguf_writer_write(w, buf + 1, tensor_bytes[t] - 1, e) < 0) {
			gguf_writer_abort(w);
			return -1;
		}
	}
	return gguf_writer_finish(w, NULL, e);
}

static void check_read_back(const char *path, const gguf_meta *m, uint32_t alignment, int alignment_key_added)
{
	gguf_file f;
	err e = { 0 };
	uint64_t expect = 0;
	struct stat st;

	if (gguf_open(&f, path, &e) < 0) {
		CHECK(0, "%s", e.msg);
		return;
	}
	CHECK(f.version == 3 && f.alignment == alignment, "version %u alignment %u", f.version, f.alignment);
	CHECK(f.meta.n == m->n + (size_t)alignment_key_added, "%zu keys read, %zu written", f.meta.n, m->n);
	for (size_t i = 0; i < m->n && i < f.meta.n; i++) {
		CHECK(strcmp(f.meta.kv[i].key, m->kv[i].key) == 0, "key %zu: %s vs %s", i, f.meta.kv[i].key, m->kv[i].key);
		CHECK(same_value(&m->kv[i].v, &f.meta.kv[i].v), "value of %s differs", m->kv[i].key);
	}
	if (alignment_key_added) {
		uint64_t a;

		CHECK(gguf_meta_get_u64(&f.meta, "general.alignment", &a) == 0 && a == alignment &&
		      gguf_meta_index(&f.meta, "general.alignment") == (long)m->n, "general.alignment appended");
	}
	CHECK(f.n_tensors == N_TENSORS, "%" PRIu64 " tensors", f.n_tensors);
	CHECK(f.data_offset % alignment == 0, "data section at %" PRIu64, f.data_offset);
	for (size_t t = 0; t < N_TENSORS && t < f.n_tensors; t++) {
		const gguf_tensor *r = &f.tensors[t];
		int ok = 1;

		CHECK(strcmp(r->name, tensors[t].name) == 0 && r->type == tensors[t].type &&
		      r->n_dims == tensors[t].n_dims && memcmp(r->ne, tensors[t].ne, sizeof r->ne) == 0,
		      "tensor %zu info", t);
		CHECK(r->nbytes == tensor_bytes[t] && r->offset == expect, "tensor %zu: %" PRIu64 " bytes at %" PRIu64,
		      t, r->nbytes, r->offset);
		for (uint64_t i = 0; i < r->nbytes; i++)
			ok &= ((const uint8_t *)r->data)[i] == pattern(t, i);
		CHECK(ok, "tensor %zu data", t);
		CHECK(gguf_find_tensor(&f, tensors[t].name) == r, "find %s", tensors[t].name);
		expect += (r->nbytes + alignment - 1) / alignment * alignment;
	}
	/* Padding after every tensor, the last included, as ggml and gguf-py write it. */
	CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == f.data_offset + expect, "file size %lld",
	      (long long)st.st_size);
	CHECK(gguf_find_tensor(&f, "nope") == NULL, "missing tensor");
	gguf_close(&f);
}

/* The exact bytes of a minimal file, spelled out from the GGUF spec. */
static void test_exact_bytes(const char *dir)
{
	static const uint8_t want[] = {
		'G', 'G', 'U', 'F', 3, 0, 0, 0,                 /* magic, version 3 */
		1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, /* 1 tensor, 1 key */
		1, 0, 0, 0, 0, 0, 0, 0, 'k', 5, 0, 0, 0,        /* key "k", type i32 (5) */
		0xfe, 0xff, 0xff, 0xff,                         /* -2 */
		1, 0, 0, 0, 0, 0, 0, 0, 't', 1, 0, 0, 0,        /* tensor "t", 1 dim */
		2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,             /* ne0 = 2, F16 */
		0, 0, 0, 0, 0, 0, 0, 0,                         /* offset 0 */
	};
	gguf_meta m = { 0 };
	gguf_tensor t = { .name = "t", .type = GGUF_TYPE_F16, .n_dims = 1, .ne = { 2, 1, 1, 1 } };
	char path[512];
	err e = { 0 };
	size_t n;
	uint8_t data[4] = { 0x00, 0x3c, 0x00, 0xc0 }; /* 1.0, -2.0 */
	uint8_t *got;

	snprintf(path, sizeof path, "%s/exact.gguf", dir);
	gguf_meta_set_i32(&m, "k", -2);
	{
		gguf_writer *w = gguf_writer_begin(path, 0, &m, &t, 1, &e);

		CHECK(w && gguf_writer_write(w, data, 4, &e) == 0 && gguf_writer_finish(w, NULL, &e) == 0, "%s", e.msg);
	}
	got = (uint8_t *)check_slurp(path, &n);
	/* header 24 + kv 8+1+4+4 = 17 -> 41, tensor info 8+1+4+8+4+8 = 33 -> 74, padded to 96,
	 * 4 bytes of data padded to 32. */
	CHECK(got && n == 128, "file is %zu bytes", n);
	if (got && n == 128) {
		CHECK(sizeof want == 74 && memcmp(got, want, 74) == 0, "header bytes");
		for (size_t i = 74; i < 96; i++)
			CHECK(got[i] == 0, "header padding byte %zu", i);
		CHECK(memcmp(got + 96, data, 4) == 0, "data bytes");
		for (size_t i = 100; i < 128; i++)
			CHECK(got[i] == 0, "data padding byte %zu", i);
	}
	free(got);
	gguf_meta_free(&m);
}

static int exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static void test_writer_errors(const char *dir, const gguf_meta *m)
{
	char path[512];
	err e = { 0 };
	gguf_writer *w;
	uint8_t buf[400] = { 0 };

	snprintf(path, sizeof path, "%s/bad.gguf", dir);

	/* Too few bytes: finish refuses and leaves nothing. */
	w = gguf_writer_begin(path, 0, m, tensors, N_TENSORS, &e);
	CHECK(w && gguf_writer_write(w, buf, 12, &e) == 0, "%s", e.msg);
	CHECK(gguf_writer_finish(w, NULL, &e) < 0 && strstr(e.msg, "t.f16") && strstr(e.msg, "0 of its 16"),
	      "short data: %s", e.msg);
	CHECK(!exists(path), "nothing at path after a failed finish");

	/* Too many bytes. */
	err_clear(&e);
	w = gguf_writer_begin(path, 0, m, tensors, 1, &e);
	CHECK(w && gguf_writer_write(w, buf, 13, &e) < 0 && strstr(e.msg, "more than"), "extra data: %s", e.msg);
	gguf_writer_abort(w);
	CHECK(!exists(path), "nothing at path after abort");

	/* Bad tensors and metadata are refused before anything is written. */
	{
		gguf_tensor bad[2] = { tensors[2], tensors[2] };
		gguf_meta mm = { 0 };
		gguf_value nested = { .type = GGUF_ARRAY, .atype = GGUF_ARRAY };

		err_clear(&e);
		CHECK(!gguf_writer_begin(path, 0, m, bad, 2, &e) && strstr(e.msg, "duplicate tensor"), "%s", e.msg);
		bad[1].name = "other";
		bad[1].ne[0] = 48;
		err_clear(&e);
		CHECK(!gguf_writer_begin(path, 0, m, bad, 2, &e) && strstr(e.msg, "multiple"), "%s", e.msg);
		bad[1].ne[0] = 64;
		bad[1].type = 5;
		err_clear(&e);
		CHECK(!gguf_writer_begin(path, 0, m, bad, 2, &e) && strstr(e.msg, "unknown ggml type"), "%s", e.msg);
		bad[1].type = GGUF_TYPE_Q4_0;
		bad[1].n_dims = 5;
		err_clear(&e);
		CHECK(!gguf_writer_begin(path, 0, m, bad, 2, &e) && strstr(e.msg, "n_dims"), "%s", e.msg);
		bad[1].n_dims = 2;
		bad[1].type = GGUF_TYPE_F32;
		bad[1].ne[0] = 1ull << 61; /* 2^63 bytes: no file offset can reach past it */
		bad[1].ne[1] = 1;
		err_clear(&e);
		CHECK(!gguf_writer_begin(path, 0, m, bad, 2, &e) && strstr(e.msg, "exceed 2^63"), "%s", e.msg);
		bad[1].ne[0] = 1ull << 59;
		bad[0] = bad[1];
		bad[0].name = "first"; /* 2^61 + 2^61 bytes fit; a third would not */
		err_clear(&e);
		{
			gguf_tensor three[3] = { bad[0], bad[1], bad[1] };

			three[2].name = "third";
			three[2].ne[1] = 2;
			CHECK(!gguf_writer_begin(path, 0, m, three, 3, &e) && strstr(e.msg, "'third'") &&
			      strstr(e.msg, "exceed 2^63"), "%s", e.msg);
		}
		bad[0] = tensors[2];
		bad[1] = tensors[2];
		bad[1].name = "0123456789012345678901234567890123456789012345678901234567890123"; /* 64 bytes */
		err_clear(&e);
		CHECK(!gguf_writer_begin(path, 0, m, bad, 2, &e) && strstr(e.msg, "longer than 63"), "%s", e.msg);
		err_clear(&e);
		CHECK(!gguf_writer_begin(path, 48, m, tensors, 1, &e) && strstr(e.msg, "power of two"), "%s", e.msg);
		gguf_meta_set_u32(&mm, "general.alignment", 64);
		err_clear(&e);
		CHECK(!gguf_writer_begin(path, 32, &mm, tensors, 1, &e) && strstr(e.msg, "general.alignment says 64"),
		      "%s", e.msg);
		/* Hand-built metadata can hold what the setters refuse. */
		gguf_meta_set_u32(&mm, "x", 1);
		mm.kv[1].v = nested;
		err_clear(&e);
		CHECK(!gguf_writer_begin(path, 0, &mm, tensors, 1, &e) && strstr(e.msg, "array element type"), "%s",
		      e.msg);
		mm.kv[1].v = (gguf_value){ .type = GGUF_U32, .u = 64 };
		free(mm.kv[1].key);
		mm.kv[1].key = strdup("general.alignment");
		err_clear(&e);
		CHECK(!gguf_writer_begin(path, 0, &mm, tensors, 1, &e) && strstr(e.msg, "duplicate metadata key"), "%s",
		      e.msg);
		free(mm.kv[1].key);
		mm.kv[1].key = strdup("bad\xff");
		err_clear(&e);
		CHECK(!gguf_writer_begin(path, 0, &mm, tensors, 1, &e) && strstr(e.msg, "UTF-8"), "%s", e.msg);
		gguf_meta_free(&mm);
	}
	CHECK(!exists(path), "nothing at path");
	CHECK(check_system("test -z \"$(ls -A '%s' | grep qbake-tmp)\"", dir) == 0, "temp file left behind");
}

int main(void)
{
	const char *dir = check_tmpdir();
	gguf_meta m = { 0 }, m16 = { 0 };
	char path[512];
	err e = { 0 };

	test_type_table();
	test_meta_api();
	make_meta(&m);
	CHECK(m.n == 29, "%zu keys made", m.n);

	snprintf(path, sizeof path, "%s/all.gguf", dir);
	CHECK(write_file(path, 0, &m, &e) == 0, "%s", e.msg);
	check_read_back(path, &m, 32, 0);

	/* Any alignment: an explicit one is recorded as general.alignment ... */
	snprintf(path, sizeof path, "%s/a64.gguf", dir);
	err_clear(&e);
	CHECK(write_file(path, 64, &m, &e) == 0, "%s", e.msg);
	check_read_back(path, &m, 64, 1);
	/* ... and one given by the key is used. */
	gguf_meta_copy(&m16, &m);
	gguf_meta_set_u32(&m16, "general.alignment", 1);
	snprintf(path, sizeof path, "%s/a1.gguf", dir);
	err_clear(&e);
	CHECK(write_file(path, 0, &m16, &e) == 0, "%s", e.msg);
	check_read_back(path, &m16, 1, 0);

	test_exact_bytes(dir);
	test_writer_errors(dir, &m);
	gguf_meta_free(&m);
	gguf_meta_free(&m16);
	return check_done();
}
