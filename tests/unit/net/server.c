/* Unit tests of the HTTP server wrapper (net layer): the timer heap, and a live server on
 * an ephemeral port driven by a tiny blocking HTTP client: answers now, later, from another
 * thread, streamed, truncated, dropped, paused; 404/405/413; many waiting connections; and
 * stopping with connections still waiting. */
/* threads: libmicrohttpd threads and the timer thread. */
#define _GNU_SOURCE /* memmem, strcasestr */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "net/server.h"

/* ---- Timer heap ---- */

static void noop(void *arg)
{
    (void)arg;
}

static void test_heap_orders_by_due_then_fifo(void **state)
{
    (void)state;
    struct dspy__timerheap h;
    struct dspy__timer_entry e;
    dspy__timerheap_init(&h);
    assert_false(dspy__timerheap_pop(&h, &e));
    srand(7);
    for (uintptr_t i = 0; i < 2000; i++)
        assert_int_equal(dspy__timerheap_push(&h, (uint64_t)(rand() % 50), noop, (void *)i), 0);
    uint64_t last_due = 0;
    uintptr_t last_arg = 0;
    for (size_t n = 0; n < 2000; n++) {
        assert_true(dspy__timerheap_peek(&h, &e));
        struct dspy__timer_entry p;
        assert_true(dspy__timerheap_pop(&h, &p));
        assert_int_equal(p.due_ns, e.due_ns);
        assert_true(p.due_ns >= last_due);
        if (n && p.due_ns == last_due)
            assert_true((uintptr_t)p.arg > last_arg); /* FIFO among equal due times */
        last_due = p.due_ns;
        last_arg = (uintptr_t)p.arg;
    }
    assert_int_equal(dspy__heap_len(&h.heap), 0);
    dspy__timerheap_release(&h);
}

static void test_heap_interleaved(void **state)
{
    (void)state;
    struct dspy__timerheap h;
    struct dspy__timer_entry e;
    dspy__timerheap_init(&h);
    dspy__timerheap_push(&h, 30, noop, NULL);
    dspy__timerheap_push(&h, 10, noop, NULL);
    dspy__timerheap_pop(&h, &e);
    assert_int_equal(e.due_ns, 10);
    dspy__timerheap_push(&h, 20, noop, NULL);
    dspy__timerheap_push(&h, 5, noop, NULL);
    dspy__timerheap_pop(&h, &e);
    assert_int_equal(e.due_ns, 5);
    dspy__timerheap_pop(&h, &e);
    assert_int_equal(e.due_ns, 20);
    dspy__timerheap_pop(&h, &e);
    assert_int_equal(e.due_ns, 30);
    assert_false(dspy__timerheap_peek(&h, &e));
    dspy__timerheap_release(&h);
}

/* ---- A tiny HTTP client ---- */

struct resp {
    int status;
    char head[4096];
    char body[65536];
    size_t len;
    bool complete;
};

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { 0 };
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
        assert_true(k > 0);
        c += k;
        n -= (size_t)k;
    }
}

/* Read one response (Content-Length or chunked). complete = false if the connection closed
 * first; status 0 if it closed before any byte. */
