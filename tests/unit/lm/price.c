/* Unit tests for the price table: defaults, lookup through provider prefixes and dated
 * names, files that override and extend, bad files named, cost arithmetic. */
#include <setjmp.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <dspyc/price.h>

static void test_defaults_and_lookup(void **state)
{
    (void)state;
    dspy_price_table *t;
    struct dspy_price p;
    assert_int_equal(dspy_price_table_new(NULL, &t, NULL), DSPY_OK);
    assert_true(dspy_price_lookup(t, "openai/gpt-4o-mini", &p));
    assert_true(p.input_per_1k == 0.00015 && p.output_per_1k == 0.0006);
    assert_true(dspy_price_lookup(t, "gpt-4o-mini-2024-07-18", &p));
    assert_true(p.input_per_1k == 0.00015);
    assert_true(dspy_price_lookup(t, "azure/gpt-4o-2024-08-06", &p));
    assert_true(p.input_per_1k == 0.0025);
    assert_false(dspy_price_lookup(t, "my-local-llama", &p));
    assert_false(dspy_price_lookup(t, "gpt-4oo", NULL));
    p.input_per_1k = 0.5;
    p.output_per_1k = 2.0;
    assert_true(dspy_price_cost(&p, 3000, 500) == 2.5);
    dspy_price_table_free(t);
}

static char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/dspyc-price-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_files(void **state)
{
    (void)state;
    dspy_price_table *t;
    struct dspy_price p;
    struct dspy_error err;
    char *path = write_tmp("{\"gpt-4o\": {\"input_per_1k\": 1, \"output_per_1k\": 2},\n"
                           " \"llama-3\": {\"input_per_1k\": 0, \"output_per_1k\": 0.1}}");
    assert_int_equal(dspy_price_table_new(path, &t, &err), DSPY_OK);
    assert_true(dspy_price_lookup(t, "openai/gpt-4o", &p) && p.input_per_1k == 1.0);
    assert_true(dspy_price_lookup(t, "llama-3", &p) && p.output_per_1k == 0.1);
    assert_true(dspy_price_lookup(t, "gpt-4o-mini", &p) && p.input_per_1k == 0.00015);
    dspy_price_table_free(t);
    unlink(path);
    path = write_tmp("{\"m\": {\"input_per_1k\": -1, \"output_per_1k\": 2}}");
    assert_int_equal(dspy_price_table_new(path, &t, &err), DSPY_EINVAL);
    assert_string_equal(err.field, "m");
    assert_non_null(strstr(err.message, ">= 0"));
    unlink(path);
    path = write_tmp("{\"m\": {\"input\": 1}}");
    assert_int_equal(dspy_price_table_new(path, &t, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "model \"m\": needs exactly"));
    unlink(path);
    path = write_tmp("{\"m\": \n");
    assert_int_equal(dspy_price_table_new(path, &t, &err), DSPY_EPARSE);
    assert_int_equal(err.line, 2);
    unlink(path);
}

/* The usage tally: paid = (usage - cached) at each model's price, hits saved, unpriced
 * models named and never counted as free, a flat price for every model, merge. */
static void test_tally(void **state)
{
    (void)state;
    dspy_price_table *t;
    struct dspy_cost_totals all, one;
    struct dspy_lm_usage u = { 2000, 500, 2500 }, hit = { 1000, 100, 1100 };
    assert_int_equal(dspy_price_table_new(NULL, &t, NULL), DSPY_OK);
    dspy_cost_tally *c = dspy_cost_tally_new(t, NULL);
    assert_non_null(c);
    assert_int_equal(dspy_cost_tally_add(c, "openai/gpt-4o", 3, 1, &u, &hit), DSPY_OK);
    assert_int_equal(dspy_cost_tally_add(c, "my-model", 1, 0, &u, NULL), DSPY_OK);
    assert_int_equal(dspy_cost_tally_add(c, "openai/gpt-4o", 1, 0, &u, NULL), DSPY_OK);
    assert_int_equal(dspy_cost_tally_count(c), 2);
    dspy_cost_tally_totals(c, &all);
    /* gpt-4o at 0.0025 / 0.01: paid (3000 prompt, 900 completion), saved (1000, 100) */
    assert_true(fabs(all.usd - (3.0 * 0.0025 + 0.9 * 0.01)) < 1e-12);
    assert_true(fabs(all.saved_usd - (1.0 * 0.0025 + 0.1 * 0.01)) < 1e-12);
    assert_false(all.priced);
    assert_int_equal(all.calls, 5);
    assert_int_equal(all.usage.prompt_tokens, 6000);
    bool priced = true;
    assert_string_equal(dspy_cost_tally_model(c, 1, &one, NULL, &priced), "my-model");
    assert_false(priced);
    assert_true(one.usd == 0.0);
    json_t *j = dspy_cost_tally_json(c);
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "unpriced"), 0)),
                        "my-model");
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(j, "by_model"), "openai/gpt-4o"),
                         "cache_hits")),
                     1);
    json_decref(j);
    struct dspy_price flat = { 1.0, 2.0 };
    dspy_cost_tally *f = dspy_cost_tally_new(NULL, &flat);
    assert_int_equal(dspy_cost_tally_merge(f, c), DSPY_OK);
    dspy_cost_tally_totals(f, &all);
    assert_true(all.priced);
    assert_true(fabs(all.usd - (5.0 * 1 + 1.4 * 2)) < 1e-9);
    dspy_cost_tally_free(f);
    dspy_cost_tally_free(c);
    dspy_cost_tally_free(NULL);
    dspy_price_table_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = { cmocka_unit_test(test_defaults_and_lookup),
                                        cmocka_unit_test(test_files),
                                        cmocka_unit_test(test_tally) };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
