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

/* Python's random.Random: MT19937 seeded by init_by_array from the seed's 32-bit words,
 * and the draws of CPython 3.11's random.py on top of it, so that a seed picks what DSPy
 * picks with random.Random(seed). */
#define MT_N 624
#define MT_M 397

static void mt_init(struct dspy__pyrandom *r, uint32_t s)
{
    r->mt[0] = s;
    for (int i = 1; i < MT_N; i++)
        r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->mti = MT_N;
}

void dspy__pyrandom_seed(struct dspy__pyrandom *r, uint64_t seed)
{
    uint32_t key[2] = { (uint32_t)seed, (uint32_t)(seed >> 32) };
    int len = key[1] ? 2 : 1, i = 1, j = 0;
    mt_init(r, 19650218u);
    for (int k = MT_N > len ? MT_N : len; k; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1664525u)) + key[j] +
                   (uint32_t)j;
        i++, j++;
        if (i >= MT_N) {
            r->mt[0] = r->mt[MT_N - 1];
            i = 1;
        }
        if (j >= len)
            j = 0;
    }
    for (int k = MT_N - 1; k; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
        i++;
        if (i >= MT_N) {
            r->mt[0] = r->mt[MT_N - 1];
            i = 1;
        }
    }
    r->mt[0] = 0x80000000u;
}

uint32_t dspy__pyrandom_u32(struct dspy__pyrandom *r)
{
    static const uint32_t mag01[2] = { 0, 0x9908b0dfu };
    uint32_t y;
    if (r->mti >= MT_N) {
        int k;
        for (k = 0; k < MT_N - MT_M; k++) {
            y = (r->mt[k] & 0x80000000u) | (r->mt[k + 1] & 0x7fffffffu);
            r->mt[k] = r->mt[k + MT_M] ^ (y >> 1) ^ mag01[y & 1];
        }
        for (; k < MT_N - 1; k++) {
            y = (r->mt[k] & 0x80000000u) | (r->mt[k + 1] & 0x7fffffffu);
            r->mt[k] = r->mt[k + (MT_M - MT_N)] ^ (y >> 1) ^ mag01[y & 1];
        }
        y = (r->mt[MT_N - 1] & 0x80000000u) | (r->mt[0] & 0x7fffffffu);
        r->mt[MT_N - 1] = r->mt[MT_M - 1] ^ (y >> 1) ^ mag01[y & 1];
        r->mti = 0;
    }
    y = r->mt[r->mti++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    return y ^ (y >> 18);
}

uint64_t dspy__pyrandom_getrandbits(struct dspy__pyrandom *r, unsigned k)
{
    if (k == 0)
        return 0;
    if (k <= 32)
        return dspy__pyrandom_u32(r) >> (32 - k);
    uint64_t lo = dspy__pyrandom_u32(r); /* words least significant first, the last cut */
    uint64_t hi = dspy__pyrandom_u32(r) >> (64 - (k > 64 ? 64 : k));
    return lo | hi << 32;
}

double dspy__pyrandom_random(struct dspy__pyrandom *r)
{
    uint32_t a = dspy__pyrandom_u32(r) >> 5, b = dspy__pyrandom_u32(r) >> 6;
    return ((double)a * 67108864.0 + (double)b) * (1.0 / 9007199254740992.0);
}

size_t dspy__pyrandom_below(struct dspy__pyrandom *r, size_t n)
{
    unsigned k = 0;
    for (size_t v = n; v; v >>= 1)
        k++; /* n.bit_length() */
    uint64_t x = dspy__pyrandom_getrandbits(r, k);
    while (x >= n)
        x = dspy__pyrandom_getrandbits(r, k);
    return (size_t)x;
}

long dspy__pyrandom_randint(struct dspy__pyrandom *r, long a, long b)
{
    return a + (long)dspy__pyrandom_below(r, (size_t)(b - a + 1));
}

void dspy__pyrandom_shuffle(struct dspy__pyrandom *r, size_t *x, size_t n)
{
    for (size_t i = n; i-- > 1;) {
        size_t j = dspy__pyrandom_below(r, i + 1), t = x[i];
        x[i] = x[j];
        x[j] = t;
    }
}

dspy_status dspy__pyrandom_sample(struct dspy__pyrandom *r, size_t n, size_t k, size_t *out)
{
    size_t setsize = 21;
    if (k > n)
        return DSPY_EINVAL; /* "Sample larger than population or is negative" */
    if (k > 5) {            /* setsize += 4 ** ceil(log(k * 3, 4)) */
        size_t p = 1;
        while (p < k * 3)
            p *= 4;
        setsize += p;
    }
    if (n <= setsize) { /* a pool of the indices left */
        size_t *pool = dspy_malloc((n ? n : 1) * sizeof(*pool));
        if (!pool)
            return DSPY_ENOMEM;
        for (size_t i = 0; i < n; i++)
            pool[i] = i;
        for (size_t i = 0; i < k; i++) {
            size_t j = dspy__pyrandom_below(r, n - i);
            out[i] = pool[j];
            pool[j] = pool[n - i - 1];
        }
        dspy_free(pool);
        return DSPY_OK;
    }
    bool *taken = dspy_calloc(n, sizeof(*taken)); /* the selected set */
    if (!taken)
        return DSPY_ENOMEM;
    for (size_t i = 0; i < k; i++) {
        size_t j = dspy__pyrandom_below(r, n);
        while (taken[j])
            j = dspy__pyrandom_below(r, n);
        taken[j] = true;
        out[i] = j;
    }
    dspy_free(taken);
    return DSPY_OK;
}

size_t dspy__pyrandom_choice_weighted(struct dspy__pyrandom *r, const double *w, size_t n)
{
    /* choices(population, weights, k=1): bisect_right on the cumulative weights */
    double total = 0;
    for (size_t i = 0; i < n; i++)
        total += w[i];
    double x = dspy__pyrandom_random(r) * total, cum = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        cum += w[i];
        if (x < cum)
            return i;
    }
    return n - 1;
}