static void read_resp(int fd, struct resp *r)
{
    static char buf[1 << 17];
    size_t have = 0;
    memset(r, 0, sizeof(*r));
    char *end = NULL;
    for (;;) {
        buf[have] = '\0';
        if ((end = strstr(buf, "\r\n\r\n")))
            break;
        ssize_t k = recv(fd, buf + have, sizeof(buf) - 1 - have, 0);
        if (k <= 0)
            return;
        have += (size_t)k;
    }
    size_t hlen = (size_t)(end - buf) + 4;
    snprintf(r->head, sizeof(r->head), "%.*s", (int)hlen, buf);
    sscanf(buf, "HTTP/1.1 %d", &r->status);
    const char *cl = strcasestr(r->head, "Content-Length:");
    bool chunked = strcasestr(r->head, "Transfer-Encoding: chunked") != NULL;
    size_t off = hlen;
    for (;;) {
        if (cl && !chunked) {
            size_t want = strtoul(cl + 15, NULL, 10);
            if (have - off >= want) {
                memcpy(r->body, buf + off, want);
                r->len = want;
                r->complete = true;
                return;
            }
        } else if (chunked) {
            /* Decode what is there; done at the zero chunk. */
            size_t p = off, out = 0;
            bool done = false;
            for (;;) {
                char *nl = memmem(buf + p, have - p, "\r\n", 2);
                if (!nl)
                    break;
                size_t n = strtoul(buf + p, NULL, 16);
                size_t data = (size_t)(nl - buf) + 2;
                if (have < data + n + 2)
                    break;
                if (!n) {
                    done = true;
                    break;
                }
                memcpy(r->body + out, buf + data, n);
                out += n;
                p = data + n + 2;
            }
            r->len = out;
            if (done) {
                r->complete = true;
                return;
            }
        }
        ssize_t k = recv(fd, buf + have, sizeof(buf) - 1 - have, 0);
        if (k <= 0) {
            if (!chunked && cl) {
                r->len = have - off;
                memcpy(r->body, buf + off, r->len);
            }
            return;
        }
        have += (size_t)k;
    }
}

static void get(int port, const char *path, struct resp *r)
{
    char req[512];
    int fd = connect_to(port);
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    send_all(fd, req, (size_t)n);
    read_resp(fd, r);
    close(fd);
}

/* A test on the frozen clock (base/clock.h) thaws it when it ends, failed or not. */
static int thaw_clock(void **state)
{
    (void)state;
    dspy__clock_freeze(0);
    return 0;
}

/* What has arrived on `fd` so far (left unread) holds `text`. */
static bool peek_has(int fd, const char *text)
{
    static char buf[8192];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_PEEK | MSG_DONTWAIT);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return strstr(buf, text) != NULL;
}

/* Wait (on the socket, not the clock) until `text` has arrived on `fd`. */
static void peek_until(int fd, const char *text)
{
    struct pollfd p = { fd, POLLIN, 0 };
    while (!peek_has(fd, text)) {
        p.revents = 0;
        assert_true(poll(&p, 1, 10000) > 0);
        sched_yield(); /* more may be on its way: look again */
    }
}

/* ---- Handlers ---- */

static void h_now(struct dspy__srv_req *req, void *ud)
{
    (void)ud;
    const char *hdr[] = { "X-Test", "1", NULL };
    struct dspy__srv_reply r = { 200, "text/plain", hdr, "hello", 5, NULL };
    dspy__srv_send(req, &r, 0);
}

static void h_later(struct dspy__srv_req *req, void *ud)
{
    (void)ud;
    struct dspy__srv_reply r = { 200, "text/plain", NULL, "late", 4, NULL };
    dspy__srv_send(req, &r, dspy__now_ns() + 60 * 1000000ull);
}

static void h_slow(struct dspy__srv_req *req, void *ud)
{
    (void)ud;
    struct dspy__srv_reply r = { 200, "text/plain", NULL, "slow", 4, NULL };
    dspy__srv_send(req, &r, dspy__now_ns() + 1000 * 1000000ull);
}

/* The answering thread: no cmocka asserts off the main thread; results go here. */
static pthread_t answer_thread;
static dspy_status answer_rc[2];

static struct dspy__srv *answer_srv;

static void *answer_from_thread(void *arg)
{
    struct dspy__srv_req *req = arg;
    struct dspy__srv_stats st;
    do { /* until the handler has returned and the request waits for this answer */
        sched_yield();
        dspy__srv_stats(answer_srv, &st);
    } while (st.waiting < 1);
    char *body = dspy_strdup("from thread");
    struct dspy__srv_reply r = { 201, "text/plain", NULL, body, strlen(body), dspy_free };
    answer_rc[0] = dspy__srv_send(req, &r, 0);
    struct dspy__srv_reply again = { 200, NULL, NULL, "x", 1, NULL };
    answer_rc[1] = dspy__srv_send(req, &again, 0); /* one answer only */
    dspy__srv_req_unref(req);
    return NULL;
}

