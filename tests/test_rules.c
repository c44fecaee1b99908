/* test_rules.c - overlap of held-out text and grid evidence of requantized weights */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "half.h"
#include "rules.h"

/* Deterministic pseudo-random numbers (xorshift), so failures reproduce. */
static uint64_t rng = 88172645463325252ull;

static double uniform(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (double)(rng >> 11) / 9007199254740992.0;
}

static double normal(void)
{
	double u = uniform() + 1e-12, v = uniform();

	return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

static float through_f16(double x)
{
	return half_to_f32(half_from_f32((float)x));
}

static float through_bf16(double x)
{
	return half_bf16_to_f32(half_bf16_from_f32((float)x));
}

static void test_overlap(void)
{
	const char *a = "The quick brown fox jumps over the lazy dog, and then it runs into the forest "
			"where nobody can see it any more. ";
	const char *b = "Completely different material about Python's asyncio event loop and its "
			"scheduling of coroutines, tasks and futures. ";
	char mixed[1024];
	rules_overlap o;

	CHECK(rules_text_overlap(a, strlen(a), a, strlen(a), &o) == 0, "runs");
	CHECK(o.shingles == strlen(a) - 1 - RULES_SHINGLE + 1 + 1 || o.fraction == 1.0,
	      "identical text overlaps fully: %g", o.fraction);
	CHECK(o.fraction == 1.0 && o.first_at == 0, "identical: fraction %g at %zu", o.fraction, o.first_at);

	CHECK(rules_text_overlap(a, strlen(a), b, strlen(b), &o) == 0 && o.shared == 0 && o.first[0] == 0,
	      "disjoint texts share %llu", (unsigned long long)o.shared);

	/* The calibration sentence again, re-cased and re-flowed, inside other text. */
	snprintf(mixed, sizeof mixed, "%sTHE QUICK  BROWN\n\tfox jumps over the lazy dog, and then it runs%s", b, b);
	CHECK(rules_text_overlap(a, strlen(a), mixed, strlen(mixed), &o) == 0, "runs");
	CHECK(o.shared > 0 && o.first_at == strlen(b), "passage found at %zu (want %zu)", o.first_at, strlen(b));
	CHECK(strncmp(o.first, "the quick brown fox", 19) == 0, "passage normalised: %s", o.first);
	/* "the quick brown fox jumps over the lazy dog, and then it runs" is 61 normalised
	 * bytes: 12 windows of 50, out of all windows of mixed. */
	CHECK(o.shared == 12, "shared windows %llu", (unsigned long long)o.shared);

	CHECK(rules_text_overlap(a, 10, a, 10, &o) == 0 && o.shingles == 0 && o.fraction == 0, "short text");
}

/* The shared corpora are meant to be disjoint: the rule must agree. */
static void test_fixture_corpora(void)
{
	char *cp = check_shared_path("fixtures/corpora/calib.txt"), *ep = check_shared_path("fixtures/corpora/eval.txt");
	size_t nc, ne;
	char *c = check_slurp(cp, &nc), *e = check_slurp(ep, &ne);
	rules_overlap o;

	CHECK(c && e, "corpora readable");
	if (c && e) {
		CHECK(rules_text_overlap(c, nc, e, ne, &o) == 0, "runs");
		printf("fixture calib/eval overlap: %llu of %llu windows (%.4f %%)\n", (unsigned long long)o.shared,
		       (unsigned long long)o.shingles, 100 * o.fraction);
		CHECK(o.shingles > 100000 && o.fraction < 0.01, "fixture corpora overlap %.4f", o.fraction);
		CHECK(rules_text_overlap(c, nc, c, nc, &o) == 0 && o.fraction == 1.0, "calib with itself");
	}
	free(c);
	free(e);
	free(cp);
	free(ep);
}

enum { ROWS = 64, COLS = 256 };

static void test_grid(void)
{
	static float x[ROWS * COLS];
	rules_grid g;

	/* Genuine weights: not on any grid, in F16 or BF16. */
	for (int i = 0; i < ROWS * COLS; i++)
		x[i] = through_f16(0.02 * normal());
	rules_grid_check(x, ROWS, COLS, 0x1p-11, 0, &g);
	CHECK(!rules_grid_suspicious(&g), "genuine F16: %llu of %llu on a %d-bit grid", (unsigned long long)g.on_grid,
	      (unsigned long long)g.blocks, g.bits);
	CHECK(g.blocks == ROWS * COLS / 32, "every block examined: %llu", (unsigned long long)g.blocks);
	for (int i = 0; i < ROWS * COLS; i++)
		x[i] = through_bf16(0.02 * normal());
	rules_grid_check(x, ROWS, COLS, 0x1p-8, 0, &g);
	CHECK(!rules_grid_suspicious(&g), "genuine BF16: %llu of %llu", (unsigned long long)g.on_grid,
	      (unsigned long long)g.blocks);

	/* Q4_0-like: 32-value blocks of d * (q - 8), widened through F16. */
	for (int b = 0; b < ROWS * COLS / 32; b++) {
		double d = 0.001 + 0.004 * uniform();

		for (int i = 0; i < 32; i++)
			x[b * 32 + i] = through_f16(d * ((int)(16 * uniform()) - 8));
	}
	rules_grid_check(x, ROWS, COLS, 0x1p-11, 0, &g);
	CHECK(rules_grid_suspicious(&g) && g.bits == 4 && g.block == 32, "Q4_0-like: %llu of %llu, %d bits, block %d",
	      (unsigned long long)g.on_grid, (unsigned long long)g.blocks, g.bits, g.block);
	/* The same through BF16 is still seen (4 bits is far above BF16's precision). */
	for (int i = 0; i < ROWS * COLS; i++)
		x[i] = through_bf16(x[i]);
	rules_grid_check(x, ROWS, COLS, 0x1p-8, 0, &g);
	CHECK(rules_grid_suspicious(&g) && g.bits == 4, "Q4_0-like in BF16: %llu of %llu, %d bits",
	      (unsigned long long)g.on_grid, (unsigned long long)g.blocks, g.bits);

	/* Q6_K-like: 16-value sub-blocks with their own scale, d * sc * (q - 32). */
	for (int b = 0; b < ROWS * COLS / 16; b++) {
		double d = (0.0001 + 0.0004 * uniform()) * (1 + (int)(100 * uniform()));

		for (int i = 0; i < 16; i++)
			x[b * 16 + i] = through_f16(d * ((int)(64 * uniform()) - 32));
	}
	rules_grid_check(x, ROWS, COLS, 0x1p-11, 0, &g);
	CHECK(rules_grid_suspicious(&g) && g.bits == 6 && g.block == 16, "Q6_K-like: %llu of %llu, %d bits, block %d",
	      (unsigned long long)g.on_grid, (unsigned long long)g.blocks, g.bits, g.block);

	/* Q8_0-like in F16 is still resolvable. */
	for (int b = 0; b < ROWS * COLS / 32; b++) {
		double d = 0.0001 + 0.0004 * uniform();

		for (int i = 0; i < 32; i++)
			x[b * 32 + i] = through_f16(d * ((int)(255 * uniform()) - 127));
	}
	rules_grid_check(x, ROWS, COLS, 0x1p-11, 0, &g);
	CHECK(rules_grid_suspicious(&g) && g.bits == 8, "Q8_0-like: %llu of %llu, %d bits", (unsigned long long)g.on_grid,
	      (unsigned long long)g.blocks, g.bits);

	/* Sampling looks at no more blocks than asked. */
	rules_grid_check(x, ROWS, COLS, 0x1p-11, 100, &g);
	CHECK(g.blocks == 100, "sampled %llu blocks", (unsigned long long)g.blocks);

	/* Constant blocks fit any grid: they are not evidence. */
	for (int i = 0; i < ROWS * COLS; i++)
		x[i] = 0.5f;
	rules_grid_check(x, ROWS, COLS, 0x1p-11, 0, &g);
	CHECK(g.undecided == g.blocks && !rules_grid_suspicious(&g), "constant blocks undecided");
}

int main(void)
{
	test_overlap();
	test_grid();
	test_fixture_corpora();
	return check_done();
}
