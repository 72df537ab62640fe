/* Unit tests for the blocking HTTP client: bodies both ways, headers, keep-alive reuse
 * (sequential and from several threads), and each failure class (timeout, body too big,
 * connection refused, connection dropped, bad URL) against loopback servers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/http.h"
#include "support/test_httpd.h"

static void url_of(const struct test_httpd *s, const char *path, char *out, size_t cap)
{
    snprintf(out, cap, "http://127.0.0.1:%d%s", s->port, path);
}

static void get_and_post(void **state)
{
    (void)state;
    struct test_httpd s;
    char url[128];
    assert_int_equal(test_httpd_start(&s, 200, "{\"ok\":true}"), 0);
    url_of(&s, "/v1/models", url, sizeof(url));
    struct dspy__http_client *c = dspy__http_client_new(4);
    assert_non_null(c);
    const char *lines[] = { "Authorization: Bearer sk-test", "Content-Type: application/json" };
    struct dspy__http_headers *h = dspy__http_headers_new(lines, 2);
    assert_non_null(h);

    struct dspy__http_request req = { .url = url, .timeout_s = 5 };
    struct dspy__http_response resp;
    struct dspy_error err;
    assert_int_equal(dspy__http_request(c, &req, &resp, &err), DSPY_OK);
    assert_int_equal(resp.status, 200);
    assert_string_equal(resp.body, "{\"ok\":true}");
    assert_int_equal(resp.body_len, 11);
    assert_string_equal(s.path, "/v1/models");
    assert_string_equal(s.auth, "");
    dspy__http_response_release(&resp);

    test_httpd_set(&s, 418, "short and stout", 0);
    req.headers = h;
    req.body = "{\"x\":1}";
    req.body_len = 7;
    assert_int_equal(dspy__http_request(c, &req, &resp, &err), DSPY_OK);
    assert_int_equal(resp.status, 418); /* any status is the caller's to classify */
    assert_string_equal(resp.body, "short and stout");
    assert_string_equal(s.seen, "{\"x\":1}");
    assert_string_equal(s.auth, "Bearer sk-test");
    dspy__http_response_release(&resp);

    dspy__http_headers_free(h);
    dspy__http_client_free(c);
    test_httpd_stop(&s);
}

static void keeps_connections_alive(void **state)
{
    (void)state;
    struct test_httpd s;
    char url[128];
    assert_int_equal(test_httpd_start(&s, 200, "hi"), 0);
    url_of(&s, "/", url, sizeof(url));
    struct dspy__http_client *c = dspy__http_client_new(4);
    struct dspy__http_request req = { .url = url, .body = "a", .body_len = 1, .timeout_s = 5 };
    for (int i = 0; i < 5; i++) {
        struct dspy__http_response resp;
        assert_int_equal(dspy__http_request(c, &req, &resp, NULL), DSPY_OK);
        dspy__http_response_release(&resp);
    }
    assert_int_equal(s.requests, 5);
    assert_int_equal(s.connections, 1);
    dspy__http_client_free(c);
    test_httpd_stop(&s);
}

struct worker {
    struct dspy__http_client *c;
    const char *url;
    int failures;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct dspy__http_request req = { .url = w->url, .body = "x", .body_len = 1, .timeout_s = 5 };
    for (int i = 0; i < 10; i++) {
        struct dspy__http_response resp;
        if (dspy__http_request(w->c, &req, &resp, NULL) || resp.status != 200)
            w->failures++;
        dspy__http_response_release(&resp);
    }
    return NULL;
}

