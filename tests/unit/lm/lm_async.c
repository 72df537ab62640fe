/* Unit tests for dspy_lm_submit: many calls in flight over HTTP with completions on the
 * loop thread, errors delivered through the callback, the synchronous path of a transport
 * hook, and calls cut off by dspy_lm_free. The loopback server runs threads
 * (pthread_create inside libmicrohttpd and the engine), so this test also runs under TSan. */
/* threads: the engine's loop thread and callers on test threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>

#include <dspyc/lm.h>

#include "support/test_httpd.h"

#define REPLY                                                                          \
    "{\"choices\":[{\"message\":{\"content\":\"hello\"},\"finish_reason\":\"stop\"}]," \
    "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}"

struct tally {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, ok, by_code[32];
    char last_error[512];
};

static void tally_init(struct tally *t)
{
    memset(t, 0, sizeof(*t));
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
}

static void tally_release(struct tally *t)
{
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
}

static void on_done(void *userdata, dspy_status status, struct dspy_lm_response *resp,
                    const struct dspy_error *err)
{
    struct tally *t = userdata;
    pthread_mutex_lock(&t->mu);
    t->done++;
    if (!status && resp->n == 1 && !strcmp(resp->texts[0], "hello"))
        t->ok++;
    if (status)
        snprintf(t->last_error, sizeof(t->last_error), "%s", err->message);
    t->by_code[-status < 32 ? -status : 31]++;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    dspy_lm_response_release(resp);
}

static void tally_wait(struct tally *t, int n)
{
    pthread_mutex_lock(&t->mu);
    while (t->done < n)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

static dspy_lm *http_lm(const struct test_httpd *s, double timeout_s)
{
    char url[128];
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    dspy_lm *lm = NULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", s->port);
    o.base_url = url;
    o.model = "m";
    o.api_key_env = "DSPYC_TEST_KEY_UNSET";
    o.timeout_s = timeout_s;
    o.max_attempts = 1;
    assert_int_equal(dspy_lm_new(&o, &lm, NULL), DSPY_OK);
    return lm;
}

static dspy_status submit(dspy_lm *lm, struct tally *t, struct dspy_error *err)
{
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", "hi");
    struct dspy_lm_request req = DSPY_LM_REQUEST_INIT;
    req.messages = msgs;
    dspy_status rc = dspy_lm_submit(lm, &req, on_done, t, err);
    json_decref(msgs); /* borrowed for the call only */
    return rc;
}

static void many_in_flight(void **state)
{
    (void)state;
    struct test_httpd s;
    struct tally t;
    tally_init(&t);
    assert_int_equal(test_httpd_start(&s, 200, REPLY), 0);
    dspy_lm *lm = http_lm(&s, 0);
    for (int i = 0; i < 200; i++)
        assert_int_equal(submit(lm, &t, NULL), DSPY_OK);
    tally_wait(&t, 200);
    assert_int_equal(t.ok, 200);
    struct dspy_lm_stats st;
    dspy_lm_get_stats(lm, &st);
    assert_int_equal(st.requests, 200);
    dspy_lm_free(lm);

    /* HTTP errors come through the callback, classed. */
    tally_init(&t);
    pthread_mutex_lock(&s.lock);
    s.status = 429;
    pthread_mutex_unlock(&s.lock);
    lm = http_lm(&s, 0);
    assert_int_equal(submit(lm, &t, NULL), DSPY_OK);
    tally_wait(&t, 1);
    assert_int_equal(t.by_code[-DSPY_ELM_RATE_LIMIT], 1);
    assert_non_null(strstr(t.last_error, "HTTP 429"));
    dspy_lm_free(lm);
    test_httpd_stop(&s);
    tally_release(&t);
}

static void free_cancels_calls_in_flight(void **state)
{
    (void)state;
    struct test_httpd s;
    struct tally t;
    tally_init(&t);
    assert_int_equal(test_httpd_start(&s, 200, REPLY), 0);
    pthread_mutex_lock(&s.lock);
    s.delay_ms = 2000;
    pthread_mutex_unlock(&s.lock);
    dspy_lm *lm = http_lm(&s, 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(submit(lm, &t, NULL), DSPY_OK);
    dspy_lm_free(lm);
    assert_int_equal(t.done, 5);
    assert_int_equal(t.by_code[-DSPY_ECANCELED], 5);
    test_httpd_stop(&s);
    tally_release(&t);
}

static dspy_status canned(void *userdata, const char *url, const char *body, size_t body_len,
                          long *http_status, char **response, size_t *response_len,
                          struct dspy_error *err)
{
    (void)userdata;
    (void)url;
    (void)body;
    (void)body_len;
    (void)err;
    *http_status = 200;
    *response = dspy_strdup(REPLY);
    *response_len = strlen(REPLY);
    return DSPY_OK;
}

static void transport_runs_on_the_caller(void **state)
{
    (void)state;
    struct tally t;
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    dspy_lm *lm = NULL;
    struct dspy_error err;
    tally_init(&t);
    o.base_url = "http://lm.test/v1";
    o.model = "m";
    o.transport = canned;
    assert_int_equal(dspy_lm_new(&o, &lm, NULL), DSPY_OK);
    assert_int_equal(submit(lm, &t, NULL), DSPY_OK);
    assert_int_equal(t.done, 1); /* before submit returned */
    assert_int_equal(t.ok, 1);

    /* A bad request fails at submit, and the callback never runs. */
    struct dspy_lm_request req = DSPY_LM_REQUEST_INIT;
    assert_int_equal(dspy_lm_submit(lm, &req, on_done, &t, &err), DSPY_EINVAL);
    assert_int_equal(t.done, 1);
    dspy_lm_free(lm);
    tally_release(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(many_in_flight),
        cmocka_unit_test(free_cancels_calls_in_flight),
        cmocka_unit_test(transport_runs_on_the_caller),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
