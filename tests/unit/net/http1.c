/* Unit tests for the HTTP/1.1 response framing parser (net/http1.c): every response fed
 * whole, byte by byte and split in two at every byte must give the same status, body and
 * keep-alive verdict; interim 1xx answers are skipped; broken and oversized heads fail
 * with a reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "net/http1.h"

struct got {
    char body[4096];
    size_t len;
    int stop_at; /* stop the feed once this many body bytes came; -1 = never */
};

static int on_body(void *ud, const char *d, size_t n, uint64_t now)
{
    struct got *g = ud;
    (void)now;
    assert_true(g->len + n < sizeof(g->body));
    memcpy(g->body + g->len, d, n);
    g->len += n;
    return g->stop_at >= 0 && g->len >= (size_t)g->stop_at;
}

/* Feed `s` in pieces: at `split` (0 = whole) or, with split < 0, one byte at a time. */
static int feed(struct dspy__h1 *p, const char *s, size_t len, long split, size_t *consumed)
{
    size_t off = 0, used;
    int r = DSPY__H1_MORE;
    while (off < len && r == DSPY__H1_MORE) {
        size_t n = len - off;
        if (split < 0)
            n = 1;
        else if (split > 0 && off < (size_t)split)
            n = (size_t)split - off;
        r = dspy__h1_feed(p, s + off, n, 1 + off, &used);
        assert_true(used <= n);
        off += used;
    }
    *consumed = off;
    return r;
}

static const char chunked[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                              "Transfer-Encoding: chunked\r\nRetry-After: 7\r\n\r\n"
                              "5;ext=1\r\nhello\r\n"
                              "1\r\n,\r\n"
                              "6\r\n world\r\n"
                              "0\r\nTrailer: x\r\n\r\n";

static void chunked_split_at_every_byte(void **state)
{
    (void)state;
    size_t n = sizeof(chunked) - 1;
    for (long split = -1; split < (long)n; split++) {
        struct got g = { .stop_at = -1 };
        struct dspy__h1 p;
        size_t used;
        dspy__h1_init(&p, 0, on_body, &g);
        assert_int_equal(feed(&p, chunked, n, split, &used), DSPY__H1_DONE);
        assert_int_equal(used, n);
        assert_int_equal(p.status, 200);
        assert_true(p.keepalive && p.chunked && p.stream);
        assert_int_equal(g.len, 12);
        assert_memory_equal(g.body, "hello, world", 12);
        const char *v;
        size_t vl;
        assert_true(dspy__h1_header(&p, "retry-after", &v, &vl));
        assert_int_equal(vl, 1);
        assert_int_equal(v[0], '7');
        assert_false(dspy__h1_header(&p, "content-length", &v, &vl));
        dspy__h1_release(&p);
    }
}

static void length_close_and_pipelined_bytes(void **state)
{
    (void)state;
    static const char two[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
                              "HTTP/1.0 503 Busy\r\nContent-Length: 2\r\n\r\n{}";
    struct got g = { .stop_at = -1 };
    struct dspy__h1 p;
    size_t used;
    dspy__h1_init(&p, 0, on_body, &g);
    assert_int_equal(dspy__h1_feed(&p, two, sizeof(two) - 1, 1, &used), DSPY__H1_DONE);
    assert_int_equal(used, 41); /* stops at the end of the first answer */
    assert_true(p.keepalive);
    dspy__h1_reset(&p);
    size_t rest;
    assert_int_equal(feed(&p, two + used, sizeof(two) - 1 - used, -1, &rest), DSPY__H1_DONE);
    assert_int_equal(p.status, 503);
    assert_false(p.keepalive); /* HTTP/1.0 without keep-alive */
    assert_memory_equal(g.body, "abc{}", 5);
    /* Read-to-close: the body ends with the connection. */
    dspy__h1_reset(&p);
    g.len = 0;
    static const char eof[] = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npartial";
    assert_int_equal(feed(&p, eof, sizeof(eof) - 1, 0, &used), DSPY__H1_MORE);
    assert_false(p.keepalive);
    assert_int_equal(dspy__h1_eof(&p), DSPY__H1_DONE);
    assert_int_equal(g.len, 7);
    /* A Content-Length body cut short is an error at EOF, and says so. */
    dspy__h1_reset(&p);
    assert_int_equal(feed(&p, two, 40, 0, &used), DSPY__H1_MORE);
    assert_int_equal(dspy__h1_eof(&p), DSPY__H1_ERROR);
    assert_non_null(strstr(p.error, "closed inside the response"));
    /* HEAD: a Content-Length but no body. */
    dspy__h1_reset(&p);
    p.no_body = true;
    assert_int_equal(dspy__h1_feed(&p, two, 38, 1, &used), DSPY__H1_DONE);
    assert_int_equal(used, 38);
    dspy__h1_release(&p);
}

static void interim_answers_are_skipped(void **state)
{
    (void)state;
    static const char s[] =
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
        "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\nok";
    for (long split = -1; split < (long)sizeof(s) - 1; split++) {
        struct got g = { .stop_at = -1 };
        struct dspy__h1 p;
        size_t used;
        dspy__h1_init(&p, 0, on_body, &g);
        assert_int_equal(feed(&p, s, sizeof(s) - 1, split, &used), DSPY__H1_DONE);
        assert_int_equal(p.status, 201); /* bare-LF head end accepted too */
        assert_int_equal(g.len, 2);
        dspy__h1_release(&p);
    }
}

static void broken_and_oversized_heads(void **state)
{
    (void)state;
    static const struct {
        const char *in, *why;
    } bad[] = {
        { "garbage\r\n\r\n", "status line" },
        { "HTTP/1.1 2x0 OK\r\n\r\n", "status line" },
        { "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length" },
        { "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "Content-Length" },
        { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size" },
        { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", "CRLF" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct got g = { .stop_at = -1 };
        struct dspy__h1 p;
        size_t used;
        dspy__h1_init(&p, 0, on_body, &g);
        assert_int_equal(feed(&p, bad[i].in, strlen(bad[i].in), -1, &used), DSPY__H1_ERROR);
        assert_non_null(strstr(p.error, bad[i].why));
        dspy__h1_release(&p);
    }
    /* A head over the limit fails without buffering more than the limit. */
    struct got g = { .stop_at = -1 };
    struct dspy__h1 p;
    char big[600];
    size_t used;
    memset(big, 'a', sizeof(big));
    memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
    dspy__h1_init(&p, 256, on_body, &g);
    assert_int_equal(dspy__h1_feed(&p, big, sizeof(big), 1, &used), DSPY__H1_ERROR);
    assert_true(p.oversize);
    assert_true(p.head.len <= 256);
    assert_non_null(strstr(p.error, "larger than the limit"));
    dspy__h1_release(&p);
}

static void body_callback_stops_the_feed(void **state)
{
    (void)state;
    struct got g = { .stop_at = 5 };
    struct dspy__h1 p;
    size_t used;
    dspy__h1_init(&p, 0, on_body, &g);
    assert_int_equal(feed(&p, chunked, sizeof(chunked) - 1, 0, &used), DSPY__H1_STOPPED);
    assert_int_equal(g.len, 5);
    dspy__h1_release(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(chunked_split_at_every_byte),
        cmocka_unit_test(length_close_and_pipelined_bytes),
        cmocka_unit_test(interim_answers_are_skipped),
        cmocka_unit_test(broken_and_oversized_heads),
        cmocka_unit_test(body_callback_stops_the_feed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
