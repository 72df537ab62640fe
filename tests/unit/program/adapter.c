/* Unit tests for the Chat and JSON adapters: rendered messages against goldens captured from
 * DSPy 3.3.1, the parser's quirks and error texts, value coercion, hostile input, and
 * allocation failures. tests/compat/test_format.py compares many more cases live. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dspyc/adapter.h>

#include "program/adapter_int.h"

#define LAQUO "\xC2\xAB"
#define RAQUO "\xC2\xBB"

static dspy_signature *sig_of(const char *text, bool cot)
{
    struct dspy_error err;
    dspy_signature *sig = NULL;
    if (dspy_signature_parse(text, NULL, &sig, &err))
        fail_msg("signature \"%s\": %s", text, err.message);
    if (cot)
        assert_int_equal(dspy_signature_prepend_output(sig, "reasoning", NULL), DSPY_OK);
    return sig;
}

static json_t *load(const char *json)
{
    json_error_t e;
    json_t *v = json_loads(json, 0, &e);
    if (!v)
        fail_msg("bad test JSON: %s", e.text);
    return v;
}

static json_t *format(enum dspy_adapter_kind kind, const dspy_signature *sig, const char *demos,
                      const char *inputs)
{
    struct dspy_error err;
    json_t *d = demos ? load(demos) : NULL, *in = load(inputs), *msgs = NULL;
    if (dspy_adapter_format(kind, sig, d, in, &msgs, &err))
        fail_msg("format failed: %s", err.message);
    json_decref(d);
    json_decref(in);
    return msgs;
}

static void assert_message(const json_t *msgs, size_t i, const char *role, const char *content)
{
    const json_t *m = json_array_get(msgs, i);
    assert_non_null(m);
    assert_string_equal(json_string_value(json_object_get(m, "role")), role);
    assert_string_equal(json_string_value(json_object_get(m, "content")), content);
}

static void predict_chat_matches_golden(void **state)
{
    (void)state;
    dspy_signature *sig = sig_of("question -> answer", false);
    json_t *msgs = format(DSPY_ADAPTER_CHAT, sig, NULL,
                          "{\"question\": \"What is the capital of France?\"}");
    assert_int_equal(json_array_size(msgs), 2);
    assert_message(msgs, 0, "system",
                   "Your input fields are:\n1. `question` (str):\nYour output fields are:\n1. "
                   "`answer` (str):\nAll interactions will be structured in the following way, "
                   "with the appropriate values filled in.\n\n[[ ## question ## ]]\n{question}\n\n"
                   "[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]\nIn adhering to this "
                   "structure, your objective is: \n        Given the fields `question`, produce "
                   "the fields `answer`.");
    assert_message(msgs, 1, "user",
                   "[[ ## question ## ]]\nWhat is the capital of France?\n\nRespond with the "
                   "corresponding output fields, starting with the field `[[ ## answer ## ]]`, and "
                   "then ending with the marker for `[[ ## completed ## ]]`.");
    json_decref(msgs);
    dspy_signature_free(sig);
}

static void cot_demos_match_golden(void **state)
{
    (void)state;
    dspy_signature *sig = sig_of("question -> answer: int", true);
    json_t *msgs = format(DSPY_ADAPTER_CHAT, sig,
                          "[{\"question\": \"1+1?\", \"answer\": 2}, {\"question\": \"2+2?\", "
                          "\"reasoning\": \"r\", \"answer\": 4}, {\"answer\": 9}]",
                          "{\"question\": \"3+3?\"}");
    assert_int_equal(json_array_size(msgs), 6); /* the output-only demo is dropped */
    assert_message(msgs, 0, "system",
                   "Your input fields are:\n1. `question` (str):\nYour output fields are:\n"
                   "1. `reasoning` (str): \n2. `answer` (int):\n"
                   "All interactions will be structured in the following way, with the "
                   "appropriate values filled in.\n\n[[ ## question ## ]]\n{question}\n\n"
                   "[[ ## reasoning ## ]]\n{reasoning}\n\n[[ ## answer ## ]]\n"
                   "{answer}        # note: the value you produce must be a single int value\n\n"
                   "[[ ## completed ## ]]\nIn adhering to this structure, your objective is: \n"
                   "        Given the fields `question`, produce the fields `answer`.");
    /* the incomplete demo comes first, with DSPy's two "Not supplied" texts */
    assert_message(msgs, 1, "user",
                   "This is an example of the task, though some input or output fields are not "
                   "supplied.\n\n[[ ## question ## ]]\n1+1?");
    assert_message(msgs, 2, "assistant",
                   "[[ ## reasoning ## ]]\nNot supplied for this particular example. \n\n"
                   "[[ ## answer ## ]]\n2\n\n[[ ## completed ## ]]\n");
    assert_message(msgs, 3, "user", "[[ ## question ## ]]\n2+2?");
    assert_message(msgs, 4, "assistant",
                   "[[ ## reasoning ## ]]\nr\n\n[[ ## answer ## ]]\n4\n\n[[ ## completed ## ]]\n");
    assert_message(msgs, 5, "user",
                   "[[ ## question ## ]]\n3+3?\n\nRespond with the corresponding output fields, "
                   "starting with the field `[[ ## reasoning ## ]]`, then `[[ ## answer ## ]]` "
                   "(must be formatted as a valid Python int), and then ending with the marker for "
                   "`[[ ## completed ## ]]`.");
    json_decref(msgs);
    dspy_signature_free(sig);
}

