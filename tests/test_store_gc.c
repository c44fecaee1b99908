/* test_store_gc.c - gc keeps what builds reference and drops the rest oldest first; the CLI */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "store.h"

static char cache[512];

static void quiet(void *ctx, const char *msg)
{
	(void)ctx;
	(void)msg;
}

/* Adds an object of n bytes filled with c; returns its digest in d. */
static void add(store *s, int c, size_t n, uint8_t d[32])
{
	char *p = malloc(n);
	err e = { 0 };

	memset(p, c, n);
	CHECK(store_put_buf(s, p, n, d, &e) == 0, "%s", e.msg);
	free(p);
}

static void age(store *s, const uint8_t d[32], long seconds_ago)
{
	struct timespec t[2];
	char path[1024];

	clock_gettime(CLOCK_REALTIME, &t[0]);
	t[0].tv_sec -= seconds_ago;
	t[1] = t[0];
	CHECK(utimensat(AT_FDCWD, store_object_path(s, d, path, sizeof path), t, 0) == 0, "age %s", path);
}

static int has(store *s, const uint8_t d[32])
{
	err e = { 0 };

	return store_has(s, d, UINT64_MAX, &e) == 1;
}

static int has_action(store *s, const uint8_t key[32])
{
	char path[1024], hex[65];

	snprintf(path, sizeof path, "%s/ac/%.2s/%s", s->dir, sha256_hex(key, hex), hex);
	return access(path, F_OK) == 0;
}

static void test_gc(void)
{
	uint8_t A[32], B[32], C[32], D[32], E[32], F[32], G[32], K1[32], K2[32], R1[32], R2[32];
	store_action a = { 0 };
	store_report r;
	uint64_t total;
	err e = { 0 };
	store s;

	CHECK(store_open(&s, cache, &e) == 0, "%s", e.msg);
	s.warn = quiet;
	add(&s, 'a', 1000, A);
	add(&s, 'b', 2000, B);
	add(&s, 'c', 4000, C);
	add(&s, 'd', 8000, D);
	add(&s, 'e', 16000, E);
	add(&s, 'f', 32000, F);
	add(&s, 'g', 500, G);
	age(&s, C, 3000);
	age(&s, D, 2000);
	sha256_buf("key 1", 5, K1);
	sha256_buf("key 2", 5, K2);
	sha256_buf("recipe 1", 8, R1);
	sha256_buf("recipe 2", 8, R2);
	store_action_add(&a, "out", A, 1000, &e);
	CHECK(store_ac_put(&s, K1, &a, &e) == 0, "%s", e.msg);
	store_action_free(&a);
	store_action_add(&a, "out", G, 500, &e);
	CHECK(store_ac_put(&s, K2, &a, &e) == 0, "%s", e.msg);
	store_action_free(&a);
	{
		uint8_t keys[1][32], objs[2][32];

		memcpy(keys[0], K1, 32);
		memcpy(objs[0], B, 32);
		memcpy(objs[1], E, 32);
		CHECK(store_ref_put(&s, R1, (const uint8_t(*)[32])keys, 1, (const uint8_t(*)[32])objs, 2, &e) == 0, "%s", e.msg);
		memcpy(objs[0], F, 32);
		CHECK(store_ref_put(&s, R2, NULL, 0, (const uint8_t(*)[32])objs, 1, &e) == 0, "%s", e.msg);
	}
	/* K2's output vanishes: its record is useless and goes at the next gc. */
	{
		char path[1024];

		unlink(store_object_path(&s, G, path, sizeof path));
	}

	/* Measure (a limit nothing exceeds removes nothing but the dangling record). */
	CHECK(store_gc(&s, UINT64_MAX - 1, &r, &e) == 0, "%s", e.msg);
	total = r.kept_bytes;
	CHECK(r.removed_objects == 0 && r.removed_actions == 1 && !has_action(&s, K2), "dangling record");
	CHECK(total > 63000 && total < 64000, "total %llu", (unsigned long long)total);

	/* One byte over: the oldest unreferenced object goes, nothing else. */
	CHECK(store_gc(&s, total - 1, &r, &e) == 0, "%s", e.msg);
	CHECK(!has(&s, C) && has(&s, D), "oldest unreferenced first");
	CHECK(r.removed_objects == 1 && r.removed_refs == 0, "only C: %llu", (unsigned long long)r.removed_objects);

	/* No limit: everything unreferenced goes; referenced things stay. */
	CHECK(store_gc(&s, STORE_GC_UNREFERENCED, &r, &e) == 0, "%s", e.msg);
	CHECK(!has(&s, D), "unreferenced kept");
	CHECK(has(&s, A) && has(&s, B) && has(&s, E) && has(&s, F) && has_action(&s, K1),
	      "referenced entries removed");
	{
		store_action b;

		CHECK(store_ac_get(&s, K1, &b, &e) == 1, "referenced action still a hit");
		store_action_free(&b);
	}

	/* Room for the newest build only: the oldest build's ref goes, with what only it needed. */
	CHECK(store_gc(&s, 32100, &r, &e) == 0, "%s", e.msg);
	CHECK(has(&s, F), "newest build's object removed");
	CHECK(!has(&s, A) && !has(&s, B) && !has(&s, E) && !has_action(&s, K1), "oldest build kept");
	CHECK(r.removed_refs == 1 && r.kept_bytes <= 32100, "kept %llu", (unsigned long long)r.kept_bytes);

	/* Zero: empty. */
	CHECK(store_gc(&s, 0, &r, &e) == 0, "%s", e.msg);
	CHECK(!has(&s, F) && r.kept_bytes == 0, "not empty: %llu", (unsigned long long)r.kept_bytes);
	store_close(&s);
}

