/* audit.c - `qbake audit` and `qbake keygen`: provenance of a GGUF, checked against its attestation */
#include "audit.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "attest.h"
#include "gguf.h"
#include "quant.h"
#include "rules.h"
#include "sha256.h"
#include "store.h"

const char audit_help[] =
	"usage: qbake audit FILE.gguf [--attestation F] [--pubkey P] [--cache DIR] [--json]\n"
	"\n"
	"Says where a GGUF file came from and whether that can be proven.\n"
	"\n"
	"For any GGUF: a histogram of tensor types (tensors, weights, bytes); whether it looks\n"
	"requantized (a Q8_0 or Q6_K tensor whose dequantized blocks sit on an affine grid of\n"
	"fewer levels than its own type has - e.g. a Q8_0 made from a Q4_0 - or F16/BF16/F32\n"
	"weights on a grid of 8 bits or fewer, or a qbake.override.requantized_baseline key);\n"
	"the quantize.imatrix.* keys; the qbake.* lineage keys; and what provenance is missing.\n"
	"\n"
	"For a file qbake built (one with qbake.* keys): reads the DSSE attestation (F, default\n"
	"attestation.dsse.json in the file's folder) and checks\n"
	"  - the Ed25519 (or ECDSA) signature over it, with the public key P (qbake keygen's\n"
	"    NAME.pub; without --pubkey the signature is not checked and the file is unverifiable),\n"
	"  - that the file's SHA-256 is one of the statement's subjects, under the file's name,\n"
	"  - that every qbake.* key agrees with the attestation: the statement records each\n"
	"    file's keys under externalParameters.lineage; qbake.version is the builder version;\n"
	"    qbake.X.sha256 and qbake.X.commit are the sha256 and gitCommit digests of the\n"
	"    resolved dependency named X (recipe, source, baseline, imatrix, imatrix.corpus).\n"
	"With --cache DIR, each dependency digest is also looked up among the cache's objects\n"
	"(reported, never a failure: a cache may have been cleaned).\n"
	"\n"
	"options:\n"
	"  --attestation F   the DSSE envelope to check against\n"
	"  --pubkey P        the PEM public key that must have signed it\n"
	"  --cache DIR       a qbake cache to look the dependencies up in\n"
	"  --json            print the report as one JSON object\n"
	"\n"
	"exit codes:\n"
	"  0  verified: signature, subject digest and lineage all agree\n"
	"  1  failed: the signature, the digest or a lineage key does not match (each reason\n"
	"     is printed)\n"
	"  2  usage error, or the GGUF, the attestation or the key cannot be read\n"
	"  3  unverifiable: a foreign file (no qbake.* keys), no attestation, an unsigned\n"
	"     attestation, or no --pubkey to check the signature with\n"
	"\n"
	"example:\n"
	"  qbake keygen release-key\n"
	"  qbake build --sign release-key.key\n"
	"  qbake audit release/pydoc-8m/pydoc-8m-Q4_K_M.gguf --pubkey release-key.pub\n";

const char audit_keygen_help[] =
	"usage: qbake keygen NAME\n"
	"\n"
	"Makes an Ed25519 signing key: NAME.key (the private key, PKCS#8 PEM, mode 0600) and\n"
	"NAME.pub (the public key, SubjectPublicKeyInfo PEM), and prints the key id (the\n"
	"SHA-256 of the public key's DER encoding, the keyid of the signatures it makes).\n"
	"Refuses to overwrite an existing NAME.key or NAME.pub. Give NAME.key to\n"
	"`qbake build --sign` and NAME.pub to whoever runs `qbake audit --pubkey`.\n"
	"\n"
	"exit codes: 0 written, 1 the key could not be made or written, 2 usage error\n"
	"\n"
	"example:\n"
	"  qbake keygen release-key && ls -l release-key.key release-key.pub\n";

/* ---- requantization evidence ---- */

