/* Unit tests for DSPy saved-program state: files written by real DSPy 3.3.1 (bare Predict,
 * ChainOfThought, a two-predictor module; see tests/unit/program/data/) load and apply,
 * saving them again reproduces DSPy's bytes, and bad states fail with clear errors while
 * leaving the program as it was. */
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

#define DATA "tests/unit/program/data/"

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

static void spit(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static dspy_program *single(enum dspy_module_kind kind, const char *text)
{
    dspy_signature *sig = NULL;
    assert_int_equal(dspy_signature_parse(text, NULL, &sig, NULL), DSPY_OK);
    dspy_module *m = dspy_module_new(kind, sig, DSPY_ADAPTER_CHAT);
    dspy_signature_free(sig);
    dspy_program *p = dspy_program_single(m);
    assert_non_null(p);
    return p;
}

static dspy_program *rag(void)
{
    json_t *spec = json_loads("{\"predictors\": ["
                              "{\"name\": \"gen_query\", \"signature\": \"question -> query\"},"
                              "{\"name\": \"answer\", \"module\": \"cot\","
                              " \"signature\": \"context, question -> answer\"}]}",
                              0, NULL);
    dspy_program *p = NULL;
    struct dspy_error err;
    if (dspy_program_from_json(spec, "rag", &p, &err))
        fail_msg("%s", err.message);
    json_decref(spec);
    return p;
}

/* Save to a temporary file and compare with the DSPy-written original, byte for byte. */
static void assert_saves_as(const dspy_program *p, const char *original)
{
    char tmp[] = "/tmp/dspyc-state-XXXXXX";
    int fd = mkstemp(tmp);
    close(fd);
    struct dspy_error err;
    if (dspy_program_save_state(p, tmp, &err))
        fail_msg("save: %s", err.message);
    char *want = slurp(original), *got = slurp(tmp);
    assert_string_equal(got, want);
    free(want);
    free(got);
    unlink(tmp);
}

static void loads_bare_predict(void **state)
{
    (void)state;
    dspy_program *p = single(DSPY_MODULE_PREDICT, "question -> answer");
    struct dspy_error err;
    assert_string_equal(dspy_program_state_name(p, 0), "self");
    if (dspy_program_load_state(p, DATA "predict.json", &err))
        fail_msg("%s", err.message);
    dspy_module *m = dspy_program_module(p, 0);
    assert_string_equal(dspy_signature_instructions(dspy_module_signature(m)),
                        "Answer in one word.");
    const json_t *demos = dspy_module_demos(m);
    assert_int_equal(json_array_size(demos), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(demos, 1), "answer")),
                        "Paris");
    assert_true(json_is_true(json_object_get(json_array_get(demos, 1), "augmented")));
    assert_saves_as(p, DATA "predict.json");
    dspy_program_free(p);
}

static void loads_chain_of_thought(void **state)
{
    (void)state;
    dspy_program *p = single(DSPY_MODULE_COT, "question -> answer");
    struct dspy_error err;
    assert_string_equal(dspy_program_state_name(p, 0), "predict");
    if (dspy_program_load_state(p, DATA "cot.json", &err))
        fail_msg("%s", err.message);
    const json_t *demos = dspy_module_demos(dspy_program_module(p, 0));
    assert_int_equal(json_array_size(demos), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(demos, 0), "reasoning")),
                        "one and one");
    assert_saves_as(p, DATA "cot.json");
    dspy_program_free(p);
}

static void loads_two_predictors(void **state)
{
    (void)state;
    dspy_program *p = rag();
    struct dspy_error err;
    assert_int_equal(dspy_program_count(p), 2);
    assert_string_equal(dspy_program_state_name(p, 0), "gen_query");
    assert_string_equal(dspy_program_state_name(p, 1), "answer.predict");
    if (dspy_program_load_state(p, DATA "rag.json", &err))
        fail_msg("%s", err.message);
    const dspy_signature *sig = dspy_module_signature(dspy_program_module(p, 0));
    assert_string_equal(dspy_signature_instructions(sig),
                        "Write a search query.\n\nKeep it short: «é».");
    const json_t *demo = json_array_get(dspy_module_demos(dspy_program_module(p, 0)), 1);
    assert_true(json_real_value(json_object_get(demo, "score")) == 0.75);
    assert_true(json_is_null(json_object_get(demo, "meta")));
    assert_saves_as(p, DATA "rag.json");
    dspy_program_free(p);
}

