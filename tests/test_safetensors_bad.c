/* test_safetensors_bad.c - malformed safetensors files and indexes each give a clear error;
 * a checkpoint split into shards reads back identically */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "safetensors.h"

/* A safetensors image: 8-byte length, header, data bytes (data[i] = i & 0xff). Exactly
 * sized, so a read past the end is a sanitizer report. */
static uint8_t *image(const char *header, uint64_t claimed_len, size_t data, size_t *size)
{
	size_t h = strlen(header);
	uint8_t *p = malloc(8 + h + data + 1);

	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(claimed_len >> (8 * i));
	memcpy(p + 8, header, h);
	for (size_t i = 0; i < data; i++)
		p[8 + h + i] = (uint8_t)i;
	*size = 8 + h + data;
	return p;
}

/* Parses header + data and checks the error message holds every word in want ("|"-separated). */
static void bad_len(const char *what, const char *header, uint64_t claimed, size_t data,
		    const char *want)
{
	size_t size;
	uint8_t *p = image(header, claimed, data, &size);
	char words[512], *w, *save = NULL;
	st_model m;
	err e = { 0 };
	int rc = st_parse(&m, p, size, "bad.safetensors", &e);

	CHECK(rc < 0, "%s: accepted", what);
	CHECK(strncmp(e.msg, "bad.safetensors: ", 17) == 0, "%s: message does not name the file: %s",
	      what, e.msg);
	snprintf(words, sizeof words, "%s", want);
	for (w = strtok_r(words, "|", &save); w; w = strtok_r(NULL, "|", &save))
		CHECK(strstr(e.msg, w) != NULL, "%s: message lacks \"%s\": %s", what, w, e.msg);
	if (rc == 0)
		st_close(&m);
	free(p);
}

static void bad(const char *what, const char *header, size_t data, const char *want)
{
	bad_len(what, header, strlen(header), data, want);
}

