/* Metrics for scoring predictions against labels, as DSPy's dspy.evaluate.metrics defines
 * them: text normalization, exact match and token F1. */
#ifndef DSPYC_METRICS_H
#define DSPYC_METRICS_H

#include <jansson.h>

#include <dspyc/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** DSPy's normalize_text for ASCII-compatible text: lower case, ASCII punctuation removed,
 * the articles a/an/the removed as words, runs of white space folded to one space and the
 * ends trimmed. Caller owns the result; NULL on allocation failure. Thread-safe. */
DSPY_EXTERN char *dspy_normalize_text(const char *text);

/** Exact match after normalization (DSPy's EM): 1.0 or 0.0. A JSON value that is not a
 * string is compared by its compact JSON text (so 42 matches "42"). `gold` may be an array:
 * the best over its items. Thread-safe. */
DSPY_EXTERN double dspy_metric_exact_match(const json_t *pred, const json_t *gold);

/** Token-level F1 after normalization (DSPy's F1), in [0, 1]; best over an array `gold`. */
DSPY_EXTERN double dspy_metric_f1(const json_t *pred, const json_t *gold);

#ifdef __cplusplus
}
#endif
#endif
