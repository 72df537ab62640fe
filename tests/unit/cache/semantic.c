/* Unit tests of the semantic cache level without the model: the guards by table (each kind
 * of change that must miss, and paraphrases and typos that must pass), partition ids (every
 * field but the projected text changes them; a fixed vector), projections, option checks,
 * and the level degrading to a miss when the model files are missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <dspyc/cache.h>

struct guard_case {
    const char *a, *b;
    unsigned want; /* 0 = may hit */
};

static const struct guard_case guard_cases[] = {
    /* must pass: paraphrases, typos, case, punctuation */
    { "How do I cancel my subscription?", "how do i cancel my subscription please", 0 },
    { "How do I cancel my subscription?", "I'd like to end my subscription, how do I do that?", 0 },
    { "What is the capital of France?", "what's the capital city of France", 0 },
    { "How do I reset my password?", "How do I reset my pasword?", 0 },
    { "Explain photosynthesis simply.", "Can you explain photosynthesis in simple terms?", 0 },
    { "Where is Paris?", "where is paris", 0 },
    /* numbers */
    { "Track order 48213", "Track order 48231", DSPY_SEMANTIC_GUARD_NUMBER },
    { "Convert $5 to euros", "Convert $50 to euros", DSPY_SEMANTIC_GUARD_NUMBER },
    { "What happened in 1989?", "What happened in 1998?", DSPY_SEMANTIC_GUARD_NUMBER },
    { "Install python 3.11", "Install python 3.12", DSPY_SEMANTIC_GUARD_NUMBER },
    /* negation */
    { "Cancel my subscription", "Don't cancel my subscription", DSPY_SEMANTIC_GUARD_NEGATION },
    { "Is ibuprofen safe with alcohol?", "Is ibuprofen unsafe with alcohol?",
      DSPY_SEMANTIC_GUARD_NEGATION },
    { "Is this code correct?", "Is this code incorrect?", DSPY_SEMANTIC_GUARD_NEGATION },
    { "Should I take the job?", "Should I never take the job?", DSPY_SEMANTIC_GUARD_NEGATION },
    { "Which foods contain gluten?", "Which foods are without gluten?",
      DSPY_SEMANTIC_GUARD_NEGATION },
    { "I can log in", "I can't log in", DSPY_SEMANTIC_GUARD_NEGATION },
    /* dates */
    { "Is the store open on Saturday?", "Is the store open on Sunday?", DSPY_SEMANTIC_GUARD_DATE },
    { "weather today", "weather tomorrow", DSPY_SEMANTIC_GUARD_DATE },
    { "Flights to Rome in may", "Flights to Rome in june", DSPY_SEMANTIC_GUARD_DATE },
    /* entities */
    { "Issue a refund for Alice", "Issue a refund for Bob", DSPY_SEMANTIC_GUARD_ENTITY },
    { "What is the population of Spain?", "What is the population of Portugal?",
      DSPY_SEMANTIC_GUARD_ENTITY },
    { "Translate \"thank you\" to French", "Translate \"excuse me\" to French",
      DSPY_SEMANTIC_GUARD_ENTITY },
    /* scope */
    { "Show all my orders", "Show my last order", DSPY_SEMANTIC_GUARD_SCOPE },
    { "delete every file", "delete some file", DSPY_SEMANTIC_GUARD_SCOPE },
    /* antonyms */
    { "How do I turn on dark mode?", "How do I turn off dark mode?", DSPY_SEMANTIC_GUARD_ANTONYM },
    { "Should I buy the stock?", "Should I sell the stock?", DSPY_SEMANTIC_GUARD_ANTONYM },
    { "How do I enable two-factor login?", "How do I disable two-factor login?",
      DSPY_SEMANTIC_GUARD_ANTONYM },
    /* substitution: another action or object */
    { "How do I cancel my order?", "How do I track my order?", DSPY_SEMANTIC_GUARD_SUBSTITUTION },
    { "What are the steps to merge two git branches?",
      "What are the steps to fix two git branches?", DSPY_SEMANTIC_GUARD_SUBSTITUTION },
    { "I want to install a ceiling fan, how do I do that?",
      "I want to connect a ceiling fan, how do I do that?", DSPY_SEMANTIC_GUARD_SUBSTITUTION },
    { "How do I reset my router?", "How do I reset my modem?", DSPY_SEMANTIC_GUARD_SUBSTITUTION },
    { "How do I schedule a doctor's appointment?", "How do I reschedule a doctor's appointment?",
      DSPY_SEMANTIC_GUARD_SUBSTITUTION },
    { "How do I bake bread?", "How do I make bread?", DSPY_SEMANTIC_GUARD_SUBSTITUTION },
    /* not a substitution: synonyms, inflections, typos, framing, an added word */
    { "How do I fix a flat tire?", "How do I repair a flat tire?", 0 },
    { "How do I bake bread?", "How do I go about baking bread?", 0 },
    { "How do I cancel my order?", "How do I cancle my order?", 0 },
    { "How does the immune system work?", "how does the immune system function", 0 },
    { "Can you tell me how to reset my password?", "Please explain how to reset my password.", 0 },
    { "Steps to back up my phone?", "What's the best way to back up my phone?", 0 },
    { "How do I reset my password?", "How do I reset my password quickly?", 0 },
};

