/* imatrix_cmd.c - `qbake imatrix`: compute an importance matrix from a calibration text */
#include "imatrix_cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "imatrix.h"
#include "model.h"
#include "sha256.h"
#include "tokenizer.h"
#include "utf8.h"

const char imatrix_cmd_help[] =
	"usage: qbake imatrix -m MODEL.gguf -f CORPUS.txt -o OUT [--ctx N] [--chunks N]\n"
	"                     [--threads N] [--format gguf|dat]\n"
	"\n"
	"Computes an importance matrix the way llama-imatrix does: the whole corpus is\n"
	"tokenized with BOS (as the model's metadata says), cut into chunks of N tokens,\n"
	"the first token of each chunk replaced by BOS, and every chunk evaluated from an\n"
	"empty state. For every blk.* weight matrix, the sum of squares and the sum of its\n"
	"input activations are accumulated per input column, with the number of tokens\n"
	"seen (output.weight is left out, as llama-imatrix does by default). The running\n"
	"perplexity of the chunks goes to stderr as llama-imatrix prints it ([1]145.78,...);\n"
	"the final estimate to stdout.\n"
	"\n"
	"Output, written atomically (nothing is left at OUT on failure):\n"
	"  gguf  llama-imatrix's GGUF format, which llama-quantize --imatrix reads:\n"
	"        general.type = imatrix, imatrix.datasets (the corpus file name, never its\n"
	"        directory), imatrix.chunk_count, imatrix.chunk_size, imatrix.stats_schema;\n"
	"        per matrix <name>.in_sum2, .counts, .in_sum and .stats (sum_sq, mean,\n"
	"        elements, std_deviation, skewness, kurtosis, gain, h_norm, l2_dist, cossim,\n"
	"        pearson, covariance); plus qbake.imatrix.baseline.sha256, the SHA-256 of\n"
	"        MODEL, so qbake applies the matrix only to the baseline it came from.\n"
	"  dat   the legacy format (per matrix the mean square x the chunk count; then the\n"
	"        chunk count and the corpus file name). No in_sum, stats or digest.\n"
	"\n"
	"options:\n"
	"  -m, --model FILE   the model (any type qbake can dequantize; llama, qwen2)\n"
	"  -f, --file FILE    the calibration text, UTF-8\n"
	"  -o, --output FILE  where to write the importance matrix\n"
	"  -c, --ctx N        tokens per chunk, 16 .. the model's context (default 512)\n"
	"  --chunks N         at most N chunks (default: every whole chunk of the corpus)\n"
	"  -t, --threads N    threads (default: the number of CPUs)\n"
	"  --format F         gguf (default) or dat\n"
	"  --help             this text\n"
	"\n"
	"The corpus must hold at least 2 x N tokens (llama-imatrix's own minimum).\n"
	"\n"
	"exit codes: 0 written; 1 failed (out of memory, cannot write OUT); 2 usage error\n"
	"or bad input (unreadable or non-GGUF model, missing tensors or architecture,\n"
	"corpus not UTF-8 (the byte offset is named) or shorter than 2 x N tokens, N\n"
	"larger than the model's context)\n"
	"\n"
	"example:\n"
	"  qbake imatrix -m pydoc-8m-F16.gguf -f calib.txt --ctx 256 --chunks 64 -o imatrix.gguf\n";

static int usage(const char *msg)
{
	fprintf(stderr, "qbake: imatrix: %s (see qbake help imatrix)\n", msg);
	return 2;
}

/* A positive integer option value, or -1. */
static int num(const char *s)
{
	char *end;
	long v = s ? strtol(s, &end, 10) : -1;

	return s && *s && !*end && v > 0 && v < (1L << 30) ? (int)v : -1;
}

