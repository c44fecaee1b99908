/* spm.c - SentencePiece ModelProto decoding (protobuf wire format, written from the spec) */
#include "spm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Protobuf wire types. Groups (3, 4) never occur in sentencepiece_model.proto. */
enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

/* A bounded cursor over one message; base is the offset of p[0] in the file, for messages. */
typedef struct rd {
	const uint8_t *p;
	size_t len, pos;
	size_t base;
	const char *name;
} rd;

static int varint(rd *r, uint64_t *out, err *e)
{
	uint64_t v = 0;
	size_t start = r->pos;

	for (int shift = 0; shift < 70; shift += 7) {
		uint8_t b;

		if (r->pos >= r->len)
			return err_set(e, "%s: offset %zu: truncated varint", r->name, r->base + start);
		b = r->p[r->pos++];
		if (shift == 63 && b > 1)
			break;
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*out = v;
			return 0;
		}
	}
	return err_set(e, "%s: offset %zu: varint longer than 64 bits", r->name, r->base + start);
}

/* Reads a field key; returns 0 with field number and wire type, or -1. */
static int key(rd *r, uint32_t *field, uint32_t *wt, err *e)
{
	uint64_t k = 0;
	size_t at = r->pos;

	if (varint(r, &k, e))
		return -1;
	*field = (uint32_t)(k >> 3);
	*wt = (uint32_t)(k & 7);
	if (*field == 0 || k >> 32)
		return err_set(e, "%s: offset %zu: bad field number", r->name, r->base + at);
	return 0;
}

/* Steps over one value of wire type wt; for WT_LEN, sub (when not NULL) receives the bytes. */
static int value(rd *r, uint32_t wt, uint64_t *v, rd *sub, err *e)
{
	size_t at = r->pos;
	uint64_t n;

	switch (wt) {
	case WT_VARINT:
		return varint(r, v, e);
	case WT_I64:
	case WT_I32:
		n = wt == WT_I64 ? 8 : 4;
		if (r->len - r->pos < n)
			return err_set(e, "%s: offset %zu: truncated fixed-width field", r->name, r->base + at);
		*v = 0;
		for (unsigned i = 0; i < n; i++)
			*v |= (uint64_t)r->p[r->pos + i] << (8 * i);
		r->pos += n;
		return 0;
	case WT_LEN:
		if (varint(r, &n, e))
			return -1;
		if (n > r->len - r->pos)
			return err_set(e, "%s: offset %zu: length %llu runs past the end of its message",
				       r->name, r->base + at, (unsigned long long)n);
		if (sub)
			*sub = (rd){ r->p + r->pos, n, 0, r->base + r->pos, r->name };
		r->pos += n;
		*v = n;
		return 0;
	default:
		return err_set(e, "%s: offset %zu: unsupported wire type %u", r->name, r->base + at, wt);
	}
}

/* Fails unless a field has the wire type its .proto declaration implies. */
static int want(rd *r, uint32_t field, uint32_t wt, uint32_t expect, err *e)
{
	if (wt == expect)
		return 0;
	return err_set(e, "%s: offset %zu: field %u has wire type %u, expected %u", r->name,
		       r->base + r->pos, field, wt, expect);
}

static int piece(spm_model *m, rd *r, err *e)
{
	spm_piece pc = { NULL, 0, 0.0f, SPM_NORMAL };
	rd s;

	while (r->pos < r->len) {
		uint32_t f, wt;
		uint64_t v;

		if (key(r, &f, &wt, e) || value(r, wt, &v, &s, e))
			goto fail;
		if (f == 1) {
			if (want(r, f, wt, WT_LEN, e))
				goto fail;
			free(pc.piece);
			pc.piece = malloc(s.len + 1);
			if (!pc.piece) {
				err_set(e, "%s: out of memory", r->name);
				goto fail;
			}
			memcpy(pc.piece, s.p, s.len);
			pc.piece[s.len] = 0;
			pc.len = (uint32_t)s.len;
		} else if (f == 2) {
			uint32_t u = (uint32_t)v;

			if (want(r, f, wt, WT_I32, e))
				goto fail;
			memcpy(&pc.score, &u, 4);
		} else if (f == 3) {
			if (want(r, f, wt, WT_VARINT, e))
				goto fail;
			if (v < SPM_NORMAL || v > SPM_BYTE) {
				err_set(e, "%s: offset %zu: unknown piece type %llu", r->name, r->base + r->pos,
					(unsigned long long)v);
				goto fail;
			}
			pc.type = (int)v;
		}
	}
	if (!pc.piece) {
		pc.piece = calloc(1, 1);
		if (!pc.piece)
			return err_set(e, "%s: out of memory", r->name);
	}
	m->pieces[m->n++] = pc;
	return 0;
fail:
	free(pc.piece);
	return -1;
}

