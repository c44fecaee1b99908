/* half.h - IEEE half (F16) and bfloat16 (BF16) conversions, round-to-nearest-even */
#ifndef QBAKE_HALF_H
#define QBAKE_HALF_H

#include <stddef.h>
#include <stdint.h>

/* F16 bits of x, rounded to nearest even; NaN stays NaN, overflow becomes Inf. */
uint16_t half_from_f32(float x);
/* The float an F16 bit pattern denotes (exact). */
float half_to_f32(uint16_t h);
/* BF16 bits of x, rounded to nearest even; NaN is kept quiet (as ggml does). */
uint16_t half_bf16_from_f32(float x);
/* The float a BF16 bit pattern denotes (exact). */
float half_bf16_to_f32(uint16_t h);

/* Row conversions of n values. */
void half_row_from_f32(const float *x, uint16_t *y, size_t n);
void half_row_to_f32(const uint16_t *x, float *y, size_t n);
void half_row_bf16_from_f32(const float *x, uint16_t *y, size_t n);
void half_row_bf16_to_f32(const uint16_t *x, float *y, size_t n);

#endif
