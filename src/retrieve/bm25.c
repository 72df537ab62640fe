/* The BM25 retriever (retrieve layer): an index image, memory-mapped from bm25.idx or built
 * in memory, checked whole before use, and searched with rank_bm25's BM25Okapi arithmetic
 * in its order of operations, so scores are the same doubles. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "base/buf.h"
#include "base/heap.h"
#include "base/status.h"
#include "retrieve/retrieve_int.h"

#define QUERY_MAX ((size_t)1 << 20)

/* Per-search scratch: scores of touched documents, kept on a free list. */
struct scratch {
    struct scratch *next;
    double *score;
    uint32_t *stamp; /* generation a document's score belongs to */
    uint32_t *touched;
    uint32_t gen;
};

struct bm25 {
    unsigned char *image;
    size_t size;
    bool owned; /* dspy_free'd, else munmap'd */
    const struct dspy__bm25_header *h;
    const struct dspy__bm25_term *terms;
    const char *strs;
    const struct dspy__bm25_posting *post;
    const struct dspy__bm25_doc *docs;
    const char *blob;
    double *norm; /* per document: k1 * (1 - b + b * len / avgdl), rank_bm25's denominator part */
    pthread_mutex_t lock;
    struct scratch *free_scratch;
};

static dspy_status corrupt(struct dspy_error *err, const char *origin, const char *what)
{
    dspy__err(err, DSPY_ECORRUPT,
              "%s: not a valid BM25 index: %s (rebuild it with 'dspyc index build')", origin, what);
    dspy__err_file(err, origin);
    return DSPY_ECORRUPT;
}

static bool section_ok(uint64_t off, uint64_t count, uint64_t size, uint64_t file)
{
    if (off > file || (off & 7))
        return false;
    if (size && count > (file - off) / size)
        return false;
    return true;
}

dspy_status dspy__bm25_validate(const unsigned char *image, size_t size, const char *origin,
                                struct dspy_error *err)
{
    struct dspy__bm25_header h;
    if (size < sizeof(h))
        return corrupt(err, origin, "shorter than its header (cut short?)");
    memcpy(&h, image, sizeof(h));
    if (memcmp(h.magic, DSPY__BM25_MAGIC, 8))
        return corrupt(err, origin, "wrong magic (not a dspyc BM25 index)");
    if (h.version != DSPY__BM25_VERSION) {
        char what[96];
        snprintf(what, sizeof(what), "format version %u, this build reads %u", h.version,
                 DSPY__BM25_VERSION);
        return corrupt(err, origin, what);
    }
    if (h.header_size != sizeof(h))
        return corrupt(err, origin, "wrong header size");
    if (h.file_size != size) {
        char what[128];
        snprintf(what, sizeof(what), "%zu bytes, its header says %llu (cut short?)", size,
                 (unsigned long long)h.file_size);
        return corrupt(err, origin, what);
    }
    if (!h.docs || h.docs > 0xfffffff0u)
        return corrupt(err, origin, "bad document count");
    if (!section_ok(h.terms_off, h.terms, sizeof(struct dspy__bm25_term), size) ||
        h.strs_off > size || h.strs_len > size - h.strs_off ||
        !section_ok(h.post_off, h.postings, sizeof(struct dspy__bm25_posting), size) ||
        !section_ok(h.docs_off, h.docs, sizeof(struct dspy__bm25_doc), size) || h.blob_off > size ||
        h.blob_len > size - h.blob_off)
        return corrupt(err, origin, "a section lies outside the file");
    if (XXH3_64bits(image + sizeof(h), size - sizeof(h)) != h.checksum)
        return corrupt(err, origin, "checksum mismatch (the file is damaged)");
    const struct dspy__bm25_term *t = (const void *)(image + h.terms_off);
    const struct dspy__bm25_posting *p = (const void *)(image + h.post_off);
    const struct dspy__bm25_doc *d = (const void *)(image + h.docs_off);
    uint64_t tokens = 0;
    for (uint64_t i = 0; i < h.terms; i++) {
        if (t[i].str_off > h.strs_len || t[i].str_len > h.strs_len - t[i].str_off ||
            t[i].post_start > h.postings || t[i].df > h.postings - t[i].post_start || !t[i].df)
            return corrupt(err, origin, "a term entry points outside its section");
        if (i) {
            const char *a = (const char *)image + h.strs_off + t[i - 1].str_off;
            const char *b = (const char *)image + h.strs_off + t[i].str_off;
            size_t n = t[i - 1].str_len < t[i].str_len ? t[i - 1].str_len : t[i].str_len;
            int c = memcmp(a, b, n);
            if (c > 0 || (!c && t[i - 1].str_len >= t[i].str_len))
                return corrupt(err, origin, "terms out of order");
        }
    }
    for (uint64_t i = 0; i < h.postings; i++)
        if (p[i].doc >= h.docs || !p[i].tf)
            return corrupt(err, origin, "a posting names a document that does not exist");
    for (uint64_t i = 0; i < h.docs; i++) {
        if (d[i].id_off > h.blob_len || d[i].id_len > h.blob_len - d[i].id_off ||
            d[i].text_off > h.blob_len || d[i].text_len > h.blob_len - d[i].text_off ||
            (d[i].title_len != DSPY__BM25_NO_TITLE &&
             (d[i].title_off > h.blob_len || d[i].title_len > h.blob_len - d[i].title_off)))
            return corrupt(err, origin, "a document entry points outside the text section");
        tokens += d[i].len;
    }
    if (tokens != h.tokens)
        return corrupt(err, origin, "document lengths do not add up");
    return DSPY_OK;
}

