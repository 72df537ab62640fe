/* `dspyc loadtest` analysis (apps layer): threshold and SLO terms (k6-style
 * 'p99(e2e)<500ms'), bottleneck rules with reasons and recommendations, and the self-checks
 * (Little's law, intended versus achieved arrivals) printed with every result. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loadtest.h"

static const char *const time_metrics[] = { "e2el", "latency",   "service",      "lag",
                                            "ttfb", "ttft",      "ttft_service", "ttfc",
                                            "itl",  "itl_token", "tpot" };
static const char *const rate_metrics[] = { "error_rate",        "success_rate", "throughput",
                                            "output_throughput", "goodput",      "achieved_ratio",
                                            "slo_attainment" };

static const char *alias(const char *m)
{
    if (!strcmp(m, "e2e") || !strcmp(m, "response"))
        return !strcmp(m, "e2e") ? "e2el" : "latency";
    if (!strcmp(m, "errors"))
        return "error_rate";
    if (!strcmp(m, "duration"))
        return "latency";
    return m;
}

static int metric_index(const char *m)
{
    for (int i = 0; i < M_NMETRICS; i++)
        if (!strcmp(m, time_metrics[i]))
            return i;
    return -1;
}

static int parse_one(const char *t, struct lt_cond *c)
{
    memset(c, 0, sizeof(*c));
    while (isspace((unsigned char)*t))
        t++;
    snprintf(c->text, sizeof(c->text), "%s", t);
    const char *op = strpbrk(t, "<>");
    if (!op)
        goto bad;
    char lhs[64];
    size_t ll = (size_t)(op - t);
    while (ll && isspace((unsigned char)t[ll - 1]))
        ll--;
    if (!ll || ll >= sizeof(lhs))
        goto bad;
    memcpy(lhs, t, ll);
    lhs[ll] = '\0';
    char *paren = strchr(lhs, '(');
    if (paren) {
        char *close = strrchr(lhs, ')');
        if (!close)
            goto bad;
        *close = '\0';
        *paren = '\0';
        snprintf(c->metric, sizeof(c->metric), "%s", alias(paren + 1));
        if (lhs[0] == 'p' && (isdigit((unsigned char)lhs[1]) || lhs[1] == '(')) {
            strcpy(c->agg, "p");
            c->pct = atof(lhs + 1 + (lhs[1] == '('));
        } else if (!strcmp(lhs, "median")) {
            strcpy(c->agg, "p");
            c->pct = 50;
        } else if (!strcmp(lhs, "mean") || !strcmp(lhs, "avg") || !strcmp(lhs, "max") ||
                   !strcmp(lhs, "min")) {
            strcpy(c->agg, !strcmp(lhs, "avg") || !strcmp(lhs, "mean") ? "mean"
                           : !strcmp(lhs, "max")                       ? "max"
                                                                       : "min");
        } else {
            goto bad;
        }
        if (metric_index(c->metric) < 0)
            goto bad;
    } else {
        snprintf(c->metric, sizeof(c->metric), "%s", alias(lhs));
        strcpy(c->agg, "value");
        bool known = false;
        for (size_t i = 0; i < sizeof(rate_metrics) / sizeof(rate_metrics[0]); i++)
            known |= !strcmp(c->metric, rate_metrics[i]);
        if (!known)
            goto bad;
    }
    c->less = *op == '<';
    op++;
    if (*op == '=') {
        c->or_equal = true;
        op++;
    }
    char *end;
    double v = strtod(op, &end);
    if (end == op)
        goto bad;
    while (isspace((unsigned char)*end))
        end++;
    bool is_time = strcmp(c->agg, "value") != 0;
    if (is_time) {
        double unit = 1e6; /* ms by default */
        if (!strncmp(end, "ms", 2))
            unit = 1e6;
        else if (!strncmp(end, "us", 2))
            unit = 1e3;
        else if (!strncmp(end, "ns", 2))
            unit = 1;
        else if (*end == 's')
            unit = 1e9;
        else if (*end)
            goto bad;
        c->value = v * unit;
    } else {
        c->value = *end == '%' ? v / 100 : v;
        bool fraction = strstr(c->metric, "rate") && strcmp(c->metric, "throughput") &&
                        !strstr(c->metric, "throughput");
        if (*end != '%' && fraction && v > 1)
            c->value = v / 100; /* "error_rate<5" means 5 % */
    }
    return 0;
bad:
    fprintf(stderr,
            "dspyc loadtest: cannot read the condition '%s' (want e.g. 'p99(e2e)<500ms', "
            "'mean(ttft)<=200ms', 'error_rate<5%%', 'throughput>90')\n",
            t);
    return -1;
}

