/* build.h - `qbake build` and `qbake plan`: run a recipe's graph against the cache */
#ifndef QBAKE_BUILD_H
#define QBAKE_BUILD_H

#include "err.h"
#include "graph.h"
#include "remote.h"
#include "store.h"

/* How a build runs. */
typedef struct build_opts {
	int jobs;         /* nodes run at once (>= 1) */
	int threads;      /* worker threads shared by the running nodes (>= 1) */
	int keep_going;   /* start independent nodes after a failure */
	int quiet;        /* no per-node lines (tests) */
	const char *out;  /* release folder; NULL = release/<name> under the working directory */
	remote *remote;   /* shared cache asked after a local miss and fed what is built, or NULL */
} build_opts;

/* What a build did, for its summary and for tests. */
typedef struct build_result {
	int ran;          /* nodes whose action ran */
	int cached;       /* nodes found in the cache (local or remote) */
	int remote;       /* of those, nodes downloaded from the remote cache */
	int failed;       /* nodes that failed (and rule refusals) */
	int skipped;      /* nodes not run because something they need failed */
	int release_written; /* the release folder was (re)written */
	char ran_labels[2048]; /* labels of the nodes that ran, ", "-separated (cut to fit) */
} build_result;

/* Builds every stale node of g, checks the rules, and writes the release folder.
 * Returns 0 when everything was built, -1 otherwise (e holds the first failure). */
int build_run(graph *g, store *s, const build_opts *o, build_result *res, err *e);

/* The `qbake build` command. */
int build_main(int argc, char **argv);
/* The `qbake plan` command. */
int plan_main(int argc, char **argv);
/* Full help texts for the command table. */
extern const char build_help[], plan_help[];

#endif
