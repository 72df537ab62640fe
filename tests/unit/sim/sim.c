/* Unit tests of the simulator's public lifecycle (sim layer, include/dspyc/sim.h): options
 * checked with the option named, start on an ephemeral port, answers counted by status
 * (the server's own 404 included), counters kept after stop, task files. The simulator
 * serves from its own threads (pthread_create in the server), so this test also runs under
 * TSan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <dspyc/sim.h>

static void test_bad_options_name_the_option(void **state)
{
    (void)state;
    static const char *const fields[] = { "jitter", "queue_full_status", "embed_dim",
                                          "header_timeout_ms", "max_body_bytes_total" };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        struct dspy_sim_options o = DSPY_SIM_OPTIONS_INIT;
        struct dspy_error err;
        dspy_sim *s = (dspy_sim *)&o; /* must be set to NULL on failure */
        switch (i) {
        case 0: o.jitter = 2; break;
        case 1: o.queue_full_status = 500; break;
        case 2: o.embed_dim = 0; break;
        case 3: o.header_timeout_ms = 0; break;
        default: o.max_body_bytes_total = 1000; break;
        }
        assert_int_equal(dspy_sim_new(&o, &s, &err), DSPY_EINVAL);
        assert_null(s);
        assert_string_equal(err.field, fields[i]);
        assert_non_null(strstr(err.message, fields[i]));
    }
    struct dspy_sim_options o = DSPY_SIM_OPTIONS_INIT;
    struct dspy_error err;
    dspy_sim *s = NULL;
    o.fail_429 = o.fail_500 = 0.6;
    assert_int_equal(dspy_sim_new(&o, &s, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "add up to"));
    dspy_sim_free(NULL);
}

/* One HTTP/1.1 request with Connection: close; returns the status line's code. */
static int http_status(int port, const char *request)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    char buf[4096];
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(write(fd, request, strlen(request)), (ssize_t)strlen(request));
    size_t n = 0;
    ssize_t r;
    while (n < sizeof(buf) - 1 && (r = read(fd, buf + n, sizeof(buf) - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = '\0';
    close(fd);
    int code = 0;
    sscanf(buf, "HTTP/1.1 %d", &code);
    return code;
}

static void test_answers_are_counted_by_status(void **state)
{
    (void)state;
    struct dspy_sim_options o = DSPY_SIM_OPTIONS_INIT;
    struct dspy_error err;
    struct dspy_sim_stats st;
    dspy_sim *s = NULL;
    o.threads = 1;
    assert_int_equal(dspy_sim_new(&o, &s, &err), DSPY_OK);
    assert_int_equal(dspy_sim_port(s), -1);
    assert_int_equal(dspy_sim_start(s, &err), DSPY_OK);
    int port = dspy_sim_port(s);
    assert_true(port > 0);
    assert_string_equal(dspy_sim_bind(s), "127.0.0.1");
    assert_int_equal(http_status(port, "GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n"), 404);
    assert_int_equal(http_status(port, "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n"), 200);
    assert_int_equal(http_status(port, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                       "Content-Length: 2\r\nConnection: close\r\n\r\n[]"),
                     400);
    assert_int_equal(dspy_sim_status_count(s, 404), 1);
    assert_int_equal(dspy_sim_status_count(s, 200), 1);
    assert_int_equal(dspy_sim_status_count(s, 400), 1);
    assert_int_equal(dspy_sim_status_count(s, 700), 0);
    dspy_sim_stop(s);
    dspy_sim_stop(s); /* idempotent */
    assert_int_equal(dspy_sim_port(s), -1);
    dspy_sim_stats(s, &st);
    assert_int_equal(st.requests, 3);
    assert_int_equal(dspy_sim_status_count(s, 404), 1);
    dspy_sim_free(s);
}

static void test_task_files(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    struct dspy_error err;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(dspy_sim_write_task(f, "arith", 3, 1, &err), DSPY_OK);
    fclose(f);
    int lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    assert_int_equal(lines, 3);
    assert_int_equal(strncmp(text, "{\"question\": \"", 14), 0);
    assert_non_null(strstr(text, "\", \"answer\": \""));
    free(text);
    assert_int_equal(dspy_sim_write_task(stdout, "poetry", 3, 1, &err), DSPY_ENOTFOUND);
    assert_non_null(strstr(err.message, "arith"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_options_name_the_option),
        cmocka_unit_test(test_answers_are_counted_by_status),
        cmocka_unit_test(test_task_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
