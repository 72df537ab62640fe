/* Unit tests for the latency histogram: exact statistics on known inputs, bounded relative
 * error of percentiles, merging. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>

#include <dspyc/hist.h>

static void small_values_are_exact(void **state)
{
    (void)state;
    dspy_hist *h = dspy_hist_new();
    for (uint64_t v = 1; v <= 100; v++)
        dspy_hist_record(h, v);
    assert_int_equal(dspy_hist_count(h), 100);
    assert_int_equal(dspy_hist_min(h), 1);
    assert_int_equal(dspy_hist_max(h), 100);
    assert_true(dspy_hist_mean(h) > 50.49 && dspy_hist_mean(h) < 50.51);
    /* nearest rank: p50 of 1..100 is 50, p99 is 99, p100 is 100 */
    assert_int_equal(dspy_hist_percentile(h, 50), 50);
    assert_int_equal(dspy_hist_percentile(h, 99), 99);
    assert_int_equal(dspy_hist_percentile(h, 100), 100);
    assert_int_equal(dspy_hist_percentile(h, 0), 1);
    dspy_hist_free(h);
}

static void large_values_within_precision(void **state)
{
    (void)state;
    dspy_hist *h = dspy_hist_new();
    uint64_t values[] = { 1000, 123456, 20000000, 987654321, 3600000000000ull };
    for (size_t i = 0; i < 5; i++) {
        dspy_hist_reset(h);
        dspy_hist_record(h, values[i] / 2);
        dspy_hist_record(h, values[i]);
        dspy_hist_record(h, values[i] * 2);
        uint64_t p50 = dspy_hist_percentile(h, 50);
        double rel = ((double)p50 - (double)values[i]) / (double)values[i];
        assert_true(rel >= 0 && rel < 0.008);
    }
    dspy_hist_free(h);
}

static void merge_adds_counts(void **state)
{
    (void)state;
    dspy_hist *a = dspy_hist_new(), *b = dspy_hist_new();
    for (int i = 0; i < 10; i++)
        dspy_hist_record(a, 10);
    for (int i = 0; i < 30; i++)
        dspy_hist_record(b, 200);
    dspy_hist_merge(a, b);
    assert_int_equal(dspy_hist_count(a), 40);
    assert_int_equal(dspy_hist_percentile(a, 25), 10);
    assert_int_equal(dspy_hist_percentile(a, 26), 200);
    assert_int_equal(dspy_hist_min(a), 10);
    assert_int_equal(dspy_hist_max(a), 200);
    dspy_hist_free(a);
    dspy_hist_free(b);
}

static void empty_is_zero(void **state)
{
    (void)state;
    dspy_hist *h = dspy_hist_new();
    assert_int_equal(dspy_hist_percentile(h, 99), 0);
    assert_int_equal(dspy_hist_min(h), 0);
    assert_true(dspy_hist_mean(h) == 0.0);
    dspy_hist_free(h);
}

/* Sample standard deviation (n - 1), as the reports print it: known small sets, a constant,
 * one value, values far from zero, and a merge giving the same figure as one histogram. */
static void stddev_known_values(void **state)
{
    (void)state;
    dspy_hist *h = dspy_hist_new(), *a = dspy_hist_new(), *b = dspy_hist_new();
    uint64_t v[] = { 2, 4, 4, 4, 5, 5, 7, 9 }; /* sum of squared deviations 32 */
    for (size_t i = 0; i < 8; i++) {
        dspy_hist_record(h, v[i]);
        dspy_hist_record(i % 2 ? a : b, v[i]);
    }
    assert_true(fabs(dspy_hist_stddev(h) - sqrt(32.0 / 7.0)) < 1e-9);
    dspy_hist_merge(a, b);
    assert_true(fabs(dspy_hist_stddev(a) - dspy_hist_stddev(h)) < 1e-9);

    dspy_hist_reset(h);
    dspy_hist_record(h, 42);
    assert_true(dspy_hist_stddev(h) == 0.0); /* one value */
    for (int i = 0; i < 10; i++)
        dspy_hist_record(h, 42);
    assert_true(dspy_hist_stddev(h) == 0.0); /* a constant */

    /* one second in ns plus 0..999 us: the stddev of 0..999 (288.82 us), not lost to
     * rounding of the large offset */
    dspy_hist_reset(h);
    for (uint64_t i = 0; i < 1000; i++)
        dspy_hist_record(h, 1000000000ull + i * 1000);
    double want = sqrt(1000.0 * 1001.0 / 12.0) * 1000.0;
    assert_true(fabs(dspy_hist_stddev(h) - want) / want < 1e-6);
    dspy_hist_free(h);
    dspy_hist_free(a);
    dspy_hist_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(small_values_are_exact), cmocka_unit_test(large_values_within_precision),
        cmocka_unit_test(merge_adds_counts),      cmocka_unit_test(empty_is_zero),
        cmocka_unit_test(stddev_known_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
