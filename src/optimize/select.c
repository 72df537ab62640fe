/* The model selector (optimize layer): candidates ordered by price, complexity rules that
 * give a record a level, and per-level choices from accuracy measured with Evaluate. */
#include <ctype.h>
#include <string.h>

#include <dspyc/select.h>

#include "base/jsonfile.h"
#include "base/status.h"

enum cond { COND_TOKENS, COND_CHARS, COND_KEYWORDS, COND_FIELD };

struct rule {
    enum cond cond;
    long min;     /* COND_TOKENS, COND_CHARS */
    char **words; /* COND_KEYWORDS: lower-case */
    size_t nwords;
    char *field; /* COND_FIELD */
    int level;
};

struct candidate {
    char *model;
    struct dspy_price price;
};

struct level_choice {
    size_t model;
    size_t examples;
    double accuracy[DSPY_SELECT_MAX_MODELS];
};

struct dspy_selector {
    struct candidate c[DSPY_SELECT_MAX_MODELS];
    size_t n;
    struct rule *rules;
    size_t nrules;
    char **fields; /* the input fields the rules read; NULL = all */
    size_t nfields;
    int max_level;
    bool measured;
    double bar;
    struct level_choice levels[DSPY_SELECT_MAX_LEVEL + 1];
};

static void free_strings(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dspy_free(v[i]);
    dspy_free(v);
}

void dspy_selector_free(dspy_selector *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        dspy_free(s->c[i].model);
    for (size_t i = 0; i < s->nrules; i++) {
        free_strings(s->rules[i].words, s->rules[i].nwords);
        dspy_free(s->rules[i].field);
    }
    dspy_free(s->rules);
    free_strings(s->fields, s->nfields);
    dspy_free(s);
}

static double call_price(const struct dspy_price *p)
{
    return dspy_price_cost(p, 1000, 100);
}

static char *lower_dup(const char *s)
{
    char *d = dspy_strdup(s);
    for (char *p = d; p && *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return d;
}

/* A JSON array of non-empty strings into *out (lower-cased when asked). */
static dspy_status strings_of(const json_t *arr, bool lower, char ***out, size_t *n)
{
    size_t i, k = json_array_size(arr);
    const json_t *v;
    if (!json_is_array(arr) || !k)
        return DSPY_EINVAL;
    json_array_foreach((json_t *)arr, i, v) {
        if (!json_is_string(v) || !json_string_length(v))
            return DSPY_EINVAL;
    }
    if (!(*out = dspy_calloc(k, sizeof(char *))))
        return DSPY_ENOMEM;
    *n = k;
    json_array_foreach((json_t *)arr, i, v) {
        if (!((*out)[i] = lower ? lower_dup(json_string_value(v))
                                : dspy_strdup(json_string_value(v))))
            return DSPY_ENOMEM;
    }
    return DSPY_OK;
}

static dspy_status rule_err(struct dspy_error *err, const char *path, size_t i, const char *key,
                            const char *what)
{
    dspy__err(err, DSPY_EINVAL, "%s: rule %zu: %s", path, i, what);
    dspy__err_file(err, path);
    dspy__err_field(err, key);
    return DSPY_EINVAL;
}

static long candidate_index(const dspy_selector *s, const char *model)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->c[i].model, model))
            return (long)i;
    return -1;
}

