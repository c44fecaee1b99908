/* test_tiers.c - per-tensor type choice equals llama-quantize's (golden tensors.tsv), plus options and fallbacks */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gguf.h"
#include "tiers.h"

/* One golden file's tensors, in the order tensors.tsv lists them (= file order). */
typedef struct listing {
	char file[128];
	gguf_tensor *t;
	size_t n, cap;
} listing;

static listing files[64];
static size_t nfiles;

static listing *listing_for(const char *file)
{
	for (size_t i = 0; i < nfiles; i++)
		if (strcmp(files[i].file, file) == 0)
			return &files[i];
	if (nfiles == sizeof files / sizeof files[0])
		return NULL;
	snprintf(files[nfiles].file, sizeof files[nfiles].file, "%s", file);
	return &files[nfiles++];
}

/* Reads tensors.tsv: file, tensor, type, shape (ne0xne1...), sha256. */
static void load_tsv(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[1024];

	CHECK(f != NULL, "open %s", path);
	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		char file[128], name[128], type[32], shape[64], hash[80];
		listing *l;
		gguf_tensor *t;
		char *p;
		int ty;

		if (sscanf(line, "%127s %127s %31s %63s %79s", file, name, type, shape, hash) != 5 ||
		    strcmp(file, "file") == 0)
			continue;
		l = listing_for(file);
		ty = gguf_type_by_name(type);
		CHECK(l && ty >= 0, "tsv line %s", line);
		if (!l || ty < 0)
			continue;
		if (l->n == l->cap) {
			l->cap = l->cap ? 2 * l->cap : 64;
			l->t = realloc(l->t, l->cap * sizeof *l->t);
		}
		t = &l->t[l->n++];
		memset(t, 0, sizeof *t);
		t->name = strdup(name);
		t->type = (uint32_t)ty;
		t->ne[0] = t->ne[1] = t->ne[2] = t->ne[3] = 1;
		p = shape;
		for (t->n_dims = 0; t->n_dims < 4 && *p; t->n_dims++) {
			t->ne[t->n_dims] = strtoull(p, &p, 10);
			if (*p == 'x')
				p++;
		}
	}
	fclose(f);
}

/* Chooses types for base's tensors under tier/opt and compares names, order and types
 * with the golden listing of file. */
static void compare(const listing *base, const tier_model *m, const char *tier, bool imat, const char *file)
{
	const tier_info *ti = tier_by_name(tier);
	tier_options opt = { .output_type = -1, .token_embd_type = -1, .has_imatrix = imat };
	const listing *g = NULL;
	size_t *order = malloc(base->n * sizeof *order);
	uint32_t *types = malloc(base->n * sizeof *types);
	err e = { 0 };

	for (size_t i = 0; i < nfiles; i++)
		if (strcmp(files[i].file, file) == 0)
			g = &files[i];
	CHECK(ti != NULL, "tier %s", tier);
	CHECK(g != NULL && g->n == base->n, "%s listed with %zu tensors", file, g ? g->n : 0);
	if (ti && g && g->n == base->n) {
		CHECK(tier_order(base->t, base->n, order) == 0, "order");
		CHECK(tier_choose(ti, &opt, m, base->t, order, base->n, types, NULL, &e) == 0, "%s: %s", file, e.msg);
		for (size_t i = 0; i < g->n; i++) {
			const gguf_tensor *t = &base->t[order[i]];

			CHECK(strcmp(t->name, g->t[i].name) == 0, "%s: tensor %zu is %s, want %s", file, i, t->name,
			      g->t[i].name);
			CHECK(types[order[i]] == g->t[i].type, "%s: %s: chose %s, llama-quantize chose %s", file, t->name,
			      gguf_type(types[order[i]])->name, gguf_type(g->t[i].type)->name);
		}
	}
	free(order);
	free(types);
}