static void dump_has_dspy_shape(void **state)
{
    (void)state;
    dspy_program *p = single(DSPY_MODULE_PREDICT, "question, k: int -> answer: list[str]");
    json_t *st = dspy_program_dump_state(p);
    const char *keys[] = { "traces", "train", "demos", "signature", "lm", "metadata" };
    size_t i = 0;
    const char *key;
    json_t *v;
    json_object_foreach(st, key, v) {
        assert_true(i < 6);
        assert_string_equal(key, keys[i++]);
    }
    json_t *fields = json_object_get(json_object_get(st, "signature"), "fields");
    assert_int_equal(json_array_size(fields), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(fields, 1), "prefix")),
                        "K:");
    assert_string_equal(json_string_value(
                            json_object_get(json_array_get(fields, 2), "description")),
                        "${answer}");
    assert_true(json_is_null(json_object_get(st, "lm")));
    /* written afresh: the newest DSPy dspyc matches */
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(st, "metadata"), "dependency_versions"),
                            "dspy")),
                        "3.4.1");
    json_decref(st);
    dspy_program_free(p);
}

/* A loaded state's metadata is written back as it came (a DSPy 3.3.1 file stays one), and
 * replaced by the next state applied. */
static void loaded_metadata_is_kept(void **state)
{
    (void)state;
    dspy_program *p = single(DSPY_MODULE_PREDICT, "question -> answer");
    struct dspy_error err;
    if (dspy_program_load_state(p, DATA "predict.json", &err))
        fail_msg("%s", err.message);
    json_t *st = dspy_program_dump_state(p);
    json_t *dv = json_object_get(json_object_get(st, "metadata"), "dependency_versions");
    assert_string_equal(json_string_value(json_object_get(dv, "dspy")), "3.3.1");
    json_object_set_new(dv, "dspy", json_string("9.9.9"));
    assert_int_equal(dspy_program_apply_state(p, st, &err), DSPY_OK);
    json_decref(st);
    st = dspy_program_dump_state(p);
    dv = json_object_get(json_object_get(st, "metadata"), "dependency_versions");
    assert_string_equal(json_string_value(json_object_get(dv, "dspy")), "9.9.9");
    json_decref(st);
    dspy_program_free(p);
}

/* The first predictor's instructions and demo count, to show a failed load changed nothing. */
static void assert_untouched(dspy_program *p)
{
    for (size_t i = 0; i < dspy_program_count(p); i++) {
        const dspy_module *m = dspy_program_module(p, i);
        assert_int_equal(json_array_size(dspy_module_demos(m)), 0);
        assert_non_null(
            strstr(dspy_signature_instructions(dspy_module_signature(m)), "Given the fields"));
    }
}

static dspy_status apply_text(dspy_program *p, const char *text, struct dspy_error *err)
{
    char tmp[] = "/tmp/dspyc-state-XXXXXX";
    int fd = mkstemp(tmp);
    close(fd);
    spit(tmp, text);
    dspy_status rc = dspy_program_load_state(p, tmp, err);
    unlink(tmp);
    return rc;
}

