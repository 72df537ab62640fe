/* Building the BM25 index (retrieve layer): a JSON-lines corpus read and checked line by
 * line, tokenized, and laid out as the memory-mappable image of retrieve_int.h, with
 * rank_bm25's BM25Okapi idf (the epsilon floor over the mean idf, summed in rank_bm25's
 * order so the floor is the same double). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "base/buf.h"
#include "base/status.h"
#include "retrieve/retrieve_int.h"

#define CORPUS_MAX_DOCS 0xfffffff0u
#define CORPUS_MAX_TEXT ((size_t)64 << 20)

static bool is_token_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

size_t dspy_bm25_tokenize(const char *text, size_t len, dspy_token_fn fn, void *userdata)
{
    size_t count = 0;
    for (size_t i = 0; i < len;) {
        while (i < len && !is_token_byte((unsigned char)text[i]))
            i++;
        size_t start = i;
        while (i < len && is_token_byte((unsigned char)text[i]))
            i++;
        if (i > start) {
            if (fn)
                fn(userdata, text + start, i - start);
            count++;
        }
    }
    return count;
}

/* ---- the vocabulary: open addressing over term ids, text in one arena ----------------- */

struct vocab {
    struct dspy_buf strs; /* lower-cased term text */
    uint64_t *str_off;
    uint32_t *str_len, *df;
    size_t n, cap;
    uint32_t *slots; /* term id + 1; 0 = empty */
    size_t nslots;
};

static dspy_status vocab_grow_slots(struct vocab *v)
{
    size_t ns = v->nslots ? v->nslots * 2 : 1024;
    uint32_t *slots = dspy_calloc(ns, sizeof(*slots));
    if (!slots)
        return DSPY_ENOMEM;
    for (size_t t = 0; t < v->n; t++) {
        uint64_t h = XXH3_64bits(v->strs.ptr + v->str_off[t], v->str_len[t]);
        size_t i = (size_t)h & (ns - 1);
        while (slots[i])
            i = (i + 1) & (ns - 1);
        slots[i] = (uint32_t)t + 1;
    }
    dspy_free(v->slots);
    v->slots = slots;
    v->nslots = ns;
    return DSPY_OK;
}

/* The id of the lower-cased token `tok`, added when new. */
static dspy_status vocab_id(struct vocab *v, const char *tok, size_t len, uint32_t *id)
{
    if ((v->n + 1) * 2 > v->nslots && vocab_grow_slots(v))
        return DSPY_ENOMEM;
    uint64_t h = XXH3_64bits(tok, len);
    size_t i = (size_t)h & (v->nslots - 1);
    for (; v->slots[i]; i = (i + 1) & (v->nslots - 1)) {
        uint32_t t = v->slots[i] - 1;
        if (v->str_len[t] == len && !memcmp(v->strs.ptr + v->str_off[t], tok, len)) {
            *id = t;
            return DSPY_OK;
        }
    }
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 1024;
        uint64_t *o = dspy_realloc(v->str_off, nc * sizeof(*o));
        if (!o)
            return DSPY_ENOMEM;
        v->str_off = o;
        uint32_t *l = dspy_realloc(v->str_len, nc * sizeof(*l));
        if (!l)
            return DSPY_ENOMEM;
        v->str_len = l;
        uint32_t *d = dspy_realloc(v->df, nc * sizeof(*d));
        if (!d)
            return DSPY_ENOMEM;
        v->df = d;
        v->cap = nc;
    }
    v->str_off[v->n] = v->strs.len;
    v->str_len[v->n] = (uint32_t)len;
    v->df[v->n] = 0;
    if (dspy__buf_add(&v->strs, tok, len))
        return DSPY_ETOOBIG;
    v->slots[i] = (uint32_t)v->n + 1;
    *id = (uint32_t)v->n++;
    return DSPY_OK;
}

static void vocab_release(struct vocab *v)
{
    dspy__buf_release(&v->strs);
    dspy_free(v->str_off);
    dspy_free(v->str_len);
    dspy_free(v->df);
    dspy_free(v->slots);
}

