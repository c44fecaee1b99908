/* iq4.c - IQ4_NL and IQ4_XS: 4-bit indices into a fixed non-linear grid, bit-compatible with llama.cpp */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "half.h"
#include "quant/quant_impl.h"

/* The 16 grid points both types index (ggml's kvalues_iq4nl). */
static const int8_t iq4_grid[16] = {
	-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113
};

enum {
	IQ4_NL_BLCK = 32, IQ4_NL_SIZE = 18,  /* fp16 d, 16 bytes of nibbles */
	IQ4_XS_BLCK = 256, IQ4_XS_SIZE = 136, /* fp16 d, u16 scales_h, 4 scales_l, 128 nibbles */
	IQ4_SUB = 32,                          /* elements per scale */
	IQ4_NTRY = 7                           /* scale candidates tried each side of the first guess */
};

/* Below this a block is treated as all zero (ggml's GROUP_MAX_EPS). */
#define IQ4_EPS 1e-15f

/* below[k + 128]: the largest i <= 14 with iq4_grid[i] <= k, for k = -128..127. Since the
 * grid points are integers, iq4_grid[i] <= x exactly when iq4_grid[i] <= floor(x), so this
 * finds the bracketing pair that a binary search would, in one step. */
static const uint8_t below[256] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3,
	3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5,
	5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
	7, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 10, 10, 10, 10, 10, 10, 10,
	10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,
	12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 14, 14, 14, 14, 14, 14, 14,
	14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14
};

/* Index of the grid point nearest x; on a tie the upper one; NaN gives 15 (all as ggml's
 * binary-search best_index_int8 answers, whose final comparison is repeated here). */
static int nearest_grid(float x)
{
	int k, lo;

	if (x <= iq4_grid[0])
		return 0;
	if (x >= iq4_grid[15] || x != x)
		return 15;
	k = (int)x; /* truncation; make it floor for negative non-integers */
	if ((float)k > x)
		k--;
	lo = below[k + 128];
	return x - iq4_grid[lo] < iq4_grid[lo + 1] - x ? lo : lo + 1;
}

/*
 * The scale search tries 16 inverse scales on the same 32 values. Each try is one lane of a
 * vector (GCC vector extensions: AVX2 or SSE code where available, plain code elsewhere),
 * and each lane performs exactly the scalar sequence of float operations of its try, in the
 * same order, so the sums and the chosen scale are bit-identical to the one-at-a-time loop.
 */
typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));
enum { LANES = 8, NTRIES = 2 * IQ4_NTRY + 2 }; /* the first guess, then -NTRY..NTRY */

#if defined(__x86_64__) && defined(__GNUC__)
#define IQ4_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define IQ4_CLONES
#endif

/* iq4_grid as floats, padded so that [i + 1] is valid for i = 15 */
static const float grid_f[17] = {
	-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113, 113
};

#define IQ4_INLINE static inline __attribute__((always_inline))

/* *x = a in the lanes where mask is set (vectors pass by pointer: their by-value ABI
 * would depend on the target). */
IQ4_INLINE void pick(vf *x, const vi *mask, const vf *a)
{
	*x = (vf)((*mask & (vi)*a) | (~*mask & (vi)*x));
}

/* *q = iq4_grid[nearest_grid(al)] per lane (same comparisons, same result). */
IQ4_INLINE void nearest_value(vf *q, const vf *al)
{
	const vf gmin = (vf){ 0 } + grid_f[0], gmax = (vf){ 0 } + grid_f[15];
	vi k = __builtin_convertvector(*al, vi), c;
	vf lower;

	k += (vi)(__builtin_convertvector(k, vf) > *al); /* truncation made floor */
	c = k < -128;
	k = (c & -128) | (~c & k);
	c = k > 127;
	k = (c & 127) | (~c & k);
	for (int g = 0; g < LANES; g++) {
		int lo = below[k[g] + 128];

		(*q)[g] = grid_f[lo + 1];
		lower[g] = grid_f[lo];
	}
	/* *q holds the upper neighbour; the lower one wins where strictly nearer */
	c = (*al - lower) < (*q - *al);
	pick(q, &c, &lower);
	c = *al <= gmin;
	pick(q, &c, &gmin);
	c = (*al >= gmax) | (*al != *al);
	pick(q, &c, &gmax);
}

