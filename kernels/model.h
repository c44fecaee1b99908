/* model.h - Llama-family decoder forward pass over a GGUF (llama, qwen2), f32 with OpenBLAS */
#ifndef QBAKE_MODEL_H
#define QBAKE_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "gguf.h"

/* Hyper-parameters, read from the <arch>.* keys by model_load. */
typedef struct model_hparams {
	char arch[32];       /* general.architecture: "llama" or "qwen2" */
	int n_vocab;         /* rows of token_embd.weight */
	int n_embd;          /* embedding_length */
	int n_layer;         /* block_count */
	int n_head;          /* attention.head_count */
	int n_head_kv;       /* attention.head_count_kv (defaults to n_head) */
	int head_dim;        /* attention.key_length (defaults to n_embd / n_head) */
	int n_ff;            /* feed_forward_length */
	int n_rot;           /* rope.dimension_count (defaults to head_dim) */
	int n_ctx_train;     /* context_length */
	float eps;           /* attention.layer_norm_rms_epsilon */
	float rope_base;     /* rope.freq_base (defaults to 10000) */
	bool rope_neox;      /* rotate pairs (i, i + n_rot/2) instead of (2i, 2i+1): qwen2 */
	bool qkv_bias;       /* attn_q/k/v.bias present: qwen2 */
} model_hparams;

/* A model ready to run: hyper-parameters and tensor references into its gguf_file
 * (which must stay open while the model is used). Weights are dequantized per use,
 * one matrix at a time. Read-only after model_load. */
typedef struct model model;

/* Called before each matrix multiplication with the weight's name and its input
 * activations x[n_tokens][n_in] (row-major), e.g. to accumulate an importance matrix. */
typedef void (*model_matmul_fn)(void *ctx, const char *weight, const float *x, int n_tokens, int n_in);

/* One forward pass over n_seq independent sequences of n_tok tokens each, every
 * sequence starting from an empty state at position 0 (what perplexity and imatrix
 * chunks need). Filled by the caller. */
typedef struct model_batch {
	const int32_t *tokens;    /* n_seq * n_tok ids, sequence after sequence */
	int n_seq, n_tok;
	int logits_from;          /* first position of each sequence whose logits are wanted */
	float *logits;            /* out: [n_seq][n_tok - logits_from][n_vocab], or NULL for none */
	model_matmul_fn on_matmul; /* optional */
	void *ctx;                /* passed to on_matmul */
} model_batch;

/* The model in f (architecture llama or qwen2), or NULL with e set: unknown
 * architecture, missing tensor, wrong shape, a type qbake cannot dequantize.
 * n_threads (>= 1) is used for OpenBLAS and for the rest of the work. */
model *model_load(const gguf_file *f, int n_threads, err *e);
/* Frees m (NULL is fine); the gguf_file stays open. */
void model_free(model *m);
/* The hyper-parameters of m. */
const model_hparams *model_params(const model *m);

/* Runs b; returns 0, or -1 with e set (bad token id, out of memory). */
int model_eval(const model *m, const model_batch *b, err *e);

/* A key/value cache for incremental decoding of one sequence. */
typedef struct model_cache model_cache;

/* A cache for up to n_ctx positions, or NULL with e set. */
model_cache *model_cache_new(const model *m, int n_ctx, err *e);
/* Frees c (NULL is fine). */
void model_cache_free(model_cache *c);
/* Number of positions already in c. */
int model_cache_len(const model_cache *c);
/* Appends n tokens at the next positions of c and writes the logits of the last one to
 * logits[n_vocab]; returns 0, or -1 with e set (cache full, bad id, out of memory). */
int model_decode(const model *m, model_cache *c, const int32_t *tokens, int n, float *logits, err *e);

#endif
