/* The semantic cache level (cache layer): per-partition sets of unit-length embeddings of
 * the requests' projected texts, searched exactly with the vec layer's kernels on an exact
 * miss, the guards applied to the candidates, and the records persisted in an append-only
 * log beside the disk store (memory-mapped and replayed at start). See
 * docs/semantic-cache.md. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include <dspyc/embed.h>
#include <dspyc/vec.h>

#include "base/status.h"
#include "cache/cache_int.h"

#define DIM DSPY_EMBED_DIM
#define NBUCKETS 256
#define CANDIDATES 4 /* best candidates at or above the threshold put through the guards */
#define EMB_SLOTS 32 /* recent projections' embeddings (a lookup's miss is put right after) */
#define LOG_NAME "semantic.log"
static const char log_magic[16] = "dspyc-semantic1\n";
#define REC_MAGIC 0x4d455344u /* "DSEM" */
#define OP_ADD 1
#define OP_DEL 2
#define NONE UINT32_MAX
/* The HNSW index of a large partition (docs/semantic-cache.md has the measurements that
 * chose these). */
#define HNSW_M 16
#define HNSW_EF_CONSTRUCTION 100
/* From semantic_scan8_min slots the exact scan reads an int8 copy of the vectors (4x fewer
 * bytes) and re-ranks its best SCAN8_RERANK in f32 (docs/semantic-cache.md, "Search"). */
#define SCAN8_RERANK 32
#define SCAN8_ROW_BYTES (DIM + 12) /* int8 row, norm, scale, sum */
#define BACKFILL_STEP 8 /* records a put adds to an index being built over older records */
/* what one live index node holds: its vector copy, links and per-node arrays */
#define INDEX_NODE_BYTES (DIM * 4 + (2 * HNSW_M + 1) * 4 + 16)

struct rec {
    uint8_t key[16];
    uint64_t seq; /* order of arrival, for eviction (oldest first); 0 = a free slot */
    char *text;
    uint32_t len;
    uint32_t hnext; /* next slot in the key table's chain (free slots: the free list) */
    uint32_t node;  /* node in the partition's serving index, or NONE */
    uint32_t bnode; /* node in the index being built, or NONE */
};

/* An HNSW index over a partition and its node -> slot map. */
struct ann {
    dspy_vec_hnsw *h;
    uint32_t *slot;
    size_t slot_cap;
};

struct order_ent {
    uint32_t slot;
    uint64_t seq; /* stale when the slot's seq differs (the record was removed) */
};

/* A partition's records live in slots that never move (so index nodes can name them);
 * removed records leave a free slot (zero vector) that the next insert reuses. */
struct part {
    uint8_t id[16];
    size_t n;           /* live records */
    size_t nslots, cap; /* slots in use (live or free) and allocated */
    float *vecs;        /* cap * DIM, unit length; free slots zero */
    struct rec *recs;
    uint32_t *table; /* key -> first slot of its chain; table_size heads */
    size_t table_size;
    uint32_t free_head;
    struct order_ent *order; /* arrival order, a ring of order_cap (a power of two) */
    size_t order_head, order_len, order_cap;
    dspy_vec_matrix *scan8; /* int8 copy of vecs, `cap` rows at its making, or NULL */
    struct ann live;        /* searched when live.h is set */
    struct ann build;       /* being filled from older records (build.h set): see backfill() */
    size_t cursor;          /* next slot backfill() looks at */
    size_t unsaved;         /* index changes since its file was written */
    struct part *next;
};

struct emb_slot {
    uint64_t h;
    size_t len;
    bool used;
    float v[DIM];
};

struct dspy__semantic {
    pthread_mutex_t lock; /* everything below */
    struct part *buckets[NBUCKETS];
    uint64_t seq, bytes, entries, partitions;
    uint64_t scan_bytes;  /* the partitions' int8 scan copies */
    uint64_t index_bytes; /* live nodes of every index (deleted ones are not counted: a
                             mostly deleted index is renewed) */
    dspy_vec *vec;
    float *scores;
    size_t scores_cap;
    struct emb_slot emb[EMB_SLOTS];
    int fd; /* the log, or -1 (no disk level) */
    char *log_path;
    char *dir; /* where index files go, or NULL (no disk level) */
    uint64_t log_live, log_size;
    size_t index_min;   /* records from which a partition is searched through its index */
    unsigned ef_search; /* beam width of an index search */
    size_t scan8_min;   /* slots from which the exact scan reads the int8 copy */
    bool replaying;     /* log_open: indexes are attached after the replay */
    /* the model, loaded on first use */
    pthread_mutex_t model_lock;
    dspy_embedder *embedder;
    bool model_tried, unavailable;
    char *model_dir;
    /* counters */
    atomic_ullong lookups, hits, below, stale, followed, puts, evictions,
        guarded[DSPY_SEMANTIC_NGUARDS];
    atomic_ullong indexed_lookups, scan8_lookups, index_loaded, index_tail, index_rebuilds;
    double sim_sum; /* lock */
};

/* Record framing in the log: header, text, DIM floats (adds only), XXH3-64 of the rest. */
struct rec_hdr {
    uint32_t magic;
    uint8_t op, pad[3];
    uint32_t text_len;
    uint8_t part[16];
    uint8_t key[16];
};

static size_t rec_cost(uint32_t len)
{
    return DIM * sizeof(float) + len + sizeof(struct rec) + 16;
}

/* ---- partitions ------------------------------------------------------------------------ */

static uint64_t key_label(const uint8_t key[16])
{
    uint64_t l;
    memcpy(&l, key, 8);
    return l;
}

