/* Unit tests for the BERT tokenizer: WordPiece on a small vocabulary (greedy longest match,
 * "##" pieces, [UNK] words, the 100-character limit, truncation), the basic tokenizer's
 * Unicode rules (accents, case, CJK, punctuation, control and format characters, Hangul),
 * invalid UTF-8, and vocabulary file errors. The real vocabulary's ids are checked against
 * sentence-transformers in embed.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vec/wordpiece.h"

/* Ids are line numbers: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 ... */
static const char vocab[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n"
                            "un\n##aff\n##able\nhello\nworld\n,\n!\n.\n'\nt\ndon\n"
                            "cafe\nnaive\n東\n京\n##s\nthe\ncat\na\n##a\ne\n##e\n"
                            "\xe1\x84\x92\n##\xe1\x85\xa1\n##\xe1\x86\xab\n"; /* ᄒ ##ᅡ ##ᆫ */

static struct dspy__wordpiece *wp;

static int setup(void **state)
{
    (void)state;
    return dspy__wordpiece_parse(vocab, sizeof(vocab) - 1, "test-vocab", &wp, NULL);
}

static int teardown(void **state)
{
    (void)state;
    dspy__wordpiece_free(wp);
    return 0;
}

/* Encode and compare with the ids in `want` (a -1 terminated list, [CLS] and [SEP] implied). */
static void check(const char *text, size_t len, size_t max, const int32_t *want)
{
    int32_t ids[512];
    size_t n, k = 0;
    struct dspy_error err;
    assert_int_equal(dspy__wordpiece_encode(wp, text, len, ids, max, &n, &err), DSPY_OK);
    assert_int_equal(ids[0], 2);
    while (want[k] >= 0) {
        if (k + 1 >= n - 1)
            fail_msg("'%s': only %zu ids, expected more", text, n);
        if (ids[k + 1] != want[k])
            fail_msg("'%s': id %zu is %d, expected %d", text, k + 1, ids[k + 1], want[k]);
        k++;
    }
    assert_int_equal(n, k + 2);
    assert_int_equal(ids[n - 1], 3);
}

#define CHECK(text, ...) check(text, strlen(text), 512, (const int32_t[]){ __VA_ARGS__, -1 })

static void test_greedy_longest_match(void **state)
{
    (void)state;
    CHECK("unaffable", 4, 5, 6);
    CHECK("Hello, WORLD!", 7, 9, 8, 10);
    CHECK("hellos", 7, 19);
    CHECK("unknownword hello", 1, 7); /* one unmatched piece makes the whole word [UNK] */
    CHECK("the cat", 20, 21);
    CHECK("aaa", 22, 23, 23);
    check("", 0, 512, (const int32_t[]){ -1 });
    check(" \t\r\n ", 5, 512, (const int32_t[]){ -1 });
}

static void test_punctuation_accents_case_cjk(void **state)
{
    (void)state;
    CHECK("don't.", 14, 12, 13, 11);
    CHECK("Café NAÏVE", 15, 16);
    CHECK("cafe\xcc\x81", 15); /* a combining acute accent is dropped */
    CHECK("東京", 17, 18);     /* each ideograph is a word */
    CHECK("hello東world", 7, 17, 8);
    CHECK("\xe2\x80\x94", 1);           /* em dash: punctuation, not in this vocab */
    CHECK("hello\xe2\x80\x8bworld", 1); /* zero-width space is a format char: dropped, so
                                              helloworld is one unknown word */
    CHECK("hello\x01\x7f world", 7, 8); /* control characters vanish */
    CHECK("\xed\x95\x9c", 26, 27, 28);  /* Hangul 한 decomposes to jamo */
    CHECK("\xc3\x89\xc3\x89", 24, 25);  /* ÉÉ -> ee */
    CHECK("\xe2\x80\xa8hello", 7);      /* LINE SEPARATOR is whitespace */
}

static void test_long_words_and_truncation(void **state)
{
    (void)state;
    char w[256];
    memset(w, 'a', 100);
    w[100] = '\0';
    int32_t want[101];
    want[0] = 22;
    for (int i = 1; i < 100; i++)
        want[i] = 23;
    want[100] = -1;
    check(w, 100, 512, want); /* 100 characters: still WordPiece */
    memset(w, 'a', 101);
    check(w, 101, 512, (const int32_t[]){ 1, -1 }); /* 101: [UNK] */
    /* Truncation keeps [CLS] + 3 pieces + [SEP], cutting inside a word. */
    check("aaaaaa hello", 12, 5, (const int32_t[]){ 22, 23, 23, -1 });
    check("hello world hello", 17, 4, (const int32_t[]){ 7, 8, -1 });
    check("hello world", 11, 2, (const int32_t[]){ -1 });
    /* A word cut by the budget but unknown as a whole is one [UNK]. */
    check("hello aaaax", 11, 4, (const int32_t[]){ 7, 1, -1 });
    /* 10,000 characters: bounded output, the whole text still checked. */
    size_t big = 10000;
    char *t = malloc(big + 2);
    for (size_t i = 0; i < big; i++)
        t[i] = i % 6 == 5 ? ' ' : "hello"[i % 6];
    int32_t ids[256];
    size_t n;
    assert_int_equal(dspy__wordpiece_encode(wp, t, big, ids, 256, &n, NULL), DSPY_OK);
    assert_int_equal(n, 256);
    memcpy(t + big - 1, "\xff", 1);
    struct dspy_error err;
    assert_int_equal(dspy__wordpiece_encode(wp, t, big, ids, 256, &n, &err), DSPY_EUTF8);
    assert_int_equal(err.offset, (long)(big - 1));
    free(t);
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    static const char *const bad[] = { "\xff",         "ab\xc3",           "\xc0\xaf",
                                       "\xed\xa0\x80", "\xf4\x90\x80\x80", "x\x80y" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int32_t ids[16];
        size_t n = 99;
        struct dspy_error err;
        assert_int_equal(dspy__wordpiece_encode(wp, bad[i], strlen(bad[i]), ids, 16, &n, &err),
                         DSPY_EUTF8);
        assert_int_equal(n, 0);
        assert_non_null(strstr(err.message, "invalid UTF-8"));
    }
    CHECK("\xef\xbf\xbd"
          "hello",
          7); /* a real U+FFFD is dropped, not an error */
    check("a\0a", 3, 512, (const int32_t[]){ 22, 23, -1 }); /* NUL dropped: one word "aa" */
}

/* The count of `text` (ids NULL) and the ids of a full encoding agree, in number and in
 * status; the encoding gets an array big enough for any text (4 ids a byte, [CLS], [SEP]). */
static void count_matches(const char *text, size_t len)
{
    size_t cap = len * 4 + 2, n_ids = 7, n_count = 9;
    int32_t *ids = malloc(cap * sizeof(*ids));
    assert_non_null(ids);
    struct dspy_error e1, e2;
    dspy_status r1 = dspy__wordpiece_encode(wp, text, len, ids, cap, &n_ids, &e1);
    dspy_status r2 = dspy__wordpiece_encode(wp, text, len, NULL, SIZE_MAX, &n_count, &e2);
    assert_int_equal(r2, r1);
    assert_int_equal(n_count, n_ids);
    if (r1) {
        assert_int_equal(e2.offset, e1.offset);
        assert_string_equal(e2.message, e1.message);
    }
    free(ids);
}

#define EMOJI "\xf0\x9f\x98\x80 hello \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd"
#define CJK "東京 hello東world \xed\x95\x9c"

static void test_count_without_ids(void **state)
{
    (void)state;
    count_matches("", 0);
    count_matches("hello world, don't!", strlen("hello world, don't!"));
    count_matches(EMOJI, strlen(EMOJI)); /* emoji */
    count_matches(CJK, strlen(CJK));     /* CJK */
    count_matches("ab\xc3", 3);          /* invalid UTF-8: the same error, same offset */
    count_matches("hello \xff", 7);
    size_t big = 10000;
    char *t = malloc(big);
    assert_non_null(t);
    for (size_t i = 0; i < big; i++)
        t[i] = i % 6 == 5 ? ' ' : "hello"[i % 6];
    count_matches(t, big);
    size_t n;
    assert_int_equal(dspy__wordpiece_encode(wp, t, big, NULL, SIZE_MAX, &n, NULL), DSPY_OK);
    assert_int_equal(n, 1666 + 1 + 2); /* 1666 hellos, the unknown "hell" at the end */
    memset(t, 'a', big);               /* one 10,000-character word: one [UNK] */
    count_matches(t, big);
    assert_int_equal(dspy__wordpiece_encode(wp, t, big, NULL, SIZE_MAX, &n, NULL), DSPY_OK);
    assert_int_equal(n, 3);
    free(t);
}

static void test_tables(void **state)
{
    (void)state;
    uint32_t out[4];
    assert_int_equal(dspy__wp_class_of(0x4E00), DSPY__WP_CJK);
    assert_int_equal(dspy__wp_class_of(0x3000), DSPY__WP_SPACE);
    assert_int_equal(dspy__wp_class_of(0x200B), DSPY__WP_DROP);
    assert_int_equal(dspy__wp_class_of(0x00BF), DSPY__WP_PUNCT); /* ¿ */
    assert_int_equal(dspy__wp_class_of(0x0378), DSPY__WP_OTHER); /* unassigned stays */
    assert_int_equal(dspy__wp_class_of(0xE000), DSPY__WP_DROP);  /* private use */
    assert_int_equal(dspy__wp_normalize(0x00C5, out), 1);        /* Å -> a */
    assert_int_equal(out[0], 'a');
    assert_int_equal(dspy__wp_normalize(0x0301, out), 0); /* combining acute */
    assert_int_equal(dspy__wp_normalize(0x0130, out), 1); /* İ: accent stripped, then i */
    assert_int_equal(out[0], 'i');
    assert_int_equal(dspy__wp_normalize(0x03A3, out), 1); /* Σ -> σ, never ς */
    assert_int_equal(out[0], 0x03C3);
    assert_int_equal(dspy__wp_normalize(0xAC01, out), 3);  /* 각 */
    assert_int_equal(dspy__wp_normalize(0x1F600, out), 1); /* emoji unchanged */
    assert_int_equal(out[0], 0x1F600);
}

static void test_vocabulary_errors(void **state)
{
    (void)state;
    struct dspy__wordpiece *v = NULL;
    struct dspy_error err;
    assert_int_equal(dspy__wordpiece_parse("", 0, "v.txt", &v, &err), DSPY_EPARSE);
    assert_non_null(strstr(err.message, "v.txt"));
    assert_int_equal(dspy__wordpiece_parse("[UNK]\n[CLS]\n[CLS]\n", 18, "v.txt", &v, &err),
                     DSPY_EPARSE);
    assert_int_equal(err.line, 3);
    assert_non_null(strstr(err.message, "duplicate"));
    assert_int_equal(dspy__wordpiece_parse("[UNK]\n\n[SEP]\n", 13, "v.txt", &v, &err), DSPY_EPARSE);
    assert_int_equal(err.line, 2);
    assert_int_equal(dspy__wordpiece_parse("a\nb\xff\n", 5, "v.txt", &v, &err), DSPY_EPARSE);
    assert_non_null(strstr(err.message, "UTF-8"));
    assert_int_equal(dspy__wordpiece_parse("a\nb\n", 4, "v.txt", &v, &err), DSPY_EPARSE);
    assert_non_null(strstr(err.message, "[UNK]"));
    assert_null(v);
    assert_int_equal(dspy__wordpiece_load("/nonexistent/vocab.txt", &v, &err), DSPY_ENOTFOUND);
    assert_non_null(strstr(err.message, "/nonexistent/vocab.txt"));
    /* CRLF files load the same tokens. */
    assert_int_equal(dspy__wordpiece_parse("[UNK]\r\n[CLS]\r\n[SEP]\r\nx\r\n", 24, "v", &v, &err),
                     DSPY_OK);
    assert_int_equal(dspy__wordpiece_id(v, "x", 1), 3);
    dspy__wordpiece_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_longest_match),
        cmocka_unit_test(test_punctuation_accents_case_cjk),
        cmocka_unit_test(test_long_words_and_truncation),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_count_without_ids),
        cmocka_unit_test(test_tables),
        cmocka_unit_test(test_vocabulary_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
