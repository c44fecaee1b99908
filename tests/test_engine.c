/* test_engine.c - incremental builds: which steps run after which change, and the rules */
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "build.h"
#include "gguf.h"
#include "half.h"
#include "quant.h"
#include "check.h"
#include "graph.h"
#include "recipe.h"
#include "store.h"

static char cache[1024], dir[1024], out[1024], model[1024];

static void write_file(const char *name, const char *text)
{
	char path[2048];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(1);
	}
	fputs(text, f);
	fclose(f);
}

/* Writes recipe.lua: the bundled tiny model, the given tiers and extra fields. */
static void write_recipe(const char *tiers, const char *extra)
{
	char text[4096];

	snprintf(text, sizeof text,
		 "-- a test recipe\n"
		 "release \"tiny\" {\n"
		 "  model = hf { path = \"%s\" },\n"
		 "  baseline = \"f16\",\n"
		 "  tiers = { %s },\n"
		 "%s"
		 "}\n",
		 model, tiers, extra);
	write_file("recipe.lua", text);
}

/* Builds recipe.lua; returns 0 or -1, with what ran in res. */
static int build(build_result *res, err *e)
{
	char path[2048];
	build_opts o = { .jobs = 2, .threads = 2, .quiet = 1, .out = out };
	recipe *r;
	store s;
	graph g;
	int rc = -1;

	memset(res, 0, sizeof *res);
	snprintf(path, sizeof path, "%s/recipe.lua", dir);
	if (!(r = recipe_load(path, NULL, e)))
		return -1;
	if (store_open(&s, cache, e) == 0) {
		s.racy_ns = 0; /* the test changes files faster than any clock tick */
		if (graph_new(&g, r, e) == 0) {
			if (graph_hash_inputs(&g, &s, e) == 0)
				rc = build_run(&g, &s, &o, res, e);
			graph_free(&g);
		}
		store_close(&s);
	}
	recipe_free(r);
	return rc;
}

static char *slurp_out(const char *name)
{
	char path[2048];

	snprintf(path, sizeof path, "%s/%s", out, name);
	return check_slurp(path, NULL);
}

/* The lineage keys of a release file agree with the lock file's record of the build. */
static void check_lineage(const char *file, const char *tier)
{
	char path[2048], *lock_text = slurp_out("qbake.lock");
	json_t *lock = lock_text ? json_loads(lock_text, 0, NULL) : NULL, *node;
	const char *base_digest = NULL, *tier_key = NULL;
	gguf_file f;
	err e = { 0 };
	size_t i;

	json_array_foreach(json_object_get(lock, "nodes"), i, node) {
		const char *label = json_string_value(json_object_get(node, "label"));

		if (strcmp(label, "baseline") == 0)
			base_digest = json_string_value(json_array_get(json_array_get(json_object_get(node, "outputs"), 0), 1));
		if (strncmp(label, "quantize ", 9) == 0 && strcmp(label + 9, tier) == 0)
			tier_key = json_string_value(json_object_get(node, "key"));
	}
	snprintf(path, sizeof path, "%s/%s", out, file);
	CHECK(gguf_open(&f, path, &e) == 0, "%s", e.msg);
	if (!e.set) {
		const char *t = gguf_meta_get_str(&f.meta, "qbake.tier"), *b = gguf_meta_get_str(&f.meta, "qbake.baseline.sha256");
		const char *k = gguf_meta_get_str(&f.meta, "qbake.node.key"), *v = gguf_meta_get_str(&f.meta, "qbake.version");

		CHECK(t && strcmp(t, tier) == 0, "qbake.tier %s", t ? t : "(missing)");
		CHECK(b && base_digest && strcmp(b, base_digest) == 0, "qbake.baseline.sha256 %s, lock says %s",
		      b ? b : "(missing)", base_digest ? base_digest : "(missing)");
		CHECK(k && tier_key && strcmp(k, tier_key) == 0, "qbake.node.key %s, lock says %s", k ? k : "(missing)",
		      tier_key ? tier_key : "(missing)");
		CHECK(v && strlen(v) > 0, "qbake.version");
		CHECK(gguf_meta_find(&f.meta, "qbake.imatrix.sha256") == NULL, "no imatrix lineage without an imatrix");
		gguf_close(&f);
	}
	json_decref(lock);
	free(lock_text);
}