static void bm25_free(void *impl)
{
    struct bm25 *x = impl;
    if (!x)
        return;
    for (struct scratch *s = x->free_scratch, *next; s; s = next) {
        next = s->next;
        dspy_free(s->score);
        dspy_free(s->stamp);
        dspy_free(s->touched);
        dspy_free(s);
    }
    pthread_mutex_destroy(&x->lock);
    if (x->owned)
        dspy_free(x->image);
    else if (x->image)
        munmap(x->image, x->size);
    dspy_free(x->norm);
    dspy_free(x);
}

static uint64_t bm25_size(const void *impl)
{
    return ((const struct bm25 *)impl)->h->docs;
}

static struct scratch *scratch_get(struct bm25 *x)
{
    pthread_mutex_lock(&x->lock);
    struct scratch *s = x->free_scratch;
    if (s)
        x->free_scratch = s->next;
    pthread_mutex_unlock(&x->lock);
    if (s)
        return s;
    size_t n = (size_t)x->h->docs;
    if (!(s = dspy_calloc(1, sizeof(*s))) || !(s->score = dspy_malloc(n * sizeof(double))) ||
        !(s->stamp = dspy_calloc(n, sizeof(uint32_t))) ||
        !(s->touched = dspy_malloc(n * sizeof(uint32_t)))) {
        if (s) {
            dspy_free(s->score);
            dspy_free(s->stamp);
            dspy_free(s);
        }
        return NULL;
    }
    return s;
}

static void scratch_put(struct bm25 *x, struct scratch *s)
{
    pthread_mutex_lock(&x->lock);
    s->next = x->free_scratch;
    x->free_scratch = s;
    pthread_mutex_unlock(&x->lock);
}