static void threads_share_a_client(void **state)
{
    (void)state;
    struct test_httpd s;
    char url[128];
    assert_int_equal(test_httpd_start(&s, 200, "hi"), 0);
    test_httpd_set(&s, 200, "hi", 2);
    url_of(&s, "/", url, sizeof(url));
    struct dspy__http_client *c = dspy__http_client_new(8);
    pthread_t t[6];
    struct worker w[6];
    for (int i = 0; i < 6; i++) {
        w[i] = (struct worker){ c, url, 0 };
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    assert_int_equal(s.requests, 60);
    /* Six callers at once need at most six connections, reused across their requests. */
    assert_true(s.connections <= 6);
    dspy__http_client_free(c);
    test_httpd_stop(&s);
}

static void timeout_is_classed(void **state)
{
    (void)state;
    struct test_httpd s;
    char url[128];
    struct dspy_error err;
    assert_int_equal(test_httpd_start(&s, 200, "late"), 0);
    test_httpd_set(&s, 200, "late", 500);
    url_of(&s, "/", url, sizeof(url));
    struct dspy__http_client *c = dspy__http_client_new(2);
    struct dspy__http_request req = { .url = url, .timeout_s = 0.1 };
    struct dspy__http_response resp;
    assert_int_equal(dspy__http_request(c, &req, &resp, &err), DSPY_ELM_TIMEOUT);
    assert_int_equal(err.code, DSPY_ELM_TIMEOUT);
    assert_null(resp.body);
    dspy__http_client_free(c);
    test_httpd_stop(&s);
}

static void body_over_limit(void **state)
{
    (void)state;
    static char big[4096];
    struct test_httpd s;
    char url[128];
    struct dspy_error err;
    memset(big, 'x', sizeof(big) - 1);
    assert_int_equal(test_httpd_start(&s, 200, big), 0);
    url_of(&s, "/", url, sizeof(url));
    struct dspy__http_client *c = dspy__http_client_new(2);
    struct dspy__http_request req = { .url = url, .timeout_s = 5, .max_response_bytes = 100 };
    struct dspy__http_response resp;
    assert_int_equal(dspy__http_request(c, &req, &resp, &err), DSPY_ETOOBIG);
    assert_non_null(strstr(err.message, "100 bytes"));
    req.max_response_bytes = sizeof(big);
    assert_int_equal(dspy__http_request(c, &req, &resp, &err), DSPY_OK);
    assert_int_equal(resp.body_len, sizeof(big) - 1);
    dspy__http_response_release(&resp);
    dspy__http_client_free(c);
    test_httpd_stop(&s);
}

/* A port nothing listens on: bind one, note it, close it. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static void *accept_and_drop(void *arg)
{
    int fd = *(int *)arg;
    for (int i = 0; i < 1; i++) {
        int c = accept(fd, NULL, NULL);
        if (c >= 0) {
            char buf[1024];
            (void)!read(c, buf, sizeof(buf)); /* take the request, answer nothing */
            close(c);
        }
    }
    return NULL;
}

static void network_failures(void **state)
{
    (void)state;
    char url[128];
    struct dspy_error err;
    struct dspy__http_response resp;
    struct dspy__http_client *c = dspy__http_client_new(2);

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", closed_port());
    struct dspy__http_request req = { .url = url, .timeout_s = 5 };
    assert_int_equal(dspy__http_request(c, &req, &resp, &err), DSPY_ELM_NETWORK);
    assert_non_null(strstr(err.message, "127.0.0.1"));

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 4), 0);
    getsockname(fd, (struct sockaddr *)&a, &len);
    pthread_t t;
    pthread_create(&t, NULL, accept_and_drop, &fd);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", ntohs(a.sin_port));
    assert_int_equal(dspy__http_request(c, &req, &resp, &err), DSPY_ELM_NETWORK);
    pthread_join(t, NULL);
    close(fd);

    req.url = "nosuchscheme://host/";
    assert_int_equal(dspy__http_request(c, &req, &resp, &err), DSPY_EINVAL);
    dspy__http_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(get_and_post),
        cmocka_unit_test(keeps_connections_alive),
        cmocka_unit_test(threads_share_a_client),
        cmocka_unit_test(timeout_is_classed),
        cmocka_unit_test(body_over_limit),
        cmocka_unit_test(network_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
