/* vocab.c - tokenizer metadata from tokenizer.model / tokenizer.json / tokenizer_config.json / config.json */
#include "vocab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "spm.h"

/* GGUF token types (the same numbers as SentencePiece's). */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* The token list being built: n entries, each owned. */
typedef struct toks {
	gguf_str *s;
	float *score;
	int32_t *type;
	uint32_t n;
} toks;

/* The special-token facts gathered the way gguf-py's SpecialVocab does, kept in insertion order
 * because that is the order the keys are written in. */
#define SP_MAX 9
typedef struct special {
	const char *types[SP_MAX]; /* bos eos unk sep pad cls mask, then eot/eom when appended */
	int n_types;
	int id_type[SP_MAX];       /* type index of each set id, in the order they were set */
	int64_t id[SP_MAX];
	int n_ids;
	int add_type[SP_MAX];      /* type index of each add_<type>_token flag, in order */
	bool add[SP_MAX];
	int n_add;
	json_t *chat_template;     /* a string, owned reference, or NULL */
	bool lowercase;            /* tokenizer.json normalizer lowercases */
	gguf_str *merges;          /* owned */
	size_t n_merges;
	int64_t n_vocab;           /* ids at or above are skipped (0: no limit) */
} special;

static char *path_join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);

	if (p)
		snprintf(p, n, "%s/%s", dir, name);
	return p;
}

