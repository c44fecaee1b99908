/* inspect_run.h - test support: run `qbake inspect` and read its JSON report
 * (static functions shared by the inspect tests; not a module) */
#ifndef QBAKE_TEST_INSPECT_RUN_H
#define QBAKE_TEST_INSPECT_RUN_H

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

#endif
