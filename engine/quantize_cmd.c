/* quantize_cmd.c - `qbake quantize IN.gguf OUT.gguf TIER`: options, plan, progress lines, summary */
#include "quantize_cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "imatrix.h"
#include "quant.h"
#include "quantize.h"
#include "tiers.h"

const char quantize_cmd_help[] =
	"usage: qbake quantize [OPTIONS] IN.gguf OUT.gguf TIER\n"
	"       qbake quantize --dry-run [OPTIONS] IN.gguf [OUT.gguf] TIER\n"
	"\n"
	"Quantizes an unquantized (F32/F16/BF16) GGUF model to TIER, choosing each tensor's\n"
	"type exactly as llama-quantize does, with the same bytes. Tensors are converted one\n"
	"at a time; OUT is written to a temporary file beside it and renamed into place, so\n"
	"on any error nothing is left at OUT.\n"
	"\n"
	"TIER (case-insensitive): F16 BF16 Q8_0 Q6_K Q5_K_M Q5_K_S Q4_K_M Q4_K_S Q3_K_L\n"
	"  Q3_K_M Q3_K_S Q2_K Q4_0 Q4_1 Q5_0 Q5_1 IQ4_NL IQ4_XS\n"
	"\n"
	"options:\n"
	"  --imatrix FILE             importance matrix (llama-imatrix GGUF format, or the\n"
	"                             legacy .dat); its base name, dataset, entry and chunk\n"
	"                             counts are recorded in quantize.imatrix.*\n"
	"  --pure                     every quantized tensor gets the tier's default type\n"
	"  --leave-output-tensor      leave output.weight unquantized\n"
	"  --output-tensor-type T     ggml type for output.weight (e.g. q8_0)\n"
	"  --token-embedding-type T   ggml type for token_embd.weight\n"
	"  --tensor-type REGEX=T      tensors whose name matches the POSIX extended REGEX get\n"
	"                             type T; may be repeated, the first matching rule wins\n"
	"  --threads N                quantizer threads (default: online CPUs); the output\n"
	"                             is identical for any N\n"
	"  --dry-run                  print the per-tensor plan with sizes, write nothing\n"
	"  -q, --quiet                no per-tensor lines, only warnings and the summary\n"
	"\n"
	"Rules: an input tensor that is already quantized is refused (start from the\n"
	"F16/BF16/F32 baseline; there is no switch to allow requantizing). An imatrix entry\n"
	"of the wrong length or holding NaN/Inf is an error; a tensor without an entry is\n"
	"quantized without one, with a warning. NaN/Inf in the weights is an error naming\n"
	"the tensor and row.\n"
	"\n"
	"exit status: 0 written (or planned), 1 quantization failed or was refused,\n"
	"2 usage error or unreadable input or imatrix.\n"
	"\n"
	"example:\n"
	"  qbake quantize --imatrix imatrix.gguf model-F16.gguf model-Q4_K_M.gguf Q4_K_M\n";

/* The parsed command line. */
typedef struct qargs {
	const char *in, *out, *tier, *imatrix;
	tier_options opt;
	tier_rule *rules;   /* owned; opt.rules points here */
	int threads;
	int dry_run, quiet;
} qargs;

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "qbake: quantize: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see qbake quantize --help)\n");
	return 2;
}

/* A ggml type qbake can write, or -1 after printing the error. */
static int parse_type(const char *opt, const char *s)
{
	int t = gguf_type_by_name(s);

	if (t < 0 || !quant_can_quantize((uint32_t)t)) {
		fprintf(stderr, "qbake: quantize: %s: '%s' is not a type qbake can write\n", opt, s);
		return -1;
	}
	return t;
}

