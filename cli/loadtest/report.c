/* `dspyc loadtest` reports (apps layer): the terminal summary and the JSON document (vLLM
 * `bench serve` key names where one exists: mean_ttft_ms, p99_tpot_ms, request_throughput,
 * ...) that the HTML report is drawn from. */
#include <math.h>
#include <string.h>

#include "loadtest.h"

static const double pcts[] = { 50, 90, 95, 99, 99.9 };

double lt_ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

double lt_achieved_rps(const struct lt_run *r)
{
    return r->duration_s > 0 ? (double)r->total.ok / r->duration_s : 0;
}

double lt_error_rate(const struct lt_run *r)
{
    return r->total.measured ? 1.0 - (double)r->total.ok / (double)r->total.measured : 0;
}

static const char *arrival_name(enum dspy_arrival a)
{
    return a == DSPY_ARRIVAL_CONSTANT ? "constant" : a == DSPY_ARRIVAL_GAMMA ? "gamma" : "poisson";
}

static void print_metric(FILE *out, const struct lt_run *r, int m, const char *label)
{
    const dspy_hist *h = r->total.h[m];
    if (!dspy_hist_count(h))
        return;
    fprintf(out, "  %-26s %9.2f %9.2f %9.2f %9.2f %9.2f %9.2f %9.2f\n", label,
            dspy_hist_mean(h) / 1e6, lt_ms(dspy_hist_percentile(h, 50)),
            lt_ms(dspy_hist_percentile(h, 90)), lt_ms(dspy_hist_percentile(h, 95)),
            lt_ms(dspy_hist_percentile(h, 99)), lt_ms(dspy_hist_percentile(h, 99.9)),
            lt_ms(dspy_hist_max(h)));
}

