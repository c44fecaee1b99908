/* recipe.c - the recipe loader: a sandboxed Lua 5.4 state, then a walk into plain C */
#include "recipe.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "gguf.h"
#include "quant.h"
#include "tiers.h"

#define DEFAULT_INSTRUCTIONS 10000000ull
#define DEFAULT_MEMORY (64u << 20)
#define DEFAULT_SECONDS 10.0
#define HOOK_STEP 1000      /* VM instructions between two visits of the limit hook */
#define MAX_RECIPE_BYTES (1u << 20)
#define MAX_DEPTH 8         /* nesting of the field paths the locator follows */

/* ---- names qbake knows ---------------------------------------------------------------- */

/* llama-quantize tiers qbake does not build. The IQ1/IQ2/IQ3_XXS ones are also the tiers
 * that need an importance matrix; since none of them can be named, the "needs an imatrix"
 * rule has nothing to check at load time, and naming one says why it is refused. */
static const char *const unbuilt_tiers[] = {
	"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S",
	"IQ3_M", "Q2_K_S", "TQ1_0", "TQ2_0", NULL,
};

static const char *const release_fields[] = {
	"model", "baseline", "corpora", "imatrix", "tiers", "eval", "gates", "rules", NULL,
};
static const char *const imatrix_fields[] = { "corpus", "ctx", "chunks", "from", NULL };
static const char *const eval_fields[] = { "corpus", "ctx", "chunks", "prompts", "predict", NULL };
static const char *const tier_fields[] = {
	"pure", "leave_output_tensor", "output_tensor_type", "token_embedding_type",
	"tensor_types", NULL,
};
static const char *const gate_fields[] = {
	"max_ppl_increase", "max_kld", "min_same_top", "fallback", NULL,
};
static const char *const rule_names[] = { "eval_overlap", "requantized_baseline", NULL };
static const char *const overlap_fields[] = { "max", "reason", NULL };
static const char *const reason_fields[] = { "reason", NULL };
static const char *const path_fields[] = { "path", NULL };
static const char *const git_fields[] = { "url", "commit", "ref", "subdir", "lfs", NULL };

/* Library names a recipe cannot reach, with the reason given when it tries. */
static const char *const forbidden_names[] = {
	"io", "os", "package", "require", "dofile", "loadfile", "debug", "collectgarbage",
	"print", "setmetatable", "getmetatable", "coroutine", "warn", NULL,
};

static const char *find_name(const char *const *list, const char *s, bool nocase)
{
	for (size_t i = 0; list[i]; i++)
		if (nocase ? strcasecmp(list[i], s) == 0 : strcmp(list[i], s) == 0)
			return list[i];
	return NULL;
}

const char *recipe_baseline_name(recipe_baseline b)
{
	switch (b) {
	case RECIPE_BASELINE_F16: return "f16";
	case RECIPE_BASELINE_BF16: return "bf16";
	case RECIPE_BASELINE_F32: return "f32";
	default: return "source";
	}
}

const recipe_gate *recipe_gate_for(const recipe *r, const char *tier)
{
	const recipe_gate *star = NULL;

	for (size_t i = 0; i < r->n_gates; i++) {
		if (strcmp(r->gates[i].tier, tier) == 0)
			return &r->gates[i];
		if (strcmp(r->gates[i].tier, "*") == 0)
			star = &r->gates[i];
	}
	return star;
}

/* Levenshtein distance, case-insensitive, for did-you-mean (inputs are short names). */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[64], i, j;

	if (la >= 63 || lb >= 63)
		return SIZE_MAX;
	for (j = 0; j <= lb; j++)
		row[j] = j;
	for (i = 1; i <= la; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
			size_t best = diag + cost;

			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* The closest candidate within 2 edits (and fewer edits than the word is long), or one
 * the word begins, or NULL. */
static const char *suggest(const char *word, const char *const *cands, size_t n)
{
	const char *best = NULL;
	size_t bestd = 3;

	for (size_t i = 0; i < n && cands[i]; i++) {
		size_t d = edit_distance(word, cands[i]);

		if (d >= bestd && strlen(word) >= 4 && strncasecmp(cands[i], word, strlen(word)) == 0)
			d = 2; /* a prefix of a longer name: "leave_output" */
		if (d < bestd && d < strlen(word)) {
			best = cands[i];
			bestd = d;
		}
	}
	return best;
}

/* The name of the tier called name (any case), or NULL. */
static const char *tier_canon(const char *name)
{
	const tier_info *t = tier_by_name(name);

	return t ? t->name : NULL;
}

/* The closest tier name to s, for did-you-mean. */
static const char *suggest_tier(const char *s)
{
	const char *names[64] = { NULL };
	size_t n;
	const tier_info *list = tier_list(&n);

	for (size_t i = 0; i < n && i < 63; i++)
		names[i] = list[i].name;
	return suggest(s, names, n < 63 ? n : 63);
}

static size_t list_count(const char *const *list)
{
	size_t n = 0;

	while (list[n])
		n++;
	return n;
}

static bool utf8_valid(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		size_t k;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			k = 1, cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			k = 2, cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			k = 3, cp = c & 0x07;
		} else {
			return false;
		}
		if (n - i <= k)
			return false;
		for (size_t j = 1; j <= k; j++) {
			unsigned char d = (unsigned char)s[i + j];

			if ((d & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (d & 0x3f);
		}
		if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += k + 1;
	}
	return true;
}

/* ---- locating fields in the source ---------------------------------------------------- */

/* A table in memory does not know the line it was written on, so errors about a field are
 * placed by reading the recipe's tokens: the release table, then each key or list item of
 * the path being checked. Computed recipes fall back to the nearest line found. */

enum { TK_NAME = 1, TK_STRING, TK_NUMBER, TK_PUNCT };

typedef struct token {
	int kind;
	int line;
	int depth;     /* '{' not yet closed before this token ('{' and its '}' share a depth) */
	char p;        /* TK_PUNCT: the character; '=' only for a lone '=' ('E' for ==, <=, ...) */
	const char *s; /* TK_NAME: the name; TK_STRING: the text between the quotes */
	size_t n;
} token;

typedef struct lexed {
	token *t;
	size_t n, cap;
} lexed;

/* Level of a long bracket opening at s ("[[" -> 0, "[==[" -> 2), or -1. */
static int long_open(const char *s, const char *end)
{
	int level = 0;

	if (s >= end || *s != '[')
		return -1;
	s++;
	while (s < end && *s == '=')
		level++, s++;
	return s < end && *s == '[' ? level : -1;
}

/* Skips a long bracket of the given level starting at s; returns the end, counting lines. */
static const char *long_skip(const char *s, const char *end, int level, int *line,
			     const char **body, size_t *blen)
{
	s += level + 2;
	*body = s;
	for (; s < end; s++) {
		if (*s == '\n')
			(*line)++;
		if (*s == ']') {
			const char *q = s + 1;
			int l = 0;

			while (q < end && *q == '=')
				l++, q++;
			if (l == level && q < end && *q == ']') {
				*blen = (size_t)(s - *body);
				return q + 1;
			}
		}
	}
	*blen = (size_t)(end - *body);
	return end;
}

static int lex_push(lexed *lx, int kind, int line, int depth, char p, const char *s, size_t n)
{
	if (lx->n == lx->cap) {
		size_t cap = lx->cap ? lx->cap * 2 : 256;
		token *t = realloc(lx->t, cap * sizeof *t);

		if (!t)
			return -1;
		lx->t = t;
		lx->cap = cap;
	}
	lx->t[lx->n++] = (token){ kind, line, depth, p, s, n };
	return 0;
}

static int lex(lexed *lx, const char *src, size_t len)
{
	const char *s = src, *end = src + len;
	int line = 1, depth = 0, rc = 0;

	if (len >= 1 && *s == '#') /* a "#!" first line is skipped by Lua too */
		while (s < end && *s != '\n')
			s++;
	while (s < end && rc == 0) {
		const char *body;
		size_t blen;
		int level;
		char c = *s;

		if (c == '\n') {
			line++, s++;
		} else if (isspace((unsigned char)c)) {
			s++;
		} else if (c == '-' && s + 1 < end && s[1] == '-') {
			s += 2;
			level = long_open(s, end);
			if (level >= 0)
				s = long_skip(s, end, level, &line, &body, &blen);
			else
				while (s < end && *s != '\n')
					s++;
		} else if (isalpha((unsigned char)c) || c == '_') {
			const char *b = s;

			while (s < end && (isalnum((unsigned char)*s) || *s == '_'))
				s++;
			rc = lex_push(lx, TK_NAME, line, depth, 0, b, (size_t)(s - b));
		} else if (isdigit((unsigned char)c) || (c == '.' && s + 1 < end && isdigit((unsigned char)s[1]))) {
			const char *b = s;

			while (s < end && (isalnum((unsigned char)*s) || *s == '.' ||
					   ((*s == '+' || *s == '-') && strchr("eEpP", s[-1]))))
				s++;
			rc = lex_push(lx, TK_NUMBER, line, depth, 0, b, (size_t)(s - b));
		} else if (c == '"' || c == '\'') {
			const char *b = ++s;
			int l0 = line;

			while (s < end && *s != c && *s != '\n') {
				if (*s == '\\' && s + 1 < end) {
					s++;
					if (*s == '\n')
						line++;
				}
				s++;
			}
			rc = lex_push(lx, TK_STRING, l0, depth, 0, b, (size_t)(s - b));
			if (s < end)
				s++;
		} else if ((level = long_open(s, end)) >= 0) {
			int l0 = line;

			s = long_skip(s, end, level, &line, &body, &blen);
			rc = lex_push(lx, TK_STRING, l0, depth, 0, body, blen);
		} else {
			char p = c;

			if (strchr("=<>~", c) && s + 1 < end && s[1] == '=')
				p = 'E', s++;
			if (p == '}' && depth > 0)
				depth--;
			rc = lex_push(lx, TK_PUNCT, line, depth, p, s, 1);
			if (p == '{')
				depth++;
			s++;
		}
	}
	return rc;
}

/* One step of a field path: a key, or (key NULL) the index-th value without a key. */
typedef struct step {
	const char *key;
	long index;
} step;

static bool tok_is(const token *t, char p)
{
	return t->kind == TK_PUNCT && t->p == p;
}

static bool tok_text(const token *t, const char *s)
{
	return strlen(s) == t->n && memcmp(t->s, s, t->n) == 0;
}

/* Index of the '{' that opens the release table, or -1. */
static long find_release(const lexed *lx, int line)
{
	long first = -1;

	for (size_t i = 0; i < lx->n; i++) {
		if (lx->t[i].kind == TK_NAME && tok_text(&lx->t[i], "release")) {
			if (first < 0)
				first = (long)i;
			if (lx->t[i].line == line) {
				first = (long)i;
				break;
			}
		}
	}
	if (first < 0)
		return -1;
	for (size_t i = (size_t)first + 1; i < lx->n; i++)
		if (tok_is(&lx->t[i], '{') && lx->t[i].depth == lx->t[first].depth)
			return (long)i;
	return -1;
}

/* The line of the field path steps[0..n) inside the release table (best effort). */
static int locate(const lexed *lx, int release_line, const step *steps, int n)
{
	long open = find_release(lx, release_line);
	int line = release_line;

	if (open < 0)
		return line;
	for (int k = 0; k < n; k++) {
		int d = lx->t[open].depth + 1;
		size_t i = (size_t)open + 1, end = i, vstart = 0, vend = 0;
		long pos = 0;
		bool found = false;

		while (end < lx->n && !(tok_is(&lx->t[end], '}') && lx->t[end].depth == d - 1))
			end++;
		while (i < end && !found) {
			size_t j = i;
			const token *t = &lx->t[i];
			bool keyed = false, match = false;
			size_t v = i;

			while (j < end && !(lx->t[j].depth == d && (tok_is(&lx->t[j], ',') || tok_is(&lx->t[j], ';'))))
				j++;
			if (t->kind == TK_NAME && i + 1 < j && tok_is(&lx->t[i + 1], '=')) {
				keyed = true;
				v = i + 2;
				match = steps[k].key && tok_text(t, steps[k].key);
			} else if (tok_is(t, '[') && i + 3 < j && lx->t[i + 1].kind == TK_STRING &&
				   tok_is(&lx->t[i + 2], ']') && tok_is(&lx->t[i + 3], '=')) {
				keyed = true;
				v = i + 4;
				match = steps[k].key && tok_text(&lx->t[i + 1], steps[k].key);
			} else if (tok_is(t, '[')) {
				keyed = true; /* [expr] = value: never matched */
			}
			if (!keyed && i < j && !steps[k].key && ++pos == steps[k].index)
				match = true;
			if (match && i < j) {
				found = true;
				line = t->line;
				vstart = v;
				vend = j;
			}
			i = j + 1;
		}
		if (!found)
			return line;
		open = -1;
		for (size_t q = vstart; q < vend; q++) {
			if (tok_is(&lx->t[q], '{') && lx->t[q].depth == d) {
				open = (long)q;
				break;
			}
		}
		if (open < 0)
			return line;
	}
	return line;
}

/* ---- the sandbox ---------------------------------------------------------------------- */

typedef struct sandbox {
	size_t used, cap;
	bool mem_hit;
	uint64_t count, limit;
	bool instr_hit;
	int instr_line;
	double cpu_start, cpu_limit;
	bool time_hit;
	int time_line;
} sandbox;

static double cpu_now(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
		return 0;
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The Lua allocator: plain malloc with a cap on the total held. */
static void *sb_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	sandbox *sb = ud;
	size_t old = ptr ? osize : 0;
	void *p;

	if (nsize == 0) {
		free(ptr);
		sb->used -= old;
		return NULL;
	}
	if (nsize > old && nsize - old > sb->cap - sb->used) {
		sb->mem_hit = true;
		return NULL;
	}
	p = realloc(ptr, nsize);
	if (!p)
		return NULL;
	sb->used = sb->used - old + nsize;
	return p;
}

static sandbox *sb_of(lua_State *L)
{
	void *ud;

	lua_getallocf(L, &ud);
	return ud;
}

/* Counts instructions and CPU time. Once a limit is passed, the hook fires on every
 * instruction, so a recipe that catches the error with pcall cannot keep running. */
static void sb_hook(lua_State *L, lua_Debug *ar)
{
	sandbox *sb = sb_of(L);
	bool first = !sb->instr_hit && !sb->time_hit;

	sb->count += HOOK_STEP;
	if (first && sb->count > sb->limit) {
		sb->instr_hit = true;
		sb->instr_line = lua_getinfo(L, "l", ar) ? ar->currentline : 0;
	} else if (first && cpu_now() - sb->cpu_start > sb->cpu_limit) {
		sb->time_hit = true;
		sb->time_line = lua_getinfo(L, "l", ar) ? ar->currentline : 0;
	}
	if (sb->instr_hit || sb->time_hit) {
		lua_sethook(L, sb_hook, LUA_MASKCOUNT, 1);
		lua_pushstring(L, sb->instr_hit ? "instruction limit exceeded" : "time limit exceeded");
		lua_error(L);
	}
}

/* _G's __index: reading an undefined name is an error that says what exists. */
static int sb_index(lua_State *L)
{
	const char *name = lua_tostring(L, 2);
	static const char *const dsl[] = { "release", "hf", "gguf", "git", "text", "file", NULL };
	const char *s;

	if (!name)
		return luaL_error(L, "unknown name");
	if (find_name(forbidden_names, name, false))
		return luaL_error(L, "%s is not available in a recipe (the sandbox has no io, os, "
				  "package/require, dofile, loadfile, debug, collectgarbage, print or metatables)", name);
	s = suggest(name, dsl, list_count(dsl));
	if (s)
		return luaL_error(L, "unknown name '%s' (did you mean '%s'?)", name, s);
	return luaL_error(L, "unknown name '%s'", name);
}

/* load, text chunks only. */
static int sb_load(lua_State *L)
{
	const char *mode = luaL_optstring(L, 3, "t");
	bool env = lua_gettop(L) >= 4;

	if (strcmp(mode, "t") != 0)
		return luaL_error(L, "load: only text chunks can be loaded in a recipe (mode \"t\")");
	lua_settop(L, 4);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_pushvalue(L, 1);
	lua_pushvalue(L, 2);
	lua_pushliteral(L, "t");
	if (env)
		lua_pushvalue(L, 4);
	lua_call(L, env ? 4 : 3, LUA_MULTRET);
	return lua_gettop(L) - 4;
}

/* string.rep, refusing results over the memory limit before building them (the library's
 * own loop would spin for ages on string.rep("", 1e15)). */
static int sb_rep(lua_State *L)
{
	size_t l, lsep;
	luaL_checklstring(L, 1, &l);
	lua_Integer n = luaL_checkinteger(L, 2);
	sandbox *sb = sb_of(L);

	luaL_optlstring(L, 3, "", &lsep);
	if (n <= 0 || l + lsep == 0) {
		lua_pushliteral(L, "");
		return 1;
	}
	if ((lua_Unsigned)n > (lua_Unsigned)(sb->cap / (l + lsep) + 1)) {
		sb->mem_hit = true;
		return luaL_error(L, "memory limit exceeded (string.rep of %I copies)", n);
	}
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, 1);
	return 1;
}

