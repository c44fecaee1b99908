/* inspect.c - `qbake inspect`: a report on a GGUF file, a safetensors checkpoint or an HF folder */
#include "inspect.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "safetensors.h"

const char inspect_help[] =
	"usage: qbake inspect PATH [--json]\n"
	"\n"
	"Describes a model file without changing it. PATH is a GGUF file, a .safetensors file,\n"
	"a model.safetensors.index.json (sharded checkpoint) or a Hugging Face model folder\n"
	"(config.json plus model.safetensors or the index and its shards). Everything is\n"
	"validated before anything is printed.\n"
	"\n"
	"The report: format and size; the file type (GGUF general.file_type, named as\n"
	"llama.cpp's llama_ftype: MOSTLY_Q4_K_M is tier Q4_K_M); whether the weights are\n"
	"already quantized (a GGUF tensor of a block-quantized type; for safetensors a 2-D+\n"
	"tensor of fewer than 16 bits per element, or a quantization_config in config.json);\n"
	"tensor count, weights, data bytes and bits per weight (data bits / weights); every\n"
	"metadata key with its type and value (arrays longer than 16 elements summarised as\n"
	"count and first 8 elements); the quantize.imatrix.* keys; the qbake.* provenance\n"
	"keys; for a folder, a summary of config.json; a histogram per tensor type (tensors,\n"
	"weights, bytes); and the tensor table (name, type, shape, bytes). GGUF shapes are\n"
	"listed ne0 first (innermost first, as llama.cpp prints them), safetensors shapes\n"
	"outermost first (as PyTorch does).\n"
	"\n"
	"options:\n"
	"  --json    print the same report as one JSON object (floats with 9 significant\n"
	"            digits, integers above 2^63-1 as decimal strings)\n"
	"  --help    this text\n"
	"\n"
	"exit codes:\n"
	"  0  the report was printed\n"
	"  1  the report could not be written (e.g. a closed pipe or a full disk)\n"
	"  2  usage error, or PATH is unreadable or not a valid GGUF/safetensors model\n"
	"     (the message names the file, the byte offset and what is wrong)\n"
	"\n"
	"example:\n"
	"  qbake inspect examples/pydoc-tiny\n"
	"  qbake inspect --json model-Q4_K_M.gguf | jq .file_type\n";

/* Arrays longer than this are summarised by their first INSPECT_FIRST elements. */
#define INSPECT_LONG 16
#define INSPECT_FIRST 8

/* llama.cpp's llama_ftype, by value (general.file_type); NULL for ids it never used or
 * removed. The tier is the name without "MOSTLY_". */
static const char *const ftype_names[] = {
	[0] = "ALL_F32", [1] = "MOSTLY_F16", [2] = "MOSTLY_Q4_0", [3] = "MOSTLY_Q4_1",
	[4] = "MOSTLY_Q4_1_SOME_F16", [7] = "MOSTLY_Q8_0", [8] = "MOSTLY_Q5_0",
	[9] = "MOSTLY_Q5_1", [10] = "MOSTLY_Q2_K", [11] = "MOSTLY_Q3_K_S",
	[12] = "MOSTLY_Q3_K_M", [13] = "MOSTLY_Q3_K_L", [14] = "MOSTLY_Q4_K_S",
	[15] = "MOSTLY_Q4_K_M", [16] = "MOSTLY_Q5_K_S", [17] = "MOSTLY_Q5_K_M",
	[18] = "MOSTLY_Q6_K", [19] = "MOSTLY_IQ2_XXS", [20] = "MOSTLY_IQ2_XS",
	[21] = "MOSTLY_Q2_K_S", [22] = "MOSTLY_IQ3_XS", [23] = "MOSTLY_IQ3_XXS",
	[24] = "MOSTLY_IQ1_S", [25] = "MOSTLY_IQ4_NL", [26] = "MOSTLY_IQ3_S",
	[27] = "MOSTLY_IQ3_M", [28] = "MOSTLY_IQ2_S", [29] = "MOSTLY_IQ2_M",
	[30] = "MOSTLY_IQ4_XS", [31] = "MOSTLY_IQ1_M", [32] = "MOSTLY_BF16",
	[36] = "MOSTLY_TQ1_0", [37] = "MOSTLY_TQ2_0", [38] = "MOSTLY_MXFP4_MOE",
};
/* llama.cpp ORs this into a file type it inferred from the tensors. */
#define FTYPE_GUESSED 1024

