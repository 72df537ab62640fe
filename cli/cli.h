/* Shared declarations of the dspyc command's subcommands (apps layer). */
#ifndef DSPYC_CLI_H
#define DSPYC_CLI_H

struct cli_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv); /* argv[0] is the subcommand's name */
};

int cmd_version(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_sim(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_cache(int argc, char **argv);
int cmd_loadtest(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_optimize(int argc, char **argv);
int cmd_vec(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_serve_jobs(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_jobs(int argc, char **argv);
int cmd_index(int argc, char **argv);
int cmd_tokens(int argc, char **argv);

#endif
