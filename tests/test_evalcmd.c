/* test_evalcmd.c - `qbake perplexity` and `qbake generate` run as programs: golden figures, bad input exits 2 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "check.h"
#include "imatrix.h"

static const char *bin(void)
{
	const char *b = getenv("QBAKE_BIN");
	return b ? b : "build/qbake";
}

/* Runs qbake with args; stdout and stderr land in *out and *errs (malloc'd). */
static int run(const char *args, char **out, char **errs)
{
	const char *d = check_tmpdir();
	int rc = check_system("'%s' %s > '%s/out' 2> '%s/err'", bin(), args, d, d);
	char p[4096];
	snprintf(p, sizeof p, "%s/out", d);
	*out = check_slurp(p, NULL);
	snprintf(p, sizeof p, "%s/err", d);
	*errs = check_slurp(p, NULL);
	return rc;
}

/* quality.tsv's row for file (a path relative to golden/pydoc-8m/): PPL, KLD, same-top %. */
static int golden(const char *file, double *ppl, double *kld, double *same)
{
	char *path = check_shared_path("golden/pydoc-8m/quality.tsv"), *t = check_slurp(path, NULL), key[256];
	double err;
	snprintf(key, sizeof key, "\n%s\t", file);
	char *l = t ? strstr(t, key) : NULL;
	int ok = l && sscanf(l + strlen(key), "%lf %lf %lf %lf", ppl, &err, kld, same) == 4;
	free(t);
	free(path);
	return ok;
}

/* PPL of file within 0.5 % of llama-perplexity's; with the F16 baseline, mean KLD within
 * 5 % or 0.0005 and same-top within 0.5 points. */
static void ppl(const char *file, bool kld)
{
	const char *sh = check_shared();
	char args[8192], base[4200] = "", *out, *errs;
	double want = 0, wkld = 0, wsame = 0;
	CHECK(golden(file, &want, &wkld, &wsame), "no line for %s in quality.tsv", file);
	if (kld)
		snprintf(base, sizeof base, "--baseline '%s/golden/pydoc-8m/pydoc-8m-F16.gguf'", sh);
	snprintf(args, sizeof args, "perplexity -m '%s/golden/pydoc-8m/%s' -f '%s/fixtures/corpora/eval.txt' --ctx 256 --chunks 64 --threads 2 --json %s",
		 sh, file, sh, base);
	int rc = run(args, &out, &errs);
	json_t *j = out ? json_loads(out, 0, NULL) : NULL;
	double got = json_real_value(json_object_get(j, "ppl"));
	printf("%s: PPL %.4f (llama-perplexity %.4f)\n", file, got, want);
	CHECK(rc == 0 && j, "%s: exit %d: %s", file, rc, errs);
	CHECK(want > 0 && fabs(got - want) / want < 0.005, "%s: PPL %.4f, golden %.4f", file, got, want);
	CHECK(json_integer_value(json_object_get(j, "scored")) == 64 * 127, "scored");
	if (kld) {
		double k = json_real_value(json_object_get(j, "kld")), st = json_real_value(json_object_get(j, "same_top"));
		printf("%s: KLD %.6f (llama %.6f), same top %.3f %% (llama %.3f %%)\n", file, k, wkld, st, wsame);
		CHECK(fabs(k - wkld) / wkld < 0.05 || fabs(k - wkld) < 0.0005, "KLD %.6f, golden %.6f", k, wkld);
		CHECK(fabs(st - wsame) < 0.5, "same top %.3f, golden %.3f", st, wsame);
		CHECK(json_real_value(json_object_get(j, "ln_ppl_ratio")) > 0, "a quantized model is worse");
	}
	json_decref(j);
	free(out);
	free(errs);
}

static void expect_fail(const char *args, int code, const char *needle)
{
	char *out, *errs;
	int rc = run(args, &out, &errs);
	CHECK(rc == code && errs && strstr(errs, needle), "qbake %s: exit %d, stderr: %s", args, rc, errs);
	free(out);
	free(errs);
}

