/* attest.h - signed provenance: Ed25519 keys, in-toto/SLSA statements, DSSE envelopes, model.sig */
#ifndef QBAKE_ATTEST_H
#define QBAKE_ATTEST_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"
#include "gguf.h"

/* The formats (field names checked against the specifications):
 *  - DSSE v1 (github.com/secure-systems-lab/dsse, protocol.md and envelope.md): the envelope
 *    {"payload": base64, "payloadType": TYPE, "signatures": [{"keyid", "sig": base64}]},
 *    each signature over PAE(TYPE, payload) = "DSSEv1 " LEN(TYPE) " " TYPE " " LEN(body) " " body.
 *  - in-toto Statement v1: {"_type": "https://in-toto.io/Statement/v1", "subject":
 *    [{"name", "digest": {"sha256"}}], "predicateType", "predicate"}.
 *  - SLSA provenance v1 predicate: {"buildDefinition": {"buildType", "externalParameters",
 *    "resolvedDependencies": [ResourceDescriptor]}, "runDetails": {"builder": {"id",
 *    "version": {"qbake": ...}}}}; no timestamps, so the same build gives the same bytes.
 *  - OpenSSF model signing v1.0 (github.com/sigstore/model-transparency): see attest_model_sig_write. */

#define ATTEST_PAYLOAD_TYPE "application/vnd.in-toto+json"
#define ATTEST_STATEMENT_TYPE "https://in-toto.io/Statement/v1"
#define ATTEST_SLSA_TYPE "https://slsa.dev/provenance/v1"
#define ATTEST_MODEL_SIG_TYPE "https://model_signing/signature/v1.0"
#define ATTEST_BUILD_TYPE "https://qbake.dev/release/v1"
#define ATTEST_BUILDER_ID "https://qbake.dev/builder/local/v1"
/* The release folder's file names. */
#define ATTEST_FILE "attestation.dsse.json"
#define ATTEST_MODEL_SIG "model.sig"

/* ---- keys ---- */

/* A private or public key (an EVP_PKEY underneath): Ed25519 is what `qbake keygen` makes;
 * ECDSA P-256/384/521 keys (from openssl genpkey) also sign and verify, for model.sig users
 * whose verifier only takes EC keys. */
typedef struct attest_key attest_key;

/* Writes NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub (SubjectPublicKeyInfo PEM) for a
 * new Ed25519 key; refuses to overwrite either. keyid (65 bytes, may be NULL) receives the
 * key's id. Returns 0 or -1. */
int attest_keygen(const char *name, char keyid[65], err *e);
/* Loads a PEM private key; returns it, or NULL with e naming path. */
attest_key *attest_key_load(const char *path, err *e);
/* Loads a PEM public key (a private key file also works: its public half is used);
 * returns it, or NULL with e naming path. */
attest_key *attest_pub_load(const char *path, err *e);
/* Frees a key (NULL is fine). */
void attest_key_free(attest_key *k);
/* The key id: lowercase hex SHA-256 of the DER SubjectPublicKeyInfo; returns hex, or NULL. */
char *attest_keyid(const attest_key *k, char hex[65]);
/* Signs msg; returns a malloc'd signature (length in *siglen), or NULL with e set. */
uint8_t *attest_sign(const attest_key *k, const void *msg, size_t n, size_t *siglen, err *e);
/* Returns 1 when sig is k's signature of msg, 0 when it is not. */
int attest_check(const attest_key *k, const void *msg, size_t n, const uint8_t *sig, size_t siglen);

/* ---- encodings ---- */

/* Standard base64 with padding (malloc'd, NUL-terminated), or NULL. */
char *attest_b64(const void *p, size_t n);
/* Decodes standard or URL-safe base64, padded or not (DSSE verifiers must take both);
 * returns the malloc'd bytes (length in *out_n), or NULL if s is not base64. */
uint8_t *attest_unb64(const char *s, size_t *out_n);
/* DSSE's Pre-Authentication Encoding of (type, body); malloc'd, length in *out_n, or NULL. */
uint8_t *attest_pae(const char *type, const void *body, size_t n, size_t *out_n);

