/* One `dspyc loadtest` run (apps layer): turns the pattern into a rate profile, drives the
 * library's load generator (HTTP) or a thread pool over the program API (program files),
 * and collects every result into per-thread histograms, time series and a JSONL log, with a
 * resource sampler of the target process on the same clock. */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loadtest.h"

const char *const lt_metric_names[M_NMETRICS] = {
    "e2el",         "latency", "service", "lag",       "ttfb", "ttft",
    "ttft_service", "ttfc",    "itl",     "itl_token", "tpot",
};

static void add_stage(struct lt_run *r, double d, double a, double b)
{
    if (d <= 0 || r->nstages >= sizeof(r->stages) / sizeof(r->stages[0]))
        return;
    r->stages[r->nstages].duration_s = d;
    r->stages[r->nstages].from_rps = a;
    r->stages[r->nstages].to_rps = b;
    r->nstages++;
}

static void build_profile(struct lt_run *r, double rate)
{
    const struct lt_opts *o = r->o;
    double d = o->duration_s > 0 ? o->duration_s : 1e9;
    switch (o->pattern) {
    case LT_RAMP: {
        double hold = d - o->ramp_up_s - o->ramp_down_s;
        add_stage(r, o->ramp_up_s, 0, rate);
        add_stage(r, hold > 0 ? hold : 0, rate, rate);
        add_stage(r, o->ramp_down_s, rate, 0);
        break;
    }
    case LT_SPIKE:
        add_stage(r, o->spike_at_s, rate, rate);
        add_stage(r, o->spike_len_s, rate * o->spike_mult, rate * o->spike_mult);
        add_stage(r, d - o->spike_at_s - o->spike_len_s, rate, rate);
        break;
    case LT_WAVE: {
        double step = o->wave_period_s / 40.0;
        for (double t = 0; t < d - 1e-9 && r->nstages < 500; t += step) {
            double a = rate * (1 + o->wave_amp * sin(6.283185307179586 * t / o->wave_period_s));
            double b = rate *
                       (1 + o->wave_amp * sin(6.283185307179586 * (t + step) / o->wave_period_s));
            add_stage(r, fmin(step, d - t), fmax(a, 0), fmax(b, 0));
        }
        break;
    }
    case LT_STEPS:
        for (size_t i = 0; i < o->nrates; i++)
            add_stage(r, o->step_s, o->rates[i], o->rates[i]);
        break;
    default: add_stage(r, d, rate, rate);
    }
}

int lt_run_init(struct lt_run *r, const struct lt_opts *o, double rate)
{
    memset(r, 0, sizeof(*r));
    r->o = o;
    r->rate = o->closed ? 0 : rate;
    if (!o->closed)
        build_profile(r, rate);
    /* Programs run on a pool: one thread per user (closed) or per allowed call in flight. */
    r->nshards = o->target != LT_PROGRAM ? o->threads
                 : o->closed             ? o->users
                 : o->max_in_flight      ? o->max_in_flight
                                         : 64;
    r->shards = calloc(r->nshards, sizeof(*r->shards));
    r->origin_ns = dspy_clock_ns() + 5000000;
    double span = o->duration_s > 0 ? o->duration_s : 3600;
    uint32_t secs = (uint32_t)fmin(span + o->drain_s + o->timeout_s + 10, 86400);
    for (unsigned i = 0; i <= r->nshards; i++) {
        struct lt_shard *s = i < r->nshards ? &r->shards[i] : &r->total;
        for (int m = 0; m < M_NMETRICS; m++)
            s->h[m] = dspy_hist_new();
        s->ts = dspy_timeseries_new(r->origin_ns, secs, TS_NCOUNTERS, TSC_NCHANNELS);
        if (!s->ts || !s->h[M_NMETRICS - 1]) {
            fprintf(stderr, "dspyc loadtest: out of memory\n");
            exit(1);
        }
    }
    pthread_mutex_init(&r->log_lock, NULL);
    if (o->log_path && !(r->log = fopen(o->log_path, "w"))) {
        fprintf(stderr, "dspyc loadtest: cannot write %s: %s\n", o->log_path, strerror(errno));
        return -1;
    }
    r->analysis = json_array();
    r->checks = json_object();
    return 0;
}

static void shard_release(struct lt_shard *s)
{
    for (int m = 0; m < M_NMETRICS; m++)
        dspy_hist_free(s->h[m]);
    dspy_timeseries_free(s->ts);
    free(s->logbuf);
}

