/* Unit tests for OpenAI BPE token counting: the two pre-tokenizers' pieces (expected pieces
 * from tiktoken's patterns), the Unicode classes, ids from the real rank files (expected ids
 * from tiktoken), merging on a small rank file of our own (ties go leftmost, long pieces
 * merge as short ones do), special tokens, chat messages, model names, bad rank files,
 * invalid UTF-8 and failed allocations. Reads models/tiktoken (scripts/fetch-tiktoken.sh). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <dspyc/tokens.h>

#include "retrieve/bpe.h"

/* The pieces of `text`, joined by '|'. */
static void pieces(enum dspy__bpe_split split, const char *text, char *out, size_t cap)
{
    size_t len = strlen(text), o = 0;
    for (size_t i = 0; i < len;) {
        size_t e = dspy__bpe_next_piece(split, text, len, i);
        assert_true(e > i && e <= len);
        assert_true(o + (e - i) + 2 < cap);
        memcpy(out + o, text + i, e - i);
        o += e - i;
        out[o++] = '|';
        i = e;
    }
    out[o] = '\0';
}

static void expect_pieces(enum dspy__bpe_split split, const char *text, const char *want)
{
    char got[512];
    pieces(split, text, got, sizeof(got));
    assert_string_equal(got, want);
}

static void test_cl100k_pieces(void **state)
{
    (void)state;
    enum dspy__bpe_split s = DSPY__BPE_SPLIT_CL100K;
    expect_pieces(s, "Hello world's  \n\n  x", "Hello| world|'s|  \n\n| | x|");
    expect_pieces(s,
                  "don't STOP'LL 1234567 a\xcc\x81"
                  "b",
                  "don|'t| STOP|'LL| |123|456|7| a|\xcc\x81"
                  "b|");
    expect_pieces(s, "HelloWORLDFoo camelCase \xe6\x9d\xb1\xe4\xba\xac",
                  "HelloWORLDFoo| camelCase| \xe6\x9d\xb1\xe4\xba\xac|");
    expect_pieces(s, "x  \n  ", "x|  \n  |");
    expect_pieces(s, " ?!//\n\nfoo\t\tbar  ", " ?!//\n\n|foo|\t|\tbar|  |");
}

static void test_o200k_pieces(void **state)
{
    (void)state;
    enum dspy__bpe_split s = DSPY__BPE_SPLIT_O200K;
    expect_pieces(s, "Hello world's  \n\n  x", "Hello| world's|  \n\n| | x|");
    expect_pieces(s,
                  "don't STOP'LL 1234567 a\xcc\x81"
                  "b",
                  "don't| STOP'LL| |123|456|7| a\xcc\x81"
                  "b|");
    expect_pieces(s, "HelloWORLDFoo camelCase", "Hello|WORLDFoo| camel|Case|");
    expect_pieces(s, "x  \n  ", "x|  \n|  |");
    expect_pieces(s, " ?!//\n\nfoo\t\tbar  ", " ?!//\n\n|foo|\t|\tbar|  |");
}

static void test_classes(void **state)
{
    (void)state;
    assert_int_equal(dspy__bpe_class_of('A'), DSPY__BPE_UPPER);
    assert_int_equal(dspy__bpe_class_of(0x01C5), DSPY__BPE_UPPER); /* Dz, a title case */
    assert_int_equal(dspy__bpe_class_of('z'), DSPY__BPE_LOWER);
    assert_int_equal(dspy__bpe_class_of(0x6771), DSPY__BPE_OLETTER); /* a CJK ideograph */
    assert_int_equal(dspy__bpe_class_of(0x02B0), DSPY__BPE_OLETTER); /* modifier h */
    assert_int_equal(dspy__bpe_class_of(0x0301), DSPY__BPE_MARK);
    assert_int_equal(dspy__bpe_class_of('7'), DSPY__BPE_NUMBER);
    assert_int_equal(dspy__bpe_class_of(0x00BD), DSPY__BPE_NUMBER); /* one half */
    assert_int_equal(dspy__bpe_class_of(0x3000), DSPY__BPE_SPACE);
    assert_int_equal(dspy__bpe_class_of(0x200B), DSPY__BPE_OTHER); /* zero width: not \s */
    assert_int_equal(dspy__bpe_class_of(0x1C89), DSPY__BPE_UPPER); /* new in Unicode 16 */
    assert_int_equal(dspy__bpe_class_of(0x10FFFF), DSPY__BPE_OTHER);
}

