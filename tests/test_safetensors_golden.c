/* test_safetensors_golden.c - the shared pydoc-8m checkpoint: shapes from config.json, and every
 * tensor's data against llama.cpp's own BF16 conversion (golden tensors.tsv) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "llama_expect.h"
#include "safetensors.h"

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
	pydoc8m();
	return check_done();
}
