/* Unit tests for the bounded byte buffer: the JSON string escaper against a byte-by-byte
 * reference on random text (quotes, backslashes, controls, UTF-8, runs of clean bytes at
 * every alignment), its exact limit, and the inline appends at the edge of `max`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "base/buf.h"

static uint64_t rng = 88172645463325252u;
static unsigned next_rand(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (unsigned)(rng >> 11);
}

/* The escaper as the contract reads: every byte on its own. */
static void reference(struct dspy_buf *b, const char *s, size_t n)
{
    assert_int_equal(dspy__buf_addc(b, '"'), DSPY_OK);
    for (size_t i = 0; i < n; i++) {
        char e[6];
        size_t k = dspy__json_escape_byte((unsigned char)s[i], e);
        assert_int_equal(k ? dspy__buf_add(b, e, k) : dspy__buf_addc(b, s[i]), DSPY_OK);
    }
    assert_int_equal(dspy__buf_addc(b, '"'), DSPY_OK);
}

static void escapes_like_reference(void **state)
{
    (void)state;
    for (int it = 0; it < 20000; it++) {
        char s[96];
        size_t n = next_rand() % sizeof(s);
        for (size_t i = 0; i < n; i++) {
            unsigned r = next_rand() % 12;
            s[i] = r == 0   ? '"'
                   : r == 1 ? '\\'
                   : r == 2 ? (char)(next_rand() % 32)
                   : r == 3 ? (char)(0x80 + next_rand() % 128)
                            : (char)(0x20 + next_rand() % 95);
        }
        struct dspy_buf a, b;
        dspy__buf_init(&a, 0);
        dspy__buf_init(&b, 0);
        for (size_t k = next_rand() % 70; k > 0; k--) { /* every alignment, and growth */
            assert_int_equal(dspy__buf_addc(&a, 'x'), DSPY_OK);
            assert_int_equal(dspy__buf_addc(&b, 'x'), DSPY_OK);
        }
        assert_int_equal(dspy__buf_add_json_str(&a, s, n), DSPY_OK);
        reference(&b, s, n);
        assert_int_equal(a.len, b.len);
        assert_memory_equal(a.ptr, b.ptr, a.len + 1);
        dspy__buf_release(&a);
        dspy__buf_release(&b);
    }
}

static void escape_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } v[] = {
        { "", "\"\"" },
        { "plain ascii text, long enough for words",
          "\"plain ascii text, long enough for words\"" },
        { "a\"b\\c\nd\te\rf\bg\fh", "\"a\\\"b\\\\c\\nd\\te\\rf\\bg\\fh\"" },
        { "\x01\x1f", "\"\\u0001\\u001f\"" },
        { "caf\xc3\xa9 \xe5\x90\x8d", "\"caf\xc3\xa9 \xe5\x90\x8d\"" },
        { "12345678\n", "\"12345678\\n\"" },
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        struct dspy_buf b;
        dspy__buf_init(&b, 0);
        assert_int_equal(dspy__buf_add_json_str(&b, v[i].in, strlen(v[i].in)), DSPY_OK);
        assert_string_equal(b.ptr, v[i].out);
        dspy__buf_release(&b);
    }
}

/* The escaped form fits exactly at `max` and fails one byte below, leaving a terminated
 * buffer; the inline appends stop at `max` too, also after it is lowered. */
static void limits(void **state)
{
    (void)state;
    const char *text = "ab\ncd\"e";
    size_t need = strlen("\"ab\\ncd\\\"e\"");
    for (size_t max = 1; max < 2 * need; max++) {
        struct dspy_buf b;
        dspy__buf_init(&b, max);
        dspy_status rc = dspy__buf_add_json_str(&b, text, strlen(text));
        assert_int_equal(rc, need <= max ? DSPY_OK : DSPY_ETOOBIG);
        if (b.ptr)
            assert_int_equal(strlen(b.ptr), b.len);
        assert_true(b.len <= max);
        dspy__buf_release(&b);
    }
    struct dspy_buf b;
    dspy__buf_init(&b, 4);
    assert_int_equal(dspy__buf_add(&b, "abcd", 4), DSPY_OK);
    assert_int_equal(dspy__buf_addc(&b, 'e'), DSPY_ETOOBIG);
    dspy__buf_reset(&b);
    assert_int_equal(dspy__buf_adds(&b, "xy"), DSPY_OK);
    b.max = 2; /* lowered after growth: the room already there does not count */
    assert_int_equal(dspy__buf_addc(&b, 'z'), DSPY_ETOOBIG);
    assert_int_equal(dspy__buf_reserve(&b, 1), DSPY_ETOOBIG);
    assert_string_equal(b.ptr, "xy");
    dspy__buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(escapes_like_reference),
        cmocka_unit_test(escape_vectors),
        cmocka_unit_test(limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
