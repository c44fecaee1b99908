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

void half_row_from_f32(const float *x, uint16_t *y, size_t n)
{
	for (size_t i = 0; i < n; i++)
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
