/* attest.c - signed provenance: Ed25519 keys, in-toto/SLSA statements, DSSE envelopes, model.sig */
#include "attest.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "afile.h"
#include "sha256.h"

struct attest_key {
	EVP_PKEY *pkey;
};

/* ---- keys ---- */

static attest_key *wrap(EVP_PKEY *p)
{
	attest_key *k = p ? malloc(sizeof *k) : NULL;

	if (!k) {
		EVP_PKEY_free(p);
		return NULL;
	}
	k->pkey = p;
	return k;
}

void attest_key_free(attest_key *k)
{
	if (!k)
		return;
	EVP_PKEY_free(k->pkey);
	free(k);
}

static int supported(EVP_PKEY *p)
{
	return EVP_PKEY_get_base_id(p) == EVP_PKEY_ED25519 || EVP_PKEY_get_base_id(p) == EVP_PKEY_EC;
}

/* The PEM text of a memory BIO, written to path (private: mode 0600). */
static int put_bio(const char *path, BIO *b, int private_mode, err *e)
{
	char *p;
	long n = BIO_get_mem_data(b, &p);
	afile f;

	if (n <= 0)
		return err_set(e, "%s: cannot encode the key", path);
	if (afile_open(&f, path, 0, private_mode, e) < 0)
		return -1;
	if (afile_write(&f, p, (size_t)n, e) < 0) {
		afile_abort(&f);
		return -1;
	}
	return afile_commit(&f, NULL, e);
}

int attest_keygen(const char *name, char keyid[65], err *e)
{
	char kpath[PATH_MAX], ppath[PATH_MAX];
	EVP_PKEY *p;
	BIO *kb, *pb;
	struct stat st;
	int rc = -1;

	snprintf(kpath, sizeof kpath, "%s.key", name);
	snprintf(ppath, sizeof ppath, "%s.pub", name);
	if (stat(kpath, &st) == 0 || stat(ppath, &st) == 0)
		return err_set(e, "%s: already exists: remove it first (qbake never overwrites a key)",
			       stat(kpath, &st) == 0 ? kpath : ppath);
	if (!(p = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")))
		return err_set(e, "cannot generate an Ed25519 key (libcrypto)");
	kb = BIO_new(BIO_s_mem());
	pb = BIO_new(BIO_s_mem());
	if (!kb || !pb || PEM_write_bio_PrivateKey(kb, p, NULL, NULL, 0, NULL, NULL) != 1 ||
	    PEM_write_bio_PUBKEY(pb, p) != 1) {
		err_set(e, "cannot encode the key (libcrypto)");
		goto done;
	}
	if (put_bio(kpath, kb, 1, e) < 0)
		goto done;
	if (put_bio(ppath, pb, 0, e) < 0) {
		unlink(kpath);
		goto done;
	}
	if (keyid) {
		attest_key k = { p };

		attest_keyid(&k, keyid);
	}
	rc = 0;
done:
	BIO_free(kb);
	BIO_free(pb);
	EVP_PKEY_free(p);
	return rc;
}

static attest_key *load(const char *path, int private_key, err *e)
{
	FILE *f = fopen(path, "rb");
	EVP_PKEY *p = NULL;

	if (!f) {
		err_errno(e, "%s: cannot open the key", path);
		return NULL;
	}
	if (private_key) {
		p = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	} else {
		p = PEM_read_PUBKEY(f, NULL, NULL, NULL);
		if (!p) {
			rewind(f);
			p = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		}
	}
	fclose(f);
	if (!p) {
		err_set(e, "%s: not a PEM %s key (or it is encrypted)", path, private_key ? "private" : "public");
		return NULL;
	}
	if (!supported(p)) {
		EVP_PKEY_free(p);
		err_set(e, "%s: a %s key: qbake signs with Ed25519 (or ECDSA) keys", path, OBJ_nid2sn(EVP_PKEY_get_base_id(p)));
		return NULL;
	}
	return wrap(p);
}

attest_key *attest_key_load(const char *path, err *e)
{
	return load(path, 1, e);
}

attest_key *attest_pub_load(const char *path, err *e)
{
	return load(path, 0, e);
}

char *attest_keyid(const attest_key *k, char hex[65])
{
	unsigned char *der = NULL;
	int n = i2d_PUBKEY(k->pkey, &der);
	uint8_t d[32];

	if (n <= 0)
		return NULL;
	sha256_buf(der, (size_t)n, d);
	OPENSSL_free(der);
	return sha256_hex(d, hex);
}

/* The digest an EC key signs with (by curve size, as model_signing does); NULL for Ed25519,
 * which hashes internally. */
static const EVP_MD *sign_md(EVP_PKEY *p)
{
	if (EVP_PKEY_get_base_id(p) != EVP_PKEY_EC)
		return NULL;
	return EVP_PKEY_get_bits(p) > 384 ? EVP_sha512() : EVP_PKEY_get_bits(p) > 256 ? EVP_sha384() : EVP_sha256();
}

uint8_t *attest_sign(const attest_key *k, const void *msg, size_t n, size_t *siglen, err *e)
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	uint8_t *sig = NULL;
	size_t len = 0;

	if (!c || EVP_DigestSignInit(c, NULL, sign_md(k->pkey), NULL, k->pkey) != 1 ||
	    EVP_DigestSign(c, NULL, &len, msg, n) != 1 || !(sig = malloc(len)) ||
	    EVP_DigestSign(c, sig, &len, msg, n) != 1) {
		free(sig);
		sig = NULL;
		err_set(e, "cannot sign (libcrypto)");
	}
	EVP_MD_CTX_free(c);
	*siglen = len;
	return sig;
}

/* An ECDSA signature given as raw r || s (as DSSE's test vector is) re-encoded as DER. */
static uint8_t *raw_to_der(EVP_PKEY *p, const uint8_t *sig, size_t len, size_t *out)
{
	size_t half = (size_t)(EVP_PKEY_get_bits(p) + 7) / 8;
	ECDSA_SIG *s;
	BIGNUM *r, *sv;
	unsigned char *der = NULL;
	uint8_t *copy = NULL;
	int n;

	if (len != 2 * half || !(s = ECDSA_SIG_new()))
		return NULL;
	r = BN_bin2bn(sig, (int)half, NULL);
	sv = BN_bin2bn(sig + half, (int)half, NULL);
	if (!r || !sv || ECDSA_SIG_set0(s, r, sv) != 1) {
		BN_free(r);
		BN_free(sv);
		ECDSA_SIG_free(s);
		return NULL;
	}
	n = i2d_ECDSA_SIG(s, &der);
	ECDSA_SIG_free(s);
	if (n > 0 && (copy = malloc((size_t)n)) != NULL) {
		memcpy(copy, der, (size_t)n);
		*out = (size_t)n;
	}
	OPENSSL_free(der);
	return copy;
}

static int check_one(EVP_PKEY *p, const void *msg, size_t n, const uint8_t *sig, size_t siglen)
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	int ok = c && EVP_DigestVerifyInit(c, NULL, sign_md(p), NULL, p) == 1 &&
		 EVP_DigestVerify(c, sig, siglen, msg, n) == 1;

	EVP_MD_CTX_free(c);
	return ok;
}

