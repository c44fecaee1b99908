/* spm.h - SentencePiece model files (tokenizer.model): a protobuf decoder of the fields GGUF needs */
#ifndef QBAKE_SPM_H
#define QBAKE_SPM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* SentencePiece.Type, as numbered in sentencepiece_model.proto (also GGUF's token types). */
enum {
	SPM_NORMAL = 1, SPM_UNKNOWN = 2, SPM_CONTROL = 3, SPM_USER_DEFINED = 4, SPM_UNUSED = 5,
	SPM_BYTE = 6
};

/* One vocabulary entry (ModelProto.pieces[i]). */
typedef struct spm_piece {
	char *piece;  /* owned, NUL-terminated UTF-8 */
	uint32_t len; /* bytes of piece */
	float score;  /* 0 when the field is absent, as protobuf defaults it */
	int type;     /* SPM_NORMAL when absent */
} spm_piece;

/* A decoded ModelProto. Filled by spm_parse; the defaults are protobuf's when a field is absent. */
typedef struct spm_model {
	spm_piece *pieces;
	size_t n;
	int model_type;                /* trainer_spec.model_type: 1 unigram, 2 BPE, 3 word, 4 char */
	bool byte_fallback;            /* trainer_spec.byte_fallback */
	int32_t unk_id, bos_id, eos_id, pad_id; /* trainer_spec ids (defaults 0, 1, 2, -1) */
	bool add_dummy_prefix;         /* normalizer_spec.add_dummy_prefix (default true) */
	bool remove_extra_whitespaces; /* normalizer_spec.remove_extra_whitespaces (default true) */
	bool escape_whitespaces;       /* normalizer_spec.escape_whitespaces (default true) */
} spm_model;

/* Reads and decodes path; returns 0, or -1 with e as "path: offset N: problem". */
int spm_load(spm_model *m, const char *path, err *e);
/* Decodes an in-memory ModelProto (name is used in messages); returns 0 or -1. */
int spm_parse(spm_model *m, const void *buf, size_t len, const char *name, err *e);
/* Frees the pieces; m may be zeroed or half-filled. */
void spm_free(spm_model *m);

#endif
