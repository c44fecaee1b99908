/* quant.h - block quantization bit-compatible with llama.cpp, and dequantization */
#ifndef QBAKE_QUANT_H
#define QBAKE_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True when quant_rows can produce type (F32, F16, BF16 and the block types qbake writes). */
bool quant_can_quantize(uint32_t type);
/* True when quant_dequant_row can read type. */
bool quant_can_dequantize(uint32_t type);
/* True when type's quantizer uses an importance matrix if one is given. */
bool quant_uses_imatrix(uint32_t type);

/* Quantizes nrows rows of n_per_row floats from src into dst (rows packed back to back,
 * gguf_row_size(type, n_per_row) bytes each), with per-column importance weights
 * imatrix[n_per_row] or NULL. Same bytes as llama.cpp's ggml_quantize_chunk.
 * n_per_row must be a multiple of the type's block size. Returns bytes written. */
size_t quant_rows(uint32_t type, const float *src, void *dst, int64_t nrows,
		  int64_t n_per_row, const float *imatrix);
/* Same, split by rows across nthreads pthreads; identical bytes for any thread count. */
size_t quant_rows_mt(uint32_t type, const float *src, void *dst, int64_t nrows,
		     int64_t n_per_row, const float *imatrix, int nthreads);
/* Expands n values of type (n a multiple of its block size) from src into dst. */
void quant_dequant_row(uint32_t type, const void *src, float *dst, int64_t n);

#endif