static int add_rule(qargs *a, const char *arg)
{
	tier_rule *r = realloc(a->rules, (a->opt.n_rules + 1) * sizeof *r);
	err e = { 0 };

	if (!r)
		return usage_error("%s", "out of memory");
	a->rules = r;
	if (tier_rule_parse(&r[a->opt.n_rules], arg, &e) != 0) {
		fprintf(stderr, "qbake: quantize: %s\n", e.msg);
		return 2;
	}
	a->opt.n_rules++; /* from here on freed with the others */
	a->opt.rules = a->rules;
	if (!quant_can_quantize(r[a->opt.n_rules - 1].type)) {
		fprintf(stderr, "qbake: quantize: --tensor-type '%s': not a type qbake can write\n", arg);
		return 2;
	}
	return 0;
}

/* The value of option argv[*i] (either "--opt=value" or "--opt value"), or NULL. */
static const char *opt_value(int argc, char **argv, int *i, const char *name)
{
	size_t n = strlen(name);

	if (strncmp(argv[*i], name, n) != 0)
		return NULL;
	if (argv[*i][n] == '=')
		return argv[*i] + n + 1;
	if (argv[*i][n] == '\0' && *i + 1 < argc)
		return argv[++*i];
	return NULL;
}

static int parse_args(qargs *a, int argc, char **argv)
{
	const char *pos[3];
	int npos = 0;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	memset(a, 0, sizeof *a);
	a->opt.output_type = a->opt.token_embd_type = -1;
	a->threads = ncpu > 0 ? (int)ncpu : 1;
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *v;

		if (strcmp(arg, "--pure") == 0)
			a->opt.pure = true;
		else if (strcmp(arg, "--leave-output-tensor") == 0)
			a->opt.leave_output = true;
		else if (strcmp(arg, "--dry-run") == 0)
			a->dry_run = 1;
		else if (strcmp(arg, "-q") == 0 || strcmp(arg, "--quiet") == 0)
			a->quiet = 1;
		else if ((v = opt_value(argc, argv, &i, "--imatrix")))
			a->imatrix = v;
		else if ((v = opt_value(argc, argv, &i, "--output-tensor-type"))) {
			if ((a->opt.output_type = parse_type("--output-tensor-type", v)) < 0)
				return 2;
		} else if ((v = opt_value(argc, argv, &i, "--token-embedding-type"))) {
			if ((a->opt.token_embd_type = parse_type("--token-embedding-type", v)) < 0)
				return 2;
		} else if ((v = opt_value(argc, argv, &i, "--tensor-type"))) {
			if (add_rule(a, v) != 0)
				return 2;
		} else if ((v = opt_value(argc, argv, &i, "--threads"))) {
			char *end;
			long n = strtol(v, &end, 10);

			if (*end || n < 1 || n > 1024)
				return usage_error("--threads '%s': expected a number from 1 to 1024", v);
			a->threads = (int)n;
		} else if (arg[0] == '-' && arg[1])
			return usage_error("unknown option or missing value: %s", arg);
		else if (npos == 3)
			return usage_error("unexpected argument '%s'", arg);
		else
			pos[npos++] = arg;
	}
	if (npos == 3) {
		a->in = pos[0];
		a->out = pos[1];
		a->tier = pos[2];
	} else if (npos == 2 && a->dry_run) {
		a->in = pos[0];
		a->tier = pos[1];
	} else
		return usage_error("%s", "expected IN.gguf OUT.gguf TIER");
	if (!tier_by_name(a->tier)) {
		fprintf(stderr, "qbake: quantize: unknown tier '%s' (tiers: %s)\n", a->tier, tier_names());
		return 2;
	}
	return 0;
}

static double mib(uint64_t b)
{
	return (double)b / (1024.0 * 1024.0);
}

static void shape(const gguf_tensor *t, char *buf, size_t n)
{
	int k = snprintf(buf, n, "%llu", (unsigned long long)t->ne[0]);

	for (uint32_t d = 1; d < t->n_dims && k > 0 && (size_t)k < n; d++)
		k += snprintf(buf + k, n - (size_t)k, "x%llu", (unsigned long long)t->ne[d]);
}

