/* Unit tests for the per-second time series: counters, time-weighted spans, per-second
 * percentiles within bucket precision, merging and out-of-range values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dspyc/timeseries.h>

#define S 1000000000ull

static void counters_spans_percentiles(void **state)
{
    (void)state;
    uint64_t o = 5 * S;
    dspy_timeseries *a = dspy_timeseries_new(o, 10, 2, 1), *b = dspy_timeseries_new(o, 10, 2, 1);
    assert_non_null(a);
    dspy_timeseries_add(a, 0, o + S / 2, 1);
    dspy_timeseries_add(b, 0, o + S / 3, 2);
    dspy_timeseries_span(a, 1, o + S / 2, o + 2 * S + S / 4); /* 0.5, 1, 0.25 */
    for (uint64_t v = 1; v <= 100; v++)
        dspy_timeseries_record(a, 0, o + 3 * S, v * 1000000);
    dspy_timeseries_add(a, 0, o - 1, 1);      /* before the origin */
    dspy_timeseries_add(a, 0, o + 10 * S, 1); /* past the end */
    assert_int_equal(dspy_timeseries_dropped(a), 2);
    assert_int_equal(dspy_timeseries_merge(a, b), DSPY_OK);
    assert_true(dspy_timeseries_counter(a, 0, 0) == 3);
    assert_true(dspy_timeseries_counter(a, 1, 0) == 0.5);
    assert_true(dspy_timeseries_counter(a, 1, 1) == 1.0);
    assert_true(dspy_timeseries_counter(a, 1, 2) == 0.25);
    assert_int_equal(dspy_timeseries_seconds(a), 4);
    assert_int_equal(dspy_timeseries_count(a, 0, 3), 100);
    uint64_t p50 = dspy_timeseries_percentile(a, 0, 3, 50);
    uint64_t p99 = dspy_timeseries_percentile(a, 0, 3, 99);
    assert_true(p50 > 48000000 && p50 < 52500000);
    assert_true(p99 > 95000000 && p99 < 103500000);
    assert_int_equal(dspy_timeseries_percentile(a, 0, 2, 50), 0);
    dspy_timeseries *c = dspy_timeseries_new(o + 1, 10, 2, 1);
    assert_int_equal(dspy_timeseries_merge(a, c), DSPY_EINVAL);
    dspy_timeseries_free(a);
    dspy_timeseries_free(b);
    dspy_timeseries_free(c);
    dspy_timeseries_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = { cmocka_unit_test(counters_spans_percentiles) };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