static void json_adapter_matches_golden(void **state)
{
    (void)state;
    dspy_signature *sig = sig_of("question -> answer, confidence: float", false);
    json_t *msgs = format(DSPY_ADAPTER_JSON, sig,
                          "[{\"question\": \"q1\", \"answer\": \"a1\", \"confidence\": 0.5}, "
                          "{\"question\": \"q2\", \"confidence\": 1.0}]",
                          "{\"question\": \"Why?\"}");
    assert_int_equal(json_array_size(msgs), 6);
    assert_message(msgs, 0, "system",
                   "Your input fields are:\n1. `question` (str):\nYour output fields are:\n"
                   "1. `answer` (str): \n2. `confidence` (float):\n"
                   "All interactions will be structured in the following way, with the "
                   "appropriate values filled in.\n\nInputs will have the following structure:\n\n"
                   "[[ ## question ## ]]\n{question}\n\n"
                   "Outputs will be a JSON object with the following fields.\n\n"
                   "{\n  \"answer\": \"{answer}\",\n"
                   "  \"confidence\": \"{confidence}        # note: "
                   "the value you produce must be a single float value\"\n}\n"
                   "In adhering to this structure, your objective is: \n"
                   "        Given the fields `question`, produce the fields `answer`, "
                   "`confidence`.");
    assert_message(msgs, 2, "assistant",
                   "{\n  \"answer\": \"Not supplied for this particular example. \",\n"
                   "  \"confidence\": 1.0\n}");
    assert_message(msgs, 4, "assistant", "{\n  \"answer\": \"a1\",\n  \"confidence\": 0.5\n}");
    assert_message(msgs, 5, "user",
                   "[[ ## question ## ]]\nWhy?\n\nRespond with a JSON object in the following "
                   "order of fields: `answer`, then `confidence` (must be formatted as a valid "
                   "Python float).");
    json_decref(msgs);
    dspy_signature_free(sig);
}

static void values_render_as_python_does(void **state)
{
    (void)state;
    dspy_signature *sig = sig_of("context, question, x, n: list[int], e -> answer", false);
    json_t *msgs = format(DSPY_ADAPTER_CHAT, sig, NULL,
                          "{\"context\": [\"one\", \"two\\nlines\", \"\\u00abq\\u00bb\"], "
                          "\"question\": {\"a\": [1, 2.5, null, true], \"\\u00e9\": \"x\"}, "
                          "\"x\": 1e20, \"n\": [], \"e\": []}");
    assert_message(msgs, 1, "user",
                   "[[ ## context ## ]]\n[1] " LAQUO "one" RAQUO "\n[2] " LAQUO LAQUO LAQUO
                   "\n    two\n    lines\n" RAQUO RAQUO RAQUO "\n[3] " LAQUO LAQUO LAQUO
                   "\n    " LAQUO "q" RAQUO "\n" RAQUO RAQUO RAQUO "\n\n"
                   "[[ ## question ## ]]\n{\"a\": [1, 2.5, null, true], \"\xC3\xA9\": \"x\"}\n\n"
                   "[[ ## x ## ]]\n1e+20\n\n[[ ## n ## ]]\n[]\n\n[[ ## e ## ]]\nN/A\n\n"
                   "Respond with the corresponding output fields, starting with the field "
                   "`[[ ## answer ## ]]`, and then ending with the marker for "
                   "`[[ ## completed ## ]]`.");
    json_decref(msgs);

    /* A list of numbers given to a str field makes DSPy raise; so do we. */
    struct dspy_error err;
    json_t *in = load("{\"context\": [1, 2]}"), *out = NULL;
    assert_int_equal(dspy_adapter_format(DSPY_ADAPTER_CHAT, sig, NULL, in, &out, &err),
                     DSPY_EINVAL);
    assert_null(out);
    assert_non_null(strstr(err.message, "argument of type 'int' is not iterable"));
    assert_string_equal(err.field, "context");
    json_decref(in);
    in = load("[1]");
    assert_int_equal(dspy_adapter_format(DSPY_ADAPTER_CHAT, sig, in, NULL, &out, &err),
                     DSPY_EINVAL);
    json_decref(in);
    dspy_signature_free(sig);
}

