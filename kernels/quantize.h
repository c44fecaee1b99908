/* quantize.h - the streaming quantization pipeline: an unquantized GGUF in, one tier's GGUF out */
#ifndef QBAKE_QUANTIZE_H
#define QBAKE_QUANTIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "gguf.h"
#include "imatrix.h"
#include "tiers.h"

/* What to build. The caller owns everything it points to. */
typedef struct quantize_params {
	const tier_info *tier;
	tier_options opt;          /* has_imatrix is ignored: it follows imatrix */
	const imx_file *imatrix;   /* NULL for none */
	const char *imatrix_path;  /* where imatrix came from; only its base name is recorded */
	int threads;               /* quantizer threads (>= 1) */
} quantize_params;

/* One output tensor, in output order. */
typedef struct quantize_item {
	const gguf_tensor *in;     /* the input tensor (points into the input file) */
	uint32_t type;             /* the type chosen for it */
	uint64_t in_bytes;         /* bytes in the input */
	uint64_t out_bytes;        /* bytes in the output */
	const float *imatrix;      /* weights handed to the quantizer, or NULL */
	bool imatrix_missing;      /* an imatrix was given, this tensor's quantizer would use it,
	                              but it has no entry: quantized without (a warning) */
	bool imatrix_ignored;      /* token_embd entry of the wrong length, ignored as llama.cpp does */
} quantize_item;

/* Everything decided before a byte is written (what --dry-run prints). */
typedef struct quantize_plan {
	quantize_item *items;      /* in output order (llama-quantize's) */
	size_t n;
	gguf_meta meta;            /* the output's metadata */
	uint64_t in_bytes, out_bytes;
	uint64_t n_elements;       /* weights in the model (for bits per weight) */
	size_t fallbacks;          /* tensors whose row length forced another type */
	uint64_t max_elements;     /* largest tensor: the f32 buffer quantize_run needs */
	uint64_t max_out_bytes;    /* largest quantized tensor: its output buffer */
} quantize_plan;

/* Called by quantize_run after each tensor is written (i counts from 0). */
typedef void (*quantize_progress_fn)(void *ctx, const quantize_plan *p, size_t i);

/* Plans in's quantization: refuses quantized input tensors (no requantizing), checks the
 * imatrix (entries of the wrong length or with NaN/Inf are errors), chooses every type,
 * builds the output metadata. Returns 0, or -1 with e set; p is then empty. */
int quantize_plan_make(quantize_plan *p, const gguf_file *in, const quantize_params *qp, err *e);
/* Writes the planned file to out_path (temp file + rename; nothing is left at out_path on
 * error); in is the file p was planned from. Memory: one f32 buffer of the largest tensor plus
 * its output buffer; each input tensor's pages are released once it is written. progress may
 * be NULL. Returns 0, or -1 with e set (NaN/Inf weights name the tensor and row). */
int quantize_run(const quantize_plan *p, const gguf_file *in, const char *out_path, int threads,
		 quantize_progress_fn progress, void *ctx, err *e);
/* Releases the plan. */
void quantize_plan_free(quantize_plan *p);

#endif
