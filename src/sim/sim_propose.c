/* The simulator as a prompt model (sim layer): answers to instruction-proposal prompts
 * (MIPROv2's GenerateSingleModuleInstruction and any output field naming an instruction)
 * built from what the prompt shows, so better instructions for the arith accuracy model are
 * reachable by search but not by one constant answer (docs/simulator.md). */
#include <stdio.h>
#include <string.h>

#include "sim_int.h"

static const char *const META_OUTPUTS[] = { "proposed_instruction", "new_instruction",
                                            "observations",         "summary",
                                            "program_description",  "module_description" };

bool dspy__sim_propose_is_meta(const struct dspy__sim_prompt *p)
{
    for (size_t i = 0; i < p->n_outputs; i++)
        for (size_t k = 0; k < sizeof(META_OUTPUTS) / sizeof(META_OUTPUTS[0]); k++)
            if (dspy__sim_view_eq(p->outputs[i].name, META_OUTPUTS[k]))
                return true;
    return false;
}

static const struct dspy__sim_field *input(const struct dspy__sim_prompt *p, const char *name)
{
    for (size_t i = 0; i < p->n_inputs; i++)
        if (dspy__sim_view_eq(p->inputs[i].name, name) && p->inputs[i].value.p)
            return &p->inputs[i];
    return NULL;
}

/* Evidence the prompt shows, over every input value. */
struct evidence {
    bool arith, reasoning, wrong, persona, high_stakes, concise;
};

static void gather(const struct dspy__sim_prompt *p, struct evidence *e)
{
    memset(e, 0, sizeof(*e));
    for (size_t i = 0; i < p->n_inputs; i++) {
        struct dspy__sim_view v = p->inputs[i].value;
        struct dspy__sim_arith q;
        if (!v.p)
            continue;
        e->arith |= dspy__sim_arith_find(v.p, v.n, &q) || dspy__sim_find_ci(v, "arithmetic") ||
                    dspy__sim_find_ci(v, "math");
        e->reasoning |= dspy__sim_find_ci(v, "reasoning:") ||
                        dspy__sim_find_ci(v, "chainofthought") || dspy__sim_find_ci(v, "step");
        e->wrong |= dspy__sim_find_ci(v, "wrong") || dspy__sim_find_ci(v, "incorrect");
    }
    const struct dspy__sim_field *tip = input(p, "tip");
    if (tip) {
        e->persona = dspy__sim_find_ci(tip->value, "persona");
        e->high_stakes = dspy__sim_find_ci(tip->value, "high stakes");
        e->concise = dspy__sim_find_ci(tip->value, "concise");
    }
}

json_t *dspy__sim_propose_description(const struct dspy__sim_prompt *p,
                                      const struct dspy__sim_field *f, uint64_t h)
{
    struct evidence e;
    gather(p, &e);
    if (!dspy__sim_propose_is_meta(p) || dspy__sim_find_ci(f->name, "instruction"))
        return NULL;
    static const char *const arith[] = {
        "The examples are arithmetic word problems about people and everyday items; each "
        "answer is a whole number computed from the numbers in the question.",
        "Each example is a short math word problem with a numeric answer; solving it takes a "
        "few operations of arithmetic.",
    };
    static const char *const other[] = {
        "The examples pair a short input text with a short output; the task maps one to the "
        "other.",
        "The data holds question and answer pairs on varied topics.",
    };
    if (dspy__sim_view_eq(f->name, "module_description"))
        return json_string(e.arith ? "This module reads the word problem and produces the "
                                     "final numeric answer."
                                   : "This module produces the program's output fields.");
    return json_string(e.arith ? arith[h % 2] : other[h % 2]);
}

/* The instruction: `base` (its first line), then hints drawn with the probabilities the
 * evidence sets (docs/simulator.md). */