int lt_parse_conds(const char *text, struct lt_cond *out, size_t max, size_t *n)
{
    char *copy = strdup(text), *save = NULL;
    int rc = 0;
    *n = 0;
    for (char *t = strtok_r(copy, ",", &save); t && !rc; t = strtok_r(NULL, ",", &save)) {
        if (*n == max) {
            fprintf(stderr, "dspyc loadtest: too many conditions in '%s'\n", text);
            rc = -1;
            break;
        }
        rc = parse_one(t, &out[*n]);
        if (!rc)
            (*n)++;
    }
    free(copy);
    return rc;
}

static double window_s(const struct lt_run *r)
{
    return r->duration_s > 0 ? r->duration_s : 1e-9;
}

bool lt_eval_cond(const struct lt_run *r, const struct lt_cond *c, double *actual)
{
    const struct lt_shard *t = &r->total;
    double v = 0;
    if (strcmp(c->agg, "value")) {
        const dspy_hist *h = t->h[metric_index(c->metric)];
        if (!dspy_hist_count(h)) {
            *actual = NAN;
            return false; /* nothing measured cannot pass */
        }
        v = !strcmp(c->agg, "p")      ? (double)dspy_hist_percentile(h, c->pct)
            : !strcmp(c->agg, "mean") ? dspy_hist_mean(h)
            : !strcmp(c->agg, "max")  ? (double)dspy_hist_max(h)
                                      : (double)dspy_hist_min(h);
    } else if (!strcmp(c->metric, "error_rate")) {
        v = lt_error_rate(r);
    } else if (!strcmp(c->metric, "success_rate")) {
        v = t->measured ? (double)t->ok / (double)t->measured : 0;
    } else if (!strcmp(c->metric, "throughput")) {
        v = lt_achieved_rps(r);
    } else if (!strcmp(c->metric, "output_throughput")) {
        v = (double)t->tokens / window_s(r);
    } else if (!strcmp(c->metric, "goodput")) {
        v = (double)t->good / window_s(r);
    } else if (!strcmp(c->metric, "slo_attainment")) {
        v = t->measured ? (double)t->good / (double)t->measured : 0;
    } else if (!strcmp(c->metric, "achieved_ratio")) {
        v = r->gs.scheduled ? (double)r->gs.sent / (double)r->gs.scheduled : 1;
    }
    *actual = v;
    if (c->less)
        return c->or_equal ? v <= c->value : v < c->value;
    return c->or_equal ? v >= c->value : v > c->value;
}

static void finding(struct lt_run *r, const char *severity, const char *rule, const char *reason,
                    const char *recommendation)
{
    json_array_append_new(r->analysis,
                          json_pack("{s:s,s:s,s:s,s:s}", "severity", severity, "rule", rule,
                                    "reason", reason, "recommendation", recommendation));
}

/* Pearson correlation of requests in the system and p50 latency per second while requests
 * were being issued (the drain afterwards empties the queue with latency still high). */
static double saturation_corr(const struct lt_run *r, double *lat_lo, double *lat_hi,
                              double *inflight_hi)
{
    const dspy_timeseries *ts = r->total.ts;
    uint32_t n = dspy_timeseries_seconds(ts);
    uint32_t s1 = (uint32_t)ceil((double)(r->gs.issue_end_ns - r->origin_ns) / 1e9);
    double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0, k = 0, maxx = 0, minx = 1e300;
    for (uint32_t s = (uint32_t)r->o->warmup_s; s < n && s < s1; s++) {
        if (!dspy_timeseries_count(ts, TSC_LATENCY, s))
            continue;
        double x = dspy_timeseries_counter(ts, TS_INSYSTEM, s);
        double y = (double)dspy_timeseries_percentile(ts, TSC_LATENCY, s, 50) / 1e6;
        sx += x, sy += y, sxx += x * x, syy += y * y, sxy += x * y, k++;
        if (x > maxx) {
            maxx = x;
            *lat_hi = y;
        }
        if (x < minx) {
            minx = x;
            *lat_lo = y;
        }
    }
    *inflight_hi = maxx;
    if (k < 3)
        return 0;
    double cov = sxy / k - sx / k * sy / k, vx = sxx / k - sx / k * sx / k,
           vy = syy / k - sy / k * sy / k;
    return vx > 1e-12 && vy > 1e-12 ? cov / sqrt(vx * vy) : 0;
}

