/* half.c - F16 and BF16 conversions */
#include "half.h"

#include <string.h>

static uint32_t bits(float x)
{
	uint32_t u;

	memcpy(&u, &x, 4);
	return u;
}

static float from_bits(uint32_t u)
{
	float x;

	memcpy(&x, &u, 4);
	return x;
}

uint16_t half_from_f32(float x)
{
	uint32_t u = bits(x), sign = (u >> 16) & 0x8000, mag = u & 0x7fffffff;
	uint32_t exp, mant, h, shift, rest, halfway;

	if (mag > 0x7f800000) /* NaN: keep it a (quiet) NaN */
		return (uint16_t)(sign | 0x7e00 | ((mag >> 13) & 0x3ff));
	if (mag >= 0x477ff000) /* rounds to >= 65520: Inf */
		return (uint16_t)(sign | 0x7c00);
	exp = mag >> 23;
	if (exp >= 113) { /* normal half: rebias 127 -> 15, round 13 bits away */
		h = ((exp - 112) << 10) | ((mag >> 13) & 0x3ff);
		rest = mag & 0x1fff;
		if (rest > 0x1000 || (rest == 0x1000 && (h & 1)))
			h++; /* a carry into the exponent is the right answer */
		return (uint16_t)(sign | h);
	}
	if (exp < 102) /* below half the smallest subnormal: zero */
		return (uint16_t)sign;
	/* subnormal half: value = mant * 2^-24 */
	mant = (mag & 0x7fffff) | 0x800000;
	shift = 126 - exp; /* 14..24 */
	h = mant >> shift;
	rest = mant & ((1u << shift) - 1);
	halfway = 1u << (shift - 1);
	if (rest > halfway || (rest == halfway && (h & 1)))
		h++;
	return (uint16_t)(sign | h);
}

float half_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;

	if (exp == 0x1f)
		return from_bits(sign | 0x7f800000 | (mant << 13));
	if (exp == 0) {
		float v = (float)mant * (1.0f / 16777216.0f); /* exact: mant * 2^-24 */

		return sign ? -v : v;
	}
	return from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t half_bf16_from_f32(float x)
{
	uint32_t u = bits(x);

	if ((u & 0x7fffffff) > 0x7f800000)
		return (uint16_t)((u >> 16) | 64);
	return (uint16_t)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

float half_bf16_to_f32(uint16_t h)
{
	return from_bits((uint32_t)h << 16);
}

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#include <stdatomic.h>

/* Whether the CPU has AVX and F16C and the OS saves YMM registers (cpuid once, cached). */
static int have_f16c(void)
{
	static _Atomic int known = -1;
	int k = atomic_load_explicit(&known, memory_order_relaxed);
	unsigned a, b, c, d, lo, hi;

	if (k >= 0)
		return k;
	k = 0;
	if (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) && (c & bit_AVX) && (c & bit_OSXSAVE)) {
		__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
		k = (lo & 6) == 6;
	}
	atomic_store_explicit(&known, k, memory_order_relaxed);
	return k;
}

/* F16C converts 8 floats at a time with the same round-to-nearest-even, subnormals, overflow
 * to Inf and quiet-NaN bits as half_from_f32; returns how many it did. */
__attribute__((target("avx,f16c"))) static size_t row_f16c(const float *x, uint16_t *y, size_t n)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8)
		_mm_storeu_si128((__m128i *)(void *)(y + i),
				 _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
	return i;
}
#endif

void half_row_from_f32(const float *x, uint16_t *y, size_t n)
{
	size_t i = 0;

#if defined(__x86_64__)
	if (have_f16c())
		i = row_f16c(x, y, n);
#endif
	for (; i < n; i++)
		y[i] = half_from_f32(x[i]);
}

void half_row_to_f32(const uint16_t *x, float *y, size_t n)
{
	for (size_t i = 0; i < n; i++)
		y[i] = half_to_f32(x[i]);
}

void half_row_bf16_from_f32(const float *x, uint16_t *y, size_t n)
{
	for (size_t i = 0; i < n; i++)
		y[i] = half_bf16_from_f32(x[i]);
}

void half_row_bf16_to_f32(const uint16_t *x, float *y, size_t n)
{
	for (size_t i = 0; i < n; i++)
		y[i] = half_bf16_to_f32(x[i]);
}
