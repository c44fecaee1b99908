/* legacy.c - the 32-element block types Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "quant_impl.h"

/*
 * Block layouts (little-endian, packed):
 *   Q4_0 (18 B): fp16 d, 16 B nibbles          x = (q - 8) * d
 *   Q4_1 (20 B): fp16 d, fp16 m, 16 B nibbles  x = q * d + m
 *   Q5_0 (22 B): fp16 d, u32 high bits, 16 B   x = (q - 16) * d
 *   Q5_1 (24 B): fp16 d, fp16 m, u32 high bits, 16 B nibbles
 *   Q8_0 (34 B): fp16 d, 32 int8               x = q * d
 * Element j of a block sits in the low nibble of byte j for j < 16, in the high nibble of
 * byte j - 16 otherwise; Q5's fifth bit of element j is bit j of the u32.
 */
enum { QK = 32 };

static void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Packs 32 levels: nibbles into qs[16], and (for 5-bit types) fifth bits into qh. */
static void pack_nibbles(const uint8_t *L, uint8_t *qs, uint32_t *qh)
{
	uint32_t h = 0;

	for (int j = 0; j < QK / 2; j++) {
		qs[j] = (uint8_t)((L[j] & 0x0f) | (L[j + QK / 2] & 0x0f) << 4);
		h |= (uint32_t)(L[j] >> 4 & 1) << j;
		h |= (uint32_t)(L[j + QK / 2] >> 4 & 1) << (j + QK / 2);
	}
	if (qh)
		*qh = h;
}

/* The value of largest magnitude (the first one on ties), as ggml's symmetric types pick it. */
static float signed_absmax(const float *x)
{
	float amax = 0, max = 0;

	for (int j = 0; j < QK; j++)
		if (amax < fabsf(x[j])) {
			amax = fabsf(x[j]);
			max = x[j];
		}
	return max;
}

/* Mean square of a whole row: the sigma2 the imatrix weights add to x^2. */
static float row_sigma2(const float *x, int64_t n)
{
	float s = 0;

	for (int64_t j = 0; j < n; j++)
		s += x[j] * x[j];
	return s / (float)n;
}

static void imatrix_weights(const float *x, const float *qw, float sigma2, float *w, int n)
{
	for (int j = 0; j < n; j++)
		w[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j]);
}

/* ---- Q4_0 / Q5_0: symmetric, d = max / -(2^(bits-1)) ---- */

/* Without weights: the level is the truncation of x/d + offset + 0.5 (not a search). */
static void sym_block_plain(const float *x, uint8_t *L, int bits, uint8_t *dp)
{
	const int half = 1 << (bits - 1), top = (1 << bits) - 1;
	const float d = signed_absmax(x) / (float)-half;
	const float id = d ? 1.0f / d : 0.0f;

	quant_put_f16(dp, d);
	for (int j = 0; j < QK; j++) {
		int l = (int8_t)quant_trunc_i32(x[j] * id + ((float)half + 0.5f));

		L[j] = (uint8_t)(l < top ? l : top);
	}
}

/* Blocks handled together by the imatrix searches (they run several blocks at once). */
enum { CHUNK = 8 };

/* Writes a packed 4- or 5-bit block: nibbles at y + off, the fifth bits just before them. */
static void pack_block(const uint8_t *L, uint8_t *y, int bits, int off)
{
	if (bits == 4) {
		pack_nibbles(L, y + off, NULL);
	} else {
		uint32_t qh;

		pack_nibbles(L, y + off + 4, &qh);
		put_u32(y + off, qh);
	}
}

static void sym_rows(const float *src, uint8_t *dst, int64_t nrows, int64_t n, const float *imatrix, int bits)
{
	const size_t bsize = bits == 4 ? 18 : 22;
	const int64_t nb = n / QK;
	uint8_t L[CHUNK * QK];
	int8_t Ls[CHUNK * QK];
	float w[CHUNK * QK], d[CHUNK];

	for (int64_t r = 0; r < nrows; r++) {
		const float *x = src + r * n;
		float sigma2 = imatrix ? row_sigma2(x, n) : 0;

		for (int64_t b0 = 0; b0 < nb; b0 += CHUNK) {
			int m = nb - b0 < CHUNK ? (int)(nb - b0) : CHUNK;
			uint8_t *y = dst + (r * nb + b0) * bsize;

			if (imatrix) {
				imatrix_weights(x + b0 * QK, imatrix + b0 * QK, sigma2, w, m * QK);
				quant_make_qx(m, QK, 1 << (bits - 1), x + b0 * QK, w, Ls, d);
				memcpy(L, Ls, (size_t)m * QK);
			}
			for (int b = 0; b < m; b++, y += bsize) {
				if (imatrix)
					quant_put_f16(y, d[b]);
				else
					sym_block_plain(x + (b0 + b) * QK, L + b * QK, bits, y);
				pack_block(L + b * QK, y, bits, 2);
			}
		}
	}
}

void quant_q4_0_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix)
{
	sym_rows(src, dst, nrows, n_per_row, imatrix, 4);
}

void quant_q5_0_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix)
{
	sym_rows(src, dst, nrows, n_per_row, imatrix, 5);
}

void quant_q4_0_dequant(const void *src, float *dst, int64_t n)
{
	const uint8_t *y = src;

	for (int64_t b = 0; b < n / QK; b++, y += 18, dst += QK) {
		const float d = quant_get_f16(y);

		for (int j = 0; j < QK / 2; j++) {
			dst[j] = (float)((y[2 + j] & 0x0f) - 8) * d;
			dst[j + QK / 2] = (float)((y[2 + j] >> 4) - 8) * d;
		}
	}
}

