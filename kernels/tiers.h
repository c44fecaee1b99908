/* tiers.h - quantization tiers (llama.cpp file types) and llama-quantize's per-tensor type choice */
#ifndef QBAKE_TIERS_H
#define QBAKE_TIERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "gguf.h"

/* One tier: a name users type and the llama_ftype recorded in general.file_type. */
typedef struct tier_info {
	const char *name;      /* "Q4_K_M" */
	uint32_t ftype;        /* llama_ftype number (general.file_type) */
	uint32_t default_type; /* ggml type most tensors get */
} tier_info;

/* The tier named name (case-insensitive), or NULL. */
const tier_info *tier_by_name(const char *name);
/* The tier whose general.file_type is ftype, or NULL. */
const tier_info *tier_by_ftype(uint32_t ftype);
/* The table of every tier qbake builds, in the order the docs list them; *n gets its length. */
const tier_info *tier_list(size_t *n);
/* "F16, BF16, Q8_0, ..." for messages (static storage). */
const char *tier_names(void);

/* The model facts the type choice depends on (read from the GGUF metadata). */
typedef struct tier_model {
	char arch[64];      /* general.architecture */
	uint32_t n_layer;   /* <arch>.block_count */
	uint32_t n_head;    /* <arch>.attention.head_count (0 if absent) */
	uint32_t n_head_kv; /* <arch>.attention.head_count_kv (defaults to n_head) */
	uint32_t n_expert;  /* <arch>.expert_count (0 if absent) */
} tier_model;

/* Fills m from metadata; returns 0, or -1 with e naming the missing key. */
int tier_model_from_meta(tier_model *m, const gguf_meta *meta, err *e);

/* One --tensor-type REGEX=TYPE rule; tier_rule_parse compiles it, tier_rules_free frees. */
typedef struct tier_rule {
	char *pattern;  /* the regex text, lower-cased as llama-quantize does */
	void *re;       /* compiled POSIX extended regex (regex_t *), owned */
	uint32_t type;  /* ggml type to use for matching tensors */
} tier_rule;

/* Parses "REGEX=TYPE" into r; returns 0, or -1 with e saying what is malformed. */
int tier_rule_parse(tier_rule *r, const char *arg, err *e);
/* Frees n rules (and the array, which must come from malloc/realloc). */
void tier_rules_free(tier_rule *rules, size_t n);

/* The options of `qbake quantize` that change per-tensor types. Zero means defaults,
 * except the two type fields which must be set to -1 when unused. */
typedef struct tier_options {
	bool pure;                /* --pure: every quantized tensor gets the default type */
	bool leave_output;        /* --leave-output-tensor: output.weight keeps its type */
	int output_type;          /* --output-tensor-type, or -1 */
	int token_embd_type;      /* --token-embedding-type, or -1 */
	const tier_rule *rules;   /* --tensor-type rules, first match wins */
	size_t n_rules;
	bool has_imatrix;         /* an imatrix is given (changes Q4_0/Q5_0/IQ4 ffn_down) */
} tier_options;

/* The order llama-quantize writes tensors in: tensors outside blk.N first, then by layer
 * number, by name within a layer. Fills order[n] with indices into ts; returns 0, or -1
 * when out of memory. */
int tier_order(const gguf_tensor *ts, size_t n, size_t *order);

/* True if llama-quantize would quantize this tensor at all (2-D+ weights, not norms, ...). */
bool tier_quantizable(const char *name, const gguf_tensor *t, const tier_options *opt);

/* Chooses the type of every tensor: ts[order[i]] are visited in that order (the layer
 * counters depend on it, so pass tier_order's result) and types[order[i]] receives the
 * ggml type of each. Returns 0, or -1 with e set (a forced type that cannot hold a row,
 * a layer number out of range). fallbacks (may be NULL) receives how many tensors had to
 * fall back because their row length is not a multiple of the block size. */
int tier_choose(const tier_info *tier, const tier_options *opt, const tier_model *m,
		const gguf_tensor *ts, const size_t *order, size_t n, uint32_t *types,
		size_t *fallbacks, err *e);

#endif
