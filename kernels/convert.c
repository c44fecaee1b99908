/* convert.c - HF safetensors checkpoint to GGUF (Llama, Mistral, Qwen2), same bytes as convert_hf_to_gguf.py */
#include "convert.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sys/mman.h>
#include <unistd.h>

#include <jansson.h>

#include "gguf.h"
#include "half.h"
#include "modelname.h"
#include "safetensors.h"
#include "vocab.h"

/* Rows are converted in chunks of about this many elements, so memory stays bounded. */
#define CHUNK_ELEMS (1u << 20)

enum { ARCH_LLAMA, ARCH_QWEN2 };

/* n_ctx is transformers' default max_position_embeddings for the class, which the reference
 * sees (through AutoConfig) when config.json leaves it out; likewise RMS epsilon 1e-6. */
static const struct {
	const char *hf, *gguf;
	int arch;
	int64_t n_ctx;
} archs[] = {
	{ "LlamaForCausalLM", "llama", ARCH_LLAMA, 2048 },
	{ "MistralForCausalLM", "llama", ARCH_LLAMA, 4096 * 32 }, /* converted as Llama, as the reference */
	{ "Qwen2ForCausalLM", "qwen2", ARCH_QWEN2, 32768 },
};

/* The hyper-parameters read from config.json (both transformers 4 and 5 spellings). */
typedef struct hparams {
	const char *cfg_path;
	const char *hf_arch, *gguf_arch;
	int arch;
	int64_t n_layer, n_embd, n_ff, n_head, n_head_kv, vocab_size;
	int64_t n_ctx;          /* the config's, or transformers' default for the class */
	int64_t head_dim;       /* the config's (or transformers' default for Llama); -1: not written */
	int64_t rope_dim;       /* head_dim, or n_embd / n_head */
	json_t *rope;           /* rope_parameters, else rope_scaling (borrowed), may be NULL */
	const char *rope_type;  /* rope_type or type inside it, may be NULL */
	bool tie;               /* tie_word_embeddings */
	bool attn_bias, mlp_bias;
	json_t *cfg;            /* owned */
} hparams;

/* One output tensor, planned before anything is written. */
typedef struct plan {
	const st_tensor *src;  /* NULL for a generated tensor */
	char name[64];         /* GGUF name */
	uint32_t type;         /* GGUF_TYPE_F32 / F16 / BF16 */
	uint32_t n_dims;
	uint64_t ne[4];
	uint64_t rows, cols;   /* source layout: rows of cols elements */
	uint64_t permute;      /* heads to undo HF's rotate-half row order for (0: none) */
	float *gen;            /* generated data (rope_freqs), owned */
} plan;

int convert_outtype(const char *name)
{
	static const char *const names[] = { "f32", "f16", "bf16", "auto" };

	for (int i = 0; i < 4; i++)
		if (!strcmp(name, names[i]))
			return i;
	return -1;
}

/* ---- config.json ---- */

static json_t *first_of(json_t *o, const char *const *keys)
{
	for (; *keys; keys++) {
		json_t *v = json_object_get(o, *keys);

		if (v && !json_is_null(v))
			return v;
	}
	return NULL;
}

static int get_int(hparams *h, const char *const *keys, int64_t *out, bool required, err *e)
{
	json_t *v = first_of(h->cfg, keys);

	if (!v) {
		*out = -1;
		return required ? err_set(e, "%s: missing %s", h->cfg_path, keys[0]) : 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) <= 0)
		return err_set(e, "%s: %s must be a positive integer", h->cfg_path, keys[0]);
	*out = json_integer_value(v);
	return 0;
}