static void expect_ids(const dspy_tokenizer *t, const char *text, unsigned flags,
                       const uint32_t *want, size_t nwant)
{
    uint32_t *ids;
    size_t n, count;
    struct dspy_error err;
    assert_int_equal(dspy_tokenizer_encode(t, text, strlen(text), flags, &ids, &n, &err), DSPY_OK);
    assert_int_equal(n, nwant);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ids[i], want[i]);
    assert_int_equal(dspy_tokenizer_count(t, text, strlen(text), flags, &count, &err), DSPY_OK);
    assert_int_equal(count, n);
    /* The ids' bytes give the text back. */
    char back[256];
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *b;
        size_t len;
        assert_true(dspy_tokenizer_token(t, ids[i], &b, &len));
        assert_true(o + len < sizeof(back));
        memcpy(back + o, b, len);
        o += len;
    }
    back[o] = '\0';
    assert_string_equal(back, text);
    dspy_free(ids);
}

static void test_real_ids(void **state)
{
    (void)state;
    dspy_tokenizer *cl, *o2;
    struct dspy_error err;
    assert_int_equal(dspy_tokenizer_open("cl100k_base", "models/tiktoken", &cl, &err), DSPY_OK);
    assert_int_equal(dspy_tokenizer_open_model("openai/gpt-4o", "models/tiktoken", &o2, &err),
                     DSPY_OK);
    assert_string_equal(dspy_tokenizer_name(cl), "cl100k_base");
    assert_string_equal(dspy_tokenizer_name(o2), "o200k_base");
    /* Expected ids from tiktoken's encode_ordinary / encode(allowed_special="all"). */
    expect_ids(cl, "hello world", 0, (const uint32_t[]){ 15339, 1917 }, 2);
    expect_ids(o2, "hello world", 0, (const uint32_t[]){ 24912, 2375 }, 2);
    expect_ids(cl, "Hello, how are you doing? I'm fine", 0,
               (const uint32_t[]){ 9906, 11, 1268, 527, 499, 3815, 30, 358, 2846, 7060 }, 10);
    expect_ids(o2, "Hello, how are you doing? I'm fine", 0,
               (const uint32_t[]){ 13225, 11, 1495, 553, 481, 5306, 30, 5477, 8975 }, 9);
    expect_ids(cl, "<|endoftext|>", DSPY_TOKENS_SPECIAL, (const uint32_t[]){ 100257 }, 1);
    expect_ids(o2, "a<|endofprompt|>", DSPY_TOKENS_SPECIAL, (const uint32_t[]){ 64, 200018 }, 2);
    size_t n;
    assert_int_equal(dspy_tokenizer_count(cl, "<|endoftext|>", 13, 0, &n, &err), DSPY_OK);
    assert_true(n > 1); /* ordinary text by default */
    assert_int_equal(dspy_tokenizer_count(cl, "", 0, 0, &n, &err), DSPY_OK);
    assert_int_equal(n, 0);
    const char *b;
    size_t len;
    assert_false(dspy_tokenizer_token(cl, 100256, &b, &len)); /* neither a rank nor special */
    assert_false(dspy_tokenizer_token(cl, 5000000, &b, &len));

    /* Invalid UTF-8 is refused with the offset of its first bad byte. */
    assert_int_equal(dspy_tokenizer_count(o2, "ok \xc3( x", 7, 0, &n, &err), DSPY_EUTF8);
    assert_int_equal(err.offset, 3);
    assert_non_null(strstr(err.message, "byte 3"));
    assert_int_equal(dspy_tokenizer_count(o2, "\xed\xa0\x80", 3, 0, &n, &err), DSPY_EUTF8);

    /* Chat messages: 3 per message, the values' tokens, 1 per name, 3 for the reply. */
    json_t *msgs = json_loads("[{\"role\": \"user\", \"content\": \"hello world\"},"
                              " {\"role\": \"user\", \"name\": \"bob\", \"content\": [{\"type\": "
                              "\"text\", \"text\": \"hello world\"}]}]",
                              0, NULL);
    long total;
    assert_int_equal(dspy_tokenizer_count_messages(cl, msgs, &total, &err), DSPY_OK);
    assert_int_equal(total, 3 + (3 + 1 + 2) + (3 + 1 + 1 + 1 + 2));
    json_decref(msgs);
    msgs = json_loads("[{\"role\": \"user\"}, 7]", 0, NULL);
    assert_int_equal(dspy_tokenizer_count_messages(cl, msgs, &total, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "messages[1]"));
    json_decref(msgs);
    dspy_tokenizer_free(cl);
    dspy_tokenizer_free(o2);
    dspy_tokenizer_free(NULL);
}