/* The bits of the finest grid a tensor type can hold, and the relative rounding of one
 * value (half a step of its grid, relative to the block's largest value); 0 for types
 * whose grids are too coarse to hide a coarser one measurably. */
static int own_bits(uint32_t type, double *rel_tol)
{
	switch (type) {
	case GGUF_TYPE_Q8_0:
		*rel_tol = 0x1p-8;
		return 8;
	case GGUF_TYPE_Q6_K:
		*rel_tol = 0x1p-6;
		return 6;
	case GGUF_TYPE_F16:
		*rel_tol = 0x1p-11;
		return 16;
	case GGUF_TYPE_BF16:
		*rel_tol = 0x1p-8;
		return 16;
	case GGUF_TYPE_F32:
		*rel_tol = 0x1p-24;
		return 32;
	default:
		return 0;
	}
}

enum { AUDIT_ROWS = 64, AUDIT_BLOCKS = 2048 };

/* Grid evidence of one weight tensor as JSON, json_null() when there is none, NULL on out
 * of memory. */
static json_t *grid_evidence(const gguf_tensor *t)
{
	double tol = 0;
	int bits = own_bits(t->type, &tol);
	size_t len = strlen(t->name);
	uint64_t rows, take, row_bytes;
	rules_grid g;
	float *x;

	if (!bits || t->n_dims < 2 || t->ne[0] % 32 != 0 || !quant_can_dequantize(t->type) || len < 7 ||
	    strcmp(t->name + len - 7, ".weight") != 0 || strstr(t->name, "norm"))
		return json_null();
	rows = gguf_nelements(t) / t->ne[0];
	take = rows < AUDIT_ROWS ? rows : AUDIT_ROWS;
	row_bytes = gguf_row_size(t->type, t->ne[0]);
	if (!(x = malloc(take * t->ne[0] * sizeof *x)))
		return NULL;
	for (uint64_t i = 0; i < take; i++)
		quant_dequant_row(t->type, (const uint8_t *)t->data + (i * rows / take) * row_bytes, x + i * t->ne[0],
				  (int64_t)t->ne[0]);
	rules_grid_check(x, (int64_t)take, (int64_t)t->ne[0], tol, AUDIT_BLOCKS, &g);
	free(x);
	if (!rules_grid_suspicious(&g) || g.bits >= bits)
		return json_null();
	return json_pack("{s:s, s:s, s:I, s:I, s:i, s:i}", "tensor", t->name, "type", gguf_type(t->type)->name, "blocks",
			 (json_int_t)(g.blocks - g.undecided), "on_grid", (json_int_t)g.on_grid, "bits", g.bits, "block",
			 g.block);
}

/* ---- the report ---- */

static json_t *histogram(const gguf_file *f)
{
	json_t *h = json_object();

	for (uint64_t i = 0; i < f->n_tensors; i++) {
		const gguf_type_info *ti = gguf_type(f->tensors[i].type);
		const char *name = ti && ti->name ? ti->name : "unknown";
		json_t *row = json_object_get(h, name);

		if (!row) {
			row = json_pack("{s:I, s:I, s:I}", "tensors", (json_int_t)0, "weights", (json_int_t)0, "bytes",
					(json_int_t)0);
			json_object_set_new(h, name, row);
		}
		json_object_set_new(row, "tensors", json_integer(json_integer_value(json_object_get(row, "tensors")) + 1));
		json_object_set_new(row, "weights", json_integer(json_integer_value(json_object_get(row, "weights")) +
								  (json_int_t)gguf_nelements(&f->tensors[i])));
		json_object_set_new(row, "bytes", json_integer(json_integer_value(json_object_get(row, "bytes")) +
								(json_int_t)f->tensors[i].nbytes));
	}
	return h;
}