static int load_hparams(hparams *h, const char *dir, char *path_buf, size_t cap, err *e)
{
	static const char *const k_layer[] = { "n_layers", "num_hidden_layers", "n_layer", "num_layers", NULL };
	static const char *const k_ctx[] = { "max_position_embeddings", "n_ctx", "n_positions", "max_length",
					      "max_sequence_length", "model_max_length", NULL };
	static const char *const k_embd[] = { "hidden_size", "n_embd", "dim", NULL };
	static const char *const k_ff[] = { "intermediate_size", "n_inner", "hidden_dim", NULL };
	static const char *const k_head[] = { "num_attention_heads", "n_head", "n_heads", NULL };
	static const char *const k_kv[] = { "num_key_value_heads", "n_kv_heads", NULL };
	static const char *const k_vocab[] = { "vocab_size", NULL };
	static const char *const k_hd[] = { "head_dim", NULL };
	json_error_t je;
	json_t *archs_j, *v;
	char list[256] = "";

	snprintf(path_buf, cap, "%s/config.json", dir);
	h->cfg_path = path_buf;
	h->cfg = json_load_file(path_buf, 0, &je);
	if (!h->cfg)
		return err_set(e, "%s: %s%s", path_buf, je.line > 0 ? "" : "cannot read: ", je.text);
	archs_j = json_object_get(h->cfg, "architectures");
	if (!json_is_array(archs_j) || !json_is_string(json_array_get(archs_j, 0)))
		return err_set(e, "%s: no \"architectures\" list", path_buf);
	h->hf_arch = json_string_value(json_array_get(archs_j, 0));
	for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++) {
		if (!strcmp(h->hf_arch, archs[i].hf)) {
			h->gguf_arch = archs[i].gguf;
			h->arch = archs[i].arch;
			h->n_ctx = archs[i].n_ctx;
		}
		snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", archs[i].hf);
	}
	if (!h->gguf_arch)
		return err_set(e, "%s: architecture %s is not supported (supported: %s)", path_buf, h->hf_arch, list);
	if (json_is_object(json_object_get(h->cfg, "text_config")))
		return err_set(e, "%s: multimodal checkpoints (text_config) are not supported", path_buf);
	int64_t ctx_default = h->n_ctx;

	if (get_int(h, k_layer, &h->n_layer, true, e) || get_int(h, k_ctx, &h->n_ctx, false, e) ||
	    get_int(h, k_embd, &h->n_embd, true, e) || get_int(h, k_ff, &h->n_ff, true, e) ||
	    get_int(h, k_head, &h->n_head, true, e) || get_int(h, k_kv, &h->n_head_kv, false, e) ||
	    get_int(h, k_vocab, &h->vocab_size, true, e) || get_int(h, k_hd, &h->head_dim, false, e))
		return -1;
	/* transformers fills these in when the file leaves them out, and the reference sees its values */
	if (h->n_ctx < 0)
		h->n_ctx = ctx_default;
	if (h->n_head_kv < 0)
		h->n_head_kv = h->n_head;
	if (h->n_embd % h->n_head)
		return err_set(e, "%s: hidden_size %lld is not a multiple of num_attention_heads %lld", path_buf,
			       (long long)h->n_embd, (long long)h->n_head);
	if (h->head_dim < 0 && h->arch == ARCH_LLAMA)
		h->head_dim = h->n_embd / h->n_head;
	h->rope_dim = h->head_dim > 0 ? h->head_dim : h->n_embd / h->n_head;
	if (h->n_head % h->n_head_kv)
		return err_set(e, "%s: num_attention_heads %lld is not a multiple of num_key_value_heads %lld",
			       path_buf, (long long)h->n_head, (long long)h->n_head_kv);
	v = json_object_get(h->cfg, "rope_parameters");
	if (!json_is_object(v))
		v = json_object_get(h->cfg, "rope_scaling");
	h->rope = json_is_object(v) ? v : NULL;
	if (h->rope && json_is_object(json_object_get(h->rope, "full_attention")))
		h->rope = json_object_get(h->rope, "full_attention");
	h->rope_type = json_string_value(json_object_get(h->rope, "rope_type"));
	if (!h->rope_type)
		h->rope_type = json_string_value(json_object_get(h->rope, "type"));
	h->tie = json_is_true(json_object_get(h->cfg, "tie_word_embeddings"));
	h->attn_bias = json_is_true(json_object_get(h->cfg, "attention_bias")) || h->arch == ARCH_QWEN2;
	h->mlp_bias = json_is_true(json_object_get(h->cfg, "mlp_bias"));
	return 0;
}

/* rope_theta: inside rope_parameters (transformers 5) or at the top (transformers 4). */
static json_t *rope_theta(const hparams *h)
{
	json_t *v = json_object_get(h->rope, "rope_theta");

	if (!json_is_number(v))
		v = json_object_get(h->cfg, "rope_theta");
	if (!json_is_number(v))
		v = json_object_get(h->cfg, "rotary_emb_base");
	return json_is_number(v) ? v : NULL;
}

/* ---- tensor names and shapes ---- */

