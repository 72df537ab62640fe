/* Unit tests for the HTTP client engine against a loopback server in this process
 * (tests/support/httpd.h): many concurrent requests, keep-alive, timeouts, dropped
 * connections, cancellation, retries with Retry-After, rate limits, backpressure, SSE. */
/* threads: the engine's loop thread and submitters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sched.h>

#include <curl/curl.h>
#include <errno.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base/clock.h"
#include "net/engine.h"
#include "support/httpd.h"

#define MS 1000000ull

static struct ts_server *srv;
static char base[64];

static int group_setup(void **state)
{
    (void)state;
    srv = ts_start(NULL);
    if (!srv)
        return -1;
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/v1/x", ts_port(srv));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    ts_stop(srv);
    return 0;
}

static struct dspy__engine *engine(const struct dspy__engine_options *o)
{
    struct dspy_error err;
    struct dspy__engine *e = dspy__engine_new(o, &err);
    assert_non_null(e);
    return e;
}

static const char *url(const char *query)
{
    static _Thread_local char buf[256];
    snprintf(buf, sizeof(buf), "%s?%s", base, query);
    return buf;
}

/* Submit and wait; returns the handle (caller releases). */
static struct dspy__engine_call *fetch(struct dspy__engine *e, struct dspy__engine_request *r,
                                       const struct dspy__engine_result **res)
{
    struct dspy__engine_call *c = NULL;
    assert_int_equal(dspy__engine_submit(e, r, &c, NULL), DSPY_OK);
    assert_int_equal(dspy__engine_call_wait(c, 0, res), DSPY_OK);
    return c;
}

/* Completion counting for callback-driven tests. */
struct tally {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, ok, by_status[64];
};

static void tally_init(struct tally *t)
{
    memset(t, 0, sizeof(*t));
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
}

/* A test on the frozen clock thaws it when it ends, failed or not. */
static int thaw_clock(void **state)
{
    (void)state;
    dspy__clock_freeze(0);
    return 0;
}

/* One step of the frozen clock (base/clock.h): move it `ns` on, then have the loop run its
 * timers at the new time -- a request of its own goes through the loop, so when it is
 * answered the loop has seen the clock move. */
static void step_clock(struct dspy__engine *e, uint64_t ns)
{
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    const struct dspy__engine_result *res;
    dspy__clock_advance(ns);
    r.url = url("");
    struct dspy__engine_call *c = fetch(e, &r, &res);
    assert_int_equal(res->status, DSPY_OK);
    dspy__engine_call_release(c);
}

static void tally_wait(struct tally *t, int n)
{
    pthread_mutex_lock(&t->mu);
    while (t->done < n)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
}

