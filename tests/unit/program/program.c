/* Unit tests for programs: the program file format (every key, and errors that name the
 * file, line and key), DSPy state names, the inputs a program needs, and running
 * predictors in order over one record through the LM transport hook. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dspyc/dspyc.h>

struct script {
    const char *replies[4];
    int calls;
    json_t *bodies[4];
};

static dspy_status scripted(void *userdata, const char *url, const char *body, size_t body_len,
                            long *http_status, char **response, size_t *response_len,
                            struct dspy_error *err)
{
    struct script *s = userdata;
    (void)url;
    (void)err;
    int i = s->calls++;
    assert_true(i < 4);
    s->bodies[i] = json_loadb(body, body_len, 0, NULL);
    /* Written by hand, not with jansson, so that it works while allocations fail. Replies
     * here need no escapes but newlines, quotes and backslashes. */
    char text[512], content[256];
    size_t n = 0;
    for (const char *c = s->replies[i] ? s->replies[i] : ""; *c && n < sizeof(content) - 2; c++) {
        if (*c == '\n' || *c == '"' || *c == '\\')
            content[n++] = '\\';
        content[n++] = *c == '\n' ? 'n' : *c;
    }
    content[n] = '\0';
    snprintf(text, sizeof(text),
             "{\"choices\":[{\"message\":{\"content\":\"%s\"}}],\"usage\":{\"prompt_tokens\":3,"
             "\"completion_tokens\":1,\"total_tokens\":4}}",
             content);
    *http_status = 200;
    *response_len = strlen(text);
    *response = dspy_strdup(text);
    return *response ? DSPY_OK : DSPY_ENOMEM;
}

static dspy_lm *script_lm(struct script *s)
{
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    dspy_lm *lm = NULL;
    o.base_url = "http://lm.test/v1";
    o.model = "m";
    o.transport = scripted;
    o.transport_userdata = s;
    assert_int_equal(dspy_lm_new(&o, &lm, NULL), DSPY_OK);
    return lm;
}

static void script_release(struct script *s)
{
    for (int i = 0; i < s->calls; i++)
        json_decref(s->bodies[i]);
}

static char tmp_path[64];

