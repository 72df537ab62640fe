/* Unit tests for modules through the LM transport hook: Predict and ChainOfThought end to
 * end against canned replies, the exact messages sent (and that the cached system/demo
 * messages match a fresh render), DSPy's Chat -> JSON fallback (two calls, and none on LM
 * errors), the n > 1 temperature rule, and missing inputs. */
/* threads: modules call the LM through the engine's loop thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <dspyc/dspyc.h>

#define MAX_CALLS 8

/* A transport that answers from a script, one reply per call, and keeps every body. */
struct script {
    const char *replies[MAX_CALLS]; /* choice contents; NULL ends the script */
    int choices;                    /* choices per reply (default 1) */
    long status;                    /* default 200 */
    bool structured;                /* the LM's structured outputs: auto (for gpt-4o-mini,
                                     * on), else off */
    int calls;
    json_t *bodies[MAX_CALLS];
};

static dspy_status scripted(void *userdata, const char *url, const char *body, size_t body_len,
                            long *http_status, char **response, size_t *response_len,
                            struct dspy_error *err)
{
    struct script *s = userdata;
    (void)url;
    (void)err;
    int i = s->calls++;
    assert_true(i < MAX_CALLS);
    s->bodies[i] = json_loadb(body, body_len, 0, NULL);
    assert_non_null(s->bodies[i]);
    *http_status = s->status ? s->status : 200;
    const char *content = s->replies[i] ? s->replies[i] : "";
    json_t *choices = json_array();
    for (int c = 0; c < (s->choices ? s->choices : 1); c++)
        json_array_append_new(choices,
                              json_pack("{s:i, s:{s:s, s:s}, s:s}", "index", c, "message", "role",
                                        "assistant", "content", content, "finish_reason", "stop"));
    json_t *reply = *http_status == 200
                        ? json_pack("{s:s, s:o, s:{s:i, s:i, s:i}}", "model", "fake", "choices",
                                    choices, "usage", "prompt_tokens", 10, "completion_tokens", 2,
                                    "total_tokens", 12)
                        : json_pack("{s:{s:s}}", "error", "message", "slow down");
    if (*http_status != 200)
        json_decref(choices);
    char *text = json_dumps(reply, JSON_COMPACT);
    json_decref(reply);
    *response_len = strlen(text);
    *response = dspy_strdup(text);
    free(text);
    return DSPY_OK;
}

static void script_release(struct script *s)
{
    for (int i = 0; i < s->calls; i++)
        json_decref(s->bodies[i]);
}

static dspy_lm *script_lm(struct script *s, double temperature)
{
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    dspy_lm *lm = NULL;
    o.base_url = "http://lm.test/v1";
    o.model = "openai/gpt-4o-mini";
    o.temperature = temperature;
    o.transport = scripted;
    o.transport_userdata = s;
    o.structured_outputs = s->structured ? DSPY_STRUCTURED_AUTO : DSPY_STRUCTURED_OFF;
    assert_int_equal(dspy_lm_new(&o, &lm, NULL), DSPY_OK);
    return lm;
}

static dspy_module *new_module(enum dspy_module_kind kind, const char *text,
                               enum dspy_adapter_kind adapter)
{
    dspy_signature *sig = NULL;
    struct dspy_error err;
    if (dspy_signature_parse(text, NULL, &sig, &err))
        fail_msg("signature %s: %s", text, err.message);
    dspy_module *m = dspy_module_new(kind, sig, adapter);
    dspy_signature_free(sig);
    assert_non_null(m);
    return m;
}

static const char *msg_content(const json_t *body, size_t i)
{
    return json_string_value(
        json_object_get(json_array_get(json_object_get(body, "messages"), i), "content"));
}

#define CAPITAL "What is the capital of France?"

/* DSPy 3.3.1's golden messages for Predict("question -> answer") (reference section 1.2). */
static const char GOLDEN_SYSTEM[] =
    "Your input fields are:\n1. `question` (str):\nYour output fields are:\n1. `answer` (str):\n"
    "All interactions will be structured in the following way, with the appropriate values "
    "filled in.\n\n[[ ## question ## ]]\n{question}\n\n[[ ## answer ## ]]\n{answer}\n\n"
    "[[ ## completed ## ]]\nIn adhering to this structure, your objective is: \n        Given "
    "the fields `question`, produce the fields `answer`.";
