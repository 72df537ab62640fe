/* Clocks (base layer): monotonic nanoseconds for timing, wall-clock for records. */
#ifndef DSPY_BASE_CLOCK_H
#define DSPY_BASE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t dspy__now_ns(void)
{
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