/* Seconds after the spike ends until per-second p90 is back within 1.5x the baseline. */
static double spike_recovery(struct lt_run *r, double *baseline_ms)
{
    const struct lt_opts *o = r->o;
    const dspy_timeseries *ts = r->total.ts;
    uint32_t n = dspy_timeseries_seconds(ts), before = (uint32_t)o->spike_at_s;
    double base = 0;
    int k = 0;
    for (uint32_t s = before > 4 ? before - 4 : 0; s < before && s < n; s++)
        if (dspy_timeseries_count(ts, TSC_LATENCY, s)) {
            base += (double)dspy_timeseries_percentile(ts, TSC_LATENCY, s, 90) / 1e6;
            k++;
        }
    if (!k)
        return -1;
    base /= k;
    *baseline_ms = base;
    double end = o->spike_at_s + o->spike_len_s;
    for (uint32_t s = (uint32_t)ceil(end); s < n; s++) {
        if (!dspy_timeseries_count(ts, TSC_LATENCY, s))
            continue;
        double p90 = (double)dspy_timeseries_percentile(ts, TSC_LATENCY, s, 90) / 1e6;
        if (p90 <= 1.5 * base + 1)
            return (double)s - end > 0 ? (double)s - end : 0;
    }
    return INFINITY;
}

static void self_checks(struct lt_run *r)
{
    const struct lt_shard *t = &r->total;
    const dspy_timeseries *ts = t->ts;
    /* Little's law over the full seconds between warm-up and the end of issuing. */
    uint32_t s0 = (uint32_t)ceil(r->o->warmup_s);
    uint32_t s1 = (uint32_t)((r->gs.issue_end_ns - r->origin_ns) / 1000000000u);
    double L = 0, done = 0, k = 0;
    for (uint32_t s = s0; s < s1 && s < dspy_timeseries_seconds(ts); s++, k++) {
        L += dspy_timeseries_counter(ts, TS_INSYSTEM, s);
        done += dspy_timeseries_counter(ts, TS_DONE, s);
    }
    json_t *ll = json_object();
    if (k > 0 && dspy_hist_count(t->h[M_LATENCY])) {
        double lambda = done / k, W = dspy_hist_mean(t->h[M_LATENCY]) / 1e9;
        L /= k;
        json_object_set_new(ll, "mean_in_system", json_real(L));
        json_object_set_new(ll, "arrival_rate", json_real(lambda));
        json_object_set_new(ll, "mean_latency_s", json_real(W));
        json_object_set_new(ll, "lambda_w", json_real(lambda * W));
        json_object_set_new(ll, "ratio", json_real(lambda * W > 0 ? L / (lambda * W) : 0));
        json_object_set_new(ll, "ok",
                            json_boolean(lambda * W <= 0 || fabs(L / (lambda * W) - 1) < 0.15));
    }
    json_object_set_new(r->checks, "littles_law", ll);
    json_t *ar = json_object();
    double issue = (double)(r->gs.issue_end_ns - r->origin_ns) / 1e9;
    json_object_set_new(ar, "intended", json_integer((json_int_t)r->gs.scheduled));
    json_object_set_new(ar, "sent", json_integer((json_int_t)r->gs.sent));
    json_object_set_new(ar, "not_sent", json_integer((json_int_t)(r->gs.scheduled - r->gs.sent)));
    json_object_set_new(ar, "intended_rate",
                        json_real(issue > 0 ? (double)r->gs.scheduled / issue : 0));
    json_object_set_new(ar, "achieved_send_rate",
                        json_real(issue > 0 ? (double)r->gs.sent / issue : 0));
    json_object_set_new(ar, "ok", json_boolean(r->gs.sent == r->gs.scheduled));
    json_object_set_new(r->checks, "arrivals", ar);
}

