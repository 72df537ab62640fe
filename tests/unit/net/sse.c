/* Unit tests for the SSE scanner: the WHATWG field rules, every line-end style, and the
 * same events whatever the reads the stream is cut into (every split point, every pair of
 * split points, byte by byte); no allocation per event once warm. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/sse.h"

/* Events rendered as "type|id|data\n" lines, so streams compare as strings. */
struct seen {
    char out[8192];
    size_t len;
    int events;
    uint64_t last_recv;
    int stop_after; /* stop when this many events were seen; 0 = never */
};

static int record(void *ud, const struct dspy__sse_event *ev)
{
    struct seen *s = ud;
    int n = snprintf(s->out + s->len, sizeof(s->out) - s->len, "%.*s|%.*s|%.*s%s\n",
                     (int)ev->type.len, ev->type.ptr, (int)ev->id.len, ev->id.ptr,
                     (int)ev->data.len, ev->data.ptr, ev->done ? "|DONE" : "");
    if (n > 0 && (size_t)n < sizeof(s->out) - s->len)
        s->len += (size_t)n;
    s->events++;
    s->last_recv = ev->recv_ns;
    return s->stop_after && s->events >= s->stop_after;
}

/* Feed `text` cut at the given split points; returns the scanner's last status. */
static dspy_status run(const char *text, size_t n, const size_t *cuts, size_t ncuts,
                       struct seen *out, bool *clean)
{
    struct dspy__sse s;
    memset(out, 0, sizeof(*out));
    dspy__sse_init(&s, 4096, record, out);
    size_t at = 0;
    dspy_status rc = DSPY_OK;
    for (size_t i = 0; i <= ncuts && !rc; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        /* A copy per read, freed right after: views into a read must not outlive it. */
        char *piece = malloc(end - at + 1);
        memcpy(piece, text + at, end - at);
        rc = dspy__sse_feed(&s, piece, end - at, (uint64_t)i + 1);
        free(piece);
        at = end;
    }
    if (clean)
        *clean = dspy__sse_finish(&s);
    dspy__sse_release(&s);
    return rc;
}

static void expect(const char *text, const char *want)
{
    struct seen got;
    run(text, strlen(text), NULL, 0, &got, NULL);
    assert_string_equal(got.out, want);
}

static void field_rules(void **state)
{
    (void)state;
    expect("data: hello\n\n", "message||hello\n");
    expect("data:hello\n\n", "message||hello\n");
    expect("data:  two spaces\n\n", "message|| two spaces\n");
    expect("data: a\ndata: b\ndata\n\n", "message||a\nb\n\n");
    expect("event: delta\ndata: x\n\n", "delta||x\n");
    expect("event: delta\n\ndata: x\n\n", "message||x\n"); /* type resets on empty event */
    expect("id: 7\ndata: a\n\ndata: b\n\n", "message|7|a\nmessage|7|b\n");
    expect("id: 7\ndata: a\n\nid\ndata: b\n\n", "message|7|a\nmessage||b\n");
    expect(": keep-alive\n\ndata: x\n\n", "message||x\n");
    expect("retry: 3000\nfoo: bar\ndata: x\n\n", "message||x\n");
    expect("data: [DONE]\n\n", "message||[DONE]|DONE\n");
    expect("data: [DONE] \n\n", "message||[DONE] \n");
    expect("data:\n\n", "message||\n");
    expect("event: x\n\n", ""); /* no data: nothing dispatched */
    expect("data: x\n", "");    /* never terminated */
    expect("\xEF\xBB\xBF"
           "data: bom\n\n",
           "message||bom\n");
    expect("data: a\r\n\r\ndata: b\r\rdata: c\n\n", "message||a\nmessage||b\nmessage||c\n");
    expect("data: a\r\ndata: b\r\n\r\n", "message||a\nb\n");
    expect("data: a:b:c\n\n", "message||a:b:c\n");
}

static void retry_and_comments(void **state)
{
    (void)state;
    struct seen got;
    struct dspy__sse s;
    memset(&got, 0, sizeof(got));
    dspy__sse_init(&s, 0, record, &got);
    const char *t = ": ping\n: ping\nretry: 250\nretry: x1\n\n";
    assert_int_equal(dspy__sse_feed(&s, t, strlen(t), 1), DSPY_OK);
    assert_int_equal(s.retry_ms, 250);
    assert_int_equal(s.comments, 2);
    assert_int_equal(got.events, 0);
    assert_true(dspy__sse_finish(&s));
    dspy__sse_release(&s);
}

static const char *const streams[] = {
    "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n"
    "data: {\"choices\":[],\"usage\":{\"total_tokens\":9}}\n\ndata: [DONE]\n\n",
    "event: message_start\r\ndata: {\"a\":1}\r\n\r\n: comment\r\nevent: delta\r\n"
    "data: line1\r\ndata: line2\r\nid: 42\r\n\r\ndata: tail\r\n\r\n",
    "data: a\r\rdata: b\r\r\ndata: c\n\r\ndata: d\r\n\n",
    "\xEF\xBB\xBF"
    "id: 1\ndata: x\n\nid: 2\ndata: y\ndata: z\n\n",
    "data: {\"error\":{\"message\":\"overloaded\"}}\n\nevent: error\ndata: e\n\n",
};

