/* evalcmd.c - `qbake perplexity` and `qbake generate`: measure a model, smoke-test it */
#include "evalcmd.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "eval.h"
#include "gguf.h"
#include "model.h"
#include "tokenizer.h"
#include "utf8.h"

const char evalcmd_perplexity_help[] =
	"usage: qbake perplexity -m MODEL.gguf -f TEXT.txt [--ctx N] [--chunks N] [--threads N]\n"
	"                        [--baseline BASE.gguf|BASE.klp] [--save-baseline OUT.klp] [--json]\n"
	"\n"
	"Measures the perplexity of MODEL on TEXT the way llama-perplexity does: the whole\n"
	"text is tokenized with BOS, cut into chunks of N tokens (the first token of each\n"
	"chunk replaced by BOS), each chunk is evaluated from an empty state, and only the\n"
	"second half of each chunk is scored (positions N/2 .. N-2 predicting the next\n"
	"token). PPL = exp(mean negative log-likelihood); the +/- figure is llama.cpp's:\n"
	"PPL x the standard deviation of the per-token NLL / sqrt(count - 1).\n"
	"Architectures: llama (and Mistral-style GGUFs), qwen2. Any tensor type qbake can\n"
	"dequantize. The running PPL after each chunk goes to stderr, the result to stdout.\n"
	"\n"
	"options:\n"
	"  -m, --model FILE   the GGUF model\n"
	"  -f, --file FILE    the text (UTF-8)\n"
	"  --ctx N            tokens per chunk (default 512; at most the model's context)\n"
	"  --chunks N         evaluate at most N chunks (default: all)\n"
	"  --threads N        threads (default: the number of CPUs)\n"
	"  --baseline FILE    compare with a baseline, as llama-perplexity --kl-divergence\n"
	"                     does: FILE is a GGUF model (same vocabulary, run on the same\n"
	"                     chunks) or a log-probability file from --save-baseline (made\n"
	"                     with the same text, ctx and chunks); the report has\n"
	"                     PPL of both, mean ln(PPL/PPL(base)), mean KL-divergence\n"
	"                     (base || model) +/- error and its percentiles (max, 99.9, 99,\n"
	"                     95, 90, median, 10, 5, 1, 0.1, min), dp = p(correct) - p_base\n"
	"                     (correct) mean, RMS and percentiles, same-top %% +/- error\n"
	"  --save-baseline F  also write MODEL's log-probabilities of every scored token to F\n"
	"                     (16 bits each: chunks x ctx/2 x vocabulary x 2 bytes, plus the\n"
	"                     target's exact NLL), so later runs can compare without MODEL\n"
	"  --json             print {\"ppl\", \"ppl_err\", \"nll\", \"chunks\", \"ctx\", \"scored\",\n"
	"                     \"tokens\", \"seconds\"} (with --baseline also \"base_ppl\",\n"
	"                     \"base_ppl_err\", \"ln_ppl_ratio\", \"ppl_ratio\", \"kld\", \"kld_err\",\n"
	"                     \"kld_percentiles\", \"dp\", \"dp_err\", \"dp_rms\", \"dp_percentiles\",\n"
	"                     \"same_top\", \"same_top_err\"; percentages for dp and same_top)\n"
	"  --help             this text\n"
	"\n"
	"exit codes:\n"
	"  0  the perplexity was printed\n"
	"  1  the evaluation failed (e.g. out of memory)\n"
	"  2  usage error, or bad input: unreadable or invalid model, unsupported\n"
	"     architecture, missing tensor, text that is not UTF-8 (the byte offset is\n"
	"     given), text shorter than 2 x ctx tokens, ctx above the model's context\n"
	"\n"
	"example:\n"
	"  qbake perplexity -m pydoc-8m-F16.gguf -f eval.txt --ctx 256 --chunks 64\n";

const char evalcmd_generate_help[] =
	"usage: qbake generate -m MODEL.gguf -p PROMPT [-n N] [--threads N]\n"
	"\n"
	"Greedy decoding with a KV cache, for smoke tests: PROMPT is tokenized with BOS\n"
	"(special tokens written in it are parsed), then the most likely token is appended\n"
	"N times (default 64) or until an end-of-generation token. Prints the continuation\n"
	"only (not the prompt), then a newline. Same continuation as llama-completion with\n"
	"--temp 0 on the fixture models.\n"
	"\n"
	"options:\n"
	"  -m, --model FILE    the GGUF model\n"
	"  -p, --prompt TEXT   the prompt (UTF-8)\n"
	"  -n N                tokens to generate (default 64)\n"
	"  --threads N         threads (default: the number of CPUs)\n"
	"  --help              this text\n"
	"\n"
	"exit codes: 0 printed, 1 generation failed, 2 usage error or bad model/prompt\n"
	"\n"
	"example:\n"
	"  qbake generate -m pydoc-8m-Q4_K_M.gguf -p 'def fibonacci(n):' -n 32\n";

