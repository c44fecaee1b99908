/* kquants.c - the 256-element super-block types Q2_K, Q3_K, Q4_K, Q5_K, Q6_K */
#include <math.h>
#include <string.h>

#include "quant_impl.h"

/*
 * Super-block layouts (QK_K = 256 elements, little-endian, packed):
 *   Q2_K (84 B):  scales[16] (lo nibble scale, hi nibble min), qs[64], fp16 d, fp16 dmin
 *   Q3_K (110 B): hmask[32], qs[64], scales[12] (sixteen 6-bit), fp16 d
 *   Q4_K (144 B): fp16 d, fp16 dmin, scales[12] (eight 6-bit scales + mins), qs[128]
 *   Q5_K (176 B): fp16 d, fp16 dmin, scales[12], qh[32], qs[128]
 *   Q6_K (210 B): ql[128], qh[64], int8 scales[16], fp16 d
 *
 * Without an importance matrix llama.cpp runs the quantize_row_*_ref algorithms
 * (simple per-sub-block fits, scales quantized against their maximum); with one it runs
 * the *_impl ones (weights imatrix[col] * sqrt(sigma2 + x^2), wider scale searches, and
 * the sub-block scales themselves fitted by make_qp / make_qx). Both are reproduced here.
 */
enum { QK_K = 256 };

static int clampi(int v, int lo, int hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* Sum of x^2 over one super-block, in index order. */
static float sum_sq(const float *x, int n)
{
	float s = 0;

	for (int l = 0; l < n; l++)
		s += x[l] * x[l];
	return s;
}

static void imatrix_weights(const float *x, const float *qw, float sigma2, float *w, int n)
{
	for (int l = 0; l < n; l++)
		w[l] = qw[l] * sqrtf(sigma2 + x[l] * x[l]);
}

/* Packs 256 2-bit levels: byte l of each 32-byte group holds four elements 32 apart. */
static void pack_2bit(const uint8_t *L, uint8_t *qs)
{
	for (int j = 0; j < QK_K; j += 128)
		for (int l = 0; l < 32; l++)
			qs[j / 4 + l] = (uint8_t)(L[j + l] | L[j + l + 32] << 2 | L[j + l + 64] << 4 |
						  L[j + l + 96] << 6);
}

/* ---- Q2_K ---- */

/* Re-derives the 2-bit levels from the stored (rounded) scales and mins. */
static void q2_requantize(const float *x, const uint8_t *y, uint8_t *L)
{
	const float dall = quant_get_f16(y + 80), dmin = quant_get_f16(y + 82);

	for (int j = 0; j < QK_K / 16; j++) {
		const float d = dall * (float)(y[j] & 0xf);

		if (!d)
			continue;
		const float m = dmin * (float)(y[j] >> 4);
		for (int ii = 0; ii < 16; ii++)
			L[16 * j + ii] = (uint8_t)clampi(quant_nearest_int((x[16 * j + ii] + m) / d), 0, 3);
	}
}

static void q2_block_ref(const float *x, uint8_t *y)
{
	uint8_t L[QK_K];
	float weights[QK_K], mins[QK_K / 16], scales[QK_K / 16];
	float max_scale = 0, max_min = 0;

	for (int l = 0; l < QK_K; l++)
		weights[l] = fabsf(x[l]);
	quant_make_qkx(QK_K / 16, 16, 3, x, weights, L, scales, mins, -0.5f, 0.1f, 15, true, false);
	for (int j = 0; j < QK_K / 16; j++) {
		if (scales[j] > max_scale)
			max_scale = scales[j];
		if (mins[j] > max_min)
			max_min = mins[j];
	}
	if (max_scale > 0) {
		float iscale = 15.f / max_scale;

		for (int j = 0; j < QK_K / 16; j++)
			y[j] = (uint8_t)quant_nearest_int(iscale * scales[j]);
		quant_put_f16(y + 80, max_scale / 15.f);
	} else {
		memset(y, 0, QK_K / 16);
		quant_put_f16(y + 80, 0.f);
	}
	if (max_min > 0) {
		float iscale = 15.f / max_min;

		for (int j = 0; j < QK_K / 16; j++)
			y[j] |= (uint8_t)((unsigned)quant_nearest_int(iscale * mins[j]) << 4);
		quant_put_f16(y + 82, max_min / 15.f);
	} else {
		quant_put_f16(y + 82, 0.f);
	}
	q2_requantize(x, y, L);
	pack_2bit(L, y + 16);
}

static void q2_block_imatrix(const float *x, uint8_t *y, const float *qw)
{
	uint8_t L[QK_K], Ls[QK_K / 16], Lm[QK_K / 16];
	float weight[QK_K], mins[QK_K / 16], scales[QK_K / 16], sw[QK_K / 16];
	const float sigma2 = sum_sq(x, QK_K) / QK_K;

	imatrix_weights(x, qw, sigma2, weight, QK_K);
	for (int j = 0; j < QK_K / 16; j++) {
		sw[j] = 0;
		for (int l = 0; l < 16; l++)
			sw[j] += weight[16 * j + l];
	}
	quant_make_qkx(QK_K / 16, 16, 3, x, weight, L, scales, mins, -0.9f, 0.05f, 36, false, true);
	quant_put_f16(y + 80, quant_make_qp(QK_K / 16, 15, scales, Ls, sw));
	quant_put_f16(y + 82, quant_make_qp(QK_K / 16, 15, mins, Lm, sw));
	for (int j = 0; j < QK_K / 16; j++)
		y[j] = (uint8_t)(Ls[j] | Lm[j] << 4);
	q2_requantize(x, y, L);
	pack_2bit(L, y + 16);
}

void quant_q2_k_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix)
{
	const int64_t nb = n_per_row / QK_K;

	for (int64_t r = 0; r < nrows; r++)
		for (int64_t i = 0; i < nb; i++) {
			const float *x = src + r * n_per_row + i * QK_K;
			uint8_t *y = (uint8_t *)dst + (r * nb + i) * 84;

			if (imatrix)
				q2_block_imatrix(x, y, imatrix + i * QK_K);
			else
				q2_block_ref(x, y);
		}
}

