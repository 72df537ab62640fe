/* Clocks (base layer): monotonic nanoseconds for timing, wall-clock for records. */
#ifndef DSPY_BASE_CLOCK_H
#define DSPY_BASE_CLOCK_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

/* The clock hook, for tests of the event loops that read this clock (the engine's timers,
 * retries and rate limits; the server's due times): when not 0, the time dspy__now_ns()
 * reads, frozen until a test moves it (dspy__clock_freeze, dspy__clock_advance), so a
 * test steps through seconds of timers without sleeping and without wall-clock bounds.
 * 0 (always, outside tests) is the real monotonic clock. */
extern _Atomic uint64_t dspy__clock_fake_ns;
void dspy__clock_freeze(uint64_t ns); /* 0 = the real clock again */
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

static inline double dspy__wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