static void malformed(void)
{
	bad("empty header", "", 0, "offset 8|not a JSON object");
	bad_len("huge header length", "{}", 1ull << 62, 0, "offset 0|header length|past the end");
	bad_len("header length one past", "{}", 3, 0, "offset 0|past the end");
	bad("not an object", "[1, 2]", 0, "offset 8|not a JSON object");
	bad("bad JSON", "{\"a\": {\"dtype\": \"F32\", ", 0, "not valid JSON");
	bad("trailing garbage", "{} x", 0, "not valid JSON");
	bad("duplicate key",
	    "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},"
	    "\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, "duplicate");
	bad("entry not object", "{\"a\": 3}", 0, "offset 9: tensor \"a\"|not an object");
	bad("unknown dtype", "{\"a\":{\"dtype\":\"Q4_0\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2,
	    "offset 9: tensor \"a\"|unknown dtype \"Q4_0\"");
	bad("lower-case dtype", "{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
	    "unknown dtype");
	bad("missing dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "\"dtype\" is missing");
	bad("missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "\"shape\" is missing");
	bad("negative shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
	    "shape[0] is a negative integer");
	bad("float shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1, 2.0],\"data_offsets\":[0,8]}}", 8,
	    "shape[1] is a non-integer number");
	bad("string shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", 8,
	    "\"shape\" is a string");
	bad("too many dims",
	    "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
	    "9 dimensions");
	bad("shape overflow",
	    "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,1]}}", 1,
	    "overflows");
	bad("bytes overflow",
	    "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967295],\"data_offsets\":[0,1]}}", 1,
	    "overflows");
	bad("shape x dtype mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}",
	    8, "tensor \"a\"|3 elements of F32 make 12 bytes|span 8");
	bad("packed dtype not whole bytes",
	    "{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,1]}}", 1, "whole bytes");
	bad("offsets not a pair", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1,
	    "data_offsets");
	bad("negative offset", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", 1,
	    "non-negative");
	bad("reversed offsets", "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,2]}}", 4,
	    "end before they begin");
	bad("offsets out of file", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
	    "tensor \"a\"|past the end of the data section");
	bad("overlapping offsets",
	    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
	    "offset 120 (data offset 4)|\"b\"|overlaps tensor \"a\"");
	bad("hole", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 20,
	    "data offset 8|4 bytes no tensor covers|\"b\"");
	bad("trailing data", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 9,
	    "1 bytes after the last tensor");
	bad("metadata not strings", "{\"__metadata__\":{\"format\":1}}", 0,
	    "\"__metadata__\" value \"format\"|not a string");
	bad("metadata not object", "{\"__metadata__\":[]}", 0, "\"__metadata__\" is an array");
	/* The message points at the entry inside the header. */
	bad("offset of the entry",
	    "{\"__metadata__\":{},\"zz\":{\"dtype\":\"Q\",\"shape\":[],\"data_offsets\":[0,0]}}", 0,
	    "offset 27: tensor \"zz\"");
}

/* A good image with two dtypes the reader lists but refuses to convert, and F16/BF16 at
 * odd (unaligned) offsets. */
static void dtypes_and_alignment(void)
{
	const char *h = "{\"__metadata__\":{\"format\":\"pt\",\"k\":\"v\"},"
			"\"h\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,6]},"
			"\"b\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[6,10]},"
			"\"f\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[10,14]},"
			"\"d\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[14,22]},"
			"\"e\":{\"dtype\":\"F8_E4M3\",\"shape\":[0, 5],\"data_offsets\":[22,22]}}  ";
	/* 1.0, -2.0, 0.5 as F16; 1.0, -3.0 as BF16; 2.5 as F32; then 8 bytes of F64. */
	const uint8_t data[22] = { 0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38, 0x80, 0x3f, 0x40, 0xc0,
				   0x00, 0x00, 0x20, 0x40 };
	size_t hl = strlen(h), size = 8 + hl + sizeof data;
	uint8_t *p = malloc(size);
	float v[3];
	st_model m;
	err e = { 0 };

	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)((uint64_t)hl >> (8 * i));
	memcpy(p + 8, h, hl);
	memcpy(p + 8 + hl, data, sizeof data);
	CHECK((8 + hl) % 2 == 1, "the data section should start at an odd offset");
	if (st_parse(&m, p, size, "ok.safetensors", &e) < 0) {
		CHECK(0, "st_parse: %s", e.msg);
		free(p);
		return;
	}
	CHECK(m.n_tensors == 5, "%zu tensors", m.n_tensors);
	CHECK(strcmp(m.tensors[0].name, "b") == 0 && strcmp(m.tensors[4].name, "h") == 0, "by name");
	CHECK(m.shards[0].n_meta == 2 && strcmp(m.shards[0].meta[1].key, "k") == 0, "meta in file order");
	CHECK(st_read_f32(&m, st_find(&m, "h"), 0, 3, v, &e) == 0, "%s", e.msg);
	CHECK(v[0] == 1.0f && v[1] == -2.0f && v[2] == 0.5f, "F16 %g %g %g", v[0], v[1], v[2]);
	CHECK(st_read_rows_f32(&m, st_find(&m, "b"), 0, 1, v, &e) == 0, "%s", e.msg);
	CHECK(v[0] == 1.0f && v[1] == -3.0f, "BF16 %g %g", v[0], v[1]);
	CHECK(st_row_len(st_find(&m, "b")) == 2 && st_n_rows(st_find(&m, "b")) == 1, "rows");
	CHECK(st_read_f32(&m, st_find(&m, "f"), 0, 1, v, &e) == 0 && v[0] == 2.5f, "F32 scalar");
	CHECK(st_find(&m, "f")->ndim == 0 && st_find(&m, "f")->nelem == 1, "scalar");
	CHECK(st_find(&m, "e")->nelem == 0 && st_n_rows(st_find(&m, "e")) == 0, "empty tensor");
	CHECK(st_find(&m, "d")->dtype == ST_F64 && st_dtype(ST_F64)->bits == 64, "F64 listed");
	CHECK(st_read_f32(&m, st_find(&m, "d"), 0, 1, v, &e) < 0
	      && strstr(e.msg, "ok.safetensors: offset ") && strstr(e.msg, "\"d\" has dtype F64"),
	      "F64 refused by name: %s", e.msg);
	err_clear(&e);
	CHECK(st_read_f32(&m, st_find(&m, "e"), 0, 0, v, &e) < 0 && strstr(e.msg, "F8_E4M3"),
	      "F8 refused: %s", e.msg);
	CHECK(st_dtype_by_name("BF16") == ST_BF16 && st_dtype_by_name("bf16") == -1, "names");
	CHECK(st_dtype(-1) == NULL && st_dtype(ST_DTYPE_COUNT) == NULL, "range");
	st_close(&m);

	/* Truncated at many offsets (every byte of this small one): always an error. */
	for (size_t cut = 0; cut < size; cut++) {
		uint8_t *q = malloc(cut ? cut : 1);

		memcpy(q, p, cut);
		err_clear(&e);
		CHECK(st_parse(&m, q, cut, "cut.safetensors", &e) < 0, "cut at %zu accepted", cut);
		CHECK(strncmp(e.msg, "cut.safetensors: offset ", 24) == 0, "cut %zu: %s", cut, e.msg);
		free(q);
	}
	free(p);
}