void quant_q2_k_dequant(const void *src, float *dst, int64_t n)
{
	const uint8_t *y = src;

	for (int64_t i = 0; i < n / QK_K; i++, y += 84) {
		const float d = quant_get_f16(y + 80), min = quant_get_f16(y + 82);
		const uint8_t *q = y + 16;
		int is = 0;

		for (int k = 0; k < QK_K; k += 128, q += 32)
			for (int shift = 0; shift < 8; shift += 2)
				for (int half = 0; half < 32; half += 16) {
					const uint8_t sc = y[is++];
					const float dl = d * (float)(sc & 0xf), ml = min * (float)(sc >> 4);

					for (int l = 0; l < 16; l++)
						*dst++ = dl * (float)((q[half + l] >> shift) & 3) - ml;
				}
	}
}

/* ---- Q3_K ---- */

/* Stores sixteen 6-bit scales (already offset by 32) into the 12-byte field. */
static void q3_pack_scales(const int *ls, uint8_t *sc)
{
	memset(sc, 0, 12);
	for (int j = 0; j < QK_K / 16; j++) {
		int l = ls[j];

		if (j < 8)
			sc[j] = (uint8_t)(l & 0xf);
		else
			sc[j - 8] |= (uint8_t)((l & 0xf) << 4);
		sc[j % 4 + 8] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
	}
}

