/* err.h - error values: one message naming the file, the offset and what is wrong */
#ifndef QBAKE_ERR_H
#define QBAKE_ERR_H

#include <stdarg.h>

/* An error as a value. Zeroed means "no error". Functions that can fail
 * take an `err *` last and return -1 (or NULL) after filling it; the CLI
 * prints it once. The first error set wins, so a low-level message is not
 * overwritten by a vaguer one from its caller. */
typedef struct err {
	int set;        /* nonzero once a message is recorded */
	char msg[1024]; /* "path: offset N: what is wrong", NUL-terminated */
} err;

/* Records the message (if none is recorded yet); returns -1. e may be NULL. */
int err_set(err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Like err_set, with a va_list; returns -1. */
int err_vset(err *e, const char *fmt, va_list ap);
/* Like err_set, appending ": strerror(errno)" for the current errno; returns -1. */
int err_errno(err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes the recorded message with "prefix: " (for context from a caller); returns -1. */
int err_prefix(err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Forgets a recorded error. */
void err_clear(err *e);

#endif
