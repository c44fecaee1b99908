/* cli.c - the qbake command line */
#include "cli.h"

#include <stdio.h>
#include <string.h>

#include "audit.h"
#include "build.h"
#include "cachecmd.h"
#include "convert_cmd.h"
#include "evalcmd.h"
#include "inspect.h"
#include "quantize_cmd.h"
#include "verify.h"

/* Each command lives in its own module; this table is the only place that lists them. */
static const cli_command commands[] = {
	{ "build", "build a recipe's release, rebuilding only what changed", build_help, build_main },
	{ "plan", "show what a build would do, and why, without doing it", plan_help, plan_main },
	{ "inspect", "describe a GGUF file, a safetensors checkpoint or an HF model folder", inspect_help, inspect_main },
	{ "convert", "Hugging Face checkpoint folder to GGUF (Llama, Mistral, Qwen2)", convert_cmd_help,
	  convert_cmd_main },
	{ "quantize", "quantize an F16/BF16/F32 GGUF to a tier, bit-identical to llama-quantize", quantize_cmd_help,
	  quantize_cmd_main },
	{ "cache", "check the build cache: cache verify", cachecmd_cache_help, cachecmd_cache_main },
	{ "gc", "shrink the build cache", cachecmd_gc_help, cachecmd_gc_main },
	{ "perplexity", "measure a model's perplexity on a text (llama-perplexity's method)", evalcmd_perplexity_help, evalcmd_perplexity_main },
	{ "imatrix", "compute an importance matrix from a calibration text (llama-imatrix's method)", evalcmd_imatrix_help, evalcmd_imatrix_main },
	{ "generate", "greedy continuation of a prompt, for smoke tests", evalcmd_generate_help, evalcmd_generate_main },
	{ "keygen", "make an Ed25519 signing key pair for release attestations", audit_keygen_help, audit_keygen_main },
	{ "audit", "where a GGUF came from, checked against its signed attestation", audit_help, audit_main },
	{ "verify", "rebuild a release from scratch and compare every digest with it", verify_help, verify_main },
	{ NULL, NULL, NULL, NULL },
};

static const cli_command *find(const char *name)
{
	for (const cli_command *c = commands; c->name; c++)
		if (strcmp(c->name, name) == 0)
			return c;
	return NULL;
}

const char *cli_version(void)
{
	return "qbake " QBAKE_VERSION " (" QBAKE_GIT_DESCRIBE ")";
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: qbake COMMAND [ARGS]\n"
		"\n"
		"qbake turns a model checkpoint into a reproducible, audited release of quantized\n"
		"GGUF files.\n"
		"\n"
		"commands:\n");
	for (const cli_command *c = commands; c->name; c++)
		fprintf(out, "  %-12s %s\n", c->name, c->summary);
	fprintf(out,
		"\n"
		"  qbake help COMMAND   full help for one command\n"
		"  qbake --version      version and the git commit it was built from\n"
		"\n"
		"Exit codes: 0 success, 1 the command failed, 2 usage error or unreadable input;\n"
		"a command's help lists any others.\n");
}

int cli_help(const char *name)
{
	const cli_command *c = find(name);

	if (!c) {
		fprintf(stderr, "qbake: no command '%s' (see qbake --help)\n", name);
		return 2;
	}
	fputs(c->help, stdout);
	return 0;
}

int cli_main(int argc, char **argv)
{
	const cli_command *c;

	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
		printf("%s\n", cli_version());
		return 0;
	}
	if (strcmp(argv[1], "help") == 0) {
		if (argc < 3) {
			usage(stdout);
			return 0;
		}
		return cli_help(argv[2]);
	}
	c = find(argv[1]);
	if (!c) {
		fprintf(stderr, "qbake: no command '%s' (see qbake --help)\n", argv[1]);
		return 2;
	}
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return cli_help(c->name);
	}
	return c->main(argc - 1, argv + 1);
}
