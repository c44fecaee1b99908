/* fuzz_recipe.c - libFuzzer target: any bytes as a recipe give a recipe or an error, never a crash or hang */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "recipe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[64];
	/* Small limits keep every input fast; the defaults are tested in test_recipe. */
	recipe_limits lim = { .instructions = 200000, .memory = 16u << 20, .seconds = 2 };
	err e = { 0 };
	recipe *r;

	if (!path[0]) {
		char dir[] = "/tmp/qbake-fuzz-recipe.XXXXXX";

		if (!mkdtemp(dir))
			abort();
		snprintf(path, sizeof path, "%s/recipe.lua", dir);
	}
	r = recipe_load_buffer(path, (const char *)data, size, &lim, &e);
	if (r) {
		char *c = recipe_canonical(r, NULL, NULL, NULL, &e);

		free(c);
	}
	recipe_free(r);
	return 0;
}
