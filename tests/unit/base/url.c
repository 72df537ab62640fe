/* Unit tests for URL credentials masking: passwords and lone user tokens become "***",
 * everything else is kept, including '@' in a path and an '@' inside the password. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <dspyc/common.h>

static void check(const char *in, const char *want)
{
    char out[256];
    size_t n = dspy_url_redact(in, out, sizeof(out));
    assert_string_equal(out, want);
    assert_int_equal(n, strlen(want));
}

static void masks_credentials(void **state)
{
    (void)state;
    check("http://user:PW@host:8000/v1", "http://user:***@host:8000/v1");
    check("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0");
    check("https://TOKEN@api.example.com/v1", "https://***@api.example.com/v1");
    check("http://u:p@ss@host/v1", "http://u:***@host/v1"); /* the last '@' ends it */
    check("http://host/v1/users/@me", "http://host/v1/users/@me");
    check("http://host:8000/v1", "http://host:8000/v1");
    check("host:8000", "host:8000");
    check("", "");
    assert_true(dspy_url_has_credentials("http://a:b@h/"));
    assert_true(dspy_url_has_credentials("http://a@h/"));
    assert_false(dspy_url_has_credentials("http://h/@x"));
    assert_false(dspy_url_has_credentials(NULL));
}

static void truncates_safely(void **state)
{
    (void)state;
    char out[12];
    size_t n = dspy_url_redact("http://user:PASSWORD@h/v1", out, sizeof(out));
    assert_int_equal(n, sizeof(out) - 1);
    assert_int_equal(strlen(out), sizeof(out) - 1);
    assert_null(strstr(out, "PASS"));
    assert_int_equal(dspy_url_redact(NULL, out, sizeof(out)), 0);
    assert_string_equal(out, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(masks_credentials),
        cmocka_unit_test(truncates_safely),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
