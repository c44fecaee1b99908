/* quant.c - quantization dispatch: type table, row threading, F32/F16/BF16 conversions */
#include "quant.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "half.h"
#include "quant/quant_impl.h"

typedef void (*quant_rows_fn)(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
			      const float *imatrix);
typedef void (*quant_dequant_fn)(const void *src, float *dst, int64_t n);

/* One quantizable type: what quant_rows and quant_dequant_row dispatch on. */
typedef struct quant_type {
	uint32_t type;          /* ggml type id */
	uint32_t blck;          /* elements per block */
	uint32_t size;          /* bytes per block */
	bool uses_imatrix;      /* the quantizer reads imatrix when given one */
	quant_rows_fn rows;
	quant_dequant_fn dequant;
} quant_type;

static void f32_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix)
{
	(void)imatrix;
	memcpy(dst, src, (size_t)(nrows * n_per_row) * sizeof(float));
}

static void f32_dequant(const void *src, float *dst, int64_t n)
{
	memcpy(dst, src, (size_t)n * sizeof(float));
}

static void f16_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix)
{
	(void)imatrix;
	half_row_from_f32(src, dst, (size_t)(nrows * n_per_row));
}

static void f16_dequant(const void *src, float *dst, int64_t n)
{
	half_row_to_f32(src, dst, (size_t)n);
}

static void bf16_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix)
{
	(void)imatrix;
	half_row_bf16_from_f32(src, dst, (size_t)(nrows * n_per_row));
}

static void bf16_dequant(const void *src, float *dst, int64_t n)
{
	half_row_bf16_to_f32(src, dst, (size_t)n);
}

/* The types qbake writes. IQ4_NL / IQ4_XS are wired in by iq4.c's author (see quant_impl.h). */
static const quant_type quant_types[] = {
	{ GGUF_TYPE_F32, 1, 4, false, f32_rows, f32_dequant },
	{ GGUF_TYPE_F16, 1, 2, false, f16_rows, f16_dequant },
	{ GGUF_TYPE_BF16, 1, 2, false, bf16_rows, bf16_dequant },
	{ GGUF_TYPE_Q4_0, 32, 18, true, quant_q4_0_rows, quant_q4_0_dequant },
	{ GGUF_TYPE_Q4_1, 32, 20, true, quant_q4_1_rows, quant_q4_1_dequant },
	{ GGUF_TYPE_Q5_0, 32, 22, true, quant_q5_0_rows, quant_q5_0_dequant },
	{ GGUF_TYPE_Q5_1, 32, 24, true, quant_q5_1_rows, quant_q5_1_dequant },
	{ GGUF_TYPE_Q8_0, 32, 34, false, quant_q8_0_rows, quant_q8_0_dequant },
	{ GGUF_TYPE_Q2_K, 256, 84, true, quant_q2_k_rows, quant_q2_k_dequant },
	{ GGUF_TYPE_Q3_K, 256, 110, true, quant_q3_k_rows, quant_q3_k_dequant },
	{ GGUF_TYPE_Q4_K, 256, 144, true, quant_q4_k_rows, quant_q4_k_dequant },
	{ GGUF_TYPE_Q5_K, 256, 176, true, quant_q5_k_rows, quant_q5_k_dequant },
	{ GGUF_TYPE_Q6_K, 256, 210, true, quant_q6_k_rows, quant_q6_k_dequant },
	{ GGUF_TYPE_IQ4_NL, 32, 18, true, quant_iq4_nl_rows, quant_iq4_nl_dequant },
	{ GGUF_TYPE_IQ4_XS, 256, 136, true, quant_iq4_xs_rows, quant_iq4_xs_dequant },
};

static const quant_type *find(uint32_t type)
{
	for (size_t i = 0; i < sizeof quant_types / sizeof quant_types[0]; i++)
		if (quant_types[i].type == type)
			return &quant_types[i];
	return NULL;
}

bool quant_can_quantize(uint32_t type)
{
	return find(type) != NULL;
}

bool quant_can_dequantize(uint32_t type)
{
	return find(type) != NULL;
}

bool quant_uses_imatrix(uint32_t type)
{
	const quant_type *t = find(type);

	return t && t->uses_imatrix;
}

static size_t row_bytes(const quant_type *t, int64_t n_per_row)
{
	return (size_t)(n_per_row / t->blck) * t->size;
}

size_t quant_rows(uint32_t type, const float *src, void *dst, int64_t nrows,
		  int64_t n_per_row, const float *imatrix)
{
	const quant_type *t = find(type);

	if (!t || nrows <= 0 || n_per_row <= 0 || n_per_row % t->blck)
		return 0;
	t->rows(src, dst, nrows, n_per_row, imatrix);
	return (size_t)nrows * row_bytes(t, n_per_row);
}

/* One thread's share of quant_rows_mt: a contiguous range of rows. */
typedef struct quant_job {
	const quant_type *t;
	const float *src;
	uint8_t *dst;
	int64_t nrows, n_per_row;
	const float *imatrix;
} quant_job;

static void *run_job(void *arg)
{
	quant_job *j = arg;

	if (j->nrows > 0)
		j->t->rows(j->src, j->dst, j->nrows, j->n_per_row, j->imatrix);
	return NULL;
}

size_t quant_rows_mt(uint32_t type, const float *src, void *dst, int64_t nrows,
		     int64_t n_per_row, const float *imatrix, int nthreads)
{
	const quant_type *t = find(type);
	quant_job *jobs;
	pthread_t *tids;
	int64_t row = 0;
	int started = 0;

	if (!t || nrows <= 0 || n_per_row <= 0 || n_per_row % t->blck)
		return 0;
	if (nthreads > nrows)
		nthreads = (int)nrows;
	if (nthreads <= 1)
		return quant_rows(type, src, dst, nrows, n_per_row, imatrix);
	jobs = calloc((size_t)nthreads, sizeof *jobs);
	tids = calloc((size_t)nthreads, sizeof *tids);
	if (!jobs || !tids) { /* no memory for threads: do it on this one */
		free(jobs);
		free(tids);
		return quant_rows(type, src, dst, nrows, n_per_row, imatrix);
	}
	/* Rows are independent, so any split gives the same bytes. */
	for (int i = 0; i < nthreads; i++) {
		int64_t n = nrows / nthreads + (i < nrows % nthreads);

		jobs[i] = (quant_job){ t, src + row * n_per_row, (uint8_t *)dst + row * (int64_t)row_bytes(t, n_per_row),
				       n, n_per_row, imatrix };
		row += n;
	}
	for (int i = 1; i < nthreads; i++) {
		if (pthread_create(&tids[i], NULL, run_job, &jobs[i]) != 0)
			break;
		started = i;
	}
	run_job(&jobs[0]);
	for (int i = 1; i <= started; i++)
		pthread_join(tids[i], NULL);
	for (int i = started + 1; i < nthreads; i++) /* threads that could not start */
		run_job(&jobs[i]);
	free(jobs);
	free(tids);
	return (size_t)nrows * row_bytes(t, n_per_row);
}

void quant_dequant_row(uint32_t type, const void *src, float *dst, int64_t n)
{
	const quant_type *t = find(type);

	if (t && n > 0 && n % t->blck == 0)
		t->dequant(src, dst, n);
}
