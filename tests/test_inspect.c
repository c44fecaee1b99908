/* test_inspect.c - `qbake inspect` run as a program on the bundled model: its JSON read back and
 * checked against config.json; bad input and bad usage exit 2 with one clear message */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "inspect_run.h"

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
	return check_done();
}
