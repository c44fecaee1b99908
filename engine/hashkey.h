/* hashkey.h - node keys: SHA-256 over a canonical, typed, length-prefixed encoding */
#ifndef QBAKE_HASHKEY_H
#define QBAKE_HASHKEY_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "sha256.h"

/* A key being computed. Every value is fed as a type tag, a 64-bit little-endian length and
 * the bytes, so no two different sequences of values share an encoding: ("ab","c") and
 * ("a","bc") differ, so do the string "1" and the integer 1, and a list of two strings and two
 * strings. Keys hold only values that define a result (action name and version, parameters,
 * input digests): never paths, times, thread counts or host names. */
typedef struct hkey {
	sha256 sha; /* set by hkey_begin, freed by hkey_end */
} hkey;

/* Starts a key in a domain ("qbake-node 1": changing it changes every key). Returns 0 or -1. */
int hkey_begin(hkey *h, const char *domain, err *e);
/* Adds a NUL-terminated string. */
void hkey_str(hkey *h, const char *s);
/* Adds n raw bytes. */
void hkey_bytes(hkey *h, const void *p, size_t n);
/* Adds an unsigned integer. */
void hkey_u64(hkey *h, uint64_t v);
/* Adds a signed integer. */
void hkey_i64(hkey *h, int64_t v);
/* Adds a double by its IEEE-754 bits (-0 is written as +0, every NaN as one NaN). */
void hkey_f64(hkey *h, double v);
/* Adds a 32-byte content digest. */
void hkey_digest(hkey *h, const uint8_t d[32]);
/* Starts a list of n values (which follow); lists nest. */
void hkey_list(hkey *h, uint64_t n);
/* Adds a named field: the name, then the caller adds its value. */
void hkey_field(hkey *h, const char *name);
/* Writes the key and frees h; returns 0. */
int hkey_end(hkey *h, uint8_t key[32]);

#endif
