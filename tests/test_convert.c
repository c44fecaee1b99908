/* test_convert.c - qbake convert against llama.cpp's convert_hf_to_gguf.py output, shards, and bad input */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "check.h"
#include "convert.h"
#include "gguf.h"
#include "safetensors.h"
#include "sha256.h"

static const char *fixture, *golden, *tmp;

/* ---- references ---- */

/* The whole-file SHA-256 file-sha256.txt records for file (hex), or NULL. */
static char *golden_file_sha(const char *file)
{
	char path[4096], line[512];
	static char hex[65];
	FILE *f;

	snprintf(path, sizeof path, "%s/file-sha256.txt", golden);
	f = fopen(path, "r");
	if (!f)
		return NULL;
	while (fgets(line, sizeof line, f)) {
		char h[65], name[400];

		if (sscanf(line, "%64s %399s", h, name) == 2 && !strcmp(name, file)) {
			fclose(f);
			memcpy(hex, h, 65);
			return hex;
		}
	}
	fclose(f);
	return NULL;
}

/* Checks every tensor of out against tensors.tsv rows for golden file gfile: same names in the
 * same order, types, shapes and SHA-256 of the data. */
static void check_tensors_tsv(const char *out, const char *gfile)
{
	char path[4096], line[1024];
	gguf_file g;
	err e = { 0 };
	FILE *f;
	uint64_t i = 0;

	if (gguf_open(&g, out, &e)) {
		CHECK(0, "%s", e.msg);
		return;
	}
	snprintf(path, sizeof path, "%s/tensors.tsv", golden);
	f = fopen(path, "r");
	CHECK(f != NULL, "%s unreadable", path);
	while (f && fgets(line, sizeof line, f)) {
		char file[256], name[128], type[16], shape[64], hex[65], got[65], gshape[64];
		uint8_t d[32];
		const gguf_tensor *t;

		if (sscanf(line, "%255s %127s %15s %63s %64s", file, name, type, shape, hex) != 5 || strcmp(file, gfile))
			continue;
		CHECK(i < g.n_tensors, "%s: fewer tensors than %s", out, gfile);
		if (i >= g.n_tensors)
			break;
		t = &g.tensors[i++];
		CHECK(!strcmp(t->name, name), "%s: tensor %llu is %s, golden %s", out, (unsigned long long)i - 1,
		      t->name, name);
		CHECK(!strcmp(gguf_type(t->type)->name, type), "%s: %s type %s, golden %s", out, name,
		      gguf_type(t->type)->name, type);
		gshape[0] = 0;
		for (uint32_t k = 0; k < t->n_dims; k++)
			snprintf(gshape + strlen(gshape), sizeof gshape - strlen(gshape), "%s%llu", k ? "x" : "",
				 (unsigned long long)t->ne[k]);
		CHECK(!strcmp(gshape, shape), "%s: %s shape %s, golden %s", out, name, gshape, shape);
		sha256_buf(t->data, t->nbytes, d);
		CHECK(!strcmp(sha256_hex(d, got), hex), "%s: %s data differs from %s", out, name, gfile);
	}
	CHECK(i == g.n_tensors && i > 0, "%s: %llu tensors, golden %s has %llu", out,
	      (unsigned long long)g.n_tensors, gfile, (unsigned long long)i);
	if (f)
		fclose(f);
	gguf_close(&g);
}

static size_t elem_size(uint32_t t)
{
	switch (t) {
	case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
	case GGUF_U16: case GGUF_I16: return 2;
	case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
	default: return 8;
	}
}

