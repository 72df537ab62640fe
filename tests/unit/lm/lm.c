/* Unit tests for the LM client: the exact request body bytes, where the API key comes from
 * (and that it never shows in an error), HTTP status classes, and response parsing,
 * malformed bodies included. Most go through the transport hook; the key tests go over
 * HTTP to a loopback server, since only there is the Authorization header visible. */
/* threads: every LM handle runs the engine's loop thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <unistd.h>

#include <dspyc/lm.h>

#include "lm/lm_int.h"
#include "support/test_httpd.h"

/* A transport that records the request and answers with a set status and body. */
struct fake {
    long status;
    const char *reply;
    dspy_status fail; /* returned instead of answering, when set */
    char url[256];
    char body[8192];
    int calls;
};

static dspy_status fake_transport(void *userdata, const char *url, const char *body,
                                  size_t body_len, long *http_status, char **response,
                                  size_t *response_len, struct dspy_error *err)
{
    struct fake *f = userdata;
    (void)err;
    f->calls++;
    snprintf(f->url, sizeof(f->url), "%s", url);
    snprintf(f->body, sizeof(f->body), "%.*s", (int)body_len, body);
    if (f->fail)
        return f->fail;
    *http_status = f->status;
    *response_len = strlen(f->reply);
    *response = dspy_strdup(f->reply);
    return *response ? DSPY_OK : DSPY_ENOMEM;
}

static dspy_lm *fake_lm(struct fake *f, const char *model, double temperature, long max_tokens)
{
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    dspy_lm *lm = NULL;
    o.base_url = "http://lm.test/v1/";
    o.model = model;
    o.api_key = "sk-unused-by-fakes";
    o.temperature = temperature;
    o.max_tokens = max_tokens;
    o.transport = fake_transport;
    o.transport_userdata = f;
    assert_int_equal(dspy_lm_new(&o, &lm, NULL), DSPY_OK);
    return lm;
}

#define OK_REPLY                                                                             \
    "{\"id\":\"x\",\"model\":\"gpt-4o-mini-2024\",\"choices\":[{\"index\":0,\"message\":"    \
    "{\"role\":\"assistant\",\"content\":\"[[ ## answer ## ]]\\nParis\"},\"finish_reason\":" \
    "\"stop\"}],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15}}"

static void request_body_bytes(void **state)
{
    (void)state;
    struct fake f = { .status = 200, .reply = OK_REPLY };
    dspy_lm *lm = fake_lm(&f, "openai/gpt-4o-mini", NAN, -1);
    json_t *msgs = json_pack("[{s:s, s:s}, {s:s, s:s}]", "role", "system", "content",
                             "Say \"hi\"\n\ttab \\ back \x01 é", "role", "user", "content", "q");
    struct dspy_lm_request req = DSPY_LM_REQUEST_INIT;
    struct dspy_lm_response resp;
    req.messages = msgs;
    assert_int_equal(dspy_lm_complete(lm, &req, &resp, NULL), DSPY_OK);
    assert_string_equal(f.url, "http://lm.test/v1/chat/completions");
    assert_string_equal(f.body,
                        "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"system\",\"content\":"
                        "\"Say \\\"hi\\\"\\n\\ttab \\\\ back \\u0001 é\"},{\"role\":\"user\","
                        "\"content\":\"q\"}]}");
    dspy_lm_response_release(&resp);

    /* Every optional key, in DSPy/litellm's order; rollout_id and cache never sent; extra
     * keys that the request already sets do not override it. */
    json_t *rf = json_pack("{s:s}", "type", "json_object");
    json_t *extra = json_pack("{s:i, s:[s], s:i, s:b, s:f, s:i}", "rollout_id", 7, "stop", "\n",
                              "seed", 1, "cache", 0, "temperature", 1.5, "logprobs", 0);
    req.temperature = 0.7;
    req.max_tokens = 100;
    req.top_p = 0.9;
    req.n = 3;
    req.response_format = rf;
    req.extra = extra;
    assert_int_equal(dspy_lm_complete(lm, &req, &resp, NULL), DSPY_OK);
    assert_non_null(strstr(f.body, "}],\"temperature\":0.7,\"max_tokens\":100,\"top_p\":0.9,"
                                   "\"n\":3,\"response_format\":{\"type\":\"json_object\"},"
                                   "\"stop\":[\"\\n\"],\"seed\":1,\"logprobs\":0}"));
    assert_null(strstr(f.body, "rollout_id"));
    assert_null(strstr(f.body, "cache"));
    dspy_lm_response_release(&resp);
    json_decref(rf);
    json_decref(extra);
    json_decref(msgs);
    dspy_lm_free(lm);
}