static const char GOLDEN_USER[] =
    "[[ ## question ## ]]\nWhat is the capital of France?\n\nRespond with the corresponding "
    "output fields, starting with the field `[[ ## answer ## ]]`, and then ending with the "
    "marker for `[[ ## completed ## ]]`.";

static void predict_end_to_end(void **state)
{
    (void)state;
    struct script s = { .replies = { "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]" } };
    dspy_lm *lm = script_lm(&s, NAN);
    dspy_module *m = new_module(DSPY_MODULE_PREDICT, "question -> answer", DSPY_ADAPTER_CHAT);
    json_t *inputs = json_pack("{s:s}", "question", CAPITAL);
    json_t *pred = NULL, *completions = NULL;
    struct dspy_call_info info;
    struct dspy_error err;
    assert_int_equal(dspy_module_call(m, lm, inputs, NULL, &pred, &completions, &info, &err),
                     DSPY_OK);
    assert_string_equal(json_string_value(json_object_get(pred, "answer")), "Paris");
    assert_int_equal(json_object_size(pred), 1);
    assert_int_equal(json_array_size(completions), 1);
    assert_true(json_equal(json_array_get(completions, 0), pred));
    assert_int_equal(info.lm_calls, 1);
    assert_int_equal(info.usage.total_tokens, 12);

    /* Byte for byte what DSPy sends, no sampling keys when none are set. */
    const json_t *body = s.bodies[0];
    assert_string_equal(json_string_value(json_object_get(body, "model")), "gpt-4o-mini");
    assert_int_equal(json_array_size(json_object_get(body, "messages")), 2);
    assert_string_equal(msg_content(body, 0), GOLDEN_SYSTEM);
    assert_string_equal(msg_content(body, 1), GOLDEN_USER);
    assert_int_equal(json_object_size(body), 2);

    /* The cached messages are what a fresh render gives. */
    json_t *msgs = NULL;
    assert_int_equal(dspy_module_format(m, inputs, &msgs, &err), DSPY_OK);
    assert_true(json_equal(msgs, json_object_get(body, "messages")));
    json_decref(msgs);

    /* Second call reuses the cache and still renders the new input. */
    json_decref(pred);
    json_decref(completions);
    s.replies[1] = "[[ ## answer ## ]]\nRome";
    json_object_set_new(inputs, "question", json_string("And of Italy?"));
    assert_int_equal(dspy_module_call(m, lm, inputs, NULL, &pred, NULL, NULL, &err), DSPY_OK);
    assert_string_equal(json_string_value(json_object_get(pred, "answer")), "Rome");
    assert_string_equal(msg_content(s.bodies[1], 0), GOLDEN_SYSTEM);
    assert_non_null(strstr(msg_content(s.bodies[1], 1), "And of Italy?"));

    json_decref(pred);
    json_decref(inputs);
    dspy_module_free(m);
    dspy_lm_free(lm);
    script_release(&s);
}

static void cot_end_to_end(void **state)
{
    (void)state;
    struct script s = { .replies = { "[[ ## reasoning ## ]]\nFrance's capital is Paris.\n\n"
                                     "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]" } };
    dspy_lm *lm = script_lm(&s, NAN);
    dspy_module *m = new_module(DSPY_MODULE_COT, "question -> answer", DSPY_ADAPTER_CHAT);
    assert_int_equal(dspy_module_kind(m), DSPY_MODULE_COT);
    const dspy_signature *sig = dspy_module_signature(m);
    assert_int_equal(dspy_signature_nfields(sig), 3);
    assert_string_equal(dspy_signature_field(sig, 1)->name, "reasoning");
    assert_string_equal(dspy_signature_field(sig, 1)->desc, "${reasoning}");
    assert_string_equal(dspy_signature_field(sig, 1)->prefix, "Reasoning:");
    assert_string_equal(dspy_signature_instructions(sig),
                        "Given the fields `question`, produce the fields `answer`.");

    json_t *inputs = json_pack("{s:s}", "question", CAPITAL);
    json_t *pred = NULL;
    assert_int_equal(dspy_module_call(m, lm, inputs, NULL, &pred, NULL, NULL, NULL), DSPY_OK);
    assert_string_equal(json_string_value(json_object_get(pred, "reasoning")),
                        "France's capital is Paris.");
    assert_string_equal(json_string_value(json_object_get(pred, "answer")), "Paris");
    const char *system = msg_content(s.bodies[0], 0);
    assert_non_null(strstr(system, "Your output fields are:\n1. `reasoning` (str): \n2. "
                                   "`answer` (str):\n"));
    assert_non_null(strstr(msg_content(s.bodies[0], 1),
                           "starting with the field `[[ ## reasoning ## ]]`, then "
                           "`[[ ## answer ## ]]`, and then ending"));
    json_decref(pred);
    json_decref(inputs);
    dspy_module_free(m);
    dspy_lm_free(lm);
    script_release(&s);
}

