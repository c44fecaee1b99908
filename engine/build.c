/* build.c - `qbake build` and `qbake plan`: run a recipe's graph against the cache */
#include "build.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "actions.h"
#include "afile.h"
#include "cli.h"
#include "gguf.h"
#include "imatrix.h"
#include "quantize.h"
#include "recipe.h"
#include "tiers.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* dir/name into buf, cut to fit (paths this long are refused by the kernel anyway). */
static char *join(char *buf, size_t n, const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);

	if (a >= n)
		a = n - 1;
	memcpy(buf, dir, a);
	if (a + 1 < n)
		buf[a++] = '/';
	if (a + b >= n)
		b = n - 1 - a;
	memcpy(buf + a, name, b);
	buf[a + b] = 0;
	return buf;
}

/* ---- rules checked on a node's figures ---- */

/* The figures of a resolved node as JSON (a new reference), or an empty object. */
static json_t *figures(const graph_node *n)
{
	json_t *j = n->result.figures ? json_loads(n->result.figures, 0, NULL) : NULL;

	return j ? j : json_object();
}

static int rule_baseline(const recipe *r, const graph_node *n, err *e)
{
	json_t *fig = figures(n), *suspects = json_object_get(fig, "grid_suspects"), *first;
	int rc = 0;

	first = json_array_get(suspects, 0);
	if (first && !r->requantized_baseline.set)
		rc = err_set(e,
			     "%s:%d: the baseline looks quantized and widened back to a float type: in tensor %s, "
			     "%lld of %lld blocks of %lld values sit exactly on a %lld-bit affine grid (%zu tensor(s) "
			     "like this). Quantizing it again compounds the error: start from the original weights, or "
			     "set rules = { requantized_baseline = { reason = \"...\" } } in the recipe",
			     r->path, r->model.line, json_string_value(json_object_get(first, "tensor")),
			     (long long)json_integer_value(json_object_get(first, "on_grid")),
			     (long long)json_integer_value(json_object_get(first, "blocks")),
			     (long long)json_integer_value(json_object_get(first, "block")),
			     (long long)json_integer_value(json_object_get(first, "bits")), json_array_size(suspects));
	json_decref(fig);
	return rc;
}

/* The limit of the held-out rule, in percent. */
static double overlap_limit(const recipe *r)
{
	return r->eval_overlap.set ? r->eval_overlap.max : 1.0;
}

static int rule_overlap(const recipe *r, const graph_node *n, err *e)
{
	json_t *fig = figures(n);
	double pct = 100 * json_real_value(json_object_get(fig, "fraction"));
	int rc = 0;

	if (pct > overlap_limit(r))
		rc = err_set(e,
			     "%s:%d: the eval corpus is not held out: %.3f %% of its 50-character passages also occur in "
			     "the calibration corpus (limit %.3g %%); the first, at byte %lld: \"%s\". Use disjoint "
			     "text, or raise the limit with rules = { eval_overlap = { max = \"N%%\", reason = \"...\" } }",
			     r->path, r->eval.line, pct, overlap_limit(r),
			     (long long)json_integer_value(json_object_get(fig, "first_at")),
			     json_string_value(json_object_get(fig, "first")));
	json_decref(fig);
	return rc;
}

/* Identical files on both sides are refused whatever the override says. */
static int rule_identical(const graph *g, err *e)
{
	const graph_node *n = g->overlap;

	if (!n)
		return 0;
	for (size_t i = 0; i < n->ninputs; i++) {
		if (strncmp(n->inputs[i].name, "calib[", 6) != 0)
			continue;
		for (size_t k = 0; k < n->ninputs; k++)
			if (strncmp(n->inputs[k].name, "eval[", 5) == 0 &&
			    memcmp(n->inputs[i].digest, n->inputs[k].digest, 32) == 0)
				return err_set(e, "%s:%d: %s is used for evaluation and its identical twin %s for "
						  "calibration: evaluation text must be held out",
					       g->r->path, g->r->eval.line, n->inputs[k].path, n->inputs[i].path);
	}
	return 0;
}

/* Checks the rules that a resolved node's figures decide; returns 0 or -1. */
static int node_rules(const graph *g, const graph_node *n, err *e)
{
	if (n->kind == GRAPH_BASELINE)
		return rule_baseline(g->r, n, e);
	if (n->kind == GRAPH_OVERLAP)
		return rule_overlap(g->r, n, e);
	return 0;
}

/* ---- the scheduler ---- */

typedef struct sched {
	graph *g;
	store *s;
	const build_opts *o;
	build_result *res;
	action_env env;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int running;
	int stop;           /* a node failed and keep_going is off */
} sched;

typedef struct job {
	sched *sc;
	graph_node *n;
	pthread_t tid;
} job;

