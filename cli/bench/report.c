/* Reports of `dspyc bench` (apps layer): the terminal report with notes where the numbers
 * call for them, the JSON document (docs/bench.md) and the comparison with an earlier one. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"

#define MS(ns) ((double)(ns) / 1e6)
#define MIB(b) ((double)(b) / 1048576.0)

static void section(FILE *out, const char *title)
{
    fprintf(out, "\n%s\n", title);
    for (size_t i = 0; i < strlen(title); i++)
        fputc('-', out);
    fputc('\n', out);
}

static void pct_line(FILE *out, const char *what, double ns, double total)
{
    fprintf(out, "  %-28s %10.3f ms %7.1f %%\n", what, ns / 1e6,
            total > 0 ? 100.0 * ns / total : 0.0);
}

static void notes(FILE *out, const struct bench_subject *s)
{
    int any = 0;
#define NOTE(...)                         \
    do {                                  \
        fprintf(out, "  - " __VA_ARGS__); \
        fputc('\n', out);                 \
        any = 1;                          \
    } while (0)
    double runtime = s->format_ns + s->other_ns + s->parse_ns;
    if (s->latency.p50 && s->latency.p99 > 2 * s->latency.p50)
        NOTE("p99 is %.1fx p50: a tail worth explaining (queueing at the endpoint, retries, "
             "GC or scheduling pauses, cold connections)",
             (double)s->latency.p99 / (double)s->latency.p50);
    if (s->total_ns > 0 && runtime / s->total_ns > 0.10)
        NOTE("the runtime's own share is %.1f %% of each call (above 10 %%): look at prompt "
             "size, parsing, or contention",
             100.0 * runtime / s->total_ns);
    if (s->leak_suspected)
        NOTE("resident memory grows %.0f bytes per call after warm-up: a leak or an unbounded "
             "cache",
             s->leak_slope);
    if (s->speedup > 0 && s->speedup < 1.5 && s->par_qps > 0)
        NOTE("parallel calls gave only %.2fx: the endpoint (or a lock) serializes them",
             s->speedup);
    if (s->py_total_ns > 0 && s->py_contended_gil_ns > 0.25 * s->py_contended_total_ns)
        NOTE("under %ld threads, %.0f %% of a Python call is waiting for the GIL", s->py_threads,
             100.0 * s->py_contended_gil_ns / s->py_contended_total_ns);
    if (s->failed)
        NOTE("FAILED: all %ld measured calls failed, so nothing was measured; first error: %s",
             s->seq_failed + s->par_failed, s->first_error);
    else if (s->seq_failed + s->par_failed)
        NOTE("%ld of %ld measured calls failed and are left out of every figure (latency, "
             "breakdown and calls/s count successful calls only); first error: %s",
             s->seq_failed + s->par_failed, 2 * (s->seq_ok + s->seq_failed), s->first_error);
    else if (s->errors)
        NOTE("%ld warm-up calls failed; first: %s", s->errors, s->first_error);
    if (!any)
        fprintf(out, "  - nothing stands out\n");
#undef NOTE
}

/* A subject whose every call failed has no figures: one FAILED line in their place. */
static bool failed_row(FILE *out, const struct bench_subject *s)
{
    if (!s->failed)
        return false;
    fprintf(out, "  %-24.24s FAILED: all %ld calls failed (%.60s)\n", s->name,
            s->seq_failed + s->par_failed, s->first_error);
    return true;
}

/* The subject's cost: in all, per call and per 1,000 calls, from the price table. */
static void print_subject_cost(FILE *out, const struct bench_subject *s)
{
    struct dspy_cost_totals t;
    dspy_cost_tally_totals(s->cost, &t);
    if (!t.calls)
        return;
    section(out, "Cost (every call made: warm-up and both series)");
    if (!t.priced)
        fprintf(out, "  unknown: no price for model %s (add it with --prices FILE)\n", s->model);
    else
        fprintf(out, "  $%.6f for %ld calls: $%.8f per call, $%.4f per 1k calls\n", t.usd, t.calls,
                t.usd / (double)t.calls, 1000.0 * t.usd / (double)t.calls);
    fprintf(out, "  tokens: %ld prompt, %ld completion\n", t.usage.prompt_tokens,
            t.usage.completion_tokens);
}