static void falls_back_to_json_once(void **state)
{
    (void)state;
    struct script s = { .replies = { "I think the answer is Paris.", "{\"answer\": \"Paris\"}" } };
    dspy_lm *lm = script_lm(&s, NAN);
    dspy_module *m = new_module(DSPY_MODULE_PREDICT, "question -> answer", DSPY_ADAPTER_CHAT);
    json_t *inputs = json_pack("{s:s}", "question", CAPITAL);
    json_t *pred = NULL;
    struct dspy_call_info info;
    assert_int_equal(dspy_module_call(m, lm, inputs, NULL, &pred, NULL, &info, NULL), DSPY_OK);
    assert_int_equal(s.calls, 2);
    assert_int_equal(info.lm_calls, 2);
    assert_int_equal(info.usage.total_tokens, 24);
    assert_string_equal(json_string_value(json_object_get(pred, "answer")), "Paris");
    /* The second call is the JSON adapter's prompt, with its response_format. */
    assert_null(json_object_get(s.bodies[0], "response_format"));
    json_t *json_mode = json_pack("{s:s}", "type", "json_object");
    assert_true(json_equal(json_object_get(s.bodies[1], "response_format"), json_mode));
    json_decref(json_mode);
    assert_non_null(strstr(msg_content(s.bodies[1], 0), "Outputs will be a JSON object"));
    json_decref(pred);
    json_decref(inputs);
    dspy_module_free(m);
    dspy_lm_free(lm);
    script_release(&s);
}

/* The JSON leg of the fallback reads replies the way DSPy's json_repair does: a comment
 * after a bare number, a string left open at the end, a missing colon, a cut exponent. */
