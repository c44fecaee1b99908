/* test_attest.c - keys, base64, DSSE PAE (the spec's vector), statements, envelopes, model.sig */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "afile.h"
#include "attest.h"
#include "check.h"
#include "sha256.h"

static void test_b64_pae(void)
{
	size_t n;
	uint8_t *p;
	char *s = attest_b64("hello world", 11);

	/* The envelope of DSSE's protocol.md test vector carries "aGVsbG8gd29ybGQ=". */
	CHECK(s && strcmp(s, "aGVsbG8gd29ybGQ=") == 0, "base64 of hello world: %s", s);
	free(s);
	p = attest_unb64("aGVsbG8gd29ybGQ=", &n);
	CHECK(p && n == 11 && memcmp(p, "hello world", 11) == 0, "decode padded");
	free(p);
	p = attest_unb64("aGVsbG8gd29ybGQ", &n);
	CHECK(p && n == 11 && memcmp(p, "hello world", 11) == 0, "decode unpadded");
	free(p);
	/* 0xfb 0xff 0xbf is "+/+/" in standard and "-_-_" in URL-safe base64. */
	p = attest_unb64("-_-_", &n);
	CHECK(p && n == 3 && p[0] == 0xfb && p[1] == 0xff && p[2] == 0xbf, "decode URL-safe");
	free(p);
	CHECK(attest_unb64("a*b=", &n) == NULL, "not base64 is refused");
	p = attest_unb64("", &n);
	CHECK(p && n == 0, "empty");
	free(p);

	/* protocol.md: PAE("http://example.com/HelloWorld", "hello world"). */
	p = attest_pae("http://example.com/HelloWorld", "hello world", 11, &n);
	{
		static const char want[] = "DSSEv1 29 http://example.com/HelloWorld 11 hello world";

		CHECK(p && n == sizeof want - 1 && memcmp(p, want, n) == 0, "PAE: %.*s", (int)n, p ? (char *)p : "");
	}
	free(p);
	p = attest_pae("t", "", 0, &n);
	CHECK(p && n == 13 && memcmp(p, "DSSEv1 1 t 0 ", 13) == 0, "PAE of an empty body");
	free(p);
}

