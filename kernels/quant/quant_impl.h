/* quant_impl.h - per-type quantizers shared by the files in kernels/quant only; kernels/quant.h is the public interface */
#ifndef QBAKE_QUANT_IMPL_H
#define QBAKE_QUANT_IMPL_H

#include <stdint.h>

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

/* x rounded to the nearest integer, ties to even, for |x| < 2^22: ggml's float-add trick
 * (adding 1.5 * 2^23 leaves the rounded integer in the low mantissa bits). */
static inline int quant_nearest_int(float x)
{
	union { float f; int32_t i; } u;

	u.f = x + 12582912.0f;
	return (u.i & 0x007fffff) - 0x00400000;
}

#endif