static void bad_states(void **state)
{
    (void)state;
    struct dspy_error err;
    dspy_program *p = rag();
    char *good = slurp(DATA "rag.json");

    /* A predictor the program does not have. */
    char *text = strdup(good);
    memcpy(strstr(text, "\"gen_query\""), "\"gen_qurey\"", 11);
    assert_int_equal(apply_text(p, text, &err), DSPY_ENOTFOUND);
    assert_non_null(strstr(err.message, "gen_qurey"));
    assert_non_null(strstr(err.message, "gen_query, answer.predict"));
    assert_int_equal(err.line, 2);
    assert_string_equal(err.field, "gen_qurey");
    free(text);
    assert_untouched(p);

    /* One predictor fine, the other broken: nothing applied. */
    text = strdup(good);
    char *second = strstr(text, "\"answer.predict\"");
    memcpy(strstr(second, "\"lm\""), "\"xx\"", 4);
    assert_int_equal(apply_text(p, text, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "unknown key \"xx\""));
    assert_non_null(strstr(err.message, "\"answer.predict\": unknown key \"xx\""));
    assert_true(err.line > 40);
    free(text);
    assert_untouched(p);

    /* Field count mismatch. */
    json_t *st = json_loads(good, 0, NULL);
    json_t *fields = json_object_get(json_object_get(json_object_get(st, "answer.predict"),
                                                     "signature"),
                                     "fields");
    json_array_remove(fields, 0);
    assert_int_equal(dspy_program_apply_state(p, st, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "3 fields but the program's has 4"));
    assert_untouched(p);

    /* Legacy DSPy 2.5 format. */
    json_object_set_new(json_object_get(st, "gen_query"), "extended_signature", json_object());
    assert_int_equal(dspy_program_apply_state(p, st, &err), DSPY_EUNSUPPORTED);
    assert_non_null(strstr(err.message, "extended_signature"));
    json_decref(st);

    /* A predictor missing from the state. */
    st = json_loads(good, 0, NULL);
    json_object_del(st, "answer.predict");
    assert_int_equal(dspy_program_apply_state(p, st, &err), DSPY_ENOTFOUND);
    assert_non_null(strstr(err.message, "answer.predict"));
    json_object_set_new(st, "answer.predict", json_pack("{s:[s]}", "demos", "x"));
    assert_int_equal(dspy_program_apply_state(p, st, &err), DSPY_EINVAL);
    json_decref(st);
    assert_untouched(p);

    /* Not JSON, with the position. */
    assert_int_equal(apply_text(p, "{\n  \"gen_query\": {,\n}", &err), DSPY_EPARSE);
    assert_int_equal(err.line, 2);
    assert_int_equal(apply_text(p, "[]", &err), DSPY_EINVAL);
    assert_int_equal(dspy_program_load_state(p, "/nonexistent/state.json", &err), DSPY_EIO);
    assert_untouched(p);

    /* The lone-Predict program given a named state says so. */
    dspy_program *bare = single(DSPY_MODULE_PREDICT, "question -> answer");
    assert_int_equal(dspy_program_load_state(bare, DATA "cot.json", &err), DSPY_ENOTFOUND);
    assert_non_null(strstr(err.message, "lone Predict"));
    /* The CoT program given a flat state. */
    dspy_program *cot = single(DSPY_MODULE_COT, "question -> answer");
    assert_int_equal(dspy_program_load_state(cot, DATA "predict.json", &err), DSPY_ENOTFOUND);
    assert_non_null(strstr(err.message, "lone Predict"));
    dspy_program_free(cot);
    dspy_program_free(bare);
    free(good);
    dspy_program_free(p);
}

static void demos_may_be_absent(void **state)
{
    (void)state;
    dspy_program *p = single(DSPY_MODULE_PREDICT, "question -> answer");
    json_t *demos = json_pack("[{s:s, s:s}]", "question", "q", "answer", "a");
    dspy_module_set_demos(dspy_program_module(p, 0), demos);
    json_decref(demos);
    json_t *st = json_pack("{s:{s:s, s:[{s:s, s:s}, {s:s, s:s}]}}", "signature", "instructions",
                           "New.", "fields", "prefix", "Q:", "description", "the question",
                           "prefix", "A:", "description", "${answer}");
    struct dspy_error err;
    assert_int_equal(dspy_program_apply_state(p, st, &err), DSPY_OK);
    const dspy_module *m = dspy_program_module(p, 0);
    assert_int_equal(json_array_size(dspy_module_demos(m)), 1);
    const struct dspy_field *f = dspy_signature_field(dspy_module_signature(m), 0);
    assert_string_equal(f->prefix, "Q:");
    assert_string_equal(f->desc, "the question");
    json_decref(st);
    dspy_program_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(loads_bare_predict),      cmocka_unit_test(loads_chain_of_thought),
        cmocka_unit_test(loads_two_predictors),    cmocka_unit_test(dump_has_dspy_shape),
        cmocka_unit_test(loaded_metadata_is_kept), cmocka_unit_test(bad_states),
        cmocka_unit_test(demos_may_be_absent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