static void say(const sched *sc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void say(const sched *sc, const char *fmt, ...)
{
	va_list ap;

	if (sc->o->quiet)
		return;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fflush(stderr);
}

static void note_ran(build_result *res, const char *label)
{
	size_t len = strlen(res->ran_labels);

	snprintf(res->ran_labels + len, sizeof res->ran_labels - len, "%s%s", len ? ", " : "", label);
}

static void *worker(void *arg)
{
	job *j = arg;
	sched *sc = j->sc;
	graph_node *n = j->n;
	double t0 = now();
	int fd, hit = 0, rc;
	err e = { 0 };

	/* Another qbake building the same node: wait for it and take its result. */
	fd = store_lock_key(sc->s, n->key, &e);
	rc = fd < 0 ? -1 : 0;
	if (rc == 0) {
		hit = store_ac_get(sc->s, n->key, &n->result, &e);
		rc = hit < 0 ? -1 : 0;
	}
	/* remote cache (cache/remote.c): local miss -> remote -> build; a build is uploaded */
	if (rc == 0 && !hit && sc->o->remote) {
		hit = n->remote = remote_fetch(sc->o->remote, sc->s, n->key, &n->result);
		if (!hit)
			say(sc, "[run]    %s\n", n->label);
	}
	if (rc == 0 && !hit) {
		rc = action_run(sc->g, n, &sc->env, &e);
		if (rc == 0)
			rc = store_ac_put(sc->s, n->key, &n->result, &e);
		if (rc == 0 && sc->o->remote)
			remote_upload(sc->o->remote, sc->s, n->key);
	}
	if (fd >= 0)
		store_unlock_key(fd);
	pthread_mutex_lock(&sc->mu);
	n->seconds = now() - t0;
	n->state = rc < 0 ? GRAPH_FAILED : hit ? GRAPH_CACHED : GRAPH_BUILT;
	n->error = e;
	sc->running--;
	pthread_cond_signal(&sc->cv);
	pthread_mutex_unlock(&sc->mu);
	return NULL;
}

/* Looks at one pending node (lock held): skips it, resolves it from the cache, or starts
 * it. Returns 1 when its state changed or it started. */
static int step(sched *sc, graph_node *n)
{
	int ready = 1, hit;
	err e = { 0 };

	for (int i = 0; i < n->ndeps; i++) {
		graph_state st = n->deps[i]->state;

		if (st == GRAPH_FAILED || st == GRAPH_SKIPPED) {
			n->state = GRAPH_SKIPPED;
			sc->res->skipped++;
			return 1;
		}
		if (st != GRAPH_CACHED && st != GRAPH_BUILT)
			ready = 0;
	}
	if (!ready || sc->stop)
		return 0;
	if (!n->keyed && graph_key(n, &e) < 0) {
		n->state = GRAPH_FAILED;
		n->error = e;
		return 1;
	}
	hit = store_ac_get(sc->s, n->key, &n->result, &e);
	if (hit != 0) {
		n->state = hit > 0 ? GRAPH_CACHED : GRAPH_FAILED;
		n->error = e;
		return 1;
	}
	if (sc->running >= sc->o->jobs)
		return 0;
	n->state = GRAPH_RUNNING;
	sc->running++;
	if (!sc->o->remote) /* with a remote, the worker says it once the remote missed */
		say(sc, "[run]    %s\n", n->label);
	return 2;
}

/* Records what happened to a node that just left RUNNING or PENDING (lock held). */
static void settle(sched *sc, graph_node *n)
{
	if (n->state == GRAPH_CACHED || n->state == GRAPH_BUILT) {
		err e = { 0 };

		if (node_rules(sc->g, n, &e) < 0) {
			n->state = GRAPH_FAILED;
			n->error = e;
		}
	}
	switch (n->state) {
	case GRAPH_CACHED:
		sc->res->cached++;
		sc->res->remote += n->remote;
		say(sc, "%s %s\n", n->remote ? "[remote]" : "[cached]", n->label);
		break;
	case GRAPH_BUILT:
		sc->res->ran++;
		note_ran(sc->res, n->label);
		say(sc, "[done]   %s (%.2f s)\n", n->label, n->seconds);
		break;
	case GRAPH_FAILED:
		sc->res->failed++;
		say(sc, "[failed] %s: %s\n", n->label, n->error.msg);
		if (!sc->o->keep_going)
			sc->stop = 1;
		break;
	case GRAPH_SKIPPED:
		say(sc, "[skip]   %s (needs a node that failed)\n", n->label);
		break;
	default:
		break;
	}
}

static int schedule(sched *sc)
{
	graph *g = sc->g;
	job *jobs = calloc(g->n, sizeof *jobs);
	graph_state *seen = calloc(g->n, sizeof *seen);

	if (!jobs || !seen) {
		free(jobs);
		free(seen);
		return -1;
	}
	pthread_mutex_lock(&sc->mu);
	for (;;) {
		int pending = 0, moved = 0;

		for (size_t i = 0; i < g->n; i++) {
			graph_node *n = g->nodes[i];

			if (seen[i] == GRAPH_RUNNING && n->state != GRAPH_RUNNING) {
				pthread_join(jobs[i].tid, NULL);
				settle(sc, n);
				moved = 1;
			}
			seen[i] = n->state;
			if (n->state != GRAPH_PENDING)
				continue;
			switch (step(sc, n)) {
			case 2:
				jobs[i].sc = sc;
				jobs[i].n = n;
				if (pthread_create(&jobs[i].tid, NULL, worker, &jobs[i]) != 0) {
					n->state = GRAPH_FAILED;
					err_set(&n->error, "%s: cannot start a thread", n->label);
					sc->running--;
					settle(sc, n);
				}
				seen[i] = n->state;
				moved = 1;
				break;
			case 1:
				settle(sc, n);
				seen[i] = n->state;
				moved = 1;
				break;
			default:
				pending = 1;
			}
		}
		if (!pending && sc->running == 0 && !moved)
			break;
		if (!moved) {
			if (sc->running == 0)
				break; /* pending nodes that can never start (stop after a failure) */
			pthread_cond_wait(&sc->cv, &sc->mu);
		}
	}
	pthread_mutex_unlock(&sc->mu);
	free(jobs);
	free(seen);
	return 0;
}

/* ---- the release folder ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_tree(const char *dir)
{
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int mkdir_p(const char *path, err *e)
{
	char buf[PATH_MAX];

	snprintf(buf, sizeof buf, "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return err_errno(e, "%s: cannot create folder", buf);
		*p = '/';
	}
	if (mkdir(buf, 0755) < 0 && errno != EEXIST)
		return err_errno(e, "%s: cannot create folder", buf);
	return 0;
}

static json_t *digest_list(const graph_node *n, int outputs)
{
	json_t *a = json_array();
	char hex[65];

	if (outputs) {
		for (size_t i = 0; i < n->result.nouts; i++)
			json_array_append_new(a, json_pack("[s,s,I]", n->result.outs[i].name,
							   sha256_hex(n->result.outs[i].digest, hex),
							   (json_int_t)n->result.outs[i].size));
	} else {
		for (size_t i = 0; i < n->ninputs; i++)
			json_array_append_new(a, json_pack("[s,s,I]", n->inputs[i].name,
							   sha256_hex(n->inputs[i].digest, hex), (json_int_t)n->inputs[i].size));
	}
	return a;
}

static json_t *override_json(const recipe_override *o, int with_max)
{
	if (!o->set)
		return json_null();
	if (with_max)
		return json_pack("{s:f, s:s}", "max_percent", o->max, "reason", o->reason ? o->reason : "");
	return json_pack("{s:s}", "reason", o->reason ? o->reason : "");
}

/* qbake.lock: every resolved input digest, parameter and node key: enough to rebuild. */
static char *lock_text(const graph *g)
{
	json_t *nodes = json_array(), *lock;
	char hex[65], *text;

	for (size_t i = 0; i < g->n; i++) {
		const graph_node *n = g->nodes[i];
		json_t *params = json_loads(n->params, 0, NULL);

		json_array_append_new(nodes, json_pack("{s:s, s:s, s:i, s:s, s:o, s:o, s:o, s:o}", "label", n->label,
						       "action", graph_kind_name(n->kind), "version",
						       graph_version(n->kind), "key", sha256_hex(n->key, hex), "params",
						       params ? params : json_null(), "inputs", digest_list(n, 0),
						       "outputs", digest_list(n, 1), "figures", figures(n)));
	}
	lock = json_pack("{s:i, s:s, s:s, s:o, s:{s:o, s:o}}", "lock_version", 1, "tool", "qbake " QBAKE_VERSION,
			 "release", g->r->name, "nodes", nodes, "overrides", "eval_overlap",
			 override_json(&g->r->eval_overlap, 1), "requantized_baseline",
			 override_json(&g->r->requantized_baseline, 0));
	text = json_dumps(lock, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(lock);
	if (text) {
		size_t len = strlen(text);
		char *grown = realloc(text, len + 2);

		if (grown) {
			grown[len] = '\n';
			grown[len + 1] = 0;
			text = grown;
		}
	}
	return text;
}

/* What ships for one of the recipe's tiers: itself, or the fallback its gate chose. */
typedef struct shipped {
	const recipe_tier *asked;  /* the recipe's tier */
	graph_node *q;             /* the quantize step whose file ships */
	graph_node *ev;            /* its eval step, or NULL without eval */
	const char *gate;          /* "pass", "fail" (never shipped), or "none" */
	char note[512];            /* what the gates decided on the way, "" when nothing */
} shipped;

static void human_size(uint64_t n, char *buf, size_t len)
{
	if (n >= 1ull << 30)
		snprintf(buf, len, "%.2f GiB", n / 1073741824.0);
	else if (n >= 1ull << 20)
		snprintf(buf, len, "%.2f MiB", n / 1048576.0);
	else
		snprintf(buf, len, "%.1f KiB", n / 1024.0);
}

static double fig_num(const graph_node *n, const char *key)
{
	json_t *f = figures(n);
	json_t *v = json_object_get(f, key);
	double x = json_is_number(v) ? json_number_value(v) : NAN;

	json_decref(f);
	return x;
}

/* Checks a tier's eval figures against its gate; returns 1 when they pass, writing the
 * first failed limit into why otherwise. */
static int gate_passes(const recipe_gate *gate, const graph *g, const graph_node *ev, char *why, size_t len)
{
	double base = fig_num(g->base_eval, "ppl"), ppl = fig_num(ev, "ppl");
	double rise = 100 * (ppl / base - 1), kld = fig_num(ev, "kld"), top = 100 * fig_num(ev, "same_top");

	if (!isnan(gate->max_ppl_increase) && !(rise <= gate->max_ppl_increase)) {
		snprintf(why, len, "perplexity +%.2f %% > %.3g %%", rise, gate->max_ppl_increase);
		return 0;
	}
	if (!isnan(gate->max_kld) && !(kld <= gate->max_kld)) {
		snprintf(why, len, "mean KLD %.6f > %.6g", kld, gate->max_kld);
		return 0;
	}
	if (!isnan(gate->min_same_top) && !(top >= gate->min_same_top)) {
		snprintf(why, len, "same top %.2f %% < %.3g %%", top, gate->min_same_top);
		return 0;
	}
	return 1;
}

static void append(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void append(char *buf, size_t len, const char *fmt, ...)
{
	size_t used = strlen(buf);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf + used, len - used, fmt, ap);
	va_end(ap);
}

/* Decides what ships for every tier. Returns 1 when fallback steps were added (build
 * again), 0 when every tier is decided, -1 when a tier fails its gate with no fallback. */
static int resolve_gates(graph *g, shipped *out, err *e)
{
	int added = 0;

	for (size_t i = 0; i < g->r->n_tiers; i++) {
		shipped *t = &out[i];
		int hops = 0;

		memset(t, 0, sizeof *t);
		t->asked = &g->r->tiers[i];
		t->q = graph_quantize_node(g, t->asked->name);
		t->gate = "none";
		for (;;) {
			const recipe_gate *gate;
			char why[256];
			int rc;

			t->ev = graph_eval_node(g, t->q);
			if (!t->ev || !(gate = recipe_gate_for(g->r, t->q->tier->name)))
				break;
			if (gate_passes(gate, g, t->ev, why, sizeof why)) {
				t->gate = "pass";
				break;
			}
			append(t->note, sizeof t->note, "%s%s failed its gate (%s)", t->note[0] ? "; " : "",
			       t->q->tier->name, why);
			if (!gate->fallback[0] || ++hops > 16) {
				t->gate = "fail";
				return err_set(e, "%s:%d: tier %s fails its quality gate: %s; relax the gate or give it "
						  "a fallback tier", g->r->path, gate->line, t->q->tier->name, why);
			}
			append(t->note, sizeof t->note, ", replaced by %s", gate->fallback);
			if ((rc = graph_add_fallback(g, gate->fallback, e)) < 0)
				return -1;
			if (rc > 0) {
				added = 1;
				break;
			}
			t->q = graph_quantize_node(g, gate->fallback);
		}
	}
	return added;
}

static const char *file_name(const graph *g, const shipped *t, char *buf, size_t len)
{
	snprintf(buf, len, "%s-%s.gguf", g->r->name, t->q->tier->name);
	return buf;
}

/* One tier's row of report.json. */
static json_t *tier_json(const graph *g, const shipped *t)
{
	const store_output *o = graph_output(t->q, "model.gguf");
	char file[256], hex[65];
	json_t *row = json_pack("{s:s, s:s, s:s, s:I, s:f, s:s, s:s, s:s}", "tier", t->q->tier->name, "asked",
				t->asked->name, "file", file_name(g, t, file, sizeof file), "bytes", (json_int_t)o->size,
				"bits_per_weight", fig_num(t->q, "bpw"), "sha256", sha256_hex(o->digest, hex), "gate",
				t->gate, "note", t->note);

	if (t->ev) {
		json_t *f = figures(t->ev);
		double base = fig_num(g->base_eval, "ppl");

		json_object_set_new(row, "ppl", json_real(fig_num(t->ev, "ppl")));
		json_object_set_new(row, "ppl_err", json_real(fig_num(t->ev, "ppl_err")));
		json_object_set_new(row, "ppl_increase_percent", json_real(100 * (fig_num(t->ev, "ppl") / base - 1)));
		json_object_set_new(row, "kld", json_real(fig_num(t->ev, "kld")));
		json_object_set_new(row, "kld_err", json_real(fig_num(t->ev, "kld_err")));
		json_object_set_new(row, "same_top_percent", json_real(100 * fig_num(t->ev, "same_top")));
		json_object_set(row, "smoke", json_object_get(f, "smoke") ? json_object_get(f, "smoke") : json_null());
		json_decref(f);
	}
	return row;
}

/* "12/32 tokens equal, first difference at 12" over every prompt, or "". */
static void smoke_summary(json_t *smoke, char *buf, size_t len)
{
	size_t i, tokens = 0, equal = 0;
	long first = -1;
	json_t *r;

	buf[0] = 0;
	json_array_foreach(smoke, i, r) {
		long f = (long)json_integer_value(json_object_get(r, "first_difference"));

		tokens += (size_t)json_integer_value(json_object_get(r, "tokens"));
		equal += (size_t)json_integer_value(json_object_get(r, "equal"));
		if (f >= 0 && (first < 0 || f < first))
			first = f;
	}
	if (json_array_size(smoke))
		snprintf(buf, len, "%zu/%zu tokens equal over %zu prompt(s)%s", equal, tokens, json_array_size(smoke),
			 first < 0 ? "" : ", earliest difference at token ");
	if (json_array_size(smoke) && first >= 0)
		append(buf, len, "%ld", first);
}

static char *report_md(const graph *g, json_t *report)
{
	char *text = NULL, size[32];
	size_t len = 0, i;
	FILE *m = open_memstream(&text, &len);
	json_t *base = json_object_get(report, "baseline"), *t;
	int eval = g->r->eval.set;

	if (!m)
		return NULL;
	human_size((uint64_t)json_integer_value(json_object_get(base, "bytes")), size, sizeof size);
	fprintf(m, "# %s\n\nBaseline: %s, %s, SHA-256 `%s`", g->r->name, recipe_baseline_name(g->r->baseline), size,
		json_string_value(json_object_get(base, "sha256")));
	if (eval)
		fprintf(m, "; perplexity %.4f ± %.4f on the eval corpus", json_real_value(json_object_get(base, "ppl")),
			json_real_value(json_object_get(base, "ppl_err")));
	fprintf(m, ".\n\n| tier | file | size | bits/weight |%s\n|---|---|---|---|%s\n",
		eval ? " PPL | ΔPPL | mean KLD | same top | gate | smoke test |" : "",
		eval ? "---|---|---|---|---|---|" : "");
	json_array_foreach(json_object_get(report, "tiers"), i, t) {
		human_size((uint64_t)json_integer_value(json_object_get(t, "bytes")), size, sizeof size);
		fprintf(m, "| %s | %s | %s | %.2f |", json_string_value(json_object_get(t, "tier")),
			json_string_value(json_object_get(t, "file")), size,
			json_real_value(json_object_get(t, "bits_per_weight")));
		if (eval) {
			char smoke[160];

			smoke_summary(json_object_get(t, "smoke"), smoke, sizeof smoke);
			fprintf(m, " %.4f ± %.4f | %+.2f %% | %.6f | %.2f %% | %s | %s |",
				json_real_value(json_object_get(t, "ppl")), json_real_value(json_object_get(t, "ppl_err")),
				json_real_value(json_object_get(t, "ppl_increase_percent")),
				json_real_value(json_object_get(t, "kld")),
				json_real_value(json_object_get(t, "same_top_percent")),
				json_string_value(json_object_get(t, "gate")), smoke);
		}
		fputc('\n', m);
	}
	json_array_foreach(json_object_get(report, "tiers"), i, t)
		if (json_string_length(json_object_get(t, "note")))
			fprintf(m, "\n- %s: %s.", json_string_value(json_object_get(t, "asked")),
				json_string_value(json_object_get(t, "note")));
	if (json_object_get(report, "held_out"))
		fprintf(m, "\n\nHeld-out check: %.4f %% of the eval corpus's 50-character passages occur in the "
			   "calibration corpus (limit %.3g %%).",
			json_real_value(json_object_get(json_object_get(report, "held_out"), "overlap_percent")),
			json_real_value(json_object_get(json_object_get(report, "held_out"), "limit_percent")));
	fputc('\n', m);
	fclose(m);
	return text;
}

/* report.html: one self-contained page (no network) with the table and, when there is
 * an evaluation, size against quality for every tier with the gates drawn on it. */
static char *report_html(const graph *g, json_t *report, const char *md)
{
	enum { W = 640, H = 360, L = 70, R = 20, T = 20, B = 50 };
	char *text = NULL;
	size_t len = 0, i;
	FILE *m = open_memstream(&text, &len);
	json_t *t;
	double xmax = 0, ymax = 0;

	if (!m)
		return NULL;
	fprintf(m, "<!doctype html><html><head><meta charset=\"utf-8\"><title>%s</title><style>"
		   "body{font-family:sans-serif;margin:2em}pre{background:#f6f6f6;padding:1em}"
		   "</style></head><body><h1>%s</h1>\n", g->r->name, g->r->name);
	if (g->r->eval.set) {
		json_array_foreach(json_object_get(report, "tiers"), i, t) {
			double x = (double)json_integer_value(json_object_get(t, "bytes")) / 1048576.0;
			double y = json_real_value(json_object_get(t, "kld"));

			xmax = x > xmax ? x : xmax;
			ymax = y > ymax ? y : ymax;
		}
		for (size_t k = 0; k < g->r->n_gates; k++)
			if (!isnan(g->r->gates[k].max_kld) && g->r->gates[k].max_kld > ymax)
				ymax = g->r->gates[k].max_kld;
		xmax = xmax > 0 ? xmax * 1.1 : 1;
		ymax = ymax > 0 ? ymax * 1.15 : 1;
		fprintf(m, "<h2>Size against quality</h2><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
			   "height=\"%d\" font-size=\"12\"><rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" "
			   "fill=\"none\" stroke=\"#888\"/>",
			W, H, L, T, W - L - R, H - T - B);
		fprintf(m, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">file size (MiB, 0 to %.2f)</text>",
			L + (W - L - R) / 2, H - 12, xmax);
		fprintf(m, "<text x=\"14\" y=\"%d\" transform=\"rotate(-90 14 %d)\" text-anchor=\"middle\">"
			   "mean KL-divergence (0 to %.4g)</text>", T + (H - T - B) / 2, T + (H - T - B) / 2, ymax);
		for (size_t k = 0; k < g->r->n_gates; k++) {
			double y = g->r->gates[k].max_kld;
			int py;

			if (isnan(y))
				continue;
			py = T + (int)((H - T - B) * (1 - y / ymax));
			fprintf(m, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#c00\" "
				   "stroke-dasharray=\"4\"/><text x=\"%d\" y=\"%d\" fill=\"#c00\">gate %s: max_kld "
				   "%.4g</text>", L, W - R, py, py, L + 4, py - 4, g->r->gates[k].tier, y);
		}
		json_array_foreach(json_object_get(report, "tiers"), i, t) {
			double x = (double)json_integer_value(json_object_get(t, "bytes")) / 1048576.0;
			double y = json_real_value(json_object_get(t, "kld"));
			int px = L + (int)((W - L - R) * x / xmax), py = T + (int)((H - T - B) * (1 - y / ymax));

			fprintf(m, "<circle cx=\"%d\" cy=\"%d\" r=\"4\" fill=\"%s\"/><text x=\"%d\" y=\"%d\">%s</text>",
				px, py, strcmp(json_string_value(json_object_get(t, "gate")), "pass") == 0 ? "#080" : "#06c",
				px + 6, py - 6, json_string_value(json_object_get(t, "tier")));
		}
		fprintf(m, "</svg>\n");
	}
	fprintf(m, "<h2>Report</h2><pre>");
	for (const char *c = md; *c; c++) {
		if (*c == '<')
			fputs("&lt;", m);
		else if (*c == '&')
			fputs("&amp;", m);
		else
			fputc(*c, m);
	}
	fprintf(m, "</pre></body></html>\n");
	fclose(m);
	return text;
}

static int write_reports(const graph *g, const shipped *tiers, const char *dir, err *e)
{
	json_t *rows = json_array(), *report, *base_fig = figures(g->baseline);
	const store_output *bo = graph_output(g->baseline, "model.gguf");
	char path[PATH_MAX], hex[65], *json = NULL, *md = NULL, *html = NULL;
	int rc = -1;

	for (size_t i = 0; i < g->r->n_tiers; i++)
		json_array_append_new(rows, tier_json(g, &tiers[i]));
	report = json_pack("{s:s, s:{s:s, s:s, s:I, s:O}, s:o}", "release", g->r->name, "baseline", "type",
			   recipe_baseline_name(g->r->baseline), "sha256", sha256_hex(bo->digest, hex), "bytes",
			   (json_int_t)bo->size, "parameters",
			   json_object_get(base_fig, "parameters") ? json_object_get(base_fig, "parameters") : json_null(),
			   "tiers", rows);
	json_decref(base_fig);
	if (g->base_eval) {
		json_t *b = json_object_get(report, "baseline");

		json_object_set_new(b, "ppl", json_real(fig_num(g->base_eval, "ppl")));
		json_object_set_new(b, "ppl_err", json_real(fig_num(g->base_eval, "ppl_err")));
	}
	if (g->overlap)
		json_object_set_new(report, "held_out", json_pack("{s:f, s:f}", "overlap_percent",
								  100 * fig_num(g->overlap, "fraction"), "limit_percent",
								  overlap_limit(g->r)));
	json = json_dumps(report, JSON_INDENT(2) | JSON_SORT_KEYS);
	md = report_md(g, report);
	html = md ? report_html(g, report, md) : NULL;
	json_decref(report);
	if (!json || !md || !html) {
		err_set(e, "out of memory");
		goto done;
	}
	if (afile_put(join(path, sizeof path, dir, "report.json"), json, strlen(json), e) < 0 ||
	    afile_put(join(path, sizeof path, dir, "report.md"), md, strlen(md), e) < 0 ||
	    afile_put(join(path, sizeof path, dir, "report.html"), html, strlen(html), e) < 0)
		goto done;
	rc = 0;
done:
	free(json);
	free(md);
	free(html);
	return rc;
}

static int write_sums(const graph *g, const shipped *tiers, const char *dir, err *e)
{
	char path[PATH_MAX], hex[65], *text = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&text, &len);
	int rc;

	if (!m)
		return err_set(e, "out of memory");
	for (size_t i = 0; i < g->r->n_tiers; i++) {
		char file[256];

		fprintf(m, "%s  %s\n", sha256_hex(graph_output(tiers[i].q, "model.gguf")->digest, hex),
			file_name(g, &tiers[i], file, sizeof file));
	}
	fclose(m);
	join(path, sizeof path, dir, "SHA256SUMS");
	rc = afile_put(path, text, len, e);
	free(text);
	return rc;
}

/* True when dir already holds exactly this release (same lock, every file in place). */
static int release_current(const graph *g, const shipped *tiers, const char *dir, const char *lock)
{
	char path[PATH_MAX];
	struct stat st;
	FILE *f;
	int same = 0;

	if (!(f = fopen(join(path, sizeof path, dir, "qbake.lock"), "rb")))
		return 0;
	if (fstat(fileno(f), &st) == 0 && (size_t)st.st_size == strlen(lock)) {
		char *buf = malloc((size_t)st.st_size + 1);

		same = buf && fread(buf, 1, (size_t)st.st_size, f) == (size_t)st.st_size &&
		       memcmp(buf, lock, (size_t)st.st_size) == 0;
		free(buf);
	}
	fclose(f);
	for (size_t i = 0; i < g->r->n_tiers && same; i++) {
		char file[256];

		same = stat(join(path, sizeof path, dir, file_name(g, &tiers[i], file, sizeof file)), &st) == 0 &&
		       (uint64_t)st.st_size == graph_output(tiers[i].q, "model.gguf")->size;
	}
	return same;
}

/* Writes the release into a fresh folder beside dir, then swaps it in: the folder at dir
 * is always either the previous release or the new one, never a mixture. */
static int write_release(const graph *g, const shipped *tiers, store *s, const char *dir, int *written, err *e)
{
	char tmp[PATH_MAX], path[PATH_MAX], *lock = lock_text(g);
	int rc = -1;

	*written = 0;
	if (!lock)
		return err_set(e, "out of memory");
	if (release_current(g, tiers, dir, lock)) {
		free(lock);
		return 0;
	}
	snprintf(path, sizeof path, "%s", dir);
	{
		char *slash = strrchr(path, '/');

		if (slash && slash != path) {
			*slash = 0;
			if (mkdir_p(path, e) < 0)
				goto done;
		}
	}
	join(tmp, sizeof tmp, dir, "");
	tmp[strlen(tmp) - 1] = 0;
	strncat(tmp, ".tmp.XXXXXX", sizeof tmp - strlen(tmp) - 1);
	if (!mkdtemp(tmp)) {
		err_errno(e, "%s: cannot create the release folder", tmp);
		goto done;
	}
	chmod(tmp, 0755);
	for (size_t i = 0; i < g->r->n_tiers; i++) {
		const store_output *o = graph_output(tiers[i].q, "model.gguf");
		char file[256];

		join(path, sizeof path, tmp, file_name(g, &tiers[i], file, sizeof file));
		if (store_materialize(s, o->digest, o->size, path, 0, e) < 0)
			goto fail;
	}
	join(path, sizeof path, tmp, "qbake.lock");
	if (write_sums(g, tiers, tmp, e) < 0 || write_reports(g, tiers, tmp, e) < 0 ||
	    afile_put(path, lock, strlen(lock), e) < 0)
		goto fail;
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
		rm_tree(tmp); /* the previous release, now under the temporary name */
	} else if (errno == ENOENT && rename(tmp, dir) == 0) {
		;
	} else {
		err_errno(e, "%s: cannot move the new release into place", dir);
		goto fail;
	}
	*written = 1;
	rc = 0;
	goto done;
fail:
	rm_tree(tmp);
done:
	free(lock);
	return rc;
}