void bench_report(FILE *out, const struct bench_config *cfg, const char *endpoint,
                  const struct bench_subject *subjects, size_t n, double self_cost_ns)
{
    struct dspy_machine m;
    dspy_machine_describe(&m);
    fprintf(out, "dspyc bench %s\n", dspy_version());
    fprintf(out, "endpoint %s\nmachine  %d cores, %s, %.1f GiB\n", endpoint, m.cores, m.cpu_model,
            (double)m.memory_bytes / 1073741824.0);
    fprintf(out, "calls    %ld measured after %ld warm-up, parallel batch at concurrency %ld\n",
            cfg->iterations, cfg->warmup, cfg->concurrency);

    section(out, "Single-call latency (ms)");
    fprintf(out, "  %-24s %9s %9s %9s %9s %9s %9s %9s\n", "subject", "min", "mean", "p50", "p95",
            "p99", "max", "stdev");
    for (size_t i = 0; i < n; i++) {
        const struct bench_latency *l = &subjects[i].latency;
        if (failed_row(out, &subjects[i]))
            continue;
        fprintf(out, "  %-24.24s %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f\n", subjects[i].name,
                MS(l->min), l->mean / 1e6, MS(l->p50), MS(l->p95), MS(l->p99), MS(l->max),
                l->stdev / 1e6);
    }
    if (n > 1) {
        section(out, "Comparison (mean latency, ratio to the first)");
        for (size_t i = 0; i < n; i++)
            if (!failed_row(out, &subjects[i]))
                fprintf(out, "  %-24.24s %9.3f ms %8.2fx\n", subjects[i].name,
                        subjects[i].latency.mean / 1e6,
                        subjects[0].latency.mean > 0
                            ? subjects[i].latency.mean / subjects[0].latency.mean
                            : 0.0);
    }
    section(out, "Batch throughput");
    fprintf(out, "  %-24s %10s %10s %10s %10s %8s\n", "subject", "seq s", "seq q/s", "par s",
            "par q/s", "speedup");
    for (size_t i = 0; i < n; i++)
        if (!failed_row(out, &subjects[i]))
            fprintf(out, "  %-24.24s %10.3f %10.1f %10.3f %10.1f %7.2fx\n", subjects[i].name,
                    subjects[i].seq_s, subjects[i].seq_qps, subjects[i].par_s, subjects[i].par_qps,
                    subjects[i].speedup);
    for (size_t i = 0; i < n; i++) {
        const struct bench_subject *s = &subjects[i];
        char title[160];
        snprintf(title, sizeof(title), "Where the time goes: %s (mean per call)", s->name);
        section(out, title);
        if (s->failed) {
            fprintf(out, "  FAILED: no call succeeded\n");
        } else {
            pct_line(out, "runtime: prompt + request", s->format_ns, s->total_ns);
            pct_line(out, "wire + LM", s->lm_ns, s->total_ns);
            pct_line(out, "runtime: parse + convert", s->parse_ns, s->total_ns);
            pct_line(out, "runtime: other", s->other_ns, s->total_ns);
            pct_line(out, "total", s->total_ns, s->total_ns);
            fprintf(out, "  (a runtime share above 10 %% deserves attention)\n");
        }
        if (s->py_total_ns >= 0) {
            fprintf(out, "\n  Python DSPy through embedded CPython, mean per call:\n");
            fprintf(out, "  %-28s %10.3f ms\n", "GIL wait (1 thread)", s->py_gil_ns / 1e6);
            fprintf(out, "  %-28s %10.3f ms\n", "Python execution", s->py_exec_ns / 1e6);
            fprintf(out, "  %-28s %10.3f ms\n", "conversion", s->py_convert_ns / 1e6);
            fprintf(out, "  %-28s %10.3f ms   native: %.3f ms (%.1fx)\n", "total",
                    s->py_total_ns / 1e6, s->total_ns / 1e6,
                    s->total_ns > 0 ? s->py_total_ns / s->total_ns : 0.0);
            fprintf(out, "  %-28s %10.3f ms of %.3f ms (%ld threads)\n", "GIL wait, contended",
                    s->py_contended_gil_ns / 1e6, s->py_contended_total_ns / 1e6, s->py_threads);
        }
        print_subject_cost(out, s);
        section(out, "Memory");
        fprintf(out, "  baseline %.1f MiB  peak %.1f MiB  end %.1f MiB  delta %+.2f MiB\n",
                MIB(s->rss_baseline), MIB(s->rss_peak), MIB(s->rss_end),
                MIB((double)s->rss_end - (double)s->rss_baseline));
        fprintf(out, "  per call %+.1f bytes  growth slope %+.1f bytes/call  leak: %s\n",
                s->bytes_per_call, s->leak_slope, s->leak_suspected ? "SUSPECTED" : "none seen");
        section(out, "Notes");
        notes(out, s);
    }
    fprintf(out, "\nmeasurement cost: %.0f ns per measured call (clock reads and histogram)\n",
            self_cost_ns);
}