/* Our imatrix against llama-imatrix's: every in_sum2 within 0.5 %, counts equal. */
static void imatrix(void)
{
	const char *sh = check_shared(), *d = check_tmpdir();
	char args[8192], *out, *errs, p[4096];
	imx_file g = { 0 }, q = { 0 }, qd = { 0 };
	err e = { 0 };

	snprintf(args, sizeof args, "imatrix -m '%s/golden/pydoc-8m/pydoc-8m-F16.gguf' -f '%s/fixtures/corpora/calib.txt' --ctx 256 --chunks 64 --threads 2 -o '%s/im.gguf'",
		 sh, sh, d);
	int rc = run(args, &out, &errs);
	CHECK(rc == 0 && out && strstr(out, "PPL = 103.88"), "imatrix: exit %d: %s %s", rc, out, errs);
	free(out);
	free(errs);
	snprintf(args, sizeof args, "imatrix -m '%s/golden/pydoc-8m/pydoc-8m-F16.gguf' -f '%s/fixtures/corpora/calib.txt' --ctx 256 --chunks 4 --format dat -o '%s/im.dat'",
		 sh, sh, d);
	rc = run(args, &out, &errs);
	CHECK(rc == 0, "imatrix --format dat: exit %d: %s", rc, errs);
	free(out);
	free(errs);

	char *gp = check_shared_path("golden/pydoc-8m/imatrix.gguf");
	snprintf(p, sizeof p, "%s/im.gguf", d);
	CHECK(imx_load(&g, gp, &e) == 0 && imx_load(&q, p, &e) == 0, "%s", e.msg);
	snprintf(p, sizeof p, "%s/im.dat", d);
	CHECK(imx_load(&qd, p, &e) == 0, "%s", e.msg);
	CHECK(g.n == 56 && q.n == g.n && qd.n == g.n, "%zu / %zu / %zu entries", g.n, q.n, qd.n);
	CHECK(q.chunk_count == 64 && q.chunk_size == 256 && q.n_datasets == 1 && !strcmp(q.datasets[0], "calib.txt"),
	      "chunks %lld, size %lld, dataset %s", (long long)q.chunk_count, (long long)q.chunk_size,
	      q.n_datasets ? q.datasets[0] : "none");
	CHECK(qd.legacy && qd.chunk_count == 4 && qd.n_datasets == 1 && !strcmp(qd.datasets[0], "calib.txt"), "dat trailer");
	double worst = 0;
	for (size_t i = 0; i < g.n && q.n == g.n; i++) {
		const imx_entry *a = &g.e[i], *b = imx_find(&q, a->name);
		CHECK(b && b->n == a->n && b->counts[0] == a->counts[0], "%s: counts %g vs %g", a->name,
		      b ? b->counts[0] : -1.0, a->counts[0]);
		for (uint64_t j = 0; b && b->n == a->n && j < a->n; j++) {
			double r = fabs(b->sum2[j] - a->sum2[j]) / fabs(a->sum2[j]);
			worst = r > worst ? r : worst;
		}
	}
	printf("imatrix: worst in_sum2 difference from llama-imatrix %.4f %%\n", 100 * worst);
	CHECK(worst < 0.005, "in_sum2 off by %.4f %%", 100 * worst);
	imx_free(&g);
	imx_free(&q);
	imx_free(&qd);
	free(gp);
}