/* Scale j of a packed Q3_K scale field, in -32..31. */
static int q3_scale(const uint8_t *sc, int j)
{
	int lo = j < 8 ? sc[j] & 0xf : sc[j - 8] >> 4;

	return (lo | ((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) - 32;
}

/* Re-derives the levels from the stored scales, then writes hmask and qs. */
static void q3_finish(const float *x, uint8_t *y, int8_t *L)
{
	const float dall = quant_get_f16(y + 108);
	uint8_t *hmask = y, *qs = y + 32;
	uint8_t Lu[QK_K];

	for (int j = 0; j < QK_K / 16; j++) {
		const float d = dall * (float)q3_scale(y + 96, j);

		if (!d)
			continue;
		for (int ii = 0; ii < 16; ii++)
			L[16 * j + ii] = (int8_t)(clampi(quant_nearest_int(x[16 * j + ii] / d), -4, 3) + 4);
	}
	memset(hmask, 0, QK_K / 8);
	for (int j = 0; j < QK_K; j++) {
		int l = L[j];

		if (l > 3) {
			hmask[j % 32] |= (uint8_t)(1 << (j / 32));
			l -= 4;
		}
		Lu[j] = (uint8_t)l;
	}
	pack_2bit(Lu, qs);
}

static void q3_block_ref(const float *x, uint8_t *y)
{
	int8_t L[QK_K];
	float scales[QK_K / 16], max_scale = 0, amax = 0;
	int ls[QK_K / 16];

	quant_make_q3(QK_K / 16, 16, 4, x, L, scales);
	for (int j = 0; j < QK_K / 16; j++) {
		if (fabsf(scales[j]) > amax) {
			amax = fabsf(scales[j]);
			max_scale = scales[j];
		}
	}
	if (max_scale) {
		float iscale = -32.f / max_scale;

		for (int j = 0; j < QK_K / 16; j++) {
			int8_t l = (int8_t)quant_nearest_int(iscale * scales[j]);

			ls[j] = clampi(l, -32, 31) + 32;
		}
		q3_pack_scales(ls, y + 96);
		quant_put_f16(y + 108, 1 / iscale);
	} else {
		memset(y + 96, 0, 12);
		quant_put_f16(y + 108, 0.f);
	}
	q3_finish(x, y, L);
}

static void q3_block_imatrix(const float *x, uint8_t *y, const float *qw)
{
	int8_t L[QK_K], Ls[QK_K / 16];
	float scales[QK_K / 16], weight[QK_K], sw[QK_K / 16], d_block;
	int ls[QK_K / 16];
	const float sigma2 = 2 * sum_sq(x, QK_K) / QK_K;

	imatrix_weights(x, qw, sigma2, weight, QK_K);
	for (int j = 0; j < QK_K / 16; j++) {
		float sumw = 0;

		for (int l = 0; l < 16; l++)
			sumw += weight[16 * j + l];
		sw[j] = sumw;
	}
	quant_make_qx(QK_K / 16, 16, 4, x, weight, L, scales);
	quant_make_qx(1, QK_K / 16, 32, scales, sw, Ls, &d_block);
	for (int j = 0; j < QK_K / 16; j++)
		ls[j] = Ls[j];
	q3_pack_scales(ls, y + 96);
	quant_put_f16(y + 108, d_block);
	q3_finish(x, y, L);
}

void quant_q3_k_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix)
{
	const int64_t nb = n_per_row / QK_K;

	for (int64_t r = 0; r < nrows; r++)
		for (int64_t i = 0; i < nb; i++) {
			const float *x = src + r * n_per_row + i * QK_K;
			uint8_t *y = (uint8_t *)dst + (r * nb + i) * 110;

			if (imatrix)
				q3_block_imatrix(x, y, imatrix + i * QK_K);
			else
				q3_block_ref(x, y);
		}
}

void quant_q3_k_dequant(const void *src, float *dst, int64_t n)
{
	const uint8_t *y = src;

	for (int64_t i = 0; i < n / QK_K; i++, y += 110) {
		const float d_all = quant_get_f16(y + 108);
		const uint8_t *hm = y, *q = y + 32;
		uint8_t m = 1;
		int is = 0;

		for (int k = 0; k < QK_K; k += 128, q += 32)
			for (int shift = 0; shift < 8; shift += 2, m = (uint8_t)(m << 1))
				for (int half = 0; half < 32; half += 16) {
					const float dl = d_all * (float)q3_scale(y + 96, is++);

					for (int l = 0; l < 16; l++) {
						int v = ((q[half + l] >> shift) & 3) - ((hm[half + l] & m) ? 0 : 4);

						*dst++ = dl * (float)v;
					}
				}
	}
}

/* ---- Q4_K / Q5_K: eight 32-element sub-blocks, 6-bit scales and mins ---- */

/* Stores eight 6-bit scales and mins into the 12-byte field. */
static void k4_pack_scales(const uint8_t *ls, const uint8_t *lm, uint8_t *sc)
{
	for (int j = 0; j < QK_K / 32; j++) {
		if (j < 4) {
			sc[j] = ls[j];
			sc[j + 4] = lm[j];
		} else {
			sc[j + 4] = (uint8_t)((ls[j] & 0xf) | (lm[j] & 0xf) << 4);
			sc[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
			sc[j] |= (uint8_t)((lm[j] >> 4) << 6);
		}
	}
}

/* Scale and min of sub-block j from the 12-byte field. */
static void k4_scale_min(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
	if (j < 4) {
		*d = q[j] & 63;
		*m = q[j + 4] & 63;
	} else {
		*d = (uint8_t)((q[j + 4] & 0xf) | (q[j - 4] >> 6) << 4);
		*m = (uint8_t)((q[j + 4] >> 4) | (q[j] >> 6) << 4);
	}
}

/* Re-derives levels in [0, nmax] from the stored d, dmin (at hdr) and scales (at hdr + 4). */
static void k4_requantize(const float *x, const uint8_t *hdr, int nmax, uint8_t *L)
{
	for (int j = 0; j < QK_K / 32; j++) {
		uint8_t sc, m;

		k4_scale_min(j, hdr + 4, &sc, &m);
		const float d = quant_get_f16(hdr) * (float)sc;
		if (!d)
			continue;
		const float dm = quant_get_f16(hdr + 2) * (float)m;
		for (int ii = 0; ii < 32; ii++)
			L[32 * j + ii] = (uint8_t)clampi(quant_nearest_int((x[32 * j + ii] + dm) / d), 0, nmax);
	}
}

/* The no-imatrix fit: per sub-block qkx2 with weights av_x + |x|, then scales and mins
 * quantized against their maxima. Writes d, dmin, scales; leaves levels in L. */
static void k4_fit_ref(const float *x, uint8_t *hdr, int nmax, float rmin, float rdelta, int nstep, uint8_t *L)
{
	uint8_t ls[QK_K / 32], lm[QK_K / 32];
	float weights[QK_K], mins[QK_K / 32], scales[QK_K / 32];
	float max_scale = 0, max_min = 0;

	for (int j = 0; j < QK_K / 32; j++) {
		float av_x = sqrtf(sum_sq(x + 32 * j, 32) / 32);

		for (int l = 0; l < 32; l++)
			weights[32 * j + l] = av_x + fabsf(x[32 * j + l]);
	}
	quant_make_qkx(QK_K / 32, 32, nmax, x, weights, L, scales, mins, rmin, rdelta, nstep, false, false);
	for (int j = 0; j < QK_K / 32; j++) {
		if (scales[j] > max_scale)
			max_scale = scales[j];
		if (mins[j] > max_min)
			max_min = mins[j];
	}
	float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
	float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
	for (int j = 0; j < QK_K / 32; j++) {
		uint8_t s = (uint8_t)quant_nearest_int(inv_scale * scales[j]);
		uint8_t m = (uint8_t)quant_nearest_int(inv_min * mins[j]);

		ls[j] = s < 63 ? s : 63;
		lm[j] = m < 63 ? m : 63;
	}
	k4_pack_scales(ls, lm, hdr + 4);
	quant_put_f16(hdr, max_scale / 63.f);
	quant_put_f16(hdr + 2, max_min / 63.f);
}

/* The imatrix fit: qkx3 per sub-block, then make_qp for the scales and the mins. */
static void k4_fit_imatrix(const float *x, uint8_t *hdr, int nmax, const float *qw, uint8_t *L)
{
	uint8_t ls[QK_K / 32], lm[QK_K / 32];
	float weights[QK_K], mins[QK_K / 32], scales[QK_K / 32], sw[QK_K / 32];
	const float sigma2 = 2 * sum_sq(x, QK_K) / QK_K;

	imatrix_weights(x, qw, sigma2, weights, QK_K);
	for (int j = 0; j < QK_K / 32; j++) {
		float sumw = 0;

		for (int l = 0; l < 32; l++)
			sumw += weights[32 * j + l];
		sw[j] = sumw;
	}
	quant_make_qkx(QK_K / 32, 32, nmax, x, weights, L, scales, mins, -0.9f, 0.05f, 36, false, true);
	float d_block = quant_make_qp(QK_K / 32, 63, scales, ls, sw);
	float m_block = quant_make_qp(QK_K / 32, 63, mins, lm, sw);
	for (int j = 0; j < QK_K / 32; j++) { /* make_qp already keeps them <= 63 */
		ls[j] = ls[j] < 63 ? ls[j] : 63;
		lm[j] = lm[j] < 63 ? lm[j] : 63;
	}
	k4_pack_scales(ls, lm, hdr + 4);
	quant_put_f16(hdr, d_block);
	quant_put_f16(hdr + 2, m_block);
}

void quant_q4_k_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix)
{
	const int64_t nb = n_per_row / QK_K;
	uint8_t L[QK_K];

	for (int64_t r = 0; r < nrows; r++)
		for (int64_t i = 0; i < nb; i++) {
			const float *x = src + r * n_per_row + i * QK_K;
			uint8_t *y = (uint8_t *)dst + (r * nb + i) * 144, *q = y + 16;

			memset(y + 4, 0, 12);
			if (imatrix)
				k4_fit_imatrix(x, y, 15, imatrix + i * QK_K, L);
			else
				k4_fit_ref(x, y, 15, -1.f, 0.1f, 20, L);
			k4_requantize(x, y, 15, L);
			for (int j = 0; j < QK_K; j += 64, q += 32)
				for (int l = 0; l < 32; l++)
					q[l] = (uint8_t)(L[j + l] | L[j + l + 32] << 4);
		}
}

void quant_q5_k_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix)
{
	const int64_t nb = n_per_row / QK_K;
	uint8_t L[QK_K];

	for (int64_t r = 0; r < nrows; r++)
		for (int64_t i = 0; i < nb; i++) {
			const float *x = src + r * n_per_row + i * QK_K;
			uint8_t *y = (uint8_t *)dst + (r * nb + i) * 176, *qh = y + 16, *ql = y + 48;
			uint8_t m1 = 1, m2 = 2;

			memset(y + 4, 0, 12);
			if (imatrix)
				k4_fit_imatrix(x, y, 31, imatrix + i * QK_K, L);
			else
				k4_fit_ref(x, y, 31, -0.5f, 0.1f, 15, L);
			k4_requantize(x, y, 31, L);
			memset(qh, 0, QK_K / 8);
			for (int n = 0; n < QK_K; n += 64, ql += 32) {
				for (int j = 0; j < 32; j++) {
					int l1 = L[n + j], l2 = L[n + j + 32];

					if (l1 > 15) {
						l1 -= 16;
						qh[j] |= m1;
					}
					if (l2 > 15) {
						l2 -= 16;
						qh[j] |= m2;
					}
					ql[j] = (uint8_t)(l1 | l2 << 4);
				}
				m1 = (uint8_t)(m1 << 2);
				m2 = (uint8_t)(m2 << 2);
			}
		}
}

