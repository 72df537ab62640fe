/* The context-window manager (program layer): before a predictor's call, the prompt is
 * measured against the program's budget (the context window minus the completion budget);
 * over it, the lowest-ranked retrieved passages are dropped first, then the last demos, and
 * a prompt that still does not fit is refused, never sent. Token counts are an estimate
 * (docs/retrieve.md) until the models' own tokenizers are wired in. */
#include <string.h>

#include "base/status.h"
#include "program/module_int.h"
#include "program/program_int.h"

long dspy__context_estimate(const json_t *messages)
{
    long total = 3; /* the reply's priming, as OpenAI counts it */
    size_t i;
    json_t *m;
    json_array_foreach((json_t *)(uintptr_t)messages, i, m) {
        const json_t *c = json_object_get(m, "content");
        size_t bytes = json_is_string(c) ? json_string_length(c) : 0;
        total += 4 + (long)((bytes + 3) / 4);
    }
    return total;
}

long dspy_prompt_tokens(const json_t *messages)
{
    return dspy__context_estimate(messages);
}

static dspy_status measure(dspy_module *m, const json_t *record, long *tokens,
                           struct dspy_error *err)
{
    json_t *msgs = NULL;
    dspy_status rc = dspy_module_format(m, record, &msgs, err);
    if (!rc)
        *tokens = dspy__context_estimate(msgs);
    json_decref(msgs);
    return rc;
}

/* The input fields of `m` that hold a retrieve step's passages, last first. */
static size_t passage_fields(const dspy_program *p, const dspy_module *m, const char **out,
                             size_t max)
{
    const dspy_signature *sig = dspy_module_signature(m);
    size_t n = 0;
    for (size_t s = p->nsteps; s-- > 0 && n < max;)
        if (dspy_signature_find(sig, p->steps[s].output) >= 0 &&
            (size_t)dspy_signature_find(sig, p->steps[s].output) < dspy_signature_ninputs(sig)) {
            bool seen = false;
            for (size_t j = 0; j < n; j++)
                seen |= !strcmp(out[j], p->steps[s].output);
            if (!seen)
                out[n++] = p->steps[s].output;
        }
    return n;
}

dspy_status dspy__context_fit(dspy_program *p, size_t pred, json_t *record, dspy_module **use,
                              json_t *report, struct dspy_error *err)
{
    dspy_module *m = p->preds[pred].module;
    long budget = p->context_budget - p->completion_budget, tokens = 0;
    size_t dropped_p = 0, dropped_d = 0;
    const char *fields[8];
    dspy_status rc;
    *use = NULL;
    if (budget <= 0)
        return dspy__err(err, DSPY_ELM_CONTEXT,
                         "context budget %ld leaves no room after the completion's %ld tokens",
                         p->context_budget, p->completion_budget);
    if ((rc = measure(m, record, &tokens, err)) || tokens <= budget)
        return rc;
    /* 1. Passages, lowest-ranked first (the end of the last retrieval's list). */
    size_t nf = passage_fields(p, m, fields, 8);
    for (size_t f = 0; f < nf && tokens > budget; f++) {
        json_t *list = json_object_get(record, fields[f]);
        if (!json_is_array(list) || !json_array_size(list))
            continue;
        json_t *copy = json_copy(list); /* the outputs keep what was retrieved */
        if (!copy || json_object_set_new(record, fields[f], copy))
            return dspy__err(err, DSPY_ENOMEM, "out of memory");
        while (json_array_size(copy) && tokens > budget) {
            json_array_remove(copy, json_array_size(copy) - 1);
            dropped_p++;
            if ((rc = measure(m, record, &tokens, err)))
                return rc;
        }
    }
    /* 2. Demos, the last (lowest-value) first, on a copy of the module for this call. */
    const json_t *demos = dspy_module_demos(m);
    if (tokens > budget && json_array_size(demos)) {
        dspy_module *c = dspy_module_copy(m);
        json_t *keep = json_copy((json_t *)(uintptr_t)demos);
        if (!c || !keep) {
            dspy_module_free(c);
            json_decref(keep);
            return dspy__err(err, DSPY_ENOMEM, "out of memory");
        }
        while (json_array_size(keep) && tokens > budget) {
            json_array_remove(keep, json_array_size(keep) - 1);
            dropped_d++;
            if ((rc = dspy_module_set_demos(c, keep)) || (rc = measure(c, record, &tokens, err))) {
                dspy_module_free(c);
                json_decref(keep);
                return rc == DSPY_ENOMEM ? dspy__err(err, rc, "out of memory") : rc;
            }
        }
        json_decref(keep);
        *use = c;
    }
    if (tokens > budget) {
        dspy_module_free(*use);
        *use = NULL;
        return dspy__err(err, DSPY_ELM_CONTEXT,
                         "the prompt needs %ld tokens (estimated) with %zu passages and %zu "
                         "demos dropped; the context budget leaves %ld",
                         tokens, dropped_p, dropped_d, budget);
    }
    if (report) {
        json_t *r = json_pack("{s:I, s:I, s:I, s:I}", "passages", (json_int_t)dropped_p, "demos",
                              (json_int_t)dropped_d, "prompt_tokens", (json_int_t)tokens, "budget",
                              (json_int_t)budget);
        const char *name = p->preds[pred].name ? p->preds[pred].name : "predict";
        if (!r || json_object_set_new(report, name, r)) {
            dspy_module_free(*use);
            *use = NULL;
            return dspy__err(err, DSPY_ENOMEM, "out of memory");
        }
    }
    return DSPY_OK;
}

dspy_status dspy_program_set_context_budget(dspy_program *p, long context_tokens,
                                            long completion_tokens, struct dspy_error *err)
{
    if (!p || context_tokens < 0 || completion_tokens < 0)
        return dspy__err(err, DSPY_EINVAL, "context budget: tokens must be >= 0");
    if (context_tokens && completion_tokens >= context_tokens)
        return dspy__err(err, DSPY_EINVAL,
                         "context budget %ld leaves no room after the completion's %ld tokens",
                         context_tokens, completion_tokens);
    p->context_budget = context_tokens;
    p->completion_budget = completion_tokens;
    return DSPY_OK;
}