static const char *const value_types[] = {
	"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

/* ---- building the report ---- */

/* A JSON string of n bytes; bytes that are not UTF-8 become '?' so the report stays valid JSON. */
static json_t *jstr(const char *p, size_t n)
{
	json_t *j = json_stringn(p, n);
	char *copy;

	if (j)
		return j;
	copy = malloc(n + 1);
	if (!copy)
		return NULL;
	for (size_t i = 0; i < n; i++)
		copy[i] = (unsigned char)p[i] < 0x80 ? p[i] : '?';
	j = json_stringn(copy, n);
	free(copy);
	return j;
}

static json_t *ju64(uint64_t v)
{
	char buf[32];

	if (v <= INT64_MAX)
		return json_integer((json_int_t)v);
	snprintf(buf, sizeof buf, "%" PRIu64, v);
	return json_string(buf);
}

/* A float as the shortest decimal that reads back as the same f32 (so 1e-05f prints
 * as 1e-05, not 9.99999975e-06); NaN and infinities, which JSON lacks, as strings. */
static json_t *jf32(float x)
{
	char buf[64];

	if (isnan(x))
		return json_string("nan");
	if (isinf(x))
		return json_string(x > 0 ? "inf" : "-inf");
	for (int p = 1; p <= 9; p++) {
		snprintf(buf, sizeof buf, "%.*g", p, (double)x);
		if (strtof(buf, NULL) == x)
			break;
	}
	return json_real(strtod(buf, NULL));
}

static json_t *jf64(double x)
{
	if (isnan(x))
		return json_string("nan");
	if (isinf(x))
		return json_string(x > 0 ? "inf" : "-inf");
	return json_real(x);
}

/* Element i of an array value in gguf.h's native layout. */
static json_t *array_elem(const gguf_value *v, uint64_t i)
{
	switch (v->atype) {
	case GGUF_U8: return json_integer(((const uint8_t *)v->arr)[i]);
	case GGUF_I8: return json_integer(((const int8_t *)v->arr)[i]);
	case GGUF_U16: return json_integer(((const uint16_t *)v->arr)[i]);
	case GGUF_I16: return json_integer(((const int16_t *)v->arr)[i]);
	case GGUF_U32: return json_integer(((const uint32_t *)v->arr)[i]);
	case GGUF_I32: return json_integer(((const int32_t *)v->arr)[i]);
	case GGUF_F32: return jf32(((const float *)v->arr)[i]);
	case GGUF_BOOL: return json_boolean(((const uint8_t *)v->arr)[i]);
	case GGUF_STRING: {
		const gguf_str *s = &((const gguf_str *)v->arr)[i];

		return jstr(s->ptr, s->len);
	}
	case GGUF_U64: return ju64(((const uint64_t *)v->arr)[i]);
	case GGUF_I64: return json_integer(((const int64_t *)v->arr)[i]);
	case GGUF_F64: return jf64(((const double *)v->arr)[i]);
	default: return json_null();
	}
}

static json_t *scalar(const gguf_value *v)
{
	switch (v->type) {
	case GGUF_U8:
	case GGUF_U16:
	case GGUF_U32:
	case GGUF_U64: return ju64(v->u);
	case GGUF_I8:
	case GGUF_I16:
	case GGUF_I32:
	case GGUF_I64: return json_integer(v->i);
	case GGUF_F32: return jf32((float)v->f);
	case GGUF_F64: return jf64(v->f);
	case GGUF_BOOL: return json_boolean(v->u);
	case GGUF_STRING: return jstr(v->s.ptr, v->s.len);
	default: return json_null();
	}
}

static const char *vtype(uint32_t t)
{
	return t < sizeof value_types / sizeof value_types[0] ? value_types[t] : "?";
}

/* {"type": "u32", "value": 15}, or for arrays {"type": "array", "element_type", "count",
 * and "value" (all elements) or "first" (the first INSPECT_FIRST of a long one)}. */
static json_t *meta_value(const gguf_value *v)
{
	json_t *o = json_object(), *a;
	uint64_t n;

	json_object_set_new(o, "type", json_string(vtype(v->type)));
	if (v->type != GGUF_ARRAY) {
		json_object_set_new(o, "value", scalar(v));
		return o;
	}
	n = v->n > INSPECT_LONG ? INSPECT_FIRST : v->n;
	a = json_array();
	for (uint64_t i = 0; i < n; i++)
		json_array_append_new(a, array_elem(v, i));
	json_object_set_new(o, "element_type", json_string(vtype(v->atype)));
	json_object_set_new(o, "count", ju64(v->n));
	json_object_set_new(o, v->n > INSPECT_LONG ? "first" : "value", a);
	return o;
}

/* Per-type totals, in the order types are first met. */
typedef struct hist {
	const char *type[64];
	uint64_t n[64], bytes[64], elems[64];
	int len;
} hist;

static void hist_add(hist *h, const char *type, uint64_t bytes, uint64_t elems)
{
	int i;

	for (i = 0; i < h->len; i++)
		if (strcmp(h->type[i], type) == 0)
			break;
	if (i == h->len) {
		if (h->len == 64)
			return; /* more distinct types than either format has */
		h->type[h->len++] = type;
	}
	h->n[i]++;
	h->bytes[i] += bytes;
	h->elems[i] += elems;
}

/* The summary every format shares: counts, histogram, bits per weight. */
static void add_totals(json_t *r, const hist *h)
{
	json_t *hj = json_array();
	uint64_t n = 0, bytes = 0, elems = 0;

	for (int i = 0; i < h->len; i++) {
		json_array_append_new(hj, json_pack("{s:s,s:o,s:o,s:o}", "type", h->type[i],
			"tensors", ju64(h->n[i]), "elements", ju64(h->elems[i]), "bytes",
			ju64(h->bytes[i])));
		n += h->n[i];
		bytes += h->bytes[i];
		elems += h->elems[i];
	}
	json_object_set_new(r, "n_tensors", ju64(n));
	json_object_set_new(r, "elements", ju64(elems));
	json_object_set_new(r, "tensor_bytes", ju64(bytes));
	json_object_set_new(r, "bits_per_weight", elems ? json_real(8.0 * (double)bytes / (double)elems)
							 : json_null());
	json_object_set_new(r, "histogram", hj);
}

static json_t *file_type(const gguf_meta *m)
{
	uint64_t id;
	const char *name = NULL;
	bool guessed;
	uint64_t base;
	json_t *o;

	if (gguf_meta_get_u64(m, "general.file_type", &id) < 0)
		return json_null();
	guessed = (id & FTYPE_GUESSED) != 0;
	base = id & ~(uint64_t)FTYPE_GUESSED;
	if (base < sizeof ftype_names / sizeof ftype_names[0])
		name = ftype_names[base];
	o = json_pack("{s:o,s:s}", "id", ju64(id), "name", name ? name : "unknown");
	if (name)
		json_object_set_new(o, "tier", json_string(strncmp(name, "MOSTLY_", 7) == 0 ? name + 7
							  : strcmp(name, "ALL_F32") == 0 ? "F32" : name));
	if (guessed)
		json_object_set_new(o, "guessed", json_true());
	return o;
}

static json_t *report_gguf(const char *path, err *e)
{
	gguf_file f;
	json_t *r, *meta, *imat, *prov, *tensors;
	hist h = { 0 };
	bool quantized = false;

	if (gguf_open(&f, path, e) < 0)
		return NULL;
	meta = json_object();
	imat = json_object();
	prov = json_object();
	for (size_t i = 0; i < f.meta.n; i++) {
		const gguf_kv *kv = &f.meta.kv[i];

		json_object_set_new(meta, kv->key, meta_value(&kv->v));
		if (strncmp(kv->key, "quantize.imatrix.", 17) == 0)
			json_object_set_new(imat, kv->key, meta_value(&kv->v));
		if (strncmp(kv->key, "qbake.", 6) == 0)
			json_object_set_new(prov, kv->key, meta_value(&kv->v));
	}
	tensors = json_array();
	for (uint64_t i = 0; i < f.n_tensors; i++) {
		const gguf_tensor *t = &f.tensors[i];
		const gguf_type_info *ti = gguf_type(t->type);
		json_t *shape = json_array();

		for (uint32_t d = 0; d < t->n_dims; d++)
			json_array_append_new(shape, ju64(t->ne[d]));
		json_array_append_new(tensors, json_pack("{s:s,s:s,s:o,s:o,s:o,s:o}", "name", t->name,
			"type", ti->name, "shape", shape, "elements", ju64(gguf_nelements(t)),
			"bytes", ju64(t->nbytes), "offset", ju64(f.data_offset + t->offset)));
		hist_add(&h, ti->name, t->nbytes, gguf_nelements(t));
		quantized |= ti->quantized;
	}
	r = json_pack("{s:s,s:s,s:o,s:o,s:o,s:o,s:s}", "path", path, "format", "gguf",
		      "gguf_version", json_integer(f.version), "alignment", json_integer(f.alignment),
		      "file_size", ju64(f.size), "data_offset", ju64(f.data_offset),
		      "shape_order", "ne0 first");
	json_object_set_new(r, "file_type", file_type(&f.meta));
	json_object_set_new(r, "quantized", json_boolean(quantized));
	add_totals(r, &h);
	json_object_set_new(r, "metadata", meta);
	json_object_set_new(r, "imatrix", imat);
	json_object_set_new(r, "provenance", prov);
	json_object_set_new(r, "tensors", tensors);
	gguf_close(&f);
	return r;
}

/* The config.json keys that say what the model is, when present. */
static json_t *config_summary(const json_t *cfg)
{
	static const char *const keys[] = {
		"architectures", "model_type", "hidden_size", "intermediate_size",
		"num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
		"vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta",
		"rope_parameters", "rope_scaling", "tie_word_embeddings", "torch_dtype", "dtype",
		"quantization_config",
	};
	json_t *o = json_object();

	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		json_t *v = json_object_get(cfg, keys[i]);

		if (v)
			json_object_set_new(o, keys[i], json_deep_copy(v));
	}
	return o;
}

