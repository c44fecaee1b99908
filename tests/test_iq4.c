/* test_iq4.c - IQ4_NL / IQ4_XS: grid-exact blocks, round-trip error, edge blocks, thread invariance */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gguf.h"
#include "half.h"
#include "quant.h"

static const int8_t grid[16] = { -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113 };

/* Bytes of a row (block sizes from the GGUF spec; kept here so the test does not lean on gguf.c). */
static size_t row_bytes(uint32_t type, int64_t n)
{
	return type == GGUF_TYPE_IQ4_NL ? (size_t)n / 32 * 18 : (size_t)n / 256 * 136;
}

static const char *tname(uint32_t type)
{
	return type == GGUF_TYPE_IQ4_NL ? "IQ4_NL" : "IQ4_XS";
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float frand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (float)((rng >> 40) & 0xffffff) / 16777216.0f;
}

static float gauss(void)
{
	float s = 0;

	for (int i = 0; i < 4; i++)
		s += frand();
	return (s - 2.0f) * 1.7320508f;
}

/* A block whose values are exactly grid points times a power of two (exact in fp16)
 * must come back exactly, with the nibbles being the grid indices. */
static void check_on_grid(void)
{
	float x[32], y[32];
	uint8_t q[18];
	uint16_t d;

	for (int j = 0; j < 32; j++)
		x[j] = grid[(j * 7) % 16] * 0.0078125f;
	x[3] = grid[0] * 0.0078125f; /* the largest magnitude fixes the scale */
	CHECK(quant_rows(GGUF_TYPE_IQ4_NL, x, q, 1, 32, NULL) == 18, "iq4_nl bytes");
	quant_dequant_row(GGUF_TYPE_IQ4_NL, q, y, 32);
	memcpy(&d, q, 2);
	CHECK(half_to_f32(d) == 0.0078125f, "scale %g", (double)half_to_f32(d));
	for (int j = 0; j < 32; j++)
		CHECK(y[j] == x[j], "on-grid element %d: %g != %g", j, (double)y[j], (double)x[j]);
	for (int j = 0; j < 16; j++) {
		CHECK(grid[q[2 + j] & 15] * 0.0078125f == x[j], "low nibble %d", j);
		CHECK(grid[q[2 + j] >> 4] * 0.0078125f == x[16 + j], "high nibble %d", j);
	}
}

static double rel_rmse(const float *x, const float *y, size_t n)
{
	double e = 0, s = 0;

	for (size_t i = 0; i < n; i++) {
		e += (double)(x[i] - y[i]) * (x[i] - y[i]);
		s += (double)x[i] * x[i];
	}
	return s > 0 ? sqrt(e / s) : sqrt(e);
}

/* Round trip on Gaussian data: 4-bit non-linear grids land near 10 % relative RMS error;
 * an importance matrix lowers the weighted error on the columns it favours. */
static void check_round_trip(uint32_t type, int64_t n_per_row)
{
	int64_t nrows = 8, n = nrows * n_per_row;
	float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
	float *imx = malloc((size_t)n_per_row * sizeof *imx);
	uint8_t *q = malloc((size_t)row_bytes(type, n_per_row) * (size_t)nrows);
	double e_plain, e_imx, werr_plain = 0, werr_imx = 0;

	for (int64_t i = 0; i < n; i++)
		x[i] = gauss() * 0.02f;
	for (int64_t i = 0; i < n_per_row; i++)
		imx[i] = i % 4 == 0 ? 100.0f : 0.01f;
	CHECK(quant_rows(type, x, q, nrows, n_per_row, NULL) == row_bytes(type, n_per_row) * nrows,
	      "bytes");
	quant_dequant_row(type, q, y, n);
	e_plain = rel_rmse(x, y, (size_t)n);
	CHECK(e_plain < 0.12, "%s n=%lld: relative RMS error %.4f", tname(type), (long long)n_per_row, e_plain);
	for (int64_t i = 0; i < n; i++)
		werr_plain += imx[i % n_per_row] * (double)(x[i] - y[i]) * (x[i] - y[i]);
	quant_rows(type, x, q, nrows, n_per_row, imx);
	quant_dequant_row(type, q, y, n);
	e_imx = rel_rmse(x, y, (size_t)n);
	for (int64_t i = 0; i < n; i++)
		werr_imx += imx[i % n_per_row] * (double)(x[i] - y[i]) * (x[i] - y[i]);
	CHECK(e_imx < 0.25, "%s with imatrix: relative RMS error %.4f", tname(type), e_imx);
	CHECK(werr_imx < werr_plain, "%s: imatrix-weighted error %.3g not below %.3g", tname(type),
	      werr_imx, werr_plain);
	free(x);
	free(y);
	free(imx);
	free(q);
}

