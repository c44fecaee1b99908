/* imatrix.h - importance matrices: computing them the llama-imatrix way, llama-imatrix's GGUF
 * format and its legacy .dat format (reading and writing both) */
#ifndef QBAKE_IMATRIX_H
#define QBAKE_IMATRIX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "model.h"
#include "tokenizer.h"

/* Per-matrix activation statistics llama-imatrix stores as <name>.stats, in this order
 * (the file's imatrix.stats_schema). All are over the n columns of one entry, where
 * ms[j] = in_sum2[j] / count and mu[j] = in_sum[j] / count:
 *   sum_sq        Σ ms[j]
 *   mean          mean of mu
 *   elements      n
 *   std_deviation population standard deviation of mu
 *   skewness      population skewness of mu
 *   kurtosis      population excess kurtosis of mu
 *   gain          sqrt(sum_sq / sum_sq of the previous layer's same matrix)
 *   h_norm        100 × Shannon entropy (bits) of ms / Σ ms, divided by log2(n)
 *   l2_dist       Euclidean distance between mu and the previous layer's mu
 *   cossim        cosine similarity of mu and the previous layer's mu
 *   pearson       Pearson correlation of mu and the previous layer's mu
 *   covariance    population covariance of mu and the previous layer's mu
 * The last five are NaN for layer 0 (or when blk.<i-1> has no entry of that name and size). */
enum { IMX_N_STATS = 12 };
extern const char *const imx_stats_schema[IMX_N_STATS];

/* The GGUF key qbake records the baseline's digest under (64 lower-case hex digits). */
extern const char imx_baseline_key[];

/* Output formats of imx_save. */
typedef enum imx_format {
	IMX_GGUF = 0, /* llama-imatrix's GGUF format (general.type = imatrix) */
	IMX_DAT = 1   /* llama-imatrix's legacy .dat format */
} imx_format;

/* One matrix's activation statistics, as stored (so a writer can save them back). */
typedef struct imx_entry {
	char *name;       /* tensor name, e.g. "blk.0.attn_k.weight" */
	uint64_t n;       /* values in sum2 and weights: ne0 × n_mat */
	uint64_t n_mat;   /* matrices sharing the name (experts); counts has this many */
	float *sum2;      /* Σx² per input column, n values (GGUF in_sum2; legacy: the stored
	                     values, which llama-imatrix already scaled to mean × ncall) */
	float *counts;    /* activations seen per matrix (GGUF counts; legacy: ncall) */
	float *weights;   /* what llama-quantize hands the quantizer: sum2 / count per matrix
	                     (1 where a matrix saw nothing; legacy: sum2 / ncall); set by the loader
	                     and by imx_compute */
	float *sum;       /* Σx per input column, n values (GGUF in_sum); NULL when the file has
	                     none (legacy files, older llama.cpp) */
	float *stats;     /* IMX_N_STATS values in imx_stats_schema order (GGUF <name>.stats);
	                     NULL when absent or the file's stats_schema is not ours */
} imx_entry;

/* A whole importance matrix. imx_load or imx_compute fills it; imx_free releases everything. */
typedef struct imx_file {
	imx_entry *e;          /* in file order (imx_compute: sorted by name, as llama-imatrix) */
	size_t n;
	char **datasets;       /* corpus names as recorded (imatrix.datasets; legacy: one) */
	size_t n_datasets;
	int64_t chunk_count;   /* imatrix.chunk_count (legacy: the trailer's last call); -1 unknown */
	int64_t chunk_size;    /* imatrix.chunk_size; 0 when unknown (legacy files do not say) */
	int legacy;            /* read from the .dat format */
	bool has_baseline;     /* baseline_sha256 is set: read from the qbake.imatrix.baseline.sha256
	                          key, or given to imx_compute */
	uint8_t baseline_sha256[32]; /* SHA-256 of the model file the matrix was computed from */
} imx_file;

/* Reads path (GGUF imatrix or legacy .dat, told apart by the magic); returns 0, or -1 with
 * e naming the file, the byte offset where relevant and what is wrong. */
