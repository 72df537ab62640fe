/* Seeded random numbers for the optimizers (optimize layer): splitmix64 streams keyed by
 * (seed, purpose, index), so every draw is a pure function of the seed and where it is used. */
#include "optimize/optimize_int.h"

static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void dspy__rng_seed(struct dspy__rng *r, uint64_t seed, uint64_t stream, uint64_t index)
{
    r->s = mix(mix(seed + 0x9e3779b97f4a7c15ull) ^ mix(stream * 0x632be59bd9b4e019ull + 1) ^
               mix(index + 0x2545f4914f6cdd1dull));
}

uint64_t dspy__rng_next(struct dspy__rng *r)
{
    r->s += 0x9e3779b97f4a7c15ull;
    return mix(r->s);
}

double dspy__rng_unit(struct dspy__rng *r)
{
    return (double)(dspy__rng_next(r) >> 11) * 0x1.0p-53;
}

size_t dspy__rng_below(struct dspy__rng *r, size_t n)
{
    return (size_t)(dspy__rng_unit(r) * (double)n) % n;
}

long dspy__rng_range(struct dspy__rng *r, long lo, long hi)
{
    return lo + (long)dspy__rng_below(r, (size_t)(hi - lo + 1));
}

void dspy__rng_shuffle(struct dspy__rng *r, size_t *idx, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = dspy__rng_below(r, i), t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}

void dspy__rng_sample(struct dspy__rng *r, size_t n, size_t k, size_t *out)
{
    size_t *pool = dspy_malloc(n ? n * sizeof(*pool) : 1);
    if (!pool) { /* out of memory: the first k, still a pure function of the inputs */
        for (size_t i = 0; i < k && i < n; i++)
            out[i] = i;
        return;
    }
    for (size_t i = 0; i < n; i++)
        pool[i] = i;
    for (size_t i = 0; i < k && i < n; i++) {
        size_t j = i + dspy__rng_below(r, n - i), t = pool[i];
        pool[i] = pool[j];
        pool[j] = t;
        out[i] = pool[i];
    }
    dspy_free(pool);
}