int attest_check(const attest_key *k, const void *msg, size_t n, const uint8_t *sig, size_t siglen)
{
	uint8_t *der;
	size_t dlen = 0;
	int ok;

	if (check_one(k->pkey, msg, n, sig, siglen))
		return 1;
	if (EVP_PKEY_get_base_id(k->pkey) != EVP_PKEY_EC || !(der = raw_to_der(k->pkey, sig, siglen, &dlen)))
		return 0;
	ok = check_one(k->pkey, msg, n, der, dlen);
	free(der);
	return ok;
}

/* ---- encodings ---- */

char *attest_b64(const void *p, size_t n)
{
	char *out;

	if (n > INT_MAX / 2 || !(out = malloc(4 * ((n + 2) / 3) + 1)))
		return NULL;
	EVP_EncodeBlock((unsigned char *)out, p, (int)n);
	return out;
}

uint8_t *attest_unb64(const char *s, size_t *out_n)
{
	size_t len = strlen(s), pad = 0, n;
	char *t;
	uint8_t *out;
	int got;

	if (len > INT_MAX / 2 || !(t = malloc(len + 4)))
		return NULL;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		t[i] = c == '-' ? '+' : c == '_' ? '/' : c;
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
		      c == '/' || c == '-' || c == '_' || (c == '=' && i + 2 >= len))) {
			free(t);
			return NULL;
		}
	}
	while (len % 4)
		t[len++] = '=';
	t[len] = 0;
	for (size_t i = len; i > 0 && t[i - 1] == '='; i--)
		pad++;
	if (pad > 2 || !(out = malloc(len / 4 * 3 + 1))) {
		free(t);
		return NULL;
	}
	got = EVP_DecodeBlock(out, (unsigned char *)t, (int)len);
	free(t);
	if (got < 0 || (size_t)got < pad) {
		free(out);
		return NULL;
	}
	n = (size_t)got - pad;
	out[n] = 0;
	*out_n = n;
	return out;
}