/* A model opened for evaluation: the file, its vocabulary and its weights. */
typedef struct loaded {
	gguf_file f;
	tok_vocab *v;
	model *m;
} loaded;

static int load(loaded *l, const char *path, int threads, err *e)
{
	memset(l, 0, sizeof *l);
	if (gguf_open(&l->f, path, e))
		return -1;
	if (!(l->v = tok_load(&l->f.meta, e)) || !(l->m = model_load(&l->f, threads, e)))
		return err_prefix(e, "%s", path);
	return 0;
}

static void unload(loaded *l)
{
	model_free(l->m);
	tok_free(l->v);
	gguf_close(&l->f);
}

/* True when path starts with the GGUF magic (else it is taken for a log-prob file). */
static bool is_gguf(const char *path)
{
	char m[4] = { 0 };
	FILE *f = fopen(path, "rb");
	if (f) {
		if (fread(m, 1, 4, f) != 4)
			m[0] = 0;
		fclose(f);
	}
	return !memcmp(m, "GGUF", 4);
}

static int default_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

/* A positive integer option value, or -1. */
static int num(const char *s)
{
	char *end;
	long v = s ? strtol(s, &end, 10) : -1;
	return s && *s && !*end && v > 0 && v < (1L << 30) ? (int)v : -1;
}

static int usage(const char *cmd, const char *msg)
{
	fprintf(stderr, "qbake: %s: %s (see qbake help %s)\n", cmd, msg, cmd);
	return 2;
}

/* Reads path whole and checks it is UTF-8; NULL with e set. */
static char *read_text(const char *path, size_t *len, err *e)
{
	FILE *fp = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0;
	if (!fp) {
		err_errno(e, "%s", path);
		return NULL;
	}
	for (;;) {
		if (n == cap) {
			char *b = realloc(buf, cap ? 2 * cap : 1 << 16);
			if (!b) {
				err_set(e, "%s: out of memory", path);
				goto fail;
			}
			buf = b;
			cap = cap ? 2 * cap : 1 << 16;
		}
		size_t r = fread(buf + n, 1, cap - n, fp);
		n += r;
		if (r == 0)
			break;
	}
	if (ferror(fp)) {
		err_errno(e, "%s: read", path);
		goto fail;
	}
	fclose(fp);
	size_t bad = utf8_check(buf, n);
	if (bad < n) {
		err_set(e, "%s: offset %zu: not UTF-8 text (byte 0x%02x)", path, bad, (unsigned char)buf[bad]);
		free(buf);
		return NULL;
	}
	*len = n;
	return buf;
fail:
	fclose(fp);
	free(buf);
	return NULL;
}

