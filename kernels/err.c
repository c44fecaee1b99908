/* err.c - error values */
#include "err.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int err_vset(err *e, const char *fmt, va_list ap)
{
	if (!e || e->set)
		return -1;
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	e->set = 1;
	return -1;
}

int err_set(err *e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vset(e, fmt, ap);
	va_end(ap);
	return -1;
}

int err_errno(err *e, const char *fmt, ...)
{
	int saved = errno;
	size_t len;
	va_list ap;

	if (!e || e->set)
		return -1;
	va_start(ap, fmt);
	err_vset(e, fmt, ap);
	va_end(ap);
	len = strlen(e->msg);
	snprintf(e->msg + len, sizeof e->msg - len, ": %s", strerror(saved));
	return -1;
}

int err_prefix(err *e, const char *fmt, ...)
{
	char old[sizeof e->msg];
	size_t len;
	va_list ap;

	if (!e || !e->set)
		return -1;
	memcpy(old, e->msg, sizeof old);
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	va_end(ap);
	len = strlen(e->msg);
	/* The caller's context goes first; the original message is cut if it must be. */
	if (len + 2 < sizeof e->msg) {
		size_t room = sizeof e->msg - len - 3, olen = strlen(old);

		memcpy(e->msg + len, ": ", 2);
		memcpy(e->msg + len + 2, old, olen < room ? olen : room);
		e->msg[len + 2 + (olen < room ? olen : room)] = 0;
	}
	return -1;
}

void err_clear(err *e)
{
	if (e) {
		e->set = 0;
		e->msg[0] = 0;
	}
}