uint8_t *attest_pae(const char *type, const void *body, size_t n, size_t *out_n)
{
	char head[128];
	size_t tl = strlen(type);
	int hl = snprintf(head, sizeof head, "DSSEv1 %zu ", tl);
	char mid[32];
	int ml = snprintf(mid, sizeof mid, " %zu ", n);
	uint8_t *out = malloc((size_t)hl + tl + (size_t)ml + n + 1);

	if (!out)
		return NULL;
	memcpy(out, head, (size_t)hl);
	memcpy(out + hl, type, tl);
	memcpy(out + hl + tl, mid, (size_t)ml);
	if (n)
		memcpy(out + hl + tl + ml, body, n);
	*out_n = (size_t)hl + tl + (size_t)ml + n;
	out[*out_n] = 0;
	return out;
}

/* ---- lineage ---- */

static char *value_text(const gguf_value *v)
{
	char buf[64];

	switch (v->type) {
	case GGUF_STRING:
		return strndup(v->s.ptr, v->s.len);
	case GGUF_U8: case GGUF_U16: case GGUF_U32: case GGUF_U64:
		snprintf(buf, sizeof buf, "%llu", (unsigned long long)v->u);
		break;
	case GGUF_I8: case GGUF_I16: case GGUF_I32: case GGUF_I64:
		snprintf(buf, sizeof buf, "%lld", (long long)v->i);
		break;
	case GGUF_F32: case GGUF_F64:
		snprintf(buf, sizeof buf, "%.17g", v->f);
		break;
	case GGUF_BOOL:
		snprintf(buf, sizeof buf, "%s", v->u ? "true" : "false");
		break;
	case GGUF_ARRAY: {
		json_t *a = json_array();
		char *s;

		for (uint64_t i = 0; i < v->n; i++) {
			if (v->atype == GGUF_STRING) {
				const gguf_str *g = (const gguf_str *)v->arr + i;

				json_array_append_new(a, json_stringn(g->ptr, g->len));
			} else {
				json_array_append_new(a, json_string("?"));
			}
		}
		s = json_dumps(a, JSON_COMPACT);
		json_decref(a);
		return s;
	}
	default:
		snprintf(buf, sizeof buf, "?");
	}
	return strdup(buf);
}

static int cmp_kv(const void *a, const void *b)
{
	return strcmp(((const attest_kv *)a)->key, ((const attest_kv *)b)->key);
}

int attest_lineage_from_meta(const gguf_meta *m, attest_lineage *out, err *e)
{
	memset(out, 0, sizeof *out);
	for (size_t i = 0; i < m->n; i++) {
		attest_kv *grown;

		if (strncmp(m->kv[i].key, "qbake.", 6) != 0)
			continue;
		if (!(grown = realloc(out->kv, (out->n + 1) * sizeof *grown)))
			goto oom;
		out->kv = grown;
		out->kv[out->n].key = strdup(m->kv[i].key);
		out->kv[out->n].value = value_text(&m->kv[i].v);
		out->n++;
		if (!out->kv[out->n - 1].key || !out->kv[out->n - 1].value)
			goto oom;
	}
	if (out->n)
		qsort(out->kv, out->n, sizeof *out->kv, cmp_kv);
	return 0;
oom:
	attest_lineage_free(out);
	return err_set(e, "out of memory");
}

void attest_lineage_free(attest_lineage *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->kv[i].key);
		free(l->kv[i].value);
	}
	free(l->kv);
	memset(l, 0, sizeof *l);
}

/* The dependency name and digest algorithm a lineage key stands for; 0 if it is none. */
static int dep_of_key(const char *key, char *dep, size_t len, const char **algo)
{
	size_t klen = strlen(key);
	const char *suffix;

	if (klen > 13 && strcmp(key + klen - 7, ".sha256") == 0)
		*algo = "sha256", suffix = ".sha256";
	else if (klen > 13 && strcmp(key + klen - 7, ".commit") == 0)
		*algo = "gitCommit", suffix = ".commit";
	else
		return 0;
	snprintf(dep, len, "%.*s", (int)(klen - 6 - strlen(suffix)), key + 6);
	return 1;
}

void attest_deps_free(attest_dep *deps, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free((char *)deps[i].name);
		free((char *)deps[i].sha256);
		free((char *)deps[i].git_commit);
	}
	free(deps);
}

int attest_deps_from_lineage(const attest_lineage *l, size_t n, attest_dep **deps, size_t *ndeps, err *e)
{
	attest_dep *d = NULL;
	size_t nd = 0;

	for (size_t i = 0; i < n; i++) {
		for (size_t k = 0; k < l[i].n; k++) {
			const char *algo, **slot;
			char dep[256];
			size_t j;

			if (!dep_of_key(l[i].kv[k].key, dep, sizeof dep, &algo) || strcmp(dep, "recipe") == 0)
				continue;
			for (j = 0; j < nd; j++)
				if (strcmp(d[j].name, dep) == 0)
					break;
			if (j == nd) {
				attest_dep *grown = realloc(d, (nd + 1) * sizeof *d);

				if (!grown)
					goto oom;
				d = grown;
				memset(&d[nd], 0, sizeof d[nd]);
				if (!(d[nd++].name = strdup(dep)))
					goto oom;
			}
			slot = strcmp(algo, "sha256") == 0 ? &d[j].sha256 : &d[j].git_commit;
			if (!*slot && !(*slot = strdup(l[i].kv[k].value)))
				goto oom;
		}
	}
	*deps = d;
	*ndeps = nd;
	return 0;
oom:
	attest_deps_free(d, nd);
	return err_set(e, "out of memory");
}