static struct part *find_part(struct dspy__semantic *s, const uint8_t id[16], bool create)
{
    struct part **pp = &s->buckets[id[0]];
    for (struct part *p = *pp; p; p = p->next)
        if (!memcmp(p->id, id, 16))
            return p;
    if (!create)
        return NULL;
    struct part *p = dspy_calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    memcpy(p->id, id, 16);
    p->free_head = NONE;
    p->next = *pp;
    *pp = p;
    s->partitions++;
    return p;
}

static ssize_t find_rec(const struct part *p, const uint8_t key[16])
{
    if (!p->table_size)
        return -1;
    for (uint32_t i = p->table[key_label(key) & (p->table_size - 1)]; i != NONE;
         i = p->recs[i].hnext)
        if (!memcmp(p->recs[i].key, key, 16))
            return (ssize_t)i;
    return -1;
}

static void ann_release(struct dspy__semantic *s, struct ann *a)
{
    s->index_bytes -= (uint64_t)dspy_vec_hnsw_live(a->h) * INDEX_NODE_BYTES;
    dspy_vec_hnsw_free(a->h);
    dspy_free(a->slot);
    memset(a, 0, sizeof(*a));
}

static void index_path(const struct dspy__semantic *s, const struct part *p, char *out, size_t cap)
{
    char hex[33];
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", p->id[i]);
    snprintf(out, cap, "%s/semantic-%s.hnsw", s->dir, hex);
}

/* ---- the int8 scan copy --------------------------------------------------------------- */

static void scan8_drop(struct dspy__semantic *s, struct part *p)
{
    if (!p->scan8)
        return;
    s->scan_bytes -= (uint64_t)dspy_vec_matrix_rows(p->scan8) * SCAN8_ROW_BYTES;
    dspy_vec_matrix_free(p->scan8);
    p->scan8 = NULL;
}

/* The copy follows a slot's vector; a slot past its rows (the partition grew) drops it,
 * and the next scan makes a new one over the new capacity. */
static void scan8_follow(struct dspy__semantic *s, struct part *p, uint32_t slot)
{
    if (!p->scan8)
        return;
    if (slot >= dspy_vec_matrix_rows(p->scan8) ||
        dspy_vec_matrix_set_row(p->scan8, slot, p->vecs + (size_t)slot * DIM, NULL))
        scan8_drop(s, p);
}

/* The copy for a scan, made over every allocated slot (those past nslots are zero), or
 * NULL when it cannot be (the scan then reads f32). */
static dspy_vec_matrix *scan8_for(struct dspy__semantic *s, struct part *p)
{
    if (!p->scan8 &&
        !dspy_vec_matrix_new(s->vec, p->vecs, p->cap, DIM, DIM, DSPY_VEC_I8, 0, &p->scan8, NULL))
        s->scan_bytes += (uint64_t)p->cap * SCAN8_ROW_BYTES;
    return p->scan8;
}

static void part_free(struct dspy__semantic *s, struct part *p)
{
    for (size_t i = 0; i < p->nslots; i++)
        dspy_free(p->recs[i].text);
    dspy_free(p->recs);
    dspy_free(p->vecs);
    dspy_free(p->table);
    dspy_free(p->order);
    scan8_drop(s, p);
    ann_release(s, &p->live);
    ann_release(s, &p->build);
    dspy_free(p);
}

/* ---- the index ------------------------------------------------------------------------- */

/* Add slot's vector to an index; the node, or NONE when it could not be added. */
static uint32_t ann_add(struct dspy__semantic *s, struct ann *a, const struct part *p,
                        uint32_t slot)
{
    uint32_t node;
    if (dspy_vec_hnsw_add(a->h, key_label(p->recs[slot].key), p->vecs + (size_t)slot * DIM, &node,
                          NULL))
        return NONE;
    if (node >= a->slot_cap) {
        size_t cap = a->slot_cap ? a->slot_cap * 2 : 1024;
        while (cap <= node)
            cap *= 2;
        uint32_t *ns = dspy_realloc(a->slot, cap * sizeof(*ns));
        if (!ns) {
            dspy_vec_hnsw_remove(a->h, node);
            return NONE;
        }
        a->slot = ns;
        a->slot_cap = cap;
    }
    a->slot[node] = slot;
    s->index_bytes += INDEX_NODE_BYTES;
    return node;
}

static bool ann_new(struct dspy__semantic *s, struct ann *a)
{
    struct dspy_vec_hnsw_options o = DSPY_VEC_HNSW_OPTIONS_INIT;
    o.dim = DIM;
    o.m = HNSW_M;
    o.ef_construction = HNSW_EF_CONSTRUCTION;
    o.ef_search = s->ef_search;
    return !dspy_vec_hnsw_new(&o, &a->h, NULL);
}

static void save_index(struct dspy__semantic *s, struct part *p)
{
    char path[4200];
    struct dspy_error err;
    if (!s->dir || !p->live.h)
        return;
    index_path(s, p, path, sizeof(path));
    if (dspy_vec_hnsw_save(p->live.h, path, &err)) {
        fprintf(stderr, "dspyc: warning: semantic cache: %s\n", err.message);
        return;
    }
    p->unsaved = 0;
}

/* The serving index has many deleted nodes, or a large partition has none: fill a new one
 * from the records a few per put (backfill), searching as before meanwhile. */
static void start_build(struct dspy__semantic *s, struct part *p)
{
    if (p->build.h || !ann_new(s, &p->build))
        return;
    p->cursor = 0;
    if (p->live.h)
        atomic_fetch_add(&s->index_rebuilds, 1);
}

