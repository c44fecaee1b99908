/* test_inspect_golden.c - `qbake inspect --json` on llama.cpp's golden GGUFs and the pydoc-8m
 * checkpoint: file types, quantized, imatrix keys, and every tensor against tensors.tsv */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "inspect_run.h"

/* Every tensor's type and shape as llama.cpp's tensors.tsv lists them for file. */
static void against_tsv(const json_t *r, const char *tsv, const char *file)
{
	size_t i, seen = 0;
	const json_t *t;
	char key[512];
	const char *p;

	json_array_foreach(json_object_get(r, "tensors"), i, t) {
		const json_t *s = json_object_get(t, "shape");
		char shape[128] = "", type[16], want[128];
		size_t n = 0, d;
		const json_t *x;

		json_array_foreach(s, d, x)
			n += (size_t)snprintf(shape + n, sizeof shape - n, "%s%lld", d ? "x" : "",
					      (long long)json_integer_value(x));
		snprintf(key, sizeof key, "\n%s\t%s\t", file,
			 json_string_value(json_object_get(t, "name")));
		p = strstr(tsv, key);
		CHECK(p != NULL, "%s: %s not in tensors.tsv", file, key + 1);
		if (!p || sscanf(p + strlen(key), "%15s %127s", type, want) != 2)
			continue;
		CHECK(strcmp(type, json_string_value(json_object_get(t, "type"))) == 0,
		      "%s: %s type", file, key + 1);
		CHECK(strcmp(want, shape) == 0, "%s: %s shape %s, want %s", file, key + 1, shape, want);
		seen++;
	}
	CHECK(seen == 75, "%s: %zu tensors matched", file, seen);
}

static void golden(void)
{
	char *g = check_shared_path("golden/pydoc-8m");
	char *tsvp = check_shared_path("golden/pydoc-8m/tensors.tsv");
	char *tsv = check_slurp(tsvp, NULL);
	char path[4200];
	const json_t *m, *v, *ft;
	json_t *r;

	CHECK(tsv != NULL, "read %s", tsvp);
	if (!tsv)
		goto out;

	snprintf(path, sizeof path, "%s/pydoc-8m-F16.gguf", g);
	if ((r = report(path))) {
		ft = json_object_get(r, "file_type");
		CHECK(strcmp(json_string_value(json_object_get(ft, "name")), "MOSTLY_F16") == 0
		      && num(ft, "id") == 1, "F16 file type");
		CHECK(json_is_false(json_object_get(r, "quantized")), "F16 not quantized");
		CHECK(num(r, "n_tensors") == 75 && num(r, "gguf_version") == 3, "F16 counts");
		CHECK(num(r, "elements") == 8392960, "F16 weights %lld", num(r, "elements"));
		m = json_object_get(r, "metadata");
		v = json_object_get(m, "tokenizer.ggml.tokens");
		CHECK(num(v, "count") == 4096 && json_array_size(json_object_get(v, "first")) == 8
		      && strcmp(json_string_value(json_array_get(json_object_get(v, "first"), 1)), "<s>") == 0,
		      "tokens summarised");
		v = json_object_get(m, "llama.attention.layer_norm_rms_epsilon");
		CHECK(v && strcmp(json_string_value(json_object_get(v, "type")), "f32") == 0
		      && json_real_value(json_object_get(v, "value")) == 1e-05, "rms eps as 1e-05");
		CHECK(strcmp(json_string_value(json_object_get(json_object_get(m, "general.architecture"),
			"value")), "llama") == 0, "architecture");
		CHECK(json_object_size(json_object_get(r, "imatrix")) == 0, "no imatrix keys");
		against_tsv(r, tsv, "pydoc-8m-F16.gguf");
		json_decref(r);
	}

	snprintf(path, sizeof path, "%s/quant/pydoc-8m-Q4_0.gguf", g);
	if ((r = report(path))) {
		ft = json_object_get(r, "file_type");
		CHECK(strcmp(json_string_value(json_object_get(ft, "tier")), "Q4_0") == 0, "Q4_0 tier");
		CHECK(json_is_true(json_object_get(r, "quantized")), "Q4_0 quantized");
		against_tsv(r, tsv, "quant/pydoc-8m-Q4_0.gguf");
		json_decref(r);
	}

	snprintf(path, sizeof path, "%s/quant/pydoc-8m-Q4_K_M-imat.gguf", g);
	if ((r = report(path))) {
		const json_t *im = json_object_get(r, "imatrix");

		ft = json_object_get(r, "file_type");
		CHECK(strcmp(json_string_value(json_object_get(ft, "name")), "MOSTLY_Q4_K_M") == 0
		      && num(ft, "id") == 15, "Q4_K_M file type");
		CHECK(json_object_size(im) == 4, "%zu imatrix keys", json_object_size(im));
		CHECK(strcmp(json_string_value(json_object_get(json_object_get(im, "quantize.imatrix.file"),
			"value")), "imatrix.gguf") == 0, "imatrix file");
		CHECK(num(json_object_get(im, "quantize.imatrix.chunks_count"), "value") == 64, "chunks");
		CHECK(json_object_size(json_object_get(r, "provenance")) == 0, "no qbake keys");
		against_tsv(r, tsv, "quant/pydoc-8m-Q4_K_M-imat.gguf");
		json_decref(r);
	}

	/* The safetensors the GGUFs came from: the same number of weights. */
	snprintf(path, sizeof path, "%s/../../fixtures/pydoc-8m/model.safetensors", g);
	if ((r = report(path))) {
		CHECK(strcmp(json_string_value(json_object_get(r, "format")), "safetensors") == 0, "fmt");
		CHECK(num(r, "n_tensors") == 75 && num(r, "elements") == 8392960, "safetensors counts");
		CHECK(shape_is(tensor(r, "model.layers.0.self_attn.k_proj.weight"), 128, 256), "k shape");
		json_decref(r);
	}
out:
	free(tsv);
	free(tsvp);
	free(g);
}

int main(void)
{
	golden();
	return check_done();
}
