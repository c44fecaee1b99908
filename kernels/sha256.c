/* sha256.c - SHA-256 digests */
#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <openssl/evp.h>

int sha256_init(sha256 *s)
{
	s->ctx = EVP_MD_CTX_new();
	if (!s->ctx || !EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(s->ctx);
		s->ctx = NULL;
		return -1;
	}
	return 0;
}

void sha256_update(sha256 *s, const void *p, size_t n)
{
	if (n)
		EVP_DigestUpdate(s->ctx, p, n);
}

void sha256_final(sha256 *s, uint8_t out[32])
{
	unsigned len = 32;

	EVP_DigestFinal_ex(s->ctx, out, &len);
}

void sha256_free(sha256 *s)
{
	EVP_MD_CTX_free(s->ctx);
	s->ctx = NULL;
}

void sha256_buf(const void *p, size_t n, uint8_t out[32])
{
	unsigned len = 32;

	EVP_Digest(p, n, out, &len, EVP_sha256(), NULL);
}

int sha256_file(const char *path, uint8_t out[32], err *e)
{
	enum { CHUNK = 1 << 20 };
	sha256 s;
	uint8_t *buf;
	ssize_t got;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_errno(e, "%s: cannot open", path);
	buf = malloc(CHUNK);
	if (!buf || sha256_init(&s) < 0) {
		free(buf);
		close(fd);
		return err_set(e, "%s: out of memory", path);
	}
	while ((got = read(fd, buf, CHUNK)) != 0) {
		if (got < 0) {
			if (errno == EINTR)
				continue;
			err_errno(e, "%s: read failed", path);
			break;
		}
		sha256_update(&s, buf, (size_t)got);
	}
	if (got == 0)
		sha256_final(&s, out);
	sha256_free(&s);
	free(buf);
	close(fd);
	return got == 0 ? 0 : -1;
}

char *sha256_hex(const uint8_t d[32], char hex[65])
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 0; i < 32; i++) {
		hex[2 * i] = digits[d[i] >> 4];
		hex[2 * i + 1] = digits[d[i] & 15];
	}
	hex[64] = 0;
	return hex;
}

static int nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int sha256_unhex(const char *hex, uint8_t d[32])
{
	for (int i = 0; i < 32; i++) {
		int hi = nibble(hex[2 * i]), lo = hi < 0 ? -1 : nibble(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		d[i] = (uint8_t)(hi << 4 | lo);
	}
	return hex[64] == 0 ? 0 : -1;
}