static void type_notes_and_schema(void **state)
{
    (void)state;
    dspy_signature *sig = sig_of("q -> a: Literal['pos', 'neg'], b: bool, c: list[str], "
                                 "d: Optional[int], e: dict[Literal['x'], int]",
                                 false);
    struct dspy_buf b;
    dspy__buf_init(&b, 0);
    assert_int_equal(dspy__adapter_render_system(DSPY_ADAPTER_CHAT, sig, &b, NULL), DSPY_OK);
    assert_non_null(strstr(b.ptr, "{a}        # note: the value you produce must exactly match (no "
                                  "extra characters) one of: pos; neg\n"));
    assert_non_null(strstr(b.ptr, "{b}        # note: the value you produce must be True or "
                                  "False\n"));
    assert_non_null(strstr(b.ptr, "{c}        # note: the value you produce must adhere to the "
                                  "JSON schema: {\"type\": \"array\", \"items\": {\"type\": "
                                  "\"string\"}}\n"));
    assert_non_null(strstr(b.ptr, "{\"anyOf\": [{\"type\": \"integer\"}, {\"type\": \"null\"}]}"));
    assert_non_null(strstr(b.ptr, "{\"type\": \"object\", \"additionalProperties\": {\"type\": "
                                  "\"integer\"}, \"propertyNames\": {\"const\": \"x\"}}"));
    assert_non_null(strstr(b.ptr, "4. `d` (Union[int, NoneType]): \n"));
    dspy__buf_release(&b);
    dspy_signature_free(sig);
}

static json_t *parse(enum dspy_adapter_kind kind, const dspy_signature *sig, const char *text,
                     dspy_status want, struct dspy_error *err)
{
    json_t *out = NULL;
    dspy_error_clear(err);
    dspy_status rc = dspy_adapter_parse(kind, sig, text, strlen(text), &out, err);
    if (rc != want)
        fail_msg("parse of \"%s\": rc %d, want %d (%s)", text, rc, want, err->message);
    return out;
}

static void assert_json(const json_t *v, const char *want)
{
    char *s = json_dumps(v, JSON_COMPACT);
    assert_string_equal(s, want);
    free(s);
}

