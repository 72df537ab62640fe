/* `dspyc sim` (apps layer): flags, starting and stopping a simulator, and the foreground
 * command that serves until SIGINT/SIGTERM. The behaviour is in the other sim_*.c files. */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "sim_int.h"

#define DEFAULT_PORT 8089

void sim_options_init(struct sim_options *o)
{
    memset(o, 0, sizeof(*o));
    o->bind = "127.0.0.1";
    o->port = 0; /* in-process users want a free port; `dspyc sim` defaults to DEFAULT_PORT */
    o->model = "dspyc-sim";
    o->latency_ms = -1;
    o->queue_full_status = 503;
    o->retry_after_s = 1;
    o->timeout_hold_ms = 30000;
    o->max_body = (size_t)4 << 20;
    o->embed_dim = 384;
}

enum kind { K_STR, K_INT, K_UINT, K_U64, K_SIZE, K_DOUBLE, K_RATE };

struct flag {
    const char *name;
    enum kind kind;
    size_t off;
    const char *arg;
    const char *help;
};

#define F(name, kind, field, arg, help) \
    { name, kind, offsetof(struct sim_options, field), arg, help }

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
    F("max-body", K_SIZE, max_body, "BYTES", "body limit, more gets 413 (default 4M; k/M/G)"),
    F("embed-dim", K_UINT, embed_dim, "N", "embedding dimensions (default 384)"),
    F("embedder", K_STR, embedder, "hash|minilm", "embeddings: hashed words (default) or real "
                                                  "all-MiniLM-L6-v2 vectors"),
    F("embed-model", K_STR, embed_model, "DIR", "model folder for --embedder minilm"),
    F("api-key", K_STR, api_key, "KEY", "require 'Authorization: Bearer KEY' on /v1/"),
    F("reply-tokens", K_UINT, reply_tokens, "N", "plain (non-DSPy) reply length (0 = natural)"),
};
#define N_FLAGS (sizeof(flags) / sizeof(flags[0]))

void sim_usage(FILE *out)
{
    fprintf(out,
            "usage: dspyc sim [flags]\n"
            "       dspyc sim gen-task arith [--n N] [--seed S]\n\n"
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
        fprintf(out, "  %-26s %s\n", left, flags[i].help);
    }
    fprintf(out, "  %-26s %s\n", "--help", "show this help");
}

