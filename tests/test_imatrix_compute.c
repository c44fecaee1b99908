/* test_imatrix_compute.c - imx_compute against llama-imatrix's golden imatrix.gguf, both writers
 * against the golden files byte for byte, round trips, the stats formulas, bad input */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "gguf.h"
#include "imatrix.h"
#include "model.h"
#include "sha256.h"
#include "tokenizer.h"

static const char *bin(void)
{
	const char *b = getenv("QBAKE_BIN");
	return b ? b : "build/qbake";
}

static int same_bytes(const char *a, const char *b)
{
	size_t na, nb;
	char *x = check_slurp(a, &na), *y = check_slurp(b, &nb);
	int same = x && y && na == nb && memcmp(x, y, na) == 0;

	free(x);
	free(y);
	return same;
}

static int exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

/* Relative difference of two stats values; NaN matches NaN only. */
static double stat_diff(float got, float want, double floor)
{
	if (isnan(got) || isnan(want))
		return isnan(got) && isnan(want) ? 0 : INFINITY;
	return fabs((double)got - want) / fmax(fabs((double)want), floor);
}

/* The writers reproduce llama-imatrix's own files from what the reader took out of them. */
static void writers_match_golden(void)
{
	char *gg = check_shared_path("golden/pydoc-8m/imatrix.gguf"), *gd = check_shared_path("golden/pydoc-8m/imatrix.dat");
	const char *d = check_tmpdir();
	char p[4096];
	imx_file g, l;
	err e = { 0 };

	CHECK(imx_load(&g, gg, &e) == 0, "%s", e.msg);
	CHECK(g.n == 56 && g.e[0].sum && g.e[0].stats && !g.has_baseline, "golden has in_sum and stats");
	snprintf(p, sizeof p, "%s/golden-again.gguf", d);
	CHECK(imx_save(&g, p, IMX_GGUF, &e) == 0, "%s", e.msg);
	CHECK(same_bytes(p, gg), "golden imatrix.gguf read and written again differs from llama-imatrix's");
	snprintf(p, sizeof p, "%s/golden-again.dat", d);
	CHECK(imx_save(&g, p, IMX_DAT, &e) == 0, "%s", e.msg);
	CHECK(same_bytes(p, gd), "golden imatrix.gguf written as .dat differs from llama-imatrix's imatrix.dat");
	CHECK(imx_load(&l, gd, &e) == 0, "%s", e.msg);
	snprintf(p, sizeof p, "%s/golden-dat-again.dat", d);
	CHECK(imx_save(&l, p, IMX_DAT, &e) == 0 && same_bytes(p, gd), "imatrix.dat read and written again differs");
	/* legacy -> GGUF -> legacy keeps the values */
	snprintf(p, sizeof p, "%s/from-dat.gguf", d);
	CHECK(imx_save(&l, p, IMX_GGUF, &e) == 0, "%s", e.msg);
	imx_free(&l);
	CHECK(imx_load(&l, p, &e) == 0, "%s", e.msg);
	for (size_t i = 0; i < g.n && l.n == g.n; i++)
		CHECK(memcmp(l.e[i].weights, g.e[i].weights, g.e[i].n * sizeof(float)) == 0, "%s: weights via dat",
		      g.e[i].name);
	snprintf(p, sizeof p, "%s/from-dat-gguf.dat", d);
	CHECK(imx_save(&l, p, IMX_DAT, &e) == 0, "%s", e.msg);
	imx_free(&l);
	CHECK(imx_load(&l, p, &e) == 0 && l.n == g.n, "%s", e.msg);
	for (size_t i = 0; i < g.n && l.n == g.n; i++)
		CHECK(memcmp(l.e[i].weights, g.e[i].weights, g.e[i].n * sizeof(float)) == 0, "%s: weights via dat+gguf",
		      g.e[i].name);
	imx_free(&l);
	imx_free(&g);
	free(gg);
	free(gd);
}