int build_run(graph *g, store *s, const build_opts *o, build_result *res, err *e)
{
	shipped *tiers = NULL;
	sched sc;
	char out[PATH_MAX];
	int rc = 0, added = 0;

	memset(res, 0, sizeof *res);
	if (rule_identical(g, e) < 0)
		return -1;
	memset(&sc, 0, sizeof sc);
	sc.g = g;
	sc.s = s;
	sc.o = o;
	sc.res = res;
	sc.env.s = s;
	sc.env.threads = o->threads / o->jobs > 0 ? o->threads / o->jobs : 1;
	pthread_mutex_init(&sc.mu, NULL);
	pthread_cond_init(&sc.cv, NULL);
	/* Gates may call for fallback tiers: build, decide, and build again what they added. */
	for (int round = 0; rc == 0; round++) {
		if (schedule(&sc) < 0) {
			rc = err_set(e, "out of memory");
			break;
		}
		for (size_t i = 0; i < g->n && rc == 0; i++)
			if (g->nodes[i]->state == GRAPH_FAILED)
				rc = err_set(e, "%s", g->nodes[i]->error.msg);
		for (size_t i = 0; i < g->n && rc == 0; i++)
			if (g->nodes[i]->state != GRAPH_CACHED && g->nodes[i]->state != GRAPH_BUILT)
				rc = err_set(e, "%s was not built", g->nodes[i]->label);
		if (rc == 0 && !tiers && !(tiers = calloc(g->r->n_tiers, sizeof *tiers)))
			rc = err_set(e, "out of memory");
		if (rc == 0 && (added = resolve_gates(g, tiers, e)) < 0)
			rc = -1;
		if (rc < 0 || !added)
			break;
		/* The fallback's steps read files too (the eval corpus): hash them (stat cache). */
		if (graph_hash_inputs(g, s, e) < 0)
			rc = -1;
	}
	pthread_mutex_destroy(&sc.mu);
	pthread_cond_destroy(&sc.cv);
	if (rc == 0) {
		if (o->out)
			snprintf(out, sizeof out, "%s", o->out);
		else
			snprintf(out, sizeof out, "release/%s", g->r->name);
		rc = write_release(g, tiers, s, out, &res->release_written, e);
	}
	free(tiers);
	return rc;
}

