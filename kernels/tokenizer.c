/* tokenizer.c - SentencePiece-style and GPT-2 byte-level BPE tokenizers from GGUF metadata */
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

/* Token attributes, from tokenizer.ggml.token_type (and a few fixed names). */
enum {
	ATTR_UNKNOWN = 1 << 0,
	ATTR_UNUSED = 1 << 1,
	ATTR_NORMAL = 1 << 2,
	ATTR_CONTROL = 1 << 3,
	ATTR_USER = 1 << 4,
	ATTR_BYTE = 1 << 5
};

enum { KIND_SPM, KIND_BPE };
enum { PRE_DEFAULT, PRE_GPT2, PRE_LLAMA3, PRE_QWEN2, PRE_SMOLLM };

/* A byte string inside one of the vocabulary's arenas. */
typedef struct tok_str {
	const char *p;
	uint32_t n;
} tok_str;

/* Open-addressing hash set of indices into a tok_str array (slot holds index + 1). */
typedef struct tok_map {
	uint32_t *slot;
	size_t mask;
} tok_map;

struct tok_vocab {
	int kind;              /* KIND_SPM or KIND_BPE, from tokenizer.ggml.model */
	int pre;               /* PRE_*, from tokenizer.ggml.pre (BPE only) */
	int32_t n;             /* vocabulary size */
	tok_str *text;         /* token strings (into arena) */
	float *score;          /* SPM merge priorities */
	uint8_t *attr;         /* ATTR_* bits per token */
	tok_str *piece;        /* detokenized text per token (into pieces) */
	char *arena, *pieces;  /* owned storage behind text and piece */
	tok_map by_text;       /* text -> id */
	tok_str *merge;        /* BPE merges as "left right", rank = index (into marena) */
	char *marena;
	uint32_t n_merge;
	tok_map by_merge;      /* "left right" -> rank */
	int32_t *special;      /* control/user/unknown ids, longest text first */
	int32_t n_special;
	int32_t bos, eos, unk, eot; /* -1 when absent */
	bool add_bos, add_eos;
	bool add_space_prefix; /* SPM: a leading space before text that follows a special token */
	bool ignore_merges;    /* BPE: a whole pre-token found in the vocabulary is one token */
	bool cut[128];         /* SPM: ASCII bytes no multi-byte token contains, so merges never
	                          cross them and the text can be merged piece by piece */
};

/* ---- hash map ---- */

static uint64_t hash(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h;
}

static int map_init(tok_map *m, size_t count)
{
	size_t cap = 16;
	while (cap < 2 * count + 16)
		cap *= 2;
	m->slot = calloc(cap, sizeof *m->slot);
	m->mask = cap - 1;
	return m->slot ? 0 : -1;
}

/* The index of the key equal to s[0..n), or -1. */
static long map_find(const tok_map *m, const tok_str *keys, const char *s, size_t n)
{
	size_t i = hash(s, n) & m->mask;
	for (;; i = (i + 1) & m->mask) {
		uint32_t k = m->slot[i];
		if (!k)
			return -1;
		const tok_str *t = &keys[k - 1];
		if (t->n == n && memcmp(t->p, s, n) == 0)
			return (long)(k - 1);
	}
}

/* Inserts index idx unless an equal key is present; returns the index already there or -1. */
static long map_add(tok_map *m, const tok_str *keys, uint32_t idx)
{
	const tok_str *key = &keys[idx];
	size_t i = hash(key->p, key->n) & m->mask;
	for (;; i = (i + 1) & m->mask) {
		uint32_t k = m->slot[i];
		if (!k) {
			m->slot[i] = idx + 1;
			return -1;
		}
		const tok_str *t = &keys[k - 1];
		if (t->n == key->n && memcmp(t->p, key->p, key->n) == 0)
			return (long)(k - 1);
	}
}

static int32_t lookup(const tok_vocab *v, const char *s, size_t n)
{
	return (int32_t)map_find(&v->by_text, v->text, s, n);
}

/* ---- id lists ---- */

int tok_ids_push(tok_ids *l, int32_t id)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 256;
		int32_t *p = realloc(l->ids, cap * sizeof *p);
		if (!p)
			return -1;
		l->ids = p;
		l->cap = cap;
	}
	l->ids[l->n++] = id;
	return 0;
}

void tok_ids_free(tok_ids *l)
{
	free(l->ids);
	memset(l, 0, sizeof *l);
}

/* ---- the merge queue shared by both algorithms ---- */

/* A candidate merge of two adjacent symbols. SPM ranks by token score, BPE by merge rank
 * (stored as -rank so that higher is better for both); ties go to the leftmost pair. */
typedef struct bigram {
	int left, right;
	float prio;
	size_t size; /* byte length of the merged text when queued: stale entries differ */
} bigram;

typedef struct heap {
	bigram *b;
	size_t n, cap;
} heap;