void lt_print_summary(const struct lt_run *r, FILE *out)
{
    const struct lt_opts *o = r->o;
    const struct lt_shard *t = &r->total;
    fprintf(out, "============ dspyc loadtest ============\n");
    if (o->closed)
        fprintf(out, "load:            closed loop, %u users, think %.3f s\n", o->users,
                o->think_s);
    else
        fprintf(out, "load:            open loop, %s arrivals, rate %.2f req/s%s%s\n",
                arrival_name(o->arrival), r->rate, o->pattern == LT_CONSTANT ? "" : ", pattern ",
                o->pattern == LT_CONSTANT
                    ? ""
                    : (const char *[]){ "", "ramp", "spike", "wave", "steps" }[o->pattern]);
    fprintf(out, "duration:        %.2f s (measured requests: %llu, warm-up excluded: %.1f s)\n",
            r->duration_s, (unsigned long long)t->measured, o->warmup_s);
    fprintf(out, "requests:        %llu ok, %llu failed (%.2f %% errors)\n",
            (unsigned long long)t->ok, (unsigned long long)(t->measured - t->ok),
            100 * lt_error_rate(r));
    for (int k = 1; k < DSPY_LG_NOUTCOMES; k++)
        if (t->outcomes[k])
            fprintf(out, "  %-12s %llu\n", dspy_loadgen_outcome_name((enum dspy_loadgen_outcome)k),
                    (unsigned long long)t->outcomes[k]);
    for (int s = 0; s < 600; s++)
        if (t->status[s] && (s < 200 || s > 299))
            fprintf(out, "  HTTP %-7d %llu\n", s, (unsigned long long)t->status[s]);
    double issue = (double)(r->gs.issue_end_ns - r->origin_ns) / 1e9;
    fprintf(out, "throughput:      %.2f req/s achieved; intended %.2f req/s, sent %.2f req/s\n",
            lt_achieved_rps(r), issue > 0 ? (double)r->gs.scheduled / issue : 0,
            issue > 0 ? (double)r->gs.sent / issue : 0);
    if (t->tokens)
        fprintf(out, "output tokens:   %llu (%.1f tok/s; source: %s)\n",
                (unsigned long long)t->tokens, (double)t->tokens / r->duration_s,
                t->usage_missing ? "usage, chunk counts where usage was missing" : "usage");
    if (o->nslo)
        fprintf(out, "goodput:         %.2f req/s meet '%s' (%.1f %% of requests); SLO %s\n",
                (double)t->good / r->duration_s, o->slo_text,
                t->measured ? 100.0 * (double)t->good / (double)t->measured : 0,
                r->slo_ok ? "met" : "MISSED");
    fprintf(out, "\n  %-26s %9s %9s %9s %9s %9s %9s %9s\n", "(ms)", "mean", "p50", "p90", "p95",
            "p99", "p99.9", "max");
    print_metric(out, r, M_LATENCY, "response (from intended)");
    print_metric(out, r, M_SERVICE, "service (from send)");
    print_metric(out, r, M_LAG, "dispatch lag");
    print_metric(out, r, M_TTFB, "TTFB");
    print_metric(out, r, M_TTFT, "TTFT");
    print_metric(out, r, M_TTFC, "time to first content");
    print_metric(out, r, M_E2EL, "E2EL");
    print_metric(out, r, M_ITL, "ITL per chunk");
    print_metric(out, r, M_ITL_TOK, "ITL per token");
    print_metric(out, r, M_TPOT, "TPOT");
    double cpu = r->gs.ended_ns > r->gs.started_ns
                     ? 100.0 * (double)r->gs.cpu_ns / (double)(r->gs.ended_ns - r->gs.started_ns)
                     : 0;
    fprintf(out, "\ngenerator:       %u thread(s), %.0f %% CPU in total, %llu connections opened\n",
            o->threads, cpu, (unsigned long long)r->gs.connections_opened);
    json_t *ll = json_object_get(r->checks, "littles_law");
    if (json_object_get(ll, "ratio"))
        fprintf(out,
                "self-check:      Little's law: mean in system %.2f vs rate x latency %.2f "
                "(ratio %.2f) %s\n",
                json_real_value(json_object_get(ll, "mean_in_system")),
                json_real_value(json_object_get(ll, "lambda_w")),
                json_real_value(json_object_get(ll, "ratio")),
                json_is_true(json_object_get(ll, "ok")) ? "ok" : "MISMATCH");
    fprintf(out, "self-check:      arrivals: %llu intended, %llu sent%s\n",
            (unsigned long long)r->gs.scheduled, (unsigned long long)r->gs.sent,
            r->gs.sent == r->gs.scheduled ? " ok" : "  GENERATOR FELL BEHIND");
    size_t i;
    json_t *f;
    json_array_foreach(r->analysis, i, f)
        fprintf(out, "%s %-14s %s\n                 -> %s\n",
                i ? "               " : "findings:      ",
                json_string_value(json_object_get(f, "rule")),
                json_string_value(json_object_get(f, "reason")),
                json_string_value(json_object_get(f, "recommendation")));
    for (size_t k = 0; k < o->nthresholds; k++) {
        double v;
        bool ok = lt_eval_cond(r, &o->thresholds[k], &v);
        bool time = strcmp(o->thresholds[k].agg, "value") != 0;
        fprintf(out, "threshold:       %-28s %s (actual %.3f%s)\n", o->thresholds[k].text,
                ok ? "pass" : "FAIL", time ? v / 1e6 : v, time ? " ms" : "");
    }
}

static void put_ms(json_t *j, const char *prefix, const char *metric, bool any, double v)
{
    char key[64];
    snprintf(key, sizeof(key), "%s_%s_ms", prefix, metric);
    json_object_set_new(j, key, json_real(any ? v : 0));
}

static void put_metric(json_t *j, const struct lt_run *r, int m)
{
    const dspy_hist *h = r->total.h[m];
    const char *n = lt_metric_names[m];
    char key[64];
    bool any = dspy_hist_count(h) > 0;
    put_ms(j, "mean", n, any, dspy_hist_mean(h) / 1e6);
    put_ms(j, "median", n, any, lt_ms(dspy_hist_percentile(h, 50)));
    put_ms(j, "std", n, any, dspy_hist_stddev(h) / 1e6);
    put_ms(j, "min", n, any, lt_ms(dspy_hist_min(h)));
    put_ms(j, "max", n, any, lt_ms(dspy_hist_max(h)));
    for (size_t i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++) {
        char p[16];
        snprintf(p, sizeof(p), "p%g", pcts[i]);
        put_ms(j, p, n, any, lt_ms(dspy_hist_percentile(h, pcts[i])));
    }
    snprintf(key, sizeof(key), "count_%s", n);
    json_object_set_new(j, key, json_integer((json_int_t)dspy_hist_count(h)));
}

