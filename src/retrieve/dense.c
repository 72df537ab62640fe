/* Dense retrieval (retrieve layer): passages embedded once through an OpenAI-compatible
 * /embeddings endpoint or the in-process MiniLM encoder when the retriever opens (or their
 * MiniLM vectors mapped from the index's dense.vec), kept as unit vectors, and searched by
 * exact cosine top-k; the query is embedded per search. The passages are a BM25 image's
 * (an index or a corpus), so ids, titles and texts are the same as BM25's. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <sys/mman.h>

#include <curl/curl.h>

#include <dspyc/embed.h>

#include <dspyc/vec.h>

#include "base/buf.h"
#include "base/status.h"
#include "retrieve/retrieve_int.h"

#define BATCH 128
#define ANSWER_MAX ((size_t)256 << 20)

struct dense {
    dspy_retriever *base; /* bm25: the passages */
    char *url;            /* .../embeddings */
    char *model;
    char *auth; /* "Authorization: Bearer ..." or NULL; never printed */
    long timeout_ms;
    size_t dim;
    float *vec;           /* docs x dim, unit length (dspy_malloc'd, or in `map`) */
    dspy_embedder *local; /* the in-process encoder instead of the endpoint, or NULL */
    void *map;            /* dense.vec mapped, or NULL */
    size_t map_len;
    double mmr_lambda; /* 0: plain top-k */
    size_t mmr_depth;  /* MMR candidates */
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    return dspy__buf_add(userdata, data, size * nmemb) ? 0 : size * nmemb;
}

dspy_status dspy__dense_read_embeddings(const char *where, const char *text, size_t len, size_t n,
                                        float **out, size_t *dim, struct dspy_error *err)
{
    dspy_status rc = DSPY_OK;
    json_error_t je;
    json_t *doc = json_loadb(text, len, 0, &je);
    json_t *data = json_object_get(doc, "data");
    if (!json_is_array(data) || json_array_size(data) != n) {
        rc = dspy__err(err, DSPY_ELM_BAD_RESPONSE,
                       "embeddings endpoint %s: the answer has no \"data\" list of %zu", where, n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get(data, i), *e = json_object_get(item, "embedding"),
               *idx = json_object_get(item, "index");
        size_t row = json_is_integer(idx) ? (size_t)json_integer_value(idx) : i;
        if (!json_is_array(e) || !json_array_size(e) || row != i ||
            (*dim && json_array_size(e) != *dim)) {
            rc = dspy__err(err, DSPY_ELM_BAD_RESPONSE,
                           "embeddings endpoint %s: data[%zu] is not an embedding of %zu numbers",
                           where, i, *dim);
            goto out;
        }
        if (!*dim)
            *dim = json_array_size(e);
        if (!*out) {
            if (!(*out = dspy_malloc(n * *dim * sizeof(float)))) {
                rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
                goto out;
            }
        }
        double norm = 0;
        float *v = *out + row * *dim;
        for (size_t k = 0; k < *dim; k++) {
            v[k] = (float)json_number_value(json_array_get(e, k));
            norm += (double)v[k] * v[k];
        }
        norm = norm > 0 ? 1.0 / sqrt(norm) : 0.0;
        for (size_t k = 0; k < *dim; k++)
            v[k] = (float)(v[k] * norm);
    }
out:
    json_decref(doc);
    if (rc && *out) {
        dspy_free(*out);
        *out = NULL;
    }
    return rc;
}

/* Embed `n` texts into out (n x dim; dim fixed by the first answer when *dim is 0). */
static dspy_status embed(struct dense *d, const char *const *texts, size_t n, float **out,
                         size_t *dim, struct dspy_error *err)
{
    if (d->local) {
        if (!(*out = dspy_malloc(n * DSPY_EMBED_DIM * sizeof(float))))
            return dspy__err(err, DSPY_ENOMEM, "out of memory");
        *dim = DSPY_EMBED_DIM;
        dspy_status rc = dspy_embedder_embed(d->local, texts, NULL, n, *out, err);
        if (rc) {
            dspy_free(*out);
            *out = NULL;
        }
        return rc;
    }
    char where[512], errbuf[CURL_ERROR_SIZE] = "";
    struct dspy_buf body, req;
    struct curl_slist *h = NULL;
    dspy_status rc = DSPY_OK;
    long status = 0;
    dspy_url_redact(d->url, where, sizeof(where));
    CURL *c = curl_easy_init();
    if (!c)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    dspy__buf_init(&body, ANSWER_MAX);
    dspy__buf_init(&req, (size_t)64 << 20);
    json_t *in = json_array();
    for (size_t i = 0; in && i < n; i++)
        if (json_array_append_new(in, json_string(texts[i][0] ? texts[i] : " ")))
            rc = DSPY_EUTF8;
    json_t *j = in ? json_pack("{s:s, s:o}", "model", d->model, "input", in) : NULL;
    char *s = j && !rc ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s || dspy__buf_adds(&req, s)) {
        dspy_free(s);
        rc = dspy__err(err, rc ? rc : DSPY_ENOMEM, "embeddings: cannot build the request");
        goto out;
    }
    dspy_free(s);
    h = curl_slist_append(h, "Content-Type: application/json");
    if (d->auth)
        h = curl_slist_append(h, d->auth);
    curl_easy_setopt(c, CURLOPT_URL, d->url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, req.ptr);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)req.len);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, d->timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK) {
        rc = dspy__err(err, cc == CURLE_OPERATION_TIMEDOUT ? DSPY_ELM_TIMEOUT : DSPY_ELM_NETWORK,
                       "embeddings endpoint %s: %s", where,
                       errbuf[0] ? errbuf : curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) {
        rc = dspy__err(err, status >= 500 ? DSPY_ELM_SERVER : DSPY_ELM_BAD_REQUEST,
                       "embeddings endpoint %s answered HTTP %ld", where, status);
        if (err)
            err->http_status = (int)status;
        goto out;
    }
    rc = dspy__dense_read_embeddings(where, body.ptr ? body.ptr : "", body.len, n, out, dim, err);
out:
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    dspy__buf_release(&body);
    dspy__buf_release(&req);
    return rc;
}