static int current_line(lua_State *L)
{
	lua_Debug ar;

	if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "l", &ar))
		return ar.currentline;
	return 0;
}

/* Marks t (at the top of the stack) as built by the named constructor on the caller's line. */
static void mark(lua_State *L, const char *kind)
{
	int line = current_line(L);

	lua_getfield(L, LUA_REGISTRYINDEX, "qbake.objects");
	lua_pushvalue(L, -2);
	lua_createtable(L, 0, 2);
	lua_pushstring(L, kind);
	lua_setfield(L, -2, "kind");
	lua_pushinteger(L, line);
	lua_setfield(L, -2, "line");
	lua_rawset(L, -3);
	lua_pop(L, 1);
}

/* hf { path = ... }, gguf { ... }, git { ... }: a table (or, for hf and gguf, a path string). */
static int dsl_source(lua_State *L)
{
	const char *kind = lua_tostring(L, lua_upvalueindex(1));

	if (lua_type(L, 1) == LUA_TSTRING && strcmp(kind, "git") != 0) {
		lua_createtable(L, 0, 1);
		lua_pushvalue(L, 1);
		lua_setfield(L, -2, "path");
	} else if (lua_type(L, 1) == LUA_TTABLE) {
		lua_settop(L, 1);
	} else {
		return luaL_error(L, "%s expects a table: %s { %s = ... }", kind, kind,
				  strcmp(kind, "git") == 0 ? "url" : "path");
	}
	mark(L, kind);
	return 1;
}

/* text { "glob", ... } (or text "glob"). */
static int dsl_text(lua_State *L)
{
	if (lua_type(L, 1) == LUA_TSTRING) {
		lua_createtable(L, 1, 0);
		lua_pushvalue(L, 1);
		lua_rawseti(L, -2, 1);
	} else if (lua_type(L, 1) == LUA_TTABLE) {
		lua_settop(L, 1);
	} else {
		return luaL_error(L, "text expects a list of files or patterns: text { \"corpora/*.txt\" }");
	}
	mark(L, "text");
	return 1;
}

/* file "path". */
static int dsl_file(lua_State *L)
{
	if (lua_type(L, 1) != LUA_TSTRING)
		return luaL_error(L, "file expects a path: file \"name.imatrix.gguf\"");
	lua_createtable(L, 0, 1);
	lua_pushvalue(L, 1);
	lua_setfield(L, -2, "path");
	mark(L, "file");
	return 1;
}

static int dsl_release_body(lua_State *L)
{
	const char *name = lua_tostring(L, lua_upvalueindex(1));
	int line = current_line(L);

	if (lua_type(L, 1) != LUA_TTABLE)
		return luaL_error(L, "release \"%s\" expects a table: release \"%s\" { model = ..., tiers = { ... } }",
				  name, name);
	if (lua_getfield(L, LUA_REGISTRYINDEX, "qbake.release") != LUA_TNIL) {
		lua_getfield(L, -1, "line");
		return luaL_error(L, "a recipe holds exactly one release; the first one is at line %d",
				  (int)lua_tointeger(L, -1));
	}
	lua_createtable(L, 0, 3);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_setfield(L, -2, "name");
	lua_pushvalue(L, 1);
	lua_setfield(L, -2, "body");
	lua_pushinteger(L, line);
	lua_setfield(L, -2, "line");
	lua_setfield(L, LUA_REGISTRYINDEX, "qbake.release");
	return 0;
}

/* release "name" { ... } */
static int dsl_release(lua_State *L)
{
	if (lua_type(L, 1) != LUA_TSTRING)
		return luaL_error(L, "release needs a name first: release \"name\" { ... }");
	lua_settop(L, 1);
	lua_pushcclosure(L, dsl_release_body, 1);
	return 1;
}

static void remove_fields(lua_State *L, const char *lib, const char *const *names)
{
	lua_getglobal(L, lib);
	for (size_t i = 0; names[i]; i++) {
		lua_pushnil(L);
		lua_setfield(L, -2, names[i]);
	}
	lua_pop(L, 1);
}

/* Opens the allowed libraries, removes what a recipe must not reach, adds the DSL. */
static int sb_open(lua_State *L)
{
	static const char *const base_gone[] = {
		"dofile", "loadfile", "collectgarbage", "print", "setmetatable", "getmetatable",
		"warn", NULL,
	};
	static const char *const string_gone[] = {
		/* Patterns can backtrack for hours inside one C call, out of the hook's reach. */
		"dump", "find", "match", "gmatch", "gsub", NULL,
	};
	static const char *const math_gone[] = { "random", "randomseed", NULL };
	static const char *const table_gone[] = { "move", NULL };
	static const char *const sources[] = { "hf", "gguf", "git", NULL };

	luaL_requiref(L, "_G", luaopen_base, 1);
	luaL_requiref(L, "string", luaopen_string, 1);
	luaL_requiref(L, "table", luaopen_table, 1);
	luaL_requiref(L, "math", luaopen_math, 1);
	luaL_requiref(L, "utf8", luaopen_utf8, 1);
	lua_settop(L, 0);
	remove_fields(L, "_G", base_gone);
	remove_fields(L, "string", string_gone);
	remove_fields(L, "math", math_gone);
	remove_fields(L, "table", table_gone);

	lua_getglobal(L, "load");
	lua_pushcclosure(L, sb_load, 1);
	lua_setglobal(L, "load");
	lua_getglobal(L, "string");
	lua_getfield(L, -1, "rep");
	lua_pushcclosure(L, sb_rep, 1);
	lua_setfield(L, -2, "rep");
	lua_pop(L, 1);

	for (size_t i = 0; sources[i]; i++) {
		lua_pushstring(L, sources[i]);
		lua_pushcclosure(L, dsl_source, 1);
		lua_setglobal(L, sources[i]);
	}
	lua_pushcfunction(L, dsl_text);
	lua_setglobal(L, "text");
	lua_pushcfunction(L, dsl_file);
	lua_setglobal(L, "file");
	lua_pushcfunction(L, dsl_release);
	lua_setglobal(L, "release");

	lua_newtable(L); /* constructed objects, weak keys */
	lua_createtable(L, 0, 1);
	lua_pushliteral(L, "k");
	lua_setfield(L, -2, "__mode");
	lua_setmetatable(L, -2);
	lua_setfield(L, LUA_REGISTRYINDEX, "qbake.objects");

	lua_pushglobaltable(L);
	lua_createtable(L, 0, 2);
	lua_pushcfunction(L, sb_index);
	lua_setfield(L, -2, "__index");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_setmetatable(L, -2);
	lua_pop(L, 1);
	return 0;
}

