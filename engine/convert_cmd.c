/* convert_cmd.c - the `qbake convert` command line */
#include "convert_cmd.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "convert.h"
#include "sha256.h"

const char convert_cmd_help[] =
	"usage: qbake convert MODEL_DIR OUT.gguf [--outtype f32|f16|bf16|auto] [--name NAME] [--quiet]\n"
	"\n"
	"Converts a Hugging Face checkpoint folder (config.json, model.safetensors or sharded\n"
	"model-*.safetensors with model.safetensors.index.json, tokenizer.model or tokenizer.json,\n"
	"tokenizer_config.json, generation_config.json) into one GGUF file, natively: the same\n"
	"tensors, types, data and metadata as llama.cpp's convert_hf_to_gguf.py.\n"
	"Architectures: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM.\n"
	"\n"
	"options:\n"
	"  --outtype T   type of the 2-D weights: f32, f16 (default, as the reference), bf16, or\n"
	"                auto (the checkpoint's BF16/F16; an all-F32 checkpoint stays F32).\n"
	"                1-D tensors and norms are always F32.\n"
	"  --name NAME   the model id general.name, general.basename and general.size_label are\n"
	"                derived from, the way the reference derives them from a folder name\n"
	"                (\"pydoc-8m\" gives \"Pydoc 8m\", \"pydoc\", \"8M\"). Default: config.json's\n"
	"                _name_or_path when it is a hub id, else \"model\" -- never the folder name,\n"
	"                so one checkpoint converts to the same bytes wherever it lies.\n"
	"  --quiet       no per-tensor lines\n"
	"\n"
	"The file is written beside OUT and renamed into place when complete; on any error\n"
	"nothing is left at OUT. Memory stays near one chunk of rows, whatever the model size.\n"
	"\n"
	"exit codes: 0 converted, 1 conversion failed (bad checkpoint, write error),\n"
	"            2 usage error\n";

static void progress_cb(void *ctx, const char *tensor, const char *type, uint64_t nelem)
{
	(void)ctx;
	printf("%-32s %-5s %12llu\n", tensor, type, (unsigned long long)nelem);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int convert_cmd_main(int argc, char **argv)
{
	const char *pos[2] = { NULL, NULL };
	convert_opts o = { CONVERT_F16, NULL, progress_cb, NULL };
	convert_stats st = { 0 };
	int npos = 0;
	err e = { 0 };
	struct stat sb;
	double t0;
	char hex[65];

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--outtype") && i + 1 < argc) {
			o.outtype = convert_outtype(argv[++i]);
			if (o.outtype < 0) {
				fprintf(stderr, "qbake: --outtype %s: expected f32, f16, bf16 or auto\n", argv[i]);
				return 2;
			}
		} else if (!strcmp(argv[i], "--name") && i + 1 < argc) {
			o.name = argv[++i];
			if (!*o.name) {
				fprintf(stderr, "qbake: --name must not be empty\n");
				return 2;
			}
		} else if (!strcmp(argv[i], "--quiet")) {
			o.progress = NULL;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "qbake: convert: unknown or incomplete option %s (see qbake help convert)\n",
				argv[i]);
			return 2;
		} else if (npos < 2) {
			pos[npos++] = argv[i];
		} else {
			fprintf(stderr, "qbake: convert: too many arguments (see qbake help convert)\n");
			return 2;
		}
	}
	if (npos != 2) {
		fputs(convert_cmd_help, stderr);
		return 2;
	}
	if (stat(pos[0], &sb) || !S_ISDIR(sb.st_mode)) {
		fprintf(stderr, "qbake: %s: not a model folder\n", pos[0]);
		return 2;
	}
	t0 = now();
	if (convert_run(pos[0], pos[1], &o, &st, &e)) {
		fprintf(stderr, "qbake: %s\n", e.msg);
		return 1;
	}
	if (stat(pos[1], &sb) == 0)
		st.out_bytes = (uint64_t)sb.st_size;
	printf("wrote %s: %llu tensors, %llu bytes, sha256 %s, %.2f s\n", pos[1], (unsigned long long)st.n_tensors,
	       (unsigned long long)st.out_bytes, sha256_hex(st.sha256, hex), now() - t0);
	return 0;
}
