/* verify.c - `qbake verify`: rebuild a release from scratch and compare every digest */
#include "verify.h"

#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "build.h"
#include "graph.h"
#include "recipe.h"
#include "sha256.h"
#include "store.h"

const char verify_help[] =
	"usage: qbake verify [RECIPE] [--release DIR] [--threads N] [--keep] [--json] [--quiet]\n"
	"\n"
	"The reproducibility proof: rebuilds everything the recipe describes in a fresh,\n"
	"empty temporary cache (nothing is reused from any other build), then compares the\n"
	"result with the release folder, node by node:\n"
	"  - every node of the release's qbake.lock (matched by its label, e.g.\n"
	"    \"quantize Q4_K_M\") must exist in the rebuild with the same key, the same input\n"
	"    digests and the same output digests; nodes only on one side are differences;\n"
	"  - every NAME-TIER.gguf in the release folder must have the SHA-256 of the rebuilt\n"
	"    quantize node's output.\n"
	"Each difference is reported with the node it belongs to. The temporary cache and\n"
	"release are removed afterwards unless --keep is given.\n"
	"\n"
	"RECIPE defaults to recipe.lua in the working directory.\n"
	"\n"
	"options:\n"
	"  --release DIR   the release folder to check (default release/NAME)\n"
	"  -t, --threads N worker threads for the rebuild (default: all cores; the result\n"
	"                  does not depend on it)\n"
	"  --keep          keep the temporary cache and rebuilt release, and print where\n"
	"  --json          print the report as one JSON object\n"
	"  -q, --quiet     no line per rebuilt step\n"
	"\n"
	"The temporary folder is made under $TMPDIR (default /tmp); it needs room for the\n"
	"baseline and every tier.\n"
	"\n"
	"exit codes:\n"
	"  0  identical: every digest of the rebuild matches the release\n"
	"  1  a difference (each one listed with its node), or the rebuild failed\n"
	"  2  usage error, or the recipe or the release's qbake.lock cannot be read\n"
	"\n"
	"example:\n"
	"  qbake build tiny.lua && qbake verify tiny.lua\n";

