/* convert_cmd.h - `qbake convert`: Hugging Face checkpoint folder to GGUF */
#ifndef QBAKE_CONVERT_CMD_H
#define QBAKE_CONVERT_CMD_H

/* The command's help text (for the command table). */
extern const char convert_cmd_help[];

/* Runs `qbake convert MODEL_DIR OUT.gguf [options]`; returns the exit code. */
int convert_cmd_main(int argc, char **argv);

#endif
