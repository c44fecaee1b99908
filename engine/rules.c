/* rules.c - held-out text overlap and requantized-weight evidence */
#include "rules.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- text overlap ---- */

/* Normalised text plus, for each normalised byte, where it came from. */
typedef struct normtext {
	char *s;
	size_t *from;
	size_t n;
} normtext;

static int is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int is_rule_char(unsigned char c)
{
	return c < 0x80 && !is_space(c) && !(c >= '0' && c <= '9') && !((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

/* Folds ASCII case and makes each run of white space one space, so reflowed or
 * re-indented copies of a passage still match; a run of one repeated punctuation
 * character becomes one character, so markup rules (-----, =====, +---+) that every
 * document of a corpus shares are not counted as shared text. */
static int normalise(const char *t, size_t n, normtext *out)
{
	size_t k = 0;
	int in_space = 0;

	out->s = malloc(n + 1);
	out->from = malloc((n + 1) * sizeof *out->from);
	if (!out->s || !out->from)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)t[i];

		if (is_space(c)) {
			if (in_space)
				continue;
			in_space = 1;
			c = ' ';
		} else if (is_rule_char(c) && k > 0 && (unsigned char)out->s[k - 1] == c) {
			continue;
		} else {
			in_space = 0;
			if (c >= 'A' && c <= 'Z')
				c = (unsigned char)(c - 'A' + 'a');
		}
		out->from[k] = i;
		out->s[k++] = (char)c;
	}
	out->s[k] = 0;
	out->n = k;
	return 0;
}

static void normtext_free(normtext *t)
{
	free(t->s);
	free(t->from);
}

enum { HASH_BASE = 1099511628211ull };

/* Polynomial hash of the window at p, and the factor that removes its first byte. */
static uint64_t window_hash(const char *p)
{
	uint64_t h = 0;

	for (int i = 0; i < RULES_SHINGLE; i++)
		h = h * HASH_BASE + (unsigned char)p[i];
	return h;
}

static uint64_t top_factor(void)
{
	uint64_t f = 1;

	for (int i = 0; i < RULES_SHINGLE - 1; i++)
		f *= HASH_BASE;
	return f;
}

static uint64_t roll(uint64_t h, uint64_t top, unsigned char out, unsigned char in)
{
	return (h - out * top) * HASH_BASE + in;
}

/* Open-addressing set of calibration windows: hash plus position (to confirm a match
 * byte for byte, so a hash collision never counts as overlap). */
typedef struct winset {
	uint64_t *hash;
	size_t *pos; /* SIZE_MAX = empty slot */
	size_t mask;
} winset;

static int winset_build(winset *w, const normtext *t)
{
	size_t n = t->n - RULES_SHINGLE + 1, cap = 16;
	uint64_t h, top = top_factor();

	while (cap < 2 * n)
		cap <<= 1;
	w->hash = malloc(cap * sizeof *w->hash);
	w->pos = malloc(cap * sizeof *w->pos);
	w->mask = cap - 1;
	if (!w->hash || !w->pos)
		return -1;
	memset(w->pos, 0xff, cap * sizeof *w->pos);
	h = window_hash(t->s);
	for (size_t i = 0; i < n; i++) {
		size_t slot;

		if (i)
			h = roll(h, top, (unsigned char)t->s[i - 1], (unsigned char)t->s[i + RULES_SHINGLE - 1]);
		for (slot = h & w->mask; w->pos[slot] != SIZE_MAX; slot = (slot + 1) & w->mask)
			if (w->hash[slot] == h && memcmp(t->s + w->pos[slot], t->s + i, RULES_SHINGLE) == 0)
				break;
		if (w->pos[slot] == SIZE_MAX) {
			w->hash[slot] = h;
			w->pos[slot] = i;
		}
	}
	return 0;
}

static int winset_has(const winset *w, const char *calib, uint64_t h, const char *p)
{
	for (size_t slot = h & w->mask; w->pos[slot] != SIZE_MAX; slot = (slot + 1) & w->mask)
		if (w->hash[slot] == h && memcmp(calib + w->pos[slot], p, RULES_SHINGLE) == 0)
			return 1;
	return 0;
}

int rules_text_overlap(const char *calib, size_t ncalib, const char *eval, size_t neval,
		       rules_overlap *out)
{
	normtext c = { 0 }, e = { 0 };
	winset w = { 0 };
	int rc = -1;

	memset(out, 0, sizeof *out);
	if (normalise(calib, ncalib, &c) < 0 || normalise(eval, neval, &e) < 0)
		goto done;
	rc = 0;
	if (c.n < RULES_SHINGLE || e.n < RULES_SHINGLE)
		goto done;
	if (winset_build(&w, &c) < 0) {
		rc = -1;
		goto done;
	}
	{
		uint64_t top = top_factor(), h = window_hash(e.s);
		size_t n = e.n - RULES_SHINGLE + 1;

		out->shingles = n;
		for (size_t i = 0; i < n; i++) {
			if (i)
				h = roll(h, top, (unsigned char)e.s[i - 1], (unsigned char)e.s[i + RULES_SHINGLE - 1]);
			if (!winset_has(&w, c.s, h, e.s + i))
				continue;
			if (out->shared++ == 0) {
				size_t len = e.n - i < sizeof out->first - 1 ? e.n - i : sizeof out->first - 1;

				out->first_at = e.from[i];
				memcpy(out->first, e.s + i, len);
				out->first[len] = 0;
			}
		}
		out->fraction = (double)out->shared / (double)n;
	}
done:
	free(w.hash);
	free(w.pos);
	normtext_free(&c);
	normtext_free(&e);
	return rc;
}

/* ---- grid evidence ---- */

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return (x > y) - (x < y);
}

