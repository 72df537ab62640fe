/* Compatibility helper for tests/compat/test_float.py: reads doubles as 16 hex digits of
 * their bits, one a line, and prints each as Python's repr, as orjson and as orjson 3.8
 * write it (tab-separated), through the one formatter (src/base/fmtfloat.c). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "base/fmtfloat.h"

int main(void)
{
    char line[64], a[DSPY__FLOAT_MAX], b[DSPY__FLOAT_MAX], c[DSPY__FLOAT_MAX];
    while (fgets(line, sizeof(line), stdin)) {
        uint64_t bits;
        double v;
        if (sscanf(line, "%" SCNx64, &bits) != 1)
            return 2;
        memcpy(&v, &bits, sizeof(v));
        dspy__float_fmt(a, v, DSPY__FLOAT_PYTHON);
        dspy__float_fmt(b, v, DSPY__FLOAT_ORJSON);
        dspy__float_fmt(c, v, DSPY__FLOAT_ORJSON_38);
        printf("%s\t%s\t%s\n", a, b, c);
    }
    return 0;
}
