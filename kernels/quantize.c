/* quantize.c - the streaming quantization pipeline: plan every tensor's type, then convert one tensor at a time */
#include "quantize.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "quant.h"

/* llama.cpp's kv override strings hold at most 127 bytes; the imatrix keys are set that way. */
enum { KV_STR_MAX = 127 };

void quantize_plan_free(quantize_plan *p)
{
	free(p->items);
	gguf_meta_free(&p->meta);
	memset(p, 0, sizeof *p);
}

static const char *type_name(uint32_t type)
{
	const gguf_type_info *ti = gguf_type(type);

	return ti ? ti->name : "unknown";
}

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

/* The input must be the unquantized baseline: quantizing a quantized tensor again
 * compounds the error, so it is refused with no switch to allow it. */
static int check_unquantized(const gguf_file *in, err *e)
{
	for (uint64_t i = 0; i < in->n_tensors; i++) {
		const gguf_type_info *ti = gguf_type(in->tensors[i].type);

		if (ti && ti->quantized)
			return err_set(e, "%s: tensor %s is already quantized (%s): requantizing is refused; "
				       "start from the F16/BF16/F32 baseline", in->path, in->tensors[i].name, ti->name);
	}
	return 0;
}

/* Every imatrix value must be finite (llama-quantize checks them all up front). */
static int check_imatrix_finite(const imx_file *im, const char *path, err *e)
{
	for (size_t i = 0; i < im->n; i++)
		for (uint64_t j = 0; j < im->e[i].n; j++)
			if (!isfinite(im->e[i].weights[j]))
				return err_set(e, "%s: entry %s: value %llu is %s", path, im->e[i].name,
					       (unsigned long long)j, isnan(im->e[i].weights[j]) ? "NaN" : "Inf");
	return 0;
}

static bool is_token_embd(const char *name)
{
	return strcmp(name, "token_embd.weight") == 0 || strcmp(name, "per_layer_token_embd.weight") == 0;
}

/* Finds the quantizer weights for item it: the imatrix entry must hold one row length per
 * matrix (ne0 × ne2). */
static int attach_imatrix(quantize_item *it, const quantize_params *qp, err *e)
{
	const imx_entry *x;
	uint64_t want = it->in->ne[0] * it->in->ne[2];

	if (!qp->imatrix || it->type == it->in->type)
		return 0;
	x = imx_find(qp->imatrix, it->in->name);
	if (!x) {
		it->imatrix_missing = quant_uses_imatrix(it->type);
		return 0;
	}
	if (x->n != want) {
		/* llama.cpp tolerates this for token embeddings only (old imatrix files) */
		if (is_token_embd(it->in->name)) {
			it->imatrix_ignored = true;
			return 0;
		}
		return err_set(e, "%s: entry %s has %llu values, but tensor %s needs %llu (ne0 %llu x %llu matrices)",
			       qp->imatrix_path ? qp->imatrix_path : "imatrix", x->name, (unsigned long long)x->n,
			       it->in->name, (unsigned long long)want, (unsigned long long)it->in->ne[0],
			       (unsigned long long)it->in->ne[2]);
	}
	it->imatrix = x->weights;
	return 0;
}

static int set_str_trunc(gguf_meta *m, const char *key, const char *s)
{
	char buf[KV_STR_MAX + 1];

	snprintf(buf, sizeof buf, "%s", s);
	return gguf_meta_set_str(m, key, buf);
}

/* The output metadata: the input's keys in order, then the quantization keys appended
 * (ggml's setters remove a key before appending it, which moves it to the end). */