static void finish_build(struct dspy__semantic *s, struct part *p)
{
    ann_release(s, &p->live);
    p->live = p->build;
    memset(&p->build, 0, sizeof(p->build));
    for (size_t i = 0; i < p->nslots; i++) {
        p->recs[i].node = p->recs[i].bnode;
        p->recs[i].bnode = NONE;
    }
    save_index(s, p);
}

static void backfill(struct dspy__semantic *s, struct part *p, size_t steps)
{
    if (!p->build.h)
        return;
    while (p->cursor < p->nslots && steps) {
        struct rec *r = &p->recs[p->cursor];
        if (r->seq && r->bnode == NONE) {
            r->bnode = ann_add(s, &p->build, p, (uint32_t)p->cursor);
            steps--;
        }
        p->cursor++;
    }
    if (p->cursor >= p->nslots)
        finish_build(s, p);
}

/* After the replay: take the saved index of a large partition and add only the records
 * it does not hold (the log's tail written after it was saved); without a usable file,
 * build one in the background of the puts. */
static void attach_index(struct dspy__semantic *s, struct part *p)
{
    char path[4200];
    struct dspy_error err;
    dspy_vec_hnsw *h = NULL;
    dspy_status rc = DSPY_ENOTFOUND;
    if (s->dir) {
        index_path(s, p, path, sizeof(path));
        rc = dspy_vec_hnsw_load(path, &h, &err);
        if (!rc && dspy_vec_hnsw_dim(h) != DIM) {
            rc = dspy__err(&err, DSPY_ECORRUPT, "%s: vectors of %zu dimensions, not %d", path,
                           dspy_vec_hnsw_dim(h), DIM);
            dspy_vec_hnsw_free(h);
            h = NULL;
        }
        if (rc && rc != DSPY_ENOTFOUND) {
            fprintf(stderr,
                    "dspyc: warning: semantic cache: %s; searching that partition exactly "
                    "while its index is rebuilt\n",
                    err.message);
            unlink(path);
        }
    }
    if (rc) {
        start_build(s, p);
        return;
    }
    p->live.h = h;
    dspy_vec_hnsw_set_ef_search(h, s->ef_search);
    size_t nodes = dspy_vec_hnsw_nodes(h);
    if (!(p->live.slot = dspy_malloc((nodes ? nodes : 1) * sizeof(uint32_t)))) {
        dspy_vec_hnsw_free(h);
        p->live.h = NULL;
        start_build(s, p);
        return;
    }
    p->live.slot_cap = nodes ? nodes : 1;
    for (uint32_t node = 0; node < nodes; node++) {
        if (dspy_vec_hnsw_is_deleted(h, node))
            continue;
        uint64_t label = dspy_vec_hnsw_label(h, node);
        uint32_t slot = NONE;
        for (uint32_t i = p->table_size ? p->table[label & (p->table_size - 1)] : NONE; i != NONE;
             i = p->recs[i].hnext)
            if (key_label(p->recs[i].key) == label && p->recs[i].node == NONE) {
                slot = i;
                break;
            }
        if (slot == NONE) { /* removed after the save */
            dspy_vec_hnsw_remove(h, node);
            p->unsaved++;
            continue;
        }
        p->recs[slot].node = node;
        p->live.slot[node] = slot;
    }
    s->index_bytes += (uint64_t)dspy_vec_hnsw_live(h) * INDEX_NODE_BYTES;
    atomic_fetch_add(&s->index_loaded, 1);
    for (size_t i = 0; i < p->nslots; i++)
        if (p->recs[i].seq && p->recs[i].node == NONE) {
            p->recs[i].node = ann_add(s, &p->live, p, (uint32_t)i);
            p->unsaved++;
            atomic_fetch_add(&s->index_tail, 1);
        }
}

/* Index upkeep after a change: start an index when the partition grows past the size,
 * renew one that is mostly deleted nodes, step a build, save when enough changed. */
static void index_upkeep(struct dspy__semantic *s, struct part *p)
{
    if (s->replaying)
        return;
    if (p->n >= s->index_min && !p->live.h)
        start_build(s, p);
    else if (p->live.h && dspy_vec_hnsw_nodes(p->live.h) >= s->index_min &&
             dspy_vec_hnsw_nodes(p->live.h) > 2 * dspy_vec_hnsw_live(p->live.h) + 1024)
        start_build(s, p);
    backfill(s, p, BACKFILL_STEP);
    if (p->live.h && p->unsaved >= 1024 && p->unsaved >= dspy_vec_hnsw_live(p->live.h) / 4)
        save_index(s, p);
}

/* ---- records --------------------------------------------------------------------------- */

static void remove_slot(struct dspy__semantic *s, struct part *p, uint32_t slot)
{
    struct rec *r = &p->recs[slot];
    uint32_t *pp = &p->table[key_label(r->key) & (p->table_size - 1)];
    while (*pp != slot)
        pp = &p->recs[*pp].hnext;
    *pp = r->hnext;
    s->bytes -= rec_cost(r->len);
    s->entries--;
    if (r->node != NONE && !dspy_vec_hnsw_remove(p->live.h, r->node)) {
        s->index_bytes -= INDEX_NODE_BYTES;
        p->unsaved++;
    }
    if (r->bnode != NONE && !dspy_vec_hnsw_remove(p->build.h, r->bnode))
        s->index_bytes -= INDEX_NODE_BYTES;
    dspy_free(r->text);
    memset(r, 0, sizeof(*r));
    memset(p->vecs + (size_t)slot * DIM, 0, DIM * sizeof(float));
    scan8_follow(s, p, slot);
    r->hnext = p->free_head;
    r->node = r->bnode = NONE;
    p->free_head = slot;
    p->n--;
}

