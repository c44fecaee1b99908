/* actions.h - what each kind of graph node does when it is not in the cache */
#ifndef QBAKE_ACTIONS_H
#define QBAKE_ACTIONS_H

#include "err.h"
#include "graph.h"
#include "store.h"

/* How an action runs; not part of any key. */
typedef struct action_env {
	store *s;
	int threads;  /* worker threads an action may use */
	int verbose;  /* print per-tensor progress */
} action_env;

/* Runs node n (its dependencies resolved, its key computed): writes its outputs into the
 * store and fills n->result (outputs and figures JSON). Returns 0, or -1 with e set and
 * nothing recorded. */
int action_run(const graph *g, graph_node *n, const action_env *env, err *e);

/* The path of a resolved node's output in the store, into buf; NULL if it has none. */
const char *action_output_path(const action_env *env, const graph_node *n, const char *name, char *buf,
			       size_t len);

#endif
