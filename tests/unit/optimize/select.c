/* Unit tests of the model selector: candidates ordered by price, complexity levels from
 * rules (characters, tokens, keywords, fields), routing by level, bad rules named, and
 * dspy_vec_mmr's picks on a hand-made set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <dspyc/dspyc.h>

static char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/dspyc-select-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static dspy_price_table *prices(void)
{
    dspy_price_table *t;
    char *path = write_tmp("{\"big\": {\"input_per_1k\": 5, \"output_per_1k\": 10},"
                           " \"small\": {\"input_per_1k\": 0.1, \"output_per_1k\": 0.2},"
                           " \"mid\": {\"input_per_1k\": 1, \"output_per_1k\": 2}}");
    assert_int_equal(dspy_price_table_new(path, &t, NULL), DSPY_OK);
    unlink(path);
    return t;
}

static void test_order_and_levels(void **state)
{
    (void)state;
    dspy_price_table *t = prices();
    const char *models[] = { "big", "small", "mid" };
    char *path = write_tmp("{\"fields\": [\"q\"], \"rules\": ["
                           "{\"min_chars\": 20, \"level\": 1},"
                           "{\"keywords\": [\"PROVE\"], \"model\": \"big\"},"
                           "{\"has_field\": \"context\", \"level\": 1},"
                           "{\"min_tokens\": 40, \"level\": 2}]}");
    dspy_selector *s;
    struct dspy_error err;
    assert_int_equal(dspy_selector_new(models, 3, t, path, &s, &err), DSPY_OK);
    unlink(path);
    assert_string_equal(dspy_selector_model(s, 0), "small");
    assert_string_equal(dspy_selector_model(s, 1), "mid");
    assert_string_equal(dspy_selector_model(s, 2), "big");
    json_t *in = json_pack("{s:s}", "q", "short");
    assert_int_equal(dspy_selector_level(s, in), 0);
    assert_int_equal(dspy_selector_route(s, in), 0);
    json_object_set_new(in, "q", json_string("twenty characters or more"));
    assert_int_equal(dspy_selector_level(s, in), 1);
    json_object_set_new(in, "q", json_string("please prove it")); /* case-insensitive */
    assert_int_equal(dspy_selector_level(s, in), 2);
    json_object_set_new(in, "q", json_string("x"));
    json_object_set_new(in, "other", json_string("prove: not a field the rules read"));
    assert_int_equal(dspy_selector_level(s, in), 0);
    json_object_set_new(in, "context", json_string("y"));
    assert_int_equal(dspy_selector_level(s, in), 1);
    json_object_set_new(in, "context", json_string(""));
    assert_int_equal(dspy_selector_level(s, in), 0);
    char longer[400];
    memset(longer, 'a', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = 0; /* 100 estimated tokens */
    json_object_set_new(in, "q", json_string(longer));
    assert_int_equal(dspy_selector_level(s, in), 2);
    json_decref(in);
    dspy_selector_free(s);
    dspy_price_table_free(t);
}

static void test_errors(void **state)
{
    (void)state;
    dspy_price_table *t = prices();
    dspy_selector *s = NULL;
    struct dspy_error err;
    const char *unpriced[] = { "small", "who" };
    assert_int_equal(dspy_selector_new(unpriced, 2, t, NULL, &s, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "no price for candidate model who"));
    const char *ok[] = { "small", "mid" };
    static const char *const bad[] = {
        "{\"rules\": [{\"min_chars\": 0, \"level\": 1}]}",
        "{\"rules\": [{\"min_chars\": 5, \"keywords\": [\"a\"], \"level\": 1}]}",
        "{\"rules\": [{\"keywords\": [], \"level\": 1}]}",
        "{\"rules\": [{\"min_chars\": 5, \"model\": \"nobody\"}]}",
        "{\"rules\": [{\"min_chars\": 5, \"level\": 99}]}",
        "{\"rules\": []}",
        "{\"rule\": []}",
        "{\"rules\": [{\"min_chars\": 5, \"level\": 1}, {\"min_words\": 5, \"level\": 1}]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *path = write_tmp(bad[i]);
        assert_int_not_equal(dspy_selector_new(ok, 2, t, path, &s, &err), DSPY_OK);
        assert_null(s);
        assert_non_null(strstr(err.message, path));
        unlink(path);
    }
    char *path = write_tmp("{\"rules\": [{\"min_chars\": 5, \"level\": 1}, {\"min_words\": 5}]}");
    assert_int_equal(dspy_selector_new(ok, 2, t, path, &s, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "rule 1: unknown key"));
    assert_string_equal(err.field, "min_words");
    unlink(path);
    dspy_price_table_free(t);
}

/* Three unit vectors: a and b nearly the same, c apart. MMR with the query near a keeps a,
 * then prefers c over b unless lambda is 1. */
static void test_mmr(void **state)
{
    (void)state;
    const float rows[] = { 1, 0, 0.995f, 0.0998f, 0, 1 };
    const float rel[] = { 0.99f, 0.98f, 0.2f };
    uint32_t cand[] = { 0, 1, 2 };
    dspy_vec_mmr(rows, 2, rel, cand, 3, 2, 0.5);
    assert_int_equal(cand[0], 0);
    assert_int_equal(cand[1], 2);
    assert_int_equal(cand[2], 1);
    uint32_t plain[] = { 2, 1, 0 };
    dspy_vec_mmr(rows, 2, rel, plain, 3, 2, 1.0);
    assert_int_equal(plain[0], 0);
    assert_int_equal(plain[1], 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = { cmocka_unit_test(test_order_and_levels),
                                        cmocka_unit_test(test_errors), cmocka_unit_test(test_mmr) };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
