/* evalcmd.h - `qbake perplexity` and `qbake generate`: measure a model, smoke-test it */
#ifndef QBAKE_EVALCMD_H
#define QBAKE_EVALCMD_H

/* Help texts for the command table. */
extern const char evalcmd_perplexity_help[];
extern const char evalcmd_generate_help[];
extern const char evalcmd_imatrix_help[];

/* `qbake perplexity -m MODEL -f TEXT [--ctx N] [--chunks N] [--threads N] [--json]`;
 * returns the exit code (0 ok, 1 failed, 2 usage or bad input). */
int evalcmd_perplexity_main(int argc, char **argv);
/* `qbake generate -m MODEL -p PROMPT [-n N] [--threads N]`; returns the exit code. */
int evalcmd_generate_main(int argc, char **argv);

/* `qbake imatrix -m MODEL -f CORPUS [--ctx N] [--chunks N] -o OUT [--format gguf|dat]`;
 * returns the exit code. */
int evalcmd_imatrix_main(int argc, char **argv);

#endif
