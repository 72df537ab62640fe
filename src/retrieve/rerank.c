/* Embedding re-rank (retrieve layer): another retriever's top `depth` passages ordered by
 * the cosine of their in-process MiniLM embeddings (vec layer) to the query's, optionally
 * picked for diversity by maximal marginal relevance (the same selection as dense search),
 * and the best k returned. With the index's dense.vec the passages' stored vectors are
 * used: only the query is embedded per search. */
#include <string.h>

#include <sys/mman.h>

#include <dspyc/embed.h>
#include <dspyc/vec.h>

#include "base/status.h"
#include "retrieve/retrieve_int.h"

struct rerank {
    dspy_retriever *base;
    dspy_embedder *embedder;
    size_t depth;
    double mmr_lambda; /* 0: plain order by cosine */
    void *map;         /* the dense.vec mapped, or NULL */
    size_t map_len;
    const float *rows; /* its vectors, one per passage of the base's index (pid = row) */
    uint64_t nrows;
};

static void rerank_free(void *impl)
{
    struct rerank *r = impl;
    if (!r)
        return;
    dspy_retriever_free(r->base);
    dspy_embedder_free(r->embedder);
    if (r->map)
        munmap(r->map, r->map_len);
    dspy_free(r);
}

static uint64_t rerank_size(const void *impl)
{
    return dspy_retriever_size(((const struct rerank *)impl)->base);
}

/* Candidates by cosine, best first; equal cosines keep the base ranking. */
static void sort_by_score(uint32_t *cand, size_t n, const float *score)
{
    for (size_t i = 1; i < n; i++) {
        uint32_t c = cand[i];
        size_t j = i;
        while (j > 0 && (score[cand[j - 1]] < score[c] ||
                         (score[cand[j - 1]] == score[c] && cand[j - 1] > c))) {
            cand[j] = cand[j - 1];
            j--;
        }
        cand[j] = c;
    }
}

/* Row 0 of vec the query's embedding, rows 1..n the passages': the stored vectors where the
 * index has them, else embedded now (with the query, in one call). */
static dspy_status embed_rows(struct rerank *r, const char *query, const struct dspy_passage *found,
                              size_t n, const char **texts, float *vec, struct dspy_error *err)
{
    size_t m = 0;
    texts[m++] = query;
    for (size_t i = 0; i < n; i++)
        if (r->rows && found[i].pid < r->nrows)
            memcpy(vec + (i + 1) * DSPY_EMBED_DIM, r->rows + found[i].pid * DSPY_EMBED_DIM,
                   DSPY_EMBED_DIM * sizeof(float));
        else
            texts[m++] = found[i].text;
    if (m == n + 1) /* nothing stored: embed straight into place */
        return dspy_embedder_embed(r->embedder, texts, NULL, m, vec, err);
    float *tmp = dspy_malloc(m * DSPY_EMBED_DIM * sizeof(float));
    if (!tmp)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    dspy_status rc = dspy_embedder_embed(r->embedder, texts, NULL, m, tmp, err);
    for (size_t i = 0, j = 1; !rc && i <= n; i++) {
        const float *src;
        if (!i)
            src = tmp;
        else if (r->rows && found[i - 1].pid < r->nrows)
            continue;
        else
            src = tmp + j++ * DSPY_EMBED_DIM;
        memcpy(vec + i * DSPY_EMBED_DIM, src, DSPY_EMBED_DIM * sizeof(float));
    }
    dspy_free(tmp);
    return rc;
}

