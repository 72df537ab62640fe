/* Unit tests for the embedded-CPython bridge (src/python/bridge.c): a small Python module
 * written to a temporary directory (no network, no DSPy) is loaded and called; results,
 * exception texts, JSON round trips and GIL-wait timings from 1 and 4 C threads are checked.
 * Skips (exit 77) when libdspyc was built without Python.
 * no-tsan: libpython is not built with TSan, so TSan cannot see the GIL's ordering. */
/* threads: calls from many C threads into one interpreter. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <dspyc/hist.h>
#include <dspyc/python.h>

static const char module_source[] =
    "import time\n"
    "\n"
    "def hold(ms=1.0, **kw):\n"
    "    # busy-wait: keeps the GIL, unlike time.sleep()\n"
    "    end = time.perf_counter() + ms / 1000.0\n"
    "    while time.perf_counter() < end:\n"
    "        pass\n"
    "    return {'ok': True, 'ms': ms}\n"
    "\n"
    "def echo(**kw):\n"
    "    return kw\n"
    "\n"
    "def fail(msg='boom'):\n"
    "    raise ValueError(msg)\n"
    "\n"
    "class RateLimitError(Exception):\n"
    "    status_code = 429\n"
    "\n"
    "def limited():\n"
    "    raise RateLimitError('slow down')\n"
    "\n"
    "class Prediction:\n"
    "    # stands in for dspy.Prediction: fields through toDict()\n"
    "    def __init__(self, **kw):\n"
    "        self._store = dict(kw)\n"
    "    def toDict(self):\n"
    "        return dict(self._store)\n"
    "\n"
    "class QA:\n"
    "    def __call__(self, question):\n"
    "        return Prediction(answer=question.upper())\n"
    "\n"
    "class Opaque:\n"
    "    def __str__(self):\n"
    "        return 'opaque!'\n"
    "\n"
    "qa = QA()\n"
    "value = 5\n"
    "\n"
    "def odd():\n"
    "    return {'tuple': (1, 2), 'set': {3}, 'big': 2 ** 70, 'nan': float('nan'),\n"
    "            1: 'int key', 'obj': Opaque(), 'none': None}\n"
    "\n"
    "def cycle():\n"
    "    a = []\n"
    "    a.append(a)\n"
    "    return a\n";

static char tmpdir[] = "/tmp/dspyc_bridge_XXXXXX";
static dspy_python_bridge *bridge;

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_ALLOW_NUL, &jerr);
    assert_non_null(j);
    return j;
}

static dspy_python_callable *load(const char *target)
{
    struct dspy_error err;
    dspy_python_callable *c = NULL;
    dspy_status rc = dspy_python_load(bridge, target, &c, &err);
    if (rc)
        fail_msg("load %s: %s", target, err.message);
    return c;
}

static int setup(void **state)
{
    char path[256];
    const char *sys_path[] = { tmpdir, NULL };
    struct dspy_python_options o = DSPY_PYTHON_OPTIONS_INIT;
    struct dspy_error err;
    FILE *f;

    (void)state;
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(path, sizeof(path), "%s/dspyc_bridge_test.py", tmpdir);
    f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(module_source, f);
    fclose(f);
    o.venv = ""; /* the base interpreter is enough here */
    o.sys_path = sys_path;
    o.isolated = true;
    bridge = dspy_python_bridge_new(&o, &err);
    if (!bridge) {
        fprintf(stderr, "bridge: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    char cmd[300];
    (void)state;
    dspy_python_bridge_free(bridge);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void call_returns_dict(void **state)
{
    dspy_python_callable *c = load("dspyc_bridge_test:hold");
    json_t *kw = parse("{\"ms\": 1.5}"), *res = NULL;
    struct dspy_python_timing t;
    struct dspy_error err;

    (void)state;
    assert_string_equal(dspy_python_callable_name(c), "dspyc_bridge_test:hold");
    assert_int_equal(dspy_python_call(c, kw, &res, &t, &err), DSPY_OK);
    assert_true(json_is_true(json_object_get(res, "ok")));
    assert_true(json_real_value(json_object_get(res, "ms")) == 1.5);
    assert_true(t.exec_ns >= 1500000);
    assert_true(t.total_ns >= t.gil_wait_ns + t.exec_ns + t.convert_ns);
    assert_true(t.convert_ns == t.to_python_ns + t.from_python_ns);
    json_decref(res);
    json_decref(kw);
    dspy_python_callable_free(c);
}

static void exception_becomes_error(void **state)
{
    dspy_python_callable *c = load("dspyc_bridge_test:fail");
    json_t *kw = parse("{\"msg\": \"the answer is not 41\"}"), *res = NULL;
    struct dspy_python_timing t;
    struct dspy_error err;

    (void)state;
    assert_int_equal(dspy_python_call(c, kw, &res, &t, &err), DSPY_EINVAL);
    assert_null(res);
    assert_int_equal(err.code, DSPY_EINVAL);
    assert_non_null(strstr(err.message, "dspyc_bridge_test:fail"));
    assert_non_null(strstr(err.message, "ValueError at dspyc_bridge_test.py:14 in fail"));
    assert_non_null(strstr(err.message, "the answer is not 41"));
    assert_non_null(strstr(err.file, "dspyc_bridge_test.py"));
    assert_int_equal(err.line, 14);
    assert_true(t.exec_ns > 0);
    json_decref(kw);
    dspy_python_callable_free(c);

    /* LM error classes map by name and carry the HTTP status. */
    c = load("dspyc_bridge_test:limited");
    assert_int_equal(dspy_python_call(c, NULL, &res, NULL, &err), DSPY_ELM_RATE_LIMIT);
    assert_non_null(strstr(err.message, "dspyc_bridge_test.RateLimitError"));
    assert_non_null(strstr(err.message, "slow down"));
    assert_int_equal(err.http_status, 429);
    dspy_python_callable_free(c);

    /* Bad kwargs are refused before Python runs. */
    c = load("dspyc_bridge_test:echo");
    kw = parse("[1, 2]");
    assert_int_equal(dspy_python_call(c, kw, &res, NULL, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "must be a JSON object"));
    json_decref(kw);
    kw = parse("{\"nope\": 1}");
    dspy_python_callable_free(c);
    c = load("dspyc_bridge_test:fail");
    assert_int_equal(dspy_python_call(c, kw, &res, NULL, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "TypeError"));
    assert_non_null(strstr(err.message, "nope"));
    json_decref(kw);
    dspy_python_callable_free(c);
}

static void load_errors_are_clear(void **state)
{
    dspy_python_callable *c = NULL;
    struct dspy_error err;

    (void)state;
    assert_int_equal(dspy_python_load(bridge, "no_such_module_xyz:f", &c, &err), DSPY_ENOTFOUND);
    assert_null(c);
    assert_non_null(strstr(err.message, "No module named 'no_such_module_xyz'"));
    assert_non_null(strstr(err.message, "sys.prefix="));
    assert_null(strstr(err.message, "<frozen"));

    assert_int_equal(dspy_python_load(bridge, "dspyc_bridge_test:missing", &c, &err),
                     DSPY_ENOTFOUND);
    assert_non_null(strstr(err.message, "AttributeError"));
    assert_non_null(strstr(err.message, "missing"));

    assert_int_equal(dspy_python_load(bridge, "dspyc_bridge_test:value", &c, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "not callable"));

    assert_int_equal(dspy_python_load(bridge, "dspyc_bridge_test", &c, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "package.module:attribute"));
    assert_int_equal(dspy_python_load(bridge, "dspyc_bridge_test:a..b", &c, &err), DSPY_EINVAL);

    /* Dotted attributes reach into objects. */
    c = load("dspyc_bridge_test:qa.__call__");
    dspy_python_callable_free(c);
}

static void json_round_trips(void **state)
{
    static const char text[] =
        "{\"s\": \"h\\u00e9llo \\u2603 \\ud83d\\ude00\", \"nul\": \"a\\u0000b\","
        " \"i\": -9223372036854775808, \"big\": 9223372036854775807, \"r\": 0.125,"
        " \"t\": true, \"f\": false, \"n\": null, \"empty_obj\": {}, \"empty_arr\": [],"
        " \"nested\": {\"a\": [1, [2, [3, {\"b\": [null, \"x\"]}]]]}}";
    dspy_python_callable *c = load("dspyc_bridge_test:echo");
    json_t *kw = parse(text), *res = NULL;
    struct dspy_python_timing t;
    struct dspy_error err;

    (void)state;
    assert_int_equal(dspy_python_call(c, kw, &res, &t, &err), DSPY_OK);
    assert_true(json_equal(kw, res));
    assert_true(t.to_python_ns > 0 && t.from_python_ns > 0);
    json_decref(res);
    json_decref(kw);
    dspy_python_callable_free(c);
}

static void results_of_other_types(void **state)
{
    dspy_python_callable *c = load("dspyc_bridge_test:qa");
    json_t *kw = parse("{\"question\": \"why?\"}"), *res = NULL, *want;
    struct dspy_error err;

    (void)state;
    assert_int_equal(dspy_python_call(c, kw, &res, NULL, &err), DSPY_OK);
    want = parse("{\"answer\": \"WHY?\"}");
    assert_true(json_equal(want, res));
    json_decref(want);
    json_decref(res);
    json_decref(kw);
    dspy_python_callable_free(c);

    c = load("dspyc_bridge_test:odd");
    assert_int_equal(dspy_python_call(c, NULL, &res, NULL, &err), DSPY_OK);
    want = parse("{\"tuple\": [1, 2], \"set\": [3], \"big\": \"1180591620717411303424\","
                 " \"nan\": \"nan\", \"1\": \"int key\", \"obj\": \"opaque!\","
                 " \"none\": null}");
    assert_true(json_equal(want, res));
    json_decref(want);
    json_decref(res);
    dspy_python_callable_free(c);

    c = load("dspyc_bridge_test:cycle");
    assert_int_equal(dspy_python_call(c, NULL, &res, NULL, &err), DSPY_ETOOBIG);
    assert_non_null(strstr(err.message, "deeper than"));
    dspy_python_callable_free(c);
}

static void info_and_one_bridge_per_process(void **state)
{
    struct dspy_python_options o = DSPY_PYTHON_OPTIONS_INIT;
    json_t *info = NULL;
    struct dspy_error err;
    const char *version;

    (void)state;
    assert_int_equal(dspy_python_bridge_info(bridge, &info, &err), DSPY_OK);
    version = json_string_value(json_object_get(info, "version"));
    assert_non_null(version);
    assert_true(strncmp(version, "3.", 2) == 0);
    assert_true(json_is_null(json_object_get(info, "venv")));
    assert_string_equal(json_string_value(json_array_get(json_object_get(info, "path"), 0)),
                        tmpdir);
    json_decref(info);

    o.venv = "";
    assert_null(dspy_python_bridge_new(&o, &err));
    assert_int_equal(err.code, DSPY_EBUSY);
}

struct worker {
    dspy_python_callable *c;
    const json_t *kw;
    int calls;
    int errors;
    dspy_hist *gil_wait;
    dspy_hist *exec;
    pthread_t thread;
};

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    struct dspy_python_timing t;
    struct dspy_error err;
    json_t *res;

    for (int i = 0; i < w->calls; i++) {
        if (dspy_python_call(w->c, w->kw, &res, &t, &err) != DSPY_OK) {
            w->errors++;
            continue;
        }
        json_decref(res);
        dspy_hist_record(w->gil_wait, t.gil_wait_ns);
        dspy_hist_record(w->exec, t.exec_ns);
    }
    return NULL;
}

struct gil_stats {
    double wait_mean; /* ns */
    double wait_p50;
    double exec_mean;
};

/* GIL wait over `calls` calls to hold(ms=2) from each of `nthreads` threads. */
static struct gil_stats measure_gil_wait(dspy_python_callable *c, int nthreads, int calls)
{
    struct worker w[8];
    json_t *kw = parse("{\"ms\": 2}");
    dspy_hist *gil = dspy_hist_new(), *ex = dspy_hist_new();
    struct gil_stats st;

    for (int i = 0; i < nthreads; i++) {
        w[i] = (struct worker){ c, kw, calls, 0, dspy_hist_new(), dspy_hist_new(), 0 };
        assert_int_equal(pthread_create(&w[i].thread, NULL, worker_run, &w[i]), 0);
    }
    for (int i = 0; i < nthreads; i++) {
        pthread_join(w[i].thread, NULL);
        assert_int_equal(w[i].errors, 0);
        dspy_hist_merge(gil, w[i].gil_wait);
        dspy_hist_merge(ex, w[i].exec);
        dspy_hist_free(w[i].gil_wait);
        dspy_hist_free(w[i].exec);
    }
    assert_int_equal(dspy_hist_count(gil), (uint64_t)(nthreads * calls));
    st.wait_mean = dspy_hist_mean(gil);
    st.wait_p50 = (double)dspy_hist_percentile(gil, 50);
    st.exec_mean = dspy_hist_mean(ex);
    printf("# GIL wait, %d thread%s x %d calls of a 2 ms GIL-holding function: mean %.1f us,"
           " p50 %.1f us, p99 %.1f us; exec mean %.1f us\n",
           nthreads, nthreads > 1 ? "s" : "", calls, st.wait_mean / 1e3, st.wait_p50 / 1e3,
           (double)dspy_hist_percentile(gil, 99) / 1e3, st.exec_mean / 1e3);
    dspy_hist_free(gil);
    dspy_hist_free(ex);
    json_decref(kw);
    return st;
}

static void gil_wait_grows_with_threads(void **state)
{
    dspy_python_callable *c = load("dspyc_bridge_test:hold");
    struct gil_stats one, four;

    (void)state;
    one = measure_gil_wait(c, 1, 30);
    four = measure_gil_wait(c, 4, 30);
    /* Alone, taking the GIL is an uncontended lock (the first call also makes the thread's
     * state); with four threads each call waits, on average, for several of the others'
     * 2 ms calls. */
    assert_true(one.wait_p50 < 50e3);
    assert_true(one.wait_mean < 500e3);
    assert_true(four.wait_mean > 500e3);
    assert_true(four.wait_mean > 5 * one.wait_mean);
    assert_true(one.exec_mean >= 2e6 && four.exec_mean >= 2e6);
    dspy_python_callable_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(call_returns_dict),
        cmocka_unit_test(exception_becomes_error),
        cmocka_unit_test(load_errors_are_clear),
        cmocka_unit_test(json_round_trips),
        cmocka_unit_test(results_of_other_types),
        cmocka_unit_test(info_and_one_bridge_per_process),
        cmocka_unit_test(gil_wait_grows_with_threads),
    };
    struct dspy_python_options o = DSPY_PYTHON_OPTIONS_INIT;
    struct dspy_error err;
    int failed;

    if (!dspy_python_available()) {
        printf("SKIP: libdspyc built without Python support\n");
        return 77;
    }
    failed = cmocka_run_group_tests(tests, setup, teardown);
    /* After the bridge is freed, CPython cannot be started again in this process. */
    o.venv = "";
    if (dspy_python_bridge_new(&o, &err) != NULL || err.code != DSPY_EUNSUPPORTED) {
        fprintf(stderr, "second bridge after free: expected DSPY_EUNSUPPORTED\n");
        failed++;
    }
    return failed;
}
