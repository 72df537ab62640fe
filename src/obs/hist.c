/* Log-linear latency histogram (obs layer). Values below 256 get a bucket each; above,
 * each power of two is split into 128 equal buckets, so a bucket is at most 1/128 of its
 * value wide. Fixed size, no allocation when recording, mergeable by adding counts. */
#include <math.h>
#include <string.h>

#include <dspyc/hist.h>

#define SUB_BITS 8
#define SUB_COUNT (1u << SUB_BITS) /* 256 exact buckets for small values */
#define HALF_COUNT (SUB_COUNT / 2) /* buckets per power of two above them */
#define NBUCKETS (SUB_COUNT + (64 - SUB_BITS) * HALF_COUNT)

struct dspy_hist {
    uint64_t count;
    uint64_t min;
    uint64_t max;
    double sum;
    double sumsq;
    uint64_t buckets[NBUCKETS];
};

static size_t bucket_of(uint64_t v)
{
    if (v < SUB_COUNT)
        return (size_t)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - (SUB_BITS - 1); /* v >> shift lies in [128, 255] */
    return SUB_COUNT + (size_t)(shift - 1) * HALF_COUNT + (size_t)((v >> shift) - HALF_COUNT);
}

/* Largest value that falls into bucket i. */
static uint64_t bucket_top(size_t i)
{
    if (i < SUB_COUNT)
        return i;
    size_t j = i - SUB_COUNT;
    unsigned shift = (unsigned)(j / HALF_COUNT) + 1;
    uint64_t lead = (uint64_t)(j % HALF_COUNT) + HALF_COUNT;
    uint64_t low = lead << shift;
    return low + ((1ull << shift) - 1);
}

dspy_hist *dspy_hist_new(void)
{
    dspy_hist *h = dspy_malloc(sizeof(*h));
    if (h)
        dspy_hist_reset(h);
    return h;
}

void dspy_hist_free(dspy_hist *h)
{
    dspy_free(h);
}

void dspy_hist_reset(dspy_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

void dspy_hist_record(dspy_hist *h, uint64_t value)
{
    h->buckets[bucket_of(value)]++;
    h->count++;
    if (value < h->min)
        h->min = value;
    if (value > h->max)
        h->max = value;
    h->sum += (double)value;
    h->sumsq += (double)value * (double)value;
}

void dspy_hist_merge(dspy_hist *dst, const dspy_hist *src)
{
    if (!src->count)
        return;
    for (size_t i = 0; i < NBUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
    dst->count += src->count;
    dst->sum += src->sum;
    dst->sumsq += src->sumsq;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t dspy_hist_count(const dspy_hist *h)
{
    return h->count;
}

uint64_t dspy_hist_min(const dspy_hist *h)
{
    return h->count ? h->min : 0;
}

uint64_t dspy_hist_max(const dspy_hist *h)
{
    return h->max;
}

double dspy_hist_mean(const dspy_hist *h)
{
    return h->count ? h->sum / (double)h->count : 0.0;
}

double dspy_hist_stddev(const dspy_hist *h)
{
    if (h->count < 2)
        return 0.0;
    double n = (double)h->count, mean = h->sum / n;
    double var = (h->sumsq - n * mean * mean) / (n - 1);
    return var > 0 ? sqrt(var) : 0.0;
}

uint64_t dspy_hist_percentile(const dspy_hist *h, double p)
{
    if (!h->count)
        return 0;
    if (p <= 0)
        return h->min;
    if (p > 100)
        p = 100;
    uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)h->count);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < NBUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t v = bucket_top(i);
            return v < h->min ? h->min : v > h->max ? h->max : v;
        }
    }
    return h->max;
}