static void chat_parse_quirks(void **state)
{
    struct dspy_error err;
    json_t *o;
    (void)state;
    dspy_signature *sig = sig_of("question -> answer", false);
    o = parse(DSPY_ADAPTER_CHAT, sig, "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]", DSPY_OK,
              &err);
    assert_json(o, "{\"answer\":\"Paris\"}");
    json_decref(o);
    o = parse(DSPY_ADAPTER_CHAT, sig, "[[ ## answer ## ]] Paris\nis it", DSPY_OK, &err);
    assert_json(o, "{\"answer\":\"Paris\\nis it\"}");
    json_decref(o);
    /* DSPy cuts the header length from the unstripped line */
    o = parse(DSPY_ADAPTER_CHAT, sig, "  [[ ## answer ## ]] forty two", DSPY_OK, &err);
    assert_json(o, "{\"answer\":\"]] forty two\"}");
    json_decref(o);
    o = parse(DSPY_ADAPTER_CHAT, sig, "[[ ## answer ## ]]\nfirst\n[[ ## answer ## ]]\nsecond",
              DSPY_OK, &err);
    assert_json(o, "{\"answer\":\"first\"}");
    json_decref(o);
    o = parse(DSPY_ADAPTER_CHAT, sig, "I think the answer is Paris.", DSPY_EADAPTER, &err);
    assert_null(o);
    assert_string_equal(err.message,
                        "Adapter ChatAdapter failed to parse the LM response. \n\nLM Response: I "
                        "think the answer is Paris. \n\nExpected to find output fields in the LM "
                        "response: [answer] \n\nActual output fields parsed from the LM response: "
                        "[] \n\n");
    dspy_signature_free(sig);

    sig = sig_of("q -> n: int, ok: bool, label: Literal['pos', 'neg'], tags: list[str], "
                 "maybe: Optional[int]",
                 false);
    o = parse(DSPY_ADAPTER_CHAT, sig,
              "[[ ## n ## ]]\n'42'\n[[ ## ok ## ]]\r\nyes\r\n[[ ## label ## ]]\nLiteral['neg']\n"
              "[[ ## tags ## ]]\n['a', \"b\"]",
              DSPY_OK, &err);
    assert_json(o, "{\"n\":42,\"ok\":true,\"label\":\"neg\",\"tags\":[\"a\",\"b\"],"
                   "\"maybe\":null}");
    json_decref(o);
    o = parse(DSPY_ADAPTER_CHAT, sig, "[[ ## label ## ]]\nmaybe\n[[ ## n ## ]]\n1", DSPY_EADAPTER,
              &err);
    assert_string_equal(err.field, "label");
    assert_non_null(strstr(err.message, "Failed to parse field label with value maybe from the LM "
                                        "response. Error message: 'maybe' is not one of ('pos', "
                                        "'neg')\n\nAdapter ChatAdapter failed"));
    o = parse(DSPY_ADAPTER_CHAT, sig, "[[ ## n ## ]]\nThe answer is 42", DSPY_EADAPTER, &err);
    assert_non_null(strstr(err.message, "Failed to parse field n with value The answer is 42"));
    dspy_signature_free(sig);
}

static void json_parse_behaviour(void **state)
{
    struct dspy_error err;
    json_t *o;
    (void)state;
    dspy_signature *sig = sig_of("q -> answer, n: int", false);
    o = parse(DSPY_ADAPTER_JSON, sig,
              "Sure! ```json\n{\"answer\": \"Paris\", \"n\": \"3\", \"extra\": 1}\n``` Done.",
              DSPY_OK, &err);
    assert_json(o, "{\"answer\":\"Paris\",\"n\":3}");
    json_decref(o);
    o = parse(DSPY_ADAPTER_JSON, sig, "{'answer': [1, 'a'], 'n': 2.0,}", DSPY_OK, &err);
    assert_json(o, "{\"answer\":\"[1, 'a']\",\"n\":2}");
    json_decref(o);
    o = parse(DSPY_ADAPTER_JSON, sig, "no json here", DSPY_EADAPTER, &err);
    assert_string_equal(err.message,
                        "LM response cannot be serialized to a JSON object.\n\nAdapter JSONAdapter "
                        "failed to parse the LM response. \n\nLM Response: no json here \n\n"
                        "Expected to find output fields in the LM response: [answer, n] \n\n");
    o = parse(DSPY_ADAPTER_JSON, sig, "text {\"answer\": \"x\"} more", DSPY_EADAPTER, &err);
    assert_non_null(strstr(err.message, "LM Response: text {\"answer\": \"x\"} more \n\n"));
    assert_non_null(strstr(err.message, "Actual output fields parsed from the LM response: "
                                        "[answer] \n\n"));
    dspy_signature_free(sig);

    sig = sig_of("q -> a", false);
    json_t *rf = dspy_adapter_response_format(DSPY_ADAPTER_JSON, sig);
    assert_json(rf, "{\"type\":\"json_object\"}");
    json_decref(rf);
    assert_null(dspy_adapter_response_format(DSPY_ADAPTER_CHAT, sig));
    dspy_signature_free(sig);
    assert_string_equal(dspy_adapter_name(DSPY_ADAPTER_JSON), "json");
    assert_int_equal(dspy_adapter_from_name("chat"), DSPY_ADAPTER_CHAT);
    assert_int_equal(dspy_adapter_from_name("JSONAdapter"), DSPY_ADAPTER_JSON);
    assert_int_equal(dspy_adapter_from_name("xml"), -1);
}

