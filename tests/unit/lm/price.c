/* Unit tests for the price table: defaults, lookup through provider prefixes and dated
 * names, files that override and extend, bad files named, cost arithmetic. */
#include <setjmp.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = { cmocka_unit_test(test_defaults_and_lookup),
                                        cmocka_unit_test(test_files) };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
