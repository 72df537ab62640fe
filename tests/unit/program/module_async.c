/* Unit tests for dspy_module_call_async: over HTTP the callback runs once per call on the
 * LM's loop thread (not the caller's) with the parsed prediction and the call's info; the
 * Chat -> JSON fallback sends its second call from the first one's completion; LM errors
 * and unparseable replies reach the callback; a call that cannot start (missing input)
 * returns the error and never calls back; with a transport hook the callback runs before
 * the call returns. The loopback server and the engine start threads (pthread_create inside
 * libmicrohttpd and the LM), so this test also runs under TSan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#include <dspyc/dspyc.h>

#include "support/test_httpd.h"

#define CHAT_REPLY                                                               \
    "{\"choices\":[{\"message\":{\"content\":\"[[ ## answer ## ]]\\nParis\\n\\n" \
    "[[ ## completed ## ]]\"},\"finish_reason\":\"stop\"}],"                     \
    "\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":5,\"total_tokens\":35}}"
#define PROSE_REPLY                                                      \
    "{\"choices\":[{\"message\":{\"content\":\"I think it is Paris.\"}," \
    "\"finish_reason\":\"stop\"}],"                                      \
    "\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":5,\"total_tokens\":35}}"

struct outcome {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, ok, calls_seen;
    dspy_status last;
    pthread_t thread; /* where the last callback ran */
    char answer[64];
    char message[512];
    int lm_calls;
    uint64_t total_tokens;
};

static void outcome_init(struct outcome *o)
{
    memset(o, 0, sizeof(*o));
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
}

static void outcome_release(struct outcome *o)
{
    pthread_cond_destroy(&o->cv);
    pthread_mutex_destroy(&o->mu);
}