/* ---- the walk from Lua values into the recipe ------------------------------------------ */

typedef struct conv {
	lua_State *L;
	recipe *r;
	const lexed *lx;
	err *e;
	step path[MAX_DEPTH];
	int depth;
	char **tmp; /* strings the walk needs for a while; freed by the caller, even after a Lua error */
	size_t n_tmp;
} conv;

static void push_key(conv *c, const char *key)
{
	if (c->depth < MAX_DEPTH)
		c->path[c->depth] = (step){ key, 0 };
	c->depth++;
}

static void push_index(conv *c, long index)
{
	if (c->depth < MAX_DEPTH)
		c->path[c->depth] = (step){ NULL, index };
	c->depth++;
}

static void pop_step(conv *c)
{
	c->depth--;
}

static int here(conv *c)
{
	return locate(c->lx, c->r->line, c->path, c->depth < MAX_DEPTH ? c->depth : MAX_DEPTH);
}

static int fail(conv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(conv *c, const char *fmt, ...)
{
	char msg[900];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return err_set(c->e, "%s:%d: %s", c->r->path, here(c), msg);
}

static int warn_here(conv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int warn_here(conv *c, const char *fmt, ...)
{
	char msg[900], full[1200];
	char **w;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	snprintf(full, sizeof full, "%s:%d: %s", c->r->path, here(c), msg);
	w = realloc(c->r->warnings, (c->r->n_warnings + 1) * sizeof *w);
	if (!w)
		return err_set(c->e, "out of memory");
	c->r->warnings = w;
	if (!(w[c->r->n_warnings] = strdup(full)))
		return err_set(c->e, "out of memory");
	c->r->n_warnings++;
	return 0;
}

static char *keep_tmp(conv *c, const char *s)
{
	char **t = realloc(c->tmp, (c->n_tmp + 1) * sizeof *t);

	if (!t)
		return NULL;
	c->tmp = t;
	if (!(t[c->n_tmp] = strdup(s)))
		return NULL;
	return t[c->n_tmp++];
}

static char *dup_or_fail(conv *c, const char *s, char **out)
{
	*out = strdup(s);
	if (!*out)
		err_set(c->e, "out of memory");
	return *out;
}

/* "string \"abc\"", "number 2.5", "table": what a wrong value was, for messages. */
static void describe(lua_State *L, int idx, char *buf, size_t n)
{
	int t = lua_type(L, idx);

	if (t == LUA_TSTRING)
		snprintf(buf, n, "string \"%.60s\"", lua_tostring(L, idx));
	else if (t == LUA_TNUMBER && lua_isinteger(L, idx))
		snprintf(buf, n, "number %lld", (long long)lua_tointeger(L, idx));
	else if (t == LUA_TNUMBER)
		snprintf(buf, n, "number %g", lua_tonumber(L, idx));
	else if (t == LUA_TBOOLEAN)
		snprintf(buf, n, "boolean %s", lua_toboolean(L, idx) ? "true" : "false");
	else
		snprintf(buf, n, "%s", lua_typename(L, t));
}

/* The constructor that built the value at idx ("hf", "text", ...), or NULL for a plain value. */
static const char *kind_of(lua_State *L, int idx, int *line)
{
	const char *k = NULL;

	idx = lua_absindex(L, idx);
	if (lua_type(L, idx) != LUA_TTABLE)
		return NULL;
	lua_getfield(L, LUA_REGISTRYINDEX, "qbake.objects");
	lua_pushvalue(L, idx);
	if (lua_rawget(L, -2) == LUA_TTABLE) {
		lua_getfield(L, -1, "kind");
		k = lua_tostring(L, -1); /* interned constructor names stay alive in the registry */
		lua_getfield(L, -2, "line");
		if (line)
			*line = (int)lua_tointeger(L, -1);
		lua_pop(L, 2);
	}
	lua_pop(L, 2);
	return k;
}

static int raw_field(lua_State *L, int t, const char *key)
{
	t = lua_absindex(L, t);
	lua_pushstring(L, key);
	return lua_rawget(L, t);
}

/* Refuses keys of table t not in fields; positional values too unless allow_pos.
 * Deterministic: the smallest unknown key is the one reported. */
static int check_keys(conv *c, int t, const char *const *fields, const char *what, bool allow_pos)
{
	lua_State *L = c->L;
	const char *bad = NULL;
	bool positional = false;
	char list[300] = "";
	const char *s;

	t = lua_absindex(L, t);
	lua_pushnil(L);
	while (lua_next(L, t)) {
		if (lua_type(L, -2) == LUA_TSTRING) {
			const char *k = lua_tostring(L, -2);

			if (!find_name(fields, k, false) && (!bad || strcmp(k, bad) < 0))
				bad = k;
		} else if (!(allow_pos && lua_isinteger(L, -2))) {
			positional = true;
		}
		lua_pop(L, 1);
	}
	if (bad) {
		push_key(c, bad);
		if (!fields[0]) {
			fail(c, "%s: unexpected field \"%s\": this is a list of values", what, bad);
		} else if (strcmp(bad, "remote_cache") == 0) {
			fail(c, "%s: remote_cache is not a recipe field: a remote cache is per-user "
			     "configuration (--remote-cache, QBAKE_REMOTE_CACHE or the config file)", what);
		} else if ((s = suggest(bad, fields, list_count(fields)))) {
			fail(c, "%s: unknown field \"%s\" (did you mean \"%s\"?)", what, bad, s);
		} else {
			for (size_t i = 0; fields[i]; i++) {
				strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
				strncat(list, fields[i], sizeof list - strlen(list) - 1);
			}
			fail(c, "%s: unknown field \"%s\" (fields: %s)", what, bad, list);
		}
		pop_step(c);
		return -1;
	}
	if (positional)
		return fail(c, "%s: a value without a name (fields are written name = value)", what);
	return 0;
}

/* Length of a list (keys exactly 1..n); other keys are refused unless fields allows them. */
static int list_len(conv *c, int t, const char *what, const char *const *fields, size_t *n)
{
	lua_State *L = c->L;
	lua_Integer len;

	t = lua_absindex(L, t);
	len = (lua_Integer)lua_rawlen(L, t);
	lua_pushnil(L);
	while (lua_next(L, t)) {
		bool ok = lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1 && lua_tointeger(L, -2) <= len;

		lua_pop(L, 1);
		if (!ok && lua_type(L, -1) != LUA_TSTRING) {
			lua_pop(L, 1);
			return fail(c, "%s: expected a list (a hole or a non-integer key)", what);
		}
	}
	if (check_keys(c, t, fields, what, true))
		return -1;
	*n = (size_t)len;
	return 0;
}

/* Reads optional string field key of table t; returns 1 when present, 0 absent, -1 error.
 * The string stays valid while t is on the stack. */
static int get_string(conv *c, int t, const char *key, const char *what, const char **out)
{
	lua_State *L = c->L;
	char d[100];
	int ty = raw_field(L, t, key);

	if (ty == LUA_TNIL) {
		lua_pop(L, 1);
		return 0;
	}
	push_key(c, key);
	if (ty != LUA_TSTRING) {
		describe(L, -1, d, sizeof d);
		lua_pop(L, 1);
		fail(c, "%s: field %s: expected a string, got %s", what, key, d);
		pop_step(c);
		return -1;
	}
	pop_step(c);
	*out = lua_tostring(L, -1);
	lua_pop(L, 1); /* still referenced by the table */
	return 1;
}

static int get_int(conv *c, int t, const char *key, const char *what, int64_t lo, int64_t hi, int64_t *out)
{
	lua_State *L = c->L;
	char d[100];
	int ty = raw_field(L, t, key), rc = 1;
	int isint = 0;
	lua_Integer v = 0;

	if (ty == LUA_TNIL) {
		lua_pop(L, 1);
		return 0;
	}
	push_key(c, key);
	if (ty == LUA_TNUMBER)
		v = lua_tointegerx(L, -1, &isint);
	if (!isint) {
		describe(L, -1, d, sizeof d);
		rc = fail(c, "%s: field %s: expected an integer, got %s", what, key, d);
	} else if (v < lo || v > hi) {
		rc = fail(c, "%s: field %s: %lld is out of range (%lld to %lld)", what, key,
			  (long long)v, (long long)lo, (long long)hi);
	} else {
		*out = v;
	}
	pop_step(c);
	lua_pop(L, 1);
	return rc;
}

static int get_bool(conv *c, int t, const char *key, const char *what, bool *out)
{
	lua_State *L = c->L;
	char d[100];
	int ty = raw_field(L, t, key), rc = 1;

	if (ty == LUA_TNIL) {
		lua_pop(L, 1);
		return 0;
	}
	push_key(c, key);
	if (ty != LUA_TBOOLEAN) {
		describe(L, -1, d, sizeof d);
		rc = fail(c, "%s: field %s: expected true or false, got %s", what, key, d);
	} else {
		*out = lua_toboolean(L, -1);
	}
	pop_step(c);
	lua_pop(L, 1);
	return rc;
}

/* "5%" -> 5.0 */
static int get_percent(conv *c, int t, const char *key, const char *what, double hi, double *out)
{
	lua_State *L = c->L;
	char d[100], *end;
	const char *s;
	double v = NAN;
	int ty = raw_field(L, t, key), rc = 1;

	if (ty == LUA_TNIL) {
		lua_pop(L, 1);
		return 0;
	}
	push_key(c, key);
	if (ty != LUA_TSTRING) {
		describe(L, -1, d, sizeof d);
		rc = fail(c, "%s: field %s: expected a percentage like \"5%%\", got %s", what, key, d);
	} else {
		s = lua_tostring(L, -1);
		errno = 0;
		v = strtod(s, &end);
		while (*end == ' ')
			end++;
		if (end == s || errno || *end != '%' || end[1] || !(v >= 0) || v > hi)
			rc = fail(c, "%s: field %s: expected a percentage from 0%% to %g%% like \"5%%\", got \"%.40s\"",
				  what, key, hi, s);
		else
			*out = v;
	}
	pop_step(c);
	lua_pop(L, 1);
	return rc;
}

/* Lexically normalised path: no "." or empty parts, "x/.." folded. */
static char *normalise(const char *p)
{
	size_t n = strlen(p);
	char *out = malloc(n + 2), *o = out;
	bool abs = p[0] == '/';
	const char *s = p;

	if (!out)
		return NULL;
	if (abs)
		*o++ = '/';
	while (*s) {
		const char *b;
		size_t len;

		while (*s == '/')
			s++;
		b = s;
		while (*s && *s != '/')
			s++;
		len = (size_t)(s - b);
		if (len == 0 || (len == 1 && b[0] == '.'))
			continue;
		if (len == 2 && b[0] == '.' && b[1] == '.') {
			char *start = out + abs, *last = o;

			while (last > start && last[-1] != '/')
				last--;
			if (o > start && !(o - last == 2 && last[0] == '.' && last[1] == '.')) {
				o = last > start ? last - 1 : start;
				continue;
			}
			if (abs && o == start)
				continue; /* "/.." is "/" */
		}
		if (o > out + abs)
			*o++ = '/';
		memcpy(o, b, len);
		o += len;
	}
	if (o == out)
		*o++ = '.';
	*o = 0;
	return out;
}

static int join_dir(conv *c, const char *rel, char **out)
{
	size_t n;

	if (rel[0] == '/')
		return dup_or_fail(c, rel, out) ? 0 : -1;
	if (strcmp(rel, ".") == 0)
		return dup_or_fail(c, c->r->dir, out) ? 0 : -1;
	n = strlen(c->r->dir) + strlen(rel) + 2;
	if (!(*out = malloc(n)))
		return err_set(c->e, "out of memory");
	snprintf(*out, n, "%s/%s", c->r->dir, rel);
	return 0;
}

/* Fills f from a path written in the recipe; checks it exists as a folder or a regular
 * file (want_dir < 0: do not check). */
static int resolve(conv *c, const char *written, recipe_file *f, int want_dir, const char *what)
{
	struct stat st;

	if (!written[0])
		return fail(c, "%s: the path is empty", what);
	if (!utf8_valid(written, strlen(written)))
		return fail(c, "%s: the path is not valid UTF-8", what);
	if (!(f->rel = normalise(written)))
		return err_set(c->e, "out of memory");
	if (join_dir(c, f->rel, &f->path))
		return -1;
	if (want_dir < 0)
		return 0;
	if (stat(f->path, &st) != 0)
		return fail(c, "%s: %s: %s (paths are relative to the recipe's folder)", what, f->rel, strerror(errno));
	if (want_dir && !S_ISDIR(st.st_mode))
		return fail(c, "%s: %s is not a folder", what, f->rel);
	if (!want_dir && !S_ISREG(st.st_mode))
		return fail(c, "%s: %s is not a regular file", what, f->rel);
	return 0;
}

static int conv_model(conv *c, int t)
{
	lua_State *L = c->L;
	recipe_model *m = &c->r->model;
	char d[100];
	const char *kind, *s;
	int line = 0, rc;

	push_key(c, "model");
	kind = kind_of(L, t, &line);
	m->line = here(c);
	if (!kind || strcmp(kind, "text") == 0 || strcmp(kind, "file") == 0) {
		describe(L, t, d, sizeof d);
		rc = fail(c, "model: expected hf { path = \"folder\" }, gguf { path = \"file.gguf\" } or "
			  "git { url = ..., commit = ... }, got %s", kind ? kind : d);
		pop_step(c);
		return rc;
	}
	if (strcmp(kind, "git") != 0) {
		char what[16];

		snprintf(what, sizeof what, "%s", kind);
		m->kind = strcmp(kind, "hf") == 0 ? RECIPE_MODEL_HF : RECIPE_MODEL_GGUF;
		if (check_keys(c, t, path_fields, what, false) || (rc = get_string(c, t, "path", what, &s)) < 0)
			goto fail;
		if (rc == 0) {
			fail(c, "%s: field path is required", what);
			goto fail;
		}
		push_key(c, "path");
		rc = resolve(c, s, &m->local, m->kind == RECIPE_MODEL_HF, what);
		pop_step(c);
		if (rc)
			goto fail;
		pop_step(c);
		return 0;
	}
	m->kind = RECIPE_MODEL_GIT;
	if (check_keys(c, t, git_fields, "git", false) || (rc = get_string(c, t, "url", "git", &s)) < 0)
		goto fail;
	if (rc == 0 || !s[0]) {
		fail(c, "git: field url is required (https://..., file://... or a local path)");
		goto fail;
	}
	if (!utf8_valid(s, strlen(s))) {
		fail(c, "git: url is not valid UTF-8");
		goto fail;
	}
	if (!dup_or_fail(c, s, &m->url))
		goto fail;
	{
		const char *colon = strchr(s, ':'), *slash = strchr(s, '/');
		bool remote = strstr(s, "://") || (colon && (!slash || colon < slash));

		if (remote ? !dup_or_fail(c, s, &m->url_open) : join_dir(c, s, &m->url_open) != 0)
			goto fail;
	}
	if ((rc = get_string(c, t, "commit", "git", &s)) < 0)
		goto fail;
	if (rc) {
		size_t n = strlen(s);
		bool hex = n == 40;

		for (size_t i = 0; hex && i < n; i++)
			hex = isxdigit((unsigned char)s[i]);
		push_key(c, "commit");
		if (!hex) {
			fail(c, "git: commit must be the full 40-hex-digit commit id, got \"%.60s\"", s);
			pop_step(c);
			goto fail;
		}
		pop_step(c);
		if (!dup_or_fail(c, s, &m->commit))
			goto fail;
		for (size_t i = 0; i < n; i++)
			m->commit[i] = (char)tolower((unsigned char)m->commit[i]);
	}
	if ((rc = get_string(c, t, "ref", "git", &s)) < 0)
		goto fail;
	if (rc && (!s[0] || !utf8_valid(s, strlen(s)))) {
		push_key(c, "ref");
		fail(c, "git: ref must be a branch or tag name");
		pop_step(c);
		goto fail;
	}
	if (rc && !dup_or_fail(c, s, &m->ref))
		goto fail;
	if (!m->commit && !m->ref) {
		fail(c, "git: give commit = \"<40 hex digits>\" (or ref = \"branch\" to follow a branch; "
		     "the build prints the commit to pin)");
		goto fail;
	}
	if ((rc = get_string(c, t, "subdir", "git", &s)) < 0)
		goto fail;
	if (rc) {
		push_key(c, "subdir");
		if (!(m->subdir = normalise(s))) {
			err_set(c->e, "out of memory");
		} else if (m->subdir[0] == '/' || strncmp(m->subdir, "..", 2) == 0 || !utf8_valid(s, strlen(s))) {
			fail(c, "git: subdir must be a folder inside the repository, got \"%.60s\"", s);
		} else if (strcmp(m->subdir, ".") == 0) {
			free(m->subdir);
			m->subdir = NULL;
		}
		pop_step(c);
		if (c->e->set)
			goto fail;
	}
	if ((rc = get_string(c, t, "lfs", "git", &s)) < 0)
		goto fail;
	if (rc) {
		push_key(c, "lfs");
		rc = resolve(c, s, &m->lfs, 1, "git: lfs");
		pop_step(c);
		if (rc)
			goto fail;
	}
	pop_step(c);
	return 0;
fail:
	pop_step(c);
	return -1;
}

static int conv_baseline(conv *c, int t)
{
	static const char *const names[] = { "f16", "bf16", "f32", NULL };
	const char *s, *sug;
	int rc;

	c->r->baseline = c->r->model.kind == RECIPE_MODEL_GGUF ? RECIPE_BASELINE_SOURCE : RECIPE_BASELINE_F16;
	rc = get_string(c, t, "baseline", "release", &s);
	if (rc <= 0)
		return rc;
	push_key(c, "baseline");
	if (strcasecmp(s, "f16") == 0) {
		c->r->baseline = RECIPE_BASELINE_F16;
	} else if (strcasecmp(s, "bf16") == 0) {
		c->r->baseline = RECIPE_BASELINE_BF16;
	} else if (strcasecmp(s, "f32") == 0) {
		c->r->baseline = RECIPE_BASELINE_F32;
	} else {
		sug = suggest(s, names, 3);
		fail(c, "baseline: expected \"f16\", \"bf16\" or \"f32\", got \"%.40s\"%s%s%s", s,
		     sug ? " (did you mean \"" : "", sug ? sug : "", sug ? "\"?)" : "");
		pop_step(c);
		return -1;
	}
	pop_step(c);
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* String keys of table t, sorted, kept in c->tmp; sets *first to their index there. */
static int sorted_keys(conv *c, int t, const char *what, size_t *first, size_t *n)
{
	lua_State *L = c->L;

	t = lua_absindex(L, t);
	*first = c->n_tmp;
	*n = 0;
	lua_pushnil(L);
	while (lua_next(L, t)) {
		lua_pop(L, 1);
		if (lua_type(L, -1) != LUA_TSTRING) {
			lua_pop(L, 1);
			return fail(c, "%s: expected name = value entries, found a value without a name", what);
		}
		if (!keep_tmp(c, lua_tostring(L, -1))) {
			lua_pop(L, 1);
			return err_set(c->e, "out of memory");
		}
		(*n)++;
	}
	qsort(c->tmp + *first, *n, sizeof *c->tmp, cmp_str);
	return 0;
}

static bool has_glob(const char *s)
{
	return strpbrk(s, "*?[") != NULL;
}

/* dir with glob's special characters escaped, so only the pattern's own are special. */
static char *escape_glob(const char *dir)
{
	char *out = malloc(strlen(dir) * 2 + 1), *o = out;

	if (!out)
		return NULL;
	for (; *dir; dir++) {
		if (strchr("*?[]\\", *dir))
			*o++ = '\\';
		*o++ = *dir;
	}
	*o = 0;
	return out;
}

static int add_file(conv *c, recipe_corpus *k, const char *match, const char *rel)
{
	recipe_file *f;
	struct stat st;

	for (size_t i = 0; i < k->n_files; i++)
		if (strcmp(k->files[i].rel, rel) == 0)
			return fail(c, "corpus %s: %s is listed twice", k->name, rel);
	if (!utf8_valid(rel, strlen(rel)))
		return fail(c, "corpus %s: a file name is not valid UTF-8", k->name);
	if (stat(match, &st) != 0)
		return fail(c, "corpus %s: %s: %s", k->name, rel, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return fail(c, "corpus %s: %s is not a regular file", k->name, rel);
	f = realloc(k->files, (k->n_files + 1) * sizeof *f);
	if (!f)
		return err_set(c->e, "out of memory");
	k->files = f;
	f = &k->files[k->n_files];
	f->rel = strdup(rel);
	f->path = strdup(match);
	k->n_files++;
	if (!f->rel || !f->path)
		return err_set(c->e, "out of memory");
	return 0;
}

/* Expands one pattern of a corpus, matches in bytewise order. */
static int expand(conv *c, recipe_corpus *k, const char *written)
{
	char *pat = normalise(written), *full = NULL, *edir = NULL;
	size_t prefix = 0;
	glob_t g = { 0 };
	int rc = -1, grc;

	if (!pat)
		return err_set(c->e, "out of memory");
	if (pat[0] == '/') {
		full = strdup(pat);
	} else if ((edir = escape_glob(c->r->dir))) {
		size_t n = strlen(edir) + strlen(pat) + 2;

		if ((full = malloc(n)))
			snprintf(full, n, "%s/%s", edir, pat);
		prefix = strlen(c->r->dir) + 1;
	}
	if (!full) {
		free(pat);
		free(edir);
		return err_set(c->e, "out of memory");
	}
	grc = glob(full, GLOB_NOSORT | GLOB_MARK, NULL, &g);
	if (grc == GLOB_NOMATCH) {
		if (has_glob(pat))
			fail(c, "corpus %s: pattern \"%s\" matches no file (paths are relative to the recipe's folder)",
			     k->name, pat);
		else
			fail(c, "corpus %s: %s: no such file (paths are relative to the recipe's folder)", k->name, pat);
	} else if (grc != 0) {
		fail(c, "corpus %s: pattern \"%s\": cannot read the folders it names", k->name, pat);
	} else {
		qsort(g.gl_pathv, g.gl_pathc, sizeof *g.gl_pathv, cmp_str);
		rc = 0;
		for (size_t i = 0; i < g.gl_pathc && rc == 0; i++) {
			const char *m = g.gl_pathv[i];
			size_t ml = strlen(m);

			if (ml && m[ml - 1] == '/')
				rc = fail(c, "corpus %s: %s is a folder (name the files, e.g. \"%s*.txt\")",
					  k->name, m + (ml > prefix ? prefix : 0), m + (ml > prefix ? prefix : 0));
			else
				rc = add_file(c, k, m, m + (ml > prefix ? prefix : 0));
		}
	}
	globfree(&g);
	free(pat);
	free(full);
	free(edir);
	return grc == 0 ? rc : -1;
}

static int conv_corpus(conv *c, int t, recipe_corpus *k)
{
	lua_State *L = c->L;
	char d[100], what[128];
	const char *kind = kind_of(L, t, &k->line);
	size_t n;

	snprintf(what, sizeof what, "corpus %s", k->name);
	if (!kind || strcmp(kind, "text") != 0) {
		describe(L, t, d, sizeof d);
		return fail(c, "%s: expected text { \"file or pattern\", ... }, got %s", what, kind ? kind : d);
	}
	k->line = here(c);
	if (list_len(c, t, what, (const char *const[]){ NULL }, &n))
		return -1;
	if (n == 0)
		return fail(c, "%s: text { } names no file", what);
	for (size_t i = 1; i <= n; i++) {
		int rc;

		push_index(c, (long)i);
		if (lua_rawgeti(L, t, (lua_Integer)i) != LUA_TSTRING) {
			describe(L, -1, d, sizeof d);
			rc = fail(c, "%s: expected a file name or pattern, got %s", what, d);
		} else if (!lua_tostring(L, -1)[0]) {
			rc = fail(c, "%s: an empty file name", what);
		} else {
			rc = expand(c, k, lua_tostring(L, -1));
		}
		lua_pop(L, 1);
		pop_step(c);
		if (rc)
			return -1;
	}
	return 0;
}

static bool corpus_name_ok(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '.')
			return false;
	return true;
}

static int conv_corpora(conv *c, int t)
{
	lua_State *L = c->L;
	recipe *r = c->r;
	size_t first, n;
	char d[100];
	int ty;

	push_key(c, "corpora");
	ty = raw_field(L, t, "corpora");
	if (ty == LUA_TNIL) {
		lua_pop(L, 1);
		pop_step(c);
		return 0;
	}
	if (ty != LUA_TTABLE || kind_of(L, -1, NULL)) {
		describe(L, -1, d, sizeof d);
		fail(c, "corpora: expected { name = text { ... }, ... }, got %s", kind_of(L, -1, NULL) ? "text { }" : d);
		goto fail;
	}
	if (sorted_keys(c, -1, "corpora", &first, &n))
		goto fail;
	if (!(r->corpora = calloc(n ? n : 1, sizeof *r->corpora))) {
		err_set(c->e, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		const char *name = c->tmp[first + i];
		recipe_corpus *k = &r->corpora[r->n_corpora++];
		int rc;

		push_key(c, name);
		if (!dup_or_fail(c, name, &k->name)) {
			pop_step(c);
			goto fail;
		}
		if (!corpus_name_ok(name) || !utf8_valid(name, strlen(name))) {
			fail(c, "corpora: corpus name \"%.40s\": use letters, digits, '_', '-' and '.'", name);
			pop_step(c);
			goto fail;
		}
		lua_getfield(L, -1, name); /* the corpora table has no metatable */
		rc = conv_corpus(c, lua_gettop(L), k);
		lua_pop(L, 1);
		pop_step(c);
		if (rc)
			goto fail;
	}
	lua_pop(L, 1);
	pop_step(c);
	return 0;
fail:
	lua_pop(L, 1);
	pop_step(c);
	return -1;
}

static int find_corpus(conv *c, const char *name, const char *what, size_t *out)
{
	const char *cands[64] = { NULL };
	char list[400] = "";
	const char *s;
	size_t i;

	for (i = 0; i < c->r->n_corpora; i++) {
		if (strcmp(c->r->corpora[i].name, name) == 0) {
			*out = i;
			return 0;
		}
		if (i < 63)
			cands[i] = c->r->corpora[i].name;
		strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
		strncat(list, c->r->corpora[i].name, sizeof list - strlen(list) - 1);
	}
	push_key(c, "corpus");
	s = suggest(name, cands, i < 63 ? i : 63);
	if (c->r->n_corpora == 0)
		fail(c, "%s: corpus \"%.60s\" is not defined: the recipe has no corpora", what, name);
	else if (s)
		fail(c, "%s: corpus \"%.60s\" is not defined in corpora (did you mean \"%s\"?)", what, name, s);
	else
		fail(c, "%s: corpus \"%.60s\" is not defined in corpora (defined: %s)", what, name, list);
	pop_step(c);
	return -1;
}

/* Canonical tier name for s, or an error naming the valid tiers. */
static int tier_or_fail(conv *c, const char *s, const char *what, char out[16])
{
	const char *canon = tier_canon(s);
	const char *sug;

	if (canon) {
		snprintf(out, 16, "%s", canon);
		return 0;
	}
	if (find_name(unbuilt_tiers, s, true))
		return fail(c, "%sunknown tier \"%.40s\": qbake does not build IQ1_*, IQ2_*, IQ3_* or "
			    "ternary tiers (the IQ1/IQ2/IQ3_XXS ones would also need an importance matrix); "
			    "valid tiers: %s", what, s, tier_names());
	sug = suggest_tier(s);
	if (sug)
		return fail(c, "%sunknown tier \"%.40s\" (did you mean \"%s\"?); valid tiers: %s",
			    what, s, sug, tier_names());
	return fail(c, "%sunknown tier \"%.40s\"; valid tiers: %s", what, s, tier_names());
}

static int conv_imatrix(conv *c, int t)
{
	lua_State *L = c->L;
	recipe_imatrix *im = &c->r->imatrix;
	const char *kind, *s;
	char d[100];
	int ty, rc;

	push_key(c, "imatrix");
	ty = raw_field(L, t, "imatrix");
	t = lua_gettop(L);
	if (ty == LUA_TNIL || (ty == LUA_TBOOLEAN && !lua_toboolean(L, t))) {
		lua_pop(L, 1);
		pop_step(c);
		return 0;
	}
	im->line = here(c);
	kind = kind_of(L, t, NULL);
	if (kind && strcmp(kind, "file") == 0) {
		im->kind = RECIPE_IMATRIX_FILE;
		lua_getfield(L, t, "path");
		rc = resolve(c, lua_tostring(L, -1), &im->file, 0, "imatrix");
		lua_pop(L, 2);
		pop_step(c);
		return rc;
	}
	if (ty != LUA_TTABLE || kind) {
		describe(L, t, d, sizeof d);
		fail(c, "imatrix: expected { corpus = \"name\", ctx = 512, chunks = 64 } or file \"x.imatrix.gguf\", got %s",
		     kind ? kind : d);
		goto fail;
	}
	im->kind = RECIPE_IMATRIX_COMPUTE;
	im->ctx = 512;
	if (check_keys(c, t, imatrix_fields, "imatrix", false) || (rc = get_string(c, t, "corpus", "imatrix", &s)) < 0)
		goto fail;
	if (rc == 0) {
		fail(c, "imatrix: field corpus is required (the calibration corpus)");
		goto fail;
	}
	if (find_corpus(c, s, "imatrix", &im->corpus) ||
	    get_int(c, t, "ctx", "imatrix", 8, 1 << 20, &im->ctx) < 0 ||
	    get_int(c, t, "chunks", "imatrix", 0, 1 << 30, &im->chunks) < 0 ||
	    (rc = get_string(c, t, "from", "imatrix", &s)) < 0)
		goto fail;
	if (rc) {
		push_key(c, "from");
		rc = tier_or_fail(c, s, "imatrix: field from: ", im->from);
		pop_step(c);
		if (rc)
			goto fail;
	}
	lua_pop(L, 1);
	pop_step(c);
	return 0;
fail:
	lua_pop(L, 1);
	pop_step(c);
	return -1;
}

/* The ggml type named s if the quantizer can write it; else an error listing those it can. */
static bool type_or_fail(conv *c, const char *s, const char *what, const char *key, char out[8])
{
	const char *names[GGUF_TYPE_COUNT + 1] = { NULL };
	char list[400] = "";
	size_t n = 0;
	int id = gguf_type_by_name(s);
	const char *sug;

	if (id >= 0 && quant_can_quantize((uint32_t)id)) {
		snprintf(out, 8, "%s", gguf_type((uint32_t)id)->name);
		return true;
	}
	for (uint32_t t = 0; t < GGUF_TYPE_COUNT; t++) {
		if (!gguf_type(t) || !quant_can_quantize(t))
			continue;
		names[n++] = gguf_type(t)->name;
		strncat(list, n > 1 ? ", " : "", sizeof list - strlen(list) - 1);
		strncat(list, gguf_type(t)->name, sizeof list - strlen(list) - 1);
	}
	sug = suggest(s, names, n);
	fail(c, "%s: field %s: unknown tensor type \"%.40s\"%s%s%s; valid types: %s", what, key, s,
	     sug ? " (did you mean \"" : "", sug ? sug : "", sug ? "\"?)" : "", list);
	return false;
}

static int conv_tensor_types(conv *c, int t, recipe_tier *tier, const char *what)
{
	lua_State *L = c->L;
	size_t n;
	char d[100];
	int ty, rc = 0;

	push_key(c, "tensor_types");
	ty = raw_field(L, t, "tensor_types");
	t = lua_gettop(L);
	if (ty == LUA_TNIL)
		goto done;
	if (ty != LUA_TTABLE || kind_of(L, t, NULL)) {
		describe(L, t, d, sizeof d);
		rc = fail(c, "%s: field tensor_types: expected a list like { \"attn_v=Q8_0\" }, got %s", what, d);
		goto done;
	}
	if ((rc = list_len(c, t, what, (const char *const[]){ NULL }, &n)))
		goto done;
	if (!(tier->tensor_types = calloc(n ? n : 1, sizeof *tier->tensor_types))) {
		rc = err_set(c->e, "out of memory");
		goto done;
	}
	for (size_t i = 1; i <= n && rc == 0; i++) {
		recipe_tensor_type *tt = &tier->tensor_types[tier->n_tensor_types];
		tier_rule *rule = calloc(1, sizeof *rule);
		err re = { 0 };
		const char *s, *eq;
		int vt = lua_rawgeti(L, t, (lua_Integer)i);

		push_index(c, (long)i);
		if (!rule) {
			rc = err_set(c->e, "out of memory");
		} else if (vt != LUA_TSTRING) {
			describe(L, -1, d, sizeof d);
			rc = fail(c, "%s: tensor_types: expected \"REGEX=TYPE\", got %s", what, d);
		} else if (!(eq = strchr(s = lua_tostring(L, -1), '=')) || eq == s ||
			   !utf8_valid(s, strlen(s))) {
			rc = fail(c, "%s: tensor_types: expected \"REGEX=TYPE\", got \"%.60s\"", what, s);
		} else if (type_or_fail(c, eq + 1, what, "tensor_types", tt->type)) {
			/* quantize's own parser, so the recipe accepts exactly what it will apply */
			if (tier_rule_parse(rule, s, &re) != 0) {
				const char *why = strstr(re.msg, "': ");

				rc = fail(c, "%s: tensor_types: \"%.60s\": %s", what, s, why ? why + 3 : re.msg);
			}
			else if (!(tt->pattern = strdup(rule->pattern)))
				rc = err_set(c->e, "out of memory");
			else
				tier->n_tensor_types++;
		} else {
			rc = -1;
		}
		if (rule)
			tier_rules_free(rule, rule->pattern ? 1 : 0);
		lua_pop(L, 1);
		pop_step(c);
	}
done:
	lua_pop(L, 1);
	pop_step(c);
	return rc;
}

static int conv_tier(conv *c, int t, recipe_tier *tier)
{
	lua_State *L = c->L;
	char d[100], what[64];
	const char *s = NULL;
	int ty = lua_type(L, t);

	tier->line = here(c);
	if (ty == LUA_TSTRING)
		return tier_or_fail(c, lua_tostring(L, t), "", tier->name);
	if (ty != LUA_TTABLE || kind_of(L, t, NULL)) {
		describe(L, t, d, sizeof d);
		return fail(c, "tiers: expected a tier name or { \"Q4_K_M\", option = ... }, got %s", d);
	}
	if (lua_rawlen(L, t) != 1 || lua_rawgeti(L, t, 1) != LUA_TSTRING) {
		if (lua_rawlen(L, t) == 1)
			lua_pop(L, 1);
		return fail(c, "tiers: a tier with options is written { \"Q4_K_M\", pure = true }: one name first");
	}
	s = lua_tostring(L, -1);
	lua_pop(L, 1);
	push_index(c, 1);
	if (tier_or_fail(c, s, "", tier->name)) {
		pop_step(c);
		return -1;
	}
	pop_step(c);
	snprintf(what, sizeof what, "tier %s", tier->name);
	if (list_len(c, t, what, tier_fields, &(size_t){ 0 }) ||
	    get_bool(c, t, "pure", what, &tier->pure) < 0 ||
	    get_bool(c, t, "leave_output_tensor", what, &tier->leave_output_tensor) < 0)
		return -1;
	s = NULL;
	if (get_string(c, t, "output_tensor_type", what, &s) < 0)
		return -1;
	push_key(c, "output_tensor_type");
	if (s && !type_or_fail(c, s, what, "output_tensor_type", tier->output_tensor_type)) {
		pop_step(c);
		return -1;
	}
	pop_step(c);
	s = NULL;
	if (get_string(c, t, "token_embedding_type", what, &s) < 0)
		return -1;
	push_key(c, "token_embedding_type");
	if (s && !type_or_fail(c, s, what, "token_embedding_type", tier->token_embedding_type)) {
		pop_step(c);
		return -1;
	}
	pop_step(c);
	if (tier->leave_output_tensor && tier->output_tensor_type[0])
		return fail(c, "%s: leave_output_tensor and output_tensor_type contradict each other", what);
	return conv_tensor_types(c, t, tier, what);
}

static int conv_tiers(conv *c, int t)
{
	lua_State *L = c->L;
	recipe *r = c->r;
	size_t n;
	char d[100];
	int ty, rc = -1;

	push_key(c, "tiers");
	ty = raw_field(L, t, "tiers");
	t = lua_gettop(L);
	if (ty == LUA_TNIL) {
		fail(c, "release: field tiers is required (e.g. tiers = { \"Q8_0\", \"Q4_K_M\" })");
		goto done;
	}
	if (ty != LUA_TTABLE || kind_of(L, t, NULL)) {
		describe(L, t, d, sizeof d);
		fail(c, "tiers: expected a list of tier names, got %s", ty == LUA_TSTRING ? "a string (write tiers = { \"...\" })" : d);
		goto done;
	}
	if (list_len(c, t, "tiers", (const char *const[]){ NULL }, &n))
		goto done;
	if (n == 0) {
		fail(c, "tiers: the list is empty");
		goto done;
	}
	if (!(r->tiers = calloc(n, sizeof *r->tiers))) {
		err_set(c->e, "out of memory");
		goto done;
	}
	for (size_t i = 1; i <= n; i++) {
		recipe_tier *tier = &r->tiers[r->n_tiers++];
		int trc;

		push_index(c, (long)i);
		lua_rawgeti(L, t, (lua_Integer)i);
		trc = conv_tier(c, lua_gettop(L), tier);
		lua_pop(L, 1);
		for (size_t j = 0; trc == 0 && j + 1 < r->n_tiers; j++)
			if (strcmp(r->tiers[j].name, tier->name) == 0)
				trc = fail(c, "tiers: %s is listed twice (first at line %d)", tier->name, r->tiers[j].line);
		if (trc == 0 && tier->pure)
			trc = warn_here(c, "tier %s: pure = true quantizes every tensor to one type, without the "
					"per-tensor mixture; expect lower quality", tier->name);
		if (trc == 0 && (strncmp(tier->name, "Q2_K", 4) == 0 || strncmp(tier->name, "Q3_K", 4) == 0))
			trc = warn_here(c, "tier %s: 2- and 3-bit K-quant tiers lose much quality on models under "
					"13 B parameters", tier->name);
		pop_step(c);
		if (trc)
			goto done;
	}
	rc = 0;
done:
	lua_pop(L, 1);
	pop_step(c);
	return rc;
}

static int conv_eval(conv *c, int t)
{
	lua_State *L = c->L;
	recipe_eval *ev = &c->r->eval;
	const char *s;
	char d[100];
	int ty, rc = -1;

	push_key(c, "eval");
	ty = raw_field(L, t, "eval");
	t = lua_gettop(L);
	if (ty == LUA_TNIL) {
		rc = 0;
		goto done;
	}
	ev->line = here(c);
	if (ty != LUA_TTABLE || kind_of(L, t, NULL)) {
		describe(L, t, d, sizeof d);
		fail(c, "eval: expected { corpus = \"name\", ctx = 512, chunks = 64 }, got %s", d);
		goto done;
	}
	ev->set = true;
	ev->ctx = 512;
	ev->predict = 32;
	if (check_keys(c, t, eval_fields, "eval", false) || (rc = get_string(c, t, "corpus", "eval", &s)) < 0)
		goto fail;
	if (rc == 0) {
		fail(c, "eval: field corpus is required (the held-out evaluation corpus)");
		goto fail;
	}
	if (find_corpus(c, s, "eval", &ev->corpus) ||
	    get_int(c, t, "ctx", "eval", 8, 1 << 20, &ev->ctx) < 0 ||
	    get_int(c, t, "chunks", "eval", 0, 1 << 30, &ev->chunks) < 0 ||
	    get_int(c, t, "predict", "eval", 1, 4096, &ev->predict) < 0 ||
	    (rc = get_string(c, t, "prompts", "eval", &s)) < 0)
		goto fail;
	if (rc) {
		push_key(c, "prompts");
		rc = resolve(c, s, &ev->prompts, 0, "eval: prompts");
		pop_step(c);
		if (rc)
			goto fail;
	}
	rc = 0;
	goto done;
fail:
	rc = -1;
done:
	lua_pop(L, 1);
	pop_step(c);
	return rc;
}

static int conv_gate(conv *c, int t, recipe_gate *g, const char *what)
{
	lua_State *L = c->L;
	const char *s;
	char d[100];
	double kld = NAN;
	int rc;

	g->max_ppl_increase = g->max_kld = g->min_same_top = NAN;
	g->line = here(c);
	if (lua_type(L, t) != LUA_TTABLE || kind_of(L, t, NULL)) {
		describe(L, t, d, sizeof d);
		return fail(c, "%s: expected { max_ppl_increase = \"5%%\", max_kld = 0.05, min_same_top = \"90%%\", "
			    "fallback = \"Q5_K_M\" }, got %s", what, d);
	}
	if (check_keys(c, t, gate_fields, what, false) ||
	    get_percent(c, t, "max_ppl_increase", what, 1e6, &g->max_ppl_increase) < 0 ||
	    get_percent(c, t, "min_same_top", what, 100, &g->min_same_top) < 0)
		return -1;
	if (raw_field(L, t, "max_kld") != LUA_TNIL) {
		push_key(c, "max_kld");
		if (lua_type(L, -1) != LUA_TNUMBER || !((kld = lua_tonumber(L, -1)) >= 0) || !isfinite(kld)) {
			describe(L, -1, d, sizeof d);
			fail(c, "%s: field max_kld: expected a number of nats >= 0 (e.g. 0.05), got %s", what, d);
			lua_pop(L, 1);
			pop_step(c);
			return -1;
		}
		g->max_kld = kld;
		pop_step(c);
	}
	lua_pop(L, 1);
	if ((rc = get_string(c, t, "fallback", what, &s)) < 0)
		return -1;
	if (rc) {
		char pre[128];

		snprintf(pre, sizeof pre, "%s: field fallback: ", what);
		push_key(c, "fallback");
		rc = tier_or_fail(c, s, pre, g->fallback);
		if (rc == 0 && strcmp(g->fallback, g->tier) == 0)
			rc = fail(c, "%s: a tier cannot fall back to itself", what);
		pop_step(c);
		if (rc)
			return -1;
	}
	if (isnan(g->max_ppl_increase) && isnan(g->max_kld) && isnan(g->min_same_top))
		return fail(c, "%s: the gate sets no limit (max_ppl_increase, max_kld or min_same_top)", what);
	return 0;
}

static int cmp_gate(const void *a, const void *b)
{
	return strcmp(((const recipe_gate *)a)->tier, ((const recipe_gate *)b)->tier);
}

static bool in_tiers(const recipe *r, const char *name)
{
	for (size_t i = 0; i < r->n_tiers; i++)
		if (strcmp(r->tiers[i].name, name) == 0)
			return true;
	return false;
}

static int conv_gates(conv *c, int t)
{
	lua_State *L = c->L;
	recipe *r = c->r;
	size_t first, n;
	char d[100];
	int ty, rc = -1;

	push_key(c, "gates");
	ty = raw_field(L, t, "gates");
	t = lua_gettop(L);
	if (ty == LUA_TNIL) {
		rc = 0;
		goto done;
	}
	if (ty != LUA_TTABLE || kind_of(L, t, NULL)) {
		describe(L, t, d, sizeof d);
		fail(c, "gates: expected { [\"*\"] = { ... }, Q4_K_M = { ... } }, got %s", d);
		goto done;
	}
	if (!r->eval.set) {
		fail(c, "gates need eval = { corpus = ... }: without an evaluation there is nothing to gate on");
		goto done;
	}
	if (sorted_keys(c, t, "gates", &first, &n))
		goto done;
	if (!(r->gates = calloc(n ? n : 1, sizeof *r->gates))) {
		err_set(c->e, "out of memory");
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		const char *key = c->tmp[first + i];
		recipe_gate *g = &r->gates[r->n_gates++];
		char what[64];
		int grc = 0;

		push_key(c, key);
		if (strcmp(key, "*") == 0)
			snprintf(g->tier, sizeof g->tier, "*");
		else
			grc = tier_or_fail(c, key, "gates: ", g->tier);
		for (size_t j = 0; grc == 0 && j + 1 < r->n_gates; j++)
			if (strcmp(r->gates[j].tier, g->tier) == 0)
				grc = fail(c, "gates: two gates for %s", g->tier);
		snprintf(what, sizeof what, "gates[\"%s\"]", g->tier);
		if (grc == 0) {
			lua_getfield(L, t, key);
			grc = conv_gate(c, lua_gettop(L), g, what);
			lua_pop(L, 1);
		}
		pop_step(c);
		if (grc)
			goto done;
	}
	/* A gate names a tier that is built: listed, or some gate's fallback. */
	for (size_t i = 0; i < r->n_gates; i++) {
		recipe_gate *g = &r->gates[i];
		bool used = strcmp(g->tier, "*") == 0 || in_tiers(r, g->tier);

		for (size_t j = 0; !used && j < r->n_gates; j++)
			used = strcmp(r->gates[j].fallback, g->tier) == 0;
		if (!used) {
			push_key(c, c->tmp[first + i]);
			fail(c, "gates: %s is not in tiers and no gate falls back to it", g->tier);
			pop_step(c);
			goto done;
		}
	}
	qsort(r->gates, r->n_gates, sizeof *r->gates, cmp_gate);
	/* Fallback chains must end: follow each tier's gate until a tier with no fallback. */
	for (size_t i = 0; i < r->n_tiers; i++) {
		const char *chain[40];
		size_t len = 0;
		const char *cur = r->tiers[i].name;

		while (cur && len < 40) {
			const recipe_gate *g = recipe_gate_for(r, cur);
			char msg[600] = "";

			chain[len++] = cur;
			cur = g && g->fallback[0] ? g->fallback : NULL;
			for (size_t j = 0; cur && j < len; j++) {
				if (strcmp(chain[j], cur) != 0)
					continue;
				for (size_t k = 0; k < len; k++) {
					strncat(msg, chain[k], sizeof msg - strlen(msg) - 1);
					strncat(msg, " -> ", sizeof msg - strlen(msg) - 1);
				}
				strncat(msg, cur, sizeof msg - strlen(msg) - 1);
				fail(c, "gates: the fallbacks go round in a circle: %s (a gate for \"*\" applies to "
				     "fallback tiers too; give the last tier a gate of its own)", msg);
				goto done;
			}
		}
	}
	rc = 0;
done:
	lua_pop(L, 1);
	pop_step(c);
	return rc;
}

static int conv_override(conv *c, int t, const char *name, recipe_override *o)
{
	lua_State *L = c->L;
	char what[64], d[100];
	const char *s;
	int rc;
	bool overlap = strcmp(name, "eval_overlap") == 0;

	snprintf(what, sizeof what, "rules.%s", name);
	o->line = here(c);
	if (lua_type(L, t) != LUA_TTABLE || kind_of(L, t, NULL)) {
		describe(L, t, d, sizeof d);
		return fail(c, "%s: expected { %sreason = \"why\" }, got %s", what, overlap ? "max = \"2%\", " : "", d);
	}
	if (check_keys(c, t, overlap ? overlap_fields : reason_fields, what, false))
		return -1;
	if (overlap) {
		if ((rc = get_percent(c, t, "max", what, 100, &o->max)) < 0)
			return -1;
		if (rc == 0)
			return fail(c, "%s: field max is required (the overlap to accept, e.g. \"2%%\")", what);
	}
	if ((rc = get_string(c, t, "reason", what, &s)) < 0)
		return -1;
	while (rc && isspace((unsigned char)*s))
		s++;
	if (rc == 0 || !*s)
		return fail(c, "%s: an override needs a written reason (reason = \"why this is acceptable\"); "
			    "it is recorded in the lock file", what);
	push_key(c, "reason");
	if (!utf8_valid(s, strlen(s))) {
		fail(c, "%s: the reason is not valid UTF-8", what);
		pop_step(c);
		return -1;
	}
	pop_step(c);
	if (!dup_or_fail(c, s, &o->reason))
		return -1;
	o->set = true;
	return 0;
}

static int conv_rules(conv *c, int t)
{
	lua_State *L = c->L;
	char d[100];
	int ty, rc = -1;

	push_key(c, "rules");
	ty = raw_field(L, t, "rules");
	t = lua_gettop(L);
	if (ty == LUA_TNIL) {
		rc = 0;
		goto done;
	}
	if (ty != LUA_TTABLE || kind_of(L, t, NULL)) {
		describe(L, t, d, sizeof d);
		fail(c, "rules: expected { eval_overlap = { ... }, requantized_baseline = { ... } }, got %s", d);
		goto done;
	}
	if (check_keys(c, t, rule_names, "rules", false))
		goto done;
	for (size_t i = 0; rule_names[i]; i++) {
		recipe_override *o = i == 0 ? &c->r->eval_overlap : &c->r->requantized_baseline;
		int orc = 0;

		push_key(c, rule_names[i]);
		if (raw_field(L, t, rule_names[i]) != LUA_TNIL)
			orc = conv_override(c, lua_gettop(L), rule_names[i], o);
		if (orc == 0 && i == 0 && o->set &&
		    !(c->r->eval.set && c->r->imatrix.kind == RECIPE_IMATRIX_COMPUTE))
			orc = warn_here(c, "rules.eval_overlap has no effect: there is no eval corpus and "
					"calibration corpus to compare");
		lua_pop(L, 1);
		pop_step(c);
		if (orc)
			goto done;
	}
	rc = 0;
done:
	lua_pop(L, 1);
	pop_step(c);
	return rc;
}

/* Held-out evaluation, checked as far as file names allow: the engine measures overlap. */
static int check_held_out(conv *c)
{
	recipe *r = c->r;
	const recipe_corpus *cal, *ev;

	if (r->imatrix.kind != RECIPE_IMATRIX_COMPUTE || !r->eval.set)
		return 0;
	cal = &r->corpora[r->imatrix.corpus];
	ev = &r->corpora[r->eval.corpus];
	push_key(c, "eval");
	push_key(c, "corpus");
	if (cal == ev) {
		fail(c, "eval: corpus \"%s\" is also the imatrix's calibration corpus: evaluation needs "
		     "held-out text (define a separate corpus)", ev->name);
		goto fail;
	}
	for (size_t i = 0; i < ev->n_files; i++) {
		struct stat a, b;

		if (stat(ev->files[i].path, &a) != 0)
			continue;
		for (size_t j = 0; j < cal->n_files; j++) {
			if (stat(cal->files[j].path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
				fail(c, "eval: corpus \"%s\" and the calibration corpus \"%s\" share the file %s: "
				     "evaluation needs held-out text", ev->name, cal->name, ev->files[i].rel);
				goto fail;
			}
		}
	}
	pop_step(c);
	pop_step(c);
	return 0;
fail:
	pop_step(c);
	pop_step(c);
	return -1;
}

static bool name_ok(const char *s)
{
	if (!isalnum((unsigned char)*s) || strlen(s) > 200)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("._-", *s))
			return false;
	return true;
}

/* Runs under lua_pcall: only a Lua memory error leaves it early; everything the walk
 * allocates is attached to the recipe (or c->tmp) at once, so nothing leaks then. */
static int conv_main(lua_State *L)
{
	conv *c = lua_touserdata(L, 1);
	recipe *r = c->r;
	int t;

	if (lua_getfield(L, LUA_REGISTRYINDEX, "qbake.release") != LUA_TTABLE) {
		err_set(c->e, "%s: no release in this file: a recipe is release \"name\" { model = ..., tiers = { ... } }",
			r->path);
		return 0;
	}
	lua_getfield(L, -1, "line");
	r->line = (int)lua_tointeger(L, -1);
	lua_getfield(L, -2, "name");
	if (!name_ok(lua_tostring(L, -1))) {
		fail(c, "release name \"%.60s\": use letters, digits, '.', '_' and '-', starting with a letter "
		     "or digit (it names the output files)", lua_tostring(L, -1));
		return 0;
	}
	if (!dup_or_fail(c, lua_tostring(L, -1), &r->name))
		return 0;
	lua_getfield(L, -3, "body");
	t = lua_gettop(L);
	if (check_keys(c, t, release_fields, "release", false))
		return 0;
	if (raw_field(L, t, "model") == LUA_TNIL) {
		fail(c, "release: field model is required (hf { path = ... }, gguf { path = ... } or git { ... })");
		return 0;
	}
	if (conv_model(c, lua_gettop(L)))
		return 0;
	lua_pop(L, 1);
	/* Each step records its error in c->e; the first failing one stops the walk. */
	if (conv_baseline(c, t) == 0 && conv_corpora(c, t) == 0 && conv_imatrix(c, t) == 0 &&
	    conv_tiers(c, t) == 0 && conv_eval(c, t) == 0 && conv_gates(c, t) == 0 && conv_rules(c, t) == 0)
		check_held_out(c);
	return 0;
}

/* ---- loading -------------------------------------------------------------------------- */

static char *dir_of(const char *path, err *e)
{
	const char *slash = strrchr(path, '/');
	char *dir, *real;

	if (!slash)
		dir = strdup(".");
	else if (slash == path)
		dir = strdup("/");
	else
		dir = strndup(path, (size_t)(slash - path));
	if (!dir) {
		err_set(e, "out of memory");
		return NULL;
	}
	real = realpath(dir, NULL);
	if (!real)
		err_errno(e, "%s: cannot resolve the recipe's folder %s", path, dir);
	free(dir);
	return real;
}

/* Turns a failed chunk run into one message: the limits first, since a recipe may have
 * caught their error and raised another one. */
static void run_error(lua_State *L, int status, const sandbox *sb, const char *path, err *e)
{
	const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;

	if (sb->instr_hit) {
		err_set(e, "%s:%d: instruction limit exceeded (%llu instructions): the recipe runs too long "
			"(an endless loop?)", path, sb->instr_line, (unsigned long long)sb->limit);
	} else if (sb->time_hit) {
		err_set(e, "%s:%d: time limit exceeded (%g s of CPU): the recipe runs too long", path,
			sb->time_line, sb->cpu_limit);
	} else if (status == LUA_ERRMEM || (sb->mem_hit && msg && strstr(msg, "not enough memory"))) {
		err_set(e, "%s: memory limit exceeded (a recipe may use %zu MiB)", path, sb->cap >> 20);
	} else if (msg && sb->mem_hit && strstr(msg, "memory limit exceeded")) {
		err_set(e, "%s (a recipe may use %zu MiB)", msg, sb->cap >> 20);
	} else if (msg && strstr(msg, "stack overflow")) {
		err_set(e, "%s (recursion too deep)", msg);
	} else if (msg) {
		err_set(e, "%s", msg);
	} else {
		err_set(e, "%s: the recipe raised an error that is not a string", path);
	}
}

recipe *recipe_load_buffer(const char *path, const char *src, size_t len, const recipe_limits *lim, err *e)
{
	recipe *r = calloc(1, sizeof *r);
	lexed lx = { 0 };
	sandbox sb = { 0 };
	conv c = { 0 };
	lua_State *L = NULL;
	char *chunkname = NULL;
	err local = { 0 };
	int status;

	if (!e)
		e = &local; /* the walk reads back what it recorded */

	if (!r || !(r->path = strdup(path))) {
		free(r);
		err_set(e, "out of memory");
		return NULL;
	}
	if (!(r->dir = dir_of(path, e)))
		goto fail;
	if (len > MAX_RECIPE_BYTES) {
		err_set(e, "%s: %zu bytes: a recipe is a small declarative file (at most 1 MiB)", path, len);
		goto fail;
	}
	if (lex(&lx, src, len) || !(chunkname = malloc(strlen(path) + 2))) {
		err_set(e, "out of memory");
		goto fail;
	}
	sprintf(chunkname, "@%s", path);
	sb.cap = lim && lim->memory ? lim->memory : DEFAULT_MEMORY;
	sb.limit = lim && lim->instructions ? lim->instructions : DEFAULT_INSTRUCTIONS;
	sb.cpu_limit = lim && lim->seconds > 0 ? lim->seconds : DEFAULT_SECONDS;
	if (!(L = lua_newstate(sb_alloc, &sb))) {
		err_set(e, "%s: cannot create a Lua state", path);
		goto fail;
	}
	lua_pushcfunction(L, sb_open);
	if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
		err_set(e, "%s: cannot set up the recipe sandbox: %s", path, lua_tostring(L, -1));
		goto fail;
	}
	status = luaL_loadbufferx(L, src, len, chunkname, "t");
	if (status != LUA_OK) {
		run_error(L, status, &sb, path, e);
		goto fail;
	}
	sb.cpu_start = cpu_now();
	lua_sethook(L, sb_hook, LUA_MASKCOUNT, HOOK_STEP);
	status = lua_pcall(L, 0, 0, 0);
	if (status != LUA_OK || sb.instr_hit || sb.time_hit) {
		run_error(L, status, &sb, path, e);
		goto fail;
	}
	lua_sethook(L, NULL, 0, 0);
	c = (conv){ .L = L, .r = r, .lx = &lx, .e = e };
	lua_pushcfunction(L, conv_main);
	lua_pushlightuserdata(L, &c);
	status = lua_pcall(L, 1, 0, 0);
	if (status != LUA_OK)
		err_set(e, "%s: memory limit exceeded while reading the recipe", path);
	if (e->set)
		goto fail;
	for (size_t i = 0; i < c.n_tmp; i++)
		free(c.tmp[i]);
	free(c.tmp);
	lua_close(L);
	free(lx.t);
	free(chunkname);
	return r;
fail:
	for (size_t i = 0; i < c.n_tmp; i++)
		free(c.tmp[i]);
	free(c.tmp);
	if (L)
		lua_close(L);
	free(lx.t);
	free(chunkname);
	recipe_free(r);
	return NULL;
}

recipe *recipe_load(const char *path, const recipe_limits *lim, err *e)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *buf;
	size_t got = 0;
	recipe *r;

	if (fd < 0) {
		err_errno(e, "%s: cannot open the recipe", path);
		return NULL;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		err_set(e, "%s: not a regular file", path);
		close(fd);
		return NULL;
	}
	if ((uint64_t)st.st_size > MAX_RECIPE_BYTES) {
		err_set(e, "%s: %lld bytes: a recipe is a small declarative file (at most 1 MiB)", path,
			(long long)st.st_size);
		close(fd);
		return NULL;
	}
	if (!(buf = malloc((size_t)st.st_size + 1))) {
		err_set(e, "out of memory");
		close(fd);
		return NULL;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n < 0)
				err_errno(e, "%s: cannot read the recipe", path);
			else
				err_set(e, "%s: the file shrank while being read", path);
			free(buf);
			close(fd);
			return NULL;
		}
		got += (size_t)n;
	}
	close(fd);
	r = recipe_load_buffer(path, buf, got, lim, e);
	free(buf);
	return r;
}

