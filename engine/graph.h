/* graph.h - the build graph of a release: nodes, their content keys, their order */
#ifndef QBAKE_GRAPH_H
#define QBAKE_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "recipe.h"
#include "store.h"

/* What a node does. Each kind has a version (graph.c) hashed into its key, bumped when
 * the action's output for the same inputs changes. */
typedef enum graph_kind {
	GRAPH_BASELINE = 1, /* HF checkpoint -> unquantized GGUF (or import of a GGUF source) */
	GRAPH_OVERLAP,      /* held-out check: overlap of the eval corpus with the calibration corpus */
	GRAPH_IMATRIX,      /* importance matrix from the calibration corpus (or import of a file) */
	GRAPH_QUANTIZE,     /* one tier */
	GRAPH_EVAL,         /* perplexity (and KLD against the baseline) on the eval corpus */
} graph_kind;

/* A file a node reads directly (not through another node): source checkpoint files,
 * corpus files, an imported imatrix. */
typedef struct graph_input {
	char *name;         /* what the key records: the file's name inside the model folder, or
	                     * "corpus[i]" - never a host path */
	char *path;         /* where to read it (owned) */
	uint8_t digest[32]; /* set by graph_hash_inputs */
	uint64_t size;      /* set by graph_hash_inputs */
} graph_input;

/* Node states, set by the builder. */
typedef enum graph_state {
	GRAPH_PENDING = 0, /* not looked at yet */
	GRAPH_RUNNING,     /* its action is running */
	GRAPH_CACHED,      /* its key was in the action cache */
	GRAPH_BUILT,       /* ran in this build */
	GRAPH_FAILED,      /* its action failed (error in the node's err) */
	GRAPH_SKIPPED,     /* a dependency failed */
} graph_state;

typedef struct graph_node {
	graph_kind kind;
	char *label;            /* "quantize Q4_K_M": for progress, plan and the lock file */
	const recipe_tier *tier;/* QUANTIZE and EVAL of a tier; NULL otherwise */
	char *params;           /* canonical JSON of the parameters (set by graph_new) */
	struct graph_node *deps[4]; /* nodes whose outputs this one reads (set by graph_new) */
	int ndeps;
	graph_input *inputs;    /* files read directly, in a fixed order */
	size_t ninputs;
	/* Set by the builder: */
	uint8_t key[32];        /* SHA-256 of kind, version, params and every input digest */
	int keyed;              /* key is valid (every dependency has its outputs) */
	graph_state state;
	int remote;             /* its result came from the remote cache (set by the builder) */
	store_action result;    /* outputs and figures, from the cache or the run */
	double seconds;         /* time the action took when it ran */
	err error;              /* why it failed */
} graph_node;

/* The whole graph of one recipe, in dependency order (every node after its deps). */
typedef struct graph {
	const recipe *r;       /* not owned */
	graph_node **nodes;    /* owned */
	size_t n;
	graph_node *baseline;  /* the BASELINE node */
	graph_node *overlap;   /* the OVERLAP node, or NULL without imatrix corpus + eval */
	graph_node *imatrix;   /* the IMATRIX node, or NULL */
	graph_node *base_eval; /* the baseline's EVAL node, or NULL without eval */
	recipe_tier from;      /* the plain tier imatrix.from names (its quantize node points here) */
	recipe_tier **fallbacks; /* plain tiers added by graph_add_fallback (owned, each allocated
	                          * alone so nodes may point at them) */
	size_t n_fallbacks;
} graph;

/* Builds the graph of r (nodes, params, inputs; no hashing yet). Returns 0 or -1. */
int graph_new(graph *g, const recipe *r, err *e);
/* Adds the quantize and eval steps of a fallback tier (a plain tier: no options) unless
 * they exist; returns 1 when steps were added, 0 when they were there, -1 on error. */
int graph_add_fallback(graph *g, const char *tier, err *e);
/* The quantize step of a tier (recipe or fallback) by name, or NULL. */
graph_node *graph_quantize_node(const graph *g, const char *tier);
/* The eval step of a quantize step's tier, or NULL. */
graph_node *graph_eval_node(const graph *g, const graph_node *quantize);
/* Frees every node. */
void graph_free(graph *g);
/* Hashes every node's direct inputs through the store's stat cache. Returns 0 or -1. */
int graph_hash_inputs(graph *g, store *s, err *e);
/* Computes n's key when every dependency has its result; returns 1 when keyed, 0 when a
 * dependency is not resolved yet, -1 on error. */
int graph_key(graph_node *n, err *e);
/* Writes the digest of n's direct inputs (names, digests and sizes), for lineage. */
void graph_inputs_digest(const graph_node *n, uint8_t d[32]);
/* The output named name of a resolved node, or NULL. */
const store_output *graph_output(const graph_node *n, const char *name);
/* The version hashed into the keys of kind's nodes. */
int graph_version(graph_kind kind);
/* "baseline", "overlap", "imatrix", "quantize", "eval" */
const char *graph_kind_name(graph_kind kind);

#endif
