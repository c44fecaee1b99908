/* test_audit.c - `qbake audit` on a fake signed release: verified, tampered, swapped, wrong key, unsigned, foreign, requantized */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "attest.h"
#include "check.h"
#include "gguf.h"
#include "quant.h"
#include "sha256.h"

static const char *bin(void)
{
	const char *b = getenv("QBAKE_BIN");

	return b ? b : "./build/qbake";
}

static const char recipe[] = "{\"name\":\"tiny\",\"tiers\":[\"Q8_0\",\"Q4_0\"]}";

/* Writes a one-tensor GGUF of type type made from floats x (rows of 256), with the given
 * lineage (the qbake.* keys a build writes). */
static void write_gguf(const char *path, uint32_t type, const float *x, int64_t rows, const char *tier,
		       const char *baseline_hex)
{
	gguf_meta m = { 0 };
	gguf_tensor t = { 0 };
	size_t n = gguf_row_size(type, 256) * (size_t)rows;
	void *buf = malloc(n);
	char rhex[65];
	uint8_t rd[32];
	gguf_writer *w;
	err e = { 0 };

	sha256_buf(recipe, strlen(recipe), rd);
	gguf_meta_set_str(&m, "general.architecture", "llama");
	if (tier) {
		gguf_meta_set_str(&m, "qbake.version", "0.1.0");
		gguf_meta_set_str(&m, "qbake.recipe.sha256", sha256_hex(rd, rhex));
		gguf_meta_set_str(&m, "qbake.source.commit", "0123456789abcdef0123456789abcdef01234567");
		gguf_meta_set_str(&m, "qbake.baseline.sha256", baseline_hex);
		gguf_meta_set_u32(&m, "qbake.imatrix.ctx", 512);
		gguf_meta_set_str(&m, "qbake.tier", tier);
	}
	t.name = "blk.0.ffn_gate.weight";
	t.type = type;
	t.n_dims = 2;
	t.ne[0] = 256;
	t.ne[1] = (uint64_t)rows;
	t.ne[2] = t.ne[3] = 1;
	quant_rows(type, x, buf, rows, 256, NULL);
	w = gguf_writer_begin(path, 0, &m, &t, 1, &e);
	CHECK(w && gguf_writer_write(w, buf, n, &e) == 0 && gguf_writer_finish(w, NULL, &e) == 0, "%s: %s", path, e.msg);
	free(buf);
	gguf_meta_free(&m);
}

static const char baseline[] = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/* A release folder with two tiers and its attestation (signed with key, or not). */
static void make_release(const char *dir, float scale, const attest_key *key)
{
	static const char *const names[] = { "tiny-Q8_0.gguf", "tiny-Q4_0.gguf" };
	float *x = malloc(256 * 8 * sizeof *x);
	char path[4096];
	attest_subject subj[2] = { { names[0], { 0 }, NULL }, { names[1], { 0 }, NULL } };
	attest_dep deps[] = {
		{ "source", "git+https://example.com/tiny.git", NULL, "0123456789abcdef0123456789abcdef01234567" },
		{ "baseline", NULL, baseline, NULL },
	};
	attest_build b = { subj, 2, recipe, NULL, deps, 2, "0.1.0" };
	err e = { 0 };

	mkdir(dir, 0755);
	for (int i = 0; i < 256 * 8; i++)
		x[i] = scale * (float)((i * 7919) % 201 - 100) / 100.0f;
	snprintf(path, sizeof path, "%s/%s", dir, names[0]);
	write_gguf(path, GGUF_TYPE_Q8_0, x, 8, "Q8_0", baseline);
	snprintf(path, sizeof path, "%s/%s", dir, names[1]);
	write_gguf(path, GGUF_TYPE_Q4_0, x, 8, "Q4_0", baseline);
	CHECK(attest_write_release(dir, &b, key, &e) == 0, "%s", e.msg);
	free(x);
}