/* Layer tensor suffixes: HF name, GGUF name, and which dims the weight has. */
enum { D_EMBD, D_Q, D_KV, D_FF };
static const struct {
	const char *hf, *gguf;
	int rows, cols;  /* D_* of the weight's [rows, cols] */
	int bias;        /* 1: q/k/v (attention_bias or Qwen2), 2: o_proj (attention_bias, Llama only), 3: mlp_bias */
} layer_map[] = {
	{ "input_layernorm", "attn_norm", D_EMBD, -1, 0 },
	{ "self_attn.q_proj", "attn_q", D_Q, D_EMBD, 1 },
	{ "self_attn.k_proj", "attn_k", D_KV, D_EMBD, 1 },
	{ "self_attn.v_proj", "attn_v", D_KV, D_EMBD, 1 },
	{ "self_attn.o_proj", "attn_output", D_EMBD, D_Q, 2 },
	{ "post_attention_layernorm", "ffn_norm", D_EMBD, -1, 0 },
	{ "mlp.gate_proj", "ffn_gate", D_FF, D_EMBD, 3 },
	{ "mlp.up_proj", "ffn_up", D_FF, D_EMBD, 3 },
	{ "mlp.down_proj", "ffn_down", D_EMBD, D_FF, 3 },
};
#define N_LAYER_MAP (sizeof layer_map / sizeof layer_map[0])

static uint64_t dim(const hparams *h, int d)
{
	switch (d) {
	case D_EMBD: return (uint64_t)h->n_embd;
	case D_Q: return (uint64_t)(h->n_head * h->rope_dim);
	case D_KV: return (uint64_t)(h->n_head_kv * h->rope_dim);
	default: return (uint64_t)h->n_ff;
	}
}

static bool bias_expected(const hparams *h, int kind)
{
	return (kind == 1 && h->attn_bias) || (kind == 2 && h->attn_bias && h->arch == ARCH_LLAMA) ||
	       (kind == 3 && h->mlp_bias);
}

/* Names the reference drops without a word. */
static bool ignored(const char *n)
{
	static const char *const tails[] = { ".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq" };
	size_t l = strlen(n);

	for (size_t i = 0; i < 3; i++)
		if (l >= strlen(tails[i]) && !strcmp(n + l - strlen(tails[i]), tails[i]))
			return true;
	return false;
}

/* Maps one checkpoint tensor; fills p (name, expected rows/cols, permute) and marks it in seen.
 * Returns 0, or -1 naming the tensor when it does not belong in this architecture. */
static int map_tensor(const hparams *h, const st_model *m, const st_tensor *t, plan *p, uint8_t *seen, err *e)
{
	const char *n = t->name, *file = m->shards[t->shard].path;
	uint64_t rows = 0, cols = 0;
	bool is_bias = false;

	memset(p, 0, sizeof *p);
	p->src = t;
	if (!strcmp(n, "model.embed_tokens.weight")) {
		snprintf(p->name, sizeof p->name, "token_embd.weight");
		rows = (uint64_t)h->vocab_size, cols = (uint64_t)h->n_embd;
		seen[0] = 1;
	} else if (!strcmp(n, "model.norm.weight")) {
		snprintf(p->name, sizeof p->name, "output_norm.weight");
		rows = (uint64_t)h->n_embd;
		seen[1] = 1;
	} else if (!strcmp(n, "lm_head.weight")) {
		snprintf(p->name, sizeof p->name, "output.weight");
		rows = (uint64_t)h->vocab_size, cols = (uint64_t)h->n_embd;
		seen[2] = 1;
	} else if (!strncmp(n, "model.layers.", 13)) {
		char *end;
		unsigned long bid = strtoul(n + 13, &end, 10);
		size_t k;

		if (end == n + 13 || *end != '.' || bid >= (unsigned long)h->n_layer)
			return err_set(e, "%s: tensor %s: layer index outside num_hidden_layers = %lld", file, n,
				       (long long)h->n_layer);
		end++;
		for (k = 0; k < N_LAYER_MAP; k++) {
			size_t l = strlen(layer_map[k].hf);

			if (strncmp(end, layer_map[k].hf, l))
				continue;
			if (!strcmp(end + l, ".weight"))
				break;
			if (!strcmp(end + l, ".bias") && bias_expected(h, layer_map[k].bias)) {
				is_bias = true;
				break;
			}
		}
		if (k == N_LAYER_MAP)
			return err_set(e, "%s: tensor %s is not part of a %s checkpoint (extra tensor)", file, n,
				       h->hf_arch);
		snprintf(p->name, sizeof p->name, "blk.%lu.%s.%s", bid, layer_map[k].gguf, is_bias ? "bias" : "weight");
		rows = dim(h, layer_map[k].rows);
		cols = is_bias || layer_map[k].cols < 0 ? 0 : dim(h, layer_map[k].cols);
		seen[3 + bid * N_LAYER_MAP * 2 + k * 2 + is_bias] = 1;
		if (h->arch == ARCH_LLAMA && k == 1)
			p->permute = (uint64_t)h->n_head;
		if (h->arch == ARCH_LLAMA && k == 2)
			p->permute = (uint64_t)h->n_head_kv;
	} else {
		return err_set(e, "%s: tensor %s is not part of a %s checkpoint (extra tensor)", file, n, h->hf_arch);
	}
	if (!st_dtype(t->dtype)->readable)
		return err_set(e, "%s: tensor %s: unsupported dtype %s (F32, F16 and BF16 are)", file, n,
			       st_dtype(t->dtype)->name);
	if ((cols == 0 && (t->ndim != 1 || t->shape[0] != rows)) ||
	    (cols != 0 && (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols))) {
		char got[128] = "";

		for (uint32_t i = 0; i < t->ndim && strlen(got) < 100; i++)
			snprintf(got + strlen(got), sizeof got - strlen(got), "%s%llu", i ? ", " : "",
				 (unsigned long long)t->shape[i]);
		if (cols)
			return err_set(e, "%s: tensor %s has shape [%s], config.json implies [%llu, %llu]", file, n,
				       got, (unsigned long long)rows, (unsigned long long)cols);
		return err_set(e, "%s: tensor %s has shape [%s], config.json implies [%llu]", file, n, got,
			       (unsigned long long)rows);
	}
	if (p->permute && rows % (p->permute * 2))
		return err_set(e, "%s: tensor %s: %llu rows do not split into %llu heads of even size", file, n,
			       (unsigned long long)rows, (unsigned long long)p->permute);
	/* A 1-D tensor is rows of one element, so biases permute like weights. */
	p->rows = rows;
	p->cols = cols ? cols : 1;
	p->n_dims = cols ? 2 : 1;
	p->ne[0] = cols ? cols : rows, p->ne[1] = cols ? rows : 1, p->ne[2] = p->ne[3] = 1;
	return 0;
}