/* Whether every value lies within tol of the grid lo + j * step. */
static int fits_grid(const float *v, int len, double lo, double step, double tol)
{
	for (int i = 0; i < len; i++) {
		double q = ((double)v[i] - lo) / step;

		if (fabs(q - nearbyint(q)) * step > tol)
			return 0;
	}
	return 1;
}

/* Levels of the coarsest affine grid the block fits (0: none, -1: constant block).
 * The smallest and largest values are grid points, so the step is span / n for a whole
 * n, and no larger than the smallest clear gap between distinct values. Each stored
 * value may be off by u (half an ulp of the storage type), so a value within 4u of the
 * grid fits, and steps under 12u prove nothing. */
static int block_levels(const float *x, int len, double rel_tol)
{
	float v[32];
	double lo, hi, span, u, gap = 0;
	int best = 0;

	memcpy(v, x, (size_t)len * sizeof *v);
	qsort(v, (size_t)len, sizeof *v, cmp_float);
	lo = v[0];
	hi = v[len - 1];
	if (!isfinite(lo) || !isfinite(hi))
		return 0;
	if (hi == lo)
		return -1;
	span = hi - lo;
	u = rel_tol * (fabs(lo) > fabs(hi) ? fabs(lo) : fabs(hi));
	for (int i = 1; i < len; i++) {
		double g = (double)v[i] - v[i - 1];

		if (g > 2 * u && (gap == 0 || g < gap))
			gap = g;
	}
	if (gap == 0)
		return 0;
	/* The step is at most the gap (measured to within 2u), so n starts at span / gap;
	 * the first n that fits is the coarsest grid. */
	for (long n = lround(floor(span / (gap + 2 * u))); n <= 255; n++) {
		if (n < 1)
			continue;
		if (span / n < 12 * u)
			break;
		if (fits_grid(v, len, lo, span / n, 4 * u)) {
			best = (int)n + 1;
			break;
		}
	}
	return best;
}

static int levels_to_bits(int levels)
{
	static const int widths[] = { 2, 3, 4, 5, 6, 8 };

	for (size_t i = 0; i < sizeof widths / sizeof *widths; i++)
		if (levels <= 1 << widths[i])
			return widths[i];
	return 0;
}

static void grid_pass(const float *x, int64_t nrows, int64_t n_per_row, int len, double rel_tol,
		      uint64_t max_blocks, rules_grid *g)
{
	uint64_t per_row = (uint64_t)(n_per_row / len), total = per_row * (uint64_t)nrows, n;
	uint64_t by_bits[9] = { 0 }, decided;

	memset(g, 0, sizeof *g);
	g->block = len;
	if (total == 0)
		return;
	n = max_blocks && total > max_blocks ? max_blocks : total;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t b = (uint64_t)((unsigned __int128)i * total / n);
		const float *p = x + (b / per_row) * (uint64_t)n_per_row + (b % per_row) * (uint64_t)len;
		int levels = block_levels(p, len, rel_tol), bits;

		g->blocks++;
		if (levels < 0) {
			g->undecided++;
			continue;
		}
		bits = levels ? levels_to_bits(levels) : 0;
		if (bits)
			by_bits[bits]++;
	}
	decided = g->blocks - g->undecided;
	for (int bits = 2; bits <= 8; bits++) {
		uint64_t cum = 0;

		if (bits == 7)
			continue;
		for (int b = 2; b <= bits; b++)
			cum += by_bits[b];
		g->bits = bits;
		g->on_grid = cum;
		if (decided && cum * 10 >= decided * 9)
			break;
	}
}

void rules_grid_check(const float *x, int64_t nrows, int64_t n_per_row, double rel_tol,
		      uint64_t max_blocks, rules_grid *out)
{
	rules_grid g32, g16;

	grid_pass(x, nrows, n_per_row, 32, rel_tol, max_blocks, &g32);
	grid_pass(x, nrows, n_per_row, 16, rel_tol, max_blocks, &g16);
	/* 32-value blocks are stronger evidence; 16 catches K-quants with 16-value scales. */
	if (rules_grid_suspicious(&g32) || !rules_grid_suspicious(&g16))
		*out = g32;
	else
		*out = g16;
}

int rules_grid_suspicious(const rules_grid *g)
{
	uint64_t decided = g->blocks - g->undecided;

	return decided > 0 && g->on_grid * 10 >= decided * 9;
}