static bool grow_table(struct part *p)
{
    size_t size = p->table_size ? p->table_size * 2 : 64;
    uint32_t *t = dspy_malloc(size * sizeof(*t));
    if (!t)
        return false;
    for (size_t i = 0; i < size; i++)
        t[i] = NONE;
    for (size_t i = 0; i < p->nslots; i++)
        if (p->recs[i].seq) {
            uint32_t *head = &t[key_label(p->recs[i].key) & (size - 1)];
            p->recs[i].hnext = *head;
            *head = (uint32_t)i;
        }
    dspy_free(p->table);
    p->table = t;
    p->table_size = size;
    return true;
}

static bool push_order(struct part *p, uint32_t slot, uint64_t seq)
{
    if (p->order_len == p->order_cap) {
        size_t cap = p->order_cap ? p->order_cap * 2 : 64;
        struct order_ent *o = dspy_malloc(cap * sizeof(*o));
        if (!o)
            return false;
        for (size_t i = 0; i < p->order_len; i++)
            o[i] = p->order[(p->order_head + i) & (p->order_cap - 1)];
        dspy_free(p->order);
        p->order = o;
        p->order_cap = cap;
        p->order_head = 0;
    }
    p->order[(p->order_head + p->order_len++) & (p->order_cap - 1)] = (struct order_ent){ slot,
                                                                                          seq };
    return true;
}

/* The oldest live record's slot (stale entries at the front are dropped), or NONE. */
static uint32_t oldest(struct part *p)
{
    while (p->order_len) {
        struct order_ent e = p->order[p->order_head];
        if (p->recs[e.slot].seq == e.seq)
            return e.slot;
        p->order_head = (p->order_head + 1) & (p->order_cap - 1);
        p->order_len--;
    }
    return NONE;
}

/* Add (or replace) a record; false on allocation failure. */
static bool insert(struct dspy__semantic *s, const uint8_t part_id[16], const uint8_t key[16],
                   const char *text, uint32_t len, const float *v)
{
    struct part *p = find_part(s, part_id, true);
    if (!p)
        return false;
    ssize_t old = find_rec(p, key);
    if (old >= 0)
        remove_slot(s, p, (uint32_t)old);
    if (p->free_head == NONE && p->nslots == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 8;
        if (cap >= NONE)
            return false;
        float *nv = dspy_realloc(p->vecs, cap * DIM * sizeof(float));
        if (!nv)
            return false;
        memset(nv + p->cap * DIM, 0, (cap - p->cap) * DIM * sizeof(float));
        p->vecs = nv;
        struct rec *nr = dspy_realloc(p->recs, cap * sizeof(*nr));
        if (!nr)
            return false;
        p->recs = nr;
        p->cap = cap;
    }
    if (p->n + 1 > p->table_size && !grow_table(p))
        return false;
    char *t = dspy_malloc((size_t)len + 1);
    if (!t)
        return false;
    uint32_t slot = p->free_head != NONE ? p->free_head : (uint32_t)p->nslots;
    if (!push_order(p, slot, s->seq + 1)) {
        dspy_free(t);
        return false;
    }
    if (slot == p->free_head)
        p->free_head = p->recs[slot].hnext;
    else
        p->nslots++;
    memcpy(t, text, len);
    t[len] = 0;
    struct rec *r = &p->recs[slot];
    memcpy(r->key, key, 16);
    r->seq = ++s->seq;
    r->text = t;
    r->len = len;
    r->node = r->bnode = NONE;
    uint32_t *head = &p->table[key_label(key) & (p->table_size - 1)];
    r->hnext = *head;
    *head = slot;
    memcpy(p->vecs + (size_t)slot * DIM, v, DIM * sizeof(float));
    scan8_follow(s, p, slot);
    p->n++;
    s->entries++;
    s->bytes += rec_cost(len);
    if (p->live.h && (r->node = ann_add(s, &p->live, p, slot)) != NONE)
        p->unsaved++;
    if (p->build.h)
        r->bnode = ann_add(s, &p->build, p, slot);
    index_upkeep(s, p);
    return true;
}

/* ---- the log --------------------------------------------------------------------------- */

static void log_write(struct dspy__semantic *s, int op, const uint8_t part[16],
                      const uint8_t key[16], const char *text, uint32_t len, const float *v)
{
    if (s->fd < 0)
        return;
    struct rec_hdr h = { .magic = REC_MAGIC, .op = (uint8_t)op, .text_len = len };
    memcpy(h.part, part, 16);
    memcpy(h.key, key, 16);
    size_t total = sizeof(h) + len + (op == OP_ADD ? DIM * sizeof(float) : 0) + 8;
    unsigned char *buf = dspy_malloc(total);
    if (!buf)
        return;
    memcpy(buf, &h, sizeof(h));
    memcpy(buf + sizeof(h), text, len);
    if (op == OP_ADD)
        memcpy(buf + sizeof(h) + len, v, DIM * sizeof(float));
    uint64_t sum = XXH3_64bits(buf, total - 8);
    memcpy(buf + total - 8, &sum, 8);
    if (write(s->fd, buf, total) == (ssize_t)total)
        s->log_size += total;
    if (op == OP_ADD)
        s->log_live += total;
    dspy_free(buf);
}

