/* Unit tests for the engine's own HTTP/1.1 transport (net/engine_h1.c) over loopback:
 * against a scripted server (answers in pieces, chunked bodies split at every byte, slow
 * heads, oversized heads, kept-alive connections the server closes, refused connections,
 * URL credentials), against a server of a thread per connection (connection limits, host
 * name lookups, IPv6), against a listener whose backlog is full (connect timeout) and
 * against the real simulator, where both transports must give the same bytes.
 * threads: the engine's loop and resolvers, the scripted servers, the simulator. */
#define _GNU_SOURCE /* strcasestr */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
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

#include "base/clock.h"
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

/* ---- a server of a thread per connection: keeps each alive, counts them ---- */

struct msrv {
    int lfd, port;
    pthread_t th;
    atomic_bool stop;
    atomic_int conns, cur, max, nreq;
    atomic_int busy, max_busy; /* requests read and not yet answered */
    int gap_us;
    pthread_mutex_t mu;
    int order[256]; /* the n= of each request, in order of arrival; guarded by mu */
    char host[128]; /* the last Host header; guarded by mu */
};

struct mconn_arg {
    struct msrv *s;
    int fd;
};

static void *mconn(void *arg)
{
    struct mconn_arg a = *(struct mconn_arg *)arg;
    free(arg);
    struct msrv *s = a.s;
    int cur = atomic_fetch_add(&s->cur, 1) + 1, max = atomic_load(&s->max);
    while (cur > max && !atomic_compare_exchange_weak(&s->max, &max, cur))
        continue;
    char buf[4096];
    size_t have = 0;
    for (;;) {
        char *end = memmem(buf, have, "\r\n\r\n", 4);
        if (!end) {
            ssize_t n = have < sizeof(buf) - 1 ? recv(a.fd, buf + have, sizeof(buf) - 1 - have, 0)
                                               : -1;
            if (n <= 0)
                break;
            have += (size_t)n;
            continue;
        }
        size_t head = (size_t)(end - buf) + 4;
        buf[head - 1] = '\0';
        int busy = atomic_fetch_add(&s->busy, 1) + 1, mb = atomic_load(&s->max_busy);
        while (busy > mb && !atomic_compare_exchange_weak(&s->max_busy, &mb, busy))
            continue;
        const char *n = strstr(buf, "n="), *h = strcasestr(buf, "\r\nHost: ");
        int k = atomic_fetch_add(&s->nreq, 1);
        pthread_mutex_lock(&s->mu);
        if (k < 256)
            s->order[k] = n ? atoi(n + 2) : -1;
        if (h)
            snprintf(s->host, sizeof(s->host), "%.*s", (int)strcspn(h + 8, "\r"), h + 8);
        pthread_mutex_unlock(&s->mu);
        memmove(buf, buf + head, have - head);
        have -= head;
        nap_us(s->gap_us);
        atomic_fetch_sub(&s->busy, 1); /* before the answer: the client may reuse at once */
        if (!write_all(a.fd, OK, sizeof(OK) - 1))
            break;
    }
    close(a.fd);
    atomic_fetch_sub(&s->cur, 1);
    return NULL;
}

static void *maccept(void *arg)
{
    struct msrv *s = arg;
    while (!atomic_load(&s->stop)) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&s->conns, 1);
        struct mconn_arg *a = malloc(sizeof(*a));
        pthread_t t;
        if (!a) {
            close(fd);
            continue;
        }
        a->s = s;
        a->fd = fd;
        if (pthread_create(&t, NULL, mconn, a)) {
            free(a);
            close(fd);
            continue;
        }
        pthread_detach(t);
    }
    return NULL;
}