static void dense_free(void *impl)
{
    struct dense *d = impl;
    if (!d)
        return;
    dspy_retriever_free(d->base);
    dspy_free(d->url);
    dspy_free(d->model);
    if (d->auth) {
        memset(d->auth, 0, strlen(d->auth));
        dspy_free(d->auth);
    }
    if (d->map)
        munmap(d->map, d->map_len);
    else
        dspy_free(d->vec);
    dspy_embedder_free(d->local);
    dspy_free(d);
}

static uint64_t dense_size(const void *impl)
{
    return dspy_retriever_size(((const struct dense *)impl)->base);
}

static bool better(const float *s, uint32_t a, uint32_t b)
{
    return s[a] > s[b] || (s[a] == s[b] && a < b);
}

static void sift(uint32_t *heap, size_t n, size_t i, const float *s)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && better(s, heap[m], heap[l]))
            m = l;
        if (r < n && better(s, heap[m], heap[r]))
            m = r;
        if (m == i)
            return;
        uint32_t t = heap[i];
        heap[i] = heap[m];
        heap[m] = t;
        i = m;
    }
}

static dspy_status dense_search(void *impl, const char *query, size_t k, struct dspy_passage **out,
                                size_t *nout, struct dspy_error *err)
{
    struct dense *d = impl;
    float *q = NULL;
    size_t dim = d->dim;
    size_t docs = (size_t)dspy_retriever_size(d->base);
    dspy_status rc = embed(d, &query, 1, &q, &dim, err);
    if (rc)
        return rc;
    float *s = dspy_malloc(docs * sizeof(float));
    size_t want = k, nk;
    if (d->mmr_lambda > 0 && d->mmr_depth > want)
        want = d->mmr_depth;
    size_t n = want < docs ? want : docs;
    uint32_t *heap = dspy_malloc((n ? n : 1) * sizeof(uint32_t));
    uint32_t *cand = dspy_malloc((n ? n : 1) * sizeof(uint32_t));
    struct dspy_passage *res = dspy_calloc(n ? n : 1, sizeof(*res));
    nk = k < n ? k : n;
    if (!s || !heap || !cand || !res) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < docs; i++) {
        s[i] = dspy_vec_dot(d->vec + i * dim, q, dim);
        if (i < n) {
            heap[i] = (uint32_t)i;
            if (i + 1 == n)
                for (size_t j = n / 2; j-- > 0;)
                    sift(heap, n, j, s);
        } else if (n && better(s, (uint32_t)i, heap[0])) {
            heap[0] = (uint32_t)i;
            sift(heap, n, 0, s);
        }
    }
    for (size_t m = n; m > 0; m--) { /* best first */
        cand[m - 1] = heap[0];
        heap[0] = heap[m - 1];
        sift(heap, m - 1, 0, s);
    }
    if (d->mmr_lambda > 0) /* ties go to the better-ranked candidate */
        dspy_vec_mmr(d->vec, dim, s, cand, n, nk, d->mmr_lambda);
    for (size_t i = 0; i < nk; i++)
        if ((rc = dspy__bm25_passage(d->base, cand[i], s[cand[i]], &res[i]))) {
            rc = dspy__err(err, rc, "out of memory");
            goto out;
        }
    *out = res;
    *nout = nk;
    res = NULL;
out:
    dspy_passages_free(res, nk);
    dspy_free(s);
    dspy_free(heap);
    dspy_free(cand);
    dspy_free(q);
    return rc;
}