void lt_run_release(struct lt_run *r)
{
    for (unsigned i = 0; i < r->nshards; i++)
        shard_release(&r->shards[i]);
    shard_release(&r->total);
    free(r->shards);
    if (r->log)
        fclose(r->log);
    pthread_mutex_destroy(&r->log_lock);
    json_decref(r->analysis);
    json_decref(r->checks);
}

static double rel_ms(uint64_t t, uint64_t from)
{
    return t && t >= from ? (double)(t - from) / 1e6 : -1;
}

static void log_result(struct lt_run *r, struct lt_shard *s, const struct dspy_loadgen_result *x,
                       const char *src, long tokens)
{
    if (!s->logbuf)
        s->logbuf = malloc(1 << 17);
    char *b = s->logbuf + s->loglen;
    int n = snprintf(
        b, 1024,
        "{\"seq\":%llu,\"template\":%u,\"user\":%u,\"intended_ms\":%.3f,\"lag_ms\":%.3f,"
        "\"latency_ms\":%.3f,\"service_ms\":%.3f,\"ttfb_ms\":%.3f,\"ttft_ms\":%.3f,"
        "\"e2el_ms\":%.3f,\"outcome\":\"%s\",\"status\":%d,\"stream\":%s,\"chunks\":%u,"
        "\"output_tokens\":%ld,\"token_source\":\"%s\",\"new_connection\":%s,\"bytes\":%llu}\n",
        (unsigned long long)x->seq, x->template_idx, x->user, rel_ms(x->intended_ns, r->origin_ns),
        rel_ms(x->sent_ns, x->intended_ns), rel_ms(x->done_ns, x->intended_ns),
        rel_ms(x->done_ns, x->sent_ns), rel_ms(x->first_byte_ns, x->sent_ns),
        rel_ms(x->first_token_ns, x->intended_ns),
        rel_ms(x->stream && x->last_token_ns ? x->last_token_ns : x->done_ns, x->intended_ns),
        dspy_loadgen_outcome_name(x->outcome), x->status, x->stream ? "true" : "false", x->chunks,
        tokens, src, x->new_connection ? "true" : "false", (unsigned long long)x->bytes);
    s->loglen += (size_t)n;
    if (s->loglen > (1 << 17) - 1100) {
        pthread_mutex_lock(&r->log_lock);
        fwrite(s->logbuf, 1, s->loglen, r->log);
        pthread_mutex_unlock(&r->log_lock);
        s->loglen = 0;
    }
}

/* A request meets every per-request SLO term (vLLM goodput: ttft, tpot, e2el limits). */
static bool good(const struct lt_run *r, uint64_t ttft, uint64_t tpot, uint64_t e2el,
                 uint64_t latency)
{
    for (size_t i = 0; i < r->o->nslo; i++) {
        const struct lt_cond *c = &r->o->slo[i];
        if (!c->less)
            continue;
        const char *m = c->metric;
        uint64_t v = !strcmp(m, "ttft")                        ? ttft
                     : !strcmp(m, "tpot")                      ? tpot
                     : !strcmp(m, "e2el") || !strcmp(m, "e2e") ? e2el
                     : !strcmp(m, "latency")                   ? latency
                                                               : 0;
        if (strcmp(m, "ttft") && strcmp(m, "tpot") && strcmp(m, "e2el") && strcmp(m, "e2e") &&
            strcmp(m, "latency"))
            continue;
        if (c->or_equal ? (double)v > c->value : (double)v >= c->value)
            return false;
    }
    return true;
}

