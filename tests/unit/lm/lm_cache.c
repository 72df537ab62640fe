/* Unit tests for the LM client's cache-through (src/lm/lm_cache.c) and the module memo on
 * top of it: the request key (fast path equal to the body's key and to an independently
 * built canonical request, rollout_id and namespace in it), hits with the original usage
 * and cache_hit, errors never stored, no-cache and no-store, an unreadable entry replaced,
 * single-flight across 100 threads, and module calls served from the memo only while L1
 * still holds the same bytes. All through a transport hook that counts upstream calls. */
/* threads: the engine's loop thread and concurrent fills. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dspyc/dspyc.h>

#include "lm/lm_int.h"

#define REPLY(text)                                                                       \
    "{\"id\":\"x\",\"model\":\"m-2024\",\"choices\":[{\"index\":0,\"message\":{\"role\":" \
    "\"assistant\",\"content\":\"" text "\"},\"finish_reason\":\"stop\"}],\"usage\":{"    \
    "\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15}}"
#define ANSWER REPLY("[[ ## answer ## ]]\\nParis\\n\\n[[ ## completed ## ]]")

struct fake {
    long status;
    const char *reply;
    unsigned delay_ms;
    atomic_int calls;
    char body[8192]; /* last request body (single-threaded tests) */
};

static dspy_status fake_transport(void *userdata, const char *url, const char *body,
                                  size_t body_len, long *http_status, char **response,
                                  size_t *response_len, struct dspy_error *err)
{
    struct fake *f = userdata;
    (void)url;
    (void)err;
    atomic_fetch_add(&f->calls, 1);
    if (f->delay_ms) {
        struct timespec ts = { 0, (long)f->delay_ms * 1000000L };
        nanosleep(&ts, NULL);
    } else {
        snprintf(f->body, sizeof(f->body), "%.*s", (int)body_len, body);
    }
    *http_status = f->status;
    *response_len = strlen(f->reply);
    *response = dspy_strdup(f->reply);
    return *response ? DSPY_OK : DSPY_ENOMEM;
}

static dspy_cache *mem_cache(const char *ns)
{
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    dspy_cache *c = NULL;
    o.ns = ns;
    assert_int_equal(dspy_cache_new(&o, &c, NULL), DSPY_OK);
    return c;
}

static dspy_lm *cached_lm(struct fake *f, dspy_cache *c, const char *ns, double temperature)
{
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    dspy_lm *lm = NULL;
    o.base_url = "http://lm.test/v1";
    o.model = "openai/gpt-4o-mini";
    o.api_key = "sk-test";
    o.temperature = temperature;
    o.transport = fake_transport;
    o.transport_userdata = f;
    o.cache = c;
    o.cache_ctl.ns = ns;
    assert_int_equal(dspy_lm_new(&o, &lm, NULL), DSPY_OK);
    return lm;
}

/* ---- keys ------------------------------------------------------------------------------ */

/* The key of a call three ways: the fast path, the body re-read, and the canonical request
 * built here with jansson. */
static void check_key_three_ways(dspy_lm *lm, const struct dspy__lm_call *call, json_t *expected,
                                 const char *ns)
{
    struct dspy_cache_key fast, slow, want;
    assert_int_equal(dspy__lm_request_key(lm, call, true, &fast, NULL), DSPY_OK);
    assert_int_equal(dspy__lm_request_key(lm, call, false, &slow, NULL), DSPY_OK);
    assert_int_equal(dspy_cache_key_from_json(expected, NULL, ns, &want, NULL), DSPY_OK);
    assert_memory_equal(fast.bytes, slow.bytes, 16);
    assert_memory_equal(fast.bytes, want.bytes, 16);
    json_decref(expected);
}

