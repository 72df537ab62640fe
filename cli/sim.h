/* `dspyc sim` flags (apps layer): parsing into struct dspy_sim_options, shared by the sim
 * command and the --sim flag of the commands that start the simulator in-process. */
#ifndef DSPYC_CLI_SIM_H
#define DSPYC_CLI_SIM_H

#include <stdio.h>

#include <dspyc/sim.h>

/* Parse flags from argv[0..argc) (all of them; no subcommand name) into o, which starts as
 * DSPY_SIM_OPTIONS_INIT or a command's defaults. A "--sim-" prefix is accepted on every flag
 * ("--sim-ttft-ms 20"), so other subcommands can pass such flags through. Returns 0 on
 * success, 1 if --help was given, -1 on an error (written to err). String values are
 * borrowed from argv. */
int sim_parse_args(struct dspy_sim_options *o, int argc, char **argv, FILE *err);
/* Create and start a simulator from parsed options; NULL after writing why to err (naming
 * the flag for an out-of-range option), *code then 2 for bad options, else 1. */
dspy_sim *sim_open(const struct dspy_sim_options *o, FILE *err, int *code);
/* Describe every flag. */
void sim_usage(FILE *out);

#endif
