/* The model selector's flags and handles for `dspyc run` and `dspyc eval` (apps layer). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optutil.h"
#include "selector.h"
#include "util.h"

void selector_args_init(struct selector_args *a)
{
    memset(a, 0, sizeof(*a));
    a->bar = 0.8;
}

int selector_option(struct selector_args *a, const char *cmd, int opt, const char *arg)
{
    switch (opt) {
    case SELECT_OPT_MODELS: a->models = arg; return 1;
    case SELECT_OPT_SELECT:
        if (!strncmp(arg, "rules:", 6) && arg[6]) {
            a->rules = arg + 6;
            return 1;
        }
        if (!strncmp(arg, "measured:", 9) && arg[9]) {
            a->devset = arg + 9;
            return 1;
        }
        fprintf(stderr, "dspyc %s: --select: '%s' is not rules:FILE.json or measured:DEV.jsonl\n",
                cmd, arg);
        return -1;
    case SELECT_OPT_QUALITY_BAR:
        return parse_double_flag("--quality-bar", arg, 0, 1, &a->bar) ? -1 : 1;
    default: return 0;
    }
}

/* Called by batch sources, which the batch runs one at a time. */
unsigned selection_route(void *selection, const json_t *inputs)
{
    struct selection *s = selection;
    size_t i = dspy_selector_route(s->sel, inputs);
    s->routed[i]++;
    return (unsigned)i + 1;
}

int selection_open(struct selection *s, const char *cmd, const struct selector_args *a,
                   struct endpoint *ep, const dspy_price_table *prices, dspy_program *p,
                   const dspy_metric *metric, unsigned concurrency, bool quiet)
{
    char buf[2048], *names[DSPY_SELECT_MAX_MODELS + 1];
    struct dspy_error err;
    size_t n = 0;
    memset(s, 0, sizeof(*s));
    if (!a->models) {
        if (a->rules || a->devset) {
            fprintf(stderr, "dspyc %s: --select needs the candidates: --models A,B,...\n", cmd);
            return -1;
        }
        return 0;
    }
    if (!a->rules && !a->devset) {
        fprintf(stderr, "dspyc %s: --models needs --select rules:FILE or measured:DEV.jsonl\n",
                cmd);
        return -1;
    }
    if (a->devset && !metric) {
        fprintf(stderr, "dspyc %s: --select measured: needs --metric\n", cmd);
        return -1;
    }
    snprintf(buf, sizeof(buf), "%s", a->models);
    for (char *t = strtok(buf, ","); t; t = strtok(NULL, ","))
        if (n <= DSPY_SELECT_MAX_MODELS)
            names[n++] = t;
    if (!n || n > DSPY_SELECT_MAX_MODELS) {
        fprintf(stderr, "dspyc %s: --models: name 1 to %d models, comma-separated\n", cmd,
                DSPY_SELECT_MAX_MODELS);
        return -1;
    }
    dspy_error_clear(&err);
    if (dspy_selector_new((const char *const *)names, n, prices, a->rules, &s->sel, &err)) {
        fprintf(stderr, "dspyc %s: --models/--select: %s\n", cmd, err.message);
        return -1;
    }
    const char *model = ep->model;
    for (size_t i = 0; i < n; i++) {
        ep->model = dspy_selector_model(s->sel, i);
        if (!(s->lms[i] = endpoint_open(ep))) {
            ep->model = model;
            selection_close(s);
            return -1;
        }
        s->n++;
    }
    ep->model = model;
    if (a->devset) {
        struct examples dev;
        if (!examples_load(&dev, a->devset, true)) {
            selection_close(s);
            return -1;
        }
        if (!(s->measure_cost = dspy_cost_tally_new(prices, NULL)))
            abort();
        dspy_status rc = dspy_selector_measure(s->sel, p, s->lms, dev.items, metric, a->bar,
                                               concurrency, s->measure_cost, &err);
        examples_release(&dev);
        if (rc) {
            fprintf(stderr, "dspyc %s: --select measured:%s: %s\n", cmd, a->devset, err.message);
            selection_close(s);
            return -1;
        }
    }
    if (!quiet) {
        json_t *j = dspy_selector_json(s->sel);
        size_t k;
        json_t *lv;
        json_array_foreach(json_object_get(j, "levels"), k, lv) {
            fprintf(stderr, "model selection: level %d (%lld dev examples): ",
                    (int)json_integer_value(json_object_get(lv, "level")),
                    (long long)json_integer_value(json_object_get(lv, "examples")));
            const char *m;
            json_t *acc;
            json_object_foreach(json_object_get(lv, "accuracy"), m, acc) {
                fprintf(stderr, "%s %.3f, ", m, json_number_value(acc));
            }
            fprintf(stderr, "bar %.3f -> %s\n", a->bar,
                    json_string_value(json_object_get(lv, "model")));
        }
        json_decref(j);
        if (s->measure_cost) {
            json_t *c = dspy_cost_tally_json(s->measure_cost);
            fputs("model selection: measuring ", stderr);
            print_cost_summary(stderr, c);
            json_decref(c);
        }
    }
    return 0;
}

void selection_close(struct selection *s)
{
    for (size_t i = 0; i < s->n; i++)
        dspy_lm_free(s->lms[i]);
    dspy_selector_free(s->sel);
    dspy_cost_tally_free(s->measure_cost);
    memset(s, 0, sizeof(*s));
}

const char *selection_model(const struct selection *s, unsigned lm, const char *fallback)
{
    return s->sel && lm >= 1 && lm <= s->n ? dspy_selector_model(s->sel, lm - 1) : fallback;
}

void selection_print(const struct selection *s, FILE *out)
{
    if (!s->sel)
        return;
    fputs("model selection: records per model:", out);
    for (size_t i = 0; i < s->n; i++)
        fprintf(out, "%s %s %ld", i ? "," : "", dspy_selector_model(s->sel, i), s->routed[i]);
    fputc('\n', out);
}

json_t *selection_json(const struct selection *s)
{
    if (!s->sel)
        return json_null();
    json_t *j = dspy_selector_json(s->sel), *routed = json_object();
    for (size_t i = 0; j && routed && i < s->n; i++)
        json_object_set_new(routed, dspy_selector_model(s->sel, i),
                            json_integer((json_int_t)s->routed[i]));
    if (j) {
        json_object_set_new(j, "routed", routed);
        json_object_set_new(j, "measure_cost",
                            s->measure_cost ? dspy_cost_tally_json(s->measure_cost) : json_null());
    }
    return j ? j : json_null();
}
