/* cachecmd.h - the `qbake cache` and `qbake gc` commands */
#ifndef QBAKE_CACHECMD_H
#define QBAKE_CACHECMD_H

#include <stdint.h>

#include "err.h"

/* Help texts for the command table. */
extern const char cachecmd_cache_help[];
extern const char cachecmd_gc_help[];

/* `qbake cache verify [--cache DIR]`; returns the exit code. */
int cachecmd_cache_main(int argc, char **argv);
/* `qbake gc [--max-size SIZE] [--cache DIR]`; returns the exit code. */
int cachecmd_gc_main(int argc, char **argv);
/* Parses a size such as 123, 500M, 10G or 1.5T (K/M/G/T are powers of 1024, an optional
 * trailing B or iB is allowed); returns 0, or -1 with e saying what is wrong. */
int cachecmd_parse_size(const char *s, uint64_t *out, err *e);

#endif
