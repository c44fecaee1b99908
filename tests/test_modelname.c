/* test_modelname.c - model ids split as gguf-py's metadata heuristics split them (values read off
 * published GGUFs and the golden file) */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "modelname.h"

static void expect(const char *id, long long params, const char *name, const char *org, const char *base,
		   const char *fine, const char *ver, const char *size)
{
	modelname mn;
#define SAME(a, b) ((a) == NULL ? (b) == NULL : (b) != NULL && !strcmp((a), (b)))

	CHECK(modelname_parse(&mn, id, params) == 0, "%s", id);
	CHECK(SAME(name, mn.name), "%s: name %s", id, mn.name ? mn.name : "(none)");
	CHECK(SAME(org, mn.organization), "%s: organization %s", id, mn.organization ? mn.organization : "(none)");
	CHECK(SAME(base, mn.basename), "%s: basename %s", id, mn.basename ? mn.basename : "(none)");
	CHECK(SAME(fine, mn.finetune), "%s: finetune %s", id, mn.finetune ? mn.finetune : "(none)");
	CHECK(SAME(ver, mn.version), "%s: version %s", id, mn.version ? mn.version : "(none)");
	CHECK(SAME(size, mn.size_label), "%s: size %s", id, mn.size_label ? mn.size_label : "(none)");
	modelname_free(&mn);
}

int main(void)
{
	char l[32];

	/* the golden conversion of folder pydoc-8m */
	expect("pydoc-8m", 8392960, "Pydoc 8m", NULL, "pydoc", NULL, NULL, "8M");
	expect("HuggingFaceTB/SmolLM2-135M-Instruct", 134515008, "SmolLM2 135M Instruct", "HuggingFaceTB", "SmolLM2",
	       "Instruct", NULL, "135M");
	expect("Qwen/Qwen2.5-0.5B-Instruct", 494032768, "Qwen2.5 0.5B Instruct", "Qwen", "Qwen2.5", "Instruct", NULL,
	       "0.5B");
	expect("meta-llama/Llama-3.2-3B-Instruct", 3212749824LL, "Llama 3.2 3B Instruct", "Meta Llama", "Llama-3.2",
	       "Instruct", NULL, "3B");
	expect("mistralai/Mistral-7B-Instruct-v0.3", 7248023552LL, "Mistral 7B Instruct v0.3", "Mistralai", "Mistral",
	       "Instruct", "v0.3", "7B");
	/* a size far from the parameter count is a context length, lower-cased, part of the finetune */
	expect("tiny-32k", 8392960, "Tiny 32k", NULL, "tiny", "32k", NULL, NULL);
	/* ambiguous ids name the model and nothing else */
	expect("model", 8392960, "Model", NULL, NULL, NULL, NULL, NULL);
	expect("My Model", 1, "My Model", NULL, NULL, NULL, NULL, NULL);
	modelname_size_label(8392960, l);
	CHECK(!strcmp(l, "8.4M"), "%s", l);
	modelname_size_label(134515008, l);
	CHECK(!strcmp(l, "135M"), "%s", l);
	modelname_size_label(494032768, l);
	CHECK(!strcmp(l, "494M"), "%s", l);
	modelname_size_label(1543714304, l);
	CHECK(!strcmp(l, "1.5B"), "%s", l);
	modelname_size_label(950000, l);
	CHECK(!strcmp(l, "950K"), "%s", l);
	return check_done();
}
