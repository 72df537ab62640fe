/* Per-second time series (obs layer): counters, time-weighted occupancy (e.g. requests in
 * flight) and compact latency histograms per second of a run, mergeable across threads, for
 * load-test reports and live dashboards. */
#ifndef DSPYC_TIMESERIES_H
#define DSPYC_TIMESERIES_H

#include <dspyc/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Threading: not synchronized; give each thread its own and merge them. Seconds are
 * allocated when first touched (about 3 KiB per latency channel per second). */
typedef struct dspy_timeseries dspy_timeseries;

/** A series whose second 0 starts at `origin_ns` (a dspy_clock_ns() value), holding at most
 * `max_seconds` seconds, `ncounters` counters and `nchannels` latency channels per second.
 * NULL on allocation failure or a zero size. */
DSPY_EXTERN dspy_timeseries *dspy_timeseries_new(uint64_t origin_ns, uint32_t max_seconds,
                                                 unsigned ncounters, unsigned nchannels);
DSPY_EXTERN void dspy_timeseries_free(dspy_timeseries *ts);

/** Add `v` to counter `c` in the second holding `t_ns`. Times before the origin or past the
 * last second are counted as dropped. */
DSPY_EXTERN void dspy_timeseries_add(dspy_timeseries *ts, unsigned c, uint64_t t_ns, double v);
/** Add the part of [from_ns, to_ns) that falls in each second, in seconds, to counter `c`:
 * the counter then holds the time-average number of such intervals open in that second. */
DSPY_EXTERN void dspy_timeseries_span(dspy_timeseries *ts, unsigned c, uint64_t from_ns,
                                      uint64_t to_ns);
/** Record a latency (ns) in channel `ch` of the second holding `t_ns`. About 4 % bucket
 * width; percentiles report bucket midpoints. */
DSPY_EXTERN void dspy_timeseries_record(dspy_timeseries *ts, unsigned ch, uint64_t t_ns,
                                        uint64_t value_ns);
/** Add `src` into `dst` (same origin and shape, else DSPY_EINVAL). DSPY_ENOMEM leaves `dst`
 * partly merged. */
DSPY_EXTERN dspy_status dspy_timeseries_merge(dspy_timeseries *dst, const dspy_timeseries *src);

/** Seconds from 0 up to the last one touched. */
DSPY_EXTERN uint32_t dspy_timeseries_seconds(const dspy_timeseries *ts);
DSPY_EXTERN double dspy_timeseries_counter(const dspy_timeseries *ts, unsigned c, uint32_t s);
DSPY_EXTERN uint64_t dspy_timeseries_count(const dspy_timeseries *ts, unsigned ch, uint32_t s);
/** Nearest-rank percentile of channel `ch` in second `s`; 0 when it has no values. */
DSPY_EXTERN uint64_t dspy_timeseries_percentile(const dspy_timeseries *ts, unsigned ch, uint32_t s,
                                                double p);
/** Values that fell outside the series (before its origin or past max_seconds). */
DSPY_EXTERN uint64_t dspy_timeseries_dropped(const dspy_timeseries *ts);

#ifdef __cplusplus
}
#endif
#endif