static int make_meta(quantize_plan *p, const gguf_file *in, const quantize_params *qp, err *e)
{
	static const char *const split_keys[] = { "split.no", "split.count", "split.tensors.count" };
	gguf_meta *m = &p->meta;
	int rc = 0;

	if (gguf_meta_copy(m, &in->meta) != 0)
		return err_set(e, "out of memory");
	gguf_meta_remove(m, "general.quantization_version");
	rc |= gguf_meta_set_u32(m, "general.quantization_version", 2);
	gguf_meta_remove(m, "general.file_type");
	rc |= gguf_meta_set_u32(m, "general.file_type", qp->tier->ftype);
	for (size_t i = 0; i < sizeof split_keys / sizeof split_keys[0]; i++)
		gguf_meta_remove(m, split_keys[i]);
	if (qp->imatrix) {
		const imx_file *im = qp->imatrix;
		static const char *const keys[] = { "quantize.imatrix.file", "quantize.imatrix.dataset",
						    "quantize.imatrix.entries_count", "quantize.imatrix.chunks_count" };

		for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
			gguf_meta_remove(m, keys[i]);
		/* the base name only: a directory would leak a host path into the artifact */
		rc |= set_str_trunc(m, keys[0], base_name(qp->imatrix_path ? qp->imatrix_path : "imatrix"));
		if (im->n_datasets > 0)
			rc |= set_str_trunc(m, keys[1], im->datasets[0]);
		rc |= gguf_meta_set_u32(m, keys[2], (uint32_t)im->n);
		if (im->chunk_count > 0)
			rc |= gguf_meta_set_u32(m, keys[3], (uint32_t)im->chunk_count);
	}
	return rc ? err_set(e, "out of memory") : 0;
}

static int plan_items(quantize_plan *p, const gguf_file *in, const quantize_params *qp, err *e)
{
	size_t n = (size_t)in->n_tensors;
	size_t *order = malloc((n ? n : 1) * sizeof *order);
	uint32_t *types = malloc((n ? n : 1) * sizeof *types);
	tier_options opt = qp->opt;
	tier_model m;
	int rc = -1;

	p->items = calloc(n ? n : 1, sizeof *p->items);
	if (!order || !types || !p->items) {
		err_set(e, "out of memory");
		goto out;
	}
	opt.has_imatrix = qp->imatrix != NULL;
	if (tier_model_from_meta(&m, &in->meta, e) != 0) {
		err_prefix(e, "%s", in->path);
		goto out;
	}
	if (tier_order(in->tensors, n, order) != 0) {
		err_set(e, "out of memory");
		goto out;
	}
	if (tier_choose(qp->tier, &opt, &m, in->tensors, order, n, types, &p->fallbacks, e) != 0) {
		err_prefix(e, "%s", in->path);
		goto out;
	}
	p->n = n;
	for (size_t i = 0; i < n; i++) {
		quantize_item *it = &p->items[i];
		const gguf_tensor *t = &in->tensors[order[i]];
		uint64_t rows = gguf_nelements(t) / t->ne[0];

		it->in = t;
		it->type = types[order[i]];
		it->in_bytes = t->nbytes;
		it->out_bytes = it->type == t->type ? t->nbytes : rows * gguf_row_size(it->type, t->ne[0]);
		if (it->type != t->type && (!quant_can_dequantize(t->type) || !quant_can_quantize(it->type))) {
			err_set(e, "%s: tensor %s: cannot convert %s to %s", in->path, t->name, type_name(t->type),
				type_name(it->type));
			goto out;
		}
		if (attach_imatrix(it, qp, e) != 0)
			goto out;
		p->in_bytes += it->in_bytes;
		p->out_bytes += it->out_bytes;
		p->n_elements += gguf_nelements(t);
		if (gguf_nelements(t) > p->max_elements)
			p->max_elements = gguf_nelements(t);
		if (it->type != t->type && it->out_bytes > p->max_out_bytes)
			p->max_out_bytes = it->out_bytes;
	}
	rc = 0;
out:
	free(order);
	free(types);
	return rc;
}

int quantize_plan_make(quantize_plan *p, const gguf_file *in, const quantize_params *qp, err *e)
{
	memset(p, 0, sizeof *p);
	if (check_unquantized(in, e) != 0 ||
	    (qp->imatrix && check_imatrix_finite(qp->imatrix, qp->imatrix_path ? qp->imatrix_path : "imatrix", e) != 0) ||
	    plan_items(p, in, qp, e) != 0 || make_meta(p, in, qp, e) != 0) {
		quantize_plan_free(p);
		return -1;
	}
	return 0;
}

/* ---- running ---- */