static json_t *latency_json(const struct bench_latency *l)
{
    return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "count", (json_int_t)l->count,
                     "min_ms", MS(l->min), "mean_ms", l->mean / 1e6, "p50_ms", MS(l->p50), "p95_ms",
                     MS(l->p95), "p99_ms", MS(l->p99), "max_ms", MS(l->max), "stdev_ms",
                     l->stdev / 1e6);
}

/* The subject's usage and cost (the tally's JSON) and the mean cost of one call. */
static json_t *cost_json(const struct bench_subject *s)
{
    json_t *c = dspy_cost_tally_json(s->cost);
    if (c) {
        double calls = (double)json_integer_value(json_object_get(c, "calls"));
        json_object_set_new(c, "usd_per_call",
                            json_real(calls > 0
                                          ? json_number_value(json_object_get(c, "usd")) / calls
                                          : 0.0));
    }
    return c ? c : json_null();
}

static json_t *subject_json_figures(const struct bench_subject *s)
{
    json_t *calls = json_pack("{s:I, s:I, s:I, s:I}", "sequential_ok", (json_int_t)s->seq_ok,
                              "sequential_failed", (json_int_t)s->seq_failed, "parallel_ok",
                              (json_int_t)s->par_ok, "parallel_failed", (json_int_t)s->par_failed);
    if (s->failed) /* no figure from calls that all failed: null, never a timing of failures */
        return json_pack("{s:s, s:s, s:s, s:s, s:o, s:I, s:n, s:n, s:n, s:{s:I, s:I, s:I, s:f,"
                         " s:f, s:b}}",
                         "name", s->name, "model", s->model, "status", "failed", "error",
                         s->first_error, "calls", calls, "errors", (json_int_t)s->errors, "latency",
                         "breakdown_ms", "throughput", "memory", "baseline_rss_bytes",
                         (json_int_t)s->rss_baseline, "peak_rss_bytes", (json_int_t)s->rss_peak,
                         "end_rss_bytes", (json_int_t)s->rss_end, "bytes_per_call",
                         s->bytes_per_call, "growth_slope_bytes_per_call", s->leak_slope,
                         "leak_suspected", s->leak_suspected);
    json_t *o = json_pack(
        "{s:s, s:s, s:o, s:I, s:{s:f, s:f, s:f, s:f, s:f}, s:{s:f, s:f, s:f, s:f, s:f},"
        " s:{s:I, s:I, s:I, s:f, s:f, s:b}}",
        "name", s->name, "model", s->model, "latency", latency_json(&s->latency), "errors",
        (json_int_t)s->errors, "breakdown_ms", "format", s->format_ns / 1e6, "lm", s->lm_ns / 1e6,
        "parse", s->parse_ns / 1e6, "other", s->other_ns / 1e6, "total", s->total_ns / 1e6,
        "throughput", "sequential_s", s->seq_s, "sequential_qps", s->seq_qps, "parallel_s",
        s->par_s, "parallel_qps", s->par_qps, "speedup", s->speedup, "memory", "baseline_rss_bytes",
        (json_int_t)s->rss_baseline, "peak_rss_bytes", (json_int_t)s->rss_peak, "end_rss_bytes",
        (json_int_t)s->rss_end, "bytes_per_call", s->bytes_per_call, "growth_slope_bytes_per_call",
        s->leak_slope, "leak_suspected", s->leak_suspected);
    if (o) {
        json_object_set_new(o, "status", json_string("ok"));
        json_object_set_new(o, "calls", calls);
        if (s->errors)
            json_object_set_new(o, "error", json_string(s->first_error));
    } else {
        json_decref(calls);
    }
    if (o && s->py_total_ns >= 0)
        json_object_set_new(o, "python",
                            json_pack("{s:f, s:f, s:f, s:f, s:I, s:f, s:f}", "gil_wait_ms",
                                      s->py_gil_ns / 1e6, "exec_ms", s->py_exec_ns / 1e6,
                                      "convert_ms", s->py_convert_ns / 1e6, "total_ms",
                                      s->py_total_ns / 1e6, "contended_threads",
                                      (json_int_t)s->py_threads, "contended_gil_wait_ms",
                                      s->py_contended_gil_ns / 1e6, "contended_total_ms",
                                      s->py_contended_total_ns / 1e6));
    return o;
}