/* The keys starting with prefix, by the rest of their name, values as text. */
static json_t *keys_with_prefix(const gguf_file *f, const char *prefix)
{
	json_t *o = json_object();
	size_t plen = strlen(prefix);
	attest_lineage l;
	gguf_meta sub = { 0 };

	/* attest_lineage_from_meta renders qbake.* values as text: rename the keys to match. */
	for (size_t i = 0; i < f->meta.n; i++) {
		char key[512];

		if (strncmp(f->meta.kv[i].key, prefix, plen) != 0)
			continue;
		snprintf(key, sizeof key, "qbake.%s", f->meta.kv[i].key + plen);
		gguf_meta_set_value(&sub, key, &f->meta.kv[i].v);
	}
	if (attest_lineage_from_meta(&sub, &l, NULL) == 0) {
		for (size_t i = 0; i < l.n; i++)
			json_object_set_new(o, l.kv[i].key + 6, json_string(l.kv[i].value));
		attest_lineage_free(&l);
	}
	gguf_meta_free(&sub);
	return o;
}

static char *slurp(const char *path, size_t *n, err *e)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long len;

	if (!f) {
		err_errno(e, "%s: cannot open", path);
		return NULL;
	}
	if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && len < (1L << 30) && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)len + 1)) != NULL && fread(buf, 1, (size_t)len, f) == (size_t)len) {
		buf[len] = 0;
		*n = (size_t)len;
	} else {
		free(buf);
		buf = NULL;
		err_errno(e, "%s: cannot read", path);
	}
	fclose(f);
	return buf;
}