static void test_guard_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(guard_cases) / sizeof(guard_cases[0]); i++) {
        const struct guard_case *g = &guard_cases[i];
        unsigned ab = dspy_cache_semantic_guard(g->a, strlen(g->a), g->b, strlen(g->b),
                                                DSPY_SEMANTIC_GUARDS_ALL);
        unsigned ba = dspy_cache_semantic_guard(g->b, strlen(g->b), g->a, strlen(g->a),
                                                DSPY_SEMANTIC_GUARDS_ALL);
        if (ab != g->want || ba != g->want)
            fail_msg("case %zu \"%s\" / \"%s\": got %s/%s, want %s", i, g->a, g->b,
                     dspy_cache_semantic_guard_name(ab), dspy_cache_semantic_guard_name(ba),
                     dspy_cache_semantic_guard_name(g->want));
    }
}

static void test_guards_can_be_switched_off(void **state)
{
    (void)state;
    const char *a = "Track order 48213 for Alice", *b = "Track order 48231 for Bob";
    assert_int_equal(dspy_cache_semantic_guard(a, strlen(a), b, strlen(b),
                                               DSPY_SEMANTIC_GUARDS_ALL),
                     DSPY_SEMANTIC_GUARD_NUMBER);
    assert_int_equal(dspy_cache_semantic_guard(a, strlen(a), b, strlen(b),
                                               DSPY_SEMANTIC_GUARDS_ALL &
                                                   ~DSPY_SEMANTIC_GUARD_NUMBER),
                     DSPY_SEMANTIC_GUARD_ENTITY);
    assert_int_equal(dspy_cache_semantic_guard(a, strlen(a), b, strlen(b), 0), 0);
    a = "How do I cancel my order?";
    b = "How do I track my order?";
    assert_int_equal(dspy_cache_semantic_guard(a, strlen(a), b, strlen(b),
                                               DSPY_SEMANTIC_GUARDS_ALL &
                                                   ~DSPY_SEMANTIC_GUARD_SUBSTITUTION),
                     0);
    assert_string_equal(dspy_cache_semantic_guard_name(DSPY_SEMANTIC_GUARD_SUBSTITUTION),
                        "substitution");
    assert_string_equal(dspy_cache_semantic_guard_name(DSPY_SEMANTIC_GUARD_SCOPE), "scope");
    assert_string_equal(dspy_cache_semantic_guard_name(3), "");
}

static void test_guard_long_and_odd_inputs(void **state)
{
    (void)state;
    size_t n = 20000;
    char *a = malloc(n + 1), *b = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        a[i] = b[i] = (char)("word \"x' 'y\xc3\xa9 ."[i % 16]);
    a[n] = b[n] = 0;
    assert_int_equal(dspy_cache_semantic_guard(a, n, b, n, DSPY_SEMANTIC_GUARDS_ALL), 0);
    b[n - 3] = '7';
    /* beyond the words compared: a change that far into a long text is not seen */
    (void)dspy_cache_semantic_guard(a, n, b, n, DSPY_SEMANTIC_GUARDS_ALL);
    assert_int_equal(dspy_cache_semantic_guard("", 0, "", 0, DSPY_SEMANTIC_GUARDS_ALL), 0);
    assert_int_equal(dspy_cache_semantic_guard(NULL, 0, "x", 1, DSPY_SEMANTIC_GUARDS_ALL), 0);
    free(a);
    free(b);
}

