/* test_tokenizer.c - token ids equal to llama-tokenize's on the golden corpora, hand cases, a tiny BPE vocab */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gguf.h"
#include "tokenizer.h"

/* llama-tokenize runs common's escape processing on its input before tokenizing
 * (\n \r \t \' \" \\ and \xNN); the golden ids are of the processed text. */
static size_t unescape(char *s, size_t n)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '\\' || i + 1 >= n) {
			s[o++] = s[i];
			continue;
		}
		char c = s[++i];
		switch (c) {
		case 'n': s[o++] = '\n'; break;
		case 'r': s[o++] = '\r'; break;
		case 't': s[o++] = '\t'; break;
		case '\'': case '"': case '\\': s[o++] = c; break;
		case 'x':
			if (i + 2 < n) {
				char x[3] = { s[i + 1], s[i + 2], 0 }, *end;
				long v = strtol(x, &end, 16);
				if (end == x + 2) {
					i += 2;
					s[o++] = (char)v;
					break;
				}
			}
			/* fall through */
		default:
			s[o++] = '\\';
			s[o++] = c;
		}
	}
	return o;
}

/* Parses llama-tokenize's "[1, 2, 3]" into l. */
static void parse_ids(const char *s, tok_ids *l)
{
	while (*s && *s != '[')
		s++;
	while (*s && *s != ']') {
		char *end;
		s++;
		long v = strtol(s, &end, 10);
		if (end == s)
			break;
		tok_ids_push(l, (int32_t)v);
		s = end;
	}
}

static void golden(const tok_vocab *v, const char *text_rel, const char *ids_rel)
{
	char *tp = check_shared_path(text_rel), *ip = check_shared_path(ids_rel);
	size_t n, m;
	char *text = check_slurp(tp, &n), *ids = check_slurp(ip, &m);
	tok_ids want = { 0 }, got = { 0 };
	err e = { 0 };

	CHECK(text && ids, "cannot read %s or %s", tp, ip);
	if (text && ids) {
		n = unescape(text, n);
		parse_ids(ids, &want);
		CHECK(tok_encode(v, text, n, true, true, &got, &e) == 0, "%s", e.msg);
		CHECK(want.n > 10000, "%s: only %zu ids parsed", ip, want.n);
		CHECK(got.n == want.n, "%s: %zu ids, golden has %zu", text_rel, got.n, want.n);
		for (size_t i = 0; i < got.n && i < want.n; i++)
			if (got.ids[i] != want.ids[i]) {
				CHECK(0, "%s: id %zu is %d, golden %d", text_rel, i, got.ids[i], want.ids[i]);
				break;
			}
	}
	tok_ids_free(&want);
	tok_ids_free(&got);
	free(text);
	free(ids);
	free(tp);
	free(ip);
}

static void expect(const tok_vocab *v, const char *text, bool add_special, bool parse_special,
		   const int32_t *want, size_t nwant)
{
	tok_ids got = { 0 };
	err e = { 0 };
	CHECK(tok_encode(v, text, strlen(text), add_special, parse_special, &got, &e) == 0, "%s", e.msg);
	bool same = got.n == nwant && (nwant == 0 || memcmp(got.ids, want, nwant * sizeof *want) == 0);
	if (!same) {
		fprintf(stderr, "got:");
		for (size_t i = 0; i < got.n; i++)
			fprintf(stderr, " %d", got.ids[i]);
		fprintf(stderr, "\n");
	}
	CHECK(same, "tokens of \"%s\"", text);
	tok_ids_free(&got);
}

#define EXPECT(v, text, add, parse, ...)                                                    \
	do {                                                                                 \
		static const int32_t w_[] = { __VA_ARGS__ };                                  \
		expect(v, text, add, parse, w_, sizeof w_ / sizeof w_[0]);                    \
	} while (0)

static void piece_is(const tok_vocab *v, int32_t id, bool special, const char *want)
{
	size_t n = 0;
	const char *p = tok_piece(v, id, special, &n);
	CHECK(p && n == strlen(want) && memcmp(p, want, n) == 0, "piece of %d: '%.*s', want '%s'", id,
	      (int)n, p ? p : "", want);
}