/* ---- the builder -------------------------------------------------------------------------- */

struct triple {
    uint32_t term, doc, tf;
};

struct builder {
    struct vocab vocab;
    struct dspy_buf blob;
    struct dspy__bm25_doc *docs;
    size_t ndocs, capdocs;
    struct triple *post;
    size_t npost, cappost;
    uint32_t *doc_terms; /* this document's term ids */
    size_t ndt, capdt;
    uint32_t *last_doc; /* per term: the last document holding it + 1 */
    size_t *at;         /* per term: its posting in that document */
    size_t capmark;
    char lower[4096];
    uint64_t tokens;
    dspy_status rc; /* of the token callback */
    /* ids seen, for duplicates: hashes of the id text */
    uint64_t *id_hash;
    uint32_t *id_slot; /* doc + 1 */
    size_t nid_slots;
};

static void on_token(void *userdata, const char *tok, size_t len)
{
    struct builder *b = userdata;
    uint32_t id = 0;
    char *low = b->lower;
    char *heap = NULL;
    if (b->rc)
        return;
    if (len > sizeof(b->lower)) {
        if (!(heap = dspy_malloc(len))) {
            b->rc = DSPY_ENOMEM;
            return;
        }
        low = heap;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)tok[i];
        low[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    b->rc = vocab_id(&b->vocab, low, len, &id);
    dspy_free(heap);
    if (b->rc)
        return;
    if (b->ndt == b->capdt) {
        size_t nc = b->capdt ? b->capdt * 2 : 256;
        uint32_t *d = dspy_realloc(b->doc_terms, nc * sizeof(*d));
        if (!d) {
            b->rc = DSPY_ENOMEM;
            return;
        }
        b->doc_terms = d;
        b->capdt = nc;
    }
    b->doc_terms[b->ndt++] = id;
}

/* Postings of one document, its terms in first-occurrence order: rank_bm25's frequencies
 * dict, whose order is the order new terms enter its nd dict (and so the order of the idf
 * sum). A term's last document and its posting there make the count O(1) per token. */
static dspy_status add_doc_postings(struct builder *b, uint32_t doc)
{
    size_t n = b->ndt;
    if (!n)
        return DSPY_OK;
    if (b->capmark < b->vocab.n) {
        size_t nc = b->vocab.cap;
        uint32_t *last = dspy_realloc(b->last_doc, nc * sizeof(*last));
        if (!last)
            return DSPY_ENOMEM;
        b->last_doc = last;
        size_t *at = dspy_realloc(b->at, nc * sizeof(*at));
        if (!at)
            return DSPY_ENOMEM;
        b->at = at;
        for (size_t t = b->capmark; t < nc; t++)
            b->last_doc[t] = 0;
        b->capmark = nc;
    }
    if (b->npost + n > b->cappost) {
        size_t nc = b->cappost ? b->cappost : 4096;
        while (nc < b->npost + n)
            nc *= 2;
        struct triple *p = dspy_realloc(b->post, nc * sizeof(*p));
        if (!p)
            return DSPY_ENOMEM;
        b->post = p;
        b->cappost = nc;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t t = b->doc_terms[i];
        if (b->last_doc[t] == doc + 1) {
            b->post[b->at[t]].tf++;
            continue;
        }
        b->last_doc[t] = doc + 1;
        b->at[t] = b->npost;
        b->post[b->npost++] = (struct triple){ t, doc, 1 };
        b->vocab.df[t]++;
    }
    return DSPY_OK;
}

static dspy_status line_err(struct dspy_error *err, dspy_status code, const char *path, long line,
                            const char *field, const char *what)
{
    dspy__err(err, code, "%s:%ld: %s%s%s%s", path, line, field ? "field \"" : "",
              field ? field : "", field ? "\": " : "", what);
    if (err) {
        err->line = line;
        dspy__err_file(err, path);
        if (field)
            dspy__err_field(err, field);
    }
    return code;
}

static dspy_status blob_add(struct builder *b, const char *s, size_t len, uint64_t *off)
{
    *off = b->blob.len;
    if (!len)
        return DSPY_OK;
    return dspy__buf_add(&b->blob, s, len);
}

/* A repeated id fails the build: passages are named by id. */
static dspy_status check_id(struct builder *b, const char *id, size_t len, uint32_t doc, bool *dup)
{
    *dup = false;
    if ((b->ndocs + 1) * 2 > b->nid_slots) {
        size_t ns = b->nid_slots ? b->nid_slots * 2 : 1024;
        uint32_t *slots = dspy_calloc(ns, sizeof(*slots));
        uint64_t *hashes = dspy_calloc(ns, sizeof(*hashes));
        if (!slots || !hashes) {
            dspy_free(slots);
            dspy_free(hashes);
            return DSPY_ENOMEM;
        }
        for (size_t i = 0; i < b->nid_slots; i++)
            if (b->id_slot[i]) {
                size_t j = (size_t)b->id_hash[i] & (ns - 1);
                while (slots[j])
                    j = (j + 1) & (ns - 1);
                slots[j] = b->id_slot[i];
                hashes[j] = b->id_hash[i];
            }
        dspy_free(b->id_slot);
        dspy_free(b->id_hash);
        b->id_slot = slots;
        b->id_hash = hashes;
        b->nid_slots = ns;
    }
    uint64_t h = XXH3_64bits(id, len);
    size_t i = (size_t)h & (b->nid_slots - 1);
    for (; b->id_slot[i]; i = (i + 1) & (b->nid_slots - 1)) {
        const struct dspy__bm25_doc *d = &b->docs[b->id_slot[i] - 1];
        if (b->id_hash[i] == h && d->id_len == len && !memcmp(b->blob.ptr + d->id_off, id, len)) {
            *dup = true;
            return DSPY_OK;
        }
    }
    b->id_slot[i] = doc + 1;
    b->id_hash[i] = h;
    return DSPY_OK;
}

static dspy_status read_line(struct builder *b, const char *path, long lineno, const char *line,
                             size_t len, struct dspy_error *err)
{
    json_error_t je;
    char idbuf[32];
    const char *id, *text, *title = NULL;
    size_t id_len, text_len, title_len = 0;
    dspy_status rc = DSPY_OK;
    json_t *obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    if (!obj) {
        char what[256];
        snprintf(what, sizeof(what), "invalid JSON at column %d: %s", je.column, je.text);
        return line_err(err, DSPY_EPARSE, path, lineno, NULL, what);
    }
    json_t *jid = json_object_get(obj, "id"), *jtext = json_object_get(obj, "text"),
           *jtitle = json_object_get(obj, "title");
    if (!json_is_object(obj)) {
        rc = line_err(err, DSPY_EINVAL, path, lineno, NULL, "a passage must be a JSON object");
        goto out;
    }
    if (json_is_string(jid)) {
        id = json_string_value(jid);
        id_len = json_string_length(jid);
    } else if (json_is_integer(jid)) {
        id_len = (size_t)snprintf(idbuf, sizeof(idbuf), "%lld", (long long)json_integer_value(jid));
        id = idbuf;
    } else {
        rc = line_err(err, DSPY_EINVAL, path, lineno, "id",
                      jid ? "must be a string or an integer" : "missing");
        goto out;
    }
    if (!json_is_string(jtext)) {
        rc = line_err(err, DSPY_EINVAL, path, lineno, "text",
                      jtext ? "must be a string" : "missing");
        goto out;
    }
    if (jtitle && !json_is_string(jtitle) && !json_is_null(jtitle)) {
        rc = line_err(err, DSPY_EINVAL, path, lineno, "title", "must be a string");
        goto out;
    }
    text = json_string_value(jtext);
    text_len = json_string_length(jtext);
    if (json_is_string(jtitle)) {
        title = json_string_value(jtitle);
        title_len = json_string_length(jtitle);
    }
    if (text_len > CORPUS_MAX_TEXT || title_len > CORPUS_MAX_TEXT || id_len > 4096) {
        rc = line_err(err, DSPY_ETOOBIG, path, lineno, id_len > 4096 ? "id" : "text", "too long");
        goto out;
    }
    if (b->ndocs >= CORPUS_MAX_DOCS) {
        rc = line_err(err, DSPY_ETOOBIG, path, lineno, NULL, "too many passages");
        goto out;
    }
    if (b->ndocs == b->capdocs) {
        size_t nc = b->capdocs ? b->capdocs * 2 : 1024;
        struct dspy__bm25_doc *d = dspy_realloc(b->docs, nc * sizeof(*d));
        if (!d) {
            rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
            goto out;
        }
        b->docs = d;
        b->capdocs = nc;
    }
    uint32_t doc = (uint32_t)b->ndocs;
    struct dspy__bm25_doc *d = &b->docs[doc];
    memset(d, 0, sizeof(*d));
    bool dup;
    if ((rc = blob_add(b, id, id_len, &d->id_off)) ||
        (rc = blob_add(b, title, title_len, &d->title_off)) ||
        (rc = blob_add(b, text, text_len, &d->text_off))) {
        rc = line_err(err, rc, path, lineno, NULL, "the corpus is too large");
        goto out;
    }
    d->id_len = (uint32_t)id_len;
    d->title_len = title ? (uint32_t)title_len : DSPY__BM25_NO_TITLE;
    d->text_len = (uint32_t)text_len;
    if ((rc = check_id(b, id, id_len, doc, &dup))) {
        rc = dspy__err(err, rc, "out of memory");
        goto out;
    }
    if (dup) {
        char what[160];
        snprintf(what, sizeof(what), "repeats id \"%.100s\"", id);
        rc = line_err(err, DSPY_EINVAL, path, lineno, "id", what);
        goto out;
    }
    b->ndt = 0;
    if (title)
        dspy_bm25_tokenize(title, title_len, on_token, b);
    dspy_bm25_tokenize(text, text_len, on_token, b);
    if (b->rc || (rc = add_doc_postings(b, doc))) {
        rc = dspy__err(err, b->rc ? b->rc : rc, "%s: %s", path, dspy_strerror(b->rc ? b->rc : rc));
        goto out;
    }
    d->len = (uint32_t)b->ndt;
    b->tokens += b->ndt;
    b->ndocs++;
out:
    json_decref(obj);
    return rc;
}

struct sort_term {
    const char *s;
    uint32_t len, id;
};

static int cmp_term(const void *a, const void *b)
{
    const struct sort_term *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);
    if (c)
        return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/* The image: header, terms (by text), strings, postings, docs, blob. */
static dspy_status layout(struct builder *b, unsigned char **image, size_t *size,
                          struct dspy_error *err)
{
    struct vocab *v = &b->vocab;
    size_t nt = v->n;
    dspy_status rc = DSPY_OK;
    struct sort_term *order = dspy_malloc((nt ? nt : 1) * sizeof(*order));
    uint64_t *start = dspy_calloc(nt + 1, sizeof(*start));
    double *idf = dspy_malloc((nt ? nt : 1) * sizeof(*idf));
    unsigned char *img = NULL;
    if (!order || !start || !idf) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out;
    }
    /* rank_bm25: idf = log(N - df + 0.5) - log(df + 0.5); the mean over every term in the
     * order they first appear; negative ones floored to epsilon x mean. */
    double idf_sum = 0, n_docs = (double)b->ndocs;
    for (size_t t = 0; t < nt; t++) {
        double df = (double)v->df[t];
        idf[t] = log(n_docs - df + 0.5) - log(df + 0.5);
        idf_sum += idf[t];
    }
    double eps = DSPY_BM25_EPSILON * (nt ? idf_sum / (double)nt : 0.0);
    for (size_t t = 0; t < nt; t++)
        if (idf[t] < 0)
            idf[t] = eps;
    for (size_t t = 0; t < nt; t++)
        order[t] = (struct sort_term){ v->strs.ptr + v->str_off[t], v->str_len[t], (uint32_t)t };
    qsort(order, nt, sizeof(*order), cmp_term);

    struct dspy__bm25_header h;
    memset(&h, 0, sizeof(h));
    memcpy(h.magic, DSPY__BM25_MAGIC, 8);
    h.version = DSPY__BM25_VERSION;
    h.header_size = sizeof(h);
    h.docs = b->ndocs;
    h.terms = nt;
    h.postings = b->npost;
    h.tokens = b->tokens;
    h.terms_off = sizeof(h);
    h.strs_off = h.terms_off + nt * sizeof(struct dspy__bm25_term);
    h.strs_len = v->strs.len;
    h.post_off = align8(h.strs_off + h.strs_len);
    h.docs_off = h.post_off + b->npost * sizeof(struct dspy__bm25_posting);
    h.blob_off = h.docs_off + b->ndocs * sizeof(struct dspy__bm25_doc);
    h.blob_len = b->blob.len;
    h.file_size = align8(h.blob_off + h.blob_len);
    if (!(img = dspy_calloc(1, h.file_size))) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory (index of %llu bytes)",
                       (unsigned long long)h.file_size);
        goto out;
    }
    /* Postings by term (sorted order), each term's by document: a counting sort, stable. */
    uint32_t *pos_of = dspy_malloc((nt ? nt : 1) * sizeof(*pos_of));
    if (!pos_of) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t r = 0; r < nt; r++)
        pos_of[order[r].id] = (uint32_t)r;
    for (size_t r = 0, acc = 0; r < nt; r++) {
        start[r] = acc;
        acc += v->df[order[r].id];
    }
    struct dspy__bm25_term *terms = (void *)(img + h.terms_off);
    struct dspy__bm25_posting *post = (void *)(img + h.post_off);
    for (size_t r = 0; r < nt; r++) {
        uint32_t t = order[r].id;
        terms[r] = (struct dspy__bm25_term){ v->str_off[t], v->str_len[t], v->df[t], start[r],
                                             idf[t] };
    }
    for (size_t i = 0; i < b->npost; i++) {
        uint32_t r = pos_of[b->post[i].term];
        post[start[r]++] = (struct dspy__bm25_posting){ b->post[i].doc, b->post[i].tf };
    }
    dspy_free(pos_of);
    if (v->strs.len)
        memcpy(img + h.strs_off, v->strs.ptr, v->strs.len);
    if (b->ndocs)
        memcpy(img + h.docs_off, b->docs, b->ndocs * sizeof(struct dspy__bm25_doc));
    if (b->blob.len)
        memcpy(img + h.blob_off, b->blob.ptr, b->blob.len);
    h.checksum = XXH3_64bits(img + sizeof(h), h.file_size - sizeof(h));
    memcpy(img, &h, sizeof(h));
    *image = img;
    *size = h.file_size;
    img = NULL;
