/* Public clock (base layer). */
#include <dspyc/common.h>

#include "base/clock.h"

uint64_t dspy_clock_ns(void)
{
    return dspy__now_ns();
}