static void fallback_repairs_like_dspy(void **state)
{
    (void)state;
    static const struct {
        const char *reply, *field;
        double want_num;
        const char *want_str;
    } cases[] = {
        { "{\"n\": 5 // five}", "n", 5, NULL },
        { "{\"n\": 1e}", "n", 1.0, NULL },
        { "{\"s\": \"unterminated}", "s", 0, "unterminated" },
        { "{\"s\" \"x\"}", "s", 0, "x" },
        { "{\"s\": \"\\x41b\"}", "s", 0, "Ab" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool num = cases[i].want_str == NULL;
        struct script s = { .replies = { "no field markers here", cases[i].reply } };
        dspy_lm *lm = script_lm(&s, NAN);
        dspy_module *m = new_module(DSPY_MODULE_PREDICT, num ? "q -> n: float" : "q -> s",
                                    DSPY_ADAPTER_CHAT);
        json_t *inputs = json_pack("{s:s}", "q", "x");
        json_t *pred = NULL;
        assert_int_equal(dspy_module_call(m, lm, inputs, NULL, &pred, NULL, NULL, NULL), DSPY_OK);
        assert_int_equal(s.calls, 2);
        json_t *v = json_object_get(pred, cases[i].field);
        if (num)
            assert_true(json_number_value(v) == cases[i].want_num);
        else
            assert_string_equal(json_string_value(v), cases[i].want_str);
        json_decref(pred);
        json_decref(inputs);
        dspy_module_free(m);
        dspy_lm_free(lm);
        script_release(&s);
    }
}

static void no_fallback_on_lm_errors(void **state)
{
    (void)state;
    struct script s = { .status = 429 };
    dspy_lm *lm = script_lm(&s, NAN);
    dspy_module *m = new_module(DSPY_MODULE_PREDICT, "question -> answer", DSPY_ADAPTER_CHAT);
    json_t *inputs = json_pack("{s:s}", "question", CAPITAL);
    json_t *pred = NULL;
    struct dspy_call_info info;
    struct dspy_error err;
    assert_int_equal(dspy_module_call(m, lm, inputs, NULL, &pred, NULL, &info, &err),
                     DSPY_ELM_RATE_LIMIT);
    assert_null(pred);
    assert_int_equal(s.calls, 1);
    assert_int_equal(info.lm_calls, 1);
    assert_int_equal(err.http_status, 429);
    json_decref(inputs);
    dspy_module_free(m);
    dspy_lm_free(lm);
    script_release(&s);
}

static void unparseable_everywhere_fails(void **state)
{
    (void)state;
    struct script s = { .replies = { "no", "still no", "never" } };
    dspy_lm *lm = script_lm(&s, NAN);
    dspy_module *m = new_module(DSPY_MODULE_PREDICT, "question -> answer", DSPY_ADAPTER_CHAT);
    json_t *inputs = json_pack("{s:s}", "question", CAPITAL);
    json_t *pred = NULL;
    struct dspy_error err;
    assert_int_equal(dspy_module_call(m, lm, inputs, NULL, &pred, NULL, NULL, &err), DSPY_EADAPTER);
    assert_null(pred);
    /* Chat, then JSON in JSON mode, and no more: with structured outputs off (a model
     * litellm does not list as supporting response schemas) there is no schema to retry. */
    assert_int_equal(s.calls, 2);
    assert_null(json_object_get(s.bodies[0], "response_format"));
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(s.bodies[1], "response_format"), "type")),
        "json_object");
    assert_non_null(strstr(err.message, "JSONAdapter"));
    json_decref(inputs);
    dspy_module_free(m);
    dspy_lm_free(lm);
    script_release(&s);
}

static const char *format_type(const json_t *body)
{
    return json_string_value(json_object_get(json_object_get(body, "response_format"), "type"));
}

/* The schema DSPy 3.3/3.4 send for "question -> answer, n: int" (recorded from DSPy). */
#define ANSWER_N_SCHEMA                                                                      \
    "{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"DSPyProgramOutputs\","            \
    "\"schema\":{\"additionalProperties\":false,\"properties\":{\"answer\":{\"title\":"      \
    "\"Answer\",\"type\":\"string\"},\"n\":{\"title\":\"N\",\"type\":\"integer\"}},"         \
    "\"required\":[\"answer\",\"n\"],\"title\":\"DSPyProgramOutputs\",\"type\":\"object\"}," \
    "\"strict\":true}}"

/* DSPy 3.3's JSONAdapter, for a model litellm says supports response schemas: a
 * json_schema response_format first; a reply that does not parse (AdapterParseError, which
 * it catches; LM errors it does not) is retried once in JSON mode. Two calls. */
static void structured_reply_that_fails_is_retried_in_json_mode(void **state)
{
    (void)state;
    struct script s = { .replies = { "not an object at all", "{\"answer\": \"Paris\", \"n\": 1}" },
                        .structured = true };
    dspy_lm *lm = script_lm(&s, NAN);
    dspy_module *m = new_module(DSPY_MODULE_PREDICT, "question -> answer, n: int",
                                DSPY_ADAPTER_JSON);
    json_t *inputs = json_pack("{s:s}", "question", CAPITAL);
    json_t *pred = NULL, *want = json_loads(ANSWER_N_SCHEMA, 0, NULL);
    struct dspy_call_info info;
    assert_true(dspy_lm_structured_outputs(lm));
    assert_int_equal(dspy_module_call(m, lm, inputs, NULL, &pred, NULL, &info, NULL), DSPY_OK);
    assert_int_equal(s.calls, 2);
    assert_int_equal(info.lm_calls, 2);
    assert_string_equal(json_string_value(json_object_get(pred, "answer")), "Paris");
    assert_true(json_equal(json_object_get(s.bodies[0], "response_format"), want));
    assert_string_equal(format_type(s.bodies[1]), "json_object");
    /* Both calls carry the JSON adapter's prompt. */
    assert_string_equal(msg_content(s.bodies[0], 0), msg_content(s.bodies[1], 0));
    json_decref(want);
    json_decref(pred);
    json_decref(inputs);
    dspy_module_free(m);
    dspy_lm_free(lm);
    script_release(&s);
}