/* ---- statements ---- */

static json_t *digest_obj(const uint8_t d[32])
{
	char hex[65];

	return json_pack("{s:s}", "sha256", sha256_hex(d, hex));
}

static json_t *lineage_obj(const attest_lineage *l)
{
	json_t *o = json_object();

	for (size_t i = 0; l && i < l->n; i++)
		json_object_set_new(o, l->kv[i].key, json_string(l->kv[i].value));
	return o;
}

static int is_hex(const char *s, size_t len)
{
	if (strlen(s) != len)
		return 0;
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return 0;
	return 1;
}

static char *dump(json_t *j, size_t flags)
{
	char *s = json_dumps(j, flags | JSON_SORT_KEYS | JSON_ENSURE_ASCII);

	json_decref(j);
	return s;
}

char *attest_statement(const attest_build *b, err *e)
{
	json_t *subjects = json_array(), *lineage = json_object(), *deps = json_array(), *recipe, *ext, *st;
	uint8_t rd[32];
	char *s;

	for (size_t i = 0; i < b->nsubjects; i++) {
		json_array_append_new(subjects, json_pack("{s:s, s:o}", "name", b->subjects[i].name, "digest",
							  digest_obj(b->subjects[i].sha256)));
		json_object_set_new(lineage, b->subjects[i].name, lineage_obj(b->subjects[i].lineage));
	}
	if (!(recipe = json_loads(b->recipe ? b->recipe : "", 0, NULL))) {
		json_decref(subjects);
		json_decref(lineage);
		json_decref(deps);
		err_set(e, "attestation: the canonical recipe is not JSON");
		return NULL;
	}
	sha256_buf(b->recipe, strlen(b->recipe), rd);
	json_array_append_new(deps, json_pack("{s:s, s:o}", "name", "recipe", "digest", digest_obj(rd)));
	for (size_t i = 0; i < b->ndeps; i++) {
		const attest_dep *d = &b->deps[i];
		json_t *dg = json_object(), *o = json_pack("{s:s}", "name", d->name);

		if ((d->sha256 && !is_hex(d->sha256, 64)) || (d->git_commit && !is_hex(d->git_commit, 40))) {
			json_decref(dg);
			json_decref(o);
			json_decref(subjects);
			json_decref(lineage);
			json_decref(deps);
			json_decref(recipe);
			err_set(e, "attestation: dependency %s: a digest is not lowercase hex of the right length", d->name);
			return NULL;
		}
		if (d->sha256)
			json_object_set_new(dg, "sha256", json_string(d->sha256));
		if (d->git_commit)
			json_object_set_new(dg, "gitCommit", json_string(d->git_commit));
		json_object_set_new(o, "digest", dg);
		if (d->uri)
			json_object_set_new(o, "uri", json_string(d->uri));
		json_array_append_new(deps, o);
	}
	ext = json_pack("{s:o, s:o}", "recipe", recipe, "lineage", lineage);
	if (b->parameters) {
		json_t *p = json_loads(b->parameters, 0, NULL);

		if (!json_is_object(p)) {
			json_decref(p);
			json_decref(ext);
			json_decref(subjects);
			json_decref(deps);
			err_set(e, "attestation: the parameters are not a JSON object");
			return NULL;
		}
		json_object_set_new(ext, "parameters", p);
	}
	st = json_pack("{s:s, s:o, s:s, s:{s:{s:s, s:o, s:o}, s:{s:{s:s, s:{s:s}}}}}", "_type", ATTEST_STATEMENT_TYPE,
		       "subject", subjects, "predicateType", ATTEST_SLSA_TYPE, "predicate", "buildDefinition", "buildType",
		       ATTEST_BUILD_TYPE, "externalParameters", ext, "resolvedDependencies", deps, "runDetails", "builder",
		       "id", ATTEST_BUILDER_ID, "version", "qbake", b->version ? b->version : "unknown");
	if (!st || !(s = dump(st, JSON_COMPACT))) {
		err_set(e, "out of memory");
		return NULL;
	}
	return s;
}

