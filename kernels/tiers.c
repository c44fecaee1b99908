/* tiers.c - quantization tiers and the per-tensor type choice of llama-quantize (llama_tensor_get_type) */
#include "tiers.h"

#include <ctype.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* llama_ftype numbers (llama.h); they are what general.file_type records. */
enum {
	FT_F16 = 1, FT_Q4_0 = 2, FT_Q4_1 = 3, FT_Q8_0 = 7, FT_Q5_0 = 8, FT_Q5_1 = 9,
	FT_Q2_K = 10, FT_Q3_K_S = 11, FT_Q3_K_M = 12, FT_Q3_K_L = 13, FT_Q4_K_S = 14,
	FT_Q4_K_M = 15, FT_Q5_K_S = 16, FT_Q5_K_M = 17, FT_Q6_K = 18, FT_IQ4_NL = 25,
	FT_IQ4_XS = 30, FT_BF16 = 32
};

static const tier_info tiers[] = {
	{ "F16", FT_F16, GGUF_TYPE_F16 },
	{ "BF16", FT_BF16, GGUF_TYPE_BF16 },
	{ "Q8_0", FT_Q8_0, GGUF_TYPE_Q8_0 },
	{ "Q6_K", FT_Q6_K, GGUF_TYPE_Q6_K },
	{ "Q5_K_M", FT_Q5_K_M, GGUF_TYPE_Q5_K },
	{ "Q5_K_S", FT_Q5_K_S, GGUF_TYPE_Q5_K },
	{ "Q4_K_M", FT_Q4_K_M, GGUF_TYPE_Q4_K },
	{ "Q4_K_S", FT_Q4_K_S, GGUF_TYPE_Q4_K },
	{ "Q3_K_L", FT_Q3_K_L, GGUF_TYPE_Q3_K },
	{ "Q3_K_M", FT_Q3_K_M, GGUF_TYPE_Q3_K },
	{ "Q3_K_S", FT_Q3_K_S, GGUF_TYPE_Q3_K },
	{ "Q2_K", FT_Q2_K, GGUF_TYPE_Q2_K },
	{ "Q4_0", FT_Q4_0, GGUF_TYPE_Q4_0 },
	{ "Q4_1", FT_Q4_1, GGUF_TYPE_Q4_1 },
	{ "Q5_0", FT_Q5_0, GGUF_TYPE_Q5_0 },
	{ "Q5_1", FT_Q5_1, GGUF_TYPE_Q5_1 },
	{ "IQ4_NL", FT_IQ4_NL, GGUF_TYPE_IQ4_NL },
	{ "IQ4_XS", FT_IQ4_XS, GGUF_TYPE_IQ4_XS },
};
#define NTIERS (sizeof tiers / sizeof tiers[0])

const tier_info *tier_by_name(const char *name)
{
	for (size_t i = 0; i < NTIERS; i++)
		if (strcasecmp(tiers[i].name, name) == 0)
			return &tiers[i];
	return NULL;
}

const tier_info *tier_by_ftype(uint32_t ftype)
{
	for (size_t i = 0; i < NTIERS; i++)
		if (tiers[i].ftype == ftype)
			return &tiers[i];
	return NULL;
}

const tier_info *tier_list(size_t *n)
{
	*n = NTIERS;
	return tiers;
}

const char *tier_names(void)
{
	/* kept in step with tiers[] by test_tiers */
	return "F16, BF16, Q8_0, Q6_K, Q5_K_M, Q5_K_S, Q4_K_M, Q4_K_S, Q3_K_L, Q3_K_M, Q3_K_S, Q2_K, "
	       "Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS";
}

/* ---- model facts ---- */