static bool value_eq(const gguf_value *a, const gguf_value *b)
{
	if (a->type != b->type)
		return false;
	switch (a->type) {
	case GGUF_STRING:
		return a->s.len == b->s.len && !memcmp(a->s.ptr, b->s.ptr, a->s.len);
	case GGUF_ARRAY:
		if (a->atype != b->atype || a->n != b->n)
			return false;
		if (a->atype == GGUF_STRING) {
			const gguf_str *x = a->arr, *y = b->arr;

			for (uint64_t i = 0; i < a->n; i++)
				if (x[i].len != y[i].len || memcmp(x[i].ptr, y[i].ptr, x[i].len))
					return false;
			return true;
		}
		return !memcmp(a->arr, b->arr, a->n * elem_size(a->atype));
	case GGUF_F32: case GGUF_F64:
		return a->f == b->f;
	case GGUF_I8: case GGUF_I16: case GGUF_I32: case GGUF_I64:
		return a->i == b->i;
	default:
		return a->u == b->u;
	}
}

/* Every key of out equals the golden file's, in the same order, except those in skip. */
static void check_meta(const char *out, const char *gpath, const char *const *skip)
{
	gguf_file a, b;
	err e = { 0 };
	size_t j = 0;

	if (gguf_open(&a, out, &e) || gguf_open(&b, gpath, &e)) {
		CHECK(0, "%s", e.msg);
		return;
	}
	for (size_t i = 0; i < b.meta.n; i++) {
		const gguf_kv *g = &b.meta.kv[i];
		bool skipped = false;

		for (const char *const *s = skip; *s; s++)
			skipped |= !strcmp(*s, g->key);
		while (j < a.meta.n && skip[0] && !strcmp(a.meta.kv[j].key, skip[0]) && strcmp(g->key, skip[0]))
			j++;
		if (skipped) {
			if (j < a.meta.n && !strcmp(a.meta.kv[j].key, g->key))
				j++;
			continue;
		}
		CHECK(j < a.meta.n && !strcmp(a.meta.kv[j].key, g->key), "%s: key %zu is %s, golden has %s", out, j,
		      j < a.meta.n ? a.meta.kv[j].key : "(end)", g->key);
		if (j < a.meta.n && !strcmp(a.meta.kv[j].key, g->key))
			CHECK(value_eq(&a.meta.kv[j].v, &g->v), "%s: %s differs from the golden value", out, g->key);
		j++;
	}
	CHECK(j == a.meta.n, "%s: %zu keys where golden %s has %zu", out, a.meta.n, gpath, b.meta.n);
	gguf_close(&a);
	gguf_close(&b);
}

static void file_sha(const char *path, char hex[65])
{
	uint8_t d[32];
	err e = { 0 };

	if (sha256_file(path, d, &e)) {
		CHECK(0, "%s", e.msg);
		strcpy(hex, "?");
		return;
	}
	sha256_hex(d, hex);
}

static int convert(const char *dir, const char *out, int type, const char *name, err *e)
{
	convert_opts o = { type, name, NULL, NULL };

	err_clear(e);
	return convert_run(dir, out, &o, NULL, e);
}

/* ---- the golden conversions ---- */

static void test_golden(void)
{
	static const struct {
		int type;
		const char *file;
	} cases[] = {
		{ CONVERT_F32, "pydoc-8m-F32.gguf" },
		{ CONVERT_F16, "pydoc-8m-F16.gguf" },
		{ CONVERT_BF16, "pydoc-8m-BF16.gguf" },
		{ CONVERT_AUTO, "pydoc-8m-BF16.gguf" }, /* the fixture is BF16 */
	};
	static const char *const name_only[] = { "general.name", NULL };
	static const char *const name_keys[] = { "general.name", "general.basename", "general.size_label", NULL };

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char out[4096], gpath[4096], hex[65];
		const char *want = golden_file_sha(cases[i].file);
		err e = { 0 };

		snprintf(out, sizeof out, "%s/named-%zu.gguf", tmp, i);
		snprintf(gpath, sizeof gpath, "%s/%s", golden, cases[i].file);
		/* With the model id the reference took from the folder name, the whole file is equal. */
		CHECK(convert(fixture, out, cases[i].type, "pydoc-8m", &e) == 0, "%s", e.msg);
		file_sha(out, hex);
		CHECK(want && !strcmp(hex, want), "%s: sha256 %s, golden %s is %s", out, hex, cases[i].file,
		      want ? want : "missing");
		check_tensors_tsv(out, cases[i].file);
		if (cases[i].type != CONVERT_F32) /* the F32 golden exists only as hashes */
			check_meta(out, gpath, name_only);

		/* Without a name: same tensors, same keys except the three derived from the name. */
		snprintf(out, sizeof out, "%s/anon-%zu.gguf", tmp, i);
		CHECK(convert(fixture, out, cases[i].type, NULL, &e) == 0, "%s", e.msg);
		check_tensors_tsv(out, cases[i].file);
		if (cases[i].type != CONVERT_F32) {
			gguf_file g;

			check_meta(out, gpath, name_keys);
			if (gguf_open(&g, out, &e) == 0) {
				const char *n = gguf_meta_get_str(&g.meta, "general.name");
				const char *sl = gguf_meta_get_str(&g.meta, "general.size_label");

				CHECK(n && !strcmp(n, "Model"), "default general.name %s", n ? n : "(none)");
				/* 8,392,960 parameters: gguf-py's label is 8.4M */
				CHECK(sl && !strcmp(sl, "8.4M"), "default size_label %s", sl ? sl : "(none)");
				CHECK(!gguf_meta_find(&g.meta, "general.basename"), "no basename without a name");
				gguf_close(&g);
			}
		}
	}
}