static dspy_status parse_rule(dspy_selector *s, const json_t *r, size_t i, const char *path,
                              struct dspy_error *err)
{
    static const char *const conds[] = { "min_tokens", "min_chars", "keywords", "has_field" };
    struct rule *u = &s->rules[i];
    int found = 0;
    const char *key;
    const json_t *v;
    if (!json_is_object(r))
        return rule_err(err, path, i, "", "a rule is an object");
    json_object_foreach((json_t *)r, key, v) {
        bool known = !strcmp(key, "level") || !strcmp(key, "model");
        for (int c = 0; c < 4; c++)
            if (!strcmp(key, conds[c])) {
                u->cond = (enum cond)c;
                found++;
                known = true;
            }
        if (!known)
            return rule_err(err, path, i, key,
                            "unknown key (min_tokens, min_chars, keywords, has_field, level, "
                            "model)");
    }
    if (found != 1)
        return rule_err(err, path, i, "",
                        "needs exactly one of min_tokens, min_chars, "
                        "keywords, has_field");
    v = json_object_get(r, conds[u->cond]);
    dspy_status rc = DSPY_OK;
    switch (u->cond) {
    case COND_TOKENS:
    case COND_CHARS:
        if (!json_is_integer(v) || json_integer_value(v) < 1)
            return rule_err(err, path, i, conds[u->cond], "must be an integer >= 1");
        u->min = (long)json_integer_value(v);
        break;
    case COND_KEYWORDS:
        if ((rc = strings_of(v, true, &u->words, &u->nwords)) == DSPY_EINVAL)
            return rule_err(err, path, i, "keywords", "must be a non-empty array of strings");
        break;
    case COND_FIELD:
        if (!json_is_string(v) || !json_string_length(v))
            return rule_err(err, path, i, "has_field", "must be a field name");
        if (!(u->field = dspy_strdup(json_string_value(v))))
            rc = DSPY_ENOMEM;
        break;
    }
    if (rc)
        return dspy__err(err, rc, "out of memory");
    const json_t *level = json_object_get(r, "level"), *model = json_object_get(r, "model");
    if (!level == !model)
        return rule_err(err, path, i, "level", "needs exactly one of level and model");
    if (model) {
        long c = json_is_string(model) ? candidate_index(s, json_string_value(model)) : -1;
        if (c < 0)
            return rule_err(err, path, i, "model", "must name one of the candidate models");
        u->level = (int)c;
    } else {
        if (!json_is_integer(level) || json_integer_value(level) < 1 ||
            json_integer_value(level) > DSPY_SELECT_MAX_LEVEL)
            return rule_err(err, path, i, "level", "must be an integer from 1 to 15");
        u->level = (int)json_integer_value(level);
    }
    if (u->level > s->max_level)
        s->max_level = u->level;
    return DSPY_OK;
}

static dspy_status load_rules(dspy_selector *s, const char *path, struct dspy_error *err)
{
    json_t *doc = dspy__json_load_file(path, err);
    dspy_status rc = DSPY_OK;
    if (!doc)
        return DSPY_EPARSE;
    const json_t *rules = json_object_get(doc, "rules"), *fields = json_object_get(doc, "fields");
    const char *key;
    const json_t *v;
    json_object_foreach(doc, key, v) {
        if (strcmp(key, "rules") && strcmp(key, "fields")) {
            rc = dspy__err(err, DSPY_EINVAL, "%s: unknown key \"%s\" (rules, fields)", path, key);
            goto out;
        }
    }
    if (!json_is_array(rules) || !json_array_size(rules)) {
        rc = dspy__err(err, DSPY_EINVAL, "%s: \"rules\" must be a non-empty array", path);
        goto out;
    }
    if (fields && (rc = strings_of(fields, false, &s->fields, &s->nfields))) {
        if (rc == DSPY_EINVAL)
            dspy__err(err, rc, "%s: \"fields\" must be a non-empty array of field names", path);
        goto out;
    }
    if (!(s->rules = dspy_calloc(json_array_size(rules), sizeof(*s->rules)))) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < json_array_size(rules); i++) {
        s->nrules = i + 1; /* what the free must release */
        if ((rc = parse_rule(s, json_array_get(rules, i), i, path, err)))
            goto out;
    }
out:
    if (rc && err && !err->file[0])
        dspy__err_file(err, path);
    json_decref(doc);
    return rc;
}

