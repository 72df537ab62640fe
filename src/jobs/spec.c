/* Job specs (jobs layer): the checks every spec passes before it is accepted (kind, keys,
 * types and ranges, named on failure) and the loading of its datasets, inline or by path. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <dspyc/optimize.h>

#include "base/status.h"
#include "jobs/jobs_int.h"

enum ktype { K_STR, K_INT, K_NUM, K_BOOL, K_DATA, K_PROG, K_STATE };

struct key {
    const char *name;
    enum ktype type;
    unsigned kinds; /* bit per kind: 1 optimize, 2 eval, 4 run, 8 noop */
    double lo, hi;  /* numbers */
};

#define ALL 15u
#define OPT 1u
#define EV 2u
#define RUN 4u
#define NOOP 8u
#define BIG 1e15

static const struct key KEYS[] = {
    { "kind", K_STR, ALL, 0, 0 },
    { "priority", K_INT, ALL, 0, 9 },
    { "idempotency_key", K_STR, ALL, 0, 0 },
    { "memory_bytes", K_INT, ALL, 0, 1e15 },
    { "model", K_STR, OPT | EV | RUN, 0, 0 },
    { "signature", K_STR, OPT | EV | RUN, 0, 0 },
    { "module", K_STR, OPT | EV | RUN, 0, 0 },
    { "program", K_PROG, OPT | EV | RUN, 0, 0 },
    { "state", K_STATE, OPT | EV | RUN, 0, 0 },
    { "concurrency", K_INT, OPT | EV | RUN, 1, 1024 },
    { "max_errors", K_INT, OPT | EV | RUN, 0, BIG },
    { "metric", K_STR, OPT | EV, 0, 0 },
    { "optimizer", K_STR, OPT, 0, 0 },
    { "trainset", K_DATA, OPT, 0, 0 },
    { "valset", K_DATA, OPT, 0, 0 },
    { "auto", K_STR, OPT, 0, 0 },
    { "num_trials", K_INT, OPT, 1, 100000 },
    { "num_candidates", K_INT, OPT, 1, 1000 },
    { "max_bootstrapped_demos", K_INT, OPT, 0, 1000 },
    { "max_labeled_demos", K_INT, OPT, 0, 1000 },
    { "max_rounds", K_INT, OPT, 1, 100 },
    { "max_metric_calls", K_INT, OPT, 1, BIG },
    { "max_full_evals", K_INT, OPT, 1, 1e9 },
    { "seed", K_INT, OPT, 0, BIG },
    { "parallel_trials", K_INT, OPT, 1, 64 },
    { "target_duration", K_NUM, OPT, 1e-6, 1e9 },
    { "warn_at", K_NUM, OPT, 1e-6, 1 },
    { "max_cost", K_NUM, OPT, 0, 1e9 },
    { "max_tokens", K_INT, OPT, 1, BIG },
    { "price_in", K_NUM, OPT, 0, 1e6 },
    { "price_out", K_NUM, OPT, 0, 1e6 },
    { "population", K_INT, OPT, 2, 64 },
    { "generations", K_INT, OPT, 1, 10000 },
    { "mutation_rate", K_NUM, OPT, 0, 1 },
    { "prompt_model", K_STR, OPT, 0, 0 },
    { "reflection_model", K_STR, OPT, 0, 0 },
    { "devset", K_DATA, EV, 0, 0 },
    { "failure_score", K_NUM, EV, -BIG, BIG },
    { "input", K_DATA, RUN, 0, 0 },
    { "sleep_ms", K_INT, NOOP, 0, 600000 },
    { "fail", K_STR, NOOP, 0, 0 },
};

static const char *const KINDS[] = { "optimize", "eval", "run", "noop" };

int dspy__job_kind(const json_t *spec)
{
    const char *k = json_string_value(json_object_get(spec, "kind"));
    for (int i = 0; k && i < 4; i++)
        if (!strcmp(k, KINDS[i]))
            return i;
    return -1;
}