void quant_q4_k_dequant(const void *src, float *dst, int64_t n)
{
	const uint8_t *y = src;

	for (int64_t i = 0; i < n / QK_K; i++, y += 144) {
		const float d = quant_get_f16(y), min = quant_get_f16(y + 2);
		const uint8_t *q = y + 16;

		for (int j = 0, is = 0; j < QK_K; j += 64, q += 32, is += 2) {
			uint8_t sc, m;

			k4_scale_min(is, y + 4, &sc, &m);
			const float d1 = d * (float)sc, m1 = min * (float)m;
			k4_scale_min(is + 1, y + 4, &sc, &m);
			const float d2 = d * (float)sc, m2 = min * (float)m;
			for (int l = 0; l < 32; l++)
				*dst++ = d1 * (float)(q[l] & 0xf) - m1;
			for (int l = 0; l < 32; l++)
				*dst++ = d2 * (float)(q[l] >> 4) - m2;
		}
	}
}

void quant_q5_k_dequant(const void *src, float *dst, int64_t n)
{
	const uint8_t *y = src;

	for (int64_t i = 0; i < n / QK_K; i++, y += 176) {
		const float d = quant_get_f16(y), min = quant_get_f16(y + 2);
		const uint8_t *qh = y + 16, *ql = y + 48;
		uint8_t u1 = 1, u2 = 2;

		for (int j = 0, is = 0; j < QK_K; j += 64, ql += 32, is += 2) {
			uint8_t sc, m;

			k4_scale_min(is, y + 4, &sc, &m);
			const float d1 = d * (float)sc, m1 = min * (float)m;
			k4_scale_min(is + 1, y + 4, &sc, &m);
			const float d2 = d * (float)sc, m2 = min * (float)m;
			for (int l = 0; l < 32; l++)
				*dst++ = d1 * (float)((ql[l] & 0xf) + (qh[l] & u1 ? 16 : 0)) - m1;
			for (int l = 0; l < 32; l++)
				*dst++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
			u1 = (uint8_t)(u1 << 2);
			u2 = (uint8_t)(u2 << 2);
		}
	}
}

