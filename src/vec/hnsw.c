/* HNSW approximate nearest-neighbour index (vec layer): a layered proximity graph
 * (Malkov & Yashunin 2016, the hnswlib layout: a fixed-stride level-0 link array plus
 * per-node upper levels), built one vector at a time, with deletion by marking, a
 * checksummed file format validated link by link on load, and exact f32 distances to the
 * stored vectors for every candidate returned. Written in C rather than wrapping hnswlib
 * (docs/semantic-cache.md says why). */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include <dspyc/vec.h>

#include "base/heap.h"
#include "base/status.h"
#include "vec/vec_int.h"

#define NONE UINT32_MAX
#define MAX_LEVEL 31
#define MAX_DIM 65536u
#define MAX_M 256u
static const char file_magic[16] = "dspyc-hnsw-v1\n\0";

struct dspy_vec_hnsw {
    size_t d;
    unsigned m, m0, efc, efs;
    enum dspy_vec_metric metric;
    uint64_t rng;
    size_t n, cap, ndeleted;
    float *vecs;      /* cap * d */
    uint64_t *labels; /* cap */
    uint8_t *levels;  /* cap */
    uint8_t *deleted; /* cap */
    uint32_t *links0; /* cap * (m0 + 1): count, then ids */
    uint32_t **upper; /* cap: NULL, or levels[i] * (m + 1) for levels 1..levels[i] */
    uint32_t entry;   /* NONE when empty */
    int maxlevel;
    /* scratch, reused by every call (one thread at a time) */
    uint32_t *visited; /* cap: generation tags */
    uint32_t gen;
    struct dspy__heap cand, res; /* search_layer's frontier (nearest first), result (farthest
                                    first) */
    struct cand *sel;            /* selection scratch */
    size_t sel_cap;
    float (*dot)(const float *, const float *, size_t);
};

struct cand {
    float dist;
    uint32_t id;
};

static bool nearer(const void *a, const void *b)
{
    return ((const struct cand *)a)->dist < ((const struct cand *)b)->dist;
}
static bool farther(const void *a, const void *b)
{
    return ((const struct cand *)a)->dist > ((const struct cand *)b)->dist;
}
static const struct dspy__heap_type nearest_first = { sizeof(struct cand), nearer, NULL };
static const struct dspy__heap_type farthest_first = { sizeof(struct cand), farther, NULL };

/* Smaller is nearer: 1 - dot for IP, the squared distance for L2. */
static float dist(const struct dspy_vec_hnsw *h, const float *a, const float *b)
{
    if (h->metric == DSPY_VEC_L2)
        return dspy__vec_kern()->l2sq(a, b, h->d);
    return 1.0f - h->dot(a, b, h->d);
}

static float score_of(const struct dspy_vec_hnsw *h, float d)
{
    return h->metric == DSPY_VEC_L2 ? d : 1.0f - d;
}

static const float *vec_at(const struct dspy_vec_hnsw *h, uint32_t i)
{
    return h->vecs + (size_t)i * h->d;
}

static uint32_t *links(const struct dspy_vec_hnsw *h, uint32_t i, int level)
{
    if (!level)
        return h->links0 + (size_t)i * (h->m0 + 1);
    return h->upper[i] + (size_t)(level - 1) * (h->m + 1);
}

