/* test_safetensors.c - reading the bundled checkpoint: names, dtypes and shapes from config.json,
 * data against hashes computed independently (python3 json + hashlib over the same file) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "llama_expect.h"
#include "safetensors.h"

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

int main(void)
{
	tiny();
	return check_done();
}
