/* The context-window manager (program layer): before a predictor's call, the prompt is
 * measured against the program's budget (the context window minus the completion budget);
 * over it, the lowest-ranked retrieved passages are dropped first, then the last demos, and
 * a prompt that still does not fit is refused, never sent. Tokens are counted with the
 * model's BPE encoding, the embedder's WordPiece tokenizer, or an estimate when neither is
 * known (docs/retrieve.md). */
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

/* OpenAI's chat framing over word pieces: 3 per message and its values, 3 for the reply. */
static dspy_status wordpiece_count(const dspy_embedder *e, const json_t *messages, long *tokens,
                                   struct dspy_error *err)
{
    long total = 3;
    size_t i;
    json_t *m;
    json_array_foreach((json_t *)(uintptr_t)messages, i, m) {
        const char *key;
        json_t *v;
        total += 3;
        json_object_foreach(m, key, v) {
            size_t n = 0;
            dspy_status rc = json_is_string(v)
                                 ? dspy_embedder_count_tokens(e, json_string_value(v),
                                                              json_string_length(v), &n, err)
                                 : DSPY_OK;
            if (rc)
                return rc;
            total += (long)n + !strcmp(key, "name");
        }
    }
    *tokens = total;
    return DSPY_OK;
}

dspy_status dspy__context_count(const dspy_program *p, const json_t *messages, long *tokens,
                                struct dspy_error *err)
{
    if (p->context_bpe)
        return dspy_tokenizer_count_messages(p->context_bpe, messages, tokens, err);
    if (p->context_wordpiece)
        return wordpiece_count(p->context_wordpiece, messages, tokens, err);
    *tokens = dspy__context_estimate(messages);
    return DSPY_OK;
}

long dspy_prompt_tokens(const json_t *messages)
{
    return dspy__context_estimate(messages);
}

static dspy_status measure(const dspy_program *p, dspy_module *m, const json_t *record,
                           long *tokens, struct dspy_error *err)
{
    json_t *msgs = NULL;
    dspy_status rc = dspy_module_format(m, record, &msgs, err);
    if (!rc)
        rc = dspy__context_count(p, msgs, tokens, err);
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

/* `s` with redundant whitespace collapsed: runs of spaces and tabs to one space, none at a
 * line's end, runs of blank lines to one, none at either end. NULL on allocation failure. */
static char *collapse_ws(const char *s)
{
    size_t n = strlen(s), o = 0, newlines = 0;
    bool space = false;
    char *d = dspy_malloc(n + 1);
    if (!d)
        return NULL;
    for (const char *p = s; *p; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\r') {
            space = true;
        } else if (*p == '\n') {
            newlines++;
            space = false;
        } else {
            if (o && newlines)
                for (size_t k = 0; k < (newlines > 1 ? 2 : 1); k++)
                    d[o++] = '\n';
            else if (o && space)
                d[o++] = ' ';
            newlines = 0;
            space = false;
            d[o++] = *p;
        }
    }
    d[o] = 0;
    return d;
}

