/* test_quant_golden.c - every quantized tensor of every golden llama-quantize tier, byte for byte */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gguf.h"
#include "half.h"
#include "quant.h"
#include "sha256.h"

/*
 * For each (file, tensor) row of golden/pydoc-8m/tensors.tsv under quant/, take the type
 * llama-quantize chose (the tsv's column, not qbake's own tier logic), quantize the same
 * tensor of the F16 baseline (the BF16 one for the -from-bf16 file) with qbake, with the
 * importance matrix for -imat files, and compare the SHA-256 of the bytes. Results are
 * cached per (source, tensor, type, imatrix) since tiers share most choices.
 */

/* One distinct quantization job and its outcome. */
typedef struct job {
	int src;        /* 0 = F16 baseline, 1 = BF16 baseline */
	char tensor[96];
	uint32_t type;
	int imat;       /* the -imat files use imatrix.gguf */
	int applied;    /* imatrix.gguf had an entry for the tensor (set by run_job) */
	char hex[65];   /* our digest, or "" when we cannot quantize that type */
} job;

static job *jobs;
static size_t njobs, capjobs;

/* Per type and [no imatrix, imatrix applied]: tensors compared and matched. Tensors of
 * -imat files that the imatrix has no entry for (token_embd, output) count as "no imatrix",
 * which is how llama-quantize treats them. */
static int tally_n[GGUF_TYPE_COUNT][2], tally_ok[GGUF_TYPE_COUNT][2];

/* The tensor as f32 (caller frees), from an F16, BF16 or F32 GGUF tensor. */
static float *load_f32(const gguf_tensor *t)
{
	uint64_t n = gguf_nelements(t);
	float *x = malloc(n * sizeof *x);

	if (!x)
		return NULL;
	if (t->type == GGUF_TYPE_F32)
		memcpy(x, t->data, n * sizeof *x);
	else if (t->type == GGUF_TYPE_F16)
		half_row_to_f32(t->data, x, n);
	else if (t->type == GGUF_TYPE_BF16)
		half_row_bf16_to_f32(t->data, x, n);
	else {
		free(x);
		return NULL;
	}
	return x;
}

/* llama-quantize's per-column weights: in_sum2 / counts (count 0 gives 1), or NULL when
 * the imatrix has no entry for the tensor (it is then quantized without one). */
static float *load_imatrix(const gguf_file *im, const char *tensor, uint64_t ncols)
{
	char name[160];
	const gguf_tensor *sums, *counts;

	snprintf(name, sizeof name, "%s.in_sum2", tensor);
	sums = gguf_find_tensor(im, name);
	snprintf(name, sizeof name, "%s.counts", tensor);
	counts = gguf_find_tensor(im, name);
	if (!sums || !counts)
		return NULL;
	CHECK(sums->type == GGUF_TYPE_F32 && gguf_nelements(sums) == ncols &&
	      counts->type == GGUF_TYPE_F32 && gguf_nelements(counts) == 1,
	      "imatrix entry %s has an unexpected shape", tensor);
	if (gguf_nelements(sums) != ncols || gguf_nelements(counts) != 1)
		return NULL;

	float *w = malloc(ncols * sizeof *w), count;
	const float *s = sums->data;

	memcpy(&count, counts->data, sizeof count);
	for (uint64_t i = 0; i < ncols; i++)
		w[i] = count > 0.0f ? s[i] / count : 1;
	return w;
}

static job *find_job(int src, const char *tensor, uint32_t type, int imat)
{
	for (size_t i = 0; i < njobs; i++)
		if (jobs[i].src == src && jobs[i].type == type && jobs[i].imat == imat &&
		    strcmp(jobs[i].tensor, tensor) == 0)
			return &jobs[i];
	return NULL;
}

