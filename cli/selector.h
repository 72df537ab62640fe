/* The model selector's flags for `dspyc run` and `dspyc eval` (apps layer): --models,
 * --select rules:FILE / measured:DEV.jsonl and --quality-bar, the candidates' LM handles
 * and the route of each record. */
#ifndef DSPYC_CLI_SELECTOR_H
#define DSPYC_CLI_SELECTOR_H

#include <getopt.h>
#include <stdbool.h>

#include <dspyc/dspyc.h>

#include "endpoint.h"

enum {
    SELECT_OPT_MODELS = 1200,
    SELECT_OPT_SELECT,
    SELECT_OPT_QUALITY_BAR,
};

#define SELECT_LONG_OPTIONS                                            \
    { "models", required_argument, NULL, SELECT_OPT_MODELS },          \
        { "select", required_argument, NULL, SELECT_OPT_SELECT },      \
    {                                                                  \
        "quality-bar", required_argument, NULL, SELECT_OPT_QUALITY_BAR \
    }

#define SELECT_USAGE                                                                      \
    "model selection (docs/cost.md):\n"                                                   \
    "  --models A,B,C        candidate models of the endpoint; each record goes to the\n" \
    "                        cheapest one expected to meet the bar (by --prices)\n"       \
    "  --select rules:FILE   complexity rules (JSON: min_tokens, min_chars, keywords,\n"  \
    "                        has_field -> level); rules alone send a record of level L\n" \
    "                        to the L-th cheapest candidate\n"                            \
    "  --select measured:DEV.jsonl  measure each candidate's accuracy on DEV first\n"     \
    "                        (--metric), then use the cheapest with accuracy >= the\n"    \
    "                        bar, per rule level when rules are given too\n"              \
    "  --quality-bar X       the bar, a mean metric score in [0, 1] (default 0.8)\n"

struct selector_args {
    const char *models, *rules, *devset;
    double bar;
};

struct selection {
    dspy_selector *sel;                   /* NULL: no selection */
    dspy_lm *lms[DSPY_SELECT_MAX_MODELS]; /* candidate i's, in selector order */
    size_t n;
    long routed[DSPY_SELECT_MAX_MODELS]; /* records sent to each (by the batch's source) */
    dspy_cost_tally *measure_cost;       /* the measurement's calls */
};

void selector_args_init(struct selector_args *a);
/* 1 when `opt` was one of these flags, 0 when not, -1 after printing why it is bad. */
int selector_option(struct selector_args *a, const char *cmd, int opt, const char *arg);
/* Open the selection when --models was given (else leave it empty and return 0): the rules,
 * an LM per candidate from `ep` and, with measured:, the measurement of `p` with `metric`
 * (printing each candidate's accuracy unless quiet). -1 after printing why. */
int selection_open(struct selection *s, const char *cmd, const struct selector_args *a,
                   struct endpoint *ep, const dspy_price_table *prices, dspy_program *p,
                   const dspy_metric *metric, unsigned concurrency, bool quiet);
void selection_close(struct selection *s);
/* The batch LM of a record: 1 + its candidate (lms[i] as dspy_batch_options.lms). */
unsigned selection_route(void *selection, const json_t *inputs);
/* The model of a batch LM index (0 = the endpoint's `fallback`). */
const char *selection_model(const struct selection *s, unsigned lm, const char *fallback);
/* The summary line of records routed per model. */
void selection_print(const struct selection *s, FILE *out);
/* The selector's JSON (candidates, measured levels) with "routed": {model: records}. */
json_t *selection_json(const struct selection *s);

#endif