dspy_status dspy_selector_new(const char *const *models, size_t n, const dspy_price_table *prices,
                              const char *rules_path, dspy_selector **out, struct dspy_error *err)
{
    if (!out || !models || n < 1 || n > DSPY_SELECT_MAX_MODELS)
        return dspy__err(err, DSPY_EINVAL, "the selector needs 1 to %d candidate models",
                         DSPY_SELECT_MAX_MODELS);
    dspy_selector *s = dspy_calloc(1, sizeof(*s));
    dspy_status rc = DSPY_OK;
    if (!s)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    for (size_t i = 0; i < n && !rc; i++) {
        struct candidate c = { NULL, { 0, 0 } };
        if (!models[i] || !*models[i])
            rc = dspy__err(err, DSPY_EINVAL, "candidate model %zu is empty", i + 1);
        else if (candidate_index(s, models[i]) >= 0)
            rc = dspy__err(err, DSPY_EINVAL, "candidate model %s is named twice", models[i]);
        else if (!dspy_price_lookup(prices, models[i], &c.price))
            rc = dspy__err(err, DSPY_EINVAL,
                           "no price for candidate model %s: the selector picks the cheapest "
                           "model, so each needs one (--prices FILE)",
                           models[i]);
        else if (!(c.model = dspy_strdup(models[i])))
            rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        if (rc)
            break;
        /* insertion by price, after equals: ties keep the given order */
        size_t at = s->n;
        while (at > 0 && call_price(&s->c[at - 1].price) > call_price(&c.price)) {
            s->c[at] = s->c[at - 1];
            at--;
        }
        s->c[at] = c;
        s->n++;
    }
    if (!rc && rules_path)
        rc = load_rules(s, rules_path, err);
    if (rc) {
        dspy_selector_free(s);
        return rc;
    }
    *out = s;
    return DSPY_OK;
}

size_t dspy_selector_count(const dspy_selector *s)
{
    return s ? s->n : 0;
}

const char *dspy_selector_model(const dspy_selector *s, size_t i)
{
    return s && i < s->n ? s->c[i].model : NULL;
}

static bool field_read(const dspy_selector *s, const char *name)
{
    if (!s->fields)
        return true;
    for (size_t i = 0; i < s->nfields; i++)
        if (!strcmp(s->fields[i], name))
            return true;
    return false;
}

/* The text the rules read: the chosen input values, strings as they are, others as JSON,
 * one per line. NULL on allocation failure. */
static char *record_text(const dspy_selector *s, const json_t *inputs)
{
    size_t len = 0, cap = 256;
    char *t = dspy_malloc(cap);
    const char *key;
    const json_t *v;
    if (!t)
        return NULL;
    t[0] = 0;
    json_object_foreach((json_t *)inputs, key, v) {
        if (!field_read(s, key))
            continue;
        char *dumped = json_is_string(v) ? NULL : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        const char *p = json_is_string(v) ? json_string_value(v) : dumped ? dumped : "";
        size_t n = strlen(p);
        if (len + n + 2 > cap) {
            while (len + n + 2 > cap)
                cap *= 2;
            char *g = dspy_realloc(t, cap);
            if (!g) {
                dspy_free(dumped); /* jansson allocates through dspy_malloc */
                dspy_free(t);
                return NULL;
            }
            t = g;
        }
        if (len)
            t[len++] = '\n';
        memcpy(t + len, p, n + 1);
        len += n;
        dspy_free(dumped);
    }
    return t;
}

static bool has_value(const json_t *v)
{
    return v && !json_is_null(v) && !(json_is_string(v) && !json_string_length(v)) &&
           !(json_is_array(v) && !json_array_size(v));
}

int dspy_selector_level(const dspy_selector *s, const json_t *inputs)
{
    if (!s || !s->nrules || !json_is_object(inputs))
        return 0;
    char *text = record_text(s, inputs), *lower = text ? lower_dup(text) : NULL;
    long chars = -1, tokens = -1;
    int level = 0;
    for (size_t i = 0; text && lower && i < s->nrules; i++) {
        const struct rule *u = &s->rules[i];
        bool match = false;
        if (u->level <= level)
            continue;
        switch (u->cond) {
        case COND_CHARS:
            if (chars < 0) { /* characters, not bytes: UTF-8 lead bytes */
                chars = 0;
                for (const char *p = text; *p; p++)
                    chars += ((unsigned char)*p & 0xc0) != 0x80;
            }
            match = chars >= u->min;
            break;
        case COND_TOKENS:
            if (tokens < 0) {
                json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", text);
                tokens = msgs ? dspy_prompt_tokens(msgs) : 0;
                json_decref(msgs);
            }
            match = tokens >= u->min;
            break;
        case COND_KEYWORDS:
            for (size_t w = 0; w < u->nwords && !match; w++)
                match = strstr(lower, u->words[w]) != NULL;
            break;
        case COND_FIELD: match = has_value(json_object_get(inputs, u->field)); break;
        }
        if (match)
            level = u->level;
    }
    dspy_free(text);
    dspy_free(lower);
    return level;
}