static unsigned max_links(const struct dspy_vec_hnsw *h, int level)
{
    return level ? h->m : h->m0;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static dspy_status check_options(const struct dspy_vec_hnsw_options *o, struct dspy_error *err)
{
    if (!o->dim || o->dim > MAX_DIM)
        return dspy__err(err, DSPY_EINVAL, "hnsw: dim must be 1..%u (got %zu)", MAX_DIM, o->dim);
    if (o->metric != DSPY_VEC_IP && o->metric != DSPY_VEC_L2)
        return dspy__err(err, DSPY_EINVAL, "hnsw: metric must be IP or L2");
    if (o->m < 2 || o->m > MAX_M)
        return dspy__err(err, DSPY_EINVAL, "hnsw: m must be 2..%u (got %u)", MAX_M, o->m);
    if (!o->ef_construction || !o->ef_search || o->ef_construction > 65536 || o->ef_search > 65536)
        return dspy__err(err, DSPY_EINVAL, "hnsw: ef_construction and ef_search must be 1..65536");
    return DSPY_OK;
}

static struct dspy_vec_hnsw *alloc_index(const struct dspy_vec_hnsw_options *o)
{
    struct dspy_vec_hnsw *h = dspy_calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->d = o->dim;
    h->m = o->m;
    h->m0 = 2 * o->m;
    h->efc = o->ef_construction;
    h->efs = o->ef_search;
    h->metric = o->metric;
    h->rng = o->seed ? o->seed : 0x9e3779b97f4a7c15ull;
    h->entry = NONE;
    h->maxlevel = -1;
    h->dot = dspy__vec_kern()->dot;
    dspy__heap_init(&h->cand, &nearest_first);
    dspy__heap_init(&h->res, &farthest_first);
    return h;
}

dspy_status dspy_vec_hnsw_new(const struct dspy_vec_hnsw_options *opts, dspy_vec_hnsw **out,
                              struct dspy_error *err)
{
    dspy_status rc;
    if (!out)
        return dspy__err(err, DSPY_EINVAL, "hnsw: out is NULL");
    *out = NULL;
    if (!opts)
        return dspy__err(err, DSPY_EINVAL, "hnsw: options are NULL (dim is required)");
    if ((rc = check_options(opts, err)))
        return rc;
    if (!(*out = alloc_index(opts)))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    return DSPY_OK;
}

void dspy_vec_hnsw_free(dspy_vec_hnsw *h)
{
    if (!h)
        return;
    if (h->upper)
        for (size_t i = 0; i < h->n; i++)
            dspy_free(h->upper[i]);
    dspy_free(h->upper);
    dspy_free(h->vecs);
    dspy_free(h->labels);
    dspy_free(h->levels);
    dspy_free(h->deleted);
    dspy_free(h->links0);
    dspy_free(h->visited);
    dspy_free(h->sel);
    dspy__heap_release(&h->cand);
    dspy__heap_release(&h->res);
    dspy_free(h);
}

/* Grow every per-node array to `cap`; on failure the arrays already grown keep their
 * contents and the index stays usable at its old capacity. */
static bool grow(struct dspy_vec_hnsw *h, size_t cap)
{
    void *p;
#define GROW(field, per)                                                    \
    do {                                                                    \
        if (!(p = dspy_realloc(h->field, cap * (per) * sizeof(*h->field)))) \
            return false;                                                   \
        h->field = p;                                                       \
    } while (0)
    GROW(vecs, h->d);
    GROW(labels, 1);
    GROW(levels, 1);
    GROW(deleted, 1);
    GROW(links0, (size_t)h->m0 + 1);
    GROW(upper, 1);
    GROW(visited, 1);
#undef GROW
    memset(h->visited + h->cap, 0, (cap - h->cap) * sizeof(*h->visited));
    h->cap = cap;
    return true;
}

/* ---- search --------------------------------------------------------------------------- */

static void next_gen(struct dspy_vec_hnsw *h)
{
    if (++h->gen == 0) {
        memset(h->visited, 0, h->cap * sizeof(*h->visited));
        h->gen = 1;
    }
}

/* Greedy descent at one upper level: the nearest node reachable from `ep`. */
static struct cand greedy(const struct dspy_vec_hnsw *h, const float *q, struct cand ep, int level)
{
    for (bool moved = true; moved;) {
        moved = false;
        const uint32_t *l = links(h, ep.id, level);
        for (uint32_t j = 1; j <= l[0]; j++) {
            float dd = dist(h, q, vec_at(h, l[j]));
            if (dd < ep.dist) {
                ep = (struct cand){ dd, l[j] };
                moved = true;
            }
        }
    }
    return ep;
}

/* Beam search at one level from `ep`: afterwards h->res holds up to ef nearest nodes
 * (farthest first). Deleted nodes are walked through but, when skip_deleted, not kept. */
static dspy_status search_layer(struct dspy_vec_hnsw *h, const float *q, struct cand ep,
                                unsigned ef, int level, bool skip_deleted)
{
    dspy_status rc;
    dspy__heap_clear(&h->cand);
    dspy__heap_clear(&h->res);
    next_gen(h);
    h->visited[ep.id] = h->gen;
    if ((rc = dspy__heap_push(&h->cand, &ep)))
        return rc;
    if (!(skip_deleted && h->deleted[ep.id]) && (rc = dspy__heap_push(&h->res, &ep)))
        return rc;
    float bound = ep.dist;
    struct cand c;
    while (dspy__heap_pop(&h->cand, &c)) {
        if (c.dist > bound && dspy__heap_len(&h->res) >= ef)
            break;
        const uint32_t *l = links(h, c.id, level);
        for (uint32_t j = 1; j <= l[0]; j++) {
            uint32_t e = l[j];
            if (h->visited[e] == h->gen)
                continue;
            h->visited[e] = h->gen;
            __builtin_prefetch(vec_at(h, l[j + 1 <= l[0] ? j + 1 : j]));
            float dd = dist(h, q, vec_at(h, e));
            size_t nres = dspy__heap_len(&h->res);
            if (nres < ef || dd < bound) {
                struct cand x = { dd, e };
                if ((rc = dspy__heap_push(&h->cand, &x)))
                    return rc;
                if (!(skip_deleted && h->deleted[e])) {
                    if (nres < ef) {
                        if ((rc = dspy__heap_push(&h->res, &x)))
                            return rc;
                    } else {
                        dspy__heap_replace_top(&h->res, &x);
                    }
                }
                if (dspy__heap_len(&h->res))
                    bound = ((struct cand *)dspy__heap_top(&h->res))->dist;
            }
        }
    }
    return DSPY_OK;
}

/* Drain h->res into h->sel, nearest first; returns the count. */
static size_t drain_sorted(struct dspy_vec_hnsw *h)
{
    size_t n = dspy__heap_len(&h->res);
    for (size_t i = n; i > 0; i--)
        dspy__heap_pop(&h->res, &h->sel[i - 1]);
    return n;
}

static bool reserve_sel(struct dspy_vec_hnsw *h, size_t n)
{
    if (h->sel_cap >= n)
        return true;
    struct cand *s = dspy_realloc(h->sel, n * sizeof(*s));
    if (!s)
        return false;
    h->sel = s;
    h->sel_cap = n;
    return true;
}

dspy_status dspy_vec_hnsw_search(dspy_vec_hnsw *h, const float *q, size_t k, unsigned ef,
                                 float *scores, uint32_t *nodes, size_t *found,
                                 struct dspy_error *err)
{
    dspy_status rc;
    if (found)
        *found = 0;
    if (!h || !q || !found || (k && (!scores || !nodes)))
        return dspy__err(err, DSPY_EINVAL, "hnsw search: NULL argument");
    if (!k || h->entry == NONE || h->n == h->ndeleted)
        return DSPY_OK;
    if (!ef)
        ef = h->efs;
    if (ef < k)
        ef = (unsigned)(k < 65536 ? k : 65536);
    if (!reserve_sel(h, (size_t)ef + 1))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    struct cand ep = { dist(h, q, vec_at(h, h->entry)), h->entry };
    for (int l = h->maxlevel; l > 0; l--)
        ep = greedy(h, q, ep, l);
    if ((rc = search_layer(h, q, ep, ef, 0, true)))
        return dspy__err(err, rc, "out of memory");
    size_t n = drain_sorted(h);
    if (n > k)
        n = k;
    for (size_t i = 0; i < n; i++) {
        /* the candidates' distances are the exact f32 ones to the stored vectors */
        scores[i] = score_of(h, h->sel[i].dist);
        nodes[i] = h->sel[i].id;
    }
    *found = n;
    return DSPY_OK;
}

/* ---- insertion ------------------------------------------------------------------------ */

static uint64_t next_rand(struct dspy_vec_hnsw *h)
{
    uint64_t x = h->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return h->rng = x;
}

static int random_level(struct dspy_vec_hnsw *h)
{
    double u = ((double)(next_rand(h) >> 11) + 0.5) / 9007199254740992.0;
    int l = (int)(-log(u) / log((double)h->m));
    return l > MAX_LEVEL ? MAX_LEVEL : l;
}

/* The neighbour-selection heuristic: from c[0..n) (nearest first) keep a candidate only
 * when it is nearer to the base than to every one already kept, up to `max`; the kept
 * ones end at the front of c. Returns how many. */
static size_t select_neighbors(const struct dspy_vec_hnsw *h, struct cand *c, size_t n, size_t max)
{
    size_t kept = 0;
    for (size_t i = 0; i < n && kept < max; i++) {
        bool good = true;
        for (size_t j = 0; j < kept && good; j++)
            good = dist(h, vec_at(h, c[i].id), vec_at(h, c[j].id)) >= c[i].dist;
        if (good)
            c[kept++] = c[i];
    }
    return kept;
}

static int cmp_cand(const void *a, const void *b)
{
    float x = ((const struct cand *)a)->dist, y = ((const struct cand *)b)->dist;
    return x < y ? -1 : x > y;
}

/* Link `node` into e's list at `level`, shrinking it with the heuristic when full. */
static void connect_back(struct dspy_vec_hnsw *h, uint32_t e, uint32_t node, int level,
                         struct cand *tmp)
{
    uint32_t *l = links(h, e, level);
    unsigned max = max_links(h, level);
    if (l[0] < max) {
        l[++l[0]] = node;
        return;
    }
    const float *ve = vec_at(h, e);
    size_t n = 0;
    for (uint32_t j = 1; j <= l[0]; j++)
        tmp[n++] = (struct cand){ dist(h, ve, vec_at(h, l[j])), l[j] };
    tmp[n++] = (struct cand){ dist(h, ve, vec_at(h, node)), node };
    qsort(tmp, n, sizeof(*tmp), cmp_cand);
    size_t kept = select_neighbors(h, tmp, n, max);
    l[0] = (uint32_t)kept;
    for (size_t j = 0; j < kept; j++)
        l[j + 1] = tmp[j].id;
}

dspy_status dspy_vec_hnsw_add(dspy_vec_hnsw *h, uint64_t label, const float *v, uint32_t *node,
                              struct dspy_error *err)
{
    dspy_status rc;
    if (!h || !v)
        return dspy__err(err, DSPY_EINVAL, "hnsw add: NULL argument");
    if (h->n >= NONE - 1)
        return dspy__err(err, DSPY_ETOOBIG, "hnsw add: the index holds 2^32 - 2 nodes");
    if (h->n == h->cap && !grow(h, h->cap ? h->cap * 2 : 64))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    size_t tmp_need = (size_t)(h->efc > h->m0 ? h->efc : h->m0) + 2;
    if (!reserve_sel(h, 2 * tmp_need))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    int level = random_level(h);
    uint32_t id = (uint32_t)h->n;
    uint32_t *up = NULL;
    if (level > 0 && !(up = dspy_calloc((size_t)level * (h->m + 1), sizeof(uint32_t))))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    memcpy(h->vecs + (size_t)id * h->d, v, h->d * sizeof(float));
    h->labels[id] = label;
    h->levels[id] = (uint8_t)level;
    h->deleted[id] = 0;
    h->upper[id] = up;
    h->links0[(size_t)id * (h->m0 + 1)] = 0;
    h->n++;
    if (h->entry == NONE) {
        h->entry = id;
        h->maxlevel = level;
        goto done;
    }
    const float *q = vec_at(h, id);
    struct cand ep = { dist(h, q, vec_at(h, h->entry)), h->entry };
    for (int l = h->maxlevel; l > level; l--)
        ep = greedy(h, q, ep, l);
    struct cand *sel = h->sel, *tmp = h->sel + tmp_need;
    for (int l = level < h->maxlevel ? level : h->maxlevel; l >= 0; l--) {
        if ((rc = search_layer(h, q, ep, h->efc, l, false))) {
            /* undo: the node is not linked yet at this level or below; keep it as an
               unreachable deleted node so ids stay dense */
            h->deleted[id] = 1;
            h->ndeleted++;
            return dspy__err(err, rc, "out of memory");
        }
        size_t n = drain_sorted(h);
        ep = sel[0];
        /* m links for the new node at every level, as hnswlib does (FAISS gives 2m at
           level 0: a little more recall, measured 2.5-3x the insert time here) */
        size_t kept = select_neighbors(h, sel, n, h->m);
        uint32_t *mine = links(h, id, l);
        mine[0] = (uint32_t)kept;
        for (size_t j = 0; j < kept; j++)
            mine[j + 1] = sel[j].id;
        for (size_t j = 0; j < kept; j++)
            connect_back(h, sel[j].id, id, l, tmp);
    }
    if (level > h->maxlevel) {
        h->entry = id;
        h->maxlevel = level;
    }
done:
    if (node)
        *node = id;
    return DSPY_OK;
}

dspy_status dspy_vec_hnsw_remove(dspy_vec_hnsw *h, uint32_t node)
{
    if (!h || node >= h->n)
        return DSPY_EINVAL;
    if (h->deleted[node])
        return DSPY_ENOTFOUND;
    h->deleted[node] = 1;
    h->ndeleted++;
    return DSPY_OK;
}

/* ---- accessors ------------------------------------------------------------------------ */

size_t dspy_vec_hnsw_nodes(const dspy_vec_hnsw *h)
{
    return h ? h->n : 0;
}

size_t dspy_vec_hnsw_live(const dspy_vec_hnsw *h)
{
    return h ? h->n - h->ndeleted : 0;
}

size_t dspy_vec_hnsw_dim(const dspy_vec_hnsw *h)
{
    return h ? h->d : 0;
}

uint64_t dspy_vec_hnsw_label(const dspy_vec_hnsw *h, uint32_t node)
{
    return h && node < h->n ? h->labels[node] : 0;
}

const float *dspy_vec_hnsw_vector(const dspy_vec_hnsw *h, uint32_t node)
{
    return h && node < h->n ? vec_at(h, node) : NULL;
}

bool dspy_vec_hnsw_is_deleted(const dspy_vec_hnsw *h, uint32_t node)
{
    return !h || node >= h->n || h->deleted[node];
}

void dspy_vec_hnsw_set_ef_search(dspy_vec_hnsw *h, unsigned ef)
{
    if (h && ef)
        h->efs = ef > 65536 ? 65536 : ef;
}

uint64_t dspy_vec_hnsw_bytes(const dspy_vec_hnsw *h)
{
    if (!h)
        return 0;
    uint64_t b = (uint64_t)h->cap * (h->d * 4 + 8 + 1 + 1 + ((uint64_t)h->m0 + 1) * 4 + 8 + 4);
    for (size_t i = 0; i < h->n; i++)
        b += (uint64_t)h->levels[i] * (h->m + 1) * 4;
    return b;
}

/* ---- the file ------------------------------------------------------------------------- */

/* Header of the file, then vectors (n*d f32), labels (n u64), levels (n u8), deleted (n
 * u8), level-0 links (n*(m0+1) u32), each node's upper levels in node order, and the
 * XXH3-64 of everything before it. Native byte order (the magic says which). */
struct file_hdr {
    char magic[16];
    uint32_t dim, m, ef_construction, ef_search;
    uint32_t metric, entry;
    int32_t maxlevel;
    uint32_t byte_order; /* 0x01020304 as written */
    uint64_t n, ndeleted, rng;
};

static bool mul_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

dspy_status dspy_vec_hnsw_save(const dspy_vec_hnsw *h, const char *path, struct dspy_error *err)
{
    if (!h || !path)
        return dspy__err(err, DSPY_EINVAL, "hnsw save: NULL argument");
    size_t plen = strlen(path);
    char *tmp = dspy_malloc(plen + 8);
    if (!tmp)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    snprintf(tmp, plen + 8, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        dspy_status rc = dspy__err(err, DSPY_EIO, "%s: %s", tmp, strerror(errno));
        dspy_free(tmp);
        return rc;
    }
    struct file_hdr hd = { .dim = (uint32_t)h->d,
                           .m = h->m,
                           .ef_construction = h->efc,
                           .ef_search = h->efs,
                           .metric = (uint32_t)h->metric,
                           .entry = h->entry,
                           .maxlevel = h->maxlevel,
                           .byte_order = 0x01020304u,
                           .n = h->n,
                           .ndeleted = h->ndeleted,
                           .rng = h->rng };
    memcpy(hd.magic, file_magic, sizeof(hd.magic));
    XXH3_state_t *st = XXH3_createState();
    bool ok = st && XXH3_64bits_reset(st) == XXH_OK;
#define PUT(ptr, bytes)                                                                        \
    do {                                                                                       \
        size_t b_ = (bytes);                                                                   \
        if (ok && b_) {                                                                        \
            ok = fwrite((ptr), 1, b_, f) == b_ && XXH3_64bits_update(st, (ptr), b_) == XXH_OK; \
        }                                                                                      \
    } while (0)
    PUT(&hd, sizeof(hd));
    PUT(h->vecs, h->n * h->d * sizeof(float));
    PUT(h->labels, h->n * sizeof(uint64_t));
    PUT(h->levels, h->n);
    PUT(h->deleted, h->n);
    PUT(h->links0, h->n * (h->m0 + 1) * sizeof(uint32_t));
    for (size_t i = 0; i < h->n; i++)
        PUT(h->upper[i], (size_t)h->levels[i] * (h->m + 1) * sizeof(uint32_t));
#undef PUT
    uint64_t sum = ok ? XXH3_64bits_digest(st) : 0;
    XXH3_freeState(st);
    ok = ok && fwrite(&sum, 1, 8, f) == 8;
    ok = (fflush(f) == 0) && ok;
    ok = (fsync(fileno(f)) == 0) && ok;
    ok = (fclose(f) == 0) && ok;
    dspy_status rc = DSPY_OK;
    if (!ok || rename(tmp, path)) {
        rc = dspy__err(err, DSPY_EIO, "%s: cannot write the index: %s", path, strerror(errno));
        unlink(tmp);
    }
    dspy_free(tmp);
    return rc;
}

static dspy_status corrupt(struct dspy_error *err, const char *name, size_t off, const char *what)
{
    return dspy__err(err, DSPY_ECORRUPT, "%s: not a usable index file: %s (byte %zu)", name, what,
                     off);
}

dspy_status dspy__vec_hnsw_load_mem(const void *buf, size_t len, const char *name, bool verify_sum,
                                    dspy_vec_hnsw **out, struct dspy_error *err)
{
    const unsigned char *p = buf;
    struct file_hdr hd;
    *out = NULL;
    if (len < sizeof(hd) + 8)
        return corrupt(err, name, len, "cut short before the end of its header");
    memcpy(&hd, p, sizeof(hd));
    if (memcmp(hd.magic, file_magic, sizeof(hd.magic)))
        return corrupt(err, name, 0, "wrong magic");
    if (hd.byte_order != 0x01020304u)
        return corrupt(err, name, offsetof(struct file_hdr, byte_order), "other byte order");
    if (verify_sum) {
        uint64_t sum;
        memcpy(&sum, p + len - 8, 8);
        if (sum != XXH3_64bits(p, len - 8))
            return corrupt(err, name, len - 8, "checksum mismatch (damaged or cut short)");
    }
    struct dspy_vec_hnsw_options o = { .dim = hd.dim,
                                       .metric = (enum dspy_vec_metric)hd.metric,
                                       .m = hd.m,
                                       .ef_construction = hd.ef_construction,
                                       .ef_search = hd.ef_search,
                                       .seed = hd.rng };
    struct dspy_error sub;
    if (check_options(&o, &sub))
        return corrupt(err, name, 16, sub.message);
    uint64_t n = hd.n, m0 = 2ull * hd.m, vb, l0b, need;
    if (n >= NONE - 1 || hd.ndeleted > n)
        return corrupt(err, name, offsetof(struct file_hdr, n), "bad node count");
    if (!mul_ok(n, (uint64_t)hd.dim * 4, &vb) || !mul_ok(n, (m0 + 1) * 4, &l0b))
        return corrupt(err, name, offsetof(struct file_hdr, n), "bad node count");
    need = sizeof(hd) + vb + n * 10 + l0b + 8;
    if (need < vb || need > len)
        return corrupt(err, name, len, "cut short (fewer nodes than its header says)");
    if (n == 0 ? (hd.entry != NONE || hd.maxlevel != -1)
               : (hd.entry >= n || hd.maxlevel < 0 || hd.maxlevel > MAX_LEVEL))
        return corrupt(err, name, offsetof(struct file_hdr, entry), "bad entry point");
    const unsigned char *levels = p + sizeof(hd) + vb + n * 8, *del = levels + n;
    uint64_t upper_total = 0, ndel = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (levels[i] > hd.maxlevel)
            return corrupt(err, name, (size_t)(levels + i - p), "node above the top level");
        if (del[i] > 1)
            return corrupt(err, name, (size_t)(del + i - p), "bad deletion mark");
        ndel += del[i];
        upper_total += (uint64_t)levels[i] * (hd.m + 1) * 4;
    }
    if (ndel != hd.ndeleted)
        return corrupt(err, name, offsetof(struct file_hdr, ndeleted), "deletion count differs");
    if (n && levels[hd.entry] != hd.maxlevel)
        return corrupt(err, name, offsetof(struct file_hdr, entry), "entry point not on top");
    if (need + upper_total != len)
        return corrupt(err, name, len, "size differs from what its header says");
    dspy_vec_hnsw *h = alloc_index(&o);
    if (!h)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    if (n && !grow(h, (size_t)n)) {
        dspy_vec_hnsw_free(h);
        return dspy__err(err, DSPY_ENOMEM, "out of memory loading %s", name);
    }
    const unsigned char *q = p + sizeof(hd);
    if (n) { /* (memcpy from or to NULL is undefined even for 0 bytes) */
        memcpy(h->vecs, q, vb);
        q += vb;
        memcpy(h->labels, q, n * 8);
        q += n * 8;
        memcpy(h->levels, q, n);
        memcpy(h->deleted, q + n, n);
        q += 2 * n;
        memcpy(h->links0, q, l0b);
        q += l0b;
        memset(h->upper, 0, n * sizeof(*h->upper));
    }
    h->n = (size_t)n;
    dspy_status rc = DSPY_OK;
    for (uint64_t i = 0; i < n && !rc; i++) {
        size_t b = (size_t)levels[i] * (hd.m + 1) * 4;
        if (b && !(h->upper[i] = dspy_malloc(b))) {
            rc = dspy__err(err, DSPY_ENOMEM, "out of memory loading %s", name);
            break;
        }
        if (b)
            memcpy(h->upper[i], q, b);
        q += b;
        for (int l = 0; l <= levels[i] && !rc; l++) {
            const uint32_t *lk = links(h, (uint32_t)i, l);
            if (lk[0] > max_links(h, l))
                rc = corrupt(err, name, 0, "a node with too many links");
            for (uint32_t j = 1; j <= lk[0] && !rc; j++)
                if (lk[j] >= n || lk[j] == i || levels[lk[j]] < l)
                    rc = corrupt(err, name, 0, "a link to a node that does not exist");
        }
    }
    if (rc) {
        dspy_vec_hnsw_free(h);
        return rc;
    }
    h->entry = hd.entry;
    h->maxlevel = hd.maxlevel;
    h->ndeleted = (size_t)hd.ndeleted;
    *out = h;
    return DSPY_OK;
}

dspy_status dspy_vec_hnsw_load(const char *path, dspy_vec_hnsw **out, struct dspy_error *err)
{
    if (!path || !out)
        return dspy__err(err, DSPY_EINVAL, "hnsw load: NULL argument");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0)
        return dspy__err(err, errno == ENOENT ? DSPY_ENOTFOUND : DSPY_EIO, "%s: %s", path,
                         strerror(errno));
    if (fstat(fd, &st)) {
        dspy_status rc = dspy__err(err, DSPY_EIO, "%s: %s", path, strerror(errno));
        close(fd);
        return rc;
    }
    size_t len = (size_t)st.st_size;
    if (len < sizeof(struct file_hdr) + 8) {
        close(fd);
        return corrupt(err, path, len, "cut short before the end of its header");
    }
    void *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return dspy__err(err, DSPY_EIO, "%s: mmap: %s", path, strerror(errno));
    dspy_status rc = dspy__vec_hnsw_load_mem(m, len, path, true, out, err);
    munmap(m, len);
    return rc;
}