static void test_incremental(void)
{
	build_result res;
	char *sums1, *sums2, path[2048];
	struct stat st1, st2;
	err e = { 0 };

	write_recipe("\"Q8_0\", \"Q4_0\"", "");
	CHECK(build(&res, &e) == 0, "first build: %s", e.msg);
	CHECK(res.ran == 3 && res.cached == 0 && res.release_written, "first build ran %d (%s)", res.ran,
	      res.ran_labels);
	sums1 = slurp_out("SHA256SUMS");
	CHECK(sums1 && strstr(sums1, "  tiny-Q8_0.gguf\n") && strstr(sums1, "  tiny-Q4_0.gguf\n"), "SHA256SUMS: %s",
	      sums1 ? sums1 : "(missing)");
	CHECK(check_system("cd '%s' && sha256sum --quiet -c SHA256SUMS", out) == 0, "sha256sum -c passes");
	check_lineage("tiny-Q4_0.gguf", "Q4_0");

	/* Nothing changed: nothing runs, the release is left alone. */
	snprintf(path, sizeof path, "%s/tiny-Q8_0.gguf", out);
	stat(path, &st1);
	CHECK(build(&res, &e) == 0 && res.ran == 0 && res.cached == 3 && !res.release_written,
	      "second build ran %d (%s), wrote release %d: %s", res.ran, res.ran_labels, res.release_written, e.msg);
	stat(path, &st2);
	CHECK(st1.st_ino == st2.st_ino, "release file untouched");

	/* Touching an input without changing it: nothing runs. */
	CHECK(check_system("touch '%s/config.json'", model) == 0, "touch");
	CHECK(build(&res, &e) == 0 && res.ran == 0, "after touch ran %d (%s)", res.ran, res.ran_labels);

	/* A comment and reformatting in the recipe: nothing runs. */
	write_recipe("\"Q8_0\",   \"Q4_0\"  -- two tiers\n   ", "  -- nothing else\n");
	CHECK(build(&res, &e) == 0 && res.ran == 0, "after a comment ran %d (%s)", res.ran, res.ran_labels);

	/* Adding a tier runs only that tier. */
	write_recipe("\"Q8_0\", \"Q4_0\", \"Q5_0\"", "");
	CHECK(build(&res, &e) == 0 && res.ran == 1 && strcmp(res.ran_labels, "quantize Q5_0") == 0,
	      "adding a tier ran %d (%s): %s", res.ran, res.ran_labels, e.msg);
	CHECK(res.release_written, "release rewritten with the new tier");

	/* Removing it runs nothing, and the release loses the file. */
	write_recipe("\"Q8_0\", \"Q4_0\"", "");
	CHECK(build(&res, &e) == 0 && res.ran == 0, "removing a tier ran %d (%s)", res.ran, res.ran_labels);
	sums2 = slurp_out("SHA256SUMS");
	CHECK(sums1 && sums2 && strcmp(sums1, sums2) == 0, "same release as the first build");
	snprintf(path, sizeof path, "%s/tiny-Q5_0.gguf", out);
	CHECK(access(path, F_OK) != 0, "removed tier's file is gone from the release");

	/* A tier option is a parameter: only that tier runs again. */
	write_recipe("\"Q8_0\", { \"Q4_0\", pure = true }", "");
	CHECK(build(&res, &e) == 0 && res.ran == 1 && strcmp(res.ran_labels, "quantize Q4_0") == 0,
	      "pure Q4_0 ran %d (%s): %s", res.ran, res.ran_labels, e.msg);
	free(sums1);
	free(sums2);
}

/* The same inputs under another recipe file in another folder hit the same cache entries. */
static void test_second_recipe_shares(void)
{
	char saved[1024];
	build_result res;
	err e = { 0 };

	snprintf(saved, sizeof saved, "%s", dir);
	snprintf(dir, sizeof dir, "%s/elsewhere", check_tmpdir());
	mkdir(dir, 0755);
	write_recipe("\"Q8_0\"", "");
	CHECK(build(&res, &e) == 0 && res.ran == 0 && res.cached == 2, "second recipe ran %d (%s): %s", res.ran,
	      res.ran_labels, e.msg);
	snprintf(dir, sizeof dir, "%s", saved);
}

