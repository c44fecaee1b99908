/* store.h - the content-addressed cache: objects, action cache, stat cache, refs, gc, verify */
#ifndef QBAKE_STORE_H
#define QBAKE_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "afile.h"
#include "err.h"
#include "sha256.h"

/* The on-disk layout is described in cache/README.md. Everything in it is written as a
 * temp file in <dir>/tmp, fsynced, then renamed into place, so a crash at any moment leaves
 * either the old state or the new one, plus (at worst) a temp file that the next open or gc
 * removes. Records carry a checksum: a damaged one reads as a miss, with a warning.
 *
 * A remote layer (Bazel HTTP cache: cas/<sha256>, ac/<key>) slots in on top of this one:
 * on a local miss it GETs ac/<key> into store_ac_put_raw (which validates the bytes) and
 * streams cas/<sha256> through a store_writer committed with the expected digest, so wrong
 * bytes from a server never enter the store; on a local build it PUTs store_ac_get_raw's
 * bytes and the object files named by store_object_path. */

/* One cache directory opened by one process. Fields below "counters" are for callers and
 * tests to read; the rest is private to store.c. After store_open, every function may be
 * called from several threads at once on the same store (each call uses its own fds and
 * temp files; the counters are updated atomically); store_gc and store_verify excepted. */
typedef struct store {
	char *dir;        /* the cache directory, made absolute (realpath); owned; set by store_open */
	int lockfd;       /* <dir>/lock, held LOCK_SH while open, LOCK_EX during gc/verify */
	int64_t racy_ns;  /* a stat cache entry is trusted only when the file's mtime and ctime are
	                   * at least this much older than the moment it was recorded (default 2 s,
	                   * coarse enough for every filesystem's timestamp granularity); tests lower it */
	/* A warning that is not an error (a damaged record read as a miss); NULL prints
	 * "qbake: warning: MSG" on stderr. Set by the caller after store_open. */
	void (*warn)(void *ctx, const char *msg);
	void *warn_ctx;
	/* counters */
	uint64_t nhashed;      /* files store_hash_file actually read and hashed */
	uint64_t bytes_hashed; /* bytes read by those hashes */
	uint64_t nwarnings;    /* warnings issued */
} store;

/* Writes the default cache directory into buf: $QBAKE_CACHE, else $XDG_CACHE_HOME/qbake, else
 * $HOME/.cache/qbake. Returns 0, or -1 when none can be found or buf is too small. */
int store_default_dir(char *buf, size_t n, err *e);
/* Opens (creating its layout when missing) the cache at dir, or at store_default_dir when dir
 * is NULL; takes the shared lock (waits while a gc or verify runs) and removes stale temp
 * files when no other process uses the cache. Returns 0, or -1 with e naming the path
 * (read-only, not a cache, newer layout). */
int store_open(store *s, const char *dir, err *e);
/* Releases the lock and frees s. Safe on a zeroed or failed store. */
void store_close(store *s);

/* ---- Objects: immutable files named by their SHA-256 ---- */

/* Writes the path of object d into buf (whether it exists or not); returns buf. */
char *store_object_path(const store *s, const uint8_t d[32], char *buf, size_t n);
/* Returns 1 when object d is present with the given size (UINT64_MAX: any size), 0 when it is
 * missing, -1 on an I/O error. An object of the wrong size is corrupt: it is removed, with a
 * warning, and reported missing. */
int store_has(store *s, const uint8_t d[32], uint64_t size, err *e);
/* Opens object d read-only, checked by size as in store_has; returns the fd, or -1 with e set
 * (a missing object says so). */
int store_open_object(store *s, const uint8_t d[32], uint64_t size, err *e);

/* An object being written: bytes stream into a temp file inside the cache while their digest
 * is computed; commit names the object by that digest. */
typedef struct store_writer {
	store *s;
	afile f;    /* the temp file in <dir>/tmp */
	sha256 sha; /* running digest of what was written */
	int open;   /* set by store_writer_open, cleared by commit/abort */
} store_writer;

/* Starts an object. Returns 0 or -1. */
int store_writer_open(store *s, store_writer *w, err *e);
/* Appends n bytes; returns 0 or -1 (ENOSPC named with the path). */
int store_writer_write(store_writer *w, const void *p, size_t n, err *e);
/* Finishes the object: fsync, make read-only, rename to its digest (dropping the temp when the
 * object already exists). With expect non-NULL, bytes whose digest differs are refused
 * (for downloads). Writes the digest and size when the pointers are non-NULL. Returns 0 or -1;
 * either way the writer is finished. */
int store_writer_commit(store_writer *w, const uint8_t *expect, uint8_t d[32], uint64_t *size,
			err *e);
/* Drops the temp file; safe after commit or a failed open. */
void store_writer_abort(store_writer *w);

/* Adds a buffer as an object; returns 0 or -1. */
int store_put_buf(store *s, const void *p, size_t n, uint8_t d[32], err *e);
/* store_put_file may hardlink the file into the store instead of copying (same filesystem);
 * the file becomes read-only and must never be modified afterwards (build outputs). */
#define STORE_PUT_LINK 1
/* Adds an existing file as an object (copying it, or linking with STORE_PUT_LINK); writes its
 * digest and size. Returns 0 or -1. */
