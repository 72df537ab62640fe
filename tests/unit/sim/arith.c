/* Unit tests of the simulator's arith task pack (sim layer): the generator and
 * recognizer agree, and the accuracy model follows the formula in docs/simulator.md. */
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

static void test_generated_questions_are_recognized(void **state)
{
    (void)state;
    struct dspy_buf q, wrapped;
    dspy__buf_init(&q, 4096);
    dspy__buf_init(&wrapped, 8192);
    int kinds[5] = { 0 };
    for (uint64_t i = 0; i < 3000; i++) {
        long answer;
        struct dspy__sim_arith a;
        dspy__buf_reset(&q);
        assert_int_equal(dspy__sim_arith_generate(11, i, &q, &answer), 0);
        assert_true(answer >= 0);
        assert_true(dspy__sim_arith_find(q.ptr, q.len, &a));
        assert_int_equal(a.answer, answer);
        assert_int_equal(a.start, 0);
        assert_int_equal(a.len, q.len);
        kinds[a.kind]++;
        dspy__buf_reset(&wrapped);
        dspy__buf_addf(&wrapped, "Question: %s\nAnswer:", q.ptr);
        assert_true(dspy__sim_arith_find(wrapped.ptr, wrapped.len, &a));
        assert_int_equal(a.answer, answer);
        assert_int_equal(a.start, 10);
    }
    for (int k = 0; k < 5; k++)
        assert_true(kinds[k] > 300);
    /* The same seed gives the same set. */
    struct dspy_buf q2;
    long a1, a2;
    dspy__buf_init(&q2, 4096);
    dspy__buf_reset(&q);
    dspy__sim_arith_generate(5, 17, &q, &a1);
    dspy__sim_arith_generate(5, 17, &q2, &a2);
    assert_string_equal(q.ptr, q2.ptr);
    dspy__buf_release(&q);
    dspy__buf_release(&q2);
    dspy__buf_release(&wrapped);
}

static void test_not_arith(void **state)
{
    (void)state;
    struct dspy__sim_arith a;
    const char *s[] = {
        "What is the capital of France?",
        "Ava has 17 marbles. She eats 5 and then buys 12 more. "
        "How many marbles does Ava have now?",
        "Ava has 17 marbles. She gives away 5 and then buys 12 more. "
        "How many apples does Ava have now?",
        "Bob has 17 marbles. He gives away 5 and then buys 12 more. "
        "How many marbles does Bob have now?",
    };
    for (size_t i = 0; i < 4; i++)
        assert_false(dspy__sim_arith_find(s[i], strlen(s[i]), &a));
}

/* A Chat-adapter prompt: question -> [reasoning,] answer, with demos. */
struct prompt {
    char sys[2048];
    char demo_user[8][512];
    char demo_asst[8][256];
    char user[512];
    struct dspy__sim_msg msgs[20];
    size_t n;
};

static void build(struct prompt *p, bool cot, const char *instr, int right, int wrong,
                  uint64_t q_index)
{
    long ans;
    struct dspy_buf q;
    dspy__buf_init(&q, 4096);
    snprintf(p->sys, sizeof(p->sys),
             "Your input fields are:\n1. `question` (str):\nYour output fields are:\n%s"
             "All interactions will be structured in the following way, with the appropriate "
             "values filled in.\n\n[[ ## question ## ]]\n{question}\n\n%s[[ ## answer ## ]]\n"
             "{answer}\n\n[[ ## completed ## ]]\nIn adhering to this structure, your objective "
             "is: \n        %s",
             cot ? "1. `reasoning` (str): \n2. `answer` (str):\n" : "1. `answer` (str):\n",
             cot ? "[[ ## reasoning ## ]]\n{reasoning}\n\n" : "", instr);
    p->n = 0;
    p->msgs[p->n++] = (struct dspy__sim_msg){ DSPY__SIM_ROLE_SYSTEM, { p->sys, strlen(p->sys) } };
    for (int d = 0; d < right + wrong; d++) {
        dspy__buf_reset(&q);
        dspy__sim_arith_generate(99, (uint64_t)d, &q, &ans);
        snprintf(p->demo_user[d], sizeof(p->demo_user[d]), "[[ ## question ## ]]\n%s", q.ptr);
        snprintf(p->demo_asst[d], sizeof(p->demo_asst[d]),
                 "[[ ## answer ## ]]\n%ld\n\n[[ ## completed ## ]]\n", d < right ? ans : ans + 7);
        p->msgs[p->n++] = (struct dspy__sim_msg){ DSPY__SIM_ROLE_USER,
                                                  { p->demo_user[d], strlen(p->demo_user[d]) } };
        p->msgs[p->n++] = (struct dspy__sim_msg){ DSPY__SIM_ROLE_ASSISTANT,
                                                  { p->demo_asst[d], strlen(p->demo_asst[d]) } };
    }
    dspy__buf_reset(&q);
    dspy__sim_arith_generate(1, q_index, &q, &ans);
    snprintf(p->user, sizeof(p->user),
             "[[ ## question ## ]]\n%s\n\nRespond with the corresponding output fields, starting "
             "with the field `[[ ## answer ## ]]`, and then ending with the marker for "
             "`[[ ## completed ## ]]`.",
             q.ptr);
    p->msgs[p->n++] = (struct dspy__sim_msg){ DSPY__SIM_ROLE_USER, { p->user, strlen(p->user) } };
    dspy__buf_release(&q);
}

