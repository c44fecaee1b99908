/* recipe.h - load a Lua recipe in a sandbox into a plain C description of a release */
#ifndef QBAKE_RECIPE_H
#define QBAKE_RECIPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Everything below is filled by recipe_load and owned by the recipe (freed by recipe_free);
 * nothing refers to Lua once recipe_load has returned. Strings are NUL-terminated UTF-8.
 * Every `line` is the line of the recipe file the item was written on (0 when unknown),
 * for messages the engine prints later ("recipe.lua:12: tier Q2_K: ..."). */

/* A file or folder named by the recipe. */
typedef struct recipe_file {
	char *rel;  /* path relative to the recipe's folder, lexically normalised ("corpora/a.txt",
	             * "../shared/x"); absolute only when the recipe wrote an absolute path. This is
	             * the form recipe_canonical prints: it never contains the recipe's own location. */
	char *path; /* what to open: the recipe folder's real path joined with rel (or rel if absolute) */
} recipe_file;

typedef enum recipe_model_kind {
	RECIPE_MODEL_HF = 1, /* hf { path = "folder" }: a Hugging Face checkpoint folder */
	RECIPE_MODEL_GGUF,   /* gguf { path = "file.gguf" }: an unquantized GGUF used as the baseline */
	RECIPE_MODEL_GIT,    /* git { url, commit | ref, subdir? }: a checkpoint folder in a git tree */
} recipe_model_kind;

/* Where the model comes from. Local sources must exist at load time; git sources are only
 * described here (the engine fetches them). */
typedef struct recipe_model {
	recipe_model_kind kind;
	recipe_file local; /* HF: the folder; GGUF: the file (checked to exist); GIT: unused (NULLs) */
	char *url;         /* GIT: as written (file://, https://, scp-like, or a local path) */
	char *url_open;    /* GIT: what to hand to libgit2: url, or a local relative path joined
	                    * with the recipe's folder */
	char *commit;      /* GIT: 40 lowercase hex digits, or NULL when only ref is given */
	char *ref;         /* GIT: branch or tag named by the recipe, or NULL */
	char *subdir;      /* GIT: normalised folder inside the tree holding the checkpoint, or NULL = root */
	recipe_file lfs;   /* GIT: optional local folder of Git LFS objects (rel NULL when absent) */
	int line;
} recipe_model;

/* The unquantized type every tier is made from. */
typedef enum recipe_baseline {
	RECIPE_BASELINE_SOURCE = 0, /* only for gguf sources without `baseline`: the file's own type */
	RECIPE_BASELINE_F16,
	RECIPE_BASELINE_BF16,
	RECIPE_BASELINE_F32,
} recipe_baseline;

/* A named set of text files. The engine reads them in this order, as one text. */
typedef struct recipe_corpus {
	char *name;         /* its key in `corpora` */
	recipe_file *files; /* each pattern's matches in bytewise order, patterns in written order;
	                     * never empty, never the same file twice */
	size_t n_files;
	int line;
} recipe_corpus;

typedef enum recipe_imatrix_kind {
	RECIPE_IMATRIX_NONE = 0, /* no `imatrix`: tiers are quantized without one */
	RECIPE_IMATRIX_COMPUTE,  /* imatrix = { corpus = ..., ctx, chunks, from? } */
	RECIPE_IMATRIX_FILE,     /* imatrix = file "x.imatrix.gguf": imported as is */
} recipe_imatrix_kind;

typedef struct recipe_imatrix {
	recipe_imatrix_kind kind;
	size_t corpus;    /* COMPUTE: index into recipe.corpora */
	int64_t ctx;      /* COMPUTE: tokens per chunk (default 512) */
	int64_t chunks;   /* COMPUTE: chunks to use; 0 (the default) = every whole chunk */
	char from[16];    /* COMPUTE: tier the imatrix is computed on (tiers.h spelling), "" = the baseline */
	recipe_file file; /* FILE: the imported imatrix (checked to exist) */
	int line;
} recipe_imatrix;

/* --tensor-type REGEX=TYPE of llama-quantize, in recipe order (first match wins). */
typedef struct recipe_tensor_type {
	char *pattern; /* POSIX extended regex over tensor names, lower-cased as quantize applies it
	                * (checked with tier_rule_parse, so "pattern=type" parses there too) */
	char type[8];  /* ggml type name (gguf.h spelling) that quant_can_quantize accepts */
} recipe_tensor_type;