static bool before(const bigram *a, const bigram *b)
{
	return a->prio > b->prio || (a->prio == b->prio && a->left < b->left);
}

static int heap_push(heap *h, bigram g)
{
	if (h->n == h->cap) {
		size_t cap = h->cap ? 2 * h->cap : 64;
		bigram *p = realloc(h->b, cap * sizeof *p);
		if (!p)
			return -1;
		h->b = p;
		h->cap = cap;
	}
	size_t i = h->n++;
	while (i > 0) {
		size_t up = (i - 1) / 2;
		if (!before(&g, &h->b[up]))
			break;
		h->b[i] = h->b[up];
		i = up;
	}
	h->b[i] = g;
	return 0;
}

static bigram heap_pop(heap *h)
{
	bigram top = h->b[0], last = h->b[--h->n];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= h->n)
			break;
		if (c + 1 < h->n && before(&h->b[c + 1], &h->b[c]))
			c++;
		if (!before(&h->b[c], &last))
			break;
		h->b[i] = h->b[c];
		i = c;
	}
	if (h->n)
		h->b[i] = last;
	return top;
}

/* A piece of text being merged: a linked list over the characters of one word. */
typedef struct sym {
	int prev, next;
	const char *p;
	size_t n; /* 0 once merged into its left neighbour */
} sym;

typedef struct work {
	sym *s;
	size_t n, cap;
	heap q;
	char *buf; /* scratch for merge keys */
	size_t bufcap;
} work;

static void work_free(work *w)
{
	free(w->s);
	free(w->q.b);
	free(w->buf);
}

/* Splits p[0..n) into one symbol per UTF-8 character (by lead byte, as llama.cpp does). */
static int split_chars(work *w, const char *p, size_t n)
{
	w->n = 0;
	w->q.n = 0;
	if (n > w->cap) {
		sym *s = realloc(w->s, n * sizeof *s);
		if (!s)
			return -1;
		w->s = s;
		w->cap = n;
	}
	for (size_t off = 0; off < n;) {
		size_t l = utf8_len((unsigned char)p[off]);
		if (l > n - off)
			l = n - off;
		sym *s = &w->s[w->n];
		s->p = p + off;
		s->n = l;
		s->prev = (int)w->n - 1;
		off += l;
		s->next = off == n ? -1 : (int)w->n + 1;
		w->n++;
	}
	return 0;
}

/* Merges the queued pair g if it is still current; returns 1 if merged. */
static int apply(work *w, const bigram *g)
{
	sym *l = &w->s[g->left], *r = &w->s[g->right];
	if (l->n == 0 || r->n == 0 || l->n + r->n != g->size)
		return 0;
	l->n += r->n;
	r->n = 0;
	l->next = r->next;
	if (r->next >= 0)
		w->s[r->next].prev = g->left;
	return 1;
}

/* ---- SentencePiece ---- */

static int spm_try(const tok_vocab *v, work *w, int left, int right)
{
	if (left < 0 || right < 0)
		return 0;
	size_t n = w->s[left].n + w->s[right].n;
	int32_t id = lookup(v, w->s[left].p, n);
	if (id < 0)
		return 0;
	return heap_push(&w->q, (bigram){ left, right, v->score[id], n });
}

static int32_t byte_token(const tok_vocab *v, unsigned char c)
{
	static const char hex[] = "0123456789ABCDEF";
	char b[6] = { '<', '0', 'x', hex[c >> 4], hex[c & 15], '>' };
	int32_t id = lookup(v, b, 6);
	if (id < 0)
		id = lookup(v, (const char *)&c, 1);
	return id < 0 ? v->unk : id;
}

/* Tokenizes one piece of a fragment that no merge can cross. */
static int spm_piece(const tok_vocab *v, work *w, const char *p, size_t n, tok_ids *out)
{
	if (n == 0)
		return 0;
	if (split_chars(w, p, n))
		return -1;
	for (size_t i = 1; i < w->n; i++)
		if (spm_try(v, w, (int)i - 1, (int)i))
			return -1;
	while (w->q.n) {
		bigram g = heap_pop(&w->q);
		if (!apply(w, &g))
			continue;
		if (spm_try(v, w, w->s[g.left].prev, g.left) || spm_try(v, w, g.left, w->s[g.left].next))
			return -1;
	}
	for (int i = 0; i != -1; i = w->s[i].next) {
		const sym *s = &w->s[i];
		int32_t id = lookup(v, s->p, s->n);
		if (id >= 0) {
			if (tok_ids_push(out, id))
				return -1;
			continue;
		}
		/* A symbol is only ever merged into a vocabulary token, so one that is not a
		 * token is a single character the vocabulary lacks: spell it in bytes. */
		for (size_t j = 0; j < s->n; j++) {
			int32_t b = byte_token(v, (unsigned char)s->p[j]);
			if (b >= 0 && tok_ids_push(out, b))
				return -1;
		}
	}
	return 0;
}