static int set_flag(struct sim_options *o, const struct flag *f, const char *v, FILE *err)
{
    char *end = NULL;
    void *at = (char *)o + f->off;
    errno = 0;
    switch (f->kind) {
    case K_STR:
        *(const char **)at = v;
        return 0;
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
    case K_SIZE: {
        unsigned long long n = strtoull(v, &end, 10);
        if (f->kind == K_SIZE && end && *end) {
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
        else if (f->kind == K_U64)
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

static int check(const struct sim_options *o, FILE *err)
{
    double sum = o->fail_429 + o->fail_500 + o->fail_503 + o->fail_timeout + o->fail_drop +
                 o->fail_malformed + o->fail_truncate;
    if (sum > 1.0 + 1e-9) {
        fprintf(err, "dspyc sim: the --fail-* rates add up to %g; they must add up to at most 1\n",
                sum);
        return -1;
    }
    if (o->jitter > 1) {
        fprintf(err, "dspyc sim: --jitter must be from 0 to 1\n");
        return -1;
    }
    if (o->queue_full_status != 429 && o->queue_full_status != 503) {
        fprintf(err, "dspyc sim: --queue-full-status must be 429 or 503\n");
        return -1;
    }
    if (o->embed_dim < 1 || o->embed_dim > 65536) {
        fprintf(err, "dspyc sim: --embed-dim must be from 1 to 65536\n");
        return -1;
    }
    if (o->port < 0) {
        fprintf(err, "dspyc sim: --port must be from 0 to 65535\n");
        return -1;
    }
    if (o->reply_tokens > SIM_MAX_REPLY_TOKENS) {
        fprintf(err, "dspyc sim: --reply-tokens must be at most %d\n", SIM_MAX_REPLY_TOKENS);
        return -1;
    }
    if (o->max_body < 1024) {
        fprintf(err, "dspyc sim: --max-body must be at least 1024 bytes\n");
        return -1;
    }
    return 0;
}

int sim_parse_args(struct sim_options *o, int argc, char **argv, FILE *err)
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
    return check(o, err);
}

/* ---- Lifecycle ---- */

static char *dup_opt(const char *s, bool *fail)
{
    char *d = s ? dspy_strdup(s) : NULL;
    if (s && !d)
        *fail = true;
    return d;
}

struct sim *sim_start(const struct sim_options *o, char *errbuf, size_t errlen)
{
    struct dspy_error err;
    bool fail = false;
    struct sim *s = dspy_calloc(1, sizeof(*s));
    if (!s) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    s->o = *o;
    s->bind = dup_opt(o->bind ? o->bind : "127.0.0.1", &fail);
    s->model = dup_opt(o->model ? o->model : "dspyc-sim", &fail);
    s->api_key = o->api_key && *o->api_key ? dup_opt(o->api_key, &fail) : NULL;
    s->record_path = dup_opt(o->record_path, &fail);
    s->o.bind = s->bind;
    s->o.model = s->model;
    s->o.api_key = s->api_key;
    s->o.record_path = s->record_path;
    s->start_ns = dspy__now_ns();
    pthread_mutex_init(&s->record_lock, NULL);
    pthread_mutex_init(&s->qlock, NULL);
    if (!fail && s->o.capacity && !(s->slots = dspy_calloc(s->o.capacity, sizeof(uint64_t))))
        fail = true;
    if (fail) {
        snprintf(errbuf, errlen, "out of memory");
        goto fail;
    }
    if (sim_minilm_open(s, errbuf, errlen))
        goto fail;
    if (s->record_path && !(s->record = fopen(s->record_path, "w"))) {
        snprintf(errbuf, errlen, "cannot open --record file %s: %s", s->record_path,
                 strerror(errno));
        goto fail;
    }
    struct dspy__srv_options so = DSPY__SRV_OPTIONS_INIT;
    so.bind = s->bind;
    so.port = s->o.port;
    so.threads = s->o.threads;
    so.max_body = s->o.max_body;
    if (s->record) {
        so.on_request = sim_record;
        so.on_request_ud = s;
    }
    dspy_error_clear(&err);
    if (!(s->srv = dspy__srv_new(&so, &err)) || sim_routes(s) || dspy__srv_start(s->srv, &err)) {
        snprintf(errbuf, errlen, "%s", err.message[0] ? err.message : "cannot start the server");
        goto fail;
    }
    return s;
fail:
    sim_stop(s);
    return NULL;
}

int sim_port(const struct sim *s)
{
    return dspy__srv_port(s->srv);
}

void sim_stop(struct sim *s)
{
    if (!s)
        return;
    dspy__srv_free(s->srv);
    sim_minilm_close(s);
    if (s->record)
        fclose(s->record);
    pthread_mutex_destroy(&s->record_lock);
    pthread_mutex_destroy(&s->qlock);
    dspy_free(s->slots);
    dspy_free(s->queue);
    dspy_free(s->bind);
    dspy_free(s->model);
    dspy_free(s->api_key);
    dspy_free(s->record_path);
    dspy_free(s);
}

int cmd_sim(int argc, char **argv)
{
    struct sim_options o;
    char errbuf[512];
    sigset_t set;
    int sig = 0;

    if (argc >= 2 && !strcmp(argv[1], "gen-task"))
        return sim_gen_task(argc - 1, argv + 1);
    sim_options_init(&o);
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
    struct sim *s = sim_start(&o, errbuf, sizeof(errbuf));
    if (!s) {
        fprintf(stderr, "dspyc sim: %s\n", errbuf);
        return 1;
    }
    bool v6 = strchr(s->bind, ':') != NULL;
    fprintf(stderr, "dspyc sim listening on http://%s%s%s:%d/v1\n", v6 ? "[" : "", s->bind,
            v6 ? "]" : "", sim_port(s));
    fprintf(stderr, "dspyc sim: a simulator, not a language model; answers are synthetic "
                    "(seed %llu)\n",
            (unsigned long long)s->o.seed);
    fflush(stderr);
    while (sigwait(&set, &sig) != 0)
        ;
    fprintf(stderr, "dspyc sim: stopping on signal %d\n", sig);
    sim_stop(s);
    return 0;
}