/* One output file: <release name>-<tier name>.gguf. */
typedef struct recipe_tier {
	char name[16];                /* tier name as kernels/tiers.h spells it ("Q4_K_M") */
	bool pure;                    /* every tensor at the tier's base type (no mixture); warned */
	bool leave_output_tensor;     /* keep output.weight as in the baseline */
	char output_tensor_type[8];   /* ggml type for output.weight (as in tensor_types), "" = the tier's choice */
	char token_embedding_type[8]; /* ggml type for token_embd.weight, "" = the tier's choice */
	recipe_tensor_type *tensor_types;
	size_t n_tensor_types;
	int line;
} recipe_tier;

/* Held-out evaluation of the baseline and of every tier. */
typedef struct recipe_eval {
	bool set;            /* false when the recipe has no `eval` (nothing below is meaningful) */
	size_t corpus;       /* index into recipe.corpora */
	int64_t ctx;         /* tokens per chunk (default 512) */
	int64_t chunks;      /* 0 (the default) = every whole chunk */
	recipe_file prompts; /* optional prompts file for greedy smoke tests (rel NULL when absent) */
	int64_t predict;     /* tokens generated per prompt (default 32) */
	int line;
} recipe_eval;

/* A quality gate. Figures not given are NAN. */
typedef struct recipe_gate {
	char tier[16];           /* tier name (tiers.h spelling), or "*" for every tier without its own gate */
	double max_ppl_increase; /* percent ("5%" -> 5.0) */
	double max_kld;          /* mean KL-divergence, nats */
	double min_same_top;     /* percent */
	char fallback[16];       /* tier built instead when the gate fails, "" = the tier fails */
	int line;
} recipe_gate;

/* A rule override. Only honoured with a written reason (recipe_load refuses one without). */
typedef struct recipe_override {
	bool set;
	double max;   /* eval_overlap: the overlap limit in percent (replaces the default 1 %) */
	char *reason; /* the written reason, recorded in the lock file */
	int line;
} recipe_override;

typedef struct recipe {
	char *path; /* the recipe file as given to recipe_load (used in messages) */
	char *dir;  /* real path of its folder; every recipe_file is relative to it */
	char *name; /* release "name": [A-Za-z0-9._-], starting with a letter or digit */
	int line;   /* line of the release call */
	recipe_model model;
	recipe_baseline baseline; /* default F16 (SOURCE for gguf sources) */
	recipe_corpus *corpora;   /* sorted by name */
	size_t n_corpora;
	recipe_imatrix imatrix;
	recipe_tier *tiers; /* in written order, no duplicates, at least one */
	size_t n_tiers;
	recipe_eval eval;
	recipe_gate *gates; /* "*" first, then in tier-name order; each tier at most once */
	size_t n_gates;
	recipe_override eval_overlap;         /* rules.eval_overlap */
	recipe_override requantized_baseline; /* rules.requantized_baseline */
	char **warnings; /* "path:LINE: text", in a fixed order; the CLI prints them */
	size_t n_warnings;
} recipe;

/* Sandbox limits; zero fields take the defaults. */
typedef struct recipe_limits {
	uint64_t instructions; /* Lua VM instructions (default 10 000 000) */
	size_t memory;         /* bytes the Lua state may hold (default 64 MiB) */
	double seconds;        /* CPU seconds, a backstop for slow library calls (default 10) */
} recipe_limits;

/* Loads and checks the recipe file at path; returns it, or NULL with e set
 * ("path:LINE: what is wrong"). lim may be NULL. */
recipe *recipe_load(const char *path, const recipe_limits *lim, err *e);
/* Same, from source text in memory; path names it in messages and locates its folder. */
recipe *recipe_load_buffer(const char *path, const char *src, size_t len,
			   const recipe_limits *lim, err *e);
/* Frees a recipe (NULL is fine). */
void recipe_free(recipe *r);

/* The content digest of a file or folder for recipe_canonical: writes 64 lowercase hex
 * digits and a NUL to hex; returns 0, or -1 with e set. */
typedef int (*recipe_digest_fn)(const char *path, bool is_dir, char hex[65], void *ctx, err *e);

/* A deterministic byte string describing the recipe's meaning (compact JSON, sorted keys):
 * the same for any comments, formatting or field order, different when any parameter
 * differs. With digest NULL, files appear by their relative path; otherwise by the digest
 * digest() returns for them (no paths at all). Returns the malloc'd string (length in *len
 * if len is not NULL), or NULL with e set. */
char *recipe_canonical(const recipe *r, recipe_digest_fn digest, void *ctx, size_t *len, err *e);

/* The gate that applies to a tier: its own, else "*", else NULL. */
const recipe_gate *recipe_gate_for(const recipe *r, const char *tier);
/* "f16", "bf16", "f32", or "source". */
const char *recipe_baseline_name(recipe_baseline b);

#endif
