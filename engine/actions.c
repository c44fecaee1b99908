/* actions.c - what each kind of graph node does when it is not in the cache */
#include "actions.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "convert.h"
#include "eval.h"
#include "model.h"
#include "tokenizer.h"
#include "gguf.h"
#include "half.h"
#include "imatrix.h"
#include "quant.h"
#include "quantize.h"
#include "rules.h"
#include "sha256.h"
#include "tiers.h"

const char *action_output_path(const action_env *env, const graph_node *n, const char *name, char *buf,
			       size_t len)
{
	const store_output *o = graph_output(n, name);

	return o ? store_object_path(env->s, o->digest, buf, len) : NULL;
}

/* A private folder inside the cache for one action's outputs, so they can be linked into
 * the store (same filesystem) and removed whatever happens. */
typedef struct scratch {
	char dir[4096];
} scratch;

static int scratch_open(scratch *sc, const action_env *env, err *e)
{
	snprintf(sc->dir, sizeof sc->dir, "%s/tmp/action.XXXXXX", env->s->dir);
	if (!mkdtemp(sc->dir))
		return err_errno(e, "%s: cannot create a scratch folder", sc->dir);
	return 0;
}

static const char *scratch_path(const scratch *sc, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", sc->dir, name);
	return buf;
}

static void scratch_close(scratch *sc, const char *name)
{
	char path[4200];

	if (name)
		unlink(scratch_path(sc, name, path, sizeof path));
	rmdir(sc->dir);
}

/* Moves a finished file from the scratch folder into the store as output name. */
static int put_output(const action_env *env, graph_node *n, const char *path, const char *name, err *e)
{
	uint8_t d[32];
	uint64_t size;

	if (store_put_file(env->s, path, STORE_PUT_LINK, d, &size, e) < 0)
		return -1;
	return store_action_add(&n->result, name, d, size, e);
}