static dspy_status rerank_search(void *impl, const char *query, size_t k, struct dspy_passage **out,
                                 size_t *nout, struct dspy_error *err)
{
    struct rerank *r = impl;
    struct dspy_passage *found = NULL, *res = NULL;
    size_t n = 0, want = r->depth > k ? r->depth : k;
    dspy_status rc = dspy_retriever_search(r->base, query, want, &found, &n, err);
    if (rc)
        return rc;
    const char **texts = dspy_malloc((n + 1) * sizeof(*texts));
    float *vec = dspy_malloc((n + 1) * DSPY_EMBED_DIM * sizeof(float));
    float *score = dspy_malloc((n ? n : 1) * sizeof(float));
    uint32_t *cand = dspy_malloc((n ? n : 1) * sizeof(uint32_t));
    size_t nk = k < n ? k : n;
    res = dspy_calloc(nk ? nk : 1, sizeof(*res));
    if (!texts || !vec || !score || !cand || !res) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = embed_rows(r, query, found, n, texts, vec, err))) {
        dspy__err_prefix(err, "embedding re-rank");
        goto out;
    }
    const float *pv = vec + DSPY_EMBED_DIM;
    for (size_t i = 0; i < n; i++) {
        score[i] = dspy_vec_cosine(vec, pv + i * DSPY_EMBED_DIM, DSPY_EMBED_DIM);
        cand[i] = (uint32_t)i;
    }
    sort_by_score(cand, n, score);
    if (r->mmr_lambda > 0)
        dspy_vec_mmr(pv, DSPY_EMBED_DIM, score, cand, n, nk, r->mmr_lambda);
    for (size_t i = 0; i < nk; i++) { /* move the picked passages over */
        res[i] = found[cand[i]];
        res[i].score = score[cand[i]];
        memset(&found[cand[i]], 0, sizeof(found[cand[i]]));
    }
    *out = res;
    *nout = nk;
    res = NULL;
out:
    dspy_passages_free(res, 0);
    dspy_passages_free(found, n);
    dspy_free(texts);
    dspy_free(vec);
    dspy_free(score);
    dspy_free(cand);
    return rc;
}

static bool rerank_local(const void *impl)
{
    return dspy__retriever_local(((const struct rerank *)impl)->base); /* MiniLM is here */
}

static const dspy_retriever *rerank_rows(const dspy_retriever *self, const void *impl)
{
    (void)self;
    return dspy__retriever_rows(((const struct rerank *)impl)->base);
}

static const struct dspy__retriever_ops rerank_ops = { "rerank",    rerank_search, rerank_size,
                                                       rerank_free, rerank_local,  rerank_rows };

dspy_status dspy_retriever_rerank(dspy_retriever *base, const struct dspy_rerank_options *o,
                                  dspy_retriever **out, struct dspy_error *err)
{
    static const struct dspy_rerank_options defaults = DSPY_RERANK_OPTIONS_INIT;
    if (!o)
        o = &defaults;
    if (!base || !out)
        return dspy__err(err, DSPY_EINVAL, "dspy_retriever_rerank: a retriever is required");
    if (!(o->mmr_lambda >= 0 && o->mmr_lambda <= 1))
        return dspy__err(err, DSPY_EINVAL, "mmr lambda must be between 0 and 1");
    if (o->depth > DSPY_RETRIEVE_MAX_K)
        return dspy__err(err, DSPY_EINVAL, "re-rank depth must be at most %d", DSPY_RETRIEVE_MAX_K);
    struct rerank *r = dspy_calloc(1, sizeof(*r));
    if (!r)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    struct dspy_embedder_options eo = DSPY_EMBEDDER_OPTIONS_INIT;
    eo.model_dir = o->model_dir;
    dspy_status rc = dspy_embedder_new(&eo, &r->embedder, err);
    if (rc) {
        dspy__err_prefix(err, "embedding re-rank");
        rerank_free(r);
        return rc;
    }
    r->base = dspy__retriever_ref(base);
    if (o->vectors) {
        const dspy_retriever *bm25 = dspy__retriever_rows(base);
        if (!bm25) {
            rerank_free(r);
            return dspy__err(err, DSPY_EINVAL,
                             "embedding re-rank: %s: the retriever's passages are not one "
                             "index's, so stored vectors cannot stand for them",
                             o->vectors);
        }
        if ((rc = dspy__dvec_map(o->vectors, bm25, &r->map, &r->map_len, &r->rows, err))) {
            dspy__err_prefix(err, "embedding re-rank");
            rerank_free(r);
            return rc;
        }
        r->nrows = dspy_retriever_size(bm25);
    }
    r->depth = o->depth ? o->depth : 20;
    r->mmr_lambda = o->mmr_lambda;
    return dspy__retriever_wrap(&rerank_ops, r, out, err);
}