static void on_tally(struct dspy__engine_call *c, const struct dspy__engine_result *res, void *ud)
{
    struct tally *t = ud;
    (void)c;
    pthread_mutex_lock(&t->mu);
    t->done++;
    if (res->status == DSPY_OK && res->http_status == 200)
        t->ok++;

    t->by_status[-res->status]++;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void get_and_post(void **state)
{
    (void)state;
    struct dspy__engine *e = engine(NULL);
    const char *lines[] = { "Content-Type: application/json", "X-Test: 1" };
    struct dspy__engine_headers *h = dspy__engine_headers_new(lines, 2);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url("");
    const struct dspy__engine_result *res;
    struct dspy__engine_call *c = fetch(e, &r, &res);
    assert_int_equal(res->status, DSPY_OK);
    assert_int_equal(res->http_status, 200);
    assert_string_equal(res->body, "{\"id\":\"x\",\"ok\":true}");
    assert_int_equal(res->attempts, 1);
    assert_true(res->done_ns >= res->start_ns && res->first_byte_ns >= res->start_ns);
    dspy__engine_call_release(c);

    char *body = dspy_strdup("{\"model\":\"m\"}");
    r.body = body;
    r.body_len = strlen(body);
    r.take_body = true;
    r.headers = h;
    c = fetch(e, &r, &res);
    assert_int_equal(res->http_status, 200);
    dspy__engine_call_release(c);

    struct dspy__engine_request bad = DSPY__ENGINE_REQUEST_INIT;
    bad.url = "ftp://x";
    struct dspy_error err;
    assert_int_equal(dspy__engine_submit(e, &bad, NULL, &err), DSPY_EINVAL);
    bad.url = url("");
    bad.method = "get";
    assert_int_equal(dspy__engine_submit(e, &bad, NULL, &err), DSPY_EINVAL);

    /* h2c needs a libcurl without curl issue 10634: refused clearly, not broken later */
    struct dspy__engine_options o = DSPY__ENGINE_OPTIONS_INIT;
    o.http2_prior_knowledge = true;
    struct dspy__engine *h2c = dspy__engine_new(&o, &err);
    if (curl_version_info(CURLVERSION_NOW)->version_num < 0x080000) {
        assert_null(h2c);
        assert_int_equal(err.code, DSPY_EUNSUPPORTED);
    } else {
        assert_non_null(h2c);
    }
    dspy__engine_free(h2c);
    dspy__engine_free(e);
    dspy__engine_headers_free(h);
}

/* Wait until the server has received `n` more requests than `before`: a barrier on what the
 * server saw, instead of sleeping and hoping the requests got there. */
static void wait_requests(uint64_t before, uint64_t n)
{
    while (ts_requests(srv) - before < n)
        sched_yield();
}

static void thousand_concurrent(void **state)
{
    (void)state;
    enum { N = 1500 };
    struct dspy__engine *e = engine(NULL);
    struct tally t;
    tally_init(&t);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url("d=200");
    r.on_done = on_tally;
    r.userdata = &t;
    uint64_t before = ts_requests(srv);
    for (int i = 0; i < N; i++)
        assert_int_equal(dspy__engine_submit(e, &r, NULL, NULL), DSPY_OK);
    /* All in flight at once: every request reaches the server while none has been answered
     * (each is held 200 ms there; sequential calls would have finished one by one). */
    struct dspy__engine_stats st;
    wait_requests(before, N);
    tally_wait(&t, N);
    assert_int_equal(t.ok, N);
    dspy__engine_get_stats(e, &st);
    assert_int_equal(st.finished, N);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.in_flight, 0);
    dspy__engine_free(e);
}

struct submitter {
    struct dspy__engine *e;
    int ok, cancelled;
};

static void *submit_many(void *arg)
{
    struct submitter *sub = arg;
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url("d=5");
    for (int i = 0; i < 100; i++) {
        struct dspy__engine_call *c;
        if (dspy__engine_submit(sub->e, &r, &c, NULL))
            continue;
        if (i % 10 == 9)
            dspy__engine_call_cancel(c);
        const struct dspy__engine_result *res;
        if (dspy__engine_call_wait(c, 0, &res) == DSPY_OK) {
            sub->ok += res->status == DSPY_OK && res->http_status == 200;
            sub->cancelled += res->status == DSPY_ECANCELED;
        }
        dspy__engine_call_release(c);
    }
    return NULL;
}

/* Eight threads submit, cancel and wait at once through the lock-free inbox. */
static void threads_submit_concurrently(void **state)
{
    (void)state;
    struct dspy__engine *e = engine(NULL);
    pthread_t th[8];
    struct submitter subs[8];
    for (int i = 0; i < 8; i++) {
        subs[i] = (struct submitter){ e, 0, 0 };
        pthread_create(&th[i], NULL, submit_many, &subs[i]);
    }
    int ok = 0, cancelled = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        ok += subs[i].ok;
        cancelled += subs[i].cancelled;
    }
    assert_int_equal(ok + cancelled, 800);
    assert_true(cancelled <= 80);
    struct dspy__engine_stats st;
    dspy__engine_get_stats(e, &st);
    assert_int_equal(st.submitted, 800);
    assert_int_equal(st.finished, 800);
    dspy__engine_free(e);
}

static void keep_alive_reuse(void **state)
{
    (void)state;
    struct dspy__engine *e = engine(NULL);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url("");
    uint64_t before = ts_accepted(srv);
    for (int i = 0; i < 50; i++) {
        const struct dspy__engine_result *res;
        struct dspy__engine_call *c = fetch(e, &r, &res);
        assert_int_equal(res->http_status, 200);
        dspy__engine_call_release(c);
    }
    assert_int_equal(ts_accepted(srv) - before, 1);
    /* A server that closes after each answer costs a connection each, and still works. */
    r.url = url("close=1");
    before = ts_accepted(srv);
    for (int i = 0; i < 5; i++) {
        const struct dspy__engine_result *res;
        struct dspy__engine_call *c = fetch(e, &r, &res);
        assert_int_equal(res->http_status, 200);
        dspy__engine_call_release(c);
    }
    /* the first of them still rides the connection kept from the loop above */
    assert_int_equal(ts_accepted(srv) - before, 4);
    dspy__engine_free(e);
}