static double p_of(bool cot, const char *instr, int right, int wrong)
{
    struct prompt pr;
    struct dspy__sim_prompt p;
    struct dspy__sim_accuracy acc;
    build(&pr, cot, instr, right, wrong, 0);
    dspy__sim_prompt_parse(&p, pr.msgs, pr.n);
    dspy__sim_arith_accuracy(&p, &acc);
    assert_int_equal(acc.demos_right, right);
    assert_int_equal(acc.demos_wrong, wrong);
    dspy__sim_prompt_release(&p);
    return acc.p;
}

static void test_accuracy_formula(void **state)
{
    (void)state;
    const char *plain = "Given the fields `question`, produce the fields `answer`.";
    assert_float_equal(p_of(false, plain, 0, 0), 0.25, 1e-9);
    assert_float_equal(p_of(true, plain, 0, 0), 0.40, 1e-9);
    assert_float_equal(p_of(false, plain, 1, 0), 0.25 + 0.40 * 0.25, 1e-9);
    assert_float_equal(p_of(false, plain, 4, 0), 0.25 + 0.40 * (1 - pow(0.75, 4)), 1e-9);
    assert_float_equal(p_of(false, plain, 2, 2), 0.25 + 0.40 * (1 - 0.5625) - 0.10, 1e-9);
    assert_float_equal(p_of(false, "Solve it step by step.", 0, 0), 0.31, 1e-9);
    assert_float_equal(p_of(false, "Be careful with the arithmetic.", 0, 0), 0.32, 1e-9);
    /* All keywords together are capped at 0.15. */
    assert_float_equal(p_of(false,
                            "Step by step, carefully verify the arithmetic; show your work "
                            "and calculate.",
                            0, 0),
                       0.40, 1e-9);
    assert_float_equal(p_of(true, "Step by step, carefully verify the arithmetic.", 8, 0),
                       0.25 + 0.40 * (1 - pow(0.75, 8)) + 0.15 + 0.15, 1e-9); /* below 0.95 */
    assert_float_equal(p_of(false, plain, 0, 8), 0.05, 1e-9);
}

/* Over many questions, accuracy at temperature 0 is monotone in p and close to it. */
static void test_accuracy_draws(void **state)
{
    (void)state;
    const char *plain = "Given the fields `question`, produce the fields `answer`.";
    int correct[3] = { 0 };
    int monotone_breaks = 0;
    for (uint64_t i = 0; i < 400; i++) {
        bool was_right = false;
        for (int level = 0; level < 3; level++) {
            struct prompt pr;
            struct dspy__sim_prompt p;
            struct dspy__sim_arith q;
            bool ok;
            build(&pr, level >= 1, plain, level == 2 ? 4 : 0, 0, i);
            dspy__sim_prompt_parse(&p, pr.msgs, pr.n);
            assert_true(dspy__sim_arith_find(p.final_user.p, p.final_user.n, &q));
            struct dspy__sim_answer_opts o = { 3, i, 0, 0, 0, NULL, false, 1.0 };
            long a = dspy__sim_arith_answer(&p, &q, &o, &ok);
            assert_true(ok == (a == q.answer));
            if (!ok)
                assert_true(labs(a - q.answer) <= 3 && a >= 0);
            correct[level] += ok;
            monotone_breaks += was_right && !ok;
            was_right = ok;
            dspy__sim_prompt_release(&p);
        }
    }
    assert_int_equal(monotone_breaks, 0);
    assert_true(abs(correct[0] - 100) < 35); /* p = 0.25 */
    assert_true(abs(correct[1] - 160) < 40); /* p = 0.40 */
    assert_true(abs(correct[2] - 269) < 40); /* p = 0.40 + 0.40 * (1 - 0.75^4) */
}

static void test_reasoning_ends_with_claim(void **state)
{
    (void)state;
    struct dspy_buf q, r;
    dspy__buf_init(&q, 4096);
    dspy__buf_init(&r, 4096);
    for (uint64_t i = 0; i < 50; i++) {
        long ans;
        struct dspy__sim_arith a;
        dspy__buf_reset(&q);
        dspy__buf_reset(&r);
        dspy__sim_arith_generate(4, i, &q, &ans);
        assert_true(dspy__sim_arith_find(q.ptr, q.len, &a));
        dspy__sim_arith_reasoning(&a, ans + 1, &r);
        char tail[32];
        snprintf(tail, sizeof(tail), " %ld", ans + 1);
        assert_non_null(strstr(r.ptr, tail));
        assert_int_equal(r.ptr[r.len - 1], '.');
    }
    dspy__buf_release(&q);
    dspy__buf_release(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generated_questions_are_recognized),
        cmocka_unit_test(test_not_arith),
        cmocka_unit_test(test_accuracy_formula),
        cmocka_unit_test(test_accuracy_draws),
        cmocka_unit_test(test_reasoning_ends_with_claim),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
