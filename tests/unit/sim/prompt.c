/* Unit tests of the simulator's prompt reading and answering (sim layer): DSPy
 * Chat and JSON adapter prompts captured from DSPy 3.3.1 (the fuzz corpus files), the
 * [[ ## field ## ]] block reader, typed answers, tokens, embeddings and base64. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim/sim_int.h"

/* A corpus file: messages separated by 0x1e; system, then user/assistant turns. */
struct fixture {
    char *text;
    struct dspy__sim_msg msgs[16];
    size_t n;
};

static void load(struct fixture *f, const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "tests/fuzz/corpus/sim_prompt/%s", name);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    f->text = calloc(1, 1 << 16);
    size_t len = fread(f->text, 1, (1 << 16) - 1, fp);
    fclose(fp);
    f->n = 0;
    char *p = f->text, *end = f->text + len;
    while (p <= end && f->n < 16) {
        char *sep = memchr(p, 0x1e, (size_t)(end - p));
        char *e = sep ? sep : end;
        enum dspy__sim_role role = f->n == 0  ? DSPY__SIM_ROLE_SYSTEM
                                   : f->n % 2 ? DSPY__SIM_ROLE_USER
                                              : DSPY__SIM_ROLE_ASSISTANT;
        f->msgs[f->n++] = (struct dspy__sim_msg){ role, { p, (size_t)(e - p) } };
        p = e + 1;
    }
}

static bool eq(struct dspy__sim_view v, const char *s)
{
    return dspy__sim_view_eq(v, s);
}

static char *answer(const struct dspy__sim_prompt *p, uint64_t seed, uint64_t req_hash)
{
    struct dspy_buf b;
    struct dspy__sim_answer_opts o = { seed, req_hash, 0, 0, 0, NULL, false, 1.0 };
    dspy__buf_init(&b, 1 << 20);
    assert_int_equal(dspy__sim_answer(p, &o, &b), 0);
    return dspy__buf_detach(&b, NULL);
}

static void test_chat_prompt_is_read(void **state)
{
    (void)state;
    struct fixture f;
    struct dspy__sim_prompt p;
    load(&f, "chat_typed.txt");
    dspy__sim_prompt_parse(&p, f.msgs, f.n);
    assert_int_equal(p.adapter, DSPY__SIM_ADAPTER_CHAT);
    assert_int_equal(p.n_inputs, 2);
    assert_true(eq(p.inputs[0].name, "text") && eq(p.inputs[0].value, "I loved it"));
    assert_true(eq(p.inputs[1].name, "k") && eq(p.inputs[1].type, "int"));
    assert_true(eq(p.inputs[1].value, "3")); /* the reminder is not part of the value */
    assert_int_equal(p.n_outputs, 3);
    assert_true(eq(p.outputs[0].type, "Literal['pos', 'neg']"));
    assert_true(eq(p.outputs[0].note, "must exactly match (no extra characters) one of: pos; neg"));
    assert_true(eq(p.outputs[1].name, "tags") && eq(p.outputs[1].type, "list[str]"));
    assert_non_null(p.outputs[1].schema);
    assert_string_equal(json_string_value(json_object_get(p.outputs[1].schema, "type")), "array");
    assert_true(eq(p.outputs[2].note, "must be a single float value"));
    assert_true(eq(p.instructions, "Classify the text."));

    char *text = answer(&p, 0, 42);
    struct dspy__sim_block blocks[8];
    size_t nb = dspy__sim_blocks((struct dspy__sim_view){ text, strlen(text) }, blocks, 8);
    assert_int_equal(nb, 4);
    assert_true(eq(blocks[0].value, "pos") || eq(blocks[0].value, "neg"));
    json_t *tags = json_loadb(blocks[1].value.p, blocks[1].value.n, 0, NULL);
    assert_true(json_is_array(tags) && json_array_size(tags) >= 1);
    assert_true(json_is_string(json_array_get(tags, 0)));
    json_decref(tags);
    char num[32];
    snprintf(num, sizeof(num), "%.*s", (int)blocks[2].value.n, blocks[2].value.p);
    char *end;
    strtod(num, &end);
    assert_true(*end == '\0' && end != num);
    assert_true(eq(blocks[3].name, "completed"));

    char *again = answer(&p, 0, 42);
    assert_string_equal(text, again); /* pure function of (request, seed) */
    int differ = 0;
    for (uint64_t seed = 1; seed < 8; seed++) {
        char *other = answer(&p, seed, 42);
        differ += strcmp(other, text) != 0;
        dspy_free(other);
    }
    assert_true(differ > 0);
    dspy_free(text);
    dspy_free(again);
    dspy__sim_prompt_release(&p);
    free(f.text);
}

