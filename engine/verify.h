/* verify.h - `qbake verify`: rebuild a release from scratch and compare every digest */
#ifndef QBAKE_VERIFY_H
#define QBAKE_VERIFY_H

#include <jansson.h>

#include "err.h"

/* How to verify. */
typedef struct verify_opts {
	const char *recipe;  /* the recipe file */
	const char *release; /* the release folder; NULL = release/<name> in the working directory */
	int threads;         /* worker threads for the rebuild (>= 1) */
	int keep;            /* keep the temporary cache and release (their path is reported) */
	int quiet;           /* no per-step lines from the rebuild */
} verify_opts;

/* Rebuilds o->recipe in a fresh temporary cache and compares it with the release folder:
 * every node of qbake.lock (by label) against the rebuilt node (key, input and output
 * digests), and every GGUF of the release against the rebuilt output. Returns the report
 * ({"release", "nodes": N, "differences": [{"node", "what"}], "identical": bool, "scratch"})
 * or NULL with e set when the recipe or the lock cannot be read (exit 2) or the rebuild
 * failed (*build_failed set, exit 1). */
json_t *verify_run(const verify_opts *o, int *build_failed, err *e);

/* `qbake verify RECIPE [--release DIR] [--threads N] [--keep] [--json]`. */
int verify_main(int argc, char **argv);
/* Help text for the command table. */
extern const char verify_help[];

#endif
