/* Unit tests for the retrieve layer: the tokenizer, BM25 ranking and ties, DSPy's long_text
 * ("title | text"), k bounds, Retrieve's JSON view, and the images the checks refuse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dspyc/retrieve.h>

#include "retrieve/retrieve_int.h"

struct toks {
    char buf[512];
    size_t len;
};

static void collect(void *userdata, const char *tok, size_t len)
{
    struct toks *t = userdata;
    memcpy(t->buf + t->len, tok, len);
    t->len += len;
    t->buf[t->len++] = '|';
    t->buf[t->len] = '\0';
}

static void test_tokenizer(void **state)
{
    (void)state;
    struct toks t = { .len = 0 };
    const char *s = "Hello, WORLD!  it's e-mail caf\xc3\xa9\t42x";
    size_t n = dspy_bm25_tokenize(s, strlen(s), collect, &t);
    assert_int_equal(n, 8);
    assert_string_equal(t.buf, "Hello|WORLD|it|s|e|mail|caf\xc3\xa9|42x|");
    assert_int_equal(dspy_bm25_tokenize("  ,. ", 5, NULL, NULL), 0);
}

static dspy_retriever *from_text(const char *text)
{
    unsigned char *img;
    size_t size;
    dspy_retriever *r = NULL;
    struct dspy_error err;
    assert_int_equal(dspy__bm25_build_text("t.jsonl", text, strlen(text), &img, &size, NULL, &err),
                     DSPY_OK);
    assert_int_equal(dspy__bm25_open_image(img, size, true, "t", &r, &err), DSPY_OK);
    return r;
}

static void test_ranking_and_ties(void **state)
{
    (void)state;
    dspy_retriever *r = from_text("{\"id\": \"a\", \"text\": \"red apple\"}\n"
                                  "{\"id\": \"b\", \"text\": \"green pear\", \"title\": \"Pear\"}\n"
                                  "{\"id\": \"c\", \"text\": \"red apple\"}\n"
                                  "{\"id\": 7, \"text\": \"apple apple apple pie\"}\n"
                                  "{\"id\": \"e\", \"text\": \"blue sky\"}\n");
    assert_string_equal(dspy_retriever_kind(r), "bm25");
    assert_int_equal(dspy_retriever_size(r), 5);
    struct dspy_passage *p;
    size_t n;
    assert_int_equal(dspy_retriever_search(r, "RED", 10, &p, &n, NULL), DSPY_OK);
    assert_int_equal(n, 2);            /* only passages sharing a token */
    assert_string_equal(p[0].id, "a"); /* equal scores: the earlier passage first */
    assert_string_equal(p[1].id, "c");
    assert_true(p[0].score == p[1].score && p[0].score > 0);
    dspy_passages_free(p, n);
    assert_int_equal(dspy_retriever_search(r, "apple", 1, &p, &n, NULL), DSPY_OK);
    assert_int_equal(n, 1);
    assert_string_equal(p[0].id, "7");
    assert_int_equal(p[0].pid, 3);
    dspy_passages_free(p, n);
    assert_int_equal(dspy_retriever_search(r, "pear", 3, &p, &n, NULL), DSPY_OK);
    assert_int_equal(n, 1);
    assert_string_equal(p[0].title, "Pear");
    assert_string_equal(p[0].text, "Pear | green pear");
    dspy_passages_free(p, n);
    assert_int_equal(dspy_retriever_search(r, "nothing", 3, &p, &n, NULL), DSPY_OK);
    assert_int_equal(n, 0);
    dspy_passages_free(p, n);
    struct dspy_error err;
    assert_int_equal(dspy_retriever_search(r, "red", 0, &p, &n, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "k must be from 1 to 1000"));
    assert_int_equal(dspy_retriever_search(r, "red", 1001, &p, &n, &err), DSPY_EINVAL);
    json_t *passages = NULL;
    assert_int_equal(dspy_retriever_retrieve(r, "sky pear", 3, &passages, NULL), DSPY_OK);
    assert_int_equal(json_array_size(passages), 2);
    assert_string_equal(json_string_value(json_array_get(passages, 1)), "blue sky");
    json_decref(passages);
    dspy_retriever_free(r);
    dspy_retriever_free(NULL);
}

static void test_bad_text(void **state)
{
    (void)state;
    unsigned char *img;
    size_t size;
    struct dspy_error err;
    const char *bad = "{\"id\": \"a\", \"text\": \"x\"}\r\n{\"id\": \"b\", \"title\": \"t\"}\n";
    assert_int_equal(dspy__bm25_build_text("c.jsonl", bad, strlen(bad), &img, &size, NULL, &err),
                     DSPY_EINVAL);
    assert_int_equal(err.line, 2);
    assert_string_equal(err.field, "text");
    assert_string_equal(err.file, "c.jsonl");
    assert_string_equal(err.message, "c.jsonl:2: field \"text\": missing");
}

static void test_damaged_images(void **state)
{
    (void)state;
    const char *text =
        "{\"id\": \"a\", \"text\": \"one two\"}\n{\"id\": \"b\", \"text\": \"two\"}\n";
    unsigned char *img;
    size_t size;
    struct dspy_error err;
    assert_int_equal(dspy__bm25_build_text("c", text, strlen(text), &img, &size, NULL, &err),
                     DSPY_OK);
    assert_int_equal(dspy__bm25_validate(img, size, "x.idx", &err), DSPY_OK);
    assert_int_equal(dspy__bm25_validate(img, size - 8, "x.idx", &err), DSPY_ECORRUPT);
    assert_non_null(strstr(err.message, "x.idx: not a valid BM25 index"));
    assert_string_equal(err.file, "x.idx");
    img[size - 1] ^= 1; /* padding or text: the checksum sees it */
    assert_int_equal(dspy__bm25_validate(img, size, "x.idx", &err), DSPY_ECORRUPT);
    assert_non_null(strstr(err.message, "checksum"));
    dspy_free(img);
}

static void test_colbert_options(void **state)
{
    (void)state;
    struct dspy_colbert_options o = DSPY_COLBERT_OPTIONS_INIT;
    dspy_retriever *r = NULL;
    struct dspy_error err;
    assert_int_equal(dspy_retriever_colbert(&o, &r, &err), DSPY_EINVAL);
    o.url = "ftp://x";
    assert_int_equal(dspy_retriever_colbert(&o, &r, &err), DSPY_EINVAL);
    o.url = "http://127.0.0.1:1/search";
    o.timeout_ms = 2000;
    assert_int_equal(dspy_retriever_colbert(&o, &r, &err), DSPY_OK);
    assert_string_equal(dspy_retriever_kind(r), "colbertv2");
    struct dspy_passage *p;
    size_t n;
    /* port 1 refuses: a network error naming the server, nothing returned */
    assert_int_equal(dspy_retriever_search(r, "q", 3, &p, &n, &err), DSPY_ELM_NETWORK);
    assert_non_null(strstr(err.message, "ColBERTv2 server http://127.0.0.1:1/search"));
    dspy_retriever_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokenizer),       cmocka_unit_test(test_ranking_and_ties),
        cmocka_unit_test(test_bad_text),        cmocka_unit_test(test_damaged_images),
        cmocka_unit_test(test_colbert_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