out:
    dspy_free(img);
    dspy_free(order);
    dspy_free(start);
    dspy_free(idf);
    return rc;
}

static void builder_release(struct builder *b)
{
    vocab_release(&b->vocab);
    dspy__buf_release(&b->blob);
    dspy_free(b->docs);
    dspy_free(b->post);
    dspy_free(b->doc_terms);
    dspy_free(b->last_doc);
    dspy_free(b->at);
    dspy_free(b->id_hash);
    dspy_free(b->id_slot);
}

dspy_status dspy__bm25_build_text(const char *path, const char *map, size_t len,
                                  unsigned char **image, size_t *size,
                                  struct dspy_index_build_stats *stats, struct dspy_error *err)
{
    struct builder b;
    dspy_status rc = DSPY_OK;
    memset(&b, 0, sizeof(b));
    dspy__buf_init(&b.vocab.strs, (size_t)4 << 30);
    dspy__buf_init(&b.blob, (size_t)16 << 30);
    long lineno = 0;
    for (size_t i = 0; i < len && !rc;) {
        const char *nl = memchr(map + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - map) : len, n = end - i;
        lineno++;
        if (n && map[i + n - 1] == '\r')
            n--;
        size_t k = 0;
        while (k < n && (map[i + k] == ' ' || map[i + k] == '\t'))
            k++;
        if (k == n)
            rc = line_err(err, DSPY_EINVAL, path, lineno, NULL,
                          "blank line (each line must be one passage)");
        else
            rc = read_line(&b, path, lineno, map + i, n, err);
        i = end + 1;
    }
    if (!rc && !b.ndocs) {
        rc = dspy__err(err, DSPY_EINVAL, "%s: the corpus has no passages", path);
        dspy__err_file(err, path);
    }
    if (!rc)
        rc = layout(&b, image, size, err);
    if (!rc && stats) {
        stats->docs = b.ndocs;
        stats->terms = b.vocab.n;
        stats->postings = b.npost;
        stats->tokens = b.tokens;
        stats->bytes = *size;
    }
    builder_release(&b);
    return rc;
}

