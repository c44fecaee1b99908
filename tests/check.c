/* check.c - the tiny test harness */
#include "check.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int check_failures;
static char *tmpdir;

void check_fail(const char *file, int line, const char *expr, const char *fmt, ...)
{
	va_list ap;

	check_failures++;
	fprintf(stderr, "%s:%d: FAILED: %s: ", file, line, expr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

const char *check_shared(void)
{
	const char *dir = getenv("QBAKE_SHARED");
	const char *ci = getenv("CI");
	char probe[4096];
	struct stat st;

	if (!dir)
		dir = "../shared";
	snprintf(probe, sizeof probe, "%s/README.md", dir);
	if (stat(probe, &st) == 0) {
		/* Absolute, so tests may hand it to recipes in other folders. */
		static char real[4096];

		return realpath(dir, real) ? real : dir;
	}
	if (ci && strcmp(ci, "true") == 0) {
		fprintf(stderr, "FAIL: this test needs the shared fixtures, and %s is missing under CI=true\n", dir);
		exit(1);
	}
	printf("SKIP: this test needs the shared fixtures, not found at %s\n", dir);
	exit(77);
}

char *check_shared_path(const char *rel)
{
	const char *dir = check_shared();
	size_t n = strlen(dir) + strlen(rel) + 2;
	char *p = malloc(n);

	if (!p)
		abort();
	snprintf(p, n, "%s/%s", dir, rel);
	return p;
}

const char *check_tmpdir(void)
{
	if (!tmpdir) {
		char tmpl[] = "/tmp/qbake-test.XXXXXX";
		const char *d = mkdtemp(tmpl);

		if (!d) {
			perror("mkdtemp");
			exit(1);
		}
		tmpdir = strdup(d);
	}
	return tmpdir;
}

int check_system(const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	st = system(cmd);
	if (st == -1 || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

char *check_slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
		buf = malloc((size_t)n + 1);
		if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		}
		if (buf) {
			buf[n] = 0;
			if (len)
				*len = (size_t)n;
		}
	}
	fclose(f);
	return buf;
}

int check_done(void)
{
	if (tmpdir) {
		if (check_failures == 0)
			check_system("rm -rf '%s'", tmpdir);
		else
			fprintf(stderr, "(temporary files kept in %s)\n", tmpdir);
		free(tmpdir);
		tmpdir = NULL;
	}
	if (check_failures) {
		fprintf(stderr, "%d check(s) failed\n", check_failures);
		return 1;
	}
	return 0;
}
