/* Unit tests for the batch executor: through the LM transport hook (the worker pool) and
 * over HTTP to a loopback server (single-call programs straight on the event loop): results
 * in input order whatever order calls finish in, per-record errors, DSPy's max_errors,
 * cancellation from the progress callback, a bounded reorder window over a long stream, the
 * Chat->JSON fallback as a second asynchronous call, and exactly N calls in flight. Workers
 * and the server are threads (pthread_create), so this test also runs under TSan. */
/* threads: the batch executor's workers and the engine's loop thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <dspyc/dspyc.h>

#include <microhttpd.h>

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

/* A retrieve step over a corpus in `dir` (lower-case "qid<i>" passages, so that the echo
 * LM still reads the record's id from its question) before the answer, with a context
 * budget that drops a passage: the work before the first LM call is all local. */
static dspy_program *rag_program(const char *dir)
{
    char corpus[256], spec[512];
    snprintf(corpus, sizeof(corpus), "%s/corpus.jsonl", dir);
    FILE *f = fopen(corpus, "w");
    assert_non_null(f);
    for (int i = 0; i < 60; i++) /* two passages per record */
        fprintf(f,
                "{\"id\": \"d%d\", \"text\": \"qid%d is a fact about number %d.\"}\n"
                "{\"id\": \"e%d\", \"text\": \"qid%d is in a second note.\"}\n",
                i, i, i, i, i);
    fclose(f);
    snprintf(spec, sizeof(spec),
             "{\"predictors\": [{\"module\": \"retrieve\", \"k\": 3, \"corpus\": \"%s\"},"
             " {\"name\": \"answer\", \"signature\": \"passages: list[str], question -> "
             "answer\"}]}",
             corpus);
    json_t *js = json_loads(spec, 0, NULL);
    dspy_program *p = NULL;
    assert_int_equal(dspy_program_from_json(js, "t", &p, NULL), DSPY_OK);
    json_decref(js);
    assert_int_equal(dspy_program_set_context_budget(p, 282, 100, NULL), DSPY_OK);
    return p;
}

/* Over a disk-backed cache (L1 + LMDB): a batch of hits and misses looks each record up
 * once (the run's multi-get), sends only the misses, answers in input order, and with
 * lookup_each gives the same answers; for a single Predict and for a RAG program whose
 * retrieval and context fit run while the records are read ahead. */
static void lookup_sends_only_the_misses(bool rag)
{
    enum { N = 60 };
    char dir[] = "/tmp/dspyc-batch-cache-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct dspy_cache_options co = DSPY_CACHE_OPTIONS_INIT;
    dspy_cache *cache = NULL;
    co.levels = DSPY_CACHE_L1 | DSPY_CACHE_L3;
    co.disk_path = dir;
    assert_int_equal(dspy_cache_new(&co, &cache, NULL), DSPY_OK);
    struct echo e = { 0, 0 };
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    dspy_lm *lm = NULL;
    o.base_url = "http://lm.test/v1";
    o.model = "m";
    o.transport = echo_transport;
    o.transport_userdata = &e;
    o.cache = cache;
    assert_int_equal(dspy_lm_new(&o, &lm, NULL), DSPY_OK);
    dspy_program *p = rag ? rag_program(dir) : qa_program();
    json_t *all = questions(N), *odd = json_array();
    for (size_t i = 1; i < N; i += 2)
        json_array_append(odd, json_array_get(all, i));
    struct dspy_batch_result res[N];
    struct dspy_batch_options bo = DSPY_BATCH_OPTIONS_INIT;
    bo.concurrency = 4;
    assert_int_equal(dspy_program_batch(p, lm, odd, &bo, res, NULL, NULL), DSPY_OK);
    json_t *first[N / 2];
    for (size_t i = 0; i < N / 2; i++)
        first[i] = json_incref(res[i].outputs);
    dspy_batch_results_release(res, N / 2);
    assert_int_equal(atomic_load(&e.calls), N / 2);
    /* L1 cleared: the hits must come from the disk through the batch's lookup */
    assert_int_equal(dspy_cache_clear(cache, DSPY_CACHE_L1, NULL), DSPY_OK);
    struct dspy_cache_stats before, after;
    dspy_cache_stats(cache, &before);
    assert_int_equal(dspy_program_batch(p, lm, all, &bo, res, NULL, NULL), DSPY_OK);
    dspy_cache_stats(cache, &after);
    assert_int_equal(atomic_load(&e.calls), N);    /* only the N / 2 misses went out */
    assert_int_equal(after.gets - before.gets, N); /* one lookup per record */
    assert_int_equal(after.hits - before.hits, N / 2);
    for (size_t i = 0; i < N; i++) {
        char want[16];
        snprintf(want, sizeof(want), "A%zu", i);
        assert_int_equal(res[i].status, DSPY_OK);
        assert_string_equal(json_string_value(json_object_get(res[i].outputs, "answer")), want);
        assert_int_equal(res[i].info.cache_hits, i % 2);
        if (i % 2) /* the same passages and drops as the first run's */
            assert_true(json_equal(res[i].outputs, first[i / 2]));
        if (rag)
            assert_non_null(json_object_get(res[i].outputs, "context_dropped"));
    }
    for (size_t i = 0; i < N / 2; i++)
        json_decref(first[i]);
    dspy_batch_results_release(res, N);
    bo.lookup_each = true; /* the same answers, each record looking itself up */
    assert_int_equal(dspy_program_batch(p, lm, all, &bo, res, NULL, NULL), DSPY_OK);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(res[i].info.cache_hits, 1);
    assert_int_equal(atomic_load(&e.calls), N);
    dspy_batch_results_release(res, N);
    json_decref(odd);
    json_decref(all);
    dspy_program_free(p);
    dspy_lm_free(lm);
    dspy_cache_free(cache);
    assert_int_equal(dspy_cache_disk_reset(dir, NULL), DSPY_OK);
    if (rag) {
        char corpus[256];
        snprintf(corpus, sizeof(corpus), "%s/corpus.jsonl", dir);
        unlink(corpus);
    }
    rmdir(dir);
}