/* Reads dir/config.json when there is one: *cfg stays NULL without it. Returns 0, or -1
 * when it exists but is not a JSON object. */
static int read_config(const char *dir, json_t **cfg, err *e)
{
	char path[4096];
	json_error_t je;
	struct stat sb;

	*cfg = NULL;
	snprintf(path, sizeof path, "%s/config.json", dir);
	if (stat(path, &sb) < 0)
		return 0;
	*cfg = json_load_file(path, 0, &je);
	if (!*cfg)
		return err_set(e, "%s: offset %d: not valid JSON: %s", path, je.position, je.text);
	if (!json_is_object(*cfg)) {
		json_decref(*cfg);
		*cfg = NULL;
		return err_set(e, "%s: not a JSON object", path);
	}
	return 0;
}

/* Fewer than 16 bits per element in a matrix means someone already quantized it
 * (FP8/FP4 checkpoints, or integer-packed GPTQ/AWQ weights). */
static bool st_quantized(const st_tensor *t)
{
	return t->ndim >= 2 && st_dtype(t->dtype)->bits < 16;
}

static json_t *report_st(const char *path, bool folder, err *e)
{
	st_model m;
	json_t *r, *meta, *tensors, *shards, *cfg = NULL;
	hist h = { 0 };
	bool quantized = false;
	uint64_t size = 0;

	if (folder && read_config(path, &cfg, e) < 0)
		return NULL;
	if (st_open(&m, path, e) < 0) {
		json_decref(cfg);
		return NULL;
	}
	meta = json_object();
	for (size_t i = 0; i < m.shards[0].n_meta; i++)
		json_object_set_new(meta, m.shards[0].meta[i].key,
				    json_pack("{s:s,s:o}", "type", "string", "value",
					      jstr(m.shards[0].meta[i].value,
						   strlen(m.shards[0].meta[i].value))));
	shards = json_array();
	for (uint32_t i = 0; i < m.n_shards; i++) {
		json_array_append_new(shards, json_pack("{s:s,s:o,s:o}", "path", m.shards[i].path,
			"size", ju64(m.shards[i].size), "header_len", ju64(m.shards[i].header_len)));
		size += m.shards[i].size;
	}
	tensors = json_array();
	for (size_t i = 0; i < m.n_tensors; i++) {
		const st_tensor *t = &m.tensors[i];
		const char *dt = st_dtype(t->dtype)->name;
		json_t *shape = json_array(), *tj;

		for (uint32_t d = 0; d < t->ndim; d++)
			json_array_append_new(shape, ju64(t->shape[d]));
		tj = json_pack("{s:s,s:s,s:o,s:o,s:o,s:o}", "name", t->name, "type", dt, "shape", shape,
			       "elements", ju64(t->nelem), "bytes", ju64(t->nbytes), "offset",
			       ju64(t->offset));
		if (m.n_shards > 1)
			json_object_set_new(tj, "shard", json_integer(t->shard));
		json_array_append_new(tensors, tj);
		hist_add(&h, dt, t->nbytes, t->nelem);
		quantized |= st_quantized(t);
	}
	if (cfg && json_object_get(cfg, "quantization_config"))
		quantized = true;
	r = json_pack("{s:s,s:s,s:o,s:s}", "path", path, "format", folder ? "hf-folder" : "safetensors",
		      "file_size", ju64(size), "shape_order", "outermost first");
	json_object_set_new(r, "index", m.index_path ? json_string(m.index_path) : json_null());
	json_object_set_new(r, "shards", shards);
	json_object_set_new(r, "file_type", json_null());
	json_object_set_new(r, "quantized", json_boolean(quantized));
	add_totals(r, &h);
	if (folder)
		json_object_set_new(r, "config", cfg ? config_summary(cfg) : json_null());
	json_object_set_new(r, "metadata", meta);
	json_object_set_new(r, "imatrix", json_object());
	json_object_set_new(r, "provenance", json_object());
	json_object_set_new(r, "tensors", tensors);
	json_decref(cfg);
	st_close(&m);
	return r;
}

