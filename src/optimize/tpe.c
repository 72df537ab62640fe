/* The TPE sampler (optimize layer): observations split into a good group (the best
 * gamma(n)) and the rest, a Parzen mixture over each (one categorical kernel per
 * observation plus a uniform prior component), candidates drawn from the good mixture
 * and the one with the largest l(x)/g(x) suggested. Written by hand (see tpe.h). */
#include <math.h>
#include <string.h>

#include "optimize/tpe.h"

dspy_status dspy__tpe_init(struct dspy__tpe *t, size_t ndims, const size_t *nchoices)
{
    memset(t, 0, sizeof(*t));
    if (!ndims || ndims > DSPY__TPE_MAX_DIMS)
        return DSPY_EINVAL;
    for (size_t d = 0; d < ndims; d++) {
        if (!nchoices[d])
            return DSPY_EINVAL;
        t->nchoices[d] = nchoices[d];
    }
    t->ndims = ndims;
    t->n_startup = 10;
    t->n_ei_candidates = 24;
    t->prior_weight = 1.0;
    return DSPY_OK;
}

void dspy__tpe_release(struct dspy__tpe *t)
{
    dspy_free(t->obs);
    dspy_free(t->values);
    memset(t, 0, sizeof(*t));
}

dspy_status dspy__tpe_observe(struct dspy__tpe *t, const size_t *x, double value)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 16;
        size_t *obs = dspy_realloc(t->obs, cap * t->ndims * sizeof(*obs));
        if (!obs)
            return DSPY_ENOMEM;
        t->obs = obs;
        double *v = dspy_realloc(t->values, cap * sizeof(*v));
        if (!v)
            return DSPY_ENOMEM;
        t->values = v;
        t->cap = cap;
    }
    memcpy(t->obs + t->n * t->ndims, x, t->ndims * sizeof(*x));
    t->values[t->n++] = value;
    return DSPY_OK;
}

size_t dspy__tpe_n_below(size_t n)
{
    size_t k = (size_t)ceil(0.1 * (double)n);
    return k < 25 ? k : 25;
}

/* Log density of x under the mixture of the observations `members` (plus the prior). */
static double log_mixture(const struct dspy__tpe *t, const size_t *members, size_t m,
                          const size_t *x)
{
    double total = 0;
    /* the prior component: uniform over every dimension */
    double prior = 1.0;
    for (size_t d = 0; d < t->ndims; d++)
        prior /= (double)t->nchoices[d];
    total += prior;
    for (size_t i = 0; i < m; i++) {
        const size_t *o = t->obs + members[i] * t->ndims;
        double p = 1.0;
        for (size_t d = 0; d < t->ndims; d++) {
            double k = (double)t->nchoices[d];
            p *= ((o[d] == x[d] ? 1.0 : 0.0) + t->prior_weight / k) / (1.0 + t->prior_weight);
        }
        total += p;
    }
    return log(total / (double)(m + 1));
}

/* Draw a point from the mixture: pick a component, then each dimension from its kernel. */
static void draw(const struct dspy__tpe *t, const size_t *members, size_t m, struct dspy__rng *rng,
                 size_t *x)
{
    size_t c = dspy__rng_below(rng, m + 1);
    for (size_t d = 0; d < t->ndims; d++) {
        size_t k = t->nchoices[d];
        if (c == m) {
            x[d] = dspy__rng_below(rng, k);
            continue;
        }
        size_t own = t->obs[members[c] * t->ndims + d];
        /* kernel: own choice with weight 1 + w/k, every other with w/k */
        double u = dspy__rng_unit(rng) * (1.0 + t->prior_weight);
        if (u < 1.0)
            x[d] = own;
        else
            x[d] = dspy__rng_below(rng, k);
    }
}

void dspy__tpe_suggest(const struct dspy__tpe *t, struct dspy__rng *rng, size_t *x)
{
    if (t->n < t->n_startup || t->n < 2) {
        for (size_t d = 0; d < t->ndims; d++)
            x[d] = dspy__rng_below(rng, t->nchoices[d]);
        return;
    }
    size_t n = t->n, *order = dspy_malloc(n * sizeof(*order));
    size_t cand[DSPY__TPE_MAX_DIMS];
    if (!order) {
        for (size_t d = 0; d < t->ndims; d++)
            x[d] = dspy__rng_below(rng, t->nchoices[d]);
        return;
    }
    /* best first; ties keep observation order (a stable insertion sort: n is small) */
    for (size_t i = 0; i < n; i++) {
        size_t j = i;
        while (j > 0 && t->values[order[j - 1]] < t->values[i]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    size_t nb = dspy__tpe_n_below(n);
    double best = -INFINITY;
    for (size_t c = 0; c < t->n_ei_candidates; c++) {
        draw(t, order, nb, rng, cand);
        double score = log_mixture(t, order, nb, cand) - log_mixture(t, order + nb, n - nb, cand);
        if (score > best) {
            best = score;
            memcpy(x, cand, t->ndims * sizeof(*x));
        }
    }
    dspy_free(order);
}
