/* Unit tests for the model capability table: which model names get structured outputs, as
 * litellm's supports_response_schema answers for them (each expectation checked against
 * litellm 1.110), and the handle's auto/on/off setting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dspyc/dspyc.h>

static void names_resolve_as_litellm_resolves_them(void **state)
{
    (void)state;
    static const struct {
        const char *model;
        bool schema;
    } cases[] = {
        { "openai/gpt-4o-mini", true },
        { "gpt-4o-mini", true },
        { "openai/openai/gpt-4o", true },
        { "openai/GPT-4O-MINI", true },
        { "openai/gpt-4o-2024-08-06", true },
        { "openai/gpt-4o-2024-05-13", false }, /* listed as false: the stem is not tried */
        { "openai/gpt-4o-mini-2099-01-01", true },
        { "openai/gpt-4o-mini-20240718", false },
        { "openai/ft:gpt-4o-mini-2024-07-18:org::abc", true },
        { "openai/ft:gpt-4o-mini-2024-07-18:a:b", false },
        { "openai/ft:gpt-3.5-turbo:org:suffix:id", false },
        { "openai/gpt-5", true },
        { "openai/o1-mini", false },
        { "openai/gpt-4-turbo", false },
        { "openai/dspyc-sim", false },
        { "openai/gpt-4o-mini-foo", false },
        { "hosted_vllm/gpt-4o", false },
        { "", false },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (dspy_model_supports_response_schema(cases[i].model) != cases[i].schema)
            fail_msg("%s: want %d", cases[i].model, cases[i].schema);
    assert_false(dspy_model_supports_response_schema(NULL));
}

static bool handle_says(const char *model, enum dspy_structured_outputs mode)
{
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    dspy_lm *lm = NULL;
    o.base_url = "http://127.0.0.1:9/v1";
    o.model = model;
    o.structured_outputs = mode;
    assert_int_equal(dspy_lm_new(&o, &lm, NULL), DSPY_OK);
    bool on = dspy_lm_structured_outputs(lm);
    dspy_lm_free(lm);
    return on;
}

static void the_setting_overrides_the_table(void **state)
{
    (void)state;
    assert_true(handle_says("openai/gpt-4o-mini", DSPY_STRUCTURED_AUTO));
    assert_false(handle_says("openai/dspyc-sim", DSPY_STRUCTURED_AUTO));
    assert_true(handle_says("openai/dspyc-sim", DSPY_STRUCTURED_ON));
    assert_false(handle_says("openai/gpt-4o-mini", DSPY_STRUCTURED_OFF));
    assert_false(dspy_lm_structured_outputs(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_resolve_as_litellm_resolves_them),
        cmocka_unit_test(the_setting_overrides_the_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
