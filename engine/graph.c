/* graph.c - the build graph of a release */
#include "graph.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "hashkey.h"
#include "sha256.h"

/* Bump a kind's version whenever its action's output changes for the same inputs. */
static const struct {
	const char *name;
	int version;
} kinds[] = {
	[GRAPH_BASELINE] = { "baseline", 1 },
	[GRAPH_OVERLAP] = { "overlap", 1 },
	[GRAPH_IMATRIX] = { "imatrix", 1 },
	[GRAPH_QUANTIZE] = { "quantize", 1 },
	[GRAPH_EVAL] = { "eval", 1 },
};

int graph_version(graph_kind kind)
{
	return kinds[kind].version;
}

const char *graph_kind_name(graph_kind kind)
{
	return kinds[kind].name;
}

/* Compact JSON with sorted keys: the same parameters always give the same bytes. Takes
 * ownership of j. */
static char *canonical(json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);

	json_decref(j);
	return s;
}

static graph_node *add_node(graph *g, graph_kind kind, const char *label, json_t *params, err *e)
{
	graph_node *n = calloc(1, sizeof *n), **grown;

	grown = realloc(g->nodes, (g->n + 1) * sizeof *g->nodes);
	if (!n || !grown) {
		free(n);
		json_decref(params);
		if (grown)
			g->nodes = grown;
		err_set(e, "out of memory");
		return NULL;
	}
	g->nodes = grown;
	n->kind = kind;
	n->label = strdup(label);
	n->params = canonical(params);
	if (!n->label || !n->params) {
		free(n->label);
		free(n->params);
		free(n);
		err_set(e, "out of memory");
		return NULL;
	}
	g->nodes[g->n++] = n;
	return n;
}

static int add_input(graph_node *n, const char *name, const char *path, err *e)
{
	graph_input *grown = realloc(n->inputs, (n->ninputs + 1) * sizeof *n->inputs);

	if (!grown)
		return err_set(e, "out of memory");
	n->inputs = grown;
	memset(&grown[n->ninputs], 0, sizeof *grown);
	grown[n->ninputs].name = strdup(name);
	grown[n->ninputs].path = strdup(path);
	if (!grown[n->ninputs].name || !grown[n->ninputs].path) {
		free(grown[n->ninputs].name);
		free(grown[n->ninputs].path);
		return err_set(e, "out of memory");
	}
	n->ninputs++;
	return 0;
}

static void add_dep(graph_node *n, graph_node *dep)
{
	n->deps[n->ndeps++] = dep;
}

/* The files of an HF checkpoint folder that conversion reads. */
static int hf_file(const char *name)
{
	static const char *exact[] = {
		"config.json", "generation_config.json", "tokenizer.model", "tokenizer.json",
		"tokenizer_config.json", "model.safetensors.index.json",
	};
	size_t len = strlen(name);

	for (size_t i = 0; i < sizeof exact / sizeof *exact; i++)
		if (strcmp(name, exact[i]) == 0)
			return 1;
	return len > 12 && strcmp(name + len - 12, ".safetensors") == 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int add_hf_inputs(graph_node *n, const char *dir, err *e)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char **names = NULL;
	size_t count = 0;
	int rc = 0;

	if (!d)
		return err_errno(e, "%s: cannot read the model folder", dir);
	while ((de = readdir(d)) != NULL) {
		char **grown;

		if (!hf_file(de->d_name))
			continue;
		grown = realloc(names, (count + 1) * sizeof *names);
		if (!grown || !(grown[count] = strdup(de->d_name))) {
			names = grown ? grown : names;
			rc = err_set(e, "out of memory");
			break;
		}
		names = grown;
		count++;
	}
	closedir(d);
	if (rc == 0 && count == 0)
		rc = err_set(e, "%s: no config.json or safetensors files: not a Hugging Face checkpoint folder", dir);
	qsort(names, count, sizeof *names, cmp_str);
	for (size_t i = 0; i < count && rc == 0; i++) {
		char path[4096];

		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		rc = add_input(n, names[i], path, e);
	}
	for (size_t i = 0; i < count; i++)
		free(names[i]);
	free(names);
	return rc;
}

