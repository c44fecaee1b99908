/* test_safetensors.c - reading the real checkpoints: names, dtypes and shapes from config.json,
 * data against hashes computed independently (python3 hashlib) and against llama.cpp's BF16 GGUF */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "safetensors.h"
#include "sha256.h"

/* The model dimensions config.json states. */
typedef struct dims {
	long layers, hidden, ffn, heads, kv_heads, head_dim, vocab;
} dims;

static long cfg_int(json_t *cfg, const char *key)
{
	json_t *v = json_object_get(cfg, key);

	CHECK(json_is_integer(v), "config.json has no integer %s", key);
	return json_is_integer(v) ? (long)json_integer_value(v) : -1;
}

static dims read_config(const char *dir)
{
	char path[4096];
	json_error_t je;
	json_t *cfg;
	dims d = { 0 };

	snprintf(path, sizeof path, "%s/config.json", dir);
	cfg = json_load_file(path, 0, &je);
	CHECK(cfg != NULL, "%s: %s", path, je.text);
	if (!cfg)
		return d;
	d.layers = cfg_int(cfg, "num_hidden_layers");
	d.hidden = cfg_int(cfg, "hidden_size");
	d.ffn = cfg_int(cfg, "intermediate_size");
	d.heads = cfg_int(cfg, "num_attention_heads");
	d.kv_heads = cfg_int(cfg, "num_key_value_heads");
	d.head_dim = cfg_int(cfg, "head_dim");
	d.vocab = cfg_int(cfg, "vocab_size");
	json_decref(cfg);
	return d;
}

static void expect(const st_model *m, const char *name, long a, long b)
{
	const st_tensor *t = st_find(m, name);

	CHECK(t != NULL, "%s: missing tensor %s", m->path, name);
	if (!t)
		return;
	CHECK(t->dtype == ST_BF16, "%s: dtype %s", name, st_dtype(t->dtype)->name);
	CHECK(t->ndim == (b ? 2u : 1u), "%s: ndim %u", name, t->ndim);
	CHECK(t->shape[0] == (uint64_t)a, "%s: shape[0] %llu, want %ld", name,
	      (unsigned long long)t->shape[0], a);
	if (b)
		CHECK(t->shape[1] == (uint64_t)b, "%s: shape[1] %llu, want %ld", name,
		      (unsigned long long)t->shape[1], b);
	CHECK(t->nbytes == t->nelem * 2, "%s: nbytes", name);
}

/* Every tensor a Llama checkpoint of these dimensions must hold, with its shape, and no other. */
static void check_llama(const st_model *m, dims d)
{
	char n[256];
	long q = d.heads * d.head_dim, kv = d.kv_heads * d.head_dim;

	CHECK(m->n_tensors == (size_t)(3 + 9 * d.layers), "%s: %zu tensors", m->path, m->n_tensors);
	expect(m, "model.embed_tokens.weight", d.vocab, d.hidden);
	expect(m, "lm_head.weight", d.vocab, d.hidden);
	expect(m, "model.norm.weight", d.hidden, 0);
	for (long i = 0; i < d.layers; i++) {
#define L(suffix, a, b) (snprintf(n, sizeof n, "model.layers.%ld." suffix, i), expect(m, n, a, b))
		L("input_layernorm.weight", d.hidden, 0);
		L("post_attention_layernorm.weight", d.hidden, 0);
		L("self_attn.q_proj.weight", q, d.hidden);
		L("self_attn.k_proj.weight", kv, d.hidden);
		L("self_attn.v_proj.weight", kv, d.hidden);
		L("self_attn.o_proj.weight", d.hidden, q);
		L("mlp.gate_proj.weight", d.ffn, d.hidden);
		L("mlp.up_proj.weight", d.ffn, d.hidden);
		L("mlp.down_proj.weight", d.hidden, d.ffn);
#undef L
	}
	/* The documented order: one shard, by name; offsets inside the file. */
	for (size_t i = 1; i < m->n_tensors; i++)
		CHECK(strcmp(m->tensors[i - 1].name, m->tensors[i].name) < 0, "order at %zu", i);
	for (size_t i = 0; i < m->n_tensors; i++)
		CHECK(m->tensors[i].offset + m->tensors[i].nbytes <= m->shards[0].size, "bounds");
}

static void hex_of(const void *p, size_t n, char hex[65])
{
	uint8_t d[32];

	sha256_buf(p, n, d);
	sha256_hex(d, hex);
}

static void check_hash(const st_model *m, const char *name, const char *want)
{
	const st_tensor *t = st_find(m, name);
	char hex[65];

	CHECK(t != NULL, "missing %s", name);
	if (!t)
		return;
	hex_of(t->data, t->nbytes, hex);
	CHECK(strcmp(hex, want) == 0, "%s: sha256 %s, want %s", name, hex, want);
}