/* Tokenizes one fragment that already has its spaces escaped as U+2581. The pieces
 * between cut bytes merge independently (no token spans a cut byte, and each piece
 * keeps its pairs' relative order), so merging them one by one gives the same ids as
 * merging the whole fragment, with a much smaller queue. */
static int spm_fragment(const tok_vocab *v, work *w, const char *p, size_t n, tok_ids *out)
{
	size_t start = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c < 128 && v->cut[c]) {
			if (spm_piece(v, w, p + start, i + 1 - start, out))
				return -1;
			start = i + 1;
		}
	}
	return spm_piece(v, w, p + start, n - start, out);
}

/* ---- GPT-2 byte-level BPE ---- */

/* GPT-2's byte -> code point table: printable Latin-1 bytes stand for themselves, the
 * others are moved to U+0100 upwards in byte order. */
static uint32_t byte_cp(unsigned char b)
{
	static uint32_t map[256];
	static int ready;
	if (!ready) {
		uint32_t next = 256;
		for (int c = 0; c < 256; c++) {
			bool keep = (c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE);
			map[c] = keep ? (uint32_t)c : next++;
		}
		ready = 1;
	}
	return map[b];
}

/* The byte a code point of byte-level text stands for, or -1. */
static int cp_byte(uint32_t cp)
{
	if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF))
		return (int)cp;
	if (cp < 256 || cp >= 256 + 68)
		return -1;
	for (int c = 0; c < 256; c++)
		if (byte_cp((unsigned char)c) == cp)
			return c;
	return -1;
}

/* Code points of a text with their classes, for the pre-tokenizer. */
typedef struct cps {
	uint32_t *cp;
	unsigned *cls;
	size_t n;
} cps;

static unsigned cls_at(const cps *c, size_t lo, size_t hi, size_t i)
{
	return i >= lo && i < hi ? c->cls[i] : 0;
}

static uint32_t cp_at(const cps *c, size_t lo, size_t hi, size_t i)
{
	return i >= lo && i < hi ? c->cp[i] : 0xFFFFFFFFu;
}

