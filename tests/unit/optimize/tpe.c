/* Unit tests of the optimizers' internals: the TPE sampler (random start-up, then the good
 * group's choices), Optuna's gamma, MIPROv2's auto budgets as DSPy computes them, the seeded
 * draws, and metric parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

#include <cmocka.h>

#include <dspyc/dspyc.h>

#include "optimize/optimize_run.h"
#include "optimize/tpe.h"

static void tpe_finds_the_good_choice(void **state)
{
    (void)state;
    struct dspy__tpe t;
    size_t dims[2] = { 5, 4 }, x[2];
    assert_int_equal(dspy__tpe_init(&t, 2, dims), DSPY_OK);
    /* the score is high only for instruction 3 with demo set 1 */
    size_t hits = 0;
    for (size_t trial = 0; trial < 60; trial++) {
        struct dspy__rng rng;
        dspy__rng_seed(&rng, 7, RNG_TPE, trial);
        dspy__tpe_suggest(&t, &rng, x);
        assert_true(x[0] < 5 && x[1] < 4);
        double v = (x[0] == 3 ? 50 : 10) + (x[1] == 1 ? 30 : 0);
        if (trial >= 30 && x[0] == 3 && x[1] == 1)
            hits++;
        assert_int_equal(dspy__tpe_observe(&t, x, v), DSPY_OK);
    }
    /* uniform sampling would hit the best cell 1 time in 20; the model does far better */
    assert_true(hits >= 10);
    dspy__tpe_release(&t);
}

static void tpe_is_deterministic(void **state)
{
    (void)state;
    size_t dims[1] = { 7 }, a[1], b[1];
    struct dspy__tpe t1, t2;
    dspy__tpe_init(&t1, 1, dims);
    dspy__tpe_init(&t2, 1, dims);
    for (size_t i = 0; i < 25; i++) {
        struct dspy__rng r1, r2;
        dspy__rng_seed(&r1, 1, RNG_TPE, i);
        dspy__rng_seed(&r2, 1, RNG_TPE, i);
        dspy__tpe_suggest(&t1, &r1, a);
        dspy__tpe_suggest(&t2, &r2, b);
        assert_int_equal(a[0], b[0]);
        dspy__tpe_observe(&t1, a, (double)a[0]);
        dspy__tpe_observe(&t2, b, (double)b[0]);
    }
    dspy__tpe_release(&t1);
    dspy__tpe_release(&t2);
    struct dspy__tpe bad;
    size_t zero[1] = { 0 };
    assert_int_equal(dspy__tpe_init(&bad, 1, zero), DSPY_EINVAL);
    assert_int_equal(dspy__tpe_init(&bad, 0, dims), DSPY_EINVAL);
}

static void optuna_gamma(void **state)
{
    (void)state;
    assert_int_equal(dspy__tpe_n_below(1), 1);
    assert_int_equal(dspy__tpe_n_below(10), 1);
    assert_int_equal(dspy__tpe_n_below(11), 2);
    assert_int_equal(dspy__tpe_n_below(1000), 25);
}

/* The table of reference/dspy.md §6.4 */
static void mipro_auto_budgets(void **state)
{
    (void)state;
    long n, vs;
    assert_true(dspy__mipro_auto("light", &n, &vs));
    assert_int_equal(n, 6);
    assert_int_equal(vs, 100);
    assert_int_equal(dspy__mipro_num_trials(1, n, false), 10);
    assert_int_equal(dspy__mipro_num_trials(2, n, false), 20);
    assert_int_equal(dspy__mipro_num_trials(1, n, true), 9);
    assert_true(dspy__mipro_auto("medium", &n, &vs));
    assert_int_equal(vs, 300);
    assert_int_equal(dspy__mipro_num_trials(1, n, false), 18);
    assert_int_equal(dspy__mipro_num_trials(2, n, false), 28);
    assert_int_equal(dspy__mipro_num_trials(1, n, true), 18);
    assert_true(dspy__mipro_auto("heavy", &n, &vs));
    assert_int_equal(vs, 1000);
    assert_int_equal(dspy__mipro_num_trials(1, n, false), 27);
    assert_int_equal(dspy__mipro_num_trials(2, n, false), 33);
    assert_int_equal(dspy__mipro_num_trials(1, n, true), 27);
    assert_false(dspy__mipro_auto("huge", &n, &vs));
}