/* GGUF files say so in their first four bytes; anything else is taken for safetensors. */
static int is_gguf(const char *path, err *e)
{
	char magic[4];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return err_errno(e, "%s: cannot open", path);
	n = read(fd, magic, 4);
	close(fd);
	if (n < 0)
		return err_errno(e, "%s: cannot read", path);
	return n == 4 && memcmp(magic, "GGUF", 4) == 0;
}

json_t *inspect_report(const char *path, err *e)
{
	struct stat sb;
	int g;

	if (stat(path, &sb) < 0) {
		err_errno(e, "%s: cannot open", path);
		return NULL;
	}
	if (S_ISDIR(sb.st_mode))
		return report_st(path, true, e);
	g = is_gguf(path, e);
	if (g < 0)
		return NULL;
	return g ? report_gguf(path, e) : report_st(path, false, e);
}

/* ---- text ---- */

static uint64_t jnum(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);

	if (json_is_integer(v))
		return (uint64_t)json_integer_value(v);
	if (json_is_string(v))
		return strtoull(json_string_value(v), NULL, 10);
	return 0;
}

static const char *jtext(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "?";
}

/* A string with control characters escaped, cut after max bytes. */
static void put_str(FILE *out, const char *s, size_t len, size_t max, bool quoted)
{
	if (quoted)
		fputc('"', out);
	for (size_t i = 0; i < len && i < max; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\n')
			fputs("\\n", out);
		else if (c == '\t')
			fputs("\\t", out);
		else if (c == '"' && quoted)
			fputs("\\\"", out);
		else if (c == '\\')
			fputs("\\\\", out);
		else if (c < 0x20 || c == 0x7f)
			fprintf(out, "\\x%02x", c);
		else
			fputc(c, out);
	}
	if (quoted)
		fputc('"', out);
	if (len > max)
		fprintf(out, "... (%zu bytes)", len);
}

