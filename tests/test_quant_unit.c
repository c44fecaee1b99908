/* test_quant_unit.c - quantize/dequantize round trips, edge-case blocks and thread invariance per type */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gguf.h"
#include "half.h"
#include "quant.h"

/* Deterministic pseudo-random floats (xorshift), roughly N(0, 1) by summing uniforms. */
static uint64_t rng = 88172645463325252ull;

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

/* The conversions: exact against half.h, element by element. */
static void check_plain(void)
{
	enum { N = 512 };
	float x[N], y[N];
	uint16_t h[N];

	for (int i = 0; i < N; i++)
		x[i] = gauss() * 100.0f;
	CHECK(quant_can_quantize(GGUF_TYPE_F32) && quant_can_quantize(GGUF_TYPE_F16) &&
	      quant_can_quantize(GGUF_TYPE_BF16), "plain types");
	CHECK(quant_rows(GGUF_TYPE_F32, x, y, 2, N / 2, NULL) == N * 4, "f32 bytes");
	CHECK(memcmp(x, y, sizeof x) == 0, "f32 copy");
	CHECK(quant_rows(GGUF_TYPE_F16, x, h, 4, N / 4, NULL) == N * 2, "f16 bytes");
	quant_dequant_row(GGUF_TYPE_F16, h, y, N);
	for (int i = 0; i < N; i++)
		CHECK(h[i] == half_from_f32(x[i]) && y[i] == half_to_f32(h[i]), "f16 %d", i);
	CHECK(quant_rows(GGUF_TYPE_BF16, x, h, 1, N, NULL) == N * 2, "bf16 bytes");
	quant_dequant_row(GGUF_TYPE_BF16, h, y, N);
	for (int i = 0; i < N; i++)
		CHECK(h[i] == half_bf16_from_f32(x[i]) && y[i] == half_bf16_to_f32(h[i]), "bf16 %d", i);
	CHECK(!quant_can_quantize(GGUF_TYPE_Q8_1) && !quant_can_quantize(GGUF_TYPE_COUNT), "unknown types refused");
	CHECK(quant_rows(GGUF_TYPE_Q8_1, x, y, 1, 32, NULL) == 0, "unknown type writes nothing");
}

/* The block types this file covers (IQ4 has its own test), with the block geometry from
 * the GGUF spec, kept here so the test does not lean on gguf.c, and the relative RMS error
 * a round trip of Gaussian data must stay under (measured values are about 2/3 of these). */
typedef struct qtype {
	uint32_t type;
	const char *name;
	int blck, size;
	double max_err;
} qtype;

static const qtype types[] = {
	{ GGUF_TYPE_Q4_0, "Q4_0", 32, 18, 0.12 },  { GGUF_TYPE_Q4_1, "Q4_1", 32, 20, 0.11 },
	{ GGUF_TYPE_Q5_0, "Q5_0", 32, 22, 0.06 },  { GGUF_TYPE_Q5_1, "Q5_1", 32, 24, 0.055 },
	{ GGUF_TYPE_Q8_0, "Q8_0", 32, 34, 0.006 }, { GGUF_TYPE_Q2_K, "Q2_K", 256, 84, 0.40 },
	{ GGUF_TYPE_Q3_K, "Q3_K", 256, 110, 0.20 }, { GGUF_TYPE_Q4_K, "Q4_K", 256, 144, 0.10 },
	{ GGUF_TYPE_Q5_K, "Q5_K", 256, 176, 0.05 }, { GGUF_TYPE_Q6_K, "Q6_K", 256, 210, 0.025 },
};
enum { NTYPES = sizeof types / sizeof types[0] };

static size_t row_bytes(const qtype *t, int64_t n)
{
	return (size_t)(n / t->blck) * (size_t)t->size;
}

static double rel_rmse(const float *x, const float *y, size_t n)
{
	double e = 0, s = 0;

	for (size_t i = 0; i < n; i++) {
		e += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
		s += (double)x[i] * x[i];
	}
	return s > 0 ? sqrt(e / s) : sqrt(e);
}

/* Quantizes nrows x n (weights w or NULL) and dequantizes back into y; returns the bytes. */
static uint8_t *round_trip(const qtype *t, const float *x, float *y, int64_t nrows, int64_t n, const float *w)
{
	size_t bytes = row_bytes(t, n) * (size_t)nrows;
	uint8_t *q = malloc(bytes);

	CHECK(quant_rows(t->type, x, q, nrows, n, w) == bytes, "%s: byte count", t->name);
	quant_dequant_row(t->type, q, y, nrows * n);
	return q;
}

/* Gaussian rows of length 32 (legacy types) and 256 * k: error within the type's bound,
 * with and without an imatrix; an imatrix favouring some columns lowers their error. */
