/* The retriever handle (retrieve layer): one small vtable per kind (bm25, colbertv2), the
 * passages it returns, and DSPy's Retrieve(k) view of them (the long texts). */
#include <string.h>

#include "base/status.h"
#include "retrieve/retrieve_int.h"

dspy_status dspy__retriever_wrap(const struct dspy__retriever_ops *ops, void *impl,
                                 dspy_retriever **out, struct dspy_error *err)
{
    dspy_retriever *r = dspy_calloc(1, sizeof(*r));
    if (!r) {
        ops->free(impl);
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    }
    r->ops = ops;
    r->impl = impl;
    r->refs = 1;
    *out = r;
    return DSPY_OK;
}

dspy_retriever *dspy__retriever_ref(dspy_retriever *r)
{
    if (r)
        __atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED);
    return r;
}

void dspy_retriever_free(dspy_retriever *r)
{
    if (!r || __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    r->ops->free(r->impl);
    dspy_free(r);
}

const char *dspy_retriever_kind(const dspy_retriever *r)
{
    return r ? r->ops->kind : NULL;
}

bool dspy__retriever_local(const dspy_retriever *r)
{
    return r && r->ops->local && r->ops->local(r->impl);
}

const dspy_retriever *dspy__retriever_rows(const dspy_retriever *r)
{
    return r && r->ops->rows ? r->ops->rows(r, r->impl) : NULL;
}

uint64_t dspy_retriever_size(const dspy_retriever *r)
{
    return r && r->ops->size ? r->ops->size(r->impl) : 0;
}

void dspy_passages_free(struct dspy_passage *p, size_t n)
{
    if (!p)
        return;
    for (size_t i = 0; i < n; i++) {
        dspy_free(p[i].id);
        dspy_free(p[i].title);
        dspy_free(p[i].text);
    }
    dspy_free(p);
}

dspy_status dspy_retriever_search(dspy_retriever *r, const char *query, size_t k,
                                  struct dspy_passage **out, size_t *n, struct dspy_error *err)
{
    if (!r || !query || !out || !n)
        return dspy__err(err, DSPY_EINVAL, "dspy_retriever_search: arguments required");
    *out = NULL;
    *n = 0;
    if (k < 1 || k > DSPY_RETRIEVE_MAX_K)
        return dspy__err(err, DSPY_EINVAL, "k must be from 1 to %d, not %zu", DSPY_RETRIEVE_MAX_K,
                         k);
    return r->ops->search(r->impl, query, k, out, n, err);
}

dspy_status dspy_retriever_retrieve(dspy_retriever *r, const char *query, size_t k,
                                    json_t **passages, struct dspy_error *err)
{
    struct dspy_passage *p;
    size_t n;
    if (!passages)
        return dspy__err(err, DSPY_EINVAL, "dspy_retriever_retrieve: passages is required");
    dspy_status rc = dspy_retriever_search(r, query, k, &p, &n, err);
    if (rc)
        return rc;
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        if (json_array_append_new(arr, json_string(p[i].text))) {
            json_decref(arr);
            arr = NULL;
        }
    dspy_passages_free(p, n);
    if (!arr)
        return dspy__err(err, DSPY_ENOMEM, "out of memory (or a passage is not UTF-8)");
    *passages = arr;
    return DSPY_OK;
}