static int set_figures(graph_node *n, json_t *fig, err *e)
{
	free(n->result.figures);
	n->result.figures = json_dumps(fig, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(fig);
	return n->result.figures ? 0 : err_set(e, "%s: out of memory", n->label);
}

/* ---- baseline ---- */

/* A 2-D float weight whose blocks could betray an earlier quantization. */
static int grid_candidate(const gguf_tensor *t)
{
	size_t len = strlen(t->name);

	if (t->n_dims < 2 || t->ne[0] % 32 != 0)
		return 0;
	if (t->type != GGUF_TYPE_F16 && t->type != GGUF_TYPE_BF16 && t->type != GGUF_TYPE_F32)
		return 0;
	return len > 7 && strcmp(t->name + len - 7, ".weight") == 0 && !strstr(t->name, "norm");
}

/* Rows spread over the tensor, widened to f32: enough blocks for evidence, whatever
 * the tensor's size. */
enum { GRID_ROWS = 64, GRID_BLOCKS = 2048 };

static json_t *grid_evidence(const gguf_tensor *t)
{
	uint64_t rows = gguf_nelements(t) / t->ne[0], take = rows < GRID_ROWS ? rows : GRID_ROWS;
	uint64_t row_bytes = gguf_row_size(t->type, t->ne[0]);
	float *x = malloc(take * t->ne[0] * sizeof *x);
	double tol = t->type == GGUF_TYPE_F16 ? 0x1p-11 : t->type == GGUF_TYPE_BF16 ? 0x1p-8 : 0x1p-24;
	rules_grid g;

	if (!x)
		return NULL;
	for (uint64_t i = 0; i < take; i++) {
		uint64_t r = i * rows / take;

		quant_dequant_row(t->type, (const uint8_t *)t->data + r * row_bytes, x + i * t->ne[0], (int64_t)t->ne[0]);
	}
	rules_grid_check(x, (int64_t)take, (int64_t)t->ne[0], tol, GRID_BLOCKS, &g);
	free(x);
	if (!rules_grid_suspicious(&g))
		return json_null();
	return json_pack("{s:s, s:I, s:I, s:i, s:i}", "tensor", t->name, "blocks", (json_int_t)(g.blocks - g.undecided),
			 "on_grid", (json_int_t)g.on_grid, "bits", g.bits, "block", g.block);
}

/* Checks an unquantized baseline: refuses quantized tensors outright, and records the
 * grid evidence of every float weight (the engine decides, with the recipe's override). */
static int check_baseline(const char *path, json_t *fig, err *e)
{
	gguf_file f;
	json_t *suspects = json_array();
	uint64_t checked = 0;

	if (gguf_open(&f, path, e) < 0) {
		json_decref(suspects);
		return -1;
	}
	for (uint64_t i = 0; i < f.n_tensors; i++) {
		const gguf_tensor *t = &f.tensors[i];
		const gguf_type_info *ti = gguf_type(t->type);
		json_t *ev;

		if (ti && ti->quantized) {
			err_set(e, "tensor %s is %s: the baseline must be unquantized (F32, F16 or BF16); "
				   "quantizing it again would compound the error - start from the original checkpoint",
				t->name, ti->name);
			gguf_close(&f);
			json_decref(suspects);
			return -1;
		}
		if (!grid_candidate(t))
			continue;
		checked++;
		ev = grid_evidence(t);
		if (!ev) {
			gguf_close(&f);
			json_decref(suspects);
			return err_set(e, "out of memory");
		}
		if (json_is_null(ev))
			json_decref(ev);
		else
			json_array_append_new(suspects, ev);
	}
	json_object_set_new(fig, "grid_checked", json_integer((json_int_t)checked));
	json_object_set_new(fig, "grid_suspects", suspects);
	{
		uint64_t params = 0;

		for (uint64_t i = 0; i < f.n_tensors; i++)
			params += gguf_nelements(&f.tensors[i]);
		json_object_set_new(fig, "parameters", json_integer((json_int_t)params));
	}
	gguf_close(&f);
	return 0;
}

static int run_baseline(const graph *g, graph_node *n, const action_env *env, err *e)
{
	const recipe *r = g->r;
	json_t *fig = json_object();
	char out[4200];
	scratch sc;
	int rc = -1;

	if (scratch_open(&sc, env, e) < 0) {
		json_decref(fig);
		return -1;
	}
	scratch_path(&sc, "model.gguf", out, sizeof out);
	if (r->model.kind == RECIPE_MODEL_HF) {
		convert_opts co;

		memset(&co, 0, sizeof co);
		co.outtype = convert_outtype(recipe_baseline_name(r->baseline));
		co.name = r->name;
		if (convert_run(r->model.local.path, out, &co, NULL, e) < 0)
			goto done;
	} else {
		/* An imported GGUF is copied into the store as it is. */
		uint8_t d[32];
		uint64_t size;

		if (check_baseline(r->model.local.path, fig, e) < 0)
			goto done;
		if (store_put_file(env->s, r->model.local.path, 0, d, &size, e) < 0 ||
		    store_action_add(&n->result, "model.gguf", d, size, e) < 0)
			goto done;
		rc = set_figures(n, fig, e);
		fig = NULL;
		goto done;
	}
	if (check_baseline(out, fig, e) < 0 || put_output(env, n, out, "model.gguf", e) < 0)
		goto done;
	rc = set_figures(n, fig, e);
	fig = NULL;
done:
	json_decref(fig);
	scratch_close(&sc, "model.gguf");
	return rc;
}

/* ---- held-out check ---- */

/* Concatenates the inputs whose names start with role ("calib[", "eval["). */
static char *read_corpus(const graph_node *n, const char *role, size_t *len, err *e)
{
	size_t cap = 0, used = 0, rl = strlen(role);
	char *buf = NULL;

	for (size_t i = 0; i < n->ninputs; i++) {
		FILE *f;
		char *grown;

		if (strncmp(n->inputs[i].name, role, rl) != 0)
			continue;
		if (!(f = fopen(n->inputs[i].path, "rb"))) {
			free(buf);
			err_errno(e, "%s: cannot open", n->inputs[i].path);
			return NULL;
		}
		cap = used + n->inputs[i].size + 2;
		if (!(grown = realloc(buf, cap))) {
			fclose(f);
			free(buf);
			err_set(e, "out of memory reading %s", n->inputs[i].path);
			return NULL;
		}
		buf = grown;
		/* Files are joined by a newline; one file reads exactly as the reference tools read it. */
		if (used)
			buf[used++] = '\n';
		used += fread(buf + used, 1, n->inputs[i].size, f);
		fclose(f);
	}
	if (buf)
		buf[used] = 0;
	*len = used;
	return buf ? buf : calloc(1, 1);
}

static int run_overlap(graph_node *n, err *e)
{
	size_t nc = 0, ne = 0;
	char *calib = read_corpus(n, "calib[", &nc, e), *eval = calib ? read_corpus(n, "eval[", &ne, e) : NULL;
	rules_overlap o;
	int rc = -1;

	if (calib && eval) {
		if (rules_text_overlap(calib, nc, eval, ne, &o) < 0)
			err_set(e, "out of memory measuring the corpus overlap");
		else
			rc = set_figures(n, json_pack("{s:I, s:I, s:f, s:I, s:s}", "shingles", (json_int_t)o.shingles,
						      "shared", (json_int_t)o.shared, "fraction", o.fraction, "first_at",
						      (json_int_t)o.first_at, "first", o.first), e);
	}
	free(calib);
	free(eval);
	return rc;
}

/* An imatrix that says which baseline it came from must be used on that one only. Legacy
 * .dat files and foreign GGUF imatrices do not say; they are checked by shape instead. */
static int check_imatrix_baseline(const char *imx_path, const uint8_t base[32], err *e)
{
	char hex[65];
	const char *recorded;
	gguf_file f;
	int rc = 0;
	err ignored = { 0 };

	if (gguf_open(&f, imx_path, &ignored) < 0)
		return 0; /* not a GGUF: the legacy format */
	recorded = gguf_meta_get_str(&f.meta, "qbake.imatrix.baseline_sha256");
	if (recorded && strcmp(recorded, sha256_hex(base, hex)) != 0)
		rc = err_set(e, "%s was computed from the baseline with SHA-256 %s, not from this one (%s): an "
				"importance matrix is only valid for the baseline it came from",
			     imx_path, recorded, hex);
	gguf_close(&f);
	return rc;
}

/* ---- quantize ---- */

static int tier_opts(const recipe_tier *t, tier_options *o, tier_rule **rules, err *e)
{
	memset(o, 0, sizeof *o);
	o->pure = t->pure;
	o->leave_output = t->leave_output_tensor;
	o->output_type = t->output_tensor_type[0] ? gguf_type_by_name(t->output_tensor_type) : -1;
	o->token_embd_type = t->token_embedding_type[0] ? gguf_type_by_name(t->token_embedding_type) : -1;
	*rules = NULL;
	if (t->n_tensor_types) {
		*rules = calloc(t->n_tensor_types, sizeof **rules);
		if (!*rules)
			return err_set(e, "out of memory");
	}
	for (size_t i = 0; i < t->n_tensor_types; i++) {
		char arg[1024];

		snprintf(arg, sizeof arg, "%s=%s", t->tensor_types[i].pattern, t->tensor_types[i].type);
		if (tier_rule_parse(&(*rules)[i], arg, e) < 0) {
			tier_rules_free(*rules, i);
			*rules = NULL;
			return -1;
		}
		o->n_rules = i + 1;
	}
	o->rules = *rules;
	return 0;
}

static int set_hex(gguf_meta *m, const char *key, const uint8_t d[32])
{
	char hex[65];

	return gguf_meta_set_str(m, key, sha256_hex(d, hex));
}

/* The qbake.* lineage keys of a quantized file: where every input came from. Each value
 * is a function of the node's key (which covers its dependencies' keys), so a cached
 * output always carries the lineage it would be built with now. */
static int lineage_quantize(const graph *g, const graph_node *n, gguf_meta *m)
{
	const graph_node *imx = n->ndeps > 1 ? n->deps[1] : NULL;
	const recipe *r = g->r;
	uint8_t d[32];
	int rc = 0;

	rc |= gguf_meta_set_str(m, "qbake.version", QBAKE_VERSION);
	rc |= gguf_meta_set_str(m, "qbake.release", r->name);
	rc |= gguf_meta_set_str(m, "qbake.tier", n->tier->name);
	rc |= set_hex(m, "qbake.node.key", n->key);
	graph_inputs_digest(g->baseline, d);
	rc |= set_hex(m, "qbake.source.sha256", d);
	rc |= gguf_meta_set_str(m, "qbake.baseline.type", recipe_baseline_name(r->baseline));
	rc |= set_hex(m, "qbake.baseline.sha256", graph_output(g->baseline, "model.gguf")->digest);
	if (imx) {
		int imported = r->imatrix.kind == RECIPE_IMATRIX_FILE;

		rc |= set_hex(m, "qbake.imatrix.sha256", graph_output(imx, "imatrix.gguf")->digest);
		rc |= gguf_meta_set_str(m, "qbake.imatrix.origin", imported ? "imported" : "computed");
		if (!imported) {
			graph_inputs_digest(imx, d);
			rc |= set_hex(m, "qbake.imatrix.corpus.sha256", d);
			rc |= gguf_meta_set_u64(m, "qbake.imatrix.ctx", (uint64_t)r->imatrix.ctx);
			rc |= gguf_meta_set_u64(m, "qbake.imatrix.chunks", (uint64_t)r->imatrix.chunks);
			if (r->imatrix.from[0])
				rc |= gguf_meta_set_str(m, "qbake.imatrix.from", r->imatrix.from);
		}
	}
	if (r->requantized_baseline.set)
		rc |= gguf_meta_set_str(m, "qbake.override.requantized_baseline", r->requantized_baseline.reason);
	if (r->eval_overlap.set)
		rc |= gguf_meta_set_str(m, "qbake.override.eval_overlap", r->eval_overlap.reason);
	return rc ? -1 : 0;
}

static int run_quantize(const graph *g, graph_node *n, const action_env *env, err *e)
{
	char base[4200], imx_path[4200], out[4200], imx_name[256];
	const graph_node *imx_node = n->ndeps > 1 ? n->deps[1] : NULL;
	quantize_params qp;
	quantize_plan plan;
	tier_rule *rules = NULL;
	imx_file imx;
	gguf_file in;
	scratch sc;
	int rc = -1, have_imx = 0, have_in = 0, have_plan = 0;

	memset(&qp, 0, sizeof qp);
	memset(&plan, 0, sizeof plan);
	if (!(qp.tier = tier_by_name(n->tier->name)))
		return err_set(e, "%s: unknown tier %s", n->label, n->tier->name);
	if (tier_opts(n->tier, &qp.opt, &rules, e) < 0)
		return -1;
	if (scratch_open(&sc, env, e) < 0)
		goto done;
	action_output_path(env, g->baseline, "model.gguf", base, sizeof base);
	if (gguf_open(&in, base, e) < 0)
		goto done;
	have_in = 1;
	if (imx_node) {
		action_output_path(env, imx_node, "imatrix.gguf", imx_path, sizeof imx_path);
		if (check_imatrix_baseline(imx_path, graph_output(g->baseline, "model.gguf")->digest, e) < 0 ||
		    imx_load(&imx, imx_path, e) < 0)
			goto done;
		have_imx = 1;
		qp.imatrix = &imx;
		/* Recorded as quantize.imatrix.file: a stable name, never a cache path. */
		snprintf(imx_name, sizeof imx_name, "%s.imatrix.gguf", g->r->name);
		qp.imatrix_path = imx_name;
	}
	qp.threads = env->threads;
	if (quantize_plan_make(&plan, &in, &qp, e) < 0)
		goto done;
	have_plan = 1;
	if (lineage_quantize(g, n, &plan.meta) < 0) {
		err_set(e, "out of memory");
		goto done;
	}
	scratch_path(&sc, "model.gguf", out, sizeof out);
	if (quantize_run(&plan, &in, out, env->threads, NULL, NULL, e) < 0)
		goto done;
	if (put_output(env, n, out, "model.gguf", e) < 0)
		goto done;
	rc = set_figures(n, json_pack("{s:I, s:I, s:I, s:f}", "in_bytes", (json_int_t)plan.in_bytes, "out_bytes",
				      (json_int_t)plan.out_bytes, "parameters", (json_int_t)plan.n_elements, "bpw",
				      plan.n_elements ? 8.0 * (double)plan.out_bytes / (double)plan.n_elements : 0.0),
			 e);
done:
	if (rc < 0)
		err_prefix(e, "%s", n->label);
	if (have_plan)
		quantize_plan_free(&plan);
	if (have_imx)
		imx_free(&imx);
	if (have_in)
		gguf_close(&in);
	tier_rules_free(rules, qp.opt.n_rules);
	scratch_close(&sc, "model.gguf");
	return rc;
}

/* ---- imatrix ---- */

/* An imported imatrix must fit the baseline: every entry names one of its matrices and
 * has that matrix's row length. */
static int check_imported_imatrix(const char *imx_path, const char *base_path, err *e)
{
	gguf_file base;
	imx_file imx;
	int rc = 0;

	if (imx_load(&imx, imx_path, e) < 0)
		return -1;
	if (gguf_open(&base, base_path, e) < 0) {
		imx_free(&imx);
		return -1;
	}
	for (size_t i = 0; i < imx.n && rc == 0; i++) {
		const gguf_tensor *t = gguf_find_tensor(&base, imx.e[i].name);

		if (!t)
			rc = err_set(e, "%s: entry %s names no tensor of the baseline: this imatrix was made "
					"for another model", imx_path, imx.e[i].name);
		else if (imx.e[i].n != t->ne[0] * imx.e[i].n_mat)
			rc = err_set(e, "%s: entry %s has %llu columns, the baseline's tensor has rows of %llu: "
					"this imatrix was made for another model",
				     imx_path, imx.e[i].name, (unsigned long long)imx.e[i].n,
				     (unsigned long long)t->ne[0]);
	}
	gguf_close(&base);
	imx_free(&imx);
	return rc;
}

/* A model file opened for inference: the mapping, its vocabulary and the model. */
typedef struct loaded {
	gguf_file f;
	tok_vocab *v;
	model *m;
	int open;
} loaded;

static int load_model(loaded *l, const char *path, int threads, err *e)
{
	memset(l, 0, sizeof *l);
	if (gguf_open(&l->f, path, e) < 0)
		return -1;
	l->open = 1;
	if (!(l->v = tok_load(&l->f.meta, e)) || !(l->m = model_load(&l->f, threads, e)))
		return -1;
	return 0;
}

static void unload_model(loaded *l)
{
	model_free(l->m);
	tok_free(l->v);
	if (l->open)
		gguf_close(&l->f);
	memset(l, 0, sizeof *l);
}

/* The base names of the files whose input names start with role, for the record. */
static const char **input_names(const graph_node *n, const char *role, size_t *count)
{
	const char **names = calloc(n->ninputs + 1, sizeof *names);
	size_t rl = strlen(role);

	*count = 0;
	for (size_t i = 0; names && i < n->ninputs; i++) {
		const char *slash;

		if (strncmp(n->inputs[i].name, role, rl) != 0)
			continue;
		slash = strrchr(n->inputs[i].path, '/');
		names[(*count)++] = slash ? slash + 1 : n->inputs[i].path;
	}
	return names;
}

/* llama-imatrix's method on the baseline (or on imatrix.from's tier of it), recording the
 * baseline's digest so the quantize step can check the pairing. */
static int compute_imatrix(const graph *g, graph_node *n, const action_env *env, err *e)
{
	const graph_node *on = n->deps[0];
	const recipe_imatrix *im = &g->r->imatrix;
	char path[4200], out[4200], hex[65];
	const char *extra[2], **datasets = NULL;
	size_t len = 0, nsets = 0;
	char *text = NULL;
	eval_imx imx;
	loaded l;
	scratch sc;
	int rc = -1;

	memset(&imx, 0, sizeof imx);
	if (scratch_open(&sc, env, e) < 0)
		return -1;
	if (load_model(&l, action_output_path(env, on, "model.gguf", path, sizeof path), env->threads, e) < 0)
		goto done;
	if (!(text = read_corpus(n, "calib[", &len, e)))
		goto done;
	if (eval_imatrix(l.m, l.v, text, len, (int)im->ctx, (int)im->chunks, NULL, NULL, &imx, e) < 0)
		goto done;
	extra[0] = "qbake.imatrix.baseline_sha256";
	extra[1] = sha256_hex(graph_output(g->baseline, "model.gguf")->digest, hex);
	datasets = input_names(n, "calib[", &nsets);
	scratch_path(&sc, "imatrix.gguf", out, sizeof out);
	if (!datasets || eval_imx_save_gguf(&imx, out, datasets, nsets, extra, 1, e) < 0)
		goto done;
	if (put_output(env, n, out, "imatrix.gguf", e) < 0)
		goto done;
	rc = set_figures(n, json_pack("{s:i, s:i, s:f, s:f}", "chunks", imx.chunks, "ctx", imx.chunk_size, "ppl",
				      imx.ppl.ppl, "ppl_err", imx.ppl.ppl_err), e);
done:
	if (rc < 0)
		err_prefix(e, "%s", n->label);
	free(datasets);
	free(text);
	eval_imx_free(&imx);
	unload_model(&l);
	scratch_close(&sc, "imatrix.gguf");
	return rc;
}

static int run_imatrix(const graph *g, graph_node *n, const action_env *env, err *e)
{
	char base[4200];
	uint8_t d[32];
	uint64_t size;

	action_output_path(env, g->baseline, "model.gguf", base, sizeof base);
	if (n->ninputs == 1 && strcmp(n->inputs[0].name, "imatrix") == 0) {
		if (check_imatrix_baseline(n->inputs[0].path, graph_output(g->baseline, "model.gguf")->digest, e) < 0 ||
		    check_imported_imatrix(n->inputs[0].path, base, e) < 0)
			return -1;
		if (store_put_file(env->s, n->inputs[0].path, 0, d, &size, e) < 0 ||
		    store_action_add(&n->result, "imatrix.gguf", d, size, e) < 0)
			return -1;
		return set_figures(n, json_pack("{s:b}", "imported", 1), e);
	}
	return compute_imatrix(g, n, env, e);
}

/* ---- eval ---- */

/* Greedy continuations of the prompts file, one JSON array of token ids per line. */
static json_t *smoke_tests(const graph_node *n, const loaded *l, int predict, err *e)
{
	json_t *all = json_array();
	size_t len = 0;
	char *text = NULL, *line, *save = NULL;

	for (size_t i = 0; i < n->ninputs; i++)
		if (strcmp(n->inputs[i].name, "prompts") == 0) {
			text = read_corpus(n, "prompts", &len, e);
			if (!text) {
				json_decref(all);
				return NULL;
			}
		}
	for (line = text ? strtok_r(text, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
		tok_ids ids = { 0 };
		json_t *row = json_array();

		if (eval_generate(l->m, l->v, line, strlen(line), predict, &ids, e) < 0) {
			json_decref(row);
			json_decref(all);
			free(text);
			return NULL;
		}
		for (size_t k = 0; k < ids.n; k++)
			json_array_append_new(row, json_integer(ids.ids[k]));
		tok_ids_free(&ids);
		json_array_append_new(all, row);
	}
	free(text);
	return all;
}

/* The baseline's evaluation: its perplexity, and its per-token log-probabilities as an
 * artifact of their own, so each tier's KL-divergence reads them instead of running the
 * baseline again. */
static int eval_baseline(const graph *g, graph_node *n, const action_env *env, const loaded *l, const char *text,
			 size_t len, err *e)
{
	const recipe_eval *ev = &g->r->eval;
	char out[4200];
	eval_ppl ppl;
	json_t *smoke;
	scratch sc;
	int rc = -1;

	if (scratch_open(&sc, env, e) < 0)
		return -1;
	scratch_path(&sc, "logprobs.bin", out, sizeof out);
	if (eval_base_save(l->m, l->v, text, len, (int)ev->ctx, (int)ev->chunks, out, &ppl, e) < 0 ||
	    put_output(env, n, out, "logprobs.bin", e) < 0)
		goto done;
	if (!(smoke = smoke_tests(n, l, (int)ev->predict, e)))
		goto done;
	rc = set_figures(n, json_pack("{s:f, s:f, s:I, s:i, s:o}", "ppl", ppl.ppl, "ppl_err", ppl.ppl_err, "tokens",
				      (json_int_t)ppl.count, "chunks", ppl.chunks, "smoke", smoke), e);
done:
	scratch_close(&sc, "logprobs.bin");
	return rc;
}

/* How a tier's continuation compares with the baseline's: tokens equal, first difference. */
static json_t *smoke_diff(json_t *base, json_t *tier)
{
	json_t *rows = json_array();
	size_t i;
	json_t *b;

	json_array_foreach(base, i, b) {
		json_t *t = json_array_get(tier, i);
		size_t n = json_array_size(b) > json_array_size(t) ? json_array_size(b) : json_array_size(t), same = 0;
		long first = -1;

		for (size_t k = 0; k < n; k++) {
			int eq = k < json_array_size(b) && k < json_array_size(t) &&
				 json_integer_value(json_array_get(b, k)) == json_integer_value(json_array_get(t, k));

			same += (size_t)eq;
			if (!eq && first < 0)
				first = (long)k;
		}
		json_array_append_new(rows, json_pack("{s:I, s:I, s:I}", "tokens", (json_int_t)n, "equal",
						      (json_int_t)same, "first_difference", (json_int_t)first));
	}
	return rows;
}

static int eval_tier(const graph *g, graph_node *n, const action_env *env, const loaded *l, const char *text,
		     size_t len, err *e)
{
	const recipe_eval *ev = &g->r->eval;
	char base[4200];
	json_t *base_fig, *smoke, *fig;
	eval_cmp c;
	int rc;

	action_output_path(env, g->base_eval, "logprobs.bin", base, sizeof base);
	if (eval_compare_saved(l->m, l->v, text, len, (int)ev->ctx, (int)ev->chunks, base, NULL, NULL, &c, e) < 0)
		return -1;
	if (!(smoke = smoke_tests(n, l, (int)ev->predict, e)))
		return -1;
	base_fig = g->base_eval->result.figures ? json_loads(g->base_eval->result.figures, 0, NULL) : NULL;
	fig = json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:o}", "ppl", c.test.ppl, "ppl_err",
			c.test.ppl_err, "ppl_ratio", exp(c.ln_ratio), "kld", c.kld, "kld_err", c.kld_err, "same_top",
			c.same_top, "same_top_err", c.same_top_err, "dp", c.dp, "dp_rms", c.dp_rms, "tokens",
			(json_int_t)c.count, "smoke", smoke_diff(json_object_get(base_fig, "smoke"), smoke));
	json_decref(smoke);
	json_decref(base_fig);
	rc = set_figures(n, fig, e);
	return rc;
}