static void file_free(recipe_file *f)
{
	free(f->rel);
	free(f->path);
}

void recipe_free(recipe *r)
{
	if (!r)
		return;
	free(r->path);
	free(r->dir);
	free(r->name);
	file_free(&r->model.local);
	free(r->model.url);
	free(r->model.url_open);
	free(r->model.commit);
	free(r->model.ref);
	free(r->model.subdir);
	file_free(&r->model.lfs);
	for (size_t i = 0; i < r->n_corpora; i++) {
		for (size_t j = 0; j < r->corpora[i].n_files; j++)
			file_free(&r->corpora[i].files[j]);
		free(r->corpora[i].files);
		free(r->corpora[i].name);
	}
	free(r->corpora);
	file_free(&r->imatrix.file);
	for (size_t i = 0; i < r->n_tiers; i++) {
		for (size_t j = 0; j < r->tiers[i].n_tensor_types; j++)
			free(r->tiers[i].tensor_types[j].pattern);
		free(r->tiers[i].tensor_types);
	}
	free(r->tiers);
	file_free(&r->eval.prompts);
	free(r->gates);
	free(r->eval_overlap.reason);
	free(r->requantized_baseline.reason);
	for (size_t i = 0; i < r->n_warnings; i++)
		free(r->warnings[i]);
	free(r->warnings);
	free(r);
}