static void test_cli(void)
{
	const char *bin = getenv("QBAKE_BIN");
	char path[1024];
	uint8_t d[32];
	err e = { 0 };
	store s;

	if (!bin) {
		printf("note: QBAKE_BIN not set, CLI not tested\n");
		return;
	}
	CHECK(store_open(&s, cache, &e) == 0, "%s", e.msg);
	add(&s, 'x', 5000, d);
	store_close(&s);
	CHECK(check_system("'%s' cache verify --cache '%s' >/dev/null", bin, cache) == 0, "clean verify");
	{
		char hex[65];

		snprintf(path, sizeof path, "%s/objects/%.2s/%s", cache, sha256_hex(d, hex), hex);
	}
	CHECK(check_system("chmod u+w '%s' && printf Y | dd of='%s' bs=1 seek=10 conv=notrunc 2>/dev/null",
			   path, path) == 0, "flip");
	CHECK(check_system("'%s' cache verify --cache '%s' >/dev/null 2>&1", bin, cache) == 1,
	      "verify of a damaged cache exits 1");
	CHECK(access(path, F_OK) < 0, "damaged object left");
	CHECK(check_system("QBAKE_CACHE='%s' '%s' cache verify >/dev/null", cache, bin) == 0,
	      "verify after repair (QBAKE_CACHE)");
	CHECK(check_system("'%s' gc --max-size 10G --cache '%s' >/dev/null", bin, cache) == 0, "gc");
	CHECK(check_system("'%s' gc --max-size=0 --cache='%s' >/dev/null", bin, cache) == 0, "gc 0");
	CHECK(check_system("'%s' gc --max-size 10Q --cache '%s' 2>/dev/null", bin, cache) == 2, "bad size");
	CHECK(check_system("'%s' gc --frobnicate 2>/dev/null", bin) == 2, "bad option");
	CHECK(check_system("'%s' cache 2>/dev/null", bin) == 2, "no subcommand");
	CHECK(check_system("'%s' gc --help | grep -q max-size", bin) == 0, "help");
	CHECK(check_system("'%s' gc --cache /proc/qbake-cache 2>/dev/null", bin) == 1, "unusable cache dir");
}

int main(void)
{
	snprintf(cache, sizeof cache, "%s/cache", check_tmpdir());
	test_gc();
	test_cli();
	return check_done();
}