/* ---- the commands ---- */

const char build_help[] =
	"usage: qbake build [RECIPE] [options]\n"
	"\n"
	"Builds the release a recipe describes: converts the checkpoint to the baseline, checks\n"
	"the rules, quantizes every tier, and writes the release folder. Every step's result is\n"
	"kept in the cache under a key made from its inputs' contents and its parameters, so only\n"
	"what changed is built again; a second recipe with the same inputs reuses the same results.\n"
	"\n"
	"RECIPE defaults to recipe.lua in the working directory.\n"
	"\n"
	"options:\n"
	"  -j, --jobs N       steps run at once (default 1)\n"
	"  -t, --threads N    worker threads shared by the running steps (default: all cores)\n"
	"  -k, --keep-going   after a failure, still build what does not depend on it\n"
	"      --cache DIR    the cache (default $QBAKE_CACHE, $XDG_CACHE_HOME/qbake or ~/.cache/qbake)\n"
	"  -o, --out DIR      the release folder (default release/NAME in the working directory)\n"
	"  -q, --quiet        no line per step, only the summary\n"
	"      --remote-cache URL  a shared cache (Bazel HTTP remote-cache protocol: URL/cas/SHA256,\n"
	"                     URL/ac/KEY), asked after a local miss and fed every step built here;\n"
	"                     default $QBAKE_REMOTE_CACHE, then remote_cache in ~/.config/qbake/config;\n"
	"                     --remote-cache= (empty) turns it off. Downloads are checked by SHA-256;\n"
	"                     a remote that does not answer gives one warning and the build goes on\n"
	"      --remote-upload=false  read from the remote cache, never write to it\n"
	"\n"
	"The release folder holds NAME-TIER.gguf (hard links into the cache when possible),\n"
	"SHA256SUMS, report.md, report.json and qbake.lock; it is replaced as a whole, never\n"
	"left half-written.\n"
	"\n"
	"exit status: 0 built, 1 a step or a rule failed, 2 usage error or unreadable recipe\n";