static void key_fast_path_matches(void **state)
{
    (void)state;
    struct fake f = { .status = 200, .reply = ANSWER };
    dspy_cache *c = mem_cache(NULL);
    dspy_lm *lm = cached_lm(&f, c, NULL, NAN);
    struct dspy_buf wire, canon;
    const char *sys = "You are \"careful\".\n\tTabs \\ and \x01 control, café 😀 /";
    const char *user = "Q: \"quoted\"\nline\x1f end é";
    dspy__buf_init(&wire, 1 << 20);
    dspy__buf_init(&canon, 1 << 20);
    assert_int_equal(dspy__lm_encode_message(&wire, "system", sys, strlen(sys)), DSPY_OK);
    assert_int_equal(dspy__lm_encode_message_canon(&canon, "system", sys, strlen(sys)), DSPY_OK);

    struct dspy__lm_call call = DSPY__LM_CALL_INIT;
    call.messages = wire.ptr;
    call.messages_len = wire.len;
    call.canon_messages = canon.ptr;
    call.canon_messages_len = canon.len;
    call.user = user;
    call.user_len = strlen(user);
    check_key_three_ways(lm, &call,
                         json_pack("{s:s, s:s, s:[{s:s, s:s}, {s:s, s:s}]}", "_endpoint", "chat",
                                   "model", "gpt-4o-mini", "messages", "role", "system", "content",
                                   sys, "role", "user", "content", user),
                         NULL);

    /* every sampling setting, a response format, a rollout id and a namespace */
    static const char rf[] = "{\"type\":\"json_object\"}";
    struct dspy_cache_ctl ctl = DSPY_CACHE_CTL_INIT;
    ctl.ns = "tenant-a";
    call.temperature = 0.7;
    call.max_tokens = 1000;
    call.top_p = 1.0;
    call.n = 3;
    call.response_format = call.canon_response_format = rf;
    call.response_format_len = call.canon_response_format_len = sizeof(rf) - 1;
    call.has_rollout_id = true;
    call.rollout_id = -42;
    call.ctl = &ctl;
    check_key_three_ways(
        lm, &call,
        json_pack("{s:s, s:s, s:[{s:s, s:s}, {s:s, s:s}], s:f, s:i, s:f, s:i, s:{s:s}, s:i}",
                  "_endpoint", "chat", "model", "gpt-4o-mini", "messages", "role", "system",
                  "content", sys, "role", "user", "content", user, "temperature", 0.7, "max_tokens",
                  1000, "top_p", 1.0, "n", 3, "response_format", "type", "json_object",
                  "rollout_id", -42),
        "tenant-a");

    /* no messages at all, no user message, integer-valued and tiny reals */
    struct dspy__lm_call bare = DSPY__LM_CALL_INIT;
    bare.messages = "";
    bare.temperature = 1.0;
    bare.top_p = 1e-7;
    check_key_three_ways(lm, &bare,
                         json_pack("{s:s, s:s, s:[], s:f, s:f}", "_endpoint", "chat", "model",
                                   "gpt-4o-mini", "messages", "temperature", 1.0, "top_p", 1e-7),
                         NULL);

    /* rollout_id changes the key, is never sent */
    struct dspy_cache_key k1, k2;
    call.ctl = NULL;
    assert_int_equal(dspy__lm_request_key(lm, &call, true, &k1, NULL), DSPY_OK);
    call.rollout_id = 7;
    assert_int_equal(dspy__lm_request_key(lm, &call, true, &k2, NULL), DSPY_OK);
    assert_memory_not_equal(k1.bytes, k2.bytes, 16);
    struct dspy_lm_response resp;
    assert_int_equal(dspy__lm_complete_call(lm, &call, &resp, NULL), DSPY_OK);
    assert_null(strstr(f.body, "rollout"));
    dspy_lm_response_release(&resp);

    dspy__buf_release(&wire);
    dspy__buf_release(&canon);
    dspy_lm_free(lm);
    dspy_cache_free(c);
}

