/* cli.h - the qbake command line: command table, help, version */
#ifndef QBAKE_CLI_H
#define QBAKE_CLI_H

/* One subcommand. Its main gets argv with argv[0] = the command name and returns the
 * process exit code (0 ok, 1 failed, 2 usage or unreadable input, unless its help says more). */
typedef struct cli_command {
	const char *name;
	const char *summary; /* one line for `qbake --help` */
	const char *help;    /* full text for `qbake help NAME` and `NAME --help` */
	int (*main)(int argc, char **argv);
} cli_command;

/* Runs qbake with the process arguments; returns the exit code. */
int cli_main(int argc, char **argv);
/* Prints a command's full help to stdout; returns 0, or 2 if there is no such command. */
int cli_help(const char *name);
/* "qbake 0.1.0 (git describe)" */
const char *cli_version(void);

#endif
