/* eval.h - perplexity of a model on a text, the way llama-perplexity measures it */
#ifndef QBAKE_EVAL_H
#define QBAKE_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
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

/* Greedy continuation: tokenizes prompt (with BOS, special tokens parsed, as
 * llama-completion does), then appends to out up to n_predict argmax tokens, stopping
 * after an end-of-generation token. Returns 0, or -1 with e set. */
int eval_generate(const model *m, const tok_vocab *v, const char *prompt, size_t len, int n_predict, tok_ids *out,
		  err *e);

/* log p(target) under logits[n_vocab] (log-softmax, sums in double). */
double eval_logprob(const float *logits, int n_vocab, int32_t target);

#endif
