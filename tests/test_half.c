/* test_half.c - F16/BF16 conversions against the compiler's own _Float16 and hand-made cases */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "half.h"

static uint32_t fbits(float x)
{
	uint32_t u;

	memcpy(&u, &x, 4);
	return u;
}

static float ffrom(uint32_t u)
{
	float x;

	memcpy(&x, &u, 4);
	return x;
}

int main(void)
{
	/* Every 7th float bit pattern (~600 M would be too many): F16 must equal the
	 * hardware/compiler conversion, which rounds to nearest even. */
	for (uint64_t u = 0; u <= 0xffffffffu; u += 4099) {
		float x = ffrom((uint32_t)u);
		_Float16 ref = (_Float16)x;
		uint16_t rb;

		memcpy(&rb, &ref, 2);
		if (isnan(x)) {
			CHECK((half_from_f32(x) & 0x7c00) == 0x7c00 && (half_from_f32(x) & 0x3ff), "NaN %08x", (unsigned)u);
			continue;
		}
		if (half_from_f32(x) != rb) {
			CHECK(0, "f16(%a) = %04x, want %04x", x, half_from_f32(x), rb);
			break;
		}
	}
	/* The row conversion (vectorised where the CPU allows) gives the scalar one's bits, NaNs
	 * included; blocks of 13 exercise both the vector part and the tail. */
	{
		float xs[13];
		uint16_t ys[13];
		uint64_t bad = 0;

		for (uint64_t u = 0; u <= 0xffffffffu; u += 13 * 4099) {
			for (int k = 0; k < 13; k++)
				xs[k] = ffrom((uint32_t)(u + (uint64_t)k * 4099));
			half_row_from_f32(xs, ys, 13);
			for (int k = 0; k < 13; k++)
				bad += ys[k] != half_from_f32(xs[k]);
		}
		CHECK(bad == 0, "%llu row conversions differ from half_from_f32", (unsigned long long)bad);
	}
	/* Every F16 pattern round-trips exactly. */
	for (uint32_t h = 0; h < 65536; h++) {
		float x = half_to_f32((uint16_t)h);

		if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff))
			continue;
		CHECK(half_from_f32(x) == h, "f16 %04x round trip gives %04x", h, half_from_f32(x));
	}
	/* Hand-computed cases: ties to even at the half ulp. */
	CHECK(half_from_f32(1.0f) == 0x3c00, "1.0");
	CHECK(half_from_f32(1.0f + 0x1p-11f) == 0x3c00, "1 + half ulp ties to even (down)");
	CHECK(half_from_f32(1.0f + 3 * 0x1p-11f) == 0x3c02, "1 + 3 half ulps ties to even (up)");
	CHECK(half_from_f32(65504.0f) == 0x7bff, "max half");
	CHECK(half_from_f32(65520.0f) == 0x7c00, "65520 overflows to Inf");
	CHECK(half_from_f32(0x1p-24f) == 0x0001, "smallest subnormal");
	CHECK(half_from_f32(0x1p-25f) == 0x0000, "half the smallest subnormal ties to zero");
	CHECK(half_to_f32(0xc000) == -2.0f, "-2");

	/* BF16: exact for the top 16 bits, ties to even below. */
	CHECK(half_bf16_from_f32(1.0f) == 0x3f80, "bf16 1.0");
	CHECK(half_bf16_from_f32(ffrom(0x3f808000)) == 0x3f80, "bf16 tie to even (down)");
	CHECK(half_bf16_from_f32(ffrom(0x3f818000)) == 0x3f82, "bf16 tie to even (up)");
	CHECK(half_bf16_from_f32(ffrom(0x3f808001)) == 0x3f81, "bf16 above the tie");
	CHECK(half_bf16_from_f32(ffrom(0x7fc00001)) == 0x7fc0, "bf16 NaN stays NaN");
	CHECK(half_bf16_from_f32(ffrom(0x7f800001)) == 0x7fc0, "bf16 signalling NaN becomes quiet");
	for (uint32_t h = 0; h < 65536; h++) {
		float x = half_bf16_to_f32((uint16_t)h);

		CHECK(fbits(x) == h << 16, "bf16 widen %04x", h);
		if (!isnan(x))
			CHECK(half_bf16_from_f32(x) == h, "bf16 %04x round trip", h);
	}
	return check_done();
}