/* The P-256 public key of DSSE's test vector, written as PEM so attest_pub_load reads it. */
static int spec_pubkey(const char *path)
{
	static const char X[] = "46950820868899156662930047687818585632848591499744589407958293238635476079160";
	static const char Y[] = "5640078356564379163099075877009565129882514886557779369047442380624545832820";
	unsigned char pt[65];
	BIGNUM *x = NULL, *y = NULL;
	OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	EVP_PKEY *k = NULL;
	FILE *f;
	int ok = 0;

	if (!BN_dec2bn(&x, X) || !BN_dec2bn(&y, Y))
		goto done;
	pt[0] = 4;
	BN_bn2binpad(x, pt + 1, 32);
	BN_bn2binpad(y, pt + 33, 32);
	if (!b || !c || !OSSL_PARAM_BLD_push_utf8_string(b, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(b, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt) ||
	    !(params = OSSL_PARAM_BLD_to_param(b)) || EVP_PKEY_fromdata_init(c) != 1 ||
	    EVP_PKEY_fromdata(c, &k, EVP_PKEY_PUBLIC_KEY, params) != 1)
		goto done;
	if ((f = fopen(path, "w")) != NULL) {
		ok = PEM_write_PUBKEY(f, k) == 1;
		fclose(f);
	}
done:
	BN_free(x);
	BN_free(y);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(b);
	EVP_PKEY_CTX_free(c);
	EVP_PKEY_free(k);
	return ok;
}

/* The envelope of protocol.md, verified with its key: our PAE and base64 against a signature
 * made by the reference implementation. */
static void test_spec_vector(const char *dir)
{
	static const char env[] =
		"{\"payload\": \"aGVsbG8gd29ybGQ=\", \"payloadType\": \"http://example.com/HelloWorld\", "
		"\"signatures\": [{\"sig\": \"A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGAHTVeCUjW2JIZA==\"}]}";
	char path[4096];
	attest_key *pub;
	attest_opened o;
	err e = { 0 };

	snprintf(path, sizeof path, "%s/spec.pub", dir);
	CHECK(spec_pubkey(path), "spec key");
	pub = attest_pub_load(path, &e);
	CHECK(pub, "%s", e.msg);
	if (!pub)
		return;
	CHECK(attest_envelope_open(env, strlen(env), pub, &o, &e) == 0, "%s", e.msg);
	CHECK(o.verified == 1, "the DSSE test vector's signature verifies over our PAE");
	CHECK(o.npayload == 11 && memcmp(o.payload, "hello world", 11) == 0, "payload");
	CHECK(strcmp(o.payload_type, "http://example.com/HelloWorld") == 0, "payloadType");
	attest_envelope_free(&o);
	{
		/* The same signature over another payload type must not verify. */
		char bad[sizeof env];

		memcpy(bad, env, sizeof env);
		memcpy(strstr(bad, "HelloWorld"), "HelloWorle", 10);
		CHECK(attest_envelope_open(bad, strlen(bad), pub, &o, &e) == 0 && o.verified == 0, "type is authenticated");
		attest_envelope_free(&o);
	}
	attest_key_free(pub);
}

static void test_keys(const char *dir)
{
	char name[2048], path[4096], keyid[65], keyid2[65], *text;
	attest_key *k, *pub, *pub2;
	struct stat st;
	uint8_t *sig;
	size_t slen;
	err e = { 0 };

	snprintf(name, sizeof name, "%s/release", dir);
	CHECK(attest_keygen(name, keyid, &e) == 0, "%s", e.msg);
	snprintf(path, sizeof path, "%s.key", name);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "private key mode %o", st.st_mode & 0777);
	text = check_slurp(path, NULL);
	CHECK(text && strncmp(text, "-----BEGIN PRIVATE KEY-----\n", 28) == 0, "PKCS#8 PEM");
	free(text);
	snprintf(path, sizeof path, "%s.pub", name);
	text = check_slurp(path, NULL);
	CHECK(text && strncmp(text, "-----BEGIN PUBLIC KEY-----\n", 27) == 0, "SPKI PEM");
	free(text);
	e.set = 0;
	CHECK(attest_keygen(name, NULL, &e) < 0 && strstr(e.msg, "already exists"), "no overwrite: %s", e.msg);
	err_clear(&e);

	snprintf(path, sizeof path, "%s.key", name);
	k = attest_key_load(path, &e);
	snprintf(path, sizeof path, "%s.pub", name);
	pub = attest_pub_load(path, &e);
	CHECK(k && pub, "%s", e.msg);
	if (!k || !pub)
		return;
	CHECK(strcmp(attest_keyid(pub, keyid2), keyid) == 0, "keyid of the .pub is the one keygen printed");
	sig = attest_sign(k, "message", 7, &slen, &e);
	CHECK(sig && slen == 64, "Ed25519 signatures are 64 bytes");
	CHECK(attest_check(pub, "message", 7, sig, slen) == 1, "round trip");
	CHECK(attest_check(pub, "messagf", 7, sig, slen) == 0, "another message");
	sig[10] ^= 1;
	CHECK(attest_check(pub, "message", 7, sig, slen) == 0, "a flipped signature bit");
	free(sig);

	snprintf(name, sizeof name, "%s/other", dir);
	CHECK(attest_keygen(name, NULL, &e) == 0, "%s", e.msg);
	snprintf(path, sizeof path, "%s.pub", name);
	pub2 = attest_pub_load(path, &e);
	sig = attest_sign(k, "message", 7, &slen, &e);
	CHECK(pub2 && attest_check(pub2, "message", 7, sig, slen) == 0, "another key does not verify");
	free(sig);
	attest_key_free(pub2);

	CHECK(attest_key_load(path, &e) == NULL && e.set, "a public key is not a private key");
	err_clear(&e);
	attest_key_free(k);
	attest_key_free(pub);
}

