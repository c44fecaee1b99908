/* test_verify.c - `qbake verify` on examples/pydoc-tiny: identical rebuild, then a tampered file and lock */
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "check.h"

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

/* Runs qbake verify (TMPDIR inside the test's folder); returns the exit code, output in *out. */
static int verify(const char *dir, char **out, const char *extra)
{
	char log[4200];
	int rc;

	snprintf(log, sizeof log, "%s/verify.out", dir);
	rc = check_system("cd '%s' && TMPDIR='%s/scratch' '%s' verify recipe.lua --release rel -q -t 2 %s > '%s' 2>&1", dir, dir,
			  bin(), extra, log);
	*out = check_slurp(log, NULL);
	if (!*out)
		*out = strdup("");
	return rc;
}

/* No temporary cache is left behind. */
static void check_clean(const char *dir)
{
	char pattern[4200];
	glob_t g;

	snprintf(pattern, sizeof pattern, "%s/scratch/qbake-verify.*", dir);
	CHECK(glob(pattern, 0, NULL, &g) == GLOB_NOMATCH, "the temporary cache was removed");
	globfree(&g);
}

int main(void)
{
	const char *dir = check_tmpdir();
	char path[4200], *out;
	FILE *f;
	int rc;

	snprintf(path, sizeof path, "%s/recipe.lua", dir);
	f = fopen(path, "w");
	CHECK(f, "write %s", path);
	if (!f)
		return check_done();
	fprintf(f, "release \"tiny\" {\n  model = hf { path = \"%s/examples/pydoc-tiny\" },\n  baseline = \"f16\",\n"
		   "  tiers = { \"Q8_0\", \"Q4_0\" },\n}\n", source());
	fclose(f);
	check_system("mkdir -p '%s/scratch'", dir);
	/* Built with one thread, rebuilt with two: the digests must not depend on it. */
	rc = check_system("cd '%s' && '%s' build recipe.lua --cache cache --out rel -q -t 1 > build.out 2>&1", dir, bin());
	CHECK(rc == 0, "build: exit %d", rc);
	if (rc != 0)
		return check_done();

	rc = verify(dir, &out, "--json");
	{
		json_t *j = json_loads(out, 0, NULL);

		CHECK(rc == 0 && json_is_true(json_object_get(j, "identical")) &&
		      json_integer_value(json_object_get(j, "nodes")) == 3 && json_array_size(json_object_get(j, "differences")) == 0,
		      "a clean release rebuilds identically: exit %d\n%s", rc, out);
		json_decref(j);
	}
	free(out);
	check_clean(dir);

	/* One flipped byte in a release file (a fresh copy: the original is a link into the cache). */
	rc = check_system("cd '%s/rel' && cp tiny-Q8_0.gguf x && chmod u+w x && printf '\\001' | "
			  "dd of=x bs=1 seek=2000000 conv=notrunc 2>/dev/null && mv -f x tiny-Q8_0.gguf", dir);
	CHECK(rc == 0, "tamper with the Q8_0 file");
	rc = verify(dir, &out, "");
	CHECK(rc == 1 && strstr(out, "differs: quantize Q8_0: release file") && !strstr(out, "differs: quantize Q4_0") &&
	      strstr(out, "DIFFERENT"), "tampered file: exit %d\n%s", rc, out);
	free(out);
	check_clean(dir);

	/* An output digest edited in the lock. */
	snprintf(path, sizeof path, "%s/rel/qbake.lock", dir);
	{
		json_t *lock = json_load_file(path, 0, NULL), *n;
		size_t i;

		json_array_foreach(json_object_get(lock, "nodes"), i, n) {
			json_t *row = json_array_get(json_object_get(n, "outputs"), 0);
			const char *label = json_string_value(json_object_get(n, "label"));

			if (label && strcmp(label, "quantize Q4_0") == 0 && row) {
				char d[65];

				snprintf(d, sizeof d, "%s", json_string_value(json_array_get(row, 1)));
				d[0] = d[0] == '0' ? '1' : '0';
				json_array_set_new(row, 1, json_string(d));
			}
		}
		CHECK(lock && json_dump_file(lock, path, JSON_INDENT(2)) == 0, "rewrite the lock");
		json_decref(lock);
	}
	rc = verify(dir, &out, "");
	CHECK(rc == 1 && strstr(out, "differs: quantize Q4_0: output model.gguf: rebuilt"), "tampered lock: exit %d\n%s", rc,
	      out);
	free(out);

	/* No lock: unreadable input. */
	remove(path);
	rc = verify(dir, &out, "");
	CHECK(rc == 2 && strstr(out, "qbake.lock"), "missing lock: exit %d\n%s", rc, out);
	free(out);
	return check_done();
}