/* Listen on the loopback of `family`; false when the machine has none of that family. */
static bool msrv_start(struct msrv *s, int family, int gap_us)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    s->gap_us = gap_us;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t len;
    if (family == AF_INET6) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
        a6->sin6_family = AF_INET6;
        a6->sin6_addr = in6addr_loopback;
        len = sizeof(*a6);
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
        a4->sin_family = AF_INET;
        a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof(*a4);
    }
    s->lfd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&ss, len) || listen(s->lfd, 64) ||
        getsockname(s->lfd, (struct sockaddr *)&ss, &len)) {
        if (s->lfd >= 0)
            close(s->lfd);
        return false;
    }
    s->port = ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                       : ((struct sockaddr_in *)&ss)->sin_port);
    assert_int_equal(pthread_create(&s->th, NULL, maccept, s), 0);
    return true;
}

/* After the engines are freed (their connections closed). */
static void msrv_stop(struct msrv *s)
{
    atomic_store(&s->stop, true);
    shutdown(s->lfd, SHUT_RDWR);
    pthread_join(s->th, NULL);
    close(s->lfd);
    for (int i = 0; i < 5000 && atomic_load(&s->cur); i++)
        nap_us(1000);
    assert_int_equal(atomic_load(&s->cur), 0);
    pthread_mutex_destroy(&s->mu);
}

struct tally {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, ok;
};