static int meta_u32(const gguf_meta *meta, const char *arch, const char *suffix, uint32_t *out)
{
	char key[160];
	uint64_t v;

	snprintf(key, sizeof key, "%s.%s", arch, suffix);
	if (gguf_meta_get_u64(meta, key, &v) != 0 || v > UINT32_MAX)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

int tier_model_from_meta(tier_model *m, const gguf_meta *meta, err *e)
{
	const char *arch = gguf_meta_get_str(meta, "general.architecture");

	memset(m, 0, sizeof *m);
	if (!arch)
		return err_set(e, "metadata has no general.architecture");
	snprintf(m->arch, sizeof m->arch, "%s", arch);
	if (meta_u32(meta, arch, "block_count", &m->n_layer) != 0)
		return err_set(e, "metadata has no %s.block_count", arch);
	meta_u32(meta, arch, "attention.head_count", &m->n_head);
	if (meta_u32(meta, arch, "attention.head_count_kv", &m->n_head_kv) != 0)
		m->n_head_kv = m->n_head;
	meta_u32(meta, arch, "expert_count", &m->n_expert);
	return 0;
}

/* ---- --tensor-type rules ---- */

int tier_rule_parse(tier_rule *r, const char *arg, err *e)
{
	const char *eq = strchr(arg, '=');
	int type, rc;
	regex_t *re;

	memset(r, 0, sizeof *r);
	if (!eq || eq == arg || !eq[1])
		return err_set(e, "--tensor-type '%s': expected REGEX=TYPE", arg);
	type = gguf_type_by_name(eq + 1);
	if (type < 0)
		return err_set(e, "--tensor-type '%s': '%s' is not a ggml type", arg, eq + 1);
	r->pattern = strndup(arg, (size_t)(eq - arg));
	re = malloc(sizeof *re);
	if (!r->pattern || !re) {
		free(r->pattern);
		free(re);
		r->pattern = NULL;
		return err_set(e, "out of memory");
	}
	for (char *p = r->pattern; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	rc = regcomp(re, r->pattern, REG_EXTENDED | REG_NOSUB);
	if (rc != 0) {
		char msg[128];

		regerror(rc, re, msg, sizeof msg);
		free(re);
		err_set(e, "--tensor-type '%s': bad regular expression: %s", arg, msg);
		free(r->pattern);
		r->pattern = NULL;
		return -1;
	}
	r->re = re;
	r->type = (uint32_t)type;
	return 0;
}

void tier_rules_free(tier_rule *rules, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (rules[i].re) {
			regfree(rules[i].re);
			free(rules[i].re);
		}
		free(rules[i].pattern);
	}
	free(rules);
}

/* ---- tensor order ---- */

/* The N of a "blk.N." name, or -1. */
static int layer_of(const char *name)
{
	int l;

	if (sscanf(name, "blk.%d.", &l) == 1)
		return l;
	return -1;
}

/* What the order comparison needs: the tensors and each one's layer, parsed once. */
typedef struct order_ctx {
	const gguf_tensor *ts;
	const int *layer;
} order_ctx;

static int order_cmp(const void *pa, const void *pb, void *arg)
{
	const order_ctx *c = arg;
	size_t a = *(const size_t *)pa, b = *(const size_t *)pb;

	if (c->layer[a] != c->layer[b])
		return c->layer[a] < c->layer[b] ? -1 : 1;
	return strcmp(c->ts[a].name, c->ts[b].name);
}

int tier_order(const gguf_tensor *ts, size_t n, size_t *order)
{
	int *layer = malloc((n ? n : 1) * sizeof *layer);
	order_ctx c = { ts, layer };

	if (!layer)
		return -1;
	for (size_t i = 0; i < n; i++)
		order[i] = i;
	for (size_t i = 0; i < n; i++)
		layer[i] = layer_of(ts[i].name);
	qsort_r(order, n, sizeof *order, order_cmp, &c);
	free(layer);
	return 0;
}

/* ---- which tensors are quantized ---- */

/* ggml_n_dims: dimensions up to the last one larger than 1. */
static int n_dims(const gguf_tensor *t)
{
	for (int i = 3; i > 0; i--)
		if (t->ne[i] > 1)
			return i + 1;
	return 1;
}

static bool has(const char *s, const char *sub)
{
	return strstr(s, sub) != NULL;
}

bool tier_quantizable(const char *name, const gguf_tensor *t, const tier_options *opt)
{
	/* name fragments llama-quantize never quantizes (small or special tensors) */
	static const char *const never[] = {
		"_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
		"per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
		"indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight",
		"time_mix_w1.weight", "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight",
		"time_mix_v2.weight", "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight",
		"time_mix_g1.weight", "time_mix_g2.weight", "time_mix_decay_w1.weight",
		"time_mix_decay_w2.weight", "time_mix_lerp_fused.weight", "attn_rel_b.weight",
		".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd",
		".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
	};
	size_t len = strlen(name);

	if (n_dims(t) < 2)
		return false;
	if (len < 6 || strcmp(name + len - 6, "weight") != 0)
		return false;
	if (opt->leave_output && strcmp(name, "output.weight") == 0)
		return false;
	if (strcmp(name, "position_embd.weight") == 0 || strcmp(name, "token_types.weight") == 0)
		return false;
	for (size_t i = 0; i < sizeof never / sizeof never[0]; i++)
		if (has(name, never[i]))
			return false;
	return true;
}

/* ---- the choice ---- */

typedef enum {
	CAT_TOKEN_EMBD, CAT_ATTN_Q, CAT_ATTN_V, CAT_ATTN_K, CAT_ATTN_QKV, CAT_ATTN_KV_B,
	CAT_ATTN_OUTPUT, CAT_FFN_UP, CAT_FFN_GATE, CAT_FFN_DOWN, CAT_OUTPUT, CAT_OTHER
} category;

static category category_of(const char *name)
{
	if (strcmp(name, "output.weight") == 0)
		return CAT_OUTPUT;
	if (strcmp(name, "token_embd.weight") == 0 || strcmp(name, "per_layer_token_embd.weight") == 0)
		return CAT_TOKEN_EMBD;
	if (has(name, "attn_qkv.weight"))
		return CAT_ATTN_QKV;
	if (has(name, "attn_kv_b.weight"))
		return CAT_ATTN_KV_B;
	if (has(name, "attn_v.weight"))
		return CAT_ATTN_V;
	if (has(name, "attn_k.weight"))
		return CAT_ATTN_K;
	if (has(name, "attn_q.weight"))
		return CAT_ATTN_Q;
	if (has(name, "attn_output.weight"))
		return CAT_ATTN_OUTPUT;
	if (has(name, "ffn_up"))
		return CAT_FFN_UP;
	if (has(name, "ffn_gate"))
		return CAT_FFN_GATE;
	if (has(name, "ffn_down"))
		return CAT_FFN_DOWN;
	return CAT_OTHER;
}

static bool is_attn_v(category c)
{
	return c == CAT_ATTN_V || c == CAT_ATTN_QKV || c == CAT_ATTN_KV_B;
}

/* Counters llama-quantize keeps while it walks the tensors in write order. */
typedef struct choice_state {
	const tier_options *opt;
	const tier_model *m;
	uint32_t ftype;
	bool falcon, is70b, tied; /* tied: no output.weight, token_embd doubles as the output */
	int n_attn_v, i_attn_v;
	int n_layer, i_ffn_down, i_ffn_gate, i_ffn_up;
} choice_state;

/* Layers that get more bits in the *_M mixes: the first and last eighth, and every third
 * layer in between. */
static bool use_more_bits(int i, int n)
{
	return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

static uint32_t blck(uint32_t type)
{
	const gguf_type_info *ti = gguf_type(type);

	return ti ? ti->blck : 1;
}

/* The layer a per-layer counter stands for: the counter itself, except in MoE models where
 * expert tensors are not consecutive and the name says the layer. */
static int layer_index(const choice_state *s, int counter, const char *name, err *e)
{
	int l;

	if (s->m->n_expert <= 1)
		return counter;
	if (sscanf(name, "blk.%d.", &l) != 1)
		return err_set(e, "cannot tell the layer of tensor %s", name), -1;
	if (l < 0 || l >= s->n_layer)
		return err_set(e, "tensor %s: layer %d outside [0, %d)", name, l, s->n_layer), -1;
	return l;
}

static int n_gqa(const tier_model *m)
{
	return m->n_head_kv ? (int)(m->n_head / m->n_head_kv) : 0;
}

static uint32_t output_type(const choice_state *s, uint32_t t, const gguf_tensor *ts)
{
	if (s->opt->output_type >= 0)
		return (uint32_t)s->opt->output_type;
	if (s->falcon || ts->ne[0] % blck(t) != 0)
		return GGUF_TYPE_Q8_0;
	return t != GGUF_TYPE_Q8_0 ? GGUF_TYPE_Q6_K : t;
}

static uint32_t attn_v_type(choice_state *s, uint32_t t)
{
	uint32_t f = s->ftype;

	if (f == FT_Q2_K)
		t = n_gqa(s->m) >= 4 ? GGUF_TYPE_Q4_K : GGUF_TYPE_Q3_K;
	else if (f == FT_Q3_K_M)
		t = s->i_attn_v < 2 ? GGUF_TYPE_Q5_K : GGUF_TYPE_Q4_K;
	else if (f == FT_Q3_K_L)
		t = GGUF_TYPE_Q5_K;
	else if ((f == FT_IQ4_NL || f == FT_IQ4_XS) && n_gqa(s->m) >= 4)
		t = GGUF_TYPE_Q5_K;
	else if ((f == FT_Q4_K_M || f == FT_Q5_K_M) && use_more_bits(s->i_attn_v, s->n_attn_v))
		t = GGUF_TYPE_Q6_K;
	else if (f == FT_Q4_K_S && s->i_attn_v < 4)
		t = GGUF_TYPE_Q5_K;
	/* 70B: eight heads share attn_v, so more bits there cost little */
	if (s->is70b && (t == GGUF_TYPE_Q3_K || t == GGUF_TYPE_Q4_K))
		t = GGUF_TYPE_Q5_K;
	if (s->m->n_expert == 8)
		t = GGUF_TYPE_Q8_0;
	s->i_attn_v++;
	return t;
}

static int ffn_down_type(choice_state *s, uint32_t *t, const char *name, err *e)
{
	uint32_t f = s->ftype;
	int i = layer_index(s, s->i_ffn_down, name, e), n = s->n_layer;

	if (i < 0)
		return -1;
	if (f == FT_Q2_K)
		*t = GGUF_TYPE_Q3_K;
	else if (f == FT_Q3_K_M)
		*t = i < n / 16 ? GGUF_TYPE_Q5_K
		     : !s->falcon || use_more_bits(i, n) ? GGUF_TYPE_Q4_K : GGUF_TYPE_Q3_K;
	else if (f == FT_Q3_K_L)
		*t = s->falcon ? GGUF_TYPE_Q4_K : GGUF_TYPE_Q5_K;
	else if (f == FT_Q4_K_M) {
		if (s->falcon)
			*t = i < n / 16 ? GGUF_TYPE_Q6_K : use_more_bits(i, n) ? GGUF_TYPE_Q5_K : GGUF_TYPE_Q4_K;
		else if (use_more_bits(i, n))
			*t = GGUF_TYPE_Q6_K;
	} else if (i < n / 8 && (f == FT_IQ4_NL || f == FT_IQ4_XS) && !s->opt->has_imatrix)
		*t = GGUF_TYPE_Q5_K;
	else if (f == FT_Q5_K_M && use_more_bits(i, n))
		*t = GGUF_TYPE_Q6_K;
	else if (f == FT_Q4_K_S && !s->falcon && i < n / 8)
		*t = GGUF_TYPE_Q5_K;
	else if ((f == FT_Q4_0 || f == FT_Q5_0) && s->opt->has_imatrix && i < n / 8)
		/* the first ffn_down layers misbehave even with an imatrix: one step up */
		*t = f == FT_Q4_0 ? GGUF_TYPE_Q4_1 : GGUF_TYPE_Q5_1;
	s->i_ffn_down++;
	return 0;
}

static uint32_t attn_output_type(const choice_state *s, uint32_t t)
{
	uint32_t f = s->ftype;

	if (s->falcon)
		return f == FT_Q3_K_L ? GGUF_TYPE_Q4_K : t;
	if (s->m->n_expert == 8) {
		if (f == FT_Q2_K || f == FT_Q3_K_S || f == FT_Q3_K_M || f == FT_IQ4_NL ||
		    f == FT_Q4_K_S || f == FT_Q4_K_M || f == FT_IQ4_XS)
			t = GGUF_TYPE_Q5_K;
		return t;
	}
	if (f == FT_Q2_K)
		t = GGUF_TYPE_Q3_K;
	else if (f == FT_Q3_K_M)
		t = GGUF_TYPE_Q4_K;
	else if (f == FT_Q3_K_L)
		t = GGUF_TYPE_Q5_K;
	return t;
}

/* The tier's mix: llama_tensor_get_type_impl for the tiers qbake offers. */
static int mix_type(choice_state *s, uint32_t *t, const gguf_tensor *ts, category c, err *e)
{
	if (c == CAT_OUTPUT || (s->tied && c == CAT_TOKEN_EMBD))
		*t = output_type(s, *t, ts);
	else if (c == CAT_TOKEN_EMBD) {
		if (s->opt->token_embd_type >= 0)
			*t = (uint32_t)s->opt->token_embd_type;
	} else if (is_attn_v(c))
		*t = attn_v_type(s, *t);
	else if (c == CAT_ATTN_K) {
		if (s->m->n_expert == 8)
			*t = GGUF_TYPE_Q8_0;
	} else if (c == CAT_FFN_DOWN)
		return ffn_down_type(s, t, ts->name, e);
	else if (c == CAT_ATTN_OUTPUT)
		*t = attn_output_type(s, *t);
	else if (c == CAT_FFN_GATE || c == CAT_FFN_UP) {
		int *ctr = c == CAT_FFN_GATE ? &s->i_ffn_gate : &s->i_ffn_up;

		if (layer_index(s, *ctr, ts->name, e) < 0)
			return -1;
		(*ctr)++;
	}
	return 0;
}

/* A type whose blocks fit rows of ne0 elements, when the chosen one does not. */
static uint32_t fallback(uint32_t t, uint64_t ne0, size_t *nfb)
{
	uint32_t r;

	if (ne0 % blck(t) == 0)
		return t;
	switch (t) {
	case GGUF_TYPE_IQ4_XS: r = GGUF_TYPE_IQ4_NL; break;
	case GGUF_TYPE_Q2_K: case GGUF_TYPE_Q3_K: r = GGUF_TYPE_Q4_0; break;
	case GGUF_TYPE_Q4_K: r = GGUF_TYPE_Q5_0; break;
	case GGUF_TYPE_Q5_K: r = GGUF_TYPE_Q5_1; break;
	case GGUF_TYPE_Q6_K: r = GGUF_TYPE_Q8_0; break;
	default: r = GGUF_TYPE_F16; break;
	}
	if (ne0 % blck(r) != 0)
		r = GGUF_TYPE_F16;
	(*nfb)++;
	return r;
}

static bool rule_match(const tier_options *opt, const char *name, uint32_t *type)
{
	for (size_t i = 0; i < opt->n_rules; i++)
		if (regexec(opt->rules[i].re, name, 0, NULL, 0) == 0) {
			*type = opt->rules[i].type;
			return true;
		}
	return false;
}

static int choose_one(choice_state *s, const tier_info *tier, const gguf_tensor *t, uint32_t *out,
		      size_t *nfb, err *e)
{
	category c = category_of(t->name);
	const gguf_type_info *dti = gguf_type(tier->default_type);
	uint32_t nt = tier->default_type;

	if (!tier_quantizable(t->name, t, s->opt)) {
		*out = t->type;
		return 0;
	}
	if (s->opt->token_embd_type >= 0 && c == CAT_TOKEN_EMBD)
		nt = (uint32_t)s->opt->token_embd_type;
	else if (s->opt->output_type >= 0 && c == CAT_OUTPUT)
		nt = (uint32_t)s->opt->output_type;
	else if (dti && dti->quantized) {
		bool manual = rule_match(s->opt, t->name, &nt);

		if (!manual && !s->opt->pure && mix_type(s, &nt, t, c, e) != 0)
			return -1;
		nt = fallback(nt, t->ne[0], nfb);
	}
	if (t->ne[0] % blck(nt) != 0)
		return err_set(e, "tensor %s: row length %llu is not a multiple of %s's block size %u",
			       t->name, (unsigned long long)t->ne[0], gguf_type(nt)->name, blck(nt));
	*out = nt;
	return 0;
}

int tier_choose(const tier_info *tier, const tier_options *opt, const tier_model *m,
		const gguf_tensor *ts, const size_t *order, size_t n, uint32_t *types,
		size_t *fallbacks, err *e)
{
	choice_state s = { .opt = opt, .m = m, .ftype = tier->ftype, .tied = true };
	size_t nfb = 0;

	s.falcon = strcmp(m->arch, "falcon") == 0;
	s.is70b = strcmp(m->arch, "llama") == 0 && m->n_layer == 80 && m->n_head != m->n_head_kv;
	s.n_layer = (int)m->n_layer;
	for (size_t i = 0; i < n; i++) {
		category c = category_of(ts[i].name);

		if (is_attn_v(c))
			s.n_attn_v++;
		if (c == CAT_OUTPUT)
			s.tied = false;
	}
	for (size_t i = 0; i < n; i++)
		if (choose_one(&s, tier, &ts[order[i]], &types[order[i]], &nfb, e) != 0)
			return -1;
	if (fallbacks)
		*fallbacks = nfb;
	return 0;
}
