/* test_afile.c - atomic files and SHA-256 against hand-checked digests */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "afile.h"
#include "check.h"
#include "sha256.h"

int main(void)
{
	const char *dir = check_tmpdir();
	char path[512], hex[65];
	uint8_t d[32], d2[32];
	struct stat st;
	afile f;
	err e = { 0 };

	/* FIPS 180-2 test vector. */
	sha256_buf("abc", 3, d);
	CHECK(strcmp(sha256_hex(d, hex), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0,
	      "sha256(abc) = %s", hex);
	CHECK(sha256_unhex(hex, d2) == 0 && memcmp(d, d2, 32) == 0, "unhex round trip");
	CHECK(sha256_unhex("zz", d2) < 0, "bad hex refused");

	/* Nothing under the final name until commit; the digest is of what was written. */
	snprintf(path, sizeof path, "%s/out.bin", dir);
	CHECK(afile_open(&f, path, 1, 0, &e) == 0, "%s", e.msg);
	CHECK(afile_write(&f, "ab", 2, &e) == 0, "%s", e.msg);
	CHECK(afile_write(&f, "c", 1, &e) == 0, "%s", e.msg);
	CHECK(stat(path, &st) < 0, "final name exists before commit");
	CHECK(afile_commit(&f, d2, &e) == 0, "%s", e.msg);
	CHECK(memcmp(d, d2, 32) == 0, "running digest");
	CHECK(stat(path, &st) == 0 && st.st_size == 3, "committed file");
	CHECK(sha256_file(path, d2, &e) == 0 && memcmp(d, d2, 32) == 0, "file digest");

	/* Abort leaves nothing behind. */
	snprintf(path, sizeof path, "%s/gone.bin", dir);
	CHECK(afile_open(&f, path, 0, 0, &e) == 0, "%s", e.msg);
	CHECK(afile_zeros(&f, 10000, &e) == 0, "%s", e.msg);
	afile_abort(&f);
	CHECK(stat(path, &st) < 0, "aborted file exists");
	CHECK(check_system("test -z \"$(ls -A '%s' | grep qbake-tmp)\"", dir) == 0, "temp file left behind");

	/* A folder that does not exist is an error naming the path. */
	CHECK(afile_put("/nonexistent-dir/x", "x", 1, &e) < 0, "write into a missing folder");
	CHECK(strstr(e.msg, "/nonexistent-dir/x") != NULL, "message names the file: %s", e.msg);
	return check_done();
}