/* From the Chat adapter: Chat, then a fresh JSONAdapter (schema, then JSON mode). Three
 * calls, and the error is the last one's. */
static void chat_fallback_goes_through_the_structured_retry(void **state)
{
    (void)state;
    struct script s = { .replies = { "no", "still no", "never" }, .structured = true };
    dspy_lm *lm = script_lm(&s, NAN);
    dspy_module *m = new_module(DSPY_MODULE_PREDICT, "question -> answer", DSPY_ADAPTER_CHAT);
    json_t *inputs = json_pack("{s:s}", "question", CAPITAL);
    json_t *pred = NULL;
    struct dspy_error err;
    assert_int_equal(dspy_module_call(m, lm, inputs, NULL, &pred, NULL, NULL, &err), DSPY_EADAPTER);
    assert_null(pred);
    assert_int_equal(s.calls, 3);
    assert_null(json_object_get(s.bodies[0], "response_format"));
    assert_string_equal(format_type(s.bodies[1]), "json_schema");
    assert_string_equal(format_type(s.bodies[2]), "json_object");
    assert_non_null(strstr(err.message, "LM Response: never"));
    json_decref(inputs);
    dspy_module_free(m);
    dspy_lm_free(lm);
    script_release(&s);
}

/* An LM error under a structured format is not retried in JSON mode (DSPy re-raises
 * LMError); an open-ended dict output field gets JSON mode from the start. One call each. */
static void structured_retry_only_after_a_parse_failure(void **state)
{
    (void)state;
    struct script s = { .status = 400, .structured = true };
    dspy_lm *lm = script_lm(&s, NAN);
    dspy_module *m = new_module(DSPY_MODULE_PREDICT, "question -> answer", DSPY_ADAPTER_JSON);
    json_t *inputs = json_pack("{s:s}", "question", CAPITAL);
    json_t *pred = NULL;
    assert_int_not_equal(dspy_module_call(m, lm, inputs, NULL, &pred, NULL, NULL, NULL), DSPY_OK);
    assert_int_equal(s.calls, 1);
    assert_string_equal(format_type(s.bodies[0]), "json_schema");
    dspy_module_free(m);
    dspy_lm_free(lm);
    script_release(&s);

    struct script d = { .replies = { "nothing", "still nothing" }, .structured = true };
    lm = script_lm(&d, NAN);
    m = new_module(DSPY_MODULE_PREDICT, "question -> counts: dict[str, int]", DSPY_ADAPTER_JSON);
    assert_int_equal(dspy_module_call(m, lm, inputs, NULL, &pred, NULL, NULL, NULL), DSPY_EADAPTER);
    assert_int_equal(d.calls, 1);
    assert_string_equal(format_type(d.bodies[0]), "json_object");
    json_decref(inputs);
    dspy_module_free(m);
    dspy_lm_free(lm);
    script_release(&d);
}

static double sent_temperature(const json_t *body)
{
    const json_t *t = json_object_get(body, "temperature");
    return t ? json_number_value(t) : NAN;
}