static void handle_defaults_and_model(void **state)
{
    (void)state;
    struct fake f = { .status = 200, .reply = OK_REPLY };
    dspy_lm *lm = fake_lm(&f, "my-local-model", 0.0, 1000);
    assert_string_equal(dspy_lm_model(lm), "my-local-model");
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", "hi");
    struct dspy_lm_request req = DSPY_LM_REQUEST_INIT;
    struct dspy_lm_response resp;
    req.messages = msgs;
    assert_int_equal(dspy_lm_complete(lm, &req, &resp, NULL), DSPY_OK);
    assert_string_equal(f.body, "{\"model\":\"my-local-model\",\"messages\":[{\"role\":\"user\","
                                "\"content\":\"hi\"}],\"temperature\":0.0,\"max_tokens\":1000}");
    dspy_lm_response_release(&resp);
    req.temperature = 1.0;
    req.max_tokens = 5;
    assert_int_equal(dspy_lm_complete(lm, &req, &resp, NULL), DSPY_OK);
    assert_non_null(strstr(f.body, "\"temperature\":1.0,\"max_tokens\":5}"));
    dspy_lm_response_release(&resp);
    json_decref(msgs);
    dspy_lm_free(lm);
}

/* The designated initializers set each documented default from its one named constant,
 * and a request left at DSPY_LM_REQUEST_INIT sends no sampling fields. */
static void options_initializers_carry_the_defaults(void **state)
{
    (void)state;
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    assert_null(o.base_url);
    assert_null(o.api_key_env); /* NULL: the named file, else $OPENAI_API_KEY */
    assert_true(o.timeout_s == 600.0 && o.connect_timeout_s == 10.0);
    assert_true(isnan(o.temperature));
    assert_int_equal(o.max_tokens, -1);
    assert_int_equal(o.max_response_bytes, 16u << 20);
    assert_int_equal(o.max_attempts, 4);
    assert_true(o.retry_base_s == 0.5 && o.retry_cap_s == 8.0 && o.deadline_s == 0);
    assert_false(o.cache_ctl.no_cache || o.cache_ctl.no_store);
    assert_true(o.requests_per_minute == 0 && o.max_waiting == 0);
    struct dspy_lm_request r = DSPY_LM_REQUEST_INIT;
    assert_true(isnan(r.temperature) && isnan(r.top_p) && r.max_tokens == -1 && r.n == 0);
    struct dspy_cache_options c = DSPY_CACHE_OPTIONS_INIT;
    assert_int_equal(c.levels, DSPY_CACHE_L1);
    assert_int_equal(c.max_value_bytes, (size_t)16 << 20);
    assert_int_equal(c.mem_max_bytes, (size_t)256 << 20);
    assert_int_equal(c.mem_max_entries, 1000000);
    assert_string_equal(c.redis_prefix, "dspyc:cache:");
    assert_true(c.redis_pool == 4 && c.redis_timeout_ms == 50 && c.redis_backoff_max_ms == 1000);
    assert_true(c.redis_ttl_s == 7 * 86400.0 && c.redis_compress_min == 0);
    assert_int_equal(c.disk_max_bytes, (size_t)1 << 30);
    assert_true(c.disk_compress_min == 1024 && !c.disk_sync);
    assert_true(c.lease_ms == 30000 && c.lease_poll_ms == 10);
}

static void encoded_entry_point(void **state)
{
    (void)state;
    struct fake f = { .status = 200, .reply = OK_REPLY };
    dspy_lm *lm = fake_lm(&f, "openai/m", NAN, -1);
    struct dspy__lm_call call = DSPY__LM_CALL_INIT;
    struct dspy_lm_response resp;
    call.messages = "{\"role\":\"system\",\"content\":\"S\"}";
    call.messages_len = strlen(call.messages);
    call.user = "line1\nline2";
    call.user_len = 11;
    call.response_format = "{\"type\":\"json_object\"}";
    call.response_format_len = strlen(call.response_format);
    assert_int_equal(dspy__lm_complete_call(lm, &call, &resp, NULL), DSPY_OK);
    assert_string_equal(f.body, "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":"
                                "\"S\"},{\"role\":\"user\",\"content\":\"line1\\nline2\"}],"
                                "\"response_format\":{\"type\":\"json_object\"}}");
    dspy_lm_response_release(&resp);
    dspy_lm_free(lm);
}

