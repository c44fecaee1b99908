/* test_recipe.c - the recipe loader: the DSL, errors with lines, the sandbox, the canonical form */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "recipe.h"
#include "sha256.h"

static char root[4096];

static const char *str(const char *s)
{
	return s ? s : "(null)";
}
 /* tmp/work: the recipes live here; tmp/shared beside it */

/* The example, one line per entry: variants replace a line, so an error's line is known. */
static const char *const base[] = {
	"release \"pydoc-8m\" {",                                           /* 1 */
	"  model    = hf { path = \"../shared/fixtures/pydoc-8m\" },",      /* 2 */
	"  baseline = \"bf16\",",                                           /* 3 */
	"  corpora  = {",                                                   /* 4 */
	"    calib = text { \"corpora/calib/*.txt\" },",                    /* 5 */
	"    eval  = text { \"corpora/eval.txt\" },",                       /* 6 */
	"  },",                                                             /* 7 */
	"  imatrix  = { corpus = \"calib\", ctx = 256, chunks = 64 },",     /* 8 */
	"  tiers    = { \"Q8_0\", \"Q6_K\", \"Q5_K_M\", \"Q4_K_M\", \"IQ4_XS\" },", /* 9 */
	"  eval     = { corpus = \"eval\", ctx = 256, chunks = 64 },",      /* 10 */
	"}",                                                                /* 11 */
	NULL,
};

/* The base recipe with line `line` (1-based) replaced by text (0: unchanged). */
static char *variant(int line, const char *text)
{
	size_t n = 1;
	char *s;

	for (int i = 0; base[i]; i++)
		n += strlen(base[i]) + 1 + (i + 1 == line ? strlen(text) : 0);
	s = calloc(1, n);
	for (int i = 0; base[i]; i++) {
		strcat(s, i + 1 == line ? text : base[i]);
		strcat(s, "\n");
	}
	return s;
}