static void h_thread(struct dspy__srv_req *req, void *ud)
{
    (void)ud;
    dspy__srv_req_ref(req);
    pthread_create(&answer_thread, NULL, answer_from_thread, req);
}

static void h_stream(struct dspy__srv_req *req, void *ud)
{
    (void)ud;
    uint64_t now = dspy__now_ns();
    struct dspy__srv_reply r = { 200, "text/event-stream", NULL, NULL, 0, NULL };
    dspy__srv_stream_start(req, &r, now);
    dspy__srv_stream_push(req, "one ", 4, now);
    dspy__srv_stream_push(req, "two ", 4, now + 20 * 1000000ull);
    dspy__srv_stream_push(req, "three", 5, now + 40 * 1000000ull);
    dspy__srv_stream_end(req, now + 40 * 1000000ull, false);
}

static void h_stream_abort(struct dspy__srv_req *req, void *ud)
{
    (void)ud;
    struct dspy__srv_reply r = { 200, "text/event-stream", NULL, NULL, 0, NULL };
    dspy__srv_stream_start(req, &r, 0);
    dspy__srv_stream_push(req, "partial", 7, 0);
    dspy__srv_stream_end(req, 0, true);
}

static void h_truncated(struct dspy__srv_req *req, void *ud)
{
    (void)ud;
    struct dspy__srv_reply r = { 200, "application/json", NULL, "0123456789", 10, NULL };
    dspy__srv_send_truncated(req, &r, 0, 4);
}

static void h_drop(struct dspy__srv_req *req, void *ud)
{
    (void)ud;
    dspy__srv_drop(req, 0);
}

static void h_never(struct dspy__srv_req *req, void *ud)
{
    (void)req;
    (void)ud; /* waits until the server stops */
}

static void h_echo(struct dspy__srv_req *req, void *ud)
{
    (void)ud;
    size_t len;
    const char *b = dspy__srv_req_body(req, &len);
    struct dspy__srv_reply r = { 200, "text/plain", NULL, b, len, NULL };
    dspy__srv_send(req, &r, 0);
}

static struct dspy__srv *start(size_t max_body)
{
    struct dspy__srv_options o = DSPY__SRV_OPTIONS_INIT;
    o.threads = 2;
    o.max_body = max_body;
    struct dspy__srv *srv = dspy__srv_new(&o, NULL);
    assert_non_null(srv);
    dspy__srv_route(srv, "GET", "/now", 0, h_now, NULL);
    dspy__srv_route(srv, "GET", "/later", 0, h_later, NULL);
    dspy__srv_route(srv, "GET", "/thread", 0, h_thread, NULL);
    dspy__srv_route(srv, "GET", "/slow", 0, h_slow, NULL);
    dspy__srv_route(srv, "GET", "/stream", 0, h_stream, NULL);
    dspy__srv_route(srv, "GET", "/stream-abort", 0, h_stream_abort, NULL);
    dspy__srv_route(srv, "GET", "/truncated", 0, h_truncated, NULL);
    dspy__srv_route(srv, "GET", "/drop", 0, h_drop, NULL);
    dspy__srv_route(srv, "GET", "/never", 0, h_never, NULL);
    dspy__srv_route(srv, "POST", "/echo", 0, h_echo, NULL);
    dspy__srv_route(srv, "GET", "/admin/*", DSPY__SRV_NO_PAUSE, h_now, NULL);
    struct dspy_error err;
    assert_int_equal(dspy__srv_start(srv, &err), 0);
    assert_true(dspy__srv_port(srv) > 0);
    return srv;
}

/* ---- Live tests ---- */

