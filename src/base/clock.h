/* Clocks (base layer): monotonic nanoseconds for timing, wall-clock for records. */
#ifndef DSPY_BASE_CLOCK_H
#define DSPY_BASE_CLOCK_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

/* The clock hook, for tests of what reads these clocks (the engine's timers, retries and
 * rate limits; the server's due times; the cache's expiry times): when not 0, the time
 * dspy__now_ns() reads, frozen until a test moves it (dspy__clock_freeze,
 * dspy__clock_advance), so a test steps through seconds of timers and TTLs without
 * sleeping and without wall-clock bounds. The wall clock (dspy__wall_ms, dspy__wall_s)
 * stands still and moves with it, from where it was at the freeze. 0 (always, outside
 * tests) is the real clocks. */
extern _Atomic uint64_t dspy__clock_fake_ns;
extern _Atomic int64_t dspy__clock_wall_offset_ns; /* wall minus fake, set by the freeze */
void dspy__clock_freeze(uint64_t ns);              /* 0 = the real clocks again */
void dspy__clock_advance(uint64_t ns);

static inline uint64_t dspy__now_ns(void)
{
    uint64_t fake = atomic_load_explicit(&dspy__clock_fake_ns, memory_order_relaxed);
    if (fake)
        return fake;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Unix time: for records and for expiry times that outlive the process (disk, Redis). */
static inline uint64_t dspy__wall_ns(void)
{
    uint64_t fake = atomic_load_explicit(&dspy__clock_fake_ns, memory_order_relaxed);
    if (fake)
        return fake +
               (uint64_t)atomic_load_explicit(&dspy__clock_wall_offset_ns, memory_order_relaxed);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t dspy__wall_ms(void)
{
    return dspy__wall_ns() / 1000000u;
}

static inline double dspy__wall_s(void)
{
    return (double)dspy__wall_ns() / 1e9;
}

#endif