static bool dense_local(const void *impl)
{
    return ((const struct dense *)impl)->local != NULL; /* else an embeddings endpoint */
}

static const dspy_retriever *dense_rows(const dspy_retriever *self, const void *impl)
{
    (void)self;
    return ((const struct dense *)impl)->base;
}

static const struct dspy__retriever_ops dense_ops = { "dense",    dense_search, dense_size,
                                                      dense_free, dense_local,  dense_rows };

dspy_status dspy_retriever_dense(dspy_retriever *passages, const struct dspy_dense_options *o,
                                 dspy_retriever **out, struct dspy_error *err)
{
    bool minilm = o && o->encoder && !strcmp(o->encoder, "minilm");
    if (o && o->encoder && !minilm)
        return dspy__err(err, DSPY_EINVAL, "dense encoder \"%s\": the only one is \"minilm\"",
                         o->encoder);
    if (!passages || !o || (!minilm && (!o->base_url || !o->model)) || !out)
        return dspy__err(err, DSPY_EINVAL,
                         "dspy_retriever_dense: passages, and base_url and model (or the "
                         "minilm encoder) are required");
    if (strcmp(dspy_retriever_kind(passages), "bm25"))
        return dspy__err(err, DSPY_EINVAL,
                         "dense retrieval needs a BM25 index or corpus for "
                         "its passages");
    struct dense *d = dspy_calloc(1, sizeof(*d));
    struct dspy_buf url;
    if (!d)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    dspy__buf_init(&url, 8192);
    size_t bl = minilm ? 0 : strlen(o->base_url);
    while (bl && o->base_url[bl - 1] == '/')
        bl--;
    if (!minilm &&
        (dspy__buf_add(&url, o->base_url, bl) || dspy__buf_adds(&url, "/embeddings") ||
         !(d->url = dspy__buf_detach(&url, NULL)) || !(d->model = dspy_strdup(o->model)))) {
        dspy__buf_release(&url);
        dense_free(d);
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    }
    if (o->api_key && o->api_key[0]) {
        size_t n = strlen(o->api_key) + 32;
        if (!(d->auth = dspy_malloc(n))) {
            dense_free(d);
            return dspy__err(err, DSPY_ENOMEM, "out of memory");
        }
        snprintf(d->auth, n, "Authorization: Bearer %s", o->api_key);
    }
    d->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 60000;
    if (o->mmr_lambda < 0 || o->mmr_lambda > 1) {
        dense_free(d);
        return dspy__err(err, DSPY_EINVAL, "mmr lambda must be between 0 and 1");
    }
    d->mmr_lambda = o->mmr_lambda;
    d->mmr_depth = o->mmr_depth ? o->mmr_depth : 50;
    d->base = dspy__retriever_ref(passages);
    size_t docs = (size_t)dspy_retriever_size(passages);
    dspy_status rc = DSPY_OK;
    if (minilm) {
        struct dspy_embedder_options eo = DSPY_EMBEDDER_OPTIONS_INIT;
        eo.model_dir = o->model_dir;
        eo.threads = o->vectors ? 1 : 0; /* all CPUs when the passages are embedded now */
        if ((rc = dspy_embedder_new(&eo, &d->local, err))) {
            dense_free(d);
            return rc;
        }
        if (o->vectors) {
            const float *rows;
            if ((rc = dspy__dvec_map(o->vectors, passages, &d->map, &d->map_len, &rows, err))) {
                dense_free(d);
                return rc;
            }
            d->vec = (float *)(uintptr_t)rows; /* read-only: the map is PROT_READ */
            d->dim = DSPY_EMBED_DIM;
            return dspy__retriever_wrap(&dense_ops, d, out, err);
        }
    }
    const char **texts = dspy_calloc(BATCH, sizeof(*texts));
    struct dspy_passage *p = dspy_calloc(BATCH, sizeof(*p));
    if (!texts || !p)
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
    for (size_t at = 0; !rc && at < docs; at += BATCH) {
        size_t n = docs - at < BATCH ? docs - at : BATCH;
        float *part = NULL;
        size_t dim = d->dim;
        for (size_t i = 0; !rc && i < n; i++) {
            if ((rc = dspy__bm25_passage(passages, (uint32_t)(at + i), 0, &p[i])))
                rc = dspy__err(err, rc, "out of memory");
            texts[i] = p[i].text;
        }
        if (!rc)
            rc = embed(d, texts, n, &part, &dim, err);
        for (size_t i = 0; i < n; i++) {
            dspy_free(p[i].id);
            dspy_free(p[i].title);
            dspy_free(p[i].text);
            memset(&p[i], 0, sizeof(p[i]));
        }
        if (!rc && !d->vec) {
            d->dim = dim;
            if (!(d->vec = dspy_malloc(docs * dim * sizeof(float))))
                rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        }
        if (!rc)
            memcpy(d->vec + at * d->dim, part, n * d->dim * sizeof(float));
        dspy_free(part);
    }
    dspy_free(texts);
    dspy_free(p);
    if (rc) {
        dense_free(d);
        return rc;
    }
    return dspy__retriever_wrap(&dense_ops, d, out, err);
}

