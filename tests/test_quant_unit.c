/* test_quant_unit.c - quantize/dequantize round trips, edge-case blocks and thread invariance per type */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gguf.h"
#include "half.h"
#include "quant.h"

/* Deterministic pseudo-random floats (xorshift), roughly N(0, 1) by summing uniforms. */
static uint64_t rng = 88172645463325252ull;

static float frand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (float)((rng >> 40) & 0xffffff) / 16777216.0f;
}

static float gauss(void)
{
	float s = 0;

	for (int i = 0; i < 4; i++)
		s += frand();
	return (s - 2.0f) * 1.7320508f;
}

/* The conversions: exact against half.h, element by element. */
static void check_plain(void)
{
	enum { N = 512 };
	float x[N], y[N];
	uint16_t h[N];

	for (int i = 0; i < N; i++)
		x[i] = gauss() * 100.0f;
	CHECK(quant_can_quantize(GGUF_TYPE_F32) && quant_can_quantize(GGUF_TYPE_F16) &&
	      quant_can_quantize(GGUF_TYPE_BF16), "plain types");
	CHECK(quant_rows(GGUF_TYPE_F32, x, y, 2, N / 2, NULL) == N * 4, "f32 bytes");
	CHECK(memcmp(x, y, sizeof x) == 0, "f32 copy");
	CHECK(quant_rows(GGUF_TYPE_F16, x, h, 4, N / 4, NULL) == N * 2, "f16 bytes");
	quant_dequant_row(GGUF_TYPE_F16, h, y, N);
	for (int i = 0; i < N; i++)
		CHECK(h[i] == half_from_f32(x[i]) && y[i] == half_to_f32(h[i]), "f16 %d", i);
	CHECK(quant_rows(GGUF_TYPE_BF16, x, h, 1, N, NULL) == N * 2, "bf16 bytes");
	quant_dequant_row(GGUF_TYPE_BF16, h, y, N);
	for (int i = 0; i < N; i++)
		CHECK(h[i] == half_bf16_from_f32(x[i]) && y[i] == half_bf16_to_f32(h[i]), "bf16 %d", i);
	CHECK(!quant_can_quantize(GGUF_TYPE_Q8_1) && !quant_can_quantize(GGUF_TYPE_COUNT), "unknown types refused");
	CHECK(quant_rows(GGUF_TYPE_Q8_1, x, y, 1, 32, NULL) == 0, "unknown type writes nothing");
}

int main(void)
{
	check_plain();
	return check_done();
}