static json_t *subject_json(const struct bench_subject *s)
{
    json_t *o = subject_json_figures(s);
    if (o)
        json_object_set_new(o, "cost", cost_json(s));
    return o;
}

json_t *bench_to_json(const struct bench_config *cfg, const char *endpoint,
                      const struct bench_subject *subjects, size_t n, double self_cost_ns)
{
    struct dspy_machine m;
    dspy_machine_describe(&m);
    json_t *subs = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(subs, subject_json(&subjects[i]));
    return json_pack("{s:s, s:s, s:{s:s, s:I, s:I, s:I}, s:{s:i, s:s, s:I, s:s}, s:f, s:o}", "tool",
                     "dspyc bench", "version", dspy_version(), "config", "endpoint", endpoint,
                     "iterations", (json_int_t)cfg->iterations, "warmup", (json_int_t)cfg->warmup,
                     "concurrency", (json_int_t)cfg->concurrency, "machine", "cores", m.cores,
                     "cpu_model", m.cpu_model, "memory_bytes", (json_int_t)m.memory_bytes, "os",
                     m.os, "measurement_cost_ns", self_cost_ns, "subjects", subs);
}

static double num_at(const json_t *subject, const char *group, const char *key)
{
    const json_t *g = json_object_get(subject, group);
    return json_number_value(json_object_get(g, key));
}

int bench_compare(FILE *out, const json_t *now, const char *old_path)
{
    static const char *const rows[][2] = {
        { "latency", "p50_ms" },     { "latency", "p95_ms" },          { "latency", "p99_ms" },
        { "latency", "mean_ms" },    { "throughput", "parallel_qps" }, { "breakdown_ms", "format" },
        { "breakdown_ms", "parse" }, { "memory", "peak_rss_bytes" },
    };
    json_error_t je;
    json_t *old = json_load_file(old_path, 0, &je);
    if (!old) {
        fprintf(stderr, "dspyc bench: --compare %s: line %d: %s\n", old_path, je.line, je.text);
        return -1;
    }
    section(out, "Change from the earlier run");
    const json_t *subs = json_object_get(now, "subjects");
    size_t i;
    const json_t *s;
    json_array_foreach(subs, i, s) {
        const char *name = json_string_value(json_object_get(s, "name"));
        const json_t *o = NULL, *cand;
        size_t j;
        json_array_foreach(json_object_get(old, "subjects"), j, cand) {
            const char *oname = json_string_value(json_object_get(cand, "name"));
            if (oname && name && !strcmp(oname, name))
                o = cand;
        }
        if (!o) {
            fprintf(out, "  %s: not in %s\n", name ? name : "?", old_path);
            continue;
        }
        if (!json_is_object(json_object_get(s, "latency")) ||
            !json_is_object(json_object_get(o, "latency"))) {
            fprintf(out, "  %s: failed %s; nothing to compare\n", name ? name : "?",
                    json_is_object(json_object_get(s, "latency")) ? "before" : "now");
            continue;
        }
        fprintf(out, "  %s\n", name);
        for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
            double a = num_at(o, rows[r][0], rows[r][1]), b = num_at(s, rows[r][0], rows[r][1]);
            fprintf(out, "    %-12s %-16s %12.3f -> %12.3f  %+7.1f %%\n", rows[r][0], rows[r][1], a,
                    b, a != 0 ? 100.0 * (b - a) / fabs(a) : 0.0);
        }
    }
    json_decref(old);
    return 0;
}