/* imx_compute_stats on the golden sums gives the golden stats: the formulas are llama's. */
static void stats_formulas(void)
{
	char *gg = check_shared_path("golden/pydoc-8m/imatrix.gguf");
	imx_file g;
	err e = { 0 };
	float want[56][IMX_N_STATS];
	double worst = 0;

	CHECK(imx_load(&g, gg, &e) == 0 && g.n == 56, "%s", e.msg);
	for (size_t i = 0; i < g.n && g.n == 56; i++)
		memcpy(want[i], g.e[i].stats, sizeof want[i]);
	CHECK(imx_compute_stats(&g, &e) == 0, "%s", e.msg);
	for (size_t i = 0; i < g.n && g.n == 56; i++)
		for (int k = 0; k < IMX_N_STATS; k++) {
			double r = stat_diff(g.e[i].stats[k], want[i][k], 1e-6);
			CHECK(r < 1e-4, "%s %s: %.8g, llama-imatrix %.8g", g.e[i].name, imx_stats_schema[k],
			      (double)g.e[i].stats[k], (double)want[i][k]);
			worst = r > worst ? r : worst;
		}
	printf("stats from the golden sums: worst relative difference %.2g\n", worst);
	/* hand-checked: layer 0 has no previous layer */
	const imx_entry *x = imx_find(&g, "blk.0.ffn_down.weight");
	CHECK(x && x->stats[2] == 768.0f && isnan(x->stats[6]) && isnan(x->stats[9]), "blk.0 stats");
	imx_free(&g);
	free(gg);
}

/* A loaded model with its vocabulary. */
typedef struct loaded {
	gguf_file f;
	tok_vocab *v;
	model *m;
} loaded;

static int load(loaded *l, const char *path)
{
	err e = { 0 };

	memset(l, 0, sizeof *l);
	if (gguf_open(&l->f, path, &e) || !(l->v = tok_load(&l->f.meta, &e)) || !(l->m = model_load(&l->f, 2, &e))) {
		CHECK(0, "%s: %s", path, e.msg);
		return -1;
	}
	return 0;
}

static void unload(loaded *l)
{
	model_free(l->m);
	tok_free(l->v);
	gguf_close(&l->f);
}

static int progress_calls, progress_last;

static void progress(void *ctx, int chunk, int n, double ppl)
{
	(void)ctx;
	CHECK(chunk == progress_last + 1 && n == 64 && ppl > 1, "progress %d/%d %g", chunk, n, ppl);
	progress_last = chunk;
	progress_calls++;
}