/* ---- writing safetensors files for the shard and bad-input cases ---- */

typedef struct wtensor {
	const char *name;
	const char *dtype;
	uint32_t ndim;
	uint64_t shape[2];
	const void *data;
	uint64_t nbytes;
} wtensor;

static void write_st(const char *path, const wtensor *t, size_t n)
{
	json_t *h = json_object();
	uint64_t off = 0;
	char *js;
	uint64_t len;
	FILE *f;

	json_object_set_new(h, "__metadata__", json_pack("{s:s}", "format", "pt"));
	for (size_t i = 0; i < n; i++) {
		json_t *shape = json_array();

		for (uint32_t k = 0; k < t[i].ndim; k++)
			json_array_append_new(shape, json_integer((json_int_t)t[i].shape[k]));
		json_object_set_new(h, t[i].name, json_pack("{s:s,s:o,s:[I,I]}", "dtype", t[i].dtype, "shape", shape,
							     "data_offsets", (json_int_t)off,
							     (json_int_t)(off + t[i].nbytes)));
		off += t[i].nbytes;
	}
	js = json_dumps(h, JSON_COMPACT);
	len = strlen(js);
	f = fopen(path, "wb");
	CHECK(f != NULL, "cannot write %s", path);
	if (f) {
		fwrite(&len, 8, 1, f);
		fwrite(js, 1, len, f);
		for (size_t i = 0; i < n; i++)
			fwrite(t[i].data, 1, t[i].nbytes, f);
		fclose(f);
	}
	free(js);
	json_decref(h);
}

static wtensor from_st(const st_tensor *t)
{
	wtensor w = { t->name, st_dtype(t->dtype)->name, t->ndim, { t->shape[0], t->shape[1] }, t->data, t->nbytes };

	return w;
}

/* A copy of the fixture folder without its weights (they are written by the caller). */
static void make_dir(const char *dir, const char *src)
{
	CHECK(check_system("mkdir -p '%s' && cd '%s' && for f in *.json tokenizer.model; do "
			   "[ \"$f\" = model.safetensors.index.json ] || cp \"$f\" '%s/'; done",
			   dir, src, dir) == 0, "copy %s", src);
}

static bool dir_has_only(const char *dir, const char *name)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	bool ok = true;

	if (!d)
		return false;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.' || strncmp(de->d_name, ".qbake", 6) == 0)
			ok &= !strcmp(de->d_name, name) || !strcmp(de->d_name, ".") || !strcmp(de->d_name, "..");
	closedir(d);
	return ok;
}