size_t dspy_selector_route(const dspy_selector *s, const json_t *inputs)
{
    int level = dspy_selector_level(s, inputs);
    if (s->measured)
        return s->levels[level].model;
    return (size_t)level < s->n ? (size_t)level : s->n - 1;
}

/* The cheapest candidate whose accuracy reaches the bar, else the most accurate. */
static size_t choose(const dspy_selector *s, const double *acc)
{
    size_t best = 0;
    for (size_t i = 0; i < s->n; i++)
        if (acc[i] >= s->bar)
            return i;
    for (size_t i = 1; i < s->n; i++)
        if (acc[i] > acc[best])
            best = i;
    return best;
}

dspy_status dspy_selector_measure(dspy_selector *s, dspy_program *p, dspy_lm *const *lms,
                                  const json_t *devset, const dspy_metric *metric, double bar,
                                  unsigned concurrency, dspy_cost_tally *cost,
                                  struct dspy_error *err)
{
    size_t n = json_array_size(devset);
    int *level = n ? dspy_calloc(n, sizeof(int)) : NULL;
    double all[DSPY_SELECT_MAX_MODELS] = { 0 }, sum[DSPY_SELECT_MAX_LEVEL + 1];
    dspy_status rc = DSPY_OK;
    if (!n)
        return dspy__err(err, DSPY_EINVAL, "the selector's devset is empty");
    if (!level)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    memset(s->levels, 0, sizeof(s->levels));
    for (size_t k = 0; k < n; k++) {
        level[k] = dspy_selector_level(s, json_array_get(devset, k));
        s->levels[level[k]].examples++;
    }
    for (size_t i = 0; i < s->n && !rc; i++) {
        struct dspy_eval_options o = DSPY_EVAL_OPTIONS_INIT;
        struct dspy_eval_result res;
        o.concurrency = concurrency;
        o.keep_predictions = false;
        if ((rc = dspy_evaluate(p, lms[i], devset, metric, &o, &res, err))) {
            dspy__err_prefix(err, "measuring %s", s->c[i].model);
            break;
        }
        memset(sum, 0, sizeof(sum));
        for (size_t k = 0; k < res.n; k++) {
            const struct dspy_call_info *in = &res.items[k].info;
            sum[level[k]] += res.items[k].score;
            if (cost && in->lm_calls && !rc)
                rc = dspy_cost_tally_add(cost, s->c[i].model, in->lm_calls, in->cache_hits,
                                         &in->usage, &in->cached_usage);
        }
        all[i] = res.sum / (double)res.n;
        for (int l = 0; l <= DSPY_SELECT_MAX_LEVEL; l++)
            s->levels[l].accuracy[i] = s->levels[l].examples
                                           ? sum[l] / (double)s->levels[l].examples
                                           : all[i];
        dspy_eval_result_release(&res);
    }
    dspy_free(level);
    if (rc)
        return rc;
    s->bar = bar;
    for (int l = 0; l <= DSPY_SELECT_MAX_LEVEL; l++)
        s->levels[l].model = choose(s, s->levels[l].accuracy);
    s->measured = true;
    return DSPY_OK;
}

json_t *dspy_selector_json(const dspy_selector *s)
{
    json_t *cands = json_array(), *levels = json_array();
    for (size_t i = 0; cands && i < s->n; i++)
        json_array_append_new(cands, json_pack("{s:s, s:f, s:f}", "model", s->c[i].model,
                                               "input_per_1k", s->c[i].price.input_per_1k,
                                               "output_per_1k", s->c[i].price.output_per_1k));
    for (int l = 0; s->measured && levels && l <= s->max_level; l++) {
        json_t *acc = json_object();
        for (size_t i = 0; acc && i < s->n; i++)
            json_object_set_new(acc, s->c[i].model, json_real(s->levels[l].accuracy[i]));
        json_array_append_new(levels,
                              json_pack("{s:i, s:s, s:I, s:o}", "level", l, "model",
                                        s->c[s->levels[l].model].model, "examples",
                                        (json_int_t)s->levels[l].examples, "accuracy", acc));
    }
    json_t *doc = json_pack("{s:o, s:I, s:o, s:o}", "candidates", cands, "rules",
                            (json_int_t)s->nrules, "bar",
                            s->measured ? json_real(s->bar) : json_null(), "levels", levels);
    return doc;
}
