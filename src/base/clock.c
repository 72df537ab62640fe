/* Public clock and the clock hook for tests (base layer). */
#include <dspyc/common.h>

#include "base/clock.h"

uint64_t dspy_clock_ns(void)
{
    return dspy__now_ns();
}

_Atomic uint64_t dspy__clock_fake_ns = 0;

void dspy__clock_freeze(uint64_t ns)
{
    atomic_store_explicit(&dspy__clock_fake_ns, ns, memory_order_relaxed);
}

void dspy__clock_advance(uint64_t ns)
{
    atomic_fetch_add_explicit(&dspy__clock_fake_ns, ns, memory_order_relaxed);
}
