/* Unit tests for the batch executor through the LM transport hook: results in input order
 * whatever order calls finish in, per-record errors, DSPy's max_errors, cancellation from
 * the progress callback, and a bounded reorder window over a long stream. Workers are
 * threads (pthread_create in the executor), so this test also runs under TSan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <dspyc/dspyc.h>

/* Threads: pthread_create runs inside dspy_program_batch; labelled for TSan by this line. */

struct echo {
    atomic_int calls;
    int fail_every; /* record ids divisible by it fail with a network error; 0 = none */
};

/* Answers "A<id>" for a question holding "QID<id>;", after a short pseudo-random pause so
 * that calls finish out of order. */
static dspy_status echo_transport(void *userdata, const char *url, const char *body,
                                  size_t body_len, long *http_status, char **response,
                                  size_t *response_len, struct dspy_error *err)
{
    struct echo *e = userdata;
    char text[256];
    (void)url;
    (void)body_len;
    atomic_fetch_add(&e->calls, 1);
    const char *q = strstr(body, "QID");
    long id = q ? strtol(q + 3, NULL, 10) : -1;
    struct timespec ts = { 0, (long)((id * 7919) % 5) * 100000L };
    nanosleep(&ts, NULL);
    if (e->fail_every && id % e->fail_every == 0) {
        if (err) {
            err->code = DSPY_ELM_NETWORK;
            snprintf(err->message, sizeof(err->message), "connection dropped");
        }
        return DSPY_ELM_NETWORK;
    }
    snprintf(text, sizeof(text),
             "{\"choices\":[{\"message\":{\"content\":\"[[ ## answer ## ]]\\nA%ld\\n\\n"
             "[[ ## completed ## ]]\"}}],\"usage\":{\"prompt_tokens\":3,"
             "\"completion_tokens\":1,\"total_tokens\":4}}",
             id);
    *http_status = 200;
    *response_len = strlen(text);
    *response = dspy_strdup(text);
    return *response ? DSPY_OK : DSPY_ENOMEM;
}

static dspy_lm *echo_lm(struct echo *e)
{
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    dspy_lm *lm = NULL;
    o.base_url = "http://lm.test/v1";
    o.model = "m";
    o.transport = echo_transport;
    o.transport_userdata = e;
    assert_int_equal(dspy_lm_new(&o, &lm, NULL), DSPY_OK);
    return lm;
}

static dspy_program *qa_program(void)
{
    dspy_signature *sig = NULL;
    assert_int_equal(dspy_signature_parse("question -> answer", NULL, &sig, NULL), DSPY_OK);
    dspy_module *m = dspy_module_new(DSPY_MODULE_PREDICT, sig, DSPY_ADAPTER_CHAT);
    dspy_signature_free(sig);
    assert_non_null(m);
    dspy_program *p = dspy_program_single(m);
    assert_non_null(p);
    return p;
}

static json_t *questions(size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        char q[32];
        snprintf(q, sizeof(q), "QID%zu;", i);
        json_array_append_new(a, json_pack("{s:s}", "question", q));
    }
    return a;
}

static void results_in_order_with_errors(void **state)
{
    (void)state;
    struct echo e = { .fail_every = 7 };
    dspy_lm *lm = echo_lm(&e);
    dspy_program *p = qa_program();
    json_t *in = questions(300);
    json_array_set_new(in, 5, json_string("not an object"));
    struct dspy_batch_result *res = calloc(300, sizeof(*res));
    struct dspy_batch_options o = DSPY_BATCH_OPTIONS_INIT;
    struct dspy_batch_stats st;
    o.concurrency = 16;
    assert_int_equal(dspy_program_batch(p, lm, in, &o, res, &st, NULL), DSPY_OK);
    size_t failed = 0;
    for (size_t i = 0; i < 300; i++) {
        if (i == 5) {
            assert_int_equal(res[i].status, DSPY_EINVAL);
            assert_non_null(strstr(res[i].error.message, "record 5"));
        } else if (i % 7 == 0) {
            assert_int_equal(res[i].status, DSPY_ELM_NETWORK);
            assert_null(res[i].outputs);
        } else {
            char want[32];
            snprintf(want, sizeof(want), "A%zu", i);
            assert_int_equal(res[i].status, DSPY_OK);
            assert_string_equal(json_string_value(json_object_get(res[i].outputs, "answer")),
                                want);
            assert_int_equal(res[i].info.lm_calls, 1);
        }
        failed += res[i].status != DSPY_OK;
    }
    assert_int_equal(st.records, 300);
    assert_int_equal(st.failed, failed);
    assert_int_equal(st.ok + st.failed, 300);
    assert_int_equal(st.cancelled, 0);
    assert_int_equal(atomic_load(&e.calls), 299);
    dspy_batch_results_release(res, 300);
    free(res);
    json_decref(in);
    dspy_program_free(p);
    dspy_lm_free(lm);
}