static void progress(void *ctx, int chunk, double ppl)
{
	(void)ctx;
	fprintf(stderr, "[%d]%.4f,%s", chunk + 1, ppl, (chunk + 1) % 10 ? "" : "\n");
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int evalcmd_perplexity_main(int argc, char **argv)
{
	const char *mpath = NULL, *fpath = NULL, *bpath = NULL, *spath = NULL;
	int ctx = 512, chunks = 0, threads = default_threads();
	bool json = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			fputs(evalcmd_perplexity_help, stdout);
			return 0;
		} else if (!strcmp(a, "--json")) {
			json = true;
		} else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && next) {
			mpath = argv[++i];
		} else if ((!strcmp(a, "-f") || !strcmp(a, "--file")) && next) {
			fpath = argv[++i];
		} else if (!strcmp(a, "--baseline") && next) {
			bpath = argv[++i];
		} else if (!strcmp(a, "--save-baseline") && next) {
			spath = argv[++i];
		} else if ((!strcmp(a, "--ctx") || !strcmp(a, "-c")) && next) {
			if ((ctx = num(argv[++i])) < 0)
				return usage("perplexity", "--ctx needs a positive number");
		} else if (!strcmp(a, "--chunks") && next) {
			if ((chunks = num(argv[++i])) < 0)
				return usage("perplexity", "--chunks needs a positive number");
		} else if ((!strcmp(a, "--threads") || !strcmp(a, "-t")) && next) {
			if ((threads = num(argv[++i])) < 0)
				return usage("perplexity", "--threads needs a positive number");
		} else {
			char msg[256];
			snprintf(msg, sizeof msg, "unexpected argument '%s'", a);
			return usage("perplexity", msg);
		}
	}
	if (!mpath || !fpath)
		return usage("perplexity", "-m MODEL and -f TEXT are required");
	if (bpath && spath)
		return usage("perplexity", "--baseline and --save-baseline do not go together");

	err e = { 0 };
	loaded l, b;
	size_t len = 0;
	char *text = NULL;
	int rc = 2;
	memset(&b, 0, sizeof b);
	bool base_file = bpath && !is_gguf(bpath);
	if (load(&l, mpath, threads, &e) || (bpath && !base_file && load(&b, bpath, threads, &e)) ||
	    !(text = read_text(fpath, &len, &e)))
		goto out;
	const model_hparams *hp = model_params(l.m);
	if (ctx > hp->n_ctx_train) {
		err_set(&e, "--ctx %d is larger than the model's context (%s.context_length = %d)", ctx, hp->arch,
			hp->n_ctx_train);
		goto out;
	}
	if (b.m && model_params(b.m)->n_vocab != hp->n_vocab) {
		err_set(&e, "%s has %d tokens, %s has %d: not the same vocabulary", bpath, model_params(b.m)->n_vocab,
			mpath, hp->n_vocab);
		goto out;
	}
	if (!json)
		fprintf(stderr, "%s: %s, %d layers, %d threads; %s: %zu bytes; ctx %d\n", mpath, hp->arch, hp->n_layer,
			threads, fpath, len, ctx);
	eval_ppl r;
	eval_cmp c;
	double t0 = now();
	bool cmp = bpath != NULL;
	eval_progress_fn pf = json ? NULL : progress;
	if (cmp ? (b.m ? eval_compare(b.m, l.m, l.v, text, len, ctx, chunks, pf, NULL, &c, &e)
		       : eval_compare_saved(l.m, l.v, text, len, ctx, chunks, bpath, pf, NULL, &c, &e))
	    : spath ? eval_base_save(l.m, l.v, text, len, ctx, chunks, spath, &r, &e)
		    : eval_perplexity(l.m, l.v, text, len, ctx, chunks, pf, NULL, &r, &e)) {
		size_t nt = cmp ? c.test.n_tokens : r.n_tokens;
		rc = (nt && nt < 2 * (size_t)ctx) || (base_file && strstr(e.msg, bpath)) ? 2 : 1;
		goto out;
	}
	if (cmp)
		r = c.test;
	double secs = now() - t0;
	if (json) {
		json_t *o = json_pack("{s:f, s:f, s:f, s:i, s:i, s:I, s:I, s:f}", "ppl", r.ppl, "ppl_err", r.ppl_err, "nll",
				      r.nll, "chunks", r.chunks, "ctx", ctx, "scored", (json_int_t)r.count, "tokens",
				      (json_int_t)r.n_tokens, "seconds", secs);
		if (o && cmp) {
			json_t *kp = json_object(), *dp = json_object();
			char k[16];
			for (int i = 0; i < 11; i++) {
				snprintf(k, sizeof k, "%g", eval_kld_pcts[i]);
				json_object_set_new(kp, k, json_real(c.kld_pct[i]));
			}
			for (int i = 0; i < 13; i++) {
				snprintf(k, sizeof k, "%g", eval_dp_pcts[i]);
				json_object_set_new(dp, k, json_real(100 * c.dp_pct[i]));
			}
			json_t *x = json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:o, s:f, s:f, s:f, s:o, s:f, s:f}",
							"base_ppl", c.base.ppl, "base_ppl_err", c.base.ppl_err,
							"ln_ppl_ratio", c.ln_ratio, "ppl_ratio", c.test.ppl / c.base.ppl,
							"kld", c.kld, "kld_err", c.kld_err, "kld_percentiles", kp, "dp",
							100 * c.dp, "dp_err", 100 * c.dp_err, "dp_rms", 100 * c.dp_rms,
							"dp_percentiles", dp, "same_top", 100 * c.same_top, "same_top_err",
							100 * c.same_top_err);
			if (!x || json_object_update(o, x)) {
				json_decref(o);
				o = NULL;
			}
			json_decref(x);
		}
		int bad = !o || json_dumpf(o, stdout, JSON_INDENT(2)) || putchar('\n') == EOF;
		json_decref(o);
		if (bad) {
			err_set(&e, "cannot write the result");
			rc = 1;
			goto out;
		}
	} else {
		fprintf(stderr, "\n%d chunks x %d tokens in %.2f s (%.0f tokens/s, tokenizing included)\n", r.chunks, ctx,
			secs, (double)r.chunks * ctx * (b.m ? 2 : 1) / secs);
		if (spath)
			fprintf(stderr, "wrote the log-probabilities to %s\n", spath);
		printf("PPL = %.4f +/- %.5f\n", r.ppl, r.ppl_err);
		if (cmp) {
			static const char *const kn[11] = { "Maximum", "99.9%  ", "99.0%  ", "95.0%  ", "90.0%  ", "Median ",
							    "10.0%  ", " 5.0%  ", " 1.0%  ", " 0.1%  ", "Minimum" };
			static const char *const dn[13] = { "Maximum", "99.9%  ", "99.0%  ", "95.0%  ", "90.0%  ", "75.0%  ",
							    "Median ", "25.0%  ", "10.0%  ", " 5.0%  ", " 1.0%  ", " 0.1%  ",
							    "Minimum" };
			printf("Mean PPL(base)                : %.6f +/- %.6f\n", c.base.ppl, c.base.ppl_err);
			printf("Mean ln(PPL(Q)/PPL(base))     : %.6f +/- %.6f\n", c.ln_ratio, c.ln_ratio_err);
			printf("Mean PPL(Q)/PPL(base)         : %.6f\n", c.test.ppl / c.base.ppl);
			printf("Mean    KLD: %10.6f +/- %10.6f\n", c.kld, c.kld_err);
			for (int i = 0; i < 11; i++)
				printf("%s KLD: %10.6f\n", kn[i], c.kld_pct[i]);
			printf("Mean    dp: %7.3f +/- %.3f %%\n", 100 * c.dp, 100 * c.dp_err);
			for (int i = 0; i < 13; i++)
				printf("%s dp: %7.3f %%\n", dn[i], 100 * c.dp_pct[i]);
			printf("RMS dp    : %7.3f +/- %.3f %%\n", 100 * c.dp_rms, 100 * c.dp_rms_err);
			printf("Same top p: %7.3f +/- %.3f %%\n", 100 * c.same_top, 100 * c.same_top_err);
		}
	}
	rc = fflush(stdout) ? 1 : 0;
	if (rc)
		err_set(&e, "cannot write the result");