/* Transfers spread over many multi handles still find their kept-alive connections. */
static void sharded_pools_reuse_connections(void **state)
{
    (void)state;
    struct dspy__engine_options o = DSPY__ENGINE_OPTIONS_INIT;
    o.transfers_per_multi = 4;
    struct dspy__engine *e = engine(&o);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url("d=50");
    uint64_t before = ts_accepted(srv);
    for (int wave = 0; wave < 3; wave++) {
        struct tally t;
        tally_init(&t);
        r.on_done = on_tally;
        r.userdata = &t;
        for (int i = 0; i < 40; i++)
            assert_int_equal(dspy__engine_submit(e, &r, NULL, NULL), DSPY_OK);
        tally_wait(&t, 40);
        assert_int_equal(t.ok, 40);
        assert_int_equal(ts_accepted(srv) - before, 40); /* the first wave's, reused after */
    }
    dspy__engine_free(e);
}

static void host_connection_limit(void **state)
{
    (void)state;
    struct dspy__engine_options o = DSPY__ENGINE_OPTIONS_INIT;
    o.max_host_connections = 4;
    struct dspy__engine *e = engine(&o);
    struct tally t;
    tally_init(&t);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url("d=20");
    r.on_done = on_tally;
    r.userdata = &t;
    uint64_t before = ts_accepted(srv);
    for (int i = 0; i < 40; i++)
        assert_int_equal(dspy__engine_submit(e, &r, NULL, NULL), DSPY_OK);
    tally_wait(&t, 40);
    assert_int_equal(t.ok, 40);
    assert_true(ts_accepted(srv) - before <= 4);
    dspy__engine_free(e);
}

static void timeout_is_classed(void **state)
{
    (void)state;
    struct dspy__engine *e = engine(NULL);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url("d=3000");
    r.timeout_ns = 200 * MS;
    uint64_t before = ts_requests(srv);
    const struct dspy__engine_result *res;
    struct dspy__engine_call *c = fetch(e, &r, &res);
    assert_int_equal(res->status, DSPY_ELM_TIMEOUT);
    /* Ordering, not time: the request reached the server, and the timeout ended it before
     * the server's 3 s answer (no status). */
    assert_true(ts_requests(srv) - before >= 1);
    assert_int_equal(res->http_status, 0);
    assert_non_null(strstr(res->error, "127.0.0.1"));
    dspy__engine_call_release(c);
    dspy__engine_free(e);
}

static void dropped_is_network(void **state)
{
    (void)state;
    struct dspy__engine *e = engine(NULL);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url("drop=1");
    const struct dspy__engine_result *res;
    struct dspy__engine_call *c = fetch(e, &r, &res);
    assert_int_equal(res->status, DSPY_ELM_NETWORK);
    assert_int_equal(res->http_status, 0);
    dspy__engine_call_release(c);
    /* Nobody listening: connection refused is a network error too. */
    r.url = "http://127.0.0.1:1/v1/x";
    c = fetch(e, &r, &res);
    assert_int_equal(res->status, DSPY_ELM_NETWORK);
    dspy__engine_call_release(c);
    dspy__engine_free(e);
}

/* Out of descriptors, curl reports the socket it could not create as "couldn't connect":
 * the engine classes it DSPY_ERESOURCE and says EMFILE, never a network error. */
static void emfile_is_not_a_network_error(void **state)
{
    (void)state;
    struct dspy__engine *e = engine(NULL);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    const struct dspy__engine_result *res;
    struct rlimit old, low;
    int fds[4096], n = 0;
    r.url = url("status=200");
    dspy__engine_call_release(fetch(e, &r, &res)); /* warm: the loop's own descriptors */
    r.url = "http://127.0.0.1:1/v1/x";             /* a new connection each time */
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    /* Use up every descriptor below a low soft limit. */
    low = old;
    low.rlim_cur = 256;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    while (n < 4096 && (fds[n] = dup(0)) >= 0)
        n++;
    assert_int_equal(errno, EMFILE);
    struct dspy__engine_call *c = fetch(e, &r, &res);
    int status = res->status;
    char error[256];
    snprintf(error, sizeof(error), "%s", res->error);
    dspy__engine_call_release(c);
    while (n)
        close(fds[--n]);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_int_equal(status, DSPY_ERESOURCE);
    assert_non_null(strstr(error, "EMFILE"));
    assert_null(strstr(error, "onnect"));
    /* Descriptors back: the same request is an ordinary refused connection again. */
    c = fetch(e, &r, &res);
    assert_int_equal(res->status, DSPY_ELM_NETWORK);
    dspy__engine_call_release(c);
    dspy__engine_free(e);
}