static int trainer(spm_model *m, rd *r, err *e)
{
	while (r->pos < r->len) {
		uint32_t f, wt;
		uint64_t v;

		if (key(r, &f, &wt, e) || value(r, wt, &v, NULL, e))
			return -1;
		if (wt != WT_VARINT)
			continue;
		switch (f) {
		case 3: m->model_type = (int)v; break;
		case 35: m->byte_fallback = v != 0; break;
		case 40: m->unk_id = (int32_t)v; break; /* int32: negatives are sign-extended varints */
		case 41: m->bos_id = (int32_t)v; break;
		case 42: m->eos_id = (int32_t)v; break;
		case 43: m->pad_id = (int32_t)v; break;
		}
	}
	return 0;
}

static int normalizer(spm_model *m, rd *r, err *e)
{
	while (r->pos < r->len) {
		uint32_t f, wt;
		uint64_t v;

		if (key(r, &f, &wt, e) || value(r, wt, &v, NULL, e))
			return -1;
		if (wt != WT_VARINT)
			continue;
		if (f == 3)
			m->add_dummy_prefix = v != 0;
		else if (f == 4)
			m->remove_extra_whitespaces = v != 0;
		else if (f == 5)
			m->escape_whitespaces = v != 0;
	}
	return 0;
}

int spm_parse(spm_model *m, const void *buf, size_t len, const char *name, err *e)
{
	rd r = { buf, len, 0, 0, name }, s;
	size_t count = 0;

	memset(m, 0, sizeof *m);
	m->model_type = 1;
	m->unk_id = 0, m->bos_id = 1, m->eos_id = 2, m->pad_id = -1;
	m->add_dummy_prefix = m->remove_extra_whitespaces = m->escape_whitespaces = true;

	/* First pass counts the pieces so the array is allocated once. */
	while (r.pos < r.len) {
		uint32_t f, wt;
		uint64_t v;

		if (key(&r, &f, &wt, e) || value(&r, wt, &v, NULL, e))
			return -1;
		if (f == 1 && want(&r, f, wt, WT_LEN, e) == 0)
			count++;
		else if (f == 1)
			return -1;
	}
	if (count == 0)
		return err_set(e, "%s: no vocabulary pieces (is this a SentencePiece model?)", name);
	m->pieces = calloc(count, sizeof *m->pieces);
	if (!m->pieces)
		return err_set(e, "%s: out of memory", name);
	r.pos = 0;
	while (r.pos < r.len) {
		uint32_t f, wt;
		uint64_t v;
		int rc = 0;

		if (key(&r, &f, &wt, e) || value(&r, wt, &v, &s, e))
			goto fail;
		if (f == 1)
			rc = piece(m, &s, e);
		else if (f == 2 && wt == WT_LEN)
			rc = trainer(m, &s, e);
		else if (f == 3 && wt == WT_LEN)
			rc = normalizer(m, &s, e);
		if (rc)
			goto fail;
	}
	return 0;
fail:
	spm_free(m);
	return -1;
}

int spm_load(spm_model *m, const char *path, err *e)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t n = 0, cap = 0;
	int rc;

	memset(m, 0, sizeof *m);
	if (!f)
		return err_errno(e, "%s", path);
	for (;;) {
		size_t got;

		if (n == cap) {
			uint8_t *nb = realloc(buf, cap ? cap * 2 : 1 << 16);

			if (!nb) {
				free(buf);
				fclose(f);
				return err_set(e, "%s: out of memory", path);
			}
			buf = nb;
			cap = cap ? cap * 2 : 1 << 16;
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		free(buf);
		fclose(f);
		errno = EIO;
		return err_errno(e, "%s: read error", path);
	}
	fclose(f);
	rc = spm_parse(m, buf, n, path, e);
	free(buf);
	return rc;
}

void spm_free(spm_model *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->pieces[i].piece);
	free(m->pieces);
	m->pieces = NULL;
	m->n = 0;
}
