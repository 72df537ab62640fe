/* Prices of LM calls: a table of USD per 1,000 prompt and completion tokens by model, with
 * defaults for common models and a JSON file to override or extend them, and cost
 * estimates from real usage. See docs/retrieve.md ("Cost"). */
#ifndef DSPYC_PRICE_H
#define DSPYC_PRICE_H

#include <dspyc/common.h>

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

#ifdef __cplusplus
}
#endif
#endif
