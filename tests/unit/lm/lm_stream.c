/* Unit tests for streamed LM calls (src/lm/lm_stream.c) against a scripted loopback server
 * that writes its answer in pieces: events split across reads, the usage-only chunk, a
 * stream cut before [DONE], HTTP and malformed-event errors (never retried), cancelling from
 * the delta callback, the cache tee (stored only on a clean finish, shared with plain
 * calls) and replay of a hit in small pieces; and the transport-hook path. */
/* threads: the engine's loop thread delivers stream deltas. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <dspyc/dspyc.h>

/* ---- a scripted server: one answer, written piece by piece, then the connection closed */

#define MAX_PIECES 16

struct script_server {
    int lfd, port;
    pthread_t thread;
    pthread_mutex_t lock;           /* guards head, pieces and body (a test sets the next
                                      * script while the server may still write the last) */
    const char *head;               /* status line and headers, "\r\n\r\n" included */
    const char *pieces[MAX_PIECES]; /* body pieces, NULL-terminated, each flushed alone */
    atomic_int requests;
    char body[16384]; /* the last request's body */
    atomic_bool stop;
};

#define SSE_HEAD "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"

static void nap_ms(long ms)
{
    struct timespec ts = { 0, ms * 1000000L };
    nanosleep(&ts, NULL);
}

/* Read one request (head + Content-Length body) into s->body. */
static void read_request(struct script_server *s, int fd)
{
    char buf[32768];
    size_t n = 0;
    long want = -1;
    char *end = NULL;
    while (n < sizeof(buf) - 1) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - 1 - n);
        if (r <= 0)
            return;
        n += (size_t)r;
        buf[n] = '\0';
        if (!end && (end = strstr(buf, "\r\n\r\n"))) {
            const char *cl = strstr(buf, "Content-Length:");
            if (!cl)
                cl = strstr(buf, "content-length:");
            want = cl ? atol(cl + 15) : 0;
        }
        if (end && (long)(n - (size_t)(end + 4 - buf)) >= want) {
            pthread_mutex_lock(&s->lock);
            snprintf(s->body, sizeof(s->body), "%s", end + 4);
            pthread_mutex_unlock(&s->lock);
            return;
        }
    }
}

static void *serve(void *arg)
{
    struct script_server *s = arg;
    while (!atomic_load(&s->stop)) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            break;
        if (atomic_load(&s->stop)) {
            close(fd);
            break;
        }
        read_request(s, fd);
        atomic_fetch_add(&s->requests, 1);
        pthread_mutex_lock(&s->lock);
        const char *head = s->head, *pieces[MAX_PIECES];
        memcpy(pieces, s->pieces, sizeof(pieces));
        pthread_mutex_unlock(&s->lock);
        ssize_t w = send(fd, head, strlen(head), MSG_NOSIGNAL);
        for (int i = 0; w >= 0 && i < MAX_PIECES && pieces[i]; i++) {
            nap_ms(3); /* so that each piece arrives in a read of its own */
            w = send(fd, pieces[i], strlen(pieces[i]), MSG_NOSIGNAL);
        }
        close(fd);
    }
    return NULL;
}

static void server_start(struct script_server *s)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    pthread_mutex_init(&s->lock, NULL);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->lfd >= 0);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 16), 0);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &alen), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->thread, NULL, serve, s), 0);
}

static void server_stop(struct script_server *s)
{
    atomic_store(&s->stop, true);
    shutdown(s->lfd, SHUT_RDWR);
    close(s->lfd);
    pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->lock);
}

/* ---- the script ---------------------------------------------------------------------- */

#define CHUNK(delta, finish)                                                          \
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"m-2024\"," \
    "\"choices\":[{\"index\":0,\"delta\":{" delta "},\"finish_reason\":" finish "}]}\n\n"
#define USAGE_CHUNK                                                                   \
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"m-2024\"," \
    "\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,"         \
    "\"total_tokens\":15}}\n\n"
#define DONE "data: [DONE]\n\n"

/* "Hello, wörld" in three deltas, the second event split inside its JSON and the usage
 * chunk split inside its "data:" field name. */