json_t *attest_statement_parse(const void *payload, size_t n, const char *predicate_type, err *e)
{
	json_error_t je;
	json_t *j = json_loadb(payload, n, 0, &je);
	const char *t;

	if (!json_is_object(j)) {
		json_decref(j);
		err_set(e, "the attested statement is not a JSON object (%s)", j ? "wrong type" : je.text);
		return NULL;
	}
	t = json_string_value(json_object_get(j, "_type"));
	if (!t || strcmp(t, ATTEST_STATEMENT_TYPE) != 0) {
		err_set(e, "the payload is not an in-toto Statement v1 (_type %s)", t ? t : "missing");
		json_decref(j);
		return NULL;
	}
	if (!json_is_array(json_object_get(j, "subject"))) {
		err_set(e, "the statement has no subject list");
		json_decref(j);
		return NULL;
	}
	t = json_string_value(json_object_get(j, "predicateType"));
	if (predicate_type && (!t || strcmp(t, predicate_type) != 0)) {
		err_set(e, "the statement's predicateType is %s, not %s", t ? t : "missing", predicate_type);
		json_decref(j);
		return NULL;
	}
	return j;
}

int attest_subject_find(json_t *stmt, const char *name, const uint8_t sha256[32], char *other, size_t len)
{
	json_t *subjects = json_object_get(stmt, "subject"), *s;
	char hex[65];
	size_t i;
	int rc = ATTEST_SUBJECT_ABSENT;

	sha256_hex(sha256, hex);
	json_array_foreach(subjects, i, s) {
		const char *sn = json_string_value(json_object_get(s, "name"));
		const char *sd = json_string_value(json_object_get(json_object_get(s, "digest"), "sha256"));

		if (!sn || !sd)
			continue;
		if (strcmp(sn, name) == 0 && strcmp(sd, hex) == 0)
			return ATTEST_SUBJECT_OK;
		if (strcmp(sn, name) == 0) {
			if (other)
				snprintf(other, len, "%s", sd);
			rc = ATTEST_SUBJECT_MISMATCH;
		} else if (strcmp(sd, hex) == 0 && rc == ATTEST_SUBJECT_ABSENT) {
			if (other)
				snprintf(other, len, "%s", sn);
			rc = ATTEST_SUBJECT_RENAMED;
		}
	}
	return rc;
}

