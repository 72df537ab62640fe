/* Unit tests for the one float formatter: Python repr, orjson and orjson 3.8 layouts on
 * hand-picked values, and every power of two a double holds against the vectors Python
 * and orjson wrote (tests/unit/base/data/float_pow2.tsv, from scripts/gen_float_vectors.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fmtfloat.h"

#define POW2 "tests/unit/base/data/float_pow2.tsv"

static void layouts(void **state)
{
    (void)state;
    static const struct {
        double v;
        const char *py, *orjson, *orjson38;
    } cases[] = {
        { 0.7, "0.7", "0.7", "0.7" },
        { 1.0, "1.0", "1.0", "1.0" },
        { 0.0, "0.0", "0.0", "0.0" },
        { -0.0, "-0.0", "-0.0", "-0.0" },
        { 1e20, "1e+20", "1e+20", "1e20" },
        { 1e16, "1e+16", "1e+16", "1e16" },
        { 1e15, "1000000000000000.0", "1000000000000000.0", "1000000000000000.0" },
        { 1.5e-7, "1.5e-07", "1.5e-7", "1.5e-7" },
        { 1e-5, "1e-05", "0.00001", "0.00001" },
        { 1e-6, "1e-06", "1e-6", "1e-6" },
        { 0.0001, "0.0001", "0.0001", "0.0001" },
        { 1.0 / 3, "0.3333333333333333", "0.3333333333333333", "0.3333333333333333" },
        { 0.1 + 0.2, "0.30000000000000004", "0.30000000000000004", "0.30000000000000004" },
        { 123456789012345678.0, "1.2345678901234568e+17", "1.2345678901234568e+17",
          "1.2345678901234568e17" },
        { 12345678.9, "12345678.9", "12345678.9", "12345678.9" },
        { -2.5e-8, "-2.5e-08", "-2.5e-8", "-2.5e-8" },
        { 1000.25, "1000.25", "1000.25", "1000.25" },
        { -764.4155, "-764.4155", "-764.4155", "-764.4155" },
        { 5e-324, "5e-324", "5e-324", "5e-324" },
        { 1.7976931348623157e308, "1.7976931348623157e+308", "1.7976931348623157e+308",
          "1.7976931348623157e308" },
        { 9007199254740993.0, "9007199254740992.0", "9007199254740992.0", "9007199254740992.0" },
        { 1152921504606846976.0, "1.152921504606847e+18", "1.152921504606847e+18",
          "1.152921504606847e18" },
        /* 2^-24: the nearest 16-digit decimal (...062, a tie rounded to even) falls outside
         * the rounding interval, its neighbour (...063) inside */
        { 5.9604644775390625e-08, "5.960464477539063e-08", "5.960464477539063e-8",
          "5.960464477539063e-8" },
    };
    char out[DSPY__FLOAT_MAX];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = dspy__float_fmt(out, cases[i].v, DSPY__FLOAT_PYTHON);
        assert_string_equal(out, cases[i].py);
        assert_int_equal(n, strlen(out));
        dspy__float_fmt(out, cases[i].v, DSPY__FLOAT_ORJSON);
        assert_string_equal(out, cases[i].orjson);
        dspy__float_fmt(out, cases[i].v, DSPY__FLOAT_ORJSON_38);
        assert_string_equal(out, cases[i].orjson38);
    }
    dspy__float_fmt(out, INFINITY, DSPY__FLOAT_PYTHON);
    assert_string_equal(out, "inf");
    dspy__float_fmt(out, -INFINITY, DSPY__FLOAT_PYTHON);
    assert_string_equal(out, "-inf");
    dspy__float_fmt(out, NAN, DSPY__FLOAT_PYTHON);
    assert_string_equal(out, "nan");
    dspy__float_fmt(out, NAN, DSPY__FLOAT_ORJSON);
    assert_string_equal(out, "null");
}