/* The real file truncated at 256 evenly spaced offsets. */
static void truncated_real(void)
{
	const char *src = getenv("QBAKE_SOURCE");
	char path[4096];
	size_t size;
	uint8_t *full;

	snprintf(path, sizeof path, "%s/examples/pydoc-tiny/model.safetensors", src ? src : ".");
	full = (uint8_t *)check_slurp(path, &size);
	CHECK(full != NULL, "cannot read %s", path);
	if (!full)
		return;
	for (int i = 0; i < 256; i++) {
		size_t cut = i < 128 ? (size_t)i * 2400 / 128 : (size_t)((double)size * (i - 128) / 128);
		uint8_t *q = malloc(cut ? cut : 1);
		st_model m;
		err e = { 0 };

		memcpy(q, full, cut);
		CHECK(st_parse(&m, q, cut, "tiny", &e) < 0, "cut at %zu accepted", cut);
		CHECK(strncmp(e.msg, "tiny: offset ", 13) == 0, "cut %zu: %s", cut, e.msg);
		free(q);
	}
	free(full);
}

/* ---- sharded checkpoints ---- */

static void put(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");

	CHECK(f && fwrite(p, 1, n, f) == n, "write %s", path);
	if (f)
		fclose(f);
}

/* Writes tensors [from, to) of m as one shard file named name in dir; extra (may be NULL)
 * is one more tensor to put in it (a duplicate). */
static void write_shard(const st_model *m, size_t from, size_t to, const st_tensor *extra,
			const char *dir, const char *name)
{
	json_t *h = json_object();
	uint64_t at = 0;
	char path[4200], *js;
	size_t hl;
	FILE *f;

	json_object_set_new(h, "__metadata__", json_pack("{s:s}", "format", "pt"));
	for (size_t i = from; i <= to; i++) {
		const st_tensor *t = i < to ? &m->tensors[i] : extra;
		json_t *shape;

		if (!t)
			break;
		shape = json_array();
		for (uint32_t d = 0; d < t->ndim; d++)
			json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
		json_object_set_new(h, t->name, json_pack("{s:s,s:o,s:[I,I]}", "dtype",
			st_dtype(t->dtype)->name, "shape", shape, "data_offsets",
			(json_int_t)at, (json_int_t)(at + t->nbytes)));
		at += t->nbytes;
	}
	js = json_dumps(h, JSON_COMPACT);
	hl = strlen(js);
	snprintf(path, sizeof path, "%s/%s", dir, name);
	f = fopen(path, "wb");
	CHECK(f != NULL, "create %s", path);
	if (f) {
		for (int i = 0; i < 8; i++)
			fputc((int)((uint64_t)hl >> (8 * i)) & 0xff, f);
		fwrite(js, 1, hl, f);
		for (size_t i = from; i <= to; i++) {
			const st_tensor *t = i < to ? &m->tensors[i] : extra;

			if (t)
				fwrite(t->data, 1, t->nbytes, f);
		}
		fclose(f);
	}
	free(js);
	json_decref(h);
}

