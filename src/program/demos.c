/* Diverse demo selection (program layer): each predictor's demos embedded once with the
 * in-process MiniLM embedder; before a call, the demos kept are picked by maximal marginal
 * relevance between the record's inputs and the demos (vec's dspy_vec_mmr), in their own
 * order. */
#include <stdlib.h>
#include <string.h>

#include <dspyc/embed.h>
#include <dspyc/vec.h>

#include "base/buf.h"
#include "base/status.h"
#include "program/module_int.h"
#include "program/program_int.h"

struct pred_demos {
    float *vecs; /* n x DSPY_EMBED_DIM, unit length */
    size_t n;
};

struct dspy__demo_select {
    size_t k;
    double lambda;
    dspy_embedder *embedder;  /* borrowed */
    struct pred_demos *preds; /* one per predictor */
    size_t npreds;
};

void dspy__demo_select_free(struct dspy__demo_select *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->npreds; i++)
        dspy_free(d->preds[i].vecs);
    dspy_free(d->preds);
    dspy_free(d);
}

/* The text of `obj`'s values for the signature's input fields, one a line (strings as they
 * are, other values as JSON): what the record and a demo are compared by. */
static dspy_status inputs_text(const dspy_signature *sig, const json_t *obj, struct dspy_buf *b)
{
    dspy_status rc = DSPY_OK;
    for (size_t f = 0; !rc && f < dspy_signature_ninputs(sig); f++) {
        const json_t *v = json_object_get(obj, dspy_signature_field(sig, f)->name);
        if (!v)
            continue;
        if (b->len)
            rc = dspy__buf_adds(b, "\n");
        if (!rc && json_is_string(v)) {
            rc = dspy__buf_add(b, json_string_value(v), json_string_length(v));
        } else if (!rc) {
            char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            rc = t ? dspy__buf_adds(b, t) : DSPY_ENOMEM;
            dspy_free(t); /* jansson allocates through dspy_malloc */
        }
    }
    return rc;
}

static dspy_status embed_text(struct dspy__demo_select *d, const dspy_signature *sig,
                              const json_t *obj, float *out, struct dspy_error *err)
{
    struct dspy_buf b;
    dspy__buf_init(&b, (size_t)16 << 20);
    dspy_status rc = inputs_text(sig, obj, &b);
    if (rc)
        rc = dspy__err(err, rc, "out of memory");
    else {
        const char *text = b.ptr ? b.ptr : "";
        size_t len = b.len;
        rc = dspy_embedder_embed(d->embedder, &text, &len, 1, out, err);
    }
    dspy__buf_release(&b);
    return rc;
}

dspy_status dspy_program_set_demo_select(dspy_program *p, size_t k, double lambda,
                                         dspy_embedder *embedder, struct dspy_error *err)
{
    if (!p)
        return dspy__err(err, DSPY_EINVAL, "demo selection: no program");
    if (k && (!embedder || !(lambda >= 0 && lambda <= 1)))
        return dspy__err(err, DSPY_EINVAL,
                         "demo selection needs the embedder and a lambda from 0 to 1");
    dspy__demo_select_free(p->demo_select);
    p->demo_select = NULL;
    if (!k)
        return DSPY_OK;
    struct dspy__demo_select *d = dspy_calloc(1, sizeof(*d));
    if (!d || !(d->preds = dspy_calloc(p->n ? p->n : 1, sizeof(*d->preds)))) {
        dspy_free(d);
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    }
    d->k = k;
    d->lambda = lambda;
    d->embedder = embedder;
    d->npreds = p->n;
    dspy_status rc = DSPY_OK;
    for (size_t i = 0; !rc && i < p->n; i++) {
        const dspy_module *m = p->preds[i].module;
        const json_t *demos = dspy_module_demos(m);
        size_t n = json_array_size(demos);
        if (n <= k)
            continue; /* nothing to choose */
        if (!(d->preds[i].vecs = dspy_malloc(n * DSPY_EMBED_DIM * sizeof(float)))) {
            rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
            break;
        }
        d->preds[i].n = n;
        for (size_t j = 0; !rc && j < n; j++)
            if ((rc = embed_text(d, dspy_module_signature(m), json_array_get(demos, j),
                                 d->preds[i].vecs + j * DSPY_EMBED_DIM, err)))
                dspy__err_prefix(err, "demo %zu of predictor %s", j + 1,
                                 p->preds[i].name ? p->preds[i].name : "predict");
    }
    if (rc) {
        dspy__demo_select_free(d);
        return rc;
    }
    p->demo_select = d;
    return DSPY_OK;
}

static int by_index(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

dspy_status dspy__demo_select_fit(dspy_program *p, size_t pred, const json_t *record,
                                  dspy_module **use, json_t *report, struct dspy_error *err)
{
    struct dspy__demo_select *d = p->demo_select;
    const struct pred_demos *pd = pred < d->npreds ? &d->preds[pred] : NULL;
    dspy_module *m = p->preds[pred].module;
    float q[DSPY_EMBED_DIM];
    *use = NULL;
    if (!pd || !pd->vecs || json_array_size(dspy_module_demos(m)) != pd->n)
        return DSPY_OK; /* at most k demos, or demos changed since: all are kept */
    float *rel = dspy_malloc(pd->n * sizeof(float));
    uint32_t *cand = dspy_malloc(pd->n * sizeof(uint32_t));
    json_t *keep = json_array(), *idx = json_array();
    dspy_module *c = NULL;
    dspy_status rc = rel && cand && keep && idx ? DSPY_OK : DSPY_ENOMEM;
    if (!rc && (rc = embed_text(d, dspy_module_signature(m), record, q, err)))
        goto out;
    for (size_t j = 0; !rc && j < pd->n; j++) {
        rel[j] = dspy_vec_dot(q, pd->vecs + j * DSPY_EMBED_DIM, DSPY_EMBED_DIM);
        cand[j] = (uint32_t)j;
    }
    if (!rc) {
        dspy_vec_mmr(pd->vecs, DSPY_EMBED_DIM, rel, cand, pd->n, d->k, d->lambda);
        qsort(cand, d->k, sizeof(*cand), by_index); /* the demos' own order */
        for (size_t j = 0; !rc && j < d->k; j++)
            if (json_array_append(keep, json_array_get(dspy_module_demos(m), cand[j])) ||
                json_array_append_new(idx, json_integer((json_int_t)cand[j])))
                rc = DSPY_ENOMEM;
    }
    if (!rc && (!(c = dspy_module_copy(m)) || dspy_module_set_demos(c, keep)))
        rc = DSPY_ENOMEM;
    if (!rc && json_object_set(report, p->preds[pred].name ? p->preds[pred].name : "predict", idx))
        rc = DSPY_ENOMEM;
    if (rc == DSPY_ENOMEM)
        dspy__err(err, rc, "out of memory");
out:
    if (rc)
        dspy_module_free(c);
    else
        *use = c;
    dspy_free(rel);
    dspy_free(cand);
    json_decref(keep);
    json_decref(idx);
    return rc;
}
