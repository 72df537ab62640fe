/* Internals shared by the optimizer files (optimize layer): traces, evaluating many
 * candidates at once, the seeded random numbers every optimizer draws from. */
#ifndef DSPY_OPTIMIZE_OPTIMIZE_INT_H
#define DSPY_OPTIMIZE_OPTIMIZE_INT_H

#include <dspyc/optimize.h>

/* The trace of one program run, as DSPy's: an array of {predictor, inputs, outputs}, one
 * per predictor, its inputs taken from the record and the outputs before it. Caller owns;
 * NULL on allocation failure. */
json_t *dspy__program_trace(dspy_program *p, const json_t *inputs, const json_t *outputs);

/* One evaluation of many run at once. */
struct dspy__eval_job {
    dspy_program *program;              /* borrowed */
    const json_t *devset;               /* borrowed */
    const struct dspy_call_config *cfg; /* NULL = the options' */
    struct dspy_eval_result result;     /* out; release it */
    dspy_status rc;
    struct dspy_error err;
};

/* Run every job, several at once on threads that share `concurrency` calls in flight on
 * one LM (the cache answers repeats). Returns when all are done. */
void dspy__evaluate_many(struct dspy__eval_job *jobs, size_t n, dspy_lm *lm,
                         const dspy_metric *metric, const struct dspy_eval_options *o,
                         unsigned concurrency);

/* A small seeded generator (splitmix64): every draw of an optimizer comes from one of
 * these seeded from (seed, purpose, index), so a trial's draws do not depend on the order
 * other trials ran in. */
struct dspy__rng {
    uint64_t s;
};
void dspy__rng_seed(struct dspy__rng *r, uint64_t seed, uint64_t stream, uint64_t index);
uint64_t dspy__rng_next(struct dspy__rng *r);
double dspy__rng_unit(struct dspy__rng *r);                  /* [0, 1) */
size_t dspy__rng_below(struct dspy__rng *r, size_t n);       /* [0, n), n > 0 */
long dspy__rng_range(struct dspy__rng *r, long lo, long hi); /* [lo, hi] */
void dspy__rng_shuffle(struct dspy__rng *r, size_t *idx, size_t n);
/* Pick k of n indices without repetition, in draw order (Python's random.sample). */
void dspy__rng_sample(struct dspy__rng *r, size_t n, size_t k, size_t *out);

/* DSPy's strip_prefix on a proposed instruction, in place: a leading label of up to five
 * words and a colon ("Proposed Instruction: ...") and surrounding double quotes go. */
void dspy__strip_prefix(char *s);

#endif
