/* test_examples.c - every recipe shipped in examples/ and recipes/ loads */
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "recipe.h"

static const char *source(void)
{
	const char *s = getenv("QBAKE_SOURCE");

	return s ? s : "."; /* ctest sets it; by hand, run from the source folder */
}

static recipe *load(const char *rel)
{
	char path[4096];
	err e = { 0 };
	recipe *r;

	snprintf(path, sizeof path, "%s/%s", source(), rel);
	r = recipe_load(path, NULL, &e);
	CHECK(r != NULL, "%s: %s", rel, e.msg);
	for (size_t i = 0; r && i < r->n_warnings; i++)
		printf("warning: %s\n", r->warnings[i]);
	return r;
}

static void check_tiers(const recipe *r, const char *const *want)
{
	size_t n = 0;

	while (want[n])
		n++;
	CHECK(r->n_tiers == n, "%s: %zu tiers, want %zu", r->name, r->n_tiers, n);
	for (size_t i = 0; i < n && i < r->n_tiers; i++)
		CHECK(strcmp(r->tiers[i].name, want[i]) == 0, "%s: tier %zu is %s", r->name, i, r->tiers[i].name);
}

int main(void)
{
	static const char *const quick[] = { "Q8_0", "Q4_K_M", "IQ4_XS", NULL };
	char pattern[4096];
	glob_t g;
	recipe *r = load("examples/quickstart.lua");

	if (r) {
		CHECK(r->model.kind == RECIPE_MODEL_HF && strcmp(r->model.local.rel, "pydoc-tiny") == 0, "quickstart model");
		CHECK(r->baseline == RECIPE_BASELINE_F16, "quickstart baseline");
		check_tiers(r, quick);
		CHECK(r->imatrix.kind == RECIPE_IMATRIX_COMPUTE && r->eval.set && r->imatrix.corpus != r->eval.corpus,
		      "quickstart: imatrix and a held-out eval");
		CHECK(r->n_warnings == 0, "quickstart warns");
	}
	recipe_free(r);

	/* Real public models: git sources pinned to a full commit (fetched by the engine, not here). */
	snprintf(pattern, sizeof pattern, "%s/recipes/*.lua", source());
	CHECK(glob(pattern, 0, NULL, &g) == 0 && g.gl_pathc >= 3, "recipes/ holds the three public-model recipes");
	for (size_t i = 0; i < g.gl_pathc; i++) {
		const char *rel = g.gl_pathv[i] + strlen(source()) + 1;

		r = load(rel);
		CHECK(!r || (r->model.kind == RECIPE_MODEL_GIT && r->model.commit && strlen(r->model.commit) == 40 &&
			     strncmp(r->model.url, "https://huggingface.co/", 23) == 0),
		      "%s: a pinned git source on the hub", rel);
		recipe_free(r);
	}
	globfree(&g);

	/* examples/pydoc.lua points at ../shared beside the clone. */
	if (check_failures)
		return check_done();
	check_shared();
	r = load("examples/pydoc.lua");
	if (r) {
		CHECK(strcmp(r->name, "pydoc-8m") == 0 && r->baseline == RECIPE_BASELINE_BF16, "pydoc recipe");
		CHECK(r->n_gates == 2 && recipe_gate_for(r, "IQ4_XS") && recipe_gate_for(r, "Q8_0"), "pydoc gates");
	}
	recipe_free(r);
	return check_done();
}
