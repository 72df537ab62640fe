/* The model selector: route each record to the cheapest candidate model expected to meet a
 * quality bar, from a complexity estimate (configurable rules: input length, keywords,
 * fields) or from each model's accuracy measured on a devset (per complexity level when
 * rules are given). See docs/cost.md ("Model selection"). */
#ifndef DSPYC_SELECT_H
#define DSPYC_SELECT_H

#include <jansson.h>

#include <dspyc/common.h>
#include <dspyc/optimize.h>
#include <dspyc/price.h>
#include <dspyc/program.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The most candidate models, and the highest level a rule may give. */
#define DSPY_SELECT_MAX_MODELS 16
#define DSPY_SELECT_MAX_LEVEL 15

/** Threading: dspy_selector_route() and the getters from any thread once set up;
 * dspy_selector_measure() alone. */
typedef struct dspy_selector dspy_selector;

/** A selector over `n` candidate models (names copied), ordered cheapest first by the price
 * of a call of 1,000 prompt and 100 completion tokens (ties keep the given order). A
 * candidate without a price is refused (DSPY_EINVAL naming it), as are duplicates.
 * `rules_path` (NULL: none) is a JSON file of complexity rules (docs/cost.md); errors
 * name the file, the rule's index and the key. */
DSPY_EXTERN dspy_status dspy_selector_new(const char *const *models, size_t n,
                                          const dspy_price_table *prices, const char *rules_path,
                                          dspy_selector **out, struct dspy_error *err);
DSPY_EXTERN void dspy_selector_free(dspy_selector *s);
/** The candidates, cheapest first; names borrowed until the selector is freed. */
DSPY_EXTERN size_t dspy_selector_count(const dspy_selector *s);
DSPY_EXTERN const char *dspy_selector_model(const dspy_selector *s, size_t i);
/** The complexity level of a record (an object of input fields): the highest level of the
 * rules it matches, 0 when none (or no rules). */
DSPY_EXTERN int dspy_selector_level(const dspy_selector *s, const json_t *inputs);
/** Measure every candidate: run `p` on `devset` (a JSON array of examples) with lms[i]
 * for candidate i (in dspy_selector_model order), score with `metric`, and choose for
 * each level the cheapest candidate whose mean score over that level's examples is at
 * least `bar` (a level without examples uses the whole devset; when no candidate
 * reaches the bar, the most accurate one). The measurement's usage is added to `cost` by
 * model (may be NULL). Errors: the evaluation's. */
DSPY_EXTERN dspy_status dspy_selector_measure(dspy_selector *s, dspy_program *p,
                                              dspy_lm *const *lms, const json_t *devset,
                                              const dspy_metric *metric, double bar,
                                              unsigned concurrency, dspy_cost_tally *cost,
                                              struct dspy_error *err);
/** The candidate (index in dspy_selector_model order) for a record: measured, the level's
 * choice; rules alone, the candidate at the record's level (the last one past the end). */
DSPY_EXTERN size_t dspy_selector_route(const dspy_selector *s, const json_t *inputs);
/** What the selector knows, as JSON (caller owns): {"candidates": [{"model",
 * "input_per_1k", "output_per_1k"}], "rules": N, "bar": X or null, "levels": [{"level",
 * "model", "examples", "accuracy": {MODEL: mean score}}]} (levels: measured only). */
DSPY_EXTERN json_t *dspy_selector_json(const dspy_selector *s);

#ifdef __cplusplus
}
#endif
#endif