static void check_random(const qtype *t)
{
	const int64_t lens[] = { 32, 256, 256 * 3, 256 * 11 };

	for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
		int64_t n = lens[li], nrows = 16;
		float *x, *y, *w;
		double e, werr0 = 0, werr1 = 0;

		if (n % t->blck)
			continue;
		x = malloc((size_t)(n * nrows) * sizeof *x);
		y = malloc((size_t)(n * nrows) * sizeof *y);
		w = malloc((size_t)n * sizeof *w);
		for (int64_t i = 0; i < n * nrows; i++)
			x[i] = gauss() * 0.02f;
		for (int64_t i = 0; i < n; i++)
			w[i] = i % 4 == 0 ? 50.0f : 0.05f;
		free(round_trip(t, x, y, nrows, n, NULL));
		e = rel_rmse(x, y, (size_t)(n * nrows));
		CHECK(e < t->max_err, "%s n=%lld: relative RMS error %.4f >= %.4f", t->name, (long long)n, e, t->max_err);
		for (int64_t i = 0; i < n * nrows; i++)
			werr0 += w[i % n] * ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
		free(round_trip(t, x, y, nrows, n, w));
		e = rel_rmse(x, y, (size_t)(n * nrows));
		CHECK(e < 2 * t->max_err, "%s n=%lld imatrix: relative RMS error %.4f", t->name, (long long)n, e);
		for (int64_t i = 0; i < n * nrows; i++)
			werr1 += w[i % n] * ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
		if (quant_uses_imatrix(t->type))
			CHECK(werr1 < werr0, "%s n=%lld: imatrix-weighted error %.3g not below %.3g", t->name,
			      (long long)n, werr1, werr0);
		free(x);
		free(y);
		free(w);
	}
}

/* All-zero rows give all-zero output; a lone outlier is kept; denormals give no Inf/NaN. */
static void check_edges(const qtype *t)
{
	enum { N = 512 };
	float x[N], y[N], w[N];
	uint8_t *q;

	for (int i = 0; i < N; i++)
		w[i] = 1.0f + (float)(i % 7);
	for (int wi = 0; wi < 2; wi++) {
		const float *ww = wi ? w : NULL;

		memset(x, 0, sizeof x);
		q = round_trip(t, x, y, 2, N / 2, ww);
		for (int i = 0; i < N; i++)
			CHECK(y[i] == 0, "%s zero row -> %g at %d", t->name, (double)y[i], i);
		free(q);

		for (int i = 0; i < N; i++)
			x[i] = gauss() * 0.01f;
		x[77] = 1000.0f;
		x[300] = -500.0f;
		q = round_trip(t, x, y, 1, N, ww);
		CHECK(fabsf(y[77] - 1000.0f) < 1000.0f * 0.01f, "%s outlier 1000 -> %g", t->name, (double)y[77]);
		CHECK(fabsf(y[300] + 500.0f) < 500.0f * 0.01f, "%s outlier -500 -> %g", t->name, (double)y[300]);
		for (int i = 0; i < N; i++)
			CHECK(isfinite(y[i]), "%s outlier row: non-finite at %d", t->name, i);
		free(q);

		for (int i = 0; i < N; i++)
			x[i] = (float)(i % 3 - 1) * 1e-40f * (float)(1 + i % 5);
		q = round_trip(t, x, y, 1, N, ww);
		for (int i = 0; i < N; i++)
			CHECK(isfinite(y[i]) && fabsf(y[i]) < 1e-30f, "%s denormals -> %g at %d", t->name, (double)y[i], i);
		free(q);
	}
}

/* Rows are independent: 1, 2 and 7 threads give the same bytes, with and without weights. */
static void check_threads(const qtype *t)
{
	int64_t nrows = 37, n = 512;
	size_t bytes = row_bytes(t, n) * (size_t)nrows;
	float *x = malloc((size_t)(n * nrows) * sizeof *x), w[512];
	uint8_t *a = malloc(bytes), *b = malloc(bytes);

	for (int64_t i = 0; i < n * nrows; i++)
		x[i] = gauss();
	for (int i = 0; i < n; i++)
		w[i] = frand() + 0.1f;
	for (int wi = 0; wi < 2; wi++) {
		CHECK(quant_rows_mt(t->type, x, a, nrows, n, wi ? w : NULL, 1) == bytes, "%s mt bytes", t->name);
		for (int th = 2; th <= 7; th += 5) {
			memset(b, 0xaa, bytes);
			CHECK(quant_rows_mt(t->type, x, b, nrows, n, wi ? w : NULL, th) == bytes, "%s mt bytes", t->name);
			CHECK(memcmp(a, b, bytes) == 0, "%s: %d threads differ from 1", t->name, th);
		}
	}
	free(x);
	free(a);
	free(b);
}