static const char *const clean_pieces[] = {
    CHUNK("\"role\":\"assistant\",\"content\":\"\"", "null") CHUNK("\"content\":\"Hel\"", "null"),
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"cont",
    "ent\":\"lo, w\\u00f6\"},\"finish_reason\":null}]}\n\n" CHUNK("\"content\":\"rld\"", "null"),
    CHUNK("", "\"stop\"") "da",
    USAGE_CHUNK + 2,
    DONE,
    NULL,
};

static const char *const truncated_pieces[] = {
    CHUNK("\"content\":\"Hel\"", "null"),
    CHUNK("\"content\":\"lo\"", "null"),
    NULL,
};

static void script(struct script_server *s, const char *head, const char *const *pieces)
{
    pthread_mutex_lock(&s->lock);
    s->head = head;
    memset(s->pieces, 0, sizeof(s->pieces));
    for (int i = 0; pieces[i]; i++)
        s->pieces[i] = pieces[i];
    pthread_mutex_unlock(&s->lock);
}

/* ---- helpers ---------------------------------------------------------------------------- */

struct deltas {
    char text[4096];
    size_t len;
    int calls;
    size_t longest;
    int stop_after; /* return non-zero at this call; 0 = never */
};

static int collect(void *ud, const char *text, size_t len, uint64_t recv_ns)
{
    struct deltas *d = ud;
    assert_true(recv_ns > 0);
    assert_true(d->len + len < sizeof(d->text));
    memcpy(d->text + d->len, text, len);
    d->len += len;
    d->text[d->len] = '\0';
    if (len > d->longest)
        d->longest = len;
    return ++d->calls == d->stop_after;
}

static dspy_lm *open_lm(const struct script_server *s, dspy_cache *c)
{
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    char url[64];
    dspy_lm *lm = NULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", s->port);
    o.base_url = url;
    o.model = "openai/gpt-4o-mini";
    o.api_key = "sk-test";
    o.timeout_s = 10;
    o.cache = c;
    assert_int_equal(dspy_lm_new(&o, &lm, NULL), DSPY_OK);
    return lm;
}

static json_t *messages(void)
{
    return json_pack("[{s:s,s:s}]", "role", "user", "content", "Say hello");
}

static dspy_status stream(dspy_lm *lm, struct deltas *d, struct dspy_lm_response *resp,
                          struct dspy_error *err)
{
    struct dspy_lm_request req = DSPY_LM_REQUEST_INIT;
    json_t *msgs = messages();
    req.messages = msgs;
    dspy_error_clear(err);
    dspy_status rc = dspy_lm_stream(lm, &req, collect, d, resp, err);
    json_decref(msgs);
    return rc;
}

static dspy_cache *mem_cache(void)
{
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    dspy_cache *c = NULL;
    assert_int_equal(dspy_cache_new(&o, &c, NULL), DSPY_OK);
    return c;
}