/* The events of a stream do not depend on how it is cut into reads. */
static void every_split_point(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof(streams) / sizeof(streams[0]); k++) {
        const char *t = streams[k];
        size_t n = strlen(t);
        struct seen whole, part;
        bool clean_whole, clean_part;
        assert_int_equal(run(t, n, NULL, 0, &whole, &clean_whole), DSPY_OK);
        assert_true(whole.events > 0);
        assert_true(clean_whole);
        for (size_t i = 0; i <= n; i++) {
            assert_int_equal(run(t, n, &i, 1, &part, &clean_part), DSPY_OK);
            assert_string_equal(part.out, whole.out);
            assert_true(clean_part);
        }
        for (size_t i = 0; i <= n; i++) {
            for (size_t j = i; j <= n; j++) {
                size_t cuts[2] = { i, j };
                run(t, n, cuts, 2, &part, NULL);
                assert_string_equal(part.out, whole.out);
            }
        }
        size_t *bytes = malloc(n * sizeof(*bytes));
        for (size_t i = 0; i < n; i++)
            bytes[i] = i + 1;
        run(t, n, bytes, n ? n - 1 : 0, &part, &clean_part);
        assert_string_equal(part.out, whole.out);
        assert_true(clean_part);
        free(bytes);
    }
}

/* Many events in one read, and the timestamp is the completing read's. */
static void merged_and_timestamps(void **state)
{
    (void)state;
    struct seen got;
    memset(&got, 0, sizeof(got));
    struct dspy__sse s;
    dspy__sse_init(&s, 0, record, &got);
    const char *t = "data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4";
    assert_int_equal(dspy__sse_feed(&s, t, strlen(t), 100), DSPY_OK);
    assert_int_equal(got.events, 3);
    assert_int_equal(got.last_recv, 100);
    assert_false(dspy__sse_finish(&s));
    assert_int_equal(dspy__sse_feed(&s, "\n", 1, 200), DSPY_OK);
    assert_int_equal(got.events, 3);
    assert_int_equal(dspy__sse_feed(&s, "\n", 1, 300), DSPY_OK);
    assert_int_equal(got.events, 4);
    assert_int_equal(got.last_recv, 300);
    assert_true(dspy__sse_finish(&s));
    /* reset forgets the id and any partial event */
    assert_int_equal(dspy__sse_feed(&s, "id: 9\ndata: p", 13, 1), DSPY_OK);
    dspy__sse_reset(&s);
    assert_true(dspy__sse_finish(&s));
    got.len = 0;
    got.out[0] = '\0';
    assert_int_equal(dspy__sse_feed(&s, "data: q\n\n", 9, 1), DSPY_OK);
    assert_string_equal(got.out, "message||q\n");
    dspy__sse_release(&s);
}

static void limits_and_stop(void **state)
{
    (void)state;
    struct seen got;
    memset(&got, 0, sizeof(got));
    struct dspy__sse s;
    dspy__sse_init(&s, 16, record, &got);
    assert_int_equal(dspy__sse_feed(&s, "data: 0123456789\n\n", 18, 1), DSPY_OK);
    assert_int_equal(dspy__sse_feed(&s, "data: 0123456789abcdef", 22, 1), DSPY_ETOOBIG);
    assert_int_equal(dspy__sse_feed(&s, "\n\n", 2, 1), DSPY_ETOOBIG); /* sticky */
    assert_false(dspy__sse_finish(&s));
    dspy__sse_reset(&s);
    /* joined data over the limit, though each line fits */
    assert_int_equal(dspy__sse_feed(&s, "data: 01234567\ndata: 01234567\n", 30, 1), DSPY_ETOOBIG);
    dspy__sse_reset(&s);
    got.events = 0;
    got.stop_after = 1;
    assert_int_equal(dspy__sse_feed(&s, "data: a\n\ndata: b\n\n", 18, 1), DSPY_ECANCELED);
    assert_int_equal(got.events, 1);
    dspy__sse_release(&s);
}

static size_t allocations;
static void *count_malloc(size_t n)
{
    allocations++;
    return malloc(n);
}
static void *count_realloc(void *p, size_t n)
{
    allocations++;
    return realloc(p, n);
}

static void no_allocation_per_event(void **state)
{
    (void)state;
    struct dspy_allocator a = { count_malloc, count_realloc, free };
    dspy_set_allocator(&a);
    struct seen got;
    memset(&got, 0, sizeof(got));
    struct dspy__sse s;
    dspy__sse_init(&s, 0, record, &got);
    const char *ev =
        "event: d\ndata: {\"choices\":[{\"delta\":{\"content\":\"tok\"}}]}\ndata: x\n\n";
    size_t n = strlen(ev);
    for (int i = 0; i < 3; i++) { /* warm up, with splits that use every buffer */
        dspy__sse_feed(&s, ev, 10, 1);
        dspy__sse_feed(&s, ev + 10, n - 10, 1);
    }
    size_t before = allocations;
    for (int i = 0; i < 1000; i++) {
        got.len = 0;
        dspy__sse_feed(&s, ev, 10, 1);
        dspy__sse_feed(&s, ev + 10, n - 10, 1);
        dspy__sse_feed(&s, ev, n, 1);
    }
    assert_int_equal(allocations, before);
    assert_int_equal(got.events, 2003);
    dspy__sse_release(&s);
    dspy_set_allocator(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(field_rules),       cmocka_unit_test(retry_and_comments),
        cmocka_unit_test(every_split_point), cmocka_unit_test(merged_and_timestamps),
        cmocka_unit_test(limits_and_stop),   cmocka_unit_test(no_allocation_per_event),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