/* ---- lineage: the qbake.* keys of a GGUF ---- */

/* One lineage entry; both strings owned by the attest_lineage holding it. */
typedef struct attest_kv {
	char *key;   /* "qbake.tier" */
	char *value; /* the value as text: strings as they are, integers in decimal, floats
	              * as %.17g, booleans true/false, arrays as compact JSON */
} attest_kv;

/* Every qbake.* key of a file, in key order. */
typedef struct attest_lineage {
	attest_kv *kv;
	size_t n;
} attest_lineage;

/* Collects m's qbake.* keys; returns 0 or -1 (out of memory). */
int attest_lineage_from_meta(const gguf_meta *m, attest_lineage *out, err *e);
/* Frees the entries. */
void attest_lineage_free(attest_lineage *l);

/* How lineage keys map onto the statement (what the build must write, what audit checks):
 *  - every qbake.* key of a file, as text, is in
 *    predicate.buildDefinition.externalParameters.lineage[<subject name>] (all of them,
 *    nothing more: qbake.tier, qbake.imatrix.ctx, qbake.override.* ...);
 *  - qbake.version equals predicate.runDetails.builder.version.qbake;
 *  - qbake.<dep>.sha256 (recipe, source, baseline, imatrix, imatrix.corpus, ...) equals
 *    digest.sha256 of the resolvedDependencies entry named <dep>;
 *  - qbake.<dep>.commit equals digest.gitCommit of the entry named <dep>.
 * qbake.recipe.sha256 is the SHA-256 of the canonical recipe text given to attest_statement
 * (which adds the "recipe" dependency itself). */

/* ---- statements ---- */

/* A file the statement is about. */
typedef struct attest_subject {
	const char *name;              /* file name inside the release folder */
	uint8_t sha256[32];
	const attest_lineage *lineage; /* its qbake.* keys, or NULL for none */
} attest_subject;

/* A resolved dependency (an in-toto ResourceDescriptor). */
typedef struct attest_dep {
	const char *name;       /* "source", "baseline", "imatrix", "imatrix.corpus", "corpus/calib" ... */
	const char *uri;        /* where it came from (a git URL), or NULL */
	const char *sha256;     /* 64 lowercase hex digits, or NULL */
	const char *git_commit; /* 40 hex digits, or NULL */
} attest_dep;

/* What the engine knows about one release. */
typedef struct attest_build {
	const attest_subject *subjects;
	size_t nsubjects;
	const char *recipe;     /* canonical recipe JSON text (recipe_canonical): externalParameters.recipe */
	const char *parameters; /* JSON object text of further parameters (threads excluded), or NULL */
	const attest_dep *deps; /* in a fixed order */
	size_t ndeps;
	const char *version;    /* builder version, e.g. "0.1.0" (= qbake.version) */
} attest_build;

/* Derives the resolved dependencies the lineage names: one entry X per qbake.X.sha256 /
 * qbake.X.commit key of any of the n lineages (except X = recipe, which attest_statement adds),
 * in key order, the first value of a key winning. Fills *deps (strings owned; free with
 * attest_deps_free) and *ndeps. Returns 0 or -1. */
int attest_deps_from_lineage(const attest_lineage *l, size_t n, attest_dep **deps, size_t *ndeps, err *e);
/* Frees what attest_deps_from_lineage made. */
void attest_deps_free(attest_dep *deps, size_t n);

/* The in-toto Statement v1 with the SLSA provenance v1 predicate, as compact JSON with sorted
 * keys (the DSSE payload); malloc'd, or NULL with e set. */
char *attest_statement(const attest_build *b, err *e);
/* Parses a statement payload; checks _type and, when predicate_type is not NULL, the
 * predicate type. Returns a new JSON reference, or NULL with e saying what is wrong. */
json_t *attest_statement_parse(const void *payload, size_t n, const char *predicate_type, err *e);