/* Our imatrix of the F16 fixture against llama-imatrix's. */
static void against_golden(loaded *l, const char *text, size_t len)
{
	char *gg = check_shared_path("golden/pydoc-8m/imatrix.gguf");
	imx_file g, q, r;
	imx_ppl ppl;
	err e = { 0 };
	uint8_t digest[32];
	const char *d = check_tmpdir();
	char p[4096];

	sha256_buf(l->f.map, l->f.size, digest);
	const char *ds = "../../fixtures/corpora/calib.txt";
	imx_params par = { .ctx = 256, .max_chunks = 64, .datasets = &ds, .n_datasets = 1,
			   .baseline_sha256 = digest, .progress = progress };
	CHECK(imx_load(&g, gg, &e) == 0, "%s", e.msg);
	CHECK(imx_compute(&q, l->m, l->v, text, len, &par, &ppl, &e) == 0, "%s", e.msg);
	CHECK(progress_calls == 64, "%d progress calls", progress_calls);
	/* imatrix.log: "Final estimate: PPL = 103.8850 +/- 3.14304" */
	printf("PPL %.4f +/- %.5f (llama-imatrix 103.8850 +/- 3.14304), %zu tokens\n", ppl.ppl, ppl.ppl_err, ppl.n_tokens);
	CHECK(fabs(ppl.ppl - 103.8850) / 103.8850 < 0.005 && fabs(ppl.ppl_err - 3.14304) < 0.02, "PPL %.4f +/- %.5f",
	      ppl.ppl, ppl.ppl_err);
	CHECK(ppl.chunks == 64 && ppl.count == 64 * 127, "%d chunks, %zu scored", ppl.chunks, ppl.count);
	CHECK(q.chunk_count == 64 && q.chunk_size == 256 && q.n_datasets == 1 && strcmp(q.datasets[0], "calib.txt") == 0,
	      "header: %lld x %lld, dataset %s", (long long)q.chunk_count, (long long)q.chunk_size,
	      q.n_datasets ? q.datasets[0] : "-");
	CHECK(q.has_baseline && memcmp(q.baseline_sha256, digest, 32) == 0, "baseline digest recorded");
	CHECK(q.n == g.n, "%zu entries, llama-imatrix %zu", q.n, g.n);
	double worst2 = 0, worst1 = 0, worst_st[IMX_N_STATS] = { 0 };
	for (size_t i = 0; i < g.n && q.n == g.n; i++) {
		const imx_entry *a = &g.e[i], *b = &q.e[i];

		CHECK(strcmp(a->name, b->name) == 0, "entry %zu: %s, llama-imatrix %s", i, b->name, a->name);
		CHECK(b->n == a->n && b->n_mat == 1 && b->counts[0] == a->counts[0], "%s: counts %g, llama-imatrix %g",
		      a->name, (double)b->counts[0], (double)a->counts[0]);
		for (uint64_t j = 0; b->n == a->n && j < a->n; j++) {
			double r = fabs((double)b->sum2[j] - a->sum2[j]) / fabs((double)a->sum2[j]);
			/* in_sum crosses zero: relative to the column's RMS × count instead */
			double s = fabs((double)b->sum[j] - a->sum[j]) / sqrt((double)a->sum2[j] * a->counts[0]);
			worst2 = r > worst2 ? r : worst2;
			worst1 = s > worst1 ? s : worst1;
			CHECK(b->weights[j] == b->sum2[j] / b->counts[0], "%s: weights", a->name);
		}
		for (int k = 0; k < IMX_N_STATS && b->stats; k++) {
			double r = stat_diff(b->stats[k], a->stats[k], 1e-2);
			worst_st[k] = r > worst_st[k] ? r : worst_st[k];
		}
	}
	printf("against llama-imatrix: worst in_sum2 %.4f %%, worst in_sum %.2g x RMS x count\n", 100 * worst2, worst1);
	CHECK(worst2 < 0.005, "in_sum2 off by %.4f %%", 100 * worst2);
	CHECK(worst1 < 1e-3, "in_sum off by %.2g", worst1);
	for (int k = 0; k < IMX_N_STATS; k++) {
		printf("  stats %-13s worst relative difference %.2g\n", imx_stats_schema[k], worst_st[k]);
		CHECK(worst_st[k] < 0.01, "stats %s off by %.3g", imx_stats_schema[k], worst_st[k]);
	}

	/* written and read back: GGUF keeps everything, .dat the weights */
	snprintf(p, sizeof p, "%s/ours.gguf", d);
	CHECK(imx_save(&q, p, IMX_GGUF, &e) == 0 && imx_load(&r, p, &e) == 0, "%s", e.msg);
	CHECK(r.n == q.n && r.chunk_count == 64 && r.chunk_size == 256 && r.n_datasets == 1 &&
	      strcmp(r.datasets[0], "calib.txt") == 0 && r.has_baseline && memcmp(r.baseline_sha256, digest, 32) == 0,
	      "GGUF round trip header");
	for (size_t i = 0; i < q.n && r.n == q.n; i++) {
		const imx_entry *a = &q.e[i], *b = &r.e[i];
		CHECK(!strcmp(a->name, b->name) && a->n == b->n && b->sum && b->stats &&
		      !memcmp(a->sum2, b->sum2, a->n * 4) && !memcmp(a->sum, b->sum, a->n * 4) &&
		      !memcmp(a->counts, b->counts, 4) && !memcmp(a->stats, b->stats, IMX_N_STATS * 4) &&
		      !memcmp(a->weights, b->weights, a->n * 4), "%s: GGUF round trip", a->name);
	}
	imx_free(&r);
	snprintf(p, sizeof p, "%s/ours.dat", d);
	CHECK(imx_save(&q, p, IMX_DAT, &e) == 0 && imx_load(&r, p, &e) == 0, "%s", e.msg);
	CHECK(r.legacy && r.n == q.n && r.chunk_count == 64 && r.n_datasets == 1 && !strcmp(r.datasets[0], "calib.txt") &&
	      !r.has_baseline, "dat round trip header");
	for (size_t i = 0; i < q.n && r.n == q.n; i++) {
		const imx_entry *a = &q.e[i], *b = &r.e[i];
		double worst = 0;
		for (uint64_t j = 0; b->n == a->n && j < a->n; j++)
			worst = fmax(worst, fabs((double)a->weights[j] - b->weights[j]) / a->weights[j]);
		CHECK(!strcmp(a->name, b->name) && a->n == b->n && b->counts[0] == 64 && !b->sum && worst < 1e-6,
		      "%s: dat round trip (weights off by %.2g)", a->name, worst);
	}
	imx_free(&r);
	imx_free(&q);
	imx_free(&g);
	free(gg);
}

