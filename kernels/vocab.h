/* vocab.h - the tokenizer.* metadata of a Hugging Face model folder, as convert_hf_to_gguf.py writes it */
#ifndef QBAKE_VOCAB_H
#define QBAKE_VOCAB_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "gguf.h"

/* What the architecture asks of the tokenizer step (set by the converter from config.json). */
typedef struct vocab_opts {
	uint32_t vocab_size; /* config.json vocab_size: the token list is padded up to it */
	bool llama;          /* Llama/Mistral: tokenizer_config add_prefix_space is written, and a
	                        49152-token vocabulary gets add_bos_token = false (as the reference) */
} vocab_opts;

/* Appends the tokenizer keys for folder dir to m, in the reference's order: a SentencePiece
 * vocabulary from tokenizer.model when present, else a GPT-2 style BPE from tokenizer.json;
 * then merges, special token ids, add_bos/add_eos, chat template. Returns 0, or -1 with e
 * naming the file and what is wrong (including a vocabulary larger than vocab_size). */
int vocab_write(const char *dir, const vocab_opts *o, gguf_meta *m, err *e);

#endif