static void test_answers_now_later_and_from_a_thread(void **state)
{
    (void)state;
    struct dspy__srv *srv = start(0);
    int port = dspy__srv_port(srv);
    struct resp r;
    get(port, "/now", &r);
    assert_int_equal(r.status, 200);
    assert_true(r.complete);
    assert_memory_equal(r.body, "hello", 5);
    assert_non_null(strstr(r.head, "X-Test: 1"));

    /* Held until its due time, on the frozen clock: nothing while the clock stands still,
     * the answer once it has moved the 60 ms on. */
    dspy__clock_freeze(dspy__now_ns());
    const char later_req[] = "GET /later HTTP/1.1\r\nHost: x\r\n\r\n";
    int later = connect_to(port);
    send_all(later, later_req, sizeof(later_req) - 1);
    struct dspy__srv_stats st;
    do { /* until the server has it */
        sched_yield();
        dspy__srv_stats(srv, &st);
    } while (st.requests < 2);
    get(port, "/now", &r); /* answered meanwhile */
    assert_int_equal(r.status, 200);
    char probe;
    assert_int_equal(recv(later, &probe, 1, MSG_DONTWAIT), -1);
    dspy__clock_advance(60 * 1000000ull);
    read_resp(later, &r);
    close(later);
    dspy__clock_freeze(0);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "late", 4);

    answer_srv = srv;
    get(port, "/thread", &r);
    pthread_join(answer_thread, NULL);
    assert_int_equal(r.status, 201);
    assert_int_equal(r.len, 11);
    assert_memory_equal(r.body, "from thread", 11); /* the other thread's answer */
    assert_int_equal(answer_rc[0], DSPY_OK);
    /* Refused: answered already, or already finished by the time it tried again. */
    assert_true(answer_rc[1] == DSPY_EINVAL || answer_rc[1] == DSPY_ECANCELED);
    dspy__srv_free(srv);
}

static void test_stream_paced_truncated_dropped(void **state)
{
    (void)state;
    struct dspy__srv *srv = start(0);
    int port = dspy__srv_port(srv);
    struct resp r;
    /* Paced by the frozen clock: each event leaves when the clock reaches its time, the
     * next one not before. */
    dspy__clock_freeze(dspy__now_ns());
    const char stream_req[] = "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n";
    int fd = connect_to(port);
    send_all(fd, stream_req, sizeof(stream_req) - 1);
    peek_until(fd, "one ");
    assert_false(peek_has(fd, "two "));
    dspy__clock_advance(20 * 1000000ull);
    peek_until(fd, "two ");
    assert_false(peek_has(fd, "three"));
    dspy__clock_advance(20 * 1000000ull);
    read_resp(fd, &r);
    close(fd);
    dspy__clock_freeze(0);
    assert_true(r.complete);
    assert_int_equal(r.len, 13);
    assert_memory_equal(r.body, "one two three", 13);

    get(port, "/stream-abort", &r);
    assert_int_equal(r.status, 200);
    assert_false(r.complete); /* no terminating chunk */

    get(port, "/truncated", &r);
    assert_int_equal(r.status, 200);
    assert_false(r.complete);
    assert_int_equal(r.len, 4);
    assert_non_null(strstr(r.head, "Content-Length: 10"));

    get(port, "/drop", &r);
    assert_int_equal(r.status, 0);
    dspy__srv_free(srv);
}

static void test_errors_and_oversized_body_keep_connection(void **state)
{
    (void)state;
    struct dspy__srv *srv = start(1024);
    int port = dspy__srv_port(srv);
    struct resp r;
    get(port, "/missing", &r);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.body, "\"error\""));
    get(port, "/echo", &r);
    assert_int_equal(r.status, 405);
    assert_non_null(strstr(r.head, "Allow: POST"));

    int fd = connect_to(port);
    char big[5000];
    memset(big, 'x', sizeof(big));
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", sizeof(big));
    send_all(fd, head, (size_t)n);
    send_all(fd, big, sizeof(big));
    read_resp(fd, &r);
    assert_int_equal(r.status, 413);
    assert_non_null(strstr(r.body, "request_too_large"));
    /* The same connection still serves a request. */
    n = snprintf(head, sizeof(head),
                 "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
    send_all(fd, head, (size_t)n);
    read_resp(fd, &r);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "abc", 3);
    close(fd);

    struct dspy__srv_stats st;
    dspy__srv_stats(srv, &st);
    assert_int_equal(st.too_big, 1);
    dspy__srv_free(srv);
}