/* sumqx[t], sumq2[t] of sub-block xb quantized with inverse scale ids[t], for NTRIES t. */
IQ4_CLONES static void try_scales(const float *xb, const float *w, const float *ids, float *sumqx, float *sumq2)
{
	for (int h = 0; h < NTRIES / LANES; h++) {
		vf id, sx = { 0 }, s2 = { 0 };

		memcpy(&id, ids + h * LANES, sizeof id);
		for (int j = 0; j < IQ4_SUB; j++) {
			vf al = id * xb[j], q, wq;

			nearest_value(&q, &al);
			wq = w[j] * q;

			sx += wq * xb[j];
			s2 += wq * q;
		}
		memcpy(sumqx + h * LANES, &sx, sizeof sx);
		memcpy(sumq2 + h * LANES, &s2, sizeof s2);
	}
}

/* Best scale for one sub-block: the least-squares scale for the grid assignment from the
 * max element, then 2*IQ4_NTRY+1 alternative assignments, keeping the best fit (the
 * first one wins ties, as in llama.cpp's sequential loop). */
static float sub_scale(const float *xb, const float *w)
{
	float amax = 0, max = 0, d, best;
	float ids[NTRIES], sumqx[NTRIES], sumq2[NTRIES];

	for (int j = 0; j < IQ4_SUB; j++) {
		float ax = fabsf(xb[j]);

		if (ax > amax) {
			amax = ax;
			max = xb[j];
		}
	}
	if (amax < IQ4_EPS)
		return 0;
	d = -max / iq4_grid[0];
	ids[0] = 1 / d;
	for (int itry = -IQ4_NTRY; itry <= IQ4_NTRY; itry++)
		ids[1 + itry + IQ4_NTRY] = (float)(itry + iq4_grid[0]) / max;
	try_scales(xb, w, ids, sumqx, sumq2);
	d = sumq2[0] > 0 ? sumqx[0] / sumq2[0] : 0.f;
	best = d * sumqx[0];
	for (int t = 1; t < NTRIES; t++)
		if (sumq2[t] > 0 && sumqx[t] * sumqx[t] > best * sumq2[t]) {
			d = sumqx[t] / sumq2[t];
			best = d * sumqx[t];
		}
	return d;
}

/* Per-element weights of sub-block xb: imatrix × sqrt(σ² + x²) with an imatrix, else x². */
static void sub_weights(const float *xb, const float *qw, float sigma2, float *w)
{
	for (int j = 0; j < IQ4_SUB; j++)
		w[j] = qw ? qw[j] * sqrtf(sigma2 + xb[j] * xb[j]) : xb[j] * xb[j];
}

/* σ² of a super-block as ggml computes it: 2/n · Σx². */
static float super_sigma2(const float *x, int n)
{
	float s = 0;

	for (int j = 0; j < n; j++)
		s += x[j] * x[j];
	return s * (2.f / n);
}

/* Packs 32 indices: low nibbles are elements 0..15, high nibbles 16..31. */
static void pack_nibbles(const uint8_t *L, uint8_t *qs)
{
	for (int j = 0; j < 16; j++)
		qs[j] = (uint8_t)(L[j] | (L[16 + j] << 4));
}

static void iq4_nl_block(const float *x, const float *qw, uint8_t *out)
{
	float w[IQ4_SUB];
	uint8_t L[IQ4_SUB];
	float d, id;
	uint16_t h;

	sub_weights(x, qw, super_sigma2(x, IQ4_NL_BLCK), w);
	d = sub_scale(x, w);
	h = half_from_f32(d);
	/* indices are chosen with the unrounded scale, as llama.cpp does */
	id = d ? 1 / d : 0;
	for (int j = 0; j < IQ4_SUB; j++)
		L[j] = (uint8_t)nearest_grid(id * x[j]);
	memcpy(out, &h, 2);
	pack_nibbles(L, out + 2);
}