/* A header line with a control character is refused: CR or LF would make it two headers. */
static void header_lines_with_control_characters_refused(void **state)
{
    (void)state;
    const char *good[] = { "Authorization: Bearer sk-1", "X-A: b" };
    const char *crlf[] = { "X-A: b", "Authorization: Bearer sk-1\r\nX-Injected: 1" };
    const char *lf[] = { "X-A: b\nX-Injected: 1" };
    const char *del[] = { "X-A: b\x7f" };
    struct dspy__engine_headers *h = dspy__engine_headers_new(good, 2);
    assert_non_null(h);
    dspy__engine_headers_free(h);
    assert_null(dspy__engine_headers_new(crlf, 2));
    assert_null(dspy__engine_headers_new(lf, 1));
    assert_null(dspy__engine_headers_new(del, 1));
}

static void too_big(void **state)
{
    (void)state;
    struct dspy__engine *e = engine(NULL);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url("n=100000");
    r.max_response_bytes = 1000;
    const struct dspy__engine_result *res;
    struct dspy__engine_call *c = fetch(e, &r, &res);
    assert_int_equal(res->status, DSPY_ETOOBIG);
    dspy__engine_call_release(c);
    r.max_response_bytes = 200000;
    c = fetch(e, &r, &res);
    assert_int_equal(res->status, DSPY_OK);
    assert_int_equal(res->body_len, 100000);
    dspy__engine_call_release(c);
    dspy__engine_free(e);
}

static void cancel_one_and_group(void **state)
{
    (void)state;
    struct dspy__engine *e = engine(NULL);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url("d=5000");
    struct dspy__engine_call *c;
    uint64_t before = ts_requests(srv);
    assert_int_equal(dspy__engine_submit(e, &r, &c, NULL), DSPY_OK);
    wait_requests(before, 1); /* in flight at the server, which holds it 5 s */
    dspy__engine_call_cancel(c);
    const struct dspy__engine_result *res;
    assert_int_equal(dspy__engine_call_wait(c, 0, &res), DSPY_OK);
    assert_int_equal(res->status, DSPY_ECANCELED);
    assert_int_equal(res->http_status, 0); /* ended by the cancel, not by an answer */
    dspy__engine_call_cancel(c);           /* finished: a no-op */
    dspy__engine_call_release(c);

    struct dspy__engine_group *g = dspy__engine_group_new(e);
    struct tally t;
    tally_init(&t);
    r.group = g;
    r.on_done = on_tally;
    r.userdata = &t;
    before = ts_requests(srv);
    for (int i = 0; i < 100; i++)
        assert_int_equal(dspy__engine_submit(e, &r, NULL, NULL), DSPY_OK);
    wait_requests(before, 100);
    dspy__engine_group_cancel(g);
    /* Calls submitted to a cancelled group end at once. */
    for (int i = 0; i < 10; i++)
        assert_int_equal(dspy__engine_submit(e, &r, NULL, NULL), DSPY_OK);
    dspy__engine_group_free(g);
    tally_wait(&t, 110); /* before any of the 5 s answers */
    assert_int_equal(t.by_status[-DSPY_ECANCELED], 110);
    assert_int_equal(t.ok, 0);
    dspy__engine_free(e);
}

