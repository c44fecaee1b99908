/* eval.c - perplexity of a model on a text, the way llama-perplexity measures it */
#include "eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Tokens evaluated per forward pass, in whole chunks: big enough that each weight is
 * dequantized once for many chunks, small enough that activations stay modest. */
#define BATCH_TOKENS 4096

double eval_logprob(const float *logits, int n_vocab, int32_t target)
{
	float mx = logits[0];
	for (int i = 1; i < n_vocab; i++)
		mx = logits[i] > mx ? logits[i] : mx;
	double sum = 0;
	for (int i = 0; i < n_vocab; i++)
		sum += exp((double)(logits[i] - mx));
	return (double)(logits[target] - mx) - log(sum);
}

int eval_perplexity(const model *m, const tok_vocab *v, const char *text, size_t len, int ctx, int max_chunks,
		    eval_progress_fn progress, void *pctx, eval_ppl *out, err *e)
{
	const model_hparams *hp = model_params(m);
	tok_ids ids = { 0 };
	int32_t *batch = NULL;
	float *logits = NULL;
	int rc = -1;

	memset(out, 0, sizeof *out);
	if (ctx < 4)
		return err_set(e, "context %d is too small", ctx);
	if (ctx > hp->n_ctx_train)
		return err_set(e, "context %d is larger than the model's training context %d", ctx, hp->n_ctx_train);
	if (tok_n_vocab(v) != hp->n_vocab)
		return err_set(e, "tokenizer has %d tokens, the model %d", tok_n_vocab(v), hp->n_vocab);
	if (tok_encode(v, text, len, true, false, &ids, e))
		return -1;
	out->n_tokens = ids.n;
	if (ids.n < 2 * (size_t)ctx) {
		err_set(e, "text has %zu tokens, fewer than 2 x context (%d)", ids.n, 2 * ctx);
		goto done;
	}
	int n_chunks = (int)(ids.n / (size_t)ctx);
	if (max_chunks > 0 && max_chunks < n_chunks)
		n_chunks = max_chunks;
	int first = ctx / 2, scored = ctx - 1 - first;
	int per = BATCH_TOKENS / ctx > 0 ? BATCH_TOKENS / ctx : 1;
	batch = malloc((size_t)per * ctx * sizeof *batch);
	logits = malloc((size_t)per * (size_t)(ctx - first) * (size_t)hp->n_vocab * sizeof *logits);
	if (!batch || !logits) {
		err_set(e, "out of memory");
		goto done;
	}
	double nll = 0, nll2 = 0;
	size_t count = 0;
	for (int c0 = 0; c0 < n_chunks; c0 += per) {
		int ns = n_chunks - c0 < per ? n_chunks - c0 : per;
		for (int s = 0; s < ns; s++) {
			memcpy(batch + (size_t)s * ctx, ids.ids + (size_t)(c0 + s) * ctx, (size_t)ctx * sizeof *batch);
			if (tok_adds_bos(v))
				batch[(size_t)s * ctx] = tok_bos(v);
		}
		model_batch b = { batch, ns, ctx, first, logits, NULL, NULL };
		if (model_eval(m, &b, e))
			goto done;
		for (int s = 0; s < ns; s++) {
			const int32_t *tok = ids.ids + (size_t)(c0 + s) * ctx;
			for (int j = 0; j < scored; j++) {
				const float *l = logits + ((size_t)s * (ctx - first) + (size_t)j) * hp->n_vocab;
				double lp = eval_logprob(l, hp->n_vocab, tok[first + j + 1]);
				nll -= lp;
				nll2 += lp * lp;
				count++;
			}
			if (progress)
				progress(pctx, c0 + s, exp(nll / (double)count));
		}
	}
	out->chunks = n_chunks;
	out->count = count;
	out->nll = nll / (double)count;
	out->ppl = exp(out->nll);
	double var = nll2 / (double)count - out->nll * out->nll;
	out->ppl_err = var > 0 && count > 1 ? sqrt(var / (double)(count - 1)) * out->ppl : 0;
	rc = 0;
done:
	tok_ids_free(&ids);
	free(batch);
	free(logits);
	return rc;
}

int eval_generate(const model *m, const tok_vocab *v, const char *prompt, size_t len, int n_predict, tok_ids *out,
		  err *e)
{
	const model_hparams *hp = model_params(m);
	tok_ids in = { 0 };
	model_cache *kv = NULL;
	float *logits = malloc((size_t)hp->n_vocab * sizeof *logits);
	int rc = -1;

	if (!logits) {
		err_set(e, "out of memory");
		goto done;
	}
	if (tok_encode(v, prompt, len, true, true, &in, e))
		goto done;
	if (in.n == 0) {
		err_set(e, "empty prompt and no BOS token");
		goto done;
	}
	int n_ctx = (int)in.n + (n_predict > 0 ? n_predict : 0);
	if (n_ctx > hp->n_ctx_train) {
		err_set(e, "prompt (%zu tokens) + %d new tokens exceed the model's context %d", in.n, n_predict,
			hp->n_ctx_train);
		goto done;
	}
	if (!(kv = model_cache_new(m, n_ctx, e)) || model_decode(m, kv, in.ids, (int)in.n, logits, e))
		goto done;
	for (int i = 0; i < n_predict; i++) {
		int32_t best = 0;
		for (int32_t j = 1; j < hp->n_vocab; j++)
			if (logits[j] > logits[best])
				best = j;
		if (tok_ids_push(out, best)) {
			err_set(e, "out of memory");
			goto done;
		}
		if (tok_is_eog(v, best) || i + 1 == n_predict)
			break;
		if (model_decode(m, kv, &best, 1, logits, e))
			goto done;
	}
	rc = 0;
done:
	tok_ids_free(&in);
	model_cache_free(kv);
	free(logits);
	return rc;
}
