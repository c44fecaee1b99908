/* imatrix_cmd.h - `qbake imatrix`: compute an importance matrix from a calibration text */
#ifndef QBAKE_IMATRIX_CMD_H
#define QBAKE_IMATRIX_CMD_H

/* Help text for the command table. */
extern const char imatrix_cmd_help[];

/* `qbake imatrix -m MODEL -f CORPUS -o OUT [--ctx N] [--chunks N] [--threads N]
 * [--format gguf|dat]`; returns the exit code (0 written, 1 failed, 2 usage or bad input). */
int imatrix_cmd_main(int argc, char **argv);

#endif
