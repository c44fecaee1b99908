/* quantize_cmd.h - `qbake quantize`: the command line over kernels/quantize */
#ifndef QBAKE_QUANTIZE_CMD_H
#define QBAKE_QUANTIZE_CMD_H

/* The full --help text. */
extern const char quantize_cmd_help[];

/* Runs `qbake quantize` (argv[0] = "quantize"); returns 0 ok, 1 failed or refused,
 * 2 usage error or unreadable input. */
int quantize_cmd_main(int argc, char **argv);

#endif