/* ---- the canonical form --------------------------------------------------------------- */

typedef struct canon {
	recipe_digest_fn digest;
	void *ctx;
	err *e;
	bool bad; /* an allocation failed: the result would silently lack a key */
} canon;

static void put(canon *k, json_t *o, const char *key, json_t *v)
{
	if (!v || json_object_set_new(o, key, v) != 0)
		k->bad = true;
}

static void append(canon *k, json_t *a, json_t *v)
{
	if (!v || json_array_append_new(a, v) != 0)
		k->bad = true;
}

static json_t *file_json(canon *k, const recipe_file *f, bool is_dir)
{
	char hex[65], buf[80];

	if (!k->digest)
		return json_string(f->rel);
	if (k->digest(f->path, is_dir, hex, k->ctx, k->e) != 0)
		return NULL;
	snprintf(buf, sizeof buf, "sha256:%.64s", hex);
	return json_string(buf);
}

static void put_limit(canon *k, json_t *o, const char *key, double v)
{
	if (!isnan(v))
		put(k, o, key, json_real(v));
}

static json_t *canon_tiers(canon *k, const recipe *r)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < r->n_tiers; i++) {
		const recipe_tier *t = &r->tiers[i];
		json_t *o = json_object(), *tt = json_array();

		put(k, o, "name", json_string(t->name));
		put(k, o, "pure", json_boolean(t->pure));
		put(k, o, "leave_output_tensor", json_boolean(t->leave_output_tensor));
		put(k, o, "output_tensor_type", json_string(t->output_tensor_type));
		put(k, o, "token_embedding_type", json_string(t->token_embedding_type));
		for (size_t j = 0; tt && j < t->n_tensor_types; j++) {
			json_t *p = json_array();

			append(k, p, json_string(t->tensor_types[j].pattern));
			append(k, p, json_string(t->tensor_types[j].type));
			append(k, tt, p);
		}
		put(k, o, "tensor_types", tt);
		append(k, a, o);
	}
	return a;
}