static void test_shards(const st_model *m)
{
	char dir[2048], path[4096], single[4096], sharded[4096], h1[65], h2[65];
	size_t cut[4] = { 0, 7, 40, m->n_tensors };
	json_t *idx = json_pack("{s:{s:I},s:{}}", "metadata", "total_size", (json_int_t)m->total_bytes, "weight_map");
	err e = { 0 };

	snprintf(dir, sizeof dir, "%s/sharded", tmp);
	make_dir(dir, fixture);
	/* Three shards in a different tensor grouping than the single file's order. */
	for (int s = 0; s < 3; s++) {
		wtensor *w = calloc(m->n_tensors, sizeof *w);
		size_t n = 0;

		snprintf(path, sizeof path, "%s/model-%05d-of-00003.safetensors", dir, s + 1);
		for (size_t i = cut[s]; i < cut[s + 1]; i++) {
			w[n++] = from_st(&m->tensors[i]);
			json_object_set_new(json_object_get(idx, "weight_map"), m->tensors[i].name,
					    json_string(strrchr(path, '/') + 1));
		}
		write_st(path, w, n);
		free(w);
	}
	snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
	json_dump_file(idx, path, JSON_INDENT(2));
	json_decref(idx);
	snprintf(single, sizeof single, "%s/single.gguf", tmp);
	snprintf(sharded, sizeof sharded, "%s/sharded.gguf", tmp);
	CHECK(convert(fixture, single, CONVERT_F16, "pydoc-8m", &e) == 0, "%s", e.msg);
	CHECK(convert(dir, sharded, CONVERT_F16, "pydoc-8m", &e) == 0, "sharded: %s", e.msg);
	file_sha(single, h1);
	file_sha(sharded, h2);
	CHECK(!strcmp(h1, h2), "sharded checkpoint converts to %s, single file to %s", h2, h1);
}

/* ---- bad input: the error names the file and the problem, and nothing is left at OUT ---- */

/* Runs the CLI on dir; checks exit code 1, a message containing want, and no output file. */
static void expect_fail(const char *dir, const char *want, const char *what)
{
	char out[4096], log[4096], *msg;
	int rc;

	snprintf(out, sizeof out, "%s/outdir", tmp);
	check_system("rm -rf '%s' && mkdir -p '%s'", out, out);
	snprintf(log, sizeof log, "%s/err.txt", tmp);
	rc = check_system("'%s' convert '%s' '%s/x.gguf' --quiet 2>'%s'", getenv("QBAKE_BIN"), dir, out, log);
	msg = check_slurp(log, NULL);
	CHECK(rc == 1, "%s: exit code %d, want 1", what, rc);
	CHECK(msg && strstr(msg, want), "%s: message \"%s\" lacks \"%s\"", what, msg ? msg : "", want);
	CHECK(msg && !strncmp(msg, "qbake: ", 7), "%s: message not prefixed: %s", what, msg ? msg : "");
	CHECK(dir_has_only(out, "(nothing)"), "%s: something was left in %s", what, out);
	free(msg);
}

/* A fixture copy whose weights are the fixture's with one change made by edit. */
typedef void (*edit_fn)(wtensor *w, size_t *n, void *buf);

static void bad_weights(const st_model *m, const char *name, edit_fn edit, const char *want)
{
	char dir[2048], path[4096];
	wtensor *w = calloc(m->n_tensors + 1, sizeof *w);
	size_t n = 0;
	static float buf[4096];

	snprintf(dir, sizeof dir, "%s/bad-%s", tmp, name);
	make_dir(dir, fixture);
	for (size_t i = 0; i < m->n_tensors; i++)
		w[n++] = from_st(&m->tensors[i]);
	edit(w, &n, buf);
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	write_st(path, w, n);
	free(w);
	expect_fail(dir, want, name);
}

static wtensor *find_w(wtensor *w, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(w[i].name, name))
			return &w[i];
	return NULL;
}

static void drop_tensor(wtensor *w, size_t *n, void *buf)
{
	wtensor *t = find_w(w, *n, "model.layers.3.mlp.up_proj.weight");

	(void)buf;
	*t = w[--*n];
}

static void add_tensor(wtensor *w, size_t *n, void *buf)
{
	w[*n] = (wtensor){ "model.layers.0.mlp.extra_proj.weight", "F32", 1, { 4, 0 }, buf, 16 };
	++*n;
}