static void test_json_prompt_is_read(void **state)
{
    (void)state;
    struct fixture f;
    struct dspy__sim_prompt p;
    load(&f, "json_typed.txt");
    dspy__sim_prompt_parse(&p, f.msgs, f.n);
    assert_int_equal(p.adapter, DSPY__SIM_ADAPTER_JSON);
    assert_int_equal(p.n_outputs, 3);
    assert_true(eq(p.outputs[0].note, "must exactly match (no extra characters) one of: pos; neg"));
    assert_non_null(p.outputs[1].schema);
    assert_true(eq(p.inputs[1].value, "3"));

    char *text = answer(&p, 3, 7);
    json_t *obj = json_loads(text, 0, NULL);
    assert_true(json_is_object(obj));
    const char *label = json_string_value(json_object_get(obj, "label"));
    assert_true(label && (!strcmp(label, "pos") || !strcmp(label, "neg")));
    assert_true(json_is_array(json_object_get(obj, "tags")));
    assert_true(json_is_number(json_object_get(obj, "score")));
    json_decref(obj);
    dspy_free(text);
    dspy__sim_prompt_release(&p);
    free(f.text);
}

static void test_nested_types(void **state)
{
    (void)state;
    const char *names[] = { "json_nested.txt", "chat_nested.txt" };
    for (int i = 0; i < 2; i++) {
        struct fixture f;
        struct dspy__sim_prompt p;
        load(&f, names[i]);
        dspy__sim_prompt_parse(&p, f.msgs, f.n);
        assert_int_equal(p.n_outputs, 4);
        char *text = answer(&p, 0, 1);
        json_t *list, *meta, *flag;
        json_t *obj = NULL;
        if (p.adapter == DSPY__SIM_ADAPTER_JSON) {
            obj = json_loads(text, 0, NULL);
            list = json_object_get(obj, "items");
            meta = json_object_get(obj, "meta");
            flag = json_object_get(obj, "flag");
            assert_true(json_is_boolean(flag));
        } else {
            struct dspy__sim_block b[8];
            assert_int_equal(dspy__sim_blocks((struct dspy__sim_view){ text, strlen(text) }, b, 8),
                             5);
            list = json_loadb(b[0].value.p, b[0].value.n, 0, NULL);
            meta = json_loadb(b[1].value.p, b[1].value.n, 0, NULL);
            assert_true(eq(b[3].value, "True") || eq(b[3].value, "False"));
        }
        assert_true(json_is_array(list) && json_array_size(list) >= 1);
        json_t *it = json_array_get(list, 0);
        assert_true(json_is_string(json_object_get(it, "name")));
        assert_true(json_is_integer(json_object_get(it, "qty")));
        assert_true(json_is_object(meta));
        if (p.adapter != DSPY__SIM_ADAPTER_JSON) {
            json_decref(list);
            json_decref(meta);
        }
        json_decref(obj);
        dspy_free(text);
        dspy__sim_prompt_release(&p);
        free(f.text);
    }
}

static void test_blocks_like_dspy(void **state)
{
    (void)state;
    const char *t = "preamble\n[[ ## a ## ]]\n one \n\n[[ ## b ## ]] same line\nmore\n"
                    "  [[ ## a ## ]]\nsecond a\n[[ ## bad name ## ]]\nx";
    struct dspy__sim_block b[8];
    size_t n = dspy__sim_blocks((struct dspy__sim_view){ t, strlen(t) }, b, 8);
    assert_int_equal(n, 2);
    assert_true(eq(b[0].name, "a") && eq(b[0].value, "one"));
    assert_true(eq(b[1].name, "b"));
    assert_true(eq(b[1].value, "same line\nmore")); /* a repeated header ends the block */
}

/* Fuzzing found: a system message declaring an output field and no user message left the
 * final user view NULL, and the block reader did NULL + 0 (undefined; fatal under UBSan). */
static void test_system_only_prompt_is_answered(void **state)
{
    (void)state;
    const char *sys = "Your output fields are:\n1. `l` ():";
    struct dspy__sim_msg m = { DSPY__SIM_ROLE_SYSTEM, { sys, strlen(sys) } };
    struct dspy__sim_prompt p;
    struct dspy__sim_block b[4];
    dspy__sim_prompt_parse(&p, &m, 1);
    assert_int_equal(p.adapter, DSPY__SIM_ADAPTER_CHAT);
    assert_int_equal(p.n_outputs, 1);
    assert_true(eq(p.outputs[0].name, "l"));
    assert_non_null(p.final_user.p);
    assert_int_equal(p.final_user.n, 0);
    char *text = answer(&p, 0, 0);
    assert_non_null(strstr(text, "[[ ## l ## ]]"));
    assert_non_null(strstr(text, "[[ ## completed ## ]]"));
    dspy_free(text);
    dspy__sim_prompt_release(&p);
    assert_int_equal(dspy__sim_blocks((struct dspy__sim_view){ NULL, 0 }, b, 4), 0);
}