/* A cache with a namespace of its own: requests that name none are keyed in it. */
static void key_uses_cache_namespace(void **state)
{
    (void)state;
    struct fake f = { .status = 200, .reply = ANSWER };
    dspy_cache *c = mem_cache("team-x");
    dspy_lm *lm = cached_lm(&f, c, NULL, NAN);
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", "hi");
    struct dspy_lm_request req = DSPY_LM_REQUEST_INIT;
    struct dspy_lm_response resp;
    struct dspy_cache_key key;
    req.messages = msgs;
    assert_int_equal(dspy_lm_complete(lm, &req, &resp, NULL), DSPY_OK);
    dspy_lm_response_release(&resp);
    json_t *expect = json_pack("{s:s, s:s, s:O}", "_endpoint", "chat", "model", "gpt-4o-mini",
                               "messages", msgs);
    assert_int_equal(dspy_cache_key_from_json(expect, NULL, "team-x", &key, NULL), DSPY_OK);
    assert_true(dspy_cache_has(c, &key));
    json_decref(expect);
    json_decref(msgs);
    dspy_lm_free(lm);
    dspy_cache_free(c);
}

/* ---- cache-through --------------------------------------------------------------------- */

static dspy_status complete(dspy_lm *lm, const char *text, const struct dspy_cache_ctl *ctl,
                            struct dspy_lm_response *resp)
{
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", text);
    struct dspy_lm_request req = DSPY_LM_REQUEST_INIT;
    req.messages = msgs;
    if (ctl)
        req.cache = *ctl;
    dspy_status rc = dspy_lm_complete(lm, &req, resp, NULL);
    json_decref(msgs);
    return rc;
}

static void hits_report_original_usage(void **state)
{
    (void)state;
    struct fake f = { .status = 200, .reply = ANSWER };
    dspy_cache *c = mem_cache(NULL);
    dspy_lm *lm = cached_lm(&f, c, NULL, NAN);
    struct dspy_lm_response a, b;
    assert_int_equal(complete(lm, "q", NULL, &a), DSPY_OK);
    assert_int_equal(complete(lm, "q", NULL, &b), DSPY_OK);
    assert_int_equal(atomic_load(&f.calls), 1);
    assert_false(a.cache_hit);
    assert_true(b.cache_hit);
    assert_int_equal(b.http_status, 200);
    assert_int_equal(b.usage.prompt_tokens, 12);
    assert_int_equal(b.usage.completion_tokens, 3);
    assert_int_equal(b.usage.total_tokens, 15);
    assert_string_equal(a.texts[0], b.texts[0]);
    assert_string_equal(b.model, "m-2024");
    dspy_lm_response_release(&a);
    dspy_lm_response_release(&b);
    dspy_lm_free(lm);
    dspy_cache_free(c);
}

static void errors_are_never_cached(void **state)
{
    (void)state;
    struct fake f = { .status = 500, .reply = "{\"error\":{\"message\":\"boom\"}}" };
    dspy_cache *c = mem_cache(NULL);
    dspy_lm *lm = cached_lm(&f, c, NULL, NAN);
    struct dspy_lm_response r;
    struct dspy_cache_stats st;
    assert_int_equal(complete(lm, "q", NULL, &r), DSPY_ELM_SERVER);
    assert_int_equal(complete(lm, "q", NULL, &r), DSPY_ELM_SERVER);
    assert_int_equal(atomic_load(&f.calls), 2);
    f.status = 200;
    f.reply = "{\"choices\":"; /* a 2xx body that does not parse: an error too */
    assert_int_equal(complete(lm, "q", NULL, &r), DSPY_ELM_BAD_RESPONSE);
    f.reply = ANSWER;
    assert_int_equal(complete(lm, "q", NULL, &r), DSPY_OK);
    assert_false(r.cache_hit);
    dspy_lm_response_release(&r);
    assert_int_equal(atomic_load(&f.calls), 4);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.fill_errors, 3);
    assert_int_equal(st.level[0].entries, 1);
    dspy_lm_free(lm);
    dspy_cache_free(c);
}