/* orjson 3.8 wrote exponents without '+': the vectors come from a newer orjson. */
static void drop_plus(char *s)
{
    char *p = strstr(s, "e+");
    if (p)
        memmove(p + 1, p + 2, strlen(p + 2) + 1);
}

static void powers_of_two_match_python_and_orjson(void **state)
{
    (void)state;
    FILE *f = fopen(POW2, "r");
    assert_non_null(f);
    char line[256], out[DSPY__FLOAT_MAX];
    int seen = 0;
    while (fgets(line, sizeof(line), f)) {
        if (line[0] == '#')
            continue;
        char *k = strtok(line, "\t\n"), *py = strtok(NULL, "\t\n"), *oj = strtok(NULL, "\t\n");
        assert_non_null(oj);
        double v = ldexp(1.0, atoi(k));
        dspy__float_fmt(out, v, DSPY__FLOAT_PYTHON);
        if (strcmp(out, py))
            fail_msg("2^%s: repr %s, got %s", k, py, out);
        dspy__float_fmt(out, v, DSPY__FLOAT_ORJSON);
        if (strcmp(out, oj))
            fail_msg("2^%s: orjson %s, got %s", k, oj, out);
        dspy__float_fmt(out, -v, DSPY__FLOAT_ORJSON_38);
        drop_plus(oj);
        if (out[0] != '-' || strcmp(out + 1, oj))
            fail_msg("-2^%s: orjson 3.8 -%s, got %s", k, oj, out);
        seen++;
    }
    fclose(f);
    assert_int_equal(seen, 2098); /* 2^-1074 .. 2^1023 */
}

/* Every output reads back as the value it came from, and no shorter text would. */
static void round_trips_and_is_shortest(void **state)
{
    (void)state;
    uint64_t x = 0x9E3779B97F4A7C15u;
    char digits[17], txt[48];
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double v;
        memcpy(&v, &x, sizeof(v));
        v = fabs(v);
        if (!isfinite(v) || v == 0)
            continue;
        int decpt;
        size_t n = dspy__float_digits(v, digits, &decpt);
        snprintf(txt, sizeof(txt), "0.%.*se%d", (int)n, digits, decpt);
        assert_true(strtod(txt, NULL) == v);
        if (n > 1) { /* the correctly rounded n-1 digits do not read back */
            snprintf(txt, sizeof(txt), "%.*e", (int)n - 2, v);
            assert_true(strtod(txt, NULL) != v);
        }
    }
}

/* Digits from numpy's str(np.float32(x)), layout from Python's repr. */
static void float32_repr_is_shortest(void **state)
{
    static const struct {
        float f;
        const char *want;
    } cases[] = {
        { 0.1f, "0.1" },
        { 1.0f / 3, "0.33333334" },
        { 1e-7f, "1e-07" },
        { -0.0023064255f, "-0.0023064255" },
        { 16777217.0f, "16777216.0" },
        { 3.4028235e38f, "3.4028235e+38" },
        { 1e-45f, "1e-45" },
        { 1e16f, "1e+16" },
        { 1e15f, "1000000000000000.0" },
        { 0.0001f, "0.0001" },
        { 1e-5f, "1e-05" },
        { 123456.79f, "123456.79" },
        { 0.5f, "0.5" },
        { 2.5e-05f, "2.5e-05" },
        { 100.0f, "100.0" },
        { 0.0f, "0.0" },
        { -0.0f, "-0.0" },
    };
    char out[DSPY__FLOAT_MAX];
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = dspy__float32_fmt(out, cases[i].f, DSPY__FLOAT_PYTHON);
        assert_string_equal(out, cases[i].want);
        assert_int_equal(n, strlen(cases[i].want));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(layouts),
        cmocka_unit_test(powers_of_two_match_python_and_orjson),
        cmocka_unit_test(round_trips_and_is_shortest),
        cmocka_unit_test(float32_repr_is_shortest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
