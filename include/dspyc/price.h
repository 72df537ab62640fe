/* Prices of LM calls: a table of USD per 1,000 prompt and completion tokens by model, with
 * defaults for common models and a JSON file to override or extend them, and cost
 * estimates from real usage. See docs/retrieve.md ("Cost"). */
#ifndef DSPYC_PRICE_H
#define DSPYC_PRICE_H

#include <jansson.h>

#include <dspyc/common.h>
#include <dspyc/lm.h>

#ifdef __cplusplus
extern "C" {
#endif

struct dspy_price {
    double input_per_1k;  /* USD per 1,000 prompt tokens */
    double output_per_1k; /* USD per 1,000 completion tokens */
};

/** Threading: read-only after creation; any thread may look up. */
typedef struct dspy_price_table dspy_price_table;

/** The default table, then (when `path` is not NULL) a JSON file of
 * {"model": {"input_per_1k": N, "output_per_1k": N}, ...} whose entries replace or add to
 * it. A bad file is refused with its name, line and key. */
DSPY_EXTERN dspy_status dspy_price_table_new(const char *path, dspy_price_table **out,
                                             struct dspy_error *err);
DSPY_EXTERN void dspy_price_table_free(dspy_price_table *t);
/** The price of `model`: the exact name, else without its provider prefix ("openai/"),
 * else the longest table name that is a dated or versioned form's stem
 * ("gpt-4o-mini-2024-07-18" -> "gpt-4o-mini"). False when none; `out` may be NULL. */
DSPY_EXTERN bool dspy_price_lookup(const dspy_price_table *t, const char *model,
                                   struct dspy_price *out);
/** USD for `prompt` and `completion` tokens at price `p`. */
DSPY_EXTERN double dspy_price_cost(const struct dspy_price *p, long prompt, long completion);

/* ---- the usage tally: what a run used and what it cost, by model ----------------------- */

/** Usage summed by model and priced from a table: every summary (run, eval, optimize,
 * bench) fills one with each call's usage and reads its totals or its JSON. Threading: one
 * thread at a time (the caller locks when several threads add). */
typedef struct dspy_cost_tally dspy_cost_tally;

struct dspy_cost_totals {
    long calls, cache_hits;      /* LM calls; of them answered by the cache */
    struct dspy_lm_usage usage;  /* as the endpoint reported it, cache hits included */
    struct dspy_lm_usage cached; /* the part of `usage` cache hits reported */
    double usd;                  /* cost of what was sent upstream (usage - cached) */
    double saved_usd;            /* what the cache hits would have cost */
    bool priced;                 /* every model with calls had a price */
};

/** A tally over `prices` (borrowed until freed; NULL: nothing is priced), or, when `flat`
 * is not NULL, at that one price for every model. NULL on allocation failure. */
DSPY_EXTERN dspy_cost_tally *dspy_cost_tally_new(const dspy_price_table *prices,
                                                 const struct dspy_price *flat);
DSPY_EXTERN void dspy_cost_tally_free(dspy_cost_tally *t);
/** Add `calls` LM calls of `model` (NULL or "" counts as "unknown"; copied): `usage` as
 * reported, cache hits included, and `cached` the part of it `cache_hits` of those calls
 * reported (may be NULL: none). Cache hits cost nothing and count as saved. DSPY_ENOMEM. */
DSPY_EXTERN dspy_status dspy_cost_tally_add(dspy_cost_tally *t, const char *model, long calls,
                                            long cache_hits, const struct dspy_lm_usage *usage,
                                            const struct dspy_lm_usage *cached);
/** Add everything `from` holds to `t`. DSPY_ENOMEM. */
DSPY_EXTERN dspy_status dspy_cost_tally_merge(dspy_cost_tally *t, const dspy_cost_tally *from);
/** The totals over every model. */
DSPY_EXTERN void dspy_cost_tally_totals(const dspy_cost_tally *t, struct dspy_cost_totals *out);
/** The number of models, and the i-th (in order of first use): its name (borrowed until
 * the tally changes or is freed), totals and price (false when it has none). */
DSPY_EXTERN size_t dspy_cost_tally_count(const dspy_cost_tally *t);
DSPY_EXTERN const char *dspy_cost_tally_model(const dspy_cost_tally *t, size_t i,
                                              struct dspy_cost_totals *out,
                                              struct dspy_price *price, bool *priced);
/** As JSON (caller owns; NULL on allocation failure):
 * {"usd", "saved_usd", "prompt_tokens", "completion_tokens", "cached_prompt_tokens",
 *  "cached_completion_tokens", "calls", "cache_hits", "priced", "unpriced": [models],
 *  "by_model": {MODEL: {the same counts, "usd", "saved_usd", "priced",
 *                       "input_per_1k", "output_per_1k" (null when unpriced)}}}.
 * Tokens count what the endpoint reported, cache hits included; "usd" prices what was
 * sent upstream (tokens minus cached tokens). */
DSPY_EXTERN json_t *dspy_cost_tally_json(const dspy_cost_tally *t);

#ifdef __cplusplus
}
#endif
#endif