/* DSPy's GEPA.auto_budget and the exactly-one-budget rule */
static void gepa_budgets(void **state)
{
    (void)state;
    assert_int_equal(dspy__gepa_budget(1, "light", 0, 0, 50, 100), 780);
    assert_int_equal(dspy__gepa_budget(2, "light", 0, 0, 50, 100),
                     100 + 30 + 20 * 35 + ((21 / 5) + 1) * 100);
    assert_int_equal(dspy__gepa_budget(1, "medium", 0, 0, 50, 300),
                     300 + 60 + 18 * 35 + ((19 / 5) + 1) * 300);
    assert_int_equal(dspy__gepa_budget(1, NULL, 500, 0, 50, 100), 500);
    assert_int_equal(dspy__gepa_budget(1, NULL, 0, 2, 50, 100), 300);
    assert_int_equal(dspy__gepa_budget(1, NULL, 0, 0, 50, 100), 0);
    assert_int_equal(dspy__gepa_budget(1, "light", 10, 0, 50, 100), 0);
    assert_int_equal(dspy__gepa_budget(1, "huge", 0, 0, 50, 100), 0);
}

static void seeded_draws(void **state)
{
    (void)state;
    struct dspy__rng a, b, c;
    size_t s1[5], s2[5];
    dspy__rng_seed(&a, 3, RNG_MINIBATCH, 4);
    dspy__rng_seed(&b, 3, RNG_MINIBATCH, 4);
    dspy__rng_seed(&c, 3, RNG_MINIBATCH, 5);
    dspy__rng_sample(&a, 50, 5, s1);
    dspy__rng_sample(&b, 50, 5, s2);
    assert_memory_equal(s1, s2, sizeof(s1));
    for (size_t i = 0; i < 5; i++)
        for (size_t j = i + 1; j < 5; j++)
            assert_int_not_equal(s1[i], s1[j]); /* without repetition */
    dspy__rng_sample(&c, 50, 5, s2);
    assert_true(memcmp(s1, s2, sizeof(s1)) != 0); /* another trial, other draws */
    for (int i = 0; i < 1000; i++) {
        size_t v = dspy__rng_below(&a, 4);
        assert_true(v < 4);
    }
}

static void metric_specs(void **state)
{
    (void)state;
    dspy_metric *m = NULL;
    struct dspy_error err;
    assert_int_equal(dspy_metric_parse("exact_match:answer", &m, &err), DSPY_OK);
    assert_string_equal(dspy_metric_field(m), "answer");
    json_t *ex = json_pack("{s:s, s:s}", "question", "q", "answer", "The 42");
    json_t *pred = json_pack("{s:i}", "answer", 42);
    double s = -1;
    char *fb = NULL;
    assert_int_equal(dspy_metric_score(m, ex, pred, NULL, &s, &fb, &err), DSPY_OK);
    assert_true(s == 1.0);
    assert_non_null(fb);
    dspy_free(fb);
    json_t *nopred = json_pack("{s:s}", "other", "x");
    assert_int_equal(dspy_metric_score(m, ex, nopred, NULL, &s, NULL, &err), DSPY_EINVAL);
    assert_string_equal(err.field, "answer");
    dspy_metric_free(m);
    assert_int_equal(dspy_metric_parse("contains:answer", &m, &err), DSPY_OK);
    json_t *long_pred = json_pack("{s:s}", "answer", "so the total is 42 apples");
    json_object_set_new(ex, "answer", json_string("42 Apples"));
    assert_int_equal(dspy_metric_score(m, ex, long_pred, NULL, &s, NULL, &err), DSPY_OK);
    assert_true(s == 1.0);
    dspy_metric_free(m);
    assert_int_equal(dspy_metric_parse("bleu:answer", &m, &err), DSPY_EINVAL);
    assert_int_equal(dspy_metric_parse("f1:", &m, &err), DSPY_EINVAL);
    assert_int_equal(dspy_optimizer_from_name("mipro"), DSPY_OPT_MIPRO);
    assert_int_equal(dspy_optimizer_from_name("gepa"), DSPY_OPT_GEPA);
    assert_int_equal(dspy_optimizer_from_name("genetic"), DSPY_OPT_GENETIC);
    assert_int_equal(dspy_optimizer_from_name("simba"), -1);
    json_decref(ex);
    json_decref(pred);
    json_decref(nopred);
    json_decref(long_pred);
}

/* DSPy's regex ^[\*\s]*(([\w'\-]+\s+){0,4}[\w'\-]+):\s* then .strip('"') */
static void strip_prefix_like_dspy(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        { "Proposed Instruction: \"Solve it step by step.\"", "Solve it step by step." },
        { "** New Instruction:  Think.", "Think." },
        { "one two three four five six: no", "one two three four five six: no" },
        { "plain text", "plain text" },
        { "\"quoted\"", "quoted" },
        { "Label:", "" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[128];
        strcpy(buf, cases[i][0]);
        dspy__strip_prefix(buf);
        assert_string_equal(buf, cases[i][1]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tpe_finds_the_good_choice),
        cmocka_unit_test(tpe_is_deterministic),
        cmocka_unit_test(optuna_gamma),
        cmocka_unit_test(mipro_auto_budgets),
        cmocka_unit_test(seeded_draws),
        cmocka_unit_test(metric_specs),
        cmocka_unit_test(strip_prefix_like_dspy),
        cmocka_unit_test(gepa_budgets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
