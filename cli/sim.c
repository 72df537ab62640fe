/* `dspyc sim` (apps layer): flags into struct dspy_sim_options, --help, the foreground
 * command that serves until SIGINT/SIGTERM, and `dspyc sim gen-task`. The simulator itself
 * is the library's (include/dspyc/sim.h). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/dspyc.h>

#include "cli.h"
#include "sim.h"

#define DEFAULT_PORT 8089

enum kind { K_STR, K_INT, K_UINT, K_U64, K_SIZE, K_U64S, K_DOUBLE, K_RATE }; /* S: k/M/G */

struct flag {
    const char *name;
    enum kind kind;
    size_t off;
    const char *field; /* the option it sets, as dspy_sim_new names it in err->field */
    const char *arg;
    const char *help;
};

#define F(name, kind, field, arg, help)                                         \
    {                                                                           \
        name, kind, offsetof(struct dspy_sim_options, field), #field, arg, help \
    }

static const struct flag flags[] = {
    F("bind", K_STR, bind, "ADDR", "address to listen on (default 127.0.0.1)"),
    F("port", K_INT, port, "N", "port (default 8089; 0 picks a free one)"),
    F("threads", K_UINT, threads, "N", "server polling threads (default: one per CPU)"),
    F("seed", K_U64, seed, "N", "seed of answers, accuracy draws, faults, jitter (default 0)"),
    F("model", K_STR, model, "NAME", "model name /v1/models lists (default dspyc-sim)"),
    F("ttft-ms", K_DOUBLE, ttft_ms, "MS", "time to first token (default 0)"),
    F("tpot-ms", K_DOUBLE, tpot_ms, "MS", "time per output token after the first (default 0)"),
    F("latency-ms", K_DOUBLE, latency_ms, "MS", "fixed total per request, overrides ttft/tpot"),
    F("jitter", K_DOUBLE, jitter, "F", "scale each request's times by 1 + F*u, u in [-1, 1]"),
    F("capacity", K_UINT, capacity, "N", "requests served at once, others queue (0 = no limit)"),
    F("max-queue", K_UINT, max_queue, "N", "queued requests beyond which new ones are refused"),
    F("queue-full-status", K_INT, queue_full_status, "CODE", "full queue answer: 503 or 429"),
    F("fail-429", K_RATE, fail_429, "R", "rate of 429 answers with Retry-After"),
    F("fail-500", K_RATE, fail_500, "R", "rate of 500 answers"),
    F("fail-503", K_RATE, fail_503, "R", "rate of 503 answers"),
    F("fail-timeout", K_RATE, fail_timeout, "R", "rate of requests held unanswered, then closed"),
    F("fail-drop", K_RATE, fail_drop, "R", "rate of connections closed without an answer"),
    F("fail-malformed", K_RATE, fail_malformed, "R", "rate of 200s with invalid JSON or SSE"),
    F("fail-truncate", K_RATE, fail_truncate, "R", "rate of bodies/streams cut short (no [DONE])"),
    F("retry-after", K_DOUBLE, retry_after_s, "S", "Retry-After of 429/503 answers (default 1)"),
    F("timeout-hold-ms", K_DOUBLE, timeout_hold_ms, "MS", "timeout fault hold (default 30000)"),
    F("record", K_STR, record_path, "FILE", "write every request received as a JSON line"),
    F("model-quality", K_STR, model_quality, "NAME=Q,...",
      "task packs: multiply the chance of a right answer by Q for requests naming model NAME"),
    F("max-body", K_SIZE, max_body, "BYTES", "body limit, more gets 413 (default 4M; k/M/G)"),
    F("embed-dim", K_UINT, embed_dim, "N", "embedding dimensions (default 384)"),
    F("embedder", K_STR, embedder, "hash|minilm",
      "embeddings: hashed words (default) or real all-MiniLM-L6-v2 vectors"),
    F("embed-model", K_STR, embed_model, "DIR", "model folder for --embedder minilm"),
    F("api-key", K_STR, api_key, "KEY",
      "require 'Authorization: Bearer KEY' on /v1/ (visible in ps: prefer the next two)"),
    F("api-key-env", K_STR, api_key_env, "VAR", "the key from $VAR (which must be set)"),
    F("api-key-file", K_STR, api_key_file, "FILE", "the key from the first line of FILE"),
    F("reply-tokens", K_UINT, reply_tokens, "N", "plain (non-DSPy) reply length (0 = natural)"),
    F("header-timeout-ms", K_UINT, header_timeout_ms, "MS",
      "close a connection whose request head is not in by then (default 10000)"),
    F("body-timeout-ms", K_UINT, body_timeout_ms, "MS",
      "close a connection whose body is not in MS after its head (default 30000)"),
    F("max-connections", K_UINT, max_connections, "N",
      "open connections; more close the oldest idle one (default: open-files limit)"),
    F("max-connections-per-ip", K_UINT, max_connections_per_ip, "N",
      "open connections from one address (default: no cap)"),
    F("max-body-bytes-total", K_U64S, max_body_bytes_total, "BYTES",
      "bodies being received at once, more get 503 (default 64 x --max-body)"),
};
#define N_FLAGS (sizeof(flags) / sizeof(flags[0]))

