/* Unit tests for the engine's own HTTP/1.1 transport (net/engine_h1.c) over loopback:
 * against a scripted server (answers in pieces, chunked bodies split at every byte, slow
 * heads, oversized heads, kept-alive connections the server closes, refused connections,
 * URL credentials) and against the real simulator, where both transports must give the
 * same bytes. threads: the engine's loop, the scripted server, the simulator. */
#define _GNU_SOURCE /* strcasestr */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <dspyc/sim.h>

#include "net/engine.h"

/* ---- a scripted server: one connection at a time, in its own thread ---- */

enum mode {
    M_PIECES,      /* answer in two writes, split at `split`, `gap_us` apart */
    M_BYTEWISE,    /* answer one byte at a time, `gap_us` apart */
    M_CLOSE_IDLE,  /* answer once per connection, then close it (no Connection: close) */
    M_DROP_SECOND, /* read the second request of a connection and close without answering */
    M_DROP_ALL,    /* read every request and close without answering */
    M_EARLY,       /* answer once the head is in, then drain the body unread */
};

struct script {
    enum mode mode;
    const char *resp;
    size_t resp_len;
    size_t split;
    int gap_us;
};

struct srv {
    int lfd, port;
    pthread_t th;
    atomic_bool stop;
    atomic_int conns, requests;
    pthread_mutex_t mu;
    struct script sc; /* guarded by mu; the server takes a copy per request */
    char head[4096];  /* the last request head; guarded by mu */
};

static struct srv srv;

static void nap_us(long us)
{
    struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
    nanosleep(&ts, NULL);
}

/* Read one request (head and Content-Length body); false at EOF. */
static bool read_request(struct srv *s, int fd, char *buf, size_t cap, size_t *have)
{
    for (;;) {
        buf[*have] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            size_t head = (size_t)(end - buf) + 4;
            const char *cl = strcasestr(buf, "\r\ncontent-length:");
            size_t body = cl && cl < end ? (size_t)strtoul(cl + 17, NULL, 10) : 0;
            if (*have >= head + body) {
                pthread_mutex_lock(&s->mu);
                memcpy(s->head, buf, head < sizeof(s->head) ? head : sizeof(s->head) - 1);
                s->head[head < sizeof(s->head) ? head : sizeof(s->head) - 1] = '\0';
                pthread_mutex_unlock(&s->mu);
                memmove(buf, buf + head + body, *have - head - body);
                *have -= head + body;
                atomic_fetch_add(&s->requests, 1);
                return true;
            }
        }
        ssize_t n = recv(fd, buf + *have, cap - 1 - *have, 0);
        if (n <= 0)
            return false;
        *have += (size_t)n;
    }
}

static bool write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static struct script current(struct srv *s)
{
    pthread_mutex_lock(&s->mu);
    struct script sc = s->sc;
    pthread_mutex_unlock(&s->mu);
    return sc;
}

static void answer(const struct script *s, int fd)
{
    if (s->mode == M_BYTEWISE) {
        for (size_t i = 0; i < s->resp_len && write_all(fd, s->resp + i, 1); i++)
            nap_us(s->gap_us);
        return;
    }
    size_t k = s->split < s->resp_len ? s->split : s->resp_len;
    write_all(fd, s->resp, k);
    if (k < s->resp_len) {
        nap_us(s->gap_us);
        write_all(fd, s->resp + k, s->resp_len - k);
    }
}

static void *serve(void *arg)
{
    struct srv *s = arg;
    static char buf[1 << 16];
    while (!atomic_load(&s->stop)) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0 || atomic_load(&s->stop)) {
            if (fd >= 0)
                close(fd);
            continue;
        }
        atomic_fetch_add(&s->conns, 1);
        size_t have = 0;
        struct script first = current(s);
        if (first.mode == M_EARLY) { /* answer before the body, then let the client finish */
            ssize_t n;
            while (!memmem(buf, have, "\r\n\r\n", 4) &&
                   (n = recv(fd, buf + have, sizeof(buf) - have, 0)) > 0)
                have += (size_t)n;
            answer(&first, fd);
            shutdown(fd, SHUT_WR);
            while (recv(fd, buf, sizeof(buf), 0) > 0)
                continue;
            close(fd);
            continue;
        }
        for (int nth = 0; read_request(s, fd, buf, sizeof(buf), &have); nth++) {
            struct script sc = current(s);
            if (sc.mode == M_DROP_ALL || (sc.mode == M_DROP_SECOND && nth == 1))
                break;
            answer(&sc, fd);
            if (sc.mode == M_CLOSE_IDLE)
                break;
        }
        close(fd);
    }
    return NULL;
}

