/* test_quantize_rules.c - requantizing refused, bad imatrix refused, NaN weights, nothing left behind, the CLI */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gguf.h"
#include "half.h"
#include "imatrix.h"
#include "quantize.h"
#include "tiers.h"

static char *f16_path, *imx_path;

static quantize_params params(const char *tier, const imx_file *im)
{
	quantize_params qp = { .tier = tier_by_name(tier), .opt = { .output_type = -1, .token_embd_type = -1 },
			       .imatrix = im, .imatrix_path = imx_path, .threads = 2 };
	return qp;
}

/* Files in dir other than . and .. (nothing may be left behind by a failed run). */
static int entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	while (d && (de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	if (d)
		closedir(d);
	return n;
}

static void check_requantize(void)
{
	char *q4 = check_shared_path("golden/pydoc-8m/quant/pydoc-8m-Q4_0.gguf");
	gguf_file f = { 0 };
	quantize_plan p;
	quantize_params qp = params("Q4_K_M", NULL);
	err e = { 0 };
	const gguf_tensor *first = NULL;

	CHECK(gguf_open(&f, q4, &e) == 0, "%s", e.msg);
	for (uint64_t i = 0; i < f.n_tensors && !first; i++)
		if (gguf_type(f.tensors[i].type)->quantized)
			first = &f.tensors[i];
	CHECK(first != NULL, "the golden Q4_0 has quantized tensors");
	CHECK(quantize_plan_make(&p, &f, &qp, &e) != 0, "requantizing must be refused");
	if (first)
		CHECK(strstr(e.msg, first->name) && strstr(e.msg, gguf_type(first->type)->name) &&
		      strstr(e.msg, "F16/BF16/F32 baseline") && strstr(e.msg, "pydoc-8m-Q4_0.gguf"),
		      "message names file, tensor, type and the way out: %s", e.msg);
	gguf_close(&f);
	free(q4);
}

static void check_bad_imatrix(const gguf_file *f16)
{
	imx_file im;
	quantize_plan p;
	quantize_params qp;
	err e = { 0 };
	imx_entry saved;
	float keep;

	CHECK(imx_load(&im, imx_path, &e) == 0, "%s", e.msg);
	if (e.set)
		return;
	qp = params("Q4_K_M", &im);

	/* NaN in an entry: error naming the entry and the file */
	keep = im.e[3].weights[17];
	im.e[3].weights[17] = NAN;
	CHECK(quantize_plan_make(&p, f16, &qp, &e) != 0 && strstr(e.msg, im.e[3].name) && strstr(e.msg, "NaN") &&
	      strstr(e.msg, "imatrix.gguf"), "NaN entry: %s", e.msg);
	err_clear(&e);
	im.e[3].weights[17] = INFINITY;
	CHECK(quantize_plan_make(&p, f16, &qp, &e) != 0 && strstr(e.msg, "Inf"), "Inf entry: %s", e.msg);
	err_clear(&e);
	im.e[3].weights[17] = keep;

	/* wrong length: error naming the entry, the tensor and the file */
	im.e[0].n = 128;
	CHECK(quantize_plan_make(&p, f16, &qp, &e) != 0 && strstr(e.msg, im.e[0].name) && strstr(e.msg, "128") &&
	      strstr(e.msg, "256") && strstr(e.msg, "imatrix.gguf"), "wrong length: %s", e.msg);
	err_clear(&e);
	im.e[0].n = 256;

	/* a missing entry: planned, flagged (the CLI warns), quantized without weights */
	saved = im.e[0];
	im.e[0] = im.e[im.n - 1];
	im.e[im.n - 1] = saved;
	im.n--;
	CHECK(quantize_plan_make(&p, f16, &qp, &e) == 0, "missing entry: %s", e.msg);
	for (size_t i = 0; i < p.n; i++) {
		bool is_missing = strcmp(p.items[i].in->name, saved.name) == 0;
		bool no_entry = is_missing || strcmp(p.items[i].in->name, "output.weight") == 0 ||
				strcmp(p.items[i].in->name, "token_embd.weight") == 0;

		if (p.items[i].type != p.items[i].in->type)
			CHECK(p.items[i].imatrix_missing == no_entry && (p.items[i].imatrix == NULL) == no_entry,
			      "%s: missing flag", p.items[i].in->name);
	}
	/* the entries count recorded is what was loaded */
	{
		uint64_t n = 0;

		CHECK(gguf_meta_get_u64(&p.meta, "quantize.imatrix.entries_count", &n) == 0 && n == im.n, "entries %llu",
		      (unsigned long long)n);
		CHECK(strcmp(gguf_meta_get_str(&p.meta, "quantize.imatrix.file"), "imatrix.gguf") == 0, "base name");
	}
	quantize_plan_free(&p);
	im.n++;
	imx_free(&im);
}

/* Copies the F16 file with one weight of blk.2.attn_q.weight (row 5, column 7) made NaN. */
static void make_nan_model(const gguf_file *f16, const char *path)
{
	size_t n;
	char *buf = check_slurp(f16_path, &n);
	const gguf_tensor *t = gguf_find_tensor(f16, "blk.2.attn_q.weight");
	uint16_t nan16 = 0x7e00;
	FILE *fp = fopen(path, "wb");

	CHECK(buf && t && fp, "nan model");
	if (buf && t && fp) {
		memcpy(buf + f16->data_offset + t->offset + (5 * t->ne[0] + 7) * 2, &nan16, 2);
		CHECK(fwrite(buf, 1, n, fp) == n, "write");
	}
	if (fp)
		fclose(fp);
	free(buf);
}

static void check_nan_and_leftovers(const gguf_file *f16)
{
	const char *tmp = check_tmpdir();
	char in[512], outdir[512], out[1024];
	gguf_file f = { 0 };
	quantize_plan p;
	quantize_params qp = params("Q4_0", NULL);
	err e = { 0 };

	snprintf(in, sizeof in, "%s/nan.gguf", tmp);
	snprintf(outdir, sizeof outdir, "%s/out", tmp);
	snprintf(out, sizeof out, "%s/q.gguf", outdir);
	make_nan_model(f16, in);
	check_system("mkdir -p '%s'", outdir);
	CHECK(gguf_open(&f, in, &e) == 0, "%s", e.msg);
	CHECK(quantize_plan_make(&p, &f, &qp, &e) == 0, "%s", e.msg);
	if (!e.set) {
		CHECK(quantize_run(&p, &f, out, 2, NULL, NULL, &e) != 0 && strstr(e.msg, "blk.2.attn_q.weight") &&
		      strstr(e.msg, "row 5") && strstr(e.msg, "NaN") && strstr(e.msg, "nan.gguf"), "NaN: %s", e.msg);
		/* tensors before it were already streamed out: still nothing may remain */
		CHECK(entries(outdir) == 0, "a failed run left %d file(s) in %s", entries(outdir), outdir);
		err_clear(&e);
		snprintf(out, sizeof out, "%s/no/such/dir/q.gguf", tmp);
		CHECK(quantize_run(&p, &f, out, 2, NULL, NULL, &e) != 0 && strstr(e.msg, "no/such/dir"),
		      "unwritable output: %s", e.msg);
		quantize_plan_free(&p);
	}
	gguf_close(&f);
}

/* F16 and BF16 tiers: 2-D weights converted (or copied), everything else kept. */
static void check_float_tiers(const gguf_file *f16)
{
	const char *tmp = check_tmpdir();
	char out[512];
	gguf_file o = { 0 };
	quantize_plan p;
	quantize_params qp = params("BF16", NULL);
	err e = { 0 };

	snprintf(out, sizeof out, "%s/bf16.gguf", tmp);
	CHECK(quantize_plan_make(&p, f16, &qp, &e) == 0 && quantize_run(&p, f16, out, 1, NULL, NULL, &e) == 0,
	      "%s", e.msg);
	quantize_plan_free(&p);
	CHECK(gguf_open(&o, out, &e) == 0, "%s", e.msg);
	for (uint64_t i = 0; i < o.n_tensors; i++) {
		const gguf_tensor *t = &o.tensors[i], *src = gguf_find_tensor(f16, t->name);
		uint64_t n = gguf_nelements(t);

		CHECK(src && t->type == (src->type == GGUF_TYPE_F16 ? GGUF_TYPE_BF16 : src->type), "%s type", t->name);
		if (src && t->type == GGUF_TYPE_BF16)
			for (uint64_t j = 0; j < n; j += 97)
				CHECK(((const uint16_t *)t->data)[j] ==
				      half_bf16_from_f32(half_to_f32(((const uint16_t *)src->data)[j])), "%s[%llu]", t->name,
				      (unsigned long long)j);
	}
	{
		uint64_t ft = 0;

		CHECK(gguf_meta_get_u64(&o.meta, "general.file_type", &ft) == 0 && ft == 32, "file_type %llu",
		      (unsigned long long)ft);
	}
	gguf_close(&o);
}

/* Runs the qbake binary; returns its exit status with stdout+stderr in *log. */
static int qbake(char **log, const char *args)
{
	const char *bin = getenv("QBAKE_BIN");
	char path[512];
	int rc;

	snprintf(path, sizeof path, "%s/cli.log", check_tmpdir());
	rc = check_system("%s quantize %s >'%s' 2>&1", bin, args, path);
	free(*log);
	*log = check_slurp(path, NULL);
	return rc;
}

static void check_cli(void)
{
	const char *tmp = check_tmpdir();
	char args[2048], out[512], *log = NULL;
	char *q4 = check_shared_path("golden/pydoc-8m/quant/pydoc-8m-Q4_0.gguf");

	if (!getenv("QBAKE_BIN")) {
		printf("SKIP (cli part): QBAKE_BIN not set\n");
		return;
	}
	snprintf(out, sizeof out, "%s/cli.gguf", tmp);
	snprintf(args, sizeof args, "--dry-run --imatrix '%s' '%s' '%s' q4_k_m", imx_path, f16_path, out);
	CHECK(qbake(&log, args) == 0 && log && strstr(log, "blk.0.attn_v.weight") && strstr(log, "Q6_K") &&
	      strstr(log, "plan Q4_K_M"), "dry run: %s", log);
	CHECK(log && strstr(log, "warning") && strstr(log, "output.weight"), "missing entry warned: %s", log);
	CHECK(fopen(out, "r") == NULL, "dry run wrote nothing");
	snprintf(args, sizeof args, "--threads 2 --tensor-type 'attn_v=q8_0' --output-tensor-type q8_0 '%s' '%s' Q4_0",
		 f16_path, out);
	CHECK(qbake(&log, args) == 0 && log && strstr(log, "quantized Q4_0") && strstr(log, "bits per weight"),
	      "quantize: %s", log);
	{
		gguf_file o = { 0 };
		err e = { 0 };

		CHECK(gguf_open(&o, out, &e) == 0, "%s", e.msg);
		CHECK(o.n_tensors == 75 && gguf_find_tensor(&o, "blk.3.attn_v.weight")->type == GGUF_TYPE_Q8_0 &&
		      gguf_find_tensor(&o, "output.weight")->type == GGUF_TYPE_Q8_0 &&
		      gguf_find_tensor(&o, "blk.3.attn_q.weight")->type == GGUF_TYPE_Q4_0, "options applied");
		gguf_close(&o);
	}
	snprintf(args, sizeof args, "'%s' '%s' Q4_K_X", f16_path, out);
	CHECK(qbake(&log, args) == 2 && log && strstr(log, "unknown tier 'Q4_K_X'") && strstr(log, "IQ4_XS"),
	      "unknown tier: %s", log);
	snprintf(args, sizeof args, "'%s/none.gguf' '%s' Q4_0", tmp, out);
	CHECK(qbake(&log, args) == 2 && log && strstr(log, "none.gguf"), "missing input: %s", log);
	snprintf(args, sizeof args, "'%s' '%s/requant.gguf' Q4_0", q4, tmp);
	CHECK(qbake(&log, args) == 1 && log && strstr(log, "requantizing is refused") &&
	      strncmp(log, "qbake: ", 7) == 0, "requantize: %s", log);
	snprintf(args, sizeof args, "--threads 0 '%s' '%s' Q4_0", f16_path, out);
	CHECK(qbake(&log, args) == 2, "bad threads: %s", log);
	snprintf(args, sizeof args, "--tensor-type 'x=Q8_K' '%s' '%s' Q4_0", f16_path, out);
	CHECK(qbake(&log, args) == 2 && log && strstr(log, "not a type qbake can write"), "unwritable type: %s", log);
	CHECK(qbake(&log, "--help") == 0 && log && strstr(log, "usage: qbake quantize"), "help");
	free(log);
	free(q4);
}

int main(void)
{
	gguf_file f16 = { 0 };
	err e = { 0 };

	f16_path = check_shared_path("golden/pydoc-8m/pydoc-8m-F16.gguf");
	imx_path = check_shared_path("golden/pydoc-8m/imatrix.gguf");
	CHECK(gguf_open(&f16, f16_path, &e) == 0, "%s", e.msg);
	if (!e.set) {
		check_requantize();
		check_bad_imatrix(&f16);
		check_nan_and_leftovers(&f16);
		check_float_tiers(&f16);
		check_cli();
	}
	gguf_close(&f16);
	free(f16_path);
	free(imx_path);
	return check_done();
}