static const struct dspy__bm25_term *find_term(const struct bm25 *x, const char *tok, size_t len)
{
    size_t lo = 0, hi = (size_t)x->h->terms;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct dspy__bm25_term *t = &x->terms[mid];
        size_t n = t->str_len < len ? t->str_len : len;
        int c = memcmp(x->strs + t->str_off, tok, n);
        if (!c)
            c = t->str_len < len ? -1 : t->str_len > len;
        if (!c)
            return t;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

struct query_ctx {
    struct bm25 *x;
    struct scratch *s;
    size_t ntouched;
    char low[256];
};

/* rank_bm25: score += idf * (tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))), per
 * query token in order, repeats included. */
static void on_query_token(void *userdata, const char *tok, size_t len)
{
    struct query_ctx *q = userdata;
    if (len > sizeof(q->low))
        return; /* no indexed term is that long in practice; a miss adds nothing */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)tok[i];
        q->low[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    const struct dspy__bm25_term *t = find_term(q->x, q->low, len);
    if (!t)
        return;
    const struct dspy__bm25_posting *p = q->x->post + t->post_start;
    const double *norm = q->x->norm;
    struct scratch *s = q->s;
    double idf = t->idf, k1p1 = DSPY_BM25_K1 + 1;
    for (uint32_t i = 0; i < t->df; i++) {
        uint32_t d = p[i].doc;
        double tf = (double)p[i].tf;
        if (s->stamp[d] != s->gen) {
            s->stamp[d] = s->gen;
            s->score[d] = 0.0;
            s->touched[q->ntouched++] = d;
        }
        s->score[d] += idf * (tf * k1p1 / (tf + norm[d]));
    }
}

/* A candidate of the top-k heap (the base layer's): worse ones come out first, so the root
 * is the worst kept. Worse: a lower score, then the later document. */
struct hit {
    double score;
    uint32_t doc;
};

static bool worse(const void *a, const void *b)
{
    const struct hit *x = a, *y = b;
    return x->score < y->score || (x->score == y->score && x->doc > y->doc);
}

static const struct dspy__heap_type HIT_HEAP = { .size = sizeof(struct hit), .before = worse };

static char *dup_n(const char *s, size_t n)
{
    return dspy_strndup(s, n);
}

static dspy_status fill_passage(const struct bm25 *x, uint32_t d, double score,
                                struct dspy_passage *out)
{
    const struct dspy__bm25_doc *doc = &x->docs[d];
    memset(out, 0, sizeof(*out));
    out->pid = d;
    out->score = score;
    if (!(out->id = dup_n(x->blob + doc->id_off, doc->id_len)))
        return DSPY_ENOMEM;
    if (doc->title_len == DSPY__BM25_NO_TITLE) {
        out->text = dup_n(x->blob + doc->text_off, doc->text_len);
        return out->text ? DSPY_OK : DSPY_ENOMEM;
    }
    if (!(out->title = dup_n(x->blob + doc->title_off, doc->title_len)))
        return DSPY_ENOMEM;
    size_t n = (size_t)doc->title_len + 3 + doc->text_len;
    if (!(out->text = dspy_malloc(n + 1)))
        return DSPY_ENOMEM;
    memcpy(out->text, x->blob + doc->title_off, doc->title_len);
    memcpy(out->text + doc->title_len, " | ", 3);
    memcpy(out->text + doc->title_len + 3, x->blob + doc->text_off, doc->text_len);
    out->text[n] = '\0';
    return DSPY_OK;
}

static dspy_status bm25_search(void *impl, const char *query, size_t k, struct dspy_passage **out,
                               size_t *nout, struct dspy_error *err)
{
    struct bm25 *x = impl;
    size_t qlen = strlen(query);
    dspy_status rc = DSPY_OK;
    if (qlen > QUERY_MAX)
        return dspy__err(err, DSPY_ETOOBIG, "query of %zu bytes (at most %zu)", qlen, QUERY_MAX);
    struct scratch *s = scratch_get(x);
    if (!s)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    if (++s->gen == 0) { /* wrapped: stamps from long ago could collide */
        memset(s->stamp, 0, (size_t)x->h->docs * sizeof(uint32_t));
        s->gen = 1;
    }
    struct query_ctx q = { .x = x, .s = s };
    dspy_bm25_tokenize(query, qlen, on_query_token, &q);
    /* The k best of the touched documents: a heap of the best so far, worst at the root. */
    size_t n = q.ntouched < k ? q.ntouched : k;
    struct dspy__heap heap;
    struct hit *kept = dspy_malloc((n ? n : 1) * sizeof(*kept));
    struct dspy_passage *res = dspy_calloc(n ? n : 1, sizeof(*res));
    if (!kept || !res) {
        dspy_free(kept);
        dspy_free(res);
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out;
    }
    dspy__heap_init_over(&heap, &HIT_HEAP, kept, n);
    for (size_t i = 0; n && i < q.ntouched; i++) {
        struct hit h = { s->score[s->touched[i]], s->touched[i] };
        if (dspy__heap_len(&heap) < n)
            dspy__heap_push(&heap, &h); /* cannot fail: below capacity */
        else if (worse(dspy__heap_top(&heap), &h))
            dspy__heap_replace_top(&heap, &h);
    }
    /* Pop worst first into the back: best first in the result. */
    for (size_t m = n; m > 0; m--) {
        struct hit h;
        dspy__heap_pop(&heap, &h);
        if ((rc = fill_passage(x, h.doc, h.score, &res[m - 1]))) {
            dspy_passages_free(res, n);
            res = NULL;
            dspy_free(kept);
            rc = dspy__err(err, rc, "out of memory");
            goto out;
        }
    }
    dspy_free(kept);
    *out = res;
    *nout = n;
out:
    scratch_put(x, s);
    return rc;
}

static bool bm25_local(const void *impl)
{
    (void)impl;
    return true;
}

static const dspy_retriever *bm25_rows(const dspy_retriever *self, const void *impl)
{
    (void)impl;
    return self;
}

static const struct dspy__retriever_ops bm25_ops = { "bm25",    bm25_search, bm25_size,
                                                     bm25_free, bm25_local,  bm25_rows };

uint64_t dspy__bm25_checksum(const dspy_retriever *r)
{
    return r && r->ops == &bm25_ops ? ((const struct bm25 *)r->impl)->h->checksum : 0;
}

dspy_status dspy__bm25_passage(dspy_retriever *r, uint32_t doc, double score,
                               struct dspy_passage *out)
{
    const struct bm25 *x = r->impl;
    if (r->ops != &bm25_ops || doc >= x->h->docs)
        return DSPY_EINVAL;
    dspy_status rc = fill_passage(x, doc, score, out);
    if (rc) {
        dspy_free(out->id);
        dspy_free(out->title);
        dspy_free(out->text);
        memset(out, 0, sizeof(*out));
    }
    return rc;
}

dspy_status dspy__bm25_open_image(unsigned char *image, size_t size, bool owned, const char *origin,
                                  dspy_retriever **out, struct dspy_error *err)
{
    dspy_status rc = dspy__bm25_validate(image, size, origin ? origin : "<index>", err);
    struct bm25 *x = NULL;
    if (rc)
        goto fail;
    if (!(x = dspy_calloc(1, sizeof(*x)))) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto fail;
    }
    pthread_mutex_init(&x->lock, NULL);
    x->image = image;
    x->size = size;
    x->owned = owned;
    x->h = (const void *)image;
    x->terms = (const void *)(image + x->h->terms_off);
    x->strs = (const char *)image + x->h->strs_off;
    x->post = (const void *)(image + x->h->post_off);
    x->docs = (const void *)(image + x->h->docs_off);
    x->blob = (const char *)image + x->h->blob_off;
    /* rank_bm25: avgdl = num_doc / corpus_size; the denominator's k1 * (1 - b + b * dl /
     * avgdl), evaluated left to right as Python does. */
    double avgdl = (double)x->h->tokens / (double)x->h->docs;
    if (!(x->norm = dspy_malloc((size_t)x->h->docs * sizeof(double)))) {
        bm25_free(x);
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    }
    for (uint64_t d = 0; d < x->h->docs; d++)
        x->norm[d] = DSPY_BM25_K1 *
                     (1 - DSPY_BM25_B + DSPY_BM25_B * (double)x->docs[d].len / avgdl);
    return dspy__retriever_wrap(&bm25_ops, x, out, err);
fail:
    if (owned)
        dspy_free(image);
    else
        munmap(image, size);
    return rc;
}