static int run_eval(const graph *g, graph_node *n, const action_env *env, err *e)
{
	char path[4200];
	size_t len = 0;
	char *text;
	loaded l;
	int rc = -1;

	if (load_model(&l, action_output_path(env, n->deps[0], "model.gguf", path, sizeof path), env->threads, e) < 0)
		goto done;
	if (!(text = read_corpus(n, "eval[", &len, e)))
		goto done;
	rc = n->tier ? eval_tier(g, n, env, &l, text, len, e) : eval_baseline(g, n, env, &l, text, len, e);
	free(text);
done:
	if (rc < 0)
		err_prefix(e, "%s", n->label);
	unload_model(&l);
	return rc;
}

int action_run(const graph *g, graph_node *n, const action_env *env, err *e)
{
	store_action_free(&n->result);
	switch (n->kind) {
	case GRAPH_BASELINE:
		return run_baseline(g, n, env, e);
	case GRAPH_OVERLAP:
		return run_overlap(n, e);
	case GRAPH_IMATRIX:
		return run_imatrix(g, n, env, e);
	case GRAPH_QUANTIZE:
		return run_quantize(g, n, env, e);
	case GRAPH_EVAL:
		return run_eval(g, n, env, e);
	}
	return err_set(e, "%s: unknown action", n->label);
}