static void run_job(job *j, const gguf_file *srcf, const gguf_file *im)
{
	const gguf_tensor *t = gguf_find_tensor(srcf, j->tensor);
	uint64_t ncols, nrows;
	float *x, *w = NULL;
	uint8_t *q, d[32];
	size_t bytes;

	j->hex[0] = 0;
	if (!quant_can_quantize(j->type))
		return;
	CHECK(t != NULL, "%s: not in the baseline", j->tensor);
	if (!t)
		return;
	ncols = t->ne[0];
	nrows = gguf_nelements(t) / ncols;
	x = load_f32(t);
	CHECK(x != NULL, "%s: baseline type %u", j->tensor, t->type);
	if (!x)
		return;
	if (j->imat)
		w = load_imatrix(im, j->tensor, ncols);
	j->applied = w != NULL;
	bytes = gguf_row_size(j->type, ncols) * nrows;
	q = malloc(bytes ? bytes : 1);
	CHECK(quant_rows_mt(j->type, x, q, (int64_t)nrows, (int64_t)ncols, w, 2) == bytes,
	      "%s: byte count", j->tensor);
	sha256_buf(q, bytes, d);
	sha256_hex(d, j->hex);
	free(q);
	free(w);
	free(x);
}

int main(void)
{
	char *dir = check_shared_path("golden/pydoc-8m"), path[512], *tsv, *line, *save;
	gguf_file base[2], im;
	err e = { 0 };
	size_t len;
	int rows = 0, skipped = 0;

	snprintf(path, sizeof path, "%s/tensors.tsv", dir);
	tsv = check_slurp(path, &len);
	CHECK(tsv != NULL, "cannot read %s", path);
	const char *names[3] = { "pydoc-8m-F16.gguf", "pydoc-8m-BF16.gguf", "imatrix.gguf" };
	gguf_file *files[3] = { &base[0], &base[1], &im };
	for (int i = 0; i < 3; i++) {
		memset(files[i], 0, sizeof *files[i]);
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		if (gguf_open(files[i], path, &e) != 0) {
			CHECK(0, "%s", e.msg);
			return check_done();
		}
	}
	if (!tsv)
		return check_done();

	for (line = strtok_r(tsv, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char file[160], tensor[96], tname[32], shape[64], hex[65];
		int type, src, imat;
		job *j;

		if (sscanf(line, "%159s %95s %31s %63s %64s", file, tensor, tname, shape, hex) != 5 ||
		    strncmp(file, "quant/", 6) != 0)
			continue;
		type = gguf_type_by_name(tname);
		CHECK(type >= 0, "%s: unknown type %s", file, tname);
		if (type < 0)
			continue;
		src = strstr(file, "from-bf16") != NULL;
		imat = strstr(file, "-imat") != NULL;
		j = find_job(src, tensor, (uint32_t)type, imat);
		if (!j) {
			if (njobs == capjobs) {
				capjobs = capjobs ? 2 * capjobs : 256;
				jobs = realloc(jobs, capjobs * sizeof *jobs);
			}
			j = &jobs[njobs++];
			memset(j, 0, sizeof *j);
			j->src = src;
			snprintf(j->tensor, sizeof j->tensor, "%s", tensor);
			j->type = (uint32_t)type;
			j->imat = imat;
			run_job(j, &base[src], &im);
		}
		rows++;
		if (!j->hex[0]) {
			skipped++;
			continue;
		}
		tally_n[type][j->applied]++;
		if (strcmp(j->hex, hex) == 0)
			tally_ok[type][j->applied]++;
		else
			CHECK(0, "%s %s (%s%s): sha256 %s, llama.cpp %s", file, tensor, tname,
			      imat ? ", imatrix" : "", j->hex, hex);
	}
	printf("%d golden tensors, %zu distinct quantizations, %d of types qbake cannot write\n",
	       rows, njobs, skipped);
	printf("matched/compared  type  no-imatrix  imatrix-applied\n");
	for (int t = 0; t < GGUF_TYPE_COUNT; t++)
		if (tally_n[t][0] || tally_n[t][1])
			printf("                 %-7s %5d/%-5d %5d/%-5d\n", gguf_type(t)->name, tally_ok[t][0], tally_n[t][0],
			       tally_ok[t][1], tally_n[t][1]);
	CHECK(tally_n[GGUF_TYPE_Q4_K][1] > 0 && tally_n[GGUF_TYPE_Q6_K][1] > 0, "the imatrix was never applied");
	CHECK(rows == 33 * 75, "expected 33 quantized files of 75 tensors, read %d rows", rows);
	CHECK(skipped == 0, "%d tensors of types qbake cannot quantize", skipped);
	for (int i = 0; i < 3; i++)
		gguf_close(files[i]);
	free(jobs);
	free(tsv);
	free(dir);
	return check_done();
}