void sim_usage(FILE *out)
{
    fprintf(out,
            "usage: dspyc sim [flags]\n"
            "       dspyc sim gen-task arith [--n N] [--seed S]\n"
            "       dspyc sim gen-task facts --corpus CORPUS.jsonl [--n N] [--seed S]\n\n"
            "An OpenAI-compatible LM *simulator* for offline work, tests and load tests.\n"
            "It is not a language model: its answers are synthetic, a pure function of the\n"
            "request and --seed. It understands DSPy Chat/JSON adapter prompts and answers\n"
            "every output field; arith task questions are answered correctly with a\n"
            "documented probability. Endpoints: POST /v1/chat/completions, POST /v1/embeddings,\n"
            "GET /v1/models, GET /health, POST /admin/pause?ms=N, GET /admin/stats.\n"
            "See docs/simulator.md.\n\n"
            "flags (each also accepted as --sim-NAME; --flag=value works too):\n");
    for (size_t i = 0; i < N_FLAGS; i++) {
        char left[48];
        snprintf(left, sizeof(left), "--%s %s", flags[i].name, flags[i].arg);
        /* Help text wrapped at 80 columns, continuation lines under the first. */
        const char *h = flags[i].help;
        bool first = true;
        if (strlen(left) > 26) {
            fprintf(out, "  %s\n", left);
            first = false;
        }
        while (*h) {
            size_t n = strlen(h);
            if (n > 51) {
                n = 51;
                while (n > 0 && h[n] != ' ')
                    n--;
                if (!n)
                    n = 51;
            }
            fprintf(out, "  %-26s %.*s\n", first ? left : "", (int)n, h);
            first = false;
            h += n;
            while (*h == ' ')
                h++;
        }
    }
    fprintf(out, "  %-26s %s\n", "--help", "show this help");
}

static int set_flag(struct dspy_sim_options *o, const struct flag *f, const char *v, FILE *err)
{
    char *end = NULL;
    void *at = (char *)o + f->off;
    errno = 0;
    switch (f->kind) {
    case K_STR: *(const char **)at = v; return 0;
    case K_INT: {
        long n = strtol(v, &end, 10);
        if (*v && !*end && !errno && n >= -1 && n <= 65535) {
            *(int *)at = (int)n;
            return 0;
        }
        break;
    }
    case K_UINT:
    case K_U64:
    case K_SIZE:
    case K_U64S: {
        unsigned long long n = strtoull(v, &end, 10);
        if ((f->kind == K_SIZE || f->kind == K_U64S) && end && *end) {
            int shift = *end == 'k' || *end == 'K' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : -1;
            if (shift > 0 && !end[1] && n < (1ull << 33)) {
                n <<= shift;
                end++;
            }
        }
        if (!*v || *v == '-' || *end || errno)
            break;
        if (f->kind == K_UINT && n <= 0xffffffffull)
            *(unsigned *)at = (unsigned)n;
        else if (f->kind == K_U64 || f->kind == K_U64S)
            *(uint64_t *)at = n;
        else if (f->kind == K_SIZE)
            *(size_t *)at = (size_t)n;
        else
            break;
        return 0;
    }
    case K_DOUBLE:
    case K_RATE: {
        double d = strtod(v, &end);
        if (*v && !*end && !errno && d >= 0 && d < 1e12 && (f->kind != K_RATE || d <= 1)) {
            *(double *)at = d;
            return 0;
        }
        break;
    }
    }
    fprintf(err, "dspyc sim: bad value '%s' for --%s%s\n", v, f->name,
            f->kind == K_RATE ? " (a rate from 0 to 1)" : "");
    return -1;
}

int sim_parse_args(struct dspy_sim_options *o, int argc, char **argv, FILE *err)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h") || !strcmp(a, "--sim-help"))
            return 1;
        if (strncmp(a, "--", 2)) {
            fprintf(err, "dspyc sim: unexpected argument '%s'; see 'dspyc sim --help'\n", a);
            return -1;
        }
        a += 2;
        if (!strncmp(a, "sim-", 4))
            a += 4;
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const struct flag *f = NULL;
        for (size_t k = 0; k < N_FLAGS && !f; k++)
            if (strlen(flags[k].name) == len && !strncmp(flags[k].name, a, len))
                f = &flags[k];
        if (!f) {
            fprintf(err, "dspyc sim: unknown flag '%s'; see 'dspyc sim --help'\n", argv[i]);
            return -1;
        }
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) {
            fprintf(err, "dspyc sim: --%s needs a value (%s)\n", f->name, f->arg);
            return -1;
        }
        if (set_flag(o, f, v, err))
            return -1;
    }
    return 0;
}