static void compose(const struct evidence *e, struct dspy__sim_view base, uint64_t h, char *out,
                    size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
#define ADD(s) (n += (size_t)snprintf(out + n, cap - n, "%s%s", n ? " " : "", (s)))
#define DRAW(k, prob) (dspy__sim_unit(dspy__sim_mix(h, (k))) < (prob))
    if (e->persona)
        ADD(e->arith ? "You are a patient math tutor." : "You are a domain expert.");
    if (base.n) {
        struct dspy__sim_view b = dspy__sim_view_strip(base);
        const char *nl = memchr(b.p, '\n', b.n);
        size_t len = nl ? (size_t)(nl - b.p) : b.n;
        n += (size_t)snprintf(out + n, cap - n, "%s%.*s", n ? " " : "",
                              (int)(len > 300 ? 300 : len), b.p);
    } else {
        ADD(e->arith ? "Solve the word problem." : "Answer the question.");
    }
    if (e->high_stakes)
        ADD(e->arith ? "A student's grade depends on this answer, so be careful."
                     : "Much depends on this answer.");
    if (DRAW(1, e->reasoning ? 0.6
                : e->arith   ? 0.35
                             : 0.1) &&
        !dspy__sim_find_ci((struct dspy__sim_view){ out, n }, "step by step"))
        ADD("Work through the problem step by step.");
    if (e->arith && DRAW(2, 0.5) &&
        !dspy__sim_find_ci((struct dspy__sim_view){ out, n }, "arithmetic"))
        ADD("Check the arithmetic carefully.");
    if (DRAW(3, e->wrong   ? 0.7
                : e->arith ? 0.3
                           : 0.1) &&
        !dspy__sim_find_ci((struct dspy__sim_view){ out, n }, "verify"))
        ADD("Verify the final number before you answer.");
    if (DRAW(4, e->reasoning ? 0.4 : 0.15) &&
        !dspy__sim_find_ci((struct dspy__sim_view){ out, n }, "show your work"))
        ADD("Show your work.");
    if ((e->concise || DRAW(5, 0.3)) &&
        !dspy__sim_find_ci((struct dspy__sim_view){ out, n }, "short"))
        ADD("Keep the final answer short.");
#undef ADD
#undef DRAW
}

json_t *dspy__sim_propose_instruction(const struct dspy__sim_prompt *p, uint64_t h)
{
    struct evidence e;
    char out[1024];
    gather(p, &e);
    const struct dspy__sim_field *basic = input(p, "basic_instruction");
    if (!basic)
        basic = input(p, "current_instruction");
    compose(&e, basic ? basic->value : (struct dspy__sim_view){ "", 0 }, h, out, sizeof(out));
    return json_string(out);
}

static const char REFLECTION[] =
    "I provided an assistant with the following instructions to perform a task for me:";

bool dspy__sim_propose_reflection(const struct dspy__sim_prompt *p, uint64_t h,
                                  struct dspy_buf *out)
{
    struct dspy__sim_view t = p->final_user;
    const char *m = dspy__sim_find(t, REFLECTION);
    if (!m)
        return false;
    /* the current instruction: the first ``` block after the opening sentence */
    struct dspy__sim_view rest = { m + sizeof(REFLECTION) - 1,
                                   (size_t)(t.p + t.n - m) - (sizeof(REFLECTION) - 1) };
    const char *a = dspy__sim_find(rest, "```");
    struct dspy__sim_view base = { "", 0 };
    if (a) {
        struct dspy__sim_view after = { a + 3, (size_t)(rest.p + rest.n - a - 3) };
        const char *z = dspy__sim_find(after, "```");
        if (z)
            base = (struct dspy__sim_view){ after.p, (size_t)(z - after.p) };
    }
    struct evidence e;
    struct dspy__sim_arith q;
    memset(&e, 0, sizeof(e));
    e.arith = dspy__sim_arith_find(t.p, t.n, &q) || dspy__sim_find_ci(t, "arithmetic");
    e.reasoning = dspy__sim_find_ci(t, "### reasoning") || dspy__sim_find_ci(base, "step");
    e.wrong = dspy__sim_find_ci(t, "wrong") || dspy__sim_find_ci(t, "incorrect");
    char text[1024];
    compose(&e, base, h, text, sizeof(text));
    return !dspy__buf_adds(out, "```\n") && !dspy__buf_adds(out, text) &&
           !dspy__buf_adds(out, "\n```");
}