/* Every tensor the config implies must be there. */
static int check_missing(const hparams *h, const st_model *m, const uint8_t *seen, err *e)
{
	const char *where = m->index_path ? m->index_path : m->shards[0].path;

	if (!seen[0])
		return err_set(e, "%s: missing tensor model.embed_tokens.weight", where);
	if (!seen[1])
		return err_set(e, "%s: missing tensor model.norm.weight", where);
	if (!seen[2] && !h->tie)
		return err_set(e, "%s: missing tensor lm_head.weight (and tie_word_embeddings is not set)", where);
	for (int64_t b = 0; b < h->n_layer; b++)
		for (size_t k = 0; k < N_LAYER_MAP; k++) {
			const uint8_t *s = seen + 3 + (size_t)b * N_LAYER_MAP * 2 + k * 2;

			if (!s[0])
				return err_set(e, "%s: missing tensor model.layers.%lld.%s.weight", where, (long long)b,
					       layer_map[k].hf);
			if (layer_map[k].bias && bias_expected(h, layer_map[k].bias) && !s[1] &&
			    h->arch == ARCH_QWEN2)
				return err_set(e, "%s: missing tensor model.layers.%lld.%s.bias", where, (long long)b,
					       layer_map[k].hf);
		}
	return 0;
}

/* The reference's llama3 rope scaling factors, computed in float32 as torch does. */
static int llama3_rope(const hparams *h, plan *p, err *e)
{
	json_t *th = rope_theta(h);
	double base = th ? json_number_value(th) : 10000.0;
	json_t *f = json_object_get(h->rope, "factor"), *lo = json_object_get(h->rope, "low_freq_factor");
	json_t *hi = json_object_get(h->rope, "high_freq_factor");
	json_t *oc = json_object_get(h->cfg, "original_max_position_embeddings");
	double factor = json_is_number(f) ? json_number_value(f) : 8.0;
	double low = json_is_number(lo) ? json_number_value(lo) : 1.0;
	double high = json_is_number(hi) ? json_number_value(hi) : 4.0;
	double old = json_is_number(oc) ? json_number_value(oc) : 8192.0;
	float low_wl = (float)(old / low), high_wl = (float)(old / high);
	uint64_t n = (uint64_t)h->rope_dim / 2;

	memset(p, 0, sizeof *p);
	p->gen = malloc(n * sizeof *p->gen);
	if (!p->gen)
		return err_set(e, "out of memory");
	for (uint64_t i = 0; i < n; i++) {
		float ex = (float)(2 * i) / (float)h->rope_dim;
		float freq = 1.0f / powf((float)base, ex);
		float wavelen = (1.0f / freq) * (float)(2 * M_PI);

		if (wavelen < high_wl) {
			p->gen[i] = 1.0f;
		} else if (wavelen > low_wl) {
			p->gen[i] = (float)factor;
		} else {
			float smooth = ((1.0f / wavelen) * (float)old - (float)low) / (float)(high - low);

			p->gen[i] = 1.0f / ((1.0f - smooth) / (float)factor + smooth);
		}
	}
	snprintf(p->name, sizeof p->name, "rope_freqs.weight");
	p->rows = n, p->cols = 1, p->n_dims = 1;
	p->ne[0] = n, p->ne[1] = p->ne[2] = p->ne[3] = 1;
	p->type = GGUF_TYPE_F32;
	return 0;
}

