/* quant_impl.h - per-type quantizers shared by the files in kernels/quant only; kernels/quant.h is the public interface */
#ifndef QBAKE_QUANT_IMPL_H
#define QBAKE_QUANT_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "half.h"

/*
 * Every block type T has two functions here, implemented in its own file:
 *
 *   void quant_T_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
 *                     const float *imatrix);
 *       quantizes nrows rows of n_per_row floats (n_per_row a multiple of the block size)
 *       into packed rows, using the per-column weights imatrix[n_per_row] when it is not
 *       NULL; same bytes as llama.cpp's ggml_quantize_chunk for that type.
 *   void quant_T_dequant(const void *src, float *dst, int64_t n);
 *       expands n values (a multiple of the block size).
 *
 * quant.c's table `quant_types` maps a ggml type id to these functions, its block size and
 * bytes per block. To wire a new type in (e.g. IQ4_NL / IQ4_XS from iq4.c): declare its two
 * functions below and add one line to quant_types in quant.c, e.g.
 *     { GGUF_TYPE_IQ4_NL, 32, 18, true, quant_iq4_nl_rows, quant_iq4_nl_dequant },
 *     { GGUF_TYPE_IQ4_XS, 256, 136, true, quant_iq4_xs_rows, quant_iq4_xs_dequant },
 * (the bool says whether the quantizer uses an imatrix). Nothing else needs changing:
 * quant_can_quantize, quant_rows_mt and the tests read that table.
 *
 * Helpers below are shared by all the files.
 */

/* legacy.c: 32-element blocks */
void quant_q4_0_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix);
void quant_q4_0_dequant(const void *src, float *dst, int64_t n);
void quant_q4_1_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix);
void quant_q4_1_dequant(const void *src, float *dst, int64_t n);
void quant_q5_0_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix);
void quant_q5_0_dequant(const void *src, float *dst, int64_t n);
void quant_q5_1_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix);
void quant_q5_1_dequant(const void *src, float *dst, int64_t n);
void quant_q8_0_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix);
void quant_q8_0_dequant(const void *src, float *dst, int64_t n);

/* kquants.c: 256-element super-blocks */
void quant_q2_k_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix);
void quant_q2_k_dequant(const void *src, float *dst, int64_t n);
void quant_q3_k_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix);
void quant_q3_k_dequant(const void *src, float *dst, int64_t n);
void quant_q4_k_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix);
void quant_q4_k_dequant(const void *src, float *dst, int64_t n);
void quant_q5_k_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix);
void quant_q5_k_dequant(const void *src, float *dst, int64_t n);
void quant_q6_k_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix);
void quant_q6_k_dequant(const void *src, float *dst, int64_t n);

/* iq4.c (engineer quanti): non-linear 4-bit grids */
void quant_iq4_nl_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix);
void quant_iq4_nl_dequant(const void *src, float *dst, int64_t n);
void quant_iq4_xs_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix);
void quant_iq4_xs_dequant(const void *src, float *dst, int64_t n);

/* ---- shared helpers ---- */

/* search.c: the scale searches of ggml's k-quants, same float operations in the same order.
 * L receives levels already offset to be non-negative. The batched ones treat ngroups
 * consecutive groups of n <= 32 values (x, weights and L all packed group after group). */

/* make_qx_quants with rmse_type 1 per group: symmetric levels in [0, 2*nmax) for
 * x ~ (L - nmax) * scale, searching 18 nearby scales, weighted by qw (x^2 when NULL). */
void quant_make_qx(int ngroups, int n, int nmax, const float *x, const float *qw, int8_t *L, float *scales);
/* make_qkx2_quants (qkx3 false) or make_qkx3_quants (true) per group: affine levels in
 * [0, nmax] for x ~ L * scale - the_min, trying nstep + 1 scales from (nmax + rmin) / range
 * in rdelta steps, with weights (never NULL) and squared (or, use_mad, absolute) error. */
void quant_make_qkx(int ngroups, int n, int nmax, const float *x, const float *weights, uint8_t *L,
		    float *scales, float *the_min, float rmin, float rdelta, int nstep, bool use_mad, bool qkx3);
/* make_q3_quants with do_rmse per group: like make_qx, but refining the levels one element
 * at a time (weights x^2) instead of searching scales. */
void quant_make_q3(int ngroups, int n, int nmax, const float *x, int8_t *L, float *scales);
/* Non-negative levels in [0, nmax] for the non-negative x (sub-block scales and mins),
 * weighted by quant_weights. */
float quant_make_qp(int n, int nmax, const float *x, uint8_t *L, const float *quant_weights);

/* x rounded to the nearest integer, ties to even, for |x| < 2^22: ggml's float-add trick
 * (adding 1.5 * 2^23 leaves the rounded integer in the low mantissa bits). */
static inline int quant_nearest_int(float x)
{
	union { float f; int32_t i; } u;

	u.f = x + 12582912.0f;
	return (u.i & 0x007fffff) - 0x00400000;
}

/* (int)x as x86's cvttss2si computes it, which is what llama.cpp's (int8_t)/(uint8_t) casts
 * of floats compile to: truncation toward zero, and INT32_MIN for NaN and out-of-range x
 * (whose low byte is 0). In C such a cast is undefined, so the quantizers go through this.
 * Only degenerate blocks (denormal scales, 1/d overflowing to Inf) ever reach that case. */
static inline int32_t quant_trunc_i32(float x)
{
	if (!(x > -2147483648.0f && x < 2147483648.0f))
		return INT32_MIN;
	return (int32_t)x;
}

/* Stores x as little-endian fp16 at p (round to nearest even, as GGML_FP32_TO_FP16). */
static inline void quant_put_f16(uint8_t *p, float x)
{
	uint16_t h = half_from_f32(x);

	p[0] = (uint8_t)h;
	p[1] = (uint8_t)(h >> 8);
}

/* The float of the little-endian fp16 at p. */
static inline float quant_get_f16(const uint8_t *p)
{
	return half_to_f32((uint16_t)(p[0] | p[1] << 8));
}

#endif
