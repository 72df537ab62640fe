/* The LM simulator behind `dspyc sim` (apps layer): an OpenAI-compatible server whose
 * answers are a pure function of (request, seed), with a latency model, queueing and
 * injected faults. Other subcommands and tests can start one in-process. */
#ifndef DSPYC_CLI_SIM_H
#define DSPYC_CLI_SIM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct sim_options {
    const char *bind;        /* listen address, default "127.0.0.1" (borrowed) */
    int port;                /* 0 = an ephemeral port (the default here; `dspyc sim` uses 8089) */
    unsigned threads;        /* server polling threads; 0 = one per CPU */
    uint64_t seed;           /* answers, accuracy draws, fault and jitter sequences */
    const char *model;       /* the model /v1/models lists (borrowed); requests may name any */
    /* Latency model (milliseconds). */
    double ttft_ms;          /* time to first token */
    double tpot_ms;          /* time per output token after the first */
    double latency_ms;       /* < 0: unset; else the fixed total, overriding ttft/tpot */
    double jitter;           /* each request's times scaled by 1 + jitter * u, u in [-1, 1] */
    unsigned capacity;       /* requests served at once; 0 = unlimited (no queue) */
    unsigned max_queue;      /* waiting requests beyond which new ones are refused; 0 = no cap */
    int queue_full_status;   /* 503 or 429 */
    /* Faults: rates in [0, 1] per attempt, summing to at most 1. */
    double fail_429, fail_500, fail_503, fail_timeout, fail_drop, fail_malformed, fail_truncate;
    double retry_after_s;    /* Retry-After of a 429 */
    double timeout_hold_ms;  /* how long a "timeout" fault holds the request before closing */
    /* Other behaviour. */
    const char *record_path; /* JSONL of every request received, or NULL (borrowed) */
    size_t max_body;         /* request body limit in bytes */
    unsigned embed_dim;      /* embedding dimensions */
    const char *api_key;     /* if set, /v1/ requests need "Authorization: Bearer KEY" */
    unsigned reply_tokens;   /* length of plain (non-DSPy) replies; 0 = natural */
    const char *embedder;    /* "hash" (default) or "minilm": real all-MiniLM-L6-v2 vectors */
    const char *embed_model; /* model folder for minilm; NULL = the embedder's default */
};

/* Defaults: 127.0.0.1, an ephemeral port, seed 0, zero latency, no faults, 4 MiB bodies,
 * 384-dimension embeddings (see sim_usage()). */
void sim_options_init(struct sim_options *o);
/* Parse flags from argv[0..argc) (all of them; no subcommand name). A "--sim-" prefix is
 * accepted on every flag ("--sim-ttft-ms 20"), so other subcommands can pass such flags
 * through. Returns 0 on success, 1 if --help was given, -1 on an error (written to err).
 * String values are borrowed from argv. */
int sim_parse_args(struct sim_options *o, int argc, char **argv, FILE *err);
/* Describe every flag. */
void sim_usage(FILE *out);

/* A running simulator. Threads: sim_start and sim_stop from any one thread (not
 * concurrently for the same handle); the simulator serves from its own threads; sim_port
 * from any thread between them. */
struct sim;
/* Start a simulator in this process. The options are copied (strings too). NULL with
 * errbuf filled on error (port in use, bad bind address, unwritable --record file). */
struct sim *sim_start(const struct sim_options *o, char *errbuf, size_t errlen);
int sim_port(const struct sim *s);
/* Stop it, closing waiting connections, and free it. NULL is a no-op. */
void sim_stop(struct sim *s);

/* `dspyc sim [flags]` runs in the foreground until SIGINT/SIGTERM;
 * `dspyc sim gen-task arith --n N --seed S` writes a task set as JSONL to stdout. */
int cmd_sim(int argc, char **argv);

#endif