static void max_errors_stops_the_batch(void **state)
{
    (void)state;
    struct echo e = { .fail_every = 1 };
    dspy_lm *lm = echo_lm(&e);
    dspy_program *p = qa_program();
    json_t *in = questions(2000);
    struct dspy_batch_result *res = calloc(2000, sizeof(*res));
    struct dspy_batch_options o = DSPY_BATCH_OPTIONS_INIT;
    struct dspy_batch_stats st;
    struct dspy_error err;
    o.concurrency = 4;
    o.max_errors = 3;
    assert_int_equal(dspy_program_batch(p, lm, in, &o, res, &st, &err), DSPY_ECANCELED);
    assert_non_null(strstr(err.message, "cancelled"));
    /* Work stops soon after the third failure: at most the window was pulled. */
    assert_true(atomic_load(&e.calls) >= 3);
    assert_true(atomic_load(&e.calls) <= 4 * 4);
    assert_int_equal(res[1999].status, DSPY_ECANCELED);
    for (size_t i = 0; i < 2000; i++)
        assert_int_not_equal(res[i].status, DSPY_OK);
    assert_true(st.records <= 16);
    dspy_batch_results_release(res, 2000);
    free(res);
    json_decref(in);
    dspy_program_free(p);
    dspy_lm_free(lm);
}

static int cancel_after_ten(void *ud, const struct dspy_batch_progress *pr)
{
    size_t *seen = ud;
    assert_true(pr->done == *seen + 1); /* once per record, in order */
    assert_int_equal(pr->total, 500);
    *seen = pr->done;
    return pr->done >= 10;
}

static void progress_cancels(void **state)
{
    (void)state;
    struct echo e = { 0 };
    dspy_lm *lm = echo_lm(&e);
    dspy_program *p = qa_program();
    json_t *in = questions(500);
    struct dspy_batch_result *res = calloc(500, sizeof(*res));
    struct dspy_batch_options o = DSPY_BATCH_OPTIONS_INIT;
    size_t seen = 0;
    o.concurrency = 8;
    o.progress = cancel_after_ten;
    o.progress_userdata = &seen;
    assert_int_equal(dspy_program_batch(p, lm, in, &o, res, NULL, NULL), DSPY_ECANCELED);
    for (size_t i = 0; i < 10; i++)
        assert_int_equal(res[i].status, DSPY_OK);
    assert_int_equal(res[499].status, DSPY_ECANCELED);
    assert_true(atomic_load(&e.calls) < 500);
    dspy_batch_results_release(res, 500);
    free(res);
    json_decref(in);
    dspy_program_free(p);
    dspy_lm_free(lm);
}

/* A long stream: never more than 4 x concurrency records between source and sink. */
struct stream {
    atomic_size_t pulled, delivered, max_gap;
    size_t n, next_index;
    int bad;
};

static int stream_source(void *ud, struct dspy_batch_item *item)
{
    struct stream *s = ud;
    size_t i = atomic_load(&s->pulled);
    if (i == s->n)
        return 0;
    char q[32];
    snprintf(q, sizeof(q), "QID%zu;", i);
    item->inputs = json_pack("{s:s}", "question", q);
    item->tag = (void *)(uintptr_t)i;
    size_t gap = i + 1 - atomic_load(&s->delivered);
    if (gap > atomic_load(&s->max_gap))
        atomic_store(&s->max_gap, gap);
    atomic_store(&s->pulled, i + 1);
    return 1;
}

static int stream_sink(void *ud, size_t index, struct dspy_batch_item *item,
                       struct dspy_batch_result *r)
{
    struct stream *s = ud;
    char want[32];
    snprintf(want, sizeof(want), "A%zu", index);
    if (index != s->next_index++ || (uintptr_t)item->tag != index || r->status ||
        strcmp(json_string_value(json_object_get(r->outputs, "answer")), want))
        s->bad++;
    atomic_fetch_add(&s->delivered, 1);
    return 0;
}

static void stream_window_is_bounded(void **state)
{
    (void)state;
    struct echo e = { 0 };
    dspy_lm *lm = echo_lm(&e);
    dspy_program *p = qa_program();
    struct stream s = { .n = 3000 };
    struct dspy_batch_options o = DSPY_BATCH_OPTIONS_INIT;
    struct dspy_batch_stats st;
    o.concurrency = 32;
    assert_int_equal(dspy_program_batch_stream(p, lm, &o, stream_source, stream_sink, &s, &st,
                                               NULL),
                     DSPY_OK);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.next_index, 3000);
    assert_int_equal(st.ok, 3000);
    assert_true(atomic_load(&s.max_gap) <= 4 * 32);
    dspy_program_free(p);
    dspy_lm_free(lm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(results_in_order_with_errors),
        cmocka_unit_test(max_errors_stops_the_batch),
        cmocka_unit_test(progress_cancels),
        cmocka_unit_test(stream_window_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