static void on_tally(struct dspy__engine_call *c, const struct dspy__engine_result *res, void *ud)
{
    struct tally *t = ud;
    (void)c;
    pthread_mutex_lock(&t->mu);
    t->done++;
    t->ok += res->status == DSPY_OK && res->http_status == 200;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void tally_wait(struct tally *t, int n)
{
    pthread_mutex_lock(&t->mu);
    while (t->done < n)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

static struct dspy__engine *engine_with(struct dspy__engine_options *o)
{
    o->http1 = DSPY__HTTP1_OWN;
    struct dspy__engine *e = dspy__engine_new(o, NULL);
    assert_non_null(e);
    return e;
}

/* n requests to host:port/v1?n=i at once, all answered 200. */
static void burst(struct dspy__engine *e, const char *const *hosts, int nhosts, int port, int n)
{
    struct tally t = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };
    for (int i = 0; i < n; i++) {
        char u[128];
        snprintf(u, sizeof(u), "http://%s:%d/v1?n=%d", hosts[i % nhosts], port, i);
        struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
        r.url = u;
        r.on_done = on_tally;
        r.userdata = &t;
        assert_int_equal(dspy__engine_submit(e, &r, NULL, NULL), DSPY_OK);
    }
    tally_wait(&t, n);
    assert_int_equal(t.ok, n);
}

/* With a limit of 3 connections to the host, 30 requests at once never hold more than 3,
 * reuse them, and are sent first come first served: the request arriving p-th was
 * submitted no later than p + 2 (only the 3 in flight may pass each other). */
static void host_connection_limit_in_order(void **state)
{
    (void)state;
    struct msrv ms;
    assert_true(msrv_start(&ms, AF_INET, 5000));
    struct dspy__engine_options o = DSPY__ENGINE_OPTIONS_INIT;
    o.max_host_connections = 3;
    struct dspy__engine *e = engine_with(&o);
    const char *hosts[] = { "127.0.0.1" };
    burst(e, hosts, 1, ms.port, 30);
    assert_int_equal(atomic_load(&ms.max), 3);
    assert_int_equal(atomic_load(&ms.conns), 3);
    pthread_mutex_lock(&ms.mu);
    for (int p = 0; p < 30; p++)
        assert_true(ms.order[p] < p + 3);
    pthread_mutex_unlock(&ms.mu);
    dspy__engine_free(e);
    /* A limit in all, over two pools (the same server by two names): an idle connection of
     * one host is closed to make room for the other's waiting requests. The server sees
     * such a close a moment late, so what it counts is requests in hand at once. */
    atomic_store(&ms.max_busy, 0);
    struct dspy__engine_options o2 = DSPY__ENGINE_OPTIONS_INIT;
    o2.max_total_connections = 2;
    e = engine_with(&o2);
    const char *two[] = { "127.0.0.1", "localhost" };
    burst(e, two, 2, ms.port, 40);
    assert_true(atomic_load(&ms.max_busy) <= 2);
    dspy__engine_free(e);
    msrv_stop(&ms);
}

/* A request queued for a connection under the limit still ends at its attempt timeout. */
static void queued_request_times_out(void **state)
{
    (void)state;
    struct msrv ms;
    assert_true(msrv_start(&ms, AF_INET, 400000));
    struct dspy__engine_options o = DSPY__ENGINE_OPTIONS_INIT;
    o.max_host_connections = 1;
    struct dspy__engine *e = engine_with(&o);
    char u[64];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/v1?n=0", ms.port);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = u;
    struct dspy__engine_call *first;
    assert_int_equal(dspy__engine_submit(e, &r, &first, NULL), DSPY_OK);
    r.timeout_ns = 50000000u;
    struct outcome o2;
    run(e, &r, &o2);
    assert_int_equal(o2.status, DSPY_ELM_TIMEOUT);
    const struct dspy__engine_result *res;
    assert_int_equal(dspy__engine_call_wait(first, 0, &res), DSPY_OK);
    assert_int_equal(res->http_status, 200);
    assert_int_equal(atomic_load(&ms.nreq), 1); /* the second never reached the server */
    dspy__engine_call_release(first);
    dspy__engine_free(e);
    msrv_stop(&ms);
}

/* A lookup hook: "slow.test" and "hang.test" wait at a gate, then resolve as 127.0.0.1;
 * every other name is the system's. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
    int entered, left;
} gate = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0, 0 };

static int gated_lookup(const char *host, const char *port, const struct addrinfo *hints,
                        struct addrinfo **res)
{
    if (strcmp(host, "slow.test") && strcmp(host, "hang.test"))
        return getaddrinfo(host, port, hints, res);
    pthread_mutex_lock(&gate.mu);
    gate.entered++;
    pthread_cond_broadcast(&gate.cv);
    while (!gate.open)
        pthread_cond_wait(&gate.cv, &gate.mu);
    pthread_mutex_unlock(&gate.mu);
    int rc = getaddrinfo("127.0.0.1", port, hints, res);
    pthread_mutex_lock(&gate.mu);
    gate.left++;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
    return rc;
}

static void gate_set(bool open)
{
    pthread_mutex_lock(&gate.mu);
    gate.open = open;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
}

static void gate_wait(int *counter, int n)
{
    pthread_mutex_lock(&gate.mu);
    while (*counter < n)
        pthread_cond_wait(&gate.cv, &gate.mu);
    pthread_mutex_unlock(&gate.mu);
}

static void url_get(struct dspy__engine *e, const char *host, int port, struct outcome *o)
{
    char u[128];
    snprintf(u, sizeof(u), "http://%s:%d/v1", host, port);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = u;
    run(e, &r, o);
}

static void lookups_off_the_loop(void **state)
{
    (void)state;
    struct msrv ms;
    assert_true(msrv_start(&ms, AF_INET, 0));
    struct outcome o;
    /* A name from /etc/hosts and one that resolves nowhere, classed alike by both. */
    for (int which = DSPY__HTTP1_CURL; which <= DSPY__HTTP1_OWN; which++) {
        struct dspy__engine *e = engine((enum dspy__engine_http1)which);
        url_get(e, "localhost", ms.port, &o);
        assert_int_equal(o.status, DSPY_OK);
        assert_int_equal(o.http, 200);
        url_get(e, "nonexistent.invalid", ms.port, &o);
        assert_int_equal(o.status, DSPY_ELM_NETWORK);
        assert_non_null(strstr(o.error, "nonexistent.invalid"));
        assert_non_null(strstr(o.error, "Couldn't resolve host name"));
        dspy__engine_free(e);
    }
    /* While one lookup hangs, calls to other names and to addresses go on. */
    gate_set(false);
    struct dspy__engine_options opt = DSPY__ENGINE_OPTIONS_INIT;
    opt.lookup = gated_lookup;
    struct dspy__engine *e = engine_with(&opt);
    char u[64];
    snprintf(u, sizeof(u), "http://slow.test:%d/v1", ms.port);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = u;
    struct dspy__engine_call *slow;
    assert_int_equal(dspy__engine_submit(e, &r, &slow, NULL), DSPY_OK);
    gate_wait(&gate.entered, 1);
    for (int i = 0; i < 3; i++) {
        url_get(e, "127.0.0.1", ms.port, &o);
        assert_int_equal(o.http, 200);
        url_get(e, "localhost", ms.port, &o);
        assert_int_equal(o.http, 200);
    }
    assert_false(dspy__engine_call_done(slow)); /* still at the gate */
    gate_set(true);
    const struct dspy__engine_result *res;
    assert_int_equal(dspy__engine_call_wait(slow, 0, &res), DSPY_OK);
    assert_int_equal(res->http_status, 200);
    dspy__engine_call_release(slow);
    dspy__engine_free(e);
    /* The connect timeout covers the lookup; and freeing the engine does not wait for a
     * lookup still hanging (it ends on its own later). */
    gate_set(false);
    struct dspy__engine_options ot = DSPY__ENGINE_OPTIONS_INIT;
    ot.lookup = gated_lookup;
    ot.connect_timeout_ns = 200000000u;
    e = engine_with(&ot);
    url_get(e, "hang.test", ms.port, &o);
    assert_int_equal(o.status, DSPY_ELM_TIMEOUT);
    assert_non_null(strstr(o.error, "timed out looking up the host name"));
    int left = gate.left;
    dspy__engine_free(e);
    pthread_mutex_lock(&gate.mu);
    assert_int_equal(gate.left, left); /* freed while the lookup was still at the gate */
    pthread_mutex_unlock(&gate.mu);
    gate_set(true);
    gate_wait(&gate.left, left + 1);
    msrv_stop(&ms);
}