static void write_file(const char *rel, const char *text)
{
	char path[4600];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", root, rel);
	check_system("mkdir -p \"$(dirname '%s')\"", path);
	f = fopen(path, "w");
	CHECK(f != NULL, "cannot write %s", path);
	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

static recipe *load_text(const char *name, const char *src, err *e)
{
	char path[4600];

	write_file(name, src);
	snprintf(path, sizeof path, "%s/%s", root, name);
	err_clear(e);
	return recipe_load(path, NULL, e);
}

/* The recipe must fail with "recipe.lua:LINE: " and a message containing each of the texts. */
static void expect_error(const char *what, const char *src, int line, ...)
{
	err e = { 0 };
	recipe *r = load_text("recipe.lua", src, &e);
	char prefix[64];
	const char *want;
	va_list ap;

	CHECK(r == NULL, "%s: loaded, but it should fail", what);
	recipe_free(r);
	if (line > 0) {
		snprintf(prefix, sizeof prefix, "recipe.lua:%d: ", line);
		CHECK(strstr(e.msg, prefix) != NULL, "%s: message does not say %s: %s", what, prefix, e.msg);
	}
	va_start(ap, line);
	while ((want = va_arg(ap, const char *)))
		CHECK(strstr(e.msg, want) != NULL, "%s: message lacks \"%s\": %s", what, want, e.msg);
	va_end(ap);
}

static void expect_variant_error(const char *what, int at, const char *text, int line, const char *w1,
				 const char *w2)
{
	char *src = variant(at, text);

	expect_error(what, src, line, w1, w2, (const char *)NULL);
	free(src);
}

static recipe *load_ok(const char *what, const char *name, const char *src)
{
	err e = { 0 };
	recipe *r = load_text(name, src, &e);

	CHECK(r != NULL, "%s: %s", what, e.msg);
	return r;
}

static void setup(void)
{
	snprintf(root, sizeof root, "%s/work", check_tmpdir());
	check_system("mkdir -p '%s' '%s/shared/fixtures/pydoc-8m'", root, check_tmpdir());
	/* Created out of order; bytewise order is 10 < 9 < B < a < c. */
	write_file("corpora/calib/c.txt", "c\n");
	write_file("corpora/calib/a.txt", "a\n");
	write_file("corpora/calib/9.txt", "9\n");
	write_file("corpora/calib/B.txt", "B\n");
	write_file("corpora/calib/10.txt", "10\n");
	write_file("corpora/calib/notes.md", "not matched by *.txt\n");
	write_file("corpora/eval.txt", "held out\n");
	write_file("prompts.txt", "def f(\n");
	write_file("x.imatrix.gguf", "imatrix stand-in\n");
	write_file("base.gguf", "gguf stand-in\n");
}

static void test_example(void)
{
	char *src = variant(0, "");
	recipe *r = load_ok("example", "recipe.lua", src);
	static const char *const calib[] = { "10.txt", "9.txt", "B.txt", "a.txt", "c.txt" };
	static const char *const tiers[] = { "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS" };
	char want[4600];

	free(src);
	if (!r)
		return;
	CHECK(strcmp(r->name, "pydoc-8m") == 0, "name %s", r->name);
	CHECK(r->line == 1, "release line %d", r->line);
	CHECK(r->model.kind == RECIPE_MODEL_HF, "model kind %d", r->model.kind);
	CHECK(strcmp(r->model.local.rel, "../shared/fixtures/pydoc-8m") == 0, "model rel %s", r->model.local.rel);
	snprintf(want, sizeof want, "%s/../shared/fixtures/pydoc-8m", r->dir);
	CHECK(strcmp(r->model.local.path, want) == 0, "model path %s", r->model.local.path);
	CHECK(r->model.line == 2, "model line %d", r->model.line);
	CHECK(r->baseline == RECIPE_BASELINE_BF16, "baseline %d", r->baseline);
	CHECK(r->n_corpora == 2 && strcmp(r->corpora[0].name, "calib") == 0 &&
	      strcmp(r->corpora[1].name, "eval") == 0, "corpora not sorted by name");
	CHECK(r->corpora[0].n_files == 5, "calib has %zu files", r->corpora[0].n_files);
	for (size_t i = 0; i < 5 && i < r->corpora[0].n_files; i++) {
		snprintf(want, sizeof want, "corpora/calib/%s", calib[i]);
		CHECK(strcmp(r->corpora[0].files[i].rel, want) == 0, "calib file %zu is %s, want %s", i,
		      r->corpora[0].files[i].rel, want);
		snprintf(want, sizeof want, "%s/corpora/calib/%s", r->dir, calib[i]);
		CHECK(strcmp(r->corpora[0].files[i].path, want) == 0, "calib path %s", r->corpora[0].files[i].path);
	}
	CHECK(r->corpora[1].n_files == 1 && strcmp(r->corpora[1].files[0].rel, "corpora/eval.txt") == 0,
	      "eval corpus");
	CHECK(r->imatrix.kind == RECIPE_IMATRIX_COMPUTE && r->imatrix.corpus == 0 && r->imatrix.ctx == 256 &&
	      r->imatrix.chunks == 64 && r->imatrix.from[0] == 0 && r->imatrix.line == 8, "imatrix");
	CHECK(r->n_tiers == 5, "%zu tiers", r->n_tiers);
	for (size_t i = 0; i < 5 && i < r->n_tiers; i++) {
		CHECK(strcmp(r->tiers[i].name, tiers[i]) == 0, "tier %zu is %s", i, r->tiers[i].name);
		CHECK(r->tiers[i].line == 9 && !r->tiers[i].pure, "tier %zu line %d", i, r->tiers[i].line);
	}
	CHECK(r->eval.set && r->eval.corpus == 1 && r->eval.ctx == 256 && r->eval.chunks == 64 &&
	      r->eval.predict == 32 && r->eval.prompts.rel == NULL && r->eval.line == 10, "eval");
	CHECK(r->n_gates == 0 && !r->eval_overlap.set && !r->requantized_baseline.set, "no gates/rules");
	CHECK(r->n_warnings == 0, "%zu warnings, first: %s", r->n_warnings, r->n_warnings ? r->warnings[0] : "");
	recipe_free(r);
}

static void test_full(void)
{
	static const char src[] =
		"-- every field\n"                                                      /* 1 */
		"local tiers = { 'q8_0', { 'Q4_K_M', pure = true, output_tensor_type = 'q8_0',\n" /* 2 */
		"                 tensor_types = { 'ATTN_V=q6_k', '^blk\\\\.0\\\\.=F16' } }, 'Q2_K' }\n" /* 3 */
		"release 'full.v1' {\n"                                                 /* 4 */
		"  model = git { url = 'https://huggingface.co/x/y', commit = '93EFA2F097D58C2A74874C7E644DBC9B0CEE75A2',\n"
		"                subdir = './model/' },\n"                              /* 6 */
		"  corpora = { cal = text 'corpora/./calib/../calib/a.txt', ev = text { 'corpora/eval.txt' } },\n"
		"  imatrix = { corpus = 'cal', from = 'Q8_0' },\n"                      /* 8 */
		"  tiers = tiers,\n"                                                    /* 9 */
		"  eval = { corpus = 'ev', prompts = 'prompts.txt', predict = 16 },\n"  /* 10 */
		"  gates = { ['*'] = { max_ppl_increase = '5%', fallback = 'Q5_K_M' },\n" /* 11 */
		"            Q5_K_M = { max_kld = 0.05, min_same_top = '90 %' } },\n"   /* 12 */
		"  rules = { eval_overlap = { max = '2%', reason = 'shared boilerplate headers' },\n"
		"            requantized_baseline = { reason = 'upstream ships it this way' } },\n"
		"}\n";
	recipe *r = load_ok("full", "full.lua", src);
	const recipe_gate *g;

	if (!r)
		return;
	CHECK(r->model.kind == RECIPE_MODEL_GIT && strcmp(r->model.url, "https://huggingface.co/x/y") == 0 &&
	      strcmp(r->model.url_open, r->model.url) == 0, "git url");
	CHECK(r->model.commit && strcmp(r->model.commit, "93efa2f097d58c2a74874c7e644dbc9b0cee75a2") == 0,
	      "commit lowercased: %s", r->model.commit);
	CHECK(r->model.subdir && strcmp(r->model.subdir, "model") == 0, "subdir %s", r->model.subdir);
	CHECK(r->model.ref == NULL && r->model.local.rel == NULL, "git: no ref, no local");
	CHECK(r->baseline == RECIPE_BASELINE_F16, "default baseline f16");
	CHECK(r->n_corpora == 2 && r->corpora[0].n_files == 1 &&
	      strcmp(r->corpora[0].files[0].rel, "corpora/calib/a.txt") == 0, "normalised path %s",
	      r->corpora[0].n_files ? r->corpora[0].files[0].rel : "");
	CHECK(r->imatrix.ctx == 512 && r->imatrix.chunks == 0 && strcmp(r->imatrix.from, "Q8_0") == 0,
	      "imatrix defaults and from");
	CHECK(r->n_tiers == 3 && strcmp(r->tiers[0].name, "Q8_0") == 0 && strcmp(r->tiers[1].name, "Q4_K_M") == 0 &&
	      strcmp(r->tiers[2].name, "Q2_K") == 0, "tiers");
	if (r->n_tiers == 3) {
		recipe_tier *t = &r->tiers[1];

		CHECK(t->pure && strcmp(t->output_tensor_type, "Q8_0") == 0 && t->token_embedding_type[0] == 0,
		      "tier options");
		CHECK(t->n_tensor_types == 2 && strcmp(t->tensor_types[0].pattern, "attn_v") == 0 &&
		      strcmp(t->tensor_types[0].type, "Q6_K") == 0 &&
		      strcmp(t->tensor_types[1].pattern, "^blk\\.0\\.") == 0 &&
		      strcmp(t->tensor_types[1].type, "F16") == 0, "tensor types");
	}
	CHECK(r->eval.predict == 16 && r->eval.prompts.rel && strcmp(r->eval.prompts.rel, "prompts.txt") == 0,
	      "eval prompts");
	CHECK(r->n_gates == 2 && strcmp(r->gates[0].tier, "*") == 0, "gates sorted, * first");
	g = recipe_gate_for(r, "Q8_0");
	CHECK(g && strcmp(g->tier, "*") == 0 && g->max_ppl_increase == 5.0 && isnan(g->max_kld) &&
	      strcmp(g->fallback, "Q5_K_M") == 0, "star gate");
	g = recipe_gate_for(r, "Q5_K_M");
	CHECK(g && g->max_kld == 0.05 && g->min_same_top == 90.0 && g->fallback[0] == 0 && g->line == 12,
	      "Q5_K_M gate (line %d)", g ? g->line : 0);
	CHECK(r->eval_overlap.set && r->eval_overlap.max == 2.0 &&
	      strcmp(r->eval_overlap.reason, "shared boilerplate headers") == 0, "overlap override");
	CHECK(r->requantized_baseline.set && strcmp(r->requantized_baseline.reason, "upstream ships it this way") == 0,
	      "requantized override");
	/* Warnings: pure (the tier is on line 2), then Q2_K (line 3); tiers is a variable, so
	 * the locator can only point at `tiers = tiers` (line 9). */
	CHECK(r->n_warnings == 2, "%zu warnings", r->n_warnings);
	if (r->n_warnings == 2) {
		CHECK(strstr(r->warnings[0], "full.lua:9: tier Q4_K_M: pure = true") != NULL, "%s", r->warnings[0]);
		CHECK(strstr(r->warnings[1], "full.lua:9: tier Q2_K: 2- and 3-bit") != NULL, "%s", r->warnings[1]);
	}
	recipe_free(r);
}

static void test_sources(void)
{
	recipe *r;

	r = load_ok("gguf source", "g.lua",
		    "release 'g' { model = gguf 'base.gguf', tiers = { 'Q4_0' }, imatrix = file 'x.imatrix.gguf' }");
	if (r) {
		CHECK(r->model.kind == RECIPE_MODEL_GGUF && strcmp(r->model.local.rel, "base.gguf") == 0, "gguf");
		CHECK(r->baseline == RECIPE_BASELINE_SOURCE, "gguf baseline defaults to the source's type");
		CHECK(r->imatrix.kind == RECIPE_IMATRIX_FILE && strcmp(r->imatrix.file.rel, "x.imatrix.gguf") == 0,
		      "imatrix file");
		recipe_free(r);
	}
	r = load_ok("git ref", "sub/g.lua",
		    "release 'g' { model = git { url = '../repo.git', ref = 'main' }, tiers = { 'Q4_0' } }");
	if (r) {
		char want[4600];

		snprintf(want, sizeof want, "%s/../repo.git", r->dir);
		CHECK(r->model.commit == NULL && strcmp(r->model.ref, "main") == 0, "git ref");
		CHECK(strcmp(r->model.url, "../repo.git") == 0 && strcmp(r->model.url_open, want) == 0,
		      "local git url resolved from the recipe's folder: %s", r->model.url_open);
		recipe_free(r);
	}
	/* A recipe in a sub-folder: every path is relative to it. */
	r = load_ok("sub-folder", "sub/dir/r.lua",
		    "release 'r' { model = hf { path = '../../../shared/fixtures/pydoc-8m' },\n"
		    "  corpora = { c = text { '../../corpora/calib/[ab].txt', '../../corpora/calib/c.txt' } },\n"
		    "  tiers = { 'F16' } }");
	if (r) {
		CHECK(r->n_corpora == 1 && r->corpora[0].n_files == 2 &&
		      strcmp(r->corpora[0].files[0].rel, "../../corpora/calib/a.txt") == 0 &&
		      strcmp(r->corpora[0].files[1].rel, "../../corpora/calib/c.txt") == 0, "relative globs");
		CHECK(strstr(r->dir, "/work/sub/dir") != NULL, "dir %s", r->dir);
		recipe_free(r);
	}
}

static void test_errors(void)
{
	expect_variant_error("unknown tier", 9, "  tiers = { 'Q8_0',\n 'Q4_K_X' },", 10,
			     "unknown tier \"Q4_K_X\" (did you mean \"Q4_K_M\"?)",
			     "valid tiers: F16, BF16, Q8_0, Q6_K, Q5_K_M, Q5_K_S, Q4_K_M, Q4_K_S, Q3_K_L, Q3_K_M, "
			     "Q3_K_S, Q2_K, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS");
	expect_variant_error("IQ2 tier", 9, "  tiers = { 'iq2_xs' },", 9, "unknown tier \"iq2_xs\"",
			     "would also need an importance matrix");
	expect_variant_error("unknown field", 9, "  tier = { 'Q8_0' },", 9,
			     "release: unknown field \"tier\" (did you mean \"tiers\"?)", NULL);
	expect_variant_error("unknown field, no suggestion", 9, "  tiers = { 'Q8_0' }, colour = 'red',", 9,
			     "release: unknown field \"colour\" (fields: model, baseline, corpora", NULL);
	expect_variant_error("unknown imatrix field", 8, "  imatrix = { corpus = 'calib',\n chunk = 64 },", 9,
			     "imatrix: unknown field \"chunk\" (did you mean \"chunks\"?)", NULL);
	expect_variant_error("wrong type", 8, "  imatrix = { corpus = 'calib', ctx = '256' },", 8,
			     "imatrix: field ctx: expected an integer, got string \"256\"", NULL);
	expect_variant_error("not an integer", 10, "  eval = { corpus = 'eval',\n\n ctx = 2.5 },", 12,
			     "eval: field ctx: expected an integer, got number 2.5", NULL);
	expect_variant_error("out of range", 8, "  imatrix = { corpus = 'calib', chunks = -1 },", 8,
			     "imatrix: field chunks: -1 is out of range", NULL);
	expect_variant_error("missing imatrix corpus", 8, "  imatrix = { corpus = 'calb' },", 8,
			     "imatrix: corpus \"calb\" is not defined in corpora (did you mean \"calib\"?)", NULL);
	expect_variant_error("missing eval corpus", 10, "  eval = { corpus = 'test' },", 10,
			     "eval: corpus \"test\" is not defined in corpora (defined: calib, eval)", NULL);
	expect_variant_error("eval = calib", 10, "  eval = { corpus = 'calib' },", 10,
			     "also the imatrix's calibration corpus", "held-out");
	expect_variant_error("shared file", 6, "    eval = text { 'corpora/eval.txt', 'corpora/calib/a.txt' },", 10,
			     "share the file corpora/calib/a.txt", NULL);
	expect_variant_error("glob matches nothing", 5, "    calib = text { 'corpora/calib/*.json' },", 5,
			     "corpus calib: pattern \"corpora/calib/*.json\" matches no file", NULL);
	expect_variant_error("missing file", 6, "    eval = text { 'corpora/missing.txt' },", 6,
			     "corpus eval: corpora/missing.txt: no such file", NULL);
	expect_variant_error("glob matches a folder", 5, "    calib = text { 'corpora/*' },", 5,
			     "corpus calib: corpora/calib/ is a folder", NULL);
	expect_variant_error("missing model", 2, "  model = hf { path = 'nowhere' },", 2,
			     "hf: nowhere: No such file or directory", NULL);
	expect_variant_error("model not a source", 2, "  model = '../shared/fixtures/pydoc-8m',", 2,
			     "model: expected hf { path = \"folder\" }", NULL);
	expect_variant_error("bad baseline", 3, "  baseline = 'fp16',", 3,
			     "baseline: expected \"f16\", \"bf16\" or \"f32\", got \"fp16\" (did you mean \"f16\"?)", NULL);
	expect_variant_error("short commit", 2, "  model = git { url = 'https://x/y',\n commit = 'abc123' },", 3,
			     "git: commit must be the full 40-hex-digit commit id", NULL);
	expect_variant_error("git without commit", 2, "  model = git { url = 'https://x/y' },", 2,
			     "git: give commit", NULL);
	expect_variant_error("duplicate tier", 9, "  tiers = { 'Q8_0',\n 'q8_0' },", 10,
			     "tiers: Q8_0 is listed twice (first at line 9)", NULL);
	expect_variant_error("empty tiers", 9, "  tiers = { },", 9, "tiers: the list is empty", NULL);
	expect_variant_error("tiers missing", 9, "", 1, "release: field tiers is required", NULL);
	expect_variant_error("bad tier option", 9, "  tiers = { { 'Q4_K_M', pure = 'yes' } },", 9,
			     "tier Q4_K_M: field pure: expected true or false, got string \"yes\"", NULL);
	expect_variant_error("unknown tier option", 9, "  tiers = { { 'Q4_K_M',\n  leave_output = true } },", 10,
			     "tier Q4_K_M: unknown field \"leave_output\" (did you mean \"leave_output_tensor\"?)", NULL);
	expect_variant_error("bad tensor type", 9, "  tiers = { { 'Q4_K_M', output_tensor_type = 'Q7_0' } },", 9,
			     "tier Q4_K_M: field output_tensor_type: unknown tensor type \"Q7_0\"", "valid types: F32, F16, Q4_0");
	expect_variant_error("type qbake cannot write", 9, "  tiers = { { 'Q4_K_M', tensor_types = { 'x=IQ2_XXS' } } },", 9,
			     "tier Q4_K_M: field tensor_types: unknown tensor type \"IQ2_XXS\"", NULL);
	expect_variant_error("bad regex", 9, "  tiers = { { 'Q4_K_M', tensor_types = { 'attn_(v=Q8_0' } } },", 9,
			     "tier Q4_K_M: tensor_types: \"attn_(v=Q8_0\": bad regular expression: ", NULL);
	expect_variant_error("remote_cache", 9, "  tiers = { 'Q8_0' }, remote_cache = 'http://x',", 9,
			     "remote_cache is not a recipe field", "per-user");
	expect_variant_error("gates without eval", 10, "  gates = { ['*'] = { max_kld = 0.1 } },", 10,
			     "gates need eval", NULL);
	expect_variant_error("gate for an unknown tier", 10,
			     "  eval = { corpus = 'eval' },\n gates = {\n Q4_K_X = { max_kld = 0.1 } },", 12,
			     "gates: unknown tier \"Q4_K_X\" (did you mean \"Q4_K_M\"?)", NULL);
	expect_variant_error("gate for a tier not built", 10,
			     "  eval = { corpus = 'eval' },\n gates = { Q2_K = { max_kld = 0.1 } },", 11,
			     "gates: Q2_K is not in tiers", NULL);
	expect_variant_error("gate percent", 10,
			     "  eval = { corpus = 'eval' }, gates = { ['*'] = { max_ppl_increase = 5 } },", 10,
			     "gates[\"*\"]: field max_ppl_increase: expected a percentage like \"5%\", got number 5", NULL);
	expect_variant_error("fallback cycle", 10,
			     "  eval = { corpus = 'eval' }, gates = { ['*'] = { max_kld = 0.1, fallback = 'Q8_0' } },", 10,
			     "the fallbacks go round in a circle: Q8_0 -> Q8_0", NULL);
	expect_variant_error("override without reason", 10,
			     "  eval = { corpus = 'eval' },\n rules = { eval_overlap = { max = '2%' } },", 11,
			     "rules.eval_overlap: an override needs a written reason", NULL);
	expect_variant_error("blank reason", 10,
			     "  eval = { corpus = 'eval' }, rules = { requantized_baseline = { reason = '  ' } },", 10,
			     "rules.requantized_baseline: an override needs a written reason", NULL);
	expect_variant_error("unknown rule", 10,
			     "  eval = { corpus = 'eval' }, rules = { eval_overlaps = { reason = 'x' } },", 10,
			     "rules: unknown field \"eval_overlaps\" (did you mean \"eval_overlap\"?)", NULL);
	expect_variant_error("syntax error", 8, "  imatrix = { corpus = 'calib' ctx = 256 },", 8,
			     "'}' expected", NULL);
	expect_variant_error("misspelt constructor", 2, "  model = hff { path = 'x' },", 2,
			     "unknown name 'hff' (did you mean 'hf'?)", NULL);
	expect_variant_error("bad release name", 1, "release 'my model' {", 1,
			     "release name \"my model\"", NULL);
	{
		char *src = variant(10, "  rules = {\n eval_overlap = { max = '3%', reason = 'same boilerplate' } },");
		recipe *r = load_ok("useless override", "recipe.lua", src);

		CHECK(r && r->n_warnings == 1 && strstr(r->warnings[0], "recipe.lua:11: rules.eval_overlap has no effect"),
		      "warning for an override without eval: %s", r && r->n_warnings ? r->warnings[0] : "none");
		recipe_free(r);
		free(src);
	}
	expect_error("no release", "local x = 1\n", 0, "recipe.lua: no release in this file", (const char *)NULL);
	expect_error("two releases",
		     "release 'a' { model = hf '.', tiers = { 'Q8_0' } }\n\nrelease 'b' { model = hf '.', tiers = { 'Q8_0' } }\n",
		     3, "a recipe holds exactly one release; the first one is at line 1", (const char *)NULL);
	expect_error("release without a name", "release { model = hf '.' }\n", 1,
		     "release needs a name first", (const char *)NULL);
}

static void test_sandbox(void)
{
	static const char *const gone[] = {
		"io", "os", "package", "require", "dofile", "loadfile", "debug", "collectgarbage", NULL,
	};
	static const char tail[] = "release 'ok' { model = hf '.', tiers = { 'Q8_0' } }\n";
	char src[1024];
	recipe *r;

	for (int i = 0; gone[i]; i++) {
		snprintf(src, sizeof src, "\nlocal x = %s\n%s", gone[i], tail);
		expect_error(gone[i], src, 2, "is not available in a recipe", (const char *)NULL);
		snprintf(src, sizeof src, "assert(rawget(_G, '%s') == nil)\n%s", gone[i], tail);
		r = load_ok(gone[i], "recipe.lua", src);
		recipe_free(r);
	}
	snprintf(src, sizeof src,
		 "assert(string.dump == nil and string.gsub == nil and math.random == nil and table.move == nil)\n"
		 "assert(load('return 1 + 1')() == 2)\n"
		 "assert(load('\\27Lua binary') == nil)\n%s", tail);
	r = load_ok("what is left", "recipe.lua", src);
	recipe_free(r);
	expect_error("binary load", "local f = load('\\27Lua', 'x', 'b')\n", 1,
		     "only text chunks can be loaded", (const char *)NULL);
	expect_error("infinite loop", "local n = 0\nwhile true do n = n + 1 end\n", 2,
		     "instruction limit exceeded (10000000 instructions)", (const char *)NULL);
	expect_error("loop that catches the limit",
		     "while true do pcall(function() while true do end end) end\n", 0,
		     "instruction limit exceeded", (const char *)NULL);
	expect_error("string.rep bomb", "\nlocal s = string.rep('x', 1e10)\n", 2,
		     "memory limit exceeded", (const char *)NULL);
	expect_error("method rep bomb", "local s = ('x'):rep(1e10)\n", 1, "memory limit exceeded", (const char *)NULL);
	expect_error("metatables", "local t = setmetatable({}, { __gc = function() while true do end end })\n", 1,
		     "setmetatable is not available in a recipe", (const char *)NULL);
	expect_error("string metatable", "getmetatable('').__index.rep = nil\n", 1,
		     "getmetatable is not available in a recipe", (const char *)NULL);
	expect_error("pattern bomb", "local s = ('a'):rep(5000)\nlocal x = s:find(('a-'):rep(20) .. 'b')\n", 2,
		     "attempt to call a nil value (method 'find')", (const char *)NULL);
	expect_error("string doubling", "local s = 'x'\nwhile true do s = s .. s end\n", 0,
		     "memory limit exceeded (a recipe may use 64 MiB)", (const char *)NULL);
	expect_error("table growth",
		     "local t, i = {}, 0\nwhile true do i = i + 1; t[i] = ('x'):rep(100) .. i end\n", 0,
		     "memory limit exceeded", (const char *)NULL);
	expect_error("deep recursion", "local function f(n) return f(n + 1) + 1 end\nf(1)\n", 1,
		     "stack overflow", (const char *)NULL);
	snprintf(src, sizeof src, "assert(#string.rep('', 1e15) == 0)\n%s", tail);
	r = load_ok("empty rep", "recipe.lua", src);
	recipe_free(r);
	expect_error("non-string error", "error({})\n", 0, "an error that is not a string", (const char *)NULL);
	/* Small limits can be set by the caller. */
	{
		err e = { 0 };
		recipe_limits lim = { .instructions = 50000 };
		char path[4600];

		write_file("short.lua", "for i = 1, 1e6 do end\n");
		snprintf(path, sizeof path, "%s/short.lua", root);
		r = recipe_load(path, &lim, &e);
		CHECK(!r && strstr(e.msg, "short.lua:1: instruction limit exceeded (50000 instructions)"), "%s", e.msg);
		recipe_free(r);
	}
}

static int digest_file(const char *path, bool is_dir, char hex[65], void *ctx, err *e)
{
	uint8_t d[32];

	(void)ctx;
	if (is_dir) {
		sha256_buf("a folder", 8, d);
	} else if (sha256_file(path, d, e)) {
		return -1;
	}
	sha256_hex(d, hex);
	return 0;
}

static char *canonical_of(const char *name, const char *src, recipe_digest_fn fn)
{
	recipe *r = load_ok(name, name, src);
	char *s = NULL;
	err e = { 0 };

	if (r) {
		s = recipe_canonical(r, fn, NULL, NULL, &e);
		CHECK(s != NULL, "canonical: %s", e.msg);
	}
	recipe_free(r);
	return s;
}

static void test_canonical(void)
{
	char *src = variant(0, "");
	char *a = canonical_of("a.lua", src, NULL);
	/* Same meaning: comments, blank lines, other quotes, field order, case, a table built in code. */
	char *b = canonical_of("b.lua",
			       "-- a comment\n--[[ a long\ncomment ]]\n"
			       "local t = {}\n"
			       "for _, n in ipairs { 'q8_0', 'Q6_K', 'q5_k_m', 'Q4_K_M', 'iq4_xs' } do t[#t + 1] = n end\n"
			       "release [[pydoc-8m]] { tiers = t, eval = { chunks = 64, corpus = 'eval', ctx = 256 },\n"
			       "imatrix={chunks=64;ctx=256;corpus=\"calib\"}, baseline = 'BF16',\n"
			       "corpora = { eval = text 'corpora/eval.txt', calib = text { './corpora/calib/*.txt' } },\n"
			       "model = hf { path = '../shared/fixtures/./pydoc-8m/' } }\n", NULL);
	char *ctx = variant(8, "  imatrix  = { corpus = \"calib\", ctx = 512, chunks = 64 },");
	char *c = canonical_of("c.lua", ctx, NULL);
	char *order = variant(9, "  tiers    = { \"Q6_K\", \"Q8_0\", \"Q5_K_M\", \"Q4_K_M\", \"IQ4_XS\" },");
	char *d = canonical_of("d.lua", order, NULL);

	CHECK(a && b && strcmp(a, b) == 0, "formatting changed the canonical form:\n%s\n%s", str(a), str(b));
	CHECK(a && c && strcmp(a, c) != 0, "a parameter change left the canonical form unchanged");
	CHECK(a && d && strcmp(a, d) != 0, "tier order is the report's order: it is part of the meaning");
	CHECK(a && strstr(a, check_tmpdir()) == NULL, "the canonical form holds a host path: %s", str(a));
	CHECK(a && strstr(a, "\"corpora/calib/10.txt\"") && strstr(a, "\"../shared/fixtures/pydoc-8m\""),
	      "relative paths: %s", str(a));
	CHECK(a && strncmp(a, "{\"baseline\":\"bf16\",\"corpora\":{\"calib\":[", 38) == 0, "sorted keys: %.80s", str(a));
	free(a);
	free(b);
	free(c);
	free(d);
	/* With digests: no path at all, and the same recipe in another folder gives the same bytes. */
	check_system("mkdir -p '%s/../elsewhere' && cp -r '%s/corpora' '%s/../elsewhere/'", root, root, root);
	check_system("mkdir -p '%s/../elsewhere/shared/fixtures/pydoc-8m'", root);
	a = canonical_of("a.lua", src, digest_file);
	{
		char name[64], *src2 = variant(2, "  model    = hf { path = \"shared/fixtures/pydoc-8m\" },");

		snprintf(name, sizeof name, "../elsewhere/a.lua");
		b = canonical_of(name, src2, digest_file);
		free(src2);
	}
	CHECK(a && b && strcmp(a, b) == 0, "digests: moving the inputs changed the form:\n%s\n%s", str(a), str(b));
	CHECK(a && strstr(a, ".txt") == NULL && strstr(a, "sha256:") != NULL, "digest form holds paths: %s", str(a));
	free(a);
	free(b);
	free(src);
	free(ctx);
	free(order);
}

int main(void)
{
	setup();
	test_example();
	test_full();
	test_sources();
	test_errors();
	test_sandbox();
	test_canonical();
	return check_done();
}