static void differ(json_t *list, const char *node, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void differ(json_t *list, const char *node, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	json_array_append_new(list, json_pack("{s:s, s:s}", "node", node, "what", buf));
}

/* The lock's node labelled label, or NULL. */
static json_t *lock_node(json_t *lock, const char *label)
{
	json_t *n;
	size_t i;

	json_array_foreach(json_object_get(lock, "nodes"), i, n) {
		const char *l = json_string_value(json_object_get(n, "label"));

		if (l && strcmp(l, label) == 0)
			return n;
	}
	return NULL;
}

/* The digest recorded for name in a lock list of [name, sha256, size] rows, or NULL. */
static const char *lock_digest(json_t *rows, const char *name)
{
	json_t *r;
	size_t i;

	json_array_foreach(rows, i, r)
		if (json_string_value(json_array_get(r, 0)) && strcmp(json_string_value(json_array_get(r, 0)), name) == 0)
			return json_string_value(json_array_get(r, 1));
	return NULL;
}

static void compare_node(const graph_node *n, json_t *old, json_t *diffs)
{
	char hex[65];
	const char *was;
	size_t i;
	json_t *r;

	was = json_string_value(json_object_get(old, "key"));
	if (!was || strcmp(was, sha256_hex(n->key, hex)) != 0)
		differ(diffs, n->label, "key: rebuilt %s, the lock says %s", hex, was ? was : "none");
	for (size_t k = 0; k < n->ninputs; k++) {
		was = lock_digest(json_object_get(old, "inputs"), n->inputs[k].name);
		sha256_hex(n->inputs[k].digest, hex);
		if (!was)
			differ(diffs, n->label, "input %s: not in the lock", n->inputs[k].name);
		else if (strcmp(was, hex) != 0)
			differ(diffs, n->label, "input %s: now %s, the lock says %s", n->inputs[k].name, hex, was);
	}
	json_array_foreach(json_object_get(old, "inputs"), i, r) {
		size_t k;

		for (k = 0; k < n->ninputs; k++)
			if (json_string_value(json_array_get(r, 0)) && strcmp(json_string_value(json_array_get(r, 0)), n->inputs[k].name) == 0)
				break;
		if (k == n->ninputs)
			differ(diffs, n->label, "input %s: in the lock but no longer read",
			       json_string_value(json_array_get(r, 0)) ? json_string_value(json_array_get(r, 0)) : "?");
	}
	for (size_t k = 0; k < n->result.nouts; k++) {
		const store_output *o = &n->result.outs[k];

		was = lock_digest(json_object_get(old, "outputs"), o->name);
		sha256_hex(o->digest, hex);
		if (!was)
			differ(diffs, n->label, "output %s: not in the lock", o->name);
		else if (strcmp(was, hex) != 0)
			differ(diffs, n->label, "output %s: rebuilt %s, the lock says %s", o->name, hex, was);
	}
	json_array_foreach(json_object_get(old, "outputs"), i, r) {
		const char *name = json_string_value(json_array_get(r, 0));

		if (name && !graph_output(n, name))
			differ(diffs, n->label, "output %s: in the lock but not rebuilt", name);
	}
}

/* The release's GGUFs against the rebuilt quantize outputs. */
static void compare_files(const graph *g, const char *release, json_t *diffs)
{
	for (size_t i = 0; i < g->n; i++) {
		const graph_node *n = g->nodes[i];
		const store_output *o;
		char path[PATH_MAX + 64], hex[65], got[65];
		uint8_t d[32];
		err e = { 0 };

		if (n->kind != GRAPH_QUANTIZE || !(o = graph_output(n, "model.gguf")))
			continue;
		snprintf(path, sizeof path, "%s/%s-%s.gguf", release, g->r->name, n->tier->name);
		if (sha256_file(path, d, &e) < 0)
			differ(diffs, n->label, "release file: %s", e.msg);
		else if (memcmp(d, o->digest, 32) != 0)
			differ(diffs, n->label, "release file %s: SHA-256 %s, rebuilt %s", path, sha256_hex(d, got),
			       sha256_hex(o->digest, hex));
	}
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

json_t *verify_run(const verify_opts *o, int *build_failed, err *e)
{
	char release[PATH_MAX], path[PATH_MAX + 16], scratch[PATH_MAX], cache[PATH_MAX + 16], out[PATH_MAX + 16];
	const char *tmp = getenv("TMPDIR");
	recipe *r;
	json_t *lock, *diffs = NULL, *report = NULL, *ln;
	json_error_t je;
	store s;
	graph g;
	build_opts bo = { 0 };
	build_result res;
	size_t i;
	int have_store = 0, have_graph = 0;

	*build_failed = 0;
	if (!(r = recipe_load(o->recipe, NULL, e)))
		return NULL;
	snprintf(release, sizeof release, "%s%s", o->release ? o->release : "release/", o->release ? "" : r->name);
	snprintf(path, sizeof path, "%s/qbake.lock", release);
	if (!(lock = json_load_file(path, 0, &je))) {
		err_set(e, "%s: cannot read the release's lock file: %s", path, je.text);
		recipe_free(r);
		return NULL;
	}
	snprintf(scratch, sizeof scratch, "%s/qbake-verify.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(scratch)) {
		err_errno(e, "%s: cannot make a temporary folder", scratch);
		goto done;
	}
	snprintf(cache, sizeof cache, "%s/cache", scratch);
	snprintf(out, sizeof out, "%s/release", scratch);
	if (store_open(&s, cache, e) < 0)
		goto done;
	have_store = 1;
	if (graph_new(&g, r, e) < 0)
		goto done;
	have_graph = 1;
	if (graph_hash_inputs(&g, &s, e) < 0)
		goto done;
	bo.jobs = 1;
	bo.threads = o->threads > 0 ? o->threads : 1;
	bo.quiet = o->quiet;
	bo.out = out;
	if (build_run(&g, &s, &bo, &res, e) < 0) {
		*build_failed = 1;
		err_prefix(e, "the rebuild failed");
		goto done;
	}
	diffs = json_array();
	for (i = 0; i < g.n; i++) {
		json_t *old = lock_node(lock, g.nodes[i]->label);

		if (!old)
			differ(diffs, g.nodes[i]->label, "not in the release's lock");
		else
			compare_node(g.nodes[i], old, diffs);
	}
	json_array_foreach(json_object_get(lock, "nodes"), i, ln) {
		const char *label = json_string_value(json_object_get(ln, "label"));
		size_t k;

		for (k = 0; label && k < g.n; k++)
			if (strcmp(g.nodes[k]->label, label) == 0)
				break;
		if (!label || k == g.n)
			differ(diffs, label ? label : "?", "in the release's lock but not in the rebuild");
	}
	compare_files(&g, release, diffs);
	report = json_pack("{s:s, s:I, s:O, s:b}", "release", release, "nodes", (json_int_t)g.n, "differences", diffs,
			   "identical", json_array_size(diffs) == 0);
	if (o->keep)
		json_object_set_new(report, "scratch", json_string(scratch));
done:
	json_decref(diffs);
	json_decref(lock);
	if (have_graph)
		graph_free(&g);
	if (have_store)
		store_close(&s);
	recipe_free(r);
	if (!o->keep && scratch[0] && strstr(scratch, "qbake-verify."))
		nftw(scratch, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	return report;
}

int verify_main(int argc, char **argv)
{
	static const struct option longs[] = {
		{ "release", required_argument, NULL, 'r' }, { "threads", required_argument, NULL, 't' },
		{ "keep", no_argument, NULL, 'k' },          { "json", no_argument, NULL, 'J' },
		{ "quiet", no_argument, NULL, 'q' },         { NULL, 0, NULL, 0 },
	};
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	verify_opts o = { "recipe.lua", NULL, cores > 0 ? (int)cores : 1, 0, 0 };
	int json = 0, c, failed;
	json_t *r, *d;
	size_t i;
	err e = { 0 };

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "t:q", longs, NULL)) != -1) {
		char *end;

		switch (c) {
		case 'r':
			o.release = optarg;
			break;
		case 't':
			o.threads = (int)strtol(optarg, &end, 10);
			if (*optarg == 0 || *end || o.threads < 1 || o.threads > 4096) {
				fprintf(stderr, "qbake verify: --threads needs a positive whole number, not '%s'\n", optarg);
				return 2;
			}
			break;
		case 'k':
			o.keep = 1;
			break;
		case 'J':
			json = 1;
			break;
		case 'q':
			o.quiet = 1;
			break;
		default:
			fprintf(stderr, "qbake verify: unknown option or missing argument '%s' (see qbake help verify)\n",
				argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc)
		o.recipe = argv[optind++];
	if (optind < argc) {
		fprintf(stderr, "qbake verify: one recipe at a time (extra argument '%s')\n", argv[optind]);
		return 2;
	}
	if (!(r = verify_run(&o, &failed, &e))) {
		fprintf(stderr, "qbake: %s\n", e.msg);
		return failed ? 1 : 2;
	}
	if (json) {
		char *s = json_dumps(r, JSON_INDENT(2) | JSON_SORT_KEYS);

		if (s)
			puts(s);
		free(s);
	} else {
		json_array_foreach(json_object_get(r, "differences"), i, d)
			printf("differs: %s: %s\n", json_string_value(json_object_get(d, "node")),
			       json_string_value(json_object_get(d, "what")));
		printf("%s: %lld node(s) rebuilt from scratch: %s\n", json_string_value(json_object_get(r, "release")),
		       (long long)json_integer_value(json_object_get(r, "nodes")),
		       json_is_true(json_object_get(r, "identical")) ? "every digest identical" : "DIFFERENT");
		if (json_object_get(r, "scratch"))
			printf("kept the rebuild in %s\n", json_string_value(json_object_get(r, "scratch")));
	}
	c = json_is_true(json_object_get(r, "identical")) ? 0 : 1;
	json_decref(r);
	return c;
}