const char plan_help[] =
	"usage: qbake plan [RECIPE] [--cache DIR] [--out DIR] [--json] [--remote-cache URL]\n"
	"\n"
	"Shows what `qbake build` would do, without doing it: for every step, whether it comes\n"
	"from the cache or would run, and why (not in the cache, a parameter or an input changed\n"
	"since the release in the release folder was built, or a step it needs will run), and\n"
	"for every tier its expected file size, bits per weight and working memory (exact once\n"
	"the baseline is in the cache).\n"
	"\n"
	"With a remote cache (--remote-cache URL, $QBAKE_REMOTE_CACHE or remote_cache in\n"
	"~/.config/qbake/config), a step missing locally is looked up there: `remote` means\n"
	"build would download it (its action record is read and checked; objects are not).\n"
	"\n"
	"exit status: 0 ok, 1 the plan could not be made, 2 usage error or unreadable recipe\n";

typedef struct cmd_opts {
	const char *recipe;
	const char *cache;
	const char *remote_url;    /* --remote-cache, or NULL */
	const char *remote_upload; /* --remote-upload, or NULL */
	int json;
	build_opts b;
} cmd_opts;

static int parse_int(const char *s, int lo, int *out)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s == 0 || *end || v < lo || v > 4096)
		return -1;
	*out = (int)v;
	return 0;
}