static int default_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Reads path whole and checks it is UTF-8; NULL with e set (naming the byte offset). */
static char *read_text(const char *path, size_t *len, err *e)
{
	FILE *fp = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0, r;

	if (!fp)
		return err_errno(e, "%s", path), NULL;
	do {
		if (n == cap) {
			char *b = realloc(buf, cap ? 2 * cap : 1 << 16);
			if (!b) {
				err_set(e, "%s: out of memory", path);
				goto fail;
			}
			buf = b;
			cap = cap ? 2 * cap : 1 << 16;
		}
		r = fread(buf + n, 1, cap - n, fp);
		n += r;
	} while (r > 0);
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

static void progress(void *ctx, int chunk, int n_chunks, double ppl)
{
	(void)ctx;
	fprintf(stderr, "[%d]%.4f,%s", chunk, ppl, chunk % 10 == 0 || chunk == n_chunks ? "\n" : "");
}

/* Parsed command line. */
typedef struct args {
	const char *model, *corpus, *out;
	int ctx, chunks, threads;
	imx_format format;
} args;

/* Fills a from argv; returns 0, or the usage exit code after printing why. */
static int parse(args *a, int argc, char **argv)
{
	*a = (args){ .ctx = 512, .threads = default_threads(), .format = IMX_GGUF };
	for (int i = 1; i < argc; i++) {
		const char *o = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
		int *n = NULL;

		if ((!strcmp(o, "-m") || !strcmp(o, "--model")) && next)
			a->model = argv[++i];
		else if ((!strcmp(o, "-f") || !strcmp(o, "--file")) && next)
			a->corpus = argv[++i];
		else if ((!strcmp(o, "-o") || !strcmp(o, "--output")) && next)
			a->out = argv[++i];
		else if (!strcmp(o, "--format") && next) {
			const char *f = argv[++i];
			if (strcmp(f, "gguf") && strcmp(f, "dat"))
				return usage("--format is gguf or dat");
			a->format = strcmp(f, "dat") ? IMX_GGUF : IMX_DAT;
		} else if ((!strcmp(o, "-c") || !strcmp(o, "--ctx")) && next)
			n = &a->ctx;
		else if (!strcmp(o, "--chunks") && next)
			n = &a->chunks;
		else if ((!strcmp(o, "-t") || !strcmp(o, "--threads")) && next)
			n = &a->threads;
		else {
			char msg[300];
			snprintf(msg, sizeof msg, "unexpected argument '%.200s'", o);
			return usage(msg);
		}
		if (n && (*n = num(argv[++i])) < 0) {
			char msg[100];
			snprintf(msg, sizeof msg, "%s needs a positive number", o);
			return usage(msg);
		}
	}
	if (!a->model || !a->corpus || !a->out)
		return usage("-m MODEL, -f CORPUS and -o OUT are required");
	if (a->ctx < 16)
		return usage("--ctx must be at least 16 (llama-imatrix ignores multiplications over fewer tokens)");
	return 0;
}

int imatrix_cmd_main(int argc, char **argv)
{
	args a;
	gguf_file f = { 0 };
	tok_vocab *v = NULL;
	model *m = NULL;
	char *text = NULL;
	size_t len = 0;
	imx_file im = { 0 };
	imx_ppl ppl = { 0 };
	err e = { 0 };
	uint8_t digest[32];
	int rc = parse(&a, argc, argv);

	if (rc != 0)
		return rc;
	rc = 2;
	if (gguf_open(&f, a.model, &e) != 0)
		goto out;
	if (!(v = tok_load(&f.meta, &e)) || !(m = model_load(&f, a.threads, &e))) {
		err_prefix(&e, "%s", a.model);
		goto out;
	}
	const model_hparams *hp = model_params(m);
	if (a.ctx > hp->n_ctx_train) {
		err_set(&e, "--ctx %d is larger than the model's context (%s.context_length = %d)", a.ctx, hp->arch,
			hp->n_ctx_train);
		goto out;
	}
	if (!(text = read_text(a.corpus, &len, &e)))
		goto out;
	sha256_buf(f.map, f.size, digest);
	fprintf(stderr, "%s: %s, %d layers, %d threads; %s: %zu bytes; ctx %d\n", a.model, hp->arch, hp->n_layer,
		a.threads, a.corpus, len, a.ctx);
	imx_params p = { .ctx = a.ctx, .max_chunks = a.chunks, .datasets = &a.corpus, .n_datasets = 1,
			 .baseline_sha256 = digest,
			 .progress = progress };
	double t0 = now();
	if (imx_compute(&im, m, v, text, len, &p, &ppl, &e) != 0) {
		/* a text too short is bad input; anything else a failure */
		rc = ppl.n_tokens > 0 && ppl.n_tokens < 2 * (size_t)a.ctx ? 2 : 1;
		err_prefix(&e, "%s", a.corpus);
		goto out;
	}
	double secs = now() - t0;
	rc = 1;
	if (imx_save(&im, a.out, a.format, &e) != 0)
		goto out;
	fprintf(stderr, "%d chunks x %d tokens in %.2f s (%.0f tokens/s, tokenizing included)\n", ppl.chunks, a.ctx,
		secs, (double)ppl.chunks * a.ctx / secs);
	printf("Final estimate: PPL = %.4f +/- %.5f\nwrote %s: %zu matrices, %d chunks of %d tokens\n", ppl.ppl,
	       ppl.ppl_err, a.out, im.n, ppl.chunks, a.ctx);
	rc = fflush(stdout) != 0 ? err_set(&e, "cannot write to stdout"), 1 : 0;
out:
	if (rc != 0)
		fprintf(stderr, "qbake: %s\n", e.msg);
	imx_free(&im);
	free(text);
	model_free(m);
	tok_free(v);
	gguf_close(&f);
	return rc;
}