static void put_scalar(FILE *out, const json_t *v, bool quoted)
{
	switch (json_typeof(v)) {
	case JSON_STRING:
		put_str(out, json_string_value(v), json_string_length(v), 96, quoted);
		break;
	case JSON_INTEGER:
		fprintf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		break;
	case JSON_REAL:
		fprintf(out, "%.9g", json_real_value(v));
		break;
	case JSON_TRUE:
		fputs("true", out);
		break;
	case JSON_FALSE:
		fputs("false", out);
		break;
	default: {
		char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(9));

		if (s) {
			put_str(out, s, strlen(s), 96, false);
			free(s);
		}
	}
	}
}

static void put_meta(FILE *out, const json_t *meta)
{
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)meta, k, v) {
		const json_t *val = json_object_get(v, "value"), *first = json_object_get(v, "first");
		const char *type = jtext(v, "type");
		char tbuf[64];

		if (strcmp(type, "array") == 0)
			snprintf(tbuf, sizeof tbuf, "%s[%llu]", jtext(v, "element_type"),
				 (unsigned long long)jnum(v, "count"));
		else
			snprintf(tbuf, sizeof tbuf, "%s", type);
		fprintf(out, "  %-40s %-14s ", k, tbuf);
		if (strcmp(type, "array") == 0) {
			const json_t *a = val ? val : first, *x;
			size_t i;

			json_array_foreach(a, i, x) {
				if (i)
					fputs(", ", out);
				put_scalar(out, x, true);
			}
			if (first)
				fprintf(out, ", ... (%llu more)",
					(unsigned long long)(jnum(v, "count") - json_array_size(first)));
		} else {
			put_scalar(out, val, false);
		}
		fputc('\n', out);
	}
}