/* The SentencePiece vocabulary of the fixture model. */
static void spm_cases(void)
{
	char *path = check_shared_path("golden/pydoc-8m/pydoc-8m-F16.gguf");
	gguf_file f = { 0 };
	err e = { 0 };

	if (gguf_open(&f, path, &e)) {
		CHECK(0, "%s", e.msg);
		free(path);
		return;
	}
	tok_vocab *v = tok_load(&f.meta, &e);
	CHECK(v, "%s", e.msg);
	if (v) {
		golden(v, "golden/pydoc-8m/calib-64k.txt", "golden/pydoc-8m/tokens-calib-64k.txt");
		golden(v, "golden/pydoc-8m/eval-64k.txt", "golden/pydoc-8m/tokens-eval-64k.txt");

		CHECK(tok_n_vocab(v) == 4096 && tok_bos(v) == 1 && tok_eos(v) == 2 && tok_adds_bos(v), "ids");
		/* Expected ids worked out by hand from the vocabulary's scores: a space
		 * prefix, spaces as U+2581, best-scoring pair merged first. */
		EXPECT(v, "", true, false, 1);
		EXPECT(v, "", false, false);
		EXPECT(v, "  hello", true, false, 1, 259, 365, 2291);   /* ▁▁ ▁h ello */
		EXPECT(v, "a  b", true, false, 1, 264, 259, 3971);      /* ▁a ▁▁ b */
		EXPECT(v, "x\n\ny", true, false, 1, 1246, 13, 13, 3972); /* ▁x <0x0A> <0x0A> y */
		EXPECT(v, "\xC3\xA9 \xC3\xBC", true, false, 1, 3949, 4046, 3949, 4087); /* é ü */
		/* An emoji the vocabulary lacks: its four UTF-8 bytes as <0xF0><0x9F><0x98><0x80>. */
		EXPECT(v, "\xF0\x9F\x98\x80", true, false, 1, 3949, 3 + 0xF0, 3 + 0x9F, 3 + 0x98, 3 + 0x80);
		EXPECT(v, "def fibonacci(n):", true, false, 1, 449, 283, 375, 266, 793, 1634, 3979, 3954, 776);
		/* "<s>" in the text is BOS only when special tokens are parsed; text after a
		 * special token gets the space prefix again. */
		EXPECT(v, "a<s>a", false, true, 264, 1, 264);
		piece_is(v, 259, false, "  ");
		piece_is(v, 2291, false, "ello");
		piece_is(v, 13, false, "\n");
		piece_is(v, 1, false, "");
		piece_is(v, 1, true, "<s>");
		CHECK(tok_is_eog(v, 2) && !tok_is_eog(v, 1), "eog");
	}
	tok_free(v);
	gguf_close(&f);
	free(path);
}

static gguf_str gs(const char *s)
{
	return (gguf_str){ strlen(s), (char *)s };
}

/* A byte-level BPE vocabulary small enough to tokenize by hand. "Ġ" is the byte-level
 * form of a space (U+0120), "Ċ" of a newline (U+010A). */
