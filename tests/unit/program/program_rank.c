/* Unit tests for rank steps: reading an LM's ranking (numbers or texts, JSON or plain
 * text, hostile answers always giving a permutation), and a rank step in a program over a
 * scripted LM (the best k kept; an answer that does not read keeps the order, with a
 * warning in the outputs; bad fields named). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/dspyc.h>

#include "program/program_int.h"

static json_t *docs3(void)
{
    return json_pack("[sss]", "Paris is the capital of France.", "Bananas are yellow.",
                     "The Seine flows through Paris.");
}

static bool read_order(const char *answer, const json_t *docs, size_t *order)
{
    return dspy__rank_read(answer, strlen(answer), docs, order);
}

static void expect(const char *answer, bool complete, size_t a, size_t b, size_t c)
{
    json_t *docs = docs3();
    size_t order[3];
    assert_int_equal(read_order(answer, docs, order), complete);
    if (order[0] != a || order[1] != b || order[2] != c)
        fail_msg("\"%s\": order %zu %zu %zu, expected %zu %zu %zu", answer, order[0], order[1],
                 order[2], a, b, c);
    json_decref(docs);
}

static void numbers_and_texts(void **state)
{
    (void)state;
    expect("[3, 1, 2]", true, 2, 0, 1);
    expect("  [2]", true, 1, 0, 2); /* the rest keep their order */
    expect("3, 1", true, 2, 0, 1);  /* plain text */
    expect("[2] > [3] > [1]", true, 1, 2, 0);
    expect("[\"3\", \"[1]\"]", true, 2, 0, 1);
    expect("[1, 1, 3]", true, 0, 2, 1); /* a repeat counts once */
    expect("[\"Bananas are yellow.\", \"[3] «The Seine flows through Paris.»\"]", true, 1, 2, 0);
    expect("The Seine flows through Paris.\nParis is the capital of France.", true, 2, 0, 1);
    expect("2.\n3.\n1.", true, 1, 2, 0);
}

static void hostile_answers_keep_the_order(void **state)
{
    (void)state;
    expect("", false, 0, 1, 2);
    expect("[[ ## nonsense", false, 0, 1, 2);
    expect("[0, 99, -4]", false, 0, 1, 2);
    expect("{\"a\": 1}", false, 0, 1, 2);
    expect("[null, true, 2.5]", false, 0, 1, 2);
    expect("[3, 7]", false, 2, 0, 1); /* what reads is used; the warning says the rest did not */
    expect("I cannot rank these.", false, 0, 1, 2);
    /* random bytes: always a permutation, never a crash */
    json_t *docs = docs3();
    unsigned seed = 7;
    char text[200];
    for (int t = 0; t < 20000; t++) {
        size_t n = (size_t)(rand_r(&seed) % (int)sizeof(text));
        static const char alphabet[] = "[]0123,;> \n\"'\xC2\xAB\xBB"
                                       "abcP1-9.";
        for (size_t i = 0; i < n; i++)
            text[i] = alphabet[rand_r(&seed) % (int)(sizeof(alphabet) - 1)];
        size_t order[3];
        bool seen[3] = { false };
        dspy__rank_read(text, n, docs, order);
        for (int i = 0; i < 3; i++) {
            assert_true(order[i] < 3);
            assert_false(seen[order[i]]);
            seen[order[i]] = true;
        }
    }
    json_decref(docs);
}

/* ---- a rank step in a program --------------------------------------------------------- */

struct script {
    const char *rank_reply;
    int calls;
    const char *want; /* when set: counts the ranking requests that hold it */
    int wanted;
};

static dspy_status scripted(void *userdata, const char *url, const char *body, size_t body_len,
                            long *http_status, char **response, size_t *response_len,
                            struct dspy_error *err)
{
    struct script *s = userdata;
    (void)url;
    (void)err;
    s->calls++;
    bool rank = false;
    for (size_t i = 0; !rank && i + 16 <= body_len; i++)
        rank = !memcmp(body + i, "ranked_documents", 16);
    size_t wl = s->want ? strlen(s->want) : 0;
    for (size_t i = 0; rank && wl && i + wl <= body_len; i++)
        if (!memcmp(body + i, s->want, wl)) {
            s->wanted++;
            break;
        }
    json_t *msg = json_pack("{s:s}", "content",
                            rank ? s->rank_reply
                                 : "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]");
    json_t *r = json_pack("{s:[{s:o}], s:{s:i, s:i, s:i}}", "choices", "message", msg, "usage",
                          "prompt_tokens", 3, "completion_tokens", 1, "total_tokens", 4);
    *response = json_dumps(r, JSON_COMPACT);
    json_decref(r);
    *response_len = *response ? strlen(*response) : 0;
    *http_status = 200;
    return *response ? DSPY_OK : DSPY_ENOMEM;
}

