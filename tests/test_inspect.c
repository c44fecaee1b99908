/* test_inspect.c - `qbake inspect` run as a program: its JSON read back and checked against
 * config.json, llama.cpp's tensors.tsv and the golden files' known facts; bad input exits 2 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static const char *bin(void)
{
	const char *b = getenv("QBAKE_BIN");

	return b ? b : "build/qbake";
}

/* Runs `qbake inspect ARGS`, stdout and stderr to files; returns the exit status. */
static int run(const char *args, char **out, char **errs)
{
	const char *tmp = check_tmpdir();
	char o[4200], e[4200];
	int rc;

	snprintf(o, sizeof o, "%s/out", tmp);
	snprintf(e, sizeof e, "%s/err", tmp);
	rc = check_system("'%s' inspect %s >'%s' 2>'%s'", bin(), args, o, e);
	*out = check_slurp(o, NULL);
	*errs = check_slurp(e, NULL);
	CHECK(*out && *errs, "cannot read the command's output");
	if (!*out)
		*out = strdup("");
	if (!*errs)
		*errs = strdup("");
	return rc;
}

/* `inspect --json PATH`, parsed; NULL (after a failed check) when it did not work. */
static json_t *report(const char *path)
{
	char args[4200], *out, *errs;
	json_t *r = NULL;
	json_error_t je;
	int rc;

	snprintf(args, sizeof args, "--json '%s'", path);
	rc = run(args, &out, &errs);
	CHECK(rc == 0, "inspect --json %s: exit %d: %s", path, rc, errs ? errs : "");
	if (rc == 0 && out) {
		r = json_loads(out, 0, &je);
		CHECK(r != NULL, "%s: output is not JSON: %s", path, je.text);
	}
	free(out);
	free(errs);
	return r;
}

static long long num(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);

	CHECK(json_is_integer(v), "no integer \"%s\"", key);
	return json_integer_value(v);
}

static const json_t *tensor(const json_t *r, const char *name)
{
	size_t i;
	const json_t *t;

	json_array_foreach(json_object_get(r, "tensors"), i, t)
		if (strcmp(json_string_value(json_object_get(t, "name")), name) == 0)
			return t;
	CHECK(0, "tensor %s not in the report", name);
	return NULL;
}

static int shape_is(const json_t *t, long long a, long long b)
{
	const json_t *s = json_object_get(t, "shape");

	return json_array_size(s) == 2 && json_integer_value(json_array_get(s, 0)) == a
	       && json_integer_value(json_array_get(s, 1)) == b;
}

static void tiny(void)
{
	const char *src = getenv("QBAKE_SOURCE");
	char dir[4096], args[4200], *out, *errs;
	const json_t *cfg, *t, *h;
	json_t *r;
	int rc;

	snprintf(dir, sizeof dir, "%s/examples/pydoc-tiny", src ? src : ".");
	/* The README's first command, in text. */
	snprintf(args, sizeof args, "'%s'", dir);
	rc = run(args, &out, &errs);
	CHECK(rc == 0, "inspect %s: exit %d: %s", dir, rc, errs);
	CHECK(out && strstr(out, "model.layers.1.mlp.down_proj.weight") && strstr(out, "quantized:   no")
	      && strstr(out, "num_hidden_layers"), "text report: %s", out);
	CHECK(errs && errs[0] == 0, "stderr not empty: %s", errs);
	free(out);
	free(errs);

	r = report(dir);
	if (!r)
		return;
	CHECK(strcmp(json_string_value(json_object_get(r, "format")), "hf-folder") == 0, "format");
	cfg = json_object_get(r, "config");
	/* config.json says 2 layers of 9 tensors, plus embeddings, norm and head. */
	CHECK(num(cfg, "num_hidden_layers") == 2, "layers");
	CHECK(num(r, "n_tensors") == 3 + 9 * num(cfg, "num_hidden_layers"), "n_tensors");
	CHECK(json_is_false(json_object_get(r, "quantized")), "not quantized");
	CHECK(json_is_null(json_object_get(r, "file_type")), "no file type");
	CHECK(json_real_value(json_object_get(r, "bits_per_weight")) == 16.0, "16 bits per weight");
	t = tensor(r, "lm_head.weight");
	CHECK(t && shape_is(t, num(cfg, "vocab_size"), num(cfg, "hidden_size")), "lm_head shape");
	CHECK(t && num(t, "bytes") == 1024 * 256 * 2, "lm_head bytes");
	h = json_array_get(json_object_get(r, "histogram"), 0);
	CHECK(json_array_size(json_object_get(r, "histogram")) == 1
	      && strcmp(json_string_value(json_object_get(h, "type")), "BF16") == 0
	      && num(h, "tensors") == 21 && num(h, "bytes") == 4196864, "histogram");
	CHECK(strcmp(json_string_value(json_object_get(json_object_get(json_object_get(r, "metadata"),
		"format"), "value")), "pt") == 0, "__metadata__ format");
	json_decref(r);
}

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

static void expect_fail(const char *args, int want, const char *w1, const char *w2)
{
	char *out, *errs;
	int rc = run(args, &out, &errs);

	CHECK(rc == want, "inspect %s: exit %d, want %d", args, rc, want);
	CHECK(strncmp(errs, "qbake: ", 7) == 0 && strstr(errs, w1) && strstr(errs, w2),
	      "inspect %s: stderr: %s", args, errs);
	CHECK(strchr(errs, '\n') == errs + strlen(errs) - 1, "one line: %s", errs);
	CHECK(out[0] == 0, "inspect %s: printed a report: %.200s", args, out);
	free(out);
	free(errs);
}

static void bad_input(void)
{
	const char *tmp = check_tmpdir();
	const char *src = getenv("QBAKE_SOURCE");
	char path[4200], args[8500], *out, *errs;

	snprintf(path, sizeof path, "%s/cut.gguf", tmp);
	check_system("head -c 3000 '%s/examples/pydoc-tiny/model.safetensors' > '%s'",
		     src ? src : ".", path);
	snprintf(args, sizeof args, "'%s'", path);
	expect_fail(args, 2, "cut.gguf: offset 40: tensor", "past the end of the data section");
	snprintf(path, sizeof path, "%s/trunc.gguf", tmp);
	check_system("printf 'GGUF\\003\\000\\000\\000' > '%s'", path);
	snprintf(args, sizeof args, "--json '%s'", path);
	expect_fail(args, 2, "trunc.gguf", "offset");
	expect_fail("/nonexistent/model.gguf", 2, "/nonexistent/model.gguf", "cannot open");
	snprintf(args, sizeof args, "'%s'", tmp);
	expect_fail(args, 2, tmp, "no model.safetensors");
	expect_fail("", 2, "missing PATH", "help inspect");
	expect_fail("--frobnicate x", 2, "unknown option --frobnicate", "help inspect");
	expect_fail("a b", 2, "one PATH", "help inspect");

	CHECK(run("--help", &out, &errs) == 0 && out && strstr(out, "exit codes")
	      && strstr(out, "--json"), "--help: %s", out);
	free(out);
	free(errs);
}

int main(void)
{
	tiny();
	bad_input();
	golden();
	return check_done();
}
