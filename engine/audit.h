/* audit.h - `qbake audit`: where a GGUF came from, and whether its attestation proves it */
#ifndef QBAKE_AUDIT_H
#define QBAKE_AUDIT_H

#include <jansson.h>

#include "err.h"

/* Exit codes of `qbake audit` (also the "exit" field of the report). */
enum {
	AUDIT_VERIFIED = 0,     /* signature, subject digest and lineage all check out */
	AUDIT_FAILED = 1,       /* something checked and did not match ("failures" says what) */
	AUDIT_USAGE = 2,        /* usage error or unreadable input */
	AUDIT_UNVERIFIABLE = 3, /* no lineage, no attestation, unsigned, or no key to check with */
};

/* What to audit. */
typedef struct audit_opts {
	const char *path;        /* the GGUF file */
	const char *attestation; /* the DSSE envelope; NULL = attestation.dsse.json beside path */
	const char *pubkey;      /* PEM public key to check the signature with; NULL = not checked */
	const char *cache;       /* a qbake cache to look for the dependencies in; NULL = none */
} audit_opts;

/* The audit report as JSON (the object --json prints, with "exit" set to one of AUDIT_*);
 * NULL with e set when the GGUF, the attestation or the key cannot be read (exit 2). */
json_t *audit_report(const audit_opts *o, err *e);

/* `qbake audit FILE.gguf [--attestation F] [--pubkey P] [--cache DIR] [--json]`. */
int audit_main(int argc, char **argv);
/* `qbake keygen NAME`. */
int audit_keygen_main(int argc, char **argv);
/* Help texts for the command table. */
extern const char audit_help[], audit_keygen_help[];

#endif
