/* inspect.h - `qbake inspect`: what a GGUF file, a safetensors file or an HF model folder holds */
#ifndef QBAKE_INSPECT_H
#define QBAKE_INSPECT_H

#include <jansson.h>

#include "err.h"

/* The command's help text (for the command table). */
extern const char inspect_help[];

/* The report on path (GGUF file, .safetensors file, safetensors index, or model folder)
 * as a JSON object, the one `--json` prints; NULL with e set when path is unreadable
 * or invalid. The caller owns the result (json_decref). */
json_t *inspect_report(const char *path, err *e);

/* `qbake inspect PATH [--json]`; returns the exit code (0 ok, 1 output failed,
 * 2 usage or unreadable/invalid input). */
int inspect_main(int argc, char **argv);

#endif
