/* Retrieve steps of programs (program layer): DSPy's Retrieve(k) between predictors, the
 * query read from the record and the passages written back to it for the next predictor. */
#include <string.h>

#include "base/status.h"
#include "program/module_int.h"
#include "program/program_int.h"
#include "retrieve/retrieve_int.h"

static void step_release(struct dspy__retrieve_step *s)
{
    dspy_free(s->name);
    dspy_free(s->query);
    dspy_free(s->output);
    dspy_free(s->documents);
    dspy_module_free(s->ranker);
    dspy_retriever_free(s->retriever);
    memset(s, 0, sizeof(*s));
}

void dspy__program_steps_free(dspy_program *p)
{
    for (size_t i = 0; i < p->nsteps; i++)
        step_release(&p->steps[i]);
    dspy_free(p->steps);
    p->steps = NULL;
    p->nsteps = 0;
}

bool dspy__program_name_taken(const dspy_program *p, const char *name)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->preds[i].name && !strcmp(p->preds[i].name, name))
            return true;
    for (size_t i = 0; i < p->nsteps; i++)
        if (!strcmp(p->steps[i].name, name))
            return true;
    return false;
}

dspy_status dspy__program_add_step(dspy_program *p, size_t before, const char *name,
                                   dspy_retriever *r, const char *query, const char *output,
                                   size_t k)
{
    struct dspy__retrieve_step *steps = dspy_realloc(p->steps, (p->nsteps + 1) * sizeof(*steps));
    if (!steps)
        return DSPY_ENOMEM;
    p->steps = steps;
    /* keep them in running order: after every step that runs before the same predictor */
    size_t at = p->nsteps;
    while (at > 0 && steps[at - 1].before > before)
        at--;
    struct dspy__retrieve_step s = {
        dspy_strdup(name), dspy_strdup(query), dspy_strdup(output), k, before, NULL, NULL, NULL
    };
    if (!s.name || !s.query || !s.output) {
        step_release(&s);
        return DSPY_ENOMEM;
    }
    s.retriever = dspy__retriever_ref(r);
    memmove(steps + at + 1, steps + at, (p->nsteps - at) * sizeof(*steps));
    steps[at] = s;
    p->nsteps++;
    p->flat = false; /* DSPy's module then has a retrieve attribute beside the predictor */
    return DSPY_OK;
}

dspy_status dspy__program_steps_copy(dspy_program *dst, const dspy_program *src)
{
    for (size_t i = 0; i < src->nsteps; i++) {
        const struct dspy__retrieve_step *s = &src->steps[i];
        if (s->ranker ? dspy__program_add_rank(dst, s->before, s->name, s->query, s->documents,
                                               s->output, s->k, dspy_module_copy(s->ranker))
                      : dspy__program_add_step(dst, s->before, s->name, s->retriever, s->query,
                                               s->output, s->k))
            return DSPY_ENOMEM;
    }
    return DSPY_OK;
}

static bool valid_field(const char *s)
{
    if (!s || !*s || (*s >= '0' && *s <= '9'))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return false;
    return true;
}

dspy_status dspy_program_add_retrieve(dspy_program *p, size_t before, const char *name,
                                      dspy_retriever *r, const char *query, const char *output,
                                      size_t k, struct dspy_error *err)
{
    if (!p || !r || !query)
        return dspy__err(err, DSPY_EINVAL,
                         "dspy_program_add_retrieve: program, retriever and query are required");
    if (!name)
        name = "retrieve";
    if (!output)
        output = "passages";
    if (before > p->n)
        return dspy__err(err, DSPY_EINVAL,
                         "retrieve step %s: before = %zu, the program has %zu "
                         "predictors",
                         name, before, p->n);
    if (!valid_field(name) || !valid_field(query) || !valid_field(output))
        return dspy__err(err, DSPY_EINVAL,
                         "retrieve step: name, query and output must be identifiers");
    if (k < 1 || k > DSPY_RETRIEVE_MAX_K)
        return dspy__err(err, DSPY_EINVAL, "retrieve step %s: k must be from 1 to %d", name,
                         DSPY_RETRIEVE_MAX_K);
    if (dspy__program_name_taken(p, name))
        return dspy__err(err, DSPY_EINVAL, "retrieve step %s: the name is taken", name);
    if (dspy__program_add_step(p, before, name, r, query, output, k))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    return DSPY_OK;
}

size_t dspy_program_retrieve_count(const dspy_program *p)
{
    return p ? p->nsteps : 0;
}

dspy_status dspy__program_run_steps(dspy_program *p, size_t before, json_t *record, json_t *all,
                                    dspy_lm *lm, struct dspy__engine_group *group,
                                    const struct dspy_call_config *cfg, struct dspy_call_info *info,
                                    struct dspy_error *err)
{
    for (size_t i = 0; i < p->nsteps; i++) {
        struct dspy__retrieve_step *s = &p->steps[i];
        if (s->before != before)
            continue;
        if (s->ranker) {
            dspy_status rc = dspy__rank_step_run(s, record, all, lm, group, cfg, info, err);
            if (rc)
                return rc;
            continue;
        }
        json_t *q = json_object_get(record, s->query), *passages = NULL;
        if (!json_is_string(q)) {
            dspy_status code = q ? DSPY_EINVAL : DSPY_ENOTFOUND;
            dspy__err(err, code, "retrieve step %s: the query field \"%s\" %s", s->name, s->query,
                      q ? "must be a string" : "is missing");
            dspy__err_field(err, s->query);
            return code;
        }
        dspy_status rc = dspy_retriever_retrieve(s->retriever, json_string_value(q), s->k,
                                                 &passages, err);
        if (rc) {
            dspy__err_prefix(err, "retrieve step %s", s->name);
            return rc;
        }
        if (json_object_set(record, s->output, passages) ||
            (all && json_object_set(all, s->output, passages))) {
            json_decref(passages);
            return dspy__err(err, DSPY_ENOMEM, "out of memory");
        }
        json_decref(passages);
    }
    return DSPY_OK;
}
