/* llama_expect.h - test support: what a Llama checkpoint must hold, from its config.json
 * (static functions shared by the safetensors tests; not a module) */
#ifndef QBAKE_TEST_LLAMA_EXPECT_H
#define QBAKE_TEST_LLAMA_EXPECT_H

#include <jansson.h>
#include <stdio.h>
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
	char path[4300];
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

#endif