dspy_sim *sim_open(const struct dspy_sim_options *o, FILE *err, int *code)
{
    struct dspy_error e;
    dspy_sim *s = NULL;
    dspy_error_clear(&e);
    dspy_status rc = dspy_sim_new(o, &s, &e);
    if (!rc)
        rc = dspy_sim_start(s, &e);
    if (!rc)
        return s;
    const struct flag *f = NULL;
    for (size_t k = 0; k < N_FLAGS && !f && e.field[0]; k++)
        if (!strcmp(flags[k].field, e.field))
            f = &flags[k];
    /* The library's message starts with the option's name; name the flag instead. */
    const char *msg = e.message;
    size_t fl = strlen(e.field);
    if (f && !strncmp(msg, e.field, fl) && !strncmp(msg + fl, ": ", 2))
        fprintf(err, "dspyc sim: --%s %s\n", f->name, msg + fl + 2);
    else
        fprintf(err, "dspyc sim: %s\n", msg[0] ? msg : dspy_strerror(rc));
    *code = rc == DSPY_EINVAL ? 2 : 1;
    dspy_sim_free(s);
    return NULL;
}

static int gen_task(int argc, char **argv)
{
    unsigned long long n = 100, seed = 1;
    const char *task = NULL, *corpus = NULL;
    struct dspy_error e;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: dspyc sim gen-task arith [--n N] [--seed S]\n"
                   "       dspyc sim gen-task facts --corpus CORPUS.jsonl [--n N] [--seed S]\n\n"
                   "arith: N generated arithmetic word problems with their answers as JSONL\n"
                   "records {\"question\": ..., \"answer\": \"24\"} to stdout.\n"
                   "facts: a knowledge base of 500 towns x 7 attributes, one passage per fact\n"
                   "({\"id\", \"title\", \"text\"}), written to --corpus, and N questions\n"
                   "needing one or two of them, {\"question\", \"answer\", \"supporting\",\n"
                   "\"hops\"}, to stdout. The simulator answers a facts question right only\n"
                   "when its supporting passages are in the prompt (docs/simulator.md).\n"
                   "The same seed gives the same set.\n");
            return 0;
        } else if (!strcmp(argv[i], "--n") && i + 1 < argc) {
            n = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--corpus") && i + 1 < argc) {
            corpus = argv[++i];
        } else if (argv[i][0] != '-' && !task) {
            task = argv[i];
        } else {
            fprintf(stderr, "dspyc sim gen-task: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    dspy_error_clear(&e);
    dspy_status rc;
    if (task && !strcmp(task, "facts")) {
        if (!corpus) {
            fprintf(stderr, "dspyc sim gen-task facts: --corpus FILE is required\n");
            return 2;
        }
        FILE *f = fopen(corpus, "w");
        if (!f) {
            fprintf(stderr, "dspyc sim gen-task: %s: cannot create\n", corpus);
            return 1;
        }
        rc = dspy_sim_write_facts(stdout, f, n, seed, &e);
        if (fclose(f) && !rc) {
            snprintf(e.message, sizeof(e.message), "%s: write failed", corpus);
            rc = DSPY_EIO;
        }
    } else
        rc = dspy_sim_write_task(stdout, task, n, seed, &e);
    if (rc)
        fprintf(stderr, "dspyc sim gen-task: %s\n", e.message);
    return rc == DSPY_ENOTFOUND ? 2 : rc ? 1 : 0;
}

int cmd_sim(int argc, char **argv)
{
    struct dspy_sim_options o = DSPY_SIM_OPTIONS_INIT;
    sigset_t set;
    int sig = 0, code = 1;

    if (argc >= 2 && !strcmp(argv[1], "gen-task"))
        return gen_task(argc - 1, argv + 1);
    o.port = DEFAULT_PORT;
    int r = sim_parse_args(&o, argc - 1, argv + 1, stderr);
    if (r == 1) {
        sim_usage(stdout);
        return 0;
    }
    if (r < 0)
        return 2;
    /* Block the stop signals before any thread starts, so only sigwait below sees them. */
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    dspy_sim *s = sim_open(&o, stderr, &code);
    if (!s)
        return code;
    const char *bind = dspy_sim_bind(s);
    bool v6 = strchr(bind, ':') != NULL;
    fprintf(stderr, "dspyc sim listening on http://%s%s%s:%d/v1\n", v6 ? "[" : "", bind,
            v6 ? "]" : "", dspy_sim_port(s));
    fprintf(stderr,
            "dspyc sim: a simulator, not a language model; answers are synthetic "
            "(seed %llu)\n",
            (unsigned long long)o.seed);
    fflush(stderr);
    while (sigwait(&set, &sig) != 0)
        ;
    fprintf(stderr, "dspyc sim: stopping on signal %d\n", sig);
    dspy_sim_free(s);
    return 0;
}