/* ---- metadata, in the order convert_hf_to_gguf.py writes it ---- */

static int set_arch_u32(gguf_meta *m, const hparams *h, const char *key, int64_t v)
{
	char k[128];

	snprintf(k, sizeof k, "%s.%s", h->gguf_arch, key);
	return gguf_meta_set_u32(m, k, (uint32_t)v);
}

static int set_arch_f32(gguf_meta *m, const hparams *h, const char *key, double v)
{
	char k[128];

	snprintf(k, sizeof k, "%s.%s", h->gguf_arch, key);
	return gguf_meta_set_f32(m, k, (float)v);
}

static int set_str_nonempty(gguf_meta *m, const char *key, const char *v)
{
	return v && *v ? gguf_meta_set_str(m, key, v) : 0;
}

/* general.sampling.* from generation_config.json, and the name keys. */
static int meta_general(gguf_meta *m, const hparams *h, const char *dir, const char *model_id,
			uint64_t total_params, err *e)
{
	static const struct {
		const char *hf, *key;
		int type;
	} sampling[] = {
		{ "sequence", "general.sampling.sequence", GGUF_STRING },
		{ "top_k", "general.sampling.top_k", GGUF_I32 },
		{ "top_p", "general.sampling.top_p", GGUF_F32 },
		{ "min_p", "general.sampling.min_p", GGUF_F32 },
		{ "xtc_probability", "general.sampling.xtc_probability", GGUF_F32 },
		{ "xtc_threshold", "general.sampling.xtc_threshold", GGUF_F32 },
		{ "temperature", "general.sampling.temp", GGUF_F32 },
		{ "penalty_last_n", "general.sampling.penalty_last_n", GGUF_I32 },
		{ "penalty_repeat", "general.sampling.penalty_repeat", GGUF_F32 },
		{ "mirostat", "general.sampling.mirostat", GGUF_I32 },
		{ "mirostat_tau", "general.sampling.mirostat_tau", GGUF_F32 },
		{ "mirostat_eta", "general.sampling.mirostat_eta", GGUF_F32 },
	};
	char path[4096];
	json_t *gen;
	modelname mn;
	int rc = -1;

	if (gguf_meta_set_str(m, "general.architecture", h->gguf_arch) ||
	    gguf_meta_set_str(m, "general.type", "model"))
		return err_set(e, "out of memory");
	snprintf(path, sizeof path, "%s/generation_config.json", dir);
	gen = json_load_file(path, 0, NULL); /* the reference ignores an unreadable one too */
	for (size_t i = 0; gen && i < sizeof sampling / sizeof sampling[0]; i++) {
		json_t *v = json_object_get(gen, sampling[i].hf);
		int r = 0;

		if (!v || json_is_null(v))
			continue;
		if (sampling[i].type == GGUF_STRING && json_is_string(v))
			r = set_str_nonempty(m, sampling[i].key, json_string_value(v));
		else if (sampling[i].type == GGUF_I32 && json_is_integer(v))
			r = gguf_meta_set_i32(m, sampling[i].key, (int32_t)json_integer_value(v));
		else if (sampling[i].type == GGUF_F32 && json_is_number(v))
			r = gguf_meta_set_f32(m, sampling[i].key, (float)json_number_value(v));
		else {
			json_decref(gen);
			return err_set(e, "%s: %s has an unexpected type", path, sampling[i].hf);
		}
		if (r) {
			json_decref(gen);
			return err_set(e, "out of memory");
		}
	}
	json_decref(gen);
	if (modelname_parse(&mn, model_id, (int64_t)total_params))
		return err_set(e, "out of memory");
	if (!mn.size_label && total_params > 0) {
		char label[32];

		modelname_size_label(total_params, label);
		mn.size_label = strdup(label);
	}
	if (gguf_meta_set_str(m, "general.name", mn.name) ||
	    set_str_nonempty(m, "general.version", mn.version) ||
	    set_str_nonempty(m, "general.organization", mn.organization) ||
	    set_str_nonempty(m, "general.finetune", mn.finetune) ||
	    set_str_nonempty(m, "general.basename", mn.basename) ||
	    set_str_nonempty(m, "general.size_label", mn.size_label))
		err_set(e, "out of memory");
	else
		rc = 0;
	modelname_free(&mn);
	return rc;
}

