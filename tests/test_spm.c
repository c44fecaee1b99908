/* test_spm.c - the SentencePiece decoder against the tokens llama.cpp's converter wrote, and on damaged files */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gguf.h"
#include "spm.h"

int main(void)
{
	char *model = check_shared_path("fixtures/pydoc-8m/tokenizer.model");
	char *gpath = check_shared_path("golden/pydoc-8m/pydoc-8m-F16.gguf");
	spm_model m;
	gguf_file g;
	err e = { 0 };
	size_t len = 0;
	char *buf;

	CHECK(spm_load(&m, model, &e) == 0, "%s", e.msg);
	CHECK(m.n == 4096, "%zu pieces", m.n);
	CHECK(m.byte_fallback, "the fixture uses byte fallback");
	CHECK(m.model_type == 2, "BPE model type, got %d", m.model_type);
	CHECK(m.unk_id == 0 && m.bos_id == 1 && m.eos_id == 2 && m.pad_id == -1, "ids %d %d %d %d", m.unk_id,
	      m.bos_id, m.eos_id, m.pad_id);
	CHECK(gguf_open(&g, gpath, &e) == 0, "%s", e.msg);
	if (m.n == 4096 && g.meta.n) {
		const gguf_value *tok = gguf_meta_get_arr(&g.meta, "tokenizer.ggml.tokens", GGUF_STRING);
		const gguf_value *sc = gguf_meta_get_arr(&g.meta, "tokenizer.ggml.scores", GGUF_F32);
		const gguf_value *ty = gguf_meta_get_arr(&g.meta, "tokenizer.ggml.token_type", GGUF_I32);
		size_t bad = 0;

		/* every piece, score and type equals what sentencepiece gave the reference converter */
		for (size_t i = 0; tok && sc && ty && i < m.n; i++) {
			const gguf_str *s = &((const gguf_str *)tok->arr)[i];

			bad += s->len != m.pieces[i].len || memcmp(s->ptr, m.pieces[i].piece, s->len) ||
			       ((const float *)sc->arr)[i] != m.pieces[i].score ||
			       ((const int32_t *)ty->arr)[i] != m.pieces[i].type;
		}
		CHECK(tok && sc && ty && bad == 0, "%zu pieces differ from the golden vocabulary", bad);
		gguf_close(&g);
	}
	spm_free(&m);

	/* Every truncation is an error or a shorter valid model, never a crash (ASan watches). */
	buf = check_slurp(model, &len);
	CHECK(buf && len > 1000, "read %s", model);
	for (size_t cut = 0; buf && cut < len; cut += len / 97 + 1) {
		err_clear(&e);
		if (spm_parse(&m, buf, cut, "cut", &e) == 0)
			spm_free(&m);
		else
			CHECK(strncmp(e.msg, "cut", 3) == 0, "message names the file: %s", e.msg);
	}
	err_clear(&e);
	CHECK(spm_parse(&m, buf, 7, "cut", &e) == -1 && strstr(e.msg, "cut: offset"), "7 bytes: %s", e.msg);
	/* a length prefix larger than the file */
	if (buf && len > 4) {
		unsigned char bad[] = { 0x0a, 0xff, 0xff, 0x03, 'a' };

		err_clear(&e);
		CHECK(spm_parse(&m, bad, sizeof bad, "bad", &e) == -1 && strstr(e.msg, "runs past the end"), "%s", e.msg);
	}
	free(buf);
	free(model);
	free(gpath);
	return check_done();
}