/* ---- Q6_K ---- */

static void q6_block(const float *x, uint8_t *y, const float *qw)
{
	int8_t L[QK_K];
	float scales[QK_K / 16], max_scale = 0, max_abs_scale = 0;
	int8_t *sc = (int8_t *)(y + 192);
	uint8_t *ql = y, *qh = y + 128;

	/* Q6_K weighs with the imatrix directly (no sigma2 term); without it, with x^2. */
	quant_make_qx(QK_K / 16, 16, 32, x, qw, L, scales);
	for (int ib = 0; ib < QK_K / 16; ib++) {
		if (fabsf(scales[ib]) > max_abs_scale) {
			max_abs_scale = fabsf(scales[ib]);
			max_scale = scales[ib];
		}
	}
	if (max_abs_scale < 1e-15f) { /* GROUP_MAX_EPS: an all-zero block */
		memset(y, 0, 210);
		return;
	}
	float iscale = -128.f / max_scale;
	quant_put_f16(y + 208, 1 / iscale);
	for (int ib = 0; ib < QK_K / 16; ib++) {
		int l = quant_nearest_int(iscale * scales[ib]);

		sc[ib] = (int8_t)(l < 127 ? l : 127);
	}
	for (int j = 0; j < QK_K / 16; j++) {
		float d = quant_get_f16(y + 208) * (float)sc[j];

		if (!d)
			continue;
		for (int ii = 0; ii < 16; ii++)
			L[16 * j + ii] = (int8_t)(clampi(quant_nearest_int(x[16 * j + ii] / d), -32, 31) + 32);
	}
	for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32)
		for (int l = 0; l < 32; l++) {
			const uint8_t q1 = L[j + l] & 0xf, q2 = L[j + l + 32] & 0xf;
			const uint8_t q3 = L[j + l + 64] & 0xf, q4 = L[j + l + 96] & 0xf;

			ql[l] = (uint8_t)(q1 | q3 << 4);
			ql[l + 32] = (uint8_t)(q2 | q4 << 4);
			qh[l] = (uint8_t)(L[j + l] >> 4 | (L[j + l + 32] >> 4) << 2 |
					  (L[j + l + 64] >> 4) << 4 | (L[j + l + 96] >> 4) << 6);
		}
}