/* Rewrite the log with the live records only. */
static void log_compact(struct dspy__semantic *s)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", s->log_path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    int old = s->fd;
    s->fd = fd;
    s->log_size = s->log_live = 0;
    if (write(fd, log_magic, sizeof(log_magic)) == (ssize_t)sizeof(log_magic))
        s->log_size = sizeof(log_magic);
    for (int b = 0; b < NBUCKETS; b++)
        for (struct part *p = s->buckets[b]; p; p = p->next)
            for (size_t j = 0; j < p->order_len; j++) {
                struct order_ent e = p->order[(p->order_head + j) & (p->order_cap - 1)];
                const struct rec *r = &p->recs[e.slot];
                if (r->seq == e.seq)
                    log_write(s, OP_ADD, p->id, r->key, r->text, r->len,
                              p->vecs + (size_t)e.slot * DIM);
            }
    if (rename(tmp, s->log_path)) {
        close(fd);
        unlink(tmp);
        s->fd = old;
        return;
    }
    close(old);
}

static void evict(struct dspy__semantic *s, size_t max_bytes)
{
    while (s->bytes + s->index_bytes + s->scan_bytes > max_bytes && s->entries > 1) {
        struct part *best = NULL;
        uint32_t best_slot = NONE;
        for (int b = 0; b < NBUCKETS; b++)
            for (struct part *p = s->buckets[b]; p; p = p->next) {
                uint32_t o = oldest(p);
                if (o != NONE && (!best || p->recs[o].seq < best->recs[best_slot].seq)) {
                    best = p;
                    best_slot = o;
                }
            }
        if (!best)
            return;
        log_write(s, OP_DEL, best->id, best->recs[best_slot].key, "", 0, NULL);
        remove_slot(s, best, best_slot);
        index_upkeep(s, best);
        atomic_fetch_add(&s->evictions, 1);
    }
}

/* Replay the log: memory-mapped, each record checked; at the first bad one the file is cut
 * there (a crash mid-append leaves a torn tail) with one warning naming the offset. */
static void log_open(struct dspy__semantic *s, size_t max_bytes)
{
    int fd = open(s->log_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) {
        fprintf(stderr,
                "dspyc: warning: semantic cache: cannot open %s: %s; records are kept "
                "in memory only\n",
                s->log_path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    size_t size = (size_t)st.st_size, off = sizeof(log_magic), good = 0;
    if (size == 0) {
        if (write(fd, log_magic, sizeof(log_magic)) != (ssize_t)sizeof(log_magic)) {
            close(fd);
            return;
        }
        s->fd = fd;
        s->log_size = sizeof(log_magic);
        return;
    }
    const unsigned char *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED || size < sizeof(log_magic) || memcmp(m, log_magic, sizeof(log_magic))) {
        fprintf(stderr,
                "dspyc: warning: semantic cache: %s is not a semantic record log; "
                "starting it empty\n",
                s->log_path);
        if (m != MAP_FAILED)
            munmap((void *)m, size);
        if (ftruncate(fd, 0) || write(fd, log_magic, sizeof(log_magic)) < 0) {
            close(fd);
            return;
        }
        s->fd = fd;
        s->log_size = sizeof(log_magic);
        return;
    }
    good = off;
    while (off + sizeof(struct rec_hdr) + 8 <= size) {
        struct rec_hdr h;
        memcpy(&h, m + off, sizeof(h));
        if (h.magic != REC_MAGIC || (h.op != OP_ADD && h.op != OP_DEL) || h.text_len > size - off)
            break;
        size_t total = sizeof(h) + h.text_len + (h.op == OP_ADD ? DIM * sizeof(float) : 0) + 8;
        if (total > size - off)
            break;
        uint64_t sum;
        memcpy(&sum, m + off + total - 8, 8);
        if (sum != XXH3_64bits(m + off, total - 8))
            break;
        const char *text = (const char *)(m + off + sizeof(h));
        if (h.op == OP_ADD) {
            float v[DIM];
            memcpy(v, m + off + sizeof(h) + h.text_len, sizeof(v));
            insert(s, h.part, h.key, text, h.text_len, v);
        } else {
            struct part *p = find_part(s, h.part, false);
            ssize_t i = p ? find_rec(p, h.key) : -1;
            if (i >= 0)
                remove_slot(s, p, (uint32_t)i);
        }
        off += total;
        good = off;
    }
    munmap((void *)m, size);
    if (good < size) {
        fprintf(stderr,
                "dspyc: warning: semantic cache: %s: damaged record at byte %zu; "
                "cut there (%zu bytes dropped)\n",
                s->log_path, good, size - good);
        if (ftruncate(fd, (off_t)good)) {
            close(fd);
            return;
        }
    }
    if (lseek(fd, 0, SEEK_END) < 0) {
        close(fd);
        return;
    }
    s->fd = fd;
    s->log_size = good;
    evict(s, max_bytes);
    /* live bytes after replay: one add per record */
    s->log_live = 0;
    for (int b = 0; b < NBUCKETS; b++)
        for (struct part *p = s->buckets[b]; p; p = p->next)
            for (size_t i = 0; i < p->nslots; i++)
                if (p->recs[i].seq)
                    s->log_live += sizeof(struct rec_hdr) + p->recs[i].len + DIM * sizeof(float) +
                                   8;
    if (s->log_size > 2 * s->log_live + ((size_t)1 << 20))
        log_compact(s);
}

/* ---- open / close ---------------------------------------------------------------------- */

dspy_status dspy__semantic_new(struct dspy_cache *c, struct dspy_error *err)
{
    struct dspy__semantic *s = dspy_calloc(1, sizeof(*s));
    struct dspy_vec_options vo = DSPY_VEC_OPTIONS_INIT;
    dspy_status rc;
    if (!s)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->model_lock, NULL);
    s->fd = -1;
    s->index_min = c->opts.semantic_index_min ? c->opts.semantic_index_min
                                              : DSPY_CACHE_DEFAULT_SEMANTIC_INDEX_MIN;
    s->scan8_min = c->opts.semantic_scan8_min ? c->opts.semantic_scan8_min
                                              : DSPY_CACHE_DEFAULT_SEMANTIC_SCAN8_MIN;
    s->ef_search = c->opts.semantic_ef_search ? c->opts.semantic_ef_search
                                              : DSPY_CACHE_DEFAULT_SEMANTIC_EF_SEARCH;
    vo.device = "cpu";
    vo.threads = 1;
    if ((rc = dspy_vec_new(&vo, &s->vec, err)))
        goto fail;
    if (c->opts.embed_model && !(s->model_dir = dspy_strdup(c->opts.embed_model))) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto fail;
    }
    if ((c->levels & DSPY_CACHE_L3) && c->disk_path) {
        size_t n = strlen(c->disk_path) + sizeof(LOG_NAME) + 2;
        if (!(s->log_path = dspy_malloc(n))) {
            rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
            goto fail;
        }
        snprintf(s->log_path, n, "%s/%s", c->disk_path, LOG_NAME);
        if (!(s->dir = dspy_strdup(c->disk_path))) {
            rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
            goto fail;
        }
        s->replaying = true;
        log_open(s, c->opts.semantic_max_bytes);
        s->replaying = false;
        for (int b = 0; b < NBUCKETS; b++)
            for (struct part *p = s->buckets[b]; p; p = p->next)
                if (p->n >= s->index_min)
                    attach_index(s, p);
        evict(s, c->opts.semantic_max_bytes); /* the indexes count against the budget too */
    }
    c->sem = s;
    return DSPY_OK;