static const char PROGRAM[] =
    "{\"predictors\": ["
    " {\"module\": \"rank\", \"k\": 2, \"query\": \"question\", \"documents\": \"passages\"},"
    " {\"name\": \"answer\", \"signature\": \"passages: list[str], question -> answer\"}]}";

/* The scripted LM and PROGRAM. */
static void setup(struct script *s, dspy_lm **lm, dspy_program **p)
{
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    json_t *spec = json_loads(PROGRAM, 0, NULL);
    o.base_url = "http://lm.test/v1";
    o.model = "m";
    o.transport = scripted;
    o.transport_userdata = s;
    assert_int_equal(dspy_lm_new(&o, lm, NULL), DSPY_OK);
    assert_int_equal(dspy_program_from_json(spec, "t", p, NULL), DSPY_OK);
    json_decref(spec);
}

static json_t *run_rank(const char *reply, dspy_status want, struct dspy_error *err)
{
    struct script s = { reply, 0, NULL, 0 };
    dspy_lm *lm = NULL;
    dspy_program *p = NULL;
    json_t *out = NULL;
    setup(&s, &lm, &p);
    json_t *docs = docs3();
    json_t *in = json_pack("{s:s, s:o}", "question", "What flows through Paris?", "passages", docs);
    struct dspy_call_info info;
    assert_int_equal(dspy_program_call(p, lm, in, NULL, &out, &info, err), want);
    if (!want) /* the ranking (twice: the JSON adapter's fallback), then the answer */
        assert_true(info.lm_calls >= 2 && info.lm_calls <= 3);
    json_decref(in);
    dspy_program_free(p);
    dspy_lm_free(lm);
    return out;
}

static void step_keeps_the_best_k(void **state)
{
    (void)state;
    json_t *out = run_rank("[[ ## ranked_documents ## ]]\n[3, 1, 2]\n\n[[ ## completed ## ]]",
                           DSPY_OK, NULL);
    json_t *want = json_pack("[ss]", "The Seine flows through Paris.",
                             "Paris is the capital of France.");
    assert_true(json_equal(json_object_get(out, "passages"), want));
    assert_null(json_object_get(out, "warnings"));
    json_decref(want);
    json_decref(out);
}

static void hostile_answer_warns_and_keeps_the_order(void **state)
{
    (void)state;
    static const char *const replies[] = {
        "[[ ## ranked_documents ## ]]\nno idea\n\n[[ ## completed ## ]]",
        "[[ ## ranked_documents ## ]]\n[99, 0]\n\n[[ ## completed ## ]]",
        "garbage without any field markers",
    };
    for (size_t i = 0; i < sizeof(replies) / sizeof(replies[0]); i++) {
        json_t *out = run_rank(replies[i], DSPY_OK, NULL);
        json_t *want = json_pack("[ss]", "Paris is the capital of France.", "Bananas are yellow.");
        assert_true(json_equal(json_object_get(out, "passages"), want));
        json_t *w = json_object_get(out, "warnings");
        assert_int_equal(json_array_size(w), 1);
        assert_non_null(strstr(json_string_value(json_array_get(w, 0)), "rank step rank"));
        json_decref(want);
        json_decref(out);
    }
}

/* State files carry a rank step as DSPy's Predict state of its ranker (the instructions in
 * the signature), with its k beside; one keeping every document has no k. The instructions
 * loaded are the ones the ranking request sends, and older files ({"k": k}) still load. */