static int add_corpus_inputs(graph_node *n, const recipe_corpus *c, const char *role, err *e)
{
	for (size_t i = 0; i < c->n_files; i++) {
		char name[64];

		snprintf(name, sizeof name, "%s[%zu]", role, i);
		if (add_input(n, name, c->files[i].path, e) < 0)
			return -1;
	}
	return 0;
}

static graph_node *baseline_node(graph *g, const recipe *r, err *e)
{
	json_t *p = json_pack("{s:s, s:s}", "outtype", recipe_baseline_name(r->baseline), "name", r->name);
	graph_node *n;

	if (r->model.kind == RECIPE_MODEL_GIT) {
		json_decref(p);
		err_set(e, "%s:%d: git sources are not supported yet (the provenance issue adds them); "
			   "use hf { path = ... } on a local checkout", r->path, r->model.line);
		return NULL;
	}
	json_object_set_new(p, "source", json_string(r->model.kind == RECIPE_MODEL_HF ? "hf" : "gguf"));
	n = add_node(g, GRAPH_BASELINE, "baseline", p, e);
	if (!n)
		return NULL;
	if (r->model.kind == RECIPE_MODEL_HF) {
		if (add_hf_inputs(n, r->model.local.path, e) < 0)
			return NULL;
	} else if (add_input(n, "model.gguf", r->model.local.path, e) < 0) {
		return NULL;
	}
	return n;
}

/* Rule overrides, which the outputs' lineage records (so they are parameters). */
static json_t *overrides(const recipe *r)
{
	json_t *o = json_object();

	if (r->requantized_baseline.set)
		json_object_set_new(o, "requantized_baseline", json_string(r->requantized_baseline.reason));
	if (r->eval_overlap.set)
		json_object_set_new(o, "eval_overlap", json_pack("{s:s, s:f}", "reason", r->eval_overlap.reason,
								 "max_percent", r->eval_overlap.max));
	return o;
}

static json_t *tier_params(const recipe *r, const recipe_tier *t)
{
	json_t *types = json_array();
	json_t *p;

	for (size_t i = 0; i < t->n_tensor_types; i++)
		json_array_append_new(types, json_pack("[s,s]", t->tensor_types[i].pattern, t->tensor_types[i].type));
	p = json_pack("{s:s, s:b, s:b, s:s, s:s, s:o, s:o}", "tier", t->name, "pure", t->pure,
		      "leave_output_tensor", t->leave_output_tensor, "output_tensor_type", t->output_tensor_type,
		      "token_embedding_type", t->token_embedding_type, "tensor_types", types, "overrides", overrides(r));
	return p;
}

static graph_node *quantize_node(graph *g, const recipe_tier *t, graph_node *imatrix, const char *label, err *e)
{
	graph_node *n = add_node(g, GRAPH_QUANTIZE, label, tier_params(g->r, t), e);

	if (!n)
		return NULL;
	n->tier = t;
	add_dep(n, g->baseline);
	if (imatrix)
		add_dep(n, imatrix);
	return n;
}

static graph_node *imatrix_node(graph *g, const recipe *r, err *e)
{
	const recipe_imatrix *im = &r->imatrix;
	graph_node *n, *on = g->baseline;
	json_t *p;

	if (im->kind == RECIPE_IMATRIX_FILE) {
		n = add_node(g, GRAPH_IMATRIX, "imatrix", json_pack("{s:s}", "import", "file"), e);
		if (!n || add_input(n, "imatrix", im->file.path, e) < 0)
			return NULL;
		add_dep(n, g->baseline);
		return n;
	}
	if (im->from[0]) {
		char label[64];

		/* A plain tier of its own: no imatrix, no options. */
		snprintf(g->from.name, sizeof g->from.name, "%s", im->from);
		snprintf(label, sizeof label, "quantize %s (for the imatrix)", im->from);
		on = quantize_node(g, &g->from, NULL, label, e);
		if (!on)
			return NULL;
	}
	p = json_pack("{s:I, s:I, s:s}", "ctx", (json_int_t)im->ctx, "chunks", (json_int_t)im->chunks, "from",
		      im->from);
	n = add_node(g, GRAPH_IMATRIX, "imatrix", p, e);
	if (!n || add_corpus_inputs(n, &r->corpora[im->corpus], "calib", e) < 0)
		return NULL;
	add_dep(n, on);
	if (on != g->baseline)
		add_dep(n, g->baseline); /* the baseline it must belong to, for the imatrix rule */
	if (g->overlap)
		add_dep(n, g->overlap); /* no calibration on text the evaluation will use */
	return n;
}