static json_t *series_json(const struct lt_run *r)
{
    const dspy_timeseries *ts = r->total.ts;
    uint32_t n = dspy_timeseries_seconds(ts);
    static const char *const names[TS_NCOUNTERS] = {
        "intended", "sent", "done", "ok", "errors", "tokens", "in_flight", "in_system"
    };
    json_t *j = json_object(), *t = json_array();
    for (uint32_t s = 0; s < n; s++)
        json_array_append_new(t, json_integer(s));
    json_object_set_new(j, "t", t);
    for (int c = 0; c < TS_NCOUNTERS; c++) {
        json_t *a = json_array();
        for (uint32_t s = 0; s < n; s++)
            json_array_append_new(a, json_real(dspy_timeseries_counter(ts, (unsigned)c, s)));
        json_object_set_new(j, names[c], a);
    }
    static const double sp[] = { 50, 90, 99 };
    for (int ch = 0; ch < TSC_NCHANNELS; ch++)
        for (int k = 0; k < 3; k++) {
            char key[32];
            snprintf(key, sizeof(key), "%s_p%g_ms", ch ? "ttft" : "latency", sp[k]);
            json_t *a = json_array();
            for (uint32_t s = 0; s < n; s++) {
                uint64_t v = dspy_timeseries_percentile(ts, (unsigned)ch, s, sp[k]);
                bool any = dspy_timeseries_count(ts, (unsigned)ch, s) > 0;
                json_array_append_new(a, any ? json_real(lt_ms(v)) : json_null());
            }
            json_object_set_new(j, key, a);
        }
    return j;
}

static json_t *spectrum_json(const struct lt_run *r)
{
    static const double ps[] = { 0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100 };
    json_t *a = json_array();
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
        json_array_append_new(
            a, json_pack("{s:f,s:f,s:f,s:f}", "p", ps[i], "latency_ms",
                         lt_ms(dspy_hist_percentile(r->total.h[M_LATENCY], ps[i])), "service_ms",
                         lt_ms(dspy_hist_percentile(r->total.h[M_SERVICE], ps[i])), "ttft_ms",
                         lt_ms(dspy_hist_percentile(r->total.h[M_TTFT], ps[i]))));
    return a;
}

static json_t *conds_json(const struct lt_run *r, const struct lt_cond *c, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        double v;
        bool ok = lt_eval_cond(r, &c[i], &v);
        bool time = strcmp(c[i].agg, "value") != 0;
        json_array_append_new(a,
                              json_pack("{s:s,s:b,s:o}", "condition", c[i].text, "ok", ok, "actual",
                                        isfinite(v) ? json_real(time ? v / 1e6 : v) : json_null()));
    }
    return a;
}