/* One imatrix serves every tier; a calibration change redoes it and its tiers only. */
static void test_imatrix(void)
{
	const char *extra = "  corpora = { calib = text { \"calib*.txt\" } },\n"
			    "  imatrix = { corpus = \"calib\", ctx = 64, chunks = 4 },\n";
	char text[1 << 14];
	build_result res;
	err e = { 0 };

	/* About 1500 tokens of real text: four chunks of 64. */
	for (size_t i = 0, k = 0; i < sizeof text - 200; i += (size_t)k)
		k = snprintf(text + i, sizeof text - i, "The quick brown fox %zu jumps over the lazy dog; "
							  "Python's list.sort() is stable. ", i);
	write_file("calib1.txt", text);
	write_recipe("\"Q8_0\", \"Q4_K_M\"", extra);
	CHECK(build(&res, &e) == 0, "build with an imatrix: %s", e.msg);
	CHECK(res.ran == 3 && strstr(res.ran_labels, "imatrix") && !strstr(res.ran_labels, "baseline"),
	      "the baseline came from the cache, the imatrix and both tiers ran: %s", res.ran_labels);
	CHECK(build(&res, &e) == 0 && res.ran == 0, "no-op with an imatrix ran %s", res.ran_labels);

	/* A new calibration file (the glob finds it): imatrix and tiers, not the baseline. */
	write_file("calib2.txt", "More calibration text, about asyncio event loops and their tasks.\n");
	CHECK(build(&res, &e) == 0, "%s", e.msg);
	CHECK(res.ran == 3 && strstr(res.ran_labels, "imatrix") && strstr(res.ran_labels, "quantize Q8_0") &&
	      strstr(res.ran_labels, "quantize Q4_K_M") && !strstr(res.ran_labels, "baseline"),
	      "calibration change ran %d: %s", res.ran, res.ran_labels);
	check_system("rm -f '%s/calib2.txt'", dir);
}

/* Gates decide from cached figures: a failing tier is replaced by its fallback, and
 * changing a gate runs nothing. */
static void test_gates(void)
{
	char extra[2048], path[2048];
	const char *src = getenv("QBAKE_SOURCE");
	build_result res;
	char *report;
	err e = { 0 };

	snprintf(extra, sizeof extra,
		 "  corpora = { eval = text { \"%s/examples/corpora/eval.txt\" } },\n"
		 "  eval = { corpus = \"eval\", ctx = 64, chunks = 4 },\n"
		 "  gates = { Q4_0 = { max_kld = 0, fallback = \"Q5_0\" } },\n", src ? src : ".");
	write_recipe("\"Q4_0\"", extra);
	CHECK(build(&res, &e) == 0, "gated build: %s", e.msg);
	/* (quantize Q5_0 itself is in the cache from the tier test above) */
	CHECK(strstr(res.ran_labels, "eval baseline") && strstr(res.ran_labels, "eval Q4_0") &&
	      strstr(res.ran_labels, "eval Q5_0"), "the fallback was evaluated: %s", res.ran_labels);
	snprintf(path, sizeof path, "%s/tiny-Q5_0.gguf", out);
	CHECK(access(path, F_OK) == 0, "the fallback ships");
	snprintf(path, sizeof path, "%s/tiny-Q4_0.gguf", out);
	CHECK(access(path, F_OK) != 0, "the failing tier does not ship");
	report = slurp_out("report.md");
	CHECK(report && strstr(report, "Q4_0 failed its gate (mean KLD") && strstr(report, "replaced by Q5_0"),
	      "report says why: %s", report ? report : "(missing)");
	free(report);

	/* A looser gate: nothing runs, the tier itself ships. */
	snprintf(extra, sizeof extra,
		 "  corpora = { eval = text { \"%s/examples/corpora/eval.txt\" } },\n"
		 "  eval = { corpus = \"eval\", ctx = 64, chunks = 4 },\n"
		 "  gates = { Q4_0 = { max_kld = 1, fallback = \"Q5_0\" } },\n", src ? src : ".");
	write_recipe("\"Q4_0\"", extra);
	CHECK(build(&res, &e) == 0 && res.ran == 0, "changing a gate ran %d: %s %s", res.ran, res.ran_labels, e.msg);
	snprintf(path, sizeof path, "%s/tiny-Q4_0.gguf", out);
	CHECK(access(path, F_OK) == 0, "the tier ships once it passes");

	/* No fallback: the build fails and says which gate, and the release stays as it was. */
	snprintf(extra, sizeof extra,
		 "  corpora = { eval = text { \"%s/examples/corpora/eval.txt\" } },\n"
		 "  eval = { corpus = \"eval\", ctx = 64, chunks = 4 },\n"
		 "  gates = { Q4_0 = { min_same_top = \"100%%\" } },\n", src ? src : ".");
	write_recipe("\"Q4_0\"", extra);
	err_clear(&e);
	CHECK(build(&res, &e) < 0 && strstr(e.msg, "fails its quality gate") && strstr(e.msg, "same top"),
	      "failing gate: %s", e.msg);
	CHECK(access(path, F_OK) == 0, "the previous release is intact");
}