/* Runs qbake audit with args; returns its exit code and the output (stdout + stderr) in *out. */
static int audit(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int audit(char **out, const char *fmt, ...)
{
	char args[4096], log[4200];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(args, sizeof args, fmt, ap);
	va_end(ap);
	snprintf(log, sizeof log, "%s/audit.out", check_tmpdir());
	rc = check_system("'%s' audit %s > '%s' 2>&1", bin(), args, log);
	*out = check_slurp(log, NULL);
	if (getenv("AUDIT_SHOW") && *out)
		printf("$ qbake audit %s -> %d\n%s\n", args, rc, *out);
	if (!*out)
		*out = strdup("");
	return rc;
}

static void test_release(const char *dir)
{
	char rel[1024], other[1024], unsigned_rel[1024], tampered[1024], edited[1024], key[1100], pub[1100], pub2[1100];
	char path[2048], *out;
	attest_key *k;
	int rc;
	err e = { 0 };

	snprintf(key, sizeof key, "%s/k", dir);
	CHECK(attest_keygen(key, NULL, &e) == 0, "%s", e.msg);
	snprintf(pub2, sizeof pub2, "%s/k2", dir);
	CHECK(attest_keygen(pub2, NULL, &e) == 0, "%s", e.msg);
	snprintf(pub2, sizeof pub2, "%s/k2.pub", dir);
	snprintf(pub, sizeof pub, "%s/k.pub", dir);
	snprintf(key, sizeof key, "%s/k.key", dir);
	k = attest_key_load(key, &e);
	CHECK(k, "%s", e.msg);

	snprintf(rel, sizeof rel, "%s/release", dir);
	make_release(rel, 1.0f, k);
	rc = audit(&out, "'%s/tiny-Q8_0.gguf' --pubkey '%s'", rel, pub);
	CHECK(rc == 0, "a clean release verifies: exit %d\n%s", rc, out);
	CHECK(strstr(out, "verdict: verified") && strstr(out, "qbake.tier = Q8_0") && strstr(out, "Q8_0"), "%s", out);
	free(out);
	rc = audit(&out, "'%s/tiny-Q4_0.gguf' --pubkey '%s' --json", rel, pub);
	CHECK(rc == 0, "second tier verifies: exit %d\n%s", rc, out);
	{
		json_t *j = json_loads(out, 0, NULL);

		CHECK(j && json_integer_value(json_object_get(j, "exit")) == 0 &&
		      json_is_true(json_object_get(json_object_get(j, "attestation"), "signature_verified")) &&
		      json_integer_value(json_object_get(json_object_get(json_object_get(j, "types"), "Q4_0"), "tensors")) == 1,
		      "--json report: %s", out);
		json_decref(j);
	}
	free(out);

	/* Without --pubkey: the signature is not checked, so not verified. */
	rc = audit(&out, "'%s/tiny-Q8_0.gguf'", rel);
	CHECK(rc == 3 && strstr(out, "no --pubkey"), "no key: exit %d\n%s", rc, out);
	free(out);

	/* One flipped byte in the tensor data. */
	snprintf(tampered, sizeof tampered, "%s/tampered", dir);
	check_system("cp -r '%s' '%s'", rel, tampered);
	snprintf(path, sizeof path, "%s/tiny-Q8_0.gguf", tampered);
	{
		FILE *f = fopen(path, "r+b");
		int c;

		CHECK(f && fseek(f, -100, SEEK_END) == 0, "open %s", path);
		c = fgetc(f);
		fseek(f, -100, SEEK_END);
		fputc(c ^ 0x01, f);
		fclose(f);
	}
	rc = audit(&out, "'%s' --pubkey '%s'", path, pub);
	CHECK(rc == 1 && strstr(out, "digest mismatch") && strstr(out, "tiny-Q8_0.gguf"), "flipped byte: exit %d\n%s", rc,
	      out);
	free(out);

	/* Another release's attestation (same file names, other weights). */
	snprintf(other, sizeof other, "%s/other", dir);
	make_release(other, 0.5f, k);
	rc = audit(&out, "'%s/tiny-Q8_0.gguf' --pubkey '%s' --attestation '%s/attestation.dsse.json'", rel, pub, other);
	CHECK(rc == 1 && strstr(out, "digest mismatch"), "swapped attestation: exit %d\n%s", rc, out);
	free(out);

	/* The wrong key. */
	rc = audit(&out, "'%s/tiny-Q8_0.gguf' --pubkey '%s'", rel, pub2);
	CHECK(rc == 1 && strstr(out, "signature") && strstr(out, "not signed by"), "wrong key: exit %d\n%s", rc, out);
	free(out);

	/* An edited lineage key under the original attestation. */
	snprintf(edited, sizeof edited, "%s/edited", dir);
	check_system("cp -r '%s' '%s'", rel, edited);
	{
		float *x = malloc(256 * 8 * sizeof *x);

		for (int i = 0; i < 256 * 8; i++)
			x[i] = (float)((i * 7919) % 201 - 100) / 100.0f;
		snprintf(path, sizeof path, "%s/tiny-Q8_0.gguf", edited);
		write_gguf(path, GGUF_TYPE_Q8_0, x, 8, "Q6_K", baseline);
		free(x);
	}
	rc = audit(&out, "'%s' --pubkey '%s'", path, pub);
	CHECK(rc == 1 && strstr(out, "lineage qbake.tier: the file says \"Q6_K\", the attestation says \"Q8_0\""),
	      "edited lineage: exit %d\n%s", rc, out);
	free(out);

	/* Unsigned attestation. */
	snprintf(unsigned_rel, sizeof unsigned_rel, "%s/unsigned", dir);
	make_release(unsigned_rel, 1.0f, NULL);
	rc = audit(&out, "'%s/tiny-Q8_0.gguf' --pubkey '%s'", unsigned_rel, pub);
	CHECK(rc == 3 && strstr(out, "unsigned"), "unsigned: exit %d\n%s", rc, out);
	free(out);

	/* No attestation at all. */
	snprintf(path, sizeof path, "%s/attestation.dsse.json", unsigned_rel);
	remove(path);
	rc = audit(&out, "'%s/tiny-Q8_0.gguf' --pubkey '%s'", unsigned_rel, pub);
	CHECK(rc == 3 && strstr(out, "no attestation"), "no attestation: exit %d\n%s", rc, out);
	free(out);

	/* Usage and unreadable input. */
	rc = audit(&out, "'%s/missing.gguf'", rel);
	CHECK(rc == 2 && strstr(out, "missing.gguf"), "missing file: exit %d\n%s", rc, out);
	free(out);
	rc = audit(&out, "'%s/tiny-Q8_0.gguf' --pubkey '%s/nokey.pub'", rel, dir);
	CHECK(rc == 2 && strstr(out, "nokey.pub"), "missing key: exit %d\n%s", rc, out);
	free(out);
	rc = audit(&out, "--bogus");
	CHECK(rc == 2, "bad option: exit %d", rc);
	free(out);
	attest_key_free(k);
}

/* A Q8_0 made from a Q4_0 (dequantized in between) sits on a 4-bit grid; one made directly
 * from the F16 weights does not. */
static void test_requantized(const char *dir)
{
	char *f16 = check_shared_path("golden/pydoc-8m/pydoc-8m-F16.gguf"), *q40 =
		check_shared_path("golden/pydoc-8m/quant/pydoc-8m-Q4_0.gguf");
	char path[2048], *out;
	const gguf_tensor *t;
	gguf_file f;
	float *x, *y;
	void *q;
	int64_t rows, n;
	int rc;
	err e = { 0 };

	rc = audit(&out, "'%s'", q40);
	CHECK(rc == 3 && strstr(out, "Q4_0") && strstr(out, "57 tensors") && strstr(out, "missing provenance") &&
	      strstr(out, "no qbake.* lineage keys"), "foreign golden file: exit %d\n%s", rc, out);
	CHECK(strstr(out, "requantized: no sign of it"), "llama-quantize's Q4_0 is not requantized");
	free(out);

	CHECK(gguf_open(&f, f16, &e) == 0, "%s", e.msg);
	t = gguf_find_tensor(&f, "blk.0.ffn_gate.weight");
	CHECK(t && t->type == GGUF_TYPE_F16 && t->ne[0] == 256, "F16 tensor");
	if (!t || t->ne[0] != 256) {
		gguf_close(&f);
		return;
	}
	rows = (int64_t)t->ne[1];
	n = rows * 256;
	x = malloc((size_t)n * sizeof *x);
	y = malloc((size_t)n * sizeof *y);
	q = malloc(gguf_row_size(GGUF_TYPE_Q4_0, 256) * (size_t)rows);
	quant_dequant_row(GGUF_TYPE_F16, t->data, x, n);
	gguf_close(&f);

	snprintf(path, sizeof path, "%s/direct-Q8_0.gguf", dir);
	write_gguf(path, GGUF_TYPE_Q8_0, x, rows, NULL, NULL);
	rc = audit(&out, "'%s'", path);
	CHECK(rc == 3 && strstr(out, "requantized: no sign of it"), "F16 -> Q8_0 directly: exit %d\n%s", rc, out);
	free(out);

	quant_rows(GGUF_TYPE_Q4_0, x, q, rows, 256, NULL);
	quant_dequant_row(GGUF_TYPE_Q4_0, q, y, n);
	snprintf(path, sizeof path, "%s/requant-Q8_0.gguf", dir);
	write_gguf(path, GGUF_TYPE_Q8_0, y, rows, NULL, NULL);
	rc = audit(&out, "'%s' --json", path);
	{
		json_t *j = json_loads(out, 0, NULL), *r = json_object_get(j, "requantized");

		CHECK(rc == 3 && json_is_true(json_object_get(r, "looks_requantized")) &&
		      json_integer_value(json_object_get(json_array_get(json_object_get(r, "evidence"), 0), "bits")) == 4,
		      "F16 -> Q4_0 -> Q8_0 looks requantized on a 4-bit grid: exit %d\n%s", rc, out);
		json_decref(j);
	}
	free(out);
	free(x);
	free(y);
	free(q);
	free(f16);
	free(q40);
}

int main(void)
{
	const char *dir = check_tmpdir();

	test_release(dir);
	if (check_failures)
		return check_done();
	check_shared();
	test_requantized(dir);
	return check_done();
}