static int meta_params(gguf_meta *m, const hparams *h, int ftype, err *e)
{
	static const char *const k_norm_eps[] = { "layer_norm_eps", "layer_norm_epsilon", "norm_epsilon", NULL };
	static const char *const k_rms[] = { "rms_norm_eps", "norm_eps", NULL };
	json_t *v, *theta = rope_theta(h);
	int r = 0;

	r |= set_arch_u32(m, h, "block_count", h->n_layer);
	r |= set_arch_u32(m, h, "context_length", h->n_ctx);
	r |= set_arch_u32(m, h, "embedding_length", h->n_embd);
	r |= set_arch_u32(m, h, "feed_forward_length", h->n_ff);
	r |= set_arch_u32(m, h, "attention.head_count", h->n_head);
	r |= set_arch_u32(m, h, "attention.head_count_kv", h->n_head_kv);
	if (json_is_false(json_object_get(h->cfg, "is_causal"))) {
		char k[128];

		snprintf(k, sizeof k, "%s.attention.causal", h->gguf_arch);
		r |= gguf_meta_set_bool(m, k, false);
	}
	if (h->rope_type) {
		json_t *f = json_object_get(h->rope, "factor");
		char k[128];

		snprintf(k, sizeof k, "%s.rope.scaling.type", h->gguf_arch);
		if (!strcmp(h->rope_type, "linear") && json_is_number(f)) {
			r |= gguf_meta_set_str(m, k, "linear");
			r |= set_arch_f32(m, h, "rope.scaling.factor", json_number_value(f));
		} else if (!strcmp(h->rope_type, "yarn") && json_is_number(f)) {
			json_t *o = json_object_get(h->rope, "original_max_position_embeddings");

			if (!json_is_integer(o))
				return err_set(e, "%s: yarn rope scaling without original_max_position_embeddings",
					       h->cfg_path);
			r |= gguf_meta_set_str(m, k, "yarn");
			r |= set_arch_f32(m, h, "rope.scaling.factor", json_number_value(f));
			r |= set_arch_u32(m, h, "rope.scaling.original_context_length", json_integer_value(o));
			if (json_is_number(v = json_object_get(h->rope, "extrapolation_factor")))
				r |= set_arch_f32(m, h, "rope.scaling.yarn_ext_factor", json_number_value(v));
			if (json_is_number(v = json_object_get(h->rope, "attention_factor")) ||
			    json_is_number(v = json_object_get(h->rope, "attn_factor")))
				r |= set_arch_f32(m, h, "rope.scaling.yarn_attn_factor", json_number_value(v));
			if (json_is_number(v = json_object_get(h->rope, "beta_fast")))
				r |= set_arch_f32(m, h, "rope.scaling.yarn_beta_fast", json_number_value(v));
			if (json_is_number(v = json_object_get(h->rope, "beta_slow")))
				r |= set_arch_f32(m, h, "rope.scaling.yarn_beta_slow", json_number_value(v));
		} else if (!strcmp(h->rope_type, "su") || !strcmp(h->rope_type, "longrope")) {
			return err_set(e, "%s: longrope scaling is not supported", h->cfg_path);
		}
		/* "default", "llama3" (a rope_freqs tensor) and others add no keys */
	}
	r |= set_arch_f32(m, h, "rope.freq_base", theta ? json_number_value(theta) : 10000.0);
	v = first_of(h->cfg, k_rms);
	r |= set_arch_f32(m, h, "attention.layer_norm_rms_epsilon", json_is_number(v) ? json_number_value(v) : 1e-6);
	if ((v = first_of(h->cfg, k_norm_eps)) && json_is_number(v))
		r |= set_arch_f32(m, h, "attention.layer_norm_epsilon", json_number_value(v));
	if (h->head_dim > 0) {
		r |= set_arch_u32(m, h, "attention.key_length", h->head_dim);
		r |= set_arch_u32(m, h, "attention.value_length", h->head_dim);
	}
	r |= gguf_meta_set_u32(m, "general.file_type", (uint32_t)ftype);
	if (h->arch == ARCH_LLAMA) {
		r |= set_arch_u32(m, h, "vocab_size", h->vocab_size);
		r |= set_arch_u32(m, h, "rope.dimension_count", h->rope_dim);
	}
	r |= gguf_meta_set_u32(m, "general.quantization_version", 2);
	return r ? err_set(e, "out of memory") : 0;
}

