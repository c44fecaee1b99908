/* modelname.h - general.name / basename / size_label from a model id, as gguf-py's metadata heuristics */
#ifndef QBAKE_MODELNAME_H
#define QBAKE_MODELNAME_H

#include <stdint.h>

/* The parts of a model id such as "org/Model-7B-Instruct-v0.2". Every field is owned, NULL when
 * the heuristics find nothing (name is always set after a successful modelname_parse). */
typedef struct modelname {
	char *name;         /* title form of the name part: "Model 7B Instruct v0.2" */
	char *organization; /* title form of the part before '/' */
	char *basename;     /* "Model" */
	char *finetune;     /* "Instruct" */
	char *version;      /* "v0.2" */
	char *size_label;   /* "7B" */
} modelname;

/* Splits model_id; total_params (the model's parameter count) decides whether a size-like part
 * is the size or a context length. Returns 0, or -1 when out of memory. */
int modelname_parse(modelname *mn, const char *model_id, int64_t total_params);
/* Frees every field. */
void modelname_free(modelname *mn);
/* The size label gguf-py derives from a parameter count ("8.4M", "135M", "1.5B") into out. */
void modelname_size_label(uint64_t params, char out[32]);

#endif