static void iq4_xs_block(const float *x, const float *qw, uint8_t *out)
{
	float w[IQ4_SUB], scales[IQ4_XS_BLCK / IQ4_SUB];
	float sigma2 = super_sigma2(x, IQ4_XS_BLCK);
	float max_scale = 0, amax_scale = 0, d, id;
	uint16_t h, scales_h = 0;
	uint8_t scales_l[4] = { 0 };
	uint8_t L[IQ4_XS_BLCK];

	for (int ib = 0; ib < IQ4_XS_BLCK / IQ4_SUB; ib++) {
		const float *xb = x + ib * IQ4_SUB;

		sub_weights(xb, qw ? qw + ib * IQ4_SUB : NULL, sigma2, w);
		scales[ib] = sub_scale(xb, w);
		if (fabsf(scales[ib]) > amax_scale) {
			amax_scale = fabsf(scales[ib]);
			max_scale = scales[ib];
		}
	}
	/* 6-bit signed sub-scales relative to d; the grid's most negative point is the
	 * largest magnitude, hence the minus sign */
	d = -max_scale / 32;
	h = half_from_f32(d);
	id = d ? 1 / d : 0.f;
	for (int ib = 0; ib < IQ4_XS_BLCK / IQ4_SUB; ib++) {
		const float *xb = x + ib * IQ4_SUB;
		int l = quant_nearest_int(id * scales[ib]);
		float dl, idl;

		l = l < -32 ? -32 : l > 31 ? 31 : l;
		dl = d * l;
		idl = dl ? 1 / dl : 0.f;
		for (int j = 0; j < IQ4_SUB; j++)
			L[ib * IQ4_SUB + j] = (uint8_t)nearest_grid(idl * xb[j]);
		l += 32;
		scales_l[ib / 2] |= (uint8_t)((l & 0xf) << 4 * (ib % 2));
		scales_h |= (uint16_t)((l >> 4) << 2 * (ib % 8));
	}
	memcpy(out, &h, 2);
	memcpy(out + 2, &scales_h, 2);
	memcpy(out + 4, scales_l, 4);
	for (int ib = 0; ib < IQ4_XS_BLCK / IQ4_SUB; ib++)
		pack_nibbles(L + ib * IQ4_SUB, out + 8 + 16 * ib);
}

void quant_iq4_nl_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix)
{
	uint8_t *out = dst;
	int64_t nb = n_per_row / IQ4_NL_BLCK;

	for (int64_t r = 0; r < nrows; r++)
		for (int64_t b = 0; b < nb; b++, out += IQ4_NL_SIZE)
			iq4_nl_block(src + r * n_per_row + b * IQ4_NL_BLCK,
				     imatrix ? imatrix + b * IQ4_NL_BLCK : NULL, out);
}

void quant_iq4_xs_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix)
{
	uint8_t *out = dst;
	int64_t nb = n_per_row / IQ4_XS_BLCK;

	for (int64_t r = 0; r < nrows; r++)
		for (int64_t b = 0; b < nb; b++, out += IQ4_XS_SIZE)
			iq4_xs_block(src + r * n_per_row + b * IQ4_XS_BLCK,
				     imatrix ? imatrix + b * IQ4_XS_BLCK : NULL, out);
}

/* Expands 32 packed indices with scale d. */
static void unpack_sub(const uint8_t *qs, float d, float *y)
{
	for (int j = 0; j < 16; j++) {
		y[j] = d * iq4_grid[qs[j] & 0xf];
		y[j + 16] = d * iq4_grid[qs[j] >> 4];
	}
}

void quant_iq4_nl_dequant(const void *src, float *dst, int64_t n)
{
	const uint8_t *in = src;

	for (int64_t b = 0; b < n / IQ4_NL_BLCK; b++, in += IQ4_NL_SIZE) {
		uint16_t h;

		memcpy(&h, in, 2);
		unpack_sub(in + 2, half_to_f32(h), dst + b * IQ4_NL_BLCK);
	}
}

void quant_iq4_xs_dequant(const void *src, float *dst, int64_t n)
{
	const uint8_t *in = src;

	for (int64_t b = 0; b < n / IQ4_XS_BLCK; b++, in += IQ4_XS_SIZE) {
		uint16_t h, scales_h;
		float d;

		memcpy(&h, in, 2);
		memcpy(&scales_h, in + 2, 2);
		d = half_to_f32(h);
		for (int ib = 0; ib < IQ4_XS_BLCK / IQ4_SUB; ib++) {
			int ls = ((in[4 + ib / 2] >> 4 * (ib % 2)) & 0xf) | (((scales_h >> 2 * ib) & 3) << 4);

			unpack_sub(in + 8 + 16 * ib, d * (float)(ls - 32), dst + b * IQ4_XS_BLCK + ib * IQ4_SUB);
		}
	}
}