static void add(json_t *list, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void add(json_t *list, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	json_array_append_new(list, json_string(buf));
}

/* The file's base name and folder. */
static void split(const char *path, char *dir, size_t dlen, const char **base)
{
	const char *slash = strrchr(path, '/');

	*base = slash ? slash + 1 : path;
	if (!slash)
		snprintf(dir, dlen, ".");
	else if (slash == path)
		snprintf(dir, dlen, "/");
	else
		snprintf(dir, dlen, "%.*s", (int)(slash - path), path);
}

/* Looks every dependency digest up in the cache (informative). */
static json_t *chain(json_t *stmt, const char *cache)
{
	json_t *deps = json_object_get(json_object_get(json_object_get(stmt, "predicate"), "buildDefinition"),
				       "resolvedDependencies"), *d, *out = json_array();
	store s;
	size_t i;
	err e = { 0 };

	if (store_open(&s, cache, &e) < 0) {
		json_array_append_new(out, json_pack("{s:s}", "error", e.msg));
		return out;
	}
	json_array_foreach(deps, i, d) {
		const char *hex = json_string_value(json_object_get(json_object_get(d, "digest"), "sha256"));
		uint8_t dg[32];
		int has;

		if (!hex || sha256_unhex(hex, dg) < 0)
			continue;
		has = store_has(&s, dg, UINT64_MAX, &e);
		json_array_append_new(out, json_pack("{s:s, s:s, s:b}", "name",
						     json_string_value(json_object_get(d, "name")) ?
							     json_string_value(json_object_get(d, "name")) : "?",
						     "sha256", hex, "in_cache", has > 0));
	}
	store_close(&s);
	return out;
}

/* Checks the attestation of a file with lineage; fills att, failures and missing. Returns 0,
 * or -1 (exit 2) when the attestation or the key cannot be read. */
static int check_attestation(const audit_opts *o, const char *base, const uint8_t digest[32], const attest_lineage *l,
			     json_t *report, json_t *failures, json_t *missing, err *e)
{
	char dir[PATH_MAX], path[PATH_MAX + 32], keyid[65] = "", other[256], why[8192];
	const char *att_path = o->attestation;
	json_t *att = json_object(), *stmt = NULL;
	attest_key *pub = NULL;
	attest_opened env;
	struct stat st;
	size_t n;
	char *text;
	int rc = 0, sub;

	json_object_set_new(report, "attestation", att);
	if (!att_path) {
		split(o->path, dir, sizeof dir, &base);
		snprintf(path, sizeof path, "%s/%s", dir, ATTEST_FILE);
		att_path = path;
	}
	json_object_set_new(att, "path", json_string(att_path));
	if (!o->attestation && stat(att_path, &st) < 0 && errno == ENOENT) {
		json_object_set_new(att, "found", json_false());
		add(missing, "no attestation (looked for %s)", att_path);
		return 0;
	}
	json_object_set_new(att, "found", json_true());
	if (!(text = slurp(att_path, &n, e)))
		return -1;
	if (o->pubkey && !(pub = attest_pub_load(o->pubkey, e))) {
		free(text);
		return -1;
	}
	if (attest_envelope_open(text, n, pub, &env, e) < 0) {
		add(failures, "%s: %s", att_path, e->msg);
		err_clear(e);
		goto done;
	}
	json_object_set_new(att, "signatures", json_integer((json_int_t)env.nsigs));
	if (pub)
		json_object_set_new(att, "keyid", json_string(attest_keyid(pub, keyid) ? keyid : ""));
	if (env.nsigs == 0) {
		add(missing, "the attestation is unsigned");
	} else if (!pub) {
		add(missing, "the signature was not checked (no --pubkey)");
	} else if (!env.verified) {
		add(failures, "signature: %s is not signed by the key %s (keyid %s)", att_path, o->pubkey, keyid);
	}
	json_object_set_new(att, "signature_verified", json_boolean(env.verified));
	if (strcmp(env.payload_type, ATTEST_PAYLOAD_TYPE) != 0) {
		add(failures, "%s: payloadType is %s, not %s", att_path, env.payload_type, ATTEST_PAYLOAD_TYPE);
		goto done;
	}
	if (!(stmt = attest_statement_parse(env.payload, env.npayload, ATTEST_SLSA_TYPE, e))) {
		add(failures, "%s: %s", att_path, e->msg);
		err_clear(e);
		goto done;
	}
	sub = attest_subject_find(stmt, base, digest, other, sizeof other);
	json_object_set_new(att, "subject", json_boolean(sub == ATTEST_SUBJECT_OK));
	if (sub != ATTEST_SUBJECT_OK) {
		char hex[65];

		sha256_hex(digest, hex);
		if (sub == ATTEST_SUBJECT_MISMATCH)
			add(failures, "digest mismatch: the file's SHA-256 is %s, the attestation records %s for %s", hex,
			    other, base);
		else if (sub == ATTEST_SUBJECT_RENAMED)
			add(failures, "name mismatch: the attestation records this SHA-256 (%s) as %s, not %s", hex, other, base);
		else
			add(failures, "digest mismatch: neither the file's SHA-256 %s nor its name %s is a subject of %s", hex,
			    base, att_path);
	}
	if (attest_lineage_check(stmt, base, l, why, sizeof why) > 0) {
		char *line = why, *nl;

		while (*line && (nl = strchr(line, '\n')) != NULL) {
			*nl = 0;
			add(failures, "lineage %s", line);
			line = nl + 1;
		}
	}
	if (o->cache)
		json_object_set_new(report, "chain", chain(stmt, o->cache));
done:
	json_decref(stmt);
	attest_envelope_free(&env);
	attest_key_free(pub);
	free(text);
	return rc;
}

json_t *audit_report(const audit_opts *o, err *e)
{
	gguf_file f;
	json_t *report, *evidence = json_array(), *failures = json_array(), *missing = json_array(), *lin;
	uint8_t digest[32];
	char hex[65], dir[PATH_MAX];
	const char *base;
	attest_lineage l;
	int looks, code;

	if (gguf_open(&f, o->path, e) < 0 || sha256_file(o->path, digest, e) < 0) {
		gguf_close(&f);
		json_decref(evidence);
		json_decref(failures);
		json_decref(missing);
		return NULL;
	}
	split(o->path, dir, sizeof dir, &base);
	for (uint64_t i = 0; i < f.n_tensors; i++) {
		json_t *ev = grid_evidence(&f.tensors[i]);

		if (ev && !json_is_null(ev))
			json_array_append(evidence, ev);
		json_decref(ev);
	}
	looks = json_array_size(evidence) > 0 || gguf_meta_find(&f.meta, "qbake.override.requantized_baseline.reason") ||
		gguf_meta_find(&f.meta, "qbake.override.requantized_baseline");
	if (attest_lineage_from_meta(&f.meta, &l, e) < 0) {
		gguf_close(&f);
		json_decref(evidence);
		json_decref(failures);
		json_decref(missing);
		return NULL;
	}
	lin = json_object();
	for (size_t i = 0; i < l.n; i++)
		json_object_set_new(lin, l.kv[i].key, json_string(l.kv[i].value));
	report = json_pack("{s:s, s:s, s:I, s:o, s:{s:b, s:o}, s:o, s:o}", "file", o->path, "sha256",
			   sha256_hex(digest, hex), "tensors", (json_int_t)f.n_tensors, "types", histogram(&f),
			   "requantized", "looks_requantized", looks, "evidence", evidence, "imatrix",
			   keys_with_prefix(&f, "quantize.imatrix."), "lineage", lin);
	gguf_close(&f);
	if (l.n == 0) {
		add(missing, "no qbake.* lineage keys: not built by qbake, or stripped");
		if (o->attestation || o->pubkey)
			add(missing, "nothing to check the attestation against");
	} else if (check_attestation(o, base, digest, &l, report, failures, missing, e) < 0) {
		attest_lineage_free(&l);
		json_decref(report);
		json_decref(failures);
		json_decref(missing);
		return NULL;
	}
	attest_lineage_free(&l);
	code = json_array_size(failures) ? AUDIT_FAILED : json_array_size(missing) ? AUDIT_UNVERIFIABLE : AUDIT_VERIFIED;
	json_object_set_new(report, "missing_provenance", missing);
	json_object_set_new(report, "failures", failures);
	json_object_set_new(report, "verdict", json_string(code == AUDIT_VERIFIED ? "verified" :
							   code == AUDIT_FAILED ? "failed" : "unverifiable"));
	json_object_set_new(report, "exit", json_integer(code));
	return report;
}

/* ---- the commands ---- */

static void print_text(json_t *r)
{
	json_t *v, *list;
	const char *k;
	size_t i;

	printf("file:     %s\nsha256:   %s\ntensors:  %lld\n", json_string_value(json_object_get(r, "file")),
	       json_string_value(json_object_get(r, "sha256")), (long long)json_integer_value(json_object_get(r, "tensors")));
	printf("types:\n");
	json_object_foreach(json_object_get(r, "types"), k, v)
		printf("  %-8s %5lld tensors %12lld weights %12lld bytes\n", k,
		       (long long)json_integer_value(json_object_get(v, "tensors")),
		       (long long)json_integer_value(json_object_get(v, "weights")),
		       (long long)json_integer_value(json_object_get(v, "bytes")));
	v = json_object_get(r, "requantized");
	printf("requantized: %s\n", json_is_true(json_object_get(v, "looks_requantized")) ? "looks requantized" : "no sign of it");
	json_array_foreach(json_object_get(v, "evidence"), i, list)
		printf("  %s (%s): %lld of %lld blocks of %lld values on a %lld-bit affine grid\n",
		       json_string_value(json_object_get(list, "tensor")), json_string_value(json_object_get(list, "type")),
		       (long long)json_integer_value(json_object_get(list, "on_grid")),
		       (long long)json_integer_value(json_object_get(list, "blocks")),
		       (long long)json_integer_value(json_object_get(list, "block")),
		       (long long)json_integer_value(json_object_get(list, "bits")));
	printf("imatrix keys:%s\n", json_object_size(json_object_get(r, "imatrix")) ? "" : " none");
	json_object_foreach(json_object_get(r, "imatrix"), k, v)
		printf("  quantize.imatrix.%s = %s\n", k, json_string_value(v));
	printf("lineage:%s\n", json_object_size(json_object_get(r, "lineage")) ? "" : " none");
	json_object_foreach(json_object_get(r, "lineage"), k, v)
		printf("  %s = %s\n", k, json_string_value(v));
	if ((v = json_object_get(r, "attestation")) != NULL) {
		printf("attestation: %s", json_string_value(json_object_get(v, "path")));
		if (json_is_true(json_object_get(v, "found")))
			printf(" (%lld signature(s)%s)", (long long)json_integer_value(json_object_get(v, "signatures")),
			       json_is_true(json_object_get(v, "signature_verified")) ? ", verified" : "");
		else
			printf(" (not found)");
		printf("\n");
	}
	json_array_foreach(json_object_get(r, "chain"), i, v)
		printf("  cache: %s %s %s\n", json_string_value(json_object_get(v, "name")),
		       json_string_value(json_object_get(v, "sha256")),
		       json_is_true(json_object_get(v, "in_cache")) ? "present" : "not in the cache");
	printf("missing provenance:%s\n", json_array_size(json_object_get(r, "missing_provenance")) ? "" : " none");
	json_array_foreach(json_object_get(r, "missing_provenance"), i, v)
		printf("  %s\n", json_string_value(v));
	json_array_foreach(json_object_get(r, "failures"), i, v)
		printf("FAILED: %s\n", json_string_value(v));
	printf("verdict: %s\n", json_string_value(json_object_get(r, "verdict")));
}

int audit_main(int argc, char **argv)
{
	static const struct option longs[] = {
		{ "attestation", required_argument, NULL, 'a' }, { "pubkey", required_argument, NULL, 'p' },
		{ "cache", required_argument, NULL, 'C' },       { "json", no_argument, NULL, 'J' },
		{ NULL, 0, NULL, 0 },
	};
	audit_opts o = { 0 };
	int json = 0, c, code;
	json_t *r;
	err e = { 0 };

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
		switch (c) {
		case 'a':
			o.attestation = optarg;
			break;
		case 'p':
			o.pubkey = optarg;
			break;
		case 'C':
			o.cache = optarg;
			break;
		case 'J':
			json = 1;
			break;
		default:
			fprintf(stderr, "qbake audit: unknown option or missing argument '%s' (see qbake help audit)\n",
				argv[optind - 1]);
			return AUDIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		fprintf(stderr, "qbake audit: give one GGUF file (see qbake help audit)\n");
		return AUDIT_USAGE;
	}
	o.path = argv[optind];
	if (!(r = audit_report(&o, &e))) {
		fprintf(stderr, "qbake: %s\n", e.msg);
		return AUDIT_USAGE;
	}
	code = (int)json_integer_value(json_object_get(r, "exit"));
	if (json) {
		char *s = json_dumps(r, JSON_INDENT(2) | JSON_SORT_KEYS);

		if (s)
			puts(s);
		free(s);
	} else {
		print_text(r);
	}
	if (code == AUDIT_FAILED) {
		json_t *v;
		size_t i;

		json_array_foreach(json_object_get(r, "failures"), i, v)
			fprintf(stderr, "qbake: audit failed: %s\n", json_string_value(v));
	}
	json_decref(r);
	if (fflush(stdout) != 0)
		return AUDIT_FAILED;
	return code;
}

int audit_keygen_main(int argc, char **argv)
{
	char keyid[65];
	err e = { 0 };

	if (argc != 2 || argv[1][0] == '-' || argv[1][0] == 0) {
		fprintf(stderr, "qbake keygen: give one NAME (see qbake help keygen)\n");
		return 2;
	}
	if (attest_keygen(argv[1], keyid, &e) < 0) {
		fprintf(stderr, "qbake: %s\n", e.msg);
		return 1;
	}
	printf("wrote %s.key (private, mode 0600) and %s.pub\nkeyid %s\n", argv[1], argv[1], keyid);
	return 0;
}