static void no_cache_and_no_store(void **state)
{
    (void)state;
    struct fake f = { .status = 200, .reply = ANSWER };
    dspy_cache *c = mem_cache(NULL);
    dspy_lm *lm = cached_lm(&f, c, NULL, NAN);
    struct dspy_lm_response r;
    struct dspy_cache_ctl no_store = DSPY_CACHE_CTL_INIT, no_cache = DSPY_CACHE_CTL_INIT;
    no_store.no_store = true;
    no_cache.no_cache = true;
    assert_int_equal(complete(lm, "q", &no_store, &r), DSPY_OK);
    dspy_lm_response_release(&r);
    assert_int_equal(complete(lm, "q", &no_store, &r), DSPY_OK);
    assert_false(r.cache_hit);
    dspy_lm_response_release(&r);
    assert_int_equal(atomic_load(&f.calls), 2); /* nothing was stored */
    assert_int_equal(complete(lm, "q", &no_cache, &r), DSPY_OK);
    assert_false(r.cache_hit);
    dspy_lm_response_release(&r);
    assert_int_equal(atomic_load(&f.calls), 3); /* not read, but stored */
    assert_int_equal(complete(lm, "q", &no_cache, &r), DSPY_OK);
    dspy_lm_response_release(&r);
    assert_int_equal(atomic_load(&f.calls), 4);
    assert_int_equal(complete(lm, "q", NULL, &r), DSPY_OK);
    assert_true(r.cache_hit);
    dspy_lm_response_release(&r);
    assert_int_equal(atomic_load(&f.calls), 4);
    dspy_lm_free(lm);
    dspy_cache_free(c);
}

/* Bytes that do not read as a response (a foreign import) are dropped and refetched. */
static void unreadable_entry_is_replaced(void **state)
{
    (void)state;
    struct fake f = { .status = 200, .reply = ANSWER };
    dspy_cache *c = mem_cache(NULL);
    dspy_lm *lm = cached_lm(&f, c, NULL, NAN);
    struct dspy_lm_response r;
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", "q");
    json_t *req = json_pack("{s:s, s:s, s:O}", "_endpoint", "chat", "model", "gpt-4o-mini",
                            "messages", msgs);
    struct dspy_cache_key key;
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    assert_int_equal(dspy_cache_key(c, req, NULL, &key, NULL), DSPY_OK);
    assert_int_equal(dspy_cache_put(c, &key, "not json", 8, NULL, NULL), DSPY_OK);
    assert_int_equal(complete(lm, "q", NULL, &r), DSPY_OK);
    assert_false(r.cache_hit);
    assert_string_equal(r.texts[0], "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]");
    dspy_lm_response_release(&r);
    assert_int_equal(atomic_load(&f.calls), 1);
    assert_int_equal(dspy_cache_get(c, &key, NULL, &v), DSPY_OK);
    assert_int_equal(v.len, strlen(ANSWER));
    dspy_cache_value_release(&v);
    json_decref(req);
    json_decref(msgs);
    dspy_lm_free(lm);
    dspy_cache_free(c);
}

/* ---- single-flight --------------------------------------------------------------------- */

#define FLIGHT_THREADS 100

struct flight_arg {
    dspy_lm *lm;
    pthread_barrier_t *start;
    dspy_status rc;
    bool hit;
    char text[64];
};

static void *flight_thread(void *p)
{
    struct flight_arg *a = p;
    struct dspy_lm_response r;
    pthread_barrier_wait(a->start);
    a->rc = complete(a->lm, "the same question", NULL, &r);
    if (!a->rc) {
        a->hit = r.cache_hit;
        snprintf(a->text, sizeof(a->text), "%s", r.texts[0]);
        dspy_lm_response_release(&r);
    }
    return NULL;
}