static void n_greater_than_one_samples_warm(void **state)
{
    (void)state;
    const char *reply = "[[ ## answer ## ]]\nParis";
    struct script s = { .replies = { reply, reply, reply, reply, reply, reply }, .choices = 3 };
    dspy_lm *lm = script_lm(&s, NAN);
    dspy_module *m = new_module(DSPY_MODULE_PREDICT, "question -> answer", DSPY_ADAPTER_CHAT);
    json_t *inputs = json_pack("{s:s}", "question", CAPITAL);
    json_t *pred = NULL, *all = NULL;
    struct dspy_call_config cfg = DSPY_CALL_CONFIG_INIT;

    cfg.n = 3; /* unset temperature -> 0.7 */
    assert_int_equal(dspy_module_call(m, lm, inputs, &cfg, &pred, &all, NULL, NULL), DSPY_OK);
    assert_true(sent_temperature(s.bodies[0]) == 0.7);
    assert_int_equal(json_integer_value(json_object_get(s.bodies[0], "n")), 3);
    assert_int_equal(json_array_size(all), 3);
    json_decref(pred);
    json_decref(all);

    cfg.temperature = 0.1; /* <= 0.15 -> 0.7 */
    assert_int_equal(dspy_module_call(m, lm, inputs, &cfg, &pred, NULL, NULL, NULL), DSPY_OK);
    assert_true(sent_temperature(s.bodies[1]) == 0.7);
    json_decref(pred);

    cfg.temperature = 0.5; /* kept */
    assert_int_equal(dspy_module_call(m, lm, inputs, &cfg, &pred, NULL, NULL, NULL), DSPY_OK);
    assert_true(sent_temperature(s.bodies[2]) == 0.5);
    json_decref(pred);

    /* n = 1: nothing forced, nothing sent. */
    s.choices = 1;
    cfg = (struct dspy_call_config)DSPY_CALL_CONFIG_INIT;
    cfg.has_rollout_id = true;
    cfg.rollout_id = 42;
    assert_int_equal(dspy_module_call(m, lm, inputs, &cfg, &pred, NULL, NULL, NULL), DSPY_OK);
    assert_true(isnan(sent_temperature(s.bodies[3])));
    assert_null(json_object_get(s.bodies[3], "n"));
    assert_null(json_object_get(s.bodies[3], "rollout_id")); /* never sent */
    json_decref(pred);

    /* Module config counts as well as per-call config. */
    s.choices = 2;
    struct dspy_call_config mc = DSPY_CALL_CONFIG_INIT;
    mc.n = 2;
    mc.max_tokens = 64;
    dspy_module_set_config(m, &mc);
    assert_int_equal(dspy_module_call(m, lm, inputs, NULL, &pred, NULL, NULL, NULL), DSPY_OK);
    assert_true(sent_temperature(s.bodies[4]) == 0.7);
    assert_int_equal(json_integer_value(json_object_get(s.bodies[4], "max_tokens")), 64);
    json_decref(pred);

    json_decref(inputs);
    dspy_module_free(m);
    dspy_lm_free(lm);
    script_release(&s);

    /* A warm LM default is used as is. */
    struct script s2 = { .replies = { reply }, .choices = 2 };
    lm = script_lm(&s2, 0.9);
    m = new_module(DSPY_MODULE_PREDICT, "question -> answer", DSPY_ADAPTER_CHAT);
    inputs = json_pack("{s:s}", "question", CAPITAL);
    cfg = (struct dspy_call_config)DSPY_CALL_CONFIG_INIT;
    cfg.n = 2;
    assert_int_equal(dspy_module_call(m, lm, inputs, &cfg, &pred, NULL, NULL, NULL), DSPY_OK);
    assert_true(sent_temperature(s2.bodies[0]) == 0.9);
    json_decref(pred);
    json_decref(inputs);
    dspy_module_free(m);
    dspy_lm_free(lm);
    script_release(&s2);
}

static void missing_inputs(void **state)
{
    (void)state;
    struct script s = { .replies = { "[[ ## answer ## ]]\nok" } };
    dspy_lm *lm = script_lm(&s, NAN);
    dspy_module *m = new_module(DSPY_MODULE_PREDICT, "context, question -> answer",
                                DSPY_ADAPTER_CHAT);
    json_t *inputs = json_pack("{s:s}", "context", "c");
    json_t *pred = NULL;
    struct dspy_error err;
    assert_int_equal(dspy_module_call(m, lm, inputs, NULL, &pred, NULL, NULL, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "question"));
    assert_string_equal(err.field, "question");
    assert_int_equal(s.calls, 0);
    json_t *notobj = json_string("question");
    assert_int_equal(dspy_module_call(m, lm, notobj, NULL, &pred, NULL, NULL, &err), DSPY_EINVAL);
    json_decref(notobj);
    dspy_module_free(m);

    /* An Optional input may be left out, as DSPy allows. */
    m = new_module(DSPY_MODULE_PREDICT, "context, question: Optional[str] -> answer",
                   DSPY_ADAPTER_CHAT);
    assert_int_equal(dspy_module_call(m, lm, inputs, NULL, &pred, NULL, NULL, &err), DSPY_OK);
    assert_int_equal(s.calls, 1);
    json_decref(pred);
    json_decref(inputs);
    dspy_module_free(m);
    dspy_lm_free(lm);
    script_release(&s);
}

