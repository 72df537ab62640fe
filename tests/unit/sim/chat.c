/* Unit tests of the simulator's chat-request reader (sim layer, sim_chat.c): message lists,
 * content given as arrays of parts (text and images), and the 400 answers' param, code and
 * message for requests OpenAI refuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "sim/sim_int.h"

static bool parse(const char *json, struct dspy__sim_chat *c, struct dspy__sim_bad *why,
                  json_t **body)
{
    *body = json_loads(json, 0, NULL);
    assert_non_null(*body);
    dspy__sim_chat_init(c);
    memset(why, 0, sizeof(*why));
    return dspy__sim_chat_parse(*body, c, why);
}

static bool text_is(struct dspy__sim_view v, const char *s)
{
    return v.p && v.n == strlen(s) && !memcmp(v.p, s, v.n);
}

/* Fuzzing found: a user message whose content is only an image part has no text, and its
 * view was NULL + 0 (undefined; fatal under UBSan). It must be an empty text. */
static void test_image_only_content_is_an_empty_text(void **state)
{
    (void)state;
    struct dspy__sim_chat c;
    struct dspy__sim_bad why;
    json_t *body;
    assert_true(parse("{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": "
                      "[{\"type\": \"image_url\", \"image_url\": {\"url\": \"x\"}}]}]}",
                      &c, &why, &body));
    assert_int_equal(c.n_msgs, 1);
    assert_int_equal(c.images, 1);
    assert_int_equal(c.msgs[0].role, DSPY__SIM_ROLE_USER);
    assert_non_null(c.msgs[0].text.p);
    assert_int_equal(c.msgs[0].text.n, 0);
    struct dspy__sim_prompt p;
    dspy__sim_prompt_parse(&p, c.msgs, c.n_msgs);
    assert_int_equal(p.adapter, DSPY__SIM_ADAPTER_NONE);
    dspy__sim_prompt_release(&p);
    dspy__sim_chat_release(&c);
    json_decref(body);
}

static void test_text_parts_are_joined(void **state)
{
    (void)state;
    struct dspy__sim_chat c;
    struct dspy__sim_bad why;
    json_t *body;
    assert_true(parse("{\"model\": \"m\", \"n\": 3, \"messages\": ["
                      "{\"role\": \"developer\", \"content\": \"sys\"},"
                      "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"a\"},"
                      "{\"type\": \"image_url\"}, {\"type\": \"text\", \"text\": \"b\"}]},"
                      "{\"role\": \"assistant\", \"content\": null}]}",
                      &c, &why, &body));
    assert_int_equal(c.n, 3);
    assert_int_equal(c.n_msgs, 3);
    assert_int_equal(c.msgs[0].role, DSPY__SIM_ROLE_SYSTEM);
    assert_true(text_is(c.msgs[0].text, "sys"));
    assert_true(text_is(c.msgs[1].text, "a\nb"));
    assert_true(text_is(c.msgs[2].text, ""));
    assert_int_equal(c.images, 1);
    dspy__sim_chat_release(&c);
    json_decref(body);
}

static void test_refusals_say_what_and_where(void **state)
{
    (void)state;
    static const struct {
        const char *body, *param, *code, *says;
    } cases[] = {
        { "{\"messages\": []}", "model", "missing_required_parameter", "'model'" },
        { "{\"model\": \"m\", \"messages\": []}", "messages", "invalid_value",
          "must not be empty" },
        { "{\"model\": \"m\", \"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}",
          "messages[0].role", "invalid_value", "'role'" },
        { "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": 5}]}",
          "messages[0].content", "invalid_type", "an integer" },
        { "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", "
          "\"content\": [{\"text\": \"x\"}]}]}",
          "messages[0].content", "invalid_value", "'type'" },
        { "{\"model\": \"m\", \"n\": 129, "
          "\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}",
          "n", "invalid_value", "[1, 128]" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct dspy__sim_chat c;
        struct dspy__sim_bad why;
        json_t *body;
        assert_false(parse(cases[i].body, &c, &why, &body));
        assert_string_equal(why.param, cases[i].param);
        assert_string_equal(why.code, cases[i].code);
        assert_non_null(strstr(why.message, cases[i].says));
        dspy__sim_chat_release(&c);
        json_decref(body);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_image_only_content_is_an_empty_text),
        cmocka_unit_test(test_text_parts_are_joined),
        cmocka_unit_test(test_refusals_say_what_and_where),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