int store_put_file(store *s, const char *path, int flags, uint8_t d[32], uint64_t *size, err *e);

/* store_materialize never hardlinks with this flag (a copy the user may edit). */
#define STORE_MAT_COPY 1
/* Places object d (of the given size) at dest: a hardlink to the object when possible, else a
 * copy checked against d; atomic (temp beside dest, rename), so dest is never partial.
 * Returns 0 or -1 naming dest or the object. */
int store_materialize(store *s, const uint8_t d[32], uint64_t size, const char *dest, int flags,
		      err *e);

/* ---- Stat cache: (device, inode, size, mtime, ctime) -> digest ---- */

/* Writes the SHA-256 (and size, if non-NULL) of the file at path, reading it only when the
 * stat cache has no trustworthy entry for it (see racy_ns). Returns 0 or -1. */
int store_hash_file(store *s, const char *path, uint8_t d[32], uint64_t *size, err *e);

/* ---- Action cache: node key -> outputs and small results ---- */

/* One output of an action. */
typedef struct store_output {
	char *name;        /* the engine's name for it ("model.gguf"), owned; no newline or NUL */
	uint8_t digest[32];
	uint64_t size;
} store_output;

/* What an action produced. Built by the engine before store_ac_put; filled by store_ac_get
 * (then freed with store_action_free). */
typedef struct store_action {
	store_output *outs; /* owned array */
	size_t nouts;
	char *figures;      /* JSON text of the measured figures, or NULL; owned */
	char *log;          /* the action's log text, or NULL; owned */
} store_action;

/* Appends an output (name copied); returns 0 or -1 (out of memory). */
int store_action_add(store_action *a, const char *name, const uint8_t d[32], uint64_t size,
		     err *e);
/* Frees a's contents and zeroes it. */
void store_action_free(store_action *a);
/* Serialises a into a malloc'd buffer (the bytes stored under ac/, and what a remote cache
 * holds); returns it with *n set, or NULL. */
char *store_action_encode(const store_action *a, const uint8_t key[32], size_t *n, err *e);
/* Parses and validates (checksum, key, syntax) an encoded record into a; returns 0, or -1 with
 * e saying what is wrong. */
int store_action_decode(const char *p, size_t n, const uint8_t key[32], store_action *a, err *e);

/* Records action key's result (its outputs must already be objects). Returns 0 or -1. */
int store_ac_put(store *s, const uint8_t key[32], const store_action *a, err *e);
/* Looks up key: returns 1 and fills a when the record is valid and every output object is
 * present with its recorded size; 0 on a miss (a damaged record or a missing object is a
 * miss, with a warning); -1 on an I/O error. */
int store_ac_get(store *s, const uint8_t key[32], store_action *a, err *e);
/* The raw record bytes of key (malloc'd, *n set) or NULL with e unset on a miss. */
char *store_ac_get_raw(store *s, const uint8_t key[32], size_t *n, err *e);
/* Stores raw record bytes for key after validating them; returns 0 or -1. */
int store_ac_put_raw(store *s, const uint8_t key[32], const char *p, size_t n, err *e);

/* Serialises the current process's build of one action: takes an exclusive lock on key so a
 * second builder of the same node waits, then (after store_ac_get again) reuses the result.
 * Returns an fd to pass to store_unlock_key, or -1. */
int store_lock_key(store *s, const uint8_t key[32], err *e);
/* Releases a store_lock_key lock. */
void store_unlock_key(int fd);

/* ---- Roots for gc ---- */

/* Records that a build named id (e.g. the digest of the recipe's path) needs these action keys
 * and objects, replacing that build's previous record; stamped with the current time.
 * Returns 0 or -1. */
int store_ref_put(store *s, const uint8_t id[32], const uint8_t (*keys)[32], size_t nkeys,
		  const uint8_t (*objs)[32], size_t nobjs, err *e);

/* What gc or verify did. */
typedef struct store_report {
	uint64_t objects, object_bytes;   /* objects examined and their bytes */
	uint64_t actions;                 /* action records examined */
	uint64_t removed_objects, removed_bytes;
	uint64_t removed_actions, removed_refs, removed_stat, removed_tmp;
	uint64_t corrupt;                 /* damaged objects or records found (verify, gc) */
	uint64_t kept_bytes;              /* object and record bytes left afterwards */
} store_report;

/* store_gc's max_size meaning "no size limit: drop only what no build references". */
#define STORE_GC_UNREFERENCED UINT64_MAX
/* Takes the exclusive lock, then drops action records and objects that no ref needs, oldest
 * first, until the cache is under max_size; when still over, drops whole refs, oldest build
 * first, and what only they needed. Also drops records whose objects are gone, stale temp
 * files and stat entries unused for 30 days. Returns 0 or -1. */
int store_gc(store *s, uint64_t max_size, store_report *r, err *e);
/* Takes the exclusive lock, rehashes every object and parses every record, removing (and
 * warning about) each damaged one and each record whose objects are gone. Returns the number
 * of damaged entries found (0: clean), or -1 on an I/O error. */
int store_verify(store *s, store_report *r, err *e);

#endif
