/* Unit tests of secrets read from options, the environment or a file (base layer,
 * secret.c): precedence, trimming, the first line only, missing sources, and refusal of
 * control characters with a message that names the source and never the secret. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/secret.h"

static char path[64];

static void write_file(const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    snprintf(path, sizeof(path), "/tmp/dspyc-secret-test-%ld", (long)getpid());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    unsetenv("DSPY_TEST_SECRET");
    return 0;
}

static void test_sources_in_order(void **state)
{
    (void)state;
    struct dspy_error err;
    char *k = NULL;
    assert_int_equal(dspy__secret_read("API key", NULL, NULL, NULL, &k, &err), DSPY_OK);
    assert_null(k); /* none wanted */
    write_file("  from-file \nsecond\n");
    setenv("DSPY_TEST_SECRET", "\tfrom-env\n", 1);
    assert_int_equal(dspy__secret_read("API key", " given ", "DSPY_TEST_SECRET", path, &k, &err),
                     DSPY_OK);
    assert_string_equal(k, "given");
    dspy__secret_free(k);
    assert_int_equal(dspy__secret_read("API key", "", "DSPY_TEST_SECRET", path, &k, &err), 0);
    assert_string_equal(k, "from-env");
    dspy__secret_free(k);
    unsetenv("DSPY_TEST_SECRET");
    assert_int_equal(dspy__secret_read("API key", NULL, "DSPY_TEST_SECRET", path, &k, &err), 0);
    assert_string_equal(k, "from-file");
    dspy__secret_free(k);
    dspy__secret_free(NULL);
}

static void test_missing_sources_are_errors(void **state)
{
    (void)state;
    struct dspy_error err;
    char *k = (char *)"unchanged";
    assert_int_equal(dspy__secret_read("API key", NULL, "DSPY_TEST_SECRET", NULL, &k, &err),
                     DSPY_EINVAL);
    assert_null(k);
    assert_non_null(strstr(err.message, "DSPY_TEST_SECRET"));
    write_file("\n");
    assert_int_equal(dspy__secret_read("API key", NULL, NULL, path, &k, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "no API key"));
    assert_string_equal(err.file, path);
    unlink(path);
    assert_int_equal(dspy__secret_read("API key", NULL, NULL, path, &k, &err), DSPY_EIO);
}

static void test_control_characters_are_refused_unseen(void **state)
{
    (void)state;
    struct dspy_error err;
    char *k = NULL;
    setenv("DSPY_TEST_SECRET", "sk-abc\r\nX-Injected: 1", 1);
    assert_int_equal(dspy__secret_read("API key", NULL, "DSPY_TEST_SECRET", NULL, &k, &err),
                     DSPY_EINVAL);
    assert_null(k);
    assert_non_null(strstr(err.message, "DSPY_TEST_SECRET"));
    assert_non_null(strstr(err.message, "0x0d at offset 6"));
    assert_null(strstr(err.message, "sk-abc"));
    write_file("sk-abc\x7f"
               "def\n");
    assert_int_equal(dspy__secret_read("API key", NULL, NULL, path, &k, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, path));
    assert_null(strstr(err.message, "sk-abc"));
    assert_int_equal(dspy__secret_read("API key", "a\x01", NULL, NULL, &k, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "the options"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sources_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_sources_are_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_control_characters_are_refused_unseen, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
