/* Compatibility helper for tests/e2e/test_python_bridge.py (built as compat_pycall): loads
 * a Python callable through the embedded-CPython bridge and calls it N times from T C
 * threads, printing one JSON line with the timings.
 *
 *   compat_pycall [--kwargs JSON] [--calls N] [--threads T] [--warmup K] [--venv DIR]
 *                 [--path DIR]... [--env NAME=VALUE]... [--isolated] MODULE:ATTR
 *
 * N measured calls are split over T threads after K unmeasured calls on the main thread.
 * Prints {"target", "calls", "threads", "warmup", "ok", "errors", "first_error",
 * "wall_ms", "calls_per_s", "gil_wait_us", "exec_us", "convert_us", "total_us" (each
 * {"mean", "p50", "p99", "max"}), "python" (the bridge's info), "result" (the first
 * result)} after the interpreter is finalized, so it is the last line of stdout.
 * Exit 0 when every call succeeded, 1 on a load failure or any failed call, 2 on usage. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/hist.h>
#include <dspyc/python.h>

#define MAX_LIST 32

struct worker {
    dspy_python_callable *c;
    const json_t *kwargs;
    long calls;
    long errors;
    json_t *first_result;
    dspy_hist *gil, *exec, *convert, *total;
    pthread_t thread;
};

static pthread_mutex_t first_error_lock = PTHREAD_MUTEX_INITIALIZER;
static json_t *first_error;

static void note_error(const struct dspy_error *err)
{
    pthread_mutex_lock(&first_error_lock);
    if (!first_error)
        first_error = json_pack("{s:s, s:s, s:i}", "code", dspy_status_name(err->code), "message",
                                err->message, "http_status", err->http_status);
    pthread_mutex_unlock(&first_error_lock);
}

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    struct dspy_python_timing t;
    struct dspy_error err;
    json_t *res;

    for (long i = 0; i < w->calls; i++) {
        if (dspy_python_call(w->c, w->kwargs, &res, &t, &err) != DSPY_OK) {
            w->errors++;
            note_error(&err);
            continue;
        }
        if (!w->first_result)
            w->first_result = res;
        else
            json_decref(res);
        dspy_hist_record(w->gil, t.gil_wait_ns);
        dspy_hist_record(w->exec, t.exec_ns);
        dspy_hist_record(w->convert, t.convert_ns);
        dspy_hist_record(w->total, t.total_ns);
    }
    return NULL;
}

static json_t *summary_us(const dspy_hist *h)
{
    return json_pack("{s:f, s:f, s:f, s:f}", "mean", dspy_hist_mean(h) / 1e3, "p50",
                     (double)dspy_hist_percentile(h, 50) / 1e3, "p99",
                     (double)dspy_hist_percentile(h, 99) / 1e3, "max",
                     (double)dspy_hist_max(h) / 1e3);
}

static int usage(void)
{
    fprintf(stderr, "usage: compat_pycall [--kwargs JSON] [--calls N] [--threads T] "
                    "[--warmup K] [--venv DIR] [--path DIR]... [--env NAME=VALUE]... "
                    "[--isolated] MODULE:ATTR\n");
    return 2;
}

static void print_line(json_t *out)
{
    char *text = json_dumps(out, JSON_COMPACT);
    printf("%s\n", text ? text : "{}");
    fflush(stdout);
    free(text);
}

int main(int argc, char **argv)
{
    struct dspy_python_options o = DSPY_PYTHON_OPTIONS_INIT;
    const char *paths[MAX_LIST + 1] = { 0 }, *envs[MAX_LIST + 1] = { 0 };
    const char *target = NULL, *kwargs_text = "{}";
    long calls = 10, threads = 1, warmup = 1, errors = 0, ok;
    size_t npaths = 0, nenvs = 0;
    struct worker *w = NULL;
    dspy_python_bridge *b = NULL;
    dspy_python_callable *c = NULL;
    json_t *kwargs, *out, *info = NULL, *result = NULL;
    dspy_hist *gil, *exec, *convert, *total;
    struct dspy_error err;
    json_error_t jerr;
    uint64_t t0, t_new, t_load, t_warm, start, wall;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--isolated") == 0) {
            o.isolated = true;
            continue;
        }
        if (a[0] != '-') {
            target = a;
            continue;
        }
        if (!v)
            return usage();
        i++;
        if (strcmp(a, "--kwargs") == 0)
            kwargs_text = v;
        else if (strcmp(a, "--calls") == 0)
            calls = atol(v);
        else if (strcmp(a, "--threads") == 0)
            threads = atol(v);
        else if (strcmp(a, "--warmup") == 0)
            warmup = atol(v);
        else if (strcmp(a, "--venv") == 0)
            o.venv = v;
        else if (strcmp(a, "--path") == 0 && npaths < MAX_LIST)
            paths[npaths++] = v;
        else if (strcmp(a, "--env") == 0 && nenvs < MAX_LIST)
            envs[nenvs++] = v;
        else
            return usage();
    }
    if (!target || calls < 0 || threads < 1 || threads > 1024 || warmup < 0)
        return usage();
    kwargs = json_loads(kwargs_text, 0, &jerr);
    if (!json_is_object(kwargs)) {
        fprintf(stderr, "compat_pycall: --kwargs must be a JSON object: %s\n", jerr.text);
        return 2;
    }
    o.sys_path = paths;
    o.env = envs;
    gil = dspy_hist_new();
    exec = dspy_hist_new();
    convert = dspy_hist_new();
    total = dspy_hist_new();

    t0 = dspy_clock_ns();
    b = dspy_python_bridge_new(&o, &err);
    t_new = dspy_clock_ns();
    if (!b || dspy_python_bridge_info(b, &info, &err) != DSPY_OK ||
        dspy_python_load(b, target, &c, &err) != DSPY_OK) {
        out = json_pack("{s:s, s:o}", "target", target, "error",
                        json_pack("{s:s, s:s}", "code", dspy_status_name(err.code), "message",
                                  err.message));
        if (info)
            json_object_set_new(out, "python", info);
        dspy_python_bridge_free(b);
        fprintf(stderr, "compat_pycall: %s\n", err.message);
        print_line(out);
        json_decref(out);
        json_decref(kwargs);
        return 1;
    }

    t_load = dspy_clock_ns();
    for (long i = 0; i < warmup; i++) {
        json_t *res = NULL;
        if (dspy_python_call(c, kwargs, &res, NULL, &err) != DSPY_OK) {
            errors++;
            note_error(&err);
        } else if (!result) {
            result = res;
        } else {
            json_decref(res);
        }
    }

    t_warm = dspy_clock_ns();
    w = calloc((size_t)threads, sizeof(*w));
    if (!w)
        return 1;
    start = dspy_clock_ns();
    for (long i = 0; i < threads; i++) {
        w[i] = (struct worker){ .c = c,
                                .kwargs = kwargs,
                                .calls = calls / threads + (i < calls % threads),
                                .gil = dspy_hist_new(),
                                .exec = dspy_hist_new(),
                                .convert = dspy_hist_new(),
                                .total = dspy_hist_new() };
        if (pthread_create(&w[i].thread, NULL, worker_run, &w[i]) != 0) {
            fprintf(stderr, "compat_pycall: cannot start thread %ld\n", i);
            return 1;
        }
    }
    for (long i = 0; i < threads; i++)
        pthread_join(w[i].thread, NULL);
    wall = dspy_clock_ns() - start;
    for (long i = 0; i < threads; i++) {
        errors += w[i].errors;
        dspy_hist_merge(gil, w[i].gil);
        dspy_hist_merge(exec, w[i].exec);
        dspy_hist_merge(convert, w[i].convert);
        dspy_hist_merge(total, w[i].total);
        if (!result)
            result = w[i].first_result;
        else
            json_decref(w[i].first_result);
        dspy_hist_free(w[i].gil);
        dspy_hist_free(w[i].exec);
        dspy_hist_free(w[i].convert);
        dspy_hist_free(w[i].total);
    }
    ok = (long)dspy_hist_count(total);
    out = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:o, s:f, s:f, s:o, s:o, s:o, s:o, s:o,"
                    " s:o}",
                    "target", target, "calls", (json_int_t)calls, "threads", (json_int_t)threads,
                    "warmup", (json_int_t)warmup, "ok", (json_int_t)ok, "errors",
                    (json_int_t)errors, "first_error", first_error ? first_error : json_null(),
                    "wall_ms", (double)wall / 1e6, "calls_per_s",
                    wall ? (double)ok * 1e9 / (double)wall : 0.0, "gil_wait_us", summary_us(gil),
                    "exec_us", summary_us(exec), "convert_us", summary_us(convert), "total_us",
                    summary_us(total), "python", info, "result", result ? result : json_null());
    first_error = NULL;
    json_object_set_new(out, "startup_ms", json_real((double)(t_new - t0) / 1e6));
    json_object_set_new(out, "load_ms", json_real((double)(t_load - t_new) / 1e6));
    json_object_set_new(out, "warmup_ms", json_real((double)(t_warm - t_load) / 1e6));
    dspy_python_callable_free(c);
    /* Finalize first: Python's buffered output is flushed before our line. */
    start = dspy_clock_ns();
    dspy_python_bridge_free(b);
    json_object_set_new(out, "finalize_ms", json_real((double)(dspy_clock_ns() - start) / 1e6));
    print_line(out);
    json_decref(out);
    json_decref(kwargs);
    free(w);
    dspy_hist_free(gil);
    dspy_hist_free(exec);
    dspy_hist_free(convert);
    dspy_hist_free(total);
    return errors ? 1 : 0;
}
