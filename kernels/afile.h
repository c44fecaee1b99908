/* afile.h - atomic output files: temp file beside the target, fsync, rename */
#ifndef QBAKE_AFILE_H
#define QBAKE_AFILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"
#include "sha256.h"

/* A file being written. Nothing appears at `path` until afile_commit;
 * afile_abort (or a crash) leaves at most a ".qbake-tmp.*" file beside it,
 * never a partial file under the final name. */
typedef struct afile {
	char *path;     /* final name, owned */
	char *tmp;      /* temp name in the same folder, owned */
	int fd;         /* open on tmp */
	uint64_t size;  /* bytes written so far */
	int hashing;    /* set by afile_open when a digest was asked for */
	sha256 sha;     /* running digest of everything written, when hashing */
} afile;

/* Opens a temp file beside path (mode 0644, or 0600 when private); with hash set, keeps a
 * running SHA-256. Returns 0, or -1 with e naming path. */
int afile_open(afile *f, const char *path, int hash, int private_mode, err *e);
/* Appends n bytes; returns 0 or -1 (ENOSPC and friends named in e). */
int afile_write(afile *f, const void *p, size_t n, err *e);
/* Appends n zero bytes; returns 0 or -1. */
int afile_zeros(afile *f, size_t n, err *e);
/* fsyncs, renames over path, fsyncs the folder, frees; digest (if hashing and non-NULL)
 * receives the SHA-256. Returns 0, or -1 after removing the temp file. */
int afile_commit(afile *f, uint8_t digest[32], err *e);
/* Removes the temp file and frees; safe after a failed afile_open. */
void afile_abort(afile *f);

/* Writes a whole buffer to path atomically; returns 0 or -1. */
int afile_put(const char *path, const void *p, size_t n, err *e);

#endif
