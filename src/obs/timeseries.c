/* Per-second time series (obs layer): one lazily allocated block per second with counters
 * and 16-per-octave latency histograms, so memory follows the run's length, not its rate. */
#include <string.h>

#include <dspyc/timeseries.h>

#define SUB 16u
#define NBUCKETS 720u /* octaves up to 2^48 ns (about 78 hours) */

struct second {
    double *counters;
    uint32_t *hist;   /* nchannels * NBUCKETS */
    uint64_t *counts; /* per channel */
};

struct dspy_timeseries {
    uint64_t origin_ns;
    uint32_t max_seconds, used;
    unsigned ncounters, nchannels;
    uint64_t dropped;
    struct second **secs;
};

dspy_timeseries *dspy_timeseries_new(uint64_t origin_ns, uint32_t max_seconds, unsigned ncounters,
                                     unsigned nchannels)
{
    if (!max_seconds || (!ncounters && !nchannels))
        return NULL;
    dspy_timeseries *ts = dspy_calloc(1, sizeof(*ts));
    if (!ts)
        return NULL;
    ts->secs = dspy_calloc(max_seconds, sizeof(*ts->secs));
    if (!ts->secs) {
        dspy_free(ts);
        return NULL;
    }
    ts->origin_ns = origin_ns;
    ts->max_seconds = max_seconds;
    ts->ncounters = ncounters;
    ts->nchannels = nchannels;
    return ts;
}

void dspy_timeseries_free(dspy_timeseries *ts)
{
    if (!ts)
        return;
    for (uint32_t i = 0; i < ts->max_seconds; i++)
        dspy_free(ts->secs[i]);
    dspy_free(ts->secs);
    dspy_free(ts);
}

/* One allocation per second: the block header, counters, counts and histograms. */
static struct second *second_at(dspy_timeseries *ts, uint32_t s)
{
    if (ts->secs[s])
        return ts->secs[s];
    size_t size = sizeof(struct second) + ts->ncounters * sizeof(double) +
                  ts->nchannels * sizeof(uint64_t) +
                  (size_t)ts->nchannels * NBUCKETS * sizeof(uint32_t);
    struct second *b = dspy_calloc(1, size);
    if (!b)
        return NULL;
    b->counters = (double *)(b + 1);
    b->counts = (uint64_t *)(b->counters + ts->ncounters);
    b->hist = (uint32_t *)(b->counts + ts->nchannels);
    ts->secs[s] = b;
    if (s + 1 > ts->used)
        ts->used = s + 1;
    return b;
}

static struct second *lookup(dspy_timeseries *ts, uint64_t t_ns)
{
    if (t_ns < ts->origin_ns || (t_ns - ts->origin_ns) / 1000000000u >= ts->max_seconds) {
        ts->dropped++;
        return NULL;
    }
    struct second *b = second_at(ts, (uint32_t)((t_ns - ts->origin_ns) / 1000000000u));
    if (!b)
        ts->dropped++;
    return b;
}

void dspy_timeseries_add(dspy_timeseries *ts, unsigned c, uint64_t t_ns, double v)
{
    struct second *b = c < ts->ncounters ? lookup(ts, t_ns) : NULL;
    if (b)
        b->counters[c] += v;
}

void dspy_timeseries_span(dspy_timeseries *ts, unsigned c, uint64_t from_ns, uint64_t to_ns)
{
    if (c >= ts->ncounters || to_ns <= from_ns)
        return;
    if (from_ns < ts->origin_ns)
        from_ns = ts->origin_ns;
    while (from_ns < to_ns) {
        uint64_t sec_end = ts->origin_ns +
                           ((from_ns - ts->origin_ns) / 1000000000u + 1) * 1000000000u;
        uint64_t e = to_ns < sec_end ? to_ns : sec_end;
        struct second *b = lookup(ts, from_ns);
        if (!b)
            return;
        b->counters[c] += (double)(e - from_ns) / 1e9;
        from_ns = e;
    }
}

static unsigned bucket_of(uint64_t v)
{
    if (v < SUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    unsigned idx = (e - 3u) * SUB + (unsigned)((v >> (e - 4u)) & (SUB - 1u));
    return idx < NBUCKETS ? idx : NBUCKETS - 1;
}

static uint64_t bucket_mid(unsigned idx)
{
    if (idx < SUB)
        return idx;
    unsigned e = idx / SUB + 3u, sub = idx % SUB;
    uint64_t lo = (uint64_t)(SUB + sub) << (e - 4u);
    return lo + ((uint64_t)1 << (e - 4u)) / 2;
}

void dspy_timeseries_record(dspy_timeseries *ts, unsigned ch, uint64_t t_ns, uint64_t value_ns)
{
    struct second *b = ch < ts->nchannels ? lookup(ts, t_ns) : NULL;
    if (!b)
        return;
    b->hist[ch * NBUCKETS + bucket_of(value_ns)]++;
    b->counts[ch]++;
}

dspy_status dspy_timeseries_merge(dspy_timeseries *dst, const dspy_timeseries *src)
{
    if (dst->origin_ns != src->origin_ns || dst->max_seconds != src->max_seconds ||
        dst->ncounters != src->ncounters || dst->nchannels != src->nchannels)
        return DSPY_EINVAL;
    dst->dropped += src->dropped;
    for (uint32_t s = 0; s < src->used; s++) {
        const struct second *a = src->secs[s];
        if (!a)
            continue;
        struct second *b = second_at(dst, s);
        if (!b)
            return DSPY_ENOMEM;
        for (unsigned c = 0; c < dst->ncounters; c++)
            b->counters[c] += a->counters[c];
        for (unsigned ch = 0; ch < dst->nchannels; ch++)
            b->counts[ch] += a->counts[ch];
        for (size_t i = 0; i < (size_t)dst->nchannels * NBUCKETS; i++)
            b->hist[i] += a->hist[i];
    }
    return DSPY_OK;
}

uint32_t dspy_timeseries_seconds(const dspy_timeseries *ts)
{
    return ts->used;
}

double dspy_timeseries_counter(const dspy_timeseries *ts, unsigned c, uint32_t s)
{
    if (s >= ts->used || c >= ts->ncounters || !ts->secs[s])
        return 0;
    return ts->secs[s]->counters[c];
}

uint64_t dspy_timeseries_count(const dspy_timeseries *ts, unsigned ch, uint32_t s)
{
    if (s >= ts->used || ch >= ts->nchannels || !ts->secs[s])
        return 0;
    return ts->secs[s]->counts[ch];
}

uint64_t dspy_timeseries_percentile(const dspy_timeseries *ts, unsigned ch, uint32_t s, double p)
{
    uint64_t n = dspy_timeseries_count(ts, ch, s);
    if (!n)
        return 0;
    const uint32_t *h = ts->secs[s]->hist + (size_t)ch * NBUCKETS;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)n + 0.999999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < NBUCKETS; i++) {
        seen += h[i];
        if (seen >= rank)
            return bucket_mid(i);
    }
    return bucket_mid(NBUCKETS - 1);
}

uint64_t dspy_timeseries_dropped(const dspy_timeseries *ts)
{
    return ts->dropped;
}