/* The index for the split at a and b (three shards); edit changes one thing. */
static void write_index(const st_model *m, size_t a, size_t b, const char *dir,
			void (*edit)(json_t *wm))
{
	json_t *wm = json_object(), *root;
	char path[4200], *js;

	for (size_t i = 0; i < m->n_tensors; i++)
		json_object_set_new(wm, m->tensors[i].name, json_string(
			i < a ? "model-00001-of-00003.safetensors" :
			i < b ? "model-00002-of-00003.safetensors" : "model-00003-of-00003.safetensors"));
	if (edit)
		edit(wm);
	root = json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)m->total_bytes,
			 "weight_map", wm);
	js = json_dumps(root, JSON_INDENT(2));
	snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
	put(path, js, strlen(js));
	free(js);
	json_decref(root);
}

static void edit_missing_tensor(json_t *wm)
{
	json_object_set_new(wm, "model.ghost.weight", json_string("model-00001-of-00003.safetensors"));
}

static void edit_missing_shard(json_t *wm)
{
	json_object_set_new(wm, "lm_head.weight", json_string("model-00009-of-00003.safetensors"));
}

static void edit_wrong_shard(json_t *wm)
{
	json_object_set_new(wm, "lm_head.weight", json_string("model-00002-of-00003.safetensors"));
}

static void edit_unlisted(json_t *wm)
{
	json_object_del(wm, "model.norm.weight");
}

static void edit_path(json_t *wm)
{
	json_object_set_new(wm, "lm_head.weight", json_string("../model-00001-of-00003.safetensors"));
}

static void expect_open_error(const char *dir, const char *what, const char *w1, const char *w2)
{
	st_model m;
	err e = { 0 };

	CHECK(st_open(&m, dir, &e) < 0, "%s: accepted", what);
	CHECK(strstr(e.msg, w1) != NULL, "%s: lacks \"%s\": %s", what, w1, e.msg);
	CHECK(strstr(e.msg, w2) != NULL, "%s: lacks \"%s\": %s", what, w2, e.msg);
}