dspy_status dspy_retriever_open_bm25(const char *index_path, dspy_retriever **out,
                                     struct dspy_error *err)
{
    char path[4096];
    struct stat st;
    if (!index_path || !out)
        return dspy__err(err, DSPY_EINVAL, "dspy_retriever_open_bm25: arguments required");
    if (!stat(index_path, &st) && S_ISDIR(st.st_mode))
        snprintf(path, sizeof(path), "%s/bm25.idx", index_path);
    else
        snprintf(path, sizeof(path), "%s", index_path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        dspy_status code = errno == ENOENT ? DSPY_ENOTFOUND : DSPY_EIO;
        dspy__err(err, code, "%s: cannot open the index: %s", path, strerror(errno));
        dspy__err_file(err, path);
        return code;
    }
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        dspy__err(err, DSPY_EIO, "%s: not a regular file", path);
        dspy__err_file(err, path);
        return DSPY_EIO;
    }
    size_t size = (size_t)st.st_size;
    if (size < sizeof(struct dspy__bm25_header)) {
        close(fd);
        return corrupt(err, path, "shorter than its header (cut short?)");
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        dspy__err(err, DSPY_EIO, "%s: cannot map: %s", path, strerror(errno));
        dspy__err_file(err, path);
        return DSPY_EIO;
    }
    return dspy__bm25_open_image(map, size, false, path, out, err);
}
