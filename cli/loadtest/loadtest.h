/* Shared declarations of `dspyc loadtest` (apps layer): options, the per-run collector of
 * metrics, and the report, analysis and target-building steps over them. */
#ifndef DSPYC_CLI_LOADTEST_H
#define DSPYC_CLI_LOADTEST_H

#include <pthread.h>
#include <stdio.h>

#include <jansson.h>

#include <dspyc/dspyc.h>
#include <dspyc/loadgen.h>
#include <dspyc/timeseries.h>

enum lt_target { LT_CHAT = 0, LT_EMBED, LT_HTTP, LT_PROGRAM };
enum lt_pattern { LT_CONSTANT = 0, LT_RAMP, LT_SPIKE, LT_WAVE, LT_STEPS };

/* Histogram metrics, all in nanoseconds. */
enum lt_metric {
    M_E2EL = 0, /* end to end from the intended send: last token (streams) or response end */
    M_LATENCY,  /* response time: response end - intended send (wrk2's corrected latency) */
    M_SERVICE,  /* service time: response end - actual send (wrk2 -u) */
    M_LAG,      /* dispatch lag: actual send - intended send */
    M_TTFB,     /* first response byte - actual send (k6 http_req_waiting + sending) */
    M_TTFT,     /* first token-bearing event - intended send (vLLM TTFT, CO-free) */
    M_TTFT_SVC, /* first token-bearing event - actual send (vLLM's own start point) */
    M_TTFC,     /* first non-empty content - intended send (GuideLLM TTFOT) */
    M_ITL,      /* gap between token-bearing events, per chunk, pooled (vLLM ITL) */
    M_ITL_TOK,  /* chunk gap spread over the chunk's tokens (GenAI-Perf chunked ITL) */
    M_TPOT,     /* (last token - first token) / (N - 1), N > 1 (vLLM TPOT) */
    M_NMETRICS
};
extern const char *const lt_metric_names[M_NMETRICS];

/* Per-second counters of the time series. */
enum {
    TS_INTENDED = 0,
    TS_SENT,
    TS_DONE,
    TS_OK,
    TS_ERRORS,
    TS_TOKENS,
    TS_INFLIGHT,
    TS_INSYSTEM,
    TS_NCOUNTERS
};
enum { TSC_LATENCY = 0, TSC_TTFT, TSC_NCHANNELS };

struct lt_cond { /* one threshold or SLO term: agg(metric) op value */
    char text[96];
    char agg[16]; /* "p", "mean", "max", "min", "rate", "value" */
    double pct;   /* for "p" */
    char metric[32];
    bool less; /* '<' or '<=' versus '>' or '>=' */
    bool or_equal;
    double value; /* ns for times, fraction for rates, plain number otherwise */
};

struct lt_opts {
    enum lt_target target;
    const char *url; /* base URL (OpenAI) or full URL (http) */
    const char *model;
    bool stream;
    const char *method;
    const char *headers[32];
    size_t nheaders;
    const char *body;                   /* --body template; {{prompt}} and {{i}} are filled in */
    const char *prompts_file;           /* JSONL with "prompt" or "messages" */
    double input_words, input_words_sd; /* generated prompts */
    long max_tokens;
    unsigned ntemplates;
    const char *program_file;
    const char *api_key_env;
    /* load */
    bool closed;
    double rate;
    enum dspy_arrival arrival;
    double burstiness;
    unsigned users;
    double think_s;
    bool think_exp;
    unsigned max_in_flight, connections, threads;
    enum lt_pattern pattern;
    double ramp_up_s, ramp_down_s, spike_at_s, spike_len_s, spike_mult, wave_period_s, wave_amp,
        step_s;
    double rates[64]; /* --steps / --sweep rates */
    size_t nrates;
    bool sweep;
    double duration_s, warmup_s, timeout_s, drain_s;
    uint64_t count, seed;
    /* analysis */
    struct lt_cond slo[16];
    size_t nslo;
    const char *slo_text;
    bool search;
    double search_max;
    unsigned search_iters;
    struct lt_cond thresholds[32];
    size_t nthresholds;
    double p95_limit_ms; /* bottleneck rule: P95 above this */
    int pid;
    /* output */
    const char *json_path, *log_path, *html_path;
    bool quiet;
};

/* Per generator thread. */
struct lt_shard {
    dspy_hist *h[M_NMETRICS];
    uint64_t outcomes[DSPY_LG_NOUTCOMES];
    uint64_t status[600];
    uint64_t ok, good, tokens, prompt_tokens, usage_missing, reused, new_conn, measured;
    uint64_t first_ns, last_ns; /* earliest intended, latest done (measured requests) */
    dspy_timeseries *ts;
    char *logbuf;
    size_t loglen;
};

struct lt_sample { /* one resource sample, on the run's clock */
    double t_s;
    double target_cpu_pct, gen_cpu_pct;
    double target_rss_mb, gen_rss_mb;
};

struct lt_run {
    const struct lt_opts *o;
    double rate; /* the nominal rate of this run (0 = closed loop) */
    struct dspy_rate_stage stages[512];
    size_t nstages;
    uint64_t origin_ns;
    struct lt_shard *shards;
    unsigned nshards;
    struct lt_shard total; /* merged after the run */
    struct dspy_loadgen_stats gs;
    FILE *log;
    pthread_mutex_t log_lock;
    struct lt_sample samples[7200];
    size_t nsamples;
    double duration_s; /* measured: first intended to last answer */
    json_t *analysis;  /* findings: [{severity, rule, reason, recommendation}] */
    json_t *checks;    /* self-checks */
    bool slo_ok, thresholds_ok;
};

/* target.c */
int lt_build_requests(struct lt_opts *o, struct dspy_loadgen_request **reqs, size_t *n, char *host,
                      size_t hostlen, int *port);
void lt_free_requests(struct dspy_loadgen_request *reqs, size_t n);
/* run.c */
int lt_run_init(struct lt_run *r, const struct lt_opts *o, double rate);
void lt_run_release(struct lt_run *r);
int lt_run_http(struct lt_run *r, const struct dspy_loadgen_request *reqs, size_t n,
                const char *host, int port, volatile const int *stop);
int lt_run_program(struct lt_run *r, volatile const int *stop);
void lt_record(struct lt_run *r, unsigned shard, const struct dspy_loadgen_result *res);
void lt_finish(struct lt_run *r);
/* analyze.c */
int lt_parse_conds(const char *text, struct lt_cond *out, size_t max, size_t *n);
bool lt_eval_cond(const struct lt_run *r, const struct lt_cond *c, double *actual);
void lt_analyze(struct lt_run *r);
/* report.c */
double lt_ms(uint64_t ns);
double lt_achieved_rps(const struct lt_run *r);
double lt_error_rate(const struct lt_run *r);
void lt_print_summary(const struct lt_run *r, FILE *out);
json_t *lt_run_json(const struct lt_run *r);
int lt_write_jsonl_close(struct lt_run *r);
/* html.c */
int lt_write_html(const char *path, json_t *report);

#endif