static void state_carries_instructions_and_k(void **state)
{
    (void)state;
    static const char *const specs[] = {
        PROGRAM,
        "{\"predictors\": [{\"module\": \"rank\"}, {\"name\": \"answer\", \"signature\": "
        "\"passages: list[str], question -> answer\"}]}",
    };
    for (size_t i = 0; i < 2; i++) {
        dspy_program *p = NULL;
        json_t *spec = json_loads(specs[i], 0, NULL);
        assert_int_equal(dspy_program_from_json(spec, "t", &p, NULL), DSPY_OK);
        json_t *st = dspy_program_dump_state(p);
        json_t *rank = json_object_get(st, "rank");
        json_t *sig = json_object_get(rank, "signature");
        assert_non_null(
            strstr(json_string_value(json_object_get(sig, "instructions")), "Rank the documents"));
        assert_int_equal(json_array_size(json_object_get(sig, "fields")), 3);
        if (i == 0)
            assert_int_equal(json_integer_value(json_object_get(rank, "k")), 2);
        else
            assert_null(json_object_get(rank, "k"));
        json_object_set_new(sig, "instructions", json_string("Order them by XYZZY."));
        assert_int_equal(dspy_program_apply_state(p, st, NULL), DSPY_OK);
        json_t *again = dspy_program_dump_state(p);
        assert_true(json_equal(again, st));
        json_decref(again);
        json_decref(st);
        json_decref(spec);
        dspy_program_free(p);
    }
    /* the instructions loaded reach the LM */
    struct script s = { "[[ ## ranked_documents ## ]]\n[3, 1, 2]\n\n[[ ## completed ## ]]", 0,
                        "Order them by XYZZY.", 0 };
    dspy_lm *lm = NULL;
    dspy_program *p = NULL;
    json_t *out = NULL;
    setup(&s, &lm, &p);
    json_t *st = dspy_program_dump_state(p);
    json_object_set_new(json_object_get(json_object_get(st, "rank"), "signature"), "instructions",
                        json_string("Order them by XYZZY."));
    assert_int_equal(dspy_program_apply_state(p, st, NULL), DSPY_OK);
    json_t *in = json_pack("{s:s, s:o}", "question", "What flows through Paris?", "passages",
                           docs3());
    assert_int_equal(dspy_program_call(p, lm, in, NULL, &out, NULL, NULL), DSPY_OK);
    assert_true(s.wanted >= 1);
    /* an older file: {"k": k} only, the ranker as the program file made it */
    json_object_set_new(st, "rank", json_pack("{s:i}", "k", 1));
    assert_int_equal(dspy_program_apply_state(p, st, NULL), DSPY_OK);
    json_t *old = dspy_program_dump_state(p);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(old, "rank"), "k")), 1);
    json_decref(old);
    /* a bad ranker state is named */
    struct dspy_error e;
    json_object_set_new(st, "rank", json_pack("{s:i, s:{s:s}}", "k", 2, "signature", "x", "y"));
    assert_int_equal(dspy_program_apply_state(p, st, &e), DSPY_EINVAL);
    assert_non_null(strstr(e.message, "unknown key \"x\" in a saved signature"));
    json_decref(out);
    json_decref(in);
    json_decref(st);
    dspy_program_free(p);
    dspy_lm_free(lm);
}

static void bad_fields_are_named(void **state)
{
    (void)state;
    struct dspy_error err;
    struct script s = { "", 0, NULL, 0 };
    dspy_lm *lm = NULL;
    dspy_program *p = NULL;
    json_t *spec, *out = NULL;
    setup(&s, &lm, &p);
    json_t *in = json_pack("{s:s, s:s}", "question", "q?", "passages", "not a list");
    assert_int_equal(dspy_program_call(p, lm, in, NULL, &out, NULL, &err), DSPY_EINVAL);
    assert_non_null(strstr(err.message, "rank step rank: the field \"passages\" must be a list"));
    assert_int_equal(s.calls, 0);
    json_decref(in);
    dspy_program_free(p);
    /* program-file errors */
    static const char *const bad[] = {
        "{\"predictors\": [{\"module\": \"rank\", \"k\": 0}, {\"signature\": \"a -> b\"}]}",
        "{\"predictors\": [{\"module\": \"rank\", \"documents\": \"x y\"}, {\"signature\": \"a -> "
        "b\"}]}",
        "{\"predictors\": [{\"module\": \"rank\", \"index\": \"idx\"}, {\"signature\": \"a -> "
        "b\"}]}",
    };
    static const char *const why[] = { "\"k\"", "\"documents\"", "\"index\"" };
    for (size_t i = 0; i < 3; i++) {
        spec = json_loads(bad[i], 0, NULL);
        assert_int_equal(dspy_program_from_json(spec, "t", &p, &err), DSPY_EINVAL);
        if (!strstr(err.message, why[i]))
            fail_msg("%s: %s", bad[i], err.message);
        json_decref(spec);
    }
    dspy_lm_free(lm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(numbers_and_texts),
        cmocka_unit_test(hostile_answers_keep_the_order),
        cmocka_unit_test(step_keeps_the_best_k),
        cmocka_unit_test(hostile_answer_warns_and_keeps_the_order),
        cmocka_unit_test(state_carries_instructions_and_k),
        cmocka_unit_test(bad_fields_are_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