static void test_overlap_rule(void)
{
	char extra[1024];
	build_result res;
	err e = { 0 };

	/* The same file on both sides is refused. */
	write_file("calib.txt", "Some calibration text that is long enough to make many fifty character shingles.\n");
	snprintf(extra, sizeof extra,
		 "  corpora = { calib = text { \"calib.txt\" }, eval = text { \"eval.txt\" } },\n"
		 "  imatrix = { corpus = \"calib\", ctx = 16, chunks = 1 },\n"
		 "  eval = { corpus = \"eval\", ctx = 16, chunks = 1 },\n");
	write_file("eval.txt", "Some calibration text that is long enough to make many fifty character shingles.\n");
	write_recipe("\"Q8_0\"", extra);
	CHECK(build(&res, &e) < 0 && strstr(e.msg, "held out"), "identical corpora: %s", e.msg);

	/* Overlapping text is refused with the figure and the passage... */
	err_clear(&e);
	write_file("eval.txt", "Entirely new words come first here, then: some calibration text that is long enough "
			       "to make many fifty character shingles. And then more new words to finish it off nicely.\n");
	CHECK(build(&res, &e) < 0 && strstr(e.msg, "not held out") && strstr(e.msg, "some calibration text"),
	      "overlapping corpora: %s", e.msg);
	CHECK(strstr(e.msg, "recipe.lua:") != NULL, "message points at the recipe: %s", e.msg);
}

/* Writes golden Q4_0 widened back to F16: what a careless "dequantize and republish" makes. */
static int widen_to_f16(const char *in_path, const char *out_path)
{
	gguf_file in;
	gguf_tensor *ts;
	gguf_writer *w;
	gguf_meta meta = { 0 };
	err e = { 0 };
	int rc = -1;

	if (gguf_open(&in, in_path, &e) < 0)
		return -1;
	ts = calloc(in.n_tensors, sizeof *ts);
	gguf_meta_copy(&meta, &in.meta);
	gguf_meta_set_u32(&meta, "general.file_type", 1);
	for (uint64_t i = 0; i < in.n_tensors; i++) {
		ts[i] = in.tensors[i];
		if (gguf_type(ts[i].type)->quantized)
			ts[i].type = GGUF_TYPE_F16;
	}
	w = gguf_writer_begin(out_path, 0, &meta, ts, in.n_tensors, &e);
	for (uint64_t i = 0; w && i < in.n_tensors; i++) {
		const gguf_tensor *t = &in.tensors[i];
		uint64_t n = gguf_nelements(t), ne0 = t->ne[0], rb = gguf_row_size(t->type, ne0);
		float *row = malloc(ne0 * sizeof *row);
		uint16_t *h = malloc(ne0 * sizeof *h);

		for (uint64_t r = 0; r < n / ne0; r++) {
			const uint8_t *src = (const uint8_t *)t->data + r * rb;

			if (ts[i].type == t->type) {
				gguf_writer_write(w, src, rb, &e);
				continue;
			}
			quant_dequant_row(t->type, src, row, (int64_t)ne0);
			half_row_from_f32(row, h, ne0);
			gguf_writer_write(w, h, ne0 * 2, &e);
		}
		free(row);
		free(h);
	}
	if (w && gguf_writer_finish(w, NULL, &e) == 0)
		rc = 0;
	if (rc < 0)
		fprintf(stderr, "widen: %s\n", e.msg);
	gguf_meta_free(&meta);
	free(ts);
	gguf_close(&in);
	return rc;
}