static graph_node *eval_node(graph *g, const recipe *r, graph_node *model, const recipe_tier *t, err *e)
{
	char label[64];
	graph_node *n;
	json_t *p = json_pack("{s:I, s:I, s:I}", "ctx", (json_int_t)r->eval.ctx, "chunks", (json_int_t)r->eval.chunks,
			      "predict", (json_int_t)r->eval.predict);

	snprintf(label, sizeof label, "eval %s", t ? t->name : "baseline");
	n = add_node(g, GRAPH_EVAL, label, p, e);
	if (!n || add_corpus_inputs(n, &r->corpora[r->eval.corpus], "eval", e) < 0)
		return NULL;
	if (r->eval.prompts.rel && add_input(n, "prompts", r->eval.prompts.path, e) < 0)
		return NULL;
	n->tier = t;
	add_dep(n, model);
	if (g->base_eval)
		add_dep(n, g->base_eval); /* the baseline's log-probabilities, for KLD */
	if (g->overlap)
		add_dep(n, g->overlap); /* no evaluation on text the calibration used */
	return n;
}

int graph_new(graph *g, const recipe *r, err *e)
{
	memset(g, 0, sizeof *g);
	g->r = r;
	if (!(g->baseline = baseline_node(g, r, e)))
		goto fail;
	if (r->imatrix.kind == RECIPE_IMATRIX_COMPUTE && r->eval.set) {
		g->overlap = add_node(g, GRAPH_OVERLAP, "held-out check", json_object(), e);
		if (!g->overlap || add_corpus_inputs(g->overlap, &r->corpora[r->imatrix.corpus], "calib", e) < 0 ||
		    add_corpus_inputs(g->overlap, &r->corpora[r->eval.corpus], "eval", e) < 0)
			goto fail;
	}
	if (r->imatrix.kind != RECIPE_IMATRIX_NONE && !(g->imatrix = imatrix_node(g, r, e)))
		goto fail;
	if (r->eval.set && !(g->base_eval = eval_node(g, r, g->baseline, NULL, e)))
		goto fail;
	for (size_t i = 0; i < r->n_tiers; i++) {
		char label[64];
		graph_node *q;

		snprintf(label, sizeof label, "quantize %s", r->tiers[i].name);
		if (!(q = quantize_node(g, &r->tiers[i], g->imatrix, label, e)))
			goto fail;
		if (r->eval.set && !eval_node(g, r, q, &r->tiers[i], e))
			goto fail;
	}
	return 0;
fail:
	graph_free(g);
	return -1;
}

graph_node *graph_quantize_node(const graph *g, const char *tier)
{
	for (size_t i = 0; i < g->n; i++)
		if (g->nodes[i]->kind == GRAPH_QUANTIZE && g->nodes[i]->tier != &g->from &&
		    strcmp(g->nodes[i]->tier->name, tier) == 0)
			return g->nodes[i];
	return NULL;
}

graph_node *graph_eval_node(const graph *g, const graph_node *quantize)
{
	for (size_t i = 0; i < g->n; i++)
		if (g->nodes[i]->kind == GRAPH_EVAL && g->nodes[i]->ndeps > 0 && g->nodes[i]->deps[0] == quantize)
			return g->nodes[i];
	return NULL;
}

int graph_add_fallback(graph *g, const char *tier, err *e)
{
	recipe_tier *t, **grown;
	char label[64];
	graph_node *q;

	if (graph_quantize_node(g, tier))
		return 0;
	t = calloc(1, sizeof *t);
	grown = realloc(g->fallbacks, (g->n_fallbacks + 1) * sizeof *grown);
	if (!t || !grown) {
		free(t);
		if (grown)
			g->fallbacks = grown;
		return err_set(e, "out of memory");
	}
	g->fallbacks = grown;
	g->fallbacks[g->n_fallbacks++] = t;
	snprintf(t->name, sizeof t->name, "%s", tier);
	snprintf(label, sizeof label, "quantize %s", tier);
	if (!(q = quantize_node(g, t, g->imatrix, label, e)))
		return -1;
	if (g->r->eval.set && !eval_node(g, g->r, q, t, e))
		return -1;
	return 1;
}