static json_t *canon_model(canon *k, const recipe *r)
{
	const recipe_model *m = &r->model;
	json_t *o = json_object();

	if (m->kind == RECIPE_MODEL_GIT) {
		/* The lfs folder is only where verified objects are found: not part of the meaning. */
		put(k, o, "kind", json_string("git"));
		put(k, o, "url", json_string(m->url));
		put(k, o, "commit", m->commit ? json_string(m->commit) : json_null());
		put(k, o, "ref", m->ref ? json_string(m->ref) : json_null());
		put(k, o, "subdir", json_string(m->subdir ? m->subdir : "."));
	} else {
		put(k, o, "kind", json_string(m->kind == RECIPE_MODEL_HF ? "hf" : "gguf"));
		put(k, o, "path", file_json(k, &m->local, m->kind == RECIPE_MODEL_HF));
	}
	return o;
}

char *recipe_canonical(const recipe *r, recipe_digest_fn digest, void *ctx, size_t *len, err *e)
{
	canon k = { digest, ctx, e, false };
	json_t *root = json_object(), *corpora = json_object(), *gates = json_object(), *rules = json_object();
	char *out = NULL;

	put(&k, root, "qbake_recipe", json_integer(1));
	put(&k, root, "name", json_string(r->name));
	put(&k, root, "model", canon_model(&k, r));
	put(&k, root, "baseline", json_string(recipe_baseline_name(r->baseline)));
	for (size_t i = 0; corpora && i < r->n_corpora; i++) {
		json_t *files = json_array();

		for (size_t j = 0; files && j < r->corpora[i].n_files; j++)
			append(&k, files, file_json(&k, &r->corpora[i].files[j], false));
		put(&k, corpora, r->corpora[i].name, files);
	}
	put(&k, root, "corpora", corpora);
	if (r->imatrix.kind == RECIPE_IMATRIX_COMPUTE) {
		json_t *o = json_object();

		put(&k, o, "corpus", json_string(r->corpora[r->imatrix.corpus].name));
		put(&k, o, "ctx", json_integer(r->imatrix.ctx));
		put(&k, o, "chunks", json_integer(r->imatrix.chunks));
		put(&k, o, "from", json_string(r->imatrix.from));
		put(&k, root, "imatrix", o);
	} else if (r->imatrix.kind == RECIPE_IMATRIX_FILE) {
		json_t *o = json_object();

		put(&k, o, "file", file_json(&k, &r->imatrix.file, false));
		put(&k, root, "imatrix", o);
	}
	put(&k, root, "tiers", canon_tiers(&k, r));
	if (r->eval.set) {
		json_t *o = json_object();

		put(&k, o, "corpus", json_string(r->corpora[r->eval.corpus].name));
		put(&k, o, "ctx", json_integer(r->eval.ctx));
		put(&k, o, "chunks", json_integer(r->eval.chunks));
		put(&k, o, "predict", json_integer(r->eval.predict));
		if (r->eval.prompts.rel)
			put(&k, o, "prompts", file_json(&k, &r->eval.prompts, false));
		put(&k, root, "eval", o);
	}
	for (size_t i = 0; gates && i < r->n_gates; i++) {
		const recipe_gate *g = &r->gates[i];
		json_t *o = json_object();

		put_limit(&k, o, "max_ppl_increase", g->max_ppl_increase);
		put_limit(&k, o, "max_kld", g->max_kld);
		put_limit(&k, o, "min_same_top", g->min_same_top);
		if (g->fallback[0])
			put(&k, o, "fallback", json_string(g->fallback));
		put(&k, gates, g->tier, o);
	}
	put(&k, root, "gates", gates);
	if (r->eval_overlap.set) {
		json_t *o = json_object();

		put(&k, o, "max", json_real(r->eval_overlap.max));
		put(&k, o, "reason", json_string(r->eval_overlap.reason));
		put(&k, rules, "eval_overlap", o);
	}
	if (r->requantized_baseline.set) {
		json_t *o = json_object();

		put(&k, o, "reason", json_string(r->requantized_baseline.reason));
		put(&k, rules, "requantized_baseline", o);
	}
	put(&k, root, "rules", rules);
	if (e && e->set) {
		json_decref(root);
		return NULL;
	}
	if (!k.bad && root)
		out = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
	json_decref(root);
	if (!out) {
		err_set(e, "%s: cannot encode the recipe (out of memory)", r->path);
		return NULL;
	}
	if (len)
		*len = strlen(out);
	return out;
}
