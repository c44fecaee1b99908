/* fuzz_gguf.c - libFuzzer target: gguf_parse on any bytes, then every value and tensor byte read */
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Where touch() leaves its result, so the reads are not optimised away. */
static volatile uint8_t sink;

/* Reads every byte a caller of a parsed file may touch, so ASan sees any bad pointer. */
static uint8_t touch(const gguf_file *f)
{
	uint8_t x = 0;

	for (size_t i = 0; i < f->meta.n; i++) {
		const gguf_value *v = &f->meta.kv[i].v;

		for (const char *k = f->meta.kv[i].key; *k; k++)
			x ^= (uint8_t)*k;
		if (v->type == GGUF_STRING) {
			for (uint64_t j = 0; j <= v->s.len; j++)
				x ^= (uint8_t)v->s.ptr[j];
		} else if (v->type == GGUF_ARRAY && v->atype == GGUF_STRING) {
			for (uint64_t j = 0; j < v->n; j++) {
				const gguf_str *s = &((const gguf_str *)v->arr)[j];

				for (uint64_t k = 0; k <= s->len; k++)
					x ^= (uint8_t)s->ptr[k];
			}
		} else if (v->type == GGUF_ARRAY) {
			static const size_t sz[] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };

			for (uint64_t j = 0; j < v->n * sz[v->atype]; j++)
				x ^= ((const uint8_t *)v->arr)[j];
		} else {
			x ^= (uint8_t)v->u;
		}
	}
	for (uint64_t i = 0; i < f->n_tensors; i++) {
		const gguf_tensor *t = &f->tensors[i];

		x ^= (uint8_t)gguf_type(t->type)->size;
		for (const char *k = t->name; *k; k++)
			x ^= (uint8_t)*k;
		for (uint64_t j = 0; j < t->nbytes; j++)
			x ^= ((const uint8_t *)t->data)[j];
	}
	return x;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	gguf_file f;
	err e = { 0 };

	if (gguf_parse(&f, data, size, "fuzz.gguf", &e) == 0) {
		sink ^= touch(&f);
		gguf_close(&f);
	} else if (!e.set) {
		__builtin_trap(); /* a failure must always say why */
	}
	return 0;
}
