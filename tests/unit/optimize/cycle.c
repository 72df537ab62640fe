/* Unit tests of the cycle timer with an injected clock: elapsed time, rate, progress, ETA,
 * the warning at warn_at of the target, "exceeded" past it, stop-at-target, the JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>

#include <cmocka.h>

#include <dspyc/dspyc.h>

static uint64_t fake_now;

static uint64_t fake_clock(void *ud)
{
    (void)ud;
    return fake_now;
}

static dspy_cycle *make(double target, double warn, bool stop)
{
    struct dspy_cycle_options o = DSPY_CYCLE_OPTIONS_INIT;
    o.target_s = target;
    o.warn_at = warn;
    o.stop_at_target = stop;
    o.clock = fake_clock;
    fake_now = 1000000000ull;
    return dspy_cycle_new(&o);
}

static void tracks_rate_progress_and_eta(void **state)
{
    (void)state;
    dspy_cycle *c = make(100, 0.8, false);
    struct dspy_cycle_status st;
    assert_non_null(c);
    dspy_cycle_plan(c, 10);
    dspy_cycle_status(c, &st);
    assert_true(st.eta_s < 0);  /* no rate yet */
    fake_now += 20000000000ull; /* 20 s */
    dspy_cycle_tick(c, 4);
    dspy_cycle_status(c, &st);
    assert_true(fabs(st.elapsed_s - 20) < 1e-9);
    assert_int_equal(st.iterations, 4);
    assert_int_equal(st.planned, 10);
    assert_true(fabs(st.iterations_per_s - 0.2) < 1e-9);
    assert_true(fabs(st.progress - 0.4) < 1e-9);
    assert_true(fabs(st.eta_s - 30) < 1e-9);
    assert_false(st.warned);
    assert_false(st.exceeded);
    dspy_cycle_tick(c, 6);
    dspy_cycle_status(c, &st);
    assert_true(st.eta_s == 0);
    assert_true(st.progress == 1.0);
    dspy_cycle_free(c);
}

static void warns_then_exceeds(void **state)
{
    (void)state;
    dspy_cycle *c = make(10, 0.8, false);
    struct dspy_cycle_status st;
    fake_now += 7900000000ull;
    dspy_cycle_status(c, &st);
    assert_false(st.warned);
    fake_now += 100000000ull; /* 8.0 s: 80 % */
    dspy_cycle_status(c, &st);
    assert_true(st.warned);
    assert_false(st.exceeded);
    assert_false(dspy_cycle_should_stop(c)); /* stop_at_target is off */
    fake_now += 2500000000ull;
    dspy_cycle_status(c, &st);
    assert_true(st.exceeded);
    assert_false(dspy_cycle_should_stop(c));
    json_t *j = dspy_cycle_json(c);
    assert_true(json_is_true(json_object_get(j, "exceeded")));
    assert_true(json_is_true(json_object_get(j, "warned")));
    assert_true(fabs(json_real_value(json_object_get(j, "target_s")) - 10) < 1e-9);
    const char *keys[] = { "elapsed_s", "iterations", "iterations_per_s", "progress", "eta_s" };
    for (size_t i = 0; i < 5; i++)
        assert_non_null(json_object_get(j, keys[i]));
    json_decref(j);
    dspy_cycle_free(c);
}

static void stop_at_target(void **state)
{
    (void)state;
    dspy_cycle *c = make(5, 0.5, true);
    assert_false(dspy_cycle_should_stop(c));
    fake_now += 5000000001ull;
    assert_true(dspy_cycle_should_stop(c));
    dspy_cycle_free(c);
}

static void refuses_bad_options(void **state)
{
    (void)state;
    assert_null(make(0, 0.8, false));
    assert_null(make(10, 1.5, false));
    assert_null(make(10, 0, false));
    dspy_cycle_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tracks_rate_progress_and_eta),
        cmocka_unit_test(warns_then_exceeds),
        cmocka_unit_test(stop_at_target),
        cmocka_unit_test(refuses_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