/* --save-baseline then --baseline FILE: the same figures as with the baseline model. */
static void saved_baseline(void)
{
	const char *sh = check_shared(), *d = check_tmpdir();
	char args[8192], *out, *errs;
	double kld[2] = { 0, 0 };
	const char *common = "-f '%s/golden/pydoc-8m/eval-64k.txt' --ctx 256 --chunks 8 --threads 2";
	char c[1024];
	snprintf(c, sizeof c, common, sh);
	snprintf(args, sizeof args, "perplexity -m '%s/golden/pydoc-8m/pydoc-8m-F16.gguf' %s --save-baseline '%s/base.klp'", sh, c, d);
	int rc = run(args, &out, &errs);
	CHECK(rc == 0, "save-baseline: exit %d: %s", rc, errs);
	free(out);
	free(errs);
	for (int k = 0; k < 2; k++) {
		char base[4200];
		if (k == 0)
			snprintf(base, sizeof base, "'%s/golden/pydoc-8m/pydoc-8m-F16.gguf'", sh);
		else
			snprintf(base, sizeof base, "'%s/base.klp'", d);
		snprintf(args, sizeof args, "perplexity -m '%s/golden/pydoc-8m/quant/pydoc-8m-Q4_K_M-imat.gguf' %s --json --baseline %s", sh, c, base);
		rc = run(args, &out, &errs);
		json_t *j = out ? json_loads(out, 0, NULL) : NULL;
		CHECK(rc == 0 && j, "baseline %s: exit %d: %s", base, rc, errs);
		kld[k] = json_real_value(json_object_get(j, "kld"));
		json_decref(j);
		free(out);
		free(errs);
	}
	printf("KLD against the model %.7f, against the saved log-probabilities %.7f\n", kld[0], kld[1]);
	CHECK(kld[0] > 0 && fabs(kld[1] - kld[0]) < 0.02 * kld[0], "KLD %g vs %g", kld[0], kld[1]);
	/* A file made with another ctx is refused. */
	snprintf(args, sizeof args, "perplexity -m '%s/golden/pydoc-8m/quant/pydoc-8m-Q4_K_M-imat.gguf' -f '%s/golden/pydoc-8m/eval-64k.txt' --ctx 128 --chunks 8 --baseline '%s/base.klp'", sh, sh, d);
	expect_fail(args, 2, "saved for 8 chunks of 256 tokens");
}

int main(void)
{
	const char *sh = check_shared(), *d = check_tmpdir();
	char args[8192], *out, *errs;

	imatrix();
	saved_baseline();
	ppl("quant/pydoc-8m-Q4_K_M-imat.gguf", true);
	ppl("quant/pydoc-8m-Q8_0.gguf", false);

	/* generate: llama-completion's continuation (its file ends with "\n\n", ours with "\n"). */
	snprintf(args, sizeof args, "generate -m '%s/golden/pydoc-8m/pydoc-8m-F16.gguf' -p 'def fibonacci(n):' -n 32 --threads 1", sh);
	char *gp = check_shared_path("golden/pydoc-8m/generate/3-pydoc-8m-F16.txt"), *want = check_slurp(gp, NULL);
	int rc = run(args, &out, &errs);
	CHECK(rc == 0 && out && want && strncmp(out, want, strlen(out)) == 0 && strlen(want) == strlen(out) + 1,
	      "generate: exit %d: '%s' vs '%s'", rc, out, want);
	free(out);
	free(errs);
	free(want);
	free(gp);

	/* Bad input: each one exit 2 and a message saying what is wrong. */
	check_system("printf 'good text \\377 then bad' > '%s/bad.txt'", d);
	snprintf(args, sizeof args, "perplexity -m '%s/golden/pydoc-8m/pydoc-8m-F16.gguf' -f '%s/bad.txt'", sh, d);
	expect_fail(args, 2, "offset 10: not UTF-8");
	snprintf(args, sizeof args, "perplexity -m '%s/golden/pydoc-8m/pydoc-8m-F16.gguf' -f '%s/golden/pydoc-8m/generate/prompts.txt' --ctx 256", sh, sh);
	expect_fail(args, 2, "fewer than 2 x context");
	snprintf(args, sizeof args, "perplexity -m '%s/golden/pydoc-8m/pydoc-8m-F16.gguf' -f '%s/bad.txt' --ctx 4096", sh, d);
	expect_fail(args, 2, "offset 10");
	snprintf(args, sizeof args, "perplexity -m '%s/golden/pydoc-8m/pydoc-8m-F16.gguf' -f '%s/golden/pydoc-8m/eval-64k.txt' --ctx 4096", sh, sh);
	expect_fail(args, 2, "larger than the model's context");
	snprintf(args, sizeof args, "perplexity -m '%s/golden/pydoc-8m/imatrix.gguf' -f '%s/golden/pydoc-8m/eval-64k.txt'", sh, sh);
	expect_fail(args, 2, "imatrix.gguf");
	expect_fail("perplexity -m x.gguf", 2, "required");
	expect_fail("generate -m x.gguf -p hi -n zero", 2, "-n needs");
	CHECK(run("perplexity --help", &out, &errs) == 0 && out && strstr(out, "exit codes"), "help");
	free(out);
	free(errs);
	return check_done();
}