/* A lookup hook that counts the lookups of each name it is asked, then asks the system:
 * "nonexistent.invalid" can never resolve (RFC 6761). */
static atomic_int dead_lookups, live_lookups;

static int counting_lookup(const char *host, const char *port, const struct addrinfo *hints,
                           struct addrinfo **res)
{
    atomic_fetch_add(strcmp(host, "nonexistent.invalid") ? &live_lookups : &dead_lookups, 1);
    return getaddrinfo(host, port, hints, res);
}

/* A name that failed to resolve is not looked up again for a few seconds: retries fail at
 * once with the same error; another name is still looked up; after the 5 s the dead name
 * is asked again. The clock hook steps over the 5 s without sleeping. */
static void failed_lookups_remembered(void **state)
{
    (void)state;
    struct msrv ms;
    assert_true(msrv_start(&ms, AF_INET, 0));
    atomic_store(&dead_lookups, 0);
    atomic_store(&live_lookups, 0);
    dspy__clock_freeze(dspy__now_ns());
    struct dspy__engine_options opt = DSPY__ENGINE_OPTIONS_INIT;
    opt.lookup = counting_lookup;
    struct dspy__engine *e = engine_with(&opt);
    struct outcome o;
    for (int i = 0; i < 3; i++) {
        url_get(e, "nonexistent.invalid", ms.port, &o);
        assert_int_equal(o.status, DSPY_ELM_NETWORK);
        assert_non_null(strstr(o.error, "nonexistent.invalid"));
        assert_non_null(strstr(o.error, "Couldn't resolve host name"));
    }
    assert_int_equal(atomic_load(&dead_lookups), 1);
    url_get(e, "localhost", ms.port, &o);
    assert_int_equal(o.http, 200);
    assert_int_equal(atomic_load(&live_lookups), 1);
    dspy__clock_advance(4000000000ull); /* still within the 5 s */
    url_get(e, "nonexistent.invalid", ms.port, &o);
    assert_int_equal(o.status, DSPY_ELM_NETWORK);
    assert_int_equal(atomic_load(&dead_lookups), 1);
    dspy__clock_advance(1000000000ull); /* 5 s since the failure: asked again */
    url_get(e, "nonexistent.invalid", ms.port, &o);
    assert_int_equal(o.status, DSPY_ELM_NETWORK);
    assert_non_null(strstr(o.error, "Couldn't resolve host name"));
    assert_int_equal(atomic_load(&dead_lookups), 2);
    dspy__engine_free(e);
    msrv_stop(&ms);
}

