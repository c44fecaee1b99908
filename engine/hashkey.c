/* hashkey.c - node keys: SHA-256 over a canonical, typed, length-prefixed encoding */
#include "hashkey.h"

#include <string.h>

/* One value: tag byte, length as 8 little-endian bytes, then the bytes. */
static void put(hkey *h, char tag, const void *p, uint64_t n)
{
	uint8_t hdr[9];

	hdr[0] = (uint8_t)tag;
	for (int i = 0; i < 8; i++)
		hdr[1 + i] = (uint8_t)(n >> (8 * i));
	sha256_update(&h->sha, hdr, sizeof hdr);
	if (n)
		sha256_update(&h->sha, p, (size_t)n);
}

static void put_u64(hkey *h, char tag, uint64_t v)
{
	uint8_t b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	put(h, tag, b, 8);
}

int hkey_begin(hkey *h, const char *domain, err *e)
{
	memset(h, 0, sizeof *h);
	if (sha256_init(&h->sha) < 0)
		return err_set(e, "node key: out of memory");
	put(h, 'K', domain, strlen(domain));
	return 0;
}

void hkey_str(hkey *h, const char *s)
{
	put(h, 's', s, strlen(s));
}

void hkey_bytes(hkey *h, const void *p, size_t n)
{
	put(h, 'b', p, n);
}

void hkey_u64(hkey *h, uint64_t v)
{
	put_u64(h, 'u', v);
}

void hkey_i64(hkey *h, int64_t v)
{
	put_u64(h, 'i', (uint64_t)v);
}

void hkey_f64(hkey *h, double v)
{
	uint64_t bits;

	if (v == 0)
		v = 0; /* -0 == 0: one encoding for both */
	if (v != v)
		bits = 0x7ff8000000000000ull;
	else
		memcpy(&bits, &v, 8);
	put_u64(h, 'f', bits);
}

void hkey_digest(hkey *h, const uint8_t d[32])
{
	put(h, 'd', d, 32);
}

void hkey_list(hkey *h, uint64_t n)
{
	put_u64(h, 'l', n);
}

void hkey_field(hkey *h, const char *name)
{
	put(h, 'n', name, strlen(name));
}

int hkey_end(hkey *h, uint8_t key[32])
{
	sha256_final(&h->sha, key);
	sha256_free(&h->sha);
	return 0;
}
