/* What the server measures (serve layer): request counters by route, model, upstream and
 * status, latency histograms (end to end, upstream, time to first token), tokens and cost,
 * cache results per level, process memory and CPU, the per-stage profiler, and per-second
 * series for the dashboard; served as Prometheus text at /metrics, as JSON at
 * /dashboard/data and /debug/profile, and as the JSON-lines access log. No secret is ever
 * a label: routes, model names (bounded in number), upstream names and status codes. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include <dspyc/proc.h>
#include <dspyc/timeseries.h>

#include "base/buf.h"
#include "base/clock.h"
#include "serve/serve_int.h"

#define NBUCKETS 18
#define MAX_SERIES 1000
#define MAX_UPS 64
#define WINDOW_S 600     /* seconds per dashboard series before it is rotated */
#define DASH_SECONDS 120 /* seconds the dashboard shows */
#define PROC_RING 300

extern const char dspy_web_dashboard_html[];
extern const size_t dspy_web_dashboard_html_len;

static const double bounds_s[NBUCKETS] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                           0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                           1,      2.5,     5,      10,    30,     60 };
static const char *const stage_names[DSPY__NSTAGES] = { "parse",         "cache_lookup", "format",
                                                        "upstream_wait", "parse_reply",  "write" };

struct phist {
    atomic_uint_fast64_t b[NBUCKETS + 1]; /* last = +Inf */
    atomic_uint_fast64_t sum_ns, count;
};

struct series {
    const char *route; /* static label */
    char model[DSPY__SERVE_MODEL_MAX];
    int upstream;
    int status;
    uint64_t count;
    uint64_t tokens_in, tokens_out;
    double cost, saved; /* USD paid upstream; what cache hits would have cost */
};

enum { TS_REQ, TS_ERR, TS_HIT, TS_MISS, TS_NCOUNTERS };

struct proc_point {
    uint64_t t_s;       /* seconds since the server started */
    double rss_mb, cpu; /* cpu: cores busy over the last second */
};

struct dspy__serve_metrics {
    pthread_mutex_t lock; /* guards series, the dashboard series and the proc ring */
    struct series *series;
    size_t nseries;
    const char *labels[DSPY__SERVE_MAX_ROUTES]; /* distinct route labels */
    size_t nlabels;
    struct phist e2e[DSPY__SERVE_MAX_ROUTES];
    atomic_uint_fast64_t prof[DSPY__SERVE_MAX_ROUTES][DSPY__NSTAGES];
    atomic_uint_fast64_t prof_n[DSPY__SERVE_MAX_ROUTES];
    struct phist up_lat[MAX_UPS], ttft[MAX_UPS];
    atomic_uint_fast64_t cache_src[8];
    atomic_uint_fast64_t events[4];
    dspy_timeseries *cur, *prev;
    uint64_t cur_origin_s, prev_origin_s; /* whole seconds since origin_ns */
    uint64_t origin_ns;
    struct proc_point proc[PROC_RING];
    uint64_t nproc;
    uint64_t last_cpu_ns, last_sample_ns;
    dspy_server *s; /* for the sampler */
};