static tok_vocab *tiny_bpe(const char *pre, bool add_bos_key)
{
	static const char *const toks[] = { "a", "b", "c", "\xC4\xA0", "ab", "\xC4\xA0" "ab", "abc", "1", "2",
					    "3", "12", "\xC4\x8A", "<|endoftext|>", "bc", "'", "s", "'s" };
	static const char *const merges[] = { "a b", "\xC4\xA0 ab", "ab c", "1 2", "' s" };
	gguf_str t[sizeof toks / sizeof toks[0]], mg[sizeof merges / sizeof merges[0]];
	int32_t type[sizeof toks / sizeof toks[0]];
	size_t nt = sizeof toks / sizeof toks[0], nm = sizeof merges / sizeof merges[0];
	gguf_meta m = { 0 };
	err e = { 0 };

	for (size_t i = 0; i < nt; i++) {
		t[i] = gs(toks[i]);
		type[i] = i == 12 ? 3 : 1;
	}
	for (size_t i = 0; i < nm; i++)
		mg[i] = gs(merges[i]);
	CHECK(gguf_meta_set_str(&m, "tokenizer.ggml.model", "gpt2") == 0 &&
	      gguf_meta_set_str(&m, "tokenizer.ggml.pre", pre) == 0 &&
	      gguf_meta_set_arr(&m, "tokenizer.ggml.tokens", GGUF_STRING, t, nt) == 0 &&
	      gguf_meta_set_arr(&m, "tokenizer.ggml.token_type", GGUF_I32, type, nt) == 0 &&
	      gguf_meta_set_arr(&m, "tokenizer.ggml.merges", GGUF_STRING, mg, nm) == 0 &&
	      gguf_meta_set_u32(&m, "tokenizer.ggml.bos_token_id", 12) == 0 &&
	      gguf_meta_set_u32(&m, "tokenizer.ggml.eos_token_id", 12) == 0, "meta");
	if (add_bos_key)
		gguf_meta_set_bool(&m, "tokenizer.ggml.add_bos_token", false);
	tok_vocab *v = tok_load(&m, &e);
	CHECK(v, "%s", e.msg);
	gguf_meta_free(&m);
	return v;
}

static void bpe_cases(void)
{
	tok_vocab *q = tiny_bpe("qwen2", true), *l = tiny_bpe("llama-bpe", false);
	if (!q || !l)
		goto out;
	/* qwen2: "ab" | " abc" | " " | "1" | "2" | "3" | "\n"; " abc" merges a+b, then
	 * Ġ+ab (rank 1) before ab+c (rank 2): Ġab c. */
	EXPECT(q, "ab abc 123\n", true, false, 4, 5, 2, 3, 7, 8, 9, 11);
	/* llama-bpe: BOS (its default), digits in threes: "123" -> 1+2 merge -> 12 3. */
	EXPECT(l, "ab abc 123\n", true, false, 12, 4, 5, 2, 3, 10, 9, 11);
	/* llama-bpe takes a pre-token found whole in the vocabulary without merging;
	 * qwen2 merges, and "b c" is no merge. */
	EXPECT(l, "bc", false, false, 13);
	EXPECT(q, "bc", false, false, 1, 2);
	/* Contractions are their own pre-token: "a" "'s" -> 's by merge. */
	EXPECT(q, "a's", false, false, 0, 16);
	EXPECT(q, "a'S", false, false, 0, 14); /* 'S: case-folded split, but no "' S" merge and no "S" token */
	/* Special tokens in the text, when parsed. */
	EXPECT(q, "ab<|endoftext|>ab", false, true, 4, 12, 4);
	/* Two spaces before a word: the first stands alone, the second joins the word. */
	EXPECT(q, "a  ab", false, false, 0, 3, 5);
	piece_is(q, 5, false, " ab");
	piece_is(q, 11, false, "\n");
	piece_is(q, 12, false, "");
	piece_is(q, 12, true, "<|endoftext|>");
	CHECK(tok_is_eog(q, 12), "eog");
out:
	tok_free(q);
	tok_free(l);
}

static void bad_meta(void)
{
	gguf_meta m = { 0 };
	err e = { 0 };
	gguf_str t[2] = { gs("a"), gs("a") };

	CHECK(!tok_load(&m, &e) && e.set, "empty metadata accepted");
	err_clear(&e);
	gguf_meta_set_str(&m, "tokenizer.ggml.model", "llama");
	gguf_meta_set_arr(&m, "tokenizer.ggml.tokens", GGUF_STRING, t, 2);
	CHECK(!tok_load(&m, &e) && strstr(e.msg, "duplicate"), "duplicate token: %s", e.msg);
	err_clear(&e);
	gguf_meta_set_str(&m, "tokenizer.ggml.model", "gpt2");
	gguf_meta_set_str(&m, "tokenizer.ggml.pre", "no-such-pre");
	CHECK(!tok_load(&m, &e) && strstr(e.msg, "no-such-pre"), "unknown pre: %s", e.msg);
	gguf_meta_free(&m);
}

int main(void)
{
	bpe_cases();
	bad_meta();
	spm_cases();
	return check_done();
}