/* The spec's error: message and the key it names. */
#define BAD(err, field, ...) \
    (dspy__err(err, DSPY_EINVAL, __VA_ARGS__), dspy__err_field(err, field), DSPY_EINVAL)

static dspy_status check_key(const struct key *k, const json_t *v, struct dspy_error *err)
{
    switch (k->type) {
    case K_STR:
        if (!json_is_string(v) || !json_string_length(v))
            return BAD(err, k->name, "spec: '%s' must be a non-empty string%s", k->name, "");
        return DSPY_OK;
    case K_BOOL:
        if (!json_is_boolean(v))
            return BAD(err, k->name, "spec: '%s' must be true or false%s", k->name, "");
        return DSPY_OK;
    case K_INT:
    case K_NUM: {
        if (k->type == K_INT ? !json_is_integer(v) : !json_is_number(v))
            return BAD(err, k->name, "spec: '%s' must be %s", k->name,
                       k->type == K_INT ? "an integer" : "a number");
        double d = json_number_value(v);
        if (!(d >= k->lo && d <= k->hi)) {
            dspy__err(err, DSPY_EINVAL, "spec: '%s' must be in [%g, %g]", k->name, k->lo, k->hi);
            dspy__err_field(err, k->name);
            return DSPY_EINVAL;
        }
        return DSPY_OK;
    }
    case K_DATA:
        if (json_is_string(v) && json_string_length(v))
            return DSPY_OK;
        if (!json_is_array(v) || !json_array_size(v))
            return BAD(err, k->name,
                       "spec: '%s' must be a non-empty array of example objects or a path",
                       k->name);
        for (size_t i = 0; i < json_array_size(v); i++)
            if (!json_is_object(json_array_get(v, i))) {
                char f[160];
                snprintf(f, sizeof(f), "%s[%zu]", k->name, i);
                return BAD(err, f, "spec: '%s' is not an example object%s", f, "");
            }
        return DSPY_OK;
    case K_PROG:
    case K_STATE:
        if ((json_is_string(v) && json_string_length(v)) || json_is_object(v))
            return DSPY_OK;
        return BAD(err, k->name, "spec: '%s' must be a path or an object%s", k->name, "");
    }
    return DSPY_OK;
}

dspy_status dspy_job_spec_check(const json_t *spec, struct dspy_error *err)
{
    if (!json_is_object(spec))
        return BAD(err, "", "spec: a job spec is a JSON object%s%s", "", "");
    const json_t *kind = json_object_get(spec, "kind");
    if (!kind)
        return BAD(err, "kind", "spec: 'kind' is required (optimize, eval, run or noop)");
    int ki = dspy__job_kind(spec);
    if (ki < 0)
        return BAD(err, "kind", "spec: '%s' must be optimize, eval, run or noop%s", "kind", "");
    const char *name;
    const json_t *v;
    json_object_foreach((json_t *)spec, name, v) {
        const struct key *k = NULL;
        for (size_t i = 0; i < sizeof(KEYS) / sizeof(KEYS[0]); i++)
            if (!strcmp(KEYS[i].name, name))
                k = &KEYS[i];
        if (!k || !(k->kinds & (1u << ki))) {
            dspy__err(err, DSPY_EINVAL, "spec: '%s' is not a key of %s jobs", name, KINDS[ki]);
            dspy__err_field(err, name);
            return DSPY_EINVAL;
        }
        dspy_status rc = check_key(k, v, err);
        if (rc)
            return rc;
    }
    if (ki == 3)
        return DSPY_OK;
    if (!json_object_get(spec, "signature") == !json_object_get(spec, "program"))
        return BAD(err, "signature", "spec: name 'signature' or 'program' (one of them)");
    const char *mod = json_string_value(json_object_get(spec, "module"));
    if (mod && dspy_module_kind_from_name(mod) < 0)
        return BAD(err, "module", "spec: '%s' must be predict or cot, not '%s'", "module", mod);
    static const char *const need[3][3] = { { "optimizer", "trainset", "metric" },
                                            { "devset", "metric", NULL },
                                            { "input", NULL, NULL } };
    for (int i = 0; i < 3 && need[ki][i]; i++)
        if (!json_object_get(spec, need[ki][i]))
            return BAD(err, need[ki][i], "spec: '%s' is required for %s jobs", need[ki][i],
                       KINDS[ki]);
    const char *metric = json_string_value(json_object_get(spec, "metric"));
    if (metric) {
        dspy_metric *m = NULL;
        struct dspy_error me;
        dspy_error_clear(&me);
        if (dspy_metric_parse(metric, &m, &me))
            return BAD(err, "metric", "spec: '%s': %s", "metric", me.message);
        dspy_metric_free(m);
    }
    if (ki == 0) {
        const char *o = json_string_value(json_object_get(spec, "optimizer"));
        if (dspy_optimizer_from_name(o) < 0)
            return BAD(err, "optimizer",
                       "spec: 'optimizer' must be labeled, bootstrap, random-search, mipro, "
                       "gepa or genetic, not '%s'",
                       o ? o : "(not a string)");
        const char *a = json_string_value(json_object_get(spec, "auto"));
        if (a && strcmp(a, "light") && strcmp(a, "medium") && strcmp(a, "heavy"))
            return BAD(err, "auto", "spec: 'auto' must be light, medium or heavy, not '%s'", a);
    }
    return DSPY_OK;
}

