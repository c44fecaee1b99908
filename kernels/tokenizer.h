/* tokenizer.h - text <-> token ids from GGUF tokenizer metadata, with llama.cpp's ids */
#ifndef QBAKE_TOKENIZER_H
#define QBAKE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "gguf.h"

/* A loaded vocabulary: SentencePiece-style (tokenizer.ggml.model = "llama") or GPT-2
 * byte-level BPE ("gpt2") with one of the supported pre-tokenizers. Immutable after
 * tok_load, so one vocabulary may serve several threads. */
typedef struct tok_vocab tok_vocab;

/* A growable list of token ids; owned by whoever declared it (free with tok_ids_free). */
typedef struct tok_ids {
	int32_t *ids;
	size_t n, cap;
} tok_ids;

/* The vocabulary described by the tokenizer.ggml.* keys of m, or NULL with e set
 * (missing or malformed keys, duplicate tokens, unsupported model or pre-tokenizer). */
tok_vocab *tok_load(const gguf_meta *m, err *e);
/* Frees v (NULL is fine). */
void tok_free(tok_vocab *v);

/* Appends the ids of text[0..len) to out. add_special adds BOS/EOS as the model's
 * metadata says; parse_special lets control tokens written in the text ("<s>") become
 * their ids (as llama-tokenize does by default; llama-perplexity does not).
 * Returns 0, or -1 with e set (out of memory only). */
int tok_encode(const tok_vocab *v, const char *text, size_t len, bool add_special,
	       bool parse_special, tok_ids *out, err *e);
/* The text of token id as generation prints it (spaces unescaped, byte tokens as their
 * byte, byte-level BPE decoded); control and unknown tokens give "" unless special.
 * *len receives the byte count; the text is not NUL-terminated. NULL if id is out of range. */
const char *tok_piece(const tok_vocab *v, int32_t id, bool special, size_t *len);
/* The raw vocabulary string of id (NUL-terminated), or NULL if out of range. */
const char *tok_text(const tok_vocab *v, int32_t id);

/* Number of tokens in the vocabulary. */
int32_t tok_n_vocab(const tok_vocab *v);
/* The BOS id, or -1 when the model has none. */
int32_t tok_bos(const tok_vocab *v);
/* The EOS id, or -1. */
int32_t tok_eos(const tok_vocab *v);
/* True when id ends generation (EOS, EOT and the end-of-text style control tokens). */
bool tok_is_eog(const tok_vocab *v, int32_t id);
/* True when tok_encode with add_special puts BOS first. */
bool tok_adds_bos(const tok_vocab *v);

/* Appends one id; returns 0 or -1 on out of memory. */
int tok_ids_push(tok_ids *l, int32_t id);
/* Frees the list and zeroes it. */
void tok_ids_free(tok_ids *l);

#endif
