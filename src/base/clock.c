/* Public clock and the clock hook for tests (base layer). */
#include <dspyc/common.h>

#include "base/clock.h"

uint64_t dspy_clock_ns(void)
{
    return dspy__now_ns();
}

_Atomic uint64_t dspy__clock_fake_ns = 0;
_Atomic int64_t dspy__clock_wall_offset_ns = 0;

void dspy__clock_freeze(uint64_t ns)
{
    /* the wall clock goes on from where it is (the real one, or the frozen one), at the
     * fake clock's pace; the monotonic clock never reads the real time in between */
    uint64_t wall = dspy__wall_ns();
    if (ns)
        atomic_store_explicit(&dspy__clock_wall_offset_ns, (int64_t)(wall - ns),
                              memory_order_relaxed);
    atomic_store_explicit(&dspy__clock_fake_ns, ns, memory_order_relaxed);
}

void dspy__clock_advance(uint64_t ns)
{
    atomic_fetch_add_explicit(&dspy__clock_fake_ns, ns, memory_order_relaxed);
}