static void setters_refresh_the_prompt(void **state)
{
    (void)state;
    const char *reply = "[[ ## answer ## ]]\n4";
    struct script s = { .replies = { reply, reply, reply, reply } };
    dspy_lm *lm = script_lm(&s, NAN);
    dspy_module *m = new_module(DSPY_MODULE_PREDICT, "question -> answer", DSPY_ADAPTER_CHAT);
    json_t *inputs = json_pack("{s:s}", "question", "2+2?");
    json_t *pred = NULL;
    assert_int_equal(dspy_module_call(m, lm, inputs, NULL, &pred, NULL, NULL, NULL), DSPY_OK);
    json_decref(pred);

    assert_int_equal(dspy_module_set_instructions(m, "Add the numbers."), DSPY_OK);
    json_t *demos = json_pack("[{s:s, s:s}]", "question", "1+1?", "answer", "2");
    assert_int_equal(dspy_module_set_demos(m, demos), DSPY_OK);
    json_decref(demos);
    assert_int_equal(dspy_module_call(m, lm, inputs, NULL, &pred, NULL, NULL, NULL), DSPY_OK);
    json_decref(pred);
    const json_t *msgs = json_object_get(s.bodies[1], "messages");
    assert_int_equal(json_array_size(msgs), 4);
    assert_non_null(strstr(msg_content(s.bodies[1], 0), "your objective is: \n        Add the "
                                                        "numbers."));
    assert_string_equal(msg_content(s.bodies[1], 1), "[[ ## question ## ]]\n1+1?");
    assert_string_equal(msg_content(s.bodies[1], 2),
                        "[[ ## answer ## ]]\n2\n\n[[ ## completed ## ]]\n");

    /* Changing the signature through the mutable handle drops the cache too. */
    dspy_signature_set_desc(dspy_module_signature_mut(m), "answer", "a number");
    dspy_module_set_demos(m, NULL);
    assert_int_equal(json_array_size(dspy_module_demos(m)), 0);
    assert_int_equal(dspy_module_call(m, lm, inputs, NULL, &pred, NULL, NULL, NULL), DSPY_OK);
    json_decref(pred);
    assert_non_null(strstr(msg_content(s.bodies[2], 0), "1. `answer` (str): a number"));
    assert_int_equal(json_array_size(json_object_get(s.bodies[2], "messages")), 2);

    /* Bad demos are refused and leave the module as it was. */
    json_t *bad = json_pack("[s]", "not an object");
    assert_int_equal(dspy_module_set_demos(m, bad), DSPY_EINVAL);
    json_decref(bad);

    /* The JSON adapter as the module's own. */
    s.replies[3] = "{\"answer\": \"4\"}";
    dspy_module_set_adapter(m, DSPY_ADAPTER_JSON);
    assert_int_equal(dspy_module_adapter(m), DSPY_ADAPTER_JSON);
    assert_int_equal(dspy_module_call(m, lm, inputs, NULL, &pred, NULL, NULL, NULL), DSPY_OK);
    assert_string_equal(json_string_value(json_object_get(pred, "answer")), "4");
    assert_int_equal(s.calls, 4);
    json_decref(pred);

    json_decref(inputs);
    dspy_module_free(m);
    dspy_lm_free(lm);
    script_release(&s);
}

