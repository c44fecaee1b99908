/* modelname.c - model id heuristics (the rules of gguf-py's Metadata.get_model_id_components) */
#include "modelname.h"

#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { T_BASENAME = 1, T_SIZE = 2, T_FINETUNE = 4, T_VERSION = 8, T_TYPE = 16 };

static bool digits(const char **p)
{
	const char *s = *p;

	while (isdigit((unsigned char)**p))
		(*p)++;
	return *p > s;
}

/* (v|iter)?\d+([.]\d+)* */
static bool is_version(const char *s)
{
	if (!strncasecmp(s, "iter", 4))
		s += 4;
	else if (tolower((unsigned char)*s) == 'v')
		s++;
	if (!digits(&s))
		return false;
	while (*s == '.') {
		s++;
		if (!digits(&s))
			return false;
	}
	return *s == 0;
}

/* i?q\d(_\w)*|b?fp?(16|32) */
static bool is_quant_type(const char *s)
{
	const char *p = s;

	if (tolower((unsigned char)*p) == 'i')
		p++;
	if (tolower((unsigned char)*p) == 'q' && isdigit((unsigned char)p[1])) {
		p += 2;
		while (*p == '_' && (isalnum((unsigned char)p[1]) || p[1] == '_'))
			p += 2;
		if (*p == 0)
			return true;
	}
	p = s;
	if (tolower((unsigned char)*p) == 'b')
		p++;
	if (tolower((unsigned char)*p) != 'f')
		return false;
	p++;
	if (tolower((unsigned char)*p) == 'p')
		p++;
	return !strcmp(p, "16") || !strcmp(p, "32");
}

static bool is_kmbt(char c)
{
	return c && strchr("KMBTkmbt", c);
}

/* ([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl, case-insensitive */
static bool is_size(const char *s)
{
	static const char *const words[] = { "small", "mini", "medium", "large", "xl", "xxl" };
	const char *p = s, *q;

	for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
		if (!strcasecmp(s, words[i]))
			return true;
	if (tolower((unsigned char)*p) == 'a') {
		p++;
	} else {
		q = p;
		if (digits(&q) && tolower((unsigned char)*q) == 'x')
			p = q + 1;
	}
	if (!digits(&p))
		return false;
	if (*p == '.' || *p == '_') {
		p++;
		if (!digits(&p))
			return false;
	}
	if (!is_kmbt(*p))
		return false;
	p++;
	if (isdigit((unsigned char)*p))
		p++;
	return *p == 0;
}

/* A\d+([._]\d+)?[KMBT][\d]? */
static bool is_active_label(const char *s)
{
	const char *p = s + 1;

	if (tolower((unsigned char)*s) != 'a' || !digits(&p))
		return false;
	if (*p == '.' || *p == '_') {
		p++;
		if (!digits(&p))
			return false;
	}
	if (!is_kmbt(*p))
		return false;
	p++;
	if (isdigit((unsigned char)*p))
		p++;
	return *p == 0;
}

/* "7b1" -> "7.1B", "8m" -> "8M", "1_5b" -> "1.5B" (in place; the buffer has room for one more). */
static void normalize_size(char *l)
{
	size_t n;

	for (char *c = l; *c; c++)
		if (*c == '_')
			*c = '.';
	n = strlen(l);
	if (n >= 2 && isdigit((unsigned char)l[n - 1])) {
		char d = l[n - 1], u = l[n - 2];

		l[n - 2] = '.';
		l[n - 1] = d;
		l[n] = u;
		l[n + 1] = 0;
		n++;
	}
	if (n > 1 && isdigit((unsigned char)l[n - 2]) && strchr("kmbt", l[n - 1]))
		l[n - 1] = (char)toupper((unsigned char)l[n - 1]);
}

/* float(label[:-1]) * 1000 ** " KMBT".find(label[-1]); false when that is not a number. */
static bool label_params(const char *l, double *out)
{
	size_t n = strlen(l);
	const char *units = " KMBT", *u;
	char *end, num[64];

	if (n < 2 || n - 1 >= sizeof num)
		return false;
	memcpy(num, l, n - 1);
	num[n - 1] = 0;
	*out = strtod(num, &end);
	if (*end || end == num)
		return false;
	u = strchr(units, l[n - 1]);
	*out *= pow(1000, u && l[n - 1] ? (double)(u - units) : -1.0);
	return true;
}