static void test_literal_choices(void **state)
{
    (void)state;
    const char *t = "Literal['a, b', \"c'd\", 3, True]";
    json_t *c = dspy__sim_type_choices((struct dspy__sim_view){ t, strlen(t) },
                                       (struct dspy__sim_view){ "", 0 });
    assert_int_equal(json_array_size(c), 4);
    assert_string_equal(json_string_value(json_array_get(c, 0)), "a, b");
    assert_string_equal(json_string_value(json_array_get(c, 1)), "c'd");
    assert_int_equal(json_integer_value(json_array_get(c, 2)), 3);
    assert_true(json_is_true(json_array_get(c, 3)));
    json_decref(c);
    const char *note = "must be one of: red; green";
    c = dspy__sim_type_choices((struct dspy__sim_view){ "Color", 5 },
                               (struct dspy__sim_view){ note, strlen(note) });
    assert_int_equal(json_array_size(c), 2);
    assert_string_equal(json_string_value(json_array_get(c, 1)), "green");
    json_decref(c);
}

static void test_plain_prompts(void **state)
{
    (void)state;
    const char *q = "Tom has 10 coins. He loses 3 and then finds 4 more. How many coins does Tom "
                    "have now?";
    struct dspy__sim_msg m[1] = { { DSPY__SIM_ROLE_USER, { q, strlen(q) } } };
    struct dspy__sim_prompt p;
    dspy__sim_prompt_parse(&p, m, 1);
    assert_int_equal(p.adapter, DSPY__SIM_ADAPTER_NONE);
    char *text = answer(&p, 0, 0);
    assert_non_null(strstr(text, "The answer is "));
    dspy_free(text);

    const char *hi = "Tell me about the ocean and whales";
    m[0].text = (struct dspy__sim_view){ hi, strlen(hi) };
    dspy__sim_prompt_parse(&p, m, 1);
    struct dspy__sim_answer_opts o = { 0, 9, 0, 0, 50, NULL, false, 1.0 };
    struct dspy_buf b;
    dspy__buf_init(&b, 1 << 16);
    assert_int_equal(dspy__sim_answer(&p, &o, &b), 0);
    assert_int_equal(dspy__sim_tokens(b.ptr, b.len), 50); /* --reply-tokens is exact */
    assert_non_null(strstr(b.ptr, "ocean"));
    dspy__buf_release(&b);
}

static void test_tokens(void **state)
{
    (void)state;
    const char *s = "Ava has 17 marbles.";
    assert_int_equal(dspy__sim_tokens(s, strlen(s)), 6); /* Ava| has| 17| mar|bles|. */
    assert_int_equal(dspy__sim_tokens_prefix(s, strlen(s), 2), 7);
    assert_int_equal(dspy__sim_tokens("", 0), 0);
    const char *u = "\xc3\xa9\xc3\xa9\xc3\xa9"; /* three 2-byte characters */
    assert_int_equal(dspy__sim_token_len(u, strlen(u)), 4);
    assert_int_equal(dspy__sim_tokens(u, strlen(u)), 2);
    const char *emoji = "\xf0\x9f\x98\x80!";
    assert_int_equal(dspy__sim_token_len(emoji, strlen(emoji)), 4);
    assert_int_equal(dspy__sim_utf8_check("ok\xff", 3), 2);
    assert_int_equal(dspy__sim_utf8_check("\xed\xa0\x80", 3), 0); /* a surrogate */
    assert_int_equal(dspy__sim_utf8_check(u, strlen(u)), strlen(u));
}

static double cosine(const float *a, const float *b, unsigned n)
{
    double d = 0;
    for (unsigned i = 0; i < n; i++)
        d += (double)a[i] * b[i];
    return d;
}

static void test_embeddings_and_base64(void **state)
{
    (void)state;
    static float a[384], b[384], c[384];
    const char *s1 = "The quick brown fox jumps over the lazy dog";
    const char *s2 = "The quick brown fox jumped over the lazy dog!";
    const char *s3 = "Quarterly revenue grew in the semiconductor segment";
    dspy__sim_embed(s1, strlen(s1), a, 384);
    dspy__sim_embed(s2, strlen(s2), b, 384);
    dspy__sim_embed(s3, strlen(s3), c, 384);
    assert_true(fabs(cosine(a, a, 384) - 1.0) < 1e-5);
    assert_true(cosine(a, b, 384) > 0.8);
    assert_true(cosine(a, c, 384) < 0.35);
    dspy__sim_embed("?!", 2, c, 384);
    assert_true(fabs(cosine(c, c, 384) - 1.0) < 1e-5);

    struct dspy_buf out;
    dspy__buf_init(&out, 64);
    dspy__buf_add_base64(&out, "abc", 3);
    dspy__buf_add_base64(&out, "ab", 2);
    dspy__buf_add_base64(&out, "a", 1);
    assert_string_equal(out.ptr, "YWJjYWI=YQ==");
    dspy__buf_release(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_prompt_is_read),
        cmocka_unit_test(test_json_prompt_is_read),
        cmocka_unit_test(test_nested_types),
        cmocka_unit_test(test_blocks_like_dspy),
        cmocka_unit_test(test_system_only_prompt_is_answered),
        cmocka_unit_test(test_literal_choices),
        cmocka_unit_test(test_plain_prompts),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_embeddings_and_base64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