/* A copy of `demos` with every string value collapsed; NULL on allocation failure. */
static json_t *collapse_demos(const json_t *demos)
{
    json_t *out = json_array(), *d;
    size_t i;
    json_array_foreach((json_t *)(uintptr_t)demos, i, d) {
        json_t *c = json_is_object(d) ? json_object() : json_incref(d), *v;
        const char *key;
        if (!c || json_array_append_new(out, c))
            goto fail;
        if (!json_is_object(d))
            continue;
        json_object_foreach(d, key, v) {
            char *t = json_is_string(v) ? collapse_ws(json_string_value(v)) : NULL;
            int bad = json_is_string(v) ? !t || json_object_set_new(c, key, json_string(t))
                                        : json_object_set(c, key, v);
            dspy_free(t);
            if (bad)
                goto fail;
        }
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

/* Prompt trimming's first step: instructions and demos with whitespace collapsed, on `c`
 * (a copy of the module for this call). */
static dspy_status collapse_module(dspy_module *c)
{
    const char *ins = dspy_signature_instructions(dspy_module_signature(c));
    char *t = ins ? collapse_ws(ins) : NULL;
    json_t *demos = collapse_demos(dspy_module_demos(c));
    dspy_status rc = (ins && !t) || !demos ? DSPY_ENOMEM : DSPY_OK;
    if (!rc && t)
        rc = dspy_module_set_instructions(c, t);
    if (!rc)
        rc = dspy_module_set_demos(c, demos);
    dspy_free(t);
    json_decref(demos);
    return rc;
}

dspy_status dspy__context_fit(dspy_program *p, size_t pred, json_t *record, dspy_module **use,
                              json_t *report, struct dspy_error *err)
{
    dspy_module *given = *use, *m = given ? given : p->preds[pred].module, *c = NULL;
    long budget = p->context_budget ? p->context_budget - p->completion_budget : 0, tokens = 0;
    long before_ws = 0, ws_saved = 0;
    size_t dropped_p = 0, dropped_d = 0;
    const char *fields[8];
    dspy_status rc;
    if (p->context_budget && budget <= 0)
        return dspy__err(err, DSPY_ELM_CONTEXT,
                         "context budget %ld leaves no room after the completion's %ld tokens",
                         p->context_budget, p->completion_budget);
    if (p->prompt_budget && (!budget || p->prompt_budget < budget))
        budget = p->prompt_budget;
    if ((rc = measure(p, m, record, &tokens, err)) || tokens <= budget)
        return rc;
    /* 0. Prompt trimming: redundant whitespace in instructions and demos. */
    if (p->prompt_budget) {
        before_ws = tokens;
        if (!(c = dspy_module_copy(m)) || (rc = collapse_module(c))) {
            dspy_module_free(c);
            return dspy__err(err, DSPY_ENOMEM, "out of memory");
        }
        if ((rc = measure(p, c, record, &tokens, err)))
            goto fail;
        ws_saved = before_ws - tokens;
    }
    /* 1. Passages, lowest-ranked first (the end of the last retrieval's list): only for the
     * context window, as they are the record's inputs. */
    size_t nf = p->context_budget ? passage_fields(p, m, fields, 8) : 0;
    for (size_t f = 0; f < nf && tokens > budget; f++) {
        json_t *list = json_object_get(record, fields[f]);
        if (!json_is_array(list) || !json_array_size(list))
            continue;
        json_t *copy = json_copy(list); /* the outputs keep what was retrieved */
        if (!copy || json_object_set_new(record, fields[f], copy)) {
            rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
            goto fail;
        }
        while (json_array_size(copy) && tokens > budget) {
            json_array_remove(copy, json_array_size(copy) - 1);
            dropped_p++;
            if ((rc = measure(p, c ? c : m, record, &tokens, err)))
                goto fail;
        }
    }
    /* 2. Demos, the last (lowest-value) first, on a copy of the module for this call. */
    if (tokens > budget && json_array_size(dspy_module_demos(c ? c : m))) {
        json_t *keep = NULL;
        if ((!c && !(c = dspy_module_copy(m))) ||
            !(keep = json_copy((json_t *)(uintptr_t)dspy_module_demos(c)))) {
            rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
            goto fail;
        }
        while (json_array_size(keep) && tokens > budget) {
            json_array_remove(keep, json_array_size(keep) - 1);
            dropped_d++;
            if ((rc = dspy_module_set_demos(c, keep)) ||
                (rc = measure(p, c, record, &tokens, err))) {
                json_decref(keep);
                if (rc == DSPY_ENOMEM)
                    dspy__err(err, rc, "out of memory");
                goto fail;
            }
        }
        json_decref(keep);
    }
    if (tokens > budget && p->context_budget && tokens > p->context_budget - p->completion_budget) {
        rc = dspy__err(err, DSPY_ELM_CONTEXT,
                       "the prompt needs %ld tokens (%s) with %zu passages and %zu demos "
                       "dropped; the context budget leaves %ld",
                       tokens, dspy_program_context_counting(p), dropped_p, dropped_d,
                       p->context_budget - p->completion_budget);
        goto fail;
    }
    if (report) {
        json_t *r = json_pack("{s:I, s:I, s:I, s:I, s:s}", "passages", (json_int_t)dropped_p,
                              "demos", (json_int_t)dropped_d, "prompt_tokens", (json_int_t)tokens,
                              "budget", (json_int_t)budget, "counting",
                              dspy_program_context_counting(p));
        const char *name = p->preds[pred].name ? p->preds[pred].name : "predict";
        if (r && p->prompt_budget) {
            json_object_set_new(r, "whitespace_tokens", json_integer((json_int_t)ws_saved));
            json_object_set_new(r, "over_budget", json_boolean(tokens > budget));
        }
        if (!r || json_object_set_new(report, name, r)) {
            rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
            goto fail;
        }
    }
    if (c) { /* the copy made here replaces the one given */
        dspy_module_free(given);
        *use = c;
    }
    return DSPY_OK;
fail:
    dspy_module_free(c);
    return rc;
}

dspy_status dspy_program_set_prompt_budget(dspy_program *p, long tokens, struct dspy_error *err)
{
    if (!p || tokens < 0)
        return dspy__err(err, DSPY_EINVAL, "prompt budget: tokens must be >= 0");
    p->prompt_budget = tokens;
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

void dspy_program_set_context_tokenizer(dspy_program *p, const dspy_tokenizer *tokenizer,
                                        const dspy_embedder *embedder)
{
    p->context_bpe = tokenizer;
    p->context_wordpiece = tokenizer ? NULL : embedder;
}

const char *dspy_program_context_counting(const dspy_program *p)
{
    return p->context_bpe         ? dspy_tokenizer_name(p->context_bpe)
           : p->context_wordpiece ? "wordpiece"
                                  : "estimate";
}
