/* Compatibility helper for tests/compat/test_pyrandom.py: reads draw requests, one a line
 * ("seed S", "random", "bits K", "below N", "randint A B", "shuffle N", "sample N K",
 * "choices W1 W2 ..."), and prints what the optimizers' Python-compatible generator
 * (src/optimize/rng.c) draws for each, the way Python prints it. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fmtfloat.h"
#include "optimize/optimize_int.h"

static void print_indices(const size_t *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        printf("%s%zu", i ? " " : "", x[i]);
    printf("\n");
}

int main(void)
{
    static char line[1 << 16];
    struct dspy__pyrandom r;
    dspy__pyrandom_seed(&r, 0);
    while (fgets(line, sizeof(line), stdin)) {
        char op[16];
        uint64_t a = 0, b = 0;
        int got = sscanf(line, "%15s %" SCNu64 " %" SCNu64, op, &a, &b);
        if (got < 1)
            return 2;
        if (!strcmp(op, "seed")) {
            dspy__pyrandom_seed(&r, a);
            printf("ok\n");
        } else if (!strcmp(op, "random")) {
            char f[DSPY__FLOAT_MAX];
            dspy__float_fmt(f, dspy__pyrandom_random(&r), DSPY__FLOAT_PYTHON);
            printf("%s\n", f);
        } else if (!strcmp(op, "bits")) {
            printf("%" PRIu64 "\n", dspy__pyrandom_getrandbits(&r, (unsigned)a));
        } else if (!strcmp(op, "below")) {
            printf("%zu\n", dspy__pyrandom_below(&r, (size_t)a));
        } else if (!strcmp(op, "randint")) {
            printf("%ld\n", dspy__pyrandom_randint(&r, (long)a, (long)b));
        } else if (!strcmp(op, "shuffle") || !strcmp(op, "sample")) {
            size_t n = (size_t)a, k = !strcmp(op, "sample") ? (size_t)b : n;
            size_t *x = malloc((n + 1) * sizeof(*x));
            if (!x)
                return 3;
            if (!strcmp(op, "shuffle")) {
                for (size_t i = 0; i < n; i++)
                    x[i] = i;
                dspy__pyrandom_shuffle(&r, x, n);
            } else if (dspy__pyrandom_sample(&r, n, k, x)) {
                return 4;
            }
            print_indices(x, k);
            free(x);
        } else if (!strcmp(op, "choices")) {
            double w[256];
            size_t n = 0;
            char *p = line + strlen("choices"), *e;
            for (double v; n < 256 && (v = strtod(p, &e), e != p); p = e)
                w[n++] = v;
            printf("%zu\n", dspy__pyrandom_choice_weighted(&r, w, n));
        } else {
            return 2;
        }
    }
    return 0;
}