static int group_setup(void **state)
{
    (void)state;
    pthread_mutex_init(&srv.mu, NULL);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    srv.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (srv.lfd < 0 || bind(srv.lfd, (struct sockaddr *)&a, sizeof(a)) || listen(srv.lfd, 64) ||
        getsockname(srv.lfd, (struct sockaddr *)&a, &len))
        return -1;
    srv.port = ntohs(a.sin_port);
    return pthread_create(&srv.th, NULL, serve, &srv);
}

static int group_teardown(void **state)
{
    (void)state;
    atomic_store(&srv.stop, true);
    shutdown(srv.lfd, SHUT_RDWR); /* wakes accept() */
    pthread_join(srv.th, NULL);
    close(srv.lfd);
    pthread_mutex_destroy(&srv.mu);
    return 0;
}

static void script(enum mode m, const char *resp, size_t split, int gap_us)
{
    pthread_mutex_lock(&srv.mu);
    srv.sc = (struct script){ m, resp, strlen(resp), split, gap_us };
    pthread_mutex_unlock(&srv.mu);
    atomic_store(&srv.conns, 0);
    atomic_store(&srv.requests, 0);
}

/* ---- the client side ---- */

static struct dspy__engine *engine(enum dspy__engine_http1 which)
{
    struct dspy__engine_options o = DSPY__ENGINE_OPTIONS_INIT;
    o.http1 = which;
    struct dspy_error err;
    struct dspy__engine *e = dspy__engine_new(&o, &err);
    assert_non_null(e);
    return e;
}

static char *url_of(int port, const char *userinfo, const char *path)
{
    static char buf[256];
    snprintf(buf, sizeof(buf), "http://%s%s127.0.0.1:%d%s", userinfo ? userinfo : "",
             userinfo ? "@" : "", port, path);
    return buf;
}

struct outcome {
    dspy_status status;
    long http;
    char body[8192];
    size_t body_len;
    uint32_t attempts;
    char error[256];
};

static void run(struct dspy__engine *e, struct dspy__engine_request *r, struct outcome *o)
{
    struct dspy__engine_call *c;
    const struct dspy__engine_result *res;
    assert_int_equal(dspy__engine_submit(e, r, &c, NULL), DSPY_OK);
    assert_int_equal(dspy__engine_call_wait(c, 0, &res), DSPY_OK);
    o->status = res->status;
    o->http = res->http_status;
    o->body_len = res->body_len < sizeof(o->body) ? res->body_len : sizeof(o->body) - 1;
    memcpy(o->body, res->body, o->body_len);
    o->body[o->body_len] = '\0';
    o->attempts = res->attempts;
    snprintf(o->error, sizeof(o->error), "%s", res->error);
    dspy__engine_call_release(c);
}

static void get(struct dspy__engine *e, struct outcome *o, uint64_t timeout_ns)
{
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url_of(srv.port, NULL, "/v1/x?q=1#frag");
    r.timeout_ns = timeout_ns;
    run(e, &r, o);
}