static void hostile_text_is_bounded(void **state)
{
    struct dspy_error err;
    size_t n = 1 << 20;
    char *big = malloc(n + 1);
    json_t *o = NULL;
    (void)state;
    dspy_signature *sig = sig_of("q -> a: list[Any], b: dict[str, Any]", false);
    const char *pattern[] = { "[", "{", "{\"a\":", "[[ ## a ## ]]\n", "\xFF\xFE", "'" };
    for (size_t p = 0; p < sizeof(pattern) / sizeof(pattern[0]); p++) {
        size_t k = strlen(pattern[p]);
        for (size_t i = 0; i < n; i++)
            big[i] = pattern[p][i % k];
        big[n] = '\0';
        for (int kind = 0; kind < 2; kind++) {
            dspy_status rc = dspy_adapter_parse((enum dspy_adapter_kind)kind, sig, big, n, &o,
                                                &err);
            assert_true(rc == DSPY_OK || rc == DSPY_EADAPTER);
            if (!rc)
                json_decref(o);
            else
                assert_true(strlen(err.message) < sizeof(err.message));
        }
    }
    /* a long LM response is shortened, and the error keeps DSPy's closing lines */
    memset(big, 'x', 5000);
    big[5000] = '\0';
    assert_int_equal(dspy_adapter_parse(DSPY_ADAPTER_CHAT, sig, big, 5000, &o, &err),
                     DSPY_EADAPTER);
    assert_non_null(strstr(err.message, "xxx... \n\nExpected to find output fields in the LM "
                                        "response: [a, b] \n\n"));
    free(big);
    dspy_signature_free(sig);
}

static long alloc_budget = -1;
static void *fail_malloc(size_t n)
{
    if (alloc_budget == 0)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return malloc(n);
}
static void *fail_realloc(void *p, size_t n)
{
    if (alloc_budget == 0)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return realloc(p, n);
}

static void survives_every_allocation_failure(void **state)
{
    const struct dspy_allocator hooks = { fail_malloc, fail_realloc, free };
    const char *completions[] = {
        "[[ ## reasoning ## ]]\nhm\n[[ ## a ## ]]\n['x', 'y']\n[[ ## b ## ]]\n{'k': (1, 2)}",
        "```json\n{\"reasoning\": \"r\", \"a\": \"['x']\", \"b\": {\"k\": [1, 2]}, \"z\": 0}\n```",
    };
    (void)state;
    dspy_signature *sig = sig_of("q, ctx -> a: list[str], b: dict[str, tuple[int, ...]]", true);
    json_t *demos = load("[{\"q\": \"x\", \"a\": [\"y\"]}, {\"q\": \"1\", \"ctx\": \"c\", "
                         "\"reasoning\": \"r\", \"a\": [], \"b\": {}}]");
    json_t *inputs = load("{\"q\": \"hello\", \"ctx\": [\"one\", \"two\\nthree\"]}");
    dspy_set_allocator(&hooks);
    for (int kind = 0; kind < 2; kind++) {
        for (long n = 0;; n++) {
            struct dspy_error err;
            json_t *msgs = NULL, *out = NULL;
            alloc_budget = n;
            dspy_status rc = dspy_adapter_format((enum dspy_adapter_kind)kind, sig, demos, inputs,
                                                 &msgs, &err);
            if (!rc)
                rc = dspy_adapter_parse((enum dspy_adapter_kind)kind, sig, completions[kind],
                                        strlen(completions[kind]), &out, &err);
            bool done = alloc_budget > 0;
            alloc_budget = -1;
            json_decref(msgs);
            json_decref(out);
            if (rc && rc != DSPY_ENOMEM)
                fail_msg("kind %d, allocation %ld: rc %d (%s)", kind, n, rc, err.message);
            if (done) {
                assert_int_equal(rc, DSPY_OK);
                break;
            }
        }
    }
    dspy_set_allocator(NULL);
    json_decref(demos);
    json_decref(inputs);
    dspy_signature_free(sig);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(predict_chat_matches_golden),
        cmocka_unit_test(cot_demos_match_golden),
        cmocka_unit_test(json_adapter_matches_golden),
        cmocka_unit_test(values_render_as_python_does),
        cmocka_unit_test(type_notes_and_schema),
        cmocka_unit_test(chat_parse_quirks),
        cmocka_unit_test(json_parse_behaviour),
        cmocka_unit_test(hostile_text_is_bounded),
        cmocka_unit_test(survives_every_allocation_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
