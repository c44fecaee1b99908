/* imatrix.h - importance matrices: llama-imatrix's GGUF format and its legacy .dat format */
#ifndef QBAKE_IMATRIX_H
#define QBAKE_IMATRIX_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* One matrix's activation statistics, as stored (so a writer can save them back). */
typedef struct imx_entry {
	char *name;       /* tensor name, e.g. "blk.0.attn_k.weight" */
	uint64_t n;       /* values in sum2 and weights: ne0 × n_mat */
	uint64_t n_mat;   /* matrices sharing the name (experts); counts has this many */
	float *sum2;      /* Σx² per input column, n values (GGUF in_sum2; legacy: the stored
	                     values, which llama-imatrix already scaled to mean × ncall) */
	float *counts;    /* activations seen per matrix (GGUF counts; legacy: ncall) */
	float *weights;   /* what llama-quantize hands the quantizer: sum2 / count per matrix
	                     (1 where a matrix saw nothing; legacy: sum2 / ncall); set by the loader */
} imx_entry;

/* A whole importance matrix. imx_load fills it; imx_free releases everything. */
typedef struct imx_file {
	imx_entry *e;          /* in file order */
	size_t n;
	char **datasets;       /* corpus names as recorded (imatrix.datasets; legacy: one) */
	size_t n_datasets;
	int64_t chunk_count;   /* imatrix.chunk_count (legacy: the trailer's last call); -1 unknown */
	int64_t chunk_size;    /* imatrix.chunk_size; 0 when unknown (legacy files do not say) */
	int legacy;            /* read from the .dat format */
} imx_file;

/* Reads path (GGUF imatrix or legacy .dat, told apart by the magic); returns 0, or -1 with
 * e naming the file, the byte offset where relevant and what is wrong. */
int imx_load(imx_file *f, const char *path, err *e);
/* The entry for tensor name, or NULL. */
const imx_entry *imx_find(const imx_file *f, const char *name);
/* Releases everything; f may be zeroed. */
void imx_free(imx_file *f);

#endif
