/* test_convert_bpe.c - a GPT-2 style BPE checkpoint (tokenizer.json, no tokenizer.model) converts with the
 * vocabulary, merges, pre-tokenizer and special tokens convert_hf_to_gguf.py would write */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "check.h"
#include "convert.h"
#include "gguf.h"

#define LLAMA3_SPLIT "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static const char *tmp, *fixture;

/* GPT-2's printable stand-in for byte b (the byte-level alphabet). */
static void byte_char(int b, char out[4])
{
	int cp = b;

	if (!((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff))) {
		int n = 0;

		for (int x = 0; x < b; x++)
			if (!((x >= '!' && x <= '~') || (x >= 0xa1 && x <= 0xac) || (x >= 0xae && x <= 0xff)))
				n++;
		cp = 256 + n;
	}
	if (cp < 0x80) {
		out[0] = (char)cp, out[1] = 0;
	} else {
		out[0] = (char)(0xc0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3f)), out[2] = 0;
	}
}

/* Writes dir/tokenizer.json; merges_as_pairs picks the transformers >= 4.45 merges format. */
static void write_tokenizer(const char *dir, json_t *pre, int extra_id)
{
	json_t *vocab = json_object(), *tj;
	char path[4096], c[4];

	for (int b = 0; b < 256; b++) {
		byte_char(b, c);
		json_object_set_new(vocab, c, json_integer(b));
	}
	json_object_set_new(vocab, "\xc4\xa0t", json_integer(256)); /* "Ġt" */
	json_object_set_new(vocab, "he", json_integer(257));
	json_object_set_new(vocab, "a\xc4\xa0" "bc", json_integer(258));
	tj = json_pack("{s:s, s:[{s:i,s:s,s:b,s:b},{s:i,s:s,s:b,s:b},{s:i,s:s,s:b,s:b}], s:n, s:o,"
		       " s:{s:s,s:[{s:s},{s:s,s:[{s:{s:s}},{s:{s:s}}],s:[{s:{s:s}},{s:{s:s}},{s:{s:s}},{s:{s:s}}]}]},"
		       " s:{s:s}, s:{s:s,s:b,s:b,s:o,s:[[s,s],[s,s],[s,s]]}}",
		       "version", "1.0",
		       "added_tokens",
		       "id", 4000, "content", "<|begin_of_text|>", "special", 1, "normalized", 0,
		       "id", 4001, "content", "<|end_of_text|>", "special", 1, "normalized", 0,
		       "id", extra_id, "content", "my\xe2\x96\x81word", "special", 0, "normalized", 0,
		       "normalizer",
		       "pre_tokenizer", pre,
		       "post_processor", "type", "Sequence", "processors", "type", "ByteLevel",
		       "type", "TemplateProcessing",
		       "single", "SpecialToken", "id", "<|begin_of_text|>", "Sequence", "id", "A",
		       "pair", "SpecialToken", "id", "<|begin_of_text|>", "Sequence", "id", "A",
		       "SpecialToken", "id", "<|begin_of_text|>", "Sequence", "id", "B",
		       "decoder", "type", "ByteLevel",
		       "model", "type", "BPE", "byte_fallback", 0, "ignore_merges", 1, "vocab", vocab,
		       "merges", "\xc4\xa0", "t", "h", "e", "a b", "c");
	CHECK(tj != NULL, "json_pack");
	snprintf(path, sizeof path, "%s/tokenizer.json", dir);
	json_dump_file(tj, path, JSON_INDENT(1));
	json_decref(tj);
}