static char *join(char **parts, const int *types, int n, int want, int exclude, bool dedup)
{
	size_t cap = 1, o = 0;
	char *r;

	for (int i = 0; i < n; i++)
		cap += strlen(parts[i]) + 1;
	r = malloc(cap);
	if (!r)
		return NULL;
	r[0] = 0;
	for (int i = 0; i < n; i++) {
		bool dup = false;

		if (!(types[i] & want) || (types[i] & exclude))
			continue;
		for (int j = 0; dedup && j < i; j++)
			if ((types[j] & want) && !strcmp(parts[j], parts[i]))
				dup = true;
		if (dup)
			continue;
		o += (size_t)sprintf(r + o, "%s%s", o ? "-" : "", parts[i]);
	}
	if (!o) {
		free(r);
		return NULL;
	}
	return r;
}

/* Python's str.title() on ASCII, applied unless the word is a version or starts with a digit. */
static char *to_title(const char *id)
{
	size_t n = strlen(id), o = 0;
	char *r = malloc(n + 1);
	const char *p = id;

	if (!r)
		return NULL;
	while (*p) {
		const char *w;
		size_t wl;
		bool lower = false, upper = false;

		while (*p == ' ' || *p == '-' || *p == '\t')
			p++;
		if (!*p)
			break;
		w = p;
		while (*p && *p != ' ' && *p != '-' && *p != '\t')
			p++;
		wl = (size_t)(p - w);
		for (size_t i = 0; i < wl; i++) {
			lower |= islower((unsigned char)w[i]) != 0;
			upper |= isupper((unsigned char)w[i]) != 0;
		}
		char word[256];
		bool keep = wl >= sizeof word || !lower || upper || isdigit((unsigned char)w[0]);

		if (!keep) {
			memcpy(word, w, wl);
			word[wl] = 0;
			keep = tolower((unsigned char)word[0]) == 'v' && is_version(word) && word[0] == 'v';
		}
		if (o)
			r[o++] = ' ';
		for (size_t i = 0; i < wl; i++) {
			char c = w[i];

			if (!keep)
				c = (char)(i == 0 || !isalpha((unsigned char)w[i - 1]) ? toupper((unsigned char)c)
										    : tolower((unsigned char)c));
			r[o++] = c;
		}
	}
	r[o] = 0;
	return r;
}