fail:
    c->sem = s;
    dspy__semantic_free(c);
    return rc;
}

/* Free every partition; `save`: write the indexes changed since their last save first,
 * else (clear) delete their files. */
static void drop_all(struct dspy__semantic *s, bool save)
{
    char path[4200];
    for (int b = 0; b < NBUCKETS; b++) {
        struct part *p = s->buckets[b];
        while (p) {
            struct part *next = p->next;
            if (save && p->unsaved)
                save_index(s, p);
            if (!save && s->dir) {
                index_path(s, p, path, sizeof(path));
                unlink(path);
            }
            part_free(s, p);
            p = next;
        }
        s->buckets[b] = NULL;
    }
    s->bytes = s->entries = s->partitions = s->index_bytes = s->scan_bytes = 0;
}

void dspy__semantic_free(struct dspy_cache *c)
{
    struct dspy__semantic *s = c->sem;
    if (!s)
        return;
    drop_all(s, true);
    if (s->fd >= 0)
        close(s->fd);
    dspy_vec_free(s->vec);
    dspy_embedder_free(s->embedder);
    dspy_free(s->scores);
    dspy_free(s->log_path);
    dspy_free(s->dir);
    dspy_free(s->model_dir);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->model_lock);
    dspy_free(s);
    c->sem = NULL;
}

void dspy__semantic_clear(struct dspy_cache *c)
{
    struct dspy__semantic *s = c->sem;
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    drop_all(s, false);
    memset(s->emb, 0, sizeof(s->emb));
    if (s->fd >= 0 && !ftruncate(s->fd, 0) && lseek(s->fd, 0, SEEK_SET) == 0 &&
        write(s->fd, log_magic, sizeof(log_magic)) == (ssize_t)sizeof(log_magic))
        s->log_size = sizeof(log_magic);
    s->log_live = 0;
    pthread_mutex_unlock(&s->lock);
}

/* Drop the record of exact key `key` wherever it is, with a deletion in the log. Lock held.
 * False when no partition has it. */
static bool forget(struct dspy__semantic *s, const uint8_t key[16])
{
    for (int b = 0; b < NBUCKETS; b++)
        for (struct part *p = s->buckets[b]; p; p = p->next) {
            ssize_t i = p->n ? find_rec(p, key) : -1;
            if (i < 0)
                continue;
            log_write(s, OP_DEL, p->id, key, "", 0, NULL);
            remove_slot(s, p, (uint32_t)i);
            index_upkeep(s, p);
            return true;
        }
    return false;
}

void dspy__semantic_gone(void *ud, const uint8_t key[16])
{
    struct dspy__semantic *s = ((struct dspy_cache *)ud)->sem;
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    if (s->entries && forget(s, key))
        atomic_fetch_add(&s->followed, 1);
    pthread_mutex_unlock(&s->lock);
}

void dspy__semantic_stats(struct dspy_cache *c, struct dspy_cache_stats *out)
{
    struct dspy__semantic *s = c->sem;
    if (!s)
        return;
    out->sem_lookups = atomic_load(&s->lookups);
    out->sem_hits = atomic_load(&s->hits);
    out->sem_below = atomic_load(&s->below);
    out->sem_stale = atomic_load(&s->stale);
    out->sem_followed = atomic_load(&s->followed);
    out->sem_puts = atomic_load(&s->puts);
    out->sem_evictions = atomic_load(&s->evictions);
    out->sem_indexed_lookups = atomic_load(&s->indexed_lookups);
    out->sem_scan8_lookups = atomic_load(&s->scan8_lookups);
    out->sem_index_loaded = atomic_load(&s->index_loaded);
    out->sem_index_tail = atomic_load(&s->index_tail);
    out->sem_index_rebuilds = atomic_load(&s->index_rebuilds);
    for (int i = 0; i < DSPY_SEMANTIC_NGUARDS; i++)
        out->sem_guarded[i] = atomic_load(&s->guarded[i]);
    pthread_mutex_lock(&s->lock);
    out->sem_similarity_sum = s->sim_sum;
    out->sem_entries = s->entries;
    out->sem_bytes = s->bytes + s->index_bytes + s->scan_bytes;
    out->sem_partitions = s->partitions;
    out->sem_index_nodes = out->sem_index_building = 0;
    for (int b = 0; b < NBUCKETS; b++)
        for (struct part *p = s->buckets[b]; p; p = p->next) {
            out->sem_index_nodes += dspy_vec_hnsw_live(p->live.h);
            out->sem_index_building += p->build.h != NULL;
        }
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_lock(&s->model_lock);
    out->sem_unavailable = s->unavailable;
    pthread_mutex_unlock(&s->model_lock);
}

