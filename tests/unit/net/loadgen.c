/* Unit tests for the load generator's pieces that need no network: the response parser
 * (fed whole and one byte at a time), the OpenAI SSE scan, and the seeded schedules. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "net/loadgen_int.h"

static int feed_all(struct dspy__lg_parser *p, const char *s, size_t len, bool bytewise)
{
    size_t off = 0, used;
    int r = LG_MORE;
    while (off < len && r == LG_MORE) {
        size_t n = bytewise ? 1 : len - off;
        r = dspy__lg_parser_feed(p, s + off, n, 1000 + off, &used);
        off += used;
    }
    return r;
}

static const char chunked_sse[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    "2e\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"\"}}]}\n\n\r\n"
    "30\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\r\n"
    "48\r\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n\r\n"
    "e\r\ndata: [DONE]\n\n\r\n"
    "0\r\n\r\n";

static void sse_stream_whole_and_bytewise(void **state)
{
    (void)state;
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        struct dspy__lg_parser p;
        assert_int_equal(dspy__lg_parser_init(&p, DSPY_LOADGEN_OPENAI, 4096, 64), DSPY_OK);
        assert_int_equal(feed_all(&p, chunked_sse, sizeof(chunked_sse) - 1, bytewise), LG_DONE);
        assert_int_equal(p.h.status, 200);
        assert_true(p.h.stream && p.h.keepalive && p.saw_done);
        assert_int_equal(p.chunks, 2); /* the usage-only chunk carries no token */
        assert_int_equal(p.usage_tokens, 2);
        assert_int_equal(p.prompt_tokens, 3);
        assert_true(p.first_content_ns > p.first_token_ns || !bytewise);
        assert_int_equal(dspy__lg_parser_outcome(&p), DSPY_LG_OK);
        dspy__lg_parser_reset(&p); /* a second response on the same connection */
        assert_int_equal(feed_all(&p, chunked_sse, sizeof(chunked_sse) - 1, bytewise), LG_DONE);
        assert_int_equal(p.chunks, 2);
        dspy__lg_parser_release(&p);
    }
}

static void json_body_and_errors(void **state)
{
    (void)state;
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 46\r\n\r\n"
                             "{\"choices\":[],\"usage\":{\"completion_tokens\":7}}";
    static const char bad[] = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"choices\"";
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n"
                               "Connection: close\r\n\r\n{}";
    struct dspy__lg_parser p;
    assert_int_equal(dspy__lg_parser_init(&p, DSPY_LOADGEN_OPENAI, 40, 8), DSPY_OK);
    assert_int_equal(feed_all(&p, ok, sizeof(ok) - 1, true), LG_DONE);
    assert_int_equal(p.usage_tokens, 7); /* found in the kept 40-byte tail of 46 */
    assert_int_equal(dspy__lg_parser_outcome(&p), DSPY_LG_OK);
    dspy__lg_parser_reset(&p);
    assert_int_equal(feed_all(&p, bad, sizeof(bad) - 1, false), LG_DONE);
    assert_int_equal(dspy__lg_parser_outcome(&p), DSPY_LG_MALFORMED);
    dspy__lg_parser_reset(&p);
    assert_int_equal(feed_all(&p, busy, sizeof(busy) - 1, false), LG_DONE);
    assert_int_equal(dspy__lg_parser_outcome(&p), DSPY_LG_HTTP);
    assert_false(p.h.keepalive);
    dspy__lg_parser_reset(&p);
    assert_int_equal(feed_all(&p, "HTTP/1.1 200 OK\r\n\r\npartial", 26, false), LG_MORE);
    assert_int_equal(dspy__lg_parser_eof(&p), LG_DONE); /* read-to-close body */
    dspy__lg_parser_reset(&p);
    assert_int_equal(feed_all(&p, "garbage\r\n\r\n", 11, false), LG_ERROR);
    dspy__lg_parser_release(&p);
}

static void schedule_rate_and_reproducibility(void **state)
{
    (void)state;
    struct dspy_rate_stage st[] = { { 10, 100, 100 } };
    enum dspy_arrival kinds[] = { DSPY_ARRIVAL_CONSTANT, DSPY_ARRIVAL_POISSON, DSPY_ARRIVAL_GAMMA };
    for (int k = 0; k < 3; k++) {
        struct dspy_schedule a, b;
        assert_int_equal(dspy_schedule_init(&a, st, 1, kinds[k], 0.5, 42), DSPY_OK);
        assert_int_equal(dspy_schedule_init(&b, st, 1, kinds[k], 0.5, 42), DSPY_OK);
        double t, u, last = 0;
        int n = 0;
        while (dspy_schedule_next(&a, &t)) {
            assert_true(dspy_schedule_next(&b, &u));
            assert_true(t == u && t >= last);
            last = t;
            n++;
        }
        assert_true(n > 900 && n < 1100); /* 100/s for 10 s */
    }
    /* A linear ramp 0 -> 100 over 10 s has 500 arrivals, 3/4 of them in the second half. */
    struct dspy_rate_stage ramp[] = { { 10, 0, 100 } };
    struct dspy_schedule s;
    assert_int_equal(dspy_schedule_init(&s, ramp, 1, DSPY_ARRIVAL_CONSTANT, 1, 0), DSPY_OK);
    double t;
    int n = 0, late = 0;
    while (dspy_schedule_next(&s, &t)) {
        n++;
        late += t >= 5;
    }
    assert_int_equal(n, 500);
    assert_true(late >= 374 && late <= 376);
    assert_true(fabs(dspy_schedule_rate_at(&s, 2.5) - 25) < 1e-9);
    assert_int_equal(dspy_schedule_init(&s, st, 1, DSPY_ARRIVAL_GAMMA, 0, 0), DSPY_EINVAL);
}

/* The profile's length is the sum of its stages, whatever their rates; the schedule ends
 * there. */
static void schedule_duration_sums_stages(void **state)
{
    (void)state;
    struct dspy_rate_stage st[] = { { 2, 0, 10 }, { 3, 10, 10 }, { 0.5, 10, 0 } };
    struct dspy_schedule s;
    assert_int_equal(dspy_schedule_init(&s, st, 3, DSPY_ARRIVAL_CONSTANT, 1, 0), DSPY_OK);
    assert_true(fabs(dspy_schedule_duration(&s) - 5.5) < 1e-12);
    double t, last = 0;
    while (dspy_schedule_next(&s, &t))
        last = t;
    assert_true(last > 5.0 && last <= 5.5);
    assert_int_equal(dspy_schedule_init(&s, st, 1, DSPY_ARRIVAL_POISSON, 1, 0), DSPY_OK);
    assert_true(fabs(dspy_schedule_duration(&s) - 2.0) < 1e-12);
    assert_int_equal(dspy_schedule_init(&s, st, 0, DSPY_ARRIVAL_POISSON, 1, 0), DSPY_OK);
    assert_true(dspy_schedule_duration(&s) == 0.0);
    assert_false(dspy_schedule_next(&s, &t));
}

static void build_request_bytes(void **state)
{
    (void)state;
    const char *h[] = { "Content-Type: application/json" };
    size_t len;
    char *b = dspy_loadgen_build_request("POST", "127.0.0.1", 8000, "/v1/x", h, 1, "{}", 2, &len);
    assert_string_equal(b, "POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
                           "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
    assert_int_equal(len, strlen(b));
    dspy_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sse_stream_whole_and_bytewise),
        cmocka_unit_test(json_body_and_errors),
        cmocka_unit_test(schedule_rate_and_reproducibility),
        cmocka_unit_test(schedule_duration_sums_stages),
        cmocka_unit_test(build_request_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
