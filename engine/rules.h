/* rules.h - the evidence behind qbake's refusals: held-out text overlap and requantized weights */
#ifndef QBAKE_RULES_H
#define QBAKE_RULES_H

#include <stddef.h>
#include <stdint.h>

/* How much of an evaluation text also appears in a calibration text. */
typedef struct rules_overlap {
	uint64_t shingles;  /* normalised 50-character shingles of the eval text */
	uint64_t shared;    /* of those, how many also occur in the calibration text */
	double fraction;    /* shared / shingles (0 when the eval text is too short) */
	size_t first_at;    /* byte offset in the eval text of the first shared passage */
	char first[160];    /* that passage (normalised, cut to fit), "" when none */
} rules_overlap;

/* Width of a shingle in normalised characters. */
enum { RULES_SHINGLE = 50 };

/* Measures the overlap of eval with calib: text is normalised (case folded, runs of
 * white space made one space) and cut into every 50-byte window. Returns 0, or -1 on
 * out of memory. */
int rules_text_overlap(const char *calib, size_t ncalib, const char *eval, size_t neval,
		       rules_overlap *out);

/* Evidence that a float tensor was quantized before: how many of its blocks sit on an
 * affine grid of 2^bits levels, up to F16/BF16 rounding. */
typedef struct rules_grid {
	uint64_t blocks;        /* blocks examined (a sample of large tensors) */
	uint64_t on_grid;       /* of those, blocks on a grid of at most 2^bits levels */
	uint64_t undecided;     /* constant blocks, which fit any grid and are not counted */
	int bits;               /* the smallest width (2, 3, 4, 5, 6 or 8) that most blocks fit */
	int block;              /* block length tried: 32, or 16 (K-quant sub-blocks) */
} rules_grid;

/* Examines up to max_blocks blocks of a row-major tensor (rows of n_per_row values,
 * already widened from F16/BF16; rel_tol is the storage type's relative rounding, e.g.
 * 2^-11 for F16, 2^-8 for BF16). Fills out with the best-fitting grid. */
void rules_grid_check(const float *x, int64_t nrows, int64_t n_per_row, double rel_tol,
		      uint64_t max_blocks, rules_grid *out);
/* True when the evidence says the tensor was quantized and widened again: at least
 * 90 % of the decided blocks on one grid. */
int rules_grid_suspicious(const rules_grid *g);

#endif