static void note(char *why, size_t len, int *count, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void note(char *why, size_t len, int *count, const char *fmt, ...)
{
	va_list ap;
	size_t used;

	(*count)++;
	if (!why || len == 0)
		return;
	used = strlen(why);
	if (used + 1 >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(why + used, len - used, fmt, ap);
	va_end(ap);
	used = strlen(why);
	if (used + 1 < len) {
		why[used] = '\n';
		why[used + 1] = 0;
	}
}

/* The resolvedDependencies entry named name, or NULL. */
static json_t *dependency(json_t *stmt, const char *name)
{
	json_t *deps = json_object_get(json_object_get(json_object_get(stmt, "predicate"), "buildDefinition"),
				       "resolvedDependencies"), *d;
	size_t i;

	json_array_foreach(deps, i, d) {
		const char *n = json_string_value(json_object_get(d, "name"));

		if (n && strcmp(n, name) == 0)
			return d;
	}
	return NULL;
}

/* Checks one digest key (qbake.<dep>.sha256 / .commit) against the dependency list. */
static void check_dep_key(json_t *stmt, const attest_kv *kv, char *why, size_t len, int *count)
{
	const char *algo, *want;
	char dep[256];
	json_t *d;

	if (!dep_of_key(kv->key, dep, sizeof dep, &algo))
		return;
	if (!(d = dependency(stmt, dep))) {
		note(why, len, count, "%s: the attestation lists no dependency \"%s\"", kv->key, dep);
		return;
	}
	want = json_string_value(json_object_get(json_object_get(d, "digest"), algo));
	if (!want || strcmp(want, kv->value) != 0)
		note(why, len, count, "%s: the file says %s, the attestation's dependency \"%s\" has %s %s", kv->key,
		     kv->value, dep, algo, want ? want : "none");
}

int attest_lineage_check(json_t *stmt, const char *name, const attest_lineage *l, char *why, size_t len)
{
	json_t *pred = json_object_get(stmt, "predicate");
	json_t *att = json_object_get(json_object_get(json_object_get(json_object_get(pred, "buildDefinition"),
								       "externalParameters"), "lineage"), name);
	const char *ver = json_string_value(
		json_object_get(json_object_get(json_object_get(json_object_get(pred, "runDetails"), "builder"), "version"),
				"qbake"));
	const char *k;
	json_t *v;
	int count = 0;

	if (why && len)
		why[0] = 0;
	if (!json_is_object(att)) {
		note(why, len, &count, "the attestation records no lineage for %s", name);
		return count;
	}
	for (size_t i = 0; i < l->n; i++) {
		const char *want = json_string_value(json_object_get(att, l->kv[i].key));

		if (!want)
			note(why, len, &count, "%s: in the file (%s) but not in the attestation", l->kv[i].key, l->kv[i].value);
		else if (strcmp(want, l->kv[i].value) != 0)
			note(why, len, &count, "%s: the file says \"%s\", the attestation says \"%s\"", l->kv[i].key,
			     l->kv[i].value, want);
		if (strcmp(l->kv[i].key, "qbake.version") == 0 && (!ver || strcmp(ver, l->kv[i].value) != 0))
			note(why, len, &count, "qbake.version: the file says \"%s\", the attestation's builder is \"%s\"",
			     l->kv[i].value, ver ? ver : "unnamed");
		check_dep_key(stmt, &l->kv[i], why, len, &count);
	}
	json_object_foreach(att, k, v) {
		size_t i;

		for (i = 0; i < l->n; i++)
			if (strcmp(l->kv[i].key, k) == 0)
				break;
		if (i == l->n)
			note(why, len, &count, "%s: in the attestation (\"%s\") but not in the file", k,
			     json_string_value(v) ? json_string_value(v) : "?");
	}
	return count;
}

/* ---- DSSE envelopes ---- */

/* The signatures array for payload (one entry when k is given). */
static json_t *signatures(const char *type, const void *payload, size_t n, const attest_key *k, err *e)
{
	json_t *a = json_array();
	uint8_t *pae, *sig;
	size_t plen, slen;
	char *b64, keyid[65];

	if (!k)
		return a;
	if (!(pae = attest_pae(type, payload, n, &plen))) {
		json_decref(a);
		err_set(e, "out of memory");
		return NULL;
	}
	sig = attest_sign(k, pae, plen, &slen, e);
	free(pae);
	if (!sig || !(b64 = attest_b64(sig, slen))) {
		free(sig);
		json_decref(a);
		err_set(e, "out of memory");
		return NULL;
	}
	free(sig);
	json_array_append_new(a, json_pack("{s:s, s:s}", "keyid", attest_keyid(k, keyid) ? keyid : "", "sig", b64));
	free(b64);
	return a;
}

static char *with_newline(char *s)
{
	size_t len;
	char *grown;

	if (!s)
		return NULL;
	len = strlen(s);
	if (!(grown = realloc(s, len + 2))) {
		free(s);
		return NULL;
	}
	grown[len] = '\n';
	grown[len + 1] = 0;
	return grown;
}

char *attest_envelope(const char *payload_type, const void *payload, size_t n, const attest_key *k, err *e)
{
	json_t *sigs = signatures(payload_type, payload, n, k, e);
	char *b64, *s;

	if (!sigs)
		return NULL;
	if (!(b64 = attest_b64(payload, n))) {
		json_decref(sigs);
		err_set(e, "out of memory");
		return NULL;
	}
	s = with_newline(dump(json_pack("{s:s, s:s, s:o}", "payload", b64, "payloadType", payload_type, "signatures", sigs),
			      JSON_INDENT(2)));
	free(b64);
	if (!s)
		err_set(e, "out of memory");
	return s;
}

int attest_envelope_open(const char *text, size_t n, const attest_key *pub, attest_opened *out, err *e)
{
	json_error_t je;
	json_t *j = json_loadb(text, n, 0, &je), *sigs, *s;
	const char *type, *payload;
	size_t i;

	memset(out, 0, sizeof *out);
	if (!json_is_object(j)) {
		json_decref(j);
		return err_set(e, "not a DSSE envelope: %s", j ? "not a JSON object" : je.text);
	}
	type = json_string_value(json_object_get(j, "payloadType"));
	payload = json_string_value(json_object_get(j, "payload"));
	sigs = json_object_get(j, "signatures");
	if (!type || !payload || !json_is_array(sigs)) {
		json_decref(j);
		return err_set(e, "not a DSSE envelope: payloadType, payload and signatures are required");
	}
	out->payload_type = strdup(type);
	out->payload = attest_unb64(payload, &out->npayload);
	if (!out->payload_type || !out->payload) {
		json_decref(j);
		attest_envelope_free(out);
		return err_set(e, "not a DSSE envelope: the payload is not base64");
	}
	out->nsigs = json_array_size(sigs);
	json_array_foreach(sigs, i, s) {
		const char *b64 = json_string_value(json_object_get(s, "sig"));
		uint8_t *sig, *pae;
		size_t slen, plen;

		if (!pub || out->verified || !b64 || !(sig = attest_unb64(b64, &slen)))
			continue;
		if ((pae = attest_pae(type, out->payload, out->npayload, &plen)) != NULL)
			out->verified = attest_check(pub, pae, plen, sig, slen);
		free(pae);
		free(sig);
	}
	json_decref(j);
	return 0;
}

void attest_envelope_free(attest_opened *o)
{
	free(o->payload_type);
	free(o->payload);
	memset(o, 0, sizeof *o);
}

/* ---- release files ---- */

static char *join(char *buf, size_t n, const char *dir, const char *name)
{
	snprintf(buf, n, "%s/%s", dir, name);
	return buf;
}

int attest_write_release(const char *dir, const attest_build *b, const attest_key *k, err *e)
{
	attest_subject *subs = calloc(b->nsubjects ? b->nsubjects : 1, sizeof *subs);
	attest_lineage *lin = calloc(b->nsubjects ? b->nsubjects : 1, sizeof *lin);
	attest_build copy = *b;
	char path[PATH_MAX], *st = NULL, *env = NULL;
	attest_dep *derived = NULL;
	size_t nderived = 0;
	int rc = -1;

	if (!subs || !lin) {
		free(subs);
		free(lin);
		return err_set(e, "out of memory");
	}
	for (size_t i = 0; i < b->nsubjects; i++) {
		gguf_file f;

		subs[i].name = b->subjects[i].name;
		join(path, sizeof path, dir, subs[i].name);
		if (gguf_open(&f, path, e) < 0)
			goto done;
		rc = attest_lineage_from_meta(&f.meta, &lin[i], e);
		gguf_close(&f);
		if (rc < 0 || sha256_file(path, subs[i].sha256, e) < 0) {
			rc = -1;
			goto done;
		}
		rc = -1;
		subs[i].lineage = &lin[i];
	}
	copy.subjects = subs;
	if (b->ndeps == 0 && attest_deps_from_lineage(lin, b->nsubjects, &derived, &nderived, e) < 0)
		goto done;
	if (b->ndeps == 0) {
		copy.deps = derived;
		copy.ndeps = nderived;
	}
	if (!(st = attest_statement(&copy, e)) || !(env = attest_envelope(ATTEST_PAYLOAD_TYPE, st, strlen(st), k, e)))
		goto done;
	rc = afile_put(join(path, sizeof path, dir, ATTEST_FILE), env, strlen(env), e);
done:
	for (size_t i = 0; i < b->nsubjects; i++)
		attest_lineage_free(&lin[i]);
	attest_deps_free(derived, nderived);
	free(lin);
	free(subs);
	free(st);
	free(env);
	return rc;
}

/* ---- OpenSSF model signing ---- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The regular files of dir that a model signature covers, sorted bytewise (their verifier
 * sorts paths the same way for plain ASCII names). */
static char **release_files(const char *dir, size_t *n, err *e)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char **names = NULL, path[PATH_MAX];
	struct stat st;

	*n = 0;
	if (!d) {
		err_errno(e, "%s: cannot list the release folder", dir);
		return NULL;
	}
	while ((de = readdir(d)) != NULL) {
		char **grown;

		if (strcmp(de->d_name, ATTEST_MODEL_SIG) == 0 || strncmp(de->d_name, ".qbake-tmp", 10) == 0 ||
		    strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (lstat(join(path, sizeof path, dir, de->d_name), &st) < 0 || !S_ISREG(st.st_mode))
			continue;
		if (!(grown = realloc(names, (*n + 1) * sizeof *names)) || !(grown[*n] = strdup(de->d_name))) {
			free(grown ? grown : names);
			closedir(d);
			err_set(e, "out of memory");
			return NULL;
		}
		names = grown;
		(*n)++;
	}
	closedir(d);
	if (*n)
		qsort(names, *n, sizeof *names, cmp_str);
	else
		names = calloc(1, sizeof *names);
	return names;
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* The model-signing statement over dir's files (compact JSON, sorted keys). */
static char *model_statement(const char *dir, const char *model_name, err *e)
{
	size_t n;
	char **names = release_files(dir, &n, e), path[PATH_MAX], hex[65];
	json_t *res = json_array();
	sha256 root;
	uint8_t d[32];
	char *s = NULL;

	if (!names || sha256_init(&root) < 0) {
		json_decref(res);
		free_names(names, n);
		if (names)
			err_set(e, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		if (sha256_file(join(path, sizeof path, dir, names[i]), d, e) < 0) {
			sha256_free(&root);
			json_decref(res);
			free_names(names, n);
			return NULL;
		}
		sha256_update(&root, d, 32);
		json_array_append_new(res, json_pack("{s:s, s:s, s:s}", "name", names[i], "algorithm", "sha256", "digest",
						     sha256_hex(d, hex)));
	}
	sha256_final(&root, d);
	sha256_free(&root);
	free_names(names, n);
	s = dump(json_pack("{s:s, s:[{s:s, s:{s:s}}], s:s, s:{s:{s:s, s:s, s:b, s:[s]}, s:o}}", "_type",
			   ATTEST_STATEMENT_TYPE, "subject", "name", model_name, "digest", "sha256", sha256_hex(d, hex),
			   "predicateType", ATTEST_MODEL_SIG_TYPE, "predicate", "serialization", "method", "files",
			   "hash_type", "sha256", "allow_symlinks", 0, "ignore_paths", ATTEST_MODEL_SIG, "resources", res),
		 JSON_COMPACT);
	if (!s)
		err_set(e, "out of memory");
	return s;
}

/* sha256 hex of k's SubjectPublicKeyInfo PEM text: model_signing's key hint. */
static int pem_hint(const attest_key *k, char hex[65])
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p;
	long n;
	uint8_t d[32];

	if (!b || PEM_write_bio_PUBKEY(b, k->pkey) != 1 || (n = BIO_get_mem_data(b, &p)) <= 0) {
		BIO_free(b);
		return -1;
	}
	sha256_buf(p, (size_t)n, d);
	sha256_hex(d, hex);
	BIO_free(b);
	return 0;
}

int attest_model_sig_write(const char *dir, const char *model_name, const attest_key *k, err *e)
{
	char *st = model_statement(dir, model_name, e), *env, *text, hint[65], path[PATH_MAX];
	json_t *envj;
	int rc;

	if (!st)
		return -1;
	env = attest_envelope(ATTEST_PAYLOAD_TYPE, st, strlen(st), k, e);
	free(st);
	if (!env)
		return -1;
	envj = json_loads(env, 0, NULL);
	free(env);
	if (!envj || pem_hint(k, hint) < 0) {
		json_decref(envj);
		return err_set(e, "out of memory");
	}
	/* Their signer leaves keyid empty; the key is named by the bundle's hint instead. */
	json_object_set_new(json_array_get(json_object_get(envj, "signatures"), 0), "keyid", json_string(""));
	text = with_newline(dump(json_pack("{s:s, s:{s:{s:s}, s:[]}, s:o}", "mediaType",
					   "application/vnd.dev.sigstore.bundle.v0.3+json", "verificationMaterial", "publicKey",
					   "hint", hint, "tlogEntries", "dsseEnvelope", envj),
				 JSON_INDENT(2)));
	if (!text)
		return err_set(e, "out of memory");
	rc = afile_put(join(path, sizeof path, dir, ATTEST_MODEL_SIG), text, strlen(text), e);
	free(text);
	return rc;
}

int attest_model_sig_verify(const char *dir, const attest_key *pub, err *e)
{
	char path[PATH_MAX], *text, *env = NULL, *mine = NULL;
	FILE *f;
	long len;
	json_t *bundle = NULL, *have = NULL, *want = NULL;
	attest_opened o;
	int rc = -1;

	memset(&o, 0, sizeof o);
	if (!(f = fopen(join(path, sizeof path, dir, ATTEST_MODEL_SIG), "rb")))
		return err_errno(e, "%s: cannot open", path);
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	text = len > 0 ? malloc((size_t)len + 1) : NULL;
	if (!text || fread(text, 1, (size_t)len, f) != (size_t)len) {
		fclose(f);
		free(text);
		return err_set(e, "%s: cannot read", path);
	}
	fclose(f);
	bundle = json_loadb(text, (size_t)len, 0, NULL);
	free(text);
	if (!json_is_object(json_object_get(bundle, "dsseEnvelope"))) {
		err_set(e, "%s: not a Sigstore bundle with a DSSE envelope", path);
		goto done;
	}
	env = json_dumps(json_object_get(bundle, "dsseEnvelope"), JSON_COMPACT);
	if (!env || attest_envelope_open(env, strlen(env), pub, &o, e) < 0)
		goto done;
	if (!o.verified) {
		err_set(e, "%s: the signature does not verify with this key", path);
		goto done;
	}
	if (!(have = attest_statement_parse(o.payload, o.npayload, ATTEST_MODEL_SIG_TYPE, e)))
		goto done;
	{
		const char *name = json_string_value(json_object_get(json_array_get(json_object_get(have, "subject"), 0), "name"));

		if (!(mine = model_statement(dir, name ? name : "", e)))
			goto done;
	}
	want = json_loads(mine, 0, NULL);
	if (!json_equal(json_object_get(json_object_get(have, "predicate"), "resources"),
			json_object_get(json_object_get(want, "predicate"), "resources")) ||
	    !json_equal(json_object_get(have, "subject"), json_object_get(want, "subject"))) {
		err_set(e, "%s: the files in %s differ from the signed manifest", path, dir);
		goto done;
	}
	rc = 0;
done:
	json_decref(bundle);
	json_decref(have);
	json_decref(want);
	free(env);
	free(mine);
	attest_envelope_free(&o);
	return rc;
}
