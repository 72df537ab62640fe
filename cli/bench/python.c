/* The Python DSPy side of `dspyc bench --python` (apps layer): the same inputs through a
 * DSPy module object in embedded CPython, from one thread and then from several. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dspyc/python.h>

#include "bench.h"

struct py_run {
    dspy_python_callable *fn;
    const json_t *inputs;
    long total;
    atomic_long next;
    atomic_long errors;
    /* Sums over calls, ns. */
    atomic_ullong gil, exec, convert, all;
};

static void *py_worker(void *arg)
{
    struct py_run *r = arg;
    long i;
    while ((i = atomic_fetch_add(&r->next, 1)) < r->total) {
        struct dspy_python_timing t;
        struct dspy_error err;
        json_t *res = NULL;
        const json_t *in = json_array_get(r->inputs, (size_t)i % json_array_size(r->inputs));
        memset(&t, 0, sizeof(t));
        if (dspy_python_call(r->fn, in, &res, &t, &err))
            atomic_fetch_add(&r->errors, 1);
        json_decref(res);
        atomic_fetch_add(&r->gil, t.gil_wait_ns);
        atomic_fetch_add(&r->exec, t.exec_ns);
        atomic_fetch_add(&r->convert, t.convert_ns);
        atomic_fetch_add(&r->all, t.total_ns);
    }
    return NULL;
}

/* Run `total` calls from `threads` threads; 0, or -1 when no thread started. */
static int py_series(struct py_run *r, long threads)
{
    pthread_t tids[256];
    long started = 0;
    if (threads > 256)
        threads = 256;
    for (; started < threads; started++)
        if (pthread_create(&tids[started], NULL, py_worker, r))
            break;
    for (long i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    return started ? 0 : -1;
}

/* CPython starts once per process, so one bridge serves every model of the run. */
static dspy_python_bridge *bridge;

void bench_python_done(void)
{
    dspy_python_bridge_free(bridge);
    bridge = NULL;
}

int bench_python(const struct bench_config *cfg, const char *target, long threads,
                 const char *base_url, const char *model, struct bench_subject *out)
{
    struct dspy_error err;
    dspy_python_callable *fn = NULL;
    int rc = -1;
    char masked[2048], cred_path[4096] = "";
    dspy_error_clear(&err);
    /* The module reads the endpoint from the environment, per model. The environment is
     * readable by everything the module runs (and shows in its dumps), so the URL there is
     * masked; a URL with credentials is also written, whole, to a file only this user can
     * read, named by DSPYC_BENCH_BASE_URL_FILE and removed when the run ends. */
    dspy_url_redact(base_url ? base_url : "", masked, sizeof(masked));
    setenv("DSPYC_BENCH_BASE_URL", masked, 1);
    setenv("DSPYC_BENCH_MODEL", model, 1);
    unsetenv("DSPYC_BENCH_BASE_URL_FILE");
    if (base_url && dspy_url_has_credentials(base_url)) {
        const char *dir = getenv("TMPDIR");
        int fd;
        snprintf(cred_path, sizeof(cred_path), "%s/dspyc-bench-url-XXXXXX",
                 dir && *dir ? dir : "/tmp");
        mode_t old = umask(077);
        fd = mkstemp(cred_path);
        umask(old);
        size_t n = strlen(base_url);
        if (fd < 0 || write(fd, base_url, n) != (ssize_t)n) {
            fprintf(stderr, "dspyc bench: --python: cannot write the endpoint file: %s\n",
                    strerror(errno));
            if (fd >= 0) {
                close(fd);
                unlink(cred_path);
            }
            return -1;
        }
        close(fd);
        setenv("DSPYC_BENCH_BASE_URL_FILE", cred_path, 1);
    }
    if (!bridge) {
        struct dspy_python_options o = DSPY_PYTHON_OPTIONS_INIT;
        /* Offline, LiteLLM would otherwise try to download its price list first. */
        static const char *const env[] = { "LITELLM_LOCAL_MODEL_COST_MAP=True", NULL };
        static const char *const path[] = { ".", NULL };
        o.env = env;
        o.sys_path = path;
        if (!(bridge = dspy_python_bridge_new(&o, &err))) {
            fprintf(stderr, "dspyc bench: --python: %s\n", err.message);
            return -1;
        }
    }
    if (dspy_python_load(bridge, target, &fn, &err)) {
        fprintf(stderr, "dspyc bench: --python %s: %s\n", target, err.message);
        goto out;
    }
    struct py_run warm = { .fn = fn, .inputs = cfg->inputs, .total = cfg->warmup };
    py_series(&warm, 1);
    struct py_run one = { .fn = fn, .inputs = cfg->inputs, .total = cfg->iterations };
    struct py_run many = { .fn = fn, .inputs = cfg->inputs, .total = cfg->iterations };
    if (py_series(&one, 1) || py_series(&many, threads))
        goto out;
    double n = (double)cfg->iterations;
    out->py_gil_ns = (double)atomic_load(&one.gil) / n;
    out->py_exec_ns = (double)atomic_load(&one.exec) / n;
    out->py_convert_ns = (double)atomic_load(&one.convert) / n;
    out->py_total_ns = (double)atomic_load(&one.all) / n;
    out->py_contended_gil_ns = (double)atomic_load(&many.gil) / n;
    out->py_contended_total_ns = (double)atomic_load(&many.all) / n;
    out->py_threads = threads;
    long errors = atomic_load(&one.errors) + atomic_load(&many.errors);
    if (errors && !out->errors)
        snprintf(out->first_error, sizeof(out->first_error), "%ld Python calls failed", errors);
    out->errors += errors;
    rc = 0;
out:
    dspy_python_callable_free(fn);
    if (*cred_path) {
        unlink(cred_path);
        unsetenv("DSPYC_BENCH_BASE_URL_FILE");
    }
    return rc;
}