static void check_golden(void)
{
	char *tsv = check_shared_path("golden/pydoc-8m/tensors.tsv");
	char *f16 = check_shared_path("golden/pydoc-8m/pydoc-8m-F16.gguf");
	listing *base, *bbase;
	gguf_file f = { 0 };
	tier_model m;
	err e = { 0 };
	size_t nt;
	const tier_info *tl = tier_list(&nt);

	load_tsv(tsv);
	CHECK(gguf_open(&f, f16, &e) == 0, "%s", e.msg);
	CHECK(tier_model_from_meta(&m, &f.meta, &e) == 0, "%s", e.msg);
	CHECK(m.n_layer == 8 && m.n_head == 8 && m.n_head_kv == 4 && strcmp(m.arch, "llama") == 0,
	      "model facts: %s %u layers %u/%u heads", m.arch, m.n_layer, m.n_head, m.n_head_kv);
	base = listing_for("pydoc-8m-F16.gguf");
	bbase = listing_for("pydoc-8m-BF16.gguf");
	CHECK(base->n == f.n_tensors && base->n == 75, "F16 listing has %zu tensors", base->n);
	/* the listing must describe the file we took the metadata from */
	for (size_t i = 0; i < base->n && i < f.n_tensors; i++)
		CHECK(strcmp(base->t[i].name, f.tensors[i].name) == 0 && base->t[i].ne[0] == f.tensors[i].ne[0],
		      "listing vs file at %zu", i);
	for (size_t i = 0; i < nt; i++) {
		char file[128];

		if (tl[i].default_type == GGUF_TYPE_F16 || tl[i].default_type == GGUF_TYPE_BF16)
			continue;
		snprintf(file, sizeof file, "quant/pydoc-8m-%s.gguf", tl[i].name);
		compare(base, &m, tl[i].name, false, file);
		snprintf(file, sizeof file, "quant/pydoc-8m-%s-imat.gguf", tl[i].name);
		compare(base, &m, tl[i].name, true, file);
	}
	compare(bbase, &m, "Q4_K_M", true, "quant/pydoc-8m-Q4_K_M-imat-from-bf16.gguf");
	gguf_close(&f);
	free(tsv);
	free(f16);
}

/* ---- hand cases on a synthetic model ---- */

typedef struct synth {
	gguf_tensor t[256];
	size_t n;
	uint32_t types[256];
} synth;

static void add(synth *s, const char *name, uint64_t ne0, uint64_t ne1)
{
	gguf_tensor *t = &s->t[s->n++];

	memset(t, 0, sizeof *t);
	t->name = (char *)name;
	t->type = ne1 > 1 ? GGUF_TYPE_F16 : GGUF_TYPE_F32;
	t->n_dims = ne1 > 1 ? 2 : 1;
	t->ne[0] = ne0;
	t->ne[1] = ne1;
	t->ne[2] = t->ne[3] = 1;
}

static char names[64][6][40];

/* A llama-like model of nl layers, rows of ne0 (row length of every matrix). */
static void make_model(synth *s, int nl, uint64_t ne0, bool tied)
{
	static const char *parts[] = { "attn_q", "attn_k", "attn_v", "attn_output", "ffn_down", "attn_norm" };

	s->n = 0;
	add(s, "token_embd.weight", ne0, 1000);
	if (!tied)
		add(s, "output.weight", ne0, 1000);
	add(s, "output_norm.weight", ne0, 1);
	for (int l = 0; l < nl; l++)
		for (int p = 0; p < 6; p++) {
			snprintf(names[l][p], sizeof names[l][p], "blk.%d.%s.weight", l, parts[p]);
			add(s, names[l][p], ne0, p == 5 ? 1 : 64);
		}
}

static uint32_t type_of(const synth *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->t[i].name, name) == 0)
			return s->types[i];
	CHECK(0, "no tensor %s", name);
	return 0;
}

static int run(synth *s, const char *tier, const tier_options *opt, const tier_model *m, size_t *nfb, err *e)
{
	size_t order[256];

	CHECK(tier_order(s->t, s->n, order) == 0, "order");
	return tier_choose(tier_by_name(tier), opt, m, s->t, order, s->n, s->types, nfb, e);
}

