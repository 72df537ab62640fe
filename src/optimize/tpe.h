/* The Tree-structured Parzen Estimator over categorical parameters (optimize layer), as
 * Optuna's TPESampler(multivariate=True) samples for MIPROv2. Written here: no packaged C
 * library provides one. */
#ifndef DSPY_OPTIMIZE_TPE_H
#define DSPY_OPTIMIZE_TPE_H

#include <stddef.h>

#include "optimize/optimize_int.h"

#define DSPY__TPE_MAX_DIMS 64

struct dspy__tpe {
    size_t ndims;
    size_t nchoices[DSPY__TPE_MAX_DIMS];
    size_t n, cap;          /* observations */
    size_t *obs;            /* n x ndims choices */
    double *values;         /* n scores, higher is better */
    size_t n_startup;       /* random suggestions before the model (Optuna: 10) */
    size_t n_ei_candidates; /* draws from l(x) scored by l/g (Optuna: 24) */
    double prior_weight;    /* Optuna: 1.0 */
};

/* DSPY_EINVAL for no dimension, too many, or a dimension without choices. */
dspy_status dspy__tpe_init(struct dspy__tpe *t, size_t ndims, const size_t *nchoices);
void dspy__tpe_release(struct dspy__tpe *t);
dspy_status dspy__tpe_observe(struct dspy__tpe *t, const size_t *x, double value);
/* Suggest a point from the observations so far; draws come from `rng`. */
void dspy__tpe_suggest(const struct dspy__tpe *t, struct dspy__rng *rng, size_t *x);
/* Optuna's default gamma: how many of n observations form the "good" group. */
size_t dspy__tpe_n_below(size_t n);

#endif