/* NaN or Inf anywhere in a tensor's rows is an error naming the tensor and the row. */
static int check_rows(const char *in_name, const gguf_tensor *t, const float *x, err *e)
{
	uint64_t ne0 = t->ne[0], rows = gguf_nelements(t) / ne0;

	for (uint64_t r = 0; r < rows; r++)
		for (uint64_t c = 0; c < ne0; c++)
			if (!isfinite(x[r * ne0 + c]))
				return err_set(e, "%s: tensor %s: row %llu, column %llu is %s", in_name, t->name,
					       (unsigned long long)r, (unsigned long long)c,
					       isnan(x[r * ne0 + c]) ? "NaN" : "Inf");
	return 0;
}

/* Converts one tensor into out (out_bytes of it->type). Each 2-D matrix of a 3-D+ tensor
 * (experts) is quantized with its own slice of the imatrix. */
static void convert(const quantize_item *it, const float *x, uint8_t *out, int threads)
{
	const gguf_tensor *t = it->in;
	uint64_t ne0 = t->ne[0], ne1 = t->ne[1], nmat = gguf_nelements(t) / (ne0 * ne1);
	uint64_t mat_bytes = ne1 * gguf_row_size(it->type, ne0);

	for (uint64_t m = 0; m < nmat; m++) {
		const float *imx = it->imatrix ? it->imatrix + (m % t->ne[2]) * ne0 : NULL;

		quant_rows_mt(it->type, x + m * ne0 * ne1, out + m * mat_bytes, (int64_t)ne1, (int64_t)ne0, imx,
			      threads);
	}
}

static int write_tensor(gguf_writer *w, const quantize_item *it, const char *in_name, float *f32, uint8_t *out,
			int threads, err *e)
{
	const gguf_tensor *t = it->in;

	if (quant_can_dequantize(t->type)) {
		quant_dequant_row(t->type, t->data, f32, (int64_t)gguf_nelements(t));
		if (check_rows(in_name, t, f32, e) != 0)
			return -1;
	}
	if (it->type == t->type)
		return gguf_writer_write(w, t->data, t->nbytes, e);
	convert(it, f32, out, threads);
	return gguf_writer_write(w, out, it->out_bytes, e);
}

/* Hands the input pages of a finished tensor back to the kernel, so that resident memory
 * stays near one tensor whatever the model size (the mapping re-reads them if touched). */
static void drop_pages(const gguf_file *in, const gguf_tensor *t)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t lo = (uintptr_t)t->data, hi = lo + t->nbytes;

	if (!in->mapped || page == 0 || page == (uintptr_t)-1)
		return;
	lo = (lo + page - 1) / page * page;
	hi = hi / page * page;
	if (hi > lo)
		madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

int quantize_run(const quantize_plan *p, const gguf_file *in, const char *out_path, int threads,
		 quantize_progress_fn progress, void *ctx, err *e)
{
	gguf_tensor *infos = calloc(p->n ? p->n : 1, sizeof *infos);
	float *f32 = malloc((p->max_elements ? p->max_elements : 1) * sizeof *f32);
	uint8_t *out = malloc(p->max_out_bytes ? p->max_out_bytes : 1);
	gguf_writer *w = NULL;
	int rc = -1;

	if (!infos || !f32 || !out) {
		err_set(e, "%s: out of memory for a %llu-element tensor", out_path, (unsigned long long)p->max_elements);
		goto out;
	}
	for (size_t i = 0; i < p->n; i++) {
		infos[i] = *p->items[i].in;
		infos[i].type = p->items[i].type;
		infos[i].data = NULL;
	}
	w = gguf_writer_begin(out_path, 0, &p->meta, infos, p->n, e);
	if (!w)
		goto out;
	for (size_t i = 0; i < p->n; i++) {
		if (write_tensor(w, &p->items[i], in->path, f32, out, threads < 1 ? 1 : threads, e) != 0)
			goto out;
		drop_pages(in, p->items[i].in);
		if (progress)
			progress(ctx, p, i);
	}
	rc = gguf_writer_finish(w, NULL, e);
	w = NULL;
out:
	if (w)
		gguf_writer_abort(w);
	free(infos);
	free(f32);
	free(out);
	return rc;
}