/* The imatrix searches run eight blocks per vector; a block's bytes must not depend on
 * which lane it lands in or on the lanes beside it. Row B holds row A's blocks rotated by
 * two (so A's blocks 8 and 9, alone in a partly filled group, lead a full group in B).
 * The values are multiples of 1/16 so the row's sum of squares (the sigma2 both rows
 * share) is exact in any order. */
static void check_lanes(const qtype *t)
{
	enum { NB = 10, N = NB * 32 };
	float a[N], b[N], wa[N], wb[N];
	uint8_t qa[NB * 34], qb[NB * 34];
	const int bs = t->size;

	if (t->blck != 32)
		return;
	for (int i = 0; i < N; i++) {
		a[i] = (float)((int)(frand() * 129) - 64) / 16;
		wa[i] = frand() + 0.01f;
	}
	for (int i = 0; i < N; i++) {
		b[i] = a[(i + 8 * 32) % N];
		wb[i] = wa[(i + 8 * 32) % N];
	}
	quant_rows(t->type, a, qa, 1, N, wa);
	quant_rows(t->type, b, qb, 1, N, wb);
	for (int k = 0; k < NB; k++)
		CHECK(memcmp(qa + k * bs, qb + ((k + 2) % NB) * bs, (size_t)bs) == 0,
		      "%s: block %d changes with its lane", t->name, k);
}

/* Blocks worked out by hand from the layouts. */
static void check_hand(void)
{
	float x[32], y[32];
	uint8_t q[34];

	/* Q8_0: absmax 127 gives d = 1 (fp16 0x3c00) and the values themselves. */
	for (int j = 0; j < 32; j++)
		x[j] = (float)(j * 8 - 127 + (j == 0 ? 0 : 0));
	x[31] = 127;
	quant_rows(GGUF_TYPE_Q8_0, x, q, 1, 32, NULL);
	CHECK(q[0] == 0x00 && q[1] == 0x3c, "Q8_0 d = %02x%02x", q[1], q[0]);
	for (int j = 0; j < 32; j++)
		CHECK((int8_t)q[2 + j] == (int)x[j], "Q8_0 q[%d] = %d", j, (int8_t)q[2 + j]);
	quant_dequant_row(GGUF_TYPE_Q8_0, q, y, 32);
	CHECK(memcmp(x, y, sizeof x) == 0, "Q8_0 exact round trip");

	/* Q4_0: max -8 gives d = 1 and levels x + 8: element j in the low nibble of byte j,
	 * element j + 16 in the high nibble. */
	for (int j = 0; j < 32; j++)
		x[j] = (float)(j % 16 - 8);
	x[0] = -8;
	quant_rows(GGUF_TYPE_Q4_0, x, q, 1, 32, NULL);
	CHECK(q[0] == 0x00 && q[1] == 0x3c, "Q4_0 d = %02x%02x", q[1], q[0]);
	for (int j = 0; j < 16; j++)
		CHECK(q[2 + j] == (uint8_t)(j | j << 4), "Q4_0 byte %d = %02x", j, q[2 + j]);

	/* Q5_1: 0..31 gives d = 1, m = 0, the fifth bits set for 16..31 (high half). */
	for (int j = 0; j < 32; j++)
		x[j] = (float)j;
	quant_rows(GGUF_TYPE_Q5_1, x, q, 1, 32, NULL);
	CHECK(q[0] == 0x00 && q[1] == 0x3c && q[2] == 0 && q[3] == 0, "Q5_1 d, m");
	CHECK(q[4] == 0 && q[5] == 0 && q[6] == 0xff && q[7] == 0xff, "Q5_1 qh %02x%02x%02x%02x", q[7], q[6], q[5], q[4]);
	quant_dequant_row(GGUF_TYPE_Q5_1, q, y, 32);
	CHECK(memcmp(x, y, sizeof x) == 0, "Q5_1 exact round trip");
}

int main(void)
{
	check_plain();
	check_hand();
	for (int i = 0; i < NTYPES; i++) {
		CHECK(quant_can_quantize(types[i].type) && quant_can_dequantize(types[i].type), "%s wired in", types[i].name);
		check_random(&types[i]);
		check_edges(&types[i]);
		check_threads(&types[i]);
		check_lanes(&types[i]);
	}
	CHECK(!quant_uses_imatrix(GGUF_TYPE_Q8_0) && quant_uses_imatrix(GGUF_TYPE_Q4_K), "imatrix use flags");
	return check_done();
}