void quant_q6_k_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix)
{
	const int64_t nb = n_per_row / QK_K;

	for (int64_t r = 0; r < nrows; r++)
		for (int64_t i = 0; i < nb; i++)
			q6_block(src + r * n_per_row + i * QK_K, (uint8_t *)dst + (r * nb + i) * 210,
				 imatrix ? imatrix + i * QK_K : NULL);
}

void quant_q6_k_dequant(const void *src, float *dst, int64_t n)
{
	const uint8_t *y = src;

	for (int64_t i = 0; i < n / QK_K; i++, y += 210) {
		const float d = quant_get_f16(y + 208);
		const uint8_t *ql = y, *qh = y + 128;
		const int8_t *sc = (const int8_t *)(y + 192);

		for (int k = 0; k < QK_K; k += 128, dst += 128, ql += 64, qh += 32, sc += 8)
			for (int l = 0; l < 32; l++) {
				const int is = l / 16;
				const int q1 = ((ql[l] & 0xf) | ((qh[l] >> 0) & 3) << 4) - 32;
				const int q2 = ((ql[l + 32] & 0xf) | ((qh[l] >> 2) & 3) << 4) - 32;
				const int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
				const int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;

				dst[l] = d * (float)sc[is] * (float)q1;
				dst[l + 32] = d * (float)sc[is + 2] * (float)q2;
				dst[l + 64] = d * (float)sc[is + 4] * (float)q3;
				dst[l + 96] = d * (float)sc[is + 6] * (float)q4;
			}
	}
}