void quant_q5_0_dequant(const void *src, float *dst, int64_t n)
{
	const uint8_t *y = src;

	for (int64_t b = 0; b < n / QK; b++, y += 22, dst += QK) {
		const float d = quant_get_f16(y);
		const uint32_t qh = get_u32(y + 2);

		for (int j = 0; j < QK / 2; j++) {
			int lo = (y[6 + j] & 0x0f) | (int)(qh >> j & 1) << 4;
			int hi = (y[6 + j] >> 4) | (int)(qh >> (j + QK / 2) & 1) << 4;

			dst[j] = (float)(lo - 16) * d;
			dst[j + QK / 2] = (float)(hi - 16) * d;
		}
	}
}

/* ---- Q4_1 / Q5_1: affine, x = q * d + m ---- */

static void affine_block_plain(const float *x, uint8_t *L, int bits, uint8_t *dp, uint8_t *mp)
{
	const int top = (1 << bits) - 1;
	float min = FLT_MAX, max = -FLT_MAX;

	for (int j = 0; j < QK; j++) {
		if (x[j] < min)
			min = x[j];
		if (x[j] > max)
			max = x[j];
	}
	const float d = (max - min) / (float)top;
	const float id = d ? 1.0f / d : 0.0f;

	quant_put_f16(dp, d);
	quant_put_f16(mp, min);
	for (int j = 0; j < QK; j++) {
		float v = (x[j] - min) * id + 0.5f;

		if (bits == 4) { /* ggml clamps the 4-bit level to 15 ... */
			int l = (int8_t)quant_trunc_i32(v);

			L[j] = (uint8_t)(l < top ? l : top);
		} else { /* ... and takes the 5-bit one as it comes */
			L[j] = (uint8_t)quant_trunc_i32(v);
		}
	}
}

static void affine_rows(const float *src, uint8_t *dst, int64_t nrows, int64_t n, const float *imatrix, int bits)
{
	const size_t bsize = bits == 4 ? 20 : 24;
	const int64_t nb = n / QK;
	uint8_t L[CHUNK * QK];
	float w[CHUNK * QK], d[CHUNK], min[CHUNK];

	for (int64_t r = 0; r < nrows; r++) {
		const float *x = src + r * n;
		float sigma2 = imatrix ? row_sigma2(x, n) : 0;

		for (int64_t b0 = 0; b0 < nb; b0 += CHUNK) {
			int m = nb - b0 < CHUNK ? (int)(nb - b0) : CHUNK;
			uint8_t *y = dst + (r * nb + b0) * bsize;

			if (imatrix) {
				imatrix_weights(x + b0 * QK, imatrix + b0 * QK, sigma2, w, m * QK);
				quant_make_qkx(m, QK, (1 << bits) - 1, x + b0 * QK, w, L, d, min, -0.9f, 0.05f, 36,
					       false, true);
			}
			for (int b = 0; b < m; b++, y += bsize) {
				if (imatrix) {
					quant_put_f16(y, d[b]);
					quant_put_f16(y + 2, -min[b]);
				} else {
					affine_block_plain(x + (b0 + b) * QK, L + b * QK, bits, y, y + 2);
				}
				pack_block(L + b * QK, y, bits, 4);
			}
		}
	}
}

void quant_q4_1_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix)
{
	affine_rows(src, dst, nrows, n_per_row, imatrix, 4);
}

void quant_q5_1_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix)
{
	affine_rows(src, dst, nrows, n_per_row, imatrix, 5);
}

void quant_q4_1_dequant(const void *src, float *dst, int64_t n)
{
	const uint8_t *y = src;

	for (int64_t b = 0; b < n / QK; b++, y += 20, dst += QK) {
		const float d = quant_get_f16(y), m = quant_get_f16(y + 2);

		for (int j = 0; j < QK / 2; j++) {
			dst[j] = (float)(y[4 + j] & 0x0f) * d + m;
			dst[j + QK / 2] = (float)(y[4 + j] >> 4) * d + m;
		}
	}
}

void quant_q5_1_dequant(const void *src, float *dst, int64_t n)
{
	const uint8_t *y = src;

	for (int64_t b = 0; b < n / QK; b++, y += 24, dst += QK) {
		const float d = quant_get_f16(y), m = quant_get_f16(y + 2);
		const uint32_t qh = get_u32(y + 4);

		for (int j = 0; j < QK / 2; j++) {
			int lo = (y[8 + j] & 0x0f) | (int)(qh >> j & 1) << 4;
			int hi = (y[8 + j] >> 4) | (int)(qh >> (j + QK / 2) & 1) << 4;

			dst[j] = (float)lo * d + m;
			dst[j + QK / 2] = (float)hi * d + m;
		}
	}
}

/* ---- Q8_0: symmetric 8-bit, d = absmax / 127, levels rounded half away from zero ---- */

void quant_q8_0_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix)
{
	uint8_t *y = dst;
	const float *x = src;

	(void)imatrix; /* llama.cpp's Q8_0 ignores it */
	for (int64_t b = 0; b < nrows * n_per_row / QK; b++, y += 34, x += QK) {
		float amax = 0;

		for (int j = 0; j < QK; j++)
			amax = amax > fabsf(x[j]) ? amax : fabsf(x[j]);
		const float d = amax / 127.0f;
		const float id = d ? 1.0f / d : 0.0f;

		quant_put_f16(y, d);
		for (int j = 0; j < QK; j++)
			y[2 + j] = (uint8_t)quant_trunc_i32(roundf(x[j] * id));
	}
}

void quant_q8_0_dequant(const void *src, float *dst, int64_t n)
{
	const uint8_t *y = src;

	for (int64_t b = 0; b < n / QK; b++, y += 34, dst += QK) {
		const float d = quant_get_f16(y);

		for (int j = 0; j < QK; j++)
			dst[j] = (float)(int8_t)y[2 + j] * d;
	}
}
