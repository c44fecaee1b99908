/* test_eval_saved.c - KLD against a saved baseline agrees with llama-perplexity (quality.tsv) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "eval.h"
#include "gguf.h"
#include "model.h"
#include "tokenizer.h"

typedef struct opened {
	gguf_file f;
	model *m;
	tok_vocab *v;
} opened;

static int open_model(opened *o, const char *rel)
{
	char *path = check_shared_path(rel);
	err e = { 0 };
	int rc = gguf_open(&o->f, path, &e);

	if (rc == 0 && (!(o->v = tok_load(&o->f.meta, &e)) || !(o->m = model_load(&o->f, 2, &e))))
		rc = -1;
	CHECK(rc == 0, "%s: %s", rel, e.msg);
	free(path);
	return rc;
}

static void close_model(opened *o)
{
	model_free(o->m);
	tok_free(o->v);
	gguf_close(&o->f);
}

/* Relative difference of a from b. */
static double rel(double a, double b)
{
	return fabs(a - b) / fabs(b);
}

int main(void)
{
	char *text_path = check_shared_path("fixtures/corpora/eval.txt"), base_path[1024];
	size_t len;
	char *text = check_slurp(text_path, &len);
	opened base, q4, q8;
	eval_ppl bp;
	eval_cmp c;
	err e = { 0 };

	snprintf(base_path, sizeof base_path, "%s/base.qblp", check_tmpdir());
	if (!text || open_model(&base, "golden/pydoc-8m/pydoc-8m-F16.gguf") < 0 ||
	    open_model(&q4, "golden/pydoc-8m/quant/pydoc-8m-Q4_K_M-imat.gguf") < 0 ||
	    open_model(&q8, "golden/pydoc-8m/quant/pydoc-8m-Q8_0.gguf") < 0)
		return check_done() ? 1 : 1;

	/* quality.tsv: F16 102.0632; Q4_K_M-imat 102.286588, KLD 0.001300, same top 96.863 %;
	 * Q8_0 102.049738, KLD 0.000049, same top 99.274 %. */
	CHECK(eval_base_save(base.m, base.v, text, len, 256, 64, base_path, &bp, &e) == 0, "%s", e.msg);
	CHECK(rel(bp.ppl, 102.0632) < 0.005, "baseline PPL %.4f", bp.ppl);
	CHECK(bp.count == 64 * 127, "scored tokens %zu", bp.count);

	CHECK(eval_compare_saved(q4.m, q4.v, text, len, 256, 64, base_path, NULL, NULL, &c, &e) == 0, "%s", e.msg);
	printf("Q4_K_M-imat: PPL %.4f, KLD %.6f, same top %.3f %%\n", c.test.ppl, c.kld, 100 * c.same_top);
	CHECK(rel(c.test.ppl, 102.286588) < 0.005, "Q4_K_M-imat PPL %.4f", c.test.ppl);
	CHECK(rel(c.kld, 0.001300) < 0.05 || fabs(c.kld - 0.001300) < 0.0005, "Q4_K_M-imat KLD %.6f", c.kld);
	CHECK(fabs(100 * c.same_top - 96.863) < 0.5, "Q4_K_M-imat same top %.3f", 100 * c.same_top);
	CHECK(rel(c.base.ppl, bp.ppl) < 1e-3, "baseline PPL read back %.4f vs %.4f", c.base.ppl, bp.ppl);

	CHECK(eval_compare_saved(q8.m, q8.v, text, len, 256, 64, base_path, NULL, NULL, &c, &e) == 0, "%s", e.msg);
	printf("Q8_0: PPL %.4f, KLD %.6f, same top %.3f %%\n", c.test.ppl, c.kld, 100 * c.same_top);
	CHECK(rel(c.test.ppl, 102.049738) < 0.005, "Q8_0 PPL %.4f", c.test.ppl);
	CHECK(rel(c.kld, 0.000049) < 0.05 || fabs(c.kld - 0.000049) < 0.0005, "Q8_0 KLD %.6f", c.kld);
	CHECK(fabs(100 * c.same_top - 99.274) < 0.5, "Q8_0 same top %.3f", 100 * c.same_top);

	/* A saved baseline of another shape is refused, naming the file. */
	err_clear(&e);
	CHECK(eval_compare_saved(q8.m, q8.v, text, len, 128, 64, base_path, NULL, NULL, &c, &e) < 0 &&
	      strstr(e.msg, "base.qblp") && strstr(e.msg, "chunks"), "other shape: %s", e.msg);
	err_clear(&e);
	CHECK(eval_compare_saved(q8.m, q8.v, text, len, 256, 64, text_path, NULL, NULL, &c, &e) < 0 &&
	      strstr(e.msg, "not a qbake baseline"), "not a baseline file: %s", e.msg);

	close_model(&base);
	close_model(&q4);
	close_model(&q8);
	free(text);
	free(text_path);
	return check_done();
}