struct dspy__serve_metrics *dspy__serve_metrics_new(void)
{
    struct dspy__serve_metrics *m = dspy_calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->series = dspy_calloc(MAX_SERIES + 1, sizeof(*m->series));
    m->origin_ns = dspy__now_ns();
    m->cur = dspy_timeseries_new(m->origin_ns, WINDOW_S, TS_NCOUNTERS, 1);
    if (!m->series || !m->cur) {
        dspy_timeseries_free(m->cur);
        dspy_free(m->series);
        dspy_free(m);
        return NULL;
    }
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

void dspy__serve_metrics_free(struct dspy__serve_metrics *m)
{
    if (!m)
        return;
    dspy_timeseries_free(m->cur);
    dspy_timeseries_free(m->prev);
    dspy_free(m->series);
    pthread_mutex_destroy(&m->lock);
    dspy_free(m);
}

static void phist_add(struct phist *h, uint64_t ns)
{
    size_t i = 0;
    double s = (double)ns / 1e9;
    while (i < NBUCKETS && s > bounds_s[i])
        i++;
    atomic_fetch_add_explicit(&h->b[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

/* The label's index; under m->lock. */
static size_t label_index(struct dspy__serve_metrics *m, const char *label)
{
    for (size_t i = 0; i < m->nlabels; i++)
        if (!strcmp(m->labels[i], label))
            return i;
    if (m->nlabels == DSPY__SERVE_MAX_ROUTES)
        return DSPY__SERVE_MAX_ROUTES - 1;
    m->labels[m->nlabels] = label;
    return m->nlabels++;
}

/* The dashboard series holding `t_s`, rotating windows as time moves on; under m->lock. */
static dspy_timeseries *series_at(struct dspy__serve_metrics *m, uint64_t t_s)
{
    if (t_s >= m->cur_origin_s + WINDOW_S) {
        uint64_t origin_s = t_s - t_s % WINDOW_S;
        dspy_timeseries *ts = dspy_timeseries_new(m->origin_ns + origin_s * 1000000000ull, WINDOW_S,
                                                  TS_NCOUNTERS, 1);
        if (!ts)
            return NULL;
        dspy_timeseries_free(m->prev);
        m->prev = m->cur;
        m->prev_origin_s = m->cur_origin_s;
        m->cur = ts;
        m->cur_origin_s = origin_s;
    }
    return m->cur;
}

static void access_log(dspy_server *s, const struct dspy__serve_ctx *ctx, const char *route,
                       uint64_t now)
{
    struct dspy_buf b;
    char ts[40];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    const char *path = dspy__srv_req_path(ctx->req);
    dspy__buf_init(&b, 8192);
    dspy__buf_addf(&b, "{\"ts\":\"%s\",\"method\":", ts);
    dspy__buf_add_json_str(&b, dspy__srv_req_method(ctx->req),
                           strlen(dspy__srv_req_method(ctx->req)));
    dspy__buf_adds(&b, ",\"path\":");
    dspy__buf_add_json_str(&b, path, strlen(path) > 512 ? 512 : strlen(path));
    dspy__buf_addf(&b, ",\"route\":\"%s\",\"status\":%d,\"model\":", route, ctx->status);
    if (ctx->model[0])
        dspy__buf_add_json_str(&b, ctx->model, strlen(ctx->model));
    else
        dspy__buf_adds(&b, "null");
    dspy__buf_adds(&b, ",\"upstream\":");
    if (ctx->upstream >= 0)
        dspy__buf_add_json_str(&b, s->ups[ctx->upstream].name, strlen(s->ups[ctx->upstream].name));
    else
        dspy__buf_adds(&b, "null");
    dspy__buf_addf(&b,
                   ",\"cache\":%s%s%s,\"ms\":%.3f,\"upstream_ms\":%.3f,\"tokens_in\":%ld,"
                   "\"tokens_out\":%ld,\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64
                   ",\"tenant\":",
                   ctx->cache_status ? "\"" : "", ctx->cache_status ? ctx->cache_status : "null",
                   ctx->cache_status ? "\"" : "", (double)(now - ctx->t0) / 1e6,
                   (double)ctx->upstream_ns / 1e6, ctx->tokens_in, ctx->tokens_out,
                   dspy__srv_req_body_size(ctx->req), ctx->bytes_out);
    if (ctx->tenant)
        dspy__buf_add_json_str(&b, ctx->tenant, strlen(ctx->tenant));
    else
        dspy__buf_adds(&b, "null");
    dspy__buf_adds(&b, "}\n");
    if (b.ptr) {
        pthread_mutex_lock(&s->log_lock);
        fwrite(b.ptr, 1, b.len, s->access_log);
        pthread_mutex_unlock(&s->log_lock);
    }
    dspy__buf_release(&b);
}

void dspy__serve_metrics_finish(dspy_server *s, const struct dspy__serve_ctx *ctx)
{
    struct dspy__serve_metrics *m = s->metrics;
    uint64_t now = dspy__now_ns();
    const char *route = s->routes[ctx->route].label;
    uint64_t e2e = now > ctx->t0 ? now - ctx->t0 : 0;
    /* The upstream's prices from the config, else the price table's for the model; cache
     * hits (exact or semantic) cost nothing and count as saved. */
    double cost = 0, saved = 0;
    struct dspy_price pr = { 0, 0 };
    bool priced = false;
    if (ctx->upstream >= 0 &&
        (s->ups[ctx->upstream].cost_in > 0 || s->ups[ctx->upstream].cost_out > 0)) {
        pr.input_per_1k = s->ups[ctx->upstream].cost_in / 1000.0;
        pr.output_per_1k = s->ups[ctx->upstream].cost_out / 1000.0;
        priced = true;
    } else if (ctx->model[0]) {
        priced = dspy_price_lookup(s->prices, ctx->model, &pr);
    }
    bool hit = ctx->cache_status && strcmp(ctx->cache_status, "miss");
    long tin = ctx->tokens_in > 0 ? ctx->tokens_in : 0,
         tout = ctx->tokens_out > 0 ? ctx->tokens_out : 0;
    if (priced)
        *(hit ? &saved : &cost) = dspy_price_cost(&pr, tin, tout);
    if (hit) /* the tokens counter is what upstreams reported for calls made */
        tin = tout = 0;

    pthread_mutex_lock(&m->lock);
    size_t li = label_index(m, route);
    const char *model = ctx->model[0] ? ctx->model : "";
    size_t i = 0;
    for (; i < m->nseries; i++) {
        struct series *x = &m->series[i];
        if (x->route == m->labels[li] && x->upstream == ctx->upstream && x->status == ctx->status &&
            !strcmp(x->model, model))
            break;
    }
    if (i == m->nseries) {
        if (m->nseries < MAX_SERIES) {
            m->nseries++;
            snprintf(m->series[i].model, sizeof(m->series[i].model), "%s", model);
        } else { /* the overflow row: too many distinct models */
            i = MAX_SERIES;
            snprintf(m->series[i].model, sizeof(m->series[i].model), "_other");
        }
        m->series[i].route = m->labels[li];
        m->series[i].upstream = ctx->upstream;
        m->series[i].status = ctx->status;
    }
    struct series *x = &m->series[i];
    x->count++;
    x->tokens_in += (uint64_t)tin;
    x->tokens_out += (uint64_t)tout;
    x->cost += cost;
    x->saved += saved;
    uint64_t t_s = (now - m->origin_ns) / 1000000000ull;
    dspy_timeseries *ts = series_at(m, t_s);
    if (ts && (!strcmp(route, "chat") || !strcmp(route, "embeddings"))) {
        dspy_timeseries_add(ts, TS_REQ, now, 1);
        if (ctx->status >= 400)
            dspy_timeseries_add(ts, TS_ERR, now, 1);
        if (ctx->cache_status)
            dspy_timeseries_add(ts, ctx->cache_status[0] == 'h' ? TS_HIT : TS_MISS, now, 1);
        dspy_timeseries_record(ts, 0, now, e2e);
    }
    pthread_mutex_unlock(&m->lock);

    phist_add(&m->e2e[li], e2e);
    for (int st = 0; st < DSPY__NSTAGES; st++)
        atomic_fetch_add_explicit(&m->prof[li][st], ctx->stage_ns[st], memory_order_relaxed);
    atomic_fetch_add_explicit(&m->prof_n[li], 1, memory_order_relaxed);
    if (ctx->upstream >= 0 && ctx->upstream < MAX_UPS && ctx->upstream_ns)
        phist_add(&m->up_lat[ctx->upstream], ctx->upstream_ns);
    if (ctx->upstream >= 0 && ctx->upstream < MAX_UPS && ctx->ttft_ns)
        phist_add(&m->ttft[ctx->upstream], ctx->ttft_ns);
    if (s->access_log)
        access_log(s, ctx, route, now);
}

void dspy__serve_metrics_cache(dspy_server *s, enum dspy_cache_source src)
{
    atomic_fetch_add_explicit(&s->metrics->cache_src[(unsigned)src & 7], 1, memory_order_relaxed);
}

void dspy__serve_metrics_event(dspy_server *s, int what)
{
    atomic_fetch_add_explicit(&s->metrics->events[what & 3], 1, memory_order_relaxed);
}

/* ---- the sampler ------------------------------------------------------------------------ */

static void sample(void *arg)
{
    dspy_server *s = arg;
    struct dspy__serve_metrics *m = s->metrics;
    struct dspy_proc_sample ps;
    uint64_t now = dspy__now_ns();
    if (!dspy_proc_sample(0, &ps)) {
        uint64_t cpu = ps.cpu_user_ns + ps.cpu_system_ns;
        pthread_mutex_lock(&m->lock);
        struct proc_point *p = &m->proc[m->nproc % PROC_RING];
        p->t_s = (now - m->origin_ns) / 1000000000ull;
        p->rss_mb = (double)ps.rss_bytes / (1 << 20);
        p->cpu = m->last_sample_ns && now > m->last_sample_ns
                     ? (double)(cpu - m->last_cpu_ns) / (double)(now - m->last_sample_ns)
                     : 0;
        m->last_cpu_ns = cpu;
        m->last_sample_ns = now;
        m->nproc++;
        pthread_mutex_unlock(&m->lock);
    }
    dspy__srv_timer_add(s->srv, now + 1000000000ull, sample, s);
}

dspy_status dspy__serve_metrics_start(dspy_server *s)
{
    s->metrics->s = s;
    return dspy__srv_timer_add(s->srv, dspy__now_ns(), sample, s);
}

/* ---- Prometheus text ---------------------------------------------------------------------- */

static void label_value(struct dspy_buf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            dspy__buf_addc(b, '\\');
        if (*v == '\n') {
            dspy__buf_adds(b, "\\n");
            continue;
        }
        dspy__buf_addc(b, *v);
    }
}

static void head(struct dspy_buf *b, const char *name, const char *type, const char *help)
{
    dspy__buf_addf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void hist_lines(struct dspy_buf *b, const char *name, const char *lname, const char *lvalue,
                       const struct phist *h)
{
    uint64_t cum = 0;
    for (int i = 0; i <= NBUCKETS; i++) {
        cum += atomic_load_explicit(&h->b[i], memory_order_relaxed);
        dspy__buf_addf(b, "%s_bucket{%s=\"", name, lname);
        label_value(b, lvalue);
        if (i < NBUCKETS)
            dspy__buf_addf(b, "\",le=\"%g\"} %" PRIu64 "\n", bounds_s[i], cum);
        else
            dspy__buf_addf(b, "\",le=\"+Inf\"} %" PRIu64 "\n", cum);
    }
    dspy__buf_addf(b, "%s_sum{%s=\"", name, lname);
    label_value(b, lvalue);
    dspy__buf_addf(b, "\"} %.9f\n", (double)atomic_load(&h->sum_ns) / 1e9);
    dspy__buf_addf(b, "%s_count{%s=\"", name, lname);
    label_value(b, lvalue);
    dspy__buf_addf(b, "\"} %" PRIu64 "\n", cum);
}

static void series_labels(struct dspy_buf *b, dspy_server *s, const struct series *x)
{
    dspy__buf_addf(b, "{route=\"%s\",model=\"", x->route);
    label_value(b, x->model);
    dspy__buf_adds(b, "\",upstream=\"");
    label_value(b, x->upstream >= 0 ? s->ups[x->upstream].name : "");
    dspy__buf_addf(b, "\",status=\"%d\"}", x->status);
}

/* A USD counter per series: what was paid upstream, or what cache hits saved. m->lock held. */
static void usd_counter(struct dspy_buf *b, dspy_server *s, const char *name, const char *help,
                        bool saved)
{
    const struct dspy__serve_metrics *m = s->metrics;
    head(b, name, "counter", help);
    for (size_t i = 0; i <= MAX_SERIES; i++) {
        const struct series *x = &m->series[i];
        if (!x->count)
            continue;
        dspy__buf_adds(b, name);
        series_labels(b, s, x);
        dspy__buf_addf(b, " %.9f\n", saved ? x->saved : x->cost);
    }
}

static void prometheus(dspy_server *s, struct dspy_buf *b)
{
    struct dspy__serve_metrics *m = s->metrics;
    pthread_mutex_lock(&m->lock);
    head(b, "dspyc_requests_total", "counter",
         "Requests answered, by route, model, upstream and status.");
    for (size_t i = 0; i <= MAX_SERIES; i++) {
        const struct series *x = &m->series[i];
        if (!x->count)
            continue;
        dspy__buf_adds(b, "dspyc_requests_total");
        series_labels(b, s, x);
        dspy__buf_addf(b, " %" PRIu64 "\n", x->count);
    }
    head(b, "dspyc_tokens_total", "counter",
         "Tokens reported by upstreams, by direction (in = prompt, out = completion).");
    for (size_t i = 0; i <= MAX_SERIES; i++) {
        const struct series *x = &m->series[i];
        for (int d = 0; d < 2 && x->count; d++) {
            dspy__buf_addf(b, "dspyc_tokens_total{direction=\"%s\",route=\"%s\",model=\"",
                           d ? "out" : "in", x->route);
            label_value(b, x->model);
            dspy__buf_addf(b, "\",status=\"%d\",upstream=\"", x->status);
            label_value(b, x->upstream >= 0 ? s->ups[x->upstream].name : "");
            dspy__buf_addf(b, "\"} %" PRIu64 "\n", d ? x->tokens_out : x->tokens_in);
        }
    }
    usd_counter(b, s, "dspyc_cost_usd_total",
                "Estimated upstream cost from the configured prices (cache hits cost nothing).",
                false);
    usd_counter(b, s, "dspyc_cost_saved_usd_total",
                "What the answers from the cache would have cost upstream, at the same prices.",
                true);
    size_t nl = m->nlabels;
    pthread_mutex_unlock(&m->lock);

    head(b, "dspyc_request_duration_seconds", "histogram",
         "End-to-end latency from the request received to the answer handed over.");
    for (size_t i = 0; i < nl; i++)
        hist_lines(b, "dspyc_request_duration_seconds", "route", m->labels[i], &m->e2e[i]);
    head(b, "dspyc_upstream_duration_seconds", "histogram",
         "Upstream latency per call, retries and rate-limit waits included.");
    for (size_t i = 0; i < s->nups && i < MAX_UPS; i++)
        hist_lines(b, "dspyc_upstream_duration_seconds", "upstream", s->ups[i].name, &m->up_lat[i]);
    head(b, "dspyc_upstream_ttft_seconds", "histogram",
         "Time to the first streamed event from the upstream.");
    for (size_t i = 0; i < s->nups && i < MAX_UPS; i++)
        hist_lines(b, "dspyc_upstream_ttft_seconds", "upstream", s->ups[i].name, &m->ttft[i]);

    static const char *const uname[] = { "requests", "retries", "ratelimit_waits", "rejected_busy",
                                         "failed" };
    static const char *const uhelp[] = {
        "Calls sent to the upstream.", "Upstream attempts after the first.",
        "Upstream calls that waited for the upstream's rate limiter.",
        "Upstream calls refused because the rate limiter's queue was full.",
        "Upstream calls that ended without an HTTP answer."
    };
    for (int k = 0; k < 5; k++) {
        char name[64];
        snprintf(name, sizeof(name), "dspyc_upstream_%s_total", uname[k]);
        head(b, name, "counter", uhelp[k]);
        for (size_t i = 0; i < s->nups; i++) {
            struct dspy_lm_stats st;
            dspy_lm_get_stats(s->ups[i].lm, &st);
            uint64_t v[5] = { st.requests, st.retries, st.ratelimit_waits, st.rejected_busy,
                              st.failed };
            dspy__buf_addf(b, "%s{upstream=\"", name);
            label_value(b, s->ups[i].name);
            dspy__buf_addf(b, "\"} %" PRIu64 "\n", v[k]);
        }
    }

    head(b, "dspyc_cache_lookups_total", "counter",
         "Proxy cache lookups by result and the level that answered.");
    static const char *const lv[] = { "miss", "l1", "l2", "l3" };
    for (int i = 0; i < 4; i++)
        dspy__buf_addf(b, "dspyc_cache_lookups_total{result=\"%s\",level=\"%s\"} %" PRIu64 "\n",
                       i ? "hit" : "miss", i ? lv[i] : "none", atomic_load(&m->cache_src[i]));
    if (s->cache) {
        struct dspy_cache_stats cs;
        dspy_cache_stats(s->cache, &cs);
        static const char *const ln[] = { "l1", "l2", "l3" };
        head(b, "dspyc_cache_level_hits_total", "counter", "Hits per cache level (all users).");
        for (int i = 0; i < 3; i++)
            dspy__buf_addf(b, "dspyc_cache_level_hits_total{level=\"%s\"} %" PRIu64 "\n", ln[i],
                           cs.level[i].hits);
        head(b, "dspyc_cache_level_misses_total", "counter", "Misses per cache level.");
        for (int i = 0; i < 3; i++)
            dspy__buf_addf(b, "dspyc_cache_level_misses_total{level=\"%s\"} %" PRIu64 "\n", ln[i],
                           cs.level[i].misses);
        head(b, "dspyc_cache_entries", "gauge", "Entries held per level (L2 not tracked).");
        for (int i = 0; i < 3; i++)
            dspy__buf_addf(b, "dspyc_cache_entries{level=\"%s\"} %" PRIu64 "\n", ln[i],
                           cs.level[i].entries);
    }
    static const char *const en[] = { "overload_rejections", "fallbacks", "unauthorized",
                                      "coalesced" };
    static const char *const eh[] = {
        "Requests refused with 429 because --max-in-flight requests were being answered.",
        "Upstream calls moved to a fallback upstream after a retryable failure.",
        "Requests refused for a missing or wrong token.",
        "Requests answered by another client's identical in-flight request."
    };
    for (int i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof(name), "dspyc_%s_total", en[i]);
        head(b, name, "counter", eh[i]);
        dspy__buf_addf(b, "%s %" PRIu64 "\n", name, atomic_load(&m->events[i]));
    }
    head(b, "dspyc_in_flight", "gauge", "Requests being answered now.");
    dspy__buf_addf(b, "dspyc_in_flight %u\n", atomic_load(&s->in_flight));
    head(b, "dspyc_profile_seconds_total", "counter", "Time spent per route and stage.");
    for (size_t i = 0; i < nl; i++)
        for (int st = 0; st < DSPY__NSTAGES; st++)
            dspy__buf_addf(b, "dspyc_profile_seconds_total{route=\"%s\",stage=\"%s\"} %.9f\n",
                           m->labels[i], stage_names[st],
                           (double)atomic_load(&m->prof[i][st]) / 1e9);
    struct dspy_proc_sample ps;
    if (!dspy_proc_sample(0, &ps)) {
        head(b, "dspyc_process_resident_memory_bytes", "gauge", "Resident memory.");
        dspy__buf_addf(b, "dspyc_process_resident_memory_bytes %" PRIu64 "\n", ps.rss_bytes);
        head(b, "dspyc_process_cpu_seconds_total", "counter", "User and system CPU time.");
        dspy__buf_addf(b, "dspyc_process_cpu_seconds_total %.6f\n",
                       (double)(ps.cpu_user_ns + ps.cpu_system_ns) / 1e9);
    }
    if (s->jobs)
        dspy__serve_jobs_metrics(b, s->jobs);
    head(b, "dspyc_uptime_seconds", "gauge", "Seconds since the server started.");
    dspy__buf_addf(b, "dspyc_uptime_seconds %.3f\n",
                   (double)(dspy__now_ns() - s->started_ns) / 1e9);
}

static void metrics_route(struct dspy__serve_ctx *ctx, void *ud)
{
    struct dspy_buf b;
    (void)ud;
    dspy__buf_init(&b, (size_t)64 << 20);
    prometheus(ctx->s, &b);
    if (b.ptr)
        dspy__serve_send(ctx, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, b.ptr, b.len);
    else
        dspy__serve_error(ctx, 500, "server_error", NULL, NULL, "Out of memory.");
    dspy__buf_release(&b);
}

/* ---- the profiler and the dashboard feed --------------------------------------------------- */

static json_t *profile_json(dspy_server *s)
{
    struct dspy__serve_metrics *m = s->metrics;
    json_t *routes = json_array(), *hot = json_array();
    struct hot {
        double ms;
        size_t route;
        int stage;
    } top[DSPY__SERVE_MAX_ROUTES * DSPY__NSTAGES];
    size_t ntop = 0;
    double all = 0;
    for (size_t i = 0; i < m->nlabels; i++) {
        uint64_t n = atomic_load(&m->prof_n[i]);
        uint64_t total = 0;
        for (int st = 0; st < DSPY__NSTAGES; st++)
            total += atomic_load(&m->prof[i][st]);
        json_t *stages = json_array();
        for (int st = 0; st < DSPY__NSTAGES; st++) {
            uint64_t v = atomic_load(&m->prof[i][st]);
            json_array_append_new(stages, json_pack("{s:s,s:f,s:f,s:f}", "stage", stage_names[st],
                                                    "total_ms", (double)v / 1e6, "mean_us",
                                                    n ? (double)v / 1e3 / (double)n : 0.0, "share",
                                                    total ? (double)v / (double)total : 0.0));
            top[ntop].ms = (double)v / 1e6;
            top[ntop].route = i;
            top[ntop++].stage = st;
            all += (double)v / 1e6;
        }
        json_array_append_new(routes, json_pack("{s:s,s:I,s:f,s:o}", "route", m->labels[i],
                                                "requests", (json_int_t)n, "total_ms",
                                                (double)total / 1e6, "stages", stages));
    }
    for (size_t k = 0; k < 5 && k < ntop; k++) { /* the five largest, by selection */
        size_t best = k;
        for (size_t j = k + 1; j < ntop; j++)
            if (top[j].ms > top[best].ms)
                best = j;
        if (best != k) {
            struct hot t = top[k];
            top[k] = top[best];
            top[best] = t;
        }
        if (top[k].ms <= 0)
            break;
        json_array_append_new(hot, json_pack("{s:s,s:s,s:f,s:f}", "route", m->labels[top[k].route],
                                             "stage", stage_names[top[k].stage], "total_ms",
                                             top[k].ms, "share", all > 0 ? top[k].ms / all : 0.0));
    }
    return json_pack("{s:o,s:o}", "routes", routes, "hot_spots", hot);
}

static void send_json(struct dspy__serve_ctx *ctx, json_t *v)
{
    char *text = v ? json_dumps(v, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
    if (text)
        dspy__serve_send(ctx, 200, "application/json", NULL, text, strlen(text));
    else
        dspy__serve_error(ctx, 500, "server_error", NULL, NULL, "Out of memory.");
    dspy_free(text);
    json_decref(v);
}

static void profile_route(struct dspy__serve_ctx *ctx, void *ud)
{
    (void)ud;
    send_json(ctx, profile_json(ctx->s));
}

static json_t *dashboard_json(dspy_server *s)
{
    struct dspy__serve_metrics *m = s->metrics;
    json_t *secs = json_array();
    uint64_t now_s = (dspy__now_ns() - m->origin_ns) / 1000000000ull;
    uint64_t from = now_s >= DASH_SECONDS ? now_s - DASH_SECONDS : 0;
    pthread_mutex_lock(&m->lock);
    for (uint64_t t = from; t < now_s; t++) {
        const dspy_timeseries *ts = NULL;
        uint64_t origin = 0;
        if (t >= m->cur_origin_s && t < m->cur_origin_s + WINDOW_S)
            ts = m->cur, origin = m->cur_origin_s;
        else if (m->prev && t >= m->prev_origin_s && t < m->prev_origin_s + WINDOW_S)
            ts = m->prev, origin = m->prev_origin_s;
        uint32_t k = (uint32_t)(t - origin);
        bool in = ts && k < dspy_timeseries_seconds(ts) + 1;
        double req = in ? dspy_timeseries_counter(ts, TS_REQ, k) : 0;
        double err = in ? dspy_timeseries_counter(ts, TS_ERR, k) : 0;
        double hit = in ? dspy_timeseries_counter(ts, TS_HIT, k) : 0;
        double miss = in ? dspy_timeseries_counter(ts, TS_MISS, k) : 0;
        double p[3] = { 0, 0, 0 };
        static const double q[3] = { 50, 90, 99 };
        for (int i = 0; i < 3 && in; i++)
            p[i] = (double)dspy_timeseries_percentile(ts, 0, k, q[i]) / 1e6;
        double rss = 0, cpu = 0;
        for (uint64_t j = m->nproc > PROC_RING ? m->nproc - PROC_RING : 0; j < m->nproc; j++)
            if (m->proc[j % PROC_RING].t_s == t) {
                rss = m->proc[j % PROC_RING].rss_mb;
                cpu = m->proc[j % PROC_RING].cpu;
            }
        json_array_append_new(secs,
                              json_pack("{s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "t",
                                        (json_int_t)t - (json_int_t)now_s, "rps", req, "error_rate",
                                        req > 0 ? err / req : 0.0, "hit_rate",
                                        hit + miss > 0 ? hit / (hit + miss) : 0.0, "p50_ms", p[0],
                                        "p90_ms", p[1], "p99_ms", p[2], "rss_mb", rss, "cpu", cpu));
    }
    pthread_mutex_unlock(&m->lock);
    return json_pack("{s:f,s:I,s:o,s:o}", "uptime_s",
                     (double)(dspy__now_ns() - s->started_ns) / 1e9, "in_flight",
                     (json_int_t)atomic_load(&s->in_flight), "seconds", secs, "profile",
                     profile_json(s));
}

static void dashboard_data(struct dspy__serve_ctx *ctx, void *ud)
{
    (void)ud;
    send_json(ctx, dashboard_json(ctx->s));
}

static void dashboard(struct dspy__serve_ctx *ctx, void *ud)
{
    static const char *const hdr[] = { "Content-Security-Policy",
                                       "default-src 'self'; script-src 'unsafe-inline'; "
                                       "style-src 'unsafe-inline'; img-src data:",
                                       "Cache-Control", "no-store", NULL };
    (void)ud;
    dspy__serve_send(ctx, 200, "text/html; charset=utf-8", hdr, dspy_web_dashboard_html,
                     dspy_web_dashboard_html_len);
}

dspy_status dspy__serve_metrics_routes(dspy_server *s)
{
    dspy_status rc = dspy__serve_route(s, "GET", "/metrics", "metrics", DSPY__SERVE_ADMIN,
                                       metrics_route, NULL);
    if (!rc)
        rc = dspy__serve_route(s, "GET", "/debug/profile", "profile", DSPY__SERVE_ADMIN,
                               profile_route, NULL);
    if (!rc)
        rc = dspy__serve_route(s, "GET", "/dashboard/data", "dashboard", DSPY__SERVE_ADMIN,
                               dashboard_data, NULL);
    if (!rc)
        rc = dspy__serve_route(s, "GET", "/dashboard", "dashboard", DSPY__SERVE_ADMIN, dashboard,
                               NULL);
    return rc;
}