void lt_record(struct lt_run *r, unsigned shard, const struct dspy_loadgen_result *x)
{
    struct lt_shard *s = &r->shards[shard % r->nshards];
    bool ok = x->outcome == DSPY_LG_OK;
    uint64_t end = x->stream && x->last_token_ns ? x->last_token_ns : x->done_ns;
    dspy_timeseries *ts = s->ts;
    dspy_timeseries_add(ts, TS_INTENDED, x->intended_ns, 1);
    if (x->sent_ns)
        dspy_timeseries_add(ts, TS_SENT, x->sent_ns, 1);
    dspy_timeseries_add(ts, TS_DONE, x->done_ns, 1);
    dspy_timeseries_add(ts, ok ? TS_OK : TS_ERRORS, x->done_ns, 1);
    dspy_timeseries_span(ts, TS_INFLIGHT, x->sent_ns, x->done_ns);
    dspy_timeseries_span(ts, TS_INSYSTEM, x->intended_ns, x->done_ns);
    if (ok)
        dspy_timeseries_record(ts, TSC_LATENCY, x->done_ns, x->done_ns - x->intended_ns);
    if (ok && x->first_token_ns)
        dspy_timeseries_record(ts, TSC_TTFT, x->first_token_ns, x->first_token_ns - x->intended_ns);
    long tokens = x->usage_tokens;
    const char *src = "usage";
    if (tokens < 0) {
        tokens = x->stream ? (long)x->chunks : 0;
        src = x->stream ? "chunks" : "none";
    }
    if (ok)
        dspy_timeseries_add(ts, TS_TOKENS, x->done_ns, (double)tokens);
    if (r->log)
        log_result(r, s, x, src, tokens);
    if (x->intended_ns < r->origin_ns + (uint64_t)(r->o->warmup_s * 1e9))
        return;
    s->measured++;
    if (!s->first_ns || x->intended_ns < s->first_ns)
        s->first_ns = x->intended_ns;
    if (x->done_ns > s->last_ns)
        s->last_ns = x->done_ns;
    s->outcomes[x->outcome]++;
    if (x->status > 0 && x->status < 600)
        s->status[x->status]++;
    if (x->sent_ns)
        dspy_hist_record(s->h[M_LAG], x->sent_ns - x->intended_ns);
    if (x->sent_ns && x->new_connection)
        s->new_conn++;
    else if (x->sent_ns)
        s->reused++;
    if (!ok)
        return;
    s->ok++;
    s->tokens += (uint64_t)tokens;
    if (x->prompt_tokens > 0)
        s->prompt_tokens += (uint64_t)x->prompt_tokens;
    if (x->usage_tokens < 0)
        s->usage_missing++;
    dspy_hist_record(s->h[M_E2EL], end - x->intended_ns);
    dspy_hist_record(s->h[M_LATENCY], x->done_ns - x->intended_ns);
    dspy_hist_record(s->h[M_SERVICE], x->done_ns - x->sent_ns);
    if (x->first_byte_ns)
        dspy_hist_record(s->h[M_TTFB], x->first_byte_ns - x->sent_ns);
    uint64_t ttft = 0, tpot = 0;
    if (x->first_token_ns) {
        ttft = x->first_token_ns - x->intended_ns;
        dspy_hist_record(s->h[M_TTFT], ttft);
        dspy_hist_record(s->h[M_TTFT_SVC], x->first_token_ns - x->sent_ns);
    }
    if (x->first_content_ns)
        dspy_hist_record(s->h[M_TTFC], x->first_content_ns - x->intended_ns);
    double per_chunk = x->chunks > 1 && tokens > 0 ? (double)tokens / x->chunks : 1.0;
    unsigned reps = per_chunk > 1 ? (unsigned)lround(per_chunk) : 1;
    for (uint32_t i = 1; i < x->nchunk_ns; i++) {
        uint64_t gap = x->chunk_ns[i] - x->chunk_ns[i - 1];
        dspy_hist_record(s->h[M_ITL], gap);
        for (unsigned k = 0; k < reps; k++)
            dspy_hist_record(s->h[M_ITL_TOK], (uint64_t)((double)gap / per_chunk));
    }
    if (x->first_token_ns && tokens > 1) {
        tpot = (x->last_token_ns - x->first_token_ns) / (uint64_t)(tokens - 1);
        dspy_hist_record(s->h[M_TPOT], tpot);
    }
    if (good(r, ttft, tpot, end - x->intended_ns, x->done_ns - x->intended_ns))
        s->good++;
}

static void on_result(void *ud, unsigned thread, const struct dspy_loadgen_result *r)
{
    lt_record(ud, thread, r);
}

/* ---- resource sampler: the target pid and this process, once a second ---- */

struct sampler {
    struct lt_run *r;
    atomic_int stop;
    pthread_t tid;
};

static void *sampler_main(void *arg)
{
    struct sampler *sm = arg;
    struct lt_run *r = sm->r;
    struct dspy_proc_sample pt0 = { 0 }, pg0 = { 0 }, pt, pg;
    bool have_t = r->o->pid > 0 && dspy_proc_sample(r->o->pid, &pt0) == DSPY_OK;
    dspy_proc_sample(0, &pg0);
    size_t max = sizeof(r->samples) / sizeof(r->samples[0]);
    while (!atomic_load(&sm->stop) && r->nsamples < max) {
        for (int i = 0; i < 20 && !atomic_load(&sm->stop); i++) {
            struct timespec ts = { 0, 50000000 };
            nanosleep(&ts, NULL);
        }
        struct lt_sample *s = &r->samples[r->nsamples];
        memset(s, 0, sizeof(*s));
        if (dspy_proc_sample(0, &pg) != DSPY_OK)
            continue;
        double dt = (double)(pg.taken_ns - pg0.taken_ns);
        s->t_s = ((double)pg.taken_ns - (double)r->origin_ns) / 1e9;
        s->gen_cpu_pct = dt > 0 ? 100.0 *
                                      (double)(pg.cpu_user_ns + pg.cpu_system_ns - pg0.cpu_user_ns -
                                               pg0.cpu_system_ns) /
                                      dt
                                : 0;
        s->gen_rss_mb = (double)pg.rss_bytes / 1048576.0;
        pg0 = pg;
        if (have_t && dspy_proc_sample(r->o->pid, &pt) == DSPY_OK) {
            dt = (double)(pt.taken_ns - pt0.taken_ns);
            s->target_cpu_pct = dt > 0 ? 100.0 *
                                             (double)(pt.cpu_user_ns + pt.cpu_system_ns -
                                                      pt0.cpu_user_ns - pt0.cpu_system_ns) /
                                             dt
                                       : 0;
            s->target_rss_mb = (double)pt.rss_bytes / 1048576.0;
            pt0 = pt;
        } else {
            s->target_cpu_pct = s->target_rss_mb = -1;
        }
        r->nsamples++;
    }
    return NULL;
}