static void parses_responses(void **state)
{
    (void)state;
    struct fake f = { .status = 200 };
    dspy_lm *lm = fake_lm(&f, "m", NAN, -1);
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", "hi");
    struct dspy_lm_request req = DSPY_LM_REQUEST_INIT;
    struct dspy_lm_response resp;
    req.messages = msgs;
    f.reply = "{\"model\":\"m-1\",\"choices\":[{\"message\":{\"content\":\"a\"},\"finish_reason\":"
              "\"length\"},{\"message\":{\"content\":null,\"tool_calls\":[]}}],\"usage\":{"
              "\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}";
    assert_int_equal(dspy_lm_complete(lm, &req, &resp, NULL), DSPY_OK);
    assert_int_equal(resp.n, 2);
    assert_string_equal(resp.texts[0], "a");
    assert_string_equal(resp.texts[1], "");
    assert_string_equal(resp.finish_reasons[0], "length");
    assert_null(resp.finish_reasons[1]);
    assert_string_equal(resp.model, "m-1");
    assert_int_equal(resp.usage.prompt_tokens, 5);
    assert_int_equal(resp.usage.completion_tokens, 7);
    assert_int_equal(resp.usage.total_tokens, 12);
    assert_int_equal(resp.http_status, 200);
    dspy_lm_response_release(&resp);
    dspy_lm_response_release(&resp); /* released twice is harmless */

    /* No usage and no model are fine. */
    f.reply = "{\"choices\":[{\"message\":{\"content\":\"b\"}}]}";
    assert_int_equal(dspy_lm_complete(lm, &req, &resp, NULL), DSPY_OK);
    assert_null(resp.model);
    assert_int_equal(resp.usage.total_tokens, 0);
    dspy_lm_response_release(&resp);

    static const struct {
        const char *body, *says;
    } bad[] = {
        { "not json", "not JSON" },
        { "[1,2]", "not a JSON object" },
        { "{}", "no \"choices\"" },
        { "{\"choices\":[]}", "\"choices\"" },
        { "{\"choices\":{}}", "\"choices\"" },
        { "{\"choices\":[{\"text\":\"x\"}]}", "\"message\"" },
        { "{\"choices\":[{\"message\":{\"role\":\"assistant\"}}]}", "no \"content\"" },
        { "{\"choices\":[{\"message\":{\"content\":42}}]}", "non-string \"content\"" },
        { "{\"choices\":[{\"message\":{\"content\":\"x\"},\"finish_reason\":1}]}",
          "finish_reason" },
        { "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":\"lots\"}", "usage" },
        { "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":{\"total_tokens\":\"1\"}}",
          "usage" },
        { "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"model\":5}", "model" },
        { "{\"choices\":[{\"message\":{\"content\":\"x\"}}", "not JSON" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct dspy_error err;
        f.reply = bad[i].body;
        assert_int_equal(dspy_lm_complete(lm, &req, &resp, &err), DSPY_ELM_BAD_RESPONSE);
        assert_int_equal(err.code, DSPY_ELM_BAD_RESPONSE);
        if (!strstr(err.message, bad[i].says))
            fail_msg("body %s: message \"%s\" does not mention %s", bad[i].body, err.message,
                     bad[i].says);
        assert_int_equal(resp.n, 0);
        assert_null(resp.texts);
    }
    json_decref(msgs);
    dspy_lm_free(lm);
}

/* Both readers agree on a body: same status, same choices, finish reasons, model, usage. */
static void assert_readers_agree(const char *body)
{
    struct dspy_lm_response a, b;
    struct dspy_error ea, eb;
    dspy_status ra = dspy__lm_parse_response(body, strlen(body), &a, &ea);
    dspy_status rb = dspy__lm_parse_response_tree(body, strlen(body), &b, &eb);
    if (ra != rb)
        fail_msg("body %s: fast %d, jansson %d", body, ra, rb);
    assert_int_equal(a.n, b.n);
    for (size_t i = 0; i < a.n; i++) {
        assert_string_equal(a.texts[i], b.texts[i]);
        assert_true((a.finish_reasons[i] == NULL) == (b.finish_reasons[i] == NULL));
        if (a.finish_reasons[i])
            assert_string_equal(a.finish_reasons[i], b.finish_reasons[i]);
    }
    assert_true((a.model == NULL) == (b.model == NULL));
    if (a.model)
        assert_string_equal(a.model, b.model);
    assert_memory_equal(&a.usage, &b.usage, sizeof(a.usage));
    dspy_lm_response_release(&a);
    dspy_lm_response_release(&b);
}

static void fast_reader_matches_jansson(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        OK_REPLY,
        "{\"choices\":[{\"message\":{\"content\":"
        "\"caf\\u00e9 \\ud83d\\ude00 a\\/b \\\"q\\\" \\t\"}}]}",
        "{\"choices\":[{\"message\":{\"content\":\"caf\u00c3\u00a9 raw\"},\"finish_reason\":\"\"}],"
        "\"model\":\"\"}",
        "{\"choices\":[{\"message\":{\"content\":\"nul \\u0000 inside\"}}]}",
        "{\"choices\":[{\"message\":{\"content\":\"lone \\ud83d\"}}]}",
        "{\"choices\":[{\"message\":{\"content\":\"bad \\x escape\"}}]}",
        "{\"choices\":[{\"message\":{\"content\":\"a\",\"content\":\"b\"}}]}",
        "{\"choices\":[{\"message\":{\"content\":\"a\"}}],\"choices\":[]}",
        "{\"choices\":[{\"message\":{\"content\":\"a\"}}],\"x\":1e999}",
        "{\"choices\":[{\"message\":{\"content\":\"a\"}}],\"x\":123456789012345678901234}",
        "{\"choices\":[{\"message\":{\"content\":\"a\"}}],\"x\":-0.5e-3,"
        "\"y\":[true,false,null,{}]}",
        "{\"choices\":[{\"message\":{\"content\":\"a\"}}],\"x\":01}",
        "{\"choices\":[{\"message\":{\"content\":\"a\"}}]} trailing",
        "  {\"choices\":[{\"message\":{\"content\":\"a\"}}]}  \n",
        "{\"choices\":[{\"message\":{\"c\\u006fntent\":\"escaped key\"}}]}",
        "{\"choices\":[{\"message\":{\"content\":\"a\"},\"logprobs\":{\"content\":[{\"t\":1}]}}],"
        "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3,"
        "\"prompt_tokens_details\":{\"cached_tokens\":0}},\"system_fingerprint\":null}",
        "{\"choices\":[{\"message\":{\"content\":\"a\"}}],\"usage\":{\"total_tokens\":null}}",
        "{\"choices\":[{\"message\":{\"content\":\"a\"}}],\"usage\":{\"total_tokens\":-1}}",
        "{\"choices\":[{\"message\":{\"content\":\"a\"}}],\"usage\":{\"total_tokens\":1.0}}",
        "{\"choices\":[{\"message\":{\"content\":\"a\"}}],\"usage\":null,\"model\":null}",
        "{\"choices\":[{\"message\":{\"content\":\"a\"}},{\"message\":{\"content\":null}},"
        "{\"message\":{\"content\":\"c\"}},{\"message\":{\"content\":\"d\"}},{\"message\":{"
        "\"content\":\"e\"}},{\"message\":{\"content\":\"f\"}},{\"message\":{\"content\":\"g\"}},"
        "{\"message\":{\"content\":\"h\"}},{\"message\":{\"content\":\"i\"}}]}",
        "{\"choices\":[{\"message\":{\"content\":\"raw\ttab\"}}]}",
        "{\"choices\":[{\"message\":{\"content\":\"bad utf8 \xff\"}}]}",
        "{\"choices\":[{\"message\":{}}]}",
        "{\"choices\":[]}",
        "{\"choices\":[{\"message\":{\"content\":\"a\"}}],}",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
        "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        "",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
        assert_readers_agree(bodies[i]);
    /* A byte that matters (an escape, a raw control, a non-ASCII or bad byte, the closing
     * quote) at every offset of runs read eight bytes at a time. */
    static const char *const specials[] = { "\\n", "\t", "\xc3\xa9", "\xff", "\\\"", "" };
    for (size_t k = 0; k < 20; k++)
        for (size_t j = 0; j < sizeof(specials) / sizeof(specials[0]); j++) {
            char body[160];
            snprintf(body, sizeof(body),
                     "{\"choices\":[{\"message\":{\"content\":\"%.*s%sabcdefghijklm\"}}]}", (int)k,
                     "0123456789ABCDEFGHIJ", specials[j]);
            assert_readers_agree(body);
            struct dspy_lm_response f;
            bool valid = j != 1 && j != 3; /* a raw tab and a bad byte are not JSON */
            dspy_status rc = dspy__lm_parse_response_fast(body, strlen(body), &f);
            if (!valid) {
                assert_int_not_equal(rc, DSPY_OK);
                continue;
            }
            assert_int_equal(rc, DSPY_OK); /* read without deferring to jansson */
            const char *want[] = { "\n", "", "\xc3\xa9", "", "\"", "" };
            char text[64];
            snprintf(text, sizeof(text), "%.*s%sabcdefghijklm", (int)k, "0123456789ABCDEFGHIJ",
                     want[j]);
            assert_int_equal(f.n, 1);
            assert_string_equal(f.texts[0], text);
            dspy_lm_response_release(&f);
        }

    struct dspy_lm_response r;
    assert_int_equal(dspy__lm_parse_response(bodies[1], strlen(bodies[1]), &r, NULL), DSPY_OK);
    assert_string_equal(r.texts[0], "caf\xc3\xa9 \xf0\x9f\x98\x80 a/b \"q\" \t");
    dspy_lm_response_release(&r);
    assert_int_equal(dspy__lm_parse_response(bodies[3], strlen(bodies[3]), &r, NULL),
                     DSPY_ELM_BAD_RESPONSE);
}

static void classify_table(void **state)
{
    (void)state;
    static const struct {
        long status;
        const char *body;
        dspy_status want;
    } cases[] = {
        { 200, "", DSPY_OK },
        { 401, "{\"error\":{\"message\":\"bad key\"}}", DSPY_ELM_AUTH },
        { 403, "", DSPY_ELM_AUTH },
        { 429, "{\"error\":{\"message\":\"slow down\"}}", DSPY_ELM_RATE_LIMIT },
        { 400,
          "{\"error\":{\"message\":\"This model's maximum context length is 8192 tokens\","
          "\"code\":\"context_length_exceeded\"}}",
          DSPY_ELM_CONTEXT },
        { 400, "{\"error\":{\"message\":\"too long\",\"code\":\"context_length_exceeded\"}}",
          DSPY_ELM_CONTEXT },
        { 400,
          "{\"object\":\"error\",\"message\":\"This model's maximum context length is 4096 "
          "tokens. However, you requested 5000 tokens\"}",
          DSPY_ELM_CONTEXT },
        { 400, "prompt exceeds the Context Window", DSPY_ELM_CONTEXT },
        { 400, "{\"error\":{\"message\":\"bad temperature\"}}", DSPY_ELM_BAD_REQUEST },
        { 404, "{\"error\":{\"message\":\"maximum context\"}}", DSPY_ELM_BAD_REQUEST },
        { 422, "", DSPY_ELM_BAD_REQUEST },
        { 500, "", DSPY_ELM_SERVER },
        { 503, "overloaded", DSPY_ELM_SERVER },
        { 302, "", DSPY_ELM_BAD_RESPONSE },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(dspy_lm_classify_http(cases[i].status, cases[i].body,
                                               strlen(cases[i].body)),
                         cases[i].want);
    assert_int_equal(dspy_lm_classify_http(429, NULL, 0), DSPY_ELM_RATE_LIMIT);
}

static void http_errors_carry_status_and_message(void **state)
{
    (void)state;
    struct fake f = { .status = 429 };
    dspy_lm *lm = fake_lm(&f, "m", NAN, -1);
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", "hi");
    struct dspy_lm_request req = DSPY_LM_REQUEST_INIT;
    struct dspy_lm_response resp;
    struct dspy_error err;
    req.messages = msgs;
    f.reply = "{\"error\":{\"message\":\"Rate limit reached for gpt-4o-mini\",\"type\":"
              "\"requests\",\"code\":\"rate_limit_exceeded\"}}";
    assert_int_equal(dspy_lm_complete(lm, &req, &resp, &err), DSPY_ELM_RATE_LIMIT);
    assert_int_equal(err.http_status, 429);
    assert_non_null(strstr(err.message, "Rate limit reached for gpt-4o-mini"));
    assert_non_null(strstr(err.message, "429"));
    assert_int_equal(resp.http_status, 429);

    f.status = 500;
    f.reply = "<html>upstream exploded</html>";
    assert_int_equal(dspy_lm_complete(lm, &req, &resp, &err), DSPY_ELM_SERVER);
    assert_non_null(strstr(err.message, "upstream exploded"));

    /* A long error body is cut, not copied whole. */
    static char longbody[4000];
    memset(longbody, 'z', sizeof(longbody) - 1);
    f.status = 400;
    f.reply = longbody;
    assert_int_equal(dspy_lm_complete(lm, &req, &resp, &err), DSPY_ELM_BAD_REQUEST);
    assert_true(strlen(err.message) < 400);

    /* Transport failures pass through with their class. */
    f.fail = DSPY_ELM_NETWORK;
    assert_int_equal(dspy_lm_complete(lm, &req, &resp, &err), DSPY_ELM_NETWORK);
    assert_int_equal(err.code, DSPY_ELM_NETWORK);
    json_decref(msgs);
    dspy_lm_free(lm);
}

static void response_size_limit(void **state)
{
    (void)state;
    struct fake f = { .status = 200, .reply = OK_REPLY };
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    dspy_lm *lm = NULL;
    struct dspy_error err;
    o.base_url = "http://lm.test/v1";
    o.model = "m";
    o.max_response_bytes = 50;
    o.transport = fake_transport;
    o.transport_userdata = &f;
    assert_int_equal(dspy_lm_new(&o, &lm, NULL), DSPY_OK);
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", "hi");
    struct dspy_lm_request req = DSPY_LM_REQUEST_INIT;
    struct dspy_lm_response resp;
    req.messages = msgs;
    assert_int_equal(dspy_lm_complete(lm, &req, &resp, &err), DSPY_ETOOBIG);
    json_decref(msgs);
    dspy_lm_free(lm);
}

static void bad_options_and_requests(void **state)
{
    (void)state;
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    dspy_lm *lm = NULL;
    struct dspy_error err;
    assert_int_equal(dspy_lm_new(&o, &lm, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "base URL"));
    o.base_url = "http://x/v1";
    assert_int_equal(dspy_lm_new(&o, &lm, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "model"));
    assert_null(lm);

    struct fake f = { .status = 200, .reply = OK_REPLY };
    lm = fake_lm(&f, "m", NAN, -1);
    struct dspy_lm_request req = DSPY_LM_REQUEST_INIT;
    struct dspy_lm_response resp;
    assert_int_equal(dspy_lm_complete(lm, &req, &resp, &err), DSPY_EINVAL);
    json_t *msgs = json_pack("[s]", "not a message");
    req.messages = msgs;
    assert_int_equal(dspy_lm_complete(lm, &req, &resp, &err), DSPY_EINVAL);
    assert_int_equal(f.calls, 0);
    json_decref(msgs);
    dspy_lm_free(lm);
}

/* ---- API keys, over HTTP ---------------------------------------------------------------- */

static dspy_lm *http_lm(const struct test_httpd *s, struct dspy_lm_options *o)
{
    char url[128];
    dspy_lm *lm = NULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", s->port);
    o->base_url = url;
    o->model = "openai/gpt-test";
    assert_int_equal(dspy_lm_new(o, &lm, NULL), DSPY_OK);
    return lm;
}

static void one_call(dspy_lm *lm, dspy_status want, struct dspy_error *err)
{
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", "hi");
    struct dspy_lm_request req = DSPY_LM_REQUEST_INIT;
    struct dspy_lm_response resp;
    req.messages = msgs;
    assert_int_equal(dspy_lm_complete(lm, &req, &resp, err), want);
    dspy_lm_response_release(&resp);
    json_decref(msgs);
}

static void api_key_sources(void **state)
{
    (void)state;
    struct test_httpd s;
    assert_int_equal(test_httpd_start(&s, 200, OK_REPLY), 0);

    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    o.api_key = "sk-explicit";
    dspy_lm *lm = http_lm(&s, &o);
    one_call(lm, DSPY_OK, NULL);
    assert_string_equal(s.auth, "Bearer sk-explicit");
    assert_string_equal(s.path, "/v1/chat/completions");
    assert_non_null(strstr(s.seen, "\"model\":\"gpt-test\""));
    dspy_lm_free(lm);

    setenv("DSPYC_TEST_KEY", "sk-from-env", 1);
    o = (struct dspy_lm_options)DSPY_LM_OPTIONS_INIT;
    o.api_key_env = "DSPYC_TEST_KEY";
    lm = http_lm(&s, &o);
    one_call(lm, DSPY_OK, NULL);
    assert_string_equal(s.auth, "Bearer sk-from-env");
    dspy_lm_free(lm);

    char path[] = "/tmp/dspyc-key-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "  sk-from-file \nsecond line\n", 28), 28);
    close(fd);
    o = (struct dspy_lm_options)DSPY_LM_OPTIONS_INIT;
    o.api_key_env = "DSPYC_TEST_KEY_UNSET";
    o.api_key_file = path;
    lm = http_lm(&s, &o);
    one_call(lm, DSPY_OK, NULL);
    assert_string_equal(s.auth, "Bearer sk-from-file");
    dspy_lm_free(lm);

    /* A variable named explicitly wins over the file. */
    o.api_key_env = "DSPYC_TEST_KEY";
    lm = http_lm(&s, &o);
    one_call(lm, DSPY_OK, NULL);
    assert_string_equal(s.auth, "Bearer sk-from-env");
    dspy_lm_free(lm);

    /* A file named explicitly wins over the ambient $OPENAI_API_KEY; without one the
     * ambient variable is used. */
    const char *was = getenv("OPENAI_API_KEY");
    char *saved = was ? strdup(was) : NULL;
    setenv("OPENAI_API_KEY", "sk-ambient", 1);
    o = (struct dspy_lm_options)DSPY_LM_OPTIONS_INIT;
    o.api_key_file = path;
    lm = http_lm(&s, &o);
    one_call(lm, DSPY_OK, NULL);
    assert_string_equal(s.auth, "Bearer sk-from-file");
    dspy_lm_free(lm);
    o.api_key_file = NULL;
    lm = http_lm(&s, &o);
    one_call(lm, DSPY_OK, NULL);
    assert_string_equal(s.auth, "Bearer sk-ambient");
    dspy_lm_free(lm);
    if (saved)
        setenv("OPENAI_API_KEY", saved, 1);
    else
        unsetenv("OPENAI_API_KEY");
    free(saved);
    unlink(path);

    /* No key anywhere: no Authorization header (local servers need none). */
    o = (struct dspy_lm_options)DSPY_LM_OPTIONS_INIT;
    o.api_key_env = "DSPYC_TEST_KEY_UNSET";
    lm = http_lm(&s, &o);
    one_call(lm, DSPY_OK, NULL);
    assert_string_equal(s.auth, "");
    dspy_lm_free(lm);

    /* A named key file that is missing is an error that names the file. */
    struct dspy_error err;
    o.api_key_file = "/nonexistent/dspyc-key";
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", s.port);
    o.base_url = url;
    o.model = "m";
    assert_int_equal(dspy_lm_new(&o, &lm, &err), DSPY_EIO);
    assert_non_null(strstr(err.message, "/nonexistent/dspyc-key"));
    test_httpd_stop(&s);
}

static void key_never_in_errors(void **state)
{
    (void)state;
    struct test_httpd s;
    struct dspy_error err;
    /* An endpoint that echoes the key back in its error. */
    assert_int_equal(test_httpd_start(&s, 401,
                                      "{\"error\":{\"message\":\"Incorrect API key "
                                      "provided: sk-secret-123456. Check it.\","
                                      "\"code\":\"invalid_api_key\"}}"),
                     0);
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    o.api_key = "sk-secret-123456";
    dspy_lm *lm = http_lm(&s, &o);
    one_call(lm, DSPY_ELM_AUTH, &err);
    assert_int_equal(err.http_status, 401);
    assert_null(strstr(err.message, "sk-secret-123456"));
    assert_non_null(strstr(err.message, "Incorrect API key provided: ***"));
    assert_non_null(strstr(err.message, "invalid_api_key"));
    dspy_lm_free(lm);
    test_httpd_stop(&s);

    /* Nor in a connection error (nothing listens on the server's old port). */
    lm = http_lm(&s, &o);
    one_call(lm, DSPY_ELM_NETWORK, &err);
    assert_null(strstr(err.message, "sk-secret"));
    dspy_lm_free(lm);
}

/* A key, model or URL with a control character is refused before anything is sent: CR or
 * LF in the key would end the Authorization header and inject one of its own. The message
 * names where the key came from, never the key. */
static void control_characters_refused(void **state)
{
    (void)state;
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    dspy_lm *lm = NULL;
    struct dspy_error err;
    o.base_url = "http://127.0.0.1:1/v1";
    o.model = "m";
    o.api_key = "sk-good\r\nX-Injected: 1";
    assert_int_equal(dspy_lm_new(&o, &lm, &err), DSPY_EINVAL);
    assert_null(lm);
    assert_non_null(strstr(err.message, "API key"));
    assert_non_null(strstr(err.message, "control character"));
    assert_non_null(strstr(err.message, "0x0d"));
    assert_null(strstr(err.message, "sk-good"));
    assert_null(strstr(err.message, "Injected"));

    o.api_key = NULL;
    o.api_key_env = "DSPYC_TEST_CTL_KEY";
    setenv("DSPYC_TEST_CTL_KEY", "sk-a\nb", 1);
    assert_int_equal(dspy_lm_new(&o, &lm, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "DSPYC_TEST_CTL_KEY"));
    unsetenv("DSPYC_TEST_CTL_KEY");

    o.model = "gpt\r\nHost: evil";
    assert_int_equal(dspy_lm_new(&o, &lm, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "model name"));
    o.model = "m";
    o.base_url = "http://127.0.0.1:1/v1\r\nX: y";
    assert_int_equal(dspy_lm_new(&o, &lm, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "base URL"));
    o.base_url = "http://127.0.0.1:1/v1";
    o.api_key = "sk-fine\tbut-tab";
    assert_int_equal(dspy_lm_new(&o, &lm, &err), DSPY_EINVAL);
    o.api_key = "sk-fine-123";
    assert_int_equal(dspy_lm_new(&o, &lm, &err), DSPY_OK);
    dspy_lm_free(lm);
}

/* A password in the base URL never reaches an error message. */
static void url_password_never_in_errors(void **state)
{
    (void)state;
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    dspy_lm *lm = NULL;
    struct dspy_error err;
    o.base_url = "http://user:s3cretPW@127.0.0.1:1/v1";
    o.model = "m";
    o.max_attempts = 1;
    assert_int_equal(dspy_lm_new(&o, &lm, &err), DSPY_OK);
    one_call(lm, DSPY_ELM_NETWORK, &err);
    assert_null(strstr(err.message, "s3cretPW"));
    assert_non_null(strstr(err.message, "user:***@127.0.0.1:1"));
    dspy_lm_free(lm);
}

/* ---- retries, timeouts and limits, over HTTP (the event-loop engine) -------------------- */

static void retries_report_attempts(void **state)
{
    (void)state;
    struct test_httpd s;
    struct dspy_error err;
    assert_int_equal(test_httpd_start(&s, 503, "{\"error\":{\"message\":\"overloaded\"}}"), 0);
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    o.api_key_env = "DSPYC_TEST_KEY_UNSET";
    o.max_attempts = 3;
    o.retry_base_s = 0.001;
    o.retry_cap_s = 0.002;
    dspy_lm *lm = http_lm(&s, &o);
    one_call(lm, DSPY_ELM_SERVER, &err);
    assert_int_equal(err.http_status, 503);
    assert_non_null(strstr(err.message, "overloaded"));
    assert_non_null(strstr(err.message, "(after 3 attempts)"));
    pthread_mutex_lock(&s.lock);
    assert_int_equal(s.requests, 3);
    pthread_mutex_unlock(&s.lock);
    struct dspy_lm_stats st;
    dspy_lm_get_stats(lm, &st);
    assert_int_equal(st.requests, 1);
    assert_int_equal(st.attempts, 3);
    assert_int_equal(st.retries, 2);
    dspy_lm_free(lm);

    /* Not retryable: one attempt, and no attempt count in the message. */
    pthread_mutex_lock(&s.lock);
    s.status = 400;
    s.requests = 0;
    pthread_mutex_unlock(&s.lock);
    lm = http_lm(&s, &o);
    one_call(lm, DSPY_ELM_BAD_REQUEST, &err);
    assert_null(strstr(err.message, "attempts"));
    pthread_mutex_lock(&s.lock);
    assert_int_equal(s.requests, 1);
    pthread_mutex_unlock(&s.lock);
    dspy_lm_free(lm);
    test_httpd_stop(&s);
}

static void attempt_timeout_is_retried(void **state)
{
    (void)state;
    struct test_httpd s;
    struct dspy_error err;
    assert_int_equal(test_httpd_start(&s, 200, OK_REPLY), 0);
    pthread_mutex_lock(&s.lock);
    s.delay_ms = 300;
    pthread_mutex_unlock(&s.lock);
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    o.api_key_env = "DSPYC_TEST_KEY_UNSET";
    o.timeout_s = 0.05;
    o.max_attempts = 2;
    o.retry_base_s = 0.001;
    dspy_lm *lm = http_lm(&s, &o);
    one_call(lm, DSPY_ELM_TIMEOUT, &err);
    assert_non_null(strstr(err.message, "(after 2 attempts)"));
    dspy_lm_free(lm);

    /* The whole-call deadline cuts retries short. */
    o.max_attempts = 10;
    o.deadline_s = 0.12;
    lm = http_lm(&s, &o);
    pthread_mutex_lock(&s.lock);
    int before = s.requests;
    pthread_mutex_unlock(&s.lock);
    one_call(lm, DSPY_ELM_TIMEOUT, &err);
    /* Counted, not timed: 0.12 s holds three 0.05 s attempts of the ten allowed (five leaves
     * room for attempts of the first call reaching the server late on a loaded machine). */
    pthread_mutex_lock(&s.lock);
    int attempts = s.requests - before;
    pthread_mutex_unlock(&s.lock);
    assert_true(attempts >= 1 && attempts <= 5);
    dspy_lm_free(lm);
    test_httpd_stop(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_body_bytes),
        cmocka_unit_test(handle_defaults_and_model),
        cmocka_unit_test(options_initializers_carry_the_defaults),
        cmocka_unit_test(encoded_entry_point),
        cmocka_unit_test(parses_responses),
        cmocka_unit_test(fast_reader_matches_jansson),
        cmocka_unit_test(classify_table),
        cmocka_unit_test(http_errors_carry_status_and_message),
        cmocka_unit_test(response_size_limit),
        cmocka_unit_test(bad_options_and_requests),
        cmocka_unit_test(api_key_sources),
        cmocka_unit_test(key_never_in_errors),
        cmocka_unit_test(control_characters_refused),
        cmocka_unit_test(url_password_never_in_errors),
        cmocka_unit_test(retries_report_attempts),
        cmocka_unit_test(attempt_timeout_is_retried),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