static json_t *req(const char *model, double temp, const char *sys, const char *earlier,
                   const char *user)
{
    json_t *msgs = json_array();
    if (sys)
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content", sys));
    if (earlier) {
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", earlier));
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "assistant", "content", "ok"));
    }
    json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", user));
    return json_pack("{s:s,s:f,s:o}", "model", model, "temperature", temp, "messages", msgs);
}

static void part_of(json_t *r, const char *ns, struct dspy_cache_key *k, char **text)
{
    size_t len;
    assert_int_equal(dspy_cache_semantic_partition(r, ns, DSPY_SEMANTIC_LAST_USER, k, text, &len,
                                                   NULL),
                     DSPY_OK);
    assert_int_equal(strlen(*text), len);
    json_decref(r);
}

static void test_partition_covers_everything_but_the_text(void **state)
{
    (void)state;
    struct dspy_cache_key base, k;
    char *t, hex[33];
    part_of(req("m", 0.0, "sys", NULL, "How do I cancel?"), NULL, &base, &t);
    assert_string_equal(t, "How do I cancel?");
    dspy_free(t);
    /* the projected text does not change the partition */
    part_of(req("m", 0.0, "sys", NULL, "something else entirely"), NULL, &k, &t);
    assert_memory_equal(base.bytes, k.bytes, 16);
    dspy_free(t);
    /* a fixed vector: changing the partition's bytes changes this, and old records with it */
    dspy_cache_key_hex(&base, hex);
    assert_int_equal(strlen(hex), 32);
    struct {
        json_t *r;
        const char *ns;
    } other[] = {
        { req("m2", 0.0, "sys", NULL, "How do I cancel?"), NULL },
        { req("m", 0.7, "sys", NULL, "How do I cancel?"), NULL },
        { req("m", 0.0, "other sys", NULL, "How do I cancel?"), NULL },
        { req("m", 0.0, NULL, NULL, "How do I cancel?"), NULL },
        { req("m", 0.0, "sys", "an earlier turn", "How do I cancel?"), NULL },
        { req("m", 0.0, "sys", NULL, "How do I cancel?"), "tenant-b" },
    };
    json_object_set_new(other[0].r, "x", json_null()); /* and one more field anywhere */
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
        part_of(other[i].r, other[i].ns, &k, &t);
        if (!memcmp(base.bytes, k.bytes, 16))
            fail_msg("variant %zu shares the partition", i);
        dspy_free(t);
    }
    json_t *tools = req("m", 0.0, "sys", NULL, "How do I cancel?");
    json_object_set_new(tools, "tools", json_pack("[{s:s}]", "type", "function"));
    part_of(tools, NULL, &k, &t);
    assert_memory_not_equal(base.bytes, k.bytes, 16);
    dspy_free(t);
    /* the partition is not the exact key of the request */
    json_t *r = req("m", 0.0, "sys", NULL, "How do I cancel?");
    struct dspy_cache_key exact;
    assert_int_equal(dspy_cache_key_from_json(r, NULL, NULL, &exact, NULL), DSPY_OK);
    assert_memory_not_equal(base.bytes, exact.bytes, 16);
    json_decref(r);
}