static void hundred_threads_one_upstream_call(void **state)
{
    (void)state;
    struct fake f = { .status = 200, .reply = ANSWER, .delay_ms = 100 };
    dspy_cache *c = mem_cache(NULL);
    dspy_lm *lm = cached_lm(&f, c, NULL, NAN);
    pthread_t th[FLIGHT_THREADS];
    struct flight_arg args[FLIGHT_THREADS];
    pthread_barrier_t start;
    int hits = 0;
    pthread_barrier_init(&start, NULL, FLIGHT_THREADS);
    for (int i = 0; i < FLIGHT_THREADS; i++) {
        args[i] = (struct flight_arg){ lm, &start, DSPY_OK, false, "" };
        assert_int_equal(pthread_create(&th[i], NULL, flight_thread, &args[i]), 0);
    }
    for (int i = 0; i < FLIGHT_THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    assert_int_equal(atomic_load(&f.calls), 1);
    for (int i = 0; i < FLIGHT_THREADS; i++) {
        assert_int_equal(args[i].rc, DSPY_OK);
        assert_string_equal(args[i].text, args[0].text);
        hits += args[i].hit;
    }
    assert_int_equal(hits, FLIGHT_THREADS - 1);
    dspy_lm_free(lm);
    dspy_cache_free(c);
}

/* ---- modules over a cached LM ---------------------------------------------------------- */

static json_t *module_call(dspy_module *m, dspy_lm *lm, const char *q,
                           const struct dspy_call_config *cfg, struct dspy_call_info *info)
{
    json_t *inputs = json_pack("{s:s}", "question", q), *pred = NULL;
    assert_int_equal(dspy_module_call(m, lm, inputs, cfg, &pred, NULL, info, NULL), DSPY_OK);
    json_decref(inputs);
    return pred;
}

static void module_hits_and_memo(void **state)
{
    (void)state;
    struct fake f = { .status = 200, .reply = ANSWER };
    dspy_cache *c = mem_cache(NULL);
    dspy_lm *lm = cached_lm(&f, c, NULL, NAN);
    dspy_signature *sig = NULL;
    struct dspy_call_info info;
    struct dspy_call_config cfg = DSPY_CALL_CONFIG_INIT;
    assert_int_equal(dspy_signature_parse("question -> answer", NULL, &sig, NULL), DSPY_OK);
    dspy_module *m = dspy_module_new(DSPY_MODULE_PREDICT, sig, DSPY_ADAPTER_CHAT);

    for (int i = 0; i < 3; i++) { /* a miss, an L1 hit (memo filled), a memo hit */
        json_t *pred = module_call(m, lm, "Capital of France?", NULL, &info);
        assert_string_equal(json_string_value(json_object_get(pred, "answer")), "Paris");
        assert_int_equal(info.lm_calls, 1);
        assert_int_equal(info.cache_hits, i ? 1 : 0);
        assert_int_equal(info.usage.prompt_tokens, 12);
        assert_int_equal(info.cached_usage.prompt_tokens, i ? 12 : 0);
        /* the caller owns its copy */
        json_object_set_new(pred, "answer", json_string("mutated"));
        json_decref(pred);
    }
    assert_int_equal(atomic_load(&f.calls), 1);

    /* rollout_id, other inputs and no_cache each go upstream */
    cfg.has_rollout_id = true;
    cfg.rollout_id = 1;
    json_decref(module_call(m, lm, "Capital of France?", &cfg, &info));
    json_decref(module_call(m, lm, "Capital of Spain?", NULL, &info));
    cfg = (struct dspy_call_config)DSPY_CALL_CONFIG_INIT;
    cfg.cache.no_cache = true;
    json_decref(module_call(m, lm, "Capital of France?", &cfg, &info));
    assert_int_equal(info.cache_hits, 0);
    assert_int_equal(atomic_load(&f.calls), 4);

    /* the memo never outlives the cache entry, nor the module's state */
    assert_int_equal(dspy_cache_clear(c, 0, NULL), DSPY_OK);
    json_decref(module_call(m, lm, "Capital of France?", NULL, &info));
    assert_int_equal(info.cache_hits, 0);
    assert_int_equal(atomic_load(&f.calls), 5);
    assert_int_equal(dspy_module_set_instructions(m, "Answer tersely."), DSPY_OK);
    json_decref(module_call(m, lm, "Capital of France?", NULL, &info));
    assert_int_equal(info.cache_hits, 0);
    assert_int_equal(atomic_load(&f.calls), 6);
    json_decref(module_call(m, lm, "Capital of France?", NULL, &info));
    assert_int_equal(info.cache_hits, 1);
    assert_int_equal(atomic_load(&f.calls), 6);

    /* a second LM handle over the same cache shares the entries, not the memo */
    dspy_lm *lm2 = cached_lm(&f, c, NULL, NAN);
    json_decref(module_call(m, lm2, "Capital of France?", NULL, &info));
    assert_int_equal(info.cache_hits, 1);
    assert_int_equal(atomic_load(&f.calls), 6);
    dspy_lm_free(lm2);

    dspy_module_free(m);
    dspy_signature_free(sig);
    dspy_lm_free(lm);
    dspy_cache_free(c);
}

/* The memo is keyed by every call setting that changes the request: a call at another
 * temperature (or max_tokens, top_p) is another request and gets that request's answer,
 * never the prediction remembered for the first one. */
static void memo_tells_call_settings_apart(void **state)
{
    (void)state;
    struct fake f = { .status = 200, .reply = ANSWER };
    dspy_cache *c = mem_cache(NULL);
    dspy_lm *lm = cached_lm(&f, c, NULL, NAN);
    dspy_signature *sig = NULL;
    struct dspy_call_info info;
    struct dspy_call_config cfg = DSPY_CALL_CONFIG_INIT;
    assert_int_equal(dspy_signature_parse("question -> answer", NULL, &sig, NULL), DSPY_OK);
    dspy_module *m = dspy_module_new(DSPY_MODULE_PREDICT, sig, DSPY_ADAPTER_CHAT);
    cfg.temperature = 0.5;
    for (int i = 0; i < 3; i++) /* a miss, an L1 hit (memo filled), a memo hit */
        json_decref(module_call(m, lm, "Capital of France?", &cfg, &info));
    assert_int_equal(info.cache_hits, 1);
    assert_int_equal(atomic_load(&f.calls), 1);

    static const char *const answers[] = {
        REPLY("[[ ## answer ## ]]\\nLyon\\n\\n[[ ## completed ## ]]"),
        REPLY("[[ ## answer ## ]]\\nNice\\n\\n[[ ## completed ## ]]"),
        REPLY("[[ ## answer ## ]]\\nLille\\n\\n[[ ## completed ## ]]"),
    };
    static const char *const names[] = { "Lyon", "Nice", "Lille" };
    for (int k = 0; k < 3; k++) {
        struct dspy_call_config other = cfg;
        if (k == 0)
            other.temperature = 0.9;
        else if (k == 1)
            other.max_tokens = 77;
        else
            other.top_p = 0.5;
        f.reply = answers[k];
        json_t *pred = module_call(m, lm, "Capital of France?", &other, &info);
        assert_string_equal(json_string_value(json_object_get(pred, "answer")), names[k]);
        assert_int_equal(info.cache_hits, 0);
        assert_int_equal(atomic_load(&f.calls), 2 + k);
        json_decref(pred);
    }
    /* and the first setting still has its own answer */
    json_t *pred = module_call(m, lm, "Capital of France?", &cfg, &info);
    assert_string_equal(json_string_value(json_object_get(pred, "answer")), "Paris");
    assert_int_equal(atomic_load(&f.calls), 4);
    json_decref(pred);

    dspy_module_free(m);
    dspy_signature_free(sig);
    dspy_lm_free(lm);
    dspy_cache_free(c);
}

/* Many threads calling one module over a cached LM: every answer right, one upstream call
 * per distinct question, the memo shared without races (run under TSan too). */
#define MODULE_THREADS 8
#define MODULE_CALLS 300

struct module_arg {
    dspy_module *m;
    dspy_lm *lm;
    int seed;
    int bad;
};

static void *module_thread(void *p)
{
    struct module_arg *a = p;
    for (int i = 0; i < MODULE_CALLS; i++) {
        char q[32];
        json_t *pred = NULL, *inputs;
        snprintf(q, sizeof(q), "question %d", (i * 7 + a->seed) % 5);
        inputs = json_pack("{s:s}", "question", q);
        if (dspy_module_call(a->m, a->lm, inputs, NULL, &pred, NULL, NULL, NULL) ||
            strcmp(json_string_value(json_object_get(pred, "answer")), "Paris"))
            a->bad++;
        json_decref(pred);
        json_decref(inputs);
    }
    return NULL;
}

static void module_calls_from_many_threads(void **state)
{
    (void)state;
    struct fake f = { .status = 200, .reply = ANSWER, .delay_ms = 20 };
    dspy_cache *c = mem_cache(NULL);
    dspy_lm *lm = cached_lm(&f, c, NULL, NAN);
    dspy_signature *sig = NULL;
    pthread_t th[MODULE_THREADS];
    struct module_arg args[MODULE_THREADS];
    assert_int_equal(dspy_signature_parse("question -> answer", NULL, &sig, NULL), DSPY_OK);
    dspy_module *m = dspy_module_new(DSPY_MODULE_PREDICT, sig, DSPY_ADAPTER_CHAT);
    for (int i = 0; i < MODULE_THREADS; i++) {
        args[i] = (struct module_arg){ m, lm, i, 0 };
        assert_int_equal(pthread_create(&th[i], NULL, module_thread, &args[i]), 0);
    }
    for (int i = 0; i < MODULE_THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].bad, 0);
    }
    assert_int_equal(atomic_load(&f.calls), 5);
    dspy_module_free(m);
    dspy_signature_free(sig);
    dspy_lm_free(lm);
    dspy_cache_free(c);
}