/* Refusals name the problem and leave out zeroed. */
static void bad_input(loaded *l, const char *text, size_t len)
{
	imx_file q;
	err e = { 0 };
	imx_params par = { .ctx = 256, .max_chunks = 1 };

	/* 2 x 256 tokens are about 1.5 KiB of this text: 1 KiB is too short */
	CHECK(imx_compute(&q, l->m, l->v, text, 1024, &par, NULL, &e) != 0 && strstr(e.msg, "2 x ctx = 512") &&
	      q.n == 0 && q.e == NULL, "short text: %s", e.msg);
	err_clear(&e);
	char *bad = malloc(len);
	memcpy(bad, text, 4000);
	bad[3000] = (char)0xff;
	CHECK(imx_compute(&q, l->m, l->v, bad, 4000, &par, NULL, &e) != 0 && strstr(e.msg, "offset 3000") &&
	      strstr(e.msg, "UTF-8"), "non-UTF-8: %s", e.msg);
	free(bad);
	err_clear(&e);
	par.ctx = 4096;
	CHECK(imx_compute(&q, l->m, l->v, text, len, &par, NULL, &e) != 0 && strstr(e.msg, "context_length"),
	      "ctx too large: %s", e.msg);
	err_clear(&e);
	par.ctx = 8;
	CHECK(imx_compute(&q, l->m, l->v, text, len, &par, NULL, &e) != 0 && strstr(e.msg, "below 16"), "ctx 8: %s",
	      e.msg);
	err_clear(&e);
	/* a small run: 2 chunks of 32, default dataset none */
	par.ctx = 32;
	par.max_chunks = 2;
	CHECK(imx_compute(&q, l->m, l->v, text, len, &par, NULL, &e) == 0 && q.n == 56 && q.e[0].counts[0] == 64 &&
	      q.n_datasets == 0 && !q.has_baseline && q.chunk_count == 2, "small run: %s", e.msg);
	/* nothing left behind when the output cannot be written */
	CHECK(imx_save(&q, "/nonexistent-dir/x.gguf", IMX_GGUF, &e) != 0 && strstr(e.msg, "/nonexistent-dir/x.gguf"),
	      "unwritable: %s", e.msg);
	imx_free(&q);
}