static uint32_t lower_ascii(uint32_t c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* Length of a contraction ('s 't 're 've 'm 'll 'd) at i, or 0. */
static size_t contraction(const cps *c, size_t lo, size_t hi, size_t i, bool fold)
{
	if (c->cp[i] != '\'' || i + 1 >= hi)
		return 0;
	uint32_t a = cp_at(c, lo, hi, i + 1), b = cp_at(c, lo, hi, i + 2);
	if (fold) {
		a = lower_ascii(a);
		b = lower_ascii(b);
	}
	if (a == 's' || a == 't' || a == 'm' || a == 'd')
		return 2;
	if (i + 2 < hi && ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')))
		return 3;
	return 0;
}

typedef struct cuts {
	size_t *end; /* end (code point index) of each pre-token */
	size_t n, cap;
} cuts;

static int cut(cuts *k, size_t end)
{
	if (k->n && k->end[k->n - 1] == end)
		return 0;
	if (k->n == k->cap) {
		size_t cap = k->cap ? 2 * k->cap : 256;
		size_t *p = realloc(k->end, cap * sizeof *p);
		if (!p)
			return -1;
		k->end = p;
		k->cap = cap;
	}
	k->end[k->n++] = end;
	return 0;
}

#define NWORD (UTF8_SPACE | UTF8_LETTER | UTF8_NUMBER)

/* Length of the whitespace run at i, and in *nl the end of its last \r or \n (0 if none). */
static size_t spaces(const cps *c, size_t lo, size_t hi, size_t i, size_t *nl)
{
	size_t k = 0;
	*nl = 0;
	while (cls_at(c, lo, hi, i + k) & UTF8_SPACE) {
		uint32_t x = c->cp[i + k];
		if (x == '\r' || x == '\n')
			*nl = i + k + 1;
		k++;
	}
	return k;
}

/* GPT-2's pattern 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * over code points [lo, hi). */
static int split_gpt2(const cps *c, size_t lo, size_t hi, cuts *k)
{
	for (size_t i = lo; i < hi;) {
		size_t m = contraction(c, lo, hi, i, false), nl;
		if (m) {
			i += m;
			if (cut(k, i))
				return -1;
			continue;
		}
		unsigned f = c->cls[i];
		unsigned f2 = c->cp[i] == ' ' ? cls_at(c, lo, hi, i + 1) : f;
		unsigned want = f2 & UTF8_LETTER ? UTF8_LETTER : f2 & UTF8_NUMBER ? UTF8_NUMBER : 0;
		if (want) {
			i += c->cp[i] == ' ';
			while (cls_at(c, lo, hi, i) & want)
				i++;
		} else if (!(f2 & NWORD) && f2) {
			i += c->cp[i] == ' ';
			for (unsigned g = cls_at(c, lo, hi, i); !(g & NWORD) && g; g = cls_at(c, lo, hi, i))
				i++;
		} else {
			size_t s = spaces(c, lo, hi, i, &nl);
			if (s > 1 && i + s < hi)
				i += s - 1; /* \s+(?!\S): leave the last space to the next word */
			else if (s)
				i += s;
			else
				i++;
		}
		if (cut(k, i))
			return -1;
	}
	return 0;
}

/* Llama 3's pattern (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ over [lo, hi); Qwen2's is the same
 * with \p{N} one digit at a time (maxdig 1). */
static int split_llama3(const cps *c, size_t lo, size_t hi, size_t maxdig, cuts *k)
{
	for (size_t i = lo; i < hi;) {
		size_t m = contraction(c, lo, hi, i, true), nl;
		uint32_t x = c->cp[i];
		unsigned f = c->cls[i];
		if (m) {
			i += m;
		} else if (!(x == '\r' || x == '\n' || (f & UTF8_NUMBER)) &&
			   ((f & UTF8_LETTER) || (cls_at(c, lo, hi, i + 1) & UTF8_LETTER))) {
			i++;
			while (cls_at(c, lo, hi, i) & UTF8_LETTER)
				i++;
		} else if (f & UTF8_NUMBER) {
			size_t start = i;
			while ((cls_at(c, lo, hi, i) & UTF8_NUMBER) && i - start < maxdig)
				i++;
		} else {
			unsigned f2 = x == ' ' ? cls_at(c, lo, hi, i + 1) : f;
			if (!(f2 & NWORD) && f) {
				i += x == ' ';
				for (unsigned g = cls_at(c, lo, hi, i); !(g & NWORD) && g; g = cls_at(c, lo, hi, i))
					i++;
				for (uint32_t y = cp_at(c, lo, hi, i); y == '\r' || y == '\n'; y = cp_at(c, lo, hi, i))
					i++;
			} else {
				size_t s = spaces(c, lo, hi, i, &nl);
				if (nl)
					i = nl;
				else if (s > 1 && i + s < hi)
					i += s - 1;
				else if (s)
					i += s;
				else
					i++;
			}
		}
		if (cut(k, i))
			return -1;
	}
	return 0;
}

/* SmolLM: every digit alone first, then GPT-2's pattern on the rest. */
static int split_smollm(const cps *c, cuts *k)
{
	size_t lo = 0;
	for (size_t i = 0; i <= c->n; i++) {
		if (i < c->n && !(c->cls[i] & UTF8_NUMBER))
			continue;
		if (i > lo && split_gpt2(c, lo, i, k))
			return -1;
		if (i < c->n && cut(k, i + 1))
			return -1;
		lo = i + 1;
	}
	return 0;
}

static int bpe_try(const tok_vocab *v, work *w, int left, int right)
{
	if (left < 0 || right < 0)
		return 0;
	const sym *l = &w->s[left], *r = &w->s[right];
	size_t n = l->n + 1 + r->n;
	if (n > w->bufcap) {
		char *b = realloc(w->buf, 2 * n);
		if (!b)
			return -1;
		w->buf = b;
		w->bufcap = 2 * n;
	}
	memcpy(w->buf, l->p, l->n);
	w->buf[l->n] = ' ';
	memcpy(w->buf + l->n + 1, r->p, r->n);
	long rank = map_find(&v->by_merge, v->merge, w->buf, n);
	if (rank < 0)
		return 0;
	return heap_push(&w->q, (bigram){ left, right, -(float)rank, l->n + r->n });
}

/* Merges one byte-level encoded pre-token and appends its ids. */
static int bpe_word(const tok_vocab *v, work *w, const char *p, size_t n, tok_ids *out)
{
	int32_t id;
	if (v->ignore_merges && (id = lookup(v, p, n)) >= 0)
		return tok_ids_push(out, id);
	if (split_chars(w, p, n))
		return -1;
	for (size_t i = 1; i < w->n; i++)
		if (bpe_try(v, w, (int)i - 1, (int)i))
			return -1;
	while (w->q.n) {
		bigram g = heap_pop(&w->q);
		if (!apply(w, &g))
			continue;
		if (bpe_try(v, w, w->s[g.left].prev, g.left) || bpe_try(v, w, g.left, w->s[g.left].next))
			return -1;
	}
	for (int i = 0; i != -1 && w->n; i = w->s[i].next) {
		const sym *s = &w->s[i];
		if ((id = lookup(v, s->p, s->n)) >= 0) {
			if (tok_ids_push(out, id))
				return -1;
			continue;
		}
		/* llama.cpp looks each byte of the encoded text up as a one-byte token and
		 * drops the bytes it does not find; do the same to keep the same ids. */
		for (size_t j = 0; j < s->n; j++)
			if ((id = lookup(v, s->p + j, 1)) >= 0 && tok_ids_push(out, id))
				return -1;
	}
	return 0;
}

static int bpe_fragment(const tok_vocab *v, work *w, const char *p, size_t n, tok_ids *out)
{
	cps c = { 0 };
	cuts k = { 0 };
	char *enc = NULL;
	int rc = -1;

	c.cp = malloc((n + 1) * sizeof *c.cp);
	c.cls = malloc((n + 1) * sizeof *c.cls);
	/* Each code point re-encodes to at most 4 bytes, each byte to at most 2. */
	enc = malloc(8 * n + 8);
	if (!c.cp || !c.cls || !enc)
		goto out;
	for (size_t off = 0; off < n;) {
		c.cp[c.n] = utf8_decode(p, n, &off);
		c.cls[c.n] = utf8_class(c.cp[c.n]);
		/* Qwen2's split runs as a regex over a collapsed text where any
		 * unassigned code point is an ordinary non-word character. */
		if (v->pre == PRE_QWEN2 && c.cls[c.n] == 0)
			c.cls[c.n] = UTF8_OTHER;
		c.n++;
	}
	if (v->pre == PRE_LLAMA3)
		rc = split_llama3(&c, 0, c.n, 3, &k);
	else if (v->pre == PRE_QWEN2)
		rc = split_llama3(&c, 0, c.n, 1, &k);
	else if (v->pre == PRE_SMOLLM)
		rc = split_smollm(&c, &k);
	else
		rc = split_gpt2(&c, 0, c.n, &k);
	if (rc)
		goto out;
	rc = -1;
	size_t start = 0;
	for (size_t i = 0; i < k.n; i++) {
		size_t len = 0;
		for (size_t j = start; j < k.end[i]; j++) {
			char u[4];
			size_t m = utf8_encode(c.cp[j], u);
			for (size_t b = 0; b < m; b++)
				len += utf8_encode(byte_cp((unsigned char)u[b]), enc + len);
		}
		start = k.end[i];
		if (bpe_word(v, w, enc, len, out))
			goto out;
	}
	rc = 0;
out:
	free(c.cp);
	free(c.cls);
	free(k.end);
	free(enc);
	return rc;
}

/* ---- special tokens and the top level ---- */

/* A stretch of input: raw text [off, off+len), or a token already decided (id >= 0). */
typedef struct frag {
	size_t off, len;
	int32_t id;
} frag;

typedef struct frags {
	frag *f;
	size_t n, cap;
} frags;

static int frag_add(frags *l, size_t off, size_t len, int32_t id)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		frag *p = realloc(l->f, cap * sizeof *p);
		if (!p)
			return -1;
		l->f = p;
		l->cap = cap;
	}
	l->f[l->n++] = (frag){ off, len, id };
	return 0;
}

/* Cuts every occurrence of special tokens out of the text fragments, longest token
 * first, as llama.cpp's partition does. */
static int partition(const tok_vocab *v, const char *text, size_t len, bool parse_special, frags *out)
{
	frags cur = { 0 }, next = { 0 };
	if (frag_add(&cur, 0, len, -1))
		return -1;
	for (int32_t s = 0; s < v->n_special; s++) {
		int32_t id = v->special[s];
		const tok_str *t = &v->text[id];
		if (!parse_special && (v->attr[id] & (ATTR_CONTROL | ATTR_UNKNOWN)))
			continue;
		next.n = 0;
		for (size_t i = 0; i < cur.n; i++) {
			frag f = cur.f[i];
			if (f.id >= 0) {
				if (frag_add(&next, f.off, f.len, f.id))
					goto fail;
				continue;
			}
			size_t pos = f.off, end = f.off + f.len;
			while (pos < end) {
				const char *hit = end - pos >= t->n ? memmem(text + pos, end - pos, t->p, t->n) : NULL;
				size_t at = hit ? (size_t)(hit - text) : end;
				if (at > pos && frag_add(&next, pos, at - pos, -1))
					goto fail;
				if (!hit)
					break;
				if (frag_add(&next, at, t->n, id))
					goto fail;
				pos = at + t->n;
			}
		}
		frags tmp = cur;
		cur = next;
		next = tmp;
	}
	free(next.f);
	*out = cur;
	return 0;
fail:
	free(cur.f);
	free(next.f);
	return -1;
}

int tok_encode(const tok_vocab *v, const char *text, size_t len, bool add_special,
	       bool parse_special, tok_ids *out, err *e)
{
	frags fr = { 0 };
	work w = { 0 };
	char *esc = NULL;
	int rc = -1;

	if (len && partition(v, text, len, parse_special, &fr))
		goto oom;
	if (add_special && v->add_bos && v->bos >= 0 && tok_ids_push(out, v->bos))
		goto oom;
	bool prev_special = true;
	for (size_t i = 0; i < fr.n; i++) {
		const frag *f = &fr.f[i];
		if (f->id >= 0) {
			if (tok_ids_push(out, f->id))
				goto oom;
			prev_special = true;
			continue;
		}
		if (v->kind == KIND_BPE) {
			if (bpe_fragment(v, &w, text + f->off, f->len, out))
				goto oom;
			continue;
		}
		/* SPM: optional leading space, then every space becomes U+2581. */
		free(esc);
		esc = malloc(3 * f->len + 3);
		if (!esc)
			goto oom;
		size_t n = 0;
		if (v->add_space_prefix && prev_special) {
			memcpy(esc, "\xE2\x96\x81", 3);
			n = 3;
		}
		for (size_t j = 0; j < f->len; j++) {
			char ch = text[f->off + j];
			if (ch == ' ') {
				memcpy(esc + n, "\xE2\x96\x81", 3);
				n += 3;
			} else {
				esc[n++] = ch;
			}
		}
		if (spm_fragment(v, &w, esc, n, out))
			goto oom;
		prev_special = false;
	}
	if (add_special && v->add_eos && v->eos >= 0 && tok_ids_push(out, v->eos))
		goto oom;
	rc = 0;
	goto out;
oom:
	err_set(e, "tokenizer: out of memory");
out:
	free(fr.f);
	free(esc);
	work_free(&w);
	return rc;
}

/* ---- loading ---- */

static int32_t meta_id(const gguf_meta *m, const char *key, int32_t def, int32_t n)
{
	uint64_t u;
	if (gguf_meta_get_u64(m, key, &u) == 0)
		return u < (uint64_t)n ? (int32_t)u : def;
	return def;
}

static int cmp_special(const void *a, const void *b, void *ctx)
{
	const tok_vocab *v = ctx;
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	if (v->text[x].n != v->text[y].n)
		return v->text[x].n > v->text[y].n ? -1 : 1;
	return (x > y) - (x < y);
}

/* Token texts that llama.cpp treats as control tokens that end generation. */
static const char *const eog_names[] = {
	"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
	"<EOT>", "<|end_of_text|>", "<end_of_utterance>", NULL
};

static int load_pieces(tok_vocab *v)
{
	size_t total = 0;
	for (int32_t i = 0; i < v->n; i++)
		total += v->text[i].n + 1;
	v->pieces = malloc(total + 1);
	v->piece = calloc((uint32_t)v->n, sizeof *v->piece);
	if (!v->pieces || !v->piece)
		return -1;
	char *o = v->pieces;
	for (int32_t i = 0; i < v->n; i++) {
		const tok_str *t = &v->text[i];
		uint8_t a = v->attr[i];
		char *start = o;
		if (a & (ATTR_CONTROL | ATTR_UNKNOWN | ATTR_USER)) {
			memcpy(o, t->p, t->n);
			o += t->n;
		} else if (a & ATTR_NORMAL) {
			if (v->kind == KIND_SPM) {
				for (uint32_t j = 0; j < t->n; j++) {
					if (j + 2 < t->n && memcmp(t->p + j, "\xE2\x96\x81", 3) == 0) {
						*o++ = ' ';
						j += 2;
					} else {
						*o++ = t->p[j];
					}
				}
			} else {
				for (size_t off = 0; off < t->n;) {
					size_t at = off;
					int b = cp_byte(utf8_decode(t->p, t->n, &off));
					if (b >= 0) {
						*o++ = (char)b;
					} else {
						memcpy(o, t->p + at, off - at);
						o += off - at;
					}
				}
			}
		} else if ((a & ATTR_BYTE) && t->n == 6 && memcmp(t->p, "<0x", 3) == 0) {
			*o++ = (char)strtol((char[3]){ t->p[3], t->p[4], 0 }, NULL, 16);
		}
		v->piece[i] = (tok_str){ start, (uint32_t)(o - start) };
	}
	return 0;
}

static int load_merges(tok_vocab *v, const gguf_meta *m, err *e)
{
	const gguf_value *mg = gguf_meta_get_arr(m, "tokenizer.ggml.merges", GGUF_STRING);
	if (!mg)
		return err_set(e, "tokenizer: gpt2 model without tokenizer.ggml.merges (a string array)");
	const gguf_str *s = mg->arr;
	size_t total = 0;
	for (uint64_t i = 0; i < mg->n; i++)
		total += s[i].len + 1;
	v->n_merge = (uint32_t)mg->n;
	v->marena = malloc(total + 1);
	v->merge = calloc(mg->n + 1, sizeof *v->merge);
	if (!v->marena || !v->merge || map_init(&v->by_merge, mg->n))
		return err_set(e, "tokenizer: out of memory");
	char *o = v->marena;
	for (uint64_t i = 0; i < mg->n; i++) {
		/* "left right", split at the first space after the first byte. */
		const char *sp = s[i].len > 1 ? memchr(s[i].ptr + 1, ' ', s[i].len - 1) : NULL;
		if (!sp) {
			v->merge[i] = (tok_str){ o, 0 }; /* llama.cpp keeps it as ("", ""): never matches */
			continue;
		}
		memcpy(o, s[i].ptr, s[i].len);
		v->merge[i] = (tok_str){ o, (uint32_t)s[i].len };
		o += s[i].len;
		map_add(&v->by_merge, v->merge, (uint32_t)i); /* the first rank of a duplicate wins */
	}
	return 0;
}

static int set_pre(tok_vocab *v, const char *pre, err *e)
{
	static const char *const llama3[] = { "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1",
					      "pixtral", "midm-2.0", "lfm2", NULL };
	static const char *const qwen2[] = { "qwen2", "deepseek-r1-qwen", "megrez", NULL };
	static const char *const gpt2[] = { "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat",
					    "jina-v2-es", "jina-v2-de", "mpt", "olmo", NULL };
	if (!pre)
		pre = "default";
	for (int i = 0; llama3[i]; i++)
		if (!strcmp(pre, llama3[i])) {
			v->pre = PRE_LLAMA3;
			v->ignore_merges = true;
			v->add_bos = true;
			return 0;
		}
	for (int i = 0; qwen2[i]; i++)
		if (!strcmp(pre, qwen2[i])) {
			v->pre = PRE_QWEN2;
			return 0;
		}
	for (int i = 0; gpt2[i]; i++)
		if (!strcmp(pre, gpt2[i])) {
			v->pre = PRE_GPT2;
			return 0;
		}
	if (!strcmp(pre, "smollm")) {
		v->pre = PRE_SMOLLM;
		return 0;
	}
	return err_set(e, "tokenizer: unsupported pre-tokenizer '%s' (supported: llama-bpe and its "
		       "aliases, qwen2, gpt-2, smollm)", pre);
}

static int load(tok_vocab *v, const gguf_meta *m, err *e)
{
	const char *model = gguf_meta_get_str(m, "tokenizer.ggml.model");
	if (!model)
		return err_set(e, "tokenizer: no tokenizer.ggml.model key");
	const gguf_value *toks = gguf_meta_get_arr(m, "tokenizer.ggml.tokens", GGUF_STRING);
	if (!toks || toks->n == 0 || toks->n > INT32_MAX / 2)
		return err_set(e, "tokenizer: tokenizer.ggml.tokens missing or not a string array");
	v->n = (int32_t)toks->n;
	v->bos = v->eos = v->unk = v->eot = -1;
	if (!strcmp(model, "llama")) {
		v->kind = KIND_SPM;
		v->bos = 1;
		v->eos = 2;
		v->unk = 0;
		v->add_bos = true;
		v->add_space_prefix = true;
	} else if (!strcmp(model, "gpt2")) {
		v->kind = KIND_BPE;
		v->bos = v->eos = 11 < v->n ? 11 : -1;
		if (set_pre(v, gguf_meta_get_str(m, "tokenizer.ggml.pre"), e))
			return -1;
		if (load_merges(v, m, e))
			return -1;
	} else {
		return err_set(e, "tokenizer: unsupported tokenizer.ggml.model '%s' (supported: llama, gpt2)", model);
	}

	const gguf_value *sc = gguf_meta_get_arr(m, "tokenizer.ggml.scores", GGUF_F32);
	const gguf_value *tt = gguf_meta_get_arr(m, "tokenizer.ggml.token_type", GGUF_I32);
	if (sc && sc->n < toks->n)
		return err_set(e, "tokenizer: %llu scores for %llu tokens", (unsigned long long)sc->n,
			       (unsigned long long)toks->n);
	if (tt && tt->n < toks->n)
		return err_set(e, "tokenizer: %llu token types for %llu tokens", (unsigned long long)tt->n,
			       (unsigned long long)toks->n);

	const gguf_str *s = toks->arr;
	size_t total = 0;
	for (int32_t i = 0; i < v->n; i++)
		total += (s[i].len ? s[i].len : 24) + 1;
	v->arena = malloc(total);
	v->text = calloc(toks->n, sizeof *v->text);
	v->score = calloc(toks->n, sizeof *v->score);
	v->attr = calloc(toks->n, 1);
	v->special = calloc(toks->n, sizeof *v->special);
	if (!v->arena || !v->text || !v->score || !v->attr || !v->special || map_init(&v->by_text, toks->n))
		return err_set(e, "tokenizer: out of memory");
	char *o = v->arena;
	for (int32_t i = 0; i < v->n; i++) {
		size_t n = s[i].len;
		if (n)
			memcpy(o, s[i].ptr, n);
		else
			n = (size_t)sprintf(o, "[EMPTY_%d]", (int)i); /* llama.cpp's name for it */
		o[n] = 0;
		v->text[i] = (tok_str){ o, (uint32_t)n };
		o += n + 1;
		long dup = map_add(&v->by_text, v->text, (uint32_t)i);
		if (dup >= 0)
			return err_set(e, "tokenizer: duplicate token '%s' has ids %ld and %d", v->text[i].p, dup, (int)i);
		v->score[i] = sc ? ((const float *)sc->arr)[i] : 0.0f;
		int type = tt ? ((const int32_t *)tt->arr)[i] : 1;
		static const uint8_t attr_of[7] = { 0, ATTR_NORMAL, ATTR_UNKNOWN, ATTR_CONTROL, ATTR_USER,
						    ATTR_UNUSED, ATTR_BYTE };
		v->attr[i] = type >= 0 && type < 7 ? attr_of[type] : 0;
	}

	v->bos = meta_id(m, "tokenizer.ggml.bos_token_id", v->bos, v->n);
	v->eos = meta_id(m, "tokenizer.ggml.eos_token_id", v->eos, v->n);
	v->unk = meta_id(m, "tokenizer.ggml.unknown_token_id", v->unk, v->n);
	v->eot = meta_id(m, "tokenizer.ggml.eot_token_id", -1, v->n);
	bool b;
	if (gguf_meta_get_bool(m, "tokenizer.ggml.add_bos_token", &b) == 0)
		v->add_bos = b;
	if (gguf_meta_get_bool(m, "tokenizer.ggml.add_eos_token", &b) == 0)
		v->add_eos = b;
	if (v->kind == KIND_SPM && gguf_meta_get_bool(m, "tokenizer.ggml.add_space_prefix", &b) == 0)
		v->add_space_prefix = b;
	if (v->add_bos && v->bos < 0)
		return err_set(e, "tokenizer: add_bos_token is true but there is no BOS token");
	if (v->add_eos && v->eos < 0)
		return err_set(e, "tokenizer: add_eos_token is true but there is no EOS token");

	for (int i = 0; eog_names[i]; i++) {
		int32_t id = lookup(v, eog_names[i], strlen(eog_names[i]));
		if (id >= 0) {
			v->attr[id] |= ATTR_CONTROL;
			if (v->eot < 0 && i != 5)
				v->eot = id;
		}
	}
	for (int32_t i = 0; i < v->n; i++)
		if (v->attr[i] & (ATTR_CONTROL | ATTR_USER | ATTR_UNKNOWN))
			v->special[v->n_special++] = i;
	if (v->kind == KIND_SPM) {
		for (int c = 1; c < 128; c++)
			v->cut[c] = true;
		for (int32_t i = 0; i < v->n; i++)
			if (v->text[i].n > 1)
				for (uint32_t j = 0; j < v->text[i].n; j++)
					if ((unsigned char)v->text[i].p[j] < 128)
						v->cut[(unsigned char)v->text[i].p[j]] = false;
	}
	qsort_r(v->special, (size_t)v->n_special, sizeof *v->special, cmp_special, v);
	if (load_pieces(v))
		return err_set(e, "tokenizer: out of memory");
	return 0;
}

tok_vocab *tok_load(const gguf_meta *m, err *e)
{
	tok_vocab *v = calloc(1, sizeof *v);
	if (!v) {
		err_set(e, "tokenizer: out of memory");
		return NULL;
	}
	if (load(v, m, e)) {
		tok_free(v);
		return NULL;
	}
	return v;
}

void tok_free(tok_vocab *v)
{
	if (!v)
		return;
	free(v->text);
	free(v->score);
	free(v->attr);
	free(v->piece);
	free(v->arena);
	free(v->pieces);
	free(v->by_text.slot);
	free(v->merge);
	free(v->marena);
	free(v->by_merge.slot);
	free(v->special);
	free(v);
}

const char *tok_piece(const tok_vocab *v, int32_t id, bool special, size_t *len)
{
	if (id < 0 || id >= v->n)
		return NULL;
	if (!special && (v->attr[id] & (ATTR_CONTROL | ATTR_UNKNOWN))) {
		*len = 0;
		return v->piece[id].p;
	}
	*len = v->piece[id].n;
	return v->piece[id].p;
}

const char *tok_text(const tok_vocab *v, int32_t id)
{
	return id >= 0 && id < v->n ? v->text[id].p : NULL;
}

int32_t tok_n_vocab(const tok_vocab *v)
{
	return v->n;
}

int32_t tok_bos(const tok_vocab *v)
{
	return v->bos;
}

int32_t tok_eos(const tok_vocab *v)
{
	return v->eos;
}

bool tok_adds_bos(const tok_vocab *v)
{
	return v->add_bos && v->bos >= 0;
}

bool tok_is_eog(const tok_vocab *v, int32_t id)
{
	if (id < 0 || id >= v->n)
		return false;
	if (id == v->eos || id == v->eot)
		return true;
	const tok_str *t = &v->text[id];
	for (int i = 0; eog_names[i]; i++)
		if (strlen(eog_names[i]) == t->n && memcmp(eog_names[i], t->p, t->n) == 0)
			return true;
	return false;
}