static void test_pause_holds_answers_but_not_admin(void **state)
{
    (void)state;
    struct dspy__srv *srv = start(0);
    int port = dspy__srv_port(srv);
    struct resp r;
    dspy__clock_freeze(dspy__now_ns()); /* the pause lasts until the test moves the clock */
    dspy__srv_pause(srv, 400);
    /* An answer held by the pause, and an admin request answered meanwhile: ordering, not
     * timing, shows that admin is not held. */
    const char held_req[] = "GET /now HTTP/1.1\r\nHost: x\r\n\r\n";
    int held = connect_to(port);
    send_all(held, held_req, sizeof(held_req) - 1);
    struct dspy__srv_stats st;
    do { /* until the server has the held request */
        sched_yield();
        dspy__srv_stats(srv, &st);
    } while (st.requests < 1);
    get(port, "/admin/x", &r);
    assert_int_equal(r.status, 200);
    char probe;
    assert_int_equal(recv(held, &probe, 1, MSG_DONTWAIT), -1); /* still nothing */
    dspy__clock_advance(400 * 1000000ull); /* the pause is over: the held answer goes */
    read_resp(held, &r);
    close(held);
    dspy__clock_freeze(0);
    assert_int_equal(r.status, 200);
    dspy__srv_free(srv);
}

static void test_many_waiting_connections(void **state)
{
    (void)state;
    enum { N = 400 };
    struct dspy__srv *srv = start(0);
    int port = dspy__srv_port(srv);
    static int fds[N];
    static struct resp r;
    const char req[] = "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n";
    for (int i = 0; i < N; i++) {
        fds[i] = connect_to(port);
        send_all(fds[i], req, sizeof(req) - 1);
    }
    struct dspy__srv_stats st;
    do { /* until every request is in (each is answered 1 s after it arrived) */
        sched_yield();
        dspy__srv_stats(srv, &st);
    } while (st.requests < N);
    assert_true(st.waiting > N / 2); /* each parked, no thread held */
    int ok = 0;
    for (int i = 0; i < N; i++) {
        read_resp(fds[i], &r);
        ok += r.status == 200;
        close(fds[i]);
    }
    assert_int_equal(ok, N);
    dspy__srv_free(srv);
}

static void test_stop_with_waiting_connections(void **state)
{
    (void)state;
    struct dspy__srv *srv = start(0);
    int port = dspy__srv_port(srv);
    const char req[] = "GET /never HTTP/1.1\r\nHost: x\r\n\r\n";
    const char req2[] = "GET /later HTTP/1.1\r\nHost: x\r\n\r\n";
    int a = connect_to(port), b = connect_to(port);
    send_all(a, req, sizeof(req) - 1);
    send_all(b, req2, sizeof(req2) - 1);
    struct dspy__srv_stats st;
    do { /* until both are in, waiting */
        sched_yield();
        dspy__srv_stats(srv, &st);
    } while (st.requests < 2);
    dspy__srv_free(srv);
    struct resp r;
    read_resp(a, &r);
    assert_int_equal(r.status, 0);
    close(a);
    close(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heap_orders_by_due_then_fifo),
        cmocka_unit_test(test_heap_interleaved),
        cmocka_unit_test_teardown(test_answers_now_later_and_from_a_thread, thaw_clock),
        cmocka_unit_test_teardown(test_stream_paced_truncated_dropped, thaw_clock),
        cmocka_unit_test(test_errors_and_oversized_body_keep_connection),
        cmocka_unit_test_teardown(test_pause_holds_answers_but_not_admin, thaw_clock),
        cmocka_unit_test(test_many_waiting_connections),
        cmocka_unit_test(test_stop_with_waiting_connections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