static void wait_deadline_and_free_cancels(void **state)
{
    (void)state;
    struct dspy__engine *e = engine(NULL);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url("d=5000");
    struct dspy__engine_call *c[5];
    for (int i = 0; i < 5; i++)
        assert_int_equal(dspy__engine_submit(e, &r, &c[i], NULL), DSPY_OK);
    const struct dspy__engine_result *res;
    assert_int_equal(dspy__engine_call_wait(c[0], dspy_clock_ns() + 50 * MS, &res),
                     DSPY_ELM_TIMEOUT);
    assert_false(dspy__engine_call_done(c[0]));
    dspy__engine_free(e);
    for (int i = 0; i < 5; i++) {
        assert_true(dspy__engine_call_done(c[i]));
        assert_int_equal(dspy__engine_call_wait(c[i], 0, &res), DSPY_OK);
        assert_int_equal(res->status, DSPY_ECANCELED);
        dspy__engine_call_release(c[i]);
    }
}

/* Submit a call that fails once with a Retry-After of `wait_ms`, then step the frozen
 * clock 50 ms at a time: the call may not end before the clock has moved `wait_ms` on,
 * and it ends within a few steps after. Returns the result (caller releases `*call`). */
static const struct dspy__engine_result *retry_after_steps(struct dspy__engine *e,
                                                           struct dspy__engine_request *r,
                                                           uint64_t wait_ms,
                                                           struct dspy__engine_call **call)
{
    const struct dspy__engine_result *res;
    uint64_t before = ts_requests(srv), moved = 0;
    ts_set_failures(srv, 1);
    assert_int_equal(dspy__engine_submit(e, r, call, NULL), DSPY_OK);
    wait_requests(before, 1); /* the first attempt is at the server */
    while (!dspy__engine_call_done(*call)) {
        assert_true(moved <= (wait_ms + 10000) * MS); /* it ends some steps after the wait */
        step_clock(e, 50 * MS);
        moved += 50 * MS;
    }
    assert_true(moved >= wait_ms * MS); /* it did not end sooner on the clock it read */
    assert_int_equal(dspy__engine_call_wait(*call, 0, &res), DSPY_OK);
    assert_true(res->done_ns - res->submit_ns >= wait_ms * MS);
    return res;
}

static void retry_after_is_honoured(void **state)
{
    (void)state;
    struct dspy__engine *e = engine(NULL);
    struct dspy__retry_policy p = DSPY__RETRY_POLICY_INIT;
    p.base_ns = 10 * MS;
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.retry = &p;
    struct dspy__engine_call *c;
    dspy__clock_freeze(dspy__now_ns());
    r.url = url("f=1&s=429&ra=1");
    const struct dspy__engine_result *res = retry_after_steps(e, &r, 1000, &c);
    assert_int_equal(res->status, DSPY_OK);
    assert_int_equal(res->http_status, 200);
    assert_int_equal(res->attempts, 2);
    dspy__engine_call_release(c);

    r.url = url("f=1&s=503&ram=300");
    res = retry_after_steps(e, &r, 300, &c);
    assert_int_equal(res->http_status, 200);
    assert_int_equal(res->attempts, 2);
    dspy__engine_call_release(c);
    dspy__clock_freeze(0);

    /* A Retry-After beyond the policy's patience is not waited out. */
    p.max_retry_after_ns = 500 * MS;
    r.url = url("f=1&s=429&ra=30");
    ts_set_failures(srv, 1);
    c = fetch(e, &r, &res);
    assert_int_equal(res->http_status, 429);
    assert_int_equal(res->attempts, 1);
    assert_int_equal(res->retry_after_ns, 30000 * MS);
    dspy__engine_call_release(c);
    ts_set_failures(srv, 0);
    dspy__engine_free(e);
}