static const char CHUNKED[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n"
                              "7\r\n{\"a\":\"b\r\n"
                              "4;x=y\r\nc\"}\n\r\n"
                              "0\r\n\r\n";

static void chunked_split_at_every_byte(void **state)
{
    (void)state;
    struct dspy__engine *e = engine(DSPY__HTTP1_OWN);
    struct outcome o;
    for (size_t split = 1; split < sizeof(CHUNKED) - 1; split++) {
        script(M_PIECES, CHUNKED, split, 300);
        get(e, &o, 0);
        assert_int_equal(o.status, DSPY_OK);
        assert_int_equal(o.http, 200);
        assert_string_equal(o.body, "{\"a\":\"bc\"}\n");
    }
    /* Every answer was read on one kept-alive connection. */
    assert_int_equal(atomic_load(&srv.conns), 0);
    dspy__engine_free(e);
}

static void slow_head_and_timeout(void **state)
{
    (void)state;
    static const char resp[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n"
                               "Retry-After: 3\r\n\r\nnope!";
    struct dspy__engine *e = engine(DSPY__HTTP1_OWN);
    struct outcome o;
    script(M_BYTEWISE, resp, 0, 200);
    get(e, &o, 0);
    assert_int_equal(o.status, DSPY_OK);
    assert_int_equal(o.http, 404);
    assert_string_equal(o.body, "nope!");
    assert_non_null(strstr(o.error, "HTTP 404"));
    /* The same slow head against a timeout shorter than it takes. */
    script(M_BYTEWISE, resp, 0, 20000);
    get(e, &o, 100000000u);
    assert_int_equal(o.status, DSPY_ELM_TIMEOUT);
    assert_non_null(strstr(o.error, "timed out"));
    dspy__engine_free(e);
}

static void oversized_head_and_body(void **state)
{
    (void)state;
    size_t n = 70 << 10;
    char *big = malloc(n + 64);
    assert_non_null(big);
    int k = snprintf(big, n, "HTTP/1.1 200 OK\r\nX-Big: ");
    memset(big + k, 'a', n - (size_t)k);
    strcpy(big + n, "\r\nContent-Length: 0\r\n\r\n");
    struct dspy__engine *e = engine(DSPY__HTTP1_OWN);
    struct outcome o;
    script(M_PIECES, big, 0, 0);
    get(e, &o, 0);
    assert_int_equal(o.status, DSPY_ETOOBIG);
    assert_non_null(strstr(o.error, "response head larger than the limit"));
    /* A body over the request's limit. */
    script(M_PIECES, CHUNKED, 0, 0);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url_of(srv.port, NULL, "/");
    r.max_response_bytes = 4;
    run(e, &r, &o);
    assert_int_equal(o.status, DSPY_ETOOBIG);
    assert_non_null(strstr(o.error, "larger than the limit"));
    dspy__engine_free(e);
    free(big);
}

static const char OK[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

static void kept_alive_connection_closed_by_server(void **state)
{
    (void)state;
    struct dspy__engine *e = engine(DSPY__HTTP1_OWN);
    struct outcome o;
    /* Closed while idle: the next request opens a new connection. */
    script(M_CLOSE_IDLE, OK, 0, 0);
    for (int i = 0; i < 3; i++) {
        get(e, &o, 0);
        assert_int_equal(o.status, DSPY_OK);
        assert_string_equal(o.body, "ok");
        nap_us(20000);
    }
    assert_int_equal(atomic_load(&srv.conns), 3);
    /* Closed as the second request arrived, before any answer: sent again once, on a fresh
     * connection, inside the same attempt. */
    script(M_DROP_SECOND, OK, 0, 0);
    get(e, &o, 0);
    get(e, &o, 0);
    assert_int_equal(o.status, DSPY_OK);
    assert_int_equal(o.attempts, 1);
    assert_int_equal(atomic_load(&srv.conns), 2);
    assert_int_equal(atomic_load(&srv.requests), 3);
    dspy__engine_free(e); /* the server serves one connection at a time */
    /* A fresh connection that closes unanswered is a network error, never sent again. */
    script(M_DROP_ALL, OK, 0, 0);
    e = engine(DSPY__HTTP1_OWN);
    get(e, &o, 0);
    assert_int_equal(o.status, DSPY_ELM_NETWORK);
    assert_non_null(strstr(o.error, "Server returned nothing"));
    assert_int_equal(atomic_load(&srv.requests), 1);
    dspy__engine_free(e);
}

static void refused_connection_is_retryable(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd); /* a port nobody listens on */
    struct dspy__retry_policy rp = DSPY__RETRY_POLICY_INIT;
    rp.max_attempts = 3;
    rp.base_ns = rp.cap_ns = 1000000;
    for (int which = DSPY__HTTP1_CURL; which <= DSPY__HTTP1_OWN; which++) {
        struct dspy__engine *e = engine((enum dspy__engine_http1)which);
        struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
        r.url = url_of(ntohs(a.sin_port), NULL, "/v1");
        r.retry = &rp;
        struct outcome o;
        run(e, &r, &o);
        assert_int_equal(o.status, DSPY_ELM_NETWORK);
        assert_int_equal(o.attempts, 3);
        assert_non_null(strstr(o.error, "Couldn't connect to server"));
        dspy__engine_free(e);
    }
}

/* An answer that comes while the request body is still going out (a 413 for a body the
 * server will not take) is read and reported, not lost to the failed send. */
static void answer_before_the_body_is_sent(void **state)
{
    (void)state;
    static const char too_big[] = "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n"
                                  "Connection: close\r\n\r\nbig";
    size_t n = 8u << 20;
    char *body = malloc(n);
    assert_non_null(body);
    memset(body, 'x', n);
    struct dspy__engine *e = engine(DSPY__HTTP1_OWN);
    script(M_EARLY, too_big, 0, 0);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url_of(srv.port, NULL, "/v1/chat/completions");
    r.body = body;
    r.body_len = n;
    struct outcome o;
    run(e, &r, &o);
    assert_int_equal(o.status, DSPY_OK);
    assert_int_equal(o.http, 413);
    assert_string_equal(o.body, "big");
    dspy__engine_free(e);
    free(body);
}

/* Both transports send the same header lines (order aside), credentials from the URL as
 * Basic auth, and never put the password in an error. */
static void same_request_on_both_transports(void **state)
{
    (void)state;
    const char *lines[] = { "Content-Type: application/json", "Expect:", "User-Agent: t/1",
                            "X-Empty;" };
    struct dspy__engine_headers *h = dspy__engine_headers_new(lines, 4);
    char heads[2][4096];
    for (int which = DSPY__HTTP1_CURL; which <= DSPY__HTTP1_OWN; which++) {
        struct dspy__engine *e = engine((enum dspy__engine_http1)which);
        script(M_PIECES, OK, 0, 0);
        struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
        r.url = url_of(srv.port, "us%65r:p%40ss", "/v1/chat?x=1");
        r.headers = h;
        r.body = "{}";
        r.body_len = 2;
        struct outcome o;
        run(e, &r, &o);
        assert_int_equal(o.http, 200);
        pthread_mutex_lock(&srv.mu);
        memcpy(heads[which - DSPY__HTTP1_CURL], srv.head, sizeof(srv.head));
        pthread_mutex_unlock(&srv.mu);
        dspy__engine_free(e);
    }
    /* Same lines in any order: each line of one is in the other, and as many. */
    for (int a = 0; a < 2; a++) {
        int na = 0, nb = 0;
        for (char *l = heads[a]; (l = strstr(l, "\r\n")) && l[2] != '\r'; l += 2, na++) {
            char line[512];
            size_t n = strcspn(l + 2, "\r");
            snprintf(line, sizeof(line), "\r\n%.*s\r\n", (int)n, l + 2);
            assert_non_null(strstr(heads[1 - a], line));
        }
        for (char *l = heads[1 - a]; (l = strstr(l, "\r\n")) && l[2] != '\r'; l += 2)
            nb++;
        assert_int_equal(na, nb);
    }
    assert_memory_equal(heads[1], "POST /v1/chat?x=1 HTTP/1.1\r\n", 28);
    assert_non_null(strstr(heads[1], "\r\nAuthorization: Basic dXNlcjpwQHNz\r\n"));
    assert_non_null(strstr(heads[1], "\r\nX-Empty:\r\n"));
    assert_null(strstr(heads[1], "Expect"));
    /* The password never reaches an error. */
    script(M_DROP_ALL, OK, 0, 0);
    struct dspy__engine *e = engine(DSPY__HTTP1_OWN);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = url_of(srv.port, "user:s3cret", "/v1");
    struct outcome o;
    run(e, &r, &o);
    assert_int_equal(o.status, DSPY_ELM_NETWORK);
    assert_null(strstr(o.error, "s3cret"));
    dspy__engine_free(e);
    dspy__engine_headers_free(h);
}

/* ---- against the simulator ---- */

struct events {
    char text[8192];
    size_t len;
    int n;
};

static int on_event(struct dspy__engine_call *c, const struct dspy__sse_event *ev, void *ud)
{
    struct events *t = ud;
    (void)c;
    if (t->len + ev->data.len + 1 < sizeof(t->text)) {
        memcpy(t->text + t->len, ev->data.ptr, ev->data.len);
        t->len += ev->data.len;
        t->text[t->len++] = '\n';
    }
    t->n++;
    return 0;
}

static void same_answers_from_the_simulator(void **state)
{
    (void)state;
    struct dspy_sim_options so = DSPY_SIM_OPTIONS_INIT;
    so.threads = 1;
    so.latency_ms = 0;
    so.seed = 7;
    so.header_timeout_ms = 100; /* closes idle kept-alive connections */
    dspy_sim *sim;
    struct dspy_error err;
    assert_int_equal(dspy_sim_new(&so, &sim, &err), DSPY_OK);
    assert_int_equal(dspy_sim_start(sim, &err), DSPY_OK);
    static const char plain[] = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
                                "\"What is 2+2?\"}],\"temperature\":0}";
    static const char streamed[] = "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":"
                                   "\"user\",\"content\":\"Say hi\"}],\"temperature\":0}";
    const char *lines[] = { "Content-Type: application/json" };
    struct dspy__engine_headers *h = dspy__engine_headers_new(lines, 1);
    struct outcome o[2];
    struct events ev[2];
    memset(ev, 0, sizeof(ev));
    for (int i = 0; i < 2; i++) {
        struct dspy__engine *e = engine(i ? DSPY__HTTP1_OWN : DSPY__HTTP1_CURL);
        struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
        r.url = url_of(dspy_sim_port(sim), NULL, "/v1/chat/completions");
        r.headers = h;
        r.body = plain;
        r.body_len = sizeof(plain) - 1;
        for (int k = 0; k < 2; k++) { /* the second after the server closed the first's */
            run(e, &r, &o[i]);
            assert_int_equal(o[i].http, 200);
            nap_us(250000);
        }
        r.body = streamed;
        r.body_len = sizeof(streamed) - 1;
        r.on_event = on_event;
        r.userdata = &ev[i];
        struct outcome so2;
        run(e, &r, &so2);
        assert_int_equal(so2.status, DSPY_OK);
        assert_int_equal(so2.http, 200);
        dspy__engine_free(e);
    }
    /* Ids and timestamps differ per request; from the model on, the answers may not. */
    assert_non_null(strstr(o[0].body, "\"model\""));
    assert_string_equal(strstr(o[0].body, "\"model\""), strstr(o[1].body, "\"model\""));
    assert_true(ev[0].n > 2 && ev[0].n == ev[1].n);
    /* Chunk ids and timestamps may differ between runs; the streamed text may not. */
    assert_non_null(strstr(ev[1].text, "[DONE]"));
    assert_int_equal(ev[0].len, ev[1].len);
    dspy__engine_headers_free(h);
    dspy_sim_free(sim);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(chunked_split_at_every_byte),
        cmocka_unit_test(slow_head_and_timeout),
        cmocka_unit_test(oversized_head_and_body),
        cmocka_unit_test(kept_alive_connection_closed_by_server),
        cmocka_unit_test(refused_connection_is_retryable),
        cmocka_unit_test(answer_before_the_body_is_sent),
        cmocka_unit_test(same_request_on_both_transports),
        cmocka_unit_test(same_answers_from_the_simulator),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