static void reshape_tensor(wtensor *w, size_t *n, void *buf)
{
	wtensor *t = find_w(w, *n, "model.layers.2.self_attn.k_proj.weight");

	(void)buf;
	t->shape[0] = 64, t->shape[1] = 512; /* same bytes, wrong shape */
}

static void int_tensor(wtensor *w, size_t *n, void *buf)
{
	wtensor *t = find_w(w, *n, "model.norm.weight");

	(void)buf;
	t->dtype = "I16"; /* 256 x 2 bytes: a valid file, an unsupported dtype */
}

static void nan_tensor(wtensor *w, size_t *n, void *buf)
{
	wtensor *t = find_w(w, *n, "model.layers.5.post_attention_layernorm.weight");
	float *f = buf;

	for (int i = 0; i < 256; i++)
		f[i] = 1.0f;
	f[77] = NAN;
	*t = (wtensor){ t->name, "F32", 1, { 256, 0 }, f, 1024 };
}

static void inf_tensor(wtensor *w, size_t *n, void *buf)
{
	wtensor *t = find_w(w, *n, "model.layers.1.input_layernorm.weight");
	float *f = buf;

	for (int i = 0; i < 256; i++)
		f[i] = 1.0f;
	f[200] = -INFINITY;
	*t = (wtensor){ t->name, "F32", 1, { 256, 0 }, f, 1024 };
}

static void test_bad(const st_model *m)
{
	char dir[4096];

	bad_weights(m, "missing", drop_tensor, "missing tensor model.layers.3.mlp.up_proj.weight");
	bad_weights(m, "extra", add_tensor, "model.layers.0.mlp.extra_proj.weight is not part of a LlamaForCausalLM");
	bad_weights(m, "shape", reshape_tensor,
		    "model.layers.2.self_attn.k_proj.weight has shape [64, 512], config.json implies [128, 256]");
	bad_weights(m, "dtype", int_tensor, "model.norm.weight: unsupported dtype I16");
	bad_weights(m, "nan", nan_tensor, "model.layers.5.post_attention_layernorm.weight: NaN at element 77");
	bad_weights(m, "inf", inf_tensor, "model.layers.1.input_layernorm.weight: Inf at element 200");

	/* Truncated weights: the safetensors reader names the file. */
	snprintf(dir, sizeof dir, "%s/bad-trunc", tmp);
	make_dir(dir, fixture);
	check_system("head -c 9000000 '%s/model.safetensors' > '%s/model.safetensors'", fixture, dir);
	expect_fail(dir, "model.safetensors", "truncated");

	/* Unknown architecture: the error lists the supported ones. */
	snprintf(dir, sizeof dir, "%s/bad-arch", tmp);
	make_dir(dir, fixture);
	check_system("ln -s '%s/model.safetensors' '%s/' && sed -i 's/LlamaForCausalLM/GPTNeoXForCausalLM/' '%s/config.json'",
		     fixture, dir, dir);
	expect_fail(dir, "architecture GPTNeoXForCausalLM is not supported (supported: LlamaForCausalLM, "
		    "MistralForCausalLM, Qwen2ForCausalLM)", "arch");

	/* A SentencePiece vocabulary larger than vocab_size: refused with the reason. */
	snprintf(dir, sizeof dir, "%s/bad-vocab", tmp);
	{
		char *tiny = check_shared_path("fixtures/pydoc-tiny");

		make_dir(dir, tiny);
		check_system("ln -s '%s/model.safetensors' '%s/' && cp '%s/tokenizer.model' '%s/'", tiny, dir, fixture, dir);
		free(tiny);
	}
	expect_fail(dir, "tokenizer.model: 4096 pieces but config.json vocab_size is 1024", "vocab");

	/* Missing config.json */
	snprintf(dir, sizeof dir, "%s/bad-noconfig", tmp);
	check_system("mkdir -p '%s' && ln -s '%s/model.safetensors' '%s/'", dir, fixture, dir);
	expect_fail(dir, "config.json", "noconfig");
}