static void on_done(void *userdata, dspy_status status, json_t *prediction, json_t *completions,
                    const struct dspy_call_info *info, const struct dspy_error *err)
{
    struct outcome *o = userdata;
    pthread_mutex_lock(&o->mu);
    o->done++;
    o->last = status;
    o->thread = pthread_self();
    o->lm_calls = info ? info->lm_calls : -1;
    o->total_tokens = info ? info->usage.total_tokens : 0;
    if (!status) {
        const char *a = json_string_value(json_object_get(prediction, "answer"));
        if (a && !strcmp(a, "Paris"))
            o->ok++;
        snprintf(o->answer, sizeof(o->answer), "%s", a ? a : "");
    } else {
        assert_null(prediction);
        snprintf(o->message, sizeof(o->message), "%s", err ? err->message : "");
    }
    json_decref(prediction);
    json_decref(completions);
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

static void outcome_wait(struct outcome *o, int n)
{
    pthread_mutex_lock(&o->mu);
    while (o->done < n)
        pthread_cond_wait(&o->cv, &o->mu);
    pthread_mutex_unlock(&o->mu);
}

/* An LM for `model` on the test server (gpt-4o-mini: one sent structured outputs). */
static dspy_lm *http_lm_for(const struct test_httpd *s, const char *model)
{
    char url[128];
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    dspy_lm *lm = NULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", s->port);
    o.base_url = url;
    o.model = model;
    o.api_key_env = "DSPYC_TEST_KEY_UNSET";
    o.max_attempts = 1;
    assert_int_equal(dspy_lm_new(&o, &lm, NULL), DSPY_OK);
    return lm;
}

static dspy_lm *http_lm(const struct test_httpd *s)
{
    return http_lm_for(s, "openai/m");
}

static dspy_module *module(enum dspy_adapter_kind adapter)
{
    dspy_signature *sig = NULL;
    assert_int_equal(dspy_signature_parse("question -> answer", NULL, &sig, NULL), DSPY_OK);
    dspy_module *m = dspy_module_new(DSPY_MODULE_PREDICT, sig, adapter);
    dspy_signature_free(sig);
    assert_non_null(m);
    return m;
}

static void many_calls_complete_on_the_loop(void **state)
{
    (void)state;
    struct test_httpd s;
    struct outcome o;
    outcome_init(&o);
    assert_int_equal(test_httpd_start(&s, 200, CHAT_REPLY), 0);
    dspy_lm *lm = http_lm(&s);
    dspy_module *m = module(DSPY_ADAPTER_CHAT);
    json_t *inputs = json_pack("{s:s}", "question", "Capital of France?");
    for (int i = 0; i < 50; i++)
        assert_int_equal(dspy_module_call_async(m, lm, inputs, NULL, on_done, &o, NULL), DSPY_OK);
    outcome_wait(&o, 50);
    assert_int_equal(o.ok, 50);
    assert_int_equal(o.lm_calls, 1);
    assert_int_equal(o.total_tokens, 35);
    assert_false(pthread_equal(o.thread, pthread_self()));
    pthread_mutex_lock(&s.lock);
    assert_int_equal(s.requests, 50);
    assert_non_null(strstr(s.seen, "[[ ## question ## ]]"));
    pthread_mutex_unlock(&s.lock);
    json_decref(inputs);
    dspy_module_free(m);
    dspy_lm_free(lm);
    test_httpd_stop(&s);
    outcome_release(&o);
}

/* Asynchronously as well: the JSON adapter's structured call fails to parse, the JSON-mode
 * retry follows from the first call's completion, and the callback sees both calls. */
static void structured_retry_runs_asynchronously(void **state)
{
    (void)state;
    struct test_httpd s;
    struct outcome o;
    outcome_init(&o);
    assert_int_equal(test_httpd_start(&s, 200, PROSE_REPLY), 0);
    dspy_lm *lm = http_lm_for(&s, "openai/gpt-4o-mini");
    dspy_module *m = module(DSPY_ADAPTER_JSON);
    json_t *inputs = json_pack("{s:s}", "question", "Capital of France?");
    assert_int_equal(dspy_module_call_async(m, lm, inputs, NULL, on_done, &o, NULL), DSPY_OK);
    outcome_wait(&o, 1);
    assert_int_equal(o.last, DSPY_EADAPTER);
    assert_int_equal(o.lm_calls, 2);
    pthread_mutex_lock(&s.lock);
    assert_int_equal(s.requests, 2);
    /* the second call's response_format (the recorded body is the last one) */
    assert_non_null(strstr(s.seen, "\"json_object\""));
    assert_null(strstr(s.seen, "json_schema"));
    pthread_mutex_unlock(&s.lock);
    json_decref(inputs);
    dspy_module_free(m);
    dspy_lm_free(lm);
    test_httpd_stop(&s);
    outcome_release(&o);
}

static void fallback_and_errors_reach_the_callback(void **state)
{
    (void)state;
    struct test_httpd s;
    struct outcome o;
    outcome_init(&o);
    /* Prose parses with neither adapter: Chat, then JSON, then the error. */
    assert_int_equal(test_httpd_start(&s, 200, PROSE_REPLY), 0);
    dspy_lm *lm = http_lm(&s);
    dspy_module *m = module(DSPY_ADAPTER_CHAT);
    json_t *inputs = json_pack("{s:s}", "question", "Capital of France?");
    assert_int_equal(dspy_module_call_async(m, lm, inputs, NULL, on_done, &o, NULL), DSPY_OK);
    outcome_wait(&o, 1);
    assert_int_equal(o.last, DSPY_EADAPTER);
    assert_int_equal(o.lm_calls, 2);
    assert_int_equal(o.total_tokens, 70);
    assert_non_null(strstr(o.message, "JSONAdapter"));
    pthread_mutex_lock(&s.lock);
    assert_int_equal(s.requests, 2);
    assert_non_null(strstr(s.seen, "json_object")); /* the second call's response_format */
    pthread_mutex_unlock(&s.lock);

    /* An HTTP error is the callback's too, classed. */
    test_httpd_set(&s, 500, "{\"error\":{\"message\":\"boom\"}}", 0);
    assert_int_equal(dspy_module_call_async(m, lm, inputs, NULL, on_done, &o, NULL), DSPY_OK);
    outcome_wait(&o, 2);
    assert_int_equal(o.last, DSPY_ELM_SERVER);
    assert_non_null(strstr(o.message, "500"));

    /* A call that cannot start says so and never calls back. */
    json_t *empty = json_object();
    struct dspy_error err;
    dspy_error_clear(&err);
    assert_int_equal(dspy_module_call_async(m, lm, empty, NULL, on_done, &o, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "question"));
    pthread_mutex_lock(&o.mu);
    assert_int_equal(o.done, 2);
    pthread_mutex_unlock(&o.mu);
    json_decref(empty);
    json_decref(inputs);
    dspy_module_free(m);
    dspy_lm_free(lm);
    test_httpd_stop(&s);
    outcome_release(&o);
}

/* A transport hook: the call runs on the calling thread, on_done before the return. */
static dspy_status hook(void *userdata, const char *url, const char *body, size_t body_len,
                        long *http_status, char **response, size_t *response_len,
                        struct dspy_error *err)
{
    int *calls = userdata;
    (void)url;
    (void)body;
    (void)body_len;
    (void)err;
    (*calls)++;
    *http_status = 200;
    *response = dspy_strdup(CHAT_REPLY);
    *response_len = strlen(CHAT_REPLY);
    return DSPY_OK;
}

static void transport_hook_calls_back_in_place(void **state)
{
    (void)state;
    int calls = 0;
    struct dspy_lm_options lo = DSPY_LM_OPTIONS_INIT;
    dspy_lm *lm = NULL;
    lo.base_url = "http://lm.test/v1";
    lo.model = "openai/m";
    lo.transport = hook;
    lo.transport_userdata = &calls;
    assert_int_equal(dspy_lm_new(&lo, &lm, NULL), DSPY_OK);
    dspy_module *m = module(DSPY_ADAPTER_CHAT);
    json_t *inputs = json_pack("{s:s}", "question", "Capital of France?");
    struct outcome o;
    outcome_init(&o);
    struct dspy_call_config cfg = DSPY_CALL_CONFIG_INIT;
    cfg.temperature = 0.3;
    assert_int_equal(dspy_module_call_async(m, lm, inputs, &cfg, on_done, &o, NULL), DSPY_OK);
    assert_int_equal(o.done, 1); /* already */
    assert_int_equal(o.ok, 1);
    assert_true(pthread_equal(o.thread, pthread_self()));
    assert_int_equal(calls, 1);
    json_decref(inputs);
    dspy_module_free(m);
    dspy_lm_free(lm);
    outcome_release(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(many_calls_complete_on_the_loop),
        cmocka_unit_test(fallback_and_errors_reach_the_callback),
        cmocka_unit_test(structured_retry_runs_asynchronously),
        cmocka_unit_test(transport_hook_calls_back_in_place),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