static void check_hand(void)
{
	tier_model m = { "llama", 32, 32, 8, 0 };
	tier_options opt = { .output_type = -1, .token_embd_type = -1 };
	static synth s;
	err e = { 0 };
	size_t nfb = 0;
	tier_rule *rules = calloc(2, sizeof *rules), bad;

	CHECK(tier_by_name("q4_k_m") && tier_by_name("Q4_K_M")->ftype == 15 && tier_by_name("iq4_xs")->ftype == 30 &&
	      tier_by_name("bf16")->ftype == 32 && tier_by_name("Q8_0")->ftype == 7 && !tier_by_name("Q4_K"),
	      "tier names and llama_ftype numbers");

	{
		size_t nt;
		const tier_info *tl = tier_list(&nt);
		char buf[256] = "";

		for (size_t i = 0; i < nt; i++)
			snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", i ? ", " : "", tl[i].name);
		CHECK(nt == 18 && strcmp(buf, tier_names()) == 0, "tier_names: %s", tier_names());
	}

	/* Q4_K_M on 32 layers: attn_v and ffn_down get Q6_K on use_more_bits layers, i.e.
	 * 0-3, 28-31 and 6, 9, ..., 27 */
	make_model(&s, 32, 256, false);
	CHECK(run(&s, "Q4_K_M", &opt, &m, &nfb, &e) == 0, "%s", e.msg);
	for (int l = 0; l < 32; l++) {
		bool more = l < 4 || l >= 28 || (l >= 6 && (l - 6) % 3 == 0);

		CHECK(type_of(&s, names[l][2]) == (more ? GGUF_TYPE_Q6_K : GGUF_TYPE_Q4_K), "attn_v %d", l);
		CHECK(type_of(&s, names[l][4]) == (more ? GGUF_TYPE_Q6_K : GGUF_TYPE_Q4_K), "ffn_down %d", l);
		CHECK(type_of(&s, names[l][5]) == GGUF_TYPE_F32, "norm %d stays", l);
	}
	CHECK(type_of(&s, "output.weight") == GGUF_TYPE_Q6_K && type_of(&s, "token_embd.weight") == GGUF_TYPE_Q4_K,
	      "output Q6_K, token_embd default");
	CHECK(nfb == 0, "no fallbacks");

	/* IQ4_XS: attn_v Q5_K when n_gqa >= 4, not without GQA; ffn_down Q5_K in the first
	 * eighth only without an imatrix */
	CHECK(run(&s, "IQ4_XS", &opt, &m, NULL, &e) == 0, "%s", e.msg);
	CHECK(type_of(&s, names[5][2]) == GGUF_TYPE_Q5_K && type_of(&s, names[3][4]) == GGUF_TYPE_Q5_K &&
	      type_of(&s, names[4][4]) == GGUF_TYPE_IQ4_XS, "IQ4_XS with GQA 4");
	m.n_head_kv = 32;
	opt.has_imatrix = true;
	CHECK(run(&s, "IQ4_XS", &opt, &m, NULL, &e) == 0, "%s", e.msg);
	CHECK(type_of(&s, names[5][2]) == GGUF_TYPE_IQ4_XS && type_of(&s, names[3][4]) == GGUF_TYPE_IQ4_XS,
	      "IQ4_XS without GQA, with imatrix");
	/* Q4_0 + imatrix: ffn_down of the first n/8 layers is Q4_1 */
	CHECK(run(&s, "Q4_0", &opt, &m, NULL, &e) == 0, "%s", e.msg);
	CHECK(type_of(&s, names[3][4]) == GGUF_TYPE_Q4_1 && type_of(&s, names[4][4]) == GGUF_TYPE_Q4_0 &&
	      type_of(&s, "output.weight") == GGUF_TYPE_Q6_K, "Q4_0 imatrix bump");
	opt.has_imatrix = false;
	CHECK(run(&s, "Q5_0", &opt, &m, NULL, &e) == 0 && type_of(&s, names[3][4]) == GGUF_TYPE_Q5_0,
	      "Q5_0 without imatrix: no bump");

	/* --pure, --leave-output-tensor, --output-tensor-type, --token-embedding-type */
	opt.pure = true;
	CHECK(run(&s, "Q4_K_M", &opt, &m, NULL, &e) == 0, "%s", e.msg);
	CHECK(type_of(&s, names[0][2]) == GGUF_TYPE_Q4_K && type_of(&s, "output.weight") == GGUF_TYPE_Q4_K &&
	      type_of(&s, names[0][5]) == GGUF_TYPE_F32, "pure");
	opt.pure = false;
	opt.leave_output = true;
	opt.token_embd_type = GGUF_TYPE_Q8_0;
	CHECK(run(&s, "Q4_K_M", &opt, &m, NULL, &e) == 0, "%s", e.msg);
	CHECK(type_of(&s, "output.weight") == GGUF_TYPE_F16 && type_of(&s, "token_embd.weight") == GGUF_TYPE_Q8_0,
	      "leave output, token embedding type");
	opt.leave_output = false;
	opt.token_embd_type = -1;
	opt.output_type = GGUF_TYPE_Q5_0;
	CHECK(run(&s, "Q2_K", &opt, &m, NULL, &e) == 0, "%s", e.msg);
	CHECK(type_of(&s, "output.weight") == GGUF_TYPE_Q5_0 && type_of(&s, names[7][3]) == GGUF_TYPE_Q3_K &&
	      type_of(&s, names[7][0]) == GGUF_TYPE_Q2_K, "output type, Q2_K mix");
	opt.output_type = -1;

	/* --tensor-type: first match wins, regex searched anywhere in the name */
	CHECK(tier_rule_parse(&rules[0], "ATTN_V=q8_0", &e) == 0, "%s", e.msg);
	CHECK(tier_rule_parse(&rules[1], "^blk\\.1\\.=Q5_1", &e) == 0, "%s", e.msg);
	opt.rules = rules;
	opt.n_rules = 2;
	CHECK(run(&s, "Q4_K_S", &opt, &m, NULL, &e) == 0, "%s", e.msg);
	CHECK(type_of(&s, names[1][2]) == GGUF_TYPE_Q8_0 && type_of(&s, names[1][0]) == GGUF_TYPE_Q5_1 &&
	      type_of(&s, names[2][0]) == GGUF_TYPE_Q4_K && type_of(&s, names[1][5]) == GGUF_TYPE_F32,
	      "tensor-type rules");
	tier_rules_free(rules, 2);
	opt.rules = NULL;
	opt.n_rules = 0;
	CHECK(tier_rule_parse(&bad, "noequals", &e) != 0 && strstr(e.msg, "REGEX=TYPE"), "malformed: %s", e.msg);
	err_clear(&e);
	CHECK(tier_rule_parse(&bad, "x=Q9_9", &e) != 0 && strstr(e.msg, "Q9_9"), "bad type: %s", e.msg);
	err_clear(&e);
	CHECK(tier_rule_parse(&bad, "(=Q8_0", &e) != 0 && strstr(e.msg, "regular expression"), "bad regex: %s",
	      e.msg);
	err_clear(&e);

	/* tied embeddings: no output.weight, token_embd takes the output's type */
	m.n_head_kv = 8;
	make_model(&s, 8, 256, true);
	CHECK(run(&s, "Q4_K_M", &opt, &m, NULL, &e) == 0 && type_of(&s, "token_embd.weight") == GGUF_TYPE_Q6_K,
	      "tied Q4_K_M");
	CHECK(run(&s, "Q8_0", &opt, &m, NULL, &e) == 0 && type_of(&s, "token_embd.weight") == GGUF_TYPE_Q8_0,
	      "tied Q8_0");

	/* fallbacks: rows of 96 fit 32-blocks, not 256-blocks; rows of 100 fit nothing */
	make_model(&s, 8, 96, false);
	CHECK(run(&s, "Q4_K_M", &opt, &m, &nfb, &e) == 0, "%s", e.msg);
	CHECK(type_of(&s, names[2][0]) == GGUF_TYPE_Q5_0 && type_of(&s, names[0][4]) == GGUF_TYPE_Q8_0 &&
	      type_of(&s, "output.weight") == GGUF_TYPE_Q8_0, "Q4_K->Q5_0, Q6_K->Q8_0, output Q8_0");
	CHECK(nfb == 8 * 5 + 1, "fallback count %zu", nfb);
	CHECK(run(&s, "Q5_K_S", &opt, &m, NULL, &e) == 0 && type_of(&s, names[2][0]) == GGUF_TYPE_Q5_1, "Q5_K->Q5_1");
	CHECK(run(&s, "Q3_K_S", &opt, &m, NULL, &e) == 0 && type_of(&s, names[2][0]) == GGUF_TYPE_Q4_0, "Q3_K->Q4_0");
	CHECK(run(&s, "Q2_K", &opt, &m, NULL, &e) == 0 && type_of(&s, names[2][1]) == GGUF_TYPE_Q4_0, "Q2_K->Q4_0");
	CHECK(run(&s, "IQ4_XS", &opt, &m, NULL, &e) == 0 && type_of(&s, names[2][0]) == GGUF_TYPE_IQ4_NL,
	      "IQ4_XS->IQ4_NL");
	make_model(&s, 8, 100, false);
	CHECK(run(&s, "Q4_K_M", &opt, &m, NULL, &e) == 0 && type_of(&s, names[2][0]) == GGUF_TYPE_F16, "-> F16");
	CHECK(run(&s, "Q8_0", &opt, &m, NULL, &e) == 0 && type_of(&s, names[2][0]) == GGUF_TYPE_F16, "Q8_0 -> F16");
	opt.output_type = GGUF_TYPE_Q4_K;
	CHECK(run(&s, "Q8_0", &opt, &m, NULL, &e) != 0 && strstr(e.msg, "output.weight"), "forced type refused: %s",
	      e.msg);
	err_clear(&e);
	opt.output_type = -1;

	/* MoE: a layer number outside the model is an error */
	m.n_expert = 4;
	make_model(&s, 8, 256, false);
	m.n_layer = 4;
	CHECK(run(&s, "Q4_K_M", &opt, &m, NULL, &e) != 0 && strstr(e.msg, "blk.4."), "layer range: %s", e.msg);
}

int main(void)
{
	check_hand();
	check_golden();
	return check_done();
}
