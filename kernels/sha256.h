/* sha256.h - SHA-256 digests (OpenSSL libcrypto underneath) */
#ifndef QBAKE_SHA256_H
#define QBAKE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* An incremental SHA-256. Owned by whoever called sha256_init; free with sha256_free
 * (sha256_final does not free). */
typedef struct sha256 {
	void *ctx; /* EVP_MD_CTX *, set by sha256_init */
} sha256;

/* Starts a digest; returns 0, or -1 when libcrypto fails (out of memory). */
int sha256_init(sha256 *s);
/* Feeds n bytes. */
void sha256_update(sha256 *s, const void *p, size_t n);
/* Writes the 32-byte digest; the context may not be updated again. */
void sha256_final(sha256 *s, uint8_t out[32]);
/* Releases the context. */
void sha256_free(sha256 *s);

/* Digest of one buffer. */
void sha256_buf(const void *p, size_t n, uint8_t out[32]);
/* Digest of a whole file (read in chunks); returns 0 or -1 with e naming the file. */
int sha256_file(const char *path, uint8_t out[32], err *e);
/* Lower-case hex of a digest into hex (65 bytes with the NUL); returns hex. */
char *sha256_hex(const uint8_t d[32], char hex[65]);
/* Parses 64 hex digits; returns 0, or -1 if hex is not a digest. */
int sha256_unhex(const char *hex, uint8_t d[32]);

#endif