/* ---- hybrid: reciprocal-rank fusion ----------------------------------------------------- */

struct hybrid {
    dspy_retriever *a, *b;
    size_t depth; /* candidates taken from each */
};

static void hybrid_free(void *impl)
{
    struct hybrid *h = impl;
    if (!h)
        return;
    dspy_retriever_free(h->a);
    dspy_retriever_free(h->b);
    dspy_free(h);
}

static uint64_t hybrid_size(const void *impl)
{
    return dspy_retriever_size(((const struct hybrid *)impl)->a);
}

/* RRF (Cormack et al.): score = sum over lists of 1 / (60 + rank), rank 1-based; a passage
 * is the same in both lists when its text is. Ties keep the first list's order. */
static dspy_status hybrid_search(void *impl, const char *query, size_t k, struct dspy_passage **out,
                                 size_t *nout, struct dspy_error *err)
{
    struct hybrid *h = impl;
    struct dspy_passage *pa = NULL, *pb = NULL;
    size_t na = 0, nb = 0, depth = h->depth > k ? h->depth : k;
    if (depth > DSPY_RETRIEVE_MAX_K)
        depth = DSPY_RETRIEVE_MAX_K;
    dspy_status rc = dspy_retriever_search(h->a, query, depth, &pa, &na, err);
    if (!rc)
        rc = dspy_retriever_search(h->b, query, depth, &pb, &nb, err);
    if (rc) {
        dspy_passages_free(pa, na);
        return rc;
    }
    struct dspy_passage *all = dspy_calloc(na + nb + 1, sizeof(*all));
    if (!all) {
        dspy_passages_free(pa, na);
        dspy_passages_free(pb, nb);
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    }
    size_t n = 0;
    for (size_t i = 0; i < na; i++) {
        all[n] = pa[i];
        all[n++].score = 1.0 / (60.0 + (double)(i + 1));
    }
    for (size_t i = 0; i < nb; i++) {
        size_t j = 0;
        while (j < na && strcmp(all[j].text, pb[i].text))
            j++;
        if (j < na) {
            all[j].score += 1.0 / (60.0 + (double)(i + 1));
            dspy_free(pb[i].id);
            dspy_free(pb[i].title);
            dspy_free(pb[i].text);
            continue;
        }
        all[n] = pb[i];
        all[n++].score = 1.0 / (60.0 + (double)(i + 1));
    }
    dspy_free(pa);
    dspy_free(pb);
    /* stable insertion sort by fused score, descending: lists are short */
    for (size_t i = 1; i < n; i++) {
        struct dspy_passage x = all[i];
        size_t j = i;
        while (j > 0 && all[j - 1].score < x.score) {
            all[j] = all[j - 1];
            j--;
        }
        all[j] = x;
    }
    size_t keep = n < k ? n : k;
    for (size_t i = keep; i < n; i++) {
        dspy_free(all[i].id);
        dspy_free(all[i].title);
        dspy_free(all[i].text);
    }
    *out = all;
    *nout = keep;
    return DSPY_OK;
}

static bool hybrid_local(const void *impl)
{
    const struct hybrid *h = impl;
    return dspy__retriever_local(h->a) && dspy__retriever_local(h->b);
}

static const dspy_retriever *hybrid_rows(const dspy_retriever *self, const void *impl)
{
    const struct hybrid *h = impl;
    const dspy_retriever *a = dspy__retriever_rows(h->a);
    (void)self;
    return a == dspy__retriever_rows(h->b) ? a : NULL; /* fused lists of one corpus */
}

static const struct dspy__retriever_ops hybrid_ops = { "hybrid",    hybrid_search, hybrid_size,
                                                       hybrid_free, hybrid_local,  hybrid_rows };

dspy_status dspy_retriever_hybrid(dspy_retriever *a, dspy_retriever *b, size_t depth,
                                  dspy_retriever **out, struct dspy_error *err)
{
    if (!a || !b || !out)
        return dspy__err(err, DSPY_EINVAL, "dspy_retriever_hybrid: two retrievers are required");
    struct hybrid *h = dspy_calloc(1, sizeof(*h));
    if (!h)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    h->a = dspy__retriever_ref(a);
    h->b = dspy__retriever_ref(b);
    h->depth = depth ? depth : 50;
    return dspy__retriever_wrap(&hybrid_ops, h, out, err);
}
