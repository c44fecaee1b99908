/* eval.h - perplexity of a model on a text, the way llama-perplexity measures it */
#ifndef QBAKE_EVAL_H
#define QBAKE_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "gguf.h"
#include "model.h"
#include "tokenizer.h"

/* The outcome of eval_perplexity. */
typedef struct eval_ppl {
	double ppl;      /* exp(mean negative log-likelihood) */
	double ppl_err;  /* llama-perplexity's +/- figure: ppl * stddev(nll) / sqrt(count - 1) */
	double nll;      /* mean negative log-likelihood */
	size_t count;    /* scored tokens: chunks * (ctx - 1 - ctx/2) */
	int chunks;      /* chunks evaluated */
	size_t n_tokens; /* tokens in the whole text (with BOS) */
} eval_ppl;

/* Called after each chunk with its index (0-based) and the running perplexity. */
typedef void (*eval_progress_fn)(void *ctx, int chunk, double ppl);

/* Tokenizes text with BOS, cuts it into chunks of ctx tokens (at most max_chunks when
 * > 0), puts BOS first in each chunk, runs each from an empty state and scores the
 * predictions of the second half (positions ctx/2 .. ctx-2 predicting the next token).
 * Returns 0, or -1 with e set (text shorter than 2 * ctx tokens, ctx above the model's
 * training context, model errors). */
int eval_perplexity(const model *m, const tok_vocab *v, const char *text, size_t len, int ctx, int max_chunks,
		    eval_progress_fn progress, void *pctx, eval_ppl *out, err *e);

/* How far a model's predictions are from a baseline's on the same chunks
 * (llama-perplexity --kl-divergence). Percentile arrays follow eval_kld_pcts and
 * eval_dp_pcts; Δp figures are fractions (x 100 for %). */
typedef struct eval_cmp {
	eval_ppl base, test;       /* perplexities of the baseline and of the model */
	double ln_ratio, ln_ratio_err; /* mean ln(PPL(test)/PPL(base)) per token, with its error */
	double kld, kld_err;       /* mean KL-divergence(base || test) */
	double kld_pct[11];
	double dp, dp_err;         /* mean p_test(correct) - p_base(correct) */
	double dp_rms, dp_rms_err;
	double dp_pct[13];
	double same_top, same_top_err; /* fraction of tokens where both argmaxes agree */
	size_t count;              /* tokens compared */
} eval_cmp;

/* The percentiles reported for KLD (100 = maximum, 0 = minimum) and for Δp. */
extern const double eval_kld_pcts[11];
extern const double eval_dp_pcts[13];

/* Runs base and m over the same chunks (as eval_perplexity) and compares their
 * next-token distributions on every scored position. Both must share the vocabulary v.
 * Returns 0, or -1 with e set. */
int eval_compare(const model *base, const model *m, const tok_vocab *v, const char *text, size_t len, int ctx,
		 int max_chunks, eval_progress_fn progress, void *pctx, eval_cmp *out, err *e);

/* Runs the baseline m over the chunks eval_perplexity uses and saves, for every scored
 * position, its log-probabilities (16 bits each) and the target's exact NLL to path
 * (atomically): what eval_compare_saved needs instead of running the baseline again.
 * out receives the baseline's perplexity. Returns 0, or -1 with e set. */
int eval_base_save(const model *m, const tok_vocab *v, const char *text, size_t len, int ctx, int max_chunks,
		   const char *path, eval_ppl *out, err *e);
/* eval_compare with the baseline read from a file eval_base_save wrote for the same text,
 * ctx and chunks. Returns 0, or -1 with e set (another text or shape, a damaged file). */
int eval_compare_saved(const model *m, const tok_vocab *v, const char *text, size_t len, int ctx, int max_chunks,
		       const char *base_path, eval_progress_fn progress, void *pctx, eval_cmp *out, err *e);

/* Greedy continuation: tokenizes prompt (with BOS, special tokens parsed, as
 * llama-completion does), then appends to out up to n_predict argmax tokens, stopping
 * after an end-of-generation token. Returns 0, or -1 with e set. */
int eval_generate(const model *m, const tok_vocab *v, const char *prompt, size_t len, int n_predict, tok_ids *out,
		  err *e);

/* Activation statistics of one weight matrix, accumulated over every token. */
typedef struct eval_imx_entry {
	char *name;     /* the weight, e.g. "blk.0.attn_q.weight" (owned) */
	int n_in;       /* its input columns */
	double *sum2;   /* Σx² per input column */
	double *sum;    /* Σx per input column */
	int64_t count;  /* tokens seen */
} eval_imx_entry;

/* An importance matrix as llama-imatrix computes it; free with eval_imx_free. */
typedef struct eval_imx {
	eval_imx_entry *e; /* sorted by name once eval_imatrix returns */
	size_t n, cap;
	int chunks;        /* chunks evaluated */
	int chunk_size;    /* ctx */
	eval_ppl ppl;      /* perplexity over the same chunks (second halves), as llama-imatrix prints */
} eval_imx;

/* llama-imatrix's method: the text tokenized with BOS, chunks of ctx tokens (at most
 * max_chunks when > 0) with BOS first, each from an empty state; Σx² (and Σx) per input
 * column of every blk.* matrix multiplication, over all tokens. Returns 0, or -1 with e set. */
int eval_imatrix(const model *m, const tok_vocab *v, const char *text, size_t len, int ctx, int max_chunks,
		 eval_progress_fn progress, void *pctx, eval_imx *out, err *e);
/* Writes im in llama.cpp's GGUF imatrix format (general.type = imatrix, imatrix.datasets,
 * imatrix.chunk_count, imatrix.chunk_size, <name>.in_sum2 / .counts / .in_sum) plus the
 * extra string keys in extra[0..n_extra) as key/value pairs; atomically. Returns 0 or -1. */
int eval_imx_save_gguf(const eval_imx *im, const char *path, const char *const *datasets, size_t n_datasets,
		       const char *const *extra, size_t n_extra, err *e);
/* Writes im in llama-imatrix's legacy .dat format (values = Σx² / tokens x chunks,
 * ncall = chunks, then the chunk count and the dataset name); atomically. Returns 0 or -1. */
int eval_imx_save_dat(const eval_imx *im, const char *path, const char *dataset, err *e);
/* Frees everything in im. */
void eval_imx_free(eval_imx *im);

/* log p(target) under logits[n_vocab] (log-softmax, sums in double). */
double eval_logprob(const float *logits, int n_vocab, int32_t target);

#endif