/* The JSON adapter's fallback call is another request with its own key: both are stored,
 * and a repeat is answered from the cache twice over. */
static void fallback_call_is_cached_separately(void **state)
{
    (void)state;
    struct fake f = { .status = 200, .reply = REPLY("{\\\"answer\\\": \\\"Paris\\\"}") };
    dspy_cache *c = mem_cache(NULL);
    dspy_lm *lm = cached_lm(&f, c, NULL, NAN);
    dspy_signature *sig = NULL;
    struct dspy_call_info info;
    struct dspy_cache_stats st;
    assert_int_equal(dspy_signature_parse("question -> answer", NULL, &sig, NULL), DSPY_OK);
    dspy_module *m = dspy_module_new(DSPY_MODULE_PREDICT, sig, DSPY_ADAPTER_CHAT);
    for (int i = 0; i < 2; i++) {
        json_t *pred = module_call(m, lm, "Capital of France?", NULL, &info);
        assert_string_equal(json_string_value(json_object_get(pred, "answer")), "Paris");
        assert_int_equal(info.lm_calls, 2);
        assert_int_equal(info.cache_hits, i ? 2 : 0);
        json_decref(pred);
    }
    assert_int_equal(atomic_load(&f.calls), 2);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.level[0].entries, 2);
    dspy_module_free(m);
    dspy_signature_free(sig);
    dspy_lm_free(lm);
    dspy_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(key_fast_path_matches),
        cmocka_unit_test(key_uses_cache_namespace),
        cmocka_unit_test(hits_report_original_usage),
        cmocka_unit_test(errors_are_never_cached),
        cmocka_unit_test(no_cache_and_no_store),
        cmocka_unit_test(unreadable_entry_is_replaced),
        cmocka_unit_test(hundred_threads_one_upstream_call),
        cmocka_unit_test(module_hits_and_memo),
        cmocka_unit_test(memo_tells_call_settings_apart),
        cmocka_unit_test(module_calls_from_many_threads),
        cmocka_unit_test(fallback_call_is_cached_separately),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