/* ---- embedding ------------------------------------------------------------------------- */

static dspy_embedder *embedder(struct dspy__semantic *s)
{
    pthread_mutex_lock(&s->model_lock);
    if (!s->model_tried) {
        struct dspy_embedder_options eo = DSPY_EMBEDDER_OPTIONS_INIT;
        struct dspy_error err;
        dspy_error_clear(&err);
        eo.model_dir = s->model_dir;
        s->model_tried = true;
        if (dspy_embedder_new(&eo, &s->embedder, &err)) {
            s->unavailable = true;
            fprintf(stderr, "dspyc: warning: semantic cache off (every lookup misses): %s\n",
                    err.message);
        }
    }
    dspy_embedder *e = s->embedder;
    pthread_mutex_unlock(&s->model_lock);
    return e;
}

/* The embedding of `text` into v, from the recent-projections slots or the model. */
static bool embed(struct dspy__semantic *s, const char *text, size_t len, float v[DIM])
{
    uint64_t h = XXH3_64bits(text, len);
    struct emb_slot *slot = &s->emb[h % EMB_SLOTS];
    pthread_mutex_lock(&s->lock);
    if (slot->used && slot->h == h && slot->len == len) {
        memcpy(v, slot->v, sizeof(slot->v));
        pthread_mutex_unlock(&s->lock);
        return true;
    }
    pthread_mutex_unlock(&s->lock);
    dspy_embedder *e = embedder(s);
    if (!e || dspy_embedder_embed(e, &text, &len, 1, v, NULL))
        return false;
    pthread_mutex_lock(&s->lock);
    slot->used = true;
    slot->h = h;
    slot->len = len;
    memcpy(slot->v, v, sizeof(slot->v));
    pthread_mutex_unlock(&s->lock);
    return true;
}

/* ---- lookup and put -------------------------------------------------------------------- */

struct cand {
    float sim;
    uint32_t slot;
};

/* Keep c in best[0..*nb) (highest first, at most CANDIDATES). */
static void keep(struct cand *best, int *nb, struct cand c)
{
    int j = *nb < CANDIDATES ? (*nb)++ : CANDIDATES;
    if (j == CANDIDATES) {
        if (!(c.sim > best[CANDIDATES - 1].sim))
            return;
        j = CANDIDATES - 1;
    }
    while (j > 0 && best[j - 1].sim < c.sim) {
        best[j] = best[j - 1];
        j--;
    }
    best[j] = c;
}

/* The partition's best records at or above the threshold, highest first: through its
 * index when it has one (the candidates' similarities are exact f32 inner products with
 * the stored vectors), else an exact scan. Lock held. */
static int candidates(struct dspy__semantic *s, struct part *p, const float *q, float threshold,
                      struct cand *best)
{
    int nb = 0;
    if (p->live.h) {
        float sc[CANDIDATES];
        uint32_t nodes[CANDIDATES];
        size_t found = 0;
        if (!dspy_vec_hnsw_search(p->live.h, q, CANDIDATES, s->ef_search, sc, nodes, &found,
                                  NULL)) {
            atomic_fetch_add(&s->indexed_lookups, 1);
            scan8_drop(s, p); /* the index serves from now on */
            for (size_t i = 0; i < found; i++) {
                uint32_t slot = p->live.slot[nodes[i]];
                if (sc[i] >= threshold && p->recs[slot].seq && p->recs[slot].node == nodes[i])
                    keep(best, &nb, (struct cand){ sc[i], slot });
            }
            return nb;
        }
    }
    dspy_vec_matrix *m8 = p->nslots >= s->scan8_min ? scan8_for(s, p) : NULL;
    if (m8) {
        float sc[SCAN8_RERANK];
        int64_t ids[SCAN8_RERANK];
        if (!dspy_vec_topk(s->vec, m8, DSPY_VEC_IP, q, 1, DIM, SCAN8_RERANK, sc, ids, NULL)) {
            atomic_fetch_add(&s->scan8_lookups, 1);
            for (int i = 0; i < SCAN8_RERANK; i++) {
                int64_t id = ids[i];
                if (id < 0 || (size_t)id >= p->nslots || !p->recs[id].seq)
                    continue;
                float exact = dspy_vec_dot(q, p->vecs + (size_t)id * DIM, DIM);
                if (exact >= threshold)
                    keep(best, &nb, (struct cand){ exact, (uint32_t)id });
            }
            return nb;
        }
    }
    if (s->scores_cap < p->nslots) {
        float *ns = dspy_realloc(s->scores, p->nslots * sizeof(float));
        if (!ns)
            return 0;
        s->scores = ns;
        s->scores_cap = p->nslots;
    }
    if (dspy_vec_scores(s->vec, DSPY_VEC_IP, q, 1, DIM, p->vecs, p->nslots, DIM, DIM, s->scores,
                        p->nslots, NULL))
        return 0;
    for (size_t i = 0; i < p->nslots; i++)
        if (s->scores[i] >= threshold && p->recs[i].seq) /* free slots hold zero vectors */
            keep(best, &nb, (struct cand){ s->scores[i], (uint32_t)i });
    return nb;
}

