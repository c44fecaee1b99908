/* test_attest_release.c - attesting a real build of examples/pydoc-tiny: the engine's lineage keys verify under audit */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "attest.h"
#include "check.h"
#include "recipe.h"

static const char *bin(void)
{
	const char *b = getenv("QBAKE_BIN");

	return b ? b : "./build/qbake";
}

static const char *source(void)
{
	const char *s = getenv("QBAKE_SOURCE");

	return s ? s : ".";
}

static int run(const char *dir, char **out, const char *args)
{
	char log[4200];
	int rc;

	snprintf(log, sizeof log, "%s/run.out", dir);
	rc = check_system("cd '%s' && '%s' %s > '%s' 2>&1", dir, bin(), args, log);
	*out = check_slurp(log, NULL);
	if (!*out)
		*out = strdup("");
	return rc;
}

int main(void)
{
	const char *dir = check_tmpdir();
	static const char *const files[] = { "tiny-Q8_0.gguf", "tiny-Q4_0.gguf" };
	char path[4200], rel[4200], *out, *canon;
	attest_subject subj[2] = { { files[0], { 0 }, NULL }, { files[1], { 0 }, NULL } };
	attest_key *k, *pub;
	recipe *r;
	FILE *f;
	int rc;
	err e = { 0 };

	snprintf(path, sizeof path, "%s/recipe.lua", dir);
	f = fopen(path, "w");
	CHECK(f, "write %s", path);
	if (!f)
		return check_done();
	fprintf(f, "release \"tiny\" {\n  model = hf { path = \"%s/examples/pydoc-tiny\" },\n  baseline = \"f16\",\n"
		   "  tiers = { \"Q8_0\", \"Q4_0\" },\n}\n", source());
	fclose(f);
	rc = run(dir, &out, "build recipe.lua --cache cache --out rel -q -t 1");
	CHECK(rc == 0, "build: exit %d\n%s", rc, out);
	free(out);
	if (rc)
		return check_done();
	snprintf(rel, sizeof rel, "%s/rel", dir);

	/* The engine's file alone: lineage but no attestation. */
	rc = run(dir, &out, "audit rel/tiny-Q8_0.gguf");
	CHECK(rc == 3 && strstr(out, "qbake.tier = Q8_0") && strstr(out, "no attestation"), "no attestation yet: exit %d\n%s",
	      rc, out);
	free(out);

	/* Attest it as the release step will: subjects by name, dependencies from the lineage. */
	r = recipe_load(path, NULL, &e);
	canon = r ? recipe_canonical(r, NULL, NULL, NULL, &e) : NULL;
	CHECK(canon, "%s", e.msg);
	recipe_free(r);
	rc = run(dir, &out, "keygen k");
	CHECK(rc == 0, "keygen: %s", out);
	free(out);
	snprintf(path, sizeof path, "%s/k.key", dir);
	k = attest_key_load(path, &e);
	snprintf(path, sizeof path, "%s/k.pub", dir);
	pub = attest_pub_load(path, &e);
	CHECK(k && pub, "%s", e.msg);
	{
		attest_build b = { subj, 2, canon, NULL, NULL, 0, "0.1.0" };

		CHECK(attest_write_release(rel, &b, k, &e) == 0, "%s", e.msg);
	}
	CHECK(k && attest_model_sig_write(rel, "tiny", k, &e) == 0, "%s", e.msg);
	CHECK(pub && attest_model_sig_verify(rel, pub, &e) == 0, "model.sig: %s", e.msg);

	rc = run(dir, &out, "audit rel/tiny-Q4_0.gguf --pubkey k.pub --cache cache --json");
	{
		json_t *j = json_loads(out, 0, NULL), *c;
		size_t i;
		int baseline_present = 0;

		CHECK(rc == 0 && json_is_true(json_object_get(json_object_get(j, "attestation"), "signature_verified")),
		      "the engine's lineage verifies: exit %d\n%s", rc, out);
		json_array_foreach(json_object_get(j, "chain"), i, c)
			if (strcmp(json_string_value(json_object_get(c, "name")), "baseline") == 0)
				baseline_present = json_is_true(json_object_get(c, "in_cache"));
		CHECK(baseline_present, "the baseline is found in the cache: %s", out);
		json_decref(j);
	}
	free(out);
	rc = run(dir, &out, "audit rel/tiny-Q8_0.gguf --pubkey k.pub");
	CHECK(rc == 0 && strstr(out, "verdict: verified"), "Q8_0 verifies: exit %d\n%s", rc, out);
	free(out);

	/* qbake verify still sees an identical release (the attestation files are extra). */
	rc = run(dir, &out, "verify recipe.lua --release rel -q -t 2");
	CHECK(rc == 0, "verify: exit %d\n%s", rc, out);
	free(out);
	attest_key_free(k);
	attest_key_free(pub);
	free(canon);
	return check_done();
}
