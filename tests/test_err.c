/* test_err.c - error values: first error wins, prefixes, long messages cut safely */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "err.h"

int main(void)
{
	err e = { 0 };
	char big[3000];

	CHECK(err_set(&e, "%s: offset %d: bad magic", "a.gguf", 0) == -1, "returns -1");
	CHECK(e.set && strcmp(e.msg, "a.gguf: offset 0: bad magic") == 0, "%s", e.msg);
	err_set(&e, "later");
	CHECK(strcmp(e.msg, "a.gguf: offset 0: bad magic") == 0, "first error wins: %s", e.msg);
	err_prefix(&e, "quantize %s", "x");
	CHECK(strcmp(e.msg, "quantize x: a.gguf: offset 0: bad magic") == 0, "%s", e.msg);

	err_clear(&e);
	CHECK(!e.set && e.msg[0] == 0, "cleared");
	errno = ENOENT;
	err_errno(&e, "%s: cannot open", "b");
	CHECK(strcmp(e.msg, "b: cannot open: No such file or directory") == 0, "%s", e.msg);

	/* Messages longer than the buffer are cut, never overflow; the prefix survives. */
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = 0;
	err_clear(&e);
	err_set(&e, "%s", big);
	CHECK(strlen(e.msg) == sizeof e.msg - 1, "cut to the buffer");
	err_prefix(&e, "ctx");
	CHECK(strncmp(e.msg, "ctx: xxx", 8) == 0 && strlen(e.msg) < sizeof e.msg, "prefix kept");
	CHECK(err_set(NULL, "no sink") == -1, "NULL sink is allowed");
	return check_done();
}
