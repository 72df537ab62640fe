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

/* Run fn(ctx, i) for i in [0, n) on up to `threads` threads (the caller's among them, at
 * most 64), each taking the next i in turn; returns when all are done. */
void dspy__run_tasks(size_t n, unsigned threads, void (*fn)(void *ctx, size_t i), void *ctx);

/* A small seeded generator (splitmix64): every draw of an optimizer comes from one of
 * these seeded from (seed, purpose, index), so a trial's draws do not depend on the order
 * other trials ran in. */
struct dspy__rng {
    uint64_t s;
};
void dspy__rng_seed(struct dspy__rng *r, uint64_t seed, uint64_t stream, uint64_t index);
uint64_t dspy__rng_next(struct dspy__rng *r);
double dspy__rng_unit(struct dspy__rng *r);            /* [0, 1) */
size_t dspy__rng_below(struct dspy__rng *r, size_t n); /* [0, n), n > 0 */
/* Pick k of n indices without repetition, in draw order (Python's random.sample). */
void dspy__rng_sample(struct dspy__rng *r, size_t n, size_t k, size_t *out);

/* Python's random.Random(seed) (MT19937, CPython 3.11's draws), for the draws DSPy and
 * GEPA make with one, so that a seed picks the examples DSPy picks. */
struct dspy__pyrandom {
    uint32_t mt[624];
    int mti;
};
void dspy__pyrandom_seed(struct dspy__pyrandom *r, uint64_t seed);         /* Random(seed) */
uint32_t dspy__pyrandom_u32(struct dspy__pyrandom *r);                     /* getrandbits(32) */
uint64_t dspy__pyrandom_getrandbits(struct dspy__pyrandom *r, unsigned k); /* k <= 64 */
double dspy__pyrandom_random(struct dspy__pyrandom *r);                    /* random() */
size_t dspy__pyrandom_below(struct dspy__pyrandom *r, size_t n);           /* _randbelow, n > 0 */
long dspy__pyrandom_randint(struct dspy__pyrandom *r, long a, long b);     /* a <= b */
/* shuffle(x) of an index array. */
void dspy__pyrandom_shuffle(struct dspy__pyrandom *r, size_t *x, size_t n);
/* sample(range(n), k) into out (k entries): indices in draw order. DSPY_EINVAL when k > n,
 * DSPY_ENOMEM. */
dspy_status dspy__pyrandom_sample(struct dspy__pyrandom *r, size_t n, size_t k, size_t *out);
/* choice(seq) for a sequence of n > 0 is seq[dspy__pyrandom_below(r, n)]; this is
 * choices(range(n), weights=w, k=1)[0] (the weights' total must be > 0). */
size_t dspy__pyrandom_choice_weighted(struct dspy__pyrandom *r, const double *w, size_t n);

/* DSPy's strip_prefix on a proposed instruction, in place: a leading label of up to five
 * words and a colon ("Proposed Instruction: ...") and surrounding double quotes go. */
void dspy__strip_prefix(char *s);

#endif