/* ---- streaming the data ---- */

/* Gives back the mapped source pages in [*from, to) once they are converted: the mapping is
 * read-only, so the kernel re-reads them if ever needed, and the resident set stays about one
 * chunk instead of growing to the whole checkpoint. */
static uintptr_t page_floor(const void *p)
{
	return (uintptr_t)p & ~((uintptr_t)sysconf(_SC_PAGESIZE) - 1);
}

static void release(const uint8_t **from, const uint8_t *to)
{
	uintptr_t a = page_floor(*from), b = page_floor(to);

	if (b > a) {
		madvise((void *)a, b - a, MADV_DONTNEED);
		*from = (const uint8_t *)b;
	}
}

static int write_tensor(gguf_writer *w, const st_model *m, const plan *p, float *f32, float *tmp, uint16_t *h16,
			uint64_t chunk_rows, err *e)
{
	uint64_t row = 0;
	const uint8_t *done;

	if (p->gen)
		return gguf_writer_write(w, p->gen, p->rows * sizeof(float), e);
	done = p->src->data;
	/* Start the kernel's read-ahead of the whole tensor: page cache, not resident set. */
	madvise((void *)page_floor(done), (uintptr_t)done + p->src->nbytes - page_floor(done), MADV_WILLNEED);
	while (row < p->rows) {
		uint64_t nr = p->rows - row < chunk_rows ? p->rows - row : chunk_rows;
		uint64_t n = nr * p->cols;
		const float *src = f32;

		if (st_read_f32(m, p->src, row * p->cols, n, f32, e))
			return -1;
		for (uint64_t i = 0; i < n; i++)
			if (!isfinite(f32[i]))
				return err_set(e, "%s: tensor %s: %s at element %llu", m->shards[p->src->shard].path,
					       p->src->name, isnan(f32[i]) ? "NaN" : "Inf",
					       (unsigned long long)(row * p->cols + i));
		if (p->permute) {
			/* Rows of one head are [first halves..., second halves...] in HF; GGUF wants
			 * them interleaved: out row 2i+t is in row t*half+i (whole heads per chunk). */
			uint64_t per_head = p->rows / p->permute, half = per_head / 2;

			for (uint64_t hb = 0; hb < nr; hb += per_head)
				for (uint64_t i = 0; i < half; i++)
					for (uint64_t t = 0; t < 2; t++)
						memcpy(tmp + (hb + 2 * i + t) * p->cols, f32 + (hb + t * half + i) * p->cols,
						       p->cols * sizeof(float));
			src = tmp;
		}
		if (p->type == GGUF_TYPE_F32) {
			if (gguf_writer_write(w, src, n * sizeof(float), e))
				return -1;
		} else {
			if (p->type == GGUF_TYPE_F16)
				half_row_from_f32(src, h16, n);
			else
				half_row_bf16_from_f32(src, h16, n);
			if (gguf_writer_write(w, h16, n * sizeof(uint16_t), e))
				return -1;
		}
		row += nr;
		release(&done, (const uint8_t *)p->src->data + p->src->nbytes * row / p->rows);
	}
	return 0;
}

/* Rows per chunk: about CHUNK_ELEMS elements, whole heads for permuted tensors. */
static uint64_t chunk_rows_of(const plan *p)
{
	uint64_t unit = p->permute ? p->rows / p->permute : 1;
	uint64_t n = CHUNK_ELEMS / (p->cols * unit);

	return (n ? n : 1) * unit;
}

