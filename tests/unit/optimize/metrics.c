/* Unit tests for the metrics: DSPy's normalize_text, EM and F1 on the cases DSPy's own
 * definitions settle (articles, punctuation, case, numbers, lists of answers). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>

#include <cmocka.h>

#include <dspyc/dspyc.h>
#include <dspyc/metrics.h>

static void normalize_like_dspy(void **state)
{
    (void)state;
    char *s = dspy_normalize_text("  The Eiffel-Tower, in   PARIS!  ");
    assert_string_equal(s, "eiffeltower in paris");
    dspy_free(s);
    s = dspy_normalize_text("an apple a day");
    assert_string_equal(s, "apple day");
    dspy_free(s);
    s = dspy_normalize_text("theater");
    assert_string_equal(s, "theater"); /* articles only as whole words */
    dspy_free(s);
}

static void exact_match(void **state)
{
    (void)state;
    json_t *p = json_string("The answer is 42."), *g = json_string("the answer is 42");
    json_t *n = json_integer(42), *s42 = json_string("42"), *alts = json_pack("[s,s]", "x", "42");
    assert_true(dspy_metric_exact_match(p, g) == 1.0);
    assert_true(dspy_metric_exact_match(n, s42) == 1.0);
    assert_true(dspy_metric_exact_match(s42, alts) == 1.0);
    assert_true(dspy_metric_exact_match(p, s42) == 0.0);
    json_decref(p), json_decref(g), json_decref(n), json_decref(s42), json_decref(alts);
}

static void token_f1(void **state)
{
    (void)state;
    json_t *p = json_string("paris france"), *g = json_string("paris");
    json_t *none = json_string("london"), *rep = json_string("paris paris");
    /* precision 1/2, recall 1 -> F1 2/3 */
    assert_true(fabs(dspy_metric_f1(p, g) - 2.0 / 3.0) < 1e-9);
    assert_true(dspy_metric_f1(none, g) == 0.0);
    /* a repeated token matches a gold token once: precision 1/2, recall 1 */
    assert_true(fabs(dspy_metric_f1(rep, g) - 2.0 / 3.0) < 1e-9);
    json_decref(p), json_decref(g), json_decref(none), json_decref(rep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(normalize_like_dspy),
        cmocka_unit_test(exact_match),
        cmocka_unit_test(token_f1),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