/* A stateless transport: safe from many threads. */
static dspy_status echo_answer(void *userdata, const char *url, const char *body, size_t body_len,
                               long *http_status, char **response, size_t *response_len,
                               struct dspy_error *err)
{
    static const char reply[] = "{\"choices\":[{\"message\":{\"content\":"
                                "\"[[ ## answer ## ]]\\nParis\"}}]}";
    (void)userdata;
    (void)url;
    (void)err;
    if (!strstr(body, "capital") || body_len < 100)
        return DSPY_ELM_NETWORK;
    *http_status = 200;
    *response_len = sizeof(reply) - 1;
    *response = dspy_strdup(reply);
    return DSPY_OK;
}

struct caller {
    dspy_module *m;
    dspy_lm *lm;
    int failures;
};

static void *call_many(void *arg)
{
    struct caller *c = arg;
    json_t *inputs = json_pack("{s:s}", "question", CAPITAL);
    for (int i = 0; i < 200; i++) {
        json_t *pred = NULL;
        if (dspy_module_call(c->m, c->lm, inputs, NULL, &pred, NULL, NULL, NULL) ||
            strcmp(json_string_value(json_object_get(pred, "answer")), "Paris"))
            c->failures++;
        json_decref(pred);
    }
    json_decref(inputs);
    return NULL;
}

/* Many threads on one fresh module: the cached prompt is built once, safely. */
static void concurrent_calls(void **state)
{
    (void)state;
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    dspy_lm *lm = NULL;
    o.base_url = "http://lm.test/v1";
    o.model = "m";
    o.transport = echo_answer;
    assert_int_equal(dspy_lm_new(&o, &lm, NULL), DSPY_OK);
    dspy_module *m = new_module(DSPY_MODULE_COT, "question -> answer", DSPY_ADAPTER_CHAT);
    json_t *demos = json_pack("[{s:s, s:s}]", "question", "2+2?", "answer", "4");
    dspy_module_set_demos(m, demos);
    json_decref(demos);
    pthread_t t[4];
    struct caller c[4];
    for (int i = 0; i < 4; i++) {
        c[i] = (struct caller){ m, lm, 0 };
        assert_int_equal(pthread_create(&t[i], NULL, call_many, &c[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        /* A ChainOfThought reply without reasoning falls back to JSON and fails there:
         * every call must fail the same way, none may crash or mix up. */
        assert_int_equal(c[i].failures, 200);
    }
    dspy_module_free(m);
    m = new_module(DSPY_MODULE_PREDICT, "question -> answer", DSPY_ADAPTER_CHAT);
    for (int i = 0; i < 4; i++) {
        c[i] = (struct caller){ m, lm, 0 };
        assert_int_equal(pthread_create(&t[i], NULL, call_many, &c[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(c[i].failures, 0);
    }
    dspy_module_free(m);
    dspy_lm_free(lm);
}

static void kind_names(void **state)
{
    (void)state;
    assert_string_equal(dspy_module_kind_name(DSPY_MODULE_PREDICT), "predict");
    assert_string_equal(dspy_module_kind_name(DSPY_MODULE_COT), "cot");
    assert_int_equal(dspy_module_kind_from_name("ChainOfThought"), DSPY_MODULE_COT);
    assert_int_equal(dspy_module_kind_from_name("chain_of_thought"), DSPY_MODULE_COT);
    assert_int_equal(dspy_module_kind_from_name("Predict"), DSPY_MODULE_PREDICT);
    assert_int_equal(dspy_module_kind_from_name("react"), -1);
    assert_int_equal(dspy_module_kind_from_name(NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(predict_end_to_end),
        cmocka_unit_test(cot_end_to_end),
        cmocka_unit_test(falls_back_to_json_once),
        cmocka_unit_test(fallback_repairs_like_dspy),
        cmocka_unit_test(no_fallback_on_lm_errors),
        cmocka_unit_test(unparseable_everywhere_fails),
        cmocka_unit_test(structured_reply_that_fails_is_retried_in_json_mode),
        cmocka_unit_test(chat_fallback_goes_through_the_structured_retry),
        cmocka_unit_test(structured_retry_only_after_a_parse_failure),
        cmocka_unit_test(n_greater_than_one_samples_warm),
        cmocka_unit_test(missing_inputs),
        cmocka_unit_test(setters_refresh_the_prompt),
        cmocka_unit_test(concurrent_calls),
        cmocka_unit_test(kind_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