static int parse_opts(int argc, char **argv, cmd_opts *o, int plan)
{
	static const struct option longs[] = {
		{ "jobs", required_argument, NULL, 'j' }, { "threads", required_argument, NULL, 't' },
		{ "keep-going", no_argument, NULL, 'k' }, { "cache", required_argument, NULL, 'C' },
		{ "out", required_argument, NULL, 'o' },  { "quiet", no_argument, NULL, 'q' },
		{ "json", no_argument, NULL, 'J' },       { "remote-cache", required_argument, NULL, 'R' },
		{ "remote-upload", required_argument, NULL, 'U' }, { NULL, 0, NULL, 0 },
	};
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	int c;

	memset(o, 0, sizeof *o);
	o->recipe = "recipe.lua";
	o->b.jobs = 1;
	o->b.threads = cores > 0 ? (int)cores : 1;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "j:t:ko:q", longs, NULL)) != -1) {
		switch (c) {
		case 'j':
			if (parse_int(optarg, 1, &o->b.jobs) < 0)
				goto bad_number;
			break;
		case 't':
			if (parse_int(optarg, 1, &o->b.threads) < 0)
				goto bad_number;
			break;
		case 'k':
			o->b.keep_going = 1;
			break;
		case 'C':
			o->cache = optarg;
			break;
		case 'o':
			o->b.out = optarg;
			break;
		case 'q':
			o->b.quiet = 1;
			break;
		case 'R':
			o->remote_url = optarg;
			break;
		case 'U':
			o->remote_upload = optarg;
			break;
		case 'J':
			if (!plan)
				goto bad_option;
			o->json = 1;
			break;
		default:
			goto bad_option;
		}
	}
	if (optind < argc)
		o->recipe = argv[optind++];
	if (optind < argc) {
		fprintf(stderr, "qbake %s: one recipe at a time (extra argument '%s')\n", argv[0], argv[optind]);
		return -1;
	}
	return 0;