/* ---- other architectures and config styles ---- */

/* A fixture copy whose config.json is edited by the sed script. */
static void edited_copy(const char *dir, const char *sed)
{
	make_dir(dir, fixture);
	CHECK(check_system("ln -sf '%s/model.safetensors' '%s/' && sed -i -e '%s' '%s/config.json'", fixture, dir, sed,
			   dir) == 0, "edit %s", dir);
}

static void same_as_golden(const char *dir, const char *what)
{
	char out[4096], hex[65];
	const char *want = golden_file_sha("pydoc-8m-F16.gguf");
	err e = { 0 };

	snprintf(out, sizeof out, "%s/%s.gguf", tmp, what);
	CHECK(convert(dir, out, CONVERT_F16, "pydoc-8m", &e) == 0, "%s: %s", what, e.msg);
	file_sha(out, hex);
	CHECK(want && !strcmp(hex, want), "%s: differs from the golden F16 file", what);
}

static void test_arch(const st_model *m)
{
	char dir[2048], path[4096], out[4096];
	err e = { 0 };
	gguf_file g;

	/* MistralForCausalLM is converted exactly as Llama by the reference. */
	snprintf(dir, sizeof dir, "%s/mistral", tmp);
	edited_copy(dir, "s/LlamaForCausalLM/MistralForCausalLM/; s/\"model_type\": \"llama\"/\"model_type\": \"mistral\"/");
	same_as_golden(dir, "mistral");

	/* transformers 4 spelling of the same config: rope_theta at the top, torch_dtype. */
	snprintf(dir, sizeof dir, "%s/tf4", tmp);
	edited_copy(dir, "/\"rope_parameters\"/,/}/c\\  \"rope_scaling\": null,\\n  \"rope_theta\": 10000.0,");
	CHECK(check_system("sed -i 's/\"dtype\"/\"torch_dtype\"/' '%s/config.json' && ! grep -q rope_parameters '%s/config.json'",
			   dir, dir) == 0, "tf4 config");
	same_as_golden(dir, "tf4");

	/* Linear RoPE scaling (transformers 4 style) adds its two keys after head_count_kv. */
	snprintf(dir, sizeof dir, "%s/linear", tmp);
	edited_copy(dir, "/\"rope_parameters\"/,/}/c\\  \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0},\\n  \"rope_theta\": 500000.0,");
	snprintf(out, sizeof out, "%s/linear.gguf", tmp);
	CHECK(convert(dir, out, CONVERT_BF16, NULL, &e) == 0, "linear: %s", e.msg);
	if (gguf_open(&g, out, &e) == 0) {
		long kv = gguf_meta_index(&g.meta, "llama.attention.head_count_kv");
		double f = 0;

		CHECK(kv > 0 && (size_t)kv + 3 < g.meta.n &&
		      !strcmp(g.meta.kv[kv + 1].key, "llama.rope.scaling.type") &&
		      !strcmp(g.meta.kv[kv + 2].key, "llama.rope.scaling.factor") &&
		      !strcmp(g.meta.kv[kv + 3].key, "llama.rope.freq_base"), "rope scaling keys in the reference's place");
		CHECK(!strcmp(gguf_meta_get_str(&g.meta, "llama.rope.scaling.type"), "linear"), "type");
		CHECK(gguf_meta_get_f64(&g.meta, "llama.rope.freq_base", &f) == 0 && f == 500000.0, "theta %g", f);
		gguf_close(&g);
	} else {
		CHECK(0, "%s", e.msg);
	}

	/* rope_type llama3 adds rope_freqs.weight first (float32 factors; checked here against
	 * the formula in double precision: the reference computes them in torch float32). */
	snprintf(dir, sizeof dir, "%s/llama3", tmp);
	edited_copy(dir, "/\"rope_parameters\"/,/}/c\\  \"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000.0, \"factor\": 32.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192},");
	snprintf(out, sizeof out, "%s/llama3.gguf", tmp);
	CHECK(convert(dir, out, CONVERT_F16, NULL, &e) == 0, "llama3: %s", e.msg);
	if (gguf_open(&g, out, &e) == 0) {
		const gguf_tensor *rf = &g.tensors[0];

		CHECK(g.n_tensors == 76 && !strcmp(rf->name, "rope_freqs.weight") && rf->type == GGUF_TYPE_F32 &&
		      rf->n_dims == 1 && rf->ne[0] == 16, "rope_freqs.weight first, F32 [16]");
		for (int i = 0; i < 16 && rf->ne[0] == 16; i++) {
			double freq = 1.0 / pow(500000.0, 2.0 * i / 32.0), wl = 2 * M_PI / freq, want;

			if (wl < 8192.0 / 4.0)
				want = 1.0;
			else if (wl > 8192.0)
				want = 32.0;
			else {
				double smooth = (8192.0 / wl - 1.0) / (4.0 - 1.0);

				want = 1.0 / ((1 - smooth) / 32.0 + smooth);
			}
			CHECK(fabs(((const float *)rf->data)[i] - want) <= 1e-5 * want, "rope factor %d: %g, want %g", i,
			      ((const float *)rf->data)[i], want);
		}
		CHECK(!gguf_meta_find(&g.meta, "llama.rope.scaling.type"), "llama3 scaling adds no keys");
		gguf_close(&g);
	} else {
		CHECK(0, "%s", e.msg);
	}

	/* Qwen2: q/k/v biases, no q/k row permutation, no vocab_size or rope.dimension_count keys. */
	snprintf(dir, sizeof dir, "%s/qwen2", tmp);
	make_dir(dir, fixture);
	check_system("sed -i 's/LlamaForCausalLM/Qwen2ForCausalLM/; s/\"model_type\": \"llama\"/\"model_type\": \"qwen2\"/' '%s/config.json'",
		     dir);
	{
		wtensor *w = calloc(m->n_tensors + 24, sizeof *w);
		static float bias[8][3][256];
		size_t n = 0;
		static char names[8][3][64];
		static const char *const proj[3] = { "q", "k", "v" };

		for (size_t i = 0; i < m->n_tensors; i++)
			w[n++] = from_st(&m->tensors[i]);
		for (int l = 0; l < 8; l++)
			for (int p = 0; p < 3; p++) {
				uint64_t len = p ? 128 : 256;

				for (uint64_t i = 0; i < len; i++)
					bias[l][p][i] = (float)(l * 1000 + p * 100) + (float)i * 0.25f;
				snprintf(names[l][p], 64, "model.layers.%d.self_attn.%s_proj.bias", l, proj[p]);
				w[n++] = (wtensor){ names[l][p], "F32", 1, { len, 0 }, bias[l][p], len * 4 };
			}
		snprintf(path, sizeof path, "%s/model.safetensors", dir);
		write_st(path, w, n);
		free(w);
		snprintf(out, sizeof out, "%s/qwen2.gguf", tmp);
		CHECK(convert(dir, out, CONVERT_BF16, NULL, &e) == 0, "qwen2: %s", e.msg);
		if (gguf_open(&g, out, &e) == 0) {
			const gguf_tensor *qb = gguf_find_tensor(&g, "blk.3.attn_q.bias");
			const gguf_tensor *kb = gguf_find_tensor(&g, "blk.3.attn_k.bias");
			const gguf_tensor *qw = gguf_find_tensor(&g, "blk.3.attn_q.weight");
			const st_tensor *sq = st_find(m, "model.layers.3.self_attn.q_proj.weight");

			CHECK(g.n_tensors == 75 + 24, "%llu tensors", (unsigned long long)g.n_tensors);
			CHECK(!strcmp(gguf_meta_get_str(&g.meta, "general.architecture"), "qwen2"), "arch");
			CHECK(gguf_meta_find(&g.meta, "qwen2.block_count") && gguf_meta_find(&g.meta, "qwen2.rope.freq_base"),
			      "qwen2.* hyper-parameters");
			CHECK(!gguf_meta_find(&g.meta, "qwen2.vocab_size") && !gguf_meta_find(&g.meta, "qwen2.rope.dimension_count"),
			      "the reference's Qwen2 writes neither vocab_size nor rope.dimension_count");
			CHECK(qb && qb->type == GGUF_TYPE_F32 && qb->n_dims == 1 && qb->ne[0] == 256 &&
			      !memcmp(qb->data, bias[3][0], 1024), "q bias kept as is, F32");
			CHECK(kb && kb->ne[0] == 128 && !memcmp(kb->data, bias[3][1], 512), "k bias not permuted");
			CHECK(qw && sq && qw->type == GGUF_TYPE_BF16 && !memcmp(qw->data, sq->data, sq->nbytes),
			      "Qwen2 q weight rows keep the checkpoint's order");
			gguf_close(&g);
		} else {
			CHECK(0, "%s", e.msg);
		}
	}
	/* The biases are required for Qwen2. */
	snprintf(dir, sizeof dir, "%s/qwen2-nobias", tmp);
	edited_copy(dir, "s/LlamaForCausalLM/Qwen2ForCausalLM/");
	expect_fail(dir, "missing tensor model.layers.0.self_attn.q_proj.bias", "qwen2 without biases");
}

