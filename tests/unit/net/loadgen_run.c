/* Unit tests for dspy_loadgen_run against a loopback server: a closed loop stops at
 * max_requests with every result delivered once and keep-alive connections reused; an open
 * loop stamps each request with its intended time from the schedule (evenly spaced for a
 * constant arrival); HTTP errors and a refused connection are classed; bad options are
 * refused. The server starts threads (pthread_create inside libmicrohttpd), and so does the
 * generator, so this test also runs under TSan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <dspyc/loadgen.h>

#include "support/test_httpd.h"

#define MAXR 256

struct results {
    pthread_mutex_t mu;
    int n;
    int by_outcome[DSPY_LG_NOUTCOMES];
    int status[MAXR];
    uint64_t intended[MAXR];
    uint64_t seq_seen[MAXR];
    int new_connections;
};

static void on_result(void *userdata, unsigned thread, const struct dspy_loadgen_result *r)
{
    struct results *rs = userdata;
    (void)thread;
    pthread_mutex_lock(&rs->mu);
    if (rs->n < MAXR) {
        rs->status[rs->n] = r->status;
        rs->intended[rs->n] = r->intended_ns;
        rs->seq_seen[rs->n] = r->seq;
    }
    rs->n++;
    rs->by_outcome[r->outcome]++;
    rs->new_connections += r->new_connection;
    pthread_mutex_unlock(&rs->mu);
}

static struct dspy_loadgen_options options(int port, struct dspy_loadgen_request *req,
                                           struct results *rs, char **bytes)
{
    size_t len = 0;
    *bytes = dspy_loadgen_build_request("POST", "127.0.0.1", port, "/v1/x", NULL, 0, "{}", 2, &len);
    assert_non_null(*bytes);
    req->bytes = *bytes;
    req->len = len;
    memset(rs, 0, sizeof(*rs));
    pthread_mutex_init(&rs->mu, NULL);
    struct dspy_loadgen_options o = DSPY_LOADGEN_OPTIONS_INIT;
    o.host = "127.0.0.1";
    o.port = port;
    o.requests = req;
    o.nrequests = 1;
    o.on_result = on_result;
    o.userdata = rs;
    o.timeout_s = 10;
    o.drain_s = 10;
    return o;
}

static void closed_loop_stops_at_max_requests(void **state)
{
    (void)state;
    struct test_httpd s;
    assert_int_equal(test_httpd_start(&s, 200, "{\"ok\":true}"), 0);
    struct dspy_loadgen_request req;
    struct results rs;
    char *bytes;
    struct dspy_loadgen_options o = options(s.port, &req, &rs, &bytes);
    o.users = 2;
    o.max_requests = 20;
    struct dspy_loadgen_stats st;
    struct dspy_error err;
    assert_int_equal(dspy_loadgen_run(&o, NULL, &st, &err), DSPY_OK);
    assert_int_equal(rs.n, 20);
    assert_int_equal(rs.by_outcome[DSPY_LG_OK], 20);
    assert_int_equal(st.sent, 20);
    assert_int_equal(st.completed, 20);
    assert_int_equal(st.abandoned, 0);
    assert_true(st.connections_opened <= 2); /* one keep-alive connection per user */
    assert_int_equal(rs.new_connections, (int)st.connections_opened);
    for (int i = 0; i < 20; i++)
        assert_int_equal(rs.status[i], 200);
    /* every arrival number once */
    int seen[20] = { 0 };
    for (int i = 0; i < 20; i++) {
        assert_true(rs.seq_seen[i] < 20);
        seen[rs.seq_seen[i]]++;
    }
    for (int i = 0; i < 20; i++)
        assert_int_equal(seen[i], 1);
    pthread_mutex_lock(&s.lock);
    assert_int_equal(s.requests, 20);
    assert_string_equal(s.path, "/v1/x");
    pthread_mutex_unlock(&s.lock);
    dspy_free(bytes);
    test_httpd_stop(&s);
    pthread_mutex_destroy(&rs.mu);
}

static void open_loop_intended_times_follow_the_schedule(void **state)
{
    (void)state;
    struct test_httpd s;
    assert_int_equal(test_httpd_start(&s, 503, "{}"), 0);
    struct dspy_loadgen_request req;
    struct results rs;
    char *bytes;
    struct dspy_loadgen_options o = options(s.port, &req, &rs, &bytes);
    struct dspy_rate_stage stage = { 0.2, 100, 100 }; /* 100/s for 0.2 s: 20 arrivals */
    o.schedule_stages = &stage;
    o.nstages = 1;
    o.arrival = DSPY_ARRIVAL_CONSTANT;
    struct dspy_loadgen_stats st;
    assert_int_equal(dspy_loadgen_run(&o, NULL, &st, NULL), DSPY_OK);
    assert_int_equal(st.scheduled, 20);
    assert_int_equal(rs.n, 20);
    assert_int_equal(rs.by_outcome[DSPY_LG_HTTP], 20);
    for (int i = 0; i < 20; i++)
        assert_int_equal(rs.status[i], 503);
    /* The intended times are the schedule's, 10 ms apart, however late the sends were. */
    uint64_t t[20];
    for (int i = 0; i < 20; i++)
        t[rs.seq_seen[i]] = rs.intended[i];
    for (int i = 1; i < 20; i++) {
        uint64_t gap = t[i] - t[i - 1];
        assert_true(gap >= 9999000 && gap <= 10001000);
    }
    assert_true(t[0] >= st.started_ns);
    dspy_free(bytes);
    test_httpd_stop(&s);
    pthread_mutex_destroy(&rs.mu);
}

/* A port bound and never listened on, kept bound (so nobody else takes it) while the test
 * connects to it: every connect is refused. */
static int closed_port(int *fd_out)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *fd_out = fd;
    return ntohs(a.sin_port);
}

static void refused_connection_and_bad_options(void **state)
{
    (void)state;
    struct dspy_loadgen_request req;
    struct results rs;
    char *bytes;
    int fd;
    int port = closed_port(&fd);
    struct dspy_loadgen_options o = options(port, &req, &rs, &bytes);
    o.users = 1;
    o.max_requests = 3;
    struct dspy_loadgen_stats st;
    assert_int_equal(dspy_loadgen_run(&o, NULL, &st, NULL), DSPY_OK);
    assert_int_equal(rs.n, 3);
    assert_int_equal(rs.by_outcome[DSPY_LG_CONNECT], 3);

    struct dspy_loadgen_options bad = o;
    bad.nrequests = 0;
    struct dspy_error err;
    dspy_error_clear(&err);
    assert_int_equal(dspy_loadgen_run(&bad, NULL, &st, &err), DSPY_EINVAL);
    bad = o;
    bad.host = NULL;
    assert_int_equal(dspy_loadgen_run(&bad, NULL, &st, NULL), DSPY_EINVAL);
    close(fd);
    dspy_free(bytes);
    pthread_mutex_destroy(&rs.mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(closed_loop_stops_at_max_requests),
        cmocka_unit_test(open_loop_intended_times_follow_the_schedule),
        cmocka_unit_test(refused_connection_and_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