bad_number:
	fprintf(stderr, "qbake %s: %s needs a positive whole number, not '%s'\n", argv[0], argv[optind - 1], optarg);
	return -1;
bad_option:
	fprintf(stderr, "qbake %s: unknown option '%s' (see qbake help %s)\n", argv[0], argv[optind - 1], argv[0]);
	return -1;
}

/* Everything a command needs before it looks at the cache. */
typedef struct session {
	recipe *r;
	store s;
	graph g;
	remote rem;
	int have_store, have_graph, have_remote;
} session;

static void session_close(session *ss)
{
	if (ss->have_graph)
		graph_free(&ss->g);
	if (ss->have_store)
		store_close(&ss->s);
	if (ss->have_remote)
		remote_close(&ss->rem);
	recipe_free(ss->r);
}

/* Loads the recipe, opens the cache, builds the graph and hashes its inputs. Returns 0,
 * 2 for an unreadable recipe, 1 for other failures (printed). */
static int session_open(session *ss, const cmd_opts *o)
{
	err e = { 0 };

	memset(ss, 0, sizeof *ss);
	if (!(ss->r = recipe_load(o->recipe, NULL, &e))) {
		fprintf(stderr, "qbake: %s\n", e.msg);
		return 2;
	}
	for (size_t i = 0; i < ss->r->n_warnings; i++)
		fprintf(stderr, "qbake: warning: %s\n", ss->r->warnings[i]);
	if (store_open(&ss->s, o->cache, &e) < 0) {
		fprintf(stderr, "qbake: %s\n", e.msg);
		return 1;
	}
	ss->have_store = 1;
	{ /* remote cache: flag > QBAKE_REMOTE_CACHE > the per-user config file */
		remote_config rc;
		int bad = remote_config_load(&rc, o->remote_url, o->remote_upload, &e) < 0;

		if (!bad && rc.url && *rc.url) {
			bad = remote_open(&ss->rem, &rc, &e) < 0;
			ss->have_remote = !bad;
		}
		remote_config_free(&rc);
		if (bad) {
			fprintf(stderr, "qbake: %s\n", e.msg);
			return 2;
		}
	}
	if (graph_new(&ss->g, ss->r, &e) < 0) {
		fprintf(stderr, "qbake: %s\n", e.msg);
		return 1;
	}
	ss->have_graph = 1;
	if (graph_hash_inputs(&ss->g, &ss->s, &e) < 0) {
		fprintf(stderr, "qbake: %s\n", e.msg);
		return 1;
	}
	return 0;
}

/* Tells gc which cache entries this recipe's latest build needs. */
static void record_refs(session *ss)
{
	uint8_t (*keys)[32] = calloc(ss->g.n, 32), (*objs)[32] = NULL, id[32];
	size_t nobjs = 0, cap = 0;
	char real[PATH_MAX];
	err e = { 0 };

	if (!keys)
		return;
	for (size_t i = 0; i < ss->g.n; i++) {
		const graph_node *n = ss->g.nodes[i];

		memcpy(keys[i], n->key, 32);
		for (size_t k = 0; k < n->result.nouts; k++) {
			if (nobjs == cap) {
				void *grown = realloc(objs, (cap = cap ? 2 * cap : 16) * 32);

				if (!grown)
					goto done;
				objs = grown;
			}
			memcpy(objs[nobjs++], n->result.outs[k].digest, 32);
		}
	}
	if (!realpath(ss->r->path, real))
		snprintf(real, sizeof real, "%s", ss->r->path);
	sha256_buf(real, strlen(real), id);
	if (store_ref_put(&ss->s, id, (const uint8_t(*)[32])keys, ss->g.n, (const uint8_t(*)[32])objs, nobjs, &e) < 0)
		fprintf(stderr, "qbake: warning: %s\n", e.msg);
done:
	free(keys);
	free(objs);
}

int build_main(int argc, char **argv)
{
	cmd_opts o;
	session ss;
	build_result res;
	double t0 = now();
	err e = { 0 };
	int rc;

	if (parse_opts(argc, argv, &o, 0) < 0)
		return 2;
	if ((rc = session_open(&ss, &o)) != 0) {
		session_close(&ss);
		return rc;
	}
	if (ss.have_remote)
		o.b.remote = &ss.rem;
	rc = build_run(&ss.g, &ss.s, &o.b, &res, &e);
	if (rc == 0)
		record_refs(&ss);
	if (rc < 0) {
		fprintf(stderr, "qbake: %s\n", e.msg);
		fprintf(stderr, "qbake: build failed: %d step(s) run, %d cached, %d failed, %d not started (%.2f s)\n",
			res.ran, res.cached, res.failed, res.skipped, now() - t0);
	} else {
		char out[PATH_MAX];

		snprintf(out, sizeof out, "%s%s", o.b.out ? o.b.out : "release/", o.b.out ? "" : ss.r->name);
		fprintf(stderr, "qbake: %d step(s) run, %d cached (%d from the remote cache), in %.2f s; release %s %s\n",
			res.ran, res.cached, res.remote, now() - t0, out, res.release_written ? "written" : "up to date");
	}
	session_close(&ss);
	return rc < 0 ? 1 : 0;
}

/* The previous build's node of the same label in the release folder's lock, or NULL. */
static json_t *locked_node(json_t *lock, const char *label)
{
	json_t *nodes = json_object_get(lock, "nodes"), *n;
	size_t i;

	json_array_foreach(nodes, i, n)
		if (json_is_string(json_object_get(n, "label")) &&
		    strcmp(json_string_value(json_object_get(n, "label")), label) == 0)
			return n;
	return NULL;
}