/* A smaller SentencePiece vocabulary is padded to vocab_size, as the reference does. */
static void test_padding(void)
{
	char dir[4096], out[4096], *tiny = check_shared_path("fixtures/pydoc-tiny");
	err e = { 0 };
	gguf_file g;

	snprintf(dir, sizeof dir, "%s/padded", tmp);
	make_dir(dir, fixture);
	check_system("ln -s '%s/model.safetensors' '%s/' && cp '%s/tokenizer.model' '%s/'", fixture, dir, tiny, dir);
	free(tiny);
	snprintf(out, sizeof out, "%s/padded.gguf", tmp);
	CHECK(convert(dir, out, CONVERT_BF16, NULL, &e) == 0, "%s", e.msg);
	if (gguf_open(&g, out, &e) == 0) {
		const gguf_value *tok = gguf_meta_get_arr(&g.meta, "tokenizer.ggml.tokens", GGUF_STRING);
		const gguf_value *sc = gguf_meta_get_arr(&g.meta, "tokenizer.ggml.scores", GGUF_F32);
		const gguf_value *ty = gguf_meta_get_arr(&g.meta, "tokenizer.ggml.token_type", GGUF_I32);

		CHECK(tok && tok->n == 4096 && sc && sc->n == 4096 && ty && ty->n == 4096, "padded to 4096");
		if (tok && tok->n == 4096 && sc && ty) {
			CHECK(!strcmp(((gguf_str *)tok->arr)[1024].ptr, "[PAD1024]"), "pad name %s",
			      ((gguf_str *)tok->arr)[1024].ptr);
			CHECK(!strcmp(((gguf_str *)tok->arr)[4095].ptr, "[PAD4095]"), "last pad");
			CHECK(((float *)sc->arr)[2000] == -10000.0f, "pad score");
			CHECK(((int32_t *)ty->arr)[2000] == 5, "pad type UNUSED");
			CHECK(((int32_t *)ty->arr)[3] == 6, "byte piece type kept");
		}
		gguf_close(&g);
	} else {
		CHECK(0, "%s", e.msg);
	}
}

int main(void)
{
	char path[4096];
	st_model m = { 0 };
	err e = { 0 };

	fixture = check_shared_path("fixtures/pydoc-8m");
	golden = check_shared_path("golden/pydoc-8m");
	tmp = check_tmpdir();
	test_golden();
	snprintf(path, sizeof path, "%s/model.safetensors", fixture);
	if (st_open(&m, path, &e) == 0) {
		test_shards(&m);
		test_bad(&m);
		test_arch(&m);
		st_close(&m);
	} else {
		CHECK(0, "%s", e.msg);
	}
	test_padding();
	free((char *)fixture);
	free((char *)golden);
	return check_done();
}