void lt_analyze(struct lt_run *r)
{
    const struct lt_opts *o = r->o;
    const struct lt_shard *t = &r->total;
    char why[512], rec[512];
    self_checks(r);
    double p95 = lt_ms(dspy_hist_percentile(t->h[M_LATENCY], 95));
    if (dspy_hist_count(t->h[M_LATENCY]) && p95 > o->p95_limit_ms) {
        snprintf(why, sizeof(why), "P95 response time %.1f ms is above the %.0f ms limit", p95,
                 o->p95_limit_ms);
        finding(r, "warning", "p95_latency", why,
                "lower the rate or add server capacity; see the saturation finding for where "
                "latency starts to climb");
    }
    double er = lt_error_rate(r);
    if (er > 0.10) {
        snprintf(why, sizeof(why), "%.1f %% of requests failed (more than 10 %%)", 100 * er);
        finding(r, "critical", "error_rate", why,
                "look at errors by class: 429/503 mean the server sheds load (lower the rate), "
                "timeouts mean queueing past --timeout, connect errors mean the server is down "
                "or out of sockets");
    }
    double issue_s = (double)(r->gs.issue_end_ns - r->origin_ns) / 1e9;
    double achieved = lt_achieved_rps(r);
    double target = r->gs.scheduled && issue_s > 0 ? (double)r->gs.scheduled / issue_s : 0;
    if (!o->closed && target > 0 && achieved < 0.8 * target) {
        snprintf(why, sizeof(why), "completed %.1f req/s, %.0f %% of the %.1f req/s offered",
                 achieved, 100 * achieved / target, target);
        finding(r, "warning", "throughput", why,
                "the server (or the concurrency cap) cannot keep up with the offered rate: "
                "its capacity is about the completed rate");
    }
    double lat_lo = 0, lat_hi = 0, inf_hi = 0;
    double corr = saturation_corr(r, &lat_lo, &lat_hi, &inf_hi);
    if (corr > 0.7 && lat_hi > 2 * lat_lo + 1) {
        snprintf(why, sizeof(why),
                 "latency rises with requests in flight (correlation %.2f): "
                 "p50 %.1f ms at the least load, %.1f ms at %.1f in flight",
                 corr, lat_lo, lat_hi, inf_hi);
        finding(r, "warning", "saturation", why,
                "the server queues: requests wait for a slot. Stay below the rate where this "
                "starts, or raise the server's concurrency");
    }
    uint64_t lag99 = dspy_hist_percentile(t->h[M_LAG], 99);
    double gap_ms = r->rate > 0 ? 1000.0 / r->rate : 1e9;
    double run_s = (double)(r->gs.ended_ns - r->gs.started_ns) / 1e9;
    double cpu = run_s > 0
                     ? 100.0 * (double)r->gs.cpu_ns / 1e9 / (run_s * (o->threads ? o->threads : 1))
                     : 0;
    bool capped = o->max_in_flight > 0;
    if (r->gs.sent < r->gs.scheduled || (!o->closed && lt_ms(lag99) > fmax(5, gap_ms))) {
        snprintf(why, sizeof(why),
                 "GENERATOR FELL BEHIND: p99 dispatch lag %.2f ms, %llu of %llu "
                 "intended requests never sent%s",
                 lt_ms(lag99), (unsigned long long)(r->gs.scheduled - r->gs.sent),
                 (unsigned long long)r->gs.scheduled,
                 capped ? " (the --max-concurrency cap holds requests back: this is the queueing "
                          "a real client would see)"
                        : "");
        finding(r, capped ? "info" : "critical", "generator_lag", why,
                capped ? "response time includes the wait for a slot; service time does not"
                       : "add --threads or --connections; if every connection is busy the server "
                         "is slower than the rate needs, so results are a lower bound");
        if (!o->quiet && !capped)
            fprintf(stderr, "dspyc loadtest: WARNING: %s\n", why);
    }
    if (cpu > 85) {
        snprintf(why, sizeof(why), "generator threads used %.0f %% of their CPU", cpu);
        finding(r, "warning", "generator_cpu", why,
                "add --threads so the client is not the "
                "bottleneck");
    }
    if (o->pattern == LT_SPIKE && !o->closed) {
        double base = 0, rec_s = spike_recovery(r, &base);
        json_object_set_new(r->checks, "spike_recovery_s",
                            isfinite(rec_s) ? json_real(rec_s) : json_null());
        json_object_set_new(r->checks, "spike_baseline_p90_ms", json_real(base));
        if (isfinite(rec_s))
            snprintf(why, sizeof(why),
                     "after the spike, p90 latency took %.0f s to return "
                     "within 1.5x the %.1f ms baseline",
                     rec_s, base);
        else
            snprintf(why, sizeof(why),
                     "after the spike, p90 latency never returned to "
                     "1.5x the %.1f ms baseline",
                     base);
        snprintf(rec, sizeof(rec),
                 "the queue built during the spike drains at (capacity - "
                 "baseline rate); more headroom shortens recovery");
        finding(r, "info", "spike_recovery", why, rec);
    }
    r->slo_ok = true;
    for (size_t i = 0; i < o->nslo; i++) {
        double v;
        r->slo_ok &= lt_eval_cond(r, &o->slo[i], &v);
    }
    r->thresholds_ok = true;
    for (size_t i = 0; i < o->nthresholds; i++) {
        double v;
        r->thresholds_ok &= lt_eval_cond(r, &o->thresholds[i], &v);
    }
}