static void test_models(void **state)
{
    (void)state;
    static const char *const o200k[] = {
        "gpt-4o",  "gpt-4o-mini-2024-07-18", "gpt-4.1",          "gpt-5", "o1", "o3-mini",
        "o4-mini", "azure/gpt-4o",           "chatgpt-4o-latest"
    };
    static const char *const cl100k[] = { "gpt-4", "gpt-4-turbo", "gpt-3.5-turbo",
                                          "text-embedding-3-small", "text-embedding-ada-002" };
    for (size_t i = 0; i < sizeof(o200k) / sizeof(o200k[0]); i++)
        assert_string_equal(dspy_tokenizer_encoding_for_model(o200k[i]), "o200k_base");
    for (size_t i = 0; i < sizeof(cl100k) / sizeof(cl100k[0]); i++)
        assert_string_equal(dspy_tokenizer_encoding_for_model(cl100k[i]), "cl100k_base");
    assert_null(dspy_tokenizer_encoding_for_model("llama-3-70b"));
    assert_null(dspy_tokenizer_encoding_for_model("o1x"));
    assert_null(dspy_tokenizer_encoding_for_model(NULL));
    dspy_tokenizer *t = (dspy_tokenizer *)1;
    struct dspy_error err;
    assert_int_equal(dspy_tokenizer_open_model("claude-3", "models/tiktoken", &t, &err),
                     DSPY_ENOTFOUND);
    assert_null(t);
    assert_int_equal(dspy_tokenizer_open("p50k_base", "models/tiktoken", &t, &err), DSPY_ENOTFOUND);
}

/* A rank file of our own in a fresh folder: the 256 bytes, then `extra` lines. */
static void write_ranks(const char *dir, const char *extra, bool bytes)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char path[256];
    snprintf(path, sizeof(path), "%s/cl100k_base.tiktoken", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (unsigned b = 0; bytes && b < 256; b++)
        fprintf(f, "%c%c== %u\n", b64[b >> 2], b64[(b & 3) << 4], b);
    fputs(extra, f);
    fclose(f);
}

static dspy_status open_own(const char *extra, bool bytes, dspy_tokenizer **t,
                            struct dspy_error *err)
{
    char dir[] = "/tmp/dspyc-tokens-XXXXXX", path[256];
    assert_non_null(mkdtemp(dir));
    write_ranks(dir, extra, bytes);
    dspy_status rc = dspy_tokenizer_open("cl100k_base", dir, t, err);
    snprintf(path, sizeof(path), "%s/cl100k_base.tiktoken", dir);
    unlink(path);
    rmdir(dir);
    return rc;
}

static void test_merges(void **state)
{
    (void)state;
    dspy_tokenizer *t;
    struct dspy_error err;
    /* "aa" 256, "aaa" 257 (YWE=, YWFh). Expected ids from tiktoken over the same ranks:
     * the lowest rank merges first, the leftmost on a tie, so "aaaa" is two "aa". */
    assert_int_equal(open_own("YWE= 256\nYWFh 257\n", true, &t, &err), DSPY_OK);
    expect_ids(t, "aaaa", 0, (const uint32_t[]){ 256, 256 }, 2);
    expect_ids(t, "aaaaa", 0, (const uint32_t[]){ 256, 257 }, 2);
    /* Long pieces (past the scan, through the heap) merge the same way: 300 a's are 150
     * "aa", 299 are 148 "aa" and an "aaa". */
    char text[301];
    memset(text, 'a', 300);
    text[300] = '\0';
    uint32_t *ids;
    size_t n;
    assert_int_equal(dspy_tokenizer_encode(t, text, 300, 0, &ids, &n, &err), DSPY_OK);
    assert_int_equal(n, 150);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ids[i], 256);
    dspy_free(ids);
    assert_int_equal(dspy_tokenizer_encode(t, text, 299, 0, &ids, &n, &err), DSPY_OK);
    assert_int_equal(n, 149);
    assert_int_equal(ids[147], 256);
    assert_int_equal(ids[148], 257);
    dspy_free(ids);
    dspy_tokenizer_free(t);
}