static void sampler_start(struct sampler *sm, struct lt_run *r)
{
    sm->r = r;
    atomic_init(&sm->stop, 0);
    pthread_create(&sm->tid, NULL, sampler_main, sm);
}

static void sampler_stop(struct sampler *sm)
{
    atomic_store(&sm->stop, 1);
    pthread_join(sm->tid, NULL);
}

int lt_run_http(struct lt_run *r, const struct dspy_loadgen_request *reqs, size_t n,
                const char *host, int port, volatile const int *stop)
{
    const struct lt_opts *o = r->o;
    struct dspy_loadgen_options lo = DSPY_LOADGEN_OPTIONS_INIT;
    struct dspy_error err;
    struct sampler sm;
    dspy_error_clear(&err);
    lo.host = host;
    lo.port = port;
    lo.threads = o->threads;
    lo.requests = reqs;
    lo.nrequests = n;
    lo.random_requests = true;
    lo.parse = o->target == LT_HTTP ? DSPY_LOADGEN_PLAIN : DSPY_LOADGEN_OPENAI;
    if (!o->closed) {
        lo.schedule_stages = r->stages;
        lo.nstages = r->nstages;
    }
    lo.arrival = o->arrival;
    lo.burstiness = o->burstiness;
    lo.seed = o->seed;
    lo.users = o->users;
    lo.think_s = o->think_s;
    lo.think_exponential = o->think_exp;
    lo.duration_s = o->duration_s;
    lo.max_requests = o->count;
    lo.max_in_flight = o->max_in_flight;
    lo.connections = o->connections;
    lo.timeout_s = o->timeout_s;
    lo.drain_s = o->drain_s;
    lo.on_result = on_result;
    lo.userdata = r;
    lo.start_ns = r->origin_ns;
    sampler_start(&sm, r);
    dspy_status rc = dspy_loadgen_run(&lo, stop, &r->gs, &err);
    sampler_stop(&sm);
    if (rc) {
        fprintf(stderr, "dspyc loadtest: %s\n", err.message[0] ? err.message : dspy_strerror(rc));
        return -1;
    }
    lt_finish(r);
    return 0;
}

void lt_finish(struct lt_run *r)
{
    struct lt_shard *t = &r->total;
    for (unsigned i = 0; i < r->nshards; i++) {
        struct lt_shard *s = &r->shards[i];
        for (int m = 0; m < M_NMETRICS; m++)
            dspy_hist_merge(t->h[m], s->h[m]);
        dspy_timeseries_merge(t->ts, s->ts);
        for (int k = 0; k < DSPY_LG_NOUTCOMES; k++)
            t->outcomes[k] += s->outcomes[k];
        for (int k = 0; k < 600; k++)
            t->status[k] += s->status[k];
        t->ok += s->ok;
        t->good += s->good;
        t->tokens += s->tokens;
        t->prompt_tokens += s->prompt_tokens;
        t->usage_missing += s->usage_missing;
        t->reused += s->reused;
        t->new_conn += s->new_conn;
        t->measured += s->measured;
        if (s->first_ns && (!t->first_ns || s->first_ns < t->first_ns))
            t->first_ns = s->first_ns;
        if (s->last_ns > t->last_ns)
            t->last_ns = s->last_ns;
        if (r->log && s->loglen)
            fwrite(s->logbuf, 1, s->loglen, r->log);
        s->loglen = 0;
    }
    uint64_t from = r->origin_ns + (uint64_t)(r->o->warmup_s * 1e9);
    r->duration_s = t->last_ns > from ? (double)(t->last_ns - from) / 1e9 : 0;
}