int convert_run(const char *dir, const char *out, const convert_opts *o, convert_stats *stats, err *e)
{
	char cfg_path[4096];
	hparams h = { 0 };
	st_model m = { 0 };
	gguf_meta meta = { 0 };
	plan *plans = NULL;
	gguf_tensor *infos = NULL;
	uint8_t *seen = NULL;
	size_t n = 0;
	float *f32 = NULL, *tmp = NULL;
	uint16_t *h16 = NULL;
	gguf_writer *w = NULL;
	uint64_t total_params = 0, max_chunk = 0;
	int outtype = o->outtype, ftype, rc = -1;
	const char *model_id = o->name;

	if (load_hparams(&h, dir, cfg_path, sizeof cfg_path, e) || st_open(&m, dir, e))
		goto out;
	plans = calloc(m.n_tensors + 1, sizeof *plans);
	seen = calloc(3 + (size_t)h.n_layer * N_LAYER_MAP * 2, 1);
	if (!plans || !seen) {
		err_set(e, "out of memory");
		goto out;
	}
	/* --outtype auto: the first 2-D tensor in BF16 or F16 decides, as the reference does. */
	if (outtype == CONVERT_AUTO) {
		outtype = CONVERT_F32;
		for (size_t i = 0; i < m.n_tensors; i++)
			if (m.tensors[i].ndim >= 2 && (m.tensors[i].dtype == ST_BF16 || m.tensors[i].dtype == ST_F16)) {
				outtype = m.tensors[i].dtype == ST_BF16 ? CONVERT_BF16 : CONVERT_F16;
				break;
			}
	}
	ftype = outtype == CONVERT_F32 ? 0 : outtype == CONVERT_F16 ? 1 : 32;
	if (h.rope_type && !strcasecmp(h.rope_type, "llama3") && h.arch == ARCH_LLAMA) {
		if (llama3_rope(&h, &plans[n], e))
			goto out;
		n++;
	}
	for (size_t i = 0; i < m.n_tensors; i++) {
		plan *p = &plans[n];

		if (ignored(m.tensors[i].name))
			continue;
		if (map_tensor(&h, &m, &m.tensors[i], p, seen, e))
			goto out;
		if (p->n_dims <= 1 || strstr(p->name, "_norm.weight"))
			p->type = GGUF_TYPE_F32;
		else
			p->type = outtype == CONVERT_F32 ? GGUF_TYPE_F32 : outtype == CONVERT_F16 ? GGUF_TYPE_F16
												    : GGUF_TYPE_BF16;
		n++;
	}
	if (check_missing(&h, &m, seen, e))
		goto out;
	infos = calloc(n, sizeof *infos);
	if (!infos) {
		err_set(e, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t c = plans[i].src ? chunk_rows_of(&plans[i]) * plans[i].cols : 0;

		infos[i].name = plans[i].name;
		infos[i].type = plans[i].type;
		infos[i].n_dims = plans[i].n_dims;
		memcpy(infos[i].ne, plans[i].ne, sizeof infos[i].ne);
		total_params += plans[i].rows * plans[i].cols;
		if (c > max_chunk)
			max_chunk = c;
	}
	if (!model_id) {
		json_t *np = json_object_get(h.cfg, "_name_or_path");
		const char *s = json_string_value(np);
		int slashes = 0;

		for (const char *c = s; c && *c; c++)
			slashes += *c == '/';
		model_id = s && *s && slashes <= 1 ? s : "model";
	}
	if (meta_general(&meta, &h, dir, model_id, total_params, e) || meta_params(&meta, &h, ftype, e))
		goto out;
	vocab_opts vo = { (uint32_t)h.vocab_size, h.arch == ARCH_LLAMA };

	if (vocab_write(dir, &vo, &meta, e))
		goto out;
	f32 = malloc((max_chunk ? max_chunk : 1) * sizeof *f32);
	tmp = malloc((max_chunk ? max_chunk : 1) * sizeof *tmp);
	h16 = malloc((max_chunk ? max_chunk : 1) * sizeof *h16);
	if (!f32 || !tmp || !h16) {
		err_set(e, "out of memory");
		goto out;
	}
	w = gguf_writer_begin(out, 0, &meta, infos, n, e);
	if (!w)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (write_tensor(w, &m, &plans[i], f32, tmp, h16, plans[i].src ? chunk_rows_of(&plans[i]) : 1, e))
			goto out;
		if (o->progress)
			o->progress(o->ctx, plans[i].name, gguf_type(plans[i].type)->name, plans[i].rows * plans[i].cols);
		if (stats && plans[i].src)
			stats->in_bytes += plans[i].src->nbytes;
	}
	if (stats)
		stats->n_tensors = n;
	rc = gguf_writer_finish(w, stats ? stats->sha256 : NULL, e);
	w = NULL;
out:
	if (w)
		gguf_writer_abort(w);
	for (size_t i = 0; plans && i < n; i++)
		free(plans[i].gen);
	free(plans);
	free(infos);
	free(seen);
	free(f32);
	free(tmp);
	free(h16);
	gguf_meta_free(&meta);
	st_close(&m);
	json_decref(h.cfg);
	return rc;
}