static bool is_file(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Loads dir/name as JSON: returns 0 with *out (NULL when the file is absent), or -1. */
static int load_json(const char *dir, const char *name, json_t **out, err *e)
{
	char *p = path_join(dir, name);
	json_error_t je;

	*out = NULL;
	if (!p)
		return err_set(e, "out of memory");
	if (is_file(p)) {
		*out = json_load_file(p, JSON_DECODE_ANY, &je);
		if (!*out) {
			err_set(e, "%s: line %d column %d: %s", p, je.line, je.column, je.text);
			free(p);
			return -1;
		}
	}
	free(p);
	return 0;
}

static int str_set(gguf_str *s, const char *p, size_t n)
{
	s->ptr = malloc(n + 1);
	if (!s->ptr)
		return -1;
	memcpy(s->ptr, p, n);
	s->ptr[n] = 0;
	s->len = n;
	return 0;
}

static void toks_free(toks *t)
{
	for (uint32_t i = 0; t->s && i < t->n; i++)
		free(t->s[i].ptr);
	free(t->s);
	free(t->score);
	free(t->type);
	memset(t, 0, sizeof *t);
}

/* n "[PAD<i>]" entries of type UNUSED, score pad_score: the reference's filler. */
static int toks_init(toks *t, uint32_t n, float pad_score)
{
	memset(t, 0, sizeof *t);
	t->s = calloc(n, sizeof *t->s);
	t->score = malloc(n * sizeof *t->score);
	t->type = malloc(n * sizeof *t->type);
	if (!t->s || !t->score || !t->type)
		return -1;
	t->n = n;
	for (uint32_t i = 0; i < n; i++) {
		char pad[32];

		snprintf(pad, sizeof pad, "[PAD%u]", i);
		if (str_set(&t->s[i], pad, strlen(pad)))
			return -1;
		t->score[i] = pad_score;
		t->type[i] = TT_UNUSED;
	}
	return 0;
}

static int toks_put(toks *t, uint32_t i, const char *s, size_t n, float score, int type)
{
	free(t->s[i].ptr);
	t->s[i].ptr = NULL;
	if (str_set(&t->s[i], s, n))
		return -1;
	t->score[i] = score;
	t->type[i] = type;
	return 0;
}

/* The reference treats these added tokens as control tokens even when not marked special. */
static bool looks_special(const char *t)
{
	size_t n = strlen(t);

	if (!strcmp(t, "<pad>") || !strcmp(t, "<mask>") || !strcmp(t, "<2mass>") || !strcmp(t, "[@BOS@]"))
		return true;
	if (n >= 4 && !strncmp(t, "<|", 2) && !strcmp(t + n - 2, "|>"))
		return true;
	if (n >= 8 && !strncmp(t, "<\xef\xbd\x9c", 4) && !strcmp(t + n - 4, "\xef\xbd\x9c>"))
		return true; /* <｜...｜> */
	return n >= 8 && !strncmp(t, "<unused", 7) && t[n - 1] == '>';
}

/* A user-defined token with U+2581 (SentencePiece's space) written as a plain space. */
static char *spaces_restored(const char *t)
{
	size_t n = strlen(t), o = 0;
	char *r = malloc(n + 1);

	if (!r)
		return NULL;
	for (size_t i = 0; i < n;) {
		if (!strncmp(t + i, "\xe2\x96\x81", 3)) {
			r[o++] = ' ';
			i += 3;
		} else {
			r[o++] = t[i++];
		}
	}
	r[o] = 0;
	return r;
}

/* Applies one added token (from added_tokens_decoder or tokenizer.json) the reference's way. */
static int put_added(toks *t, uint32_t id, const char *content, bool special_flag, float score)
{
	int rc;

	if (special_flag || looks_special(content))
		return toks_put(t, id, content, strlen(content), score, TT_CONTROL);
	char *c = spaces_restored(content);

	if (!c)
		return -1;
	rc = toks_put(t, id, c, strlen(c), score, TT_USER);
	free(c);
	return rc;
}

/* ---- SentencePiece vocabulary (tokenizer.model) ---- */

static int spm_tokens(const char *dir, const char *model_path, uint32_t vocab_size, json_t *tcfg,
		      toks *t, err *e)
{
	spm_model sp;
	json_t *added = NULL;

	if (spm_load(&sp, model_path, e))
		return -1;
	if (sp.n > vocab_size) {
		err_set(e, "%s: %zu pieces but config.json vocab_size is %u: the extra pieces would have no "
			"embedding row (refusing rather than dropping them)", model_path, sp.n, vocab_size);
		goto fail;
	}
	if (toks_init(t, vocab_size, -10000.0f))
		goto oom;
	for (size_t i = 0; i < sp.n; i++) {
		const spm_piece *p = &sp.pieces[i];
		int type = TT_NORMAL; /* user-defined pieces stay NORMAL, as the reference does */

		if (p->type == SPM_UNKNOWN || p->type == SPM_CONTROL || p->type == SPM_UNUSED ||
		    p->type == SPM_BYTE)
			type = p->type;
		if (toks_put(t, (uint32_t)i, p->piece, p->len, p->score, type))
			goto oom;
	}
	if (load_json(dir, "added_tokens.json", &added, e))
		goto fail;
	if (added) {
		const char *k;
		json_t *v;

		json_object_foreach(added, k, v) {
			json_int_t id = json_integer_value(v);

			if (!json_is_integer(v) || id < 0 || id >= (json_int_t)vocab_size)
				continue;
			if (toks_put(t, (uint32_t)id, k, strlen(k), -1000.0f, TT_USER))
				goto oom;
		}
	}
	json_t *dec = tcfg ? json_object_get(tcfg, "added_tokens_decoder") : NULL;

	if (json_is_object(dec)) {
		const char *k;
		json_t *v;

		json_object_foreach(dec, k, v) {
			char *end;
			long id = strtol(k, &end, 10);
			const char *content = json_string_value(json_object_get(v, "content"));

			if (*end || id < 0 || id >= (long)vocab_size || !content)
				continue;
			if (put_added(t, (uint32_t)id, content, json_is_true(json_object_get(v, "special")),
				      -1000.0f))
				goto oom;
		}
	}
	json_decref(added);
	spm_free(&sp);
	return 0;
oom:
	err_set(e, "%s: out of memory", model_path);
fail:
	json_decref(added);
	spm_free(&sp);
	toks_free(t);
	return -1;
}

/* ---- GPT-2 style BPE vocabulary (tokenizer.json) ---- */

/* The pre-tokenizer of tokenizer.json as a signature string such as "digits:1|bytelevel:regex". */
static int pre_signature(json_t *pt, char *buf, size_t cap)
{
	json_t *list = json_object_get(pt, "pretokenizers");
	size_t n = json_is_array(list) ? json_array_size(list) : 1, o = 0;

	buf[0] = 0;
	for (size_t i = 0; i < n; i++) {
		json_t *p = json_is_array(list) ? json_array_get(list, i) : pt;
		const char *type = json_string_value(json_object_get(p, "type"));
		int w;

		if (!type)
			type = "?";
		if (!strcmp(type, "Split"))
			w = snprintf(buf + o, cap - o, "%ssplit:%s", i ? "|" : "",
				     json_string_value(json_object_get(json_object_get(p, "pattern"), "Regex")) ?
				     json_string_value(json_object_get(json_object_get(p, "pattern"), "Regex")) : "?");
		else if (!strcmp(type, "ByteLevel"))
			w = snprintf(buf + o, cap - o, "%sbytelevel:%s", i ? "|" : "",
				     json_is_false(json_object_get(p, "use_regex")) ? "noregex" : "regex");
		else if (!strcmp(type, "Digits"))
			w = snprintf(buf + o, cap - o, "%sdigits:%d", i ? "|" : "",
				     json_is_true(json_object_get(p, "individual_digits")));
		else
			w = snprintf(buf + o, cap - o, "%s%s", i ? "|" : "", type);
		if (w < 0 || (size_t)w >= cap - o)
			return -1;
		o += (size_t)w;
	}
	return 0;
}

/* The reference names a BPE pre-tokenizer by hashing the token ids its Python tokenizer gives
 * for a fixed text. qbake does not run a Python tokenizer; it recognises the pre-tokenizer
 * from its definition instead. Each entry is the definition shipped by the model family the
 * reference's hash stands for; anything else is refused rather than guessed. */
static const struct {
	const char *sig, *pre;
} pre_table[] = {
	{ "split:(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+|bytelevel:noregex",
	  "llama-bpe" },
	{ "split:(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+|bytelevel:noregex",
	  "qwen2" },
	{ "digits:1|bytelevel:regex", "smollm" },
	{ "bytelevel:regex", "gpt-2" },
};

static const char *bpe_pre(const char *path, json_t *tj, err *e)
{
	char sig[4096];
	json_t *pt = json_object_get(tj, "pre_tokenizer");

	if (!json_is_object(pt)) {
		err_set(e, "%s: no pre_tokenizer: not a GPT-2 style BPE tokenizer qbake knows", path);
		return NULL;
	}
	if (pre_signature(pt, sig, sizeof sig)) {
		err_set(e, "%s: pre_tokenizer too large", path);
		return NULL;
	}
	for (size_t i = 0; i < sizeof pre_table / sizeof pre_table[0]; i++)
		if (!strcmp(sig, pre_table[i].sig))
			return pre_table[i].pre;
	err_set(e, "%s: BPE pre-tokenizer not recognised (%s); supported: llama-bpe, qwen2, smollm, gpt-2",
		path, sig);
	return NULL;
}

static int bpe_tokens(const char *path, json_t *tj, uint32_t vocab_size, toks *t, err *e)
{
	json_t *model = json_object_get(tj, "model"), *vocab = json_object_get(model, "vocab");
	json_t *added = json_object_get(tj, "added_tokens");
	const char *k = NULL;
	json_t *v;
	json_int_t id = 0;
	size_t i;

	if (!json_is_object(vocab))
		return err_set(e, "%s: model.vocab is missing or not an object", path);
	/* The padding names are replaced below; unused ids keep them with type UNUSED. */
	if (toks_init(t, vocab_size, 0.0f))
		goto oom;
	json_object_foreach(vocab, k, v) {
		id = json_integer_value(v);
		if (!json_is_integer(v) || id < 0)
			goto badid;
		if (id >= (json_int_t)vocab_size)
			goto big;
		if (toks_put(t, (uint32_t)id, k, strlen(k), 0.0f, TT_NORMAL))
			goto oom;
	}
	json_array_foreach(added, i, v) {
		const char *content = json_string_value(json_object_get(v, "content"));
		json_t *jid = json_object_get(v, "id");

		id = json_integer_value(jid);
		k = content;
		if (!content || !json_is_integer(jid) || id < 0)
			goto badid;
		if (id >= (json_int_t)vocab_size)
			goto big;
		if (put_added(t, (uint32_t)id, content, json_is_true(json_object_get(v, "special")), 0.0f))
			goto oom;
	}
	return 0;
badid:
	toks_free(t);
	return err_set(e, "%s: token %s has a bad id", path, k ? k : "?");
big:
	toks_free(t);
	return err_set(e, "%s: token id %lld (%s) is not below config.json vocab_size %u", path, (long long)id,
		       k, vocab_size);
oom:
	toks_free(t);
	return err_set(e, "%s: out of memory", path);
}

/* ---- special tokens (gguf-py SpecialVocab) ---- */

static int sp_type(special *s, const char *typ)
{
	for (int i = 0; i < s->n_types; i++)
		if (!strcmp(s->types[i], typ))
			return i;
	return -1;
}

static void sp_set_id(special *s, int type, json_t *v)
{
	json_int_t id;

	if (type < 0 || !json_is_integer(v))
		return;
	id = json_integer_value(v);
	if (id < 0 || (s->n_vocab && id >= s->n_vocab))
		return;
	for (int i = 0; i < s->n_ids; i++)
		if (s->id_type[i] == type)
			return; /* the first source wins */
	s->id_type[s->n_ids] = type;
	s->id[s->n_ids++] = id;
}

static void sp_set_add(special *s, int type, bool on)
{
	for (int i = 0; i < s->n_add; i++)
		if (s->add_type[i] == type) {
			s->add[i] = on; /* a dict assignment: the value changes, the position stays */
			return;
		}
	s->add_type[s->n_add] = type;
	s->add[s->n_add++] = on;
}

static bool truthy(json_t *v)
{
	if (!v || json_is_null(v) || json_is_false(v))
		return false;
	if (json_is_string(v))
		return json_string_length(v) > 0;
	if (json_is_object(v))
		return json_object_size(v) > 0;
	if (json_is_array(v))
		return json_array_size(v) > 0;
	if (json_is_integer(v))
		return json_integer_value(v) != 0;
	return true;
}

static json_t *special_token_id(json_t *tmpl_entry)
{
	return json_object_get(json_object_get(tmpl_entry, "SpecialToken"), "id");
}

static bool jeq(json_t *a, json_t *b)
{
	return a && b && json_equal(a, b);
}

static void sp_lowercase(special *s, json_t *norm)
{
	const char *type = json_string_value(json_object_get(norm, "type"));
	size_t i;
	json_t *n;

	if (!type)
		return;
	if (!strcmp(type, "Lowercase"))
		s->lowercase = true;
	else if (!strcmp(type, "BertNormalizer") && !json_is_false(json_object_get(norm, "lowercase")))
		s->lowercase = true;
	else if (!strcmp(type, "Sequence"))
		json_array_foreach(json_object_get(norm, "normalizers"), i, n)
			sp_lowercase(s, n);
}

/* The TemplateProcessing post-processor says whether BOS/EOS/SEP are added; tc is the caller's
 * copy of tokenizer_config.json, updated as the reference updates it. */
static void sp_template(special *s, json_t *proc, json_t *tc, json_t **bos, json_t **eos,
			json_t *cls, json_t *sep)
{
	json_t *single = json_object_get(proc, "single"), *pair = json_object_get(proc, "pair");
	size_t ns = json_array_size(single), np = json_array_size(pair);
	json_t *first = NULL, *last = NULL;
	size_t start = 0, stop;

	if (ns > 1) {
		first = special_token_id(json_array_get(single, 0));
		if (truthy(first)) {
			if (!tc)
				*bos = first;
			sp_set_add(s, sp_type(s, "bos"), jeq(first, *bos) || jeq(first, cls));
		} else {
			first = NULL;
		}
		last = special_token_id(json_array_get(single, ns - 1));
		if (truthy(last)) {
			if (!tc) {
				*eos = last;
			} else if (!jeq(last, *eos)) {
				const char *extra = sp_type(s, "eot") < 0 ? "eot" : sp_type(s, "eom") < 0 ? "eom" : NULL;

				if (extra) {
					char key[16];

					s->types[s->n_types++] = extra;
					snprintf(key, sizeof key, "%s_token", extra);
					json_object_set(tc, key, *eos ? *eos : json_null());
				}
				json_object_set(tc, "eos_token", last);
				*eos = last;
			}
			sp_set_add(s, sp_type(s, "eos"), jeq(last, *eos));
		} else {
			last = NULL;
		}
	}
	if (!np)
		return;
	if (first && jeq(special_token_id(json_array_get(pair, 0)), first))
		start = 1;
	stop = np;
	if (last && jeq(special_token_id(json_array_get(pair, np - 1)), last))
		stop = np - 1;
	if (stop <= start)
		return;
	json_t *a = json_object_get(json_object_get(json_array_get(pair, start), "Sequence"), "id");
	json_t *b = json_object_get(json_object_get(json_array_get(pair, stop - 1), "Sequence"), "id");

	if (!json_is_string(a) || strcmp(json_string_value(a), "A") || !json_is_string(b) ||
	    strcmp(json_string_value(b), "B") || stop - start <= 2)
		return;
	/* "A [sep] [eos] B": the middle one or two entries decide add_sep. */
	bool add_sep = false;
	json_t *mid = special_token_id(json_array_get(pair, start + 1));

	if (truthy(mid) && (jeq(mid, sep) || jeq(mid, *eos)) && !last)
		add_sep = true;
	if (stop - start - 2 == 2) {
		mid = special_token_id(json_array_get(pair, start + 2));
		if (truthy(mid) && (jeq(mid, sep) || jeq(mid, *eos)))
			add_sep = true;
	}
	sp_set_add(s, sp_type(s, "sep"), add_sep);
	if (add_sep && !truthy(sep) && tc)
		json_object_set(tc, "sep_token", *eos ? *eos : json_null());
}

static int sp_merges(special *s, const char *path, json_t *merges, err *e)
{
	size_t n = json_array_size(merges), i;
	json_t *m;

	if (!n)
		return 0;
	s->merges = calloc(n, sizeof *s->merges);
	if (!s->merges)
		return err_set(e, "%s: out of memory", path);
	json_array_foreach(merges, i, m) {
		if (json_is_string(m)) {
			if (str_set(&s->merges[i], json_string_value(m), json_string_length(m)))
				return err_set(e, "%s: out of memory", path);
		} else if (json_is_array(m) && json_array_size(m) == 2 &&
			   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
			/* The pair form: spaces inside a part are written as U+0120 ("Ġ"), the
			 * parts joined by one space. */
			const char *p0 = json_string_value(json_array_get(m, 0));
			const char *p1 = json_string_value(json_array_get(m, 1));
			size_t cap = 2 * (strlen(p0) + strlen(p1)) + 2, o = 0;
			char *buf = malloc(cap);

			if (!buf)
				return err_set(e, "%s: out of memory", path);
			for (int part = 0; part < 2; part++) {
				for (const char *c = part ? p1 : p0; *c; c++) {
					if (*c == ' ') {
						buf[o++] = (char)0xc4;
						buf[o++] = (char)0xa0;
					} else {
						buf[o++] = *c;
					}
				}
				if (!part)
					buf[o++] = ' ';
			}
			s->merges[i].ptr = buf;
			s->merges[i].len = o;
			buf[o] = 0;
		} else {
			return err_set(e, "%s: model.merges entry %zu has an unknown format", path, i);
		}
		s->n_merges = i + 1;
	}
	return 0;
}

static json_t *chat_template_file(const char *dir, err *e, int *rc)
{
	char *p = path_join(dir, "chat_template.jinja");
	json_t *t = NULL, *j = NULL;

	*rc = 0;
	if (p && is_file(p)) {
		FILE *f = fopen(p, "rb");
		char *buf = NULL;
		size_t n = 0;

		if (f) {
			fseek(f, 0, SEEK_END);
			long sz = ftell(f);

			fseek(f, 0, SEEK_SET);
			buf = sz >= 0 ? malloc((size_t)sz + 1) : NULL;
			if (buf)
				n = fread(buf, 1, (size_t)sz, f);
			fclose(f);
		}
		if (!buf) {
			*rc = err_errno(e, "%s", p);
		} else {
			t = json_stringn(buf, n);
			free(buf);
		}
	} else if (load_json(dir, "chat_template.json", &j, e)) {
		*rc = -1;
	} else if (j) {
		t = json_incref(json_object_get(j, "chat_template"));
		json_decref(j);
	}
	free(p);
	return t;
}

/* Gathers everything SpecialVocab would from dir; tj/tcfg/cfg are the parsed JSON files (or NULL). */
static int special_load(special *s, const char *dir, json_t *tj, json_t *tcfg_in, json_t *cfg,
			bool load_merges, err *e)
{
	static const char *const base[] = { "bos", "eos", "unk", "sep", "pad", "cls", "mask" };
	json_t *tc = tcfg_in ? json_deep_copy(tcfg_in) : NULL;
	json_t *added = tj ? json_object_get(tj, "added_tokens") : NULL;
	int rc = -1;

	for (int i = 0; i < 7; i++)
		s->types[s->n_types++] = base[i];
	if (tj) {
		if (load_merges && sp_merges(s, "tokenizer.json", json_object_get(json_object_get(tj, "model"), "merges"), e))
			goto out;
		sp_lowercase(s, json_object_get(tj, "normalizer"));
		json_t *bos = tc ? json_object_get(tc, "bos_token") : NULL;
		json_t *cls = tc ? json_object_get(tc, "cls_token") : NULL;
		json_t *eos = tc ? json_object_get(tc, "eos_token") : NULL;
		json_t *sep = tc ? json_object_get(tc, "sep_token") : NULL;
		json_t *pp = json_object_get(tj, "post_processor"), *procs, *proc;
		size_t i;

		if (!truthy(bos) && truthy(cls) && truthy(tc))
			json_object_set(tc, "bos_token", cls), bos = cls;
		if (!truthy(eos) && truthy(sep) && truthy(tc))
			json_object_set(tc, "eos_token", sep), eos = sep;
		procs = json_object_get(pp, "processors");
		if (truthy(pp) && !json_is_array(procs)) {
			procs = json_array();
			json_array_append(procs, pp);
		} else {
			json_incref(procs);
		}
		json_array_foreach(procs, i, proc) {
			const char *type = json_string_value(json_object_get(proc, "type"));

			if (type && !strcmp(type, "RobertaProcessing")) {
				sp_set_add(s, sp_type(s, "bos"), true);
				sp_set_add(s, sp_type(s, "eos"), true);
				sp_set_add(s, sp_type(s, "sep"), true);
			} else if (type && !strcmp(type, "TemplateProcessing")) {
				sp_template(s, proc, truthy(tc) ? tc : NULL, &bos, &eos, cls, sep);
			}
		}
		json_decref(procs);
	}
	if (truthy(tc)) {
		int crc;
		json_t *alt = chat_template_file(dir, e, &crc), *ct = json_object_get(tc, "chat_template");

		if (crc) {
			json_decref(alt);
			goto out;
		}
		if (!ct)
			ct = alt;
		if (json_is_string(ct))
			s->chat_template = json_incref(ct);
		else if (json_is_array(ct)) {
			size_t i;
			json_t *c;

			/* Named templates: only the default one is kept (see README). */
			json_array_foreach(ct, i, c)
				if (json_is_string(json_object_get(c, "name")) &&
				    !strcmp(json_string_value(json_object_get(c, "name")), "default") &&
				    json_is_string(json_object_get(c, "template")))
					s->chat_template = json_incref(json_object_get(c, "template"));
		}
		json_decref(alt);
		for (int t = 0; t < s->n_types; t++) {
			char key[32];
			json_t *entry, *content;
			size_t i;
			json_t *a;

			snprintf(key, sizeof key, "add_%s_token", s->types[t]);
			if (json_is_boolean(json_object_get(tc, key)))
				sp_set_add(s, t, json_is_true(json_object_get(tc, key)));
			snprintf(key, sizeof key, "%s_token", s->types[t]);
			entry = json_object_get(tc, key);
			content = json_is_object(entry) ? json_object_get(entry, "content") : entry;
			if (!json_is_string(content))
				continue;
			json_array_foreach(added, i, a)
				if (jeq(json_object_get(a, "content"), content)) {
					sp_set_id(s, t, json_object_get(a, "id"));
					break;
				}
		}
	}
	if (cfg)
		for (int t = 0; t < s->n_types; t++) {
			char key[32];
			json_t *v;

			snprintf(key, sizeof key, "%s_token_id", s->types[t]);
			v = json_object_get(cfg, key);
			if (!v && json_is_object(json_object_get(cfg, "text_config")))
				v = json_object_get(json_object_get(cfg, "text_config"), key);
			sp_set_id(s, t, v);
		}
	rc = 0;
out:
	json_decref(tc);
	return rc;
}

static void special_free(special *s)
{
	for (size_t i = 0; i < s->n_merges; i++)
		free(s->merges[i].ptr);
	free(s->merges);
	json_decref(s->chat_template);
}

static int special_write(const special *s, gguf_meta *m)
{
	static const struct {
		const char *type, *id_key, *add_key;
	} keys[] = {
		{ "bos", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.add_bos_token" },
		{ "eos", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_eos_token" },
		{ "unk", "tokenizer.ggml.unknown_token_id", NULL },
		{ "sep", "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.add_sep_token" },
		{ "pad", "tokenizer.ggml.padding_token_id", NULL },
		{ "cls", NULL, NULL }, /* the writer has no handler for it: skipped, as the reference */
		{ "mask", "tokenizer.ggml.mask_token_id", NULL },
		{ "eot", "tokenizer.ggml.eot_token_id", NULL },
		{ "eom", "tokenizer.ggml.eom_token_id", NULL },
	};

	if (s->n_merges && gguf_meta_set_arr(m, "tokenizer.ggml.merges", GGUF_STRING, s->merges, s->n_merges))
		return -1;
	for (int i = 0; i < s->n_ids; i++)
		for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
			if (!strcmp(keys[k].type, s->types[s->id_type[i]]) && keys[k].id_key &&
			    gguf_meta_set_u32(m, keys[k].id_key, (uint32_t)s->id[i]))
				return -1;
	for (int i = 0; i < s->n_add; i++)
		for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
			if (!strcmp(keys[k].type, s->types[s->add_type[i]]) && keys[k].add_key &&
			    gguf_meta_set_bool(m, keys[k].add_key, s->add[i]))
				return -1;
	if (s->chat_template && json_string_length(s->chat_template) &&
	    gguf_meta_set_str(m, "tokenizer.chat_template", json_string_value(s->chat_template)))
		return -1;
	if (s->lowercase && gguf_meta_set_bool(m, "tokenizer.ggml.normalizer.lowercase", true))
		return -1;
	return 0;
}

/* ---- the whole step ---- */

int vocab_write(const char *dir, const vocab_opts *o, gguf_meta *m, err *e)
{
	char *spm_path = path_join(dir, "tokenizer.model"), *tj_path = path_join(dir, "tokenizer.json");
	json_t *tj = NULL, *tcfg = NULL, *cfg = NULL;
	special sp = { 0 };
	toks t = { 0 };
	const char *pre = NULL;
	bool is_spm;
	int rc = -1;

	if (!spm_path || !tj_path) {
		err_set(e, "out of memory");
		goto out;
	}
	if (load_json(dir, "tokenizer.json", &tj, e) || load_json(dir, "tokenizer_config.json", &tcfg, e) ||
	    load_json(dir, "config.json", &cfg, e))
		goto out;
	is_spm = is_file(spm_path);
	if (is_spm) {
		if (spm_tokens(dir, spm_path, o->vocab_size, tcfg, &t, e))
			goto out;
	} else if (tj) {
		json_t *model = json_object_get(tj, "model");
		const char *mt = json_string_value(json_object_get(model, "type"));

		if (!mt || strcmp(mt, "BPE")) {
			err_set(e, "%s: tokenizer model type %s: only BPE (or a tokenizer.model) is supported",
				tj_path, mt ? mt : "missing");
			goto out;
		}
		if (json_is_true(json_object_get(model, "byte_fallback"))) {
			err_set(e, "%s: a SentencePiece-style BPE (byte_fallback) without tokenizer.model is not "
				"supported; add the model's tokenizer.model", tj_path);
			goto out;
		}
		if (!(pre = bpe_pre(tj_path, tj, e)) || bpe_tokens(tj_path, tj, o->vocab_size, &t, e))
			goto out;
	} else {
		err_set(e, "%s: no tokenizer.model or tokenizer.json", dir);
		goto out;
	}
	sp.n_vocab = is_spm ? t.n : 0;
	if (special_load(&sp, dir, tj, tcfg, cfg, !is_spm, e))
		goto out;
	if (gguf_meta_set_str(m, "tokenizer.ggml.model", is_spm ? "llama" : "gpt2") ||
	    gguf_meta_set_str(m, "tokenizer.ggml.pre", is_spm ? "default" : pre) ||
	    gguf_meta_set_arr(m, "tokenizer.ggml.tokens", GGUF_STRING, t.s, t.n) ||
	    (is_spm && gguf_meta_set_arr(m, "tokenizer.ggml.scores", GGUF_F32, t.score, t.n)) ||
	    gguf_meta_set_arr(m, "tokenizer.ggml.token_type", GGUF_I32, t.type, t.n) ||
	    special_write(&sp, m))
		goto oom;
	if (o->llama && tcfg && json_is_boolean(json_object_get(tcfg, "add_prefix_space")) &&
	    gguf_meta_set_bool(m, "tokenizer.ggml.add_space_prefix",
			       json_is_true(json_object_get(tcfg, "add_prefix_space"))))
		goto oom;
	if (o->llama && o->vocab_size == 49152 && gguf_meta_set_bool(m, "tokenizer.ggml.add_bos_token", false))
		goto oom;
	rc = 0;
	goto out;
oom:
	err_set(e, "%s: out of memory", dir);
out:
	special_free(&sp);
	toks_free(&t);
	json_decref(tj);
	json_decref(tcfg);
	json_decref(cfg);
	free(spm_path);
	free(tj_path);
	return rc;
}