static uint64_t cache_entries(dspy_cache *c)
{
    struct dspy_cache_stats st;
    dspy_cache_stats(c, &st);
    return st.level[0].entries;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void split_events_and_usage_chunk(void **state)
{
    (void)state;
    struct script_server s = { 0 };
    struct deltas d = { 0 };
    struct dspy_lm_response resp;
    struct dspy_error err;
    server_start(&s);
    script(&s, SSE_HEAD, clean_pieces);
    dspy_lm *lm = open_lm(&s, NULL);
    assert_int_equal(stream(lm, &d, &resp, &err), DSPY_OK);
    assert_string_equal(d.text, "Hello, w\xc3\xb6rld");
    assert_int_equal(d.calls, 3);
    assert_int_equal(resp.n, 1);
    assert_string_equal(resp.texts[0], "Hello, w\xc3\xb6rld");
    assert_string_equal(resp.finish_reasons[0], "stop");
    assert_string_equal(resp.model, "m-2024");
    assert_int_equal(resp.usage.prompt_tokens, 12);
    assert_int_equal(resp.usage.completion_tokens, 3);
    assert_int_equal(resp.usage.total_tokens, 15);
    assert_int_equal(resp.http_status, 200);
    assert_false(resp.cache_hit);
    pthread_mutex_lock(&s.lock);
    assert_non_null(strstr(s.body, "\"stream\":true"));
    assert_non_null(strstr(s.body, "\"stream_options\":{\"include_usage\":true}"));
    pthread_mutex_unlock(&s.lock);
    dspy_lm_response_release(&resp);
    dspy_lm_free(lm);
    server_stop(&s);
}

static void truncated_stream_is_an_error(void **state)
{
    (void)state;
    struct script_server s = { 0 };
    struct deltas d = { 0 };
    struct dspy_lm_response resp;
    struct dspy_error err;
    server_start(&s);
    script(&s, SSE_HEAD, truncated_pieces);
    dspy_lm *lm = open_lm(&s, NULL);
    assert_int_equal(stream(lm, &d, &resp, &err), DSPY_ELM_BAD_RESPONSE);
    assert_non_null(strstr(err.message, "stream ended before [DONE]"));
    assert_string_equal(d.text, "Hello"); /* what was delivered stands */
    assert_int_equal(resp.n, 0);
    assert_int_equal(atomic_load(&s.requests), 1); /* never retried */
    dspy_lm_free(lm);
    server_stop(&s);
}

static void http_and_event_errors(void **state)
{
    (void)state;
    static const char *const error_body[] = {
        "{\"error\":{\"message\":\"slow down\",\"type\":\"rate_limit\"}}", NULL
    };
    static const char *const bad_event[] = { CHUNK("\"content\":\"Hi\"", "null"),
                                             "data: {not json\n\n", DONE, NULL };
    static const char *const error_event[] = {
        "data: {\"error\":{\"message\":\"engine overloaded\"}}\n\n", NULL
    };
    struct script_server s = { 0 };
    struct deltas d = { 0 };
    struct dspy_lm_response resp;
    struct dspy_error err;
    server_start(&s);
    script(&s, "HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\n\r\n", error_body);
    dspy_lm *lm = open_lm(&s, NULL);
    assert_int_equal(stream(lm, &d, &resp, &err), DSPY_ELM_RATE_LIMIT);
    assert_non_null(strstr(err.message, "slow down"));
    assert_int_equal(err.http_status, 429);
    assert_int_equal(d.calls, 0);
    assert_int_equal(atomic_load(&s.requests), 1); /* a stream is never retried */

    script(&s, SSE_HEAD, bad_event);
    assert_int_equal(stream(lm, &d, &resp, &err), DSPY_ELM_BAD_RESPONSE);
    assert_non_null(strstr(err.message, "is not JSON"));

    script(&s, SSE_HEAD, error_event);
    assert_int_equal(stream(lm, &d, &resp, &err), DSPY_ELM_SERVER);
    assert_non_null(strstr(err.message, "engine overloaded"));
    dspy_lm_free(lm);
    server_stop(&s);
}

static void delta_callback_cancels(void **state)
{
    (void)state;
    struct script_server s = { 0 };
    struct deltas d = { 0 };
    struct dspy_lm_response resp;
    struct dspy_error err;
    d.stop_after = 1;
    server_start(&s);
    script(&s, SSE_HEAD, clean_pieces);
    dspy_lm *lm = open_lm(&s, NULL);
    assert_int_equal(stream(lm, &d, &resp, &err), DSPY_ECANCELED);
    assert_int_equal(d.calls, 1);
    assert_int_equal(resp.n, 0);
    dspy_lm_free(lm);
    server_stop(&s);
}

static void cache_stores_only_clean_streams_and_replays(void **state)
{
    (void)state;
    struct script_server s = { 0 };
    struct deltas d = { 0 };
    struct dspy_lm_response resp;
    struct dspy_error err;
    dspy_cache *c = mem_cache();
    server_start(&s);
    script(&s, SSE_HEAD, truncated_pieces);
    dspy_lm *lm = open_lm(&s, c);

    /* A cut stream stores nothing: the next call goes upstream again. */
    assert_int_equal(stream(lm, &d, &resp, &err), DSPY_ELM_BAD_RESPONSE);
    assert_int_equal(cache_entries(c), 0);

    memset(&d, 0, sizeof(d));
    script(&s, SSE_HEAD, clean_pieces);
    assert_int_equal(stream(lm, &d, &resp, &err), DSPY_OK);
    assert_int_equal(atomic_load(&s.requests), 2);
    assert_false(resp.cache_hit);
    assert_int_equal(cache_entries(c), 1);
    dspy_lm_response_release(&resp);

    /* A hit: no request, replayed in pieces of about 4 bytes, original usage. */
    memset(&d, 0, sizeof(d));
    assert_int_equal(stream(lm, &d, &resp, &err), DSPY_OK);
    assert_int_equal(atomic_load(&s.requests), 2);
    assert_true(resp.cache_hit);
    assert_string_equal(d.text, "Hello, w\xc3\xb6rld");
    assert_int_equal(d.calls, 4); /* "Hell" "o, w" "\xc3\xb6rl" "d": never inside UTF-8 */
    assert_true(d.longest <= 5);
    assert_string_equal(resp.finish_reasons[0], "stop");
    assert_int_equal(resp.usage.total_tokens, 15);
    dspy_lm_response_release(&resp);

    /* A plain call with the same request hits the streamed entry. */
    struct dspy_lm_request req = DSPY_LM_REQUEST_INIT;
    json_t *msgs = messages();
    req.messages = msgs;
    assert_int_equal(dspy_lm_complete(lm, &req, &resp, &err), DSPY_OK);
    assert_true(resp.cache_hit);
    assert_string_equal(resp.texts[0], "Hello, w\xc3\xb6rld");
    assert_int_equal(atomic_load(&s.requests), 2);
    dspy_lm_response_release(&resp);

    /* no-cache streams again, live. */
    memset(&d, 0, sizeof(d));
    req.cache.no_cache = true;
    assert_int_equal(dspy_lm_stream(lm, &req, collect, &d, &resp, &err), DSPY_OK);
    assert_false(resp.cache_hit);
    assert_int_equal(d.calls, 3);
    assert_int_equal(atomic_load(&s.requests), 3);
    dspy_lm_response_release(&resp);
    json_decref(msgs);

    dspy_lm_free(lm);
    dspy_cache_free(c);
    server_stop(&s);
}

/* ---- the transport hook: its body is read as the event stream ---------------------------- */

static dspy_status sse_transport(void *userdata, const char *url, const char *body, size_t body_len,
                                 long *http_status, char **response, size_t *response_len,
                                 struct dspy_error *err)
{
    const char *reply = userdata;
    (void)url;
    (void)err;
    assert_non_null(strstr(body, "\"stream\":true"));
    assert_true(body_len > 0);
    *http_status = 200;
    *response = dspy_strdup(reply);
    *response_len = strlen(reply);
    return *response ? DSPY_OK : DSPY_ENOMEM;
}

static void transport_hook_streams(void **state)
{
    (void)state;
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    struct dspy_lm_request req = DSPY_LM_REQUEST_INIT;
    struct dspy_lm_response resp;
    struct deltas d = { 0 };
    struct dspy_error err;
    dspy_lm *lm = NULL;
    json_t *msgs = messages(), *extra = json_pack("{s:b}", "stream", 0);
    o.base_url = "http://lm.test/v1";
    o.model = "m";
    o.transport = sse_transport;
    o.transport_userdata = (void *)(CHUNK("\"content\":\"Hi\"", "\"stop\"") USAGE_CHUNK DONE);
    assert_int_equal(dspy_lm_new(&o, &lm, NULL), DSPY_OK);
    req.messages = msgs;
    req.extra = extra; /* a "stream" key of the caller's gives way to the stream's own */
    assert_int_equal(dspy_lm_stream(lm, &req, collect, &d, &resp, &err), DSPY_OK);
    assert_string_equal(d.text, "Hi");
    assert_string_equal(resp.texts[0], "Hi");
    assert_int_equal(resp.usage.total_tokens, 15);
    dspy_lm_response_release(&resp);

    o.transport_userdata = (void *)CHUNK("\"content\":\"Hi\"", "null");
    dspy_lm_free(lm);
    assert_int_equal(dspy_lm_new(&o, &lm, NULL), DSPY_OK);
    assert_int_equal(dspy_lm_stream(lm, &req, collect, &d, &resp, &err), DSPY_ELM_BAD_RESPONSE);
    assert_non_null(strstr(err.message, "before [DONE]"));
    dspy_lm_free(lm);
    json_decref(extra);
    json_decref(msgs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(split_events_and_usage_chunk),
        cmocka_unit_test(truncated_stream_is_an_error),
        cmocka_unit_test(http_and_event_errors),
        cmocka_unit_test(delta_callback_cancels),
        cmocka_unit_test(cache_stores_only_clean_streams_and_replays),
        cmocka_unit_test(transport_hook_streams),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