int modelname_parse(modelname *mn, const char *model_id, int64_t total)
{
	char *dup = NULL, *full, *parts[64];
	int types[64], n = 0;
	const char *slash;

	memset(mn, 0, sizeof *mn);
	if (strchr(model_id, ' ')) {
		mn->name = to_title(model_id);
		return mn->name ? 0 : -1;
	}
	slash = strchr(model_id, '/');
	full = (char *)(slash ? slash + 1 : model_id);
	if (slash && slash > model_id && model_id[0] != '.') {
		char *org = strndup(model_id, (size_t)(slash - model_id));

		if (!org || !(mn->organization = to_title(org))) {
			free(org);
			goto oom;
		}
		free(org);
	}
	if (!(mn->name = to_title(full)))
		goto oom;
	dup = malloc(strlen(full) + 2 * 64 + 2);
	if (!dup)
		goto oom;
	/* Each part gets one spare byte for normalize_size's "7b1" -> "7.1B". */
	{
		const char *s = full;
		size_t o = 0;

		while (*s && n < 64) {
			const char *e = strchr(s, '-');
			size_t len = e ? (size_t)(e - s) : strlen(s);

			if (len) {
				parts[n] = dup + o;
				memcpy(dup + o, s, len);
				dup[o + len] = 0;
				o += len + 2;
				types[n++] = 0;
			}
			if (!e)
				break;
			s = e + 1;
		}
	}
	for (int i = 0; i < n; i++) {
		char *part = parts[i];

		if (is_version(part)) {
			types[i] |= T_VERSION;
		} else if (is_quant_type(part)) {
			types[i] |= T_TYPE;
			for (char *c = part; *c; c++)
				*c = (char)toupper((unsigned char)*c);
		} else if (i > 0 && is_size(part)) {
			double lp, np;

			normalize_size(part);
			if (total != 0 && label_params(part, &lp)) {
				bool active = false;

				if (i + 1 < n && strlen(parts[i + 1]) >= 2) {
					char next[80];

					snprintf(next, sizeof next, "%.70s", parts[i + 1]);
					normalize_size(next);
					active = is_active_label(next) && label_params(next + 1, &np) &&
						 fabs(np - fabs((double)total)) <= (double)(7 * llabs(total) / 8);
				}
				if (!active && ((total < 0 && lp < (double)(llabs(total) / 8)) ||
						(total > 0 && fabs(lp - (double)total) > (double)(7 * total / 8)))) {
					size_t l = strlen(part);

					types[i] |= T_FINETUNE; /* a context length, written lower-case */
					part[l - 1] = (char)tolower((unsigned char)part[l - 1]);
				}
			}
			if (!types[i])
				types[i] |= T_SIZE;
		} else if (i > 0 && (!strcasecmp(part, "chat") || !strcasecmp(part, "instruct") ||
				     !strcasecmp(part, "vision") || !strcasecmp(part, "lora"))) {
			types[i] |= total < 0 && !strcasecmp(part, "lora") ? T_TYPE : T_FINETUNE;
		}
	}
	/* Word sizes ("small") give way to a numeric size label. */
	bool numeric = false;

	for (int i = 0; i < n; i++)
		if (types[i] & T_SIZE)
			for (char *c = parts[i]; *c; c++)
				numeric |= isdigit((unsigned char)*c) != 0;
	for (int i = 0; numeric && i < n; i++) {
		bool alpha = true;

		for (char *c = parts[i]; *c; c++)
			alpha &= isalpha((unsigned char)*c) != 0;
		if ((types[i] & T_SIZE) && alpha)
			types[i] &= ~T_SIZE;
	}
	bool at_start = true;

	for (int i = 0; i < n; i++) {
		if (at_start && ((!types[i] && isalpha((unsigned char)parts[i][0])) || (types[i] & T_VERSION))) {
			types[i] |= T_BASENAME;
		} else {
			at_start = false;
			if (!types[i])
				types[i] |= T_FINETUNE;
		}
	}
	for (int i = n - 1; i >= 0; i--) {
		if ((types[i] & T_BASENAME) && types[i] != T_BASENAME)
			types[i] &= ~T_BASENAME;
		else
			break;
	}
	mn->size_label = join(parts, types, n, T_SIZE, 0, true);
	mn->finetune = join(parts, types, n, T_FINETUNE, 0, false);
	mn->version = join(parts, types, n, T_VERSION, T_BASENAME, false);
	if (mn->size_label || mn->finetune || mn->version)
		mn->basename = join(parts, types, n, T_BASENAME, 0, false);
	free(dup);
	return 0;
oom:
	free(dup);
	modelname_free(mn);
	return -1;
}

void modelname_free(modelname *mn)
{
	free(mn->name);
	free(mn->organization);
	free(mn->basename);
	free(mn->finetune);
	free(mn->version);
	free(mn->size_label);
	memset(mn, 0, sizeof *mn);
}

void modelname_size_label(uint64_t params, char out[32])
{
	double p = (double)params, scaled;
	char suffix, whole[32];
	int fix;

	if (p >= 1e12)
		scaled = p * 1e-12, suffix = 'T';
	else if (p >= 1e9)
		scaled = p * 1e-9, suffix = 'B';
	else if (p >= 1e6)
		scaled = p * 1e-6, suffix = 'M';
	else
		scaled = p * 1e-3, suffix = 'K';
	/* Python: max(2 - len(str(round(scaled)).lstrip('0')), 0) decimals. */
	snprintf(whole, sizeof whole, "%.0f", nearbyint(scaled));
	fix = 2 - (int)strlen(whole + strspn(whole, "0"));
	if (fix < 0)
		fix = 0;
	snprintf(out, 32, "%.*f%c", fix, scaled, suffix);
}
