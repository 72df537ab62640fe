/* Measurements of `dspyc bench` (apps layer): one timed series of single calls with the
 * overhead breakdown and memory sampling, then the same inputs from several threads. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define RSS_SAMPLES 64

struct par_state {
    dspy_program *prog;
    dspy_lm *lm;
    const json_t *inputs;
    long total;
    atomic_long next;
    atomic_long errors;
    struct bench_subject *out;
    pthread_mutex_t *cost_lock; /* guards out->cost */
};

static const json_t *input_at(const json_t *inputs, long i)
{
    return json_array_get(inputs, (size_t)i % json_array_size(inputs));
}

/* One call; its usage goes to the subject's tally (under `lock` when threads share it). */
static int call_once(dspy_program *prog, dspy_lm *lm, const json_t *in, struct dspy_call_info *info,
                     struct dspy_error *err, struct bench_subject *s, pthread_mutex_t *lock)
{
    json_t *out = NULL;
    struct dspy_call_info mine;
    if (!info) {
        memset(&mine, 0, sizeof(mine));
        info = &mine;
    }
    dspy_status rc = dspy_program_call(prog, lm, in, NULL, &out, info, err);
    json_decref(out);
    if (info->lm_calls) {
        if (lock)
            pthread_mutex_lock(lock);
        dspy_cost_tally_add(s->cost, dspy_lm_model(lm), info->lm_calls, info->cache_hits,
                            &info->usage, &info->cached_usage);
        if (lock)
            pthread_mutex_unlock(lock);
    }
    return rc ? -1 : 0;
}

static void *par_worker(void *arg)
{
    struct par_state *st = arg;
    struct dspy_error err;
    long i;
    while ((i = atomic_fetch_add(&st->next, 1)) < st->total)
        if (call_once(st->prog, st->lm, input_at(st->inputs, i), NULL, &err, st->out,
                      st->cost_lock))
            atomic_fetch_add(&st->errors, 1);
    return NULL;
}

static void progress(const struct bench_config *cfg, const char *what, long done, long total)
{
    if (!cfg->progress || (done % 16 && done != total))
        return;
    fprintf(stderr, "\r  %-12s %6ld / %ld", what, done, total);
    if (done == total)
        fprintf(stderr, "\r%60s\r", "");
    fflush(stderr);
}

/* Least-squares slope of y over x. */
static double slope(const double *x, const double *y, int n)
{
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int i = 0; i < n; i++) {
        sx += x[i];
        sy += y[i];
        sxx += x[i] * x[i];
        sxy += x[i] * y[i];
    }
    double d = n * sxx - sx * sx;
    return n > 1 && d != 0 ? (n * sxy - sx * sy) / d : 0.0;
}

static void summarize(const dspy_hist *h, struct bench_latency *l)
{
    l->count = dspy_hist_count(h);
    l->min = dspy_hist_min(h);
    l->max = dspy_hist_max(h);
    l->p50 = dspy_hist_percentile(h, 50);
    l->p95 = dspy_hist_percentile(h, 95);
    l->p99 = dspy_hist_percentile(h, 99);
    l->mean = dspy_hist_mean(h);
    l->stdev = dspy_hist_stddev(h);
}

static void note_error(struct bench_subject *out, const struct dspy_error *err)
{
    if (!out->errors++)
        snprintf(out->first_error, sizeof(out->first_error), "%.30s: %.200s",
                 dspy_status_name(err->code), err->message);
}