static void retries_what_is_retryable(void **state)
{
    (void)state;
    struct dspy__engine *e = engine(NULL);
    struct dspy__retry_policy p = DSPY__RETRY_POLICY_INIT;
    p.base_ns = 5 * MS;
    p.max_attempts = 4;
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.retry = &p;
    const struct dspy__engine_result *res;

    r.url = url("f=1&s=500");
    ts_set_failures(srv, 2);
    struct dspy__engine_call *c = fetch(e, &r, &res);
    assert_int_equal(res->http_status, 200);
    assert_int_equal(res->attempts, 3);
    dspy__engine_call_release(c);

    /* A dropped connection is retried. On a fresh engine: libcurl itself quietly retries
     * once when a reused connection turns out dead, which would hide ours. */
    struct dspy__engine *fresh = engine(NULL);
    r.url = url("f=1&drop=1");
    ts_set_failures(srv, 1);
    c = fetch(fresh, &r, &res);
    assert_int_equal(res->status, DSPY_OK);
    assert_int_equal(res->attempts, 2);
    dspy__engine_call_release(c);
    dspy__engine_free(fresh);

    r.url = url("f=1&s=400");
    ts_set_failures(srv, 5);
    c = fetch(e, &r, &res);
    assert_int_equal(res->http_status, 400);
    assert_int_equal(res->attempts, 1);
    assert_string_equal(res->error, "HTTP 400");
    dspy__engine_call_release(c);

    r.url = url("f=1&s=503");
    ts_set_failures(srv, 100);
    c = fetch(e, &r, &res);
    assert_int_equal(res->http_status, 503);
    assert_int_equal(res->attempts, 4);
    dspy__engine_call_release(c);

    r.url = url("d=1000");
    r.timeout_ns = 50 * MS;
    r.deadline_ns = 400 * MS;
    p.max_attempts = 100;
    c = fetch(e, &r, &res);
    assert_int_equal(res->status, DSPY_ELM_TIMEOUT);
    /* the 400 ms deadline holds at most eight 50 ms attempts of the 100 allowed */
    assert_true(res->attempts >= 2 && res->attempts <= 8);
    dspy__engine_call_release(c);
    ts_set_failures(srv, 0);

    struct dspy__engine_stats st;
    dspy__engine_get_stats(e, &st);
    assert_true(st.retries >= 2 + 3 + 1);
    assert_int_equal(st.attempts, st.retries + 4);
    dspy__engine_free(e);
}

static void rate_limit_keeps_rate(void **state)
{
    (void)state;
    enum { N = 50 };
    struct dspy__engine *e = engine(NULL);
    struct dspy__ratelimit_options lo = DSPY__RATELIMIT_OPTIONS_INIT;
    lo.requests_per_minute = 6000; /* 100/s */
    lo.burst_s = 0.01;             /* a bucket of one: no initial burst */
    struct dspy__engine_limiter *l = dspy__engine_limiter_get(e, "loopback/m", &lo);
    assert_non_null(l);
    assert_ptr_equal(dspy__engine_limiter_get(e, "loopback/m", &lo), l);
    struct tally t;
    tally_init(&t);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url("");
    r.limiter = l;
    r.on_done = on_tally;
    r.userdata = &t;
    /* On the frozen clock, stepped 10 ms at a time: one request per step leaves, never more
     * than the steps taken allow (the first at once, then one per 10 ms). */
    dspy__clock_freeze(dspy__now_ns());
    for (int i = 0; i < N; i++)
        assert_int_equal(dspy__engine_submit(e, &r, NULL, NULL), DSPY_OK);
    int steps = 0, done;
    for (;;) {
        pthread_mutex_lock(&t.mu);
        done = t.done;
        pthread_mutex_unlock(&t.mu);
        assert_true(done <= steps + 1);
        if (done == N)
            break;
        assert_true(steps < 10 * N); /* and each step lets the next one go, in time */
        step_clock(e, 10 * MS);
        steps++;
    }
    dspy__clock_freeze(0);
    tally_wait(&t, N);
    assert_int_equal(t.ok, N);
    assert_true(steps >= N - 1);
    struct dspy__engine_stats st;
    dspy__engine_get_stats(e, &st);
    assert_true(st.ratelimit_waits >= N - 2);
    dspy__engine_free(e);
}

static void concurrency_cap(void **state)
{
    (void)state;
    struct dspy__engine *e = engine(NULL);
    struct dspy__ratelimit_options lo = DSPY__RATELIMIT_OPTIONS_INIT;
    lo.max_concurrency = 4;
    struct dspy__engine_limiter *l = dspy__engine_limiter_get(e, "cap", &lo);
    struct tally t;
    tally_init(&t);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url("d=50");
    r.limiter = l;
    r.on_done = on_tally;
    r.userdata = &t;
    for (int i = 0; i < 20; i++)
        assert_int_equal(dspy__engine_submit(e, &r, NULL, NULL), DSPY_OK);
    /* Counts, not time: never more than 4 on the wire, and the other 16 queued. */
    struct dspy__engine_stats st;
    for (int done = 0; done < 20;) {
        dspy__engine_get_stats(e, &st);
        assert_true(st.in_flight <= 4);
        pthread_mutex_lock(&t.mu);
        done = t.done;
        pthread_mutex_unlock(&t.mu);
        sched_yield();
    }
    tally_wait(&t, 20);
    assert_int_equal(t.ok, 20);
    dspy__engine_get_stats(e, &st);
    assert_true(st.ratelimit_waits >= 16);
    dspy__engine_free(e);
}

