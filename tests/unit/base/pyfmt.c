/* Unit tests for the Python-compatible text helpers: float repr, str()/repr() of JSON
 * values, json.dumps layouts and escapes, UTF-8 handling, strip and splitlines. Expected
 * strings come from CPython 3.11. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/fmtfloat.h"
#include "base/pyfmt.h"

static void float_repr_matches_python(void **state)
{
    static const struct {
        double d;
        const char *want;
    } cases[] = {
        { 0.1, "0.1" },
        { 1.0, "1.0" },
        { 1e20, "1e+20" },
        { 1.5e-07, "1.5e-07" },
        { 1e16, "1e+16" },
        { 1e15, "1000000000000000.0" },
        { 0.0001, "0.0001" },
        { 1e-05, "1e-05" },
        { 123456.789, "123456.789" },
        { -2.5, "-2.5" },
        { 0.0, "0.0" },
        { -0.0, "-0.0" },
        { 1.0 / 3, "0.3333333333333333" },
        { 2.0 / 3, "0.6666666666666666" },
        { 100.0, "100.0" },
        { 1152921504606846976.0, "1.152921504606847e+18" },
        { 5e-324, "5e-324" },
        { 1.7976931348623157e308, "1.7976931348623157e+308" },
        { 123456789012345.6, "123456789012345.6" },
        { 2.5e-05, "2.5e-05" },
        { 9007199254740993.0, "9007199254740992.0" },
        { 0.30000000000000004, "0.30000000000000004" },
    };
    char out[DSPY__FLOAT_MAX];
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = dspy__float_fmt(out, cases[i].d, DSPY__FLOAT_PYTHON);
        assert_string_equal(out, cases[i].want);
        assert_int_equal(n, strlen(cases[i].want));
    }
    dspy__float_fmt(out, 1.0 / 0.0, DSPY__FLOAT_PYTHON);
    assert_string_equal(out, "inf");
    dspy__float_fmt(out, -1.0 / 0.0, DSPY__FLOAT_PYTHON);
    assert_string_equal(out, "-inf");
    dspy__float_fmt(out, 0.0 / 0.0, DSPY__FLOAT_PYTHON);
    assert_string_equal(out, "nan");
}

static char *render(dspy_status (*fn)(struct dspy_buf *, const json_t *), const char *json)
{
    static char out[1024];
    struct dspy_buf b;
    json_error_t e;
    json_t *v = json_loads(json, JSON_DECODE_ANY, &e);
    assert_non_null(v);
    dspy__buf_init(&b, 0);
    assert_int_equal(fn(&b, v), DSPY_OK);
    snprintf(out, sizeof(out), "%s", b.ptr ? b.ptr : "");
    dspy__buf_release(&b);
    json_decref(v);
    return out;
}

static void str_and_repr_are_pythons(void **state)
{
    (void)state;
    assert_string_equal(render(dspy__py_str, "true"), "True");
    assert_string_equal(render(dspy__py_str, "null"), "None");
    assert_string_equal(render(dspy__py_str, "3"), "3");
    assert_string_equal(render(dspy__py_str, "1e20"), "1e+20");
    assert_string_equal(render(dspy__py_str, "\"plain text\""), "plain text");
    assert_string_equal(render(dspy__py_str, "[1, \"a\", null, 1.5, false]"),
                        "[1, 'a', None, 1.5, False]");
    assert_string_equal(render(dspy__py_str, "{\"k\": \"it's\", \"q\": {}}"),
                        "{'k': \"it's\", 'q': {}}");
    assert_string_equal(render(dspy__py_repr, "\"a\\nb\\t\\u0001\\\\\""), "'a\\nb\\t\\x01\\\\'");
    assert_string_equal(render(dspy__py_repr, "\"both ' and \\\"\""), "'both \\' and \"'");
    assert_string_equal(render(dspy__py_repr, "\"caf\\u00e9 \\u00a0 \\u2028\""),
                        "'caf\xC3\xA9 \\xa0 \\u2028'");
}

static char *dumps(const char *json, int indent, bool sorted)
{
    static char out[2048];
    struct dspy_buf b;
    json_error_t e;
    json_t *v = json_loads(json, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    assert_non_null(v);
    dspy__buf_init(&b, 0);
    assert_int_equal(dspy__py_json_dumps(&b, v, indent, sorted), DSPY_OK);
    snprintf(out, sizeof(out), "%s", b.ptr);
    dspy__buf_release(&b);
    json_decref(v);
    return out;
}

static void json_dumps_matches_python(void **state)
{
    (void)state;
    assert_string_equal(dumps("{\"x\": 1, \"\xC3\xA9\": 2}", -1, false),
                        "{\"x\": 1, \"\xC3\xA9\": 2}");
    assert_string_equal(dumps("[1.0, 1e20, true, null, \"a\\u0001\\u007f\\n\"]", -1, false),
                        "[1.0, 1e+20, true, null, \"a\\u0001\x7f\\n\"]");
    assert_string_equal(dumps("[]", 2, false), "[]");
    assert_string_equal(dumps("{}", 2, false), "{}");
    assert_string_equal(dumps("{\"a\": [1, {\"b\": []}], \"c\": \"d\"}", 2, false),
                        "{\n  \"a\": [\n    1,\n    {\n      \"b\": []\n    }\n  ],\n"
                        "  \"c\": \"d\"\n}");
    /* DSPy's schema notes: "type" first, then the other keys sorted */
    assert_string_equal(dumps("{\"items\": {\"type\": \"string\"}, \"additionalProperties\": "
                              "true, \"type\": \"array\"}",
                              -1, true),
                        "{\"type\": \"array\", \"additionalProperties\": true, \"items\": "
                        "{\"type\": \"string\"}}");
}