/* A JSON-lines file of objects; NULL with err naming file and line. */
static json_t *load_jsonl(const char *path, const char *field, struct dspy_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        dspy__err(err, DSPY_EIO, "%s: cannot open %s: %s", field, path, strerror(errno));
        dspy__err_field(err, field);
        return NULL;
    }
    json_t *arr = json_array();
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)n)
            continue;
        json_error_t je;
        json_t *v = json_loadb(line, (size_t)n, 0, &je);
        if (!json_is_object(v)) {
            json_decref(v);
            dspy__err(err, DSPY_EINVAL, "%s: %s:%ld: not an example object", field, path, lineno);
            dspy__err_field(err, field);
            json_decref(arr);
            arr = NULL;
            break;
        }
        json_array_append_new(arr, v);
    }
    free(line); /* getline's, from libc */
    fclose(f);
    if (arr && !json_array_size(arr)) {
        dspy__err(err, DSPY_EINVAL, "%s: %s has no examples", field, path);
        dspy__err_field(err, field);
        json_decref(arr);
        arr = NULL;
    }
    return arr;
}

json_t *dspy__job_dataset(const json_t *spec, const char *field, struct dspy_error *err)
{
    json_t *v = json_object_get(spec, field);
    if (!v)
        return NULL;
    if (json_is_array(v))
        return json_incref(v);
    return load_jsonl(json_string_value(v), field, err);
}

/* Bytes of the JSON text of one dataset: the file's size for a path (0 when unreadable). */
static uint64_t dataset_bytes(const json_t *v)
{
    if (json_is_string(v)) {
        struct stat sb;
        return stat(json_string_value(v), &sb) ? 0 : (uint64_t)sb.st_size;
    }
    size_t n = json_dumpb(v, NULL, 0, JSON_COMPACT);
    return (uint64_t)n;
}

uint64_t dspy__job_memory(const json_t *spec)
{
    const json_t *m = json_object_get(spec, "memory_bytes");
    if (json_is_integer(m))
        return (uint64_t)json_integer_value(m);
    if (dspy__job_kind(spec) == 3)
        return 0; /* a no-op holds nothing */
    static const char *const SETS[] = { "trainset", "valset", "devset", "input" };
    uint64_t bytes = 0;
    for (size_t i = 0; i < sizeof(SETS) / sizeof(SETS[0]); i++) {
        const json_t *v = json_object_get(spec, SETS[i]);
        if (v)
            bytes += dataset_bytes(v);
    }
    return DSPY__JOB_MEMORY_BASE + DSPY__JOB_MEMORY_FACTOR * bytes;
}