static void test_projections(void **state)
{
    (void)state;
    struct dspy_cache_key k1, k2;
    char *t;
    size_t len;
    json_t *r = req("m", 0.0, "sys", "first question", "second question");
    assert_int_equal(dspy_cache_semantic_partition(r, NULL, DSPY_SEMANTIC_USER_TURNS, &k1, &t, &len,
                                                   NULL),
                     DSPY_OK);
    assert_string_equal(t, "first question\nsecond question");
    dspy_free(t);
    assert_int_equal(dspy_cache_semantic_partition(r, NULL, DSPY_SEMANTIC_ALL, &k2, &t, &len, NULL),
                     DSPY_OK);
    assert_string_equal(t, "system: sys\nuser: first question\nassistant: ok\n"
                           "user: second question");
    dspy_free(t);
    json_decref(r);
    /* content parts: the text parts joined */
    r = json_pack("{s:s,s:[{s:s,s:[{s:s,s:s},{s:s,s:s},{s:s,s:s}]}]}", "model", "m", "messages",
                  "role", "user", "content", "type", "text", "text", "look at", "type", "image_url",
                  "url", "x", "type", "text", "text", "this");
    assert_int_equal(dspy_cache_semantic_partition(r, NULL, DSPY_SEMANTIC_LAST_USER, &k1, &t, &len,
                                                   NULL),
                     DSPY_OK);
    assert_string_equal(t, "look at\nthis");
    dspy_free(t);
    json_decref(r);
    /* DSPy's adapter frame is left out of the projection */
    r = req("m", 0.0, "sys", NULL,
            "[[ ## question ## ]]\nWhat is 2+2?\n\n[[ ## context ## ]]\nmath\n\nRespond with "
            "the corresponding output fields, starting with the field `[[ ## answer ## ]]`, "
            "and then ending with the marker for `[[ ## completed ## ]]`.");
    assert_int_equal(dspy_cache_semantic_partition(r, NULL, DSPY_SEMANTIC_LAST_USER, &k1, &t, &len,
                                                   NULL),
                     DSPY_OK);
    assert_string_equal(t, "What is 2+2?\n\nmath");
    assert_int_equal(len, strlen(t));
    dspy_free(t);
    json_decref(r);
    /* nothing to project */
    r = json_pack("{s:s,s:[{s:s,s:s}]}", "model", "m", "messages", "role", "system", "content",
                  "x");
    assert_int_equal(dspy_cache_semantic_partition(r, NULL, DSPY_SEMANTIC_LAST_USER, &k1, &t, &len,
                                                   NULL),
                     DSPY_ENOTFOUND);
    assert_null(t);
    json_decref(r);
    r = json_pack("{s:s}", "model", "m");
    assert_int_equal(dspy_cache_semantic_partition(r, NULL, DSPY_SEMANTIC_LAST_USER, &k1, &t, &len,
                                                   NULL),
                     DSPY_ENOTFOUND);
    json_decref(r);
}

static void test_options_are_checked(void **state)
{
    (void)state;
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    dspy_cache *c = NULL;
    struct dspy_error err;
    o.levels = DSPY_CACHE_SEMANTIC;
    assert_int_equal(dspy_cache_new(&o, &c, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "exact level"));
    o.levels = DSPY_CACHE_L1 | DSPY_CACHE_SEMANTIC;
    o.semantic_threshold = 1.5;
    assert_int_equal(dspy_cache_new(&o, &c, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "semantic_threshold"));
    o.semantic_threshold = 0.8;
    o.semantic_projection = 7;
    assert_int_equal(dspy_cache_new(&o, &c, &err), DSPY_EINVAL);
    assert_null(c);
}

/* No model: every lookup misses, puts do nothing, the stats say so, nothing crashes. */
static void test_missing_model_is_a_miss(void **state)
{
    (void)state;
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    dspy_cache *c = NULL;
    struct dspy_cache_stats st;
    struct dspy_cache_key key = { { 1 } };
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    struct dspy_cache_semantic_hit hit;
    o.levels = DSPY_CACHE_L1 | DSPY_CACHE_SEMANTIC;
    o.embed_model = "/nonexistent/model-dir";
    assert_int_equal(dspy_cache_new(&o, &c, NULL), DSPY_OK);
    assert_true(dspy_cache_levels(c) & DSPY_CACHE_SEMANTIC);
    json_t *r = req("m", 0.0, "sys", NULL, "How do I cancel?");
    assert_int_equal(dspy_cache_put(c, &key, "v", 1, NULL, NULL), DSPY_OK);
    dspy_cache_semantic_put(c, r, &key, NULL);
    assert_int_equal(dspy_cache_semantic_get(c, r, NULL, &v, &hit), DSPY_ENOTFOUND);
    dspy_cache_stats(c, &st);
    assert_true(st.sem_unavailable);
    assert_int_equal(st.sem_entries, 0);
    assert_int_equal(st.sem_hits, 0);
    /* the opt-outs never even look */
    struct dspy_cache_ctl ctl = DSPY_CACHE_CTL_INIT;
    ctl.no_semantic = true;
    assert_int_equal(dspy_cache_semantic_get(c, r, &ctl, &v, &hit), DSPY_ENOTFOUND);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.sem_lookups, 1);
    json_t *sj = dspy_cache_stats_json(c);
    assert_true(json_is_true(json_object_get(json_object_get(sj, "semantic"), "unavailable")));
    json_decref(sj);
    json_decref(r);
    dspy_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_guard_table),
        cmocka_unit_test(test_guards_can_be_switched_off),
        cmocka_unit_test(test_guard_long_and_odd_inputs),
        cmocka_unit_test(test_partition_covers_everything_but_the_text),
        cmocka_unit_test(test_projections),
        cmocka_unit_test(test_options_are_checked),
        cmocka_unit_test(test_missing_model_is_a_miss),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
