/* Latency histograms: fixed memory, mergeable, log-linear buckets (HDR-style) with better
 * than 0.8 % relative precision from 1 ns to hours. Exact count, min, max and mean. */
#ifndef DSPYC_HIST_H
#define DSPYC_HIST_H

#include <dspyc/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Threading: not synchronized; give each thread its own and merge them. */
typedef struct dspy_hist dspy_hist;

/** NULL on allocation failure. About 60 KiB each. */
DSPY_EXTERN dspy_hist *dspy_hist_new(void);
DSPY_EXTERN void dspy_hist_free(dspy_hist *h);
DSPY_EXTERN void dspy_hist_reset(dspy_hist *h);
/** Record one value (any unit; dspyc records nanoseconds). */
DSPY_EXTERN void dspy_hist_record(dspy_hist *h, uint64_t value);
/** Add every value recorded in `src` to `dst`. */
DSPY_EXTERN void dspy_hist_merge(dspy_hist *dst, const dspy_hist *src);

DSPY_EXTERN uint64_t dspy_hist_count(const dspy_hist *h);
DSPY_EXTERN uint64_t dspy_hist_min(const dspy_hist *h);
DSPY_EXTERN uint64_t dspy_hist_max(const dspy_hist *h);
DSPY_EXTERN double dspy_hist_mean(const dspy_hist *h);
DSPY_EXTERN double dspy_hist_stddev(const dspy_hist *h);
/** Nearest-rank percentile (p in [0, 100]): the smallest recorded value such that at least
 * p % of values are <= it, reported as the upper edge of its bucket, clamped to
 * [min, max]. 0 for an empty histogram. */
DSPY_EXTERN uint64_t dspy_hist_percentile(const dspy_hist *h, double p);

#ifdef __cplusplus
}
#endif
#endif