static void batch_lookup_sends_only_the_misses(void **state)
{
    (void)state;
    lookup_sends_only_the_misses(false);
}

static void rag_batch_lookup_sends_only_the_misses(void **state)
{
    (void)state;
    lookup_sends_only_the_misses(true);
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
    assert_int_equal(st.threads, 16); /* a transport hook blocks: the worker pool */
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
            assert_string_equal(json_string_value(json_object_get(res[i].outputs, "answer")), want);
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

/* With every call failing and max_errors 3 at concurrency 4, the batch stops soon after the
 * third failure: at most the 4 x 4 window was pulled, and nothing after it ran. `calls`
 * counts the LM calls the endpoint saw. Frees `lm`. */
static void expect_stop_after_three_errors(dspy_lm *lm, atomic_int *calls)
{
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
    assert_true(atomic_load(calls) >= 3);
    assert_true(atomic_load(calls) <= 4 * 4);
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

static void max_errors_stops_the_batch(void **state)
{
    (void)state;
    struct echo e = { .fail_every = 1 };
    dspy_lm *lm = echo_lm(&e);
    expect_stop_after_three_errors(lm, &e.calls);
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

/* ---- over HTTP: single-call programs on the event loop ---------------------------------- */

/* A loopback LM (libmicrohttpd, a thread per connection) answering "A<id>" for "QID<id>;"
 * after delay_ms plus 0-4 ms by id (so answers come back out of order), counting requests
 * and the most it held at once. A request without a response_format is the Chat adapter's:
 * with chat_garbage it gets an answer that does not parse. Ids divisible by fail_every get
 * a 500. */
struct lm_server {
    struct MHD_Daemon *daemon;
    int port;
    int delay_ms, fail_every, chat_garbage; /* set before the batch */
    atomic_int requests, json_requests, active, max_active;
};

struct upload {
    char body[8192];
    size_t len;
};

static void upload_free(void *cls, struct MHD_Connection *c, void **ctx,
                        enum MHD_RequestTerminationCode code)
{
    (void)cls;
    (void)c;
    (void)code;
    free(*ctx);
    *ctx = NULL;
}

static enum MHD_Result lm_server_handle(void *cls, struct MHD_Connection *c, const char *url,
                                        const char *method, const char *version, const char *data,
                                        size_t *data_size, void **ctx)
{
    struct lm_server *s = cls;
    struct upload *u = *ctx;
    char content[128], text[512];
    (void)url;
    (void)method;
    (void)version;
    if (!u) {
        *ctx = u = calloc(1, sizeof(*u));
        return u ? MHD_YES : MHD_NO;
    }
    if (*data_size) {
        size_t n = *data_size < sizeof(u->body) - 1 - u->len ? *data_size
                                                             : sizeof(u->body) - 1 - u->len;
        memcpy(u->body + u->len, data, n);
        u->len += n;
        *data_size = 0;
        return MHD_YES;
    }
    atomic_fetch_add(&s->requests, 1);
    int now = atomic_fetch_add(&s->active, 1) + 1;
    for (int m = atomic_load(&s->max_active); now > m;)
        if (atomic_compare_exchange_weak(&s->max_active, &m, now))
            break;
    const char *q = strstr(u->body, "QID");
    long id = q ? strtol(q + 3, NULL, 10) : -1;
    bool json = strstr(u->body, "\"response_format\"") != NULL;
    if (json)
        atomic_fetch_add(&s->json_requests, 1);
    struct timespec ts = { 0, (long)(s->delay_ms + (id * 7919) % 5) * 1000000L };
    nanosleep(&ts, NULL);
    atomic_fetch_sub(&s->active, 1);
    unsigned status = s->fail_every && id % s->fail_every == 0 ? 500 : 200;
    if (status != 200)
        snprintf(text, sizeof(text), "{\"error\":{\"message\":\"boom\"}}");
    else {
        if (json)
            snprintf(content, sizeof(content), "{\\\"answer\\\": \\\"A%ld\\\"}", id);
        else if (s->chat_garbage)
            snprintf(content, sizeof(content), "no fields here");
        else
            snprintf(content, sizeof(content),
                     "[[ ## answer ## ]]\\nA%ld\\n\\n"
                     "[[ ## completed ## ]]",
                     id);
        snprintf(text, sizeof(text),
                 "{\"choices\":[{\"message\":{\"content\":\"%s\"}}],\"usage\":"
                 "{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}",
                 content);
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text,
                                                             MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static void lm_server_start(struct lm_server *s)
{
    s->daemon = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                     MHD_USE_ERROR_LOG,
                                 0, NULL, NULL, lm_server_handle, s, MHD_OPTION_NOTIFY_COMPLETED,
                                 upload_free, NULL, MHD_OPTION_CONNECTION_LIMIT, 1000u,
                                 MHD_OPTION_END);
    assert_non_null(s->daemon);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(info);
    s->port = info->port;
}

static dspy_lm *http_lm(const struct lm_server *s)
{
    char url[128];
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    dspy_lm *lm = NULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", s->port);
    o.base_url = url;
    o.model = "m";
    o.api_key_env = "DSPYC_TEST_KEY_UNSET";
    o.max_attempts = 1;
    assert_int_equal(dspy_lm_new(&o, &lm, NULL), DSPY_OK);
    return lm;
}

static void loop_results_in_order_with_errors(void **state)
{
    (void)state;
    struct lm_server srv = { .delay_ms = 2, .fail_every = 7 };
    lm_server_start(&srv);
    dspy_lm *lm = http_lm(&srv);
    dspy_program *p = qa_program();
    json_t *in = questions(200);
    json_array_set_new(in, 5, json_string("not an object"));
    json_array_set_new(in, 6, json_pack("{s:s}", "not_the_question", "x"));
    struct dspy_batch_result *res = calloc(200, sizeof(*res));
    struct dspy_batch_options o = DSPY_BATCH_OPTIONS_INIT;
    struct dspy_batch_stats st;
    o.concurrency = 16;
    assert_int_equal(dspy_program_batch(p, lm, in, &o, res, &st, NULL), DSPY_OK);
    assert_int_equal(st.threads, 0); /* no worker pool: the calls ran on the event loop */
    for (size_t i = 0; i < 200; i++) {
        if (i == 5) {
            assert_int_equal(res[i].status, DSPY_EINVAL);
            assert_non_null(strstr(res[i].error.message, "record 5"));
        } else if (i == 6) {
            assert_int_equal(res[i].status, DSPY_EINVAL);
            assert_non_null(strstr(res[i].error.message, "question"));
        } else if (i % 7 == 0) {
            assert_int_equal(res[i].status, DSPY_ELM_SERVER);
            assert_int_equal(res[i].error.http_status, 500);
            assert_null(res[i].outputs);
        } else {
            char want[32];
            snprintf(want, sizeof(want), "A%zu", i);
            assert_int_equal(res[i].status, DSPY_OK);
            assert_string_equal(json_string_value(json_object_get(res[i].outputs, "answer")), want);
            assert_int_equal(res[i].info.lm_calls, 1);
            assert_int_equal(res[i].info.usage.total_tokens, 4);
            assert_true(res[i].latency_ns > 0);
        }
    }
    assert_int_equal(st.records, 200);
    assert_int_equal(st.ok + st.failed, 200);
    assert_int_equal(atomic_load(&srv.requests), 198);
    dspy_batch_results_release(res, 200);
    free(res);
    json_decref(in);
    dspy_program_free(p);
    dspy_lm_free(lm);
    MHD_stop_daemon(srv.daemon);
}

/* The Chat adapter's answer does not parse: the JSON adapter's request is the record's
 * second asynchronous call, made from the first one's completion. */
static void loop_falls_back_to_json(void **state)
{
    (void)state;
    struct lm_server srv = { .delay_ms = 1, .chat_garbage = 1 };
    lm_server_start(&srv);
    dspy_lm *lm = http_lm(&srv);
    dspy_program *p = qa_program();
    json_t *in = questions(64);
    struct dspy_batch_result *res = calloc(64, sizeof(*res));
    struct dspy_batch_options o = DSPY_BATCH_OPTIONS_INIT;
    struct dspy_batch_stats st;
    o.concurrency = 8;
    assert_int_equal(dspy_program_batch(p, lm, in, &o, res, &st, NULL), DSPY_OK);
    for (size_t i = 0; i < 64; i++) {
        char want[32];
        snprintf(want, sizeof(want), "A%zu", i);
        assert_int_equal(res[i].status, DSPY_OK);
        assert_string_equal(json_string_value(json_object_get(res[i].outputs, "answer")), want);
        assert_int_equal(res[i].info.lm_calls, 2);
        assert_int_equal(res[i].info.usage.total_tokens, 8);
    }
    assert_int_equal(st.lm_calls, 128);
    assert_int_equal(atomic_load(&srv.json_requests), 64);
    assert_true(atomic_load(&srv.max_active) <= 8);
    dspy_batch_results_release(res, 64);
    free(res);
    json_decref(in);
    dspy_program_free(p);
    dspy_lm_free(lm);
    MHD_stop_daemon(srv.daemon);
}

/* Concurrency N means N requests at the server at once: never more, and with answers
 * slower than submitting, exactly N. */
static void loop_keeps_n_in_flight(void **state)
{
    (void)state;
    struct lm_server srv = { .delay_ms = 40 };
    lm_server_start(&srv);
    dspy_lm *lm = http_lm(&srv);
    dspy_program *p = qa_program();
    struct stream s = { .n = 96 };
    struct dspy_batch_options o = DSPY_BATCH_OPTIONS_INIT;
    struct dspy_batch_stats st;
    o.concurrency = 12;
    assert_int_equal(dspy_program_batch_stream(p, lm, &o, stream_source, stream_sink, &s, &st,
                                               NULL),
                     DSPY_OK);
    assert_int_equal(s.bad, 0);
    assert_int_equal(st.ok, 96);
    assert_int_equal(st.threads, 0);
    assert_int_equal(atomic_load(&srv.max_active), 12);
    assert_true(atomic_load(&s.max_gap) <= 4 * 12);
    dspy_program_free(p);
    dspy_lm_free(lm);
    MHD_stop_daemon(srv.daemon);
}

static void loop_max_errors_stops_the_batch(void **state)
{
    (void)state;
    struct lm_server srv = { .delay_ms = 1, .fail_every = 1 };
    lm_server_start(&srv);
    dspy_lm *lm = http_lm(&srv);
    expect_stop_after_three_errors(lm, &srv.requests);
    MHD_stop_daemon(srv.daemon);
}

/* Cancelling from the progress callback cuts off the calls in flight (their engine group
 * is cancelled): the batch returns long before their answers would come. */
static void loop_progress_cancels(void **state)
{
    (void)state;
    struct lm_server srv = { .delay_ms = 5 };
    lm_server_start(&srv);
    dspy_lm *lm = http_lm(&srv);
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
    assert_true(atomic_load(&srv.requests) < 500);
    dspy_batch_results_release(res, 500);
    free(res);
    json_decref(in);
    dspy_program_free(p);
    dspy_lm_free(lm);
    MHD_stop_daemon(srv.daemon);
}

/* The stop switch (dspy_batch_options.cancel, what a signal handler sets) cancels a batch
 * whose calls all hang: nothing is delivered until it is thrown, and then the calls in flight
 * are cut off at once rather than answered. On the event loop, and on the worker pool (an
 * LM with a cache runs there), where the calling thread watches the switch. */
struct thrower {
    struct lm_server *srv;
    pthread_t batch_thread;
};

static volatile sig_atomic_t stop_flag;

static void on_usr1(int sig)
{
    (void)sig;
    stop_flag = 1; /* as dspyc run's SIGINT handler does */
}

/* Once calls are in flight, signal the thread running the batch: its handler throws the
 * switch (written in a handler, as the contract says, never from another thread). */
static void *throw_when_busy(void *arg)
{
    struct thrower *t = arg;
    struct timespec ts = { 0, 1000000L };
    while (atomic_load(&t->srv->requests) < 4)
        nanosleep(&ts, NULL);
    pthread_kill(t->batch_thread, SIGUSR1);
    return NULL;
}

static void cancel_switch_cuts_hanging_calls(bool with_cache)
{
    struct lm_server srv = { .delay_ms = 900 }; /* the most one nanosleep takes */
    struct sigaction sa, old_sa;
    dspy_cache *cache = NULL;
    lm_server_start(&srv);
    char url[128];
    struct dspy_lm_options lo = DSPY_LM_OPTIONS_INIT;
    dspy_lm *lm = NULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", srv.port);
    lo.base_url = url;
    lo.model = "m";
    lo.api_key_env = "DSPYC_TEST_KEY_UNSET";
    if (with_cache) {
        struct dspy_cache_options co = DSPY_CACHE_OPTIONS_INIT;
        co.levels = DSPY_CACHE_L1;
        assert_int_equal(dspy_cache_new(&co, &cache, NULL), DSPY_OK);
        lo.cache = cache;
    }
    assert_int_equal(dspy_lm_new(&lo, &lm, NULL), DSPY_OK);
    dspy_program *p = qa_program();
    json_t *in = questions(200);
    struct dspy_batch_result *res = calloc(200, sizeof(*res));
    struct dspy_batch_options o = DSPY_BATCH_OPTIONS_INIT;
    struct dspy_batch_stats st;
    struct thrower t = { &srv, pthread_self() };
    pthread_t tid;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, &old_sa);
    stop_flag = 0;
    o.concurrency = 4;
    o.cancel = &stop_flag;
    assert_int_equal(pthread_create(&tid, NULL, throw_when_busy, &t), 0);
    assert_int_equal(dspy_program_batch(p, lm, in, &o, res, &st, NULL), DSPY_ECANCELED);
    pthread_join(tid, NULL);
    sigaction(SIGUSR1, &old_sa, NULL);
    assert_int_equal(st.threads, with_cache ? 4 : 0);
    for (size_t i = 0; i < 200; i++) /* none answered: those answers were never waited for */
        assert_int_equal(res[i].status, DSPY_ECANCELED);
    assert_int_equal(st.cancelled, st.records);
    assert_true(atomic_load(&srv.requests) <= 8); /* pulled no more once thrown */
    dspy_batch_results_release(res, 200);
    free(res);
    json_decref(in);
    dspy_program_free(p);
    dspy_lm_free(lm);
    dspy_cache_free(cache);
    MHD_stop_daemon(srv.daemon);
}

static void loop_cancel_switch(void **state)
{
    (void)state;
    cancel_switch_cuts_hanging_calls(false);
}

static void pool_cancel_switch(void **state)
{
    (void)state;
    cancel_switch_cuts_hanging_calls(true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(results_in_order_with_errors),
        cmocka_unit_test(batch_lookup_sends_only_the_misses),
        cmocka_unit_test(rag_batch_lookup_sends_only_the_misses),
        cmocka_unit_test(max_errors_stops_the_batch),
        cmocka_unit_test(progress_cancels),
        cmocka_unit_test(stream_window_is_bounded),
        cmocka_unit_test(loop_results_in_order_with_errors),
        cmocka_unit_test(loop_falls_back_to_json),
        cmocka_unit_test(loop_keeps_n_in_flight),
        cmocka_unit_test(loop_max_errors_stops_the_batch),
        cmocka_unit_test(loop_progress_cancels),
        cmocka_unit_test(loop_cancel_switch),
        cmocka_unit_test(pool_cancel_switch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