static void sharded(void)
{
	const char *src = getenv("QBAKE_SOURCE");
	const char *tmp = check_tmpdir();
	char path[4096], dir[4200], idx[4300], shard[4300];
	st_model m, s;
	err e = { 0 };
	size_t a, b;

	snprintf(path, sizeof path, "%s/examples/pydoc-tiny/model.safetensors", src ? src : ".");
	if (st_open(&m, path, &e) < 0) {
		CHECK(0, "%s", e.msg);
		return;
	}
	a = m.n_tensors / 3;
	b = 2 * m.n_tensors / 3;
	snprintf(dir, sizeof dir, "%s/sharded", tmp);
	check_system("mkdir -p '%s'", dir);
	write_shard(&m, 0, a, NULL, dir, "model-00001-of-00003.safetensors");
	write_shard(&m, a, b, NULL, dir, "model-00002-of-00003.safetensors");
	write_shard(&m, b, m.n_tensors, NULL, dir, "model-00003-of-00003.safetensors");
	write_index(&m, a, b, dir, NULL);
	snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);

	for (int via_index = 0; via_index < 2; via_index++) {
		if (st_open(&s, via_index ? idx : dir, &e) < 0) {
			CHECK(0, "sharded open: %s", e.msg);
			continue;
		}
		CHECK(s.n_shards == 3 && s.index_path && strcmp(s.index_path, idx) == 0, "3 shards");
		CHECK(s.n_tensors == m.n_tensors && s.total_bytes == m.total_bytes, "%zu tensors",
		      s.n_tensors);
		for (size_t i = 0; i < m.n_tensors && i < s.n_tensors; i++) {
			const st_tensor *x = &m.tensors[i], *y = &s.tensors[i];

			CHECK(strcmp(x->name, y->name) == 0, "order %zu: %s vs %s", i, x->name, y->name);
			CHECK(y->shard == (i < a ? 0u : i < b ? 1u : 2u), "%s in shard %u", y->name, y->shard);
			CHECK(x->dtype == y->dtype && x->ndim == y->ndim
			      && memcmp(x->shape, y->shape, sizeof x->shape) == 0, "%s: type/shape", y->name);
			CHECK(x->nbytes == y->nbytes && memcmp(x->data, y->data, x->nbytes) == 0,
			      "%s: data differs", y->name);
			CHECK(st_find(&s, x->name) == y, "find %s", x->name);
		}
		st_close(&s);
	}

	/* Broken indexes and shards. */
	write_index(&m, a, b, dir, edit_missing_tensor);
	expect_open_error(dir, "index names a missing tensor", "model.safetensors.index.json: offset ",
			  "tensor \"model.ghost.weight\" in model-00001-of-00003.safetensors, but no shard holds it");
	write_index(&m, a, b, dir, edit_missing_shard);
	expect_open_error(dir, "index names a missing shard", "model.safetensors.index.json: offset ",
			  "shard model-00009-of-00003.safetensors: ");
	expect_open_error(dir, "index names a missing shard", "model-00009-of-00003.safetensors: cannot open",
			  "No such file");
	write_index(&m, a, b, dir, edit_wrong_shard);
	expect_open_error(dir, "index points at the wrong shard", "lm_head.weight",
			  "but it is in");
	write_index(&m, a, b, dir, edit_unlisted);
	expect_open_error(dir, "shard tensor not in the index", "model.norm.weight",
			  "is not in the weight_map");
	write_index(&m, a, b, dir, edit_path);
	expect_open_error(dir, "shard outside the folder", "not the file name of a shard", "lm_head");
	put(idx, "{\"weight_map\": ", 15);
	expect_open_error(dir, "index bad JSON", "model.safetensors.index.json", "not a readable JSON");
	put(idx, "", 0);
	expect_open_error(dir, "empty index", "model.safetensors.index.json: offset 0", "empty file");
	put(idx, "{\"metadata\": {}}", 16);
	expect_open_error(dir, "index without weight_map", "model.safetensors.index.json", "weight_map");

	/* The same tensor in two shards. */
	write_index(&m, a, b, dir, NULL);
	write_shard(&m, b, m.n_tensors, &m.tensors[0], dir, "model-00003-of-00003.safetensors");
	expect_open_error(dir, "duplicate across shards", m.tensors[0].name,
			  "duplicate tensor name across shards");
	/* A bad shard is named in the error. */
	snprintf(shard, sizeof shard, "%s/model-00002-of-00003.safetensors", dir);
	put(shard, "\x02\0\0\0\0\0\0\0[]", 10);
	expect_open_error(dir, "bad shard", "model-00002-of-00003.safetensors: offset 8",
			  "not a JSON object");

	/* A folder with neither file. */
	snprintf(path, sizeof path, "%s/empty", tmp);
	check_system("mkdir -p '%s'", path);
	expect_open_error(path, "empty folder", "no model.safetensors", "index.json");
	expect_open_error("/nonexistent/x.safetensors", "missing file", "/nonexistent/x.safetensors",
			  "cannot open");
	st_close(&m);
}

int main(void)
{
	malformed();
	dtypes_and_alignment();
	truncated_real();
	sharded();
	return check_done();
}