static const char *ns_for(const struct dspy_cache *c, const struct dspy_cache_ctl *ctl)
{
    return ctl && ctl->ns ? ctl->ns : c->ns;
}

dspy_status dspy_cache_semantic_get(dspy_cache *c, const json_t *request,
                                    const struct dspy_cache_ctl *ctl, struct dspy_cache_value *out,
                                    struct dspy_cache_semantic_hit *hit)
{
    struct dspy__semantic *s = c ? c->sem : NULL;
    struct dspy_cache_key part;
    char *text = NULL;
    size_t len = 0;
    float q[DIM];
    dspy_status rc = DSPY_ENOTFOUND;
    if (hit)
        memset(hit, 0, sizeof(*hit));
    if (!s || !out || (ctl && (ctl->no_cache || ctl->no_semantic)) ||
        (ctl && ctl->levels && !(ctl->levels & DSPY_CACHE_SEMANTIC)))
        return DSPY_ENOTFOUND;
    if (dspy_cache_semantic_partition(request, ns_for(c, ctl), c->opts.semantic_projection, &part,
                                      &text, &len, NULL))
        return DSPY_ENOTFOUND;
    atomic_fetch_add(&s->lookups, 1);
    if (!embed(s, text, len, q)) {
        atomic_fetch_add(&s->below, 1);
        goto out;
    }
    struct {
        float sim;
        uint8_t key[16];
    } chosen[CANDIDATES];
    int nchosen = 0;
    unsigned refused = 0;
    float threshold = (float)c->opts.semantic_threshold;
    pthread_mutex_lock(&s->lock);
    struct part *p = find_part(s, part.bytes, false);
    struct cand best[CANDIDATES];
    int nb = p && p->n ? candidates(s, p, q, threshold, best) : 0;
    for (int j = 0; j < nb; j++) {
        const struct rec *r = &p->recs[best[j].slot];
        unsigned g = dspy_cache_semantic_guard(text, len, r->text, r->len, c->opts.semantic_guards);
        if (g) {
            if (!refused && !nchosen)
                refused = g;
            continue;
        }
        chosen[nchosen].sim = best[j].sim;
        memcpy(chosen[nchosen++].key, r->key, 16);
    }
    pthread_mutex_unlock(&s->lock);
    struct dspy_cache_key k;
    struct dspy_cache_ctl exact = ctl ? *ctl : (struct dspy_cache_ctl)DSPY_CACHE_CTL_INIT;
    exact.levels = (ctl && ctl->levels ? ctl->levels : c->levels) & DSPY_CACHE_ALL;
    int at = 0;
    for (; at < nchosen && exact.levels; at++) {
        memcpy(k.bytes, chosen[at].key, 16);
        if (!dspy_cache_get(c, &k, &exact, out))
            break;
        /* its exact entry was evicted, expired or deleted where the level could not tell
         * (another process, Redis): the record goes, and the next candidate is tried */
        atomic_fetch_add(&s->stale, 1);
        pthread_mutex_lock(&s->lock);
        forget(s, chosen[at].key);
        pthread_mutex_unlock(&s->lock);
    }
    if (!exact.levels) /* the request allows no exact level to read the answer from */
        goto out;
    if (at == nchosen) {
        if (nchosen) /* every candidate was stale */
            goto out;
        if (refused) {
            for (int i = 0; i < DSPY_SEMANTIC_NGUARDS; i++)
                if (refused == 1u << i)
                    atomic_fetch_add(&s->guarded[i], 1);
            if (hit)
                hit->guard = refused;
        } else {
            atomic_fetch_add(&s->below, 1);
        }
        goto out;
    }
    float sim = chosen[at].sim;
    atomic_fetch_add(&s->hits, 1);
    pthread_mutex_lock(&s->lock);
    s->sim_sum += sim;
    pthread_mutex_unlock(&s->lock);
    if (hit) {
        hit->key = k;
        hit->similarity = sim;
    }
    rc = DSPY_OK;
out:
    dspy_free(text);
    return rc;
}

void dspy_cache_semantic_put(dspy_cache *c, const json_t *request, const struct dspy_cache_key *key,
                             const struct dspy_cache_ctl *ctl)
{
    struct dspy__semantic *s = c ? c->sem : NULL;
    struct dspy_cache_key part;
    char *text = NULL;
    size_t len = 0;
    float v[DIM];
    if (!s || !key || (ctl && ctl->no_store) ||
        (ctl && ctl->levels && !(ctl->levels & DSPY_CACHE_SEMANTIC)))
        return;
    if (dspy_cache_semantic_partition(request, ns_for(c, ctl), c->opts.semantic_projection, &part,
                                      &text, &len, NULL))
        return;
    if (len <= UINT32_MAX && embed(s, text, len, v)) {
        pthread_mutex_lock(&s->lock);
        if (insert(s, part.bytes, key->bytes, text, (uint32_t)len, v)) {
            log_write(s, OP_ADD, part.bytes, key->bytes, text, (uint32_t)len, v);
            atomic_fetch_add(&s->puts, 1);
        }
        evict(s, c->opts.semantic_max_bytes);
        pthread_mutex_unlock(&s->lock);
    }
    dspy_free(text);
}