/* The command: output, exit codes, no partial files. */
static void command(void)
{
	const char *sh = check_shared(), *d = check_tmpdir();
	char out[4096], errf[4096];
	char *o, *er;
	imx_file q;
	err e = { 0 };

	snprintf(out, sizeof out, "%s/cli.dat", d);
	snprintf(errf, sizeof errf, "%s/cli.err", d);
	int rc = check_system("'%s' imatrix -m '%s/golden/pydoc-8m/pydoc-8m-F16.gguf' -f '%s/fixtures/corpora/calib.txt' "
			      "--ctx 64 --chunks 3 --threads 1 --format dat -o '%s' > '%s.out' 2> '%s'",
			      bin(), sh, sh, out, out, errf);
	char op[4200];
	snprintf(op, sizeof op, "%s.out", out);
	o = check_slurp(op, NULL);
	er = check_slurp(errf, NULL);
	CHECK(rc == 0 && o && strstr(o, "Final estimate: PPL = ") && er && strstr(er, "[3]"), "imatrix: exit %d: %s",
	      rc, er ? er : "");
	CHECK(imx_load(&q, out, &e) == 0 && q.legacy && q.chunk_count == 3 && q.n_datasets == 1 &&
	      !strcmp(q.datasets[0], "calib.txt"), "cli .dat: %s", e.msg);
	imx_free(&q);
	free(o);
	free(er);

	/* GGUF: the baseline digest is the model file's */
	snprintf(out, sizeof out, "%s/cli.gguf", d);
	rc = check_system("'%s' imatrix -m '%s/golden/pydoc-8m/pydoc-8m-F16.gguf' -f '%s/fixtures/corpora/calib.txt' "
			  "--ctx 64 --chunks 1 -o '%s' > /dev/null 2>&1", bin(), sh, sh, out);
	uint8_t want[32];
	char *model = check_shared_path("golden/pydoc-8m/pydoc-8m-F16.gguf");
	CHECK(sha256_file(model, want, &e) == 0, "%s", e.msg);
	CHECK(rc == 0 && imx_load(&q, out, &e) == 0 && q.has_baseline && !memcmp(q.baseline_sha256, want, 32) &&
	      q.e[0].stats, "cli gguf: exit %d %s", rc, e.msg);
	imx_free(&q);
	free(model);

	/* failures: exit 2 for bad input, message once, nothing at -o */
	struct {
		const char *args, *needle;
		int code;
	} bad[] = {
		{ "-f '%s/fixtures/corpora/calib.txt' --ctx 64", "-m", 2 },
		{ "-m '%s/golden/pydoc-8m/pydoc-8m-F16.gguf' -f '%s/golden/pydoc-8m/generate/prompts.txt' --ctx 64", "2 x ctx", 2 },
		{ "-m '%s/golden/pydoc-8m/pydoc-8m-F16.gguf' -f '%s/fixtures/corpora/calib.txt' --ctx 100000", "context", 2 },
		{ "-m '%s/golden/pydoc-8m/imatrix.gguf' -f '%s/fixtures/corpora/calib.txt' --ctx 64", "imatrix.gguf", 2 },
		{ "-m '%s/golden/pydoc-8m/pydoc-8m-F16.gguf' -f '%s/golden/pydoc-8m/imatrix.dat' --ctx 64", "UTF-8", 2 },
		{ "-m '%s/golden/pydoc-8m/pydoc-8m-F16.gguf' -f '%s/fixtures/corpora/calib.txt' --format xml", "--format", 2 },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char args[4096], cmd[8192];
		snprintf(out, sizeof out, "%s/bad%zu.gguf", d, i);
		snprintf(args, sizeof args, bad[i].args, sh, sh);
		snprintf(cmd, sizeof cmd, "'%%s' imatrix %s -o '%%s' 2> '%%s'", args);
		rc = check_system(cmd, bin(), out, errf);
		er = check_slurp(errf, NULL);
		const char *q = er ? strstr(er, "qbake: ") : NULL;
		CHECK(rc == bad[i].code && q && strstr(q, bad[i].needle) && !strstr(q + 1, "qbake: "),
		      "case %zu: exit %d, stderr %s", i, rc, er ? er : "");
		CHECK(!exists(out), "case %zu left %s", i, out);
		free(er);
	}
	rc = check_system("'%s' imatrix --help > '%s' 2>&1", bin(), errf);
	er = check_slurp(errf, NULL);
	CHECK(rc == 0 && er && strstr(er, "exit codes") && strstr(er, "--format"), "--help");
	free(er);
}

int main(void)
{
	char *mp = check_shared_path("golden/pydoc-8m/pydoc-8m-F16.gguf");
	char *cp = check_shared_path("fixtures/corpora/calib.txt");
	size_t len;
	char *text = check_slurp(cp, &len);
	loaded l;

	writers_match_golden();
	stats_formulas();
	if (text && load(&l, mp) == 0) {
		against_golden(&l, text, len);
		bad_input(&l, text, len);
		unload(&l);
	}
	command();
	free(text);
	free(mp);
	free(cp);
	return check_done();
}
