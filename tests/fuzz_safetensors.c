/* fuzz_safetensors.c - libFuzzer target: any bytes through the safetensors parser */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

/* Parses the input as a .safetensors image; on success reads every readable tensor as
 * f32, so a pointer that validation let through outside the buffer is caught by ASan.
 * The input is copied to an exactly sized heap block for the same reason. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = malloc(size ? size : 1);
	st_model m;
	err e = { 0 };

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	if (st_parse(&m, buf, size, "fuzz", &e) == 0) {
		for (size_t i = 0; i < m.n_tensors; i++) {
			const st_tensor *t = &m.tensors[i];
			float *v;

			if (st_find(&m, t->name) != t)
				abort();
			v = malloc((size_t)t->nelem * sizeof *v + 1);
			if (v && st_read_f32(&m, t, 0, t->nelem, v, &e) < 0 && st_dtype(t->dtype)->readable)
				abort();
			err_clear(&e);
			free(v);
		}
		st_close(&m);
	} else if (!e.set || strncmp(e.msg, "fuzz: ", 6) != 0) {
		abort(); /* every rejection must say what is wrong, naming the input */
	}
	free(buf);
	return 0;
}