static void backpressure_busy(void **state)
{
    (void)state;
    struct dspy__engine *e = engine(NULL);
    struct dspy__ratelimit_options lo = DSPY__RATELIMIT_OPTIONS_INIT;
    lo.max_concurrency = 1;
    lo.max_waiting = 4;
    struct dspy__engine_limiter *l = dspy__engine_limiter_get(e, "tight", &lo);
    struct tally t;
    tally_init(&t);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url("d=100");
    r.limiter = l;
    r.on_done = on_tally;
    r.userdata = &t;
    int accepted = 0, busy = 0;
    for (int i = 0; i < 10; i++) {
        struct dspy_error err;
        dspy_status rc = dspy__engine_submit(e, &r, NULL, &err);
        if (rc == DSPY_OK)
            accepted++;
        else if (rc == DSPY_EBUSY && strstr(err.message, "tight"))
            busy++;
    }
    /* Four wait; at most one more if the loop already granted the first. */
    assert_int_equal(accepted + busy, 10);
    assert_true(accepted >= 4 && accepted <= 5);
    tally_wait(&t, accepted);
    assert_int_equal(t.ok, accepted);

    struct dspy__engine_options o = DSPY__ENGINE_OPTIONS_INIT;
    o.max_pending = 8;
    struct dspy__engine *e2 = engine(&o);
    tally_init(&t);
    r.limiter = NULL;
    accepted = 0;
    for (int i = 0; i < 12; i++)
        accepted += dspy__engine_submit(e2, &r, NULL, NULL) == DSPY_OK;
    assert_int_equal(accepted, 8);
    tally_wait(&t, 8);
    struct dspy__engine_stats st;
    dspy__engine_get_stats(e2, &st);
    assert_int_equal(st.rejected_busy, 4);
    dspy__engine_free(e2);
    dspy__engine_free(e);
}

static void limiter_wait_respects_deadline(void **state)
{
    (void)state;
    struct dspy__engine *e = engine(NULL);
    struct dspy__ratelimit_options lo = DSPY__RATELIMIT_OPTIONS_INIT;
    lo.requests_per_minute = 6; /* one now, the next in 10 s */
    struct dspy__engine_limiter *l = dspy__engine_limiter_get(e, "slow", &lo);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url("");
    r.limiter = l;
    r.deadline_ns = 200 * MS;
    const struct dspy__engine_result *res;
    struct dspy__engine_call *c = fetch(e, &r, &res);
    assert_int_equal(res->http_status, 200);
    dspy__engine_call_release(c);
    c = fetch(e, &r, &res);
    assert_int_equal(res->status, DSPY_ELM_TIMEOUT);
    assert_int_equal(res->attempts, 0);
    assert_non_null(strstr(res->error, "rate limiter"));
    dspy__engine_call_release(c);
    /* Cancelling a waiting call frees its place. */
    r.deadline_ns = 0;
    struct dspy__engine_stats st;
    dspy__engine_get_stats(e, &st);
    uint64_t waits = st.ratelimit_waits;
    assert_int_equal(dspy__engine_submit(e, &r, &c, NULL), DSPY_OK);
    do { /* until the loop has queued it at the limiter */
        sched_yield();
        dspy__engine_get_stats(e, &st);
    } while (st.ratelimit_waits == waits);
    dspy__engine_call_cancel(c);
    assert_int_equal(dspy__engine_call_wait(c, 0, &res), DSPY_OK);
    assert_int_equal(res->status, DSPY_ECANCELED);
    dspy__engine_call_release(c);
    dspy__engine_free(e);
}

struct stream_seen {
    int events, done_events;
    uint64_t last_ns;
    bool ordered;
    char text[256];
};

static int on_event(struct dspy__engine_call *c, const struct dspy__sse_event *ev, void *ud)
{
    struct stream_seen *s = ud;
    (void)c;
    s->events++;
    s->done_events += ev->done;
    if (ev->recv_ns < s->last_ns)
        s->ordered = false;
    s->last_ns = ev->recv_ns;
    const char *p = ts_find((char *)ev->data.ptr, ev->data.len, "content\":\"");
    if (p) {
        size_t k = strcspn(p + 10, "\"");
        strncat(s->text, p + 10, k);
    }
    return 0;
}