/* pydoc-tiny, bundled with the repo; hashes from python3 (json + hashlib) over the file. */
static void tiny(void)
{
	const char *src = getenv("QBAKE_SOURCE");
	char dir[4096], file[4200], hex[65];
	st_model m, m2;
	err e = { 0 };
	dims d;

	snprintf(dir, sizeof dir, "%s/examples/pydoc-tiny", src ? src : ".");
	snprintf(file, sizeof file, "%s/model.safetensors", dir);
	d = read_config(dir);
	CHECK(d.layers == 2 && d.vocab == 1024, "tiny config: %ld layers, vocab %ld", d.layers, d.vocab);
	if (st_open(&m, file, &e) < 0) {
		CHECK(0, "st_open: %s", e.msg);
		return;
	}
	check_llama(&m, d);
	CHECK(m.n_shards == 1 && m.index_path == NULL, "one shard");
	CHECK(m.shards[0].header_len == 2232, "header_len %llu", (unsigned long long)m.shards[0].header_len);
	CHECK(m.total_bytes == 4196864, "total %llu", (unsigned long long)m.total_bytes);
	CHECK(st_meta_get(&m, "format") && strcmp(st_meta_get(&m, "format"), "pt") == 0, "format=pt");
	CHECK(st_meta_get(&m, "nope") == NULL, "absent key");
	CHECK(st_find(&m, "nope") == NULL, "absent tensor");
	hex_of(m.shards[0].map + m.shards[0].data_start, m.shards[0].size - m.shards[0].data_start, hex);
	CHECK(strcmp(hex, "ef33a32973e83afcd7c4bd531b216dae941390aa28686d44ae6efcf1938ac148") == 0,
	      "data section sha256 %s", hex);
	check_hash(&m, "model.layers.1.self_attn.q_proj.weight",
		   "7fb720b8019e17d19d00277a7006e2d61412a638d2d41c3c525b4dbb255b291c");
	check_hash(&m, "model.layers.0.self_attn.k_proj.weight",
		   "f18dbfe206b083698740b82f01cf3fdbdb77fadb029ea0037c3b0ab39cdfb4ef");
	check_hash(&m, "model.norm.weight",
		   "ced84f5dce0df9f1bf0cff0fed8d4ae9268fa38d38d9a166e5f1d8b6f90e8277");
	check_hash(&m, "lm_head.weight",
		   "0064a57942cb56cade9c2e78a05dbfc4e5a76d4e3dd777ce9b99ddb03a03bb55");

	/* BF16 -> f32: python widened model.norm.weight and summed it to 331.578125 exactly
	 * (256 values with 8-bit mantissas: the sum is exact in a double). */
	{
		const st_tensor *t = st_find(&m, "model.norm.weight");
		float v[256];
		double sum = 0;

		if (t && st_read_f32(&m, t, 0, 256, v, &e) == 0) {
			for (int i = 0; i < 256; i++)
				sum += v[i];
			CHECK(sum == 331.578125, "sum %.9g", sum);
			CHECK(v[0] == 1.3203125f && v[2] == 1.2421875f, "v0 %g v2 %g", v[0], v[2]);
			hex_of(v, sizeof v, hex);
			CHECK(strcmp(hex, "489be57ba70602db86e53b64e7c2c0e3894b5714ac15b3d8150864c5ab4a2111") == 0,
			      "f32 sha %s", hex);
		} else {
			CHECK(0, "read norm: %s", e.msg);
		}
		CHECK(t && st_read_f32(&m, t, 250, 7, v, &e) < 0 && strstr(e.msg, "outside"),
		      "range past the end refused: %s", e.msg);
		err_clear(&e);
	}
	/* Rows: row 3 of lm_head read by rows equals the same elements read by range. */
	{
		const st_tensor *t = st_find(&m, "lm_head.weight");
		float a[512], b[512];

		CHECK(st_row_len(t) == 256 && st_n_rows(t) == 1024, "rows");
		CHECK(st_read_rows_f32(&m, t, 3, 2, a, &e) == 0, "%s", e.msg);
		CHECK(st_read_f32(&m, t, 3 * 256, 512, b, &e) == 0, "%s", e.msg);
		CHECK(memcmp(a, b, sizeof a) == 0, "rows = range");
	}
	/* The folder opens the same file. */
	if (st_open(&m2, dir, &e) == 0) {
		CHECK(m2.n_tensors == m.n_tensors, "folder: %zu tensors", m2.n_tensors);
		CHECK(strcmp(m2.shards[0].path, file) == 0, "folder shard %s", m2.shards[0].path);
		st_close(&m2);
	} else {
		CHECK(0, "st_open folder: %s", e.msg);
	}
	st_close(&m);
	st_close(&m); /* closing twice is harmless */
}

