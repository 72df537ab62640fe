/* The usage tally (lm layer): LM usage summed by model and priced from the price table, the
 * one accumulator behind every summary's cost (run, eval, optimize, bench). */
#include <string.h>

#include <dspyc/price.h>

struct model_row {
    char *model;
    long calls, cache_hits;
    struct dspy_lm_usage usage, cached;
    struct dspy_price price;
    bool priced;
};

struct dspy_cost_tally {
    const dspy_price_table *prices;
    struct dspy_price flat;
    bool has_flat;
    struct model_row *rows;
    size_t n;
};

dspy_cost_tally *dspy_cost_tally_new(const dspy_price_table *prices, const struct dspy_price *flat)
{
    dspy_cost_tally *t = dspy_calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->prices = prices;
    if (flat) {
        t->flat = *flat;
        t->has_flat = true;
    }
    return t;
}

void dspy_cost_tally_free(dspy_cost_tally *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        dspy_free(t->rows[i].model);
    dspy_free(t->rows);
    dspy_free(t);
}

static struct model_row *row_of(dspy_cost_tally *t, const char *model)
{
    if (!model || !*model)
        model = "unknown";
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->rows[i].model, model))
            return &t->rows[i];
    struct model_row *rows = dspy_realloc(t->rows, (t->n + 1) * sizeof(*rows));
    if (!rows)
        return NULL;
    t->rows = rows;
    struct model_row *r = &rows[t->n];
    memset(r, 0, sizeof(*r));
    if (!(r->model = dspy_strdup(model)))
        return NULL;
    if (t->has_flat) {
        r->price = t->flat;
        r->priced = true;
    } else {
        r->priced = dspy_price_lookup(t->prices, model, &r->price);
    }
    t->n++;
    return r;
}

static void usage_add(struct dspy_lm_usage *a, const struct dspy_lm_usage *b)
{
    if (!b)
        return;
    a->prompt_tokens += b->prompt_tokens;
    a->completion_tokens += b->completion_tokens;
    a->total_tokens += b->total_tokens;
}

dspy_status dspy_cost_tally_add(dspy_cost_tally *t, const char *model, long calls, long cache_hits,
                                const struct dspy_lm_usage *usage,
                                const struct dspy_lm_usage *cached)
{
    struct model_row *r = row_of(t, model);
    if (!r)
        return DSPY_ENOMEM;
    r->calls += calls;
    r->cache_hits += cache_hits;
    usage_add(&r->usage, usage);
    usage_add(&r->cached, cached);
    return DSPY_OK;
}

dspy_status dspy_cost_tally_merge(dspy_cost_tally *t, const dspy_cost_tally *from)
{
    for (size_t i = 0; from && i < from->n; i++) {
        const struct model_row *f = &from->rows[i];
        dspy_status rc = dspy_cost_tally_add(t, f->model, f->calls, f->cache_hits, &f->usage,
                                             &f->cached);
        if (rc)
            return rc;
    }
    return DSPY_OK;
}

static void row_totals(const struct model_row *r, struct dspy_cost_totals *o)
{
    long pin = r->usage.prompt_tokens - r->cached.prompt_tokens;
    long pout = r->usage.completion_tokens - r->cached.completion_tokens;
    memset(o, 0, sizeof(*o));
    o->calls = r->calls;
    o->cache_hits = r->cache_hits;
    o->usage = r->usage;
    o->cached = r->cached;
    o->priced = r->priced;
    if (r->priced) {
        o->usd = dspy_price_cost(&r->price, pin > 0 ? pin : 0, pout > 0 ? pout : 0);
        o->saved_usd = dspy_price_cost(&r->price, r->cached.prompt_tokens,
                                       r->cached.completion_tokens);
    }
}

void dspy_cost_tally_totals(const dspy_cost_tally *t, struct dspy_cost_totals *out)
{
    memset(out, 0, sizeof(*out));
    out->priced = true;
    for (size_t i = 0; t && i < t->n; i++) {
        struct dspy_cost_totals o;
        row_totals(&t->rows[i], &o);
        out->calls += o.calls;
        out->cache_hits += o.cache_hits;
        usage_add(&out->usage, &o.usage);
        usage_add(&out->cached, &o.cached);
        out->usd += o.usd;
        out->saved_usd += o.saved_usd;
        if (o.calls && !o.priced)
            out->priced = false;
    }
}

size_t dspy_cost_tally_count(const dspy_cost_tally *t)
{
    return t ? t->n : 0;
}

const char *dspy_cost_tally_model(const dspy_cost_tally *t, size_t i, struct dspy_cost_totals *out,
                                  struct dspy_price *price, bool *priced)
{
    if (!t || i >= t->n)
        return NULL;
    const struct model_row *r = &t->rows[i];
    if (out)
        row_totals(r, out);
    if (price)
        *price = r->price;
    if (priced)
        *priced = r->priced;
    return r->model;
}

static json_t *totals_json(const struct dspy_cost_totals *o)
{
    return json_pack("{s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "usd", o->usd, "saved_usd",
                     o->saved_usd, "prompt_tokens", (json_int_t)o->usage.prompt_tokens,
                     "completion_tokens", (json_int_t)o->usage.completion_tokens,
                     "cached_prompt_tokens", (json_int_t)o->cached.prompt_tokens,
                     "cached_completion_tokens", (json_int_t)o->cached.completion_tokens, "calls",
                     (json_int_t)o->calls, "cache_hits", (json_int_t)o->cache_hits, "priced",
                     o->priced);
}

json_t *dspy_cost_tally_json(const dspy_cost_tally *t)
{
    struct dspy_cost_totals all;
    dspy_cost_tally_totals(t, &all);
    json_t *doc = totals_json(&all), *by = json_object(), *unpriced = json_array();
    for (size_t i = 0; doc && by && unpriced && i < dspy_cost_tally_count(t); i++) {
        struct dspy_cost_totals o;
        struct dspy_price p;
        bool priced;
        const char *model = dspy_cost_tally_model(t, i, &o, &p, &priced);
        json_t *row = totals_json(&o);
        if (!row)
            break;
        json_object_set_new(row, "input_per_1k", priced ? json_real(p.input_per_1k) : json_null());
        json_object_set_new(row, "output_per_1k",
                            priced ? json_real(p.output_per_1k) : json_null());
        json_object_set_new(by, model, row);
        if (!priced && o.calls)
            json_array_append_new(unpriced, json_string(model));
    }
    if (!doc || !by || !unpriced) {
        json_decref(doc);
        json_decref(by);
        json_decref(unpriced);
        return NULL;
    }
    json_object_set_new(doc, "unpriced", unpriced);
    json_object_set_new(doc, "by_model", by);
    return doc;
}
