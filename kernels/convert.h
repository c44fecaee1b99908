/* convert.h - Hugging Face checkpoint (Llama, Mistral, Qwen2) to GGUF, as llama.cpp's convert_hf_to_gguf.py */
#ifndef QBAKE_CONVERT_H
#define QBAKE_CONVERT_H

#include <stdint.h>

#include "err.h"

/* Output types for the 2-D weights (1-D tensors and norms are always F32). */
enum { CONVERT_F32, CONVERT_F16, CONVERT_BF16, CONVERT_AUTO };

/* What the caller asks for. */
typedef struct convert_opts {
	int outtype;          /* CONVERT_*; AUTO keeps the checkpoint's BF16/F16 (F32 stays F32) */
	const char *name;     /* model id the general.name/basename/size_label keys come from
	                         ("org/Model-7B-Instruct"); NULL: config.json _name_or_path when it is
	                         a hub id, else "model". Never the folder's name. */
	/* Called once per tensor as it is written (may be NULL): GGUF name, type name, elements. */
	void (*progress)(void *ctx, const char *tensor, const char *type, uint64_t nelem);
	void *ctx;
} convert_opts;

/* Figures about a finished conversion. */
typedef struct convert_stats {
	uint64_t n_tensors;
	uint64_t in_bytes;   /* tensor bytes read from the checkpoint */
	uint64_t out_bytes;  /* size of the GGUF written */
	uint8_t sha256[32];  /* of the GGUF written */
} convert_stats;

/* Converts the checkpoint folder dir into the GGUF file out, streaming one tensor at a time
 * (a bounded chunk of rows in memory). Returns 0, or -1 with e naming the file and the problem;
 * on error nothing is left at out. st may be NULL. */
int convert_run(const char *dir, const char *out, const convert_opts *o, convert_stats *st, err *e);

/* The outtype named name ("f32", "f16", "bf16", "auto"), or -1. */
int convert_outtype(const char *name);

#endif