static void test_requantized_rules(void)
{
	build_result res;
	err e = { 0 };
	char *q4 = check_shared_path("golden/pydoc-8m/quant/pydoc-8m-Q4_0.gguf"), text[2048], wide[1024], *lock;
	char *f16 = check_shared_path("golden/pydoc-8m/pydoc-8m-F16.gguf");

	/* A quantized GGUF is never a baseline. */
	snprintf(text, sizeof text, "release \"q\" {\n  model = gguf { path = \"%s\" },\n  tiers = { \"Q4_K_M\" },\n}\n", q4);
	write_file("recipe.lua", text);
	CHECK(build(&res, &e) < 0 && strstr(e.msg, "baseline must be unquantized") &&
	      strstr(e.msg, "tensor output.weight is Q6_K"),
	      "quantized source: %s", e.msg);

	/* Widened back to F16, it is still caught, by the grid its values sit on... */
	snprintf(wide, sizeof wide, "%s/widened-F16.gguf", check_tmpdir());
	CHECK(widen_to_f16(q4, wide) == 0, "widened copy written");
	snprintf(text, sizeof text, "release \"w\" {\n  model = gguf { path = \"%s\" },\n  tiers = { \"Q8_0\" },\n}\n", wide);
	write_file("recipe.lua", text);
	err_clear(&e);
	CHECK(build(&res, &e) < 0 && strstr(e.msg, "looks quantized") && strstr(e.msg, "6-bit affine grid (58 tensor(s)") &&
	      strstr(e.msg, "requantized_baseline"), "widened source: %s", e.msg);

	/* ...unless the recipe gives a written reason, which the lock file records. */
	snprintf(text, sizeof text,
		 "release \"w\" {\n  model = gguf { path = \"%s\" },\n  tiers = { \"Q8_0\" },\n"
		 "  rules = { requantized_baseline = { reason = \"only the Q4_0 was ever published\" } },\n}\n", wide);
	write_file("recipe.lua", text);
	err_clear(&e);
	CHECK(build(&res, &e) == 0, "override with a reason: %s", e.msg);
	lock = slurp_out("qbake.lock");
	CHECK(lock && strstr(lock, "only the Q4_0 was ever published"), "reason recorded in qbake.lock");
	free(lock);

	/* The genuine F16 baseline passes the same check. */
	snprintf(text, sizeof text, "release \"f\" {\n  model = gguf { path = \"%s\" },\n  tiers = { \"Q8_0\" },\n}\n", f16);
	write_file("recipe.lua", text);
	err_clear(&e);
	CHECK(build(&res, &e) == 0, "genuine F16 baseline: %s", e.msg);
	free(q4);
	free(f16);
}

int main(void)
{
	const char *src = getenv("QBAKE_SOURCE");

	/* A copy of the bundled model, so the test may touch its files. */
	snprintf(model, sizeof model, "%s/pydoc-tiny", check_tmpdir());
	if (check_system("cp -r '%s/examples/pydoc-tiny' '%s'", src ? src : ".", model) != 0) {
		fprintf(stderr, "cannot copy the example model\n");
		return 1;
	}
	snprintf(cache, sizeof cache, "%s/cache", check_tmpdir());
	snprintf(dir, sizeof dir, "%s/recipe", check_tmpdir());
	snprintf(out, sizeof out, "%s/release", check_tmpdir());
	mkdir(dir, 0755);
	test_incremental();
	test_second_recipe_shares();
	test_imatrix();
	test_gates();
	test_overlap_rule();
	test_requantized_rules();
	return check_done();
}