static void streaming_sse(void **state)
{
    (void)state;
    struct dspy__engine *e = engine(NULL);
    struct stream_seen seen = { 0, 0, 0, true, "" };
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url("sse=5&g=4&split=1");
    r.on_event = on_event;
    r.userdata = &seen;
    const struct dspy__engine_result *res;
    struct dspy__engine_call *c = fetch(e, &r, &res);
    assert_int_equal(res->status, DSPY_OK);
    assert_int_equal(res->http_status, 200);
    assert_int_equal(res->body_len, 0);
    assert_int_equal(seen.events, 6);
    assert_int_equal(seen.done_events, 1);
    assert_true(seen.ordered);
    assert_string_equal(seen.text, "t0t1t2t3t4");
    assert_true(res->first_byte_ns && res->first_byte_ns < seen.last_ns);
    dspy__engine_call_release(c);

    /* A refused stream carries an ordinary body and no events. */
    memset(&seen, 0, sizeof(seen));
    r.url = url("sse=5&s=429&ra=1");
    c = fetch(e, &r, &res);
    assert_int_equal(res->http_status, 429);
    assert_int_equal(seen.events, 0);
    assert_true(res->body_len > 0);
    assert_int_equal(res->retry_after_ns, 1000 * MS);
    dspy__engine_call_release(c);
    dspy__engine_free(e);
}

static int stop_after_two(struct dspy__engine_call *c, const struct dspy__sse_event *ev, void *ud)
{
    (void)c;
    (void)ev;
    return ++*(int *)ud >= 2;
}

struct header_seen {
    char value[32];
};

static void on_done_header(struct dspy__engine_call *c, const struct dspy__engine_result *res,
                           void *ud)
{
    struct header_seen *h = ud;
    const char *v;
    size_t n;
    (void)res;
    if (dspy__engine_call_header(c, "retry-after", &v, &n))
        snprintf(h->value, sizeof(h->value), "%.*s", (int)n, v);
}

static void stream_stop_and_headers(void **state)
{
    (void)state;
    struct dspy__engine *e = engine(NULL);
    int count = 0;
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url("sse=50&g=2");
    r.on_event = stop_after_two;
    r.userdata = &count;
    const struct dspy__engine_result *res;
    struct dspy__engine_call *c = fetch(e, &r, &res);
    assert_int_equal(res->status, DSPY_ECANCELED);
    assert_int_equal(count, 2);
    dspy__engine_call_release(c);

    struct header_seen h = { "" };
    struct dspy__engine_request r2 = DSPY__ENGINE_REQUEST_INIT;
    r2.url = url("s=429&ra=7");
    r2.on_done = on_done_header;
    r2.userdata = &h;
    c = fetch(e, &r2, &res);
    assert_string_equal(h.value, "7");
    const char *v;
    size_t n;
    assert_false(dspy__engine_call_header(c, "retry-after", &v, &n)); /* only in on_done */
    dspy__engine_call_release(c);
    dspy__engine_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(get_and_post),
        cmocka_unit_test(thousand_concurrent),
        cmocka_unit_test(threads_submit_concurrently),
        cmocka_unit_test(keep_alive_reuse),
        cmocka_unit_test(sharded_pools_reuse_connections),
        cmocka_unit_test(host_connection_limit),
        cmocka_unit_test(timeout_is_classed),
        cmocka_unit_test(dropped_is_network),
        cmocka_unit_test(emfile_is_not_a_network_error),
        cmocka_unit_test(header_lines_with_control_characters_refused),
        cmocka_unit_test(too_big),
        cmocka_unit_test(cancel_one_and_group),
        cmocka_unit_test(wait_deadline_and_free_cancels),
        cmocka_unit_test_teardown(retry_after_is_honoured, thaw_clock),
        cmocka_unit_test(retries_what_is_retryable),
        cmocka_unit_test_teardown(rate_limit_keeps_rate, thaw_clock),
        cmocka_unit_test(concurrency_cap),
        cmocka_unit_test(backpressure_busy),
        cmocka_unit_test(limiter_wait_respects_deadline),
        cmocka_unit_test(streaming_sse),
        cmocka_unit_test(stream_stop_and_headers),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