/* All-zero, one huge outlier, denormals: no NaN/Inf, zeros stay zero, the outlier survives. */
static void check_edges(uint32_t type)
{
	enum { N = 256 };
	float x[N], y[N];
	uint8_t q[N];

	memset(x, 0, sizeof x);
	quant_rows(type, x, q, 1, N, NULL);
	quant_dequant_row(type, q, y, N);
	for (int i = 0; i < N; i++)
		CHECK(y[i] == 0, "%s zero block -> %g at %d", tname(type), (double)y[i], i);

	for (int i = 0; i < N; i++)
		x[i] = gauss() * 0.01f;
	x[77] = 1000.0f;
	quant_rows(type, x, q, 1, N, NULL);
	quant_dequant_row(type, q, y, N);
	CHECK(fabsf(y[77] - 1000.0f) < 20.0f, "%s outlier -> %g", tname(type), (double)y[77]);
	for (int i = 0; i < N; i++)
		CHECK(isfinite(y[i]), "%s outlier block: non-finite at %d", tname(type), i);

	for (int i = 0; i < N; i++)
		x[i] = (i % 3 - 1) * 1e-40f;
	quant_rows(type, x, q, 1, N, NULL);
	quant_dequant_row(type, q, y, N);
	for (int i = 0; i < N; i++)
		CHECK(isfinite(y[i]) && fabsf(y[i]) < 1e-30f, "%s denormals -> %g at %d", tname(type),
		      (double)y[i], i);
}

/* Rows are independent: 1, 2 and 7 threads give the same bytes. */
static void check_threads(uint32_t type)
{
	int64_t nrows = 37, n_per_row = 512, n = nrows * n_per_row;
	size_t bytes = row_bytes(type, n_per_row) * (size_t)nrows;
	float *x = malloc((size_t)n * sizeof *x), *imx = malloc((size_t)n_per_row * sizeof *imx);
	uint8_t *a = malloc(bytes), *b = malloc(bytes);

	for (int64_t i = 0; i < n; i++)
		x[i] = gauss();
	for (int64_t i = 0; i < n_per_row; i++)
		imx[i] = frand() + 0.1f;
	quant_rows_mt(type, x, a, nrows, n_per_row, imx, 1);
	for (int t = 2; t <= 7; t += 5) {
		memset(b, 0xaa, bytes);
		CHECK(quant_rows_mt(type, x, b, nrows, n_per_row, imx, t) == bytes, "mt bytes");
		CHECK(memcmp(a, b, bytes) == 0, "%s: %d threads differ from 1", tname(type), t);
	}
	free(x);
	free(imx);
	free(a);
	free(b);
}

int main(void)
{
	CHECK(quant_can_quantize(GGUF_TYPE_IQ4_NL) && quant_can_dequantize(GGUF_TYPE_IQ4_XS), "wired in");
	CHECK(quant_uses_imatrix(GGUF_TYPE_IQ4_NL) && quant_uses_imatrix(GGUF_TYPE_IQ4_XS), "imatrix used");
	check_on_grid();
	check_round_trip(GGUF_TYPE_IQ4_NL, 32);
	check_round_trip(GGUF_TYPE_IQ4_NL, 256 * 3);
	check_round_trip(GGUF_TYPE_IQ4_XS, 256);
	check_round_trip(GGUF_TYPE_IQ4_XS, 256 * 3);
	check_edges(GGUF_TYPE_IQ4_NL);
	check_edges(GGUF_TYPE_IQ4_XS);
	check_threads(GGUF_TYPE_IQ4_NL);
	check_threads(GGUF_TYPE_IQ4_XS);
	return check_done();
}
