/* Helpers shared by `dspyc eval` and `dspyc optimize` (apps layer): programs, example files
 * with line numbers for errors, metrics. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "optutil.h"
#include "util.h"

static int add_example(void *ud, long index, long lineno, json_t *v, struct dspy_error *err)
{
    struct examples *ex = ud;
    (void)index;
    if (!v) {
        if (err->code == DSPY_ETOOBIG)
            fprintf(stderr, "dspyc: %s:%ld: line longer than 16 MiB\n", ex->path, lineno);
        else
            fprintf(stderr, "dspyc: %s:%ld:%ld: not an example: %s\n", ex->path, lineno,
                    err->column, err->message);
        return -1;
    }
    size_t n = json_array_size(ex->items);
    if (n == ex->cap) {
        ex->cap = ex->cap ? 2 * ex->cap : 64;
        long *l = dspy_realloc(ex->lines, ex->cap * sizeof(*l));
        if (!l)
            abort();
        ex->lines = l;
    }
    ex->lines[n] = lineno;
    json_array_append(ex->items, v);
    return 0;
}

bool examples_load(struct examples *ex, const char *path, bool nonempty)
{
    memset(ex, 0, sizeof(*ex));
    ex->path = path;
    ex->items = json_array();
    if (read_jsonl("", path, 16u << 20, true, "a JSON object of fields", add_example, ex)) {
        examples_release(ex);
        return false;
    }
    if (nonempty && !json_array_size(ex->items)) {
        fprintf(stderr, "dspyc: %s: no examples (the file is empty)\n", path);
        examples_release(ex);
        return false;
    }
    return true;
}

void examples_release(struct examples *ex)
{
    json_decref(ex->items);
    dspy_free(ex->lines);
    ex->items = NULL;
    ex->lines = NULL;
}

void examples_print_error(const char *cmd, const struct examples *ex, const struct dspy_error *err)
{
    long i = err->line - 1;
    const char *f = err->field;
    if (ex && i >= 0 && (size_t)i < json_array_size(ex->items))
        fprintf(stderr, "dspyc %s: %s:%ld: %s%s%s%s\n", cmd, ex->path, ex->lines[i], err->message,
                f[0] ? " (field '" : "", f, f[0] ? "')" : "");
    else
        fprintf(stderr, "dspyc %s: %s\n", cmd, err->message);
}

dspy_program *opt_program(const char *cmd, const char *path, const char *signature, int module,
                          const char *state_path)
{
    struct dspy_error err;
    dspy_program *p = NULL;
    dspy_error_clear(&err);
    if (path) {
        if (dspy_program_load(path, &p, &err)) {
            print_error("program", &err);
            return NULL;
        }
    } else {
        dspy_signature *sig = NULL;
        if (dspy_signature_parse(signature, NULL, &sig, &err)) {
            print_error("signature", &err);
            return NULL;
        }
        dspy_module *m = dspy_module_new((enum dspy_module_kind)module, sig, DSPY_ADAPTER_CHAT);
        dspy_signature_free(sig);
        if (!m || !(p = dspy_program_single(m))) {
            fprintf(stderr, "dspyc %s: out of memory\n", cmd);
            dspy_module_free(m);
            return NULL;
        }
    }
    if (state_path && dspy_program_load_state(p, state_path, &err)) {
        print_error("state", &err);
        dspy_program_free(p);
        return NULL;
    }
    return p;
}

dspy_metric *opt_metric(const char *cmd, const char *spec, dspy_lm *lm, dspy_program **judge)
{
    struct dspy_error err;
    dspy_metric *m = NULL;
    dspy_error_clear(&err);
    *judge = NULL;
    if (!strncmp(spec, "judge:", 6)) {
        if (dspy_program_load(spec + 6, judge, &err)) {
            print_error("judge program", &err);
            return NULL;
        }
        if (dspy_metric_judge(*judge, lm, &m, &err)) {
            fprintf(stderr, "dspyc %s: --metric %s: %s\n", cmd, spec, err.message);
            dspy_program_free(*judge);
            *judge = NULL;
            return NULL;
        }
        return m;
    }
    if (dspy_metric_parse(spec, &m, &err)) {
        fprintf(stderr, "dspyc %s: --metric: %s\n", cmd, err.message);
        return NULL;
    }
    return m;
}

/* ---- Python metrics ------------------------------------------------------------------- */

/* Loaded by the embedded interpreter from a temporary directory: calls the user's metric
 * with DSPy objects (Example, Prediction) when DSPy is installed, else dicts with attribute
 * access, in DSPy's 2-, 3- or GEPA's 5-argument form, and returns {score, feedback}. */