json_t *lt_run_json(const struct lt_run *r)
{
    const struct lt_opts *o = r->o;
    const struct lt_shard *t = &r->total;
    json_t *j = json_object();
    double dur = r->duration_s > 0 ? r->duration_s : 1e-9;
    double issue = (double)(r->gs.issue_end_ns - r->origin_ns) / 1e9;
    json_object_set_new(j, "tool", json_string("dspyc loadtest"));
    json_object_set_new(j, "version", json_string(dspy_version()));
    json_object_set_new(j, "mode", json_string(o->closed ? "closed" : "open"));
    json_object_set_new(j, "request_rate", r->rate > 0 ? json_real(r->rate) : json_string("inf"));
    json_object_set_new(j, "arrival", json_string(arrival_name(o->arrival)));
    json_object_set_new(j, "burstiness", json_real(o->burstiness));
    json_object_set_new(j, "max_concurrency",
                        o->max_in_flight ? json_integer(o->max_in_flight) : json_null());
    json_object_set_new(j, "duration", json_real(r->duration_s));
    json_object_set_new(j, "completed", json_integer((json_int_t)t->ok));
    json_object_set_new(j, "failed", json_integer((json_int_t)(t->measured - t->ok)));
    json_object_set_new(j, "num_prompts", json_integer((json_int_t)t->measured));
    json_object_set_new(j, "total_input_tokens", json_integer((json_int_t)t->prompt_tokens));
    json_object_set_new(j, "total_output_tokens", json_integer((json_int_t)t->tokens));
    json_object_set_new(j, "request_throughput", json_real((double)t->ok / dur));
    json_object_set_new(j, "output_throughput", json_real((double)t->tokens / dur));
    json_object_set_new(j, "total_token_throughput",
                        json_real((double)(t->tokens + t->prompt_tokens) / dur));
    if (o->nslo) {
        json_object_set_new(j, "request_goodput", json_real((double)t->good / dur));
        json_object_set_new(j, "slo_attainment",
                            json_real(t->measured ? (double)t->good / (double)t->measured : 0));
        json_object_set_new(j, "slo",
                            json_pack("{s:s,s:b,s:o}", "spec", o->slo_text, "met", r->slo_ok,
                                      "terms", conds_json(r, o->slo, o->nslo)));
    }
    double peak_tok = 0, peak_conc = 0;
    for (uint32_t s = 0; s < dspy_timeseries_seconds(t->ts); s++) {
        peak_tok = fmax(peak_tok, dspy_timeseries_counter(t->ts, TS_TOKENS, s));
        peak_conc = fmax(peak_conc, dspy_timeseries_counter(t->ts, TS_INFLIGHT, s));
    }
    json_object_set_new(j, "max_output_tokens_per_s", json_real(peak_tok));
    json_object_set_new(j, "max_concurrent_requests", json_real(peak_conc));
    json_object_set_new(j, "intended_rate",
                        json_real(issue > 0 ? (double)r->gs.scheduled / issue : 0));
    json_object_set_new(j, "achieved_send_rate",
                        json_real(issue > 0 ? (double)r->gs.sent / issue : 0));
    json_object_set_new(j, "success_rate", json_real(1 - lt_error_rate(r)));
    json_object_set_new(j, "error_rate", json_real(lt_error_rate(r)));
    for (int m = 0; m < M_NMETRICS; m++)
        put_metric(j, r, m);
    json_t *oc = json_object(), *st = json_object();
    for (int k = 1; k < DSPY_LG_NOUTCOMES; k++)
        json_object_set_new(oc, dspy_loadgen_outcome_name((enum dspy_loadgen_outcome)k),
                            json_integer((json_int_t)t->outcomes[k]));
    for (int s = 0; s < 600; s++)
        if (t->status[s]) {
            char k[8];
            snprintf(k, sizeof(k), "%d", s);
            json_object_set_new(st, k, json_integer((json_int_t)t->status[s]));
        }
    json_object_set_new(j, "errors", json_pack("{s:o,s:o}", "by_class", oc, "by_status", st));
    json_object_set_new(j, "output_token_source",
                        json_pack("{s:I,s:I}", "usage", (json_int_t)(t->ok - t->usage_missing),
                                  "chunks_or_none", (json_int_t)t->usage_missing));
    json_object_set_new(j, "generator",
                        json_pack("{s:i,s:f,s:I,s:I,s:I,s:I,s:I}", "threads", (int)o->threads,
                                  "cpu_s", (double)r->gs.cpu_ns / 1e9, "connections_opened",
                                  (json_int_t)r->gs.connections_opened, "intended",
                                  (json_int_t)r->gs.scheduled, "sent", (json_int_t)r->gs.sent,
                                  "abandoned", (json_int_t)r->gs.abandoned, "reused_connections",
                                  (json_int_t)t->reused));
    json_object_set_new(j, "checks", json_incref(r->checks));
    json_object_set_new(j, "analysis", json_incref(r->analysis));
    json_object_set_new(j, "thresholds", conds_json(r, o->thresholds, o->nthresholds));
    json_object_set_new(j, "thresholds_ok", json_boolean(r->thresholds_ok));
    json_object_set_new(j, "timeseries", series_json(r));
    json_object_set_new(j, "percentile_spectrum", spectrum_json(r));
    json_t *res = json_array();
    for (size_t i = 0; i < r->nsamples; i++) {
        const struct lt_sample *s = &r->samples[i];
        json_array_append_new(res, json_pack("{s:f,s:f,s:f,s:f,s:f}", "t", s->t_s, "target_cpu_pct",
                                             s->target_cpu_pct, "target_rss_mb", s->target_rss_mb,
                                             "gen_cpu_pct", s->gen_cpu_pct, "gen_rss_mb",
                                             s->gen_rss_mb));
    }
    json_object_set_new(j, "resources", res);
    if (o->pid)
        json_object_set_new(j, "target_pid", json_integer(o->pid));
    return j;
}