void graph_free(graph *g)
{
	for (size_t i = 0; i < g->n; i++) {
		graph_node *n = g->nodes[i];

		for (size_t k = 0; k < n->ninputs; k++) {
			free(n->inputs[k].name);
			free(n->inputs[k].path);
		}
		free(n->inputs);
		free(n->label);
		free(n->params);
		store_action_free(&n->result);
		free(n);
	}
	free(g->nodes);
	for (size_t i = 0; i < g->n_fallbacks; i++)
		free(g->fallbacks[i]);
	free(g->fallbacks);
	memset(g, 0, sizeof *g);
}

int graph_hash_inputs(graph *g, store *s, err *e)
{
	for (size_t i = 0; i < g->n; i++) {
		graph_node *n = g->nodes[i];

		for (size_t k = 0; k < n->ninputs; k++)
			if (store_hash_file(s, n->inputs[k].path, n->inputs[k].digest, &n->inputs[k].size, e) < 0)
				return -1;
	}
	return 0;
}

/* A digest of a node's direct inputs (names, digests, sizes): how lineage names a
 * source checkpoint or a corpus as one value. */
void graph_inputs_digest(const graph_node *n, uint8_t d[32])
{
	hkey h;

	if (hkey_begin(&h, "qbake-inputs 1", NULL) < 0) {
		memset(d, 0, 32);
		return;
	}
	hkey_list(&h, n->ninputs);
	for (size_t k = 0; k < n->ninputs; k++) {
		hkey_list(&h, 3);
		hkey_str(&h, n->inputs[k].name);
		hkey_digest(&h, n->inputs[k].digest);
		hkey_u64(&h, n->inputs[k].size);
	}
	hkey_end(&h, d);
}

int graph_key(graph_node *n, err *e)
{
	hkey h;

	for (int i = 0; i < n->ndeps; i++)
		if (n->deps[i]->state != GRAPH_CACHED && n->deps[i]->state != GRAPH_BUILT)
			return 0;
	/* The tool version is part of every key: outputs record it in their lineage. */
	if (hkey_begin(&h, "qbake-node 1 qbake " QBAKE_VERSION, e) < 0)
		return err_prefix(e, "%s", n->label);
	hkey_field(&h, "action");
	hkey_str(&h, graph_kind_name(n->kind));
	hkey_field(&h, "version");
	hkey_i64(&h, graph_version(n->kind));
	hkey_field(&h, "params");
	hkey_str(&h, n->params);
	hkey_field(&h, "inputs");
	hkey_list(&h, n->ninputs);
	for (size_t k = 0; k < n->ninputs; k++) {
		hkey_list(&h, 3);
		hkey_str(&h, n->inputs[k].name);
		hkey_digest(&h, n->inputs[k].digest);
		hkey_u64(&h, n->inputs[k].size);
	}
	/* Each dependency by its key as well as its outputs: lineage written into an output
	 * names what its inputs were made from (corpus digests, say), so that must count. */
	hkey_field(&h, "deps");
	hkey_list(&h, (uint64_t)n->ndeps);
	for (int i = 0; i < n->ndeps; i++) {
		const store_action *a = &n->deps[i]->result;

		hkey_list(&h, 2);
		hkey_digest(&h, n->deps[i]->key);
		hkey_list(&h, a->nouts);
		for (size_t k = 0; k < a->nouts; k++) {
			hkey_list(&h, 3);
			hkey_str(&h, a->outs[k].name);
			hkey_digest(&h, a->outs[k].digest);
			hkey_u64(&h, a->outs[k].size);
		}
	}
	hkey_end(&h, n->key);
	n->keyed = 1;
	return 1;
}

const store_output *graph_output(const graph_node *n, const char *name)
{
	for (size_t i = 0; i < n->result.nouts; i++)
		if (strcmp(n->result.outs[i].name, name) == 0)
			return &n->result.outs[i];
	return NULL;
}