static json_t *llama3_pre(void)
{
	return json_pack("{s:s,s:[{s:s,s:{s:s},s:s,s:b},{s:s,s:b,s:b,s:b}]}", "type", "Sequence", "pretokenizers",
			 "type", "Split", "pattern", "Regex", LLAMA3_SPLIT, "behavior", "Isolated", "invert", 0,
			 "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 0);
}

static void make_dir(const char *dir)
{
	char path[4096];
	FILE *f;

	CHECK(check_system("mkdir -p '%s' && cp '%s/config.json' '%s/' && ln -s '%s/model.safetensors' '%s/'", dir,
			   fixture, dir, fixture, dir) == 0, "make %s", dir);
	snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
	f = fopen(path, "w");
	if (f) {
		fputs("{\"bos_token\": \"<|begin_of_text|>\", \"eos_token\": \"<|end_of_text|>\",\n"
		      " \"add_prefix_space\": false, \"chat_template\": \"{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}\"}\n",
		      f);
		fclose(f);
	}
}

static const char *str_at(const gguf_value *v, uint64_t i)
{
	return ((const gguf_str *)v->arr)[i].ptr;
}

static void test_ok(void)
{
	char dir[2048], out[4096], log[4096], *text;
	gguf_file g;
	err e = { 0 };
	convert_opts o = { CONVERT_BF16, NULL, NULL, NULL };
	static const char *const tail[] = {
		"tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
		"tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
		"tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_sep_token", "tokenizer.chat_template",
		"tokenizer.ggml.add_space_prefix",
	};

	snprintf(dir, sizeof dir, "%s/bpe", tmp);
	make_dir(dir);
	write_tokenizer(dir, llama3_pre(), 4002);
	snprintf(out, sizeof out, "%s/bpe.gguf", tmp);
	CHECK(convert_run(dir, out, &o, NULL, &e) == 0, "%s", e.msg);
	if (gguf_open(&g, out, &e)) {
		CHECK(0, "%s", e.msg);
		return;
	}
	/* The tokenizer keys come last, in the reference's order, and nothing else follows. */
	long first = gguf_meta_index(&g.meta, "tokenizer.ggml.model");
	size_t nt = sizeof tail / sizeof tail[0];

	CHECK(first >= 0 && (size_t)first + nt == g.meta.n, "tokenizer keys %ld..%zu", first, g.meta.n);
	for (size_t i = 0; first >= 0 && i < nt && (size_t)first + i < g.meta.n; i++)
		CHECK(!strcmp(g.meta.kv[first + i].key, tail[i]), "key %zu is %s, want %s", i,
		      g.meta.kv[first + i].key, tail[i]);
	CHECK(!strcmp(gguf_meta_get_str(&g.meta, "tokenizer.ggml.model"), "gpt2"), "model");
	CHECK(!strcmp(gguf_meta_get_str(&g.meta, "tokenizer.ggml.pre"), "llama-bpe"), "pre");
	CHECK(!gguf_meta_find(&g.meta, "tokenizer.ggml.scores"), "a BPE vocabulary has no scores");

	const gguf_value *tok = gguf_meta_get_arr(&g.meta, "tokenizer.ggml.tokens", GGUF_STRING);
	const gguf_value *ty = gguf_meta_get_arr(&g.meta, "tokenizer.ggml.token_type", GGUF_I32);
	const gguf_value *mg = gguf_meta_get_arr(&g.meta, "tokenizer.ggml.merges", GGUF_STRING);

	CHECK(tok && tok->n == 4096 && ty && ty->n == 4096, "4096 tokens (config vocab_size)");
	if (tok && ty && tok->n == 4096 && ty->n == 4096) {
		const int32_t *t = ty->arr;

		CHECK(!strcmp(str_at(tok, 0), "\xc4\x80") && t[0] == 1, "token 0 %s", str_at(tok, 0));
		CHECK(!strcmp(str_at(tok, 33), "!") && t[33] == 1, "token 33 %s", str_at(tok, 33));
		CHECK(!strcmp(str_at(tok, 32), "\xc4\xa0") && t[32] == 1, "token 32 (space) %s", str_at(tok, 32));
		CHECK(!strcmp(str_at(tok, 256), "\xc4\xa0t"), "token 256");
		CHECK(!strcmp(str_at(tok, 259), "[PAD259]") && t[259] == 5, "unused id padded");
		CHECK(!strcmp(str_at(tok, 4000), "<|begin_of_text|>") && t[4000] == 3, "special added token CONTROL");
		CHECK(!strcmp(str_at(tok, 4002), "my word") && t[4002] == 4, "user token %s type %d",
		      str_at(tok, 4002), t[4002]);
		CHECK(!strcmp(str_at(tok, 4095), "[PAD4095]"), "last");
	}
	CHECK(mg && mg->n == 3, "3 merges");
	if (mg && mg->n == 3) {
		CHECK(!strcmp(str_at(mg, 0), "\xc4\xa0 t"), "merge 0 %s", str_at(mg, 0));
		CHECK(!strcmp(str_at(mg, 1), "h e"), "merge 1");
		CHECK(!strcmp(str_at(mg, 2), "a\xc4\xa0" "b c"), "a space inside a part is written as U+0120: %s",
		      str_at(mg, 2));
	}
	uint64_t u;
	bool b;

	CHECK(gguf_meta_get_u64(&g.meta, "tokenizer.ggml.bos_token_id", &u) == 0 && u == 4000,
	      "bos from tokenizer_config beats config.json's 1");
	CHECK(gguf_meta_get_u64(&g.meta, "tokenizer.ggml.eos_token_id", &u) == 0 && u == 4001, "eos");
	CHECK(gguf_meta_get_bool(&g.meta, "tokenizer.ggml.add_bos_token", &b) == 0 && b, "template adds BOS");
	CHECK(gguf_meta_get_bool(&g.meta, "tokenizer.ggml.add_sep_token", &b) == 0 && !b, "no SEP");
	CHECK(gguf_meta_get_bool(&g.meta, "tokenizer.ggml.add_space_prefix", &b) == 0 && !b, "add_space_prefix");
	CHECK(gguf_meta_get_str(&g.meta, "tokenizer.chat_template") &&
	      strstr(gguf_meta_get_str(&g.meta, "tokenizer.chat_template"), "bos_token"), "chat template");
	gguf_close(&g);

	/* `qbake inspect` shows the merges and the pre-tokenizer, when that command exists. */
	snprintf(log, sizeof log, "%s/inspect.txt", tmp);
	if (check_system("'%s' help inspect >/dev/null 2>&1", getenv("QBAKE_BIN")) == 0) {
		CHECK(check_system("'%s' inspect '%s' > '%s' 2>&1", getenv("QBAKE_BIN"), out, log) == 0, "inspect");
		text = check_slurp(log, NULL);
		CHECK(text && strstr(text, "tokenizer.ggml.merges") && strstr(text, "llama-bpe"),
		      "inspect output lacks merges or pre-tokenizer");
		free(text);
	} else {
		printf("note: no `qbake inspect` in this build; checked with the GGUF reader only\n");
	}
}

static void test_refused(void)
{
	char dir[2048], out[4096];
	err e = { 0 };
	convert_opts o = { CONVERT_F16, NULL, NULL, NULL };

	/* An added token id past vocab_size. */
	snprintf(dir, sizeof dir, "%s/bpe-big", tmp);
	make_dir(dir);
	write_tokenizer(dir, llama3_pre(), 5000);
	snprintf(out, sizeof out, "%s/big.gguf", tmp);
	CHECK(convert_run(dir, out, &o, NULL, &e) == -1 && strstr(e.msg, "tokenizer.json: token id 5000 (my\xe2\x96\x81word) is not below "
								       "config.json vocab_size 4096"), "%s", e.msg);
	CHECK(check_system("test -e '%s'", out) != 0, "no output left");

	/* A pre-tokenizer qbake cannot name is refused, not guessed. */
	snprintf(dir, sizeof dir, "%s/bpe-pre", tmp);
	make_dir(dir);
	write_tokenizer(dir, json_pack("{s:s}", "type", "Whitespace"), 4002);
	err_clear(&e);
	CHECK(convert_run(dir, out, &o, NULL, &e) == -1 && strstr(e.msg, "BPE pre-tokenizer not recognised (Whitespace)"),
	      "%s", e.msg);
	CHECK(check_system("test -e '%s'", out) != 0, "no output left");
}

int main(void)
{
	fixture = check_shared_path("fixtures/pydoc-8m");
	tmp = check_tmpdir();
	test_ok();
	test_refused();
	free((char *)fixture);
	return check_done();
}