/* Write `text` to a temporary file and load it as a program. */
static dspy_status load_text(const char *text, dspy_program **p, struct dspy_error *err)
{
    snprintf(tmp_path, sizeof(tmp_path), "/tmp/dspyc-program-XXXXXX");
    int fd = mkstemp(tmp_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    *p = NULL;
    dspy_status rc = dspy_program_load(tmp_path, p, err);
    unlink(tmp_path);
    return rc;
}

static const char FULL[] =
    "{\n"
    "  \"name\": \"qa\",\n"
    "  \"description\": \"search, then answer\",\n"
    "  \"adapter\": \"chat\",\n"
    "  \"lm\": {\"model\": \"openai/gpt-4o-mini\", \"temperature\": 0.0, \"max_tokens\": 500},\n"
    "  \"predictors\": [\n"
    "    {\"name\": \"gen_query\", \"module\": \"predict\", \"signature\": \"question -> query\",\n"
    "     \"instructions\": \"Write a search query.\",\n"
    "     \"demos\": [{\"question\": \"Q?\", \"query\": \"q\"}],\n"
    "     \"fields\": {\"query\": {\"desc\": \"a short query\", \"prefix\": \"Search:\"}},\n"
    "     \"config\": {\"temperature\": 0.3}},\n"
    "    {\"name\": \"answer\", \"module\": \"cot\", \"adapter\": \"json\",\n"
    "     \"signature\": \"query, question -> answer\"}\n"
    "  ]\n"
    "}\n";

static void full_program_file(void **state)
{
    (void)state;
    dspy_program *p;
    struct dspy_error err;
    if (load_text(FULL, &p, &err))
        fail_msg("%s", err.message);
    assert_int_equal(dspy_program_count(p), 2);
    assert_string_equal(dspy_program_model(p), "openai/gpt-4o-mini");
    assert_string_equal(dspy_program_state_name(p, 0), "gen_query");
    assert_string_equal(dspy_program_state_name(p, 1), "answer.predict");
    assert_null(dspy_program_state_name(p, 2));
    dspy_module *g = dspy_program_module(p, 0), *a = dspy_program_module(p, 1);
    assert_string_equal(dspy_signature_instructions(dspy_module_signature(g)),
                        "Write a search query.");
    assert_int_equal(json_array_size(dspy_module_demos(g)), 1);
    const struct dspy_field *q = dspy_signature_field(dspy_module_signature(g), 1);
    assert_string_equal(q->desc, "a short query");
    assert_string_equal(q->prefix, "Search:");
    assert_int_equal(dspy_module_adapter(g), DSPY_ADAPTER_CHAT);
    assert_int_equal(dspy_module_adapter(a), DSPY_ADAPTER_JSON);
    assert_int_equal(dspy_module_kind(a), DSPY_MODULE_COT);

    json_t *inputs = dspy_program_inputs(p);
    assert_int_equal(json_array_size(inputs), 1);
    assert_string_equal(json_string_value(json_array_get(inputs, 0)), "question");
    json_decref(inputs);

    /* Run it: the second predictor sees the first one's output. */
    struct script s = { .replies = { "[[ ## query ## ]]\ncapital france",
                                     "{\"reasoning\": \"It is Paris.\", \"answer\": \"Paris\"}" } };
    dspy_lm *lm = script_lm(&s);
    json_t *in = json_pack("{s:s}", "question", "Capital of France?"), *out = NULL;
    struct dspy_call_info info;
    if (dspy_program_call(p, lm, in, NULL, &out, &info, &err))
        fail_msg("%s", err.message);
    assert_string_equal(json_string_value(json_object_get(out, "query")), "capital france");
    assert_string_equal(json_string_value(json_object_get(out, "answer")), "Paris");
    assert_string_equal(json_string_value(json_object_get(out, "reasoning")), "It is Paris.");
    assert_null(json_object_get(out, "question"));
    assert_int_equal(info.lm_calls, 2);
    assert_int_equal(info.usage.total_tokens, 8);
    /* Predictor config over the program's lm defaults. */
    assert_true(json_real_value(json_object_get(s.bodies[0], "temperature")) == 0.3);
    assert_int_equal(json_integer_value(json_object_get(s.bodies[0], "max_tokens")), 500);
    assert_true(json_real_value(json_object_get(s.bodies[1], "temperature")) == 0.0);
    const char *user = json_string_value(
        json_object_get(json_array_get(json_object_get(s.bodies[1], "messages"), 1), "content"));
    assert_non_null(strstr(user, "capital france"));
    json_decref(out);

    /* A failing predictor is named. */
    struct script s2 = { .replies = { "[[ ## query ## ]]\nq", "{}", "{}" } };
    dspy_lm *lm2 = script_lm(&s2);
    assert_int_equal(dspy_program_call(p, lm2, in, NULL, &out, &info, &err), DSPY_EADAPTER);
    assert_null(out);
    assert_non_null(strstr(err.message, "predictor answer: "));
    assert_true(info.lm_calls >= 2);

    json_decref(in);
    dspy_lm_free(lm);
    dspy_lm_free(lm2);
    script_release(&s);
    script_release(&s2);
    dspy_program_free(p);
}

static void lone_predictor_names(void **state)
{
    (void)state;
    dspy_program *p;
    struct dspy_error err;
    assert_int_equal(load_text("{\"predictors\": [{\"signature\": \"q -> a\"}]}", &p, &err),
                     DSPY_OK);
    assert_string_equal(dspy_program_state_name(p, 0), "self");
    assert_null(dspy_program_model(p));
    dspy_program_free(p);
    assert_int_equal(load_text("{\"predictors\": [{\"module\": \"ChainOfThought\", "
                               "\"signature\": \"q -> a\"}]}",
                               &p, &err),
                     DSPY_OK);
    assert_string_equal(dspy_program_state_name(p, 0), "predict");
    dspy_program_free(p);
    assert_int_equal(load_text("{\"predictors\": [{\"name\": \"answer\", \"module\": \"cot\", "
                               "\"signature\": \"q -> a\"}]}",
                               &p, &err),
                     DSPY_OK);
    assert_string_equal(dspy_program_state_name(p, 0), "answer.predict");
    dspy_program_free(p);
    assert_null(dspy_program_single(NULL));
}

static void errors_name_file_line_and_key(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        dspy_status code;
        long line;
        const char *says;
    } cases[] = {
        { "{\n  \"name\": \"x\",\n  \"predictor\": []\n}", DSPY_EINVAL, 3,
          "unknown key \"predictor\" in a program" },
        { "{\"predictors\": [\n  {\"signature\": \"q -> a\",\n   \"demoz\": []}\n]}", DSPY_EINVAL,
          3, "predictors[0]: unknown key \"demoz\"" },
        { "{\"predictors\": [{\"name\": \"a\"}]}", DSPY_EINVAL, 1, "needs a \"signature\"" },
        { "{\"predictors\": [{\"signature\": \"q a\"}]}", DSPY_EPARSE, 1, "invalid signature" },
        { "{\"predictors\": [{\"name\": \"a\", \"signature\": \"q -> a\"},\n"
          "                {\"name\": \"a\", \"signature\": \"a -> b\"}]}",
          DSPY_EINVAL, 2, "unique" },
        { "{\"predictors\": [{\"signature\": \"q -> a\"}, {\"signature\": \"a -> b\"}]}",
          DSPY_EINVAL, 1, "needs a \"name\"" },
        { "{\"predictors\": [{\"module\": \"react\", \"signature\": \"q -> a\"}]}", DSPY_EINVAL, 1,
          "\"module\" must be" },
        { "{\"adapter\": \"xml\", \"predictors\": [{\"signature\": \"q -> a\"}]}", DSPY_EINVAL, 1,
          "\"adapter\"" },
        { "{\"predictors\": [{\"signature\": \"q -> a\", \"config\": {\"n\": 0}}]}", DSPY_EINVAL, 1,
          "predictors[0].config: \"n\" must be" },
        { "{\"predictors\": [{\"signature\": \"q -> a\", \"config\": {\"temp\": 1}}]}", DSPY_EINVAL,
          1, "unknown key \"temp\"" },
        { "{\"lm\": {\"model\": 5}, \"predictors\": [{\"signature\": \"q -> a\"}]}", DSPY_EINVAL, 1,
          "lm: \"model\" must be" },
        { "{\"predictors\": [{\"signature\": \"q -> a\",\n"
          " \"fields\": {\"x\": {\"desc\": \"d\"}}}]}",
          DSPY_ENOTFOUND, 2, "no field \"x\"" },
        { "{\"predictors\": [{\"signature\": \"q -> a\", \"fields\": {\"a\": {\"dsc\": \"d\"}}}]}",
          DSPY_EINVAL, 1, "unknown key \"dsc\"" },
        { "{\"predictors\": [{\"signature\": \"q -> a\", \"demos\": [1]}]}", DSPY_EINVAL, 1,
          "demos[0]" },
        { "{\"predictors\": []}", DSPY_EINVAL, 1, "1 to 256" },
        { "{}", DSPY_EINVAL, -1, "needs \"predictors\"" },
        { "[]", DSPY_EINVAL, -1, "must hold a JSON object" },
        { "{\"predictors\": [\n{\"signature\": \"q -> a\",}]}", DSPY_EPARSE, 2, "invalid JSON" },
        { "{\"name\": \"a\", \"name\": \"b\", \"predictors\": []}", DSPY_EPARSE, 1, "duplicate" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        dspy_program *p;
        struct dspy_error err;
        dspy_status rc = load_text(cases[i].text, &p, &err);
        if (rc != cases[i].code || !strstr(err.message, cases[i].says) ||
            (cases[i].line > 0 && err.line != cases[i].line))
            fail_msg("case %zu: rc %d line %ld message \"%s\"", i, rc, err.line, err.message);
        assert_null(p);
        assert_string_equal(err.file, tmp_path);
        assert_non_null(strstr(err.message, tmp_path));
    }
    struct dspy_error err;
    dspy_program *p = NULL;
    assert_int_equal(dspy_program_load("/nonexistent/program.json", &p, &err), DSPY_EIO);
    assert_non_null(strstr(err.message, "/nonexistent/program.json"));
}

static void from_json_without_text(void **state)
{
    (void)state;
    json_t *spec = json_pack("{s:[{s:s, s:i}]}", "predictors", "signature", "q -> a", "extra", 1);
    dspy_program *p = NULL;
    struct dspy_error err;
    assert_int_equal(dspy_program_from_json(spec, "inline", &p, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "inline: predictors[0]: unknown key \"extra\""));
    assert_string_equal(err.field, "extra");
    assert_int_equal(err.line, -1);
    json_decref(spec);
}

/* ---- allocation failures ------------------------------------------------------------- */

static long alloc_budget = -1; /* allocations left before they fail; -1 = unlimited */

static void *failing_malloc(size_t n)
{
    if (alloc_budget == 0)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return malloc(n);
}

static void *failing_realloc(void *p, size_t n)
{
    if (alloc_budget == 0)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return realloc(p, n);
}

/* Load a program, apply a state, dump it and run it once, failing the k-th allocation:
 * every step must fail cleanly (ASan checks for leaks) or succeed. Returns whether the
 * whole run succeeded. */
static bool run_with_budget(long k)
{
    static const char spec_text[] =
        "{\"predictors\": [{\"name\": \"gen_query\", \"signature\": \"question -> query\","
        " \"demos\": [{\"question\": \"q\", \"query\": \"k\"}]},"
        " {\"name\": \"answer\", \"module\": \"cot\", \"signature\": \"query -> answer\"}]}";
    struct script s = { .replies = { "[[ ## query ## ]]\nq1",
                                     "[[ ## reasoning ## ]]\nr\n\n[[ ## answer ## ]]\na" } };
    struct dspy_allocator failing = { failing_malloc, failing_realloc, free };
    dspy_program *p = NULL;
    dspy_lm *lm = NULL;
    json_t *spec = NULL, *state = NULL, *in = NULL, *out = NULL;
    bool ok = false;
    dspy_set_allocator(&failing);
    alloc_budget = k;
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    o.base_url = "http://lm.test/v1";
    o.model = "m";
    o.transport = scripted;
    o.transport_userdata = &s;
    if (!(spec = json_loads(spec_text, 0, NULL)) || dspy_program_from_json(spec, "t", &p, NULL))
        goto out;
    if (!(state = dspy_program_dump_state(p)) || dspy_program_apply_state(p, state, NULL))
        goto out;
    if (dspy_lm_new(&o, &lm, NULL) || !(in = json_pack("{s:s}", "question", "Q?")))
        goto out;
    ok = !dspy_program_call(p, lm, in, NULL, &out, NULL, NULL);
out:
    alloc_budget = -1;
    json_decref(out);
    json_decref(in);
    json_decref(state);
    json_decref(spec);
    dspy_lm_free(lm);
    dspy_program_free(p);
    for (int i = 0; i < s.calls; i++)
        json_decref(s.bodies[i]);
    dspy_set_allocator(NULL);
    return ok;
}

static void survives_allocation_failures(void **state)
{
    (void)state;
    long k = 0;
    while (!run_with_budget(k))
        k++;
    assert_true(k > 50); /* the run needs many allocations; each one failed once above */
}

/* A copy changes independently of its original (the optimizers' candidates). */
static void copies_are_independent(void **state)
{
    (void)state;
    json_t *spec = json_loads("{\"predictors\": [{\"name\": \"a\", \"signature\": \"q -> x\"},"
                              " {\"name\": \"b\", \"module\": \"cot\", \"signature\": "
                              "\"x -> y\", \"instructions\": \"Do it.\"}]}",
                              0, NULL);
    dspy_program *p = NULL;
    assert_int_equal(dspy_program_from_json(spec, "t", &p, NULL), DSPY_OK);
    dspy_program *c = dspy_program_copy(p);
    assert_non_null(c);
    json_t *s1 = dspy_program_dump_state(p), *s2 = dspy_program_dump_state(c);
    assert_true(json_equal(s1, s2));
    assert_string_equal(dspy_program_state_name(c, 1), "b.predict");
    json_t *demos = json_pack("[{s:s, s:s}]", "x", "1", "y", "2");
    assert_int_equal(dspy_module_set_demos(dspy_program_module(c, 1), demos), DSPY_OK);
    assert_int_equal(dspy_module_set_instructions(dspy_program_module(c, 1), "Other."), DSPY_OK);
    json_t *s3 = dspy_program_dump_state(p);
    assert_true(json_equal(s1, s3)); /* the original is untouched */
    assert_int_equal(json_array_size(dspy_module_demos(dspy_program_module(p, 1))), 0);
    assert_string_equal(dspy_signature_instructions(
                            dspy_module_signature(dspy_program_module(p, 1))),
                        "Do it.");
    assert_int_equal(dspy_module_kind(dspy_program_module(c, 1)), DSPY_MODULE_COT);
    json_decref(s1);
    json_decref(s2);
    json_decref(s3);
    json_decref(demos);
    json_decref(spec);
    dspy_program_free(c);
    dspy_program_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_program_file),
        cmocka_unit_test(lone_predictor_names),
        cmocka_unit_test(errors_name_file_line_and_key),
        cmocka_unit_test(from_json_without_text),
        cmocka_unit_test(survives_allocation_failures),
        cmocka_unit_test(copies_are_independent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