/* Why node n would run, into buf. */
static void why(const graph_node *n, json_t *lock, char *buf, size_t len)
{
	json_t *old = locked_node(lock, n->label), *inputs, *in;
	size_t i;

	for (int d = 0; d < n->ndeps; d++)
		if (n->deps[d]->state != GRAPH_CACHED) {
			snprintf(buf, len, "needs %s, which will run", n->deps[d]->label);
			return;
		}
	if (old) {
		json_t *params = json_loads(n->params, 0, NULL);
		int same = json_equal(params, json_object_get(old, "params"));

		json_decref(params);
		if (!same) {
			char *was = json_dumps(json_object_get(old, "params"), JSON_COMPACT | JSON_SORT_KEYS);

			snprintf(buf, len, "parameters changed: %s, was %s", n->params, was ? was : "?");
			free(was);
			return;
		}
		inputs = json_object_get(old, "inputs");
		for (size_t k = 0; k < n->ninputs; k++) {
			char hex[65];
			int found = 0;

			sha256_hex(n->inputs[k].digest, hex);
			json_array_foreach(inputs, i, in)
				if (strcmp(json_string_value(json_array_get(in, 0)), n->inputs[k].name) == 0)
					found = strcmp(json_string_value(json_array_get(in, 1)), hex) == 0 ? 1 : -1;
			if (found != 1) {
				snprintf(buf, len, "input %s %s", n->inputs[k].path, found ? "changed" : "is new");
				return;
			}
		}
		if (json_array_size(inputs) != n->ninputs) {
			snprintf(buf, len, "an input was removed");
			return;
		}
	}
	snprintf(buf, len, "not in the cache");
}

/* The expected output of a quantize node, when its baseline (and imatrix) are cached. */
static json_t *estimate(const graph *g, const graph_node *n, store *s)
{
	char base[PATH_MAX], imx_path[PATH_MAX];
	const graph_node *imx_node = n->ndeps > 1 ? n->deps[1] : NULL;
	action_env env = { .s = s, .threads = 1 };
	quantize_params qp;
	quantize_plan plan;
	gguf_file in;
	imx_file imx;
	json_t *j = NULL;
	err e = { 0 };

	if (g->baseline->state != GRAPH_CACHED || (imx_node && imx_node->state != GRAPH_CACHED))
		return NULL;
	memset(&qp, 0, sizeof qp);
	if (!(qp.tier = tier_by_name(n->tier->name)))
		return NULL;
	qp.opt.output_type = qp.opt.token_embd_type = -1;
	qp.opt.pure = n->tier->pure;
	qp.opt.leave_output = n->tier->leave_output_tensor;
	qp.threads = 1;
	if (gguf_open(&in, action_output_path(&env, g->baseline, "model.gguf", base, sizeof base), &e) < 0)
		return NULL;
	if (imx_node && imx_load(&imx, action_output_path(&env, imx_node, "imatrix.gguf", imx_path, sizeof imx_path),
				 &e) == 0)
		qp.imatrix = &imx;
	if (quantize_plan_make(&plan, &in, &qp, &e) == 0) {
		j = json_pack("{s:I, s:f, s:I}", "bytes", (json_int_t)plan.out_bytes, "bits_per_weight",
			      plan.n_elements ? 8.0 * (double)plan.out_bytes / (double)plan.n_elements : 0.0,
			      "working_memory", (json_int_t)(plan.max_elements * 4 + plan.max_out_bytes));
		quantize_plan_free(&plan);
	}
	if (qp.imatrix)
		imx_free(&imx);
	gguf_close(&in);
	return j;
}

int plan_main(int argc, char **argv)
{
	cmd_opts o;
	session ss;
	json_t *lock = NULL, *out = json_array();
	char path[PATH_MAX];
	int rc, would = 0;

	if (parse_opts(argc, argv, &o, 1) < 0) {
		json_decref(out);
		return 2;
	}
	if ((rc = session_open(&ss, &o)) != 0) {
		session_close(&ss);
		json_decref(out);
		return rc;
	}
	snprintf(path, sizeof path, "%s%s/qbake.lock", o.b.out ? o.b.out : "release/", o.b.out ? "" : ss.r->name);
	lock = json_load_file(path, 0, NULL);
	for (size_t i = 0; i < ss.g.n; i++) {
		graph_node *n = ss.g.nodes[i];
		char reason[1024] = "cached", hex[65];
		int ready = 1, hit = 0;
		json_t *row, *est;
		err e = { 0 };

		for (int d = 0; d < n->ndeps; d++)
			ready &= n->deps[d]->state == GRAPH_CACHED;
		if (ready && graph_key(n, &e) == 1)
			hit = store_ac_get(&ss.s, n->key, &n->result, &e) > 0;
		/* remote cache: a record the remote holds (read and validated, objects not fetched) */
		if (!hit && ss.have_remote && ready && n->keyed && remote_probe(&ss.rem, n->key, &n->result)) {
			hit = n->remote = 1;
			snprintf(reason, sizeof reason, "in the remote cache %s", ss.rem.shown);
		}
		if (hit)
			n->state = GRAPH_CACHED;
		else
			why(n, lock, reason, sizeof reason);
		would += !hit;
		row = json_pack("{s:s, s:s, s:s}", "step", n->label, "action",
				n->remote ? "remote" : hit ? "cached" : "run", "why", reason);
		if (n->keyed)
			json_object_set_new(row, "key", json_string(sha256_hex(n->key, hex)));
		if (n->kind == GRAPH_QUANTIZE && (est = estimate(&ss.g, n, &ss.s)) != NULL)
			json_object_set_new(row, "estimate", est);
		json_array_append_new(out, row);
	}
	if (o.json) {
		char *text = json_dumps(out, JSON_INDENT(2));

		if (text)
			puts(text);
		free(text);
	} else {
		size_t i;
		json_t *row;

		printf("plan for %s (%s): %d of %zu step(s) would run\n", ss.r->name, ss.r->path, would, ss.g.n);
		json_array_foreach(out, i, row) {
			json_t *est = json_object_get(row, "estimate");

			printf("  %-7s %-32s %s\n", json_string_value(json_object_get(row, "action")),
			       json_string_value(json_object_get(row, "step")),
			       strcmp(json_string_value(json_object_get(row, "action")), "cached") == 0 ?
				       "" :
				       json_string_value(json_object_get(row, "why")));
			if (est) {
				char size[32];

				human_size((uint64_t)json_integer_value(json_object_get(est, "bytes")), size, sizeof size);
				printf("          %s, %.2f bits/weight, working memory %.1f MiB\n", size,
				       json_real_value(json_object_get(est, "bits_per_weight")),
				       (double)json_integer_value(json_object_get(est, "working_memory")) / 1048576.0);
			}
		}
	}
	json_decref(out);
	json_decref(lock);
	session_close(&ss);
	return 0;
}