/* The real clocks again, even after a failed assertion left the clock frozen. */
static int clock_thaw(void **state)
{
    (void)state;
    dspy__clock_freeze(0);
    return 0;
}

/* A listener whose accept queue is full drops every SYN: the connect never completes, and
 * the connect timeout (not the attempt's) ends it, on both transports. */
static void connect_timeout_without_syn_ack(void **state)
{
    (void)state;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lfd, 0), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &len), 0);
    int fill[4];
    for (int i = 0; i < 4; i++) { /* one fits in the queue, the rest hang as the probe must */
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        connect(fill[i], (struct sockaddr *)&a, sizeof(a));
    }
    nap_us(50000);
    struct pollfd probe = { .fd = fill[3], .events = POLLOUT };
    assert_int_equal(poll(&probe, 1, 200), 0); /* the trick holds on this machine */
    for (int which = DSPY__HTTP1_CURL; which <= DSPY__HTTP1_OWN; which++) {
        struct dspy__engine_options o = DSPY__ENGINE_OPTIONS_INIT;
        o.http1 = (enum dspy__engine_http1)which;
        o.connect_timeout_ns = 200000000u;
        struct dspy__engine *e = dspy__engine_new(&o, NULL);
        assert_non_null(e);
        struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
        r.url = url_of(ntohs(a.sin_port), NULL, "/v1");
        r.timeout_ns = 120000000000ull;
        struct outcome out;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        run(e, &r, &out);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        assert_int_equal(out.status, DSPY_ELM_TIMEOUT);
        assert_int_equal(out.http, 0);
        assert_non_null(strstr(out.error, "timed out"));
        if (which == DSPY__HTTP1_OWN)
            assert_non_null(strstr(out.error, "connection timed out"));
        assert_true(t1.tv_sec - t0.tv_sec < 120); /* not the attempt's timeout */
        dspy__engine_free(e);
    }
    for (int i = 0; i < 4; i++)
        close(fill[i]);
    close(lfd);
}

/* http://[::1]:port/ on both transports: the literal connects over IPv6 and the Host
 * header keeps the brackets. */
static void ipv6_literal(void **state)
{
    (void)state;
    struct msrv ms;
    bool has_v6 = msrv_start(&ms, AF_INET6, 0);
    for (int which = DSPY__HTTP1_CURL; which <= DSPY__HTTP1_OWN; which++) {
        struct dspy__engine *e = engine((enum dspy__engine_http1)which);
        struct outcome o;
        if (!has_v6) { /* no ::1 here: the URL is still taken, and fails as a connect */
            url_get(e, "[::1]", 9, &o);
            assert_int_equal(o.status, DSPY_ELM_NETWORK);
            assert_non_null(strstr(o.error, "Couldn't connect"));
            dspy__engine_free(e);
            continue;
        }
        url_get(e, "[::1]", ms.port, &o);
        assert_int_equal(o.status, DSPY_OK);
        assert_int_equal(o.http, 200);
        char want[64];
        snprintf(want, sizeof(want), "[::1]:%d", ms.port);
        pthread_mutex_lock(&ms.mu);
        assert_string_equal(ms.host, want);
        pthread_mutex_unlock(&ms.mu);
        dspy__engine_free(e);
    }
    if (has_v6)
        msrv_stop(&ms);
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
        cmocka_unit_test(host_connection_limit_in_order),
        cmocka_unit_test(queued_request_times_out),
        cmocka_unit_test(lookups_off_the_loop),
        cmocka_unit_test_teardown(failed_lookups_remembered, clock_thaw),
        cmocka_unit_test(connect_timeout_without_syn_ack),
        cmocka_unit_test(ipv6_literal),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
