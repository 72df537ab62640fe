/* Unit tests for the rate limiter, on a fake clock: request and token buckets, requests
 * larger than the bucket, concurrency, FIFO order, the bounded wait budget, reconciling
 * estimates with real usage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "net/ratelimit.h"

#define MS 1000000ull
#define S 1000000000ull

static struct dspy__ratelimit *limiter(double rpm, double tpm, double burst, uint32_t conc,
                                       size_t waiting)
{
    struct dspy__ratelimit_options o = DSPY__RATELIMIT_OPTIONS_INIT;
    o.requests_per_minute = rpm;
    o.tokens_per_minute = tpm;
    o.burst_s = burst;
    o.max_concurrency = conc;
    o.max_waiting = waiting;
    struct dspy__ratelimit *rl = dspy__ratelimit_new(&o, 0);
    assert_non_null(rl);
    return rl;
}

static void request_bucket(void **state)
{
    (void)state;
    struct dspy__ratelimit *rl = limiter(60, 0, 0, 0, 0); /* 1/s, depth 1 */
    assert_true(dspy__ratelimit_try_acquire(rl, 0, 0));
    assert_false(dspy__ratelimit_try_acquire(rl, 0, 0));
    struct dspy__ratelimit_waiter w = { .tokens = 0 };
    dspy__ratelimit_enqueue(rl, &w, 0);
    uint64_t when = dspy__ratelimit_next_ns(rl, 0);
    assert_true(when >= 1 * S && when <= 1 * S + 1);
    assert_null(dspy__ratelimit_grant(rl, 999 * MS));
    assert_ptr_equal(dspy__ratelimit_grant(rl, when), &w);
    assert_false(w.queued);
    assert_int_equal(dspy__ratelimit_next_ns(rl, 1 * S), UINT64_MAX); /* nobody waits */
    /* over a long run the rate is the configured one */
    int granted = 0;
    for (uint64_t t = 2 * S; t < 62 * S; t += 10 * MS)
        granted += dspy__ratelimit_try_acquire(rl, t, 0);
    assert_int_equal(granted, 60);
    dspy__ratelimit_free(rl);

    rl = limiter(600, 0, 1, 0, 0); /* 10/s, a burst of 10 */
    granted = 0;
    for (int i = 0; i < 20; i++)
        granted += dspy__ratelimit_try_acquire(rl, 0, 0);
    assert_int_equal(granted, 10);
    dspy__ratelimit_free(rl);
}

/* Idle time does not bank capacity: after a minute with no requests at 60/min, one request
 * goes at once (the bucket depth), not sixty; the token bucket is capped the same way. */
static void idle_does_not_bank(void **state)
{
    (void)state;
    struct dspy__ratelimit *rl = limiter(60, 0, 0, 0, 0); /* 1/s, depth 1 */
    assert_true(dspy__ratelimit_try_acquire(rl, 0, 0));
    dspy__ratelimit_release(rl);
    int granted = 0;
    for (int i = 0; i < 60; i++)
        if (dspy__ratelimit_try_acquire(rl, 61 * S, 0)) {
            granted++;
            dspy__ratelimit_release(rl);
        }
    assert_int_equal(granted, 1);
    struct dspy__ratelimit_state st;
    dspy__ratelimit_get_state(rl, 61 * S, &st);
    assert_true(st.request_level < 1.0);
    dspy__ratelimit_free(rl);

    rl = limiter(0, 600, 1, 0, 0); /* 10 tokens/s, depth 10 */
    dspy__ratelimit_get_state(rl, 3600 * S, &st);
    assert_true(st.token_level <= 10.0 + 1e-6);
    granted = 0;
    for (int i = 0; i < 100; i++)
        granted += dspy__ratelimit_try_acquire(rl, 3600 * S, 5);
    assert_int_equal(granted, 2); /* 10 tokens after an hour idle: two requests of 5 */
    dspy__ratelimit_free(rl);
}

static void token_bucket(void **state)
{
    (void)state;
    struct dspy__ratelimit *rl = limiter(0, 600, 1, 0, 0); /* 10 tokens/s, depth 10 */
    assert_true(dspy__ratelimit_try_acquire(rl, 0, 8));
    assert_false(dspy__ratelimit_try_acquire(rl, 0, 8));
    struct dspy__ratelimit_waiter w = { .tokens = 8 };
    dspy__ratelimit_enqueue(rl, &w, 0);
    uint64_t at = dspy__ratelimit_next_ns(rl, 0); /* 2 left, 6 to go at 10/s */
    assert_true(at >= 600 * MS && at <= 600 * MS + 1);
    assert_ptr_equal(dspy__ratelimit_grant(rl, at), &w);
    /* larger than the bucket: goes when the bucket is full, leaving it in debt */
    struct dspy__ratelimit_waiter big = { .tokens = 50 };
    dspy__ratelimit_enqueue(rl, &big, 1 * S);
    assert_null(dspy__ratelimit_grant(rl, 1 * S));
    uint64_t when = dspy__ratelimit_next_ns(rl, 1 * S);
    assert_true(when > 1 * S && when <= 1600 * MS + 1);
    assert_ptr_equal(dspy__ratelimit_grant(rl, when), &big);
    struct dspy__ratelimit_state st;
    dspy__ratelimit_get_state(rl, when, &st);
    assert_true(st.token_level < -39 && st.token_level > -41);
    assert_false(dspy__ratelimit_try_acquire(rl, when + 3 * S, 1)); /* still paying off */
    assert_true(dspy__ratelimit_try_acquire(rl, when + 5 * S, 1));
    dspy__ratelimit_free(rl);
}