static void test_statement(const char *dir)
{
	static const char recipe[] = "{\"name\":\"tiny\",\"tiers\":[\"Q8_0\"]}";
	attest_kv kv[] = { { "qbake.tier", "Q8_0" }, { "qbake.version", "0.1.0" } };
	attest_lineage lin = { kv, 2 };
	attest_subject subj[2] = { { "tiny-Q8_0.gguf", { 0 }, &lin }, { "tiny-Q4_0.gguf", { 0 }, NULL } };
	attest_dep deps[] = {
		{ "source", "git+https://example.com/m.git", NULL, "0123456789abcdef0123456789abcdef01234567" },
		{ "baseline", NULL, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", NULL },
	};
	attest_build b = { subj, 2, recipe, "{\"threads_independent\":true}", deps, 2, "0.1.0" };
	char *s, *s2, hex[65], *env, path[4096];
	uint8_t rd[32];
	json_t *j, *p, *d;
	attest_key *k, *pub;
	attest_opened o;
	err e = { 0 };

	memset(subj[0].sha256, 0x11, 32);
	memset(subj[1].sha256, 0x22, 32);
	s = attest_statement(&b, &e);
	s2 = attest_statement(&b, &e);
	CHECK(s && s2 && strcmp(s, s2) == 0, "deterministic: %s", e.msg);
	free(s2);
	if (!s)
		return;
	CHECK(!strstr(s, "On\"") && !strstr(s, "invocationId"), "no timestamps");
	j = json_loads(s, 0, NULL);
	CHECK(j, "statement parses");
	CHECK(strcmp(json_string_value(json_object_get(j, "_type")), "https://in-toto.io/Statement/v1") == 0, "_type");
	CHECK(strcmp(json_string_value(json_object_get(j, "predicateType")), "https://slsa.dev/provenance/v1") == 0,
	      "predicateType");
	d = json_array_get(json_object_get(j, "subject"), 1);
	CHECK(strcmp(json_string_value(json_object_get(d, "name")), "tiny-Q4_0.gguf") == 0 &&
	      strcmp(json_string_value(json_object_get(json_object_get(d, "digest"), "sha256")),
		     "2222222222222222222222222222222222222222222222222222222222222222") == 0, "subject name + sha256");
	p = json_object_get(json_object_get(j, "predicate"), "buildDefinition");
	CHECK(strcmp(json_string_value(json_object_get(p, "buildType")), ATTEST_BUILD_TYPE) == 0, "buildType");
	{
		json_t *want = json_loads(recipe, 0, NULL);

		CHECK(json_equal(json_object_get(json_object_get(p, "externalParameters"), "recipe"), want), "recipe object");
		json_decref(want);
	}
	CHECK(strcmp(json_string_value(json_object_get(json_object_get(json_object_get(json_object_get(p,
		"externalParameters"), "lineage"), "tiny-Q8_0.gguf"), "qbake.tier")), "Q8_0") == 0, "lineage recorded");
	d = json_object_get(p, "resolvedDependencies");
	sha256_buf(recipe, strlen(recipe), rd);
	CHECK(json_array_size(d) == 3, "recipe + 2 dependencies");
	CHECK(strcmp(json_string_value(json_object_get(json_array_get(d, 0), "name")), "recipe") == 0 &&
	      strcmp(json_string_value(json_object_get(json_object_get(json_array_get(d, 0), "digest"), "sha256")),
		     sha256_hex(rd, hex)) == 0, "recipe digest = SHA-256 of the canonical text");
	CHECK(strcmp(json_string_value(json_object_get(json_object_get(json_array_get(d, 1), "digest"), "gitCommit")),
		     deps[0].git_commit) == 0 &&
	      strcmp(json_string_value(json_object_get(json_array_get(d, 1), "uri")), deps[0].uri) == 0, "source commit");
	p = json_object_get(json_object_get(json_object_get(j, "predicate"), "runDetails"), "builder");
	CHECK(strcmp(json_string_value(json_object_get(p, "id")), ATTEST_BUILDER_ID) == 0 &&
	      strcmp(json_string_value(json_object_get(json_object_get(p, "version"), "qbake")), "0.1.0") == 0, "builder");

	/* Lineage check: agreeing, then each kind of disagreement named by its key. */
	{
		char why[2048];
		attest_kv bad[] = { { "qbake.baseline.sha256", "bbbb" }, { "qbake.tier", "Q4_0" }, { "qbake.version", "0.1.0" } };
		attest_lineage l2 = { bad, 3 };

		CHECK(attest_lineage_check(j, "tiny-Q8_0.gguf", &lin, why, sizeof why) == 0, "agrees: %s", why);
		CHECK(attest_lineage_check(j, "tiny-Q8_0.gguf", &l2, why, sizeof why) >= 2, "disagrees");
		CHECK(strstr(why, "qbake.tier: the file says \"Q4_0\", the attestation says \"Q8_0\""), "%s", why);
		CHECK(strstr(why, "qbake.baseline.sha256: in the file"), "%s", why);
		CHECK(strstr(why, "dependency \"baseline\" has sha256 aaaa"), "%s", why);
	}
	CHECK(attest_subject_find(j, "tiny-Q4_0.gguf", subj[1].sha256, NULL, 0) == ATTEST_SUBJECT_OK, "subject found");
	CHECK(attest_subject_find(j, "tiny-Q4_0.gguf", subj[0].sha256, NULL, 0) == ATTEST_SUBJECT_MISMATCH, "mismatch");
	CHECK(attest_subject_find(j, "x.gguf", subj[0].sha256, NULL, 0) == ATTEST_SUBJECT_RENAMED, "renamed");
	json_decref(j);

	/* Envelopes: signed, verified, tampered, unsigned. */
	snprintf(path, sizeof path, "%s/release.key", dir);
	k = attest_key_load(path, &e);
	snprintf(path, sizeof path, "%s/release.pub", dir);
	pub = attest_pub_load(path, &e);
	env = attest_envelope(ATTEST_PAYLOAD_TYPE, s, strlen(s), k, &e);
	CHECK(env && attest_envelope_open(env, strlen(env), pub, &o, &e) == 0 && o.verified && o.nsigs == 1, "%s", e.msg);
	CHECK(o.npayload == strlen(s) && memcmp(o.payload, s, o.npayload) == 0, "payload round trip");
	attest_envelope_free(&o);
	j = env ? json_loads(env, 0, NULL) : NULL;
	{
		char keyid[65];

		CHECK(strcmp(json_string_value(json_object_get(json_array_get(json_object_get(j, "signatures"), 0), "keyid")),
			     attest_keyid(pub, keyid)) == 0, "keyid");
	}
	/* A statement with one changed byte under the same signature does not verify. */
	{
		char *other = strdup(s), *b64, *text;

		other[strlen(other) - 3] ^= 1;
		b64 = attest_b64(other, strlen(other));
		json_object_set_new(j, "payload", json_string(b64));
		text = json_dumps(j, 0);
		CHECK(attest_envelope_open(text, strlen(text), pub, &o, &e) == 0 && !o.verified, "tampered payload");
		attest_envelope_free(&o);
		free(text);
		free(b64);
		free(other);
	}
	json_decref(j);
	free(env);
	env = attest_envelope(ATTEST_PAYLOAD_TYPE, s, strlen(s), NULL, &e);
	CHECK(env && strstr(env, "\"signatures\": []"), "unsigned envelope");
	CHECK(env && attest_envelope_open(env, strlen(env), pub, &o, &e) == 0 && o.nsigs == 0 && !o.verified, "unsigned");
	attest_envelope_free(&o);
	free(env);
	CHECK(attest_envelope_open("{\"payload\":1}", 13, pub, &o, &e) < 0, "malformed envelope");
	attest_key_free(k);
	attest_key_free(pub);
	free(s);
}

static void put(const char *dir, const char *name, const char *text)
{
	char path[4096];
	err e = { 0 };

	snprintf(path, sizeof path, "%s/%s", dir, name);
	CHECK(afile_put(path, text, strlen(text), &e) == 0, "%s", e.msg);
}

static void test_model_sig(const char *dir)
{
	char rel[2048], path[4096], hex[65];
	attest_key *k, *pub;
	json_t *b, *st, *res;
	attest_opened o;
	uint8_t d[3][32], root[32];
	char *text, *env;
	err e = { 0 };

	snprintf(rel, sizeof rel, "%s/rel", dir);
	mkdir(rel, 0755);
	put(rel, "b.gguf", "bbb");
	put(rel, "a.gguf", "aaaa");
	put(rel, "SHA256SUMS", "sums");
	snprintf(path, sizeof path, "%s/release.key", dir);
	k = attest_key_load(path, &e);
	snprintf(path, sizeof path, "%s/release.pub", dir);
	pub = attest_pub_load(path, &e);
	CHECK(k && pub && attest_model_sig_write(rel, "tiny", k, &e) == 0, "%s", e.msg);
	CHECK(attest_model_sig_verify(rel, pub, &e) == 0, "%s", e.msg);
	snprintf(path, sizeof path, "%s/model.sig", rel);
	text = check_slurp(path, NULL);
	b = text ? json_loads(text, 0, NULL) : NULL;
	free(text);
	CHECK(strcmp(json_string_value(json_object_get(b, "mediaType")), "application/vnd.dev.sigstore.bundle.v0.3+json") == 0,
	      "bundle media type");
	CHECK(json_string_value(json_object_get(json_object_get(json_object_get(b, "verificationMaterial"), "publicKey"),
						"hint")), "key hint");
	env = json_dumps(json_object_get(b, "dsseEnvelope"), 0);
	CHECK(env && attest_envelope_open(env, strlen(env), pub, &o, &e) == 0 && o.verified, "bundle envelope verifies");
	free(env);
	st = attest_statement_parse(o.payload, o.npayload, "https://model_signing/signature/v1.0", &e);
	CHECK(st, "%s", e.msg);
	res = json_object_get(json_object_get(st, "predicate"), "resources");
	/* Sorted by name, each with its own SHA-256; the subject digest is SHA-256 of the
	 * concatenated raw digests in that order (model_signing's root digest). */
	sha256_buf("sums", 4, d[0]);
	sha256_buf("aaaa", 4, d[1]);
	sha256_buf("bbb", 3, d[2]);
	CHECK(json_array_size(res) == 3, "three resources (model.sig itself excluded)");
	CHECK(strcmp(json_string_value(json_object_get(json_array_get(res, 0), "name")), "SHA256SUMS") == 0 &&
	      strcmp(json_string_value(json_object_get(json_array_get(res, 1), "name")), "a.gguf") == 0 &&
	      strcmp(json_string_value(json_object_get(json_array_get(res, 1), "digest")), sha256_hex(d[1], hex)) == 0 &&
	      strcmp(json_string_value(json_object_get(json_array_get(res, 1), "algorithm")), "sha256") == 0, "resources");
	sha256_buf(d, sizeof d, root);
	CHECK(strcmp(json_string_value(json_object_get(json_object_get(json_array_get(json_object_get(st, "subject"), 0),
									"digest"), "sha256")), sha256_hex(root, hex)) == 0 &&
	      strcmp(json_string_value(json_object_get(json_array_get(json_object_get(st, "subject"), 0), "name")), "tiny") == 0,
	      "root digest");
	CHECK(strcmp(json_string_value(json_object_get(json_object_get(json_object_get(st, "predicate"), "serialization"),
							"method")), "files") == 0, "serialization method");
	json_decref(st);
	json_decref(b);
	attest_envelope_free(&o);
	put(rel, "a.gguf", "aaab");
	CHECK(attest_model_sig_verify(rel, pub, &e) < 0 && strstr(e.msg, "differ"), "a changed file: %s", e.msg);
	err_clear(&e);
	put(rel, "a.gguf", "aaaa");
	put(rel, "c.txt", "new");
	CHECK(attest_model_sig_verify(rel, pub, &e) < 0, "an added file");
	attest_key_free(k);
	attest_key_free(pub);
}

/* An ECDSA P-256 key (what model_signing's own key verifier takes) signs DER signatures
 * with SHA-256 and round-trips through an envelope and model.sig. */
static void test_ec(const char *dir)
{
	EVP_PKEY *p = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	char path[4096], rel[4096];
	attest_key *k = NULL, *pub = NULL;
	attest_opened o;
	char *env;
	FILE *f;
	err e = { 0 };

	snprintf(path, sizeof path, "%s/ec.key", dir);
	CHECK(p && (f = fopen(path, "w")) != NULL, "write %s", path);
	if (!p || !f) {
		EVP_PKEY_free(p);
		return;
	}
	PEM_write_PrivateKey(f, p, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	snprintf(path, sizeof path, "%s/ec.pub", dir);
	f = fopen(path, "w");
	PEM_write_PUBKEY(f, p);
	fclose(f);
	EVP_PKEY_free(p);
	snprintf(path, sizeof path, "%s/ec.key", dir);
	k = attest_key_load(path, &e);
	snprintf(path, sizeof path, "%s/ec.pub", dir);
	pub = attest_pub_load(path, &e);
	CHECK(k && pub, "%s", e.msg);
	if (!k || !pub)
		goto done;
	env = attest_envelope(ATTEST_PAYLOAD_TYPE, "{}", 2, k, &e);
	CHECK(env && attest_envelope_open(env, strlen(env), pub, &o, &e) == 0 && o.verified, "ECDSA envelope: %s", e.msg);
	attest_envelope_free(&o);
	free(env);
	snprintf(rel, sizeof rel, "%s/rel", dir);
	CHECK(attest_model_sig_write(rel, "tiny", k, &e) == 0 && attest_model_sig_verify(rel, pub, &e) == 0,
	      "ECDSA model.sig: %s", e.msg);
done:
	attest_key_free(k);
	attest_key_free(pub);
}

int main(void)
{
	const char *dir = check_tmpdir();

	test_b64_pae();
	test_spec_vector(dir);
	test_keys(dir);
	test_statement(dir);
	test_model_sig(dir);
	test_ec(dir);
	return check_done();
}