/* Where a file stands among a statement's subjects. */
enum {
	ATTEST_SUBJECT_OK = 0,       /* a subject has this name and digest */
	ATTEST_SUBJECT_MISMATCH = 1, /* a subject has this name but another digest (in other) */
	ATTEST_SUBJECT_ABSENT = 2,   /* no subject has this digest or name */
	ATTEST_SUBJECT_RENAMED = 3,  /* the digest is a subject under another name (in other) */
};
/* Looks name/sha256 up in stmt's subjects; other (65 bytes, may be NULL) receives the other
 * digest or name for MISMATCH/RENAMED. Returns one of ATTEST_SUBJECT_*. */
int attest_subject_find(json_t *stmt, const char *name, const uint8_t sha256[32], char *other, size_t len);
/* Compares a file's lineage with what stmt says about subject name (mapping above). Each
 * disagreement is one line "qbake.KEY: what differs" appended to why (may be NULL).
 * Returns the number of disagreements. */
int attest_lineage_check(json_t *stmt, const char *name, const attest_lineage *l, char *why, size_t len);

/* ---- DSSE envelopes ---- */

/* The DSSE envelope of payload (pretty JSON, sorted keys, trailing newline), signed with k,
 * or with an empty signature list when k is NULL. malloc'd, or NULL with e set. */
char *attest_envelope(const char *payload_type, const void *payload, size_t n, const attest_key *k, err *e);

/* An opened envelope; owned strings freed by attest_envelope_free. */
typedef struct attest_opened {
	char *payload_type;
	uint8_t *payload;  /* decoded body, NUL-terminated for convenience */
	size_t npayload;
	size_t nsigs;      /* signatures present */
	int verified;      /* 1 when one of them is pub's signature of the PAE */
} attest_opened;

/* Parses an envelope (JSON text) and, when pub is not NULL, checks its signatures. A
 * malformed envelope is -1 with e set; a signature that does not verify is not an error
 * (verified stays 0). Returns 0 or -1. */
int attest_envelope_open(const char *text, size_t n, const attest_key *pub, attest_opened *out, err *e);
/* Frees what attest_envelope_open filled. */
void attest_envelope_free(attest_opened *o);

/* ---- release files ---- */

/* Writes dir/attestation.dsse.json for the GGUFs named in b->subjects: opens each file in
 * dir, hashes it and reads its lineage (b's subjects' digests and lineage are ignored and
 * replaced), then signs with k (unsigned when k is NULL). With b->ndeps == 0 the
 * dependencies are derived from the files' lineage (attest_deps_from_lineage), so they agree
 * by construction. Returns 0 or -1. */
int attest_write_release(const char *dir, const attest_build *b, const attest_key *k, err *e);

/* Writes dir/model.sig, the OpenSSF model-signing v1.0 signature of every regular file in
 * dir (except model.sig and temporary files), signed with k. The shape is what
 * model_signing's own key signer writes: a Sigstore bundle v0.3 JSON
 * {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "verificationMaterial":
 * {"publicKey": {"hint": sha256 hex of the SPKI PEM}, "tlogEntries": []}, "dsseEnvelope":
 * {...}} whose statement has one subject {name: model_name, digest: {sha256: SHA-256 of the
 * concatenated raw file digests in path order}} and the predicate {"serialization":
 * {"method": "files", "hash_type": "sha256", "allow_symlinks": false, "ignore_paths":
 * ["model.sig"]}, "resources": [{"name", "algorithm": "sha256", "digest"}] sorted by name}.
 * Their `verify key` accepts only ECDSA keys: sign with a P-256 key for their tool; an
 * Ed25519 model.sig is checked by attest_model_sig_verify. Call it last (after every other
 * file of the release is in dir). Returns 0 or -1. */
int attest_model_sig_write(const char *dir, const char *model_name, const attest_key *k, err *e);
/* Checks dir/model.sig with pub: the signature, the root digest, and that the files in dir
 * are exactly the resources with their digests. Returns 0 (verified) or -1 with e saying
 * what differs. */
int attest_model_sig_verify(const char *dir, const attest_key *pub, err *e);

#endif