static void concurrency_and_fifo(void **state)
{
    (void)state;
    struct dspy__ratelimit *rl = limiter(0, 600, 1, 2, 0);
    assert_true(dspy__ratelimit_try_acquire(rl, 0, 1));
    assert_true(dspy__ratelimit_try_acquire(rl, 0, 1));
    struct dspy__ratelimit_waiter a = { .tokens = 5 }, b = { .tokens = 1 }, c = { .tokens = 1 };
    assert_false(dspy__ratelimit_try_acquire(rl, 0, 1));
    dspy__ratelimit_enqueue(rl, &a, 0);
    dspy__ratelimit_enqueue(rl, &b, 0);
    dspy__ratelimit_enqueue(rl, &c, 0);
    assert_int_equal(dspy__ratelimit_next_ns(rl, 0), UINT64_MAX); /* needs a release */
    /* nobody overtakes the queue, even a request that would fit */
    assert_false(dspy__ratelimit_try_acquire(rl, 10 * S, 0));
    dspy__ratelimit_release(rl);
    assert_ptr_equal(dspy__ratelimit_grant(rl, 10 * S), &a);
    assert_null(dspy__ratelimit_grant(rl, 10 * S));
    dspy__ratelimit_remove(rl, &b); /* cancelled while waiting */
    dspy__ratelimit_release(rl);
    assert_ptr_equal(dspy__ratelimit_grant(rl, 10 * S), &c);
    struct dspy__ratelimit_state st;
    dspy__ratelimit_get_state(rl, 10 * S, &st);
    assert_int_equal(st.in_flight, 2);
    assert_int_equal(st.queued, 0);
    dspy__ratelimit_free(rl);
}

static void wait_budget(void **state)
{
    (void)state;
    struct dspy__ratelimit *rl = limiter(60, 0, 0, 0, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(dspy__ratelimit_admit(rl, false), DSPY_OK);
    assert_int_equal(dspy__ratelimit_admit(rl, false), DSPY_EBUSY);
    assert_int_equal(dspy__ratelimit_admit(rl, true), DSPY_OK); /* a retry gets in */
    assert_int_equal(dspy__ratelimit_waiting(rl), 4);
    dspy__ratelimit_leave(rl);
    dspy__ratelimit_leave(rl);
    assert_int_equal(dspy__ratelimit_admit(rl, false), DSPY_OK);
    assert_int_equal(dspy__ratelimit_waiting(rl), 3);
    dspy__ratelimit_free(rl);
}

static void reconcile_usage(void **state)
{
    (void)state;
    struct dspy__ratelimit *rl = limiter(0, 6000, 1, 0, 0); /* 100 tokens/s, depth 100 */
    assert_true(dspy__ratelimit_try_acquire(rl, 0, 100));
    assert_false(dspy__ratelimit_try_acquire(rl, 0, 50));
    dspy__ratelimit_reconcile(rl, 100, 30); /* used 30 of the 100 estimated */
    assert_true(dspy__ratelimit_try_acquire(rl, 0, 50));
    dspy__ratelimit_reconcile(rl, 50, 150); /* used more: the bucket goes into debt */
    struct dspy__ratelimit_state st;
    dspy__ratelimit_get_state(rl, 0, &st);
    assert_true(st.token_level > -80.5 && st.token_level < -79.5);
    assert_int_equal(dspy__ratelimit_estimate_tokens(400, 256), 356);
    assert_int_equal(dspy__ratelimit_estimate_tokens(1, 0), 1);
    dspy__ratelimit_free(rl);

    struct dspy__ratelimit_options bad = DSPY__RATELIMIT_OPTIONS_INIT;
    bad.requests_per_minute = -1;
    assert_null(dspy__ratelimit_new(&bad, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_bucket), cmocka_unit_test(idle_does_not_bank),
        cmocka_unit_test(token_bucket),   cmocka_unit_test(concurrency_and_fifo),
        cmocka_unit_test(wait_budget),    cmocka_unit_test(reconcile_usage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
