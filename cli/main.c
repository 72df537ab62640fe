/* The dspyc command: dispatches to one subcommand per file (apps layer). */
#include <stdio.h>
#include <string.h>

#include <dspyc/dspyc.h>

#include "cli.h"

static const struct cli_command commands[] = {
    { "bench", "benchmark LM calls: latency, throughput, overhead, memory", cmd_bench },
    { "cache", "cache stats, clear, export and import (disk and Redis levels)", cmd_cache },
    { "embed", "sentence embeddings (all-MiniLM-L6-v2) of texts or JSON lines", cmd_embed },
    { "eval", "score a program on a devset with a metric (DSPy's Evaluate)", cmd_eval },
    { "index", "build and search BM25 indexes of passage corpora", cmd_index },
    { "jobs", "submit, watch and fetch jobs of 'dspyc serve --jobs'", cmd_jobs },
    { "loadtest", "load-test an endpoint or a program, open or closed loop", cmd_loadtest },
    { "optimize", "optimize demos and instructions (bootstrap, MIPROv2, GEPA, genetic)",
      cmd_optimize },
    { "predict", "call a module once and print the prediction", cmd_predict },
    { "run", "run a program over a JSON-lines file", cmd_run },
    { "serve", "OpenAI-compatible caching proxy with metrics and a live dashboard", cmd_serve },
    { "sim", "OpenAI-compatible LM simulator for offline work and tests", cmd_sim },
    { "tokens", "exact OpenAI BPE token counts (cl100k_base, o200k_base) of texts", cmd_tokens },
    { "vec", "vector devices and kernels: info, CPU-vs-GPU benchmark", cmd_vec },
    { "version", "print the version", cmd_version },
    { "worker", "run jobs of 'dspyc serve --jobs --redis' from Redis Streams", cmd_worker },
};

static void usage(FILE *out)
{
    fprintf(out, "usage: dspyc [--version] [--help] <command> [<args>]\n\n"
                 "Run, cache, optimize, measure and serve DSPy-style LM programs.\n\n"
                 "commands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'dspyc <command> --help' describes a command.\n");
}

int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("dspyc %s\n", dspy_version());
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version"))
        return cmd_version(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "dspyc: '%s' is not a command; see 'dspyc --help'\n", argv[1]);
    return 2;
}