out:
	if (rc)
		fprintf(stderr, "qbake: %s\n", e.msg);
	free(text);
	unload(&l);
	unload(&b);
	return rc;
}

int evalcmd_generate_main(int argc, char **argv)
{
	const char *mpath = NULL, *prompt = NULL;
	int n = 64, threads = default_threads();
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			fputs(evalcmd_generate_help, stdout);
			return 0;
		} else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && next) {
			mpath = argv[++i];
		} else if ((!strcmp(a, "-p") || !strcmp(a, "--prompt")) && next) {
			prompt = argv[++i];
		} else if (!strcmp(a, "-n") && next) {
			if ((n = num(argv[++i])) < 0)
				return usage("generate", "-n needs a positive number");
		} else if ((!strcmp(a, "--threads") || !strcmp(a, "-t")) && next) {
			if ((threads = num(argv[++i])) < 0)
				return usage("generate", "--threads needs a positive number");
		} else {
			char msg[256];
			snprintf(msg, sizeof msg, "unexpected argument '%s'", a);
			return usage("generate", msg);
		}
	}
	if (!mpath || !prompt)
		return usage("generate", "-m MODEL and -p PROMPT are required");

	err e = { 0 };
	loaded l;
	tok_ids out = { 0 };
	int rc = 2;
	size_t plen = strlen(prompt), bad = utf8_check(prompt, plen);
	if (bad < plen) {
		err_set(&e, "prompt: offset %zu: not UTF-8", bad);
		memset(&l, 0, sizeof l);
		goto out;
	}
	if (load(&l, mpath, threads, &e))
		goto out;
	if (eval_generate(l.m, l.v, prompt, plen, n, &out, &e)) {
		rc = 1;
		goto out;
	}
	for (size_t i = 0; i < out.n; i++) {
		size_t pl;
		const char *p = tok_piece(l.v, out.ids[i], false, &pl);
		fwrite(p, 1, pl, stdout);
	}
	putchar('\n');
	rc = fflush(stdout) || ferror(stdout) ? 1 : 0;
	if (rc)
		err_set(&e, "cannot write the continuation");
out:
	if (rc)
		fprintf(stderr, "qbake: %s\n", e.msg);
	tok_ids_free(&out);
	unload(&l);
	return rc;
}