static const char SHIM[] =
    "import importlib, inspect\n"
    "_fns = {}\n"
    "class _Obj(dict):\n"
    "    def __getattr__(self, k):\n"
    "        try:\n"
    "            return self[k]\n"
    "        except KeyError:\n"
    "            raise AttributeError(k)\n"
    "def _as(d, example):\n"
    "    try:\n"
    "        import dspy\n"
    "    except ImportError:\n"
    "        return _Obj(d)\n"
    "    return dspy.Example(**d) if example else dspy.Prediction(**d)\n"
    "def call(target, example, pred=None, trace=None):\n"
    "    fn = _fns.get(target)\n"
    "    if fn is None:\n"
    "        mod, _, attr = target.partition(':')\n"
    "        fn = importlib.import_module(mod)\n"
    "        for part in attr.split('.'):\n"
    "            fn = getattr(fn, part)\n"
    "        _fns[target] = fn\n"
    "    ex, pr = _as(example, True), _as(pred or {}, False)\n"
    "    try:\n"
    "        n = len(inspect.signature(fn).parameters)\n"
    "    except (TypeError, ValueError):\n"
    "        n = 3\n"
    "    r = fn(ex, pr, trace, None, None) if n >= 5 else fn(ex, pr) if n == 2 else "
    "fn(ex, pr, trace)\n"
    "    fb = None\n"
    "    if hasattr(r, 'score'):\n"
    "        fb = getattr(r, 'feedback', None)\n"
    "        r = r.score\n"
    "    return {'score': float(r), 'feedback': None if fb is None else str(fb)}\n";

static dspy_python_bridge *bridge;
static dspy_python_callable *shim;
static char shim_dir[64];

struct py_metric {
    char target[256];
};
static struct py_metric py_target;

static dspy_status py_metric_fn(void *ud, const json_t *example, const json_t *prediction,
                                const json_t *trace, double *score, char **feedback,
                                struct dspy_error *err)
{
    const struct py_metric *pm = ud;
    json_t *kw = json_pack("{s:s, s:O, s:O?, s:O?}", "target", pm->target, "example", example,
                           "pred", prediction, "trace", trace);
    json_t *res = NULL;
    dspy_status rc = kw ? dspy_python_call(shim, kw, &res, NULL, err) : DSPY_ENOMEM;
    json_decref(kw);
    if (rc)
        return rc;
    const json_t *s = json_object_get(res, "score"), *fb = json_object_get(res, "feedback");
    *score = json_number_value(s);
    if (feedback && json_is_string(fb))
        *feedback = dspy_strdup(json_string_value(fb));
    json_decref(res);
    return DSPY_OK;
}

dspy_metric *opt_metric_python(const char *cmd, const char *target)
{
    struct dspy_error err;
    dspy_error_clear(&err);
    if (!strchr(target, ':') || strlen(target) >= sizeof(py_target.target)) {
        fprintf(stderr, "dspyc %s: --metric-python: '%s' is not MODULE:FUNCTION\n", cmd, target);
        return NULL;
    }
    if (!dspy_python_available()) {
        fprintf(stderr, "dspyc %s: --metric-python: this build has no embedded Python\n", cmd);
        return NULL;
    }
    snprintf(shim_dir, sizeof(shim_dir), "/tmp/dspyc-metric-XXXXXX");
    if (!mkdtemp(shim_dir)) {
        fprintf(stderr, "dspyc %s: --metric-python: %s\n", cmd, strerror(errno));
        return NULL;
    }
    char path[128];
    snprintf(path, sizeof(path), "%s/dspyc_metric_shim.py", shim_dir);
    FILE *f = fopen(path, "w");
    if (!f || fputs(SHIM, f) == EOF || fclose(f)) {
        fprintf(stderr, "dspyc %s: --metric-python: cannot write %s\n", cmd, path);
        return NULL;
    }
    struct dspy_python_options o = DSPY_PYTHON_OPTIONS_INIT;
    /* no __pycache__ beside the shim, so its directory can be removed at the end */
    static const char *const env[] = { "LITELLM_LOCAL_MODEL_COST_MAP=True",
                                       "PYTHONDONTWRITEBYTECODE=1", NULL };
    const char *sys_path[] = { shim_dir, ".", NULL };
    o.env = env;
    o.sys_path = sys_path;
    if (!(bridge = dspy_python_bridge_new(&o, &err)) ||
        dspy_python_load(bridge, "dspyc_metric_shim:call", &shim, &err)) {
        fprintf(stderr, "dspyc %s: --metric-python: %s\n", cmd, err.message);
        return NULL;
    }
    /* import the user's function now, so a typo fails before any LM call */
    dspy_python_callable *check = NULL;
    if (dspy_python_load(bridge, target, &check, &err)) {
        fprintf(stderr, "dspyc %s: --metric-python %s: %s\n", cmd, target, err.message);
        return NULL;
    }
    dspy_python_callable_free(check);
    snprintf(py_target.target, sizeof(py_target.target), "%s", target);
    char name[300];
    snprintf(name, sizeof(name), "python:%s", target);
    return dspy_metric_custom(name, py_metric_fn, &py_target);
}

void opt_metric_python_done(void)
{
    dspy_python_callable_free(shim);
    shim = NULL;
    dspy_python_bridge_free(bridge);
    bridge = NULL;
    if (shim_dir[0]) {
        char path[128];
        snprintf(path, sizeof(path), "%s/dspyc_metric_shim.py", shim_dir);
        unlink(path);
        rmdir(shim_dir);
        shim_dir[0] = '\0';
    }
}