static void utf8_decode_and_sanitize(void **state)
{
    uint32_t cp;
    struct dspy_buf b;
    (void)state;
    assert_int_equal(dspy__utf8_decode("\xC3\xA9", 2, 0, &cp), 2);
    assert_int_equal(cp, 0xE9);
    assert_int_equal(dspy__utf8_decode("\xF0\x9F\x8E\x89", 4, 0, &cp), 4);
    assert_int_equal(cp, 0x1F389);
    assert_int_equal(dspy__utf8_decode("\xC0\xAF", 2, 0, &cp), 1); /* overlong */
    assert_int_equal(cp, 0xFFFD);
    assert_int_equal(dspy__utf8_decode("\xED\xA0\x80", 3, 0, &cp), 1); /* surrogate */
    assert_int_equal(dspy__utf8_decode("\xE2\x82", 2, 0, &cp), 1);     /* truncated */
    assert_true(dspy__utf8_valid("caf\xC3\xA9 \xEF\xBF\xBD", 9));
    assert_false(dspy__utf8_valid("a\xFF", 2));
    dspy__buf_init(&b, 0);
    assert_int_equal(dspy__utf8_sanitize(&b, "a\xFFz\xC3", 4), DSPY_OK);
    assert_string_equal(b.ptr, "a\xEF\xBF\xBDz\xEF\xBF\xBD");
    dspy__buf_release(&b);
    /* Past long ASCII runs (read eight bytes at a time): every byte position of a bad or a
     * good sequence after 0..17 ASCII bytes. */
    for (size_t k = 0; k < 18; k++) {
        char t[32];
        memset(t, 'a', k);
        memcpy(t + k,
               "\xFF"
               "bc",
               3);
        assert_false(dspy__utf8_valid(t, k + 3));
        memcpy(t + k,
               "\xC3\xA9"
               "bcdefghij",
               11);
        assert_true(dspy__utf8_valid(t, k + 11));
        t[k + 1] = 'x'; /* a lead byte cut short */
        assert_false(dspy__utf8_valid(t, k + 11));
        dspy__buf_init(&b, 0);
        assert_int_equal(dspy__utf8_sanitize(&b, t, k + 11), DSPY_OK);
        assert_int_equal(b.len, k + 13);
        assert_memory_equal(b.ptr + k, "\xEF\xBF\xBDxbcdefghij", 13);
        dspy__buf_release(&b);
    }
}

static void strip_and_splitlines_follow_python(void **state)
{
    const char *s = " \t\xE3\x80\x80 x y \xC2\xA0\n\x0b";
    size_t a = 0, z = strlen(s), pos = 0, ls, le, n = 0;
    const char *lines = "a\r\nb\rc\nd\xE2\x80\xA8"
                        "e\xC2\x85"
                        "f\x0c"
                        "g\x1c"
                        "h";
    const char *want[] = { "a", "b", "c", "d", "e", "f", "g", "h" };
    (void)state;
    dspy__py_strip(s, &a, &z);
    assert_int_equal(z - a, 3);
    assert_memory_equal(s + a, "x y", 3);
    a = 0;
    z = 3;
    dspy__py_strip("   ", &a, &z);
    assert_int_equal(z - a, 0);
    a = 0;
    z = 9; /* printable ASCII at both ends stops at once; whitespace inside stays */
    dspy__py_strip("x \xC2\xA0 \t y!", &a, &z);
    assert_int_equal(a, 0);
    assert_int_equal(z, 9);
    a = 0;
    z = 6;
    dspy__py_strip("\x1c\x1f"
                   "ab\x0b ",
                   &a, &z);
    assert_int_equal(a, 2);
    assert_int_equal(z, 4);
    while (dspy__py_next_line(lines, strlen(lines), &pos, &ls, &le)) {
        assert_true(n < 8);
        assert_int_equal(le - ls, strlen(want[n]));
        assert_memory_equal(lines + ls, want[n], le - ls);
        n++;
    }
    assert_int_equal(n, 8);
    /* a trailing terminator does not start another line, as in Python */
    pos = 0;
    n = 0;
    while (dspy__py_next_line("x\n", 2, &pos, &ls, &le))
        n++;
    assert_int_equal(n, 1);
    assert_true(dspy__py_isspace(0x3000));
    assert_false(dspy__py_isspace(0x200B)); /* zero width space is not whitespace */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(float_repr_matches_python),
        cmocka_unit_test(str_and_repr_are_pythons),
        cmocka_unit_test(json_dumps_matches_python),
        cmocka_unit_test(utf8_decode_and_sanitize),
        cmocka_unit_test(strip_and_splitlines_follow_python),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
