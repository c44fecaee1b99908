/* remote.h - a shared cache over HTTP (Bazel's remote-cache protocol: cas/<sha256>, ac/<key>) */
#ifndef QBAKE_REMOTE_H
#define QBAKE_REMOTE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "store.h"

/* The protocol is the one Bazel's HTTP remote cache defines, so bazel-remote and a plain
 * nginx with WebDAV PUT serve it unchanged: BASE/cas/<sha256 hex> holds an object's bytes,
 * BASE/ac/<node key hex> the node's action record (store_action_encode's bytes), where
 * BASE is URL or URL/INSTANCE. GET reads, PUT writes, HEAD tests, 404 is a miss.
 *
 * The remote only ever adds to the local store through its validating doors: a record goes
 * through store_ac_put_raw, an object through a store_writer committed with the expected
 * digest, so a server returning wrong bytes is reported and never trusted (the node is
 * then built locally). A remote that does not answer (connection refused, 2 s connect
 * timeout, a transfer slower than 1 KiB/s for 15 s, 5xx after 3 tries) is marked down for
 * the rest of the process with one warning, and every later call is a miss: the build
 * goes on locally. Interrupted downloads resume with a Range request on the next try. */

/* Where the remote is and how to talk to it: from --remote-cache / --remote-upload, then
 * QBAKE_REMOTE_CACHE / QBAKE_REMOTE_UPLOAD, then the per-user config file (first wins).
 * Credentials come only from the config file. Every string is owned. */
typedef struct remote_config {
	char *url;       /* http(s)://host[:port][/path]; NULL or "" = no remote cache */
	char *instance;  /* optional path segment after url (bazel-remote's instance name) */
	char *token;     /* bearer token, or NULL */
	char *user;      /* basic auth user (with password), or NULL */
	char *password;
	int upload;      /* write back what was built locally (default 1) */
	char file[512];  /* the config file that was read, or "" */
} remote_config;

/* Fills c: flag_url / flag_upload ("true"/"false"; NULL = not given) override the
 * environment, which overrides the config file ($XDG_CONFIG_HOME/qbake/config or
 * ~/.config/qbake/config; a missing file is fine). Returns 0, or -1 with e naming the
 * file and line of a malformed entry or the bad value. */
int remote_config_load(remote_config *c, const char *flag_url, const char *flag_upload, err *e);
/* Frees c's strings and zeroes it. */
void remote_config_free(remote_config *c);

/* One remote cache used by one process, shared by its build threads. */
typedef struct remote {
	char *base;          /* url[/instance] without a trailing slash, owned */
	char *shown;         /* base with any user:password@ removed, for messages, owned */
	int upload;          /* from the config */
	char *bearer, *user, *password; /* owned; never printed */
	long connect_ms;     /* connect timeout (2000); tests may lower it */
	int tries;           /* attempts per transfer on a connection error or 5xx (3) */
	/* A warning that is not an error; NULL prints "qbake: warning: MSG" on stderr. */
	void (*warn)(void *ctx, const char *msg);
	void *warn_ctx;
	pthread_mutex_t mu;  /* guards the fields below */
	int down;            /* set once the remote stopped answering; later calls are misses */
	uint8_t (*bad)[32];  /* objects the server returned wrong bytes for: re-uploaded even
	                      * though the server has a file of that name */
	size_t nbad;
	/* counters, for summaries, tests and the benchmark */
	uint64_t fetched;    /* action records taken from the remote (remote_fetch hits) */
	uint64_t uploaded;   /* action records written by remote_upload */
	uint64_t corrupt;    /* objects or records refused because their bytes were wrong */
	uint64_t bytes_down, bytes_up;
} remote;

/* Opens a client for c (which must have a url). Returns 0, or -1 when the url is not
 * http:// or https:// or libcurl cannot start. */
int remote_open(remote *r, const remote_config *c, err *e);
/* Frees r. Safe on a zeroed or failed remote. */
void remote_close(remote *r);

/* Looks up node key on the remote after a local miss: fetches its record and every
 * object it names that the store lacks, each checked by digest, then records it in the
 * store and fills a as store_ac_get would. Returns 1 on a hit, 0 on a miss (not there,
 * remote down, wrong bytes: each reported as a warning). Never fails the build. */
int remote_fetch(remote *r, store *s, const uint8_t key[32], store_action *a);
/* Uploads node key's outputs (objects first, each skipped when the server already has a
 * file of that size) and then its record, when r->upload is set. Returns 1 when
 * uploaded, 0 when skipped or the remote is down (warned). Never fails the build. */
int remote_upload(remote *r, store *s, const uint8_t key[32]);
/* For `qbake plan`: reads and validates key's record on the remote (its objects are not
 * checked or fetched) into a. Returns 1 when the remote has it, 0 otherwise. */
int remote_probe(remote *r, const uint8_t key[32], store_action *a);

/* Streams the file at path to BASE/cas/<d hex> (for the benchmark and tools). Returns 0 or -1. */
int remote_put_file(remote *r, const char *path, const uint8_t d[32], err *e);
/* Downloads BASE/cas/<d hex> into the store, checked against d. Returns 1 when stored,
 * 0 when the server does not have it, -1 on an error (wrong bytes, I/O, remote down). */
int remote_get_object(remote *r, store *s, const uint8_t d[32], err *e);

#endif