/* The single-call series: latency, breakdown and RSS samples. */
static void run_series(dspy_program *prog, dspy_lm *lm, const struct bench_config *cfg,
                       struct bench_subject *out, dspy_hist *h)
{
    double xs[RSS_SAMPLES], ys[RSS_SAMPLES];
    int nsamples = 0;
    long every = cfg->iterations / RSS_SAMPLES > 0 ? cfg->iterations / RSS_SAMPLES : 1;
    uint64_t fmt = 0, lmt = 0, parse = 0, total = 0, wall = 0;
    struct dspy_proc_sample ps;
    struct dspy_error err;
    dspy_proc_sample(0, &ps);
    uint64_t rss_start = ps.rss_bytes;
    for (long i = 0; i < cfg->iterations; i++) {
        struct dspy_call_info info;
        memset(&info, 0, sizeof(info));
        uint64_t t0 = dspy_clock_ns();
        int bad = call_once(prog, lm, input_at(cfg->inputs, i), &info, &err, out, NULL);
        uint64_t dt = dspy_clock_ns() - t0;
        wall += dt;
        if (bad) { /* a failure's time is no latency of a call that worked */
            note_error(out, &err);
            out->seq_failed++;
        } else {
            dspy_hist_record(h, dt);
            out->seq_ok++;
            total += dt;
            fmt += info.format_ns;
            lmt += info.lm_ns;
            parse += info.parse_ns;
        }
        if (i % every == 0 && nsamples < RSS_SAMPLES && dspy_proc_sample(0, &ps) == DSPY_OK) {
            xs[nsamples] = (double)i;
            ys[nsamples++] = (double)ps.rss_bytes;
        }
        progress(cfg, "single", i + 1, cfg->iterations);
    }
    double n = (double)cfg->iterations, ok = out->seq_ok ? (double)out->seq_ok : 1.0;
    out->total_ns = (double)total / ok;
    out->format_ns = (double)fmt / ok;
    out->lm_ns = (double)lmt / ok;
    out->parse_ns = (double)parse / ok;
    out->other_ns = out->total_ns - out->format_ns - out->lm_ns - out->parse_ns;
    out->seq_s = (double)wall / 1e9;
    dspy_proc_sample(0, &ps);
    out->rss_end = ps.rss_bytes;
    out->bytes_per_call = ((double)ps.rss_bytes - (double)rss_start) / n;
    out->leak_slope = slope(xs, ys, nsamples);
    /* Growth worth a look: over 64 bytes a call and over 1 MiB in all. */
    out->leak_suspected = out->leak_slope > 64 && out->leak_slope * n > 1048576.0;
}

static int run_parallel(dspy_program *prog, dspy_lm *lm, const struct bench_config *cfg,
                        struct bench_subject *out)
{
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    struct par_state st = { prog, lm, cfg->inputs, cfg->iterations, 0, 0, out, &lock };
    long nthreads = cfg->concurrency < cfg->iterations ? cfg->concurrency : cfg->iterations;
    pthread_t tids[1024];
    long started = 0;
    if (nthreads > 1024)
        nthreads = 1024;
    uint64_t t0 = dspy_clock_ns();
    for (; started < nthreads; started++)
        if (pthread_create(&tids[started], NULL, par_worker, &st))
            break;
    if (!started)
        return -1;
    for (long i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    out->par_s = (double)(dspy_clock_ns() - t0) / 1e9;
    out->par_failed = atomic_load(&st.errors);
    out->par_ok = cfg->iterations - out->par_failed;
    out->errors += out->par_failed;
    return 0;
}

int bench_measure(dspy_program *prog, dspy_lm *lm, const struct bench_config *cfg,
                  struct bench_subject *out)
{
    struct dspy_proc_sample ps;
    struct dspy_error err;
    dspy_hist *h = dspy_hist_new();
    if (!h || !(out->cost = dspy_cost_tally_new(cfg->prices, NULL))) {
        dspy_hist_free(h);
        return -1;
    }
    dspy_proc_sample(0, &ps);
    out->rss_baseline = ps.rss_bytes;
    for (long i = 0; i < cfg->warmup; i++)
        if (call_once(prog, lm, input_at(cfg->inputs, i), NULL, &err, out, NULL))
            note_error(out, &err);
    run_series(prog, lm, cfg, out, h);
    summarize(h, &out->latency);
    dspy_hist_free(h);
    if (run_parallel(prog, lm, cfg, out))
        return -1;
    /* Goodput: only calls that worked count, over the wall time of the whole series. */
    out->seq_qps = out->seq_s > 0 ? (double)out->seq_ok / out->seq_s : 0;
    out->par_qps = out->par_s > 0 ? (double)out->par_ok / out->par_s : 0;
    out->speedup = out->seq_qps > 0 ? out->par_qps / out->seq_qps : 0;
    out->failed = !out->seq_ok && !out->par_ok;
    dspy_proc_sample(0, &ps);
    out->rss_peak = ps.peak_rss_bytes;
    return 0;
}

double bench_self_cost_ns(void)
{
    dspy_hist *h = dspy_hist_new();
    const long n = 1000000;
    if (!h)
        return -1;
    uint64_t t0 = dspy_clock_ns();
    for (long i = 0; i < n; i++) {
        uint64_t a = dspy_clock_ns();
        dspy_hist_record(h, dspy_clock_ns() - a);
    }
    double per = (double)(dspy_clock_ns() - t0) / (double)n;
    dspy_hist_free(h);
    return per;
}
