/* check.h - the tiny test harness every tests/test_*.c uses */
#ifndef QBAKE_CHECK_H
#define QBAKE_CHECK_H

#include <stddef.h>
#include <stdint.h>

/* Failures counted by CHECK; check_done() turns them into the exit code. */
extern int check_failures;

/* Records a failure (with file:line and a printf message) when cond is false; the test goes on. */
#define CHECK(cond, ...) \
	((cond) ? (void)0 : check_fail(__FILE__, __LINE__, #cond, __VA_ARGS__))
void check_fail(const char *file, int line, const char *expr, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* The ../shared folder, or NULL after deciding: exits 77 ("SKIP: reason") when absent,
 * or exits 1 when absent and CI=true. */
const char *check_shared(void);
/* "shared/<rel>" as a malloc'd path (exits like check_shared when shared is absent). */
char *check_shared_path(const char *rel);
/* A fresh temporary folder (removed by check_done); returns its path. */
const char *check_tmpdir(void);
/* Runs a shell command, returns its exit status (or -1). */
int check_system(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Reads a whole file into a malloc'd buffer (NUL-terminated); NULL if unreadable. */
char *check_slurp(const char *path, size_t *len);
/* Prints the summary and returns the exit code for main. */
int check_done(void);

#endif