static void put_shape(FILE *out, const json_t *shape, int width)
{
	char buf[128];
	size_t n = 0, i;
	const json_t *d;

	buf[0] = 0;
	json_array_foreach(shape, i, d)
		n += (size_t)snprintf(buf + n, n < sizeof buf ? sizeof buf - n : 0, "%s%llu",
				      i ? " x " : "", (unsigned long long)json_integer_value(d));
	if (json_array_size(shape) == 0)
		snprintf(buf, sizeof buf, "scalar");
	fprintf(out, "%-*s", width, buf);
}

static void put_totals(FILE *out, const json_t *r)
{
	const json_t *bpw = json_object_get(r, "bits_per_weight");
	size_t i;
	const json_t *h;
	uint64_t total = jnum(r, "tensor_bytes");

	fprintf(out, "tensors:     %llu, %llu weights, %llu bytes of tensor data",
		(unsigned long long)jnum(r, "n_tensors"), (unsigned long long)jnum(r, "elements"),
		(unsigned long long)total);
	if (json_is_real(bpw))
		fprintf(out, ", %.4f bits per weight", json_real_value(bpw));
	fputs("\n\ntypes:\n", out);
	fprintf(out, "  %-10s %8s %14s %14s %7s\n", "type", "tensors", "weights", "bytes", "share");
	json_array_foreach(json_object_get(r, "histogram"), i, h)
		fprintf(out, "  %-10s %8llu %14llu %14llu %6.2f%%\n", jtext(h, "type"),
			(unsigned long long)jnum(h, "tensors"), (unsigned long long)jnum(h, "elements"),
			(unsigned long long)jnum(h, "bytes"),
			total ? 100.0 * (double)jnum(h, "bytes") / (double)total : 0.0);
}

static void put_keys(FILE *out, const char *title, const json_t *keys)
{
	if (json_object_size(keys) == 0) {
		fprintf(out, "%s: none\n", title);
		return;
	}
	fprintf(out, "%s:\n", title);
	put_meta(out, keys);
}