/* HF name -> llama.cpp GGUF name (the part of the converter's table this model uses). */
static int gguf_name(const char *hf, char *out, size_t n)
{
	static const char *map[][2] = {
		{ "input_layernorm.weight", "attn_norm.weight" },
		{ "post_attention_layernorm.weight", "ffn_norm.weight" },
		{ "self_attn.q_proj.weight", "attn_q.weight" },
		{ "self_attn.k_proj.weight", "attn_k.weight" },
		{ "self_attn.v_proj.weight", "attn_v.weight" },
		{ "self_attn.o_proj.weight", "attn_output.weight" },
		{ "mlp.gate_proj.weight", "ffn_gate.weight" },
		{ "mlp.up_proj.weight", "ffn_up.weight" },
		{ "mlp.down_proj.weight", "ffn_down.weight" },
	};
	int layer, used = 0;

	if (strcmp(hf, "lm_head.weight") == 0)
		return snprintf(out, n, "output.weight"), 0;
	if (strcmp(hf, "model.embed_tokens.weight") == 0)
		return snprintf(out, n, "token_embd.weight"), 0;
	if (strcmp(hf, "model.norm.weight") == 0)
		return snprintf(out, n, "output_norm.weight"), 0;
	if (sscanf(hf, "model.layers.%d.%n", &layer, &used) != 1 || used == 0)
		return -1;
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (strcmp(hf + used, map[i][0]) == 0)
			return snprintf(out, n, "blk.%d.%s", layer, map[i][1]), 0;
	return -1;
}

/* pydoc-8m against llama.cpp's own BF16 conversion (tensors.tsv): the converter copies
 * BF16 matrices byte for byte, except attn_q/attn_k which it permutes for RoPE, and widens
 * the 1-D norms to F32, which st_read_f32 must reproduce exactly. */
static void pydoc8m(void)
{
	char *dir = check_shared_path("fixtures/pydoc-8m");
	char *file = check_shared_path("fixtures/pydoc-8m/model.safetensors");
	char *tsv_path = check_shared_path("golden/pydoc-8m/tensors.tsv");
	char *tsv = check_slurp(tsv_path, NULL);
	int same_bytes = 0, same_f32 = 0, permuted = 0;
	st_model m;
	err e = { 0 };

	CHECK(tsv != NULL, "cannot read %s", tsv_path);
	if (!tsv || st_open(&m, file, &e) < 0) {
		CHECK(!tsv, "st_open: %s", e.msg);
		goto out;
	}
	check_llama(&m, read_config(dir));
	for (size_t i = 0; i < m.n_tensors; i++) {
		const st_tensor *t = &m.tensors[i];
		char g[256], key[512], type[16], shape[64], want[65], hex[65];
		char *line;

		CHECK(gguf_name(t->name, g, sizeof g) == 0, "unexpected tensor %s", t->name);
		snprintf(key, sizeof key, "\npydoc-8m-BF16.gguf\t%s\t", g);
		line = strstr(tsv, key);
		CHECK(line != NULL, "%s (%s) not in tensors.tsv", t->name, g);
		if (!line || sscanf(line + strlen(key), "%15s %63s %64s", type, shape, want) != 3)
			continue;
		if (strstr(g, "attn_q") || strstr(g, "attn_k")) {
			permuted++;
			continue;
		}
		if (strcmp(type, "BF16") == 0) {
			char s[64];

			snprintf(s, sizeof s, "%llux%llu", (unsigned long long)t->shape[1],
				 (unsigned long long)t->shape[0]);
			CHECK(strcmp(s, shape) == 0, "%s: shape %s vs GGUF %s", t->name, s, shape);
			hex_of(t->data, t->nbytes, hex);
			CHECK(strcmp(hex, want) == 0, "%s: bytes differ from %s", t->name, g);
			same_bytes++;
		} else if (strcmp(type, "F32") == 0) {
			float *v = malloc(t->nelem * sizeof *v);

			CHECK(v && st_read_f32(&m, t, 0, t->nelem, v, &e) == 0, "%s: %s", t->name, e.msg);
			if (v)
				hex_of(v, t->nelem * sizeof *v, hex);
			CHECK(v && strcmp(hex, want) == 0, "%s: f32 widening differs from %s", t->name, g);
			free(v);
			same_f32++;
		}
	}
	CHECK(same_bytes == 42 && same_f32 == 17 && permuted == 16,
	      "compared %d BF16, %d F32, skipped %d", same_bytes, same_f32, permuted);
	st_close(&m);
out:
	free(tsv);
	free(tsv_path);
	free(file);
	free(dir);
}

int main(void)
{
	tiny();
	pydoc8m();
	return check_done();
}