static void test_bad_rank_files(void **state)
{
    (void)state;
    dspy_tokenizer *t;
    struct dspy_error err;
    assert_int_equal(open_own("YWE= 256\nYWE= 257\n", true, &t, &err), DSPY_EPARSE);
    assert_non_null(strstr(err.message, "line 258: the token is listed twice"));
    assert_int_equal(err.line, 258);
    assert_int_equal(open_own("YWE= 255\n", true, &t, &err), DSPY_EPARSE);
    assert_non_null(strstr(err.message, "rank 255 is given to two tokens"));
    assert_int_equal(open_own("YW!= 256\n", true, &t, &err), DSPY_EPARSE);
    assert_non_null(strstr(err.message, "not base64"));
    assert_int_equal(open_own("YWE= x\n", true, &t, &err), DSPY_EPARSE);
    assert_non_null(strstr(err.message, "rank is not a number"));
    assert_int_equal(open_own("YWE= 2566257257\n", true, &t, &err), DSPY_EPARSE);
    assert_non_null(strstr(err.message, "far above the number of tokens"));
    assert_int_equal(open_own("YWE=\n", true, &t, &err), DSPY_EPARSE);
    assert_int_equal(open_own("YWE= 256\n", false, &t, &err), DSPY_EPARSE);
    assert_non_null(strstr(err.message, "no token for the byte 0x"));
    /* A rank that is a special token's: 40,000 three-byte tokens bring 100257 within reach
     * of the ranks' gap limit first. */
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *many = malloc(40000 * 16 + 32);
    assert_non_null(many);
    size_t o = 0;
    for (unsigned i = 0; i < 40000; i++) {
        unsigned v = 0x800000u | i; /* 3 bytes: 4 base64 characters */
        o += (size_t)sprintf(many + o, "%c%c%c%c %u\n", b64[v >> 18], b64[(v >> 12) & 63],
                             b64[(v >> 6) & 63], b64[v & 63], 256 + i);
    }
    strcpy(many + o, "YWE= 100257\n");
    assert_int_equal(open_own(many, true, &t, &err), DSPY_EPARSE);
    assert_non_null(strstr(err.message, "special token <|endoftext|>"));
    free(many);
    assert_int_equal(open_own("", false, &t, &err), DSPY_EPARSE);
    assert_null(t);
    assert_int_equal(dspy_tokenizer_open("cl100k_base", "/nonexistent", &t, &err), DSPY_ENOTFOUND);
    assert_non_null(strstr(err.message, "fetch-tiktoken.sh"));
    assert_string_equal(err.file, "/nonexistent/cl100k_base.tiktoken");
}

static long fail_after = -1;
static void *failing_malloc(size_t n)
{
    return fail_after-- == 0 ? NULL : malloc(n);
}
static void *failing_realloc(void *p, size_t n)
{
    return fail_after-- == 0 ? NULL : realloc(p, n);
}

static void test_allocation_failures(void **state)
{
    (void)state;
    static const struct dspy_allocator failing = { failing_malloc, failing_realloc, free };
    static const struct dspy_allocator libc = { malloc, realloc, free };
    char text[2000]; /* a long piece (the heap's allocations) and short ones */
    memset(text, 'q', 300);
    for (size_t i = 300; i < sizeof(text) - 1; i++)
        text[i] = "hello world "[i % 12];
    text[sizeof(text) - 1] = '\0';
    for (long k = 0;; k++) {
        dspy_tokenizer *t = NULL;
        uint32_t *ids = NULL;
        size_t n;
        struct dspy_error err;
        dspy_set_allocator(&failing);
        fail_after = k;
        dspy_status rc = dspy_tokenizer_open("cl100k_base", "models/tiktoken", &t, &err);
        if (!rc)
            rc = dspy_tokenizer_encode(t, text, strlen(text), 0, &ids, &n, &err);
        dspy_set_allocator(&libc);
        dspy_tokenizer_free(t);
        dspy_free(ids);
        if (!rc)
            break;
        assert_int_equal(rc, DSPY_ENOMEM);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cl100k_pieces),  cmocka_unit_test(test_o200k_pieces),
        cmocka_unit_test(test_classes),        cmocka_unit_test(test_real_ids),
        cmocka_unit_test(test_models),         cmocka_unit_test(test_merges),
        cmocka_unit_test(test_bad_rank_files), cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