int imx_load(imx_file *f, const char *path, err *e);
/* The entry for tensor name, or NULL. */
const imx_entry *imx_find(const imx_file *f, const char *name);
/* Releases everything; f may be zeroed. */
void imx_free(imx_file *f);

/* Called by imx_compute after each chunk: chunk (1-based) of n_chunks, and the running
 * perplexity over the chunks so far (what llama-imatrix prints as "[chunk]ppl,"). */
typedef void (*imx_progress_fn)(void *ctx, int chunk, int n_chunks, double ppl);

/* What imx_compute does; filled by the caller. */
typedef struct imx_params {
	int ctx;                  /* tokens per chunk (llama-imatrix -c); 16 .. the model's context */
	int max_chunks;           /* at most this many chunks; 0: every whole chunk of the text */
	const char *const *datasets; /* corpus names to record in imatrix.datasets, n_datasets of
	                             them; any directory part is dropped (no host paths in artifacts) */
	size_t n_datasets;
	const uint8_t *baseline_sha256; /* 32 bytes: the model file's SHA-256, recorded as
	                             qbake.imatrix.baseline.sha256; NULL: not recorded */
	imx_progress_fn progress; /* optional */
	void *pctx;               /* passed to progress */
} imx_params;

/* The perplexity llama-imatrix prints beside the matrix: the second half of every chunk. */
typedef struct imx_ppl {
	double ppl;       /* exp(mean negative log-likelihood) */
	double ppl_err;   /* llama's "+/-": ppl × stddev(nll) / sqrt(count - 1) */
	size_t count;     /* scored tokens: chunks × (ctx - 1 - ctx/2) */
	size_t n_tokens;  /* tokens of the whole text, BOS included */
	int chunks;       /* chunks evaluated */
} imx_ppl;

/* llama-imatrix's method: text (UTF-8, len bytes) tokenized whole with BOS as v's metadata
 * says, cut into chunks of p->ctx tokens (at most p->max_chunks), BOS first in each, every
 * chunk run through m from an empty state; for every blk.* matrix multiplication, Σx² and Σx
 * per input column and the tokens seen are accumulated (output.weight is left out, as
 * llama-imatrix does by default). Fills out (entries sorted by name, in_sum2, counts,
 * in_sum, stats and weights, datasets, chunk count and size, baseline digest) and, when
 * ppl is not NULL, the perplexity of the same chunks. Returns 0, or -1 with e set and out
 * zeroed: text not UTF-8 (names the byte offset), fewer than 2 × ctx tokens (llama-imatrix's
 * own minimum, although one chunk would do), ctx outside 16 .. the model's context,
 * tokenizer and model disagreeing, out of memory. */
int imx_compute(imx_file *out, const model *m, const tok_vocab *v, const char *text, size_t len,
		const imx_params *p, imx_ppl *ppl, err *e);

/* Recomputes the stats of every entry that has sum (GGUF-style data) from sum2, sum and
 * counts; entries without sum keep stats NULL. Returns 0 or -1 (out of memory). */
int imx_compute_stats(imx_file *f, err *e);

/* Writes f to path atomically (nothing is left at path on error) in format fmt:
 * IMX_GGUF: the layout llama-imatrix writes (general.type, imatrix.datasets, chunk_count,
 *   chunk_size, imatrix.stats_schema when any entry has stats; per entry in f's order
 *   <name>.in_sum2, .counts, then .in_sum and .stats when present), plus
 *   qbake.imatrix.baseline.sha256 when f->has_baseline.
 * IMX_DAT: the legacy layout (entry count; per entry name, ncall = ceil(max count /
 *   chunk_size), value count, values = sum2 / count × ncall; then chunk_count and the last
 *   dataset name). in_sum, stats and the baseline digest have no place there and are lost.
 * Entries read from a legacy file are written back as they were stored. Returns 0 or -1. */
int imx_save(const imx_file *f, const char *path, imx_format fmt, err *e);

#endif