static void print_item(const quantize_plan *p, size_t i)
{
	const quantize_item *it = &p->items[i];
	char sh[64];

	shape(it->in, sh, sizeof sh);
	printf("[%4zu/%4zu] %-36s %-14s %-6s", i + 1, p->n, it->in->name, sh, gguf_type(it->in->type)->name);
	if (it->type != it->in->type)
		printf(" -> %-6s %8.3f MiB -> %8.3f MiB%s\n", gguf_type(it->type)->name, mib(it->in_bytes),
		       mib(it->out_bytes), it->imatrix ? "  (imatrix)" : "");
	else
		printf("    (kept) %8.3f MiB\n", mib(it->in_bytes));
}

static void progress(void *ctx, const quantize_plan *p, size_t i)
{
	if (!*(int *)ctx) {
		print_item(p, i);
		fflush(stdout);
	}
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void warnings(const quantize_plan *p, const char *imatrix)
{
	for (size_t i = 0; i < p->n; i++) {
		if (p->items[i].imatrix_missing)
			fprintf(stderr, "qbake: warning: %s has no entry for %s; quantized without an importance matrix\n",
				imatrix, p->items[i].in->name);
		if (p->items[i].imatrix_ignored)
			fprintf(stderr, "qbake: warning: %s: the entry for %s has the wrong length; ignored, as llama.cpp does\n",
				imatrix, p->items[i].in->name);
	}
	if (p->fallbacks)
		fprintf(stderr, "qbake: warning: %zu tensor(s) have rows that do not fit the tier's block size and "
			"fell back to another type\n", p->fallbacks);
}

static void summary(const quantize_plan *p, const qargs *a, double secs)
{
	double n = (double)(p->n_elements ? p->n_elements : 1);

	printf("%s %s: %zu tensors, %.2f MiB -> %.2f MiB (%.2f -> %.2f bits per weight)",
	       a->dry_run ? "plan" : "quantized", tier_by_name(a->tier)->name, p->n, mib(p->in_bytes),
	       mib(p->out_bytes), (double)p->in_bytes * 8 / n, (double)p->out_bytes * 8 / n);
	if (!a->dry_run)
		printf(", %.2f s, %d thread(s) -> %s", secs, a->threads, a->out);
	printf("\n");
}

static int run(const qargs *a)
{
	gguf_file in = { 0 };
	imx_file im = { 0 };
	quantize_plan plan;
	quantize_params qp = { .tier = tier_by_name(a->tier), .opt = a->opt, .threads = a->threads };
	err e = { 0 };
	double t0 = now();
	int rc = 2, quiet = a->quiet;

	if (gguf_open(&in, a->in, &e) != 0)
		goto out;
	if (a->imatrix) {
		if (imx_load(&im, a->imatrix, &e) != 0)
			goto out;
		qp.imatrix = &im;
		qp.imatrix_path = a->imatrix;
	}
	rc = 1;
	if (quantize_plan_make(&plan, &in, &qp, &e) != 0)
		goto out;
	warnings(&plan, a->imatrix);
	if (a->dry_run) {
		for (size_t i = 0; i < plan.n && !a->quiet; i++)
			print_item(&plan, i);
		rc = 0;
	} else if (quantize_run(&plan, &in, a->out, a->threads, progress, &quiet, &e) == 0)
		rc = 0;
	if (rc == 0)
		summary(&plan, a, now() - t0);
	quantize_plan_free(&plan);
out:
	if (rc != 0)
		fprintf(stderr, "qbake: %s\n", e.msg);
	imx_free(&im);
	gguf_close(&in);
	return rc;
}

int quantize_cmd_main(int argc, char **argv)
{
	qargs a;
	int rc = parse_args(&a, argc, argv);

	if (rc == 0)
		rc = run(&a);
	tier_rules_free(a.rules, a.opt.n_rules);
	return rc;
}