dspy_status dspy__bm25_build_image(const char *path, unsigned char **image, size_t *size,
                                   struct dspy_index_build_stats *stats, struct dspy_error *err)
{
    struct stat st;
    dspy_status rc = DSPY_OK;
    const char *map = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = dspy__err(err, errno == ENOENT ? DSPY_ENOTFOUND : DSPY_EIO, "%s: cannot open: %s",
                       path, strerror(errno));
        dspy__err_file(err, path);
        goto out;
    }
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        rc = dspy__err(err, DSPY_EIO, "%s: not a regular file", path);
        dspy__err_file(err, path);
        goto close_fd;
    }
    size_t len = (size_t)st.st_size;
    if (len && (map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED) {
        map = NULL;
        rc = dspy__err(err, DSPY_EIO, "%s: cannot map: %s", path, strerror(errno));
        dspy__err_file(err, path);
        goto close_fd;
    }
    rc = dspy__bm25_build_text(path, map, len, image, size, stats, err);
    if (map)
        munmap((void *)(uintptr_t)map, len);
close_fd:
    close(fd);
out:
    return rc;
}

dspy_status dspy_index_build(const char *corpus_path, const char *out_dir,
                             struct dspy_index_build_stats *stats, struct dspy_error *err)
{
    unsigned char *img = NULL;
    size_t size = 0;
    char path[4096], tmp[4200];
    dspy_status rc;
    if (!corpus_path || !out_dir)
        return dspy__err(err, DSPY_EINVAL, "dspy_index_build: corpus and out_dir are required");
    if ((size_t)snprintf(path, sizeof(path), "%s/bm25.idx", out_dir) >= sizeof(path))
        return dspy__err(err, DSPY_EINVAL, "%s: path too long", out_dir);
    if ((rc = dspy__bm25_build_image(corpus_path, &img, &size, stats, err)))
        return rc;
    if (mkdir(out_dir, 0777) && errno != EEXIST) {
        rc = dspy__err(err, DSPY_EIO, "%s: cannot create: %s", out_dir, strerror(errno));
        dspy__err_file(err, out_dir);
        goto out;
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        rc = dspy__err(err, DSPY_EIO, "%s: cannot create: %s", tmp, strerror(errno));
        dspy__err_file(err, tmp);
        goto out;
    }
    bool ok = fwrite(img, 1, size, f) == size;
    ok = !fflush(f) && ok;
    ok = !fsync(fileno(f)) && ok;
    ok = !fclose(f) && ok;
    if (!ok || rename(tmp, path)) {
        rc = dspy__err(err, DSPY_EIO, "%s: cannot write: %s", path, strerror(errno));
        dspy__err_file(err, path);
        unlink(tmp);
    }
out:
    dspy_free(img);
    return rc;
}

dspy_status dspy_retriever_bm25_from_corpus(const char *corpus_path, dspy_retriever **out,
                                            struct dspy_error *err)
{
    unsigned char *img = NULL;
    size_t size = 0;
    if (!corpus_path || !out)
        return dspy__err(err, DSPY_EINVAL, "dspy_retriever_bm25_from_corpus: arguments required");
    dspy_status rc = dspy__bm25_build_image(corpus_path, &img, &size, NULL, err);
    if (rc)
        return rc;
    return dspy__bm25_open_image(img, size, true, corpus_path, out, err);
}