static void render_text(FILE *out, const json_t *r)
{
	const json_t *ft = json_object_get(r, "file_type"), *cfg = json_object_get(r, "config");
	const char *format = jtext(r, "format");
	size_t i;
	const json_t *t;

	fprintf(out, "%s: ", jtext(r, "path"));
	if (strcmp(format, "gguf") == 0)
		fprintf(out, "GGUF v%llu, %llu bytes, alignment %llu\n",
			(unsigned long long)jnum(r, "gguf_version"), (unsigned long long)jnum(r, "file_size"),
			(unsigned long long)jnum(r, "alignment"));
	else
		fprintf(out, "%s, %zu shard%s, %llu bytes\n",
			strcmp(format, "hf-folder") == 0 ? "Hugging Face model folder (safetensors)"
							 : "safetensors",
			json_array_size(json_object_get(r, "shards")),
			json_array_size(json_object_get(r, "shards")) == 1 ? "" : "s",
			(unsigned long long)jnum(r, "file_size"));
	if (json_is_object(ft))
		fprintf(out, "file type:   %s (general.file_type = %llu)%s\n", jtext(ft, "name"),
			(unsigned long long)jnum(ft, "id"),
			json_object_get(ft, "guessed") ? ", guessed by llama.cpp" : "");
	else if (strcmp(format, "gguf") == 0)
		fputs("file type:   unknown (no general.file_type)\n", out);
	else
		fputs("file type:   none (safetensors has no file type; see the types below)\n", out);
	fprintf(out, "quantized:   %s\n", json_is_true(json_object_get(r, "quantized")) ? "yes" : "no");
	put_totals(out, r);
	if (json_is_object(cfg)) {
		fputs("\nconfig.json:\n", out);
		const char *k;
		json_t *v;

		json_object_foreach((json_t *)cfg, k, v) {
			fprintf(out, "  %-40s ", k);
			put_scalar(out, v, false);
			fputc('\n', out);
		}
	} else if (strcmp(format, "hf-folder") == 0) {
		fputs("\nconfig.json: none\n", out);
	}
	fprintf(out, "\nmetadata (%zu key%s):\n", json_object_size(json_object_get(r, "metadata")),
		json_object_size(json_object_get(r, "metadata")) == 1 ? "" : "s");
	put_meta(out, json_object_get(r, "metadata"));
	fputc('\n', out);
	put_keys(out, "importance matrix (quantize.imatrix.*)", json_object_get(r, "imatrix"));
	put_keys(out, "provenance (qbake.*)", json_object_get(r, "provenance"));
	fprintf(out, "\ntensors (shape %s):\n", jtext(r, "shape_order"));
	fprintf(out, "  %-48s %-8s %-24s %12s\n", "name", "type", "shape", "bytes");
	json_array_foreach(json_object_get(r, "tensors"), i, t) {
		fprintf(out, "  %-48s %-8s ", jtext(t, "name"), jtext(t, "type"));
		put_shape(out, json_object_get(t, "shape"), 24);
		fprintf(out, " %12llu\n", (unsigned long long)jnum(t, "bytes"));
	}
}

int inspect_main(int argc, char **argv)
{
	const char *path = NULL;
	bool as_json = false;
	json_t *r;
	err e = { 0 };
	int bad;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			as_json = true;
		} else if (argv[i][0] == '-' && argv[i][1] && strcmp(argv[i], "--") != 0) {
			fprintf(stderr, "qbake: inspect: unknown option %s (see qbake help inspect)\n", argv[i]);
			return 2;
		} else if (strcmp(argv[i], "--") == 0 && i + 1 < argc && !path) {
			path = argv[++i];
		} else if (!path) {
			path = argv[i];
		} else {
			fprintf(stderr, "qbake: inspect: one PATH only (see qbake help inspect)\n");
			return 2;
		}
	}
	if (!path) {
		fprintf(stderr, "qbake: inspect: missing PATH (see qbake help inspect)\n");
		return 2;
	}
	r = inspect_report(path, &e);
	if (!r) {
		fprintf(stderr, "qbake: %s\n", e.msg[0] ? e.msg : "inspect failed");
		return 2;
	}
	if (as_json) {
		bad = json_dumpf(r, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(9)) < 0;
		bad |= fputc('\n', stdout) == EOF;
	} else {
		render_text(stdout, r);
		bad = 0;
	}
	bad |= fflush(stdout) != 0 || ferror(stdout);
	json_decref(r);
	if (bad) {
		fprintf(stderr, "qbake: inspect: cannot write the report: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}
