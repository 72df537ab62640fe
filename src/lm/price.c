/* The price table (lm layer): list prices of common models per 1,000 tokens, a JSON file
 * that overrides or extends them, lookup by model name as providers spell it, and cost. */
#include <string.h>

#include <jansson.h>

#include <dspyc/price.h>

#include "base/jsonfile.h"
#include "base/status.h"

struct entry {
    char *model;
    struct dspy_price price;
};

struct dspy_price_table {
    struct entry *e;
    size_t n;
};

/* List prices (USD per 1,000 tokens, standard tier) as published by the providers; a
 * --prices file replaces any of them. The simulator costs nothing. */
static const struct {
    const char *model;
    double in, out;
} defaults[] = {
    { "gpt-4o", 0.0025, 0.01 },
    { "gpt-4o-mini", 0.00015, 0.0006 },
    { "gpt-4.1", 0.002, 0.008 },
    { "gpt-4.1-mini", 0.0004, 0.0016 },
    { "gpt-4.1-nano", 0.0001, 0.0004 },
    { "gpt-4-turbo", 0.01, 0.03 },
    { "gpt-3.5-turbo", 0.0005, 0.0015 },
    { "o1", 0.015, 0.06 },
    { "o1-mini", 0.0011, 0.0044 },
    { "o3-mini", 0.0011, 0.0044 },
    { "claude-3-5-sonnet", 0.003, 0.015 },
    { "claude-3-5-haiku", 0.0008, 0.004 },
    { "claude-3-opus", 0.015, 0.075 },
    { "claude-3-haiku", 0.00025, 0.00125 },
    { "gemini-1.5-pro", 0.00125, 0.005 },
    { "gemini-1.5-flash", 0.000075, 0.0003 },
    { "dspyc-sim", 0.0, 0.0 },
};

void dspy_price_table_free(dspy_price_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        dspy_free(t->e[i].model);
    dspy_free(t->e);
    dspy_free(t);
}

static struct entry *find_exact(const dspy_price_table *t, const char *model, size_t len)
{
    for (size_t i = 0; i < t->n; i++)
        if (strlen(t->e[i].model) == len && !memcmp(t->e[i].model, model, len))
            return &t->e[i];
    return NULL;
}

static dspy_status set(dspy_price_table *t, const char *model, double in, double out)
{
    struct entry *e = find_exact(t, model, strlen(model));
    if (!e) {
        struct entry *ne = dspy_realloc(t->e, (t->n + 1) * sizeof(*ne));
        if (!ne)
            return DSPY_ENOMEM;
        t->e = ne;
        e = &t->e[t->n];
        if (!(e->model = dspy_strdup(model)))
            return DSPY_ENOMEM;
        t->n++;
    }
    e->price.input_per_1k = in;
    e->price.output_per_1k = out;
    return DSPY_OK;
}

static dspy_status file_err(struct dspy_error *err, const char *path, const char *key,
                            const char *what)
{
    dspy__err(err, DSPY_EINVAL, "%s: model \"%s\": %s", path, key, what);
    dspy__err_file(err, path);
    dspy__err_field(err, key);
    return DSPY_EINVAL;
}

static dspy_status load_file(dspy_price_table *t, const char *path, struct dspy_error *err)
{
    const char *model;
    json_t *v;
    json_t *doc = dspy__json_load_file(path, err);
    dspy_status rc = DSPY_OK;
    if (!doc)
        return DSPY_EPARSE;
    if (!json_is_object(doc)) {
        rc = dspy__err(err, DSPY_EINVAL, "%s: a price file is a JSON object of models", path);
        goto out;
    }
    json_object_foreach(doc, model, v) {
        json_t *in = json_object_get(v, "input_per_1k"),
               *outp = json_object_get(v, "output_per_1k");
        if (!json_is_object(v) || json_object_size(v) != 2 || !json_is_number(in) ||
            !json_is_number(outp)) {
            rc = file_err(err, path, model,
                          "needs exactly {\"input_per_1k\": USD, \"output_per_1k\": USD}");
            goto out;
        }
        if (!(json_number_value(in) >= 0 && json_number_value(outp) >= 0 &&
              json_number_value(in) < 1e6 && json_number_value(outp) < 1e6)) {
            rc = file_err(err, path, model, "prices must be numbers >= 0");
            goto out;
        }
        if ((rc = set(t, model, json_number_value(in), json_number_value(outp)))) {
            dspy__err(err, rc, "out of memory");
            goto out;
        }
    }
out:
    json_decref(doc);
    return rc;
}

dspy_status dspy_price_table_new(const char *path, dspy_price_table **out, struct dspy_error *err)
{
    if (!out)
        return dspy__err(err, DSPY_EINVAL, "dspy_price_table_new: out is required");
    dspy_price_table *t = dspy_calloc(1, sizeof(*t));
    dspy_status rc = t ? DSPY_OK : DSPY_ENOMEM;
    for (size_t i = 0; !rc && i < sizeof(defaults) / sizeof(defaults[0]); i++)
        rc = set(t, defaults[i].model, defaults[i].in, defaults[i].out);
    if (rc)
        dspy__err(err, rc, "out of memory");
    else if (path)
        rc = load_file(t, path, err);
    if (rc) {
        dspy_price_table_free(t);
        return rc;
    }
    *out = t;
    return DSPY_OK;
}

bool dspy_price_lookup(const dspy_price_table *t, const char *model, struct dspy_price *out)
{
    if (!t || !model)
        return false;
    const struct entry *e = find_exact(t, model, strlen(model));
    const char *slash = strrchr(model, '/');
    const char *bare = slash ? slash + 1 : model;
    if (!e)
        e = find_exact(t, bare, strlen(bare));
    if (!e) { /* "gpt-4o-mini-2024-07-18": the longest stem followed by '-' */
        size_t best = 0;
        for (size_t i = 0; i < t->n; i++) {
            size_t l = strlen(t->e[i].model);
            if (l > best && !strncmp(bare, t->e[i].model, l) && bare[l] == '-') {
                best = l;
                e = &t->e[i];
            }
        }
    }
    if (e && out)
        *out = e->price;
    return e != NULL;
}

double dspy_price_cost(const struct dspy_price *p, long prompt, long completion)
{
    return p ? (double)prompt / 1000.0 * p->input_per_1k +
                   (double)completion / 1000.0 * p->output_per_1k
             : 0.0;
}
