/* Metric objects (optimize layer): the built-in field metrics (exact match, F1, contains)
 * over DSPy's normalization, C callbacks, and an LM-as-judge program whose output is a
 * score and feedback. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <dspyc/metrics.h>
#include <dspyc/optimize.h>

#include "base/status.h"

enum metric_kind { METRIC_EM, METRIC_F1, METRIC_CONTAINS, METRIC_CUSTOM, METRIC_JUDGE };

struct dspy_metric {
    enum metric_kind kind;
    char *name;
    char *field;       /* built-ins: the labelled field */
    dspy_metric_fn fn; /* custom */
    void *userdata;
    dspy_program *judge; /* judge: borrowed */
    dspy_lm *lm;
    char *score_field, *feedback_field; /* judge outputs */
};

static dspy_metric *metric_alloc(enum metric_kind kind, const char *name)
{
    dspy_metric *m = dspy_calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->kind = kind;
    if (!(m->name = dspy_strdup(name))) {
        dspy_free(m);
        return NULL;
    }
    return m;
}

dspy_status dspy_metric_parse(const char *spec, dspy_metric **out, struct dspy_error *err)
{
    static const struct {
        const char *prefix;
        enum metric_kind kind;
    } kinds[] = { { "exact_match:", METRIC_EM },
                  { "em:", METRIC_EM },
                  { "f1:", METRIC_F1 },
                  { "contains:", METRIC_CONTAINS } };
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        size_t n = strlen(kinds[i].prefix);
        if (strncmp(spec, kinds[i].prefix, n))
            continue;
        const char *field = spec + n;
        if (!*field || strlen(field) > 120 ||
            strspn(field, "abcdefghijklmnopqrstuvwxyz"
                          "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                          "0123456789_") != strlen(field))
            return dspy__err(err, DSPY_EINVAL, "metric '%s': '%s' is not a field name", spec,
                             field);
        dspy_metric *m = metric_alloc(kinds[i].kind, spec);
        if (!m || !(m->field = dspy_strdup(field))) {
            dspy_metric_free(m);
            return dspy__err(err, DSPY_ENOMEM, "out of memory");
        }
        *out = m;
        return DSPY_OK;
    }
    return dspy__err(err, DSPY_EINVAL,
                     "metric '%s' is not exact_match:FIELD, f1:FIELD or contains:FIELD", spec);
}

dspy_metric *dspy_metric_custom(const char *name, dspy_metric_fn fn, void *userdata)
{
    dspy_metric *m = metric_alloc(METRIC_CUSTOM, name ? name : "custom");
    if (m) {
        m->fn = fn;
        m->userdata = userdata;
    }
    return m;
}

/* The judge's score output: named "score", else the first number or bool output. */
static const char *judge_field(const dspy_program *judge, bool score)
{
    size_t n = dspy_program_count(judge);
    const struct dspy_field *first = NULL;
    const dspy_module *last = dspy_program_module((dspy_program *)judge, n - 1);
    const dspy_signature *sig = dspy_module_signature(last);
    for (size_t i = dspy_signature_ninputs(sig); i < dspy_signature_nfields(sig); i++) {
        const struct dspy_field *f = dspy_signature_field(sig, i);
        if (score) {
            if (!strcmp(f->name, "score"))
                return f->name;
            enum dspy_type_kind k = f->type->kind;
            if (!first && (k == DSPY_TYPE_INT || k == DSPY_TYPE_FLOAT || k == DSPY_TYPE_BOOL))
                first = f;
        } else if (!strcmp(f->name, "feedback")) {
            return f->name;
        }
    }
    return first ? first->name : NULL;
}

dspy_status dspy_metric_judge(dspy_program *judge, dspy_lm *lm, dspy_metric **out,
                              struct dspy_error *err)
{
    if (!dspy_program_count(judge))
        return dspy__err(err, DSPY_EINVAL, "the judge program has no predictor");
    const char *sf = judge_field(judge, true), *ff = judge_field(judge, false);
    if (!sf) {
        dspy__err(err, DSPY_EINVAL,
                  "the judge program has no output named 'score' nor any int, float or bool "
                  "output");
        dspy__err_field(err, "score");
        return DSPY_EINVAL;
    }
    char name[160];
    snprintf(name, sizeof(name), "judge:%s", sf);
    dspy_metric *m = metric_alloc(METRIC_JUDGE, name);
    if (!m || !(m->score_field = dspy_strdup(sf)) ||
        (ff && !(m->feedback_field = dspy_strdup(ff)))) {
        dspy_metric_free(m);
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    }
    m->judge = judge;
    m->lm = lm;
    *out = m;
    return DSPY_OK;
}

void dspy_metric_free(dspy_metric *m)
{
    if (!m)
        return;
    dspy_free(m->name);
    dspy_free(m->field);
    dspy_free(m->score_field);
    dspy_free(m->feedback_field);
    dspy_free(m);
}

const char *dspy_metric_name(const dspy_metric *m)
{
    return m->name;
}

const char *dspy_metric_field(const dspy_metric *m)
{
    return m->field;
}

/* A JSON value as text for the substring test: strings as they are, others compact. */
static char *value_text(const json_t *v)
{
    if (json_is_string(v))
        return dspy_strdup(json_string_value(v));
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

static double contains(const json_t *pred, const json_t *gold)
{
    if (json_is_array(gold)) {
        double best = 0;
        size_t i;
        json_t *g;
        json_array_foreach(gold, i, g)
            best = fmax(best, contains(pred, g));
        return best;
    }
    char *p = value_text(pred), *g = value_text(gold);
    char *np = p ? dspy_normalize_text(p) : NULL, *ng = g ? dspy_normalize_text(g) : NULL;
    double r = np && ng && strstr(np, ng) ? 1.0 : 0.0;
    /* value_text may come from jansson (json_dumps): both allocators are dspy_malloc */
    dspy_free(p);
    dspy_free(g);
    dspy_free(np);
    dspy_free(ng);
    return r;
}

static double judge_number(const json_t *v)
{
    if (json_is_boolean(v))
        return json_is_true(v) ? 1.0 : 0.0;
    if (json_is_number(v))
        return json_number_value(v);
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (!strcasecmp(s, "true") || !strcasecmp(s, "yes"))
            return 1.0;
        return strtod(s, NULL);
    }
    return NAN;
}

static dspy_status judge_score(const dspy_metric *m, const json_t *example,
                               const json_t *prediction, double *score, char **feedback,
                               struct dspy_error *err)
{
    json_t *in = json_deep_copy(example), *outs = NULL;
    const char *k;
    json_t *v;
    dspy_status rc;
    if (!in)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    json_object_foreach((json_t *)prediction, k, v) {
        char key[200];
        snprintf(key, sizeof(key), "%s%s", json_object_get(in, k) ? "pred_" : "", k);
        json_object_set(in, key, v);
    }
    rc = dspy_program_call(m->judge, m->lm, in, NULL, &outs, NULL, err);
    if (rc)
        goto out;
    double s = judge_number(json_object_get(outs, m->score_field));
    if (isnan(s)) {
        rc = dspy__err(err, DSPY_EADAPTER, "the judge's '%s' is not a number", m->score_field);
        dspy__err_field(err, m->score_field);
        goto out;
    }
    *score = s < 0 ? 0 : s > 1 ? 1 : s;
    const json_t *fb = m->feedback_field ? json_object_get(outs, m->feedback_field) : NULL;
    if (feedback && json_is_string(fb) && !(*feedback = dspy_strdup(json_string_value(fb))))
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
out:
    json_decref(in);
    json_decref(outs);
    return rc;
}

dspy_status dspy_metric_score(const dspy_metric *m, const json_t *example, const json_t *prediction,
                              const json_t *trace, double *score, char **feedback,
                              struct dspy_error *err)
{
    if (feedback)
        *feedback = NULL;
    switch (m->kind) {
    case METRIC_CUSTOM: return m->fn(m->userdata, example, prediction, trace, score, feedback, err);
    case METRIC_JUDGE: return judge_score(m, example, prediction, score, feedback, err);
    default: break;
    }
    const json_t *gold = json_object_get(example, m->field);
    if (!gold) {
        dspy__err(err, DSPY_EINVAL, "the example has no label '%s'", m->field);
        dspy__err_field(err, m->field);
        return DSPY_EINVAL;
    }
    const json_t *pred = prediction ? json_object_get(prediction, m->field) : NULL;
    if (!pred) {
        dspy__err(err, DSPY_EINVAL, "the prediction has no field '%s'", m->field);
        dspy__err_field(err, m->field);
        return DSPY_EINVAL;
    }
    *score = m->kind == METRIC_EM   ? dspy_metric_exact_match(pred, gold)
             : m->kind == METRIC_F1 ? dspy_metric_f1(pred, gold)
                                    : contains(pred, gold);
    if (feedback) {
        char buf[600];
        char *gt = value_text(gold);
        snprintf(buf, sizeof(buf),
                 *score >= 1.0 ? "Correct: the %s is %s." : "Wrong: the expected %s is %s.",
                 m->field, gt ? gt : "?");
        dspy_free(gt);
        *feedback = dspy_strdup(buf);
    }
    return DSPY_OK;
}
