/* Unit tests for the retry policy: what is retryable, full-jitter bounds and spread,
 * Retry-After on 429/503 (seconds, HTTP dates in all three forms, milliseconds). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "net/retry.h"

#define MS 1000000ll
#define S 1000000000ll

static void retryable_outcomes(void **state)
{
    (void)state;
    int yes[] = { 408,           429, 500, 502, 503, 504, 599, DSPY_ELM_NETWORK, DSPY_ELM_TIMEOUT,
                  DSPY_ERESOURCE };
    int no[] = { 200,
                 301,
                 400,
                 401,
                 403,
                 404,
                 409,
                 413,
                 422,
                 501,
                 505,
                 DSPY_ETOOBIG,
                 DSPY_ECANCELED,
                 DSPY_EINVAL,
                 DSPY_ENOMEM,
                 DSPY_ELM_BAD_RESPONSE };
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        assert_true(dspy__retry_is_retryable(yes[i]));
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        assert_false(dspy__retry_is_retryable(no[i]));
}

static void full_jitter_bounds(void **state)
{
    (void)state;
    struct dspy__retry_policy p = DSPY__RETRY_POLICY_INIT;
    p.max_attempts = 20;
    p.base_ns = 100 * MS;
    p.cap_ns = 1000 * MS;
    uint64_t rng = 42;
    for (uint32_t attempt = 1; attempt < 20; attempt++) {
        int64_t ceiling = 100 * MS << (attempt - 1 < 10 ? attempt - 1 : 10);
        if (ceiling > 1000 * MS)
            ceiling = 1000 * MS;
        double sum = 0;
        int64_t lo = INT64_MAX, hi = 0;
        for (int i = 0; i < 2000; i++) {
            int64_t d = dspy__retry_next_delay(&p, attempt, 503, -1, &rng);
            assert_true(d >= 0 && d <= ceiling);
            sum += (double)d;
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        /* full jitter: uniform over [0, ceiling], so spread over it, mean near the middle */
        double mean = sum / 2000;
        assert_true(mean > 0.4 * (double)ceiling && mean < 0.6 * (double)ceiling);
        assert_true(lo < ceiling / 10 && hi > ceiling * 9 / 10);
    }
}

static void attempts_are_bounded(void **state)
{
    (void)state;
    struct dspy__retry_policy p = DSPY__RETRY_POLICY_INIT;
    p.max_attempts = 3;
    uint64_t rng = 1;
    assert_true(dspy__retry_next_delay(&p, 1, 500, -1, &rng) >= 0);
    assert_true(dspy__retry_next_delay(&p, 2, DSPY_ELM_NETWORK, -1, &rng) >= 0);
    assert_int_equal(dspy__retry_next_delay(&p, 3, 500, -1, &rng), -1);
    assert_int_equal(dspy__retry_next_delay(&p, 1, 400, -1, &rng), -1);
    assert_int_equal(dspy__retry_next_delay(&p, 1, 200, -1, &rng), -1);
    p.max_attempts = 1;
    assert_int_equal(dspy__retry_next_delay(&p, 1, 500, -1, &rng), -1);
}

static void retry_after_wins_on_429_503(void **state)
{
    (void)state;
    struct dspy__retry_policy p = DSPY__RETRY_POLICY_INIT;
    p.base_ns = 50 * MS;
    uint64_t rng = 7;
    for (int i = 0; i < 100; i++) {
        int64_t d = dspy__retry_next_delay(&p, 1, 429, 2 * S, &rng);
        assert_true(d >= 2 * S && d <= 2 * S + 50 * MS);
        d = dspy__retry_next_delay(&p, 4, 503, 0, &rng);
        assert_true(d >= 0 && d <= 50 * MS);
        /* on a 500, Retry-After is not part of the contract: backoff applies */
        d = dspy__retry_next_delay(&p, 1, 500, 10 * S, &rng);
        assert_true(d >= 0 && d <= 50 * MS);
    }
    p.max_retry_after_ns = 5 * S;
    assert_int_equal(dspy__retry_next_delay(&p, 1, 429, 6 * S, &rng), -1);
    assert_true(dspy__retry_next_delay(&p, 1, 429, 5 * S, &rng) >= 5 * S);
}

static int64_t after(const char *v, time_t now)
{
    return dspy__retry_parse_after(v, strlen(v), now);
}

static void parse_retry_after(void **state)
{
    (void)state;
    assert_int_equal(after("120", 0), 120 * S);
    assert_int_equal(after(" 5 ", 0), 5 * S);
    assert_int_equal(after("0", 0), 0);
    assert_int_equal(after("1.5", 0), 1500 * MS);
    assert_int_equal(after("", 0), -1);
    assert_int_equal(after("soon", 0), -1);
    assert_int_equal(after("5s", 0), -1);
    assert_int_equal(after("-1", 0), -1);
    /* RFC 9110's example date is 784111777 seconds after the epoch */
    time_t t = 784111777;
    assert_int_equal(after("Sun, 06 Nov 1994 08:49:37 GMT", t - 30), 30 * S);
    assert_int_equal(after("Sunday, 06-Nov-94 08:49:37 GMT", t - 30), 30 * S);
    assert_int_equal(after("Sun Nov  6 08:49:37 1994", t - 30), 30 * S);
    assert_int_equal(after("Sun, 06 Nov 1994 08:49:37 GMT", t + 100), 0);
    assert_int_equal(after("Thu, 01 Jan 2026 00:00:00 GMT", 1767225600 - 2), 2 * S);
    assert_int_equal(after("Sun, 06 Nov 1994 08:49:37", t), -1);
    assert_int_equal(after("Sun, 06 Foo 1994 08:49:37 GMT", t), -1);
    assert_int_equal(after("Sun, 06 Nov 1994 25:49:37 GMT", t), -1);
    assert_int_equal(after("Sun, 06 Nov 1994 08:49:37 GMT trailing", t), -1);
    assert_int_equal(dspy__retry_parse_after_ms("250", 3), 250 * MS);
    assert_int_equal(dspy__retry_parse_after_ms(" 12.5", 5), 12500000);
    assert_int_equal(dspy__retry_parse_after_ms("x", 1), -1);
    assert_int_equal(dspy__retry_parse_after_ms("", 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(retryable_outcomes),   cmocka_unit_test(full_jitter_bounds),
        cmocka_unit_test(attempts_are_bounded), cmocka_unit_test(retry_after_wins_on_429_503),
        cmocka_unit_test(parse_retry_after),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
